//! The `memory` driver: objects in a map, for tests and throwaway nodes. Nothing survives
//! the process. It supports random access so the same plugins run on it as on `dir`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::{BlobKey, BlobStore, BlobUpload, Page, PutMode, StoreError, page_of};

/// An in-memory store. Clones share contents.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    name: String,
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store called `name`.
    pub fn new(name: &str) -> Self {
        MemoryStore { name: name.to_owned(), objects: Arc::default() }
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic elsewhere while holding the lock leaves the map consistent: every update
        // below is a single insert, remove or in-place copy.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn index(n: u64) -> Result<usize, StoreError> {
    usize::try_from(n).map_err(|_| StoreError::NoSpace)
}

#[async_trait]
impl BlobStore for MemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.objects().get(key.as_str()).cloned())
    }

    async fn get_range(&self, key: &BlobKey, offset: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.objects().get(key.as_str()).map(|o| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(o.len());
            let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(o.len());
            o[start..end].to_vec()
        }))
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        Ok(self.objects().get(key.as_str()).map(|o| o.len() as u64))
    }

    async fn put(&self, key: &BlobKey, data: Vec<u8>, mode: PutMode) -> Result<(), StoreError> {
        let mut objects = self.objects();
        if mode == PutMode::CreateOnly && objects.contains_key(key.as_str()) {
            return Err(StoreError::Exists);
        }
        objects.insert(key.as_str().to_owned(), data);
        Ok(())
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, StoreError> {
        Ok(self.objects().remove(key.as_str()).is_some())
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let objects = self.objects();
        // Host records (`.marsh-host/...`) are left out, as every driver does.
        Ok(page_of(objects.keys().map(String::as_str).filter(|k| !BlobKey::is_reserved(k)), prefix, start_after, limit))
    }

    async fn begin_upload(&self, key: &BlobKey, mode: PutMode) -> Result<Box<dyn BlobUpload>, StoreError> {
        Ok(Box::new(MemoryUpload { store: self.clone(), key: key.clone(), mode, data: Vec::new() }))
    }

    async fn available(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    fn random_access(&self) -> bool {
        true
    }

    async fn write_at(&self, key: &BlobKey, offset: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let start = index(offset)?;
        let end = start.checked_add(data.len()).ok_or(StoreError::NoSpace)?;
        let mut objects = self.objects();
        let object = objects.entry(key.as_str().to_owned()).or_default();
        if object.len() < end {
            object.resize(end, 0);
        }
        object[start..end].copy_from_slice(&data);
        Ok(())
    }

    async fn set_len(&self, key: &BlobKey, len: u64) -> Result<(), StoreError> {
        let len = index(len)?;
        self.objects().entry(key.as_str().to_owned()).or_default().resize(len, 0);
        Ok(())
    }

    async fn sync(&self, key: &BlobKey) -> Result<(), StoreError> {
        if self.objects().contains_key(key.as_str()) { Ok(()) } else { Err(StoreError::NotFound) }
    }

    async fn rename(&self, from: &BlobKey, to: &BlobKey, mode: PutMode) -> Result<(), StoreError> {
        let mut objects = self.objects();
        if mode == PutMode::CreateOnly && objects.contains_key(to.as_str()) {
            return Err(StoreError::Exists);
        }
        let object = objects.remove(from.as_str()).ok_or(StoreError::NotFound)?;
        objects.insert(to.as_str().to_owned(), object);
        Ok(())
    }
}

struct MemoryUpload {
    store: MemoryStore,
    key: BlobKey,
    mode: PutMode,
    data: Vec<u8>,
}

#[async_trait]
impl BlobUpload for MemoryUpload {
    async fn append(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        self.data.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        self.store.put(&self.key, self.data, self.mode).await
    }

    async fn abort(self: Box<Self>) {}
}

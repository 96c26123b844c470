//! The SDK's native imports implemented over the host's real stores and sealing key: the
//! native counterpart of the runtime's `host.rs`. Store operations are async; they are
//! driven here with `Handle::block_on`, which is allowed inside `block_in_place`.

use std::collections::BTreeMap;
use std::sync::Arc;

use marsh_plugin_sdk as sdk;
use marsh_plugin_sdk::native::{NativeImports, NativeStore, NativeUpload};
use marsh_seal::SealKey;
use marsh_stores::state::{StateError, StateStore};
use marsh_stores::{BlobKey, BlobStore, BlobUpload, PutMode, StoreError};
use tokio::runtime::Handle;

/// What a native plugin may use: named stores and the sealing key.
#[derive(Debug, Clone)]
pub struct NativeGrants {
    stores: BTreeMap<String, Arc<dyn BlobStore>>,
    seal_key: SealKey,
    /// The first store granted keeps the plugin's state.
    state: Option<Arc<dyn BlobStore>>,
}

impl NativeGrants {
    /// No stores yet.
    pub fn new(seal_key: SealKey) -> Self {
        NativeGrants { stores: BTreeMap::new(), seal_key, state: None }
    }

    /// Grant `store` under `name`.
    pub fn store(mut self, name: &str, store: Arc<dyn BlobStore>) -> Self {
        self.state.get_or_insert_with(|| store.clone());
        self.stores.insert(name.to_owned(), store);
        self
    }

    pub(crate) fn into_imports(self, plugin: &str) -> Imports {
        let state = self.state.clone().and_then(|s| StateStore::plugin(s, self.seal_key.clone(), plugin));
        // The key the same backend gets as a wasm plugin.
        let plugin_seal = self.seal_key.for_plugin("backend", plugin);
        Imports { grants: self, state, plugin_seal }
    }
}

pub(crate) struct Imports {
    grants: NativeGrants,
    state: Option<StateStore>,
    plugin_seal: SealKey,
}

fn state_error(e: StateError) -> sdk::BlobError {
    match e {
        StateError::BadName(_) => sdk::BlobError::BadKey(e.to_string()),
        StateError::TooLarge(n) => sdk::BlobError::TooLarge(n as u64),
        StateError::Tampered(_) => sdk::BlobError::Io(e.to_string()),
        StateError::Store { error, .. } => blob_error(error),
    }
}

fn blob_error(e: StoreError) -> sdk::BlobError {
    match e {
        StoreError::NotFound => sdk::BlobError::NotFound,
        StoreError::Exists => sdk::BlobError::Exists,
        StoreError::BadKey(m) => sdk::BlobError::BadKey(m),
        StoreError::TooLarge(n) => sdk::BlobError::TooLarge(n),
        StoreError::Unsupported(m) => sdk::BlobError::Unsupported(m),
        StoreError::NoSpace => sdk::BlobError::NoSpace,
        StoreError::Denied(m) => sdk::BlobError::Denied(m),
        StoreError::Io(m) => sdk::BlobError::Io(m),
    }
}

fn mode(m: sdk::PutMode) -> PutMode {
    match m {
        sdk::PutMode::CreateOnly => PutMode::CreateOnly,
        sdk::PutMode::Overwrite => PutMode::Overwrite,
    }
}

fn key(k: &str) -> Result<BlobKey, sdk::BlobError> {
    BlobKey::new(k).map_err(blob_error)
}

fn block<T>(f: impl Future<Output = Result<T, StoreError>>) -> Result<T, sdk::BlobError> {
    Handle::current().block_on(f).map_err(blob_error)
}

impl NativeImports for Imports {
    fn log(&self, level: sdk::Level, message: &str) {
        match level {
            sdk::Level::Error => tracing::error!("{message}"),
            sdk::Level::Warn => tracing::warn!("{message}"),
            sdk::Level::Info => tracing::info!("{message}"),
            sdk::Level::Debug => tracing::debug!("{message}"),
            sdk::Level::Trace => tracing::trace!("{message}"),
        }
    }

    fn progress(&self, done: u64, total: Option<u64>, what: &str) {
        tracing::debug!(done, total, "{what}");
    }

    fn now(&self) -> u64 {
        marsh_core::unix_now()
    }

    fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, sdk::SealError> {
        self.plugin_seal.seal(purpose, plaintext).map_err(|_| sdk::SealError::Tampered)
    }

    fn unseal(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, sdk::SealError> {
        self.plugin_seal.unseal(purpose, sealed).map_err(|e| match e {
            marsh_seal::SealError::UnknownVersion(v) => sdk::SealError::UnknownVersion(v),
            _ => sdk::SealError::Tampered,
        })
    }

    fn open(&self, name: &str) -> Result<Arc<dyn NativeStore>, sdk::BlobError> {
        match self.grants.stores.get(name) {
            Some(store) => Ok(Arc::new(StoreAdapter(store.clone()))),
            None => Err(sdk::BlobError::Denied(format!("store `{name}` is not granted to this plugin"))),
        }
    }

    fn state_get(&self, name: &str) -> Result<Option<Vec<u8>>, sdk::BlobError> {
        let state = self.state.as_ref().ok_or_else(|| sdk::BlobError::Denied("no store to keep state in".into()))?;
        Handle::current().block_on(state.get(name)).map_err(state_error)
    }

    fn state_put(&self, name: &str, value: &[u8]) -> Result<(), sdk::BlobError> {
        let state = self.state.as_ref().ok_or_else(|| sdk::BlobError::Denied("no store to keep state in".into()))?;
        Handle::current().block_on(state.put(name, value)).map(|_| ()).map_err(state_error)
    }
}

struct StoreAdapter(Arc<dyn BlobStore>);

impl NativeStore for StoreAdapter {
    fn get(&self, k: &str) -> Result<Option<Vec<u8>>, sdk::BlobError> {
        let k = key(k)?;
        block(self.0.get(&k))
    }

    fn get_range(&self, k: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, sdk::BlobError> {
        let k = key(k)?;
        block(self.0.get_range(&k, offset, len))
    }

    fn head(&self, k: &str) -> Result<Option<u64>, sdk::BlobError> {
        let k = key(k)?;
        block(self.0.head(&k))
    }

    fn put(&self, k: &str, data: &[u8], m: sdk::PutMode) -> Result<(), sdk::BlobError> {
        self.put_owned(k, data.to_vec(), m)
    }

    fn put_owned(&self, k: &str, data: Vec<u8>, m: sdk::PutMode) -> Result<(), sdk::BlobError> {
        let k = key(k)?;
        block(self.0.put(&k, data, mode(m)))
    }

    fn delete(&self, k: &str) -> Result<bool, sdk::BlobError> {
        let k = key(k)?;
        block(self.0.delete(&k))
    }

    fn list_keys(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<sdk::Page, sdk::BlobError> {
        let page = block(self.0.list(prefix, start_after, limit as usize))?;
        Ok(sdk::Page { keys: page.keys, next: page.next })
    }

    fn begin_upload(&self, k: &str, m: sdk::PutMode) -> Result<Box<dyn NativeUpload>, sdk::BlobError> {
        let k = key(k)?;
        let upload = block(self.0.begin_upload(&k, mode(m)))?;
        Ok(Box::new(UploadAdapter(Some(upload))))
    }

    fn capabilities(&self) -> sdk::Capabilities {
        sdk::Capabilities { random_access: self.0.random_access() }
    }

    fn available(&self) -> Result<Option<u64>, sdk::BlobError> {
        block(self.0.available())
    }

    fn write_at(&self, k: &str, offset: u64, data: &[u8]) -> Result<(), sdk::BlobError> {
        self.write_at_owned(k, offset, data.to_vec())
    }

    fn write_at_owned(&self, k: &str, offset: u64, data: Vec<u8>) -> Result<(), sdk::BlobError> {
        let k = key(k)?;
        block(self.0.write_at(&k, offset, data))
    }

    fn set_len(&self, k: &str, len: u64) -> Result<(), sdk::BlobError> {
        let k = key(k)?;
        block(self.0.set_len(&k, len))
    }

    fn sync(&self, k: &str) -> Result<(), sdk::BlobError> {
        let k = key(k)?;
        block(self.0.sync(&k))
    }

    fn rename(&self, from: &str, to: &str, m: sdk::PutMode) -> Result<(), sdk::BlobError> {
        let (from, to) = (key(from)?, key(to)?);
        block(self.0.rename(&from, &to, mode(m)))
    }
}

struct UploadAdapter(Option<Box<dyn BlobUpload>>);

impl NativeUpload for UploadAdapter {
    fn append(&mut self, data: &[u8]) -> Result<(), sdk::BlobError> {
        match self.0.as_mut() {
            Some(u) => block(u.append(data.to_vec())),
            None => Err(sdk::BlobError::Io("upload already finished".into())),
        }
    }

    fn finish(mut self: Box<Self>) -> Result<(), sdk::BlobError> {
        match self.0.take() {
            Some(u) => block(u.finish()),
            None => Err(sdk::BlobError::Io("upload already finished".into())),
        }
    }
}

impl Drop for UploadAdapter {
    fn drop(&mut self) {
        if let Some(u) = self.0.take() {
            // Dropped without finish: abandon it, as the wasm host does for a dropped resource.
            let _ = Handle::try_current().map(|h| h.block_on(u.abort()));
        }
    }
}

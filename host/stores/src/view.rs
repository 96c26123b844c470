//! [`Partition`]: one store shared by a backend and a persistence strategy, split so that
//! neither reaches the other's objects.
//!
//! The split is by a key's first component. The persistence side owns [`PERSISTENCE_ROOTS`]
//! (`accounting/`, `stash/` and, for third-party strategies, `persistence/`); the backend owns
//! everything else. Each side's view refuses the other's keys with [`StoreError::Denied`] and
//! leaves them out of listings. The backend side compares the first component in any letter
//! case, so that on a case-insensitive store (a macOS disk, some S3 gateways) `ACCOUNTING/1` is
//! no way around it; the persistence side takes the roots exactly as spelled.
//!
//! The host's reserved namespace is untouched: neither view can name it, as before.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{BlobKey, BlobStore, BlobUpload, MAX_PAGE, Page, PutMode, StoreError};

/// First key components that belong to the persistence strategy in a store it shares with the
/// backend. `records` writes under `accounting/`, `stash` under `stash/`; a third-party strategy
/// writes under `persistence/`.
pub const PERSISTENCE_ROOTS: &[&str] = &["accounting", "stash", "persistence"];

/// Inner listing calls one `list` makes, at most, to fill a page that the split emptied. The
/// page after them may be empty with a `next`, which the contract allows.
const LIST_ROUNDS: usize = 4;

/// Which side of a shared store a view serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Everything but [`PERSISTENCE_ROOTS`].
    Backend,
    /// Only [`PERSISTENCE_ROOTS`].
    Persistence,
}

impl Partition {
    /// Whether a key (or a listed key) lies on this side.
    pub fn owns(self, key: &str) -> bool {
        let first = key.split('/').next().unwrap_or(key);
        match self {
            Partition::Backend => !PERSISTENCE_ROOTS.iter().any(|r| r.eq_ignore_ascii_case(first)),
            Partition::Persistence => key.contains('/') && PERSISTENCE_ROOTS.contains(&first),
        }
    }

    /// `store` as this side sees it.
    pub fn view(self, store: Arc<dyn BlobStore>) -> Arc<dyn BlobStore> {
        Arc::new(View { inner: store, side: self })
    }
}

/// A store seen from one side of a [`Partition`].
#[derive(Debug)]
struct View {
    inner: Arc<dyn BlobStore>,
    side: Partition,
}

impl View {
    fn check(&self, key: &BlobKey) -> Result<(), StoreError> {
        if self.side.owns(key.as_str()) {
            return Ok(());
        }
        let owner = match self.side {
            Partition::Backend => "the persistence strategy",
            Partition::Persistence => "the backend",
        };
        Err(StoreError::Denied(format!("store `{}`: {key:?} belongs to {owner}", self.inner.name())))
    }
}

#[async_trait]
impl BlobStore for View {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.check(key)?;
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &BlobKey, offset: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.check(key)?;
        self.inner.get_range(key, offset, len).await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        self.check(key)?;
        self.inner.head(key).await
    }

    async fn put(&self, key: &BlobKey, data: Vec<u8>, mode: PutMode) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.put(key, data, mode).await
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, StoreError> {
        self.check(key)?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut after = start_after.map(str::to_owned);
        let mut keys = Vec::new();
        for _ in 0..LIST_ROUNDS {
            let page = self.inner.list(prefix, after.as_deref(), limit - keys.len()).await?;
            keys.extend(page.keys.into_iter().filter(|k| self.side.owns(k)));
            match page.next {
                None => return Ok(Page { keys, next: None }),
                Some(next) => after = Some(next),
            }
            if keys.len() == limit {
                break;
            }
        }
        Ok(Page { next: after, keys })
    }

    async fn begin_upload(&self, key: &BlobKey, mode: PutMode) -> Result<Box<dyn BlobUpload>, StoreError> {
        self.check(key)?;
        self.inner.begin_upload(key, mode).await
    }

    async fn available(&self) -> Result<Option<u64>, StoreError> {
        self.inner.available().await
    }

    fn random_access(&self) -> bool {
        self.inner.random_access()
    }

    async fn write_at(&self, key: &BlobKey, offset: u64, data: Vec<u8>) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.write_at(key, offset, data).await
    }

    async fn set_len(&self, key: &BlobKey, len: u64) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.set_len(key, len).await
    }

    async fn sync(&self, key: &BlobKey) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.sync(key).await
    }

    async fn rename(&self, from: &BlobKey, to: &BlobKey, mode: PutMode) -> Result<(), StoreError> {
        self.check(from)?;
        self.check(to)?;
        self.inner.rename(from, to, mode).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn key(k: &str) -> BlobKey {
        BlobKey::new(k).unwrap()
    }

    async fn shared() -> (Arc<dyn BlobStore>, Arc<dyn BlobStore>, Arc<dyn BlobStore>) {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new("shares"));
        for k in ["accounting/00001", "accounting/00002", "shares/aa/1", "stash/g000001/log/1-2", "zeta"] {
            store.put(&key(k), k.as_bytes().to_vec(), PutMode::CreateOnly).await.unwrap();
        }
        (store.clone(), Partition::Backend.view(store.clone()), Partition::Persistence.view(store))
    }

    async fn all(store: &dyn BlobStore, prefix: &str, page: usize) -> Vec<String> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let p = store.list(prefix, after.as_deref(), page).await.unwrap();
            assert!(p.keys.len() <= page);
            keys.extend(p.keys);
            match p.next {
                Some(n) => after = Some(n),
                None => return keys,
            }
        }
    }

    #[tokio::test]
    async fn each_side_lists_only_its_own_keys_at_any_page_size() {
        let (_, backend, persistence) = shared().await;
        for page in [1, 2, 3, 1000] {
            assert_eq!(all(&*backend, "", page).await, ["shares/aa/1", "zeta"]);
            assert_eq!(all(&*backend, "accounting/", page).await, Vec::<String>::new());
            assert_eq!(
                all(&*persistence, "", page).await,
                ["accounting/00001", "accounting/00002", "stash/g000001/log/1-2"]
            );
            assert_eq!(all(&*persistence, "shares/", page).await, Vec::<String>::new());
        }
    }

    #[tokio::test]
    async fn the_backend_cannot_read_write_or_delete_the_strategys_objects_in_any_case() {
        let (raw, backend, _) = shared().await;
        for k in ["accounting/00001", "ACCOUNTING/00001", "Stash/x", "persistence/a"] {
            assert!(matches!(backend.get(&key(k)).await, Err(StoreError::Denied(_))), "{k}");
            assert!(matches!(backend.head(&key(k)).await, Err(StoreError::Denied(_))), "{k}");
            assert!(matches!(backend.put(&key(k), vec![1], PutMode::Overwrite).await, Err(StoreError::Denied(_))));
            assert!(matches!(backend.delete(&key(k)).await, Err(StoreError::Denied(_))), "{k}");
            assert!(matches!(backend.begin_upload(&key(k), PutMode::Overwrite).await, Err(StoreError::Denied(_))));
            assert!(matches!(backend.write_at(&key(k), 0, vec![1]).await, Err(StoreError::Denied(_))));
            assert!(matches!(backend.set_len(&key(k), 0).await, Err(StoreError::Denied(_))));
        }
        assert!(matches!(
            backend.rename(&key("shares/aa/1"), &key("accounting/00003"), PutMode::CreateOnly).await,
            Err(StoreError::Denied(_))
        ));
        // Nothing moved, nothing lost.
        assert_eq!(raw.get(&key("accounting/00001")).await.unwrap().unwrap(), b"accounting/00001");
        assert_eq!(raw.get(&key("shares/aa/1")).await.unwrap().unwrap(), b"shares/aa/1");
        // Its own keys work as before, a name that merely starts like a root included.
        assert_eq!(backend.get(&key("shares/aa/1")).await.unwrap().unwrap(), b"shares/aa/1");
        backend.put(&key("accountingx/1"), vec![2], PutMode::CreateOnly).await.unwrap();
        assert!(backend.delete(&key("zeta")).await.unwrap());
    }

    #[tokio::test]
    async fn the_strategy_reaches_its_roots_and_nothing_else() {
        let (_, _, persistence) = shared().await;
        assert!(persistence.get(&key("accounting/00002")).await.unwrap().is_some());
        persistence.put(&key("persistence/mine"), vec![3], PutMode::CreateOnly).await.unwrap();
        for k in ["shares/aa/1", "zeta", "Accounting/00001", "accounting", "accountingx/1"] {
            assert!(matches!(persistence.get(&key(k)).await, Err(StoreError::Denied(_))), "{k}");
            assert!(matches!(persistence.delete(&key(k)).await, Err(StoreError::Denied(_))), "{k}");
        }
    }

    #[tokio::test]
    async fn a_page_emptied_by_the_split_still_leads_on() {
        let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new("s"));
        for i in 0..50 {
            store.put(&key(&format!("accounting/{i:03}")), vec![], PutMode::CreateOnly).await.unwrap();
        }
        store.put(&key("zz"), vec![], PutMode::CreateOnly).await.unwrap();
        let backend = Partition::Backend.view(store);
        // Pages of one key: the view gives up after a few inner pages, with a `next`...
        let first = backend.list("", None, 1).await.unwrap();
        assert!(first.keys.is_empty() && first.next.is_some());
        // ...and following `next` reaches the one key it owns.
        assert_eq!(all(&*backend, "", 1).await, ["zz"]);
    }
}

//! The reference backend: the contract in its plainest form, in memory, natively. The suite
//! must pass against it; when a plugin and the reference disagree, the reference is right or
//! the contract is unclear (fix the WIT docs and this file together).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use marsh_core::{Backend, BackendError, IndexPage, ShareNumber, StorageIndex, Usage, WriteVector};

#[derive(Debug, Default)]
struct State {
    incoming: BTreeMap<(StorageIndex, ShareNumber), Vec<u8>>,
    immutable: BTreeMap<(StorageIndex, ShareNumber), Vec<u8>>,
    mutable: BTreeMap<(StorageIndex, ShareNumber), Vec<u8>>,
}

/// An in-memory backend that follows the contract literally.
#[derive(Debug, Default)]
pub struct ReferenceBackend {
    state: Mutex<State>,
}

impl ReferenceBackend {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn slice(data: &[u8], offset: u64, len: u64) -> Vec<u8> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
    let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(data.len());
    data[start..end].to_vec()
}

fn list(map: &BTreeMap<(StorageIndex, ShareNumber), Vec<u8>>, si: &StorageIndex) -> Vec<ShareNumber> {
    map.range((*si, ShareNumber(0))..=(*si, ShareNumber(u16::MAX))).map(|((_, n), _)| *n).collect()
}

#[async_trait]
impl Backend for ReferenceBackend {
    async fn begin(&self, si: &StorageIndex, shnum: ShareNumber, size: u64) -> Result<(), BackendError> {
        let mut s = self.state();
        if s.immutable.contains_key(&(*si, shnum)) {
            return Err(BackendError::Exists);
        }
        let size = usize::try_from(size).map_err(|_| BackendError::NoSpace)?;
        s.incoming.insert((*si, shnum), vec![0; size]);
        Ok(())
    }

    async fn write(&self, si: &StorageIndex, shnum: ShareNumber, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let mut s = self.state();
        let share = s.incoming.get_mut(&(*si, shnum)).ok_or(BackendError::NotFound)?;
        let end = offset.checked_add(data.len() as u64).filter(|e| *e <= share.len() as u64);
        let Some(end) = end else {
            return Err(BackendError::OutOfRange(format!(
                "write at {offset} of {} bytes past the declared size {}",
                data.len(),
                share.len()
            )));
        };
        share[offset as usize..end as usize].copy_from_slice(data);
        Ok(())
    }

    async fn read_incoming(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let s = self.state();
        s.incoming.get(&(*si, shnum)).map(|d| slice(d, offset, len)).ok_or(BackendError::NotFound)
    }

    async fn finish(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), BackendError> {
        let mut s = self.state();
        let share = s.incoming.remove(&(*si, shnum)).ok_or(BackendError::NotFound)?;
        s.immutable.insert((*si, shnum), share);
        Ok(())
    }

    async fn abort(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), BackendError> {
        self.state().incoming.remove(&(*si, shnum));
        Ok(())
    }

    async fn read(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let s = self.state();
        s.immutable.get(&(*si, shnum)).map(|d| slice(d, offset, len)).ok_or(BackendError::NotFound)
    }

    async fn size(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, BackendError> {
        Ok(self.state().immutable.get(&(*si, shnum)).map(|d| d.len() as u64))
    }

    async fn list_shares(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError> {
        Ok(list(&self.state().immutable, si))
    }

    async fn delete(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, BackendError> {
        Ok(self.state().immutable.remove(&(*si, shnum)).is_some())
    }

    async fn mutable_read(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        Ok(self.state().mutable.get(&(*si, shnum)).map(|d| slice(d, offset, len)).unwrap_or_default())
    }

    async fn mutable_write(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> Result<(), BackendError> {
        let mut s = self.state();
        if new_length == Some(0) {
            s.mutable.remove(&(*si, shnum));
            return Ok(());
        }
        let share = s.mutable.entry((*si, shnum)).or_default();
        for w in writes {
            let start = usize::try_from(w.offset).map_err(|_| BackendError::NoSpace)?;
            let end = start.checked_add(w.data.len()).ok_or(BackendError::NoSpace)?;
            if share.len() < end {
                share.resize(end, 0);
            }
            share[start..end].copy_from_slice(&w.data);
        }
        if let Some(n) = new_length.and_then(|n| usize::try_from(n).ok()) {
            share.truncate(n);
        }
        Ok(())
    }

    async fn mutable_size(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, BackendError> {
        Ok(self.state().mutable.get(&(*si, shnum)).map(|d| d.len() as u64))
    }

    async fn mutable_list(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError> {
        Ok(list(&self.state().mutable, si))
    }

    async fn mutable_delete(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, BackendError> {
        Ok(self.state().mutable.remove(&(*si, shnum)).is_some())
    }

    async fn list_indexes(&self, start_after: Option<&StorageIndex>, limit: u32) -> Result<IndexPage, BackendError> {
        let s = self.state();
        let mut all: Vec<StorageIndex> = s.immutable.keys().chain(s.mutable.keys()).map(|(si, _)| *si).collect();
        all.sort();
        Ok(IndexPage::from_sorted(all, start_after, limit))
    }

    async fn usage(&self) -> Result<Usage, BackendError> {
        let s = self.state();
        let used = s.immutable.values().chain(s.mutable.values()).map(|d| d.len() as u64).sum();
        Ok(Usage { available: None, used: Some(used) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_reference_passes_the_whole_suite() {
        let backend = ReferenceBackend::default();
        let report = crate::run(&backend, "", |_| {}).await;
        let failures: Vec<_> = report.results.iter().filter(|r| r.outcome.is_err()).collect();
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(report.passed(), crate::cases().len());
    }
}

//! `backend-memory`: shares in the plugin instance's own memory, for tests and throwaway nodes.
//!
//! It asks the host for a single instance ([`Concurrency::Single`]): the shares exist only
//! in that instance, so the host serialises calls to it, and a trap (which discards the
//! instance) loses every share. It opens no store. Its capacity is the plugin's memory cap.

use std::collections::BTreeMap;

use marsh_plugin_sdk::{
    Backend, BackendError, BackendResult, Concurrency, Config, Host, IndexPage, InitError, Payload, PluginInfo,
    ShareNumber, StorageIndex, Usage, WriteVector,
};

type Shares = BTreeMap<(StorageIndex, ShareNumber), Vec<u8>>;

/// The memory backend.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    incoming: Shares,
    complete: Shares,
    slots: Shares,
}

fn slice(data: &[u8], offset: u64, len: u64) -> Vec<u8> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
    let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(data.len());
    data[start..end].to_vec()
}

fn numbers(shares: &Shares, si: &StorageIndex) -> Vec<ShareNumber> {
    shares.range((si.clone(), 0)..=(si.clone(), ShareNumber::MAX)).map(|((_, n), _)| *n).collect()
}

fn index(n: u64) -> BackendResult<usize> {
    usize::try_from(n).map_err(|_| BackendError::NoSpace)
}

/// Grow `buf` to `len` bytes, failing cleanly instead of aborting when memory runs out.
fn grow(buf: &mut Vec<u8>, len: usize) -> BackendResult<()> {
    if buf.len() < len {
        buf.try_reserve_exact(len - buf.len()).map_err(|_| BackendError::NoSpace)?;
        buf.resize(len, 0);
    }
    Ok(())
}

impl Backend for MemoryBackend {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "backend-memory",
            env!("CARGO_PKG_VERSION"),
            "shares in the plugin's own memory; lost on restart or trap (tests only)",
            Concurrency::Single,
        )
    }

    fn init(_host: Host, config: Config) -> Result<Self, InitError> {
        config.only_keys(&[])?;
        Ok(MemoryBackend::default())
    }

    fn begin(&mut self, si: &StorageIndex, shnum: ShareNumber, size: u64) -> BackendResult<()> {
        if self.complete.contains_key(&(si.clone(), shnum)) {
            return Err(BackendError::Exists);
        }
        let mut share = Vec::new();
        grow(&mut share, index(size)?)?;
        self.incoming.insert((si.clone(), shnum), share);
        Ok(())
    }

    fn write(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, data: Payload) -> BackendResult<()> {
        // This backend keeps shares in its own memory: the bytes must come in.
        let data = data.into_vec();
        let share = self.incoming.get_mut(&(si.clone(), shnum)).ok_or(BackendError::NotFound)?;
        match offset.checked_add(data.len() as u64) {
            Some(end) if end <= share.len() as u64 => {
                share[offset as usize..end as usize].copy_from_slice(&data);
                Ok(())
            }
            _ => Err(BackendError::OutOfRange(format!(
                "write of {} bytes at {offset} is past the declared size {}",
                data.len(),
                share.len()
            ))),
        }
    }

    fn read_incoming(
        &mut self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> BackendResult<Vec<u8>> {
        self.incoming.get(&(si.clone(), shnum)).map(|d| slice(d, offset, len)).ok_or(BackendError::NotFound)
    }

    fn finish(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<()> {
        let share = self.incoming.remove(&(si.clone(), shnum)).ok_or(BackendError::NotFound)?;
        self.complete.insert((si.clone(), shnum), share);
        Ok(())
    }

    fn abort(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<()> {
        self.incoming.remove(&(si.clone(), shnum));
        Ok(())
    }

    fn read(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64) -> BackendResult<Payload> {
        self.complete.get(&(si.clone(), shnum)).map(|d| slice(d, offset, len).into()).ok_or(BackendError::NotFound)
    }

    fn size(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(self.complete.get(&(si.clone(), shnum)).map(|d| d.len() as u64))
    }

    fn list_shares(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        Ok(numbers(&self.complete, si))
    }

    fn delete(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<bool> {
        Ok(self.complete.remove(&(si.clone(), shnum)).is_some())
    }

    fn mutable_read(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        Ok(self.slots.get(&(si.clone(), shnum)).map(|d| slice(d, offset, len)).unwrap_or_default())
    }

    fn mutable_write(
        &mut self,
        si: &StorageIndex,
        shnum: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> BackendResult<()> {
        if new_length == Some(0) {
            self.slots.remove(&(si.clone(), shnum));
            return Ok(());
        }
        let share = self.slots.entry((si.clone(), shnum)).or_default();
        for w in writes {
            let start = index(w.offset)?;
            let end = start.checked_add(w.data.len()).ok_or(BackendError::NoSpace)?;
            grow(share, end)?;
            share[start..end].copy_from_slice(&w.data);
        }
        if let Some(n) = new_length {
            share.truncate(index(n).unwrap_or(usize::MAX));
        }
        Ok(())
    }

    fn mutable_size(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(self.slots.get(&(si.clone(), shnum)).map(|d| d.len() as u64))
    }

    fn mutable_list(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        Ok(numbers(&self.slots, si))
    }

    fn mutable_delete(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<bool> {
        Ok(self.slots.remove(&(si.clone(), shnum)).is_some())
    }

    fn list_indexes(&mut self, start_after: Option<&StorageIndex>, limit: u32) -> BackendResult<IndexPage> {
        let mut all: Vec<StorageIndex> =
            self.complete.keys().chain(self.slots.keys()).map(|(si, _)| si.clone()).collect();
        all.sort();
        Ok(IndexPage::from_sorted(all, start_after, limit))
    }

    fn usage(&mut self) -> BackendResult<Usage> {
        let used = self.complete.values().chain(self.slots.values()).map(|d| d.len() as u64).sum();
        Ok(Usage { available: None, used: Some(used) })
    }
}

marsh_plugin_sdk::export_backend!(MemoryBackend);

#[cfg(test)]
mod tests {
    use super::*;
    use marsh_plugin_sdk::testing::TestHost;

    #[test]
    fn shares_round_trip_in_instance_memory() {
        let mut b = MemoryBackend::init(TestHost::new().build(), Config::default()).unwrap();
        let si: StorageIndex = "aaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap();
        b.begin(&si, 1, 3).unwrap();
        b.write(&si, 1, 0, b"abc".into()).unwrap();
        assert_eq!(b.list_shares(&si).unwrap(), vec![]);
        b.finish(&si, 1).unwrap();
        assert_eq!(b.read(&si, 1, 1, 9).unwrap().into_vec(), b"bc");
        assert_eq!(b.usage().unwrap().used, Some(3));
        assert_eq!(b.begin(&si, 1, 3), Err(BackendError::Exists));
    }
}

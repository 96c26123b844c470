//! `minimal-backend`: an example third-party backend for marsh, written against the SDK only.
//!
//! It needs nothing but whole-object operations, so it runs on any granted store, including
//! ones without random access. Writes of an upload land as separate chunk objects
//! (`incoming/<si>/<shnum>/<offset>`); `finish` streams them in order into one object
//! (`shares/<si>/<shnum>`) with a streamed upload and deletes the chunks. Mutable shares are
//! read, changed and written back whole (`slots/<si>/<shnum>`), which suits small slots only.
//!
//! Copy this crate to start a plugin: change the name in `info`, keep the `export_backend!`
//! line, and run `marsh plugin test` on the `.wasm` you build.

use marsh_plugin_sdk::{
    Backend, BackendError, BackendResult, Concurrency, Config, Host, IndexPage, InitError, Payload, PluginInfo,
    PutMode, ShareNumber, StorageIndex, Store, Usage, WriteVector,
};

/// The example backend.
#[derive(Debug)]
pub struct MinimalBackend {
    store: Store,
}

fn share(si: &StorageIndex, n: ShareNumber) -> String {
    format!("shares/{si}/{n}")
}

fn incoming(si: &StorageIndex, n: ShareNumber) -> String {
    format!("incoming/{si}/{n}")
}

fn slot(si: &StorageIndex, n: ShareNumber) -> String {
    format!("slots/{si}/{n}")
}

impl MinimalBackend {
    fn numbers(&self, prefix: &str) -> BackendResult<Vec<ShareNumber>> {
        let mut out: Vec<ShareNumber> =
            self.store.list_all(prefix)?.iter().filter_map(|k| k.rsplit('/').next()?.parse().ok()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The declared size of an upload in progress, or `None`.
    fn declared(&self, si: &StorageIndex, n: ShareNumber) -> BackendResult<Option<u64>> {
        match self.store.get(&format!("{}/size", incoming(si, n)))? {
            None => Ok(None),
            Some(b) => {
                let bytes: [u8; 8] = b.try_into().map_err(|_| BackendError::Corrupt("bad size record".into()))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    fn discard_upload(&self, si: &StorageIndex, n: ShareNumber) -> BackendResult<()> {
        for key in self.store.list_all(&format!("{}/", incoming(si, n)))? {
            self.store.delete(&key)?;
        }
        Ok(())
    }
}

impl Backend for MinimalBackend {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "minimal-backend",
            env!("CARGO_PKG_VERSION"),
            "example: write-once objects in one store",
            Concurrency::Pooled,
        )
    }

    fn init(host: Host, config: Config) -> Result<Self, InitError> {
        config.only_keys(&["store"])?;
        Ok(MinimalBackend { store: host.open_store(config.get("store").unwrap_or("shares"))? })
    }

    fn begin(&mut self, si: &StorageIndex, n: ShareNumber, size: u64) -> BackendResult<()> {
        if self.store.head(&share(si, n))?.is_some() {
            return Err(BackendError::Exists);
        }
        self.discard_upload(si, n)?;
        self.store.put(&format!("{}/size", incoming(si, n)), &size.to_be_bytes(), PutMode::Overwrite)?;
        Ok(())
    }

    fn write(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, data: Payload) -> BackendResult<()> {
        let size = self.declared(si, n)?.ok_or(BackendError::NotFound)?;
        if offset.checked_add(data.len()).is_none_or(|end| end > size) {
            return Err(BackendError::OutOfRange(format!("write at {offset} past the declared size {size}")));
        }
        // Zero-padded offsets make the chunk keys list in offset order. The payload goes
        // to the store as it came: the bytes never enter this plugin's memory.
        self.store.put_payload(&format!("{}/chunk-{offset:020}", incoming(si, n)), data, PutMode::Overwrite)?;
        Ok(())
    }

    fn read_incoming(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let size = self.declared(si, n)?.ok_or(BackendError::NotFound)?;
        let end = offset.saturating_add(len).min(size);
        let mut out = vec![0u8; end.saturating_sub(offset) as usize];
        // Later chunks win where chunks overlap; the host only asks for ranges it wrote.
        for key in self.store.list_all(&format!("{}/chunk-", incoming(si, n)))? {
            let at: u64 = key.rsplit("chunk-").next().and_then(|o| o.parse().ok()).unwrap_or(u64::MAX);
            let Some(len) = self.store.head(&key)? else { continue };
            let (lo, hi) = (at.max(offset), at.saturating_add(len).min(end));
            if lo < hi {
                let part = self.store.get_range(&key, lo - at, hi - lo)?.unwrap_or_default();
                out[(lo - offset) as usize..(lo - offset) as usize + part.len()].copy_from_slice(&part);
            }
        }
        Ok(out)
    }

    fn finish(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<()> {
        let size = self.declared(si, n)?.ok_or(BackendError::NotFound)?;
        let mut upload = self.store.begin_upload(&share(si, n), PutMode::CreateOnly)?;
        let mut pos = 0u64;
        for key in self.store.list_all(&format!("{}/chunk-", incoming(si, n)))? {
            let offset: u64 = key.rsplit("chunk-").next().and_then(|o| o.parse().ok()).unwrap_or(u64::MAX);
            let Some(len) = self.store.head(&key)? else { continue };
            let end = offset.saturating_add(len);
            if offset > pos {
                return Err(BackendError::OutOfRange(format!("bytes {pos}..{offset} were never written")));
            }
            if end > pos {
                // The part not yet covered, moved from chunk to share by the host.
                let part =
                    self.store.get_range_payload(&key, pos - offset, end - pos)?.unwrap_or_else(|| Vec::new().into());
                upload.append_payload(part)?;
                pos = end;
            }
        }
        if pos != size {
            return Err(BackendError::OutOfRange(format!("{pos} of {size} bytes written")));
        }
        upload.finish()?;
        self.discard_upload(si, n)
    }

    fn abort(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<()> {
        self.discard_upload(si, n)
    }

    fn read(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, len: u64) -> BackendResult<Payload> {
        self.store.get_range_payload(&share(si, n), offset, len)?.ok_or(BackendError::NotFound)
    }

    fn size(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(self.store.head(&share(si, n))?)
    }

    fn list_shares(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        self.numbers(&format!("shares/{si}/"))
    }

    fn delete(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<bool> {
        Ok(self.store.delete(&share(si, n))?)
    }

    fn mutable_read(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        Ok(self.store.get_range(&slot(si, n), offset, len)?.unwrap_or_default())
    }

    fn mutable_write(
        &mut self,
        si: &StorageIndex,
        n: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> BackendResult<()> {
        if new_length == Some(0) {
            self.store.delete(&slot(si, n))?;
            return Ok(());
        }
        let mut data = self.store.get(&slot(si, n))?.unwrap_or_default();
        for w in writes {
            let start = usize::try_from(w.offset).map_err(|_| BackendError::NoSpace)?;
            let end = start.checked_add(w.data.len()).ok_or(BackendError::NoSpace)?;
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(&w.data);
        }
        if let Some(len) = new_length.and_then(|l| usize::try_from(l).ok()) {
            data.truncate(len);
        }
        Ok(self.store.put(&slot(si, n), &data, PutMode::Overwrite)?)
    }

    fn mutable_size(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(self.store.head(&slot(si, n))?)
    }

    fn mutable_list(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        self.numbers(&format!("slots/{si}/"))
    }

    fn mutable_delete(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<bool> {
        Ok(self.store.delete(&slot(si, n))?)
    }

    fn list_indexes(&mut self, start_after: Option<&StorageIndex>, limit: u32) -> BackendResult<IndexPage> {
        // Simple and O(shares): fine for an example, a real backend pages the listing.
        let mut all: Vec<StorageIndex> = Vec::new();
        for tree in ["shares/", "slots/"] {
            for key in self.store.list_all(tree)? {
                if let Some(si) = key.split('/').nth(1).and_then(|s| s.parse().ok()) {
                    all.push(si);
                }
            }
        }
        all.sort();
        Ok(IndexPage::from_sorted(all, start_after, limit))
    }

    fn usage(&mut self) -> BackendResult<Usage> {
        Ok(Usage { available: self.store.available()?, used: None })
    }
}

marsh_plugin_sdk::export_backend!(MinimalBackend);

#[cfg(test)]
mod tests {
    use super::*;
    use marsh_plugin_sdk::testing::{MemoryStore, TestHost};

    #[test]
    fn chunks_become_one_object_on_finish() {
        let store = MemoryStore::default();
        let host = TestHost::new().with_store("shares", store.clone()).build();
        let mut b = MinimalBackend::init(host, Config::default()).unwrap();
        let si: StorageIndex = "aaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap();
        b.begin(&si, 2, 6).unwrap();
        b.write(&si, 2, 3, b"def".into()).unwrap();
        b.write(&si, 2, 0, b"abcd".into()).unwrap();
        b.finish(&si, 2).unwrap();
        assert_eq!(store.keys(), vec![format!("shares/{si}/2")]);
        assert_eq!(b.read(&si, 2, 0, 10).unwrap().into_vec(), b"abcdef");
    }
}

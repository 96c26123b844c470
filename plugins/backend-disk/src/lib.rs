//! `backend-disk`: shares as files in a granted random-access store (a local directory), in
//! Tahoe's familiar layout.
//!
//! Layout inside the store (config `store`, default `shares`):
//! - `shares/<2-char prefix>/<storage index>/<shnum>`: complete immutable shares, raw bytes;
//! - `incoming/<storage index>.<shnum>`: immutable uploads in progress, created at their
//!   declared size, renamed into `shares/` on finish (fsynced first), so a half-written share is
//!   never visible. One flat directory: an upload makes no directory of its own, so none is
//!   removed after it (a directory made and removed per upload was a third of what taking in a
//!   small share cost). Releases before staged them under `incoming/<prefix>/<si>/<shnum>`;
//!   `abort` removes such a file too;
//! - `slots/<prefix>/<storage index>/<shnum>`: mutable shares, written in place and fsynced
//!   before a write returns. They live apart from `shares/` because the protocol lists the two
//!   kinds separately and raw files cannot tell them apart.
//!
//! Nothing here is kept between calls: every instance finds everything in the store, so the
//! host may pool instances and replace one at any time.

use marsh_plugin_sdk::{
    Backend, BackendError, BackendResult, BlobError, Concurrency, Config, Host, IndexPage, InitError, Payload,
    PluginInfo, PutMode, ShareNumber, StorageIndex, Store, Usage, WriteVector,
};

/// The disk backend.
#[derive(Debug)]
pub struct DiskBackend {
    store: Store,
}

const COMPLETE: &str = "shares";
const INCOMING: &str = "incoming";
const SLOTS: &str = "slots";

fn key(tree: &str, si: &StorageIndex, shnum: ShareNumber) -> String {
    format!("{tree}/{}/{si}/{shnum}", si.prefix())
}

/// Where an upload in progress is staged.
fn incoming(si: &StorageIndex, shnum: ShareNumber) -> String {
    format!("{INCOMING}/{si}.{shnum}")
}

fn share_numbers(keys: &[String]) -> Vec<ShareNumber> {
    let mut out: Vec<ShareNumber> = keys.iter().filter_map(|k| k.rsplit('/').next()?.parse().ok()).collect();
    out.sort_unstable();
    out
}

impl DiskBackend {
    fn list_tree(&self, tree: &str, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        let keys = self.store.list_all(&format!("{tree}/{}/{si}/", si.prefix()))?;
        Ok(share_numbers(&keys))
    }

    /// Up to `want` distinct storage indexes of one tree after `after`, ascending.
    fn indexes_of(&self, tree: &str, after: Option<&StorageIndex>, want: usize) -> BackendResult<Vec<StorageIndex>> {
        // `<tree>/<p>/<si>0` sorts after every key of `si` ('/' < '0') and before the next index.
        let mut start = after.map(|si| format!("{tree}/{}/{si}0", si.prefix()));
        let mut out: Vec<StorageIndex> = Vec::new();
        loop {
            let page = self.store.list_keys(&format!("{tree}/"), start.as_deref(), 1000)?;
            for k in &page.keys {
                let Some(si) = k.split('/').nth(2).and_then(|s| s.parse::<StorageIndex>().ok()) else {
                    continue;
                };
                if out.last() != Some(&si) {
                    out.push(si);
                }
                if out.len() >= want {
                    return Ok(out);
                }
            }
            match page.next {
                Some(n) => start = Some(n),
                None => return Ok(out),
            }
        }
    }
}

impl Backend for DiskBackend {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "backend-disk",
            env!("CARGO_PKG_VERSION"),
            "shares as files in a local directory, Tahoe layout, staged and renamed into place",
            Concurrency::Pooled,
        )
    }

    fn init(host: Host, config: Config) -> Result<Self, InitError> {
        config.only_keys(&["store"])?;
        let name = config.get("store").unwrap_or("shares");
        let store = host.open_store(name)?;
        if !store.capabilities().random_access {
            return Err(InitError::BadConfig(format!(
                "store `{name}` has no random-access writes; backend-disk needs a `dir` or `memory` store"
            )));
        }
        Ok(DiskBackend { store })
    }

    fn begin(&mut self, si: &StorageIndex, shnum: ShareNumber, size: u64) -> BackendResult<()> {
        if self.store.head(&key(COMPLETE, si, shnum))?.is_some() {
            return Err(BackendError::Exists);
        }
        let incoming = incoming(si, shnum);
        self.store.delete(&incoming)?;
        // A sparse file of the declared size: writes past it are refused below.
        self.store.set_len(&incoming, size)?;
        Ok(())
    }

    fn write(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, data: Payload) -> BackendResult<()> {
        let incoming = incoming(si, shnum);
        let size = self.store.head(&incoming)?.ok_or(BackendError::NotFound)?;
        let len = data.len();
        match offset.checked_add(len) {
            // The bytes go from the request to the file without entering this plugin.
            Some(end) if end <= size => Ok(self.store.write_payload_at(&incoming, offset, data)?),
            _ => Err(BackendError::OutOfRange(format!(
                "write of {len} bytes at {offset} is past the declared size {size}"
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
        self.store.get_range(&incoming(si, shnum), offset, len)?.ok_or(BackendError::NotFound)
    }

    fn finish(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<()> {
        // `rename` fsyncs the file, links it into place only if nothing is there, and fsyncs
        // the directory: when this returns the share is durable and complete.
        match self.store.rename(&incoming(si, shnum), &key(COMPLETE, si, shnum), PutMode::CreateOnly) {
            Err(BlobError::NotFound) => Err(BackendError::NotFound),
            other => Ok(other?),
        }
    }

    fn abort(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<()> {
        self.store.delete(&incoming(si, shnum))?;
        // An upload an earlier release staged and never finished.
        self.store.delete(&key(INCOMING, si, shnum))?;
        Ok(())
    }

    fn read(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64) -> BackendResult<Payload> {
        self.store.get_range_payload(&key(COMPLETE, si, shnum), offset, len)?.ok_or(BackendError::NotFound)
    }

    fn size(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(self.store.head(&key(COMPLETE, si, shnum))?)
    }

    fn list_shares(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        self.list_tree(COMPLETE, si)
    }

    fn delete(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<bool> {
        Ok(self.store.delete(&key(COMPLETE, si, shnum))?)
    }

    fn mutable_read(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        Ok(self.store.get_range(&key(SLOTS, si, shnum), offset, len)?.unwrap_or_default())
    }

    fn mutable_write(
        &mut self,
        si: &StorageIndex,
        shnum: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> BackendResult<()> {
        let slot = key(SLOTS, si, shnum);
        if new_length == Some(0) {
            self.store.delete(&slot)?;
            return Ok(());
        }
        let mut size = self.store.head(&slot)?;
        if size.is_none() {
            // A write vector naming a share creates it, even with no data.
            self.store.set_len(&slot, 0)?;
            size = Some(0);
        }
        let mut size = size.unwrap_or(0);
        for w in writes {
            self.store.write_at(&slot, w.offset, &w.data)?;
            size = size.max(w.offset.saturating_add(w.data.len() as u64));
        }
        if let Some(n) = new_length.filter(|n| *n < size) {
            self.store.set_len(&slot, n)?;
        }
        self.store.sync(&slot)?;
        Ok(())
    }

    fn mutable_size(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(self.store.head(&key(SLOTS, si, shnum))?)
    }

    fn mutable_list(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        self.list_tree(SLOTS, si)
    }

    fn mutable_delete(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<bool> {
        Ok(self.store.delete(&key(SLOTS, si, shnum))?)
    }

    fn list_indexes(&mut self, start_after: Option<&StorageIndex>, limit: u32) -> BackendResult<IndexPage> {
        // Each tree yields up to limit + 1 indexes; merged, they decide this page and whether
        // another follows.
        let want = limit.clamp(1, 1000) as usize + 1;
        let mut all = self.indexes_of(COMPLETE, start_after, want)?;
        all.extend(self.indexes_of(SLOTS, start_after, want)?);
        all.sort();
        Ok(IndexPage::from_sorted(all, start_after, limit))
    }

    fn usage(&mut self) -> BackendResult<Usage> {
        // Summing share sizes needs a full walk: that is a sweep's job, not this call's.
        Ok(Usage { available: self.store.available()?, used: None })
    }
}

marsh_plugin_sdk::export_backend!(DiskBackend);

#[cfg(test)]
mod tests {
    use super::*;
    use marsh_plugin_sdk::testing::{MemoryStore, TestHost};

    fn backend() -> (DiskBackend, MemoryStore) {
        let store = MemoryStore::default();
        let host = TestHost::new().with_store("shares", store.clone()).build();
        (DiskBackend::init(host, Config::default()).unwrap(), store)
    }

    fn si() -> StorageIndex {
        "nomd2a65ylxjbqzsw7gcfh4iva".parse().unwrap()
    }

    #[test]
    fn abort_removes_an_upload_an_earlier_release_staged_in_its_own_directory() {
        let (mut b, store) = backend();
        b.store.put("incoming/no/nomd2a65ylxjbqzsw7gcfh4iva/3", b"half", PutMode::CreateOnly).unwrap();
        b.begin(&si(), 3, 5).unwrap();
        b.abort(&si(), 3).unwrap();
        assert!(store.keys().is_empty(), "{:?}", store.keys());
    }

    #[test]
    fn uploads_are_staged_then_renamed_into_the_tahoe_layout() {
        let (mut b, store) = backend();
        b.begin(&si(), 3, 5).unwrap();
        b.write(&si(), 3, 0, b"hello".into()).unwrap();
        assert_eq!(store.keys(), vec!["incoming/nomd2a65ylxjbqzsw7gcfh4iva.3"]);
        assert_eq!(b.list_shares(&si()).unwrap(), vec![]);
        b.finish(&si(), 3).unwrap();
        assert_eq!(store.keys(), vec!["shares/no/nomd2a65ylxjbqzsw7gcfh4iva/3"]);
        assert_eq!(b.read(&si(), 3, 1, 100).unwrap().into_vec(), b"ello");
    }

    #[test]
    fn writes_past_the_declared_size_are_refused() {
        let (mut b, _) = backend();
        b.begin(&si(), 0, 4).unwrap();
        assert!(matches!(b.write(&si(), 0, 2, b"abc".into()), Err(BackendError::OutOfRange(_))));
        assert!(matches!(b.write(&si(), 0, u64::MAX, b"a".into()), Err(BackendError::OutOfRange(_))));
    }

    #[test]
    fn mutable_shares_live_in_slots_and_truncate() {
        let (mut b, store) = backend();
        let w = |offset, data: &[u8]| WriteVector { offset, data: data.to_vec() };
        b.mutable_write(&si(), 1, &[w(0, b"abcdef"), w(8, b"!")], Some(4)).unwrap();
        assert_eq!(store.keys(), vec!["slots/no/nomd2a65ylxjbqzsw7gcfh4iva/1"]);
        assert_eq!(b.mutable_read(&si(), 1, 0, 100).unwrap(), b"abcd");
        b.mutable_write(&si(), 1, &[], Some(0)).unwrap();
        assert!(store.keys().is_empty());
    }

    #[test]
    fn a_store_without_random_access_is_a_config_error() {
        let host = TestHost::new().build();
        let err = DiskBackend::init(host, Config::from_pairs([("store", "nope")])).unwrap_err();
        assert!(matches!(err, InitError::Unavailable(m) if m.contains("nope")));
        let host = TestHost::new().with_memory_store("shares").build();
        let err = DiskBackend::init(host, Config::from_pairs([("colour", "blue")])).unwrap_err();
        assert!(matches!(err, InitError::BadConfig(m) if m.contains("colour")));
    }
}

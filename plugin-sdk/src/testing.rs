//! In-memory stand-ins for the host's imports, so plugin logic is unit-tested natively with
//! `cargo test`, without wasm or a running node.
//!
//! The stand-ins keep the host's contract where a plugin could come to rely on it: keys are
//! checked like the real stores check them, create-only writes fail on existing keys,
//! listings are ordered and paged, and sealed blobs fail to unseal when changed or read under
//! another purpose. The sealing here is a keyed checksum, not encryption: it exists to test
//! plugin logic, never to protect data.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::blobs::{BlobError, Capabilities, Page, PutMode};
use crate::host::{Host, Level, SealError};
use crate::native::{NativeImports, NativeStore, NativeUpload};

/// Builds a [`Host`] over in-memory stand-ins.
#[derive(Debug, Default)]
pub struct TestHost {
    stores: BTreeMap<String, MemoryStore>,
    now: u64,
}

impl TestHost {
    /// A host with no stores granted and the clock at 1,700,000,000.
    pub fn new() -> Self {
        TestHost { stores: BTreeMap::new(), now: 1_700_000_000 }
    }

    /// Grant a new, empty in-memory store under `name`.
    pub fn with_memory_store(self, name: &str) -> Self {
        self.with_store(name, MemoryStore::default())
    }

    /// Grant an existing store (clones share contents) under `name`.
    pub fn with_store(mut self, name: &str, store: MemoryStore) -> Self {
        self.stores.insert(name.to_owned(), store);
        self
    }

    /// Set the clock.
    pub fn at(mut self, now: u64) -> Self {
        self.now = now;
        self
    }

    /// Finish building.
    pub fn build(self) -> Host {
        Host::native(Arc::new(TestImports {
            stores: self.stores,
            now: self.now,
            log: Mutex::default(),
            state: Mutex::default(),
        }))
    }
}

struct TestImports {
    stores: BTreeMap<String, MemoryStore>,
    now: u64,
    log: Mutex<Vec<(Level, String)>>,
    state: Mutex<BTreeMap<String, Vec<u8>>>,
}

const SEAL_TAG: &[u8; 8] = b"testseal";

fn checksum(purpose: &str, data: &[u8]) -> u64 {
    // FNV-1a over the purpose, a separator and the data.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes().chain([0u8]).chain(data.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl NativeImports for TestImports {
    fn log(&self, level: Level, message: &str) {
        lock(&self.log).push((level, message.to_owned()));
    }

    fn progress(&self, _done: u64, _total: Option<u64>, _what: &str) {}

    fn now(&self) -> u64 {
        self.now
    }

    fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = SEAL_TAG.to_vec();
        out.extend_from_slice(&checksum(purpose, plaintext).to_be_bytes());
        out.extend_from_slice(plaintext);
        Ok(out)
    }

    fn unseal(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 16 || &sealed[..8] != SEAL_TAG {
            return Err(SealError::Tampered);
        }
        let body = &sealed[16..];
        if sealed[8..16] != checksum(purpose, body).to_be_bytes() {
            return Err(SealError::Tampered);
        }
        Ok(body.to_vec())
    }

    fn open(&self, name: &str) -> Result<Arc<dyn NativeStore>, BlobError> {
        match self.stores.get(name) {
            Some(s) => Ok(Arc::new(s.clone())),
            None => Err(BlobError::Denied(format!("store `{name}` is not granted to this plugin"))),
        }
    }

    fn state_get(&self, name: &str) -> Result<Option<Vec<u8>>, BlobError> {
        Ok(lock(&self.state).get(name).cloned())
    }

    fn state_put(&self, name: &str, value: &[u8]) -> Result<(), BlobError> {
        lock(&self.state).insert(name.to_owned(), value.to_vec());
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another test thread must not hide this one's result.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An in-memory blob store with random access. Clones share contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    /// Every key currently stored, in order (for assertions).
    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }

    /// Change one byte of an object in place (to test corruption handling).
    pub fn corrupt(&self, key: &str, index: usize) -> bool {
        match lock(&self.objects).get_mut(key).and_then(|o| o.get_mut(index)) {
            Some(b) => {
                *b ^= 0xff;
                true
            }
            None => false,
        }
    }
}

/// Check a key the way the host's stores do.
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let bad = key.is_empty()
        || key.len() > 1024
        || key.starts_with('/')
        || key.ends_with('/')
        || key.contains('\0')
        || key.contains('\\')
        || key.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad { Err(BlobError::BadKey(format!("{key:?}"))) } else { Ok(()) }
}

impl NativeStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        check_key(key)?;
        Ok(lock(&self.objects).get(key).cloned())
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, BlobError> {
        check_key(key)?;
        Ok(lock(&self.objects).get(key).map(|o| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(o.len());
            let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(o.len());
            o[start..end].to_vec()
        }))
    }

    fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        check_key(key)?;
        Ok(lock(&self.objects).get(key).map(|o| o.len() as u64))
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), BlobError> {
        check_key(key)?;
        let mut objects = lock(&self.objects);
        if mode == PutMode::CreateOnly && objects.contains_key(key) {
            return Err(BlobError::Exists);
        }
        objects.insert(key.to_owned(), data.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool, BlobError> {
        check_key(key)?;
        Ok(lock(&self.objects).remove(key).is_some())
    }

    fn list_keys(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<Page, BlobError> {
        let limit = limit.clamp(1, 1000) as usize;
        let objects = lock(&self.objects);
        let mut keys: Vec<String> = objects
            .keys()
            .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|a| k.as_str() > a))
            .take(limit + 1)
            .cloned()
            .collect();
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().cloned()
        } else {
            None
        };
        Ok(Page { keys, next })
    }

    fn begin_upload(&self, key: &str, mode: PutMode) -> Result<Box<dyn NativeUpload>, BlobError> {
        check_key(key)?;
        Ok(Box::new(MemoryUpload { store: self.clone(), key: key.to_owned(), mode, data: Vec::new() }))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { random_access: true }
    }

    fn available(&self) -> Result<Option<u64>, BlobError> {
        Ok(None)
    }

    fn write_at(&self, key: &str, offset: u64, data: &[u8]) -> Result<(), BlobError> {
        check_key(key)?;
        let start = usize::try_from(offset).map_err(|_| BlobError::NoSpace)?;
        let end = start.checked_add(data.len()).ok_or(BlobError::NoSpace)?;
        let mut objects = lock(&self.objects);
        let o = objects.entry(key.to_owned()).or_default();
        if o.len() < end {
            o.resize(end, 0);
        }
        o[start..end].copy_from_slice(data);
        Ok(())
    }

    fn set_len(&self, key: &str, len: u64) -> Result<(), BlobError> {
        check_key(key)?;
        let len = usize::try_from(len).map_err(|_| BlobError::NoSpace)?;
        lock(&self.objects).entry(key.to_owned()).or_default().resize(len, 0);
        Ok(())
    }

    fn sync(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        if lock(&self.objects).contains_key(key) { Ok(()) } else { Err(BlobError::NotFound) }
    }

    fn rename(&self, from: &str, to: &str, mode: PutMode) -> Result<(), BlobError> {
        check_key(from)?;
        check_key(to)?;
        let mut objects = lock(&self.objects);
        if mode == PutMode::CreateOnly && objects.contains_key(to) {
            return Err(BlobError::Exists);
        }
        let o = objects.remove(from).ok_or(BlobError::NotFound)?;
        objects.insert(to.to_owned(), o);
        Ok(())
    }
}

struct MemoryUpload {
    store: MemoryStore,
    key: String,
    mode: PutMode,
    data: Vec<u8>,
}

impl NativeUpload for MemoryUpload {
    fn append(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), BlobError> {
        self.store.put(&self.key, &self.data, self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::PutMode;

    #[test]
    fn stand_ins_keep_the_host_contract() {
        let host = TestHost::new().with_memory_store("s").build();
        assert!(matches!(host.open_store("other"), Err(BlobError::Denied(_))));
        let s = host.open_store("s").unwrap();
        for bad in ["", "/abs", "a/../b", "a//b", "..", "a/"] {
            assert!(matches!(s.put(bad, b"x", PutMode::Overwrite), Err(BlobError::BadKey(_))), "{bad}");
        }
        s.put("a", b"1", PutMode::CreateOnly).unwrap();
        assert_eq!(s.put("a", b"2", PutMode::CreateOnly), Err(BlobError::Exists));
        for i in 0..1500 {
            s.put(&format!("p/{i:05}"), b"", PutMode::Overwrite).unwrap();
        }
        let all = s.list_all("p/").unwrap();
        assert_eq!(all.len(), 1500);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let sealed = host.seal("lease", b"secret").unwrap();
        assert_eq!(host.unseal("lease", &sealed).unwrap(), b"secret");
        assert_eq!(host.unseal("account", &sealed), Err(SealError::Tampered));
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(host.unseal("lease", &changed), Err(SealError::Tampered));
    }
}

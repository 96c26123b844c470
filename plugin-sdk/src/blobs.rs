//! Granted blob stores as seen by a plugin: [`Store`] and streamed [`Upload`]s.
//!
//! Keys are `/`-separated relative paths. The host confines them to the store; a key that
//! tries to leave it is refused with [`BlobError::BadKey`]. Random-access operations
//! (`write_at`, `set_len`, `sync`, `rename`) exist only where [`Store::capabilities`] says so;
//! object stores such as S3 answer [`BlobError::Unsupported`].

use std::fmt;
use std::sync::Arc;

use crate::native::{NativeStore, NativeUpload};
use crate::payload::{Payload, PayloadInner};

/// Why a blob store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobError {
    /// No object under that key.
    NotFound,
    /// A create-only write found an object already there.
    Exists,
    /// The key is not acceptable to the store.
    BadKey(String),
    /// More bytes than the host buffers for one call.
    TooLarge(u64),
    /// The store cannot do that operation.
    Unsupported(String),
    /// The store is out of space.
    NoSpace,
    /// The store refused access.
    Denied(String),
    /// Any other failure, with a message naming it.
    Io(String),
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobError::NotFound => f.write_str("no such object"),
            BlobError::Exists => f.write_str("object already exists"),
            BlobError::BadKey(m) => write!(f, "bad key: {m}"),
            BlobError::TooLarge(n) => {
                write!(f, "{n} bytes is more than the host buffers for one call")
            }
            BlobError::Unsupported(m) => write!(f, "unsupported by this store: {m}"),
            BlobError::NoSpace => f.write_str("store is out of space"),
            BlobError::Denied(m) => write!(f, "access denied: {m}"),
            BlobError::Io(m) => write!(f, "store i/o failed: {m}"),
        }
    }
}

impl std::error::Error for BlobError {}

/// What a write does when the key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`BlobError::Exists`].
    CreateOnly,
    /// Replace the object whole.
    Overwrite,
}

/// What a store can do beyond the object operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `write_at`, `set_len`, `sync` and `rename` work.
    pub random_access: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Keys in ascending byte order.
    pub keys: Vec<String>,
    /// Pass as `start_after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

enum StoreInner {
    #[cfg(target_arch = "wasm32")]
    Wasm(crate::__private::imports::WasmStore),
    Native(Arc<dyn NativeStore>),
}

/// An open, granted blob store.
pub struct Store {
    inner: StoreInner,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Store")
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.inner {
            #[cfg(target_arch = "wasm32")]
            StoreInner::Wasm($s) => $e,
            StoreInner::Native($s) => $e,
        }
    };
}

impl Store {
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn wasm(store: crate::__private::imports::WasmStore) -> Self {
        Store { inner: StoreInner::Wasm(store) }
    }

    pub(crate) fn native(store: Arc<dyn NativeStore>) -> Self {
        Store { inner: StoreInner::Native(store) }
    }

    /// The whole object, or `None`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        dispatch!(self, s => s.get(key))
    }

    /// Up to `len` bytes from `offset` (short at the end), or `None` if the object is absent.
    pub fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, BlobError> {
        dispatch!(self, s => s.get_range(key, offset, len))
    }

    /// The object's size, or `None`.
    pub fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        dispatch!(self, s => s.head(key))
    }

    /// Write an object whole, durably and atomically.
    pub fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), BlobError> {
        dispatch!(self, s => s.put(key, data, mode))
    }

    /// Remove an object; `true` if it existed.
    pub fn delete(&self, key: &str) -> Result<bool, BlobError> {
        dispatch!(self, s => s.delete(key))
    }

    /// Keys under `prefix` after `start_after`, at most `limit` (the host may clamp it).
    pub fn list_keys(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<Page, BlobError> {
        dispatch!(self, s => s.list_keys(prefix, start_after, limit))
    }

    /// Every key under `prefix`, following pages.
    pub fn list_all(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_keys(prefix, after.as_deref(), 1000)?;
            keys.extend(page.keys);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(keys),
            }
        }
    }

    /// Start a streamed upload; nothing is visible until [`Upload::finish`].
    pub fn begin_upload(&self, key: &str, mode: PutMode) -> Result<Upload, BlobError> {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            StoreInner::Wasm(s) => s.begin_upload(key, mode).map(|u| Upload { inner: UploadInner::Wasm(u) }),
            StoreInner::Native(s) => s.begin_upload(key, mode).map(|u| Upload { inner: UploadInner::Native(u) }),
        }
    }

    /// What this store can do.
    pub fn capabilities(&self) -> Capabilities {
        dispatch!(self, s => s.capabilities())
    }

    /// Bytes still available for new objects, if the store can tell.
    pub fn available(&self) -> Result<Option<u64>, BlobError> {
        dispatch!(self, s => s.available())
    }

    /// Write at an offset, creating the object and zero-filling holes; durable after `sync`.
    pub fn write_at(&self, key: &str, offset: u64, data: &[u8]) -> Result<(), BlobError> {
        dispatch!(self, s => s.write_at(key, offset, data))
    }

    /// Truncate or extend an object to `len` bytes.
    pub fn set_len(&self, key: &str, len: u64) -> Result<(), BlobError> {
        dispatch!(self, s => s.set_len(key, len))
    }

    /// Make earlier random-access changes to an object durable.
    pub fn sync(&self, key: &str) -> Result<(), BlobError> {
        dispatch!(self, s => s.sync(key))
    }

    /// Move an object durably; with [`PutMode::CreateOnly`] an existing target is an error.
    pub fn rename(&self, from: &str, to: &str, mode: PutMode) -> Result<(), BlobError> {
        dispatch!(self, s => s.rename(from, to, mode))
    }

    /// [`Store::get_range`] as a [`Payload`]: under ABI 0.2.0 the bytes stay in the host.
    pub fn get_range_payload(&self, key: &str, offset: u64, len: u64) -> Result<Option<Payload>, BlobError> {
        match &self.inner {
            #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
            StoreInner::Wasm(s) => s.get_range_payload(key, offset, len),
            _ => Ok(self.get_range(key, offset, len)?.map(Payload::from)),
        }
    }

    /// [`Store::put`] of a [`Payload`]'s bytes, without copying host-held bytes into the plugin.
    pub fn put_payload(&self, key: &str, data: Payload, mode: PutMode) -> Result<(), BlobError> {
        match data.inner {
            PayloadInner::Bytes(b) => dispatch!(self, s => s.put_owned(key, b, mode)),
            #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
            PayloadInner::Host(h) => match &self.inner {
                StoreInner::Wasm(s) => s.put_payload(key, h, mode),
                StoreInner::Native(s) => s.put(key, &h.to_vec(), mode),
            },
        }
    }

    /// [`Store::write_at`] of a [`Payload`]'s bytes, without copying host-held bytes into the
    /// plugin.
    pub fn write_payload_at(&self, key: &str, offset: u64, data: Payload) -> Result<(), BlobError> {
        match data.inner {
            PayloadInner::Bytes(b) => dispatch!(self, s => s.write_at_owned(key, offset, b)),
            #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
            PayloadInner::Host(h) => match &self.inner {
                StoreInner::Wasm(s) => s.write_payload_at(key, offset, h),
                StoreInner::Native(s) => s.write_at(key, offset, &h.to_vec()),
            },
        }
    }

    /// The whole objects under `keys`, one answer per key in order, as [`Store::get`] gives
    /// them. Under ABI 0.2.0 the host reads them concurrently, in calls of at most 1000 keys
    /// (split here); elsewhere one by one. For small objects: under 0.2.0 one larger than a
    /// 32nd of the bytes the host moves in one call answers [`BlobError::TooLarge`] in its
    /// place (read it with [`Store::get`]), and the objects of one call together must fit in
    /// those bytes, or the call fails with [`BlobError::TooLarge`]: ask for fewer at a time.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<GetAnswer>, BlobError> {
        let mut out = Vec::with_capacity(keys.len());
        for part in keys.chunks(GET_MANY_KEYS) {
            match &self.inner {
                #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
                StoreInner::Wasm(s) => out.extend(s.get_many(part)?),
                _ => out.extend(part.iter().map(|k| self.get(k))),
            }
        }
        Ok(out)
    }
}

/// One object's answer in [`Store::get_many`]: what [`Store::get`] would have answered.
pub type GetAnswer = Result<Option<Vec<u8>>, BlobError>;

/// Keys one `get-many` call may carry.
const GET_MANY_KEYS: usize = 1000;

enum UploadInner {
    #[cfg(target_arch = "wasm32")]
    Wasm(crate::__private::imports::WasmUpload),
    Native(Box<dyn NativeUpload>),
}

/// A streamed upload of one object. Dropping it without [`Upload::finish`] abandons it.
pub struct Upload {
    inner: UploadInner,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Upload")
    }
}

impl Upload {
    /// Append the next bytes.
    pub fn append(&mut self, data: &[u8]) -> Result<(), BlobError> {
        match &mut self.inner {
            #[cfg(target_arch = "wasm32")]
            UploadInner::Wasm(u) => u.append(data),
            UploadInner::Native(u) => u.append(data),
        }
    }

    /// Append a [`Payload`]'s bytes, without copying host-held bytes into the plugin.
    pub fn append_payload(&mut self, data: Payload) -> Result<(), BlobError> {
        match data.inner {
            PayloadInner::Bytes(b) => self.append(&b),
            #[cfg(all(target_arch = "wasm32", not(feature = "abi-0-1")))]
            PayloadInner::Host(h) => match &mut self.inner {
                UploadInner::Wasm(u) => u.append_payload(h),
                UploadInner::Native(u) => u.append(&h.to_vec()),
            },
        }
    }

    /// Make the object visible under its key, durably.
    pub fn finish(self) -> Result<(), BlobError> {
        match self.inner {
            #[cfg(target_arch = "wasm32")]
            UploadInner::Wasm(u) => u.finish(),
            UploadInner::Native(u) => u.finish(),
        }
    }
}

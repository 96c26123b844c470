//! Blob store drivers: where plugins' bytes go. A store is granted to a plugin by name in the
//! node's config; the plugin reaches it only through the host.
//!
//! Architecture invariant: a key can never reach outside its store. Keys are validated here
//! ([`BlobKey`]) and the directory driver additionally resolves every path through cap-std,
//! so `..`, absolute paths and symlinks pointing out of the root fail whatever the key says.
//! This crate knows nothing of plugins, wasm or shares. Its one use of the node key is
//! [`state`]: the host's own small sealed values, kept under the reserved prefix. A store a
//! backend shares with a persistence strategy is split between them by [`Partition`].

mod cached;
mod dir;
mod key;
mod memory;
pub mod state;
mod view;

use std::fmt;

use async_trait::async_trait;

pub use dir::DirStore;
pub use key::BlobKey;
pub use memory::MemoryStore;
pub use view::{PERSISTENCE_ROOTS, Partition};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No object under that key.
    #[error("no such object")]
    NotFound,
    /// A create-only write found an object there.
    #[error("object already exists")]
    Exists,
    /// The key is not acceptable.
    #[error("bad key {0}")]
    BadKey(String),
    /// More bytes than allowed for one call.
    #[error("{0} bytes is more than one call may move")]
    TooLarge(u64),
    /// The driver cannot do this.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Out of space.
    #[error("out of space")]
    NoSpace,
    /// Permission denied or escape attempt.
    #[error("denied: {0}")]
    Denied(String),
    /// Any other failure.
    #[error("{0}")]
    Io(String),
}

impl StoreError {
    /// Classify an I/O error, naming the store and operation in the message.
    pub fn from_io(store: &str, op: &str, key: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound => StoreError::NotFound,
            K::AlreadyExists => StoreError::Exists,
            K::StorageFull => StoreError::NoSpace,
            K::PermissionDenied => StoreError::Denied(format!("store `{store}` {op} {key:?}: {e}")),
            _ => StoreError::Io(format!("store `{store}` {op} {key:?}: {e}")),
        }
    }
}

/// How a write treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`StoreError::Exists`].
    CreateOnly,
    /// Replace it whole.
    Overwrite,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Ascending.
    pub keys: Vec<String>,
    /// Where the next page starts after; `None` on the last page.
    pub next: Option<String>,
}

/// The most keys one listing page returns, whatever a caller asks for.
pub const MAX_PAGE: usize = 1000;

/// A blob store. Operations are async; drivers do blocking work off the async threads.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// The store's name, for messages.
    fn name(&self) -> &str;
    /// The whole object.
    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `len` bytes from `offset`, short at the end.
    async fn get_range(&self, key: &BlobKey, offset: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// The object's size.
    async fn head(&self, key: &BlobKey) -> Result<Option<u64>, StoreError>;
    /// Write an object whole, durably and atomically. Takes the bytes by value: drivers hand
    /// them to a blocking worker or keep them, so a borrowed slice would cost a copy.
    async fn put(&self, key: &BlobKey, data: Vec<u8>, mode: PutMode) -> Result<(), StoreError>;
    /// Remove an object; `true` if it existed.
    async fn delete(&self, key: &BlobKey) -> Result<bool, StoreError>;
    /// Keys starting with `prefix` after `start_after`, at most `limit` (clamped to [`MAX_PAGE`]).
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Page, StoreError>;
    /// Start a streamed upload; nothing is visible until it finishes.
    async fn begin_upload(&self, key: &BlobKey, mode: PutMode) -> Result<Box<dyn BlobUpload>, StoreError>;
    /// Bytes available for new objects, if known.
    async fn available(&self) -> Result<Option<u64>, StoreError>;

    /// Whether the random-access operations below work.
    fn random_access(&self) -> bool {
        false
    }
    /// Write at an offset, creating the object, zero-filling holes; durable after `sync`.
    async fn write_at(&self, key: &BlobKey, offset: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let _ = (key, offset, data);
        Err(StoreError::Unsupported(format!("store `{}` has no random-access writes", self.name())))
    }
    /// Truncate or extend an object.
    async fn set_len(&self, key: &BlobKey, len: u64) -> Result<(), StoreError> {
        let _ = (key, len);
        Err(StoreError::Unsupported(format!("store `{}` has no random-access writes", self.name())))
    }
    /// Make random-access changes to an object durable.
    async fn sync(&self, key: &BlobKey) -> Result<(), StoreError> {
        let _ = key;
        Err(StoreError::Unsupported(format!("store `{}` has no random-access writes", self.name())))
    }
    /// Move an object durably.
    async fn rename(&self, from: &BlobKey, to: &BlobKey, mode: PutMode) -> Result<(), StoreError> {
        let _ = (from, to, mode);
        Err(StoreError::Unsupported(format!("store `{}` cannot rename", self.name())))
    }
}

/// A streamed upload of one object.
#[async_trait]
pub trait BlobUpload: Send {
    /// Append the next bytes.
    async fn append(&mut self, data: Vec<u8>) -> Result<(), StoreError>;
    /// Make the object visible, durably.
    async fn finish(self: Box<Self>) -> Result<(), StoreError>;
    /// Abandon it, leaving nothing behind.
    async fn abort(self: Box<Self>);
}

/// Filter and page a sorted key sequence the same way in every driver.
pub(crate) fn page_of<'a>(
    sorted: impl Iterator<Item = &'a str>,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Page {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut keys: Vec<String> = sorted
        .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|a| *k > a))
        .take(limit + 1)
        .map(str::to_owned)
        .collect();
    let next = if keys.len() > limit {
        keys.truncate(limit);
        keys.last().cloned()
    } else {
        None
    };
    Page { keys, next }
}

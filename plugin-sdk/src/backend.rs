//! The storage backend trait a plugin implements, and the values it exchanges with the host.
//!
//! The host owns every protocol rule (upload state, written ranges, secrets, leases, locks,
//! test vectors) and serialises calls on one share; a backend only stores bytes. Method
//! documentation states what the host expects; the conformance suite
//! (`marsh plugin test PLUGIN.wasm`) checks it.

use std::fmt;

use crate::blobs::BlobError;
use crate::config::Config;
use crate::host::Host;
use crate::payload::Payload;
use crate::types::{InitError, PluginInfo, ShareNumber, StorageIndex};

/// Why a backend operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// No such share, or no such in-progress upload.
    NotFound,
    /// The share or upload already exists.
    Exists,
    /// The offset or length is outside what the share allows.
    OutOfRange(String),
    /// The store is out of space.
    NoSpace,
    /// The stored data is damaged.
    Corrupt(String),
    /// The underlying store failed; the message names the store and operation.
    Io(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::NotFound => f.write_str("no such share"),
            BackendError::Exists => f.write_str("share already exists"),
            BackendError::OutOfRange(m) => write!(f, "out of range: {m}"),
            BackendError::NoSpace => f.write_str("out of space"),
            BackendError::Corrupt(m) => write!(f, "corrupt share: {m}"),
            BackendError::Io(m) => write!(f, "i/o: {m}"),
        }
    }
}

impl std::error::Error for BackendError {}

impl From<BlobError> for BackendError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => BackendError::NotFound,
            BlobError::Exists => BackendError::Exists,
            BlobError::NoSpace => BackendError::NoSpace,
            BlobError::TooLarge(n) => BackendError::OutOfRange(format!("{n} bytes in one call is too many")),
            other => BackendError::Io(other.to_string()),
        }
    }
}

/// Result of a backend operation.
pub type BackendResult<T> = Result<T, BackendError>;

/// One write of a mutable share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteVector {
    /// Where the data goes.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Space as the backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes still available to new shares, if known.
    pub available: Option<u64>,
    /// Bytes held by shares, if known without a full walk.
    pub used: Option<u64>,
}

/// What a [`Backend::sweep`] found and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Objects looked at.
    pub examined: u64,
    /// Leftovers removed.
    pub removed: u64,
    /// Their bytes, where known.
    pub removed_bytes: u64,
}

/// One page of storage indexes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexPage {
    /// Storage indexes in ascending order.
    pub indexes: Vec<StorageIndex>,
    /// Pass as `start_after` for the next page; `None` on the last page.
    pub next: Option<StorageIndex>,
}

impl IndexPage {
    /// The page after `start_after` of at most `limit` (clamped to 1..=1000) indexes, from
    /// `indexes` sorted ascending; duplicates are dropped.
    pub fn from_sorted(
        indexes: impl IntoIterator<Item = StorageIndex>,
        start_after: Option<&StorageIndex>,
        limit: u32,
    ) -> Self {
        let limit = limit.clamp(1, 1000) as usize;
        let mut page: Vec<StorageIndex> = Vec::with_capacity(limit + 1);
        for si in indexes {
            if start_after.is_some_and(|a| &si <= a) || page.last() == Some(&si) {
                continue;
            }
            page.push(si);
            if page.len() > limit {
                break;
            }
        }
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().cloned()
        } else {
            None
        };
        IndexPage { indexes: page, next }
    }
}

/// A storage backend: where shares live and in what layout.
///
/// One value of this type lives in one plugin instance, created by [`Backend::init`]. The host
/// may create several instances (see [`crate::Concurrency`]) and discards an instance after a
/// trap, so shares must live in blob stores, not in the value.
pub trait Backend: Sized + 'static {
    /// Who the plugin is. Must not do I/O.
    fn info() -> PluginInfo;

    /// Create the instance's state from the operator's configuration.
    fn init(host: Host, config: Config) -> Result<Self, InitError>;

    /// Start an immutable share of `size` bytes. [`BackendError::Exists`] if it is complete;
    /// an unfinished earlier upload of the same share is discarded.
    fn begin(&mut self, si: &StorageIndex, shnum: ShareNumber, size: u64) -> BackendResult<()>;
    /// Write bytes of an in-progress immutable share. Hand `data` to a store
    /// ([`crate::Store::write_payload_at`], [`crate::Store::put_payload`]) to keep its bytes
    /// out of the plugin's memory; [`Payload::into_vec`] copies them in when the plugin must
    /// look at them.
    fn write(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, data: Payload) -> BackendResult<()>;
    /// Read bytes already written to an in-progress share, short at the declared size;
    /// [`BackendError::NotFound`] when there is no upload.
    fn read_incoming(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64)
    -> BackendResult<Vec<u8>>;
    /// Make an in-progress share complete and visible, durably.
    fn finish(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<()>;
    /// Discard an in-progress share; not an error if there is none.
    fn abort(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<()>;
    /// Read a complete immutable share, short at its end: at most `len` bytes. Answer with
    /// [`crate::Store::get_range_payload`] to pass a store's bytes on without holding them,
    /// or with `Payload::from(bytes)`.
    fn read(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64) -> BackendResult<Payload>;
    /// Size of a complete immutable share, or `None`.
    fn size(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<Option<u64>>;
    /// Complete immutable shares of a storage index, ascending.
    fn list_shares(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>>;
    /// Remove a complete immutable share; `true` if it existed.
    fn delete(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<bool>;

    /// Read a mutable share, short at its end, empty if absent.
    fn mutable_read(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64) -> BackendResult<Vec<u8>>;
    /// Apply writes in order (creating the share, zero-filling holes), then shrink to
    /// `new_length` if given and smaller. Durable when it returns.
    fn mutable_write(
        &mut self,
        si: &StorageIndex,
        shnum: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> BackendResult<()>;
    /// Size of a mutable share, or `None`.
    fn mutable_size(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<Option<u64>>;
    /// Mutable shares of a storage index, ascending.
    fn mutable_list(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>>;
    /// Remove a mutable share; `true` if it existed.
    fn mutable_delete(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<bool>;

    /// Storage indexes holding any share, ascending, after `start_after`, at most `limit`.
    fn list_indexes(&mut self, start_after: Option<&StorageIndex>, limit: u32) -> BackendResult<IndexPage>;
    /// Space figures.
    fn usage(&mut self) -> BackendResult<Usage>;
    /// Remove leftovers of interrupted work older than `grace_seconds` (never work in
    /// progress). The default has nothing to sweep.
    fn sweep(&mut self, grace_seconds: u64) -> BackendResult<SweepReport> {
        let _ = grace_seconds;
        Ok(SweepReport::default())
    }
}

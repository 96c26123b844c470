//! The storage backend contract as the host sees it: async, shareable across tasks, with
//! typed errors that keep a plugin's own answers apart from host faults (a trap, a missed
//! deadline, a blown memory cap).
//!
//! The server owns the protocol rules (upload state, secrets, leases, test vectors, locks);
//! a backend stores bytes. Callers serialise operations on one share.

use async_trait::async_trait;

use crate::ids::{ShareNumber, StorageIndex};

/// Why a backend operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No such share, or no such in-progress upload.
    #[error("no such share")]
    NotFound,
    /// The share or upload already exists.
    #[error("share already exists")]
    Exists,
    /// An offset or length outside what the share or the host allows.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// The store is out of space.
    #[error("out of space")]
    NoSpace,
    /// Stored data is damaged.
    #[error("corrupt share: {0}")]
    Corrupt(String),
    /// The backend's store failed.
    #[error("backend i/o failed: {0}")]
    Io(String),
    /// The plugin itself failed (trap, deadline, memory cap, oversized answer). The host has
    /// discarded the instance; the next call gets a fresh one.
    #[error("backend plugin fault: {0}")]
    Fault(String),
}

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
    /// Ascending.
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
            page.last().copied()
        } else {
            None
        };
        IndexPage { indexes: page, next }
    }
}

/// A storage backend. See the WIT `shares` interface for the meaning of each operation; the
/// conformance suite checks every implementation against it.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Start an immutable share of `size` bytes.
    async fn begin(&self, si: &StorageIndex, shnum: ShareNumber, size: u64) -> Result<(), BackendError>;
    /// Write bytes of an in-progress immutable share.
    async fn write(&self, si: &StorageIndex, shnum: ShareNumber, offset: u64, data: &[u8]) -> Result<(), BackendError>;
    /// [`Backend::write`] with the bytes handed over, for a backend that can keep them as they
    /// are (a wasm 0.2.0 plugin's host-held payload, a native plugin's payload) instead of
    /// copying them. The server writes an upload's body this way.
    async fn write_owned(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), BackendError> {
        self.write(si, shnum, offset, &data).await
    }
    /// Read bytes already written to an in-progress share, short at the declared size.
    async fn read_incoming(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError>;
    /// Make an in-progress share complete and visible, durably.
    async fn finish(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), BackendError>;
    /// Discard an in-progress share; not an error if there is none.
    async fn abort(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), BackendError>;
    /// Read a complete immutable share, short at its end.
    async fn read(&self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64)
    -> Result<Vec<u8>, BackendError>;
    /// Size of a complete immutable share.
    async fn size(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, BackendError>;
    /// Complete immutable shares of a storage index, ascending.
    async fn list_shares(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError>;
    /// Remove a complete immutable share.
    async fn delete(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, BackendError>;

    /// Read a mutable share, short at its end, empty if absent.
    async fn mutable_read(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError>;
    /// Apply writes, then shrink to `new_length` if smaller; `Some(0)` deletes the share.
    async fn mutable_write(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> Result<(), BackendError>;
    /// Size of a mutable share.
    async fn mutable_size(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, BackendError>;
    /// Mutable shares of a storage index, ascending.
    async fn mutable_list(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError>;
    /// Remove a mutable share.
    async fn mutable_delete(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, BackendError>;

    /// Storage indexes holding any share, ascending.
    async fn list_indexes(&self, start_after: Option<&StorageIndex>, limit: u32) -> Result<IndexPage, BackendError>;
    /// Space figures.
    async fn usage(&self) -> Result<Usage, BackendError>;
    /// Remove leftovers of interrupted work older than `grace_seconds`.
    async fn sweep(&self, grace_seconds: u64) -> Result<SweepReport, BackendError> {
        let _ = grace_seconds;
        Ok(SweepReport::default())
    }

    /// The most bytes one `write` or `read` call may carry; callers split larger transfers.
    fn max_chunk(&self) -> usize {
        1 << 20
    }
}

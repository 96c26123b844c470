//! The accountant persistence strategy trait: how accounts, attributes and leases survive
//! the loss of the machine. Changes arrive as opaque, versioned records produced by the host;
//! a strategy stores them (sealed) and hands them back during recovery. A strategy that
//! compacts its log takes a [`Snapshot`] of the host's database and hands it back through a
//! [`Restore`]; both move in pieces, so no call carries more than the host's per-call bound.

use std::fmt;
use std::sync::Arc;

use crate::native::NativeAccountant;

use crate::config::Config;
use crate::host::Host;
use crate::types::{InitError, PluginInfo};

/// What the host's local database looks like at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbState {
    /// The local database exists.
    pub present: bool,
    /// The newest change sequence number it holds (0 when empty or absent).
    pub last_sequence: u64,
}

/// What a strategy wants done at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Use the local database as it is.
    UseLocal,
    /// Run recovery now.
    Recover,
}

/// What a recovery found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoverySummary {
    /// Change records applied.
    pub changes_read: u64,
    /// Snapshots restored.
    pub snapshots_read: u64,
    /// Blobs that did not unseal or parse, skipped.
    pub tampered: u64,
    /// Missing sequence ranges, e.g. `41-57`.
    pub gaps: Vec<String>,
}

/// Why a persistence operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistError {
    /// The store failed.
    Io(String),
    /// A sealed blob did not authenticate.
    Tampered(String),
    /// Changes are missing.
    Gap(String),
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Io(m) => write!(f, "i/o: {m}"),
            PersistError::Tampered(m) => write!(f, "tampered: {m}"),
            PersistError::Gap(m) => write!(f, "gap in persisted changes: {m}"),
        }
    }
}

impl std::error::Error for PersistError {}

/// An accountant persistence strategy.
pub trait Persistence: Sized + 'static {
    /// Who the plugin is. Must not do I/O.
    fn info() -> PluginInfo;
    /// Create the instance's state from the operator's configuration.
    fn init(host: Host, config: Config) -> Result<Self, InitError>;
    /// Decide, from the local database's state, whether the node can start as is.
    fn startup(&mut self, state: DbState, auto_recover: bool) -> Result<Plan, InitError>;
    /// Persist changes numbered from `first_sequence`, in order. A compacting strategy may
    /// take an [`Accountant::snapshot`] here.
    fn record(&mut self, accountant: &Accountant, first_sequence: u64, changes: &[Vec<u8>])
    -> Result<(), PersistError>;
    /// Rebuild the host's database through [`Accountant::apply`] / [`Accountant::begin_restore`].
    fn recover(&mut self, accountant: &Accountant) -> Result<RecoverySummary, PersistError>;
}

/// The host's accountant, as a recovering strategy sees it.
#[derive(Clone)]
pub struct Accountant {
    inner: AccountantInner,
}

#[derive(Clone)]
enum AccountantInner {
    #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
    Wasm,
    Native(Arc<dyn NativeAccountant>),
}

impl fmt::Debug for Accountant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Accountant")
    }
}

impl Accountant {
    #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
    pub(crate) fn wasm() -> Self {
        Accountant { inner: AccountantInner::Wasm }
    }

    /// An accountant backed by a native implementation (tests, native hosts).
    pub fn native(accountant: Arc<dyn NativeAccountant>) -> Self {
        Accountant { inner: AccountantInner::Native(accountant) }
    }

    /// Apply recovered changes in order.
    pub fn apply(&self, changes: &[Vec<u8>]) -> Result<(), PersistError> {
        match &self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            AccountantInner::Wasm => crate::__private::imports::apply(changes),
            AccountantInner::Native(a) => a.apply(changes),
        }
    }

    /// A consistent snapshot of the host's database, taken now.
    pub fn snapshot(&self) -> Result<Snapshot, PersistError> {
        match &self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            AccountantInner::Wasm => {
                crate::__private::imports::take_snapshot().map(|s| Snapshot { inner: SnapshotInner::Wasm(s) })
            }
            AccountantInner::Native(a) => {
                a.snapshot().map(|(sequence, bytes)| Snapshot { inner: SnapshotInner::Native { sequence, bytes } })
            }
        }
    }

    /// Start handing a snapshot back (during `recover` only).
    pub fn begin_restore(&self) -> Result<Restore, PersistError> {
        match &self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            AccountantInner::Wasm => {
                crate::__private::imports::begin_restore().map(|r| Restore { inner: RestoreInner::Wasm(r) })
            }
            AccountantInner::Native(a) => {
                Ok(Restore { inner: RestoreInner::Native { to: a.clone(), bytes: Vec::new() } })
            }
        }
    }
}

/// The sequence number a change record starts with (8 bytes, big-endian; see the WIT
/// `accountant.change`), or `None` if it is too short to have one.
pub fn change_sequence(change: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(*change.first_chunk::<8>()?))
}

/// Changes framed as one blob (each as a 4-byte big-endian length, then its bytes), the layout
/// first-party strategies use for a run of changes in one object.
pub fn encode_changes(changes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(changes.iter().map(|c| c.len() + 4).sum());
    for c in changes {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// The changes [`encode_changes`] framed, or `None` if a frame runs past the end.
pub fn decode_changes(mut b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (len, rest) = b.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        out.push(rest.get(..len)?.to_vec());
        b = &rest[len..];
    }
    Some(out)
}

/// Recovered changes handed to the host in order, in batches that stay well under the bytes a
/// call may move. Queue with [`ApplyBatch::push`]; [`ApplyBatch::flush`] what is left at the end.
#[derive(Debug)]
pub struct ApplyBatch<'a> {
    accountant: &'a Accountant,
    changes: Vec<Vec<u8>>,
    bytes: usize,
    applied: u64,
}

impl<'a> ApplyBatch<'a> {
    /// Bytes of changes queued before they are applied.
    pub const BYTES: usize = 512 << 10;

    /// An empty batch for `accountant`.
    pub fn new(accountant: &'a Accountant) -> Self {
        ApplyBatch { accountant, changes: Vec::new(), bytes: 0, applied: 0 }
    }

    /// Queue a change, applying the batch once it holds [`ApplyBatch::BYTES`]; true if it did.
    pub fn push(&mut self, change: Vec<u8>) -> Result<bool, PersistError> {
        self.bytes += change.len();
        self.changes.push(change);
        if self.bytes < Self::BYTES {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Apply what is queued.
    pub fn flush(&mut self) -> Result<(), PersistError> {
        if !self.changes.is_empty() {
            self.accountant.apply(&self.changes)?;
            self.applied += self.changes.len() as u64;
            (self.changes, self.bytes) = (Vec::new(), 0);
        }
        Ok(())
    }

    /// Changes applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }
}

/// A snapshot of the host's accounting database: opaque bytes, read in pieces.
pub struct Snapshot {
    inner: SnapshotInner,
}

enum SnapshotInner {
    #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
    Wasm(crate::__private::imports::WasmSnapshot),
    Native {
        sequence: u64,
        bytes: Vec<u8>,
    },
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot").field("sequence", &self.sequence()).field("size", &self.size()).finish()
    }
}

impl Snapshot {
    /// The newest change it includes.
    pub fn sequence(&self) -> u64 {
        match &self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            SnapshotInner::Wasm(s) => s.sequence(),
            SnapshotInner::Native { sequence, .. } => *sequence,
        }
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        match &self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            SnapshotInner::Wasm(s) => s.size(),
            SnapshotInner::Native { bytes, .. } => bytes.len() as u64,
        }
    }

    /// Up to `len` bytes from `offset`, shorter at the end.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, PersistError> {
        match &self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            SnapshotInner::Wasm(s) => s.read(offset, len),
            SnapshotInner::Native { bytes, .. } => {
                let size = bytes.len() as u64;
                let (start, end) = (offset.min(size), offset.saturating_add(len).min(size));
                Ok(bytes[start as usize..end as usize].to_vec())
            }
        }
    }
}

/// A snapshot being handed back to the host during recovery.
pub struct Restore {
    inner: RestoreInner,
}

enum RestoreInner {
    #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
    Wasm(crate::__private::imports::WasmRestore),
    Native {
        to: Arc<dyn NativeAccountant>,
        bytes: Vec<u8>,
    },
}

impl fmt::Debug for Restore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Restore")
    }
}

impl Restore {
    /// Append the next bytes.
    pub fn append(&mut self, data: &[u8]) -> Result<(), PersistError> {
        match &mut self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            RestoreInner::Wasm(r) => r.append(data),
            RestoreInner::Native { bytes, .. } => {
                bytes.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// Replace the host's database with the snapshot; returns its sequence.
    pub fn finish(self) -> Result<u64, PersistError> {
        match self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            RestoreInner::Wasm(r) => r.finish(),
            RestoreInner::Native { to, bytes } => to.restore(&bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the batches it is handed.
    #[derive(Default)]
    struct Batches(Mutex<Vec<usize>>);

    impl NativeAccountant for Batches {
        fn apply(&self, changes: &[Vec<u8>]) -> Result<(), PersistError> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(changes.len());
            Ok(())
        }
        fn snapshot(&self) -> Result<(u64, Vec<u8>), PersistError> {
            Err(PersistError::Io("no snapshots here".into()))
        }
        fn restore(&self, _: &[u8]) -> Result<u64, PersistError> {
            Err(PersistError::Io("no snapshots here".into()))
        }
    }

    #[test]
    fn a_batch_applies_at_its_byte_bound_and_on_flush_in_order() {
        let sink = Arc::new(Batches::default());
        let accountant = Accountant::native(sink.clone());
        let mut batch = ApplyBatch::new(&accountant);
        let quarter = vec![0u8; ApplyBatch::BYTES / 4];
        let pushed: Vec<bool> = (0..5).map(|_| batch.push(quarter.clone()).unwrap()).collect();
        assert_eq!(pushed, [false, false, false, true, false], "applied when it reached the bound");
        batch.flush().unwrap();
        batch.flush().unwrap();
        assert_eq!(*sink.0.lock().unwrap(), [4, 1], "the rest on flush, nothing for an empty flush");
        assert_eq!(batch.applied(), 5);
        assert_eq!(change_sequence(&[0, 0, 0, 0, 0, 0, 1, 2, 99]), Some(258));
        assert_eq!(change_sequence(&[1, 2, 3]), None);
    }
}

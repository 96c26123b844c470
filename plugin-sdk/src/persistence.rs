//! The accountant persistence strategy trait: how accounts, attributes and leases survive
//! the loss of the machine. Changes arrive as opaque, versioned records produced by the host;
//! a strategy stores them (sealed) and hands them back during recovery.

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
    /// Persist changes numbered from `first_sequence`, in order.
    fn record(&mut self, first_sequence: u64, changes: &[Vec<u8>]) -> Result<(), PersistError>;
    /// Persist a full snapshot as of `sequence`.
    fn checkpoint(&mut self, sequence: u64, snapshot: &[u8]) -> Result<(), PersistError>;
    /// Rebuild the host's database through [`Accountant::apply`] / [`Accountant::restore`].
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

    /// Replace the whole database with a snapshot.
    pub fn restore(&self, snapshot: &[u8]) -> Result<(), PersistError> {
        match &self.inner {
            #[cfg(all(target_arch = "wasm32", feature = "persistence"))]
            AccountantInner::Wasm => crate::__private::imports::restore(snapshot),
            AccountantInner::Native(a) => a.restore(snapshot),
        }
    }
}

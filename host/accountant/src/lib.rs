//! The accountant: the node's medium-rate state in SQLite (WAL) under `NODE_DIR/cache/`:
//! accounts and their attributes, leases per share and account, the shares each account holds
//! (for usage and quota), write enablers of mutable shares, and clients' corruption advisories.
//!
//! Accounts: `anonymous` (id 0) serves the node's announced NURL, whose swissnum lives in the
//! node directory; every named account has its own swissnum, hence its own NURL. The server
//! resolves a request's `Authorization` header to an account on every request, so creating,
//! changing or revoking an account (from `marsh account`, another process) takes effect at once.
//!
//! Secrets: lease renew/cancel secrets are stored as BLAKE2b-256 hashes, as Tahoe-LAFS keeps
//! them (leases recorded before schema 6 keep their SHA-256 ones, and are matched by either),
//! and write enablers as SHA-256 hashes; the raw enabler only where the operator asked for it
//! (`storage.keep-write-enablers`, for moving back to Tahoe). A named
//! account's swissnum is kept in the clear as well as hashed, because `marsh announce --account`
//! must print its NURL; the file is as private as the node's own key.
//!
//! API boundary: the server and the CLI reach accounting state only through [`Accountant`].

mod accounts;
mod advisories;
mod change;
mod leases;
mod log;
mod schema;
mod seqnums;
mod snapshot;
mod watch;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use accounts::CallerCache;
pub use accounts::{Account, AccountId, Attribute, Attributes, Caller, NewAccount};
pub use advisories::Advisory;
pub use change::{BadChange, Change, LeaseHash, ShareRef};
pub use leases::{AdoptedLease, AdoptedShare, Expiring, Holder, Lease};
pub use log::Logged;
pub use schema::VERSION as SCHEMA_VERSION;
pub use snapshot::{MAX_SNAPSHOT_BYTES, Snapshot};
pub use writes::{MutableShareWrite, MutableWrite};

/// Lease duration: 31 days, as Tahoe's clients expect.
pub const LEASE_SECONDS: u64 = 31 * 24 * 60 * 60;

/// Why the accountant failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountantError {
    /// The database failed.
    #[error("accountant database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The database holds a value this marsh cannot read (damaged, or written by hand).
    #[error("accountant database: {0}")]
    Corrupt(String),
    /// A file beside the database failed.
    #[error("accountant: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("accountant: no randomness: {0}")]
    Random(#[from] getrandom::Error),
    /// The database was written by a newer marsh.
    #[error("the accountant database has schema version {found}; this marsh reads up to {supported}: upgrade marsh")]
    NewerSchema {
        /// Its version.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// No account of that name.
    #[error("no account named `{0}` (see `marsh account list`)")]
    NoSuchAccount(String),
    /// An account of that name exists.
    #[error("an account named `{0}` already exists")]
    AccountExists(String),
    /// A recovered change record does not parse.
    #[error(transparent)]
    BadChange(#[from] BadChange),
    /// A snapshot handed back for restore is not a sound accounting database.
    #[error("refusing the snapshot: {0}")]
    BadSnapshot(String),
    /// A stored attribute does not parse: refused, never read as a default.
    #[error("account #{account}: {reason}")]
    BadAttribute {
        /// The account's row id.
        account: i64,
        /// What is wrong.
        reason: String,
    },
    /// The name is not acceptable.
    #[error("`{0}` is not a valid account name: use 1-64 of a-z, 0-9, `-` and `_`, starting with a letter or digit")]
    BadName(String),
}

/// SHA-256 of a secret, as the accountant stores renew and cancel secrets and write enablers.
pub fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// BLAKE2b-256 of a secret (no key, no personalisation), as Tahoe-LAFS keeps lease secrets
/// and as new leases are kept ([`LeaseHash::Blake2b`]).
pub fn blake2b(secret: &[u8]) -> [u8; 32] {
    use blake2::digest::consts::U32;
    blake2::Blake2b::<U32>::digest(secret).into()
}

/// The `Authorization` header value a swissnum gives (`Tahoe-LAFS <base64(swissnum)>`).
pub fn authorization_value(swissnum: &str) -> Vec<u8> {
    format!("Tahoe-LAFS {}", data_encoding::BASE64.encode(swissnum.as_bytes())).into_bytes()
}

/// The accounting database.
#[derive(Debug)]
pub struct Accountant {
    conn: Mutex<Connection>,
    /// The database file (none in memory).
    path: Option<PathBuf>,
    /// Callers resolved from `Authorization` values, valid while no connection has changed
    /// accounts or attributes. Every request resolves its caller; this keeps SQLite out of it.
    callers: Mutex<CallerCache>,
    /// Bumped by every change to accounts or attributes made through this value (SQLite's
    /// `data_version` only moves for other connections' commits).
    account_writes: std::sync::atomic::AtomicU64,
    /// Tells whether another process may have changed the file, without a SQLite read (none in
    /// memory, or where inotify is unavailable: then `data_version` is asked every time).
    watch: Option<watch::ChangeWatch>,
}

/// How long a statement waits for another connection's lock before it fails.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Prepared statements kept per connection (rusqlite keeps 16 unless told).
const STATEMENT_CACHE: usize = 64;

impl Accountant {
    /// Open (creating, or migrating forward) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, AccountantError> {
        let mut conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
        // `marsh account` and the running node share the file.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Statements on the request paths are prepared once and kept (`prepare_cached`); room
        // for all of them, so none is prepared again for being pushed out.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::keep_before_migrating(&conn, path)?;
        schema::migrate(&mut conn)?;
        snapshot::remove_stale_temporaries(path);
        Ok(Accountant::with(conn, Some(path.to_path_buf())))
    }

    /// A database in memory, for tests.
    pub fn in_memory() -> Result<Self, AccountantError> {
        let mut conn = Connection::open_in_memory()?;
        schema::migrate(&mut conn)?;
        Ok(Accountant::with(conn, None))
    }

    fn with(conn: Connection, path: Option<PathBuf>) -> Self {
        let watch = path.as_deref().and_then(watch::ChangeWatch::new);
        Accountant {
            conn: Mutex::new(conn),
            path,
            callers: Mutex::default(),
            account_writes: std::sync::atomic::AtomicU64::new(0),
            watch,
        }
    }

    /// Whether no caller holds the connection at this instant: a short call made now will not
    /// wait for another's (it may still wait for another process's lock on the file).
    pub fn idle(&self) -> bool {
        try_guard(&self.conn).is_some()
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every statement leaves the connection consistent; a panic elsewhere does not poison it.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `mutex` locked if no one holds it at this instant (a poisoned lock is taken as it is: every
/// holder leaves what it guards consistent).
fn try_guard<T>(mutex: &Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

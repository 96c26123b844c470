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

/// Each named test case (a function taking a constructor of fresh accountants) run on both
/// engines: `sqlite::case` on SQLite in memory, `postgres::case` on a fresh database of the
/// process's PostgreSQL cluster (`marsh_pgtest::Cluster::shared`), so the engines cannot drift.
#[cfg(test)]
#[macro_export]
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $case() { super::$case(&|| $crate::Accountant::in_memory().unwrap()) } )*
        }
        mod postgres {
            $( #[test] fn $case() { super::$case(&$crate::testing::postgres) } )*
        }
    };
}

#[cfg(test)]
pub(crate) mod testing {
    //! Accountants on PostgreSQL for the tests that run on both engines.

    /// A fresh accountant on its own database of the process's shared PostgreSQL cluster.
    pub(crate) fn postgres() -> crate::Accountant {
        let cluster =
            marsh_pgtest::Cluster::shared().expect("a PostgreSQL cluster (`make postgres` installs the server)");
        let db = cluster.fresh_database().expect("a fresh database");
        let settings = marsh_sql::PgSettings::new(cluster.url(&db));
        crate::Accountant::open_postgres(&settings, "testnode").expect("the accountant on PostgreSQL")
    }
}

mod accounts;
mod advisories;
mod change;
mod fleet;
mod leases;
mod log;
mod moving;
mod pg_schema;
mod schema;
mod seqnums;
mod snapshot;
mod watch;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use marsh_sql::SqliteConn;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use accounts::CallerCache;
pub use accounts::{Account, AccountId, Attribute, Attributes, Caller, NewAccount, POSTGRES_CALLERS_FOR};
pub use advisories::Advisory;
pub use change::{BadChange, Change, LeaseHash, ShareRef};
pub use fleet::{FleetNode, NodeRecord};
pub use leases::{AdoptedLease, AdoptedShare, Expiring, Holder, Lease};
pub use log::Logged;
pub use moving::{Counts, Moved};
pub use schema::VERSION as SCHEMA_VERSION;
pub use snapshot::{MAX_SNAPSHOT_BYTES, Snapshot};
pub use writes::{Allocation, MutableShareWrite, MutableWrite, QuotaCheck};

/// Lease duration: 31 days, as Tahoe's clients expect.
pub const LEASE_SECONDS: u64 = 31 * 24 * 60 * 60;

/// Why the accountant failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountantError {
    /// The database failed.
    #[error("accountant database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A statement failed (either engine).
    #[error("accountant database: {0}")]
    Sql(#[from] marsh_sql::SqlError),
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
    /// What was asked is SQLite's alone (its file snapshots), and this accounting is on
    /// PostgreSQL.
    #[error("{0} is not available with accounting on PostgreSQL")]
    NotOnPostgres(&'static str),
    /// Accounts of these names exist in the target of a move with other swissnums.
    #[error(
        "these accounts exist in the target database as other accounts (another node's): {}; nothing was moved. Rename them here first (create the account under a new name and move its clients), or drop them",
        .0.join(", ")
    )]
    NameClash(Vec<String>),
    /// A mutable write would take an account past its quota ([`QuotaCheck`]).
    #[error("account `{account}` would go over its quota ({used} of {quota} bytes used; this write adds {adds})")]
    OverQuota {
        /// The account.
        account: String,
        /// Its usage.
        used: u64,
        /// Its quota.
        quota: u64,
        /// What the write adds.
        adds: u64,
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
    db: Db,
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
    /// Whether opening it made it: no file before, or no schema of this node in PostgreSQL.
    created: bool,
}

/// How long a statement waits for another connection's lock before it fails.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Accountant {
    /// Open (creating, or migrating forward) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, AccountantError> {
        let created = !path.exists();
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
        // `marsh account` and the running node share the file.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        schema::keep_before_migrating(&conn, path)?;
        // Statements on the request paths are prepared once and kept (room for all of them).
        let mut conn = SqliteConn::new(conn);
        schema::migrate(&mut conn)?;
        snapshot::remove_stale_temporaries(path);
        Ok(Accountant { created, ..Accountant::with(conn, Some(path.to_path_buf())) })
    }

    /// A database in memory, for tests.
    pub fn in_memory() -> Result<Self, AccountantError> {
        let mut conn = SqliteConn::in_memory()?;
        schema::migrate(&mut conn)?;
        Ok(Accountant::with(conn, None))
    }

    /// The accounting of node `node` in a PostgreSQL database shared by a fleet (creating, or
    /// migrating forward, the fleet's schema and this node's, each under its lock). Connections
    /// come from a bounded pool; their names are looked up in the node's namespace, then the
    /// fleet's.
    pub fn open_postgres(settings: &marsh_sql::PgSettings, node: &str) -> Result<Self, AccountantError> {
        let mut settings = settings.clone();
        settings.search_path = Some(format!("{},marsh", pg_schema::namespace(node)));
        let pool = marsh_sql::Pool::new(settings);
        let created = {
            let mut conn = pool.get()?;
            pg_migrate(&mut conn, &marsh_sql::Schema { name: "fleet", steps: pg_schema::FLEET })?;
            let steps = pg_schema::node_steps(node);
            let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
            let name = format!("node:{}", pg_schema::namespace(node));
            let schema = marsh_sql::Schema { name: &name, steps: &steps };
            let created = marsh_sql::version(&mut conn, &schema)? == 0;
            pg_migrate(&mut conn, &schema)?;
            created
        };
        Ok(Accountant {
            db: Db::Postgres(pool),
            path: None,
            callers: Mutex::default(),
            account_writes: std::sync::atomic::AtomicU64::new(0),
            watch: None,
            created,
        })
    }

    /// Whether opening it made it (a new file; on PostgreSQL, this node's first use of the
    /// database): a persistence strategy's copy then holds everything there is.
    pub fn was_created(&self) -> bool {
        self.created
    }

    /// The engine holding this accounting.
    pub fn engine(&self) -> marsh_sql::Engine {
        match self.db {
            Db::Sqlite(_) => marsh_sql::Engine::Sqlite,
            Db::Postgres(_) => marsh_sql::Engine::Postgres,
        }
    }

    /// The PostgreSQL pool's figures (none on SQLite), for `/metrics`.
    pub fn pool_stats(&self) -> Option<marsh_sql::PoolStats> {
        match &self.db {
            Db::Sqlite(_) => None,
            Db::Postgres(pool) => Some(pool.stats()),
        }
    }

    fn with(conn: SqliteConn, path: Option<PathBuf>) -> Self {
        let watch = path.as_deref().and_then(watch::ChangeWatch::new);
        Accountant {
            db: Db::Sqlite(Mutex::new(conn)),
            path,
            callers: Mutex::default(),
            account_writes: std::sync::atomic::AtomicU64::new(0),
            watch,
            created: true,
        }
    }

    /// Whether no caller holds the connection at this instant: a short call made now will not
    /// wait for another's (it may still wait for another process's lock on the file). Never on
    /// PostgreSQL: every statement there is a round trip over the network, not to be made
    /// where waiting is not allowed.
    pub fn idle(&self) -> bool {
        match &self.db {
            Db::Sqlite(conn) => try_guard(conn).is_some(),
            Db::Postgres(_) => false,
        }
    }

    /// A connection for one call: SQLite's one connection, or one from the PostgreSQL pool.
    fn conn(&self) -> Result<Guard<'_>, AccountantError> {
        Ok(match &self.db {
            // Every statement leaves the connection consistent; a panic elsewhere does not poison it.
            Db::Sqlite(conn) => Guard::Sqlite(conn.lock().unwrap_or_else(|p| p.into_inner())),
            Db::Postgres(pool) => Guard::Postgres(Box::new(pool.get()?)),
        })
    }

    /// SQLite's connection, if it is free at this instant (`None` on PostgreSQL).
    fn conn_if_idle(&self) -> Option<Guard<'_>> {
        match &self.db {
            Db::Sqlite(conn) => try_guard(conn).map(Guard::Sqlite),
            Db::Postgres(_) => None,
        }
    }
}

/// Migrate a PostgreSQL schema, a newer one refused as the accountant's own error.
fn pg_migrate(conn: &mut dyn marsh_sql::Conn, schema: &marsh_sql::Schema<'_>) -> Result<(), AccountantError> {
    match marsh_sql::migrate(conn, schema) {
        Ok(_) => Ok(()),
        Err(marsh_sql::SqlError::NewerSchema { found, supported, .. }) => {
            Err(AccountantError::NewerSchema { found, supported })
        }
        Err(e) => Err(e.into()),
    }
}

/// Where the accounting state lives.
#[derive(Debug)]
enum Db {
    /// One SQLite connection to the file under `cache/` (or in memory).
    Sqlite(Mutex<SqliteConn>),
    /// A bounded pool of connections to PostgreSQL.
    Postgres(marsh_sql::Pool),
}

/// A connection lent for one call.
pub(crate) enum Guard<'a> {
    /// SQLite's, locked.
    Sqlite(std::sync::MutexGuard<'a, SqliteConn>),
    /// One of the pool's (boxed: it is large, and SQLite's guard is the common one).
    Postgres(Box<marsh_sql::Pooled>),
}

impl Guard<'_> {
    /// SQLite's connection, for what only SQLite has (`what`, named in the error otherwise).
    pub(crate) fn sqlite(&mut self, what: &'static str) -> Result<&mut Connection, AccountantError> {
        match self {
            Guard::Sqlite(conn) => Ok(conn.raw()),
            Guard::Postgres(_) => Err(AccountantError::NotOnPostgres(what)),
        }
    }

    fn inner(&mut self) -> &mut dyn marsh_sql::Conn {
        match self {
            Guard::Sqlite(conn) => &mut **conn,
            Guard::Postgres(conn) => &mut **conn,
        }
    }
}

impl marsh_sql::Conn for Guard<'_> {
    fn engine(&self) -> marsh_sql::Engine {
        match self {
            Guard::Sqlite(_) => marsh_sql::Engine::Sqlite,
            Guard::Postgres(_) => marsh_sql::Engine::Postgres,
        }
    }

    fn execute(&mut self, sql: &str, params: &[marsh_sql::Value]) -> Result<u64, marsh_sql::SqlError> {
        self.inner().execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[marsh_sql::Value]) -> Result<Vec<marsh_sql::Row>, marsh_sql::SqlError> {
        self.inner().query(sql, params)
    }

    fn batch(&mut self, sql: &str) -> Result<(), marsh_sql::SqlError> {
        self.inner().batch(sql)
    }

    fn round_trips(&self) -> u64 {
        match self {
            Guard::Sqlite(conn) => conn.round_trips(),
            Guard::Postgres(conn) => conn.round_trips(),
        }
    }
}

/// `mutex` locked if no one holds it at this instant (a poisoned lock is taken as it is: every
/// holder leaves what it guards consistent).
impl AccountantError {
    /// Whether the database could not be reached (PostgreSQL down, or every pooled connection
    /// busy past the wait): the same call later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AccountantError::Sql(e) if e.is_unavailable())
    }
}

impl marsh_sql::Retry for AccountantError {
    fn is_retryable(&self) -> bool {
        matches!(self, AccountantError::Sql(e) if e.is_retryable())
    }
}

fn try_guard<T>(mutex: &Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

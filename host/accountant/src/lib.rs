//! The accountant: the node's medium-rate state in SQLite (WAL) under `NODE_DIR/cache/`:
//! accounts and their attributes, leases per share and account, the shares each account holds
//! (for usage and quota), write enablers of mutable shares, and clients' corruption advisories.
//!
//! Accounts: `anonymous` (id 0) serves the node's announced NURL, whose swissnum lives in the
//! node directory; every named account has its own swissnum, hence its own NURL. The server
//! resolves a request's `Authorization` header to an account on every request, so creating,
//! changing or revoking an account (from `marsh account`, another process) takes effect at once.
//!
//! Secrets: lease renew/cancel secrets and write enablers are stored as SHA-256 hashes. A named
//! account's swissnum is kept in the clear as well as hashed, because `marsh announce --account`
//! must print its NURL; the file is as private as the node's own key.
//!
//! API boundary: the server and the CLI reach accounting state only through [`Accountant`].

mod change;
mod schema;
mod snapshot;
mod watch;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use marsh_core::{ShareId, ShareKind, ShareNumber, StorageIndex};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use change::kind_code;
pub use change::{BadChange, Change, ShareRef};
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
    Db(String),
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

impl From<rusqlite::Error> for AccountantError {
    fn from(e: rusqlite::Error) -> Self {
        AccountantError::Db(e.to_string())
    }
}

/// An account's row id. The anonymous account is [`AccountId::ANONYMOUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub i64);

impl AccountId {
    /// The account of the node's announced NURL.
    pub const ANONYMOUS: AccountId = AccountId(0);
}

/// What an account may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// May upload and write mutable shares (default true).
    pub write: bool,
    /// Most bytes of shares it may hold, counting uploads in progress; `None`: no limit.
    pub quota: Option<u64>,
    /// A name for operators.
    pub nickname: Option<String>,
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes { write: true, quota: None, nickname: None }
    }
}

/// One change to an account's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// Write permission.
    Write(bool),
    /// Quota in bytes, or none.
    Quota(Option<u64>),
    /// Nickname, or none.
    Nickname(Option<String>),
}

/// An account as `marsh account show` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Row id.
    pub id: AccountId,
    /// Name.
    pub name: String,
    /// Created, seconds since the epoch (0 for anonymous).
    pub created: u64,
    /// When it was revoked, if it was.
    pub revoked: Option<u64>,
    /// Its attributes.
    pub attributes: Attributes,
    /// Bytes of shares it holds, uploads in progress included.
    pub usage: u64,
    /// Leases it holds.
    pub leases: u64,
}

/// Who made a request, as the server needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account.
    pub id: AccountId,
    /// Its name, for messages.
    pub name: String,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Its attributes.
    pub attributes: Attributes,
}

/// The account holding a share, as quota checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The account.
    pub id: AccountId,
    /// Its name, for messages.
    pub name: String,
    /// Its quota.
    pub quota: Option<u64>,
}

/// One lease on one share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// SHA-256 of the renew secret.
    pub renew_hash: [u8; 32],
    /// SHA-256 of the cancel secret.
    pub cancel_hash: [u8; 32],
    /// Seconds since the epoch.
    pub expires: u64,
    /// The account that holds it.
    pub account: AccountId,
}

/// SHA-256 of a secret, as the accountant stores renew and cancel secrets and write enablers.
pub fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// The `Authorization` header value a swissnum gives (`Tahoe-LAFS <base64(swissnum)>`).
pub fn authorization_value(swissnum: &str) -> Vec<u8> {
    format!("Tahoe-LAFS {}", data_encoding::BASE64.encode(swissnum.as_bytes())).into_bytes()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
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

/// Resolved callers and the database state they were read in.
#[derive(Debug, Default)]
struct CallerCache {
    /// What the entries were read under: SQLite's `data_version` (as last asked) and the
    /// writes through this value.
    valid_for: Option<(i64, u64)>,
    /// When SQLite's `data_version` was last asked.
    asked_at: Option<std::time::Instant>,
    /// Keyed by the SHA-256 of the `Authorization` value; `None` for the anonymous account.
    entries: std::collections::HashMap<Option<[u8; 32]>, Option<Caller>>,
}

/// Callers kept at most; past that the cache starts again (unknown swissnums are cached too).
const MAX_CACHED_CALLERS: usize = 4096;

impl Accountant {
    /// Open (creating, or migrating forward) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, AccountantError> {
        let mut conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
        // `marsh account` and the running node share the file.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
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

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every statement leaves the connection consistent; a panic elsewhere does not poison it.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- accounts ----

    /// Create a named account; returns it and its swissnum.
    pub fn create_account(
        &self,
        name: &str,
        attributes: &Attributes,
        now: u64,
    ) -> Result<(Account, String), AccountantError> {
        if !valid_name(name) || name == "anonymous" {
            return Err(if name == "anonymous" {
                AccountantError::AccountExists(name.to_owned())
            } else {
                AccountantError::BadName(name.to_owned())
            });
        }
        let mut raw = [0u8; 20];
        getrandom::getrandom(&mut raw).map_err(|e| AccountantError::Db(format!("random source: {e}")))?;
        let swissnum = data_encoding::BASE32_NOPAD.encode(&raw).to_ascii_lowercase();
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let exists: bool =
                tx.query_row("SELECT count(*) FROM accounts WHERE name = ?1", [name], |r| r.get::<_, i64>(0))? > 0;
            if exists {
                return Err(AccountantError::AccountExists(name.to_owned()));
            }
            log(&tx, &Change::Account { name: name.to_owned(), swissnum: swissnum.clone(), created: now })?;
            for change in attribute_changes(name, attributes) {
                log(&tx, &change)?;
            }
            tx.commit()?;
            self.accounts_changed();
        }
        Ok((self.account(name)?, swissnum))
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Result<Account, AccountantError> {
        let conn = self.conn();
        let row: Option<(i64, i64, Option<i64>)> = conn
            .query_row("SELECT id, created, revoked FROM accounts WHERE name = ?1", [name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let (id, created, revoked) = row.ok_or_else(|| AccountantError::NoSuchAccount(name.to_owned()))?;
        let id = AccountId(id);
        let usage: i64 =
            conn.query_row("SELECT coalesce(sum(size), 0) FROM shares WHERE account = ?1", [id.0], |r| r.get(0))?;
        let leases: i64 = conn.query_row("SELECT count(*) FROM leases WHERE account = ?1", [id.0], |r| r.get(0))?;
        Ok(Account {
            id,
            name: name.to_owned(),
            created: created.max(0) as u64,
            revoked: revoked.map(|r| r.max(0) as u64),
            attributes: read_attributes(&conn, id)?,
            usage: usage.max(0) as u64,
            leases: leases.max(0) as u64,
        })
    }

    /// Every account, anonymous first, then by name.
    pub fn accounts(&self) -> Result<Vec<Account>, AccountantError> {
        let names: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT name FROM accounts ORDER BY id != 0, name")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        names.iter().map(|n| self.account(n)).collect()
    }

    /// A named account's swissnum (for its NURL); `None` for anonymous, whose swissnum is the node's.
    pub fn swissnum(&self, name: &str) -> Result<Option<String>, AccountantError> {
        let row: Option<Option<String>> =
            self.conn().query_row("SELECT swissnum FROM accounts WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        row.ok_or_else(|| AccountantError::NoSuchAccount(name.to_owned()))
    }

    /// Change one attribute.
    pub fn set_attribute(&self, name: &str, attribute: Attribute) -> Result<(), AccountantError> {
        // Only the account's existence: an operator repairs an unreadable attribute this way.
        let exists = self.conn().query_row("SELECT 1 FROM accounts WHERE name = ?1", [name], |_| Ok(())).optional()?;
        if exists.is_none() {
            return Err(AccountantError::NoSuchAccount(name.to_owned()));
        }
        self.commit(&Change::Attribute { account: name.to_owned(), attribute })
    }

    /// Apply one change and log it, in one transaction.
    fn commit(&self, change: &Change) -> Result<(), AccountantError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        log(&tx, change)?;
        tx.commit()?;
        if change.touches_accounts() {
            self.accounts_changed();
        }
        Ok(())
    }

    /// Like [`Accountant::commit`], for a change that names an account given by id.
    fn commit_for(&self, account: AccountId, make: impl FnOnce(String) -> Change) -> Result<(), AccountantError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let name = name_of(&tx, account)?;
        let change = make(name);
        log(&tx, &change)?;
        tx.commit()?;
        if change.touches_accounts() {
            self.accounts_changed();
        }
        Ok(())
    }

    /// Revoke an account: every later request with its swissnum is refused. Its leases and
    /// shares stay until they expire.
    pub fn revoke(&self, name: &str, now: u64) -> Result<(), AccountantError> {
        self.account(name)?;
        self.commit(&Change::Revoked { account: name.to_owned(), at: now })
    }

    /// The named account whose swissnum gives `authorization` (a request's `Authorization`
    /// header value), if any. The anonymous account is recognised by the server itself.
    pub fn caller(&self, authorization: &[u8]) -> Result<Option<Caller>, AccountantError> {
        self.cached_caller(Some(hash(authorization)))
    }

    /// The anonymous account as a caller.
    pub fn anonymous(&self) -> Result<Caller, AccountantError> {
        self.cached_caller(None)?.ok_or_else(|| AccountantError::Db("the anonymous account is missing".into()))
    }

    /// A caller from the cache, or read (and cached) if accounts changed since it was filled.
    fn cached_caller(&self, key: Option<[u8; 32]>) -> Result<Option<Caller>, AccountantError> {
        let conn = self.conn();
        let writes = self.account_writes.load(std::sync::atomic::Ordering::Acquire);
        let mut cache = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        // SQLite was asked after the directory fell quiet, and it has stayed quiet since: what
        // it said still holds. Otherwise ask again.
        let quiet = self.watch.as_ref().and_then(watch::ChangeWatch::quiet_since);
        let vouched = quiet.zip(cache.asked_at).is_some_and(|(since, asked)| asked >= since);
        let version = match (vouched, cache.valid_for) {
            (true, Some((version, _))) => version,
            _ => {
                cache.asked_at = Some(std::time::Instant::now());
                conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?
            }
        };
        if cache.valid_for != Some((version, writes)) || cache.entries.len() >= MAX_CACHED_CALLERS {
            cache.entries.clear();
            cache.valid_for = Some((version, writes));
        }
        if let Some(hit) = cache.entries.get(&key) {
            return Ok(hit.clone());
        }
        let caller = read_caller(&conn, key)?;
        cache.entries.insert(key, caller.clone());
        Ok(caller)
    }

    /// Note a change to accounts or attributes made through this value.
    fn accounts_changed(&self) {
        self.account_writes.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Bytes of shares an account holds, uploads in progress included.
    pub fn usage(&self, account: AccountId) -> Result<u64, AccountantError> {
        let usage: i64 = self.conn().query_row(
            "SELECT coalesce(sum(size), 0) FROM shares WHERE account = ?1",
            [account.0],
            |r| r.get(0),
        )?;
        Ok(usage.max(0) as u64)
    }

    /// Record that `account` holds a share of `size` bytes (an allocation or a mutable write).
    /// The first account to hold a share keeps it; the size follows the share.
    pub fn record_share(&self, account: AccountId, share: &ShareId, size: u64) -> Result<(), AccountantError> {
        self.commit_for(account, |account| Change::Share { share: share.into(), account, size })
    }

    /// The account holding a share, if the share is recorded.
    pub fn holder(&self, share: &ShareId) -> Result<Option<Holder>, AccountantError> {
        let conn = self.conn();
        let row: Option<(i64, String)> = conn
            .query_row(
                "SELECT s.account, a.name FROM shares s JOIN accounts a ON a.id = s.account
                 WHERE s.kind = ?1 AND s.si = ?2 AND s.shnum = ?3",
                params![kind_code(share.kind), share.si.to_base32(), share.shnum.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            Some((id, name)) => {
                let quota = read_attributes(&conn, AccountId(id))?.quota;
                Ok(Some(Holder { id: AccountId(id), name, quota }))
            }
            None => Ok(None),
        }
    }

    // ---- leases ----

    /// Renew the lease whose renew secret matches (never shortening it), or add one for `account`.
    pub fn add_or_renew(
        &self,
        account: AccountId,
        share: &ShareId,
        renew: &[u8],
        cancel: &[u8],
        now: u64,
    ) -> Result<(), AccountantError> {
        self.commit_for(account, |account| lease_change(share, account, renew, cancel, now))
    }

    /// The leases of one share, soonest expiry first.
    pub fn leases(&self, share: &ShareId) -> Result<Vec<Lease>, AccountantError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT renew_hash, cancel_hash, expires, account FROM leases
             WHERE kind = ?1 AND si = ?2 AND shnum = ?3 ORDER BY expires",
        )?;
        let rows = stmt.query_map(params![kind_code(share.kind), share.si.to_base32(), share.shnum.0], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (renew, cancel, expires, account) = row?;
            let (Ok(renew_hash), Ok(cancel_hash)) = (renew.try_into(), cancel.try_into()) else {
                return Err(AccountantError::Db("a stored lease hash is not 32 bytes".into()));
            };
            out.push(Lease { renew_hash, cancel_hash, expires: expires.max(0) as u64, account: AccountId(account) });
        }
        Ok(out)
    }

    /// Forget everything about a share (it was deleted or its upload aborted): its leases, its
    /// holder and, for a mutable share, its write enabler. The other kind's share of the same
    /// storage index and number is untouched.
    pub fn forget_share(&self, share: &ShareId) -> Result<(), AccountantError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        log(&tx, &Change::Forget { share: share.into() })?;
        if share.kind == ShareKind::Immutable {
            writes::close_open_upload(&tx, share)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether `enabler` is the recorded write enabler of a mutable share: `None` when none is
    /// recorded.
    pub fn check_write_enabler(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        enabler: &[u8],
    ) -> Result<Option<bool>, AccountantError> {
        let stored: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT enabler_hash FROM write_enablers WHERE si = ?1 AND shnum = ?2",
                params![si.to_base32(), shnum.0],
                |r| r.get(0),
            )
            .optional()?;
        let want = hash(enabler);
        Ok(stored.map(|s| s.len() == 32 && s.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0))
    }

    /// Record the write enabler of a new mutable share.
    pub fn set_write_enabler(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        enabler: &[u8],
    ) -> Result<(), AccountantError> {
        self.commit(&Change::WriteEnabler { si: *si, shnum, hash: hash(enabler) })
    }

    /// Record `hash` as the write enabler of a mutable share if it has none (a write is being
    /// completed after its enabler row went missing); true if it was recorded.
    pub fn ensure_write_enabler_hash(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        hash: [u8; 32],
    ) -> Result<bool, AccountantError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let present = change::has_write_enabler(&tx, si, shnum)?;
        if !present {
            log(&tx, &Change::WriteEnabler { si: *si, shnum, hash })?;
        }
        tx.commit()?;
        Ok(!present)
    }

    // ---- the change log ----

    /// Logged changes after `seq`, oldest first, at most `limit`: `(seq, encoded change)`.
    pub fn changes_after(&self, seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AccountantError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT seq, body FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows =
            stmt.query_map(params![seq as i64, limit as i64], |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest logged change's number (0 when none).
    pub fn last_seq(&self) -> Result<u64, AccountantError> {
        let seq: Option<i64> = self.conn().query_row("SELECT max(seq) FROM changes", [], |r| r.get(0))?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// How far the persistence strategy has confirmed the log.
    pub fn persisted_seq(&self) -> Result<u64, AccountantError> {
        let seq: i64 = self.conn().query_row("SELECT value FROM meta WHERE key = 'persisted_seq'", [], |r| r.get(0))?;
        Ok(seq.max(0) as u64)
    }

    /// Record that changes up to `seq` are persisted (never moves back).
    pub fn mark_persisted(&self, seq: u64) -> Result<(), AccountantError> {
        self.conn().execute("UPDATE meta SET value = max(value, ?1) WHERE key = 'persisted_seq'", [seq as i64])?;
        Ok(())
    }

    /// Drop logged changes before `seq` that the strategy has confirmed, keeping the newest
    /// (its number continues the log). Returns how many went.
    pub fn prune_persisted(&self, seq: u64) -> Result<u64, AccountantError> {
        let n = self.conn().execute(
            "DELETE FROM changes WHERE seq < min(?1, (SELECT value FROM meta WHERE key = 'persisted_seq'),
                                                (SELECT max(seq) FROM changes))",
            [seq as i64],
        )?;
        Ok(n as u64)
    }

    /// Apply a change recovered from a persistence strategy under its original number, and
    /// count it as persisted. Idempotent; a record that does not parse is refused untouched.
    pub fn apply_recovered(&self, seq: u64, body: &[u8]) -> Result<(), AccountantError> {
        let change = Change::decode(body)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        change.apply(&tx)?;
        tx.execute("INSERT OR IGNORE INTO changes (seq, body) VALUES (?1, ?2)", params![seq as i64, body])?;
        tx.execute("UPDATE meta SET value = max(value, ?1) WHERE key = 'persisted_seq'", [seq as i64])?;
        tx.commit()?;
        if change.touches_accounts() {
            self.accounts_changed();
        }
        Ok(())
    }

    /// The blob a persistence strategy gets for change `seq`: the number (8 bytes, big-endian)
    /// then the encoded change, so a strategy can hand it back without keeping the number.
    pub fn strategy_blob(seq: u64, body: &[u8]) -> Vec<u8> {
        let mut out = seq.to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// Apply a blob made by [`Accountant::strategy_blob`] and handed back by a strategy.
    pub fn apply_strategy_blob(&self, blob: &[u8]) -> Result<(), AccountantError> {
        let (seq, body) = blob
            .split_first_chunk::<8>()
            .ok_or_else(|| BadChange("a change blob shorter than its sequence number".into()))?;
        self.apply_recovered(u64::from_be_bytes(*seq), body)
    }

    /// Mark a recovery as started (`true`) or finished; an interrupted recovery stays marked,
    /// so the node does not start on a half-rebuilt database.
    pub fn set_recovering(&self, on: bool) -> Result<(), AccountantError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES ('recovering', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [i64::from(on)],
        )?;
        Ok(())
    }

    /// Whether a recovery started and did not finish.
    pub fn recovering(&self) -> Result<bool, AccountantError> {
        let v: Option<i64> =
            self.conn().query_row("SELECT value FROM meta WHERE key = 'recovering'", [], |r| r.get(0)).optional()?;
        Ok(v == Some(1))
    }

    /// Record a client's corruption advisory.
    pub fn record_corruption(
        &self,
        at: u64,
        kind: &str,
        si: &StorageIndex,
        shnum: ShareNumber,
        reason: &str,
    ) -> Result<(), AccountantError> {
        self.conn().execute(
            "INSERT INTO corruption_advisories (at, kind, si, shnum, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![at as i64, kind, si.to_base32(), shnum.0, reason],
        )?;
        Ok(())
    }

    /// Corruption advisories recorded, oldest first: `(kind, si, shnum, reason)`.
    pub fn corruption_advisories(&self) -> Result<Vec<(String, String, u16, String)>, AccountantError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT kind, si, shnum, reason FROM corruption_advisories ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The change a lease added or renewed now makes.
fn lease_change(share: &ShareId, account: String, renew: &[u8], cancel: &[u8], now: u64) -> Change {
    Change::Lease {
        share: share.into(),
        renew_hash: hash(renew),
        cancel_hash: hash(cancel),
        expires: now.saturating_add(LEASE_SECONDS),
        account,
    }
}

/// Apply `change` and append it to the log, inside `tx`.
fn log(tx: &rusqlite::Transaction<'_>, change: &Change) -> Result<(), AccountantError> {
    change.apply(tx)?;
    tx.execute("INSERT INTO changes (body) VALUES (?1)", [change.encode()])?;
    Ok(())
}

fn name_of(tx: &rusqlite::Transaction<'_>, id: AccountId) -> Result<String, AccountantError> {
    tx.query_row("SELECT name FROM accounts WHERE id = ?1", [id.0], |r| r.get(0))
        .optional()?
        .ok_or_else(|| AccountantError::NoSuchAccount(format!("#{}", id.0)))
}

fn attribute_changes(account: &str, a: &Attributes) -> Vec<Change> {
    [Attribute::Write(a.write), Attribute::Quota(a.quota), Attribute::Nickname(a.nickname.clone())]
        .into_iter()
        .map(|attribute| Change::Attribute { account: account.to_owned(), attribute })
        .collect()
}

/// A caller from the database: the anonymous account (`None`), or the account whose swissnum
/// hashes to `key`.
fn read_caller(conn: &Connection, key: Option<[u8; 32]>) -> Result<Option<Caller>, AccountantError> {
    let row: Option<(i64, String, Option<i64>)> = match key {
        None => conn
            .prepare_cached("SELECT id, name, revoked FROM accounts WHERE id = 0")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?,
        Some(hash) => conn
            .prepare_cached("SELECT id, name, revoked FROM accounts WHERE swissnum_hash = ?1")?
            .query_row([hash.as_slice()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?,
    };
    let Some((id, name, revoked)) = row else { return Ok(None) };
    let id = AccountId(id);
    Ok(Some(Caller { id, name, revoked: revoked.is_some(), attributes: read_attributes(conn, id)? }))
}

fn read_attributes(conn: &Connection, id: AccountId) -> Result<Attributes, AccountantError> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM attributes WHERE account = ?1")?;
    let rows = stmt.query_map([id.0], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut a = Attributes::default();
    for row in rows {
        let (k, v) = row?;
        // Fail closed: a value that does not parse refuses the caller instead of granting a
        // default (write permission, no quota).
        match change::parse_attribute(&k, Some(&v))
            .map_err(|e| AccountantError::BadAttribute { account: id.0, reason: e.0 })?
        {
            Attribute::Write(w) => a.write = w,
            Attribute::Quota(q) => a.quota = q,
            Attribute::Nickname(n) => a.nickname = n,
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn si(n: u8) -> StorageIndex {
        StorageIndex::from_bytes([n; 16])
    }

    #[test]
    fn renewal_matches_by_renew_secret_and_never_shortens() {
        let book = Accountant::in_memory().unwrap();
        let (si, n, anon) = (si(1), ShareNumber(0), AccountId::ANONYMOUS);
        book.add_or_renew(anon, &ShareId::immutable(si, n), &[1; 32], &[2; 32], 1000).unwrap();
        book.add_or_renew(anon, &ShareId::immutable(si, n), &[1; 32], &[2; 32], 1167).unwrap();
        assert_eq!(
            book.leases(&ShareId::immutable(si, n)).unwrap().iter().map(|l| l.expires).collect::<Vec<_>>(),
            vec![1167 + LEASE_SECONDS]
        );
        book.add_or_renew(anon, &ShareId::immutable(si, n), &[1; 32], &[2; 32], 500).unwrap();
        assert_eq!(
            book.leases(&ShareId::immutable(si, n)).unwrap()[0].expires,
            1167 + LEASE_SECONDS,
            "never backdated"
        );
        book.add_or_renew(anon, &ShareId::immutable(si, n), &[3; 32], &[4; 32], 1177).unwrap();
        let leases = book.leases(&ShareId::immutable(si, n)).unwrap();
        assert_eq!(leases.len(), 2);
        assert_ne!(leases[0].renew_hash, [1; 32], "stored hashed");
        book.forget_share(&ShareId::immutable(si, n)).unwrap();
        assert!(book.leases(&ShareId::immutable(si, n)).unwrap().is_empty());
    }

    #[test]
    fn write_enablers_are_checked_by_hash() {
        let book = Accountant::in_memory().unwrap();
        assert_eq!(book.check_write_enabler(&si(1), ShareNumber(1), b"we").unwrap(), None);
        book.set_write_enabler(&si(1), ShareNumber(1), b"we").unwrap();
        assert_eq!(book.check_write_enabler(&si(1), ShareNumber(1), b"we").unwrap(), Some(true));
        assert_eq!(book.check_write_enabler(&si(1), ShareNumber(1), b"WE").unwrap(), Some(false));
    }

    #[test]
    fn accounts_resolve_by_swissnum_and_revocation_sticks() {
        let a = Accountant::in_memory().unwrap();
        let attrs = Attributes { quota: Some(1000), ..Attributes::default() };
        let (alice, swissnum) = a.create_account("alice", &attrs, 77).unwrap();
        assert_eq!((alice.name.as_str(), alice.created, alice.attributes.quota), ("alice", 77, Some(1000)));
        assert_eq!(swissnum.len(), 32);
        assert_eq!(
            authorization_value("eiu2i7p6d6mm4ihmss7ieou5hac3wn6b"),
            b"Tahoe-LAFS ZWl1Mmk3cDZkNm1tNGlobXNzN2llb3U1aGFjM3duNmI=",
            "the header the reference client sends"
        );
        assert_eq!(a.swissnum("alice").unwrap().as_deref(), Some(swissnum.as_str()));
        assert_eq!(a.swissnum("anonymous").unwrap(), None);
        assert!(matches!(a.create_account("alice", &attrs, 78), Err(AccountantError::AccountExists(_))));
        assert!(matches!(a.create_account("Bad Name", &attrs, 78), Err(AccountantError::BadName(_))));
        assert!(matches!(a.create_account("anonymous", &attrs, 78), Err(AccountantError::AccountExists(_))));

        let caller = a.caller(&authorization_value(&swissnum)).unwrap().unwrap();
        assert_eq!((caller.id, caller.revoked), (alice.id, false));
        assert_eq!(a.caller(&authorization_value("not-a-swissnum")).unwrap(), None);
        a.set_attribute("alice", Attribute::Write(false)).unwrap();
        assert!(!a.caller(&authorization_value(&swissnum)).unwrap().unwrap().attributes.write);
        a.set_attribute("alice", Attribute::Quota(None)).unwrap();
        assert_eq!(a.account("alice").unwrap().attributes.quota, None);
        a.revoke("alice", 99).unwrap();
        a.revoke("alice", 120).unwrap();
        assert_eq!(a.account("alice").unwrap().revoked, Some(99), "the first revocation time stays");
        assert!(a.caller(&authorization_value(&swissnum)).unwrap().unwrap().revoked);
        assert!(matches!(a.revoke("bob", 1), Err(AccountantError::NoSuchAccount(_))));
        let names: Vec<String> = a.accounts().unwrap().into_iter().map(|x| x.name).collect();
        assert_eq!(names, ["anonymous", "alice"]);
    }

    #[test]
    fn resolved_callers_follow_changes_made_by_another_process_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accountant.sqlite");
        let (node, operator) = (Accountant::open(&path).unwrap(), Accountant::open(&path).unwrap());
        let (_, swissnum) = operator.create_account("alice", &Attributes::default(), 1).unwrap();
        let auth = authorization_value(&swissnum);
        // Resolved (and cached) by the node, before and after a lease write of its own.
        assert!(!node.caller(&auth).unwrap().unwrap().revoked);
        node.add_or_renew(AccountId::ANONYMOUS, &ShareId::immutable(si(1), ShareNumber(0)), b"r", b"c", 5).unwrap();
        assert!(node.caller(&auth).unwrap().unwrap().attributes.write);
        assert!(!node.anonymous().unwrap().revoked);
        // `marsh account` is another connection: the node sees its changes on the next request.
        operator.set_attribute("alice", Attribute::Write(false)).unwrap();
        assert!(!node.caller(&auth).unwrap().unwrap().attributes.write);
        operator.revoke("alice", 2).unwrap();
        assert!(node.caller(&auth).unwrap().unwrap().revoked);
        let (_, bob) = operator.create_account("bob", &Attributes::default(), 3).unwrap();
        assert_eq!(node.caller(&authorization_value(&bob)).unwrap().unwrap().name, "bob");
        operator.set_attribute("anonymous", Attribute::Quota(Some(5))).unwrap();
        assert_eq!(node.anonymous().unwrap().attributes.quota, Some(5));
    }

    /// The scenarios of a stranger sharing a storage index and share number with a mutable
    /// share: nothing done to the immutable share touches the mutable one, and back.
    #[test]
    fn the_two_kinds_of_one_share_number_never_touch() {
        let a = Accountant::in_memory().unwrap();
        let (owner, _) = a.create_account("owner", &Attributes::default(), 1).unwrap();
        let (m, i) = (ShareId::mutable(si(9), ShareNumber(0)), ShareId::immutable(si(9), ShareNumber(0)));
        a.set_write_enabler(&si(9), ShareNumber(0), b"we").unwrap();
        a.record_share(owner.id, &m, 1000).unwrap();
        a.add_or_renew(owner.id, &m, b"r", b"c", 10).unwrap();
        // A stranger allocates the immutable share and aborts it.
        a.allocate(AccountId::ANONYMOUS, &i, 5, b"r2", b"c2", 10).unwrap();
        a.forget_share(&i).unwrap();
        assert_eq!(a.check_write_enabler(&si(9), ShareNumber(0), b"we").unwrap(), Some(true));
        assert_eq!(a.leases(&m).unwrap().len(), 1);
        assert_eq!(a.usage(owner.id).unwrap(), 1000);
        // Writing the immutable share's holder does not shrink the mutable share's usage.
        a.allocate(AccountId::ANONYMOUS, &i, 1, b"r2", b"c2", 10).unwrap();
        assert_eq!(a.usage(owner.id).unwrap(), 1000);
        // Forgetting the mutable share leaves the immutable one's lease.
        a.forget_share(&m).unwrap();
        assert_eq!(a.leases(&i).unwrap().len(), 1);
        assert_eq!(a.check_write_enabler(&si(9), ShareNumber(0), b"we").unwrap(), None);
    }

    #[test]
    fn an_attribute_that_does_not_parse_refuses_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accountant.sqlite");
        let a = Accountant::open(&path).unwrap();
        let (_, swissnum) = a.create_account("alice", &Attributes::default(), 1).unwrap();
        let auth = authorization_value(&swissnum);
        for (key, value) in [("quota", "lots"), ("write", "yes please")] {
            let raw = Connection::open(&path).unwrap();
            raw.execute(
                "INSERT OR REPLACE INTO attributes (account, key, value)
                 SELECT id, ?1, ?2 FROM accounts WHERE name = 'alice'",
                params![key, value],
            )
            .unwrap();
            assert!(matches!(a.caller(&auth), Err(AccountantError::BadAttribute { .. })), "{key}={value}");
            a.set_attribute("alice", if key == "quota" { Attribute::Quota(None) } else { Attribute::Write(true) })
                .unwrap();
            assert!(a.caller(&auth).unwrap().is_some());
        }
    }

    #[test]
    fn usage_counts_the_shares_an_account_holds() {
        let a = Accountant::in_memory().unwrap();
        let (alice, _) = a.create_account("alice", &Attributes::default(), 1).unwrap();
        a.record_share(alice.id, &ShareId::immutable(si(1), ShareNumber(0)), 100).unwrap();
        a.record_share(alice.id, &ShareId::immutable(si(1), ShareNumber(1)), 50).unwrap();
        a.record_share(AccountId::ANONYMOUS, &ShareId::immutable(si(1), ShareNumber(1)), 70).unwrap();
        assert_eq!(a.usage(alice.id).unwrap(), 170, "the share stays alice's; its size follows it");
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 0);
        a.forget_share(&ShareId::immutable(si(1), ShareNumber(0))).unwrap();
        assert_eq!(a.usage(alice.id).unwrap(), 70);
    }

    #[test]
    fn the_log_replays_into_an_equal_database() {
        let a = Accountant::in_memory().unwrap();
        let quota = Attributes { quota: Some(5), ..Attributes::default() };
        let (alice, swissnum) = a.create_account("alice", &quota, 3).unwrap();
        a.add_or_renew(alice.id, &ShareId::immutable(si(1), ShareNumber(0)), b"r", b"c", 100).unwrap();
        a.add_or_renew(AccountId::ANONYMOUS, &ShareId::immutable(si(2), ShareNumber(1)), b"r2", b"c2", 200).unwrap();
        a.record_share(alice.id, &ShareId::immutable(si(1), ShareNumber(0)), 42).unwrap();
        a.set_write_enabler(&si(3), ShareNumber(0), b"we").unwrap();
        a.add_or_renew(AccountId::ANONYMOUS, &ShareId::mutable(si(3), ShareNumber(0)), b"r3", b"c3", 300).unwrap();
        a.forget_share(&ShareId::mutable(si(3), ShareNumber(0))).unwrap();
        a.set_attribute("alice", Attribute::Write(false)).unwrap();
        a.revoke("alice", 9).unwrap();
        let log = a.changes_after(0, 1000).unwrap();
        assert_eq!(log.len() as u64, a.last_seq().unwrap());
        assert_eq!(a.persisted_seq().unwrap(), 0);
        a.mark_persisted(4).unwrap();
        a.mark_persisted(2).unwrap();
        assert_eq!(a.persisted_seq().unwrap(), 4, "never moves back");

        let b = Accountant::in_memory().unwrap();
        for (seq, body) in log.iter().chain(log.iter()) {
            b.apply_recovered(*seq, body).unwrap();
        }
        assert_eq!(b.accounts().unwrap(), a.accounts().unwrap(), "replayed twice, same accounts");
        assert_eq!(
            b.leases(&ShareId::immutable(si(1), ShareNumber(0))).unwrap(),
            a.leases(&ShareId::immutable(si(1), ShareNumber(0))).unwrap()
        );
        assert_eq!(
            b.leases(&ShareId::immutable(si(2), ShareNumber(1))).unwrap(),
            a.leases(&ShareId::immutable(si(2), ShareNumber(1))).unwrap()
        );
        assert!(b.leases(&ShareId::mutable(si(3), ShareNumber(0))).unwrap().is_empty());
        assert_eq!(b.swissnum("alice").unwrap(), Some(swissnum.clone()));
        assert!(b.caller(&authorization_value(&swissnum)).unwrap().unwrap().revoked);
        let last = a.last_seq().unwrap();
        assert_eq!((b.last_seq().unwrap(), b.persisted_seq().unwrap()), (last, last));
        // New changes continue the numbering.
        b.add_or_renew(AccountId::ANONYMOUS, &ShareId::immutable(si(4), ShareNumber(0)), b"r", b"c", 1).unwrap();
        assert_eq!(b.last_seq().unwrap(), last + 1);
        assert!(matches!(b.apply_recovered(99, b"junk"), Err(AccountantError::BadChange(_))));
        let c = Accountant::in_memory().unwrap();
        c.set_recovering(true).unwrap();
        for (seq, body) in &log {
            c.apply_strategy_blob(&Accountant::strategy_blob(*seq, body)).unwrap();
        }
        assert!(c.recovering().unwrap());
        c.set_recovering(false).unwrap();
        assert!(!c.recovering().unwrap());
        assert_eq!(c.accounts().unwrap(), a.accounts().unwrap());
        assert!(c.apply_strategy_blob(b"short").is_err());
    }

    #[test]
    fn the_schema_migrates_forward_and_refuses_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        drop(Accountant::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let v: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(Accountant::open(&path), Err(AccountantError::NewerSchema { .. })));
    }
}

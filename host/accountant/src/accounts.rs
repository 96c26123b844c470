//! Accounts and callers: named accounts with their swissnums and attributes, revocation, usage,
//! and resolving a request's `Authorization` value to the account it speaks for, from a cache
//! that stays valid until any connection (this one, or `marsh account` in another process)
//! changes accounts.

use marsh_sql::{Conn, Engine, Query, params, transaction};
use rusqlite::Connection;

use crate::change::{self, Change};
use crate::log::apply_and_log;
use crate::{Accountant, AccountantError, hash, watch};

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

/// A account just created, with the swissnum its NURL carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The account.
    pub account: Account,
    /// Its swissnum (also kept by the accountant, for `marsh announce --account`).
    pub swissnum: String,
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

/// Resolved callers and the database state they were read in.
#[derive(Debug, Default)]
pub(crate) struct CallerCache {
    /// What the entries were read under: SQLite's `data_version` (as last asked) and the
    /// writes through this value.
    valid_for: Option<(i64, u64)>,
    /// When SQLite's `data_version` was last asked.
    asked_at: Option<std::time::Instant>,
    /// Keyed by the SHA-256 of the `Authorization` value; `None` for the anonymous account.
    entries: std::collections::HashMap<Option<[u8; 32]>, Option<Caller>>,
}

/// How long callers read from PostgreSQL are taken as they were before the fleet's accounts
/// version is asked again: the longest a revocation on another node goes unseen here.
pub const POSTGRES_CALLERS_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Callers kept at most; past that the cache starts again (unknown swissnums are cached too).
const MAX_CACHED_CALLERS: usize = 4096;

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl Accountant {
    /// Create a named account.
    pub fn create_account(&self, name: &str, attributes: &Attributes, now: u64) -> Result<NewAccount, AccountantError> {
        if !valid_name(name) || name == "anonymous" {
            return Err(if name == "anonymous" {
                AccountantError::AccountExists(name.to_owned())
            } else {
                AccountantError::BadName(name.to_owned())
            });
        }
        let mut raw = [0u8; 20];
        getrandom::getrandom(&mut raw)?;
        let swissnum = data_encoding::BASE32_NOPAD.encode(&raw).to_ascii_lowercase();
        transaction(&mut self.conn()?, |c| {
            if c.value::<i64>("SELECT 1 FROM accounts WHERE name = ?1", &params![name])?.is_some() {
                return Err(AccountantError::AccountExists(name.to_owned()));
            }
            apply_and_log(c, &Change::Account { name: name.to_owned(), swissnum: swissnum.clone(), created: now })?;
            for change in attribute_changes(name, attributes) {
                apply_and_log(c, &change)?;
            }
            Ok(())
        })?;
        self.accounts_changed();
        Ok(NewAccount { account: self.account(name)?, swissnum })
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Result<Account, AccountantError> {
        let mut conn = self.conn()?;
        let row: Option<(i64, i64, Option<i64>)> =
            conn.row("SELECT id, created, revoked FROM accounts WHERE name = ?1", &params![name])?;
        let (id, created, revoked) = row.ok_or_else(|| AccountantError::NoSuchAccount(name.to_owned()))?;
        let id = AccountId(id);
        let (usage, leases): (i64, i64) =
            conn.row("SELECT bytes, leases FROM account_tallies WHERE account = ?1", &params![id.0])?.unwrap_or((0, 0));
        Ok(Account {
            id,
            name: name.to_owned(),
            created: created.max(0) as u64,
            revoked: revoked.map(|r| r.max(0) as u64),
            attributes: read_attributes(&mut conn, id)?,
            usage: usage.max(0) as u64,
            leases: leases.max(0) as u64,
        })
    }

    /// How many accounts there are, and the first `limit` of them (anonymous first, then by
    /// name).
    pub fn accounts_page(&self, limit: usize) -> Result<(usize, Vec<Account>), AccountantError> {
        let (count, names): (i64, Vec<String>) = {
            let mut conn = self.conn()?;
            let count = conn.value("SELECT count(*) FROM accounts", &[])?.unwrap_or(0);
            (count, conn.values("SELECT name FROM accounts ORDER BY id != 0, name LIMIT ?1", &params![limit])?)
        };
        let accounts = names.iter().map(|n| self.account(n)).collect::<Result<_, _>>()?;
        Ok((count.max(0) as usize, accounts))
    }

    /// Every account, anonymous first, then by name.
    pub fn accounts(&self) -> Result<Vec<Account>, AccountantError> {
        let names: Vec<String> = self.conn()?.values("SELECT name FROM accounts ORDER BY id != 0, name", &[])?;
        names.iter().map(|n| self.account(n)).collect()
    }

    /// A named account's swissnum (for its NURL); `None` for anonymous, whose swissnum is the node's.
    pub fn swissnum(&self, name: &str) -> Result<Option<String>, AccountantError> {
        let row: Option<Option<String>> =
            self.conn()?.value("SELECT swissnum FROM accounts WHERE name = ?1", &params![name])?;
        row.ok_or_else(|| AccountantError::NoSuchAccount(name.to_owned()))
    }

    /// Change one attribute.
    pub fn set_attribute(&self, name: &str, attribute: Attribute) -> Result<(), AccountantError> {
        // Only the account's existence: an operator repairs an unreadable attribute this way.
        let exists = self.conn()?.value::<i64>("SELECT 1 FROM accounts WHERE name = ?1", &params![name])?;
        if exists.is_none() {
            return Err(AccountantError::NoSuchAccount(name.to_owned()));
        }
        self.commit(&Change::Attribute { account: name.to_owned(), attribute })
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
        self.cached_caller(None)?.ok_or_else(|| AccountantError::Corrupt("the anonymous account is missing".into()))
    }

    /// The caller `authorization` speaks for (`None`: the anonymous account) if the cache can
    /// answer without SQLite: no connection lock, no read, no blocking. `None` when SQLite
    /// must be asked ([`Accountant::caller`], [`Accountant::anonymous`]).
    pub fn cached(&self, authorization: Option<&[u8]>) -> Option<Option<Caller>> {
        let key = authorization.map(hash);
        let writes = self.account_writes.load(std::sync::atomic::Ordering::Acquire);
        // Held while another request reads SQLite: then this one asks SQLite too, elsewhere.
        let cache = crate::try_guard(&self.callers)?;
        match cache.valid_for {
            Some((_, w)) if w == writes && self.vouched(&cache) => cache.entries.get(&key).cloned(),
            _ => None,
        }
    }

    /// The caller `authorization` (`None`: the anonymous account) spoke for when last read,
    /// however long ago: the answer there is while the accounting database cannot be reached,
    /// for requests that change nothing.
    pub fn last_known(&self, authorization: Option<&[u8]>) -> Option<Caller> {
        let cache = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        cache.entries.get(&authorization.map(hash)).cloned().flatten()
    }

    /// The caller `authorization` speaks for, if SQLite need not be waited on: from the cache
    /// ([`Accountant::cached`]), or, when the connection is free at this instant, from the
    /// cache checked against SQLite's change counter (shared memory, and the first page if
    /// another connection committed), with SQLite's busy wait off. `None` when the connection
    /// is busy, SQLite is, or an account must be read: then [`Accountant::caller`] or
    /// [`Accountant::anonymous`], off the async worker.
    pub fn quick(&self, authorization: Option<&[u8]>) -> Option<Result<Option<Caller>, AccountantError>> {
        if let Some(hit) = self.cached(authorization) {
            return Some(Ok(hit));
        }
        let mut conn = self.conn_if_idle()?;
        self.caller_from(&mut conn, authorization.map(hash), false).transpose()
    }

    /// A caller from the cache, or read (and cached) if accounts changed since it was filled.
    pub(crate) fn cached_caller(&self, key: Option<[u8; 32]>) -> Result<Option<Caller>, AccountantError> {
        // The connection first, then the cache: the order every path takes.
        let mut conn = self.conn()?;
        Ok(self.caller_from(&mut conn, key, true)?.flatten())
    }

    /// The caller under `key` from the cache, made current against SQLite's change counter;
    /// on a miss read from SQLite if `read`, else `None`.
    fn caller_from(
        &self,
        conn: &mut crate::Guard<'_>,
        key: Option<[u8; 32]>,
        read: bool,
    ) -> Result<Option<Option<Caller>>, AccountantError> {
        let writes = self.account_writes.load(std::sync::atomic::Ordering::Acquire);
        let mut cache = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        let version = match (self.vouched(&cache), cache.valid_for) {
            (true, Some((version, _))) => version,
            _ => {
                let asked_at = std::time::Instant::now();
                let version = if conn.engine() == Engine::Postgres {
                    // Moved by every node's change to accounts or attributes.
                    conn.value("SELECT version FROM marsh.accounts_version", &[])?.unwrap_or(0)
                } else if read {
                    data_version(conn.sqlite("data_version")?)?
                } else {
                    // Never SQLite's busy wait here: a lock held elsewhere sends the caller off.
                    let raw = conn.sqlite("data_version")?;
                    raw.busy_timeout(std::time::Duration::ZERO)?;
                    let version = data_version(raw);
                    raw.busy_timeout(crate::BUSY_TIMEOUT)?;
                    match version {
                        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
                            return Ok(None);
                        }
                        other => other?,
                    }
                };
                cache.asked_at = Some(asked_at);
                version
            }
        };
        if cache.valid_for != Some((version, writes)) || cache.entries.len() >= MAX_CACHED_CALLERS {
            cache.entries.clear();
            cache.valid_for = Some((version, writes));
        }
        if let Some(hit) = cache.entries.get(&key) {
            return Ok(Some(hit.clone()));
        }
        if !read {
            return Ok(None);
        }
        let caller = read_caller(conn, key)?;
        cache.entries.insert(key, caller.clone());
        Ok(Some(caller))
    }

    /// SQLite was asked after the directory fell quiet, less than [`watch::REASK`] ago, and
    /// the directory has stayed quiet since: what it said still holds. Otherwise it must be
    /// asked again. PostgreSQL's answer holds for
    /// [`POSTGRES_CALLERS_FOR`]: another node's revocation is seen within it.
    fn vouched(&self, cache: &CallerCache) -> bool {
        if self.engine() == Engine::Postgres {
            return cache.asked_at.is_some_and(|asked| asked.elapsed() < POSTGRES_CALLERS_FOR);
        }
        let quiet = self.watch.as_ref().and_then(watch::ChangeWatch::quiet_since);
        quiet.zip(cache.asked_at).is_some_and(|(since, asked)| asked >= since && asked.elapsed() < watch::REASK)
    }

    /// Note a change to accounts or attributes made through this value.
    pub(crate) fn accounts_changed(&self) {
        self.account_writes.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Bytes of shares an account holds, uploads in progress included (kept as shares change:
    /// one row read, whatever the account holds).
    pub fn usage(&self, account: AccountId) -> Result<u64, AccountantError> {
        let usage: Option<i64> =
            self.conn()?.value("SELECT bytes FROM account_tallies WHERE account = ?1", &params![account.0])?;
        Ok(usage.unwrap_or(0).max(0) as u64)
    }

    /// Shares the node holds: (immutable, mutable, storage indexes with any).
    pub fn share_counts(&self) -> Result<(u64, u64, u64), AccountantError> {
        let mut conn = self.conn()?;
        Ok((tally(&mut conn, "immutable")?, tally(&mut conn, "mutable")?, tally(&mut conn, "buckets")?))
    }

    /// Bytes of every share the node holds, whoever holds them (`storage.max-bytes`).
    pub fn stored_bytes(&self) -> Result<u64, AccountantError> {
        tally(&mut self.conn()?, "bytes")
    }
}

/// One of the node's figures kept by the schema's triggers.
fn tally(c: &mut dyn Conn, name: &str) -> Result<u64, AccountantError> {
    let value: Option<i64> = c.value("SELECT value FROM tallies WHERE name = ?1", &params![name])?;
    Ok(value.unwrap_or(0).max(0) as u64)
}

pub(crate) fn attribute_changes(account: &str, a: &Attributes) -> Vec<Change> {
    [Attribute::Write(a.write), Attribute::Quota(a.quota), Attribute::Nickname(a.nickname.clone())]
        .into_iter()
        .map(|attribute| Change::Attribute { account: account.to_owned(), attribute })
        .collect()
}

/// SQLite's change counter: it moves when another connection commits.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))
}

pub(crate) fn read_caller(c: &mut dyn Conn, key: Option<[u8; 32]>) -> Result<Option<Caller>, AccountantError> {
    let row: Option<(i64, String, Option<i64>)> = match key {
        None => c.row("SELECT id, name, revoked FROM accounts WHERE id = 0", &[])?,
        Some(hash) => c.row("SELECT id, name, revoked FROM accounts WHERE swissnum_hash = ?1", &params![hash])?,
    };
    let Some((id, name, revoked)) = row else { return Ok(None) };
    let id = AccountId(id);
    Ok(Some(Caller { id, name, revoked: revoked.is_some(), attributes: read_attributes(c, id)? }))
}

pub(crate) fn read_attributes(c: &mut dyn Conn, id: AccountId) -> Result<Attributes, AccountantError> {
    let rows: Vec<(String, String)> = c.rows("SELECT key, value FROM attributes WHERE account = ?1", &params![id.0])?;
    let mut a = Attributes::default();
    for (k, v) in rows {
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
    use crate::{AccountId, authorization_value};
    use marsh_core::{ShareId, ShareNumber, StorageIndex};

    fn si(n: u8) -> StorageIndex {
        StorageIndex::from_bytes([n; 16])
    }

    /// The figures the triggers keep, against a count of the rows.
    fn tallies_match_the_rows(a: &Accountant) {
        let mut guard = a.conn().unwrap();
        let conn: &mut dyn Conn = &mut guard;
        let scan =
            |conn: &mut dyn Conn, sql: &str, p: &[marsh_sql::Value]| -> i64 { conn.value(sql, p).unwrap().unwrap() };
        for (name, sql) in [
            ("immutable", "SELECT count(*) FROM shares WHERE kind = 0"),
            ("mutable", "SELECT count(*) FROM shares WHERE kind = 1"),
            ("bytes", "SELECT CAST(coalesce(sum(size), 0) AS BIGINT) FROM shares"),
            ("buckets", "SELECT count(DISTINCT si) FROM shares"),
        ] {
            assert_eq!(tally(conn, name).unwrap() as i64, scan(conn, sql, &[]), "{name}");
        }
        let ids: Vec<i64> = conn.values("SELECT id FROM accounts", &[]).unwrap();
        for id in ids {
            let (bytes, shares, leases): (i64, i64, i64) = conn
                .row("SELECT bytes, shares, leases FROM account_tallies WHERE account = ?1", &params![id])
                .unwrap()
                .unwrap_or_default();
            let p = params![id];
            assert_eq!(
                bytes,
                scan(conn, "SELECT CAST(coalesce(sum(size), 0) AS BIGINT) FROM shares WHERE account = ?1", &p),
                "account {id}"
            );
            assert_eq!(shares, scan(conn, "SELECT count(*) FROM shares WHERE account = ?1", &p), "account {id}");
            assert_eq!(leases, scan(conn, "SELECT count(*) FROM leases WHERE account = ?1", &p), "account {id}");
        }
        let expiry = |conn: &mut dyn Conn, sql: &str| -> Vec<(i64, String, i64, i64)> { conn.rows(sql, &[]).unwrap() };
        assert_eq!(
            expiry(conn, "SELECT kind, si, shnum, expires FROM share_expiry ORDER BY 1, 2, 3"),
            expiry(conn, "SELECT kind, si, shnum, max(expires) FROM leases GROUP BY kind, si, shnum ORDER BY 1, 2, 3")
        );
    }

    fn the_figures_follow_every_change_and_a_restored_snapshot(new: &dyn Fn() -> Accountant) {
        use crate::{MutableShareWrite, MutableWrite};
        let a = new();
        let alice = a.create_account("alice", &Attributes::default(), 1).unwrap().account.id;
        let anon = AccountId::ANONYMOUS;
        let (one, two) = (ShareId::immutable(si(1), ShareNumber(0)), ShareId::immutable(si(1), ShareNumber(1)));
        a.allocate(anon, &one, 100, b"r1", b"c", 10).unwrap();
        a.allocate(alice, &two, 50, b"r2", b"c", 20).unwrap();
        tallies_match_the_rows(&a);
        a.add_or_renew(alice, &one, b"r3", b"c", 30).unwrap();
        a.add_or_renew(anon, &one, b"r1", b"c", 40).unwrap();
        a.record_share(anon, &one, 120).unwrap();
        tallies_match_the_rows(&a);
        let shares = [
            MutableShareWrite::Written { shnum: ShareNumber(0), size: 30, created: true },
            MutableShareWrite::Written { shnum: ShareNumber(1), size: 70, created: true },
        ];
        let w = MutableWrite {
            account: alice,
            si: si(1),
            redo: b"redo",
            shares: &shares,
            enabler: b"we",
            keep_raw_enabler: false,
            renew: b"r4",
            cancel: b"c",
            now: 50,
            lease_limit: 10,
            quotas: &[],
        };
        a.begin_mutable_write(&w).unwrap();
        tallies_match_the_rows(&a);
        assert_eq!(a.share_counts().unwrap(), (2, 2, 1));
        let removed = [MutableShareWrite::Removed { shnum: ShareNumber(1) }];
        a.begin_mutable_write(&MutableWrite { shares: &removed, ..w }).unwrap();
        a.forget_share(&two).unwrap();
        tallies_match_the_rows(&a);
        assert_eq!((a.usage(anon).unwrap(), a.usage(alice).unwrap(), a.stored_bytes().unwrap()), (120, 30, 150));
        assert_eq!(a.account("alice").unwrap().leases, 2);
        let expiring = a.shares_expiring_before(u64::MAX, None, 10).unwrap();
        let listed: Vec<(ShareId, u64)> = expiring.iter().map(|e| (e.share, e.expires)).collect();
        let slot = ShareId::mutable(si(1), ShareNumber(0));
        assert_eq!(listed, [(one, 40 + crate::LEASE_SECONDS), (slot, 50 + crate::LEASE_SECONDS)]);
        // Paged from just after the last one listed, and cut at `before`.
        assert_eq!(a.shares_expiring_before(u64::MAX, Some(&expiring[0]), 10).unwrap(), expiring[1..]);
        assert_eq!(a.shares_expiring_before(50 + crate::LEASE_SECONDS, None, 10).unwrap(), expiring[..1]);
        if a.engine() == Engine::Postgres {
            assert!(matches!(a.snapshot(), Err(AccountantError::NotOnPostgres(_))), "snapshots are SQLite's");
            return;
        }
        // A snapshot restored into another database brings the same figures with its rows.
        let b = new();
        b.allocate(anon, &ShareId::immutable(si(9), ShareNumber(0)), 999, b"x", b"c", 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = Accountant::open(&dir.path().join("a.sqlite")).unwrap();
        let restored_from = a.snapshot().unwrap();
        file.restore_snapshot(&restored_from.bytes).unwrap();
        tallies_match_the_rows(&file);
        assert_eq!(file.share_counts().unwrap(), a.share_counts().unwrap());
        b.restore_snapshot(&restored_from.bytes).unwrap();
        tallies_match_the_rows(&b);
        assert_eq!(b.stored_bytes().unwrap(), 150, "the rows it held before are gone, and their figures");
    }

    fn accounts_resolve_by_swissnum_and_revocation_sticks(new: &dyn Fn() -> Accountant) {
        let a = new();
        let attrs = Attributes { quota: Some(1000), ..Attributes::default() };
        let NewAccount { account: alice, swissnum } = a.create_account("alice", &attrs, 77).unwrap();
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

    /// One database opened twice, as the running node and as `marsh account` in another
    /// process, with the account `alice` made through the second; her `Authorization` value.
    fn node_and_operator_with_alice() -> (tempfile::TempDir, Accountant, Accountant, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accountant.sqlite");
        let (node, operator) = (Accountant::open(&path).unwrap(), Accountant::open(&path).unwrap());
        let NewAccount { swissnum, .. } = operator.create_account("alice", &Attributes::default(), 1).unwrap();
        (dir, node, operator, authorization_value(&swissnum))
    }

    /// Resolve `auth` on `node`, let the database's directory fall quiet, and resolve it again:
    /// from then on the watch vouches for the cached caller.
    fn vouched_for(node: &Accountant, auth: &[u8]) {
        node.caller(auth).unwrap();
        std::thread::sleep(watch::QUIET + std::time::Duration::from_millis(200));
        node.caller(auth).unwrap();
    }

    #[test]
    fn resolved_callers_follow_changes_made_by_another_process_at_once() {
        let (_dir, node, operator, auth) = node_and_operator_with_alice();
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
        let NewAccount { swissnum: bob, .. } = operator.create_account("bob", &Attributes::default(), 3).unwrap();
        assert_eq!(node.caller(&authorization_value(&bob)).unwrap().unwrap().name, "bob");
        operator.set_attribute("anonymous", Attribute::Quota(Some(5))).unwrap();
        assert_eq!(node.anonymous().unwrap().attributes.quota, Some(5));
    }

    #[test]
    fn a_vouched_cache_answers_without_the_connection_and_stops_at_a_change() {
        let (_dir, node, operator, auth) = node_and_operator_with_alice();
        assert_eq!(node.cached(Some(&auth)), None, "nothing cached yet");
        // Once the directory has been quiet, SQLite is asked once more, and from then on the
        // cache alone answers.
        vouched_for(&node, &auth);
        {
            // With the connection held elsewhere (a long write), a cache hit still answers.
            let _busy = node.conn().unwrap();
            let hit = node.cached(Some(&auth)).expect("answered from the cache");
            assert_eq!(hit.map(|c| c.name), Some("alice".to_owned()));
            assert_eq!(node.cached(Some(b"never seen")), None, "a miss goes to SQLite");
        }
        operator.revoke("alice", 2).unwrap();
        assert_eq!(node.cached(Some(&auth)), None, "a change elsewhere sends the next lookup to SQLite");
        assert!(node.caller(&auth).unwrap().unwrap().revoked);
    }

    #[test]
    fn a_vouched_cache_is_asked_again_after_a_second_even_when_quiet() {
        let (_dir, node, _operator, auth) = node_and_operator_with_alice();
        vouched_for(&node, &auth);
        assert!(node.cached(Some(&auth)).is_some(), "vouched for");
        // A commit whose WAL write came long before it was visible raised its only event
        // then: the quiet directory does not vouch for it for longer than REASK.
        std::thread::sleep(watch::REASK + std::time::Duration::from_millis(100));
        assert_eq!(node.cached(Some(&auth)), None, "SQLite is asked again");
        node.caller(&auth).unwrap();
        assert!(node.cached(Some(&auth)).is_some(), "and vouched for again");
    }

    #[test]
    fn a_quick_answer_checks_the_change_counter_in_place_and_never_waits_or_reads() {
        let (_dir, node, operator, auth) = node_and_operator_with_alice();
        assert!(node.quick(Some(&auth)).is_none(), "not cached: an account must be read");
        node.caller(&auth).unwrap();
        // Not vouched for by a quiet directory (just written): the counter is asked in place.
        assert!(node.cached(Some(&auth)).is_none());
        let name = |q: Option<Result<Option<Caller>, AccountantError>>| q.map(|r| r.unwrap().map(|c| c.name));
        assert_eq!(name(node.quick(Some(&auth))), Some(Some("alice".to_owned())));
        assert_eq!(name(node.quick(Some(b"never seen"))), None, "a miss is read elsewhere");
        {
            let _busy = node.conn().unwrap();
            assert!(node.quick(Some(&auth)).is_none(), "the connection is busy: never waited on here");
        }
        operator.revoke("alice", 2).unwrap();
        assert!(node.quick(Some(&auth)).is_none(), "a change elsewhere: the account is read again");
        assert!(node.caller(&auth).unwrap().unwrap().revoked);
        assert!(node.quick(Some(&auth)).unwrap().unwrap().unwrap().revoked);
    }

    fn an_attribute_that_does_not_parse_refuses_the_caller(new: &dyn Fn() -> Accountant) {
        let a = new();
        let NewAccount { account: _, swissnum } = a.create_account("alice", &Attributes::default(), 1).unwrap();
        let auth = authorization_value(&swissnum);
        for (key, value) in [("quota", "lots"), ("write", "yes please")] {
            // Written behind the accountant's back, as a hand edit would be.
            a.conn()
                .unwrap()
                .execute(
                    "INSERT INTO attributes (account, key, value) SELECT id, ?1, ?2 FROM accounts WHERE name = 'alice'
                     ON CONFLICT (account, key) DO UPDATE SET value = excluded.value",
                    &marsh_sql::params![key, value],
                )
                .unwrap();
            // Another writer's change is seen at once on SQLite, within POSTGRES_CALLERS_FOR on
            // PostgreSQL; told here, so both read it now.
            a.accounts_changed();
            assert!(matches!(a.caller(&auth), Err(AccountantError::BadAttribute { .. })), "{key}={value}");
            a.set_attribute("alice", if key == "quota" { Attribute::Quota(None) } else { Attribute::Write(true) })
                .unwrap();
            assert!(a.caller(&auth).unwrap().is_some());
        }
    }

    fn usage_counts_the_shares_an_account_holds(new: &dyn Fn() -> Accountant) {
        let a = new();
        let NewAccount { account: alice, .. } = a.create_account("alice", &Attributes::default(), 1).unwrap();
        a.record_share(alice.id, &ShareId::immutable(si(1), ShareNumber(0)), 100).unwrap();
        a.record_share(alice.id, &ShareId::immutable(si(1), ShareNumber(1)), 50).unwrap();
        a.record_share(AccountId::ANONYMOUS, &ShareId::immutable(si(1), ShareNumber(1)), 70).unwrap();
        assert_eq!(a.usage(alice.id).unwrap(), 170, "the share stays alice's; its size follows it");
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 0);
        assert_eq!(a.stored_bytes().unwrap(), 170);
        a.record_share(alice.id, &ShareId::mutable(si(2), ShareNumber(0)), 10).unwrap();
        assert_eq!(a.share_counts().unwrap(), (2, 1, 2));
        assert_eq!(a.stored_bytes().unwrap(), 180);
        a.forget_share(&ShareId::mutable(si(2), ShareNumber(0))).unwrap();
        a.forget_share(&ShareId::immutable(si(1), ShareNumber(0))).unwrap();
        assert_eq!(a.usage(alice.id).unwrap(), 70);
        assert_eq!(a.stored_bytes().unwrap(), 70);
    }

    crate::on_both_engines!(
        an_attribute_that_does_not_parse_refuses_the_caller,
        the_figures_follow_every_change_and_a_restored_snapshot,
        accounts_resolve_by_swissnum_and_revocation_sticks,
        usage_counts_the_shares_an_account_holds,
    );
}

//! The accountant's SQLite schema and its forward migrations. The version lives in SQLite's
//! `user_version`; each migration runs in its own transaction and moves the version by one, so
//! an interrupted upgrade resumes where it stopped. A database from a newer marsh is refused.

use rusqlite::Connection;

use crate::AccountantError;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, attributes, per-account leases and share usage, write enablers, advisories.
    "
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        swissnum TEXT UNIQUE,
        swissnum_hash BLOB UNIQUE,
        created INTEGER NOT NULL,
        revoked INTEGER);
    INSERT INTO accounts (id, name, created) VALUES (0, 'anonymous', 0);
    CREATE TABLE attributes (
        account INTEGER NOT NULL REFERENCES accounts(id),
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (account, key));
    CREATE TABLE leases (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, renew_hash BLOB NOT NULL,
        cancel_hash BLOB NOT NULL, expires INTEGER NOT NULL, account INTEGER NOT NULL,
        PRIMARY KEY (si, shnum, renew_hash));
    CREATE INDEX leases_by_account ON leases (account);
    CREATE TABLE shares (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, account INTEGER NOT NULL, size INTEGER NOT NULL,
        PRIMARY KEY (si, shnum));
    CREATE INDEX shares_by_account ON shares (account);
    CREATE TABLE write_enablers (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, enabler_hash BLOB NOT NULL,
        PRIMARY KEY (si, shnum));
    CREATE TABLE corruption_advisories (
        at INTEGER NOT NULL, kind TEXT NOT NULL, si TEXT NOT NULL, shnum INTEGER NOT NULL, reason TEXT NOT NULL);
    ",
    // 2: the change log persistence strategies carry off the machine, and how far they got.
    "
    CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('persisted_seq', 0);
    ",
];

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// Bring `conn` to [`VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), AccountantError> {
    loop {
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == VERSION {
            return Ok(());
        }
        if version > VERSION {
            return Err(AccountantError::NewerSchema { found: version, supported: VERSION });
        }
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

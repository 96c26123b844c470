//! The lease book: leases per share and the write enablers of mutable shares, in SQLite under
//! the node's `cache/` directory.
//!
//! This is the one module the accountant replaces: it owns every lease and write-enabler
//! fact the server keeps. Secrets are stored as SHA-256 hashes, never in the clear. Losing
//! this file loses leases and write enablers, never shares; a mutable share whose write
//! enabler is unknown refuses writes (401) rather than accepting any enabler.

use std::path::Path;
use std::sync::Mutex;

use marsh_core::{ShareNumber, StorageIndex};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// Lease duration: 31 days, as Tahoe's clients expect.
pub const LEASE_SECONDS: u64 = 31 * 24 * 60 * 60;

/// Why the lease book failed.
#[derive(Debug, thiserror::Error)]
#[error("lease database: {0}")]
pub struct LeaseError(String);

impl From<rusqlite::Error> for LeaseError {
    fn from(e: rusqlite::Error) -> Self {
        LeaseError(e.to_string())
    }
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
}

/// Leases and write enablers.
#[derive(Debug)]
pub struct LeaseBook {
    conn: Mutex<Connection>,
}

fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS leases (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, renew_hash BLOB NOT NULL,
        cancel_hash BLOB NOT NULL, expires INTEGER NOT NULL,
        PRIMARY KEY (si, shnum, renew_hash));
    CREATE TABLE IF NOT EXISTS write_enablers (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, enabler_hash BLOB NOT NULL,
        PRIMARY KEY (si, shnum));
    CREATE TABLE IF NOT EXISTS corruption_advisories (
        at INTEGER NOT NULL, kind TEXT NOT NULL, si TEXT NOT NULL, shnum INTEGER NOT NULL, reason TEXT NOT NULL);
";

impl LeaseBook {
    /// Open (creating) the book at `path`.
    pub fn open(path: &Path) -> Result<Self, LeaseError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(LeaseBook { conn: Mutex::new(conn) })
    }

    /// A book in memory, for tests.
    pub fn in_memory() -> Result<Self, LeaseError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(LeaseBook { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renew the lease whose renew secret matches (never shortening it), or add one.
    pub fn add_or_renew(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        renew: &[u8],
        cancel: &[u8],
        now: u64,
    ) -> Result<(), LeaseError> {
        let expires = now.saturating_add(LEASE_SECONDS) as i64;
        self.conn().execute(
            "INSERT INTO leases (si, shnum, renew_hash, cancel_hash, expires) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (si, shnum, renew_hash) DO UPDATE SET expires = max(expires, excluded.expires)",
            params![si.to_base32(), shnum.0, hash(renew).as_slice(), hash(cancel).as_slice(), expires],
        )?;
        Ok(())
    }

    /// The leases of one share.
    pub fn leases(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Vec<Lease>, LeaseError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT renew_hash, cancel_hash, expires FROM leases WHERE si = ?1 AND shnum = ?2 ORDER BY expires",
        )?;
        let rows = stmt.query_map(params![si.to_base32(), shnum.0], |r| {
            let renew: Vec<u8> = r.get(0)?;
            let cancel: Vec<u8> = r.get(1)?;
            let expires: i64 = r.get(2)?;
            Ok((renew, cancel, expires))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (renew, cancel, expires) = row?;
            let (Ok(renew_hash), Ok(cancel_hash)) = (renew.try_into(), cancel.try_into()) else {
                return Err(LeaseError("a stored lease hash is not 32 bytes".into()));
            };
            out.push(Lease { renew_hash, cancel_hash, expires: expires.max(0) as u64 });
        }
        Ok(out)
    }

    /// Forget everything about a share (it was deleted or its upload aborted).
    pub fn forget_share(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), LeaseError> {
        let conn = self.conn();
        conn.execute("DELETE FROM leases WHERE si = ?1 AND shnum = ?2", params![si.to_base32(), shnum.0])?;
        conn.execute("DELETE FROM write_enablers WHERE si = ?1 AND shnum = ?2", params![si.to_base32(), shnum.0])?;
        Ok(())
    }

    /// Whether `enabler` is the recorded write enabler of a mutable share: `None` when none is
    /// recorded.
    pub fn check_write_enabler(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        enabler: &[u8],
    ) -> Result<Option<bool>, LeaseError> {
        let stored: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT enabler_hash FROM write_enablers WHERE si = ?1 AND shnum = ?2",
                params![si.to_base32(), shnum.0],
                |r| r.get(0),
            )
            .optional()?;
        Ok(stored.map(|s| crate::auth::same(&s, &hash(enabler))))
    }

    /// Record the write enabler of a new mutable share.
    pub fn set_write_enabler(&self, si: &StorageIndex, shnum: ShareNumber, enabler: &[u8]) -> Result<(), LeaseError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO write_enablers (si, shnum, enabler_hash) VALUES (?1, ?2, ?3)",
            params![si.to_base32(), shnum.0, hash(enabler).as_slice()],
        )?;
        Ok(())
    }

    /// Record a client's corruption advisory.
    pub fn record_corruption(
        &self,
        at: u64,
        kind: &str,
        si: &StorageIndex,
        shnum: ShareNumber,
        reason: &str,
    ) -> Result<(), LeaseError> {
        self.conn().execute(
            "INSERT INTO corruption_advisories (at, kind, si, shnum, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![at as i64, kind, si.to_base32(), shnum.0, reason],
        )?;
        Ok(())
    }

    /// Corruption advisories recorded, oldest first: `(kind, si, shnum, reason)`.
    pub fn corruption_advisories(&self) -> Result<Vec<(String, String, u16, String)>, LeaseError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT kind, si, shnum, reason FROM corruption_advisories ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_matches_by_renew_secret_and_never_shortens() {
        let book = LeaseBook::in_memory().unwrap();
        let si = StorageIndex::from_bytes([1; 16]);
        let n = ShareNumber(0);
        book.add_or_renew(&si, n, &[1; 32], &[2; 32], 1000).unwrap();
        book.add_or_renew(&si, n, &[1; 32], &[2; 32], 1167).unwrap();
        assert_eq!(
            book.leases(&si, n).unwrap().iter().map(|l| l.expires).collect::<Vec<_>>(),
            vec![1167 + LEASE_SECONDS]
        );
        book.add_or_renew(&si, n, &[1; 32], &[2; 32], 500).unwrap();
        assert_eq!(book.leases(&si, n).unwrap()[0].expires, 1167 + LEASE_SECONDS, "never backdated");
        book.add_or_renew(&si, n, &[3; 32], &[4; 32], 1177).unwrap();
        let leases = book.leases(&si, n).unwrap();
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[1].expires, 1177 + LEASE_SECONDS);
        assert_ne!(leases[0].renew_hash, [1; 32], "stored hashed");
        book.forget_share(&si, n).unwrap();
        assert!(book.leases(&si, n).unwrap().is_empty());
    }

    #[test]
    fn write_enablers_are_checked_by_hash() {
        let book = LeaseBook::in_memory().unwrap();
        let si = StorageIndex::from_bytes([1; 16]);
        assert_eq!(book.check_write_enabler(&si, ShareNumber(1), b"we").unwrap(), None);
        book.set_write_enabler(&si, ShareNumber(1), b"we").unwrap();
        assert_eq!(book.check_write_enabler(&si, ShareNumber(1), b"we").unwrap(), Some(true));
        assert_eq!(book.check_write_enabler(&si, ShareNumber(1), b"WE").unwrap(), Some(false));
    }
}

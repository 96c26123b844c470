//! Clients' corruption advisories: kept for the operator, not part of the change log (they
//! are not state a recovery must restore).

use marsh_core::{ShareId, ShareKind, ShareNumber};
use marsh_sql::{Conn, Engine, Query, params};

use crate::{Accountant, AccountantError};

/// One corruption advisory a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    /// When it was received, seconds since the epoch.
    pub at: u64,
    /// The share it is about.
    pub share: ShareId,
    /// The client's reason, as sent.
    pub reason: String,
}

impl Accountant {
    /// Record a client's corruption advisory about `share`, unless `per_share` are kept for it or
    /// `total` in all already; whether it was recorded.
    pub fn record_corruption(
        &self,
        at: u64,
        share: &ShareId,
        reason: &str,
        per_share: u64,
        total: u64,
    ) -> Result<bool, AccountantError> {
        let mut conn = self.conn()?;
        let (kind, si) = (share.kind.as_str(), share.si.to_base32());
        let all: i64 = conn.value("SELECT count(*) FROM corruption_advisories", &[])?.unwrap_or(0);
        let this: i64 = conn
            .value(
                "SELECT count(*) FROM corruption_advisories WHERE kind = ?1 AND si = ?2 AND shnum = ?3",
                &params![kind, &si, share.shnum.0],
            )?
            .unwrap_or(0);
        if all as u64 >= total || this as u64 >= per_share {
            return Ok(false);
        }
        conn.execute(
            "INSERT INTO corruption_advisories (at, kind, si, shnum, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            &params![at, kind, si, share.shnum.0, reason],
        )?;
        Ok(true)
    }

    /// Forget advisories: every one, those about storage index `si`, or about share `shnum` of
    /// it (either kind); how many went.
    pub fn clear_corruption_advisories(&self, si: Option<&str>, shnum: Option<u16>) -> Result<usize, AccountantError> {
        let mut conn = self.conn()?;
        let n = match (si, shnum) {
            (None, _) => conn.execute("DELETE FROM corruption_advisories", &[])?,
            (Some(si), None) => conn.execute("DELETE FROM corruption_advisories WHERE si = ?1", &params![si])?,
            (Some(si), Some(n)) => {
                conn.execute("DELETE FROM corruption_advisories WHERE si = ?1 AND shnum = ?2", &params![si, n])?
            }
        };
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Corruption advisories recorded, oldest first.
    pub fn corruption_advisories(&self) -> Result<Vec<Advisory>, AccountantError> {
        read_advisories(&mut self.conn()?, false, None)
    }

    /// How many advisories are kept (at most `storage.advisories`), and the newest `recent` of
    /// them, newest first.
    pub fn advisories_summary(&self, recent: usize) -> Result<(u64, Vec<Advisory>), AccountantError> {
        let mut conn = self.conn()?;
        let count: i64 = conn.value("SELECT count(*) FROM corruption_advisories", &[])?.unwrap_or(0);
        let newest = read_advisories(&mut conn, true, Some(recent))?;
        Ok((count.max(0) as u64, newest))
    }
}

/// The advisories in the order they were recorded (`newest_first`: the other way), at most
/// `limit` (SQLite's row id, PostgreSQL's identity column).
fn read_advisories(
    c: &mut dyn Conn,
    newest_first: bool,
    limit: Option<usize>,
) -> Result<Vec<Advisory>, AccountantError> {
    let order = match c.engine() {
        Engine::Sqlite => "rowid",
        Engine::Postgres => "id",
    };
    let direction = if newest_first { "DESC" } else { "" };
    let rows: Vec<(i64, String, String, u16, String)> = c.rows(
        &format!("SELECT at, kind, si, shnum, reason FROM corruption_advisories ORDER BY {order} {direction} LIMIT ?1"),
        &params![limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX))],
    )?;
    let mut out = Vec::new();
    for (at, kind, si, shnum, reason) in rows {
        let kind = match kind.as_str() {
            "immutable" => ShareKind::Immutable,
            "mutable" => ShareKind::Mutable,
            other => return Err(AccountantError::Corrupt(format!("an advisory's share kind is {other:?}"))),
        };
        let si = si.parse().map_err(|e| AccountantError::Corrupt(format!("an advisory's storage index: {e}")))?;
        out.push(Advisory {
            at: u64::try_from(at).unwrap_or(0),
            share: ShareId { kind, si, shnum: ShareNumber(shnum) },
            reason,
        });
    }
    Ok(out)
}

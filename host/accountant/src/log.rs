//! The change log: every mutation of accounts, attributes, leases, holders and enablers is a
//! [`Change`] applied and appended in one transaction; what the persistence strategy has
//! confirmed (`persisted_seq`) and pruning behind it; replaying recovered changes; and the
//! mark of a recovery in progress.

use marsh_sql::{Conn, Query, params, transaction};

use crate::change::{BadChange, Change};
use crate::{AccountId, Accountant, AccountantError};

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Its sequence number.
    pub seq: u64,
    /// The encoded [`Change`].
    pub body: Vec<u8>,
}

impl Logged {
    /// The blob a persistence strategy gets for it ([`Accountant::strategy_blob`]).
    pub fn strategy_blob(&self) -> Vec<u8> {
        Accountant::strategy_blob(self.seq, &self.body)
    }
}

impl Accountant {
    /// Apply one change and log it, in one transaction.
    pub(crate) fn commit(&self, change: &Change) -> Result<(), AccountantError> {
        transaction(&mut self.conn()?, |c| apply_and_log(c, change))?;
        if change.touches_accounts() {
            self.accounts_changed();
        }
        Ok(())
    }

    /// Like [`Accountant::commit`], for a change that names an account given by id.
    pub(crate) fn commit_for(
        &self,
        account: AccountId,
        make: impl Fn(String) -> Change,
    ) -> Result<(), AccountantError> {
        let change = transaction(&mut self.conn()?, |c| {
            let change = make(name_of(c, account)?);
            apply_and_log(c, &change)?;
            Ok::<_, AccountantError>(change)
        })?;
        if change.touches_accounts() {
            self.accounts_changed();
        }
        Ok(())
    }

    /// Logged changes after `seq`, oldest first, at most `limit`.
    pub fn changes_after(&self, seq: u64, limit: usize) -> Result<Vec<Logged>, AccountantError> {
        let rows: Vec<(u64, Vec<u8>)> = self
            .conn()?
            .rows("SELECT seq, body FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2", &params![seq, limit])?;
        Ok(rows.into_iter().map(|(seq, body)| Logged { seq, body }).collect())
    }

    /// The newest logged change's number (0 when none).
    pub fn last_seq(&self) -> Result<u64, AccountantError> {
        let seq: Option<Option<i64>> = self.conn()?.value("SELECT max(seq) FROM changes", &[])?;
        Ok(seq.flatten().unwrap_or(0).max(0) as u64)
    }

    /// How far the persistence strategy has confirmed the log.
    pub fn persisted_seq(&self) -> Result<u64, AccountantError> {
        let seq: Option<i64> = self.conn()?.value("SELECT value FROM meta WHERE key = 'persisted_seq'", &[])?;
        Ok(seq.ok_or(marsh_sql::SqlError::NoRow)?.max(0) as u64)
    }

    /// Changes logged and not yet confirmed by the persistence strategy.
    pub fn unpersisted(&self) -> Result<u64, AccountantError> {
        Ok(self.last_seq()?.saturating_sub(self.persisted_seq()?))
    }

    /// Record that changes up to `seq` are persisted (never moves back).
    pub fn mark_persisted(&self, seq: u64) -> Result<(), AccountantError> {
        self.conn()?.execute(MARK_PERSISTED, &params![seq])?;
        Ok(())
    }

    /// Drop logged changes before `seq` that the strategy has confirmed, keeping the newest
    /// (its number continues the log). Returns how many went.
    pub fn prune_persisted(&self, seq: u64) -> Result<u64, AccountantError> {
        let n = self.conn()?.execute(
            "DELETE FROM changes WHERE seq < ?1 AND seq < (SELECT value FROM meta WHERE key = 'persisted_seq')
                                   AND seq < (SELECT max(seq) FROM changes)",
            &params![seq],
        )?;
        Ok(n)
    }

    /// Apply a change recovered from a persistence strategy under its original number, and
    /// count it as persisted. Idempotent; a record that does not parse is refused untouched.
    pub fn apply_recovered(&self, seq: u64, body: &[u8]) -> Result<(), AccountantError> {
        let change = Change::decode(body)?;
        transaction(&mut self.conn()?, |c| {
            change.apply(c)?;
            c.execute("INSERT INTO changes (seq, body) VALUES (?1, ?2) ON CONFLICT DO NOTHING", &params![seq, body])?;
            if c.engine() == marsh_sql::Engine::Postgres {
                // An identity column does not follow numbers given to it; SQLite's does.
                c.query(
                    "SELECT setval(pg_get_serial_sequence('changes', 'seq'), (SELECT max(seq) FROM changes))",
                    &[],
                )?;
            }
            c.execute(MARK_PERSISTED, &params![seq])?;
            Ok::<_, marsh_sql::SqlError>(())
        })?;
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
        self.conn()?.execute(
            "INSERT INTO meta (key, value) VALUES ('recovering', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &params![on],
        )?;
        Ok(())
    }

    /// Whether a recovery started and did not finish.
    pub fn recovering(&self) -> Result<bool, AccountantError> {
        let v: Option<i64> = self.conn()?.value("SELECT value FROM meta WHERE key = 'recovering'", &[])?;
        Ok(v == Some(1))
    }
}

/// Move `persisted_seq` up to `?1` (never back).
const MARK_PERSISTED: &str =
    "UPDATE meta SET value = CASE WHEN ?1 > value THEN ?1 ELSE value END WHERE key = 'persisted_seq'";

/// Apply `change` and append it to the log, inside the caller's transaction on `c`.
pub(crate) fn apply_and_log(c: &mut dyn Conn, change: &Change) -> Result<(), AccountantError> {
    change.apply(c)?;
    c.execute("INSERT INTO changes (body) VALUES (?1)", &params![change.encode()])?;
    Ok(())
}

pub(crate) fn name_of(c: &mut dyn Conn, id: AccountId) -> Result<String, AccountantError> {
    c.value("SELECT name FROM accounts WHERE id = ?1", &params![id.0])?
        .ok_or_else(|| AccountantError::NoSuchAccount(format!("#{}", id.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Attributes, NewAccount, authorization_value};
    use marsh_core::{ShareId, ShareNumber, StorageIndex};

    fn si(n: u8) -> StorageIndex {
        StorageIndex::from_bytes([n; 16])
    }

    fn the_log_replays_into_an_equal_database(new: &dyn Fn() -> Accountant) {
        let a = new();
        let quota = Attributes { quota: Some(5), ..Attributes::default() };
        let NewAccount { account: alice, swissnum } = a.create_account("alice", &quota, 3).unwrap();
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

        let b = new();
        for entry in log.iter().chain(log.iter()) {
            b.apply_recovered(entry.seq, &entry.body).unwrap();
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
        let c = new();
        c.set_recovering(true).unwrap();
        for entry in &log {
            c.apply_strategy_blob(&entry.strategy_blob()).unwrap();
        }
        assert!(c.recovering().unwrap());
        c.set_recovering(false).unwrap();
        assert!(!c.recovering().unwrap());
        assert_eq!(c.accounts().unwrap(), a.accounts().unwrap());
        assert!(c.apply_strategy_blob(b"short").is_err());
    }

    crate::on_both_engines!(the_log_replays_into_an_equal_database,);
}

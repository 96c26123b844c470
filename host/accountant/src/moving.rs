//! Moving a node's accounting from one engine to the other (`marsh accounting move`): every
//! account (with its swissnum, attributes and revocation), share holder, lease and write enabler
//! applied to the target as the changes they are, the node-local tables copied as rows, and the
//! change log carried over as it stands (its numbering and what the persistence strategy has
//! confirmed), so the strategy's copy stays the copy of this node's accounting.
//!
//! The state is applied, not logged again: the target's log continues the source's, and a
//! strategy never sees a change twice under two numbers. Everything is an upsert, so a move that
//! was interrupted is run again and finishes. Accounts whose names the target already holds with
//! another swissnum (another node's, on a fleet's database) are clashes: reported before
//! anything is written, never merged. Moving into a fleet's database leaves the fleet's own
//! `anonymous` attributes as they are (they are every node's); moving back copies them.

use marsh_core::{ShareKind, ShareNumber, StorageIndex};
use marsh_sql::{Engine, Query, params, transaction};

use crate::accounts::{attribute_changes, read_attributes};
use crate::change::{Change, LeaseHash, ShareRef};
use crate::{AccountId, Accountant, AccountantError};

/// Rows read and applied per transaction.
const PAGE: usize = 1000;

/// What a node's accounting holds, counted the same way on either engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Named accounts.
    pub accounts: u64,
    /// Shares held (this node's).
    pub shares: u64,
    /// Lease records (this node's).
    pub leases: u64,
    /// Write enablers (this node's).
    pub enablers: u64,
}

/// What a move applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// What was read and applied.
    pub counts: Counts,
    /// Change log entries carried over.
    pub changes: u64,
}

impl Accountant {
    /// What this node's accounting holds. On a fleet's database, accounts are the fleet's.
    pub fn counts(&self) -> Result<Counts, AccountantError> {
        let mut c = self.conn()?;
        let mut count = |sql: &str| -> Result<u64, AccountantError> {
            Ok(u64::try_from(c.value::<i64>(sql, &[])?.unwrap_or(0)).unwrap_or(0))
        };
        Ok(Counts {
            accounts: count("SELECT count(*) FROM accounts WHERE id <> 0")?,
            shares: count("SELECT count(*) FROM shares")?,
            leases: count("SELECT count(*) FROM leases")?,
            enablers: count("SELECT count(*) FROM write_enablers")?,
        })
    }

    /// Names of this node's accounts that `target` holds with another swissnum.
    pub fn clashes(&self, target: &Accountant) -> Result<Vec<String>, AccountantError> {
        let ours: Vec<(String, Option<String>)> =
            self.conn()?.rows("SELECT name, swissnum FROM accounts WHERE id <> 0 ORDER BY name", &[])?;
        let mut theirs = target.conn()?;
        let mut clashes = Vec::new();
        for (name, swissnum) in ours {
            let there: Option<Option<String>> =
                theirs.value("SELECT swissnum FROM accounts WHERE name = ?1", &params![&name])?;
            if there.is_some_and(|s| s != swissnum) {
                clashes.push(name);
            }
        }
        Ok(clashes)
    }

    /// Apply this node's accounting to `target` (see the module's documentation); `progress`
    /// hears the rows done so far. Refused whole, before any write, if a name clashes.
    pub fn copy_into(&self, target: &Accountant, mut progress: impl FnMut(u64)) -> Result<Moved, AccountantError> {
        let clashes = self.clashes(target)?;
        if !clashes.is_empty() {
            return Err(AccountantError::NameClash(clashes));
        }
        let mut moved = Moved::default();
        let mut done = 0u64;
        let mut step = |n: u64, progress: &mut dyn FnMut(u64)| {
            done += n;
            progress(done);
        };

        // Accounts, their attributes and revocations.
        type AccountRow = (i64, String, Option<String>, i64, Option<i64>);
        let accounts: Vec<AccountRow> =
            self.conn()?.rows("SELECT id, name, swissnum, created, revoked FROM accounts ORDER BY id", &[])?;
        let into_fleet = target.engine() == Engine::Postgres;
        let mut changes = Vec::new();
        for (id, name, swissnum, created, revoked) in accounts {
            if id != AccountId::ANONYMOUS.0 {
                let Some(swissnum) = swissnum else {
                    return Err(AccountantError::Corrupt(format!("account `{name}` has no swissnum")));
                };
                changes.push(Change::Account {
                    name: name.clone(),
                    swissnum,
                    created: u64::try_from(created).unwrap_or(0),
                });
                moved.counts.accounts += 1;
            } else if into_fleet {
                continue;
            }
            changes.extend(attribute_changes(&name, &read_attributes(&mut self.conn()?, AccountId(id))?));
            if let Some(at) = revoked {
                changes.push(Change::Revoked { account: name, at: u64::try_from(at).unwrap_or(0) });
            }
        }
        target.apply_unlogged(&changes)?;
        step(moved.counts.accounts, &mut progress);

        // Holders, leases and enablers, a page at a time.
        let mut after = (-1_i64, String::new(), -1_i64);
        loop {
            type ShareRow = (i64, String, i64, String, i64);
            let rows: Vec<ShareRow> = self.conn()?.rows(
                "SELECT s.kind, s.si, s.shnum, a.name, s.size FROM shares s JOIN accounts a ON a.id = s.account
                 WHERE (s.kind, s.si, s.shnum) > (?1, ?2, ?3) ORDER BY s.kind, s.si, s.shnum LIMIT ?4",
                &params![after.0, &after.1, after.2, PAGE],
            )?;
            let Some(last) = rows.last() else { break };
            after = (last.0, last.1.clone(), last.2);
            let changes = rows
                .into_iter()
                .map(|(kind, si, shnum, account, size)| {
                    Ok(Change::Share {
                        share: share(kind, &si, shnum)?,
                        account,
                        size: u64::try_from(size).unwrap_or(0),
                    })
                })
                .collect::<Result<Vec<_>, AccountantError>>()?;
            moved.counts.shares += changes.len() as u64;
            target.apply_unlogged(&changes)?;
            step(changes.len() as u64, &mut progress);
        }
        let mut after = (-1_i64, String::new(), -1_i64, Vec::new());
        loop {
            type LeaseRow = (i64, String, i64, Vec<u8>, Vec<u8>, i64, String, i64);
            let rows: Vec<LeaseRow> = self.conn()?.rows(
                "SELECT l.kind, l.si, l.shnum, l.renew_hash, l.cancel_hash, l.expires, a.name, l.scheme
                 FROM leases l JOIN accounts a ON a.id = l.account
                 WHERE (l.kind, l.si, l.shnum, l.renew_hash) > (?1, ?2, ?3, ?4)
                 ORDER BY l.kind, l.si, l.shnum, l.renew_hash LIMIT ?5",
                &params![after.0, &after.1, after.2, after.3.clone(), PAGE],
            )?;
            let Some(last) = rows.last() else { break };
            after = (last.0, last.1.clone(), last.2, last.3.clone());
            let changes = rows
                .into_iter()
                .map(|(kind, si, shnum, renew, cancel, expires, account, scheme)| {
                    let hash = LeaseHash::from_code(scheme)
                        .ok_or_else(|| AccountantError::Corrupt(format!("a lease's hash scheme is {scheme}")))?;
                    let (Ok(renew_hash), Ok(cancel_hash)) = (renew.try_into(), cancel.try_into()) else {
                        return Err(AccountantError::Corrupt("a stored lease hash is not 32 bytes".into()));
                    };
                    Ok(Change::Lease {
                        share: share(kind, &si, shnum)?,
                        hash,
                        renew_hash,
                        cancel_hash,
                        expires: u64::try_from(expires).unwrap_or(0),
                        account,
                    })
                })
                .collect::<Result<Vec<_>, AccountantError>>()?;
            moved.counts.leases += changes.len() as u64;
            target.apply_unlogged(&changes)?;
            step(changes.len() as u64, &mut progress);
        }
        for raw in [false, true] {
            let (table, column) =
                if raw { ("write_enablers_raw", "enabler") } else { ("write_enablers", "enabler_hash") };
            let mut after = (String::new(), -1_i64);
            loop {
                let rows: Vec<(String, i64, Vec<u8>)> = self.conn()?.rows(
                    &format!(
                        "SELECT si, shnum, {column} FROM {table} WHERE (si, shnum) > (?1, ?2) ORDER BY si, shnum LIMIT ?3"
                    ),
                    &params![&after.0, after.1, PAGE],
                )?;
                let Some(last) = rows.last() else { break };
                after = (last.0.clone(), last.1);
                let changes = rows
                    .into_iter()
                    .map(|(si, shnum, value)| {
                        let share = share(1, &si, shnum)?;
                        Ok(if raw {
                            Change::RawWriteEnabler { si: share.si, shnum: share.shnum, enabler: value }
                        } else {
                            let hash = value
                                .try_into()
                                .map_err(|_| AccountantError::Corrupt("a write enabler hash is not 32 bytes".into()))?;
                            Change::WriteEnabler { si: share.si, shnum: share.shnum, hash }
                        })
                    })
                    .collect::<Result<Vec<_>, AccountantError>>()?;
                if !raw {
                    moved.counts.enablers += changes.len() as u64;
                }
                target.apply_unlogged(&changes)?;
                step(changes.len() as u64, &mut progress);
            }
        }

        // The node's own bookkeeping, row for row.
        let seqnums: Vec<(String, i64, i64)> =
            self.conn()?.rows("SELECT si, shnum, seqnum FROM mutable_seqnums", &[])?;
        let uploads: Vec<(String, i64)> = self.conn()?.rows("SELECT si, shnum FROM open_uploads", &[])?;
        let pending: Vec<(String, Vec<u8>)> = self.conn()?.rows("SELECT si, body FROM pending_writes", &[])?;
        transaction(&mut target.conn()?, |c| {
            for (si, shnum, seqnum) in &seqnums {
                c.execute(
                    "INSERT INTO mutable_seqnums (si, shnum, seqnum) VALUES (?1, ?2, ?3)
                     ON CONFLICT (si, shnum) DO UPDATE SET seqnum = excluded.seqnum",
                    &params![si, *shnum, *seqnum],
                )?;
            }
            for (si, shnum) in &uploads {
                c.execute(
                    "INSERT INTO open_uploads (si, shnum) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    &params![si, *shnum],
                )?;
            }
            for (si, body) in &pending {
                c.execute(
                    "INSERT INTO pending_writes (si, body) VALUES (?1, ?2)
                     ON CONFLICT (si) DO UPDATE SET body = excluded.body",
                    &params![si, body.as_slice()],
                )?;
            }
            Ok::<_, AccountantError>(())
        })?;

        // The change log as it stands: what the strategy has not confirmed yet, and the newest
        // entry, whose number the target's log continues from.
        let log: Vec<(i64, Vec<u8>)> = self.conn()?.rows("SELECT seq, body FROM changes ORDER BY seq", &[])?;
        let persisted = self.persisted_seq()?;
        transaction(&mut target.conn()?, |c| {
            for (seq, body) in &log {
                c.execute(
                    "INSERT INTO changes (seq, body) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    &params![*seq, body.as_slice()],
                )?;
            }
            c.execute(
                "UPDATE meta SET value = CASE WHEN ?1 > value THEN ?1 ELSE value END WHERE key = 'persisted_seq'",
                &params![persisted],
            )?;
            if c.engine() == Engine::Postgres && !log.is_empty() {
                c.query(
                    "SELECT setval(pg_get_serial_sequence('changes', 'seq'), (SELECT max(seq) FROM changes))",
                    &[],
                )?;
            }
            Ok::<_, AccountantError>(())
        })?;
        moved.changes = log.len() as u64;
        target.accounts_changed();
        Ok(moved)
    }

    /// Apply `changes` in one transaction without logging them (a move's state).
    fn apply_unlogged(&self, changes: &[Change]) -> Result<(), AccountantError> {
        if changes.is_empty() {
            return Ok(());
        }
        transaction(&mut self.conn()?, |c| {
            for change in changes {
                change.apply(c)?;
            }
            Ok::<_, AccountantError>(())
        })
    }
}

/// A share as a table row names it.
fn share(kind: i64, si: &str, shnum: i64) -> Result<ShareRef, AccountantError> {
    let kind = match kind {
        0 => ShareKind::Immutable,
        1 => ShareKind::Mutable,
        other => return Err(AccountantError::Corrupt(format!("share kind {other}"))),
    };
    let si: StorageIndex = si.parse().map_err(|e| AccountantError::Corrupt(format!("a storage index: {e}")))?;
    let shnum = u16::try_from(shnum).map_err(|_| AccountantError::Corrupt(format!("share number {shnum}")))?;
    Ok(ShareRef { kind: Some(kind), si, shnum: ShareNumber(shnum) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attributes, MutableShareWrite, MutableWrite};
    use marsh_core::ShareId;

    fn si(n: u8) -> StorageIndex {
        StorageIndex::from_bytes([n; 16])
    }

    /// A node's worth of accounting: accounts (one revoked, one with a quota), immutable and
    /// mutable shares with leases and enablers, a kept sequence number, an open upload.
    fn populate(a: &Accountant) {
        let alice = a.create_account("alice", &Attributes { quota: Some(9000), ..Attributes::default() }, 3).unwrap();
        a.create_account("bob", &Attributes::default(), 4).unwrap();
        a.revoke("bob", 5).unwrap();
        for n in 0..30u8 {
            a.allocate(alice.account.id, &ShareId::immutable(si(n), ShareNumber(0)), 100, &[n; 4], b"c", 10).unwrap();
            a.add_or_renew(AccountId::ANONYMOUS, &ShareId::immutable(si(n), ShareNumber(0)), b"r2", b"c", 11).unwrap();
            a.upload_finished(&ShareId::immutable(si(n), ShareNumber(0))).unwrap();
        }
        a.allocate(AccountId::ANONYMOUS, &ShareId::immutable(si(99), ShareNumber(1)), 5, b"r", b"c", 12).unwrap();
        let shares = [MutableShareWrite::Written { shnum: ShareNumber(0), size: 70, created: true }];
        let w = MutableWrite {
            account: alice.account.id,
            si: si(200),
            redo: b"redo",
            shares: &shares,
            enabler: b"we",
            keep_raw_enabler: true,
            renew: b"r",
            cancel: b"c",
            now: 13,
            lease_limit: 10,
            quotas: &[],
        };
        a.begin_mutable_write(&w).unwrap();
        a.end_mutable_write(&si(200), &[(ShareNumber(0), Some(4))]).unwrap();
        a.mark_persisted(a.last_seq().unwrap() - 3).unwrap();
    }

    fn same(a: &Accountant, b: &Accountant) {
        assert_eq!(a.counts().unwrap(), b.counts().unwrap());
        assert_eq!(a.accounts().unwrap(), b.accounts().unwrap());
        for n in [0u8, 17, 29] {
            let share = ShareId::immutable(si(n), ShareNumber(0));
            assert_eq!(a.leases(&share).unwrap(), b.leases(&share).unwrap(), "{share}");
            assert_eq!(a.holder(&share).unwrap(), b.holder(&share).unwrap());
        }
        assert_eq!(b.check_write_enabler(&si(200), ShareNumber(0), b"we").unwrap(), Some(true));
        assert_eq!(b.raw_write_enabler(&si(200), ShareNumber(0)).unwrap().as_deref(), Some(&b"we"[..]));
        assert_eq!(
            a.mutable_seqnum(&si(200), ShareNumber(0)).unwrap(),
            b.mutable_seqnum(&si(200), ShareNumber(0)).unwrap()
        );
        assert_eq!(a.open_uploads().unwrap(), b.open_uploads().unwrap());
        assert_eq!(
            (a.last_seq().unwrap(), a.persisted_seq().unwrap()),
            (b.last_seq().unwrap(), b.persisted_seq().unwrap())
        );
        assert_eq!(a.changes_after(0, 100).unwrap(), b.changes_after(0, 100).unwrap());
    }

    fn a_move_carries_everything_and_again_changes_nothing(new: &dyn Fn() -> Accountant) {
        let source = Accountant::in_memory().unwrap();
        populate(&source);
        let target = new();
        let mut seen = 0;
        let moved = source.copy_into(&target, |done| seen = done).unwrap();
        assert_eq!(moved.counts, source.counts().unwrap());
        assert_eq!(moved.counts, Counts { accounts: 2, shares: 32, leases: 62, enablers: 1 });
        assert!(seen >= 32 + 62, "progress reported: {seen}");
        same(&source, &target);
        // Run again (an interrupted move finishing): nothing doubles.
        source.copy_into(&target, |_| {}).unwrap();
        same(&source, &target);
        // The log goes on from the source's number.
        let next = source.last_seq().unwrap() + 1;
        target.create_account("carol", &Attributes::default(), 9).unwrap();
        assert_eq!(target.changes_after(next - 1, 10).unwrap()[0].seq, next);
        // And back the other way, into a fresh SQLite database.
        let back = Accountant::in_memory().unwrap();
        target.copy_into(&back, |_| {}).unwrap();
        assert_eq!(back.account("carol").unwrap().name, "carol");
        assert_eq!(back.counts().unwrap().shares, 32);
    }

    fn a_name_another_node_holds_is_a_clash_and_nothing_is_written(new: &dyn Fn() -> Accountant) {
        let source = Accountant::in_memory().unwrap();
        populate(&source);
        let target = new();
        target.create_account("alice", &Attributes::default(), 1).unwrap();
        let before = target.counts().unwrap();
        match source.copy_into(&target, |_| {}) {
            Err(AccountantError::NameClash(names)) => assert_eq!(names, ["alice"]),
            other => panic!("expected a clash, got {other:?}"),
        }
        assert_eq!(target.counts().unwrap(), before, "nothing written");
    }

    crate::on_both_engines!(
        a_move_carries_everything_and_again_changes_nothing,
        a_name_another_node_holds_is_a_clash_and_nothing_is_written,
    );
}

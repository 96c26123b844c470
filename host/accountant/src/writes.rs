//! Compound operations on shares: each commits every change one protocol step makes in one
//! transaction, so a failure or a crash between them cannot leave half a state.
//!
//! - An immutable allocation records its lease, its holder and an `open_uploads` row together;
//!   the row goes when the upload finishes or is forgotten. Rows left by a process that died
//!   name uploads that can never finish: the node forgets them at start-up.
//! - A mutable read-test-write records, in one transaction, what it is about to write (an
//!   opaque redo record, kept in `pending_writes` until the writes are known to be applied in
//!   full) with every share's new enabler, holder, size and lease, or its removal. The server
//!   applies the writes after the commit, and replays a record still pending at start-up, so a
//!   share ends up with its old content (nothing committed) or its new one (the record
//!   replayed), and never without its enabler.
//!
//! `open_uploads` and `pending_writes` are node-local: snapshots leave them out and they are
//! not in the change log.

use marsh_core::{ShareId, ShareNumber, StorageIndex};
use marsh_sql::{Conn, Engine, Query, SqlError, params, transaction};

use crate::change::has_write_enabler;
use crate::leases::{keep_raw_enabler, lease_change, may_add_lease};
use crate::log::{apply_and_log, name_of};
use crate::{AccountId, Accountant, AccountantError, Change, hash};

/// What one share of a read-test-write becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutableShareWrite {
    /// Written: its size afterwards, and whether the write creates it.
    Written {
        /// The share number.
        shnum: ShareNumber,
        /// Its size once the writes are applied.
        size: u64,
        /// Whether it did not exist before (its write enabler is recorded).
        created: bool,
    },
    /// Removed (`new-length` 0).
    Removed {
        /// The share number.
        shnum: ShareNumber,
    },
}

/// A read-test-write about to be applied to one slot.
#[derive(Debug, Clone, Copy)]
pub struct MutableWrite<'a> {
    /// The writer.
    pub account: AccountId,
    /// The slot.
    pub si: StorageIndex,
    /// What the server needs to apply the writes again after a crash (opaque here).
    pub redo: &'a [u8],
    /// Every share it touches.
    pub shares: &'a [MutableShareWrite],
    /// The write enabler, recorded for created shares.
    pub enabler: &'a [u8],
    /// Whether to keep created shares' enablers raw too (`storage.keep-write-enablers`).
    pub keep_raw_enabler: bool,
    /// Lease secrets: every written share gets (or renews) the writer's lease.
    pub renew: &'a [u8],
    /// Lease secrets.
    pub cancel: &'a [u8],
    /// Now, seconds since the epoch.
    pub now: u64,
    /// Lease records a share may carry: a written share already carrying this many, none of
    /// them the writer's, is written without a new lease (the write is the owner's; the limit
    /// holds against anyone who adds leases).
    pub lease_limit: usize,
    /// Quotas the write must stay within, checked in its transaction (on PostgreSQL with each
    /// account's row locked, against the fleet's usage): refused whole with
    /// [`AccountantError::OverQuota`] otherwise.
    pub quotas: &'a [QuotaCheck],
}

/// An account whose quota a mutable write must stay within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCheck {
    /// The account holding the shares that grow.
    pub account: AccountId,
    /// Its quota.
    pub quota: u64,
    /// Bytes the write adds to what it holds.
    pub grows: u64,
}

/// One immutable share's allocation ([`Accountant::allocate_within`]).
#[derive(Debug, Clone, Copy)]
pub struct Allocation<'a> {
    /// Who allocates.
    pub account: AccountId,
    /// The share.
    pub share: &'a ShareId,
    /// Its allocated size.
    pub size: u64,
    /// Lease secrets.
    pub renew: &'a [u8],
    /// Lease secrets.
    pub cancel: &'a [u8],
    /// Now, seconds since the epoch.
    pub now: u64,
}

impl Accountant {
    /// Record a new immutable upload: `account`'s lease on it, its holder with the allocated
    /// size (uploads in progress count towards usage), and the upload as open, together.
    pub fn allocate(
        &self,
        account: AccountId,
        share: &ShareId,
        size: u64,
        renew: &[u8],
        cancel: &[u8],
        now: u64,
    ) -> Result<(), AccountantError> {
        let allocation = Allocation { account, share, size, renew, cancel, now };
        self.allocate_within(&allocation, None).map(drop)
    }

    /// [`Accountant::allocate`] if the account's usage (on PostgreSQL, the fleet's: every
    /// node's) plus the allocation stays within `quota`, checked in the allocation's own
    /// transaction with the account's row locked, so that allocations racing on other nodes
    /// are counted one after another, never past the quota together. `Ok(false)`: over the
    /// quota, nothing recorded.
    pub fn allocate_within(&self, a: &Allocation<'_>, quota: Option<u64>) -> Result<bool, AccountantError> {
        let Allocation { account, share, size, renew, cancel, now } = *a;
        transaction(&mut self.conn()?, |c| {
            if let Some(quota) = quota
                && locked_usage(c, account)?.saturating_add(size) > quota
            {
                return Ok(false);
            }
            let name = name_of(c, account)?;
            let lease = lease_change(c, share, name.clone(), renew, cancel, now)?;
            apply_and_log(c, &lease)?;
            apply_and_log(c, &Change::Share { share: share.into(), account: name, size })?;
            c.execute(
                "INSERT INTO open_uploads (si, shnum) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                &params![share.si.to_base32(), share.shnum.0],
            )?;
            Ok(true)
        })
    }

    /// An upload finished: its share is complete and stays held and leased.
    pub fn upload_finished(&self, share: &ShareId) -> Result<(), AccountantError> {
        Ok(close_open_upload(&mut self.conn()?, share)?)
    }

    /// Uploads recorded as open: at start-up, those of a process that is gone.
    pub fn open_uploads(&self) -> Result<Vec<ShareId>, AccountantError> {
        let rows: Vec<(String, u16)> =
            self.conn()?.rows("SELECT si, shnum FROM open_uploads ORDER BY si, shnum", &[])?;
        let mut out = Vec::new();
        for (si, n) in rows {
            let si = si.parse().map_err(|e| AccountantError::Corrupt(format!("open_uploads: {e}")))?;
            out.push(ShareId::immutable(si, ShareNumber(n)));
        }
        Ok(out)
    }

    /// Record a read-test-write before its writes are applied: the redo record, and for each
    /// share its enabler (created), holder and size and the writer's lease, or its removal,
    /// in one transaction. [`Accountant::end_mutable_write`] clears the redo record once the
    /// writes are applied in full.
    ///
    /// Unlike other commits, this one is durable when it returns (`synchronous = FULL` for it):
    /// the backend writes right after it, and a power loss must not keep the writes and lose
    /// the record and enablers.
    pub fn begin_mutable_write(&self, w: &MutableWrite<'_>) -> Result<(), AccountantError> {
        let mut conn = self.conn()?;
        // SQLite syncs this commit to disk (its redo record must survive a power loss);
        // PostgreSQL's every commit is durable already.
        let sqlite = conn.engine() == Engine::Sqlite;
        if sqlite {
            conn.sqlite("synchronous")?.pragma_update(None, "synchronous", "FULL")?;
        }
        let result = transaction(&mut conn, |c| begin_in(c, w));
        if sqlite {
            conn.sqlite("synchronous")?.pragma_update(None, "synchronous", "NORMAL")?;
        }
        result
    }

    /// The writes recorded for `si` are applied in full: their record is cleared and, in the
    /// same transaction, the sequence numbers they wrote are kept (`Some`) or forgotten (`None`;
    /// see [`Accountant::mutable_seqnum`]).
    pub fn end_mutable_write(
        &self,
        si: &StorageIndex,
        seqnums: &[(ShareNumber, Option<u64>)],
    ) -> Result<(), AccountantError> {
        transaction(&mut self.conn()?, |c| {
            c.execute("DELETE FROM pending_writes WHERE si = ?1", &params![si.to_base32()])?;
            for (shnum, seqnum) in seqnums {
                crate::seqnums::set(c, si, *shnum, *seqnum)?;
            }
            Ok(())
        })
    }

    /// The redo record of a read-test-write on `si` not yet known to be applied, if any.
    pub fn pending_mutable_write(&self, si: &StorageIndex) -> Result<Option<Vec<u8>>, AccountantError> {
        Ok(self.conn()?.value("SELECT body FROM pending_writes WHERE si = ?1", &params![si.to_base32()])?)
    }

    /// Whether `si` has a read-test-write not yet known to be applied.
    pub fn has_pending_mutable_write(&self, si: &StorageIndex) -> Result<bool, AccountantError> {
        Ok(self.conn()?.value::<i64>("SELECT 1 FROM pending_writes WHERE si = ?1", &params![si.to_base32()])?.is_some())
    }

    /// Slots with a read-test-write not yet known to be applied.
    pub fn pending_mutable_writes(&self) -> Result<Vec<StorageIndex>, AccountantError> {
        let rows: Vec<String> = self.conn()?.values("SELECT si FROM pending_writes ORDER BY si", &[])?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.parse().map_err(|e| AccountantError::Corrupt(format!("pending_writes: {e}")))?);
        }
        Ok(out)
    }
}

/// The upload of `share` is no longer open (finished, or forgotten).
pub(crate) fn close_open_upload(c: &mut dyn Conn, share: &ShareId) -> Result<(), SqlError> {
    c.execute("DELETE FROM open_uploads WHERE si = ?1 AND shnum = ?2", &params![share.si.to_base32(), share.shnum.0])?;
    Ok(())
}

/// The transaction of [`Accountant::begin_mutable_write`].
/// `account`'s usage (on PostgreSQL the fleet's), read inside the caller's transaction with the
/// account's row locked until it ends, so that writes racing on other nodes are counted one
/// after another (SQLite's BEGIN IMMEDIATE has already made this the only writer).
fn locked_usage(c: &mut dyn Conn, account: AccountId) -> Result<u64, AccountantError> {
    if c.engine() == Engine::Postgres {
        c.execute("SELECT id FROM accounts WHERE id = ?1 FOR UPDATE", &params![account.0])?;
    }
    let used: i64 = c.value("SELECT bytes FROM account_tallies WHERE account = ?1", &params![account.0])?.unwrap_or(0);
    Ok(u64::try_from(used).unwrap_or(0))
}

/// Record a mutable write inside the caller's transaction on `c`.
fn begin_in(c: &mut dyn Conn, w: &MutableWrite<'_>) -> Result<(), AccountantError> {
    for q in w.quotas.iter().filter(|q| q.grows > 0) {
        let used = locked_usage(c, q.account)?;
        if used.saturating_add(q.grows) > q.quota {
            return Err(AccountantError::OverQuota {
                account: name_of(c, q.account)?,
                used,
                quota: q.quota,
                adds: q.grows,
            });
        }
    }
    let name = name_of(c, w.account)?;
    for share in w.shares {
        match *share {
            MutableShareWrite::Written { shnum, size, created } => {
                let id = ShareId::mutable(w.si, shnum);
                // A new share's enabler replaces any stale row; an existing share whose row
                // went missing (a concurrent collection forgot it) gets it back.
                if created || !has_write_enabler(c, &w.si, shnum)? {
                    apply_and_log(c, &Change::WriteEnabler { si: w.si, shnum, hash: hash(w.enabler) })?;
                    if w.keep_raw_enabler {
                        keep_raw_enabler(c, &w.si, shnum, w.enabler)?;
                    }
                }
                apply_and_log(c, &Change::Share { share: (&id).into(), account: name.clone(), size })?;
                if may_add_lease(c, &id, w.renew, w.lease_limit)? {
                    let lease = lease_change(c, &id, name.clone(), w.renew, w.cancel, w.now)?;
                    apply_and_log(c, &lease)?;
                }
            }
            MutableShareWrite::Removed { shnum } => {
                apply_and_log(c, &Change::Forget { share: (&ShareId::mutable(w.si, shnum)).into() })?;
            }
        }
    }
    c.execute(
        "INSERT INTO pending_writes (si, body) VALUES (?1, ?2) ON CONFLICT (si) DO UPDATE SET body = excluded.body",
        &params![w.si.to_base32(), w.redo],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn si(n: u8) -> StorageIndex {
        StorageIndex::from_bytes([n; 16])
    }

    fn an_allocation_is_one_state_and_an_open_upload_until_finished_or_forgotten(new: &dyn Fn() -> Accountant) {
        let a = new();
        let (one, two) = (ShareId::immutable(si(1), ShareNumber(0)), ShareId::immutable(si(1), ShareNumber(1)));
        a.allocate(AccountId::ANONYMOUS, &one, 100, b"r", b"c", 10).unwrap();
        a.allocate(AccountId::ANONYMOUS, &two, 50, b"r", b"c", 10).unwrap();
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 150);
        assert_eq!(a.leases(&one).unwrap().len(), 1);
        assert_eq!(a.open_uploads().unwrap(), vec![one, two]);
        a.upload_finished(&one).unwrap();
        a.forget_share(&two).unwrap();
        assert_eq!(a.open_uploads().unwrap(), vec![]);
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 100, "the finished share stays held");
        assert!(a.allocate(AccountId(99), &two, 1, b"r", b"c", 10).is_err(), "no such account");
        assert_eq!(a.open_uploads().unwrap(), vec![], "a failed allocation records nothing");
    }

    fn a_mutable_write_records_everything_at_once_and_keeps_its_redo_until_ended(new: &dyn Fn() -> Accountant) {
        let a = new();
        let shares = [
            MutableShareWrite::Written { shnum: ShareNumber(0), size: 30, created: true },
            MutableShareWrite::Written { shnum: ShareNumber(1), size: 20, created: true },
        ];
        let w = MutableWrite {
            account: AccountId::ANONYMOUS,
            si: si(2),
            redo: b"redo",
            shares: &shares,
            enabler: b"we",
            keep_raw_enabler: true,
            renew: b"r",
            cancel: b"c",
            now: 5,
            lease_limit: 2,
            quotas: &[],
        };
        a.begin_mutable_write(&w).unwrap();
        assert_eq!(a.check_write_enabler(&si(2), ShareNumber(1), b"we").unwrap(), Some(true));
        assert_eq!(a.raw_write_enabler(&si(2), ShareNumber(1)).unwrap().as_deref(), Some(&b"we"[..]), "kept, as asked");
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 50);
        assert_eq!(a.leases(&ShareId::mutable(si(2), ShareNumber(0))).unwrap().len(), 1);
        assert_eq!(a.pending_mutable_writes().unwrap(), vec![si(2)]);
        assert_eq!(a.pending_mutable_write(&si(2)).unwrap().as_deref(), Some(&b"redo"[..]));
        a.end_mutable_write(&si(2), &[]).unwrap();
        assert_eq!(a.pending_mutable_write(&si(2)).unwrap(), None);
        let removed = [MutableShareWrite::Removed { shnum: ShareNumber(1) }];
        a.begin_mutable_write(&MutableWrite { shares: &removed, ..w }).unwrap();
        assert_eq!(a.check_write_enabler(&si(2), ShareNumber(1), b"we").unwrap(), None);
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 30);
        a.end_mutable_write(&si(2), &[]).unwrap();
        // At the limit (2 lease records), a writer whose lease is not among them writes
        // without adding one; one whose lease is there renews it.
        let share = ShareId::mutable(si(2), ShareNumber(0));
        a.add_or_renew(AccountId::ANONYMOUS, &share, b"other", b"c", 5).unwrap();
        let again = [MutableShareWrite::Written { shnum: ShareNumber(0), size: 40, created: false }];
        a.begin_mutable_write(&MutableWrite { shares: &again, renew: b"third", ..w }).unwrap();
        a.end_mutable_write(&si(2), &[]).unwrap();
        assert_eq!(a.leases(&share).unwrap().len(), 2, "no third lease record");
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 40, "the write itself is recorded");
        a.begin_mutable_write(&MutableWrite { shares: &again, now: 500, ..w }).unwrap();
        assert_eq!(a.leases(&share).unwrap().iter().map(|l| l.expires).max(), Some(500 + crate::LEASE_SECONDS));
    }

    crate::on_both_engines!(
        an_allocation_is_one_state_and_an_open_upload_until_finished_or_forgotten,
        a_mutable_write_records_everything_at_once_and_keeps_its_redo_until_ended,
    );
}

//! Leases, holders and write enablers, each keyed by [`ShareId`] (kind included): adding or
//! renewing a lease, the account holding a share (for usage and quota), forgetting a share,
//! checking a mutable share's write enabler by hash, and taking in a share with the leases and
//! enabler another server kept for it ([`Accountant::adopt_share`]).
//!
//! A renewal's secret is looked for among the share's leases by both hashes leases are kept
//! under ([`LeaseHash`]): a lease recorded with SHA-256 before schema 6 is renewed as it is; a
//! new one is kept as BLAKE2b-256, as Tahoe-LAFS keeps it.

use marsh_core::{ShareId, ShareKind, ShareNumber, StorageIndex};
use marsh_sql::{Conn, Query, SqlError, params, transaction};

use crate::accounts::read_attributes;
use crate::change::{Change, LeaseHash, kind_code};
use crate::log::{apply_and_log, name_of};
use crate::{AccountId, Accountant, AccountantError, LEASE_SECONDS, blake2b, change, hash, writes};

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
    /// How its secrets are hashed.
    pub hash: LeaseHash,
    /// The renew secret's hash.
    pub renew_hash: [u8; 32],
    /// The cancel secret's hash.
    pub cancel_hash: [u8; 32],
    /// Seconds since the epoch.
    pub expires: u64,
    /// The account that holds it.
    pub account: AccountId,
}

/// A leased share and when its last lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    /// The share.
    pub share: ShareId,
    /// The latest expiry among its leases, seconds since the epoch.
    pub expires: u64,
}

/// A lease another server kept, taken in as it was: its secrets' BLAKE2b-256 hashes (the
/// secrets themselves are never known) and its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdoptedLease {
    /// BLAKE2b-256 of the renew secret.
    pub renew_hash: [u8; 32],
    /// BLAKE2b-256 of the cancel secret.
    pub cancel_hash: [u8; 32],
    /// Seconds since the epoch.
    pub expires: u64,
}

/// A share another server kept, taken in by [`Accountant::adopt_share`].
#[derive(Debug, Clone, Copy)]
pub struct AdoptedShare<'a> {
    /// The share.
    pub share: ShareId,
    /// Who holds it here.
    pub account: AccountId,
    /// Its size, bytes.
    pub size: u64,
    /// Its leases.
    pub leases: &'a [AdoptedLease],
    /// A mutable share's write enabler, raw (kept raw only when `keep_raw` is set).
    pub write_enabler: Option<&'a [u8]>,
    /// Whether to keep the raw write enabler as well as its hash.
    pub keep_raw: bool,
}

/// Whether a lease with the renew secret `renew` may be added to (or renewed on) `share` under
/// a limit of `limit` lease records: it is there already, or the share carries fewer than
/// `limit`.
pub(crate) fn may_add_lease(
    c: &mut dyn Conn,
    share: &ShareId,
    renew: &[u8],
    limit: usize,
) -> Result<bool, AccountantError> {
    let (count, mine): (i64, i64) = c
        .row(
            "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN renew_hash IN (?4, ?5) THEN 1 ELSE 0 END), 0) AS BIGINT)
             FROM leases WHERE kind = ?1 AND si = ?2 AND shnum = ?3",
            &params![kind_code(share.kind), share.si.to_base32(), share.shnum.0, blake2b(renew), hash(renew)],
        )?
        .ok_or(SqlError::NoRow)?;
    Ok(mine > 0 || usize::try_from(count).unwrap_or(usize::MAX) < limit)
}

impl Accountant {
    /// Whether `account`'s lease with `renew` may go on `share` under a limit of `limit` lease
    /// records (see [`may_add_lease`]).
    pub fn may_add_lease(&self, share: &ShareId, renew: &[u8], limit: usize) -> Result<bool, AccountantError> {
        may_add_lease(&mut self.conn()?, share, renew, limit)
    }

    /// Record that `account` holds a share of `size` bytes (an allocation or a mutable write).
    /// The first account to hold a share keeps it; the size follows the share.
    pub fn record_share(&self, account: AccountId, share: &ShareId, size: u64) -> Result<(), AccountantError> {
        self.commit_for(account, |account| Change::Share { share: share.into(), account, size })
    }

    /// The account holding a share, if the share is recorded.
    pub fn holder(&self, share: &ShareId) -> Result<Option<Holder>, AccountantError> {
        let mut conn = self.conn()?;
        let row: Option<(i64, String)> = conn.row(
            "SELECT s.account, a.name FROM shares s JOIN accounts a ON a.id = s.account
             WHERE s.kind = ?1 AND s.si = ?2 AND s.shnum = ?3",
            &params![kind_code(share.kind), share.si.to_base32(), share.shnum.0],
        )?;
        match row {
            Some((id, name)) => {
                let quota = read_attributes(&mut conn, AccountId(id))?.quota;
                Ok(Some(Holder { id: AccountId(id), name, quota }))
            }
            None => Ok(None),
        }
    }

    /// Renew the lease whose renew secret matches (never shortening it), or add one for `account`.
    pub fn add_or_renew(
        &self,
        account: AccountId,
        share: &ShareId,
        renew: &[u8],
        cancel: &[u8],
        now: u64,
    ) -> Result<(), AccountantError> {
        transaction(&mut self.conn()?, |c| {
            let name = name_of(c, account)?;
            let change = lease_change(c, share, name, renew, cancel, now)?;
            apply_and_log(c, &change)
        })
    }

    /// Take in a share another server kept (`marsh adopt`): its holder and size, its leases
    /// as they were (hashes and expiry), and a mutable share's write enabler, in one
    /// transaction. Taking in the same share again changes nothing (each change is an upsert).
    pub fn adopt_share(&self, a: &AdoptedShare<'_>) -> Result<(), AccountantError> {
        self.adopt_shares(std::slice::from_ref(a))
    }

    /// [`Accountant::adopt_share`] for several shares in one transaction (a commit per share
    /// is most of what taking in a small share costs).
    pub fn adopt_shares(&self, shares: &[AdoptedShare<'_>]) -> Result<(), AccountantError> {
        transaction(&mut self.conn()?, |c| {
            for a in shares {
                adopt_one(c, a)?;
            }
            Ok(())
        })
    }

    /// The raw write enabler of a mutable share, where one is kept
    /// (`storage.keep-write-enablers`, or adopted so).
    pub fn raw_write_enabler(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<Vec<u8>>, AccountantError> {
        Ok(self.conn()?.value(
            "SELECT enabler FROM write_enablers_raw WHERE si = ?1 AND shnum = ?2",
            &params![si.to_base32(), shnum.0],
        )?)
    }

    /// Leased shares all of whose leases expire before `before`, in order of their latest
    /// expiry, at most `limit`, from just after `after` (the last of the previous page). An
    /// index over each share's latest expiry answers it: the work is proportional to the shares
    /// listed, not to the shares held. Shares with no lease record are never listed.
    pub fn shares_expiring_before(
        &self,
        before: u64,
        after: Option<&Expiring>,
        limit: usize,
    ) -> Result<Vec<Expiring>, AccountantError> {
        let (e, k, s, n) = match after {
            Some(a) => (a.expires as i64, kind_code(a.share.kind), a.share.si.to_base32(), i64::from(a.share.shnum.0)),
            None => (-1, -1, String::new(), -1),
        };
        let rows: Vec<(i64, String, u16, i64)> = self.conn()?.rows(
            "SELECT kind, si, shnum, expires FROM share_expiry
             WHERE expires < ?1 AND (expires, kind, si, shnum) > (?2, ?3, ?4, ?5)
             ORDER BY expires, kind, si, shnum LIMIT ?6",
            &params![before, e, k, s, n, limit],
        )?;
        let mut out = Vec::new();
        for (kind, si, shnum, expires) in rows {
            let kind = match kind {
                0 => ShareKind::Immutable,
                1 => ShareKind::Mutable,
                other => return Err(AccountantError::Corrupt(format!("share_expiry: share kind {other}"))),
            };
            let si = si.parse().map_err(|e| AccountantError::Corrupt(format!("share_expiry: {e}")))?;
            out.push(Expiring {
                share: ShareId { kind, si, shnum: ShareNumber(shnum) },
                expires: expires.max(0) as u64,
            });
        }
        Ok(out)
    }

    /// The leases of one share, soonest expiry first.
    pub fn leases(&self, share: &ShareId) -> Result<Vec<Lease>, AccountantError> {
        type LeaseRow = (Vec<u8>, Vec<u8>, i64, i64, i64);
        let rows: Vec<LeaseRow> = self.conn()?.rows(
            "SELECT renew_hash, cancel_hash, expires, account, scheme FROM leases
             WHERE kind = ?1 AND si = ?2 AND shnum = ?3 ORDER BY expires",
            &params![kind_code(share.kind), share.si.to_base32(), share.shnum.0],
        )?;
        let mut out = Vec::new();
        for (renew, cancel, expires, account, scheme) in rows {
            let (Ok(renew_hash), Ok(cancel_hash)) = (renew.try_into(), cancel.try_into()) else {
                return Err(AccountantError::Corrupt("a stored lease hash is not 32 bytes".into()));
            };
            let hash = LeaseHash::from_code(scheme)
                .ok_or_else(|| AccountantError::Corrupt(format!("a lease's hash scheme is {scheme}")))?;
            out.push(Lease {
                hash,
                renew_hash,
                cancel_hash,
                expires: expires.max(0) as u64,
                account: AccountId(account),
            });
        }
        Ok(out)
    }

    /// Forget everything about a share (it was deleted or its upload aborted): its leases, its
    /// holder and, for a mutable share, its write enabler. The other kind's share of the same
    /// storage index and number is untouched.
    pub fn forget_share(&self, share: &ShareId) -> Result<(), AccountantError> {
        transaction(&mut self.conn()?, |c| {
            apply_and_log(c, &Change::Forget { share: share.into() })?;
            if share.kind == ShareKind::Immutable {
                writes::close_open_upload(c, share)?;
            } else {
                crate::seqnums::forget(c, &share.si, share.shnum)?;
            }
            Ok(())
        })
    }

    /// Whether `enabler` is the recorded write enabler of a mutable share: `None` when none is
    /// recorded.
    pub fn check_write_enabler(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        enabler: &[u8],
    ) -> Result<Option<bool>, AccountantError> {
        let stored: Option<Vec<u8>> = self.conn()?.value(
            "SELECT enabler_hash FROM write_enablers WHERE si = ?1 AND shnum = ?2",
            &params![si.to_base32(), shnum.0],
        )?;
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
        transaction(&mut self.conn()?, |c| {
            let present = change::has_write_enabler(c, si, shnum)?;
            if !present {
                apply_and_log(c, &Change::WriteEnabler { si: *si, shnum, hash })?;
            }
            Ok(!present)
        })
    }
}

/// Take in one adopted share inside the caller's transaction on `c`.
fn adopt_one(c: &mut dyn Conn, a: &AdoptedShare<'_>) -> Result<(), AccountantError> {
    let name = name_of(c, a.account)?;
    let share = &a.share;
    if let Some(enabler) = a.write_enabler {
        apply_and_log(c, &Change::WriteEnabler { si: share.si, shnum: share.shnum, hash: hash(enabler) })?;
        if a.keep_raw {
            keep_raw_enabler(c, &share.si, share.shnum, enabler)?;
        }
    }
    apply_and_log(c, &Change::Share { share: share.into(), account: name.clone(), size: a.size })?;
    for l in a.leases {
        apply_and_log(
            c,
            &Change::Lease {
                share: share.into(),
                hash: LeaseHash::Blake2b,
                renew_hash: l.renew_hash,
                cancel_hash: l.cancel_hash,
                expires: l.expires,
                account: name.clone(),
            },
        )?;
    }
    Ok(())
}

/// Keep `enabler` raw for the mutable share `si`/`shnum`, as a change like any other.
pub(crate) fn keep_raw_enabler(
    c: &mut dyn Conn,
    si: &StorageIndex,
    shnum: ShareNumber,
    enabler: &[u8],
) -> Result<(), AccountantError> {
    apply_and_log(c, &Change::RawWriteEnabler { si: *si, shnum, enabler: enabler.to_vec() })
}

/// The change that renews `share`'s lease with the renew secret `renew`, or adds one: a lease
/// recorded with SHA-256 (before schema 6) is renewed under that hash; otherwise the lease is
/// kept as BLAKE2b-256, Tahoe-LAFS's hash, whether it is there already or new.
pub(crate) fn lease_change(
    c: &mut dyn Conn,
    share: &ShareId,
    account: String,
    renew: &[u8],
    cancel: &[u8],
    now: u64,
) -> Result<Change, SqlError> {
    let legacy = c
        .value::<i64>(
            "SELECT 1 FROM leases WHERE kind = ?1 AND si = ?2 AND shnum = ?3 AND renew_hash = ?4 AND scheme = 0",
            &params![kind_code(share.kind), share.si.to_base32(), share.shnum.0, hash(renew)],
        )?
        .is_some();
    let scheme = if legacy { LeaseHash::Sha256 } else { LeaseHash::Blake2b };
    Ok(Change::Lease {
        share: share.into(),
        hash: scheme,
        renew_hash: scheme.of(renew),
        cancel_hash: scheme.of(cancel),
        expires: now.saturating_add(LEASE_SECONDS),
        account,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attributes, NewAccount};

    fn si(n: u8) -> StorageIndex {
        StorageIndex::from_bytes([n; 16])
    }

    fn renewal_matches_by_renew_secret_and_never_shortens(new: &dyn Fn() -> Accountant) {
        let book = new();
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
        assert_eq!(leases[0].renew_hash, blake2b(&[1; 32]), "stored hashed as Tahoe hashes it");
        assert_eq!(leases[0].hash, LeaseHash::Blake2b);
        book.forget_share(&ShareId::immutable(si, n)).unwrap();
        assert!(book.leases(&ShareId::immutable(si, n)).unwrap().is_empty());
    }

    fn a_lease_kept_as_sha256_is_renewed_as_it_is_and_new_ones_are_kept_as_tahoe_keeps_them(
        new: &dyn Fn() -> Accountant,
    ) {
        let book = new();
        let share = ShareId::immutable(si(4), ShareNumber(0));
        // As a release before schema 6 recorded it.
        book.commit(&Change::Lease {
            share: (&share).into(),
            hash: LeaseHash::Sha256,
            renew_hash: hash(b"old"),
            cancel_hash: hash(b"c"),
            expires: 100,
            account: "anonymous".into(),
        })
        .unwrap();
        assert!(book.may_add_lease(&share, b"old", 1).unwrap(), "its own lease, at the limit");
        assert!(!book.may_add_lease(&share, b"new", 1).unwrap());
        book.add_or_renew(AccountId::ANONYMOUS, &share, b"old", b"c", 1000).unwrap();
        book.add_or_renew(AccountId::ANONYMOUS, &share, b"new", b"c", 2000).unwrap();
        let leases = book.leases(&share).unwrap();
        assert_eq!(leases.len(), 2, "the old lease renewed, not doubled");
        assert_eq!(
            (leases[0].hash, leases[0].renew_hash, leases[0].expires),
            (LeaseHash::Sha256, hash(b"old"), 1000 + LEASE_SECONDS)
        );
        assert_eq!(
            (leases[1].hash, leases[1].renew_hash, leases[1].cancel_hash),
            (LeaseHash::Blake2b, blake2b(b"new"), blake2b(b"c"))
        );
        assert!(book.may_add_lease(&share, b"new", 2).unwrap());
    }

    fn an_adopted_share_keeps_its_leases_which_its_clients_then_renew(new: &dyn Fn() -> Accountant) {
        let book = new();
        let share = ShareId::mutable(si(5), ShareNumber(2));
        let leases = [
            AdoptedLease { renew_hash: blake2b(b"r1"), cancel_hash: blake2b(b"c1"), expires: 5000 },
            AdoptedLease { renew_hash: blake2b(b"r2"), cancel_hash: blake2b(b"c2"), expires: 6000 },
        ];
        let adopted = AdoptedShare {
            share,
            account: AccountId::ANONYMOUS,
            size: 700,
            leases: &leases,
            write_enabler: Some(b"we"),
            keep_raw: true,
        };
        book.adopt_share(&adopted).unwrap();
        book.adopt_share(&adopted).unwrap();
        assert_eq!(book.leases(&share).unwrap().len(), 2, "taken in twice, kept once");
        assert_eq!(book.usage(AccountId::ANONYMOUS).unwrap(), 700);
        assert_eq!(book.check_write_enabler(&si(5), ShareNumber(2), b"we").unwrap(), Some(true));
        assert_eq!(book.raw_write_enabler(&si(5), ShareNumber(2)).unwrap().as_deref(), Some(&b"we"[..]));
        book.add_or_renew(AccountId::ANONYMOUS, &share, b"r1", b"c1", 1_000_000).unwrap();
        let after = book.leases(&share).unwrap();
        assert_eq!(after.len(), 2, "the client's renewal found its adopted lease");
        assert_eq!(after.iter().map(|l| l.expires).max(), Some(1_000_000 + LEASE_SECONDS));
        // The share made again under another enabler: the raw one kept is not its own and goes.
        book.set_write_enabler(&si(5), ShareNumber(2), b"other").unwrap();
        assert_eq!(book.raw_write_enabler(&si(5), ShareNumber(2)).unwrap(), None);
        book.adopt_share(&adopted).unwrap();
        book.forget_share(&share).unwrap();
        assert_eq!(book.raw_write_enabler(&si(5), ShareNumber(2)).unwrap(), None, "forgotten with its share");
        let immutable =
            AdoptedShare { share: ShareId::immutable(si(5), ShareNumber(2)), write_enabler: None, ..adopted };
        book.adopt_share(&immutable).unwrap();
        assert_eq!(
            book.check_write_enabler(&si(5), ShareNumber(2), b"we").unwrap(),
            None,
            "no enabler for an immutable share"
        );
    }

    fn write_enablers_are_checked_by_hash(new: &dyn Fn() -> Accountant) {
        let book = new();
        assert_eq!(book.check_write_enabler(&si(1), ShareNumber(1), b"we").unwrap(), None);
        book.set_write_enabler(&si(1), ShareNumber(1), b"we").unwrap();
        assert_eq!(book.check_write_enabler(&si(1), ShareNumber(1), b"we").unwrap(), Some(true));
        assert_eq!(book.check_write_enabler(&si(1), ShareNumber(1), b"WE").unwrap(), Some(false));
    }

    fn the_two_kinds_of_one_share_number_never_touch(new: &dyn Fn() -> Accountant) {
        let a = new();
        let NewAccount { account: owner, .. } = a.create_account("owner", &Attributes::default(), 1).unwrap();
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

    crate::on_both_engines!(
        renewal_matches_by_renew_secret_and_never_shortens,
        a_lease_kept_as_sha256_is_renewed_as_it_is_and_new_ones_are_kept_as_tahoe_keeps_them,
        an_adopted_share_keeps_its_leases_which_its_clients_then_renew,
        write_enablers_are_checked_by_hash,
        the_two_kinds_of_one_share_number_never_touch,
    );
}

//! Lease expiry and garbage collection, as Tahoe-LAFS documents them (`docs/garbage-collection.rst`):
//! a share whose leases have all expired is deleted through the backend.
//!
//! When a lease has expired ([`ExpiryPolicy`]):
//! - `age` mode: when the time since its last renewal exceeds the override duration, if one is
//!   set, else at its own expiry time (renewal + 31 days);
//! - `cutoff-date` mode: when its last renewal is before the cutoff date.
//!
//! Shares with no lease record at all are kept and counted apart: after a lost `cache/` every
//! share looks that way, and deleting them would turn a lost database into lost data.
//! Uploads in progress are not shares yet and are never touched.

use marsh_accountant::{Accountant, LEASE_SECONDS, Lease};
use marsh_core::{Backend, ShareId, ShareNumber, StorageIndex};

/// When leases expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryMode {
    /// By age: after `override_seconds` since renewal if set, else at the lease's own expiry.
    Age {
        /// Tahoe's `expire.override_lease_duration`.
        override_seconds: Option<u64>,
    },
    /// Leases last renewed before this time (seconds since the epoch) have expired.
    CutoffDate(u64),
}

/// What the collector may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// How leases expire.
    pub mode: ExpiryMode,
    /// Whether immutable shares are collected.
    pub immutable: bool,
    /// Whether mutable shares are collected.
    pub mutable: bool,
}

impl ExpiryPolicy {
    /// Whether `lease` has expired at `now`.
    pub fn expired(&self, lease: &Lease, now: u64) -> bool {
        let renewed = lease.expires.saturating_sub(LEASE_SECONDS);
        match self.mode {
            ExpiryMode::Age { override_seconds: Some(d) } => now > renewed.saturating_add(d),
            ExpiryMode::Age { override_seconds: None } => now > lease.expires,
            ExpiryMode::CutoffDate(cutoff) => renewed < cutoff,
        }
    }
}

/// What one collection pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Shares examined.
    pub examined: u64,
    /// Shares with at least one live lease, kept.
    pub leased: u64,
    /// Shares with no lease record, kept.
    pub unrecorded: u64,
    /// Shares whose leases all expired: deleted, or (dry run) to be deleted.
    pub expired: Vec<(StorageIndex, ShareNumber, bool, u64)>,
    /// Bytes of the expired shares.
    pub expired_bytes: u64,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The backend failed.
    #[error("backend: {0}")]
    Backend(#[from] marsh_core::BackendError),
    /// The accountant failed.
    #[error(transparent)]
    Accountant(#[from] marsh_accountant::AccountantError),
}

/// One pass over every share: delete (unless `dry_run`) those whose leases all expired at `now`.
pub async fn collect(
    backend: &dyn Backend,
    accountant: &Accountant,
    policy: &ExpiryPolicy,
    now: u64,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    let mut after: Option<StorageIndex> = None;
    loop {
        let page = backend.list_indexes(after.as_ref(), 1000).await?;
        for si in &page.indexes {
            for mutable in [false, true] {
                if (mutable && !policy.mutable) || (!mutable && !policy.immutable) {
                    continue;
                }
                // A slot with a write not yet applied in full is left to the node to complete.
                if mutable && crate::offload::sqlite(|| accountant.has_pending_mutable_write(si))? {
                    continue;
                }
                let shares = if mutable { backend.mutable_list(si).await? } else { backend.list_shares(si).await? };
                for n in shares {
                    report.examined += 1;
                    let share = if mutable { ShareId::mutable(*si, n) } else { ShareId::immutable(*si, n) };
                    let leases = crate::offload::sqlite(|| accountant.leases(&share))?;
                    if leases.is_empty() {
                        report.unrecorded += 1;
                        continue;
                    }
                    if !leases.iter().all(|l| policy.expired(l, now)) {
                        report.leased += 1;
                        continue;
                    }
                    let size = if mutable { backend.mutable_size(si, n).await? } else { backend.size(si, n).await? };
                    let size = size.unwrap_or(0);
                    if !dry_run {
                        let gone =
                            if mutable { backend.mutable_delete(si, n).await? } else { backend.delete(si, n).await? };
                        if gone {
                            crate::offload::sqlite(|| accountant.forget_share(&share))?;
                        }
                    }
                    report.expired_bytes += size;
                    report.expired.push((*si, n, mutable, size));
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(report),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marsh_accountant::AccountId;

    fn lease(renewed: u64) -> Lease {
        Lease {
            renew_hash: [0; 32],
            cancel_hash: [0; 32],
            expires: renewed + LEASE_SECONDS,
            account: AccountId::ANONYMOUS,
        }
    }

    #[test]
    fn expiry_follows_the_documented_modes() {
        let age = |o| ExpiryPolicy { mode: ExpiryMode::Age { override_seconds: o }, immutable: true, mutable: true };
        assert!(!age(None).expired(&lease(1000), 1000 + LEASE_SECONDS));
        assert!(age(None).expired(&lease(1000), 1001 + LEASE_SECONDS), "at its own expiry");
        assert!(!age(Some(60)).expired(&lease(1000), 1060));
        assert!(age(Some(60)).expired(&lease(1000), 1061), "an override shortens (or lengthens) every lease");
        let cutoff = ExpiryPolicy { mode: ExpiryMode::CutoffDate(5000), immutable: true, mutable: true };
        assert!(cutoff.expired(&lease(4999), 0), "renewed before the cutoff");
        assert!(!cutoff.expired(&lease(5000), u64::MAX));
    }

    #[tokio::test]
    async fn expired_shares_go_leased_and_unrecorded_ones_stay() {
        use marsh_conformance::reference::ReferenceBackend;
        use marsh_core::WriteVector;
        let backend = ReferenceBackend::default();
        let accountant = Accountant::in_memory().unwrap();
        let (old, fresh, unknown, slot, pending) = (
            StorageIndex::from_bytes([1; 16]),
            StorageIndex::from_bytes([2; 16]),
            StorageIndex::from_bytes([3; 16]),
            StorageIndex::from_bytes([4; 16]),
            StorageIndex::from_bytes([5; 16]),
        );
        for si in [old, fresh, unknown] {
            backend.begin(&si, ShareNumber(0), 3).await.unwrap();
            backend.write(&si, ShareNumber(0), 0, b"abc").await.unwrap();
            backend.finish(&si, ShareNumber(0)).await.unwrap();
        }
        backend.begin(&pending, ShareNumber(0), 3).await.unwrap();
        let wv = WriteVector { offset: 0, data: b"slot".to_vec() };
        backend.mutable_write(&slot, ShareNumber(1), &[wv], None).await.unwrap();
        let anon = AccountId::ANONYMOUS;
        accountant.add_or_renew(anon, &ShareId::immutable(old, ShareNumber(0)), b"r1", b"c1", 1000).unwrap();
        accountant.add_or_renew(anon, &ShareId::immutable(fresh, ShareNumber(0)), b"r2", b"c2", 1000).unwrap();
        accountant.add_or_renew(anon, &ShareId::immutable(fresh, ShareNumber(0)), b"r3", b"c3", 9000).unwrap();
        accountant.add_or_renew(anon, &ShareId::mutable(slot, ShareNumber(1)), b"r4", b"c4", 1000).unwrap();
        let policy = ExpiryPolicy { mode: ExpiryMode::CutoffDate(5000), immutable: true, mutable: true };

        let dry = collect(&backend, &accountant, &policy, 10_000, true).await.unwrap();
        assert_eq!((dry.examined, dry.leased, dry.unrecorded, dry.expired.len()), (4, 1, 1, 2));
        assert_eq!(dry.expired_bytes, 7);
        assert_eq!(backend.size(&old, ShareNumber(0)).await.unwrap(), Some(3), "a dry run deletes nothing");

        let only_immutable = ExpiryPolicy { mutable: false, ..policy };
        let r = collect(&backend, &accountant, &only_immutable, 10_000, false).await.unwrap();
        assert_eq!(r.expired, vec![(old, ShareNumber(0), false, 3)]);
        assert_eq!(backend.size(&old, ShareNumber(0)).await.unwrap(), None);
        assert!(accountant.leases(&ShareId::immutable(old, ShareNumber(0))).unwrap().is_empty());
        assert_eq!(backend.size(&fresh, ShareNumber(0)).await.unwrap(), Some(3), "one live lease keeps it");
        assert_eq!(backend.size(&unknown, ShareNumber(0)).await.unwrap(), Some(3), "no lease record: kept");
        assert_eq!(backend.mutable_size(&slot, ShareNumber(1)).await.unwrap(), Some(4), "mutable shares excluded");
        let r = collect(&backend, &accountant, &policy, 10_000, false).await.unwrap();
        assert_eq!(r.expired, vec![(slot, ShareNumber(1), true, 4)]);
        assert_eq!(backend.read_incoming(&pending, ShareNumber(0), 0, 3).await.unwrap().len(), 3, "uploads untouched");
    }
}

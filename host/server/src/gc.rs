//! Lease expiry and garbage collection, as Tahoe-LAFS documents them (`docs/garbage-collection.rst`):
//! a share whose leases have all expired is deleted through the backend.
//!
//! When a lease has expired ([`ExpiryPolicy`]):
//! - `age` mode: when the time since its last renewal exceeds the override duration, if one is
//!   set, else at its own expiry time (renewal + 31 days);
//! - `cutoff-date` mode: when its last renewal is before the cutoff date.
//!
//! Either way a lease has expired when its expiry time lies before a threshold the policy sets
//! for now ([`ExpiryPolicy::threshold`]), so a share whose leases have all expired is one whose
//! latest lease expiry lies before it. The accountant keeps each leased share's latest expiry in
//! an index, and a pass asks that index for what lies before the threshold: its work is
//! proportional to the shares whose leases ran out, not to the shares held (Tahoe's own crawler
//! reads every share file, about five hours per TB). Each of them is looked at again under its
//! storage index's lock before it is deleted.
//!
//! Shares with no lease record at all are never candidates: after a lost `cache/` every share
//! looks that way, and deleting them would turn a lost database into lost data. Uploads in
//! progress are not shares yet and are never touched.
//!
//! A storage index's leases are read and its expired shares deleted under its lock in
//! [`SlotLocks`], the lock renewals, allocations (which add leases to shares already held) and
//! mutable writes take: a renewal or write the client was told succeeded is never followed by a
//! delete decided on the leases from before it. The locks are one process's: `marsh gc`
//! deletes nothing while another process serves the node.

use marsh_accountant::{Accountant, Expiring, LEASE_SECONDS, Lease};
use marsh_core::{Backend, ShareId, ShareKind, ShareNumber, StorageIndex};

use crate::SlotLocks;

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
    /// The expiry time before which a lease has expired at `now`: in `age` mode `now` itself, or
    /// (with an override) `now + 31 days - override`; in `cutoff-date` mode the cutoff plus 31
    /// days (a lease expires 31 days after its renewal).
    pub fn threshold(&self, now: u64) -> u64 {
        match self.mode {
            ExpiryMode::Age { override_seconds: None } => now,
            ExpiryMode::Age { override_seconds: Some(d) } => now.saturating_add(LEASE_SECONDS).saturating_sub(d),
            ExpiryMode::CutoffDate(cutoff) => cutoff.saturating_add(LEASE_SECONDS),
        }
    }

    /// Whether `lease` has expired at `now`.
    pub fn expired(&self, lease: &Lease, now: u64) -> bool {
        lease.expires < self.threshold(now)
    }

    /// Whether shares of `kind` are collected.
    fn covers(&self, kind: ShareKind) -> bool {
        match kind {
            ShareKind::Immutable => self.immutable,
            ShareKind::Mutable => self.mutable,
        }
    }
}

/// What one collection pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Shares whose leases had all run out by the index, examined.
    pub examined: u64,
    /// Of those, shares renewed since (or with a write still to complete), kept.
    pub leased: u64,
    /// Shares whose leases all expired: deleted, or (dry run) to be deleted.
    pub expired: Vec<(StorageIndex, ShareNumber, bool, u64)>,
    /// Bytes of the expired shares.
    pub expired_bytes: u64,
    /// Storage indexes whose lock stayed held through the pass, left to the next.
    pub busy: u64,
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

/// One pass: delete (unless `dry_run`) the shares whose leases all expired at `now`, found by
/// the accountant's expiry index, each looked at again under its storage index's lock in `locks`
/// (the serving process's, [`crate::StorageService::slot_locks`]).
///
/// A share whose storage index's lock is held (a write, a renewal or an allocation in progress)
/// is passed over and come back to once the rest of the pass is done, waiting at most
/// [`crate::mutable::SLOT_WAIT`] for it then; one still busy is left to the next pass
/// ([`GcReport::busy`]). So no holder can stop the pass, and whatever follows a busy index is
/// collected on time.
pub async fn collect(
    backend: &dyn Backend,
    accountant: &Accountant,
    locks: &SlotLocks,
    policy: &ExpiryPolicy,
    now: u64,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let threshold = policy.threshold(now);
    let mut report = GcReport::default();
    let mut busy = Vec::new();
    let mut after: Option<Expiring> = None;
    loop {
        let page = crate::offload::sqlite(|| accountant.shares_expiring_before(threshold, after.as_ref(), 1000))?;
        let Some(last) = page.last().cloned() else { break };
        for candidate in page {
            if !policy.covers(candidate.share.kind) {
                continue;
            }
            match locks.try_lock(candidate.share.si) {
                Some(_index) => {
                    examine(backend, accountant, policy, &candidate.share, now, dry_run, &mut report).await?
                }
                None => busy.push(candidate.share),
            }
        }
        after = Some(last);
    }
    for share in busy {
        match locks.lock_within(share.si, crate::mutable::SLOT_WAIT).await {
            Some(_index) => examine(backend, accountant, policy, &share, now, dry_run, &mut report).await?,
            None => {
                tracing::info!(%share, "lease expiry passed over a share whose storage index was busy for the whole pass; the next pass looks again");
                report.busy += 1;
            }
        }
    }
    Ok(report)
}

/// Look at `share` again (its storage index's lock held) and delete it if its leases all
/// expired.
async fn examine(
    backend: &dyn Backend,
    accountant: &Accountant,
    policy: &ExpiryPolicy,
    share: &ShareId,
    now: u64,
    dry_run: bool,
    report: &mut GcReport,
) -> Result<(), GcError> {
    let (si, n, mutable) = (&share.si, share.shnum, share.kind == ShareKind::Mutable);
    report.examined += 1;
    // A slot with a write not yet applied in full is left to the node to complete.
    if mutable && crate::offload::sqlite(|| accountant.has_pending_mutable_write(si))? {
        report.leased += 1;
        return Ok(());
    }
    let leases = crate::offload::sqlite(|| accountant.leases(share))?;
    if leases.is_empty() || !leases.iter().all(|l| policy.expired(l, now)) {
        report.leased += 1;
        return Ok(());
    }
    let size = if mutable { backend.mutable_size(si, n).await? } else { backend.size(si, n).await? };
    if !dry_run {
        if size.is_some() {
            if mutable {
                backend.mutable_delete(si, n).await?;
            } else {
                backend.delete(si, n).await?;
            }
        }
        // Gone from the store, or never there (its record outlived it): forgotten either way.
        crate::offload::sqlite(|| accountant.forget_share(share))?;
    }
    let size = size.unwrap_or(0);
    report.expired_bytes += size;
    report.expired.push((*si, n, mutable, size));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use marsh_accountant::AccountId;
    use marsh_core::{BackendError, IndexPage, Usage, WriteVector};

    fn lease(renewed: u64) -> Lease {
        Lease {
            hash: marsh_accountant::LeaseHash::Blake2b,
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
        // One threshold per policy and time decides every lease, as the expiry index asks it.
        for policy in [age(None), age(Some(60)), age(Some(90 * 86_400)), cutoff] {
            for now in [0, 1000, 1000 + LEASE_SECONDS, 5000 + 2 * LEASE_SECONDS] {
                let t = policy.threshold(now);
                for expires in [t.saturating_sub(1), t, t + 1] {
                    let l = Lease { expires, ..lease(0) };
                    assert_eq!(policy.expired(&l, now), expires < t, "{policy:?} at {now}");
                }
            }
        }
    }

    #[tokio::test]
    async fn expired_shares_go_leased_and_unrecorded_ones_stay() {
        // (A share recorded with leases but gone from the store is forgotten as expired; one in
        // the store with no record is never touched.)
        use marsh_conformance::reference::ReferenceBackend;
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

        let dry = collect(&backend, &accountant, &SlotLocks::default(), &policy, 10_000, true).await.unwrap();
        // Only the shares whose latest lease ran out are looked at: `fresh` (renewed after the
        // cutoff) and `unknown` (no lease record) are not even candidates.
        assert_eq!((dry.examined, dry.leased, dry.expired.len()), (2, 0, 2));
        assert_eq!(dry.expired_bytes, 7);
        assert_eq!(backend.size(&old, ShareNumber(0)).await.unwrap(), Some(3), "a dry run deletes nothing");

        let only_immutable = ExpiryPolicy { mutable: false, ..policy };
        let r = collect(&backend, &accountant, &SlotLocks::default(), &only_immutable, 10_000, false).await.unwrap();
        assert_eq!(r.expired, vec![(old, ShareNumber(0), false, 3)]);
        assert_eq!(backend.size(&old, ShareNumber(0)).await.unwrap(), None);
        assert!(accountant.leases(&ShareId::immutable(old, ShareNumber(0))).unwrap().is_empty());
        assert_eq!(backend.size(&fresh, ShareNumber(0)).await.unwrap(), Some(3), "one live lease keeps it");
        assert_eq!(backend.size(&unknown, ShareNumber(0)).await.unwrap(), Some(3), "no lease record: kept");
        assert_eq!(backend.mutable_size(&slot, ShareNumber(1)).await.unwrap(), Some(4), "mutable shares excluded");
        let r = collect(&backend, &accountant, &SlotLocks::default(), &policy, 10_000, false).await.unwrap();
        assert_eq!(r.expired, vec![(slot, ShareNumber(1), true, 4)]);
        assert_eq!(backend.read_incoming(&pending, ShareNumber(0), 0, 3).await.unwrap().len(), 3, "uploads untouched");
    }

    /// A storage index whose lock a request holds does not stop the pass: it is passed over,
    /// the rest is collected, it is come back to at the end (and collected if its lock came
    /// free by then), and one busy throughout is left to the next pass.
    #[tokio::test(start_paused = true)]
    async fn a_busy_storage_index_is_passed_over_and_come_back_to() {
        use marsh_conformance::reference::ReferenceBackend;
        let backend = ReferenceBackend::default();
        let accountant = Accountant::in_memory().unwrap();
        let (a, b, c) =
            (StorageIndex::from_bytes([8; 16]), StorageIndex::from_bytes([9; 16]), StorageIndex::from_bytes([10; 16]));
        for si in [a, b, c] {
            backend.begin(&si, ShareNumber(0), 3).await.unwrap();
            backend.write(&si, ShareNumber(0), 0, b"abc").await.unwrap();
            backend.finish(&si, ShareNumber(0)).await.unwrap();
            accountant
                .add_or_renew(AccountId::ANONYMOUS, &ShareId::immutable(si, ShareNumber(0)), b"r", b"c", 1000)
                .unwrap();
        }
        let policy = ExpiryPolicy { mode: ExpiryMode::CutoffDate(5000), immutable: true, mutable: true };
        let locks = SlotLocks::default();
        // `a` held through the whole pass (a trickled upload's allocation, say), `c` for a
        // second only.
        let held = locks.lock(a).await;
        let early = locks.lock(c).await;
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            drop(early);
        });
        let r = collect(&backend, &accountant, &locks, &policy, 10_000, false).await.unwrap();
        release.await.unwrap();
        let mut expired: Vec<StorageIndex> = r.expired.iter().map(|(si, ..)| *si).collect();
        expired.sort();
        let mut wanted = vec![b, c];
        wanted.sort();
        assert_eq!(expired, wanted, "the rest collected, `c` at the pass's end");
        assert_eq!(r.busy, 1);
        assert_eq!(backend.size(&a, ShareNumber(0)).await.unwrap(), Some(3), "left to the next pass");
        drop(held);
        let r = collect(&backend, &accountant, &locks, &policy, 10_000, false).await.unwrap();
        assert_eq!((r.expired, r.busy), (vec![(a, ShareNumber(0), false, 3)], 0));
        assert_eq!(locks.in_use(), 0, "no lock entry left behind");
    }

    /// The reference backend, except that a pass of lease expiry waits, between its look at a
    /// share's leases and its delete (at the size it asks for in between), until released, as
    /// over a slow store.
    #[derive(Default)]
    struct Held {
        inner: marsh_conformance::reference::ReferenceBackend,
        reached: tokio::sync::Notify,
        released: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl Backend for Held {
        async fn begin(&self, si: &StorageIndex, n: ShareNumber, size: u64) -> Result<(), BackendError> {
            self.inner.begin(si, n, size).await
        }
        async fn write(&self, si: &StorageIndex, n: ShareNumber, offset: u64, data: &[u8]) -> Result<(), BackendError> {
            self.inner.write(si, n, offset, data).await
        }
        async fn read_incoming(
            &self,
            si: &StorageIndex,
            n: ShareNumber,
            at: u64,
            len: u64,
        ) -> Result<Vec<u8>, BackendError> {
            self.inner.read_incoming(si, n, at, len).await
        }
        async fn finish(&self, si: &StorageIndex, n: ShareNumber) -> Result<(), BackendError> {
            self.inner.finish(si, n).await
        }
        async fn abort(&self, si: &StorageIndex, n: ShareNumber) -> Result<(), BackendError> {
            self.inner.abort(si, n).await
        }
        async fn read(&self, si: &StorageIndex, n: ShareNumber, at: u64, len: u64) -> Result<Vec<u8>, BackendError> {
            self.inner.read(si, n, at, len).await
        }
        async fn size(&self, si: &StorageIndex, n: ShareNumber) -> Result<Option<u64>, BackendError> {
            self.reached.notify_one();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.released.notified()).await;
            self.inner.size(si, n).await
        }
        async fn list_shares(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError> {
            self.inner.list_shares(si).await
        }
        async fn delete(&self, si: &StorageIndex, n: ShareNumber) -> Result<bool, BackendError> {
            self.inner.delete(si, n).await
        }
        async fn mutable_read(
            &self,
            si: &StorageIndex,
            n: ShareNumber,
            at: u64,
            len: u64,
        ) -> Result<Vec<u8>, BackendError> {
            self.inner.mutable_read(si, n, at, len).await
        }
        async fn mutable_write(
            &self,
            si: &StorageIndex,
            n: ShareNumber,
            writes: &[WriteVector],
            new_length: Option<u64>,
        ) -> Result<(), BackendError> {
            self.inner.mutable_write(si, n, writes, new_length).await
        }
        async fn mutable_size(&self, si: &StorageIndex, n: ShareNumber) -> Result<Option<u64>, BackendError> {
            self.inner.mutable_size(si, n).await
        }
        async fn mutable_list(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError> {
            self.inner.mutable_list(si).await
        }
        async fn mutable_delete(&self, si: &StorageIndex, n: ShareNumber) -> Result<bool, BackendError> {
            self.inner.mutable_delete(si, n).await
        }
        async fn list_indexes(&self, after: Option<&StorageIndex>, limit: u32) -> Result<IndexPage, BackendError> {
            self.inner.list_indexes(after, limit).await
        }
        async fn usage(&self) -> Result<Usage, BackendError> {
            self.inner.usage().await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_or_allocation_racing_expiry_never_vouches_for_a_share_expiry_deletes() {
        use crate::{ManualClock, ServiceConfig, StorageService, wire};
        use http_body_util::BodyExt;
        let backend = Arc::new(Held::default());
        let accountant = Arc::new(Accountant::in_memory().unwrap());
        let clock = Arc::new(ManualClock::new(1000));
        let service = Arc::new(
            StorageService::new(backend.clone(), accountant.clone(), clock.clone(), ServiceConfig::new("s", 0, "t"))
                .unwrap(),
        );
        // 40 days on, a lease renewed at 1000 (31 days) has expired.
        let now = 1000 + 40 * 86_400;
        clock.advance(now - 1000);
        let policy = ExpiryPolicy { mode: ExpiryMode::Age { override_seconds: None }, immutable: true, mutable: true };
        for (si, allocating) in [(StorageIndex::from_bytes([6; 16]), false), (StorageIndex::from_bytes([7; 16]), true)]
        {
            backend.begin(&si, ShareNumber(0), 3).await.unwrap();
            backend.write(&si, ShareNumber(0), 0, b"abc").await.unwrap();
            backend.finish(&si, ShareNumber(0)).await.unwrap();
            let share = ShareId::immutable(si, ShareNumber(0));
            accountant.add_or_renew(AccountId::ANONYMOUS, &share, b"r", b"c", 1000).unwrap();

            let (b, a, locks) = (backend.clone(), accountant.clone(), service.slot_locks());
            let pass = tokio::spawn(async move { collect(b.as_ref(), &a, &locks, &policy, now, false).await });
            // The pass has read the expired lease and not deleted yet: the client comes now,
            // renewing, or uploading the same share (which adds a lease to a share held).
            backend.reached.notified().await;
            let s = service.clone();
            let answer = tokio::spawn(async move {
                let caller = s.accountant().anonymous().unwrap();
                let r = match allocating {
                    true => {
                        let request = wire::AllocateRequest { share_numbers: vec![0], allocated_size: 3 };
                        s.allocate(&caller, si, request, b"r", b"c", b"upload").await
                    }
                    false => s.renew(&caller, si, b"r", b"c").await,
                };
                match r {
                    Ok(r) => (r.status(), r.into_body().collect().await.unwrap().to_bytes()),
                    Err(e) => (e.status(), Default::default()),
                }
            });
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            backend.released.notify_one();
            let report = pass.await.unwrap().unwrap();
            let (status, body) = answer.await.unwrap();
            assert_eq!(report.expired, vec![(si, ShareNumber(0), false, 3)], "decided on the lease it read");
            assert_eq!(backend.inner.size(&si, ShareNumber(0)).await.unwrap(), None);
            if allocating {
                // Not "already have": the client uploads the share again.
                assert_eq!(status, http::StatusCode::OK);
                assert_eq!(wire::decode(&body).unwrap(), wire::allocate_response(&[], &[0]));
            } else {
                assert_eq!(status, http::StatusCode::NOT_FOUND, "the renewal waited for the pass, and found no share");
            }
        }
    }
}

//! Mutable read-test-write, all or nothing across every share it names.
//!
//! Under the slot's lock, every check runs before any byte is written: the write enabler
//! against every existing share, that no existing share was rolled back by its store
//! (`rollback`), share numbers, the test vectors, the sizes, the space the
//! writes need, the writer's quota. Then the accountant records, in one transaction made durable
//! before the writes start, a redo record of the writes with every share's enabler (new shares,
//! and any share whose enabler row is missing), holder, size and lease (or its removal). Only
//! then does the backend apply the writes, possibly in several calls; once they are all applied
//! the redo record is cleared.
//!
//! Recording, applying and clearing run in a task of their own that holds the slot's lock: a
//! client that goes away does not stop them half way, and nothing else touches the slot until
//! they end.
//!
//! A slot whose redo record is still there (the node died, or the backend failed) is settled
//! before anything else reads or writes it: the writes are applied again (applying the same
//! writes and truncation twice gives the same bytes), the enablers the record names are put back
//! if missing, and the record is cleared. The node also settles every slot at start-up. So after
//! a crash or a failure a share reads as its old content (nothing was recorded) or its new one,
//! for every share a request names, and a share the record wrote has its enabler. Readers
//! during a write in progress are not held up and may see it half applied, as with the
//! reference server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use marsh_accountant::{Accountant, Caller, MutableShareWrite, MutableWrite, QuotaCheck};
use marsh_core::{Backend, ShareId, ShareNumber, StorageIndex, WriteVector};

use crate::budget::BodyPermit;
use crate::error::ApiError;
use crate::offload;
use crate::redo::{self, RedoRecord, RedoShare};
use crate::response::{Handled, cbor};
use crate::rollback;
use crate::service::{MAX_MUTABLE_SHARE_SIZE, StorageService};
use crate::wire;

type LockMap = Arc<Mutex<HashMap<StorageIndex, Arc<tokio::sync::Mutex<()>>>>>;

/// Async locks by storage index, dropped when nobody holds them: a slot's writes, lease
/// renewals and additions on a storage index's shares, and lease expiry's look at those leases
/// and its delete take turns, so a renewal or a write the client was told succeeded is never
/// undone by a delete decided on the leases from before it. Clones share the locks.
#[derive(Debug, Default, Clone)]
pub struct SlotLocks {
    locks: LockMap,
}

/// A held slot lock; released (and forgotten when nobody else waits) on drop, whichever way
/// the holder ends, a dropped request included.
#[derive(Debug)]
pub struct SlotGuard {
    si: StorageIndex,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    locks: LockMap,
}

/// The longest a request waits for a storage index's lock before it is answered 503. Every
/// holder does a bounded amount of work (backend calls under the plugin deadlines, SQLite
/// statements): no holder waits on another request.
pub const SLOT_WAIT: Duration = Duration::from_secs(10);

impl SlotLocks {
    fn entry(&self, si: StorageIndex) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(si).or_default().clone()
    }

    /// Wait for, and hold, the lock of `si`.
    pub async fn lock(&self, si: StorageIndex) -> SlotGuard {
        let guard = self.entry(si).lock_owned().await;
        SlotGuard { si, guard: Some(guard), locks: self.locks.clone() }
    }

    /// The lock of `si` if it comes within `wait`; `None` (and nothing left behind) if not.
    pub async fn lock_within(&self, si: StorageIndex, wait: Duration) -> Option<SlotGuard> {
        let lock = self.entry(si);
        match tokio::time::timeout(wait, lock.lock_owned()).await {
            Ok(guard) => Some(SlotGuard { si, guard: Some(guard), locks: self.locks.clone() }),
            Err(_) => {
                self.forget_if_unused(&si);
                None
            }
        }
    }

    /// The lock of `si` if nobody holds it now.
    pub fn try_lock(&self, si: StorageIndex) -> Option<SlotGuard> {
        let lock = self.entry(si);
        match lock.try_lock_owned() {
            Ok(guard) => Some(SlotGuard { si, guard: Some(guard), locks: self.locks.clone() }),
            Err(_) => {
                self.forget_if_unused(&si);
                None
            }
        }
    }

    /// Drop the map's entry for `si` when only the map holds it (nobody holds or waits).
    fn forget_if_unused(&self, si: &StorageIndex) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.get(si).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(si);
        }
    }

    /// Storage indexes with a lock held or waited for now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl StorageService {
    /// The lock of `si` within [`SLOT_WAIT`], or 503.
    pub(crate) async fn slot(&self, si: StorageIndex) -> Result<SlotGuard, ApiError> {
        self.slot_locks.lock_within(si, SLOT_WAIT).await.ok_or(ApiError::StorageIndexBusy)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.guard.take());
        // Only the map holds it now: nobody holds or waits for the lock.
        if locks.get(&self.si).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&self.si);
        }
    }
}

/// Slots with a redo record not yet cleared, mirrored in memory so a read of any other slot
/// asks nothing of the database.
#[derive(Debug, Default)]
pub(crate) struct PendingSlots(Mutex<HashSet<StorageIndex>>);

impl PendingSlots {
    pub(crate) fn new(slots: impl IntoIterator<Item = StorageIndex>) -> Self {
        PendingSlots(Mutex::new(slots.into_iter().collect()))
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<StorageIndex>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn contains(&self, si: &StorageIndex) -> bool {
        self.set().contains(si)
    }

    pub(crate) fn all(&self) -> Vec<StorageIndex> {
        self.set().iter().copied().collect()
    }
}

/// What the task that records, applies and settles writes needs: owned, so it runs to its end
/// whatever becomes of the request that started it.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) accountant: Arc<Accountant>,
    pub(crate) pending: Arc<PendingSlots>,
}

/// A task that ended without an answer (it panicked): 500.
fn task_failed(what: &'static str, e: tokio::task::JoinError) -> ApiError {
    ApiError::TaskFailed { what, error: e.to_string() }
}

/// A blocking accountant call, off the async threads (redo records can be large).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, marsh_accountant::AccountantError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| task_failed("accounting", e))?.map_err(ApiError::from)
}

/// The write a task records and applies.
struct Job {
    /// The request's share of the body budget, held until its redo record is gone.
    budget: BodyPermit,
    si: StorageIndex,
    record: RedoRecord,
    outcomes: Vec<MutableShareWrite>,
    account: marsh_accountant::AccountId,
    enabler: Vec<u8>,
    renew: Vec<u8>,
    cancel: Vec<u8>,
    now: u64,
    lease_limit: usize,
    keep_raw_enabler: bool,
    /// The quotas checked again in the write's transaction.
    quotas: Vec<QuotaCheck>,
}

impl Writer {
    /// Settle `si` if it has a redo record, holding `slot` throughout.
    async fn settle(self, si: StorageIndex, slot: SlotGuard) -> (SlotGuard, Result<(), ApiError>) {
        let result = self.settle_locked(si).await;
        (slot, result)
    }

    async fn settle_locked(&self, si: StorageIndex) -> Result<(), ApiError> {
        if !self.pending.contains(&si) {
            return Ok(());
        }
        let accountant = self.accountant.clone();
        if let Some(bytes) = blocking(move || accountant.pending_mutable_write(&si)).await? {
            let record = redo::decode_redo(&bytes).map_err(|e| {
                tracing::error!(si = %si, "a pending mutable write does not read back: {e}; the slot stays closed");
                ApiError::EarlierWriteUnreadable
            })?;
            let newer = rollback::superseded(&*self.backend, &si, &record.shares).await.map_err(|e| {
                tracing::warn!(si = %si, "reading a slot before completing its earlier write failed: {e}");
                ApiError::EarlierWriteIncomplete
            })?;
            if newer {
                // Its writes would put older content over what clients wrote since: the record
                // came back with an accounting database restored from a backup.
                tracing::warn!(si = %si, "a pending mutable write is older than what the store holds (was cache/ restored from a backup?): not applied again, its record dropped");
                let accountant = self.accountant.clone();
                blocking(move || accountant.end_mutable_write(&si, &[])).await?;
                self.pending.set().remove(&si);
                return Ok(());
            }
            redo::apply(&*self.backend, &si, &record.shares).await.map_err(|e| {
                tracing::warn!(si = %si, "completing an earlier write failed: {e}");
                ApiError::EarlierWriteIncomplete
            })?;
            let written: Vec<ShareNumber> =
                record.shares.iter().filter(|s| s.new_length != Some(0)).map(|s| s.shnum).collect();
            let (accountant, hash) = (self.accountant.clone(), record.enabler_hash);
            let numbers = rollback::written(&record.shares);
            blocking(move || {
                for n in written {
                    accountant.ensure_write_enabler_hash(&si, n, hash)?;
                }
                accountant.end_mutable_write(&si, &numbers)
            })
            .await?;
            tracing::info!(si = %si, "completed an interrupted mutable write");
        }
        self.pending.set().remove(&si);
        Ok(())
    }

    /// Record, apply, clear, holding `slot` throughout.
    async fn commit(self, job: Job, slot: SlotGuard) -> Result<(), ApiError> {
        let si = job.si;
        let accountant = self.accountant.clone();
        let bytes = redo::encode_redo(&job.record);
        let Job {
            outcomes,
            account,
            enabler,
            renew,
            cancel,
            now,
            record,
            budget,
            lease_limit,
            keep_raw_enabler,
            quotas,
            ..
        } = job;
        blocking(move || {
            accountant.begin_mutable_write(&MutableWrite {
                account,
                si,
                redo: &bytes,
                shares: &outcomes,
                enabler: &enabler,
                keep_raw_enabler,
                renew: &renew,
                cancel: &cancel,
                now,
                lease_limit,
                quotas: &quotas,
            })
        })
        .await?;
        self.pending.set().insert(si);
        if let Err(e) = redo::apply(&*self.backend, &si, &record.shares).await {
            // Recorded: it is completed before the slot is next read or written, so the client
            // is not told it failed.
            tracing::warn!(si = %si, "applying a mutable write failed: {e}; it will be completed later");
            return Err(ApiError::WriteRecorded);
        }
        let (accountant, numbers) = (self.accountant.clone(), rollback::written(&record.shares));
        match blocking(move || accountant.end_mutable_write(&si, &numbers)).await {
            Ok(()) => {
                self.pending.set().remove(&si);
            }
            // Applied in full; clearing the record is retried when the slot is next settled.
            Err(e) => tracing::warn!(si = %si, "clearing a mutable write's record failed: {}", e.status()),
        }
        drop(slot);
        drop(budget);
        Ok(())
    }
}

/// One share of a read-test-write, as planned before anything is written.
struct Planned {
    redo: RedoShare,
    outcome: MutableShareWrite,
    /// Its size before the write.
    current: u64,
}

impl StorageService {
    fn writer(&self) -> Writer {
        Writer { backend: self.backend.clone(), accountant: self.accountant.clone(), pending: self.pending.clone() }
    }

    /// Settle `si` under `slot`, in a task of its own: a dropped request does not cut it short.
    pub(crate) async fn settle(&self, si: StorageIndex, slot: SlotGuard) -> Result<SlotGuard, ApiError> {
        if !self.pending.contains(&si) {
            return Ok(slot);
        }
        let (slot, result) =
            tokio::spawn(self.writer().settle(si, slot)).await.map_err(|e| task_failed("settling", e))?;
        result.map(|()| slot)
    }

    /// Settle `si` before a read, when it has a redo record.
    pub(crate) async fn settle_for_read(&self, si: &StorageIndex) -> Result<(), ApiError> {
        if self.pending.contains(si) {
            let slot = self.slot(*si).await?;
            drop(self.settle(*si, slot).await?);
        }
        Ok(())
    }

    pub(crate) async fn read_test_write(
        &self,
        caller: &Caller,
        si: StorageIndex,
        request: wire::ReadTestWriteRequest,
        secrets: RtwSecrets<'_>,
        budget: BodyPermit,
    ) -> Handled {
        let writes = request.test_write_vectors.values().any(|v| !v.write.is_empty() || v.new_length.is_some());
        if writes && self.capacity().readonly {
            // The reference lets mutable writes through (tahoe #390); read-only means read-only here.
            return Err(ApiError::ReadOnly);
        }
        let slot = self.slot(si).await?;
        let slot = self.settle(si, slot).await?;
        let fail = ApiError::backend("read-test-write");
        let existing = self.backend.mutable_list(&si).await.map_err(fail)?;
        // 1. The write enabler must match every existing share.
        self.check_write_enabler(&si, &existing, secrets.enabler)?;
        // 2. No share the store rolled back is tested, read or written over: each header with
        // a number kept is read now, and every test or read below that covers it is checked.
        let kept = offload::sqlite(|| self.accountant.mutable_seqnums(&si)).map_err(ApiError::Accountant)?;
        for (n, number) in &kept {
            if existing.contains(n) {
                let first = self.backend.mutable_read(&si, *n, 0, rollback::HEADER as u64).await.map_err(fail)?;
                rollback::refuse_older(&self.metrics, &si, *n, *number, &first)?;
            }
        }
        let refuse_older = |n: ShareNumber, offset: u64, got: &[u8]| match kept.get(&n) {
            Some(number) if offset == 0 => rollback::refuse_older(&self.metrics, &si, n, *number, got),
            _ => Ok(()),
        };
        let mut shares: BTreeMap<u64, ShareNumber> = BTreeMap::new();
        for number in request.test_write_vectors.keys() {
            let n = u16::try_from(*number)
                .map(ShareNumber)
                .map_err(|_| ApiError::ShareNumberTooLarge { number: *number })?;
            shares.insert(*number, n);
        }
        // What the reads would return is counted first, from the shares' sizes: a request asking
        // for more than the limit is refused before anything is read.
        let limit = self.config.limits.rtw_read_bytes;
        let mut asked = 0u64;
        let mut sizes = BTreeMap::new();
        for n in &existing {
            let size = self.backend.mutable_size(&si, *n).await.map_err(fail)?.unwrap_or(0);
            for (offset, len) in &request.read_vector {
                asked = asked.saturating_add((*len).min(size.saturating_sub(*offset)));
            }
            sizes.insert(*n, size);
        }
        if asked > limit {
            return Err(ApiError::ReadVectorTooLarge { asked, limit });
        }
        // 3. Tests. A test passes when the bytes at its range are its specimen; reading one byte
        // more than the specimen decides that, so a test's size costs nothing past its specimen.
        let mut success = true;
        'tests: for (number, tw) in &request.test_write_vectors {
            for t in &tw.test {
                let len = t.size.min(t.specimen.len() as u64 + 1);
                let got = self.backend.mutable_read(&si, shares[number], t.offset, len).await.map_err(fail)?;
                refuse_older(shares[number], t.offset, &got)?;
                if got != t.specimen {
                    success = false;
                    break 'tests;
                }
            }
        }
        // 4. Reads, before any write, of every existing share.
        let mut data = BTreeMap::new();
        for n in &existing {
            let mut reads = Vec::new();
            let share_size = sizes.get(n).copied().unwrap_or(0);
            for (offset, size) in &request.read_vector {
                let len = (*size).min(share_size.saturating_sub(*offset));
                let got = self.backend.mutable_read(&si, *n, *offset, len).await.map_err(fail)?;
                refuse_older(*n, *offset, &got)?;
                reads.push(got);
            }
            data.insert(u64::from(n.0), reads);
        }
        let answer = cbor(StatusCode::OK, &wire::read_test_write_response(success, &data));
        if !success {
            return Ok(answer);
        }
        // 5. Every check of the writes, before any of them.
        let plan = self.plan(&si, &existing, request, &shares).await?;
        if plan.is_empty() {
            return Ok(answer);
        }
        self.check_space(&plan).await?;
        let quotas = self.check_mutable_quota(caller, &si, &plan)?;
        // 6. Record, apply, clear: in a task that holds the slot until it ends.
        let mut outcomes = Vec::with_capacity(plan.len());
        let mut redo = Vec::with_capacity(plan.len());
        for p in plan {
            outcomes.push(p.outcome);
            redo.push(p.redo);
        }
        let job = Job {
            budget,
            si,
            record: RedoRecord { enabler_hash: marsh_accountant::hash(secrets.enabler), shares: redo },
            outcomes,
            account: caller.id,
            enabler: secrets.enabler.to_vec(),
            renew: secrets.renew.to_vec(),
            cancel: secrets.cancel.to_vec(),
            now: self.clock.now(),
            lease_limit: self.config.limits.leases_per_share,
            keep_raw_enabler: self.config.keep_write_enablers,
            quotas,
        };
        tokio::spawn(self.writer().commit(job, slot)).await.map_err(|e| task_failed("write", e))??;
        Ok(answer)
    }

    /// Refuse (401) a write enabler that does not match every share of `existing`.
    fn check_write_enabler(&self, si: &StorageIndex, existing: &[ShareNumber], enabler: &[u8]) -> Result<(), ApiError> {
        for n in existing {
            match offload::sqlite(|| self.accountant.check_write_enabler(si, *n, enabler))
                .map_err(ApiError::Accountant)?
            {
                Some(true) => {}
                Some(false) => return Err(ApiError::WrongWriteEnabler),
                None => {
                    tracing::error!(si = %si, shnum = n.0, "no write enabler recorded for an existing mutable share; refusing the write (run `marsh recover` if the node's cache was lost)");
                    return Err(ApiError::UnknownWriteEnabler);
                }
            }
        }
        Ok(())
    }

    /// The write-enabler check, before the request's body is read or its slot locked: a
    /// stranger's read-test-write on a slot that exists is refused at once, holding nothing.
    /// (Checked again under the lock, where it decides.)
    pub(crate) async fn precheck_write_enabler(&self, si: &StorageIndex, enabler: &[u8]) -> Result<(), ApiError> {
        let existing = self.backend.mutable_list(si).await.map_err(ApiError::backend("read-test-write"))?;
        self.check_write_enabler(si, &existing, enabler)
    }

    /// What each share becomes, with every size checked.
    async fn plan(
        &self,
        si: &StorageIndex,
        existing: &[ShareNumber],
        request: wire::ReadTestWriteRequest,
        shares: &BTreeMap<u64, ShareNumber>,
    ) -> Result<Vec<Planned>, ApiError> {
        let mut plan = Vec::new();
        for (number, tw) in request.test_write_vectors {
            let shnum = shares[&number];
            let exists = existing.contains(&shnum);
            let mut end = 0u64;
            for (offset, bytes) in &tw.write {
                let e = offset.checked_add(bytes.len() as u64).filter(|e| *e <= MAX_MUTABLE_SHARE_SIZE);
                let Some(e) = e else {
                    return Err(ApiError::PastLargestMutable);
                };
                end = end.max(e);
            }
            if tw.new_length == Some(0) {
                // Removing a share that does not exist changes nothing (and forgets nothing).
                if exists {
                    let redo = RedoShare { shnum, writes: Vec::new(), new_length: Some(0) };
                    plan.push(Planned { redo, outcome: MutableShareWrite::Removed { shnum }, current: 0 });
                }
                continue;
            }
            let current = if exists {
                self.backend.mutable_size(si, shnum).await.map_err(ApiError::backend("size"))?.unwrap_or(0)
            } else {
                0
            };
            let mut size = current.max(end);
            if let Some(limit) = tw.new_length {
                size = size.min(limit);
            }
            // A share grows only by bytes the request writes: space is held for a share's
            // whole length, so a byte far past the end would claim what it never sent.
            let hole = unwritten(current, size, &tw.write);
            if hole > MAX_UNWRITTEN {
                return Err(ApiError::LeavesHole { share: number, hole, limit: MAX_UNWRITTEN });
            }
            let writes = tw.write.into_iter().map(|(offset, data)| WriteVector { offset, data }).collect();
            plan.push(Planned {
                redo: RedoShare { shnum, writes, new_length: tw.new_length },
                outcome: MutableShareWrite::Written { shnum, size, created: !exists },
                current,
            });
        }
        Ok(plan)
    }

    /// Refuse (507) writes that need more space than the backend has, before anything is
    /// recorded: a recorded write must be able to complete.
    async fn check_space(&self, plan: &[Planned]) -> Result<(), ApiError> {
        let grows: u64 = plan
            .iter()
            .map(|p| match p.outcome {
                MutableShareWrite::Written { size, .. } => size.saturating_sub(p.current),
                MutableShareWrite::Removed { .. } => 0,
            })
            .fold(0, u64::saturating_add);
        let available = self.available().await;
        if grows > available {
            return Err(ApiError::NoSpace { needs: grows, available });
        }
        Ok(())
    }

    /// Refuse (507) a read-test-write that would grow mutable shares past the quota of the
    /// account holding them: the account that created each share, or the caller for new ones.
    /// The growth per account is checked again in the write's transaction (usage may move
    /// meanwhile: on PostgreSQL, on another node), which is what it returns.
    fn check_mutable_quota(
        &self,
        caller: &Caller,
        si: &StorageIndex,
        plan: &[Planned],
    ) -> Result<Vec<QuotaCheck>, ApiError> {
        // Growth per holding account, for holders with a quota.
        let mut growth: BTreeMap<i64, (String, u64, u64)> = BTreeMap::new();
        for p in plan {
            let MutableShareWrite::Written { shnum, size, .. } = p.outcome else { continue };
            let holder = offload::sqlite(|| self.accountant.holder(&ShareId::mutable(*si, shnum)))
                .map_err(ApiError::Accountant)?;
            let (id, name, quota) = match holder {
                Some(h) => (h.id, h.name, h.quota),
                None => (caller.id, caller.name.clone(), caller.attributes.quota),
            };
            let Some(quota) = quota else { continue };
            let entry = growth.entry(id.0).or_insert((name, quota, 0));
            entry.2 = entry.2.saturating_add(size.saturating_sub(p.current));
        }
        let mut checks = Vec::with_capacity(growth.len());
        for (id, (name, quota, grows)) in growth {
            let account = marsh_accountant::AccountId(id);
            let used = offload::sqlite(|| self.accountant.usage(account)).map_err(ApiError::Accountant)?;
            if grows > 0 && used.saturating_add(grows) > quota {
                return Err(ApiError::OverQuota { account: name, used, quota, adds: grows });
            }
            checks.push(QuotaCheck { account, quota, grows });
        }
        Ok(checks)
    }
}

/// The most bytes between a mutable share's old end and its new one that a read-test-write may
/// leave unwritten. A stock Tahoe-LAFS 1.20 client writes a share whole in one request and
/// leaves at most a few hundred bytes unwritten (the padding an MDMF share keeps between its
/// verification key and its data, 2167 bytes into the share, at most 2167 bytes for an empty
/// file); anything far past the end is refused, as it would claim space nobody wrote.
pub const MAX_UNWRITTEN: u64 = 4096;

/// Bytes of `current..size` that none of `writes` covers.
fn unwritten(current: u64, size: u64, writes: &[(u64, Vec<u8>)]) -> u64 {
    if size <= current {
        return 0;
    }
    let mut spans: Vec<(u64, u64)> = writes
        .iter()
        .filter_map(|(offset, data)| {
            let start = (*offset).max(current);
            let end = offset.saturating_add(data.len() as u64).min(size);
            (start < end).then_some((start, end))
        })
        .collect();
    spans.sort_unstable();
    let (mut covered, mut reach) = (0u64, current);
    for (start, end) in spans {
        let start = start.max(reach);
        if end > start {
            covered += end - start;
            reach = end;
        }
    }
    size - current - covered
}

/// The secrets a read-test-write carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RtwSecrets<'a> {
    pub(crate) enabler: &'a [u8],
    pub(crate) renew: &'a [u8],
    pub(crate) cancel: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;
    use marsh_conformance::reference::ReferenceBackend;

    fn si() -> StorageIndex {
        StorageIndex::from_bytes([4; 16])
    }

    /// A redo record that comes back with an accounting database restored from a backup is
    /// older than what the store holds since: it is dropped, not applied over newer content.
    #[tokio::test]
    async fn a_pending_write_older_than_the_store_is_not_applied_again() {
        use crate::{ManualClock, ServiceConfig};
        let backend = Arc::new(ReferenceBackend::default());
        let accountant = Arc::new(Accountant::in_memory().unwrap());
        let n = ShareNumber(0);
        let header = |seq: u64, rest: &[u8]| {
            let mut h = vec![1u8];
            h.extend(seq.to_be_bytes());
            h.extend(rest);
            h
        };
        let old = RedoRecord {
            enabler_hash: marsh_accountant::hash(b"we"),
            shares: vec![RedoShare {
                shnum: n,
                writes: vec![WriteVector { offset: 0, data: header(5, b"old") }],
                new_length: None,
            }],
        };
        let outcome = [MutableShareWrite::Written { shnum: n, size: 12, created: true }];
        accountant
            .begin_mutable_write(&MutableWrite {
                account: marsh_accountant::AccountId::ANONYMOUS,
                si: si(),
                redo: &redo::encode_redo(&old),
                shares: &outcome,
                enabler: b"we",
                keep_raw_enabler: false,
                renew: b"r",
                cancel: b"c",
                now: 1,
                lease_limit: 10,
                quotas: &[],
            })
            .unwrap();
        // Since then the client wrote version 7.
        let newer = header(7, b"new content");
        backend.mutable_write(&si(), n, &[WriteVector { offset: 0, data: newer.clone() }], None).await.unwrap();
        let service = StorageService::new(
            backend.clone(),
            accountant.clone(),
            Arc::new(ManualClock::new(5)),
            ServiceConfig::new("s", 0, "t"),
        )
        .unwrap();
        service.start_up().await.unwrap();
        assert_eq!(backend.mutable_read(&si(), n, 0, 100).await.unwrap(), newer, "version 7 stays");
        assert_eq!(accountant.pending_mutable_writes().unwrap(), vec![]);
        assert!(!service.pending.contains(&si()));
    }

    #[test]
    fn unwritten_bytes_count_only_what_no_write_covers_past_the_old_end() {
        let w = |offset: u64, len: usize| (offset, vec![0u8; len]);
        assert_eq!(unwritten(0, 10, &[w(0, 10)]), 0);
        assert_eq!(unwritten(0, 1 << 30, &[w((1 << 30) - 1, 1)]), (1 << 30) - 1, "one byte at the end");
        // An MDMF share as the 1.20 client writes it: blocks at 2167 first, then the header
        // pieces, out of order and overlapping, leaving the padding before the data.
        let mdmf = [w(2167, 1000), w(123, 1216), w(3167, 32), w(0, 41), w(41, 18), w(59, 64), w(1339, 687), w(0, 41)];
        assert_eq!(unwritten(0, 3199, &mdmf), 2167 - 2026);
        assert_eq!(unwritten(100, 200, &[w(0, 150)]), 50, "only past the old end counts");
        assert_eq!(unwritten(500, 200, &[w(0, 150)]), 0, "a share that does not grow");
        assert_eq!(unwritten(0, 10, &[w(u64::MAX - 1, 5)]), 10, "no overflow");
    }

    /// A write recorded by a process that died before applying it all is completed at start-up,
    /// enabler included, and the slot then serves its owner.
    #[tokio::test]
    async fn start_up_completes_a_recorded_write_and_puts_its_enabler_back() {
        use crate::{ManualClock, ServiceConfig};
        let backend = Arc::new(ReferenceBackend::default());
        let accountant = Arc::new(Accountant::in_memory().unwrap());
        let n = ShareNumber(2);
        let record = RedoRecord {
            enabler_hash: marsh_accountant::hash(b"we"),
            shares: vec![RedoShare {
                shnum: n,
                writes: vec![WriteVector { offset: 0, data: b"new content".to_vec() }],
                new_length: None,
            }],
        };
        let outcome = [MutableShareWrite::Written { shnum: n, size: 11, created: true }];
        accountant
            .begin_mutable_write(&MutableWrite {
                account: marsh_accountant::AccountId::ANONYMOUS,
                si: si(),
                redo: &redo::encode_redo(&record),
                shares: &outcome,
                enabler: b"we",
                keep_raw_enabler: false,
                renew: b"r",
                cancel: b"c",
                now: 1,
                lease_limit: 10,
                quotas: &[],
            })
            .unwrap();
        // The process died half way: a torn first write, and the enabler row lost with it.
        backend.mutable_write(&si(), n, &[WriteVector { offset: 0, data: b"new".to_vec() }], None).await.unwrap();
        accountant.forget_share(&ShareId::mutable(si(), n)).unwrap();
        let service = StorageService::new(
            backend.clone(),
            accountant.clone(),
            Arc::new(ManualClock::new(5)),
            ServiceConfig::new("s", 0, "t"),
        )
        .unwrap();
        assert!(service.pending.contains(&si()), "known before the first request");
        let report = service.start_up().await.unwrap();
        assert_eq!((report.writes_completed, report.left), (1, 0));
        assert_eq!(backend.mutable_read(&si(), n, 0, 100).await.unwrap(), b"new content");
        assert_eq!(accountant.check_write_enabler(&si(), n, b"we").unwrap(), Some(true));
        assert_eq!(accountant.pending_mutable_writes().unwrap(), vec![]);
        assert!(!service.pending.contains(&si()));
    }
}

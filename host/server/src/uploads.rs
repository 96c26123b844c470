//! Immutable uploads: the table of uploads in progress with the space reserved for them
//! ([`UploadTable`]), and the endpoints that use it: allocate, write (PATCH), abort, and the
//! idle-upload sweep.
//!
//! Each entry of the table holds one reservation of its allocated size, taken when the entry is
//! added and released exactly when it leaves (finished, aborted, idle, or its allocation failed
//! half-way), so promised space cannot leak. An allocation is added before the backend is told to
//! begin it, and locked until it is set up, so two racing allocations of one share cannot both
//! begin it and a write cannot reach the backend before the upload exists there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use http_body_util::BodyExt;
use marsh_accountant::{AccountId, AccountantError, Allocation, Caller};
use marsh_core::{BackendError, ShareId, ShareNumber, StorageIndex};
use tokio::sync::OwnedMutexGuard;

use crate::auth;
use crate::error::ApiError;
use crate::limits::MinRate;
use crate::offload;
use crate::ranges::{RangeSet, parse_content_range};
use crate::response::{Handled, cbor, empty};
use crate::routes::too_slow;
use crate::service::{Req, StorageService, UPLOAD_IDLE_TIMEOUT};
use crate::wire;

/// What an in-progress immutable upload keeps between requests, locked while one works on it.
#[derive(Debug)]
pub(crate) struct Upload {
    /// Its allocated size.
    pub(crate) size: u64,
    /// The byte ranges written so far.
    pub(crate) written: RangeSet,
    /// When it was last written to (or allocated).
    pub(crate) last_write: u64,
}

/// One in-progress immutable upload: its secret, which never changes and is checked without
/// waiting for whoever is writing, and its state behind a lock.
#[derive(Debug)]
pub(crate) struct UploadEntry {
    /// The upload secret that allocated it.
    pub(crate) secret: Vec<u8>,
    /// The rest, locked while a request works on it.
    pub(crate) state: Arc<tokio::sync::Mutex<Upload>>,
}

/// A share being uploaded.
pub(crate) type UploadKey = (StorageIndex, ShareNumber);
/// An upload.
pub(crate) type Entry = Arc<UploadEntry>;

/// What [`UploadTable::insert_locked`] did.
#[derive(Debug)]
pub(crate) enum Inserted {
    /// Added, with its space reserved; locked until the guard is dropped.
    New(Entry, OwnedMutexGuard<Upload>),
    /// Another upload of the share is in progress; nothing changed.
    Exists(Entry),
    /// Its size does not fit in the space left; nothing changed.
    NoSpace,
    /// As many uploads as the limits allow are open (in total, or for the account).
    TooMany,
}

/// How many uploads may be open at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenLimits {
    /// In total.
    pub(crate) total: usize,
    /// For one account.
    pub(crate) per_account: usize,
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    size: u64,
    account: AccountId,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<UploadKey, Slot>,
    reserved: u64,
    per_account: HashMap<AccountId, usize>,
}

/// The uploads in progress and the bytes reserved for them.
#[derive(Debug, Default)]
pub(crate) struct UploadTable(Mutex<Table>);

impl UploadTable {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upload of `key`, if one is in progress.
    pub(crate) fn get(&self, key: &UploadKey) -> Option<Entry> {
        self.table().entries.get(key).map(|s| s.entry.clone())
    }

    /// Whether `entry` is still the upload of `key` (not finished or aborted meanwhile).
    pub(crate) fn is_current(&self, key: &UploadKey, entry: &Entry) -> bool {
        self.table().entries.get(key).is_some_and(|s| Arc::ptr_eq(&s.entry, entry))
    }

    /// Add `upload` (allocated with `secret`) under `key` for `account` if no upload of it is
    /// in progress, the open uploads are within `limits`, and its size fits in `available`
    /// beside what is reserved already, reserving its size.
    pub(crate) fn insert_locked(
        &self,
        key: UploadKey,
        secret: &[u8],
        upload: Upload,
        account: AccountId,
        available: u64,
        limits: OpenLimits,
    ) -> Inserted {
        let mut table = self.table();
        if let Some(existing) = table.entries.get(&key) {
            return Inserted::Exists(existing.entry.clone());
        }
        let of_account = table.per_account.get(&account).copied().unwrap_or(0);
        if table.entries.len() >= limits.total || of_account >= limits.per_account {
            return Inserted::TooMany;
        }
        let size = upload.size;
        let Some(reserved) = table.reserved.checked_add(size).filter(|r| *r <= available) else {
            return Inserted::NoSpace;
        };
        let entry = Arc::new(UploadEntry { secret: secret.to_vec(), state: Arc::new(tokio::sync::Mutex::new(upload)) });
        let Ok(guard) = entry.state.clone().try_lock_owned() else {
            unreachable!("a mutex made just now is not locked");
        };
        table.reserved = reserved;
        *table.per_account.entry(account).or_default() += 1;
        table.entries.insert(key, Slot { entry: entry.clone(), size, account });
        Inserted::New(entry, guard)
    }

    /// Remove `entry` if it is still the upload of `key`, releasing its reservation; true if it
    /// was removed by this call.
    pub(crate) fn remove(&self, key: &UploadKey, entry: &Entry) -> bool {
        let mut table = self.table();
        match table.entries.get(key) {
            Some(slot) if Arc::ptr_eq(&slot.entry, entry) => {
                let (size, account) = (slot.size, slot.account);
                table.entries.remove(key);
                table.reserved -= size;
                if let Some(n) = table.per_account.get_mut(&account) {
                    *n -= 1;
                    if *n == 0 {
                        table.per_account.remove(&account);
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Bytes reserved for the uploads in progress.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> u64 {
        self.table().reserved
    }

    /// Uploads in progress and the bytes reserved for them.
    pub(crate) fn open(&self) -> (usize, u64) {
        let table = self.table();
        (table.entries.len(), table.reserved)
    }

    /// Uploads in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open().0
    }

    /// Uploads not written to for `idle_seconds` at `now`; one being written right now is not.
    pub(crate) fn idle(&self, now: u64, idle_seconds: u64) -> Vec<(UploadKey, Entry)> {
        let all: Vec<(UploadKey, Entry)> = self.table().entries.iter().map(|(k, s)| (*k, s.entry.clone())).collect();
        all.into_iter()
            .filter(|(_, entry)| {
                entry.state.try_lock().is_ok_and(|up| now.saturating_sub(up.last_write) >= idle_seconds)
            })
            .collect()
    }
}

/// An upload entered in the table and not yet set up (begun by the backend, recorded by the
/// accountant): if the allocation fails or its request goes away first, the entry and its
/// reservation leave the table (what the backend began is swept as a leftover).
struct SettingUp<'a> {
    table: &'a UploadTable,
    key: UploadKey,
    entry: Option<Entry>,
}

impl SettingUp<'_> {
    /// Set up: the entry stays.
    fn done(mut self) {
        self.entry = None;
    }
}

impl Drop for SettingUp<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.table.remove(&self.key, &entry);
        }
    }
}

/// Why an upload could not be closed.
#[derive(Debug)]
pub(crate) enum CloseError {
    /// The backend failed in the named operation.
    Backend(&'static str, BackendError),
    /// The accounting database failed.
    Accountant(AccountantError),
}

impl StorageService {
    pub(crate) async fn allocate(
        &self,
        caller: &Caller,
        si: StorageIndex,
        request: wire::AllocateRequest,
        renew: &[u8],
        cancel: &[u8],
        upload_secret: &[u8],
    ) -> Handled {
        // A share answered "already have" gets its lease under the lock lease expiry takes: a
        // delete decided before the lease cannot follow the answer.
        let _index = self.slot(si).await?;
        let now = self.clock.now();
        let held = self.backend.list_shares(&si).await.map_err(ApiError::backend("list"))?;
        // A share that carries the most lease records, none of them the caller's, is not
        // answered "already have": the server could not keep it for this client, which then
        // places it elsewhere (it is not allocated either: it exists).
        let mut have = Vec::with_capacity(held.len());
        for n in &held {
            let share = ShareId::immutable(si, *n);
            if self.lease(caller, &share, renew, cancel, now)? {
                have.push(u64::from(n.0));
            } else {
                tracing::debug!(%share, "not answered already-have: the share carries the most lease records");
            }
        }
        let available = self.available().await;
        // Read-only takes nothing new, not even the zero-sized shares any free space would fit.
        let readonly = self.capacity().readonly;
        let limits = &self.config.limits;
        let open_limits = OpenLimits { total: limits.open_uploads, per_account: limits.open_uploads_per_account };
        let mut too_many = 0u64;
        // Over quota looks like a full server to the client: the shares are not allocated.
        let mut quota_left = match caller.attributes.quota {
            Some(quota) => quota.saturating_sub(offload::sqlite(|| self.accountant.usage(caller.id))?),
            None => u64::MAX,
        };
        let mut allocated = Vec::new();
        let mut requested = request.share_numbers.clone();
        requested.sort_unstable();
        requested.dedup();
        for number in requested {
            let Ok(n) = u16::try_from(number).map(ShareNumber) else {
                return Err(ApiError::ShareNumberTooLarge { number });
            };
            if held.contains(&n) {
                continue;
            }
            let existing = self.uploads.get(&(si, n));
            let upload = Upload { size: request.allocated_size, written: RangeSet::default(), last_write: now };
            let inserted = match existing {
                Some(existing) => Inserted::Exists(existing),
                None if readonly
                    || request.allocated_size > quota_left
                    || request.allocated_size > limits.max_share_size =>
                {
                    continue;
                }
                None => self.uploads.insert_locked((si, n), upload_secret, upload, caller.id, available, open_limits),
            };
            let (setting_up, _locked) = match inserted {
                Inserted::New(entry, guard) => {
                    (SettingUp { table: &self.uploads, key: (si, n), entry: Some(entry) }, guard)
                }
                Inserted::Exists(existing) => {
                    // Spec behaviour for a retry with the same secret; another secret's upload
                    // is never disturbed. The secret is compared without waiting for a write
                    // in progress: this request holds the storage index's lock.
                    if auth::same(&existing.secret, upload_secret) {
                        allocated.push(number);
                    }
                    continue;
                }
                Inserted::NoSpace => continue,
                Inserted::TooMany => {
                    too_many += 1;
                    continue;
                }
            };
            self.backend.begin(&si, n, request.allocated_size).await.map_err(ApiError::backend("begin"))?;
            // Lease, holder and the open upload in one transaction; nothing stays if it fails.
            let share = ShareId::immutable(si, n);
            let size = request.allocated_size;
            // The quota is checked again in the allocation's transaction: usage read above may
            // have moved since (another request, or on PostgreSQL another node of the fleet).
            let allocation = Allocation { account: caller.id, share: &share, size, renew, cancel, now };
            match offload::sqlite(|| self.accountant.allocate_within(&allocation, caller.attributes.quota)) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = self.backend.abort(&si, n).await;
                    quota_left = 0;
                    continue;
                }
                Err(e) => {
                    let _ = self.backend.abort(&si, n).await;
                    return Err(ApiError::Accountant(e));
                }
            }
            setting_up.done();
            quota_left -= request.allocated_size;
            allocated.push(number);
        }
        if too_many > 0 {
            // Once per request, not per share: a hostile client must not be able to flood the log.
            tracing::info!(account = %caller.name, "{too_many} shares not allocated: too many uploads open");
        }
        Ok(cbor(StatusCode::OK, &wire::allocate_response(&have, &allocated)))
    }

    pub(crate) async fn write(&self, si: StorageIndex, n: ShareNumber, secret: &[u8], req: Req) -> Handled {
        let range =
            req.headers().get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range);
        let Some((start, end)) = range else {
            return Err(ApiError::BadContentRange);
        };
        let upload = self.uploads.get(&(si, n)).ok_or(ApiError::NoSuchUpload)?;
        // Checked before waiting for the upload: a stranger's request never queues behind its
        // writer.
        if !auth::same(&upload.secret, secret) {
            return Err(ApiError::WrongUploadSecret);
        }
        let mut up = upload.state.lock().await;
        if !self.uploads.is_current(&(si, n), &upload) {
            // Completed or aborted while this request waited for the lock.
            return Err(ApiError::NoSuchUpload);
        }
        if end > up.size {
            return Err(ApiError::PastAllocation { end, size: up.size });
        }
        let chunk = self.backend.max_chunk().clamp(64 * 1024, 4 << 20);
        let mut body = req.into_body();
        let mut offset = start;
        // Pieces of `chunk` bytes (the last shorter), each filled to its size before it is
        // handed over, so no buffer grows past its first allocation and the backend keeps it.
        let piece_for = |offset: u64| Vec::with_capacity(chunk.min((end - offset) as usize));
        let mut pending: Vec<u8> = piece_for(offset);
        let min_rate = self.config.limits.min_rate;
        let mut rate = MinRate::new(min_rate);
        loop {
            let frame = match rate.wait(body.frame()).await {
                None => return Err(too_slow(min_rate)),
                Some(None) => None,
                Some(Some(Err(e))) => return Err(ApiError::BodyUnreadable(e.to_string())),
                Some(Some(Ok(frame))) => frame.into_data().ok(),
            };
            let Some(mut data) = frame else { break };
            rate.moved(data.len());
            if offset + (pending.len() + data.len()) as u64 > end {
                return Err(ApiError::BodyLongerThanRange);
            }
            while !data.is_empty() {
                let take = (chunk - pending.len()).min(data.len());
                pending.extend_from_slice(&data.split_to(take));
                if pending.len() == chunk {
                    let written = offset + chunk as u64;
                    let piece = std::mem::replace(&mut pending, piece_for(written));
                    self.write_piece(&si, n, &mut up, offset, piece).await?;
                    offset = written;
                }
            }
        }
        if !pending.is_empty() {
            // Short of its capacity only when the body ended early (refused below once
            // written): the backend may keep the buffer, so it holds no more than its bytes.
            pending.shrink_to_fit();
            let written = offset + pending.len() as u64;
            self.write_piece(&si, n, &mut up, offset, pending).await?;
            offset = written;
        }
        if offset != end {
            return Err(ApiError::BodyShorterThanRange);
        }
        up.last_write = self.clock.now();
        let missing = up.written.missing(up.size);
        if !missing.is_empty() {
            return Ok(cbor(StatusCode::OK, &wire::required(&missing)));
        }
        self.backend.finish(&si, n).await.map_err(ApiError::backend("finish"))?;
        self.uploads.remove(&(si, n), &upload);
        if let Err(e) = offload::sqlite(|| self.accountant.upload_finished(&ShareId::immutable(si, n))) {
            // The share is complete; the next start-up sees it so and clears the record.
            tracing::warn!(si = %si, shnum = n.0, "recording a finished upload: {e}");
        }
        Ok(cbor(StatusCode::CREATED, &wire::required(&[])))
    }

    /// Write one piece, refusing it (409) if it overlaps written bytes with different ones.
    async fn write_piece(
        &self,
        si: &StorageIndex,
        n: ShareNumber,
        up: &mut Upload,
        offset: u64,
        piece: Vec<u8>,
    ) -> Result<(), ApiError> {
        let end = offset + piece.len() as u64;
        for (a, b) in up.written.overlaps(offset, end) {
            let existing = self.backend.read_incoming(si, n, a, b - a).await.map_err(ApiError::backend("read"))?;
            if existing != piece[(a - offset) as usize..(b - offset) as usize] {
                return Err(ApiError::ConflictingWrite);
            }
        }
        // Handed over: a wasm 0.2.0 backend keeps the buffer itself as the payload.
        self.backend.write_owned(si, n, offset, piece).await.map_err(ApiError::backend("write"))?;
        up.written.insert(offset, end);
        Ok(())
    }

    pub(crate) async fn abort(&self, si: StorageIndex, n: ShareNumber, secret: &[u8]) -> Handled {
        let Some(upload) = self.uploads.get(&(si, n)) else {
            let complete = self.backend.size(&si, n).await.map_err(ApiError::backend("size"))?.is_some();
            return Err(if complete { ApiError::ShareComplete } else { ApiError::NoSuchUpload });
        };
        if !auth::same(&upload.secret, secret) {
            return Err(ApiError::WrongUploadSecret);
        }
        let up = upload.state.lock().await;
        // Still holding the upload: no write runs while it is discarded.
        self.drop_upload(&si, n, &upload).await?;
        drop(up);
        Ok(empty(StatusCode::OK))
    }

    async fn drop_upload(&self, si: &StorageIndex, n: ShareNumber, upload: &Entry) -> Result<(), ApiError> {
        if self.uploads.remove(&(*si, n), upload) {
            self.close_upload(&ShareId::immutable(*si, n)).await.map_err(|e| match e {
                CloseError::Backend(op, error) => ApiError::Backend { op, error },
                CloseError::Accountant(e) => ApiError::Accountant(e),
            })?;
        }
        Ok(())
    }

    /// End an upload that will not be written to any more: a share that did finish (a request
    /// dropped after the backend's `finish`, or a process that died right after it) keeps its
    /// lease and holder; an unfinished one is discarded and forgotten. True if it was discarded.
    pub(crate) async fn close_upload(&self, share: &ShareId) -> Result<bool, CloseError> {
        let (si, n) = (&share.si, share.shnum);
        if self.backend.size(si, n).await.map_err(|e| CloseError::Backend("size", e))?.is_some() {
            offload::sqlite(|| self.accountant.upload_finished(share)).map_err(CloseError::Accountant)?;
            return Ok(false);
        }
        self.backend.abort(si, n).await.map_err(|e| CloseError::Backend("abort", e))?;
        offload::sqlite(|| self.accountant.forget_share(share)).map_err(CloseError::Accountant)?;
        Ok(true)
    }

    /// Abort uploads with no write for [`UPLOAD_IDLE_TIMEOUT`]; returns how many.
    pub async fn abort_idle_uploads(&self) -> usize {
        let mut aborted = 0;
        for ((si, n), upload) in self.uploads.idle(self.clock.now(), UPLOAD_IDLE_TIMEOUT.as_secs()) {
            if self.drop_upload(&si, n, &upload).await.is_ok() {
                tracing::info!(si = %si, shnum = n.0, "aborted an upload idle for 30 minutes");
                aborted += 1;
            }
        }
        aborted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    const UNLIMITED: OpenLimits = OpenLimits { total: usize::MAX, per_account: usize::MAX };

    fn key(i: u8) -> UploadKey {
        (StorageIndex::from_bytes([i; 16]), ShareNumber(0))
    }

    fn upload(size: u64, now: u64) -> Upload {
        Upload { size, written: RangeSet::default(), last_write: now }
    }

    fn new(inserted: Inserted) -> (Entry, OwnedMutexGuard<Upload>) {
        match inserted {
            Inserted::New(e, g) => (e, g),
            other => panic!("expected a new entry, got {other:?}"),
        }
    }

    #[test]
    fn each_entry_reserves_its_size_until_it_leaves_once() {
        let table = UploadTable::default();
        let (a, guard) =
            new(table.insert_locked(key(1), b"secret", upload(100, 0), AccountId::ANONYMOUS, 1000, UNLIMITED));
        drop(guard);
        assert_eq!((table.reserved(), table.len()), (100, 1));
        // A second allocation of the same share changes nothing, whoever asks.
        assert!(
            matches!(table.insert_locked(key(1), b"secret", upload(500, 0), AccountId::ANONYMOUS, 1000, UNLIMITED), Inserted::Exists(e) if Arc::ptr_eq(&e, &a))
        );
        assert_eq!(table.reserved(), 100);
        let (b, _guard) =
            new(table.insert_locked(key(2), b"secret", upload(300, 0), AccountId::ANONYMOUS, 1000, UNLIMITED));
        assert_eq!(table.reserved(), 400);
        assert!(table.remove(&key(1), &a));
        assert!(!table.remove(&key(1), &a), "released once");
        assert_eq!(table.reserved(), 300);
        // A stale handle (the share was allocated again since) removes nothing.
        let (c, _guard) =
            new(table.insert_locked(key(1), b"secret", upload(50, 0), AccountId::ANONYMOUS, 1000, UNLIMITED));
        assert!(!table.remove(&key(1), &a) && table.is_current(&key(1), &c));
        assert_eq!(table.reserved(), 350);
        assert!(table.remove(&key(2), &b) && table.remove(&key(1), &c));
        assert_eq!((table.reserved(), table.len()), (0, 0));
    }

    #[test]
    fn an_allocation_that_does_not_fit_beside_the_reserved_space_is_refused() {
        let table = UploadTable::default();
        let _a = new(table.insert_locked(key(1), b"secret", upload(600, 0), AccountId::ANONYMOUS, 1000, UNLIMITED));
        assert!(matches!(
            table.insert_locked(key(2), b"secret", upload(401, 0), AccountId::ANONYMOUS, 1000, UNLIMITED),
            Inserted::NoSpace
        ));
        let _b = new(table.insert_locked(key(2), b"secret", upload(400, 0), AccountId::ANONYMOUS, 1000, UNLIMITED));
        assert!(
            matches!(
                table.insert_locked(key(3), b"secret", upload(0, 0), AccountId::ANONYMOUS, 999, UNLIMITED),
                Inserted::NoSpace
            ),
            "nothing fits past full"
        );
        assert!(matches!(
            table.insert_locked(key(4), b"secret", upload(u64::MAX, 0), AccountId::ANONYMOUS, u64::MAX, UNLIMITED),
            Inserted::NoSpace
        ));
        assert_eq!(table.reserved(), 1000);
    }

    #[test]
    fn open_uploads_are_capped_in_total_and_per_account_and_freed_as_they_leave() {
        let table = UploadTable::default();
        let limits = OpenLimits { total: 3, per_account: 2 };
        let (alice, bob) = (AccountId(1), AccountId(2));
        let (a1, _g) = new(table.insert_locked(key(1), b"secret", upload(0, 0), alice, 100, limits));
        let _a2 = new(table.insert_locked(key(2), b"secret", upload(0, 0), alice, 100, limits));
        assert!(matches!(table.insert_locked(key(3), b"secret", upload(0, 0), alice, 100, limits), Inserted::TooMany));
        let _b1 = new(table.insert_locked(key(3), b"secret", upload(0, 0), bob, 100, limits));
        assert!(
            matches!(table.insert_locked(key(4), b"secret", upload(0, 0), bob, 100, limits), Inserted::TooMany),
            "total"
        );
        assert!(table.remove(&key(1), &a1));
        let _a3 = new(table.insert_locked(key(4), b"secret", upload(0, 0), alice, 100, limits));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_new_entry_stays_locked_until_it_is_set_up() {
        let table = UploadTable::default();
        let (_, guard) =
            new(table.insert_locked(key(1), b"secret", upload(10, 0), AccountId::ANONYMOUS, 100, UNLIMITED));
        let found = table.get(&key(1)).expect("listed at once");
        assert!(found.state.try_lock().is_err(), "a writer waits until the allocation is done");
        drop(guard);
        assert!(found.state.try_lock().is_ok());
    }

    #[test]
    fn uploads_idle_for_the_timeout_are_found_by_the_manual_clock() {
        let clock = ManualClock::new(1_000);
        let table = UploadTable::default();
        let timeout = UPLOAD_IDLE_TIMEOUT.as_secs();
        let (quiet, guard) =
            new(table.insert_locked(key(1), b"secret", upload(10, clock.now()), AccountId::ANONYMOUS, 100, UNLIMITED));
        drop(guard);
        let (_busy, busy_guard) =
            new(table.insert_locked(key(2), b"secret", upload(10, clock.now()), AccountId::ANONYMOUS, 100, UNLIMITED));
        clock.advance(timeout - 1);
        assert!(table.idle(clock.now(), timeout).is_empty());
        clock.advance(1);
        let idle = table.idle(clock.now(), timeout);
        assert_eq!(idle.len(), 1, "the one being worked on right now is not idle");
        assert!(idle[0].0 == key(1) && Arc::ptr_eq(&idle[0].1, &quiet));
        // A write moves it back.
        quiet.state.try_lock().expect("free").last_write = clock.now();
        assert!(table.idle(clock.now(), timeout).is_empty());
        drop(busy_guard);
    }
}

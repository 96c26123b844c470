//! Mutable read-test-write, all or nothing across every share it names.
//!
//! Under the slot's lock, every check runs before any byte is written: the write enabler
//! against every existing share, share numbers, the test vectors, the sizes, the writer's
//! quota. Then the accountant records, in one transaction, a redo record of the writes with
//! every share's enabler (new shares), holder, size and lease (or its removal). Only then does
//! the backend apply the writes, possibly in several calls; once they are all applied the redo
//! record is cleared.
//!
//! A slot whose redo record is still there (the node died, the backend failed, or the client
//! went away and the handler was dropped mid-apply) is settled before anything else reads or
//! writes it: the writes are applied again (applying the same writes and truncation twice
//! gives the same bytes) and the record cleared. The node also settles every slot at start-up.
//! So a share always reads as its old content (nothing was recorded) or its new one, and a
//! share never exists without its write enabler.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ciborium::value::Value;
use http::StatusCode;
use marsh_accountant::{Caller, MutableShareWrite, MutableWrite};
use marsh_core::{Backend, BackendError, ShareId, ShareNumber, StorageIndex, WriteVector};

use crate::response::{ApiError, Handled, cbor};
use crate::service::{MAX_MUTABLE_SHARE_SIZE, StorageService};
use crate::wire;

/// Async locks by storage index, dropped when nobody holds them.
#[derive(Debug, Default)]
pub(crate) struct SlotLocks {
    locks: Arc<Mutex<HashMap<StorageIndex, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A held slot lock; released (and forgotten when nobody else waits) on drop, whichever way
/// the holder ends, a dropped request included.
pub(crate) struct SlotGuard {
    si: StorageIndex,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    locks: Arc<Mutex<HashMap<StorageIndex, Arc<tokio::sync::Mutex<()>>>>>,
}

impl SlotLocks {
    pub(crate) async fn lock(&self, si: StorageIndex) -> SlotGuard {
        let lock = self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(si).or_default().clone();
        let guard = lock.lock_owned().await;
        SlotGuard { si, guard: Some(guard), locks: self.locks.clone() }
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

/// One share's writes as the redo record keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedoShare {
    shnum: ShareNumber,
    writes: Vec<WriteVector>,
    /// `Some(0)` removes the share.
    new_length: Option<u64>,
}

/// The redo record: `[1, [[shnum, new-length or null, [[offset, data], ...]], ...]]`.
pub(crate) fn encode_redo(shares: &[RedoShare]) -> Vec<u8> {
    let int = |n: u64| Value::Integer(n.into());
    let shares = shares
        .iter()
        .map(|s| {
            let writes =
                s.writes.iter().map(|w| Value::Array(vec![int(w.offset), Value::Bytes(w.data.clone())])).collect();
            Value::Array(vec![int(u64::from(s.shnum.0)), s.new_length.map_or(Value::Null, int), Value::Array(writes)])
        })
        .collect();
    wire::encode(&Value::Array(vec![int(1), Value::Array(shares)]))
}

/// Read a redo record back.
pub(crate) fn decode_redo(bytes: &[u8]) -> Result<Vec<RedoShare>, String> {
    let value: Value = ciborium::de::from_reader(bytes).map_err(|e| format!("not CBOR: {e}"))?;
    let num = |v: &Value| v.as_integer().and_then(|i| u64::try_from(i).ok()).ok_or("expected a number");
    let Value::Array(top) = value else { return Err("not an array".into()) };
    let [version, Value::Array(shares)] = top.as_slice() else { return Err("not a redo record".into()) };
    if num(version)? != 1 {
        return Err("unknown redo record version".into());
    }
    shares
        .iter()
        .map(|s| {
            let Value::Array(s) = s else { return Err("share: not an array".into()) };
            let [n, len, Value::Array(writes)] = s.as_slice() else { return Err("share: bad shape".into()) };
            let shnum = u16::try_from(num(n)?).map(ShareNumber).map_err(|_| "share number")?;
            let new_length = if len.is_null() { None } else { Some(num(len)?) };
            let writes = writes
                .iter()
                .map(|w| match w {
                    Value::Array(w) => match w.as_slice() {
                        [o, Value::Bytes(d)] => Ok(WriteVector { offset: num(o)?, data: d.clone() }),
                        _ => Err("write: bad shape".to_string()),
                    },
                    _ => Err("write: not an array".to_string()),
                })
                .collect::<Result<_, _>>()?;
            Ok(RedoShare { shnum, writes, new_length })
        })
        .collect()
}

/// Apply a redo record's writes (again): idempotent.
async fn apply(backend: &dyn Backend, si: &StorageIndex, shares: &[RedoShare]) -> Result<(), BackendError> {
    for s in shares {
        if s.new_length == Some(0) {
            backend.mutable_delete(si, s.shnum).await?;
        } else {
            backend.mutable_write(si, s.shnum, &s.writes, s.new_length).await?;
        }
    }
    Ok(())
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

/// One share of a read-test-write, as planned before anything is written.
struct Planned {
    redo: RedoShare,
    outcome: MutableShareWrite,
    /// Its size before the write.
    current: u64,
}

impl StorageService {
    /// Apply the writes recorded for `si` if a redo record is still there. The caller holds the
    /// slot's lock.
    pub(crate) async fn settle(&self, si: &StorageIndex) -> Result<(), ApiError> {
        if !self.pending.contains(si) {
            return Ok(());
        }
        let record = self.accountant.pending_mutable_write(si).map_err(ApiError::accountant)?;
        if let Some(record) = record {
            let shares = decode_redo(&record).map_err(|e| {
                tracing::error!(si = %si, "a pending mutable write does not read back: {e}; the slot stays closed");
                ApiError::unavailable("an earlier write to this slot cannot be completed")
            })?;
            apply(&*self.backend, si, &shares).await.map_err(|e| {
                tracing::warn!(si = %si, "completing an earlier write failed: {e}");
                ApiError::unavailable("an earlier write to this slot is not complete yet")
            })?;
            self.accountant.end_mutable_write(si).map_err(ApiError::accountant)?;
            tracing::info!(si = %si, "completed an interrupted mutable write");
        }
        self.pending.set().remove(si);
        Ok(())
    }

    /// Settle `si` before a read, when it has a redo record.
    pub(crate) async fn settle_for_read(&self, si: &StorageIndex) -> Result<(), ApiError> {
        if self.pending.contains(si) {
            let _slot = self.slot_locks.lock(*si).await;
            self.settle(si).await?;
        }
        Ok(())
    }

    pub(crate) async fn read_test_write(
        &self,
        caller: &Caller,
        si: StorageIndex,
        request: wire::ReadTestWriteRequest,
        secrets: RtwSecrets<'_>,
    ) -> Handled {
        let _slot = self.slot_locks.lock(si).await;
        self.settle(&si).await?;
        let fail = |e| ApiError::backend("read-test-write", e);
        let existing = self.backend.mutable_list(&si).await.map_err(fail)?;
        // 1. The write enabler must match every existing share.
        for n in &existing {
            match self.accountant.check_write_enabler(&si, *n, secrets.enabler).map_err(ApiError::accountant)? {
                Some(true) => {}
                Some(false) => return Err(ApiError::text(StatusCode::UNAUTHORIZED, "wrong write enabler")),
                None => {
                    tracing::error!(si = %si, shnum = n.0, "no write enabler recorded for an existing mutable share; refusing the write (run `marsh recover` if the node's cache was lost)");
                    return Err(ApiError::text(StatusCode::UNAUTHORIZED, "write enabler unknown to this server"));
                }
            }
        }
        let mut shares: BTreeMap<u64, ShareNumber> = BTreeMap::new();
        for number in request.test_write_vectors.keys() {
            let n = u16::try_from(*number)
                .map(ShareNumber)
                .map_err(|_| ApiError::text(StatusCode::BAD_REQUEST, "share number too large"))?;
            shares.insert(*number, n);
        }
        // 2. Tests.
        let mut success = true;
        'tests: for (number, tw) in &request.test_write_vectors {
            for t in &tw.test {
                let got = self.backend.mutable_read(&si, shares[number], t.offset, t.size).await.map_err(fail)?;
                if got != t.specimen {
                    success = false;
                    break 'tests;
                }
            }
        }
        // 3. Reads, before any write, of every existing share.
        let mut data = BTreeMap::new();
        for n in &existing {
            let mut reads = Vec::new();
            for (offset, size) in &request.read_vector {
                reads.push(self.backend.mutable_read(&si, *n, *offset, *size).await.map_err(fail)?);
            }
            data.insert(u64::from(n.0), reads);
        }
        let answer = cbor(StatusCode::OK, &wire::read_test_write_response(success, &data));
        if !success {
            return Ok(answer);
        }
        // 4. Every check of the writes, before any of them.
        let plan = self.plan(&si, &existing, request, &shares).await?;
        if plan.is_empty() {
            return Ok(answer);
        }
        self.check_mutable_quota(caller, &si, &plan)?;
        // 5. Record, then apply, then clear.
        let redo: Vec<RedoShare> = plan.iter().map(|p| p.redo.clone()).collect();
        let outcomes: Vec<MutableShareWrite> = plan.iter().map(|p| p.outcome).collect();
        let record = encode_redo(&redo);
        self.accountant
            .begin_mutable_write(&MutableWrite {
                account: caller.id,
                si,
                redo: &record,
                shares: &outcomes,
                enabler: secrets.enabler,
                renew: secrets.renew,
                cancel: secrets.cancel,
                now: self.clock.now(),
            })
            .map_err(ApiError::accountant)?;
        self.pending.set().insert(si);
        if let Err(e) = apply(&*self.backend, &si, &redo).await {
            // One more try (a fresh plugin instance after a fault); the record stays otherwise,
            // and the slot is completed before anything else touches it.
            tracing::warn!(si = %si, "applying a mutable write failed: {e}; trying once more");
            apply(&*self.backend, &si, &redo).await.map_err(fail)?;
        }
        self.accountant.end_mutable_write(&si).map_err(ApiError::accountant)?;
        self.pending.set().remove(&si);
        Ok(answer)
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
                    return Err(ApiError::text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "write past the largest mutable share size",
                    ));
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
                self.backend.mutable_size(si, shnum).await.map_err(|e| ApiError::backend("size", e))?.unwrap_or(0)
            } else {
                0
            };
            let mut size = current.max(end);
            if let Some(limit) = tw.new_length {
                size = size.min(limit);
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

    /// Refuse (507) a read-test-write that would grow mutable shares past the quota of the
    /// account holding them: the account that created each share, or the caller for new ones.
    fn check_mutable_quota(&self, caller: &Caller, si: &StorageIndex, plan: &[Planned]) -> Result<(), ApiError> {
        // Growth per holding account, for holders with a quota.
        let mut growth: BTreeMap<i64, (String, u64, u64)> = BTreeMap::new();
        for p in plan {
            let MutableShareWrite::Written { shnum, size, .. } = p.outcome else { continue };
            let holder = self.accountant.holder(&ShareId::mutable(*si, shnum)).map_err(ApiError::accountant)?;
            let (id, name, quota) = match holder {
                Some(h) => (h.id, h.name, h.quota),
                None => (caller.id, caller.name.clone(), caller.attributes.quota),
            };
            let Some(quota) = quota else { continue };
            let entry = growth.entry(id.0).or_insert((name, quota, 0));
            entry.2 = entry.2.saturating_add(size.saturating_sub(p.current));
        }
        for (id, (name, quota, grows)) in growth {
            let used = self.accountant.usage(marsh_accountant::AccountId(id)).map_err(ApiError::accountant)?;
            if grows > 0 && used.saturating_add(grows) > quota {
                return Err(ApiError::text(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!(
                        "account `{name}` would go over its quota ({used} of {quota} bytes used; this write adds {grows})"
                    ),
                ));
            }
        }
        Ok(())
    }
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

    #[test]
    fn a_redo_record_reads_back_and_junk_does_not() {
        let shares = vec![
            RedoShare {
                shnum: ShareNumber(3),
                writes: vec![WriteVector { offset: 5, data: b"abc".to_vec() }],
                new_length: None,
            },
            RedoShare { shnum: ShareNumber(9), writes: vec![], new_length: Some(0) },
        ];
        assert_eq!(decode_redo(&encode_redo(&shares)).unwrap(), shares);
        for junk in [&b""[..], b"\x80", &encode_redo(&shares)[..9]] {
            assert!(decode_redo(junk).is_err());
        }
    }

    /// Applying a record again over any partial application of it gives the same bytes.
    #[tokio::test]
    async fn applying_a_redo_record_twice_or_after_a_partial_apply_gives_the_new_content() {
        let backend = ReferenceBackend::default();
        let n = ShareNumber(0);
        let old = WriteVector { offset: 0, data: b"0123456789".to_vec() };
        backend.mutable_write(&si(), n, &[old], None).await.unwrap();
        let redo = vec![
            RedoShare {
                shnum: n,
                writes: vec![
                    WriteVector { offset: 2, data: b"AB".to_vec() },
                    WriteVector { offset: 14, data: b"Z".to_vec() },
                    WriteVector { offset: 3, data: b"C".to_vec() },
                ],
                new_length: Some(12),
            },
            RedoShare {
                shnum: ShareNumber(1),
                writes: vec![WriteVector { offset: 0, data: b"x".to_vec() }],
                new_length: None,
            },
        ];
        // A partial application: the first write only.
        backend.mutable_write(&si(), n, &redo[0].writes[..1], None).await.unwrap();
        apply(&backend, &si(), &redo).await.unwrap();
        let once = backend.mutable_read(&si(), n, 0, 100).await.unwrap();
        assert_eq!(once, b"01AC456789\0\0");
        apply(&backend, &si(), &redo).await.unwrap();
        assert_eq!(backend.mutable_read(&si(), n, 0, 100).await.unwrap(), once);
        assert_eq!(backend.mutable_read(&si(), ShareNumber(1), 0, 9).await.unwrap(), b"x");
    }
}

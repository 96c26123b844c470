//! The imports `marsh:plugin@0.2.0` adds: host-held `payload`s, and `batches.get-many`.
//!
//! A payload is share bytes kept in host memory under a guest handle, so a backend moves them
//! between a request, a store and an answer without copying them into its linear memory and
//! out again. Host memory is not under the instance's memory cap, so the [`Ledger`] bounds
//! what the payloads of one instance hold: at most [`MAX_PAYLOADS`] alive, and their bytes at
//! most [`PAYLOAD_CALLS`] times the per-call byte bound. Past either, creating one fails with
//! `too-large`.
//!
//! `get-many` is for small objects: it reads up to [`MAX_KEYS`] whole objects with at most
//! [`IN_FLIGHT`] reads at a time, each of at most an [`IN_FLIGHT`]th of the per-call bound (128
//! KiB by default; a larger object answers `too-large` in its place, for the plugin to `get`
//! alone), and fails the call with `too-large` when the answers together pass the bound. So
//! what the host holds for one call, in flight or answered, stays within about twice the bound.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use wasmtime::component::{Resource, ResourceTableError};

use crate::generated::marsh::plugin::blobs::PutMode;
use crate::generated::marsh::plugin::types::BlobError;
use crate::generated::v0_2::marsh::plugin0_2_0::{batches, payloads};
use crate::host::{HostState, StoreHandle, UploadHandle, blob_error, key, mode};

/// Payloads one instance may hold at once.
pub(crate) const MAX_PAYLOADS: usize = 256;
/// The bytes all payloads of one instance may hold, in multiples of the per-call byte bound.
pub(crate) const PAYLOAD_CALLS: u64 = 4;
/// Keys one `get-many` call may ask for.
pub(crate) const MAX_KEYS: usize = 1000;
/// Reads one `get-many` call runs at a time.
pub(crate) const IN_FLIGHT: usize = 32;

/// Bytes held by the host for a guest, as a guest resource.
#[derive(Debug)]
pub struct PayloadHandle {
    bytes: Vec<u8>,
}

/// What the payloads of one instance hold.
#[derive(Debug)]
pub(crate) struct Ledger {
    count: usize,
    bytes: u64,
    max_bytes: u64,
}

impl Ledger {
    pub(crate) fn new(max_call_bytes: u64) -> Self {
        Ledger { count: 0, bytes: 0, max_bytes: max_call_bytes.saturating_mul(PAYLOAD_CALLS) }
    }

    fn admit(&mut self, len: u64) -> Result<(), BlobError> {
        if self.count >= MAX_PAYLOADS || self.bytes.saturating_add(len) > self.max_bytes {
            return Err(BlobError::TooLarge(len));
        }
        self.count += 1;
        self.bytes += len;
        Ok(())
    }

    fn release(&mut self, len: u64) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
    }
}

impl HostState {
    /// Hand `bytes` to the guest as a payload, if the ledger has room.
    pub(crate) fn new_payload(&mut self, bytes: Vec<u8>) -> Result<Resource<PayloadHandle>, BlobError> {
        let len = bytes.len() as u64;
        self.payloads.admit(len)?;
        self.table.push(PayloadHandle { bytes }).map_err(|e| {
            self.payloads.release(len);
            BlobError::Io(format!("resource table: {e}"))
        })
    }

    /// Take back the bytes of a payload the guest gave up (an argument or an answer).
    pub(crate) fn take_payload(&mut self, handle: Resource<PayloadHandle>) -> Result<Vec<u8>, BlobError> {
        self.remove_payload(handle).map_err(|e| BlobError::Io(format!("bad payload handle: {e}")))
    }

    /// Remove a payload from the table and the ledger.
    fn remove_payload(&mut self, handle: Resource<PayloadHandle>) -> Result<Vec<u8>, ResourceTableError> {
        let payload = self.table.delete(handle)?;
        self.payloads.release(payload.bytes.len() as u64);
        Ok(payload.bytes)
    }
}

impl payloads::Host for HostState {
    async fn create(&mut self, data: Vec<u8>) -> Result<Resource<PayloadHandle>, BlobError> {
        self.check_len(data.len() as u64)?;
        self.new_payload(data)
    }

    async fn get_range(
        &mut self,
        store: Resource<StoreHandle>,
        k: String,
        offset: u64,
        len: u64,
    ) -> Result<Option<Resource<PayloadHandle>>, BlobError> {
        let (store, k) = (self.store(&store)?, key(&k)?);
        self.check_len(len)?;
        match store.get_range(&k, offset, len).await.map_err(blob_error)? {
            Some(bytes) => self.new_payload(bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn put(
        &mut self,
        store: Resource<StoreHandle>,
        k: String,
        data: Resource<PayloadHandle>,
        m: PutMode,
    ) -> Result<(), BlobError> {
        let bytes = self.take_payload(data)?;
        let (store, k) = (self.store(&store)?, key(&k)?);
        store.put(&k, bytes, mode(m)).await.map_err(blob_error)
    }

    async fn write_at(
        &mut self,
        store: Resource<StoreHandle>,
        k: String,
        offset: u64,
        data: Resource<PayloadHandle>,
    ) -> Result<(), BlobError> {
        let bytes = self.take_payload(data)?;
        let (store, k) = (self.store(&store)?, key(&k)?);
        store.write_at(&k, offset, bytes).await.map_err(blob_error)
    }

    async fn append(&mut self, upload: Resource<UploadHandle>, data: Resource<PayloadHandle>) -> Result<(), BlobError> {
        let bytes = self.take_payload(data)?;
        self.open_upload(&upload)?.append(bytes).await.map_err(blob_error)
    }
}

impl payloads::HostPayload for HostState {
    async fn len(&mut self, handle: Resource<PayloadHandle>) -> u64 {
        self.table.get(&handle).map_or(0, |p| p.bytes.len() as u64)
    }

    async fn read(&mut self, handle: Resource<PayloadHandle>, offset: u64, len: u64) -> Vec<u8> {
        let Ok(payload) = self.table.get(&handle) else { return Vec::new() };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(payload.bytes.len());
        let len = usize::try_from(len.min(self.max_call_bytes)).unwrap_or(usize::MAX);
        let end = start.saturating_add(len).min(payload.bytes.len());
        payload.bytes[start..end].to_vec()
    }

    async fn drop(&mut self, handle: Resource<PayloadHandle>) -> wasmtime::Result<()> {
        self.remove_payload(handle)?;
        Ok(())
    }
}

impl batches::Host for HostState {
    async fn get_many(
        &mut self,
        store: Resource<StoreHandle>,
        keys: Vec<String>,
    ) -> Result<Vec<Result<Option<Vec<u8>>, BlobError>>, BlobError> {
        let store = self.store(&store)?;
        if keys.len() > MAX_KEYS {
            return Err(BlobError::TooLarge(keys.len() as u64));
        }
        let keys = keys.iter().map(|k| key(k)).collect::<Result<Vec<_>, _>>()?;
        let budget = self.max_call_bytes;
        let per_object = budget / IN_FLIGHT as u64;
        let used = AtomicU64::new(0);
        let used = &used;
        let answers: Vec<_> = futures::stream::iter(keys)
            .map(|k| {
                let store = store.clone();
                async move {
                    // Read at most one byte more than an object may be, or than the call has
                    // left: an object that does not fit is refused without being read whole.
                    let left = budget.saturating_sub(used.load(Ordering::Relaxed));
                    let limit = per_object.min(left);
                    match store.get_range(&k, 0, limit.saturating_add(1)).await.map_err(blob_error)? {
                        Some(bytes) if bytes.len() as u64 > per_object => Err(BlobError::TooLarge(bytes.len() as u64)),
                        Some(bytes) => {
                            used.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            Ok(Some(bytes))
                        }
                        None => Ok(None),
                    }
                }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        let total = used.load(Ordering::Relaxed);
        if total > budget {
            return Err(BlobError::TooLarge(total));
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use marsh_seal::SealKey;
    use marsh_stores::{BlobKey, BlobStore, MemoryStore, PutMode as HostPutMode};

    use super::*;
    use crate::generated::marsh::plugin::blobs;
    use crate::grants::Grants;

    /// An instance state with one granted memory store, `shares`, and a 1 KiB per-call bound.
    async fn state() -> (HostState, Arc<MemoryStore>, u32) {
        let store = Arc::new(MemoryStore::new("shares"));
        let grants = Grants::new(SealKey::from_bytes([7; 32])).store("shares", store.clone());
        let mut s = HostState::new("test".into(), grants, 1024, 64 << 20);
        let rep = blobs::Host::open(&mut s, "shares".into()).await.unwrap().rep();
        (s, store, rep)
    }

    #[tokio::test]
    async fn payloads_move_between_stores_and_are_consumed() {
        let (mut s, store, rep) = state().await;
        let p = payloads::Host::create(&mut s, b"hello".to_vec()).await.unwrap();
        assert_eq!(payloads::HostPayload::len(&mut s, Resource::new_borrow(p.rep())).await, 5);
        payloads::Host::put(&mut s, Resource::new_borrow(rep), "a".into(), p, PutMode::CreateOnly).await.unwrap();
        assert_eq!(s.payloads.count, 0, "put consumed the payload");
        let got =
            payloads::Host::get_range(&mut s, Resource::new_borrow(rep), "a".into(), 1, 3).await.unwrap().unwrap();
        assert_eq!(payloads::HostPayload::read(&mut s, Resource::new_borrow(got.rep()), 0, 100).await, b"ell");
        let past_end = payloads::HostPayload::read(&mut s, Resource::new_borrow(got.rep()), u64::MAX, u64::MAX).await;
        assert_eq!(past_end, b"", "past the end: nothing, no panic");
        let tail = payloads::HostPayload::read(&mut s, Resource::new_borrow(got.rep()), 2, u64::MAX).await;
        assert_eq!(tail, b"l", "any length is clamped to what is there");
        payloads::Host::write_at(&mut s, Resource::new_borrow(rep), "b".into(), 2, got).await.unwrap();
        assert_eq!(store.get(&BlobKey::new("b").unwrap()).await.unwrap().unwrap(), b"\0\0ell");
        assert_eq!((s.payloads.count, s.payloads.bytes), (0, 0));
        let absent = payloads::Host::get_range(&mut s, Resource::new_borrow(rep), "none".into(), 0, 1).await;
        assert!(matches!(absent, Ok(None)));
        // A range past the per-call bound is refused before anything is read.
        let big = payloads::Host::get_range(&mut s, Resource::new_borrow(rep), "a".into(), 0, 1025).await;
        assert!(matches!(big, Err(BlobError::TooLarge(1025))));
    }

    #[tokio::test]
    async fn the_payloads_of_an_instance_are_bounded_in_bytes_and_number() {
        let (mut s, _, _) = state().await;
        // Four times the per-call bound in all.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(payloads::Host::create(&mut s, vec![1; 1024]).await.unwrap());
        }
        let refused = payloads::Host::create(&mut s, vec![1; 1]).await;
        assert!(matches!(refused, Err(BlobError::TooLarge(1))), "{refused:?}");
        // One payload past the per-call bound is refused however much room is left.
        let (mut roomy, _, _) = state().await;
        assert!(matches!(payloads::Host::create(&mut roomy, vec![1; 1025]).await, Err(BlobError::TooLarge(1025))));
        // Dropping one makes room again.
        let first = held.remove(0);
        payloads::HostPayload::drop(&mut s, first).await.unwrap();
        held.push(payloads::Host::create(&mut s, vec![1; 1024]).await.unwrap());
        // And the number of payloads is bounded even when they are empty.
        let (mut s, _, _) = state().await;
        for _ in 0..MAX_PAYLOADS {
            payloads::Host::create(&mut s, Vec::new()).await.unwrap();
        }
        assert!(payloads::Host::create(&mut s, Vec::new()).await.is_err());
        assert!(s.new_payload(Vec::new()).is_err(), "the host's own payloads count too");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_many_answers_in_order_within_the_call_budget() {
        let (mut s, store, rep) = state().await;
        for i in 0..40u8 {
            store
                .put(&BlobKey::new(&format!("r/{i:02}")).unwrap(), vec![i; 20], HostPutMode::CreateOnly)
                .await
                .unwrap();
        }
        let mut keys: Vec<String> = (0..40).map(|i| format!("r/{i:02}")).collect();
        keys.insert(3, "r/absent".into());
        let answers = batches::Host::get_many(&mut s, Resource::new_borrow(rep), keys).await.unwrap();
        assert_eq!(answers.len(), 41);
        assert!(matches!(answers[3], Ok(None)), "an absent key answers none, in its place");
        for (i, a) in answers.iter().filter(|a| !matches!(a, Ok(None))).enumerate() {
            assert_eq!(a.as_ref().unwrap().as_deref(), Some(&[i as u8; 20][..]), "answer {i} in order");
        }
        // 60 objects of 20 bytes exceed a 1 KiB call: refused as a whole, nothing half-answered.
        for i in 40..60u8 {
            store
                .put(&BlobKey::new(&format!("r/{i:02}")).unwrap(), vec![i; 20], HostPutMode::CreateOnly)
                .await
                .unwrap();
        }
        let keys: Vec<String> = (0..60).map(|i| format!("r/{i:02}")).collect();
        let err = batches::Host::get_many(&mut s, Resource::new_borrow(rep), keys).await.unwrap_err();
        assert!(matches!(err, BlobError::TooLarge(n) if n > 1024), "{err:?}");
        // An object past an IN_FLIGHT-th of the bound (32 bytes here) answers too-large in its
        // place, read no further than one byte past that; the others are answered.
        store.put(&BlobKey::new("big").unwrap(), vec![9; 40], HostPutMode::CreateOnly).await.unwrap();
        let keys = vec!["r/00".to_owned(), "big".to_owned(), "r/01".to_owned()];
        let answers = batches::Host::get_many(&mut s, Resource::new_borrow(rep), keys).await.unwrap();
        assert!(matches!(answers[1], Err(BlobError::TooLarge(33))), "{:?}", answers[1]);
        assert_eq!(answers[2].as_ref().unwrap().as_deref(), Some(&[1u8; 20][..]));
        // Too many keys, and a bad key, are refused before anything is read.
        let many = vec!["r/00".to_owned(); MAX_KEYS + 1];
        assert!(matches!(
            batches::Host::get_many(&mut s, Resource::new_borrow(rep), many).await,
            Err(BlobError::TooLarge(_))
        ));
        let bad = vec!["r/00".to_owned(), "../escape".to_owned()];
        assert!(matches!(
            batches::Host::get_many(&mut s, Resource::new_borrow(rep), bad).await,
            Err(BlobError::BadKey(_))
        ));
    }
}

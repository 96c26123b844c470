//! The host side of the imports a plugin sees: `host` (log, progress, now), `seal`, `blobs`,
//! `state` and (for persistence strategies) `accountant`, implemented over what the operator
//! granted the plugin (`grants.rs`: its stores, its sealing key, the node's accounting
//! database), on one instance's [`HostState`] under its memory cap (`limiter.rs`).
//!
//! Every argument from the guest is hostile input: keys are validated into [`BlobKey`]s,
//! sizes and lengths are checked against the per-call byte bound before anything is read or
//! buffered, and listing limits are clamped. Errors go back to the guest as typed WIT values;
//! nothing here traps the guest.
//!
//! One file past 500 lines on purpose: each import is a short `impl` of one generated trait on
//! the same `HostState`, and reading them side by side is how the grants are checked to be
//! enforced the same way everywhere.

use std::sync::Arc;

use marsh_seal::{SealError as HostSealError, SealKey};
use marsh_stores::{BlobKey, BlobStore, BlobUpload, PutMode as HostPutMode, StoreError};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::World;
use crate::generated::marsh::plugin::{blobs, host, seal, types};
use crate::grants::{AccountingSink, Grants};
use crate::limiter::MemoryCap;

/// The largest snapshot a strategy may hand back.
const MAX_RESTORE_BYTES: u64 = 1 << 30;

/// An open store, as a guest resource.
pub struct StoreHandle {
    store: Arc<dyn BlobStore>,
}

/// A streamed upload, as a guest resource.
pub struct UploadHandle {
    upload: Option<Box<dyn BlobUpload>>,
}

/// A snapshot a strategy reads in pieces, as a guest resource.
pub struct SnapshotHandle {
    sequence: u64,
    bytes: Vec<u8>,
}

/// A snapshot a recovering strategy hands back in pieces, as a guest resource.
pub struct RestoreHandle {
    bytes: Vec<u8>,
}

/// Streamed uploads one instance may hold open at once: each may buffer a part in the host
/// (8 MiB on S3), outside the instance's memory cap.
pub(crate) const MAX_UPLOADS: usize = 8;

/// Host resources one instance may hold at once, of every kind together (store handles, WASI
/// streams and pollables, uploads, payloads, snapshots): each lives in host memory, outside
/// the instance's memory cap, and wasmtime's own bound is a million. The kinds with their own
/// lower bounds (uploads, payloads, snapshots) fit many times over.
pub(crate) const MAX_HANDLES: usize = 4096;

/// The state of one plugin instance's store.
pub(crate) struct HostState {
    pub(crate) plugin: Arc<str>,
    pub(crate) grants: Grants,
    pub(crate) max_call_bytes: u64,
    pub(crate) memory: MemoryCap,
    pub(crate) stderr: MemoryOutputPipe,
    /// A `recover` call is running: `accountant.begin-restore` and `restore.finish` are allowed.
    pub(crate) recovering: bool,
    /// Epoch ticks left before the running call is interrupted; the guest yields to the
    /// executor at every tick until then (see [`HostState::arm`]).
    pub(crate) ticks_left: u64,
    /// Upload resources alive in this instance (at most [`MAX_UPLOADS`]).
    uploads: usize,
    /// Snapshot and restore resources alive in this instance (at most one of each: each holds
    /// a whole database in host memory, outside the instance's memory cap).
    snapshots: usize,
    restores: usize,
    /// Payload resources alive in this instance, and their bytes (bounded: see `payloads.rs`).
    pub(crate) payloads: crate::payloads::Ledger,
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
}

/// Guest stderr kept per instance, for panic messages.
const STDERR_CAPACITY: usize = 64 * 1024;

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, grants: Grants, max_call_bytes: u64, memory_cap: usize) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // No preopens, environment, arguments, stdin or network: the guest's std links
        // against wasi:cli and wasi:io, and gets nothing through them but a stderr pipe.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        HostState {
            plugin,
            grants,
            max_call_bytes,
            memory: MemoryCap { cap: memory_cap, used: 0, refused: None },
            ticks_left: 0,
            uploads: 0,
            stderr,
            recovering: false,
            snapshots: 0,
            restores: 0,
            payloads: crate::payloads::Ledger::new(max_call_bytes),
            wasi,
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_HANDLES);
                table
            },
        }
    }

    /// A store for one instance of `plugin`: memory cap, and a guest that yields to the
    /// executor at every epoch tick and is interrupted when its call's deadline has passed.
    pub(crate) fn new_store(
        engine: &wasmtime::Engine,
        plugin: Arc<str>,
        grants: Grants,
        limits: &crate::PluginLimits,
    ) -> wasmtime::Store<HostState> {
        let state = HostState::new(plugin, grants, limits.max_call_bytes, limits.memory_bytes);
        let mut store = wasmtime::Store::new(engine, state);
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if state.ticks_left <= 1 {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            state.ticks_left -= 1;
            // A guest that computes for a whole tick gives its worker thread back, so a
            // spinning call delays other requests by at most one tick, never by its deadline.
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
        HostState::arm(&mut store, limits.call_deadline);
        store
    }

    /// Give the next call on `store` `deadline` of wall-clock time (in epoch ticks).
    pub(crate) fn arm(store: &mut wasmtime::Store<HostState>, deadline: std::time::Duration) {
        store.data_mut().ticks_left = crate::deadline_ticks(deadline);
        store.set_epoch_deadline(1);
    }

    /// What the guest wrote to stderr, trimmed, for fault messages.
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().chars().take(2000).collect()
    }

    pub(crate) fn store(&self, handle: &Resource<StoreHandle>) -> Result<Arc<dyn BlobStore>, types::BlobError> {
        self.table
            .get(handle)
            .map(|h| h.store.clone())
            .map_err(|e| types::BlobError::Io(format!("bad store handle: {e}")))
    }

    /// The upload behind a guest handle, while it is open.
    pub(crate) fn open_upload(
        &mut self,
        h: &Resource<UploadHandle>,
    ) -> Result<&mut Box<dyn BlobUpload>, types::BlobError> {
        let handle = self.table.get_mut(h).map_err(|e| types::BlobError::Io(format!("bad upload handle: {e}")))?;
        handle.upload.as_mut().ok_or_else(|| types::BlobError::Io("upload already finished".into()))
    }

    pub(crate) fn check_len(&self, len: u64) -> Result<(), types::BlobError> {
        if len > self.max_call_bytes { Err(types::BlobError::TooLarge(len)) } else { Ok(()) }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

pub(crate) fn key(k: &str) -> Result<BlobKey, types::BlobError> {
    BlobKey::new(k).map_err(blob_error)
}

pub(crate) fn blob_error(e: StoreError) -> types::BlobError {
    match e {
        StoreError::NotFound => types::BlobError::NotFound,
        StoreError::Exists => types::BlobError::Exists,
        StoreError::BadKey(m) => types::BlobError::BadKey(m),
        StoreError::TooLarge(n) => types::BlobError::TooLarge(n),
        StoreError::Unsupported(m) => types::BlobError::Unsupported(m),
        StoreError::NoSpace => types::BlobError::NoSpace,
        StoreError::Denied(m) => types::BlobError::Denied(m),
        StoreError::Io(m) => types::BlobError::Io(m),
    }
}

pub(crate) fn mode(m: blobs::PutMode) -> HostPutMode {
    match m {
        blobs::PutMode::CreateOnly => HostPutMode::CreateOnly,
        blobs::PutMode::Overwrite => HostPutMode::Overwrite,
    }
}

impl types::Host for HostState {}

use crate::generated::persistence::marsh::plugin::accountant;

impl HostState {
    fn accounting(&self) -> Result<Arc<dyn AccountingSink>, String> {
        self.grants.accounting.clone().ok_or_else(|| "this plugin was not granted the accountant".to_owned())
    }
}

impl accountant::Host for HostState {
    async fn apply(&mut self, changes: Vec<Vec<u8>>) -> Result<(), String> {
        let sink = self.accounting()?;
        // Outside `recover` the database is the node's live state: a strategy only records it.
        if !self.recovering {
            return Err("changes can be applied only during `recover`".into());
        }
        let bytes: u64 = changes.iter().map(|c| c.len() as u64).sum();
        if bytes > self.max_call_bytes {
            return Err(format!("{bytes} bytes of changes in one call; at most {}", self.max_call_bytes));
        }
        tokio::task::block_in_place(|| sink.apply(changes))
    }

    async fn take_snapshot(&mut self) -> Result<Resource<SnapshotHandle>, String> {
        let sink = self.accounting()?;
        if self.snapshots > 0 {
            return Err("one snapshot at a time: drop the last one first".into());
        }
        let (sequence, bytes) = tokio::task::block_in_place(|| sink.snapshot())?;
        let handle = self.table.push(SnapshotHandle { sequence, bytes }).map_err(|e| format!("resource table: {e}"))?;
        self.snapshots += 1;
        Ok(handle)
    }

    async fn begin_restore(&mut self) -> Result<Resource<RestoreHandle>, String> {
        self.accounting()?;
        if !self.recovering {
            return Err("a snapshot can be restored only during `recover`".into());
        }
        if self.restores > 0 {
            return Err("one restore at a time: finish or drop the last one first".into());
        }
        let handle =
            self.table.push(RestoreHandle { bytes: Vec::new() }).map_err(|e| format!("resource table: {e}"))?;
        self.restores += 1;
        Ok(handle)
    }
}

impl accountant::HostSnapshot for HostState {
    async fn sequence(&mut self, h: Resource<SnapshotHandle>) -> u64 {
        self.table.get(&h).map_or(0, |s| s.sequence)
    }

    async fn size(&mut self, h: Resource<SnapshotHandle>) -> u64 {
        self.table.get(&h).map_or(0, |s| s.bytes.len() as u64)
    }

    async fn read(&mut self, h: Resource<SnapshotHandle>, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        if len > self.max_call_bytes {
            return Err(format!("{len} bytes in one read; at most {}", self.max_call_bytes));
        }
        let snapshot = self.table.get(&h).map_err(|e| format!("bad snapshot handle: {e}"))?;
        let size = snapshot.bytes.len() as u64;
        let (start, end) = (offset.min(size), offset.saturating_add(len).min(size));
        Ok(snapshot.bytes[start as usize..end as usize].to_vec())
    }

    async fn drop(&mut self, h: Resource<SnapshotHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        self.snapshots = self.snapshots.saturating_sub(1);
        Ok(())
    }
}

impl accountant::HostRestore for HostState {
    async fn append(&mut self, h: Resource<RestoreHandle>, data: Vec<u8>) -> Result<(), String> {
        if data.len() as u64 > self.max_call_bytes {
            return Err(format!("{} bytes in one call; at most {}", data.len(), self.max_call_bytes));
        }
        let restore = self.table.get_mut(&h).map_err(|e| format!("bad restore handle: {e}"))?;
        if (restore.bytes.len() + data.len()) as u64 > MAX_RESTORE_BYTES {
            return Err(format!("a snapshot larger than {MAX_RESTORE_BYTES} bytes"));
        }
        restore.bytes.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(&mut self, h: Resource<RestoreHandle>) -> Result<u64, String> {
        let restore = self.table.delete(h).map_err(|e| format!("bad restore handle: {e}"))?;
        self.restores = self.restores.saturating_sub(1);
        // A handle kept from a recovery must not replace the database of a serving node.
        if !self.recovering {
            return Err("a snapshot can be restored only during `recover`".into());
        }
        let sink = self.accounting()?;
        tokio::task::block_in_place(|| sink.restore(restore.bytes))
    }

    async fn drop(&mut self, h: Resource<RestoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        self.restores = self.restores.saturating_sub(1);
        Ok(())
    }
}

fn state_error(e: marsh_stores::state::StateError) -> types::BlobError {
    use marsh_stores::state::StateError as E;
    match e {
        E::BadName(_) => types::BlobError::BadKey(e.to_string()),
        E::TooLarge(n) => types::BlobError::TooLarge(n as u64),
        E::Tampered(_) => types::BlobError::Io(e.to_string()),
        E::Store { error, .. } => blob_error(error),
    }
}

impl HostState {
    fn state_store(&self) -> Result<marsh_stores::state::StateStore, types::BlobError> {
        let store = self.grants.state.clone().ok_or_else(|| {
            types::BlobError::Denied(format!("plugin `{}` was granted no store to keep state in", self.plugin))
        })?;
        marsh_stores::state::StateStore::plugin(store, self.grants.seal_key.clone(), &self.plugin).ok_or_else(|| {
            types::BlobError::Denied(format!("plugin name `{}` cannot name state (use a-z, 0-9, `-`)", self.plugin))
        })
    }
}

impl crate::generated::marsh::plugin::state::Host for HostState {
    async fn get(&mut self, name: String) -> Result<Option<Vec<u8>>, types::BlobError> {
        self.state_store()?.get(&name).await.map_err(state_error)
    }

    async fn put(&mut self, name: String, value: Vec<u8>) -> Result<(), types::BlobError> {
        self.state_store()?.put(&name, &value).await.map(|_| ()).map_err(state_error)
    }
}

impl host::Host for HostState {
    async fn log(&mut self, level: host::Level, message: String) {
        let message: String = message.chars().take(4096).collect();
        let plugin = &*self.plugin;
        match level {
            host::Level::Error => tracing::error!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Trace => tracing::trace!(plugin, "{message}"),
        }
    }

    async fn progress(&mut self, done: u64, total: Option<u64>, what: String) {
        if let Some(sink) = &self.grants.progress {
            sink(&self.plugin, done, total, &what.chars().take(200).collect::<String>());
        }
    }

    async fn now(&mut self) -> u64 {
        marsh_core::unix_now()
    }
}

/// Purposes the first-party plugins of each role sealed under before plugins had keys of
/// their own (node key, purpose `plugin:{purpose}`). Such blobs still unseal, for that role
/// only: a backend cannot read a strategy's old records, nor a strategy a backend's pointers.
/// New blobs are always sealed under the plugin's own key.
fn legacy_purpose(world: World, purpose: &str) -> bool {
    match world {
        World::Backend => ["s3-upload", "s3-manifest", "s3-slot"].contains(&purpose),
        World::Persistence => {
            purpose == "records-change"
                || ["stash-log:", "stash-manifest:", "stash-part:"].iter().any(|p| purpose.starts_with(p))
        }
    }
}

fn seal_error(e: HostSealError) -> seal::SealError {
    match e {
        HostSealError::UnknownVersion(v) => seal::SealError::UnknownVersion(v),
        HostSealError::Tampered | HostSealError::Truncated(_) | HostSealError::Random(_) => seal::SealError::Tampered,
    }
}

impl HostState {
    fn plugin_seal(&self) -> Result<&(World, SealKey), seal::SealError> {
        self.grants.plugin_seal.as_ref().ok_or(seal::SealError::Tampered)
    }
}

impl seal::Host for HostState {
    async fn seal(&mut self, purpose: String, plaintext: Vec<u8>) -> Result<Vec<u8>, seal::SealError> {
        if plaintext.len() as u64 > self.max_call_bytes {
            return Err(seal::SealError::TooLarge(plaintext.len() as u64));
        }
        self.plugin_seal()?.1.seal(&purpose, &plaintext).map_err(seal_error)
    }

    async fn unseal(&mut self, purpose: String, sealed: Vec<u8>) -> Result<Vec<u8>, seal::SealError> {
        let (world, key) = self.plugin_seal()?;
        match key.unseal(&purpose, &sealed) {
            Err(HostSealError::Tampered) if legacy_purpose(*world, &purpose) => {
                self.grants.seal_key.unseal(&format!("plugin:{purpose}"), &sealed).map_err(seal_error)
            }
            other => other.map_err(seal_error),
        }
    }
}

impl blobs::Host for HostState {
    async fn open(&mut self, name: String) -> Result<Resource<StoreHandle>, types::BlobError> {
        let Some(store) = self.grants.stores.get(&name).cloned() else {
            let granted: Vec<&str> = self.grants.stores.keys().map(String::as_str).collect();
            return Err(types::BlobError::Denied(format!(
                "store `{name}` is not granted to plugin `{}` (granted: {})",
                self.plugin,
                if granted.is_empty() { "none".to_owned() } else { granted.join(", ") }
            )));
        };
        self.table.push(StoreHandle { store }).map_err(|e| types::BlobError::Io(format!("resource table: {e}")))
    }
}

impl blobs::HostStore for HostState {
    async fn get(&mut self, h: Resource<StoreHandle>, k: String) -> Result<Option<Vec<u8>>, types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        // One ranged read of at most one byte more than a call may move: an oversized object is
        // refused without being read whole, and a remote store sees one request, not two.
        let limit = self.max_call_bytes;
        match store.get_range(&k, 0, limit.saturating_add(1)).await.map_err(blob_error)? {
            Some(data) if data.len() as u64 > limit => {
                let size = store.head(&k).await.map_err(blob_error)?.unwrap_or(data.len() as u64);
                Err(types::BlobError::TooLarge(size))
            }
            other => Ok(other),
        }
    }

    async fn get_range(
        &mut self,
        h: Resource<StoreHandle>,
        k: String,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        self.check_len(len)?;
        store.get_range(&k, offset, len).await.map_err(blob_error)
    }

    async fn head(&mut self, h: Resource<StoreHandle>, k: String) -> Result<Option<u64>, types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        store.head(&k).await.map_err(blob_error)
    }

    async fn put(
        &mut self,
        h: Resource<StoreHandle>,
        k: String,
        data: Vec<u8>,
        m: blobs::PutMode,
    ) -> Result<(), types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        self.check_len(data.len() as u64)?;
        store.put(&k, data, mode(m)).await.map_err(blob_error)
    }

    async fn delete(&mut self, h: Resource<StoreHandle>, k: String) -> Result<bool, types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        store.delete(&k).await.map_err(blob_error)
    }

    async fn list_keys(
        &mut self,
        h: Resource<StoreHandle>,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<blobs::Page, types::BlobError> {
        let store = self.store(&h)?;
        let page = store.list(&prefix, start_after.as_deref(), limit as usize).await.map_err(blob_error)?;
        Ok(blobs::Page { keys: page.keys, next: page.next })
    }

    async fn begin_upload(
        &mut self,
        h: Resource<StoreHandle>,
        k: String,
        m: blobs::PutMode,
    ) -> Result<Resource<UploadHandle>, types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        if self.uploads >= MAX_UPLOADS {
            return Err(types::BlobError::Unsupported(format!(
                "{MAX_UPLOADS} uploads are open in this instance: finish or drop one first"
            )));
        }
        let upload = store.begin_upload(&k, mode(m)).await.map_err(blob_error)?;
        let handle = self
            .table
            .push(UploadHandle { upload: Some(upload) })
            .map_err(|e| types::BlobError::Io(format!("resource table: {e}")))?;
        self.uploads += 1;
        Ok(handle)
    }

    async fn capabilities(&mut self, h: Resource<StoreHandle>) -> blobs::Capabilities {
        let random_access = self.table.get(&h).is_ok_and(|s| s.store.random_access());
        blobs::Capabilities { random_access }
    }

    async fn available(&mut self, h: Resource<StoreHandle>) -> Result<Option<u64>, types::BlobError> {
        self.store(&h)?.available().await.map_err(blob_error)
    }

    async fn write_at(
        &mut self,
        h: Resource<StoreHandle>,
        k: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        self.check_len(data.len() as u64)?;
        store.write_at(&k, offset, data).await.map_err(blob_error)
    }

    async fn set_len(&mut self, h: Resource<StoreHandle>, k: String, len: u64) -> Result<(), types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        store.set_len(&k, len).await.map_err(blob_error)
    }

    async fn sync(&mut self, h: Resource<StoreHandle>, k: String) -> Result<(), types::BlobError> {
        let (store, k) = (self.store(&h)?, key(&k)?);
        store.sync(&k).await.map_err(blob_error)
    }

    async fn rename(
        &mut self,
        h: Resource<StoreHandle>,
        from: String,
        to: String,
        m: blobs::PutMode,
    ) -> Result<(), types::BlobError> {
        let (store, from, to) = (self.store(&h)?, key(&from)?, key(&to)?);
        store.rename(&from, &to, mode(m)).await.map_err(blob_error)
    }

    async fn drop(&mut self, h: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl blobs::HostUpload for HostState {
    async fn append(&mut self, h: Resource<UploadHandle>, data: Vec<u8>) -> Result<(), types::BlobError> {
        self.check_len(data.len() as u64)?;
        self.open_upload(&h)?.append(data).await.map_err(blob_error)
    }

    async fn finish(&mut self, h: Resource<UploadHandle>) -> Result<(), types::BlobError> {
        let handle = self.table.delete(h).map_err(|e| types::BlobError::Io(format!("bad upload handle: {e}")))?;
        self.uploads = self.uploads.saturating_sub(1);
        match handle.upload {
            Some(upload) => upload.finish().await.map_err(blob_error),
            None => Err(types::BlobError::Io("upload already finished".into())),
        }
    }

    async fn drop(&mut self, h: Resource<UploadHandle>) -> wasmtime::Result<()> {
        let handle = self.table.delete(h)?;
        self.uploads = self.uploads.saturating_sub(1);
        if let Some(upload) = handle.upload {
            upload.abort().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(world: Option<(World, &str)>) -> HostState {
        let mut grants = Grants::new(SealKey::from_bytes([7; 32]));
        if let Some((world, name)) = world {
            grants.bind(world, name);
        }
        HostState::new("test".into(), grants, 1 << 20, 64 << 20)
    }

    #[tokio::test]
    async fn each_plugin_seals_under_a_key_of_its_own() {
        let mut backend = state(Some((World::Backend, "backend-s3")));
        let mut other = state(Some((World::Backend, "backend-evil")));
        let mut strategy = state(Some((World::Persistence, "persistence-stash")));
        let sealed = seal::Host::seal(&mut backend, "s3-slot".into(), b"pointer".to_vec()).await.unwrap();
        assert_eq!(seal::Host::unseal(&mut backend, "s3-slot".into(), sealed.clone()).await.unwrap(), b"pointer");
        for (who, state) in [("another backend", &mut other), ("a strategy", &mut strategy)] {
            let err = seal::Host::unseal(state, "s3-slot".into(), sealed.clone()).await.expect_err(who);
            assert!(matches!(err, seal::SealError::Tampered), "{who}: {err:?}");
        }
        // Nor does the node's own key, under any purpose a plugin could name.
        let key = SealKey::from_bytes([7; 32]);
        assert!(key.unseal("plugin:s3-slot", &sealed).is_err());
        assert!(key.unseal("s3-slot", &sealed).is_err());
        // Before it said who it is, a plugin cannot seal at all.
        let mut anonymous = state(None);
        assert!(seal::Host::seal(&mut anonymous, "s3-slot".into(), b"x".to_vec()).await.is_err());
    }

    #[tokio::test]
    async fn blobs_sealed_before_plugin_keys_unseal_for_their_role_only() {
        let key = SealKey::from_bytes([7; 32]);
        let old_pointer = key.seal("plugin:s3-slot", b"old pointer").unwrap();
        let old_record = key.seal("plugin:records-change", b"old record").unwrap();
        let mut backend = state(Some((World::Backend, "backend-s3")));
        let mut strategy = state(Some((World::Persistence, "persistence-records")));
        assert_eq!(
            seal::Host::unseal(&mut backend, "s3-slot".into(), old_pointer.clone()).await.unwrap(),
            b"old pointer"
        );
        assert_eq!(
            seal::Host::unseal(&mut strategy, "records-change".into(), old_record.clone()).await.unwrap(),
            b"old record"
        );
        // A backend naming the strategy's legacy purpose gets nothing, and the reverse.
        assert!(seal::Host::unseal(&mut backend, "records-change".into(), old_record).await.is_err());
        assert!(seal::Host::unseal(&mut strategy, "s3-slot".into(), old_pointer).await.is_err());
        // The host's own purposes never unseal through a plugin.
        let host_blob = key.seal("accountant-snapshot", b"host").unwrap();
        assert!(seal::Host::unseal(&mut backend, "accountant-snapshot".into(), host_blob).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_instance_holds_at_most_eight_uploads_open() {
        let store = Arc::new(marsh_stores::MemoryStore::new("shares"));
        let mut s = HostState::new(
            "test".into(),
            Grants::new(SealKey::from_bytes([7; 32])).store("shares", store),
            1 << 20,
            64 << 20,
        );
        let rep = blobs::Host::open(&mut s, "shares".into()).await.unwrap().rep();
        let begin = async |s: &mut HostState, k: &str| {
            blobs::HostStore::begin_upload(s, Resource::new_borrow(rep), k.into(), blobs::PutMode::Overwrite).await
        };
        let mut open = Vec::new();
        for i in 0..MAX_UPLOADS {
            open.push(begin(&mut s, &format!("k{i}")).await.expect("within the limit"));
        }
        let err = begin(&mut s, "one-more").await.expect_err("past the limit");
        assert!(matches!(&err, types::BlobError::Unsupported(m) if m.contains("8 uploads are open")), "{err:?}");
        // Finishing one, or dropping one, gives its place back.
        blobs::HostUpload::finish(&mut s, open.remove(0)).await.unwrap();
        blobs::HostUpload::drop(&mut s, open.remove(0)).await.unwrap();
        begin(&mut s, "again").await.expect("a place was freed");
        begin(&mut s, "and-again").await.expect("a second place was freed");
        assert!(begin(&mut s, "full-again").await.is_err());
    }

    #[tokio::test]
    async fn an_instance_holds_a_bounded_number_of_handles() {
        let store = Arc::new(marsh_stores::MemoryStore::new("shares"));
        let mut s = HostState::new(
            "test".into(),
            Grants::new(SealKey::from_bytes([7; 32])).store("shares", store),
            1 << 20,
            64 << 20,
        );
        let mut handles = Vec::new();
        let err = loop {
            match blobs::Host::open(&mut s, "shares".into()).await {
                Ok(h) => handles.push(h),
                Err(e) => break e,
            }
            assert!(handles.len() <= MAX_HANDLES, "opened past the bound");
        };
        assert_eq!(handles.len(), MAX_HANDLES);
        assert!(matches!(&err, types::BlobError::Io(m) if m.contains("resource table")), "{err:?}");
        // Dropping one gives its place back.
        blobs::HostStore::drop(&mut s, handles.pop().unwrap()).await.unwrap();
        assert!(blobs::Host::open(&mut s, "shares".into()).await.is_ok());
    }

    /// Counts the changes applied to it.
    struct Applied(std::sync::Mutex<usize>);

    impl AccountingSink for Applied {
        fn apply(&self, changes: Vec<Vec<u8>>) -> Result<(), String> {
            *self.0.lock().unwrap() += changes.len();
            Ok(())
        }
        fn snapshot(&self) -> Result<(u64, Vec<u8>), String> {
            Err("unused".into())
        }
        fn restore(&self, _: Vec<u8>) -> Result<u64, String> {
            Err("unused".into())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn accounting_changes_apply_only_during_recover() {
        let sink = Arc::new(Applied(std::sync::Mutex::new(0)));
        let mut strategy = state(Some((World::Persistence, "persistence-stash")));
        strategy.grants.accounting = Some(sink.clone());
        let err = accountant::Host::apply(&mut strategy, vec![b"change".to_vec()]).await.expect_err("outside recover");
        assert!(err.contains("only during `recover`"), "{err}");
        assert_eq!(*sink.0.lock().unwrap(), 0, "nothing reached the database");
        strategy.recovering = true;
        accountant::Host::apply(&mut strategy, vec![b"change".to_vec()]).await.expect("inside recover");
        assert_eq!(*sink.0.lock().unwrap(), 1);
    }
}

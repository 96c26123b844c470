//! A backend plugin running under limits: [`WasmBackend`] implements
//! [`marsh_core::Backend`] over a pool of plugin instances.
//!
//! Each instance has its own `Store` (a trap poisons a whole store in wasmtime 48, so stores
//! are never shared). Instances are created from an `InstancePre`, initialised with the
//! operator's config, and reused across calls; a call checks one out, runs under a memory
//! cap and an epoch deadline, and returns it. On any failure of the call itself (trap,
//! deadline, memory cap, an answer larger than asked for) the instance is dropped, the
//! fault is logged and counted, the caller gets [`BackendError::Fault`], and the next call
//! gets a fresh instance. Errors the plugin returns as WIT values are ordinary results and
//! keep the instance.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use marsh_core::{Backend, BackendError, IndexPage, ShareNumber, StorageIndex, SweepReport, Usage, WriteVector};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

use crate::engine::{LoadedPlugin, Runtime};
use crate::generated::exports::marsh::plugin::shares as ex1;
use crate::generated::marsh::plugin::types;
use crate::generated::v0_2::exports::marsh::plugin0_2_0::shares as ex2;
use crate::generated::{Backend as Bindings1, BackendPre as Pre1, v0_2};
use crate::grants::Grants;
use crate::host::HostState;
use crate::inspect::World;
use crate::lifecycle::{self, Exports, Site};
use crate::{PluginLimits, StartError};

/// How often a plugin failed and was restarted.
#[derive(Debug, Default)]
pub struct FaultStats {
    calls: AtomicU64,
    faults: AtomicU64,
    instances: AtomicU64,
    memory_peak: AtomicU64,
    last: Mutex<Option<String>>,
}

impl FaultStats {
    /// Calls made into the plugin (after start-up), whatever their outcome.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls that ended in a fault (trap, deadline, memory cap, oversized answer).
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// Instances created so far (the first, plus one per replacement or extra concurrency).
    pub fn instances(&self) -> u64 {
        self.instances.load(Ordering::Relaxed)
    }

    /// The most memory one instance has held after a call, in bytes (all its linear memories
    /// and tables, as its memory cap counts them).
    pub fn memory_peak(&self) -> u64 {
        self.memory_peak.load(Ordering::Relaxed)
    }

    /// The last fault's message.
    pub fn last(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn note_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_instance(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_fault(&self, message: &str) {
        self.faults.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.to_owned());
    }
}

/// A backend's exports, in the ABI version it was built against.
enum Bindings {
    V1(Bindings1),
    V2(v0_2::Backend),
}

enum Pre {
    V1(Pre1<HostState>),
    V2(v0_2::BackendPre<HostState>),
}

impl Exports for Bindings {
    type Pre = Pre;

    async fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        match pre {
            Pre::V1(pre) => pre.instantiate_async(store).await.map(Bindings::V1),
            Pre::V2(pre) => pre.instantiate_async(store).await.map(Bindings::V2),
        }
    }

    async fn info(&self, store: &mut Store<HostState>) -> wasmtime::Result<types::PluginInfo> {
        match self {
            Bindings::V1(b) => b.marsh_plugin_shares().call_info(store).await,
            Bindings::V2(b) => b.marsh_plugin0_2_0_shares().call_info(store).await,
        }
    }

    async fn init(
        &self,
        store: &mut Store<HostState>,
        config: &[types::ConfigEntry],
    ) -> wasmtime::Result<Result<(), types::InitError>> {
        match self {
            Bindings::V1(b) => b.marsh_plugin_shares().call_init(store, config).await,
            Bindings::V2(b) => b.marsh_plugin0_2_0_shares().call_init(store, config).await,
        }
    }
}

type Instance = lifecycle::Instance<Bindings>;

/// An instance checked out of the pool, with the permit that bounds concurrency.
struct Lease {
    instance: Instance,
    _permit: OwnedSemaphorePermit,
}

/// A backend plugin, started and ready for calls.
pub struct WasmBackend {
    site: Site<Bindings>,
    idle: Mutex<Vec<Instance>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for WasmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmBackend")
            .field("name", &self.site.name)
            .field("limits", &self.site.limits)
            .finish_non_exhaustive()
    }
}

/// The values both ABI versions' `shares` exports define alike, mapped onto the host's.
macro_rules! lift_shares_types {
    ($ex:ident) => {
        impl From<$ex::BackendError> for BackendError {
            fn from(e: $ex::BackendError) -> Self {
                match e {
                    $ex::BackendError::NotFound => BackendError::NotFound,
                    $ex::BackendError::Exists => BackendError::Exists,
                    $ex::BackendError::OutOfRange(m) => BackendError::OutOfRange(m),
                    $ex::BackendError::NoSpace => BackendError::NoSpace,
                    $ex::BackendError::Corrupt(m) => BackendError::Corrupt(m),
                    $ex::BackendError::Io(m) => BackendError::Io(m),
                }
            }
        }
        impl From<$ex::IndexPage> for RawPage {
            fn from(p: $ex::IndexPage) -> Self {
                RawPage { indexes: p.indexes, next: p.next }
            }
        }
        impl From<$ex::SpaceUsage> for Usage {
            fn from(u: $ex::SpaceUsage) -> Self {
                Usage { available: u.available, used: u.used }
            }
        }
        impl From<(u64, &[u8])> for $ex::WriteVector {
            fn from((offset, data): (u64, &[u8])) -> Self {
                $ex::WriteVector { offset, data: data.to_vec() }
            }
        }
        impl From<$ex::SweepReport> for SweepReport {
            fn from(r: $ex::SweepReport) -> Self {
                SweepReport { examined: r.examined, removed: r.removed, removed_bytes: r.removed_bytes }
            }
        }
    };
}
lift_shares_types!(ex1);
lift_shares_types!(ex2);

/// A page of storage indexes as the plugin spelled them, not yet checked.
struct RawPage {
    indexes: Vec<String>,
    next: Option<String>,
}

/// One call's pieces of mutable writes, in the plugin's ABI version's type.
fn write_vectors<W: for<'a> From<(u64, &'a [u8])>>(batch: &[(u64, &[u8])]) -> Vec<W> {
    batch.iter().map(|&piece| W::from(piece)).collect()
}

/// An export's answer in the host's types.
fn lift<T, U: From<T>, E: Into<BackendError>>(r: Result<T, E>) -> Result<U, BackendError> {
    r.map(U::from).map_err(Into::into)
}

impl WasmBackend {
    /// Start a backend plugin: instantiate it once and run its `init` with `config`, so a bad
    /// config or a needed recovery is reported now, typed, rather than on the first call.
    pub async fn start(
        runtime: &Runtime,
        plugin: &LoadedPlugin,
        grants: Grants,
        config: Vec<(String, String)>,
        limits: PluginLimits,
    ) -> Result<WasmBackend, StartError> {
        plugin.expect_world(World::Backend)?;
        let instance_pre = runtime.linker.instantiate_pre(&plugin.component);
        // The version of the `shares` export decides how it is called (the imports may mix).
        let pre = match plugin.inspection.export.as_str() {
            "marsh:plugin/shares@0.1.0" => instance_pre.and_then(Pre1::new).map(Pre::V1),
            _ => instance_pre.and_then(v0_2::BackendPre::new).map(Pre::V2),
        }
        .map_err(|e| StartError::Link(format!("{e:#}")))?;
        let (site, first, info) = Site::start(runtime, pre, World::Backend, grants, config, limits).await?;
        let concurrency = match info.concurrency {
            types::Concurrency::Single => 1,
            types::Concurrency::Pooled => limits.max_instances.max(1),
        };
        Ok(WasmBackend { site, idle: Mutex::new(vec![first]), permits: Arc::new(Semaphore::new(concurrency)) })
    }

    /// The plugin's name, as it reported it.
    pub fn name(&self) -> &str {
        &self.site.name
    }

    /// Fault counters.
    pub fn stats(&self) -> Arc<FaultStats> {
        self.site.stats.clone()
    }

    fn idle_pool(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wall-clock bound of one call.
    fn backstop(&self) -> Duration {
        self.site.backstop(self.site.limits.call_deadline)
    }

    async fn checkout(&self) -> Result<Lease, BackendError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BackendError::Fault("plugin is shut down".into()))?;
        let pooled = self.idle_pool().pop();
        let mut instance = match pooled {
            Some(i) => i,
            None => self.site.replacement().await.map_err(BackendError::Fault)?,
        };
        HostState::arm(&mut instance.store, self.site.limits.call_deadline);
        Ok(Lease { instance, _permit: permit })
    }

    fn fault(&self, message: String) -> BackendError {
        BackendError::Fault(self.site.fault(message))
    }

    /// Finish a call: keep the instance if the call itself succeeded and its answer is within
    /// bounds (`oversize` says what is wrong otherwise), drop it in every other case.
    fn settle<T>(
        &self,
        op: &str,
        lease: Lease,
        outcome: Result<wasmtime::Result<Result<T, BackendError>>, tokio::time::error::Elapsed>,
        oversize: impl FnOnce(&T) -> Option<String>,
    ) -> Result<T, BackendError> {
        self.site.stats.note_call();
        match outcome {
            Ok(Ok(Ok(value))) => match oversize(&value) {
                Some(what) => Err(self.fault(format!("plugin `{}` answered `{op}` with {what}", self.site.name))),
                None => {
                    let used = lease.instance.store.data().memory.used as u64;
                    self.site.stats.memory_peak.fetch_max(used, Ordering::Relaxed);
                    self.idle_pool().push(lease.instance);
                    Ok(value)
                }
            },
            Ok(Ok(Err(e))) => {
                self.idle_pool().push(lease.instance);
                Err(e)
            }
            Ok(Err(trap)) => {
                Err(self.fault(self.site.describe_fault(op, self.site.limits.call_deadline, &lease.instance, &trap)))
            }
            Err(_) => Err(self.fault(format!(
                "plugin `{}` did not return from `{op}` within {:?} (stuck in a host call)",
                self.site.name,
                self.backstop()
            ))),
        }
    }
}

/// Run one export call on a checked-out instance, under the deadline and the backstop.
///
/// The short forms run the same call expression against either ABI version's exports (their
/// arguments are the same primitive types) and lift the answer with [`lift`]; the long form
/// gives one expression per version, for the calls whose signatures differ.
macro_rules! invoke {
    ($self:ident, $op:literal, |$exports:ident, $store:ident| $call:expr) => {
        invoke!($self, $op, |$exports, $store| $call, |_| None)
    };
    ($self:ident, $op:literal, |$exports:ident, $store:ident| $call:expr, $oversize:expr) => {
        invoke!($self, $op, $oversize, {
            V1($exports, $store) => $call.await.map(lift),
            V2($exports, $store) => $call.await.map(lift),
        })
    };
    ($self:ident, $op:literal, $oversize:expr, {
        V1($e1:ident, $s1:ident) => $call1:expr,
        V2($e2:ident, $s2:ident) => $call2:expr $(,)?
    }) => {{
        let mut lease = $self.checkout().await?;
        let outcome = {
            let Instance { store, bindings } = &mut lease.instance;
            let call = async {
                match bindings {
                    Bindings::V1(b) => {
                        let ($e1, $s1) = (b.marsh_plugin_shares(), &mut *store);
                        $call1
                    }
                    Bindings::V2(b) => {
                        let ($e2, $s2) = (b.marsh_plugin0_2_0_shares(), &mut *store);
                        $call2
                    }
                }
            };
            tokio::time::timeout($self.backstop(), call).await
        };
        $self.settle($op, lease, outcome, $oversize)
    }};
}

/// An oversize check: more than `max` items or bytes.
fn more_than<T>(max: u64, len: impl Fn(&T) -> usize) -> impl FnOnce(&T) -> Option<String> {
    move |v| {
        let n = len(v) as u64;
        (n > max).then(|| format!("{n} items or bytes, at most {max} allowed"))
    }
}

impl WasmBackend {
    /// Read `len` bytes from `offset` in calls of at most `max_call_bytes`, stopping at the
    /// end of the share.
    async fn read_in_calls(
        &self,
        mutable: bool,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let si = si.to_base32();
        let mut out = Vec::new();
        let (mut offset, mut remaining) = (offset, len);
        loop {
            let n = remaining.min(self.site.limits.max_call_bytes);
            let part = if mutable {
                invoke!(
                    self,
                    "mutable-read",
                    |e, s| e.call_mutable_read(s, &si, shnum.0, offset, n),
                    more_than(n, Vec::len)
                )?
            } else {
                invoke!(self, "read", more_than(n, Vec::len), {
                    V1(e, s) => e.call_read(s, &si, shnum.0, offset, n).await.map(lift),
                    // The answer is a payload: its bytes move out of the table, uncopied.
                    V2(e, s) => match e.call_read(&mut *s, &si, shnum.0, offset, n).await? {
                        Ok(payload) => s.data_mut().take_payload(payload).map(Ok).map_err(|e| wasmtime::Error::msg(format!("{e:?}"))),
                        Err(e) => Ok(Err(e.into())),
                    },
                })?
            };
            let got = part.len() as u64;
            if out.is_empty() {
                out = part;
            } else {
                out.extend_from_slice(&part);
            }
            remaining -= got;
            if got < n || remaining == 0 {
                return Ok(out);
            }
            offset += got;
        }
    }

    /// `write`, for 0.1.0 from the bytes where they are (the guest's copy is the ABI's), for
    /// 0.2.0 as a payload: bytes handed over are kept as they are, borrowed ones copied once.
    async fn write_bytes(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        data: Cow<'_, [u8]>,
    ) -> Result<(), BackendError> {
        check_chunk(self.site.limits.max_call_bytes, data.len())?;
        let si = si.to_base32();
        invoke!(self, "write", |_| None, {
            V1(e, s) => e.call_write(s, &si, shnum.0, offset, &data).await.map(lift),
            // The plugin hands the payload on without reading it. A plugin that keeps so many
            // payloads that the host cannot hand it another is faulty: the call fails as a
            // fault and the instance is replaced.
            V2(e, s) => match s.data_mut().new_payload(data.into_owned()) {
                Ok(payload) => e.call_write(s, &si, shnum.0, offset, payload).await.map(lift),
                Err(e) => Err(wasmtime::Error::msg(format!("the plugin holds too many payloads: {e:?}"))),
            },
        })
    }
}

fn check_chunk(limit: u64, len: usize) -> Result<(), BackendError> {
    if len as u64 > limit {
        Err(BackendError::OutOfRange(format!("{len} bytes in one call; the limit is {limit}")))
    } else {
        Ok(())
    }
}

#[async_trait]
impl Backend for WasmBackend {
    async fn begin(&self, si: &StorageIndex, shnum: ShareNumber, size: u64) -> Result<(), BackendError> {
        let si = si.to_base32();
        invoke!(self, "begin", |e, s| e.call_begin(s, &si, shnum.0, size))
    }

    async fn write(&self, si: &StorageIndex, shnum: ShareNumber, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.write_bytes(si, shnum, offset, Cow::Borrowed(data)).await
    }

    async fn write_owned(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), BackendError> {
        self.write_bytes(si, shnum, offset, Cow::Owned(data)).await
    }

    async fn read_incoming(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        check_chunk(self.site.limits.max_call_bytes, usize::try_from(len).unwrap_or(usize::MAX))?;
        let si = si.to_base32();
        invoke!(
            self,
            "read-incoming",
            |e, s| e.call_read_incoming(s, &si, shnum.0, offset, len),
            more_than(len, Vec::len)
        )
    }

    async fn finish(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), BackendError> {
        let si = si.to_base32();
        invoke!(self, "finish", |e, s| e.call_finish(s, &si, shnum.0))
    }

    async fn abort(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), BackendError> {
        let si = si.to_base32();
        invoke!(self, "abort", |e, s| e.call_abort(s, &si, shnum.0))
    }

    async fn read(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        self.read_in_calls(false, si, shnum, offset, len).await
    }

    async fn size(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, BackendError> {
        let si = si.to_base32();
        invoke!(self, "size", |e, s| e.call_size(s, &si, shnum.0))
    }

    async fn list_shares(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError> {
        let si = si.to_base32();
        let r = invoke!(self, "list-shares", |e, s| e.call_list_shares(s, &si), more_than(1 << 16, Vec::len))?;
        Ok(r.into_iter().map(ShareNumber).collect())
    }

    async fn delete(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, BackendError> {
        let si = si.to_base32();
        invoke!(self, "delete", |e, s| e.call_delete(s, &si, shnum.0))
    }

    async fn mutable_read(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        self.read_in_calls(true, si, shnum, offset, len).await
    }

    async fn mutable_write(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> Result<(), BackendError> {
        let si = si.to_base32();
        // Split the writes into calls of at most `max_call_bytes`, cutting large vectors; the
        // truncation travels with the last call. The caller holds the slot's lock throughout.
        let limit = self.site.limits.max_call_bytes.max(1) as usize;
        let mut batches: Vec<Vec<(u64, &[u8])>> = vec![Vec::new()];
        let mut batch_bytes = 0usize;
        for w in writes {
            let mut start = 0usize;
            loop {
                let room = limit - batch_bytes;
                let end = (start + room).min(w.data.len());
                if let Some(last) = batches.last_mut() {
                    last.push((w.offset + start as u64, &w.data[start..end]));
                }
                batch_bytes += end - start;
                start = end;
                if batch_bytes == limit {
                    batches.push(Vec::new());
                    batch_bytes = 0;
                }
                if start >= w.data.len() {
                    break;
                }
            }
        }
        let count = batches.len();
        for (i, batch) in batches.iter().enumerate() {
            let truncate = if i + 1 == count { new_length } else { None };
            if batch.is_empty() && i + 1 != count {
                continue;
            }
            let () = invoke!(self, "mutable-write", |e, s| e.call_mutable_write(
                s,
                &si,
                shnum.0,
                &write_vectors(batch),
                truncate
            ))?;
        }
        Ok(())
    }

    async fn mutable_size(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, BackendError> {
        let si = si.to_base32();
        invoke!(self, "mutable-size", |e, s| e.call_mutable_size(s, &si, shnum.0))
    }

    async fn mutable_list(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError> {
        let si = si.to_base32();
        let r = invoke!(self, "mutable-list", |e, s| e.call_mutable_list(s, &si), more_than(1 << 16, Vec::len))?;
        Ok(r.into_iter().map(ShareNumber).collect())
    }

    async fn mutable_delete(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, BackendError> {
        let si = si.to_base32();
        invoke!(self, "mutable-delete", |e, s| e.call_mutable_delete(s, &si, shnum.0))
    }

    async fn list_indexes(&self, start_after: Option<&StorageIndex>, limit: u32) -> Result<IndexPage, BackendError> {
        let after = start_after.map(StorageIndex::to_base32);
        let limit = limit.clamp(1, 1000);
        let page: RawPage = invoke!(
            self,
            "list-indexes",
            |e, s| e.call_list_indexes(s, after.as_ref(), limit),
            more_than(u64::from(limit), |p: &RawPage| p.indexes.len())
        )?;
        let parse = |s: String| {
            s.parse::<StorageIndex>()
                .map_err(|e| BackendError::Corrupt(format!("plugin listed a bad storage index: {e}")))
        };
        Ok(IndexPage {
            indexes: page.indexes.into_iter().map(parse).collect::<Result<_, _>>()?,
            next: page.next.map(parse).transpose()?,
        })
    }

    async fn usage(&self) -> Result<Usage, BackendError> {
        invoke!(self, "usage", |e, s| e.call_usage(s))
    }

    async fn sweep(&self, grace_seconds: u64) -> Result<SweepReport, BackendError> {
        invoke!(self, "sweep", |e, s| e.call_sweep(s, grace_seconds))
    }

    fn max_chunk(&self) -> usize {
        usize::try_from(self.site.limits.max_call_bytes).unwrap_or(usize::MAX)
    }
}

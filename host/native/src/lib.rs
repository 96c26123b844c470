//! First-party plugins linked natively into the host, behind the same
//! [`marsh_core::Backend`] contract as their wasm builds.
//!
//! This exists for comparison runs (the benchmark, and the `native` build option of the
//! node): the same plugin logic, minus the sandbox. The plugin code is synchronous (it is
//! written against the SDK, which looks blocking from inside a plugin), so each call runs
//! under `tokio::task::block_in_place`, and each store operation it makes is driven to
//! completion with `Handle::block_on`. That needs tokio's multi-thread runtime.
//!
//! What it does not do: enforce limits. A native plugin is trusted code; only the wasm
//! runtime sandboxes.

mod imports;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use marsh_core::{Backend, BackendError, IndexPage, ShareNumber, StorageIndex, SweepReport, Usage, WriteVector};
use marsh_plugin_sdk as sdk;

pub use imports::NativeGrants;

/// Why a native plugin could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("native plugin `{plugin}` refused to start: {error}")]
pub struct NativeStartError {
    /// The plugin.
    pub plugin: String,
    /// What its `init` said.
    pub error: sdk::InitError,
}

/// A plugin type run natively, with a pool of initialised values like the wasm runtime's
/// pool of instances.
pub struct NativeBackend<B: sdk::Backend> {
    host: sdk::Host,
    config: sdk::Config,
    idle: Mutex<Vec<B>>,
    single: Option<tokio::sync::Mutex<()>>,
}

impl<B: sdk::Backend> std::fmt::Debug for NativeBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeBackend").field("plugin", &B::info().name).finish_non_exhaustive()
    }
}

/// The disk backend, natively.
pub type NativeDisk = NativeBackend<backend_disk::DiskBackend>;
/// The memory backend, natively.
pub type NativeMemory = NativeBackend<backend_memory::MemoryBackend>;

fn to_sdk_si(si: &StorageIndex) -> sdk::StorageIndex {
    // Both types accept exactly the canonical spelling, so this cannot fail.
    si.to_base32().parse().unwrap_or_else(|_| unreachable!("canonical storage index"))
}

fn from_sdk_error(e: sdk::BackendError) -> BackendError {
    match e {
        sdk::BackendError::NotFound => BackendError::NotFound,
        sdk::BackendError::Exists => BackendError::Exists,
        sdk::BackendError::OutOfRange(m) => BackendError::OutOfRange(m),
        sdk::BackendError::NoSpace => BackendError::NoSpace,
        sdk::BackendError::Corrupt(m) => BackendError::Corrupt(m),
        sdk::BackendError::Io(m) => BackendError::Io(m),
    }
}

impl<B: sdk::Backend + Send> NativeBackend<B> {
    /// Start the plugin with `grants` and `config`, running its `init` once now.
    pub fn start(grants: NativeGrants, config: Vec<(String, String)>) -> Result<Self, NativeStartError> {
        let host = sdk::Host::native(Arc::new(grants.into_imports(&B::info().name)));
        let config = sdk::Config::from_pairs(config);
        let first = tokio::task::block_in_place(|| B::init(host.clone(), config.clone()))
            .map_err(|error| NativeStartError { plugin: B::info().name, error })?;
        let single = (B::info().concurrency == sdk::Concurrency::Single).then(|| tokio::sync::Mutex::new(()));
        Ok(NativeBackend { host, config, idle: Mutex::new(vec![first]), single })
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<B>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn call<T>(&self, f: impl FnOnce(&mut B) -> sdk::BackendResult<T>) -> Result<T, BackendError> {
        let _serial = match &self.single {
            Some(m) => Some(m.lock().await),
            None => None,
        };
        let taken = self.pool().pop();
        let result = tokio::task::block_in_place(|| {
            let mut plugin = match taken {
                Some(p) => p,
                None => B::init(self.host.clone(), self.config.clone())
                    .map_err(|e| BackendError::Fault(format!("native plugin did not start: {e}")))?,
            };
            let result = f(&mut plugin).map_err(from_sdk_error);
            Ok::<_, BackendError>((plugin, result))
        });
        let (plugin, result) = result?;
        self.pool().push(plugin);
        result
    }
}

#[async_trait]
impl<B: sdk::Backend + Send> Backend for NativeBackend<B> {
    async fn begin(&self, si: &StorageIndex, shnum: ShareNumber, size: u64) -> Result<(), BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.begin(&si, shnum.0, size)).await
    }

    async fn write(&self, si: &StorageIndex, shnum: ShareNumber, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.write_owned(si, shnum, offset, data.to_vec()).await
    }

    async fn write_owned(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), BackendError> {
        let si = to_sdk_si(si);
        // Native, the payload is plugin-side bytes: handed over as they are, as a wasm 0.2.0
        // write hands them to the host.
        self.call(move |b| b.write(&si, shnum.0, offset, sdk::Payload::from(data))).await
    }

    async fn read_incoming(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.read_incoming(&si, shnum.0, offset, len)).await
    }

    async fn finish(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.finish(&si, shnum.0)).await
    }

    async fn abort(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<(), BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.abort(&si, shnum.0)).await
    }

    async fn read(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.read(&si, shnum.0, offset, len).map(sdk::Payload::into_vec)).await
    }

    async fn size(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.size(&si, shnum.0)).await
    }

    async fn list_shares(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError> {
        let si = to_sdk_si(si);
        Ok(self.call(|b| b.list_shares(&si)).await?.into_iter().map(ShareNumber).collect())
    }

    async fn delete(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.delete(&si, shnum.0)).await
    }

    async fn mutable_read(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.mutable_read(&si, shnum.0, offset, len)).await
    }

    async fn mutable_write(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> Result<(), BackendError> {
        let si = to_sdk_si(si);
        let writes: Vec<sdk::WriteVector> =
            writes.iter().map(|w| sdk::WriteVector { offset: w.offset, data: w.data.clone() }).collect();
        self.call(|b| b.mutable_write(&si, shnum.0, &writes, new_length)).await
    }

    async fn mutable_size(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.mutable_size(&si, shnum.0)).await
    }

    async fn mutable_list(&self, si: &StorageIndex) -> Result<Vec<ShareNumber>, BackendError> {
        let si = to_sdk_si(si);
        Ok(self.call(|b| b.mutable_list(&si)).await?.into_iter().map(ShareNumber).collect())
    }

    async fn mutable_delete(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, BackendError> {
        let si = to_sdk_si(si);
        self.call(|b| b.mutable_delete(&si, shnum.0)).await
    }

    async fn list_indexes(&self, start_after: Option<&StorageIndex>, limit: u32) -> Result<IndexPage, BackendError> {
        let after = start_after.map(to_sdk_si);
        let page = self.call(|b| b.list_indexes(after.as_ref(), limit)).await?;
        let back =
            |s: sdk::StorageIndex| s.as_str().parse::<StorageIndex>().map_err(|e| BackendError::Corrupt(e.to_string()));
        Ok(IndexPage {
            indexes: page.indexes.into_iter().map(back).collect::<Result<_, _>>()?,
            next: page.next.map(back).transpose()?,
        })
    }

    async fn usage(&self) -> Result<Usage, BackendError> {
        let u = self.call(|b| b.usage()).await?;
        Ok(Usage { available: u.available, used: u.used })
    }

    async fn sweep(&self, grace_seconds: u64) -> Result<SweepReport, BackendError> {
        let r = self.call(move |b| b.sweep(grace_seconds)).await?;
        Ok(SweepReport { examined: r.examined, removed: r.removed, removed_bytes: r.removed_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marsh_stores::DirStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn native_builds_pass_the_same_suite() {
        let dir = tempfile::tempdir().unwrap();
        let grants = NativeGrants::new(marsh_seal::SealKey::from_bytes([3; 32]))
            .store("shares", Arc::new(DirStore::open("shares", dir.path()).unwrap()));
        let disk = NativeDisk::start(grants, vec![]).unwrap();
        let report = marsh_conformance::run(&disk, "", |_| {}).await;
        assert_eq!(
            report.failed(),
            0,
            "{:#?}",
            report.results.iter().filter(|r| r.outcome.is_err()).collect::<Vec<_>>()
        );

        let memory = NativeMemory::start(NativeGrants::new(marsh_seal::SealKey::from_bytes([3; 32])), vec![]).unwrap();
        let report = marsh_conformance::run(&memory, "", |_| {}).await;
        assert_eq!(
            report.failed(),
            0,
            "{:#?}",
            report.results.iter().filter(|r| r.outcome.is_err()).collect::<Vec<_>>()
        );
    }
}

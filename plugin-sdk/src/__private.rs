//! The wasm side of the SDK: generated bindings, the import wrappers, and the adapters that
//! turn a [`crate::Backend`] or [`crate::Persistence`] into the exported WIT interface.
//!
//! Hidden from docs: plugin authors use it only through the export macros. Exactly one world
//! is generated per wasm build (the `backend` or `persistence` feature), because a component
//! carries the type of every world linked into it, in one ABI version (0.2.0, or 0.1.0 with
//! the `abi-0-1` feature); the adapters below are the only code that differs between the two.

#[cfg(all(feature = "backend", feature = "persistence"))]
compile_error!("a wasm plugin exports one world: enable the `backend` or the `persistence` feature, not both");
#[cfg(not(any(feature = "backend", feature = "persistence")))]
compile_error!("enable the `backend` or the `persistence` feature of marsh-plugin-sdk");

/// Bindings for the world a build exports, in the ABI version it targets: `wit/` is
/// `marsh:plugin@0.2.0`, `wit/deps/marsh-plugin-0.1.0/` the frozen 0.1.0 (feature `abi-0-1`).
macro_rules! bindings {
    ($module:ident, $world:literal, $path:literal, $export:literal, $self_path:literal) => {
        #[allow(missing_docs, unsafe_code, unused_qualifications, clippy::all, reason = "generated code")]
        pub mod $module {
            wit_bindgen::generate!({
                path: $path,
                world: $world,
                pub_export_macro: true,
                export_macro_name: $export,
                default_bindings_module: $self_path,
                // 0.2.0 imports interfaces of the 0.1.0 package: generate them too.
                generate_all,
            });
        }
    };
}

#[cfg(all(feature = "backend", not(feature = "abi-0-1")))]
bindings!(
    backend_bindings,
    "backend",
    "wit",
    "__export_marsh_backend",
    "marsh_plugin_sdk::__private::backend_bindings"
);
#[cfg(all(feature = "backend", feature = "abi-0-1"))]
bindings!(
    backend_bindings,
    "backend",
    "wit/deps/marsh-plugin-0.1.0",
    "__export_marsh_backend",
    "marsh_plugin_sdk::__private::backend_bindings"
);
#[cfg(all(feature = "persistence", not(feature = "abi-0-1")))]
bindings!(
    persistence_bindings,
    "persistence",
    "wit",
    "__export_marsh_persistence",
    "marsh_plugin_sdk::__private::persistence_bindings"
);
#[cfg(all(feature = "persistence", feature = "abi-0-1"))]
bindings!(
    persistence_bindings,
    "persistence",
    "wit/deps/marsh-plugin-0.1.0",
    "__export_marsh_persistence",
    "marsh_plugin_sdk::__private::persistence_bindings"
);

#[cfg(feature = "backend")]
use backend_bindings as bindings;
#[cfg(all(feature = "persistence", not(feature = "backend")))]
use persistence_bindings as bindings;

#[cfg(feature = "abi-0-1")]
use bindings::marsh::plugin as wit;
/// The 0.1.0 interfaces (0.2.0 imports them unchanged) and the 0.2.0 additions. With both
/// versions in one package graph the generator names modules by version.
#[cfg(not(feature = "abi-0-1"))]
use bindings::marsh::plugin0_1_0 as wit;
#[cfg(not(feature = "abi-0-1"))]
use bindings::marsh::plugin0_2_0 as wit2;

use crate::blobs::{BlobError, Capabilities, Page, PutMode};
use crate::config::Config;
use crate::host::{Level, SealError};
#[cfg(not(feature = "abi-0-1"))]
use crate::payload::{Payload, PayloadInner};
use crate::types::{Concurrency, InitError, PluginInfo};

/// Wrappers over the generated imports, in the SDK's own types.
pub mod imports {
    use super::*;

    pub fn log(level: Level, message: &str) {
        use wit::host::Level as L;
        let level = match level {
            Level::Error => L::Error,
            Level::Warn => L::Warn,
            Level::Info => L::Info,
            Level::Debug => L::Debug,
            Level::Trace => L::Trace,
        };
        wit::host::log(level, message);
    }

    pub fn progress(done: u64, total: Option<u64>, what: &str) {
        wit::host::progress(done, total, what);
    }

    pub fn now() -> u64 {
        wit::host::now()
    }

    fn seal_error(e: wit::seal::SealError) -> SealError {
        match e {
            wit::seal::SealError::Tampered => SealError::Tampered,
            wit::seal::SealError::UnknownVersion(v) => SealError::UnknownVersion(v),
            wit::seal::SealError::TooLarge(n) => SealError::TooLarge(n),
        }
    }

    pub fn seal(purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        wit::seal::seal(purpose, plaintext).map_err(seal_error)
    }

    pub fn unseal(purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        wit::seal::unseal(purpose, sealed).map_err(seal_error)
    }

    pub(crate) fn blob_error(e: wit::types::BlobError) -> BlobError {
        use wit::types::BlobError as E;
        match e {
            E::NotFound => BlobError::NotFound,
            E::Exists => BlobError::Exists,
            E::BadKey(m) => BlobError::BadKey(m),
            E::TooLarge(n) => BlobError::TooLarge(n),
            E::Unsupported(m) => BlobError::Unsupported(m),
            E::NoSpace => BlobError::NoSpace,
            E::Denied(m) => BlobError::Denied(m),
            E::Io(m) => BlobError::Io(m),
        }
    }

    fn mode(m: PutMode) -> wit::blobs::PutMode {
        match m {
            PutMode::CreateOnly => wit::blobs::PutMode::CreateOnly,
            PutMode::Overwrite => wit::blobs::PutMode::Overwrite,
        }
    }

    pub fn open(name: &str) -> Result<WasmStore, BlobError> {
        wit::blobs::open(name).map(WasmStore).map_err(blob_error)
    }

    /// A granted store resource.
    #[derive(Debug)]
    pub struct WasmStore(wit::blobs::Store);

    impl WasmStore {
        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
            self.0.get(key).map_err(blob_error)
        }
        pub fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, BlobError> {
            self.0.get_range(key, offset, len).map_err(blob_error)
        }
        pub fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
            self.0.head(key).map_err(blob_error)
        }
        pub fn put(&self, key: &str, data: &[u8], m: PutMode) -> Result<(), BlobError> {
            self.0.put(key, data, mode(m)).map_err(blob_error)
        }
        pub fn delete(&self, key: &str) -> Result<bool, BlobError> {
            self.0.delete(key).map_err(blob_error)
        }
        pub fn list_keys(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<Page, BlobError> {
            self.0
                .list_keys(prefix, start_after, limit)
                .map(|p| Page { keys: p.keys, next: p.next })
                .map_err(blob_error)
        }
        pub fn begin_upload(&self, key: &str, m: PutMode) -> Result<WasmUpload, BlobError> {
            self.0.begin_upload(key, mode(m)).map(WasmUpload).map_err(blob_error)
        }
        pub fn capabilities(&self) -> Capabilities {
            Capabilities { random_access: self.0.capabilities().random_access }
        }
        pub fn available(&self) -> Result<Option<u64>, BlobError> {
            self.0.available().map_err(blob_error)
        }
        pub fn write_at(&self, key: &str, offset: u64, data: &[u8]) -> Result<(), BlobError> {
            self.0.write_at(key, offset, data).map_err(blob_error)
        }
        pub fn set_len(&self, key: &str, len: u64) -> Result<(), BlobError> {
            self.0.set_len(key, len).map_err(blob_error)
        }
        pub fn sync(&self, key: &str) -> Result<(), BlobError> {
            self.0.sync(key).map_err(blob_error)
        }
        pub fn rename(&self, from: &str, to: &str, m: PutMode) -> Result<(), BlobError> {
            self.0.rename(from, to, mode(m)).map_err(blob_error)
        }
        pub fn put_owned(&self, key: &str, data: Vec<u8>, m: PutMode) -> Result<(), BlobError> {
            self.put(key, &data, m)
        }
        pub fn write_at_owned(&self, key: &str, offset: u64, data: Vec<u8>) -> Result<(), BlobError> {
            self.write_at(key, offset, &data)
        }
        #[cfg(not(feature = "abi-0-1"))]
        pub fn get_range_payload(&self, key: &str, offset: u64, len: u64) -> Result<Option<Payload>, BlobError> {
            wit2::payloads::get_range(&self.0, key, offset, len)
                .map(|p| p.map(|p| Payload { inner: PayloadInner::Host(WasmPayload(p)) }))
                .map_err(blob_error)
        }
        #[cfg(not(feature = "abi-0-1"))]
        pub fn put_payload(&self, key: &str, data: WasmPayload, m: PutMode) -> Result<(), BlobError> {
            wit2::payloads::put(&self.0, key, data.0, mode(m)).map_err(blob_error)
        }
        #[cfg(not(feature = "abi-0-1"))]
        pub fn write_payload_at(&self, key: &str, offset: u64, data: WasmPayload) -> Result<(), BlobError> {
            wit2::payloads::write_at(&self.0, key, offset, data.0).map_err(blob_error)
        }
        #[cfg(not(feature = "abi-0-1"))]
        pub fn get_many(&self, keys: &[String]) -> Result<Vec<crate::blobs::GetAnswer>, BlobError> {
            let answers = wit2::batches::get_many(&self.0, keys).map_err(blob_error)?;
            Ok(answers.into_iter().map(|a| a.map_err(blob_error)).collect())
        }
    }

    /// Bytes the host holds (ABI 0.2.0).
    #[cfg(not(feature = "abi-0-1"))]
    #[derive(Debug)]
    pub struct WasmPayload(pub(crate) wit2::payloads::Payload);

    #[cfg(not(feature = "abi-0-1"))]
    impl WasmPayload {
        pub(crate) fn len(&self) -> u64 {
            self.0.len()
        }
        pub(crate) fn read(&self, offset: u64, len: u64) -> Vec<u8> {
            self.0.read(offset, len)
        }
        /// All the bytes, in pieces (the host caps one read at its per-call bound).
        pub(crate) fn to_vec(&self) -> Vec<u8> {
            let len = self.0.len();
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            while (out.len() as u64) < len {
                let part = self.0.read(out.len() as u64, len - out.len() as u64);
                if part.is_empty() {
                    break;
                }
                out.extend_from_slice(&part);
            }
            out
        }
    }

    /// Hand bytes to the host as a payload (for an answer built in plugin memory).
    #[cfg(not(feature = "abi-0-1"))]
    pub fn host_payload(p: Payload) -> Result<wit2::payloads::Payload, BlobError> {
        match p.inner {
            PayloadInner::Host(h) => Ok(h.0),
            PayloadInner::Bytes(b) => wit2::payloads::create(&b).map_err(blob_error),
        }
    }

    /// A streamed upload resource.
    #[derive(Debug)]
    pub struct WasmUpload(wit::blobs::Upload);

    impl WasmUpload {
        pub fn append(&mut self, data: &[u8]) -> Result<(), BlobError> {
            self.0.append(data).map_err(blob_error)
        }
        #[cfg(not(feature = "abi-0-1"))]
        pub fn append_payload(&mut self, data: WasmPayload) -> Result<(), BlobError> {
            wit2::payloads::append(&self.0, data.0).map_err(blob_error)
        }
        pub fn finish(self) -> Result<(), BlobError> {
            wit::blobs::Upload::finish(self.0).map_err(blob_error)
        }
    }

    #[cfg(feature = "persistence")]
    pub fn apply(changes: &[Vec<u8>]) -> Result<(), crate::PersistError> {
        wit::accountant::apply(changes).map_err(crate::PersistError::Io)
    }

    pub fn state_get(name: &str) -> Result<Option<Vec<u8>>, BlobError> {
        wit::state::get(name).map_err(blob_error)
    }

    pub fn state_put(name: &str, value: &[u8]) -> Result<(), BlobError> {
        wit::state::put(name, value).map_err(blob_error)
    }

    #[cfg(feature = "persistence")]
    pub fn take_snapshot() -> Result<WasmSnapshot, crate::PersistError> {
        wit::accountant::take_snapshot().map(WasmSnapshot).map_err(crate::PersistError::Io)
    }

    #[cfg(feature = "persistence")]
    pub fn begin_restore() -> Result<WasmRestore, crate::PersistError> {
        wit::accountant::begin_restore().map(WasmRestore).map_err(crate::PersistError::Io)
    }

    /// A snapshot resource.
    #[cfg(feature = "persistence")]
    #[derive(Debug)]
    pub struct WasmSnapshot(wit::accountant::Snapshot);

    #[cfg(feature = "persistence")]
    impl WasmSnapshot {
        pub fn sequence(&self) -> u64 {
            self.0.sequence()
        }
        pub fn size(&self) -> u64 {
            self.0.size()
        }
        pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, crate::PersistError> {
            self.0.read(offset, len).map_err(crate::PersistError::Io)
        }
    }

    /// A restore resource.
    #[cfg(feature = "persistence")]
    #[derive(Debug)]
    pub struct WasmRestore(wit::accountant::Restore);

    #[cfg(feature = "persistence")]
    impl WasmRestore {
        pub fn append(&mut self, data: &[u8]) -> Result<(), crate::PersistError> {
            self.0.append(data).map_err(crate::PersistError::Io)
        }
        pub fn finish(self) -> Result<u64, crate::PersistError> {
            wit::accountant::Restore::finish(self.0).map_err(crate::PersistError::Io)
        }
    }
}

fn config(entries: Vec<wit::types::ConfigEntry>) -> Config {
    Config::from_pairs(entries.into_iter().map(|e| (e.key, e.value)))
}

fn info(i: PluginInfo) -> wit::types::PluginInfo {
    wit::types::PluginInfo {
        name: i.name,
        version: i.version,
        description: i.description,
        concurrency: match i.concurrency {
            Concurrency::Pooled => wit::types::Concurrency::Pooled,
            Concurrency::Single => wit::types::Concurrency::Single,
        },
    }
}

fn init_error(e: InitError) -> wit::types::InitError {
    match e {
        InitError::BadConfig(m) => wit::types::InitError::BadConfig(m),
        InitError::Unavailable(m) => wit::types::InitError::Unavailable(m),
        InitError::RecoveryNeeded(r) => {
            wit::types::InitError::RecoveryNeeded(wit::types::Recovery { reason: r.reason, command: r.command })
        }
    }
}

#[cfg(feature = "backend")]
pub use backend_adapter::BackendSlot;

#[cfg(feature = "backend")]
mod backend_adapter {
    use super::*;
    use crate::backend::{Backend, BackendError, WriteVector};
    use crate::host::Host;
    use crate::payload::Payload;
    use crate::types::StorageIndex;
    #[cfg(feature = "abi-0-1")]
    use backend_bindings::exports::marsh::plugin::shares::{self as ex, Guest};
    #[cfg(not(feature = "abi-0-1"))]
    use backend_bindings::exports::marsh::plugin0_2_0::shares::{self as ex, Guest};

    /// A share's bytes as this ABI version passes them: a host payload from 0.2.0 on.
    #[cfg(not(feature = "abi-0-1"))]
    type Bytes = wit2::payloads::Payload;
    #[cfg(feature = "abi-0-1")]
    type Bytes = Vec<u8>;

    #[cfg(not(feature = "abi-0-1"))]
    fn payload_in(data: Bytes) -> Payload {
        Payload { inner: PayloadInner::Host(imports::WasmPayload(data)) }
    }
    #[cfg(feature = "abi-0-1")]
    fn payload_in(data: Bytes) -> Payload {
        Payload::from(data)
    }

    #[cfg(not(feature = "abi-0-1"))]
    fn payload_out(p: Payload) -> Result<Bytes, BackendError> {
        imports::host_payload(p).map_err(BackendError::from)
    }
    #[cfg(feature = "abi-0-1")]
    fn payload_out(p: Payload) -> Result<Bytes, BackendError> {
        Ok(p.into_vec())
    }

    /// Where the export macro keeps the plugin's one value per instance.
    pub trait BackendSlot {
        type Plugin: Backend;
        fn with<R>(f: impl FnOnce(&mut Option<Self::Plugin>) -> R) -> R;
    }

    fn err(e: BackendError) -> ex::BackendError {
        match e {
            BackendError::NotFound => ex::BackendError::NotFound,
            BackendError::Exists => ex::BackendError::Exists,
            BackendError::OutOfRange(m) => ex::BackendError::OutOfRange(m),
            BackendError::NoSpace => ex::BackendError::NoSpace,
            BackendError::Corrupt(m) => ex::BackendError::Corrupt(m),
            BackendError::Io(m) => ex::BackendError::Io(m),
        }
    }

    fn si(s: String) -> Result<StorageIndex, ex::BackendError> {
        s.parse().map_err(|e: crate::StorageIndexError| ex::BackendError::OutOfRange(e.to_string()))
    }

    fn call<S: BackendSlot, T>(
        f: impl FnOnce(&mut S::Plugin) -> Result<T, BackendError>,
    ) -> Result<T, ex::BackendError> {
        S::with(|slot| match slot {
            Some(p) => f(p).map_err(err),
            None => Err(ex::BackendError::Io("plugin called before init".into())),
        })
    }

    impl<S: BackendSlot> Guest for S {
        fn info() -> wit::types::PluginInfo {
            info(S::Plugin::info())
        }
        fn init(entries: Vec<wit::types::ConfigEntry>) -> Result<(), wit::types::InitError> {
            let plugin = S::Plugin::init(Host::wasm(), config(entries)).map_err(init_error)?;
            S::with(|slot| *slot = Some(plugin));
            Ok(())
        }
        fn begin(s: String, n: u16, size: u64) -> Result<(), ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.begin(&s, n, size))
        }
        fn write(s: String, n: u16, offset: u64, data: Bytes) -> Result<(), ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.write(&s, n, offset, payload_in(data)))
        }
        fn read_incoming(s: String, n: u16, offset: u64, len: u64) -> Result<Vec<u8>, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.read_incoming(&s, n, offset, len))
        }
        fn finish(s: String, n: u16) -> Result<(), ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.finish(&s, n))
        }
        fn abort(s: String, n: u16) -> Result<(), ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.abort(&s, n))
        }
        fn read(s: String, n: u16, offset: u64, len: u64) -> Result<Bytes, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.read(&s, n, offset, len).and_then(payload_out))
        }
        fn size(s: String, n: u16) -> Result<Option<u64>, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.size(&s, n))
        }
        fn list_shares(s: String) -> Result<Vec<u16>, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.list_shares(&s))
        }
        fn delete(s: String, n: u16) -> Result<bool, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.delete(&s, n))
        }
        fn mutable_read(s: String, n: u16, offset: u64, len: u64) -> Result<Vec<u8>, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.mutable_read(&s, n, offset, len))
        }
        fn mutable_write(
            s: String,
            n: u16,
            writes: Vec<ex::WriteVector>,
            new_length: Option<u64>,
        ) -> Result<(), ex::BackendError> {
            let s = si(s)?;
            let writes: Vec<WriteVector> =
                writes.into_iter().map(|w| WriteVector { offset: w.offset, data: w.data }).collect();
            call::<S, _>(|p| p.mutable_write(&s, n, &writes, new_length))
        }
        fn mutable_size(s: String, n: u16) -> Result<Option<u64>, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.mutable_size(&s, n))
        }
        fn mutable_list(s: String) -> Result<Vec<u16>, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.mutable_list(&s))
        }
        fn mutable_delete(s: String, n: u16) -> Result<bool, ex::BackendError> {
            let s = si(s)?;
            call::<S, _>(|p| p.mutable_delete(&s, n))
        }
        fn list_indexes(start_after: Option<String>, limit: u32) -> Result<ex::IndexPage, ex::BackendError> {
            let after = start_after.map(si).transpose()?;
            call::<S, _>(|p| p.list_indexes(after.as_ref(), limit)).map(|page| ex::IndexPage {
                indexes: page.indexes.into_iter().map(|i| i.as_str().to_owned()).collect(),
                next: page.next.map(|i| i.as_str().to_owned()),
            })
        }
        fn usage() -> Result<ex::SpaceUsage, ex::BackendError> {
            call::<S, _>(|p| p.usage()).map(|u| ex::SpaceUsage { available: u.available, used: u.used })
        }
        fn sweep(grace_seconds: u64) -> Result<ex::SweepReport, ex::BackendError> {
            call::<S, _>(|p| p.sweep(grace_seconds)).map(|r| ex::SweepReport {
                examined: r.examined,
                removed: r.removed,
                removed_bytes: r.removed_bytes,
            })
        }
    }
}

#[cfg(feature = "persistence")]
pub use persistence_adapter::PersistenceSlot;

#[cfg(feature = "persistence")]
mod persistence_adapter {
    use super::*;
    use crate::host::Host;
    use crate::persistence::{Accountant, DbState, PersistError, Persistence, Plan};
    #[cfg(feature = "abi-0-1")]
    use persistence_bindings::exports::marsh::plugin::strategy::{self as ex, Guest};
    #[cfg(not(feature = "abi-0-1"))]
    use persistence_bindings::exports::marsh::plugin0_1_0::strategy::{self as ex, Guest};

    /// Where the export macro keeps the plugin's one value per instance.
    pub trait PersistenceSlot {
        type Plugin: Persistence;
        fn with<R>(f: impl FnOnce(&mut Option<Self::Plugin>) -> R) -> R;
    }

    fn err(e: PersistError) -> ex::PersistError {
        match e {
            PersistError::Io(m) => ex::PersistError::Io(m),
            PersistError::Tampered(m) => ex::PersistError::Tampered(m),
            PersistError::Gap(m) => ex::PersistError::Gap(m),
        }
    }

    fn call<S: PersistenceSlot, T>(
        f: impl FnOnce(&mut S::Plugin) -> Result<T, PersistError>,
    ) -> Result<T, ex::PersistError> {
        S::with(|slot| match slot {
            Some(p) => f(p).map_err(err),
            None => Err(ex::PersistError::Io("plugin called before init".into())),
        })
    }

    impl<S: PersistenceSlot> Guest for S {
        fn info() -> wit::types::PluginInfo {
            info(S::Plugin::info())
        }
        fn init(entries: Vec<wit::types::ConfigEntry>) -> Result<(), wit::types::InitError> {
            let plugin = S::Plugin::init(Host::wasm(), config(entries)).map_err(init_error)?;
            S::with(|slot| *slot = Some(plugin));
            Ok(())
        }
        fn startup(state: ex::DbState, auto_recover: bool) -> Result<ex::Plan, wit::types::InitError> {
            let state = DbState { present: state.present, last_sequence: state.last_sequence };
            S::with(|slot| match slot {
                Some(p) => p.startup(state, auto_recover).map_err(init_error),
                None => Err(wit::types::InitError::Unavailable("plugin called before init".into())),
            })
            .map(|plan| match plan {
                Plan::UseLocal => ex::Plan::UseLocal,
                Plan::Recover => ex::Plan::Recover,
            })
        }
        fn record(first_sequence: u64, changes: Vec<Vec<u8>>) -> Result<(), ex::PersistError> {
            call::<S, _>(|p| p.record(&Accountant::wasm(), first_sequence, &changes))
        }
        fn recover() -> Result<ex::RecoverySummary, ex::PersistError> {
            call::<S, _>(|p| p.recover(&Accountant::wasm())).map(|s| ex::RecoverySummary {
                changes_read: s.changes_read,
                snapshots_read: s.snapshots_read,
                tampered: s.tampered,
                gaps: s.gaps,
            })
        }
    }
}

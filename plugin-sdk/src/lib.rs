//! Write marsh plugins in Rust: storage backends and accountant persistence strategies.
//!
//! A marsh plugin is a WebAssembly component built for `wasm32-wasip2` against the WIT package
//! `marsh:plugin@0.2.0` (in this crate's `wit/` folder; with the `abi-0-1` feature, against the
//! frozen 0.1.0 in `wit/deps/`, from the same plugin code). This crate hides the generated
//! bindings: you implement [`Backend`] (or [`Persistence`]) on a plain Rust type, call
//! [`export_backend!`] (or [`export_persistence!`]) once, and reach the host through [`Host`]
//! and [`Store`]. The same code runs natively, so plugin logic is unit-tested with `cargo test`
//! against the in-memory stand-ins of [`testing`], without wasm.
//!
//! What this crate does not do: it keeps no state between calls for you. The host may run
//! several instances of a plugin side by side and may discard one at any time (after a trap),
//! so anything that must outlive a call belongs in a blob store.
//!
//! # Quick start
//!
//! `Cargo.toml` of the plugin:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//! [dependencies]
//! marsh-plugin-sdk = { path = "../marsh/plugin-sdk", features = ["backend"] }
//! ```
//!
//! `src/lib.rs`, a backend that keeps each share as one object in the store named `shares`:
//!
//! ```
//! use marsh_plugin_sdk::{
//!     Backend, BackendError, BackendResult, Concurrency, Config, Host, IndexPage, InitError,
//!     Payload, PluginInfo, PutMode, ShareNumber, StorageIndex, Store, Usage, WriteVector,
//! };
//!
//! pub struct Tiny {
//!     store: Store,
//! }
//!
//! fn key(si: &StorageIndex, shnum: ShareNumber) -> String {
//!     format!("{si}/{shnum}")
//! }
//!
//! impl Backend for Tiny {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("tiny", "0.1.0", "one object per share", Concurrency::Pooled)
//!     }
//!     fn init(host: Host, config: Config) -> Result<Self, InitError> {
//!         let store = host.open_store(config.get("store").unwrap_or("shares"))?;
//!         Ok(Tiny { store })
//!     }
//!     fn begin(&mut self, si: &StorageIndex, shnum: ShareNumber, size: u64) -> BackendResult<()> {
//!         self.store.put(&format!("incoming/{}", key(si, shnum)), &[], PutMode::Overwrite)?;
//!         Ok(())
//!     }
//!     // The bytes stay in the host: the payload goes from the request to the store.
//!     fn write(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, data: Payload) -> BackendResult<()> {
//!         Ok(self.store.write_payload_at(&format!("incoming/{}", key(si, shnum)), offset, data)?)
//!     }
//!     fn read_incoming(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
//!         let key = format!("incoming/{}", key(si, shnum));
//!         self.store.get_range(&key, offset, len)?.ok_or(BackendError::NotFound)
//!     }
//!     fn finish(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<()> {
//!         let from = format!("incoming/{}", key(si, shnum));
//!         Ok(self.store.rename(&from, &key(si, shnum), PutMode::CreateOnly)?)
//!     }
//!     fn abort(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<()> {
//!         self.store.delete(&format!("incoming/{}", key(si, shnum)))?;
//!         Ok(())
//!     }
//!     fn read(&mut self, si: &StorageIndex, shnum: ShareNumber, offset: u64, len: u64) -> BackendResult<Payload> {
//!         self.store.get_range_payload(&key(si, shnum), offset, len)?.ok_or(BackendError::NotFound)
//!     }
//!     fn size(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<Option<u64>> {
//!         Ok(self.store.head(&key(si, shnum))?)
//!     }
//!     fn list_shares(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
//!         let page = self.store.list_keys(&format!("{si}/"), None, 1000)?;
//!         Ok(page.keys.iter().filter_map(|k| k.rsplit('/').next()?.parse().ok()).collect())
//!     }
//!     fn delete(&mut self, si: &StorageIndex, shnum: ShareNumber) -> BackendResult<bool> {
//!         Ok(self.store.delete(&key(si, shnum))?)
//!     }
//!     // Mutable shares, sweeps and space: see the `backend-disk` plugin for a full version.
//!     fn mutable_read(&mut self, _: &StorageIndex, _: ShareNumber, _: u64, _: u64) -> BackendResult<Vec<u8>> {
//!         Err(BackendError::Io("mutable shares are not supported by tiny".into()))
//!     }
//!     fn mutable_write(&mut self, _: &StorageIndex, _: ShareNumber, _: &[WriteVector], _: Option<u64>) -> BackendResult<()> {
//!         Err(BackendError::Io("mutable shares are not supported by tiny".into()))
//!     }
//!     fn mutable_size(&mut self, _: &StorageIndex, _: ShareNumber) -> BackendResult<Option<u64>> { Ok(None) }
//!     fn mutable_list(&mut self, _: &StorageIndex) -> BackendResult<Vec<ShareNumber>> { Ok(vec![]) }
//!     fn mutable_delete(&mut self, _: &StorageIndex, _: ShareNumber) -> BackendResult<bool> { Ok(false) }
//!     fn list_indexes(&mut self, _: Option<&StorageIndex>, _: u32) -> BackendResult<IndexPage> {
//!         Ok(IndexPage::default())
//!     }
//!     fn usage(&mut self) -> BackendResult<Usage> {
//!         Ok(Usage { available: None, used: None })
//!     }
//! }
//!
//! // In the plugin crate: `marsh_plugin_sdk::export_backend!(Tiny);`
//!
//! // And a native unit test against in-memory stand-ins:
//! let host = marsh_plugin_sdk::testing::TestHost::new().with_memory_store("shares").build();
//! let mut tiny = Tiny::init(host, Config::default()).unwrap();
//! let si: StorageIndex = "aaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap();
//! tiny.begin(&si, 0, 3).unwrap();
//! tiny.write(&si, 0, 0, b"abc".into()).unwrap();
//! tiny.finish(&si, 0).unwrap();
//! assert_eq!(tiny.read(&si, 0, 1, 10).unwrap().into_vec(), b"bc");
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm` file is the plugin.
#![deny(missing_docs)]

mod backend;
mod blobs;
mod config;
mod host;
pub mod native;
mod payload;
mod persistence;
pub mod snapshots;
pub mod testing;
mod types;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

pub use backend::{Backend, BackendError, BackendResult, IndexPage, SweepReport, Usage, WriteVector};
pub use blobs::{BlobError, Capabilities, GetAnswer, Page, PutMode, Store, Upload};
pub use config::Config;
pub use host::{Host, Level, SealError};
pub use payload::Payload;
pub use persistence::{
    Accountant, ApplyBatch, DbState, PersistError, Persistence, Plan, RecoverySummary, Restore, Snapshot,
    change_sequence, decode_changes, encode_changes,
};
pub use types::{Concurrency, InitError, PluginInfo, Recovery, ShareNumber, StorageIndex, StorageIndexError};

/// The version of the WIT package a wasm build of this SDK targets.
#[cfg(not(feature = "abi-0-1"))]
pub const ABI_VERSION: &str = "0.2.0";
/// The version of the WIT package a wasm build of this SDK targets.
#[cfg(feature = "abi-0-1")]
pub const ABI_VERSION: &str = "0.1.0";

/// Export a [`Backend`] implementation as the plugin's `backend` world.
///
/// Call it once, at the top level of the plugin crate. On non-wasm targets it expands to
/// nothing, so the same crate builds natively for unit tests.
#[macro_export]
macro_rules! export_backend {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __MarshBackendExport;
            ::std::thread_local! {
                static __MARSH_INSTANCE: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            impl $crate::__private::BackendSlot for __MarshBackendExport {
                type Plugin = $plugin;
                fn with<R>(f: impl FnOnce(&mut ::core::option::Option<$plugin>) -> R) -> R {
                    __MARSH_INSTANCE.with(|cell| f(&mut cell.borrow_mut()))
                }
            }
            $crate::__private::backend_bindings::__export_marsh_backend!(
                __MarshBackendExport with_types_in $crate::__private::backend_bindings
            );
        };
    };
}

/// Export a [`Persistence`] implementation as the plugin's `persistence` world.
///
/// Call it once, at the top level of the plugin crate. On non-wasm targets it expands to
/// nothing, so the same crate builds natively for unit tests.
#[macro_export]
macro_rules! export_persistence {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __MarshPersistenceExport;
            ::std::thread_local! {
                static __MARSH_INSTANCE: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            impl $crate::__private::PersistenceSlot for __MarshPersistenceExport {
                type Plugin = $plugin;
                fn with<R>(f: impl FnOnce(&mut ::core::option::Option<$plugin>) -> R) -> R {
                    __MARSH_INSTANCE.with(|cell| f(&mut cell.borrow_mut()))
                }
            }
            $crate::__private::persistence_bindings::__export_marsh_persistence!(
                __MarshPersistenceExport with_types_in $crate::__private::persistence_bindings
            );
        };
    };
}

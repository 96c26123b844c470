//! The imports as Rust traits, for running plugin code natively.
//!
//! In a wasm build the host's imports are WIT functions. Natively, a [`crate::Host`] is built
//! over an implementation of [`NativeImports`]: [`crate::testing`] provides in-memory stand-ins
//! for unit tests, and the marsh host provides adapters over its real stores when it links a
//! first-party plugin natively (for comparison runs). These traits mirror the WIT one for one.

use std::sync::Arc;

use crate::blobs::{BlobError, Capabilities, Page, PutMode};
use crate::host::{Level, SealError};
use crate::persistence::PersistError;

/// Everything a plugin imports from its host.
pub trait NativeImports: Send + Sync {
    /// See `host.log`.
    fn log(&self, level: Level, message: &str);
    /// See `host.progress`.
    fn progress(&self, done: u64, total: Option<u64>, what: &str);
    /// See `host.now`.
    fn now(&self) -> u64;
    /// See `seal.seal`.
    fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError>;
    /// See `seal.unseal`.
    fn unseal(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError>;
    /// See `blobs.open`.
    fn open(&self, name: &str) -> Result<Arc<dyn NativeStore>, BlobError>;
    /// See `state.get`.
    fn state_get(&self, name: &str) -> Result<Option<Vec<u8>>, BlobError>;
    /// See `state.put`.
    fn state_put(&self, name: &str, value: &[u8]) -> Result<(), BlobError>;
}

/// One granted blob store; see the `blobs.store` resource.
#[allow(missing_docs, reason = "each method is documented on the WIT resource and on crate::Store")]
pub trait NativeStore: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError>;
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, BlobError>;
    fn head(&self, key: &str) -> Result<Option<u64>, BlobError>;
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), BlobError>;
    fn delete(&self, key: &str) -> Result<bool, BlobError>;
    fn list_keys(&self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<Page, BlobError>;
    fn begin_upload(&self, key: &str, mode: PutMode) -> Result<Box<dyn NativeUpload>, BlobError>;
    fn capabilities(&self) -> Capabilities;
    fn available(&self) -> Result<Option<u64>, BlobError>;
    fn write_at(&self, key: &str, offset: u64, data: &[u8]) -> Result<(), BlobError>;
    fn set_len(&self, key: &str, len: u64) -> Result<(), BlobError>;
    fn sync(&self, key: &str) -> Result<(), BlobError>;
    fn rename(&self, from: &str, to: &str, mode: PutMode) -> Result<(), BlobError>;
    /// `put` of bytes the caller gives up (an implementation that keeps them avoids a copy).
    fn put_owned(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<(), BlobError> {
        self.put(key, &data, mode)
    }
    /// `write_at` of bytes the caller gives up.
    fn write_at_owned(&self, key: &str, offset: u64, data: Vec<u8>) -> Result<(), BlobError> {
        self.write_at(key, offset, &data)
    }
}

/// A streamed upload; see the `blobs.upload` resource.
pub trait NativeUpload: Send {
    /// Append the next bytes.
    fn append(&mut self, data: &[u8]) -> Result<(), BlobError>;
    /// Make the object visible.
    fn finish(self: Box<Self>) -> Result<(), BlobError>;
}

/// The host's accountant; see the `accountant` interface.
pub trait NativeAccountant: Send + Sync {
    /// Apply recovered changes in order.
    fn apply(&self, changes: &[Vec<u8>]) -> Result<(), PersistError>;
    /// A consistent snapshot: its sequence and bytes.
    fn snapshot(&self) -> Result<(u64, Vec<u8>), PersistError>;
    /// Replace the whole database with a snapshot; returns its sequence.
    fn restore(&self, snapshot: &[u8]) -> Result<u64, PersistError>;
}

//! The plugin's handle on its host: logging, progress, time, sealing, and opening granted
//! stores. In a wasm build it calls the WIT imports; natively it calls a
//! [`crate::native::NativeImports`] implementation.

use std::fmt;
use std::sync::Arc;

use crate::blobs::{BlobError, Store};
use crate::native::NativeImports;

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
    /// Everything.
    Trace,
}

/// Why sealing or unsealing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// The blob was changed, truncated, sealed for another purpose, or by another node.
    Tampered,
    /// The blob's frame is of a version this host does not read.
    UnknownVersion(u8),
    /// The input is larger than the host seals in one call.
    TooLarge(u64),
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Tampered => f.write_str("sealed blob failed authentication"),
            SealError::UnknownVersion(v) => write!(f, "sealed blob has unknown frame version {v}"),
            SealError::TooLarge(n) => {
                write!(f, "{n} bytes is more than the host seals in one call")
            }
        }
    }
}

impl std::error::Error for SealError {}

#[derive(Clone)]
enum Inner {
    #[cfg(target_arch = "wasm32")]
    Wasm,
    Native(Arc<dyn NativeImports>),
}

/// The plugin's handle on its host. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Inner,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => f.write_str("Host(wasm)"),
            Inner::Native(_) => f.write_str("Host(native)"),
        }
    }
}

impl Host {
    /// A host backed by native implementations of the imports.
    pub fn native(imports: Arc<dyn NativeImports>) -> Self {
        Host { inner: Inner::Native(imports) }
    }

    #[cfg(target_arch = "wasm32")]
    pub(crate) fn wasm() -> Self {
        Host { inner: Inner::Wasm }
    }

    /// Write a line to the node's log.
    pub fn log(&self, level: Level, message: &str) {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => crate::__private::imports::log(level, message),
            Inner::Native(n) => n.log(level, message),
        }
    }

    /// Report progress of a long operation.
    pub fn progress(&self, done: u64, total: Option<u64>, what: &str) {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => crate::__private::imports::progress(done, total, what),
            Inner::Native(n) => n.progress(done, total, what),
        }
    }

    /// Seconds since the Unix epoch, as the host sees it.
    pub fn now(&self) -> u64 {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => crate::__private::imports::now(),
            Inner::Native(n) => n.now(),
        }
    }

    /// Encrypt and authenticate `plaintext` with the node key, bound to `purpose`.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => crate::__private::imports::seal(purpose, plaintext),
            Inner::Native(n) => n.seal(purpose, plaintext),
        }
    }

    /// Check and decrypt a blob sealed for the same purpose.
    pub fn unseal(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => crate::__private::imports::unseal(purpose, sealed),
            Inner::Native(n) => n.unseal(purpose, sealed),
        }
    }

    /// The newest value the host keeps for this plugin under `name` (see the `state` interface:
    /// sealed, versioned, in the plugin's first granted store), or none.
    pub fn state_get(&self, name: &str) -> Result<Option<Vec<u8>>, BlobError> {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => crate::__private::imports::state_get(name),
            Inner::Native(n) => n.state_get(name),
        }
    }

    /// Replace the value the host keeps for this plugin under `name` (at most 64 KiB).
    pub fn state_put(&self, name: &str, value: &[u8]) -> Result<(), BlobError> {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => crate::__private::imports::state_put(name, value),
            Inner::Native(n) => n.state_put(name, value),
        }
    }

    /// Open a store the operator granted to this plugin.
    pub fn open_store(&self, name: &str) -> Result<Store, BlobError> {
        match &self.inner {
            #[cfg(target_arch = "wasm32")]
            Inner::Wasm => crate::__private::imports::open(name).map(Store::wasm),
            Inner::Native(n) => n.open(name).map(Store::native),
        }
    }
}

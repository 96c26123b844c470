//! marsh's domain core: storage indexes, share numbers, and the storage backend contract the
//! protocol server calls.
//!
//! Architecture invariant: this crate depends on no runtime. It never sees wasmtime, a
//! generated binding, a wire type (CBOR) or a blob store driver. A backend behind
//! [`Backend`] may be a sandboxed wasm plugin, a natively linked one, or the conformance
//! suite's in-memory reference; nothing here can tell them apart.

mod backend;
mod ids;
mod time;

pub use backend::{Backend, BackendError, IndexPage, SweepReport, Usage, WriteVector};
pub use ids::{ParseStorageIndexError, ShareId, ShareKind, ShareNumber, StorageIndex};
pub use time::{civil, days_from_civil, unix_now};

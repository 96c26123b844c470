//! The wasm plugin host: loads marsh plugins (WebAssembly components built against
//! `marsh:plugin@0.1.0` or `@0.2.0`, side by side), checks what they are, runs them under per-plugin limits, and
//! exposes a backend plugin as a [`marsh_core::Backend`] and a persistence strategy plugin as a
//! [`WasmStrategy`].
//!
//! API boundary: wasmtime types and the generated bindings stay inside this crate (the
//! bindings in the private `generated` module). Callers see [`Runtime`], [`LoadedPlugin`],
//! [`WasmBackend`], [`WasmStrategy`], [`Grants`], [`PluginLimits`] and typed errors.
//!
//! Architecture invariant: a plugin can only reach the stores granted to it by name, never
//! holds the sealing key, and can never take the host down: every call has a memory cap,
//! a deadline and a bound on the bytes the host buffers for it, and a trap costs only the
//! instance it happened in.

mod backend;
mod engine;
mod generated;
mod grants;
mod host;
mod inspect;
mod lifecycle;
mod limiter;
mod payloads;
mod strategy;

use std::time::Duration;

pub use backend::{FaultStats, WasmBackend};
pub use engine::{EPOCH_TICK, LoadedPlugin, Runtime};
pub use grants::{AccountingSink, Grants, ProgressSink};
pub use inspect::{Description, Inspection, World};
pub use strategy::{PersistFailure, RecoveryReport, StartupPlan, WasmStrategy};

/// Epoch ticks for a deadline: rounded up (a call is never stopped before its deadline), plus
/// one for the tick in progress. A call is stopped at most one tick after its deadline.
pub(crate) fn deadline_ticks(d: Duration) -> u64 {
    d.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

/// The `marsh:plugin` package versions this host loads, oldest first. The last is the one the
/// SDK builds against. Retiring a version removes it here and its bindings from `generated`
/// (ARCHITECTURE.md, "Plugin ABI versions").
pub const ABI_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// Limits applied to every instance of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock deadline of one call, enforced by epoch interruption.
    pub call_deadline: Duration,
    /// The most bytes the host moves across the boundary in one call (a write's data, a
    /// read's answer, a blob put or get); larger transfers are split by the host.
    pub max_call_bytes: u64,
    /// Instances that may run at once (pooled plugins).
    pub max_instances: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 256 << 20,
            call_deadline: Duration::from_secs(30),
            max_call_bytes: 4 << 20,
            max_instances: 8,
        }
    }
}

/// Why a plugin file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
    /// Not a valid component for this engine.
    #[error("{origin} is not a loadable WebAssembly component: {error}")]
    Compile {
        /// Where the bytes came from.
        origin: String,
        /// wasmtime's explanation.
        error: String,
    },
    /// A component, but no marsh world.
    #[error(
        "{origin} exports no marsh world (exports: {exports}); a backend exports marsh:plugin/shares, a persistence strategy marsh:plugin/strategy"
    )]
    NotAPlugin {
        /// Where the bytes came from.
        origin: String,
        /// What it does export.
        exports: String,
    },
    /// Built against an ABI version this host does not implement.
    #[error(
        "{origin} was built against marsh:plugin@{found}, but this host loads marsh:plugin versions {supported}; rebuild the plugin with a marsh-plugin-sdk that targets one of them"
    )]
    AbiMismatch {
        /// Where the bytes came from.
        origin: String,
        /// The plugin's version.
        found: String,
        /// The versions the host loads, comma-separated.
        supported: String,
    },
    /// The engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The compiled-plugin cache failed.
    #[error("plugin cache: {0}")]
    Cache(String),
}

/// What a plugin's `init` refused with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitFailure {
    /// The config is wrong.
    BadConfig(String),
    /// Something it needs is unavailable.
    Unavailable(String),
    /// The operator must run a command first.
    RecoveryNeeded {
        /// What the plugin found.
        reason: String,
        /// The exact command.
        command: String,
    },
}

/// Why a plugin could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The plugin exports another world.
    #[error("expected a {expected} plugin, this one is a {found} plugin")]
    WrongWorld {
        /// What the caller needs.
        expected: World,
        /// What the plugin is.
        found: World,
    },
    /// Its imports cannot be satisfied.
    #[error("cannot link plugin: {0}")]
    Link(String),
    /// It trapped or timed out while starting.
    #[error("{0}")]
    Fault(String),
    /// Its `init` refused.
    #[error("plugin `{plugin}` refused to start: {failure}")]
    Init {
        /// The plugin's name.
        plugin: String,
        /// What it said.
        failure: InitFailure,
    },
}

impl std::fmt::Display for InitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitFailure::BadConfig(m) => write!(f, "bad config: {m}"),
            InitFailure::Unavailable(m) => write!(f, "unavailable: {m}"),
            InitFailure::RecoveryNeeded { reason, command } => write!(f, "recovery needed: {reason}; run `{command}`"),
        }
    }
}

/// A plugin's `init-error`, as the host reports it (backends and strategies alike).
pub(crate) fn init_failure(e: generated::marsh::plugin::types::InitError) -> InitFailure {
    use generated::marsh::plugin::types::InitError;
    match e {
        InitError::BadConfig(m) => InitFailure::BadConfig(m),
        InitError::Unavailable(m) => InitFailure::Unavailable(m),
        InitError::RecoveryNeeded(r) => InitFailure::RecoveryNeeded { reason: r.reason, command: r.command },
    }
}

impl Runtime {
    /// Ask a loaded plugin for its name and version (instantiates it with nothing granted).
    pub async fn describe(&self, plugin: &LoadedPlugin) -> Result<Description, String> {
        let grants = Grants::new(marsh_seal::SealKey::from_bytes([0; 32]));
        inspect::describe(&self.engine, &self.linker, &plugin.component, &plugin.inspection, grants).await
    }
}

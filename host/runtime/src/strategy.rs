//! [`WasmStrategy`]: a started accountant persistence strategy plugin (world `persistence`).
//!
//! One instance, calls serialised (a strategy orders what it writes). The same limits as a
//! backend apply, except that `recover` and `record` (which may snapshot) run under their own,
//! longer deadlines. A trap loses the instance; the next call gets a fresh one, initialised
//! with the same config.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use wasmtime::Store;

use crate::backend::FaultStats;
use crate::engine::{LoadedPlugin, Runtime};
use crate::generated::marsh::plugin::types;
use crate::generated::persistence::exports::marsh::plugin::strategy as ex;
use crate::generated::persistence::{Persistence, PersistencePre};
use crate::grants::Grants;
use crate::host::HostState;
use crate::lifecycle::{self, Exports, Site};
use crate::{InitFailure, PluginLimits, StartError, World};

/// How long one `record` call may run: long enough to snapshot a large database to a slow store.
pub const RECORD_DEADLINE: Duration = Duration::from_secs(600);

/// What a strategy wants done at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupPlan {
    /// Use the local database as it is.
    UseLocal,
    /// Recover now (the operator allowed automatic recovery).
    Recover,
}

/// What a recovery read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Change records applied.
    pub changes_read: u64,
    /// Snapshots restored.
    pub snapshots_read: u64,
    /// Blobs that did not unseal or parse, skipped.
    pub tampered: u64,
    /// Missing sequence ranges.
    pub gaps: Vec<String>,
}

/// Why a strategy call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistFailure {
    /// The plugin's store failed.
    #[error("persistence store: {0}")]
    Io(String),
    /// A sealed blob did not authenticate.
    #[error("tampered persistence blob: {0}")]
    Tampered(String),
    /// Persisted changes are missing.
    #[error("gap in persisted changes: {0}")]
    Gap(String),
    /// The plugin trapped, overran or misbehaved; its instance was discarded.
    #[error("{0}")]
    Fault(String),
    /// Start-up needs the operator.
    #[error("{0}")]
    Init(InitFailure),
}

fn persist_failure(e: ex::PersistError) -> PersistFailure {
    match e {
        ex::PersistError::Io(m) => PersistFailure::Io(m),
        ex::PersistError::Tampered(m) => PersistFailure::Tampered(m),
        ex::PersistError::Gap(m) => PersistFailure::Gap(m),
    }
}

impl Exports for Persistence {
    type Pre = PersistencePre<HostState>;

    async fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate_async(store).await
    }

    async fn info(&self, store: &mut Store<HostState>) -> wasmtime::Result<types::PluginInfo> {
        self.marsh_plugin_strategy().call_info(store).await
    }

    async fn init(
        &self,
        store: &mut Store<HostState>,
        config: &[types::ConfigEntry],
    ) -> wasmtime::Result<Result<(), types::InitError>> {
        self.marsh_plugin_strategy().call_init(store, config).await
    }
}

type Instance = lifecycle::Instance<Persistence>;

/// A started persistence strategy.
pub struct WasmStrategy {
    site: Site<Persistence>,
    instance: Mutex<Option<Instance>>,
}

impl std::fmt::Debug for WasmStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmStrategy").field("name", &self.site.name).finish_non_exhaustive()
    }
}

impl WasmStrategy {
    /// Start a persistence plugin and run its `init`.
    pub async fn start(
        runtime: &Runtime,
        plugin: &LoadedPlugin,
        grants: Grants,
        config: Vec<(String, String)>,
        limits: PluginLimits,
    ) -> Result<WasmStrategy, StartError> {
        plugin.expect_world(World::Persistence)?;
        let pre = runtime
            .linker
            .instantiate_pre(&plugin.component)
            .and_then(PersistencePre::new)
            .map_err(|e| StartError::Link(format!("{e:#}")))?;
        let (site, first, _) = Site::start(runtime, pre, World::Persistence, grants, config, limits).await?;
        Ok(WasmStrategy { site, instance: Mutex::new(Some(first)) })
    }

    /// The plugin's name, as it reported it.
    pub fn name(&self) -> &str {
        &self.site.name
    }

    /// Call and fault counters.
    pub fn stats(&self) -> Arc<FaultStats> {
        self.site.stats.clone()
    }

    /// Run `call` on the instance (a fresh one if the last call lost it) under `deadline`.
    async fn call<T>(
        &self,
        op: &str,
        deadline: Duration,
        call: impl AsyncFnOnce(&mut Instance) -> wasmtime::Result<T>,
    ) -> Result<T, PersistFailure> {
        let mut slot = self.instance.lock().await;
        // The instance is taken out for the call and put back only when the call returned:
        // a call abandoned half-way (its future dropped, e.g. a task aborted at shutdown)
        // drops the instance with it, and the next call gets a fresh one.
        let mut instance = match slot.take() {
            Some(instance) => instance,
            None => self.site.replacement().await.map_err(PersistFailure::Fault)?,
        };
        HostState::arm(&mut instance.store, deadline);
        self.site.stats.note_call();
        match tokio::time::timeout(self.site.backstop(deadline), call(&mut instance)).await {
            Ok(Ok(value)) => {
                *slot = Some(instance);
                Ok(value)
            }
            Ok(Err(trap)) => {
                let msg = self.site.describe_fault(op, deadline, &instance, &trap);
                Err(PersistFailure::Fault(self.site.fault(msg)))
            }
            Err(_) => {
                let msg = format!("plugin `{}` did not return from `{op}` within {deadline:?}", self.site.name);
                Err(PersistFailure::Fault(self.site.fault(msg)))
            }
        }
    }

    /// Ask the strategy whether the node can start on its local database.
    pub async fn startup(
        &self,
        present: bool,
        last_sequence: u64,
        auto_recover: bool,
    ) -> Result<StartupPlan, PersistFailure> {
        let state = ex::DbState { present, last_sequence };
        let answer = self
            .call("startup", self.site.limits.call_deadline, async |i: &mut Instance| {
                i.bindings.marsh_plugin_strategy().call_startup(&mut i.store, state, auto_recover).await
            })
            .await?;
        match answer {
            Ok(ex::Plan::UseLocal) => Ok(StartupPlan::UseLocal),
            Ok(ex::Plan::Recover) => Ok(StartupPlan::Recover),
            Err(e) => Err(PersistFailure::Init(crate::init_failure(e))),
        }
    }

    /// Persist changes numbered from `first_sequence`. The call may take a snapshot and write
    /// it out, so it runs under [`RECORD_DEADLINE`] (at least), not the per-call deadline; it
    /// runs in the background persister, never on a request's path.
    pub async fn record(&self, first_sequence: u64, changes: Vec<Vec<u8>>) -> Result<(), PersistFailure> {
        let deadline = self.site.limits.call_deadline.max(RECORD_DEADLINE);
        self.call("record", deadline, async |i: &mut Instance| {
            i.bindings.marsh_plugin_strategy().call_record(&mut i.store, first_sequence, &changes).await
        })
        .await?
        .map_err(persist_failure)
    }

    /// Rebuild the accounting database through the granted accountant, under `deadline`.
    pub async fn recover(&self, deadline: Duration) -> Result<RecoveryReport, PersistFailure> {
        let summary = self
            .call("recover", deadline, async |i: &mut Instance| {
                i.store.data_mut().recovering = true;
                let result = i.bindings.marsh_plugin_strategy().call_recover(&mut i.store).await;
                i.store.data_mut().recovering = false;
                result
            })
            .await?
            .map_err(persist_failure)?;
        Ok(RecoveryReport {
            changes_read: summary.changes_read,
            snapshots_read: summary.snapshots_read,
            tampered: summary.tampered,
            gaps: summary.gaps,
        })
    }
}

//! The persistence conformance kit's harness for wasm strategies: each case's strategy
//! instances are started from one loaded plugin, granted the kit's scratch store (as the
//! `shares` store and any other name the plugin's config names), sealing with the kit's node
//! key, recovering into the kit's database, their progress reports counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use marsh_accountant::Accountant;
use marsh_conformance::strategy::{Failure, Harness, Plan, Strategy, Summary};
use marsh_runtime::{
    Grants, InitFailure, LoadedPlugin, PersistFailure, PluginLimits, Runtime, StartupPlan, WasmStrategy,
};
use marsh_seal::SealKey;
use marsh_stores::BlobStore;

use crate::persistence::AccountantSink;

/// How long one recovery may take in the kit: its stores are in memory.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(120);

/// Starts a loaded persistence plugin for the kit.
pub struct StrategyHarness {
    runtime: Runtime,
    plugin: LoadedPlugin,
    config: Vec<(String, String)>,
    limits: PluginLimits,
}

impl std::fmt::Debug for StrategyHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrategyHarness").field("config", &self.config).finish_non_exhaustive()
    }
}

impl StrategyHarness {
    /// A harness for `plugin` with this config and these limits.
    pub fn new(runtime: Runtime, plugin: LoadedPlugin, config: Vec<(String, String)>, limits: PluginLimits) -> Self {
        StrategyHarness { runtime, plugin, config, limits }
    }
}

fn failure(f: PersistFailure) -> Failure {
    match f {
        PersistFailure::Tampered(m) => Failure::Tampered(m),
        PersistFailure::Gap(m) => Failure::Gap(m),
        other => Failure::Other(other.to_string()),
    }
}

struct Started(WasmStrategy);

#[async_trait::async_trait]
impl Strategy for Started {
    async fn startup(&self, present: bool, last_sequence: u64, auto_recover: bool) -> Result<Plan, Failure> {
        match self.0.startup(present, last_sequence, auto_recover).await {
            Ok(StartupPlan::UseLocal) => Ok(Plan::UseLocal),
            Ok(StartupPlan::Recover) => Ok(Plan::Recover),
            Err(PersistFailure::Init(InitFailure::RecoveryNeeded { .. })) => Ok(Plan::RecoveryNeeded),
            Err(f) => Err(failure(f)),
        }
    }

    async fn record(&self, first: u64, changes: Vec<Vec<u8>>) -> Result<(), Failure> {
        self.0.record(first, changes).await.map_err(failure)
    }

    async fn recover(&self) -> Result<Summary, Failure> {
        let r = self.0.recover(RECOVERY_DEADLINE).await.map_err(failure)?;
        Ok(Summary {
            changes_read: r.changes_read,
            snapshots_read: r.snapshots_read,
            tampered: r.tampered,
            gaps: r.gaps,
        })
    }
}

#[async_trait::async_trait]
impl Harness for StrategyHarness {
    async fn start(
        &self,
        store: Arc<dyn BlobStore>,
        key: [u8; 32],
        target: Arc<Accountant>,
        progress: Arc<AtomicU64>,
    ) -> Result<Box<dyn Strategy>, String> {
        let mut grants = Grants::new(SealKey::from_bytes(key))
            .store("shares", store.clone())
            .accounting(Arc::new(AccountantSink(target)))
            .progress(Arc::new(move |_: &str, _: u64, _: Option<u64>, _: &str| {
                progress.fetch_add(1, Ordering::Relaxed);
            }));
        if let Some((_, name)) = self.config.iter().find(|(k, _)| k == "store") {
            grants = grants.store(name, store);
        }
        let strategy = WasmStrategy::start(&self.runtime, &self.plugin, grants, self.config.clone(), self.limits)
            .await
            .map_err(|e| format!("starting the plugin: {e}"))?;
        Ok(Box::new(Started(strategy)))
    }
}

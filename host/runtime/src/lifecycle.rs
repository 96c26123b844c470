//! One plugin instance's life, the same for every world and ABI version: made from the
//! plugin's `InstancePre` in a `Store` of its own (a trap poisons a whole store in wasmtime
//! 48), asked who it is (`info`: its name binds the grants to it, so it seals under a key of
//! its own), initialised with the operator's config (`init`, under the call deadline and a
//! wall-clock backstop), used, and dropped with its store after any fault, which is described
//! once here (its memory cap, its deadline, or the trap, with what it wrote to stderr) and
//! counted in [`FaultStats`].
//!
//! [`Site`] is what the instances of one started plugin share; [`Exports`] is what a world's
//! bindings must answer for this to drive them. `WasmBackend` keeps a pool of instances and
//! `WasmStrategy` one; neither starts or replaces an instance any other way.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap};

use crate::backend::FaultStats;
use crate::engine::Runtime;
use crate::generated::marsh::plugin::types;
use crate::grants::Grants;
use crate::host::HostState;
use crate::{PluginLimits, StartError, World};

/// What every world's exports answer, whatever its ABI version: who the plugin is, and its
/// start with the operator's config.
pub(crate) trait Exports: Sized + Send + 'static {
    /// The world's `InstancePre`.
    type Pre: Send + Sync;

    /// A fresh instance in `store`.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;

    /// `info`.
    fn info(&self, store: &mut Store<HostState>) -> impl Future<Output = wasmtime::Result<types::PluginInfo>> + Send;

    /// `init` with `config`.
    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &[types::ConfigEntry],
    ) -> impl Future<Output = wasmtime::Result<Result<(), types::InitError>>> + Send;
}

/// One instance: its store and the world's bindings in it.
pub(crate) struct Instance<B> {
    pub(crate) store: Store<HostState>,
    pub(crate) bindings: B,
}

/// What the instances of one started plugin share.
pub(crate) struct Site<B: Exports> {
    /// The name the plugin gave in `info` (a placeholder until then).
    pub(crate) name: Arc<str>,
    pre: B::Pre,
    engine: wasmtime::Engine,
    grants: Grants,
    config: Vec<types::ConfigEntry>,
    pub(crate) limits: PluginLimits,
    pub(crate) stats: Arc<FaultStats>,
}

impl<B: Exports> Site<B> {
    /// Start the plugin: its first instance is made and asked `info`, the grants are bound to
    /// the name it gives in `world`, and `init` runs; the instance is handed back, ready.
    pub(crate) async fn start(
        runtime: &Runtime,
        pre: B::Pre,
        world: World,
        grants: Grants,
        config: Vec<(String, String)>,
        limits: PluginLimits,
    ) -> Result<(Site<B>, Instance<B>, types::PluginInfo), StartError> {
        let mut site: Site<B> = Site {
            name: "plugin".into(),
            pre,
            engine: runtime.engine.clone(),
            grants,
            config: config.into_iter().map(|(key, value)| types::ConfigEntry { key, value }).collect(),
            limits,
            stats: Arc::default(),
        };
        let mut first = site.instantiate().await.map_err(StartError::Fault)?;
        HostState::arm(&mut first.store, site.limits.call_deadline);
        let info =
            match tokio::time::timeout(site.backstop(site.limits.call_deadline), first.bindings.info(&mut first.store))
                .await
            {
                Ok(Ok(info)) => info,
                Ok(Err(trap)) => {
                    return Err(StartError::Fault(site.describe_fault(
                        "info",
                        site.limits.call_deadline,
                        &first,
                        &trap,
                    )));
                }
                Err(_) => {
                    return Err(StartError::Fault(format!(
                        "`info` did not return within {:?}",
                        site.limits.call_deadline
                    )));
                }
            };
        site.name = info.name.as_str().into();
        site.grants.bind(world, &site.name);
        first.store.data_mut().plugin = site.name.clone();
        first.store.data_mut().grants = site.grants.clone();
        site.init(&mut first).await?;
        Ok((site, first, info))
    }

    /// A fresh instance (counted), not yet initialised.
    async fn instantiate(&self) -> Result<Instance<B>, String> {
        let mut store = HostState::new_store(&self.engine, self.name.clone(), self.grants.clone(), &self.limits);
        let bindings =
            B::instantiate(&self.pre, &mut store).await.map_err(|e| format!("instantiation failed: {e:#}"))?;
        self.stats.note_instance();
        Ok(Instance { store, bindings })
    }

    /// `init` with the operator's config, under the call deadline and the backstop.
    async fn init(&self, instance: &mut Instance<B>) -> Result<(), StartError> {
        HostState::arm(&mut instance.store, self.limits.call_deadline);
        let call = instance.bindings.init(&mut instance.store, &self.config);
        match tokio::time::timeout(self.backstop(self.limits.call_deadline), call).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(StartError::Init { plugin: self.name.to_string(), failure: crate::init_failure(e) }),
            Ok(Err(trap)) => {
                Err(StartError::Fault(self.describe_fault("init", self.limits.call_deadline, instance, &trap)))
            }
            Err(_) => Err(StartError::Fault(format!(
                "init did not return within {:?}",
                self.backstop(self.limits.call_deadline)
            ))),
        }
    }

    /// A fresh instance with `init` run: the replacement for one a fault took.
    pub(crate) async fn replacement(&self) -> Result<Instance<B>, String> {
        let mut fresh = self.instantiate().await?;
        self.init(&mut fresh).await.map_err(|e| format!("replacement instance did not start: {e}"))?;
        Ok(fresh)
    }

    /// A wall-clock bound past an epoch `deadline`, for calls stuck in a host import.
    pub(crate) fn backstop(&self, deadline: Duration) -> Duration {
        deadline + Duration::from_secs(1)
    }

    /// What a failed call (run under `deadline`) says: the memory cap it blew, the deadline it
    /// overran, or the trap; with what the plugin wrote to stderr.
    pub(crate) fn describe_fault(
        &self,
        op: &str,
        deadline: Duration,
        instance: &Instance<B>,
        error: &wasmtime::Error,
    ) -> String {
        let state = instance.store.data();
        let mut msg = if let Some(asked) = state.memory.refused {
            format!(
                "plugin `{}` exceeded its memory cap of {} MiB in `{op}` (asked for {} MiB)",
                self.name,
                self.limits.memory_bytes >> 20,
                asked >> 20
            )
        } else if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            format!("plugin `{}` ran past its deadline of {deadline:?} in `{op}`", self.name)
        } else {
            format!("plugin `{}` trapped in `{op}`: {}", self.name, error.root_cause())
        };
        let stderr = state.stderr_text();
        if !stderr.is_empty() {
            msg.push_str(&format!("; plugin stderr: {stderr}"));
        }
        msg
    }

    /// Count and log a fault whose instance is being dropped; its message.
    pub(crate) fn fault(&self, message: String) -> String {
        self.stats.note_fault(&message);
        tracing::warn!(plugin = %self.name, faults = self.stats.faults(), "{message}; instance discarded");
        message
    }
}

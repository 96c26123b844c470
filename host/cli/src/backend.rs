//! Starting the backend: its stores opened and claimed for this node, then the plugin (or, in
//! benchmark builds, the same code linked natively) granted them.

use std::sync::Arc;

use marsh_node::{Identity, NodeConfig, NodeDir, PluginChoice};
use marsh_runtime::{FaultStats, Grants, InitFailure, Runtime, StartError, WasmBackend};
use marsh_stores::{BlobStore, Partition};

use crate::Error;
use crate::stores::{self, Opened};

/// A started backend and the stores it was granted.
#[derive(Clone)]
pub struct StartedBackend {
    /// The backend.
    pub backend: Arc<dyn marsh_core::Backend>,
    /// Its stores, in `backend.stores` order.
    pub stores: Vec<Opened>,
    /// The plugin's name and counters (none for a natively linked backend).
    pub plugin: Option<(String, Arc<FaultStats>)>,
}

impl std::fmt::Debug for StartedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedBackend").field("stores", &self.stores).finish_non_exhaustive()
    }
}

/// Open and claim the backend's stores, then start the backend plugin over them.
pub async fn start(
    dir: &NodeDir,
    config: &NodeConfig,
    id: &Identity,
    runtime: &Runtime,
) -> Result<StartedBackend, Error> {
    let stores = stores::open_backend_stores(config).await?;
    stores::claim_all(dir, config, id, &stores).await?;
    let granted = backend_grants(config, &stores);
    let plugin_config = config.backend.config.clone();
    if let PluginChoice::Native(name) = &config.backend.plugin {
        let backend = native(name, &id.seal_key, granted, plugin_config)?;
        return Ok(StartedBackend { backend, stores, plugin: None });
    }
    let plugin = crate::plugins::load(runtime, &config.backend.plugin)?;
    let mut grants = Grants::new(id.seal_key.clone());
    for (name, store) in granted {
        grants = grants.store(&name, store);
    }
    let limits = crate::plugins::limits(&config.limits);
    match WasmBackend::start(runtime, &plugin, grants, plugin_config, limits).await {
        Ok(b) => {
            let plugin = Some((b.name().to_owned(), b.stats()));
            Ok(StartedBackend { backend: Arc::new(b), stores, plugin })
        }
        Err(StartError::Init { plugin, failure: InitFailure::RecoveryNeeded { reason, command } }) => {
            Err(Error::RecoveryNeeded { role: "backend", plugin, reason, command })
        }
        Err(StartError::Init { plugin, failure: InitFailure::BadConfig(message) }) => {
            Err(Error::PluginConfig { role: "backend", plugin, message, dir: dir.root().display().to_string() })
        }
        Err(e) => Err(e.into()),
    }
}

/// The backend's stores as it is granted them: a store it shares with the persistence
/// strategy is seen without the strategy's objects ([`Partition::Backend`]).
fn backend_grants(config: &NodeConfig, stores: &[Opened]) -> Vec<(String, Arc<dyn BlobStore>)> {
    stores
        .iter()
        .map(|s| {
            let store = if config.persistence.stores.contains(&s.name) {
                Partition::Backend.view(s.store.clone())
            } else {
                s.store.clone()
            };
            (s.name.clone(), store)
        })
        .collect()
}

#[cfg(feature = "native-backends")]
fn native(
    name: &str,
    seal_key: &marsh_seal::SealKey,
    stores: Vec<(String, Arc<dyn BlobStore>)>,
    config: Vec<(String, String)>,
) -> Result<Arc<dyn marsh_core::Backend>, Error> {
    let mut grants = marsh_native::NativeGrants::new(seal_key.clone());
    for (n, store) in stores {
        grants = grants.store(&n, store);
    }
    let failed = |e: marsh_native::NativeStartError| Error::Native(name.to_owned(), e.to_string());
    Ok(match name {
        "disk" => Arc::new(marsh_native::NativeDisk::start(grants, config).map_err(failed)?),
        "memory" => Arc::new(marsh_native::NativeMemory::start(grants, config).map_err(failed)?),
        other => return Err(Error::Native(other.to_owned(), "no such native backend (disk, memory)".into())),
    })
}

#[cfg(not(feature = "native-backends"))]
fn native(
    name: &str,
    _: &marsh_seal::SealKey,
    _: Vec<(String, Arc<dyn BlobStore>)>,
    _: Vec<(String, String)>,
) -> Result<Arc<dyn marsh_core::Backend>, Error> {
    Err(Error::Native(
        name.to_owned(),
        "needs a marsh built with the `native-backends` feature (used by `make bench` only)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use marsh_stores::{BlobKey, MemoryStore, PutMode, StoreError};

    use super::*;

    fn opened(name: &str, store: Arc<dyn BlobStore>) -> Opened {
        Opened { name: name.to_owned(), store, s3: None, location: "memory".into() }
    }

    #[tokio::test]
    async fn a_backend_never_sees_the_strategys_objects_in_a_store_they_share() {
        // The defaults: backend and persistence both on `shares`.
        let mut settings = marsh_node::config::defaults();
        settings.push(marsh_node::Setting {
            key: "backend.stores".into(),
            value: Some("shares,own".into()),
            is_default: false,
            help: "",
        });
        let config = NodeConfig::from_settings(&settings).unwrap();
        let key = |k: &str| BlobKey::new(k).unwrap();
        let (shares, own): (Arc<dyn BlobStore>, Arc<dyn BlobStore>) =
            (Arc::new(MemoryStore::new("shares")), Arc::new(MemoryStore::new("own")));
        for store in [&shares, &own] {
            store.put(&key("accounting/00000000000000000001"), b"sealed".to_vec(), PutMode::CreateOnly).await.unwrap();
            store.put(&key("shares/aa/1"), b"share".to_vec(), PutMode::CreateOnly).await.unwrap();
        }
        let granted = backend_grants(&config, &[opened("shares", shares), opened("own", own)]);
        let (shared, unshared) = (&granted[0].1, &granted[1].1);
        assert_eq!(shared.list("", None, 100).await.unwrap().keys, ["shares/aa/1"]);
        let planted = shared.put(&key("accounting/00000000000000000002"), vec![0], PutMode::CreateOnly).await;
        assert!(matches!(planted, Err(StoreError::Denied(_))), "{planted:?}");
        assert!(matches!(shared.delete(&key("accounting/00000000000000000001")).await, Err(StoreError::Denied(_))));
        // A store the strategy was not granted is the backend's whole.
        assert_eq!(unshared.list("", None, 100).await.unwrap().keys.len(), 2);
    }
}

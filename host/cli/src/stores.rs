//! The blob stores a node's configuration names (`store.NAME` = `dir:PATH`, `s3` or
//! `memory`): opening them (an S3 store is probed, so a wrong bucket or credential fails here),
//! claiming them for this node, and the check that refuses a config change which would hide
//! the shares a store already holds.

use std::sync::Arc;

use marsh_node::owner::{self, Claimed, Owner};
use marsh_node::{Identity, NodeConfig, NodeDir, StoreSpec};
use marsh_stores::{BlobStore, DirStore, MemoryStore};
use marsh_stores_s3::{S3Config, S3Store};

use crate::Error;

/// One opened store.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Its name (`store.NAME`).
    pub name: String,
    /// The store.
    pub store: Arc<dyn BlobStore>,
    /// Set for S3 stores, for their request counts.
    pub s3: Option<S3Store>,
    /// `dir:/path`, `s3://bucket/prefix at endpoint`, or `memory`.
    pub location: String,
}

impl Opened {
    /// Whether the store lives only as long as the process (`memory`).
    pub fn is_ephemeral(&self) -> bool {
        self.location == "memory"
    }
}

/// Open store `name` as `config` describes it; `named_by` is the key that named it.
pub async fn open(config: &NodeConfig, name: &str, named_by: &'static str) -> Result<Opened, Error> {
    let spec = config.stores.get(name).ok_or_else(|| Error::StoreNotConfigured { named_by, name: name.to_owned() })?;
    let failed = |location: &str, message: String| Error::Store {
        name: name.to_owned(),
        location: location.to_owned(),
        message,
    };
    match spec {
        StoreSpec::Memory => Ok(Opened {
            name: name.to_owned(),
            store: Arc::new(MemoryStore::new(name)),
            s3: None,
            location: "memory".into(),
        }),
        StoreSpec::Dir(path) => {
            let location = format!("dir:{}", path.display());
            let store = DirStore::open(name, path).map_err(|e| failed(&location, e.to_string()))?;
            Ok(Opened { name: name.to_owned(), store: Arc::new(store), s3: None, location })
        }
        StoreSpec::S3(fields) => {
            let s3_config = S3Config::from_fields(name, fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|e| failed("s3", format!("{e} (set it with `marsh config set s3.{name}.FIELD VALUE`)")))?;
            let location = s3_config.location();
            let s3 = S3Store::open(s3_config).await.map_err(|e| failed(&location, e.to_string()))?;
            Ok(Opened { name: name.to_owned(), store: Arc::new(s3.clone()), s3: Some(s3), location })
        }
    }
}

/// The stores granted to the backend plugin (`backend.stores`), opened, in order.
pub async fn open_backend_stores(config: &NodeConfig) -> Result<Vec<Opened>, Error> {
    let mut out = Vec::new();
    for name in &config.backend.stores {
        out.push(open(config, name, "backend.stores").await?);
    }
    Ok(out)
}

/// This node as a store owner, claiming now.
pub fn me(config: &NodeConfig, id: &Identity) -> Owner {
    Owner { server_id: id.server_id.clone(), nickname: config.nickname.clone(), since: marsh_core::unix_now() }
}

/// Claim every store that outlives the process (all but `memory`) for this node.
pub async fn claim_all(dir: &NodeDir, config: &NodeConfig, id: &Identity, stores: &[Opened]) -> Result<(), Error> {
    let me = me(config, id);
    let root = dir.root().display().to_string();
    for s in stores.iter().filter(|s| !s.is_ephemeral()) {
        match owner::claim(s.store.as_ref(), &me, &id.seal_key, &root).await? {
            Claimed::New => tracing::info!(store = %s.name, "claimed {} for this node", s.location),
            Claimed::Ours => {}
        }
    }
    Ok(())
}

/// Whether a store holds anything besides the host's own records.
pub async fn holds_objects(s: &Opened) -> Result<bool, Error> {
    let page = s.store.list("", None, 1).await.map_err(|e| Error::Store {
        name: s.name.clone(),
        location: s.location.clone(),
        message: format!("listing: {e}"),
    })?;
    Ok(!page.keys.is_empty())
}

/// Config keys that decide where or how shares are kept (`granted`: the backend's stores).
fn placement_key(granted: &[&str], key: &str) -> bool {
    if matches!(key, "backend.plugin" | "backend.stores") {
        return true;
    }
    if let Some(name) = key.strip_prefix("store.") {
        return granted.contains(&name);
    }
    if let Some(rest) = key.strip_prefix("s3.")
        && let Some((name, field)) = rest.split_once('.')
    {
        return granted.contains(&name) && matches!(field, "endpoint" | "bucket" | "prefix" | "region");
    }
    false
}

/// Refuse a config change (`marsh config set`/`unset`) that would move or reinterpret the
/// shares of a node that has some.
pub async fn check_switch(dir: &NodeDir, key: &str, new_value: Option<&str>) -> Result<(), Error> {
    // Only the backend's store names are read here: a change elsewhere never needs the rest of
    // the config to be complete (`expire.mode cutoff-date` comes before its date).
    let granted = dir.get("backend.stores")?;
    let granted: Vec<&str> = granted.split(',').map(str::trim).collect();
    if !placement_key(&granted, key) || dir.get(key).ok().as_deref() == new_value {
        return Ok(());
    }
    let has_run = dir.accountant_path().exists();
    let stores = match async { open_backend_stores(&dir.config()?).await }.await {
        Ok(s) => s,
        // The current settings never worked (a node being configured): nothing can be there.
        Err(_) if !has_run => return Ok(()),
        Err(e) => {
            return Err(Error::Placement {
                key: key.to_owned(),
                reason: format!("this node has run, and its current store cannot be checked for shares: {e}"),
            });
        }
    };
    for s in &stores {
        if holds_objects(s).await? {
            return Err(Error::Placement {
                key: key.to_owned(),
                reason: format!(
                    "this node already keeps shares in store `{}` ({}) with backend `{}`. Changing the backend or \
                     where it stores would hide those shares from clients. Set up the new backend on a new node \
                     (`marsh init`), or empty the store first.",
                    s.name,
                    s.location,
                    dir.get("backend.plugin")?
                ),
            });
        }
    }
    Ok(())
}

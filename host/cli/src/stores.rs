//! Opening the blob stores a node's config names (`store.NAME` = `dir:PATH`, `s3` or `memory`),
//! claiming them for this node, and the `marsh store` commands: who owns a store, releasing or
//! taking one over deliberately, and sweeping leftovers offline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use marsh_node::owner::{self, Claimed, Owner};
use marsh_node::{Identity, NodeDir};
use marsh_stores::{BlobStore, DirStore, MemoryStore};
use marsh_stores_s3::{S3Config, S3Store};

/// One opened store.
#[derive(Debug, Clone)]
pub struct Opened {
    pub name: String,
    pub store: Arc<dyn BlobStore>,
    /// Set for S3 stores, for their request counts.
    pub s3: Option<S3Store>,
    /// `dir:/path`, `s3://bucket/prefix at endpoint`, or `memory`.
    pub location: String,
}

/// The settings of S3 store `name` from `s3.NAME.*`.
pub fn s3_config(node: &NodeDir, name: &str) -> anyhow::Result<S3Config> {
    let prefix = format!("s3.{name}.");
    let mut fields: Vec<(String, String)> =
        node.with_prefix(&prefix)?.into_iter().map(|(k, v)| (k.trim_start_matches(&prefix).to_owned(), v)).collect();
    // Keys with defaults that were never set.
    for field in ["region", "timeout", "max-concurrency", "max-attempts", "part-size", "path-style"] {
        if !fields.iter().any(|(f, _)| f == field) {
            fields.push((field.to_owned(), node.get(&format!("{prefix}{field}"))?));
        }
    }
    for (f, v) in &mut fields {
        if f == "part-size" {
            *v = marsh_node::config::parse_size(v).map(|n| n.to_string()).unwrap_or_else(|| v.clone());
        }
    }
    S3Config::from_fields(name, fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .with_context(|| format!("store `{name}` (set it with `marsh config set {prefix}FIELD VALUE`)"))
}

/// Open store `name` as the config describes it; S3 stores are checked (bucket, credentials).
pub async fn open(node: &NodeDir, name: &str) -> anyhow::Result<Opened> {
    let spec = node.get(&format!("store.{name}")).with_context(|| format!("store `{name}` is not configured"))?;
    let name_owned = name.to_owned();
    if spec == "memory" {
        let store = Arc::new(MemoryStore::new(name));
        return Ok(Opened { name: name_owned, store, s3: None, location: "memory".into() });
    }
    if spec == "s3" {
        let config = s3_config(node, name)?;
        let location = config.location();
        let s3 = S3Store::open(config).await?;
        return Ok(Opened { name: name_owned, store: Arc::new(s3.clone()), s3: Some(s3), location });
    }
    match spec.strip_prefix("dir:") {
        Some(path) => Ok(Opened {
            name: name_owned,
            store: Arc::new(DirStore::open(name, Path::new(path))?),
            s3: None,
            location: spec.clone(),
        }),
        None => bail!("store.{name} = {spec:?}: expected dir:PATH, s3 or memory"),
    }
}

/// The stores granted to the backend plugin (`backend.stores`), opened.
pub async fn open_backend_stores(node: &NodeDir) -> anyhow::Result<Vec<Opened>> {
    let mut out = Vec::new();
    for name in node.get("backend.stores")?.split(',') {
        out.push(open(node, name.trim()).await.with_context(|| format!("backend.stores names `{}`", name.trim()))?);
    }
    Ok(out)
}

pub fn me(node: &NodeDir, id: &Identity) -> anyhow::Result<Owner> {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(Owner { server_id: id.server_id.clone(), nickname: node.get("node.nickname")?, since })
}

/// Claim every store that outlives the process (all but `memory`) for this node.
pub async fn claim_all(node: &NodeDir, id: &Identity, stores: &[Opened]) -> anyhow::Result<()> {
    let me = me(node, id)?;
    let dir = node.root().display().to_string();
    for s in stores.iter().filter(|s| s.location != "memory") {
        match owner::claim(s.store.as_ref(), &me, &id.seal_key, &dir).await? {
            Claimed::New => tracing::info!(store = %s.name, "claimed {} for this node", s.location),
            Claimed::Ours => {}
        }
    }
    Ok(())
}

/// Whether a store holds anything besides the host's own records.
pub async fn holds_objects(store: &dyn BlobStore) -> anyhow::Result<bool> {
    Ok(!store.list("", None, 1).await?.keys.is_empty())
}

/// Config keys that decide where or how shares are kept.
fn placement_key(node: &NodeDir, key: &str) -> anyhow::Result<bool> {
    if matches!(key, "backend.plugin" | "backend.stores") {
        return Ok(true);
    }
    let granted: Vec<String> = node.get("backend.stores")?.split(',').map(|s| s.trim().to_owned()).collect();
    if let Some(name) = key.strip_prefix("store.") {
        return Ok(granted.iter().any(|g| g == name));
    }
    if let Some(rest) = key.strip_prefix("s3.")
        && let Some((name, field)) = rest.split_once('.')
    {
        return Ok(granted.iter().any(|g| g == name) && matches!(field, "endpoint" | "bucket" | "prefix" | "region"));
    }
    Ok(false)
}

/// Refuse a config change that would move or reinterpret the shares of a node that has some.
pub async fn check_switch(node: &NodeDir, key: &str, new_value: Option<&str>) -> anyhow::Result<()> {
    if !placement_key(node, key)? || node.get(key).ok().as_deref() == new_value {
        return Ok(());
    }
    let has_run = node.cache().join(crate::node_cmd::ACCOUNTANT_DB).exists();
    let stores = match open_backend_stores(node).await {
        Ok(s) => s,
        // The current settings never worked (a node being configured): nothing can be there.
        Err(_) if !has_run => return Ok(()),
        Err(e) => {
            return Err(e.context(format!(
                "refusing to change `{key}`: this node has run, and its current store cannot be checked for shares"
            )));
        }
    };
    for s in &stores {
        if holds_objects(s.store.as_ref()).await.with_context(|| format!("checking store `{}`", s.name))? {
            bail!(
                "refusing to change `{key}`: this node already keeps shares in store `{}` ({}) with backend \
                 `{}`. Changing the backend or where it stores would hide those shares from clients. Set up \
                 the new backend on a new node (`marsh init`), or empty the store first.",
                s.name,
                s.location,
                node.get("backend.plugin")?
            );
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Show who owns each store the backend uses.
    Owner {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Give up this node's claim on a store, so another node may use it (stop this node first).
    Release {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The store's name (as in `store.NAME`).
        store: String,
        /// Remove the owner record whatever it says (a damaged record; no other node uses the store).
        #[arg(long)]
        force: bool,
    },
    /// Take a store over from a node that is gone for good.
    TakeOver {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The store's name.
        store: String,
        /// The server id of the node that owns it now (as the refusal to start printed it).
        #[arg(long)]
        from: String,
    },
    /// Remove leftovers of interrupted uploads now (the running node also does this periodically).
    Sweep {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Only leftovers older than this many seconds (default: backend.sweep-grace).
        #[arg(long)]
        grace: Option<u64>,
    },
}

pub async fn run(cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        StoreCommand::Owner { dir } => {
            let node = NodeDir::open(&dir)?;
            let id = node.identity()?;
            for s in open_backend_stores(&node).await? {
                match owner::owner_of(s.store.as_ref(), &id.seal_key).await? {
                    None => writeln!(out, "{}: {} — unclaimed", s.name, s.location)?,
                    Some(o) => {
                        let who = if o.server_id == id.server_id { " (this node)" } else { "" };
                        writeln!(
                            out,
                            "{}: {} — owned by {}{who} \"{}\" since {}",
                            s.name, s.location, o.server_id, o.nickname, o.since
                        )?;
                    }
                }
            }
        }
        StoreCommand::Release { dir, store, force } => {
            let node = NodeDir::open(&dir)?;
            let id = node.identity()?;
            let s = open(&node, &store).await?;
            let released = if force {
                owner::release_forced(s.store.as_ref()).await?
            } else {
                owner::release(s.store.as_ref(), &me(&node, &id)?, &id.seal_key).await?
            };
            if released {
                writeln!(out, "released store `{store}` ({}); do not start this node on it again", s.location)?;
            } else {
                writeln!(out, "store `{store}` ({}) was not claimed", s.location)?;
            }
        }
        StoreCommand::TakeOver { dir, store, from } => {
            let node = NodeDir::open(&dir)?;
            let id = node.identity()?;
            let s = open(&node, &store).await?;
            owner::take_over(s.store.as_ref(), &me(&node, &id)?, &id.seal_key, &from).await?;
            writeln!(
                out,
                "store `{store}` ({}) now belongs to {}; make sure {from} never runs on it again",
                s.location, id.server_id
            )?;
        }
        StoreCommand::Sweep { dir, grace } => {
            let node = NodeDir::open(&dir)?;
            let grace = match grace {
                Some(g) => g,
                None => node.get("backend.sweep-grace")?.parse()?,
            };
            let started = crate::node_cmd::start_backend(&node).await?;
            let report = started.backend.sweep(grace).await?;
            writeln!(
                out,
                "swept: {} objects examined, {} removed ({} bytes)",
                report.examined, report.removed, report.removed_bytes
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

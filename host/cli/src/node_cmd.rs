//! The node commands: `marsh init`, `marsh config`, `marsh announce`, `marsh run`, and starting
//! the backend over its claimed stores (shared with `marsh store sweep`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use marsh_accountant::Accountant;
use marsh_node::{InitOptions, NodeDir, config::parse_size};
use marsh_runtime::{Grants, InitFailure, PluginLimits, Runtime, StartError, WasmBackend};
use marsh_server::{ServiceConfig, StorageService, SystemClock};
use marsh_stores::BlobStore;
use marsh_stores::state::StateStore;

use crate::stores::{self, Opened};

/// The accountant's database, under `NODE_DIR/cache/`.
pub const ACCOUNTANT_DB: &str = "accountant.sqlite";

/// Exit status of `marsh run` when a plugin asks for `marsh recover`.
pub const EXIT_RECOVERY_NEEDED: u8 = 3;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The node directory to create.
    #[arg(long)]
    dir: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:3457")]
    listen: SocketAddr,
    /// Host clients connect to (default: the listen IP).
    #[arg(long)]
    public_host: Option<String>,
    /// Port clients connect to (default: the listen port).
    #[arg(long)]
    public_port: Option<u16>,
    /// Name shown to clients.
    #[arg(long, default_value = "marsh")]
    nickname: String,
    /// Where the default disk store keeps shares (default: NODE_DIR-shares beside the node).
    #[arg(long)]
    storage_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print one key's effective value.
    Get { key: String },
    /// Set a key (validated).
    Set { key: String, value: String },
    /// Return a key to its default.
    Unset { key: String },
    /// Every key, with defaults.
    List,
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let options = InitOptions {
        listen: args.listen,
        public_host: args.public_host,
        public_port: args.public_port,
        nickname: args.nickname,
        storage_dir: args.storage_dir,
    };
    let node = NodeDir::init(&args.dir, &options)?;
    let id = node.identity()?;
    let (host, port) = public_address(&node)?;
    println!("created marsh node {} in {}", id.server_id, node.root().display());
    println!("NURL: {}", id.nurl(&host, port));
    println!("Back up {} now: it holds the node's whole identity and config.", node.root().display());
    Ok(ExitCode::SUCCESS)
}

pub async fn config(dir: &Path, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let node = NodeDir::open(dir)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ConfigCommand::Get { key } => writeln!(out, "{}", node.get(&key)?)?,
        ConfigCommand::Set { key, value } => {
            stores::check_switch(&node, &key, Some(value.trim())).await?;
            let stored = node.set(&key, &value)?;
            writeln!(out, "{key} = {stored}")?;
        }
        ConfigCommand::Unset { key } => {
            stores::check_switch(&node, &key, None).await?;
            node.unset(&key)?;
        }
        ConfigCommand::List => {
            for s in node.settings()? {
                let value = s.value.as_deref().unwrap_or("(unset)");
                let note = if s.is_default { "  (default)" } else { "" };
                writeln!(out, "{} = {value}{note}    # {}", s.key, s.help)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn public_address(node: &NodeDir) -> anyhow::Result<(String, u16)> {
    let listen: SocketAddr = node.get("node.listen")?.parse().context("node.listen")?;
    let host = node.get("node.public-host").unwrap_or_else(|_| listen.ip().to_string());
    let port = match node.get("node.public-port") {
        Ok(p) => p.parse().context("node.public-port")?,
        Err(_) => listen.port(),
    };
    Ok((host, port))
}

pub fn announce(dir: &Path, account: Option<&str>) -> anyhow::Result<ExitCode> {
    let node = NodeDir::open(dir)?;
    let id = node.identity()?;
    let (host, port) = public_address(&node)?;
    let nickname = node.get("node.nickname")?;
    let nurl = match account {
        None => id.nurl(&host, port),
        Some(name) => crate::account_cmd::nurl(&node, &crate::account_cmd::open(&node)?, name)?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "# NURL: {nurl}")?;
    writeln!(out, "# servers.yaml entry for a Tahoe-LAFS 1.20 client (NODEDIR/private/servers.yaml):")?;
    writeln!(out, "storage:")?;
    writeln!(out, "  {}:", id.server_id)?;
    writeln!(out, "    ann:")?;
    writeln!(out, "      nickname: {nickname}")?;
    writeln!(out, "      anonymous-storage-FURL: {}", id.furl())?;
    writeln!(out, "      anonymous-storage-NURLs:")?;
    writeln!(out, "        - {nurl}")?;
    writeln!(out, "      permutation-seed-base32: {}", id.permutation_seed)?;
    Ok(ExitCode::SUCCESS)
}

/// Find a first-party plugin by name: `$MARSH_PLUGIN_DIR`, then beside the executable.
pub(crate) fn first_party(file: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("MARSH_PLUGIN_DIR") {
        candidates.push(PathBuf::from(dir).join(file));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        candidates.push(exe_dir.join("plugins").join(file));
        candidates.push(exe_dir.join("../wasm32-wasip2/plugin").join(file));
    }
    candidates.into_iter().find(|p| p.exists()).with_context(|| {
        format!("cannot find the first-party plugin {file}: build it with `make plugins` or set MARSH_PLUGIN_DIR")
    })
}

fn plugin_path(setting: &str) -> anyhow::Result<PathBuf> {
    match setting {
        "disk" => first_party("backend_disk.wasm"),
        "s3" => first_party("backend_s3.wasm"),
        "memory" => first_party("backend_memory.wasm"),
        path => Ok(PathBuf::from(path)),
    }
}

fn size(node: &NodeDir, key: &str) -> anyhow::Result<u64> {
    let v = node.get(key)?;
    parse_size(&v).with_context(|| format!("{key} = {v:?} is not a size"))
}

/// A plugin asked the operator to run a command before the node can start.
#[derive(Debug, thiserror::Error)]
#[error("the backend plugin `{plugin}` needs recovery before the node can start: {reason}\nrun: {command}")]
pub struct RecoveryNeeded {
    plugin: String,
    reason: String,
    command: String,
}

/// A started backend and the stores it was granted.
pub struct Started {
    pub backend: Arc<dyn marsh_core::Backend>,
    pub stores: Vec<Opened>,
    /// The process's one wasm runtime, for the persistence plugin too.
    pub runtime: Runtime,
}

/// Open and claim the backend's stores, then start the backend plugin over them.
pub async fn start_backend(node: &NodeDir) -> anyhow::Result<Started> {
    let id = node.identity()?;
    let cache = node.cache();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let stores = stores::open_backend_stores(node).await?;
    stores::claim_all(node, &id, &stores).await?;
    let limits = PluginLimits {
        memory_bytes: usize::try_from(size(node, "limits.memory")?).unwrap_or(usize::MAX),
        call_deadline: Duration::from_secs(node.get("limits.call-deadline")?.parse()?),
        max_call_bytes: size(node, "limits.max-call-bytes")?,
        max_instances: node.get("limits.instances")?.parse()?,
    };
    let plugin_config: Vec<(String, String)> = node
        .with_prefix("backend.config.")?
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("backend.config.").to_owned(), v))
        .collect();
    let granted: Vec<(String, Arc<dyn BlobStore>)> = stores.iter().map(|s| (s.name.clone(), s.store.clone())).collect();
    let plugin_setting = node.get("backend.plugin")?;
    let runtime = Runtime::new(Some(cache.join("plugins")))?;
    if let Some(name) = plugin_setting.strip_prefix("native:") {
        let backend = native_backend(name, &id.seal_key, granted, plugin_config)?;
        return Ok(Started { backend, stores, runtime });
    }
    let mut grants = Grants::new(id.seal_key.clone());
    for (name, store) in granted {
        grants = grants.store(&name, store);
    }
    let plugin = runtime.load(&plugin_path(&plugin_setting)?)?;
    let backend = match WasmBackend::start(&runtime, &plugin, grants, plugin_config, limits).await {
        Ok(b) => b,
        Err(StartError::Init { plugin, failure: InitFailure::RecoveryNeeded { reason, command } }) => {
            return Err(RecoveryNeeded { plugin, reason, command }.into());
        }
        Err(StartError::Init { plugin, failure: InitFailure::BadConfig(m) }) => {
            bail!(
                "the backend plugin `{plugin}` refused its config: {m}\nfix it with `marsh config set backend.config.KEY VALUE --dir {}`",
                node.root().display()
            )
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Started { backend: Arc::new(backend), stores, runtime })
}

pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let node = NodeDir::open(dir)?;
    let id = node.identity()?;
    let started = match start_backend(&node).await {
        Ok(s) => s,
        Err(e) => match e.downcast::<RecoveryNeeded>() {
            Ok(r) => {
                eprintln!("marsh: {r}");
                return Ok(ExitCode::from(EXIT_RECOVERY_NEEDED));
            }
            Err(e) => return Err(e),
        },
    };
    let (accountant, strategy) = match crate::persist::startup(&node, &started.runtime, &started.stores).await? {
        crate::persist::Startup::Serve(a, s) => (a, s),
        crate::persist::Startup::RecoveryNeeded(message) => {
            eprintln!("marsh: {message}");
            return Ok(ExitCode::from(EXIT_RECOVERY_NEEDED));
        }
    };
    serve(&node, &id, started, accountant, strategy).await
}

#[cfg(feature = "native-backends")]
fn native_backend(
    name: &str,
    seal_key: &marsh_seal::SealKey,
    stores: Vec<(String, Arc<dyn BlobStore>)>,
    config: Vec<(String, String)>,
) -> anyhow::Result<Arc<dyn marsh_core::Backend>> {
    let mut grants = marsh_native::NativeGrants::new(seal_key.clone());
    for (n, store) in stores {
        grants = grants.store(&n, store);
    }
    Ok(match name {
        "disk" => Arc::new(marsh_native::NativeDisk::start(grants, config)?),
        "memory" => Arc::new(marsh_native::NativeMemory::start(grants, config)?),
        other => bail!("no native backend `{other}`"),
    })
}

#[cfg(not(feature = "native-backends"))]
fn native_backend(
    name: &str,
    _: &marsh_seal::SealKey,
    _: Vec<(String, Arc<dyn BlobStore>)>,
    _: Vec<(String, String)>,
) -> anyhow::Result<Arc<dyn marsh_core::Backend>> {
    bail!(
        "backend.plugin = native:{name} needs a marsh built with the `native-backends` feature (used by `make bench` only)"
    )
}

async fn serve(
    node: &NodeDir,
    id: &marsh_node::Identity,
    started: Started,
    accountant: Arc<Accountant>,
    strategy: Arc<marsh_runtime::WasmStrategy>,
) -> anyhow::Result<ExitCode> {
    let Started { backend, stores, .. } = started;
    // The node's runtime-discovered state lives in the backend's first store, never in NODE_DIR.
    let state = stores.first().map(|s| StateStore::node(s.store.clone(), id.seal_key.clone()));
    let service = Arc::new(StorageService::new(
        backend.clone(),
        accountant.clone(),
        Arc::new(SystemClock),
        ServiceConfig {
            swissnum: id.swissnum.clone(),
            reserved_space: size(node, "storage.reserved-space")?,
            application_version: format!("marsh/{}", env!("CARGO_PKG_VERSION")),
        },
    )?);
    // What a previous process left half done, settled before the first request.
    let settled = service.start_up().await.context("settling what the previous run left unfinished")?;
    if settled.uploads_discarded > 0 || settled.writes_completed > 0 || settled.left > 0 {
        tracing::info!(
            "start-up: discarded {} uploads the previous run left open; completed {} interrupted mutable writes; {} left for later",
            settled.uploads_discarded,
            settled.writes_completed,
            settled.left
        );
    }
    // The periodic tasks start once nothing of the previous run is half done.
    let sweeper = spawn_sweeper(node, backend.clone(), state.clone())?;
    let persister = crate::persist::spawn_persister(node, accountant.clone(), strategy.clone())?;
    let collector = spawn_collector(node, backend, accountant.clone(), state)?;
    let tls = marsh_server::tls_config(id.cert_der.clone(), id.key_der.clone())?;
    let listen: SocketAddr = node.get("node.listen")?.parse()?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let (host, port) = public_address(node)?;
    let stopped = shutdown_signals()?;
    println!("marsh: serving {}", id.nurl(&host, port));
    std::io::stdout().flush()?;
    tokio::select! {
        () = marsh_server::serve(listener, tls, service) => {}
        () = stopped => eprintln!("marsh: shutting down"),
    }
    for task in [sweeper, collector].into_iter().flatten() {
        task.abort();
    }
    persister.stop().await;
    // What changed since the last hand-over goes now.
    match crate::persist::flush(&accountant, &strategy).await {
        Ok(n) if n > 0 => eprintln!("marsh: persisted the last {n} accounting changes"),
        Ok(_) => {}
        Err(e) => eprintln!("marsh: could not persist the last accounting changes: {e:#}"),
    }
    for s in &stores {
        if let Some(s3) = &s.s3 {
            eprintln!("marsh: store `{}` ({}): {}", s.name, s.location, s3.stats());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How long until periodic task `name` is due: `interval` after it last ran (node state), and
/// never sooner than `settle` after start. A node restarted often still runs it on schedule,
/// neither at every start nor never.
async fn first_delay(state: Option<&StateStore>, name: &str, interval: u64, settle: u64) -> Duration {
    let last = match state {
        Some(state) => match state.get(name).await {
            Ok(v) => v.and_then(|v| <[u8; 8]>::try_from(v).ok()).map(u64::from_be_bytes),
            Err(e) => {
                tracing::warn!("reading node state: {e}");
                None
            }
        },
        None => None,
    };
    let due_in = last.map_or(0, |last| last.saturating_add(interval).saturating_sub(unix_now()));
    Duration::from_secs(due_in.max(settle))
}

/// Note in node state that periodic task `name` ran now.
async fn ran(state: Option<&StateStore>, name: &str) {
    if let Some(state) = state
        && let Err(e) = state.put(name, &unix_now().to_be_bytes()).await
    {
        tracing::warn!("writing node state: {e}");
    }
}

/// With `expire.enabled`, a lease-expiry pass every `expire.interval`: the first five minutes
/// after start, or later if the last pass (node state `gc-last-run`) was more recent.
fn spawn_collector(
    node: &NodeDir,
    backend: Arc<dyn marsh_core::Backend>,
    accountant: Arc<Accountant>,
    state: Option<StateStore>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if node.get("expire.enabled")? != "true" {
        return Ok(None);
    }
    let policy = crate::gc_cmd::policy(node)?;
    let interval: u64 = node.get("expire.interval")?.parse()?;
    Ok(Some(tokio::spawn(async move {
        let settle = 300.min(interval.max(1));
        tokio::time::sleep(first_delay(state.as_ref(), "gc-last-run", interval, settle).await).await;
        loop {
            match marsh_server::gc::collect(backend.as_ref(), &accountant, &policy, unix_now(), false).await {
                Ok(r) if r.expired.is_empty() => tracing::info!("lease expiry: {}", crate::gc_cmd::describe(&r, false)),
                Ok(r) => tracing::warn!("lease expiry: {}", crate::gc_cmd::describe(&r, false)),
                Err(e) => tracing::warn!("lease expiry pass failed: {e}"),
            }
            ran(state.as_ref(), "gc-last-run").await;
            tokio::time::sleep(Duration::from_secs(interval.max(1))).await;
        }
    })))
}

/// Sweep the backend's leftovers every `backend.sweep-interval`: the first a minute after start,
/// or later if the last sweep (node state `sweep-last-run`) was more recent.
fn spawn_sweeper(
    node: &NodeDir,
    backend: Arc<dyn marsh_core::Backend>,
    state: Option<StateStore>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let interval: u64 = node.get("backend.sweep-interval")?.parse()?;
    let grace: u64 = node.get("backend.sweep-grace")?.parse()?;
    if interval == 0 {
        return Ok(None);
    }
    Ok(Some(tokio::spawn(async move {
        tokio::time::sleep(first_delay(state.as_ref(), "sweep-last-run", interval, 60.min(interval)).await).await;
        loop {
            match backend.sweep(grace).await {
                Ok(r) if r.removed > 0 => tracing::warn!(
                    "sweep removed {} leftovers of interrupted work ({} bytes; {} objects examined)",
                    r.removed,
                    r.removed_bytes,
                    r.examined
                ),
                Ok(r) => tracing::info!("sweep: nothing to remove ({} objects examined)", r.examined),
                Err(e) => tracing::warn!("sweep failed: {e}"),
            }
            ran(state.as_ref(), "sweep-last-run").await;
            tokio::time::sleep(Duration::from_secs(interval)).await;
        }
    })))
}

/// SIGTERM and SIGINT, caught from the moment this returns (not from the first poll): an
/// operator or supervisor may stop the node the instant it says it serves, and it must still
/// hand over its last changes rather than die of the default action.
fn shutdown_signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

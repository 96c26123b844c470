//! [`Node`]: a node directory opened with its identity and typed configuration, and
//! [`Node::start`], which assembles a serving node ([`Running`]) from the parts:
//!
//! 0. `cache/serving.lock` taken ([`not_while_served`]): one process serves a node, and the
//!    commands that must not run beside it (`marsh gc`, `recover`, `store release`) check it;
//! 1. the backend's stores opened and claimed for this node, the backend plugin started
//!    over them (`backend.rs`);
//! 2. the accounting database and the persistence strategy's start-up decision
//!    (`persistence.rs`): serve, recover first (`recovery.auto`), or
//!    [`Error::RecoveryNeeded`];
//! 3. the storage service, which settles what a previous process left half done before the
//!    first request;
//! 4. the periodic tasks under one supervisor (`tasks.rs`), started only once nothing of the
//!    previous run is half done;
//! 5. the TLS listeners (`node.listen`: TCP and Unix sockets), and the web listener (`web.listen`: status page, metrics, health).
//!
//! [`Running::shutdown`] undoes it in order: stop accepting, stop the tasks, hand the last
//! accounting changes to the strategy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use marsh_accountant::Accountant;
use marsh_node::{Identity, ListenOn, NodeConfig, NodeDir, RequestLimits};
use marsh_runtime::{Runtime, WasmStrategy};
use marsh_server::{Limits, Listener, ServiceConfig, StartUpReport, StorageService, SystemClock};
use marsh_stores::state::StateStore;
use tokio::task::JoinHandle;

use crate::Error;
use crate::stores::Opened;
use crate::tasks::{self, Supervisor};

/// An opened node directory: its identity and configuration, read once.
#[derive(Debug, Clone)]
pub struct Node {
    dir: NodeDir,
    config: NodeConfig,
    identity: Identity,
}

impl Node {
    /// Open the node at `path` (it must have been created with `marsh init`).
    pub fn open(path: &Path) -> Result<Node, Error> {
        let dir = NodeDir::open(path)?;
        let config = dir.config()?;
        let identity = dir.identity()?;
        Ok(Node { dir, config, identity })
    }

    /// The directory.
    pub fn dir(&self) -> &NodeDir {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The anonymous NURL clients use.
    pub fn nurl(&self) -> String {
        self.identity.nurl(&self.config.public_host, self.config.public_port)
    }

    /// A named account's NURL (its own swissnum at the node's address).
    pub fn account_nurl(&self, accountant: &Accountant, name: &str) -> Result<String, Error> {
        let mut id = self.identity.clone();
        if let Some(swissnum) = accountant.swissnum(name)? {
            id.swissnum = swissnum;
        }
        Ok(id.nurl(&self.config.public_host, self.config.public_port))
    }

    /// The process's wasm runtime, compiling into `cache/plugins`.
    pub fn runtime(&self) -> Result<Runtime, Error> {
        Ok(Runtime::new(Some(self.dir.ensure_cache()?.join("plugins")))?)
    }

    /// Open and claim the backend's stores and start the backend over them.
    pub async fn start_backend(&self, runtime: &Runtime) -> Result<crate::backend::StartedBackend, Error> {
        crate::backend::start(&self.dir, &self.config, &self.identity, runtime).await
    }

    /// Start serving: see the module documentation for the order.
    pub async fn start(self) -> Result<Running, Error> {
        let serving = not_while_served(
            &self.dir,
            "two processes serving one node would both write its accounting and its stores; stop the other first",
        )?;
        if let Some(command) = self.dir.adoption_unfinished() {
            return Err(Error::AdoptionUnfinished { command });
        }
        if self.identity.signing_key.is_none() {
            tracing::warn!(
                "this node has no signing key (made by an earlier marsh): introducers and grid managers need one; \
                 run `marsh upgrade --dir {}`",
                self.dir.root().display()
            );
        }
        let runtime = self.runtime()?;
        let started = self.start_backend(&runtime).await?;
        let (accountant, strategy) =
            crate::persistence::startup(&self.dir, &self.config, &self.identity, &runtime, &started.stores).await?;
        let service = Arc::new(StorageService::new(
            started.backend.clone(),
            accountant.clone(),
            Arc::new(SystemClock),
            ServiceConfig {
                swissnum: self.identity.swissnum.clone(),
                reserved_space: self.config.reserved_space,
                application_version: format!("marsh/{}", env!("CARGO_PKG_VERSION")),
                limits: server_limits(&self.config.requests),
                capacity: tasks::capacity(&self.config.capacity),
                keep_write_enablers: self.config.keep_write_enablers,
            },
        )?);
        // What a previous process left half done, settled before the first request.
        let settled = service.start_up().await?;
        if settled != StartUpReport::default() {
            tracing::info!(
                "start-up: discarded {} uploads the previous run left open; completed {} interrupted mutable writes; \
                 {} left for later",
                settled.uploads_discarded,
                settled.writes_completed,
                settled.left
            );
        }
        // The node's runtime-discovered state lives in the backend's first store, never in NODE_DIR.
        let state = started.stores.first().map(|s| StateStore::node(s.store.clone(), self.identity.seal_key.clone()));
        let hand_over = crate::persistence::HandOver::of(&started.stores, &self.identity, &strategy);
        let mut supervisor = Supervisor::default();
        let backend_settings = &self.config.backend;
        let task_stats = Arc::new(tasks::TaskStats::default());
        tasks::sweeper(
            &mut supervisor,
            backend_settings.sweep_interval,
            backend_settings.sweep_grace,
            started.backend.clone(),
            state.clone(),
            task_stats.clone(),
        );
        tasks::persister(
            &mut supervisor,
            accountant.clone(),
            strategy.clone(),
            hand_over.clone(),
            self.config.persistence.max_delay,
            task_stats.clone(),
        );
        tasks::collector(
            &mut supervisor,
            &self.config.expire,
            started.backend.clone(),
            accountant.clone(),
            service.slot_locks(),
            state,
            task_stats.clone(),
        );
        tasks::capacity_follower(&mut supervisor, self.dir.clone(), service.clone());

        let tls = marsh_server::tls_config(self.identity.cert_der.clone(), self.identity.key_der.clone())?;
        let mut listeners = Vec::new();
        let mut local_addr = None;
        for listen in &self.config.listen {
            let listening = Error::io(format!("listening on {listen} (node.listen)"));
            listeners.push(match listen {
                ListenOn::Tcp(addr) => {
                    let l = tokio::net::TcpListener::bind(addr).await.map_err(listening)?;
                    local_addr = local_addr.or(l.local_addr().ok());
                    Listener::Tcp(l)
                }
                ListenOn::Unix(path) => Listener::bind_unix(path).await.map_err(listening)?,
            });
        }
        // Port 0 (a node made with `--listen IP:0` by an earlier marsh) picks a port at each
        // start: the NURL this run serves, prints and announces names the one it got.
        let nurl = match (self.config.public_port, local_addr) {
            (0, Some(bound)) => {
                tracing::warn!(
                    "node.listen asks for port 0: serving on port {} this time; clients need a port that stays (`marsh config set node.listen IP:PORT`)",
                    bound.port()
                );
                self.identity.nurl(&self.config.public_host, bound.port())
            }
            _ => self.nurl(),
        };
        let introducers =
            crate::introducers::start(&mut supervisor, &self.config, &self.identity, nurl.clone(), self.dir.root())?;
        // On a fleet's database, the node enters the fleet's register with its entry for
        // clients (an account's swissnum goes where the anonymous one is), then reports in.
        let record = marsh_accountant::NodeRecord {
            server_id: self.identity.server_id.clone(),
            nickname: self.config.nickname.clone(),
            nurl: nurl.replace(&self.identity.swissnum, "{swissnum}"),
            furl: self.identity.furl().replace(&self.identity.swissnum, "{swissnum}"),
            permutation_seed: self.identity.permutation_seed.clone(),
        };
        accountant.register_node(&record, marsh_core::unix_now())?;
        tasks::fleet_heartbeat(
            &mut supervisor,
            accountant.clone(),
            self.identity.server_id.clone(),
            started.backend.clone(),
        );
        let cpu = Arc::new(tasks::CpuMonitor::default());
        tasks::cpu_monitor(&mut supervisor, cpu.clone());
        let web = self.start_web(&service, &accountant, &started, &strategy, (task_stats, cpu, introducers)).await?;
        let server = tokio::spawn(marsh_server::serve_on(listeners, tls, service));
        Ok(Running {
            nurl,
            local_addr,
            server,
            supervisor,
            accountant,
            strategy,
            hand_over,
            web,
            stores: started.stores,
            settled,
            _runtime: runtime,
            _serving: serving,
        })
    }

    /// Serve the status page, metrics and health probe on `cache/web.sock` (always, for
    /// `marsh status`: no token, only the node's user may open it) and on `web.listen` (if on).
    async fn start_web(
        &self,
        service: &Arc<StorageService>,
        accountant: &Arc<Accountant>,
        started: &crate::backend::StartedBackend,
        strategy: &WasmStrategy,
        (task_stats, cpu, introducers): (
            Arc<tasks::TaskStats>,
            Arc<tasks::CpuMonitor>,
            crate::introducers::Introducers,
        ),
    ) -> Result<Vec<JoinHandle<()>>, Error> {
        let fixed = crate::web::Fixed {
            nickname: self.config.nickname.clone(),
            server_id: self.identity.server_id.clone(),
            reserved: self.config.reserved_space,
            expiry_enabled: self.config.expire.enabled,
            persistence: strategy.name().to_owned(),
        };
        let source: Arc<dyn marsh_web::Source> = Arc::new(
            crate::web::NodeSource::new(fixed, service.clone(), accountant.clone(), started, strategy, task_stats, cpu)
                .with_introducers(introducers),
        );
        let socket = crate::web::local_socket(&self.dir);
        let local = bind_local(&socket).await?;
        let mut served = vec![tokio::spawn(marsh_web::serve_local(local, source.clone()))];
        let Some(listen) = self.config.web_listen else { return Ok(served) };
        let token = match &self.config.metrics_token_file {
            Some(path) => {
                let read = std::fs::read_to_string(path)
                    .map_err(Error::io(format!("reading web.metrics-token-file {}", path.display())))?;
                Some(read.trim().to_owned()).filter(|t| !t.is_empty())
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(Error::io(format!("listening on {listen} (web.listen; empty turns it off)")))?;
        let addr = listener.local_addr().map_err(Error::io("reading the web listener's address"))?;
        tracing::info!("status page, /metrics and /health at http://{addr}/");
        served.push(tokio::spawn(marsh_web::serve(listener, source, token)));
        Ok(served)
    }
}

/// Bind the node's local web socket at `path`, replacing one a previous process left, readable
/// and writable by the node's user only.
async fn bind_local(path: &Path) -> Result<tokio::net::UnixListener, Error> {
    use std::os::unix::fs::PermissionsExt;
    let what = || format!("listening on {}", path.display());
    let listener = marsh_server::bind_unix_socket(path).await.map_err(Error::io(what()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(Error::io(what()))?;
    Ok(listener)
}

/// `http.*` and `storage.*` as the server takes them.
pub fn server_limits(r: &RequestLimits) -> Limits {
    let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
    Limits {
        max_connections: n(r.max_connections),
        max_connections_per_peer: n(r.max_connections_per_peer),
        handshake_timeout: r.handshake_timeout,
        header_timeout: r.header_timeout,
        min_rate: r.min_rate,
        cbor_items: n(r.cbor_items),
        body_memory: r.body_memory,
        rtw_read_bytes: r.rtw_read_bytes,
        max_share_size: r.max_share_size,
        open_uploads: n(r.open_uploads),
        open_uploads_per_account: n(r.open_uploads_per_account),
        leases_per_share: n(r.leases_per_share),
        advisories_per_share: u64::from(r.advisories_per_share),
        advisories: u64::from(r.advisories),
    }
}

/// Hold `dir`'s serving lock for as long as the value lives, for `marsh run` and for the
/// commands that must not run beside it; refused, naming `what` to do instead, while another
/// process holds it.
pub fn not_while_served(dir: &NodeDir, what: &'static str) -> Result<marsh_node::Serving, Error> {
    dir.try_serving()?.ok_or_else(|| Error::NodeRunning { dir: dir.root().display().to_string(), what })
}

/// A serving node.
pub struct Running {
    nurl: String,
    local_addr: Option<SocketAddr>,
    server: JoinHandle<()>,
    supervisor: Supervisor,
    accountant: Arc<Accountant>,
    strategy: Arc<WasmStrategy>,
    hand_over: Option<crate::persistence::HandOver>,
    web: Vec<JoinHandle<()>>,
    stores: Vec<Opened>,
    settled: StartUpReport,
    _runtime: Runtime,
    _serving: marsh_node::Serving,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("nurl", &self.nurl)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// How long a stopping node hands accounting changes to its strategy before it stops anyway
/// (well inside the systemd unit's `TimeoutStopSec`).
pub const STOP_HAND_OVER: std::time::Duration = std::time::Duration::from_secs(20);

/// What [`Running::shutdown`] did.
#[derive(Debug)]
pub struct Stopped {
    /// Accounting changes handed to the strategy at the end, or why that failed.
    pub persisted: Result<u64, Error>,
    /// Changes still not handed over when [`STOP_HAND_OVER`] ran out: kept in the local
    /// accounting database and handed over after the next start.
    pub left: u64,
    /// S3 stores' request counts: (name, location, counts).
    pub s3: Vec<(String, String, String)>,
}

impl Running {
    /// The anonymous NURL.
    pub fn nurl(&self) -> &str {
        &self.nurl
    }

    /// The address the first TCP listener is bound to (none when all are Unix sockets).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// What start-up settled of the previous run.
    pub fn settled(&self) -> &StartUpReport {
        &self.settled
    }

    /// Stop: no new connections, the periodic tasks stopped, then the changes made since the
    /// last hand-over handed to the strategy for up to [`STOP_HAND_OVER`].
    pub async fn shutdown(self) -> Stopped {
        self.shutdown_within(STOP_HAND_OVER).await
    }

    /// [`Running::shutdown`], handing changes over for up to `hand_over` (what is left stays in
    /// the local database for the next start).
    pub async fn shutdown_within(self, hand_over: std::time::Duration) -> Stopped {
        self.server.abort();
        let _ = self.server.await;
        for web in self.web {
            web.abort();
            let _ = web.await;
        }
        self.supervisor.shutdown().await;
        let until = Some(std::time::Instant::now() + hand_over);
        let persisted =
            crate::persistence::flush_until(&self.accountant, &self.strategy, self.hand_over.as_ref(), until).await;
        let left = self.accountant.unpersisted().unwrap_or(0);
        let s3 = self
            .stores
            .iter()
            .filter_map(|s| s.s3.as_ref().map(|s3| (s.name.clone(), s.location.clone(), s3.stats().to_string())))
            .collect();
        Stopped { persisted, left, s3 }
    }
}

#[cfg(test)]
mod tests {
    use marsh_node::NodeConfig;

    use super::*;

    #[test]
    fn the_config_defaults_are_the_servers_defaults() {
        let defaults = marsh_node::config::defaults();
        let config = NodeConfig::from_settings(&defaults).expect("the defaults parse");
        assert_eq!(server_limits(&config.requests), Limits::default());
    }
}

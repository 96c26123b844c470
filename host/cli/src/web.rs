//! The web listener's [`Source`] in a running node: the figures of the GBS service, the
//! accounting database and the backend, gathered per request (SQLite off the async threads).

use std::sync::Arc;
use std::time::Instant;

use marsh_accountant::Accountant;
use marsh_core::Backend;
use marsh_runtime::FaultStats;
use marsh_server::StorageService;
use marsh_stores::{BlobKey, BlobStore};
use std::sync::atomic::Ordering;

use marsh_web::{
    AccountRow, AdvisoryRow, Figures, HEALTH_TIMEOUT, Operation, Periodic, PluginRow, Shares, Source, Space,
};

use crate::tasks::{CpuMonitor, TaskStats, cpu_seconds};

/// The socket in `cache/` where a running node serves the web listener's answers without the
/// token, for `marsh status`.
pub fn local_socket(dir: &marsh_node::NodeDir) -> std::path::PathBuf {
    dir.cache().join("web.sock")
}

/// Advisories the status page lists, newest first.
const RECENT_ADVISORIES: usize = 10;
/// Accounts the status page lists (the figures count them all).
const LISTED_ACCOUNTS: usize = 200;

/// What does not change while the node runs.
#[derive(Debug, Clone)]
pub struct Fixed {
    /// `node.nickname`.
    pub nickname: String,
    /// The server id.
    pub server_id: String,
    /// `storage.reserved-space`.
    pub reserved: u64,
    /// `expire.enabled`.
    pub expiry_enabled: bool,
    /// The persistence plugin's name.
    pub persistence: String,
}

/// The node's figures for `marsh-web`.
pub struct NodeSource {
    fixed: Fixed,
    started: Instant,
    service: Arc<StorageService>,
    accountant: Arc<Accountant>,
    backend: Arc<dyn Backend>,
    stores: Vec<(String, Arc<dyn BlobStore>)>,
    plugins: Vec<(&'static str, String, Arc<FaultStats>)>,
    tasks: Arc<TaskStats>,
    cpu: Arc<CpuMonitor>,
    introducers: crate::introducers::Introducers,
}

impl std::fmt::Debug for NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSource").field("fixed", &self.fixed).finish_non_exhaustive()
    }
}

impl NodeSource {
    /// Figures of `service`, `accountant`, the started backend (whose stores the probe asks)
    /// and the persistence strategy, from now.
    pub fn new(
        fixed: Fixed,
        service: Arc<StorageService>,
        accountant: Arc<Accountant>,
        started: &crate::backend::StartedBackend,
        strategy: &marsh_runtime::WasmStrategy,
        tasks: Arc<TaskStats>,
        cpu: Arc<CpuMonitor>,
    ) -> Self {
        let backend = started.plugin.iter().map(|(name, stats)| ("backend", name.clone(), stats.clone()));
        let plugins = backend.chain([("persistence", strategy.name().to_owned(), strategy.stats())]).collect();
        NodeSource {
            fixed,
            started: Instant::now(),
            service,
            accountant,
            backend: started.backend.clone(),
            stores: started.stores.iter().map(|s| (s.name.clone(), s.store.clone())).collect(),
            plugins,
            tasks,
            cpu,
            introducers: crate::introducers::Introducers::default(),
        }
    }

    /// The same, showing these introducers' statuses too.
    pub fn with_introducers(self, introducers: crate::introducers::Introducers) -> Self {
        NodeSource { introducers, ..self }
    }
}

/// What the accounting database says of the node, read in one blocking call (the status page,
/// `/metrics` and `marsh status`).
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    /// Bytes of the shares held.
    pub held: u64,
    /// Immutable shares, mutable shares, storage indexes.
    pub counts: (u64, u64, u64),
    /// The first accounts, the anonymous one first.
    pub accounts: Vec<AccountRow>,
    /// Accounts in all.
    pub account_count: usize,
    /// Changes not handed to the persistence strategy yet.
    pub unpersisted: u64,
    /// Corruption advisories kept.
    pub advisories: u64,
    /// The newest of them, newest first.
    pub recent: Vec<AdvisoryRow>,
    /// The fleet's nodes (accounting on PostgreSQL).
    pub fleet: Vec<marsh_web::FleetRow>,
}

/// The PostgreSQL pool's figures (`accounting.engine postgres`) in Prometheus text.
fn pool_series(out: &mut String, p: &marsh_sql::PoolStats) {
    use std::fmt::Write as _;
    let series: [(&str, &str, &str, u64); 7] = [
        ("marsh_accounting_connections_max", "gauge", "accounting.postgres-connections.", p.max as u64),
        ("marsh_accounting_connections_open", "gauge", "Connections to the accounting database open.", p.open as u64),
        ("marsh_accounting_connections_idle", "gauge", "Of those, idle.", p.idle as u64),
        ("marsh_accounting_waits_total", "counter", "Calls that waited for a connection.", p.waits),
        ("marsh_accounting_wait_timeouts_total", "counter", "Calls that waited in vain (answered 503).", p.timeouts),
        ("marsh_accounting_connections_dropped_total", "counter", "Connections found closed and dropped.", p.dropped),
        ("marsh_accounting_round_trips_total", "counter", "Messages sent to the database.", p.round_trips),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// Read [`Accounting`] from `a`: figures the accountant keeps as its rows change, the accounts
/// and the newest advisories; nothing here reads every share or lease, so a node holding
/// millions answers as quickly as an empty one.
pub fn accounting(a: &Accountant) -> Result<Accounting, marsh_accountant::AccountantError> {
    let (account_count, accounts) = a.accounts_page(LISTED_ACCOUNTS)?;
    let (advisories, recent) = a.advisories_summary(RECENT_ADVISORIES)?;
    Ok(Accounting {
        held: a.stored_bytes()?,
        counts: a.share_counts()?,
        account_count,
        accounts: accounts
            .iter()
            .map(|x| AccountRow {
                name: x.name.clone(),
                usage: x.usage,
                quota: x.attributes.quota,
                leases: x.leases,
                write: x.attributes.write,
                revoked: x.revoked.is_some(),
            })
            .collect(),
        unpersisted: a.unpersisted()?,
        advisories,
        recent: recent
            .iter()
            .map(|x| AdvisoryRow { at: x.at, share: x.share.to_string(), reason: x.reason.clone() })
            .collect(),
        fleet: a
            .fleet()?
            .into_iter()
            .map(|n| marsh_web::FleetRow {
                nickname: n.record.nickname,
                server_id: n.record.server_id,
                last_seen: n.last_seen,
                available: n.available,
                shares: n.shares.0 + n.shares.1,
                bytes: n.bytes,
            })
            .collect(),
    })
}

#[async_trait::async_trait]
impl Source for NodeSource {
    async fn health(&self) -> Result<(), String> {
        // Each store is asked for an object in the host's namespace (one HEAD on S3), so a
        // store that stopped answering shows; then the backend itself.
        let probe = BlobKey::host("state/node/health").map_err(|e| e.to_string())?;
        let asked = async {
            for (name, store) in &self.stores {
                store.head(&probe).await.map_err(|e| format!("store `{name}`: {e}"))?;
            }
            self.backend.usage().await.map_err(|e| format!("the backend failed: {e}"))?;
            // Accounting on PostgreSQL is a server that can be away: one short read.
            if self.accountant.engine() == marsh_sql::Engine::Postgres {
                let accountant = self.accountant.clone();
                tokio::task::spawn_blocking(move || accountant.stored_bytes())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("the accounting database: {e}"))?;
            }
            Ok(())
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, asked).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("the backend's stores did not answer within {} s", HEALTH_TIMEOUT.as_secs())),
        }
    }

    async fn figures(&self) -> Figures {
        let accountant = self.accountant.clone();
        let read = tokio::task::spawn_blocking(move || accounting(&accountant).map_err(|e| e.to_string())).await;
        let db = read.map_err(|e| e.to_string()).and_then(|r| r).unwrap_or_else(|e| {
            tracing::warn!("status figures: {e}");
            Accounting::default()
        });
        let store_free = match tokio::time::timeout(HEALTH_TIMEOUT, self.backend.usage()).await {
            Ok(Ok(u)) => u.available,
            _ => None,
        };
        let capacity = self.service.capacity();
        let (open_uploads, allocated) = self.service.open_uploads();
        let metrics = self.service.metrics();
        let tahoe = metrics.tahoe_figures();
        let operations = tahoe
            .counters
            .iter()
            .map(|(name, count)| {
                let latency = tahoe.latencies.iter().find(|(n, _)| n == name).map(|(_, l)| l);
                Operation {
                    name: (*name).to_owned(),
                    count: *count,
                    samples: latency.map_or(0, |l| l.samples),
                    mean: latency.and_then(|l| l.mean),
                    percentiles: latency
                        .map(|l| l.percentiles.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let mut server_series = String::new();
        metrics.prometheus(&mut server_series);
        if let Some(pool) = self.accountant.pool_stats() {
            pool_series(&mut server_series, &pool);
        }
        Figures {
            nickname: self.fixed.nickname.clone(),
            server_id: self.fixed.server_id.clone(),
            version: format!("marsh/{}", env!("CARGO_PKG_VERSION")),
            uptime: self.started.elapsed().as_secs_f64(),
            cpu_seconds: cpu_seconds(),
            cpu_averages: [1, 5, 15].map(|m| self.cpu.average(m)),
            space: Space {
                store_free,
                available: self.service.available().await,
                reserved: self.fixed.reserved,
                max_bytes: capacity.max_bytes,
                held: db.held,
                allocated,
                readonly: capacity.readonly,
            },
            shares: Shares {
                immutable: db.counts.0,
                mutable: db.counts.1,
                buckets: db.counts.2,
                open_uploads: open_uploads as u64,
            },
            accounts: db.accounts,
            account_count: db.account_count,
            persistence: self.fixed.persistence.clone(),
            unpersisted: db.unpersisted,
            expiry_enabled: self.fixed.expiry_enabled,
            advisories: db.advisories,
            recent_advisories: db.recent,
            plugins: self
                .plugins
                .iter()
                .map(|(role, name, stats)| PluginRow {
                    role: (*role).into(),
                    name: name.clone(),
                    calls: stats.calls(),
                    faults: stats.faults(),
                    instances: stats.instances(),
                    last_fault: stats.last(),
                })
                .collect(),
            periodic: {
                let t = &self.tasks;
                let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
                let at = |c: &std::sync::atomic::AtomicU64| Some(n(c)).filter(|t| *t > 0);
                Periodic {
                    persisted: n(&t.persisted),
                    persist_failures: n(&t.persist_failures),
                    last_persisted: at(&t.last_persisted),
                    sweeps: n(&t.sweeps),
                    swept: n(&t.swept),
                    last_sweep: at(&t.last_sweep),
                    expiry_passes: n(&t.expiry_passes),
                    expired: n(&t.expired),
                    expired_bytes: n(&t.expired_bytes),
                    last_expiry: at(&t.last_expiry),
                }
            },
            operations,
            server_series,
            introducers: self.introducers.rows(),
            fleet: db.fleet,
        }
    }
}

//! The accountant's persistence strategy in a node: the accounting database as the plugin's
//! recovery sink ([`AccountantSink`]), starting the plugin over its stores, the start-up
//! decision (use the local database, recover, or stop for `marsh recover`), handing logged
//! changes over ([`flush`]), and recovery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use marsh_accountant::{Accountant, Logged};
use marsh_node::{AccountingSettings, Identity, NodeConfig, NodeDir, PluginChoice};
use marsh_runtime::{
    AccountingSink, Grants, InitFailure, PersistFailure, ProgressSink, RecoveryReport, Runtime, StartError,
    StartupPlan, WasmStrategy,
};
use marsh_stores::Partition;
use marsh_stores::state::StateStore;

use crate::Error;
use crate::stores::{self, Opened};

/// How long `recover` may run.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(3600);
/// Changes handed to the plugin per `record` call.
const RECORD_BATCH: usize = 500;

/// The accounting database as a strategy's recovery target.
#[derive(Debug, Clone)]
pub struct AccountantSink(pub Arc<Accountant>);

impl AccountingSink for AccountantSink {
    fn apply(&self, changes: Vec<Vec<u8>>) -> Result<(), String> {
        changes.iter().try_for_each(|c| self.0.apply_strategy_blob(c).map_err(|e| e.to_string()))
    }

    fn snapshot(&self) -> Result<(u64, Vec<u8>), String> {
        let s = self.0.snapshot().map_err(|e| e.to_string())?;
        Ok((s.sequence, s.bytes))
    }

    fn restore(&self, snapshot: Vec<u8>) -> Result<u64, String> {
        self.0.restore_snapshot(&snapshot).map_err(|e| e.to_string())
    }
}

/// Open the node's accounting: `cache/accountant.sqlite` (created on first use), or with
/// `accounting.engine postgres` the node's part of the fleet's database (its schema made or
/// migrated on first use), keyed by the node's server id.
pub fn open_accountant(dir: &NodeDir) -> Result<Accountant, Error> {
    open_accountant_with(dir, dir.config()?.accounting)
}

/// [`open_accountant`] with `accounting` instead of the node's own setting (`marsh accounting
/// move` opens the engine it moves to).
pub fn open_accountant_with(dir: &NodeDir, accounting: AccountingSettings) -> Result<Accountant, Error> {
    match accounting {
        AccountingSettings::Sqlite => {
            dir.ensure_cache()?;
            Ok(Accountant::open(&dir.accountant_path())?)
        }
        AccountingSettings::Postgres { conninfo, password_file, ca_file, connections } => {
            let read = |key: &'static str, path: &std::path::Path| {
                std::fs::read(path).map_err(|source| Error::AccountingFile { key, path: path.to_owned(), source })
            };
            let mut settings = marsh_sql::PgSettings::new(conninfo);
            if let Some(path) = password_file {
                let text = read("accounting.postgres-password-file", &path)?;
                let text = String::from_utf8_lossy(&text);
                settings.password = Some(text.trim_end_matches(['\n', '\r']).to_owned());
            }
            if let Some(path) = ca_file {
                settings.ca_pem = Some(read("accounting.postgres-ca-file", &path)?);
            }
            settings.max_connections = connections as usize;
            Ok(Accountant::open_postgres(&settings, &dir.identity()?.server_id)?)
        }
    }
}

fn failed(strategy: &WasmStrategy) -> impl FnOnce(PersistFailure) -> Error + '_ {
    move |failure| Error::Persistence { plugin: strategy.name().to_owned(), failure }
}

/// The host's own note of the newest change it handed to the strategy: node state (sealed, in
/// the backend's first store, apart from the strategy's objects), one value per strategy.
/// Recovery that ends short of it reports the missing tail as a gap, which the strategy's
/// objects alone cannot show: a store operator who deletes the newest records (a `revoked`,
/// say) is found out unless they also put back an older copy of this value.
#[derive(Clone)]
pub struct HandOver {
    state: StateStore,
    name: String,
}

impl std::fmt::Debug for HandOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandOver").field("name", &self.name).finish_non_exhaustive()
    }
}

impl HandOver {
    /// The note for `strategy`, kept in the first of the backend's stores `open` (none without).
    pub fn of(open: &[Opened], id: &Identity, strategy: &WasmStrategy) -> Option<Self> {
        let store = open.first()?.store.clone();
        Some(HandOver {
            state: StateStore::node(store, id.seal_key.clone()),
            name: format!("handed-over.{}", strategy.name()),
        })
    }

    async fn note(&self, last: u64) {
        if let Err(e) = self.state.put(&self.name, &last.to_be_bytes()).await {
            tracing::warn!("noting the changes handed to the persistence plugin: {e}");
        }
    }

    async fn newest(&self) -> Option<u64> {
        match self.state.get(&self.name).await {
            Ok(Some(v)) => Some(u64::from_be_bytes(v.try_into().ok()?)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("reading the note of changes handed to the persistence plugin: {e}");
                None
            }
        }
    }
}

/// Start the configured strategy with `accountant` as its sink, over its stores (`open` holds
/// those the backend already opened and checked: they are shared, not opened again). Of a store
/// the backend also has, the strategy sees only its own part ([`Partition::Persistence`]).
pub async fn start(
    dir: &NodeDir,
    config: &NodeConfig,
    id: &Identity,
    runtime: &Runtime,
    accountant: Arc<Accountant>,
    progress: Option<ProgressSink>,
    open: &[Opened],
) -> Result<WasmStrategy, Error> {
    if accountant.engine() == marsh_sql::Engine::Postgres
        && let Some((plugin, message)) = snapshots_on_postgres(&config.persistence)
    {
        return Err(Error::PluginConfig {
            role: "persistence",
            plugin,
            message,
            dir: dir.root().display().to_string(),
        });
    }
    let mut grants = Grants::new(id.seal_key.clone()).accounting(Arc::new(AccountantSink(accountant)));
    for name in &config.persistence.stores {
        let mut store = match open.iter().find(|s| &s.name == name) {
            Some(s) => s.store.clone(),
            None => stores::open(config, name, "persistence.stores").await?.store,
        };
        if config.backend.stores.contains(name) {
            store = Partition::Persistence.view(store);
        }
        grants = grants.store(name, store);
    }
    if let Some(progress) = progress {
        grants = grants.progress(progress);
    }
    let plugin = crate::plugins::load(runtime, &config.persistence.plugin)?;
    let limits = crate::plugins::limits(&config.limits);
    match WasmStrategy::start(runtime, &plugin, grants, config.persistence.config.clone(), limits).await {
        Ok(s) => Ok(s),
        Err(StartError::Init { plugin, failure: InitFailure::BadConfig(message) }) => {
            Err(Error::PluginConfig { role: "persistence", plugin, message, dir: dir.root().display().to_string() })
        }
        Err(e) => Err(e.into()),
    }
}

/// Why the configured first-party strategy cannot run with accounting on PostgreSQL (it asks
/// for SQLite snapshots of the database), if it cannot: the plugin's name and what to change.
fn snapshots_on_postgres(p: &marsh_node::PersistenceSettings) -> Option<(String, String)> {
    let PluginChoice::FirstParty(plugin) = &p.plugin else { return None };
    let snapshot_changes = p.config.iter().find(|(k, _)| k == "snapshot-changes").map(|(_, v)| v.trim());
    if *plugin == marsh_artifacts::PERSISTENCE_STASH {
        Some((
            "stash".into(),
            "it keeps SQLite snapshots of the accounting database, and accounting.engine is postgres: \
              set persistence.plugin to `local` (the database's own backups keep it) or to `records` with \
              persistence.config.snapshot-changes 0"
                .into(),
        ))
    } else if *plugin == marsh_artifacts::PERSISTENCE_RECORDS && snapshot_changes != Some("0") {
        Some((
            "records".into(),
            "it compacts its records into SQLite snapshots (snapshot-changes, 100000 unless set), \
              and accounting.engine is postgres: set snapshot-changes to 0"
                .into(),
        ))
    } else {
        None
    }
}

/// How long `marsh run` waits for an accounting database it cannot reach at start.
pub const START_WAIT: Duration = Duration::from_secs(120);

/// [`open_accountant`], trying again every 2 s for [`START_WAIT`] while the database cannot be
/// reached (a node and its database started together, or a database restarting), saying so.
async fn open_accountant_waiting(dir: &NodeDir) -> Result<Accountant, Error> {
    let started = Instant::now();
    loop {
        match open_accountant(dir) {
            Err(Error::Accountant(e)) if e.is_unavailable() && started.elapsed() < START_WAIT => {
                tracing::warn!("{e}; trying again in 2 s (for up to {} s)", START_WAIT.as_secs());
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => return other,
        }
    }
}

/// The command that recovers this node.
pub fn recover_command(dir: &NodeDir) -> String {
    format!("marsh recover --dir {}", dir.root().display())
}

/// Open the accounting database and let the strategy decide whether the node may start on it:
/// `Ok` to serve (after recovering, with `recovery.auto`), or [`Error::RecoveryNeeded`].
pub async fn startup(
    dir: &NodeDir,
    config: &NodeConfig,
    id: &Identity,
    runtime: &Runtime,
    open: &[Opened],
) -> Result<(Arc<Accountant>, Arc<WasmStrategy>), Error> {
    let accountant = Arc::new(open_accountant_waiting(dir).await?);
    let present = !accountant.was_created();
    let interrupted = accountant.recovering()?;
    let strategy = Arc::new(start(dir, config, id, runtime, accountant.clone(), None, open).await?);
    let auto = config.persistence.recovery_auto;
    let needed = |reason: String| Error::RecoveryNeeded {
        role: "persistence",
        plugin: strategy.name().to_owned(),
        reason,
        command: recover_command(dir),
    };
    if interrupted && !auto {
        return Err(needed("a recovery of the accounting database was interrupted; run it again".into()));
    }
    match strategy.startup(present && !interrupted, accountant.last_seq()?, auto).await {
        Ok(StartupPlan::UseLocal) => {}
        Ok(StartupPlan::Recover) => {
            tracing::warn!("recovering the accounting database (recovery.auto = true)");
            let report = recover_with(&accountant, &strategy, HandOver::of(open, id, &strategy).as_ref()).await?;
            if report.tampered > 0 || !report.gaps.is_empty() {
                tracing::warn!(
                    "recovery skipped {} blobs that did not unseal or parse; missing change records: {}",
                    report.tampered,
                    if report.gaps.is_empty() { "none".to_owned() } else { report.gaps.join(", ") }
                );
            }
        }
        Err(PersistFailure::Init(InitFailure::RecoveryNeeded { reason, .. })) => return Err(needed(reason)),
        Err(failure) => return Err(failed(&strategy)(failure)),
    }
    Ok((accountant, strategy))
}

/// Hand every change logged since the last confirmed one to the strategy, in runs of
/// consecutive numbers. Returns how many went.
pub async fn flush(
    accountant: &Accountant,
    strategy: &WasmStrategy,
    hand_over: Option<&HandOver>,
) -> Result<u64, Error> {
    flush_until(accountant, strategy, hand_over, None).await
}

/// [`flush`], starting no batch after `until`: what is left stays in the local log (committed,
/// so nothing is lost) for the next hand-over. A node stops within a bounded time even when
/// changes came faster than its strategy writes them.
pub async fn flush_until(
    accountant: &Accountant,
    strategy: &WasmStrategy,
    hand_over: Option<&HandOver>,
    until: Option<Instant>,
) -> Result<u64, Error> {
    let mut sent = 0;
    loop {
        if until.is_some_and(|u| Instant::now() >= u) {
            return Ok(sent);
        }
        let batch = accountant.changes_after(accountant.persisted_seq()?, RECORD_BATCH)?;
        let Some(first) = batch.first().map(|c| c.seq) else { return Ok(sent) };
        let run: Vec<Logged> =
            batch.into_iter().enumerate().take_while(|(i, c)| c.seq == first + *i as u64).map(|(_, c)| c).collect();
        let last = first + run.len() as u64 - 1;
        let blobs = run.iter().map(Logged::strategy_blob).collect();
        strategy.record(first, blobs).await.map_err(failed(strategy))?;
        accountant.mark_persisted(last)?;
        if let Some(h) = hand_over {
            h.note(last).await;
        }
        // The strategy holds them now; the local log keeps only its newest entry.
        accountant.prune_persisted(last)?;
        sent += run.len() as u64;
    }
}

async fn recover_with(
    accountant: &Accountant,
    strategy: &WasmStrategy,
    hand_over: Option<&HandOver>,
) -> Result<RecoveryReport, Error> {
    accountant.set_recovering(true)?;
    let mut report = strategy.recover(RECOVERY_DEADLINE).await.map_err(failed(strategy))?;
    accountant.set_recovering(false)?;
    // What recovery brought back: changes replayed, or the sequence a snapshot was taken at.
    let last = accountant.last_seq()?.max(accountant.persisted_seq()?);
    let handed = hand_over.map(HandOver::newest);
    if let Some(handed) = handed
        && let Some(handed) = handed.await
        && handed > last
    {
        report.gaps.push(format!(
            "{}-{handed} (handed to the strategy, not in what it recovered: its newest objects were deleted, \
             or it keeps nothing)",
            last + 1
        ));
    }
    Ok(report)
}

/// What `marsh recover` did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The strategy's name.
    pub strategy: String,
    /// What it read.
    pub report: RecoveryReport,
    /// How long it took.
    pub elapsed: Duration,
    /// Accounts in the database afterwards.
    pub accounts: usize,
    /// Leases in the database afterwards.
    pub leases: u64,
}

/// Rebuild the accounting database from the persistence strategy. Safe to run again, and after
/// an interruption: applying a change twice is harmless. Changes the local database holds and
/// the strategy does not are handed over first (or the recovery refuses: they would be lost).
pub async fn recover(dir: &NodeDir, progress: Option<ProgressSink>) -> Result<Recovered, Error> {
    let (config, id) = (dir.config()?, dir.identity()?);
    let accountant = Arc::new(open_accountant(dir)?);
    let runtime = Runtime::new(Some(dir.cache().join("plugins")))?;
    // The backend's first store holds the host's note of what was handed over.
    let open = match config.backend.stores.first() {
        Some(name) => vec![stores::open(&config, name, "backend.stores").await?],
        None => Vec::new(),
    };
    let strategy = start(dir, &config, &id, &runtime, accountant.clone(), progress, &open).await?;
    let hand_over = HandOver::of(&open, &id, &strategy);
    let (last, persisted) = (accountant.last_seq()?, accountant.persisted_seq()?);
    if last > persisted && !accountant.recovering()? {
        flush(&accountant, &strategy, hand_over.as_ref()).await.map_err(|e| Error::Unpersisted {
            count: last - persisted,
            failure: Box::new(e),
            database: dir.accountant_path().display().to_string(),
        })?;
    }
    let started = Instant::now();
    let report = recover_with(&accountant, &strategy, hand_over.as_ref()).await?;
    let accounts = accountant.accounts()?;
    Ok(Recovered {
        strategy: strategy.name().to_owned(),
        report,
        elapsed: started.elapsed(),
        accounts: accounts.len(),
        leases: accounts.iter().map(|a| a.leases).sum(),
    })
}

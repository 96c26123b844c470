//! The accountant persistence strategy in a node: starting the plugin over its stores with the
//! accounting database as its recovery sink, the start-up decision (use the local database,
//! recover, or stop for `marsh recover`), the task that hands logged changes to the plugin,
//! and `marsh recover`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use marsh_accountant::Accountant;
use marsh_node::NodeDir;
use marsh_runtime::{AccountingSink, Grants, PersistFailure, PluginLimits, Runtime, StartupPlan, WasmStrategy};

use crate::node_cmd::ACCOUNTANT_DB;
use crate::stores;

/// How long `recover` may run.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(3600);
/// Changes handed to the plugin per `record` call.
const RECORD_BATCH: usize = 500;

/// The accounting database as a strategy's recovery target.
struct Sink(Arc<Accountant>);

impl AccountingSink for Sink {
    fn apply(&self, changes: Vec<Vec<u8>>) -> Result<(), String> {
        for c in &changes {
            self.0.apply_strategy_blob(c).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<(u64, Vec<u8>), String> {
        let s = self.0.snapshot().map_err(|e| e.to_string())?;
        Ok((s.sequence, s.bytes))
    }

    fn restore(&self, snapshot: Vec<u8>) -> Result<u64, String> {
        self.0.restore_snapshot(&snapshot).map_err(|e| e.to_string())
    }
}

fn plugin_path(setting: &str) -> anyhow::Result<PathBuf> {
    match setting {
        "local" => crate::node_cmd::first_party("persistence_local.wasm"),
        "records" => crate::node_cmd::first_party("persistence_records.wasm"),
        "stash" => crate::node_cmd::first_party("persistence_stash.wasm"),
        path => Ok(PathBuf::from(path)),
    }
}

/// Start the configured strategy with `accountant` as its sink, over its stores (`open` holds
/// those already opened).
pub async fn start(
    node: &NodeDir,
    runtime: &Runtime,
    accountant: Arc<Accountant>,
    progress: bool,
    open: &[stores::Opened],
) -> anyhow::Result<WasmStrategy> {
    let id = node.identity()?;
    let mut grants = Grants::new(id.seal_key.clone()).accounting(Arc::new(Sink(accountant)));
    for name in node.get("persistence.stores")?.split(',').map(str::trim) {
        // A store the backend already opened (and checked) is shared, not opened again.
        let store = match open.iter().find(|s| s.name == name) {
            Some(s) => s.store.clone(),
            None => stores::open(node, name).await.with_context(|| format!("persistence.stores names `{name}`"))?.store,
        };
        grants = grants.store(name, store);
    }
    if progress {
        grants = grants.progress(progress_sink());
    }
    let config: Vec<(String, String)> = node
        .with_prefix("persistence.config.")?
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("persistence.config.").to_owned(), v))
        .collect();
    let plugin = runtime.load(&plugin_path(&node.get("persistence.plugin")?)?)?;
    Ok(WasmStrategy::start(runtime, &plugin, grants, config, PluginLimits::default()).await?)
}

/// Progress of a recovery: a bar on a terminal, plain lines otherwise (logs, CI).
fn progress_sink() -> marsh_runtime::ProgressSink {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return Arc::new(|plugin: &str, done: u64, total: Option<u64>, what: &str| match total {
            Some(t) => eprintln!("{plugin}: {done}/{t} {what}"),
            None => eprintln!("{plugin}: {done} {what}"),
        });
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Arc::new(move |plugin: &str, done: u64, total: Option<u64>, what: &str| {
        bar.set_prefix(plugin.to_owned());
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
        bar.set_message(what.to_owned());
        if total.is_some_and(|t| done >= t) {
            bar.finish();
        }
    })
}

/// What `marsh run` does before serving.
pub enum Startup {
    /// Serve, persisting through this strategy.
    Serve(Arc<Accountant>, Arc<WasmStrategy>),
    /// Stop with this message: the operator must run `marsh recover`.
    RecoveryNeeded(String),
}

/// Open the accounting database and let the strategy decide whether the node may start on it.
pub async fn startup(node: &NodeDir, runtime: &Runtime, open: &[stores::Opened]) -> anyhow::Result<Startup> {
    let cache = node.cache();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let db = cache.join(ACCOUNTANT_DB);
    let present = db.exists();
    let accountant = Arc::new(Accountant::open(&db)?);
    let interrupted = accountant.recovering()?;
    let strategy = Arc::new(start(node, runtime, accountant.clone(), false, open).await?);
    let auto = node.get("recovery.auto")? == "true";
    let command = format!("marsh recover --dir {}", node.root().display());
    if interrupted && !auto {
        return Ok(Startup::RecoveryNeeded(format!(
            "a recovery of the accounting database was interrupted; run it again: {command}"
        )));
    }
    match strategy.startup(present && !interrupted, accountant.last_seq()?, auto).await {
        Ok(StartupPlan::UseLocal) => {}
        Ok(StartupPlan::Recover) => {
            eprintln!("marsh: recovering the accounting database (recovery.auto = true)");
            recover_with(&accountant, &strategy).await?;
        }
        Err(PersistFailure::Init(marsh_runtime::InitFailure::RecoveryNeeded { reason, .. })) => {
            return Ok(Startup::RecoveryNeeded(format!(
                "the persistence plugin `{}` needs recovery: {reason}\nrun: {command}",
                strategy.name()
            )));
        }
        Err(e) => bail!("the persistence plugin `{}` cannot start: {e}", strategy.name()),
    }
    Ok(Startup::Serve(accountant, strategy))
}

/// Hand every change logged since the last confirmed one to the strategy, in runs of
/// consecutive numbers. Returns how many went.
pub async fn flush(accountant: &Accountant, strategy: &WasmStrategy) -> anyhow::Result<u64> {
    let mut sent = 0;
    loop {
        let batch = accountant.changes_after(accountant.persisted_seq()?, RECORD_BATCH)?;
        let Some(&(first, _)) = batch.first() else { return Ok(sent) };
        let run: Vec<(u64, Vec<u8>)> = batch
            .into_iter()
            .enumerate()
            .take_while(|(i, (seq, _))| *seq == first + *i as u64)
            .map(|(_, c)| c)
            .collect();
        let last = first + run.len() as u64 - 1;
        let blobs = run.iter().map(|(seq, body)| Accountant::strategy_blob(*seq, body)).collect();
        strategy.record(first, blobs).await?;
        accountant.mark_persisted(last)?;
        // The strategy holds them now; the local log keeps only its newest entry.
        accountant.prune_persisted(last)?;
        sent += run.len() as u64;
    }
}

/// The task that flushes every `persistence.max-delay` seconds.
pub struct Persister {
    task: tokio::task::JoinHandle<()>,
    stop: Arc<tokio::sync::Notify>,
}

impl Persister {
    /// Stop between hand-overs, never in the middle of one, and wait for it.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Flush every `persistence.max-delay` seconds.
pub fn spawn_persister(
    node: &NodeDir,
    accountant: Arc<Accountant>,
    strategy: Arc<WasmStrategy>,
) -> anyhow::Result<Persister> {
    let delay = Duration::from_secs(node.get("persistence.max-delay")?.parse::<u64>()?.max(1));
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped.notified() => return,
            }
            tracing::trace!(last = ?accountant.last_seq().ok(), persisted = ?accountant.persisted_seq().ok(), "persister wakes");
            match flush(&accountant, &strategy).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!("handed {n} accounting changes to the persistence plugin"),
                Err(e) => tracing::warn!("persisting accounting changes failed (will retry): {e:#}"),
            }
        }
    });
    Ok(Persister { task, stop })
}

async fn recover_with(
    accountant: &Accountant,
    strategy: &WasmStrategy,
) -> anyhow::Result<marsh_runtime::RecoveryReport> {
    accountant.set_recovering(true)?;
    let report = strategy.recover(RECOVERY_DEADLINE).await?;
    accountant.set_recovering(false)?;
    Ok(report)
}

/// `marsh recover`: rebuild the accounting database from the persistence strategy. Safe to run
/// again, and to re-run after an interruption: applying a change twice is harmless.
pub async fn recover(dir: &Path) -> anyhow::Result<ExitCode> {
    let node = NodeDir::open(dir)?;
    let cache = node.cache();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let accountant = Arc::new(Accountant::open(&cache.join(ACCOUNTANT_DB))?);
    let runtime = Runtime::new(Some(cache.join("plugins")))?;
    let strategy = start(&node, &runtime, accountant.clone(), true, &[]).await?;
    // Changes the local database made and the strategy never got would be lost to the rebuild
    // (and their numbers reused): hand them over first, or stop.
    let (last, persisted) = (accountant.last_seq()?, accountant.persisted_seq()?);
    if last > persisted && !accountant.recovering()? {
        flush(&accountant, &strategy).await.with_context(|| {
            format!(
                "the local database holds {} changes the persistence plugin does not have yet, and handing \
                 them over failed; recovering now would lose them. Start the node to persist them, or move \
                 {} aside to recover without them",
                last - persisted,
                cache.join(ACCOUNTANT_DB).display()
            )
        })?;
    }
    let started = std::time::Instant::now();
    let report = recover_with(&accountant, &strategy).await?;
    let accounts = accountant.accounts()?;
    let leases: u64 = accounts.iter().map(|a| a.leases).sum();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "recovered with `{}` in {:.1} s: {} change records read, {} snapshots, {} accounts, {} leases",
        strategy.name(),
        started.elapsed().as_secs_f64(),
        report.changes_read,
        report.snapshots_read,
        accounts.len(),
        leases
    )?;
    if report.tampered > 0 {
        writeln!(out, "{} blobs did not unseal or parse and were skipped (never trusted)", report.tampered)?;
    }
    if !report.gaps.is_empty() {
        writeln!(out, "missing change records: {}", report.gaps.join(", "))?;
    }
    Ok(ExitCode::SUCCESS)
}

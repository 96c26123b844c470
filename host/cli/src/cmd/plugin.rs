//! `marsh plugin inspect PATH.wasm` and `marsh plugin test PATH.wasm`.
//!
//! `test` runs the conformance suite of the plugin's kind against any plugin file, first-party
//! or not: the backend suite, or for a persistence strategy the strategy kit on a scratch
//! store. It prints one line per case and a final `N passed, N failed` line; the exit status is
//! 1 when a case failed and 2 when the plugin could not be loaded or started.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use marsh_runtime::{Grants, PluginLimits, Runtime, WasmBackend, World};
use marsh_seal::SealKey;
use marsh_stores::{BlobStore, DirStore, MemoryStore};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print a plugin's world, ABI version, name and version.
    #[command(after_help = "Example:\n  marsh plugin inspect ./my_backend.wasm")]
    Inspect {
        /// The plugin file.
        path: PathBuf,
    },
    /// Run the conformance suite against a plugin: the backend suite, or the persistence kit.
    #[command(after_help = "Example:\n  marsh plugin test ./my_backend.wasm")]
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The plugin file.
    path: PathBuf,
    /// Grant a store: `NAME=dir:PATH` or `NAME=memory`. Default: a fresh temporary
    /// directory granted as `shares`.
    #[arg(long = "store", value_name = "NAME=KIND")]
    stores: Vec<String>,
    /// Plugin config entry `KEY=VALUE` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Only run cases whose name contains this.
    #[arg(long, default_value = "")]
    filter: String,
    /// Memory cap per instance, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: usize,
    /// Deadline of one call, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    deadline_ms: u64,
    /// Most bytes moved across the boundary in one call.
    #[arg(long, default_value_t = 4 << 20)]
    max_call_bytes: u64,
}

pub async fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Inspect { path } => inspect(path).await,
        PluginCommand::Test(args) => test(args).await,
    }
}

fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("marsh/plugins"))
}

async fn inspect(path: PathBuf) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(cache_dir())?;
    let plugin = runtime.load(&path)?;
    let d = runtime.describe(&plugin).await.map_err(anyhow::Error::msg).context("asking the plugin for its info")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "file:        {}", path.display())?;
    writeln!(out, "sha256:      {}", plugin.sha256)?;
    writeln!(out, "world:       {}", plugin.inspection.world)?;
    writeln!(out, "abi:         marsh:plugin@{}", plugin.inspection.abi)?;
    writeln!(out, "name:        {}", d.name)?;
    writeln!(out, "version:     {}", d.version)?;
    writeln!(out, "concurrency: {}", d.concurrency)?;
    writeln!(out, "description: {}", d.description)?;
    Ok(ExitCode::SUCCESS)
}

fn parse_pair<'a>(what: &str, s: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("{what} {s:?} is not of the form NAME=VALUE"),
    }
}

async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(cache_dir())?;
    let plugin = match runtime.load(&args.path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("marsh: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let config = args
        .config
        .iter()
        .map(|c| parse_pair("--config", c).map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let limits = PluginLimits {
        memory_bytes: args.memory_mib << 20,
        call_deadline: Duration::from_millis(args.deadline_ms),
        max_call_bytes: args.max_call_bytes,
        ..PluginLimits::default()
    };
    if plugin.inspection.world == World::Persistence {
        if !args.stores.is_empty() {
            bail!("--store: the persistence kit grants its own scratch store");
        }
        return test_strategy(args, marsh::conformance::StrategyHarness::new(runtime, plugin, config, limits)).await;
    }
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    // A throwaway node key: nothing sealed during a test run outlives it.
    let mut grants = Grants::new(SealKey::ephemeral()?);
    let specs = if args.stores.is_empty() { vec!["shares=dir:".to_owned()] } else { args.stores.clone() };
    for spec in &specs {
        let (name, kind) = parse_pair("--store", spec)?;
        let store: Arc<dyn BlobStore> = match kind.split_once(':') {
            Some(("dir", "")) => Arc::new(DirStore::open(name, &scratch.path().join(name))?),
            Some(("dir", path)) => Arc::new(DirStore::open(name, std::path::Path::new(path))?),
            None if kind == "memory" => Arc::new(MemoryStore::new(name)),
            _ => bail!("--store {spec:?}: the kind is `dir:PATH` or `memory`"),
        };
        grants = grants.store(name, store);
    }
    let backend = match WasmBackend::start(&runtime, &plugin, grants, config, limits).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("marsh: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    println!(
        "testing {} ({}) against {} conformance cases",
        backend.name(),
        args.path.display(),
        marsh_conformance::cases().len()
    );
    let report = marsh_conformance::run(&backend, &args.filter, |r| match &r.outcome {
        Ok(()) => println!("ok   {} ({} ms)", r.name, r.elapsed.as_millis()),
        Err(e) => println!("FAIL {}: {e}", r.name),
    })
    .await;
    let stats = backend.stats();
    if stats.faults() > 0 {
        println!("plugin faults: {} (instances created: {})", stats.faults(), stats.instances());
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn test_strategy(args: TestArgs, harness: marsh::conformance::StrategyHarness) -> anyhow::Result<ExitCode> {
    use marsh_conformance::strategy::{self, Outcome};
    // A plugin that cannot start at all says so once, as the backend suite does.
    let probe = marsh_accountant::Accountant::in_memory().context("an in-memory accounting database")?;
    let store: Arc<dyn BlobStore> = Arc::new(MemoryStore::new("shares"));
    let started = strategy::Harness::start(&harness, store, strategy::NODE_KEY, Arc::new(probe), Arc::default()).await;
    if let Err(e) = started {
        eprintln!("marsh: {e}");
        return Ok(ExitCode::from(2));
    }
    println!(
        "testing the persistence strategy {} against {} conformance cases",
        args.path.display(),
        strategy::case_names().len()
    );
    let report = strategy::run(&harness, &args.filter, |r| match &r.outcome {
        Outcome::Passed => println!("ok   {} ({} ms)", r.name, r.elapsed.as_millis()),
        Outcome::Failed(e) => println!("FAIL {}: {e}", r.name),
        Outcome::NotApplicable => println!("n/a  {} (the strategy keeps nothing outside the node)", r.name),
    })
    .await;
    if !report.durable {
        println!(
            "this strategy keeps nothing outside the node: recovering what it recorded read nothing, so the {} \
             recovery cases do not apply",
            report.not_applicable()
        );
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

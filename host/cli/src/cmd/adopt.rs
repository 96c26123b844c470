//! `marsh adopt TAHOE_DIR --dir NODE_DIR`: make a marsh node of a stopped Tahoe-LAFS storage
//! node, keeping its identity, settings, shares, leases, write enablers and advisories; with
//! `--dry-run`, say what would be done and do nothing.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use marsh::adopt::{self, AdoptOptions};

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The Tahoe-LAFS node directory (only read; stop its node first).
    tahoe_dir: PathBuf,
    /// The marsh node directory to make (or, run again, to finish).
    #[arg(long)]
    dir: PathBuf,
    /// Where the default disk store keeps shares (default: NODE_DIR-shares beside the node).
    #[arg(long)]
    storage_dir: Option<PathBuf>,
    /// Listen address, instead of the one [node] tub.port gives.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Host clients connect to, instead of the first [node] tub.location hint.
    #[arg(long)]
    public_host: Option<String>,
    /// Port clients connect to, instead of the first [node] tub.location hint's.
    #[arg(long)]
    public_port: Option<u16>,
    /// A further marsh setting, KEY=VALUE, after the ones taken from tahoe.cfg (repeatable):
    /// an S3 store, say.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Say what would be taken and how; make and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Make nothing if any file among the shares is not one this reads (by default such files
    /// are named and left, and the rest taken).
    #[arg(long)]
    strict: bool,
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

pub async fn run(args: AdoptArgs) -> anyhow::Result<ExitCode> {
    let settings = args
        .set
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--set {kv:?}: expected KEY=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = AdoptOptions {
        tahoe_dir: args.tahoe_dir,
        node_dir: args.dir,
        storage_dir: args.storage_dir,
        listen: args.listen,
        public_host: args.public_host,
        public_port: args.public_port,
        settings,
    };
    let plan = adopt::plan(&options)?;
    let running = plan.tahoe.running();
    if !args.dry_run {
        plan.tahoe.not_running()?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "Tahoe node {} (tub id {})", plan.tahoe.dir.display(), plan.identity.tub_id)?;
    for nurl in &plan.tahoe_nurls {
        writeln!(out, "  announced NURL: {nurl}")?;
    }
    writeln!(out, "settings taken over:")?;
    for (from, key, value) in &plan.carried {
        writeln!(out, "  {from:<44} -> {key} = {value}")?;
    }
    for (key, value) in &options.settings {
        writeln!(out, "  {:<44} -> {key} = {value}", "(--set)")?;
    }
    if !plan.not_carried.is_empty() {
        writeln!(out, "not taken over:")?;
        for (what, why) in &plan.not_carried {
            writeln!(out, "  {what}: {why}")?;
        }
    }
    // What is there, from every container's header: asked for (`--dry-run`), or needed up front
    // (`--strict`). Otherwise the shares are read once, as they are taken in.
    let survey = adopt::survey(&plan.tahoe, args.dry_run || args.strict)?;
    if args.dry_run || args.strict {
        writeln!(
            out,
            "shares in {}: {} immutable ({}), {} mutable ({}), {} leases, {} corruption advisories",
            plan.tahoe.storage_dir.display(),
            survey.immutable.0,
            gib(survey.immutable.1),
            survey.mutable.0,
            gib(survey.mutable.1),
            survey.leases,
            survey.advisories
        )?;
        for (path, why) in &survey.problems {
            writeln!(out, "  not a share this reads: {}: {why}", path.display())?;
        }
    }
    if survey.incoming.0 > 0 {
        writeln!(
            out,
            "  {} unfinished uploads under shares/incoming ({}) are left behind: their clients upload them again",
            survey.incoming.0,
            gib(survey.incoming.1)
        )?;
    }
    if args.strict && !survey.problems.is_empty() {
        writeln!(
            out,
            "--strict: {} files are not shares this reads (listed above); nothing was made",
            survey.problems.len()
        )?;
        return Ok(ExitCode::from(1));
    }
    if args.dry_run {
        if let Some(pid) = running {
            writeln!(out, "the Tahoe node is running (process {pid}): stop it before adopting")?;
        }
        writeln!(out, "dry run: nothing was made or changed")?;
        return Ok(ExitCode::SUCCESS);
    }
    let node = adopt::create(&plan)?;
    writeln!(out, "marsh node {} (server id {})", node.dir().root().display(), node.identity().server_id)?;
    out.flush()?;
    let bar = progress_bar(survey.file_bytes);
    let imported = adopt::import(&node, &plan, &move |done| bar(done)).await?;
    writeln!(
        out,
        "taken in: {} immutable and {} mutable shares ({}), {} leases, {} advisories; {} there already from an earlier run",
        imported.taken.0,
        imported.taken.1,
        gib(imported.bytes),
        imported.leases,
        imported.advisories,
        imported.already
    )?;
    for (path, why) in &imported.problems {
        writeln!(out, "  not taken: {}: {why}", path.display())?;
    }
    let nurl = node.nurl();
    let same = plan.tahoe_nurls.first() == Some(&nurl);
    writeln!(out, "NURL: {nurl}{}", if same { " (the Tahoe node's)" } else { "" })?;
    writeln!(
        out,
        "Next: disable the Tahoe node's service, then `marsh run --dir {}`. {} is left as it was; to move back, stop \
         marsh and run `marsh export-tahoe --dir {} NEW_TAHOE_DIR`.",
        node.dir().root().display(),
        plan.tahoe.dir.display(),
        node.dir().root().display()
    )?;
    if imported.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "{} files were not taken in (listed above)", imported.problems.len())?;
        Ok(ExitCode::from(1))
    }
}

/// Progress over bytes of share files: a bar on a terminal, a line every 10% otherwise.
fn progress_bar(total: u64) -> Box<dyn Fn(u64) + Send + Sync> {
    if !std::io::stderr().is_terminal() {
        let step = (total / 10).max(1);
        let next = std::sync::atomic::AtomicU64::new(step);
        return Box::new(move |done| {
            if done >= next.load(std::sync::atomic::Ordering::Relaxed) {
                next.store(done + step, std::sync::atomic::Ordering::Relaxed);
                eprintln!("adopt: {done}/{total} bytes of share files");
            }
        });
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("adopt [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Box::new(move |done| {
        bar.set_position(done);
        if done >= total {
            bar.finish();
        }
    })
}

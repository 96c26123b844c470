//! `marsh recover`: rebuild the accounting database from the persistence plugin, with a
//! progress bar on a terminal and plain lines otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use marsh_node::NodeDir;
use marsh_runtime::ProgressSink;

pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let node = NodeDir::open(dir)?;
    let _serving = marsh::node::not_while_served(
        &node,
        "recovery rebuilds the accounting database the running node is using; stop the node first",
    )?;
    let done = marsh::persistence::recover(&node, Some(progress_sink())).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "recovered with `{}` in {:.1} s: {} change records read, {} snapshots, {} accounts, {} leases",
        done.strategy,
        done.elapsed.as_secs_f64(),
        done.report.changes_read,
        done.report.snapshots_read,
        done.accounts,
        done.leases
    )?;
    if done.report.tampered > 0 {
        writeln!(out, "{} blobs did not unseal or parse and were skipped (never trusted)", done.report.tampered)?;
    }
    if !done.report.gaps.is_empty() {
        writeln!(out, "missing change records: {}", done.report.gaps.join(", "))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_sink() -> ProgressSink {
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

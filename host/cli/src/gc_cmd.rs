//! `marsh gc`: one lease-expiry pass now (`--dry-run` reports what it would delete), and the
//! policy a running node applies every `expire.interval` when `expire.enabled` is true.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use marsh_node::NodeDir;
use marsh_node::config::parse_date;
use marsh_server::gc::{self, ExpiryMode, ExpiryPolicy, GcReport};

/// The policy `expire.*` describes.
pub fn policy(node: &NodeDir) -> anyhow::Result<ExpiryPolicy> {
    let mode = match node.get("expire.mode")?.as_str() {
        "cutoff-date" => {
            let date = node.get("expire.cutoff-date").context("expire.mode is cutoff-date")?;
            ExpiryMode::CutoffDate(parse_date(&date).with_context(|| format!("expire.cutoff-date {date:?}"))?)
        }
        _ => ExpiryMode::Age {
            override_seconds: node.get("expire.override-lease-duration").ok().map(|v| v.parse()).transpose()?,
        },
    };
    Ok(ExpiryPolicy {
        mode,
        immutable: node.get("expire.immutable")? == "true",
        mutable: node.get("expire.mutable")? == "true",
    })
}

pub fn describe(r: &GcReport, dry_run: bool) -> String {
    format!(
        "{} shares examined: {} {} ({} bytes), {} with a live lease, {} with no lease record (kept)",
        r.examined,
        r.expired.len(),
        if dry_run { "expired, would be deleted" } else { "expired and deleted" },
        r.expired_bytes,
        r.leased,
        r.unrecorded
    )
}

pub async fn run(dir: &Path, dry_run: bool) -> anyhow::Result<ExitCode> {
    let node = NodeDir::open(dir)?;
    if !dry_run && node.get("expire.enabled")? != "true" {
        bail!(
            "expire.enabled is false, so nothing is collected: `marsh gc --dry-run` shows what would be, and \
             `marsh config set expire.enabled true` turns collection on"
        );
    }
    let policy = policy(&node)?;
    let started = crate::node_cmd::start_backend(&node).await?;
    let accountant = crate::account_cmd::open(&node)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let report = gc::collect(started.backend.as_ref(), &accountant, &policy, now, dry_run).await?;
    let mut out = std::io::stdout().lock();
    for (si, n, mutable, size) in &report.expired {
        let kind = if *mutable { "mutable" } else { "immutable" };
        writeln!(out, "{} {si} {} {kind} {size} bytes", if dry_run { "would delete" } else { "deleted" }, n.0)?;
    }
    writeln!(out, "{}", describe(&report, dry_run))?;
    Ok(ExitCode::SUCCESS)
}

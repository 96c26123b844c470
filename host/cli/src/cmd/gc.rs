//! `marsh gc [--dry-run]`: one lease-expiry pass now, by the policy a running node applies
//! every `expire.interval` (`expire.*`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use marsh::Node;
use marsh::tasks::{describe_expiry, expiry_policy};
use marsh_server::gc;

pub async fn run(dir: &Path, dry_run: bool) -> anyhow::Result<ExitCode> {
    let node = Node::open(dir)?;
    if !dry_run && !node.config().expire.enabled {
        return Err(marsh::Error::ExpiryDisabled.into());
    }
    let policy = expiry_policy(&node.config().expire);
    let started = node.start_backend(&node.runtime()?).await?;
    let accountant = marsh::persistence::open_accountant(node.dir())?;
    // This process serves nothing: no request of its own can race the pass. (A node running
    // beside it does not share these locks.)
    let locks = marsh_server::SlotLocks::default();
    let now = marsh_core::unix_now();
    let report = gc::collect(started.backend.as_ref(), &accountant, &locks, &policy, now, dry_run).await?;
    let mut out = std::io::stdout().lock();
    for (si, n, mutable, size) in &report.expired {
        let kind = if *mutable { "mutable" } else { "immutable" };
        writeln!(out, "{} {si} {} {kind} {size} bytes", if dry_run { "would delete" } else { "deleted" }, n.0)?;
    }
    writeln!(out, "{}", describe_expiry(&report, dry_run))?;
    Ok(ExitCode::SUCCESS)
}

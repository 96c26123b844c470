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
    // A running node's pass takes the locks its requests take; this process cannot, so it
    // deletes nothing while the node runs.
    let _serving = match dry_run {
        true => None,
        false => Some(marsh::node::not_while_served(
            node.dir(),
            "its own lease expiry runs every `expire.interval` (and within five minutes of a start); stop it to run \
             a pass now, or see what one would delete with `marsh gc --dry-run`",
        )?),
    };
    let policy = expiry_policy(&node.config().expire);
    let started = node.start_backend(&node.runtime()?).await?;
    let accountant = marsh::persistence::open_accountant(node.dir())?;
    // No node runs (checked above) and this process serves nothing: no request can race the pass.
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

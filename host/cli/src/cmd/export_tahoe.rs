//! `marsh export-tahoe --dir NODE_DIR TAHOE_DIR`: write a stopped node as a Tahoe-LAFS 1.20
//! storage node directory (the way back from `marsh adopt`), and say what did not go back whole.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use marsh::Node;

pub async fn run(dir: &Path, to: &Path) -> anyhow::Result<ExitCode> {
    let node = Node::open(dir)?;
    let shares = std::sync::atomic::AtomicU64::new(0);
    let done = marsh::export::export(&node, to, &move |n| {
        // A line per 10,000 shares, for a long export.
        if n / 10_000 > shares.swap(n, std::sync::atomic::Ordering::Relaxed) / 10_000 {
            eprintln!("export-tahoe: {n} shares written");
        }
    })
    .await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wrote {}: {} immutable and {} mutable shares ({} bytes), {} leases, {} advisories",
        to.display(),
        done.shares.0,
        done.shares.1,
        done.bytes,
        done.leases,
        done.advisories
    )?;
    if done.legacy_leases > 0 {
        writeln!(
            out,
            "  {} leases were recorded before marsh kept Tahoe's lease hash: written with their expiry and a secret no \
             client holds; each holder's next renewal adds a lease of its own",
            done.legacy_leases
        )?;
    }
    if !done.unwritable.is_empty() {
        writeln!(
            out,
            "  {} mutable shares were made while storage.keep-write-enablers was off: readable, but their writers cannot \
             change them on the Tahoe node:",
            done.unwritable.len()
        )?;
        for (si, n) in done.unwritable.iter().take(20) {
            writeln!(out, "    {si}/{}", n.0)?;
        }
    }
    if done.named_accounts > 0 {
        writeln!(
            out,
            "  {} named accounts: their shares are written, but Tahoe serves the anonymous NURL only",
            done.named_accounts
        )?;
    }
    for (key, why) in &done.not_carried {
        writeln!(out, "  {key}: {why}")?;
    }
    writeln!(out, "Next: `tahoe run {}` (with marsh stopped: both listen on the same port).", to.display())?;
    Ok(ExitCode::SUCCESS)
}

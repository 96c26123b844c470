//! `marsh run`: serve until SIGTERM or SIGINT, then stop in order and hand the last accounting
//! changes over. Exit status 3 when a plugin (or an interrupted recovery) asks for a command
//! first. What it says of its own start and stop goes to the log at `info` or above, which
//! the default filter of `marsh run` shows (as text or, with `--log-format json`, as JSON).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use marsh::Node;

/// Exit status of `marsh run` when a plugin asks for `marsh recover`.
pub const EXIT_RECOVERY_NEEDED: u8 = 3;

pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let node = Node::open(dir)?;
    let running = match node.start().await {
        Ok(r) => r,
        Err(e) if e.is_recovery_needed() => {
            tracing::error!("{e}");
            return Ok(ExitCode::from(EXIT_RECOVERY_NEEDED));
        }
        Err(e) => return Err(e.into()),
    };
    // Caught from here on: a supervisor may stop the node the instant it says it serves, and it
    // must still hand over its last changes rather than die of the default action.
    let stopped = shutdown_signals()?;
    println!("{} {}", marsh_node::SERVING, running.nurl());
    std::io::stdout().flush()?;
    stopped.await;
    tracing::info!("shutting down");
    let stopped = running.shutdown().await;
    match stopped.persisted {
        Ok(n) if n > 0 => tracing::info!("persisted the last {n} accounting changes"),
        Ok(_) => {}
        Err(e) => tracing::error!("could not persist the last accounting changes: {e}"),
    }
    if stopped.left > 0 {
        tracing::warn!(
            "{} accounting changes were not handed to the persistence plugin within {} s; they are kept in the \
             local accounting database and handed over after the next start",
            stopped.left,
            marsh::node::STOP_HAND_OVER.as_secs()
        );
    }
    for (name, location, stats) in &stopped.s3 {
        tracing::info!("store `{name}` ({location}): {stats}");
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGINT, caught from the moment this returns (not from the first poll).
fn shutdown_signals() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

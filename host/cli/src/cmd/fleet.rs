//! `marsh fleet status`: the nodes that keep their accounting on the same PostgreSQL database,
//! as the fleet's register shows them: each one's nickname and server id, when it last reported
//! (a node silent for three report intervals is shown as not running), its free space, shares
//! and bytes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use marsh::Node;
use marsh_core::unix_now;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every node of the fleet, with space, shares and whether it is running.
    #[command(after_help = "Example:\n  marsh fleet status --dir /var/lib/marsh")]
    Status {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

pub fn run(cmd: FleetCommand) -> anyhow::Result<ExitCode> {
    let FleetCommand::Status { dir } = cmd;
    let node = Node::open(&dir)?;
    let accountant = marsh::persistence::open_accountant(node.dir())?;
    let nodes = accountant.fleet()?;
    if nodes.is_empty() {
        bail!(
            "no fleet: this node's accounting is its own (accounting.engine sqlite), or no node has run on the \
             database yet; see `marsh config get accounting.engine --dir {}`",
            dir.display()
        );
    }
    let now = unix_now();
    let silent = 3 * marsh::tasks::FLEET_EVERY.as_secs();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} nodes", nodes.len())?;
    for n in &nodes {
        let ago = now.saturating_sub(n.last_seen);
        let state = if ago <= silent {
            format!("running (seen {ago} s ago)")
        } else {
            format!("not running (last seen {ago} s ago)")
        };
        let available = n.available.map_or("unknown".to_owned(), |a| format!("{a} bytes free"));
        writeln!(
            out,
            "{} {}: {state}, {available}, {} immutable and {} mutable shares, {} bytes",
            n.record.nickname, n.record.server_id, n.shares.0, n.shares.1, n.bytes
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

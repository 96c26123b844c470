//! `marsh store owner|release|take-over|sweep`: who owns each store, releasing or taking one
//! over deliberately, and sweeping leftovers offline.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use marsh::Node;
use marsh::stores::{me, open, open_backend_stores};
use marsh_node::owner;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Show who owns each store the backend uses.
    #[command(after_help = "Example:\n  marsh store owner --dir /var/lib/marsh")]
    Owner {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Give up this node's claim on a store, so another node may use it (stop this node first).
    #[command(after_help = "Example:\n  marsh store release shares --dir /var/lib/marsh")]
    Release {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The store's name (as in `store.NAME`).
        store: String,
        /// Remove the owner record whatever it says (a damaged record; no other node uses the store).
        #[arg(long)]
        force: bool,
    },
    /// Take a store over from a node that is gone for good.
    #[command(after_help = "Example:\n  marsh store take-over shares --dir /var/lib/marsh")]
    TakeOver {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The store's name.
        store: String,
        /// The server id of the node that owns it now (as the refusal to start printed it).
        #[arg(long)]
        from: String,
    },
    /// Remove leftovers of interrupted uploads now (the running node also does this periodically).
    #[command(after_help = "Example:\n  marsh store sweep --dir /var/lib/marsh")]
    Sweep {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Only leftovers older than this many seconds (default: backend.sweep-grace).
        #[arg(long)]
        grace: Option<u64>,
    },
}

pub async fn run(cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        StoreCommand::Owner { dir } => {
            let node = Node::open(&dir)?;
            let id = node.identity();
            for s in open_backend_stores(node.config()).await? {
                match owner::owner_of(s.store.as_ref(), &id.seal_key).await? {
                    None => writeln!(out, "{}: {} — unclaimed", s.name, s.location)?,
                    Some(o) => {
                        let who = if o.server_id == id.server_id { " (this node)" } else { "" };
                        writeln!(
                            out,
                            "{}: {} — owned by {}{who} \"{}\" since {}",
                            s.name, s.location, o.server_id, o.nickname, o.since
                        )?;
                    }
                }
            }
        }
        StoreCommand::Release { dir, store, force } => {
            let node = Node::open(&dir)?;
            let _serving = marsh::node::not_while_served(
                node.dir(),
                "a released store may be claimed by another node while this one still writes to it; stop this \
                 node first",
            )?;
            let id = node.identity();
            let s = open(node.config(), &store, "the command line").await?;
            let released = if force {
                owner::release_forced(s.store.as_ref()).await?
            } else {
                owner::release(s.store.as_ref(), &me(node.config(), id), &id.seal_key).await?
            };
            if released {
                writeln!(out, "released store `{store}` ({}); do not start this node on it again", s.location)?;
            } else {
                writeln!(out, "store `{store}` ({}) was not claimed", s.location)?;
            }
        }
        StoreCommand::TakeOver { dir, store, from } => {
            let node = Node::open(&dir)?;
            let id = node.identity();
            let s = open(node.config(), &store, "the command line").await?;
            owner::take_over(s.store.as_ref(), &me(node.config(), id), &id.seal_key, &from).await?;
            writeln!(
                out,
                "store `{store}` ({}) now belongs to {}; make sure {from} never runs on it again",
                s.location, id.server_id
            )?;
        }
        StoreCommand::Sweep { dir, grace } => {
            let node = Node::open(&dir)?;
            let grace = grace.unwrap_or(node.config().backend.sweep_grace);
            let started = node.start_backend(&node.runtime()?).await?;
            let report = started.backend.sweep(grace).await?;
            writeln!(
                out,
                "swept: {} objects examined, {} removed ({} bytes)",
                report.examined, report.removed, report.removed_bytes
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

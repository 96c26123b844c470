//! `marsh advisories list|clear`: the corruption advisories clients sent (a client that found a
//! share it read from this node corrupt says so), for the operator to act on and then clear.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use marsh::persistence::open_accountant;
use marsh_node::NodeDir;

#[derive(Debug, Subcommand)]
pub enum AdvisoriesCommand {
    /// One line per advisory, oldest first: when (UTC), share kind, storage index, share
    /// number, and the client's reason (control characters escaped).
    #[command(after_help = "Example:\n  marsh advisories list --dir /var/lib/marsh")]
    List {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Forget advisories: all of them, or those about one storage index (and share number).
    #[command(after_help = "Example:\n  marsh advisories clear aeaqcaibaeaqcaibaeaqcaibae 0 --dir /var/lib/marsh")]
    Clear {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Only those about this storage index.
        si: Option<marsh_core::StorageIndex>,
        /// Only those about this share number of it.
        shnum: Option<u16>,
    },
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(at: u64) -> String {
    let (y, m, d, h, mi, s) = marsh_core::civil(at);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

pub fn run(command: AdvisoriesCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        AdvisoriesCommand::List { dir } => {
            let accountant = open_accountant(&NodeDir::open(&dir)?)?;
            let all = accountant.corruption_advisories()?;
            for a in &all {
                let s = &a.share;
                writeln!(out, "{} {} {} {} {}", utc(a.at), s.kind.as_str(), s.si, s.shnum.0, a.reason.escape_debug())?;
            }
            writeln!(out, "{} corruption advisories", all.len())?;
        }
        AdvisoriesCommand::Clear { dir, si, shnum } => {
            let accountant = open_accountant(&NodeDir::open(&dir)?)?;
            let si = si.map(|si| si.to_base32());
            let n = accountant.clear_corruption_advisories(si.as_deref(), shnum)?;
            writeln!(out, "cleared {n} corruption advisories")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[test]
fn times_read_as_utc() {
    assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
}

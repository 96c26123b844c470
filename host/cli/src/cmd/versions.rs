//! `marsh versions list|forget`: the sequence numbers this node keeps for the mutable shares it
//! wrote, with which it refuses a share its store rolled back. After restoring the store from a
//! backup (shares legitimately older than what the node wrote), forgetting them is the
//! operator's word that the store's shares stand as they are.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use marsh::persistence::open_accountant;
use marsh_core::{ShareNumber, StorageIndex};
use marsh_node::NodeDir;

#[derive(Debug, Subcommand)]
pub enum VersionsCommand {
    /// One line per mutable share with a number kept: storage index, share number, sequence
    /// number.
    #[command(after_help = "Example:\n  marsh versions list --dir /var/lib/marsh")]
    List {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Forget kept numbers: all of them, those of one storage index, or of one share of it. A
    /// running node serves those shares as the store holds them from its next request on.
    #[command(after_help = "Example:\n  marsh versions forget aeaqcaibaeaqcaibaeaqcaibae --dir /var/lib/marsh")]
    Forget {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Only those of this storage index.
        si: Option<StorageIndex>,
        /// Only this share number of it.
        shnum: Option<u16>,
    },
}

pub fn run(command: VersionsCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        VersionsCommand::List { dir } => {
            let accountant = open_accountant(&NodeDir::open(&dir)?)?;
            let kept = accountant.kept_mutable_seqnums()?;
            for (si, shnum, seqnum) in &kept {
                writeln!(out, "{si} {} {seqnum}", shnum.0)?;
            }
            writeln!(out, "{} mutable shares with a sequence number kept", kept.len())?;
        }
        VersionsCommand::Forget { dir, si, shnum } => {
            let accountant = open_accountant(&NodeDir::open(&dir)?)?;
            let n = accountant.forget_mutable_seqnums(si.as_ref(), shnum.map(ShareNumber))?;
            writeln!(out, "forgot {n} kept sequence numbers")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

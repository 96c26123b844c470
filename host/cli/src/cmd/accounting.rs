//! `marsh accounting move --to postgres|sqlite`: move a stopped node's accounting from the
//! engine it uses to the other, then switch the node to it. Everything is copied with the
//! change log as it stands (so the persistence strategy's copy stays this node's), counts are
//! compared at the end, and only then is `accounting.engine` changed. The database moved from is
//! left as it was: the way back is the same command the other way. Run again after an
//! interruption, it finishes (every row is an upsert); accounts the target holds under the same
//! name with another swissnum (another node's) stop it before anything is written.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use marsh_node::{AccountingSettings, NodeDir};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// `NODE_DIR/cache/accountant.sqlite`.
    Sqlite,
    /// The database `--postgres` names.
    Postgres,
}

#[derive(Debug, Subcommand)]
pub enum AccountingCommand {
    /// Move the node's accounting to the other engine and switch the node to it (the node must
    /// be stopped).
    #[command(
        after_help = "Example:\n  marsh accounting move --to postgres --postgres 'host=db port=5432 user=marsh dbname=marsh' \\\n      --password-file /etc/marsh/db-password --dir /var/lib/marsh\n  marsh accounting move --to sqlite --dir /var/lib/marsh"
    )]
    Move {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The engine to move to.
        #[arg(long, value_enum)]
        to: Engine,
        /// With `--to postgres`: the connection string, without a password.
        #[arg(long)]
        postgres: Option<String>,
        /// With `--to postgres`: a file holding the database password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// With `--to postgres`: CA certificates (PEM) for TLS to the database.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

pub fn run(cmd: AccountingCommand) -> anyhow::Result<ExitCode> {
    let AccountingCommand::Move { dir, to, postgres, password_file, ca_file } = cmd;
    let node = NodeDir::open(&dir)?;
    let _serving = marsh::node::not_while_served(
        &node,
        "moving its accounting while it serves would leave what it records meanwhile behind",
    )?;
    let from = node.config()?.accounting;
    let target = match to {
        Engine::Sqlite => AccountingSettings::Sqlite,
        Engine::Postgres => AccountingSettings::Postgres {
            conninfo: postgres.context("--to postgres needs --postgres CONNECTION_STRING")?,
            password_file: password_file.clone(),
            ca_file: ca_file.clone(),
            connections: 8,
        },
    };
    if std::mem::discriminant(&from) == std::mem::discriminant(&target) {
        bail!("the node's accounting is already on {to:?} (accounting.engine); nothing to move");
    }
    let mut out = std::io::stdout().lock();
    if to == Engine::Sqlite && node.accountant_path().exists() {
        // Never written over: a database a move left behind, or an older one, is kept beside.
        let kept =
            PathBuf::from(format!("{}.before-move-{}", node.accountant_path().display(), marsh_core::unix_now()));
        std::fs::rename(node.accountant_path(), &kept).with_context(|| format!("keeping {}", kept.display()))?;
        writeln!(out, "kept the SQLite database that was there as {}", kept.display())?;
    }
    let source = marsh::persistence::open_accountant(&node)?;
    let destination = marsh::persistence::open_accountant_with(&node, target.clone())?;
    let before = source.counts()?;
    let total = before.accounts + before.shares + before.leases + before.enablers;
    let bar = indicatif::ProgressBar::new(total);
    let moved = source.copy_into(&destination, |done| bar.set_position(done))?;
    bar.finish_and_clear();
    let after = destination.counts()?;
    let source_now = source.counts()?;
    // On a fleet's database the accounts are the fleet's: at least this node's, each of them there.
    let accounts_there = source.accounts()?.iter().all(|a| destination.account(&a.name).is_ok());
    if (after.shares, after.leases, after.enablers) != (source_now.shares, source_now.leases, source_now.enablers)
        || after.accounts < source_now.accounts
        || !accounts_there
    {
        bail!(
            "the copy does not match (here: {source_now:?}; there: {after:?}): the node still uses its old accounting; \
             run the move again"
        );
    }
    match &target {
        AccountingSettings::Sqlite => {
            node.set("accounting.engine", "sqlite")?;
        }
        AccountingSettings::Postgres { conninfo, .. } => {
            node.set("accounting.postgres", conninfo)?;
            if let Some(f) = &password_file {
                node.set("accounting.postgres-password-file", &f.display().to_string())?;
            }
            if let Some(f) = &ca_file {
                node.set("accounting.postgres-ca-file", &f.display().to_string())?;
            }
            node.set("accounting.engine", "postgres")?;
        }
    }
    writeln!(
        out,
        "moved {} accounts, {} shares, {} leases, {} write enablers and {} change log entries; counts match",
        moved.counts.accounts, moved.counts.shares, moved.counts.leases, moved.counts.enablers, moved.changes
    )?;
    let back = match to {
        Engine::Postgres => format!("marsh accounting move --to sqlite --dir {}", dir.display()),
        Engine::Sqlite => format!(
            "marsh accounting move --to postgres --postgres '...' --dir {} (the database still holds this node's part)",
            dir.display()
        ),
    };
    writeln!(
        out,
        "accounting.engine is now {}; what it was moved from is untouched. The way back: {back}",
        match to {
            Engine::Postgres => "postgres",
            Engine::Sqlite => "sqlite",
        }
    )?;
    Ok(ExitCode::SUCCESS)
}

//! `marsh`: the command line of the marsh storage node. Argument parsing and printing only:
//! each command is a file in `cmd/` over the node library (`lib.rs`).
//!
//! This binary (with `marsh-bench`) is the only place that uses `anyhow`; libraries return
//! typed errors and the commands here turn them into messages and exit statuses.

#![allow(clippy::print_stdout, reason = "a command line prints its results")]

mod cmd;
mod limits;
mod malloc;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// marsh: a Tahoe-LAFS storage node with sandboxed plugin backends.
#[derive(Debug, Parser)]
#[command(name = "marsh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node directory with its whole identity and initial config.
    #[command(
        after_help = "Example:\n  marsh init --dir /var/lib/marsh --listen 0.0.0.0:3457 --public-host storage1.example.org"
    )]
    Init(cmd::init::InitArgs),
    /// Read or change the node's config (kept in NODE_DIR/node.sqlite).
    #[command(after_help = "Example:\n  marsh config set storage.readonly true --dir /var/lib/marsh")]
    Config {
        /// The node directory.
        #[arg(long, global = true, default_value = ".")]
        dir: std::path::PathBuf,
        #[command(subcommand)]
        command: cmd::config::ConfigCommand,
    },
    /// Print the node's NURL and the servers.yaml entry for a Tahoe client.
    #[command(
        after_help = "Example:\n  marsh announce --dir /var/lib/marsh | grep -v '^#' > ~/.tahoe/private/servers.yaml"
    )]
    Announce {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// A named account's NURL instead of the anonymous one.
        #[arg(long)]
        account: Option<String>,
        /// Print the storage announcement an introducer would carry, signed, as JSON.
        #[arg(long, conflicts_with = "account")]
        signed: bool,
        /// Print the node's public key as Tahoe's node.pubkey holds it (`pub-v0-...`), for
        /// `grid-manager add NAME KEY`.
        #[arg(long, conflicts_with_all = ["account", "signed"])]
        public_key: bool,
    },
    /// Delete shares whose leases have all expired (`expire.*` config), or with --dry-run list them.
    #[command(after_help = "Example:\n  marsh gc --dry-run --dir /var/lib/marsh")]
    Gc {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Report what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Rebuild the accounting database (accounts, leases, write enablers) from the persistence
    /// plugin after the machine or its cache/ was lost. Safe to run again.
    #[command(after_help = "Example:\n  marsh recover --dir /var/lib/marsh")]
    Recover {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Corruption advisories clients sent: list them, clear them.
    #[command(subcommand, after_help = "Example:\n  marsh advisories list --dir /var/lib/marsh")]
    Advisories(cmd::advisories::AdvisoriesCommand),
    /// The sequence numbers kept to refuse mutable shares a store rolled back: list them,
    /// forget them (after restoring the store from a backup).
    #[command(subcommand, after_help = "Example:\n  marsh versions list --dir /var/lib/marsh")]
    Versions(cmd::versions::VersionsCommand),
    /// Named accounts: create, list, show, set attributes, revoke.
    #[command(subcommand, after_help = "Example:\n  marsh account create alice --quota 20GiB --dir /var/lib/marsh")]
    Account(cmd::account::AccountCommand),
    /// Move the node's accounting between SQLite and PostgreSQL.
    #[command(
        subcommand,
        after_help = "Example:\n  marsh accounting move --to postgres --postgres 'host=db dbname=marsh' --dir /var/lib/marsh"
    )]
    Accounting(cmd::accounting::AccountingCommand),
    /// The nodes sharing this node's PostgreSQL accounting: space, shares, liveness.
    #[command(subcommand, after_help = "Example:\n  marsh fleet status --dir /var/lib/marsh")]
    Fleet(cmd::fleet::FleetCommand),
    /// Serve the GBS storage protocol.
    #[command(after_help = "Example:\n  marsh run --dir /var/lib/marsh --verbose")]
    Run {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Log one line per request.
        #[arg(long, short)]
        verbose: bool,
        /// `text`, or `json`: one JSON object per line, for a log collector.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// The status page's figures for a terminal: space, shares, accounts, persistence,
    /// advisories, and whether the node serves (asked of its web listener).
    #[command(after_help = "Example:\n  marsh status --dir /var/lib/marsh")]
    Status {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Bring a node directory made by an earlier marsh up to date (an ed25519 signing key, whose
    /// public key becomes the server id).
    #[command(after_help = "Example:\n  marsh upgrade --dir /var/lib/marsh")]
    Upgrade {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Work with plugin files: inspect them, or run the conformance suite against them.
    #[command(subcommand, after_help = "Example:\n  marsh plugin test ./my_backend.wasm")]
    Plugin(cmd::plugin::PluginCommand),
    /// Print a completion script for a shell, generated from this command line's definition.
    #[command(
        after_help = "Example:\n  marsh completions bash > /etc/bash_completion.d/marsh\n  marsh completions zsh > ~/.zfunc/_marsh\n  marsh completions fish > ~/.config/fish/completions/marsh.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (marsh.1, and one per command: marsh-init.1, marsh-config-set.1, ...)
    /// generated from this command line's definition into a directory (`make install` does).
    #[command(hide = true, after_help = "Example:\n  marsh man --out /usr/local/share/man/man1")]
    Man {
        /// The directory to write them to (made if missing).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Make a marsh node of a stopped Tahoe-LAFS storage node: the same identity (NURL, server
    /// id), settings, shares, leases and write enablers. The Tahoe directory is only read; run
    /// again to finish an adoption that stopped part way.
    #[command(
        after_help = "Example:\n  marsh adopt ~/.tahoe --dir /var/lib/marsh --dry-run\n  marsh adopt ~/.tahoe --dir /var/lib/marsh --storage-dir /srv/marsh-shares"
    )]
    Adopt(cmd::adopt::AdoptArgs),
    /// Write a stopped node as a Tahoe-LAFS storage node directory: the way back from `marsh adopt`.
    #[command(after_help = "Example:\n  marsh export-tahoe --dir /var/lib/marsh /var/lib/tahoe-again")]
    ExportTahoe {
        /// The node directory.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// The Tahoe node directory to write (must not exist).
        tahoe_dir: std::path::PathBuf,
    },
    /// The node's blob stores: owner, release, take-over, sweep.
    #[command(subcommand, after_help = "Example:\n  marsh store owner --dir /var/lib/marsh")]
    Store(cmd::store::StoreCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Run { verbose: true, .. } => "info",
        // The run command's own lines (shutting down, what was persisted) always show.
        Command::Run { .. } => "warn,marsh::cmd::run=info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MARSH_LOG").unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if matches!(&cli.command, Command::Run { log_format, .. } if log_format == "json") {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    if matches!(cli.command, Command::Run { .. }) {
        malloc::tune_for_serving();
        if let Some(n) = limits::raise_descriptor_limit() {
            tracing::info!("open-file limit: {n}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("marsh: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Plugin(command) => cmd::plugin::run(command).await,
            Command::Init(args) => cmd::init::run(args),
            Command::Adopt(args) => cmd::adopt::run(args).await,
            Command::ExportTahoe { dir, tahoe_dir } => cmd::export_tahoe::run(&dir, &tahoe_dir).await,
            Command::Config { dir, command } => cmd::config::run(&dir, command).await,
            Command::Store(command) => cmd::store::run(command).await,
            Command::Announce { dir, account, signed, public_key } => {
                cmd::announce::run(&dir, account.as_deref(), signed, public_key)
            }
            Command::Account(command) => cmd::account::run(command),
            Command::Fleet(command) => cmd::fleet::run(command),
            Command::Accounting(command) => cmd::accounting::run(command),
            Command::Advisories(command) => cmd::advisories::run(command),
            Command::Versions(command) => cmd::versions::run(command),
            Command::Gc { dir, dry_run } => cmd::gc::run(&dir, dry_run).await,
            Command::Recover { dir } => cmd::recover::run(&dir).await,
            Command::Run { dir, .. } => cmd::run::run(&dir).await,
            Command::Status { dir } => cmd::status::run(&dir),
            Command::Upgrade { dir } => cmd::upgrade::run(&dir),
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "marsh", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Man { out } => man_pages(&out).map(|n| {
                println!("wrote {n} man pages to {}", out.display());
                ExitCode::SUCCESS
            }),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("marsh: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Write `marsh.1` and one page per command, nested commands named with dashes, into `out`;
/// how many.
fn man_pages(out: &std::path::Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out)?;
    let mut written = 0;
    let mut pending = vec![("marsh".to_owned(), Cli::command())];
    while let Some((name, command)) = pending.pop() {
        let command = command.name(name.clone());
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone()).render(&mut page)?;
        std::fs::write(out.join(format!("{name}.1")), page)?;
        written += 1;
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            pending.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command, nested ones included, shows an example in its `--help`.
    #[test]
    fn every_command_has_an_example() {
        let mut pending = vec![Cli::command()];
        let mut seen = 0;
        while let Some(mut command) = pending.pop() {
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                pending.push(sub.clone());
            }
            if command.get_name() == "marsh" {
                continue;
            }
            let help = command.render_long_help().to_string();
            assert!(
                help.contains("Example:\n  marsh "),
                "`{}` has no example in its help:\n{help}",
                command.get_name()
            );
            seen += 1;
        }
        assert!(seen >= 30, "the commands were not walked ({seen})");
    }

    #[test]
    fn man_pages_are_written_for_every_command() {
        let tmp = tempfile::tempdir().expect("tmp");
        let n = man_pages(tmp.path()).expect("man pages");
        assert!(n >= 30, "{n}");
        let page = std::fs::read_to_string(tmp.path().join("marsh-account-create.1")).expect("a nested page");
        assert!(page.contains(".TH marsh-account-create") && page.contains("Example"), "{page}");
    }
}

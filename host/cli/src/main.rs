//! `marsh`: the command line of the marsh storage node.
//!
//! This binary is the only place that uses `anyhow`; libraries return typed errors and the
//! commands here turn them into messages and exit statuses.

#![allow(clippy::print_stdout, reason = "a command line prints its results")]

mod plugin_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// marsh: a Tahoe-LAFS storage node with sandboxed plugin backends.
#[derive(Debug, Parser)]
#[command(name = "marsh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with plugin files: inspect them, or run the conformance suite against them.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MARSH_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("marsh: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Plugin(cmd) => plugin_cmd::run(cmd).await,
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

//! `marsh config get|set|unset|list`: the node's config in `NODE_DIR/node.sqlite`. A change
//! that would hide the shares the node already keeps is refused.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use marsh_node::NodeDir;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print one key's effective value.
    Get { key: String },
    /// Set a key (validated).
    Set { key: String, value: String },
    /// Return a key to its default.
    Unset { key: String },
    /// Every key, with defaults.
    List,
}

pub async fn run(dir: &Path, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let node = NodeDir::open(dir)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ConfigCommand::Get { key } => writeln!(out, "{}", node.get(&key)?)?,
        ConfigCommand::Set { key, value } => {
            marsh::stores::check_switch(&node, &key, Some(value.trim())).await?;
            let stored = node.set(&key, &value)?;
            writeln!(out, "{key} = {stored}")?;
        }
        ConfigCommand::Unset { key } => {
            marsh::stores::check_switch(&node, &key, None).await?;
            node.unset(&key)?;
        }
        ConfigCommand::List => {
            for s in node.settings()? {
                let value = s.value.as_deref().unwrap_or("(unset)");
                let note = if s.is_default { "  (default)" } else { "" };
                writeln!(out, "{} = {value}{note}    # {}", s.key, s.help)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

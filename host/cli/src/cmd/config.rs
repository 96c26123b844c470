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
    #[command(after_help = "Example:\n  marsh config get storage.reserved-space --dir /var/lib/marsh")]
    Get { key: String },
    /// Set a key (validated).
    #[command(
        after_help = "Example:\n  marsh config set storage.max-bytes 2TiB --dir /var/lib/marsh\n  marsh config set node.public-host storage1.example.org --dir /var/lib/marsh"
    )]
    Set { key: String, value: String },
    /// Return a key to its default.
    #[command(after_help = "Example:\n  marsh config unset storage.max-bytes --dir /var/lib/marsh")]
    Unset { key: String },
    /// Every key, with defaults.
    #[command(after_help = "Example:\n  marsh config list --dir /var/lib/marsh")]
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

//! `marsh account`: named accounts, each with its own swissnum and so its own NURL, with
//! write permission, quota and nickname as attributes. Changes reach a running node at once:
//! the server looks each request's account up in the same database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use marsh::Node;
use marsh_accountant::{Account, Accountant, Attribute, Attributes};
use marsh_core::unix_now;
use marsh_node::kinds::parse_size;

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create a named account; prints its NURL.
    #[command(
        after_help = "Example:\n  marsh account create alice --quota 20GiB --dir /var/lib/marsh\n  marsh announce --account alice --dir /var/lib/marsh   # her servers.yaml entry"
    )]
    Create {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// 1-64 of a-z, 0-9, `-`, `_`.
        name: String,
        /// Most bytes of shares it may hold, e.g. 20GiB (default: no limit).
        #[arg(long)]
        quota: Option<String>,
        /// It may read and renew leases but not upload.
        #[arg(long)]
        read_only: bool,
        /// A name for operators.
        #[arg(long)]
        nickname: Option<String>,
    },
    /// Every account with its usage.
    #[command(after_help = "Example:\n  marsh account list --dir /var/lib/marsh")]
    List {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// One account in full.
    #[command(after_help = "Example:\n  marsh account show alice --dir /var/lib/marsh")]
    Show {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        name: String,
    },
    /// Change an attribute: `write true|false`, `quota SIZE|none`, `nickname TEXT|none`.
    #[command(
        after_help = "Example:\n  marsh account set alice quota 50GiB --dir /var/lib/marsh\n  marsh account set anonymous write false --dir /var/lib/marsh"
    )]
    Set {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        name: String,
        attribute: String,
        value: String,
    },
    /// The servers.yaml a client of the account needs: an entry for every node of the fleet
    /// (accounting on PostgreSQL), each with the account's NURL on that node.
    #[command(
        after_help = "Example:\n  marsh account servers alice --dir /var/lib/marsh > servers.yaml\n  # then on the client: NODEDIR/private/servers.yaml"
    )]
    Servers {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        name: String,
    },
    /// Refuse every further request made with the account's NURL (takes effect at once).
    #[command(after_help = "Example:\n  marsh account revoke alice --dir /var/lib/marsh")]
    Revoke {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        name: String,
    },
}

fn quota(value: &str) -> anyhow::Result<Option<u64>> {
    if value == "none" {
        return Ok(None);
    }
    match parse_size(value) {
        Some(n) => Ok(Some(n)),
        None => bail!("quota {value:?}: expected a size such as 20GiB, or `none`"),
    }
}

fn describe(a: &Account) -> String {
    let quota = a.attributes.quota.map_or("none".to_owned(), |q| q.to_string());
    let state = match a.revoked {
        Some(t) => format!("revoked at {t}"),
        None => "active".to_owned(),
    };
    format!(
        "{}: {state}, write {}, quota {quota}, usage {} bytes, {} leases{}",
        a.name,
        a.attributes.write,
        a.usage,
        a.leases,
        a.attributes.nickname.as_deref().map(|n| format!(", nickname \"{n}\"")).unwrap_or_default()
    )
}

pub fn run(cmd: AccountCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let node_of = |dir: &Path| -> anyhow::Result<(Node, Accountant)> {
        let node = Node::open(dir)?;
        let accountant = marsh::persistence::open_accountant(node.dir())?;
        Ok((node, accountant))
    };
    match cmd {
        AccountCommand::Create { dir, name, quota: q, read_only, nickname } => {
            let (node, accountant) = node_of(&dir)?;
            let attributes =
                Attributes { write: !read_only, quota: q.as_deref().map(quota).transpose()?.flatten(), nickname };
            let account = accountant.create_account(&name, &attributes, unix_now())?.account;
            writeln!(out, "created {}", describe(&account))?;
            writeln!(out, "NURL: {}", node.account_nurl(&accountant, &name)?)?;
            writeln!(out, "servers.yaml entry: marsh announce --dir {} --account {name}", node.dir().root().display())?;
        }
        AccountCommand::Servers { dir, name } => {
            let (_, accountant) = node_of(&dir)?;
            let Some(swissnum) = accountant.swissnum(&name)? else {
                bail!("the anonymous account's NURL is each node's own: run `marsh announce` on each node");
            };
            let nodes = accountant.fleet()?;
            if nodes.is_empty() {
                bail!(
                    "this node's accounting is its own (accounting.engine sqlite), so the account is valid here alone: \
                     `marsh announce --account {name} --dir {}` prints its entry",
                    dir.display()
                );
            }
            writeln!(
                out,
                "# servers.yaml for account `{name}` on {} nodes (NODEDIR/private/servers.yaml):",
                nodes.len()
            )?;
            writeln!(out, "storage:")?;
            for n in &nodes {
                let r = &n.record;
                let (nurl, furl) = (r.nurl.replace("{swissnum}", &swissnum), r.furl.replace("{swissnum}", &swissnum));
                let entry = marsh::servers_yaml::Entry {
                    server_id: &r.server_id,
                    nickname: &r.nickname,
                    furl: &furl,
                    nurl: &nurl,
                    permutation_seed: &r.permutation_seed,
                };
                entry.write(&mut out)?;
            }
        }
        AccountCommand::List { dir } => {
            let (_, accountant) = node_of(&dir)?;
            for a in accountant.accounts()? {
                writeln!(out, "{}", describe(&a))?;
            }
        }
        AccountCommand::Show { dir, name } => {
            let (node, accountant) = node_of(&dir)?;
            let a = accountant.account(&name)?;
            writeln!(out, "{}", describe(&a))?;
            writeln!(out, "created: {}", a.created)?;
            writeln!(out, "NURL: {}", node.account_nurl(&accountant, &name)?)?;
        }
        AccountCommand::Set { dir, name, attribute, value } => {
            let (_, accountant) = node_of(&dir)?;
            let change = match attribute.as_str() {
                "write" => Attribute::Write(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => bail!("write {value:?}: expected true or false"),
                }),
                "quota" => Attribute::Quota(quota(&value)?),
                "nickname" => Attribute::Nickname((value != "none").then_some(value)),
                other => bail!("unknown attribute `{other}`: expected write, quota or nickname"),
            };
            accountant.set_attribute(&name, change)?;
            writeln!(out, "{}", describe(&accountant.account(&name)?))?;
        }
        AccountCommand::Revoke { dir, name } => {
            let (_, accountant) = node_of(&dir)?;
            accountant.revoke(&name, unix_now())?;
            writeln!(out, "{}", describe(&accountant.account(&name)?))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

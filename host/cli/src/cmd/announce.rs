//! `marsh announce [--account NAME]`: the node's NURL and the `servers.yaml` entry a Tahoe
//! client needs.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use marsh::Node;

pub fn run(dir: &Path, account: Option<&str>) -> anyhow::Result<ExitCode> {
    let node = Node::open(dir)?;
    let id = node.identity();
    let nurl = match account {
        None => node.nurl(),
        Some(name) => node.account_nurl(&marsh::persistence::open_accountant(node.dir())?, name)?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "# NURL: {nurl}")?;
    writeln!(out, "# servers.yaml entry for a Tahoe-LAFS 1.20 client (NODEDIR/private/servers.yaml):")?;
    writeln!(out, "storage:")?;
    writeln!(out, "  {}:", id.server_id)?;
    writeln!(out, "    ann:")?;
    writeln!(out, "      nickname: {}", node.config().nickname)?;
    writeln!(out, "      anonymous-storage-FURL: {}", id.furl())?;
    writeln!(out, "      anonymous-storage-NURLs:")?;
    writeln!(out, "        - {nurl}")?;
    writeln!(out, "      permutation-seed-base32: {}", id.permutation_seed)?;
    Ok(ExitCode::SUCCESS)
}

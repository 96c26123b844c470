//! `marsh upgrade --dir NODE_DIR`: bring a node directory made by an earlier marsh up to date.
//! Today that is one step: an ed25519 signing key for a node made before marsh had them, which
//! makes the key's public key the node's server id (as Tahoe's is), for introducers and grid
//! managers. Run it with the node stopped or running (it takes the new id at its next start).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use marsh_node::NodeDir;

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let node = NodeDir::open(dir)?;
    let mut out = std::io::stdout().lock();
    match node.add_signing_key()? {
        None => writeln!(out, "{} is up to date: it has a signing key", dir.display())?,
        Some((old, new)) => {
            writeln!(out, "added an ed25519 signing key to {}", dir.display())?;
            writeln!(out, "server id: {old} -> {new}")?;
            writeln!(
                out,
                "The NURLs, shares, accounts and permutation seed are unchanged, so clients keep working.\n\
                 Clients that list this node in private/servers.yaml know it by the old id: replace their\n\
                 entry with what `marsh announce --dir {}` prints now (then restart the node), so that\n\
                 they and the grid's introducers agree on one id.",
                dir.display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `marsh announce [--account NAME]`: the node's NURL and the `servers.yaml` entry a Tahoe
//! client needs; with `--signed`, the storage announcement an introducer would carry, signed
//! with the node's key, as JSON (`msg`, `sig`, `key`), for checking it with other tools; with
//! `--public-key`, the key as Tahoe's `node.pubkey` holds it, which `grid-manager add` takes.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use marsh::Node;

pub fn run(dir: &Path, account: Option<&str>, signed: bool, public_key: bool) -> anyhow::Result<ExitCode> {
    let node = Node::open(dir)?;
    let id = node.identity();
    if signed || public_key {
        let key = id.signing_key.as_ref().ok_or_else(|| {
            anyhow::anyhow!("this node has no signing key: run `marsh upgrade --dir {}`", dir.display())
        })?;
        if public_key {
            println!("pub-{}", key.server_id());
            return Ok(ExitCode::SUCCESS);
        }
        let config = node.config();
        let s = marsh_node::announcement::signed_now(
            id,
            key,
            &config.nickname,
            &[node.nurl()],
            &config.grid_manager_certificates,
        )?;
        let out = serde_json::json!({ "msg": String::from_utf8_lossy(&s.msg), "sig": s.sig, "key": s.key });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    let nurl = match account {
        None => node.nurl(),
        Some(name) => node.account_nurl(&marsh::persistence::open_accountant(node.dir())?, name)?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "# NURL: {nurl}")?;
    writeln!(out, "# servers.yaml entry for a Tahoe-LAFS 1.20 client (NODEDIR/private/servers.yaml):")?;
    writeln!(out, "storage:")?;
    let entry = marsh::servers_yaml::Entry {
        server_id: &id.server_id,
        nickname: &node.config().nickname,
        furl: &id.furl(),
        nurl: &nurl,
        permutation_seed: &id.permutation_seed,
    };
    entry.write(&mut out)?;
    Ok(ExitCode::SUCCESS)
}

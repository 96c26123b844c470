//! `marsh account` and `marsh announce --account` as an operator runs them, against a running
//! node: a named account's NURL works, and revoking it stops its requests at once.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Running, marsh, ok};
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Nurl};

fn run(dir: &Path) -> (Running, String) {
    let node = Running::start(dir).expect("the node starts");
    let nurl = node.nurl.clone();
    (node, nurl)
}

async fn version_status(nurl: &str) -> StatusCode {
    let nurl: Nurl = nurl.parse().expect("nurl");
    let mut client = GbsClient::connect(&nurl).await.expect("connect");
    client.call(Method::GET, "version", &[], &[], Vec::new()).await.expect("version").status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_account_has_its_own_nurl_until_it_is_revoked() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("node");
    let d = dir.to_str().expect("utf-8");
    let port = common::free_port();
    ok(marsh(&["init", "--dir", d, "--listen", &format!("127.0.0.1:{port}")]));
    let (_node, anonymous) = run(&dir);

    let created = ok(marsh(&["account", "create", "alice", "--quota", "1GiB", "--nickname", "Alice", "--dir", d]));
    let nurl = created.lines().find_map(|l| l.strip_prefix("NURL: ")).expect("NURL line").to_owned();
    assert_ne!(nurl, anonymous, "its own swissnum");
    assert!(created.contains("quota 1073741824"), "{created}");
    assert!(ok(marsh(&["announce", "--account", "alice", "--dir", d])).contains(&nurl));
    assert!(!marsh(&["account", "create", "alice", "--dir", d]).status.success(), "names are unique");
    assert!(!marsh(&["announce", "--account", "bob", "--dir", d]).status.success());

    // The running node knows the account without a restart.
    assert_eq!(version_status(&nurl).await, StatusCode::OK);
    ok(marsh(&["account", "set", "alice", "write", "false", "--dir", d]));
    assert!(ok(marsh(&["account", "show", "alice", "--dir", d])).contains("write false"));
    ok(marsh(&["account", "revoke", "alice", "--dir", d]));
    assert_eq!(version_status(&nurl).await, StatusCode::UNAUTHORIZED, "revocation takes effect at once");
    assert_eq!(version_status(&anonymous).await, StatusCode::OK);
    let list = ok(marsh(&["account", "list", "--dir", d]));
    assert!(list.starts_with("anonymous: active") && list.contains("alice: revoked at"), "{list}");
}

/// A recovery that stopped half-way is marked in the database: the node refuses to serve from
/// it until `marsh recover` has run to the end, which is safe to repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_recovery_is_finished_before_the_node_serves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, backup) = (tmp.path().join("node"), tmp.path().join("backup"));
    let d = dir.to_str().expect("utf-8");
    let port = common::free_port();
    ok(marsh(&[
        "init",
        "--dir",
        d,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--storage-dir",
        tmp.path().join("s").to_str().expect("utf-8"),
    ]));
    ok(marsh(&["config", "set", "persistence.plugin", "records", "--dir", d]));
    assert!(Command::new("cp").arg("-a").arg(&dir).arg(&backup).status().expect("cp").success());
    let (node, _) = run(&dir);
    ok(marsh(&["account", "create", "dave", "--dir", d]));
    node.stop();
    let before = ok(marsh(&["account", "list", "--dir", d]));

    std::fs::remove_dir_all(&dir).expect("rm");
    assert!(Command::new("cp").arg("-a").arg(&backup).arg(&dir).status().expect("cp").success());
    ok(marsh(&["recover", "--dir", d]));
    // As if the recovery had been killed before it finished.
    marsh_accountant::Accountant::open(&dir.join("cache/accountant.sqlite"))
        .expect("db")
        .set_recovering(true)
        .expect("mark");
    let refused = marsh(&["run", "--dir", d]);
    assert_eq!(refused.status.code(), Some(3));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("interrupted") && why.contains(&format!("marsh recover --dir {d}")), "{why}");
    ok(marsh(&["recover", "--dir", d]));
    assert_eq!(ok(marsh(&["account", "list", "--dir", d])), before);
    let (node, _) = run(&dir);
    drop(node);
}

//! `marsh account` and `marsh announce --account` as an operator runs them, against a running
//! node: a named account's NURL works, and revoking it stops its requests at once.

use crate::common::{Fixture, TestNode};
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Nurl};

async fn version_status(nurl: &Nurl) -> StatusCode {
    let mut client = GbsClient::connect(nurl).await.expect("connect");
    client.call(Method::GET, "version", &[], &[], Vec::new()).await.expect("version").status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_account_has_its_own_nurl_until_it_is_revoked() {
    let node = TestNode::new();
    let running = node.start();
    let anonymous = running.nurl();

    let created = node.ok(&["account", "create", "alice", "--quota", "1GiB", "--nickname", "Alice"]);
    let nurl: Nurl = created.lines().find_map(|l| l.strip_prefix("NURL: ")).expect("NURL line").parse().expect("nurl");
    assert_ne!(nurl, anonymous, "its own swissnum");
    assert!(created.contains("quota 1073741824"), "{created}");
    assert!(node.ok(&["announce", "--account", "alice"]).contains(&nurl.to_string()));
    assert!(!node.marsh(&["account", "create", "alice"]).status.success(), "names are unique");
    assert!(!node.marsh(&["announce", "--account", "bob"]).status.success());

    // The running node knows the account without a restart.
    assert_eq!(version_status(&nurl).await, StatusCode::OK);
    node.ok(&["account", "set", "alice", "write", "false"]);
    assert!(node.ok(&["account", "show", "alice"]).contains("write false"));
    node.ok(&["account", "revoke", "alice"]);
    assert_eq!(version_status(&nurl).await, StatusCode::UNAUTHORIZED, "revocation takes effect at once");
    assert_eq!(version_status(&anonymous).await, StatusCode::OK);
    let list = node.ok(&["account", "list"]);
    assert!(list.starts_with("anonymous: active") && list.contains("alice: revoked at"), "{list}");
}

/// A recovery that stopped half-way is marked in the database: the node refuses to serve from
/// it until `marsh recover` has run to the end, which is safe to repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_recovery_is_finished_before_the_node_serves() {
    let node = TestNode::with(&[("persistence.plugin", "records")]);
    let backup = node.back_up("backup");
    let running = node.start();
    node.create_account("dave", &[]);
    running.stop();
    let before = node.ok(&["account", "list"]);

    node.restore(&backup);
    node.ok(&["recover"]);
    // As if the recovery had been killed before it finished.
    node.accountant().set_recovering(true).expect("mark");
    let refused = node.marsh(&["run"]);
    assert_eq!(refused.status.code(), Some(3));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("interrupted") && why.contains(&format!("marsh recover --dir {}", node.d())), "{why}");
    node.ok(&["recover"]);
    assert_eq!(node.ok(&["account", "list"]), before);
    drop(node.start());
}

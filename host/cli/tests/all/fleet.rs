//! A fleet of nodes keeping their accounting on one PostgreSQL database
//! (`accounting.engine postgres`): three `marsh run` processes, one account made on one of
//! them, its usage the sum over all three, its quota enforced on that sum, its revocation
//! refused by every node within a second.

use std::time::Duration;

use crate::common::{Fixture, TestNode};
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Nurl, Secrets};
use marsh_pgtest::Cluster;

async fn version_status(nurl: &Nurl) -> StatusCode {
    let mut client = GbsClient::connect(nurl).await.expect("connect");
    client.call(Method::GET, "version", &[], &[], Vec::new()).await.expect("version").status
}

fn si(n: u8) -> String {
    data_encoding::BASE32_NOPAD.encode(&[n; 16]).to_ascii_lowercase()
}

fn account_nurl(node: &TestNode, name: &str) -> Nurl {
    let out = node.ok(&["announce", "--account", name]);
    let start = out.find("pb://").unwrap_or_else(|| panic!("a NURL in {out}"));
    let nurl: String = out[start..].chars().take_while(|c| !c.is_whitespace() && !"\"',]".contains(*c)).collect();
    nurl.parse().expect("a NURL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_database_share_accounts_usage_quota_and_revocation() {
    let cluster = Cluster::shared().expect("a PostgreSQL cluster (`make postgres` installs the server)");
    let url = cluster.url(&cluster.fresh_database().unwrap());
    let config = [("accounting.engine", "postgres"), ("accounting.postgres", url.as_str())];
    let nodes: Vec<TestNode> = (0..3).map(|_| TestNode::with(&config)).collect();
    let running: Vec<_> = nodes.iter().map(TestNode::start).collect();

    // Made on one node, valid on every node: each prints its own NURL for the account.
    nodes[0].create_account("alice", &["--quota", "250000"]);
    let nurls: Vec<Nurl> = nodes.iter().map(|n| account_nurl(n, "alice")).collect();
    assert_eq!(nurls.iter().map(|n| n.swissnum.clone()).collect::<std::collections::HashSet<_>>().len(), 1);
    for nurl in &nurls {
        assert_eq!(version_status(nurl).await, StatusCode::OK, "{nurl}");
    }

    // 100 kB on each of two nodes: the account's usage is the sum, seen from every node.
    for (i, nurl) in nurls.iter().take(2).enumerate() {
        let mut client = GbsClient::connect(nurl).await.unwrap();
        client.upload(&si(i as u8 + 1), 0, &Secrets::from_seed(i as u8), &[7; 100_000]).await.unwrap();
    }
    for node in &nodes {
        let shown = node.ok(&["account", "show", "alice"]);
        assert!(shown.contains("usage 200000"), "{shown}");
    }
    // The quota holds on the sum: 60 kB more would pass on the third node alone, not on the fleet.
    let mut third = GbsClient::connect(&nurls[2]).await.unwrap();
    let over = third.upload(&si(9), 0, &Secrets::from_seed(9), &[7; 60_000]).await;
    assert!(over.is_err(), "over the fleet's quota: {over:?}");
    third.upload(&si(9), 0, &Secrets::from_seed(9), &[7; 50_000]).await.expect("exactly up to the quota");
    assert!(nodes[1].ok(&["account", "show", "alice"]).contains("usage 250000"));

    // Revoked on one node, refused by every node within a second.
    nodes[1].ok(&["account", "revoke", "alice"]);
    tokio::time::sleep(marsh_accountant::POSTGRES_CALLERS_FOR + Duration::from_millis(200)).await;
    for nurl in &nurls {
        assert_eq!(version_status(nurl).await, StatusCode::UNAUTHORIZED, "{nurl}");
    }
    for r in running {
        r.stop();
    }
}

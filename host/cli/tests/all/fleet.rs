//! Nodes keeping their accounting on PostgreSQL (`accounting.engine postgres`): three `marsh run`
//! processes on one database (an account made on one of them, its usage the sum over all three,
//! its quota enforced on that sum, its revocation refused by every node within a second; the
//! fleet's register); recovery from the `records` strategy on S3 into an empty database; a
//! strategy that needs SQLite refused; the database away at start and under traffic; moving a
//! node's accounting there and back.

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
    let web: std::net::SocketAddr = format!("127.0.0.1:{}", crate::common::free_port()).parse().unwrap();
    nodes[0].set("web.listen", &web.to_string());
    let running: Vec<_> = nodes.iter().map(TestNode::start).collect();

    // Made on one node, valid on every node: each prints its own NURL for the account.
    nodes[0].create_account("alice", &["--quota", "250000"]);
    let nurls: Vec<Nurl> = nodes.iter().map(|n| account_nurl(n, "alice")).collect();
    assert_eq!(nurls.iter().map(|n| n.swissnum.clone()).collect::<std::collections::HashSet<_>>().len(), 1);
    for nurl in &nurls {
        assert_eq!(version_status(nurl).await, StatusCode::OK, "{nurl}");
    }
    // One servers.yaml for the account, from any node: every node's entry with its NURL there.
    let servers = nodes[2].ok(&["account", "servers", "alice"]);
    assert!(servers.contains("on 3 nodes"), "{servers}");
    for nurl in &nurls {
        assert!(servers.contains(&format!("- {nurl}")), "{nurl} in\n{servers}");
    }
    let status = nodes[1].ok(&["fleet", "status"]);
    assert!(status.starts_with("3 nodes") && status.matches(": running (seen").count() == 3, "{status}");
    let page = crate::web::get(web, "/", None).2;
    assert!(page.contains("<h2>Fleet (3 nodes)</h2>") && page.matches("<tr><td title=\"v0-").count() == 3, "{page}");

    // 100 kB on each of two nodes: the account's usage is the sum, seen from every node.
    for (i, nurl) in nurls.iter().take(2).enumerate() {
        let mut client = GbsClient::connect(nurl).await.unwrap();
        client.upload(&si(i as u8 + 1), 0, &Secrets::from_seed(i as u8), &[7; 100_000]).await.unwrap();
    }
    for node in &nodes {
        let shown = node.ok(&["account", "show", "alice"]);
        assert!(shown.contains("usage 200000 bytes"), "{shown}");
    }
    // The quota holds on the sum: 60 kB more would pass on the third node alone, not on the fleet.
    let mut third = GbsClient::connect(&nurls[2]).await.unwrap();
    let over = third.upload(&si(9), 0, &Secrets::from_seed(9), &[7; 60_000]).await;
    assert!(over.is_err(), "over the fleet's quota: {over:?}");
    third.upload(&si(9), 0, &Secrets::from_seed(9), &[7; 50_000]).await.expect("exactly up to the quota");
    assert!(nodes[1].ok(&["account", "show", "alice"]).contains("usage 250000"));

    // The first node's pool, as /metrics shows it.
    let metrics = crate::web::get(web, "/metrics", None).2;
    assert_eq!(crate::web::sample(&metrics, "marsh_accounting_connections_max"), 8.0);
    let open = crate::web::sample(&metrics, "marsh_accounting_connections_open");
    assert!((1.0..=8.0).contains(&open), "{metrics}");
    assert!(crate::web::sample(&metrics, "marsh_accounting_round_trips_total") > 0.0, "{metrics}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_postgres_recovers_from_its_records_on_s3_into_an_empty_database() {
    let cluster = Cluster::shared().expect("a PostgreSQL cluster (`make postgres` installs the server)");
    let first = cluster.url(&cluster.fresh_database().unwrap());
    // Shares and the strategy's records in the S3 bucket (SeaweedFS, which `make test` starts).
    let node = crate::s3::s3_node("pg-recovery", &crate::s3::unique_prefix("pg-recovery"));
    for (key, value) in [
        ("accounting.engine", "postgres"),
        ("accounting.postgres", first.as_str()),
        ("persistence.plugin", "records"),
        ("persistence.config.snapshot-changes", "0"),
    ] {
        node.set(key, value);
    }
    let running = node.start();
    let alice = node.create_account("alice", &["--quota", "1GiB"]);
    GbsClient::connect(&alice).await.unwrap().upload(&si(1), 0, &Secrets::from_seed(1), &[5; 30_000]).await.unwrap();
    running.stop();
    let before = node.ok(&["account", "show", "alice"]);
    assert!(before.contains("usage 30000"), "{before}");

    // The database is lost: the node is pointed at an empty one.
    node.set("accounting.postgres", &cluster.url(&cluster.fresh_database().unwrap()));
    let refused = node.marsh(&["run"]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{why}");
    assert!(why.contains(&format!("marsh recover --dir {}", node.d())), "{why}");
    node.ok(&["recover"]);
    assert_eq!(node.ok(&["account", "show", "alice"]), before, "the account, its quota and usage came back");
    let running = node.start();
    assert_eq!(version_status(&alice).await, StatusCode::OK, "alice's NURL answers again");
    running.stop();
}

#[test]
fn a_strategy_that_needs_sqlite_snapshots_is_refused_with_what_to_set() {
    let cluster = Cluster::shared().expect("a PostgreSQL cluster (`make postgres` installs the server)");
    let url = cluster.url(&cluster.fresh_database().unwrap());
    for (plugin, says) in [("stash", "persistence.plugin"), ("records", "snapshot-changes")] {
        let node = TestNode::with(&[
            ("accounting.engine", "postgres"),
            ("accounting.postgres", url.as_str()),
            ("persistence.plugin", plugin),
        ]);
        let why = node.try_start().map(|r| r.stop()).expect_err("refused");
        assert!(why.contains("accounting.engine is postgres") && why.contains(says), "{plugin}: {why}");
    }
}

async fn read_share(client: &mut GbsClient) -> StatusCode {
    let path = format!("immutable/{}/0", si(1));
    client.call(Method::GET, &path, &[], &[("range", "bytes=0-99")], Vec::new()).await.expect("a read").status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_under_traffic_reads_go_on_the_rest_gets_503_and_all_resumes() {
    let cluster = Cluster::start().expect("a PostgreSQL cluster (`make postgres` installs the server)");
    let url = cluster.url(&cluster.fresh_database().unwrap());
    let node = TestNode::with(&[("accounting.engine", "postgres"), ("accounting.postgres", url.as_str())]);
    let web: std::net::SocketAddr = format!("127.0.0.1:{}", crate::common::free_port()).parse().unwrap();
    node.set("web.listen", &web.to_string());
    node.set("accounting.postgres-connections", "2");
    let running = node.start();
    let nurl = running.nurl();
    let mut client = GbsClient::connect(&nurl).await.unwrap();
    client.upload(&si(1), 0, &Secrets::from_seed(1), &[3; 20_000]).await.unwrap();
    assert_eq!(read_share(&mut client).await, StatusCode::PARTIAL_CONTENT);
    // Client traffic throughout: renewals one after another on a connection of their own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (nurl, stop) = (nurl.clone(), stop.clone());
        async move {
            let mut c = GbsClient::connect(&nurl).await.unwrap();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(c.renew(&si(1), &Secrets::from_seed(1)).await.map(|r| r.status).map_err(|e| e.to_string()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.stop().unwrap();
    tokio::time::sleep(marsh_accountant::POSTGRES_CALLERS_FOR + Duration::from_millis(200)).await;
    // Bounded: a hang would show as this guard, not as a slow answer.
    let guard = Duration::from_secs(60);
    let during = tokio::time::timeout(guard, read_share(&mut client)).await.expect("no hang");
    assert_eq!(during, StatusCode::PARTIAL_CONTENT, "a share read needs no accounting");
    let allocate = tokio::time::timeout(guard, client.allocate(&si(2), &Secrets::from_seed(2), &[0], 10)).await;
    assert_eq!(allocate.expect("no hang").unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
    let renew = tokio::time::timeout(guard, client.renew(&si(1), &Secrets::from_seed(1))).await;
    assert_eq!(renew.expect("no hang").unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(crate::web::get(web, "/health", None).0, 503, "not ready while accounting is away");

    cluster.start_server().unwrap();
    let renewed = client.renew(&si(1), &Secrets::from_seed(1)).await.unwrap().status;
    assert_eq!(renewed, StatusCode::NO_CONTENT, "resumed by itself");
    client.upload(&si(2), 0, &Secrets::from_seed(2), &[4; 1000]).await.expect("uploads resume");
    assert_eq!(crate::web::get(web, "/health", None).0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // The traffic saw the outage as one stretch of 503s, and nothing else fail: renewals
    // succeeded before it, and every one after the first success that followed it.
    let seen = traffic.await.unwrap();
    let statuses: Vec<StatusCode> = seen.iter().map(|s| *s.as_ref().expect("no transport error")).collect();
    let first = statuses.iter().position(|s| *s == StatusCode::SERVICE_UNAVAILABLE).expect("the outage was seen");
    let last = statuses.iter().rposition(|s| *s == StatusCode::SERVICE_UNAVAILABLE).unwrap();
    assert!(first > 0 && last + 1 < statuses.len(), "{statuses:?}");
    assert!(
        statuses[..first].iter().chain(&statuses[last + 1..]).all(|s| *s == StatusCode::NO_CONTENT),
        "{statuses:?}"
    );
    assert!(statuses[first..=last].iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE), "one stretch: {statuses:?}");
    let shown = node.ok(&["account", "show", "anonymous"]);
    assert!(shown.contains("usage 21000 bytes, 2 leases"), "one lease each, renewed, never doubled: {shown}");
    running.stop();
}

#[test]
fn a_node_whose_database_is_not_up_yet_waits_for_it_and_then_serves() {
    let cluster = Cluster::start().expect("a PostgreSQL cluster (`make postgres` installs the server)");
    let url = cluster.url(&cluster.fresh_database().unwrap());
    let node = TestNode::with(&[("accounting.engine", "postgres"), ("accounting.postgres", url.as_str())]);
    cluster.stop().unwrap();
    let starting = std::thread::spawn(move || node.try_start().map(|r| (r.stop(), node)));
    std::thread::sleep(Duration::from_secs(3));
    cluster.start_server().unwrap();
    let (log, node) = starting.join().unwrap().expect("serves once the database is up");
    assert!(log.contains("cannot reach the accounting database") && log.contains("trying again"), "{log}");
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_moves_its_accounting_to_postgres_and_back_with_everything_and_a_clash_is_refused() {
    let cluster = Cluster::shared().expect("a PostgreSQL cluster (`make postgres` installs the server)");
    let url = cluster.url(&cluster.fresh_database().unwrap());
    let node = TestNode::new();
    let running = node.start();
    let alice = node.create_account("alice", &["--quota", "1GiB"]);
    GbsClient::connect(&alice).await.unwrap().upload(&si(1), 0, &Secrets::from_seed(1), &[5; 20_000]).await.unwrap();
    let to_postgres = ["accounting", "move", "--to", "postgres", "--postgres", url.as_str()];
    assert!(!node.marsh(&to_postgres).status.success(), "refused while the node serves");
    running.stop();
    let before = node.ok(&["account", "list"]);

    let out = node.ok(&to_postgres);
    assert!(out.contains("moved 1 accounts, 1 shares, 1 leases") && out.contains("counts match"), "{out}");
    assert_eq!(node.ok(&["config", "get", "accounting.engine"]).trim(), "postgres");
    assert_eq!(node.ok(&["account", "list"]), before, "the same accounts, usage and leases");
    let running = node.start();
    assert_eq!(version_status(&alice).await, StatusCode::OK, "alice's NURL works on the moved node");
    assert!(node.ok(&["account", "servers", "alice"]).contains(&alice.to_string()));
    running.stop();

    // A second node with an alice of its own cannot join: reported, nothing merged or moved.
    let other = TestNode::new();
    other.create_account("alice", &[]);
    let refused = other.marsh(&to_postgres);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("alice") && why.contains("nothing was moved"), "{why}");
    assert_eq!(other.ok(&["config", "get", "accounting.engine"]).trim(), "sqlite");

    // And back: the node's accounts as they were, its old SQLite database kept beside.
    let out = node.ok(&["accounting", "move", "--to", "sqlite"]);
    assert!(out.contains("counts match") && out.contains("kept the SQLite database"), "{out}");
    assert_eq!(node.ok(&["config", "get", "accounting.engine"]).trim(), "sqlite");
    assert_eq!(node.ok(&["account", "list"]), before);
    let running = node.start();
    assert_eq!(version_status(&alice).await, StatusCode::OK);
    running.stop();
}

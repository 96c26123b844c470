//! Nodes on a real S3 server (SeaweedFS, started by `make test`): owner fencing between two
//! nodes on one bucket prefix, its deliberate hand-over, the refusal to switch the backend
//! of a node that already keeps shares, disaster recovery, and a mutable share the bucket's
//! operator rolled back.

use crate::common::{Fixture, TestNode, text};
use marsh_gbs_client::Secrets;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests need a real S3 server; run `make test` (it starts SeaweedFS)")
    })
}

/// A node whose backend is `backend-s3` on the test bucket under `prefix`.
pub(crate) fn s3_node(nickname: &str, prefix: &str) -> TestNode {
    let node = TestNode::with(&[("node.nickname", nickname)]);
    for (k, v) in [
        ("backend.plugin", "s3".to_owned()),
        ("store.shares", "s3".to_owned()),
        ("s3.shares.endpoint", var("MARSH_TEST_S3_ENDPOINT")),
        ("s3.shares.bucket", var("MARSH_TEST_S3_BUCKET")),
        ("s3.shares.region", var("MARSH_TEST_S3_REGION")),
        ("s3.shares.prefix", prefix.to_owned()),
        ("s3.shares.path-style", "true".to_owned()),
        ("s3.shares.access-key-id", var("MARSH_TEST_S3_ACCESS_KEY")),
        ("s3.shares.secret-access-key", var("MARSH_TEST_S3_SECRET_KEY")),
    ] {
        node.set(k, &v);
    }
    node
}

fn server_id(node: &TestNode) -> String {
    node.ok(&["announce"])
        .lines()
        .find_map(|l| l.trim().strip_suffix(':').filter(|s| s.starts_with("v0-")).map(str::to_owned))
        .expect("server id")
}

pub(crate) fn unique_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("cli-{what}-{}-{nanos}/", std::process::id())
}

#[test]
fn a_second_node_on_the_same_prefix_refuses_to_start_until_released() {
    let prefix = unique_prefix("fence");
    let (a, b) = (s3_node("first", &prefix), s3_node("second", &prefix));
    let first = a.start();
    let refusal = b.try_start().expect_err("the second node must refuse to start");
    let a_id = server_id(&a);
    assert!(refusal.contains("status Some(2)"), "{refusal}");
    assert!(refusal.contains(&a_id) && refusal.contains("\"first\""), "names the owner: {refusal}");
    assert!(refusal.contains("marsh store release"), "says how to hand over: {refusal}");
    let owner = b.ok(&["store", "owner"]);
    assert!(owner.contains(&a_id) && !owner.contains("(this node)"), "{owner}");

    // Releasing from the wrong node does nothing.
    assert!(!b.marsh(&["store", "release", "shares"]).status.success());
    drop(first);
    a.ok(&["store", "release", "shares"]);
    drop(b.start());
    let owner = b.ok(&["store", "owner"]);
    assert!(owner.contains("(this node)"), "{owner}");
    // And the first now refuses, until it takes the store over, naming its owner.
    assert!(a.try_start().is_err());
    let b_id = server_id(&b);
    a.ok(&["store", "take-over", "shares", "--from", &b_id]);
    drop(a.start());
}

#[test]
fn switching_the_backend_of_a_node_with_shares_is_refused() {
    let node = TestNode::new();
    let storage = node.storage();
    // Before first use, the backend may change freely.
    node.set("backend.plugin", "s3");
    node.set("backend.plugin", "disk");
    // A share on disk: now the backend and its store stay put.
    std::fs::create_dir_all(storage.join("shares/aa/aaaa")).expect("mkdir");
    std::fs::write(storage.join("shares/aa/aaaa/0"), b"share").expect("write");
    let refused = node.marsh(&["config", "set", "backend.plugin", "s3"]);
    assert_eq!(refused.status.code(), Some(2));
    let why = text(&refused.stderr);
    assert!(why.contains("already keeps shares in store `shares`") && why.contains("marsh init"), "{why}");
    assert!(!node.marsh(&["config", "set", "store.shares", "s3"]).status.success());
    assert_eq!(node.ok(&["config", "get", "backend.plugin"]).trim(), "disk", "unchanged");
    // Unrelated keys still change.
    node.set("node.nickname", "still-fine");
}

/// The node's `shares` store, opened as its operator would.
async fn bucket_of(node: &TestNode) -> marsh_stores_s3::S3Store {
    let mut config = marsh_stores_s3::S3Config::new("shares", &var("MARSH_TEST_S3_BUCKET"));
    config.endpoint = Some(var("MARSH_TEST_S3_ENDPOINT"));
    config.path_style = true;
    config.access_key_id = Some(var("MARSH_TEST_S3_ACCESS_KEY"));
    config.secret_access_key = Some(var("MARSH_TEST_S3_SECRET_KEY"));
    config.prefix = node.ok(&["config", "get", "s3.shares.prefix"]).trim().to_owned();
    marsh_stores_s3::S3Store::open(config).await.expect("bucket")
}

/// The bucket's operator keeps a mutable share's objects and puts them back after the client
/// wrote a newer version: the pointer is the slot's own, sealed for it, so it opens, and
/// `backend-s3` serves the older share. The node refuses it, having kept the sequence number
/// it last wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutable_share_the_bucket_rolled_back_is_refused() {
    use http::{Method, StatusCode};
    use marsh_stores::{BlobKey, BlobStore, PutMode};

    let node = s3_node("rollback", &unique_prefix("rollback"));
    let running = node.start();
    let mut client = running.client().await;
    let (si, secrets) = ("aeaqcaibaeaqcaibaeaqcaibae", Secrets::from_seed(3));
    let version = |seqnum: u64, body: &[u8]| [&[0u8][..], &seqnum.to_be_bytes(), body].concat();
    let write = |share: &[u8]| {
        marsh_gbs_client::rtw_body_shares(&[(0, vec![], vec![(0, share)], Some(share.len() as u64))], &[])
    };
    let (v1, v2) = (version(1, b"first version"), version(2, b"second version"));
    assert_eq!(client.read_test_write(si, &secrets, write(&v1)).await.unwrap().status, StatusCode::OK);
    let bucket = bucket_of(&node).await;
    let mut kept = Vec::new();
    for prefix in ["slots/", "slotdata/"] {
        for k in BlobStore::list(&bucket, prefix, None, 1000).await.unwrap().keys {
            let key = BlobKey::new(&k).unwrap();
            kept.push((key.clone(), BlobStore::get(&bucket, &key).await.unwrap().unwrap()));
        }
    }
    assert!(kept.iter().any(|(k, _)| k.as_str().starts_with("slots/")), "the pointer: {kept:?}");
    assert_eq!(client.read_test_write(si, &secrets, write(&v2)).await.unwrap().status, StatusCode::OK);
    let path = format!("mutable/{si}/0");
    let read = client.call(Method::GET, &path, &[], &[], Vec::new()).await.unwrap();
    assert_eq!((read.status, read.body.as_ref()), (StatusCode::OK, &v2[..]));

    for (key, bytes) in kept {
        BlobStore::put(&bucket, &key, bytes, PutMode::Overwrite).await.unwrap();
    }
    let tail = client.call(Method::GET, &path, &[], &[("range", "bytes=9-21")], Vec::new()).await.unwrap();
    assert_eq!(tail.body.as_ref(), b"first version", "the bucket serves the older share again");
    let refused = client.call(Method::GET, &path, &[], &[], Vec::new()).await.unwrap();
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", refused.body);
    let over_it = client.read_test_write(si, &secrets, write(&version(3, b"third"))).await.unwrap();
    assert_eq!(over_it.status, StatusCode::SERVICE_UNAVAILABLE, "nothing is written over it");

    // The operator restored the bucket on purpose: their word makes the node serve it as it is.
    let listed = node.ok(&["versions", "list"]);
    assert!(
        listed.contains(&format!("{si} 0 2\n")) && listed.ends_with("1 mutable shares with a sequence number kept\n"),
        "{listed}"
    );
    assert!(node.ok(&["versions", "forget", si]).contains("forgot 1 "));
    let served = client.call(Method::GET, &path, &[], &[], Vec::new()).await.unwrap();
    assert_eq!((served.status, served.body.as_ref()), (StatusCode::OK, &v1[..]), "served as the bucket holds it");
    assert_eq!(
        client.read_test_write(si, &secrets, write(&version(3, b"third"))).await.unwrap().status,
        StatusCode::OK
    );
    assert!(node.ok(&["versions", "list"]).contains(&format!("{si} 0 3\n")), "kept again as it is written");
    let stderr = running.stop();
    assert!(stderr.contains("the store rolled it back"), "{stderr}");
}

fn leases_of(node: &TestNode, si: &str) -> Vec<marsh_accountant::Lease> {
    node.accountant()
        .leases(&marsh_core::ShareId::immutable(si.parse().expect("si"), marsh_core::ShareNumber(0)))
        .expect("leases")
}

/// `persistence-records` on S3: one sealed object per change, and a pack of every two, so
/// recovery reads packs and then the records after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_leases_survive_the_loss_of_the_machine_with_records() {
    survive_the_loss_of_the_machine("records", &[("persistence.config.pack-changes", "2")], "accounting/").await;
}

/// `persistence-stash` on S3, snapshotting every 5 changes so recovery restores a snapshot and
/// then replays the log after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_leases_survive_the_loss_of_the_machine_with_stash() {
    survive_the_loss_of_the_machine("stash", &[("persistence.config.snapshot-changes", "5")], "stash/").await;
}

/// The machine is lost: NODE_DIR comes back from the copy taken after init and config, with no
/// cache/. Accounts, attributes and leases come back from the persistence strategy on S3, by
/// `marsh recover` or by itself with `recovery.auto`; shares are read through the old NURLs.
#[allow(clippy::unwrap_used, reason = "the body of two tests")]
async fn survive_the_loss_of_the_machine(strategy: &str, config: &[(&str, &str)], blobs: &str) {
    use http::{Method, StatusCode};
    use marsh_gbs_client::GbsClient;

    let node = s3_node("dr", &unique_prefix(&format!("dr-{strategy}")));
    node.set("persistence.plugin", strategy);
    for (k, v) in config {
        node.set(k, v);
    }
    node.set("persistence.max-delay", "1");
    let backup = node.back_up("backup");

    let running = node.start();
    let alice = node.create_account("alice", &["--quota", "1GiB", "--nickname", "Alice"]);
    // Long enough that sealed bytes cannot hold it by chance, as a 3-byte name could.
    node.create_account("bob-reader", &["--read-only"]);
    let si = "aeaqcaibaeaqcaibaeaqcaibae";
    let mut as_alice = GbsClient::connect(&alice).await.expect("connect");
    as_alice.upload(si, 0, &Secrets::from_seed(1), b"hello").await.unwrap();
    // A second lease, the anonymous account's.
    let renewed = running.client().await.renew(si, &Secrets::from_seed(7)).await.unwrap();
    assert_eq!(renewed.status, StatusCode::NO_CONTENT);
    let stderr = running.stop();
    let accounts_before = node.ok(&["account", "list"]);
    let leases_before = leases_of(&node, si);
    assert_eq!(leases_before.len(), 2, "{stderr}");

    // What the strategy put in the bucket says nothing in the clear.
    let bucket = bucket_of(&node).await;
    let records = marsh_stores::BlobStore::list(&bucket, blobs, None, 1000).await.unwrap().keys;
    assert!(!records.is_empty(), "the strategy wrote nothing under {blobs}");
    if strategy == "stash" {
        assert!(records.iter().any(|k| k.ends_with(".manifest")), "a snapshot was stashed: {records:?}");
    } else {
        assert!(records.iter().any(|k| k.starts_with("accounting/packs/")), "changes were packed: {records:?}");
    }
    let alice_swissnum = alice.swissnum.clone();
    let lease_hash = leases_before[0].renew_hash;
    for k in &records {
        let blob =
            marsh_stores::BlobStore::get(&bucket, &marsh_stores::BlobKey::new(k).unwrap()).await.unwrap().unwrap();
        for needle in [&b"alice"[..], b"Alice", b"bob-reader", si.as_bytes(), alice_swissnum.as_bytes(), &lease_hash] {
            assert!(
                !blob.windows(needle.len()).any(|w| w == needle),
                "{k} holds {:?} in the clear",
                String::from_utf8_lossy(needle)
            );
        }
    }

    // The machine is lost.
    node.restore(&backup);
    let refused = node.try_start().expect_err("must not start without its accounting state");
    let command = format!("marsh recover --dir {}", node.d());
    assert!(refused.contains("status Some(3)") && refused.contains(&command), "{refused}");
    let recovered = node.ok(&["recover"]);
    assert!(recovered.contains("3 accounts, 2 leases"), "{recovered}");
    if strategy == "stash" {
        assert!(recovered.contains(" 1 snapshots,"), "{recovered}");
    }
    assert_eq!(node.ok(&["account", "list"]), accounts_before, "accounts and attributes are back");
    assert_eq!(leases_of(&node, si), leases_before, "leases are back, same expiry, same accounts");
    // Again: idempotent.
    assert!(node.ok(&["recover"]).contains("3 accounts, 2 leases"));

    let running = node.start();
    let mut as_alice = GbsClient::connect(&alice).await.expect("alice's NURL still works");
    let r = as_alice.call(Method::GET, &format!("immutable/{si}/0"), &[], &[], Vec::new()).await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (StatusCode::OK, &b"hello"[..]));
    drop(running);

    // With recovery.auto, no operator step.
    node.restore(&backup);
    node.set("recovery.auto", "true");
    drop(node.start());
    assert_eq!(leases_of(&node, si), leases_before);

    // The store operator deletes the newest record (and every pack, which may hold it too):
    // nothing left in the store refers to it, but the host's own note of what it handed over
    // does. (The same note covers `stash`; its newest segment may be inside its newest
    // snapshot, so the case is shown on `records`.)
    if strategy != "records" {
        return;
    }
    let records = marsh_stores::BlobStore::list(&bucket, blobs, None, 1000).await.unwrap().keys;
    let (packs, records): (Vec<_>, Vec<_>) = records.into_iter().partition(|k| k.starts_with("accounting/packs/"));
    let newest = records.last().unwrap();
    for k in packs.iter().chain([newest]) {
        assert!(marsh_stores::BlobStore::delete(&bucket, &marsh_stores::BlobKey::new(k).unwrap()).await.unwrap());
    }
    node.restore(&backup);
    let recovered = node.ok(&["recover"]);
    assert!(
        recovered.contains("missing change records") && recovered.contains("not in what it recovered"),
        "{newest}: {recovered}"
    );
}

//! Nodes on a real S3 server (SeaweedFS, started by `make test`): owner fencing between two
//! nodes on one bucket prefix, its deliberate hand-over, and the refusal to switch the backend
//! of a node that already keeps shares.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Running, marsh, ok, text};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests need a real S3 server; run `make test` (it starts SeaweedFS)")
    })
}

/// A node whose backend is `backend-s3` on the test bucket under `prefix`.
fn s3_node(dir: &Path, nickname: &str, prefix: &str) {
    let d = dir.to_str().expect("utf-8");
    let listen = format!("127.0.0.1:{}", common::free_port());
    ok(marsh(&["init", "--dir", d, "--listen", &listen, "--nickname", nickname]));
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
        ok(marsh(&["config", "set", k, &v, "--dir", d]));
    }
}

fn server_id(dir: &Path) -> String {
    let out = ok(marsh(&["announce", "--dir", dir.to_str().expect("utf-8")]));
    out.lines()
        .find_map(|l| l.trim().strip_suffix(':').filter(|s| s.starts_with("v0-")).map(str::to_owned))
        .expect("server id")
}

fn unique_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("cli-{what}-{}-{nanos}/", std::process::id())
}

#[test]
fn a_second_node_on_the_same_prefix_refuses_to_start_until_released() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let prefix = unique_prefix("fence");
    s3_node(&a, "first", &prefix);
    s3_node(&b, "second", &prefix);
    let first = Running::start(&a).expect("the first node starts");
    let refusal = Running::start(&b).err().expect("the second node must refuse to start");
    let a_id = server_id(&a);
    assert!(refusal.contains("status Some(2)"), "{refusal}");
    assert!(refusal.contains(&a_id) && refusal.contains("\"first\""), "names the owner: {refusal}");
    assert!(refusal.contains("marsh store release"), "says how to hand over: {refusal}");
    let owner = ok(marsh(&["store", "owner", "--dir", b.to_str().expect("utf-8")]));
    assert!(owner.contains(&a_id) && !owner.contains("(this node)"), "{owner}");

    // Releasing from the wrong node does nothing.
    assert!(!marsh(&["store", "release", "--dir", b.to_str().expect("utf-8"), "shares"]).status.success());
    drop(first);
    ok(marsh(&["store", "release", "--dir", a.to_str().expect("utf-8"), "shares"]));
    let second = Running::start(&b).expect("the second node starts once the first released the store");
    drop(second);
    let owner = ok(marsh(&["store", "owner", "--dir", b.to_str().expect("utf-8")]));
    assert!(owner.contains("(this node)"), "{owner}");
    // And the first now refuses, until it takes the store over, naming its owner.
    assert!(Running::start(&a).is_err());
    let b_id = server_id(&b);
    ok(marsh(&["store", "take-over", "--dir", a.to_str().expect("utf-8"), "shares", "--from", &b_id]));
    drop(Running::start(&a).expect("after a deliberate take-over"));
}

#[test]
fn switching_the_backend_of_a_node_with_shares_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("node");
    let storage = tmp.path().join("storage");
    let d = dir.to_str().expect("utf-8");
    ok(marsh(&["init", "--dir", d, "--storage-dir", storage.to_str().expect("utf-8")]));
    // Before first use, the backend may change freely.
    ok(marsh(&["config", "set", "backend.plugin", "s3", "--dir", d]));
    ok(marsh(&["config", "set", "backend.plugin", "disk", "--dir", d]));
    // A share on disk: now the backend and its store stay put.
    std::fs::create_dir_all(storage.join("shares/aa/aaaa")).expect("mkdir");
    std::fs::write(storage.join("shares/aa/aaaa/0"), b"share").expect("write");
    let refused = marsh(&["config", "set", "backend.plugin", "s3", "--dir", d]);
    assert_eq!(refused.status.code(), Some(2));
    let why = text(&refused.stderr);
    assert!(why.contains("already keeps shares in store `shares`") && why.contains("marsh init"), "{why}");
    assert!(!marsh(&["config", "set", "store.shares", "s3", "--dir", d]).status.success());
    assert_eq!(ok(marsh(&["config", "get", "backend.plugin", "--dir", d])).trim(), "disk", "unchanged");
    // Unrelated keys still change.
    ok(marsh(&["config", "set", "node.nickname", "still-fine", "--dir", d]));
}

fn copy_dir(from: &Path, to: &Path) {
    assert!(Command::new("cp").args(["-a"]).arg(from).arg(to).status().expect("cp").success());
}

fn leases_of(dir: &Path, si: &str) -> Vec<marsh_accountant::Lease> {
    let a = marsh_accountant::Accountant::open(&dir.join("cache/accountant.sqlite")).expect("accountant");
    a.leases(&marsh_core::ShareId::immutable(si.parse().expect("si"), marsh_core::ShareNumber(0))).expect("leases")
}

/// `persistence-records` on S3: one sealed object per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_leases_survive_the_loss_of_the_machine_with_records() {
    survive_the_loss_of_the_machine("records", &[], "accounting/").await;
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
    use marsh_gbs_client::{GbsClient, Nurl, allocate_body};

    let tmp = tempfile::tempdir().expect("tmp");
    let (node, backup) = (tmp.path().join("node"), tmp.path().join("backup"));
    let d = node.to_str().expect("utf-8");
    s3_node(&node, "dr", &unique_prefix(&format!("dr-{strategy}")));
    ok(marsh(&["config", "set", "persistence.plugin", strategy, "--dir", d]));
    for (k, v) in config {
        ok(marsh(&["config", "set", k, v, "--dir", d]));
    }
    ok(marsh(&["config", "set", "persistence.max-delay", "1", "--dir", d]));
    copy_dir(&node, &backup);

    let running = Running::start(&node).expect("starts");
    let anonymous: Nurl = running.nurl.parse().expect("nurl");
    let created = ok(marsh(&["account", "create", "alice", "--quota", "1GiB", "--nickname", "Alice", "--dir", d]));
    let alice: Nurl = created.lines().find_map(|l| l.strip_prefix("NURL: ")).expect("NURL").parse().expect("nurl");
    // Long enough that sealed bytes cannot hold it by chance, as a 3-byte name could.
    ok(marsh(&["account", "create", "bob-reader", "--read-only", "--dir", d]));
    let si = "aeaqcaibaeaqcaibaeaqcaibae";
    let secrets: [(&str, &[u8]); 3] =
        [("lease-renew-secret", &[1; 32]), ("lease-cancel-secret", &[2; 32]), ("upload-secret", &[3; 32])];
    let mut as_alice = GbsClient::connect(&alice).await.expect("connect");
    let r =
        as_alice.call(Method::POST, &format!("immutable/{si}"), &secrets, &[], allocate_body(&[0], 5)).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let r = as_alice
        .call(
            Method::PATCH,
            &format!("immutable/{si}/0"),
            &secrets[2..],
            &[("content-range", "bytes 0-4/*")],
            b"hello".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    // A second lease, the anonymous account's.
    let mut anon = GbsClient::connect(&anonymous).await.expect("connect");
    let renew: [(&str, &[u8]); 2] = [("lease-renew-secret", &[7; 32]), ("lease-cancel-secret", &[8; 32])];
    assert_eq!(
        anon.call(Method::PUT, &format!("lease/{si}"), &renew, &[], Vec::new()).await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    let stderr = running.stop();
    let accounts_before = ok(marsh(&["account", "list", "--dir", d]));
    let leases_before = leases_of(&node, si);
    assert_eq!(leases_before.len(), 2, "{stderr}");

    // What the strategy put in the bucket says nothing in the clear.
    let mut config = marsh_stores_s3::S3Config::new("shares", &var("MARSH_TEST_S3_BUCKET"));
    config.endpoint = Some(var("MARSH_TEST_S3_ENDPOINT"));
    config.path_style = true;
    config.access_key_id = Some(var("MARSH_TEST_S3_ACCESS_KEY"));
    config.secret_access_key = Some(var("MARSH_TEST_S3_SECRET_KEY"));
    config.prefix = ok(marsh(&["config", "get", "s3.shares.prefix", "--dir", d])).trim().to_owned();
    let bucket = marsh_stores_s3::S3Store::open(config).await.expect("bucket");
    let records = marsh_stores::BlobStore::list(&bucket, blobs, None, 1000).await.unwrap().keys;
    assert!(!records.is_empty(), "the strategy wrote nothing under {blobs}");
    if strategy == "stash" {
        assert!(records.iter().any(|k| k.ends_with(".manifest")), "a snapshot was stashed: {records:?}");
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
    std::fs::remove_dir_all(&node).expect("rm");
    copy_dir(&backup, &node);
    let refused = Running::start(&node).err().expect("must not start without its accounting state");
    assert!(refused.contains("status Some(3)") && refused.contains(&format!("marsh recover --dir {d}")), "{refused}");
    let recovered = ok(marsh(&["recover", "--dir", d]));
    assert!(recovered.contains("3 accounts, 2 leases"), "{recovered}");
    if strategy == "stash" {
        assert!(recovered.contains(" 1 snapshots,"), "{recovered}");
    }
    assert_eq!(ok(marsh(&["account", "list", "--dir", d])), accounts_before, "accounts and attributes are back");
    assert_eq!(leases_of(&node, si), leases_before, "leases are back, same expiry, same accounts");
    // Again: idempotent.
    assert!(ok(marsh(&["recover", "--dir", d])).contains("3 accounts, 2 leases"));

    let running = Running::start(&node).expect("starts after recovery");
    let mut as_alice = GbsClient::connect(&alice).await.expect("alice's NURL still works");
    let r = as_alice.call(Method::GET, &format!("immutable/{si}/0"), &[], &[], Vec::new()).await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (StatusCode::OK, &b"hello"[..]));
    drop(running);

    // With recovery.auto, no operator step.
    std::fs::remove_dir_all(&node).expect("rm");
    copy_dir(&backup, &node);
    ok(marsh(&["config", "set", "recovery.auto", "true", "--dir", d]));
    drop(Running::start(&node).expect("recovers by itself"));
    assert_eq!(leases_of(&node, si), leases_before);
}

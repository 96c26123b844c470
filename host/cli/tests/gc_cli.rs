//! `marsh gc` as an operator runs it: a dry run lists what would go and deletes nothing, a real
//! pass deletes shares whose leases all expired and keeps shares with no lease record.

mod common;

use common::{Running, marsh, ok};
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Nurl, allocate_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_expired_shares_and_keeps_unrecorded_ones() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, storage) = (tmp.path().join("node"), tmp.path().join("storage"));
    let d = dir.to_str().expect("utf-8");
    let port = common::free_port();
    ok(marsh(&[
        "init",
        "--dir",
        d,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--storage-dir",
        storage.to_str().expect("utf-8"),
    ]));

    // One share uploaded through the protocol, so it has a lease.
    let node = Running::start(&dir).expect("the node starts");
    let nurl: Nurl = node.nurl.parse().expect("nurl");
    let mut client = GbsClient::connect(&nurl).await.expect("connect");
    let si = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let secrets: [(&str, &[u8]); 3] =
        [("lease-renew-secret", &[1; 32]), ("lease-cancel-secret", &[2; 32]), ("upload-secret", &[3; 32])];
    let r = client
        .call(Method::POST, &format!("immutable/{si}"), &secrets, &[], allocate_body(&[0], 5))
        .await
        .expect("allocate");
    assert_eq!(r.status, StatusCode::OK);
    let r = client
        .call(
            Method::PATCH,
            &format!("immutable/{si}/0"),
            &secrets[2..],
            &[("content-range", "bytes 0-4/*")],
            b"hello".to_vec(),
        )
        .await
        .expect("patch");
    assert_eq!(r.status, StatusCode::CREATED);
    drop(node);
    let leased = storage.join(format!("shares/aa/{si}/0"));
    assert!(leased.exists());
    // One share put there by hand: no lease record.
    let unrecorded = storage.join("shares/bb/bbbbbbbbbbbbbbbbbbbbbbbbba/0");
    std::fs::create_dir_all(unrecorded.parent().expect("parent")).expect("mkdir");
    std::fs::write(&unrecorded, b"orphan").expect("write");

    // Leases renewed before a cutoff date far ahead have all expired.
    ok(marsh(&["config", "set", "expire.mode", "cutoff-date", "--dir", d]));
    ok(marsh(&["config", "set", "expire.cutoff-date", "9999-12-31", "--dir", d]));
    let dry = ok(marsh(&["gc", "--dry-run", "--dir", d]));
    assert!(dry.contains(&format!("would delete {si} 0 immutable 5 bytes")), "{dry}");
    assert!(dry.contains("1 with no lease record (kept)"), "{dry}");
    assert!(leased.exists(), "a dry run deletes nothing");
    let refused = marsh(&["gc", "--dir", d]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("expire.enabled is false"));

    ok(marsh(&["config", "set", "expire.enabled", "true", "--dir", d]));
    let done = ok(marsh(&["gc", "--dir", d]));
    assert!(done.contains("1 expired and deleted (5 bytes)"), "{done}");
    assert!(!leased.exists() && unrecorded.exists());
    // Nothing left to collect.
    assert!(ok(marsh(&["gc", "--dir", d])).contains("0 expired and deleted"));
}

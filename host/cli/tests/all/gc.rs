//! `marsh gc` as an operator runs it: a dry run lists what would go and deletes nothing, a real
//! pass deletes shares whose leases all expired and keeps shares with no lease record.

use crate::common::{Fixture, TestNode, text};
use marsh_gbs_client::Secrets;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_expired_shares_and_keeps_unrecorded_ones() {
    let node = TestNode::new();
    // One share uploaded through the protocol, so it has a lease.
    let running = node.start();
    let si = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    running.client().await.upload(si, 0, &Secrets::from_seed(1), b"hello").await.expect("upload");
    drop(running);
    let leased = node.storage().join(format!("shares/aa/{si}/0"));
    assert!(leased.exists());
    // One share put there by hand: no lease record.
    let unrecorded = node.storage().join("shares/bb/bbbbbbbbbbbbbbbbbbbbbbbbba/0");
    std::fs::create_dir_all(unrecorded.parent().expect("parent")).expect("mkdir");
    std::fs::write(&unrecorded, b"orphan").expect("write");

    // Leases renewed before a cutoff date far ahead have all expired.
    node.set("expire.mode", "cutoff-date");
    node.set("expire.cutoff-date", "9999-12-31");
    let dry = node.ok(&["gc", "--dry-run"]);
    assert!(dry.contains(&format!("would delete {si} 0 immutable 5 bytes")), "{dry}");
    assert!(!dry.contains("bbbbbbbbbbbbbbbbbbbbbbbbba"), "a share with no lease record is never a candidate: {dry}");
    assert!(dry.contains("1 shares whose leases ran out examined"), "{dry}");
    assert!(leased.exists(), "a dry run deletes nothing");
    let refused = node.marsh(&["gc"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("expire.enabled is false"));

    node.set("expire.enabled", "true");
    let done = node.ok(&["gc"]);
    assert!(done.contains("1 expired and deleted (5 bytes)"), "{done}");
    assert!(!leased.exists() && unrecorded.exists());
    // Nothing left to collect.
    assert!(node.ok(&["gc"]).contains("0 expired and deleted"));
}

/// While `marsh run` serves the node, `marsh gc` deletes nothing (the node's own pass takes the
/// locks its requests take, which another process cannot), a dry run still shows what a pass
/// would delete, and a second `marsh run` on the same directory, `marsh recover` (which rebuilds
/// the accounting the node is using) and `marsh store release` are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_and_a_second_run_are_refused_while_the_node_runs() {
    let node = TestNode::new();
    node.set("expire.enabled", "true");
    node.set("expire.mode", "cutoff-date");
    node.set("expire.cutoff-date", "9999-12-31");
    let running = node.start();
    let si = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    running.client().await.upload(si, 0, &Secrets::from_seed(1), b"hello").await.expect("upload");
    let share = node.storage().join(format!("shares/aa/{si}/0"));

    let refused = node.marsh(&["gc"]);
    let why = text(&refused.stderr);
    assert!(!refused.status.success(), "{why}");
    assert!(why.contains("is being served by another process") && why.contains("marsh gc --dry-run"), "{why}");
    let dry = node.ok(&["gc", "--dry-run"]);
    assert!(dry.contains(&format!("would delete {si} 0 immutable 5 bytes")), "{dry}");
    let Err(second) = node.try_start() else { panic!("a second `marsh run` served the same node") };
    assert!(second.contains("is being served by another process"), "{second}");
    for (command, reason) in [
        (&["recover"][..], "rebuilds the accounting database the running node is using"),
        (&["store", "release", "shares"][..], "may be claimed by another node"),
    ] {
        let out = node.marsh(command);
        let why = text(&out.stderr);
        assert!(!out.status.success() && why.contains("is being served") && why.contains(reason), "{command:?}: {why}");
    }
    assert!(node.ok(&["store", "owner"]).contains("(this node)"), "the store is still this node's");
    assert!(share.exists(), "nothing deleted while the node runs");

    drop(running);
    assert!(node.ok(&["gc"]).contains("1 expired and deleted (5 bytes)"));
    assert!(!share.exists());
    drop(node.start());
}

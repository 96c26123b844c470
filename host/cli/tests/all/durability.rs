//! The node directory as a backup, and recovery that survives being killed.
//!
//! - A running node writes nothing into NODE_DIR outside `cache/`: the tree is hashed before an
//!   hour-equivalent workload (accounts, uploads, lease renewals, repeated lease-expiry passes
//!   and sweeps, stash snapshots) and after, and must be identical. What the node learns while
//!   it runs goes to node state in the store instead, which the test reads back.
//! - A stop hands changes over for a bounded time; what it could not hand over stays in the
//!   local database and is handed over after the next start, nothing lost.
//! - `marsh recover` killed halfway leaves the database marked, so the node refuses to start on
//!   it; run again, it ends with the same accounts and leases as an uninterrupted recovery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{Fixture, TestNode, wait_for};
use http::StatusCode;
use marsh_accountant::{AccountId, Accountant};
use marsh_core::{ShareNumber, StorageIndex};
use marsh_gbs_client::{GbsClient, Secrets};
use marsh_stores::state::StateStore;
use sha2::{Digest, Sha256};

/// Every file and directory under `root` except `cache/`, with the SHA-256 of each file.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).expect("under root").to_owned();
            if rel == Path::new("cache") {
                continue;
            }
            if path.is_dir() {
                out.insert(rel, "directory".into());
                walk(root, &path, out);
            } else {
                let digest = Sha256::digest(std::fs::read(&path).expect("read"));
                out.insert(rel, digest.iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A node whose periodic work comes every second instead of every few hours: one minute of it
/// does what hours of a normal node's schedule do.
fn busy_node() -> TestNode {
    TestNode::with(&[
        ("persistence.plugin", "stash"),
        ("persistence.config.snapshot-changes", "10"),
        ("persistence.max-delay", "1"),
        ("expire.enabled", "true"),
        ("expire.interval", "1"),
        ("backend.sweep-interval", "1"),
    ])
}

async fn renew(client: &mut GbsClient, si: &str, seed: u8) {
    let r = client.renew(si, &Secrets::from_seed(seed)).await.expect("renew");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

/// How many times periodic task `name` has run (versions of its node-state entry).
async fn runs(state: &StateStore, name: &str) -> u64 {
    state.get_versioned(name).await.expect("state").map_or(0, |(version, _)| version)
}

fn storage_index(i: u8) -> String {
    StorageIndex::from_bytes([i; 16]).to_base32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_leaves_its_node_directory_byte_identical() {
    let node = busy_node();
    let before = tree(node.dir());

    let running = node.start();
    let alice = node.create_account("alice", &["--quota", "1GiB"]);
    node.create_account("bob", &[]);
    node.ok(&["account", "set", "alice", "nickname", "Alice"]);
    let (mut as_alice, mut anon) = (GbsClient::connect(&alice).await.expect("connect"), running.client().await);
    for i in 0..12u8 {
        let client = if i % 2 == 0 { &mut as_alice } else { &mut anon };
        client.upload(&storage_index(i), 0, &Secrets::from_seed(i), b"hello").await.expect("upload");
        // Renewals: by the uploader, and a second lease by the other account.
        renew(client, &storage_index(i), i).await;
        let other = if i % 2 == 0 { &mut anon } else { &mut as_alice };
        renew(other, &storage_index(i), i.wrapping_add(100)).await;
    }
    node.ok(&["account", "revoke", "bob"]);
    // Expiry passes and sweeps run a few times each, and the persister hands everything over
    // (stashing a snapshot on the way).
    let store = std::sync::Arc::new(marsh_stores::DirStore::open("shares", &node.storage()).expect("store"));
    let id = marsh_node::NodeDir::open(node.dir()).expect("node").identity().expect("identity");
    let state = StateStore::node(store, id.seal_key);
    let snapshots = node.storage().join("stash/g000000/snapshots");
    let stashed = || -> Vec<String> {
        std::fs::read_dir(&snapshots)
            .map(|d| d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let accountant = node.accountant();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while runs(&state, "gc-last-run").await < 2
        || runs(&state, "sweep-last-run").await < 2
        || !stashed().iter().any(|n| n.ends_with(".manifest"))
        || accountant.persisted_seq().expect("seq") < accountant.last_seq().expect("seq")
    {
        assert!(std::time::Instant::now() < deadline, "the periodic tasks did not run twice in 120 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(accountant);
    let stderr = running.stop();

    let after = tree(node.dir());
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(changed.is_empty(), "the node wrote into its directory: {changed:?}\n{stderr}");

    // What it learnt went to node state in the store: sealed, and written on every pass.
    for name in ["gc-last-run", "sweep-last-run"] {
        let (version, value) = state.get_versioned(name).await.expect("state").expect(name);
        assert!(version >= 2, "{name} ran {version} times\n{stderr}");
        let when = u64::from_be_bytes(value.try_into().expect("a time"));
        let now = marsh_core::unix_now();
        assert!(now - when < 300, "{name} ran at {when}, now {now}");
    }

    // Starting again (cache and all) writes nothing either.
    drop(node.start());
    assert_eq!(tree(node.dir()), before);
}

/// Share `i` of the ones [`make_leases`] leases.
fn share(i: u16) -> marsh_core::ShareId {
    let mut si = [0u8; 16];
    si[..2].copy_from_slice(&i.to_be_bytes());
    marsh_core::ShareId::immutable(StorageIndex::from_bytes(si), ShareNumber(0))
}

/// `n` leases made by the accountant, as the node's requests make them.
fn make_leases(db: &Accountant, n: u16) {
    for i in 0..n {
        let secret = Sha256::digest(i.to_be_bytes());
        db.add_or_renew(AccountId::ANONYMOUS, &share(i), &secret, &secret, 1000).expect("lease");
    }
}

/// How many leases the node's database holds over shares `0..n` (those [`make_leases`] makes).
fn leases(db: &Accountant, n: u16) -> u64 {
    (0..n).map(|i| db.leases(&share(i)).expect("leases").len() as u64).sum()
}

#[test]
fn a_recovery_killed_halfway_is_refused_at_start_and_resumes_to_the_same_result() {
    const LEASES: u16 = 3000;
    let node = TestNode::with(&[("persistence.plugin", "records"), ("persistence.max-delay", "1")]);
    node.create_account("carol", &["--quota", "5GiB"]);
    let backup = node.back_up("backup");

    // Many changes, made by the accountant as the node's requests make them; the node hands
    // them to the strategy (one sealed record each) and stops.
    make_leases(&node.accountant(), LEASES);
    // Stopped the moment it says it serves: it must still shut down cleanly and hand over.
    let stderr = node.start().stop();
    assert!(stderr.contains("shutting down"), "stopped by the default action of SIGTERM: {stderr}");
    let db = node.accountant();
    assert_eq!(db.persisted_seq().expect("seq"), db.last_seq().expect("seq"), "all persisted\n{stderr}");
    let accounts_before = node.ok(&["account", "list"]);
    let changes = db.last_seq().expect("seq");
    assert_eq!(leases(&db, LEASES), u64::from(LEASES));
    drop(db);

    // The machine is lost; recovery starts and is killed halfway. It reports progress every 16
    // records, one line each, to a pipe of one page; the test reads five lines, byte by byte,
    // and then stops reading. The pipe then takes at most a page more of lines before recovery
    // blocks, far short of its end, so the kill lands mid-way whatever the machine's speed.
    node.restore(&backup);
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    rustix::pipe::fcntl_setpipe_size(&writer, 4096).expect("pipe size");
    let page = rustix::pipe::fcntl_getpipe_size(&writer).expect("pipe size");
    let shortest_line = "persistence-records: 16/3004 accounting records applied\n".len();
    assert!((5 + page / shortest_line + 1) * 16 < usize::from(LEASES) / 2, "a pipe of {page} bytes is too large");
    let mut child = Command::new(crate::common::BINARY)
        .args(["recover", "--dir", node.d()])
        .stdout(Stdio::null())
        .stderr(Stdio::from(writer))
        .spawn()
        .expect("spawn marsh recover");
    let mut progress = std::fs::File::from(reader);
    let mut line = Vec::new();
    for _ in 0..5 {
        line.clear();
        let mut byte = [0u8];
        while byte[0] != b'\n' {
            std::io::Read::read_exact(&mut progress, &mut byte).expect("a progress line");
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line);
        assert!(line.contains("accounting records applied"), "{line}");
    }
    // The child fills the pipe and blocks writing to it; then it is killed.
    let pid = child.id();
    wait_for("the recovery to block on its full progress pipe", std::time::Duration::from_secs(120), || {
        assert!(child.try_wait().expect("wait").is_none(), "recovery finished although its progress was not read");
        blocked_writing_a_pipe(pid)
    });
    child.kill().expect("kill");
    child.wait().expect("wait");
    let partial = leases(&node.accountant(), LEASES);
    assert!(partial > 0 && partial < u64::from(LEASES), "{partial} of {LEASES} leases recovered when killed");

    let refused = node.try_start().expect_err("must not start on a half-rebuilt database");
    assert!(refused.contains("status Some(3)") && refused.contains("interrupted"), "{refused}");
    let done = node.ok(&["recover"]);
    assert!(done.contains(&format!("{changes} change records read")), "{done}");
    assert_eq!(node.ok(&["account", "list"]), accounts_before);
    assert_eq!(leases(&node.accountant(), LEASES), u64::from(LEASES));
    drop(node.start());

    // A change made while no node ran has not reached the strategy: `marsh recover` hands it
    // over before rebuilding, so it is not lost to the rebuild.
    node.create_account("dave", &[]);
    node.ok(&["recover"]);
    assert!(node.ok(&["account", "list"]).contains("dave"));
    let db = node.accountant();
    assert_eq!(db.persisted_seq().expect("seq"), db.last_seq().expect("seq"), "dave's changes were handed over");
}

/// Whether a thread of process `pid` waits to write into a full pipe (its kernel wait channel).
fn blocked_writing_a_pipe(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    threads
        .filter_map(Result::ok)
        .any(|t| std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains("pipe_write")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_a_stop_had_no_time_to_hand_over_are_handed_over_after_the_next_start() {
    let node = TestNode::with(&[("persistence.plugin", "records"), ("persistence.max-delay", "3600")]);
    let running = marsh::Node::open(node.dir()).expect("open").start().await.expect("start");
    make_leases(&node.accountant(), 200);
    // No time at all to hand over: every change is left, and said to be.
    let stopped = running.shutdown_within(std::time::Duration::ZERO).await;
    assert_eq!(stopped.persisted.expect("no failure"), 0);
    let db = node.accountant();
    let (last, persisted) = (db.last_seq().expect("seq"), db.persisted_seq().expect("seq"));
    assert!(last >= 200 && persisted < last, "{persisted} of {last}");
    assert_eq!(stopped.left, last - persisted);
    // The next run hands them over (here, at its stop): the store holds a record of each.
    let running = marsh::Node::open(node.dir()).expect("open").start().await.expect("start");
    let stopped = running.shutdown().await;
    assert_eq!((stopped.persisted.expect("handed over"), stopped.left), (last - persisted, 0));
    assert_eq!(db.persisted_seq().expect("seq"), last);
    let records = std::fs::read_dir(node.storage().join("accounting"))
        .expect("the strategy's records")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with(|c: char| c.is_ascii_digit())))
        .count() as u64;
    assert_eq!(records, last, "one record per change, none lost");
}

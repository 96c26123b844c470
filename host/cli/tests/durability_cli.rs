//! The node directory as a backup, and recovery that survives being killed.
//!
//! - A running node writes nothing into NODE_DIR outside `cache/`: the tree is hashed before an
//!   hour-equivalent workload (accounts, uploads, lease renewals, repeated lease-expiry passes
//!   and sweeps, stash snapshots) and after, and must be identical. What the node learns while
//!   it runs goes to node state in the store instead, which the test reads back.
//! - `marsh recover` killed halfway leaves the database marked, so the node refuses to start on
//!   it; run again, it ends with the same accounts and leases as an uninterrupted recovery.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Running, marsh, ok};
use http::{Method, StatusCode};
use marsh_accountant::{AccountId, Accountant};
use marsh_core::{ShareNumber, StorageIndex};
use marsh_gbs_client::{GbsClient, Nurl, allocate_body};
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

fn set(d: &str, key: &str, value: &str) {
    ok(marsh(&["config", "set", key, value, "--dir", d]));
}

/// A node whose periodic work comes every second instead of every few hours: one minute of it
/// does what hours of a normal node's schedule do.
fn busy_node(node: &Path) -> String {
    let d = node.to_str().expect("utf-8").to_owned();
    ok(marsh(&["init", "--dir", &d, "--listen", &format!("127.0.0.1:{}", common::free_port())]));
    for (k, v) in [
        ("persistence.plugin", "stash"),
        ("persistence.config.snapshot-changes", "10"),
        ("persistence.max-delay", "1"),
        ("expire.enabled", "true"),
        ("expire.interval", "1"),
        ("backend.sweep-interval", "1"),
    ] {
        set(&d, k, v);
    }
    d
}

async fn upload(client: &mut GbsClient, si: &str, secret: u8) {
    let secrets: [(&str, &[u8]); 3] = [
        ("lease-renew-secret", &[secret; 32]),
        ("lease-cancel-secret", &[secret ^ 0xff; 32]),
        ("upload-secret", &[secret; 32]),
    ];
    let r = client.call(Method::POST, &format!("immutable/{si}"), &secrets, &[], allocate_body(&[0], 5)).await;
    assert_eq!(r.expect("allocate").status, StatusCode::OK);
    let range = [("content-range", "bytes 0-4/*")];
    let r = client.call(Method::PATCH, &format!("immutable/{si}/0"), &secrets[2..], &range, b"hello".to_vec()).await;
    assert_eq!(r.expect("write").status, StatusCode::CREATED);
}

async fn renew(client: &mut GbsClient, si: &str, secret: u8) {
    let secrets: [(&str, &[u8]); 2] =
        [("lease-renew-secret", &[secret; 32]), ("lease-cancel-secret", &[secret ^ 0xff; 32])];
    let r = client.call(Method::PUT, &format!("lease/{si}"), &secrets, &[], Vec::new()).await;
    assert_eq!(r.expect("renew").status, StatusCode::NO_CONTENT);
}

fn storage_index(i: u8) -> String {
    StorageIndex::from_bytes([i; 16]).to_base32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_leaves_its_node_directory_byte_identical() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = tmp.path().join("node");
    let d = busy_node(&node);
    let before = tree(&node);

    let running = Running::start(&node).expect("starts");
    let anonymous: Nurl = running.nurl.parse().expect("nurl");
    let created = ok(marsh(&["account", "create", "alice", "--quota", "1GiB", "--dir", &d]));
    let alice: Nurl = created.lines().find_map(|l| l.strip_prefix("NURL: ")).expect("NURL").parse().expect("nurl");
    ok(marsh(&["account", "create", "bob", "--dir", &d]));
    ok(marsh(&["account", "set", "alice", "nickname", "Alice", "--dir", &d]));
    let (mut as_alice, mut anon) =
        (GbsClient::connect(&alice).await.expect("connect"), GbsClient::connect(&anonymous).await.expect("connect"));
    for i in 0..12u8 {
        let client = if i % 2 == 0 { &mut as_alice } else { &mut anon };
        upload(client, &storage_index(i), i).await;
        // Renewals: by the uploader, and a second lease by the other account.
        renew(client, &storage_index(i), i).await;
        let other = if i % 2 == 0 { &mut anon } else { &mut as_alice };
        renew(other, &storage_index(i), i.wrapping_add(100)).await;
    }
    ok(marsh(&["account", "revoke", "bob", "--dir", &d]));
    // Let expiry passes, sweeps and the persister run a few times each.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let stderr = running.stop();

    let after = tree(&node);
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(changed.is_empty(), "the node wrote into its directory: {changed:?}\n{stderr}");

    // What it learnt went to node state in the store: sealed, and written on every pass.
    let shares = tmp.path().join("node-shares");
    let store = std::sync::Arc::new(marsh_stores::DirStore::open("shares", &shares).expect("store"));
    let id = marsh_node::NodeDir::open(&node).expect("node").identity().expect("identity");
    let state = marsh_stores::state::StateStore::node(store, id.seal_key);
    for name in ["gc-last-run", "sweep-last-run"] {
        let (version, value) = state.get_versioned(name).await.expect("state").expect(name);
        assert!(version >= 2, "{name} ran {version} times\n{stderr}");
        let when = u64::from_be_bytes(value.try_into().expect("a time"));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        assert!(now - when < 60, "{name} ran at {when}, now {now}");
    }
    let stashed: Vec<String> = std::fs::read_dir(shares.join("stash/g000000/snapshots"))
        .expect("the stash is in the store")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(stashed.iter().any(|n| n.ends_with(".manifest")), "{stashed:?}");

    // Starting again (cache and all) writes nothing either.
    drop(Running::start(&node).expect("starts again"));
    assert_eq!(tree(&node), before);
}

/// How many leases the node's database holds over shares `0..n`.
fn leases(db: &Accountant, n: u16) -> u64 {
    (0..n)
        .map(|i| {
            let mut si = [0u8; 16];
            si[..2].copy_from_slice(&i.to_be_bytes());
            db.leases(&marsh_core::ShareId::immutable(StorageIndex::from_bytes(si), ShareNumber(0)))
                .expect("leases")
                .len() as u64
        })
        .sum()
}

#[test]
fn a_recovery_killed_halfway_is_refused_at_start_and_resumes_to_the_same_result() {
    const LEASES: u16 = 3000;
    let tmp = tempfile::tempdir().expect("tmp");
    let node = tmp.path().join("node");
    let d = node.to_str().expect("utf-8");
    ok(marsh(&["init", "--dir", d, "--listen", &format!("127.0.0.1:{}", common::free_port())]));
    set(d, "persistence.plugin", "records");
    set(d, "persistence.max-delay", "1");
    ok(marsh(&["account", "create", "carol", "--quota", "5GiB", "--dir", d]));
    let backup = tmp.path().join("backup");
    copy_dir(&node, &backup);

    // Many changes, made by the accountant as the node's requests make them; the node hands
    // them to the strategy (one sealed record each) and stops.
    let db_path = node.join("cache/accountant.sqlite");
    {
        let db = Accountant::open(&db_path).expect("db");
        for i in 0..LEASES {
            let mut si = [0u8; 16];
            si[..2].copy_from_slice(&i.to_be_bytes());
            let secret = Sha256::digest(i.to_be_bytes());
            db.add_or_renew(
                AccountId::ANONYMOUS,
                &marsh_core::ShareId::immutable(StorageIndex::from_bytes(si), ShareNumber(0)),
                &secret,
                &secret,
                1000,
            )
            .expect("lease");
        }
    }
    // Stopped the moment it says it serves: it must still shut down cleanly and hand over.
    let stderr = Running::start(&node).expect("starts").stop();
    assert!(stderr.contains("marsh: shutting down"), "stopped by the default action of SIGTERM: {stderr}");
    let db = Accountant::open(&db_path).expect("db");
    assert_eq!(db.persisted_seq().expect("seq"), db.last_seq().expect("seq"), "all persisted\n{stderr}");
    let accounts_before = ok(marsh(&["account", "list", "--dir", d]));
    let changes = db.last_seq().expect("seq");
    assert_eq!(leases(&db, LEASES), u64::from(LEASES));
    drop(db);

    // The machine is lost; recovery starts and is killed halfway. It reports progress every 16
    // records, one line each, to a pipe of one page; the test reads five lines, byte by byte,
    // and then stops reading. The pipe then takes at most a page more of lines before recovery
    // blocks, far short of its end, so the kill lands mid-way whatever the machine's speed.
    std::fs::remove_dir_all(&node).expect("rm");
    copy_dir(&backup, &node);
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    rustix::pipe::fcntl_setpipe_size(&writer, 4096).expect("pipe size");
    let page = rustix::pipe::fcntl_getpipe_size(&writer).expect("pipe size");
    let shortest_line = "persistence-records: 16/3004 accounting records applied\n".len();
    assert!((5 + page / shortest_line + 1) * 16 < usize::from(LEASES) / 2, "a pipe of {page} bytes is too large");
    let mut child = Command::new(env!("CARGO_BIN_EXE_marsh"))
        .args(["recover", "--dir", d])
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
    // The child fills the pipe and blocks; give it time to, then kill it.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(child.try_wait().expect("wait").is_none(), "recovery finished although its progress was not read");
    child.kill().expect("kill");
    child.wait().expect("wait");
    let partial = leases(&Accountant::open(&db_path).expect("db"), LEASES);
    assert!(partial > 0 && partial < u64::from(LEASES), "{partial} of {LEASES} leases recovered when killed");

    let refused = Running::start(&node).err().expect("must not start on a half-rebuilt database");
    assert!(refused.contains("status Some(3)") && refused.contains("interrupted"), "{refused}");
    let done = ok(marsh(&["recover", "--dir", d]));
    assert!(done.contains(&format!("{changes} change records read")), "{done}");
    assert_eq!(ok(marsh(&["account", "list", "--dir", d])), accounts_before);
    assert_eq!(leases(&Accountant::open(&db_path).expect("db"), LEASES), u64::from(LEASES));
    drop(Running::start(&node).expect("starts after the resumed recovery"));

    // A change made while no node ran has not reached the strategy: `marsh recover` hands it
    // over before rebuilding, so it is not lost to the rebuild.
    ok(marsh(&["account", "create", "dave", "--dir", d]));
    ok(marsh(&["recover", "--dir", d]));
    assert!(ok(marsh(&["account", "list", "--dir", d])).contains("dave"));
    let db = Accountant::open(&db_path).expect("db");
    assert_eq!(db.persisted_seq().expect("seq"), db.last_seq().expect("seq"), "dave's changes were handed over");
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(status.success());
}

//! `marsh adopt` and `marsh export-tahoe` as an operator runs them, on a Tahoe node directory a
//! stock Tahoe-LAFS 1.20 made (`host/tahoe/tests/fixtures/node-made-by-1.20`: its identity and
//! three shares a stock client stored) with many more shares written in Tahoe's container
//! format beside them, and hostile files among them. The whole move with the real client and
//! node is `tests/interop/adopt.py`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};
use marsh_core::StorageIndex;
use marsh_gbs_client::{Secrets, rtw_body};
use marsh_tahoe::container::{self, Kind, Lease, blake2b};

use crate::common::{BINARY, Fixture, Running, TestNode, free_port, marsh, ok, text, wait_for};

/// Synthetic immutable shares: enough that an adoption is still copying when it is killed.
const SHARES: u32 = 1500;
/// Bytes of data in each.
const SHARE_BYTES: usize = 8 * 1024;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tahoe/tests/fixtures/node-made-by-1.20")
}

fn si(i: u32) -> StorageIndex {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[4..8].copy_from_slice(&0x5eed_u32.to_be_bytes());
    StorageIndex::from_bytes(b)
}

fn share_data(i: u32) -> Vec<u8> {
    (0..SHARE_BYTES).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

fn share_path(tahoe: &Path, si: &StorageIndex, shnum: u16) -> PathBuf {
    let s = si.to_base32();
    tahoe.join("storage/shares").join(&s[..2]).join(&s).join(shnum.to_string())
}

fn write_container(tahoe: &Path, si: &StorageIndex, kind: Kind, data: &[u8], leases: &[Lease], we: Option<&[u8; 32]>) {
    let path = share_path(tahoe, si, 0);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut out = Vec::new();
    let nodeid = [9u8; 20];
    container::write(&mut out, kind, &mut &data[..], data.len() as u64, leases, we.map(|w| (&nodeid, w)))
        .expect("write");
    std::fs::write(path, out).expect("write share");
}

/// A lease whose secrets are `Secrets::from_seed(seed)`'s, hashed as schema 2 keeps them.
fn lease_of(seed: u8) -> Lease {
    let s = Secrets::from_seed(seed);
    Lease { owner: 0, renew: blake2b(&s.renew), cancel: blake2b(&s.cancel), expires: 2_000_000_000 }
}

/// The fixture node with the synthetic shares, one mutable share with a known enabler, and
/// hostile files: a lease count past the end, a symbolic link, a name that is no share number.
fn tahoe_node(at: &Path, shares: u32) {
    marsh_testnode::copy_dir(&fixture(), at);
    for i in 0..shares {
        write_container(at, &si(i), Kind::Immutable, &share_data(i), &[lease_of((i % 200) as u8)], None);
    }
    let secrets = Secrets::from_seed(77);
    let we: [u8; 32] = secrets.write_enabler.clone().try_into().expect("32 bytes");
    write_container(at, &si(SHARES), Kind::Mutable, b"a mutable share's data", &[lease_of(77)], Some(&we));
    if shares < SHARES {
        return;
    }
    let bad = share_path(at, &si(SHARES + 1), 0);
    std::fs::create_dir_all(bad.parent().expect("parent")).expect("mkdir");
    std::fs::write(&bad, [0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 9, b'a', b'b', b'c', b'd']).expect("bad");
    let link_dir = share_path(at, &si(SHARES + 2), 0);
    std::fs::create_dir_all(link_dir.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink("/etc/passwd", &link_dir).expect("symlink");
    std::fs::write(link_dir.with_file_name("notes.txt"), b"not a share").expect("stray");
}

fn adopt_args<'a>(tahoe: &'a str, node: &'a str, listen: &'a str, port: &'a str) -> Vec<&'a str> {
    vec!["adopt", tahoe, "--dir", node, "--listen", listen, "--public-port", port, "--set", "web.listen="]
}

/// Killed while it copies, an adoption leaves a node that refuses to start and names the command
/// that finishes it; run again, that command takes in the rest, every share reads back as it was,
/// the clients' lease secrets renew the adopted leases, the kept write enabler lets its writer
/// write and refuses anyone else, and what is not a share is named and left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adoption_killed_part_way_is_finished_by_running_it_again() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tahoe = tmp.path().join("tahoe");
    tahoe_node(&tahoe, SHARES);
    let node = tmp.path().join("node");
    let (t, n) = (tahoe.to_str().expect("utf-8"), node.to_str().expect("utf-8"));
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let args = adopt_args(t, n, &listen, &port);

    let mut strict = args.clone();
    strict.push("--strict");
    let refused = marsh(&strict);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stdout).contains("--strict: 3 files are not shares this reads"), "{}", text(&refused.stdout));
    assert!(!node.exists(), "--strict made nothing");

    let mut first =
        Command::new(BINARY).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let store = tmp.path().join("node-shares");
    wait_for("the adoption to copy its first shares", Duration::from_secs(120), || {
        std::fs::read_dir(store.join("shares")).is_ok_and(|mut d| d.next().is_some())
    });
    first.kill().expect("kill");
    first.wait().expect("wait");
    assert!(node.join("cache/adopting").exists(), "killed part way, the node is marked unfinished");
    let Err(refused) = Running::start(Path::new(BINARY), &node, &[], &[]) else {
        panic!("a node whose adoption did not finish served")
    };
    assert!(
        refused.contains("has not finished") && refused.contains(&format!("run: marsh adopt {t} --dir {n}")),
        "{refused}"
    );

    let again = marsh(&args);
    let out = text(&again.stdout);
    assert_eq!(again.status.code(), Some(1), "finished, naming what it did not take: {out}{}", text(&again.stderr));
    let counts = out.lines().find(|l| l.starts_with("taken in: ")).expect("a summary");
    let number = |after: &str| -> u32 {
        let at = counts.find(after).expect(after);
        counts[..at].split_whitespace().last().and_then(|w| w.parse().ok()).expect("a count")
    };
    let (immutable, mutable, already) = (number(" immutable"), number(" mutable shares"), number(" there already"));
    assert_eq!(immutable + mutable + already, SHARES + 1 + 3, "every share, once: {counts}");
    for problem in ["lease count (9) points past the end", "a symbolic link", "notes.txt: not a share number"] {
        assert!(out.contains(problem), "{problem}: {out}");
    }
    assert!(!node.join("cache/adopting").exists());
    let refused = marsh(&args);
    assert!(text(&refused.stderr).contains("finished adopting"), "not again: {}", text(&refused.stderr));

    let before = ok(marsh(&["account", "show", "anonymous", "--dir", n]));
    assert!(before.contains(&format!("{} leases", SHARES + 1 + 3)), "{before}");
    let running = Running::start(Path::new(BINARY), &node, &[], &[]).expect("the adopted node serves");
    let mut client = running.client().await;
    for i in [0, 1, SHARES / 2, SHARES - 1] {
        let reply = client
            .call(Method::GET, &format!("immutable/{}/0", si(i).to_base32()), &[], &[], Vec::new())
            .await
            .expect("read");
        assert_eq!((reply.status, &reply.body[..]), (StatusCode::OK, &share_data(i)[..]), "share {i}");
    }
    for seed in [0u8, 5, 77] {
        let renewed = client.renew(&si(u32::from(seed)).to_base32(), &Secrets::from_seed(seed)).await.expect("renew");
        assert_eq!(renewed.status, StatusCode::NO_CONTENT);
    }
    let slot = si(SHARES).to_base32();
    let body = rtw_body(0, &[(0, 6, b"a muta")], &[(0, b"A MUTA")], &[(0, 23)]);
    let stranger = client.read_test_write(&slot, &Secrets::from_seed(78), body.clone()).await.expect("rtw");
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED, "another enabler is refused");
    let writer = client.read_test_write(&slot, &Secrets::from_seed(77), body).await.expect("rtw");
    assert_eq!(writer.status, StatusCode::OK, "{:?}", writer.body);
    let read = client.call(Method::GET, &format!("mutable/{slot}/0"), &[], &[], Vec::new()).await.expect("read");
    assert_eq!(&read.body[..], b"A MUTAble share's data");
    drop(client);
    running.stop();
    let after = ok(marsh(&["account", "show", "anonymous", "--dir", n]));
    assert_eq!(before, after, "renewals by the adopted leases' holders add none");

    // And back: the exported containers hold the same data and leases, the enabler its writer
    // holds, and the advisories-free, lease-keeping layout Tahoe reads.
    let back = tmp.path().join("back");
    let out = ok(marsh(&["export-tahoe", "--dir", n, back.to_str().expect("utf-8")]));
    assert!(out.contains(&format!("wrote {}: {} immutable and 3 mutable shares", back.display(), SHARES + 1)), "{out}");
    for i in [0, SHARES - 1] {
        let file = std::fs::read(share_path(&back, &si(i), 0)).expect("exported share");
        let c = container::read(&mut std::io::Cursor::new(&file), file.len() as u64).expect("a container");
        assert_eq!(&file[12..12 + SHARE_BYTES], &share_data(i)[..]);
        assert_eq!(c.leases.len(), 1);
        assert_eq!(
            (c.leases[0].renew, c.leases[0].cancel),
            (lease_of((i % 200) as u8).renew, lease_of((i % 200) as u8).cancel)
        );
    }
    let file = std::fs::read(share_path(&back, &si(SHARES), 0)).expect("exported mutable share");
    let c = container::read(&mut std::io::Cursor::new(&file), file.len() as u64).expect("a container");
    assert_eq!(c.write_enabler.map(|w| w.to_vec()), Some(Secrets::from_seed(77).write_enabler));
    assert_eq!(&file[468..468 + 22], b"A MUTAble share's data");
    let cfg = std::fs::read_to_string(back.join("tahoe.cfg")).expect("tahoe.cfg");
    assert!(cfg.contains(&format!("tub.port = tcp:{port}:interface=127.0.0.1")), "{cfg}");
    assert_eq!(
        std::fs::read(back.join("permutation-seed")).expect("seed"),
        std::fs::read(fixture().join("permutation-seed")).expect("seed"),
        "the permutation seed, byte for byte"
    );
}

/// What adoption records is accounting like any other: the persistence strategy holds it, and
/// a node that lost its accounting database gets the adopted leases and the kept write enablers
/// back through `marsh recover` (so the way back still hands mutable shares back writable).
#[test]
fn adopted_leases_and_enablers_come_back_through_recovery() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tahoe = tmp.path().join("tahoe");
    tahoe_node(&tahoe, 20);
    let node = tmp.path().join("node");
    let (t, n) = (tahoe.to_str().expect("utf-8"), node.to_str().expect("utf-8"));
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut args = adopt_args(t, n, &listen, &port);
    args.extend(["--set", "persistence.plugin=records"]);
    ok(marsh(&args));
    let running = Running::start(Path::new(BINARY), &node, &[], &[]).expect("serves");
    running.stop();
    let leases = ok(marsh(&["account", "show", "anonymous", "--dir", n]));
    assert!(leases.contains(&format!("{} leases", 20 + 1 + 3)), "{leases}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(node.join(format!("cache/accountant.sqlite{suffix}")));
    }
    let Err(asked) = Running::start(Path::new(BINARY), &node, &[], &[]) else {
        panic!("served without its accounting")
    };
    assert!(asked.contains(&format!("marsh recover --dir {n}")), "{asked}");
    ok(marsh(&["recover", "--dir", n]));
    assert_eq!(ok(marsh(&["account", "show", "anonymous", "--dir", n])), leases);
    let back = tmp.path().join("back");
    let out = ok(marsh(&["export-tahoe", "--dir", n, back.to_str().expect("utf-8")]));
    assert!(!out.contains("cannot change them"), "every enabler came back: {out}");
    let file = std::fs::read(share_path(&back, &si(SHARES), 0)).expect("exported mutable share");
    let c = container::read(&mut std::io::Cursor::new(&file), file.len() as u64).expect("a container");
    assert_eq!(c.write_enabler.map(|w| w.to_vec()), Some(Secrets::from_seed(77).write_enabler));
}

/// A node marsh made has a tub id of its own, not its certificate's hash: a Tahoe node with its
/// certificate would present another one and its clients' leases and write enablers would not
/// match, so export refuses it, and writes nothing.
#[test]
fn export_refuses_a_node_marsh_made() {
    let node = TestNode::new();
    let to = node.scratch("tahoe");
    let out = node.marsh(&["export-tahoe", to.to_str().expect("utf-8")]);
    let why = text(&out.stderr);
    assert!(!out.status.success() && why.contains("Only a node adopted from Tahoe"), "{why}");
    assert!(!to.exists() && !node.scratch("tahoe.partial").exists());
}

/// A Tahoe directory that is not a storage node, or whose identity does not hold together, makes
/// no node.
#[test]
fn a_tahoe_directory_that_does_not_hold_together_makes_no_node() {
    let tmp = tempfile::tempdir().expect("tmp");
    type Spoil = fn(&Path);
    let cases: [(&str, Spoil); 3] = [
        ("not a storage node", |t| {
            let cfg = std::fs::read_to_string(t.join("tahoe.cfg")).expect("cfg");
            std::fs::write(t.join("tahoe.cfg"), cfg.replace("enabled = true\n#readonly", "enabled = false\n#readonly"))
                .expect("cfg");
        }),
        ("is not node.pem's", |t| {
            let furl = std::fs::read_to_string(t.join("private/storage.furl")).expect("furl");
            std::fs::write(t.join("private/storage.furl"), furl.replacen("pb://r", "pb://s", 1)).expect("furl");
        }),
        ("no private key", |t| {
            let pem = std::fs::read_to_string(t.join("private/node.pem")).expect("pem");
            let cert_only = &pem[..pem.find("-----BEGIN PRIVATE KEY").expect("a key")];
            std::fs::write(t.join("private/node.pem"), cert_only).expect("pem");
        }),
    ];
    for (i, (says, spoil)) in cases.into_iter().enumerate() {
        let tahoe = tmp.path().join(format!("tahoe{i}"));
        marsh_testnode::copy_dir(&fixture(), &tahoe);
        spoil(&tahoe);
        let node = tmp.path().join(format!("node{i}"));
        let out = marsh(&["adopt", tahoe.to_str().expect("utf-8"), "--dir", node.to_str().expect("utf-8")]);
        let why = text(&out.stderr);
        assert!(!out.status.success() && why.contains(says), "{says}: {why}");
        assert!(!node.exists(), "{says}: no node made");
    }
}

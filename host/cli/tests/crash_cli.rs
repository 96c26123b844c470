//! Mutable writes survive the node being killed at any point.
//!
//! A node with backend-disk serves three writers, each rewriting both shares of its own slot
//! with a new generation of content (4 MiB per share, a length that changes with the
//! generation, so writes, zero-fill and truncation all happen). The node is killed with
//! SIGKILL at a random moment, restarted, and checked, many times over:
//! - every share reads as exactly the content of one generation, and both shares of a slot as
//!   the same one: the last the writer saw acknowledged, or the one it had in flight;
//! - the owner can still write (its write enabler survived), which starts the next round.
//!
//! The node's log says how many interrupted writes it completed at start-up; the test requires
//! that some were, so the kills did land mid-write.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, marsh, ok};
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Nurl, int, text};

const ROUNDS: u64 = 30;
const WRITERS: u8 = 3;
const SHARE: usize = 4 << 20;

/// The content of share `n` of `slot` at generation `g`: its length varies with `g`.
fn content(slot: u8, n: u8, g: u64) -> Vec<u8> {
    let len = SHARE - (g % 3) as usize * 4096;
    let seed = (g.wrapping_mul(31) ^ u64::from(slot) << 8 ^ u64::from(n)) as u8;
    (0..len).map(|i| seed.wrapping_add((i / 4096) as u8)).collect()
}

fn slot_index(slot: u8) -> String {
    marsh_core::StorageIndex::from_bytes([0x40 + slot; 16]).to_base32()
}

/// Write both shares of `slot` at generation `g` (whole content, truncated to its length).
fn rtw_body(slot: u8, g: u64) -> Vec<u8> {
    let share = |n: u8| {
        let data = content(slot, n, g);
        let len = data.len() as u64;
        (
            int(u64::from(n)),
            ciborium::value::Value::Map(vec![
                (text("test"), ciborium::value::Value::Array(vec![])),
                (
                    text("write"),
                    ciborium::value::Value::Array(vec![ciborium::value::Value::Map(vec![
                        (text("offset"), int(0)),
                        (text("data"), ciborium::value::Value::Bytes(data)),
                    ])]),
                ),
                (text("new-length"), int(len)),
            ]),
        )
    };
    marsh_gbs_client::encode(&ciborium::value::Value::Map(vec![
        (text("test-write-vectors"), ciborium::value::Value::Map(vec![share(0), share(1)])),
        (text("read-vector"), ciborium::value::Value::Array(vec![])),
    ]))
}

fn enabler(slot: u8) -> Vec<u8> {
    vec![slot; 32]
}

async fn write(client: &mut GbsClient, slot: u8, g: u64) -> Result<(), String> {
    let secrets: [(&str, &[u8]); 3] =
        [("write-enabler", &enabler(slot)), ("lease-renew-secret", &[7; 32]), ("lease-cancel-secret", &[8; 32])];
    let path = format!("mutable/{}/read-test-write", slot_index(slot));
    let r = client.call(Method::POST, &path, &secrets, &[], rtw_body(slot, g)).await.map_err(|e| e.to_string())?;
    if r.status != StatusCode::OK {
        return Err(format!("status {}: {}", r.status, String::from_utf8_lossy(&r.body)));
    }
    Ok(())
}

/// The generation both shares of `slot` hold, which must be `acked` or `acked + 1`.
async fn generation(client: &mut GbsClient, slot: u8, acked: u64) -> u64 {
    let mut seen = Vec::new();
    for n in 0..2u8 {
        let path = format!("mutable/{}/{n}", slot_index(slot));
        let r = client.call(Method::GET, &path, &[], &[], vec![]).await.expect("read");
        assert_eq!(r.status, StatusCode::OK, "slot {slot} share {n}");
        let g = [acked, acked + 1].into_iter().find(|g| r.body.as_ref() == content(slot, n, *g).as_slice());
        seen.push(g.unwrap_or_else(|| {
            panic!("slot {slot} share {n} ({} bytes) is neither generation {acked} nor {}", r.body.len(), acked + 1)
        }));
    }
    assert_eq!(seen[0], seen[1], "slot {slot}: both shares of one write, or neither");
    seen[0]
}

struct Node {
    child: Child,
    nurl: Nurl,
}

fn start(dir: &Path) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_marsh"))
        .args(["run", "--dir", dir.to_str().expect("utf-8")])
        .env("MARSH_LOG", "info,marsh::request=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn marsh run");
    let mut line = Vec::new();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut byte = [0u8];
    while stdout.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let nurl = line.trim().strip_prefix("marsh: serving ").unwrap_or_else(|| {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
        panic!("the node did not start: {line:?}\n{err}")
    });
    Node { nurl: nurl.parse().expect("nurl"), child }
}

impl Node {
    /// SIGKILL; what it logged.
    fn kill(mut self) -> String {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
        let mut err = String::new();
        let _ = self.child.stderr.take().expect("stderr").read_to_string(&mut err);
        err
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutable_writes_are_old_or_new_after_sigkill_at_any_point() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("node");
    let listen = format!("127.0.0.1:{}", free_port());
    ok(marsh(&["init", "--dir", dir.to_str().expect("utf-8"), "--listen", &listen]));
    let mut node = start(&dir);
    // Generation 0 of every slot, acknowledged.
    let mut acked = vec![0u64; usize::from(WRITERS)];
    for slot in 0..WRITERS {
        let mut c = GbsClient::connect(&node.nurl).await.expect("connect");
        write(&mut c, slot, 0).await.expect("first write");
    }
    let mut completed = 0u64;
    let mut rng = u64::from(std::process::id()) | 1;
    for round in 0..ROUNDS {
        // Writers rewrite their slot until the node dies under them.
        let latest = Arc::new(Mutex::new(acked.clone()));
        let mut tasks = Vec::new();
        for slot in 0..WRITERS {
            let (nurl, latest) = (node.nurl.clone(), latest.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(mut c) = GbsClient::connect(&nurl).await else { return };
                loop {
                    let g = latest.lock().expect("lock")[usize::from(slot)] + 1;
                    if write(&mut c, slot, g).await.is_err() {
                        return;
                    }
                    latest.lock().expect("lock")[usize::from(slot)] = g;
                }
            }));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(50 + rng % 700)).await;
        let log = node.kill();
        for t in tasks {
            t.await.expect("writer");
        }
        acked.clone_from(&latest.lock().expect("lock"));
        node = start(&dir);
        let mut c = GbsClient::connect(&node.nurl).await.expect("connect after restart");
        for slot in 0..WRITERS {
            let g = generation(&mut c, slot, acked[usize::from(slot)]).await;
            // The owner still writes; that generation is the next round's starting point.
            write(&mut c, slot, g + 1).await.unwrap_or_else(|e| panic!("round {round}: slot {slot}: {e}"));
            acked[usize::from(slot)] = g + 1;
        }
        completed += log
            .lines()
            .filter_map(|l| l.split("completed ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    let log = node.kill();
    completed +=
        log.lines().filter_map(|l| l.split("completed ").nth(1)?.split(' ').next()?.parse::<u64>().ok()).sum::<u64>();
    eprintln!("{ROUNDS} kills; {completed} interrupted writes completed at start-up; generations {acked:?}");
    assert!(completed > 0, "no kill landed during a write in {ROUNDS} rounds");
}

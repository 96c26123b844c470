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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Fixture, Running, TestNode};
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Secrets, rtw_body_shares};

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
async fn write(client: &mut GbsClient, slot: u8, g: u64) -> Result<(), String> {
    let (first, second) = (content(slot, 0, g), content(slot, 1, g));
    let body = rtw_body_shares(
        &[
            (0, vec![], vec![(0, &first)], Some(first.len() as u64)),
            (1, vec![], vec![(0, &second)], Some(second.len() as u64)),
        ],
        &[],
    );
    let secrets = Secrets { write_enabler: vec![slot; 32], ..Secrets::from_seed(7) };
    let r = client.read_test_write(&slot_index(slot), &secrets, body).await.map_err(|e| e.to_string())?;
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

/// `marsh run`, logging what start-up settles (and not every request).
fn start(node: &TestNode) -> Running {
    node.start_args(&[], &[("MARSH_LOG", "info,marsh::request=off")])
        .unwrap_or_else(|e| panic!("the node did not start: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutable_writes_are_old_or_new_after_sigkill_at_any_point() {
    let dir = TestNode::new();
    let mut node = start(&dir);
    // Generation 0 of every slot, acknowledged.
    let mut acked = vec![0u64; usize::from(WRITERS)];
    for slot in 0..WRITERS {
        write(&mut node.client().await, slot, 0).await.expect("first write");
    }
    let mut completed = 0u64;
    let mut rng = u64::from(std::process::id()) | 1;
    for round in 0..ROUNDS {
        // Writers rewrite their slot until the node dies under them.
        let latest = Arc::new(Mutex::new(acked.clone()));
        let mut tasks = Vec::new();
        for slot in 0..WRITERS {
            let (nurl, latest) = (node.nurl(), latest.clone());
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
        let mut c = node.client().await;
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

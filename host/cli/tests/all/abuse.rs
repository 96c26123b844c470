//! The standing abuse suite: the hostile clients of issue 14's table, and issue 28's second
//! round (bodies queued behind one storage index, a trickled upload holding one, a connection
//! table full of connections that never start TLS, one byte claiming a capped node's space),
//! each against a live node (`marsh run`, backend-disk), with the server's peak RSS and open
//! descriptors read from `/proc`. Every attack must get its stated answer, leave the node
//! serving, grow the server's peak RSS by less than its bound over what it was before, and give
//! back its descriptors.
//!
//! Peak RSS is `VmHWM`, reset before each attack by writing 5 to `/proc/PID/clear_refs`
//! (`marsh_testnode::proc::PeakWatch`).

use std::time::Duration;

use crate::common::{Fixture, TestNode, wait_for};
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Nurl, hostile};
use marsh_testnode::proc::{PeakWatch, descriptors};

/// The most one hostile client's attack may add to the server's peak RSS.
const BOUND_MIB: u64 = 256;

/// The suites take turns: each measures one node's memory and answers under load, and two
/// at once on two cores would measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn still_serves(nurl: &Nurl) {
    let mut client = GbsClient::connect(nurl).await.expect("a new connection");
    assert_eq!(client.call(Method::GET, "version", &[], &[], vec![]).await.expect("version").status, StatusCode::OK);
}

fn si(n: u8) -> String {
    marsh_core::StorageIndex::from_bytes([n; 16]).to_base32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_stay_within_the_bounds() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let node = TestNode::with(&[("storage.reserved-space", "0")]);
    let running = node.start();
    let (pid, nurl) = (running.pid(), running.nurl());
    // The share attack 4 downloads, uploaded first: attack 3 fills the anonymous account's open
    // uploads for half an hour.
    hostile::upload_share(&nurl, &si(4), 64 << 20).await.expect("a 64 MiB share");
    still_serves(&nurl).await;
    let idle_descriptors = descriptors(pid);
    let mut report = Vec::new();

    // 1. A read-test-write reading back a sparse 1 GiB share it made with one byte: the write
    //    that would leave the hole is refused (issue 28), so there is nothing to read back; and
    //    a 1 GiB read vector over a 20 MiB share written in full is refused before it is read.
    let watch = PeakWatch::start(pid);
    let got = hostile::sparse_slot_read(&nurl, &si(1), 1 << 30).await.expect("sparse read");
    assert_eq!(got.statuses, [(StatusCode::BAD_REQUEST, 1), (StatusCode::OK, 1)], "refused, then nothing read");
    let got = hostile::large_slot_read(&nurl, &si(5), 20 << 20).await.expect("large read");
    assert_eq!(got.statuses, [(StatusCode::OK, 5), (StatusCode::PAYLOAD_TOO_LARGE, 1)], "made, then refused");
    report.push(("1 GiB read vector over a sparse share", watch.growth_mib()));
    eprintln!("abuse: {:?}", report.last());

    // 2. A body of eight million tiny items.
    let watch = PeakWatch::start(pid);
    let got = hostile::tiny_items(&nurl, &si(2), 8_000_000).await.expect("tiny items");
    assert!(got.all(StatusCode::BAD_REQUEST), "{got:?}");
    report.push(("8 million tiny CBOR items", watch.growth_mib()));
    eprintln!("abuse: {:?}", report.last());

    // 3. 200 allocations of 256 zero-sized shares: with a 40 KiB upload secret, then with
    //    the 20 bytes Tahoe's client sends (capped by the open uploads an account may have).
    let watch = PeakWatch::start(pid);
    let (got, allocated) = hostile::zero_allocations(&nurl, 200, 256, 40 * 1024).await.expect("allocations");
    assert!(got.all(StatusCode::BAD_REQUEST) && allocated == 0, "{got:?}");
    let (got, allocated) = hostile::zero_allocations(&nurl, 200, 256, 20).await.expect("allocations");
    assert!(got.all(StatusCode::OK), "{got:?}");
    assert_eq!(allocated, 1000, "storage.open-uploads-per-account");
    report.push(("200 x 256 zero-sized allocations", watch.growth_mib()));
    eprintln!("abuse: {:?}", report.last());
    assert!(descriptors(pid) <= idle_descriptors + 8, "open uploads hold no descriptors");

    // 4. 40 downloads of a 64 MiB share whose readers never read.
    let watch = PeakWatch::start(pid);
    let stalled = hostile::stalled_downloads(&nurl, &si(4), 0, 40).await.expect("stalled downloads");
    eprintln!("abuse: 40 downloads asked for");
    still_serves(&nurl).await;
    // The server cuts the stalled readers off once they fall below the least rate, and gives
    // their descriptors back.
    wait_for("the stalled downloads to be cut off", Duration::from_secs(120), || {
        descriptors(pid) <= idle_descriptors + 4
    });
    report.push(("40 stalled downloads of 64 MiB", watch.growth_mib()));
    drop(stalled);

    still_serves(&nurl).await;
    let stderr = running.stop();
    eprintln!("peak RSS growth per attack (MiB): {report:?}");
    for (what, mib) in &report {
        assert!(*mib < BOUND_MIB, "{what}: the server's peak RSS grew by {mib} MiB\n{stderr}");
    }
}

/// The most one round-two attack may add to the server's peak RSS (issue 28).
const ROUND_TWO_BOUND_MIB: u64 = 512;

/// Hostile grid members, round two (issue 28), each as the issue ran it, against one node with
/// `storage.max-bytes 8GiB`: bodies queued behind one storage index, a trickled upload holding
/// a storage index, a connection table filled with connections that never start TLS, and one
/// byte claiming the node's capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_members_round_two_stay_within_the_bounds() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let node = TestNode::with(&[("storage.reserved-space", "0"), ("storage.max-bytes", "8GiB")]);
    let running = node.start();
    let (pid, nurl) = (running.pid(), running.nurl());
    let mut report = Vec::new();

    // 1. Sixteen read-test-writes of 64 MiB each, sent at once to one storage index.
    let watch = PeakWatch::start(pid);
    let got = hostile::queued_bodies(&nurl, &si(11), 16, 64 << 20).await.expect("queued bodies");
    // Each is written, or told to come back later (503, or, when the server refuses a body it
    // will not read, its connection closed while the body was still being sent).
    assert!(
        got.statuses.iter().all(|(s, _)| matches!(*s, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE))
            && got.statuses.iter().any(|(s, _)| *s == StatusCode::OK),
        "each written or told to come back later: {got:?}"
    );
    report.push(("16 read-test-writes of 64 MiB at once", watch.growth_mib()));
    eprintln!("abuse: {:?} {got:?}", report.last());
    still_serves(&nurl).await;

    // 2. A trickled upload of share 0 and a second allocation of it, then a renewal on the
    //    storage index, whose share 1 is complete: the renewal is answered.
    let watch = PeakWatch::start(pid);
    let mut honest = GbsClient::connect(&nurl).await.expect("connect");
    let owner = marsh_gbs_client::Secrets::from_seed(0x60);
    honest.upload(&si(12), 1, &owner, b"a complete share").await.expect("share 1");
    let trickle = hostile::trickled_upload(&nurl, &si(12), 16 << 20, 6000, 0x56).await.expect("trickle");
    // The trickle's PATCH holds its upload from its first bytes on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = tokio::spawn({
        let nurl = nurl.clone();
        async move {
            let mut c = GbsClient::connect(&nurl).await.expect("connect");
            c.allocate(&si(12), &marsh_gbs_client::Secrets::from_seed(0x59), &[0], 16 << 20).await
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let renewal = tokio::time::timeout(Duration::from_secs(15), honest.renew(&si(12), &owner)).await;
    let renewal = renewal.expect("the renewal answered within 15 s while an upload trickles").expect("renew");
    assert_eq!(renewal.status, StatusCode::NO_CONTENT);
    let second = tokio::time::timeout(Duration::from_secs(15), second).await.expect("the second allocation answered");
    let second = second.expect("task").expect("allocate");
    assert_eq!(second.status, StatusCode::OK, "not allocated (another secret's upload), but answered");
    drop(trickle);
    report.push(("a trickled upload and its storage index", watch.growth_mib()));
    eprintln!("abuse: {:?}", report.last());

    // 3. 2,000 connections that never start TLS, 10 from each of 200 addresses, then a client
    //    from another address.
    let watch = PeakWatch::start(pid);
    let addr: std::net::SocketAddr = nurl.address().parse().expect("an IP address");
    let sources: Vec<std::net::IpAddr> =
        (0..200u32).map(|i| std::net::Ipv4Addr::from(0x7f00_0002 + i).into()).collect();
    let held = hostile::unstarted_connections(addr, &sources, 10).await.expect("2,000 connections");
    let served = tokio::time::timeout(Duration::from_secs(5), still_serves(&nurl)).await;
    assert!(served.is_ok(), "another client served within 5 s of a full connection table");
    drop(held);
    report.push(("2,000 connections that never start TLS", watch.growth_mib()));
    eprintln!("abuse: {:?}", report.last());

    // 4. One byte at the end of the space the node advertises, to a fresh storage index.
    let before = hostile::available_space(&nurl).await.expect("version");
    let status = hostile::sparse_claim(&nurl, &si(14), before - 1).await.expect("sparse claim");
    assert_eq!(status, StatusCode::BAD_REQUEST, "a write leaving a hole is refused");
    // The node re-reads what it holds at most every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = hostile::available_space(&nurl).await.expect("version");
    eprintln!("abuse: available space {before} before one byte at its end, {after} after");
    assert!(before.abs_diff(after) < 64 << 20, "advertised capacity moved from {before} to {after}");

    still_serves(&nurl).await;
    let stderr = running.stop();
    eprintln!("peak RSS growth per attack (MiB): {report:?}");
    for (what, mib) in &report {
        assert!(*mib < ROUND_TWO_BOUND_MIB, "{what}: the server's peak RSS grew by {mib} MiB\n{stderr}");
    }
}

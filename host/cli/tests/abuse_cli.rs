//! The standing abuse suite: the hostile clients of issue 14's table, each against a live node
//! (`marsh run`, backend-disk), with the server's peak RSS and open descriptors read from
//! `/proc`. Every attack must get its stated answer, leave the node serving, grow the server's
//! peak RSS by less than [`BOUND_MIB`] over what it was before, and give back its descriptors.
//!
//! Peak RSS is `VmHWM`, reset before each attack by writing 5 to `/proc/PID/clear_refs`.

mod common;

use std::time::Duration;

use common::{TestNode, wait_for};
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Nurl, hostile};

/// The most one hostile client's attack may add to the server's peak RSS.
const BOUND_MIB: u64 = 256;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB")
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd").count()
}

/// The server's memory from now on: its peak is reset, and [`Watch::growth_mib`] says how far
/// the peak rose over the RSS it had now.
struct Watch {
    pid: u32,
    rss_kib: u64,
}

impl Watch {
    fn start(pid: u32) -> Watch {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
        Watch { pid, rss_kib: status_kib(pid, "VmRSS:") }
    }

    fn growth_mib(&self) -> u64 {
        status_kib(self.pid, "VmHWM:").saturating_sub(self.rss_kib) / 1024
    }
}

async fn still_serves(nurl: &Nurl) {
    let mut client = GbsClient::connect(nurl).await.expect("a new connection");
    assert_eq!(client.call(Method::GET, "version", &[], &[], vec![]).await.expect("version").status, StatusCode::OK);
}

fn si(n: u8) -> String {
    marsh_core::StorageIndex::from_bytes([n; 16]).to_base32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_stay_within_the_bounds() {
    let node = TestNode::with(&[("storage.reserved-space", "0")]);
    let running = node.start();
    let (pid, nurl) = (running.pid(), running.nurl());
    // The share attack 4 downloads, uploaded first: attack 3 fills the anonymous account's open
    // uploads for half an hour.
    hostile::upload_share(&nurl, &si(4), 64 << 20).await.expect("a 64 MiB share");
    still_serves(&nurl).await;
    let idle_descriptors = descriptors(pid);
    let mut report = Vec::new();

    // 1. A read-test-write reading back a sparse 1 GiB share it made with one byte.
    let watch = Watch::start(pid);
    let got = hostile::sparse_slot_read(&nurl, &si(1), 1 << 30).await.expect("sparse read");
    assert_eq!(got.statuses, [(StatusCode::OK, 1), (StatusCode::PAYLOAD_TOO_LARGE, 1)], "made, then refused");
    report.push(("1 GiB read vector over a sparse share", watch.growth_mib()));
    eprintln!("abuse: {:?}", report.last());

    // 2. A body of eight million tiny items.
    let watch = Watch::start(pid);
    let got = hostile::tiny_items(&nurl, &si(2), 8_000_000).await.expect("tiny items");
    assert!(got.all(StatusCode::BAD_REQUEST), "{got:?}");
    report.push(("8 million tiny CBOR items", watch.growth_mib()));
    eprintln!("abuse: {:?}", report.last());

    // 3. 200 allocations of 256 zero-sized shares: with a 40 KiB upload secret, then with
    //    the 20 bytes Tahoe's client sends (capped by the open uploads an account may have).
    let watch = Watch::start(pid);
    let (got, allocated) = hostile::zero_allocations(&nurl, 200, 256, 40 * 1024).await.expect("allocations");
    assert!(got.all(StatusCode::BAD_REQUEST) && allocated == 0, "{got:?}");
    let (got, allocated) = hostile::zero_allocations(&nurl, 200, 256, 20).await.expect("allocations");
    assert!(got.all(StatusCode::OK), "{got:?}");
    assert_eq!(allocated, 1000, "storage.open-uploads-per-account");
    report.push(("200 x 256 zero-sized allocations", watch.growth_mib()));
    eprintln!("abuse: {:?}", report.last());
    assert!(descriptors(pid) <= idle_descriptors + 8, "open uploads hold no descriptors");

    // 4. 40 downloads of a 64 MiB share whose readers never read.
    let watch = Watch::start(pid);
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

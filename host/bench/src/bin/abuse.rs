//! `marsh-abuse MARSH_BINARY`: the abuse suite's hostile clients (`marsh_gbs_client::hostile`)
//! against a fresh node of the given `marsh` binary, reporting how far each attack raised the
//! server's peak RSS (`VmHWM`, reset before each through `/proc/PID/clear_refs`) over the RSS
//! it had, and its descriptors. Run it against two builds to compare them; the figures go in
//! README's reliability section.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::time::Duration;

use anyhow::Context;
use marsh_bench::node::BenchNode;
use marsh_bench::proc::{descriptors, peak_kib, reset_peak, rss_kib};
use marsh_gbs_client::hostile;

/// Reset the peak; the RSS now.
fn reset(pid: u32) -> anyhow::Result<u64> {
    reset_peak(pid).context("resetting the peak RSS")?;
    Ok(rss_kib(pid).unwrap_or(0))
}

fn si(n: u8) -> String {
    marsh_core::StorageIndex::from_bytes([n; 16]).to_base32()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let marsh = std::env::args().nth(1).context("usage: marsh-abuse MARSH_BINARY")?;
    let node = BenchNode::start(&marsh, &[])?;
    let (nurl, pid) = (&node.nurl, node.pid());
    hostile::upload_share(nurl, &si(4), 64 << 20).await?;
    let idle = (rss_kib(pid).unwrap_or(0), descriptors(pid));
    println!("marsh-abuse {marsh}: idle RSS {} MiB, {} descriptors", idle.0 / 1024, idle.1);
    println!("| attack | answers | peak RSS growth MiB | descriptors after |");
    println!("|---|---|---|---|");
    let report = |what: &str, answers: String, before: u64| {
        let growth = peak_kib(pid).unwrap_or(0).saturating_sub(before) / 1024;
        println!("| {what} | {answers} | {growth} | {} |", descriptors(pid));
    };

    let before = reset(pid)?;
    let got = hostile::sparse_slot_read(nurl, &si(1), 1 << 30).await;
    report("read-test-write reading a sparse 1 GiB share back", format!("{got:?}"), before);

    let before = reset(pid)?;
    let got = hostile::tiny_items(nurl, &si(2), 8_000_000).await;
    report("8 million tiny CBOR items in one body", format!("{got:?}"), before);

    let before = reset(pid)?;
    let got = hostile::zero_allocations(nurl, 200, 256, 40 * 1024).await;
    report("200 x 256 zero-sized allocations, 40 KiB upload secret", format!("{got:?}"), before);

    let before = reset(pid)?;
    let stalled = hostile::stalled_downloads(nurl, &si(4), 0, 40).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    report("40 downloads of 64 MiB never read (after 5 s)", "held".into(), before);
    tokio::time::sleep(Duration::from_secs(25)).await;
    report("the same 30 s later", "held".into(), before);
    drop(stalled);
    Ok(())
}

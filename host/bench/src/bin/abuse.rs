//! `marsh-abuse MARSH_BINARY`: the abuse suite's hostile clients (`marsh_gbs_client::hostile`)
//! against a fresh node of the given `marsh` binary (`storage.max-bytes 8GiB`), reporting how
//! far each attack raised the server's peak RSS (`VmHWM`, reset before each through
//! `/proc/PID/clear_refs`) over the RSS it had, its descriptors, and what an honest client
//! meanwhile saw. Run it against two builds to compare them; the figures go in
//! docs/testing.md ("Bounded under hostile load").

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::time::{Duration, Instant};

use anyhow::Context;
use marsh_bench::node::TestNode;
use marsh_bench::proc::{descriptors, peak_kib, reset_peak, rss_kib};
use marsh_gbs_client::{GbsClient, Secrets, hostile};

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
    let config = [("storage.reserved-space", "0"), ("storage.max-bytes", "8GiB")];
    let node = TestNode::init(std::path::Path::new(&marsh), &config);
    let running = node.start();
    let (nurl, pid) = (&running.nurl(), running.pid());
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

    // Issue 28's round.
    let before = reset(pid)?;
    let got = hostile::queued_bodies(nurl, &si(11), 16, 64 << 20).await;
    report("16 read-test-writes of 64 MiB at once on one storage index", format!("{got:?}"), before);

    let before = reset(pid)?;
    let owner = Secrets::from_seed(0x60);
    GbsClient::connect(nurl).await?.upload(&si(12), 1, &owner, b"a complete share").await?;
    let trickle = hostile::trickled_upload(nurl, &si(12), 16 << 20, 6000, 0x56).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    let mut c = GbsClient::connect(nurl).await?;
    let second = c.allocate(&si(12), &Secrets::from_seed(0x59), &[0], 16 << 20).await?.status;
    let renewal = c.renew(&si(12), &owner).await?.status;
    let answers = format!("second allocation {second}, renewal {renewal}, in {:?}", asked.elapsed());
    report("a trickled upload, a second allocation and a renewal on its storage index", answers, before);
    drop(trickle);

    let before = reset(pid)?;
    let server: std::net::SocketAddr = nurl.address().parse()?;
    let sources: Vec<std::net::IpAddr> =
        (0..200u32).map(|i| std::net::Ipv4Addr::from(0x7f00_0002 + i).into()).collect();
    let held = hostile::unstarted_connections(server, &sources, 10).await?;
    let asked = Instant::now();
    let served = GbsClient::connect(nurl).await.map(|_| ());
    let answers = format!("another client: {served:?} in {:?}", asked.elapsed());
    report("2,000 connections that never start TLS, from 200 addresses", answers, before);
    drop(held);

    let before = reset(pid)?;
    let available = hostile::available_space(nurl).await?;
    let status = hostile::sparse_claim(nurl, &si(14), available - 1).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = hostile::available_space(nurl).await?;
    let answers = format!("{status}; available space {available} before, {after} after");
    report("one byte at the end of the space the node advertises", answers, before);
    Ok(())
}

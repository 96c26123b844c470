//! `marsh-soak MARSH_BINARY [MINUTES] [WARM_UP_MINUTES]` (`make soak`): a fresh node of the
//! given binary under a mixed load for MINUTES (default 30): two honest clients of a named
//! account upload fresh shares, read back and check earlier ones, renew leases and write to
//! mutable slots, while a hostile anonymous client cycles through the abuse suite's attacks
//! (a sparse 1 GiB read-test-write read, a million tiny CBOR items, zero-sized allocations with
//! an oversized secret, stalled downloads held 10 s, junk on a raw connection, and issue 28's:
//! eight 16 MiB read-test-writes at once on one storage index, a trickled upload with a second
//! allocation and a renewal on its storage index, 1,100 connections that never start TLS held
//! 5 s, one byte far past a new share's end). Every 30 s it
//! prints the server's RSS, descriptors and the clients' counts; at the end, a summary of RSS
//! and descriptors after the warm-up (default 5 minutes) and every honest error. An honest
//! error, or RSS or descriptors that keep growing, is what the run exists to show.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use http::{Method, StatusCode};
use marsh_bench::node::TestNode;
use marsh_bench::proc::{anon_kib, descriptors, rss_kib};
use marsh_conformance::pattern;
use marsh_gbs_client::{GbsClient, Nurl, Secrets, hostile, rtw_body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the clients did so far.
#[derive(Default)]
struct Counts {
    honest_ops: AtomicU64,
    honest_errors: AtomicU64,
    hostile_rounds: AtomicU64,
    hostile_failures: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Counts {
    fn error(&self, what: String) {
        self.honest_errors.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 20 {
            errors.push(what);
        }
    }
}

fn fresh_si() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("random");
    marsh_core::StorageIndex::from_bytes(bytes).to_base32()
}

/// One honest client: upload a 4-64 KiB share, read back and check one uploaded before, renew
/// its lease, write the next 4 KiB of one of its 8 slots; over and over until `until`.
async fn honest(nurl: Nurl, worker: u64, until: Instant, counts: Arc<Counts>) {
    let secrets = Secrets::from_seed(0x60 + worker as u8);
    let slots: Vec<String> = (0..8).map(|_| fresh_si()).collect();
    let mut uploaded: Vec<(String, u64, usize)> = Vec::new();
    let mut client = None;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let c = match client.as_mut() {
            Some(c) => c,
            None => match GbsClient::connect(&nurl).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    counts.error(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let result: anyhow::Result<()> = async {
            let (si, len) = (fresh_si(), 4096 + (n as usize * 7919) % (60 << 10));
            c.upload(&si, 0, &secrets, &pattern(n, len)).await?;
            uploaded.push((si, n, len));
            let (si, seed, len) = &uploaded[(n as usize * 31) % uploaded.len()];
            let got = c.call(Method::GET, &format!("immutable/{si}/0"), &[], &[], Vec::new()).await?;
            anyhow::ensure!(got.status == StatusCode::OK, "download {si}: {}", got.status);
            anyhow::ensure!(got.body[..] == pattern(*seed, *len)[..], "download {si}: other bytes than uploaded");
            let renewed = c.renew(si, &secrets).await?;
            anyhow::ensure!(renewed.status == StatusCode::NO_CONTENT, "renew {si}: {}", renewed.status);
            let slot = &slots[n as usize % slots.len()];
            let data = pattern(n, 4096);
            // Each slot grows by one 4 KiB block a visit up to 256 KiB, then is rewritten from
            // the start: writes that continue a share, as a real client's do (a write leaving a
            // hole past a share's end is refused).
            let body = rtw_body(0, &[], &[((n / slots.len() as u64) % 64 * 4096, &data)], &[]);
            let written = c.read_test_write(slot, &secrets, body).await?;
            anyhow::ensure!(written.status == StatusCode::OK, "read-test-write {slot}: {}", written.status);
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                counts.honest_ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counts.error(format!("{e:#}"));
                client = None;
            }
        }
        // Keep the uploads' disk use bounded (~40 MiB a minute per client).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hostile client: one round of every attack, over and over until `until`.
async fn hostile(nurl: Nurl, big: String, until: Instant, counts: Arc<Counts>) {
    let addr = format!("{}:{}", nurl.host, nurl.port);
    while Instant::now() < until {
        let failed = |r: bool| {
            if !r {
                counts.hostile_failures.fetch_add(1, Ordering::Relaxed);
            }
        };
        failed(matches!(hostile::sparse_slot_read(&nurl, &fresh_si(), 1 << 30).await, Ok(o) if !o.all(StatusCode::OK)));
        failed(
            matches!(hostile::tiny_items(&nurl, &fresh_si(), 1_000_000).await, Ok(o) if o.all(StatusCode::BAD_REQUEST)),
        );
        failed(hostile::zero_allocations(&nurl, 20, 256, 40 * 1024).await.is_ok());
        match hostile::stalled_downloads(&nurl, &big, 0, 8).await {
            Ok(stalled) => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                drop(stalled);
            }
            Err(_) => failed(false),
        }
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(&addr).await {
            let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await;
            let _ = tcp.write_all(&pattern(7, 4096)).await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink)).await;
        }
        let answered = |o: &hostile::Outcome| {
            o.statuses.iter().all(|(s, _)| matches!(*s, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE))
        };
        failed(matches!(hostile::queued_bodies(&nurl, &fresh_si(), 8, 16 << 20).await, Ok(o) if answered(&o)));
        let si = fresh_si();
        match hostile::trickled_upload(&nurl, &si, 16 << 20, 6000, 0x56).await {
            Ok(trickle) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let second = async {
                    let mut c = GbsClient::connect(&nurl).await.ok()?;
                    let allocated = c.allocate(&si, &Secrets::from_seed(0x59), &[0], 16 << 20).await.ok()?;
                    let renewed = c.renew(&si, &Secrets::from_seed(0x59)).await.ok()?;
                    Some((allocated.status, renewed.status))
                };
                let got = tokio::time::timeout(Duration::from_secs(15), second).await;
                failed(matches!(got, Ok(Some((StatusCode::OK, StatusCode::NOT_FOUND)))));
                tokio::time::sleep(Duration::from_secs(8)).await;
                drop(trickle);
            }
            Err(_) => failed(false),
        }
        let server: Option<std::net::SocketAddr> = addr.parse().ok();
        let sources: Vec<std::net::IpAddr> =
            (0..110u32).map(|i| std::net::Ipv4Addr::from(0x7f00_0102 + i).into()).collect();
        match server {
            Some(server) => match hostile::unstarted_connections(server, &sources, 10).await {
                Ok(held) => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    drop(held);
                }
                Err(_) => failed(false),
            },
            None => failed(false),
        }
        failed(matches!(hostile::sparse_claim(&nurl, &fresh_si(), 1 << 30).await, Ok(StatusCode::BAD_REQUEST)));
        counts.hostile_rounds.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: marsh-soak MARSH_BINARY [MINUTES] [WARM_UP_MINUTES]";
    let marsh = args.next().context(usage)?;
    let minutes: u64 = args.next().map_or(Ok(30), |m| m.parse()).context(usage)?;
    let warm_up: u64 = args.next().map_or(Ok(5), |m| m.parse()).context(usage)?;
    let node = TestNode::init(std::path::Path::new(&marsh), &[("storage.reserved-space", "0")]);
    let running = node.start();
    let pid = running.pid();
    let honest_nurl = node.create_account("honest", &[]);
    let big = fresh_si();
    hostile::upload_share(&running.nurl(), &big, 8 << 20).await?;
    let started = Instant::now();
    let until = started + Duration::from_secs(minutes * 60);
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for worker in 0..2 {
        tasks.push(tokio::spawn(honest(honest_nurl.clone(), worker, until, counts.clone())));
    }
    tasks.push(tokio::spawn(hostile(running.nurl(), big, until, counts.clone())));

    println!("marsh-soak {marsh}: {minutes} minutes, warm-up {warm_up}");
    println!(
        "| minute | RSS MiB | anon MiB | descriptors | honest ops | honest errors | hostile rounds | hostile unexpected |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut after_warm_up: Vec<(u64, usize)> = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let minute = started.elapsed().as_secs_f64() / 60.0;
        let (rss, anon, fds) = (rss_kib(pid).unwrap_or(0), anon_kib(pid).unwrap_or(0), descriptors(pid));
        if rss == 0 {
            anyhow::bail!("the node is gone after {minute:.1} minutes");
        }
        if minute >= warm_up as f64 {
            after_warm_up.push((rss, fds));
        }
        println!(
            "| {minute:.1} | {} | {} | {fds} | {} | {} | {} | {} |",
            rss / 1024,
            anon / 1024,
            counts.honest_ops.load(Ordering::Relaxed),
            counts.honest_errors.load(Ordering::Relaxed),
            counts.hostile_rounds.load(Ordering::Relaxed),
            counts.hostile_failures.load(Ordering::Relaxed),
        );
    }
    for task in tasks {
        task.await?;
    }
    let range = |f: fn(&(u64, usize)) -> u64| {
        (after_warm_up.iter().map(f).min().unwrap_or(0), after_warm_up.iter().map(f).max().unwrap_or(0))
    };
    let (rss_min, rss_max) = range(|s| s.0 / 1024);
    let (fd_min, fd_max) = range(|s| s.1 as u64);
    let (first, last) =
        (after_warm_up.first().copied().unwrap_or_default(), after_warm_up.last().copied().unwrap_or_default());
    println!(
        "summary: after warm-up RSS {rss_min}-{rss_max} MiB (first {} MiB, last {} MiB), descriptors {fd_min}-{fd_max} (first {}, last {}); honest ops {}, honest errors {}; hostile rounds {}, unexpected hostile outcomes {}",
        first.0 / 1024,
        last.0 / 1024,
        first.1,
        last.1,
        counts.honest_ops.load(Ordering::Relaxed),
        counts.honest_errors.load(Ordering::Relaxed),
        counts.hostile_rounds.load(Ordering::Relaxed),
        counts.hostile_failures.load(Ordering::Relaxed),
    );
    for e in counts.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("honest error: {e}");
    }
    Ok(())
}

//! `marsh-load`: a GBS load generator. Given a NURL it runs one workload against any GBS
//! server (marsh, or the Python reference) and reports, per phase, requests per second,
//! throughput, latency p50/p99, and, given the server's pid, the server's CPU seconds and
//! resident memory from `/proc`.
//!
//! Phases, in order: immutable upload (`--shares` of `--size` bytes in PATCH chunks of
//! `--chunk`, `--concurrency` at a time), ranged download of everything uploaded (content
//! verified; `--download-rounds N` reads it N times, a phase long enough to profile), mutable read-test-write of small slots, lease renewals, `version` polls, and
//! optionally `--idle-clients` connections each polling `version` once a second.
//!
//! The last line is `RESULT {json}` for scripts. Traffic goes only to the NURL's address.

#![allow(clippy::print_stdout, reason = "a load generator prints its results")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use http::{Method, StatusCode};
use marsh_bench::client::{GbsClient, Nurl, allocate_body, rtw_body};
use marsh_bench::proc::{RssSampler, anon_kib, cpu_and_kernel_seconds, cpu_seconds, rss_kib};
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
struct Args {
    nurl: Nurl,
    pid: Option<u32>,
    shares: usize,
    size: u64,
    chunk: u64,
    concurrency: usize,
    mutable: usize,
    renewals: usize,
    polls: usize,
    idle_clients: usize,
    idle_seconds: u64,
    /// Times the download phase reads everything uploaded (a longer phase to profile).
    download_rounds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        nurl: "pb://x@127.0.0.1:1/x#v=1".parse()?,
        pid: None,
        shares: 4,
        size: 64 << 20,
        chunk: 1 << 20,
        concurrency: 4,
        mutable: 200,
        renewals: 200,
        polls: 500,
        idle_clients: 0,
        idle_seconds: 10,
        download_rounds: 1,
    };
    let mut nurl = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--nurl" => nurl = Some(value()?.parse()?),
            "--pid" => a.pid = Some(value()?.parse()?),
            "--shares" => a.shares = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--chunk" => a.chunk = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--mutable" => a.mutable = value()?.parse()?,
            "--renewals" => a.renewals = value()?.parse()?,
            "--polls" => a.polls = value()?.parse()?,
            "--idle-clients" => a.idle_clients = value()?.parse()?,
            "--idle-seconds" => a.idle_seconds = value()?.parse()?,
            "--download-rounds" => a.download_rounds = value()?.parse::<u64>()?.max(1),
            other => bail!("unknown flag {other}; see the file's doc for the flags"),
        }
    }
    a.nurl = nurl.context("--nurl NURL is required")?;
    ensure!(a.chunk > 0 && a.concurrency > 0, "--chunk and --concurrency must be positive");
    Ok(a)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).unwrap_or_default();
    b
}

/// Deterministic content of a share at an offset, so downloads can be verified.
fn pattern(si: &[u8; 16], offset: u64, len: usize) -> Vec<u8> {
    let seed = u64::from_le_bytes(si[..8].try_into().unwrap_or_default()) ^ offset;
    marsh_conformance::pattern(seed, len)
}

fn si_text(si: &[u8; 16]) -> String {
    data_encoding::BASE32_NOPAD.encode(si).to_ascii_lowercase()
}

#[derive(Debug, Default)]
struct Phase {
    name: &'static str,
    latencies_ms: Vec<f64>,
    bytes: u64,
    elapsed: f64,
    cpu: Option<f64>,
    /// The part of `cpu` spent in the kernel: what no server code can save (copies between
    /// sockets, page cache and user space; loopback TCP; wake-ups).
    kernel_cpu: Option<f64>,
    /// This load generator's own CPU seconds in the phase: on one machine it competes with the
    /// server for the same cores.
    client_cpu: Option<f64>,
}

impl Phase {
    /// A percentile of the latencies, which `phase` leaves sorted.
    fn percentile(&self, p: f64) -> f64 {
        match self.latencies_ms.len() {
            0 => 0.0,
            n => self.latencies_ms[((n as f64 - 1.0) * p).round() as usize],
        }
    }
}

struct Recorder {
    latencies: Mutex<Vec<f64>>,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Recorder { latencies: Mutex::new(Vec::new()) })
    }
}

async fn timed<T>(rec: &Recorder, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let start = Instant::now();
    let r = f.await?;
    rec.latencies.lock().await.push(start.elapsed().as_secs_f64() * 1000.0);
    Ok(r)
}

const RENEW: &[u8] = &[1; 32];
const CANCEL: &[u8] = &[2; 32];

/// Run `work(i)` for i in 0..n on `k` connections.
async fn fan_out<F, Fut>(args: &Args, n: usize, k: usize, work: F) -> anyhow::Result<()>
where
    F: Fn(usize, Arc<Mutex<GbsClient>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut tasks = Vec::new();
    for _ in 0..k.min(n.max(1)) {
        let client = Arc::new(Mutex::new(GbsClient::connect(&args.nurl).await?));
        let (next, work) = (next.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                work(i, client.clone()).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn phase<F, Fut>(args: &Args, name: &'static str, n: usize, bytes: u64, work: F) -> anyhow::Result<Phase>
where
    F: Fn(usize, Arc<Mutex<GbsClient>>, Arc<Recorder>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let rec = Recorder::new();
    let server0 = args.pid.and_then(cpu_and_kernel_seconds);
    let client0 = cpu_seconds(std::process::id());
    let start = Instant::now();
    let r2 = rec.clone();
    fan_out(args, n, args.concurrency, move |i, c| work(i, c, r2.clone()))
        .await
        .with_context(|| format!("phase {name}"))?;
    let elapsed = start.elapsed().as_secs_f64();
    let server = server0.zip(args.pid.and_then(cpu_and_kernel_seconds));
    let (cpu, kernel_cpu) = (server.map(|(a, b)| b.0 - a.0), server.map(|(a, b)| b.1 - a.1));
    let client_cpu = client0.zip(cpu_seconds(std::process::id())).map(|(a, b)| b - a);
    let mut latencies_ms = std::mem::take(&mut *rec.latencies.lock().await);
    latencies_ms.sort_by(f64::total_cmp);
    Ok(Phase { name, latencies_ms, bytes, elapsed, cpu, kernel_cpu, client_cpu })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let idle_rss = args.pid.and_then(rss_kib);
    let idle_anon = args.pid.and_then(anon_kib);
    let sampler = args.pid.map(RssSampler::start);
    let sis: Arc<Vec<[u8; 16]>> = Arc::new((0..args.shares).map(|_| random::<16>()).collect());
    let mut phases = Vec::new();

    let (size, chunk) = (args.size, args.chunk);
    let s = sis.clone();
    phases.push(
        phase(&args, "upload", args.shares, args.size * args.shares as u64, move |i, client, rec| {
            let si = s[i];
            async move {
                let mut c = client.lock().await;
                let path = format!("immutable/{}", si_text(&si));
                let upload = random::<20>();
                let secrets: [(&str, &[u8]); 3] =
                    [("lease-renew-secret", RENEW), ("lease-cancel-secret", CANCEL), ("upload-secret", &upload)];
                let r = timed(&rec, async {
                    Ok(c.call(Method::POST, &path, &secrets, &[], allocate_body(&[0], size)).await?)
                })
                .await?;
                ensure!(r.status == StatusCode::OK, "allocate: {}", r.status);
                let mut offset = 0;
                while offset < size {
                    let n = chunk.min(size - offset);
                    let range = format!("bytes {}-{}/*", offset, offset + n - 1);
                    let data = pattern(&si, offset, n as usize);
                    let r = timed(&rec, async {
                        Ok(c.call(
                            Method::PATCH,
                            &format!("{path}/0"),
                            &[("upload-secret", &upload)],
                            &[("content-range", &range)],
                            data,
                        )
                        .await?)
                    })
                    .await?;
                    ensure!(
                        r.status == StatusCode::OK || r.status == StatusCode::CREATED,
                        "patch: {} {:?}",
                        r.status,
                        r.body
                    );
                    offset += n;
                }
                Ok(())
            }
        })
        .await?,
    );

    let s = sis.clone();
    let rounds = args.download_rounds;
    phases.push(
        phase(&args, "download", args.shares, args.size * args.shares as u64 * rounds, move |i, client, rec| {
            let si = s[i];
            async move {
                let mut c = client.lock().await;
                let path = format!("immutable/{}/0", si_text(&si));
                let mut read = 0;
                while read < size * rounds {
                    let offset = read % size;
                    let n = chunk.min(size - offset);
                    let range = format!("bytes={}-{}", offset, offset + n - 1);
                    let r =
                        timed(&rec, async { Ok(c.call(Method::GET, &path, &[], &[("range", &range)], vec![]).await?) })
                            .await?;
                    ensure!(r.status == StatusCode::PARTIAL_CONTENT, "read: {}", r.status);
                    ensure!(
                        r.body.as_ref() == pattern(&si, offset, n as usize).as_slice(),
                        "read at {offset}: content differs"
                    );
                    read += n;
                }
                Ok(())
            }
        })
        .await?,
    );

    phases.push(
        phase(&args, "mutable", args.mutable, args.mutable as u64 * 2048, move |_, client, rec| async move {
            let mut c = client.lock().await;
            let si = random::<16>();
            let path = format!("mutable/{}/read-test-write", si_text(&si));
            let we = random::<32>();
            let secrets: [(&str, &[u8]); 3] =
                [("write-enabler", &we), ("lease-renew-secret", RENEW), ("lease-cancel-secret", CANCEL)];
            let first = vec![7u8; 1024];
            let r = timed(&rec, async {
                Ok(c.call(Method::POST, &path, &secrets, &[], rtw_body(0, &[(0, 1, b"")], &[(0, &first)], &[])).await?)
            })
            .await?;
            ensure!(r.status == StatusCode::OK, "create slot: {}", r.status);
            let second = vec![9u8; 1024];
            let body = rtw_body(0, &[(0, 16, &first[..16])], &[(0, &second)], &[(0, 16)]);
            let r = timed(&rec, async { Ok(c.call(Method::POST, &path, &secrets, &[], body).await?) }).await?;
            ensure!(r.status == StatusCode::OK, "rewrite slot: {}", r.status);
            Ok(())
        })
        .await?,
    );

    let s = sis.clone();
    phases.push(
        phase(&args, "lease", args.renewals, 0, move |i, client, rec| {
            let si = s[i % s.len().max(1)];
            async move {
                let mut c = client.lock().await;
                let path = format!("lease/{}", si_text(&si));
                let r = timed(&rec, async {
                    Ok(c.call(
                        Method::PUT,
                        &path,
                        &[("lease-renew-secret", RENEW), ("lease-cancel-secret", CANCEL)],
                        &[],
                        vec![],
                    )
                    .await?)
                })
                .await?;
                ensure!(r.status == StatusCode::NO_CONTENT, "lease: {}", r.status);
                Ok(())
            }
        })
        .await?,
    );

    phases.push(
        phase(&args, "version", args.polls, 0, move |_, client, rec| async move {
            let mut c = client.lock().await;
            let r = timed(&rec, async { Ok(c.call(Method::GET, "version", &[], &[], vec![]).await?) }).await?;
            ensure!(r.status == StatusCode::OK, "version: {}", r.status);
            Ok(())
        })
        .await?,
    );

    let idle = if args.idle_clients > 0 { Some(idle_pollers(&args).await?) } else { None };

    println!(
        "| phase    | requests |  req/s | MiB/s   | p50 ms | p99 ms | server CPU s | CPU s/GiB | of it kernel | client CPU s/GiB |"
    );
    println!(
        "|----------|----------|--------|---------|--------|--------|--------------|-----------|--------------|------------------|"
    );
    let mut json = Vec::new();
    for p in &phases {
        let n = p.latencies_ms.len();
        let mib_s = p.bytes as f64 / (1 << 20) as f64 / p.elapsed;
        let per_gib =
            |cpu: Option<f64>| cpu.filter(|_| p.bytes > 0).map(|c| c / (p.bytes as f64 / (1u64 << 30) as f64));
        let (cpu_per_gib, kernel_per_gib, client_per_gib) =
            (per_gib(p.cpu), per_gib(p.kernel_cpu), per_gib(p.client_cpu));
        let (name, rps, p50, p99) = (p.name, n as f64 / p.elapsed, p.percentile(0.5), p.percentile(0.99));
        let shown = |v: Option<f64>, none: &str, digits: usize| v.map_or(none.to_owned(), |c| format!("{c:.digits$}"));
        println!(
            "| {name:<8} | {n:>8} | {rps:>6.0} | {mib_s:>7.1} | {p50:>6.2} | {p99:>6.2} | {:>12} | {:>9} | {:>12} | {:>16} |",
            shown(p.cpu, "-", 2),
            shown(cpu_per_gib, "-", 2),
            shown(kernel_per_gib, "-", 2),
            shown(client_per_gib, "-", 2),
        );
        json.push(format!(
            "\"{name}\":{{\"requests\":{n},\"rps\":{rps:.1},\"mib_s\":{mib_s:.2},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"cpu_s\":{},\"cpu_s_per_gib\":{},\"kernel_cpu_s_per_gib\":{},\"client_cpu_s_per_gib\":{}}}",
            shown(p.cpu, "null", 3),
            shown(cpu_per_gib, "null", 3),
            shown(kernel_per_gib, "null", 3),
            shown(client_per_gib, "null", 3),
        ));
    }
    if let Some((clients, seconds, cpu)) = idle {
        let share = cpu.map(|c| c / seconds * 100.0);
        println!(
            "\nidle pollers: {clients} clients polling version every second for {seconds:.0} s: server CPU {}",
            share.map_or("-".into(), |s| format!("{s:.1}% of one core"))
        );
        json.push(format!(
            "\"idle\":{{\"clients\":{clients},\"core_percent\":{}}}",
            share.map_or("null".into(), |s| format!("{s:.2}"))
        ));
    }
    let peak = sampler.as_ref().map(RssSampler::peak_kib);
    if args.pid.is_some() {
        let mib = |v: Option<u64>| v.map_or("?".into(), |v| format!("{:.1}", v as f64 / 1024.0));
        println!(
            "server RSS: idle {} MiB ({} MiB of it anonymous), peak during the run {} MiB",
            mib(idle_rss),
            mib(idle_anon),
            mib(peak)
        );
    }
    let kib = |v: Option<u64>| v.map_or("null".into(), |v| v.to_string());
    json.push(format!(
        "\"idle_rss_kib\":{},\"idle_anon_kib\":{},\"peak_rss_kib\":{}",
        kib(idle_rss),
        kib(idle_anon),
        kib(peak)
    ));
    println!("RESULT {{{}}}", json.join(","));
    Ok(())
}

/// `clients` connections, each polling `version` once a second for the configured time;
/// returns the server CPU seconds used meanwhile.
async fn idle_pollers(args: &Args) -> anyhow::Result<(usize, f64, Option<f64>)> {
    let mut clients = Vec::with_capacity(args.idle_clients);
    for _ in 0..args.idle_clients {
        clients.push(GbsClient::connect(&args.nurl).await?);
    }
    let cpu0 = args.pid.and_then(cpu_seconds);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.idle_seconds);
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        // Spread the polls over the second, as independent clients would be.
        let offset = Duration::from_micros((i as u64 * 1_000_000) / args.idle_clients as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while Instant::now() < deadline {
                tick.tick().await;
                let r = c.call(Method::GET, "version", &[], &[], vec![]).await?;
                ensure!(r.status == StatusCode::OK, "version: {}", r.status);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, args.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok((args.idle_clients, elapsed, cpu))
}

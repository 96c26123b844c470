//! `marsh-bench-plugin`: the same backend logic called natively and as a wasm plugin, in one
//! run, with ratios. Run by `make bench` (release build), never by the tests.
//!
//! Measures, each as the median of several rounds:
//! - a trivial export: `size` of an absent share on `backend-memory` (no import);
//! - an export that calls one async import: `size` on `backend-disk` over a memory store
//!   (one `head` import, no I/O);
//! - 1 MiB writes: shares of 16 MiB written in 1 MiB `write`s to `backend-disk` on a
//!   directory, each finished with its fsync;
//! - 1 MiB reads of those shares (page cache);
//! - on a memory store (no I/O, so only the boundary counts), the 0.2.0 build (payloads) and
//!   the 0.1.0 build of the same `backend-disk` source (`tests/abi-0-1-backend`: bytes copied
//!   in and out as lists) beside native;
//! - the Rust example beside the Python one (`examples/02-python-backend`): per-call cost,
//!   1 MiB throughput on a memory store, the memory one instance holds, and the time to load,
//!   compile and start each.
//!
//! Usage: `marsh-bench-plugin PLUGIN_DIR [SCRATCH_DIR]`.

#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use marsh_core::{Backend, ShareNumber, StorageIndex};
use marsh_native::{NativeDisk, NativeGrants, NativeMemory};
use marsh_runtime::{Grants, PluginLimits, Runtime, WasmBackend};
use marsh_seal::SealKey;
use marsh_stores::{BlobStore, DirStore, MemoryStore};

const CALLS: u32 = 20_000;
const ROUNDS: usize = 5;
const MIB: usize = 1 << 20;
const SHARE_MIB: usize = 16;
const SHARES: usize = 8;

fn si(n: u32) -> StorageIndex {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[4] = 0x5a;
    StorageIndex::from_bytes(b)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn per_call(b: &dyn Backend) -> anyhow::Result<f64> {
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..CALLS {
            b.size(&si(i), ShareNumber(0)).await?;
        }
        rounds.push(start.elapsed().as_nanos() as f64 / f64::from(CALLS));
    }
    Ok(median(rounds))
}

/// MiB/s of writing, then of reading, `SHARES` shares of `SHARE_MIB` MiB in 1 MiB calls.
async fn throughput(b: &dyn Backend, round: usize) -> anyhow::Result<(f64, f64)> {
    let chunk = vec![0xA5u8; MIB];
    let total = (SHARES * SHARE_MIB) as f64;
    let start = Instant::now();
    for s in 0..SHARES {
        let si = si(1_000_000 + (round * SHARES + s) as u32);
        b.begin(&si, ShareNumber(0), (SHARE_MIB * MIB) as u64).await?;
        for c in 0..SHARE_MIB {
            b.write(&si, ShareNumber(0), (c * MIB) as u64, &chunk).await?;
        }
        b.finish(&si, ShareNumber(0)).await?;
    }
    let write = total / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for s in 0..SHARES {
        let si = si(1_000_000 + (round * SHARES + s) as u32);
        for c in 0..SHARE_MIB {
            let got = b.read(&si, ShareNumber(0), (c * MIB) as u64, MIB as u64).await?;
            anyhow::ensure!(got.len() == MIB, "short read");
        }
        b.delete(&si, ShareNumber(0)).await?;
    }
    let read = total / start.elapsed().as_secs_f64();
    Ok((write, read))
}

async fn throughput_median(b: &dyn Backend) -> anyhow::Result<(f64, f64)> {
    let (mut w, mut r) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (a, b2) = throughput(b, round).await?;
        w.push(a);
        r.push(b2);
    }
    Ok((median(w), median(r)))
}

fn row(what: &str, native: f64, wasm: f64, unit: &str, higher_is_better: bool) {
    compared(what, ("native", native), ("wasm", wasm), unit, higher_is_better);
}

/// One table row: `what` for the baseline and the other, and the other's ratio to it.
fn compared(what: &str, base: (&str, f64), other: (&str, f64), unit: &str, higher_is_better: bool) {
    let ratio = other.1 / base.1;
    let verdict = if higher_is_better {
        format!("{} at {:.0}% of {}", other.0, ratio * 100.0, base.0)
    } else {
        format!("{} {ratio:.2}x {}", other.0, base.0)
    };
    println!("| {what:<44} | {:>10.2} {unit:<5} | {:>10.2} {unit:<5} | {verdict:<24} |", base.1, other.1);
}

async fn wasm_backend(
    runtime: &Runtime,
    dir: &Path,
    name: &str,
    store: Arc<dyn BlobStore>,
) -> anyhow::Result<WasmBackend> {
    let plugin = runtime.load(&dir.join(format!("{name}.wasm")))?;
    let grants = Grants::new(SealKey::from_bytes([9; 32])).store("shares", store);
    let limits = PluginLimits { max_call_bytes: MIB as u64, ..PluginLimits::default() };
    Ok(WasmBackend::start(runtime, &plugin, grants, Vec::new(), limits).await?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let plugin_dir = PathBuf::from(args.next().context("usage: marsh-bench-plugin PLUGIN_DIR [SCRATCH_DIR]")?);
    let scratch_root = args.next().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::tempdir_in(&scratch_root)?;
    let runtime = Runtime::new(None)?;
    let key = SealKey::from_bytes([9; 32]);

    println!("marsh plugin benchmark: native vs wasm, same plugin code, one run");
    println!(
        "({CALLS} calls x {ROUNDS} rounds per call figure; {SHARES} shares x {SHARE_MIB} MiB x {ROUNDS} rounds per throughput figure; medians)\n"
    );
    println!("| {:<44} | {:>16} | {:>16} | {:<24} |", "measure", "native", "wasm", "ratio");
    println!("|{}|{}|{}|{}|", "-".repeat(46), "-".repeat(18), "-".repeat(18), "-".repeat(26));

    let native = NativeMemory::start(NativeGrants::new(key.clone()), Vec::new())?;
    let wasm = wasm_backend(&runtime, &plugin_dir, "backend_memory", Arc::new(MemoryStore::new("unused"))).await?;
    row("trivial export (backend-memory size), ns/call", per_call(&native).await?, per_call(&wasm).await?, "ns", false);

    let mem: Arc<dyn BlobStore> = Arc::new(MemoryStore::new("shares"));
    let native = NativeDisk::start(NativeGrants::new(key.clone()).store("shares", mem.clone()), Vec::new())?;
    let wasm = wasm_backend(&runtime, &plugin_dir, "backend_disk", mem).await?;
    row("export + async import (disk size on memory)", per_call(&native).await?, per_call(&wasm).await?, "ns", false);

    // The same transfers against a memory store: no I/O, so only the boundary is measured.
    let native_mem: Arc<dyn BlobStore> = Arc::new(MemoryStore::new("shares"));
    let wasm_mem: Arc<dyn BlobStore> = Arc::new(MemoryStore::new("shares"));
    let native = NativeDisk::start(NativeGrants::new(key.clone()).store("shares", native_mem), Vec::new())?;
    let wasm = wasm_backend(&runtime, &plugin_dir, "backend_disk", wasm_mem).await?;
    let old = wasm_backend(&runtime, &plugin_dir, "abi_0_1_backend", Arc::new(MemoryStore::new("shares"))).await?;
    let (nw, nr) = throughput_median(&native).await?;
    let (ww, wr) = throughput_median(&wasm).await?;
    let (ow, or) = throughput_median(&old).await?;
    row("1 MiB writes, backend-disk on a memory store", nw, ww, "MiB/s", true);
    row("1 MiB reads, backend-disk on a memory store", nr, wr, "MiB/s", true);
    // The same source built against 0.1.0, where share bytes are copied across as lists.
    row("  the same, built against 0.1.0: writes", nw, ow, "MiB/s", true);
    row("  the same, built against 0.1.0: reads", nr, or, "MiB/s", true);

    let native_dir: Arc<dyn BlobStore> = Arc::new(DirStore::open("shares", &scratch.path().join("native"))?);
    let wasm_dir: Arc<dyn BlobStore> = Arc::new(DirStore::open("shares", &scratch.path().join("wasm"))?);
    let native = NativeDisk::start(NativeGrants::new(key.clone()).store("shares", native_dir), Vec::new())?;
    let wasm = wasm_backend(&runtime, &plugin_dir, "backend_disk", wasm_dir).await?;
    // Alternate the two, so neither always runs on a warmer disk.
    let (nw, nr) = throughput_median(&native).await?;
    let (ww, wr) = throughput_median(&wasm).await?;
    let (nw2, nr2) = throughput_median(&native).await?;
    let (ww2, wr2) = throughput_median(&wasm).await?;
    row("1 MiB writes, backend-disk (fsync per share)", (nw + nw2) / 2.0, (ww + ww2) / 2.0, "MiB/s", true);
    row("1 MiB reads, backend-disk (page cache)", (nr + nr2) / 2.0, (wr + wr2) / 2.0, "MiB/s", true);
    println!("\nfaults during the run: {}", wasm.stats().faults());

    // The same kind of backend in two languages: the Rust example and the Python one
    // (componentize-py), both as wasm on a memory store.
    println!("\n| {:<44} | {:>16} | {:>16} | {:<24} |", "measure", "Rust example", "Python example", "ratio");
    println!("|{}|{}|{}|{}|", "-".repeat(46), "-".repeat(18), "-".repeat(18), "-".repeat(26));
    let compile = Instant::now();
    let python = wasm_backend(&runtime, &plugin_dir, "python_backend", Arc::new(MemoryStore::new("shares"))).await?;
    let python_start = compile.elapsed().as_secs_f64();
    let compile = Instant::now();
    let rust = wasm_backend(&runtime, &plugin_dir, "minimal_backend", Arc::new(MemoryStore::new("shares"))).await?;
    let rust_start = compile.elapsed().as_secs_f64();
    let (rust_ns, python_ns) = (per_call(&rust).await?, per_call(&python).await?);
    compared("export + one import (size), ns/call", ("Rust", rust_ns), ("Python", python_ns), "ns", false);
    let (rw, rr) = throughput_median(&rust).await?;
    let (pw, pr) = throughput_median(&python).await?;
    compared("1 MiB writes, on a memory store", ("Rust", rw), ("Python", pw), "MiB/s", true);
    compared("1 MiB reads, on a memory store", ("Rust", rr), ("Python", pr), "MiB/s", true);
    let mib = |b: u64| b as f64 / MIB as f64;
    compared(
        "memory of one instance (peak after a call)",
        ("Rust", mib(rust.stats().memory_peak())),
        ("Python", mib(python.stats().memory_peak())),
        "MiB",
        false,
    );
    compared("load, compile and start (no cache), s", ("Rust", rust_start), ("Python", python_start), "s", false);
    Ok(())
}

//! Criterion benchmarks of the hot paths under a GBS request: CBOR decoding and encoding,
//! upload range bookkeeping, sealing, and one call across the wasm boundary (against the
//! same call on the natively linked plugin, as the baseline in the same run).
//!
//! `cargo bench -p marsh-bench` (after `make plugins`; `MARSH_PLUGIN_DIR` locates the plugins).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup: a panic is the report")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use marsh_core::{Backend, ShareNumber, StorageIndex};
use marsh_seal::SealKey;
use marsh_server::ranges::RangeSet;
use marsh_server::wire;
use marsh_stores::MemoryStore;

fn cbor(c: &mut Criterion) {
    let allocate = marsh_bench::client::allocate_body(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 1 << 20);
    let rtw = marsh_bench::client::rtw_body(0, &[(0, 16, &[7; 16])], &[(0, &[9; 4096])], &[(0, 16)]);
    let mut g = c.benchmark_group("cbor");
    g.bench_function("decode allocate", |b| {
        b.iter(|| wire::allocate_request(&wire::decode(black_box(&allocate)).unwrap()).unwrap())
    });
    g.bench_function("decode read-test-write 4 KiB", |b| {
        b.iter(|| wire::read_test_write_request(&wire::decode(black_box(&rtw)).unwrap()).unwrap())
    });
    g.bench_function("encode version", |b| {
        b.iter(|| wire::encode(&wire::version(black_box(1 << 40), 64 << 30, 69_105 << 40, "marsh/0.1.0")))
    });
    g.bench_function("encode required", |b| {
        b.iter(|| wire::encode(&wire::required(black_box(&[(0, 10), (20, 30), (40, 1 << 20)]))))
    });
    g.finish();
}

fn ranges(c: &mut Criterion) {
    c.bench_function("ranges: 64 out-of-order chunk writes then missing()", |b| {
        b.iter(|| {
            let mut r = RangeSet::default();
            for i in (0..64u64).rev() {
                r.insert(i * 65_536, (i + 1) * 65_536);
            }
            black_box(r.missing(64 * 65_536))
        })
    });
}

fn sealing(c: &mut Criterion) {
    let key = SealKey::from_bytes([5; 32]);
    let mut g = c.benchmark_group("seal");
    for size in [256usize, 4096, 1 << 20] {
        let data = vec![1u8; size];
        let sealed = key.seal("lease/x", &data).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &data, |b, d| b.iter(|| key.seal("lease/x", d).unwrap()));
        g.bench_with_input(BenchmarkId::new("unseal", size), &sealed, |b, s| {
            b.iter(|| key.unseal("lease/x", s).unwrap())
        });
    }
    g.finish();
}

fn abi(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let runtime = marsh_runtime::Runtime::new(None).unwrap();
    let plugin = runtime.load(&marsh_artifacts::BACKEND_DISK.built()).expect("load backend-disk");
    let store = Arc::new(MemoryStore::new("shares"));
    let grants = marsh_runtime::Grants::new(SealKey::from_bytes([5; 32])).store("shares", store.clone());
    let wasm = rt
        .block_on(marsh_runtime::WasmBackend::start(
            &runtime,
            &plugin,
            grants,
            vec![],
            marsh_runtime::PluginLimits::default(),
        ))
        .unwrap();
    let native = rt
        .block_on(async {
            marsh_native::NativeDisk::start(
                marsh_native::NativeGrants::new(SealKey::from_bytes([5; 32])).store("shares", store),
                vec![],
            )
        })
        .unwrap();
    let si = StorageIndex::from_bytes([3; 16]);
    let data = vec![7u8; 1 << 20];
    rt.block_on(async {
        wasm.begin(&si, ShareNumber(0), 1 << 20).await.unwrap();
        native.begin(&si, ShareNumber(1), 1 << 20).await.unwrap();
    });
    let mut g = c.benchmark_group("abi");
    g.bench_function("size() native", |b| b.to_async(&rt).iter(|| native.size(&si, ShareNumber(9))));
    g.bench_function("size() wasm", |b| b.to_async(&rt).iter(|| wasm.size(&si, ShareNumber(9))));
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("write 1 MiB native", |b| b.to_async(&rt).iter(|| native.write(&si, ShareNumber(1), 0, &data)));
    g.bench_function("write 1 MiB wasm", |b| b.to_async(&rt).iter(|| wasm.write(&si, ShareNumber(0), 0, &data)));
    g.finish();
}

criterion_group!(benches, cbor, ranges, sealing, abi);
criterion_main!(benches);

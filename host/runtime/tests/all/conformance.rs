//! The whole conformance suite against each plugin, as wasm, under real limits.

use marsh_runtime::PluginLimits;

use marsh_artifacts::Plugin;

use crate::support::start;

async fn passes_everything(plugin: Plugin, limits: PluginLimits) {
    let name = plugin.package;
    let (backend, _dir) = start(plugin, limits).await;
    let report = marsh_conformance::run(&backend, "", |_| {}).await;
    let failures: Vec<_> = report.results.iter().filter(|r| r.outcome.is_err()).collect();
    assert!(failures.is_empty(), "{name} failed: {failures:#?}");
    assert_eq!(report.passed(), marsh_conformance::cases().len());
    assert_eq!(backend.stats().faults(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_disk_passes_with_less_memory_than_its_largest_share() {
    // 32 MiB of guest memory for a 65 MiB share: the plugin cannot be buffering it whole.
    let limits = PluginLimits { memory_bytes: 32 << 20, max_call_bytes: 1 << 20, ..PluginLimits::default() };
    passes_everything(marsh_artifacts::BACKEND_DISK, limits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_memory_passes() {
    // Its shares live in guest memory, so it needs room for the largest one.
    let limits = PluginLimits { memory_bytes: 512 << 20, ..PluginLimits::default() };
    passes_everything(marsh_artifacts::BACKEND_MEMORY, limits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_passes() {
    let limits = PluginLimits { memory_bytes: 64 << 20, max_call_bytes: 1 << 20, ..PluginLimits::default() };
    passes_everything(marsh_artifacts::MINIMAL_BACKEND, limits).await;
}

//! Loading: the compiled-plugin cache, inspection, and what a plugin may open.

use std::sync::Arc;

use marsh_runtime::{Grants, InitFailure, PluginLimits, Runtime, StartError, WasmBackend, World};
use marsh_seal::SealKey;
use marsh_stores::MemoryStore;

use crate::support::load;

#[test]
fn a_restart_loads_the_compiled_plugin_from_the_cache() {
    let cache = tempfile::tempdir().expect("cache");
    let first = Runtime::new(Some(cache.path().to_owned())).expect("runtime");
    let loaded = first.load(&marsh_artifacts::BACKEND_DISK.built()).expect("load");
    assert!(!loaded.from_cache);
    drop(first);
    let second = Runtime::new(Some(cache.path().to_owned())).expect("runtime");
    let again = second.load(&marsh_artifacts::BACKEND_DISK.built()).expect("load");
    assert!(again.from_cache, "the second runtime must reuse the artifact");
    assert_eq!(again.sha256, loaded.sha256);
    // A damaged artifact is ignored and rebuilt, never trusted.
    for entry in std::fs::read_dir(cache.path()).expect("read cache") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("damage");
    }
    let third = Runtime::new(Some(cache.path().to_owned())).expect("runtime");
    assert!(!third.load(&marsh_artifacts::BACKEND_DISK.built()).expect("load").from_cache);
}

#[test]
fn loads_of_one_plugin_racing_on_an_empty_cache_all_succeed() {
    // Several nodes' tests, or a backend and its conformance run, compile the same plugin at
    // once: each must get its component, and the cache must end up whole.
    let cache = tempfile::tempdir().expect("cache");
    let runtime = Runtime::new(Some(cache.path().to_owned())).expect("runtime");
    let bytes = std::fs::read(marsh_artifacts::BACKEND_MEMORY.built()).expect("plugin");
    std::thread::scope(|scope| {
        let loads: Vec<_> = (0..4).map(|_| scope.spawn(|| runtime.load_bytes(&bytes, "backend_memory"))).collect();
        for load in loads {
            load.join().expect("thread").expect("every racing load succeeds");
        }
    });
    let names: Vec<String> = std::fs::read_dir(cache.path())
        .expect("read cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "one artifact, no temporary files left: {names:?}");
    assert!(runtime.load_bytes(&bytes, "backend_memory").expect("load").from_cache);
}

#[tokio::test]
async fn inspection_names_world_abi_and_plugin() {
    let plugin = load(marsh_artifacts::BACKEND_DISK);
    assert_eq!(plugin.inspection.world, World::Backend);
    assert_eq!(plugin.inspection.abi, "0.2.0");
    assert_eq!(plugin.inspection.export, "marsh:plugin/shares@0.2.0");
    let d = crate::support::runtime().describe(&plugin).await.expect("describe");
    assert_eq!(d.name, "backend-disk");
    assert_eq!(d.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(d.concurrency, "pooled");
    // Both versions side by side: the 0.1.0 fixture, and a 0.2.0 strategy (whose export is the
    // 0.1.0 `strategy` interface, and whose imports say it is 0.2.0).
    let old = load(marsh_artifacts::ABI_0_1_BACKEND);
    assert_eq!((old.inspection.abi.as_str(), old.inspection.export.as_str()), ("0.1.0", "marsh:plugin/shares@0.1.0"));
    assert_eq!(crate::support::runtime().describe(&old).await.expect("describe").name, "backend-disk");
    let strategy = load(marsh_artifacts::PERSISTENCE_RECORDS);
    assert_eq!(strategy.inspection.world, World::Persistence);
    assert_eq!(strategy.inspection.abi, "0.2.0");
    assert_eq!(strategy.inspection.export, "marsh:plugin/strategy@0.1.0");
    assert_eq!(crate::support::runtime().describe(&strategy).await.expect("describe").name, "persistence-records");
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let err = crate::support::runtime().load_bytes(b"\0asm\x01\0\0\0", "core.wasm").expect_err("core module");
    assert!(err.to_string().contains("core.wasm"), "{err}");
    let err = crate::support::runtime().load_bytes(b"not wasm at all", "junk.wasm").expect_err("junk");
    assert!(err.to_string().contains("junk.wasm"), "{err}");
}

#[tokio::test]
async fn a_plugin_only_opens_stores_granted_to_it() {
    let grants = Grants::new(SealKey::from_bytes([1; 32])).store("granted", Arc::new(MemoryStore::new("granted")));
    let config = vec![("store".to_owned(), "other".to_owned())];
    let err = WasmBackend::start(
        crate::support::runtime(),
        &load(marsh_artifacts::BACKEND_DISK),
        grants,
        config,
        PluginLimits::default(),
    )
    .await
    .expect_err("must not start");
    match err {
        StartError::Init { plugin, failure: InitFailure::Unavailable(message) } => {
            assert_eq!(plugin, "backend-disk");
            assert!(message.contains("`other` is not granted") && message.contains("granted"), "{message}");
        }
        other => panic!("expected an init failure, got {other}"),
    }
}

#[tokio::test]
async fn bad_plugin_config_is_reported_typed() {
    let grants = Grants::new(SealKey::from_bytes([1; 32])).store("shares", Arc::new(MemoryStore::new("shares")));
    let config = vec![("colour".to_owned(), "blue".to_owned())];
    let err = WasmBackend::start(
        crate::support::runtime(),
        &load(marsh_artifacts::BACKEND_DISK),
        grants,
        config,
        PluginLimits::default(),
    )
    .await
    .expect_err("must not start");
    assert!(
        matches!(&err, StartError::Init { failure: InitFailure::BadConfig(m), .. } if m.contains("colour")),
        "{err}"
    );
}

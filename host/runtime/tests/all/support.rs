//! Loading the plugins `make plugins` built (found by `marsh-artifacts`), and starting them
//! with a fresh store.

use std::sync::{Arc, OnceLock};

use marsh_artifacts::Plugin;

use marsh_runtime::{Grants, LoadedPlugin, PluginLimits, Runtime, WasmBackend};
use marsh_seal::SealKey;
use marsh_stores::DirStore;

/// One runtime per test process: compiling a plugin in a debug host takes about a second, so
/// the compiled plugins are cached in a directory shared by the tests of this process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    &RUNTIME
        .get_or_init(|| {
            let cache = tempfile::tempdir().expect("cache dir");
            (Runtime::new(Some(cache.path().to_owned())).expect("runtime"), cache)
        })
        .0
}

/// A plugin `make plugins` built, loaded (the test fails, never skips, when it is missing).
pub fn load(plugin: Plugin) -> LoadedPlugin {
    runtime().load(&plugin.built()).unwrap_or_else(|e| panic!("loading {}: {e}", plugin.package))
}

/// Start a backend plugin with one fresh directory store granted as `shares`.
pub async fn start(plugin: Plugin, limits: PluginLimits) -> (WasmBackend, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("store dir");
    let store = DirStore::open("shares", dir.path()).expect("dir store");
    (start_on(plugin, limits, Arc::new(store)).await, dir)
}

/// Start a backend plugin with `store` granted as `shares` (and the same sealing key every
/// time, so several started on one store read each other's sealed objects).
pub async fn start_on(plugin: Plugin, limits: PluginLimits, store: Arc<DirStore>) -> WasmBackend {
    let grants = Grants::new(SealKey::from_bytes([7; 32])).store("shares", store);
    WasmBackend::start(runtime(), &load(plugin), grants, Vec::new(), limits)
        .await
        .unwrap_or_else(|e| panic!("starting {}: {e}", plugin.package))
}

//! Finding the plugins `make plugins` built, and starting them with a fresh store.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use marsh_runtime::{Grants, LoadedPlugin, PluginLimits, Runtime, WasmBackend};
use marsh_seal::SealKey;
use marsh_stores::DirStore;

/// Where `make plugins` put the `.wasm` files: `$MARSH_PLUGIN_DIR`, or the target directory.
pub fn plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MARSH_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("wasm32-wasip2/plugin")
}

/// The path of a built plugin; fails the test (never skips it) when it is missing.
pub fn plugin_path(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `make plugins` (or `make test`, which does)", path.display());
    path
}

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

pub fn load(name: &str) -> LoadedPlugin {
    runtime().load(&plugin_path(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Start a backend plugin with one fresh directory store granted as `shares`.
pub async fn start(name: &str, limits: PluginLimits) -> (WasmBackend, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("store dir");
    let store = DirStore::open("shares", dir.path()).expect("dir store");
    let grants = Grants::new(SealKey::from_bytes([7; 32])).store("shares", Arc::new(store));
    let backend = WasmBackend::start(runtime(), &load(name), grants, Vec::new(), limits)
        .await
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    (backend, dir)
}

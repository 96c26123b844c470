//! The process-wide wasmtime engine: its configuration, the epoch ticker that enforces call
//! deadlines, the linker with every import, and the on-disk cache of precompiled components.
//!
//! Engine choices (measured in shared/WASM.md): classic async (fibers) with
//! `concurrency_support(false)`, which makes an export call ~0.4 us instead of ~1.9 us;
//! epoch interruption for deadlines (+4% on CPU-bound guest code); on-demand instance
//! allocation, because instances are pooled and reused by the host, so instantiation is
//! rare. Precompiled artifacts are keyed by the plugin's SHA-256 and the engine's
//! compatibility hash, so a restart does not recompile and an upgrade cannot load a stale one.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::LoadError;
use crate::generated;
use crate::host::HostState;
use crate::inspect::{Inspection, inspect_component};

/// How often the epoch advances; call deadlines are counted in these ticks, so a call may run
/// up to one tick past its deadline. A node's deadlines are seconds long (30 s by default);
/// at 50 ms the ticker thread wakes 20 times a second on an idle node (100 at the 10 ms first
/// used).
pub const EPOCH_TICK: Duration = Duration::from_millis(50);

/// Stops the ticker thread when the runtime goes away.
#[derive(Debug)]
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The wasm runtime: one per process.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
    cache_dir: Option<PathBuf>,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
    }
}

/// A compiled plugin whose world and ABI version the host supports.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub(crate) component: Component,
    /// What the component says it is.
    pub inspection: Inspection,
    /// SHA-256 of the `.wasm` file, hex.
    pub sha256: String,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
}

impl LoadedPlugin {
    /// Refuse to start a plugin of another world than the caller's.
    pub(crate) fn expect_world(&self, expected: crate::World) -> Result<(), crate::StartError> {
        if self.inspection.world == expected {
            Ok(())
        } else {
            Err(crate::StartError::WrongWorld { expected, found: self.inspection.world })
        }
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("inspection", &self.inspection)
            .field("sha256", &self.sha256)
            .field("from_cache", &self.from_cache)
            .finish()
    }
}

struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Runtime {
    /// Build the engine. With `cache_dir`, compiled plugins are kept there.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Runtime, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.concurrency_support(false);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        generated::Backend::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        // The persistence world adds one import; the shared ones are linked once, above. So
        // does 0.2.0: the interfaces it takes from 0.1.0 are the ones already linked.
        generated::persistence::marsh::plugin::accountant::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        generated::v0_2::marsh::plugin0_2_0::payloads::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        generated::v0_2::marsh::plugin0_2_0::batches::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (ticking, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("marsh-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))?;
        }
        Ok(Runtime { engine, linker: Arc::new(linker), cache_dir, _ticker: Arc::new(Ticker { stop }) })
    }

    fn cache_path(&self, wasm_sha: &str) -> Option<PathBuf> {
        let mut h = ShaHasher(Sha256::new());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = data_encoding::HEXLOWER.encode(&h.0.finalize()[..8]);
        self.cache_dir.as_ref().map(|d| d.join(format!("{wasm_sha}-{engine_hash}.cwasm")))
    }

    /// Load a plugin file: compile it (or take it from the cache) and check that its world
    /// and ABI version are ones this host supports.
    pub fn load(&self, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let bytes = std::fs::read(path)
            .map_err(|e| LoadError::Read { path: path.display().to_string(), error: e.to_string() })?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Like [`Runtime::load`], from bytes; `origin` names them in errors.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<LoadedPlugin, LoadError> {
        let sha256 = data_encoding::HEXLOWER.encode(&Sha256::digest(bytes));
        let compile_error =
            |e: wasmtime::Error| LoadError::Compile { origin: origin.to_owned(), error: format!("{e:#}") };
        let (component, from_cache) = match self.cache_path(&sha256) {
            None => (Component::new(&self.engine, bytes).map_err(compile_error)?, false),
            Some(cached) => match self.deserialize_cached(&cached) {
                Some(component) => (component, true),
                None => {
                    let artifact = self.engine.precompile_component(bytes).map_err(compile_error)?;
                    // The cache only saves the next start a compilation: failing to write it
                    // costs nothing now. Loads racing on one plugin each write their own file.
                    if let Err(e) = write_atomically(&cached, &artifact) {
                        tracing::warn!("not caching the compiled plugin: {e}");
                    }
                    // SAFETY: `artifact` was produced just now by `precompile_component` of this
                    // very engine.
                    #[allow(unsafe_code, reason = "loading the artifact this engine just compiled")]
                    let component = unsafe { Component::deserialize(&self.engine, &artifact) };
                    (component.map_err(compile_error)?, false)
                }
            },
        };
        let inspection = inspect_component(&self.engine, &component, origin)?;
        Ok(LoadedPlugin { component, inspection, sha256, from_cache })
    }

    fn deserialize_cached(&self, path: &Path) -> Option<Component> {
        // Read into memory rather than mmap: a file changed under a mapping would crash the
        // process (SIGBUS), and the copy costs ~0.1 ms.
        let bytes = std::fs::read(path).ok()?;
        // SAFETY: the file was produced by `precompile_component` of an engine with the same
        // compatibility hash (part of its name), in the node's own cache directory, written
        // atomically. wasmtime also checks the artifact's header and engine settings.
        #[allow(unsafe_code, reason = "loading our own precompiled artifacts is the point of the cache")]
        let loaded = unsafe { Component::deserialize(&self.engine, &bytes) };
        match loaded {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached plugin: {e}");
                None
            }
        }
    }
}

/// Write `data` to a temporary file of its own (unique per process, thread and call, so
/// concurrent loads of one plugin never share one) and rename it into place.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), LoadError> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let err = |e: std::io::Error| LoadError::Cache(format!("{}: {e}", path.display()));
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, data).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

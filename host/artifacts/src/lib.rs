//! The plugins built from source in this workspace (first-party plugins, the example and the
//! hostile test plugins), one constant each, generated from the Makefile's `PLUGINS` list, and
//! the one place that knows where `make plugins` puts them.
//!
//! A node looks a first-party plugin up with [`Plugin::locate`]; tests and benchmarks use
//! [`Plugin::built`], which fails loudly (never skips) when the file is missing.

use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// `examples/02-python-backend`, which `make plugins` builds with componentize-py (it is not a
/// cargo package, so it is not in the generated list).
pub const PYTHON_BACKEND: Plugin = Plugin { package: "python-backend", file: "python_backend.wasm" };

/// The variable naming the directory `make plugins` built into (the Makefile exports it).
pub const DIR_VARIABLE: &str = "MARSH_PLUGIN_DIR";

/// A plugin `make plugins` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plugin {
    /// Its cargo package, e.g. `backend-disk` (for a plugin in another language, its name).
    pub package: &'static str,
    /// The component file it is built as, e.g. `backend_disk.wasm`.
    pub file: &'static str,
}

/// A plugin file was not where a build puts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot find the plugin {file} (looked in: {}): build it with `make plugins` or set {DIR_VARIABLE}",
    searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
)]
pub struct NotBuilt {
    /// The file looked for.
    pub file: &'static str,
    /// Every directory it was looked for in, in order.
    pub searched: Vec<PathBuf>,
}

/// Where plugins are looked for, in order: `$MARSH_PLUGIN_DIR`; `plugins/` beside the running
/// executable (an installed node); and the `wasm32-wasip2/plugin` directory of the cargo target
/// directory the executable was built in (`target/debug/marsh`, or a test binary in
/// `target/debug/deps/`).
pub fn search_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(DIR_VARIABLE) {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        dirs.push(exe_dir.join("plugins"));
        dirs.push(exe_dir.join("../wasm32-wasip2/plugin"));
        dirs.push(exe_dir.join("../../wasm32-wasip2/plugin"));
    }
    dirs
}

impl Plugin {
    /// The built file, from the first directory of [`search_path`] that holds it.
    pub fn locate(self) -> Result<PathBuf, NotBuilt> {
        let searched = search_path();
        match searched.iter().map(|d| d.join(self.file)).find(|p| p.is_file()) {
            Some(path) => Ok(path),
            None => Err(NotBuilt { file: self.file, searched }),
        }
    }

    /// The built file, for tests and benchmarks.
    ///
    /// # Panics
    ///
    /// When it is missing, with the places searched: a test fails, it never skips.
    pub fn built(self) -> PathBuf {
        match self.locate() {
            Ok(path) => path,
            Err(e) => panic!("{e} (`make test` and `make check` build every plugin first)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plugin_of_the_makefile_has_a_constant_and_a_file_name() {
        assert!(ALL.contains(&BACKEND_DISK) && ALL.contains(&PERSISTENCE_STASH) && ALL.contains(&HOSTILE_TRAP));
        for p in ALL {
            assert_eq!(p.file, format!("{}.wasm", p.package.replace('-', "_")));
        }
        let mut packages: Vec<_> = ALL.iter().map(|p| p.package).collect();
        packages.dedup();
        assert_eq!(packages.len(), ALL.len(), "no plugin listed twice");
    }

    #[test]
    fn a_missing_plugin_names_where_it_was_looked_for() {
        let missing = Plugin { package: "no-such-plugin", file: "no_such_plugin.wasm" };
        let e = missing.locate().expect_err("not built");
        assert!(!e.searched.is_empty());
        assert!(e.to_string().contains("no_such_plugin.wasm") && e.to_string().contains("make plugins"), "{e}");
    }
}

//! From a `*.plugin` setting to a loaded plugin, and from `limits.*` to the limits every
//! plugin of the node runs under (the backend and the persistence strategy alike).
//!
//! A first-party plugin is taken from disk where a build put it (`make plugins`, or `plugins/`
//! beside an installed binary) and otherwise from the copy embedded in this binary at build
//! time (`build.rs`), so a copied `marsh` is a whole node. Either way it is compiled once into
//! the node's `cache/plugins`.

use marsh_node::{Limits, PluginChoice};
use marsh_runtime::{LoadedPlugin, PluginLimits, Runtime};

use crate::Error;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// The plugin a setting names, loaded (and compiled, or taken from the cache) by `runtime`.
pub fn load(runtime: &Runtime, choice: &PluginChoice) -> Result<LoadedPlugin, Error> {
    match choice {
        PluginChoice::FirstParty(plugin) => match plugin.locate() {
            Ok(path) => Ok(runtime.load(&path)?),
            Err(not_built) => match EMBEDDED.iter().find(|(file, _)| *file == plugin.file) {
                Some((file, bytes)) => {
                    tracing::info!("plugin {file}: the copy embedded in this binary ({} bytes)", bytes.len());
                    Ok(runtime.load_bytes(bytes, &format!("{file} (embedded)"))?)
                }
                None => Err(not_built.into()),
            },
        },
        PluginChoice::File(path) => Ok(runtime.load(path)?),
        PluginChoice::Native(name) => Err(Error::Native(name.clone(), "a natively linked backend has no file".into())),
    }
}

/// `limits.*` as the runtime takes them.
pub fn limits(limits: &Limits) -> PluginLimits {
    PluginLimits {
        memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
        call_deadline: limits.call_deadline,
        max_call_bytes: limits.max_call_bytes,
        max_instances: usize::try_from(limits.instances).unwrap_or(usize::MAX),
    }
}

//! From a `*.plugin` setting to a file, and from `limits.*` to the limits every plugin of the
//! node runs under (the backend and the persistence strategy alike).

use std::path::PathBuf;

use marsh_node::{Limits, PluginChoice};
use marsh_runtime::PluginLimits;

use crate::Error;

/// The `.wasm` file a setting names.
pub fn file(choice: &PluginChoice) -> Result<PathBuf, Error> {
    match choice {
        PluginChoice::FirstParty(plugin) => Ok(plugin.locate()?),
        PluginChoice::File(path) => Ok(path.clone()),
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

//! What a component is: which marsh world it exports and against which ABI version it was
//! built, read from its type before anything runs, and (for `marsh plugin inspect`) the
//! name and version it reports through `info`.
//!
//! A component that exports no marsh world, or exports or imports a `marsh:plugin` version
//! this host does not know, is refused here with an error naming both versions.

use std::fmt;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

use crate::generated::marsh::plugin::types;
use crate::grants::Grants;
use crate::host::HostState;
use crate::{ABI_VERSIONS, LoadError};

/// The world a plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// A storage backend (`marsh:plugin/shares`).
    Backend,
    /// An accountant persistence strategy (`marsh:plugin/strategy`).
    Persistence,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Backend => "backend",
            World::Persistence => "persistence",
        })
    }
}

/// What the component's type says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The exported world.
    pub world: World,
    /// The `marsh:plugin` version it was built against: the newest version among the
    /// interfaces it imports and exports (a 0.2.0 plugin uses 0.1.0 interfaces too).
    pub abi: String,
    /// The exported interface, with its version (e.g. `marsh:plugin/shares@0.2.0`).
    pub export: String,
}

/// What the plugin says about itself through `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Machine name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// `pooled` or `single`.
    pub concurrency: String,
}

fn split(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix("marsh:plugin/")?.split_once('@')
}

pub(crate) fn inspect_component(engine: &Engine, component: &Component, origin: &str) -> Result<Inspection, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let mut found = None;
    for name in &exports {
        if let Some((iface, _)) = split(name) {
            let world = match iface {
                "shares" => World::Backend,
                "strategy" => World::Persistence,
                _ => continue,
            };
            found = Some((world, name.clone()));
        }
    }
    let Some((world, export)) = found else {
        return Err(LoadError::NotAPlugin { origin: origin.to_owned(), exports: exports.join(", ") });
    };
    let versions: Vec<&str> = std::iter::once(export.as_str())
        .chain(imports.iter().map(String::as_str))
        .filter_map(|n| split(n).map(|(_, v)| v))
        .collect();
    if let Some(v) = versions.iter().find(|v| !ABI_VERSIONS.contains(v)) {
        return Err(LoadError::AbiMismatch {
            origin: origin.to_owned(),
            found: (*v).to_owned(),
            supported: ABI_VERSIONS.join(", "),
        });
    }
    let abi = ABI_VERSIONS.iter().rev().find(|v| versions.contains(v)).map_or_else(String::new, |v| (*v).to_owned());
    Ok(Inspection { world, abi, export })
}

/// Instantiate the plugin with the node's own linker (every import of every supported version)
/// but nothing granted, and ask it who it is. Imports it calls during `info` fail: it has no
/// stores, no seal key and no accounting.
pub(crate) async fn describe(
    engine: &Engine,
    linker: &Linker<HostState>,
    component: &Component,
    inspection: &Inspection,
    grants: Grants,
) -> Result<Description, String> {
    let state = HostState::new("inspect".into(), grants, 1 << 20, 64 << 20);
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.memory);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(crate::deadline_ticks(std::time::Duration::from_secs(5)));
    let instance = linker.instantiate_async(&mut store, component).await.map_err(|e| format!("{e:#}"))?;
    let interface = inspection.export.as_str();
    let iface =
        instance.get_export_index(&mut store, None, interface).ok_or_else(|| format!("no export {interface}"))?;
    let func = instance
        .get_export_index(&mut store, Some(&iface), "info")
        .ok_or_else(|| format!("{interface} has no `info`"))?;
    let info = instance
        .get_typed_func::<(), (types::PluginInfo,)>(&mut store, &func)
        .map_err(|e| format!("`info` has the wrong type: {e:#}"))?;
    let (info,) = info.call_async(&mut store, ()).await.map_err(|e| format!("`info` trapped: {e:#}"))?;
    Ok(Description {
        name: info.name,
        version: info.version,
        description: info.description,
        concurrency: match info.concurrency {
            types::Concurrency::Pooled => "pooled".into(),
            types::Concurrency::Single => "single".into(),
        },
    })
}

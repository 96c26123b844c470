//! Integration tests of the plugin host, against real plugins built from source by
//! `make plugins` (first-party, the example, and the hostile ones in `tests/hostile/`).
//! One binary, one module per area.

/// Locating and loading the built plugins.
mod support;

/// The conformance suite against every first-party plugin and the example.
mod conformance;
/// Plugins that trap, spin, hog memory, flood answers or speak another ABI.
mod hostile;
/// Several instances of one plugin over one store.
mod instances;
/// Loading, caching, inspection and grants.
mod loading;
/// Persistence strategy plugins through `WasmStrategy`.
mod persistence;

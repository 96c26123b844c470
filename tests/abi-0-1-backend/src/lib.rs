//! A plugin built against `marsh:plugin@0.1.0`, kept as a fixture: the source of
//! `plugins/backend-disk`, compiled by the SDK's `abi-0-1` feature (so share bytes cross the
//! boundary as copied lists). The host must keep loading it, pass it through `marsh plugin
//! test`, and serve a real client from it for as long as 0.1.0 is supported (ARCHITECTURE.md,
//! "Plugin ABI versions"); `marsh-bench-plugin` measures it beside the 0.2.0 build of the same
//! source, which is what payloads gain.

#[path = "../../../plugins/backend-disk/src/lib.rs"]
pub mod disk;

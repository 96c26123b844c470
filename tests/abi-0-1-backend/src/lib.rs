//! A plugin built against `marsh:plugin@0.1.0`, kept as a fixture: the source of
//! `examples/01-minimal-backend`, compiled by the SDK's `abi-0-1` feature. The host must keep
//! loading it, pass it through `marsh plugin test`, and serve a real client from it for as
//! long as 0.1.0 is supported (ARCHITECTURE.md, "Plugin ABI versions").

#[path = "../../../examples/01-minimal-backend/src/lib.rs"]
pub mod example;

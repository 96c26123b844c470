//! The one place wasmtime's generated bindings live. Nothing outside this crate sees these
//! types: `host.rs` and `payloads.rs` implement the imports, `backend.rs` and `strategy.rs`
//! map the exports onto `marsh_core` types.
//!
//! The root of this module is `marsh:plugin@0.1.0` (frozen); [`v0_2`] is `marsh:plugin@0.2.0`,
//! which imports the 0.1.0 interfaces that did not change. Those are mapped onto the 0.1.0
//! modules here, so each import is implemented once and serves plugins of both versions.

#![allow(missing_docs, missing_debug_implementations, unused_qualifications, clippy::all, reason = "generated code")]

wasmtime::component::bindgen!({
    world: "backend",
    path: "../../plugin-sdk/wit/deps/marsh-plugin-0.1.0",
    imports: { default: async },
    exports: { default: async },
    with: {
        "marsh:plugin/blobs.store": crate::host::StoreHandle,
        "marsh:plugin/blobs.upload": crate::host::UploadHandle,
    },
});

/// The `persistence` world: the shared interfaces are the ones generated above; only the
/// `accountant` import and the `strategy` export are new. Strategies of 0.2.0 export the
/// same 0.1.0 `strategy`, so these bindings call both versions.
pub mod persistence {
    wasmtime::component::bindgen!({
        world: "persistence",
        path: "../../plugin-sdk/wit/deps/marsh-plugin-0.1.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "marsh:plugin/types": super::marsh::plugin::types,
            "marsh:plugin/host": super::marsh::plugin::host,
            "marsh:plugin/seal": super::marsh::plugin::seal,
            "marsh:plugin/blobs": super::marsh::plugin::blobs,
            "marsh:plugin/state": super::marsh::plugin::state,
            "marsh:plugin/accountant.snapshot": crate::host::SnapshotHandle,
            "marsh:plugin/accountant.restore": crate::host::RestoreHandle,
        },
    });
}

/// `marsh:plugin@0.2.0`: the `backend` world with `payloads`, `batches` and the revised
/// `shares` export. Its persistence world adds no export of its own (see [`persistence`]).
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "backend",
        path: "../../plugin-sdk/wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "marsh:plugin/types@0.1.0": super::marsh::plugin::types,
            "marsh:plugin/host@0.1.0": super::marsh::plugin::host,
            "marsh:plugin/seal@0.1.0": super::marsh::plugin::seal,
            "marsh:plugin/blobs@0.1.0": super::marsh::plugin::blobs,
            "marsh:plugin/state@0.1.0": super::marsh::plugin::state,
            "marsh:plugin/payloads.payload": crate::payloads::PayloadHandle,
        },
    });
}

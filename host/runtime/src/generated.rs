//! The one place wasmtime's generated bindings live. Nothing outside this crate sees these
//! types: `host.rs` implements the imports, `backend.rs` maps the exports onto
//! `marsh_core` types.

#![allow(missing_docs, missing_debug_implementations, unused_qualifications, clippy::all, reason = "generated code")]

wasmtime::component::bindgen!({
    world: "backend",
    path: "../../plugin-sdk/wit",
    imports: { default: async },
    exports: { default: async },
    with: {
        "marsh:plugin/blobs.store": crate::host::StoreHandle,
        "marsh:plugin/blobs.upload": crate::host::UploadHandle,
    },
});

/// The `persistence` world: the shared interfaces are the ones generated above; only the
/// `accountant` import and the `strategy` export are new.
pub mod persistence {
    wasmtime::component::bindgen!({
        world: "persistence",
        path: "../../plugin-sdk/wit",
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

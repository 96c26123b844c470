//! A backend plugin built against `marsh:plugin@0.9.0`, a version the host does not
//! implement: loading it must fail with an error naming both versions.

#[cfg(target_arch = "wasm32")]
mod bindings {
    #![allow(missing_docs, unsafe_code, unused_qualifications, clippy::all, reason = "generated code")]
    wit_bindgen::generate!({ path: "wit", world: "backend" });

    struct WrongAbi;

    impl exports::marsh::plugin::shares::Guest for WrongAbi {
        fn info() -> String {
            "wrong-abi".into()
        }
    }

    export!(WrongAbi);
}

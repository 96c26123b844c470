//! A hostile backend plugin that panics (a wasm trap) on every `write`.
include!("../../base.rs");

const NAME: &str = "hostile-trap";

fn on_write(_data: Payload) -> BackendResult<()> {
    panic!("hostile-trap: exploding on purpose")
}

fn on_read(_len: u64) -> BackendResult<Vec<u8>> {
    Ok(Vec::new())
}

//! A hostile backend plugin that answers every `read` with far more bytes than asked for: 1 MiB,
//! which a payload may hold (so the host's check of the answer's length is what refuses it;
//! a payload past the per-call bound is refused when it is made, see `payloads.rs`).
include!("../../base.rs");

const NAME: &str = "hostile-flood";

fn on_write(_data: Payload) -> BackendResult<()> {
    Ok(())
}

fn on_read(_len: u64) -> BackendResult<Vec<u8>> {
    Ok(vec![0x5A; 1 << 20])
}

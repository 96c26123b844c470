//! A hostile backend plugin that answers every `read` with far more bytes than asked for.
include!("../../base.rs");

const NAME: &str = "hostile-flood";

fn on_write(_data: &[u8]) -> BackendResult<()> {
    Ok(())
}

fn on_read(_len: u64) -> BackendResult<Vec<u8>> {
    Ok(vec![0x5A; 48 << 20])
}

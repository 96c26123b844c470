//! A hostile backend plugin that loops forever in `write`, to meet the call deadline.
include!("../../base.rs");

const NAME: &str = "hostile-spin";

fn on_write(data: Payload) -> BackendResult<()> {
    let mut x = data.len() | 1;
    loop {
        // Opaque to the optimiser, so the loop cannot be proven endless and removed.
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

fn on_read(_len: u64) -> BackendResult<Vec<u8>> {
    Ok(Vec::new())
}

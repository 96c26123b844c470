//! A hostile backend plugin that grows its memory without bound in `write`, to meet the
//! memory cap.
include!("../../base.rs");

const NAME: &str = "hostile-hog";

fn on_write(_data: Payload) -> BackendResult<()> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the growth is real, not a reservation.
        hoard.push(vec![0xAB; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

fn on_read(_len: u64) -> BackendResult<Vec<u8>> {
    Ok(Vec::new())
}

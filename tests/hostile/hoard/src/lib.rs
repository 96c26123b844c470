//! A backend plugin that keeps every payload it is handed and never lets one go: the host
//! memory it holds is outside its memory cap, so the host must bound it another way.

include!("../../base.rs");

const NAME: &str = "hostile-hoard";

std::thread_local! {
    static HOARD: std::cell::RefCell<Vec<Payload>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn on_write(data: Payload) -> BackendResult<()> {
    HOARD.with(|h| h.borrow_mut().push(data));
    Ok(())
}

fn on_read(_len: u64) -> BackendResult<Vec<u8>> {
    Ok(Vec::new())
}

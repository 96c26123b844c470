//! SQLite work (through the accountant) called from async request handlers. On the node's
//! multi-thread runtime it runs under `block_in_place`: while a statement runs, or waits for
//! the connection lock another request holds, this worker's other tasks move to another
//! thread instead of waiting behind it. On a current-thread runtime (unit tests) there is no
//! other thread to move to, and the call runs in place.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run `f`, which may block on SQLite, without stalling the other tasks of this worker.
pub(crate) fn sqlite<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

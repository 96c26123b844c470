//! SQLite work (through the accountant) called from async request handlers. On the node's
//! multi-thread runtime it runs under `block_in_place`: while a statement runs, or waits for
//! the connection lock another request holds, this worker's other tasks move to another
//! thread instead of waiting behind it. On a current-thread runtime (unit tests) there is no
//! other thread to move to, and the call runs in place.
//!
//! A request's short call ([`sqlite_short`]: a renewal's statements) runs in place when no one
//! holds the accountant's connection: handing the worker's tasks to another thread costs more
//! than the statements (perf over 20,000 renewals: 45% of the server's samples in futex waits,
//! wake-ups and context switches), and in place renewals ran 18% faster on 19% less CPU.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run `f`, which may block on SQLite, without stalling the other tasks of this worker.
pub(crate) fn sqlite<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Run `f`, a few short statements on `accountant`: in place when no one holds its connection,
/// else as [`sqlite`]. Not for calls that sync to disk or scan.
pub(crate) fn sqlite_short<T>(accountant: &marsh_accountant::Accountant, f: impl FnOnce() -> T) -> T {
    if accountant.idle() { f() } else { sqlite(f) }
}

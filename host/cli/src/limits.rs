//! Process limits for a serving node.
//!
//! Every connection, open store file and SQLite handle is a descriptor. The soft
//! `RLIMIT_NOFILE` a service inherits is often 1024, which a few dozen new TLS connections a
//! second can exhaust, after which stores and the database fail to open. `marsh run` raises
//! the soft limit to the hard limit (the most an unprivileged process may take); the listener
//! keeps accepting after `EMFILE` once descriptors are free again.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raise the soft descriptor limit to the hard one; returns the limit now in force.
pub fn raise_descriptor_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return current;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: maximum, maximum }) {
        Ok(()) => maximum,
        Err(e) => {
            tracing::warn!("could not raise the open-file limit from {current:?} to {maximum:?}: {e}");
            current
        }
    }
}

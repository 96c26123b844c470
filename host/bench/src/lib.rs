//! Benchmarks of marsh; the binaries under `src/bin/` are run by `make bench`, never by the
//! tests. This library holds what they share: a GBS client that pins the server by SPKI hash
//! the way the Tahoe client does ([`client`]), process measurements from `/proc` ([`proc`]),
//! and a fresh node of a given binary ([`node`]: the CLI tests' own fixture).

pub use marsh_gbs_client as client;
pub use marsh_testnode as node;
pub mod proc;

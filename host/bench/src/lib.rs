//! Benchmarks of marsh; the binaries under `src/bin/` are run by `make bench`, never by the
//! tests. This library holds what they share: a GBS client that pins the server by SPKI hash
//! the way the Tahoe client does ([`client`]), and process measurements from `/proc` ([`proc`]).

pub use marsh_gbs_client as client;
pub mod proc;

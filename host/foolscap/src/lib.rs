//! A Foolscap client in Rust, as small as publishing a storage announcement to a Tahoe-LAFS
//! introducer needs and no smaller than the protocol demands (issue 15). This first part is the
//! wire codec, [`banana`]; the connection (TLS with Foolscap's certificate rules, negotiation)
//! and remote calls build on it.
//!
//! Architecture invariant: everything here treats the peer as hostile. Every length and count
//! read from the wire is bounded before anything is allocated for it, and no input panics.

pub mod banana;

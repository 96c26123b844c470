//! The command line's integration tests: marsh run as an operator runs it (`marsh init`,
//! `marsh config`, `marsh run` as a process, clients over the network), one module per area, all
//! in one binary so the node library, wasmtime and the S3 SDK are linked once. Every node comes
//! from one fixture, `marsh-testnode` (the benchmarks use it too), through [`common`].

mod common;

/// Hostile clients against a live node, with its memory and descriptors read from `/proc`.
mod abuse;
/// Named accounts from the command line.
mod account;
/// `marsh adopt` and `marsh export-tahoe` on a Tahoe node directory.
mod adopt;
/// Read-only and the byte cap set on a running node.
mod capacity;
/// Mutable writes killed with SIGKILL at random points.
mod crash;
/// The node directory through an hour's workload; a recovery killed halfway.
mod durability;
/// Three nodes keeping their accounting on one PostgreSQL database.
mod fleet;
/// `marsh gc`.
mod gc;
/// `marsh init`, `config`, `announce`, `run`, `upgrade`.
mod node;
/// `marsh plugin test` and `inspect`.
mod plugin;
/// Shares and accounting on SeaweedFS.
mod s3;
/// The systemd unit.
mod service;
/// The web listener and `marsh status`.
mod web;

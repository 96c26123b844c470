//! The marsh node as a library: what `marsh run` assembles, and the parts the other commands,
//! the integration tests and the benchmarks use. The `marsh` binary (`main.rs` and `cmd/`)
//! only parses arguments and prints.
//!
//! - [`Node`] opens a node directory (identity, typed config) and [`Node::start`]s it:
//!   [`Running`], stopped by [`Running::shutdown`];
//! - [`stores`]: opening and claiming the configured blob stores, and the check that refuses a
//!   config change that would hide shares;
//! - [`adopt`] and [`export`]: moving a Tahoe-LAFS storage node to marsh and back;
//! - [`backend`] and [`persistence`]: starting the two plugins with the node's limits;
//!   recovery; handing changes over;
//! - [`conformance`]: starting a wasm strategy for the persistence conformance kit;
//! - [`tasks`]: the periodic work under one supervisor;
//! - [`introducers`]: keeping the node's announcement published at the grid's introducers;
//! - [`servers_yaml`]: a node's entry in a client's `servers.yaml`;
//! - [`Error`]: every failure, typed, with what to do about it.
//!
//! This package (library and binary) and `marsh-bench` are the only ones that compile the S3
//! driver (see ARCHITECTURE.md).

pub mod adopt;
pub mod backend;
pub mod conformance;
mod error;
pub mod export;
pub mod introducers;
pub mod node;
pub mod persistence;
pub mod plugins;
pub mod servers_yaml;
pub mod stores;
pub mod tasks;
pub mod web;

pub use error::Error;
pub use node::{Node, Running, Stopped};

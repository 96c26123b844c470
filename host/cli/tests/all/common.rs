//! What the CLI tests share: the `marsh` binary this package built, and `marsh-testnode`'s node
//! fixture over it ([`TestNode::with`] and [`TestNode::new`] through [`Fixture`]).

use std::path::Path;
use std::process::Output;

pub use marsh_testnode::{Running, TestNode, free_port, ok, text, wait_for};

/// The `marsh` binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_marsh");

/// Run the binary with `args`.
pub fn marsh(args: &[&str]) -> Output {
    marsh_testnode::command(Path::new(BINARY), args)
}

/// Nodes of the binary under test.
pub trait Fixture: Sized {
    /// `marsh init`, then `marsh config set` for each of `config`.
    fn with(config: &[(&str, &str)]) -> Self;
    /// A node with the default config.
    fn new() -> Self;
}

impl Fixture for TestNode {
    fn with(config: &[(&str, &str)]) -> Self {
        TestNode::init(Path::new(BINARY), config)
    }

    fn new() -> Self {
        TestNode::with(&[])
    }
}

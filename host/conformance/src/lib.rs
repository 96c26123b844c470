//! The conformance suites: every case written once and run the same way against every
//! first-party plugin and any third-party `.wasm` (`marsh plugin test PATH.wasm`).
//!
//! - Backends: cases over [`marsh_core::Backend`], also run against the native in-memory
//!   [`reference`]. They use storage indexes fresh to each run, so they can run against a
//!   backend that already holds data, and check behaviour the protocol server relies on, not
//!   layout.
//! - Persistence strategies ([`strategy`]): cases over a strategy a [`strategy::Harness`]
//!   starts on a scratch store, with real accounting databases.
//!
//! This crate knows nothing of wasm: whoever runs it supplies the backend or the harness.

mod cases;
pub mod reference;
pub mod strategy;
mod strategy_cases;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use marsh_core::{Backend, StorageIndex};
use sha2::{Digest, Sha256};

/// What a case returns.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Stable name, printed in reports.
    pub name: &'static str,
    run: for<'a> fn(&'a dyn Backend, &'a Fresh) -> CaseFuture<'a>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every case, in the order they run.
pub fn cases() -> &'static [Case] {
    cases::ALL
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: &'static str,
    /// `Err` holds what went wrong.
    pub outcome: Result<(), String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One entry per case run.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_ok()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// Storage indexes fresh to one run of one case.
#[derive(Debug)]
pub struct Fresh {
    seed: [u8; 32],
}

impl Fresh {
    fn new(case: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        h.update(nanos.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(case.as_bytes());
        Fresh { seed: h.finalize().into() }
    }

    /// The `n`th storage index of this case run.
    pub fn si(&self, n: u8) -> StorageIndex {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&self.seed[..16]);
        bytes[15] = n;
        StorageIndex::from_bytes(bytes)
    }
}

/// Run the cases whose name contains `filter` (all when empty), reporting each as it ends.
pub async fn run(backend: &dyn Backend, filter: &str, mut on_result: impl FnMut(&CaseResult)) -> Report {
    let mut report = Report::default();
    for case in cases().iter().filter(|c| c.name.contains(filter)) {
        let fresh = Fresh::new(case.name);
        let start = Instant::now();
        let outcome = (case.run)(backend, &fresh).await;
        let result = CaseResult { name: case.name, outcome, elapsed: start.elapsed() };
        on_result(&result);
        report.results.push(result);
    }
    report
}

/// Deterministic pseudo-random bytes for chunk `n` of a test share.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

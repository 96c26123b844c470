//! The persistence conformance kit: what every accountant persistence strategy must do, as
//! cases over a [`Strategy`] that a [`Harness`] starts on a scratch store, written once and run
//! the same way against every first-party strategy and any third-party `.wasm` (`marsh plugin
//! test STRATEGY.wasm`).
//!
//! Each case builds a real accounting database ([`marsh_accountant::Accountant`], in memory)
//! with accounts, attributes, a revocation, leases, renewals and write enablers, hands its
//! change log over as the node's persister does, and then plays a machine loss: a fresh
//! strategy instance recovering into an empty database, compared with the original by what the
//! node reads of it ([`Dump`]).
//!
//! A strategy that keeps nothing outside the node (`persistence-local`) is found out by the
//! first case, and the cases about recovering what was recorded are then reported as not
//! applying to it, each by name: never skipped in silence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use marsh_accountant::{AccountId, Accountant, Attribute, Attributes, Logged};
use marsh_core::{ShareId, ShareNumber, StorageIndex};
use marsh_stores::{BlobStore, MemoryStore};

/// What a strategy wants done at start-up, as the kit compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Serve from the local database.
    UseLocal,
    /// Recover now (automatic recovery was allowed).
    Recover,
    /// Refused: the operator must run `marsh recover`.
    RecoveryNeeded,
}

/// What a recovery read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Changes applied.
    pub changes_read: u64,
    /// Snapshots restored.
    pub snapshots_read: u64,
    /// Blobs skipped because they did not unseal or parse.
    pub tampered: u64,
    /// Missing sequence ranges.
    pub gaps: Vec<String>,
}

/// Why a strategy call failed, as far as the kit tells failures apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A sealed blob did not authenticate.
    Tampered(String),
    /// Changes are missing.
    Gap(String),
    /// Anything else (the store, a refusal, a fault), with its message.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Tampered(m) => write!(f, "tampered: {m}"),
            Failure::Gap(m) => write!(f, "gap: {m}"),
            Failure::Other(m) => f.write_str(m),
        }
    }
}

/// A started strategy under test.
#[async_trait::async_trait]
pub trait Strategy: Send + Sync {
    /// `startup` with the local database's state.
    async fn startup(&self, present: bool, last_sequence: u64, auto_recover: bool) -> Result<Plan, Failure>;
    /// `record` changes numbered from `first`.
    async fn record(&self, first: u64, changes: Vec<Vec<u8>>) -> Result<(), Failure>;
    /// `recover` into the database the harness granted.
    async fn recover(&self) -> Result<Summary, Failure>;
}

/// Starts the strategy under test.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// A fresh instance granted `store` (as every store it asks for), sealing with a node key
    /// made from `key`, recovering into `target`, adding each progress report to `progress`.
    async fn start(
        &self,
        store: Arc<dyn BlobStore>,
        key: [u8; 32],
        target: Arc<Accountant>,
        progress: Arc<AtomicU64>,
    ) -> Result<Box<dyn Strategy>, String>;
}

/// The node key every case uses; [`FOREIGN_KEY`] is another node's.
pub const NODE_KEY: [u8; 32] = [0x5a; 32];
/// Another node's key.
pub const FOREIGN_KEY: [u8; 32] = [0xa5; 32];

/// A share as the node reads it: its holder's name, and its leases (renew hash, expiry,
/// account).
pub type ShareView = (Option<String>, Vec<([u8; 32], u64, AccountId)>);

/// What the node reads of an accounting database, for comparing two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// Accounts by name: (created, revoked, attributes, usage, lease count).
    pub accounts: BTreeMap<String, (u64, Option<u64>, Attributes, u64, u64)>,
    /// For each share the workload touched: its holder, and its leases (renew hash, expiry,
    /// account).
    pub shares: Vec<ShareView>,
    /// For each write enabler the workload set: whether the database accepts it.
    pub enablers: Vec<Option<bool>>,
}

/// The shares and enablers a [`workload`] touched, to read them back.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    shares: Vec<ShareId>,
    enablers: Vec<(StorageIndex, ShareNumber, Vec<u8>)>,
}

fn e<T>(r: Result<T, marsh_accountant::AccountantError>) -> Result<T, String> {
    r.map_err(|e| format!("the test database: {e}"))
}

/// Read `a` as the node would.
pub fn dump(a: &Accountant, touched: &Touched) -> Result<Dump, String> {
    let accounts = e(a.accounts())?
        .into_iter()
        .map(|x| (x.name, (x.created, x.revoked, x.attributes, x.usage, x.leases)))
        .collect();
    let mut shares = Vec::new();
    for s in &touched.shares {
        let holder = e(a.holder(s))?.map(|h| h.name);
        let leases = e(a.leases(s))?.into_iter().map(|l| (l.renew_hash, l.expires, l.account)).collect();
        shares.push((holder, leases));
    }
    let enablers =
        touched.enablers.iter().map(|(si, n, we)| e(a.check_write_enabler(si, *n, we))).collect::<Result<_, _>>()?;
    Ok(Dump { accounts, shares, enablers })
}

/// Make `rounds` rounds of accounting changes in `a`: accounts with attributes, leases added
/// and renewed by two accounts, shares recorded and forgotten, write enablers, a revocation.
pub fn workload(a: &Accountant, tag: u8, rounds: u8) -> Result<Touched, String> {
    let now = 1_700_000_000 + u64::from(tag) * 1000;
    let mut touched = Touched::default();
    let name = |base: &str| format!("{base}-{tag}");
    let quota = Attributes { write: true, quota: Some(50_000_000), nickname: Some("Quota Holder".into()) };
    let with_quota = e(a.create_account(&name("alice"), &quota, now))?.account.id;
    let plain = e(a.create_account(&name("bob"), &Attributes::default(), now + 1))?.account.id;
    for round in 0..rounds {
        let si = StorageIndex::from_bytes([tag, round, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
        for n in 0..3u8 {
            let share = ShareId::immutable(si, ShareNumber(u16::from(n)));
            let who = if (round + n) % 2 == 0 { with_quota } else { AccountId::ANONYMOUS };
            e(a.record_share(who, &share, 1000 + u64::from(round) * 10 + u64::from(n)))?;
            let secret = [tag, round, n, 1];
            e(a.add_or_renew(who, &share, &secret, &[tag, round, n, 2], now + u64::from(round)))?;
            e(a.add_or_renew(plain, &share, &[tag, round, n, 3], &[tag, round, n, 4], now + 5))?;
            // A renewal of the first lease, later.
            e(a.add_or_renew(who, &share, &secret, &[tag, round, n, 2], now + 100 + u64::from(round)))?;
            touched.shares.push(share);
        }
        let enabler = vec![tag, round, 0xee];
        e(a.set_write_enabler(&si, ShareNumber(9), &enabler))?;
        touched.enablers.push((si, ShareNumber(9), enabler));
        touched.enablers.push((si, ShareNumber(9), vec![0xba, 0xd0]));
        let mutable = ShareId::mutable(si, ShareNumber(9));
        e(a.record_share(with_quota, &mutable, 4096))?;
        touched.shares.push(mutable);
        if round % 3 == 2 {
            e(a.forget_share(&touched.shares[touched.shares.len() - 4]))?;
        }
    }
    e(a.set_attribute(&name("alice"), Attribute::Quota(Some(60_000_000))))?;
    e(a.set_attribute(&name("bob"), Attribute::Write(false)))?;
    e(a.set_attribute(&name("bob"), Attribute::Nickname(Some("renamed".into()))))?;
    e(a.revoke(&name("bob"), now + 500))?;
    Ok(touched)
}

/// The changes `a` logged after `after`.
pub fn changes(a: &Accountant, after: u64) -> Result<Vec<Logged>, String> {
    e(a.changes_after(after, usize::MAX >> 1))
}

/// Hand `a`'s changes after `after` to `s` in runs of `batch`, as the persister does.
pub async fn persist(a: &Accountant, s: &dyn Strategy, after: u64, batch: usize) -> Result<u64, String> {
    let all = changes(a, after)?;
    for run in all.chunks(batch.max(1)) {
        let first = run[0].seq;
        s.record(first, run.iter().map(Logged::strategy_blob).collect())
            .await
            .map_err(|f| format!("record({first}, {} changes): {f}", run.len()))?;
    }
    Ok(all.last().map_or(after, |c| c.seq))
}

/// A fresh scratch store and everything a case needs to start strategies on it.
pub struct Scene<'h> {
    harness: &'h dyn Harness,
    /// The scratch store the strategy is granted.
    pub store: MemoryStore,
    /// Progress reports seen.
    pub progress: Arc<AtomicU64>,
    /// Whether the strategy keeps anything outside the node (found by the first case).
    pub durable: bool,
}

impl std::fmt::Debug for Scene<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scene").field("durable", &self.durable).finish_non_exhaustive()
    }
}

impl Scene<'_> {
    /// A strategy on this scene's store with the node key, recovering into `target`.
    pub async fn start(&self, target: &Arc<Accountant>) -> Result<Box<dyn Strategy>, String> {
        self.start_keyed(target, NODE_KEY).await
    }

    /// The same with another node key.
    pub async fn start_keyed(&self, target: &Arc<Accountant>, key: [u8; 32]) -> Result<Box<dyn Strategy>, String> {
        self.harness.start(Arc::new(self.store.clone()), key, target.clone(), self.progress.clone()).await
    }

    /// An empty database.
    pub fn database(&self) -> Result<Arc<Accountant>, String> {
        Ok(Arc::new(e(Accountant::in_memory())?))
    }

    /// Every key the strategy wrote.
    pub async fn keys(&self) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.list("", after.as_deref(), 1000).await.map_err(|e| e.to_string())?;
            keys.extend(page.keys);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(keys),
            }
        }
    }

    /// Progress reports so far.
    pub fn progress_reports(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It held.
    Passed,
    /// It did not: what went wrong.
    Failed(String),
    /// It does not apply to a strategy that keeps nothing outside the node.
    NotApplicable,
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct StrategyResult {
    /// The case's name.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// A run's results.
#[derive(Debug, Clone, Default)]
pub struct StrategyReport {
    /// Whether the strategy keeps anything outside the node.
    pub durable: bool,
    /// One per case run.
    pub results: Vec<StrategyResult>,
}

impl StrategyReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome == Outcome::Passed).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| matches!(r.outcome, Outcome::Failed(_))).count()
    }

    /// Cases that did not apply.
    pub fn not_applicable(&self) -> usize {
        self.results.iter().filter(|r| r.outcome == Outcome::NotApplicable).count()
    }
}

/// One case: its name, whether it needs a strategy that keeps something, and its body.
pub(crate) struct StrategyCase {
    pub name: &'static str,
    pub durable_only: bool,
    pub run: for<'a> fn(&'a Scene<'a>) -> crate::CaseFuture<'a>,
}

/// Every strategy case, in the order they run.
pub fn case_names() -> Vec<&'static str> {
    crate::strategy_cases::ALL.iter().map(|c| c.name).collect()
}

/// Run the cases whose name contains `filter` against strategies `harness` starts, reporting
/// each as it ends. The first case (always run) finds out whether the strategy keeps anything.
pub async fn run(harness: &dyn Harness, filter: &str, mut on_result: impl FnMut(&StrategyResult)) -> StrategyReport {
    let mut report = StrategyReport { durable: true, results: Vec::new() };
    for (i, case) in crate::strategy_cases::ALL.iter().enumerate() {
        if i > 0 && !case.name.contains(filter) {
            continue;
        }
        let scene =
            Scene { harness, store: MemoryStore::new("shares"), progress: Arc::default(), durable: report.durable };
        let start = Instant::now();
        let outcome = if case.durable_only && !report.durable {
            Outcome::NotApplicable
        } else if i == 0 {
            match crate::strategy_cases::keeps_anything(&scene).await {
                Ok(durable) => {
                    report.durable = durable;
                    Outcome::Passed
                }
                Err(e) => Outcome::Failed(e),
            }
        } else {
            match (case.run)(&scene).await {
                Ok(()) => Outcome::Passed,
                Err(e) => Outcome::Failed(e),
            }
        };
        let result = StrategyResult { name: case.name, outcome, elapsed: start.elapsed() };
        on_result(&result);
        report.results.push(result);
    }
    report
}

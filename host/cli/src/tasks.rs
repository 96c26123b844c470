//! The node's periodic work under one [`Supervisor`]: the persister (hands logged accounting
//! changes to the strategy every `persistence.max-delay`), lease expiry (every
//! `expire.interval` with `expire.enabled`) and the backend's sweep of leftovers (every
//! `backend.sweep-interval`), and the capacity follower (re-reads `storage.readonly` and
//! `storage.max-bytes` every [`CAPACITY_EVERY`]).
//!
//! One cancellation path: [`Supervisor::shutdown`] tells every task to stop; a task stops at its
//! next wait, never in the middle of a pass (a hand-over, a collection, a sweep), and one still
//! busy after [`SHUTDOWN_GRACE`] is aborted. When each is first due is kept in node state
//! (the backend's first store, never NODE_DIR), so a node restarted often still runs each on
//! schedule, neither at every start nor never.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use marsh_accountant::Accountant;
use marsh_core::{Backend, unix_now};
use marsh_node::{CapacitySettings, ExpireMode, ExpireSettings, NodeDir};
use marsh_runtime::WasmStrategy;
use marsh_server::gc::{self, ExpiryMode, ExpiryPolicy, GcReport};
use marsh_server::{Capacity, SlotLocks, StorageService};
use marsh_stores::state::StateStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the periodic tasks did since the node started, for `/metrics` and the status page.
#[derive(Debug, Default)]
pub struct TaskStats {
    /// Accounting changes handed to the persistence strategy.
    pub persisted: AtomicU64,
    /// Hand-overs that failed (retried at the next tick).
    pub persist_failures: AtomicU64,
    /// When the last hand-over succeeded, seconds since the epoch (0: not yet).
    pub last_persisted: AtomicU64,
    /// Sweeps run.
    pub sweeps: AtomicU64,
    /// Leftovers the sweeps removed.
    pub swept: AtomicU64,
    /// When the last sweep ran (0: not yet).
    pub last_sweep: AtomicU64,
    /// Lease-expiry passes run.
    pub expiry_passes: AtomicU64,
    /// Shares they deleted.
    pub expired: AtomicU64,
    /// Bytes of those shares.
    pub expired_bytes: AtomicU64,
    /// When the last pass ran (0: not yet).
    pub last_expiry: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The longest the persister hands changes over before it looks for a stop again.
pub const PERSIST_SLICE: Duration = Duration::from_secs(1);

/// How often a running node re-reads `storage.readonly` and `storage.max-bytes`.
pub const CAPACITY_EVERY: Duration = Duration::from_secs(5);

/// How long [`Supervisor::shutdown`] waits for a task busy with a pass before aborting it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A task's view of the shutdown signal.
#[derive(Debug, Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Wait until shutdown is asked for.
    pub async fn stopped(&mut self) {
        while !self.asked() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether shutdown was asked for.
    pub fn asked(&self) -> bool {
        *self.0.borrow()
    }

    /// Wait `delay`; `false` if shutdown was asked for first (the task should return).
    pub async fn sleep(&mut self, delay: Duration) -> bool {
        if self.asked() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            _ = self.0.changed() => false,
        }
    }
}

/// The periodic tasks of a running node.
#[derive(Debug)]
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    grace: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::with_grace(SHUTDOWN_GRACE)
    }
}

impl Supervisor {
    /// A supervisor whose shutdown waits `grace` for a busy task before aborting it.
    pub fn with_grace(grace: Duration) -> Self {
        Supervisor { stop: watch::channel(false).0, tasks: Vec::new(), grace }
    }

    /// Run `task` until it returns; it should return when its [`Stopping`] says so.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(Stopping) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stopping = Stopping(self.stop.subscribe());
        self.tasks.push((name, tokio::spawn(task(stopping))));
    }

    /// Names of the tasks running.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(n, _)| *n).collect()
    }

    /// Stop every task: each finishes the pass it is in (up to the grace) and returns; one still
    /// busy after it is aborted.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        for (name, mut task) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("{name} did not stop within {} s; aborted", self.grace.as_secs());
                task.abort();
                let _ = task.await;
            }
        }
    }
}

/// How long until periodic task `name` is due: `interval` after it last ran (node state `name`),
/// and never sooner than `settle` after start.
async fn first_delay(state: Option<&StateStore>, name: &str, interval: Duration, settle: Duration) -> Duration {
    let last = match state {
        Some(state) => match state.get(name).await {
            Ok(v) => v.and_then(|v| <[u8; 8]>::try_from(v).ok()).map(u64::from_be_bytes),
            Err(e) => {
                tracing::warn!("reading node state: {e}");
                None
            }
        },
        None => None,
    };
    let due_in = last.map_or(0, |last| last.saturating_add(interval.as_secs()).saturating_sub(unix_now()));
    Duration::from_secs(due_in).max(settle)
}

/// Note in node state that periodic task `name` ran now.
async fn ran(state: Option<&StateStore>, name: &str) {
    if let Some(state) = state
        && let Err(e) = state.put(name, &unix_now().to_be_bytes()).await
    {
        tracing::warn!("writing node state: {e}");
    }
}

/// Hand changes to the strategy every `every`.
pub fn persister(
    supervisor: &mut Supervisor,
    accountant: Arc<Accountant>,
    strategy: Arc<WasmStrategy>,
    hand_over: Option<crate::persistence::HandOver>,
    every: Duration,
    stats: Arc<TaskStats>,
) {
    supervisor.spawn("persister", move |mut stopping| async move {
        while stopping.sleep(every).await {
            // A backlog is handed over a slice at a time, so a stop is seen within a slice.
            loop {
                let until = Some(std::time::Instant::now() + PERSIST_SLICE);
                match crate::persistence::flush_until(&accountant, &strategy, hand_over.as_ref(), until).await {
                    Ok(0) => break,
                    Ok(n) => {
                        add(&stats.persisted, n);
                        stats.last_persisted.store(unix_now(), Ordering::Relaxed);
                        tracing::debug!("handed {n} accounting changes to the persistence plugin");
                    }
                    Err(e) => {
                        add(&stats.persist_failures, 1);
                        tracing::warn!("persisting accounting changes failed (will retry): {e}");
                        break;
                    }
                }
                let behind = accountant.unpersisted().is_ok_and(|n| n > 0);
                if !behind || stopping.asked() {
                    break;
                }
            }
        }
    })
}

/// How often a node on a fleet's PostgreSQL accounting reports its free space and that it is
/// alive (`marsh fleet status` shows when each was last seen).
pub const FLEET_EVERY: Duration = Duration::from_secs(10);

/// Report to the fleet's register every [`FLEET_EVERY`] (accounting on PostgreSQL only).
pub fn fleet_heartbeat(
    supervisor: &mut Supervisor,
    accountant: Arc<Accountant>,
    server_id: String,
    backend: Arc<dyn Backend>,
) {
    if accountant.engine() != marsh_sql::Engine::Postgres {
        return;
    }
    supervisor.spawn("fleet heartbeat", move |mut stopping| async move {
        while stopping.sleep(FLEET_EVERY).await {
            let available = backend.usage().await.ok().and_then(|u| u.available);
            let (accountant, id) = (accountant.clone(), server_id.clone());
            let beat = tokio::task::spawn_blocking(move || accountant.heartbeat(&id, available, unix_now())).await;
            match beat.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
                Ok(()) => {}
                Err(e) => tracing::warn!("reporting to the fleet's register: {e}"),
            }
        }
    })
}

/// `storage.readonly` and `storage.max-bytes` as the server takes them.
pub fn capacity(c: &CapacitySettings) -> Capacity {
    Capacity { readonly: c.readonly, max_bytes: c.max_bytes }
}

/// Follow `marsh config set storage.readonly|max-bytes` in a running node: the node directory's
/// config is read (never written) every [`CAPACITY_EVERY`] and a change applied at once.
pub fn capacity_follower(supervisor: &mut Supervisor, dir: NodeDir, service: Arc<StorageService>) {
    supervisor.spawn("capacity", move |mut stopping| async move {
        while stopping.sleep(CAPACITY_EVERY).await {
            let dir = dir.clone();
            let read = tokio::task::spawn_blocking(move || dir.config().map_err(|e| e.to_string())).await;
            let now = match read.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(config) => capacity(&config.capacity),
                Err(e) => {
                    tracing::warn!("re-reading the node's config: {e}");
                    continue;
                }
            };
            if now != service.capacity() {
                tracing::info!(readonly = now.readonly, max_bytes = ?now.max_bytes, "capacity settings changed");
                service.set_capacity(now);
            }
        }
    })
}

/// Tahoe's `cpu_monitor`: the process's CPU time sampled every minute ([`cpu_monitor`]), the
/// newest 16 samples kept, averaged over the last 1, 5 and 15 minutes as the reference does.
#[derive(Debug, Default)]
pub struct CpuMonitor(std::sync::Mutex<std::collections::VecDeque<(f64, f64)>>);

impl CpuMonitor {
    /// Take a sample: wall-clock seconds and CPU seconds now.
    pub fn check(&self) {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.sample(wall, cpu_seconds());
    }

    fn sample(&self, wall: f64, cpu: f64) {
        let mut samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == 16 {
            samples.pop_front();
        }
        samples.push_back((wall, cpu));
    }

    /// The share of one CPU used over the last `minutes` samples' span; `None` until there
    /// are `minutes + 1` samples.
    pub fn average(&self, minutes: usize) -> Option<f64> {
        let samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let last = samples.back()?;
        let first = samples.get(samples.len().checked_sub(minutes + 1)?)?;
        let wall = last.0 - first.0;
        (wall > 0.0).then(|| (last.1 - first.1) / wall)
    }
}

/// CPU seconds process `pid` (a number, or `self`) has used, user and system, from
/// `/proc/PID/stat`, whose ticks are Linux's fixed USER_HZ of 100; `None` where it cannot be
/// read. The benchmarks read the node's with it too.
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    process_cpu_split(pid).map(|(user, kernel)| user + kernel)
}

/// CPU seconds a process has used, (in user space, in the kernel), from `/proc/PID/stat`.
pub fn process_cpu_split(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some((ticks(11)? as f64 / 100.0, ticks(12)? as f64 / 100.0))
}

/// CPU seconds this process has used; 0 where that cannot be read.
pub fn cpu_seconds() -> f64 {
    process_cpu_seconds("self").unwrap_or(0.0)
}

#[cfg(test)]
#[test]
fn a_process_cpu_time_is_read_split_into_user_and_kernel() {
    let (user0, kernel0) = process_cpu_split("self").expect("this process's /proc/self/stat");
    let spinning = std::time::Instant::now();
    let mut x = 0u64;
    // Spin in user space until the next 10 ms tick lands there (bounded, for a starved machine).
    while process_cpu_split("self").is_some_and(|(user, _)| user <= user0) {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(spinning.elapsed() < Duration::from_secs(60), "no user CPU time counted while spinning");
    }
    let (user1, kernel1) = process_cpu_split("self").unwrap();
    assert!(user1 > user0 && kernel1 >= kernel0);
    let total = process_cpu_seconds("self").unwrap();
    assert!(total >= user1 + kernel1, "the total is the sum, read a moment later");
    assert_eq!(process_cpu_split("no-such-process"), None);
}

#[cfg(test)]
#[test]
fn cpu_averages_follow_the_reference() {
    let m = CpuMonitor::default();
    assert_eq!(m.average(1), None);
    for i in 0..20 {
        // Half a CPU for 15 minutes, then a full one.
        let cpu = if i <= 15 { i as f64 * 30.0 } else { 450.0 + (i - 15) as f64 * 60.0 };
        m.sample(i as f64 * 60.0, cpu);
    }
    assert_eq!(m.average(1), Some(1.0));
    assert_eq!(m.average(5), Some((690.0 - 420.0) / 300.0));
    assert_eq!(m.average(15), Some((690.0 - 120.0) / 900.0));
    assert_eq!(m.average(16), None, "16 samples kept");
}

/// Sample the process's CPU time every minute for Tahoe's `cpu_monitor` averages, the first
/// at once.
pub fn cpu_monitor(supervisor: &mut Supervisor, monitor: Arc<CpuMonitor>) {
    supervisor.spawn("cpu monitor", move |mut stopping| async move {
        monitor.check();
        while stopping.sleep(Duration::from_secs(60)).await {
            monitor.check();
        }
    })
}

/// The policy `expire.*` describes.
pub fn expiry_policy(expire: &ExpireSettings) -> ExpiryPolicy {
    ExpiryPolicy {
        mode: match expire.mode {
            ExpireMode::Age { override_seconds } => ExpiryMode::Age { override_seconds },
            ExpireMode::CutoffDate(date) => ExpiryMode::CutoffDate(date),
        },
        immutable: expire.immutable,
        mutable: expire.mutable,
    }
}

/// One line about a collection pass.
pub fn describe_expiry(r: &GcReport, dry_run: bool) -> String {
    let busy = match r.busy {
        0 => String::new(),
        n => format!("; {n} storage indexes busy throughout, left to the next pass"),
    };
    format!(
        "{} shares whose leases ran out examined: {} {} ({} bytes), {} renewed meanwhile (kept); shares with no lease record are never collected{busy}",
        r.examined,
        r.expired.len(),
        if dry_run { "expired, would be deleted" } else { "expired and deleted" },
        r.expired_bytes,
        r.leased,
    )
}

/// With `expire.enabled`, a lease-expiry pass every `expire.interval`: the first five minutes
/// after start, or later if the last pass (node state `gc-last-run`) was more recent.
pub fn collector(
    supervisor: &mut Supervisor,
    expire: &ExpireSettings,
    backend: Arc<dyn Backend>,
    accountant: Arc<Accountant>,
    locks: SlotLocks,
    state: Option<StateStore>,
    stats: Arc<TaskStats>,
) {
    if !expire.enabled {
        return;
    }
    let (policy, interval) = (expiry_policy(expire), expire.interval);
    supervisor.spawn("lease expiry", move |mut stopping| async move {
        let settle = Duration::from_secs(300).min(interval);
        let mut delay = first_delay(state.as_ref(), "gc-last-run", interval, settle).await;
        while stopping.sleep(delay).await {
            match gc::collect(backend.as_ref(), &accountant, &locks, &policy, unix_now(), false).await {
                Ok(r) => {
                    add(&stats.expiry_passes, 1);
                    add(&stats.expired, r.expired.len() as u64);
                    add(&stats.expired_bytes, r.expired_bytes);
                    stats.last_expiry.store(unix_now(), Ordering::Relaxed);
                    if r.expired.is_empty() {
                        tracing::info!("lease expiry: {}", describe_expiry(&r, false));
                    } else {
                        tracing::warn!("lease expiry: {}", describe_expiry(&r, false));
                    }
                }
                Err(e) => tracing::warn!("lease expiry pass failed: {e}"),
            }
            ran(state.as_ref(), "gc-last-run").await;
            delay = interval;
        }
    })
}

/// Sweep the backend's leftovers every `interval`: the first a minute after start, or later if
/// the last sweep (node state `sweep-last-run`) was more recent.
pub fn sweeper(
    supervisor: &mut Supervisor,
    interval: Option<Duration>,
    grace: u64,
    backend: Arc<dyn Backend>,
    state: Option<StateStore>,
    stats: Arc<TaskStats>,
) {
    let Some(interval) = interval else { return };
    supervisor.spawn("sweep", move |mut stopping| async move {
        let settle = Duration::from_secs(60).min(interval);
        let mut delay = first_delay(state.as_ref(), "sweep-last-run", interval, settle).await;
        while stopping.sleep(delay).await {
            let swept = backend.sweep(grace).await;
            if let Ok(r) = &swept {
                add(&stats.sweeps, 1);
                add(&stats.swept, r.removed);
                stats.last_sweep.store(unix_now(), Ordering::Relaxed);
            }
            match swept {
                Ok(r) if r.removed > 0 => tracing::warn!(
                    "sweep removed {} leftovers of interrupted work ({} bytes; {} objects examined)",
                    r.removed,
                    r.removed_bytes,
                    r.examined
                ),
                Ok(r) => tracing::info!("sweep: nothing to remove ({} objects examined)", r.examined),
                Err(e) => tracing::warn!("sweep failed: {e}"),
            }
            ran(state.as_ref(), "sweep-last-run").await;
            delay = interval;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    /// Sets its flag when dropped: an aborted task's future is dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn shutdown_stops_every_task_at_its_next_wait_and_lets_a_pass_finish() {
        let mut supervisor = Supervisor::default();
        let ticks = Arc::new(AtomicU32::new(0));
        let t = ticks.clone();
        supervisor.spawn("ticker", move |mut stopping| async move {
            while stopping.sleep(Duration::from_millis(5)).await {
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        let (in_pass, finished) = (Arc::new(tokio::sync::Notify::new()), Arc::new(AtomicBool::new(false)));
        let (started, f) = (in_pass.clone(), finished.clone());
        supervisor.spawn("long pass", move |mut stopping| async move {
            if stopping.sleep(Duration::ZERO).await {
                started.notify_one();
                // A pass under way when shutdown is asked for still completes.
                tokio::time::sleep(Duration::from_millis(200)).await;
                f.store(true, Ordering::SeqCst);
            }
        });
        in_pass.notified().await;
        while ticks.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(supervisor.names(), ["ticker", "long pass"]);
        supervisor.shutdown().await;
        assert!(finished.load(Ordering::SeqCst), "shutdown waited for the pass in progress");
        let after = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), after, "no pass after shutdown");
    }

    #[tokio::test]
    async fn a_task_that_never_yields_to_shutdown_is_aborted_after_the_grace() {
        let mut supervisor = Supervisor::with_grace(Duration::from_millis(20));
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        supervisor.spawn("stuck", move |_| async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        supervisor.shutdown().await;
        assert!(dropped.load(Ordering::SeqCst), "the stuck task was aborted");
    }
}

//! Server-side measurements from `/proc`: CPU seconds (user + system) and resident memory of
//! another process, read while a workload runs against it. Memory and descriptors are the
//! tests' own readings (`marsh_testnode::proc`).

use std::time::Duration;

pub use marsh_testnode::proc::{anon_kib, descriptors, peak_kib, reset_peak, rss_kib};

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    marsh::tasks::process_cpu_seconds(&pid.to_string())
}

/// CPU seconds a process has used so far, (total, of it in the kernel), from one reading. The
/// kernel's part is its system calls, and the interrupts and network processing the kernel
/// charges to it while it runs.
pub fn cpu_and_kernel_seconds(pid: u32) -> Option<(f64, f64)> {
    marsh::tasks::process_cpu_split(&pid.to_string()).map(|(user, kernel)| (user + kernel, kernel))
}

/// Samples a process's RSS every 50 ms until dropped; reports the peak.
#[derive(Debug)]
pub struct RssSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Start sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssSampler { peak, task }
    }

    /// The highest RSS seen so far, KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

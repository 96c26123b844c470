//! Server-side measurements from `/proc`: CPU seconds (user + system) and resident memory of
//! another process, read while a workload runs against it.

use std::time::Duration;

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

/// Resident memory in KiB (`VmRSS`): private memory plus the mapped pages of the executable
/// and libraries, which are clean, shared with the page cache and reclaimable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Resident anonymous memory in KiB (`RssAnon`): heap, stacks, wasm memories; what the process
/// alone holds and the kernel cannot drop without swap.
pub fn anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon:")
}

/// The peak resident memory in KiB (`VmHWM`) since start or the last [`reset_peak`].
pub fn peak_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Reset the process's peak RSS (`/proc/PID/clear_refs`, value 5).
pub fn reset_peak(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// Open descriptors of the process.
pub fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
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

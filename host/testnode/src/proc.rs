//! What the kernel says of another process (`/proc/PID/...`): its resident memory, its peak,
//! and its open descriptors, read while a test or a benchmark works against it.

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

/// A process's memory from the moment it is made: its peak is reset, and
/// [`PeakWatch::growth_mib`] says how far the peak rose over the RSS it had then.
#[derive(Debug)]
pub struct PeakWatch {
    pid: u32,
    rss_kib: u64,
}

impl PeakWatch {
    /// Reset `pid`'s peak and note its RSS now.
    pub fn start(pid: u32) -> PeakWatch {
        reset_peak(pid).expect("reset the peak RSS");
        PeakWatch { pid, rss_kib: rss_kib(pid).expect("VmRSS") }
    }

    /// How many MiB the peak rose over the RSS at [`PeakWatch::start`].
    pub fn growth_mib(&self) -> u64 {
        peak_kib(self.pid).expect("VmHWM").saturating_sub(self.rss_kib) / 1024
    }
}

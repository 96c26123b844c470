//! Allocator settings for a serving node.
//!
//! Share data moves through the node in 1 MiB buffers (a PATCH piece, a ranged read, the
//! copies into and out of a plugin's memory), allocated on one thread and often freed on
//! another. glibc's defaults hand buffers that size back to the kernel and fault them in again:
//! it serves them with `mmap` until its adaptive threshold catches up, then trims the top of
//! each arena as soon as 2 MiB is free there. Over 1 GiB uploaded and 1 GiB downloaded that
//! was 207,000 minor page faults in the server; with the thresholds below, 69,000, and peak
//! RSS under 32 concurrent 8 MiB uploads stayed bounded (78 MiB in that run; 87 MiB before).
//! The arenas are capped too ([`ARENAS_PER_CORE`]): each thread's arena kept its own freed
//! buffers.

/// Allocations above this come from `mmap`: above the largest buffer the node moves.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;
/// Free memory kept at the top of an arena before it is given back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 8 << 20;

/// Arenas per core. glibc's default is 8 per core, and every thread that allocates while the
/// others hold theirs gets one: under 32 concurrent 8 MiB uploads the blocking pool's threads
/// each kept up to [`TRIM_THRESHOLD`] of freed 1 MiB buffers in their own arena, and peak RSS
/// was 126-130 MiB; with at most two arenas per core, 54-70 MiB (the floor holds 37).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS_PER_CORE: usize = 2;

/// Set the thresholds; call once, before the runtime's threads start.
pub fn tune_for_serving() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let arenas = std::thread::available_parallelism().map_or(1, usize::from).saturating_mul(ARENAS_PER_CORE);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (name, param, value) in [
        ("M_MMAP_THRESHOLD", libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("M_TRIM_THRESHOLD", libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        ("M_ARENA_MAX", libc::M_ARENA_MAX, libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX)),
    ] {
        #[allow(unsafe_code, reason = "mallopt is glibc's documented way to set these, with no preconditions")]
        // SAFETY: mallopt only changes allocator parameters; a value it does not take is refused.
        let accepted = unsafe { libc::mallopt(param, value) } == 1;
        if !accepted {
            tracing::warn!("glibc refused mallopt({name}, {value}); share buffers may be faulted in repeatedly");
        }
    }
}

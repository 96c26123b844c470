//! The wall clock as marsh keeps it: whole seconds since the Unix epoch.

/// Seconds since the Unix epoch now (0 if the clock reads before the epoch).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

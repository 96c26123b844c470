//! The wall clock as marsh keeps it: whole seconds since the Unix epoch, and the civil (UTC)
//! calendar dates that config values, Tahoe's file names and operators' listings spell them in.

/// Seconds since the Unix epoch now (0 if the clock reads before the epoch).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Days since 1970-01-01 of the proleptic Gregorian date `y`-`m`-`d` (March-based years, as in
/// Howard Hinnant's civil-calendar algorithms); `None` for a month or day that is not one.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return None;
    }
    let (m, d) = (i64::from(m), i64::from(d));
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * m2 + 2) / 5 + d - 1;
    Some(era * 146_097 + doe - 719_468)
}

/// The UTC date and time of `at` (seconds since the epoch): year, month, day, hour, minute,
/// second.
pub fn civil(at: u64) -> (i64, u32, u32, u32, u32, u32) {
    let (days, secs) = ((at / 86_400) as i64, (at % 86_400) as u32);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_both_ways() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2026, 12, 7), Some(20_794));
        assert_eq!(civil(1_796_650_811), (2026, 12, 7, 13, 40, 11));
        assert_eq!(days_from_civil(2024, 2, 29), Some(19_782), "a leap day");
        for bad in [(2023, 2, 29), (2026, 13, 1), (2026, 4, 31), (2026, 1, 0)] {
            assert_eq!(days_from_civil(bad.0, bad.1, bad.2), None, "{bad:?}");
        }
        for at in [0, 951_782_400, 1_796_650_811, 4_102_444_800] {
            let (y, m, d, h, mi, s) = civil(at);
            let back = days_from_civil(y, m, d).unwrap() * 86_400 + i64::from(h * 3600 + mi * 60 + s);
            assert_eq!(back, at as i64);
        }
    }
}

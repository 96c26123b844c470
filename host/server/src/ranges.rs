//! Byte ranges: the set of ranges an upload has written, and the `Range` / `Content-Range`
//! header forms the protocol accepts (exactly the reference's, everything else is 416).

use std::collections::BTreeMap;

/// Disjoint half-open ranges `[start, end)`, merged on insert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Add `[start, end)`.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with every range that overlaps or touches.
        let touching: Vec<(u64, u64)> =
            self.ranges.range(..=end).filter(|(s, e)| **e >= start && **s <= end).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// The parts of `[start, end)` already in the set.
    pub fn overlaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        self.ranges
            .range(..end)
            .filter(|(_, e)| **e > start)
            .map(|(s, e)| ((*s).max(start), (*e).min(end)))
            .filter(|(s, e)| s < e)
            .collect()
    }

    /// The parts of `[0, size)` not in the set, ascending.
    pub fn missing(&self, size: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = 0;
        for (s, e) in &self.ranges {
            if *s >= size {
                break;
            }
            if *s > pos {
                out.push((pos, *s));
            }
            pos = pos.max(*e);
        }
        if pos < size {
            out.push((pos, size));
        }
        out
    }
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `Content-Range: bytes A-B/*` or `bytes A-B/N` (inclusive `B`) as `[A, B+1)`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    if total != "*" {
        number(total)?;
    }
    let (a, b) = span.split_once('-')?;
    let (a, b) = (number(a)?, number(b)?);
    if a > b {
        return None;
    }
    Some((a, b.checked_add(1)?))
}

/// `Range: bytes=A-B`, exactly one closed range, as `(A, B)` inclusive.
pub fn parse_range(value: &str) -> Option<(u64, u64)> {
    let span = value.trim().strip_prefix("bytes=")?;
    if span.contains(',') {
        return None;
    }
    let (a, b) = span.split_once('-')?;
    let (a, b) = (number(a.trim())?, number(b.trim())?);
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_report_what_is_missing() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(50, 60);
        assert_eq!(r.missing(100), vec![(0, 10), (20, 30), (40, 50), (60, 100)]);
        r.insert(15, 35);
        assert_eq!(r.missing(100), vec![(0, 10), (40, 50), (60, 100)]);
        assert_eq!(r.overlaps(5, 45), vec![(10, 40)]);
        r.insert(0, 10);
        r.insert(40, 50);
        r.insert(60, 100);
        assert!(r.missing(100).is_empty());
        assert_eq!(r.overlaps(0, 100), vec![(0, 100)]);
    }

    #[test]
    fn header_forms_follow_the_reference() {
        assert_eq!(parse_content_range("bytes 0-15/*"), Some((0, 16)));
        assert_eq!(parse_content_range("bytes 0-15/48"), Some((0, 16)));
        for bad in [
            "not a valid content range",
            "bytes -1-9/10",
            "bytes 0--9/10",
            "teapots 0-9/10",
            "bytes */48",
            "bytes 9-0/*",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
        assert_eq!(parse_range("bytes=0-10"), Some((0, 10)));
        assert_eq!(parse_range("bytes=3-17"), Some((3, 17)));
        for bad in [
            "molluscs=0-9",
            "bytes=-2-9",
            "bytes=0--10",
            "bytes=-300-",
            "bytes=",
            "bytes=0-5, 6-7",
            "bytes=0-",
            "bytes=5-4",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }
}

//! Corruption advisories as a Tahoe storage server keeps them: one file per advisory in
//! `corruption-advisories/`, named `<UTC time, colons removed>--<storage index>-<share number>`,
//! holding a short report (`report: Share Corruption`, `type:`, `storage_index:`,
//! `share_number:`, a blank line, the client's reason).

use std::path::Path;

use marsh_core::StorageIndex;

/// One advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    /// When, seconds since the epoch (UTC).
    pub at: u64,
    /// `true` for a mutable share.
    pub mutable: bool,
    /// The storage index.
    pub si: StorageIndex,
    /// The share number.
    pub shnum: u16,
    /// What the client said.
    pub reason: String,
}

/// Seconds since the epoch of `YYYY-MM-DDTHHMMSS[.ffffff]` (UTC; the fraction dropped).
fn parse_time(s: &str) -> Option<u64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let time = time.split('.').next()?;
    if time.len() != 6 {
        return None;
    }
    let (h, mi, se): (i64, i64, i64) = (time[0..2].parse().ok()?, time[2..4].parse().ok()?, time[4..6].parse().ok()?);
    let days = marsh_core::days_from_civil(y, m, day)?;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

/// The file name Tahoe gives an advisory made at `at`.
fn time_name(at: u64) -> String {
    let (y, m, d, h, mi, s) = marsh_core::civil(at);
    format!("{y:04}-{m:02}-{d:02}T{h:02}{mi:02}{s:02}")
}

/// Read the advisory in `path`; `None` if it is not one (named or written otherwise).
pub fn read(path: &Path) -> Option<Advisory> {
    let name = path.file_name()?.to_str()?;
    let (time, share) = name.split_once("--")?;
    let (si, shnum) = share.rsplit_once('-')?;
    let si: StorageIndex = si.parse().ok()?;
    let shnum: u16 = shnum.parse().ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    let (head, reason) = text.split_once("\n\n")?;
    let mutable = head.lines().any(|l| l.trim() == "type: mutable");
    Some(Advisory { at: parse_time(time)?, mutable, si, shnum, reason: reason.trim_end_matches('\n').to_owned() })
}

/// The file name and content Tahoe would write for `advisory`.
pub fn write(advisory: &Advisory) -> (String, String) {
    let si = advisory.si.to_base32();
    let name = format!("{}--{si}-{}", time_name(advisory.at), advisory.shnum);
    let kind = if advisory.mutable { "mutable" } else { "immutable" };
    let body = format!(
        "report: Share Corruption\ntype: {kind}\nstorage_index: {si}\nshare_number: {}\n\n{}\n\n",
        advisory.shnum, advisory.reason
    );
    (name, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advisory_as_tahoe_names_and_writes_it_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("2026-12-07T134011.361678--aeaqcaibaeaqcaibaeaqcaibae-0");
        std::fs::write(
            &path,
            "report: Share Corruption\ntype: immutable\nstorage_index: aeaqcaibaeaqcaibaeaqcaibae\nshare_number: 0\n\nbad hash\n\n",
        )
        .unwrap();
        let a = read(&path).unwrap();
        assert_eq!((a.at, a.mutable, a.shnum, a.reason.as_str()), (1_796_650_811, false, 0, "bad hash"));
        let (name, body) = write(&a);
        assert_eq!(name, "2026-12-07T134011--aeaqcaibaeaqcaibaeaqcaibae-0");
        let again = tmp.path().join(&name);
        std::fs::write(&again, body).unwrap();
        assert_eq!(read(&again).unwrap(), a);
        assert!(read(&tmp.path().join("README")).is_none());
    }
}

//! Packs: `pack-changes` consecutive changes (default 1000) sealed together in one object,
//! `accounting/packs/<first:020>-<last:020>`, written once the last of them is recorded.
//! Recovery reads the packs instead of one object per change; the per-change records stay, so
//! a pack that is missing or damaged costs speed (its records are read), never changes.
//!
//! A pack is sealed for its range (the purpose names it), and opened only if it holds exactly
//! the changes its key names, in order: a pack moved to another key, or a range cut short,
//! does not open.

use marsh_plugin_sdk::{Host, SealError, change_sequence, decode_changes, encode_changes};

/// Where packs live: under the strategy's own prefix, sorted after every change record
/// (`accounting/<digits>`), so listing the records after a sequence reaches the packs last.
pub(crate) const PACKS: &str = "accounting/packs/";

/// The most changes one pack may hold (`pack-changes`): a pack of small changes stays far below
/// what one call may move.
pub(crate) const MAX_PACK: u64 = 10_000;

pub(crate) fn key(first: u64, last: u64) -> String {
    format!("{PACKS}{first:020}-{last:020}")
}

/// The range a pack's key names, or `None` for any other key.
pub(crate) fn range(key: &str) -> Option<(u64, u64)> {
    let (first, last) = key.strip_prefix(PACKS)?.split_once('-')?;
    let number = |d: &str| if d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()) { d.parse().ok() } else { None };
    let (first, last): (u64, u64) = (number(first)?, number(last)?);
    (1 <= first && first <= last).then_some((first, last))
}

/// The highest change any of `packs` holds (0 for none).
pub(crate) fn newest(packs: &[(u64, u64)]) -> u64 {
    packs.iter().map(|&(_, last)| last).max().unwrap_or(0)
}

fn purpose(first: u64, last: u64) -> String {
    format!("records-pack-{first}-{last}")
}

/// `changes` (the changes `first..=last`, in order) sealed as one pack.
pub(crate) fn seal(host: &Host, first: u64, last: u64, changes: &[Vec<u8>]) -> Result<Vec<u8>, SealError> {
    host.seal(&purpose(first, last), &encode_changes(changes))
}

/// The changes a sealed pack for `first..=last` holds, or `None` if it does not unseal for that
/// range or holds anything but exactly those changes in order.
pub(crate) fn open(host: &Host, first: u64, last: u64, sealed: &[u8]) -> Option<Vec<Vec<u8>>> {
    let changes = decode_changes(&host.unseal(&purpose(first, last), sealed).ok()?)?;
    let exact = changes.len() as u64 == last - first + 1
        && changes.iter().zip(first..).all(|(c, sequence)| change_sequence(c) == Some(sequence));
    exact.then_some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_range_and_nothing_else_parses() {
        assert_eq!(range(&key(1001, 2000)), Some((1001, 2000)));
        assert_eq!(range("accounting/packs/1-2"), None);
        assert_eq!(range(&key(0, 5)), None);
        assert_eq!(range(&key(9, 5)), None);
        assert_eq!(range("accounting/00000000000000000001"), None);
        assert!(key(1, 10) < key(11, 20) && key(9, 10) < key(10, 10), "in order of their first change");
        assert!(key(1, 1).as_str() > "accounting/99999999999999999999", "after every record");
    }

    #[test]
    fn a_pack_opens_only_for_its_own_range_with_exactly_its_changes() {
        let host = marsh_plugin_sdk::testing::TestHost::new().build();
        let change = |s: u64| [s.to_be_bytes().as_slice(), b"lease"].concat();
        let changes: Vec<_> = (11..=13).map(change).collect();
        let sealed = seal(&host, 11, 13, &changes).unwrap();
        assert_eq!(open(&host, 11, 13, &sealed), Some(changes.clone()));
        assert_eq!(open(&host, 12, 14, &sealed), None, "moved to another range");
        let short = seal(&host, 11, 14, &changes).unwrap();
        assert_eq!(open(&host, 11, 14, &short), None, "fewer changes than its range");
        let shuffled = seal(&host, 11, 13, &[change(12), change(11), change(13)]).unwrap();
        assert_eq!(open(&host, 11, 13, &shuffled), None, "out of order");
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(open(&host, 11, 13, &flipped), None, "tampered");
    }
}

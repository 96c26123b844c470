//! Refusing a mutable share its store rolled back. A store's operator can put a share's older
//! bytes back (on S3, the slot's own older pointer, which is sealed for the slot and so opens):
//! the share is sound, only old. Tahoe's mutable shares (SDMF and MDMF, version byte 0 or 1)
//! carry their sequence number in bytes 1..9, and a client only ever writes a higher one. So
//! after every write that wrote a share's whole header the server keeps the number the share
//! now carries in the accountant, on the node, in the transaction that ends the write
//! (`Accountant::end_mutable_write`), and refuses (503) a share whose first bytes carry a
//! lower number than the one kept, or none: on a `GET` from offset 0, and on every
//! read-test-write, which reads the header of each share of the slot that has a number kept
//! before anything else, and checks every test and read of the request that starts at offset 0
//! too; each refusal counts in `marsh_rolled_back_refusals_total` on `/metrics`, and the first
//! for a share and number is logged as an error. A `GET` looks the number up before it reads
//! the share; as Tahoe's numbers only grow and are kept once a write is applied, what it reads
//! then carries at least that much. A writer may still lower or remove its own header (and a
//! partial rewrite of a header forgets the number): a `GET` that finds bytes older than what it
//! looked up refuses only if no write to the slot is under way and the number still stands.
//!
//! Not detected: a share put back at the same number (the same version); reads that start past
//! offset 0 or ask for fewer than 9 bytes (a client checks the rest against the header's
//! hashes); a share cut below its header's 9 bytes, or deleted; a share the node removed (or
//! collected when its leases ran out) put back, since its number is forgotten with it; shares
//! the node has not written since it started keeping numbers (a store from before, or one it
//! took over from another node) and every share on a node whose database `marsh recover`
//! rebuilt, until it writes them (the numbers are not in the store, on purpose). A refused
//! share stays refused until the store holds it at the kept number or higher again, no longer
//! holds it (a client's repair then writes it anew), or the operator runs `marsh versions
//! forget` (after restoring the store from a backup on purpose).

use marsh_accountant::Accountant;
use marsh_core::{ShareNumber, StorageIndex, WriteVector};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::offload;
use crate::redo::RedoShare;

/// Bytes of a mutable share that hold its version byte and sequence number.
pub(crate) const HEADER: usize = 9;

/// The sequence number a mutable share's first bytes carry, if they are an SDMF or MDMF header.
pub(crate) fn seqnum(first: &[u8]) -> Option<u64> {
    match first.get(..HEADER)? {
        [0 | 1, number @ ..] => Some(u64::from_be_bytes(number.try_into().ok()?)),
        _ => None,
    }
}

/// The first [`HEADER`] bytes of a share after `writes`, when the writes cover all of them.
fn header_written(writes: &[WriteVector]) -> Option<[u8; HEADER]> {
    let mut header = [0u8; HEADER];
    let mut covered = [false; HEADER];
    for w in writes {
        for (i, byte) in w.data.iter().enumerate() {
            match w.offset.checked_add(i as u64).and_then(|at| usize::try_from(at).ok()) {
                Some(at) if at < HEADER => {
                    header[at] = *byte;
                    covered[at] = true;
                }
                _ => break,
            }
        }
    }
    covered.iter().all(|c| *c).then_some(header)
}

/// What `shares`, once applied, leave kept for each (for `Accountant::end_mutable_write`): the
/// number each header now carries when the writes wrote all of it; `None` (forget) when the
/// share was removed, cut below its header, or had only part of its header rewritten; a share
/// whose header is untouched is left out, and what is kept for it stands. Never from a read of
/// the store, which could lower it.
pub(crate) fn written(shares: &[RedoShare]) -> Vec<(ShareNumber, Option<u64>)> {
    shares
        .iter()
        .filter_map(|s| match (s.new_length, header_written(&s.writes)) {
            (Some(length), _) if length < HEADER as u64 => Some((s.shnum, None)),
            (_, Some(header)) => Some((s.shnum, seqnum(&header))),
            // Part of the header rewritten: what it now says is not known without the store's
            // word, so nothing is kept (a kept number would refuse the writer's own bytes).
            _ if s.writes.iter().any(|w| w.offset < HEADER as u64 && !w.data.is_empty()) => Some((s.shnum, None)),
            _ => None,
        })
        .collect()
}

/// Whether the store already holds a later version than a redo record writes: a share whose
/// header the record writes in full carries a higher sequence number in the store now. A
/// record replayed at start-up is then older than what clients wrote since (an accounting
/// database restored from a backup, with a record still pending in it) and must not be applied
/// over their writes. Shares without a Tahoe header cannot tell and never count as newer.
pub(crate) async fn superseded(
    backend: &dyn marsh_core::Backend,
    si: &StorageIndex,
    shares: &[RedoShare],
) -> Result<bool, marsh_core::BackendError> {
    for (n, number) in written(shares) {
        let Some(number) = number else { continue };
        let first = match backend.mutable_read(si, n, 0, HEADER as u64).await {
            Ok(first) => first,
            Err(marsh_core::BackendError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        if seqnum(&first).is_some_and(|now| now > number) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The number kept for mutable share `n`; look it up before reading the share.
pub(crate) fn kept(accountant: &Accountant, si: &StorageIndex, n: ShareNumber) -> Result<Option<u64>, ApiError> {
    offload::sqlite(|| accountant.mutable_seqnum(si, n)).map_err(ApiError::Accountant)
}

/// Whether `first`, bytes read from offset 0 of a mutable share, hold a whole header with a
/// lower number than `kept`, or no Tahoe header at all. Fewer bytes than a header cannot tell.
pub(crate) fn older(kept: u64, first: &[u8]) -> bool {
    first.len() >= HEADER && seqnum(first).is_none_or(|number| number < kept)
}

/// Refuse `first`, bytes read from offset 0 of mutable share `n` after `kept` was looked up,
/// when they are [`older`]; counted, and logged the first time for that share and number.
pub(crate) fn refuse_older(
    metrics: &Metrics,
    si: &StorageIndex,
    n: ShareNumber,
    kept: u64,
    first: &[u8],
) -> Result<(), ApiError> {
    if !older(kept, first) {
        return Ok(());
    }
    metrics.rolled_back();
    if first_refusal(*si, n, kept) {
        let found = seqnum(first).map_or_else(|| "no sequence number".to_owned(), |f| format!("sequence number {f}"));
        tracing::error!(
            si = %si,
            shnum = n.0,
            "mutable share read from the store carries {found}, older than {kept} this node wrote: the store rolled it back; refused until the store holds it at {kept} or later again (restore it), it no longer holds it, or `marsh versions forget {si} {}` accepts it as it is",
            n.0
        );
    }
    Err(ApiError::RolledBack)
}

/// Whether this is the first refusal of share `n` at `kept` since start-up (remembered for up
/// to [`REFUSALS_REMEMBERED`] shares, then forgotten all at once): a client that asks again and
/// again does not flood the log.
fn first_refusal(si: StorageIndex, n: ShareNumber, kept: u64) -> bool {
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<(StorageIndex, ShareNumber, u64)>>> =
        std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(Default::default);
    if seen.len() >= REFUSALS_REMEMBERED {
        seen.clear();
    }
    seen.insert((si, n, kept))
}

/// Refused shares whose refusal was logged, remembered at most.
const REFUSALS_REMEMBERED: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u8, number: u64) -> Vec<u8> {
        let mut h = vec![version];
        h.extend_from_slice(&number.to_be_bytes());
        h.extend_from_slice(b"rest of the share");
        h
    }

    #[test]
    fn sdmf_and_mdmf_headers_carry_a_number_and_other_bytes_none() {
        assert_eq!(seqnum(&header(0, 7)), Some(7));
        assert_eq!(seqnum(&header(1, u64::MAX)), Some(u64::MAX));
        assert_eq!(seqnum(&header(2, 7)), None, "not a version Tahoe writes");
        assert_eq!(seqnum(&header(0, 7)[..8]), None, "too short");
        assert_eq!(seqnum(b""), None);
    }

    #[test]
    fn a_write_keeps_the_number_it_wrote_and_nothing_from_older_bytes() {
        let n = ShareNumber(2);
        let share = |writes: Vec<WriteVector>, new_length| RedoShare { shnum: n, writes, new_length };
        let whole = |number| vec![WriteVector { offset: 0, data: header(0, number) }];
        assert_eq!(written(&[share(whole(4), None)]), vec![(n, Some(4))]);
        let past = vec![WriteVector { offset: 9, data: b"xxxxxxxx".to_vec() }];
        assert_eq!(written(&[share(past, None)]), vec![], "the header untouched: what is kept stands");
        let partial = vec![WriteVector { offset: 5, data: b"xxxxxxxx".to_vec() }];
        assert_eq!(written(&[share(partial, None)]), vec![(n, None)], "part of it rewritten: forgotten");
        let one_byte = vec![WriteVector { offset: 0, data: b"\x07".to_vec() }];
        assert_eq!(written(&[share(one_byte, None)]), vec![(n, None)], "its version byte rewritten: forgotten");
        assert_eq!(written(&[share(whole(5), Some(8))]), vec![(n, None)], "cut below its header");
        assert_eq!(written(&[share(Vec::new(), Some(0))]), vec![(n, None)], "removed");
        let plain = vec![WriteVector { offset: 0, data: b"\x07 not a tahoe share".to_vec() }];
        assert_eq!(written(&[share(plain, None)]), vec![(n, None)], "no header any more");
        // Kept as the write ends, forgotten when the share is collected.
        let accountant = Accountant::in_memory().unwrap();
        let si = StorageIndex::from_bytes([9; 16]);
        accountant.end_mutable_write(&si, &written(&[share(whole(7), None)])).unwrap();
        assert_eq!(accountant.mutable_seqnum(&si, n).unwrap(), Some(7));
        accountant.forget_share(&marsh_core::ShareId::mutable(si, n)).unwrap();
        assert_eq!(accountant.mutable_seqnum(&si, n).unwrap(), None, "collected");
    }

    #[test]
    fn an_older_or_missing_header_is_refused_and_too_few_bytes_pass() {
        let (si, m) = (StorageIndex::from_bytes([9; 16]), Metrics::default());
        assert!(refuse_older(&m, &si, ShareNumber(0), 5, &header(0, 5)).is_ok());
        assert!(refuse_older(&m, &si, ShareNumber(0), 5, &header(1, 6)).is_ok());
        assert!(refuse_older(&m, &si, ShareNumber(0), 5, &header(0, 4)).is_err());
        assert!(refuse_older(&m, &si, ShareNumber(0), 5, b"not a tahoe share").is_err());
        assert!(refuse_older(&m, &si, ShareNumber(0), 5, &header(0, 4)[..8]).is_ok(), "cannot tell");
        assert!(refuse_older(&m, &si, ShareNumber(0), 5, b"").is_ok(), "gone");
        let mut text = String::new();
        m.prometheus(&mut text);
        assert!(text.contains("marsh_rolled_back_refusals_total 2\n"), "{text}");
    }

    #[test]
    fn a_header_counts_as_written_only_when_the_writes_cover_all_of_it() {
        let w = |offset, data: &[u8]| WriteVector { offset, data: data.to_vec() };
        let h = header(0, 5);
        assert_eq!(header_written(&[w(0, &h)]).map(|x| seqnum(&x)), Some(Some(5)));
        assert_eq!(header_written(&[w(0, &h[..4]), w(4, &h[4..9])]).map(|x| seqnum(&x)), Some(Some(5)));
        assert_eq!(header_written(&[w(0, &h[..4]), w(5, &h[5..])]), None, "byte 4 left to the old share");
        assert_eq!(header_written(&[w(9, &h)]), None, "past the header");
        assert_eq!(header_written(&[w(u64::MAX, b"x")]), None);
        let later = header(0, 6);
        assert_eq!(
            header_written(&[w(0, &h), w(0, &later[..9])]).map(|x| seqnum(&x)),
            Some(Some(6)),
            "the last write wins"
        );
    }
}

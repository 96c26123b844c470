//! Refusing a mutable share its store rolled back. A store's operator can put a share's older
//! bytes back (on S3, the slot's own older pointer, which is sealed for the slot and so opens):
//! the share is sound, only old. Tahoe's mutable shares (SDMF and MDMF, version byte 0 or 1)
//! carry their sequence number in bytes 1..9, and a client only ever writes a higher one. So
//! after every write the server keeps the number the share now carries in the accountant, on
//! the node (`Accountant::set_mutable_seqnum`), and a read that returns the share's first
//! bytes (a `GET` from offset 0, and every read-test-write, which checks the shares it names
//! first) refuses a share whose number is lower than the one kept, as a damaged share (503,
//! logged). A share whose first bytes are not such a header keeps no number and is not checked.
//!
//! Not detected: a share put back at the same number (the same version), a share read from
//! past its header (a client checks those bytes against the header's hashes), and anything on
//! a node rebuilt by `marsh recover` until it writes the share again (the numbers are not in
//! the store, on purpose).

use marsh_accountant::Accountant;
use marsh_core::{Backend, BackendError, ShareNumber, StorageIndex, WriteVector};

use crate::offload;
use crate::redo::RedoShare;
use crate::response::ApiError;

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

/// After `shares` were applied to `si`: keep the sequence number each now carries (from the
/// writes when they wrote the whole header, else read back), or forget it. A failure is logged,
/// not the write's: a number left lower than the share's still passes.
pub(crate) async fn keep(backend: &dyn Backend, accountant: &Accountant, si: &StorageIndex, shares: &[RedoShare]) {
    for s in shares {
        let number = match (s.new_length, header_written(&s.writes)) {
            (Some(length), _) if length < HEADER as u64 => Ok(None),
            (_, Some(header)) => Ok(seqnum(&header)),
            _ => backend.mutable_read(si, s.shnum, 0, HEADER as u64).await.map(|first| seqnum(&first)),
        };
        let kept = match number {
            Ok(number) => {
                offload::sqlite(|| accountant.set_mutable_seqnum(si, s.shnum, number)).map_err(|e| e.to_string())
            }
            Err(BackendError::NotFound) => {
                offload::sqlite(|| accountant.set_mutable_seqnum(si, s.shnum, None)).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = kept {
            tracing::warn!(si = %si, shnum = s.shnum.0, "keeping a mutable share's sequence number: {e}");
        }
    }
}

/// Refuse `first`, the bytes from offset 0 of mutable share `n` (`asked` of them were asked
/// for), when they carry a lower sequence number than the one kept, or none while one is kept.
pub(crate) fn check(
    accountant: &Accountant,
    si: &StorageIndex,
    n: ShareNumber,
    asked: u64,
    first: &[u8],
) -> Result<(), ApiError> {
    if asked < HEADER as u64 {
        return Ok(());
    }
    match kept(accountant, si, n)? {
        Some(kept) => refuse_older(si, n, kept, first),
        None => Ok(()),
    }
}

/// Refuse mutable share `n` as [`check`] does, reading its header from `backend` only when a
/// number is kept for it.
pub(crate) async fn check_stored(
    backend: &dyn Backend,
    accountant: &Accountant,
    si: &StorageIndex,
    n: ShareNumber,
) -> Result<(), ApiError> {
    let Some(kept) = kept(accountant, si, n)? else { return Ok(()) };
    let first = backend.mutable_read(si, n, 0, HEADER as u64).await.map_err(|e| ApiError::backend("read", e))?;
    refuse_older(si, n, kept, &first)
}

fn kept(accountant: &Accountant, si: &StorageIndex, n: ShareNumber) -> Result<Option<u64>, ApiError> {
    offload::sqlite(|| accountant.mutable_seqnum(si, n)).map_err(ApiError::accountant)
}

fn refuse_older(si: &StorageIndex, n: ShareNumber, kept: u64, first: &[u8]) -> Result<(), ApiError> {
    match seqnum(first) {
        Some(number) if number >= kept => Ok(()),
        found => {
            let found = found.map_or_else(|| "no sequence number".to_owned(), |f| format!("sequence number {f}"));
            tracing::error!(
                si = %si,
                shnum = n.0,
                "mutable share read from the store carries {found}, older than {kept} this node wrote: the store rolled it back; refused until the share is restored (or removed) in the store"
            );
            Err(ApiError::backend("read", BackendError::Corrupt("rolled back".into())))
        }
    }
}

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

//! The sequence number each mutable share carried when this node last wrote it (bytes 1..9 of
//! an SDMF or MDMF share, big-endian). Kept on the node, in a table snapshots leave out,
//! where the operator of the store holding the shares cannot put an older value back: the
//! server refuses a share whose header carries a lower number than the one kept (a rolled back
//! share). A node rebuilt by `marsh recover` has none kept, and keeps them again as it writes.

use marsh_core::{ShareNumber, StorageIndex};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{Accountant, AccountantError};

impl Accountant {
    /// The sequence number kept for a mutable share, if any.
    pub fn mutable_seqnum(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, AccountantError> {
        let kept: Option<i64> = self
            .conn()
            .query_row(
                "SELECT seqnum FROM mutable_seqnums WHERE si = ?1 AND shnum = ?2",
                params![si.to_base32(), shnum.0],
                |r| r.get(0),
            )
            .optional()?;
        // Stored as SQLite's signed integer, the same 64 bits.
        Ok(kept.map(|k| k as u64))
    }

    /// Keep `seqnum` for a mutable share just written, or forget the share's (`None`: removed,
    /// or too short to carry one).
    pub fn set_mutable_seqnum(
        &self,
        si: &StorageIndex,
        shnum: ShareNumber,
        seqnum: Option<u64>,
    ) -> Result<(), AccountantError> {
        let conn = self.conn();
        match seqnum {
            Some(n) => conn.execute(
                "INSERT OR REPLACE INTO mutable_seqnums (si, shnum, seqnum) VALUES (?1, ?2, ?3)",
                params![si.to_base32(), shnum.0, n as i64],
            )?,
            None => forget(&conn, si, shnum)?,
        };
        Ok(())
    }
}

/// Forget the number kept for a mutable share (removed, or collected with its leases).
pub(crate) fn forget(conn: &Connection, si: &StorageIndex, shnum: ShareNumber) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM mutable_seqnums WHERE si = ?1 AND shnum = ?2", params![si.to_base32(), shnum.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_sequence_number_is_per_share_survives_reopening_and_stays_out_of_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accountant.sqlite");
        let (si, other) = (StorageIndex::from_bytes([3; 16]), StorageIndex::from_bytes([4; 16]));
        let a = Accountant::open(&path).unwrap();
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(0)).unwrap(), None);
        a.set_mutable_seqnum(&si, ShareNumber(0), Some(7)).unwrap();
        a.set_mutable_seqnum(&si, ShareNumber(1), Some(u64::MAX)).unwrap();
        a.set_mutable_seqnum(&si, ShareNumber(0), Some(8)).unwrap();
        assert_eq!(a.mutable_seqnum(&other, ShareNumber(0)).unwrap(), None);
        let snapshot = a.snapshot().unwrap();
        drop(a);
        let a = Accountant::open(&path).unwrap();
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(0)).unwrap(), Some(8));
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(1)).unwrap(), Some(u64::MAX), "all 64 bits");
        a.set_mutable_seqnum(&si, ShareNumber(1), None).unwrap();
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(1)).unwrap(), None);
        // A node rebuilt from a snapshot keeps nothing: the numbers are this node's own.
        let rebuilt = Accountant::open(&dir.path().join("rebuilt.sqlite")).unwrap();
        rebuilt.restore_snapshot(&snapshot.bytes).unwrap();
        assert_eq!(rebuilt.mutable_seqnum(&si, ShareNumber(0)).unwrap(), None);
    }
}

//! The sequence number each mutable share carried when this node last wrote it (bytes 1..9 of
//! an SDMF or MDMF share, big-endian). Kept on the node, in a table snapshots leave out,
//! where the operator of the store holding the shares cannot put an older value back: the
//! server refuses a share whose header carries a lower number than the one kept (a rolled back
//! share). A node rebuilt by `marsh recover` has none kept, and keeps them again as it writes.

use std::collections::BTreeMap;

use marsh_core::{ShareNumber, StorageIndex};
use marsh_sql::{Conn, Query, SqlError, params};

use crate::{Accountant, AccountantError};

impl Accountant {
    /// The sequence number kept for a mutable share, if any.
    pub fn mutable_seqnum(&self, si: &StorageIndex, shnum: ShareNumber) -> Result<Option<u64>, AccountantError> {
        let kept: Option<i64> = self.conn()?.value(
            "SELECT seqnum FROM mutable_seqnums WHERE si = ?1 AND shnum = ?2",
            &params![si.to_base32(), shnum.0],
        )?;
        Ok(kept.map(|k| k as u64))
    }

    /// The sequence numbers kept for the mutable shares of `si`, by share number.
    pub fn mutable_seqnums(&self, si: &StorageIndex) -> Result<BTreeMap<ShareNumber, u64>, AccountantError> {
        let rows: Vec<(u16, i64)> =
            self.conn()?.rows("SELECT shnum, seqnum FROM mutable_seqnums WHERE si = ?1", &params![si.to_base32()])?;
        let mut kept = BTreeMap::new();
        for (shnum, seqnum) in rows {
            kept.insert(ShareNumber(shnum), seqnum as u64);
        }
        Ok(kept)
    }
}

impl Accountant {
    /// Every number kept: (storage index, share number, sequence number), by storage index.
    pub fn kept_mutable_seqnums(&self) -> Result<Vec<(StorageIndex, ShareNumber, u64)>, AccountantError> {
        let rows: Vec<(String, u16, i64)> =
            self.conn()?.rows("SELECT si, shnum, seqnum FROM mutable_seqnums ORDER BY si, shnum", &[])?;
        let mut kept = Vec::new();
        for (si, shnum, seqnum) in rows {
            let si =
                si.parse().map_err(|e| AccountantError::Corrupt(format!("kept sequence number of {si:?}: {e}")))?;
            kept.push((si, ShareNumber(shnum), seqnum as u64));
        }
        Ok(kept)
    }

    /// Forget kept numbers: all of them, those of one storage index, or of one share of it;
    /// how many. The operator's word that the store's shares stand as they are (after
    /// restoring the store from a backup).
    pub fn forget_mutable_seqnums(
        &self,
        si: Option<&StorageIndex>,
        shnum: Option<ShareNumber>,
    ) -> Result<usize, AccountantError> {
        let mut conn = self.conn()?;
        let n = match (si, shnum) {
            (None, _) => conn.execute("DELETE FROM mutable_seqnums", &[])?,
            (Some(si), None) => conn.execute("DELETE FROM mutable_seqnums WHERE si = ?1", &params![si.to_base32()])?,
            (Some(si), Some(n)) => forget(&mut conn, si, n)?,
        };
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Keep `seqnum` for a mutable share, or forget it (`None`: removed, cut below its header, or
/// rewritten without a Tahoe header).
pub(crate) fn set(
    c: &mut dyn Conn,
    si: &StorageIndex,
    shnum: ShareNumber,
    seqnum: Option<u64>,
) -> Result<(), SqlError> {
    match seqnum {
        // Stored as a signed 64-bit integer, the same 64 bits.
        Some(n) => c.execute(
            "INSERT INTO mutable_seqnums (si, shnum, seqnum) VALUES (?1, ?2, ?3)
             ON CONFLICT (si, shnum) DO UPDATE SET seqnum = excluded.seqnum",
            &params![si.to_base32(), shnum.0, n as i64],
        )?,
        None => forget(c, si, shnum)?,
    };
    Ok(())
}

/// Forget the number kept for a mutable share (removed, or collected with its leases).
pub(crate) fn forget(c: &mut dyn Conn, si: &StorageIndex, shnum: ShareNumber) -> Result<u64, SqlError> {
    c.execute("DELETE FROM mutable_seqnums WHERE si = ?1 AND shnum = ?2", &params![si.to_base32(), shnum.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_kept_sequence_number_is_per_share_and_all_64_bits(new: &dyn Fn() -> Accountant) {
        let (si, other) = (StorageIndex::from_bytes([3; 16]), StorageIndex::from_bytes([4; 16]));
        let a = new();
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(0)).unwrap(), None);
        a.end_mutable_write(&si, &[(ShareNumber(0), Some(7)), (ShareNumber(1), Some(u64::MAX))]).unwrap();
        a.end_mutable_write(&si, &[(ShareNumber(0), Some(8))]).unwrap();
        assert_eq!(a.mutable_seqnum(&other, ShareNumber(0)).unwrap(), None);
        let slot: Vec<_> = a.mutable_seqnums(&si).unwrap().into_iter().collect();
        assert_eq!(slot, vec![(ShareNumber(0), 8), (ShareNumber(1), u64::MAX)], "all 64 bits");
        assert!(a.mutable_seqnums(&other).unwrap().is_empty());
        a.end_mutable_write(&other, &[(ShareNumber(3), Some(2)), (ShareNumber(0), None)]).unwrap();
        assert_eq!(a.mutable_seqnum(&other, ShareNumber(3)).unwrap(), Some(2), "kept as a write ends");
        let all = a.kept_mutable_seqnums().unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(a.forget_mutable_seqnums(Some(&other), Some(ShareNumber(4))).unwrap(), 0);
        assert_eq!(a.forget_mutable_seqnums(Some(&other), None).unwrap(), 1);
        assert_eq!(a.kept_mutable_seqnums().unwrap().iter().filter(|k| k.0 == other).count(), 0);
        a.end_mutable_write(&si, &[(ShareNumber(1), None)]).unwrap();
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(1)).unwrap(), None);
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(0)).unwrap(), Some(8));
    }

    crate::on_both_engines!(a_kept_sequence_number_is_per_share_and_all_64_bits);

    /// SQLite's file: the numbers survive reopening it, and a snapshot (SQLite's) leaves them out.
    #[test]
    fn a_kept_sequence_number_survives_reopening_and_stays_out_of_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accountant.sqlite");
        let si = StorageIndex::from_bytes([3; 16]);
        let a = Accountant::open(&path).unwrap();
        a.end_mutable_write(&si, &[(ShareNumber(0), Some(8)), (ShareNumber(1), Some(u64::MAX))]).unwrap();
        let snapshot = a.snapshot().unwrap();
        drop(a);
        let a = Accountant::open(&path).unwrap();
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(0)).unwrap(), Some(8));
        assert_eq!(a.mutable_seqnum(&si, ShareNumber(1)).unwrap(), Some(u64::MAX), "all 64 bits");
        // A node rebuilt from a snapshot keeps nothing: the numbers are this node's own.
        let rebuilt = Accountant::open(&dir.path().join("rebuilt.sqlite")).unwrap();
        rebuilt.restore_snapshot(&snapshot.bytes).unwrap();
        assert_eq!(rebuilt.mutable_seqnum(&si, ShareNumber(0)).unwrap(), None);
    }
}

//! Sealed snapshots of the host's accounting database in a blob store, the layout first-party
//! strategies share (`persistence-stash` in each generation, `persistence-records` to compact
//! its history). Under a key prefix `P`:
//!
//! - `P<seq:020>-<attempt>/part-<i:06>`: the snapshot as of change `seq` in sealed parts of at
//!   most [`PART`] bytes, each sealed for its snapshot, attempt, index and count;
//! - `P<seq:020>.manifest`: written last, naming the attempt whose parts make the snapshot. A
//!   snapshot exists exactly when its manifest does.
//!
//! Every object is written create-only. The purposes the parts and manifests are sealed for
//! start with the strategy's own words, so one strategy's objects never open as another's.

use crate::{Accountant, BlobError, Host, PersistError, PutMode, Store};

/// Plaintext bytes per sealed snapshot part (the host moves at most 4 MiB per call).
pub const PART: u64 = 2 << 20;

/// One strategy's snapshots under one key prefix.
#[derive(Debug, Clone)]
pub struct Snapshots<'a> {
    host: &'a Host,
    store: &'a Store,
    prefix: String,
    part_purpose: String,
    manifest_purpose: String,
}

/// A manifest: which attempt's parts make snapshot `seq`, and how many bytes they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Manifest {
    seq: u64,
    attempt: u64,
    size: u64,
}

impl Manifest {
    fn parts(&self) -> u64 {
        self.size.div_ceil(PART)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        for v in [self.seq, self.attempt, self.size] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let (&1, rest) = b.split_first()? else { return None };
        let v = |i: usize| Some(u64::from_be_bytes(rest.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        (rest.len() == 24).then_some(())?;
        Some(Manifest { seq: v(0)?, attempt: v(1)?, size: v(2)? })
    }
}

/// What [`Snapshots::restore`] made of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Restored: the database is now as of this change.
    Done(u64),
    /// Not restored, the database untouched: why (missing or damaged parts, a manifest that does
    /// not unseal, a snapshot the host refused).
    Damaged(String),
}

fn io(e: BlobError) -> PersistError {
    PersistError::Io(e.to_string())
}

fn seal_failed(e: impl std::fmt::Display) -> PersistError {
    PersistError::Io(format!("sealing: {e}"))
}

impl<'a> Snapshots<'a> {
    /// Snapshots under the key prefix `prefix` (ending in `/`) of `store`, parts sealed for
    /// `<part_purpose>:<seq>:<attempt>:<i>/<count>` and manifests for `<manifest_purpose>:<seq>`.
    pub fn new(
        host: &'a Host,
        store: &'a Store,
        prefix: String,
        part_purpose: String,
        manifest_purpose: String,
    ) -> Self {
        Snapshots { host, store, prefix, part_purpose, manifest_purpose }
    }

    fn manifest_key(&self, seq: u64) -> String {
        format!("{}{seq:020}.manifest", self.prefix)
    }

    fn manifest_purpose(&self, seq: u64) -> String {
        format!("{}:{seq}", self.manifest_purpose)
    }

    fn part_key(&self, seq: u64, attempt: u64, i: u64) -> String {
        format!("{}{seq:020}-{attempt}/part-{i:06}", self.prefix)
    }

    fn part_purpose(&self, seq: u64, attempt: u64, i: u64, parts: u64) -> String {
        format!("{}:{seq}:{attempt}:{i}/{parts}", self.part_purpose)
    }

    /// The snapshot sequence a key under the prefix belongs to (a part or a manifest).
    pub fn snapshot_of(&self, key: &str) -> Option<u64> {
        key.strip_prefix(&self.prefix)?.get(..20)?.parse().ok()
    }

    /// Sequences of the snapshots whose manifest exists, ascending.
    pub fn list(&self) -> Result<Vec<u64>, PersistError> {
        let keys = self.store.list_all(&self.prefix).map_err(io)?;
        Ok(keys.iter().filter(|k| k.ends_with(".manifest")).filter_map(|k| self.snapshot_of(k)).collect())
    }

    /// The newest `n` snapshots whose manifest opens with this node's key for its own sequence,
    /// ascending: what the strategy may act on. A manifest planted or damaged in the store is
    /// passed over (and left there), so it can neither stand for a snapshot nor push the real
    /// ones out.
    pub fn newest_sound(&self, n: usize) -> Result<Vec<u64>, PersistError> {
        let mut sound = Vec::with_capacity(n);
        for seq in self.list()?.into_iter().rev() {
            if sound.len() == n {
                break;
            }
            if self.manifest_opens(seq)? {
                sound.push(seq);
            }
        }
        sound.reverse();
        Ok(sound)
    }

    /// Take a snapshot of `accountant`'s database now and store it: its sequence and size in
    /// bytes. Parts of a failed attempt are deleted (best effort); a snapshot of the same
    /// change already complete makes this one surplus, and its parts are deleted.
    pub fn take(&self, accountant: &Accountant) -> Result<(u64, u64), PersistError> {
        let snap = accountant.snapshot()?;
        let seq = snap.sequence();
        let manifest = Manifest { seq, attempt: self.host.now(), size: snap.size() };
        let parts = manifest.parts();
        let mut written = 0;
        let mut upload = || -> Result<(), PersistError> {
            for i in 0..parts {
                let plain = snap.read(i * PART, PART)?;
                let sealed =
                    self.host.seal(&self.part_purpose(seq, manifest.attempt, i, parts), &plain).map_err(seal_failed)?;
                self.store.put(&self.part_key(seq, manifest.attempt, i), &sealed, PutMode::CreateOnly).map_err(io)?;
                written += 1;
            }
            Ok(())
        };
        if let Err(e) = upload() {
            for i in 0..written {
                let _ = self.store.delete(&self.part_key(seq, manifest.attempt, i));
            }
            return Err(e);
        }
        let sealed = self.host.seal(&self.manifest_purpose(seq), &manifest.encode()).map_err(seal_failed)?;
        match self.store.put(&self.manifest_key(seq), &sealed, PutMode::CreateOnly) {
            Ok(()) => {}
            Err(BlobError::Exists) => {
                for i in 0..parts {
                    self.store.delete(&self.part_key(seq, manifest.attempt, i)).map_err(io)?;
                }
            }
            Err(e) => return Err(io(e)),
        }
        Ok((seq, manifest.size))
    }

    /// Keep the two newest sound snapshots ([`Snapshots::newest_sound`]); delete older ones
    /// and parts no manifest names (manifests first, so no manifest is ever left naming parts
    /// already gone). Returns the older of the two kept (0 with fewer than two): what the
    /// strategy's own history up to it may go by.
    pub fn prune(&self) -> Result<u64, PersistError> {
        let keep = match self.newest_sound(2)?[..] {
            [keep, _] => keep,
            _ => 0,
        };
        let manifests = self.list()?;
        let mut stale: Vec<String> = self
            .store
            .list_all(&self.prefix)
            .map_err(io)?
            .into_iter()
            .filter(|k| self.snapshot_of(k).is_some_and(|s| s < keep || !manifests.contains(&s)))
            .collect();
        stale.sort_by_key(|k| !k.ends_with(".manifest"));
        for k in stale {
            self.store.delete(&k).map_err(io)?;
        }
        Ok(keep)
    }

    /// Restore snapshot `seq` through `accountant` (during `recover`), reporting progress in
    /// parts. A damaged snapshot changes nothing and says why.
    pub fn restore(&self, accountant: &Accountant, seq: u64) -> Result<Restored, PersistError> {
        let damaged = |what: String| Ok(Restored::Damaged(what));
        let Some(sealed) = self.store.get(&self.manifest_key(seq)).map_err(io)? else {
            return damaged("its manifest is missing".into());
        };
        let manifest =
            match self.host.unseal(&self.manifest_purpose(seq), &sealed).ok().and_then(|m| Manifest::decode(&m)) {
                Some(m) if m.seq == seq => m,
                _ => return damaged("the manifest does not unseal".into()),
            };
        let parts = manifest.parts();
        let mut restore = accountant.begin_restore()?;
        let mut size = 0;
        for i in 0..parts {
            let Some(sealed) = self.store.get(&self.part_key(seq, manifest.attempt, i)).map_err(io)? else {
                return damaged(format!("part {i} of {parts} is missing"));
            };
            let Ok(plain) = self.host.unseal(&self.part_purpose(seq, manifest.attempt, i, parts), &sealed) else {
                return damaged(format!("part {i} of {parts} does not unseal"));
            };
            size += plain.len() as u64;
            restore.append(&plain)?;
            self.host.progress(i + 1, Some(parts), "snapshot parts read");
        }
        if size != manifest.size {
            return damaged("its parts do not add up to its size".into());
        }
        match restore.finish() {
            Ok(restored) if restored == seq => Ok(Restored::Done(seq)),
            Ok(other) => Err(PersistError::Tampered(format!("snapshot {seq} restored as change {other}"))),
            Err(e) => damaged(format!("the host refused it: {e}")),
        }
    }

    /// Whether the manifest of snapshot `seq` unseals with this node's key.
    pub fn manifest_opens(&self, seq: u64) -> Result<bool, PersistError> {
        let Some(sealed) = self.store.get(&self.manifest_key(seq)).map_err(io)? else { return Ok(false) };
        Ok(self.host.unseal(&self.manifest_purpose(seq), &sealed).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_refuse_garbage() {
        let m = Manifest { seq: 42, attempt: 1700, size: 5 * PART + 1 };
        assert_eq!((Manifest::decode(&m.encode()), m.parts()), (Some(m), 6));
        assert_eq!(Manifest::decode(&[1, 2, 3]), None);
        assert_eq!(Manifest::decode(&[[2u8].as_slice(), &[0; 24]].concat()), None, "unknown version");
    }

    #[test]
    fn keys_name_their_snapshot_under_their_own_prefix_only() {
        let host = crate::testing::TestHost::new().with_memory_store("shares").build();
        let store = host.open_store("shares").expect("granted");
        let at = |prefix: &str| Snapshots::new(&host, &store, prefix.into(), "p".into(), "m".into());
        let g2 = at("stash/g000002/snapshots/");
        assert_eq!(g2.snapshot_of(&g2.part_key(42, 1700, 3)), Some(42));
        assert_eq!(g2.snapshot_of(&g2.manifest_key(42)), Some(42));
        assert_eq!(g2.part_key(42, 1700, 3), "stash/g000002/snapshots/00000000000000000042-1700/part-000003");
        assert_eq!(at("stash/g000003/snapshots/").snapshot_of(&g2.manifest_key(42)), None);
    }
}

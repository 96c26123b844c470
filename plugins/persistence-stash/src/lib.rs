//! `persistence-stash`: Litestream-like. The host's accounting database goes to a granted blob
//! store (config `store`, default `shares`) as sealed snapshots plus a sealed log of the
//! changes since, every object written create-only and never changed:
//!
//! - `stash/log/<first:020>-<last:020>`: one segment per `record` call, the changes
//!   `first..=last` framed as `[len: u32 BE][change]...`, sealed for exactly that range;
//! - `stash/snapshots/<seq:020>-<attempt>/part-<i:06>`: a snapshot of the database as of
//!   change `seq`, in sealed parts of at most [`PART`] bytes, each sealed for its snapshot,
//!   attempt, index and count;
//! - `stash/snapshots/<seq:020>.manifest`: written last, naming the attempt whose parts make
//!   the snapshot. A snapshot exists exactly when its manifest does.
//!
//! A snapshot is taken in `record` once `snapshot-changes` changes (default 10,000) were
//! logged since the last one, once `snapshot-interval` seconds (default a day) passed with
//! changes, and whenever the log would not continue what the stash holds (a node that switched
//! to `stash` with accounts already in its database). Then snapshots older than the previous
//! one, and log segments it covers, are deleted: the stash always holds two snapshots and the
//! log after the older, so a damaged newest snapshot falls back to the one before.
//!
//! Recovery restores the newest snapshot that unseals whole, then applies the log after it,
//! in order, for as long as it is contiguous. A gap stops it and is reported with the missing
//! range: later changes are never applied over a hole. Blobs that do not unseal are counted
//! as tampered and skipped, never trusted.
//!
//! The store operator sees how many snapshots and segments there are, their sizes and times,
//! and the change numbers in the keys, never what they say.

use marsh_plugin_sdk::{
    Accountant, BlobError, Concurrency, Config, DbState, Host, InitError, Level, PersistError, Persistence, Plan,
    PluginInfo, PutMode, Recovery, RecoverySummary, Store,
};

const LOG: &str = "stash/log/";
const SNAPSHOTS: &str = "stash/snapshots/";
/// Plaintext bytes per sealed snapshot part (the host moves at most 4 MiB per call).
pub const PART: u64 = 2 << 20;
/// Bytes of changes handed to the accountant per call during recovery.
const APPLY_BATCH: usize = 512 << 10;
/// The state value naming the newest snapshot: `[seq: u64 BE][taken at: u64 BE]`.
const LAST_SNAPSHOT: &str = "last-snapshot";

/// The stash strategy.
#[derive(Debug)]
pub struct Stash {
    host: Host,
    store: Store,
    snapshot_changes: u64,
    snapshot_interval: u64,
    /// What the stash holds, learnt at the first `record`: the newest change logged or
    /// snapshotted, the newest snapshot, and when it was taken.
    cursor: Option<Cursor>,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    end: u64,
    snapshot: u64,
    snapshot_at: u64,
}

fn io(e: BlobError) -> PersistError {
    PersistError::Io(e.to_string())
}

fn segment_key(first: u64, last: u64) -> String {
    format!("{LOG}{first:020}-{last:020}")
}

fn segment_range(key: &str) -> Option<(u64, u64)> {
    let (first, last) = key.strip_prefix(LOG)?.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

fn manifest_key(seq: u64) -> String {
    format!("{SNAPSHOTS}{seq:020}.manifest")
}

fn part_key(seq: u64, attempt: u64, i: u64) -> String {
    format!("{SNAPSHOTS}{seq:020}-{attempt}/part-{i:06}")
}

fn part_purpose(seq: u64, attempt: u64, i: u64, parts: u64) -> String {
    format!("stash-part:{seq}:{attempt}:{i}/{parts}")
}

/// The snapshot sequence a key under `stash/snapshots/` belongs to.
fn snapshot_of(key: &str) -> Option<u64> {
    key.strip_prefix(SNAPSHOTS)?.get(..20)?.parse().ok()
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

fn encode_segment(changes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(changes.iter().map(|c| c.len() + 4).sum());
    for c in changes {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn decode_segment(mut b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (len, rest) = b.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        out.push(rest.get(..len)?.to_vec());
        b = &rest[len..];
    }
    Some(out)
}

/// The sequence number a host change blob starts with.
fn sequence_of(change: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(*change.first_chunk::<8>()?))
}

impl Stash {
    /// What the store holds, from listings (keys only; nothing is read but the state value).
    fn learn(&mut self) -> Result<Cursor, PersistError> {
        if let Some(c) = self.cursor {
            return Ok(c);
        }
        let snapshot = self.manifests()?.last().copied().unwrap_or(0);
        let end = self.store.list_all(LOG).map_err(io)?.iter().filter_map(|k| segment_range(k)).map(|r| r.1).max();
        let snapshot_at = match self.host.state_get(LAST_SNAPSHOT) {
            Ok(Some(v)) if v.len() == 16 && v[..8] == snapshot.to_be_bytes() => {
                u64::from_be_bytes(v[8..].try_into().unwrap_or_default())
            }
            // Unknown: count the interval from now.
            _ => self.host.now(),
        };
        let cursor = Cursor { end: end.unwrap_or(0).max(snapshot), snapshot, snapshot_at };
        self.cursor = Some(cursor);
        Ok(cursor)
    }

    /// Sequences of the snapshots whose manifest exists, ascending.
    fn manifests(&self) -> Result<Vec<u64>, PersistError> {
        let keys = self.store.list_all(SNAPSHOTS).map_err(io)?;
        Ok(keys.iter().filter(|k| k.ends_with(".manifest")).filter_map(|k| snapshot_of(k)).collect())
    }

    /// Take a snapshot and store it; then drop what the one before the previous covered.
    fn snapshot(&mut self, accountant: &Accountant) -> Result<(), PersistError> {
        let mut cursor = self.learn()?;
        let snap = accountant.snapshot()?;
        let seq = snap.sequence();
        if seq <= cursor.snapshot && cursor.snapshot > 0 {
            return Ok(());
        }
        let now = self.host.now();
        let manifest = Manifest { seq, attempt: now, size: snap.size() };
        let parts = manifest.parts();
        for i in 0..parts {
            let plain = snap.read(i * PART, PART)?;
            let sealed = self
                .host
                .seal(&part_purpose(seq, manifest.attempt, i, parts), &plain)
                .map_err(|e| PersistError::Io(format!("sealing: {e}")))?;
            self.store.put(&part_key(seq, manifest.attempt, i), &sealed, PutMode::CreateOnly).map_err(io)?;
        }
        let sealed = self
            .host
            .seal(&format!("stash-manifest:{seq}"), &manifest.encode())
            .map_err(|e| PersistError::Io(format!("sealing: {e}")))?;
        match self.store.put(&manifest_key(seq), &sealed, PutMode::CreateOnly) {
            Ok(()) => {}
            // A snapshot of this very state is already complete: ours is surplus.
            Err(BlobError::Exists) => {
                for i in 0..parts {
                    self.store.delete(&part_key(seq, manifest.attempt, i)).map_err(io)?;
                }
            }
            Err(e) => return Err(io(e)),
        }
        self.host.log(Level::Info, &format!("stashed a snapshot as of change {seq} ({} bytes)", manifest.size));
        let mut state = seq.to_be_bytes().to_vec();
        state.extend_from_slice(&now.to_be_bytes());
        if let Err(e) = self.host.state_put(LAST_SNAPSHOT, &state) {
            self.host.log(Level::Warn, &format!("could not note the snapshot in node state: {e}"));
        }
        cursor.snapshot = seq;
        cursor.snapshot_at = now;
        cursor.end = cursor.end.max(seq);
        self.cursor = Some(cursor);
        self.prune()
    }

    /// Keep the two newest snapshots and the log after the older; delete everything older.
    fn prune(&mut self) -> Result<(), PersistError> {
        let manifests = self.manifests()?;
        let [.., keep, _] = manifests[..] else { return Ok(()) };
        let newest = manifests.last().copied().unwrap_or(keep);
        for k in self.store.list_all(SNAPSHOTS).map_err(io)? {
            // Older snapshots, and parts of attempts that never got a manifest.
            let stale = snapshot_of(&k).is_some_and(|s| s < keep || (s < newest && !manifests.contains(&s)));
            if stale {
                self.store.delete(&k).map_err(io)?;
            }
        }
        for k in self.store.list_all(LOG).map_err(io)? {
            if segment_range(&k).is_some_and(|(_, last)| last <= keep) {
                self.store.delete(&k).map_err(io)?;
            }
        }
        Ok(())
    }

    /// Restore snapshot `seq` through `accountant`; `None` if it is damaged (counted in
    /// `summary`), having changed nothing.
    fn restore(
        &self,
        accountant: &Accountant,
        seq: u64,
        summary: &mut RecoverySummary,
    ) -> Result<Option<u64>, PersistError> {
        let tampered = |summary: &mut RecoverySummary, what: &str| {
            self.host.log(Level::Warn, &format!("snapshot {seq}: {what}; trying an older one"));
            summary.tampered += 1;
            Ok(None)
        };
        let Some(sealed) = self.store.get(&manifest_key(seq)).map_err(io)? else { return Ok(None) };
        let manifest =
            match self.host.unseal(&format!("stash-manifest:{seq}"), &sealed).ok().and_then(|m| Manifest::decode(&m)) {
                Some(m) if m.seq == seq => m,
                _ => return tampered(summary, "the manifest does not unseal"),
            };
        let parts = manifest.parts();
        let mut restore = accountant.begin_restore()?;
        let mut size = 0;
        for i in 0..parts {
            let key = part_key(seq, manifest.attempt, i);
            let Some(sealed) = self.store.get(&key).map_err(io)? else {
                return tampered(summary, &format!("part {i} of {parts} is missing"));
            };
            let Ok(plain) = self.host.unseal(&part_purpose(seq, manifest.attempt, i, parts), &sealed) else {
                return tampered(summary, &format!("part {i} of {parts} does not unseal"));
            };
            size += plain.len() as u64;
            restore.append(&plain)?;
            self.host.progress(i + 1, Some(parts), "snapshot parts read");
        }
        if size != manifest.size {
            return tampered(summary, "its parts do not add up to its size");
        }
        match restore.finish() {
            Ok(restored) if restored == seq => Ok(Some(seq)),
            Ok(other) => Err(PersistError::Tampered(format!("snapshot {seq} restored as change {other}"))),
            Err(e) => {
                self.host.log(Level::Warn, &format!("the host refused snapshot {seq}: {e}"));
                summary.tampered += 1;
                Ok(None)
            }
        }
    }
}

impl Persistence for Stash {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "persistence-stash",
            env!("CARGO_PKG_VERSION"),
            "sealed snapshots of the accounting database plus a sealed log of changes since",
            Concurrency::Single,
        )
    }

    fn init(host: Host, config: Config) -> Result<Self, InitError> {
        config.only_keys(&["store", "snapshot-changes", "snapshot-interval"])?;
        let store = host.open_store(config.get("store").unwrap_or("shares"))?;
        let snapshot_changes = config.parse_or("snapshot-changes", 10_000u64)?.max(1);
        let snapshot_interval = config.parse_or("snapshot-interval", 86_400u64)?;
        Ok(Stash { host, store, snapshot_changes, snapshot_interval, cursor: None })
    }

    fn startup(&mut self, state: DbState, auto_recover: bool) -> Result<Plan, InitError> {
        if state.present {
            return Ok(Plan::UseLocal);
        }
        let stashed = !self.store.list_keys("stash/", None, 1)?.keys.is_empty();
        match (stashed, auto_recover) {
            (false, _) => Ok(Plan::UseLocal),
            (true, true) => Ok(Plan::Recover),
            (true, false) => Err(InitError::RecoveryNeeded(Recovery {
                reason: "the local accounting database is missing, and the store holds stashed snapshots and \
                         change logs: accounts, leases and write enablers must be restored from them"
                    .into(),
                command: "marsh recover".into(),
            })),
        }
    }

    fn record(&mut self, accountant: &Accountant, first: u64, changes: &[Vec<u8>]) -> Result<(), PersistError> {
        let Some(last) = (first + changes.len() as u64).checked_sub(1).filter(|_| !changes.is_empty()) else {
            return Ok(());
        };
        let cursor = self.learn()?;
        if last <= cursor.end {
            return Ok(()); // A retry of changes the stash already holds.
        }
        let sealed = self
            .host
            .seal(&format!("stash-log:{first}-{last}"), &encode_segment(changes))
            .map_err(|e| PersistError::Io(format!("sealing: {e}")))?;
        match self.store.put(&segment_key(first, last), &sealed, PutMode::CreateOnly) {
            Ok(()) | Err(BlobError::Exists) => {}
            Err(e) => return Err(io(e)),
        }
        let continues = first <= cursor.end + 1;
        let cursor = Cursor { end: last, ..cursor };
        self.cursor = Some(cursor);
        let logged = last - cursor.snapshot;
        let due = logged >= self.snapshot_changes
            || self.host.now().saturating_sub(cursor.snapshot_at) >= self.snapshot_interval;
        if !continues || due { self.snapshot(accountant) } else { Ok(()) }
    }

    fn recover(&mut self, accountant: &Accountant) -> Result<RecoverySummary, PersistError> {
        let mut summary = RecoverySummary::default();
        let mut base = 0;
        for seq in self.manifests()?.into_iter().rev() {
            if let Some(restored) = self.restore(accountant, seq, &mut summary)? {
                summary.snapshots_read = 1;
                base = restored;
                break;
            }
        }
        let mut segments: Vec<(u64, u64, String)> = self
            .store
            .list_all(LOG)
            .map_err(io)?
            .into_iter()
            .filter_map(|k| segment_range(&k).map(|(f, l)| (f, l, k)))
            .filter(|&(_, last, _)| last > base)
            .collect();
        segments.sort();
        let total = segments.len() as u64;
        let mut covered = base;
        let (mut batch, mut batch_bytes) = (Vec::new(), 0usize);
        for (done, (first, last, key)) in segments.iter().enumerate() {
            if *last <= covered {
                continue;
            }
            if *first > covered + 1 {
                break;
            }
            let Some(sealed) = self.store.get(key).map_err(io)? else { continue };
            let changes = match self
                .host
                .unseal(&format!("stash-log:{first}-{last}"), &sealed)
                .ok()
                .and_then(|p| decode_segment(&p))
            {
                Some(c)
                    if c.len() as u64 == last - first + 1
                        && c.iter().enumerate().all(|(i, c)| sequence_of(c) == Some(first + i as u64)) =>
                {
                    c
                }
                _ => {
                    self.host.log(Level::Warn, &format!("skipping tampered log segment {key}"));
                    summary.tampered += 1;
                    continue;
                }
            };
            for change in changes.into_iter().skip((covered + 1 - first) as usize) {
                batch_bytes += change.len();
                batch.push(change);
            }
            covered = *last;
            if batch_bytes >= APPLY_BATCH {
                accountant.apply(&batch)?;
                summary.changes_read += batch.len() as u64;
                (batch, batch_bytes) = (Vec::new(), 0);
                self.host.progress(done as u64 + 1, Some(total), "log segments applied");
            }
        }
        if !batch.is_empty() {
            accountant.apply(&batch)?;
            summary.changes_read += batch.len() as u64;
        }
        // Anything logged beyond a hole is left out, and the hole is reported.
        if let Some(next) = segments.iter().map(|s| s.0).filter(|&f| f > covered).min() {
            let beyond = segments.iter().map(|s| s.1).max().unwrap_or(next);
            summary.gaps.push(format!(
                "{}-{} (changes {next}-{beyond} after it were not applied)",
                covered + 1,
                next - 1
            ));
        }
        self.host.progress(total, Some(total), "log segments applied");
        Ok(summary)
    }
}

marsh_plugin_sdk::export_persistence!(Stash);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_frames_round_trip_and_refuse_garbage() {
        assert_eq!(segment_range(&segment_key(7, 9)), Some((7, 9)));
        assert_eq!(segment_range("stash/log/9-7"), None);
        assert_eq!(snapshot_of(&part_key(42, 1700, 3)), Some(42));
        assert_eq!(snapshot_of(&manifest_key(42)), Some(42));
        let m = Manifest { seq: 42, attempt: 1700, size: 5 * PART + 1 };
        assert_eq!((Manifest::decode(&m.encode()), m.parts()), (Some(m), 6));
        assert_eq!(Manifest::decode(&[1, 2, 3]), None);
        let changes = vec![b"abc".to_vec(), Vec::new(), vec![7; 300]];
        assert_eq!(decode_segment(&encode_segment(&changes)), Some(changes));
        assert_eq!(decode_segment(&[0, 0, 0, 9, 1]), None);
    }
}

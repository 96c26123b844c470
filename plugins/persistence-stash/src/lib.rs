//! `persistence-stash`: Litestream-like. The host's accounting database goes to a granted blob
//! store (config `store`, default `shares`) as sealed snapshots plus a sealed log of the
//! changes since, every object written create-only and never changed, in *generations*:
//!
//! - `stash/g<gen>/log/<first:020>-<last:020>`: one segment per `record` call, the changes
//!   `first..=last` framed as `[len: u32 BE][change]...`, sealed for that generation and range;
//! - `stash/g<gen>/snapshots/<seq:020>-<attempt>/part-<i:06>`: a snapshot of the database as of
//!   change `seq`, in sealed parts of at most [`PART`] bytes, each sealed for its generation,
//!   snapshot, attempt, index and count;
//! - `stash/g<gen>/snapshots/<seq:020>.manifest`: written last, naming the attempt whose parts
//!   make the snapshot. A snapshot exists exactly when its manifest does.
//!
//! A snapshot is taken in `record` once `snapshot-changes` changes (default 10,000) were
//! logged since the last one, once `snapshot-interval` seconds (default a day) passed with
//! changes, and instead of a log segment whenever the changes would not continue what the
//! generation holds (a node that switched to `stash` with accounts already in its database).
//! Then snapshots older than the previous one, log segments it covers, and parts no manifest
//! names are deleted: a generation holds two snapshots and the log after the older, so a
//! damaged newest snapshot falls back to the one before.
//!
//! What the newest generation holds is, to this plugin, its newest snapshot plus the log
//! contiguous after it (its *end*). Changes handed over again with numbers up to the end must
//! be the very changes stored (a retry after a crash): anything else is refused, never
//! overwritten. A local database behind the end is stale, and start-up asks for recovery
//! rather than serve from it.
//!
//! Recovery restores the newest snapshot of the newest generation that unseals whole, then
//! applies the log after it, in order, for as long as it is contiguous. A gap stops it and is
//! reported with the missing range: later changes are never applied over a hole. Blobs that do
//! not unseal are counted as tampered and skipped, never trusted; when nothing unseals at all
//! (the wrong node key?) recovery fails instead. A recovery that could not reach the end of
//! what was stashed snapshots the database it rebuilt into a new generation, which the node
//! then continues: nothing stashed is ever deleted because of what a recovery could not read,
//! and the older generation stays for the operator to inspect (or delete: `stash/g<gen>/`).
//!
//! The store operator sees how many snapshots and segments there are, their sizes and times,
//! and the change numbers in the keys, never what they say.
//!
//! One file past 500 lines on purpose: a plugin is read by its authors' peers top to bottom, as
//! the example is, and the generation, snapshot and log logic share one set of key names.

use std::collections::BTreeMap;

use marsh_plugin_sdk::snapshots::{Restored, Snapshots};
use marsh_plugin_sdk::{
    Accountant, ApplyBatch, BlobError, Concurrency, Config, DbState, Host, InitError, Level, PersistError, Persistence,
    Plan, PluginInfo, PutMode, Recovery, RecoverySummary, Store, change_sequence, decode_changes, encode_changes,
};

const ROOT: &str = "stash/";
pub use marsh_plugin_sdk::snapshots::PART;
/// The state value naming the newest snapshot: `[generation: u64 BE][seq: u64 BE][taken at: u64 BE]`.
const LAST_SNAPSHOT: &str = "last-snapshot";

/// The stash strategy.
#[derive(Debug)]
pub struct Stash {
    host: Host,
    store: Store,
    snapshot_changes: u64,
    snapshot_interval: u64,
    /// What the newest generation holds, learnt at first use.
    cursor: Option<Cursor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// The generation written to.
    generation: u64,
    /// Its newest snapshot plus the contiguous log after it reach this change.
    end: u64,
    /// The newest change any of its objects names (beyond `end` if its log has a hole).
    beyond: u64,
    /// Its newest snapshot's sequence (0 when none).
    snapshot: u64,
    /// When that was taken.
    snapshot_at: u64,
}

fn io(e: BlobError) -> PersistError {
    PersistError::Io(e.to_string())
}

fn seal_failed(e: impl std::fmt::Display) -> PersistError {
    PersistError::Io(format!("sealing: {e}"))
}

fn generation_prefix(generation: u64) -> String {
    format!("{ROOT}g{generation:06}/")
}

fn log_prefix(generation: u64) -> String {
    format!("{}log/", generation_prefix(generation))
}

fn snapshots_prefix(generation: u64) -> String {
    format!("{}snapshots/", generation_prefix(generation))
}

fn segment_key(generation: u64, first: u64, last: u64) -> String {
    format!("{}{first:020}-{last:020}", log_prefix(generation))
}

fn segment_purpose(generation: u64, first: u64, last: u64) -> String {
    format!("stash-log:{generation}:{first}-{last}")
}

fn segment_range(generation: u64, key: &str) -> Option<(u64, u64)> {
    let (first, last) = key.strip_prefix(&log_prefix(generation))?.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// The generation a key under `stash/` belongs to.
fn generation_of(key: &str) -> Option<u64> {
    key.strip_prefix(ROOT)?.strip_prefix('g')?.get(..6)?.parse().ok()
}

/// How far a snapshot at `from` plus `segments` (ascending) reach without a hole.
fn contiguous_end(from: u64, segments: &[(u64, u64, String)]) -> u64 {
    let mut end = from;
    for &(first, last, _) in segments {
        if first > end + 1 {
            break;
        }
        end = end.max(last);
    }
    end
}

impl Stash {
    /// Generations that hold something recovery can start from (a manifest, or a log from
    /// change 1), ascending. Parts left by a snapshot that never finished do not make one.
    /// Objects under `stash/` outside any generation are refused, not ignored.
    fn generations(&self) -> Result<Vec<u64>, PersistError> {
        let keys = self.store.list_all(ROOT).map_err(io)?;
        if let Some(stray) = keys.iter().find(|k| generation_of(k).is_none()) {
            return Err(PersistError::Io(format!(
                "the stash holds `{stray}`, which belongs to no generation: a layout this plugin does not read"
            )));
        }
        let usable = |generation: u64| {
            let snapshots = self.snapshots(generation);
            keys.iter().any(|k| {
                (k.ends_with(".manifest") && snapshots.snapshot_of(k).is_some())
                    || segment_range(generation, k).is_some_and(|(first, _)| first == 1)
            })
        };
        let mut gens: Vec<u64> = keys.iter().filter_map(|k| generation_of(k)).collect();
        gens.dedup();
        gens.retain(|&g| usable(g));
        Ok(gens)
    }

    /// The newest generation number any object names (usable or not), so a new one is new.
    fn newest_generation_named(&self) -> Result<u64, PersistError> {
        Ok(self.store.list_all(ROOT).map_err(io)?.iter().filter_map(|k| generation_of(k)).max().unwrap_or(0))
    }

    /// Sequences of generation `generation`'s snapshots whose manifest exists, ascending.
    fn manifests(&self, generation: u64) -> Result<Vec<u64>, PersistError> {
        self.snapshots(generation).list()
    }

    /// Generation `generation`'s log segments `(first, last, key)`, ascending.
    fn segments(&self, generation: u64) -> Result<Vec<(u64, u64, String)>, PersistError> {
        let mut segments: Vec<(u64, u64, String)> = self
            .store
            .list_all(&log_prefix(generation))
            .map_err(io)?
            .into_iter()
            .filter_map(|k| segment_range(generation, &k).map(|(f, l)| (f, l, k)))
            .collect();
        segments.sort();
        Ok(segments)
    }

    /// What the newest generation holds, from listings (keys only; nothing is read but the
    /// state value).
    fn learn(&mut self) -> Result<Cursor, PersistError> {
        if let Some(c) = self.cursor {
            return Ok(c);
        }
        let generation = self.generations()?.last().copied().unwrap_or(0);
        // Only a manifest that opens counts: one planted in the store must not stand for changes
        // the stash does not hold (it would stop the log).
        let snapshot = self.snapshots(generation).newest_sound(1)?.last().copied().unwrap_or(0);
        let segments = self.segments(generation)?;
        let end = contiguous_end(snapshot, &segments);
        let beyond = segments.iter().map(|s| s.1).max().unwrap_or(0).max(end);
        let mut noted = generation.to_be_bytes().to_vec();
        noted.extend_from_slice(&snapshot.to_be_bytes());
        let snapshot_at = match self.host.state_get(LAST_SNAPSHOT) {
            Ok(Some(v)) if v.len() == 24 && v[..16] == noted[..] => {
                u64::from_be_bytes(v[16..].try_into().unwrap_or_default())
            }
            // Unknown: count the interval from now.
            _ => self.host.now(),
        };
        let cursor = Cursor { generation, end, beyond, snapshot, snapshot_at };
        self.cursor = Some(cursor);
        Ok(cursor)
    }

    /// Check that changes `first..` handed over again are the ones generation `generation` holds
    /// under those numbers (those its snapshot covers cannot be compared and count as held).
    fn verify_held(&self, generation: u64, first: u64, changes: &[Vec<u8>], snapshot: u64) -> Result<(), PersistError> {
        let from = first.max(snapshot + 1);
        let Some(last) = (first + changes.len() as u64).checked_sub(1).filter(|&l| l >= from) else { return Ok(()) };
        let mut held = BTreeMap::new();
        for (f, l, key) in self.segments(generation)? {
            if l < from || f > last {
                continue;
            }
            let Some(sealed) = self.store.get(&key).map_err(io)? else { continue };
            let stored =
                self.host.unseal(&segment_purpose(generation, f, l), &sealed).ok().and_then(|p| decode_changes(&p));
            held.extend(stored.into_iter().flatten().filter_map(|c| change_sequence(&c).map(|seq| (seq, c))));
        }
        for seq in from..=last {
            if held.get(&seq) != changes.get((seq - first) as usize) {
                return Err(PersistError::Gap(format!(
                    "the stash holds other changes than the node under number {seq}: the local database and the \
                     stash disagree (run `marsh recover`); nothing was overwritten"
                )));
            }
        }
        Ok(())
    }

    /// Generation `generation`'s snapshots.
    fn snapshots(&self, generation: u64) -> Snapshots<'_> {
        Snapshots::new(
            &self.host,
            &self.store,
            snapshots_prefix(generation),
            format!("stash-part:{generation}"),
            format!("stash-manifest:{generation}"),
        )
    }

    /// Take a snapshot into generation `generation` and make it the cursor's; then prune.
    fn snapshot(&mut self, accountant: &Accountant, generation: u64) -> Result<(), PersistError> {
        let now = self.host.now();
        let (seq, size) = self.snapshots(generation).take(accountant)?;
        self.host.log(
            Level::Info,
            &format!("stashed a snapshot as of change {seq} in generation {generation} ({size} bytes)"),
        );
        let mut state = generation.to_be_bytes().to_vec();
        state.extend_from_slice(&seq.to_be_bytes());
        state.extend_from_slice(&now.to_be_bytes());
        if let Err(e) = self.host.state_put(LAST_SNAPSHOT, &state) {
            self.host.log(Level::Warn, &format!("could not note the snapshot in node state: {e}"));
        }
        let previous = self.cursor.filter(|c| c.generation == generation);
        let end = previous.map_or(seq, |c| c.end.max(seq));
        let beyond = previous.map_or(seq, |c| c.beyond.max(seq));
        self.cursor = Some(Cursor { generation, end, beyond, snapshot: seq, snapshot_at: now });
        self.prune(generation)
    }

    /// In generation `generation`, keep the two newest snapshots and the log after the older; delete
    /// everything older, and parts of attempts that never got a manifest.
    fn prune(&mut self, generation: u64) -> Result<(), PersistError> {
        let keep = self.snapshots(generation).prune()?;
        if keep > 0 {
            for (_, last, key) in self.segments(generation)? {
                if last <= keep {
                    self.store.delete(&key).map_err(io)?;
                }
            }
        }
        Ok(())
    }

    /// Restore snapshot `seq` of generation `generation` through `accountant`; `None` if it is
    /// damaged (counted in `summary`), having changed nothing.
    fn restore(
        &self,
        accountant: &Accountant,
        generation: u64,
        seq: u64,
        summary: &mut RecoverySummary,
    ) -> Result<Option<u64>, PersistError> {
        match self.snapshots(generation).restore(accountant, seq)? {
            Restored::Done(seq) => Ok(Some(seq)),
            Restored::Damaged(what) => {
                let note = format!("snapshot {seq} of generation {generation}: {what}; trying an older one");
                self.host.log(Level::Warn, &note);
                summary.tampered += 1;
                Ok(None)
            }
        }
    }

    /// Apply generation `generation`'s log after `base`, in order, while it is contiguous; returns how
    /// far it got and the first change of the segment after the hole, if there is one.
    fn replay(
        &self,
        accountant: &Accountant,
        generation: u64,
        base: u64,
        summary: &mut RecoverySummary,
    ) -> Result<(u64, Option<u64>), PersistError> {
        let segments: Vec<(u64, u64, String)> = self.segments(generation)?.into_iter().filter(|s| s.1 > base).collect();
        let total = segments.len() as u64;
        let (mut covered, mut resume) = (base, None);
        let mut batch = ApplyBatch::new(accountant);
        for (done, (first, last, key)) in segments.iter().enumerate() {
            if *last <= covered {
                continue;
            }
            if *first > covered + 1 {
                resume = Some(*first);
                break;
            }
            let Some(sealed) = self.store.get(key).map_err(io)? else { continue };
            let changes = self
                .host
                .unseal(&segment_purpose(generation, *first, *last), &sealed)
                .ok()
                .and_then(|p| decode_changes(&p));
            let sound = changes.as_ref().is_some_and(|c| {
                c.len() as u64 == last - first + 1
                    && c.iter().enumerate().all(|(i, c)| change_sequence(c) == Some(first + i as u64))
            });
            let (true, Some(changes)) = (sound, changes) else {
                self.host.log(Level::Warn, &format!("skipping tampered log segment {key}"));
                summary.tampered += 1;
                continue;
            };
            let mut applied = false;
            for change in changes.into_iter().skip((covered + 1 - first) as usize) {
                applied |= batch.push(change)?;
            }
            covered = *last;
            if applied {
                self.host.progress(done as u64 + 1, Some(total), "log segments applied");
            }
        }
        batch.flush()?;
        summary.changes_read += batch.applied();
        self.host.progress(total, Some(total), "log segments applied");
        Ok((covered, resume))
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
        let cursor = self.learn().map_err(|e| InitError::Unavailable(format!("reading the stash: {e}")))?;
        let reason = if !state.present {
            if self.store.list_keys(ROOT, None, 1)?.keys.is_empty() {
                return Ok(Plan::UseLocal);
            }
            "the local accounting database is missing, and the store holds stashed snapshots and change logs: \
             accounts, leases and write enablers must be restored from them"
                .to_owned()
        } else if state.last_sequence < cursor.end {
            format!(
                "the local accounting database ends at change {}, but the stash holds changes up to {}: the \
                 database is older than what was persisted (restored from an old copy?) and must be rebuilt",
                state.last_sequence, cursor.end
            )
        } else {
            return Ok(Plan::UseLocal);
        };
        if auto_recover {
            return Ok(Plan::Recover);
        }
        Err(InitError::RecoveryNeeded(Recovery { reason, command: "marsh recover".into() }))
    }

    fn record(&mut self, accountant: &Accountant, first: u64, changes: &[Vec<u8>]) -> Result<(), PersistError> {
        let Some(last) = (first + changes.len() as u64).checked_sub(1).filter(|_| !changes.is_empty()) else {
            return Ok(());
        };
        let cursor = self.learn()?;
        // Numbers the stash already holds: only a retry of the very same changes is accepted.
        let held = (cursor.end.min(last) + 1).saturating_sub(first) as usize;
        self.verify_held(cursor.generation, first, &changes[..held], cursor.snapshot)?;
        if last <= cursor.end {
            return Ok(());
        }
        let (first, changes) = (first + held as u64, &changes[held..]);
        if cursor.beyond > cursor.end {
            // The generation has a hole nobody recovered across: go on in a new one.
            let next = self.newest_generation_named()? + 1;
            self.host.log(
                Level::Warn,
                &format!(
                    "the stash's generation {} has a hole after change {}; continuing in generation {next}",
                    cursor.generation, cursor.end
                ),
            );
            return self.snapshot(accountant, next);
        }
        if first != cursor.end + 1 {
            // Changes that do not continue the stash: a snapshot, which holds them, anchors them.
            return self.snapshot(accountant, cursor.generation);
        }
        let sealed = self
            .host
            .seal(&segment_purpose(cursor.generation, first, last), &encode_changes(changes))
            .map_err(seal_failed)?;
        match self.store.put(&segment_key(cursor.generation, first, last), &sealed, PutMode::CreateOnly) {
            Ok(()) => {}
            // Written before a crash that came before the host noted it: the same bytes, or refused.
            Err(BlobError::Exists) => self.verify_held(cursor.generation, first, changes, 0)?,
            Err(e) => return Err(io(e)),
        }
        let cursor = Cursor { end: last, beyond: last, ..cursor };
        self.cursor = Some(cursor);
        let due = last - cursor.snapshot >= self.snapshot_changes
            || self.host.now().saturating_sub(cursor.snapshot_at) >= self.snapshot_interval;
        if due { self.snapshot(accountant, cursor.generation) } else { Ok(()) }
    }

    fn recover(&mut self, accountant: &Accountant) -> Result<RecoverySummary, PersistError> {
        let mut summary = RecoverySummary::default();
        let gens = self.generations()?;
        let Some(&newest) = gens.last() else { return Ok(summary) };
        // The newest generation with a sound snapshot, or whose log starts at the beginning.
        let mut chosen = None;
        'gens: for &generation in gens.iter().rev() {
            for seq in self.manifests(generation)?.into_iter().rev() {
                if let Some(restored) = self.restore(accountant, generation, seq, &mut summary)? {
                    summary.snapshots_read = 1;
                    chosen = Some((generation, restored));
                    break 'gens;
                }
            }
            if self.segments(generation)?.first().is_some_and(|s| s.0 == 1) {
                chosen = Some((generation, 0));
                break;
            }
        }
        let Some((generation, base)) = chosen else { return Err(self.unrecoverable(&gens)?) };
        let (covered, resume) = self.replay(accountant, generation, base, &mut summary)?;
        if summary.changes_read == 0 && summary.snapshots_read == 0 && base == 0 {
            return Err(self.unrecoverable(&gens)?);
        }
        // How far the stash reached: its newest snapshot or segment, in this generation or any
        // newer one (a damaged newest snapshot may hold changes no segment does).
        let mut beyond = 0;
        for &g in gens.iter().filter(|&&g| g >= generation) {
            let snapshots = self.manifests(g)?.into_iter().max().unwrap_or(0);
            let logged = self.segments(g)?.iter().map(|s| s.1).max().unwrap_or(0);
            beyond = beyond.max(snapshots).max(logged);
        }
        if beyond > covered {
            summary.gaps.push(match resume {
                Some(next) => {
                    format!("{}-{} (changes {next}-{beyond} after it were not applied)", covered + 1, next - 1)
                }
                None => format!("{}-{beyond}", covered + 1),
            });
        }
        // Not all of what was stashed came back: the node goes on from what did, in a new
        // generation that starts with a snapshot of it.
        if generation != newest || beyond > covered || summary.tampered > 0 {
            self.cursor = None;
            let next = self.newest_generation_named()? + 1;
            self.snapshot(accountant, next)?;
        }
        self.cursor = None;
        Ok(summary)
    }
}

impl Stash {
    /// Why nothing could be recovered from a stash that holds generations: another node's key
    /// (nothing unseals), or nothing restorable although it unseals. The node must not start
    /// empty over either.
    fn unrecoverable(&self, gens: &[u64]) -> Result<PersistError, PersistError> {
        for &generation in gens {
            for seq in self.manifests(generation)? {
                if self.snapshots(generation).manifest_opens(seq)? {
                    return Ok(PersistError::Gap(
                        "no snapshot in the stash could be restored and no log starts at change 1 (the node's \
                         log says why); refusing to start from nothing"
                            .into(),
                    ));
                }
            }
            for (first, last, key) in self.segments(generation)?.into_iter().take(3) {
                let Some(sealed) = self.store.get(&key).map_err(io)? else { continue };
                if self.host.unseal(&segment_purpose(generation, first, last), &sealed).is_ok() {
                    return Ok(PersistError::Gap(format!(
                        "the stash's log has a hole before change {first} and no snapshot could be restored; \
                         refusing to start from nothing"
                    )));
                }
            }
        }
        Ok(PersistError::Tampered(
            "nothing in the stash unseals with this node's key: is this the node directory that wrote it?".into(),
        ))
    }
}

marsh_plugin_sdk::export_persistence!(Stash);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_frames_round_trip_and_refuse_garbage() {
        assert_eq!(segment_range(3, &segment_key(3, 7, 9)), Some((7, 9)));
        assert_eq!(segment_range(3, &segment_key(4, 7, 9)), None);
        assert_eq!(segment_range(3, "stash/g000003/log/9-7"), None);
        assert_eq!((generation_of("stash/g000012/snapshots/x"), generation_of("stash/x")), (Some(12), None));
        let changes = vec![b"abc".to_vec(), Vec::new(), vec![7; 300]];
        assert_eq!(decode_changes(&encode_changes(&changes)), Some(changes));
        assert_eq!(decode_changes(&[0, 0, 0, 9, 1]), None);
        let segs = |r: &[(u64, u64)]| r.iter().map(|&(f, l)| (f, l, String::new())).collect::<Vec<_>>();
        assert_eq!(contiguous_end(10, &segs(&[(5, 12), (13, 20), (22, 30)])), 20);
        assert_eq!(contiguous_end(0, &segs(&[(2, 5)])), 0);
    }
}

//! `persistence-records`: every accounting change becomes one small sealed object in a granted
//! blob store (config `store`, default `shares`: next to the shares), at
//! `accounting/<sequence:020>`, written create-only; and every `pack-changes` changes (default
//! 1000; 0 for none) the run of them is sealed again as one pack (`pack`), so recovery reads a
//! hundred objects for 100,000 changes, not 100,000. Recovery reads the packs in order, and for
//! what no sound pack covers (a hole between packs, a damaged pack, the changes after the last)
//! lists the records and reads them 1000 at a time in one batched call (`Store::get_many`: the
//! host reads them concurrently), unseals each, and applies them through the host's accountant;
//! a blob that does not unseal or whose sequence does not match its key is counted as tampered
//! and skipped, and missing sequence numbers are reported as gaps. Packing never fails a
//! `record`: a range that cannot be packed is logged and left to its records. History recorded
//! before packs (a store from an older marsh, or `pack-changes` turned on later) is packed one
//! range per `record` call, newest first.
//!
//! History is bounded: once `snapshot-changes` changes (default 100,000; 0 keeps every record
//! forever, as marsh did before) were recorded since the last snapshot, a sealed snapshot of the
//! whole database is taken through the host (`accounting/snapshots/`, the SDK's
//! [`snapshots`](marsh_plugin_sdk::snapshots) layout), the two newest are kept, and the records
//! and packs the older of the two covers are deleted. The store then holds at most two
//! snapshots and about twice `snapshot-changes` records, however many changes the node makes.
//! Recovery restores the newest snapshot that opens (the older one when it is damaged) and
//! replays the packs and records after it. Changes a snapshot already holds get no record (nor
//! pack): a node whose changes came faster than records are written catches up at its next
//! snapshot instead of writing a backlog out one object at a time.
//!
//! A change handed over again under a number already held must be the very change stored (a
//! retry after a crash); other content is refused, never written over.
//!
//! The store operator sees how many changes there were and when, never what they say: keys
//! carry only sequence numbers and every object is sealed with the node's key.
//!
//! Start-up: with a local database that holds every change the store has a record of, use it.
//! Without one, or with one older than the store (a record past its newest change), the node
//! must recover first: `recovery-needed`, or recover at once when the operator allowed it.

mod pack;

use std::collections::BTreeMap;

use marsh_plugin_sdk::snapshots::{Restored, Snapshots};
use marsh_plugin_sdk::{
    Accountant, ApplyBatch, BlobError, Concurrency, Config, DbState, Host, InitError, Level, PersistError, Persistence,
    Plan, PluginInfo, PutMode, Recovery, RecoverySummary, Store, change_sequence,
};

const PREFIX: &str = "accounting/";
const PURPOSE: &str = "records-change";
/// Where snapshots live: under the strategy's prefix, sorted after every record and pack.
const SNAPSHOTS: &str = "accounting/snapshots/";
/// Records between progress reports (and applies): at least this many, and enough that a
/// recovery reports about a thousand times whatever its size.
const PROGRESS_EVERY: u64 = 16;

/// The records strategy.
#[derive(Debug)]
pub struct Records {
    host: Host,
    store: Store,
    /// Changes per pack; 0 for none.
    pack_changes: u64,
    /// The changes recorded since the last pack, by sequence: the next pack is built from them
    /// (and from the store for any this instance did not record itself).
    unpacked: BTreeMap<u64, Vec<u8>>,
    /// The last changes of ranges recorded before this instance started that have no pack
    /// (recorded before packs existed, or not packable then), newest at the end: one is packed
    /// per `record` call, so a store written before packs gets them. `None` until the first
    /// `record`.
    backfill: Option<Vec<u64>>,
    /// Changes between snapshots; 0 for none (history kept whole).
    snapshot_changes: u64,
    /// The newest snapshot's change (0: none), learnt at the first `record`.
    newest_snapshot: Option<u64>,
}

/// Ranges of history looked at for packing when an instance starts: the newest this many.
const BACKFILL_RANGES: u64 = 10_000;

fn key(sequence: u64) -> String {
    format!("{PREFIX}{sequence:020}")
}

/// The sequence a change record's key names, or `None` for a key that names none.
fn sequence_of(key: &str) -> Option<u64> {
    key.strip_prefix(PREFIX)?.parse().ok()
}

/// Whether `key` is a change record's (not a pack's or a snapshot's, which sort after them all).
fn is_record(key: &str) -> bool {
    key.strip_prefix(PREFIX).and_then(|k| k.bytes().next()).is_some_and(|b| b.is_ascii_digit())
}

fn io(e: BlobError) -> PersistError {
    PersistError::Io(e.to_string())
}

/// Records read in one batched call: small sealed objects, far below the bytes one call moves.
const READ_WINDOW: usize = 1000;

impl Records {
    /// The strategy's snapshots.
    fn snapshots(&self) -> Snapshots<'_> {
        Snapshots::new(
            &self.host,
            &self.store,
            SNAPSHOTS.into(),
            "records-snapshot-part".into(),
            "records-snapshot-manifest".into(),
        )
    }

    /// Take a snapshot when `snapshot-changes` were recorded since the last (`last` being the
    /// newest recorded), then delete what the older of the two kept covers. Like packing, this
    /// never fails `record`: the records stay the truth until a snapshot is complete.
    fn compact(&mut self, accountant: &Accountant, last: u64) {
        if self.snapshot_changes == 0 || last.saturating_sub(self.newest_snapshot()) < self.snapshot_changes {
            return;
        }
        let compacted = self.snapshots().take(accountant).and_then(|(seq, size)| {
            self.newest_snapshot = Some(seq);
            self.host.log(Level::Info, &format!("took an accounting snapshot as of change {seq} ({size} bytes)"));
            let keep = self.snapshots().prune()?;
            self.delete_through(keep)
        });
        if let Err(e) = compacted {
            self.host.log(Level::Warn, &format!("compacting the change records: {e}; they are kept"));
        }
    }

    /// The newest snapshot's change (0 for none), listed once per instance (again after a
    /// listing failed).
    fn newest_snapshot(&mut self) -> u64 {
        if let Some(n) = self.newest_snapshot {
            return n;
        }
        match self.snapshots().newest_sound(1) {
            Ok(list) => *self.newest_snapshot.insert(list.last().copied().unwrap_or(0)),
            Err(e) => {
                self.host.log(Level::Warn, &format!("listing snapshots: {e}"));
                0
            }
        }
    }

    /// Delete the records and packs of changes up to `through` (a snapshot holds them).
    fn delete_through(&self, through: u64) -> Result<(), PersistError> {
        if through == 0 {
            return Ok(());
        }
        for (first, last) in self.packs().map_err(io)? {
            if last <= through {
                self.store.delete(&pack::key(first, last)).map_err(io)?;
            }
        }
        loop {
            let page = self.store.list_keys(PREFIX, None, 1000).map_err(io)?;
            let old: Vec<&String> =
                page.keys.iter().take_while(|k| is_record(k) && sequence_of(k).is_some_and(|s| s <= through)).collect();
            for k in &old {
                self.store.delete(k).map_err(io)?;
            }
            if old.len() < page.keys.len() || page.next.is_none() {
                return Ok(());
            }
        }
    }

    /// The objects under `keys`, read in one batched call (concurrently by the host). A
    /// window too large for one call, or an object too large for a batch (records are far
    /// smaller than either), is read one by one.
    fn fetch(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, PersistError> {
        let answers = match self.store.get_many(keys) {
            Err(BlobError::TooLarge(_)) => keys.iter().map(|k| self.store.get(k)).collect(),
            other => other.map_err(io)?,
        };
        // An object too large for a batch (no record is) is read alone.
        let alone = |(a, k): (marsh_plugin_sdk::GetAnswer, &String)| match a {
            Err(BlobError::TooLarge(_)) => self.store.get(k),
            other => other,
        };
        answers.into_iter().zip(keys).map(alone).map(|a| a.map_err(io)).collect()
    }

    /// The change the record under `key` holds, if it unseals and names that sequence.
    fn open_record(&self, key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let sequence = sequence_of(key)?;
        self.host.unseal(PURPOSE, sealed).ok().filter(|c| change_sequence(c) == Some(sequence))
    }

    /// The record already held under `sequence` must be `change` itself.
    fn check_held(&self, sequence: u64, change: &[u8]) -> Result<(), PersistError> {
        let k = key(sequence);
        let held = self.store.get(&k).map_err(io)?.ok_or_else(|| PersistError::Io(format!("{k} vanished")))?;
        match self.host.unseal(PURPOSE, &held) {
            Ok(c) if c == change => Ok(()),
            Ok(_) => Err(PersistError::Io(format!(
                "change {sequence} was handed over again with other content than the record {k} holds: refusing to \
                 replace it"
            ))),
            Err(_) => Err(PersistError::Tampered(format!("{k} does not unseal"))),
        }
    }

    /// Seal the changes up to `last` as one pack. Those this instance did not record itself
    /// (it started after the pack's first change) are read back from their records. A pack is
    /// only a shortcut over the records, so nothing here fails `record`: a range that cannot be
    /// packed (a record missing or damaged, a pack too large to seal or write, a store error)
    /// is logged and left to its records.
    fn pack(&mut self, last: u64) {
        let first = last + 1 - self.pack_changes;
        let held = std::mem::take(&mut self.unpacked);
        if first <= self.newest_snapshot() {
            return; // a snapshot holds the range, or part of it: no pack needed
        }
        if let Err(why) = self.write_pack(first, last, held) {
            let note = format!("changes {first}-{last} left unpacked ({why}): recovery reads their records");
            self.host.log(Level::Warn, &note);
        }
    }

    /// The last changes of the ranges up to `through` that have no pack under this
    /// `pack-changes` (the newest [`BACKFILL_RANGES`] ranges), oldest first.
    fn unpacked_history(&self, through: u64) -> Vec<u64> {
        let present: std::collections::BTreeSet<(u64, u64)> = match self.packs() {
            Ok(packs) => packs.into_iter().collect(),
            Err(e) => {
                self.host.log(Level::Warn, &format!("listing packs: {e}; history left unpacked"));
                return Vec::new();
            }
        };
        let newest = through / self.pack_changes;
        (newest.saturating_sub(BACKFILL_RANGES) + 1..=newest)
            .map(|n| n * self.pack_changes)
            .filter(|&last| !present.contains(&(last + 1 - self.pack_changes, last)))
            .collect()
    }

    /// Pack one range of older history, if any is left: quietly skipped when its newest
    /// record is not there (history from before this strategy, or deleted).
    fn backfill_one(&mut self) {
        let Some(last) = self.backfill.as_mut().and_then(Vec::pop) else { return };
        let first = last + 1 - self.pack_changes;
        if first <= self.newest_snapshot() {
            return;
        }
        if !matches!(self.store.head(&key(last)), Ok(Some(_))) {
            return;
        }
        if let Err(why) = self.write_pack(first, last, BTreeMap::new()) {
            self.host.log(Level::Info, &format!("older changes {first}-{last} left unpacked ({why})"));
        }
    }

    fn write_pack(&self, first: u64, last: u64, mut held: BTreeMap<u64, Vec<u8>>) -> Result<(), String> {
        let k = pack::key(first, last);
        // Written before (a retry after a crash): kept if it agrees with every change held here,
        // which are the records' own; otherwise replaced, records being the truth.
        let existing = self.store.get(&k).map_err(|e| e.to_string())?;
        if let Some(changes) = existing.as_deref().and_then(|b| pack::open(&self.host, first, last, b))
            && changes.iter().zip(first..).all(|(c, s)| held.get(&s).is_none_or(|h| h == c))
        {
            return Ok(());
        }
        let missing: Vec<String> = (first..=last).filter(|s| !held.contains_key(s)).map(key).collect();
        for window in missing.chunks(READ_WINDOW) {
            for (k, sealed) in window.iter().zip(self.fetch(window).map_err(|e| e.to_string())?) {
                if let Some(change) = sealed.and_then(|b| self.open_record(k, &b)) {
                    held.insert(change_sequence(&change).unwrap_or_default(), change);
                }
            }
        }
        let changes = (first..=last)
            .map(|s| held.remove(&s).ok_or_else(|| format!("record {s} is missing or does not open")))
            .collect::<Result<Vec<_>, _>>()?;
        let sealed = pack::seal(&self.host, first, last, &changes).map_err(|e| format!("sealing: {e}"))?;
        let mode = if existing.is_some() {
            self.host.log(Level::Warn, &format!("replacing {k}: it does not open or disagrees with the records"));
            PutMode::Overwrite
        } else {
            PutMode::CreateOnly
        };
        self.store.put(&k, &sealed, mode).map_err(|e| e.to_string())
    }

    /// The change records after `after` up to `through` (`None`: to the end), in order; packs
    /// skipped.
    fn records_between(&self, after: u64, through: Option<u64>) -> Result<Vec<String>, PersistError> {
        let end = through.map(key);
        let mut keys = Vec::new();
        let mut from = (after > 0).then(|| key(after));
        loop {
            let page = self.store.list_keys(PREFIX, from.as_deref(), 1000).map_err(io)?;
            for k in page.keys {
                if !is_record(&k) || end.as_ref().is_some_and(|e| k > *e) {
                    return Ok(keys);
                }
                keys.push(k);
            }
            match page.next {
                Some(n) => from = Some(n),
                None => return Ok(keys),
            }
        }
    }

    /// The range of every pack in the store, in order of their first change.
    fn packs(&self) -> Result<Vec<(u64, u64)>, BlobError> {
        Ok(self.store.list_all(pack::PACKS)?.iter().filter_map(|k| pack::range(k)).collect())
    }

    /// Read the records under `keys` (ascending) in batches and replay them.
    fn replay_records(&self, replay: &mut Replay<'_>, keys: &[String]) -> Result<(), PersistError> {
        for window in keys.chunks(READ_WINDOW) {
            for (k, sealed) in window.iter().zip(self.fetch(window)?) {
                let Some(sequence) = sequence_of(k) else {
                    replay.summary.tampered += 1;
                    replay.step(None)?;
                    continue;
                };
                replay.reached(sequence);
                let change = match sealed {
                    None => None,
                    Some(sealed) => {
                        let change = self.open_record(k, &sealed);
                        if change.is_none() {
                            self.host.log(Level::Warn, &format!("skipping tampered accounting record {k}"));
                            replay.summary.tampered += 1;
                        }
                        change
                    }
                };
                replay.step(change)?;
            }
        }
        Ok(())
    }
}

/// Changes applied in order, with progress and the summary of what was read.
struct Replay<'a> {
    host: &'a Host,
    batch: ApplyBatch<'a>,
    summary: RecoverySummary,
    /// The next sequence expected; anything past it leaves a gap.
    expected: u64,
    done: u64,
    total: u64,
}

impl Replay<'_> {
    /// A record or pack reaching `sequence` was found: report the hole before it, if any.
    fn reached(&mut self, sequence: u64) {
        if sequence > self.expected {
            let hole = if sequence - 1 == self.expected {
                format!("{}", self.expected)
            } else {
                format!("{}-{}", self.expected, sequence - 1)
            };
            self.summary.gaps.push(hole);
        }
        self.expected = self.expected.max(sequence + 1);
    }

    /// One more change read (`None`: skipped), applied in batches with progress reports.
    fn step(&mut self, change: Option<Vec<u8>>) -> Result<(), PersistError> {
        self.done += 1;
        let applied = match change {
            Some(change) => self.batch.push(change)?,
            None => false,
        };
        if applied || self.done.is_multiple_of(PROGRESS_EVERY.max(self.total / 1000)) {
            self.batch.flush()?;
            self.host.progress(self.done, Some(self.total), "accounting records applied");
        }
        Ok(())
    }
}
impl Persistence for Records {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "persistence-records",
            env!("CARGO_PKG_VERSION"),
            "one sealed object per accounting change, next to the shares",
            Concurrency::Single,
        )
    }

    fn init(host: Host, config: Config) -> Result<Self, InitError> {
        config.only_keys(&["store", "pack-changes", "snapshot-changes"])?;
        let store = host.open_store(config.get("store").unwrap_or("shares"))?;
        let pack_changes = config.parse_or("pack-changes", 1000u64)?;
        if pack_changes > pack::MAX_PACK {
            let m = format!("`pack-changes` = {pack_changes} is more than {}: packs must fit one call", pack::MAX_PACK);
            return Err(InitError::BadConfig(m));
        }
        let snapshot_changes = config.parse_or("snapshot-changes", 100_000u64)?;
        Ok(Records {
            host,
            store,
            pack_changes,
            unpacked: BTreeMap::new(),
            backfill: None,
            snapshot_changes,
            newest_snapshot: None,
        })
    }

    fn startup(&mut self, state: DbState, auto_recover: bool) -> Result<Plan, InitError> {
        let reason = if state.present {
            // Every record is written after its change was committed locally, so a record past
            // the database's newest change means the database is older than the store (restored
            // from an old copy): serving from it would forget revocations and leases.
            let after = key(state.last_sequence);
            // Packs sort after every record: the first key after this one is a newer record, or
            // there is none (then a pack may still reach past it, its records deleted).
            let page = self.store.list_keys(PREFIX, Some(&after), 1)?;
            let snapshot = self.snapshots().newest_sound(1).map_err(|e| InitError::Unavailable(e.to_string()))?;
            let newer = match page.keys.first().filter(|k| is_record(k)) {
                Some(record) => Some(format!("the record {record}")),
                None => Some(pack::newest(&self.packs()?))
                    .filter(|&packed| packed > state.last_sequence)
                    .map(|packed| format!("a pack of changes up to {packed}"))
                    .or_else(|| {
                        snapshot
                            .last()
                            .filter(|&&s| s > state.last_sequence)
                            .map(|s| format!("a snapshot as of change {s}"))
                    }),
            };
            match newer {
                None => return Ok(Plan::UseLocal),
                Some(newer) => format!(
                    "the local accounting database ends at change {}, but the store holds {newer}: the database is \
                     older than what was persisted (restored from an old copy?) and must catch up",
                    state.last_sequence
                ),
            }
        } else if self.store.list_keys(PREFIX, None, 1)?.keys.is_empty() {
            return Ok(Plan::UseLocal);
        } else {
            "the local accounting database is missing, and the store holds persisted accounting records: \
             accounts, leases and write enablers must be rebuilt from them"
                .to_owned()
        };
        if auto_recover {
            return Ok(Plan::Recover);
        }
        Err(InitError::RecoveryNeeded(Recovery { reason, command: "marsh recover".into() }))
    }

    fn record(
        &mut self,
        accountant: &Accountant,
        first_sequence: u64,
        changes: &[Vec<u8>],
    ) -> Result<(), PersistError> {
        if self.pack_changes > 0 && self.backfill.is_none() {
            self.backfill = Some(self.unpacked_history(first_sequence.saturating_sub(1)));
        }
        // Changes a snapshot already holds need no record: a node that fell behind (changes came
        // faster than records are written) catches up at its next snapshot.
        let snapshot = self.newest_snapshot();
        for (i, change) in changes.iter().enumerate() {
            let sequence = first_sequence + i as u64;
            if sequence <= snapshot {
                continue;
            }
            let sealed = self.host.seal(PURPOSE, change).map_err(|e| PersistError::Io(format!("sealing: {e}")))?;
            match self.store.put(&key(sequence), &sealed, PutMode::CreateOnly) {
                Ok(()) => {}
                // Written before a crash that came before the host noted it: the same change,
                // or the host is confused; a held record is never replaced by other content.
                Err(BlobError::Exists) => self.check_held(sequence, change)?,
                Err(e) => return Err(io(e)),
            }
            if self.pack_changes > 0 {
                self.unpacked.insert(sequence, change.clone());
                if sequence.is_multiple_of(self.pack_changes) {
                    self.pack(sequence);
                }
            }
        }
        self.backfill_one();
        if let Some(last) = (first_sequence + changes.len() as u64).checked_sub(1) {
            self.compact(accountant, last);
        }
        Ok(())
    }

    fn recover(&mut self, accountant: &Accountant) -> Result<RecoverySummary, PersistError> {
        // The newest snapshot that opens, then packs in order of their first change; what no
        // sound pack covers comes from records.
        let mut summary = RecoverySummary::default();
        let mut base = 0;
        for seq in self.snapshots().list()?.into_iter().rev() {
            match self.snapshots().restore(accountant, seq)? {
                Restored::Done(seq) => {
                    (base, summary.snapshots_read) = (seq, 1);
                    break;
                }
                Restored::Damaged(why) => {
                    self.host.log(Level::Warn, &format!("accounting snapshot {seq}: {why}; trying an older one"));
                    summary.tampered += 1;
                }
            }
        }
        let packs = self.packs().map_err(io)?;
        let packed = pack::newest(&packs).max(base);
        let tail = self.records_between(packed, None)?;
        let host = &self.host;
        let batch = ApplyBatch::new(accountant);
        let total = packed - base + tail.len() as u64;
        let mut replay = Replay { host, batch, summary, expected: base + 1, done: 0, total };
        for (first, last) in packs {
            if last < replay.expected {
                continue; // covered already (packs written under another `pack-changes`)
            }
            if first > replay.expected {
                let hole = self.records_between(replay.expected - 1, Some(first - 1))?;
                self.replay_records(&mut replay, &hole)?;
            }
            let k = pack::key(first, last);
            // Any failure to read this one object (missing, too large, unreadable) is a damaged pack.
            let sealed = self.store.get(&k).ok().flatten();
            match sealed.and_then(|b| pack::open(host, first, last, &b)) {
                Some(changes) => {
                    let from = replay.expected.max(first);
                    replay.reached(from);
                    for change in changes.into_iter().skip((from - first) as usize) {
                        replay.step(Some(change))?;
                    }
                    replay.expected = last + 1;
                }
                None => {
                    host.log(
                        Level::Warn,
                        &format!("skipping damaged or missing pack {k}: reading its records instead"),
                    );
                    replay.summary.tampered += 1;
                    let covered = self.records_between(replay.expected.max(first) - 1, Some(last))?;
                    self.replay_records(&mut replay, &covered)?;
                }
            }
        }
        self.replay_records(&mut replay, &tail)?;
        replay.batch.flush()?;
        replay.summary.changes_read = replay.batch.applied();
        host.progress(replay.total, Some(replay.total), "accounting records applied");
        Ok(replay.summary)
    }
}

marsh_plugin_sdk::export_persistence!(Records);

//! `persistence-records`: every accounting change becomes one small sealed object in a granted
//! blob store (config `store`, default `shares`: next to the shares), at
//! `accounting/<sequence:020>`, written create-only. Recovery lists them in order, reads them
//! 1000 at a time in one batched call (`Store::get_many`: the host reads them concurrently),
//! unseals each, and applies them through the host's accountant; a blob that does not unseal or whose
//! sequence does not match its key is counted as tampered and skipped, and missing sequence
//! numbers are reported as gaps.
//!
//! A change handed over again under a number already held must be the very change stored (a
//! retry after a crash); other content is refused, never written over.
//!
//! The store operator sees how many changes there were and when, never what they say: keys
//! carry only the sequence number and every object is sealed with the node's key.
//!
//! Start-up: with a local database that holds every change the store has a record of, use it.
//! Without one, or with one older than the store (a record past its newest change), the node
//! must recover first: `recovery-needed`, or recover at once when the operator allowed it.

use marsh_plugin_sdk::{
    Accountant, ApplyBatch, BlobError, Concurrency, Config, DbState, Host, InitError, PersistError, Persistence, Plan,
    PluginInfo, PutMode, Recovery, RecoverySummary, Store, change_sequence,
};

const PREFIX: &str = "accounting/";
const PURPOSE: &str = "records-change";
/// Records between progress reports (and applies): at least this many, and enough that a
/// recovery reports about a thousand times whatever its size.
const PROGRESS_EVERY: u64 = 16;

/// The records strategy.
#[derive(Debug)]
pub struct Records {
    host: Host,
    store: Store,
}

fn key(sequence: u64) -> String {
    format!("{PREFIX}{sequence:020}")
}

fn io(e: BlobError) -> PersistError {
    PersistError::Io(e.to_string())
}

/// Records read in one batched call: small sealed objects, far below the bytes one call moves.
const READ_WINDOW: usize = 1000;

impl Records {
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
        config.only_keys(&["store"])?;
        let store = host.open_store(config.get("store").unwrap_or("shares"))?;
        Ok(Records { host, store })
    }

    fn startup(&mut self, state: DbState, auto_recover: bool) -> Result<Plan, InitError> {
        let reason = if state.present {
            // Every record is written after its change was committed locally, so a record past
            // the database's newest change means the database is older than the store (restored
            // from an old copy): serving from it would forget revocations and leases.
            let after = key(state.last_sequence);
            match self.store.list_keys(PREFIX, Some(&after), 1)?.keys.first() {
                None => return Ok(Plan::UseLocal),
                Some(newer) => format!(
                    "the local accounting database ends at change {}, but the store holds the record {newer}: the \
                     database is older than what was persisted (restored from an old copy?) and must catch up",
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

    fn record(&mut self, _: &Accountant, first_sequence: u64, changes: &[Vec<u8>]) -> Result<(), PersistError> {
        for (i, change) in changes.iter().enumerate() {
            let sequence = first_sequence + i as u64;
            let sealed = self.host.seal(PURPOSE, change).map_err(|e| PersistError::Io(format!("sealing: {e}")))?;
            match self.store.put(&key(sequence), &sealed, PutMode::CreateOnly) {
                Ok(()) => {}
                // Written before a crash that came before the host noted it: the same change,
                // or the host is confused; a held record is never replaced by other content.
                Err(BlobError::Exists) => self.check_held(sequence, change)?,
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }

    fn recover(&mut self, accountant: &Accountant) -> Result<RecoverySummary, PersistError> {
        let keys = self.store.list_all(PREFIX).map_err(io)?;
        let total = keys.len() as u64;
        let every = PROGRESS_EVERY.max(total / 1000);
        let mut summary = RecoverySummary::default();
        let mut batch = ApplyBatch::new(accountant);
        let mut expected = 1u64;
        let mut done = 0u64;
        for window in keys.chunks(READ_WINDOW) {
            for (k, sealed) in window.iter().zip(self.fetch(window)?) {
                done += 1;
                let Some(sequence) = k.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok()) else {
                    summary.tampered += 1;
                    continue;
                };
                if sequence > expected {
                    summary.gaps.push(if sequence - 1 == expected {
                        format!("{expected}")
                    } else {
                        format!("{expected}-{}", sequence - 1)
                    });
                }
                expected = expected.max(sequence + 1);
                let Some(sealed) = sealed else { continue };
                let change = match self.host.unseal(PURPOSE, &sealed) {
                    Ok(c) if change_sequence(&c) == Some(sequence) => c,
                    _ => {
                        self.host
                            .log(marsh_plugin_sdk::Level::Warn, &format!("skipping tampered accounting record {k}"));
                        summary.tampered += 1;
                        continue;
                    }
                };
                let applied = batch.push(change)?;
                if applied || done.is_multiple_of(every) {
                    batch.flush()?;
                    self.host.progress(done, Some(total), "accounting records applied");
                }
            }
        }
        batch.flush()?;
        summary.changes_read = batch.applied();
        self.host.progress(total, Some(total), "accounting records applied");
        Ok(summary)
    }
}

marsh_plugin_sdk::export_persistence!(Records);

//! [`Grants`]: what the operator grants one plugin: the blob stores it may open, by name; the
//! node's sealing key, from which the plugin's own is derived once it says who it is; where its
//! progress reports go; and, for a persistence strategy, the accounting database it rebuilds
//! ([`AccountingSink`]). A plugin reaches nothing it was not granted here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use marsh_seal::SealKey;
use marsh_stores::BlobStore;

use crate::World;

/// Receives `host.progress` reports (the CLI draws a bar from them).
pub type ProgressSink = Arc<dyn Fn(&str, u64, Option<u64>, &str) + Send + Sync>;

/// What a persistence strategy's `accountant` import reaches: the node's accounting database.
/// Changes are the opaque blobs the host produced for `record`; snapshots are opaque too.
pub trait AccountingSink: Send + Sync {
    /// Apply recovered changes in order; idempotent.
    fn apply(&self, changes: Vec<Vec<u8>>) -> Result<(), String>;
    /// A consistent snapshot of the database: its sequence and its bytes.
    fn snapshot(&self) -> Result<(u64, Vec<u8>), String>;
    /// Replace the database with a snapshot made by [`AccountingSink::snapshot`]; returns its
    /// sequence. Refuses (changing nothing) a snapshot that is not sound.
    fn restore(&self, snapshot: Vec<u8>) -> Result<u64, String>;
}

/// What the operator granted one plugin: its stores by name, and the sealing key.
#[derive(Clone)]
pub struct Grants {
    pub(crate) stores: BTreeMap<String, Arc<dyn BlobStore>>,
    pub(crate) seal_key: SealKey,
    /// The plugin's own sealing key, derived from `seal_key` for its role and name once it
    /// said who it is ([`Grants::bind`]); until then it cannot seal.
    pub(crate) plugin_seal: Option<(World, SealKey)>,
    pub(crate) progress: Option<ProgressSink>,
    pub(crate) accounting: Option<Arc<dyn AccountingSink>>,
    pub(crate) state: Option<Arc<dyn BlobStore>>,
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grants").field("stores", &self.stores.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Grants {
    /// No stores yet, sealing with `seal_key`.
    pub fn new(seal_key: SealKey) -> Self {
        Grants { stores: BTreeMap::new(), seal_key, plugin_seal: None, accounting: None, progress: None, state: None }
    }

    /// Bind the grants to the plugin that reported `name` in `world`: it seals under a key
    /// derived for that role and name alone, so a backend cannot unseal what the persistence
    /// strategy sealed (or the host's state), whatever purpose it names.
    pub(crate) fn bind(&mut self, world: World, name: &str) {
        self.plugin_seal = Some((world, self.seal_key.for_plugin(&world.to_string(), name)));
    }

    /// Grant `store` to the plugin under `name`. The first store granted also keeps the
    /// plugin's `state` values.
    pub fn store(mut self, name: &str, store: Arc<dyn BlobStore>) -> Self {
        if self.state.is_none() {
            self.state = Some(store.clone());
        }
        self.stores.insert(name.to_owned(), store);
        self
    }

    /// Where a persistence strategy's recovered changes go.
    pub fn accounting(mut self, sink: Arc<dyn AccountingSink>) -> Self {
        self.accounting = Some(sink);
        self
    }

    /// Send the plugin's progress reports to `sink`.
    pub fn progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }
}

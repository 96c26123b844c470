//! `persistence-records` and `persistence-local` as wasm, through `WasmStrategy`: start-up
//! decisions, records written sealed and packed, recovery in order from packs and records,
//! tampered blobs skipped, gaps reported.

use std::sync::{Arc, Mutex};

use marsh_runtime::{AccountingSink, Grants, PersistFailure, PluginLimits, StartupPlan, WasmStrategy};
use marsh_seal::SealKey;
use marsh_stores::{BlobKey, BlobStore, MemoryStore, PutMode};

use crate::support::{load, runtime};

/// Collects what a recovery applies.
#[derive(Default)]
struct Collect(Mutex<Vec<Vec<u8>>>);

impl AccountingSink for Collect {
    fn apply(&self, changes: Vec<Vec<u8>>) -> Result<(), String> {
        self.0.lock().expect("sink lock").extend(changes);
        Ok(())
    }
    fn snapshot(&self) -> Result<(u64, Vec<u8>), String> {
        Err("no snapshots".into())
    }
    fn restore(&self, _: Vec<u8>) -> Result<u64, String> {
        Err("no snapshots".into())
    }
}

async fn start(plugin: marsh_artifacts::Plugin, store: &MemoryStore, sink: Arc<Collect>) -> WasmStrategy {
    start_with(plugin, store, sink, &[]).await.expect("start")
}

async fn start_with(
    plugin: marsh_artifacts::Plugin,
    store: &MemoryStore,
    sink: Arc<Collect>,
    config: &[(&str, &str)],
) -> Result<WasmStrategy, marsh_runtime::StartError> {
    let grants = Grants::new(SealKey::from_bytes([5; 32])).store("shares", Arc::new(store.clone())).accounting(sink);
    let config = config.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
    WasmStrategy::start(runtime(), &load(plugin), grants, config, PluginLimits::default()).await
}

fn change(seq: u64) -> Vec<u8> {
    let mut c = seq.to_be_bytes().to_vec();
    c.extend_from_slice(format!("change number {seq}").as_bytes());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_sealed_and_recovered_in_order_with_tampering_and_gaps_reported() {
    let store = MemoryStore::new("shares");
    let writer = start(marsh_artifacts::PERSISTENCE_RECORDS, &store, Arc::default()).await;
    assert_eq!(writer.startup(false, 0, false).await.unwrap(), StartupPlan::UseLocal, "an empty store: a new node");
    writer.record(1, (1..=3).map(change).collect()).await.unwrap();
    writer.record(4, vec![change(4), change(5)]).await.unwrap();
    writer.record(4, vec![change(4)]).await.unwrap(); // a retry after a crash is harmless
    let keys = store.list("accounting/", None, 100).await.unwrap().keys;
    assert_eq!(keys.len(), 5);
    for k in &keys {
        let blob = store.get(&BlobKey::new(k).unwrap()).await.unwrap().unwrap();
        assert!(!blob.windows(13).any(|w| w == b"change number"), "sealed: {k}");
    }

    // The local database is gone: the plugin asks for `marsh recover`, or recovers if allowed.
    match writer.startup(false, 0, false).await {
        Err(PersistFailure::Init(marsh_runtime::InitFailure::RecoveryNeeded { command, .. })) => {
            assert_eq!(command, "marsh recover")
        }
        other => panic!("expected recovery-needed, got {other:?}"),
    }
    assert_eq!(writer.startup(false, 0, true).await.unwrap(), StartupPlan::Recover);
    assert_eq!(writer.startup(true, 5, false).await.unwrap(), StartupPlan::UseLocal);
    // A local database older than the store (restored from an old copy) is not served from.
    match writer.startup(true, 3, false).await {
        Err(PersistFailure::Init(marsh_runtime::InitFailure::RecoveryNeeded { reason, .. })) => {
            assert!(reason.contains("ends at change 3"), "{reason}")
        }
        other => panic!("expected recovery-needed for an old database, got {other:?}"),
    }
    assert_eq!(writer.startup(true, 3, true).await.unwrap(), StartupPlan::Recover);

    let sink = Arc::new(Collect::default());
    let report = start(marsh_artifacts::PERSISTENCE_RECORDS, &store, sink.clone())
        .await
        .recover(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((report.changes_read, report.tampered, report.gaps.len()), (5, 0, 0));
    assert_eq!(*sink.0.lock().unwrap(), (1..=5).map(change).collect::<Vec<_>>());

    // One record swapped for another's bytes, one deleted: skipped and reported, never applied.
    let k2 = BlobKey::new(&keys[1]).unwrap();
    let k3 = BlobKey::new(&keys[2]).unwrap();
    let three = store.get(&k3).await.unwrap().unwrap();
    store.put(&k2, three, PutMode::Overwrite).await.unwrap();
    store.delete(&BlobKey::new(&keys[3]).unwrap()).await.unwrap();
    let sink = Arc::new(Collect::default());
    let report = start(marsh_artifacts::PERSISTENCE_RECORDS, &store, sink.clone())
        .await
        .recover(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((report.changes_read, report.tampered), (3, 1));
    assert_eq!(report.gaps, vec!["4".to_owned()]);
    assert_eq!(*sink.0.lock().unwrap(), vec![change(1), change(3), change(5)]);
}

/// A records key.
fn record_key(seq: u64) -> BlobKey {
    BlobKey::new(&format!("accounting/{seq:020}")).expect("a record key")
}

fn pack_key(first: u64, last: u64) -> String {
    format!("accounting/packs/{first:020}-{last:020}")
}

/// A fresh `records` instance with packs of four recovers `store`: its report and what it applied.
async fn recover_packed(store: &MemoryStore) -> (marsh_runtime::RecoveryReport, Vec<Vec<u8>>) {
    let sink = Arc::new(Collect::default());
    let strategy = start_with(marsh_artifacts::PERSISTENCE_RECORDS, store, sink.clone(), &[("pack-changes", "4")])
        .await
        .expect("start");
    let report = strategy.recover(std::time::Duration::from_secs(60)).await.expect("recover");
    let applied = std::mem::take(&mut *sink.0.lock().expect("sink lock"));
    (report, applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_packed_and_recovery_reads_the_packs_and_falls_back_to_the_records() {
    let store = MemoryStore::new("shares");
    let packed = [("pack-changes", "4")];
    let start_packed = || start_with(marsh_artifacts::PERSISTENCE_RECORDS, &store, Arc::default(), &packed);
    let writer = start_packed().await.unwrap();
    writer.record(1, (1..=6).map(change).collect()).await.unwrap();
    writer.record(7, (7..=9).map(change).collect()).await.unwrap();
    let packs = store.list("accounting/packs/", None, 100).await.unwrap().keys;
    assert_eq!(packs, vec![pack_key(1, 4), pack_key(5, 8)]);
    for k in &packs {
        let blob = store.get(&BlobKey::new(k).unwrap()).await.unwrap().unwrap();
        assert!(!blob.windows(13).any(|w| w == b"change number"), "sealed: {k}");
    }
    assert_eq!(writer.startup(true, 9, false).await.unwrap(), StartupPlan::UseLocal, "packs are not newer records");
    assert!(matches!(writer.startup(true, 8, false).await, Err(PersistFailure::Init(_))), "record 9 is newer");

    let (report, applied) = recover_packed(&store).await;
    assert_eq!((report.changes_read, report.tampered, report.gaps.clone()), (9, 0, Vec::<String>::new()));
    assert_eq!(applied, (1..=9).map(change).collect::<Vec<_>>());
    // The records under a pack are not read: with them gone, recovery still has every change.
    for s in 1..=4 {
        store.delete(&record_key(s)).await.unwrap();
    }
    let (report, applied) = recover_packed(&store).await;
    assert_eq!((report.changes_read, report.tampered), (9, 0));
    assert_eq!(applied, (1..=9).map(change).collect::<Vec<_>>());
    // A pack that does not open for its range (another pack's bytes): its records are read.
    let first_pack = store.get(&BlobKey::new(&packs[0]).unwrap()).await.unwrap().unwrap();
    store.put(&BlobKey::new(&packs[1]).unwrap(), first_pack.clone(), PutMode::Overwrite).await.unwrap();
    let (report, applied) = recover_packed(&store).await;
    assert_eq!((report.changes_read, report.tampered, report.gaps.len()), (9, 1, 0));
    assert_eq!(applied, (1..=9).map(change).collect::<Vec<_>>());
    // ... and one of those missing too: a gap, never the damaged pack's content.
    store.delete(&record_key(6)).await.unwrap();
    let (report, applied) = recover_packed(&store).await;
    assert_eq!((report.changes_read, report.tampered, report.gaps), (8, 1, vec!["6".to_owned()]));
    assert_eq!(applied, [1, 2, 3, 4, 5, 7, 8, 9].map(change).to_vec());

    // A new instance, holding nothing in memory, packs from the records in the store.
    start_packed().await.unwrap().record(10, (10..=12).map(change).collect()).await.unwrap();
    assert!(store.get(&BlobKey::new(&pack_key(9, 12)).unwrap()).await.unwrap().is_some());
    // A range whose records are not all there is left unpacked; recording goes on.
    start_packed().await.unwrap().record(13, (13..=15).map(change).collect()).await.unwrap();
    store.delete(&record_key(14)).await.unwrap();
    start_packed().await.unwrap().record(16, vec![change(16)]).await.unwrap();
    assert!(store.get(&BlobKey::new(&pack_key(13, 16)).unwrap()).await.unwrap().is_none());
    assert!(store.get(&record_key(16)).await.unwrap().is_some());

    // A stale object where the next pack goes is replaced by the pack its records make.
    store.put(&BlobKey::new(&pack_key(17, 20)).unwrap(), first_pack, PutMode::CreateOnly).await.unwrap();
    start_packed().await.unwrap().record(17, (17..=20).map(change).collect()).await.unwrap();
    // Every sound pack is used, after a damaged one and around an unpacked range: 10 and 18
    // come from their packs alone.
    store.delete(&record_key(10)).await.unwrap();
    store.delete(&record_key(18)).await.unwrap();
    let (report, applied) = recover_packed(&store).await;
    assert_eq!((report.changes_read, report.tampered, report.gaps), (18, 1, vec!["6".to_owned(), "14".to_owned()]));
    assert_eq!(applied, (1..=20).filter(|s| ![6, 14].contains(s)).map(change).collect::<Vec<_>>());

    // Start-up: a pack reaching past the local database is newer, even with its records gone.
    for s in 11..=20 {
        store.delete(&record_key(s)).await.unwrap();
    }
    match writer.startup(true, 10, false).await {
        Err(PersistFailure::Init(marsh_runtime::InitFailure::RecoveryNeeded { reason, .. })) => {
            assert!(reason.contains("a pack of changes up to 20"), "{reason}")
        }
        other => panic!("expected recovery-needed for a pack past the database, got {other:?}"),
    }
    assert_eq!(writer.startup(true, 20, false).await.unwrap(), StartupPlan::UseLocal);

    // Packs larger than one call may carry are refused at start.
    let too_many =
        start_with(marsh_artifacts::PERSISTENCE_RECORDS, &store, Arc::default(), &[("pack-changes", "10001")]);
    assert!(too_many.await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_recorded_before_packs_is_packed_one_range_per_record_call() {
    let store = MemoryStore::new("shares");
    let start = |config: &'static [(&'static str, &'static str)]| {
        start_with(marsh_artifacts::PERSISTENCE_RECORDS, &store, Arc::default(), config)
    };
    // Written without packs (as by a marsh from before them).
    start(&[("pack-changes", "0")]).await.unwrap().record(1, (1..=8).map(change).collect()).await.unwrap();
    assert!(store.list("accounting/packs/", None, 10).await.unwrap().keys.is_empty());
    let packed = start(&[("pack-changes", "4")]).await.unwrap();
    packed.record(9, vec![change(9)]).await.unwrap();
    assert_eq!(store.list("accounting/packs/", None, 10).await.unwrap().keys, vec![pack_key(5, 8)], "newest first");
    packed.record(10, vec![change(10)]).await.unwrap();
    packed.record(11, vec![change(11)]).await.unwrap();
    let packs = store.list("accounting/packs/", None, 10).await.unwrap().keys;
    assert_eq!(packs, vec![pack_key(1, 4), pack_key(5, 8)], "each range once");
    // The history now comes back from its packs alone.
    for s in 1..=8 {
        store.delete(&record_key(s)).await.unwrap();
    }
    let (report, applied) = recover_packed(&store).await;
    assert_eq!((report.changes_read, report.tampered, report.gaps.len()), (11, 0, 0));
    assert_eq!(applied, (1..=11).map(change).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_strategy_keeps_nothing_and_always_starts() {
    let store = MemoryStore::new("shares");
    let local = start(marsh_artifacts::PERSISTENCE_LOCAL, &store, Arc::default()).await;
    local.record(1, vec![change(1)]).await.unwrap();
    assert!(store.list("", None, 10).await.unwrap().keys.is_empty());
    assert_eq!(local.startup(false, 0, false).await.unwrap(), StartupPlan::UseLocal);
    assert_eq!(local.recover(std::time::Duration::from_secs(5)).await.unwrap().changes_read, 0);
}

/// The node's real accounting database as a strategy's accountant.
struct Db(Arc<marsh_accountant::Accountant>);

impl AccountingSink for Db {
    fn apply(&self, changes: Vec<Vec<u8>>) -> Result<(), String> {
        changes.iter().try_for_each(|c| self.0.apply_strategy_blob(c).map_err(|e| e.to_string()))
    }
    fn snapshot(&self) -> Result<(u64, Vec<u8>), String> {
        self.0.snapshot().map(|s| (s.sequence, s.bytes)).map_err(|e| e.to_string())
    }
    fn restore(&self, snapshot: Vec<u8>) -> Result<u64, String> {
        self.0.restore_snapshot(&snapshot).map_err(|e| e.to_string())
    }
}

fn db(dir: &std::path::Path, name: &str) -> Arc<marsh_accountant::Accountant> {
    Arc::new(marsh_accountant::Accountant::open(&dir.join(name)).expect("test setup"))
}

async fn stash(store: &MemoryStore, accountant: &Arc<marsh_accountant::Accountant>) -> WasmStrategy {
    stash_keyed(store, accountant, [5; 32]).await
}

async fn stash_keyed(
    store: &MemoryStore,
    accountant: &Arc<marsh_accountant::Accountant>,
    key: [u8; 32],
) -> WasmStrategy {
    over_db(marsh_artifacts::PERSISTENCE_STASH, store, accountant, key, &[("snapshot-changes", "40")]).await
}

/// Strategy `plugin` over `store`, with the real `accountant` and the node key `key`.
async fn over_db(
    plugin: marsh_artifacts::Plugin,
    store: &MemoryStore,
    accountant: &Arc<marsh_accountant::Accountant>,
    key: [u8; 32],
    config: &[(&str, &str)],
) -> WasmStrategy {
    let grants = Grants::new(SealKey::from_bytes(key))
        .store("shares", Arc::new(store.clone()))
        .accounting(Arc::new(Db(accountant.clone())));
    let config = config.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
    WasmStrategy::start(runtime(), &load(plugin), grants, config, PluginLimits::default()).await.expect("start")
}

/// What the persister does: hand over every change not yet confirmed, in runs of 10.
async fn persist(a: &marsh_accountant::Accountant, strategy: &WasmStrategy) {
    loop {
        let batch = a.changes_after(a.persisted_seq().expect("test setup"), 10).expect("test setup");
        let Some(first) = batch.first().map(|c| c.seq) else { return };
        let last = batch.last().expect("test setup").seq;
        strategy
            .record(first, batch.iter().map(marsh_accountant::Logged::strategy_blob).collect())
            .await
            .expect("test setup");
        a.mark_persisted(last).expect("test setup");
    }
}

fn leases(a: &marsh_accountant::Accountant, n: u8) -> Vec<marsh_accountant::Lease> {
    (0..n)
        .flat_map(|i| {
            a.leases(&marsh_core::ShareId::immutable(
                marsh_core::StorageIndex::from_bytes([i; 16]),
                marsh_core::ShareNumber(0),
            ))
            .expect("test setup")
        })
        .collect()
}

const GEN0: &str = "stash/g000000/";

fn seq_in(key: &str, after: &str) -> u64 {
    key[key.find(after).expect("prefix") + after.len()..][..20].parse().expect("a sequence")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stash_restores_the_newest_sound_snapshot_plus_the_contiguous_log_and_reports_gaps() {
    use marsh_accountant::{AccountId, Attributes};
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new("shares");
    let a = db(dir.path(), "a.sqlite");
    // Accounts made before the node chose `stash`: the first changes cannot continue an empty
    // stash, so the plugin snapshots at once.
    a.create_account("alice", &Attributes { quota: Some(1 << 30), ..Attributes::default() }, 10).unwrap();
    a.mark_persisted(a.last_seq().unwrap()).unwrap();
    let writer = stash(&store, &a).await;
    assert_eq!(writer.startup(true, a.last_seq().unwrap(), false).await.unwrap(), StartupPlan::UseLocal);
    for i in 0..100u8 {
        let si = marsh_core::StorageIndex::from_bytes([i; 16]);
        a.add_or_renew(
            AccountId::ANONYMOUS,
            &marsh_core::ShareId::immutable(si, marsh_core::ShareNumber(0)),
            &[i; 32],
            &[i; 32],
            1000 + u64::from(i),
        )
        .unwrap();
        if i % 7 == 0 {
            persist(&a, &writer).await;
        }
    }
    // Names long enough that sealed bytes cannot hold them by chance: a 3-byte name turned up
    // in the ~300 KB of ciphertext this test stashes (expected about once in fifty runs).
    a.create_account("bob-reader", &Attributes { write: false, ..Attributes::default() }, 20).unwrap();
    persist(&a, &writer).await;

    // A retry of changes already held is harmless; other changes under those numbers are refused.
    // (Changes a snapshot covers cannot be compared: make sure the newest are only in the log.)
    let newest_snapshot = || async {
        let keys = store.list(GEN0, None, 1000).await.unwrap().keys;
        keys.iter().filter(|k| k.ends_with(".manifest")).map(|k| seq_in(k, "snapshots/")).max().unwrap()
    };
    if newest_snapshot().await + 3 > a.last_seq().unwrap() {
        for i in 0..3u8 {
            let si = marsh_core::StorageIndex::from_bytes([200 + i; 16]);
            a.add_or_renew(
                AccountId::ANONYMOUS,
                &marsh_core::ShareId::immutable(si, marsh_core::ShareNumber(0)),
                &[i; 32],
                &[i; 32],
                1,
            )
            .unwrap();
        }
        persist(&a, &writer).await;
    }
    assert!(newest_snapshot().await + 3 <= a.last_seq().unwrap());
    let held = a.changes_after(a.last_seq().unwrap() - 3, 10).unwrap();
    let blobs: Vec<Vec<u8>> = held.iter().map(marsh_accountant::Logged::strategy_blob).collect();
    writer.record(held[0].seq, blobs.clone()).await.unwrap();
    let mut forged = blobs.clone();
    forged[1].push(0);
    let refused = writer.record(held[0].seq, forged).await.expect_err("other changes under held numbers");
    assert!(refused.to_string().contains("disagree"), "{refused}");

    let keys = store.list("", None, 1000).await.unwrap().keys;
    let manifests: Vec<&String> = keys.iter().filter(|k| k.ends_with(".manifest")).collect();
    assert_eq!(manifests.len(), 2, "two snapshots kept: {keys:?}");
    let older = seq_in(manifests[0], "snapshots/");
    for k in &keys {
        assert!(k.starts_with(GEN0), "{k}");
        if k.contains("/log/") {
            let last: u64 = k[k.len() - 20..].parse().unwrap();
            assert!(last > older, "segment {k} is covered by the older kept snapshot and should be gone");
        }
        let blob = store.get(&BlobKey::new(k).unwrap()).await.unwrap().unwrap();
        for secret in [&b"alice"[..], b"bob-reader", &[7u8; 32]] {
            assert!(!blob.windows(secret.len()).any(|w| w == secret), "{k} holds plaintext");
        }
    }

    // A local database older than what the stash holds is not served from.
    match writer.startup(true, a.last_seq().unwrap() - 5, false).await {
        Err(PersistFailure::Init(marsh_runtime::InitFailure::RecoveryNeeded { reason, .. })) => {
            assert!(reason.contains("older than what was persisted"), "{reason}")
        }
        other => panic!("expected recovery-needed for a stale database, got {other:?}"),
    }
    // A manifest planted in the stash (it does not open with the node's key) holds nothing: a
    // node with its database up to date still starts on it.
    let planted = BlobKey::new(&format!("{GEN0}snapshots/09999999999999999999.manifest")).unwrap();
    store.put(&planted, vec![1; 64], PutMode::CreateOnly).await.unwrap();
    assert_eq!(
        stash(&store, &a).await.startup(true, a.last_seq().unwrap(), false).await.unwrap(),
        StartupPlan::UseLocal
    );
    store.delete(&planted).await.unwrap();

    // The machine is lost: a new database comes back equal, numbering included.
    let recover = |name: &'static str, key: [u8; 32]| {
        let (dir, store) = (dir.path().to_owned(), store.clone());
        async move {
            let b = db(&dir, name);
            let strategy = stash_keyed(&store, &b, key).await;
            let report = strategy.recover(std::time::Duration::from_secs(60)).await;
            (b, report)
        }
    };
    let (b, report) = recover("b.sqlite", [5; 32]).await;
    let report = report.unwrap();
    assert_eq!((report.snapshots_read, report.tampered, report.gaps.len()), (1, 0, 0), "{report:?}");
    assert!(report.changes_read > 0, "the log after the newest snapshot was applied");
    assert_eq!(b.accounts().unwrap(), a.accounts().unwrap());
    assert_eq!(leases(&b, 100), leases(&a, 100));
    assert_eq!(b.last_seq().unwrap(), a.last_seq().unwrap());
    assert!(store.list("stash/g000001/", None, 10).await.unwrap().keys.is_empty(), "complete: no new generation");

    // Another node's key: nothing unseals, and recovery says so rather than start empty.
    let (_, report) = recover("wrong.sqlite", [6; 32]).await;
    let failure = report.expect_err("nothing unseals");
    assert!(failure.to_string().contains("this node's key"), "{failure}");

    // The newest snapshot damaged: the older one and the longer log give the same database.
    let newest_part = keys.iter().rfind(|k| k.contains("/part-")).unwrap();
    let k = BlobKey::new(newest_part).unwrap();
    let mut part = store.get(&k).await.unwrap().unwrap();
    part[40] ^= 1;
    store.put(&k, part, PutMode::Overwrite).await.unwrap();
    let (c, report) = recover("c.sqlite", [5; 32]).await;
    let report = report.unwrap();
    assert_eq!((report.snapshots_read, report.tampered, report.gaps.len()), (1, 1, 0), "{report:?}");
    assert_eq!(c.accounts().unwrap(), a.accounts().unwrap());
    assert_eq!(leases(&c, 100), leases(&a, 100));
    // Not everything read back: the node goes on in a new generation, nothing deleted.
    let gen1 = store.list("stash/g000001/", None, 100).await.unwrap().keys;
    assert!(gen1.iter().any(|k| k.ends_with(".manifest")), "{gen1:?}");
    assert!(store.get(&k).await.unwrap().is_some(), "the damaged part is kept for the operator");
    // Recovering again now restores generation 1's snapshot: the same database.
    let (c2, report) = recover("c2.sqlite", [5; 32]).await;
    assert_eq!(report.unwrap().tampered, 0);
    assert_eq!(c2.accounts().unwrap(), a.accounts().unwrap());
    assert_eq!(c2.last_seq().unwrap(), c.last_seq().unwrap());
    for k in gen1 {
        store.delete(&BlobKey::new(&k).unwrap()).await.unwrap();
    }

    // A segment missing after the older snapshot: the hole is reported, nothing after it applied.
    let segments: Vec<&String> = keys.iter().filter(|k| k.contains("/log/") && seq_in(k, "log/") > older + 1).collect();
    let hole = segments[segments.len() / 2];
    store.delete(&BlobKey::new(hole).unwrap()).await.unwrap();
    let (d, report) = recover("d.sqlite", [5; 32]).await;
    let report = report.unwrap();
    assert_eq!(report.gaps.len(), 1, "{report:?}");
    let first_missing = seq_in(hole, "log/");
    assert!(report.gaps[0].starts_with(&format!("{first_missing}-")), "{report:?}");
    assert_eq!(d.last_seq().unwrap(), first_missing - 1, "nothing past the hole");
    // The node goes on from there, in generation 1; a later loss brings back what it did since.
    let node_d = stash(&store, &d).await;
    assert_eq!(node_d.startup(true, d.last_seq().unwrap(), false).await.unwrap(), StartupPlan::UseLocal);
    d.create_account("erin", &Attributes::default(), 30).unwrap();
    persist(&d, &node_d).await;
    let (e, report) = recover("e.sqlite", [5; 32]).await;
    assert_eq!(report.unwrap().gaps, Vec::<String>::new());
    assert_eq!(e.accounts().unwrap(), d.accounts().unwrap());
    assert_eq!(e.last_seq().unwrap(), d.last_seq().unwrap());

    // A node without its database is told to recover.
    let fresh = db(dir.path(), "f.sqlite");
    match stash(&store, &fresh).await.startup(false, 0, false).await {
        Err(PersistFailure::Init(marsh_runtime::InitFailure::RecoveryNeeded { command, .. })) => {
            assert_eq!(command, "marsh recover")
        }
        other => panic!("expected recovery-needed, got {other:?}"),
    }
}

async fn records_over(
    store: &MemoryStore,
    accountant: &Arc<marsh_accountant::Accountant>,
    config: &[(&str, &str)],
) -> WasmStrategy {
    over_db(marsh_artifacts::PERSISTENCE_RECORDS, store, accountant, [5; 32], config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_history_is_compacted_to_two_snapshots_and_recovers_whole() {
    use marsh_accountant::{AccountId, Attributes};
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new("shares");
    let a = db(dir.path(), "a.sqlite");
    let config = [("snapshot-changes", "30"), ("pack-changes", "8")];
    let writer = records_over(&store, &a, &config).await;
    assert_eq!(writer.startup(true, 0, false).await.unwrap(), StartupPlan::UseLocal);
    a.create_account("alice-the-tenant", &Attributes { quota: Some(1 << 30), ..Attributes::default() }, 10).unwrap();
    let renew = |from: u8, to: u8, expiry: u64| {
        for i in from..to {
            let si = marsh_core::StorageIndex::from_bytes([i; 16]);
            let share = marsh_core::ShareId::immutable(si, marsh_core::ShareNumber(0));
            a.add_or_renew(AccountId::ANONYMOUS, &share, &[i; 32], &[i; 32], expiry).unwrap();
        }
    };
    for i in 0..250u8 {
        renew(i, i + 1, 1000 + u64::from(i));
        if i % 7 == 0 {
            persist(&a, &writer).await;
        }
    }
    persist(&a, &writer).await;

    // A backlog (changes came faster than records are written): the next snapshot holds it,
    // and what it holds gets no records.
    let backlog = a.last_seq().unwrap() + 1;
    renew(0, 100, 5000);
    persist(&a, &writer).await;
    let keys = store.list("accounting/", None, 10_000).await.unwrap().keys;
    let in_backlog = keys.iter().filter(|k| !k.contains("/packs/") && !k.contains("/snapshots/")).filter(|k| {
        let s = seq_in(k, "accounting/");
        (backlog..backlog + 100).contains(&s)
    });
    assert!(in_backlog.count() <= 40, "a snapshot caught the backlog up: {keys:?}");
    // Changes at the usual pace after it, so the older snapshot kept is the one that caught up.
    for i in 100..180u8 {
        renew(i, i + 1, 6000);
        if i % 7 == 0 {
            persist(&a, &writer).await;
        }
    }
    persist(&a, &writer).await;
    let changes = a.last_seq().unwrap();
    assert!(changes > 400, "{changes}");

    // Two snapshots, and only the records and packs after the older of them: bounded by the
    // snapshot interval, not by the number of changes.
    let keys = store.list("accounting/", None, 10_000).await.unwrap().keys;
    let manifests: Vec<u64> =
        keys.iter().filter(|k| k.ends_with(".manifest")).map(|k| seq_in(k, "snapshots/")).collect();
    assert_eq!(manifests.len(), 2, "{keys:?}");
    let older = manifests[0];
    let records: Vec<u64> = keys
        .iter()
        .filter(|k| !k.contains("/packs/") && !k.contains("/snapshots/"))
        .map(|k| seq_in(k, "accounting/"))
        .collect();
    assert!(records.iter().all(|&s| s > older), "records the older snapshot covers are gone: {records:?}");
    assert!(records.len() <= 2 * 30 + 10, "{} records for {changes} changes", records.len());
    for k in keys.iter().filter(|k| k.contains("/packs/")) {
        assert!(k[k.len() - 20..].parse::<u64>().unwrap() > older, "pack {k} is covered and should be gone");
    }
    for k in &keys {
        let blob = store.get(&BlobKey::new(k).unwrap()).await.unwrap().unwrap();
        for secret in [&b"alice-the-tenant"[..], &[7u8; 32]] {
            assert!(!blob.windows(secret.len()).any(|w| w == secret), "{k} holds plaintext");
        }
    }

    // The machine is lost: the newest snapshot plus the records after it give the same database.
    let recover = |name: &'static str| {
        let (dir, store) = (dir.path().to_owned(), store.clone());
        async move {
            let b = db(&dir, name);
            let report = records_over(&store, &b, &config).await.recover(std::time::Duration::from_secs(60)).await;
            (b, report.expect("recover"))
        }
    };
    let (b, report) = recover("b.sqlite").await;
    assert_eq!((report.snapshots_read, report.tampered, report.gaps.len()), (1, 0, 0), "{report:?}");
    assert_eq!(b.accounts().unwrap(), a.accounts().unwrap());
    assert_eq!(leases(&b, 250), leases(&a, 250));
    assert_eq!(b.last_seq().unwrap(), a.last_seq().unwrap());

    // The newest snapshot damaged: the older one and the records after it give the same again.
    let newest_part = keys.iter().rfind(|k| k.contains("/part-")).unwrap();
    let k = BlobKey::new(newest_part).unwrap();
    let mut part = store.get(&k).await.unwrap().unwrap();
    part[40] ^= 1;
    store.put(&k, part, PutMode::Overwrite).await.unwrap();
    let (c, report) = recover("c.sqlite").await;
    assert_eq!((report.snapshots_read, report.tampered, report.gaps.len()), (1, 1, 0), "{report:?}");
    assert_eq!(c.accounts().unwrap(), a.accounts().unwrap());
    assert_eq!(leases(&c, 250), leases(&a, 250));
    assert_eq!(c.last_seq().unwrap(), a.last_seq().unwrap());

    // A local database older than the newest snapshot is not served from, even with every
    // record and pack after it gone.
    for s in records.iter().filter(|&&s| s >= manifests[1]) {
        store.delete(&record_key(*s)).await.unwrap();
    }
    for k in keys.iter().filter(|k| k.contains("/packs/")) {
        store.delete(&BlobKey::new(k).unwrap()).await.unwrap();
    }
    match writer.startup(true, manifests[1] - 1, false).await {
        Err(PersistFailure::Init(marsh_runtime::InitFailure::RecoveryNeeded { reason, .. })) => {
            assert!(reason.contains(&format!("a snapshot as of change {}", manifests[1])), "{reason}")
        }
        other => panic!("expected recovery-needed for a database behind a snapshot, got {other:?}"),
    }

    // A manifest planted in the store (it does not open with the node's key) stands for nothing:
    // a new instance keeps writing records, a start is not sent to recovery, and compaction
    // keeps the real snapshots (the planted one is left for the operator to see).
    let planted = BlobKey::new("accounting/snapshots/09999999999999999999.manifest").unwrap();
    store.put(&planted, vec![1; 64], PutMode::CreateOnly).await.unwrap();
    let writer = records_over(&store, &a, &config).await;
    assert_eq!(writer.startup(true, a.last_seq().unwrap(), false).await.unwrap(), StartupPlan::UseLocal);
    renew(200, 201, 7000);
    persist(&a, &writer).await;
    assert!(store.get(&record_key(a.last_seq().unwrap())).await.unwrap().is_some(), "not skipped");
    for i in 201..240u8 {
        renew(i, i + 1, 7000);
        persist(&a, &writer).await;
    }
    let keys = store.list("accounting/snapshots/", None, 1000).await.unwrap().keys;
    let real: Vec<u64> = keys
        .iter()
        .filter(|k| k.ends_with(".manifest") && k.as_str() != planted.as_str())
        .map(|k| seq_in(k, "snapshots/"))
        .collect();
    assert_eq!(real.len(), 2, "{keys:?}");
    assert!(real[0] >= manifests[1] && real[1] > manifests[1], "compacted past {manifests:?}: {real:?}");
    assert!(keys.iter().any(|k| k.as_str() == planted.as_str()), "the planted manifest is left where it is");
}

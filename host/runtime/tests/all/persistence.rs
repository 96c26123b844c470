//! `persistence-records` and `persistence-local` as wasm, through `WasmStrategy`: start-up
//! decisions, records written sealed, recovery in order, tampered blobs skipped, gaps reported.

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
    fn restore(&self, _: Vec<u8>) -> Result<(), String> {
        Err("no snapshots".into())
    }
}

async fn start(name: &str, store: &MemoryStore, sink: Arc<Collect>) -> WasmStrategy {
    let grants = Grants::new(SealKey::from_bytes([5; 32])).store("shares", Arc::new(store.clone())).accounting(sink);
    WasmStrategy::start(runtime(), &load(name), grants, Vec::new(), PluginLimits::default()).await.expect("start")
}

fn change(seq: u64) -> Vec<u8> {
    let mut c = seq.to_be_bytes().to_vec();
    c.extend_from_slice(format!("change number {seq}").as_bytes());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_sealed_and_recovered_in_order_with_tampering_and_gaps_reported() {
    let store = MemoryStore::new("shares");
    let writer = start("persistence_records", &store, Arc::default()).await;
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

    let sink = Arc::new(Collect::default());
    let report = start("persistence_records", &store, sink.clone())
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
    let report = start("persistence_records", &store, sink.clone())
        .await
        .recover(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((report.changes_read, report.tampered), (3, 1));
    assert_eq!(report.gaps, vec!["4".to_owned()]);
    assert_eq!(*sink.0.lock().unwrap(), vec![change(1), change(3), change(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_strategy_keeps_nothing_and_always_starts() {
    let store = MemoryStore::new("shares");
    let local = start("persistence_local", &store, Arc::default()).await;
    local.record(1, vec![change(1)]).await.unwrap();
    assert!(store.list("", None, 10).await.unwrap().keys.is_empty());
    assert_eq!(local.startup(false, 0, false).await.unwrap(), StartupPlan::UseLocal);
    assert_eq!(local.recover(std::time::Duration::from_secs(5)).await.unwrap().changes_read, 0);
}

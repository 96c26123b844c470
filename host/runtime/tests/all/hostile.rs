//! Each hostile plugin gets a clear, typed fault within its limit; the instance is replaced
//! and the very next call on the same plugin succeeds.

use std::time::Duration;

use marsh_core::{Backend, BackendError, ShareNumber, StorageIndex};
use marsh_runtime::{LoadError, PluginLimits};

use marsh_artifacts::Plugin;

use crate::support::{runtime, start};

fn si() -> StorageIndex {
    "aaaaaaaaaaaaaaaaaaaaaaaaaa".parse().expect("storage index")
}

/// Misbehave once, check the fault message, then check that the plugin still serves.
async fn fault_then_recover(plugin: Plugin, limits: PluginLimits, expect: &[&str]) {
    let name = plugin.package;
    let (backend, _dir) = start(plugin, limits).await;
    let stats = backend.stats();
    let before = stats.instances();
    let err = if plugin == marsh_artifacts::HOSTILE_FLOOD {
        backend.read(&si(), ShareNumber(0), 0, 10).await.map(drop)
    } else {
        backend.write(&si(), ShareNumber(0), 0, b"data").await
    }
    .expect_err("the hostile call must fail");
    let BackendError::Fault(message) = &err else { panic!("{name}: expected a fault, got {err:?}") };
    for word in expect {
        assert!(message.contains(word), "{name}: fault message {message:?} lacks {word:?}");
    }
    assert_eq!(stats.faults(), 1, "{name}: the fault is counted");
    assert_eq!(stats.last().as_deref(), Some(message.as_str()));
    // The host is still up and the plugin answers the next call from a fresh instance.
    assert_eq!(backend.list_shares(&si()).await, Ok(vec![]), "{name}: next call");
    assert!(stats.instances() > before, "{name}: a replacement instance was created");
    assert_eq!(backend.usage().await.map(|u| u.available), Ok(None), "{name}: and the one after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_faults_with_its_panic_message() {
    fault_then_recover(marsh_artifacts::HOSTILE_TRAP, PluginLimits::default(), &["trapped", "exploding on purpose"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_the_deadline() {
    let limits = PluginLimits { call_deadline: Duration::from_millis(300), ..PluginLimits::default() };
    fault_then_recover(marsh_artifacts::HOSTILE_SPIN, limits, &["deadline of 300ms"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_memory_growth_stops_at_the_cap() {
    let limits = PluginLimits { memory_bytes: 48 << 20, ..PluginLimits::default() };
    fault_then_recover(marsh_artifacts::HOSTILE_HOG, limits, &["memory cap of 48 MiB"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_refused() {
    fault_then_recover(
        marsh_artifacts::HOSTILE_FLOOD,
        PluginLimits::default(),
        &["answered `read`", "at most 10 allowed"],
    )
    .await;
}

/// Payloads live in host memory, outside the memory cap: a plugin that keeps every one it is
/// handed is stopped at the per-instance payload bound (four times the per-call bound), and
/// the fresh instance that replaces it starts with nothing held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_hoarding_payloads_is_stopped_at_the_payload_bound() {
    let limits = PluginLimits { max_call_bytes: 1 << 20, max_instances: 1, ..PluginLimits::default() };
    let (backend, _dir) = start(marsh_artifacts::HOSTILE_HOARD, limits).await;
    let chunk = vec![7u8; 1 << 20];
    for i in 0..4 {
        backend.write(&si(), ShareNumber(0), i << 20, &chunk).await.expect("within the bound");
    }
    let err = backend.write(&si(), ShareNumber(0), 4 << 20, &chunk).await.expect_err("past the bound");
    assert!(matches!(&err, BackendError::Fault(m) if m.contains("too many payloads")), "{err:?}");
    assert_eq!(backend.stats().faults(), 1);
    for i in 0..4 {
        backend.write(&si(), ShareNumber(0), i << 20, &chunk).await.expect("a fresh instance holds nothing");
    }
}

#[test]
fn a_plugin_built_against_another_abi_is_refused_at_load() {
    let err = runtime().load(&marsh_artifacts::HOSTILE_WRONG_ABI.built()).expect_err("must not load");
    match err {
        LoadError::AbiMismatch { found, supported, .. } => {
            assert_eq!(found, "0.9.0");
            assert_eq!(supported, marsh_runtime::ABI_VERSIONS.join(", "));
        }
        other => panic!("expected an ABI mismatch, got {other}"),
    }
}

/// A spinning guest gives its thread back at every epoch tick: on a runtime with one thread,
/// a task that sleeps 50 ms still runs long before the spinning call's deadline.
#[test]
fn a_spinning_call_does_not_hold_its_thread() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    rt.block_on(async {
        let limits = PluginLimits { call_deadline: Duration::from_secs(2), ..PluginLimits::default() };
        let (backend, _dir) = start(marsh_artifacts::HOSTILE_SPIN, limits).await;
        let started = std::time::Instant::now();
        let sleeper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            started.elapsed()
        });
        let err = backend.write(&si(), ShareNumber(0), 0, b"data").await.expect_err("the spin faults");
        assert!(matches!(err, BackendError::Fault(_)), "{err:?}");
        let spun = started.elapsed();
        assert!(sleeper.is_finished(), "the sleeper ran while the guest spun");
        let slept = sleeper.await.expect("sleeper");
        // Not a timing assertion: the sleeper finished before the spinning call did, which a
        // guest holding the only thread for its whole deadline would not allow.
        assert!(slept < spun, "the sleeper woke after {slept:?}, the call ended after {spun:?}");
    });
}

/// A store operator who copies one slot's pointer over another's: backend-s3 sealed each
/// pointer for its own key, so the copy reads as corrupt instead of as the other slot's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_pointer_moved_to_another_slot_is_refused() {
    let (backend, dir) = start(marsh_artifacts::BACKEND_S3, PluginLimits::default()).await;
    let (a, b): (StorageIndex, StorageIndex) =
        ("aaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap(), "baaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap());
    let write = |data: &[u8]| vec![marsh_core::WriteVector { offset: 0, data: data.to_vec() }];
    backend.mutable_write(&a, ShareNumber(0), &write(b"secret of a"), None).await.unwrap();
    backend.mutable_write(&b, ShareNumber(0), &write(b"data of b"), None).await.unwrap();
    let slot = |si: &StorageIndex| dir.path().join(format!("slots/{si}/0"));
    assert!(slot(&b).exists(), "backend-s3 keeps pointers at slots/SI/N");
    std::fs::copy(slot(&a), slot(&b)).unwrap();
    let err = backend.mutable_read(&b, ShareNumber(0), 0, 100).await.expect_err("a moved pointer");
    assert!(matches!(err, BackendError::Corrupt(_)), "{err:?}");
    assert_eq!(backend.mutable_read(&a, ShareNumber(0), 0, 100).await.unwrap(), b"secret of a");
}

//! Faults between the driver and the server, injected by a proxy: retried when transient,
//! reported clearly when not, and never leaving a partial share readable.

use std::sync::Arc;
use std::time::Duration;

use marsh_core::{Backend, BackendError, ShareNumber, StorageIndex};
use marsh_stores::{BlobKey, BlobStore, PutMode, StoreError};
use marsh_stores_s3::S3Store;

use crate::support::{Fault, FaultProxy, backend_s3};

fn key(k: &str) -> BlobKey {
    BlobKey::new(k).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_dropped_connections_are_retried() {
    // Of every four requests: a 503 SlowDown, a dropped connection, a 500, then one that passes.
    let proxy = FaultProxy::start(|n, _| match n % 4 {
        0 => Fault::Unavailable,
        1 => Fault::Drop,
        2 => Fault::Internal,
        _ => Fault::Pass,
    })
    .await;
    let mut c = proxy.config("retry");
    c.part_size = 5 << 20;
    let s = S3Store::open(c).await.expect("open through the proxy");
    s.put(&key("small"), b"abc".to_vec(), PutMode::CreateOnly).await.unwrap();
    assert_eq!(s.get(&key("small")).await.unwrap().as_deref(), Some(&b"abc"[..]));
    let data = marsh_conformance::pattern(3, 11 << 20);
    let mut up = s.begin_upload(&key("big"), PutMode::CreateOnly).await.unwrap();
    up.append(data.clone()).await.unwrap();
    up.finish().await.unwrap();
    assert_eq!(s.get(&key("big")).await.unwrap().as_deref(), Some(&data[..]));
    assert!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst) >= 10);
    // Retries show in the request count.
    assert!(s.stats().requests() > 12, "{}", s.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_answering_more_than_the_range_asked_is_refused() {
    let proxy = FaultProxy::start(|_, _| Fault::Pass).await;
    let s = S3Store::open(proxy.config("range")).await.expect("open");
    let data = marsh_conformance::pattern(5, 8 << 20);
    s.put(&key("share"), data.clone(), PutMode::CreateOnly).await.unwrap();
    assert_eq!(s.get_range(&key("share"), 100, 10).await.unwrap().as_deref(), Some(&data[100..110]));
    // The service now sends 8 MiB more than any range asked for.
    proxy.set_plan(|_, _| Fault::Pad(8 << 20));
    let e = s.get_range(&key("share"), 100, 10).await.expect_err("more than asked");
    assert!(matches!(&e, StoreError::Io(m) if m.contains("more than the 10 bytes asked for")), "{e:?}");
    // Honest answers are taken again.
    proxy.set_plan(|_, _| Fault::Pass);
    assert_eq!(s.get_range(&key("share"), 100, 10).await.unwrap().as_deref(), Some(&data[100..110]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out_and_are_retried() {
    let proxy =
        FaultProxy::start(|n, _| if n % 2 == 1 { Fault::Slow(Duration::from_secs(3)) } else { Fault::Pass }).await;
    let mut c = proxy.config("slow");
    c.timeout = Duration::from_secs(1);
    let s = S3Store::open(c).await.expect("open");
    s.put(&key("k"), b"v".to_vec(), PutMode::Overwrite).await.unwrap();
    assert_eq!(s.get(&key("k")).await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_failing_gets_a_clear_error() {
    let proxy = FaultProxy::start(|_, _| Fault::Pass).await;
    let mut c = proxy.config("down");
    c.max_attempts = 3;
    let s = S3Store::open(c).await.expect("open");
    proxy.set_plan(|_, _| Fault::Internal);
    let e = s.put(&key("k"), b"v".to_vec(), PutMode::CreateOnly).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Io(_)), "{e:?}");
    assert!(text.contains("store `shares` put \"k\"") && text.contains("500"), "{text}");
    assert_eq!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst), 3, "three tries");
    proxy.set_plan(|_, _| Fault::Pass);
    assert_eq!(s.get(&key("k")).await.unwrap(), None, "nothing was written");
}

/// Cut the connection to S3 after every possible number of requests of an upload: the share is
/// then either complete and correct or not there at all, and uploading it again works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_anywhere_never_leaves_a_partial_share() {
    let proxy = FaultProxy::start(|_, _| Fault::Pass).await;
    let mut c = proxy.config("cut");
    c.max_attempts = 1;
    let store = Arc::new(S3Store::open(c).await.expect("open"));
    let backend = backend_s3(store.clone()).await;
    let data = marsh_conformance::pattern(11, 3000);
    let upload = |si: StorageIndex| {
        let backend = &backend;
        let data = &data;
        async move {
            backend.begin(&si, ShareNumber(1), 3000).await?;
            backend.write(&si, ShareNumber(1), 2000, &data[2000..]).await?;
            backend.write(&si, ShareNumber(1), 0, &data[..1000]).await?;
            backend.write(&si, ShareNumber(1), 1000, &data[1000..2000]).await?;
            backend.finish(&si, ShareNumber(1)).await
        }
    };
    let mut cut_short = 0;
    for budget in 0..40u64 {
        let si = StorageIndex::from_bytes([budget as u8 + 1; 16]);
        let start = proxy.next_number();
        proxy.set_plan(move |n, _| if n >= start + budget { Fault::Drop } else { Fault::Pass });
        let outcome = upload(si).await;
        proxy.set_plan(|_, _| Fault::Pass);
        match backend.size(&si, ShareNumber(1)).await.unwrap() {
            Some(size) => {
                assert_eq!(size, 3000, "budget {budget}");
                assert_eq!(backend.read(&si, ShareNumber(1), 0, 4000).await.unwrap(), data, "budget {budget}");
            }
            None => {
                cut_short += 1;
                assert!(outcome.is_err(), "budget {budget}: the upload reported success but no share exists");
                assert_eq!(backend.list_shares(&si).await.unwrap(), Vec::<ShareNumber>::new());
                assert!(matches!(backend.read(&si, ShareNumber(1), 0, 10).await, Err(BackendError::NotFound)));
                upload(si).await.unwrap_or_else(|e| panic!("budget {budget}: uploading again: {e}"));
                assert_eq!(backend.read(&si, ShareNumber(1), 0, 4000).await.unwrap(), data, "budget {budget}");
            }
        }
    }
    assert!(cut_short >= 10, "the budgets cut uploads short at many points ({cut_short})");
    // Whatever the cuts left behind (chunks, records) is swept; the shares stay.
    let report = backend.sweep(0).await.unwrap();
    assert!(report.removed > 0, "{report:?}");
    let keys = store.list("", None, 1000).await.unwrap().keys;
    assert!(keys.iter().all(|k| k.starts_with("shares/") || k.starts_with("chunks/")), "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k.starts_with("shares/")).count(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_past_the_page_size_is_held_to_it_and_one_out_of_order_is_refused() {
    let proxy = FaultProxy::start(|_, _| Fault::Pass).await;
    let s = S3Store::open(proxy.config("listing")).await.expect("open");
    let names: Vec<String> = (0..30).map(|i| format!("k/{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        s.put(&key(name), vec![i as u8], PutMode::CreateOnly).await.unwrap();
    }
    // Every answer carries 50 keys more than the page asked for: pages of 7 stay pages of 7,
    // in order, and every real key is listed once.
    proxy.set_plan(|_, _| Fault::ListPadded);
    let (mut listed, mut after) = (Vec::<String>::new(), None::<String>);
    loop {
        let page = s.list("k/", after.as_deref(), 7).await.expect("a page");
        assert!(page.keys.len() <= 7, "{} keys in a page of 7", page.keys.len());
        listed.extend(page.keys);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "in order, each once: {listed:?}");
    let real: Vec<&String> = listed.iter().filter(|k| !k.contains('~')).collect();
    assert_eq!(real, names.iter().collect::<Vec<_>>());
    // An answer that goes back (its first key twice): an error, not a loop.
    proxy.set_plan(|_, _| Fault::ListRepeated);
    let e = s.list("k/", Some("k/10"), 7).await.expect_err("a key twice");
    assert!(matches!(&e, StoreError::Io(m) if m.contains("outside the listing")), "{e:?}");
}

//! The driver's object operations on a real server, over HTTP and HTTPS.

use marsh_stores::{BlobKey, BlobStore, PutMode, StoreError};
use marsh_stores_s3::{OpenError, S3Config, S3Store};

use crate::support::{config, fresh_prefix, open, tls_config};

fn key(k: &str) -> BlobKey {
    BlobKey::new(k).unwrap()
}

/// Every object operation, on whichever endpoint `c` names.
async fn object_operations(c: S3Config) {
    let s = open(c).await;
    let k = key("a/one");
    assert_eq!(s.get(&k).await.unwrap(), None);
    assert_eq!(s.head(&k).await.unwrap(), None);
    assert_eq!(s.get_range(&k, 0, 10).await.unwrap(), None);
    s.put(&k, b"hello world".to_vec(), PutMode::CreateOnly).await.unwrap();
    assert_eq!(s.put(&k, b"other".to_vec(), PutMode::CreateOnly).await, Err(StoreError::Exists));
    assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"hello world"[..]));
    assert_eq!(s.head(&k).await.unwrap(), Some(11));
    assert_eq!(s.get_range(&k, 6, 100).await.unwrap().as_deref(), Some(&b"world"[..]), "short at the end");
    assert_eq!(s.get_range(&k, 11, 5).await.unwrap().as_deref(), Some(&b""[..]), "past the end: empty");
    assert_eq!(s.get_range(&k, 0, 0).await.unwrap().as_deref(), Some(&b""[..]));
    s.put(&k, b"replaced".to_vec(), PutMode::Overwrite).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&b"replaced"[..]));
    s.put(&key("empty"), Vec::new(), PutMode::CreateOnly).await.unwrap();
    assert_eq!(s.head(&key("empty")).await.unwrap(), Some(0));
    assert!(s.delete(&k).await.unwrap());
    assert!(!s.delete(&k).await.unwrap(), "deleting twice reports absence");
    assert_eq!(s.get(&k).await.unwrap(), None);
    assert!(!s.random_access());
    assert_eq!(s.available().await.unwrap(), None);
    let stats = s.stats();
    assert!(stats.put >= 4 && stats.get >= 4 && stats.head >= 2 && stats.delete >= 1, "{stats}");
    assert!(stats.bytes_sent >= 19 && stats.bytes_received >= 16, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_http() {
    object_operations(config("http")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_https_with_a_test_ca() {
    object_operations(tls_config("https")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_the_ca_is_refused_as_unreachable() {
    let mut c = tls_config("no-ca");
    c.ca_file = None;
    c.max_attempts = 1;
    match S3Store::open(c).await {
        Err(OpenError::Unreachable { detail, .. }) => assert!(detail.to_lowercase().contains("cert"), "{detail}"),
        other => panic!("expected a certificate failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_in_order_and_hides_host_records() {
    let s = open(config("list")).await;
    let mut want = Vec::new();
    for i in 0..25 {
        let k = format!("d/{i:03}");
        s.put(&key(&k), vec![i as u8], PutMode::CreateOnly).await.unwrap();
        want.push(k);
    }
    s.put(&key("e/other"), vec![1], PutMode::CreateOnly).await.unwrap();
    s.put(&BlobKey::host("owner").unwrap(), vec![1], PutMode::CreateOnly).await.unwrap();
    let (mut got, mut after) = (Vec::new(), None);
    loop {
        let page = s.list("d/", after.as_deref(), 10).await.unwrap();
        assert!(page.keys.len() <= 10);
        got.extend(page.keys);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(got, want);
    let all = s.list("", None, 1000).await.unwrap();
    assert_eq!(all.keys.len(), 26, "the host's own record is not listed: {:?}", all.keys);
    assert_eq!(s.head(&BlobKey::host("owner").unwrap()).await.unwrap(), Some(1), "but it is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_uploads_use_multipart_when_large_and_are_invisible_until_finished() {
    let mut c = config("multipart");
    c.part_size = 5 << 20;
    let s = open(c).await;
    let data = marsh_conformance::pattern(7, (12 << 20) + 12345);
    let k = key("big");
    let mut up = s.begin_upload(&k, PutMode::CreateOnly).await.unwrap();
    for piece in data.chunks(1 << 20) {
        up.append(piece.to_vec()).await.unwrap();
    }
    assert_eq!(s.head(&k).await.unwrap(), None, "nothing visible before finish");
    up.finish().await.unwrap();
    assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&data[..]));
    let st = s.stats();
    assert!(st.post >= 2, "create + complete multipart: {st}");
    assert_eq!(s.get_range(&k, 6 << 20, 10).await.unwrap().as_deref(), Some(&data[6 << 20..(6 << 20) + 10]));

    // Create-only refuses to replace it, multipart or not.
    let mut again = s.begin_upload(&k, PutMode::CreateOnly).await.unwrap();
    let r = again.append(vec![0; 6 << 20]).await;
    let r = match r {
        Ok(()) => again.finish().await,
        Err(e) => Err(e),
    };
    assert_eq!(r, Err(StoreError::Exists));
    assert_eq!(s.get(&k).await.unwrap().as_deref(), Some(&data[..]));

    // An aborted upload leaves nothing.
    let k2 = key("aborted");
    let mut up = s.begin_upload(&k2, PutMode::Overwrite).await.unwrap();
    up.append(vec![1; 6 << 20]).await.unwrap();
    up.abort().await;
    assert_eq!(s.head(&k2).await.unwrap(), None);

    // A small streamed upload is one PUT.
    let k3 = key("small");
    let mut up = s.begin_upload(&k3, PutMode::CreateOnly).await.unwrap();
    up.append(b"ab".to_vec()).await.unwrap();
    up.append(b"cd".to_vec()).await.unwrap();
    up.finish().await.unwrap();
    assert_eq!(s.get(&k3).await.unwrap().as_deref(), Some(&b"abcd"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bucket_and_credentials_are_typed_errors() {
    let mut c = config("errors");
    c.bucket = format!("no-such-bucket-{}", std::process::id());
    match S3Store::open(c).await {
        Err(e @ OpenError::NoSuchBucket { .. }) => assert!(e.to_string().contains("does not exist"), "{e}"),
        other => panic!("expected NoSuchBucket, got {other:?}"),
    }
    let mut c = config("errors");
    c.secret_access_key = Some("wrong-secret".into());
    match S3Store::open(c).await {
        Err(OpenError::BadCredentials { .. } | OpenError::AccessDenied { .. }) => {}
        other => panic!("expected a credential error, got {other:?}"),
    }
    // On an operation, the error names the store, the operation and the key.
    let mut c = config("errors");
    c.access_key_id = Some("nobody".into());
    let s = S3Store::new(c).unwrap();
    let e = s.put(&key("x/y"), vec![1], PutMode::CreateOnly).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, StoreError::Denied(_)), "{e:?}");
    assert!(text.contains("store `shares` put \"x/y\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_stores_apart() {
    let bucket_wide = config("prefix");
    let a = open(S3Config { prefix: fresh_prefix("a"), ..bucket_wide.clone() }).await;
    let b = open(S3Config { prefix: fresh_prefix("b"), ..bucket_wide }).await;
    a.put(&key("same"), b"a".to_vec(), PutMode::CreateOnly).await.unwrap();
    b.put(&key("same"), b"b".to_vec(), PutMode::CreateOnly).await.unwrap();
    assert_eq!(a.get(&key("same")).await.unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(b.list("", None, 10).await.unwrap().keys, vec!["same".to_owned()]);
}

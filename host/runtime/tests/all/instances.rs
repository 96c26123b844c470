//! Several instances of one plugin over one store, as a node's pool of instances runs them:
//! what one instance deletes or uploads again, another one, holding caches of its own, reads
//! as the store holds it now.

use std::sync::Arc;

use marsh_core::{Backend, BackendError, ShareNumber, StorageIndex};
use marsh_runtime::PluginLimits;
use marsh_stores::DirStore;

use crate::support::start_on;

/// backend-s3 caches each share's manifest. A read the cached manifest places at or past the
/// share's end touches no chunk, so nothing tells the instance its manifest is stale: it asks
/// the store again instead of answering an empty read (which the server answers 204, the
/// share's end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_deleted_or_uploaded_again_elsewhere_reads_as_the_store_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirStore::open("shares", dir.path()).unwrap());
    let (one, other) = (
        start_on(marsh_artifacts::BACKEND_S3, PluginLimits::default(), store.clone()).await,
        start_on(marsh_artifacts::BACKEND_S3, PluginLimits::default(), store).await,
    );
    let (si, n) = ("caaaaaaaaaaaaaaaaaaaaaaaaa".parse::<StorageIndex>().unwrap(), ShareNumber(0));
    let upload = async |backend: &dyn Backend, data: &[u8]| {
        backend.begin(&si, n, data.len() as u64).await.unwrap();
        backend.write(&si, n, 0, data).await.unwrap();
        backend.finish(&si, n).await.unwrap();
    };
    upload(&one, b"abc").await;
    assert_eq!(other.read(&si, n, 0, 3).await.unwrap(), b"abc", "the other instance has the manifest now");

    assert!(one.delete(&si, n).await.unwrap());
    upload(&one, b"abcdef").await;
    assert_eq!(other.read(&si, n, 3, 3).await.unwrap(), b"def", "past the old end: the share uploaded again");

    assert!(one.delete(&si, n).await.unwrap());
    let gone = other.read(&si, n, 6, 10).await.expect_err("a deleted share, read past its end");
    assert_eq!(gone, BackendError::NotFound);
    assert_eq!(other.read(&si, n, 0, 1).await.expect_err("and within it"), BackendError::NotFound);
}

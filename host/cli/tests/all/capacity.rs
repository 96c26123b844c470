//! `storage.readonly` and `storage.max-bytes` as an operator uses them: `marsh config set` on a
//! running node, followed within seconds, no restart. Read-only refuses new immutable shares and
//! mutable writes, and keeps reads, lease renewals and advisories; the cap bounds what the node
//! says it can take and what it allocates.

#![allow(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

use std::time::{Duration, Instant};

use crate::common::{Fixture, TestNode};
use ciborium::value::Value;
use http::{Method, StatusCode};
use marsh_gbs_client::{GbsClient, Secrets, encode, rtw_body, text};

const IMMUTABLE: &str = "aeaqcaibaeaqcaibaeaqcaibae";
const MUTABLE: &str = "afaqcaibaeaqcaibaeaqcaibae";
const OTHER: &str = "agaqcaibaeaqcaibaeaqcaibae";

/// `available-space` in the `version` answer.
async fn available(client: &mut GbsClient) -> u64 {
    let r = client.call(Method::GET, "version", &[], &[], Vec::new()).await.expect("version");
    let v: Value = ciborium::from_reader(&r.body[..]).expect("cbor");
    let field = |m: &Value, name: &str| {
        m.as_map()?
            .iter()
            .find(|(k, _)| k.as_bytes().is_some_and(|b| b.as_slice() == name.as_bytes()))
            .map(|(_, v)| v.clone())
    };
    let v1 = field(&v, "http://allmydata.org/tahoe/protocols/storage/v1").expect("v1 map");
    let space = field(&v1, "available-space").expect("available-space");
    u64::try_from(space.as_integer().expect("an integer")).expect("u64")
}

/// The share numbers an allocation answered as allocated.
async fn allocated(client: &mut GbsClient, si: &str, seed: u8, shares: &[u64], size: u64) -> Vec<u64> {
    let r = client.allocate(si, &Secrets::from_seed(seed), shares, size).await.expect("allocate");
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = ciborium::from_reader(&r.body[..]).expect("cbor");
    let set = v.as_map().unwrap().iter().find(|(k, _)| k.as_text() == Some("allocated")).unwrap().1.clone();
    let Value::Tag(258, items) = set else { panic!("not a set: {set:?}") };
    items.as_array().unwrap().iter().map(|n| u64::try_from(n.as_integer().unwrap()).unwrap()).collect()
}

/// Poll `version` until `available-space` satisfies `ok` (the node re-reads its config every
/// few seconds); the last figure.
async fn until(client: &mut GbsClient, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let start = Instant::now();
    loop {
        let a = available(client).await;
        if ok(a) {
            return a;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what}: available-space still {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_the_byte_cap_take_effect_in_a_running_node() {
    let node = TestNode::new();
    let running = node.start();
    let mut client = running.client().await;
    let mutable = Secrets::from_seed(2);
    client.upload(IMMUTABLE, 0, &Secrets::from_seed(1), &[7; 1000]).await.expect("upload");
    let first =
        client.read_test_write(MUTABLE, &mutable, rtw_body(0, &[], &[(0, &b"version one"[..])], &[])).await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    let open = until(&mut client, "writable", |a| a > 0).await;

    // Read-only: nothing new, no mutable write, everything else as before.
    node.set("storage.readonly", "true");
    until(&mut client, "read-only", |a| a == 0).await;
    assert_eq!(allocated(&mut client, OTHER, 3, &[0, 1], 100).await, Vec::<u64>::new());
    assert_eq!(allocated(&mut client, OTHER, 3, &[2], 0).await, Vec::<u64>::new(), "not even zero bytes");
    let refused =
        client.read_test_write(MUTABLE, &mutable, rtw_body(0, &[], &[(0, &b"version two"[..])], &[])).await.unwrap();
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&refused.body));
    let path = format!("mutable/{MUTABLE}/0");
    let read = client.call(Method::GET, &path, &[], &[("range", "bytes=0-10")], Vec::new()).await.unwrap();
    assert_eq!(read.body.as_ref(), b"version one", "the refused write changed nothing");
    let read = client.call(Method::GET, &format!("immutable/{IMMUTABLE}/0"), &[], &[], Vec::new()).await.unwrap();
    assert_eq!((read.status, read.body.len()), (StatusCode::OK, 1000));
    assert_eq!(client.renew(IMMUTABLE, &Secrets::from_seed(9)).await.unwrap().status, StatusCode::NO_CONTENT);
    let advice = encode(&Value::Map(vec![(text("reason"), text("block hash mismatch"))]));
    let path = format!("immutable/{IMMUTABLE}/0/corrupt");
    let advised = client.call(Method::POST, &path, &[], &[], advice).await.unwrap();
    assert_eq!(advised.status, StatusCode::OK);

    // Writable again, under a cap: what the node says it can take is what the cap leaves beside
    // the bytes of the shares it holds, and an allocation past that is refused.
    let held = node.accountant().stored_bytes().unwrap();
    assert!((1011..2000).contains(&held), "{held}");
    node.set("storage.max-bytes", "5000");
    node.set("storage.readonly", "false");
    assert_eq!(until(&mut client, "capped", |a| a > 0 && a < open).await, 5000 - held);
    assert_eq!(allocated(&mut client, OTHER, 4, &[0], 5001 - held).await, Vec::<u64>::new(), "one byte too many");
    assert_eq!(allocated(&mut client, OTHER, 4, &[0], 3000).await, [0]);
    let grows = rtw_body(0, &[], &[(0, &[1u8; 8000][..])], &[]);
    let refused = client.read_test_write(MUTABLE, &mutable, grows).await.unwrap();
    assert_eq!(refused.status, StatusCode::INSUFFICIENT_STORAGE, "{}", String::from_utf8_lossy(&refused.body));
    let small = client.read_test_write(MUTABLE, &mutable, rtw_body(0, &[], &[(0, &b"version two"[..])], &[])).await;
    assert_eq!(small.unwrap().status, StatusCode::OK, "a write that does not grow past the cap still works");

    // No cap: the store's free space again.
    node.ok(&["config", "unset", "storage.max-bytes"]);
    until(&mut client, "uncapped", |a| a > 5000).await;
    drop(running);
}

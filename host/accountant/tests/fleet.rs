//! Accounting for a fleet: several nodes' accountants on one real PostgreSQL database. Accounts
//! and usage are the fleet's; leases, shares and figures stay each node's own.
#![allow(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use marsh_accountant::{AccountId, Accountant, AccountantError, Attributes, POSTGRES_CALLERS_FOR, authorization_value};
use marsh_core::{ShareId, ShareNumber, StorageIndex};
use marsh_pgtest::Cluster;
use marsh_sql::{Conn, PgSettings, Query, params};

fn database() -> PgSettings {
    let cluster = Cluster::shared().expect("a PostgreSQL cluster (`make postgres` installs the server)");
    PgSettings::new(cluster.url(&cluster.fresh_database().unwrap()))
}

fn share(n: u8) -> ShareId {
    ShareId::immutable(StorageIndex::from_bytes([n; 16]), ShareNumber(0))
}

#[test]
fn an_account_made_on_one_node_is_valid_on_every_node_and_its_usage_is_the_sum() {
    let db = database();
    let (a, b) = (Accountant::open_postgres(&db, "node-a").unwrap(), Accountant::open_postgres(&db, "node-b").unwrap());
    let new = a.create_account("alice", &Attributes { quota: Some(1000), ..Attributes::default() }, 5).unwrap();
    let on_b = b.caller(&authorization_value(&new.swissnum)).unwrap().expect("alice is known on node b");
    assert_eq!((on_b.id, on_b.attributes.quota), (new.account.id, Some(1000)));

    a.allocate(new.account.id, &share(1), 300, b"r", b"c", 10).unwrap();
    b.allocate(new.account.id, &share(2), 200, b"r", b"c", 10).unwrap();
    assert_eq!(a.usage(new.account.id).unwrap(), 500, "the fleet's usage, seen from a");
    assert_eq!(b.usage(new.account.id).unwrap(), 500, "and from b");
    // Each node's shares and leases are its own.
    assert_eq!(a.share_counts().unwrap(), (1, 0, 1));
    assert_eq!(b.share_counts().unwrap(), (1, 0, 1));
    assert!(b.leases(&share(1)).unwrap().is_empty(), "a's share is not b's");
    assert_eq!(a.leases(&share(1)).unwrap().len(), 1);
    b.forget_share(&share(2)).unwrap();
    assert_eq!(a.usage(new.account.id).unwrap(), 300);
    // The change logs are each node's: a strategy carries off what happened on its node.
    assert_eq!(a.changes_after(0, 100).unwrap().len(), 6, "account, 3 attributes, lease, share");
    assert_eq!(b.changes_after(0, 100).unwrap().len(), 3, "lease, share, forget");
}

#[test]
fn a_revocation_on_one_node_is_refused_by_another_within_a_second() {
    let db = database();
    let (a, b) = (Accountant::open_postgres(&db, "node-a").unwrap(), Accountant::open_postgres(&db, "node-b").unwrap());
    let new = a.create_account("mallory", &Attributes::default(), 5).unwrap();
    let auth = authorization_value(&new.swissnum);
    assert!(!b.caller(&auth).unwrap().unwrap().revoked);
    a.revoke("mallory", 6).unwrap();
    // b may answer from its cache for at most POSTGRES_CALLERS_FOR; after it, never.
    std::thread::sleep(POSTGRES_CALLERS_FOR + Duration::from_millis(50));
    assert_eq!(b.cached(Some(&auth)), None, "the cached answer has run out");
    assert!(b.caller(&auth).unwrap().unwrap().revoked, "b refuses mallory");
}

#[test]
fn nodes_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let db = database();
    let start = Arc::new(Barrier::new(3));
    let nodes: Vec<_> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|name| {
            let (db, start) = (db.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                Accountant::open_postgres(&db, name).map(|a| a.share_counts())
            })
        })
        .collect();
    for node in nodes {
        assert_eq!(node.join().unwrap().unwrap().unwrap(), (0, 0, 0));
    }
    let mut conn = db.connect().unwrap();
    let anonymous: Vec<i64> = conn.values("SELECT id FROM marsh.accounts", &[]).unwrap();
    assert_eq!(anonymous, [AccountId::ANONYMOUS.0], "the fleet's schema was made once");
    conn.execute("UPDATE marsh.schema_versions SET version = version + 1 WHERE name = ?1", &params!["fleet"]).unwrap();
    let e = Accountant::open_postgres(&db, "node-a").unwrap_err();
    assert!(matches!(e, AccountantError::NewerSchema { .. }), "{e}");
    assert!(e.to_string().contains("upgrade marsh"), "{e}");
}

#[test]
fn the_database_unreachable_is_an_unavailable_error_not_a_hang() {
    let cluster = Cluster::start().unwrap();
    let db_name = cluster.fresh_database().unwrap();
    let mut settings = PgSettings::new(cluster.url(&db_name));
    settings.wait = Duration::from_millis(300);
    settings.connect_timeout = Duration::from_secs(2);
    let a = Accountant::open_postgres(&settings, "node-a").unwrap();
    a.allocate(AccountId::ANONYMOUS, &share(1), 10, b"r", b"c", 1).unwrap();
    cluster.stop().unwrap();
    for _ in 0..2 {
        match a.add_or_renew(AccountId::ANONYMOUS, &share(1), b"r", b"c", 2) {
            Err(AccountantError::Sql(e)) => assert!(e.is_unavailable(), "{e}"),
            other => panic!("expected an unavailable error, got {other:?}"),
        }
    }
    cluster.start_server().unwrap();
    a.add_or_renew(AccountId::ANONYMOUS, &share(1), b"r", b"c", 3).unwrap();
    assert_eq!(a.leases(&share(1)).unwrap().len(), 1, "renewed, not doubled");
    assert_eq!(Accountant::open_postgres(&settings, "node-a").unwrap().share_counts().unwrap(), (1, 0, 1));
}

/// Alice, with a quota of 1,000 bytes, and four nodes on one database each making ten tries of
/// 100 bytes at once with `attempt` (node, alice, a storage index of its own): how many
/// succeeded, and alice's usage after.
fn race(attempt: fn(&Accountant, AccountId, StorageIndex) -> bool) -> (usize, u64) {
    let db = database();
    let first = Accountant::open_postgres(&db, "node-0").unwrap();
    let alice = first.create_account("alice", &Attributes { quota: Some(1000), ..Attributes::default() }, 5).unwrap();
    let id = alice.account.id;
    let nodes = 4;
    let start = Arc::new(Barrier::new(nodes));
    let racers: Vec<_> = (0..nodes)
        .map(|n| {
            let (db, start) = (db.clone(), start.clone());
            std::thread::spawn(move || {
                let node = Accountant::open_postgres(&db, &format!("node-{n}")).unwrap();
                start.wait();
                (0..10u8).filter(|i| attempt(&node, id, StorageIndex::from_bytes([n as u8 * 16 + i; 16]))).count()
            })
        })
        .collect();
    let done = racers.into_iter().map(|r| r.join().unwrap()).sum();
    (done, first.usage(id).unwrap())
}

#[test]
fn a_quota_holds_exactly_under_allocations_racing_on_every_node() {
    let (allocated, usage) = race(|node, id, si| {
        let share = ShareId::immutable(si, ShareNumber(0));
        let a =
            marsh_accountant::Allocation { account: id, share: &share, size: 100, renew: b"r", cancel: b"c", now: 1 };
        node.allocate_within(&a, Some(1000)).unwrap()
    });
    assert_eq!((allocated, usage), (10, 1000), "40 tries of 100 bytes under a quota of 1000");
}

#[test]
fn a_quota_holds_exactly_under_mutable_writes_racing_on_every_node() {
    use marsh_accountant::{MutableShareWrite, MutableWrite, QuotaCheck};
    let (written, usage) = race(|node, id, si| {
        let shares = [MutableShareWrite::Written { shnum: ShareNumber(0), size: 100, created: true }];
        let quotas = [QuotaCheck { account: id, quota: 1000, grows: 100 }];
        let w = MutableWrite {
            account: id,
            si,
            redo: b"redo",
            shares: &shares,
            enabler: b"we",
            keep_raw_enabler: false,
            renew: b"r",
            cancel: b"c",
            now: 1,
            lease_limit: 10,
            quotas: &quotas,
        };
        match node.begin_mutable_write(&w) {
            Ok(()) => true,
            Err(AccountantError::OverQuota { .. }) => false,
            Err(e) => panic!("{e}"),
        }
    });
    assert_eq!((written, usage), (10, 1000), "40 writes of 100 bytes under a quota of 1000");
}

//! Every case here runs on both engines, SQLite in a temporary file and a real PostgreSQL (one
//! cluster for the process, a fresh database per case, `marsh_pgtest::Cluster::shared`), so the
//! two cannot drift; the cases after the macro need what only PostgreSQL has (a pool, a server
//! to stop, TLS) and get a cluster of their own where they stop or reconfigure it.
#![allow(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use marsh_pgtest::Cluster;
use marsh_sql::{
    Conn, Engine, Migrated, PgSettings, Pool, Schema, SqlError, SqliteConn, Value, migrate, params, transaction,
};

/// A database of either engine: how to open another connection to it.
struct Db {
    open: Box<dyn Fn() -> Box<dyn Conn> + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.sqlite");
        let open = move || -> Box<dyn Conn> {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
            Box::new(SqliteConn::new(conn))
        };
        Db { open: Box::new(open), _dir: Some(dir) }
    }

    fn postgres() -> Db {
        let cluster = Cluster::shared().expect("a PostgreSQL cluster (`make postgres` installs one)");
        let url = cluster.url(&cluster.fresh_database().unwrap());
        Db { open: Box::new(move || Box::new(PgSettings::new(url.clone()).connect().unwrap())), _dir: None }
    }

    fn conn(&self) -> Box<dyn Conn> {
        (self.open)()
    }
}

fn blob(conn: &dyn Conn) -> &'static str {
    match conn.engine() {
        Engine::Sqlite => "BLOB",
        Engine::Postgres => "BYTEA",
    }
}

macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $case() { super::$case(super::Db::sqlite()) } )*
        }
        mod postgres {
            $( #[test] fn $case() { super::$case(super::Db::postgres()) } )*
        }
    };
}

on_both_engines!(
    values_come_back_as_they_went_in,
    portable_sql_means_the_same_on_both,
    a_transaction_commits_on_ok_and_rolls_back_on_error,
    migrations_apply_once_in_order_and_resume,
    a_newer_schema_is_refused,
    two_nodes_migrating_at_once_apply_each_step_once,
);

fn values_come_back_as_they_went_in(db: Db) {
    let mut conn = db.conn();
    let c = conn.as_mut();
    c.batch(&format!("CREATE TABLE v (i BIGINT, t TEXT, b {}, n BIGINT)", blob(c))).unwrap();
    let bytes: Vec<u8> = (0..=255).collect();
    let written = params![i64::MIN, "sn\u{f8}w \u{1f30a} '?1'", bytes.clone(), None::<i64>];
    assert_eq!(c.execute("INSERT INTO v (i, t, b, n) VALUES (?1, ?2, ?3, ?4)", &written).unwrap(), 1);
    c.execute("INSERT INTO v (i, t, b, n) VALUES (?1, ?2, ?3, ?4)", &params![i64::MAX, "", Vec::<u8>::new(), 0_u64])
        .unwrap();
    let rows = c.query("SELECT i, t, b, n FROM v ORDER BY i", &[]).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<i64>(0).unwrap(), i64::MIN);
    assert_eq!(rows[0].get::<String>(1).unwrap(), "sn\u{f8}w \u{1f30a} '?1'");
    assert_eq!(rows[0].get::<Vec<u8>>(2).unwrap(), bytes);
    assert_eq!(rows[0].get::<Value>(3).unwrap(), Value::Null);
    assert_eq!(rows[1].get::<u64>(0).unwrap(), i64::MAX as u64);
    assert_eq!(rows[1].get::<Vec<u8>>(2).unwrap(), Vec::<u8>::new());
    assert!(matches!(rows[0].get::<String>(0), Err(SqlError::Type { index: 0, .. })));
}

fn portable_sql_means_the_same_on_both(db: Db) {
    let mut conn = db.conn();
    let c = conn.as_mut();
    c.batch("CREATE TABLE usage (account BIGINT NOT NULL, si TEXT NOT NULL, size BIGINT NOT NULL, PRIMARY KEY (account, si))")
        .unwrap();
    let upsert = "INSERT INTO usage (account, si, size) VALUES (?1, ?2, ?3)
                  ON CONFLICT (account, si) DO UPDATE SET size = excluded.size RETURNING size";
    for (account, si, size) in [(1, "a", 10_u64), (1, "b", 20), (2, "a", 5), (1, "a", 15)] {
        let back: u64 = c.query_one(upsert, &params![account as i64, si, size]).unwrap().get(0).unwrap();
        assert_eq!(back, size);
    }
    let sum: u64 = c
        .query_one("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM usage WHERE account = ?1", &params![1_i64])
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(sum, 35, "the upsert replaced a's 10 with 15");
    let none: u64 = c
        .query_one("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM usage WHERE account = ?1", &params![9_i64])
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(none, 0);
    let exists: bool =
        c.query_one("SELECT EXISTS (SELECT 1 FROM usage WHERE si = ?1)", &params!["b"]).unwrap().get(0).unwrap();
    assert!(exists);
    assert_eq!(c.execute("DELETE FROM usage WHERE account = ?1", &params![1_i64]).unwrap(), 2);
    assert!(c.query_opt("SELECT size FROM usage WHERE account = ?1", &params![1_i64]).unwrap().is_none());
    assert!(matches!(c.query_one("SELECT size FROM usage WHERE account = ?1", &params![1_i64]), Err(SqlError::NoRow)));
}

fn a_transaction_commits_on_ok_and_rolls_back_on_error(db: Db) {
    let mut conn = db.conn();
    let c = conn.as_mut();
    c.batch("CREATE TABLE t (v BIGINT)").unwrap();
    transaction(c, |c| c.execute("INSERT INTO t (v) VALUES (1)", &[]).map(drop)).unwrap();
    let failed: Result<(), SqlError> = transaction(c, |c| {
        c.execute("INSERT INTO t (v) VALUES (2)", &[])?;
        c.execute("INSERT INTO no_such_table (v) VALUES (3)", &[])?;
        Ok(())
    });
    assert!(failed.is_err());
    let seen: Vec<i64> = c.query("SELECT v FROM t", &[]).unwrap().iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(seen, [1], "the failed transaction's first insert is gone");
    // The connection is usable after the rollback, inside and outside transactions.
    transaction(c, |c| c.execute("INSERT INTO t (v) VALUES (4)", &[]).map(drop)).unwrap();
    assert_eq!(c.query("SELECT v FROM t", &[]).unwrap().len(), 2);
}

const STEPS: &[&str] = &[
    "CREATE TABLE applied (step BIGINT NOT NULL)",
    "INSERT INTO applied (step) VALUES (2); CREATE TABLE later (v TEXT)",
    "INSERT INTO applied (step) VALUES (3)",
];

fn applied(c: &mut dyn Conn) -> Vec<i64> {
    c.query("SELECT step FROM applied ORDER BY step", &[]).unwrap().iter().map(|r| r.get(0).unwrap()).collect()
}

fn migrations_apply_once_in_order_and_resume(db: Db) {
    let mut conn = db.conn();
    let c = conn.as_mut();
    let schema = |steps| Schema { name: "test", steps };
    assert_eq!(migrate(c, &schema(&STEPS[..1])).unwrap(), Migrated { from: 0, to: 1 });
    // A step that fails leaves the version before it, and nothing of itself.
    let broken = [STEPS[0], "INSERT INTO applied (step) VALUES (2); INSERT INTO nowhere VALUES (1)"];
    let e = migrate(c, &schema(&broken)).unwrap_err();
    assert!(matches!(e, SqlError::Migration { to: 2, .. }), "{e}");
    assert!(e.to_string().contains("to version 2"), "{e}");
    assert_eq!(marsh_sql::version(c, &schema(STEPS)).unwrap(), 1);
    assert!(applied(c).is_empty(), "the failed step's insert was rolled back");
    assert_eq!(migrate(c, &schema(STEPS)).unwrap(), Migrated { from: 1, to: 3 });
    assert_eq!(migrate(c, &schema(STEPS)).unwrap(), Migrated { from: 3, to: 3 });
    assert_eq!(applied(c), [2, 3]);
}

fn a_newer_schema_is_refused(db: Db) {
    let mut conn = db.conn();
    let c = conn.as_mut();
    migrate(c, &Schema { name: "test", steps: STEPS }).unwrap();
    let e = migrate(c, &Schema { name: "test", steps: &STEPS[..2] }).unwrap_err();
    assert!(matches!(e, SqlError::NewerSchema { found: 3, supported: 2, .. }), "{e}");
    assert!(e.to_string().contains("upgrade marsh"), "{e}");
    assert_eq!(applied(c), [2, 3], "nothing touched");
}

fn two_nodes_migrating_at_once_apply_each_step_once(db: Db) {
    // The slow first step keeps the other node waiting on the lock; without it, the second
    // would read version 0 too and fail creating the table the first made.
    let slow = match db.conn().engine() {
        Engine::Sqlite => "CREATE TABLE applied (step BIGINT NOT NULL); INSERT INTO applied (step) VALUES (1)",
        Engine::Postgres => {
            "CREATE TABLE applied (step BIGINT NOT NULL); SELECT pg_sleep(0.5); INSERT INTO applied (step) VALUES (1)"
        }
    };
    let steps: &'static [&'static str] = Box::leak(Box::new([slow, STEPS[2]]));
    let db = Arc::new(db);
    let start = Arc::new(Barrier::new(2));
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let (db, start) = (db.clone(), start.clone());
            std::thread::spawn(move || {
                let mut conn = db.conn();
                start.wait();
                migrate(conn.as_mut(), &Schema { name: "fleet", steps })
            })
        })
        .collect();
    let results: Vec<Migrated> = nodes.into_iter().map(|n| n.join().unwrap().unwrap()).collect();
    assert!(results.iter().all(|m| m.to == 2), "{results:?}");
    assert_eq!(results.iter().filter(|m| m.from == 0).count(), 1, "one node migrated: {results:?}");
    assert_eq!(applied(db.conn().as_mut()), [1, 3], "each step once");
}

fn pg_url(cluster: &Cluster) -> String {
    cluster.url(&cluster.fresh_database().unwrap())
}

#[test]
fn postgres_prepares_a_statement_once_per_connection() {
    let cluster = Cluster::shared().unwrap();
    let mut conn = PgSettings::new(pg_url(cluster)).connect().unwrap();
    let before = conn.round_trips();
    for _ in 0..3 {
        conn.query_one("SELECT ?1::BIGINT + 1", &params![41_i64]).unwrap();
    }
    assert_eq!(conn.round_trips() - before, 4, "one prepare and three runs");
}

#[test]
fn the_pool_is_bounded_and_a_caller_waits_a_bounded_time() {
    let cluster = Cluster::shared().unwrap();
    let mut settings = PgSettings::new(pg_url(cluster));
    settings.max_connections = 2;
    settings.wait = Duration::from_millis(300);
    let pool = Pool::new(settings);
    let mut a = pool.get().unwrap();
    let b = pool.get().unwrap();
    let e = pool.get().unwrap_err();
    assert!(matches!(e, SqlError::PoolTimeout { size: 2, .. }) && e.is_unavailable(), "{e}");
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle, stats.waits, stats.timeouts), (2, 0, 1, 1), "{stats:?}");
    // A waiter gets the connection the moment one is given back.
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.get().map(|mut c| c.query_one("SELECT 1", &[]).is_ok()))
    };
    std::thread::sleep(Duration::from_millis(50));
    a.query_one("SELECT 1", &[]).unwrap();
    drop(a);
    assert!(waiter.join().unwrap().unwrap());
    drop(b);
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle), (2, 2), "{stats:?}");
    assert!(stats.round_trips >= 3, "{stats:?}");
}

#[test]
fn an_outage_is_an_unavailable_error_and_the_pool_recovers_by_itself() {
    let cluster = Cluster::start().unwrap();
    let mut settings = PgSettings::new(pg_url(&cluster));
    settings.wait = Duration::from_millis(200);
    settings.connect_timeout = Duration::from_secs(2);
    let pool = Pool::new(settings);
    pool.get().unwrap().query_one("SELECT 1", &[]).unwrap();

    cluster.stop().unwrap();
    let e = pool.get().and_then(|mut c| c.query_one("SELECT 1", &[])).unwrap_err();
    assert!(e.is_unavailable(), "a cut connection: {e}");
    let e = pool.get().and_then(|mut c| c.query_one("SELECT 1", &[])).unwrap_err();
    assert!(matches!(e, SqlError::Unreachable { .. }) && e.is_unavailable(), "no server: {e}");
    assert!(e.to_string().contains("127.0.0.1 port"), "names where: {e}");
    assert_eq!(pool.stats().open, 0, "the cut connection was dropped: {:?}", pool.stats());

    cluster.start_server().unwrap();
    let back: i64 = pool.get().unwrap().query_one("SELECT 7::BIGINT", &[]).unwrap().get(0).unwrap();
    assert_eq!(back, 7);
}

#[test]
fn a_deadlock_is_retried_and_both_transactions_land() {
    let cluster = Cluster::shared().unwrap();
    let url = pg_url(cluster);
    let mut setup = PgSettings::new(url.clone()).connect().unwrap();
    setup
        .batch("CREATE TABLE c (id BIGINT PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO c VALUES (1, 0), (2, 0)")
        .unwrap();
    let start = Arc::new(Barrier::new(2));
    let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let workers: Vec<_> = [(1_i64, 2_i64), (2, 1)]
        .into_iter()
        .map(|(first, second)| {
            let (url, start, attempts) = (url.clone(), start.clone(), attempts.clone());
            std::thread::spawn(move || {
                let mut conn = PgSettings::new(url).connect().unwrap();
                let mut met = false;
                transaction(&mut conn, |c| {
                    attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    c.execute("UPDATE c SET n = n + 1 WHERE id = ?1", &params![first])?;
                    if !met {
                        met = true;
                        start.wait();
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    c.execute("UPDATE c SET n = n + 1 WHERE id = ?1", &params![second])?;
                    Ok::<_, SqlError>(())
                })
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap().unwrap();
    }
    // At least one was run again (PostgreSQL picks which, and on a busy machine the retried one
    // can meet the other's lock again: CI once saw four runs); each counted exactly once.
    let attempts = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(attempts >= 3, "a deadlock was detected and retried: {attempts} runs");
    let counts: Vec<i64> =
        setup.query("SELECT n FROM c ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(counts, [2, 2], "each transaction counted once");
}

#[test]
fn tls_to_the_database_is_verified_against_the_operators_ca() {
    let cluster = Cluster::start().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    cluster.enable_tls(&server.pem(), &server_key.serialize_pem()).unwrap();

    let mut settings = PgSettings::new(format!("{} sslmode=require", pg_url(&cluster)));
    settings.ca_pem = Some(ca.pem().into_bytes());
    let mut conn = settings.connect().unwrap();
    let ssl: bool =
        conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap().get(0).unwrap();
    assert!(ssl, "the session is TLS");

    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    settings.ca_pem = Some(other_params.self_signed(&other_key).unwrap().pem().into_bytes());
    let e = settings.connect().unwrap_err();
    assert!(matches!(e, SqlError::Unreachable { .. }), "a server the CA did not sign is refused: {e}");
}

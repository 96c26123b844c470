//! The accountant's SQLite schema and its forward migrations, applied by `marsh_sql::migrate`:
//! the version lives in SQLite's `user_version`; each migration runs in its own transaction and
//! moves the version by one, so an interrupted upgrade resumes where it stopped. A database from
//! a newer marsh is refused.

use rusqlite::Connection;

use crate::AccountantError;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, attributes, per-account leases and share usage, write enablers, advisories.
    "
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        swissnum TEXT UNIQUE,
        swissnum_hash BLOB UNIQUE,
        created INTEGER NOT NULL,
        revoked INTEGER);
    INSERT INTO accounts (id, name, created) VALUES (0, 'anonymous', 0);
    CREATE TABLE attributes (
        account INTEGER NOT NULL REFERENCES accounts(id),
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (account, key));
    CREATE TABLE leases (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, renew_hash BLOB NOT NULL,
        cancel_hash BLOB NOT NULL, expires INTEGER NOT NULL, account INTEGER NOT NULL,
        PRIMARY KEY (si, shnum, renew_hash));
    CREATE INDEX leases_by_account ON leases (account);
    CREATE TABLE shares (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, account INTEGER NOT NULL, size INTEGER NOT NULL,
        PRIMARY KEY (si, shnum));
    CREATE INDEX shares_by_account ON shares (account);
    CREATE TABLE write_enablers (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, enabler_hash BLOB NOT NULL,
        PRIMARY KEY (si, shnum));
    CREATE TABLE corruption_advisories (
        at INTEGER NOT NULL, kind TEXT NOT NULL, si TEXT NOT NULL, shnum INTEGER NOT NULL, reason TEXT NOT NULL);
    ",
    // 2: the change log persistence strategies carry off the machine, and how far they got.
    "
    CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('persisted_seq', 0);
    ",
    // 3: share kinds kept apart. Leases and holders are keyed by (kind, si, shnum), kind 0
    // immutable and 1 mutable. Rows from before could not say; a share with a recorded write
    // enabler is taken as mutable (only mutable shares have one), any other as immutable.
    // Two node-local tables that snapshots leave out: immutable uploads not finished yet, and
    // mutable writes recorded but not yet known to be applied in full.
    "
    CREATE TABLE leases3 (
        kind INTEGER NOT NULL CHECK (kind IN (0, 1)), si TEXT NOT NULL, shnum INTEGER NOT NULL,
        renew_hash BLOB NOT NULL, cancel_hash BLOB NOT NULL, expires INTEGER NOT NULL,
        account INTEGER NOT NULL,
        PRIMARY KEY (kind, si, shnum, renew_hash));
    INSERT INTO leases3 (kind, si, shnum, renew_hash, cancel_hash, expires, account)
        SELECT EXISTS (SELECT 1 FROM write_enablers w WHERE w.si = l.si AND w.shnum = l.shnum),
               si, shnum, renew_hash, cancel_hash, expires, account FROM leases l;
    DROP TABLE leases;
    ALTER TABLE leases3 RENAME TO leases;
    CREATE INDEX leases_by_account ON leases (account);
    CREATE TABLE shares3 (
        kind INTEGER NOT NULL CHECK (kind IN (0, 1)), si TEXT NOT NULL, shnum INTEGER NOT NULL,
        account INTEGER NOT NULL, size INTEGER NOT NULL,
        PRIMARY KEY (kind, si, shnum));
    INSERT INTO shares3 (kind, si, shnum, account, size)
        SELECT EXISTS (SELECT 1 FROM write_enablers w WHERE w.si = s.si AND w.shnum = s.shnum),
               si, shnum, account, size FROM shares s;
    DROP TABLE shares;
    ALTER TABLE shares3 RENAME TO shares;
    CREATE INDEX shares_by_account ON shares (account);
    CREATE TABLE open_uploads (si TEXT NOT NULL, shnum INTEGER NOT NULL, PRIMARY KEY (si, shnum));
    CREATE TABLE pending_writes (si TEXT PRIMARY KEY, body BLOB NOT NULL);
    ",
    // 4: the sequence number each mutable share carried when this node last wrote it, kept on
    // the node (where the store's operator cannot put an older one back) to refuse a share the
    // store rolled back.
    "
    CREATE TABLE mutable_seqnums (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, seqnum INTEGER NOT NULL,
        PRIMARY KEY (si, shnum));
    ",
    // 5: figures kept as the rows change, so nothing a node serves scans a table whose size
    // grows with the shares it holds: share counts, bytes and storage indexes (`tallies`), each
    // account's bytes, shares and leases (`account_tallies`), and each leased share's latest
    // lease expiry (`share_expiry`, indexed by time: lease expiry asks it for what ran out).
    // Triggers keep them, in the transaction of every change; they are derived, node-local, and
    // follow a restored snapshot's rows as those are copied in.
    "
    CREATE INDEX shares_by_si ON shares (si);
    CREATE TABLE tallies (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO tallies (name, value) VALUES
        ('immutable', (SELECT count(*) FROM shares WHERE kind = 0)),
        ('mutable', (SELECT count(*) FROM shares WHERE kind = 1)),
        ('bytes', (SELECT coalesce(sum(size), 0) FROM shares)),
        ('buckets', (SELECT count(DISTINCT si) FROM shares));
    CREATE TABLE account_tallies (
        account INTEGER PRIMARY KEY, bytes INTEGER NOT NULL DEFAULT 0, shares INTEGER NOT NULL DEFAULT 0,
        leases INTEGER NOT NULL DEFAULT 0);
    INSERT INTO account_tallies (account, bytes, shares)
        SELECT account, sum(size), count(*) FROM shares GROUP BY account;
    INSERT INTO account_tallies (account, leases)
        SELECT account, count(*) FROM leases WHERE true GROUP BY account
        ON CONFLICT (account) DO UPDATE SET leases = excluded.leases;
    CREATE TABLE share_expiry (
        kind INTEGER NOT NULL, si TEXT NOT NULL, shnum INTEGER NOT NULL, expires INTEGER NOT NULL,
        PRIMARY KEY (kind, si, shnum)) WITHOUT ROWID;
    INSERT INTO share_expiry (kind, si, shnum, expires)
        SELECT kind, si, shnum, max(expires) FROM leases GROUP BY kind, si, shnum;
    CREATE INDEX share_expiry_by_time ON share_expiry (expires, kind, si, shnum);

    CREATE TRIGGER shares_added AFTER INSERT ON shares BEGIN
        UPDATE tallies SET value = value + 1 WHERE name = CASE NEW.kind WHEN 0 THEN 'immutable' ELSE 'mutable' END;
        UPDATE tallies SET value = value + NEW.size WHERE name = 'bytes';
        UPDATE tallies SET value = value + 1 WHERE name = 'buckets' AND NOT EXISTS (
            SELECT 1 FROM shares WHERE si = NEW.si AND NOT (kind = NEW.kind AND shnum = NEW.shnum));
        INSERT INTO account_tallies (account, bytes, shares) VALUES (NEW.account, NEW.size, 1)
            ON CONFLICT (account) DO UPDATE SET bytes = bytes + excluded.bytes, shares = shares + 1;
    END;
    CREATE TRIGGER shares_removed AFTER DELETE ON shares BEGIN
        UPDATE tallies SET value = value - 1 WHERE name = CASE OLD.kind WHEN 0 THEN 'immutable' ELSE 'mutable' END;
        UPDATE tallies SET value = value - OLD.size WHERE name = 'bytes';
        UPDATE tallies SET value = value - 1 WHERE name = 'buckets' AND NOT EXISTS (
            SELECT 1 FROM shares WHERE si = OLD.si);
        UPDATE account_tallies SET bytes = bytes - OLD.size, shares = shares - 1 WHERE account = OLD.account;
    END;
    CREATE TRIGGER shares_changed AFTER UPDATE OF size, account ON shares BEGIN
        UPDATE tallies SET value = value + NEW.size - OLD.size WHERE name = 'bytes';
        UPDATE account_tallies SET bytes = bytes - OLD.size, shares = shares - 1 WHERE account = OLD.account;
        INSERT INTO account_tallies (account, bytes, shares) VALUES (NEW.account, NEW.size, 1)
            ON CONFLICT (account) DO UPDATE SET bytes = bytes + excluded.bytes, shares = shares + 1;
    END;
    CREATE TRIGGER shares_rekeyed BEFORE UPDATE OF kind, si, shnum ON shares BEGIN
        SELECT RAISE(ABORT, 'a share row is never moved to another share');
    END;
    CREATE TRIGGER leases_added AFTER INSERT ON leases BEGIN
        INSERT INTO account_tallies (account, leases) VALUES (NEW.account, 1)
            ON CONFLICT (account) DO UPDATE SET leases = leases + 1;
        INSERT INTO share_expiry (kind, si, shnum, expires) VALUES (NEW.kind, NEW.si, NEW.shnum, NEW.expires)
            ON CONFLICT (kind, si, shnum) DO UPDATE SET expires = max(expires, excluded.expires);
    END;
    CREATE TRIGGER leases_removed AFTER DELETE ON leases BEGIN
        UPDATE account_tallies SET leases = leases - 1 WHERE account = OLD.account;
        DELETE FROM share_expiry WHERE kind = OLD.kind AND si = OLD.si AND shnum = OLD.shnum;
        INSERT INTO share_expiry (kind, si, shnum, expires)
            SELECT kind, si, shnum, max(expires) FROM leases
            WHERE kind = OLD.kind AND si = OLD.si AND shnum = OLD.shnum GROUP BY kind, si, shnum;
    END;
    CREATE TRIGGER leases_changed AFTER UPDATE OF expires, account ON leases BEGIN
        UPDATE account_tallies SET leases = leases - 1 WHERE account = OLD.account;
        INSERT INTO account_tallies (account, leases) VALUES (NEW.account, 1)
            ON CONFLICT (account) DO UPDATE SET leases = leases + 1;
        UPDATE share_expiry SET expires = (
            SELECT max(expires) FROM leases WHERE kind = NEW.kind AND si = NEW.si AND shnum = NEW.shnum)
            WHERE kind = NEW.kind AND si = NEW.si AND shnum = NEW.shnum;
    END;
    CREATE TRIGGER leases_rekeyed BEFORE UPDATE OF kind, si, shnum ON leases BEGIN
        SELECT RAISE(ABORT, 'a lease row is never moved to another share');
    END;
    ",
    // 6: leases say how their secrets are hashed: 0 SHA-256 (every row before), 1 BLAKE2b-256
    // as Tahoe-LAFS keeps them (new leases, and those adopted from a Tahoe node), so a node
    // moved either way keeps its clients' leases. And the raw write enablers of mutable shares
    // (`storage.keep-write-enablers`, which `marsh adopt` turns on), which a Tahoe share
    // container holds and `marsh export-tahoe` writes back; in the change log like the hashes,
    // so recovery brings them back.
    "
    ALTER TABLE leases ADD COLUMN scheme INTEGER NOT NULL DEFAULT 0 CHECK (scheme IN (0, 1));
    CREATE TABLE write_enablers_raw (
        si TEXT NOT NULL, shnum INTEGER NOT NULL, enabler BLOB NOT NULL,
        PRIMARY KEY (si, shnum));
    ",
];

/// Copy the database the previous release (schema 2) made while a stock Tahoe-LAFS 1.20 client
/// stored an immutable file, a directory and a mutable file on it (`tests/fixtures/`) to `to`.
#[cfg(test)]
pub(crate) fn copy_previous_release_database(to: &std::path::Path) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema2-made-by-0.1.0.sqlite");
    std::fs::copy(fixture, to).expect("the schema-2 fixture");
}

/// Tables that stay on this node: bookkeeping of the process that wrote them, never part of a
/// snapshot nor compared when one is restored.
pub(crate) const NODE_LOCAL: &[&str] =
    &["meta", "open_uploads", "pending_writes", "mutable_seqnums", "tallies", "account_tallies", "share_expiry"];

/// Before a database written by an earlier release is migrated, keep a copy of it as it was,
/// beside it (`accountant.sqlite.schema-N`, a consistent copy by `VACUUM INTO`, made once): the
/// way back for an operator who returns to that release. It holds the accounting state of the
/// moment of the upgrade; shares are never touched by a migration.
pub(crate) fn keep_before_migrating(conn: &Connection, path: &std::path::Path) -> Result<(), AccountantError> {
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 || version >= VERSION {
        return Ok(());
    }
    let copy = std::path::PathBuf::from(format!("{}.schema-{version}", path.display()));
    if copy.exists() {
        return Ok(());
    }
    let partial = std::path::PathBuf::from(format!("{}.partial", copy.display()));
    let _ = std::fs::remove_file(&partial);
    conn.execute("VACUUM INTO ?1", [partial.to_string_lossy()])?;
    std::fs::rename(&partial, &copy)
        .map_err(|source| AccountantError::Io { what: format!("keeping {}", copy.display()), source })?;
    Ok(())
}

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// The accountant's schema: its name and steps.
pub(crate) const SCHEMA: marsh_sql::Schema<'static> = marsh_sql::Schema { name: "accountant", steps: MIGRATIONS };

/// Bring `conn` to [`VERSION`], each step in its own transaction under the write lock.
pub(crate) fn migrate(conn: &mut dyn marsh_sql::Conn) -> Result<(), AccountantError> {
    match marsh_sql::migrate(conn, &SCHEMA) {
        Ok(_) => Ok(()),
        Err(marsh_sql::SqlError::NewerSchema { found, supported, .. }) => {
            Err(AccountantError::NewerSchema { found, supported })
        }
        Err(e) => Err(e.into()),
    }
}

/// Bring `conn` to `target` (tests make databases of earlier releases with it).
#[cfg(test)]
fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), AccountantError> {
    loop {
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == target {
            return Ok(());
        }
        if version > VERSION {
            return Err(AccountantError::NewerSchema { found: version, supported: VERSION });
        }
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountId, Accountant, SCHEMA_VERSION};
    use marsh_core::{ShareId, ShareNumber, StorageIndex};

    /// A database as the previous release (schema 2) left it: one immutable share with a lease,
    /// one mutable share with its enabler, lease and holder, and their version-1 change records.
    #[test]
    fn a_schema_2_database_gets_share_kinds_from_its_write_enablers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accountant.sqlite");
        let (chk, slot) = (StorageIndex::from_bytes([1; 16]), StorageIndex::from_bytes([2; 16]));
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate_to(&mut conn, 2).unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO leases VALUES ('{chk}', 0, x'{r}', x'{r}', 1000, 0);
                 INSERT INTO shares VALUES ('{chk}', 0, 0, 300);
                 INSERT INTO leases VALUES ('{slot}', 0, x'{r}', x'{r}', 2000, 0);
                 INSERT INTO shares VALUES ('{slot}', 0, 0, 40);
                 INSERT INTO write_enablers VALUES ('{slot}', 0, x'{r}');",
                r = "11".repeat(32)
            ))
            .unwrap();
        }
        let a = Accountant::open(&path).unwrap();
        let (imm, mutable) = (ShareId::immutable(chk, ShareNumber(0)), ShareId::mutable(slot, ShareNumber(0)));
        assert_eq!(a.leases(&imm).unwrap().len(), 1);
        assert!(a.leases(&ShareId::mutable(chk, ShareNumber(0))).unwrap().is_empty());
        assert_eq!(a.leases(&mutable).unwrap()[0].expires, 2000);
        assert!(a.leases(&ShareId::immutable(slot, ShareNumber(0))).unwrap().is_empty());
        assert_eq!(a.holder(&mutable).unwrap().map(|h| h.id), Some(AccountId::ANONYMOUS));
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 340);
        // The migrated database behaves like a new one: an immutable share of the slot's
        // storage index comes and goes without touching the mutable share.
        let stranger = ShareId::immutable(slot, ShareNumber(0));
        a.allocate(AccountId::ANONYMOUS, &stranger, 5, b"x", b"y", 10).unwrap();
        a.forget_share(&stranger).unwrap();
        assert_eq!(a.leases(&mutable).unwrap().len(), 1);
        assert!(a.check_write_enabler(&slot, ShareNumber(0), &[0x11; 32]).unwrap().is_some());
    }

    /// A database the previous release made while a stock Tahoe-LAFS 1.20 client stored an
    /// immutable file, a directory and a mutable file on it (`tests/fixtures/`).
    #[test]
    fn a_database_made_by_the_previous_release_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accountant.sqlite");
        copy_previous_release_database(&path);
        let a = Accountant::open(&path).unwrap();
        let si = |s: &str| s.parse::<StorageIndex>().unwrap();
        let (chk, directory, file) =
            (si("fhnvs4r3lsf4z7alfutfs5stvm"), si("xw6h353dhn5s23oqrt6drjnibe"), si("fl44vrmzgbnzqenlbw7kc4ser4"));
        let n = ShareNumber(0);
        assert_eq!(a.leases(&ShareId::immutable(chk, n)).unwrap().len(), 1);
        assert!(a.leases(&ShareId::mutable(chk, n)).unwrap().is_empty());
        for slot in [directory, file] {
            assert_eq!(a.leases(&ShareId::mutable(slot, n)).unwrap().len(), 1, "{slot}");
            assert!(a.leases(&ShareId::immutable(slot, n)).unwrap().is_empty(), "{slot}");
            assert!(a.check_write_enabler(&slot, n, b"not it").unwrap().is_some(), "its enabler stays");
            assert_eq!(a.holder(&ShareId::mutable(slot, n)).unwrap().map(|h| h.id), Some(AccountId::ANONYMOUS));
        }
        assert_eq!(a.usage(AccountId::ANONYMOUS).unwrap(), 200_493 + 1_906 + 201_905);
        assert_eq!(a.open_uploads().unwrap(), vec![]);
        // The database as that release left it is kept beside, for going back to it.
        let kept = Connection::open(dir.path().join("accountant.sqlite.schema-2")).unwrap();
        let v: u32 = kept.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let leases: i64 = kept.query_row("SELECT count(*) FROM leases", [], |r| r.get(0)).unwrap();
        assert_eq!((v, leases), (2, 3));
        drop(a);
        drop(Accountant::open(&path).unwrap());
        assert!(!dir.path().join("accountant.sqlite.schema-6").exists(), "a current database is not copied");
    }

    #[test]
    fn the_schema_migrates_forward_and_refuses_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        drop(Accountant::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let v: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        assert!(matches!(Accountant::open(&path), Err(AccountantError::NewerSchema { .. })));
    }
}

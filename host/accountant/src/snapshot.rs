//! Snapshots of the accounting database, for persistence strategies that compact their log:
//! [`Accountant::snapshot`] makes a consistent copy as of one change, and
//! [`Accountant::restore_snapshot`] replaces the database's contents with one during recovery.
//!
//! The format is a SQLite database file of this crate's schema (its version in `user_version`),
//! with the change log cut down to its newest entry (which names the snapshot's sequence) and
//! without the node-local bookkeeping (`meta`, unfinished uploads, pending mutable writes, the
//! figures kept by triggers, and the triggers themselves). A
//! snapshot of an older schema is migrated forward
//! on restore; one from a newer marsh is refused.
//!
//! A snapshot handed back is hostile input until checked: it is written to a temporary file,
//! opened with SQLite's defensive settings, integrity-checked, required to hold exactly this
//! schema's tables, and only its rows are copied, in one transaction, into the live database
//! (whose own schema, triggers and settings stay untouched).

use std::path::{Path, PathBuf};

use marsh_sql::{Query, SqliteConn};
use rusqlite::{Connection, OpenFlags};

use crate::{Accountant, AccountantError, schema};

/// The tables a snapshot carries, in copy order (`schema::NODE_LOCAL` ones stay on the node).
const TABLES: &[&str] = &[
    "accounts",
    "attributes",
    "leases",
    "shares",
    "write_enablers",
    "write_enablers_raw",
    "corruption_advisories",
    "changes",
];

/// The largest snapshot the host accepts back.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// A consistent copy of the accounting database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The newest change it includes (0 for a database with no changes).
    pub sequence: u64,
    /// The snapshot's bytes (a SQLite database file).
    pub bytes: Vec<u8>,
}

/// A temporary file removed when dropped (with SQLite's side files).
struct TempDb(PathBuf);

impl TempDb {
    fn beside(db: Option<&Path>, what: &str) -> Result<Self, AccountantError> {
        let mut tag = [0u8; 8];
        getrandom::getrandom(&mut tag)?;
        let name = format!("{what}-{}.sqlite", data_encoding::HEXLOWER.encode(&tag));
        let dir = db.and_then(Path::parent).map_or_else(std::env::temp_dir, Path::to_path_buf);
        Ok(TempDb(dir.join(name)))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn file_error(what: &str, source: std::io::Error) -> AccountantError {
    AccountantError::Io { what: what.to_owned(), source }
}

impl Accountant {
    /// A consistent copy of the database as of its newest change. Taken on a connection of its
    /// own when the database is a file, so requests are not held up while it is written.
    pub fn snapshot(&self) -> Result<Snapshot, AccountantError> {
        if self.engine() == marsh_sql::Engine::Postgres {
            return Err(AccountantError::NotOnPostgres("snapshots"));
        }
        let tmp = TempDb::beside(self.path.as_deref(), "snapshot")?;
        let target = tmp.0.to_string_lossy().into_owned();
        match &self.path {
            Some(path) => {
                let reader = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                reader.busy_timeout(crate::BUSY_TIMEOUT)?;
                reader.execute("VACUUM INTO ?1", [&target])?;
            }
            None => {
                self.conn()?.sqlite("snapshots")?.execute("VACUUM INTO ?1", [&target])?;
            }
        }
        let copy = Connection::open(&tmp.0)?;
        let sequence: i64 = copy.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| r.get(0))?;
        copy.execute("DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes)", [])?;
        // The triggers that keep the node-local figures go with them: a snapshot is rows only
        // (a restore refuses any trigger, and copies rows in under the live database's own).
        let triggers: Vec<String> = copy
            .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for trigger in triggers {
            copy.execute_batch(&format!("DROP TRIGGER \"{trigger}\";"))?;
        }
        for table in schema::NODE_LOCAL {
            copy.execute_batch(&format!("DROP TABLE {table};"))?;
        }
        copy.execute_batch("VACUUM;")?;
        drop(copy);
        let bytes = std::fs::read(&tmp.0).map_err(|e| file_error("reading the snapshot", e))?;
        if bytes.len() as u64 > MAX_SNAPSHOT_BYTES {
            // It could be stored but never restored.
            return Err(AccountantError::BadSnapshot(format!(
                "the database makes a snapshot of {} bytes; at most {MAX_SNAPSHOT_BYTES} can be restored",
                bytes.len()
            )));
        }
        Ok(Snapshot { sequence: sequence.max(0) as u64, bytes })
    }

    /// Replace every account, lease, write enabler and logged change with those of `snapshot`,
    /// in one transaction; returns the snapshot's sequence. Changes up to it count as persisted.
    /// A snapshot that is not a sound database of this schema is refused and nothing changes.
    pub fn restore_snapshot(&self, snapshot: &[u8]) -> Result<u64, AccountantError> {
        if self.engine() == marsh_sql::Engine::Postgres {
            return Err(AccountantError::NotOnPostgres("restoring a snapshot"));
        }
        if snapshot.len() as u64 > MAX_SNAPSHOT_BYTES {
            return Err(AccountantError::BadSnapshot(format!(
                "{} bytes; at most {MAX_SNAPSHOT_BYTES}",
                snapshot.len()
            )));
        }
        if !snapshot.starts_with(b"SQLite format 3\0") {
            return Err(AccountantError::BadSnapshot("not a database file".into()));
        }
        let tmp = TempDb::beside(self.path.as_deref(), "restore")?;
        std::fs::write(&tmp.0, snapshot).map_err(|e| file_error("writing the snapshot to a temporary file", e))?;
        let sequence = check_and_migrate(&tmp.0)?;
        let attach = tmp.0.to_string_lossy().into_owned();
        let mut conn = self.conn()?;
        conn.sqlite("restoring a snapshot")?.execute("ATTACH DATABASE ?1 AS snap", [&attach])?;
        let copied = marsh_sql::transaction(&mut conn, |c| {
            // Rows reference each other (attributes name accounts): children go first, parents
            // come back first.
            for table in TABLES.iter().rev() {
                c.batch(&format!("DELETE FROM main.{table};"))?;
            }
            for table in TABLES {
                c.batch(&format!("INSERT INTO main.{table} SELECT * FROM snap.{table};"))?;
            }
            c.batch(
                "DELETE FROM main.sqlite_sequence; INSERT INTO main.sqlite_sequence SELECT * FROM snap.sqlite_sequence;",
            )?;
            c.execute("UPDATE meta SET value = ?1 WHERE key = 'persisted_seq'", &marsh_sql::params![sequence])?;
            // Rows SQLite accepts may still not mean anything here: every account's attributes
            // must read, or the snapshot would install accounts that refuse every request.
            let ids: Vec<i64> = c.values("SELECT id FROM accounts", &[])?;
            for id in ids {
                crate::accounts::read_attributes(c, crate::AccountId(id))?;
            }
            Ok::<_, AccountantError>(())
        });
        // Whatever happened, callers are read again.
        self.accounts_changed();
        conn.sqlite("restoring a snapshot")?.execute("DETACH DATABASE snap", [])?;
        copied.map_err(|e| AccountantError::BadSnapshot(format!("copying its rows: {e}")))?;
        Ok(sequence)
    }
}

/// Open a snapshot defensively, check it, bring it to this schema; returns its sequence.
fn check_and_migrate(path: &Path) -> Result<u64, AccountantError> {
    let bad = |what: &str| AccountantError::BadSnapshot(what.to_owned());
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| AccountantError::BadSnapshot(format!("does not open: {e}")))?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.execute_batch("PRAGMA trusted_schema = OFF;")?;
    let check: String = conn
        .query_row("PRAGMA integrity_check(1)", [], |r| r.get(0))
        .map_err(|e| AccountantError::BadSnapshot(format!("does not read: {e}")))?;
    if check != "ok" {
        return Err(AccountantError::BadSnapshot(format!("integrity check: {check}")));
    }
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > schema::VERSION {
        return Err(AccountantError::NewerSchema { found: version, supported: schema::VERSION });
    }
    if version < 2 {
        return Err(bad("older than the first schema that has snapshots"));
    }
    // Objects other than our tables, their indexes and SQLite's own: refused, not copied.
    let mut stmt = conn.prepare("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger')")?;
    let objects: Vec<(String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    drop(stmt);
    // Schema 6 added a table; a snapshot of an earlier schema has one fewer.
    let tables: Vec<&str> = TABLES.iter().copied().filter(|t| version >= 6 || *t != "write_enablers_raw").collect();
    for (kind, name) in &objects {
        if kind != "table" || !(tables.contains(&name.as_str()) || name == "sqlite_sequence") {
            return Err(AccountantError::BadSnapshot(format!("unexpected {kind} `{name}`")));
        }
    }
    if objects.len() != tables.len() + 1 {
        return Err(bad("tables are missing"));
    }
    // Migrations expect `meta`; a snapshot leaves it out.
    conn.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT INTO meta (key, value) VALUES ('persisted_seq', 0);",
    )?;
    let mut conn = SqliteConn::new(conn);
    schema::migrate(&mut conn)?;
    let conn = conn.raw();
    // Exactly this build's tables, columns, constraints and indexes, as its migrations make them.
    let mut fresh = SqliteConn::in_memory()?;
    schema::migrate(&mut fresh)?;
    if schema_of(conn)? != schema_of(fresh.raw())? {
        return Err(bad("its tables are not the accounting schema"));
    }
    let sequence: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |r| r.get(0))?;
    // The numbering goes on from the newest change, not from a number planted in the file.
    let counters: Vec<(String, i64)> = conn
        .prepare("SELECT name, seq FROM sqlite_sequence")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if counters.iter().any(|(name, seq)| name != "changes" || *seq != sequence) {
        return Err(bad("its change counter does not match its newest change"));
    }
    Ok(sequence.max(0) as u64)
}

/// One schema object as `sqlite_master` records it: type, name, table, definition.
type SchemaObject = (String, String, String, Option<String>);

/// Every object but the node-local tables and the triggers (which a snapshot leaves out), as
/// SQLite records its definition.
fn schema_of(conn: &Connection) -> Result<Vec<SchemaObject>, AccountantError> {
    let local = schema::NODE_LOCAL.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name NOT IN ({local}) AND type != 'trigger'
         ORDER BY type, name"
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Remove temporary snapshot files an interrupted snapshot or restore left beside the database
/// more than an hour ago (a younger one may belong to a process at work on it).
pub(crate) fn remove_stale_temporaries(db: &Path) {
    let Some(dir) = db.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = (name.starts_with("snapshot-") || name.starts_with("restore-")) && name.contains(".sqlite");
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if ours && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attributes;

    fn node(dir: &Path) -> Accountant {
        Accountant::open(&dir.join("accountant.sqlite")).unwrap()
    }

    #[test]
    fn a_snapshot_restores_into_an_equal_database_and_numbering_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let a = node(dir.path());
        a.create_account("alice", &Attributes { quota: Some(1000), ..Attributes::default() }, 5).unwrap();
        a.create_account("bob", &Attributes::default(), 6).unwrap();
        a.revoke("bob", 7).unwrap();
        let snap = a.snapshot().unwrap();
        assert_eq!(snap.sequence, a.last_seq().unwrap());
        assert!(snap.sequence >= 3);

        let other = tempfile::tempdir().unwrap();
        let b = node(other.path());
        b.create_account("mallory", &Attributes::default(), 1).unwrap();
        assert_eq!(b.restore_snapshot(&snap.bytes).unwrap(), snap.sequence);
        assert_eq!(b.accounts().unwrap(), a.accounts().unwrap());
        assert_eq!(b.swissnum("alice").unwrap(), a.swissnum("alice").unwrap());
        assert_eq!((b.last_seq().unwrap(), b.persisted_seq().unwrap()), (snap.sequence, snap.sequence));
        // The next change is numbered after the snapshot, as it would have been on the original.
        b.create_account("carol", &Attributes::default(), 8).unwrap();
        a.create_account("carol", &Attributes::default(), 8).unwrap();
        assert_eq!(b.last_seq().unwrap(), a.last_seq().unwrap());
        assert!(b.last_seq().unwrap() > snap.sequence);
        // An in-memory database snapshots too.
        let m = Accountant::in_memory().unwrap();
        m.create_account("dave", &Attributes::default(), 1).unwrap();
        assert_eq!(m.snapshot().unwrap().sequence, m.last_seq().unwrap());
        assert!(m.last_seq().unwrap() > 0);
    }

    /// A snapshot a persistence strategy stored under the previous release (schema 2) restores,
    /// migrated: the database the previous release made under the real client, cut the way
    /// that release cut its snapshots.
    #[test]
    fn a_schema_2_snapshot_restores_with_share_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.sqlite");
        schema::copy_previous_release_database(&old);
        let conn = Connection::open(&old).unwrap();
        conn.execute_batch("DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes); DROP TABLE meta; VACUUM;")
            .unwrap();
        drop(conn);
        let bytes = std::fs::read(&old).unwrap();
        std::fs::create_dir(dir.path().join("node")).unwrap();
        let b = node(&dir.path().join("node"));
        b.restore_snapshot(&bytes).unwrap();
        let slot: marsh_core::StorageIndex = "fl44vrmzgbnzqenlbw7kc4ser4".parse().unwrap();
        let chk: marsh_core::StorageIndex = "fhnvs4r3lsf4z7alfutfs5stvm".parse().unwrap();
        let n = marsh_core::ShareNumber(0);
        assert_eq!(b.leases(&marsh_core::ShareId::mutable(slot, n)).unwrap().len(), 1);
        assert_eq!(b.leases(&marsh_core::ShareId::immutable(chk, n)).unwrap().len(), 1);
        assert!(b.check_write_enabler(&slot, n, b"x").unwrap().is_some());
    }

    #[test]
    fn a_bad_snapshot_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = node(dir.path());
        a.create_account("alice", &Attributes::default(), 5).unwrap();
        let before = a.accounts().unwrap();
        let good = a.snapshot().unwrap().bytes;

        // The head of the second page (a b-tree page's type, free block and cell counts): damage
        // an integrity check must see, wherever the rows happen to lie in the file.
        let mut flipped = good.clone();
        let page = usize::from(u16::from_be_bytes([good[16], good[17]]));
        flipped[page..page + 64].iter_mut().for_each(|b| *b ^= 0x5a);
        let truncated = good[..good.len() / 2].to_vec();
        // Sound databases that are not what a snapshot may be: refused, nothing of them run.
        let doctored = |sql: &str| {
            let t = TempDb::beside(Some(&dir.path().join("x")), "hostile").unwrap();
            std::fs::write(&t.0, &good).unwrap();
            let c = Connection::open(&t.0).unwrap();
            c.execute_batch(sql).unwrap();
            drop(c);
            std::fs::read(&t.0).unwrap()
        };
        let trigger = doctored("CREATE TRIGGER evil AFTER INSERT ON accounts BEGIN DELETE FROM leases; END;");
        let column = doctored("ALTER TABLE leases ADD COLUMN evil TEXT;");
        let counter = doctored("UPDATE sqlite_sequence SET seq = 9000000000000000000;");
        for (what, bytes) in [
            ("garbage", b"not a database".to_vec()),
            ("flipped", flipped),
            ("truncated", truncated),
            ("trigger", trigger),
            ("column", column),
            ("counter", counter),
        ] {
            let err = a.restore_snapshot(&bytes).expect_err(what);
            assert!(
                matches!(err, AccountantError::BadSnapshot(_) | AccountantError::Db(_) | AccountantError::Io { .. }),
                "{what}: {err}"
            );
            assert_eq!(a.accounts().unwrap(), before, "{what} changed nothing");
        }
        // No temporary files are left beside the database.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n.starts_with("accountant.sqlite")), "{names:?}");
    }
}

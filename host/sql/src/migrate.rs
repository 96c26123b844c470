//! Versioned schemas: [`migrate`] takes a database from the version it holds to the newest
//! step a [`Schema`] lists, one step per transaction, under a lock, and refuses a database
//! from a newer marsh.
//!
//! Where the version lives: SQLite keeps it in the file's `user_version` (one schema per file,
//! as the accountant's file has always kept it); PostgreSQL in `marsh.schema_versions`, one row
//! per schema name (a fleet's shared schema and each node's), in the `marsh` namespace, which
//! the first migration makes: nothing is created in `public`, which PostgreSQL 15 closes to
//! roles that do not own the database. The lock: SQLite's
//! write lock, taken by `BEGIN IMMEDIATE`; PostgreSQL's transaction-scoped advisory lock keyed
//! by the schema's name, taken before the version is read. A second node starting against the
//! same database waits for the first's step, then finds the version already moved.
//! An interrupted migration resumes at the step it stopped at: each step and its new version
//! commit together.

use crate::{Conn, Engine, SqlError, params, transaction};

/// A schema: its name and its steps; step `i` takes the database from version `i` to `i + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    /// Its name (the advisory lock's key, and the `marsh.schema_versions` row; in messages).
    pub name: &'a str,
    /// The steps, oldest first.
    pub steps: &'a [&'a str],
}

impl Schema<'_> {
    /// The version its last step makes.
    pub fn newest(&self) -> u32 {
        u32::try_from(self.steps.len()).unwrap_or(u32::MAX)
    }

    /// The advisory lock's key: FNV-1a of the name, as PostgreSQL's bigint.
    fn lock_key(&self) -> i64 {
        let hash =
            self.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version found.
    pub from: u32,
    /// The version left.
    pub to: u32,
}

/// The version `conn`'s database holds of `schema` (0: none of it yet).
pub fn version(conn: &mut dyn Conn, schema: &Schema<'_>) -> Result<u32, SqlError> {
    match conn.engine() {
        Engine::Sqlite => conn.query_one("PRAGMA user_version", &[])?.get(0),
        Engine::Postgres => {
            let exists: bool =
                conn.query_one("SELECT to_regclass('marsh.schema_versions') IS NOT NULL", &[])?.get(0)?;
            if !exists {
                return Ok(0);
            }
            Ok(conn
                .query_opt("SELECT version FROM marsh.schema_versions WHERE name = ?1", &params![schema.name])?
                .map(|r| r.get(0))
                .transpose()?
                .unwrap_or(0))
        }
    }
}

/// Apply `schema`'s steps past the version `conn`'s database holds.
pub fn migrate(conn: &mut dyn Conn, schema: &Schema<'_>) -> Result<Migrated, SqlError> {
    let supported = schema.newest();
    let mut from = None;
    loop {
        let done = transaction(conn, |conn| {
            if conn.engine() == Engine::Postgres {
                conn.execute("SELECT pg_advisory_xact_lock(?1)", &params![schema.lock_key()])?;
                conn.batch(
                    "CREATE SCHEMA IF NOT EXISTS marsh;
                     CREATE TABLE IF NOT EXISTS marsh.schema_versions (name TEXT PRIMARY KEY, version BIGINT NOT NULL)",
                )?;
            }
            let found = version(conn, schema)?;
            from.get_or_insert(found);
            if found > supported {
                return Err(SqlError::NewerSchema { name: schema.name.into(), found, supported });
            }
            if found == supported {
                return Ok(true);
            }
            let to = found + 1;
            let step = schema.steps[found as usize];
            conn.batch(step).map_err(|e| SqlError::Migration { name: schema.name.into(), to, source: Box::new(e) })?;
            match conn.engine() {
                Engine::Sqlite => conn.batch(&format!("PRAGMA user_version = {to}"))?,
                Engine::Postgres => {
                    conn.execute(
                        "INSERT INTO marsh.schema_versions (name, version) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                        &params![schema.name, to],
                    )?;
                }
            }
            Ok(false)
        })?;
        if done {
            return Ok(Migrated { from: from.unwrap_or(supported), to: supported });
        }
    }
}

//! `marsh-sql`: one synchronous interface over the two engines marsh's accounting runs on.
//! SQLite (a file under the node's `cache/`, through rusqlite) is one machine's; PostgreSQL (a
//! database a fleet of nodes shares, through the `postgres` client in a bounded [`Pool`], TLS by
//! rustls) is a fleet's.
//!
//! Statements are written once, in the SQL both engines accept: numbered parameters `?1`,
//! `?2`, ... (rewritten to PostgreSQL's `$1` outside quoted text and comments),
//! `ON CONFLICT ... DO`, `RETURNING`, and `CAST(SUM(x) AS BIGINT)` where PostgreSQL would widen
//! a sum to NUMERIC. Where the engines must differ, the caller asks [`Conn::engine`].
//!
//! Values cross as [`Value`] (see `value.rs` for what each engine's columns map to). A
//! PostgreSQL parameter is bound as the type the server inferred for it, so one `Value::Int`
//! serves a BIGINT, an INTEGER (checked for range) or a BOOLEAN (`<> 0`) parameter.
//!
//! Transactions: [`transaction`] runs a closure between BEGIN and COMMIT (`BEGIN IMMEDIATE` on
//! SQLite, so writers queue behind each other's lock instead of failing at their first write),
//! rolls back when it fails, and on PostgreSQL runs it again after a serialization failure or a
//! deadlock, up to [`RETRIES`] times.
//!
//! Schemas: [`migrate`] applies numbered steps in order, each in its own transaction, under a
//! lock (SQLite's write lock; PostgreSQL's transaction-scoped advisory lock), so that two nodes
//! starting at once against one database cannot both apply a step; a database whose version is
//! past the steps this marsh knows is refused ([`SqlError::NewerSchema`]).
//!
//! API boundary: the accountant reaches a database only through [`Conn`]; nothing outside this
//! crate names rusqlite's or postgres' types for statements.

mod migrate;
mod pool;
mod postgres;
mod sqlite;
mod value;

pub use migrate::{Migrated, Schema, migrate, version};
pub use pool::{Pool, PoolStats, Pooled};
pub use postgres::{PgConn, PgSettings};
pub use sqlite::SqliteConn;
pub use value::{FromRow, FromValue, Row, Value};

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite, a file on this machine.
    Sqlite,
    /// PostgreSQL, a server.
    Postgres,
}

/// How many times [`transaction`] runs its closure again after a serialization failure.
pub const RETRIES: u32 = 5;

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL answered with an error, or the connection failed mid-statement.
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection to PostgreSQL could be made.
    #[error("cannot reach the accounting database ({target}): {}", postgres::describe(.source))]
    Unreachable {
        /// Host and port (never the password).
        target: String,
        /// Why.
        source: tokio_postgres::Error,
    },
    /// Every pooled connection stayed busy for as long as a caller waits.
    #[error("all {size} connections to the accounting database stayed busy for {waited:?}")]
    PoolTimeout {
        /// The pool's size.
        size: usize,
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// The connection settings are not usable.
    #[error("accounting database settings: {0}")]
    Settings(String),
    /// A column held a value of another type than the caller reads.
    #[error("column {index}: expected {expected}, found {found}")]
    Type {
        /// The column.
        index: usize,
        /// What the caller reads.
        expected: &'static str,
        /// What was there.
        found: &'static str,
    },
    /// A row has fewer columns than the caller reads.
    #[error("column {index} asked of a row of {columns}")]
    NoColumn {
        /// The column.
        index: usize,
        /// How many the row has.
        columns: usize,
    },
    /// A query meant to answer one row answered none.
    #[error("no row")]
    NoRow,
    /// The database was written by a newer marsh.
    #[error(
        "the {name} database has schema version {found}; this marsh reads up to {supported}: upgrade marsh on this node"
    )]
    NewerSchema {
        /// Which schema.
        name: String,
        /// Its version.
        found: u32,
        /// The newest this marsh knows.
        supported: u32,
    },
    /// A migration step failed; the database stays at the version before it.
    #[error("migrating the {name} schema to version {to}: {source}")]
    Migration {
        /// Which schema.
        name: String,
        /// The version the step would have made.
        to: u32,
        /// Why.
        source: Box<SqlError>,
    },
}

impl SqlError {
    /// Whether running the transaction again may succeed (PostgreSQL's serialization failure
    /// or deadlock; SQLite queues writers instead).
    pub fn is_retryable(&self) -> bool {
        match self {
            SqlError::Postgres(e) => e.code().is_some_and(|c| {
                *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            }),
            _ => false,
        }
    }

    /// Whether the database could not be reached (as against refusing a statement): a request
    /// that meets this is answered "unavailable", and the same request later may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            SqlError::Unreachable { .. } | SqlError::PoolTimeout { .. } => true,
            SqlError::Postgres(e) => e.is_closed() || e.as_db_error().is_none_or(|db| postgres::is_shutdown(db.code())),
            _ => false,
        }
    }
}

/// A connection to either engine.
pub trait Conn {
    /// Which engine it talks to.
    fn engine(&self) -> Engine;

    /// Run one statement; how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError>;

    /// Run one query; its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError>;

    /// Run statements separated by `;`, with no parameters (schema steps, BEGIN, COMMIT).
    fn batch(&mut self, sql: &str) -> Result<(), SqlError>;

    /// Messages sent to the database so far on this connection: each statement prepared the
    /// first time, each statement run, each batch (SQLite: statements run, as it has no wire).
    fn round_trips(&self) -> u64;

    /// Open a transaction ([`transaction`] is the usual way).
    fn begin(&mut self) -> Result<(), SqlError> {
        match self.engine() {
            Engine::Sqlite => self.batch("BEGIN IMMEDIATE"),
            Engine::Postgres => self.batch("BEGIN"),
        }
    }

    /// The one row a query answers, if any (more than one: the first).
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, SqlError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The one row a query must answer.
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, SqlError> {
        self.query_opt(sql, params)?.ok_or(SqlError::NoRow)
    }
}

/// Typed answers from any [`Conn`]: the first column or the whole row of each row, read as
/// Rust types (rows as tuples).
pub trait Query: Conn {
    /// The first column of the first row, if any.
    fn value<T: FromValue>(&mut self, sql: &str, params: &[Value]) -> Result<Option<T>, SqlError> {
        self.query_opt(sql, params)?.map(|r| r.get(0)).transpose()
    }

    /// The first column of every row.
    fn values<T: FromValue>(&mut self, sql: &str, params: &[Value]) -> Result<Vec<T>, SqlError> {
        self.query(sql, params)?.iter().map(|r| r.get(0)).collect()
    }

    /// The first row, if any.
    fn row<T: FromRow>(&mut self, sql: &str, params: &[Value]) -> Result<Option<T>, SqlError> {
        self.query_opt(sql, params)?.map(T::from_row).transpose()
    }

    /// Every row.
    fn rows<T: FromRow>(&mut self, sql: &str, params: &[Value]) -> Result<Vec<T>, SqlError> {
        self.query(sql, params)?.into_iter().map(T::from_row).collect()
    }
}

impl<C: Conn + ?Sized> Query for C {}

/// An error a transaction's closure returns: it says whether it came from a serialization
/// failure worth a retry.
pub trait Retry {
    /// Whether running the transaction again may succeed.
    fn is_retryable(&self) -> bool;
}

impl Retry for SqlError {
    fn is_retryable(&self) -> bool {
        SqlError::is_retryable(self)
    }
}

/// Run `body` in a transaction on `conn`: committed if it returns `Ok`, rolled back if not; run
/// again (up to [`RETRIES`] times) when it or the commit fails with a serialization failure.
pub fn transaction<T, E>(conn: &mut dyn Conn, mut body: impl FnMut(&mut dyn Conn) -> Result<T, E>) -> Result<T, E>
where
    E: From<SqlError> + Retry,
{
    let mut attempt = 0;
    loop {
        conn.begin()?;
        let done = body(conn).and_then(|value| conn.batch("COMMIT").map(|()| value).map_err(E::from));
        match done {
            Ok(value) => return Ok(value),
            Err(e) => {
                // A failed COMMIT has ended the transaction already; ROLLBACK then only warns.
                let _ = conn.batch("ROLLBACK");
                if e.is_retryable() && attempt < RETRIES {
                    attempt += 1;
                    continue;
                }
                return Err(e);
            }
        }
    }
}

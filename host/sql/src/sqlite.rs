//! The SQLite engine: a [`Conn`] over one rusqlite connection, statements prepared once and
//! kept (`prepare_cached`).

use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::{Conn, Engine, Row, SqlError, Value};

/// Prepared statements kept per connection.
const STATEMENTS: usize = 64;

/// A SQLite connection.
#[derive(Debug)]
pub struct SqliteConn {
    conn: rusqlite::Connection,
    round_trips: u64,
}

impl SqliteConn {
    /// Wrap an open connection (its pragmas already set by the caller).
    pub fn new(conn: rusqlite::Connection) -> Self {
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        SqliteConn { conn, round_trips: 0 }
    }

    /// A database in memory, for tests.
    pub fn in_memory() -> Result<Self, SqlError> {
        Ok(SqliteConn::new(rusqlite::Connection::open_in_memory()?))
    }

    /// The rusqlite connection, for what only SQLite has (its backup API, `data_version`).
    pub fn raw(&mut self) -> &mut rusqlite::Connection {
        &mut self.conn
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

fn read(value: ValueRef<'_>, index: usize) -> Result<Value, SqlError> {
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Int(v),
        ValueRef::Text(v) => Value::Text(String::from_utf8(v.to_vec()).map_err(|_| SqlError::Type {
            index,
            expected: "text",
            found: "non-UTF-8 text",
        })?),
        ValueRef::Blob(v) => Value::Blob(v.to_vec()),
        ValueRef::Real(_) => {
            return Err(SqlError::Type { index, expected: "an integer, text or bytes", found: "a real" });
        }
    })
}

impl Conn for SqliteConn {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        self.round_trips += 1;
        let changed = self.conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(params))?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        self.round_trips += 1;
        let mut statement = self.conn.prepare_cached(sql)?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns).map(|i| read(row.get_ref(i)?, i)).collect::<Result<Vec<_>, SqlError>>()?;
            out.push(Row { values });
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        self.round_trips += 1;
        self.conn.execute_batch(sql)?;
        Ok(())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips
    }
}

//! The PostgreSQL engine: a [`Conn`] over one `postgres` client ([`PgConn`]: statements
//! prepared once per connection and kept, `?N` parameters rewritten to `$N`), the connection
//! settings ([`PgSettings`]: a libpq connection string without its password, the password from
//! elsewhere, TLS by rustls against the operator's CA); the bounded pool is in `pool.rs`.
//!
//! TLS: with a CA given, the connection is TLS-verified against it (`sslmode=prefer`, the
//! default, falls back to plain text only where the server offers no TLS; `require` never does);
//! without one, `prefer` connects in plain text and `require` is refused as a setting. A
//! password inside the connection string is refused: it would be printed wherever the setting
//! is, so it comes from a file or the node's sealed settings instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio_postgres as pg;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::{Conn, Engine, Row, SqlError, Value};

/// Prepared statements kept per connection; past it, the cache starts over.
const STATEMENTS: usize = 256;

/// A PostgreSQL error as a sentence: the server's message and code where it sent one.
pub(crate) fn describe(e: &pg::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// Whether a server error says the server is shutting down or not yet accepting.
pub(crate) fn is_shutdown(code: &SqlState) -> bool {
    *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN || *code == SqlState::CANNOT_CONNECT_NOW
}

/// `sql` with each `?N` outside quoted text and comments written as `$N`.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::BOOL => (*v != 0).to_sql(ty, out),
            Value::Text(v) => v.as_str().to_sql(ty, out),
            Value::Blob(v) if *ty == Type::BYTEA => v.as_slice().to_sql(ty, out),
            v => Err(format!("a {v:?} cannot be bound to a parameter of type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(if *ty == Type::INT8 {
            Value::Int(i64::from_sql(ty, raw)?)
        } else if *ty == Type::INT4 {
            Value::Int(i32::from_sql(ty, raw)?.into())
        } else if *ty == Type::INT2 {
            Value::Int(i16::from_sql(ty, raw)?.into())
        } else if *ty == Type::BOOL {
            Value::Int(bool::from_sql(ty, raw)?.into())
        } else if *ty == Type::BYTEA {
            Value::Blob(raw.to_vec())
        } else if <&str as FromSql>::accepts(ty) {
            Value::Text(<&str as FromSql>::from_sql(ty, raw)?.to_owned())
        } else {
            return Err(format!("a column of type {ty} (marsh reads integers, booleans, text and bytes)").into());
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One PostgreSQL connection.
pub struct PgConn {
    client: pg::Client,
    statements: HashMap<String, pg::Statement>,
    pub(crate) round_trips: u64,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn").field("statements", &self.statements.len()).finish_non_exhaustive()
    }
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<pg::Statement, SqlError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        self.round_trips += 1;
        let statement = wait(self.client.prepare(&numbered(sql)))?;
        if self.statements.len() >= STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Whether the connection is gone (the server closed it, or the network did).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The client, for what only PostgreSQL has.
    pub fn raw(&mut self) -> &mut pg::Client {
        &mut self.client
    }
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let statement = self.statement(sql)?;
        self.round_trips += 1;
        Ok(wait(self.client.execute(&statement, &refs(params)))?)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let statement = self.statement(sql)?;
        self.round_trips += 1;
        let rows = wait(self.client.query(&statement, &refs(params)))?;
        rows.iter()
            .map(|row| {
                let values = (0..row.len()).map(|i| row.try_get::<_, Value>(i)).collect::<Result<Vec<_>, _>>()?;
                Ok(Row { values })
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        self.round_trips += 1;
        Ok(wait(self.client.batch_execute(sql))?)
    }

    fn round_trips(&self) -> u64 {
        self.round_trips
    }
}

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// A libpq connection string (`host=... port=... user=... dbname=... sslmode=...`, or a
    /// `postgresql://` URL), without a password.
    pub conninfo: String,
    /// The password, from a file or the node's sealed settings.
    pub password: Option<String>,
    /// PEM certificates of the CA the server's certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// The pool's bound.
    pub max_connections: usize,
    /// How long a caller waits for a pooled connection.
    pub wait: Duration,
    /// How long making one connection may take.
    pub connect_timeout: Duration,
    /// The schemas unqualified names are looked up in, first first (`SET search_path`).
    pub search_path: Option<String>,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("conninfo", &self.conninfo)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("max_connections", &self.max_connections)
            .field("wait", &self.wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("search_path", &self.search_path)
            .finish()
    }
}

impl PgSettings {
    /// Settings for `conninfo` with the defaults: 8 connections, a 5 s wait, a 5 s connect.
    pub fn new(conninfo: impl Into<String>) -> Self {
        PgSettings {
            conninfo: conninfo.into(),
            password: None,
            ca_pem: None,
            max_connections: 8,
            wait: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            search_path: None,
        }
    }

    fn config(&self) -> Result<pg::Config, SqlError> {
        let mut config: pg::Config =
            self.conninfo.parse().map_err(|e| SqlError::Settings(format!("the connection string: {e}")))?;
        if config.get_password().is_some() {
            return Err(SqlError::Settings(
                "the connection string holds a password: give it as the password file instead, so it is never printed"
                    .into(),
            ));
        }
        if let Some(password) = &self.password {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("marsh");
        }
        config.connect_timeout(self.connect_timeout).keepalives(true).keepalives_idle(Duration::from_secs(30));
        if let Some(path) = &self.search_path {
            if !path.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b',') {
                return Err(SqlError::Settings(format!("search path {path:?}: names of a-z, 0-9 and _ only")));
            }
            config.options(format!("-c search_path={path}"));
        }
        Ok(config)
    }

    /// Where it connects, for messages: hosts and ports, never the password.
    pub fn target(&self) -> String {
        let Ok(config) = self.conninfo.parse::<pg::Config>() else { return "unparsable settings".into() };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                pg::config::Host::Tcp(h) => h.clone(),
                pg::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let db = config.get_dbname().unwrap_or("(default database)");
        format!(
            "{} port {} database {db}",
            hosts.join(","),
            if ports.is_empty() { "5432".into() } else { ports.join(",") }
        )
    }

    fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, SqlError> {
        let pem = self.ca_pem.as_deref().unwrap_or_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| SqlError::Settings(format!("the CA file: {e}")))?;
            roots.add(cert).map_err(|e| SqlError::Settings(format!("the CA file: {e}")))?;
        }
        if roots.is_empty() {
            return Err(SqlError::Settings("the CA file holds no certificate".into()));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| SqlError::Settings(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    /// Open one connection.
    pub fn connect(&self) -> Result<PgConn, SqlError> {
        let config = self.config()?;
        let tls = match (config.get_ssl_mode(), &self.ca_pem) {
            (pg::config::SslMode::Disable, _) | (pg::config::SslMode::Prefer, None) => None,
            (_, None) => {
                return Err(SqlError::Settings(
                    "sslmode=require needs the CA the server's certificate chains to (the CA file setting)".into(),
                ));
            }
            (_, Some(_)) => Some(self.tls()?),
        };
        // The connection's socket is driven on the engine's own thread; only the client's
        // channel to it is used here, from whichever thread asks.
        let connected = wait(runtime().spawn(async move {
            match tls {
                None => {
                    let (client, connection) = config.connect(pg::NoTls).await?;
                    tokio::spawn(connection);
                    Ok::<_, pg::Error>(client)
                }
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(connection);
                    Ok::<_, pg::Error>(client)
                }
            }
        }))
        .map_err(|e| SqlError::Settings(format!("the database thread: {e}")))?;
        let client = connected.map_err(|source| SqlError::Unreachable { target: self.target(), source })?;
        Ok(PgConn { client, statements: HashMap::new(), round_trips: 0 })
    }
}

/// Wait for `future` on this thread. PostgreSQL's sockets are driven by [`runtime`]'s thread,
/// so this never needs the caller's runtime (a caller may be on one: the accountant is
/// synchronous and called from everywhere).
fn wait<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// The thread every PostgreSQL connection's socket is driven on: a single-threaded runtime of
/// its own, started at first use and living as long as the process.
fn runtime() -> &'static tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("marsh-postgres".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the PostgreSQL connections");
                let _ = tx.send(runtime.handle().clone());
                runtime.block_on(std::future::pending::<()>());
            })
            .expect("the PostgreSQL connections' thread");
        rx.recv().expect("the PostgreSQL connections' runtime")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_are_rewritten_outside_quotes_and_comments() {
        assert_eq!(numbered("SELECT ?1, ?12 FROM t WHERE a = ?2"), "SELECT $1, $12 FROM t WHERE a = $2");
        assert_eq!(numbered("SELECT '?1', \"?2\" -- ?3\n, ?4"), "SELECT '?1', \"?2\" -- ?3\n, $4");
        assert_eq!(numbered("SELECT 'it''s ?1', ?1"), "SELECT 'it''s ?1', $1");
        assert_eq!(numbered("SELECT ? , a?"), "SELECT ? , a?", "a bare ? is not a numbered parameter");
    }

    #[test]
    fn a_password_in_the_connection_string_is_refused_and_never_shown() {
        let settings = PgSettings::new("host=db.example port=5433 user=marsh password=hunter2 dbname=fleet");
        let e = settings.connect().unwrap_err();
        assert!(matches!(e, SqlError::Settings(_)), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let mut with_password = PgSettings::new("host=db.example port=5433 dbname=fleet");
        with_password.password = Some("hunter2".into());
        assert!(!format!("{with_password:?}").contains("hunter2"));
        assert_eq!(with_password.target(), "db.example port 5433 database fleet");
    }

    #[test]
    fn require_without_a_ca_is_refused_as_a_setting() {
        let e = PgSettings::new("host=127.0.0.1 port=1 sslmode=require").connect().unwrap_err();
        assert!(matches!(e, SqlError::Settings(ref m) if m.contains("CA")), "{e}");
    }
}

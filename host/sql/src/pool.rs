//! A bounded pool of PostgreSQL connections ([`Pool`]): at most `max_connections` open; a
//! caller waits at most `wait` for one and then fails with [`SqlError::PoolTimeout`] (an
//! "unavailable" error: no caller hangs on a busy or unreachable database). A connection that
//! comes back closed, or from a holder that panicked, is dropped, and the next caller opens a
//! fresh one. [`PoolStats`] is what `/metrics` shows of it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::{Conn, Engine, PgConn, PgSettings, Row, SqlError, Value};

/// A bounded pool of connections.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    settings: PgSettings,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<PgConn>,
    open: usize,
    waits: u64,
    timeouts: u64,
    dropped: u64,
    round_trips: u64,
}

/// What the pool holds and has done, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Its bound.
    pub max: usize,
    /// Connections open (idle and in use).
    pub open: usize,
    /// Connections idle.
    pub idle: usize,
    /// Callers that had to wait for a connection.
    pub waits: u64,
    /// Callers that waited in vain.
    pub timeouts: u64,
    /// Connections dropped because they came back closed.
    pub dropped: u64,
    /// Messages sent to the database by connections that came back to the pool.
    pub round_trips: u64,
}

impl Pool {
    /// A pool for `settings`; no connection is made until one is asked for.
    pub fn new(settings: PgSettings) -> Self {
        Pool { inner: Arc::new(PoolInner { settings, state: Mutex::default(), freed: Condvar::new() }) }
    }

    /// The settings it connects with.
    pub fn settings(&self) -> &PgSettings {
        &self.inner.settings
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection: an idle one, a new one while under the bound, or the first one freed
    /// within the settings' `wait`.
    pub fn get(&self) -> Result<Pooled, SqlError> {
        let max = self.inner.settings.max_connections.max(1);
        let started = Instant::now();
        let deadline = started + self.inner.settings.wait;
        let mut state = self.state();
        let mut waited = false;
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(Pooled { conn: Some(conn), pool: self.inner.clone() });
            }
            if state.open < max {
                state.open += 1;
                drop(state);
                return match self.inner.settings.connect() {
                    Ok(conn) => Ok(Pooled { conn: Some(conn), pool: self.inner.clone() }),
                    Err(e) => {
                        self.state().open -= 1;
                        self.inner.freed.notify_one();
                        Err(e)
                    }
                };
            }
            if !waited {
                waited = true;
                state.waits += 1;
            }
            let now = Instant::now();
            if now >= deadline {
                state.timeouts += 1;
                return Err(SqlError::PoolTimeout { size: max, waited: now - started });
            }
            state = self.inner.freed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// What it holds and has done.
    pub fn stats(&self) -> PoolStats {
        let state = self.state();
        PoolStats {
            max: self.inner.settings.max_connections.max(1),
            open: state.open,
            idle: state.idle.len(),
            waits: state.waits,
            timeouts: state.timeouts,
            dropped: state.dropped,
            round_trips: state.round_trips,
        }
    }
}

/// A connection lent by a [`Pool`], given back when dropped.
#[derive(Debug)]
pub struct Pooled {
    conn: Option<PgConn>,
    pool: Arc<PoolInner>,
}

impl Pooled {
    fn conn(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("a pooled connection is present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let mut state = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        state.round_trips += std::mem::take(&mut conn.round_trips);
        // A connection whose holder panicked may be inside a transaction: it is not lent again.
        if conn.is_closed() || std::thread::panicking() {
            state.open -= 1;
            state.dropped += 1;
        } else {
            state.idle.push(conn);
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

impl Conn for Pooled {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        self.conn().execute(sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        self.conn().query(sql, params)
    }

    fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        self.conn().batch(sql)
    }

    fn round_trips(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.round_trips)
    }
}

//! The fleet's register of nodes (accounting on PostgreSQL): each running node records what a
//! client needs to reach it (its `servers.yaml` entry, with `{swissnum}` where an account's
//! swissnum goes) and, every so often, its free space and that it is alive; any node lists
//! them all, with each one's share figures read from its own namespace.

use marsh_sql::{Conn, Engine, Query, params};

use crate::{Accountant, AccountantError, pg_schema};

/// What a node records of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its server id (`v0-...`).
    pub server_id: String,
    /// `node.nickname`.
    pub nickname: String,
    /// Its NURL with `{swissnum}` in place of the swissnum.
    pub nurl: String,
    /// The placeholder fURL clients require beside it, with `{swissnum}` likewise.
    pub furl: String,
    /// Its permutation seed, base32.
    pub permutation_seed: String,
}

/// A node as the fleet's register shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    /// What it recorded.
    pub record: NodeRecord,
    /// Free space it last reported, bytes.
    pub available: Option<u64>,
    /// When it last reported, seconds since the epoch.
    pub last_seen: u64,
    /// Its shares: immutable, mutable.
    pub shares: (u64, u64),
    /// Bytes of its shares.
    pub bytes: u64,
}

impl Accountant {
    /// Record this node in the fleet's register (accounting on PostgreSQL; on SQLite, nothing:
    /// a node alone has no fleet).
    pub fn register_node(&self, node: &NodeRecord, now: u64) -> Result<(), AccountantError> {
        if self.engine() != Engine::Postgres {
            return Ok(());
        }
        self.conn()?.execute(
            "INSERT INTO marsh.nodes (server_id, namespace, nickname, nurl, furl, permutation_seed, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (server_id) DO UPDATE SET nickname = excluded.nickname, nurl = excluded.nurl,
                 furl = excluded.furl, permutation_seed = excluded.permutation_seed, last_seen = excluded.last_seen",
            &params![
                &node.server_id,
                pg_schema::namespace(&node.server_id),
                &node.nickname,
                &node.nurl,
                &node.furl,
                &node.permutation_seed,
                now
            ],
        )?;
        Ok(())
    }

    /// This node is alive with `available` bytes free (PostgreSQL; nothing on SQLite).
    pub fn heartbeat(&self, server_id: &str, available: Option<u64>, now: u64) -> Result<(), AccountantError> {
        if self.engine() != Engine::Postgres {
            return Ok(());
        }
        self.conn()?.execute(
            "UPDATE marsh.nodes SET available = ?2, last_seen = ?3 WHERE server_id = ?1",
            &params![server_id, available, now],
        )?;
        Ok(())
    }

    /// Every node in the register, by nickname then server id, with its share figures (an empty
    /// list on SQLite).
    pub fn fleet(&self) -> Result<Vec<FleetNode>, AccountantError> {
        if self.engine() != Engine::Postgres {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        type Row = (String, String, String, String, String, String, Option<i64>, i64);
        let rows: Vec<Row> = conn.rows(
            "SELECT server_id, namespace, nickname, nurl, furl, permutation_seed, available, last_seen
             FROM marsh.nodes ORDER BY nickname, server_id",
            &[],
        )?;
        let mut out = Vec::new();
        for (server_id, namespace, nickname, nurl, furl, permutation_seed, available, last_seen) in rows {
            // The namespace is one this code made (`node_` and a-z, 0-9, _), never quoted input;
            // checked again before it goes into a statement.
            if !namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(AccountantError::Corrupt(format!("a node's namespace is {namespace:?}")));
            }
            let tally = |conn: &mut crate::Guard<'_>, name: &str| -> Result<u64, AccountantError> {
                let v: Option<i64> =
                    conn.value(&format!("SELECT value FROM {namespace}.tallies WHERE name = ?1"), &params![name])?;
                Ok(u64::try_from(v.unwrap_or(0)).unwrap_or(0))
            };
            let shares = (tally(&mut conn, "immutable")?, tally(&mut conn, "mutable")?);
            let bytes = tally(&mut conn, "bytes")?;
            out.push(FleetNode {
                record: NodeRecord { server_id, nickname, nurl, furl, permutation_seed },
                available: available.and_then(|a| u64::try_from(a).ok()),
                last_seen: u64::try_from(last_seen).unwrap_or(0),
                shares,
                bytes,
            });
        }
        Ok(out)
    }
}

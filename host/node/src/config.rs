//! Typed configuration in `node.sqlite`: every key is declared in [`KEYS`] with its form and
//! default; a value is validated and normalised before it is stored, and an unknown key or a
//! bad value is refused with a message naming the valid keys or the expected form.

use rusqlite::Connection;

use crate::kinds::Kind;

/// Why a config change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No such key.
    #[error("unknown config key `{key}`; valid keys: {valid}")]
    UnknownKey {
        /// The key given.
        key: String,
        /// Every valid key or key pattern.
        valid: String,
    },
    /// The value does not have the key's form.
    #[error("`{key}` = {value:?} is not valid: expected {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// The form.
        expected: String,
    },
    /// The database failed.
    #[error("node.sqlite: {0}")]
    Db(#[from] rusqlite::Error),
}

/// One declared key. A `*` stands for one name (a store's, say) in a family of keys; a
/// trailing `.*` takes any rest.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key, or `prefix.*`.
    pub name: &'static str,
    /// Its form.
    pub kind: Kind,
    /// Its default, if any.
    pub default: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
}

/// Every configuration key.
pub const KEYS: &[Key] = &[
    Key { name: "node.nickname", kind: Kind::Text, default: Some("marsh"), help: "name shown to clients" },
    Key {
        name: "node.listen",
        kind: Kind::Listeners,
        default: Some("127.0.0.1:3457"),
        help: "where the node listens: IP:PORT and unix:/PATH, comma-separated (a Unix socket needs node.public-host/-port)",
    },
    Key {
        name: "node.public-host",
        kind: Kind::Text,
        default: None,
        help: "host in the NURL (default: the listen IP)",
    },
    Key {
        name: "node.public-port",
        kind: Kind::Port,
        default: None,
        help: "port in the NURL (default: the listen port)",
    },
    Key {
        name: "web.listen",
        kind: Kind::Listen,
        default: Some("127.0.0.1:3458"),
        help: "the status page, /metrics, /statistics and /health, plain HTTP (empty: off)",
    },
    Key {
        name: "web.metrics-token-file",
        kind: Kind::AbsPath,
        default: None,
        help: "a file holding the token everything on web.listen but /health requires, as a bearer token or a browser's password (unset: none)",
    },
    Key {
        name: "introducer.furls",
        kind: Kind::Furls,
        default: Some(""),
        help: "introducers a running node announces itself to (empty: none; clients then need `marsh announce`'s servers.yaml entry)",
    },
    Key {
        name: "storage.grid-manager-certificates",
        kind: Kind::Certificates,
        default: Some(""),
        help: "grid-manager certificate files, read when set and kept here; the announcement carries them",
    },
    Key {
        name: "storage.reserved-space",
        kind: Kind::Size,
        default: Some("1G"),
        help: "space kept free on the backend's store",
    },
    Key {
        name: "storage.readonly",
        kind: Kind::Bool,
        default: Some("false"),
        help: "refuse new shares and mutable writes (reads, renewals, advisories still work); a running node follows within 5 s",
    },
    Key {
        name: "storage.keep-write-enablers",
        kind: Kind::Bool,
        default: Some("false"),
        help: "keep new mutable shares' write enablers raw too, as Tahoe does, so `marsh export-tahoe` hands them back writable (`marsh adopt` turns it on)",
    },
    Key {
        name: "storage.max-bytes",
        kind: Kind::Size,
        default: None,
        help: "most bytes of shares the node holds, on any store (unset: no cap); a running node follows within 5 s",
    },
    Key {
        name: "storage.rtw-read-bytes",
        kind: Kind::Size,
        default: Some("16Mi"),
        help: "most bytes one mutable read-test-write may read back (over every share)",
    },
    Key {
        name: "storage.max-share-size",
        kind: Kind::Size,
        default: Some("64Gi"),
        help: "largest immutable share an allocation may ask for (what one allocation reserves on S3)",
    },
    Key {
        name: "storage.open-uploads",
        kind: Kind::Count,
        default: Some("10000"),
        help: "immutable uploads open at once, in total",
    },
    Key {
        name: "storage.open-uploads-per-account",
        kind: Kind::Count,
        default: Some("1000"),
        help: "immutable uploads open at once for one account (anonymous is one account)",
    },
    Key {
        name: "storage.leases-per-share",
        kind: Kind::Count,
        default: Some("1000"),
        help: "lease records one share may carry (one per renew secret)",
    },
    Key {
        name: "storage.advisories-per-share",
        kind: Kind::Count,
        default: Some("16"),
        help: "corruption advisories kept for one share",
    },
    Key {
        name: "storage.advisories",
        kind: Kind::Count,
        default: Some("10000"),
        help: "corruption advisories kept in all",
    },
    Key {
        name: "http.max-connections",
        kind: Kind::Count,
        default: Some("1024"),
        help: "connections open at once; at it, one not yet past its TLS handshake or idle is let go for a new one, which is refused only when all are busy",
    },
    Key {
        name: "http.max-connections-per-peer",
        kind: Kind::Count,
        default: Some("64"),
        help: "connections open at once from one peer: an IPv4 address, or an IPv6 /64",
    },
    Key {
        name: "http.handshake-timeout",
        kind: Kind::Seconds,
        default: Some("10"),
        help: "seconds a TLS handshake may take",
    },
    Key {
        name: "http.header-timeout",
        kind: Kind::Seconds,
        default: Some("30"),
        help: "seconds a request's head may take to arrive",
    },
    Key {
        name: "http.min-rate",
        kind: Kind::Size,
        default: Some("4096"),
        help: "least bytes a second a body must arrive and an answer be read at (over every 10 s)",
    },
    Key {
        name: "http.body-memory",
        kind: Kind::Size,
        default: Some("256Mi"),
        help: "memory all request bodies held whole (read-test-writes, allocations, advisories) may take at once; each counts 3x its length; past it a request waits up to 30 s, then gets 503",
    },
    Key {
        name: "http.cbor-items",
        kind: Kind::Count,
        default: Some("100000"),
        help: "CBOR data items one request body may hold",
    },
    Key { name: "backend.plugin", kind: Kind::Plugin, default: Some("disk"), help: "the storage backend plugin" },
    Key {
        name: "backend.stores",
        kind: Kind::Names,
        default: Some("shares"),
        help: "stores granted to the backend plugin, comma-separated",
    },
    Key {
        name: "backend.config.*",
        kind: Kind::PluginValue,
        default: None,
        help: "config entries passed to the backend plugin",
    },
    Key { name: "store.*", kind: Kind::Store, default: None, help: "a blob store granted to plugins under this name" },
    Key {
        name: "backend.sweep-interval",
        kind: Kind::Seconds,
        default: Some("21600"),
        help: "seconds between sweeps of leftovers of interrupted uploads (0: never)",
    },
    Key {
        name: "backend.sweep-grace",
        kind: Kind::Seconds,
        default: Some("86400"),
        help: "a leftover must be this many seconds old to be swept",
    },
    Key {
        name: "persistence.plugin",
        kind: Kind::Strategy,
        default: Some("local"),
        help: "how accounts and leases survive the loss of the machine (local, records, stash)",
    },
    Key {
        name: "persistence.stores",
        kind: Kind::Names,
        default: Some("shares"),
        help: "stores granted to the persistence plugin, comma-separated",
    },
    Key {
        name: "persistence.config.*",
        kind: Kind::PluginValue,
        default: None,
        help: "config entries passed to the persistence plugin",
    },
    Key {
        name: "persistence.max-delay",
        kind: Kind::Seconds,
        default: Some("5"),
        help: "most seconds an accounting change waits before it is handed to the persistence plugin",
    },
    Key {
        name: "accounting.engine",
        kind: Kind::Engine,
        default: Some("sqlite"),
        help: "where accounts, leases and usage live: `sqlite` (cache/accountant.sqlite, this node's alone) or `postgres` (a database a fleet of nodes shares: accounting.postgres)",
    },
    Key {
        name: "accounting.postgres",
        kind: Kind::Conninfo,
        default: None,
        help: "with accounting.engine postgres: the connection string (host=... port=... user=... dbname=... sslmode=...), without the password",
    },
    Key {
        name: "accounting.postgres-password-file",
        kind: Kind::AbsPath,
        default: None,
        help: "a file holding the database password, read at start (the password is never kept in the settings)",
    },
    Key {
        name: "accounting.postgres-ca-file",
        kind: Kind::AbsPath,
        default: None,
        help: "CA certificates (PEM) the database server's certificate must chain to; with it, connections use TLS",
    },
    Key {
        name: "accounting.postgres-connections",
        kind: Kind::Count,
        default: Some("8"),
        help: "most connections the node holds to the database; a request waits at most 5 s for one",
    },
    Key {
        name: "recovery.auto",
        kind: Kind::Bool,
        default: Some("false"),
        help: "recover at start-up without waiting for `marsh recover`",
    },
    Key {
        name: "expire.enabled",
        kind: Kind::Bool,
        default: Some("false"),
        help: "delete shares whose leases have all expired",
    },
    Key {
        name: "expire.mode",
        kind: Kind::ExpireMode,
        default: Some("age"),
        help: "age: leases expire by age; cutoff-date: leases renewed before expire.cutoff-date",
    },
    Key {
        name: "expire.override-lease-duration",
        kind: Kind::Seconds,
        default: None,
        help: "age mode: a lease expires this many seconds after renewal (default: its own 31 days)",
    },
    Key {
        name: "expire.cutoff-date",
        kind: Kind::Date,
        default: None,
        help: "cutoff-date mode: leases renewed before this UTC date have expired",
    },
    Key { name: "expire.immutable", kind: Kind::Bool, default: Some("true"), help: "collect immutable shares" },
    Key { name: "expire.mutable", kind: Kind::Bool, default: Some("true"), help: "collect mutable shares" },
    Key {
        name: "expire.interval",
        kind: Kind::Count,
        default: Some("86400"),
        help: "seconds between collection passes of a running node",
    },
    Key { name: "s3.*.endpoint", kind: Kind::Url, default: None, help: "S3 service URL (default: AWS for the region)" },
    Key { name: "s3.*.region", kind: Kind::Text, default: Some("us-east-1"), help: "S3 region, for signing" },
    Key { name: "s3.*.bucket", kind: Kind::Text, default: None, help: "S3 bucket (required)" },
    Key { name: "s3.*.prefix", kind: Kind::KeyPrefix, default: Some(""), help: "prefix of every key in the bucket" },
    Key { name: "s3.*.path-style", kind: Kind::Bool, default: Some("false"), help: "path-style addressing" },
    Key {
        name: "s3.*.access-key-id",
        kind: Kind::Text,
        default: None,
        help: "access key (default: $AWS_ACCESS_KEY_ID)",
    },
    Key {
        name: "s3.*.secret-access-key",
        kind: Kind::Secret,
        default: None,
        help: "secret key (default: $AWS_SECRET_ACCESS_KEY)",
    },
    Key { name: "s3.*.timeout", kind: Kind::Seconds, default: Some("30"), help: "deadline of one try of one request" },
    Key { name: "s3.*.max-concurrency", kind: Kind::Count, default: Some("32"), help: "S3 requests in flight at once" },
    Key {
        name: "s3.*.max-attempts",
        kind: Kind::Count,
        default: Some("5"),
        help: "tries per request on retryable errors",
    },
    Key { name: "s3.*.ca-file", kind: Kind::AbsPath, default: None, help: "extra CA certificates (PEM) to trust" },
    Key {
        name: "s3.*.part-size",
        kind: Kind::Size,
        default: Some("8Mi"),
        help: "multipart upload part size (5Mi-5Gi)",
    },
    Key { name: "limits.memory", kind: Kind::Size, default: Some("256Mi"), help: "memory cap per plugin instance" },
    Key { name: "limits.call-deadline", kind: Kind::Seconds, default: Some("30"), help: "deadline of one plugin call" },
    Key {
        name: "limits.max-call-bytes",
        kind: Kind::Size,
        default: Some("4Mi"),
        help: "most bytes moved in one plugin call",
    },
    Key {
        name: "limits.instances",
        kind: Kind::Count,
        default: Some("8"),
        help: "plugin instances that may run at once",
    },
];

/// Whether `key` is one of the keys `pattern` declares.
fn matches(pattern: &str, key: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix(".*") {
        let rest = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'));
        return rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace));
    }
    match pattern.split_once('*') {
        Some((head, tail)) => key
            .strip_prefix(head)
            .and_then(|r| r.strip_suffix(tail))
            .is_some_and(|name| !name.is_empty() && !name.contains(['.', ' ', '\t', ','])),
        None => pattern == key,
    }
}

/// The default of a declared key or key pattern (`s3.*.region`), if it has one.
pub fn default_of(pattern: &str) -> Option<&'static str> {
    KEYS.iter().find(|k| k.name == pattern).and_then(|k| k.default)
}

fn find(key: &str) -> Result<&'static Key, ConfigError> {
    KEYS.iter().find(|k| matches(k.name, key)).ok_or_else(|| ConfigError::UnknownKey {
        key: key.to_owned(),
        valid: KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
    })
}

/// Check and normalise a value for `key` ([`Kind::check`]).
fn validate(key: &Key, name: &str, value: &str) -> Result<String, ConfigError> {
    key.kind.check(value).map_err(|expected| ConfigError::BadValue {
        key: name.to_owned(),
        value: value.to_owned(),
        expected,
    })
}

/// The kind a key (or a key of a declared family) takes.
pub fn kind_of(key: &str) -> Option<Kind> {
    find(key).ok().map(|k| k.kind)
}

/// A key and its effective value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The effective value (`None`: unset, no default).
    pub value: Option<String>,
    /// Whether the value is the default.
    pub is_default: bool,
    /// Help text.
    pub help: &'static str,
}

/// Every declared key at its default: the settings of a node nobody has configured (patterned
/// keys such as `store.*` left out).
pub fn defaults() -> Vec<Setting> {
    KEYS.iter()
        .filter(|k| !k.name.contains('*'))
        .map(|k| Setting {
            key: k.name.to_owned(),
            value: k.default.map(str::to_owned),
            is_default: true,
            help: k.help,
        })
        .collect()
}

pub(crate) fn set(conn: &Connection, key: &str, value: &str) -> Result<String, ConfigError> {
    let declared = find(key)?;
    let value = validate(declared, key, value)?;
    // Parsed, but not what a node should be told to do: port 0 picks another port at every
    // start, and the NURL clients hold names one.
    let port_zero = crate::kinds::listeners(&value)
        .is_some_and(|l| l.iter().any(|on| matches!(on, crate::ListenOn::Tcp(a) if a.port() == 0)));
    if key == "node.listen" && port_zero {
        return Err(ConfigError::BadValue {
            key: key.to_owned(),
            value,
            expected: "a port other than 0 (port 0 picks another port at every start; the NURL clients hold names one)"
                .to_owned(),
        });
    }
    conn.execute("INSERT OR REPLACE INTO config (key, value) VALUES (?1, ?2)", [key, value.as_str()])?;
    Ok(value)
}

pub(crate) fn unset(conn: &Connection, key: &str) -> Result<(), ConfigError> {
    find(key)?;
    conn.execute("DELETE FROM config WHERE key = ?1", [key])?;
    Ok(())
}

fn stored(conn: &Connection, key: &str) -> Result<Option<String>, ConfigError> {
    use rusqlite::OptionalExtension;
    Ok(conn.query_row("SELECT value FROM config WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

pub(crate) fn get(conn: &Connection, key: &str) -> Result<String, ConfigError> {
    let declared = find(key)?;
    match stored(conn, key)? {
        Some(v) => Ok(v),
        None => declared.default.map(str::to_owned).ok_or_else(|| ConfigError::BadValue {
            key: key.to_owned(),
            value: String::new(),
            expected: format!("a value (no default): set it with `marsh config set {key} VALUE`"),
        }),
    }
}

pub(crate) fn with_prefix(conn: &Connection, prefix: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut stmt = conn.prepare("SELECT key, value FROM config WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")?;
    let rows = stmt.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every key's effective value, secrets shown as `(set)`.
pub(crate) fn list(conn: &Connection) -> Result<Vec<Setting>, ConfigError> {
    listed(conn, true)
}

/// Every key's effective value, secrets included (for the node itself, never printed).
pub(crate) fn list_unmasked(conn: &Connection) -> Result<Vec<Setting>, ConfigError> {
    listed(conn, false)
}

fn listed(conn: &Connection, mask: bool) -> Result<Vec<Setting>, ConfigError> {
    let mut out = Vec::new();
    for key in KEYS {
        if let Some((head, _)) = key.name.split_once('*') {
            for (k, v) in with_prefix(conn, head)? {
                if matches(key.name, &k) {
                    let v = if mask && key.kind == Kind::Secret { "(set)".to_owned() } else { v };
                    out.push(Setting { key: k, value: Some(v), is_default: false, help: key.help });
                }
            }
        } else {
            let value = stored(conn, key.name)?;
            let is_default = value.is_none();
            out.push(Setting {
                key: key.name.to_owned(),
                value: value.or(key.default.map(str::to_owned)),
                is_default,
                help: key.help,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);").unwrap();
        c
    }

    #[test]
    fn keys_are_typed_and_unknown_ones_refused() {
        let c = db();
        assert_eq!(set(&c, "storage.reserved-space", "1G").unwrap(), "1G");
        assert_eq!(get(&c, "storage.reserved-space").unwrap(), "1G");
        let e = set(&c, "storage.reserved-space", "lots").unwrap_err();
        assert!(e.to_string().contains("a size such as"), "{e}");
        let e = set(&c, "storage.reserved", "1G").unwrap_err();
        assert!(e.to_string().contains("valid keys: node.nickname"), "{e}");
        assert!(set(&c, "store.shares", "dir:relative/path").is_err());
        set(&c, "store.shares", "dir:/srv/shares").unwrap();
        set(&c, "backend.config.store", "shares").unwrap();
        assert_eq!(with_prefix(&c, "backend.config.").unwrap(), vec![("backend.config.store".into(), "shares".into())]);
        assert_eq!(get(&c, "limits.instances").unwrap(), "8", "defaults apply");
        set(&c, "s3.shares.bucket", "b").unwrap();
        set(&c, "s3.shares.secret-access-key", "hush").unwrap();
        assert_eq!(get(&c, "s3.shares.region").unwrap(), "us-east-1", "family defaults apply");
        assert!(set(&c, "s3.shares.path-style", "maybe").unwrap_err().to_string().contains("true or false"));
        assert!(set(&c, "s3.shares.prefix", "no-slash").is_err());
        assert!(set(&c, "s3.shares.colour", "red").unwrap_err().to_string().contains("valid keys"));
        assert!(set(&c, "s3.a.b.bucket", "x").is_err(), "a store name has no dots");
        set(&c, "store.shares", "s3").unwrap();
        unset(&c, "storage.reserved-space").unwrap();
        let listed = list(&c).unwrap();
        let reserved = listed.iter().find(|s| s.key == "storage.reserved-space").unwrap();
        assert!(reserved.is_default && reserved.value.as_deref() == Some("1G"));
        assert!(listed.iter().any(|s| s.key == "store.shares" && !s.is_default));
        let secret = listed.iter().find(|s| s.key == "s3.shares.secret-access-key").unwrap();
        assert_eq!(secret.value.as_deref(), Some("(set)"), "list never prints a secret");
        assert!(listed.iter().any(|s| s.key == "s3.shares.bucket" && s.value.as_deref() == Some("b")));
    }
}

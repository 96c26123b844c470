//! [`NodeConfig`]: the whole configuration of a node, read once from `node.sqlite` and typed,
//! so no command reads a key by name or parses a value itself. Each value is parsed by its
//! kind's one parser (`kinds.rs`), the one `marsh config set` checked it with; a value that does
//! not parse is a [`ConfigError::BadValue`] naming its key and saying what its kind expects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use marsh_foolscap::Furl;

use crate::config::{self, ConfigError};
use crate::kinds::{self, ListenOn, PluginChoice, StoreKind};

/// A node's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `node.nickname`.
    pub nickname: String,
    /// `node.listen`: one or more listeners.
    pub listen: Vec<ListenOn>,
    /// Host and port clients connect to (`node.public-host`/`-port`, defaulting to the listen
    /// address).
    pub public_host: String,
    /// See `public_host`.
    pub public_port: u16,
    /// `storage.reserved-space`: bytes kept free on the backend's store.
    pub reserved_space: u64,
    /// `storage.readonly` and `storage.max-bytes`: what a running node re-reads.
    pub capacity: CapacitySettings,
    /// `storage.keep-write-enablers`: new mutable shares' enablers kept raw too.
    pub keep_write_enablers: bool,
    /// `web.listen` (`None`: off).
    pub web_listen: Option<SocketAddr>,
    /// `web.metrics-token-file`.
    pub metrics_token_file: Option<PathBuf>,
    /// `backend.*`.
    pub backend: BackendSettings,
    /// `persistence.*` and `recovery.auto`.
    pub persistence: PersistenceSettings,
    /// `accounting.*`.
    pub accounting: AccountingSettings,
    /// `expire.*`.
    pub expire: ExpireSettings,
    /// `limits.*`: applied to every plugin the node runs.
    pub limits: Limits,
    /// `http.*` and the request limits of `storage.*`.
    pub requests: RequestLimits,
    /// `store.NAME` (and `s3.NAME.*` for S3 stores), by name.
    pub stores: BTreeMap<String, StoreSpec>,
    /// `introducer.furls`.
    pub introducers: Vec<Furl>,
    /// `storage.grid-manager-certificates`: the certificates, as the announcement carries them.
    pub grid_manager_certificates: Vec<serde_json::Value>,
}

/// The backend plugin and its sweep schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// `backend.plugin`.
    pub plugin: PluginChoice,
    /// `backend.stores`, in order (the first also holds the node's runtime state).
    pub stores: Vec<String>,
    /// `backend.config.*`, keys without the prefix.
    pub config: Vec<(String, String)>,
    /// `backend.sweep-interval`; `None` when 0 (never).
    pub sweep_interval: Option<Duration>,
    /// `backend.sweep-grace`, in seconds.
    pub sweep_grace: u64,
}

/// The persistence strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceSettings {
    /// `persistence.plugin`.
    pub plugin: PluginChoice,
    /// `persistence.stores`.
    pub stores: Vec<String>,
    /// `persistence.config.*`, keys without the prefix.
    pub config: Vec<(String, String)>,
    /// `persistence.max-delay` (at least one second).
    pub max_delay: Duration,
    /// `recovery.auto`.
    pub recovery_auto: bool,
}

/// Where accounting lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountingSettings {
    /// SQLite under `cache/` (`accounting.engine sqlite`).
    Sqlite,
    /// PostgreSQL (`accounting.engine postgres`).
    Postgres {
        /// `accounting.postgres`: the connection string, without a password.
        conninfo: String,
        /// `accounting.postgres-password-file`.
        password_file: Option<PathBuf>,
        /// `accounting.postgres-ca-file`.
        ca_file: Option<PathBuf>,
        /// `accounting.postgres-connections`.
        connections: u32,
    },
}

/// How leases expire (`expire.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireMode {
    /// By age, after `expire.override-lease-duration` seconds if set.
    Age {
        /// The override, in seconds.
        override_seconds: Option<u64>,
    },
    /// Leases renewed before `expire.cutoff-date` (seconds since the epoch) have expired.
    CutoffDate(u64),
}

/// Lease expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpireSettings {
    /// `expire.enabled`: whether a running node collects, and whether `marsh gc` may delete.
    pub enabled: bool,
    /// `expire.mode` with its parameter.
    pub mode: ExpireMode,
    /// `expire.immutable`.
    pub immutable: bool,
    /// `expire.mutable`.
    pub mutable: bool,
    /// `expire.interval`.
    pub interval: Duration,
}

/// `limits.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `limits.memory`: bytes of memory per plugin instance.
    pub memory_bytes: u64,
    /// `limits.call-deadline`.
    pub call_deadline: Duration,
    /// `limits.max-call-bytes`.
    pub max_call_bytes: u64,
    /// `limits.instances`.
    pub instances: u32,
}

/// The settings a running node follows without a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapacitySettings {
    /// `storage.readonly`: no new shares, no mutable writes.
    pub readonly: bool,
    /// `storage.max-bytes`: the most bytes of shares the node holds.
    pub max_bytes: Option<u64>,
}

/// What a request, connection, peer or account may take (`http.*`, `storage.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// `http.max-connections`.
    pub max_connections: u32,
    /// `http.max-connections-per-peer`.
    pub max_connections_per_peer: u32,
    /// `http.handshake-timeout`.
    pub handshake_timeout: Duration,
    /// `http.header-timeout`.
    pub header_timeout: Duration,
    /// `http.min-rate`, bytes a second.
    pub min_rate: u64,
    /// `http.cbor-items`.
    pub cbor_items: u32,
    /// `http.body-memory`, bytes.
    pub body_memory: u64,
    /// `storage.rtw-read-bytes`.
    pub rtw_read_bytes: u64,
    /// `storage.max-share-size`.
    pub max_share_size: u64,
    /// `storage.open-uploads`.
    pub open_uploads: u32,
    /// `storage.open-uploads-per-account`.
    pub open_uploads_per_account: u32,
    /// `storage.leases-per-share`.
    pub leases_per_share: u32,
    /// `storage.advisories-per-share`.
    pub advisories_per_share: u32,
    /// `storage.advisories`.
    pub advisories: u32,
}

/// What `store.NAME` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `dir:PATH`.
    Dir(PathBuf),
    /// `memory`: lives as long as the process.
    Memory,
    /// `s3`: its `s3.NAME.*` fields (prefix removed), defaults filled in, sizes in bytes.
    S3(Vec<(String, String)>),
}

/// The effective values of every key, read in one go.
struct Values(BTreeMap<String, String>);

impl Values {
    fn raw(&self, key: &str) -> Result<&str, ConfigError> {
        self.0.get(key).map(String::as_str).ok_or_else(|| ConfigError::BadValue {
            key: key.to_owned(),
            value: String::new(),
            expected: format!("a value (no default): set it with `marsh config set {key} VALUE`"),
        })
    }

    fn optional(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `key` through `parse`, its kind's parser; what the kind expects if it
    /// does not parse.
    fn parse<T>(&self, key: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, ConfigError> {
        let value = self.raw(key)?;
        parse(value).ok_or_else(|| bad_kind(key, value))
    }

    fn size(&self, key: &str) -> Result<u64, ConfigError> {
        self.parse(key, kinds::parse_size)
    }

    fn seconds(&self, key: &str) -> Result<u64, ConfigError> {
        self.parse(key, kinds::parse_seconds)
    }

    fn count(&self, key: &str) -> Result<u32, ConfigError> {
        self.parse(key, kinds::parse_count)
    }

    fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        self.parse(key, kinds::parse_bool)
    }

    fn names(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        Ok(kinds::parse_names(self.raw(key)?))
    }

    /// Keys under `prefix`, without it.
    fn under(&self, prefix: &str) -> Vec<(String, String)> {
        self.0.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_owned(), v.clone()))).collect()
    }
}

fn bad(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::BadValue { key: key.to_owned(), value: value.to_owned(), expected: expected.to_owned() }
}

/// `value` does not parse as `key`'s kind: what the kind expects, as `marsh config set` says it.
fn bad_kind(key: &str, value: &str) -> ConfigError {
    let expected = config::kind_of(key).map_or("a valid value", |k| k.expected());
    bad(key, value, expected)
}

/// S3 fields that have defaults, filled in when unset.
const S3_DEFAULTED: [&str; 6] = ["region", "timeout", "max-concurrency", "max-attempts", "part-size", "path-style"];

fn store(values: &Values, name: &str, spec: &str) -> Result<StoreSpec, ConfigError> {
    let key = format!("store.{name}");
    match kinds::store_kind(spec).ok_or_else(|| bad_kind(&key, spec))? {
        StoreKind::Memory => Ok(StoreSpec::Memory),
        StoreKind::Dir(path) => Ok(StoreSpec::Dir(path)),
        StoreKind::S3 => {
            let prefix = format!("s3.{name}.");
            let mut fields = values.under(&prefix);
            for field in S3_DEFAULTED {
                if !fields.iter().any(|(f, _)| f == field) {
                    let default = config::default_of(&format!("s3.*.{field}")).unwrap_or_default();
                    fields.push((field.to_owned(), default.to_owned()));
                }
            }
            for (field, value) in &mut fields {
                if field == "part-size" {
                    let key = format!("{prefix}{field}");
                    *value = kinds::parse_size(value).ok_or_else(|| bad_kind(&key, value))?.to_string();
                }
            }
            Ok(StoreSpec::S3(fields))
        }
    }
}

impl NodeConfig {
    /// Parse the effective values (defaults included) of every key.
    pub fn from_settings(settings: &[config::Setting]) -> Result<NodeConfig, ConfigError> {
        let values = Values(
            settings.iter().filter_map(|s| s.value.clone().map(|v| (s.key.clone(), v))).collect::<BTreeMap<_, _>>(),
        );
        let listen = values.parse("node.listen", kinds::listeners)?;
        // Clients are told the first TCP address unless told otherwise; behind a Unix socket
        // only the operator knows where clients reach the node.
        let tcp = listen.iter().find_map(|l| match l {
            ListenOn::Tcp(a) => Some(*a),
            ListenOn::Unix(_) => None,
        });
        let unknown = |key: &str| ConfigError::BadValue {
            key: key.to_owned(),
            value: String::new(),
            expected: format!("a value: node.listen has no TCP address to take it from (`marsh config set {key} ...`)"),
        };
        let public_host = match (values.optional("node.public-host"), tcp) {
            (Some(h), _) => h.to_owned(),
            (None, Some(a)) => a.ip().to_string(),
            (None, None) => return Err(unknown("node.public-host")),
        };
        let public_port = match (values.optional("node.public-port"), tcp) {
            (Some(_), _) => values.parse("node.public-port", kinds::parse_port)?,
            (None, Some(a)) => a.port(),
            (None, None) => return Err(unknown("node.public-port")),
        };
        let mode = match values.raw("expire.mode")? {
            "cutoff-date" => ExpireMode::CutoffDate(values.parse("expire.cutoff-date", kinds::parse_date)?),
            "age" => ExpireMode::Age {
                override_seconds: match values.optional("expire.override-lease-duration") {
                    Some(_) => Some(values.seconds("expire.override-lease-duration")?),
                    None => None,
                },
            },
            other => return Err(bad_kind("expire.mode", other)),
        };
        let sweep_interval = values.seconds("backend.sweep-interval")?;
        let mut stores = BTreeMap::new();
        for (name, spec) in values.under("store.") {
            let parsed = store(&values, &name, &spec)?;
            stores.insert(name, parsed);
        }
        let introducers = values.raw("introducer.furls")?;
        let introducers = kinds::furls(introducers).map_err(|why| bad("introducer.furls", introducers, &why))?;
        let stored = values.raw("storage.grid-manager-certificates")?;
        let grid_manager_certificates =
            kinds::certificates(stored).map_err(|why| bad("storage.grid-manager-certificates", stored, &why))?;
        Ok(NodeConfig {
            introducers,
            grid_manager_certificates,
            nickname: values.raw("node.nickname")?.to_owned(),
            listen,
            public_host,
            public_port,
            reserved_space: values.size("storage.reserved-space")?,
            web_listen: values.parse("web.listen", kinds::parse_listen)?,
            metrics_token_file: values.optional("web.metrics-token-file").map(PathBuf::from),
            keep_write_enablers: values.bool("storage.keep-write-enablers")?,
            capacity: CapacitySettings {
                readonly: values.bool("storage.readonly")?,
                max_bytes: match values.optional("storage.max-bytes") {
                    Some(_) => Some(values.size("storage.max-bytes")?),
                    None => None,
                },
            },
            backend: BackendSettings {
                plugin: values.parse("backend.plugin", kinds::backend_plugin)?,
                stores: values.names("backend.stores")?,
                config: values.under("backend.config."),
                sweep_interval: (sweep_interval > 0).then(|| Duration::from_secs(sweep_interval)),
                sweep_grace: values.seconds("backend.sweep-grace")?,
            },
            accounting: match values.parse("accounting.engine", kinds::parse_engine)? {
                kinds::AccountingEngine::Sqlite => AccountingSettings::Sqlite,
                kinds::AccountingEngine::Postgres => AccountingSettings::Postgres {
                    conninfo: values.raw("accounting.postgres")?.to_owned(),
                    password_file: values.optional("accounting.postgres-password-file").map(PathBuf::from),
                    ca_file: values.optional("accounting.postgres-ca-file").map(PathBuf::from),
                    connections: values.count("accounting.postgres-connections")?,
                },
            },
            persistence: PersistenceSettings {
                plugin: values.parse("persistence.plugin", kinds::strategy_plugin)?,
                stores: values.names("persistence.stores")?,
                config: values.under("persistence.config."),
                max_delay: Duration::from_secs(values.seconds("persistence.max-delay")?.max(1)),
                recovery_auto: values.bool("recovery.auto")?,
            },
            expire: ExpireSettings {
                enabled: values.bool("expire.enabled")?,
                mode,
                immutable: values.bool("expire.immutable")?,
                mutable: values.bool("expire.mutable")?,
                interval: Duration::from_secs(values.seconds("expire.interval")?.max(1)),
            },
            limits: Limits {
                memory_bytes: values.size("limits.memory")?,
                call_deadline: Duration::from_secs(values.seconds("limits.call-deadline")?),
                max_call_bytes: values.size("limits.max-call-bytes")?,
                instances: values.count("limits.instances")?,
            },
            requests: RequestLimits {
                max_connections: values.count("http.max-connections")?,
                max_connections_per_peer: values.count("http.max-connections-per-peer")?,
                handshake_timeout: Duration::from_secs(values.seconds("http.handshake-timeout")?),
                header_timeout: Duration::from_secs(values.seconds("http.header-timeout")?),
                min_rate: values.size("http.min-rate")?,
                cbor_items: values.count("http.cbor-items")?,
                body_memory: values.size("http.body-memory")?,
                rtw_read_bytes: values.size("storage.rtw-read-bytes")?,
                max_share_size: values.size("storage.max-share-size")?,
                open_uploads: values.count("storage.open-uploads")?,
                open_uploads_per_account: values.count("storage.open-uploads-per-account")?,
                leases_per_share: values.count("storage.leases-per-share")?,
                advisories_per_share: values.count("storage.advisories-per-share")?,
                advisories: values.count("storage.advisories")?,
            },
            stores,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Setting;
    use crate::kinds::{Kind, listeners};

    fn setting(key: &str, value: &str) -> Setting {
        Setting { key: key.to_owned(), value: Some(value.to_owned()), is_default: false, help: "" }
    }

    #[test]
    fn defaults_read_as_typed_values() {
        let mut settings = config::defaults();
        settings.push(setting("store.shares", "dir:/srv/shares"));
        let c = NodeConfig::from_settings(&settings).unwrap();
        assert_eq!(c.listen, [ListenOn::Tcp("127.0.0.1:3457".parse().unwrap())]);
        assert_eq!((c.public_host.as_str(), c.public_port), ("127.0.0.1", 3457));
        assert_eq!(c.reserved_space, 1_000_000_000);
        assert_eq!(c.capacity, CapacitySettings { readonly: false, max_bytes: None });
        assert_eq!(c.web_listen, Some("127.0.0.1:3458".parse().unwrap()));
        assert_eq!(c.backend.plugin, PluginChoice::FirstParty(marsh_artifacts::BACKEND_DISK));
        assert_eq!(c.persistence.plugin, PluginChoice::FirstParty(marsh_artifacts::PERSISTENCE_LOCAL));
        assert_eq!(c.backend.stores, ["shares"]);
        assert_eq!(c.backend.sweep_interval, Some(Duration::from_secs(21_600)));
        assert_eq!(
            c.limits,
            Limits {
                memory_bytes: 256 << 20,
                call_deadline: Duration::from_secs(30),
                max_call_bytes: 4 << 20,
                instances: 8
            }
        );
        assert_eq!(c.expire.mode, ExpireMode::Age { override_seconds: None });
        assert_eq!(c.stores["shares"], StoreSpec::Dir(PathBuf::from("/srv/shares")));
    }

    #[test]
    fn families_prefixes_and_s3_defaults() {
        let mut settings = config::defaults();
        settings.extend([
            setting("store.shares", "s3"),
            setting("s3.shares.bucket", "b"),
            setting("s3.shares.part-size", "16Mi"),
            setting("backend.config.store", "shares"),
            setting("backend.sweep-interval", "0"),
            setting("expire.mode", "cutoff-date"),
            setting("expire.cutoff-date", "1970-01-02"),
            setting("storage.readonly", "true"),
            setting("storage.max-bytes", "2Gi"),
        ]);
        let c = NodeConfig::from_settings(&settings).unwrap();
        assert_eq!(c.capacity, CapacitySettings { readonly: true, max_bytes: Some(2 << 30) });
        let StoreSpec::S3(fields) = &c.stores["shares"] else { panic!("{:?}", c.stores) };
        let field = |f: &str| fields.iter().find(|(k, _)| k == f).map(|(_, v)| v.as_str());
        assert_eq!(field("bucket"), Some("b"));
        assert_eq!(field("part-size"), Some("16777216"));
        assert_eq!(field("region"), Some("us-east-1"), "defaults filled in");
        assert_eq!(c.backend.config, [("store".to_owned(), "shares".to_owned())]);
        assert_eq!(c.backend.sweep_interval, None, "0 is never");
        assert_eq!(c.expire.mode, ExpireMode::CutoffDate(86_400));
    }

    #[test]
    fn several_listeners_and_unix_sockets_need_a_public_address() {
        assert_eq!(
            listeners("0.0.0.0:3457, unix:/run/marsh/gbs.sock"),
            Some(vec![ListenOn::Tcp("0.0.0.0:3457".parse().unwrap()), ListenOn::Unix("/run/marsh/gbs.sock".into())])
        );
        for bad in ["", "unix:relative", "unix:", "3457", "0.0.0.0:3457,", "localhost:3457"] {
            assert_eq!(listeners(bad), None, "{bad:?}");
        }
        let mut settings = config::defaults();
        settings.push(setting("node.listen", "unix:/run/marsh/gbs.sock"));
        let e = NodeConfig::from_settings(&settings).unwrap_err().to_string();
        assert!(e.contains("node.public-host"), "{e}");
        settings.push(setting("node.public-host", "xyz.onion"));
        let e = NodeConfig::from_settings(&settings).unwrap_err().to_string();
        assert!(e.contains("node.public-port"), "{e}");
        settings.push(setting("node.public-port", "80"));
        let c = NodeConfig::from_settings(&settings).unwrap();
        assert_eq!((c.public_host.as_str(), c.public_port), ("xyz.onion", 80));
    }

    #[test]
    fn a_value_that_does_not_parse_names_its_key() {
        let mut settings = config::defaults();
        settings.retain(|s| s.key != "limits.memory");
        settings.push(setting("limits.memory", "lots"));
        let e = NodeConfig::from_settings(&settings).unwrap_err();
        assert!(matches!(&e, ConfigError::BadValue { key, .. } if key == "limits.memory"), "{e}");
        // In the words `marsh config set` would have used: one parser, one description.
        assert!(matches!(&e, ConfigError::BadValue { expected, .. } if expected == Kind::Size.expected()), "{e}");
        let mut settings = config::defaults();
        settings.retain(|s| s.key != "expire.mode");
        settings.push(setting("expire.mode", "cutoff-date"));
        let e = NodeConfig::from_settings(&settings).unwrap_err();
        assert!(e.to_string().contains("expire.cutoff-date"), "a mode that needs a date says which key: {e}");
    }
}

//! [`NodeConfig`]: the whole configuration of a node, read once from `node.sqlite` and typed,
//! so no command reads a key by name or parses a value itself. A value that does not parse is a
//! [`ConfigError::BadValue`] naming its key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use marsh_artifacts::Plugin;
use marsh_foolscap::Furl;

use crate::config::{self, ConfigError, parse_date, parse_size};

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
    /// `web.listen` (`None`: off).
    pub web_listen: Option<SocketAddr>,
    /// `web.metrics-token-file`.
    pub metrics_token_file: Option<PathBuf>,
    /// `backend.*`.
    pub backend: BackendSettings,
    /// `persistence.*` and `recovery.auto`.
    pub persistence: PersistenceSettings,
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

/// Which plugin a `backend.plugin` or `persistence.plugin` setting names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginChoice {
    /// A plugin built from this workspace (`disk`, `records`, ...).
    FirstParty(Plugin),
    /// A first-party backend linked natively (`native:disk`; benchmark builds only).
    Native(String),
    /// A `.wasm` file.
    File(PathBuf),
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

    fn parse<T>(&self, key: &str, expected: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, ConfigError> {
        let value = self.raw(key)?;
        parse(value).ok_or_else(|| bad(key, value, expected))
    }

    fn size(&self, key: &str) -> Result<u64, ConfigError> {
        self.parse(key, "a size", parse_size)
    }

    fn seconds(&self, key: &str) -> Result<u64, ConfigError> {
        self.parse(key, "a whole number of seconds", |v| v.parse().ok())
    }

    fn count(&self, key: &str) -> Result<u32, ConfigError> {
        self.parse(key, "a whole number from 1", |v| v.parse().ok().filter(|n| *n > 0))
    }

    fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        self.parse(key, "true or false", |v| match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }

    fn names(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        Ok(self.raw(key)?.split(',').map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect())
    }

    /// Keys under `prefix`, without it.
    fn under(&self, prefix: &str) -> Vec<(String, String)> {
        self.0.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_owned(), v.clone()))).collect()
    }
}

fn bad(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::BadValue { key: key.to_owned(), value: value.to_owned(), expected: expected.to_owned() }
}

/// The first-party backends by the name `backend.plugin` gives them (the one table).
pub const BACKENDS: &[(&str, Plugin)] = &[
    ("disk", marsh_artifacts::BACKEND_DISK),
    ("s3", marsh_artifacts::BACKEND_S3),
    ("memory", marsh_artifacts::BACKEND_MEMORY),
];

/// The first-party strategies by the name `persistence.plugin` gives them.
pub const STRATEGIES: &[(&str, Plugin)] = &[
    ("local", marsh_artifacts::PERSISTENCE_LOCAL),
    ("records", marsh_artifacts::PERSISTENCE_RECORDS),
    ("stash", marsh_artifacts::PERSISTENCE_STASH),
];

/// The backends linked natively in benchmark builds (`native:NAME`).
pub const NATIVE_BACKENDS: &[&str] = &["disk", "memory"];

fn named(table: &[(&str, Plugin)], value: &str) -> Option<PluginChoice> {
    table.iter().find(|(name, _)| *name == value).map(|(_, p)| PluginChoice::FirstParty(*p))
}

fn backend_plugin(key: &str, value: &str) -> Result<PluginChoice, ConfigError> {
    if let Some(choice) = named(BACKENDS, value) {
        return Ok(choice);
    }
    Ok(match value {
        v if v.starts_with("native:") => PluginChoice::Native(v.trim_start_matches("native:").to_owned()),
        v if v.ends_with(".wasm") => PluginChoice::File(PathBuf::from(v)),
        v => return Err(bad(key, v, "disk, s3, memory or a .wasm file")),
    })
}

fn strategy_plugin(key: &str, value: &str) -> Result<PluginChoice, ConfigError> {
    if let Some(choice) = named(STRATEGIES, value) {
        return Ok(choice);
    }
    Ok(match value {
        v if v.ends_with(".wasm") => PluginChoice::File(PathBuf::from(v)),
        v => return Err(bad(key, v, "local, records, stash or a .wasm file")),
    })
}

/// S3 fields that have defaults, filled in when unset.
const S3_DEFAULTED: [&str; 6] = ["region", "timeout", "max-concurrency", "max-attempts", "part-size", "path-style"];

fn store(values: &Values, name: &str, spec: &str) -> Result<StoreSpec, ConfigError> {
    let key = format!("store.{name}");
    if spec == "memory" {
        return Ok(StoreSpec::Memory);
    }
    if spec == "s3" {
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
                *value =
                    parse_size(value).ok_or_else(|| bad(&format!("{prefix}{field}"), value, "a size"))?.to_string();
            }
        }
        return Ok(StoreSpec::S3(fields));
    }
    match spec.strip_prefix("dir:") {
        Some(path) => Ok(StoreSpec::Dir(PathBuf::from(path))),
        None => Err(bad(&key, spec, "dir:PATH, s3 or memory")),
    }
}

/// One place `node.listen` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOn {
    /// `IP:PORT`.
    Tcp(SocketAddr),
    /// `unix:/PATH`: for a Tor onion service's `HiddenServicePort` or a local reverse proxy.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenOn::Tcp(a) => a.fmt(f),
            ListenOn::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `node.listen`'s value as listeners; `None` if any part is neither `IP:PORT` nor
/// `unix:/ABSOLUTE/PATH`, or there is none.
pub(crate) fn listeners(value: &str) -> Option<Vec<ListenOn>> {
    let parts: Vec<ListenOn> = value
        .split(',')
        .map(str::trim)
        .map(|p| match p.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') && !path.contains('\0') => Some(ListenOn::Unix(PathBuf::from(path))),
            Some(_) => None,
            None => p.parse().ok().map(ListenOn::Tcp),
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then_some(parts)
}

/// `introducer.furls`'s value as fURLs, each with a hint this node can dial. fURLs are separated
/// by commas, as are the hints inside one, so a piece that does not start with `pb://`
/// continues the fURL before it.
pub(crate) fn furls(value: &str) -> Result<Vec<Furl>, String> {
    let mut texts: Vec<String> = Vec::new();
    for piece in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match texts.last_mut() {
            Some(last) if !piece.starts_with("pb://") => {
                last.push(',');
                last.push_str(piece);
            }
            _ => texts.push(piece.to_owned()),
        }
    }
    texts
        .iter()
        .map(|f| {
            let furl: Furl = f.parse().map_err(|e: marsh_foolscap::furl::FurlError| e.to_string())?;
            if !furl.hints.iter().any(|h| matches!(h, marsh_foolscap::furl::Hint::Tcp { .. })) {
                return Err(format!("{furl} has no tcp: hint this node can dial"));
            }
            Ok(furl)
        })
        .collect()
}

/// The most certificates, and the largest certificate file, `storage.grid-manager-certificates`
/// takes: a grid has a handful of managers and a certificate is a few hundred bytes.
const MAX_CERTIFICATES: usize = 16;
const MAX_CERTIFICATE_FILE: u64 = 64 << 10;

fn certificate(v: serde_json::Value) -> Result<serde_json::Value, String> {
    let ok = v.as_object().is_some_and(|o| {
        o.len() == 2
            && o.get("certificate").is_some_and(|c| c.is_string())
            && o.get("signature").is_some_and(|c| c.is_string())
    });
    if ok {
        Ok(v)
    } else {
        Err("a certificate must be an object with exactly `certificate` and `signature`, both text".into())
    }
}

/// The certificates `storage.grid-manager-certificates` names: the files a comma-separated list
/// of absolute paths names (read now, so the node directory holds them and a copy of it is a
/// whole backup), or the stored JSON list itself; none when empty.
pub(crate) fn certificates(value: &str) -> Result<Vec<serde_json::Value>, String> {
    let v = value.trim();
    let certs: Vec<serde_json::Value> = if v.is_empty() {
        Vec::new()
    } else if v.starts_with('[') {
        let list: Vec<serde_json::Value> = serde_json::from_str(v).map_err(|e| e.to_string())?;
        list.into_iter().map(certificate).collect::<Result<_, _>>()?
    } else {
        v.split(',').map(str::trim).map(read_certificate).collect::<Result<_, _>>()?
    };
    if certs.len() > MAX_CERTIFICATES {
        return Err(format!("{} certificates; at most {MAX_CERTIFICATES}", certs.len()));
    }
    Ok(certs)
}

/// One certificate file, read no further than [`MAX_CERTIFICATE_FILE`] whatever it is (a pipe
/// or a device included).
fn read_certificate(path: &str) -> Result<serde_json::Value, String> {
    use std::io::Read;
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{path} is not an absolute path"));
    }
    let file = std::fs::File::open(p).map_err(|e| format!("{path}: {e}"))?;
    let mut text = String::new();
    file.take(MAX_CERTIFICATE_FILE + 1).read_to_string(&mut text).map_err(|e| format!("{path}: {e}"))?;
    if text.len() as u64 > MAX_CERTIFICATE_FILE {
        return Err(format!("{path} is larger than {MAX_CERTIFICATE_FILE} bytes, which no certificate is"));
    }
    certificate(serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?)
}

/// `storage.grid-manager-certificates` as stored: [`certificates`] as a JSON list, or empty.
pub(crate) fn stored_certificates(value: &str) -> Result<String, String> {
    let certs = certificates(value)?;
    Ok(if certs.is_empty() { String::new() } else { serde_json::Value::from(certs).to_string() })
}

impl NodeConfig {
    /// Parse the effective values (defaults included) of every key.
    pub fn from_settings(settings: &[config::Setting]) -> Result<NodeConfig, ConfigError> {
        let values = Values(
            settings.iter().filter_map(|s| s.value.clone().map(|v| (s.key.clone(), v))).collect::<BTreeMap<_, _>>(),
        );
        let listen = values.parse("node.listen", "IP:PORT and unix:/PATH, comma-separated", listeners)?;
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
            (Some(_), _) => values.parse("node.public-port", "a port number", |v| v.parse().ok())?,
            (None, Some(a)) => a.port(),
            (None, None) => return Err(unknown("node.public-port")),
        };
        let mode = match values.raw("expire.mode")? {
            "cutoff-date" => ExpireMode::CutoffDate(values.parse("expire.cutoff-date", "a UTC date", parse_date)?),
            "age" => ExpireMode::Age {
                override_seconds: match values.optional("expire.override-lease-duration") {
                    Some(_) => Some(values.seconds("expire.override-lease-duration")?),
                    None => None,
                },
            },
            other => return Err(bad("expire.mode", other, "age or cutoff-date")),
        };
        let sweep_interval = values.seconds("backend.sweep-interval")?;
        let mut stores = BTreeMap::new();
        for (name, spec) in values.under("store.") {
            let parsed = store(&values, &name, &spec)?;
            stores.insert(name, parsed);
        }
        let introducers = values.raw("introducer.furls")?;
        let introducers = furls(introducers).map_err(|why| bad("introducer.furls", introducers, &why))?;
        let stored = values.raw("storage.grid-manager-certificates")?;
        let grid_manager_certificates =
            certificates(stored).map_err(|why| bad("storage.grid-manager-certificates", stored, &why))?;
        Ok(NodeConfig {
            introducers,
            grid_manager_certificates,
            nickname: values.raw("node.nickname")?.to_owned(),
            listen,
            public_host,
            public_port,
            reserved_space: values.size("storage.reserved-space")?,
            web_listen: match values.raw("web.listen")?.trim() {
                "" => None,
                v => Some(v.parse().map_err(|_| bad("web.listen", v, "an address such as 127.0.0.1:3458, or empty"))?),
            },
            metrics_token_file: values.optional("web.metrics-token-file").map(PathBuf::from),
            capacity: CapacitySettings {
                readonly: values.bool("storage.readonly")?,
                max_bytes: match values.optional("storage.max-bytes") {
                    Some(_) => Some(values.size("storage.max-bytes")?),
                    None => None,
                },
            },
            backend: BackendSettings {
                plugin: backend_plugin("backend.plugin", values.raw("backend.plugin")?)?,
                stores: values.names("backend.stores")?,
                config: values.under("backend.config."),
                sweep_interval: (sweep_interval > 0).then(|| Duration::from_secs(sweep_interval)),
                sweep_grace: values.seconds("backend.sweep-grace")?,
            },
            persistence: PersistenceSettings {
                plugin: strategy_plugin("persistence.plugin", values.raw("persistence.plugin")?)?,
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
                instances: values
                    .parse("limits.instances", "a whole number from 1", |v| v.parse().ok().filter(|n| *n > 0))?,
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
    fn furls_with_several_hints_are_told_apart_from_several_furls() {
        let tub = "abcdefghijklmnopqrstuvwxyz234567";
        let got = furls(&format!("pb://{tub}@tcp:a:1,b:2/x , pb://{tub}@tcp:[::1]:3/y,")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].hints.len(), got[0].name.as_str()), (2, "x"));
        assert_eq!((got[1].hints.len(), got[1].name.as_str()), (1, "y"));
        assert_eq!(furls("").unwrap(), []);
        assert!(furls(&format!("pb://{tub}@tcp:a:1/x,garbage")).is_err());
    }

    #[test]
    fn a_value_that_does_not_parse_names_its_key() {
        let mut settings = config::defaults();
        settings.retain(|s| s.key != "limits.memory");
        settings.push(setting("limits.memory", "lots"));
        let e = NodeConfig::from_settings(&settings).unwrap_err();
        assert!(matches!(&e, ConfigError::BadValue { key, .. } if key == "limits.memory"), "{e}");
        let mut settings = config::defaults();
        settings.retain(|s| s.key != "expire.mode");
        settings.push(setting("expire.mode", "cutoff-date"));
        let e = NodeConfig::from_settings(&settings).unwrap_err();
        assert!(e.to_string().contains("expire.cutoff-date"), "a mode that needs a date says which key: {e}");
    }
}

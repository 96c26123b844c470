//! The kinds of configuration value, one parser each: what `marsh config set` checks a value
//! with (storing it normalised) is what the typed configuration ([`crate::NodeConfig`]) reads
//! it with, and a value that does not parse is described by the same words ([`Kind::expected`])
//! either way. The typed values some kinds parse into live here too ([`PluginChoice`],
//! [`ListenOn`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use marsh_artifacts::Plugin;
use marsh_foolscap::Furl;

/// The form of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any non-empty text.
    Text,
    /// `IP:PORT`.
    Address,
    /// 1-65535.
    Port,
    /// A size such as `1G`, `500MiB`, `4096`.
    Size,
    /// Whole seconds.
    Seconds,
    /// A positive count.
    Count,
    /// `disk`, `memory`, or a path to a `.wasm` file.
    Plugin,
    /// `dir:ABSOLUTE_PATH` or `memory`.
    Store,
    /// Plugin config: any text.
    PluginValue,
    /// Comma-separated names.
    Names,
    /// `true` or `false`.
    Bool,
    /// An `http://` or `https://` URL.
    Url,
    /// Empty, or a key prefix ending in `/` (not starting with one).
    KeyPrefix,
    /// An absolute path.
    AbsPath,
    /// Text shown as `(set)` by `marsh config list`.
    Secret,
    /// `age` or `cutoff-date`.
    ExpireMode,
    /// `local`, `records`, `stash`, or a path to a `.wasm` file.
    Strategy,
    /// A UTC date `YYYY-MM-DD`.
    Date,
    /// `IP:PORT`, or empty for off.
    Listen,
    /// One or more of `IP:PORT` and `unix:/ABSOLUTE/PATH`, comma-separated.
    Listeners,
    /// Introducer fURLs, comma-separated, or empty.
    Furls,
    /// Grid-manager certificate files (absolute paths, comma-separated), or empty; stored as
    /// the certificates themselves, a JSON list.
    Certificates,
    /// `sqlite` or `postgres`.
    Engine,
    /// A libpq connection string (`key=value ...` or a `postgresql://` URL) without a password.
    Conninfo,
}

impl Kind {
    /// What a value of this kind looks like, as an error message says it.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Text => "non-empty text",
            Kind::Address => "an address such as 127.0.0.1:3457",
            Kind::Port => "a port number 1-65535",
            Kind::Size => "a size such as 1G, 500MiB or 4096 (K/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024)",
            Kind::Seconds => "a whole number of seconds",
            Kind::Count => "a whole number from 1",
            Kind::Plugin => {
                "`disk`, `s3`, `memory`, the path of a .wasm plugin file, or `native:disk` (benchmark builds only)"
            }
            Kind::Store => "`dir:ABSOLUTE_PATH`, `s3` (settings under s3.NAME.*) or `memory`",
            Kind::Bool => "true or false",
            Kind::Url => "a URL starting with http:// or https://",
            Kind::KeyPrefix => "empty, or a prefix ending in `/` such as `node1/`",
            Kind::AbsPath => "an absolute path",
            Kind::Secret => "non-empty text",
            Kind::ExpireMode => "`age` or `cutoff-date`",
            Kind::Strategy => "`local`, `records`, `stash`, or the absolute path of a .wasm persistence plugin",
            Kind::Date => "a UTC date such as 2026-01-31",
            Kind::PluginValue => "text",
            Kind::Names => "names separated by commas, e.g. shares,state",
            Kind::Listen => "an address such as 127.0.0.1:3458, or empty for off",
            Kind::Listeners => "addresses such as 0.0.0.0:3457 or unix:/run/marsh/gbs.sock, comma-separated",
            Kind::Furls => {
                "introducer fURLs pb://TUBID@tcp:HOST:PORT/NAME (as `tahoe create-introducer` writes them to private/introducer.furl), comma-separated, or empty"
            }
            Kind::Certificates => {
                "absolute paths of certificate files from `tahoe grid-manager ... add`, each a JSON object with exactly `certificate` and `signature`, comma-separated, or empty"
            }
            Kind::Engine => "`sqlite` or `postgres`",
            Kind::Conninfo => {
                "a PostgreSQL connection string such as `host=db.example port=5432 user=marsh dbname=marsh sslmode=require`, without a password (give that as accounting.postgres-password-file)"
            }
        }
    }
}

impl Kind {
    /// Check `value` by parsing it as this kind; the value as stored (trimmed, and a list of
    /// certificate files read into the certificates), or why not.
    pub fn check(self, value: &str) -> Result<String, String> {
        let v = value.trim();
        let ok = match self {
            Kind::Text | Kind::Secret => !v.is_empty(),
            Kind::Bool => parse_bool(v).is_some(),
            Kind::Url => v.starts_with("http://") || v.starts_with("https://"),
            Kind::KeyPrefix => v.is_empty() || (v.ends_with('/') && !v.starts_with('/') && !v.contains("//")),
            Kind::AbsPath => Path::new(v).is_absolute(),
            Kind::ExpireMode => matches!(v, "age" | "cutoff-date"),
            Kind::Strategy => strategy_plugin(v).is_some(),
            Kind::Date => parse_date(v).is_some(),
            Kind::PluginValue => true,
            Kind::Names => v.split(',').all(|n| !n.trim().is_empty() && !n.contains(char::is_whitespace)),
            Kind::Address => v.parse::<SocketAddr>().is_ok(),
            Kind::Listen => parse_listen(v).is_some(),
            Kind::Listeners => listeners(v).is_some(),
            Kind::Furls => return furls(v).map(|_| v.to_owned()).map_err(|why| format!("{} ({why})", self.expected())),
            Kind::Certificates => return stored_certificates(v).map_err(|why| format!("{} ({why})", self.expected())),
            Kind::Port => parse_port(v).is_some(),
            Kind::Size => parse_size(v).is_some(),
            Kind::Seconds => parse_seconds(v).is_some(),
            Kind::Count => parse_count(v).is_some(),
            Kind::Plugin => backend_plugin(v).is_some(),
            Kind::Store => store_kind(v).is_some(),
            Kind::Engine => parse_engine(v).is_some(),
            Kind::Conninfo => conninfo_without_password(v),
        };
        if ok { Ok(v.to_owned()) } else { Err(self.expected().to_owned()) }
    }
}

/// Seconds since the epoch at the start of a UTC date `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<u64> {
    let mut parts = s.trim().splitn(3, '-');
    let (y, m, d): (i64, i64, i64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if !(1970..=9999).contains(&y) {
        return None;
    }
    let days = marsh_core::days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?)?;
    u64::try_from(days * 86_400).ok()
}

/// Parse a size: `<int>[K|M|G|T|P|E][i][B]`, case-insensitive.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let (prefix, base) = match unit.strip_suffix('i') {
        Some(p) => (p, 1024u64),
        None => (unit, 1000u64),
    };
    let exp = match prefix {
        "" if base == 1000 => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        "e" => 6,
        _ => return None,
    };
    n.checked_mul(base.checked_pow(exp)?)
}

/// `true` or `false`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Whole seconds.
pub fn parse_seconds(v: &str) -> Option<u64> {
    v.trim().parse().ok()
}

/// A whole number from 1.
pub fn parse_count(v: &str) -> Option<u32> {
    v.trim().parse().ok().filter(|n| *n > 0)
}

/// A port, 1-65535.
pub fn parse_port(v: &str) -> Option<u16> {
    v.trim().parse().ok().filter(|p| *p > 0)
}

/// `IP:PORT`, or empty for off (`Some(None)`).
pub fn parse_listen(v: &str) -> Option<Option<SocketAddr>> {
    match v.trim() {
        "" => Some(None),
        v => v.parse().ok().map(Some),
    }
}

/// Comma-separated names, empty ones left out.
pub fn parse_names(v: &str) -> Vec<String> {
    v.split(',').map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect()
}

/// What a `store.NAME` value says, before an S3 store's own keys are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// `dir:ABSOLUTE_PATH`.
    Dir(PathBuf),
    /// `memory`.
    Memory,
    /// `s3`.
    S3,
}

/// `dir:ABSOLUTE_PATH`, `s3` or `memory`.
pub fn store_kind(v: &str) -> Option<StoreKind> {
    match v.trim() {
        "memory" => Some(StoreKind::Memory),
        "s3" => Some(StoreKind::S3),
        v => v.strip_prefix("dir:").filter(|p| Path::new(p).is_absolute()).map(|p| StoreKind::Dir(PathBuf::from(p))),
    }
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

/// A `.wasm` file named by its absolute path.
fn wasm_file(v: &str) -> Option<PluginChoice> {
    (v.ends_with(".wasm") && Path::new(v).is_absolute()).then(|| PluginChoice::File(PathBuf::from(v)))
}

/// `backend.plugin`: a first-party backend's name, `native:NAME` (benchmark builds), or the
/// absolute path of a `.wasm` file.
pub fn backend_plugin(value: &str) -> Option<PluginChoice> {
    let v = value.trim();
    named(BACKENDS, v)
        .or_else(|| {
            v.strip_prefix("native:")
                .filter(|n| NATIVE_BACKENDS.contains(n))
                .map(|n| PluginChoice::Native(n.to_owned()))
        })
        .or_else(|| wasm_file(v))
}

/// `persistence.plugin`: a first-party strategy's name, or the absolute path of a `.wasm`
/// file.
pub fn strategy_plugin(value: &str) -> Option<PluginChoice> {
    let v = value.trim();
    named(STRATEGIES, v).or_else(|| wasm_file(v))
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

/// The fURLs of an `introducer.furls` value, as written (swissnums included). fURLs are
/// separated by commas, as are the hints inside one, so a piece that does not start with
/// `pb://` continues the fURL before it.
pub fn furl_texts(value: &str) -> Vec<String> {
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
}

/// `introducer.furls`'s value as fURLs, each with a hint this node can dial ([`furl_texts`]).
pub(crate) fn furls(value: &str) -> Result<Vec<Furl>, String> {
    furl_texts(value)
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
    let p = Path::new(path);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_tahoe() {
        assert_eq!(parse_size("1G"), Some(1_000_000_000));
        assert_eq!(parse_size("100MB"), Some(100_000_000));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("256Mi"), Some(256 << 20));
        for bad in ["", "G", "1 G", "1X", "-1", "99999999999999999999E"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(951_868_800));
        assert_eq!(parse_date("2026-11-27"), Some(1_795_737_600));
        assert_eq!(parse_date("2024-02-29"), Some(1_709_164_800));
        for bad in ["2023-02-29", "2026-13-01", "1969-12-31", "yesterday", "2026-1"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
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
}

/// Where accounting lives (`accounting.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountingEngine {
    /// SQLite under the node's `cache/`.
    Sqlite,
    /// A PostgreSQL database, perhaps shared by a fleet.
    Postgres,
}

/// `sqlite` or `postgres`.
pub fn parse_engine(v: &str) -> Option<AccountingEngine> {
    match v {
        "sqlite" => Some(AccountingEngine::Sqlite),
        "postgres" => Some(AccountingEngine::Postgres),
        _ => None,
    }
}

/// Whether `v` is a non-empty connection string that carries no password: no `password` key,
/// and no `user:password@` in a URL (a password kept in the settings would be printed with them).
pub fn conninfo_without_password(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let url_password = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .and_then(|rest| rest.split_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    !v.trim().is_empty() && !lower.contains("password") && !url_password
}

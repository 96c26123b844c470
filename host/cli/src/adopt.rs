//! Moving a Tahoe-LAFS storage node to marsh (`marsh adopt`): its identity kept (the NURL,
//! server id, tub id and permutation seed its clients know), its settings mapped onto marsh's
//! keys, and its shares, leases, write enablers and corruption advisories taken in through the
//! configured backend, so the same clients renew the same leases and write the same mutable
//! files. The Tahoe directory is only read.
//!
//! In three steps: [`plan`] reads the Tahoe node and decides the new node's settings (and
//! says which Tahoe settings have no marsh counterpart); [`survey`] walks its shares without
//! taking them (what `--dry-run` prints, and the progress total); [`import`] takes them in.
//! An import that stops (a crash, an interrupt, a full disk) is finished by running the same
//! command again: a share already taken in whole is passed over, one taken in part is written
//! again, and until the import ends `marsh run` refuses to start the node
//! ([`Error::AdoptionUnfinished`]) so no client reads half a share. Once it has ended, running
//! it again is refused: the node may have served since, and what its clients changed or lease
//! expiry deleted would come back.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use marsh_accountant::{AccountId, Accountant, AdoptedLease, AdoptedShare};
use marsh_core::{Backend, ShareId, ShareNumber, StorageIndex, WriteVector};
use marsh_node::{AdoptedIdentity, InitOptions, NodeDir};
use marsh_tahoe::container::{self, Container, Kind};
use marsh_tahoe::{Entry, Shares, TahoeNode, cfg};

use crate::{Error, Node};

/// Shares taken in at once.
const IN_FLIGHT: usize = 8;
/// Chunks of one immutable share written at once.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Shares recorded per accountant transaction.
const RECORD_BATCH: usize = 256;

/// What `marsh adopt` was asked.
#[derive(Debug, Clone)]
pub struct AdoptOptions {
    /// The Tahoe node directory.
    pub tahoe_dir: PathBuf,
    /// The marsh node directory to make.
    pub node_dir: PathBuf,
    /// Where the default disk store keeps shares (default: beside the node directory).
    pub storage_dir: Option<PathBuf>,
    /// Listen address instead of the one `tub.port` gives.
    pub listen: Option<SocketAddr>,
    /// Host clients connect to instead of the one `tub.location` gives.
    pub public_host: Option<String>,
    /// Port clients connect to instead of the one `tub.location` gives.
    pub public_port: Option<u16>,
    /// Further marsh settings (`KEY=VALUE`), after the mapped ones: an S3 store, say.
    pub settings: Vec<(String, String)>,
}

/// What the new node will be.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The Tahoe node.
    pub tahoe: TahoeNode,
    /// Its identity.
    pub identity: marsh_tahoe::Identity,
    /// The marsh node's directory.
    pub node_dir: PathBuf,
    /// How the marsh node is made.
    pub init: InitOptions,
    /// Tahoe settings carried over: (Tahoe's name, marsh key, value).
    pub carried: Vec<(String, String, String)>,
    /// Tahoe settings with no marsh counterpart: (Tahoe's name, what that means).
    pub not_carried: Vec<(String, String)>,
    /// The NURLs the Tahoe node announced (one per location hint); the marsh node announces
    /// the first.
    pub tahoe_nurls: Vec<String>,
}

/// Twisted's endpoint strings as `tub.port` takes them: `tcp:PORT`, `tcp:PORT:interface=IP`,
/// `tcp:port=PORT:interface=IP`, comma-separated; `disabled` or anything else is not a TCP
/// listener.
pub fn listeners_of(tub_port: &str) -> Vec<SocketAddr> {
    tub_port
        .split(',')
        .filter_map(|endpoint| {
            let mut parts = endpoint.trim().split(':');
            if parts.next()? != "tcp" {
                return None;
            }
            let (mut port, mut interface) = (None, "0.0.0.0".to_owned());
            for (i, part) in parts.enumerate() {
                match part.split_once('=') {
                    Some(("port", p)) => port = p.parse::<u16>().ok(),
                    Some(("interface", ip)) => interface = ip.to_owned(),
                    Some(_) => {}
                    None if i == 0 => port = part.parse::<u16>().ok(),
                    None => {}
                }
            }
            let ip: std::net::IpAddr = interface.trim_matches(['[', ']']).parse().ok()?;
            Some(SocketAddr::new(ip, port?))
        })
        .collect()
}

/// The `(host, port)` of each location hint in `tub.location` that a client reaches marsh by:
/// `tcp:HOST:PORT`, a legacy `HOST:PORT`, and `tor:ONION:PORT` (a `.onion` host, announced as a
/// `pb+tor://` NURL). `AUTO` and `i2p:` hints are left out.
pub fn hints_of(tub_location: &str) -> Vec<(String, u16)> {
    tub_location
        .split(',')
        .filter_map(|hint| {
            let hint = hint.trim();
            let rest = hint.strip_prefix("tcp:").or_else(|| hint.strip_prefix("tor:")).unwrap_or(hint);
            if hint.contains("AUTO") || hint.starts_with("i2p:") {
                return None;
            }
            let (host, port) = rest.rsplit_once(':')?;
            let host = host.trim_matches(['[', ']']);
            let fits = !host.is_empty() && (!host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok());
            Some((host.to_owned(), port.parse().ok()?)).filter(|_| fits)
        })
        .collect()
}

/// Read the Tahoe node in `options.tahoe_dir` and decide the marsh node's settings.
pub fn plan(options: &AdoptOptions) -> Result<Plan, Error> {
    let tahoe = TahoeNode::open(&options.tahoe_dir)?;
    let identity = tahoe.identity()?;
    // The key must be the certificate's and one the server can sign with: found now, not when
    // the node first starts.
    marsh_server::tls_config(identity.cert_der.clone(), identity.key_pkcs8.clone())?;
    let cfg = &tahoe.cfg;
    let mut carried: Vec<(String, String, String)> = Vec::new();
    let mut not_carried = Vec::new();

    let tub_port = cfg
        .get("node", "tub.port")
        .map(str::to_owned)
        .or_else(|| std::fs::read_to_string(tahoe.dir.join("client.port")).ok().map(|p| p.trim().to_owned()));
    let listen = match (options.listen, tub_port.as_deref().map(listeners_of).as_deref()) {
        (Some(l), _) => l,
        (None, Some([first, ..])) => {
            carried.push(("[node] tub.port".into(), "node.listen".into(), first.to_string()));
            *first
        }
        (None, _) => {
            return Err(Error::Moving(format!(
                "[node] tub.port is {:?}, which names no TCP port to listen on: give one with --listen IP:PORT",
                tub_port.unwrap_or_default()
            )));
        }
    };
    let location = cfg.get("node", "tub.location").unwrap_or("");
    let hints = hints_of(location);
    let spki = marsh_foolscap::tls::spki_hash(&identity.cert_der).unwrap_or_default();
    let tahoe_nurls: Vec<String> = hints
        .iter()
        .map(|(host, port)| {
            let scheme = if host.ends_with(".onion") { "pb+tor" } else { "pb" };
            format!("{scheme}://{spki}@{host}:{port}/{}#v=1", identity.swissnum)
        })
        .collect();
    let (public_host, public_port) = match (&options.public_host, hints.first()) {
        (Some(h), _) => (h.clone(), options.public_port.unwrap_or(listen.port())),
        (None, Some((h, port))) => {
            let port = options.public_port.unwrap_or(*port);
            carried.push(("[node] tub.location".into(), "node.public-host".into(), h.clone()));
            carried.push(("[node] tub.location".into(), "node.public-port".into(), port.to_string()));
            (h.clone(), port)
        }
        (None, None) => {
            return Err(Error::Moving(format!(
                "[node] tub.location is {location:?}, which names no host clients reach the node at: give one with \
                 --public-host HOST (and --public-port PORT)"
            )));
        }
    };
    if hints.len() > 1 {
        not_carried.push((
            format!("[node] tub.location = {location}"),
            format!(
                "{} location hints; marsh announces one NURL ({public_host}:{public_port}). Clients holding a NURL with \
                 another hint still reach the node wherever that hint leads to its port",
                hints.len()
            ),
        ));
    }
    let nickname = cfg.get("node", "nickname").filter(|n| !n.is_empty()).unwrap_or("marsh").to_owned();
    carried.push(("[node] nickname".into(), "node.nickname".into(), nickname.clone()));

    let settings = storage_settings(&tahoe, &mut carried)?;
    let mut settings = settings;
    settings.extend(options.settings.iter().cloned());
    not_carried.extend(unmapped(cfg));
    let init = InitOptions {
        listen,
        public_host: Some(public_host),
        public_port: Some(public_port),
        nickname,
        storage_dir: options.storage_dir.clone(),
        web_listen: None,
        settings,
    };
    Ok(Plan { tahoe, identity, node_dir: options.node_dir.clone(), init, carried, not_carried, tahoe_nurls })
}

/// The marsh settings the Tahoe node's `[storage]` keys, introducers and grid-manager
/// certificates give, each also noted in `carried`.
fn storage_settings(
    tahoe: &TahoeNode,
    carried: &mut Vec<(String, String, String)>,
) -> Result<Vec<(String, String)>, Error> {
    let cfg = &tahoe.cfg;
    let mut settings = Vec::new();
    let mut carry = |from: &str, key: &str, value: String| {
        carried.push((from.to_owned(), key.to_owned(), value.clone()));
        settings.push((key.to_owned(), value));
    };
    let bool_key = |name: &str| -> Result<Option<bool>, Error> {
        cfg.boolean("storage", name).map_err(|why| Error::Moving(format!("tahoe.cfg: {why}")))
    };
    carry("[storage] readonly", "storage.readonly", bool_key("readonly")?.unwrap_or(false).to_string());
    let reserved = cfg.get("storage", "reserved_space").unwrap_or("");
    let reserved = cfg::parse_size(reserved)
        .ok_or_else(|| Error::Moving(format!("tahoe.cfg: [storage] reserved_space = {reserved:?} is not a size")))?;
    carry("[storage] reserved_space", "storage.reserved-space", reserved.to_string());
    carry("[storage] expire.enabled", "expire.enabled", bool_key("expire.enabled")?.unwrap_or(false).to_string());
    if let Some(mode) = cfg.get("storage", "expire.mode").filter(|m| !m.is_empty()) {
        carry("[storage] expire.mode", "expire.mode", mode.to_owned());
    }
    if let Some(d) = cfg.get("storage", "expire.override_lease_duration").filter(|d| !d.is_empty()) {
        let seconds = cfg::parse_duration(d).ok_or_else(|| {
            Error::Moving(format!("tahoe.cfg: [storage] expire.override_lease_duration = {d:?} is not a duration"))
        })?;
        carry("[storage] expire.override_lease_duration", "expire.override-lease-duration", seconds.to_string());
    }
    if let Some(date) = cfg.get("storage", "expire.cutoff_date").filter(|d| !d.is_empty()) {
        carry("[storage] expire.cutoff_date", "expire.cutoff-date", date.to_owned());
    }
    for kind in ["immutable", "mutable"] {
        if let Some(b) = bool_key(&format!("expire.{kind}"))? {
            carry(&format!("[storage] expire.{kind}"), &format!("expire.{kind}"), b.to_string());
        }
    }
    let introducers = tahoe.introducers();
    if !introducers.is_empty() {
        carry("private/introducers.yaml", "introducer.furls", introducers.join(","));
    }
    let certificates = tahoe.grid_manager_certificates();
    if !certificates.is_empty() {
        let paths: Vec<String> = certificates.iter().map(|p| p.display().to_string()).collect();
        carry("[grid_manager_certificates]", "storage.grid-manager-certificates", paths.join(","));
    }
    carry("(a Tahoe node keeps write enablers in its shares)", "storage.keep-write-enablers", "true".into());
    Ok(settings)
}

/// The Tahoe settings a storage server has that marsh does not take over, each with what it
/// means for the move.
fn unmapped(cfg: &cfg::TahoeCfg) -> Vec<(String, String)> {
    let mapped = [
        ("node", "nickname"),
        ("node", "tub.port"),
        ("node", "tub.location"),
        ("storage", "enabled"),
        ("storage", "storage_dir"),
        ("storage", "readonly"),
        ("storage", "reserved_space"),
        ("storage", "expire.enabled"),
        ("storage", "expire.mode"),
        ("storage", "expire.override_lease_duration"),
        ("storage", "expire.cutoff_date"),
        ("storage", "expire.immutable"),
        ("storage", "expire.mutable"),
        ("storage", "grid_management"),
        ("client", "introducer.furl"),
    ];
    let mut out = Vec::new();
    for (section, key, value) in cfg.entries() {
        if value.is_empty() || mapped.contains(&(section, key)) {
            continue;
        }
        let why = match (section, key) {
            ("node", "web.port") => {
                "Tahoe's web interface is the client's; marsh's status page, metrics and health \
                                     probe are on web.listen (default 127.0.0.1:3458)"
            }
            ("node", "log_gatherer.furl") => "marsh logs to stderr (one JSON object per line with --log-format json)",
            ("node", "reveal-ip-address") | ("node", "tub.port.disable") => "marsh listens where node.listen says",
            ("storage", "anonymous") => {
                "marsh always serves the anonymous NURL; named accounts have their own (`marsh account`)"
            }
            ("storage", "plugins") | ("storage", "http") => "Tahoe storage plugins do not run in marsh",
            ("grid_manager_certificates", _) => continue,
            ("node" | "storage", _) => "no marsh counterpart",
            ("client" | "helper" | "sftpd" | "ftpd" | "magic_folder" | "drop_upload", _) => continue,
            ("tor" | "i2p" | "connections", _) => {
                "marsh does not launch Tor or I2P: run the onion service yourself and \
                                                   point it at node.listen"
            }
            _ => "no marsh counterpart",
        };
        out.push((format!("[{section}] {key} = {value}"), why.to_owned()));
    }
    out
}

/// What the Tahoe node's storage holds, as walked without taking anything.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// Immutable shares and their bytes of data.
    pub immutable: (u64, u64),
    /// Mutable shares and their bytes of data.
    pub mutable: (u64, u64),
    /// Leases on them.
    pub leases: u64,
    /// Bytes of the share files (containers), for the progress bar.
    pub file_bytes: u64,
    /// Unfinished uploads under `shares/incoming/`, and their bytes: never taken (their
    /// clients upload again).
    pub incoming: (u64, u64),
    /// Files that are not shares this can read: (path, why).
    pub problems: Vec<(PathBuf, String)>,
    /// Corruption advisories.
    pub advisories: u64,
}

/// The container in `path`, read.
fn open_container(path: &Path, size: u64) -> Result<(std::fs::File, Container), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let c = container::read(&mut file, size).map_err(|e| e.to_string())?;
    Ok((file, c))
}

/// Walk the Tahoe node's shares. With `read_containers`, read every container's header and
/// leases (what `--dry-run` and `--strict` report); without, only the files' sizes, for the
/// progress bar (`import` reads each container as it takes it in).
pub fn survey(tahoe: &TahoeNode, read_containers: bool) -> Result<Survey, Error> {
    let mut s = Survey::default();
    let walk = Shares::walk(&tahoe.storage_dir)
        .map_err(Error::io(format!("reading {}", tahoe.storage_dir.join("shares").display())))?;
    for entry in walk {
        match entry {
            Entry::Share { size, .. } if !read_containers => s.file_bytes += size,
            Entry::Share { path, size, .. } => match open_container(&path, size) {
                Ok((_, c)) => {
                    let slot = if c.kind == Kind::Immutable { &mut s.immutable } else { &mut s.mutable };
                    slot.0 += 1;
                    slot.1 += c.data_len;
                    s.leases += c.leases.len() as u64;
                    s.file_bytes += size;
                }
                Err(why) => s.problems.push((path, why)),
            },
            Entry::Incoming { size, .. } => {
                s.incoming.0 += 1;
                s.incoming.1 += size;
            }
            Entry::Problem { path, why } => s.problems.push((path, why)),
        }
    }
    s.advisories = advisory_files(tahoe).len() as u64;
    Ok(s)
}

fn advisory_files(tahoe: &TahoeNode) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(tahoe.storage_dir.join("corruption-advisories"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Make the marsh node (or check that the one there is this Tahoe node's), and mark it
/// unfinished until [`import`] ends.
pub fn create(plan: &Plan) -> Result<Node, Error> {
    let id = &plan.identity;
    let adopted = AdoptedIdentity {
        cert_der: id.cert_der.clone(),
        key_pkcs8: id.key_pkcs8.clone(),
        tub_id: id.tub_id.clone(),
        swissnum: id.swissnum.clone(),
        node_key: id.node_key.clone(),
        permutation_seed: id.permutation_seed.clone(),
    };
    let dir = match NodeDir::open(&plan.node_dir) {
        // Made by an earlier run of the same adoption: it must be this node.
        Ok(dir) => {
            if let Some(done) = dir.adopted() {
                return Err(Error::Moving(format!(
                    "{} finished adopting ({done}) and may have served since: taking the Tahoe node's shares in again \
                     would bring back what was changed or deleted since",
                    plan.node_dir.display()
                )));
            }
            let there = dir.identity()?;
            if there.tub_id != id.tub_id || there.cert_der != id.cert_der || there.swissnum != id.swissnum {
                return Err(Error::Moving(format!(
                    "{} is a marsh node already, and not the one adopted from {} (its tub id is {}, the Tahoe node's \
                     {}): choose another --dir",
                    plan.node_dir.display(),
                    plan.tahoe.dir.display(),
                    there.tub_id,
                    id.tub_id
                )));
            }
            dir
        }
        Err(_) => NodeDir::adopt(&plan.node_dir, &plan.init, &adopted)?,
    };
    dir.mark_adopting(&format!(
        "marsh adopt {} --dir {}",
        shell_quote(&plan.tahoe.dir.display().to_string()),
        shell_quote(&dir.root().display().to_string())
    ))?;
    Node::open(dir.root())
}

fn shell_quote(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What [`import`] did.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// Shares taken in: immutable, mutable.
    pub taken: (u64, u64),
    /// Bytes of share data taken in.
    pub bytes: u64,
    /// Shares there already from an earlier run, passed over.
    pub already: u64,
    /// Leases taken in.
    pub leases: u64,
    /// Corruption advisories taken in.
    pub advisories: u64,
    /// What could not be taken: (path, why).
    pub problems: Vec<(PathBuf, String)>,
    /// Unfinished uploads left behind: count, bytes.
    pub incoming: (u64, u64),
}

/// How far an import is: share-file bytes done.
pub type Progress = dyn Fn(u64) + Send + Sync;

/// What became of one entry of the Tahoe node's share tree.
enum Outcome {
    /// Its data is in whole; what to record about it.
    Taken(Record),
    Already,
    Problem(PathBuf, String),
    /// An unfinished upload, left behind: its bytes.
    Incoming(u64),
}

/// Take in every share, lease, write enabler and advisory of the plan's Tahoe node. Holds the
/// node's serving lock throughout; ends by removing the unfinished mark.
pub async fn import(node: &Node, plan: &Plan, progress: &Progress) -> Result<Imported, Error> {
    let _serving = crate::node::not_while_served(
        node.dir(),
        "a node is taken in while nothing serves it; stop it (an adoption that did not finish leaves a node that \
         refuses to start until it is run again)",
    )?;
    let started = node.start_backend(&node.runtime()?).await?;
    let backend = started.backend.clone();
    let accountant = crate::persistence::open_accountant(node.dir())?;
    let mut imported = Imported::default();
    let walk = Shares::walk(&plan.tahoe.storage_dir)
        .map_err(Error::io(format!("reading {}", plan.tahoe.storage_dir.join("shares").display())))?;
    let mut done_bytes = 0;
    let mut outcomes = futures::stream::iter(walk)
        .map(|entry| {
            let (backend, accountant) = (backend.clone(), &accountant);
            async move {
                match entry {
                    Entry::Share { si, shnum, path, size } => {
                        (size, take_share(&*backend, accountant, si, ShareNumber(shnum), &path, size).await)
                    }
                    Entry::Incoming { size, .. } => (0, Ok(Outcome::Incoming(size))),
                    Entry::Problem { path, why } => (0, Ok(Outcome::Problem(path, why))),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT);
    // Shares whose data is in, recorded RECORD_BATCH at a time (and the rest at the end): a
    // run that stops before recording them copies them again, or finds them whole.
    let mut pending = Vec::new();
    while let Some((size, outcome)) = outcomes.next().await {
        done_bytes += size;
        progress(done_bytes);
        match outcome {
            Ok(Outcome::Taken(r)) => {
                pending.push(r);
                if pending.len() >= RECORD_BATCH {
                    record(&accountant, &mut pending, &mut imported)?;
                }
            }
            Ok(Outcome::Already) => imported.already += 1,
            Ok(Outcome::Problem(path, why)) => imported.problems.push((path, why)),
            Ok(Outcome::Incoming(bytes)) => {
                imported.incoming.0 += 1;
                imported.incoming.1 += bytes;
            }
            Err(e) => {
                // What is whole is kept: the next run need not copy it again.
                record(&accountant, &mut pending, &mut imported)?;
                return Err(e);
            }
        }
    }
    drop(outcomes);
    record(&accountant, &mut pending, &mut imported)?;
    imported.advisories = take_advisories(node, plan, &accountant, &mut imported.problems)?;
    node.dir().mark_adopted(&format!(
        "from {} at {} (seconds since the epoch)",
        plan.tahoe.dir.display(),
        marsh_core::unix_now()
    ))?;
    Ok(imported)
}

/// What is recorded about a share once its data is in whole.
struct Record {
    share: ShareId,
    size: u64,
    leases: Vec<AdoptedLease>,
    write_enabler: Option<[u8; 32]>,
}

/// Record shares whose data is in whole: their holders, leases and enablers, in one accountant
/// transaction, and count them.
fn record(accountant: &Accountant, records: &mut Vec<Record>, imported: &mut Imported) -> Result<(), Error> {
    let adopted: Vec<AdoptedShare<'_>> = records
        .iter()
        .map(|r| AdoptedShare {
            share: r.share,
            account: AccountId::ANONYMOUS,
            size: r.size,
            leases: &r.leases,
            write_enabler: r.write_enabler.as_ref().map(|w| &w[..]),
            keep_raw: true,
        })
        .collect();
    accountant.adopt_shares(&adopted)?;
    for r in records.drain(..) {
        match r.share.kind {
            marsh_core::ShareKind::Immutable => imported.taken.0 += 1,
            marsh_core::ShareKind::Mutable => imported.taken.1 += 1,
        }
        imported.bytes += r.size;
        imported.leases += r.leases.len() as u64;
    }
    Ok(())
}

/// Take in one share file's data through the backend (unless it is there whole); what to
/// record about it.
async fn take_share(
    backend: &dyn Backend,
    accountant: &Accountant,
    si: StorageIndex,
    shnum: ShareNumber,
    path: &Path,
    size: u64,
) -> Result<Outcome, Error> {
    let (file, c) = match open_container(path, size) {
        Ok(x) => x,
        Err(why) => return Ok(Outcome::Problem(path.to_owned(), why)),
    };
    let mutable = c.kind == Kind::Mutable;
    let share = if mutable { ShareId::mutable(si, shnum) } else { ShareId::immutable(si, shnum) };
    // A share is recorded only once its data is in whole: one recorded is done (and may have
    // been written since, so it is never written again).
    if accountant.holder(&share)?.is_some() {
        return Ok(Outcome::Already);
    }
    if mutable && c.data_len == 0 {
        return Ok(Outcome::Problem(path.to_owned(), "an empty mutable share (no data to take in)".into()));
    }
    match copy_data(backend, &file, &c, si, shnum).await {
        Ok(()) => {}
        Err(CopyError::Read(e)) => return Ok(Outcome::Problem(path.to_owned(), format!("reading: {e}"))),
        Err(CopyError::Differs(n)) => {
            return Ok(Outcome::Problem(
                path.to_owned(),
                format!(
                    "the store holds an immutable share {si}/{} of {n} bytes already, not this one's {}",
                    shnum.0, c.data_len
                ),
            ));
        }
        Err(CopyError::Backend(e)) => {
            return Err(Error::Moving(format!("taking in {} ({si}/{}): the backend: {e}", path.display(), shnum.0)));
        }
    }
    let secrets = c.secrets();
    let leases: Vec<AdoptedLease> = c
        .leases
        .iter()
        .map(|l| {
            let (renew_hash, cancel_hash) = l.hashed(secrets);
            AdoptedLease { renew_hash, cancel_hash, expires: u64::from(l.expires) }
        })
        .collect();
    Ok(Outcome::Taken(Record { share, size: c.data_len, leases, write_enabler: c.write_enabler }))
}

enum CopyError {
    Read(std::io::Error),
    Differs(u64),
    Backend(marsh_core::BackendError),
}

/// Copy a container's data into the backend, in the backend's chunks. An immutable share that
/// is there already whole (an earlier run stopped between copying it and recording it) is left
/// as it is; one an earlier run left unfinished is begun again (`begin` discards it).
async fn copy_data(
    backend: &dyn Backend,
    file: &std::fs::File,
    c: &Container,
    si: StorageIndex,
    shnum: ShareNumber,
) -> Result<(), CopyError> {
    let chunk = backend.max_chunk().max(1) as u64;
    let (start, len) = c.data();
    let read = |offset: u64, n: u64| -> Result<Vec<u8>, CopyError> {
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, start + offset).map_err(CopyError::Read)?;
        Ok(buf)
    };
    if c.kind == Kind::Immutable {
        match backend.begin(&si, shnum, len).await {
            Ok(()) => {}
            Err(marsh_core::BackendError::Exists) => {
                return match backend.size(&si, shnum).await.map_err(CopyError::Backend)? {
                    Some(n) if n == len => Ok(()),
                    Some(n) => Err(CopyError::Differs(n)),
                    None => Err(CopyError::Backend(marsh_core::BackendError::Exists)),
                };
            }
            Err(e) => return Err(CopyError::Backend(e)),
        }
        // A few chunks in flight: the next is read while the last ones are written.
        let offsets = (0..len.div_ceil(chunk)).map(|i| i * chunk);
        let mut writes = futures::stream::iter(offsets)
            .map(|offset| {
                let data = read(offset, chunk.min(len - offset));
                async move { backend.write_owned(&si, shnum, offset, data?).await.map_err(CopyError::Backend) }
            })
            .buffer_unordered(CHUNKS_IN_FLIGHT);
        while let Some(written) = writes.next().await {
            written?;
        }
        drop(writes);
        return backend.finish(&si, shnum).await.map_err(CopyError::Backend);
    }
    // Whatever an earlier, longer copy left past the end is cut off by the last write.
    let there = backend.mutable_size(&si, shnum).await.map_err(CopyError::Backend)?;
    let mut offset = 0;
    while offset < len {
        let n = chunk.min(len - offset);
        let data = read(offset, n)?;
        let last = offset + n >= len;
        let new_length = (last && there.is_some_and(|t| t > len)).then_some(len);
        backend
            .mutable_write(&si, shnum, &[WriteVector { offset, data }], new_length)
            .await
            .map_err(CopyError::Backend)?;
        offset += n;
    }
    Ok(())
}

/// Take in the Tahoe node's corruption advisories (each once, however often this runs).
fn take_advisories(
    node: &Node,
    plan: &Plan,
    accountant: &Accountant,
    problems: &mut Vec<(PathBuf, String)>,
) -> Result<u64, Error> {
    let known: HashSet<(u64, ShareId, String)> =
        accountant.corruption_advisories()?.into_iter().map(|a| (a.at, a.share, a.reason)).collect();
    let limits = &node.config().requests;
    let mut taken = 0;
    for path in advisory_files(&plan.tahoe) {
        let Some(a) = marsh_tahoe::advisories::read(&path) else {
            problems.push((path, "not a corruption advisory Tahoe wrote".into()));
            continue;
        };
        let share = if a.mutable {
            ShareId::mutable(a.si, ShareNumber(a.shnum))
        } else {
            ShareId::immutable(a.si, ShareNumber(a.shnum))
        };
        if known.contains(&(a.at, share, a.reason.clone())) {
            continue;
        }
        if accountant.record_corruption(
            a.at,
            &share,
            &a.reason,
            u64::from(limits.advisories_per_share),
            u64::from(limits.advisories),
        )? {
            taken += 1;
        } else {
            problems.push((path, "past storage.advisories-per-share or storage.advisories: not kept".into()));
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tub_ports_and_locations_as_tahoe_writes_them() {
        assert_eq!(listeners_of("tcp:3457:interface=127.0.0.1"), ["127.0.0.1:3457".parse().unwrap()]);
        assert_eq!(listeners_of("tcp:3457"), ["0.0.0.0:3457".parse().unwrap()]);
        assert_eq!(
            listeners_of("tcp:port=3457:interface=\\:\\:1,tcp:interface=10.0.0.1:port=4000"),
            ["10.0.0.1:4000".parse::<SocketAddr>().unwrap()],
            "an escaped IPv6 interface is not taken; the second endpoint is"
        );
        assert!(listeners_of("disabled").is_empty());
        assert!(listeners_of("unix:/run/x").is_empty());
        assert_eq!(hints_of("tcp:storage.example.org:3457"), [("storage.example.org".to_owned(), 3457)]);
        assert_eq!(
            hints_of("AUTO,tcp:10.0.0.1:3457,storage.example.org:80,tor:abc.onion:3457,i2p:x.i2p"),
            [("10.0.0.1".to_owned(), 3457), ("storage.example.org".to_owned(), 80), ("abc.onion".to_owned(), 3457)]
        );
        assert!(hints_of("").is_empty());
        assert!(hints_of("tcp:host:notaport").is_empty());
    }

    #[test]
    fn settings_without_a_marsh_counterpart_are_named() {
        let cfg = cfg::TahoeCfg::parse(
            "[node]\nnickname = n\nweb.port = tcp:3456\nlog_gatherer.furl = pb://x@y/z\n[client]\nshares.needed = 3\n\
             [storage]\nenabled = true\nanonymous = false\nreserved_space = 1G\n[tor]\nlaunch = true\n",
        );
        let names: Vec<String> = unmapped(&cfg).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "[node] log_gatherer.furl = pb://x@y/z",
                "[node] web.port = tcp:3456",
                "[storage] anonymous = false",
                "[tor] launch = true"
            ]
        );
    }
}

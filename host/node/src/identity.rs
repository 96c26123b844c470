//! Identity: everything `marsh init` creates once and nothing ever creates again: the TLS key
//! and self-signed certificate (their SPKI hash pins the node in its NURL), the anonymous
//! swissnum, the sealing key, the Foolscap-style tub id (the 1.20 client derives lease and
//! write-enabler secrets from it), the ed25519 signing key whose public key is the server id
//! ([`NodeKey`]), and the permutation seed (share placement).
//!
//! A node adopted from a Tahoe-LAFS storage node ([`NodeDir::adopt`]) keeps that node's
//! identity instead: its TLS certificate and key (RSA, X.509 v1), so the NURL its clients hold
//! still pins it; its swissnum, tub id (its clients derived their lease secrets and write
//! enablers from it), signing key and permutation seed. Only the sealing key is new.
//!
//! A node created before marsh had signing keys has a random server id and no key; `marsh
//! upgrade` ([`NodeDir::add_signing_key`]) gives it one. Its server id then becomes the key's,
//! and everything else (NURLs, shares, accounts, permutation seed) stays.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use data_encoding::BASE32_NOPAD;
use marsh_seal::SealKey;

use crate::signing::NodeKey;
use crate::{NodeDir, NodeError, config, io_error};

/// The signing key's file under `private/`.
const NODE_KEY: &str = "node.privkey";

/// What `marsh init` is told.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Where the node listens.
    pub listen: SocketAddr,
    /// Host clients connect to (default: the listen address).
    pub public_host: Option<String>,
    /// Port clients connect to (default: the listen port).
    pub public_port: Option<u16>,
    /// Shown to clients.
    pub nickname: String,
    /// Where the default `dir` store keeps shares (default: `NODE_DIR-shares` beside the node).
    pub storage_dir: Option<PathBuf>,
    /// `web.listen`, if not the default (empty: off).
    pub web_listen: Option<String>,
    /// Further config keys set as the node is made, each checked as `marsh config set`
    /// checks it (`marsh adopt` carries a Tahoe node's settings over so).
    pub settings: Vec<(String, String)>,
}

/// A storage server's identity taken over from another implementation (a Tahoe-LAFS node),
/// kept as it was.
#[derive(Clone)]
pub struct AdoptedIdentity {
    /// The TLS certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// The tub id (base32 SHA-1 of the certificate, for Foolscap's nodes).
    pub tub_id: String,
    /// The anonymous swissnum.
    pub swissnum: String,
    /// The signing key, `priv-v0-BASE32`.
    pub node_key: String,
    /// The permutation seed, base32, kept as it was announced.
    pub permutation_seed: String,
}

impl std::fmt::Debug for AdoptedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdoptedIdentity").field("tub_id", &self.tub_id).finish_non_exhaustive()
    }
}

/// The pieces of identity a new node directory is written with.
struct Pieces {
    key_pem: String,
    cert_pem: String,
    swissnum: String,
    tub_id: String,
    node_key: NodeKey,
    permutation_seed: String,
}

/// DER as one PEM block.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// The node's identity, as `marsh run` and `marsh announce` use it.
#[derive(Clone)]
pub struct Identity {
    /// 32 lowercase base32 characters (20 bytes).
    pub tub_id: String,
    /// `v0-` and 52 lowercase base32 characters: the signing key's public key (or, on a node
    /// made before signing keys, 32 random bytes).
    pub server_id: String,
    /// The ed25519 signing key (none on a node made before signing keys: `marsh upgrade`).
    pub signing_key: Option<NodeKey>,
    /// Base32 permutation seed.
    pub permutation_seed: String,
    /// The anonymous account's swissnum.
    pub swissnum: String,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo, base64url without padding.
    pub spki_hash: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The sealing key.
    pub seal_key: SealKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("server_id", &self.server_id)
            .field("spki_hash", &self.spki_hash)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The NURL clients use: `pb://<spki>@<host>:<port>/<swissnum>#v=1`.
    pub fn nurl(&self, host: &str, port: u16) -> String {
        // An onion service is reached through Tor: the 1.20 client takes `pb+tor://` for that,
        // as the Python node announces for a `tor:` location hint.
        let scheme = if host.to_ascii_lowercase().ends_with(".onion") { "pb+tor" } else { "pb" };
        format!("{scheme}://{}@{}:{}/{}#v=1", self.spki_hash, host, port, self.swissnum)
    }

    /// The placeholder fURL the 1.20 client requires beside the NURLs; only its tub id is used.
    pub fn furl(&self) -> String {
        format!("pb://{}@tcp:127.0.0.1:1/{}", self.tub_id, self.swissnum)
    }
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N], NodeError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b)?;
    Ok(b)
}

fn base32(bytes: &[u8]) -> String {
    BASE32_NOPAD.encode(bytes).to_ascii_lowercase()
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), NodeError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| io_error(path, e))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(|e| io_error(path, e))
}

/// Decode the first PEM block of a file.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    data_encoding::BASE64.decode(body.trim().as_bytes()).ok()
}

impl NodeDir {
    /// Create a node: every piece of identity and the initial config, at once. Refuses an
    /// existing node.
    pub fn init(root: &Path, options: &InitOptions) -> Result<NodeDir, NodeError> {
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["marsh".to_owned()])?;
        let cert = params.self_signed(&key)?;
        let node_key = NodeKey::generate()?;
        let pieces = Pieces {
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            swissnum: base32(&random::<20>()?),
            tub_id: base32(&random::<20>()?),
            permutation_seed: node_key.permutation_seed(),
            node_key,
        };
        NodeDir::create(root, options, pieces)
    }

    /// Create a node that takes over another storage server's identity (`marsh adopt`): its
    /// certificate and key, swissnum, tub id, signing key and permutation seed, so the NURL,
    /// the server id and share placement its clients know stay the same. The sealing key is
    /// new. Refuses an existing node, and pieces that are not what they claim (a signing key
    /// that does not parse, a tub id or seed that is not base32).
    pub fn adopt(root: &Path, options: &InitOptions, adopted: &AdoptedIdentity) -> Result<NodeDir, NodeError> {
        let base32ish = |what: &str, v: &str| {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)) {
                return Err(NodeError::Identity(format!("the adopted {what} `{v}` is not lowercase base32")));
            }
            Ok(())
        };
        base32ish("tub id", &adopted.tub_id)?;
        base32ish("permutation seed", &adopted.permutation_seed)?;
        base32ish("swissnum", &adopted.swissnum)?;
        let pieces = Pieces {
            key_pem: pem("PRIVATE KEY", &adopted.key_pkcs8),
            cert_pem: pem("CERTIFICATE", &adopted.cert_der),
            swissnum: adopted.swissnum.clone(),
            tub_id: adopted.tub_id.clone(),
            node_key: NodeKey::parse(&adopted.node_key)?,
            permutation_seed: adopted.permutation_seed.clone(),
        };
        NodeDir::create(root, options, pieces)
    }

    fn create(root: &Path, options: &InitOptions, pieces: Pieces) -> Result<NodeDir, NodeError> {
        let root = std::path::absolute(root).map_err(|e| io_error(root, e))?;
        let dir = NodeDir { root };
        if dir.db_path().exists() || dir.private().exists() {
            return Err(NodeError::Exists(dir.root.display().to_string()));
        }
        // Further settings are checked before anything is written.
        {
            let conn = rusqlite::Connection::open_in_memory()?;
            conn.execute_batch("CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);")?;
            for (k, v) in &options.settings {
                config::set(&conn, k, v)?;
            }
        }
        std::fs::create_dir_all(&dir.root).map_err(|e| io_error(&dir.root, e))?;
        std::fs::create_dir(dir.private()).map_err(|e| io_error(&dir.private(), e))?;
        std::fs::set_permissions(dir.private(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| io_error(&dir.private(), e))?;

        let Pieces { key_pem, cert_pem, swissnum, tub_id, node_key, permutation_seed } = pieces;
        write_private(&dir.private().join("tls.key"), key_pem.as_bytes())?;
        write_private(&dir.private().join("tls.crt"), cert_pem.as_bytes())?;
        SealKey::create_file(&dir.private().join("seal.key"))?;
        write_private(&dir.private().join("swissnum"), swissnum.as_bytes())?;
        write_private(&dir.private().join(NODE_KEY), format!("{}\n", node_key.encode()).as_bytes())?;
        let storage = match &options.storage_dir {
            Some(p) => std::path::absolute(p).map_err(|e| io_error(p, e))?,
            None => {
                let name =
                    dir.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "node".into());
                dir.root.with_file_name(format!("{name}-shares"))
            }
        };
        // Write the database beside its final name and rename it last: a node exists once
        // `node.sqlite` does, complete.
        let tmp = dir.root.join("node.sqlite.init");
        let _ = std::fs::remove_file(&tmp);
        {
            let conn = rusqlite::Connection::open(&tmp)?;
            conn.execute_batch(
                "CREATE TABLE identity (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
            )?;
            for (k, v) in
                [("tub-id", tub_id), ("server-id", node_key.server_id()), ("permutation-seed", permutation_seed)]
            {
                conn.execute("INSERT INTO identity (key, value) VALUES (?1, ?2)", [k, v.as_str()])?;
            }
            let mut settings = vec![
                ("node.listen".to_owned(), options.listen.to_string()),
                ("node.nickname".to_owned(), options.nickname.clone()),
                ("store.shares".to_owned(), format!("dir:{}", storage.display())),
            ];
            if let Some(h) = &options.public_host {
                settings.push(("node.public-host".into(), h.clone()));
            }
            if let Some(p) = options.public_port {
                settings.push(("node.public-port".into(), p.to_string()));
            }
            if let Some(w) = &options.web_listen {
                settings.push(("web.listen".into(), w.clone()));
            }
            settings.extend(options.settings.iter().cloned());
            for (k, v) in settings {
                config::set(&conn, &k, &v)?;
            }
        }
        std::fs::rename(&tmp, dir.db_path()).map_err(|e| io_error(&dir.db_path(), e))?;
        Ok(dir)
    }

    /// Give a node made before signing keys one: `Some((old server id, new server id))`, or
    /// `None` when it has one already. The key file appears whole or not at all; the server id
    /// follows from it, and the NURLs, permutation seed and everything else stay.
    pub fn add_signing_key(&self) -> Result<Option<(String, String)>, NodeError> {
        let path = self.private().join(NODE_KEY);
        if path.exists() {
            return Ok(None);
        }
        let old = load(self)?.server_id;
        let key = NodeKey::generate()?;
        let tmp = self.private().join(format!("{NODE_KEY}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, format!("{}\n", key.encode()).as_bytes())?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
        std::fs::File::open(self.private()).and_then(|d| d.sync_all()).map_err(|e| io_error(&self.private(), e))?;
        let conn = rusqlite::Connection::open(self.db_path())?;
        conn.execute("UPDATE identity SET value = ?1 WHERE key = 'server-id'", [key.server_id()])?;
        Ok(Some((old, key.server_id())))
    }
}

pub(crate) fn load(dir: &NodeDir) -> Result<Identity, NodeError> {
    let conn = dir.read_only()?;
    let get = |k: &str| -> Result<String, NodeError> {
        Ok(conn.query_row("SELECT value FROM identity WHERE key = ?1", [k], |r| r.get(0))?)
    };
    let read = |name: &str| -> Result<String, NodeError> {
        let p = dir.private().join(name);
        std::fs::read_to_string(&p).map_err(|e| io_error(&p, e))
    };
    // The key as it is kept (PKCS#8), and the NURL's pin from the certificate's public key:
    // whatever made them (marsh's ECDSA, or an adopted Tahoe node's RSA).
    let key_der =
        pem_to_der(&read("tls.key")?).ok_or_else(|| NodeError::Identity("private/tls.key is not PEM".into()))?;
    let cert_der =
        pem_to_der(&read("tls.crt")?).ok_or_else(|| NodeError::Identity("private/tls.crt is not PEM".into()))?;
    let spki_hash = marsh_foolscap::tls::spki_hash(&cert_der)
        .ok_or_else(|| NodeError::Identity("private/tls.crt: the certificate does not parse".into()))?;
    let seal_key = SealKey::load_file(&dir.private().join("seal.key"))?;
    // The key, when there is one, is the server id; the stored one is a legacy node's.
    let key_path = dir.private().join(NODE_KEY);
    let signing_key = match std::fs::read_to_string(&key_path) {
        Ok(text) => Some(NodeKey::parse(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&key_path, e)),
    };
    Ok(Identity {
        tub_id: get("tub-id")?,
        server_id: match &signing_key {
            Some(key) => key.server_id(),
            None => get("server-id")?,
        },
        signing_key,
        permutation_seed: get("permutation-seed")?,
        swissnum: read("swissnum")?.trim().to_owned(),
        spki_hash,
        cert_der,
        key_der,
        seal_key,
    })
}

//! Identity: everything `marsh init` creates once and nothing ever creates again: the TLS key
//! and self-signed certificate (their SPKI hash pins the node in its NURL), the anonymous
//! swissnum, the sealing key, the Foolscap-style tub id (the 1.20 client derives lease and
//! write-enabler secrets from it), the ed25519 signing key whose public key is the server id
//! ([`NodeKey`]), and the permutation seed (share placement).
//!
//! A node created before marsh had signing keys has a random server id and no key; `marsh
//! upgrade` ([`NodeDir::add_signing_key`]) gives it one. Its server id then becomes the key's,
//! and everything else (NURLs, shares, accounts, permutation seed) stays.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use marsh_seal::SealKey;
use sha2::{Digest, Sha256};

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

fn spki_hash(spki_der: &[u8]) -> String {
    BASE64URL_NOPAD.encode(&Sha256::digest(spki_der))
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
        let root = std::path::absolute(root).map_err(|e| io_error(root, e))?;
        let dir = NodeDir { root };
        if dir.db_path().exists() || dir.private().exists() {
            return Err(NodeError::Exists(dir.root.display().to_string()));
        }
        std::fs::create_dir_all(&dir.root).map_err(|e| io_error(&dir.root, e))?;
        std::fs::create_dir(dir.private()).map_err(|e| io_error(&dir.private(), e))?;
        std::fs::set_permissions(dir.private(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| io_error(&dir.private(), e))?;

        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["marsh".to_owned()])?;
        let cert = params.self_signed(&key)?;
        write_private(&dir.private().join("tls.key"), key.serialize_pem().as_bytes())?;
        write_private(&dir.private().join("tls.crt"), cert.pem().as_bytes())?;
        SealKey::create_file(&dir.private().join("seal.key"))?;
        write_private(&dir.private().join("swissnum"), base32(&random::<20>()?).as_bytes())?;

        let tub_id = base32(&random::<20>()?);
        let node_key = NodeKey::generate()?;
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
            for (k, v) in [
                ("tub-id", tub_id.clone()),
                ("server-id", node_key.server_id()),
                ("permutation-seed", node_key.permutation_seed()),
            ] {
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
    let key_pem = read("tls.key")?;
    let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| NodeError::Identity(format!("private/tls.key: {e}")))?;
    let cert_der =
        pem_to_der(&read("tls.crt")?).ok_or_else(|| NodeError::Identity("private/tls.crt is not PEM".into()))?;
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
        spki_hash: spki_hash(&key.public_key_der()),
        cert_der,
        key_der: key.serialize_der(),
        seal_key,
    })
}

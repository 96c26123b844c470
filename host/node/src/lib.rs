//! A marsh node's directory (the low-rate state): identity created once by `marsh init`,
//! typed configuration in `node.sqlite` changed only by `marsh config`, and the announcement
//! a Tahoe client needs.
//!
//! Layout of `NODE_DIR`:
//! - `node.sqlite`: tables `identity` (tub id, server id) and `config` (typed keys, see
//!   [`config::KEYS`]);
//! - `private/`: `tls.key` and `tls.crt` (PEM), `seal.key` (32 raw bytes), `swissnum`,
//!   `node.privkey` (the ed25519 signing key, as Tahoe writes it: [`signing`]);
//! - `cache/`: everything a running node writes (compiled plugins, the lease database). It is
//!   disposable: losing it may need `marsh recover`, never loses shares.
//!
//! The node also claims the blob stores it uses ([`owner`]), so two nodes never share one.
//!
//! Architecture invariant: only [`NodeDir::init`] creates identity, and it refuses to touch an
//! existing node (the one addition later is [`NodeDir::add_signing_key`], for a node made
//! before signing keys, by `marsh upgrade`); [`NodeDir::open`] opens `node.sqlite` read-only, so a running node writes
//! nothing outside `cache/`.

pub mod announcement;
pub mod config;
mod identity;
pub mod kinds;
pub mod owner;
mod settings;
pub mod signing;

use std::path::{Path, PathBuf};

pub use config::{ConfigError, Setting};
pub use identity::{AdoptedIdentity, Identity, InitOptions};
pub use kinds::{ListenOn, PluginChoice};
pub use settings::{
    AccountingSettings, BackendSettings, CapacitySettings, ExpireMode, ExpireSettings, Limits, NodeConfig,
    PersistenceSettings, RequestLimits, StoreSpec,
};
pub use signing::NodeKey;

/// What `marsh run` prints on its standard output, followed by a space and the NURL, once it
/// serves: the one line a supervisor, a script or a test waits for.
pub const SERVING: &str = "marsh: serving";

/// Why the node directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// `init` found an existing node.
    #[error("{0} already holds a marsh node (node.sqlite exists); refusing to overwrite its identity")]
    Exists(String),
    /// No node there.
    #[error("{0} is not a marsh node directory (no node.sqlite); create one with `marsh init --dir {0}`")]
    Missing(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("node.sqlite: {0}")]
    Db(#[from] rusqlite::Error),
    /// The system's random source failed.
    #[error("identity: no randomness: {0}")]
    Random(#[from] getrandom::Error),
    /// Making or reading the TLS key and certificate failed.
    #[error("identity: the TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The sealing key file could not be made or read.
    #[error("identity: {0}")]
    SealKey(#[from] marsh_seal::KeyFileError),
    /// An identity file does not hold what it should.
    #[error("identity: {0}")]
    Identity(String),
    /// A config problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub(crate) fn io_error(path: &Path, e: std::io::Error) -> NodeError {
    NodeError::Io { path: path.display().to_string(), source: e }
}

/// The mark of the process serving a node ([`NodeDir::try_serving`]); released when dropped.
#[derive(Debug)]
pub struct Serving {
    _lock: std::fs::File,
}

/// A node directory.
#[derive(Debug, Clone)]
pub struct NodeDir {
    root: PathBuf,
}

/// `cache/adopting`: an adoption has not finished (it holds the command that finishes it).
const ADOPTING: &str = "adopting";
/// `cache/adopted`: an adoption finished (from where, and when).
const ADOPTED: &str = "adopted";

impl NodeDir {
    /// The directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `node.sqlite`.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("node.sqlite")
    }

    /// `private/`.
    pub fn private(&self) -> PathBuf {
        self.root.join("private")
    }

    /// `cache/`, created on demand by a running node.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The accounting database, `cache/accountant.sqlite`.
    pub fn accountant_path(&self) -> PathBuf {
        self.cache().join("accountant.sqlite")
    }

    /// `cache/`, created if missing (by a command about to write there).
    pub fn ensure_cache(&self) -> Result<PathBuf, NodeError> {
        let cache = self.cache();
        std::fs::create_dir_all(&cache).map_err(|e| io_error(&cache, e))?;
        Ok(cache)
    }

    /// Where an adoption (`marsh adopt`) is in progress: the command that finishes it, while
    /// `cache/adopting` says one has not finished (the node must not serve until it has).
    pub fn adoption_unfinished(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.cache().join(ADOPTING)).ok()?;
        Some(text.trim().to_owned())
    }

    /// Whether an adoption finished here (`cache/adopted`): from where and when.
    pub fn adopted(&self) -> Option<String> {
        std::fs::read_to_string(self.cache().join(ADOPTED)).ok().map(|t| t.trim().to_owned())
    }

    /// Mark an adoption begun, with the command that finishes it.
    pub fn mark_adopting(&self, command: &str) -> Result<(), NodeError> {
        let path = self.ensure_cache()?.join(ADOPTING);
        std::fs::write(&path, format!("{command}\n")).map_err(|e| io_error(&path, e))
    }

    /// Mark the adoption finished: `note` says from where and when.
    pub fn mark_adopted(&self, note: &str) -> Result<(), NodeError> {
        let done = self.ensure_cache()?.join(ADOPTED);
        std::fs::write(&done, format!("{note}\n")).map_err(|e| io_error(&done, e))?;
        let marker = self.cache().join(ADOPTING);
        std::fs::remove_file(&marker).map_err(|e| io_error(&marker, e))
    }

    /// Mark this process as the one serving the node, for as long as the value lives: an
    /// exclusive lock on `cache/serving.lock`, which the kernel drops when the process ends,
    /// however it ends. `None` when another process (or another value in this one) holds it:
    /// the node is being served.
    pub fn try_serving(&self) -> Result<Option<Serving>, NodeError> {
        let path = self.ensure_cache()?.join("serving.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Serving { _lock: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(&path, e)),
        }
    }

    /// The whole configuration, typed (read-only, one read).
    pub fn config(&self) -> Result<NodeConfig, NodeError> {
        Ok(NodeConfig::from_settings(&config::list_unmasked(&self.read_only()?)?)?)
    }

    /// Open an existing node.
    pub fn open(root: &Path) -> Result<NodeDir, NodeError> {
        let root = std::path::absolute(root).map_err(|e| io_error(root, e))?;
        let dir = NodeDir { root };
        if !dir.db_path().exists() {
            return Err(NodeError::Missing(dir.root.display().to_string()));
        }
        Ok(dir)
    }

    fn read_only(&self) -> Result<rusqlite::Connection, NodeError> {
        Ok(rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?)
    }

    fn read_write(&self) -> Result<rusqlite::Connection, NodeError> {
        Ok(rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?)
    }

    /// The node's identity (read-only).
    pub fn identity(&self) -> Result<Identity, NodeError> {
        identity::load(self)
    }

    /// Every setting, with defaults (read-only).
    pub fn settings(&self) -> Result<Vec<Setting>, NodeError> {
        Ok(config::list(&self.read_only()?)?)
    }

    /// One setting's effective value (read-only).
    pub fn get(&self, key: &str) -> Result<String, NodeError> {
        Ok(config::get(&self.read_only()?, key)?)
    }

    /// Change a setting (`marsh config set`).
    pub fn set(&self, key: &str, value: &str) -> Result<String, NodeError> {
        Ok(config::set(&self.read_write()?, key, value)?)
    }

    /// Reset a setting to its default (`marsh config unset`).
    pub fn unset(&self, key: &str) -> Result<(), NodeError> {
        Ok(config::unset(&self.read_write()?, key)?)
    }

    /// Settings under a prefix, e.g. `backend.config.` (read-only).
    pub fn with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, NodeError> {
        Ok(config::with_prefix(&self.read_only()?, prefix)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> InitOptions {
        InitOptions {
            listen: "127.0.0.1:3457".parse().unwrap(),
            public_host: Some("storage.example.org".into()),
            public_port: None,
            nickname: "n1".into(),
            storage_dir: None,
            web_listen: None,
            settings: Vec::new(),
        }
    }

    #[test]
    fn an_adopted_identity_is_kept_as_it_was_and_its_settings_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["elsewhere".to_owned()]).unwrap().self_signed(&key).unwrap();
        let node_key = NodeKey::generate().unwrap();
        let adopted = AdoptedIdentity {
            cert_der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
            tub_id: "abcdefghijklmnopqrstuvwxyz234567".into(),
            swissnum: "swissnumswissnumswissnumswissnum".into(),
            node_key: node_key.encode(),
            permutation_seed: "seedseedseed".into(),
        };
        let settings = vec![("storage.keep-write-enablers".to_owned(), "true".to_owned())];
        let root = tmp.path().join("adopted");
        let node = NodeDir::adopt(&root, &InitOptions { settings, ..options() }, &adopted).unwrap();
        let id = node.identity().unwrap();
        assert_eq!((id.tub_id.as_str(), id.swissnum.as_str()), (adopted.tub_id.as_str(), adopted.swissnum.as_str()));
        assert_eq!((id.permutation_seed.as_str(), id.server_id.clone()), ("seedseedseed", node_key.server_id()));
        assert_eq!((&id.cert_der, &id.key_der), (&adopted.cert_der, &adopted.key_pkcs8), "kept byte for byte");
        assert_eq!(
            Some(id.spki_hash.clone()),
            marsh_gbs_client::spki_hash(&adopted.cert_der),
            "the NURL pins the same key"
        );
        assert_eq!(node.get("storage.keep-write-enablers").unwrap(), "true");
        assert!(matches!(NodeDir::adopt(&root, &options(), &adopted), Err(NodeError::Exists(_))));
        // Pieces that are not what they claim, and settings that do not check, make no node.
        for bad in [
            AdoptedIdentity { tub_id: "NOT BASE32".into(), ..adopted.clone() },
            AdoptedIdentity { node_key: "priv-v0-short".into(), ..adopted.clone() },
        ] {
            let at = tmp.path().join("bad");
            assert!(NodeDir::adopt(&at, &options(), &bad).is_err());
            assert!(!at.join("node.sqlite").exists());
        }
        let wrong = InitOptions { settings: vec![("storage.readonly".into(), "perhaps".into())], ..options() };
        let at = tmp.path().join("bad-setting");
        assert!(NodeDir::adopt(&at, &wrong, &adopted).is_err());
        assert!(!at.join("node.sqlite").exists(), "a node exists complete or not at all");
    }

    #[test]
    fn init_creates_all_identity_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("node");
        let node = NodeDir::init(&root, &options()).unwrap();
        let id = node.identity().unwrap();
        assert_eq!(id.tub_id.len(), 32);
        assert!(id.server_id.starts_with("v0-") && id.server_id.len() == 55, "{}", id.server_id);
        assert_eq!(id.swissnum.len(), 32);
        assert_eq!(id.spki_hash.len(), 43);
        assert_eq!(
            marsh_gbs_client::spki_hash(&id.cert_der).as_deref(),
            Some(id.spki_hash.as_str()),
            "the pin matches the certificate"
        );
        assert_eq!(
            id.nurl("storage.example.org", 3457),
            format!("pb://{}@storage.example.org:3457/{}#v=1", id.spki_hash, id.swissnum)
        );
        let onion = "ztpsxvlzwhsqmtqmqyfqfvwndmgz3ahlfvzs3hwkquqzmmrjjpgb7lyd.onion";
        assert_eq!(id.nurl(onion, 80), format!("pb+tor://{}@{onion}:80/{}#v=1", id.spki_hash, id.swissnum));
        assert!(id.furl().starts_with(&format!("pb://{}@", id.tub_id)));
        assert_eq!(node.get("store.shares").unwrap(), format!("dir:{}", tmp.path().join("node-shares").display()));
        assert_eq!(node.get("node.public-host").unwrap(), "storage.example.org");
        // The server id is the signing key's, as Tahoe's is; so is a new node's permutation seed.
        let key = id.signing_key.as_ref().expect("a new node has a signing key");
        assert_eq!(key.server_id(), id.server_id);
        assert_eq!(id.permutation_seed, key.permutation_seed());
        assert!(signing::verify(&id.server_id, &key.sign(b"announcement"), b"announcement"));
        // A second init refuses, and the identity is unchanged.
        assert!(matches!(NodeDir::init(&root, &options()), Err(NodeError::Exists(_))));
        let again = NodeDir::open(&root).unwrap().identity().unwrap();
        assert_eq!((again.tub_id, again.swissnum, again.spki_hash), (id.tub_id, id.swissnum, id.spki_hash));
        assert_eq!(again.server_id, id.server_id);
        assert_eq!(node.add_signing_key().unwrap(), None, "it has one");
    }

    #[test]
    fn a_node_made_before_signing_keys_gets_one_and_keeps_everything_else() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("node");
        let node = NodeDir::init(&root, &options()).unwrap();
        // As the previous release left a node: a random server id and seed, no key file.
        let legacy = "v0-aaaabbbbccccddddeeeeffffgggghhhhiiiijjjjkkkkllllmmmm";
        std::fs::remove_file(node.private().join("node.privkey")).unwrap();
        let conn = rusqlite::Connection::open(node.root().join("node.sqlite")).unwrap();
        conn.execute("UPDATE identity SET value = ?1 WHERE key = 'server-id'", [legacy]).unwrap();
        conn.execute("UPDATE identity SET value = 'legacyseed' WHERE key = 'permutation-seed'", []).unwrap();
        drop(conn);
        let before = node.identity().unwrap();
        assert_eq!((before.server_id.as_str(), before.signing_key.is_none()), (legacy, true));

        let (old, new) = node.add_signing_key().unwrap().expect("added");
        assert_eq!(old, legacy);
        let after = NodeDir::open(&root).unwrap().identity().unwrap();
        assert_eq!(after.server_id, new);
        assert_eq!(after.signing_key.as_ref().unwrap().server_id(), new);
        assert_eq!(after.permutation_seed, "legacyseed", "shares stay where clients look for them");
        assert_eq!(after.nurl("h", 1), before.nurl("h", 1), "the NURL is unchanged");
        assert_eq!(after.tub_id, before.tub_id);
        assert_eq!(node.add_signing_key().unwrap(), None, "once");
        // A damaged key file is an error, never a silent new identity.
        std::fs::write(node.private().join("node.privkey"), "priv-v0-short\n").unwrap();
        assert!(matches!(node.identity(), Err(NodeError::Identity(_))));
    }

    #[test]
    fn reading_a_node_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let node = NodeDir::init(&tmp.path().join("node"), &options()).unwrap();
        let snapshot = || {
            let mut files: Vec<(String, Vec<u8>)> = Vec::new();
            for entry in std::fs::read_dir(node.root()).unwrap().chain(std::fs::read_dir(node.private()).unwrap()) {
                let p = entry.unwrap().path();
                if p.is_file() {
                    files.push((p.display().to_string(), std::fs::read(&p).unwrap()));
                }
            }
            files.sort();
            files
        };
        let before = snapshot();
        node.identity().unwrap();
        node.settings().unwrap();
        node.get("limits.memory").unwrap();
        assert_eq!(snapshot(), before);
        node.set("storage.reserved-space", "2G").unwrap();
        assert_ne!(snapshot(), before, "config changes do write");
        assert!(matches!(NodeDir::open(&tmp.path().join("missing")), Err(NodeError::Missing(_))));
    }
}

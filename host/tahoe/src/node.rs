//! A Tahoe-LAFS 1.20 node directory, as its storage server's identity and settings: the
//! ed25519 signing key (`private/node.privkey`: the server id), the TLS certificate and key
//! (`private/node.pem`: the tub id is the base32 SHA-1 of the certificate, and a NURL pins the
//! SHA-256 of its public key), the swissnum (`private/storage.furl`, whose tub id must be the
//! certificate's), the permutation seed (`permutation-seed`, kept byte for byte), `tahoe.cfg`,
//! the introducers, the grid-manager certificates, and where the shares are.
//!
//! And whether a Tahoe node runs there now: `tahoe run` keeps `running.process` (`PID
//! START_TIME`) while it runs and removes it when it stops; a file whose process is gone is
//! left by a crash.

use std::path::{Path, PathBuf};

use crate::cfg::{self, TahoeCfg};

/// Why a directory is not a Tahoe storage node this can read.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file does not hold what a Tahoe node keeps there.
    #[error("{path}: {why}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `tahoe run` is serving the directory.
    #[error(
        "a Tahoe node is running in {dir} (process {pid}, running.process): stop it first (`kill {pid}`, or `systemctl stop` its service)"
    )]
    Running {
        /// The node directory.
        dir: PathBuf,
        /// Its process.
        pid: u32,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io { path: path.to_owned(), source }
}

fn bad(path: &Path, why: impl Into<String>) -> NodeError {
    NodeError::Bad { path: path.to_owned(), why: why.into() }
}

/// A node's identity, as a storage server presents it.
#[derive(Clone)]
pub struct Identity {
    /// The TLS certificate, DER (an X.509 v1 certificate of an RSA key, as Foolscap makes it).
    pub cert_der: Vec<u8>,
    /// Its private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// The tub id: base32 SHA-1 of the certificate.
    pub tub_id: String,
    /// The anonymous storage swissnum (the name in `storage.furl`).
    pub swissnum: String,
    /// `private/node.privkey` as written (`priv-v0-...`).
    pub node_key: String,
    /// `permutation-seed`, trimmed, as announced.
    pub permutation_seed: String,
    /// The location hints of `storage.furl` (`tcp:HOST:PORT`, ...).
    pub hints: Vec<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("tub_id", &self.tub_id).finish_non_exhaustive()
    }
}

/// A Tahoe node directory, read.
#[derive(Debug, Clone)]
pub struct TahoeNode {
    /// The node directory.
    pub dir: PathBuf,
    /// Its `tahoe.cfg`.
    pub cfg: TahoeCfg,
    /// Where its storage server keeps shares and advisories (`[storage] storage_dir`).
    pub storage_dir: PathBuf,
}

/// The PEM blocks of a file: `(label, DER)`.
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            current = Some((label.to_owned(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some((label, body)) = current.take()
                && let Ok(der) = data_encoding::BASE64.decode(body.as_bytes())
            {
                out.push((label, der));
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
        }
    }
    out
}

/// A DER length.
fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

/// A PKCS#1 RSA private key wrapped as PKCS#8 (`PrivateKeyInfo`, algorithm rsaEncryption with
/// NULL parameters), as an older Foolscap may have written `BEGIN RSA PRIVATE KEY`.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    // version 0, AlgorithmIdentifier { rsaEncryption, NULL }
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend([0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00]);
    body.push(0x04);
    body.extend(der_len(pkcs1.len()));
    body.extend(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}

fn read_text(path: &Path, limit: u64) -> Result<String, NodeError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text).map_err(io(path))?;
    if text.len() as u64 > limit {
        return Err(bad(path, format!("larger than the {limit} bytes a Tahoe node writes there")));
    }
    Ok(text)
}

impl TahoeNode {
    /// Read the node directory `dir`: its `tahoe.cfg` and where its shares are.
    pub fn open(dir: &Path) -> Result<TahoeNode, NodeError> {
        let cfg_path = dir.join("tahoe.cfg");
        let cfg = TahoeCfg::parse(&read_text(&cfg_path, 1 << 20)?);
        if cfg.boolean("storage", "enabled").map_err(|e| bad(&cfg_path, e))? == Some(false) {
            return Err(bad(&cfg_path, "[storage] enabled = false: not a storage node"));
        }
        let storage = cfg.get("storage", "storage_dir").filter(|s| !s.is_empty()).unwrap_or("storage");
        let storage_dir = match storage.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
            None => dir.join(storage),
        };
        Ok(TahoeNode { dir: dir.to_owned(), cfg, storage_dir })
    }

    /// The process serving the directory now (`running.process` naming a live process), if any.
    pub fn running(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("running.process")).ok()?;
        let pid: u32 = text.split_whitespace().next()?.parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Refuse with [`NodeError::Running`] while a Tahoe node serves the directory.
    pub fn not_running(&self) -> Result<(), NodeError> {
        match self.running() {
            Some(pid) => Err(NodeError::Running { dir: self.dir.clone(), pid }),
            None => Ok(()),
        }
    }

    /// The identity of its storage server.
    pub fn identity(&self) -> Result<Identity, NodeError> {
        let private = self.dir.join("private");
        let pem_path = private.join("node.pem");
        let blocks = pem_blocks(&read_text(&pem_path, 64 << 10)?);
        let cert_der = blocks
            .iter()
            .find(|(label, _)| label == "CERTIFICATE")
            .map(|(_, der)| der.clone())
            .ok_or_else(|| bad(&pem_path, "no certificate"))?;
        let key_pkcs8 = match blocks.iter().find(|(label, _)| label.ends_with("PRIVATE KEY")) {
            Some((label, der)) if label == "PRIVATE KEY" => der.clone(),
            Some((label, der)) if label == "RSA PRIVATE KEY" => pkcs1_to_pkcs8(der),
            Some((label, _)) => return Err(bad(&pem_path, format!("a `{label}`, which this reader does not take"))),
            None => return Err(bad(&pem_path, "no private key")),
        };
        marsh_foolscap::tls::spki_of(&cert_der).ok_or_else(|| bad(&pem_path, "the certificate does not parse"))?;
        let tub_id = marsh_foolscap::tls::tub_id_of(&cert_der);
        let furl_path = private.join("storage.furl");
        let furl = read_text(&furl_path, 4096)?;
        let furl = furl.trim();
        let (furl_tub, rest) = furl
            .strip_prefix("pb://")
            .and_then(|r| r.split_once('@'))
            .ok_or_else(|| bad(&furl_path, "not a fURL (pb://TUBID@HINTS/SWISSNUM)"))?;
        let (hints, swissnum) = rest.rsplit_once('/').ok_or_else(|| bad(&furl_path, "a fURL without a swissnum"))?;
        if furl_tub != tub_id {
            return Err(bad(
                &furl_path,
                format!("its tub id {furl_tub} is not node.pem's ({tub_id}); Tahoe itself refuses to start so"),
            ));
        }
        if swissnum.is_empty() || !swissnum.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(&furl_path, "its swissnum is not base32 text"));
        }
        let key_path = private.join("node.privkey");
        let node_key = read_text(&key_path, 4096)?.trim().to_owned();
        if !node_key.starts_with("priv-v0-") {
            return Err(bad(&key_path, "not a `priv-v0-` signing key"));
        }
        let seed_path = self.dir.join("permutation-seed");
        let permutation_seed = read_text(&seed_path, 4096)?.trim().to_owned();
        if permutation_seed.is_empty() || !permutation_seed.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(&seed_path, "not a base32 seed"));
        }
        Ok(Identity {
            cert_der,
            key_pkcs8,
            tub_id,
            swissnum: swissnum.to_owned(),
            node_key,
            permutation_seed,
            hints: hints.split(',').map(str::to_owned).filter(|h| !h.is_empty()).collect(),
        })
    }

    /// The introducers it announces itself to: `private/introducers.yaml`, then the older
    /// `[client] introducer.furl`.
    pub fn introducers(&self) -> Vec<String> {
        let yaml = std::fs::read_to_string(self.dir.join("private/introducers.yaml")).unwrap_or_default();
        let mut furls = cfg::introducer_furls(&yaml);
        if let Some(furl) = self.cfg.get("client", "introducer.furl").filter(|f| f.starts_with("pb://")) {
            furls.push(furl.to_owned());
        }
        furls
    }

    /// The grid-manager certificate files `[grid_manager_certificates]` names (relative to the
    /// node directory), when `[storage] grid_management` is on.
    pub fn grid_manager_certificates(&self) -> Vec<PathBuf> {
        if self.cfg.boolean("storage", "grid_management").ok().flatten() != Some(true) {
            return Vec::new();
        }
        self.cfg
            .entries()
            .filter(|(section, _, _)| *section == "grid_manager_certificates")
            .map(|(_, _, file)| self.dir.join(file))
            .collect()
    }
}

/// Write `private/node.pem` as Foolscap keeps it: the certificate, then the key (PKCS#8).
pub fn node_pem(cert_der: &[u8], key_pkcs8: &[u8]) -> String {
    let block = |label: &str, der: &[u8]| {
        let b64 = data_encoding::BASE64.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    };
    format!("{}{}", block("CERTIFICATE", cert_der), block("PRIVATE KEY", key_pkcs8))
}

/// The `tahoe-client.tac` whose name `tahoe run` looks for to know a client node's directory
/// (its content is not read).
pub const CLIENT_TAC: &str = "# The directory of a Tahoe-LAFS node: `tahoe run` looks for this file's name.\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_and_a_pkcs1_key_wrapped_as_pkcs8() {
        let pem = node_pem(&[1, 2, 3], &[4; 200]);
        let blocks = pem_blocks(&pem);
        assert_eq!(blocks, [("CERTIFICATE".to_owned(), vec![1, 2, 3]), ("PRIVATE KEY".to_owned(), vec![4; 200])]);
        let wrapped = pkcs1_to_pkcs8(&[9; 300]);
        // SEQUENCE, long form length; then version 0 and the rsaEncryption identifier.
        assert_eq!(&wrapped[..2], &[0x30, 0x82]);
        assert_eq!(&wrapped[4..7], &[0x02, 0x01, 0x00]);
        assert!(wrapped.ends_with(&[9; 300]));
    }

    #[test]
    fn a_node_directory_is_read_with_its_storage_dir_and_a_running_node_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("tahoe.cfg"),
            "[node]\nnickname = x\n[storage]\nenabled = true\nstorage_dir = elsewhere\n",
        )
        .unwrap();
        let node = TahoeNode::open(tmp.path()).unwrap();
        assert_eq!(node.storage_dir, tmp.path().join("elsewhere"));
        assert!(node.not_running().is_ok(), "no running.process");
        std::fs::write(tmp.path().join("running.process"), format!("{} 1796650708.11\n", std::process::id())).unwrap();
        assert!(matches!(node.not_running(), Err(NodeError::Running { .. })), "this very process");
        std::fs::write(tmp.path().join("running.process"), "4194303999 1.0\n").unwrap();
        assert!(node.not_running().is_ok(), "left by a crash: no such process");
        std::fs::write(tmp.path().join("tahoe.cfg"), "[storage]\nenabled = false\n").unwrap();
        assert!(TahoeNode::open(tmp.path()).is_err());
    }
}

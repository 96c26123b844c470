//! The storage announcement a Tahoe-LAFS 1.20 node publishes to its grid's introducers, built
//! for this node and signed as Tahoe signs it (`introducer/common.py sign_to_foolscap`): the
//! announcement as UTF-8 JSON, the signature `v0-` and base32, and the key string `v0-` and
//! base32, which is the server id clients key the node by.

use marsh_foolscap::Announcement;
use serde_json::{Value, json};

use crate::signing::NodeKey;
use crate::{Identity, NodeError};

/// The oldest Tahoe version the announcement says it talks to, as 1.20 says.
const OLDEST_SUPPORTED: &str = "1.0.0";

/// A `seqnum` for an announcement made now: microseconds since the epoch, so that every
/// process start announces a larger one than the last without writing anything down (a clock
/// set back by more than the time between two starts would make clients ignore the node's
/// announcements until it catches up).
pub fn seqnum_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The storage announcement for `id`, with `nurls` (the anonymous account's), the `seqnum`
/// that must grow with every change, a fresh `nonce`, and the grid-manager certificates (if
/// any) the operator configured.
pub fn storage(
    id: &Identity,
    nickname: &str,
    nurls: &[String],
    seqnum: u64,
    nonce: &str,
    grid_manager_certificates: &[Value],
) -> Value {
    let mut ann = json!({
        "version": 0,
        "service-name": "storage",
        "nickname": nickname,
        "app-versions": [],
        "my-version": format!("marsh/{}", env!("CARGO_PKG_VERSION")),
        "oldest-supported": OLDEST_SUPPORTED,
        "seqnum": seqnum,
        "nonce": nonce,
        "anonymous-storage-FURL": id.furl(),
        "anonymous-storage-NURLs": nurls,
        "permutation-seed-base32": id.permutation_seed,
    });
    if !grid_manager_certificates.is_empty() {
        ann["grid-manager-certificates"] = Value::from(grid_manager_certificates.to_vec());
    }
    ann
}

/// Sign `announcement` with `key`: what `publish_v2` carries (the JSON, `v0-` and the base32
/// signature, `v0-` and the base32 public key).
pub fn sign(key: &NodeKey, announcement: &Value) -> Announcement {
    let msg = announcement.to_string().into_bytes();
    Announcement { sig: key.sign(&msg), key: key.server_id(), msg }
}

/// The storage announcement made now and signed: a fresh nonce, [`seqnum_now`].
pub fn signed_now(
    id: &Identity,
    key: &NodeKey,
    nickname: &str,
    nurls: &[String],
    grid_manager_certificates: &[Value],
) -> Result<Announcement, NodeError> {
    let nonce = data_encoding::BASE32_NOPAD.encode(&crate::identity::random::<20>()?).to_ascii_lowercase();
    Ok(sign(key, &storage(id, nickname, nurls, seqnum_now(), &nonce, grid_manager_certificates)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InitOptions, NodeDir, signing};

    #[test]
    fn a_signed_announcement_verifies_and_names_the_node() {
        let tmp = tempfile::tempdir().unwrap();
        let options = InitOptions {
            listen: "127.0.0.1:3457".parse().unwrap(),
            public_host: None,
            public_port: None,
            nickname: "n1".into(),
            storage_dir: None,
            web_listen: None,
            settings: Vec::new(),
        };
        let id = NodeDir::init(&tmp.path().join("node"), &options).unwrap().identity().unwrap();
        let nurl = id.nurl("127.0.0.1", 3457);
        let signed =
            sign(id.signing_key.as_ref().unwrap(), &storage(&id, "n1", std::slice::from_ref(&nurl), 7, "abc", &[]));
        assert_eq!(signed.key, id.server_id);
        assert!(signing::verify(&signed.key, &signed.sig, &signed.msg));
        let back: Value = serde_json::from_slice(&signed.msg).unwrap();
        assert_eq!(back["anonymous-storage-NURLs"], json!([nurl]));
        assert_eq!((back["seqnum"].as_u64(), back["service-name"].as_str()), (Some(7), Some("storage")));
        let mut tampered = signed.msg.clone();
        tampered[10] ^= 1;
        assert!(!signing::verify(&signed.key, &signed.sig, &tampered));
    }
}

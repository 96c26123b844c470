//! [`NodeKey`]: the node's ed25519 signing key, in Tahoe-LAFS's encodings. Its public key *is*
//! the server id clients, introducers and grid managers know the node by: `v0-` and the lowercase
//! unpadded base32 of the 32 public key bytes. The key is kept as Tahoe keeps `node.privkey`:
//! `priv-v0-` and the base32 of the 32-byte seed, in `private/node.privkey` (mode 0600).
//! Signatures, as on an announcement, are `v0-` and the base32 of the 64 signature bytes.

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::NodeError;

const PRIVATE_PREFIX: &str = "priv-v0-";
const PUBLIC_PREFIX: &str = "v0-";

/// The node's signing key.
#[derive(Clone)]
pub struct NodeKey(SigningKey);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NodeKey").field(&self.server_id()).finish()
    }
}

fn base32(bytes: &[u8]) -> String {
    BASE32_NOPAD.encode(bytes).to_ascii_lowercase()
}

fn unbase32(text: &str) -> Option<Vec<u8>> {
    BASE32_NOPAD.decode(text.to_ascii_uppercase().as_bytes()).ok()
}

impl NodeKey {
    /// A fresh key from the system's randomness.
    pub fn generate() -> Result<NodeKey, NodeError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)?;
        Ok(NodeKey(SigningKey::from_bytes(&seed)))
    }

    /// Read `priv-v0-BASE32` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<NodeKey, NodeError> {
        let bad = || NodeError::Identity("private/node.privkey is not `priv-v0-` and a base32 ed25519 seed".into());
        let seed = text.trim().strip_prefix(PRIVATE_PREFIX).and_then(unbase32).ok_or_else(bad)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| bad())?;
        Ok(NodeKey(SigningKey::from_bytes(&seed)))
    }

    /// `priv-v0-BASE32`, as the file holds it.
    pub fn encode(&self) -> String {
        format!("{PRIVATE_PREFIX}{}", base32(self.0.as_bytes()))
    }

    /// The server id: `v0-` and the base32 public key.
    pub fn server_id(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", base32(self.0.verifying_key().as_bytes()))
    }

    /// The permutation seed a node that starts with this key uses (its public key, base32),
    /// as Tahoe's nodes do when they have no older seed to keep.
    pub fn permutation_seed(&self) -> String {
        base32(self.0.verifying_key().as_bytes())
    }

    /// Sign `message`: `v0-` and the base32 signature.
    pub fn sign(&self, message: &[u8]) -> String {
        format!("{PUBLIC_PREFIX}{}", base32(&self.0.sign(message).to_bytes()))
    }
}

/// Whether `signature` (`v0-BASE32`) is `server_id`'s (`v0-BASE32`) over `message`.
pub fn verify(server_id: &str, signature: &str, message: &[u8]) -> bool {
    let key = server_id.strip_prefix(PUBLIC_PREFIX).and_then(unbase32).and_then(|k| <[u8; 32]>::try_from(k).ok());
    let sig = signature.strip_prefix(PUBLIC_PREFIX).and_then(unbase32).and_then(|s| <[u8; 64]>::try_from(s).ok());
    match (key.and_then(|k| VerifyingKey::from_bytes(&k).ok()), sig) {
        (Some(key), Some(sig)) => key.verify(message, &Signature::from_bytes(&sig)).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    /// RFC 8032, section 7.1, TEST 1 (the empty message), in Tahoe's encodings.
    #[test]
    fn the_rfc_8032_vector_in_tahoes_encodings() {
        let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let key = NodeKey::parse(&format!("priv-v0-{}\n", base32(&seed))).unwrap();
        let public = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        assert_eq!(key.server_id(), format!("v0-{}", base32(&public)));
        let signature = hex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        );
        assert_eq!(key.sign(b""), format!("v0-{}", base32(&signature)));
        assert!(verify(&key.server_id(), &key.sign(b""), b""));
        assert_eq!(NodeKey::parse(&key.encode()).unwrap().server_id(), key.server_id());
    }

    #[test]
    fn a_signature_holds_only_for_its_message_and_key() {
        let (a, b) = (NodeKey::generate().unwrap(), NodeKey::generate().unwrap());
        let sig = a.sign(b"{\"service-name\": \"storage\"}");
        assert!(verify(&a.server_id(), &sig, b"{\"service-name\": \"storage\"}"));
        assert!(!verify(&a.server_id(), &sig, b"{\"service-name\": \"storagE\"}"));
        assert!(!verify(&b.server_id(), &sig, b"{\"service-name\": \"storage\"}"));
        for bad in ["", "v0-", "v1-aaaa", "v0-!!!!"] {
            assert!(!verify(bad, &sig, b"x") && !verify(&a.server_id(), bad, b"x"), "{bad:?}");
        }
        for bad in ["", "priv-v0-", "priv-v0-aaaa", "pub-v0-aaaa", "priv-v1-aaaa"] {
            assert!(NodeKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{a:?}").contains(&a.encode()[8..]), "Debug shows no key");
    }
}

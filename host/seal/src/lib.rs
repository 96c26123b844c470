//! Sealing: the node's "local encrypted single-share encoding" of state it writes to a blob
//! store, so a store operator learns nothing from it and cannot swap one blob for another.
//!
//! Frame (version 1): `[0x01] [24-byte random nonce] [XChaCha20-Poly1305 ciphertext + 16-byte tag]`.
//! The associated data binds the frame version and the purpose (what the blob is and its
//! name), so a blob sealed as `lease/abc` does not unseal as `lease/abd`. The extended nonce
//! makes random nonces safe for any number of blobs under one key.
//!
//! Architecture invariant: the key lives only in [`SealKey`] and never leaves this crate; a
//! plugin asks the host to seal and unseal, it never holds key material. Each plugin seals
//! under a key of its own ([`SealKey::derive`]), so no plugin unseals another's blobs or the
//! host's, whatever purpose it names. The key file is
//! written once by `marsh init` (`private/seal.key`) and only read afterwards.

use std::fmt;
use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::Mac;

/// The current frame version.
pub const FRAME_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Why sealing or unsealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Authentication failed: changed bytes, another purpose, or another key.
    #[error("sealed blob failed authentication (changed, sealed for another purpose, or by another node)")]
    Tampered,
    /// Shorter than any frame.
    #[error("sealed blob is truncated: {0} bytes, a frame has at least {OVERHEAD}")]
    Truncated(usize),
    /// A frame version this build does not read.
    #[error("sealed blob has frame version {0}, this node reads version {FRAME_VERSION}")]
    UnknownVersion(u8),
    /// The random source failed.
    #[error("no randomness for a nonce: {0}")]
    Random(getrandom::Error),
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("sealing key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not 32 bytes.
    #[error("sealing key file {path} holds {len} bytes, expected 32")]
    BadLength {
        /// The file.
        path: String,
        /// What it holds.
        len: usize,
    },
    /// The random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(getrandom::Error),
}

/// The node's 256-bit sealing key.
#[derive(Clone)]
pub struct SealKey {
    bytes: [u8; 32],
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

fn associated_data(version: u8, purpose: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(16 + purpose.len());
    ad.extend_from_slice(b"marsh-seal");
    ad.push(version);
    ad.extend_from_slice(&(purpose.len() as u64).to_be_bytes());
    ad.extend_from_slice(purpose.as_bytes());
    ad
}

impl SealKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SealKey { bytes, cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)) }
    }

    /// An independent key for `label`: HKDF-Expand (RFC 5869) with HMAC-SHA256, one block,
    /// this key as the pseudorandom key (it is 32 uniformly random bytes, so the extract step
    /// adds nothing). Blobs sealed under keys of two labels never unseal under the other, nor
    /// under this key, and knowing a derived key tells nothing of this one or of its siblings.
    pub fn derive(&self, label: &str) -> SealKey {
        let mut mac = <hmac::Hmac<sha2_next::Sha256> as hmac::KeyInit>::new_from_slice(&self.bytes)
            .expect("HMAC takes keys of any length");
        mac.update(b"marsh-seal-derive/");
        mac.update(label.as_bytes());
        mac.update(&[1]);
        SealKey::from_bytes(mac.finalize().into_bytes().into())
    }

    /// The key a plugin of `role` (`backend`, `persistence`) named `name` seals under: the one
    /// spelling of its label, for the wasm host and the native build alike.
    pub fn for_plugin(&self, role: &str, name: &str) -> SealKey {
        self.derive(&format!("plugin/{role}/{name}"))
    }

    /// A fresh random key that is never written anywhere (scratch runs, tests).
    pub fn ephemeral() -> Result<SealKey, KeyFileError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(KeyFileError::Random)?;
        Ok(SealKey::from_bytes(bytes))
    }

    /// Write a fresh random key to `path`, which must not exist (mode 0600).
    pub fn create_file(path: &Path) -> Result<SealKey, KeyFileError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(KeyFileError::Random)?;
        let io = |source| KeyFileError::Io { path: path.display().to_string(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(SealKey::from_bytes(bytes))
    }

    /// Read the key written by [`SealKey::create_file`].
    pub fn load_file(path: &Path) -> Result<SealKey, KeyFileError> {
        let bytes =
            std::fs::read(path).map_err(|source| KeyFileError::Io { path: path.display().to_string(), source })?;
        let len = bytes.len();
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| KeyFileError::BadLength { path: path.display().to_string(), len })?;
        Ok(SealKey::from_bytes(bytes))
    }

    /// Encrypt and authenticate `plaintext`, bound to `purpose`.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(SealError::Random)?;
        let ad = associated_data(FRAME_VERSION, purpose);
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &ad })
            // Encryption fails only for inputs beyond ~256 GiB, which no caller can pass.
            .map_err(|_| SealError::Tampered)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(FRAME_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Check and decrypt a blob sealed for the same purpose with the same key.
    pub fn unseal(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(&version) = sealed.first() else {
            return Err(SealError::Truncated(0));
        };
        if version != FRAME_VERSION {
            return Err(SealError::UnknownVersion(version));
        }
        if sealed.len() < OVERHEAD {
            return Err(SealError::Truncated(sealed.len()));
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let ad = associated_data(version, purpose);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &ad })
            .map_err(|_| SealError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealKey {
        SealKey::from_bytes([b; 32])
    }

    #[test]
    fn round_trip_and_no_plaintext_in_the_frame() {
        let k = key(1);
        let sealed = k.seal("lease/abc", b"renew-secret-hash").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 17);
        assert_eq!(sealed[0], FRAME_VERSION);
        assert!(!sealed.windows(5).any(|w| w == b"renew"));
        assert_eq!(k.unseal("lease/abc", &sealed).unwrap(), b"renew-secret-hash");
        // Random nonces: the same input seals differently each time.
        assert_ne!(k.seal("lease/abc", b"x").unwrap(), k.seal("lease/abc", b"x").unwrap());
    }

    #[test]
    fn derived_keys_are_independent_of_each_other_and_of_their_parent() {
        let node = key(7);
        let (a, b) = (node.derive("plugin/backend/disk"), node.derive("plugin/persistence/records"));
        let sealed = a.seal("p", b"state").unwrap();
        assert_eq!(a.unseal("p", &sealed).unwrap(), b"state");
        assert_eq!(b.unseal("p", &sealed), Err(SealError::Tampered));
        assert_eq!(node.unseal("p", &sealed), Err(SealError::Tampered));
        assert_eq!(a.unseal("p", &node.seal("p", b"host").unwrap()), Err(SealError::Tampered));
        // Deterministic: the same node key and label give the same key after a restart.
        assert_eq!(node.derive("plugin/backend/disk").unseal("p", &sealed).unwrap(), b"state");
        // And the label is not the only input: another node derives another key.
        assert_eq!(key(8).derive("plugin/backend/disk").unseal("p", &sealed), Err(SealError::Tampered));
    }

    #[test]
    fn every_changed_byte_is_detected() {
        let k = key(2);
        let sealed = k.seal("p", b"some state").unwrap();
        for i in 1..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x40;
            assert_eq!(k.unseal("p", &t), Err(SealError::Tampered), "byte {i}");
        }
    }

    #[test]
    fn truncated_frames_are_refused() {
        let k = key(3);
        let sealed = k.seal("p", b"abc").unwrap();
        assert_eq!(k.unseal("p", &[]), Err(SealError::Truncated(0)));
        assert_eq!(k.unseal("p", &sealed[..OVERHEAD - 1]), Err(SealError::Truncated(OVERHEAD - 1)));
        assert_eq!(k.unseal("p", &sealed[..sealed.len() - 1]), Err(SealError::Tampered));
    }

    #[test]
    fn a_blob_cannot_be_replayed_under_another_purpose_or_key() {
        let k = key(4);
        let a = k.seal("lease/aaa", b"A").unwrap();
        let b = k.seal("lease/aab", b"B").unwrap();
        assert_eq!(k.unseal("lease/aab", &a), Err(SealError::Tampered));
        assert_eq!(k.unseal("lease/aaa", &b), Err(SealError::Tampered));
        // Purposes that concatenate alike stay distinct.
        let c = k.seal("ab", b"").unwrap();
        assert_eq!(k.unseal("a", &c), Err(SealError::Tampered));
        assert_eq!(key(5).unseal("lease/aaa", &a), Err(SealError::Tampered));
    }

    #[test]
    fn unknown_versions_are_named() {
        let k = key(6);
        let mut sealed = k.seal("p", b"abc").unwrap();
        sealed[0] = 2;
        assert_eq!(k.unseal("p", &sealed), Err(SealError::UnknownVersion(2)));
        sealed[0] = 0;
        assert_eq!(k.unseal("p", &sealed), Err(SealError::UnknownVersion(0)));
    }

    #[test]
    fn key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let k = SealKey::create_file(&path).unwrap();
        assert!(matches!(SealKey::create_file(&path), Err(KeyFileError::Io { .. })));
        let again = SealKey::load_file(&path).unwrap();
        let sealed = k.seal("p", b"state").unwrap();
        assert_eq!(again.unseal("p", &sealed).unwrap(), b"state");
        std::fs::write(dir.path().join("short.key"), [1u8; 31]).unwrap();
        assert!(matches!(
            SealKey::load_file(&dir.path().join("short.key")),
            Err(KeyFileError::BadLength { len: 31, .. })
        ));
    }

    proptest::proptest! {
        /// Whatever a store hands back (any bytes, or a real frame with bytes changed, cut or
        /// added), unsealing answers an error and never a plaintext, unless the frame is intact.
        #[test]
        fn any_frame_unseals_only_when_intact(
            plaintext in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            flip in proptest::prelude::any::<proptest::sample::Index>(),
            xor in 1u8..,
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let k = key(3);
            proptest::prop_assert!(k.unseal("p", &junk).is_err());
            let sealed = k.seal("p", &plaintext).unwrap();
            proptest::prop_assert_eq!(k.unseal("p", &sealed).unwrap(), plaintext);
            let mut flipped = sealed.clone();
            flipped[flip.index(sealed.len())] ^= xor;
            proptest::prop_assert!(k.unseal("p", &flipped).is_err());
            let short = &sealed[..cut.index(sealed.len())];
            proptest::prop_assert!(k.unseal("p", short).is_err());
            let longer = [&sealed[..], &junk[..]].concat();
            proptest::prop_assert!(junk.is_empty() || k.unseal("p", &longer).is_err());
        }
    }
}

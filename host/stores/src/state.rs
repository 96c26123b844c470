//! Node state: small named values discovered while the node runs (when lease expiry last ran,
//! a plugin's last snapshot), kept in a blob store rather than the node directory, so a copy of
//! the node directory taken after `marsh init` stays a complete backup.
//!
//! Each value is one object under the host's reserved prefix, `.marsh-host/state/OWNER/NAME`,
//! where OWNER is `node` or `plugin/PLUGIN-NAME`; plugins cannot name or list those keys. The
//! object is the value sealed with the node key, bound to its owner and name (so one value
//! cannot be passed off as another), framed as `[format = 1][version: u64 BE][value]`. Every
//! `put` writes the next version; a value that does not authenticate is an error, never data.

use std::sync::Arc;

use marsh_seal::SealKey;

use crate::{BlobKey, BlobStore, PutMode, StoreError};

/// The largest value kept.
pub const MAX_STATE_BYTES: usize = 64 << 10;
const FORMAT: u8 = 1;
/// Bytes a sealed value adds to its plaintext, with room to spare (seal frame, nonce, tag).
const SEAL_OVERHEAD: u64 = 256;

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The name is not 1-64 characters of `a-z0-9-_.`.
    #[error("`{0}` is not a state name: use 1-64 of a-z, 0-9, `-`, `_` and `.`")]
    BadName(String),
    /// The value is too large.
    #[error("a state value of {0} bytes; at most {MAX_STATE_BYTES}")]
    TooLarge(usize),
    /// The stored value was changed, or was written by another node.
    #[error("state `{0}` does not authenticate (changed in the store, or sealed by another node)")]
    Tampered(String),
    /// The store failed.
    #[error("state `{name}`: {error}")]
    Store {
        /// The value's name.
        name: String,
        /// What the store said.
        error: StoreError,
    },
}

/// One owner's named values in one store.
#[derive(Clone)]
pub struct StateStore {
    store: Arc<dyn BlobStore>,
    seal: SealKey,
    owner: String,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").field("owner", &self.owner).finish_non_exhaustive()
    }
}

fn valid(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !name.starts_with('.')
}

impl StateStore {
    /// The node's own values.
    pub fn node(store: Arc<dyn BlobStore>, seal: SealKey) -> Self {
        StateStore { store, seal, owner: "node".into() }
    }

    /// A plugin's values; `None` when its name cannot be part of a key.
    pub fn plugin(store: Arc<dyn BlobStore>, seal: SealKey, plugin: &str) -> Option<Self> {
        valid(plugin).then(|| StateStore { store, seal, owner: format!("plugin/{plugin}") })
    }

    fn key(&self, name: &str) -> Result<(BlobKey, String), StateError> {
        if !valid(name) {
            return Err(StateError::BadName(name.chars().take(80).collect()));
        }
        let key = BlobKey::host(&format!("state/{}/{name}", self.owner))
            .map_err(|error| StateError::Store { name: name.to_owned(), error })?;
        Ok((key, format!("state:{}:{name}", self.owner)))
    }

    /// The newest value and its version, or none.
    pub async fn get_versioned(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StateError> {
        let (key, purpose) = self.key(name)?;
        let store_error = |error| StateError::Store { name: name.to_owned(), error };
        // Never more than a value can be: an object someone grew in the store is not read whole.
        let limit = MAX_STATE_BYTES as u64 + SEAL_OVERHEAD;
        let Some(sealed) = self.store.get_range(&key, 0, limit + 1).await.map_err(store_error)? else {
            return Ok(None);
        };
        if sealed.len() as u64 > limit {
            return Err(StateError::Tampered(name.to_owned()));
        }
        let plain = self.seal.unseal(&purpose, &sealed).map_err(|_| StateError::Tampered(name.to_owned()))?;
        match plain.split_first() {
            Some((&FORMAT, rest)) if rest.len() >= 8 => {
                let (version, value) = rest.split_at(8);
                let version = u64::from_be_bytes(version.try_into().map_err(|_| StateError::Tampered(name.into()))?);
                Ok(Some((version, value.to_vec())))
            }
            _ => Err(StateError::Tampered(name.to_owned())),
        }
    }

    /// The newest value, or none.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.get_versioned(name).await?.map(|(_, v)| v))
    }

    /// Replace the value under `name` with the next version; returns that version. A stored
    /// value that no longer authenticates is replaced (starting again at version 1).
    pub async fn put(&self, name: &str, value: &[u8]) -> Result<u64, StateError> {
        if value.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLarge(value.len()));
        }
        let (key, purpose) = self.key(name)?;
        let version = match self.get_versioned(name).await {
            Ok(current) => current.map_or(0, |(v, _)| v) + 1,
            Err(StateError::Tampered(_)) => {
                // Nothing to keep: it would never be returned.
                1
            }
            Err(e) => return Err(e),
        };
        let mut plain = Vec::with_capacity(9 + value.len());
        plain.push(FORMAT);
        plain.extend_from_slice(&version.to_be_bytes());
        plain.extend_from_slice(value);
        let sealed = self
            .seal
            .seal(&purpose, &plain)
            .map_err(|e| StateError::Store { name: name.to_owned(), error: StoreError::Io(format!("sealing: {e}")) })?;
        self.store
            .put(&key, sealed, PutMode::Overwrite)
            .await
            .map_err(|error| StateError::Store { name: name.to_owned(), error })?;
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[tokio::test]
    async fn values_are_sealed_versioned_hidden_and_bound_to_their_owner_and_name() {
        let store = MemoryStore::new("s");
        let key = SealKey::from_bytes([3; 32]);
        let node = StateStore::node(Arc::new(store.clone()), key.clone());
        let plugin = StateStore::plugin(Arc::new(store.clone()), key.clone(), "persistence-stash").unwrap();
        assert_eq!(node.get("gc").await.unwrap(), None);
        assert_eq!(node.put("gc", b"last run 1000").await.unwrap(), 1);
        assert_eq!(node.put("gc", b"last run 2000").await.unwrap(), 2);
        assert_eq!(node.get_versioned("gc").await.unwrap(), Some((2, b"last run 2000".to_vec())));
        assert_eq!(plugin.get("gc").await.unwrap(), None, "owners do not share names");
        // Hidden from listings, and sealed.
        assert!(store.list("", None, 100).await.unwrap().keys.is_empty());
        let node_key = BlobKey::host("state/node/gc").unwrap();
        let plugin_key = BlobKey::host("state/plugin/persistence-stash/gc").unwrap();
        let sealed = store.get(&node_key).await.unwrap().unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"last run"));
        // Another owner's value moved into place does not authenticate.
        plugin.put("gc", b"plugin value").await.unwrap();
        let theirs = store.get(&plugin_key).await.unwrap().unwrap();
        store.put(&node_key, theirs, PutMode::Overwrite).await.unwrap();
        assert_eq!(node.get("gc").await, Err(StateError::Tampered("gc".into())));
        // ... and is replaced by the next put.
        assert_eq!(node.put("gc", b"fresh").await.unwrap(), 1);
        assert_eq!(node.get("gc").await.unwrap(), Some(b"fresh".to_vec()));
        // Another node's key cannot read it.
        let stranger = StateStore::node(Arc::new(store.clone()), SealKey::from_bytes([4; 32]));
        assert!(matches!(stranger.get("gc").await, Err(StateError::Tampered(_))));

        for bad in ["", "../x", "A", ".hidden", &"x".repeat(65)] {
            assert!(matches!(node.put(bad, b"v").await, Err(StateError::BadName(_))), "{bad:?}");
        }
        assert_eq!(
            node.put("big", &vec![0; MAX_STATE_BYTES + 1]).await,
            Err(StateError::TooLarge(MAX_STATE_BYTES + 1))
        );
        assert!(StateStore::plugin(Arc::new(store), key, "Bad/Name").is_none());
    }
}

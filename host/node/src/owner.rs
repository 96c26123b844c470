//! Owner fencing: a node claims each blob store it uses with a create-only owner record, so a
//! second node pointed at the same bucket prefix (or directory) refuses to start instead of
//! writing beside the first.
//!
//! The record lives at the host-only key `.marsh-host/owner` (plugins cannot name or list it).
//! It carries the owner's server id, nickname and claim time in the clear, so another node can
//! say who owns the store, followed by the same text sealed with the owner's key, so the owner
//! recognises its own record and a forged one (naming it, but not sealed by it) is refused.
//!
//! Taking a store over is always deliberate: the owner releases it (`marsh store release`), or,
//! when the old node is gone for good, the new one takes it over naming the old owner
//! (`marsh store take-over --from SERVER_ID`).

use marsh_seal::SealKey;
use marsh_stores::{BlobKey, BlobStore, PutMode, StoreError};

const PURPOSE: &str = "host:owner";
const MAGIC: &str = "marsh-owner 1";

/// Who owns a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owner's server id (`v0-...`).
    pub server_id: String,
    /// Its nickname.
    pub nickname: String,
    /// When it claimed the store, seconds since the Unix epoch.
    pub since: u64,
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The store was unclaimed; it is ours now.
    New,
    /// We already owned it.
    Ours,
}

/// Why a store cannot be claimed or released.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// Another node owns the store.
    #[error(
        "store `{store}` is owned by another node: {} (\"{}\"), since {} (Unix time). Two nodes must not share a \
         store. To move it to this node deliberately, stop that node and run `marsh store release --dir \
         ITS_NODE_DIR {store}` there; if that node is gone for good, run `marsh store take-over --dir {dir} {store} \
         --from {}` here.",
        owner.server_id, owner.nickname, owner.since, owner.server_id
    )]
    OwnedByOther {
        /// The store's name.
        store: String,
        /// Who owns it.
        owner: Owner,
        /// This node's directory, for the command.
        dir: String,
    },
    /// The record names this node but was not sealed by its key.
    #[error("store `{store}`: the owner record names this node but is not sealed by it (tampered or forged)")]
    Forged {
        /// The store's name.
        store: String,
    },
    /// The record cannot be read.
    #[error(
        "store `{store}`: the owner record is unreadable ({why}); if no other node uses this store, remove it \
         with `marsh store release --force`"
    )]
    Corrupt {
        /// The store's name.
        store: String,
        /// What is wrong.
        why: String,
    },
    /// `release` or `take-over` found a different owner than expected.
    #[error("store `{store}`: {why}")]
    NotOwner {
        /// The store's name.
        store: String,
        /// What was found.
        why: String,
    },
    /// The store failed.
    #[error("store `{store}`: {error}")]
    Store {
        /// The store's name.
        store: String,
        /// The failure.
        error: StoreError,
    },
}

fn key() -> BlobKey {
    // A fixed, valid name: cannot fail.
    BlobKey::host("owner").unwrap_or_else(|e| unreachable!("owner key: {e}"))
}

fn encode(me: &Owner, seal: &SealKey) -> Result<Vec<u8>, StoreError> {
    let text = format!("{MAGIC}\n{}\n{}\n{}\n", me.server_id, me.nickname.replace('\n', " "), me.since);
    let sealed = seal.seal(PURPOSE, text.as_bytes()).map_err(|e| StoreError::Io(format!("sealing: {e}")))?;
    let mut out = (text.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The owner the record names, and whether `seal` sealed it.
fn decode(store: &str, bytes: &[u8], seal: &SealKey) -> Result<(Owner, bool), OwnerError> {
    let corrupt = |why: &str| OwnerError::Corrupt { store: store.to_owned(), why: why.to_owned() };
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(|| corrupt("too short"))?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(corrupt("truncated"));
    }
    let (text, sealed) = rest.split_at(len);
    let text = std::str::from_utf8(text).map_err(|_| corrupt("not text"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(corrupt("unknown format"));
    }
    let mut field = || lines.next().map(str::to_owned).ok_or_else(|| corrupt("missing field"));
    let (server_id, nickname, since) = (field()?, field()?, field()?);
    let owner = Owner { server_id, nickname, since: since.parse().map_err(|_| corrupt("bad time"))? };
    let ours = seal.unseal(PURPOSE, sealed).is_ok_and(|plain| plain == text.as_bytes());
    Ok((owner, ours))
}

async fn read(store: &dyn BlobStore, seal: &SealKey) -> Result<Option<(Owner, bool)>, OwnerError> {
    let name = store.name().to_owned();
    match store.get(&key()).await {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => decode(&name, &bytes, seal).map(Some),
        Err(error) => Err(OwnerError::Store { store: name, error }),
    }
}

/// Who owns `store`, if anyone (any node can read the names; only the owner's key verifies).
pub async fn owner_of(store: &dyn BlobStore, seal: &SealKey) -> Result<Option<Owner>, OwnerError> {
    Ok(read(store, seal).await?.map(|(o, _)| o))
}

/// Claim `store` for `me`, or find that we already own it. `dir` names this node's directory
/// in the error's advice.
pub async fn claim(store: &dyn BlobStore, me: &Owner, seal: &SealKey, dir: &str) -> Result<Claimed, OwnerError> {
    let name = store.name().to_owned();
    let record = encode(me, seal).map_err(|error| OwnerError::Store { store: name.clone(), error })?;
    match store.put(&key(), record, PutMode::CreateOnly).await {
        Ok(()) => return Ok(Claimed::New),
        Err(StoreError::Exists) => {}
        Err(error) => return Err(OwnerError::Store { store: name, error }),
    }
    match read(store, seal).await? {
        Some((owner, true)) if owner.server_id == me.server_id => Ok(Claimed::Ours),
        Some((owner, _)) if owner.server_id == me.server_id => Err(OwnerError::Forged { store: name }),
        Some((owner, _)) => Err(OwnerError::OwnedByOther { store: name, owner, dir: dir.to_owned() }),
        // Released between our two requests: try once more.
        None => match store
            .put(
                &key(),
                encode(me, seal).map_err(|error| OwnerError::Store { store: name.clone(), error })?,
                PutMode::CreateOnly,
            )
            .await
        {
            Ok(()) => Ok(Claimed::New),
            Err(error) => Err(OwnerError::Store { store: name, error }),
        },
    }
}

/// Give up ownership of `store` (run on the owning node while it is stopped). Returns `false`
/// when nobody owned it.
pub async fn release(store: &dyn BlobStore, me: &Owner, seal: &SealKey) -> Result<bool, OwnerError> {
    let name = store.name().to_owned();
    match read(store, seal).await? {
        None => Ok(false),
        Some((owner, true)) if owner.server_id == me.server_id => {
            store.delete(&key()).await.map_err(|error| OwnerError::Store { store: name, error })
        }
        Some((owner, _)) => Err(OwnerError::NotOwner {
            store: name,
            why: format!(
                "it is owned by {} (\"{}\"), not by this node; release it there",
                owner.server_id, owner.nickname
            ),
        }),
    }
}

/// Remove the owner record whatever it says (for a damaged record, when the operator knows no
/// other node uses the store). Returns whether there was one.
pub async fn release_forced(store: &dyn BlobStore) -> Result<bool, OwnerError> {
    store.delete(&key()).await.map_err(|error| OwnerError::Store { store: store.name().to_owned(), error })
}

/// Take `store` over from `from`, a node that is gone for good: the record must name `from`.
pub async fn take_over(store: &dyn BlobStore, me: &Owner, seal: &SealKey, from: &str) -> Result<(), OwnerError> {
    let name = store.name().to_owned();
    match read(store, seal).await? {
        Some((owner, _)) if owner.server_id == from => {
            let record = encode(me, seal).map_err(|error| OwnerError::Store { store: name.clone(), error })?;
            store
                .put(&key(), record, PutMode::Overwrite)
                .await
                .map_err(|error| OwnerError::Store { store: name, error })
        }
        Some((owner, _)) => Err(OwnerError::NotOwner {
            store: name,
            why: format!("it is owned by {}, not {from}; nothing was changed", owner.server_id),
        }),
        None => Err(OwnerError::NotOwner { store: name, why: "nobody owns it; `marsh run` claims it".to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marsh_stores::MemoryStore;

    fn node(id: &str) -> (Owner, SealKey) {
        let key = SealKey::from_bytes([id.len() as u8; 32]);
        (Owner { server_id: id.to_owned(), nickname: format!("nick-{id}"), since: 7 }, key)
    }

    #[tokio::test]
    async fn one_owner_at_a_time_and_hand_over_is_deliberate() {
        let store = MemoryStore::new("shares");
        let (a, ka) = node("v0-a");
        let (b, kb) = node("v0-bb");
        assert_eq!(claim(&store, &a, &ka, "/a").await.unwrap(), Claimed::New);
        assert_eq!(claim(&store, &a, &ka, "/a").await.unwrap(), Claimed::Ours);
        let e = claim(&store, &b, &kb, "/b").await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, OwnerError::OwnedByOther { .. }), "{e:?}");
        assert!(text.contains("v0-a") && text.contains("nick-v0-a") && text.contains("marsh store release"), "{text}");
        assert!(text.contains("marsh store take-over --dir /b shares --from v0-a"), "{text}");
        assert!(release(&store, &b, &kb).await.is_err(), "b cannot release a's store");
        assert!(take_over(&store, &b, &kb, "v0-zzz").await.is_err(), "take-over must name the owner");
        assert!(release(&store, &a, &ka).await.unwrap());
        assert_eq!(claim(&store, &b, &kb, "/b").await.unwrap(), Claimed::New);
        take_over(&store, &a, &ka, "v0-bb").await.unwrap();
        assert_eq!(owner_of(&store, &kb).await.unwrap().unwrap().server_id, "v0-a");
    }

    #[tokio::test]
    async fn a_record_naming_us_without_our_seal_is_refused() {
        let store = MemoryStore::new("shares");
        let (a, ka) = node("v0-a");
        let forger = SealKey::from_bytes([99; 32]);
        store.put(&key(), encode(&a, &forger).unwrap(), PutMode::CreateOnly).await.unwrap();
        assert!(matches!(claim(&store, &a, &ka, "/a").await, Err(OwnerError::Forged { .. })));
        store.put(&key(), b"junk".to_vec(), PutMode::Overwrite).await.unwrap();
        assert!(matches!(claim(&store, &a, &ka, "/a").await, Err(OwnerError::Corrupt { .. })));
    }
}

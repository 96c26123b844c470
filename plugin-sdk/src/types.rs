//! Small value types shared by both plugin worlds: storage indexes, share numbers, plugin
//! metadata and start-up errors. No I/O happens here.

use std::fmt;
use std::str::FromStr;

use crate::blobs::BlobError;

/// A share number within one storage index.
pub type ShareNumber = u16;

/// A storage index: 16 bytes, written as 26 lowercase unpadded base32 characters.
///
/// Only canonical spellings parse: the last character carries two padding bits that must be
/// zero, so every storage index has exactly one spelling, and a key built from one is unique.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageIndex(String);

/// Why a string is not a storage index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageIndexError(String);

impl fmt::Display for StorageIndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a canonical storage index: {:?}", self.0)
    }
}

impl std::error::Error for StorageIndexError {}

impl StorageIndex {
    /// The 26-character spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first two characters, which Tahoe's layouts use as a fan-out directory.
    pub fn prefix(&self) -> &str {
        &self.0[..2]
    }
}

impl FromStr for StorageIndex {
    type Err = StorageIndexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 26
            && s.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
            // 26 * 5 = 130 bits for 128: the last character's two low bits must be zero.
            && b"aeimquy4".contains(&s.as_bytes()[25]);
        if ok { Ok(StorageIndex(s.to_owned())) } else { Err(StorageIndexError(s.chars().take(64).collect())) }
    }
}

impl fmt::Display for StorageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageIndex({})", self.0)
    }
}

/// How the host may schedule instances of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Any number of instances side by side; the plugin keeps no state in its own memory
    /// that another instance would need.
    Pooled,
    /// Exactly one instance, calls serialised. Its memory is lost if it traps.
    Single,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// A short machine name, e.g. `backend-disk`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// How the host may schedule instances.
    pub concurrency: Concurrency,
}

impl PluginInfo {
    /// Build the metadata from borrowed strings.
    pub fn new(name: &str, version: &str, description: &str, concurrency: Concurrency) -> Self {
        PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            concurrency,
        }
    }
}

/// A request for operator action, returned from `init` or `startup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// What the plugin found.
    pub reason: String,
    /// The exact command the operator should run.
    pub command: String,
}

/// Why a plugin cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// The configuration is wrong; the message names the key and the expected form.
    BadConfig(String),
    /// The operator must run a command first.
    RecoveryNeeded(Recovery),
    /// A store or service the plugin needs is unavailable.
    Unavailable(String),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::BadConfig(m) => write!(f, "bad plugin config: {m}"),
            InitError::RecoveryNeeded(r) => {
                write!(f, "recovery needed: {}; run `{}`", r.reason, r.command)
            }
            InitError::Unavailable(m) => write!(f, "unavailable: {m}"),
        }
    }
}

impl std::error::Error for InitError {}

impl From<BlobError> for InitError {
    fn from(e: BlobError) -> Self {
        InitError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_index_accepts_only_canonical_spellings() {
        assert!("aaaaaaaaaaaaaaaaaaaaaaaaaa".parse::<StorageIndex>().is_ok());
        assert!("nomd2a65ylxjbqzsw7gcfh4iva".parse::<StorageIndex>().is_ok());
        for bad in [
            "nomd2a65ylxjbqzsw7gcfh4ivr",  // non-zero padding bits
            "aaaaaaaaaaaaaaaaaaaaaaaaa",   // 25 characters
            "aaaaaaaaaaaaaaaaaaaaaaaaaaa", // 27 characters
            "AAAAAAAAAAAAAAAAAAAAAAAAAA",  // upper case
            "aaaaaaaaaaaa1aaaaaaaaaaaaa",  // not in the alphabet
            "../aaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(bad.parse::<StorageIndex>().is_err(), "{bad} parsed");
        }
    }
}

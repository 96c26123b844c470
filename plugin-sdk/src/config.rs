//! The configuration an operator grants a plugin (`marsh config set plugin.<key> <value>`):
//! plain string pairs, with helpers that turn a missing or malformed value into the
//! `bad-config` error the operator sees.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::types::InitError;

/// Key/value configuration handed to `init`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

impl Config {
    /// Build a configuration from pairs; a later duplicate key wins.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Config { entries: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The value of a key that must be present.
    pub fn require(&self, key: &str) -> Result<&str, InitError> {
        self.get(key).ok_or_else(|| InitError::BadConfig(format!("missing required key `{key}`")))
    }

    /// Parse a key's value, or return `default` when it is absent.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, InitError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                InitError::BadConfig(format!("`{key}` = {v:?} is not a valid {}", std::any::type_name::<T>()))
            }),
        }
    }

    /// Refuse keys this plugin does not know, naming the ones it does.
    pub fn only_keys(&self, known: &[&str]) -> Result<(), InitError> {
        match self.entries.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(InitError::BadConfig(format!("unknown key `{k}`; known keys: {}", known.join(", ")))),
        }
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_report_the_key_at_fault() {
        let c = Config::from_pairs([("store", "shares"), ("fsync", "maybe")]);
        assert_eq!(c.require("store"), Ok("shares"));
        assert!(matches!(c.require("nope"), Err(InitError::BadConfig(m)) if m.contains("nope")));
        assert!(matches!(c.parse_or("fsync", true), Err(InitError::BadConfig(m)) if m.contains("fsync")));
        assert_eq!(c.parse_or("absent", 7u32), Ok(7));
        assert!(matches!(c.only_keys(&["store"]), Err(InitError::BadConfig(m)) if m.contains("fsync")));
    }
}

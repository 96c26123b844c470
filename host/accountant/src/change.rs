//! Change records: every mutation of accounting state is one [`Change`], applied and logged in
//! the same transaction, so the log and the tables never disagree. Persistence strategies carry
//! the encoded changes off the machine; recovery applies them again. Applying is idempotent
//! (upserts keyed by what the change is about), so replaying a change twice is harmless.
//!
//! Encoding: CBOR, an array `[1, kind, fields...]`; the leading 1 is the format version.

use ciborium::value::Value;
use rusqlite::{Transaction, params};

/// One change to accounting state. Accounts are named, not numbered, so a change means the
/// same on any database it is applied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A named account was created.
    Account {
        /// Its name.
        name: String,
        /// Its swissnum.
        swissnum: String,
        /// When.
        created: u64,
    },
    /// An attribute was set (`Some`) or removed (`None`).
    Attribute {
        /// The account.
        account: String,
        /// `write`, `quota` or `nickname`.
        key: String,
        /// The value.
        value: Option<String>,
    },
    /// An account was revoked.
    Revoked {
        /// The account.
        account: String,
        /// When.
        at: u64,
    },
    /// A lease was added or renewed (never shortened).
    Lease {
        /// Storage index, base32.
        si: String,
        /// Share number.
        shnum: u16,
        /// SHA-256 of the renew secret.
        renew_hash: Vec<u8>,
        /// SHA-256 of the cancel secret.
        cancel_hash: Vec<u8>,
        /// Expiry.
        expires: u64,
        /// The account holding it.
        account: String,
    },
    /// An account holds a share of this size.
    Share {
        /// Storage index, base32.
        si: String,
        /// Share number.
        shnum: u16,
        /// The account.
        account: String,
        /// Bytes.
        size: u64,
    },
    /// Everything about a share was forgotten (deleted, or its upload aborted).
    Forget {
        /// Storage index, base32.
        si: String,
        /// Share number.
        shnum: u16,
    },
    /// The write enabler of a new mutable share.
    WriteEnabler {
        /// Storage index, base32.
        si: String,
        /// Share number.
        shnum: u16,
        /// SHA-256 of the enabler.
        hash: Vec<u8>,
    },
}

/// Why a change record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad change record: {0}")]
pub struct BadChange(pub String);

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn int(n: u64) -> Value {
    Value::Integer(n.into())
}

impl Change {
    /// Whether applying it changes who a caller is (accounts, their attributes, revocation).
    pub fn touches_accounts(&self) -> bool {
        matches!(self, Change::Account { .. } | Change::Attribute { .. } | Change::Revoked { .. })
    }

    /// The CBOR bytes.
    pub fn encode(&self) -> Vec<u8> {
        let fields = match self {
            Change::Account { name, swissnum, created } => {
                vec![text("account"), text(name), text(swissnum), int(*created)]
            }
            Change::Attribute { account, key, value } => {
                vec![text("attribute"), text(account), text(key), value.as_deref().map_or(Value::Null, text)]
            }
            Change::Revoked { account, at } => vec![text("revoked"), text(account), int(*at)],
            Change::Lease { si, shnum, renew_hash, cancel_hash, expires, account } => vec![
                text("lease"),
                text(si),
                int(u64::from(*shnum)),
                Value::Bytes(renew_hash.clone()),
                Value::Bytes(cancel_hash.clone()),
                int(*expires),
                text(account),
            ],
            Change::Share { si, shnum, account, size } => {
                vec![text("share"), text(si), int(u64::from(*shnum)), text(account), int(*size)]
            }
            Change::Forget { si, shnum } => vec![text("forget"), text(si), int(u64::from(*shnum))],
            Change::WriteEnabler { si, shnum, hash } => {
                vec![text("write-enabler"), text(si), int(u64::from(*shnum)), Value::Bytes(hash.clone())]
            }
        };
        let mut all = vec![int(1)];
        all.extend(fields);
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(&Value::Array(all), &mut out);
        out
    }

    /// Read a change record.
    pub fn decode(bytes: &[u8]) -> Result<Change, BadChange> {
        let bad = |m: &str| BadChange(m.to_owned());
        let value: Value = ciborium::de::from_reader(bytes).map_err(|e| BadChange(format!("not CBOR: {e}")))?;
        let Value::Array(items) = value else { return Err(bad("not an array")) };
        let mut it = items.into_iter();
        let mut next = || it.next().ok_or_else(|| bad("too few fields"));
        let num = |v: Value| -> Result<u64, BadChange> {
            v.as_integer().and_then(|i| u64::try_from(i).ok()).ok_or_else(|| bad("expected a number"))
        };
        let string = |v: Value| -> Result<String, BadChange> {
            match v {
                Value::Text(s) => Ok(s),
                _ => Err(bad("expected text")),
            }
        };
        let bytes = |v: Value| -> Result<Vec<u8>, BadChange> {
            match v {
                Value::Bytes(b) if b.len() == 32 => Ok(b),
                _ => Err(bad("expected a 32-byte hash")),
            }
        };
        let shnum = |v: Value| -> Result<u16, BadChange> { u16::try_from(num(v)?).map_err(|_| bad("share number")) };
        if num(next()?)? != 1 {
            return Err(bad("unknown format version"));
        }
        let change = match string(next()?)?.as_str() {
            "account" => Change::Account { name: string(next()?)?, swissnum: string(next()?)?, created: num(next()?)? },
            "attribute" => Change::Attribute {
                account: string(next()?)?,
                key: string(next()?)?,
                value: match next()? {
                    Value::Null => None,
                    v => Some(string(v)?),
                },
            },
            "revoked" => Change::Revoked { account: string(next()?)?, at: num(next()?)? },
            "lease" => Change::Lease {
                si: string(next()?)?,
                shnum: shnum(next()?)?,
                renew_hash: bytes(next()?)?,
                cancel_hash: bytes(next()?)?,
                expires: num(next()?)?,
                account: string(next()?)?,
            },
            "share" => Change::Share {
                si: string(next()?)?,
                shnum: shnum(next()?)?,
                account: string(next()?)?,
                size: num(next()?)?,
            },
            "forget" => Change::Forget { si: string(next()?)?, shnum: shnum(next()?)? },
            "write-enabler" => {
                Change::WriteEnabler { si: string(next()?)?, shnum: shnum(next()?)?, hash: bytes(next()?)? }
            }
            other => return Err(BadChange(format!("unknown kind `{other}`"))),
        };
        Ok(change)
    }

    /// Apply to the tables (not the log) inside `tx`. Idempotent.
    pub(crate) fn apply(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let id = |name: &str| -> rusqlite::Result<i64> {
            tx.query_row("SELECT id FROM accounts WHERE name = ?1", [name], |r| r.get(0))
        };
        match self {
            Change::Account { name, swissnum, created } => {
                tx.execute(
                    "INSERT OR IGNORE INTO accounts (name, swissnum, swissnum_hash, created) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        name,
                        swissnum,
                        crate::hash(&crate::authorization_value(swissnum)).as_slice(),
                        *created as i64
                    ],
                )?;
            }
            Change::Attribute { account, key, value } => {
                let id = id(account)?;
                match value {
                    Some(v) => tx.execute(
                        "INSERT INTO attributes (account, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (account, key) DO UPDATE SET value = excluded.value",
                        params![id, key, v],
                    )?,
                    None => tx.execute("DELETE FROM attributes WHERE account = ?1 AND key = ?2", params![id, key])?,
                };
            }
            Change::Revoked { account, at } => {
                tx.execute(
                    "UPDATE accounts SET revoked = coalesce(revoked, ?2) WHERE name = ?1",
                    params![account, *at as i64],
                )?;
            }
            Change::Lease { si, shnum, renew_hash, cancel_hash, expires, account } => {
                tx.execute(
                    "INSERT INTO leases (si, shnum, renew_hash, cancel_hash, expires, account) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (si, shnum, renew_hash) DO UPDATE SET expires = max(expires, excluded.expires)",
                    params![si, shnum, renew_hash, cancel_hash, *expires as i64, id(account)?],
                )?;
            }
            Change::Share { si, shnum, account, size } => {
                tx.execute(
                    "INSERT INTO shares (si, shnum, account, size) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (si, shnum) DO UPDATE SET size = excluded.size",
                    params![si, shnum, id(account)?, *size as i64],
                )?;
            }
            Change::Forget { si, shnum } => {
                tx.execute("DELETE FROM leases WHERE si = ?1 AND shnum = ?2", params![si, shnum])?;
                tx.execute("DELETE FROM write_enablers WHERE si = ?1 AND shnum = ?2", params![si, shnum])?;
                tx.execute("DELETE FROM shares WHERE si = ?1 AND shnum = ?2", params![si, shnum])?;
            }
            Change::WriteEnabler { si, shnum, hash } => {
                tx.execute(
                    "INSERT OR REPLACE INTO write_enablers (si, shnum, enabler_hash) VALUES (?1, ?2, ?3)",
                    params![si, shnum, hash],
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_junk_is_refused() {
        let all = [
            Change::Account { name: "a".into(), swissnum: "s".into(), created: 5 },
            Change::Attribute { account: "a".into(), key: "quota".into(), value: Some("10".into()) },
            Change::Attribute { account: "a".into(), key: "nickname".into(), value: None },
            Change::Revoked { account: "a".into(), at: 9 },
            Change::Lease {
                si: "x".into(),
                shnum: 3,
                renew_hash: vec![1; 32],
                cancel_hash: vec![2; 32],
                expires: 77,
                account: "anonymous".into(),
            },
            Change::Share { si: "x".into(), shnum: 3, account: "a".into(), size: 100 },
            Change::Forget { si: "x".into(), shnum: 3 },
            Change::WriteEnabler { si: "x".into(), shnum: 1, hash: vec![3; 32] },
        ];
        for c in all {
            assert_eq!(Change::decode(&c.encode()).unwrap(), c);
        }
        for junk in [&b""[..], b"\xff\xff", &Change::Forget { si: "x".into(), shnum: 1 }.encode()[..4]] {
            assert!(Change::decode(junk).is_err());
        }
    }
}

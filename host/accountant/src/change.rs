//! Change records: every mutation of accounting state is one [`Change`], applied and logged in
//! the same transaction, so the log and the tables never disagree. Persistence strategies carry
//! the encoded changes off the machine; recovery applies them again. Applying is idempotent
//! (upserts keyed by what the change is about), so replaying a change twice is harmless.
//!
//! Encoding: CBOR, an array `[version, kind, fields...]`.
//! - Version 2 (written now) names the share kind of every share-scoped change (`lease`,
//!   `share`, `forget`) right after the change kind: `["lease", "mutable", si, ...]`.
//! - Version 1 (written before share kinds were kept apart) is still read. Its share-scoped
//!   changes carry no kind ([`ShareRef::kind`] is `None`); applying one resolves it by the rule
//!   the schema migration uses, at that point of the replay: a share with a recorded write
//!   enabler is mutable, any other is immutable (only an immutable and a mutable share of one
//!   storage index and number, which honest clients never make, can come out differently from
//!   the migration's reading of the final state). A version-1 `forget` forgets both kinds, as
//!   it did when it was written. A share-scoped change decoded from version 1 encodes back to
//!   the same version-1 bytes; other changes encode as version 2, which differs only in the
//!   leading number.
//!
//! A lease's secrets are kept as SHA-256 hashes (`lease`, what marsh wrote before schema 6)
//! or as BLAKE2b-256 hashes, as Tahoe-LAFS keeps them in its share containers (`lease-b2`,
//! written now: a node adopted from Tahoe keeps its clients' leases, and one moved back hands
//! them over). The fields are the same; the kind says which hash they hold.
//!
//! Decoding validates every field: canonical storage indexes, 32-byte hashes, share numbers,
//! attribute values that parse. A record that does not is refused whole.

use ciborium::value::Value;
use marsh_core::{ShareId, ShareKind, ShareNumber, StorageIndex};
use marsh_sql::{Conn, Query, SqlError, params};

use crate::Attribute;

/// A share as a change names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareRef {
    /// Its kind; `None` only in version-1 records, which could not say.
    pub kind: Option<ShareKind>,
    /// The storage index.
    pub si: StorageIndex,
    /// The share number.
    pub shnum: ShareNumber,
}

/// Which hash a lease's secrets are kept as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseHash {
    /// SHA-256: leases marsh recorded before schema 6.
    Sha256,
    /// BLAKE2b-256, unkeyed: Tahoe-LAFS's own (schema-2 containers), and every new lease.
    Blake2b,
}

impl LeaseHash {
    /// The stored spelling (`leases.scheme`).
    pub(crate) fn code(self) -> i64 {
        match self {
            LeaseHash::Sha256 => 0,
            LeaseHash::Blake2b => 1,
        }
    }

    /// From the stored spelling.
    pub(crate) fn from_code(code: i64) -> Option<LeaseHash> {
        match code {
            0 => Some(LeaseHash::Sha256),
            1 => Some(LeaseHash::Blake2b),
            _ => None,
        }
    }

    /// `secret` hashed this way.
    pub fn of(self, secret: &[u8]) -> [u8; 32] {
        match self {
            LeaseHash::Sha256 => crate::hash(secret),
            LeaseHash::Blake2b => crate::blake2b(secret),
        }
    }
}

impl From<&ShareId> for ShareRef {
    fn from(id: &ShareId) -> Self {
        ShareRef { kind: Some(id.kind), si: id.si, shnum: id.shnum }
    }
}

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
    /// An attribute was set.
    Attribute {
        /// The account.
        account: String,
        /// The attribute and its new value.
        attribute: Attribute,
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
        /// The share.
        share: ShareRef,
        /// How its secrets are hashed.
        hash: LeaseHash,
        /// The renew secret's hash.
        renew_hash: [u8; 32],
        /// The cancel secret's hash.
        cancel_hash: [u8; 32],
        /// Expiry.
        expires: u64,
        /// The account holding it.
        account: String,
    },
    /// An account holds a share of this size.
    Share {
        /// The share.
        share: ShareRef,
        /// The account.
        account: String,
        /// Bytes.
        size: u64,
    },
    /// Everything about a share was forgotten (deleted, or its upload aborted).
    Forget {
        /// The share.
        share: ShareRef,
    },
    /// The write enabler of a new mutable share (write enablers exist for mutable shares only).
    WriteEnabler {
        /// Storage index.
        si: StorageIndex,
        /// Share number.
        shnum: ShareNumber,
        /// SHA-256 of the enabler.
        hash: [u8; 32],
    },
    /// A mutable share's write enabler kept raw as well (`storage.keep-write-enablers`), as a
    /// Tahoe node keeps it, for `marsh export-tahoe`.
    RawWriteEnabler {
        /// Storage index.
        si: StorageIndex,
        /// Share number.
        shnum: ShareNumber,
        /// The enabler, 1 to 64 bytes.
        enabler: Vec<u8>,
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

/// The stored spelling of a share kind (`kind` columns).
pub(crate) fn kind_code(kind: ShareKind) -> i64 {
    match kind {
        ShareKind::Immutable => 0,
        ShareKind::Mutable => 1,
    }
}

/// Whether a write enabler is recorded for the mutable share `si`/`shnum`.
pub(crate) fn has_write_enabler(c: &mut dyn Conn, si: &StorageIndex, shnum: ShareNumber) -> Result<bool, SqlError> {
    Ok(c.value::<i64>("SELECT 1 FROM write_enablers WHERE si = ?1 AND shnum = ?2", &params![si.to_base32(), shnum.0])?
        .is_some())
}

/// An attribute as its key and stored value.
pub(crate) fn attribute_entry(attribute: &Attribute) -> (&'static str, Option<String>) {
    match attribute {
        Attribute::Write(w) => ("write", Some(w.to_string())),
        Attribute::Quota(q) => ("quota", q.map(|q| q.to_string())),
        Attribute::Nickname(n) => ("nickname", n.clone()),
    }
}

/// An attribute from its key and stored value; anything that does not parse is an error,
/// never a default.
pub(crate) fn parse_attribute(key: &str, value: Option<&str>) -> Result<Attribute, BadChange> {
    let bad = || BadChange(format!("attribute `{key}` has the unreadable value {value:?}"));
    match key {
        "write" => match value {
            Some("true") => Ok(Attribute::Write(true)),
            Some("false") => Ok(Attribute::Write(false)),
            _ => Err(bad()),
        },
        "quota" => match value {
            None => Ok(Attribute::Quota(None)),
            Some(v) => v.parse().map(|q| Attribute::Quota(Some(q))).map_err(|_| bad()),
        },
        "nickname" => Ok(Attribute::Nickname(value.map(str::to_owned))),
        other => Err(BadChange(format!("unknown attribute `{other}`"))),
    }
}

impl Change {
    /// Whether applying it changes who a caller is (accounts, their attributes, revocation).
    pub fn touches_accounts(&self) -> bool {
        matches!(self, Change::Account { .. } | Change::Attribute { .. } | Change::Revoked { .. })
    }

    /// The CBOR bytes: version 2, or version 1 for a change read from a version-1 record.
    pub fn encode(&self) -> Vec<u8> {
        let legacy = matches!(
            self,
            Change::Lease { share: ShareRef { kind: None, .. }, .. }
                | Change::Share { share: ShareRef { kind: None, .. }, .. }
                | Change::Forget { share: ShareRef { kind: None, .. } }
        );
        // The share-scoped head: the change kind, then (version 2) the share kind, si, shnum.
        let head = |name: &str, share: &ShareRef| {
            let mut v = vec![text(name)];
            if let Some(kind) = share.kind {
                v.push(text(kind.as_str()));
            }
            v.extend([text(&share.si.to_base32()), int(u64::from(share.shnum.0))]);
            v
        };
        let fields = match self {
            Change::Account { name, swissnum, created } => {
                vec![text("account"), text(name), text(swissnum), int(*created)]
            }
            Change::Attribute { account, attribute } => {
                let (key, value) = attribute_entry(attribute);
                vec![text("attribute"), text(account), text(key), value.as_deref().map_or(Value::Null, text)]
            }
            Change::Revoked { account, at } => vec![text("revoked"), text(account), int(*at)],
            Change::Lease { share, hash, renew_hash, cancel_hash, expires, account } => {
                let mut v = head(if *hash == LeaseHash::Sha256 { "lease" } else { "lease-b2" }, share);
                v.extend([
                    Value::Bytes(renew_hash.to_vec()),
                    Value::Bytes(cancel_hash.to_vec()),
                    int(*expires),
                    text(account),
                ]);
                v
            }
            Change::Share { share, account, size } => {
                let mut v = head("share", share);
                v.extend([text(account), int(*size)]);
                v
            }
            Change::Forget { share } => head("forget", share),
            Change::WriteEnabler { si, shnum, hash } => {
                vec![text("write-enabler"), text(&si.to_base32()), int(u64::from(shnum.0)), Value::Bytes(hash.to_vec())]
            }
            Change::RawWriteEnabler { si, shnum, enabler } => vec![
                text("write-enabler-raw"),
                text(&si.to_base32()),
                int(u64::from(shnum.0)),
                Value::Bytes(enabler.clone()),
            ],
        };
        let mut all = vec![int(if legacy { 1 } else { 2 })];
        all.extend(fields);
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(&Value::Array(all), &mut out);
        out
    }

    /// Read a change record (version 1 or 2).
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
        let hash = |v: Value| -> Result<[u8; 32], BadChange> {
            match v {
                Value::Bytes(b) => b.try_into().map_err(|_| bad("expected a 32-byte hash")),
                _ => Err(bad("expected a 32-byte hash")),
            }
        };
        let si = |v: Value| -> Result<StorageIndex, BadChange> {
            string(v)?.parse().map_err(|_| bad("not a canonical storage index"))
        };
        let shnum = |v: Value| -> Result<ShareNumber, BadChange> {
            u16::try_from(num(v)?).map(ShareNumber).map_err(|_| bad("share number"))
        };
        let version = num(next()?)?;
        if !(1..=2).contains(&version) {
            return Err(bad("unknown format version"));
        }
        let share = |next: &mut dyn FnMut() -> Result<Value, BadChange>| -> Result<ShareRef, BadChange> {
            let kind = if version == 2 {
                Some(match string(next()?)?.as_str() {
                    "immutable" => ShareKind::Immutable,
                    "mutable" => ShareKind::Mutable,
                    _ => return Err(bad("unknown share kind")),
                })
            } else {
                None
            };
            Ok(ShareRef { kind, si: si(next()?)?, shnum: shnum(next()?)? })
        };
        let change = match string(next()?)?.as_str() {
            "account" => Change::Account { name: string(next()?)?, swissnum: string(next()?)?, created: num(next()?)? },
            "attribute" => {
                let account = string(next()?)?;
                let key = string(next()?)?;
                let value = match next()? {
                    Value::Null => None,
                    v => Some(string(v)?),
                };
                Change::Attribute { account, attribute: parse_attribute(&key, value.as_deref())? }
            }
            "revoked" => Change::Revoked { account: string(next()?)?, at: num(next()?)? },
            kind @ ("lease" | "lease-b2") => Change::Lease {
                share: share(&mut next)?,
                hash: if kind == "lease" { LeaseHash::Sha256 } else { LeaseHash::Blake2b },
                renew_hash: hash(next()?)?,
                cancel_hash: hash(next()?)?,
                expires: num(next()?)?,
                account: string(next()?)?,
            },
            "share" => Change::Share { share: share(&mut next)?, account: string(next()?)?, size: num(next()?)? },
            "forget" => Change::Forget { share: share(&mut next)? },
            "write-enabler" => Change::WriteEnabler { si: si(next()?)?, shnum: shnum(next()?)?, hash: hash(next()?)? },
            "write-enabler-raw" => Change::RawWriteEnabler {
                si: si(next()?)?,
                shnum: shnum(next()?)?,
                enabler: match next()? {
                    Value::Bytes(b) if (1..=64).contains(&b.len()) => b,
                    _ => return Err(bad("expected a write enabler of 1 to 64 bytes")),
                },
            },
            other => return Err(BadChange(format!("unknown kind `{other}`"))),
        };
        if next().is_ok() {
            return Err(bad("too many fields"));
        }
        Ok(change)
    }

    /// Apply to the tables (not the log) inside a transaction on `c`. Idempotent.
    pub(crate) fn apply(&self, c: &mut dyn Conn) -> Result<(), SqlError> {
        let id = |c: &mut dyn Conn, name: &str| -> Result<i64, SqlError> {
            c.value("SELECT id FROM accounts WHERE name = ?1", &params![name])?.ok_or(SqlError::NoRow)
        };
        // A version-1 record's share: mutable when it has a write enabler (the migration's rule).
        let kind = |c: &mut dyn Conn, share: &ShareRef| -> Result<i64, SqlError> {
            match share.kind {
                Some(k) => Ok(kind_code(k)),
                None => Ok(i64::from(has_write_enabler(c, &share.si, share.shnum)?)),
            }
        };
        match self {
            Change::Account { name, swissnum, created } => {
                c.execute(
                    "INSERT INTO accounts (name, swissnum, swissnum_hash, created) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    &params![name, swissnum, crate::hash(&crate::authorization_value(swissnum)), *created],
                )?;
            }
            Change::Attribute { account, attribute } => {
                let id = id(c, account)?;
                match attribute_entry(attribute) {
                    (key, Some(v)) => c.execute(
                        "INSERT INTO attributes (account, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (account, key) DO UPDATE SET value = excluded.value",
                        &params![id, key, v],
                    )?,
                    (key, None) => {
                        c.execute("DELETE FROM attributes WHERE account = ?1 AND key = ?2", &params![id, key])?
                    }
                };
            }
            Change::Revoked { account, at } => {
                c.execute(
                    "UPDATE accounts SET revoked = coalesce(revoked, ?2) WHERE name = ?1",
                    &params![account, *at],
                )?;
            }
            Change::Lease { share, hash, renew_hash, cancel_hash, expires, account } => {
                // Every renewal comes here: the statement is prepared once per connection.
                let (kind, account) = (kind(c, share)?, id(c, account)?);
                c.execute(
                    "INSERT INTO leases (kind, si, shnum, renew_hash, cancel_hash, expires, account, scheme)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (kind, si, shnum, renew_hash) DO UPDATE
                     SET expires = CASE WHEN excluded.expires > leases.expires THEN excluded.expires ELSE leases.expires END",
                    &params![kind, share.si.to_base32(), share.shnum.0, renew_hash, cancel_hash, *expires, account, hash.code()],
                )?;
            }
            Change::Share { share, account, size } => {
                // Every read-test-write comes here and to the enablers below: prepared once.
                let (kind, account) = (kind(c, share)?, id(c, account)?);
                c.execute(
                    "INSERT INTO shares (kind, si, shnum, account, size) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (kind, si, shnum) DO UPDATE SET size = excluded.size",
                    &params![kind, share.si.to_base32(), share.shnum.0, account, *size],
                )?;
            }
            Change::Forget { share } => {
                let (si, n) = (share.si.to_base32(), share.shnum.0);
                // A version-1 forget meant both kinds; a version-2 one means exactly its own.
                let kinds: &[i64] = match share.kind {
                    Some(k) => &[kind_code(k)][..],
                    None => &[0, 1],
                };
                for k in kinds {
                    c.execute("DELETE FROM leases WHERE kind = ?1 AND si = ?2 AND shnum = ?3", &params![*k, &si, n])?;
                    c.execute("DELETE FROM shares WHERE kind = ?1 AND si = ?2 AND shnum = ?3", &params![*k, &si, n])?;
                }
                if share.kind != Some(ShareKind::Immutable) {
                    c.execute("DELETE FROM write_enablers WHERE si = ?1 AND shnum = ?2", &params![&si, n])?;
                    c.execute("DELETE FROM write_enablers_raw WHERE si = ?1 AND shnum = ?2", &params![&si, n])?;
                }
            }
            Change::WriteEnabler { si, shnum, hash } => {
                let si = si.to_base32();
                c.execute(
                    "INSERT INTO write_enablers (si, shnum, enabler_hash) VALUES (?1, ?2, ?3)
                     ON CONFLICT (si, shnum) DO UPDATE SET enabler_hash = excluded.enabler_hash",
                    &params![&si, shnum.0, hash],
                )?;
                // A kept raw enabler that is not this one's (the share was made again) goes.
                let raw: Option<Vec<u8>> = c.value(
                    "SELECT enabler FROM write_enablers_raw WHERE si = ?1 AND shnum = ?2",
                    &params![&si, shnum.0],
                )?;
                if raw.is_some_and(|raw| crate::hash(&raw) != *hash) {
                    c.execute("DELETE FROM write_enablers_raw WHERE si = ?1 AND shnum = ?2", &params![&si, shnum.0])?;
                }
            }
            Change::RawWriteEnabler { si, shnum, enabler } => {
                c.execute(
                    "INSERT INTO write_enablers_raw (si, shnum, enabler) VALUES (?1, ?2, ?3)
                     ON CONFLICT (si, shnum) DO UPDATE SET enabler = excluded.enabler",
                    &params![si.to_base32(), shnum.0, enabler.as_slice()],
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn si() -> StorageIndex {
        StorageIndex::from_bytes([7; 16])
    }

    #[test]
    fn every_kind_round_trips_and_junk_is_refused() {
        let share = |kind| ShareRef { kind, si: si(), shnum: ShareNumber(3) };
        let all = [
            Change::Account { name: "a".into(), swissnum: "s".into(), created: 5 },
            Change::Attribute { account: "a".into(), attribute: Attribute::Quota(Some(10)) },
            Change::Attribute { account: "a".into(), attribute: Attribute::Nickname(None) },
            Change::Attribute { account: "a".into(), attribute: Attribute::Write(false) },
            Change::Revoked { account: "a".into(), at: 9 },
            Change::Lease {
                share: share(Some(ShareKind::Mutable)),
                hash: LeaseHash::Sha256,
                renew_hash: [1; 32],
                cancel_hash: [2; 32],
                expires: 77,
                account: "anonymous".into(),
            },
            Change::Lease {
                share: share(Some(ShareKind::Immutable)),
                hash: LeaseHash::Blake2b,
                renew_hash: [1; 32],
                cancel_hash: [2; 32],
                expires: 77,
                account: "anonymous".into(),
            },
            Change::Share { share: share(Some(ShareKind::Immutable)), account: "a".into(), size: 100 },
            Change::Forget { share: share(Some(ShareKind::Mutable)) },
            Change::Forget { share: share(None) },
            Change::WriteEnabler { si: si(), shnum: ShareNumber(1), hash: [3; 32] },
            Change::RawWriteEnabler { si: si(), shnum: ShareNumber(1), enabler: vec![4; 32] },
        ];
        for c in all {
            assert_eq!(Change::decode(&c.encode()).unwrap(), c);
        }
        let forget = Change::Forget { share: share(Some(ShareKind::Immutable)) }.encode();
        for junk in [&b""[..], b"\xff\xff", &forget[..4]] {
            assert!(Change::decode(junk).is_err());
        }
    }

    /// Version-1 records exactly as the previous release wrote them.
    fn v1(fields: Vec<Value>) -> Vec<u8> {
        let mut all = vec![int(1)];
        all.extend(fields);
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Value::Array(all), &mut out).unwrap();
        out
    }

    #[test]
    fn version_one_records_still_read_and_encode_back_unchanged() {
        let s = si().to_base32();
        let lease = v1(vec![
            text("lease"),
            text(&s),
            int(3),
            Value::Bytes(vec![1; 32]),
            Value::Bytes(vec![2; 32]),
            int(77),
            text("anonymous"),
        ]);
        let c = Change::decode(&lease).unwrap();
        assert!(matches!(c, Change::Lease { share: ShareRef { kind: None, .. }, expires: 77, .. }));
        assert_eq!(c.encode(), lease);
        let forget = v1(vec![text("forget"), text(&s), int(3)]);
        assert_eq!(Change::decode(&forget).unwrap().encode(), forget);
        let attr = v1(vec![text("attribute"), text("a"), text("quota"), text("10")]);
        assert_eq!(
            Change::decode(&attr).unwrap(),
            Change::Attribute { account: "a".into(), attribute: Attribute::Quota(Some(10)) }
        );
    }

    #[test]
    fn malformed_fields_are_refused_not_defaulted() {
        let s = si().to_base32();
        for bad in [
            v1(vec![text("attribute"), text("a"), text("quota"), text("lots")]),
            v1(vec![text("attribute"), text("a"), text("write"), text("yes")]),
            v1(vec![text("attribute"), text("a"), text("colour"), text("red")]),
            v1(vec![text("forget"), text("NOT-A-STORAGE-INDEX"), int(3)]),
            v1(vec![text("forget"), text(&s), int(70_000)]),
            v1(vec![text("forget"), text(&s), int(3), int(4)]),
            v1(vec![text("write-enabler"), text(&s), int(1), Value::Bytes(vec![3; 31])]),
        ] {
            assert!(Change::decode(&bad).is_err(), "{bad:?}");
        }
        let mut two =
            Change::Forget { share: ShareRef { kind: Some(ShareKind::Mutable), si: si(), shnum: ShareNumber(1) } }
                .encode();
        // Corrupt the share kind's text ("mutable" -> "mutablf").
        let at = two.windows(7).position(|w| w == b"mutable").unwrap();
        two[at + 6] = b'f';
        assert!(Change::decode(&two).is_err());
    }
}

//! Identifiers of the domain: [`StorageIndex`] (16 bytes, shown as canonical base32) and
//! [`ShareNumber`]. Parsing accepts only the one canonical spelling, so an identifier used as
//! a key or path component is unique.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;

/// The storage index of a Tahoe-LAFS file: 16 bytes derived by the client.
///
/// Storage indexes order as their base32 spelling does (digits `2`-`7` before letters),
/// because that is the order in which every store lists the keys built from them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StorageIndex([u8; 16]);

impl Ord for StorageIndex {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.symbols().cmp(&other.symbols())
    }
}

impl PartialOrd for StorageIndex {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a string is not a canonical storage index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a canonical storage index (26 lowercase base32 characters): {0:?}")]
pub struct ParseStorageIndexError(String);

impl StorageIndex {
    /// The raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        StorageIndex(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The 26-character lowercase base32 spelling.
    pub fn to_base32(&self) -> String {
        self.symbols().iter().map(|&c| char::from(c)).collect()
    }

    /// The 26 ASCII characters of the spelling, without allocating.
    fn symbols(&self) -> [u8; 26] {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let bits = u128::from_be_bytes(self.0);
        let mut out = [0u8; 26];
        for (i, c) in out.iter_mut().enumerate() {
            // Symbol i holds bits 123-5i ..= 127-5i; the last one is padded with two zeros.
            let shift = 123 - 5 * i as i32;
            let v = if shift >= 0 { (bits >> shift) & 31 } else { (bits << -shift) & 31 };
            *c = ALPHABET[v as usize];
        }
        out
    }
}

impl FromStr for StorageIndex {
    type Err = ParseStorageIndexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseStorageIndexError(s.chars().take(64).collect());
        if s.len() != 26 || !s.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)) {
            return Err(err());
        }
        let bytes = BASE32_NOPAD.decode(s.to_ascii_uppercase().as_bytes()).map_err(|_| err())?;
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| err())?;
        // 26 characters carry 130 bits; only the spelling with zero padding bits is canonical.
        let si = StorageIndex(bytes);
        if si.to_base32() == s { Ok(si) } else { Err(err()) }
    }
}

impl fmt::Display for StorageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base32())
    }
}

impl fmt::Debug for StorageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageIndex({self})")
    }
}

/// The number of one share of a file (0..=255 in practice; the wire allows any u16 here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShareNumber(pub u16);

impl fmt::Display for ShareNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which of a storage index's two share spaces a share lives in. Tahoe keeps immutable and
/// mutable shares apart: the same storage index and share number can name one of each, and
/// nothing done to one may touch the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShareKind {
    /// A share written once through an upload.
    Immutable,
    /// A share of a mutable slot, written by read-test-write.
    Mutable,
}

impl ShareKind {
    /// `immutable` or `mutable`, as the protocol's paths spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareKind::Immutable => "immutable",
            ShareKind::Mutable => "mutable",
        }
    }
}

impl fmt::Display for ShareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One share: its kind, storage index and number. Every accounting key is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShareId {
    /// Immutable or mutable.
    pub kind: ShareKind,
    /// The storage index.
    pub si: StorageIndex,
    /// The share number.
    pub shnum: ShareNumber,
}

impl ShareId {
    /// An immutable share.
    pub fn immutable(si: StorageIndex, shnum: ShareNumber) -> Self {
        ShareId { kind: ShareKind::Immutable, si, shnum }
    }

    /// A mutable share.
    pub fn mutable(si: StorageIndex, shnum: ShareNumber) -> Self {
        ShareId { kind: ShareKind::Mutable, si, shnum }
    }
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.si, self.shnum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_non_canonical() {
        let si = StorageIndex::from_bytes(*b"0123456789abcdef");
        let s = si.to_base32();
        assert_eq!(s.len(), 26);
        assert_eq!(s.parse::<StorageIndex>(), Ok(si));
        // The reference's own example of a non-canonical spelling.
        assert!("nomd2a65ylxjbqzsw7gcfh4ivr".parse::<StorageIndex>().is_err());
        assert!("nomd2a65ylxjbqzsw7gcfh4iva".parse::<StorageIndex>().is_ok());
        assert_eq!(BASE32_NOPAD.encode(si.as_bytes()).to_ascii_lowercase(), s);
        // Order follows the spelling, which puts digits before letters.
        let digits: StorageIndex = "2aaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap();
        let letters: StorageIndex = "aaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap();
        assert!(digits < letters);
        assert!(digits.as_bytes() > letters.as_bytes());
        for bad in
            ["", "aaaa", "AAAAAAAAAAAAAAAAAAAAAAAAAA", "aaaaaaaaaaaaaaaaaaaaaaaaa1", "aaaaaaaaaaaaaaaaaaaaaaaaaaa"]
        {
            assert!(bad.parse::<StorageIndex>().is_err(), "{bad}");
        }
    }
}

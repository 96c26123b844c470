//! [`BlobKey`]: a validated store key. Every driver takes keys only in this form, so the
//! rules that keep a plugin inside its store are checked in one place.

use std::fmt;

use crate::StoreError;

/// Components starting with this, in any letter case, are the drivers' own (temporary files,
/// the host's namespace) and never keys: a case-insensitive store (a macOS or Windows disk,
/// some S3 gateways) would otherwise take `.MARSH-HOST` for `.marsh-host`.
const RESERVED_PREFIX: &str = ".marsh";

/// Whether one key component lies in the reserved namespace, in any letter case.
pub(crate) fn reserved_component(component: &str) -> bool {
    component.get(..RESERVED_PREFIX.len()).is_some_and(|head| head.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// A `/`-separated relative key of printable ASCII (space to `~`): no empty, `.` or `..`
/// component, no leading or trailing slash, no backslash, no reserved component, at most 1024
/// bytes.
///
/// ASCII only, because a store may compare names the way its file system does: a
/// case-insensitive one with Unicode case folding (APFS, NTFS) takes `.marſh-host` (long s) for
/// `.marsh-host`, and `ſtash` for a strategy's `stash`, where an ASCII comparison does not. With
/// every key ASCII, comparing ASCII letter case is the whole comparison.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobKey(String);

impl BlobKey {
    /// Validate a key.
    pub fn new(key: &str) -> Result<Self, StoreError> {
        let bad = key.is_empty()
            || key.len() > 1024
            || key.starts_with('/')
            || key.ends_with('/')
            || !key.bytes().all(|b| (b' '..=b'~').contains(&b))
            || key.contains('\\')
            || key.split('/').any(|c| c.is_empty() || c == "." || c == ".." || reserved_component(c));
        if bad {
            Err(StoreError::BadKey(format!("{:?}", key.chars().take(80).collect::<String>())))
        } else {
            Ok(BlobKey(key.to_owned()))
        }
    }

    /// A key in the host's own namespace (`.marsh-host/NAME`), e.g. the owner record. Plugins
    /// cannot name it: [`BlobKey::new`] refuses reserved components, and listings skip them.
    pub fn host(name: &str) -> Result<Self, StoreError> {
        let plain = BlobKey::new(name)?;
        Ok(BlobKey(format!("{RESERVED_PREFIX}-host/{}", plain.0)))
    }

    /// Whether a listed key lies in a reserved namespace (drivers leave such keys out of listings).
    pub fn is_reserved(key: &str) -> bool {
        key.split('/').any(reserved_component)
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Everything before the last `/`, if any.
    pub fn parent(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(p, _)| p)
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobKey({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confined_keys_pass() {
        for good in ["a", "shares/ab/abcdef/0", "x.y", "a-b_c"] {
            assert!(BlobKey::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "./a",
            "a\\b",
            "a\0b",
            ".marsh-tmp/x",
            "a/.marshx",
            ".MARSH-HOST/owner",
            "a/.Marsh-tmp",
        ] {
            assert!(matches!(BlobKey::new(bad), Err(StoreError::BadKey(_))), "{bad:?}");
        }
        assert!(BlobKey::new(&"a".repeat(1025)).is_err());
        // Near misses are ordinary keys.
        for near in [".mars", "marsh-host", ".marsx", "x.marsh", "a b"] {
            assert!(BlobKey::new(near).is_ok(), "{near:?}");
        }
        // Nothing but printable ASCII: no letter a file system might fold into a reserved name
        // (long s, Kelvin sign, fullwidth letters), no control character.
        for folded in
            [".mar\u{17f}h-host/owner", "\u{17f}tash/g1", ".marsh\u{212a}", "\u{ff4d}arsh", "a\tb", "a\nb", "é"]
        {
            assert!(matches!(BlobKey::new(folded), Err(StoreError::BadKey(_))), "{folded:?}");
        }
    }

    #[test]
    fn listings_hide_the_reserved_namespace_in_any_case() {
        for hidden in [".marsh-host/owner", ".MaRsH-HoSt/owner", "shares/.MARSH-tmp-1"] {
            assert!(BlobKey::is_reserved(hidden), "{hidden:?}");
        }
        assert!(!BlobKey::is_reserved("shares/marsh"));
    }
}

//! Authorization: the swissnum in `Authorization`, and the per-operation secrets in
//! `X-Tahoe-Authorization`, checked the way the reference server checks them, except that the
//! length of every secret is bounded: lease secrets are [`LEASE_SECRET_LENGTH`] bytes (as the
//! reference requires), upload secrets and write enablers [`MIN_SECRET_LENGTH`] to
//! [`MAX_SECRET_LENGTH`] (Tahoe 1.20's client sends 20-byte upload secrets and 32-byte write
//! enablers; its own tests send upload secrets of 2 bytes, so only the upper bound is new). The reference takes those two at any length, which lets one request make the
//! server keep (and copy per share) whatever a client sends.

use std::collections::BTreeMap;

use data_encoding::BASE64;
use http::HeaderMap;

/// The length of a lease renew or cancel secret.
pub const LEASE_SECRET_LENGTH: usize = 32;
/// The shortest upload secret or write enabler accepted (not empty).
pub const MIN_SECRET_LENGTH: usize = 1;
/// The longest upload secret or write enabler accepted.
pub const MAX_SECRET_LENGTH: usize = 64;

/// The kinds of per-operation secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretKind {
    /// `lease-renew-secret` (32 bytes).
    LeaseRenew,
    /// `lease-cancel-secret` (32 bytes).
    LeaseCancel,
    /// `upload-secret` (1 to 64 bytes; the 1.20 client sends 20).
    Upload,
    /// `write-enabler` (1 to 64 bytes; the 1.20 client sends 32).
    WriteEnabler,
}

impl SecretKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "lease-renew-secret" => SecretKind::LeaseRenew,
            "lease-cancel-secret" => SecretKind::LeaseCancel,
            "upload-secret" => SecretKind::Upload,
            "write-enabler" => SecretKind::WriteEnabler,
            _ => return None,
        })
    }
}

/// The secrets of one request, by kind.
pub type Secrets = BTreeMap<SecretKind, Vec<u8>>;

/// Why authorization failed, with the status it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// 400.
    BadRequest(String),
    /// 401.
    Unauthorized(String),
}

/// Constant-time equality of two byte strings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parse every `X-Tahoe-Authorization` header and require exactly the kinds in `required`.
pub fn secrets(headers: &HeaderMap, required: &[SecretKind]) -> Result<Secrets, AuthError> {
    let bad = |m: String| AuthError::BadRequest(m);
    let mut out = Secrets::new();
    for value in headers.get_all("x-tahoe-authorization") {
        let value = value.to_str().map_err(|_| bad("X-Tahoe-Authorization is not text".into()))?;
        // Accept comma-joined values too: base64 has no commas.
        for item in value.split(',').take(8) {
            let item = item.trim();
            let Some((kind, secret)) = item.split_once(' ') else {
                return Err(bad(format!("secret without a value: {item:?}")));
            };
            let kind = SecretKind::parse(kind).ok_or_else(|| bad(format!("unknown secret kind {kind:?}")))?;
            let (min, max) = match kind {
                SecretKind::LeaseRenew | SecretKind::LeaseCancel => (LEASE_SECRET_LENGTH, LEASE_SECRET_LENGTH),
                SecretKind::Upload | SecretKind::WriteEnabler => (MIN_SECRET_LENGTH, MAX_SECRET_LENGTH),
            };
            let secret = secret.trim().as_bytes();
            // Bounded before decoding, so an oversized value is never copied.
            if secret.len() > BASE64.encode_len(max) {
                return Err(bad(format!("{kind:?} secrets are at most {max} bytes")));
            }
            let secret = BASE64.decode(secret).map_err(|_| bad("secret is not base64".into()))?;
            if !(min..=max).contains(&secret.len()) {
                return Err(bad(format!("{kind:?} secrets are {min} to {max} bytes, got {}", secret.len())));
            }
            if out.contains_key(&kind) {
                return Err(bad(format!("secret {kind:?} given twice")));
            }
            out.insert(kind, secret);
        }
    }
    let got: Vec<SecretKind> = out.keys().copied().collect();
    let mut want = required.to_vec();
    want.sort();
    if got != want {
        return Err(bad(format!("this request needs exactly the secrets {want:?}, got {got:?}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-tahoe-authorization", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn secrets_follow_the_reference_rules() {
        let k32 = BASE64.encode(&[1u8; 32]);
        let ok = headers(&[&format!("lease-renew-secret {k32}"), &format!("lease-cancel-secret {k32}")]);
        assert!(secrets(&ok, &[SecretKind::LeaseRenew, SecretKind::LeaseCancel]).is_ok());
        assert!(secrets(&ok, &[SecretKind::LeaseRenew]).is_err(), "extra secrets are an error");
        assert!(secrets(&ok, &[]).is_err());
        let short =
            headers(&[&format!("lease-renew-secret {}", BASE64.encode(b"x")), &format!("lease-cancel-secret {k32}")]);
        assert!(secrets(&short, &[SecretKind::LeaseRenew, SecretKind::LeaseCancel]).is_err());
        let long = format!("upload-secret {}", BASE64.encode(&[1u8; 40 * 1024]));
        let twice = format!("upload-secret {k32}, upload-secret {k32}");
        let twenty = format!("upload-secret {}", BASE64.encode(&[2u8; 20]));
        assert_eq!(secrets(&headers(&[&twenty]), &[SecretKind::Upload]).unwrap()[&SecretKind::Upload], [2u8; 20]);
        assert!(
            secrets(&headers(&["upload-secret YWI="]), &[SecretKind::Upload]).is_ok(),
            "Tahoe's tests send 2 bytes"
        );
        for bad in ["upload-secret", "teapot-secret AAAA", "upload-secret !!!!", "upload-secret "] {
            assert!(secrets(&headers(&[bad]), &[SecretKind::Upload]).is_err(), "{bad}");
        }
        assert!(secrets(&headers(&[&long]), &[SecretKind::Upload]).is_err(), "a 40 KiB secret");
        assert!(secrets(&headers(&[&twice]), &[SecretKind::Upload]).is_err(), "one kind twice");
        let up = secrets(&headers(&[&format!("upload-secret {k32}")]), &[SecretKind::Upload]).unwrap();
        assert_eq!(up[&SecretKind::Upload], [1u8; 32]);
    }
}

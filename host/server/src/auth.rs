//! Authorization: the swissnum in `Authorization`, and the per-operation secrets in
//! `X-Tahoe-Authorization`, checked the way the reference server checks them.

use std::collections::BTreeMap;

use data_encoding::BASE64;
use http::HeaderMap;

/// The kinds of per-operation secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretKind {
    /// `lease-renew-secret` (32 bytes).
    LeaseRenew,
    /// `lease-cancel-secret` (32 bytes).
    LeaseCancel,
    /// `upload-secret`.
    Upload,
    /// `write-enabler`.
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
        for item in value.split(',') {
            let item = item.trim();
            let Some((kind, secret)) = item.split_once(' ') else {
                return Err(bad(format!("secret without a value: {item:?}")));
            };
            let kind = SecretKind::parse(kind).ok_or_else(|| bad(format!("unknown secret kind {kind:?}")))?;
            let secret = BASE64.decode(secret.trim().as_bytes()).map_err(|_| bad("secret is not base64".into()))?;
            if secret.is_empty() {
                return Err(bad("empty secret".into()));
            }
            if matches!(kind, SecretKind::LeaseRenew | SecretKind::LeaseCancel) && secret.len() != 32 {
                return Err(bad(format!("lease secrets are 32 bytes, got {}", secret.len())));
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
        for bad in ["upload-secret", "teapot-secret AAAA", "upload-secret !!!!", "upload-secret "] {
            assert!(secrets(&headers(&[bad]), &[SecretKind::Upload]).is_err(), "{bad}");
        }
        let up = secrets(&headers(&["upload-secret YWI="]), &[SecretKind::Upload]).unwrap();
        assert_eq!(up[&SecretKind::Upload], b"ab");
    }
}

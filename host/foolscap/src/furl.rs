//! fURLs: `pb://TUBID@HINT[,HINT...]/NAME`, where TUBID is the 32-character base32 SHA-1 of the
//! target's certificate, each HINT a way to reach it, and NAME the swissnum of the object. This
//! side dials `tcp:HOST:PORT` hints (and the legacy bare `HOST:PORT`, and `[v6]` hosts); other
//! kinds (`tor:`, `i2p:`) are kept, named, and reported as not dialable, so an operator sees
//! why a fURL with only those cannot be reached.

use std::fmt;
use std::str::FromStr;

/// One location hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// A TCP address.
    Tcp {
        /// Host name or address (without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// A hint of a kind this side does not dial, as written.
    Other(String),
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hint::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Hint::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Hint::Other(s) => f.write_str(s),
        }
    }
}

/// A parsed fURL.
#[derive(Clone, PartialEq, Eq)]
pub struct Furl {
    /// The target's tub id.
    pub tub_id: String,
    /// Where to find it, in the order to try.
    pub hints: Vec<Hint>,
    /// The object's name (swissnum): a secret, never logged.
    pub name: String,
}

impl fmt::Debug for Furl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Furl {
    /// The fURL with its swissnum elided: safe for logs and status pages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hints: Vec<String> = self.hints.iter().map(Hint::to_string).collect();
        write!(f, "pb://{}@{}/…", self.tub_id, hints.join(","))
    }
}

/// Why a string is not a fURL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a fURL ({0}): expected pb://TUBID@tcp:HOST:PORT[,...]/NAME")]
pub struct FurlError(pub &'static str);

fn parse_hint(s: &str) -> Result<Hint, FurlError> {
    let legacy = |s: &str| match s.split_once(':') {
        Some((host, port)) => !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    };
    let tcp = s.strip_prefix("tcp:").or_else(|| legacy(s).then_some(s));
    let Some(addr) = tcp else { return Ok(Hint::Other(s.to_owned())) };
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or(FurlError("a bracketed host without a port"))?;
        (host, port)
    } else {
        addr.rsplit_once(':').ok_or(FurlError("a hint without a port"))?
    };
    let port: u16 = port.parse().map_err(|_| FurlError("a hint with a bad port"))?;
    if host.is_empty() || port == 0 {
        return Err(FurlError("a hint with no host or port 0"));
    }
    Ok(Hint::Tcp { host: host.to_owned(), port })
}

impl FromStr for Furl {
    type Err = FurlError;

    fn from_str(s: &str) -> Result<Furl, FurlError> {
        let rest = s.trim().strip_prefix("pb://").ok_or(FurlError("no pb:// scheme"))?;
        let (tub_id, rest) = rest.split_once('@').ok_or(FurlError("no @"))?;
        let (hints, name) = rest.split_once('/').ok_or(FurlError("no /NAME"))?;
        let valid_tub = tub_id.len() == 32 && tub_id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'));
        if !valid_tub {
            return Err(FurlError("the tub id is not 32 lowercase base32 characters"));
        }
        let name_ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if name.is_empty() || !name.bytes().all(name_ok) {
            return Err(FurlError("a missing or malformed NAME"));
        }
        let hints = hints.split(',').filter(|h| !h.is_empty()).map(parse_hint).collect::<Result<Vec<_>, _>>()?;
        if hints.is_empty() {
            return Err(FurlError("no location hints"));
        }
        Ok(Furl { tub_id: tub_id.to_owned(), hints, name: name.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUB: &str = "abcdefghijklmnopqrstuvwxyz234567";

    #[test]
    fn introducer_furls_parse_with_every_hint_form() {
        let f: Furl = format!("pb://{TUB}@tcp:127.0.0.1:4400,example.org:99,tcp:[::1]:5,tor:x.onion:80,i2p:abc/swiss")
            .parse()
            .unwrap();
        assert_eq!(f.tub_id, TUB);
        assert_eq!(f.name, "swiss");
        assert_eq!(
            f.hints,
            vec![
                Hint::Tcp { host: "127.0.0.1".into(), port: 4400 },
                Hint::Tcp { host: "example.org".into(), port: 99 },
                Hint::Tcp { host: "::1".into(), port: 5 },
                Hint::Other("tor:x.onion:80".into()),
                Hint::Other("i2p:abc".into()),
            ]
        );
        let shown = f.to_string();
        assert!(!shown.contains("swiss") && shown.contains("tcp:[::1]:5"), "{shown}");
    }

    #[test]
    fn malformed_furls_are_refused_with_a_reason() {
        for bad in [
            "http://x",
            "pb://short@tcp:h:1/n",
            &format!("pb://{TUB}@tcp:h:1"),
            &format!("pb://{TUB}@tcp:h:0/n"),
            &format!("pb://{TUB}@tcp:h:99999/n"),
            &format!("pb://{TUB}@/n"),
            &format!("pb://{TUB}@tcp:h:1/"),
            &format!("pb://{TUB}@tcp:h:1/a,b"),
            &format!("pb://{TUB}@tcp:h:1/a#b"),
            &format!("pb://{}@tcp:h:1/n", TUB.to_uppercase()),
        ] {
            assert!(bad.parse::<Furl>().is_err(), "{bad}");
        }
    }
}

//! A small GBS client: parses a NURL, connects over TLS accepting exactly the certificate
//! whose SPKI hash the NURL names (as the Tahoe 1.20 client does), and sends requests on one
//! kept-alive HTTP/1.1 connection. Used by the server's protocol tests and by `marsh-load`;
//! it is a test and measurement tool, not a Tahoe client.

pub mod hostile;

use bytes::Bytes;
use ciborium::value::Value;
use data_encoding::BASE64;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use marsh_foolscap::tls;
use rustls::pki_types::ServerName;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The NURL is malformed.
    #[error("bad NURL {0:?}: expected pb://SPKI@HOST:PORT/SWISSNUM#v=1")]
    Nurl(String),
    /// Connecting or TLS failed.
    #[error("connecting to {0}: {1}")]
    Connect(String, String),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(String),
}

/// The parts of a NURL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nurl {
    /// SPKI hash, base64url without padding.
    pub spki: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Swissnum.
    pub swissnum: String,
}

impl std::str::FromStr for Nurl {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ClientError::Nurl(s.to_owned());
        let rest = s.strip_prefix("pb://").ok_or_else(bad)?;
        let rest = rest.strip_suffix("#v=1").ok_or_else(bad)?;
        let (spki, rest) = rest.split_once('@').ok_or_else(bad)?;
        let (hostport, swissnum) = rest.split_once('/').ok_or_else(bad)?;
        let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
        Ok(Nurl {
            spki: spki.to_owned(),
            host: host.to_owned(),
            port: port.parse().map_err(|_| bad())?,
            swissnum: swissnum.to_owned(),
        })
    }
}

impl std::fmt::Display for Nurl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pb://{}@{}:{}/{}#v=1", self.spki, self.host, self.port, self.swissnum)
    }
}

pub use marsh_foolscap::tls::{spki_hash, spki_of};

impl Nurl {
    /// `HOST:PORT`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The `Authorization` header value a NURL's swissnum makes.
pub fn authorization(nurl: &Nurl) -> String {
    format!("Tahoe-LAFS {}", BASE64.encode(nurl.swissnum.as_bytes()))
}

/// A TLS connection to the server a NURL names, accepting exactly the certificate it pins.
pub async fn tls_stream(nurl: &Nurl) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
    let addr = nurl.address();
    let fail = |e: String| ClientError::Connect(addr.clone(), e);
    let config = tls::client_config(tls::Pin::Spki(nurl.spki.clone()), None).map_err(|e| fail(e.to_string()))?;
    let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| fail(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("tahoe-lafs").map_err(|e| fail(e.to_string()))?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| fail(e.to_string()))
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// One kept-alive connection to a GBS server.
#[derive(Debug)]
pub struct GbsClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authorization: String,
}

impl GbsClient {
    /// Connect to the server a NURL names.
    pub async fn connect(nurl: &Nurl) -> Result<GbsClient, ClientError> {
        let tls = tls_stream(nurl).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Connect(nurl.address(), e.to_string()))?;
        tokio::spawn(conn);
        Ok(GbsClient { sender, authorization: authorization(nurl) })
    }

    /// Send one request to `/storage/v1/{path}` with the given secrets and headers.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        secrets: &[(&str, &[u8])],
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("/storage/v1/{path}"))
            .header("host", "tahoe-lafs")
            .header("authorization", &self.authorization)
            .header("accept", "application/cbor");
        for (kind, secret) in secrets {
            b = b.header("x-tahoe-authorization", format!("{kind} {}", BASE64.encode(secret)));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into())).map_err(|e| ClientError::Http(e.to_string()))?;
        self.send(req).await
    }

    /// Send a request and return the answer with its body unread (a reader that stalls).
    pub async fn send_unread(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        self.sender.ready().await.map_err(|e| ClientError::Http(e.to_string()))?;
        self.sender.send_request(req).await.map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Send a request exactly as built (tests use this for malformed or missing headers).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, ClientError> {
        self.sender.ready().await.map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = self.sender.send_request(req).await.map_err(|e| ClientError::Http(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }
}

/// The secrets a client sends, one value each (Tahoe derives them per share; tests pick them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// `lease-renew-secret`.
    pub renew: Vec<u8>,
    /// `lease-cancel-secret`.
    pub cancel: Vec<u8>,
    /// `upload-secret`.
    pub upload: Vec<u8>,
    /// `write-enabler`.
    pub write_enabler: Vec<u8>,
}

impl Secrets {
    /// 32-byte secrets made from one byte: renew, upload and write enabler all `[seed; 32]`,
    /// cancel `[seed ^ 0xff; 32]`.
    pub fn from_seed(seed: u8) -> Secrets {
        Secrets {
            renew: vec![seed; 32],
            cancel: vec![seed ^ 0xff; 32],
            upload: vec![seed; 32],
            write_enabler: vec![seed; 32],
        }
    }

    /// The two lease secrets as `X-Tahoe-Authorization` kinds and values.
    pub fn lease(&self) -> [(&'static str, &[u8]); 2] {
        [("lease-renew-secret", &self.renew), ("lease-cancel-secret", &self.cancel)]
    }
}

/// A request that did not get the status it should have.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server answered with another status.
    #[error("{what}: status {status}: {body}")]
    Status {
        /// Which request.
        what: &'static str,
        /// What it answered.
        status: StatusCode,
        /// Its body, as text.
        body: String,
    },
}

fn expect(what: &'static str, reply: Reply, wanted: &[StatusCode]) -> Result<Reply, CallError> {
    if wanted.contains(&reply.status) {
        return Ok(reply);
    }
    Err(CallError::Status { what, status: reply.status, body: String::from_utf8_lossy(&reply.body).into_owned() })
}

impl GbsClient {
    /// `POST /storage/v1/immutable/SI`: allocate `shares` of `size` bytes each.
    pub async fn allocate(
        &mut self,
        si: &str,
        secrets: &Secrets,
        shares: &[u64],
        size: u64,
    ) -> Result<Reply, ClientError> {
        let [renew, cancel] = secrets.lease();
        let all = [renew, cancel, ("upload-secret", secrets.upload.as_slice())];
        self.call(Method::POST, &format!("immutable/{si}"), &all, &[], allocate_body(shares, size)).await
    }

    /// `PATCH /storage/v1/immutable/SI/N`: write `data` at `offset` (not empty).
    pub async fn write(
        &mut self,
        si: &str,
        shnum: u64,
        secrets: &Secrets,
        offset: u64,
        data: &[u8],
    ) -> Result<Reply, ClientError> {
        let range = format!("bytes {offset}-{}/*", offset + (data.len() as u64).max(1) - 1);
        let secret = [("upload-secret", secrets.upload.as_slice())];
        self.call(
            Method::PATCH,
            &format!("immutable/{si}/{shnum}"),
            &secret,
            &[("content-range", &range)],
            data.to_vec(),
        )
        .await
    }

    /// Upload one whole immutable share as a client does: allocate it, then write it in one
    /// request; an error unless the share was allocated and completed (201).
    pub async fn upload(&mut self, si: &str, shnum: u64, secrets: &Secrets, data: &[u8]) -> Result<(), CallError> {
        expect("allocate", self.allocate(si, secrets, &[shnum], data.len() as u64).await?, &[StatusCode::OK])?;
        expect("write", self.write(si, shnum, secrets, 0, data).await?, &[StatusCode::CREATED])?;
        Ok(())
    }

    /// `PUT /storage/v1/lease/SI`: add or renew a lease on every share of `si`.
    pub async fn renew(&mut self, si: &str, secrets: &Secrets) -> Result<Reply, ClientError> {
        self.call(Method::PUT, &format!("lease/{si}"), &secrets.lease(), &[], Vec::new()).await
    }

    /// `POST /storage/v1/mutable/SI/read-test-write` with a body from [`rtw_body`] or
    /// [`rtw_body_shares`].
    pub async fn read_test_write(&mut self, si: &str, secrets: &Secrets, body: Vec<u8>) -> Result<Reply, ClientError> {
        let [renew, cancel] = secrets.lease();
        let all = [("write-enabler", secrets.write_enabler.as_slice()), renew, cancel];
        self.call(Method::POST, &format!("mutable/{si}/read-test-write"), &all, &[], body).await
    }
}

/// CBOR text.
pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// CBOR unsigned integer.
pub fn int(n: u64) -> Value {
    Value::Integer(n.into())
}

/// Encode a CBOR value.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = ciborium::ser::into_writer(v, &mut out);
    out
}

/// An allocate body.
pub fn allocate_body(shares: &[u64], size: u64) -> Vec<u8> {
    let set = Value::Tag(258, Box::new(Value::Array(shares.iter().map(|n| int(*n)).collect())));
    encode(&Value::Map(vec![(text("share-numbers"), set), (text("allocated-size"), int(size))]))
}

/// One share's vectors in a read-test-write: its number, tests `(offset, size, specimen)`,
/// writes `(offset, data)`, and the new length (`Some(0)` deletes the share).
pub type ShareVectors<'a> = (u64, Vec<(u64, u64, &'a [u8])>, Vec<(u64, &'a [u8])>, Option<u64>);

/// A read-test-write body for several shares, with `reads` `(offset, size)` of every share.
pub fn rtw_body_shares(vectors: &[ShareVectors<'_>], reads: &[(u64, u64)]) -> Vec<u8> {
    let twv = vectors
        .iter()
        .map(|(n, tests, writes, new_length)| {
            let tests = tests
                .iter()
                .map(|(o, s, sp)| {
                    Value::Map(vec![
                        (text("offset"), int(*o)),
                        (text("size"), int(*s)),
                        (text("specimen"), Value::Bytes(sp.to_vec())),
                    ])
                })
                .collect();
            let writes = writes
                .iter()
                .map(|(o, d)| Value::Map(vec![(text("offset"), int(*o)), (text("data"), Value::Bytes(d.to_vec()))]))
                .collect();
            let share = Value::Map(vec![
                (text("test"), Value::Array(tests)),
                (text("write"), Value::Array(writes)),
                (text("new-length"), new_length.map_or(Value::Null, int)),
            ]);
            (int(*n), share)
        })
        .collect();
    let reads =
        reads.iter().map(|(o, s)| Value::Map(vec![(text("offset"), int(*o)), (text("size"), int(*s))])).collect();
    encode(&Value::Map(vec![(text("test-write-vectors"), Value::Map(twv)), (text("read-vector"), Value::Array(reads))]))
}

/// A read-test-write body for one share: tests `(offset, size, specimen)`, writes `(offset, data)`.
pub fn rtw_body(shnum: u64, tests: &[(u64, u64, &[u8])], writes: &[(u64, &[u8])], reads: &[(u64, u64)]) -> Vec<u8> {
    rtw_body_shares(&[(shnum, tests.to_vec(), writes.to_vec(), None)], reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nurls_parse() {
        let n: Nurl = "pb://abc_-DEF@127.0.0.1:3457/swiss#v=1".parse().unwrap();
        assert_eq!(n, Nurl { spki: "abc_-DEF".into(), host: "127.0.0.1".into(), port: 3457, swissnum: "swiss".into() });
        assert_eq!(n.to_string(), "pb://abc_-DEF@127.0.0.1:3457/swiss#v=1");
        assert!("pb://abc@host/swiss#v=1".parse::<Nurl>().is_err());
        assert!("http://abc@host:1/swiss".parse::<Nurl>().is_err());
    }
}

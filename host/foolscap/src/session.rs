//! A Foolscap connection from this side's [`Tub`] to one target: dial a fURL's hints in turn,
//! the HTTP `Upgrade: TLS/1.0` exchange, TLS pinned to the target's tub id with this tub's
//! certificate presented, the hello and decision blocks (either side may be the one that
//! decides: the larger tub id), then Banana calls and answers ([`Connection::call`]) and the
//! bookkeeping a live connection needs ([`Connection::serve`]: PING, `decref`, vocabulary).
//!
//! Every wait has a deadline ([`Timeouts`]), every block and object a size bound
//! ([`MAX_BLOCK`], [`crate::object::Limits`]); anything the peer does out of protocol ends the
//! connection with a [`FoolscapError`], which the caller logs before it dials again.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::banana::{self, Decoder, Token};
use crate::furl::{Furl, Hint};
use crate::object::{Assembler, Encoder, Event, Limits, ObjectError, Value};
use crate::tls::{self, Pin};

/// The largest negotiation block (the HTTP response, a hello, a decision), as Foolscap allows.
pub const MAX_BLOCK: usize = 4096;

/// The only Banana protocol version this side speaks: 3 (PING and PONG).
const BANANA_VERSION: u64 = 3;

/// The hash Foolscap gives vocabulary table 0 (the empty one): the first four hex digits of
/// SHA-1 of nothing.
const EMPTY_VOCAB_HASH: &str = "da39";

/// This side's identity: the certificate it presents and the tub id that hashes it.
#[derive(Clone)]
pub struct Tub {
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    tub_id: String,
}

impl std::fmt::Debug for Tub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tub").field("tub_id", &self.tub_id).finish_non_exhaustive()
    }
}

impl Tub {
    /// A tub with this certificate (DER) and private key (PKCS#8 DER).
    pub fn new(cert_der: Vec<u8>, key_der: Vec<u8>) -> Tub {
        let tub_id = tls::tub_id_of(&cert_der);
        Tub { cert_der, key_der, tub_id }
    }

    /// Its tub id.
    pub fn tub_id(&self) -> &str {
        &self.tub_id
    }
}

/// How long each step may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One TCP connect.
    pub connect: Duration,
    /// The upgrade, TLS and hello exchange, together.
    pub negotiate: Duration,
    /// From a call to its answer.
    pub call: Duration,
    /// Quiet this long and [`Connection::serve`] sends a PING; quiet twice this long and the
    /// peer is gone.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(15),
            negotiate: Duration::from_secs(30),
            call: Duration::from_secs(60),
            idle: Duration::from_secs(120),
        }
    }
}

/// Why a connection could not be made or did not last.
#[derive(Debug, thiserror::Error)]
pub enum FoolscapError {
    /// No hint could be dialed: what each attempt said.
    #[error("could not reach the tub: {0}")]
    Unreachable(String),
    /// The socket failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// TLS failed (including a certificate that is not the pinned tub's).
    #[error("TLS: {0}")]
    Tls(String),
    /// The upgrade or the hello/decision exchange went wrong.
    #[error("negotiation: {}", shown(.0))]
    Negotiation(String),
    /// The peer sent something this side cannot follow.
    #[error("protocol: {0}")]
    Protocol(#[from] ObjectError),
    /// The peer said something well-formed that it should not have.
    #[error("unexpected from the peer: {}", shown(.0))]
    Unexpected(String),
    /// A call was answered with a failure, or the peer sent ERROR.
    #[error("the peer refused: {}", shown(.0))]
    Remote(String),
    /// A step took longer than its [`Timeouts`] allow.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
}

/// Text a peer wrote, as it may be shown in a log line: control characters (a newline that
/// would start a forged line, terminal escapes) escaped, and at most 400 characters.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 400 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl From<banana::BananaError> for FoolscapError {
    fn from(e: banana::BananaError) -> FoolscapError {
        FoolscapError::Protocol(ObjectError::Banana(e))
    }
}

/// A negotiated connection, speaking Banana.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    decoder: Decoder,
    assembler: Assembler,
    encoder: Encoder,
    next_request: u64,
    next_ping: u64,
    timeouts: Timeouts,
    /// The hint that answered.
    pub reached: Hint,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("reached", &self.reached).finish_non_exhaustive()
    }
}

async fn within<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, FoolscapError>>,
) -> Result<T, FoolscapError> {
    tokio::time::timeout(limit, fut).await.map_err(|_| FoolscapError::Timeout(what))?
}

/// Dial `furl`'s hints in turn as `me`; the first that negotiates wins. With one hint, its
/// failure is returned as it is; with several, [`FoolscapError::Unreachable`] lists each.
pub async fn connect(furl: &Furl, me: &Tub, timeouts: Timeouts, limits: Limits) -> Result<Connection, FoolscapError> {
    let mut failures = Vec::new();
    for hint in &furl.hints {
        let Hint::Tcp { host, port } = hint else {
            failures.push(format!("{hint}: not a kind of hint this node dials"));
            continue;
        };
        let dial =
            within(timeouts.connect, "connecting", async { Ok(TcpStream::connect((host.as_str(), *port)).await?) });
        let tcp = match dial.await {
            Ok(tcp) => tcp,
            Err(e) => {
                failures.push(format!("{hint}: {e}"));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (stream, leftover) = match within(timeouts.negotiate, "negotiating", negotiate(tcp, host, furl, me)).await {
            Ok(negotiated) => negotiated,
            // Only hint: its own error, typed. Otherwise the next hint may be the right one.
            Err(e) if furl.hints.len() == 1 => return Err(e),
            Err(e) => {
                failures.push(format!("{hint}: {e}"));
                continue;
            }
        };
        let mut decoder = Decoder::new(limits.max_string);
        decoder.feed(&leftover);
        return Ok(Connection {
            stream,
            decoder,
            assembler: Assembler::new(limits),
            encoder: Encoder::default(),
            next_request: 1,
            next_ping: 1,
            timeouts,
            reached: hint.clone(),
        });
    }
    Err(FoolscapError::Unreachable(failures.join("; ")))
}

/// Read one `\r\n\r\n`-terminated block, at most [`MAX_BLOCK`] bytes, from `buf` topped up by
/// `read`; what follows it stays in `buf`.
async fn block<R: AsyncReadExt + Unpin>(r: &mut R, buf: &mut Vec<u8>, one_byte: bool) -> Result<String, FoolscapError> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Ok(text);
        }
        if buf.len() > MAX_BLOCK {
            return Err(FoolscapError::Negotiation(format!("a block longer than {MAX_BLOCK} bytes")));
        }
        let mut chunk = [0u8; 1024];
        let want = if one_byte { 1 } else { chunk.len() };
        let n = r.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(FoolscapError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `key: value` lines, keys lowercased, as Foolscap parses a block.
fn parse_block(text: &str) -> Result<Vec<(String, String)>, FoolscapError> {
    text.split("\r\n")
        .map(|line| {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| FoolscapError::Negotiation(format!("a line without a colon: {line:?}")))?;
            Ok((k.to_ascii_lowercase(), v.trim_start().to_owned()))
        })
        .collect()
}

fn get<'a>(block: &'a [(String, String)], key: &str) -> Option<&'a str> {
    block.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn write_block(pairs: &mut [(&str, String)]) -> Vec<u8> {
    pairs.sort();
    let mut out = Vec::new();
    for (k, v) in pairs.iter() {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    // A failed read leaves zeros: an incarnation then merely repeats, which Foolscap tolerates.
    let _ = getrandom::getrandom(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

async fn negotiate(
    mut tcp: TcpStream,
    host: &str,
    furl: &Furl,
    me: &Tub,
) -> Result<(TlsStream<TcpStream>, Vec<u8>), FoolscapError> {
    let request =
        format!("GET /id/{} HTTP/1.1\r\nHost: {host}\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\r\n", furl.tub_id);
    tcp.write_all(request.as_bytes()).await?;
    // Byte by byte: what follows the response is TLS, which must not be read here.
    let mut buf = Vec::new();
    let response = block(&mut tcp, &mut buf, true).await?;
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") || !response.contains("Upgrade: TLS/1.0") {
        return Err(FoolscapError::Negotiation(format!("expected 101 Switching Protocols, got {status:?}")));
    }
    let config = tls::client_config(Pin::TubId(furl.tub_id.clone()), Some((&me.cert_der, &me.key_der)))
        .map_err(|e| FoolscapError::Tls(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from("foolscap").map_err(|e| FoolscapError::Tls(e.to_string()))?;
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| FoolscapError::Tls(e.to_string()))?;

    let hello = write_block(&mut [
        ("banana-negotiation-range", format!("{BANANA_VERSION} {BANANA_VERSION}")),
        ("initial-vocab-table-range", "0 0".into()),
        ("my-tub-id", me.tub_id.clone()),
        ("my-incarnation", random_hex()),
        ("last-connection", "none 0".into()),
    ]);
    stream.write_all(&hello).await?;
    stream.flush().await?;

    let mut buf = Vec::new();
    let theirs = parse_block(&block(&mut stream, &mut buf, false).await?)?;
    if let Some(e) = get(&theirs, "error") {
        return Err(FoolscapError::Remote(e.to_owned()));
    }
    let range = get(&theirs, "banana-negotiation-range").unwrap_or_default();
    let mut ends = range.split_whitespace().map(str::parse::<u64>);
    match (ends.next(), ends.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= BANANA_VERSION && BANANA_VERSION <= hi => {}
        _ => return Err(FoolscapError::Negotiation(format!("no common Banana version in {range:?}"))),
    }
    if get(&theirs, "my-tub-id") != Some(furl.tub_id.as_str()) {
        return Err(FoolscapError::Negotiation("the peer claims another tub id than its fURL's".into()));
    }
    if me.tub_id.as_str() > furl.tub_id.as_str() {
        // This side decides.
        let decision = write_block(&mut [
            ("banana-decision-version", BANANA_VERSION.to_string()),
            ("current-connection", format!("{} 1", random_hex())),
            ("initial-vocab-table-index", format!("0 {EMPTY_VOCAB_HASH}")),
        ]);
        stream.write_all(&decision).await?;
        stream.flush().await?;
    } else {
        let decision = parse_block(&block(&mut stream, &mut buf, false).await?)?;
        if let Some(e) = get(&decision, "error") {
            return Err(FoolscapError::Remote(e.to_owned()));
        }
        let version = get(&decision, "banana-decision-version").and_then(|v| v.parse::<u64>().ok());
        if version != Some(BANANA_VERSION) {
            return Err(FoolscapError::Negotiation(format!("a decision for Banana version {version:?}")));
        }
        let vocab = get(&decision, "initial-vocab-table-index").unwrap_or("0");
        if vocab.split_whitespace().next() != Some("0") {
            return Err(FoolscapError::Negotiation(format!("a vocabulary table this side did not offer: {vocab:?}")));
        }
    }
    Ok((stream, buf))
}

/// What one step of reading gave.
enum Step {
    Object(Value),
    Nothing,
}

impl Connection {
    async fn send(&mut self, value: &Value) -> Result<(), FoolscapError> {
        let mut out = Vec::new();
        self.encoder.encode(value, &mut out);
        self.write(&out).await
    }

    /// Write `bytes` within [`Timeouts::call`]: a peer that stops reading ends the connection
    /// instead of holding this side in a write.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), FoolscapError> {
        let stream = &mut self.stream;
        within(self.timeouts.call, "writing to the peer", async {
            stream.write_all(bytes).await?;
            Ok(stream.flush().await?)
        })
        .await
    }

    /// Take in whatever arrives next, answer what needs no caller (PING, `decref`), and hand
    /// back a completed top-level object other than those.
    async fn step(&mut self) -> Result<Step, FoolscapError> {
        while let Some(token) = self.decoder.next_token()? {
            match self.assembler.push(token)? {
                None | Some(Event::Pong(_)) => {}
                Some(Event::Ping(n)) => {
                    let mut out = Vec::new();
                    banana::encode(&Token::Pong(n), &mut out);
                    self.write(&out).await?;
                }
                Some(Event::Error(msg)) => return Err(FoolscapError::Remote(msg)),
                Some(Event::Object(v)) => {
                    if self.answer_housekeeping(&v).await? {
                        continue;
                    }
                    return Ok(Step::Object(v));
                }
            }
        }
        let mut chunk = vec![0u8; 16 << 10];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(FoolscapError::Closed);
        }
        self.decoder.feed(&chunk[..n]);
        Ok(Step::Nothing)
    }

    /// `decref` on the broker (clid 0) is answered here (true); other calls are the caller's.
    async fn answer_housekeeping(&mut self, v: &Value) -> Result<bool, FoolscapError> {
        let Some((b"call", [request, Value::Int(0), method, ..])) = v.as_seq() else { return Ok(false) };
        if method.as_bytes() != Some(b"decref") {
            return Ok(false);
        }
        if let Some(request) = request.as_int().filter(|r| *r != 0) {
            self.send(&Value::seq("answer", [Value::Int(request), Value::none()])).await?;
        }
        Ok(true)
    }

    /// Call `method` on the peer's object `clid` with positional `args` and keyword arguments
    /// (sorted here, as Foolscap sends them); the answer, or the failure as
    /// [`FoolscapError::Remote`].
    pub async fn call(
        &mut self,
        clid: u64,
        method: &str,
        args: &[Value],
        kwargs: &[(&str, Value)],
    ) -> Result<Value, FoolscapError> {
        let request = self.next_request;
        self.next_request += 1;
        let mut sorted: Vec<&(&str, Value)> = kwargs.iter().collect();
        sorted.sort_by_key(|(k, _)| *k);
        let mut arguments = vec![Value::Int(args.len() as u64)];
        arguments.extend(args.iter().cloned());
        for (k, v) in sorted {
            arguments.extend([Value::bytes(k), v.clone()]);
        }
        let call = Value::seq(
            "call",
            [Value::Int(request), Value::Int(clid), Value::bytes(method), Value::seq("arguments", arguments)],
        );
        self.send(&call).await?;
        let limit = self.timeouts.call;
        within(limit, "waiting for an answer", async {
            loop {
                let Step::Object(v) = self.step().await? else { continue };
                match v.as_seq() {
                    Some((b"answer", [r, result])) if r.as_int() == Some(request) => return Ok(result.clone()),
                    Some((b"error", [r, failure])) if r.as_int() == Some(request) => {
                        return Err(FoolscapError::Remote(failure.describe(400)));
                    }
                    _ => return Err(FoolscapError::Unexpected(v.describe(200))),
                }
            }
        })
        .await
    }

    /// A reference to an object the peer published under `name`: its clid on this connection.
    pub async fn get_reference(&mut self, name: &str) -> Result<u64, FoolscapError> {
        let answer = self.call(0, "getReferenceByName", &[], &[("name", Value::bytes(name))]).await?;
        match answer.as_seq() {
            Some((b"my-reference", [Value::Int(clid), ..])) => Ok(*clid),
            _ => Err(FoolscapError::Unexpected(format!("getReferenceByName answered {}", answer.describe(200)))),
        }
    }

    /// Keep the connection: answer PINGs and `decref`s, PING when quiet for
    /// [`Timeouts::idle`], and return when the peer goes away, falls silent, or says something
    /// this side did not expect.
    pub async fn serve(&mut self) -> Result<(), FoolscapError> {
        let idle = self.timeouts.idle;
        let mut pinged = false;
        loop {
            match tokio::time::timeout(idle, self.step()).await {
                Ok(Ok(Step::Nothing)) => pinged = false,
                Ok(Ok(Step::Object(v))) => return Err(FoolscapError::Unexpected(v.describe(200))),
                Ok(Err(e)) => return Err(e),
                Err(_) if pinged => return Err(FoolscapError::Timeout("waiting for the peer to answer a PING")),
                Err(_) => {
                    let mut out = Vec::new();
                    banana::encode(&Token::Ping(self.next_ping), &mut out);
                    self.next_ping += 1;
                    self.write(&out).await?;
                    pinged = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A hostile peer, played here: each test is one way a peer can misbehave, and each must
    //! end in an error, promptly, without a panic or unbounded memory.

    use std::sync::Arc;

    use tokio::net::TcpListener;

    use super::*;

    fn quick() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            negotiate: Duration::from_millis(600),
            call: Duration::from_millis(600),
            idle: Duration::from_millis(300),
        }
    }

    fn cert() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["peer".into()]).unwrap().self_signed(&key).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }

    /// A listener and the fURL that names it, with the peer's certificate.
    async fn peer() -> (TcpListener, Furl, (Vec<u8>, Vec<u8>)) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (c, k) = cert();
        let furl = format!("pb://{}@tcp:127.0.0.1:{port}/swiss", tls::tub_id_of(&c)).parse().unwrap();
        (l, furl, (c, k))
    }

    fn me() -> Tub {
        let (c, k) = cert();
        Tub::new(c, k)
    }

    /// Play a well-behaved peer up to Banana, then send `then`; what the client sent after the
    /// negotiation, once it hangs up.
    async fn negotiating_peer(l: TcpListener, cert: (Vec<u8>, Vec<u8>), then: Vec<u8>) -> Vec<u8> {
        let (mut s, mut buf) = negotiated_peer(l, cert, then).await;
        // Hold the connection open until the client gives up.
        let mut sink = [0u8; 1024];
        while let Ok(n @ 1..) = s.read(&mut sink).await {
            buf.extend_from_slice(&sink[..n]);
        }
        buf
    }

    /// Play a well-behaved peer up to Banana and send `then`; the stream, and what the client
    /// sent past the negotiation so far.
    async fn negotiated_peer(
        l: TcpListener,
        (c, k): (Vec<u8>, Vec<u8>),
        then: Vec<u8>,
    ) -> (tokio_rustls::server::TlsStream<TcpStream>, Vec<u8>) {
        let (mut tcp, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        block(&mut tcp, &mut buf, true).await.unwrap();
        tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.clone().into()], rustls::pki_types::PrivateKeyDer::Pkcs8(k.into()))
            .unwrap();
        let mut s = tokio_rustls::TlsAcceptor::from(Arc::new(config)).accept(tcp).await.unwrap();
        let mine = tls::tub_id_of(&c);
        let mut buf = Vec::new();
        let theirs = parse_block(&block(&mut s, &mut buf, false).await.unwrap()).unwrap();
        let client = get(&theirs, "my-tub-id").unwrap().to_owned();
        s.write_all(&write_block(&mut [("banana-negotiation-range", "3 3".into()), ("my-tub-id", mine.clone())]))
            .await
            .unwrap();
        if mine > client {
            s.write_all(&write_block(&mut [
                ("banana-decision-version", "3".into()),
                ("initial-vocab-table-index", "0 da39".into()),
            ]))
            .await
            .unwrap();
        } else {
            block(&mut s, &mut buf, false).await.unwrap();
        }
        s.write_all(&then).await.unwrap();
        (s, buf)
    }

    /// A peer that stops reading ends the connection at the deadline of the write that fills
    /// its buffers, instead of holding this side in that write.
    #[tokio::test]
    async fn a_peer_that_stops_reading_times_out_the_write() {
        let (l, furl, cert) = peer().await;
        let peer = tokio::spawn(async move {
            let (s, _) = negotiated_peer(l, cert, Vec::new()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let mut conn = connect(&furl, &me(), quick(), Limits::default()).await.unwrap();
        let big = Value::bytes(vec![0u8; 32 << 20]);
        let r = tokio::time::timeout(Duration::from_secs(10), conn.call(0, "publish", &[big], &[])).await;
        assert!(matches!(r, Ok(Err(FoolscapError::Timeout("writing to the peer")))), "{r:?}");
        peer.abort();
    }

    #[test]
    fn what_a_peer_wrote_is_shown_without_control_characters() {
        let forged = "refused\n2026-01-01T00:00:00Z  INFO published the storage announcement\x1b[2J";
        for e in [
            FoolscapError::Remote(forged.into()),
            FoolscapError::Unexpected(forged.into()),
            FoolscapError::Negotiation(forged.into()),
        ] {
            let shown = e.to_string();
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
            assert!(shown.contains("refused\\n2026"), "{shown}");
        }
        assert!(FoolscapError::Remote("x".repeat(5000)).to_string().chars().count() < 450);
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_the_negotiation() {
        let (l, furl, _) = peer().await;
        let _held = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tcp);
        });
        let r = connect(&furl, &me(), quick(), Limits::default()).await;
        assert!(matches!(r, Err(FoolscapError::Timeout("negotiating"))), "{r:?}");
    }

    #[tokio::test]
    async fn an_endless_or_wrong_upgrade_answer_is_refused() {
        for answer in [vec![b'x'; 5000], b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec()] {
            let (l, furl, _) = peer().await;
            let peer = tokio::spawn(async move {
                let (mut tcp, _) = l.accept().await.unwrap();
                let _ = tcp.write_all(&answer).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
            let r = connect(&furl, &me(), quick(), Limits::default()).await;
            assert!(matches!(r, Err(FoolscapError::Negotiation(_))), "{r:?}");
            peer.abort();
        }
    }

    #[tokio::test]
    async fn hints_are_tried_in_turn_past_one_that_refuses_and_one_that_is_another_service() {
        let (l, furl, cert) = peer().await;
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let wrong = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wrong_port = wrong.local_addr().unwrap().port();
        let other_service = tokio::spawn(async move {
            let (mut tcp, _) = wrong.accept().await.unwrap();
            let _ = tcp.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut furl = furl;
        let good = furl.hints.remove(0);
        furl.hints = vec![
            Hint::Tcp { host: "127.0.0.1".into(), port: closed },
            Hint::Other("tor:x.onion:80".into()),
            Hint::Tcp { host: "127.0.0.1".into(), port: wrong_port },
            good.clone(),
        ];
        let peer = tokio::spawn(negotiating_peer(l, cert, Vec::new()));
        let conn = connect(&furl, &me(), quick(), Limits::default()).await.unwrap();
        assert_eq!(conn.reached, good);
        furl.hints.pop();
        let r = connect(&furl, &me(), quick(), Limits::default()).await;
        let Err(FoolscapError::Unreachable(why)) = r else { panic!("{r:?}") };
        assert_eq!(why.matches("; ").count(), 2, "each hint's failure is named: {why}");
        assert!(why.contains("not a kind of hint"), "{why}");
        peer.abort();
        other_service.abort();
    }

    #[tokio::test]
    async fn a_peer_with_another_certificate_than_its_furl_names_is_refused() {
        let (l, mut furl, theirs) = peer().await;
        furl.tub_id = tls::tub_id_of(&cert().0);
        let peer = tokio::spawn(negotiating_peer(l, theirs, Vec::new()));
        let r = connect(&furl, &me(), quick(), Limits::default()).await;
        assert!(matches!(r, Err(FoolscapError::Tls(_))), "{r:?}");
        peer.abort();
    }

    #[tokio::test]
    async fn hostile_banana_after_negotiation_ends_the_connection() {
        let huge_string = {
            let mut b = Vec::new();
            banana::encode(&Token::Int(1 << 40), &mut b);
            *b.last_mut().unwrap() = 0x82; // the same header as a STRING's length
            b
        };
        let unexpected_call = {
            let mut b = Vec::new();
            Encoder::default().encode(
                &Value::seq(
                    "call",
                    [Value::Int(5), Value::Int(1), Value::bytes("rm_rf"), Value::seq("arguments", [Value::Int(0)])],
                ),
                &mut b,
            );
            b
        };
        type Expected = fn(&FoolscapError) -> bool;
        let cases: [(Vec<u8>, Expected); 4] = [
            (huge_string, |e| matches!(e, FoolscapError::Protocol(ObjectError::Banana(_)))),
            (unexpected_call, |e| matches!(e, FoolscapError::Unexpected(_))),
            (vec![0x7f; 100], |e| matches!(e, FoolscapError::Protocol(_))),
            (Vec::new(), |e| matches!(e, FoolscapError::Timeout(_))),
        ];
        for (then, expected) in cases {
            let (l, furl, cert) = peer().await;
            let peer = tokio::spawn(negotiating_peer(l, cert, then));
            let mut conn = connect(&furl, &me(), quick(), Limits::default()).await.unwrap();
            let r = conn.serve().await;
            let e = r.expect_err("serve ends only with an error");
            assert!(expected(&e), "{e:?}");
            assert!(conn.decoder.buffered() < 1 << 20);
            peer.abort();
        }
    }

    #[tokio::test]
    async fn pings_are_answered_and_a_call_waits_no_longer_than_its_deadline() {
        let (l, furl, cert) = peer().await;
        let mut ping = Vec::new();
        banana::encode(&Token::Ping(42), &mut ping);
        let peer = tokio::spawn(negotiating_peer(l, cert, ping));
        let mut conn = connect(&furl, &me(), quick(), Limits::default()).await.unwrap();
        let r = conn.get_reference("swiss").await;
        assert!(matches!(r, Err(FoolscapError::Timeout("waiting for an answer"))), "{r:?}");
        drop(conn);
        let sent = peer.await.unwrap();
        assert!(sent.windows(7).any(|w| w == b"\x12\x82getRe"), "the call went out");
        assert!(sent.windows(2).any(|w| w == [42, 0x8F]), "PONG 42 went out");
    }
}

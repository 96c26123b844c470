//! The node's web listener (`web.listen`, plain HTTP, apart from the GBS port): what an
//! operator and their dashboards read.
//!
//! - `/health`: 200 `ok` when the node serves and its backend answers; 503 and the reason.
//! - `/metrics`: Prometheus text, marsh's own series.
//! - `/statistics?t=openmetrics` and `?t=json`: Tahoe-LAFS 1.20's names and shapes
//!   ([`tahoe`]), so dashboards made for Python storage nodes read marsh unchanged.
//! - `/storage?t=json`: the shape of Tahoe's "Storage Server Status" JSON.
//! - `/`: a status page for people ([`page`]), server-rendered, no script.
//!
//! Architecture invariant: this crate renders [`Figures`] and answers HTTP; it never reaches
//! the backend, the accountant or a plugin. The node gathers the figures per request through
//! [`Source`]. With a token (`web.metrics-token-file`), everything but `/health` wants it:
//! `Authorization: Bearer TOKEN` (dashboards, scrapers) or HTTP Basic with the token as the
//! password (a browser asks for it). [`serve_local`] serves the same on a Unix socket in the
//! node's `cache/` without the token: whoever may open that socket may read the node directory
//! anyway, and `marsh status` asks there, so the token never goes to whatever listens on a port.

pub mod page;
pub mod tahoe;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};

/// Connections the listener serves at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a health check waits for the backend.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Space, as the node sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Space {
    /// Free bytes on the backend's store, if it can tell.
    pub store_free: Option<u64>,
    /// What clients are told is available (`available-space`).
    pub available: u64,
    /// `storage.reserved-space`.
    pub reserved: u64,
    /// `storage.max-bytes`.
    pub max_bytes: Option<u64>,
    /// Bytes of the shares the node holds.
    pub held: u64,
    /// Bytes reserved for uploads in progress.
    pub allocated: u64,
    /// `storage.readonly`.
    pub readonly: bool,
}

/// Shares, as the accounting database records them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shares {
    /// Immutable shares.
    pub immutable: u64,
    /// Mutable shares.
    pub mutable: u64,
    /// Storage indexes with any share (Tahoe's buckets).
    pub buckets: u64,
    /// Immutable uploads in progress.
    pub open_uploads: u64,
}

/// One account's line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountRow {
    /// Its name.
    pub name: String,
    /// Bytes it holds.
    pub usage: u64,
    /// Its quota.
    pub quota: Option<u64>,
    /// Leases it holds.
    pub leases: u64,
    /// May it write.
    pub write: bool,
    /// Revoked.
    pub revoked: bool,
}

/// One corruption advisory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdvisoryRow {
    /// When, seconds since the epoch.
    pub at: u64,
    /// `immutable SI N` or `mutable SI N`.
    pub share: String,
    /// What the client said.
    pub reason: String,
}

/// What the node's periodic tasks did since it started; times in seconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Periodic {
    /// Accounting changes handed to the persistence strategy.
    pub persisted: u64,
    /// Hand-overs that failed.
    pub persist_failures: u64,
    /// The last successful hand-over.
    pub last_persisted: Option<u64>,
    /// Sweeps of leftovers run.
    pub sweeps: u64,
    /// Leftovers they removed.
    pub swept: u64,
    /// The last sweep.
    pub last_sweep: Option<u64>,
    /// Lease-expiry passes run.
    pub expiry_passes: u64,
    /// Shares they deleted.
    pub expired: u64,
    /// Their bytes.
    pub expired_bytes: u64,
    /// The last pass.
    pub last_expiry: Option<u64>,
}

/// A plugin's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginRow {
    /// `backend` or `persistence`.
    pub role: String,
    /// Its name, as it reported it.
    pub name: String,
    /// Calls made into it.
    pub calls: u64,
    /// Calls that ended in a fault (the instance is then discarded).
    pub faults: u64,
    /// Instances created (the first, and one per replacement).
    pub instances: u64,
    /// The last fault's message.
    pub last_fault: Option<String>,
}

/// One Tahoe storage operation's figures (see `marsh_server::metrics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Operation {
    /// `allocate`, `write`, `close`, `abort`, `read`, `get`, `add-lease`, `writev`, `readv`.
    pub name: String,
    /// Times it ran.
    pub count: u64,
    /// Latency samples kept (the newest 1,000).
    pub samples: usize,
    /// Their mean, with two or more.
    pub mean: Option<f64>,
    /// `(NN_N_percentile, seconds)`, `None` with too few samples.
    pub percentiles: Vec<(String, Option<f64>)>,
}

/// One introducer the node announces itself to (`introducer.furls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntroducerRow {
    /// Its fURL, swissnum elided.
    pub furl: String,
    /// Connected and published since (seconds since the epoch); `None` while not.
    pub connected_since: Option<u64>,
    /// The last successful publication.
    pub last_publish: Option<u64>,
    /// Publications in all (one per connection).
    pub publishes: u64,
    /// The last failure: when, and what.
    pub last_error: Option<(u64, String)>,
}

/// One node of the fleet sharing this node's accounting on PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetRow {
    /// Its nickname.
    pub nickname: String,
    /// Its server id.
    pub server_id: String,
    /// When it last reported, seconds since the epoch.
    pub last_seen: u64,
    /// Free space it last reported.
    pub available: Option<u64>,
    /// Its shares, immutable and mutable.
    pub shares: u64,
    /// Bytes of its shares.
    pub bytes: u64,
}

/// Everything the listener shows, gathered by the node for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// `node.nickname`.
    pub nickname: String,
    /// The node's server id.
    pub server_id: String,
    /// `marsh/VERSION`.
    pub version: String,
    /// Seconds since the node started.
    pub uptime: f64,
    /// CPU seconds the process used.
    pub cpu_seconds: f64,
    /// The share of one CPU used over the last 1, 5 and 15 minutes, once known.
    pub cpu_averages: [Option<f64>; 3],
    /// Space.
    pub space: Space,
    /// Shares.
    pub shares: Shares,
    /// Accounts, the anonymous one first (the first 200).
    pub accounts: Vec<AccountRow>,
    /// Accounts in all.
    pub account_count: usize,
    /// The persistence strategy's name.
    pub persistence: String,
    /// Accounting changes not handed to it yet.
    pub unpersisted: u64,
    /// `expire.enabled`.
    pub expiry_enabled: bool,
    /// Corruption advisories recorded.
    pub advisories: u64,
    /// The newest few.
    pub recent_advisories: Vec<AdvisoryRow>,
    /// The wasm plugins' counters.
    pub plugins: Vec<PluginRow>,
    /// The periodic tasks.
    pub periodic: Periodic,
    /// Tahoe's storage operations.
    pub operations: Vec<Operation>,
    /// The GBS server's own Prometheus series (requests, latencies, bytes, connections).
    pub server_series: String,
    /// The introducers, in `introducer.furls` order.
    pub introducers: Vec<IntroducerRow>,
    /// The fleet's nodes (accounting on PostgreSQL; empty otherwise).
    pub fleet: Vec<FleetRow>,
}

/// Where the listener gets its figures.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// `Ok` when the node serves and its backend answers within [`HEALTH_TIMEOUT`].
    async fn health(&self) -> Result<(), String>;
    /// The figures now.
    async fn figures(&self) -> Figures;
}

/// An answer of the web listener.
pub type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Whether `authorization` carries `token` (compared in constant time): `Bearer TOKEN`, or
/// `Basic` credentials whose password is the token (any user name).
fn authorized(token: Option<&str>, authorization: Option<&http::HeaderValue>) -> bool {
    let Some(token) = token else { return true };
    let Some(value) = authorization.and_then(|v| v.to_str().ok()) else { return false };
    let given = if let Some(bearer) = value.strip_prefix("Bearer ") {
        bearer.as_bytes().to_vec()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let Ok(decoded) = data_encoding::BASE64.decode(basic.trim().as_bytes()) else { return false };
        match decoded.iter().position(|b| *b == b':') {
            Some(colon) => decoded[colon + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    let (a, b) = (given.as_slice(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a request to the web listener failed; mapped to its answer in one place
/// ([`WebError::answer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebError {
    /// Anything but `GET` and `HEAD` (405).
    MethodNotAllowed,
    /// The token is set and was not given (401, with the challenges a scraper and a browser
    /// each understand).
    Unauthorized,
    /// No such page (404).
    NotFound,
    /// `/health`: the node or its backend does not answer (503, with the reason).
    Unhealthy(String),
}

impl WebError {
    /// The answer.
    pub fn answer(&self) -> Answer {
        match self {
            WebError::MethodNotAllowed => answer(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n"),
            WebError::NotFound => answer(StatusCode::NOT_FOUND, TEXT, "not found\n"),
            WebError::Unhealthy(reason) => {
                answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("unhealthy: {reason}\n"))
            }
            WebError::Unauthorized => {
                let mut r = answer(
                    StatusCode::UNAUTHORIZED,
                    TEXT,
                    "the token is required (web.metrics-token-file): Authorization: Bearer TOKEN, or TOKEN as the password\n",
                );
                let challenges = r.headers_mut();
                challenges.append(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
                challenges.append(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Basic realm=\"marsh\", charset=\"UTF-8\""),
                );
                r
            }
        }
    }
}

/// Answer one request.
pub async fn handle(source: &dyn Source, token: Option<&str>, req: &Request<Incoming>) -> Answer {
    route(source, token, req).await.unwrap_or_else(|e| e.answer())
}

async fn route(source: &dyn Source, token: Option<&str>, req: &Request<Incoming>) -> Result<Answer, WebError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(WebError::MethodNotAllowed);
    }
    let query = req.uri().query().unwrap_or("");
    let t = query.split('&').find_map(|kv| kv.strip_prefix("t=")).unwrap_or("");
    let path = req.uri().path();
    if path != "/health" && !authorized(token, req.headers().get(header::AUTHORIZATION)) {
        return Err(WebError::Unauthorized);
    }
    Ok(match path {
        "/health" => {
            source.health().await.map_err(WebError::Unhealthy)?;
            answer(StatusCode::OK, TEXT, "ok\n")
        }
        "/metrics" => answer(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            page::prometheus(&source.figures().await),
        ),
        "/statistics" => {
            let f = source.figures().await;
            match t {
                "openmetrics" => answer(StatusCode::OK, tahoe::OPENMETRICS_TYPE, tahoe::openmetrics(&f)),
                // As the reference: JSON served as text/plain.
                "json" => answer(StatusCode::OK, TEXT, tahoe::json(&f)),
                _ => answer(StatusCode::OK, "text/html; charset=utf-8", page::statistics(&f)),
            }
        }
        "/storage" if t == "json" => answer(StatusCode::OK, TEXT, tahoe::storage_json(&source.figures().await)),
        "/storage" | "/" => answer(StatusCode::OK, "text/html; charset=utf-8", page::status(&source.figures().await)),
        _ => return Err(WebError::NotFound),
    })
}

/// Serve `listener` until the task is dropped: plain HTTP/1.1, at most 64 connections at once.
pub async fn serve(listener: TcpListener, source: Arc<dyn Source>, token: Option<String>) {
    let token: Option<Arc<str>> = token.map(Arc::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(connection(TokioIo::new(tcp), peer.to_string(), source.clone(), token.clone(), slot));
            }
            Err(e) => {
                tracing::warn!("web listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serve `listener`, a Unix socket only the node's user may open (in its `cache/`), until the
/// task is dropped: the same answers, without asking for the token.
pub async fn serve_local(listener: UnixListener, source: Arc<dyn Source>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(TokioIo::new(stream), "local".to_owned(), source.clone(), None, slot));
            }
            Err(e) => {
                tracing::warn!("web socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection, holding its `slot`.
async fn connection<I>(
    io: TokioIo<I>,
    peer: String,
    source: Arc<dyn Source>,
    token: Option<Arc<str>>,
    slot: tokio::sync::OwnedSemaphorePermit,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    let svc = service_fn(move |req: Request<Incoming>| {
        let (source, token) = (source.clone(), token.clone());
        async move { Ok::<_, Infallible>(handle(source.as_ref(), token.as_deref(), &req).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, svc)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, "web connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node whose backend fails.
    struct Failing;

    #[async_trait::async_trait]
    impl Source for Failing {
        async fn health(&self) -> Result<(), String> {
            Err("the backend failed: store `shares` is gone".into())
        }
        async fn figures(&self) -> Figures {
            Figures::default()
        }
    }

    #[tokio::test]
    async fn an_unhealthy_node_answers_503_with_the_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Failing), Some("t".into())));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
        assert!(raw.ends_with("unhealthy: the backend failed: store `shares` is gone\n"), "{raw}");
        server.abort();
    }

    #[test]
    fn a_token_is_compared_whole() {
        let v = |s: &str| http::HeaderValue::from_str(s).unwrap();
        let basic = |creds: &str| v(&format!("Basic {}", data_encoding::BASE64.encode(creds.as_bytes())));
        assert!(authorized(None, None));
        assert!(authorized(Some("s3cret"), Some(&v("Bearer s3cret"))));
        assert!(authorized(Some("s3cret"), Some(&basic("operator:s3cret"))));
        assert!(authorized(Some("s3cret"), Some(&basic(":s3cret"))));
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "bearer s3cret", "s3cret", "Bearer ", "Basic !!!"] {
            assert!(!authorized(Some("s3cret"), Some(&v(wrong))), "{wrong}");
        }
        for wrong in ["operator:s3cre", "s3cret", "s3cret:x", "operator:s3cret2"] {
            assert!(!authorized(Some("s3cret"), Some(&basic(wrong))), "{wrong}");
        }
        assert!(!authorized(Some("s3cret"), None));
    }
}

//! The SeaweedFS coordinates from `MARSH_TEST_S3_*`, per-test prefixes, a fault-injecting HTTP
//! proxy, and starting `backend-s3` over a store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use marsh_runtime::{Grants, PluginLimits, Runtime, WasmBackend};
use marsh_seal::SealKey;
use marsh_stores::BlobStore;
use marsh_stores_s3::{S3Config, S3Store};
use tokio::net::{TcpListener, TcpStream};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests need a real S3 server. Run `make test`, or `tests/s3/with-s3.sh PYTHON cargo test -p marsh-stores-s3` with SeaweedFS installed (`make s3`).")
    })
}

/// A prefix no other test (or earlier run) uses.
pub fn fresh_prefix(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("t-{what}-{}-{nanos}-{}/", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Settings for the plain-HTTP endpoint under a fresh prefix.
pub fn config(what: &str) -> S3Config {
    let mut c = S3Config::new("shares", &var("MARSH_TEST_S3_BUCKET"));
    c.endpoint = Some(var("MARSH_TEST_S3_ENDPOINT"));
    c.region = var("MARSH_TEST_S3_REGION");
    c.path_style = true;
    c.access_key_id = Some(var("MARSH_TEST_S3_ACCESS_KEY"));
    c.secret_access_key = Some(var("MARSH_TEST_S3_SECRET_KEY"));
    c.prefix = fresh_prefix(what);
    c.timeout = Duration::from_secs(10);
    c
}

/// Settings for the HTTPS endpoint, trusting the test CA.
pub fn tls_config(what: &str) -> S3Config {
    let mut c = config(what);
    c.endpoint = Some(var("MARSH_TEST_S3_ENDPOINT_TLS"));
    c.ca_file = Some(PathBuf::from(var("MARSH_TEST_S3_CA")));
    c
}

pub async fn open(c: S3Config) -> S3Store {
    S3Store::open(c).await.unwrap_or_else(|e| panic!("opening the test S3 store: {e}"))
}

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it.
    Pass,
    /// Answer 503 SlowDown without forwarding.
    Unavailable,
    /// Answer 500 InternalError without forwarding.
    Internal,
    /// Close the connection without an answer.
    Drop,
    /// Wait this long, then forward.
    Slow(Duration),
    /// Forward, then answer with this many bytes more than the service sent (as a hostile or
    /// broken service that ignores the range asked for would).
    Pad(usize),
    /// A listing answered with 50 made-up keys after the service's last one, past the page
    /// size the driver asked for (as a service that ignores `max-keys` would answer).
    ListPadded,
    /// A listing answered with its first key twice (as a broken service that goes back, or
    /// loops, would).
    ListRepeated,
}

type Plan = dyn Fn(u64, &str) -> Fault + Send + Sync;

/// An HTTP proxy in front of the S3 server that applies a plan to each request (numbered from
/// 0, with its method), and counts what it did.
pub struct FaultProxy {
    pub addr: SocketAddr,
    plan: Arc<Mutex<Arc<Plan>>>,
    pub injected: Arc<AtomicU64>,
    counter: Arc<AtomicU64>,
}

impl FaultProxy {
    pub async fn start(plan: impl Fn(u64, &str) -> Fault + Send + Sync + 'static) -> FaultProxy {
        let upstream: SocketAddr = var("MARSH_TEST_S3_ENDPOINT")
            .trim_start_matches("http://")
            .parse()
            .expect("MARSH_TEST_S3_ENDPOINT is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let plan: Arc<Mutex<Arc<Plan>>> = Arc::new(Mutex::new(Arc::new(plan)));
        let injected = Arc::new(AtomicU64::new(0));
        let counter = Arc::new(AtomicU64::new(0));
        let (p, inj, count) = (plan.clone(), injected.clone(), counter.clone());
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                let (p, inj, counter) = (p.clone(), inj.clone(), count.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let fault = (p.lock().expect("plan lock").clone())(n, req.method().as_str());
                        let inj = inj.clone();
                        async move {
                            if fault != Fault::Pass {
                                inj.fetch_add(1, Ordering::SeqCst);
                            }
                            handle(req, fault, upstream).await
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(conn), service).await;
                });
            }
        });
        FaultProxy { addr, plan, injected, counter }
    }

    /// The number the next request will get.
    pub fn next_number(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    /// Replace the plan (request numbering goes on).
    pub fn set_plan(&self, plan: impl Fn(u64, &str) -> Fault + Send + Sync + 'static) {
        *self.plan.lock().expect("plan lock") = Arc::new(plan);
    }

    /// Test settings pointing at the proxy.
    pub fn config(&self, what: &str) -> S3Config {
        let mut c = config(what);
        c.endpoint = Some(format!("http://{}", self.addr));
        c
    }
}

fn error_body(status: u16, code: &str) -> Response<Full<Bytes>> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(xml)))
        .expect("response")
}

async fn handle(req: Request<Incoming>, fault: Fault, upstream: SocketAddr) -> Result<Response<Full<Bytes>>, String> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    match fault {
        Fault::Unavailable => return Ok(error_body(503, "SlowDown")),
        Fault::Internal => return Ok(error_body(500, "InternalError")),
        // An error from the service makes hyper close the connection without answering.
        Fault::Drop => return Err("dropped by the test proxy".into()),
        Fault::Slow(d) => tokio::time::sleep(d).await,
        Fault::Pad(_) | Fault::Pass | Fault::ListPadded | Fault::ListRepeated => {}
    }
    let listing = parts.uri.query().is_some_and(|q| q.contains("list-type=2"));
    let stream = TcpStream::connect(upstream).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let answer = sender.send_request(Request::from_parts(parts, Full::new(body))).await.map_err(|e| e.to_string())?;
    let (mut parts, body) = answer.into_parts();
    let mut body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    if let Fault::Pad(extra) = fault {
        let mut padded = body.to_vec();
        padded.resize(padded.len() + extra, 0);
        parts.headers.insert(hyper::header::CONTENT_LENGTH, padded.len().into());
        body = Bytes::from(padded);
    }
    if listing && matches!(fault, Fault::ListPadded | Fault::ListRepeated) {
        let xml = String::from_utf8_lossy(&body).into_owned();
        let rewritten = match fault {
            Fault::ListPadded => pad_listing(&xml),
            _ => repeat_first(&xml),
        };
        parts.headers.insert(hyper::header::CONTENT_LENGTH, rewritten.len().into());
        body = Bytes::from(rewritten);
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// A ListObjectsV2 answer with 50 made-up entries after its last one, in order.
fn pad_listing(xml: &str) -> String {
    let (Some(end), Some(key_at)) = (xml.rfind("</Contents>"), xml.rfind("<Key>")) else { return xml.to_owned() };
    let last = &xml[key_at + 5..key_at + xml[key_at..].find("</Key>").unwrap_or(5)];
    let extra: String =
        (0..50).map(|i| format!("<Contents><Key>{last}~{i:02}</Key><Size>1</Size></Contents>")).collect();
    let at = end + "</Contents>".len();
    format!("{}{extra}{}", &xml[..at], &xml[at..])
}

/// A ListObjectsV2 answer with its first entry twice.
fn repeat_first(xml: &str) -> String {
    let (Some(start), Some(end)) = (xml.find("<Contents>"), xml.find("</Contents>")) else { return xml.to_owned() };
    let entry = &xml[start..end + "</Contents>".len()];
    format!("{}{entry}{}", &xml[..start], &xml[start..])
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    &RUNTIME
        .get_or_init(|| {
            let cache = tempfile::tempdir().expect("cache dir");
            (Runtime::new(Some(cache.path().to_owned())).expect("runtime"), cache)
        })
        .0
}

/// `backend-s3` as wasm with `store` granted as `shares`.
pub async fn backend_s3(store: Arc<dyn BlobStore>) -> WasmBackend {
    let plugin = runtime().load(&marsh_artifacts::BACKEND_S3.built()).expect("loading backend_s3");
    let grants = Grants::new(SealKey::from_bytes([9; 32])).store("shares", store);
    let limits = PluginLimits { memory_bytes: 64 << 20, max_call_bytes: 1 << 20, ..PluginLimits::default() };
    WasmBackend::start(runtime(), &plugin, grants, Vec::new(), limits).await.expect("starting backend_s3")
}

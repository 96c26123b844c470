//! The GBS endpoints: routing, checks in the reference's order (route, `Authorization`,
//! secrets, then each endpoint's own steps), and the protocol rules the backend does not
//! know about: upload state, written ranges, conflicts, leases, write enablers and locks.
//!
//! Every failure is a 4xx with a short text body, or a 5xx only when the backend itself
//! failed; a request can never panic the server. Request bodies stream to the backend in
//! bounded chunks.

#![allow(clippy::result_large_err, reason = "an early response travels as Err once per request, never in a loop")]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciborium::value::Value;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use marsh_core::{Backend, BackendError, ShareNumber, StorageIndex, WriteVector};

use crate::auth::{self, AuthError, SecretKind};
use crate::ranges::{RangeSet, parse_content_range, parse_range};
use crate::wire;
use marsh_accountant::{Accountant, AccountantError, Caller};

/// The largest mutable share, as in Tahoe.
pub const MAX_MUTABLE_SHARE_SIZE: u64 = 69_105 * 1_000_000_000_000;
/// Uploads with no write for this long are aborted.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The largest read-test-write body: a whole SDMF file or a batch of MDMF segments fits many
/// times over; the reference allows 2^48 bytes, which would let one request exhaust memory.
pub const MAX_READ_TEST_WRITE_BODY: usize = 128 << 20;
/// A body that stops flowing for this long is abandoned.
const BODY_STALL: Duration = Duration::from_secs(60);

/// The response body type: whole for small answers, streamed for share data.
pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A source of seconds since the epoch (replaceable in tests).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Start at `now`.
    pub fn new(now: u64) -> Self {
        ManualClock(AtomicU64::new(now))
    }

    /// Move forward.
    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Settings of the storage service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The anonymous swissnum.
    pub swissnum: String,
    /// Bytes kept free on the backend's store.
    pub reserved_space: u64,
    /// What `application-version` says.
    pub application_version: String,
}

/// One in-progress immutable upload.
#[derive(Debug)]
struct Upload {
    secret: Vec<u8>,
    size: u64,
    written: RangeSet,
    last_write: u64,
}

type UploadKey = (StorageIndex, ShareNumber);

/// Async locks by key, dropped when nobody holds them.
#[derive(Debug, Default)]
struct KeyedLocks {
    locks: Mutex<HashMap<StorageIndex, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    async fn lock(&self, key: StorageIndex) -> (tokio::sync::OwnedMutexGuard<()>, Arc<tokio::sync::Mutex<()>>) {
        let lock = self.locks.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone();
        (lock.clone().lock_owned().await, lock)
    }

    fn release(&self, key: &StorageIndex, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        drop(lock);
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }
}

/// The storage service behind the HTTP server.
pub struct StorageService {
    backend: Arc<dyn Backend>,
    accountant: Arc<Accountant>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    authorization: Vec<u8>,
    uploads: Mutex<HashMap<UploadKey, Arc<tokio::sync::Mutex<Upload>>>>,
    slot_locks: KeyedLocks,
    available: Mutex<Option<(Instant, u64)>>,
    /// The encoded `version` answer for the free space it states: clients poll it every
    /// second, and it changes only when that figure does.
    version_body: Mutex<Option<(u64, Bytes)>>,
    /// Bytes promised to uploads in progress.
    reserved: AtomicU64,
}

impl std::fmt::Debug for StorageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageService").finish_non_exhaustive()
    }
}

/// The outcome of a handler: a response, or an early one.
type Handled = Result<Response<ResponseBody>, Response<ResponseBody>>;

fn respond(status: StatusCode, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let body = Full::new(body.into()).map_err(|never| match never {}).boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    }
    r
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    respond(status, None, Bytes::new())
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<ResponseBody> {
    respond(status, Some("text/plain; charset=utf-8"), msg.into())
}

fn cbor(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    respond(status, Some("application/cbor"), wire::encode(value))
}

fn auth_failure(e: AuthError) -> Response<ResponseBody> {
    match e {
        AuthError::BadRequest(m) => text(StatusCode::BAD_REQUEST, m),
        AuthError::Unauthorized(m) => text(StatusCode::UNAUTHORIZED, m),
    }
}

fn backend_failure(op: &str, e: BackendError) -> Response<ResponseBody> {
    match e {
        BackendError::NotFound => text(StatusCode::NOT_FOUND, "no such share"),
        BackendError::NoSpace => text(StatusCode::INSUFFICIENT_STORAGE, "out of space"),
        BackendError::OutOfRange(m) => text(StatusCode::BAD_REQUEST, m),
        other => {
            tracing::error!(op, "backend failed: {other}");
            text(StatusCode::SERVICE_UNAVAILABLE, format!("storage backend failed in {op}"))
        }
    }
}

/// A parsed route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Version,
    Lease(StorageIndex),
    Allocate(StorageIndex),
    Write(StorageIndex, ShareNumber),
    Abort(StorageIndex, ShareNumber),
    ImmutableCorrupt(StorageIndex, ShareNumber),
    ImmutableList(StorageIndex),
    ImmutableRead(StorageIndex, ShareNumber),
    ReadTestWrite(StorageIndex),
    MutableRead(StorageIndex, ShareNumber),
    MutableList(StorageIndex),
    MutableCorrupt(StorageIndex, ShareNumber),
}

fn shnum(s: &str) -> Option<ShareNumber> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().map(ShareNumber)
}

/// Match path and method; `Err` is 404 or 405.
fn route(method: &Method, path: &str) -> Result<Route, StatusCode> {
    let rest = path.strip_prefix("/storage/v1/").ok_or(StatusCode::NOT_FOUND)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let si = |s: &str| s.parse::<StorageIndex>().map_err(|_| StatusCode::NOT_FOUND);
    let n = |s: &str| shnum(s).ok_or(StatusCode::NOT_FOUND);
    let (route, allowed) = match parts.as_slice() {
        ["version"] => (Route::Version, Method::GET),
        ["lease", s] => (Route::Lease(si(s)?), Method::PUT),
        ["immutable", s] => (Route::Allocate(si(s)?), Method::POST),
        ["immutable", s, "shares"] => (Route::ImmutableList(si(s)?), Method::GET),
        ["immutable", s, k] => {
            let (s, k) = (si(s)?, n(k)?);
            match *method {
                Method::PATCH => (Route::Write(s, k), Method::PATCH),
                _ => (Route::ImmutableRead(s, k), Method::GET),
            }
        }
        ["immutable", s, k, "abort"] => (Route::Abort(si(s)?, n(k)?), Method::PUT),
        ["immutable", s, k, "corrupt"] => (Route::ImmutableCorrupt(si(s)?, n(k)?), Method::POST),
        ["mutable", s, "read-test-write"] => (Route::ReadTestWrite(si(s)?), Method::POST),
        ["mutable", s, "shares"] => (Route::MutableList(si(s)?), Method::GET),
        ["mutable", s, k] => (Route::MutableRead(si(s)?, n(k)?), Method::GET),
        ["mutable", s, k, "corrupt"] => (Route::MutableCorrupt(si(s)?, n(k)?), Method::POST),
        _ => return Err(StatusCode::NOT_FOUND),
    };
    if *method == allowed { Ok(route) } else { Err(StatusCode::METHOD_NOT_ALLOWED) }
}

fn check_accept(headers: &HeaderMap) -> Result<(), Response<ResponseBody>> {
    let Some(accept) = headers.get(http::header::ACCEPT) else { return Ok(()) };
    let accept = accept.to_str().unwrap_or("");
    let ok = accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(media, "application/cbor" | "*/*" | "application/*")
    });
    if ok { Ok(()) } else { Err(text(StatusCode::NOT_ACCEPTABLE, "responses are application/cbor")) }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Response<ResponseBody>> {
    match headers.get(http::header::CONTENT_TYPE) {
        None => Ok(()),
        Some(v) if v.to_str().unwrap_or("").split(';').next().unwrap_or("").trim() == "application/cbor" => Ok(()),
        Some(_) => Err(text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "request bodies are application/cbor")),
    }
}

/// Read a whole small body, refusing more than `limit` bytes.
async fn small_body(body: Incoming, limit: usize) -> Result<Vec<u8>, Response<ResponseBody>> {
    if body.size_hint().lower() > limit as u64 {
        return Err(text(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {limit} bytes")));
    }
    let mut body = body;
    let mut out = Vec::new();
    loop {
        let frame = match tokio::time::timeout(BODY_STALL, body.frame()).await {
            Err(_) => return Err(text(StatusCode::REQUEST_TIMEOUT, "request body stalled")),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(text(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(text(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {limit} bytes")));
            }
            out.extend_from_slice(&data);
        }
    }
}

async fn cbor_body(req: Request<Incoming>, limit: usize) -> Result<Value, Response<ResponseBody>> {
    check_content_type(req.headers())?;
    let body = small_body(req.into_body(), limit).await?;
    wire::decode(&body).map_err(|e| text(StatusCode::BAD_REQUEST, e.0))
}

impl StorageService {
    /// A service over `backend`, keeping accounts and leases in `accountant`.
    pub fn new(
        backend: Arc<dyn Backend>,
        accountant: Arc<Accountant>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        let authorization = marsh_accountant::authorization_value(&config.swissnum);
        StorageService {
            backend,
            accountant,
            clock,
            config,
            authorization,
            uploads: Mutex::default(),
            slot_locks: KeyedLocks::default(),
            available: Mutex::new(None),
            version_body: Mutex::new(None),
            reserved: AtomicU64::new(0),
        }
    }

    /// The accountant (for inspection and tests).
    pub fn accountant(&self) -> &Accountant {
        &self.accountant
    }

    /// The account a request speaks for: the anonymous account's swissnum is the node's, every
    /// other one is looked up, so account changes apply to the very next request.
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, Response<ResponseBody>> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(text(StatusCode::UNAUTHORIZED, "missing Authorization header"));
        };
        if value.to_str().is_err() {
            return Err(text(StatusCode::BAD_REQUEST, "Authorization header is not text"));
        }
        let caller = if auth::same(value.as_bytes(), &self.authorization) {
            self.accountant.anonymous().map_err(Self::accountant_failure)?
        } else {
            self.accountant
                .caller(value.as_bytes())
                .map_err(Self::accountant_failure)?
                .ok_or_else(|| text(StatusCode::UNAUTHORIZED, "wrong Authorization header"))?
        };
        if caller.revoked {
            return Err(text(StatusCode::UNAUTHORIZED, format!("account `{}` was revoked", caller.name)));
        }
        Ok(caller)
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<UploadKey, Arc<tokio::sync::Mutex<Upload>>>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handle one request: never panics, never fails.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let start = Instant::now();
        // Copied only when request logging is on (`marsh run --verbose`, or `MARSH_LOG`).
        let logged = tracing::enabled!(target: "marsh::request", tracing::Level::INFO)
            .then(|| (req.method().clone(), req.uri().path().to_owned()));
        let response = match self.dispatch(req).await {
            Ok(r) | Err(r) => r,
        };
        if let Some((method, path)) = logged {
            tracing::info!(
                target: "marsh::request",
                %method,
                path,
                status = response.status().as_u16(),
                ms = start.elapsed().as_millis() as u64,
                "request"
            );
        }
        response
    }

    async fn dispatch(&self, req: Request<Incoming>) -> Handled {
        let route = route(req.method(), req.uri().path()).map_err(empty)?;
        let caller = self.caller(req.headers())?;
        if matches!(route, Route::Allocate(_) | Route::Write(..) | Route::ReadTestWrite(_)) && !caller.attributes.write
        {
            return Err(text(StatusCode::FORBIDDEN, format!("account `{}` may not write", caller.name)));
        }
        let required: &[SecretKind] = match route {
            Route::Lease(_) => &[SecretKind::LeaseRenew, SecretKind::LeaseCancel],
            Route::Allocate(_) => &[SecretKind::LeaseRenew, SecretKind::LeaseCancel, SecretKind::Upload],
            Route::Write(..) | Route::Abort(..) => &[SecretKind::Upload],
            Route::ReadTestWrite(_) => &[SecretKind::WriteEnabler, SecretKind::LeaseRenew, SecretKind::LeaseCancel],
            _ => &[],
        };
        let secrets = auth::secrets(req.headers(), required).map_err(auth_failure)?;
        let secret = |k: SecretKind| secrets.get(&k).cloned().unwrap_or_default();
        match route {
            Route::Version => {
                check_accept(req.headers())?;
                self.version().await
            }
            Route::Lease(si) => {
                self.renew(&caller, si, &secret(SecretKind::LeaseRenew), &secret(SecretKind::LeaseCancel)).await
            }
            Route::Allocate(si) => {
                check_accept(req.headers())?;
                let (renew, cancel, upload) =
                    (secret(SecretKind::LeaseRenew), secret(SecretKind::LeaseCancel), secret(SecretKind::Upload));
                let body = cbor_body(req, 8192).await?;
                let request = wire::allocate_request(&body).map_err(|e| text(StatusCode::BAD_REQUEST, e.0))?;
                self.allocate(&caller, si, request, &renew, &cancel, &upload).await
            }
            Route::Write(si, n) => {
                check_accept(req.headers())?;
                self.write(si, n, &secret(SecretKind::Upload), req).await
            }
            Route::Abort(si, n) => self.abort(si, n, &secret(SecretKind::Upload)).await,
            Route::ImmutableCorrupt(si, n) => {
                let exists = self.backend.size(&si, n).await.map_err(|e| backend_failure("size", e))?.is_some();
                self.corrupt("immutable", si, n, exists, req).await
            }
            Route::MutableCorrupt(si, n) => {
                let exists = self.backend.mutable_size(&si, n).await.map_err(|e| backend_failure("size", e))?.is_some();
                self.corrupt("mutable", si, n, exists, req).await
            }
            Route::ImmutableList(si) => {
                check_accept(req.headers())?;
                let shares = self.backend.list_shares(&si).await.map_err(|e| backend_failure("list", e))?;
                Ok(cbor(StatusCode::OK, &wire::share_set(shares.into_iter().map(|n| u64::from(n.0)))))
            }
            Route::MutableList(si) => {
                check_accept(req.headers())?;
                let shares = self.backend.mutable_list(&si).await.map_err(|e| backend_failure("list", e))?;
                Ok(cbor(StatusCode::OK, &wire::share_set(shares.into_iter().map(|n| u64::from(n.0)))))
            }
            Route::ImmutableRead(si, n) => self.read(si, n, false, req.headers()).await,
            Route::MutableRead(si, n) => self.read(si, n, true, req.headers()).await,
            Route::ReadTestWrite(si) => {
                check_accept(req.headers())?;
                let (we, renew, cancel) =
                    (secret(SecretKind::WriteEnabler), secret(SecretKind::LeaseRenew), secret(SecretKind::LeaseCancel));
                let body = cbor_body(req, MAX_READ_TEST_WRITE_BODY).await?;
                let request = wire::read_test_write_request(&body).map_err(|e| text(StatusCode::BAD_REQUEST, e.0))?;
                self.read_test_write(&caller, si, request, &we, &renew, &cancel).await
            }
        }
    }

    /// Free space as clients should see it, cached for a few seconds: clients poll `version`
    /// every second and a backend may be slow to answer.
    async fn available(&self) -> u64 {
        if let Some((at, v)) = *self.available.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < Duration::from_secs(5)
        {
            return v;
        }
        let raw = match self.backend.usage().await {
            Ok(u) => u.available.unwrap_or(u64::MAX),
            Err(e) => {
                tracing::warn!("backend usage failed: {e}");
                0
            }
        };
        let v = raw.saturating_sub(self.config.reserved_space);
        *self.available.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), v));
        v
    }

    async fn version(&self) -> Handled {
        let available = self.available().await;
        let mut cached = self.version_body.lock().unwrap_or_else(|p| p.into_inner());
        let body = match &*cached {
            Some((stated, body)) if *stated == available => body.clone(),
            _ => {
                let value = wire::version(available, MAX_MUTABLE_SHARE_SIZE, &self.config.application_version);
                let body = Bytes::from(wire::encode(&value));
                *cached = Some((available, body.clone()));
                body
            }
        };
        Ok(respond(StatusCode::OK, Some("application/cbor"), body))
    }

    fn accountant_failure(e: AccountantError) -> Response<ResponseBody> {
        tracing::error!("{e}");
        text(StatusCode::INTERNAL_SERVER_ERROR, "accounting database failed")
    }

    async fn renew(&self, caller: &Caller, si: StorageIndex, renew: &[u8], cancel: &[u8]) -> Handled {
        let mut shares = self.backend.list_shares(&si).await.map_err(|e| backend_failure("list", e))?;
        shares.extend(self.backend.mutable_list(&si).await.map_err(|e| backend_failure("list", e))?);
        if shares.is_empty() {
            return Err(text(StatusCode::NOT_FOUND, "no shares for this storage index"));
        }
        let now = self.clock.now();
        for n in shares {
            self.accountant.add_or_renew(caller.id, &si, n, renew, cancel, now).map_err(Self::accountant_failure)?;
        }
        Ok(empty(StatusCode::NO_CONTENT))
    }

    async fn allocate(
        &self,
        caller: &Caller,
        si: StorageIndex,
        request: wire::AllocateRequest,
        renew: &[u8],
        cancel: &[u8],
        upload_secret: &[u8],
    ) -> Handled {
        let now = self.clock.now();
        let complete = self.backend.list_shares(&si).await.map_err(|e| backend_failure("list", e))?;
        for n in &complete {
            self.accountant.add_or_renew(caller.id, &si, *n, renew, cancel, now).map_err(Self::accountant_failure)?;
        }
        let mut budget = self.available().await.saturating_sub(self.reserved.load(Ordering::SeqCst));
        if let Some(quota) = caller.attributes.quota {
            // Over quota looks like a full server to the client: the shares are not allocated.
            let used = self.accountant.usage(caller.id).map_err(Self::accountant_failure)?;
            budget = budget.min(quota.saturating_sub(used));
        }
        let mut allocated = Vec::new();
        let mut requested = request.share_numbers.clone();
        requested.sort_unstable();
        requested.dedup();
        for number in requested {
            let Ok(n) = u16::try_from(number).map(ShareNumber) else {
                return Err(text(StatusCode::BAD_REQUEST, format!("share number {number} is too large")));
            };
            if complete.contains(&n) {
                continue;
            }
            let existing = self.uploads().get(&(si, n)).cloned();
            if let Some(existing) = existing {
                // Spec behaviour for a retry with the same secret; another secret's upload is
                // never disturbed.
                let same = existing.lock().await.secret.as_slice() == upload_secret;
                if same {
                    allocated.push(number);
                }
                continue;
            }
            if request.allocated_size > budget {
                continue;
            }
            self.backend.begin(&si, n, request.allocated_size).await.map_err(|e| backend_failure("begin", e))?;
            budget -= request.allocated_size;
            let upload = Upload {
                secret: upload_secret.to_vec(),
                size: request.allocated_size,
                written: RangeSet::default(),
                last_write: now,
            };
            self.uploads().insert((si, n), Arc::new(tokio::sync::Mutex::new(upload)));
            self.reserved.fetch_add(request.allocated_size, Ordering::SeqCst);
            self.accountant.add_or_renew(caller.id, &si, n, renew, cancel, now).map_err(Self::accountant_failure)?;
            self.accountant
                .record_share(caller.id, &si, n, request.allocated_size)
                .map_err(Self::accountant_failure)?;
            allocated.push(number);
        }
        let have: Vec<u64> = complete.iter().map(|n| u64::from(n.0)).collect();
        Ok(cbor(StatusCode::OK, &wire::allocate_response(&have, &allocated)))
    }

    async fn write(&self, si: StorageIndex, n: ShareNumber, secret: &[u8], req: Request<Incoming>) -> Handled {
        let range =
            req.headers().get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range);
        let Some((start, end)) = range else {
            return Err(empty(StatusCode::RANGE_NOT_SATISFIABLE));
        };
        let upload =
            self.uploads().get(&(si, n)).cloned().ok_or_else(|| text(StatusCode::NOT_FOUND, "no such upload"))?;
        let mut up = upload.lock().await;
        if !auth::same(&up.secret, secret) {
            return Err(text(StatusCode::UNAUTHORIZED, "wrong upload secret"));
        }
        if !self.uploads().get(&(si, n)).is_some_and(|u| Arc::ptr_eq(u, &upload)) {
            // Completed or aborted while this request waited for the lock.
            return Err(text(StatusCode::NOT_FOUND, "no such upload"));
        }
        if end > up.size {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("range ends at {end}, past the allocated size {}", up.size),
            ));
        }
        let chunk = self.backend.max_chunk().clamp(64 * 1024, 4 << 20);
        let mut body = req.into_body();
        let mut offset = start;
        let mut pending: Vec<u8> = Vec::with_capacity(chunk.min((end - start) as usize));
        loop {
            let frame = match tokio::time::timeout(BODY_STALL, body.frame()).await {
                Err(_) => return Err(text(StatusCode::REQUEST_TIMEOUT, "request body stalled")),
                Ok(None) => None,
                Ok(Some(Err(e))) => return Err(text(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
                Ok(Some(Ok(frame))) => frame.into_data().ok(),
            };
            let done = frame.is_none();
            if let Some(data) = frame {
                if offset + (pending.len() + data.len()) as u64 > end {
                    return Err(text(StatusCode::BAD_REQUEST, "body is longer than its Content-Range"));
                }
                pending.extend_from_slice(&data);
            }
            while pending.len() >= chunk || (done && !pending.is_empty()) {
                let take = pending.len().min(chunk);
                // Hand the buffer itself to the backend; only a tail past the chunk is copied.
                let rest = pending.split_off(take);
                let piece = std::mem::replace(&mut pending, rest);
                pending.reserve(chunk);
                self.write_piece(&si, n, &mut up, offset, &piece).await?;
                offset += take as u64;
            }
            if done {
                break;
            }
        }
        if offset != end {
            return Err(text(StatusCode::BAD_REQUEST, "body is shorter than its Content-Range"));
        }
        up.last_write = self.clock.now();
        let missing = up.written.missing(up.size);
        if !missing.is_empty() {
            return Ok(cbor(StatusCode::OK, &wire::required(&missing)));
        }
        self.backend.finish(&si, n).await.map_err(|e| backend_failure("finish", e))?;
        self.uploads().remove(&(si, n));
        self.reserved.fetch_sub(up.size, Ordering::SeqCst);
        Ok(cbor(StatusCode::CREATED, &wire::required(&[])))
    }

    /// Write one piece, refusing it (409) if it overlaps written bytes with different ones.
    async fn write_piece(
        &self,
        si: &StorageIndex,
        n: ShareNumber,
        up: &mut Upload,
        offset: u64,
        piece: &[u8],
    ) -> Result<(), Response<ResponseBody>> {
        let end = offset + piece.len() as u64;
        for (a, b) in up.written.overlaps(offset, end) {
            let existing = self.backend.read_incoming(si, n, a, b - a).await.map_err(|e| backend_failure("read", e))?;
            if existing != piece[(a - offset) as usize..(b - offset) as usize] {
                return Err(empty(StatusCode::CONFLICT));
            }
        }
        self.backend.write(si, n, offset, piece).await.map_err(|e| backend_failure("write", e))?;
        up.written.insert(offset, end);
        Ok(())
    }

    async fn abort(&self, si: StorageIndex, n: ShareNumber, secret: &[u8]) -> Handled {
        let upload = self.uploads().get(&(si, n)).cloned();
        let Some(upload) = upload else {
            let complete = self.backend.size(&si, n).await.map_err(|e| backend_failure("size", e))?.is_some();
            return Err(if complete {
                text(StatusCode::METHOD_NOT_ALLOWED, "the share is complete")
            } else {
                text(StatusCode::NOT_FOUND, "no such upload")
            });
        };
        let up = upload.lock().await;
        if !auth::same(&up.secret, secret) {
            return Err(text(StatusCode::UNAUTHORIZED, "wrong upload secret"));
        }
        self.drop_upload(&si, n, &upload, up.size).await?;
        Ok(empty(StatusCode::OK))
    }

    async fn drop_upload(
        &self,
        si: &StorageIndex,
        n: ShareNumber,
        upload: &Arc<tokio::sync::Mutex<Upload>>,
        size: u64,
    ) -> Result<(), Response<ResponseBody>> {
        let removed = {
            let mut uploads = self.uploads();
            match uploads.get(&(*si, n)) {
                Some(u) if Arc::ptr_eq(u, upload) => uploads.remove(&(*si, n)).is_some(),
                _ => false,
            }
        };
        if removed {
            self.reserved.fetch_sub(size, Ordering::SeqCst);
            self.backend.abort(si, n).await.map_err(|e| backend_failure("abort", e))?;
            self.accountant.forget_share(si, n).map_err(Self::accountant_failure)?;
        }
        Ok(())
    }

    /// Abort uploads with no write for [`UPLOAD_IDLE_TIMEOUT`]; returns how many.
    pub async fn abort_idle_uploads(&self) -> usize {
        let now = self.clock.now();
        let all: Vec<(UploadKey, Arc<tokio::sync::Mutex<Upload>>)> =
            self.uploads().iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut aborted = 0;
        for ((si, n), upload) in all {
            let idle_size = match upload.try_lock() {
                Ok(up) if now.saturating_sub(up.last_write) >= UPLOAD_IDLE_TIMEOUT.as_secs() => Some(up.size),
                _ => None, // active, or being written to right now
            };
            if let Some(size) = idle_size
                && self.drop_upload(&si, n, &upload, size).await.is_ok()
            {
                tracing::info!(si = %si, shnum = n.0, "aborted an upload idle for 30 minutes");
                aborted += 1;
            }
        }
        aborted
    }

    async fn corrupt(
        &self,
        kind: &str,
        si: StorageIndex,
        n: ShareNumber,
        exists: bool,
        req: Request<Incoming>,
    ) -> Handled {
        if !exists {
            return Err(text(StatusCode::NOT_FOUND, "no such share"));
        }
        let body = cbor_body(req, 32_768).await?;
        let reason = wire::corrupt_request(&body).map_err(|e| text(StatusCode::BAD_REQUEST, e.0))?;
        tracing::warn!(kind, si = %si, shnum = n.0, reason, "client reports a corrupt share");
        self.accountant.record_corruption(self.clock.now(), kind, &si, n, &reason).map_err(Self::accountant_failure)?;
        Ok(empty(StatusCode::OK))
    }

    async fn read(&self, si: StorageIndex, n: ShareNumber, mutable: bool, headers: &HeaderMap) -> Handled {
        let size = if mutable { self.backend.mutable_size(&si, n).await } else { self.backend.size(&si, n).await };
        let size = size
            .map_err(|e| backend_failure("size", e))?
            .ok_or_else(|| text(StatusCode::NOT_FOUND, "no such share"))?;
        let (status, start, end) = match headers.get(http::header::RANGE) {
            None => (StatusCode::OK, 0, size),
            Some(range) => {
                let (a, b) = range
                    .to_str()
                    .ok()
                    .and_then(parse_range)
                    .ok_or_else(|| empty(StatusCode::RANGE_NOT_SATISFIABLE))?;
                let end = b.saturating_add(1).min(size);
                if a >= end {
                    return Ok(empty(StatusCode::NO_CONTENT));
                }
                (StatusCode::PARTIAL_CONTENT, a, end)
            }
        };
        let chunk = self.backend.max_chunk().clamp(64 * 1024, 4 << 20) as u64;
        // The first chunk is read before answering, so a failing backend gets an error status
        // rather than a truncated 2xx; the rest streams through a two-chunk channel.
        let first_len = (end - start).min(chunk);
        let first = read_share(&*self.backend, &si, n, mutable, start, first_len)
            .await
            .map_err(|e| backend_failure("read", e))?;
        if (first.len() as u64) < first_len {
            return Err(text(StatusCode::SERVICE_UNAVAILABLE, "share shorter than its size"));
        }
        let body = if end - start == first_len {
            Full::new(Bytes::from(first)).map_err(|never| match never {}).boxed_unsync()
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
            let backend = self.backend.clone();
            tokio::spawn(async move {
                if tx.send(Ok(Bytes::from(first))).await.is_err() {
                    return;
                }
                let mut offset = start + first_len;
                while offset < end {
                    let len = (end - offset).min(chunk);
                    let piece = match read_share(&*backend, &si, n, mutable, offset, len).await {
                        Ok(p) if p.len() as u64 == len => Ok(Bytes::from(p)),
                        Ok(_) => Err(std::io::Error::other("share shorter than its size")),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    let failed = piece.is_err();
                    if tx.send(piece).await.is_err() || failed {
                        return;
                    }
                    offset += len;
                }
            });
            ChannelBody { rx }.boxed_unsync()
        };
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
        if status == StatusCode::PARTIAL_CONTENT
            && let Ok(v) = http::HeaderValue::from_str(&format!("bytes {start}-{}/*", end - 1))
        {
            r.headers_mut().insert(http::header::CONTENT_RANGE, v);
        }
        if let Ok(v) = http::HeaderValue::from_str(&(end - start).to_string()) {
            r.headers_mut().insert(http::header::CONTENT_LENGTH, v);
        }
        Ok(r)
    }

    async fn read_test_write(
        &self,
        caller: &Caller,
        si: StorageIndex,
        request: wire::ReadTestWriteRequest,
        enabler: &[u8],
        renew: &[u8],
        cancel: &[u8],
    ) -> Handled {
        let (guard, lock) = self.slot_locks.lock(si).await;
        let result = self.read_test_write_locked(caller, si, request, enabler, renew, cancel).await;
        drop(guard);
        self.slot_locks.release(&si, lock);
        result
    }

    async fn read_test_write_locked(
        &self,
        caller: &Caller,
        si: StorageIndex,
        request: wire::ReadTestWriteRequest,
        enabler: &[u8],
        renew: &[u8],
        cancel: &[u8],
    ) -> Handled {
        let fail = |e| backend_failure("read-test-write", e);
        let existing = self.backend.mutable_list(&si).await.map_err(fail)?;
        // 1. The write enabler must match every existing share.
        for n in &existing {
            match self.accountant.check_write_enabler(&si, *n, enabler).map_err(Self::accountant_failure)? {
                Some(true) => {}
                Some(false) => return Err(text(StatusCode::UNAUTHORIZED, "wrong write enabler")),
                None => {
                    tracing::error!(si = %si, shnum = n.0, "no write enabler recorded for an existing mutable share; refusing the write (run `marsh recover` if the node's cache was lost)");
                    return Err(text(StatusCode::UNAUTHORIZED, "write enabler unknown to this server"));
                }
            }
        }
        let mut shares: BTreeMap<u64, ShareNumber> = BTreeMap::new();
        for number in request.test_write_vectors.keys() {
            let n = u16::try_from(*number)
                .map(ShareNumber)
                .map_err(|_| text(StatusCode::BAD_REQUEST, "share number too large"))?;
            shares.insert(*number, n);
        }
        // 2. Tests.
        let mut success = true;
        'tests: for (number, tw) in &request.test_write_vectors {
            for t in &tw.test {
                let got = self.backend.mutable_read(&si, shares[number], t.offset, t.size).await.map_err(fail)?;
                if got != t.specimen {
                    success = false;
                    break 'tests;
                }
            }
        }
        // 3. Reads, before any write, of every existing share.
        let mut data = BTreeMap::new();
        for n in &existing {
            let mut reads = Vec::new();
            for (offset, size) in &request.read_vector {
                reads.push(self.backend.mutable_read(&si, *n, *offset, *size).await.map_err(fail)?);
            }
            data.insert(u64::from(n.0), reads);
        }
        // 4. Writes, only if every test passed, and only if they keep the caller within its quota.
        if success {
            self.check_mutable_quota(caller, &si, &existing, &request, &shares).await?;
            let now = self.clock.now();
            for (number, tw) in &request.test_write_vectors {
                let n = shares[number];
                if tw.new_length == Some(0) {
                    self.backend.mutable_delete(&si, n).await.map_err(fail)?;
                    self.accountant.forget_share(&si, n).map_err(Self::accountant_failure)?;
                    continue;
                }
                for (offset, bytes) in &tw.write {
                    if offset.checked_add(bytes.len() as u64).is_none_or(|e| e > MAX_MUTABLE_SHARE_SIZE) {
                        return Err(text(StatusCode::PAYLOAD_TOO_LARGE, "write past the largest mutable share size"));
                    }
                }
                let writes: Vec<WriteVector> =
                    tw.write.iter().map(|(o, d)| WriteVector { offset: *o, data: d.clone() }).collect();
                let is_new = !existing.contains(&n);
                self.backend.mutable_write(&si, n, &writes, tw.new_length).await.map_err(fail)?;
                if is_new {
                    self.accountant.set_write_enabler(&si, n, enabler).map_err(Self::accountant_failure)?;
                }
                // Usage: the share's size now, held by the account that created it.
                let size = self.backend.mutable_size(&si, n).await.map_err(fail)?.unwrap_or(0);
                self.accountant.record_share(caller.id, &si, n, size).map_err(Self::accountant_failure)?;
                self.accountant
                    .add_or_renew(caller.id, &si, n, renew, cancel, now)
                    .map_err(Self::accountant_failure)?;
            }
        }
        Ok(cbor(StatusCode::OK, &wire::read_test_write_response(success, &data)))
    }
}

impl StorageService {
    /// Refuse (507) a read-test-write that would grow mutable shares past the quota of the
    /// account holding them: the account that created each share, or the caller for new ones.
    async fn check_mutable_quota(
        &self,
        caller: &Caller,
        si: &StorageIndex,
        existing: &[ShareNumber],
        request: &wire::ReadTestWriteRequest,
        shares: &BTreeMap<u64, ShareNumber>,
    ) -> Result<(), Response<ResponseBody>> {
        let fail = |e| backend_failure("read-test-write", e);
        // Growth per holding account, for holders with a quota.
        let mut growth: BTreeMap<i64, (String, u64, u64)> = BTreeMap::new();
        for (number, tw) in &request.test_write_vectors {
            let n = shares[number];
            let (holder, name, quota) = match self.accountant.holder(si, n).map_err(Self::accountant_failure)? {
                Some(held) => held,
                None => (caller.id, caller.name.clone(), caller.attributes.quota),
            };
            let Some(quota) = quota else { continue };
            let current = if existing.contains(&n) {
                self.backend.mutable_size(si, n).await.map_err(fail)?.unwrap_or(0)
            } else {
                0
            };
            let written = tw.write.iter().map(|(o, d)| o.saturating_add(d.len() as u64)).max().unwrap_or(0);
            let mut size = current.max(written);
            if let Some(limit) = tw.new_length {
                size = size.min(limit);
            }
            let entry = growth.entry(holder.0).or_insert((name, quota, 0));
            entry.2 = entry.2.saturating_add(size.saturating_sub(current));
        }
        for (id, (name, quota, grows)) in growth {
            let used = self.accountant.usage(marsh_accountant::AccountId(id)).map_err(Self::accountant_failure)?;
            if grows > 0 && used.saturating_add(grows) > quota {
                return Err(text(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!(
                        "account `{name}` would go over its quota ({used} of {quota} bytes used; this write adds {grows})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

async fn read_share(
    backend: &dyn Backend,
    si: &StorageIndex,
    n: ShareNumber,
    mutable: bool,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, BackendError> {
    if mutable { backend.mutable_read(si, n, offset, len).await } else { backend.read(si, n, offset, len).await }
}

/// A response body fed by a bounded channel, so a large share streams with at most two
/// chunks in memory.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|item| item.map(|r| r.map(hyper::body::Frame::data)))
    }
}

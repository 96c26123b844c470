//! The GBS endpoints: routing, checks in the reference's order (route, `Authorization`,
//! secrets, then each endpoint's own steps), and the protocol rules the backend does not
//! know about: upload state, written ranges, conflicts, leases, write enablers and locks.
//!
//! Every failure is an [`ApiError`] (a 4xx, or a 5xx only when the backend or the database
//! failed); a request can never panic the server. Request bodies stream to the backend in
//! bounded chunks. What a handler left of its request body is drained before the answer goes
//! out, or the answer says `Connection: close` (`body.rs`). Mutable read-test-write lives in
//! `mutable.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ciborium::value::Value;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use marsh_core::{Backend, BackendError, ShareId, ShareNumber, StorageIndex};

use crate::auth::{self, SecretKind};
use crate::body::TrackedBody;
use crate::mutable::{PendingSlots, RtwSecrets, SlotLocks};
use crate::ranges::{RangeSet, parse_content_range, parse_range};
use crate::response::{ApiError, ChannelBody, Handled, ResponseBody, cbor, empty, respond};
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

/// What [`StorageService::start_up`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartUpReport {
    /// Uploads a previous process left open, discarded.
    pub uploads_discarded: u64,
    /// Read-test-writes a previous process recorded, applied in full.
    pub writes_completed: u64,
    /// Uploads or writes that could not be settled now (logged each).
    pub left: u64,
}

/// Why an upload could not be closed.
#[derive(Debug)]
enum CloseError {
    /// The backend failed in the named operation.
    Backend(&'static str, BackendError),
    /// The accounting database failed.
    Accountant(AccountantError),
}

/// A request as the handlers see it.
type Req = Request<TrackedBody>;

/// The storage service behind the HTTP server.
pub struct StorageService {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) accountant: Arc<Accountant>,
    pub(crate) clock: Arc<dyn Clock>,
    config: ServiceConfig,
    authorization: Vec<u8>,
    uploads: Mutex<HashMap<UploadKey, Arc<tokio::sync::Mutex<Upload>>>>,
    pub(crate) slot_locks: SlotLocks,
    /// Slots whose last read-test-write may not be applied in full yet.
    pub(crate) pending: Arc<PendingSlots>,
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

fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(accept) = headers.get(http::header::ACCEPT) else { return Ok(()) };
    let accept = accept.to_str().unwrap_or("");
    let ok = accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(media, "application/cbor" | "*/*" | "application/*")
    });
    if ok { Ok(()) } else { Err(ApiError::text(StatusCode::NOT_ACCEPTABLE, "responses are application/cbor")) }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(http::header::CONTENT_TYPE) {
        None => Ok(()),
        Some(v) if v.to_str().unwrap_or("").split(';').next().unwrap_or("").trim() == "application/cbor" => Ok(()),
        Some(_) => Err(ApiError::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "request bodies are application/cbor")),
    }
}

/// Read a whole small body, refusing more than `limit` bytes.
async fn small_body(body: TrackedBody, limit: usize) -> Result<Vec<u8>, ApiError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::text(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {limit} bytes")));
    }
    let mut body = body;
    let mut out = Vec::new();
    loop {
        let frame = match tokio::time::timeout(BODY_STALL, body.frame()).await {
            Err(_) => return Err(ApiError::text(StatusCode::REQUEST_TIMEOUT, "request body stalled")),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(ApiError::text(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(ApiError::text(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {limit} bytes")));
            }
            out.extend_from_slice(&data);
        }
    }
}

async fn cbor_body(req: Req, limit: usize) -> Result<Value, ApiError> {
    check_content_type(req.headers())?;
    let body = small_body(req.into_body(), limit).await?;
    wire::decode(&body).map_err(|e| ApiError::text(StatusCode::BAD_REQUEST, e.0))
}

impl StorageService {
    /// A service over `backend`, keeping accounts and leases in `accountant`.
    ///
    /// Slots with a read-test-write that may not be applied in full are read from the
    /// accountant now, so none is served before it is settled; call
    /// [`StorageService::start_up`] before serving to settle them all at once.
    pub fn new(
        backend: Arc<dyn Backend>,
        accountant: Arc<Accountant>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Result<Self, AccountantError> {
        let authorization = marsh_accountant::authorization_value(&config.swissnum);
        let pending = accountant.pending_mutable_writes()?;
        Ok(StorageService {
            backend,
            accountant,
            clock,
            config,
            authorization,
            uploads: Mutex::default(),
            slot_locks: SlotLocks::default(),
            pending: Arc::new(PendingSlots::new(pending)),
            available: Mutex::new(None),
            version_body: Mutex::new(None),
            reserved: AtomicU64::new(0),
        })
    }

    /// What a previous process left unfinished, dealt with before serving: uploads it had
    /// open can never finish (their partial data is discarded and they stop counting towards
    /// usage), and read-test-writes it recorded are applied in full.
    ///
    /// What cannot be settled now (the backend fails on one share or slot) is logged and left:
    /// the node serves everything else, an open upload is tried again at the next start, and a
    /// slot with an unfinished write answers 503 until the write completes.
    pub async fn start_up(&self) -> Result<StartUpReport, AccountantError> {
        let mut report = StartUpReport::default();
        for share in self.accountant.open_uploads()? {
            match self.close_upload(&share).await {
                Ok(true) => report.uploads_discarded += 1,
                // It finished; only the bookkeeping was interrupted.
                Ok(false) => {}
                Err(CloseError::Backend(op, e)) => {
                    tracing::warn!(%share, "start-up: an upload left open failed in {op}: {e}");
                    report.left += 1;
                }
                Err(CloseError::Accountant(e)) => return Err(e),
            }
        }
        for si in self.pending.all() {
            let slot = self.slot_locks.lock(si).await;
            match self.settle(si, slot).await {
                Ok(_) => report.writes_completed += 1,
                Err(e) => {
                    tracing::error!(si = %si, "start-up: an interrupted mutable write could not be completed ({}); the slot answers 503 until it is", e.status());
                    report.left += 1;
                }
            }
        }
        Ok(report)
    }

    /// The accountant (for inspection and tests).
    pub fn accountant(&self) -> &Accountant {
        &self.accountant
    }

    /// The account a request speaks for: the anonymous account's swissnum is the node's, every
    /// other one is looked up, so account changes apply to the very next request.
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::text(StatusCode::UNAUTHORIZED, "missing Authorization header"));
        };
        if value.to_str().is_err() {
            return Err(ApiError::text(StatusCode::BAD_REQUEST, "Authorization header is not text"));
        }
        let caller = if auth::same(value.as_bytes(), &self.authorization) {
            self.accountant.anonymous().map_err(ApiError::accountant)?
        } else {
            self.accountant
                .caller(value.as_bytes())
                .map_err(ApiError::accountant)?
                .ok_or_else(|| ApiError::text(StatusCode::UNAUTHORIZED, "wrong Authorization header"))?
        };
        if caller.revoked {
            return Err(ApiError::text(StatusCode::UNAUTHORIZED, format!("account `{}` was revoked", caller.name)));
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
        let (parts, body) = req.into_parts();
        let (body, leftover) = TrackedBody::new(body);
        let mut response = match self.dispatch(Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        // A body the handler did not read whole is read and dropped here (the reference reads
        // every body before it answers), so the connection serves the client's next request;
        // one too large or too slow for that closes the connection instead.
        if !leftover.drain().await {
            response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
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

    async fn dispatch(&self, req: Req) -> Handled {
        let route = route(req.method(), req.uri().path()).map_err(ApiError::empty)?;
        let share_data = matches!(route, Route::ImmutableRead(..) | Route::MutableRead(..));
        self.route(route, req).await.map_err(|e| if share_data { e.for_share_data() } else { e })
    }

    async fn route(&self, route: Route, req: Req) -> Handled {
        let caller = self.caller(req.headers())?;
        if matches!(route, Route::Allocate(_) | Route::Write(..) | Route::ReadTestWrite(_)) && !caller.attributes.write
        {
            return Err(ApiError::text(StatusCode::FORBIDDEN, format!("account `{}` may not write", caller.name)));
        }
        let required: &[SecretKind] = match route {
            Route::Lease(_) => &[SecretKind::LeaseRenew, SecretKind::LeaseCancel],
            Route::Allocate(_) => &[SecretKind::LeaseRenew, SecretKind::LeaseCancel, SecretKind::Upload],
            Route::Write(..) | Route::Abort(..) => &[SecretKind::Upload],
            Route::ReadTestWrite(_) => &[SecretKind::WriteEnabler, SecretKind::LeaseRenew, SecretKind::LeaseCancel],
            _ => &[],
        };
        let secrets = auth::secrets(req.headers(), required).map_err(ApiError::auth)?;
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
                let request =
                    wire::allocate_request(&body).map_err(|e| ApiError::text(StatusCode::BAD_REQUEST, e.0))?;
                self.allocate(&caller, si, request, &renew, &cancel, &upload).await
            }
            Route::Write(si, n) => {
                check_accept(req.headers())?;
                self.write(si, n, &secret(SecretKind::Upload), req).await
            }
            Route::Abort(si, n) => self.abort(si, n, &secret(SecretKind::Upload)).await,
            Route::ImmutableCorrupt(si, n) => {
                let exists = self.backend.size(&si, n).await.map_err(|e| ApiError::backend("size", e))?.is_some();
                self.corrupt("immutable", si, n, exists, req).await
            }
            Route::MutableCorrupt(si, n) => {
                let exists =
                    self.backend.mutable_size(&si, n).await.map_err(|e| ApiError::backend("size", e))?.is_some();
                self.corrupt("mutable", si, n, exists, req).await
            }
            Route::ImmutableList(si) => {
                check_accept(req.headers())?;
                let shares = self.backend.list_shares(&si).await.map_err(|e| ApiError::backend("list", e))?;
                Ok(cbor(StatusCode::OK, &wire::share_set(shares.into_iter().map(|n| u64::from(n.0)))))
            }
            Route::MutableList(si) => {
                check_accept(req.headers())?;
                self.settle_for_read(&si).await?;
                let shares = self.backend.mutable_list(&si).await.map_err(|e| ApiError::backend("list", e))?;
                Ok(cbor(StatusCode::OK, &wire::share_set(shares.into_iter().map(|n| u64::from(n.0)))))
            }
            Route::ImmutableRead(si, n) => self.read(si, n, false, req.headers()).await,
            Route::MutableRead(si, n) => {
                self.settle_for_read(&si).await?;
                self.read(si, n, true, req.headers()).await
            }
            Route::ReadTestWrite(si) => {
                check_accept(req.headers())?;
                let (we, renew, cancel) =
                    (secret(SecretKind::WriteEnabler), secret(SecretKind::LeaseRenew), secret(SecretKind::LeaseCancel));
                let body = cbor_body(req, MAX_READ_TEST_WRITE_BODY).await?;
                let request =
                    wire::read_test_write_request(&body).map_err(|e| ApiError::text(StatusCode::BAD_REQUEST, e.0))?;
                self.read_test_write(&caller, si, request, RtwSecrets { enabler: &we, renew: &renew, cancel: &cancel })
                    .await
            }
        }
    }

    /// Free space as clients should see it, cached for a few seconds: clients poll `version`
    /// every second and a backend may be slow to answer.
    pub(crate) async fn available(&self) -> u64 {
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

    async fn renew(&self, caller: &Caller, si: StorageIndex, renew: &[u8], cancel: &[u8]) -> Handled {
        let immutable = self.backend.list_shares(&si).await.map_err(|e| ApiError::backend("list", e))?;
        let mutable = self.backend.mutable_list(&si).await.map_err(|e| ApiError::backend("list", e))?;
        let shares: Vec<ShareId> = (immutable.into_iter().map(|n| ShareId::immutable(si, n)))
            .chain(mutable.into_iter().map(|n| ShareId::mutable(si, n)))
            .collect();
        if shares.is_empty() {
            return Err(ApiError::text(StatusCode::NOT_FOUND, "no shares for this storage index"));
        }
        let now = self.clock.now();
        for share in &shares {
            self.accountant.add_or_renew(caller.id, share, renew, cancel, now).map_err(ApiError::accountant)?;
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
        let complete = self.backend.list_shares(&si).await.map_err(|e| ApiError::backend("list", e))?;
        for n in &complete {
            let share = ShareId::immutable(si, *n);
            self.accountant.add_or_renew(caller.id, &share, renew, cancel, now).map_err(ApiError::accountant)?;
        }
        let mut budget = self.available().await.saturating_sub(self.reserved.load(Ordering::SeqCst));
        if let Some(quota) = caller.attributes.quota {
            // Over quota looks like a full server to the client: the shares are not allocated.
            let used = self.accountant.usage(caller.id).map_err(ApiError::accountant)?;
            budget = budget.min(quota.saturating_sub(used));
        }
        let mut allocated = Vec::new();
        let mut requested = request.share_numbers.clone();
        requested.sort_unstable();
        requested.dedup();
        for number in requested {
            let Ok(n) = u16::try_from(number).map(ShareNumber) else {
                return Err(ApiError::text(StatusCode::BAD_REQUEST, format!("share number {number} is too large")));
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
            self.backend.begin(&si, n, request.allocated_size).await.map_err(|e| ApiError::backend("begin", e))?;
            // Lease, holder and the open upload in one transaction; nothing stays if it fails.
            let share = ShareId::immutable(si, n);
            if let Err(e) = self.accountant.allocate(caller.id, &share, request.allocated_size, renew, cancel, now) {
                let _ = self.backend.abort(&si, n).await;
                return Err(ApiError::accountant(e));
            }
            budget -= request.allocated_size;
            let upload = Upload {
                secret: upload_secret.to_vec(),
                size: request.allocated_size,
                written: RangeSet::default(),
                last_write: now,
            };
            self.uploads().insert((si, n), Arc::new(tokio::sync::Mutex::new(upload)));
            self.reserved.fetch_add(request.allocated_size, Ordering::SeqCst);
            allocated.push(number);
        }
        let have: Vec<u64> = complete.iter().map(|n| u64::from(n.0)).collect();
        Ok(cbor(StatusCode::OK, &wire::allocate_response(&have, &allocated)))
    }

    async fn write(&self, si: StorageIndex, n: ShareNumber, secret: &[u8], req: Req) -> Handled {
        let range =
            req.headers().get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range);
        let Some((start, end)) = range else {
            return Err(ApiError::empty(StatusCode::RANGE_NOT_SATISFIABLE));
        };
        let upload = self
            .uploads()
            .get(&(si, n))
            .cloned()
            .ok_or_else(|| ApiError::text(StatusCode::NOT_FOUND, "no such upload"))?;
        let mut up = upload.lock().await;
        if !auth::same(&up.secret, secret) {
            return Err(ApiError::text(StatusCode::UNAUTHORIZED, "wrong upload secret"));
        }
        if !self.uploads().get(&(si, n)).is_some_and(|u| Arc::ptr_eq(u, &upload)) {
            // Completed or aborted while this request waited for the lock.
            return Err(ApiError::text(StatusCode::NOT_FOUND, "no such upload"));
        }
        if end > up.size {
            return Err(ApiError::text(
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
                Err(_) => return Err(ApiError::text(StatusCode::REQUEST_TIMEOUT, "request body stalled")),
                Ok(None) => None,
                Ok(Some(Err(e))) => {
                    return Err(ApiError::text(StatusCode::BAD_REQUEST, format!("reading the body: {e}")));
                }
                Ok(Some(Ok(frame))) => frame.into_data().ok(),
            };
            let done = frame.is_none();
            if let Some(data) = frame {
                if offset + (pending.len() + data.len()) as u64 > end {
                    return Err(ApiError::text(StatusCode::BAD_REQUEST, "body is longer than its Content-Range"));
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
            return Err(ApiError::text(StatusCode::BAD_REQUEST, "body is shorter than its Content-Range"));
        }
        up.last_write = self.clock.now();
        let missing = up.written.missing(up.size);
        if !missing.is_empty() {
            return Ok(cbor(StatusCode::OK, &wire::required(&missing)));
        }
        self.backend.finish(&si, n).await.map_err(|e| ApiError::backend("finish", e))?;
        self.uploads().remove(&(si, n));
        if let Err(e) = self.accountant.upload_finished(&ShareId::immutable(si, n)) {
            // The share is complete; the next start-up sees it so and clears the record.
            tracing::warn!(si = %si, shnum = n.0, "recording a finished upload: {e}");
        }
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
    ) -> Result<(), ApiError> {
        let end = offset + piece.len() as u64;
        for (a, b) in up.written.overlaps(offset, end) {
            let existing =
                self.backend.read_incoming(si, n, a, b - a).await.map_err(|e| ApiError::backend("read", e))?;
            if existing != piece[(a - offset) as usize..(b - offset) as usize] {
                return Err(ApiError::empty(StatusCode::CONFLICT));
            }
        }
        self.backend.write(si, n, offset, piece).await.map_err(|e| ApiError::backend("write", e))?;
        up.written.insert(offset, end);
        Ok(())
    }

    async fn abort(&self, si: StorageIndex, n: ShareNumber, secret: &[u8]) -> Handled {
        let upload = self.uploads().get(&(si, n)).cloned();
        let Some(upload) = upload else {
            let complete = self.backend.size(&si, n).await.map_err(|e| ApiError::backend("size", e))?.is_some();
            return Err(if complete {
                ApiError::text(StatusCode::METHOD_NOT_ALLOWED, "the share is complete")
            } else {
                ApiError::text(StatusCode::NOT_FOUND, "no such upload")
            });
        };
        let up = upload.lock().await;
        if !auth::same(&up.secret, secret) {
            return Err(ApiError::text(StatusCode::UNAUTHORIZED, "wrong upload secret"));
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
    ) -> Result<(), ApiError> {
        let removed = {
            let mut uploads = self.uploads();
            match uploads.get(&(*si, n)) {
                Some(u) if Arc::ptr_eq(u, upload) => uploads.remove(&(*si, n)).is_some(),
                _ => false,
            }
        };
        if removed {
            self.reserved.fetch_sub(size, Ordering::SeqCst);
            self.close_upload(&ShareId::immutable(*si, n)).await.map_err(|e| match e {
                CloseError::Backend(op, e) => ApiError::backend(op, e),
                CloseError::Accountant(e) => ApiError::accountant(e),
            })?;
        }
        Ok(())
    }

    /// End an upload that will not be written to any more: a share that did finish (a request
    /// dropped after the backend's `finish`, or a process that died right after it) keeps its
    /// lease and holder; an unfinished one is discarded and forgotten. True if it was discarded.
    async fn close_upload(&self, share: &ShareId) -> Result<bool, CloseError> {
        let (si, n) = (&share.si, share.shnum);
        if self.backend.size(si, n).await.map_err(|e| CloseError::Backend("size", e))?.is_some() {
            self.accountant.upload_finished(share).map_err(CloseError::Accountant)?;
            return Ok(false);
        }
        self.backend.abort(si, n).await.map_err(|e| CloseError::Backend("abort", e))?;
        self.accountant.forget_share(share).map_err(CloseError::Accountant)?;
        Ok(true)
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

    async fn corrupt(&self, kind: &str, si: StorageIndex, n: ShareNumber, exists: bool, req: Req) -> Handled {
        if !exists {
            return Err(ApiError::text(StatusCode::NOT_FOUND, "no such share"));
        }
        let body = cbor_body(req, 32_768).await?;
        let reason = wire::corrupt_request(&body).map_err(|e| ApiError::text(StatusCode::BAD_REQUEST, e.0))?;
        tracing::warn!(kind, si = %si, shnum = n.0, reason, "client reports a corrupt share");
        self.accountant.record_corruption(self.clock.now(), kind, &si, n, &reason).map_err(ApiError::accountant)?;
        Ok(empty(StatusCode::OK))
    }

    async fn read(&self, si: StorageIndex, n: ShareNumber, mutable: bool, headers: &HeaderMap) -> Handled {
        let size = if mutable { self.backend.mutable_size(&si, n).await } else { self.backend.size(&si, n).await };
        let size = size
            .map_err(|e| ApiError::backend("size", e))?
            .ok_or_else(|| ApiError::text(StatusCode::NOT_FOUND, "no such share"))?;
        let (status, start, end) = match headers.get(http::header::RANGE) {
            None => (StatusCode::OK, 0, size),
            Some(range) => {
                let (a, b) = range
                    .to_str()
                    .ok()
                    .and_then(parse_range)
                    .ok_or_else(|| ApiError::empty(StatusCode::RANGE_NOT_SATISFIABLE))?;
                let end = b.saturating_add(1).min(size);
                if a >= end {
                    return Ok(respond(StatusCode::NO_CONTENT, Some("application/octet-stream"), Bytes::new()));
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
            .map_err(|e| ApiError::backend("read", e))?;
        if (first.len() as u64) < first_len {
            return Err(ApiError::text(StatusCode::SERVICE_UNAVAILABLE, "share shorter than its size"));
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

//! [`StorageService`]: one request from arrival to answer. The checks run in the reference's
//! order (route, `Authorization`, secrets, then each endpoint's own steps); the account behind
//! the request is resolved here; then the endpoint runs: `version`, lease renewal and corruption
//! advisories here, uploads in `uploads.rs`, reads in `reads.rs`, read-test-write in
//! `mutable.rs`. Start-up settles what a previous process left half done.
//!
//! Every failure is an [`ApiError`] (a 4xx, or a 5xx only when the backend or the database
//! failed); a request can never panic the server. What a handler left of its request body is
//! drained before the answer goes out, or the answer says `Connection: close` (`body.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use marsh_accountant::{Accountant, AccountantError, Caller};
use marsh_core::{Backend, ShareId, StorageIndex};

use crate::auth::{self, SecretKind};
use crate::body::{TrackedBody, counted};
use crate::budget::BodyBudget;
use crate::clock::Clock;
use crate::error::ApiError;
use crate::limits::{Limits, MAX_ADVISORY_REASON};
use crate::metrics::{self, Metrics};
use crate::mutable::{PendingSlots, RtwSecrets, SlotLocks};
use crate::offload;
use crate::response::{Handled, ResponseBody, cbor, empty, respond};
use crate::routes::{Route, cbor_body, check_accept, route};
use crate::uploads::{CloseError, UploadTable};
use crate::wire;

/// The largest mutable share, as in Tahoe.
pub const MAX_MUTABLE_SHARE_SIZE: u64 = 69_105 * 1_000_000_000_000;
/// Uploads with no write for this long are aborted.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The largest read-test-write body: a whole SDMF file or a batch of MDMF segments fits many
/// times over; the reference allows 2^48 bytes, which would let one request exhaust memory.
pub const MAX_READ_TEST_WRITE_BODY: usize = 128 << 20;

/// Settings of the storage service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The anonymous swissnum.
    pub swissnum: String,
    /// Bytes kept free on the backend's store.
    pub reserved_space: u64,
    /// What `application-version` says.
    pub application_version: String,
    /// What a request, connection, peer or account may take.
    pub limits: Limits,
    /// Read-only and the cap on bytes held, as the node starts; [`StorageService::set_capacity`]
    /// changes them while it serves.
    pub capacity: Capacity,
    /// Keep new mutable shares' write enablers raw as well as hashed
    /// (`storage.keep-write-enablers`), as a Tahoe node keeps them, so `marsh export-tahoe` can
    /// hand the shares back writable.
    pub keep_write_enablers: bool,
}

/// What the node takes in: settings an operator changes while it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// No new immutable shares and no mutable writes; reads, lease renewals and corruption
    /// advisories still work, and `available-space` is 0 (as the reference's `readonly`).
    pub readonly: bool,
    /// The most bytes of shares the node holds; what is left under it bounds `available-space`.
    pub max_bytes: Option<u64>,
}

impl ServiceConfig {
    /// A service config with the default [`Limits`].
    pub fn new(swissnum: &str, reserved_space: u64, application_version: &str) -> Self {
        ServiceConfig {
            swissnum: swissnum.to_owned(),
            reserved_space,
            application_version: application_version.to_owned(),
            limits: Limits::default(),
            capacity: Capacity::default(),
            keep_write_enablers: false,
        }
    }
}

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

/// A request as the handlers see it.
pub(crate) type Req = Request<TrackedBody>;

/// The storage service behind the HTTP server.
pub struct StorageService {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) accountant: Arc<Accountant>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: ServiceConfig,
    authorization: Vec<u8>,
    pub(crate) uploads: UploadTable,
    pub(crate) slot_locks: SlotLocks,
    /// What request bodies held whole may take at once.
    pub(crate) body_budget: BodyBudget,
    /// Slots whose last read-test-write may not be applied in full yet.
    pub(crate) pending: Arc<PendingSlots>,
    capacity: Mutex<Capacity>,
    pub(crate) metrics: Arc<Metrics>,
    available: Mutex<Option<(Instant, u64)>>,
    /// The encoded `version` answer for the free space it states: clients poll it every
    /// second, and it changes only when that figure does.
    version_body: Mutex<Option<(u64, Bytes)>>,
}

impl std::fmt::Debug for StorageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageService").finish_non_exhaustive()
    }
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
            authorization,
            uploads: UploadTable::default(),
            slot_locks: SlotLocks::default(),
            body_budget: BodyBudget::new(config.limits.body_memory),
            pending: Arc::new(PendingSlots::new(pending)),
            capacity: Mutex::new(config.capacity),
            metrics: Arc::default(),
            available: Mutex::new(None),
            version_body: Mutex::new(None),
            config,
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

    /// The locks by storage index its writes and lease changes take, for lease expiry to take
    /// too ([`crate::gc::collect`]).
    pub fn slot_locks(&self) -> SlotLocks {
        self.slot_locks.clone()
    }

    /// What the service has counted since it started.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Immutable uploads open now, and the bytes reserved for them (Tahoe's `allocated`).
    pub fn open_uploads(&self) -> (usize, u64) {
        self.uploads.open()
    }

    /// The account a request speaks for: the anonymous account's swissnum is the node's, every
    /// other one is looked up, so account changes apply to the very next request.
    fn caller(&self, headers: &HeaderMap, reads_only: bool) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::MissingAuthorization);
        };
        if value.to_str().is_err() {
            return Err(ApiError::AuthorizationNotText);
        }
        // The anonymous account is the node's own swissnum; a named one is looked up. A cache
        // hit, or one checked against SQLite's change counter while the connection is free,
        // answers in place; anything that may wait on SQLite runs off this worker (handing a
        // worker off costs thread switches, which is most of what an idle client's poll costs).
        let named = (!auth::same(value.as_bytes(), &self.authorization)).then_some(value.as_bytes());
        let found = match self.accountant.quick(named) {
            Some(answer) => answer,
            None => offload::sqlite(|| match named {
                Some(authorization) => self.accountant.caller(authorization),
                None => self.accountant.anonymous().map(Some),
            }),
        };
        // While the accounting database cannot be reached, a request that changes nothing and
        // needs nothing else of it is served as the caller was last known (a revocation made
        // during the outage takes effect when it ends); anything else is answered 503.
        let found = match found {
            Err(e) if reads_only && e.is_unavailable() => match self.accountant.last_known(named) {
                Some(caller) => Ok(Some(caller)),
                None => Err(e),
            },
            other => other,
        }?;
        let caller = found.ok_or(ApiError::WrongAuthorization)?;
        if caller.revoked {
            return Err(ApiError::Revoked { account: caller.name });
        }
        Ok(caller)
    }

    /// Handle one request: never panics, never fails.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let start = Instant::now();
        // Copied only when request logging is on (`marsh run --verbose`, or `MARSH_LOG`).
        let logged = tracing::enabled!(target: "marsh::request", tracing::Level::INFO)
            .then(|| (req.method().clone(), req.uri().path().to_owned()));
        // Routed once: the route is both what the request is counted under and what it does.
        let routed = route(req.method(), req.uri().path());
        let class = metrics::classify(routed.as_ref().ok());
        let (parts, body) = req.into_parts();
        let (body, leftover) = TrackedBody::new(body, self.metrics.clone());
        let share_data = matches!(routed, Ok(Route::ImmutableRead(..) | Route::MutableRead(..)));
        let mut response = match self.route(routed, Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => e.into_response(share_data),
        };
        // A body the handler did not read whole is read and dropped here (the reference reads
        // every body before it answers), so the connection serves the client's next request;
        // one too large or too slow for that closes the connection instead.
        if !leftover.drain().await {
            response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        let (status, took) = (response.status(), start.elapsed());
        self.metrics.request(class, status.as_u16(), took);
        if status == StatusCode::CREATED && metrics::ENDPOINTS[class.0] == "write" {
            // The write that completed an immutable share: the reference's `close`.
            self.metrics.tahoe_op("close", took);
        }
        let response = response.map(|b| counted(b, self.metrics.clone()));
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

    async fn route(&self, routed: Result<Route, ApiError>, req: Req) -> Handled {
        let route = routed?;
        let reads_only = matches!(route, Route::Version | Route::ImmutableRead(..) | Route::ImmutableList(_));
        let caller = self.caller(req.headers(), reads_only)?;
        if matches!(route, Route::Allocate(_) | Route::Write(..) | Route::ReadTestWrite(_)) && !caller.attributes.write
        {
            return Err(ApiError::MayNotWrite { account: caller.name });
        }
        let required: &[SecretKind] = match route {
            Route::Lease(_) => &[SecretKind::LeaseRenew, SecretKind::LeaseCancel],
            Route::Allocate(_) => &[SecretKind::LeaseRenew, SecretKind::LeaseCancel, SecretKind::Upload],
            Route::Write(..) | Route::Abort(..) => &[SecretKind::Upload],
            Route::ReadTestWrite(_) => &[SecretKind::WriteEnabler, SecretKind::LeaseRenew, SecretKind::LeaseCancel],
            _ => &[],
        };
        let secrets = auth::secrets(req.headers(), required).map_err(ApiError::Secret)?;
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
                let (body, _permit) = cbor_body(req, 8192, &self.config.limits, &self.body_budget).await?;
                let request = wire::allocate_request(&body)?;
                self.allocate(&caller, si, request, &renew, &cancel, &upload).await
            }
            Route::Write(si, n) => {
                check_accept(req.headers())?;
                self.write(si, n, &secret(SecretKind::Upload), req).await
            }
            Route::Abort(si, n) => self.abort(si, n, &secret(SecretKind::Upload)).await,
            Route::ImmutableCorrupt(si, n) => {
                let exists = self.backend.size(&si, n).await.map_err(ApiError::backend("size"))?.is_some();
                self.corrupt(ShareId::immutable(si, n), exists, req).await
            }
            Route::MutableCorrupt(si, n) => {
                let exists = self.backend.mutable_size(&si, n).await.map_err(ApiError::backend("size"))?.is_some();
                self.corrupt(ShareId::mutable(si, n), exists, req).await
            }
            Route::ImmutableList(si) => {
                check_accept(req.headers())?;
                let shares = self.backend.list_shares(&si).await.map_err(ApiError::backend("list"))?;
                Ok(cbor(StatusCode::OK, &wire::share_set(shares.into_iter().map(|n| u64::from(n.0)))))
            }
            Route::MutableList(si) => {
                check_accept(req.headers())?;
                self.settle_for_read(&si).await?;
                let shares = self.backend.mutable_list(&si).await.map_err(ApiError::backend("list"))?;
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
                // A stranger's writes to a slot that exists are refused before their body is read.
                self.precheck_write_enabler(&si, &we).await?;
                let (body, permit) =
                    cbor_body(req, MAX_READ_TEST_WRITE_BODY, &self.config.limits, &self.body_budget).await?;
                let request = wire::read_test_write_request(&body)?;
                drop(body);
                let secrets = RtwSecrets { enabler: &we, renew: &renew, cancel: &cancel };
                self.read_test_write(&caller, si, request, secrets, permit).await
            }
        }
    }

    /// Read-only and the cap on bytes held, as they are now.
    pub fn capacity(&self) -> Capacity {
        *self.capacity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change read-only and the cap while serving; the next request sees them.
    pub fn set_capacity(&self, capacity: Capacity) {
        *self.capacity.lock().unwrap_or_else(|p| p.into_inner()) = capacity;
        *self.available.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Free space as clients should see it, cached for a few seconds: clients poll `version`
    /// every second and a backend may be slow to answer. 0 when read-only; never more than
    /// what `max_bytes` leaves beside the shares held.
    pub async fn available(&self) -> u64 {
        let capacity = self.capacity();
        if capacity.readonly {
            return 0;
        }
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
        let mut v = raw.saturating_sub(self.config.reserved_space);
        if let Some(max) = capacity.max_bytes {
            let held = offload::sqlite(|| self.accountant.stored_bytes()).unwrap_or_else(|e| {
                tracing::warn!("summing the bytes held failed: {e}");
                u64::MAX
            });
            v = v.min(max.saturating_sub(held));
        }
        *self.available.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), v));
        v
    }

    async fn version(&self) -> Handled {
        let available = self.available().await;
        let mut cached = self.version_body.lock().unwrap_or_else(|p| p.into_inner());
        let body = match &*cached {
            Some((stated, body)) if *stated == available => body.clone(),
            _ => {
                let max_immutable = self.config.limits.max_share_size;
                let value =
                    wire::version(available, max_immutable, MAX_MUTABLE_SHARE_SIZE, &self.config.application_version);
                let body = Bytes::from(wire::encode(&value));
                *cached = Some((available, body.clone()));
                body
            }
        };
        Ok(respond(StatusCode::OK, Some("application/cbor"), body))
    }

    pub(crate) async fn renew(&self, caller: &Caller, si: StorageIndex, renew: &[u8], cancel: &[u8]) -> Handled {
        // Lease expiry decides on these shares' leases under the same lock.
        let _index = self.slot(si).await?;
        let immutable = self.backend.list_shares(&si).await.map_err(ApiError::backend("list"))?;
        let mutable = self.backend.mutable_list(&si).await.map_err(ApiError::backend("list"))?;
        let shares: Vec<ShareId> = (immutable.into_iter().map(|n| ShareId::immutable(si, n)))
            .chain(mutable.into_iter().map(|n| ShareId::mutable(si, n)))
            .collect();
        if shares.is_empty() {
            return Err(ApiError::NoShares);
        }
        let now = self.clock.now();
        for share in &shares {
            if !self.lease(caller, share, renew, cancel, now)? {
                return Err(ApiError::LeaseLimit { share: *share, limit: self.config.limits.leases_per_share });
            }
        }
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// Add or renew `caller`'s lease on `share`; false (nothing done) when it would be a new
    /// lease record past the limit per share. Renewing an existing lease always goes through.
    pub(crate) fn lease(
        &self,
        caller: &Caller,
        share: &ShareId,
        renew: &[u8],
        cancel: &[u8],
        now: u64,
    ) -> Result<bool, ApiError> {
        offload::sqlite_short(&self.accountant, || {
            if !self.accountant.may_add_lease(share, renew, self.config.limits.leases_per_share)? {
                return Ok(false);
            }
            self.accountant.add_or_renew(caller.id, share, renew, cancel, now)?;
            Ok(true)
        })
        .map_err(ApiError::Accountant)
    }

    async fn corrupt(&self, share: ShareId, exists: bool, req: Req) -> Handled {
        if !exists {
            return Err(ApiError::NoSuchShare);
        }
        let (body, _permit) = cbor_body(req, 32_768, &self.config.limits, &self.body_budget).await?;
        let reason = wire::corrupt_request(&body)?;
        let mut cut = reason.len().min(MAX_ADVISORY_REASON);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let reason = &reason[..cut];
        let limits = &self.config.limits;
        let (per_share, total) = (limits.advisories_per_share, limits.advisories);
        let now = self.clock.now();
        let kept = offload::sqlite(|| self.accountant.record_corruption(now, &share, reason, per_share, total))
            .map_err(ApiError::Accountant)?;
        if kept {
            tracing::warn!(%share, reason, "client reports a corrupt share");
        } else {
            tracing::debug!(%share, "a corruption advisory past the limits was not kept");
        }
        Ok(empty(StatusCode::OK))
    }
}

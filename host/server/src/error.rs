//! [`ApiError`]: every way a request can fail, one variant per failure kind, and the one place
//! ([`ApiError::status`], [`ApiError::reason`], [`ApiError::into_response`]) where a failure
//! becomes a status code and a body, and where the node's own faults are logged.
//!
//! Error shapes follow the 1.20 reference as its client reads them: on the share-data
//! endpoints (`GET .../immutable|mutable/SI/N`) an error is the status with
//! `Content-Type: application/octet-stream` and an empty body, because the client checks the
//! content type of those answers before their status; a few answers have no body at all (an
//! unknown path, a wrong method, a bad range, a conflicting write); everything else is a short
//! `text/plain` reason, which the client reports as the error text.

use http::{Response, StatusCode};
use marsh_accountant::AccountantError;
use marsh_core::{BackendError, ShareId};

use crate::auth::AuthError;
use crate::response::{ResponseBody, respond};
use crate::wire::SchemaError;

/// Why a request failed, as the client will be told.
#[derive(Debug)]
pub(crate) enum ApiError {
    // Routing and the request's shape.
    /// No endpoint at this path (404, no body).
    UnknownPath,
    /// The endpoint exists, with another method (405, no body).
    MethodNotAllowed,
    /// The client accepts no CBOR (406).
    NotAcceptable,
    /// A body that is not CBOR (415).
    UnsupportedMediaType,
    /// A body past its endpoint's limit (413).
    BodyTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The body could not be read (400).
    BodyUnreadable(String),
    /// The body arrived slower than the least rate (408).
    BodyTooSlow {
        /// `http.min-rate`.
        min_rate: u64,
    },
    /// The body is not what the endpoint's schema says (400).
    BadBody(SchemaError),
    /// The node holds as many bodies as `http.body-memory` allows, and none came free in time
    /// (503).
    BodiesFull,

    // Who asks.
    /// No `Authorization` header (401).
    MissingAuthorization,
    /// An `Authorization` header that is not text (400).
    AuthorizationNotText,
    /// An `Authorization` header no account has (401).
    WrongAuthorization,
    /// The account was revoked (401).
    Revoked {
        /// Its name.
        account: String,
    },
    /// The account may not write (403).
    MayNotWrite {
        /// Its name.
        account: String,
    },
    /// A missing, repeated or malformed `X-Tahoe-Authorization` secret.
    Secret(AuthError),

    // Immutable uploads.
    /// No upload of this share is in progress (404).
    NoSuchUpload,
    /// Another upload secret than the one the upload was allocated with (401).
    WrongUploadSecret,
    /// A `Content-Range` that does not parse (416, no body).
    BadContentRange,
    /// A write ending past the allocated size (400).
    PastAllocation {
        /// Where the write ends.
        end: u64,
        /// The allocated size.
        size: u64,
    },
    /// More body than its `Content-Range` (400).
    BodyLongerThanRange,
    /// Less body than its `Content-Range` (400).
    BodyShorterThanRange,
    /// Bytes already written, rewritten with different ones (409, no body).
    ConflictingWrite,
    /// Aborting a share that is complete (405).
    ShareComplete,
    /// A share number past 65535 (400).
    ShareNumberTooLarge {
        /// The number asked for.
        number: u64,
    },

    // Shares and leases.
    /// No such share (404).
    NoSuchShare,
    /// No share of either kind at this storage index (404).
    NoShares,
    /// A new lease record past `storage.leases-per-share` (409).
    LeaseLimit {
        /// The share.
        share: ShareId,
        /// The limit.
        limit: usize,
    },
    /// A `Range` that does not parse (416, no body).
    BadRange,

    // Mutable writes.
    /// The node is read-only (403).
    ReadOnly,
    /// A write enabler other than the slot's (401).
    WrongWriteEnabler,
    /// A slot whose write enabler the node does not know (401; logged).
    UnknownWriteEnabler,
    /// A read vector past `storage.rtw-read-bytes` (413).
    ReadVectorTooLarge {
        /// Bytes it asks for.
        asked: u64,
        /// The limit.
        limit: u64,
    },
    /// A write past the largest mutable share (413).
    PastLargestMutable,
    /// A write that would leave too much unwritten past a share's end (400).
    LeavesHole {
        /// The share number.
        share: u64,
        /// Bytes it would leave unwritten.
        hole: u64,
        /// The most it may.
        limit: u64,
    },
    /// More bytes than the node has (507).
    NoSpace {
        /// Bytes the write needs.
        needs: u64,
        /// Bytes available.
        available: u64,
    },
    /// More bytes than an account's quota leaves (507).
    OverQuota {
        /// The account.
        account: String,
        /// Bytes it holds.
        used: u64,
        /// Its quota.
        quota: u64,
        /// Bytes the write adds.
        adds: u64,
    },
    /// The storage index's lock did not come within `SLOT_WAIT` (503).
    StorageIndexBusy,
    /// A slot's earlier write cannot be read back (503; logged where found).
    EarlierWriteUnreadable,
    /// A slot's earlier write is not complete yet (503).
    EarlierWriteIncomplete,
    /// This write is recorded and will be completed (503).
    WriteRecorded,
    /// The store holds an older version of this share than this node wrote (503; logged where
    /// found).
    RolledBack,

    // The node's own faults.
    /// The backend failed in `op`: the client's fault (404, 400), a full store (507), or the
    /// node's (503, logged).
    Backend {
        /// The operation.
        op: &'static str,
        /// What it said.
        error: BackendError,
    },
    /// The backend answered what a sound one never does (503, logged).
    BackendMisbehaved {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// The accounting database failed (500, logged).
    Accountant(AccountantError),
    /// A task ended without an answer (500, logged).
    TaskFailed {
        /// What the task did.
        what: &'static str,
        /// Why it ended.
        error: String,
    },
}

/// How an error answer is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `text/plain` with the reason.
    Text,
    /// No body, no content type.
    Empty,
}

impl From<AccountantError> for ApiError {
    fn from(e: AccountantError) -> Self {
        match e {
            // Found in the write's own transaction: the client's error (507), not the node's.
            AccountantError::OverQuota { account, used, quota, adds } => {
                ApiError::OverQuota { account, used, quota, adds }
            }
            e => ApiError::Accountant(e),
        }
    }
}

impl From<SchemaError> for ApiError {
    fn from(e: SchemaError) -> Self {
        ApiError::BadBody(e)
    }
}

impl ApiError {
    /// A backend failure during `op`.
    pub(crate) fn backend(op: &'static str) -> impl Fn(BackendError) -> ApiError + Copy {
        move |error| ApiError::Backend { op, error }
    }

    /// The status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            UnknownPath | NoSuchUpload | NoSuchShare | NoShares => StatusCode::NOT_FOUND,
            MethodNotAllowed | ShareComplete => StatusCode::METHOD_NOT_ALLOWED,
            NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTooLarge { .. } | ReadVectorTooLarge { .. } | PastLargestMutable => StatusCode::PAYLOAD_TOO_LARGE,
            BodyUnreadable(_)
            | BadBody(_)
            | AuthorizationNotText
            | PastAllocation { .. }
            | BodyLongerThanRange
            | BodyShorterThanRange
            | ShareNumberTooLarge { .. }
            | LeavesHole { .. } => StatusCode::BAD_REQUEST,
            BodyTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            MissingAuthorization
            | WrongAuthorization
            | Revoked { .. }
            | WrongUploadSecret
            | WrongWriteEnabler
            | UnknownWriteEnabler => StatusCode::UNAUTHORIZED,
            Secret(AuthError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            Secret(AuthError::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            MayNotWrite { .. } | ReadOnly => StatusCode::FORBIDDEN,
            BadContentRange | BadRange => StatusCode::RANGE_NOT_SATISFIABLE,
            ConflictingWrite | LeaseLimit { .. } => StatusCode::CONFLICT,
            NoSpace { .. } | OverQuota { .. } => StatusCode::INSUFFICIENT_STORAGE,
            BodiesFull
            | StorageIndexBusy
            | EarlierWriteUnreadable
            | EarlierWriteIncomplete
            | WriteRecorded
            | RolledBack
            | BackendMisbehaved { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Backend { error, .. } => match error {
                BackendError::NotFound => StatusCode::NOT_FOUND,
                BackendError::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
                BackendError::OutOfRange(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            Accountant(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Accountant(_) | TaskFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The text the client is told (never a secret, never the node's internals).
    pub(crate) fn reason(&self) -> String {
        use ApiError::*;
        match self {
            UnknownPath | MethodNotAllowed | BadContentRange | BadRange | ConflictingWrite => String::new(),
            NotAcceptable => "responses are application/cbor".into(),
            UnsupportedMediaType => "request bodies are application/cbor".into(),
            BodyTooLarge { limit } => format!("body larger than {limit} bytes"),
            BodyUnreadable(e) => format!("reading the body: {e}"),
            BodyTooSlow { min_rate } => format!("request body slower than {min_rate} bytes a second"),
            BadBody(e) => e.0.clone(),
            BodiesFull => "the server holds as many request bodies as it may (http.body-memory); try again".into(),
            MissingAuthorization => "missing Authorization header".into(),
            AuthorizationNotText => "Authorization header is not text".into(),
            WrongAuthorization => "wrong Authorization header".into(),
            Revoked { account } => format!("account `{account}` was revoked"),
            MayNotWrite { account } => format!("account `{account}` may not write"),
            Secret(AuthError::BadRequest(m) | AuthError::Unauthorized(m)) => m.clone(),
            NoSuchUpload => "no such upload".into(),
            WrongUploadSecret => "wrong upload secret".into(),
            PastAllocation { end, size } => format!("range ends at {end}, past the allocated size {size}"),
            BodyLongerThanRange => "body is longer than its Content-Range".into(),
            BodyShorterThanRange => "body is shorter than its Content-Range".into(),
            ShareComplete => "the share is complete".into(),
            ShareNumberTooLarge { number } => format!("share number {number} is too large"),
            NoSuchShare => "no such share".into(),
            NoShares => "no shares for this storage index".into(),
            LeaseLimit { share, limit } => {
                format!("share {share} carries {limit} lease records, the most a share may; renew an existing one")
            }
            ReadOnly => "this node is read-only (storage.readonly)".into(),
            WrongWriteEnabler => "wrong write enabler".into(),
            UnknownWriteEnabler => "write enabler unknown to this server".into(),
            ReadVectorTooLarge { asked, limit } => {
                format!("the read vector asks for {asked} bytes; a read-test-write may read at most {limit}")
            }
            PastLargestMutable => "write past the largest mutable share size".into(),
            LeavesHole { share, hole, limit } => format!(
                "share {share}: this write would leave {hole} bytes past the share's end unwritten; at most {limit} may be"
            ),
            NoSpace { needs, available } => format!("this write needs {needs} more bytes; {available} are available"),
            OverQuota { account, used, quota, adds } => format!(
                "account `{account}` would go over its quota ({used} of {quota} bytes used; this write adds {adds})"
            ),
            StorageIndexBusy => "this storage index is busy; try again".into(),
            EarlierWriteUnreadable => "an earlier write to this slot cannot be completed".into(),
            EarlierWriteIncomplete => "an earlier write to this slot is not complete yet".into(),
            WriteRecorded => "the write is recorded and not yet complete; it will be completed".into(),
            RolledBack => "the store holds an older version of this share than this server wrote".into(),
            Backend { op, error } => match error {
                BackendError::NotFound => "no such share".into(),
                BackendError::NoSpace => "out of space".into(),
                BackendError::OutOfRange(m) => m.clone(),
                _ => format!("storage backend failed in {op}"),
            },
            BackendMisbehaved { op, .. } => format!("storage backend failed in {op}"),
            Accountant(e) if e.is_unavailable() => "accounting database unavailable; try again".into(),
            Accountant(_) => "accounting database failed".into(),
            TaskFailed { what, .. } => format!("{what} task failed"),
        }
    }

    fn shape(&self) -> Shape {
        match self {
            ApiError::UnknownPath
            | ApiError::MethodNotAllowed
            | ApiError::BadContentRange
            | ApiError::BadRange
            | ApiError::ConflictingWrite => Shape::Empty,
            _ => Shape::Text,
        }
    }

    /// The node's own faults are logged here, once, as they are answered.
    fn log(&self) {
        match self {
            ApiError::Backend { op, error } if self.status() == StatusCode::SERVICE_UNAVAILABLE => {
                tracing::error!(op, "backend failed: {error}");
            }
            ApiError::BackendMisbehaved { op, what } => tracing::error!(op, "backend misbehaved: {what}"),
            ApiError::Accountant(e) => tracing::error!("{e}"),
            ApiError::TaskFailed { what, error } => tracing::error!("{what} task failed: {error}"),
            _ => {}
        }
    }

    /// The answer; on a share-data endpoint (`share_data`) spelled as the reference spells it
    /// there (`application/octet-stream`, no body).
    pub(crate) fn into_response(self, share_data: bool) -> Response<ResponseBody> {
        self.log();
        let status = self.status();
        match (share_data, self.shape()) {
            (true, _) => respond(status, Some("application/octet-stream"), bytes::Bytes::new()),
            (false, Shape::Empty) => respond(status, None, bytes::Bytes::new()),
            (false, Shape::Text) => respond(status, Some("text/plain; charset=utf-8"), self.reason()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body;

    #[test]
    fn each_shape_has_its_content_type_and_body() {
        let r = ApiError::BodyTooSlow { min_rate: 5 }.into_response(false);
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        let r = ApiError::NoSuchShare.into_response(true);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(r.body().size_hint().exact(), Some(0), "the reference sends no body");
        let r = ApiError::MethodNotAllowed.into_response(false);
        assert!(r.headers().get("content-type").is_none());
        let e = ApiError::backend("read")(BackendError::Io("disk".into()));
        assert_eq!(
            (e.status(), e.reason().as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "storage backend failed in read")
        );
        assert_eq!(ApiError::backend("read")(BackendError::NotFound).status(), StatusCode::NOT_FOUND);
    }
}

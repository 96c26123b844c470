//! Responses: the body type, the few shapes of a successful answer, and [`ApiError`], the one
//! error type every handler returns, mapped to status, content type and body in one place.
//!
//! Error shapes follow the 1.20 reference as its client reads them: on the share-data
//! endpoints (`GET .../immutable|mutable/SI/N`) an error is the status with
//! `Content-Type: application/octet-stream` and an empty body, because the client checks the
//! content type of those answers before their status; elsewhere a short `text/plain` reason,
//! which the client reports as the error text.

use bytes::Bytes;
use ciborium::value::Value;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use marsh_accountant::AccountantError;
use marsh_core::BackendError;

use crate::auth::AuthError;
use crate::wire;

/// The response body type: whole for small answers, streamed for share data.
pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The outcome of a handler.
pub(crate) type Handled = Result<Response<ResponseBody>, ApiError>;

/// How an error answer is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `text/plain` with the reason.
    Text,
    /// No body, no content type.
    Empty,
    /// `application/octet-stream`, empty: the share-data endpoints' errors.
    Octet,
}

/// Why a request failed, as the client will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    status: StatusCode,
    reason: String,
    shape: Shape,
}

impl ApiError {
    /// `status` with a text reason.
    pub(crate) fn text(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError { status, reason: reason.into(), shape: Shape::Text }
    }

    /// `status` with no body.
    pub(crate) fn empty(status: StatusCode) -> Self {
        ApiError { status, reason: String::new(), shape: Shape::Empty }
    }

    /// 503 with a reason: the node cannot do it now.
    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        ApiError::text(StatusCode::SERVICE_UNAVAILABLE, reason)
    }

    /// The same status, spelled as the share-data endpoints answer errors.
    pub(crate) fn for_share_data(self) -> Self {
        ApiError { shape: Shape::Octet, ..self }
    }

    /// The status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// A failed authorization or secret check.
    pub(crate) fn auth(e: AuthError) -> Self {
        match e {
            AuthError::BadRequest(m) => ApiError::text(StatusCode::BAD_REQUEST, m),
            AuthError::Unauthorized(m) => ApiError::text(StatusCode::UNAUTHORIZED, m),
        }
    }

    /// A backend failure during `op`: the client's fault (404, 400), a full store (507), or
    /// the node's (503, logged).
    pub(crate) fn backend(op: &str, e: BackendError) -> Self {
        match e {
            BackendError::NotFound => ApiError::text(StatusCode::NOT_FOUND, "no such share"),
            BackendError::NoSpace => ApiError::text(StatusCode::INSUFFICIENT_STORAGE, "out of space"),
            BackendError::OutOfRange(m) => ApiError::text(StatusCode::BAD_REQUEST, m),
            other => {
                tracing::error!(op, "backend failed: {other}");
                ApiError::unavailable(format!("storage backend failed in {op}"))
            }
        }
    }

    /// The accounting database failed (logged; the client sees 500).
    pub(crate) fn accountant(e: AccountantError) -> Self {
        tracing::error!("{e}");
        ApiError::text(StatusCode::INTERNAL_SERVER_ERROR, "accounting database failed")
    }

    /// The answer.
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        match self.shape {
            Shape::Text => respond(self.status, Some("text/plain; charset=utf-8"), self.reason),
            Shape::Empty => respond(self.status, None, Bytes::new()),
            Shape::Octet => respond(self.status, Some("application/octet-stream"), Bytes::new()),
        }
    }
}

/// A whole answer.
pub(crate) fn respond(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let body = Full::new(body.into()).map_err(|never| match never {}).boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    }
    r
}

/// An answer with no body.
pub(crate) fn empty(status: StatusCode) -> Response<ResponseBody> {
    respond(status, None, Bytes::new())
}

/// A CBOR answer.
pub(crate) fn cbor(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    respond(status, Some("application/cbor"), wire::encode(value))
}

/// A response body fed by a bounded channel, so a large share streams with at most two
/// chunks in memory.
pub(crate) struct ChannelBody {
    pub(crate) rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_has_its_content_type_and_body() {
        let r = ApiError::text(StatusCode::BAD_REQUEST, "why").into_response();
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        let r = ApiError::text(StatusCode::NOT_FOUND, "no such share").for_share_data().into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(r.body().size_hint().exact(), Some(0), "the reference sends no body");
        let r = ApiError::empty(StatusCode::METHOD_NOT_ALLOWED).into_response();
        assert!(r.headers().get("content-type").is_none());
        let e = ApiError::backend("read", BackendError::Io("disk".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

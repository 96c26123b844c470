//! Responses: the body type and the few shapes of a successful answer. What a failure is
//! answered with is `error.rs`'s.

use crate::error::ApiError;
use crate::wire;
use bytes::Bytes;
use ciborium::value::Value;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;

/// The response body type: whole for small answers, streamed for share data.
pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The outcome of a handler.
pub(crate) type Handled = Result<Response<ResponseBody>, ApiError>;

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

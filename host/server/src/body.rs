//! Request bodies: [`TrackedBody`] knows whether a handler read its body to the end, and hands
//! back what it did not read, so the server can drain it before answering on a kept-alive
//! connection.
//!
//! Draining is bounded: at most [`DRAIN_LIMIT`] bytes within [`DRAIN_TIME`]. A body larger or
//! slower than that is not waited for; the answer then carries `Connection: close`, so the
//! client does not reuse a connection that still holds the rest of the request.
//!
//! Both directions count their bytes into the service's [`Metrics`]: request bodies as the
//! handler reads them, answers as they are sent ([`Counted`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use crate::metrics::Metrics;
use crate::response::ResponseBody;

/// The most bytes of an unread body drained before answering.
pub(crate) const DRAIN_LIMIT: u64 = 8 << 20;
/// The longest wait for an unread body to arrive.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(10);

/// What a handler left of its body: nothing (read whole), or the rest to drain.
#[derive(Debug, Clone, Default)]
pub(crate) struct Leftover(Arc<Mutex<Option<Incoming>>>);

/// A request body that notes when it has been read to its end and, if dropped before that,
/// leaves the rest in its [`Leftover`].
#[derive(Debug)]
pub(crate) struct TrackedBody {
    inner: Option<Incoming>,
    leftover: Leftover,
    metrics: Arc<Metrics>,
}

impl TrackedBody {
    /// Track `body`; the leftover is filled if the body is dropped unread.
    pub(crate) fn new(body: Incoming, metrics: Arc<Metrics>) -> (Self, Leftover) {
        let leftover = Leftover::default();
        let inner = if body.is_end_stream() { None } else { Some(body) };
        (TrackedBody { inner, leftover: leftover.clone(), metrics }, leftover)
    }
}

/// An answer whose body bytes are counted as they are sent.
pub(crate) fn counted(body: ResponseBody, metrics: Arc<Metrics>) -> ResponseBody {
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            metrics.bytes_out(data.len());
        }
        frame
    })
    .boxed_unsync()
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take() {
            *self.leftover.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(rest);
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return std::task::Poll::Ready(None) };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        match &polled {
            // Read to its end: nothing to hand back.
            std::task::Poll::Ready(None) => self.inner = None,
            // A broken body cannot be drained either; the connection is gone.
            std::task::Poll::Ready(Some(Err(_))) => self.inner = None,
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.metrics.bytes_in(data.len());
                }
            }
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_else(|| hyper::body::SizeHint::with_exact(0))
    }
}

impl Leftover {
    /// Read and drop what the handler left, within the bounds; true when the connection can
    /// serve another request (nothing was left, or all of it was drained).
    pub(crate) async fn drain(&self) -> bool {
        let rest = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut rest) = rest else { return true };
        if rest.size_hint().lower() > DRAIN_LIMIT {
            return false;
        }
        let read_all = async {
            let mut seen = 0u64;
            while let Some(frame) = rest.frame().await {
                let Ok(frame) = frame else { return false };
                if let Ok(data) = frame.into_data() {
                    seen += data.len() as u64;
                    if seen > DRAIN_LIMIT {
                        return false;
                    }
                }
            }
            true
        };
        tokio::time::timeout(DRAIN_TIME, read_all).await.unwrap_or(false)
    }
}

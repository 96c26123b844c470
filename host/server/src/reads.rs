//! Share reads: whole or ranged (`Range`, one range, as the reference accepts it), answered
//! with the first chunk read before the status goes out (a failing backend gets an error status,
//! not a truncated 2xx), the rest streamed through a one-chunk channel in chunks of at most
//! [`MAX_STREAM_CHUNK`]. A download holds at most three chunks whatever its size (one being
//! sent, one queued, one being read), and a reader slower than the least rate is cut off, so a
//! client that opens many downloads and never reads them holds a few MiB each, for a bounded
//! time.
//!
//! A ranged read of an immutable share that one chunk covers (every read the 1.20 client makes)
//! is one backend call: a read is short at the share's end and `NotFound` without a share, which
//! is all its size would have told. Other reads ask the size first. The price: a backend that
//! answers short in the middle of a share is served as a share that ends there (before, 503);
//! the client's hashes catch it either way.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use marsh_core::{Backend, BackendError, ShareNumber, StorageIndex};

use crate::error::ApiError;
use crate::limits::MinRate;
use crate::ranges::parse_range;
use crate::response::{ChannelBody, Handled, respond};
use crate::rollback;
use crate::service::StorageService;

/// The largest chunk a download streams.
pub const MAX_STREAM_CHUNK: u64 = 1 << 20;

impl StorageService {
    pub(crate) async fn read(&self, si: StorageIndex, n: ShareNumber, mutable: bool, headers: &HeaderMap) -> Handled {
        let chunk = (self.backend.max_chunk() as u64).clamp(64 * 1024, MAX_STREAM_CHUNK);
        // `None` without a `Range` header; `Some(None)` for one that does not parse.
        let range = headers.get(http::header::RANGE).map(|r| r.to_str().ok().and_then(parse_range));
        if let Some(Some((a, b))) = range.filter(|_| !mutable)
            && b - a < chunk
        {
            return self.read_piece(si, n, a, b - a + 1).await;
        }
        let size = if mutable { self.backend.mutable_size(&si, n).await } else { self.backend.size(&si, n).await };
        let size = size.map_err(ApiError::backend("size"))?.ok_or(ApiError::NoSuchShare)?;
        let (status, start, end) = match range {
            None => (StatusCode::OK, 0, size),
            Some(parsed) => {
                let (a, b) = parsed.ok_or(ApiError::BadRange)?;
                let end = b.saturating_add(1).min(size);
                if a >= end {
                    return Ok(respond(StatusCode::NO_CONTENT, Some("application/octet-stream"), Bytes::new()));
                }
                (StatusCode::PARTIAL_CONTENT, a, end)
            }
        };
        // The first chunk is read before answering, so a failing backend gets an error status
        // rather than a truncated 2xx; the rest streams through a one-chunk channel.
        let first_len = (end - start).min(chunk);
        // Looked up before the read: a write racing it only raises the number after its bytes
        // are in, so bytes read now never honestly carry less.
        let kept = match mutable && start == 0 && first_len >= rollback::HEADER as u64 {
            true => rollback::kept(&self.accountant, &si, n)?,
            false => None,
        };
        let first =
            read_share(&*self.backend, &si, n, mutable, start, first_len).await.map_err(ApiError::backend("read"))?;
        if (first.len() as u64) < first_len {
            return Err(ApiError::BackendMisbehaved { op: "read", what: "a share shorter than its size" });
        }
        if let Some(kept) = kept.filter(|k| rollback::older(*k, &first)) {
            // A write may have lowered or removed the header (its writer's right) between the
            // lookup and the read: only a number that still stands, with no write under way,
            // refuses.
            let raced = self.pending.contains(&si) || rollback::kept(&self.accountant, &si, n)? != Some(kept);
            if !raced {
                rollback::refuse_older(&self.metrics, &si, n, kept, &first)?;
            }
        }
        let body = if end - start == first_len {
            Full::new(Bytes::from(first)).map_err(|never| match never {}).boxed_unsync()
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            let backend = self.backend.clone();
            let mut rate = MinRate::new(self.config.limits.min_rate);
            tokio::spawn(async move {
                // A reader that stops reading is cut off: the body ends short, and the
                // connection with it.
                let first_len = first.len();
                if !matches!(rate.wait(tx.send(Ok(Bytes::from(first)))).await, Some(Ok(()))) {
                    return;
                }
                rate.moved(first_len);
                let first_len = first_len as u64;
                let mut offset = start + first_len;
                while offset < end {
                    let len = (end - offset).min(chunk);
                    let piece = match read_share(&*backend, &si, n, mutable, offset, len).await {
                        Ok(p) if p.len() as u64 == len => Ok(Bytes::from(p)),
                        Ok(_) => Err(std::io::Error::other("share shorter than its size")),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    let failed = piece.is_err();
                    let sent = matches!(rate.wait(tx.send(piece)).await, Some(Ok(())));
                    if failed || !sent {
                        if !failed {
                            tracing::debug!(si = %si, shnum = n.0, "a download slower than the least rate was cut off");
                        }
                        return;
                    }
                    rate.moved(len as usize);
                    offset += len;
                }
            });
            ChannelBody { rx }.boxed_unsync()
        };
        Ok(share_response(status, start, end, body))
    }

    /// Bytes `start..start + len` of a complete immutable share, in one backend call.
    async fn read_piece(&self, si: StorageIndex, n: ShareNumber, start: u64, len: u64) -> Handled {
        let data = self.backend.read(&si, n, start, len).await.map_err(ApiError::backend("read"))?;
        if data.len() as u64 > len {
            return Err(ApiError::BackendMisbehaved { op: "read", what: "more bytes than asked" });
        }
        if data.is_empty() {
            // At or past the share's end, as a range starting there is answered below.
            return Ok(respond(StatusCode::NO_CONTENT, Some("application/octet-stream"), Bytes::new()));
        }
        let Some(end) = start.checked_add(data.len() as u64) else {
            return Err(ApiError::BackendMisbehaved { op: "read", what: "an answer ending past the largest offset" });
        };
        let body = Full::new(Bytes::from(data)).map_err(|never| match never {}).boxed_unsync();
        Ok(share_response(StatusCode::PARTIAL_CONTENT, start, end, body))
    }
}

/// A read's answer: `status` with share bytes `start..end` as `body`.
fn share_response(
    status: StatusCode,
    start: u64,
    end: u64,
    body: crate::ResponseBody,
) -> Response<crate::ResponseBody> {
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
    r
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

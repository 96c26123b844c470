//! From a request line to a [`Route`] (404 for an unknown path, 405 for a known path with the
//! wrong method), and the request-shape checks every endpoint shares: `Accept`,
//! `Content-Type`, and small CBOR bodies read with a size limit and a stall timeout.

use ciborium::value::Value;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use hyper::body::Body;
use marsh_core::{ShareNumber, StorageIndex};

use crate::body::TrackedBody;
use crate::budget::{BODY_WAIT, BodyBudget, BodyPermit};
use crate::error::ApiError;
use crate::limits::{Limits, MinRate};
use crate::service::Req;
use crate::wire;

/// A parsed route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
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

/// Match path and method; `Err` is [`ApiError::UnknownPath`] or [`ApiError::MethodNotAllowed`].
pub(crate) fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let rest = path.strip_prefix("/storage/v1/").ok_or(ApiError::UnknownPath)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let si = |s: &str| s.parse::<StorageIndex>().map_err(|_| ApiError::UnknownPath);
    let n = |s: &str| shnum(s).ok_or(ApiError::UnknownPath);
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
        _ => return Err(ApiError::UnknownPath),
    };
    if *method == allowed { Ok(route) } else { Err(ApiError::MethodNotAllowed) }
}

pub(crate) fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(accept) = headers.get(http::header::ACCEPT) else { return Ok(()) };
    let accept = accept.to_str().unwrap_or("");
    let ok = accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(media, "application/cbor" | "*/*" | "application/*")
    });
    if ok { Ok(()) } else { Err(ApiError::NotAcceptable) }
}

pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(http::header::CONTENT_TYPE) {
        None => Ok(()),
        Some(v) if v.to_str().unwrap_or("").split(';').next().unwrap_or("").trim() == "application/cbor" => Ok(()),
        Some(_) => Err(ApiError::UnsupportedMediaType),
    }
}

/// Read a whole body, refusing more than `limit` bytes or a peer slower than the least rate.
/// Room for the length it declares is made at once, so the buffer never grows by doubling.
async fn whole_body(body: TrackedBody, limit: usize, min_rate: u64) -> Result<Vec<u8>, ApiError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let mut body = body;
    let declared = body.size_hint().exact().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let mut out = Vec::with_capacity(declared.min(limit));
    let mut rate = MinRate::new(min_rate);
    loop {
        let frame = match rate.wait(body.frame()).await {
            None => return Err(too_slow(min_rate)),
            Some(None) => return Ok(out),
            Some(Some(Err(e))) => return Err(ApiError::BodyUnreadable(e.to_string())),
            Some(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            rate.moved(data.len());
            if out.len() + data.len() > limit {
                return Err(ApiError::BodyTooLarge { limit });
            }
            out.extend_from_slice(&data);
        }
    }
}

/// The answer to a body that arrives slower than the least rate.
pub(crate) fn too_slow(min_rate: u64) -> ApiError {
    ApiError::BodyTooSlow { min_rate }
}

/// A CBOR body of at most `limit` bytes and `limits.cbor_items` data items, decoded, with its
/// share of `budget`, taken before the body is read (for the length it declares, or `limit`
/// when it declares none) and held for as long as the caller keeps the permit. The bytes as
/// received are dropped once decoded.
pub(crate) async fn cbor_body(
    req: Req,
    limit: usize,
    limits: &Limits,
    budget: &BodyBudget,
) -> Result<(Value, BodyPermit), ApiError> {
    check_content_type(req.headers())?;
    let declared = req.body().size_hint().exact();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let permit = budget.take(declared.unwrap_or(limit as u64), BODY_WAIT).await?;
    let body = whole_body(req.into_body(), limit, limits.min_rate).await?;
    let value = wire::decode_limited(&body, limits.cbor_items)?;
    Ok((value, permit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const SI: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn si() -> StorageIndex {
        SI.parse().unwrap()
    }

    #[test]
    fn every_endpoint_routes_with_its_method() {
        let cases = [
            (Method::GET, "version".to_owned(), Route::Version),
            (Method::PUT, format!("lease/{SI}"), Route::Lease(si())),
            (Method::POST, format!("immutable/{SI}"), Route::Allocate(si())),
            (Method::PATCH, format!("immutable/{SI}/3"), Route::Write(si(), ShareNumber(3))),
            (Method::GET, format!("immutable/{SI}/3"), Route::ImmutableRead(si(), ShareNumber(3))),
            (Method::PUT, format!("immutable/{SI}/3/abort"), Route::Abort(si(), ShareNumber(3))),
            (Method::POST, format!("immutable/{SI}/3/corrupt"), Route::ImmutableCorrupt(si(), ShareNumber(3))),
            (Method::GET, format!("immutable/{SI}/shares"), Route::ImmutableList(si())),
            (Method::POST, format!("mutable/{SI}/read-test-write"), Route::ReadTestWrite(si())),
            (Method::GET, format!("mutable/{SI}/shares"), Route::MutableList(si())),
            (Method::GET, format!("mutable/{SI}/65535"), Route::MutableRead(si(), ShareNumber(65535))),
            (Method::POST, format!("mutable/{SI}/0/corrupt"), Route::MutableCorrupt(si(), ShareNumber(0))),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(&method, &format!("/storage/v1/{path}")).ok(), Some(expected), "{method} {path}");
        }
    }

    #[test]
    fn unknown_paths_are_404_and_known_ones_with_another_method_405() {
        for path in [
            "/storage/v2/version".to_owned(),
            "/version".to_owned(),
            format!("/storage/v1/immutable/{SI}/65536"),
            format!("/storage/v1/immutable/{SI}/-1"),
            format!("/storage/v1/immutable/{SI}/+1"),
            format!("/storage/v1/immutable/{SI}/"),
            "/storage/v1/immutable/AAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            "/storage/v1/immutable/aaaa".to_owned(),
            format!("/storage/v1/mutable/{SI}/1/2"),
        ] {
            assert!(matches!(route(&Method::GET, &path), Err(ApiError::UnknownPath)), "{path}");
        }
        assert!(matches!(route(&Method::POST, "/storage/v1/version"), Err(ApiError::MethodNotAllowed)));
        assert!(matches!(
            route(&Method::DELETE, &format!("/storage/v1/immutable/{SI}/1")),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(route(&Method::GET, &format!("/storage/v1/lease/{SI}")), Err(ApiError::MethodNotAllowed)));
    }

    #[test]
    fn accept_and_content_type_take_cbor_or_a_wildcard() {
        let headers = |name: http::header::HeaderName, v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, http::HeaderValue::from_static(v));
            h
        };
        assert!(check_accept(&HeaderMap::new()).is_ok());
        assert!(check_accept(&headers(http::header::ACCEPT, "text/html, application/cbor;q=0.5")).is_ok());
        assert!(check_accept(&headers(http::header::ACCEPT, "*/*")).is_ok());
        assert_eq!(
            check_accept(&headers(http::header::ACCEPT, "text/html")).unwrap_err().status(),
            StatusCode::NOT_ACCEPTABLE
        );
        assert!(check_content_type(&headers(http::header::CONTENT_TYPE, "application/cbor; x=y")).is_ok());
        assert_eq!(
            check_content_type(&headers(http::header::CONTENT_TYPE, "application/json")).unwrap_err().status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}

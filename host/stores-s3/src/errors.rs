//! Turning SDK errors into what callers act on: [`Classified`] for one request (absent, exists,
//! denied, ...), [`OpenError`] for start-up. Messages name the store, the operation and the key.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use marsh_stores::StoreError;

use crate::S3ConfigError;

/// Why an S3 store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The settings are unusable.
    #[error("store `{0}`: {1}")]
    Config(String, S3ConfigError),
    /// The bucket does not exist.
    #[error("store `{store}`: bucket `{bucket}` does not exist (create it, or fix s3.{store}.bucket)")]
    NoSuchBucket {
        /// Store name.
        store: String,
        /// Bucket name.
        bucket: String,
    },
    /// The service does not know the access key, or the signature does not match the secret.
    #[error("store `{store}`: credentials refused: {detail}")]
    BadCredentials {
        /// Store name.
        store: String,
        /// What the service said.
        detail: String,
    },
    /// The credentials are valid but may not use the bucket.
    #[error("store `{store}`: access to bucket `{bucket}` denied: {detail}")]
    AccessDenied {
        /// Store name.
        store: String,
        /// Bucket name.
        bucket: String,
        /// What the service said.
        detail: String,
    },
    /// No answer: wrong endpoint, network down, TLS refused.
    #[error("store `{store}`: service unreachable: {detail}")]
    Unreachable {
        /// Store name.
        store: String,
        /// The connection error.
        detail: String,
    },
    /// Anything else the service answered.
    #[error("store `{store}`: {detail}")]
    Other {
        /// Store name.
        store: String,
        /// What the service said.
        detail: String,
    },
}

/// What one failed request means.
#[derive(Debug)]
pub(crate) enum Classified {
    NotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    NoSuchBucket,
    BadCredentials(String),
    AccessDenied(String),
    Timeout(String),
    Unreachable(String),
    Other(String),
}

pub(crate) fn classify<E>(e: &SdkError<E, HttpResponse>) -> Classified
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("");
            let detail = format!("HTTP {status} {code}: {}", ctx.err().message().unwrap_or("(no message)"));
            match (status, code) {
                (_, "NoSuchBucket") => Classified::NoSuchBucket,
                (_, "NoSuchKey") | (404, _) => Classified::NotFound,
                // AWS answers a lost create-only race with 412, and a concurrent one with 409.
                (412, _) | (_, "PreconditionFailed") | (409, "ConditionalRequestConflict") => {
                    Classified::PreconditionFailed
                }
                (416, _) | (_, "InvalidRange") => Classified::RangeNotSatisfiable,
                (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken") => {
                    Classified::BadCredentials(detail)
                }
                (403, _) => Classified::AccessDenied(detail),
                _ => Classified::Other(detail),
            }
        }
        SdkError::TimeoutError(_) => Classified::Timeout(DisplayErrorContext(e).to_string()),
        SdkError::DispatchFailure(d) if d.is_timeout() => Classified::Timeout(DisplayErrorContext(e).to_string()),
        SdkError::DispatchFailure(_) => Classified::Unreachable(DisplayErrorContext(e).to_string()),
        _ => Classified::Other(DisplayErrorContext(e).to_string()),
    }
}

impl Classified {
    pub(crate) fn into_store_error(self, store: &str, op: &str, key: &str) -> StoreError {
        let at = format!("store `{store}` {op} {key:?}");
        match self {
            Classified::NotFound => StoreError::NotFound,
            Classified::PreconditionFailed => StoreError::Exists,
            Classified::RangeNotSatisfiable => StoreError::Io(format!("{at}: range not satisfiable")),
            Classified::NoSuchBucket => StoreError::Io(format!("{at}: the bucket does not exist")),
            Classified::BadCredentials(d) => StoreError::Denied(format!("{at}: credentials refused: {d}")),
            Classified::AccessDenied(d) => StoreError::Denied(format!("{at}: access denied: {d}")),
            Classified::Timeout(d) => StoreError::Io(format!("{at}: timed out after retries: {d}")),
            Classified::Unreachable(d) => StoreError::Io(format!("{at}: unreachable after retries: {d}")),
            Classified::Other(d) => StoreError::Io(format!("{at}: {d}")),
        }
    }
}

pub(crate) fn open_error<E>(store: &str, bucket: &str, e: &SdkError<E, HttpResponse>) -> OpenError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let store = store.to_owned();
    match classify(e) {
        // HeadBucket has no body: a missing bucket is a bare 404.
        Classified::NoSuchBucket | Classified::NotFound => OpenError::NoSuchBucket { store, bucket: bucket.to_owned() },
        Classified::BadCredentials(detail) => OpenError::BadCredentials { store, detail },
        // A HEAD carries no error code, so a 403 may also be a wrong secret: say both.
        Classified::AccessDenied(detail) => OpenError::AccessDenied {
            store,
            bucket: bucket.to_owned(),
            detail: format!("{detail} (wrong credentials, or no permission on the bucket)"),
        },
        Classified::Timeout(detail) | Classified::Unreachable(detail) => OpenError::Unreachable { store, detail },
        Classified::PreconditionFailed | Classified::RangeNotSatisfiable => {
            OpenError::Other { store, detail: DisplayErrorContext(e).to_string() }
        }
        Classified::Other(detail) => OpenError::Other { store, detail },
    }
}

//! The `s3` blob store driver: one bucket and key prefix of an S3-compatible service behind the
//! [`marsh_stores::BlobStore`] trait, so plugins granted it see the same object operations as on
//! a local directory (and no random access: objects are written once, whole).
//!
//! It lives in its own crate because aws-sdk-s3 is a long build; only the binary links it. The
//! SDK runs without its default HTTPS stack: the smithy HTTP client with rustls on ring, trusting
//! the system roots plus an optional CA file (for private or test CAs).
//!
//! What it promises:
//! - create-only writes send `If-None-Match: *`; a 412 (or 409 from servers that report a
//!   concurrent conditional write that way) is [`StoreError::Exists`];
//! - a missing key reads as absent whether the server answers 404 `NoSuchKey`, 404 with no
//!   body (HEAD) or, as some do, 403 on a HEAD without list permission is *not* taken as absent:
//!   it is an access error naming the store and operation;
//! - 5xx, `SlowDown`/throttling, timeouts and dropped connections are retried with exponential
//!   backoff and jitter (the SDK's standard retry strategy, [`S3Config::max_attempts`] tries);
//!   reading a body that breaks off mid-way is retried here, from the start of the range;
//! - streamed uploads become one `PutObject` when small and a multipart upload otherwise, so a
//!   large object is never buffered whole; an abandoned upload is aborted;
//! - every request is counted ([`S3Stats`]) for the operator and the benchmarks.

mod config;
mod errors;
mod upload;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    RuntimeComponents,
};
use aws_sdk_s3::primitives::{ByteStream, ByteStreamError};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use marsh_stores::{BlobKey, BlobStore, BlobUpload, MAX_PAGE, Page, PutMode, StoreError};
use tokio::sync::Semaphore;

pub use config::{S3Config, S3ConfigError};
pub use errors::OpenError;

use errors::{Classified, classify};

/// Request and byte counts of one store since it was opened.
#[derive(Debug, Default)]
pub struct S3Stats {
    /// HTTP requests sent, retries included, by method: GET, HEAD, PUT, POST, DELETE.
    requests: [AtomicU64; 5],
    /// Body bytes sent in PUT requests (object and part data).
    bytes_sent: AtomicU64,
    /// Body bytes received in GET responses (object data).
    bytes_received: AtomicU64,
}

/// A copy of [`S3Stats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// GET requests (reads and listings).
    pub get: u64,
    /// HEAD requests.
    pub head: u64,
    /// PUT requests (objects and parts).
    pub put: u64,
    /// POST requests (multipart create and complete).
    pub post: u64,
    /// DELETE requests.
    pub delete: u64,
    /// Body bytes sent.
    pub bytes_sent: u64,
    /// Body bytes received.
    pub bytes_received: u64,
}

impl StatsSnapshot {
    /// All requests.
    pub fn requests(&self) -> u64 {
        self.get + self.head + self.put + self.post + self.delete
    }
}

impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests (GET {}, HEAD {}, PUT {}, POST {}, DELETE {}), {} bytes sent, {} bytes received",
            self.requests(),
            self.get,
            self.head,
            self.put,
            self.post,
            self.delete,
            self.bytes_sent,
            self.bytes_received
        )
    }
}

impl S3Stats {
    /// The counts now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |i: usize| self.requests[i].load(Ordering::Relaxed);
        StatsSnapshot {
            get: r(0),
            head: r(1),
            put: r(2),
            post: r(3),
            delete: r(4),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }
}

/// Counts every attempt the SDK transmits, so retries show in the figures.
#[derive(Debug)]
struct CountRequests(Arc<S3Stats>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "marsh-count-requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let i = match context.request().method() {
            "GET" => 0,
            "HEAD" => 1,
            "PUT" => 2,
            "POST" => 3,
            _ => 4,
        };
        self.0.requests[i].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One bucket and prefix of an S3-compatible service.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    bucket: String,
    prefix: String,
    part_size: usize,
    client: Client,
    permits: Semaphore,
    stats: Arc<S3Stats>,
    max_attempts: u32,
}

impl S3Store {
    /// Build the client and check the bucket answers (`HeadBucket`), so a wrong endpoint,
    /// bucket or credential is reported at start-up, typed, rather than on the first upload.
    pub async fn open(config: S3Config) -> Result<Self, OpenError> {
        let store = Self::new(config)?;
        store.probe().await?;
        Ok(store)
    }

    /// Build the client without contacting the service.
    pub fn new(config: S3Config) -> Result<Self, OpenError> {
        let credentials = config.credentials().map_err(|e| OpenError::Config(config.name.clone(), e))?;
        let mut trust = TrustStore::empty().with_native_roots(true);
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                OpenError::Config(config.name.clone(), S3ConfigError::Invalid(format!("ca-file {}: {e}", ca.display())))
            })?;
            trust = trust.with_pem_certificate(pem);
        }
        let tls_context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| OpenError::Config(config.name.clone(), S3ConfigError::Invalid(format!("TLS: {e}"))))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .tls_context(tls_context)
            .build_https();
        let stats = Arc::new(S3Stats::default());
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .force_path_style(config.path_style)
            .credentials_provider(Credentials::new(
                credentials.access_key_id,
                credentials.secret_access_key,
                credentials.session_token,
                None,
                credentials.source,
            ))
            .http_client(http)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts)
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5).min(config.timeout))
                    .operation_attempt_timeout(config.timeout)
                    .build(),
            )
            // Shares are already ciphertext with Tahoe's own hashes and every other object is
            // sealed (authenticated), so the SDK's extra CRC over every body is not needed.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .interceptor(CountRequests(stats.clone()));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        Ok(S3Store {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                bucket: config.bucket.clone(),
                prefix: config.prefix.clone(),
                part_size: config.part_size,
                client,
                permits: Semaphore::new(config.max_concurrency),
                stats,
                max_attempts: config.max_attempts,
            }),
        })
    }

    /// Check that the bucket exists and the credentials are accepted.
    pub async fn probe(&self) -> Result<(), OpenError> {
        let i = &self.inner;
        let _permit = i.permits.acquire().await;
        match i.client.head_bucket().bucket(&i.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(errors::open_error(&i.name, &i.bucket, &e)),
        }
    }

    /// Request and byte counts so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    fn full(&self, key: &BlobKey) -> String {
        format!("{}{}", self.inner.prefix, key.as_str())
    }

    fn fail(&self, op: &str, key: &str, c: Classified) -> StoreError {
        c.into_store_error(&self.inner.name, op, key)
    }

    async fn read_range(&self, key: &BlobKey, range: Option<(u64, u64)>) -> Result<Option<Vec<u8>>, StoreError> {
        let i = &self.inner;
        let full = self.full(key);
        let op = if range.is_some() { "get-range" } else { "get" };
        // The SDK retries the request; a body that breaks off after the headers is retried here.
        let mut attempt = 1;
        loop {
            let _permit = i.permits.acquire().await;
            let mut req = i.client.get_object().bucket(&i.bucket).key(&full);
            if let Some((offset, len)) = range {
                req = req.range(format!("bytes={}-{}", offset, offset + len - 1));
            }
            let out = match req.send().await {
                Ok(out) => out,
                Err(e) => {
                    return match classify(&e) {
                        Classified::NotFound => Ok(None),
                        // Asked past the end of an object that exists.
                        Classified::RangeNotSatisfiable => Ok(Some(Vec::new())),
                        c => Err(self.fail(op, key.as_str(), c)),
                    };
                }
            };
            // What the store may answer: the range asked, or for a whole object the largest
            // object the node reads whole. A store that sends more is refused when the excess
            // arrives, before it is held, so a hostile or broken store cannot exhaust memory.
            let limit = range.map_or(MAX_WHOLE_GET, |(_, len)| len);
            match collect_bounded(out.body, limit).await {
                Ok(Some(data)) => {
                    i.stats.bytes_received.fetch_add(data.len() as u64, Ordering::Relaxed);
                    return Ok(Some(data));
                }
                Ok(None) => {
                    return Err(StoreError::Io(format!(
                        "store `{}` {op} {key:?}: answered more than the {limit} bytes asked for",
                        i.name
                    )));
                }
                Err(e) if attempt < i.max_attempts => {
                    tracing::warn!(store = %i.name, key = %key, "{op}: body broke off ({e}); retrying");
                    attempt += 1;
                }
                Err(e) => {
                    return Err(StoreError::Io(format!(
                        "store `{}` {op} {key:?}: body broke off after {attempt} tries: {e}",
                        i.name
                    )));
                }
            }
        }
    }

    async fn put_object(&self, key: &BlobKey, data: Vec<u8>, mode: PutMode, op: &str) -> Result<(), StoreError> {
        let i = &self.inner;
        let len = data.len() as u64;
        let _permit = i.permits.acquire().await;
        let mut req = i.client.put_object().bucket(&i.bucket).key(self.full(key)).body(ByteStream::from(data));
        if mode == PutMode::CreateOnly {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => {
                i.stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => match classify(&e) {
                Classified::PreconditionFailed if mode == PutMode::CreateOnly => Err(StoreError::Exists),
                c => Err(self.fail(op, key.as_str(), c)),
            },
        }
    }
}

/// The largest object read whole (the largest accounting snapshot the host restores is 1 GiB;
/// everything else read whole is far smaller). Shares are read by range.
const MAX_WHOLE_GET: u64 = (1 << 30) + (1 << 20);

/// A response body, or `None` once it passed `limit` bytes (the rest is not read).
async fn collect_bounded(mut body: ByteStream, limit: u64) -> Result<Option<Vec<u8>>, ByteStreamError> {
    let mut data = Vec::new();
    while let Some(chunk) = body.try_next().await? {
        if data.len() as u64 + chunk.len() as u64 > limit {
            return Ok(None);
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Some(data))
}

#[async_trait]
impl BlobStore for S3Store {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_range(key, None).await
    }

    async fn get_range(&self, key: &BlobKey, offset: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if len == 0 {
            return Ok(self.head(key).await?.map(|_| Vec::new()));
        }
        let len = len.min(u64::MAX - offset);
        self.read_range(key, Some((offset, len))).await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        let i = &self.inner;
        let _permit = i.permits.acquire().await;
        match i.client.head_object().bucket(&i.bucket).key(self.full(key)).send().await {
            Ok(out) => Ok(Some(out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0))),
            Err(e) => match classify(&e) {
                Classified::NotFound => Ok(None),
                c => Err(self.fail("head", key.as_str(), c)),
            },
        }
    }

    async fn put(&self, key: &BlobKey, data: Vec<u8>, mode: PutMode) -> Result<(), StoreError> {
        self.put_object(key, data, mode, "put").await
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, StoreError> {
        // S3 answers a DELETE the same whether the key existed, so ask first.
        if self.head(key).await?.is_none() {
            return Ok(false);
        }
        let i = &self.inner;
        let _permit = i.permits.acquire().await;
        match i.client.delete_object().bucket(&i.bucket).key(self.full(key)).send().await {
            Ok(_) => Ok(true),
            Err(e) => match classify(&e) {
                Classified::NotFound => Ok(false),
                c => Err(self.fail("delete", key.as_str(), c)),
            },
        }
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let i = &self.inner;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut keys = Vec::new();
        let mut after = start_after.map(|a| format!("{}{a}", i.prefix));
        // Reserved keys (the host's own records) are skipped, so a page may need more requests.
        // The store is not trusted to keep to the page size, the prefix or the order: at most
        // `limit` keys are kept whatever it answers, and a key that does not come after the
        // one before it ends the listing with an error instead of a loop.
        loop {
            let _permit = i.permits.acquire().await;
            let mut req = i
                .client
                .list_objects_v2()
                .bucket(&i.bucket)
                .prefix(format!("{}{prefix}", i.prefix))
                .max_keys(i32::try_from(limit - keys.len()).unwrap_or(1000));
            if let Some(a) = &after {
                req = req.start_after(a);
            }
            let out = req.send().await.map_err(|e| self.fail("list", prefix, classify(&e)))?;
            let mut last: Option<String> = None;
            let mut cut = false;
            for object in out.contents() {
                let Some(full) = object.key() else { continue };
                let behind = last.as_deref().or(after.as_deref()).is_some_and(|before| full <= before);
                if behind || !full.starts_with(&format!("{}{prefix}", i.prefix)) {
                    return Err(StoreError::Io(format!(
                        "s3 list {prefix:?}: the store answered {:?}, outside the listing asked for (out of order or not under the prefix)",
                        full.chars().take(200).collect::<String>()
                    )));
                }
                if keys.len() >= limit {
                    // More than the page asked for: the rest is the next page's.
                    cut = true;
                    break;
                }
                last = Some(full.to_owned());
                let Some(key) = full.strip_prefix(&i.prefix) else { continue };
                if !BlobKey::is_reserved(key) {
                    keys.push(key.to_owned());
                }
            }
            let truncated = cut || (out.is_truncated().unwrap_or(false) && last.is_some());
            if !truncated {
                return Ok(Page { keys, next: None });
            }
            if keys.len() >= limit {
                let next = keys.last().cloned();
                return Ok(Page { keys, next });
            }
            after = last;
        }
    }

    async fn begin_upload(&self, key: &BlobKey, mode: PutMode) -> Result<Box<dyn BlobUpload>, StoreError> {
        Ok(Box::new(upload::S3Upload::new(self.clone(), key.clone(), mode)))
    }

    async fn available(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}

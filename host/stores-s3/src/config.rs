//! [`S3Config`]: what an operator sets for one S3 store (`marsh config set s3.NAME.FIELD VALUE`),
//! parsed from field/value pairs so the node's typed config and the tests build it the same way.

use std::path::PathBuf;
use std::time::Duration;

/// Why an S3 store's settings are not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3ConfigError {
    /// A field the driver does not know.
    #[error("unknown S3 setting `{0}`; known: {known}", known = S3Config::FIELDS.join(", "))]
    UnknownField(String),
    /// A required field is missing.
    #[error("`{0}` is required")]
    Missing(&'static str),
    /// A value is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No credentials in the config or the environment.
    #[error(
        "no credentials: set access-key-id and secret-access-key, or the AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY environment variables"
    )]
    NoCredentials,
}

/// Settings of one S3 store.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The store's name (as granted to plugins), for messages.
    pub name: String,
    /// Service URL, e.g. `https://s3.eu-central-1.amazonaws.com` or `http://127.0.0.1:8333`;
    /// `None` uses AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// Region for signing.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// Prepended to every key; empty or ending in `/`.
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted services need.
    pub path_style: bool,
    /// Access key id; `None` reads `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret key; `None` reads `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Deadline of one attempt of one request.
    pub timeout: Duration,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Tries per request (first try included) on retryable failures.
    pub max_attempts: u32,
    /// Extra CA certificates (PEM) to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Part size of multipart uploads; a streamed upload smaller than this is one PUT.
    pub part_size: usize,
}

/// Credentials and where they came from.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
    pub(crate) source: &'static str,
}

impl S3Config {
    /// Every field `from_fields` takes.
    pub const FIELDS: &'static [&'static str] = &[
        "endpoint",
        "region",
        "bucket",
        "prefix",
        "path-style",
        "access-key-id",
        "secret-access-key",
        "timeout",
        "max-concurrency",
        "max-attempts",
        "ca-file",
        "part-size",
    ];

    /// Defaults for everything but the bucket.
    pub fn new(name: &str, bucket: &str) -> Self {
        S3Config {
            name: name.to_owned(),
            endpoint: None,
            region: "us-east-1".to_owned(),
            bucket: bucket.to_owned(),
            prefix: String::new(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            timeout: Duration::from_secs(30),
            max_concurrency: 32,
            max_attempts: 5,
            ca_file: None,
            part_size: 8 << 20,
        }
    }

    /// Build from `(field, value)` pairs; `bucket` is required.
    pub fn from_fields<'a>(
        name: &str,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, S3ConfigError> {
        let mut c = S3Config::new(name, "");
        for (field, value) in fields {
            let number = |what: &str| -> Result<u64, S3ConfigError> {
                value
                    .trim()
                    .parse()
                    .map_err(|_| S3ConfigError::Invalid(format!("{what} {value:?} is not a whole number")))
            };
            match field {
                "endpoint" => c.endpoint = Some(value.to_owned()),
                "region" => c.region = value.to_owned(),
                "bucket" => c.bucket = value.to_owned(),
                "prefix" => c.prefix = value.to_owned(),
                "path-style" => {
                    c.path_style = match value {
                        "true" | "yes" | "1" => true,
                        "false" | "no" | "0" => false,
                        _ => {
                            return Err(S3ConfigError::Invalid(format!(
                                "path-style {value:?}: expected true or false"
                            )));
                        }
                    }
                }
                "access-key-id" => c.access_key_id = Some(value.to_owned()),
                "secret-access-key" => c.secret_access_key = Some(value.to_owned()),
                "timeout" => c.timeout = Duration::from_secs(number("timeout")?.max(1)),
                "max-concurrency" => c.max_concurrency = number("max-concurrency")?.clamp(1, 1024) as usize,
                "max-attempts" => c.max_attempts = number("max-attempts")?.clamp(1, 20) as u32,
                "ca-file" => c.ca_file = Some(PathBuf::from(value)),
                "part-size" => {
                    // S3's minimum part is 5 MiB (except the last); its maximum 5 GiB.
                    let n = number("part-size")?;
                    if !(5 << 20..=5 << 30).contains(&n) {
                        return Err(S3ConfigError::Invalid(format!("part-size {n}: expected 5 MiB to 5 GiB")));
                    }
                    c.part_size = n as usize;
                }
                other => return Err(S3ConfigError::UnknownField(other.to_owned())),
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Check the fields agree with each other.
    pub fn validate(&self) -> Result<(), S3ConfigError> {
        if self.bucket.is_empty() {
            return Err(S3ConfigError::Missing("bucket"));
        }
        if !self.prefix.is_empty() && !self.prefix.ends_with('/') {
            return Err(S3ConfigError::Invalid(format!("prefix {:?} must end with `/`", self.prefix)));
        }
        if self.prefix.starts_with('/') {
            return Err(S3ConfigError::Invalid(format!("prefix {:?} must not start with `/`", self.prefix)));
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(S3ConfigError::Invalid(format!("endpoint {e:?} must start with http:// or https://")));
        }
        Ok(())
    }

    /// Where the store lives, for messages: `s3://bucket/prefix at endpoint`.
    pub fn location(&self) -> String {
        format!("s3://{}/{} at {}", self.bucket, self.prefix, self.endpoint.as_deref().unwrap_or("AWS"))
    }

    pub(crate) fn credentials(&self) -> Result<Resolved, S3ConfigError> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Ok(Resolved {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: None,
                source: "marsh-config",
            }),
            (None, None) => {
                let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) => Ok(Resolved {
                        access_key_id: id,
                        secret_access_key: secret,
                        session_token: var("AWS_SESSION_TOKEN"),
                        source: "environment",
                    }),
                    _ => Err(S3ConfigError::NoCredentials),
                }
            }
            (Some(_), None) => Err(S3ConfigError::Missing("secret-access-key")),
            (None, Some(_)) => Err(S3ConfigError::Missing("access-key-id")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_and_bad_ones_are_named() {
        let c = S3Config::from_fields(
            "shares",
            [("bucket", "b"), ("prefix", "node1/"), ("path-style", "true"), ("timeout", "7"), ("max-concurrency", "4")],
        )
        .unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str(), c.path_style), ("b", "node1/", true));
        assert_eq!((c.timeout, c.max_concurrency), (Duration::from_secs(7), 4));
        assert_eq!(S3Config::from_fields("s", []).unwrap_err(), S3ConfigError::Missing("bucket"));
        let e = S3Config::from_fields("s", [("bucket", "b"), ("prefix", "no-slash")]).unwrap_err();
        assert!(e.to_string().contains("must end with `/`"), "{e}");
        let e = S3Config::from_fields("s", [("bucket", "b"), ("colour", "red")]).unwrap_err();
        assert!(e.to_string().contains("known: endpoint"), "{e}");
        let e = S3Config::from_fields("s", [("bucket", "b"), ("part-size", "1024")]).unwrap_err();
        assert!(e.to_string().contains("5 MiB"), "{e}");
        let e = S3Config::from_fields("s", [("bucket", "b"), ("access-key-id", "x")]).unwrap().credentials();
        assert_eq!(e.unwrap_err(), S3ConfigError::Missing("secret-access-key"));
    }
}

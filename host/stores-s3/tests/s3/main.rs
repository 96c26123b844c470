//! Tests of the S3 driver and the `backend-s3` plugin against a real S3-compatible server
//! (SeaweedFS, started by `make test` through `tests/s3/with-s3.sh`), over plain HTTP and over
//! HTTPS with a test CA, and through a fault-injecting proxy. A missing server fails the tests
//! with the command to run; nothing is skipped.

#![allow(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

/// The server's coordinates, fresh prefixes, the fault proxy, plugin loading.
mod support;

/// The conformance suite and crash safety of `backend-s3` on S3.
mod backend;
/// Object operations, paging, multipart, typed errors, TLS.
mod driver;
/// 5xx, slow answers and dropped connections between the driver and the server.
mod faults;

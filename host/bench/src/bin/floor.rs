//! `marsh-floor`: the least a GBS server built on marsh's stack costs, which `make bench` sets
//! beside marsh and the Python node. It answers the requests `marsh-load` makes for immutable
//! uploads, ranged downloads and `version` polls with marsh's own TLS configuration
//! ([`marsh_server::tls_config`]), the same HTTP/1.1 server (hyper, the same buffer limit) on the
//! same runtime (tokio, one worker per core), and nothing behind them but one file per share,
//! written and read with one `pwrite` or `pread` per request straight from the worker. No
//! authorization, accounting, leases, limits, pacing, plugin or sealing: what marsh costs above
//! the floor is marsh's own work; what the floor costs is TLS, HTTP and the kernel's part in
//! moving the bytes between sockets and files, which no server on this stack gets under.
//!
//! Usage: `marsh-floor DIR`. It makes a throw-away node identity under `DIR` (for the
//! certificate and swissnum a NURL needs), listens on a free port of 127.0.0.1, prints
//! `serving NURL` as `marsh run` does, keeps shares under `DIR/shares`, and runs until killed.
//! Mutable slots and leases are answered 501 (`marsh-load --mutable 0 --renewals 0`), a read
//! past a share's end fails, and file work (the `fsync` too) stalls its worker as long as it
//! takes: its CPU per GiB is the floor, its throughput and latency are no ceiling. A
//! benchmark's baseline, not a storage server: it checks nothing a client sends.

#![allow(clippy::print_stdout, reason = "it prints its NURL as `marsh run` does")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use marsh_node::{InitOptions, NodeDir};
use marsh_server::wire;

/// What one request needs: where shares live, the `version` answer encoded once, and the size
/// each storage index's shares were allocated with (a share is made durable, `fsync`, when a
/// write reaches its end, as marsh makes a finished upload durable).
struct Floor {
    shares: PathBuf,
    version: Bytes,
    sizes: Mutex<HashMap<String, u64>>,
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).context("usage: marsh-floor DIR")?);
    // The same runtime `marsh run` builds: one worker per core.
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(&dir))
}

async fn serve(dir: &Path) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let options = InitOptions {
        listen: listener.local_addr()?,
        public_host: None,
        public_port: None,
        nickname: "floor".into(),
        storage_dir: None,
        web_listen: Some(String::new()),
        settings: Vec::new(),
    };
    let identity = NodeDir::init(&dir.join("node"), &options)?.identity()?;
    let nurl = identity.nurl("127.0.0.1", port);
    let acceptor = tokio_rustls::TlsAcceptor::from(marsh_server::tls_config(identity.cert_der, identity.key_der)?);
    let shares = dir.join("shares");
    std::fs::create_dir_all(&shares)?;
    let version = Bytes::from(wire::encode(&wire::version(u64::MAX >> 1, u64::MAX >> 1, 1 << 40, "marsh-floor")));
    let floor = Arc::new(Floor { shares, version, sizes: Mutex::default() });
    println!("serving {nurl}");
    loop {
        let (stream, _) = listener.accept().await?;
        // As marsh's listener does: a response's last segment is not held back for an ACK.
        stream.set_nodelay(true)?;
        let (acceptor, floor) = (acceptor.clone(), floor.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else { return };
            let svc = service_fn(move |req| {
                let floor = floor.clone();
                async move { Ok::<_, Infallible>(floor.handle(req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

impl Floor {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let path: Vec<&str> = path.trim_start_matches("/storage/v1/").split('/').collect();
        let answer = match (req.method(), path.as_slice()) {
            (&Method::GET, ["version"]) => Ok((StatusCode::OK, self.version.clone())),
            (&Method::POST, ["immutable", si]) => self.allocate(si, req).await,
            (&Method::PATCH, ["immutable", si, n]) => self.write(si, n, req).await,
            (&Method::GET, ["immutable", si, n]) => self.read(si, n, &req),
            _ => Err((StatusCode::NOT_IMPLEMENTED, "not served by the floor".into())),
        };
        let (status, body) = answer.unwrap_or_else(|(status, why)| (status, Bytes::from(why)));
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response
    }

    async fn allocate(&self, si: &str, req: Request<Incoming>) -> Answer {
        let body = req.into_body().collect().await.map_err(bad)?.to_bytes();
        let asked = wire::allocate_request(&wire::decode(&body).map_err(bad)?).map_err(bad)?;
        std::fs::create_dir_all(self.shares.join(si)).map_err(failed)?;
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).insert(si.to_owned(), asked.allocated_size);
        Ok((StatusCode::OK, Bytes::from(wire::encode(&wire::allocate_response(&[], &asked.share_numbers)))))
    }

    /// One PATCH: its body gathered into one buffer as marsh does, then one `pwrite`; the one
    /// that reaches the allocated end also `fsync`s, and is answered 201 as a finished upload.
    async fn write(&self, si: &str, n: &str, req: Request<Incoming>) -> Answer {
        let (offset, len) = range(&req, "content-range", "bytes ")?;
        let mut body = req.into_body();
        let mut data = Vec::with_capacity(len as usize);
        while let Some(frame) = body.frame().await {
            if let Ok(bytes) = frame.map_err(bad)?.into_data() {
                data.extend_from_slice(&bytes);
            }
        }
        let file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(self.share(si, n));
        let file = file.and_then(|f| f.write_all_at(&data, offset).map(|()| f)).map_err(failed)?;
        let size = self.sizes.lock().unwrap_or_else(|p| p.into_inner()).get(si).copied();
        if size == Some(offset + data.len() as u64) {
            // As marsh's directory store finishes a share: the file, then its directory.
            file.sync_all().and_then(|()| std::fs::File::open(self.shares.join(si))?.sync_all()).map_err(failed)?;
            return Ok((StatusCode::CREATED, Bytes::new()));
        }
        Ok((StatusCode::OK, Bytes::from(wire::encode(&wire::required(&[])))))
    }

    /// One ranged GET: one `pread` into one buffer, answered whole.
    fn read(&self, si: &str, n: &str, req: &Request<Incoming>) -> Answer {
        let (offset, len) = range(req, "range", "bytes=")?;
        let mut data = vec![0; len as usize];
        let file = std::fs::File::open(self.share(si, n));
        file.and_then(|f| f.read_exact_at(&mut data, offset)).map_err(failed)?;
        Ok((StatusCode::PARTIAL_CONTENT, Bytes::from(data)))
    }

    fn share(&self, si: &str, n: &str) -> PathBuf {
        self.shares.join(si).join(n)
    }
}

type Answer = Result<(StatusCode, Bytes), (StatusCode, String)>;

fn bad(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, e.to_string())
}

fn failed(e: std::io::Error) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `(offset, length)` of the range in header `name`: `PREFIX FIRST-LAST` with anything after.
fn range(req: &Request<Incoming>, name: &str, prefix: &str) -> Result<(u64, u64), (StatusCode, String)> {
    let value = req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let spec = value.strip_prefix(prefix).and_then(|s| s.split('/').next()).unwrap_or_default();
    let (first, last) = spec.split_once('-').ok_or_else(|| bad(format!("{name}: {value:?}")))?;
    let (first, last): (u64, u64) = (first.parse().map_err(bad)?, last.parse().map_err(bad)?);
    match last.checked_sub(first) {
        Some(span) if span < 64 << 20 => Ok((first, span + 1)),
        _ => Err(bad(format!("{name}: {value:?}"))),
    }
}

//! The GBS server: Tahoe-LAFS's HTTP storage protocol over TLS, in front of a
//! [`marsh_core::Backend`].
//!
//! Architecture invariant: this crate never sees wasmtime, a plugin binding or a store driver;
//! it speaks to storage only through `marsh_core::Backend`, and to accounting state (accounts,
//! leases, write enablers) only through `marsh_accountant::Accountant`.
//!
//! Transport: HTTP/1.1 over rustls, one self-signed certificate, no SNI or ALPN needed, as the
//! Tahoe 1.20 client connects. Slow or silent clients are cut off by header and body timeouts.

pub mod auth;
mod body;
mod clock;
pub mod gc;
mod mutable;
pub mod ranges;
mod reads;
mod redo;
mod response;
mod routes;
mod service;
mod uploads;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use clock::{Clock, ManualClock, SystemClock};
pub use response::ResponseBody;
pub use service::{MAX_MUTABLE_SHARE_SIZE, ServiceConfig, StartUpReport, StorageService, UPLOAD_IDLE_TIMEOUT};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

/// A rustls server configuration for one certificate and key (DER).
pub fn tls_config(cert_der: Vec<u8>, key_der: Vec<u8>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rustls::pki_types::CertificateDer::from(cert_der);
    let key = rustls::pki_types::PrivateKeyDer::try_from(key_der).map_err(|e| TlsError(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| TlsError(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `service` on `listener` over TLS until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, service: Arc<StorageService>) {
    let acceptor = TlsAcceptor::from(tls);
    let sweeper = {
        let service = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                service.abort_idle_uploads().await;
            }
        })
    };
    let _sweeper = AbortOnDrop(sweeper);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move { connection(acceptor, service, tcp, peer).await });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connection(acceptor: TlsAcceptor, service: Arc<StorageService>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "tls handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            return;
        }
    };
    let svc = service_fn(move |req| {
        let service = service.clone();
        async move { Ok::<_, std::convert::Infallible>(service.handle(req).await) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), svc)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

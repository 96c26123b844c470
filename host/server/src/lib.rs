//! The GBS server: Tahoe-LAFS's HTTP storage protocol over TLS, in front of a
//! [`marsh_core::Backend`].
//!
//! Architecture invariant: this crate never sees wasmtime, a plugin binding or a store driver;
//! it speaks to storage only through `marsh_core::Backend`, and to accounting state (accounts,
//! leases, write enablers) only through `marsh_accountant::Accountant`.
//!
//! Transport: HTTP/1.1 over rustls, one self-signed certificate, no SNI or ALPN needed, as the
//! Tahoe 1.20 client connects. Connections are capped in total and per peer address (one past
//! either is closed at once, before its handshake); slow or silent clients are cut off by the
//! handshake and header timeouts and by the least rate bodies and answers must keep
//! ([`Limits`]).

pub mod auth;
mod body;
mod clock;
pub mod gc;
mod limits;
pub mod metrics;
mod mutable;
mod offload;
mod paced;
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
pub use limits::{Limits, MAX_ADVISORY_REASON, RATE_GRACE};
pub use response::ResponseBody;
pub use service::{
    Capacity, MAX_MUTABLE_SHARE_SIZE, ServiceConfig, StartUpReport, StorageService, UPLOAD_IDLE_TIMEOUT,
};

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
    let limits = service.config.limits;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let peers = Arc::new(Peers::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before it was accepted: the
                // listener stays, and accepting resumes once connections close.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "refused a connection: {} open", limits.max_connections);
            continue;
        };
        let Some(counted) = peers.admit(peer.ip(), limits.max_connections_per_peer) else {
            tracing::debug!(%peer, "refused a connection: {} open from this address", limits.max_connections_per_peer);
            continue;
        };
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            let _held = (slot, counted);
            let metrics = service.metrics().clone();
            metrics.connection(true);
            connection(acceptor, service, tcp, peer, &limits).await;
            metrics.connection(false);
        });
    }
}

/// Connections open per peer address.
#[derive(Debug, Default)]
struct Peers(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection counted against its peer address until dropped.
struct PeerConnection {
    peers: Arc<Peers>,
    ip: std::net::IpAddr,
}

impl Peers {
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<PeerConnection> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerConnection { peers: self.clone(), ip })
    }
}

impl Drop for PeerConnection {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connection(
    acceptor: TlsAcceptor,
    service: Arc<StorageService>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: &Limits,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
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
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(paced::Paced::new(tls, limits::MinRate::new(limits.min_rate))), svc)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

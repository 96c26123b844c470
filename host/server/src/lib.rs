//! The GBS server: Tahoe-LAFS's HTTP storage protocol over TLS, in front of a
//! [`marsh_core::Backend`].
//!
//! Architecture invariant: this crate never sees wasmtime, a plugin binding or a store driver;
//! it speaks to storage only through `marsh_core::Backend`, and to accounting state (accounts,
//! leases, write enablers) only through `marsh_accountant::Accountant`.
//!
//! Transport: HTTP/1.1 over rustls, one self-signed certificate, no SNI or ALPN needed, as the
//! Tahoe 1.20 client connects. Connections are capped in total and per peer (an IPv4 address,
//! an IPv6 /64); at the total cap a connection that has not finished its handshake, or one
//! with no request in flight, is let go to admit a new one, and only when every connection is
//! busy is the new one closed at once (`conns.rs`). Slow or silent clients are cut off by the
//! handshake and header timeouts and by the least rate bodies and answers must keep
//! ([`Limits`]). Several listeners, TCP or Unix sockets ([`Listener`]), share the one total.

pub mod auth;
mod body;
pub mod budget;
mod clock;
mod conns;
mod error;
pub mod gc;
mod limits;
mod listen;
pub mod metrics;
mod mutable;
mod offload;
mod paced;
pub mod ranges;
mod reads;
mod redo;
mod response;
mod rollback;
mod routes;
mod service;
mod tls;
mod uploads;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use clock::{Clock, ManualClock, SystemClock};
use conns::{ConnHandle, ConnTable, Refused};
pub use limits::{Limits, MAX_ADVISORY_REASON, RATE_GRACE};
use listen::Stream;
pub use listen::{Listener, Peer, bind_unix_socket};
pub use mutable::{SlotGuard, SlotLocks};
pub use response::ResponseBody;
pub use service::{
    Capacity, MAX_MUTABLE_SHARE_SIZE, ServiceConfig, StartUpReport, StorageService, UPLOAD_IDLE_TIMEOUT,
};
pub use tls::{TlsError, tls_config};

/// Serve `service` on `listener` over TLS until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, service: Arc<StorageService>) {
    serve_on(vec![Listener::Tcp(listener)], tls, service).await;
}

/// Serve `service` on every one of `listeners` at once, under one cap on connections.
pub async fn serve_on(listeners: Vec<Listener>, tls: Arc<rustls::ServerConfig>, service: Arc<StorageService>) {
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
    let table = ConnTable::new(limits.max_connections, limits.max_connections_per_peer);
    let loops = listeners.into_iter().map(|l| accept_loop(l, acceptor.clone(), service.clone(), table.clone()));
    futures::future::join_all(loops).await;
}

async fn accept_loop(listener: Listener, acceptor: TlsAcceptor, service: Arc<StorageService>, table: Arc<ConnTable>) {
    let limits = service.config.limits;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before it was accepted: the
                // listener stays, and accepting resumes once connections close.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = match table.admit(peer.ip()) {
            Ok((handle, evicted)) => {
                if evicted {
                    service.metrics().connection_evicted();
                }
                handle
            }
            Err(refused) => {
                service.metrics().connection_refused();
                match refused {
                    Refused::Full => {
                        tracing::debug!(%peer, "refused a connection: {} open, each busy with a request", limits.max_connections)
                    }
                    Refused::PeerFull => {
                        tracing::debug!(%peer, "refused a connection: {} open from this peer", limits.max_connections_per_peer)
                    }
                }
                continue;
            }
        };
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            let metrics = service.metrics().clone();
            metrics.connection(true);
            connection(acceptor, service, stream, peer, &limits, handle).await;
            metrics.connection(false);
        });
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
    stream: Stream,
    peer: Peer,
    limits: &Limits,
    handle: ConnHandle,
) {
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "tls handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out");
                return;
            }
        },
        () = handle.evicted() => {
            tracing::debug!(%peer, "let go before its tls handshake, to admit another connection");
            return;
        }
    };
    handle.handshaken();
    let requests = handle.requests();
    let svc = service_fn(move |req| {
        let (service, in_flight) = (service.clone(), requests.begin());
        async move {
            let response = service.handle(req).await;
            // In flight until its answer is sent in full (or abandoned).
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_frame(body, move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(paced::Paced::new(tls, limits::MinRate::new(limits.min_rate))), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = handle.evicted() => {
            tracing::debug!(%peer, "let go while idle, to admit another connection");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

//! Where connections come from: TCP, or a Unix socket (for a Tor onion service's
//! `HiddenServicePort` or a reverse proxy on the same machine). TLS and GBS run the same over
//! both.
//!
//! A Unix socket has no peer address: every connection through it comes from the one local
//! relay, so it is not held to the per-address cap (only to the node's total).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// `IP:PORT`.
    Tcp(TcpListener),
    /// `unix:/path`.
    Unix(UnixListener, PathBuf),
}

/// Who is at the other end.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A TCP peer.
    Ip(SocketAddr),
    /// Whoever connected through the Unix socket at this path.
    Local(PathBuf),
}

impl Peer {
    /// The address the per-address cap counts, if any.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Ip(a) => Some(a.ip()),
            Peer::Local(_) => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(a) => a.fmt(f),
            Peer::Local(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One accepted connection.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// Bind a Unix socket at `path`. A socket file left by a previous process that nobody
    /// answers on is replaced; anything else there (a live socket, a file) is an error.
    pub async fn bind_unix(path: &Path) -> io::Result<Listener> {
        Ok(Listener::Unix(bind_unix_socket(path).await?, path.to_owned()))
    }

    pub(crate) async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                // Small answers go out at once rather than after the peer's delayed ACK.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Peer::Ip(peer)))
            }
            Listener::Unix(l, path) => Ok((Stream::Unix(l.accept().await?.0), Peer::Local(path.clone()))),
        }
    }
}

/// Bind a Unix socket at `path`, replacing a socket file a previous process left that nobody
/// answers on; anything else there (a live socket, a file) is an error.
pub async fn bind_unix_socket(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        let stale = meta.file_type().is_socket() && UnixStream::connect(path).await.is_err();
        if !stale {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "something else is there"));
        }
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("gbs.sock");
        let first = Listener::bind_unix(&path).await.unwrap();
        // Live: someone answers there.
        assert_eq!(Listener::bind_unix(&path).await.unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(first);
        // Stale: the file is left, nobody answers.
        assert!(path.exists());
        let again = Listener::bind_unix(&path).await.unwrap();
        let client = tokio::spawn({
            let path = path.clone();
            async move { UnixStream::connect(&path).await.unwrap() }
        });
        let (_, peer) = again.accept().await.unwrap();
        assert_eq!((peer.ip(), peer.to_string()), (None, format!("unix:{}", path.display())));
        client.await.unwrap();
        // A plain file is never taken for a socket.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(Listener::bind_unix(&file).await.is_err());
        assert!(file.exists());
    }
}

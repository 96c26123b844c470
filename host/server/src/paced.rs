//! [`Paced`]: a connection's byte stream that cuts off a peer which stops reading. hyper has no
//! write timeout: an answer queued to a client that never reads would hold its connection, its
//! descriptor and the chunk in flight forever. While a write (or flush) waits on the peer, the
//! peer must keep [`Limits::min_rate`](crate::Limits::min_rate) over every window, or the write
//! fails with `TimedOut` and hyper closes the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::MinRate;

/// A stream whose writes must keep a least rate.
#[derive(Debug)]
pub(crate) struct Paced<T> {
    inner: T,
    rate: MinRate,
    /// Since when a write has been waiting on the peer.
    waiting_since: Option<tokio::time::Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Paced<T> {
    pub(crate) fn new(inner: T, rate: MinRate) -> Self {
        let timer = Box::pin(tokio::time::sleep(rate.allowance()));
        Paced { inner, rate, waiting_since: None, timer }
    }

    /// The write is waiting on the peer: fail once the window's waiting runs out.
    fn stalled<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.waiting_since.is_none() {
            let now = tokio::time::Instant::now();
            self.waiting_since = Some(now);
            let deadline = now + self.rate.allowance();
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the peer reads slower than the least rate")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Paced<T> {
    /// The peer took what was waiting: the wait counts against the window.
    fn progressed(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.rate.waited(since.elapsed());
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Paced<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T> Paced<T> {
    /// Account for what a write (plain or vectored) returned.
    fn wrote(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                self.progressed();
                self.rate.moved(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.stalled(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Paced<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(cx, polled)
    }

    // Passed through: without it hyper copies every body chunk into one buffer before the
    // TLS layer copies it again to encrypt it.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.progressed();
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_cut_off_and_one_that_reads_is_not() {
        // A pipe of 64 KiB the other end never reads.
        let (writer, _unread) = tokio::io::duplex(64 << 10);
        let mut paced = Paced::new(writer, MinRate::with_window(1 << 20, Duration::from_millis(100)));
        let err = paced.write_all(&vec![0; 1 << 20]).await.expect_err("cut off");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // The vectored path (hyper's, over TLS) is paced the same.
        let (writer, _unread) = tokio::io::duplex(64 << 10);
        let mut paced = Paced::new(writer, MinRate::with_window(1 << 20, Duration::from_millis(100)));
        let chunk = vec![0; 16 << 10];
        let err = loop {
            match paced.write_vectored(&[io::IoSlice::new(&chunk), io::IoSlice::new(&chunk)]).await {
                Ok(n) => assert!(n > 0, "a write moves bytes or fails"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (writer, mut reader) = tokio::io::duplex(64 << 10);
        let drain = tokio::spawn(async move { tokio::io::copy(&mut reader, &mut tokio::io::sink()).await });
        let mut paced = Paced::new(writer, MinRate::with_window(1 << 10, Duration::from_millis(100)));
        paced.write_all(&vec![0; 4 << 20]).await.expect("a reader keeps the pace");
        drop(paced);
        assert_eq!(drain.await.expect("join").expect("copy"), 4 << 20);
    }
}

//! [`Limits`]: what one request, connection, peer or account may take from the server, each
//! stated and configurable (the node reads them from `http.*` and `storage.*`), so the server
//! keeps serving within them whatever a grid member sends.

use std::time::Duration;

/// The server's limits. The defaults serve a real Tahoe-LAFS client with room to spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; at it, a new connection evicts one that has not finished its
    /// handshake or has no request in flight, and is closed at once only if every one is busy.
    pub max_connections: usize,
    /// Connections open at once from one peer (an IPv4 address, an IPv6 /64).
    pub max_connections_per_peer: usize,
    /// Time for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for a request's head.
    pub header_timeout: Duration,
    /// Least bytes per second a request body must arrive at, and an answer be read at,
    /// measured over windows of [`RATE_GRACE`]; a slower peer is cut off.
    pub min_rate: u64,
    /// CBOR data items in one request body, counted before anything is decoded.
    pub cbor_items: usize,
    /// Bytes all request bodies held whole may take at once ([`crate::budget`]).
    pub body_memory: u64,
    /// Bytes a read-test-write's read vector may return, over every share of the slot.
    pub rtw_read_bytes: u64,
    /// The largest immutable share an allocation may ask for (on S3, where free space is
    /// unknown, the only bound on what one allocation reserves).
    pub max_share_size: u64,
    /// Immutable uploads open at once, in total.
    pub open_uploads: usize,
    /// Immutable uploads open at once for one account (anonymous is one account).
    pub open_uploads_per_account: usize,
    /// Lease records one share may carry (one per renew secret).
    pub leases_per_share: usize,
    /// Corruption advisories kept for one share.
    pub advisories_per_share: u64,
    /// Corruption advisories kept in all.
    pub advisories: u64,
}

/// The window [`Limits::min_rate`] is measured over: a peer that moves less than
/// `min_rate` × this many bytes in one window is cut off at its end.
pub const RATE_GRACE: Duration = Duration::from_secs(10);

/// The longest reason kept from a corruption advisory (longer ones are cut).
pub const MAX_ADVISORY_REASON: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_peer: 64,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            min_rate: 4096,
            cbor_items: crate::wire::MAX_ITEMS,
            body_memory: 256 << 20,
            rtw_read_bytes: 16 << 20,
            max_share_size: 64 << 30,
            open_uploads: 10_000,
            open_uploads_per_account: 1_000,
            leases_per_share: 1_000,
            advisories_per_share: 16,
            advisories: 10_000,
        }
    }
}

/// A transfer that must keep [`Limits::min_rate`]: while the server waits on the peer (for
/// body bytes, or for room to write an answer), the peer must move `rate` bytes for every second
/// of waiting, in windows of [`RATE_GRACE`] of waiting: a window closes (and a new one starts)
/// once its quota of bytes has moved, and a peer still short of the quota when the window's
/// waiting runs out is cut off. Past speed buys no credit (a reader that took 64 MiB at full
/// speed and then stops is cut off one window later), a trickle cannot stretch a window, and
/// time nobody waits on the peer (an idle kept-alive connection, the server's own work) does
/// not count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MinRate {
    waited: Duration,
    bytes: u64,
    quota: u64,
    window: Duration,
}

impl MinRate {
    pub(crate) fn new(rate: u64) -> Self {
        MinRate::with_window(rate, RATE_GRACE)
    }

    pub(crate) fn with_window(rate: u64, window: Duration) -> Self {
        let quota = (rate.max(1) as f64 * window.as_secs_f64()).ceil() as u64;
        MinRate { waited: Duration::ZERO, bytes: 0, quota: quota.max(1), window }
    }

    /// Count `n` more bytes moved.
    pub(crate) fn moved(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
        if self.bytes >= self.quota {
            self.bytes = 0;
            self.waited = Duration::ZERO;
        }
    }

    /// Count time spent waiting on the peer.
    pub(crate) fn waited(&mut self, d: Duration) {
        self.waited = self.waited.saturating_add(d);
    }

    /// How much longer the server may wait on the peer in this window.
    pub(crate) fn allowance(&self) -> Duration {
        self.window.saturating_sub(self.waited)
    }

    /// Wait for `f` on the peer's account; `None` if the window's waiting ran out first.
    pub(crate) async fn wait<F: Future>(&mut self, f: F) -> Option<F::Output> {
        let started = tokio::time::Instant::now();
        let out = tokio::time::timeout(self.allowance(), f).await.ok();
        self.waited(started.elapsed());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_once_its_quota_is_met_and_earns_no_credit() {
        let mut rate = MinRate::with_window(1000, Duration::from_secs(10));
        rate.waited(Duration::from_secs(4));
        rate.moved(9_999);
        assert_eq!(rate.allowance(), Duration::from_secs(6), "under the quota: the same window");
        rate.moved(1);
        assert_eq!(rate.allowance(), Duration::from_secs(10), "quota met: a new window");
        // A million bytes at once buys one window, not a thousand seconds.
        rate.moved(1_000_000);
        assert_eq!(rate.allowance(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_wait_past_the_window_gives_up_and_a_trickle_does_not_keep_it() {
        let mut rate = MinRate::with_window(1_000_000, Duration::from_millis(50));
        assert_eq!(rate.wait(std::future::pending::<()>()).await, None);
        let mut trickle = MinRate::with_window(1_000_000, Duration::from_millis(50));
        let started = tokio::time::Instant::now();
        while trickle.wait(tokio::time::sleep(Duration::from_millis(5))).await.is_some() {
            trickle.moved(1);
            assert!(started.elapsed() < Duration::from_secs(5), "one byte at a time kept the window open");
        }
        assert_eq!(MinRate::new(1).wait(async { 7 }).await, Some(7));
    }
}

//! Publishing to a Tahoe-LAFS introducer: `getReferenceByName(swissnum)` on the introducer's
//! tub, then `publish_v2((msg, sig, key), canary)` on the reference it answers, with a canary
//! the introducer may hold (a `my-reference` to an object it never calls). The introducer keeps
//! announcements in memory only, so [`keep_published`] holds the connection, and after any
//! failure (an introducer restart included) dials again with backoff and jitter and publishes
//! again. Its [`Status`] is what the operator sees.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::furl::Furl;
use crate::object::{Limits, Value};
use crate::session::{self, FoolscapError, Timeouts, Tub};

/// The clid of this side's canary on every connection: the first (only) object it offers.
const CANARY_CLID: u64 = 1;

/// A signed announcement as `publish_v2` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// UTF-8 JSON.
    pub msg: Vec<u8>,
    /// `v0-` and the base32 signature.
    pub sig: String,
    /// `v0-` and the base32 public key.
    pub key: String,
}

/// Publish `announcement` over `conn` to the introducer published as `name`.
pub async fn publish(
    conn: &mut session::Connection,
    name: &str,
    announcement: &Announcement,
) -> Result<(), FoolscapError> {
    let introducer = conn.get_reference(name).await?;
    let ann = Value::tuple([
        Value::Bytes(announcement.msg.clone()),
        Value::bytes(&announcement.sig),
        Value::bytes(&announcement.key),
    ]);
    let canary = Value::seq("my-reference", [Value::Int(CANARY_CLID), Value::bytes("")]);
    // Positionally: the introducer's method names its parameters otherwise than its interface.
    let answer = conn.call(introducer, "publish_v2", &[ann, canary], &[]).await?;
    match answer.as_seq() {
        Some((b"none", [])) => Ok(()),
        _ => Err(FoolscapError::Unexpected(format!("publish_v2 answered {}", answer.describe(200)))),
    }
}

/// One introducer connection as the operator sees it.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The introducer's fURL, swissnum elided.
    pub furl: String,
    /// Connected and published since then; `None` while not connected.
    pub connected_since: Option<SystemTime>,
    /// The hint that answered last.
    pub reached: Option<String>,
    /// The last successful publication.
    pub last_publish: Option<SystemTime>,
    /// How many times it has been published (once per connection).
    pub publishes: u64,
    /// The last failure and when.
    pub last_error: Option<(SystemTime, String)>,
    /// When the next attempt is due, while waiting to dial again.
    pub next_attempt: Option<SystemTime>,
}

/// A connection that stayed up this long was a good one: the next failure waits only
/// [`Backoff::first`] again.
pub const STABLE: Duration = Duration::from_secs(60);

/// The failures in a row after a connection that published and lasted `lasted` (`None`: it
/// never published): counted afresh only after a [`STABLE`] one.
fn failures_after(failures: u32, lasted: Option<Duration>) -> u32 {
    match lasted {
        Some(d) if d >= STABLE => 0,
        _ => failures.saturating_add(1),
    }
}

/// How [`keep_published`] paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first wait after a failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { first: Duration::from_secs(1), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The wait after `failures` failures in a row: doubling from `first` up to `max`, then
    /// scaled by a random factor in [0.5, 1) so that nodes restarted together spread out.
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self.first.saturating_mul(1u32 << failures.min(20)).min(self.max);
        let mut r = [0u8; 2];
        let _ = getrandom::getrandom(&mut r);
        let jitter = 0.5 + f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 2.0;
        base.mul_f64(jitter.min(0.9999))
    }
}

/// Keep `announcement` published at `furl` for as long as the future runs: connect, publish,
/// hold the connection; after any failure, log it, record it in `status`, wait, and start
/// again. Never returns; drop (abort) it to stop.
pub async fn keep_published(
    furl: Furl,
    me: Tub,
    announcement: Announcement,
    timeouts: Timeouts,
    backoff: Backoff,
    status: Arc<Mutex<Status>>,
) {
    let update = |f: &dyn Fn(&mut Status)| {
        if let Ok(mut s) = status.lock() {
            f(&mut s);
        }
    };
    update(&|s| s.furl = furl.to_string());
    let mut failures = 0u32;
    loop {
        update(&|s| s.next_attempt = None);
        let outcome = async {
            let mut conn = session::connect(&furl, &me, timeouts, Limits::default()).await?;
            publish(&mut conn, &furl.name, &announcement).await?;
            let reached = conn.reached.to_string();
            tracing::info!(introducer = %furl, via = %reached, "published the storage announcement");
            update(&|s| {
                let now = SystemTime::now();
                s.connected_since = Some(now);
                s.last_publish = Some(now);
                s.publishes += 1;
                s.reached = Some(reached.clone());
            });
            conn.serve().await
        };
        let error = match outcome.await {
            Ok(()) => FoolscapError::Closed,
            Err(e) => e,
        };
        // Connected-since is set by a publication and cleared below after every failure. Only a
        // connection that lasted starts the backoff afresh: an introducer that takes the
        // publication and hangs up at once is dialled with the backoff of any other failure.
        let lasted = status.lock().ok().and_then(|s| s.connected_since).and_then(|t| t.elapsed().ok());
        failures = failures_after(failures, lasted);
        let wait = backoff.delay(failures);
        tracing::warn!(introducer = %furl, error = %error, retry_in_ms = wait.as_millis() as u64, "introducer connection");
        update(&|s| {
            let now = SystemTime::now();
            s.connected_since = None;
            s.last_error = Some((now, error.to_string()));
            s.next_attempt = Some(now + wait);
        });
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_introducer_that_hangs_up_after_each_publication_is_dialled_ever_more_slowly() {
        let b = Backoff::default();
        let mut failures = 0;
        // Published, and hung up a moment later, ten times over.
        for _ in 0..10 {
            failures = failures_after(failures, Some(Duration::from_millis(50)));
        }
        assert_eq!(failures, 10);
        assert!(b.delay(failures) >= Duration::from_secs(150), "at the cap, not every second");
        // A connection that lasted starts afresh; one that never published counts too.
        assert_eq!(failures_after(failures, Some(STABLE)), 0);
        assert_eq!(failures_after(0, None), 1);
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_below_each_step() {
        let b = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(300) };
        for (failures, base) in [(0, 1), (1, 2), (3, 8), (8, 256), (9, 300), (40, 300)] {
            for _ in 0..20 {
                let d = b.delay(failures);
                let base = Duration::from_secs(base);
                assert!(d >= base / 2 && d < base, "{failures}: {d:?} vs {base:?}");
            }
        }
    }
}

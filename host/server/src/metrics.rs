//! [`Metrics`]: what the server counts as it serves, for the web listener's `/metrics` and
//! Tahoe's `/statistics`.
//!
//! Two shapes of the same events. Tahoe's: a counter and the last 1,000 latencies per storage
//! operation (`allocate`, `write`, `close`, `abort`, `read`, `get`, `add-lease`, `writev`,
//! `readv`), from which [`Metrics::tahoe`] gives the mean and the percentiles the 1.20 server
//! reports, under its names. Prometheus's: requests by endpoint and status, a latency histogram
//! per endpoint, bytes in and out, and connections. Recording is a few atomic adds and, for the
//! latency window, one short uncontended lock; nothing grows with traffic.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::routes::Route;

/// Tahoe's storage operations, in the 1.20 server's spelling.
pub const TAHOE_OPS: [&str; 9] = ["allocate", "write", "close", "abort", "read", "get", "add-lease", "writev", "readv"];

/// The endpoints requests are counted under.
pub const ENDPOINTS: [&str; 13] = [
    "version",
    "allocate",
    "write",
    "abort",
    "immutable-read",
    "immutable-list",
    "immutable-corrupt",
    "lease",
    "read-test-write",
    "mutable-read",
    "mutable-list",
    "mutable-corrupt",
    "unknown",
];

/// Upper bounds of the latency histogram buckets, in seconds (`+Inf` follows).
pub const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Latencies kept per Tahoe operation, as the reference keeps.
const WINDOW: usize = 1000;

/// The percentiles the reference reports: (fraction, name, fewest samples for it to be given).
const PERCENTILES: [(f64, &str, usize); 7] = [
    (0.01, "01_0_percentile", 100),
    (0.1, "10_0_percentile", 10),
    (0.5, "50_0_percentile", 10),
    (0.9, "90_0_percentile", 10),
    (0.95, "95_0_percentile", 20),
    (0.99, "99_0_percentile", 100),
    (0.999, "99_9_percentile", 1000),
];

/// An endpoint and the Tahoe operation a request to it is.
pub(crate) fn classify(route: Option<&Route>) -> (usize, Option<usize>) {
    let op = |name: &str| TAHOE_OPS.iter().position(|o| *o == name);
    let endpoint = |name: &str| ENDPOINTS.iter().position(|e| *e == name).unwrap_or(ENDPOINTS.len() - 1);
    let (e, o) = match route {
        Some(Route::Version) => ("version", None),
        Some(Route::Allocate(_)) => ("allocate", op("allocate")),
        Some(Route::Write(..)) => ("write", op("write")),
        Some(Route::Abort(..)) => ("abort", op("abort")),
        Some(Route::ImmutableRead(..)) => ("immutable-read", op("read")),
        Some(Route::ImmutableList(_)) => ("immutable-list", op("get")),
        Some(Route::ImmutableCorrupt(..)) => ("immutable-corrupt", None),
        Some(Route::Lease(_)) => ("lease", op("add-lease")),
        Some(Route::ReadTestWrite(_)) => ("read-test-write", op("writev")),
        Some(Route::MutableRead(..)) => ("mutable-read", op("readv")),
        Some(Route::MutableList(_)) => ("mutable-list", None),
        Some(Route::MutableCorrupt(..)) => ("mutable-corrupt", None),
        None => ("unknown", None),
    };
    (endpoint(e), o)
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// The server's counters. One per service; shared with the connection tasks.
#[derive(Debug)]
pub struct Metrics {
    tahoe_counts: [AtomicU64; TAHOE_OPS.len()],
    tahoe_window: Mutex<Vec<VecDeque<f64>>>,
    requests: Mutex<BTreeMap<(usize, u16), u64>>,
    latency: Vec<Histogram>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    connections_evicted: AtomicU64,
    connections_refused: AtomicU64,
    rolled_back: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            tahoe_counts: Default::default(),
            tahoe_window: Mutex::new(vec![VecDeque::new(); TAHOE_OPS.len()]),
            requests: Mutex::default(),
            latency: (0..ENDPOINTS.len()).map(|_| Histogram::default()).collect(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_evicted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            rolled_back: AtomicU64::new(0),
        }
    }
}

/// What a Tahoe operation's latencies come to, as the reference computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TahoeLatency {
    /// `samplesize`.
    pub samples: usize,
    /// `mean`: `None` under two samples.
    pub mean: Option<f64>,
    /// `(name, value)`: each `None` with too few samples to tell.
    pub percentiles: Vec<(&'static str, Option<f64>)>,
}

/// A snapshot of Tahoe's shape: `storage_server.NAME` counters and latencies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TahoeFigures {
    /// `(operation, count)` for each operation seen.
    pub counters: Vec<(&'static str, u64)>,
    /// `(operation, latencies)` for each operation with samples.
    pub latencies: Vec<(&'static str, TahoeLatency)>,
}

impl Metrics {
    /// One request answered: its endpoint and Tahoe operation ([`classify`]), status and time.
    pub(crate) fn request(&self, (endpoint, op): (usize, Option<usize>), status: u16, took: Duration) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry((endpoint, status)).or_default() += 1;
        let seconds = took.as_secs_f64();
        let h = &self.latency[endpoint];
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add(took.as_micros().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(op) = op {
            self.tahoe(op, seconds);
        }
    }

    /// A Tahoe operation with no endpoint of its own (`close`: the write that completed a share).
    pub(crate) fn tahoe_op(&self, name: &str, took: Duration) {
        if let Some(op) = TAHOE_OPS.iter().position(|o| *o == name) {
            self.tahoe(op, took.as_secs_f64());
        }
    }

    fn tahoe(&self, op: usize, seconds: f64) {
        self.tahoe_counts[op].fetch_add(1, Ordering::Relaxed);
        let mut window = self.tahoe_window.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut window[op];
        if w.len() == WINDOW {
            w.pop_front();
        }
        w.push_back(seconds);
    }

    /// Request body bytes received.
    pub(crate) fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Response body bytes sent.
    pub(crate) fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A connection let go, before its handshake or while idle, to admit another.
    pub(crate) fn connection_evicted(&self) {
        self.connections_evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection refused at the caps.
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection accepted (`true`) or closed.
    pub(crate) fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.fetch_add(1, Ordering::Relaxed);
            self.connections_total.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A read or read-test-write refused: the store held an older mutable share than this
    /// node wrote (`rollback`).
    pub(crate) fn rolled_back(&self) {
        self.rolled_back.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed).max(0) as u64
    }

    /// Requests answered so far, by endpoint and status.
    pub fn requests(&self) -> Vec<(&'static str, u16, u64)> {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.iter().map(|((e, s), n)| (ENDPOINTS[*e], *s, *n)).collect()
    }

    /// Tahoe's figures: counters of the operations seen and their latency statistics.
    pub fn tahoe_figures(&self) -> TahoeFigures {
        let counters = TAHOE_OPS
            .iter()
            .zip(&self.tahoe_counts)
            .map(|(name, c)| (*name, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect();
        let window = self.tahoe_window.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let latencies = TAHOE_OPS
            .iter()
            .zip(window)
            .filter(|(_, w)| !w.is_empty())
            .map(|(name, w)| {
                let mut samples: Vec<f64> = w.into_iter().collect();
                samples.sort_by(f64::total_cmp);
                let n = samples.len();
                let mean = (n > 1).then(|| samples.iter().sum::<f64>() / n as f64);
                let percentiles = PERCENTILES
                    .iter()
                    .map(|(p, name, fewest)| (*name, (n >= *fewest).then(|| samples[(p * n as f64) as usize])))
                    .collect();
                (*name, TahoeLatency { samples: n, mean, percentiles })
            })
            .collect();
        TahoeFigures { counters, latencies }
    }

    /// The server's own series in Prometheus text (with `# HELP` and `# TYPE`).
    pub fn prometheus(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP marsh_requests_total GBS requests answered, by endpoint and status.");
        let _ = writeln!(out, "# TYPE marsh_requests_total counter");
        for (endpoint, status, n) in self.requests() {
            let _ = writeln!(out, "marsh_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP marsh_request_duration_seconds Time to answer a GBS request, by endpoint.");
        let _ = writeln!(out, "# TYPE marsh_request_duration_seconds histogram");
        for (endpoint, h) in ENDPOINTS.iter().zip(&self.latency) {
            let count = h.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "marsh_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ =
                writeln!(out, "marsh_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {count}");
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "marsh_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {sum}");
            let _ = writeln!(out, "marsh_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {count}");
        }
        let counters = [
            ("marsh_received_bytes_total", "Request body bytes received.", self.bytes_in.load(Ordering::Relaxed)),
            ("marsh_sent_bytes_total", "Response body bytes sent.", self.bytes_out.load(Ordering::Relaxed)),
            ("marsh_connections_total", "TLS connections accepted.", self.connections_total.load(Ordering::Relaxed)),
            (
                "marsh_connections_evicted_total",
                "Connections let go at the cap (before their TLS handshake, or idle) to admit another.",
                self.connections_evicted.load(Ordering::Relaxed),
            ),
            (
                "marsh_connections_refused_total",
                "Connections refused at the caps (every connection busy, or the peer's cap reached).",
                self.connections_refused.load(Ordering::Relaxed),
            ),
            (
                "marsh_rolled_back_refusals_total",
                "Requests refused because the store held an older version of a mutable share than this node wrote.",
                self.rolled_back.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let _ = writeln!(out, "# HELP marsh_connections_open TLS connections open now.");
        let _ =
            writeln!(out, "# TYPE marsh_connections_open gauge\nmarsh_connections_open {}", self.connections_open());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_reference_and_need_enough_samples() {
        let m = Metrics::default();
        let allocate = (1, Some(0));
        for ms in 1..=10 {
            m.request(allocate, 200, Duration::from_millis(ms));
        }
        let f = m.tahoe_figures();
        assert_eq!(f.counters, [("allocate", 10)]);
        let (name, l) = &f.latencies[0];
        assert_eq!((*name, l.samples), ("allocate", 10));
        assert!((l.mean.unwrap() - 0.0055).abs() < 1e-9);
        let p = |n: &str| l.percentiles.iter().find(|(k, _)| *k == n).unwrap().1;
        // samples[int(0.5 * 10)] = the sixth smallest, as the reference indexes.
        assert_eq!(p("50_0_percentile"), Some(0.006));
        assert_eq!(p("90_0_percentile"), Some(0.010));
        assert_eq!(p("99_0_percentile"), None, "100 samples needed");
        // The window keeps the newest 1,000.
        for _ in 0..1500 {
            m.tahoe_op("allocate", Duration::from_secs(1));
        }
        let f = m.tahoe_figures();
        assert_eq!(f.counters, [("allocate", 1510)]);
        assert_eq!(f.latencies[0].1.samples, 1000);
        assert_eq!(f.latencies[0].1.mean, Some(1.0));
    }

    #[test]
    fn the_prometheus_text_counts_by_endpoint_status_and_bucket() {
        let m = Metrics::default();
        let version = classify(Some(&Route::Version));
        m.request(version, 200, Duration::from_micros(500));
        m.request(version, 200, Duration::from_millis(30));
        m.request(classify(None), 404, Duration::from_micros(10));
        m.bytes_out(100);
        m.connection(true);
        let mut text = String::new();
        m.prometheus(&mut text);
        for line in [
            "marsh_requests_total{endpoint=\"version\",status=\"200\"} 2",
            "marsh_requests_total{endpoint=\"unknown\",status=\"404\"} 1",
            "marsh_request_duration_seconds_bucket{endpoint=\"version\",le=\"0.001\"} 1",
            "marsh_request_duration_seconds_bucket{endpoint=\"version\",le=\"0.025\"} 1",
            "marsh_request_duration_seconds_bucket{endpoint=\"version\",le=\"0.05\"} 2",
            "marsh_request_duration_seconds_bucket{endpoint=\"version\",le=\"+Inf\"} 2",
            "marsh_request_duration_seconds_count{endpoint=\"version\"} 2",
            "marsh_sent_bytes_total 100",
            "marsh_connections_open 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(m.tahoe_figures().counters.is_empty(), "version is no Tahoe operation");
    }
}

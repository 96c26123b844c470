//! The web listener of a running node, scraped as Prometheus, a Tahoe dashboard, a load
//! balancer and a person would: after known traffic, the figures are the traffic's; what a
//! client wrote is escaped; the token guards the machine endpoints and not the probe. (The
//! probe's 503 is tested in `marsh-web`: a directory store answers from its open descriptor
//! whatever happens to its path, and a root test process passes every permission check.)

#![allow(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::{Fixture, TestNode, free_port};
use ciborium::value::Value;
use http::{Method, StatusCode};
use marsh_gbs_client::{Secrets, encode, rtw_body, text};

const SI: &str = "aeaqcaibaeaqcaibaeaqcaibae";
const SLOT: &str = "afaqcaibaeaqcaibaeaqcaibae";

/// A plain HTTP/1.1 GET: status, headers (lowercased names), body.
pub(crate) fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    raw_get(addr, path, &token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default())
}

/// A plain HTTP/1.1 GET with an `Authorization` header: status, headers, body.
fn get_with(addr: SocketAddr, path: &str, authorization: &str) -> (u16, String, String) {
    raw_get(addr, path, &format!("Authorization: {authorization}\r\n"))
}

/// A plain HTTP/1.1 GET with `auth` (header lines) added.
fn raw_get(addr: SocketAddr, path: &str, auth: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: marsh\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

/// The value of the sample line `name` (with its labels) in a Prometheus or OpenMetrics text.
pub(crate) fn sample(text: &str, name: &str) -> f64 {
    let line = text.lines().find(|l| l.rsplit_once(' ').is_some_and(|(n, _)| n == name));
    line.unwrap_or_else(|| panic!("no {name} in\n{text}")).rsplit_once(' ').unwrap().1.parse().unwrap()
}

/// Each `(sample, value)` is in `text` with that value.
fn expect(text: &str, samples: &[(&str, f64)]) {
    for (name, value) in samples {
        assert_eq!(sample(text, name), *value, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_known_traffic_reads_that_traffic() {
    let node = TestNode::with(&[("persistence.max-delay", "1")]);
    let web = format!("127.0.0.1:{}", free_port());
    node.set("web.listen", &web);
    let addr: SocketAddr = web.parse().unwrap();
    let running = node.start();
    let mut client = running.client().await;
    client.upload(SI, 0, &Secrets::from_seed(1), &[7; 1000]).await.unwrap();
    let slot = Secrets::from_seed(2);
    let wrote = client.read_test_write(SLOT, &slot, rtw_body(0, &[], &[(0, &b"mutable"[..])], &[])).await.unwrap();
    assert_eq!(wrote.status, StatusCode::OK);
    assert_eq!(client.renew(SI, &Secrets::from_seed(3)).await.unwrap().status, StatusCode::NO_CONTENT);
    let read = client.call(Method::GET, &format!("immutable/{SI}/0"), &[], &[], Vec::new()).await.unwrap();
    assert_eq!(read.body.len(), 1000);
    let reason = "<script>alert('pwned')</script>";
    let advice = encode(&Value::Map(vec![(text("reason"), text(reason))]));
    let path = format!("immutable/{SI}/0/corrupt");
    assert_eq!(client.call(Method::POST, &path, &[], &[], advice).await.unwrap().status, StatusCode::OK);
    let held = node.accountant().stored_bytes().unwrap();

    let (status, _, body) = get(addr, "/health", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // Tahoe's names, as the 1.20 storage server reports these operations.
    let (status, head, om) = get(addr, "/statistics?t=openmetrics", None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"), "{head}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    expect(
        &om,
        &[
            ("tahoe_counters_storage_server_allocate", 1.0),
            ("tahoe_counters_storage_server_write", 1.0),
            ("tahoe_counters_storage_server_close", 1.0),
            ("tahoe_counters_storage_server_read", 1.0),
            ("tahoe_counters_storage_server_add_lease", 1.0),
            ("tahoe_counters_storage_server_writev", 1.0),
            ("tahoe_stats_storage_server_latencies_allocate_samplesize", 1.0),
            ("tahoe_stats_storage_server_disk_used", held as f64),
            ("tahoe_stats_storage_server_total_bucket_count", 2.0),
            ("tahoe_stats_storage_server_accepting_immutable_shares", 1.0),
            ("tahoe_stats_storage_server_allocated", 0.0),
        ],
    );
    // One sample: no mean, no percentile, as the reference says with `NaN`.
    assert!(sample(&om, "tahoe_stats_storage_server_latencies_allocate_mean").is_nan());
    assert!(sample(&om, "tahoe_stats_storage_server_latencies_allocate{quantile=\"0.500\"}").is_nan());
    let (_, _, json) = get(addr, "/statistics?t=json", None);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["counters"]["storage_server.add-lease"], 1);
    let (_, _, storage) = get(addr, "/storage?t=json", None);
    let storage: serde_json::Value = serde_json::from_str(&storage).unwrap();
    assert_eq!(storage["bucket-counter"]["last-complete-bucket-count"], 2);
    assert_eq!(storage["stats"]["storage_server.disk_used"], held);

    // marsh's own series.
    let (status, head, metrics) = get(addr, "/metrics", None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    expect(
        &metrics,
        &[
            ("marsh_requests_total{endpoint=\"allocate\",status=\"200\"}", 1.0),
            ("marsh_requests_total{endpoint=\"write\",status=\"201\"}", 1.0),
            ("marsh_requests_total{endpoint=\"read-test-write\",status=\"200\"}", 1.0),
            ("marsh_request_duration_seconds_count{endpoint=\"immutable-read\"}", 1.0),
            ("marsh_shares{kind=\"immutable\"}", 1.0),
            ("marsh_shares{kind=\"mutable\"}", 1.0),
            ("marsh_held_bytes", held as f64),
            ("marsh_corruption_advisories_total", 1.0),
            ("marsh_accounts", 1.0),
            ("marsh_readonly", 0.0),
        ],
    );
    assert!(sample(&metrics, "marsh_plugin_calls_total{role=\"backend\",plugin=\"backend-disk\"}") >= 5.0);
    assert_eq!(sample(&metrics, "marsh_plugin_faults_total{role=\"backend\",plugin=\"backend-disk\"}"), 0.0);
    assert!(sample(&metrics, "marsh_plugin_calls_total{role=\"persistence\",plugin=\"persistence-local\"}") >= 1.0);
    // The persister hands the accounting changes over within its second.
    let mut handed = 0.0;
    for _ in 0..100 {
        handed = sample(&get(addr, "/metrics", None).2, "marsh_persisted_changes_total");
        if handed > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(handed > 0.0, "nothing handed over");
    let metrics = get(addr, "/metrics", None).2;
    assert!(sample(&metrics, "marsh_last_persisted_timestamp_seconds") > 1.7e9);
    assert_eq!(sample(&metrics, "marsh_persistence_unpersisted_changes"), 0.0);
    assert_eq!(sample(&metrics, "marsh_sweeps_total"), 0.0, "the first sweep is a minute away");
    assert!(sample(&metrics, "marsh_received_bytes_total") >= 1000.0);
    assert!(sample(&metrics, "marsh_sent_bytes_total") >= 1000.0);
    assert!(metrics.contains("# TYPE marsh_request_duration_seconds histogram"));

    // The page for people: the figures, and the advisory's text escaped.
    let (status, head, page) = get(addr, "/", None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(!page.contains("<script>") && page.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"));
    assert!(page.contains("<td class=\"n\" id=\"immutable\">1</td>"), "{page}");
    assert_eq!(get(addr, "/nothing", None).0, 404);

    // The same figures in a terminal.
    let status = node.ok(&["status"]);
    for line in [
        format!("serving      yes; status page at http://{addr}/"),
        "shares       1 immutable, 1 mutable, in 2 storage indexes".to_owned(),
        "accounts     1".to_owned(),
        "advisories   1 (marsh advisories list)".to_owned(),
        "persistence  persistence-local; ".to_owned(),
        "now          0 uploads in progress, ".to_owned(),
    ] {
        assert!(status.contains(&line), "{line} missing from\n{status}");
    }
    assert!(status.contains(&format!("space        held {}, available ", marsh_web::page::bytes(held))), "{status}");

    // The operator reads the advisory, acts on it and clears it; the figures follow.
    let listed = node.ok(&["advisories", "list"]);
    assert!(listed.contains(&format!("immutable {SI} 0 <script>alert(\\'pwned\\')</script>")), "{listed}");
    assert!(listed.ends_with("1 corruption advisories\n"), "{listed}");
    assert_eq!(node.ok(&["advisories", "clear", SLOT]), "cleared 0 corruption advisories\n");
    assert_eq!(node.ok(&["advisories", "clear", SI, "0"]), "cleared 1 corruption advisories\n");
    assert_eq!(sample(&get(addr, "/metrics", None).2, "marsh_corruption_advisories_total"), 0.0);
    assert!(!node.marsh(&["advisories", "clear", "not-an-si"]).status.success());

    drop(running);

    let status = node.ok(&["status"]);
    assert!(status.contains("serving      no answer from the node ("), "{status}");

    // Logs for a collector: one JSON object per line.
    let running = node.start_args(&["--log-format", "json", "--verbose"], &[]).unwrap();
    assert_eq!(get(addr, "/health", None).0, 200);
    let logs = running.stop();
    let lines: Vec<serde_json::Value> = logs.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["message"].as_str().is_some_and(|m| m.starts_with("status page, /metrics and /health at"))),
        "{logs}"
    );

    // With a token, everything but the probe wants it, as a bearer token or as the password
    // a browser asks for.
    let token_file = node.scratch("metrics-token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    node.set("web.metrics-token-file", token_file.to_str().unwrap());
    let running = node.start();
    for path in ["/metrics", "/statistics?t=openmetrics", "/storage?t=json", "/"] {
        assert_eq!(get(addr, path, None).0, 401, "{path}");
        assert_eq!(get(addr, path, Some("wrong")).0, 401, "{path}");
        assert_eq!(get(addr, path, Some("s3cret-token")).0, 200, "{path}");
    }
    let (status, head, _) = get(addr, "/", None);
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: basic realm=\"marsh\""), "{head}");
    let basic = format!("Basic {}", data_encoding::BASE64.encode(b"operator:s3cret-token"));
    assert_eq!(get_with(addr, "/", &basic).0, 200);
    assert_eq!(get(addr, "/health", None).0, 200);
    // `marsh status` asks the node through its socket, without the token, and gets the live
    // figures.
    let status = node.ok(&["status"]);
    assert!(status.contains("now          0 uploads in progress, "), "{status}");
    drop(running);
    // With the node stopped, whatever listens on the web port hears nothing from `marsh status`:
    // the token never leaves the machine's node directory.
    let impostor = std::net::TcpListener::bind(addr).unwrap();
    impostor.set_nonblocking(true).unwrap();
    let status = node.ok(&["status"]);
    assert!(status.contains("serving      no answer from the node ("), "{status}");
    assert!(impostor.accept().is_err(), "marsh status connected to the web port");
}

/// A real browser (Debian's `chromium`, headless; `MARSH_CHROMIUM` names another) renders the
/// status page of a node holding known data; the page as rendered holds its figures, and a
/// phone-sized screenshot is kept in `$CARGO_TARGET_DIR/test-artefacts/status-page.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_a_real_browser() {
    let chromium = std::env::var("MARSH_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let node = TestNode::new();
    let web = format!("127.0.0.1:{}", free_port());
    node.set("web.listen", &web);
    node.create_account("alice", &["--quota", "1GiB"]);
    let running = node.start();
    let mut client = running.client().await;
    for (n, size) in [(0, 1000), (1, 2000)] {
        client.upload(SI, n, &Secrets::from_seed(1), &vec![n as u8; size]).await.unwrap();
    }
    let url = format!("http://{web}/");
    let browser = |extra: &[&str]| {
        let profile = node.scratch(&format!("chromium-{}", extra.len()));
        let out = std::process::Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=412,900"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{chromium} did not run ({e}): the browser test needs Debian's chromium (`make test` installs it)"
                )
            });
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let dom = browser(&["--dump-dom"]);
    for figure in [
        "id=\"immutable\">2</td>",
        "id=\"mutable\">0</td>",
        "id=\"buckets\">1</td>",
        "id=\"held\">2.9 KiB</td>",
        "<td>alice</td>",
        "<td class=\"n\">1.0 GiB</td>",
    ] {
        assert!(dom.contains(figure), "{figure} missing from the rendered page:\n{dom}");
    }
    let artefacts = std::path::PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browser(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{} bytes", png.len());
    drop(running);
}

//! marsh-foolscap against a stock Tahoe-LAFS 1.20 introducer (`tahoe create-introducer`, from
//! the venv `make tahoe` installs; `MARSH_TAHOE` names another `tahoe`): publishing as the
//! side that decides and as the side that is decided for, a refused signature, and
//! re-publishing after the introducer restarts. What the introducer holds is read from its own
//! web API (`/?t=json`).

#![allow(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signer, SigningKey};
use marsh_foolscap::introducer::{self, Announcement, Status};
use marsh_foolscap::object::Limits;
use marsh_foolscap::session::{self, FoolscapError, Timeouts, Tub};
use marsh_foolscap::{Backoff, Furl};

fn tahoe() -> PathBuf {
    let path = std::env::var_os("MARSH_TAHOE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/marsh/tahoe-venv/bin/tahoe")
    });
    assert!(path.exists(), "{} is missing: run `make tahoe` (or set MARSH_TAHOE)", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A stock introducer on 127.0.0.1, stopped when dropped.
struct Introducer {
    dir: PathBuf,
    web: u16,
    child: Option<Child>,
    furl: Furl,
}

impl Introducer {
    fn create(root: &Path) -> Introducer {
        let dir = root.join("introducer");
        let port = free_port();
        let out = Command::new(tahoe())
            .args(["create-introducer", "--port", &format!("tcp:{port}:interface=127.0.0.1")])
            .args(["--location", &format!("tcp:127.0.0.1:{port}")])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let web = free_port();
        let cfg = dir.join("tahoe.cfg");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, text.replace("web.port = \n", &format!("web.port = tcp:{web}:interface=127.0.0.1\n")))
            .unwrap();
        let mut i = Introducer {
            dir,
            web,
            child: None,
            furl: "pb://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@tcp:x:1/x".parse().unwrap(),
        };
        i.start();
        i
    }

    fn start(&mut self) {
        // `tahoe run` stops when its stdin closes: keep a pipe open.
        let child = Command::new(tahoe())
            .arg("run")
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let furl_file = self.dir.join("private/introducer.furl");
        wait_for("the introducer's web API", || self.announcements().is_some());
        self.furl = std::fs::read_to_string(furl_file).unwrap().trim().parse().unwrap();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How many storage announcements the introducer holds, from its JSON status.
    fn announcements(&self) -> Option<u64> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.web)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /?t=json HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let body = raw.split_once("\r\n\r\n")?.1;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        Some(json["announcement_summary"]["storage"].as_u64().unwrap_or(0))
    }
}

impl Drop for Introducer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A tub whose id is above (or below) `than`, as asked: both sides of the decision occur.
fn tub(above: bool, than: &str) -> Tub {
    loop {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["marsh".into()]).unwrap().self_signed(&key).unwrap();
        let tub = Tub::new(cert.der().to_vec(), key.serialize_der());
        if (tub.tub_id() > than) == above {
            return tub;
        }
    }
}

fn b32(b: &[u8]) -> String {
    BASE32_NOPAD.encode(b).to_ascii_lowercase()
}

/// A storage announcement signed by a fresh key, as Tahoe signs one.
fn announcement(nickname: &str) -> Announcement {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    let key = SigningKey::from_bytes(&seed);
    let msg = serde_json::json!({
        "service-name": "storage", "version": 0, "nickname": nickname, "seqnum": 1, "nonce": "n",
        "anonymous-storage-FURL": "pb://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@tcp:127.0.0.1:1/x",
        "permutation-seed-base32": b32(&seed[..20]),
    })
    .to_string()
    .into_bytes();
    let sig = format!("v0-{}", b32(&key.sign(&msg).to_bytes()));
    Announcement { msg, sig, key: format!("v0-{}", b32(key.verifying_key().as_bytes())) }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_stock_introducer_takes_announcements_from_either_side_of_the_decision_and_refuses_a_bad_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let intro = Introducer::create(tmp.path());
    assert_eq!(intro.announcements(), Some(0));
    runtime().block_on(async {
        for (i, above) in [true, false].into_iter().enumerate() {
            let me = tub(above, &intro.furl.tub_id);
            let mut conn = session::connect(&intro.furl, &me, Timeouts::default(), Limits::default()).await.unwrap();
            introducer::publish(&mut conn, &intro.furl.name, &announcement(&format!("n{i}"))).await.unwrap();
            assert_eq!(intro.announcements(), Some(i as u64 + 1), "decides: {above}");
        }
        let mut forged = announcement("forged");
        forged.msg.push(b' ');
        let me = tub(true, &intro.furl.tub_id);
        let mut conn = session::connect(&intro.furl, &me, Timeouts::default(), Limits::default()).await.unwrap();
        let refused = introducer::publish(&mut conn, &intro.furl.name, &forged).await;
        assert!(matches!(refused, Err(FoolscapError::Remote(_))), "{refused:?}");
        assert_eq!(intro.announcements(), Some(2));

        let mut wrong = intro.furl.clone();
        wrong.tub_id = "a".repeat(32);
        let pinned = session::connect(&wrong, &me, Timeouts::default(), Limits::default()).await;
        assert!(pinned.is_err(), "a tub id the certificate does not hash to is refused");
        let mut unknown = intro.furl.clone();
        unknown.name = "not-the-swissnum".into();
        let mut conn = session::connect(&unknown, &me, Timeouts::default(), Limits::default()).await.unwrap();
        let missing = introducer::publish(&mut conn, &unknown.name, &announcement("x")).await;
        assert!(matches!(missing, Err(FoolscapError::Remote(_))), "{missing:?}");
    });
}

#[test]
fn an_announcement_is_published_again_after_the_introducer_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut intro = Introducer::create(tmp.path());
    let status = Arc::new(Mutex::new(Status::default()));
    let rt = runtime();
    let me = tub(false, &intro.furl.tub_id);
    let backoff = Backoff { first: Duration::from_millis(200), max: Duration::from_secs(2) };
    let timeouts = Timeouts { idle: Duration::from_secs(5), ..Timeouts::default() };
    let publisher = rt.spawn(introducer::keep_published(
        intro.furl.clone(),
        me,
        announcement("kept"),
        timeouts,
        backoff,
        status.clone(),
    ));
    let publishes = || status.lock().unwrap().publishes;
    let run_until = |what: &str, ok: &dyn Fn() -> bool| {
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !ok() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    run_until("the first publication", &|| publishes() == 1 && intro.announcements() == Some(1));
    // Idle past two PING intervals: the connection is kept (PING answered) and not redone.
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(12)).await });
    assert_eq!(publishes(), 1, "{:?}", status.lock().unwrap());
    assert!(status.lock().unwrap().connected_since.is_some());
    intro.stop();
    run_until("the lost connection to be noticed", &|| status.lock().unwrap().connected_since.is_none());
    assert!(status.lock().unwrap().last_error.is_some());
    intro.start();
    run_until("the second publication", &|| publishes() == 2 && intro.announcements() == Some(1));
    publisher.abort();
}

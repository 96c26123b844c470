//! `marsh init`, `marsh config` and `marsh announce`, run as an operator runs them.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{Fixture, TestNode, marsh, text};

fn init(dir: &Path) -> Output {
    marsh(&["init", "--dir", dir.to_str().expect("utf-8"), "--listen", "127.0.0.1:45678", "--nickname", "n1"])
}

#[test]
fn init_refuses_to_overwrite_a_node() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("node");
    let first = init(&dir);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("NURL: pb://"));
    let key = std::fs::read(dir.join("private/tls.key")).expect("key");
    let second = init(&dir);
    assert_eq!(second.status.code(), Some(2));
    assert!(text(&second.stderr).contains("refusing to overwrite"), "{}", text(&second.stderr));
    assert_eq!(std::fs::read(dir.join("private/tls.key")).expect("key"), key, "identity untouched");
}

/// A node made with `--listen IP:0` gets a port picked once, at init, so the NURL it prints,
/// announces and serves is one a client reaches, every time it starts; `config set` refuses
/// port 0 for the same reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_is_picked_once_and_the_nurl_is_one_a_client_reaches() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("node");
    let d = dir.to_str().expect("utf-8");
    let made = crate::common::ok(marsh(&["init", "--dir", d, "--listen", "127.0.0.1:0", "--web-listen", ""]));
    let listen = crate::common::ok(marsh(&["config", "get", "node.listen", "--dir", d]));
    let port: u16 = listen.trim().rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("a port");
    assert_ne!(port, 0, "{made}");
    assert!(made.contains(&format!("@127.0.0.1:{port}/")), "the NURL init printed names it: {made}");
    let announced = crate::common::ok(marsh(&["announce", "--dir", d]));
    assert!(announced.contains(&format!("@127.0.0.1:{port}/")), "{announced}");
    for _ in 0..2 {
        let running = marsh_testnode::Running::start(Path::new(crate::common::BINARY), &dir, &[], &[]).expect("serves");
        assert!(running.nurl.contains(&format!("@127.0.0.1:{port}/")), "{}", running.nurl);
        let mut client = running.client().await;
        let version = client.call(http::Method::GET, "version", &[], &[], vec![]).await.expect("version");
        assert_eq!(version.status, http::StatusCode::OK);
    }
    let refused = marsh(&["config", "set", "node.listen", "0.0.0.0:0", "--dir", d]);
    assert!(
        !refused.status.success() && text(&refused.stderr).contains("a port other than 0"),
        "{}",
        text(&refused.stderr)
    );
    // A node an earlier marsh made with port 0: it serves, and its NURL names the port it got.
    let db = rusqlite::Connection::open(dir.join("node.sqlite")).expect("node.sqlite");
    db.execute("INSERT OR REPLACE INTO config (key, value) VALUES ('node.listen', '127.0.0.1:0')", []).expect("update");
    drop(db);
    let running = marsh_testnode::Running::start(Path::new(crate::common::BINARY), &dir, &[], &[]).expect("serves");
    let nurl = running.nurl();
    assert_ne!(nurl.port, 0, "{}", running.nurl);
    let mut client = running.client().await;
    assert_eq!(client.call(http::Method::GET, "version", &[], &[], vec![]).await.expect("version").status, 200);
}

#[test]
fn config_is_typed_and_explains_refusals() {
    let node = TestNode::new();
    node.set("storage.reserved-space", "2GiB");
    assert_eq!(node.ok(&["config", "get", "storage.reserved-space"]).trim(), "2GiB");
    let unknown = node.marsh(&["config", "set", "storage.reserve", "1G"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("valid keys: node.nickname"), "{}", text(&unknown.stderr));
    let bad = node.marsh(&["config", "set", "limits.instances", "many"]);
    assert!(text(&bad.stderr).contains("a whole number from 1"), "{}", text(&bad.stderr));
    let list = node.ok(&["config", "list"]);
    assert!(list.contains("storage.reserved-space = 2GiB"), "{list}");
    assert!(list.contains("limits.memory = 256Mi  (default)"), "{list}");
    node.ok(&["config", "unset", "storage.reserved-space"]);
    assert_eq!(node.ok(&["config", "get", "storage.reserved-space"]).trim(), "1G");
}

#[test]
fn announce_prints_a_servers_yaml_entry_the_client_accepts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("node");
    assert!(init(&dir).status.success());
    let out = text(&marsh(&["announce", "--dir", dir.to_str().expect("utf-8")]).stdout);
    let furl = out.lines().find_map(|l| l.trim().strip_prefix("anonymous-storage-FURL: ")).expect("furl line");
    let tub = furl.strip_prefix("pb://").and_then(|r| r.split('@').next()).expect("tub id");
    assert_eq!(tub.len(), 32, "a 20-byte base32 tub id: {furl}");
    assert!(
        out.lines()
            .any(|l| l.trim().starts_with("- pb://") && l.trim().ends_with("#v=1") && l.contains("@127.0.0.1:45678/")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.trim().starts_with("v0-") && l.trim().ends_with(':')), "{out}");
    assert!(out.contains("nickname: n1") && out.contains("permutation-seed-base32: "), "{out}");
}

/// `marsh run` takes the hard open-file limit, whatever soft limit it inherited.
#[test]
fn run_raises_its_open_file_limit_to_the_hard_limit() {
    use std::io::BufRead;
    let node = TestNode::new();
    let script = format!("ulimit -Sn 256 && exec '{}' run --dir '{}'", crate::common::BINARY, node.d());
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let _ = child.kill();
    let _ = child.wait();
    assert!(marsh_testnode::serving(&line).is_some(), "{line}");
    let row = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files");
    let fields: Vec<&str> = row.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "256", "the inherited soft limit was kept: {row}");
    assert_eq!(soft, hard, "{row}");
}

/// A `marsh` binary copied alone to another directory (no plugin files beside it, none named
/// by `MARSH_PLUGIN_DIR`) is a whole node: the first-party plugins it embeds serve a client,
/// and the node says it used them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_binary_is_a_whole_node() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let tmp = tempfile::tempdir().expect("tmp");
    let binary = tmp.path().join("bin/marsh");
    std::fs::create_dir_all(binary.parent().expect("bin")).expect("mkdir");
    std::fs::copy(crate::common::BINARY, &binary).expect("copy the binary");
    let dir = tmp.path().join("node");
    let d = dir.to_str().expect("utf-8");
    let marsh = |args: &[&str]| Command::new(&binary).args(args).env_remove("MARSH_PLUGIN_DIR").output().expect("run");
    let listen = format!("127.0.0.1:{}", crate::common::free_port());
    let out = marsh(&["init", "--dir", d, "--listen", &listen, "--web-listen", ""]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut child = Command::new(&binary)
        .args(["run", "--dir", d])
        .env_remove("MARSH_PLUGIN_DIR")
        .env("MARSH_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let Some(nurl) = marsh_testnode::serving(&line) else {
        child.wait().expect("wait");
        let mut err = String::new();
        child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
        panic!("the copied binary did not serve: {line}{err}");
    };
    let mut client = marsh_gbs_client::GbsClient::connect(&nurl.parse().expect("nurl")).await.expect("connect");
    let secrets = marsh_gbs_client::Secrets::from_seed(1);
    client.upload("aeaqcaibaeaqcaibaeaqcaibae", 0, &secrets, b"from an embedded plugin").await.expect("upload");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    child.wait().expect("wait");
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    for file in ["backend_disk.wasm", "persistence_local.wasm"] {
        assert!(err.contains(&format!("plugin {file}: the copy embedded in this binary")), "{err}");
    }
}

/// `marsh upgrade` on a node made before signing keys: a key, a new server id in `marsh
/// announce`, the same NURL; a second run has nothing to do.
#[test]
fn upgrade_gives_an_old_node_a_signing_key_and_keeps_its_nurl() {
    let node = TestNode::new();
    assert!(node.ok(&["upgrade"]).contains("is up to date"));
    // As the previous release left a node: no key file, a random server id.
    let legacy = "v0-aaaabbbbccccddddeeeeffffgggghhhhiiiijjjjkkkkllllmmmm";
    std::fs::remove_file(node.dir().join("private/node.privkey")).expect("rm key");
    let db = rusqlite::Connection::open(node.dir().join("node.sqlite")).expect("db");
    db.execute("UPDATE identity SET value = ?1 WHERE key = 'server-id'", [legacy]).expect("update");
    drop(db);
    let before = node.ok(&["announce"]);
    assert!(before.contains(&format!("{legacy}:")), "{before}");
    let upgraded = node.ok(&["upgrade"]);
    assert!(upgraded.contains(&format!("server id: {legacy} -> v0-")), "{upgraded}");
    let after = node.ok(&["announce"]);
    assert!(!after.contains(legacy), "{after}");
    let nurl = |a: &str| a.lines().find(|l| l.trim().starts_with("- pb://")).map(str::to_owned);
    assert_eq!(nurl(&after), nurl(&before), "the NURL is unchanged");
    assert!(node.ok(&["upgrade"]).contains("is up to date"));
}

/// `introducer.furls` takes only fURLs this node can dial; `storage.grid-manager-certificates`
/// reads the files when set and keeps the certificates in the config, so the announcement
/// carries them after the files are gone; a node without a signing key refuses to start with
/// introducers, naming the command that fixes it.
#[test]
fn introducers_and_grid_manager_certificates_are_checked_when_set() {
    let node = TestNode::new();
    let tub = "abcdefghijklmnopqrstuvwxyz234567";
    for bad in [
        "pb://short@tcp:h:1/n".to_owned(),
        format!("pb://{tub}@tor:x.onion:80/n"),
        format!("pb://{tub}@tcp:h:1/n,http://x"),
    ] {
        let out = node.marsh(&["config", "set", "introducer.furls", &bad]);
        assert!(!out.status.success(), "{bad} was taken");
        assert!(text(&out.stderr).contains("introducer fURLs pb://TUBID@tcp:HOST:PORT/NAME"), "{}", text(&out.stderr));
    }
    let furls = format!("pb://{tub}@tcp:127.0.0.1:1,example.org:2/swiss, pb://{tub}@tcp:[::1]:3/other");
    node.set("introducer.furls", &furls);

    let cert = node.scratch("node.cert");
    std::fs::write(
        &cert,
        r#"{"certificate": "{\"expires\": 1, \"public_key\": \"pub-v0-x\", \"version\": 1}", "signature": "abc"}"#,
    )
    .unwrap();
    let extra = node.scratch("extra.cert");
    std::fs::write(&extra, r#"{"certificate": "c", "signature": "s", "evil": 1}"#).unwrap();
    // An endless "file" is read no further than a certificate can be.
    for bad in [extra.to_str().unwrap(), "relative.cert", "/nonexistent/x.cert", "/dev/zero"] {
        let out = node.marsh(&["config", "set", "storage.grid-manager-certificates", bad]);
        assert!(!out.status.success(), "{bad} was taken");
        assert!(text(&out.stderr).contains("storage.grid-manager-certificates"), "{}", text(&out.stderr));
    }
    node.set("storage.grid-manager-certificates", cert.to_str().unwrap());
    std::fs::remove_file(&cert).unwrap();
    let signed: serde_json::Value = serde_json::from_str(&node.ok(&["announce", "--signed"])).unwrap();
    let msg: serde_json::Value = serde_json::from_str(signed["msg"].as_str().unwrap()).unwrap();
    assert_eq!(msg["grid-manager-certificates"][0]["signature"], "abc", "{msg}");
    let key = node.ok(&["announce", "--public-key"]);
    assert_eq!(key.trim(), format!("pub-{}", signed["key"].as_str().unwrap()));

    std::fs::remove_file(node.dir().join("private/node.privkey")).unwrap();
    let Err(e) = node.try_start() else { panic!("a node without a signing key started with introducers") };
    assert!(e.contains(&format!("run `marsh upgrade --dir {}`", node.d())), "{e}");
}

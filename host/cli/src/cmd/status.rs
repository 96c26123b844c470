//! `marsh status --dir NODE_DIR`: the status page's figures for a terminal. What the node
//! directory and the accounting database say is read here; whether the node serves, and what
//! only a running node knows (space available, connections), is asked of the node through
//! its socket in `cache/` (`web.sock`), never of whatever listens on the web port, so the
//! metrics token is never sent anywhere.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use marsh::Node;
use marsh::persistence::open_accountant;
use marsh_web::page::bytes;

/// A GET to the running node through its local socket: the body of a 200, or why not.
fn ask(socket: &Path, path: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: marsh\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.take(16 << 20).read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("a malformed answer")?;
    match head.split(' ').nth(1) {
        Some("200") => Ok(body.to_owned()),
        status => Err(format!("status {} {}", status.unwrap_or("?"), body.trim())),
    }
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).map(|v| v as u64)
}

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let node = Node::open(dir)?;
    let config = node.config();
    let db = marsh::web::accounting(&open_accountant(node.dir())?)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "node         {} ({})", config.nickname, node.identity().server_id)?;
    writeln!(out, "NURL         {}", node.nurl())?;
    let socket = marsh::web::local_socket(node.dir());
    let page = config.web_listen.map_or(String::new(), |addr| format!("; status page at http://{addr}/"));
    match ask(&socket, "/health") {
        Ok(_) => writeln!(out, "serving      yes{page}")?,
        Err(e) => writeln!(out, "serving      no answer from the node ({}: {e})", socket.display())?,
    }
    let live = ask(&socket, "/metrics").ok();
    let c = &config.capacity;
    let mut space = format!("held {}", bytes(db.held));
    if let Some(m) = live.as_deref() {
        if let Some(a) = sample(m, "marsh_available_bytes") {
            space += &format!(", available {}", bytes(a));
        }
        if let Some(f) = sample(m, "marsh_store_free_bytes") {
            space += &format!(", free on the store {}", bytes(f));
        }
    }
    space += &format!(", kept free {}", bytes(config.reserved_space));
    space += &c.max_bytes.map_or(", no cap".into(), |m| format!(", cap {}", bytes(m)));
    writeln!(out, "space        {space}{}", if c.readonly { ", READ-ONLY" } else { "" })?;
    let (immutable, mutable, buckets) = db.counts;
    writeln!(out, "shares       {immutable} immutable, {mutable} mutable, in {buckets} storage indexes")?;
    if let Some(m) = live.as_deref() {
        let (uploads, connections) = (sample(m, "marsh_open_uploads"), sample(m, "marsh_connections_open"));
        writeln!(
            out,
            "now          {} uploads in progress, {} connections",
            uploads.unwrap_or(0),
            connections.unwrap_or(0)
        )?;
    }
    writeln!(out, "accounts     {}", db.account_count)?;
    for a in &db.accounts {
        let quota = a.quota.map_or(String::new(), |q| format!(" of {}", bytes(q)));
        let state = if a.revoked {
            ", revoked"
        } else if a.write {
            ""
        } else {
            ", read-only"
        };
        writeln!(out, "  {:<20} {}{quota}, {} leases{state}", a.name, bytes(a.usage), a.leases)?;
    }
    writeln!(
        out,
        "persistence  {}; {} changes not handed over yet",
        match &config.persistence.plugin {
            marsh_node::PluginChoice::FirstParty(p) => p.package.to_owned(),
            marsh_node::PluginChoice::Native(n) => format!("native:{n}"),
            marsh_node::PluginChoice::File(f) => f.display().to_string(),
        },
        db.unpersisted
    )?;
    if !config.introducers.is_empty() {
        writeln!(out, "introducers  {}", config.introducers.len())?;
        for furl in &config.introducers {
            let series = format!("marsh_introducer_connected{{introducer=\"{furl}\"}}");
            let state = match live.as_deref().and_then(|m| sample(m, &series)) {
                Some(1) => "connected, announcement published",
                Some(_) => "not connected (the status page has the last error)",
                None => "unknown (no answer from the web listener)",
            };
            writeln!(out, "  {furl}  {state}")?;
        }
    }
    writeln!(out, "expiry       {}", if config.expire.enabled { "on" } else { "off" })?;
    writeln!(out, "advisories   {} (marsh advisories list)", db.advisories)?;
    Ok(ExitCode::SUCCESS)
}

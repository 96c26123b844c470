//! What people and Prometheus read: the status page (`/`), the statistics page
//! (`/statistics`), and `/metrics`.
//!
//! The pages are plain HTML with a little inline CSS, no script, readable on a phone. Every
//! text that came from outside (nicknames, account names, advisory reasons written by any
//! client) is escaped.

use std::fmt::Write as _;

use crate::{Figures, tahoe};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `text` safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Bytes as people read them: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60em;padding:1em;line-height:1.4;\
overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}th,td{text-align:left;padding:.25em .5em;\
border-bottom:1px solid #ddd;overflow-wrap:anywhere}td.n{text-align:right;font-variant-numeric:tabular-nums}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}.warn{color:#a40}";

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
}

fn row(out: &mut String, label: &str, value: &str, id: &str) {
    let _ = write!(out, "<tr><th>{label}</th><td class=\"n\" id=\"{id}\">{value}</td></tr>");
}

/// `/` (and `/storage`): the node at a glance.
pub fn status(f: &Figures) -> String {
    let mut out = String::new();
    head(&mut out, &format!("marsh: {}", f.nickname));
    let _ = write!(
        out,
        "<h1>{} <small>{}</small></h1><p>{} &middot; up {:.0} s</p>",
        escape(&f.nickname),
        escape(&f.version),
        escape(&f.server_id),
        f.uptime
    );
    let s = &f.space;
    out.push_str("<h2>Space</h2><table>");
    if s.readonly {
        out.push_str("<tr><th>mode</th><td class=\"warn\" id=\"readonly\">read-only</td></tr>");
    }
    row(&mut out, "held (shares)", &bytes(s.held), "held");
    row(&mut out, "available to clients", &bytes(s.available), "available");
    row(&mut out, "reserved for uploads", &bytes(s.allocated), "allocated");
    row(&mut out, "kept free (reserved-space)", &bytes(s.reserved), "reserved");
    row(&mut out, "cap (max-bytes)", &s.max_bytes.map_or("none".into(), bytes), "cap");
    row(&mut out, "free on the store", &s.store_free.map_or("unknown".into(), bytes), "store-free");
    out.push_str("</table><h2>Shares</h2><table>");
    let sh = &f.shares;
    row(&mut out, "immutable", &sh.immutable.to_string(), "immutable");
    row(&mut out, "mutable", &sh.mutable.to_string(), "mutable");
    row(&mut out, "storage indexes", &sh.buckets.to_string(), "buckets");
    row(&mut out, "uploads in progress", &sh.open_uploads.to_string(), "open-uploads");
    out.push_str("</table>");
    let _ = write!(
        out,
        "<h2>Accounts ({})</h2><table id=\"accounts\"><tr><th>name</th><th>holds</th><th>quota</th><th>leases</th><th></th></tr>",
        f.account_count
    );
    for a in &f.accounts {
        let state = if a.revoked {
            "revoked"
        } else if a.write {
            ""
        } else {
            "read-only"
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{state}</td></tr>",
            escape(&a.name),
            bytes(a.usage),
            a.quota.map_or("none".into(), bytes),
            a.leases
        );
    }
    out.push_str("</table><h2>Plugins</h2><table id=\"plugins\"><tr><th>role</th><th>name</th><th>calls</th><th>faults</th><th>last fault</th></tr>");
    for p in &f.plugins {
        let class = if p.faults > 0 { " class=\"warn\"" } else { "" };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\"{class}>{}</td><td>{}</td></tr>",
            escape(&p.role),
            escape(&p.name),
            p.calls,
            p.faults,
            escape(p.last_fault.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
    if !f.introducers.is_empty() {
        out.push_str("<h2>Introducers</h2><table id=\"introducers\"><tr><th>introducer</th><th>connected</th><th>last published</th><th>last error</th></tr>");
        let ago = |t: u64| format!("{} s ago", now().saturating_sub(t));
        for i in &f.introducers {
            let (class, connected) = match i.connected_since {
                Some(t) => ("", format!("yes, for {}", ago(t).trim_end_matches(" ago"))),
                None => (" class=\"warn\"", "no".to_owned()),
            };
            let error = i.last_error.as_ref().map_or(String::new(), |(t, e)| format!("{}: {}", ago(*t), e));
            let _ = write!(
                out,
                "<tr><td>{}</td><td{class}>{connected}</td><td>{}</td><td>{}</td></tr>",
                escape(&i.furl),
                i.last_publish.map_or("never".into(), ago),
                escape(&error)
            );
        }
        out.push_str("</table>");
    }
    if !f.fleet.is_empty() {
        let _ = write!(
            out,
            "<h2>Fleet ({} nodes)</h2><table id=\"fleet\"><tr><th>node</th><th>last seen</th><th>free</th><th>shares</th><th>holds</th></tr>",
            f.fleet.len()
        );
        for n in &f.fleet {
            let ago = now().saturating_sub(n.last_seen);
            // Silent for three report intervals (10 s each): not running.
            let class = if ago > 30 { " class=\"warn\"" } else { "" };
            let _ = write!(
                out,
                "<tr><td title=\"{}\">{}</td><td{class}>{ago} s ago</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                escape(&n.server_id),
                escape(&n.nickname),
                n.available.map_or("?".into(), bytes),
                n.shares,
                bytes(n.bytes)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Accounting and leases</h2><table>");
    row(&mut out, "persistence", &escape(&f.persistence), "persistence");
    let p = &f.periodic;
    let when = |t: Option<u64>| t.map_or("not yet".to_owned(), |t| format!("{} s ago", now().saturating_sub(t)));
    row(&mut out, "changes not handed over yet", &f.unpersisted.to_string(), "unpersisted");
    row(&mut out, "last handed over", &when(p.last_persisted), "last-persisted");
    row(&mut out, "hand-overs failed", &p.persist_failures.to_string(), "persist-failures");
    row(&mut out, "lease expiry", if f.expiry_enabled { "on" } else { "off" }, "expiry");
    row(&mut out, "last expiry pass", &when(p.last_expiry), "last-expiry");
    row(&mut out, "shares expired", &format!("{} ({})", p.expired, bytes(p.expired_bytes)), "expired");
    row(&mut out, "last sweep of leftovers", &when(p.last_sweep), "last-sweep");
    out.push_str("</table>");
    let _ = write!(out, "<h2>Corruption advisories ({})</h2>", f.advisories);
    if !f.recent_advisories.is_empty() {
        out.push_str("<table id=\"advisories\"><tr><th>at</th><th>share</th><th>reason</th></tr>");
        for a in &f.recent_advisories {
            let _ = write!(
                out,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
                a.at,
                escape(&a.share),
                escape(&a.reason)
            );
        }
        out.push_str("</table>");
    }
    out.push_str(
        "<p><a href=\"/statistics\">statistics</a> &middot; <a href=\"/metrics\">metrics</a></p></body></html>\n",
    );
    out
}

/// `/statistics`: Tahoe's counters and stats as a table.
pub fn statistics(f: &Figures) -> String {
    let (counters, stats) = tahoe::dicts(f);
    let mut out = String::new();
    head(&mut out, "marsh: statistics");
    out.push_str("<h1>Statistics</h1><table>");
    for (k, v) in counters {
        let _ = write!(out, "<tr><th>{}</th><td class=\"n\">{v}</td></tr>", escape(&k));
    }
    for (k, v) in stats {
        let v = match v {
            tahoe::Value::Int(n) => n.to_string(),
            tahoe::Value::Float(x) => format!("{x:.6}"),
            tahoe::Value::None => "-".into(),
        };
        let _ = write!(out, "<tr><th>{}</th><td class=\"n\">{v}</td></tr>", escape(&k));
    }
    out.push_str("</table></body></html>\n");
    out
}

/// A label value as Prometheus text wants it: `\\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// `/metrics`: marsh's series in Prometheus text.
pub fn prometheus(f: &Figures) -> String {
    let mut out = f.server_series.clone();
    let s = &f.space;
    gauge(&mut out, "marsh_held_bytes", "Bytes of the shares the node holds.", s.held);
    gauge(&mut out, "marsh_available_bytes", "What clients are told is available.", s.available);
    gauge(&mut out, "marsh_allocated_bytes", "Bytes reserved for uploads in progress.", s.allocated);
    gauge(&mut out, "marsh_reserved_bytes", "storage.reserved-space.", s.reserved);
    if let Some(cap) = s.max_bytes {
        gauge(&mut out, "marsh_max_bytes", "storage.max-bytes.", cap);
    }
    if let Some(free) = s.store_free {
        gauge(&mut out, "marsh_store_free_bytes", "Free bytes on the backend's store.", free);
    }
    gauge(&mut out, "marsh_readonly", "1 when storage.readonly is on.", u8::from(s.readonly));
    let _ = writeln!(out, "# HELP marsh_shares Shares held, by kind.\n# TYPE marsh_shares gauge");
    let _ = writeln!(out, "marsh_shares{{kind=\"immutable\"}} {}", f.shares.immutable);
    let _ = writeln!(out, "marsh_shares{{kind=\"mutable\"}} {}", f.shares.mutable);
    gauge(&mut out, "marsh_buckets", "Storage indexes with any share.", f.shares.buckets);
    gauge(&mut out, "marsh_open_uploads", "Immutable uploads in progress.", f.shares.open_uploads);
    gauge(&mut out, "marsh_accounts", "Accounts, the anonymous one included.", f.account_count);
    gauge(&mut out, "marsh_persistence_unpersisted_changes", "Accounting changes not handed over yet.", f.unpersisted);
    let _ = writeln!(
        out,
        "# HELP marsh_corruption_advisories_total Corruption advisories recorded.\n\
         # TYPE marsh_corruption_advisories_total counter\nmarsh_corruption_advisories_total {}",
        f.advisories
    );
    let plugin_series = [
        ("marsh_plugin_calls_total", "Calls made into a plugin.", 0),
        ("marsh_plugin_faults_total", "Plugin calls that ended in a fault (trap, deadline, memory cap).", 1),
        ("marsh_plugin_instances_total", "Plugin instances created: the first and each replacement.", 2),
    ];
    for (name, help, which) in plugin_series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in &f.plugins {
            let v = [p.calls, p.faults, p.instances][which];
            let _ = writeln!(out, "{name}{{role=\"{}\",plugin=\"{}\"}} {v}", label(&p.role), label(&p.name));
        }
    }
    if !f.introducers.is_empty() {
        let _ = writeln!(
            out,
            "# HELP marsh_introducer_connected Whether the node holds a connection to the introducer, its announcement published.\n\
             # TYPE marsh_introducer_connected gauge"
        );
        for i in &f.introducers {
            let _ = writeln!(
                out,
                "marsh_introducer_connected{{introducer=\"{}\"}} {}",
                label(&i.furl),
                u8::from(i.connected_since.is_some())
            );
        }
        let _ = writeln!(
            out,
            "# HELP marsh_introducer_publishes_total Publications of the announcement (one per connection).\n\
             # TYPE marsh_introducer_publishes_total counter"
        );
        for i in &f.introducers {
            let _ =
                writeln!(out, "marsh_introducer_publishes_total{{introducer=\"{}\"}} {}", label(&i.furl), i.publishes);
        }
    }
    let p = &f.periodic;
    for (name, help, v) in [
        ("marsh_persisted_changes_total", "Accounting changes handed to the persistence strategy.", p.persisted),
        ("marsh_persist_failures_total", "Hand-overs to the persistence strategy that failed.", p.persist_failures),
        ("marsh_sweeps_total", "Sweeps of leftovers of interrupted work.", p.sweeps),
        ("marsh_swept_total", "Leftovers the sweeps removed.", p.swept),
        ("marsh_expiry_passes_total", "Lease-expiry passes.", p.expiry_passes),
        ("marsh_expired_shares_total", "Shares deleted because every lease on them expired.", p.expired),
        ("marsh_expired_bytes_total", "Bytes of those shares.", p.expired_bytes),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    for (name, help, t) in [
        ("marsh_last_persisted_timestamp_seconds", "When the last hand-over succeeded.", p.last_persisted),
        ("marsh_last_sweep_timestamp_seconds", "When the last sweep ran.", p.last_sweep),
        ("marsh_last_expiry_timestamp_seconds", "When the last lease-expiry pass ran.", p.last_expiry),
    ] {
        if let Some(t) = t {
            gauge(&mut out, name, help, t);
        }
    }
    gauge(&mut out, "marsh_uptime_seconds", "Seconds since the node started.", f.uptime);
    let _ = writeln!(
        out,
        "# HELP marsh_cpu_seconds_total CPU seconds the process used.\n# TYPE marsh_cpu_seconds_total counter\n\
         marsh_cpu_seconds_total {}",
        f.cpu_seconds
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountRow, AdvisoryRow};

    #[test]
    fn what_clients_wrote_is_escaped() {
        let f = Figures {
            nickname: "<b>node</b>".into(),
            accounts: vec![AccountRow { name: "a\"lice".into(), ..AccountRow::default() }],
            advisories: 1,
            recent_advisories: vec![AdvisoryRow {
                at: 1,
                share: "immutable x 0".into(),
                reason: "<script>alert(1)</script>".into(),
            }],
            ..Figures::default()
        };
        let page = status(&f);
        assert!(!page.contains("<script>") && page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;b&gt;node&lt;/b&gt;") && page.contains("a&quot;lice"));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(
            (bytes(0), bytes(1023), bytes(1536), bytes(5 << 30)),
            ("0 B".into(), "1023 B".into(), "1.5 KiB".into(), "5.0 GiB".into())
        );
    }
}

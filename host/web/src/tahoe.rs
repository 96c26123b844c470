//! Tahoe-LAFS 1.20's statistics, by its names: `/statistics?t=openmetrics` (what the Grafana
//! dashboard for Tahoe nodes scrapes), `/statistics?t=json` and `/storage?t=json`.
//!
//! The reference builds a `counters` and a `stats` dict of dotted names
//! (`storage_server.allocate`, `storage_server.latencies.allocate.50_0_percentile`,
//! `storage_server.disk_avail`, ...); OpenMetrics turns dots into `_`, a percentile suffix into
//! a `quantile` label (`_50_0_percentile` becomes `{quantile="0.500"}`) and `None` into `NaN`,
//! prefixes `tahoe_counters_` or `tahoe_stats_`, sorts by name and ends with `# EOF`. The
//! reference leaves the `-` of `add-lease` in the name, which no scraper accepts; here it
//! becomes `_` (`tahoe_counters_storage_server_add_lease`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::Figures;

/// The content type the reference answers `t=openmetrics` with.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A stat's value: the reference's dict holds ints, floats and `None`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A whole number.
    Int(u64),
    /// A measured figure.
    Float(f64),
    /// Too few samples to tell.
    None,
}

/// The reference's `counters` and `stats` dicts for a storage node.
pub fn dicts(f: &Figures) -> (BTreeMap<String, u64>, BTreeMap<String, Value>) {
    let mut counters = BTreeMap::new();
    let mut stats = BTreeMap::new();
    for op in &f.operations {
        counters.insert(format!("storage_server.{}", op.name), op.count);
        let latency = |name: &str| format!("storage_server.latencies.{}.{name}", op.name);
        stats.insert(latency("samplesize"), Value::Int(op.samples as u64));
        stats.insert(latency("mean"), op.mean.map_or(Value::None, Value::Float));
        for (name, v) in &op.percentiles {
            stats.insert(latency(name), v.map_or(Value::None, Value::Float));
        }
    }
    let s = &f.space;
    stats.insert("storage_server.allocated".into(), Value::Int(s.allocated));
    stats.insert("storage_server.reserved_space".into(), Value::Int(s.reserved));
    // `disk_avail` is what the node will take: 0 when read-only, as the reference.
    stats.insert("storage_server.disk_avail".into(), Value::Int(s.available));
    if let Some(free) = s.store_free {
        stats.insert("storage_server.disk_free_for_nonroot".into(), Value::Int(free));
    }
    stats.insert("storage_server.disk_used".into(), Value::Int(s.held));
    stats.insert("storage_server.accepting_immutable_shares".into(), Value::Int(u64::from(s.available > 0)));
    if f.shares.buckets > 0 {
        stats.insert("storage_server.total_bucket_count".into(), Value::Int(f.shares.buckets));
    }
    stats.insert("node.uptime".into(), Value::Float(f.uptime));
    stats.insert("cpu_monitor.total".into(), Value::Float(f.cpu_seconds));
    for (minutes, average) in [1, 5, 15].iter().zip(f.cpu_averages) {
        if let Some(a) = average {
            stats.insert(format!("cpu_monitor.{minutes}min_avg"), Value::Float(a));
        }
    }
    (counters, stats)
}

/// A dotted name as an OpenMetrics name (see the module documentation).
pub fn mangle(name: &str) -> String {
    let flat = name.replace(['.', '-'], "_");
    // `_DD_D_percentile` at the end becomes a quantile label.
    if let Some(head) = flat.strip_suffix("_percentile")
        && head.len() > 5
    {
        let (rest, digits) = head.split_at(head.len() - 5);
        let d = digits.as_bytes();
        if d[0] == b'_' && d[1].is_ascii_digit() && d[2].is_ascii_digit() && d[3] == b'_' && d[4].is_ascii_digit() {
            return format!("{rest}{{quantile=\"0.{}{}{}\"}}", d[1] as char, d[2] as char, d[4] as char);
        }
    }
    flat
}

fn text(v: Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::None => "NaN".into(),
    }
}

/// `/statistics?t=openmetrics`.
pub fn openmetrics(f: &Figures) -> String {
    let (counters, stats) = dicts(f);
    let mut out = String::new();
    for (k, v) in &counters {
        let _ = writeln!(out, "tahoe_counters_{} {v}", mangle(k));
    }
    for (k, v) in &stats {
        let _ = writeln!(out, "tahoe_stats_{} {}", mangle(k), text(*v));
    }
    out.push_str("# EOF\n");
    out
}

fn json_value(v: Value) -> serde_json::Value {
    match v {
        Value::Int(n) => n.into(),
        Value::Float(x) => serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::None => serde_json::Value::Null,
    }
}

/// `/statistics?t=json`: `{"counters": {...}, "stats": {...}}`.
pub fn json(f: &Figures) -> String {
    let (counters, stats) = dicts(f);
    let stats: serde_json::Map<String, serde_json::Value> =
        stats.into_iter().map(|(k, v)| (k, json_value(v))).collect();
    let body = serde_json::json!({ "counters": counters, "stats": stats });
    serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"
}

/// `/storage?t=json`: the storage server's stats, its bucket counter and what marsh can say
/// of its lease checker (expiry runs as a periodic pass, not a crawler with cycles).
pub fn storage_json(f: &Figures) -> String {
    let (_, stats) = dicts(f);
    let stats: serde_json::Map<String, serde_json::Value> =
        stats.into_iter().filter(|(k, _)| k.starts_with("storage_server.")).map(|(k, v)| (k, json_value(v))).collect();
    let body = serde_json::json!({
        "stats": stats,
        "bucket-counter": { "last-complete-bucket-count": f.shares.buckets },
        "lease-checker": { "expiration-enabled": f.expiry_enabled },
        "lease-checker-progress": {},
    });
    serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Operation, Space};

    #[test]
    fn names_are_mangled_as_the_reference_does_and_made_valid() {
        assert_eq!(mangle("storage_server.allocate"), "storage_server_allocate");
        assert_eq!(
            mangle("storage_server.latencies.allocate.50_0_percentile"),
            "storage_server_latencies_allocate{quantile=\"0.500\"}"
        );
        assert_eq!(
            mangle("storage_server.latencies.add-lease.99_9_percentile"),
            "storage_server_latencies_add_lease{quantile=\"0.999\"}"
        );
        assert_eq!(
            mangle("storage_server.latencies.read.01_0_percentile"),
            "storage_server_latencies_read{quantile=\"0.010\"}"
        );
        assert_eq!(mangle("storage_server.latencies.read.mean"), "storage_server_latencies_read_mean");
    }

    #[test]
    fn openmetrics_is_sorted_typed_by_prefix_and_ends_with_eof() {
        let f = Figures {
            space: Space { available: 5000, reserved: 7, held: 1011, allocated: 0, ..Space::default() },
            operations: vec![Operation {
                name: "add-lease".into(),
                count: 3,
                samples: 3,
                mean: Some(0.5),
                percentiles: vec![("50_0_percentile".into(), None)],
            }],
            ..Figures::default()
        };
        let text = openmetrics(&f);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"tahoe_counters_storage_server_add_lease 3"));
        assert_eq!(lines.last(), Some(&"# EOF"));
        for line in [
            "tahoe_stats_storage_server_latencies_add_lease{quantile=\"0.500\"} NaN",
            "tahoe_stats_storage_server_latencies_add_lease_mean 0.5",
            "tahoe_stats_storage_server_latencies_add_lease_samplesize 3",
            "tahoe_stats_storage_server_disk_avail 5000",
            "tahoe_stats_storage_server_reserved_space 7",
            "tahoe_stats_storage_server_accepting_immutable_shares 1",
        ] {
            assert!(lines.contains(&line), "{line} missing from\n{text}");
        }
        // In the order of the reference's dotted names, as it sorts them before mangling.
        let names: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("tahoe_stats_"))
            .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
            .collect();
        let expected: Vec<String> = dicts(&f).1.keys().map(|k| mangle(k)).collect();
        assert_eq!(names, expected);
        let json: serde_json::Value = serde_json::from_str(&json(&f)).unwrap();
        assert_eq!(json["counters"]["storage_server.add-lease"], 3, "JSON keeps the reference's names");
        assert_eq!(json["stats"]["storage_server.latencies.add-lease.50_0_percentile"], serde_json::Value::Null);
    }
}

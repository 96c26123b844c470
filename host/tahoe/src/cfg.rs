//! `tahoe.cfg` and the small files beside it, as Tahoe-LAFS 1.20 reads them: an INI file
//! (Python's `configparser`, lenient: sections, `key = value` or `key: value`, keys in any letter
//! case, values trimmed, `#` and `;` comment lines, indented lines continuing a value, `%%` for
//! a percent sign), the introducers of `private/introducers.yaml`, and the forms of sizes and
//! durations its `[storage]` keys take. And the writing of a `tahoe.cfg` a stock node accepts:
//! only sections and keys it knows (an unknown one stops it from starting).

use std::collections::BTreeMap;

/// A parsed `tahoe.cfg`: section -> key -> value, keys lowercased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TahoeCfg {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl TahoeCfg {
    /// Parse the text of a `tahoe.cfg` (a byte-order mark allowed).
    pub fn parse(text: &str) -> TahoeCfg {
        let mut cfg = TahoeCfg::default();
        let mut section = String::new();
        let mut last: Option<String> = None;
        for line in text.trim_start_matches('\u{feff}').lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // A continuation of the value before.
                if let Some(key) = &last
                    && let Some(value) = cfg.sections.get_mut(&section).and_then(|s| s.get_mut(key))
                {
                    value.push('\n');
                    value.push_str(&unescape(trimmed));
                }
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                section = name.trim().to_owned();
                cfg.sections.entry(section.clone()).or_default();
                last = None;
                continue;
            }
            let split = trimmed.find(['=', ':']);
            let (key, value) = match split {
                Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
                None => (trimmed, ""),
            };
            let key = key.trim().to_ascii_lowercase();
            cfg.sections.entry(section.clone()).or_default().insert(key.clone(), unescape(value.trim()));
            last = Some(key);
        }
        cfg
    }

    /// `[section] key`, if set.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section).and_then(|s| s.get(&key.to_ascii_lowercase())).map(String::as_str)
    }

    /// Every `(section, key, value)`, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.sections.iter().flat_map(|(s, keys)| keys.iter().map(move |(k, v)| (s.as_str(), k.as_str(), v.as_str())))
    }

    /// `[section] key` as Tahoe's `getboolean`: `1/yes/true/on` or `0/no/false/off`.
    pub fn boolean(&self, section: &str, key: &str) -> Result<Option<bool>, String> {
        match self.get(section, key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("1" | "yes" | "true" | "on") => Ok(Some(true)),
            Some("0" | "no" | "false" | "off") => Ok(Some(false)),
            Some(other) => Err(format!("[{section}] {key} = {other:?} is not a boolean")),
        }
    }
}

fn unescape(v: &str) -> String {
    v.replace("%%", "%")
}

/// A size as `[storage] reserved_space` takes it: `<digits>[K|M|G|T|P|E][I][B]`, any case;
/// K, M, ... are powers of 1000, KI, MI, ... of 1024. Empty is 0.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_uppercase();
    if v.is_empty() {
        return Some(0);
    }
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let unit = unit.strip_suffix('B').unwrap_or(unit);
    let (prefix, base) = match unit.strip_suffix('I') {
        Some(p) => (p, 1024u64),
        None => (unit, 1000u64),
    };
    let exp = match prefix {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        "P" => 5,
        "E" => 6,
        _ => return None,
    };
    n.checked_mul(base.checked_pow(exp)?)
}

/// A duration as `expire.override_lease_duration` takes it: `<n> day(s)`, `<n> month(s)` or
/// `mo` (31 days), `<n> year(s)` (365 days); seconds.
pub fn parse_duration(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..digits].parse().ok()?;
    let unit = match v[digits..].trim() {
        "day" | "days" => 86_400,
        "month" | "months" | "mo" => 31 * 86_400,
        "year" | "years" => 365 * 86_400,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The fURLs of `private/introducers.yaml` (`introducers: NAME: furl: FURL`), in order: read
/// line by line for the `furl:` values (block or flow style), which is all the file holds.
pub fn introducer_furls(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.split_once("furl:").map(|(_, v)| v))
        .map(|v| v.trim().trim_end_matches('}').trim().trim_matches(['\'', '"']).to_owned())
        .filter(|v| v.starts_with("pb://"))
        .collect()
}

/// `private/introducers.yaml` for `furls`, as `tahoe create-node --introducer` writes one.
pub fn introducers_yaml(furls: &[String]) -> String {
    let mut out = String::from("introducers:\n");
    for (i, furl) in furls.iter().enumerate() {
        let name = if i == 0 { "default".to_owned() } else { format!("introducer{i}") };
        out.push_str(&format!("  {name}:\n    furl: {furl}\n"));
    }
    out
}

/// What an exported node's `tahoe.cfg` says.
#[derive(Debug, Clone, Default)]
pub struct ExportCfg {
    /// `[node] nickname`.
    pub nickname: String,
    /// `[node] tub.port`, e.g. `tcp:3457:interface=0.0.0.0`.
    pub tub_port: String,
    /// `[node] tub.location`, e.g. `tcp:storage1.example.org:3457`.
    pub tub_location: String,
    /// `[storage]` keys and values (`readonly`, `reserved_space`, `expire.*`).
    pub storage: Vec<(String, String)>,
    /// `[grid_manager_certificates]` name -> file (beside `tahoe.cfg`).
    pub grid_manager_certificates: Vec<(String, String)>,
}

/// The text of a `tahoe.cfg` a stock 1.20 storage node starts with.
pub fn write_tahoe_cfg(cfg: &ExportCfg) -> String {
    let escape = |v: &str| v.replace('%', "%%");
    let mut out = String::new();
    out.push_str("# Written by `marsh export-tahoe`.\n[node]\n");
    out.push_str(&format!("nickname = {}\n", escape(&cfg.nickname)));
    out.push_str("web.port =\n");
    out.push_str(&format!("tub.port = {}\n", escape(&cfg.tub_port)));
    out.push_str(&format!("tub.location = {}\n", escape(&cfg.tub_location)));
    out.push_str("\n[client]\nhelper.furl =\n\n[storage]\nenabled = true\n");
    for (k, v) in &cfg.storage {
        out.push_str(&format!("{k} = {}\n", escape(v)));
    }
    if !cfg.grid_manager_certificates.is_empty() {
        out.push_str("grid_management = true\n\n[grid_manager_certificates]\n");
        for (name, file) in &cfg.grid_manager_certificates {
            out.push_str(&format!("{name} = {}\n", escape(file)));
        }
    }
    out.push_str("\n[helper]\nenabled = false\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: &str = "# -*- mode: conf; coding: utf-8 -*-\n\n[node]\nnickname = fixture1\nreveal-IP-address = true\nweb.port =\nweb.static = public_html\ntub.port = tcp:53955:interface=127.0.0.1\ntub.location = tcp:127.0.0.1:53955\n#log_gatherer.furl =\n\n[client]\n; comment\nhelper.furl =\nshares.needed = 3\n\n[storage]\nenabled = true\nreserved_space = 1G\nExpire.Enabled: True\nexpire.override_lease_duration = 60 days\n\n[helper]\nenabled = false\n";

    #[test]
    fn a_created_tahoe_cfg_reads_as_configparser_reads_it() {
        let cfg = TahoeCfg::parse(CREATED);
        assert_eq!(cfg.get("node", "nickname"), Some("fixture1"));
        assert_eq!(cfg.get("node", "tub.port"), Some("tcp:53955:interface=127.0.0.1"));
        assert_eq!(cfg.get("node", "web.port"), Some(""));
        assert_eq!(cfg.get("node", "log_gatherer.furl"), None, "commented out");
        assert_eq!(cfg.boolean("storage", "expire.enabled"), Ok(Some(true)), "keys in any case, `:` too");
        assert_eq!(cfg.get("storage", "expire.override_lease_duration").and_then(parse_duration), Some(60 * 86_400));
        assert_eq!(cfg.get("storage", "reserved_space").and_then(parse_size), Some(1_000_000_000));
        assert!(cfg.boolean("storage", "enabled").is_ok());
        let odd = TahoeCfg::parse("[node]\nnickname = 100%% sure\n  and more\n");
        assert_eq!(odd.get("node", "nickname"), Some("100% sure\nand more"));
    }

    #[test]
    fn sizes_and_durations_as_tahoe_takes_them() {
        for (v, n) in [("0", 0), ("", 0), ("1K", 1000), ("1KiB", 1024), ("2mb", 2_000_000), ("3GI", 3 << 30)] {
            assert_eq!(parse_size(v), Some(n), "{v}");
        }
        for bad in ["1X", "-1", "1 G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_duration("2 months"), Some(62 * 86_400));
        assert_eq!(parse_duration("1year"), Some(365 * 86_400));
        assert_eq!(parse_duration("forever"), None);
    }

    #[test]
    fn introducers_yaml_both_ways() {
        let yaml = "introducers:\n  default:\n    furl: pb://aaaa@tcp:h:1/x\n  other: {furl: 'pb://bbbb@tcp:h:2/y'}\n";
        assert_eq!(introducer_furls(yaml), ["pb://aaaa@tcp:h:1/x", "pb://bbbb@tcp:h:2/y"]);
        let written = introducers_yaml(&["pb://a@tcp:h:1/x".into(), "pb://b@tcp:h:2/y".into()]);
        assert_eq!(introducer_furls(&written), ["pb://a@tcp:h:1/x", "pb://b@tcp:h:2/y"]);
    }

    #[test]
    fn a_written_tahoe_cfg_reads_back() {
        let cfg = ExportCfg {
            nickname: "n 100%".into(),
            tub_port: "tcp:3457:interface=127.0.0.1".into(),
            tub_location: "tcp:127.0.0.1:3457".into(),
            storage: vec![("reserved_space".into(), "0".into()), ("readonly".into(), "false".into())],
            grid_manager_certificates: vec![("gm".into(), "gm.cert".into())],
        };
        let back = TahoeCfg::parse(&write_tahoe_cfg(&cfg));
        assert_eq!(back.get("node", "nickname"), Some("n 100%"));
        assert_eq!(back.get("storage", "reserved_space"), Some("0"));
        assert_eq!(back.boolean("storage", "grid_management"), Ok(Some(true)));
        assert_eq!(back.get("grid_manager_certificates", "gm"), Some("gm.cert"));
    }
}

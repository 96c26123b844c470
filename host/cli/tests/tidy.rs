//! ARCHITECTURE.md stays true: a tidy test over the repository, not over the node.
//!
//! - The code map (`### `PATH/` — crate `NAME``) names every workspace package, each under its
//!   own path and name, and nothing that does not exist; groups (`### `plugins/``) cover the
//!   packages below them.
//! - Every path in "Where things are tested" exists (`{a,b}` alternatives expanded).
//! - The dependency rules the map states hold, read from `cargo metadata`: who may compile the
//!   S3 driver, what the domain core and the protocol server must never depend on, and which
//!   packages use `anyhow`.
//! - The `marsh` package's files depend downward: each command file (`src/cmd/`) uses the
//!   library and never another command; the library's modules form no cycle and never use
//!   `anyhow` or the binary's modules.
//! - Every Rust file opens with a `//!` paragraph saying what it is for (a file `include!`d into
//!   others opens with a plain comment saying so).
//! - Every relative link in the Markdown the repository keeps resolves to a file, and every
//!   `make TARGET` the documentation names is a target of the Makefile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// Workspace packages: name -> (directory relative to the root, names of normal dependencies).
fn packages() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let root = root();
    let mut packages = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name").to_owned();
        let manifest = Path::new(p["manifest_path"].as_str().expect("manifest_path"));
        let dir = manifest.parent().expect("dir").strip_prefix(&root).expect("inside the repository");
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("dependency name").to_owned())
            .collect();
        packages.insert(name, (format!("{}/", dir.display()), deps));
    }
    packages
}

/// The code map's headings: `(path, Some(crate))` or `(path, None)` for a group or a file.
fn code_map(doc: &str) -> Vec<(String, Option<String>)> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .map(|rest| {
            let (path, tail) = rest.split_once('`').expect("a heading names a path in backticks");
            let name = tail.split_once("crate `").map(|(_, n)| n.trim_end_matches('`').to_owned());
            (path.to_owned(), name)
        })
        .collect()
}

#[test]
fn the_code_map_names_every_package_and_nothing_else() {
    let doc = architecture();
    let map = code_map(&doc);
    let packages = packages();
    for (path, name) in &map {
        assert!(root().join(path).exists(), "ARCHITECTURE.md maps `{path}`, which does not exist");
        if let Some(name) = name {
            let (dir, _) = packages
                .get(name)
                .unwrap_or_else(|| panic!("ARCHITECTURE.md names crate `{name}`, which is not a workspace package"));
            assert_eq!(dir, path, "crate `{name}` is at `{dir}`, not `{path}`");
        }
    }
    for (name, (dir, _)) in &packages {
        let named = map.iter().any(|(path, n)| n.as_deref() == Some(name.as_str()) && path == dir);
        let grouped = map.iter().any(|(path, n)| n.is_none() && dir.starts_with(path.as_str()));
        assert!(named || grouped, "workspace package `{name}` at `{dir}` is missing from ARCHITECTURE.md's code map");
    }
}

#[test]
fn every_tested_path_exists() {
    let doc = architecture();
    let table = doc.split("## Where things are tested").nth(1).expect("a \"Where things are tested\" section");
    let mut checked = 0;
    for row in table.lines().filter(|l| l.starts_with('|')) {
        let Some(place) = row.trim_end_matches('|').rsplit('|').next() else { continue };
        for path in place.split('`').skip(1).step_by(2) {
            // `a/{b,c}.rs` stands for a/b.rs and a/c.rs.
            let expanded: Vec<String> = match (path.find('{'), path.find('}')) {
                (Some(a), Some(b)) => {
                    path[a + 1..b].split(',').map(|alt| format!("{}{alt}{}", &path[..a], &path[b + 1..])).collect()
                }
                _ => vec![path.to_owned()],
            };
            for p in expanded {
                if p.contains('/') {
                    assert!(root().join(&p).exists(), "\"Where things are tested\" names `{p}`, which does not exist");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 20, "the table was not read ({checked} paths)");
}

#[test]
fn the_stated_dependency_rules_hold() {
    let packages = packages();
    let users = |dep: &str| -> BTreeSet<&str> {
        packages.iter().filter(|(_, (_, deps))| deps.contains(dep)).map(|(n, _)| n.as_str()).collect()
    };
    let s3: BTreeSet<&str> = users("marsh-stores-s3");
    assert!(
        s3.iter().all(|u| ["marsh", "marsh-bench"].contains(u)),
        "only the `marsh` binary and the benchmarks compile marsh-stores-s3; also: {s3:?}"
    );
    let never = |krate: &str, forbidden: &[&str]| {
        let (_, deps) = &packages[krate];
        for f in forbidden {
            assert!(!deps.contains(*f), "`{krate}` must not depend on `{f}` (ARCHITECTURE.md)");
        }
    };
    never("marsh-core", &["wasmtime", "wasmtime-wasi", "ciborium", "marsh-stores", "marsh-stores-s3", "marsh-runtime"]);
    never(
        "marsh-server",
        &["wasmtime", "wasmtime-wasi", "marsh-runtime", "marsh-native", "marsh-stores", "marsh-stores-s3"],
    );
    never(
        "marsh-web",
        &["marsh-server", "marsh-accountant", "marsh-core", "marsh-stores", "marsh-runtime", "wasmtime", "rusqlite"],
    );
    never("marsh-conformance", &["marsh-runtime", "wasmtime", "wasmtime-wasi", "marsh-native"]);
    // Reading and writing Tahoe's formats knows nothing of marsh's accounting, plugins or stores.
    never(
        "marsh-tahoe",
        &["marsh-accountant", "marsh-runtime", "marsh-stores", "marsh-stores-s3", "marsh-node", "wasmtime", "rusqlite"],
    );
    never(
        "marsh-testnode",
        &["marsh", "marsh-runtime", "marsh-server", "marsh-stores", "marsh-stores-s3", "marsh-native", "wasmtime"],
    );
    // The Foolscap client knows nothing of marsh; third-party plugins know only the SDK.
    for krate in ["marsh-foolscap", "minimal-backend"] {
        let (_, deps) = &packages[krate];
        let marsh: Vec<&String> = deps.iter().filter(|d| d.starts_with("marsh") && *d != "marsh-plugin-sdk").collect();
        assert!(marsh.is_empty(), "`{krate}` must not depend on marsh's own crates (ARCHITECTURE.md): {marsh:?}");
    }
    assert!(
        users("marsh").iter().all(|u| *u == "marsh-bench"),
        "only the benchmarks build on the node library (it compiles marsh-stores-s3); also: {:?}",
        users("marsh")
    );
    assert_eq!(
        users("anyhow"),
        BTreeSet::from(["marsh", "marsh-bench"]),
        "who uses anyhow (ARCHITECTURE.md, host/cli)"
    );
}

/// `mod NAME;` and `pub mod NAME;` declarations in a file.
fn modules(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

/// The modules of `crate::NAME` paths a file uses (`use crate::{a, b::c}` included).
fn crate_uses(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|p| p.trim().split("::").next().unwrap_or("").to_owned()));
        } else {
            out.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out.retain(|m| !m.is_empty() && m.chars().next().is_some_and(char::is_lowercase));
    out
}

#[test]
fn the_command_line_depends_downward_on_the_node_library() {
    let src = root().join("host/cli/src");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // Commands: one file each, using the library, never each other.
    let mut commands = 0;
    for entry in std::fs::read_dir(src.join("cmd")).expect("src/cmd") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "mod.rs") {
            continue;
        }
        let text = read(&path);
        assert!(
            !text.contains("crate::") && !text.contains("super::"),
            "{} uses another file of the binary: what two commands share belongs in the library",
            path.display()
        );
        commands += 1;
    }
    assert!(commands >= 9, "the commands were not read ({commands})");
    // The library: its modules, with the library modules each uses.
    let library = modules(&read(&src.join("lib.rs")));
    let binary = modules(&read(&src.join("main.rs")));
    let mut uses = BTreeMap::new();
    for module in &library {
        let text = read(&src.join(format!("{module}.rs")));
        assert!(!text.contains("anyhow"), "library module `{module}` uses anyhow: libraries return typed errors");
        let used: BTreeSet<String> = crate_uses(&text).into_iter().filter(|m| m != module).collect();
        for m in &used {
            assert!(!binary.contains(m), "library module `{module}` uses the binary's `{m}`");
        }
        uses.insert(module.clone(), used.into_iter().filter(|m| library.contains(m)).collect::<BTreeSet<_>>());
    }
    // No cycle: repeatedly remove modules that use no remaining module.
    let mut left = uses.clone();
    while let Some(leaf) =
        left.iter().find(|(_, used)| used.iter().all(|m| !left.contains_key(m))).map(|(m, _)| m.clone())
    {
        left.remove(&leaf);
    }
    assert!(left.is_empty(), "the node library's modules use each other in a cycle: {left:?}");
    assert!(uses.len() >= 6, "the library was not read: {uses:?}");
}

/// Files the repository keeps under version control, as paths relative to the root.
fn tracked(suffix: &str) -> Vec<PathBuf> {
    let out = Command::new("git").args(["ls-files", "-z"]).current_dir(root()).output().expect("git ls-files");
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

#[test]
fn every_rust_file_says_what_it_is_for() {
    let files = tracked(".rs");
    assert!(files.len() > 100, "the files were not listed ({})", files.len());
    for file in files {
        let text = std::fs::read_to_string(root().join(&file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let first = text.lines().next().unwrap_or("");
        let included = first.starts_with("// ") && first.contains("include!");
        assert!(first.starts_with("//!") || included, "{} does not open with a `//!` doc: {first:?}", file.display());
    }
}

/// The targets the Makefile defines.
fn make_targets() -> BTreeSet<String> {
    let makefile = std::fs::read_to_string(root().join("Makefile")).expect("Makefile");
    makefile
        .lines()
        .filter(|l| !l.starts_with('\t') && !l.starts_with('#') && !l.starts_with('.'))
        .filter_map(|l| l.split_once(':').filter(|(_, rest)| !rest.starts_with('=')).map(|(t, _)| t.trim()))
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_link_and_make_target_the_documentation_names_exists() {
    let targets = make_targets();
    for needed in ["test", "check", "run", "bench", "install"] {
        assert!(targets.contains(needed), "the Makefile's targets were not read: {targets:?}");
    }
    let docs = tracked(".md");
    assert!(docs.len() >= 10, "the documentation was not listed");
    let (mut links, mut makes) = (0, 0);
    for doc in &docs {
        let text = std::fs::read_to_string(root().join(doc)).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        let dir = doc.parent().unwrap_or(Path::new(""));
        // `[text](target)`: relative targets must exist (anchors aside).
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://")
                || target.starts_with('#')
                || target.starts_with("mailto:")
                || target.contains(' ')
            {
                continue;
            }
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() {
                continue;
            }
            let resolved = root().join(dir).join(path);
            assert!(resolved.exists(), "{} links to `{target}`, which does not exist", doc.display());
            links += 1;
        }
        // `make TARGET` as a command: a line of a code block, or an inline code span.
        let mut in_block = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            let commands: Vec<&str> =
                if in_block { vec![line.trim()] } else { line.split('`').skip(1).step_by(2).collect() };
            for command in commands {
                let Some(rest) = command.strip_prefix("make ") else { continue };
                let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                if word.is_empty() || word.contains('=') {
                    continue;
                }
                assert!(
                    targets.contains(&word),
                    "{} names `make {word}`, which the Makefile does not define",
                    doc.display()
                );
                makes += 1;
            }
        }
    }
    assert!(links > 50, "the links were not read ({links})");
    assert!(makes > 10, "the make commands were not read ({makes})");
}

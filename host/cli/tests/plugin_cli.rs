//! `marsh plugin test` and `marsh plugin inspect`, run as a user runs them, against the
//! plugins `make plugins` built.

use std::process::{Command, Output};

fn marsh(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().expect("cache dir");
    Command::new(env!("CARGO_BIN_EXE_marsh"))
        .args(args)
        .env("XDG_CACHE_HOME", cache.path())
        .output()
        .expect("run marsh")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn last_line(o: &Output) -> String {
    stdout(o).lines().last().unwrap_or_default().to_owned()
}

#[test]
fn every_first_party_plugin_and_the_example_pass_the_suite() {
    let all = marsh_conformance::cases().len();
    for plugin in [
        marsh_artifacts::BACKEND_DISK,
        marsh_artifacts::BACKEND_MEMORY,
        marsh_artifacts::BACKEND_S3,
        marsh_artifacts::MINIMAL_BACKEND,
    ] {
        let name = plugin.package;
        let path = plugin.built();
        let out = marsh(&["plugin", "test", path.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{name}: {}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert_eq!(last_line(&out), format!("{all} passed, 0 failed"), "{name}");
        assert_eq!(stdout(&out).lines().filter(|l| l.starts_with("ok   ")).count(), all, "{name}: one line per case");
    }
}

#[test]
fn inspect_prints_world_abi_name_and_version() {
    let out = marsh(&["plugin", "inspect", marsh_artifacts::MINIMAL_BACKEND.built().to_str().expect("utf-8 path")]);
    assert!(out.status.success());
    let text = stdout(&out);
    for line in [
        "world:       backend",
        "abi:         marsh:plugin@0.1.0",
        "name:        minimal-backend",
        "version:     0.1.0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn a_trapping_plugin_fails_cases_but_the_host_runs_the_whole_suite() {
    let out = marsh(&["plugin", "test", marsh_artifacts::HOSTILE_TRAP.built().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("exploding on purpose"), "{text}");
    assert!(text.contains("plugin faults:"), "{text}");
    let last = last_line(&out);
    let (passed, failed) = last.split_once(" passed, ").expect("summary line");
    let passed: usize = passed.parse().expect("count");
    let failed: usize = failed.trim_end_matches(" failed").parse().expect("count");
    assert_eq!(passed + failed, marsh_conformance::cases().len(), "every case ran: {text}");
    assert!(passed > 0 && failed > 0, "{last}");
}

#[test]
fn a_spinning_plugin_is_stopped_at_the_deadline() {
    let path = marsh_artifacts::HOSTILE_SPIN.built();
    let out = marsh(&[
        "plugin",
        "test",
        path.to_str().expect("utf-8 path"),
        "--deadline-ms",
        "200",
        "--filter",
        "out_of_order",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("ran past its deadline of 200ms"), "{}", stdout(&out));
    assert_eq!(last_line(&out), "0 passed, 1 failed");
}

#[test]
fn a_wrong_abi_plugin_is_refused_with_both_versions() {
    let out = marsh(&["plugin", "test", marsh_artifacts::HOSTILE_WRONG_ABI.built().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("marsh:plugin@0.2.0") && err.contains("marsh:plugin@0.1.0"), "{err}");
}

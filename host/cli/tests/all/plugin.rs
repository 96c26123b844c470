//! `marsh plugin test` and `marsh plugin inspect`, run as a user runs them, against the
//! plugins `make plugins` built.

use std::process::{Command, Output};

fn marsh(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().expect("cache dir");
    Command::new(crate::common::BINARY).args(args).env("XDG_CACHE_HOME", cache.path()).output().expect("run marsh")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn last_line(o: &Output) -> String {
    stdout(o).lines().last().unwrap_or_default().to_owned()
}

/// Every backend passes, whichever ABI version it was built against and whatever language it
/// is in: the first-party ones and the examples are 0.2.0 (one in Python, through
/// componentize-py), the fixture is backend-disk's source built against 0.1.0.
#[test]
fn every_first_party_plugin_and_the_example_pass_the_suite() {
    let all = marsh_conformance::cases().len();
    for plugin in [
        marsh_artifacts::BACKEND_DISK,
        marsh_artifacts::BACKEND_MEMORY,
        marsh_artifacts::BACKEND_S3,
        marsh_artifacts::MINIMAL_BACKEND,
        marsh_artifacts::ABI_0_1_BACKEND,
        marsh_artifacts::PYTHON_BACKEND,
    ] {
        let name = plugin.package;
        let path = plugin.built();
        let out = marsh(&["plugin", "test", path.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{name}: {}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert_eq!(last_line(&out), format!("{all} passed, 0 failed"), "{name}");
        assert_eq!(stdout(&out).lines().filter(|l| l.starts_with("ok   ")).count(), all, "{name}: one line per case");
    }
}

/// The persistence kit: the two durable strategies pass every case; `persistence-local` passes
/// the cases that apply to a strategy that keeps nothing, and the others say so by name.
#[test]
fn every_first_party_strategy_passes_the_persistence_kit() {
    let all = marsh_conformance::strategy::case_names().len();
    for (plugin, applicable) in [
        (marsh_artifacts::PERSISTENCE_RECORDS, all),
        (marsh_artifacts::PERSISTENCE_STASH, all),
        (marsh_artifacts::PERSISTENCE_LOCAL, 2),
    ] {
        let name = plugin.package;
        let out = marsh(&["plugin", "test", plugin.built().to_str().expect("utf-8 path")]);
        let text = stdout(&out);
        assert!(out.status.success(), "{name}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(last_line(&out), format!("{applicable} passed, 0 failed"), "{name}: {text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("ok   ")).count(), applicable, "{name}: {text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("n/a  ")).count(), all - applicable, "{name}: {text}");
    }
    // A store the kit does not grant is refused, not ignored.
    let records = marsh_artifacts::PERSISTENCE_RECORDS.built();
    let out = marsh(&["plugin", "test", records.to_str().expect("utf-8 path"), "--store", "x=memory"]);
    assert!(!out.status.success());
}

#[test]
fn inspect_prints_world_abi_name_and_version() {
    for (plugin, world, abi) in [
        (marsh_artifacts::MINIMAL_BACKEND, "backend", "0.2.0"),
        (marsh_artifacts::ABI_0_1_BACKEND, "backend", "0.1.0"),
        (marsh_artifacts::PERSISTENCE_RECORDS, "persistence", "0.2.0"),
    ] {
        let out = marsh(&["plugin", "inspect", plugin.built().to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = stdout(&out);
        for line in [format!("world:       {world}"), format!("abi:         marsh:plugin@{abi}")] {
            assert!(text.contains(&line), "{}: missing {line:?} in\n{text}", plugin.package);
        }
    }
    let text =
        stdout(&marsh(&["plugin", "inspect", marsh_artifacts::MINIMAL_BACKEND.built().to_str().expect("utf-8 path")]));
    for line in ["name:        minimal-backend", "version:     0.1.0"] {
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
    assert!(err.contains("marsh:plugin@0.9.0") && err.contains("versions 0.1.0, 0.2.0"), "{err}");
}

/// The kit catches what a strategy does wrong: here the real `records` strategy behind a
/// wrapper that loses every third hand-over and takes conflicting changes without a word.
#[test]
fn the_persistence_kit_fails_a_strategy_that_loses_changes_or_takes_conflicts() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use marsh_conformance::strategy::{self, Failure, Harness, Outcome, Plan, Strategy, Summary};

    struct Careless(Box<dyn Strategy>, AtomicU64);

    #[async_trait::async_trait]
    impl Strategy for Careless {
        async fn startup(&self, present: bool, last: u64, auto: bool) -> Result<Plan, Failure> {
            self.0.startup(present, last, auto).await
        }
        async fn record(&self, first: u64, changes: Vec<Vec<u8>>) -> Result<(), Failure> {
            if self.1.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                return Ok(());
            }
            let _ = self.0.record(first, changes).await;
            Ok(())
        }
        async fn recover(&self) -> Result<Summary, Failure> {
            self.0.recover().await
        }
    }

    struct CarelessHarness(marsh::conformance::StrategyHarness);

    #[async_trait::async_trait]
    impl Harness for CarelessHarness {
        async fn start(
            &self,
            store: Arc<dyn marsh_stores::BlobStore>,
            key: [u8; 32],
            target: Arc<marsh_accountant::Accountant>,
            progress: Arc<AtomicU64>,
        ) -> Result<Box<dyn Strategy>, String> {
            Ok(Box::new(Careless(self.0.start(store, key, target, progress).await?, AtomicU64::new(0))))
        }
    }

    let cache = tempfile::tempdir().expect("cache dir");
    let runtime = marsh_runtime::Runtime::new(Some(cache.path().to_owned())).expect("runtime");
    let plugin = runtime.load(&marsh_artifacts::PERSISTENCE_RECORDS.built()).expect("load");
    let limits = marsh_runtime::PluginLimits::default();
    let harness = CarelessHarness(marsh::conformance::StrategyHarness::new(runtime, plugin, Vec::new(), limits));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let report = rt.block_on(strategy::run(&harness, "", |_| {}));
    let failed =
        |name: &str| report.results.iter().any(|r| r.name.starts_with(name) && matches!(r.outcome, Outcome::Failed(_)));
    assert!(failed("record then recover round-trips"), "{:?}", report.results);
    assert!(failed("changes handed over again under held numbers"), "{:?}", report.results);
    assert!(report.durable, "a strategy that recovers part of what it got is not mistaken for one that keeps nothing");
}

//! A marsh node as an operator runs one, for the CLI's integration tests and the benchmarks
//! alike: [`TestNode`], a node directory made by `marsh init` in a temporary directory and
//! driven with the `marsh` binary given, [`Running`], a `marsh run` process once it says it
//! serves, and [`proc`], what the kernel says of a process (memory, descriptors).
//!
//! A fixture fails loudly: every call that cannot do what it says panics with the command's
//! output, which is the test's failure report. It never skips.
//!
//! Architecture invariant: this crate runs the binary it is given and reads its output and
//! `/proc`; it links no part of the node but the node directory's and the accountant's
//! libraries (for tests that look into the accounting database beside a node), so it builds
//! quickly and a test binary using it links no plugin runtime or store driver on its account.

pub mod proc;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use marsh_accountant::Accountant;
use marsh_gbs_client::{GbsClient, Nurl};

/// Run `binary` with `args`.
pub fn command(binary: &Path, args: &[&str]) -> Output {
    Command::new(binary).args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", binary.display()))
}

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Its stdout; fails the test, with both outputs, if it did not succeed.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// A TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Poll `condition` every 50 ms until it holds; fails the test after `limit` (a bound against
/// hanging, not a measurement: a slow machine gets the whole of it).
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `cp -a FROM TO`.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// The NURL in the line `marsh run` prints once it serves ([`marsh_node::SERVING`]).
pub fn serving(line: &str) -> Option<&str> {
    line.trim().strip_prefix(marsh_node::SERVING)?.strip_prefix(' ')
}

/// A node directory made by `marsh init` (listening on a free port, shares in `storage/` beside
/// it, no web listener) in a temporary directory that goes with it.
#[derive(Debug)]
pub struct TestNode {
    binary: PathBuf,
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl TestNode {
    /// `BINARY init`, then `marsh config set` for each of `config`.
    pub fn init(binary: &Path, config: &[(&str, &str)]) -> TestNode {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("node");
        let listen = format!("127.0.0.1:{}", free_port());
        let storage = tmp.path().join("storage");
        ok(command(
            binary,
            &[
                "init",
                "--dir",
                dir.to_str().expect("utf-8"),
                "--listen",
                &listen,
                "--storage-dir",
                storage.to_str().expect("utf-8"),
                // Off: nodes of parallel tests would all want 3458; tests of it turn it on.
                "--web-listen",
                "",
            ],
        ));
        let node = TestNode { binary: binary.to_owned(), tmp, dir };
        for (key, value) in config {
            node.set(key, value);
        }
        node
    }

    /// The `marsh` binary it runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The node directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node directory, as an argument.
    pub fn d(&self) -> &str {
        self.dir.to_str().expect("utf-8")
    }

    /// Where the default store keeps its objects.
    pub fn storage(&self) -> PathBuf {
        self.tmp.path().join("storage")
    }

    /// A path beside the node for the test's own files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `marsh ARGS --dir NODE_DIR`.
    pub fn marsh(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--dir", self.d()]);
        command(&self.binary, &all)
    }

    /// The same, failing the test unless it succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(self.marsh(args))
    }

    /// `marsh config set KEY VALUE`.
    pub fn set(&self, key: &str, value: &str) {
        self.ok(&["config", "set", key, value]);
    }

    /// `marsh account create NAME EXTRA...`; the account's NURL.
    pub fn create_account(&self, name: &str, extra: &[&str]) -> Nurl {
        let mut args = vec!["account", "create", name];
        args.extend(extra);
        let out = self.ok(&args);
        out.lines().find_map(|l| l.strip_prefix("NURL: ")).expect("a NURL line").parse().expect("a NURL")
    }

    /// Start `marsh run`; fails the test if it does not serve.
    pub fn start(&self) -> Running {
        self.try_start().unwrap_or_else(|e| panic!("the node did not start: {e}"))
    }

    /// Start `marsh run`: `Err` with its exit status and stderr if it stops instead of serving.
    pub fn try_start(&self) -> Result<Running, String> {
        self.start_args(&[], &[])
    }

    /// The same with more arguments to `marsh run` (say `--log-format json`) and environment
    /// variables (say `MARSH_LOG`).
    pub fn start_args(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Running, String> {
        Running::start(&self.binary, &self.dir, args, env)
    }

    /// The node's accounting database, opened beside the node (SQLite allows both).
    pub fn accountant(&self) -> Accountant {
        let dir = marsh_node::NodeDir::open(&self.dir).expect("node dir");
        Accountant::open(&dir.accountant_path()).expect("accountant database")
    }

    /// A copy of the node directory at `scratch(name)`, as an operator's backup.
    pub fn back_up(&self, name: &str) -> PathBuf {
        let backup = self.scratch(name);
        copy_dir(&self.dir, &backup);
        backup
    }

    /// The machine is lost: the node directory is replaced by `backup` (shares stay).
    pub fn restore(&self, backup: &Path) {
        std::fs::remove_dir_all(&self.dir).expect("rm node dir");
        copy_dir(backup, &self.dir);
    }
}

/// `marsh run`, once it printed that it serves; killed on drop. Its stderr is read as it comes
/// (a node must never block on a full pipe because the test did not read its log).
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// The NURL it serves.
    pub nurl: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// `BINARY run --dir DIR ARGS` with `env`; `Err` with its exit status and stderr if it stops
    /// instead of serving.
    pub fn start(binary: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Running, String> {
        let mut child = Command::new(binary)
            .args(["run", "--dir", dir.to_str().expect("utf-8")])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} run: {e}", binary.display()));
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let _ = stderr.read_to_string(&mut all);
            all
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        if let Some(nurl) = serving(&line) {
            return Ok(Running { child, nurl: nurl.to_owned(), stderr: Some(stderr) });
        }
        let status = child.wait().expect("wait");
        Err(format!("status {:?}: {}", status.code(), stderr.join().unwrap_or_default()))
    }

    /// The NURL, parsed.
    pub fn nurl(&self) -> Nurl {
        self.nurl.parse().expect("a NURL")
    }

    /// A client of the anonymous account.
    pub async fn client(&self) -> GbsClient {
        GbsClient::connect(&self.nurl()).await.expect("connect")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop as an operator does (SIGTERM) and wait, so the node hands its last changes over;
    /// what it wrote to stderr.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        self.stderr()
    }

    /// SIGKILL, as a power cut does; what it wrote to stderr.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("kill");
        self.stderr()
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.wait();
        self.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

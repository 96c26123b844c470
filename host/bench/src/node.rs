//! A fresh node of a given `marsh` binary in a temporary directory, for the benchmarks that
//! attack or load one process and read its figures from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use marsh_gbs_client::Nurl;

/// A running node; killed when dropped.
#[derive(Debug)]
pub struct BenchNode {
    /// The `marsh` binary.
    pub marsh: PathBuf,
    /// The node directory.
    pub dir: PathBuf,
    /// The anonymous NURL.
    pub nurl: Nurl,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl BenchNode {
    /// `marsh init` (disk backend, no reserved space, `settings` applied with `marsh config
    /// set`), then `marsh run`, waiting for its NURL.
    pub fn start(marsh: &str, settings: &[(&str, &str)]) -> anyhow::Result<BenchNode> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("node");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let storage = tmp.path().join("storage");
        let d = dir.to_str().context("utf-8")?;
        let listen = format!("127.0.0.1:{port}");
        let storage = storage.to_str().context("utf-8")?;
        run(marsh, &["init", "--dir", d, "--listen", &listen, "--storage-dir", storage, "--web-listen", ""])?;
        for (key, value) in [("storage.reserved-space", "0")].iter().chain(settings) {
            run(marsh, &["config", "set", key, value, "--dir", d])?;
        }
        let mut child = Command::new(marsh)
            .args(["run", "--dir", d])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the node")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let nurl: Nurl = line.trim().strip_prefix("marsh: serving ").context("the node did not start")?.parse()?;
        Ok(BenchNode { marsh: marsh.into(), dir, nurl, child, _tmp: tmp })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A named account (`marsh account create`); its NURL.
    pub fn account(&self, name: &str) -> anyhow::Result<Nurl> {
        let marsh = self.marsh.to_str().context("utf-8")?;
        let out = run(marsh, &["account", "create", name, "--dir", self.dir.to_str().context("utf-8")?])?;
        let nurl = out.lines().find_map(|l| l.strip_prefix("NURL: ")).context("no NURL in `marsh account create`")?;
        nurl.trim().parse().context("the account's NURL")
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(marsh: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(marsh).args(args).output()?;
    if !out.status.success() {
        bail!("marsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

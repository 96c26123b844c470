//! What the CLI tests share: running `marsh` as an operator does, and a running node.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// Run `marsh` with `args`.
pub fn marsh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_marsh")).args(args).output().expect("run marsh")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Its stdout; fails the test, with both outputs, if it did not succeed.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `marsh run`, once it printed that it serves; killed on drop.
pub struct Running {
    child: Child,
    /// The NURL it serves.
    pub nurl: String,
}

impl Running {
    /// Start a node; `Err` with its exit status and stderr if it stops instead of serving.
    pub fn start(dir: &Path) -> Result<Running, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_marsh"))
            .args(["run", "--dir", dir.to_str().expect("utf-8")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn marsh run");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        if let Some(nurl) = line.trim().strip_prefix("marsh: serving ") {
            return Ok(Running { child, nurl: nurl.to_owned() });
        }
        let out = child.wait_with_output().expect("wait");
        Err(format!("status {:?}: {}", out.status.code(), text(&out.stderr)))
    }

    /// Stop as an operator does (SIGTERM) and wait, so the node hands its last changes over;
    /// what it wrote to stderr.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut stderr).expect("stderr");
        }
        let _ = self.child.wait();
        stderr
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

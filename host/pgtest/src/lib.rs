//! A throwaway PostgreSQL cluster for tests: the real server (Debian's `postgresql` package),
//! `initdb` into a temporary directory, started with `pg_ctl` on a free port of 127.0.0.1 and
//! a Unix socket in that directory, stopped (immediately) when the [`Cluster`] is dropped.
//!
//! PostgreSQL refuses to run as root, so under root the cluster belongs to an unprivileged
//! user (`nobody`, or `MARSH_PG_USER`) and every command runs as that user through `setpriv`.
//! The binaries are found in `MARSH_PG_BINDIR`, else in the newest
//! `/usr/lib/postgresql/<version>/bin` that has `initdb` (Debian keeps them off `PATH`). When
//! none is there the start fails with [`ClusterError::NotInstalled`] naming the command that
//! installs it (`make postgres`); a test never skips for want of it.
//!
//! The cluster trusts connections from the machine (`--auth=trust`): it holds nothing but what
//! a test puts there, and lives as long as the test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a cluster could not be made or driven.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries on this machine.
    #[error("no PostgreSQL server found (looked in {looked}); install it with `make postgres` (Debian's postgresql)")]
    NotInstalled {
        /// Where it looked.
        looked: String,
    },
    /// A command could not be run at all.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}): {output}")]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The temporary directory could not be made or handed to the cluster's user.
    #[error("preparing the cluster's directory: {0}")]
    Dir(std::io::Error),
}

/// A running PostgreSQL cluster that goes with this value.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    user: Option<String>,
    tmp: tempfile::TempDir,
    port: u16,
}

/// The superuser the cluster is made with (and the role tests connect as).
pub const SUPERUSER: &str = "marsh";

impl Cluster {
    /// `initdb` a new cluster and start it.
    pub fn start() -> Result<Cluster, ClusterError> {
        let bin = bindir()?;
        let user =
            if is_root() { Some(std::env::var("MARSH_PG_USER").unwrap_or_else(|_| "nobody".into())) } else { None };
        let tmp = tempfile::Builder::new().prefix("marsh-pg-").tempdir().map_err(ClusterError::Dir)?;
        if let Some(user) = &user {
            chown(tmp.path(), user)?;
        }
        let port = free_port().map_err(ClusterError::Dir)?;
        let cluster = Cluster { bin, user, tmp, port };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", path(&data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions"],
        )?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq connection string for database `db` as [`SUPERUSER`].
    pub fn url(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={SUPERUSER} dbname={db}", self.port)
    }

    /// Create database `name`.
    pub fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        let port = self.port.to_string();
        self.run("createdb", &["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER, name])?;
        Ok(())
    }

    /// Stop the server (fast shutdown: connections are cut), keeping its data.
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.run("pg_ctl", &["-D", path(&self.data()), "-m", "fast", "-w", "stop"])?;
        Ok(())
    }

    /// Start it again after [`Cluster::stop`], on the same port.
    pub fn start_server(&self) -> Result<(), ClusterError> {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.tmp.path().display()
        );
        if self.data().join("server.crt").exists() {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = self.tmp.path().join("server.log");
        self.run("pg_ctl", &["-D", path(&self.data()), "-l", path(&log), "-o", &options, "-w", "start"])?;
        Ok(())
    }

    /// One cluster for the whole test process, started at its first use. It outlives every
    /// test and is stopped (and its directory removed) when the process exits, however it
    /// exits: a watchdog child waits for its standard input, a pipe only this process holds,
    /// to close. Each test takes its own database from it ([`Cluster::fresh_database`]).
    pub fn shared() -> Result<&'static Cluster, String> {
        static SHARED: std::sync::OnceLock<Result<(Cluster, std::process::ChildStdin), String>> =
            std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let cluster = Cluster::start().map_err(|e| e.to_string())?;
                let stop = cluster.command("pg_ctl", &["-D", path(&cluster.data()), "-m", "immediate", "stop"]);
                let script = format!(
                    "cat >/dev/null; {} >/dev/null 2>&1; rm -rf '{}'",
                    stop.join(" "),
                    cluster.tmp.path().display()
                );
                let mut watchdog = Command::new("sh")
                    .args(["-c", &script])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("starting the cluster's watchdog: {e}"))?;
                let pipe = watchdog.stdin.take().ok_or("the watchdog's stdin")?;
                Ok((cluster, pipe))
            })
            .as_ref()
            .map(|(cluster, _)| cluster)
            .map_err(Clone::clone)
    }

    /// A new, empty database of its own; its name.
    pub fn fresh_database(&self) -> Result<String, ClusterError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        self.create_database(&name)?;
        Ok(name)
    }

    /// Serve TLS from now on with this certificate and key (PEM): written into the data
    /// directory as the cluster's user wants them, then the server restarted with `ssl=on`.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        for (name, text, mode) in [("server.crt", cert_pem, 0o644), ("server.key", key_pem, 0o600)] {
            let file = self.data().join(name);
            std::fs::write(&file, text).map_err(ClusterError::Dir)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(ClusterError::Dir)?;
            if let Some(user) = &self.user {
                chown(&file, user)?;
            }
        }
        self.stop()?;
        self.start_server()
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("server.log")).unwrap_or_default()
    }

    /// `program` with `args`, as the cluster's user: the words of the command line.
    fn command(&self, program: &str, args: &[&str]) -> Vec<String> {
        let exe = self.bin.join(program).display().to_string();
        let mut words = match &self.user {
            Some(user) => ["setpriv", "--reuid", user, "--regid", &group_of(user), "--clear-groups", "--", &exe]
                .map(str::to_owned)
                .to_vec(),
            None => vec![exe],
        };
        words.extend(args.iter().map(|a| (*a).to_owned()));
        words
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, ClusterError> {
        let words = self.command(program, args);
        let mut command = Command::new(&words[0]);
        command.args(&words[1..]).current_dir(self.tmp.path());
        let exe = self.bin.join(program);
        let shown = format!("{} {}", exe.display(), args.join(" "));
        let output = command.output().map_err(|source| ClusterError::Spawn { command: shown.clone(), source })?;
        if !output.status.success() {
            let text = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
            return Err(ClusterError::Failed {
                command: shown,
                status: output.status.to_string(),
                output: String::from_utf8_lossy(&text).into_owned(),
            });
        }
        Ok(output)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", path(&self.data()), "-m", "immediate", "stop"]);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Where the server binaries are.
fn bindir() -> Result<PathBuf, ClusterError> {
    if let Ok(dir) = std::env::var("MARSH_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| ClusterError::NotInstalled {
        looked: format!("MARSH_PG_BINDIR and {}/<version>/bin", root.display()),
    })
}

fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

/// The primary group of `user` (from `id -gn`; `nogroup` if that fails).
fn group_of(user: &str) -> String {
    Command::new("id")
        .args(["-gn", user])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "nogroup".into())
}

fn chown(dir: &Path, user: &str) -> Result<(), ClusterError> {
    let status =
        Command::new("chown").arg(format!("{user}:{}", group_of(user))).arg(dir).status().map_err(ClusterError::Dir)?;
    if status.success() {
        Ok(())
    } else {
        Err(ClusterError::Dir(std::io::Error::other(format!("chown {user} {}: {status}", dir.display()))))
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn query_one(cluster: &Cluster, db: &str, sql: &str) -> Result<String, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&cluster.url(db), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client.query_one(sql, &[]).await?;
        Ok(row.get(0))
    }

    #[tokio::test]
    async fn a_real_cluster_serves_survives_a_restart_and_keeps_its_data() {
        let cluster = Cluster::start().expect("a PostgreSQL cluster (make postgres installs one)");
        let version = query_one(&cluster, "postgres", "SELECT version()").await.expect("query");
        assert!(version.starts_with("PostgreSQL "), "{version}");
        cluster.create_database("fleet").expect("createdb");
        let (client, connection) = tokio_postgres::connect(&cluster.url("fleet"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept')").await.unwrap();

        cluster.stop().expect("stop");
        assert!(
            tokio_postgres::connect(&cluster.url("fleet"), tokio_postgres::NoTls).await.is_err(),
            "stopped: refused"
        );
        assert!(client.query_one("SELECT 1", &[]).await.is_err(), "stopped: the open connection is cut");
        cluster.start_server().expect("start again");
        let kept = query_one(&cluster, "fleet", "SELECT v FROM t").await.expect("query after restart");
        assert_eq!(kept, "kept");
    }
}

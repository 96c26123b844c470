//! `marsh-abuse MARSH_BINARY`: the abuse suite's hostile clients (`marsh_gbs_client::hostile`)
//! against a fresh node of the given `marsh` binary, reporting how far each attack raised the
//! server's peak RSS (`VmHWM`, reset before each through `/proc/PID/clear_refs`) over the RSS
//! it had, and its descriptors. Run it against two builds to compare them; the figures go in
//! README's reliability section.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use marsh_gbs_client::{Nurl, hostile};

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(field)).map(str::to_owned))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Reset the peak; the RSS now.
fn reset(pid: u32) -> anyhow::Result<u64> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting the peak RSS")?;
    Ok(status_kib(pid, "VmRSS:"))
}

fn si(n: u8) -> String {
    marsh_core::StorageIndex::from_bytes([n; 16]).to_base32()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let marsh = std::env::args().nth(1).context("usage: marsh-abuse MARSH_BINARY")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let d = dir.to_str().context("utf-8")?;
    let storage = tmp.path().join("storage");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new(&marsh).args(args).output()?;
        if !out.status.success() {
            bail!("marsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let storage_arg = storage.to_str().context("utf-8")?;
    run(&["init", "--dir", d, "--listen", &format!("127.0.0.1:{port}"), "--storage-dir", storage_arg])?;
    run(&["config", "set", "storage.reserved-space", "0", "--dir", d])?;
    let mut child = Command::new(&marsh)
        .args(["run", "--dir", d])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the node")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let nurl: Nurl = line.trim().strip_prefix("marsh: serving ").context("the node did not start")?.parse()?;
    let pid = child.id();
    hostile::upload_share(&nurl, &si(4), 64 << 20).await?;
    let idle = (status_kib(pid, "VmRSS:"), descriptors(pid));
    println!("marsh-abuse {marsh}: idle RSS {} MiB, {} descriptors", idle.0 / 1024, idle.1);
    println!("| attack | answers | peak RSS growth MiB | descriptors after |");
    println!("|---|---|---|---|");
    let report = |what: &str, answers: String, before: u64| {
        let growth = status_kib(pid, "VmHWM:").saturating_sub(before) / 1024;
        println!("| {what} | {answers} | {growth} | {} |", descriptors(pid));
    };

    let before = reset(pid)?;
    let got = hostile::sparse_slot_read(&nurl, &si(1), 1 << 30).await;
    report("read-test-write reading a sparse 1 GiB share back", format!("{got:?}"), before);

    let before = reset(pid)?;
    let got = hostile::tiny_items(&nurl, &si(2), 8_000_000).await;
    report("8 million tiny CBOR items in one body", format!("{got:?}"), before);

    let before = reset(pid)?;
    let got = hostile::zero_allocations(&nurl, 200, 256, 40 * 1024).await;
    report("200 x 256 zero-sized allocations, 40 KiB upload secret", format!("{got:?}"), before);

    let before = reset(pid)?;
    let stalled = hostile::stalled_downloads(&nurl, &si(4), 0, 40).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    report("40 downloads of 64 MiB never read (after 5 s)", "held".into(), before);
    tokio::time::sleep(Duration::from_secs(25)).await;
    report("the same 30 s later", "held".into(), before);
    drop(stalled);

    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

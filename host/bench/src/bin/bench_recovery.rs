//! `marsh-bench-recovery`: how long a persistence strategy takes to rebuild the accounting
//! database of N leases from an S3 bucket (SeaweedFS under `tests/s3/with-s3.sh`), and how
//! long persisting them took, through the real plugin and driver.
//!
//! Usage: marsh-bench-recovery LEASES [records|stash] [KEY=VALUE...] (the plugins `make
//! plugins` built; KEY=VALUE is plugin config, e.g. `pack-changes=0`)
//! Reads MARSH_TEST_S3_* for the server.
//! - `records` (default): setup writes the per-change records with 32 concurrent PUTs (sealed
//!   exactly as the plugin seals them), then hands the plugin every `pack-changes`-th change
//!   again (default 1000), so it writes its packs as it would have (reading the records it did
//!   not see from the store); the timed recovery is the plugin's own: the packs one by one, then
//!   the records after them 1000 at a time with `batches.get-many` (the host runs 32 reads at
//!   once). With `pack-changes=0` there are no packs and every record is read.
//! - `stash`: the leases are made 500 at a time, and after each 500 the plugin itself persists
//!   them in one `record` call, as a node's persister would hand them over (taking snapshots
//!   when it judges them due, with its default of one every 10,000 changes); then it recovers.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use marsh::persistence::AccountantSink as Sink;
use marsh_accountant::{AccountId, Accountant};
use marsh_core::{ShareNumber, StorageIndex};
use marsh_runtime::{Grants, PluginLimits, Runtime, WasmStrategy};
use marsh_seal::SealKey;
use marsh_stores::{BlobKey, BlobStore, PutMode};
use marsh_stores_s3::{S3Config, S3Store};

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: run under tests/s3/with-s3.sh"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let leases: u64 = args.next().context("usage: marsh-bench-recovery LEASES [records|stash]")?.parse()?;
    let strategy_name = args.next().unwrap_or_else(|| "records".to_owned());
    anyhow::ensure!(["records", "stash"].contains(&strategy_name.as_str()), "the strategy is `records` or `stash`");
    let plugin_config: Vec<(String, String)> = args
        .map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).context("plugin config is KEY=VALUE"))
        .collect::<anyhow::Result<_>>()?;
    let tmp = tempfile::tempdir()?;

    // The changes a node makes for N lease renewals, as it makes them.
    let source = Arc::new(Accountant::open(&tmp.path().join("source.sqlite"))?);
    let mut local = Duration::ZERO;
    let mut add_leases = |range: std::ops::Range<u64>| -> anyhow::Result<()> {
        let t = Instant::now();
        for i in range {
            let mut si = [0u8; 16];
            si[..8].copy_from_slice(&i.to_be_bytes());
            let si = StorageIndex::from_bytes(si);
            source.add_or_renew(
                AccountId::ANONYMOUS,
                &marsh_core::ShareId::immutable(si, ShareNumber(0)),
                &i.to_be_bytes(),
                &[0],
                1_800_000_000,
            )?;
        }
        local += t.elapsed();
        Ok(())
    };

    let mut config = S3Config::new("shares", &env("MARSH_TEST_S3_BUCKET")?);
    config.endpoint = Some(env("MARSH_TEST_S3_ENDPOINT")?);
    config.path_style = true;
    config.access_key_id = Some(env("MARSH_TEST_S3_ACCESS_KEY")?);
    config.secret_access_key = Some(env("MARSH_TEST_S3_SECRET_KEY")?);
    config.prefix = format!("bench-recovery-{}/", std::process::id());
    let store = S3Store::open(config).await?;
    let key = SealKey::from_bytes([3; 32]);

    let runtime = Runtime::new(None)?;
    let artifact = if strategy_name == "records" {
        marsh_artifacts::PERSISTENCE_RECORDS
    } else {
        marsh_artifacts::PERSISTENCE_STASH
    };
    let plugin = runtime.load(&artifact.locate()?)?;
    let grants =
        Grants::new(key.clone()).store("shares", Arc::new(store.clone())).accounting(Arc::new(Sink(source.clone())));
    let writer = WasmStrategy::start(&runtime, &plugin, grants, plugin_config.clone(), PluginLimits::default()).await?;
    let mut write = Duration::ZERO;
    let mut packing = Duration::ZERO;
    if strategy_name == "records" {
        add_leases(0..leases)?;
        let changes = source.changes_after(0, usize::MAX)?;
        let t = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = Vec::new();
        for change in &changes {
            let seq = change.seq;
            let sealed = key.seal("plugin:records-change", &change.strategy_blob())?;
            let (store, permit) = (store.clone(), sem.clone().acquire_owned().await?);
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                store.put(&BlobKey::new(&format!("accounting/{seq:020}"))?, sealed, PutMode::CreateOnly).await?;
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        write = t.elapsed();
        let every: u64 =
            plugin_config.iter().find(|(k, _)| k == "pack-changes").map_or(Ok(1000), |(_, v)| v.parse())?;
        let t = Instant::now();
        for change in changes.iter().filter(|c| every > 0 && c.seq.is_multiple_of(every)) {
            writer.record(change.seq, vec![change.strategy_blob()]).await?;
        }
        packing = t.elapsed();
    } else {
        for start in (0..leases).step_by(500) {
            add_leases(start..leases.min(start + 500))?;
            let run = source.changes_after(source.persisted_seq()?, usize::MAX)?;
            let t = Instant::now();
            let blobs = run.iter().map(marsh_accountant::Logged::strategy_blob).collect();
            writer.record(run[0].seq, blobs).await?;
            write += t.elapsed();
            source.mark_persisted(run[run.len() - 1].seq)?;
        }
    }
    let written = store.stats();

    let target = Arc::new(Accountant::open(&tmp.path().join("recovered.sqlite"))?);
    let grants = Grants::new(key).store("shares", Arc::new(store.clone())).accounting(Arc::new(Sink(target.clone())));
    let strategy = WasmStrategy::start(&runtime, &plugin, grants, plugin_config, PluginLimits::default()).await?;
    let before = store.stats();
    let t = Instant::now();
    let report = strategy.recover(Duration::from_secs(3600)).await?;
    let recover = t.elapsed();
    let after = store.stats();
    let recovered: u64 = target.accounts()?.iter().map(|a| a.leases).sum();
    anyhow::ensure!(recovered == leases, "recovered {recovered} leases of {leases}");

    println!("{leases} leases, persistence-{strategy_name} on SeaweedFS (127.0.0.1)");
    println!("  logging them locally (SQLite, one transaction each): {:.1} s", local.as_secs_f64());
    if strategy_name == "records" {
        println!("  writing the sealed records, 32 PUTs at a time:        {:.1} s", write.as_secs_f64());
        println!(
            "  the plugin packing them (every pack-changes-th change handed over again): {:.1} s",
            packing.as_secs_f64()
        );
    } else {
        println!(
            "  persisting them through the plugin, 500 per call:    {:.1} s, {} S3 requests, {} bytes sent",
            write.as_secs_f64(),
            written.requests(),
            written.bytes_sent
        );
    }
    println!(
        "  recovery by the plugin ({} snapshots, {} changes read, {} tampered): {:.1} s, {} S3 requests",
        report.snapshots_read,
        report.changes_read,
        report.tampered,
        recover.as_secs_f64(),
        after.requests() - before.requests()
    );
    Ok(())
}

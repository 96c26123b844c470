//! The persistence conformance cases ([`crate::strategy`] runs them). Each plays one thing a
//! node and its store operator can do to a strategy, on a fresh scratch store, and checks what
//! the node would then read of its accounting database.

use std::sync::Arc;

use marsh_accountant::{Accountant, Logged};
use marsh_stores::{BlobKey, BlobStore, PutMode};

use crate::strategy::{Dump, Failure, Plan, Scene, StrategyCase, Touched, changes, dump, persist, workload};

pub(crate) const ALL: &[StrategyCase] = &[
    StrategyCase {
        name: "record then recover round-trips accounts, attributes, leases and write enablers",
        durable_only: false,
        // Run by `strategy::run` through `keeps_anything`, which also classifies the strategy.
        run: |_| Box::pin(async { Ok(()) }),
    },
    StrategyCase {
        name: "an empty store on an empty node starts clean",
        durable_only: false,
        run: |s| Box::pin(empty_store_starts_clean(s)),
    },
    StrategyCase {
        name: "startup answers the right plan for each local state",
        durable_only: true,
        run: |s| Box::pin(startup_plans(s)),
    },
    StrategyCase { name: "replaying twice is harmless", durable_only: true, run: |s| Box::pin(replay_twice(s)) },
    StrategyCase {
        name: "changes handed over again under held numbers are refused unless identical",
        durable_only: true,
        run: |s| Box::pin(held_numbers(s)),
    },
    StrategyCase {
        name: "a tampered blob is reported, never applied",
        durable_only: true,
        run: |s| Box::pin(tampered(s)),
    },
    StrategyCase {
        name: "a blob sealed by another node's key is reported, never applied",
        durable_only: true,
        run: |s| Box::pin(foreign_key(s)),
    },
    StrategyCase { name: "a missing blob is reported as a gap", durable_only: true, run: |s| Box::pin(gap(s)) },
    StrategyCase { name: "recovery reports its progress", durable_only: true, run: |s| Box::pin(progress(s)) },
];

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn differences(want: &Dump, got: &Dump) -> String {
    if want.accounts != got.accounts {
        return format!("accounts differ: want {:?}, got {:?}", want.accounts, got.accounts);
    }
    if let Some(i) = (0..want.shares.len()).find(|i| want.shares.get(*i) != got.shares.get(*i)) {
        return format!("share #{i} differs: want {:?}, got {:?}", want.shares[i], got.shares.get(i));
    }
    format!("write enablers differ: want {:?}, got {:?}", want.enablers, got.enablers)
}

/// A source database with a workload, all of it handed over; its dump and what it touched.
async fn recorded(s: &Scene<'_>, rounds: u8) -> Result<(Arc<Accountant>, Touched, u64), String> {
    let source = s.database()?;
    let touched = workload(&source, 1, rounds)?;
    let writer = s.start(&s.database()?).await?;
    let last = persist(&source, writer.as_ref(), 0, 7).await?;
    Ok((source, touched, last))
}

/// Recover into a fresh database with a fresh instance (a new process on a new machine).
async fn recover_fresh(s: &Scene<'_>) -> Result<(Arc<Accountant>, Result<crate::strategy::Summary, Failure>), String> {
    let target = s.database()?;
    let reader = s.start(&target).await?;
    let summary = reader.recover().await;
    Ok((target, summary))
}

/// The first case: record a workload, recover it elsewhere. A strategy that recovers nothing at
/// all keeps nothing outside the node (`Ok(false)`); one that recovers must recover all of it.
pub(crate) async fn keeps_anything(s: &Scene<'_>) -> Result<bool, String> {
    let (source, touched, _) = recorded(s, 4).await?;
    let (target, summary) = recover_fresh(s).await?;
    let summary = summary.map_err(|f| format!("recover: {f}"))?;
    let (want, got) = (dump(&source, &touched)?, dump(&target, &touched)?);
    let empty = dump(&*s.database()?, &touched)?;
    if got == empty && summary.changes_read == 0 && summary.snapshots_read == 0 && s.keys().await?.is_empty() {
        return Ok(false);
    }
    check(got == want, || differences(&want, &got))?;
    check(summary.tampered == 0 && summary.gaps.is_empty(), || format!("a clean store reported {summary:?}"))?;
    Ok(true)
}

async fn empty_store_starts_clean(s: &Scene<'_>) -> Result<(), String> {
    let strategy = s.start(&s.database()?).await?;
    for present in [false, true] {
        let plan = strategy.startup(present, 0, false).await.map_err(|f| format!("startup: {f}"))?;
        check(plan == Plan::UseLocal, || format!("a new node (local database present: {present}) was told {plan:?}"))?;
    }
    let (target, summary) = recover_fresh(s).await?;
    let summary = summary.map_err(|f| format!("recovering an empty store: {f}"))?;
    check(summary.tampered == 0 && summary.gaps.is_empty(), || format!("an empty store reported {summary:?}"))?;
    let touched = Touched::default();
    check(dump(&target, &touched)? == dump(&*s.database()?, &touched)?, || {
        "recovering nothing changed the database".into()
    })
}

async fn startup_plans(s: &Scene<'_>) -> Result<(), String> {
    let (_, _, last) = recorded(s, 2).await?;
    let strategy = s.start(&s.database()?).await?;
    for (present, at, auto, want) in [
        (true, last, false, Plan::UseLocal),
        (false, 0, false, Plan::RecoveryNeeded),
        (false, 0, true, Plan::Recover),
        (true, last - 3, false, Plan::RecoveryNeeded),
        (true, last - 3, true, Plan::Recover),
    ] {
        let plan = strategy.startup(present, at, auto).await.map_err(|f| format!("startup: {f}"))?;
        check(plan == want, || {
            format!(
                "a local database {} (store ends at {last}), auto-recover {auto}: want {want:?}, got {plan:?}",
                if present { format!("ending at change {at}") } else { "missing".into() }
            )
        })?;
    }
    Ok(())
}

async fn replay_twice(s: &Scene<'_>) -> Result<(), String> {
    let (source, touched, _) = recorded(s, 3).await?;
    let again = s.start(&s.database()?).await?;
    persist(&source, again.as_ref(), 0, 5).await.map_err(|e| format!("handing the same changes over again: {e}"))?;
    let target = s.database()?;
    for round in 1..=2 {
        let reader = s.start(&target).await?;
        reader.recover().await.map_err(|f| format!("recovery {round}: {f}"))?;
    }
    let (want, got) = (dump(&source, &touched)?, dump(&target, &touched)?);
    check(want == got, || format!("after two recoveries: {}", differences(&want, &got)))
}

async fn held_numbers(s: &Scene<'_>) -> Result<(), String> {
    let (source, touched, _) = recorded(s, 3).await?;
    let all = changes(&source, 0)?;
    let strategy = s.start(&s.database()?).await?;
    let mut other = all[1].strategy_blob();
    let end = other.len() - 1;
    other[end] ^= 0x40;
    let refused = strategy.record(all[1].seq, vec![other]).await;
    check(refused.is_err(), || format!("change {} was handed over again with other content and taken", all[1].seq))?;
    let same: Vec<Vec<u8>> = all[1..4].iter().map(Logged::strategy_blob).collect();
    strategy.record(all[1].seq, same).await.map_err(|f| format!("the very same changes again: {f}"))?;
    let (target, summary) = recover_fresh(s).await?;
    summary.map_err(|f| format!("recover: {f}"))?;
    let (want, got) = (dump(&source, &touched)?, dump(&target, &touched)?);
    check(want == got, || format!("after a refused conflicting change: {}", differences(&want, &got)))
}

/// Whether a recovery's outcome reports what `kind` names: a failure of that kind, or a summary
/// that counts it.
fn reported(outcome: &Result<crate::strategy::Summary, Failure>, tampering: bool) -> bool {
    match outcome {
        Ok(summary) if tampering => summary.tampered > 0,
        Ok(summary) => !summary.gaps.is_empty(),
        Err(Failure::Tampered(_)) => tampering,
        Err(Failure::Gap(_)) => !tampering,
        Err(Failure::Other(_)) => false,
    }
}

async fn flip_middle(store: &dyn BlobStore, key: &str) -> Result<(), String> {
    let k = BlobKey::new(key).map_err(|e| e.to_string())?;
    let mut blob = store.get(&k).await.map_err(|e| e.to_string())?.ok_or("an object vanished")?;
    let mid = blob.len() / 2;
    blob[mid] ^= 0x01;
    store.put(&k, blob, PutMode::Overwrite).await.map_err(|e| e.to_string())
}

async fn tampered(s: &Scene<'_>) -> Result<(), String> {
    let (_, touched, _) = recorded(s, 2).await?;
    let keys = s.keys().await?;
    let one = keys.last().ok_or("the strategy wrote nothing to its store")?;
    flip_middle(&s.store, one).await?;
    let (_, outcome) = recover_fresh(s).await?;
    check(reported(&outcome, true), || format!("one altered object ({one}); recovery said {outcome:?}"))?;
    // Listed again: a recovery may have written (a strategy that could not reach the end
    // snapshots what it rebuilt, say).
    for k in s.keys().await?.iter().filter(|k| *k != one) {
        flip_middle(&s.store, k).await?;
    }
    let (target, outcome) = recover_fresh(s).await?;
    check(reported(&outcome, true), || format!("every object altered; recovery said {outcome:?}"))?;
    let empty = dump(&*s.database()?, &touched)?;
    check(dump(&target, &touched)? == empty, || "altered objects were applied".into())
}

async fn foreign_key(s: &Scene<'_>) -> Result<(), String> {
    let source = s.database()?;
    let touched = workload(&source, 2, 2)?;
    let foreign = s.start_keyed(&s.database()?, crate::strategy::FOREIGN_KEY).await?;
    persist(&source, foreign.as_ref(), 0, 7).await?;
    let (target, outcome) = recover_fresh(s).await?;
    check(reported(&outcome, true), || format!("another node's objects; recovery said {outcome:?}"))?;
    let empty = dump(&*s.database()?, &touched)?;
    check(dump(&target, &touched)? == empty, || "another node's objects were applied".into())
}

async fn gap(s: &Scene<'_>) -> Result<(), String> {
    let _ = recorded(s, 3).await?;
    let keys = s.keys().await?;
    check(keys.len() >= 3, || format!("expected several objects for dozens of changes, found {keys:?}"))?;
    let middle = &keys[keys.len() / 2];
    s.store.delete(&BlobKey::new(middle).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    let (_, outcome) = recover_fresh(s).await?;
    check(reported(&outcome, false), || format!("{middle} deleted; recovery said {outcome:?}"))
}

async fn progress(s: &Scene<'_>) -> Result<(), String> {
    let _ = recorded(s, 12).await?;
    let before = s.progress_reports();
    let (_, outcome) = recover_fresh(s).await?;
    outcome.map_err(|f| format!("recover: {f}"))?;
    check(s.progress_reports() > before, || "a recovery of a few hundred changes reported no progress".into())
}

//! Joining a grid: for each of `introducer.furls`, a task that keeps the node's signed storage
//! announcement published there ([`marsh_foolscap::introducer::keep_published`]), and the
//! status of each for the log, the status page and `/metrics`.
//!
//! The announcement is made once per process: the anonymous NURL, nickname, permutation seed,
//! placeholder fURL, version, the configured grid-manager certificates, a fresh nonce and a
//! `seqnum` from the clock's microseconds ([`marsh_node::announcement::seqnum_now`]), so that a
//! restarted node's announcement replaces the one clients cached without anything written to
//! the node directory. The Foolscap connection presents the node's TLS certificate (the one its
//! NURL pins); serving storage never waits on an introducer.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use marsh_foolscap::introducer::{self, Status};
use marsh_foolscap::{Backoff, Timeouts, Tub};
use marsh_node::{Identity, NodeConfig};

use crate::Error;
use crate::tasks::Supervisor;

/// The introducers' statuses, in `introducer.furls` order.
#[derive(Debug, Clone, Default)]
pub struct Introducers(Vec<Arc<Mutex<Status>>>);

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Introducers {
    /// What the operator surface shows of each.
    pub fn rows(&self) -> Vec<marsh_web::IntroducerRow> {
        self.0
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.clone()))
            .map(|s| marsh_web::IntroducerRow {
                furl: s.furl,
                connected_since: s.connected_since.map(secs),
                last_publish: s.last_publish.map(secs),
                publishes: s.publishes,
                last_error: s.last_error.map(|(t, e)| (secs(t), e)),
            })
            .collect()
    }
}

/// Start one publisher per configured introducer under `supervisor`; none when
/// `introducer.furls` is empty. Refuses a node without a signing key, with the command that
/// gives it one.
pub fn start(
    supervisor: &mut Supervisor,
    config: &NodeConfig,
    identity: &Identity,
    nurl: String,
    dir: &std::path::Path,
) -> Result<Introducers, Error> {
    if config.introducers.is_empty() {
        return Ok(Introducers::default());
    }
    let key = identity.signing_key.as_ref().ok_or_else(|| Error::NoSigningKey { dir: dir.display().to_string() })?;
    let announcement = marsh_node::announcement::signed_now(
        identity,
        key,
        &config.nickname,
        &[nurl],
        &config.grid_manager_certificates,
    )?;
    let tub = Tub::new(identity.cert_der.clone(), identity.key_der.clone());
    let mut statuses = Vec::new();
    for furl in &config.introducers {
        let status = Arc::new(Mutex::new(Status { furl: furl.to_string(), ..Status::default() }));
        statuses.push(status.clone());
        let publisher = introducer::keep_published(
            furl.clone(),
            tub.clone(),
            announcement.clone(),
            Timeouts::default(),
            Backoff::default(),
            status,
        );
        supervisor.spawn("introducer", move |mut stopping| async move {
            tokio::select! {
                () = publisher => {}
                () = stopping.stopped() => {}
            }
        });
    }
    tracing::info!(introducers = statuses.len(), server_id = %identity.server_id, "announcing to the grid's introducers");
    Ok(Introducers(statuses))
}

//! The lease loop of a worker sharing its store (PostgreSQL): every
//! [`crate::exec::lease::RENEW_EVERY`] it renews the leases on the runs and queue entries it
//! holds ([`Engine::renew_leases`]), then claims orphans, the runs of workers whose leases
//! passed ([`RunLeases::claim_orphans`]), and resumes each through the resume path like a run
//! found unfinished at start. Its first round, at start, is what resuming every unfinished run
//! is on sled: on a shared store the unfinished runs of live workers are theirs.
//!
//! A run the renewal no longer finds is lost (another worker claimed it after a stall): its walk
//! stops before its next block ([`crate::exec::lease`]), logged loudly here. A run the store
//! says is this worker's but that no task here executes (its task ended on an error) is resumed
//! here, once per process. Not started on sled, where nothing is leased. Once the service stops
//! taking work it claims nothing more, and it renews until the runs in flight have ended.
//!
//! [`Engine::renew_leases`]: crate::exec::Engine::renew_leases

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::Shared;
use crate::exec::lease::RENEW_EVERY;
use crate::exec::RunId;
use crate::store::api::{ReadHistory, RunLeases};
use crate::trigger::scheduler::Clock;

/// The most orphans claimed at once (the loop claims again until fewer come back).
const ORPHANS: usize = 64;

/// The lease loop: claims nothing once `stopping` turns true, returns when `done` does.
pub async fn run(
    shared: Arc<Shared>,
    stopping: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
    clock: Clock,
) {
    let mut resumed_stale: HashSet<RunId> = HashSet::new();
    loop {
        if *done.borrow() {
            return;
        }
        let claiming = !*stopping.borrow();
        round(&shared, &clock, claiming, &mut resumed_stale).await;
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            changed = done.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// One renewal and orphan scan.
async fn round(
    shared: &Arc<Shared>,
    clock: &Clock,
    claiming: bool,
    resumed_stale: &mut HashSet<RunId>,
) {
    let engine = &shared.engine;
    match engine.renew_leases(clock.now()).await {
        Ok(renewal) => {
            for id in renewal.lost {
                tracing::error!(run_id = %id, worker = %engine.worker(), "this worker's lease on a run it executes passed and another worker claimed it; it stops here before its next block and continues there");
            }
            for id in renewal.stale {
                if !claiming || !resumed_stale.insert(id) {
                    continue;
                }
                match engine.history().run(id).await {
                    Ok(Some(run)) => {
                        tracing::warn!(run_id = %id, "a run this worker holds is not executing here; resuming it");
                        resume(shared, run);
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::error!(run_id = %id, error = %err, "reading a run to resume failed")
                    }
                }
            }
        }
        Err(err) => {
            tracing::error!(error = %err, worker = %engine.worker(), "renewing this worker's leases failed; trying again shortly (past the lease, other workers take its runs)")
        }
    }
    if !claiming {
        return;
    }
    loop {
        let now = clock.now();
        let claimed = engine
            .history()
            .claim_orphans(engine.worker(), now, engine.lease_until(now), ORPHANS)
            .await;
        match claimed {
            Ok(runs) => {
                let count = runs.len();
                for run in runs {
                    tracing::info!(run_id = %run.id, workflow = %run.workflow, worker = %engine.worker(), "claimed a run whose worker stopped renewing its lease; resuming it");
                    engine.leased(run.id);
                    resume(shared, run);
                }
                if count < ORPHANS {
                    return;
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "claiming orphaned runs failed; trying again shortly");
                return;
            }
        }
    }
}

/// Resumes `run` in a tracked task, as the start resumes unfinished runs.
fn resume(shared: &Arc<Shared>, run: crate::store::history::RunRecord) {
    let id = run.id;
    let engine = shared.engine.clone();
    let handle = tokio::spawn(async move { engine.resume_record(run).await });
    shared.track(id, handle);
}

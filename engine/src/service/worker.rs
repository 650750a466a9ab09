//! The queue consumer: turns queued run requests into runs, each exactly once.
//!
//! The worker claims up to [`BATCH`] entries, maps each to an [`exec::RunRequest`] (trigger kind
//! `record` or `schedule`, the subject from the entry's snapshot, the workflow by name from the
//! loaded set) and submits it. An entry naming a workflow that is not loaded is acknowledged and
//! logged. It wakes when records are written or the scheduler fires, and polls besides.
//!
//! An entry whose run task ends before the run is recorded is tried again at the next wake or
//! poll (not within the same drain), up to [`MAX_ATTEMPTS`] times; after that this process leaves
//! it claimed and logs why. It stays in the queue, so the next start tries it afresh.
//!
//! # Exactly once across a crash
//!
//! An entry is acknowledged once its run is **durably recorded as started**: the worker waits for
//! the run record to be in the history, makes the history durable (one group-commit fsync for the
//! batch), then links the run into the trigger trace and acks the entry. Each run's trigger
//! detail names its queue entry (`people/jane@acme.com updated (queue 01J…)`), which closes the
//! remaining window:
//!
//! - crash before the run record is durable: nothing of the run is durable, so no write was sent
//!   (a write is durable as `sending` before it leaves); the entry is still queued and starts the
//!   run afresh at the next start;
//! - crash after the run record is durable but before the ack is: at the next start
//!   [`settle_started`] finds the run naming the entry, links and acks it instead of starting a
//!   second run, and [`crate::exec::Engine::resume_unfinished`] finishes the run.
//!
//! # Several workers
//!
//! On a store several workers share (PostgreSQL), an entry is claimed under this worker's lease
//! ([`QueueLeases::claim_for`], renewed with its runs by the lease loop, [`super::leases`]): a
//! worker that dies gives its claims back once the lease passes, and another claims them. An
//! entry claimed again that way may have had its run recorded by the dead worker before the ack:
//! an entry older than half a lease is first looked up among the runs, as [`settle_started`]
//! does at start, and acknowledged instead of started again.
//!
//! An entry of a paused workflow ([`super::pause`]) is held: left queued, released when the
//! drain ends and looked at again at the next wake or poll, its trigger trace noting once that
//! it has not started and why.
//!
//! A queued request holds its subject for record triggers until its run exists, and the run
//! holds it from then on (see [`crate::store::in_flight`]): the worker releases the entry's hold
//! when it acknowledges the entry. Runs of one workflow for one subject take turns in the engine
//! (a run whose turn has not come is recorded `queued`), so submitting a batch never makes two
//! of them execute at once.
//!
//! [`exec::RunRequest`]: crate::exec::RunRequest

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use crate::exec::{RunId, RunRequest};
use crate::store::any::AnyRecords;
use crate::store::api::{
    QueueLeases, ReadHistory, ReadPauses, ReadRecords, RunQueue, TriggerTraces, WriteHistory,
    WriteRecords,
};
use crate::store::history::{RunFilter, TriggerKind};
use crate::store::in_flight::queue_holder;
use crate::store::StoreError;
use crate::trigger::{QueueEntry, QueueId};

/// The most entries claimed at once.
pub const BATCH: usize = 64;

/// How many times one process submits a queued request whose run ends before it is recorded.
pub const MAX_ATTEMPTS: u32 = 5;

/// The entries whose runs ended before they were recorded, and those held for a paused workflow.
#[derive(Debug, Default)]
struct Failures {
    attempts: HashMap<QueueId, u32>,
    /// Released when the drain ends, so the next wake or poll retries them, not this drain.
    retry: Vec<QueueId>,
    /// The entries whose trace says they are held (noted once per process).
    noted: HashSet<QueueId>,
}

impl Failures {
    fn failed(&mut self, id: QueueId) {
        let attempts = self.attempts.entry(id).or_default();
        *attempts += 1;
        if *attempts < MAX_ATTEMPTS {
            self.retry.push(id);
        } else {
            tracing::error!(queue_id = %id, attempts = *attempts, "a queued run keeps ending before it is recorded; leaving it queued until the next start");
        }
    }

    fn settled(&mut self, id: QueueId) {
        self.attempts.remove(&id);
    }
}

/// The worker loop; returns when `stop` turns true.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>, poll: Duration) {
    let mut failures = Failures::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let drained = drain(&shared, &stop, &mut failures).await;
        for id in failures.retry.drain(..) {
            shared.queue.release(id);
        }
        if let Err(err) = drained {
            tracing::error!(error = %err, "the trigger queue failed; trying again shortly");
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts runs for every queued entry, a batch at a time.
async fn drain(
    shared: &Shared,
    stop: &watch::Receiver<bool>,
    failures: &mut Failures,
) -> Result<(), StoreError> {
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let claimed = if shared.engine.shared_store() {
                let now = shared.engine.now();
                let until = shared.engine.lease_until(now);
                shared
                    .queue
                    .claim_for(shared.engine.worker(), now, until)
                    .await
            } else {
                shared.queue.claim().await
            };
            match claimed {
                Ok(Some(entry)) => batch.push(entry),
                Ok(None) => break,
                Err(err) => {
                    release(shared, &batch);
                    return Err(err);
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        dispatch(shared, batch, failures).await?;
    }
}

fn release(shared: &Shared, entries: &[QueueEntry]) {
    for entry in entries {
        shared.queue.release(entry.id);
    }
}

/// Submits a batch, waits for its runs to be durably recorded, then links and acks the entries.
async fn dispatch(
    shared: &Shared,
    batch: Vec<QueueEntry>,
    failures: &mut Failures,
) -> Result<(), StoreError> {
    let workflows = shared.workflows();
    let started = match started_elsewhere(shared, &batch).await {
        Ok(started) => started,
        Err(err) => {
            release(shared, &batch);
            return Err(err);
        }
    };
    let mut submitted = Vec::with_capacity(batch.len());
    let mut pending = batch.as_slice();
    while let Some((entry, rest)) = pending.split_first() {
        pending = rest;
        if let Some(run) = started.get(&entry.id) {
            tracing::info!(queue_id = %entry.id, run_id = %run, "a claimed entry's run was already recorded by a worker that stopped; acknowledging it");
            shared.records.link_run(entry.id, &run.to_string()).await?;
            shared.queue.ack(entry.id).await?;
            unhold(shared, entry).await?;
            failures.settled(entry.id);
            continue;
        }
        let name = entry.request.workflow.as_str();
        let Some(prepared) = workflows.get(name) else {
            tracing::warn!(workflow = name, queue_id = %entry.id, "a queued run names a workflow that is not loaded; dropping it");
            shared.queue.ack(entry.id).await?;
            unhold(shared, entry).await?;
            failures.settled(entry.id);
            continue;
        };
        // A paused workflow's requests stay queued, released when the drain ends (see
        // [`super::pause`]); its trace says why once.
        match shared.pauses.paused(name).await {
            Ok(None) => {}
            Ok(Some(pause)) => {
                if failures.noted.insert(entry.id) {
                    let held = format!("not started: {}", pause.describe(name));
                    if let Err(err) = shared.records.note_paused(entry.id, &held).await {
                        tracing::warn!(queue_id = %entry.id, error = %err, "cannot note a held run in the trigger trace");
                    }
                    tracing::info!(workflow = name, queue_id = %entry.id, by = %pause.by, "a queued run is held: its workflow is paused");
                }
                failures.retry.push(entry.id);
                continue;
            }
            Err(err) => {
                release(shared, std::slice::from_ref(entry));
                release(shared, rest);
                return Err(err);
            }
        }
        let request = match request_for(&shared.records, entry).await {
            Ok(request) => request,
            Err(err) => {
                release(shared, std::slice::from_ref(entry));
                release(shared, rest);
                return Err(err);
            }
        };
        submitted.push((entry, shared.engine.submit(prepared, request)));
    }
    let mut recorded = Vec::with_capacity(submitted.len());
    for (entry, run) in submitted {
        let (queued, id) = (entry.id, run.id);
        if run.recorded.wait().await {
            recorded.push((entry, id));
        } else {
            tracing::warn!(queue_id = %queued, run_id = %id, "a run ended before it was recorded; its request stays queued");
            failures.failed(queued);
        }
        shared.track(id, run.handle);
    }
    if recorded.is_empty() {
        return Ok(());
    }
    shared.engine.history().durable().await?;
    for (entry, id) in &recorded {
        let queued = entry.id;
        shared.records.link_run(queued, &id.to_string()).await?;
        shared.queue.ack(queued).await?;
        // The run holds the subject now (it took its hold when it was submitted).
        unhold(shared, entry).await?;
        failures.settled(queued);
        tracing::info!(queue_id = %queued, run_id = %id, "run started");
    }
    shared.engine.history().durable().await?;
    Ok(())
}

/// On a shared store, the runs already recorded for entries of `batch` old enough to have been
/// claimed by a worker whose lease then passed (older than half a lease; a younger entry's only
/// claim is this one), by entry. Empty on sled, where this process made every claim.
async fn started_elsewhere(
    shared: &Shared,
    batch: &[QueueEntry],
) -> Result<HashMap<QueueId, RunId>, StoreError> {
    if !shared.engine.shared_store() {
        return Ok(HashMap::new());
    }
    let half = chrono::TimeDelta::from_std(crate::exec::lease::LEASE / 2)
        .unwrap_or(chrono::TimeDelta::MAX);
    let old = shared.engine.now() - half;
    let Some(oldest) = batch
        .iter()
        .map(|e| e.id.datetime())
        .filter(|at| *at < old)
        .min()
    else {
        return Ok(HashMap::new());
    };
    let runs = shared
        .engine
        .history()
        .list(&RunFilter {
            since: Some(oldest - chrono::TimeDelta::seconds(1)),
            ..RunFilter::default()
        })
        .await?;
    let wanted: HashSet<QueueId> = batch.iter().map(|e| e.id).collect();
    Ok(runs
        .iter()
        .filter(|r| matches!(r.trigger.kind, TriggerKind::Record | TriggerKind::Schedule))
        .filter_map(|r| Some((queue_id_of(r.trigger.detail.as_deref()?)?, r.id)))
        .filter(|(queued, _)| wanted.contains(queued))
        .collect())
}

/// Releases a queue entry's hold on its subject (see [`crate::store::in_flight`]).
async fn unhold(shared: &Shared, entry: &QueueEntry) -> Result<(), StoreError> {
    let Some(subject) = &entry.request.subject else {
        return Ok(());
    };
    let triggers = shared.workflows().triggers().clone();
    let holder = queue_holder(entry.id);
    let queued = match &shared.records {
        // sled: on the calling thread, as before.
        AnyRecords::Sled(records) => {
            records.release(subject, &holder, &triggers, chrono::Utc::now())?
        }
        records => {
            records
                .release(subject, &holder, triggers, chrono::Utc::now())
                .await?
        }
    };
    if !queued.is_empty() {
        shared.wake.notify_one();
    }
    Ok(())
}

/// The executor's request for a queue entry, on a synchronous caller (see
/// [`AnyRecords::wait`]).
pub fn run_request(records: &AnyRecords, entry: &QueueEntry) -> Result<RunRequest, StoreError> {
    records.wait(request_for(records, entry))?
}

/// The executor's request for a queue entry.
pub async fn request_for(
    records: &AnyRecords,
    entry: &QueueEntry,
) -> Result<RunRequest, StoreError> {
    let request = &entry.request;
    let subject = match &request.subject {
        None => None,
        Some(subject) => {
            let fields = match &request.snapshot {
                Some(fields) => fields.clone(),
                None => records.get(subject).await?.unwrap_or_default(),
            };
            Some(subject.with_record(fields))
        }
    };
    Ok(RunRequest {
        trigger: entry.trigger(),
        ..RunRequest::manual(subject)
    })
}

pub use crate::store::queue::queue_id_of;

/// Links and acks the queued entries whose runs a previous process already recorded (it stopped
/// between recording the run and acknowledging the entry). Returns how many.
pub async fn settle_started(shared: &Shared) -> Result<usize, StoreError> {
    let pending = shared.queue.pending().await?;
    let Some(oldest) = pending.iter().map(|e| e.id.datetime()).min() else {
        return Ok(0);
    };
    let runs = shared
        .engine
        .history()
        .list(&RunFilter {
            since: Some(oldest - chrono::TimeDelta::seconds(1)),
            ..RunFilter::default()
        })
        .await?;
    let started: HashMap<QueueId, RunId> = runs
        .iter()
        .filter(|r| matches!(r.trigger.kind, TriggerKind::Record | TriggerKind::Schedule))
        .filter_map(|r| Some((queue_id_of(r.trigger.detail.as_deref()?)?, r.id)))
        .collect();
    let mut settled = 0;
    for entry in pending {
        if let Some(run) = started.get(&entry.id) {
            shared.records.link_run(entry.id, &run.to_string()).await?;
            shared.queue.ack(entry.id).await?;
            unhold(shared, &entry).await?;
            settled += 1;
        }
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_id_reads_back_from_the_trigger_detail() {
        let id = QueueId::generate();
        let detail = format!("people/jane@acme.com updated (queue {id})");
        assert_eq!(queue_id_of(&detail), Some(id));
        assert_eq!(queue_id_of("people/jane@acme.com updated"), None);
        assert_eq!(queue_id_of("x (queue nope)"), None);
    }

    #[test]
    fn a_failing_entry_is_retried_a_bounded_number_of_times() {
        let id = QueueId::generate();
        let mut failures = Failures::default();
        for _ in 1..MAX_ATTEMPTS {
            failures.failed(id);
            assert_eq!(failures.retry.drain(..).collect::<Vec<_>>(), [id]);
        }
        failures.failed(id);
        assert!(failures.retry.is_empty());
        failures.settled(id);
        assert!(failures.attempts.is_empty());
    }
}

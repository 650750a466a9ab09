//! Cancellation: a run stops between steps once asked to; a run nobody is executing stops at once.
//!
//! A run that is executing (a task of this process is walking it, or waiting for its turn) is
//! asked to stop. Two ways to ask, because sled lets one process hold a data dir: inside the
//! process (the API, `serve`), [`Cancels::request`] sets an in-memory flag; from another process
//! (`blockyard cancel` while `blockyard run` holds the store), a durable request is written
//! through the store's [`CancelStore`] (on sled a marker file `DATA_DIR/cancel/RUN_ID`,
//! [`crate::store::cancels`]; on PostgreSQL a row every worker sees) and the executor looks for
//! it before starting each block (it reads them at most every 100 ms, so one is seen within
//! that). A block
//! already sending finishes first: cancellation never leaves a write with an unknown outcome.
//! Either way the request is durable before it is acknowledged: the marker is written (an
//! in-process request writes one too) and fsynced with its directory, so a run resumed after a
//! crash still finds it and stops before its next block. The marker goes when the run finishes.
//!
//! On a store several workers share, a run executing on another worker (its lease there live,
//! [`super::lease`]) is asked the durable way, through the store: that worker reads it before its
//! next block.
//!
//! A run that is *not* executing (waiting for approval, or left unfinished by a stopped process)
//! has nothing to ask: [`mark_cancelled`] records it `cancelled` at once, so its approval gate
//! never opens and `resume` leaves it alone ([`super::Engine::cancel`] in a process,
//! `blockyard cancel` when no process holds the data dir).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::any::AnyCancels;
use crate::store::api::{CancelStore, ReadHistory, WriteHistory};
pub use crate::store::cancels::marker_dir;
use crate::store::cancels::CancelMarkers;
use crate::store::history::{RunId, RunRecord, RunStatus, StepStatus};
use crate::store::StoreError;

use super::ExecError;

/// Asks the process running `run` in `data_dir` to stop it between steps. The marker is on disk
/// when this returns (the file and its directory fsynced).
pub fn request_by_marker(data_dir: &Path, run: RunId) -> std::io::Result<()> {
    CancelMarkers::in_data_dir(data_dir).write(run)
}

/// How often the durable requests are read again: a cancel from another process is seen within
/// this (between steps, as always), and a run no longer costs a lookup per block.
const SCAN_EVERY: Duration = Duration::from_millis(100);

/// The cancel requests of one engine: in-memory flags, and the store's durable requests
/// ([`CancelStore`]: marker files on sled, a table on PostgreSQL).
#[derive(Debug)]
pub(crate) struct Cancels {
    flags: Mutex<HashSet<RunId>>,
    store: AnyCancels,
    /// The requests found by the last read of the store, and when it was read.
    markers: Mutex<(Option<Instant>, HashSet<RunId>)>,
}

impl Cancels {
    pub(crate) fn new(store: AnyCancels) -> Cancels {
        Cancels {
            flags: Mutex::default(),
            store,
            markers: Mutex::default(),
        }
    }

    /// Flags `run`: it stops before its next block. Durable only once [`Cancels::persist`] wrote
    /// its request.
    pub(crate) fn request(&self, run: RunId) {
        self.flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run);
    }

    /// Writes `run`'s request durably, so it survives a crash: the run, resumed, finds it. On
    /// sled the marker file and its directory are fsynced on a blocking thread.
    pub(crate) async fn persist(&self, run: RunId) -> Result<(), ExecError> {
        match &self.store {
            AnyCancels::Sled(markers) => {
                let writer = markers.clone();
                tokio::task::spawn_blocking(move || writer.write(run))
                    .await
                    .map_err(|err| ExecError::Task {
                        message: err.to_string(),
                    })?
                    .map_err(|err| ExecError::CancelMarker {
                        id: run,
                        path: markers.marker(run),
                        message: err.to_string().to_lowercase(),
                    })
            }
            store => Ok(store.request(run).await?),
        }
    }

    pub(crate) async fn is_requested(&self, run: RunId) -> bool {
        let flagged = {
            let flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
            !flags.is_empty() && flags.contains(&run)
        };
        if flagged {
            return true;
        }
        let stale = {
            let markers = self.markers.lock().unwrap_or_else(|e| e.into_inner());
            markers.0.is_none_or(|at| at.elapsed() >= SCAN_EVERY)
        };
        if stale {
            let read_at = Instant::now();
            match self.store.requested().await {
                Ok(requested) => {
                    *self.markers.lock().unwrap_or_else(|e| e.into_inner()) =
                        (Some(read_at), requested);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reading the cancel requests failed; read again before the next block")
                }
            }
        }
        self.markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .contains(&run)
    }

    /// Forgets a finished run's request (and removes its durable one, when one was seen or
    /// written).
    pub(crate) async fn clear(&self, run: RunId) {
        let flagged = {
            let mut flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
            !flags.is_empty() && flags.remove(&run)
        };
        let marked = self
            .markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .remove(&run);
        if flagged || marked {
            if let Err(err) = self.store.clear(run).await {
                tracing::warn!(run_id = %run, error = %err, "forgetting the finished run's cancel request failed");
            }
        }
    }
}

/// Why a run nothing executes is cancelled, saying what it was doing: waiting for approval of
/// which block, waiting to retry, queued, or left by a stopped process.
pub async fn reason(
    history: &(impl ReadHistory + Sync),
    run: &RunRecord,
) -> Result<String, StoreError> {
    Ok(match run.status {
        RunStatus::WaitingApproval => {
            let mut waiting: Vec<String> = Vec::new();
            for step in history.steps(run.id).await? {
                waiting.retain(|b| *b != step.block);
                if step.status == StepStatus::WaitingApproval {
                    waiting.push(step.block);
                }
            }
            match waiting.as_slice() {
                [] => "cancelled while waiting for approval".to_owned(),
                [block] => format!("cancelled while waiting for approval of block `{block}`"),
                blocks => format!(
                    "cancelled while waiting for approval of blocks {}",
                    blocks
                        .iter()
                        .map(|b| format!("`{b}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        RunStatus::Retrying => "cancelled while waiting to retry".to_owned(),
        RunStatus::Waiting => {
            let steps = history.steps(run.id).await?;
            match steps.iter().rev().find(|s| s.status == StepStatus::Waiting) {
                Some(step) => format!("cancelled while waiting in block `{}`", step.block),
                None => "cancelled while waiting".to_owned(),
            }
        }
        RunStatus::Held => "cancelled while held by the mass-change guard".to_owned(),
        RunStatus::Queued => "cancelled before it started".to_owned(),
        _ => "cancelled before it was resumed".to_owned(),
    })
}

/// Records an unfinished run that nothing is executing as `cancelled` now, for `reason` (see
/// [`reason`]; a parked run is better cancelled with [`WriteHistory::cancel_parked`], atomic
/// against its timer). Not flushed: the caller makes it durable.
pub async fn mark_cancelled(
    history: &(impl WriteHistory + Sync),
    mut run: RunRecord,
    reason: String,
) -> Result<RunRecord, StoreError> {
    run.status = RunStatus::Cancelled;
    run.error = Some(reason);
    let now = chrono::Utc::now();
    run.finished_at = Some(now);
    run.wake_at = None;
    // A step that waited for approval stops saying how to approve it.
    for mut step in history.steps(run.id).await? {
        if step.status == StepStatus::WaitingApproval && step.finished_at.is_none() {
            step.finished_at = Some(now);
            step.note = Some("cancelled while waiting for approval".to_owned());
            history.put_steps(&[&step]).await?;
        }
    }
    history.put_run(&run).await?;
    Ok(run)
}

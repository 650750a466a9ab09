//! Retention without a person: `serve` blanks old payloads and deletes old runs by itself, as the
//! config's `retention:` says ([`Retention`]).
//!
//! One task wakes every [`Retention::every`] (at start too) and makes one pass: first it deletes
//! the whole runs that finished more than `runs_after` ago
//! ([`WriteHistory::delete_finished_before`]), then it blanks the payloads of the runs that
//! finished more than `payloads_after` ago ([`WriteHistory::prune_batch`]). A pass goes through
//! the history in batches of [`BATCH`] runs, each on the store's own terms (sled: a blocking
//! thread; PostgreSQL: its server), yielding between batches and stopping between them when the
//! service stops; a run not finished is never touched. What it freed is counted in `/metrics`
//! (`blockyard_retention_runs_deleted_total`, `blockyard_retention_payloads_pruned_total`). Time
//! is the service's [`Clock`], so tests run it under paused tokio time.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use crate::store::api::WriteHistory;
use crate::store::history::{BatchReport, RunId};
use crate::store::StoreError;
use crate::trigger::scheduler::Clock;

/// How many runs one batch looks at.
pub const BATCH: usize = 500;

/// How often a pass runs when `retention.every` is not set.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);

/// `retention:` in `blockyard.yaml`, checked. Both ages unset (the default): nothing is pruned or
/// deleted by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Blank the recorded payloads (requests, responses, saved fields, outputs) of runs finished
    /// longer ago than this; the run records and step statuses stay.
    pub payloads_after: Option<Duration>,
    /// Delete whole runs finished longer ago than this.
    pub runs_after: Option<Duration>,
    /// How often a pass runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            payloads_after: None,
            runs_after: None,
            every: DEFAULT_EVERY,
        }
    }
}

impl Retention {
    /// True when there is nothing to do (no loop runs).
    pub fn is_off(&self) -> bool {
        self.payloads_after.is_none() && self.runs_after.is_none()
    }
}

/// What one pass freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    /// Whole runs deleted.
    pub runs_deleted: usize,
    /// Runs whose payloads were blanked.
    pub payloads_pruned: usize,
}

/// `now - age`, or `None` when nothing can be that old.
fn cutoff(now: DateTime<Utc>, age: Duration) -> Option<DateTime<Utc>> {
    now.checked_sub_signed(TimeDelta::from_std(age).ok()?)
}

/// The retention loop; returns when `stop` turns true.
pub async fn run<H: WriteHistory + Send + Sync>(
    history: H,
    retention: Retention,
    mut stop: watch::Receiver<bool>,
    clock: Clock,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match pass(&history, &retention, clock.now(), &stop).await {
            Ok(Freed {
                runs_deleted: 0,
                payloads_pruned: 0,
            }) => {}
            Ok(freed) => tracing::info!(
                runs_deleted = freed.runs_deleted,
                payloads_pruned = freed.payloads_pruned,
                "retention freed old history"
            ),
            Err(err) => {
                tracing::error!(error = %err, "retention failed; it tries again at its next pass")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retention.every) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// One pass at `now`: old runs deleted, then old payloads blanked, batch by batch (each counted
/// in `/metrics` as it is done). Stops early, between batches, once `stop` is true.
pub async fn pass<H: WriteHistory>(
    history: &H,
    retention: &Retention,
    now: DateTime<Utc>,
    stop: &watch::Receiver<bool>,
) -> Result<Freed, StoreError> {
    let metrics = crate::server::metrics::metrics();
    let mut freed = Freed::default();
    if let Some(cutoff) = retention.runs_after.and_then(|age| cutoff(now, age)) {
        batches(
            stop,
            |after| history.delete_finished_before(cutoff, after, BATCH),
            |batch| {
                freed.runs_deleted += batch.runs;
                metrics.retention_runs_deleted.inc_by(batch.runs as u64);
            },
        )
        .await?;
    }
    if let Some(cutoff) = retention.payloads_after.and_then(|age| cutoff(now, age)) {
        batches(
            stop,
            |after| history.prune_batch(cutoff, after, BATCH),
            |batch| {
                freed.payloads_pruned += batch.runs;
                metrics.retention_payloads_pruned.inc_by(batch.runs as u64);
            },
        )
        .await?;
    }
    Ok(freed)
}

/// Deletes every whole run finished before `cutoff` now, batch by batch (`history prune --runs`,
/// `POST /api/history/prune` with `"runs": true`; not counted as retention in `/metrics`):
/// the runs and steps deleted.
pub async fn delete_finished_before<H: WriteHistory>(
    history: &H,
    cutoff: DateTime<Utc>,
) -> Result<(usize, usize), StoreError> {
    let (_keep, never) = watch::channel(false);
    let (mut runs, mut steps) = (0, 0);
    batches(
        &never,
        |after| history.delete_finished_before(cutoff, after, BATCH),
        |batch| {
            runs += batch.runs;
            steps += batch.steps;
        },
    )
    .await?;
    Ok((runs, steps))
}

/// Runs `batch` from the first run to the last (or until `stop`), telling `done` each report.
async fn batches<F, Fut>(
    stop: &watch::Receiver<bool>,
    batch: F,
    mut done: impl FnMut(&BatchReport),
) -> Result<(), StoreError>
where
    F: Fn(Option<RunId>) -> Fut,
    Fut: std::future::Future<Output = Result<BatchReport, StoreError>>,
{
    let mut after = None;
    loop {
        let report = batch(after).await?;
        done(&report);
        match report.next {
            Some(next) if !*stop.borrow() => after = Some(next),
            _ => return Ok(()),
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_past_what_a_date_holds_has_no_cutoff() {
        let now = Utc::now();
        assert_eq!(
            cutoff(now, Duration::from_secs(86_400)),
            Some(now - TimeDelta::days(1))
        );
        assert_eq!(cutoff(now, Duration::from_secs(u64::MAX / 2)), None);
    }
}

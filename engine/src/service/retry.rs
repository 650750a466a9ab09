//! Bulk retry after an outage (`blockyard retry-failed`): which failed or `needs_attention` live
//! runs match the filters, and the durable mark that keeps each from being retried twice.
//!
//! A run is marked (in the store: [`crate::store::retries`], behind the
//! [`crate::store::api::WriteRetryMarks`] seam) **before** its live replay starts,
//! then the mark names the replay run once it exists; a mark without a run (a process stopped in
//! between) still counts as retried, so a crash can leave a run un-retried but never retry it
//! twice. A retry is an ordinary live replay ([`crate::replay`]): a new run linked to the original
//! by `replay_of`; if it fails too, it is a candidate of its own next time.
//!
//! [`retry_failed`] is the whole command, shared by the CLI on a data dir and
//! `POST /api/retry-failed` on a running service: a dry listing, or the replays, each as a
//! [`RetryEntry`] in the order the CLI prints them.

use chrono::{DateTime, Utc};

use crate::exec::{Engine, RunRecord};
use crate::replay::{replay, ReplayOptions, Setup};
use crate::store::api::{Backend, ReadHistory, ReadRetryMarks, WriteRetryMarks};
use crate::store::history::{RunFilter, RunMode, RunStatus};
use crate::store::StoreError;

pub use crate::store::retries::{Retries, RetryMark};

/// Which runs to retry.
#[derive(Debug, Clone, Default)]
pub struct RetryFilter {
    pub workflow: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// A piece of the run's error text (case-insensitive).
    pub error: Option<String>,
}

/// The live runs that failed or need attention and match `filter`, oldest first, each with its
/// retry mark when it has one.
pub async fn candidates(
    history: &(impl ReadHistory + Sync),
    retries: &(impl ReadRetryMarks + Sync),
    filter: &RetryFilter,
) -> Result<Vec<(RunRecord, Option<RetryMark>)>, StoreError> {
    let needle = filter.error.as_ref().map(|e| e.to_lowercase());
    let mut out = Vec::new();
    for status in [RunStatus::Failed, RunStatus::NeedsAttention] {
        let runs = history
            .list(&RunFilter {
                workflow: filter.workflow.clone(),
                status: Some(status),
                since: filter.since,
                ..RunFilter::default()
            })
            .await?;
        for run in runs {
            if run.mode != RunMode::Live {
                continue;
            }
            if let Some(needle) = &needle {
                let error = run.error.as_deref().unwrap_or_default().to_lowercase();
                if !error.contains(needle.as_str()) {
                    continue;
                }
            }
            let mark = retries.mark(&run.id.to_string()).await?;
            out.push((run, mark));
        }
    }
    out.sort_by_key(|(run, _)| run.created_at);
    Ok(out)
}

/// What `retry-failed` did (or would do) with one candidate run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetryEntry {
    /// The failed (or `needs_attention`) run.
    pub run: String,
    pub workflow: String,
    pub status: String,
    /// `collection/key`, when the run has a subject.
    pub subject: Option<String>,
    pub error: Option<String>,
    pub action: RetryAction,
    /// `skipped`: the mark that says it was retried already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<RetryMark>,
    /// `replayed`: the new run and its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayedRun>,
    /// `replay_failed`: why the replay did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_error: Option<String>,
}

/// What happened to a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAction {
    /// A dry listing: it would be replayed.
    WouldReplay,
    /// Already retried (by another invocation, maybe at the same time): left alone.
    Skipped,
    /// Replayed live; [`RetryEntry::replay`] says how it ended.
    Replayed,
    /// The replay could not run; [`RetryEntry::replay_error`] says why.
    ReplayFailed,
}

/// The run a retry started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayedRun {
    pub id: String,
    pub status: String,
}

impl RetryEntry {
    fn new(run: &RunRecord, action: RetryAction) -> RetryEntry {
        RetryEntry {
            run: run.id.to_string(),
            workflow: run.workflow.clone(),
            status: run.status.name().to_owned(),
            subject: run
                .subject
                .as_ref()
                .map(|s| format!("{}/{}", s.collection, s.key)),
            error: run.error.clone(),
            action,
            retried: None,
            replay: None,
            replay_error: None,
        }
    }

    /// Whether this entry is a replay that did not end `succeeded`.
    pub fn unsuccessful(&self) -> bool {
        match self.action {
            RetryAction::Replayed => self
                .replay
                .as_ref()
                .is_none_or(|r| r.status != RunStatus::Succeeded.name()),
            RetryAction::ReplayFailed => true,
            RetryAction::WouldReplay | RetryAction::Skipped => false,
        }
    }
}

/// `retry-failed`: the candidates matching `filter` ([`candidates`]); without `replay`, those
/// already retried as `skipped` and the others as `would_replay`; with it, the skipped ones first,
/// then each other one claimed (durably, before anything is sent) and replayed live with the
/// engine's setup, in the order they were created. `by` is recorded on each mark.
pub async fn retry_failed(
    engine: &Engine,
    filter: &RetryFilter,
    by: &str,
    replay_them: bool,
) -> Result<Vec<RetryEntry>, StoreError> {
    let store = engine.store();
    let retries = store.retries()?;
    let found = candidates(engine.history(), &retries, filter).await?;
    let mut out = Vec::new();
    for (run, mark) in &found {
        match mark {
            Some(mark) => out.push(RetryEntry {
                retried: Some(mark.clone()),
                ..RetryEntry::new(run, RetryAction::Skipped)
            }),
            None if replay_them => {}
            None => out.push(RetryEntry::new(run, RetryAction::WouldReplay)),
        }
    }
    if !replay_them {
        return Ok(out);
    }
    for (run, _) in found.iter().filter(|(_, mark)| mark.is_none()) {
        let id = run.id.to_string();
        if let Some(mark) = retries.claim(&id, by, Utc::now()).await? {
            out.push(RetryEntry {
                retried: Some(mark),
                ..RetryEntry::new(run, RetryAction::Skipped)
            });
            continue;
        }
        // The mark is durable before the replay sends anything: never twice, even after a crash.
        store.flush().await?;
        let options = ReplayOptions {
            from: None,
            offline: false,
            setup: Setup::Engine,
        };
        match replay(engine, run.id, None, options).await {
            Ok(replayed) => {
                let new = &replayed.outcome.run;
                if let Some(mark) = retries.mark(&id).await? {
                    retries.link(&id, mark, &new.id.to_string()).await?;
                }
                out.push(RetryEntry {
                    replay: Some(ReplayedRun {
                        id: new.id.to_string(),
                        status: new.status.name().to_owned(),
                    }),
                    ..RetryEntry::new(run, RetryAction::Replayed)
                });
            }
            Err(err) => out.push(RetryEntry {
                replay_error: Some(err.to_string()),
                ..RetryEntry::new(run, RetryAction::ReplayFailed)
            }),
        }
    }
    store.flush().await?;
    Ok(out)
}

//! The mass-change guard: past a workflow's limit of destructive writes in a sliding window, its
//! runs stop before their destructive write, durably `held`, until one operator decision releases
//! or cancels the whole held batch.
//!
//! A destructive write is a live call whose action says `destructive: true` in its preset (a
//! delete, a removal, a deactivation), or whose `request.method` is `DELETE`. Every one counts,
//! whatever started the run (a trigger, a manual run, `--force`, a live replay); dry runs and
//! offline replays send nothing and count nothing. When the walk reaches such a block, [`gate`]
//! asks the store ([`crate::store::guard`]) to admit it: under the limit (the workflow's
//! `guard:`, else the config's), it is counted and sent; at the limit, the block's step is
//! recorded `held` (with why), nothing is sent, and the run ends the walk `held` (its record's
//! `error` says why). Blocks without a guard are still counted, so a guard added later sees the
//! writes already in its window. A block counted once is not counted again when retried or
//! resumed. Runs already past their write are not affected.
//!
//! [`Engine::guard_release`] marks every run of the workflow held now as released (durably, before
//! any is continued) and continues them: their destructive writes go without counting.
//! [`Engine::guard_cancel`] cancels them. Both act on the batch held when they are called; a run
//! held later is the next batch.

use serde::Serialize;

use super::{Cancel, Engine, ExecError, Prepared, RunOutcome};
use crate::compile::Guard;
use crate::store::api::{ReadGuard, ReadHistory, WriteGuard, WriteHistory};
use crate::store::guard::{Admission, KEEP};
use crate::store::history::{RunFilter, RunId, RunMode, RunRecord, RunStatus};

/// What the walk does with a block about to start.
pub(crate) enum GuardGate {
    /// Not a destructive live write, released, or admitted (and counted): send it.
    Go,
    /// Held: why, for the step's note and the run's record.
    Hold(String),
}

/// Whether the destructive write of `node` may leave now.
pub(crate) async fn gate(
    engine: &Engine,
    prepared: &Prepared,
    node: petgraph::graph::NodeIndex,
    run: &RunRecord,
    persist: bool,
) -> Result<GuardGate, ExecError> {
    if !persist || run.mode != RunMode::Live || !prepared.destructive[node.index()] {
        return Ok(GuardGate::Go);
    }
    let inner = &engine.inner;
    if inner.guard.is_released(run.id).await? {
        return Ok(GuardGate::Go);
    }
    let workflow = &prepared.workflow;
    let guard = engine.guard_of(workflow);
    let size = match (guard, workflow.trigger.records) {
        (Some(_), Some(collection)) => inner.records.collection_size(collection).await?,
        _ => 0,
    };
    let allowed = guard.map(|g| g.allowed(size));
    let per = guard.map(|g| g.per).unwrap_or(KEEP);
    let block = workflow.graph[node].id.as_str();
    let now = inner.options.clock.now();
    match inner
        .guard
        .admit(&workflow.name, run.id, block, now, per, allowed)
        .await?
    {
        Admission::Admitted => Ok(GuardGate::Go),
        Admission::Held { count, allowed } => {
            let guard = guard.expect("a held write has a guard");
            Ok(GuardGate::Hold(format!(
                "held by the mass-change guard before its destructive write: {count} destructive writes of `{}` in the last {} reached its limit of {allowed} (`guard: {{ {} }}`); `blockyard guard release {}` sends the held batch, `blockyard guard cancel {}` cancels it",
                workflow.name,
                guard.window(),
                guard.describe(),
                workflow.name,
                workflow.name,
            )))
        }
    }
}

/// Notes on the trigger trace entry that started a held run why it is held, so `triggers why`
/// says it beside the run. A failure to note it is logged, not the run's.
pub(crate) async fn trace_held(engine: &Engine, run: &RunRecord) {
    let (Some(subject), Some(why)) = (run.subject.as_ref(), run.error.as_deref()) else {
        return;
    };
    let Some(subject) = super::records_subject(subject) else {
        return;
    };
    let queued = run
        .trigger
        .detail
        .as_deref()
        .and_then(crate::store::queue::queue_id_of);
    if let Err(err) = engine
        .inner
        .records
        .note_held(&subject, &run.id.to_string(), queued, why)
        .await
    {
        tracing::warn!(run_id = %run.id, error = %err, "cannot note the held run in the trigger trace");
    }
}

/// What a release or a cancel of a held batch did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchDecision {
    pub workflow: String,
    /// The runs of the batch, oldest first.
    pub runs: Vec<RunId>,
    /// Released: the status each run ended in, in `runs`' order. Cancelled: `cancelled`.
    pub statuses: Vec<RunStatus>,
}

/// Where a workflow's guard stands.
#[derive(Debug, Clone, Serialize)]
pub struct GuardStatus {
    pub workflow: String,
    /// `max_writes: 5, per: 1h`, or none.
    pub guard: Option<String>,
    /// Where the guard comes from: `workflow`, `config`, or none.
    pub source: Option<&'static str>,
    /// Destructive writes counted in the window now (over the guard's `per`, else 30 days).
    pub counted: u64,
    /// The limit now (a share is of the collection's current size).
    pub allowed: Option<u64>,
    /// The runs held now, oldest first.
    pub held: Vec<RunId>,
}

impl Engine {
    /// The guard that applies to `workflow`: its own, else the config's (a share of a collection
    /// applies to workflows with one only; their own `max_share` without one does not compile).
    pub fn guard_of(&self, workflow: &crate::compile::Workflow) -> Option<Guard> {
        workflow.guard.or(self.inner.options.guard.filter(|g| {
            !matches!(g.limit, crate::compile::GuardLimit::MaxShare(_))
                || workflow.trigger.records.is_some()
        }))
    }

    /// The runs of `workflow` held by the guard now, oldest first.
    pub async fn held_runs(&self, workflow: &str) -> Result<Vec<RunRecord>, ExecError> {
        let mut runs = self
            .inner
            .history
            .list(&RunFilter {
                workflow: Some(workflow.to_owned()),
                status: Some(RunStatus::Held),
                ..RunFilter::default()
            })
            .await?;
        runs.reverse();
        Ok(runs)
    }

    /// Where the guard of `prepared`'s workflow stands.
    pub async fn guard_status(&self, prepared: &Prepared) -> Result<GuardStatus, ExecError> {
        let workflow = &prepared.workflow;
        let guard = self.guard_of(workflow);
        let per = guard.map(|g| g.per).unwrap_or(KEEP);
        let counted = self
            .inner
            .guard
            .count(&workflow.name, self.inner.options.clock.now(), per)
            .await?;
        let size = match (guard, workflow.trigger.records) {
            (Some(_), Some(collection)) => self.inner.records.collection_size(collection).await?,
            _ => 0,
        };
        let allowed = guard.map(|g| g.allowed(size));
        Ok(GuardStatus {
            workflow: workflow.name.clone(),
            guard: guard.map(|g| g.describe()),
            source: match (workflow.guard, guard) {
                (Some(_), _) => Some("workflow"),
                (None, Some(_)) => Some("config"),
                (None, None) => None,
            },
            counted,
            allowed,
            held: self
                .held_runs(&workflow.name)
                .await?
                .iter()
                .map(|r| r.id)
                .collect(),
        })
    }

    /// Releases every run of `workflow` held now: each is marked released (durably, before any
    /// continues), then continued; its destructive writes are sent without counting. Returns
    /// the status each ended in.
    pub async fn guard_release(&self, workflow: &str) -> Result<BatchDecision, ExecError> {
        let held = self.held_runs(workflow).await?;
        let now = chrono::Utc::now();
        for run in &held {
            self.inner.guard.release(run.id, now).await?;
        }
        self.inner.history.durable().await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, run) in held.iter().enumerate() {
            let engine = self.clone();
            let id = run.id;
            tasks.spawn(async move { (i, engine.continue_held(id).await) });
        }
        let mut statuses = vec![RunStatus::Held; held.len()];
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let (i, outcome) = joined.map_err(|err| ExecError::Task {
                message: err.to_string(),
            })?;
            match outcome {
                Ok(Some(outcome)) => statuses[i] = outcome.run.status,
                Ok(None) => {
                    if let Some(run) = self.inner.history.run(held[i].id).await? {
                        statuses[i] = run.status;
                    }
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        tracing::info!(workflow, runs = held.len(), "held batch released");
        Ok(BatchDecision {
            workflow: workflow.to_owned(),
            runs: held.iter().map(|r| r.id).collect(),
            statuses,
        })
    }

    /// Continues a released run if it is still held and nothing executes it (`None` when it was
    /// cancelled or continued meanwhile).
    async fn continue_held(&self, id: RunId) -> Result<Option<RunOutcome>, ExecError> {
        let (run, active) = {
            let _deciding = self.lock_deciding().await;
            let run = self
                .inner
                .history
                .run(id)
                .await?
                .ok_or(ExecError::UnknownRun { id })?;
            if run.status != RunStatus::Held || self.is_active(id) {
                return Ok(None);
            }
            (run, self.activate(id))
        };
        let outcome = self.continue_active(run).await;
        drop(active);
        outcome.map(Some)
    }

    /// Cancels every run of `workflow` held now: nothing of theirs is sent.
    pub async fn guard_cancel(&self, workflow: &str) -> Result<BatchDecision, ExecError> {
        let held = self.held_runs(workflow).await?;
        let mut statuses = Vec::with_capacity(held.len());
        for run in &held {
            statuses.push(match self.cancel(run.id).await? {
                Cancel::Cancelled(run) | Cancel::Finished(run) => run.status,
                Cancel::Requested => RunStatus::Cancelled,
            });
        }
        tracing::info!(workflow, runs = held.len(), "held batch cancelled");
        Ok(BatchDecision {
            workflow: workflow.to_owned(),
            runs: held.iter().map(|r| r.id).collect(),
            statuses,
        })
    }
}

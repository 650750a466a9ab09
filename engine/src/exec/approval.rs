//! Approval: a block with `approval: required` waits for an administrator before it runs.
//!
//! When the walk reaches such a block with no decision recorded, it records the block's step as
//! `waiting_approval` and does not start it (independent branches go on); when nothing else can
//! run, the run stops in `waiting_approval`, durably. [`Engine::approve`] and [`Engine::reject`]
//! record the decision in the store's `approvals` tree ([`crate::store::approvals`]), make it durable,
//! and then resume the run in the calling process, like `blockyard resume`: the resumed walk finds
//! the decision and runs the block (approved) or settles it failed with "rejected by an
//! administrator" (rejected), so `on_failure` routes or the run fails. A decision is kept, so a
//! crash after it is recorded and before the run finishes is finished by `approve` again or by
//! `resume RUN`. A run cancelled while it waited cannot be decided on any more
//! ([`ExecError::Cancelled`]): a cancel and a decision take the same lock, so a cancel either
//! comes first or finds the run executing again and asks it to stop before its next block. Dry
//! runs and offline replays do not wait (nothing is sent or the write is only
//! planned), except that an offline replay of a run waiting for approval stops at the same block,
//! as its recording does (nothing answers a call never sent).

use chrono::Utc;

use super::{Engine, ExecError, RunOutcome};
use crate::store::api::{ApprovalStore, ReadHistory, WriteHistory};
pub use crate::store::approvals::Decision;
use crate::store::history::{RunId, RunStatus, StepStatus};

/// The failure message of a rejected block.
pub const REJECTED: &str = "rejected by an administrator";

/// Who decides, and why (`--comment`, the API's `comment`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decider {
    pub by: Option<String>,
    pub comment: Option<String>,
}

impl Engine {
    /// Approves `block` of a run waiting for it, and continues the run to its end (or to the
    /// next block waiting for approval).
    pub async fn approve(&self, run: RunId, block: &str) -> Result<RunOutcome, ExecError> {
        self.decide(run, block, true, Decider::default()).await
    }

    /// Rejects `block` of a run waiting for it: the block fails ("rejected by an administrator"),
    /// its `on_failure` edges are followed, else the run fails.
    pub async fn reject(&self, run: RunId, block: &str) -> Result<RunOutcome, ExecError> {
        self.decide(run, block, false, Decider::default()).await
    }

    /// Approves (`approved`) or rejects `block`, recording who decided and their comment: the
    /// block's waiting step then says so in place of how to approve it.
    pub async fn decide(
        &self,
        id: RunId,
        block: &str,
        approved: bool,
        decider: Decider,
    ) -> Result<RunOutcome, ExecError> {
        let history = self.history();
        // Decided under the lock a cancel takes, and marked as executing before it is released:
        // a cancel either came first (refused here) or asks the continued run to stop.
        let active = {
            let _deciding = self.lock_deciding().await;
            let run = history.run(id).await?.ok_or(ExecError::UnknownRun { id })?;
            if run.status == RunStatus::Cancelled {
                return Err(ExecError::Cancelled {
                    id,
                    block: block.to_owned(),
                });
            }
            let steps = history.steps(id).await?;
            let waiting_step = steps
                .iter()
                .rev()
                .find(|s| s.block == block)
                .filter(|s| s.status == StepStatus::WaitingApproval);
            let waiting = run.status == RunStatus::WaitingApproval && !self.is_active(id);
            let Some(waiting_step) = waiting_step.filter(|_| waiting) else {
                return Err(ExecError::NotWaiting {
                    id,
                    block: block.to_owned(),
                });
            };
            let decision = Decision {
                approved,
                at: Utc::now(),
                by: decider.by,
                comment: decider.comment,
            };
            // The step stops saying how to approve it: it says who decided, when and why.
            let mut decided = waiting_step.clone();
            decided.finished_at = Some(decision.at);
            decided.note = Some(decision.note());
            history.put_steps(&[&decided]).await?;
            tracing::info!(run_id = %id, block, by = decision.by.as_deref().unwrap_or(""), approved, "approval decision recorded");
            self.inner.approvals.decide(id, block, decision).await?;
            self.activate(id)
        };
        history.durable().await?;
        tracing::info!(run_id = %id, block, approved, "approval decided");
        let run = history.run(id).await?.ok_or(ExecError::UnknownRun { id })?;
        let outcome = self.continue_active(run).await;
        drop(active);
        outcome
    }

    /// The recorded decision on `block` of `run`.
    pub async fn decision(&self, run: RunId, block: &str) -> Result<Option<Decision>, ExecError> {
        Ok(self.inner.approvals.decision(run, block).await?)
    }
}

/// What the walk does with a block about to start.
pub(crate) enum Gate {
    /// Run it (no approval needed, or approved).
    Go,
    /// Record it as waiting and leave it.
    Wait,
    /// Settle it failed: rejected.
    Rejected,
}

/// Whether `node` of a run may start.
pub(crate) async fn gate(
    engine: &Engine,
    prepared: &super::Prepared,
    node: petgraph::graph::NodeIndex,
    run: RunId,
    mode: crate::store::history::RunMode,
    persist: bool,
) -> Result<Gate, ExecError> {
    use crate::compile::BlockKind;
    use crate::store::history::RunMode;
    let block = &prepared.workflow.graph[node];
    let required = match &block.kind {
        BlockKind::Api(call) => call.approval_required,
        BlockKind::RoleRetrieval(role) => role.call.approval_required,
        BlockKind::Begin | BlockKind::Wait(_) | BlockKind::End => false,
    };
    if !required || !persist || mode != RunMode::Live {
        return Ok(Gate::Go);
    }
    Ok(
        match engine
            .inner
            .approvals
            .decision(run, block.id.as_str())
            .await?
        {
            Some(Decision { approved: true, .. }) => Gate::Go,
            Some(Decision {
                approved: false, ..
            }) => Gate::Rejected,
            None => Gate::Wait,
        },
    )
}

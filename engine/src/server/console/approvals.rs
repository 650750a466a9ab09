//! The approvals page: `GET /approvals`, every run waiting for an approval, oldest first, each
//! with its subject and the exact request the approved block will send; an operator approves or
//! rejects in place (`form.approve` / `form.reject`, posted to the run's routes in [`super::run`]
//! with `back=approvals`), and the latest decisions are listed below with who decided, when and
//! why.
//!
//! The request shown is rendered the way the approved block renders it: a dry run of the run's
//! workflow (the recorded snapshot) for its subject and vars, every earlier block answered from
//! the run's own recording (nothing is sent, nothing recorded), with the service's current
//! credentials, which the continued run uses too. It is redacted like every recorded request.

use std::sync::Arc;

use askama::Template;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use super::run::{prepared, pretty};
use super::{when, Console, Ctx, Layout, Page, PageError};
use crate::exec::{Recording, RunRequest, RunStatus, StepRecord};
use crate::server::Role;
use crate::store::api::{ApprovalStore, Backend, ReadHistory};
use crate::store::history::{RunFilter, RunMode, RunRecord, StepStatus};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/approvals", get(page))
}

/// Decisions listed under the waiting runs.
const RECENT: usize = 20;

/// One block waiting for approval.
#[derive(Debug, Clone)]
struct Waiting {
    run: String,
    workflow: String,
    block: String,
    subject: String,
    since: String,
    /// The request the block will send once approved (pretty JSON), or why it cannot be shown.
    request: String,
    method: String,
    url: String,
}

/// One decision already made.
#[derive(Debug, Clone)]
struct Decided {
    run: String,
    block: String,
    approved: bool,
    by: String,
    at: String,
    comment: String,
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    layout: Layout,
    waiting: Vec<Waiting>,
    decided: Vec<Decided>,
    can_decide: bool,
}

/// The request `block` of `run` will send once approved: a dry run over the run's recording.
pub(super) async fn pending_request(
    ctx: &Ctx,
    run: &RunRecord,
    steps: &[StepRecord],
    block: &str,
) -> Result<Option<Value>, PageError> {
    let prepared = prepared(ctx, run)?;
    let request = RunRequest {
        trigger: run.trigger.clone(),
        subject: run.subject.clone(),
        vars: run.vars.clone(),
        mode: RunMode::DryRun,
        replay_of: None,
        recording: Some(Recording::new(run, steps.to_vec(), None)),
        persist: false,
    };
    let outcome = ctx.shared.engine.run(&prepared, request).await?;
    Ok(outcome
        .steps
        .into_iter()
        .rev()
        .find(|s| s.block == block)
        .and_then(|s| s.request))
}

/// `GET /approvals`.
async fn page(ctx: Ctx) -> Page {
    let mut runs = ctx
        .history()
        .list(&RunFilter {
            status: Some(RunStatus::WaitingApproval),
            ..RunFilter::default()
        })
        .await?;
    // Oldest first: the one waiting longest is at the top.
    runs.reverse();
    let mut waiting = Vec::new();
    for run in &runs {
        let steps = ctx.history().steps(run.id).await?;
        for step in steps
            .iter()
            .filter(|s| s.status == StepStatus::WaitingApproval && s.finished_at.is_none())
        {
            let (request, method, url) = match pending_request(&ctx, run, &steps, &step.block).await
            {
                Ok(Some(request)) => (
                    pretty(&request),
                    request["method"].as_str().unwrap_or_default().to_owned(),
                    request["url"].as_str().unwrap_or_default().to_owned(),
                ),
                Ok(None) => (
                    "the block's request cannot be rendered before the blocks it waits for have run"
                        .to_owned(),
                    String::new(),
                    String::new(),
                ),
                Err(err) => (
                    format!("the request cannot be shown: {}", err.message),
                    String::new(),
                    String::new(),
                ),
            };
            waiting.push(Waiting {
                run: run.id.to_string(),
                workflow: run.workflow.clone(),
                block: step.block.clone(),
                subject: run
                    .subject
                    .as_ref()
                    .map(|s| s.key.clone())
                    .unwrap_or_default(),
                since: when(&step.started_at),
                request,
                method,
                url,
            });
        }
    }
    let approvals = ctx.shared.store.approvals()?;
    // Through the seam's trait, as a future backend answers it.
    let decided = ApprovalStore::recent(&approvals, RECENT)
        .await?
        .into_iter()
        .map(|(run, block, decision)| Decided {
            run: run.to_string(),
            block,
            approved: decision.approved,
            by: decision
                .by
                .unwrap_or_else(|| "an unnamed caller".to_owned()),
            at: when(&decision.at),
            comment: decision.comment.unwrap_or_default(),
        })
        .collect();
    let page = ApprovalsPage {
        layout: ctx.layout("Approvals", "/approvals"),
        waiting,
        decided,
        can_decide: ctx.can(Role::Operator),
    };
    super::render(&page)
}

//! The run page: `GET /runs/{id}`: the workflow's block graph (SVG, each block coloured by its
//! step), a timeline of the steps with their durations, per step the request and response
//! (redacted when recorded; bodies in `<details>`), saved fields, outputs, notes and errors, the
//! trigger and the subject's record; and, by role, the buttons that act on the run:
//!
//! | form | route | needs |
//! |---|---|---|
//! | `form.approve` / `form.reject` (fields `block`, `comment`) | `POST /runs/{id}/approve`, `…/reject` | operator |
//! | `form.cancel` | `POST /runs/{id}/cancel` | operator |
//! | `form.replay-live` / `form.replay-offline` (field `mode`: `live`, `offline`) | `POST /runs/{id}/replay` | operator |
//!
//! They do what the API's routes of the same names do (`crate::server::api`): a decision is
//! recorded with who made it and the comment, and the answer comes once the run stops again. A
//! live replay leads to the new run's page; an offline replay (nothing sent, nothing recorded)
//! answers with its per-block differences at once, as `blockyard replay --offline` prints them.
//! While the run is unfinished, `GET /runs/{id}/live` (its status and timeline) is polled.

use std::sync::Arc;

use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::Value;

use super::runs::status_label;
use super::{duration, render, see_other, when, Console, CsrfForm, Ctx, Layout, Page, PageError};
use crate::exec::approval::Decider;
use crate::exec::{Cancel, ExecError, Prepared, RunRecord, StepRecord};
use crate::replay::{replay, BlockDiff, ReplayOptions, Setup};
use crate::server::Role;
use crate::store::api::ReadHistory;
use crate::store::history::{RunId, StepStatus};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/runs/{id}", get(page))
        .route("/runs/{id}/live", get(live))
        .route("/runs/{id}/approve", post(approve))
        .route("/runs/{id}/reject", post(reject))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/replay", post(replay_run))
}

pub(super) fn run_id(text: &str) -> Result<RunId, PageError> {
    text.parse().map_err(|_| {
        PageError::bad_request(format!(
            "`{text}` is not a run id (26 characters, as the runs page shows)"
        ))
    })
}

/// A run and its steps, or 404.
pub(super) async fn load(ctx: &Ctx, id: RunId) -> Result<(RunRecord, Vec<StepRecord>), PageError> {
    let history = ctx.history();
    let run = history
        .run(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("no run `{id}`")))?;
    let steps = history.steps(id).await?;
    Ok((run, steps))
}

/// The compiled workflow a run ran: the loaded one when its text is the run's snapshot (compiled
/// once, at load), else the snapshot compiled now.
pub(super) fn prepared(ctx: &Ctx, run: &RunRecord) -> Result<Arc<Prepared>, PageError> {
    if let Some(loaded) = ctx.shared.workflows().get(&run.workflow) {
        if loaded.snapshot == run.snapshot {
            return Ok(loaded.clone());
        }
    }
    Ok(ctx.shared.engine.prepare_snapshot(run)?)
}

/// JSON as the page shows it: pretty, or empty for nothing.
pub(super) fn pretty(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        value => serde_json::to_string_pretty(value).unwrap_or_default(),
    }
}

/// One step as the timeline shows it.
#[derive(Debug, Clone)]
pub(super) struct StepView {
    pub seq: u32,
    pub block: String,
    pub kind: String,
    pub preset: String,
    pub status: &'static str,
    pub label: String,
    pub write: bool,
    pub attempts: u32,
    pub started: String,
    pub took: String,
    /// Where the step's bar starts and how long it is, in percent of the run's span.
    pub offset: u32,
    pub width: u32,
    pub method: String,
    pub url: String,
    pub request: String,
    pub response_status: String,
    pub response: String,
    pub truncated: bool,
    pub saved: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
    pub error: String,
    pub note: String,
    pub retry: String,
    /// Waiting for an approval now: the approve and reject forms are shown.
    pub waiting: bool,
}

fn fields(map: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), pretty(v))).collect()
}

pub(super) fn step_views(run: &RunRecord, steps: &[StepRecord]) -> Vec<StepView> {
    let start = run.started_at.unwrap_or(run.created_at);
    let end = steps
        .iter()
        .map(|s| s.finished_at.unwrap_or(s.started_at))
        .chain(run.finished_at)
        .max()
        .unwrap_or(start);
    let span = (end - start).num_microseconds().unwrap_or(0).max(1) as f64;
    let percent = |us: i64| ((us.max(0) as f64 / span) * 100.0).clamp(0.0, 100.0) as u32;
    steps
        .iter()
        .map(|s| {
            let offset = percent((s.started_at - start).num_microseconds().unwrap_or(0));
            let width = percent(s.duration_us as i64)
                .max(1)
                .min(100 - offset.min(99));
            let request = s.request.clone().unwrap_or(Value::Null);
            StepView {
                seq: s.seq,
                block: s.block.clone(),
                kind: s.kind.clone(),
                preset: s.preset.clone().unwrap_or_default(),
                status: s.status.name(),
                label: if s.status == StepStatus::WaitingApproval && s.finished_at.is_some() {
                    // Its note says who decided, when and why.
                    "approval decided".to_owned()
                } else {
                    status_label(s.status.name())
                },
                write: s.write,
                attempts: s.attempts,
                started: when(&s.started_at),
                took: if s.finished_at.is_some() || s.duration_us > 0 {
                    duration(chrono::TimeDelta::microseconds(s.duration_us as i64))
                } else {
                    String::new()
                },
                offset,
                width,
                method: request["method"].as_str().unwrap_or_default().to_owned(),
                url: request["url"].as_str().unwrap_or_default().to_owned(),
                request: pretty(&request),
                response_status: s
                    .response
                    .as_ref()
                    .map(|r| r.status.to_string())
                    .unwrap_or_default(),
                response: s
                    .response
                    .as_ref()
                    .map(|r| pretty(&r.body))
                    .unwrap_or_default(),
                truncated: s.response.as_ref().is_some_and(|r| r.truncated),
                saved: fields(&s.saved),
                outputs: fields(&s.outputs),
                error: s.error.clone().unwrap_or_default(),
                note: s.note.clone().unwrap_or_default(),
                retry: s
                    .retry
                    .as_ref()
                    .map(|r| serde_json::to_string(r).unwrap_or_default())
                    .unwrap_or_default(),
                waiting: s.status == StepStatus::WaitingApproval && s.finished_at.is_none(),
            }
        })
        .collect()
}

/// The run's summary and timeline (also the live fragment).
#[derive(Template)]
#[template(path = "run_live.html")]
struct RunLive {
    id: String,
    status: &'static str,
    label: String,
    error: String,
    finished: bool,
    steps: Vec<StepView>,
    /// Whether the approve and reject forms are shown.
    can_decide: bool,
    csrf: Arc<str>,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    layout: Layout,
    id: String,
    workflow: String,
    file: String,
    mode: &'static str,
    trigger: String,
    subject_key: String,
    subject: String,
    vars: String,
    created: String,
    started: String,
    finished: String,
    took: String,
    replay_of: String,
    from_block: String,
    graph: String,
    live: RunLive,
    can_cancel: bool,
    can_replay: bool,
}

fn live_view(ctx: &Ctx, run: &RunRecord, steps: &[StepRecord]) -> RunLive {
    RunLive {
        id: run.id.to_string(),
        status: run.status.name(),
        label: status_label(run.status.name()),
        error: run.error.clone().unwrap_or_default(),
        finished: run.status.is_finished(),
        steps: step_views(run, steps),
        can_decide: ctx.can(Role::Operator),
        csrf: ctx.csrf.clone(),
    }
}

/// The block graph, each block coloured by its step: the `graph` module's drawing.
fn graph(ctx: &Ctx, run: &RunRecord, steps: &[StepRecord]) -> String {
    match prepared(ctx, run) {
        Ok(prepared) => super::graph_svg(&prepared.workflow, steps),
        // A run whose snapshot cannot be read or compiled still has its timeline.
        Err(err) => format!(
            "<p class=\"muted\">no graph: {}</p>",
            super::escape_html(&err.message)
        ),
    }
}

/// `GET /runs/{id}`.
async fn page(ctx: Ctx, Path(id): Path<String>) -> Page {
    let id = run_id(&id)?;
    let (run, steps) = load(&ctx, id).await?;
    let finished = run.status.is_finished();
    let page = RunPage {
        layout: ctx.layout(format!("Run {id}"), "/runs"),
        id: id.to_string(),
        workflow: run.workflow.clone(),
        file: run.file.clone(),
        mode: match run.mode {
            crate::store::history::RunMode::Live => "live",
            crate::store::history::RunMode::DryRun => "dry run",
            crate::store::history::RunMode::Offline => "offline",
        },
        trigger: run.trigger.to_string(),
        subject_key: run
            .subject
            .as_ref()
            .map(|s| s.key.clone())
            .unwrap_or_default(),
        subject: run
            .subject
            .as_ref()
            .map(|s| pretty(&s.record))
            .unwrap_or_default(),
        vars: if run.vars.is_empty() {
            String::new()
        } else {
            pretty(&Value::Object(run.vars.clone()))
        },
        created: when(&run.created_at),
        started: run.started_at.as_ref().map(when).unwrap_or_default(),
        finished: run.finished_at.as_ref().map(when).unwrap_or_default(),
        took: match (run.started_at, run.finished_at) {
            (Some(start), Some(end)) => duration(end - start),
            _ => String::new(),
        },
        replay_of: run.replay_of.map(|r| r.to_string()).unwrap_or_default(),
        from_block: run.from_block.clone().unwrap_or_default(),
        graph: graph(&ctx, &run, &steps),
        live: live_view(&ctx, &run, &steps),
        can_cancel: !finished && ctx.can(Role::Operator),
        can_replay: finished && ctx.can(Role::Operator),
    };
    render(&page)
}

/// `GET /runs/{id}/live`: the status and the timeline alone.
async fn live(ctx: Ctx, Path(id): Path<String>) -> Page {
    let id = run_id(&id)?;
    let (run, steps) = load(&ctx, id).await?;
    render(&live_view(&ctx, &run, &steps))
}

/// The approve and reject forms.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DecideForm {
    block: String,
    #[serde(default)]
    comment: String,
    /// Where to go afterwards: `approvals` (the approvals page), else the run's page.
    #[serde(default)]
    back: String,
}

async fn approve(ctx: Ctx, Path(id): Path<String>, CsrfForm(form): CsrfForm<DecideForm>) -> Page {
    ctx.require(Role::Operator, "approving a block")?;
    decide(&ctx, &id, form, true).await
}

async fn reject(ctx: Ctx, Path(id): Path<String>, CsrfForm(form): CsrfForm<DecideForm>) -> Page {
    ctx.require(Role::Operator, "rejecting a block")?;
    decide(&ctx, &id, form, false).await
}

async fn decide(ctx: &Ctx, id: &str, form: DecideForm, approve: bool) -> Page {
    let id = run_id(id)?;
    let back = match form.back.as_str() {
        "" | "run" => format!("/runs/{id}"),
        "approvals" => "/approvals".to_owned(),
        other => {
            return Err(PageError::bad_request(format!(
                "unknown `back` `{other}`; use `run` or `approvals`"
            )))
        }
    };
    let comment = form.comment.trim();
    let decider = Decider {
        by: Some(ctx.actor.name.clone()),
        comment: (!comment.is_empty()).then(|| comment.to_owned()),
    };
    ctx.shared
        .engine
        .decide(id, &form.block, approve, decider)
        .await?;
    Ok(see_other(&back))
}

/// `POST /runs/{id}/cancel`'s form: nothing but the CSRF token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelForm {}

async fn cancel(ctx: Ctx, Path(id): Path<String>, CsrfForm(_): CsrfForm<CancelForm>) -> Page {
    ctx.require(Role::Operator, "cancelling a run")?;
    let id = run_id(&id)?;
    match ctx.shared.engine.cancel(id).await? {
        Cancel::Requested | Cancel::Cancelled(_) => Ok(see_other(&format!("/runs/{id}"))),
        Cancel::Finished(run) => Err(PageError::new(
            StatusCode::CONFLICT,
            format!("run `{id}` has already finished: {}", run.status),
        )),
    }
}

/// `POST /runs/{id}/replay`'s form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayForm {
    mode: String,
}

#[derive(Template)]
#[template(path = "replay.html")]
struct ReplayPage {
    layout: Layout,
    original: String,
    workflow: String,
    identical: bool,
    diffs: Vec<BlockDiff>,
    replay: RunLive,
}

async fn replay_run(
    ctx: Ctx,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<ReplayForm>,
) -> Page {
    let offline = match form.mode.as_str() {
        "live" => false,
        "offline" => true,
        other => {
            return Err(PageError::bad_request(format!(
                "unknown replay mode `{other}`; use `live` or `offline`"
            )))
        }
    };
    let what = if offline {
        "an offline replay"
    } else {
        "a live replay"
    };
    ctx.require(Role::Operator, what)?;
    let id = run_id(&id)?;
    let options = ReplayOptions {
        from: None,
        offline,
        // Offline, against the setup the run recorded: a difference is the workflow's.
        setup: Setup::Recorded,
    };
    let replayed = replay(&ctx.shared.engine, id, None, options)
        .await
        .map_err(|err| match err {
            err @ ExecError::ReplayCredential { .. } => {
                PageError::new(StatusCode::CONFLICT, err.to_string())
            }
            err => PageError::from(err),
        })?;
    if !offline {
        return Ok(see_other(&format!("/runs/{}", replayed.outcome.run.id)));
    }
    let page = ReplayPage {
        layout: ctx.layout(format!("Offline replay of {id}"), "/runs"),
        original: id.to_string(),
        workflow: replayed.outcome.run.workflow.clone(),
        identical: replayed.identical(),
        replay: RunLive {
            can_decide: false,
            ..live_view(&ctx, &replayed.outcome.run, &replayed.outcome.steps)
        },
        diffs: replayed.diffs,
    };
    render(&page)
}

//! Executing one API or role retrieval block: render, (maybe) send, save, record.
//!
//! A closed `match` on the run mode decides what a call does: `live` sends it, `dry_run` sends
//! reads and holds writes back (status `planned`), `offline` answers from the recorded step of
//! the same block and sends nothing. A write in a live run is recorded as `sending` and made
//! durable before the request leaves. Role retrieval is an API call whose preset says where the
//! role, last activity and active flag are; it writes `role`, `last_activity` and `status` onto the
//! subject, and a user the vendor does not have is marked `deactivated` when
//! `deactivate_missing` is on (a vendor error never deactivates anyone: it fails the block).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use handlebars::Context;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::run::Settled;
use super::{context, Engine, ExecError, Prepared, Recording};
use crate::compile::{ApiCall, BlockKind, RetrySettings};
use crate::config::CredentialName;
use crate::http::{CallError, CallOptions, RetryPolicy};
use crate::preset::ActionKind;
use crate::store::history::{RunId, RunMode, StepRecord, StepResponse, StepStatus};
use crate::template::{JsonTemplate, TemplateEngine};

/// A block to execute, with everything it needs owned (it runs as its own task).
pub(crate) struct Task {
    pub engine: Engine,
    pub prepared: Arc<Prepared>,
    pub node: NodeIndex,
    pub run: RunId,
    pub seq: u32,
    pub mode: RunMode,
    /// The run context when the block started.
    pub context: Value,
    /// The subject's collection and key, where saves go.
    pub subject: Option<(String, String)>,
    pub persist: bool,
    pub recording: Option<Arc<Recording>>,
}

/// A settled block.
pub(crate) struct BlockDone {
    pub node: NodeIndex,
    pub step: StepRecord,
    pub settled: Settled,
    /// Set when the run must stop in `needs_attention`.
    pub attention: Option<String>,
    pub http: Duration,
    pub durable_wait: Duration,
}

/// A vendor answer, from the wire or from a recording.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Map<String, Value>,
    pub body: Value,
    pub attempts: u32,
}

enum Called {
    Ok(Answer),
    NotFound(Answer),
    Failed {
        message: String,
        answer: Option<Answer>,
    },
}

pub(crate) fn call_options(retry: &RetrySettings, timeout: Option<Duration>) -> CallOptions {
    let ms = |d: Option<Duration>, default: u64| d.map_or(default, |d| d.as_millis() as u64);
    CallOptions {
        retry: RetryPolicy::Exponential {
            max_attempts: retry.max_attempts.unwrap_or(5),
            initial_interval_ms: ms(retry.initial_delay, 500),
            factor: 2.0,
            max_interval_ms: ms(retry.max_delay, 30_000),
            max_elapsed_ms: ms(retry.max_elapsed, 120_000),
        },
        timeout: timeout.unwrap_or(Duration::from_secs(30)),
        ..CallOptions::default()
    }
}

pub(crate) fn render_map(
    templates: &TemplateEngine,
    map: &IndexMap<String, JsonTemplate>,
    context: &Context,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::with_capacity(map.len());
    for (key, template) in map {
        let value = templates
            .render_json(template, context)
            .map_err(|err| format!("`{key}`: {err}"))?;
        out.insert(key.clone(), value);
    }
    Ok(out)
}

fn answer_of(response: &crate::http::Response, attempts: u32) -> Answer {
    Answer {
        status: response.status,
        headers: response
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
        body: response.body.clone(),
        attempts,
    }
}

/// The recorded answer of a block, for offline replay.
fn recorded(recording: Option<&Recording>, block: &str, role: bool) -> Called {
    let Some(step) = recording.and_then(|r| r.steps.get(block)) else {
        return Called::Failed {
            message: format!("offline: block `{block}` did not call the vendor in the recorded run, so there is no recorded answer"),
            answer: None,
        };
    };
    let answer = step.response.as_ref().map(|r| Answer {
        status: r.status,
        headers: r.headers.clone(),
        body: r.body.clone(),
        attempts: step.attempts,
    });
    match (step.status, answer) {
        (StepStatus::Succeeded, Some(answer)) if role && answer.status == 404 => {
            Called::NotFound(answer)
        }
        (StepStatus::Succeeded, Some(answer)) => Called::Ok(answer),
        (StepStatus::Failed, answer) => Called::Failed {
            message: step
                .error
                .clone()
                .unwrap_or_else(|| "failed in the recorded run".to_owned()),
            answer,
        },
        (status, _) => Called::Failed {
            message: format!("offline: the recorded step of block `{block}` is `{status}`, with no answer to replay"),
            answer: None,
        },
    }
}

pub(crate) async fn execute(task: Task) -> Result<BlockDone, ExecError> {
    let prepared = task.prepared.clone();
    let block = &prepared.workflow.graph[task.node];
    let (call, role) = match &block.kind {
        BlockKind::Api(call) => (call, None),
        BlockKind::RoleRetrieval(role) => (&role.call, Some(role)),
        BlockKind::Begin | BlockKind::End => {
            let now = Utc::now();
            return Ok(BlockDone {
                node: task.node,
                step: StepRecord {
                    run: task.run,
                    seq: task.seq,
                    block: block.id.to_string(),
                    kind: block.kind.name().to_owned(),
                    preset: None,
                    write: false,
                    status: StepStatus::Succeeded,
                    attempts: 0,
                    inputs: None,
                    request: None,
                    response: None,
                    saved: Map::new(),
                    outputs: Map::new(),
                    error: None,
                    note: None,
                    started_at: now,
                    finished_at: Some(now),
                    duration_us: 0,
                    http_us: 0,
                },
                settled: Settled {
                    status: StepStatus::Succeeded,
                    http_status: None,
                    body: Value::Null,
                    outputs: Map::new(),
                },
                attention: None,
                http: Duration::ZERO,
                durable_wait: Duration::ZERO,
            });
        }
    };
    let span = tracing::info_span!(
        "block",
        block = %block.id,
        kind = block.kind.name(),
        preset = %call.preset,
    );
    let deactivate_missing = role.is_some_and(|r| r.deactivate_missing);
    api(task, call, role.is_some(), deactivate_missing)
        .instrument(span)
        .await
}

async fn api(
    task: Task,
    call: &ApiCall,
    role: bool,
    deactivate_missing: bool,
) -> Result<BlockDone, ExecError> {
    let engine = &task.engine;
    let inner = &engine.inner;
    let client = &inner.client;
    let block = &task.prepared.workflow.graph[task.node];
    let t0 = Instant::now();
    let write = client
        .presets()
        .action(&call.preset)
        .is_some_and(|a| a.spec.kind == ActionKind::Write);
    let mut step = StepRecord {
        run: task.run,
        seq: task.seq,
        block: block.id.to_string(),
        kind: block.kind.name().to_owned(),
        preset: Some(call.preset.to_string()),
        write,
        status: StepStatus::Failed,
        attempts: 0,
        inputs: None,
        request: None,
        response: None,
        saved: Map::new(),
        outputs: Map::new(),
        error: None,
        note: None,
        started_at: Utc::now(),
        finished_at: None,
        duration_us: 0,
        http_us: 0,
    };
    let mut http = Duration::ZERO;
    let mut durable_wait = Duration::ZERO;
    let redactor = client.redactor();
    let context_hb = Context::from(task.context.clone());
    let credential = CredentialName::new(call.credential.clone());
    let prepared = (|| {
        let given = render_map(&inner.templates, &call.with, &context_hb)
            .map_err(|m| format!("cannot render `with` {m}"))?;
        let inputs = client
            .resolve_inputs(&call.preset, &given, &task.context)
            .map_err(|e| e.to_string())?;
        let request = client
            .render(&call.preset, &credential, &inputs)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((inputs, request))
    })();
    let called = match prepared {
        Err(message) => Called::Failed {
            message: redactor.text(&message),
            answer: None,
        },
        Ok((inputs, request)) => {
            step.inputs = Some(redactor.json(&Value::Object(inputs.clone())));
            step.request = serde_json::to_value(&request).ok();
            if write && task.mode == RunMode::DryRun {
                step.status = StepStatus::Planned;
                step.note = Some("dry run: write rendered, not sent".to_owned());
                return finish(task, step, None, None, http, durable_wait, t0).await;
            }
            match task.mode {
                RunMode::Offline => recorded(task.recording.as_deref(), block.id.as_str(), role),
                RunMode::Live | RunMode::DryRun => {
                    if write && task.persist {
                        step.status = StepStatus::Sending;
                        inner.history.put_step(&step)?;
                        let wait = Instant::now();
                        inner.history.durable().await?;
                        durable_wait += wait.elapsed();
                    }
                    let options = call_options(&call.retry, call.timeout);
                    let sent = Instant::now();
                    let result = client
                        .call(&call.preset, &credential, &inputs, &options)
                        .await;
                    http = sent.elapsed();
                    match result {
                        Ok(exchange) => {
                            step.request = serde_json::to_value(&exchange.request).ok();
                            Called::Ok(answer_of(&exchange.response, exchange.attempts))
                        }
                        Err(CallError::NotFound { response, .. }) => {
                            Called::NotFound(answer_of(&response, 1))
                        }
                        Err(err) => Called::Failed {
                            message: redactor.text(&err.to_string()),
                            answer: err.response().map(|r| answer_of(r, 1)),
                        },
                    }
                }
            }
        }
    };
    let (answer, outcome) = match called {
        Called::Ok(answer) => {
            let result = outcome_of(&task, call, role, &answer);
            (Some(answer), result)
        }
        Called::NotFound(answer) if role && deactivate_missing => {
            let mut saved = Map::new();
            saved.insert("status".to_owned(), Value::String("deactivated".to_owned()));
            step.note = Some("the vendor does not have this user: marked `deactivated`".to_owned());
            (Some(answer), Ok((Map::new(), saved)))
        }
        Called::NotFound(answer) => {
            let message = format!("`{}`: not found (status {})", call.preset, answer.status);
            (Some(answer), Err(message))
        }
        Called::Failed { message, answer } => (answer, Err(message)),
    };
    match outcome {
        Ok((outputs, saved)) => {
            step.status = StepStatus::Succeeded;
            step.outputs = outputs;
            if !saved.is_empty() {
                if let (RunMode::Live, Some((collection, key))) = (task.mode, &task.subject) {
                    let base = task.context.get("record").cloned().unwrap_or(Value::Null);
                    inner.subjects.merge(collection, key, &base, &saved)?;
                }
            }
            step.saved = saved;
        }
        Err(message) => {
            step.status = StepStatus::Failed;
            step.error = Some(message);
        }
    }
    finish(task, step, answer, None, http, durable_wait, t0).await
}

/// A JSON object's fields.
pub(crate) type Fields = Map<String, Value>;

/// Outputs and saves of a successful call, rendered over the context plus the response.
pub(crate) fn outcome_of(
    task: &Task,
    call: &ApiCall,
    role: bool,
    answer: &Answer,
) -> Result<(Fields, Fields), String> {
    let templates = &task.engine.inner.templates;
    let mut context = task.context.clone();
    if let Value::Object(fields) = &mut context {
        fields.insert("response".to_owned(), answer.body.clone());
        fields.insert("status".to_owned(), Value::from(answer.status));
        fields.insert("headers".to_owned(), Value::Object(answer.headers.clone()));
    }
    let hb = Context::from(context);
    let mut outputs = if call.outputs.is_empty() {
        let mut outputs = Map::new();
        if let Some(defaults) = task.prepared.default_outputs.get(&task.node) {
            for (key, template) in defaults {
                if let Ok(value) = templates.render_value(template, &hb) {
                    outputs.insert(key.clone(), value);
                }
            }
        }
        outputs
    } else {
        render_map(templates, &call.outputs, &hb)
            .map_err(|m| format!("cannot render output {m}"))?
    };
    let mut saved =
        render_map(templates, &call.save, &hb).map_err(|m| format!("cannot render save {m}"))?;
    if role {
        if let Some(spec) = task.prepared.roles.get(&task.node) {
            let get = |t: &Option<crate::template::Template>| {
                t.as_ref()
                    .and_then(|t| templates.render_value(t, &hb).ok())
                    .filter(|v| !v.is_null() && v.as_str() != Some(""))
            };
            if let Some(role) = get(&spec.role) {
                outputs.insert("role".to_owned(), role.clone());
                saved.insert("role".to_owned(), role);
            }
            if let Some(last) = get(&spec.last_activity) {
                outputs.insert("last_activity".to_owned(), last.clone());
                saved.insert("last_activity".to_owned(), last);
            }
            let active = match get(&spec.active) {
                Some(Value::Bool(b)) => b,
                Some(Value::String(s)) => s != "false",
                _ => true,
            };
            let status = if active { "active" } else { "deactivated" };
            outputs.insert("active".to_owned(), Value::Bool(active));
            saved.insert("status".to_owned(), Value::String(status.to_owned()));
        }
    }
    Ok((outputs, saved))
}

/// Records the settled step (durably, before anything that depends on it starts).
async fn finish(
    task: Task,
    mut step: StepRecord,
    answer: Option<Answer>,
    attention: Option<String>,
    http: Duration,
    mut durable_wait: Duration,
    t0: Instant,
) -> Result<BlockDone, ExecError> {
    let inner = &task.engine.inner;
    let redactor = inner.client.redactor();
    let http_status = answer.as_ref().map(|a| a.status);
    let body = answer
        .as_ref()
        .map(|a| a.body.clone())
        .unwrap_or(Value::Null);
    if let Some(answer) = answer {
        step.attempts = answer.attempts;
        let (kept, truncated) =
            context::cap_body(&redactor.json(&answer.body), inner.options.body_cap);
        step.response = Some(StepResponse {
            status: answer.status,
            headers: answer.headers,
            body: kept,
            truncated,
        });
    }
    step.finished_at = Some(Utc::now());
    step.duration_us = t0.elapsed().as_micros() as u64;
    step.http_us = http.as_micros() as u64;
    if task.persist {
        inner.history.put_step(&step)?;
        let wait = Instant::now();
        // Flushed by the run loop before anything that depends on it starts (see `run.rs`).
        durable_wait += wait.elapsed();
    }
    tracing::debug!(status = %step.status, "block settled");
    let settled = Settled {
        status: step.status,
        http_status,
        body,
        outputs: step.outputs.clone(),
    };
    Ok(BlockDone {
        node: task.node,
        step,
        settled,
        attention,
        http,
        durable_wait,
    })
}

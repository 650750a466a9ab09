//! Executing one API or role retrieval block: render, (maybe) send, save, record.
//!
//! A closed `match` on the run mode decides what a call does: `live` sends it, `dry_run` sends
//! reads and holds writes back (status `planned`), `offline` answers from the recorded step of
//! the same block and sends nothing: the response it recorded, and for the calls whose response a
//! step does not keep, what the step shows the block learned from them (role retrieval's activity
//! read: the `last_activity` it saved; a merge's read: the body its request sent). Every template
//! of a block is rendered as of the instant it started ([`crate::as_of`]), which an offline replay
//! takes from the recorded step, and the step records the base URL its request was rendered below
//! (what an offline replay without a config renders with).
//!
//! A write in a live run is recorded as `sending` and made durable before the request leaves.
//! Saves are merged into the subject record through [`crate::records::RecordStore::write`]
//! (`create_update`) with the engine's triggers, so a save can start another workflow; a record
//! not stored yet is created from the run's subject.
//!
//! A live write the vendor accepted whose `save` or `outputs` then cannot render fails its step
//! and stops the run in `needs_attention` (naming the block): taking `on_failure` would treat a
//! write that took effect as one that did not.
//!
//! Role retrieval is an API call whose preset says where the role, last activity and active flag
//! are; it outputs `found` and `role` (and `active`, `last_activity`) and writes `role`,
//! `last_activity` and `status` onto the subject:
//! - found and active → `status: active`; found but inactive at the vendor → `deactivated`;
//! - not found (404, or the preset's `not_found`) → `found: false`, and `status: deactivated`
//!   when `deactivate_missing` is on (the default), else nothing is written;
//! - a vendor error fails the block (its `on_failure` path) and deactivates nobody;
//! - `last_activity` only moves forward (the later of the stored and the vendor's value); when
//!   the preset names an `activity_action` it is read there, and a 403 the preset marks
//!   `unsupported` leaves it as it is;
//! - a subject already `deactivated` is not processed: no call, nothing written, outputs
//!   `found: false, role: null` and a note on the step.
//!
//! An API block's `answers:` turns vendor answers into results ([`expected`]): a not-found (404,
//! or the preset's empty list) or an error status the block lists, with its `when:` true, makes
//! the block succeed with that response recorded, nothing saved, no `outputs:` rendered (they read
//! a success's shape) and a note saying which answer it was; a block listing `not_found` outputs
//! `found` (true on a success, false on not found), so edges route on it. Any other error still
//! fails the block. An offline replay judges the recorded answer the same way, against the
//! replayed workflow's `answers:`.
//!
//! A call that fails after the client's in-call retries is sorted by [`super::retry::classify`]:
//! a transient failure leaves the block unsettled, its step `retrying` (the run loop schedules
//! the next attempt); a write whose delivery is uncertain is checked with its preset's probe at
//! once ([`super::retry::check`]: done → succeeded from the probe's answer, not done → retried
//! later, cannot tell → the step stays `sending` and the run needs attention); anything else
//! fails the block, as always. Only live, recorded runs retry durably.
//!
//! An API block with `collect:` imports the listed items ([`super::collect`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use handlebars::Context;
use indexmap::IndexMap;
use petgraph::graph::NodeIndex;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::retry::{self, Class};
use super::run::Settled;
use super::{context, Engine, ExecError, Prepared, Recording};
use crate::as_of;
use crate::compile::Collection;
use crate::compile::{AnswerMatch, ApiCall, BlockKind, RetrySettings};
use crate::config::CredentialName;
use crate::http::{CallError, CallOptions, Client, RenderedRequest, RetryPolicy, VendorError};
use crate::preset::{PresetId, PresetRegistry};
use crate::records::{Change, RecordKey, Subject, Write, WriteMode};
use crate::store::api::{ReadRecords, WriteHistory, WriteRecords};
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
    /// The step is in history already (a live write's, which replaced its `sending` intent);
    /// else the run loop writes it with the run's other unwritten steps.
    pub written: bool,
    /// Set when the call failed transiently: the block has not settled (its step says
    /// `retrying`) and the run loop schedules its next attempt ([`super::retry`]).
    pub transient: Option<Transient>,
}

/// A transient failure, as the run loop schedules its retry.
pub(crate) struct Transient {
    /// How long the vendor asked to wait, when it said.
    pub vendor_wait: Option<Duration>,
}

/// A vendor answer, from the wire or from a recording.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Map<String, Value>,
    pub body: Value,
    pub attempts: u32,
    /// A list action's items, every page's.
    pub items: Option<Vec<Value>>,
    /// The body's size on the wire, when it came from the wire.
    pub wire_len: Option<usize>,
}

pub(crate) enum Called {
    Ok(Answer),
    /// A 404, or the empty list the preset's `not_found` names.
    NotFound(Answer),
    Failed {
        message: String,
        answer: Option<Answer>,
    },
    /// An answer the block's `answers:` lists: a result, not a failure.
    Answered {
        answer: Answer,
        not_found: bool,
    },
    /// Try the block again later ([`super::retry`]).
    Transient {
        message: String,
        answer: Option<Answer>,
        vendor_wait: Option<Duration>,
    },
    /// A write that may have been performed: its probe decides, before anything else.
    Uncertain {
        message: String,
        answer: Option<Answer>,
    },
    /// A write that may have been performed and that nothing can check: the run needs a person.
    Unknown {
        message: String,
        answer: Option<Answer>,
        /// Why the run needs attention.
        attention: String,
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

/// A response as an answer, moved (its body is already redacted by the client).
pub(crate) fn answer_of(response: crate::http::Response, attempts: u32) -> Answer {
    Answer {
        status: response.status,
        headers: response
            .headers
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        body: response.body,
        attempts,
        items: response.items,
        wire_len: Some(response.wire_len),
    }
}

/// Runs `f` with the run context wrapped as a handlebars [`Context`], without copying it (the
/// context goes in and comes back out).
fn with_context<R>(context: &mut Value, f: impl FnOnce(&Context) -> R) -> R {
    let mut hb = Context::from(std::mem::take(context));
    let out = f(&hb);
    *context = std::mem::take(hb.data_mut());
    out
}

/// The recorded answer of a block, for offline replay, judged as a live answer would be: a 404
/// or the preset's empty list is not found, another status outside 2xx the vendor's error (an
/// answer the recorded run's `answers:` listed, which the replayed workflow may list or not).
fn recorded(
    recording: Option<&Recording>,
    block: &str,
    call: &ApiCall,
    presets: &PresetRegistry,
    replay: bool,
) -> Called {
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
        items: None,
        wire_len: None,
    });
    let not_found = |a: &Answer| a.status == 404 || empty_list(presets, &call.preset, &a.body);
    match (step.status, answer) {
        (StepStatus::Succeeded | StepStatus::Failed, Some(answer)) if not_found(&answer) => {
            Called::NotFound(answer)
        }
        (StepStatus::Succeeded, Some(answer)) if !(200..300).contains(&answer.status) => {
            Called::Failed {
                message: vendor_message(presets, &call.preset, &answer),
                answer: Some(answer),
            }
        }
        (StepStatus::Succeeded, Some(answer)) => Called::Ok(answer),
        (StepStatus::Failed, answer) => Called::Failed {
            message: step
                .error
                .clone()
                .unwrap_or_else(|| "failed in the recorded run".to_owned()),
            answer,
        },
        // The recorded run retries the block: a replay (not `plan --offline`) parks it too.
        (StepStatus::Retrying, answer) if replay => Called::Transient {
            message: step
                .error
                .clone()
                .unwrap_or_else(|| "failed transiently in the recorded run".to_owned()),
            answer,
            vendor_wait: None,
        },
        (status, _) => Called::Failed {
            message: format!("offline: the recorded step of block `{block}` is `{status}`, with no answer to replay"),
            answer: None,
        },
    }
}

/// A merge's read, answered offline: the recording keeps the request the merge produced, not the
/// read's response, so the resource as read is taken to be the body the recorded request sent
/// (the read's kept fields with the recorded changes over them), and the replayed changes are
/// merged into it as a live call merges them into what the read returned. An unchanged workflow
/// gives the recorded body; a changed value shows as the difference.
fn merged_offline(
    client: &Client,
    call: &ApiCall,
    recording: Option<&Recording>,
    block: &str,
    mut request: RenderedRequest,
) -> Option<Value> {
    let merge = client
        .presets()
        .action(&call.preset)
        .and_then(|a| a.spec.merge.as_ref());
    let read = recording
        .and_then(|r| r.steps.get(block))
        .and_then(|s| s.request.as_ref())
        .and_then(|r| r.get("body"));
    if let (Some(merge), Some(read)) = (merge, read) {
        let changes = request.body.take().unwrap_or(Value::Null);
        request.body = Some(crate::http::request::merge(
            read,
            &changes,
            &merge.drop,
            &merge.keep,
        ));
    }
    client.redactor().request_json(&request)
}

/// Whether `body` is the empty list that the preset's `not_found` says means "not found".
fn empty_list(presets: &PresetRegistry, preset: &PresetId, body: &Value) -> bool {
    presets
        .action(preset)
        .and_then(|a| a.spec.not_found.as_ref())
        .and_then(|nf| nf.empty.as_deref())
        .and_then(|pointer| body.pointer(pointer))
        .is_some_and(|list| list.as_array().is_some_and(Vec::is_empty))
}

/// A recorded error answer in the vendor's words, as the client words a live one.
fn vendor_message(presets: &PresetRegistry, preset: &PresetId, answer: &Answer) -> String {
    let Some(vendor) = presets.vendor(&preset.vendor) else {
        return format!("`{preset}`: answered {}", answer.status);
    };
    let tracking = answer
        .headers
        .get("trackingid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let error = VendorError::parse(
        &vendor.spec.vendor,
        vendor.spec.errors,
        answer.status,
        &answer.body,
        tracking,
    );
    format!("`{preset}`: {error}")
}

/// Judges a call's failure against the block's `answers:`: a not-found or an error answer the
/// block lists (with its `when:`, if any, true) becomes [`Called::Answered`]; anything else is
/// left as it is. A `when:` that cannot be evaluated matches nothing, and the failure says so.
fn expected(call: &ApiCall, called: Called, context: &Value) -> Called {
    let (answer, not_found) = match &called {
        Called::NotFound(answer) => (answer, true),
        Called::Failed {
            answer: Some(answer),
            ..
        } => (answer, answer.status == 404),
        Called::Ok(_)
        | Called::Failed { answer: None, .. }
        | Called::Answered { .. }
        | Called::Transient { .. }
        | Called::Uncertain { .. }
        | Called::Unknown { .. } => return called,
    };
    let mut scope: Option<Value> = None;
    let mut broken = None;
    let matched = call.answers.iter().any(|expected| {
        let fits = match expected.status {
            AnswerMatch::NotFound => not_found,
            AnswerMatch::Status(status) => status == answer.status,
        };
        let Some(condition) = expected.when.as_ref().filter(|_| fits) else {
            return fits;
        };
        let scope = scope.get_or_insert_with(|| {
            serde_json::json!({
                "status": answer.status,
                "response": answer.body,
                "headers": answer.headers,
                "record": context["record"],
                "vars": context["vars"],
            })
        });
        match super::context::eval(condition, scope) {
            Ok(holds) => holds,
            Err(err) => {
                broken.get_or_insert_with(|| {
                    format!(
                        " (the `answers` condition `{}` could not be evaluated: {err})",
                        condition.source()
                    )
                });
                false
            }
        }
    });
    match (matched, called, broken) {
        (true, Called::NotFound(answer), _) => Called::Answered {
            answer,
            not_found: true,
        },
        (
            true,
            Called::Failed {
                answer: Some(answer),
                ..
            },
            _,
        ) => Called::Answered {
            not_found: answer.status == 404,
            answer,
        },
        (false, Called::NotFound(answer), Some(broken)) => Called::Failed {
            message: format!("{}{broken}", not_found_message(call, &answer)),
            answer: Some(answer),
        },
        (false, Called::Failed { message, answer }, Some(broken)) => Called::Failed {
            message: format!("{message}{broken}"),
            answer,
        },
        (_, called, _) => called,
    }
}

/// The failure of a not-found answer the block does not list.
fn not_found_message(call: &ApiCall, answer: &Answer) -> String {
    format!("`{}`: not found (status {})", call.preset, answer.status)
}

pub(crate) async fn execute(task: Task) -> Result<BlockDone, ExecError> {
    let prepared = task.prepared.clone();
    let block = &prepared.workflow.graph[task.node];
    let (call, role) = match &block.kind {
        BlockKind::Api(call) => (call, None),
        BlockKind::RoleRetrieval(role) => (&role.call, Some(role)),
        // The run loop settles these itself and never starts a task for them.
        BlockKind::Begin | BlockKind::Wait(_) | BlockKind::End => {
            unreachable!("begin, wait and end run no task")
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
    mut task: Task,
    call: &ApiCall,
    role: bool,
    deactivate_missing: bool,
) -> Result<BlockDone, ExecError> {
    // Shared handles (the task itself lends its context to the renderings below).
    let (engine, prepared) = (task.engine.clone(), task.prepared.clone());
    let engine = &engine;
    let inner = &engine.inner;
    let client = &inner.client;
    let block = &prepared.workflow.graph[task.node];
    let t0 = Instant::now();
    let write = prepared.writes[task.node.index()];
    // Every template of the block is rendered as of when it started (`as_of`): now, or in an
    // offline replay the recorded instants, which the replayed step takes.
    let (started_at, finished_at) = match (task.mode, task.recording.as_deref()) {
        (RunMode::Offline, Some(recording)) => {
            let (started, finished) = recording.instants(block.id.as_str());
            (started, Some(finished))
        }
        _ => (Utc::now(), None),
    };
    let mut step = StepRecord {
        preset: Some(call.preset.to_string()),
        write,
        finished_at,
        ..StepRecord::new(
            task.run,
            task.seq,
            block.id.as_str(),
            block.kind.name(),
            StepStatus::Failed,
            started_at,
        )
    };
    let mut http = Duration::ZERO;
    let mut durable_wait = Duration::ZERO;
    if role && task.context["record"]["status"].as_str() == Some("deactivated") {
        // Already deactivated records are not processed: no call, nothing written.
        step.status = StepStatus::Succeeded;
        step.outputs = role_outputs(false, Value::Null);
        step.note = Some("the subject is already deactivated: not processed".to_owned());
        return finish(task, step, None, None, http, durable_wait, t0).await;
    }
    let redactor = client.redactor();
    let credential = CredentialName::new(call.credential.clone());
    let given = as_of::at(started_at, || {
        with_context(&mut task.context, |hb| {
            render_map(&inner.templates, &call.with, hb)
        })
    });
    let prepared = as_of::at(started_at, || {
        render_request(&mut task, call, &credential, given)
    });
    let mut role_inputs = Map::new();
    let called = match prepared {
        Err(message) => Called::Failed {
            message: redactor.text(&message),
            answer: None,
        },
        Ok((inputs, request)) => {
            if role {
                role_inputs = inputs.clone();
            }
            let mut shown = Value::Object(inputs.clone());
            redactor.json_in_place(&mut shown);
            step.inputs = Some(shown);
            step.request = redactor.request_json(&request);
            // Redacted like the request (a password in a base URL's userinfo), so an offline
            // replay renders below the same text the recorded URL shows.
            step.base_url = Some(redactor.text(&request.base_url));
            if write && task.mode == RunMode::DryRun {
                step.status = StepStatus::Planned;
                step.note = Some("dry run: write rendered, not sent".to_owned());
                return finish(task, step, None, None, http, durable_wait, t0).await;
            }
            match task.mode {
                RunMode::Offline => {
                    let called = recorded(
                        task.recording.as_deref(),
                        block.id.as_str(),
                        call,
                        client.presets(),
                        true,
                    );
                    if let (Called::Ok(_), Some(_)) = (&called, &request.merge_read) {
                        step.request = merged_offline(
                            client,
                            call,
                            task.recording.as_deref(),
                            block.id.as_str(),
                            request,
                        );
                    }
                    called
                }
                // `plan --offline`: a dry run whose reads the latest recorded run answers.
                RunMode::DryRun if task.recording.is_some() => recorded(
                    task.recording.as_deref(),
                    block.id.as_str(),
                    call,
                    client.presets(),
                    false,
                ),
                RunMode::Live | RunMode::DryRun => {
                    if own_entry(&task, write) {
                        step.status = StepStatus::Sending;
                        inner.history.put_steps(&[&step]).await?;
                        let wait = Instant::now();
                        inner.history.durable().await?;
                        durable_wait += wait.elapsed();
                    }
                    let options = call_options(&call.retry, call.timeout);
                    let sent = Instant::now();
                    // A merge changes the body it sends: the request is recorded again after it.
                    let merged = request.merge_read.is_some();
                    let result = Box::pin(client.send_rendered(
                        &call.preset,
                        &credential,
                        request,
                        &options,
                    ))
                    .await;
                    http = sent.elapsed();
                    match result {
                        Ok(exchange) => {
                            if merged {
                                step.request = redactor.request_json(&exchange.request);
                            }
                            Called::Ok(answer_of(exchange.response, exchange.attempts))
                        }
                        Err(CallError::NotFound { response, .. }) => {
                            Called::NotFound(answer_of(*response, 1))
                        }
                        Err(err) => {
                            let message = redactor.text(&err.to_string());
                            let answer = err.response().cloned().map(|r| answer_of(r, 1));
                            // Durable retries: live recorded runs only (see `retry`).
                            let durable = task.mode == RunMode::Live && task.persist;
                            match retry::classify(&err, write) {
                                Class::Transient { vendor_wait } if durable => Called::Transient {
                                    message,
                                    answer,
                                    vendor_wait,
                                },
                                Class::Uncertain if durable => {
                                    Called::Uncertain { message, answer }
                                }
                                _ => Called::Failed { message, answer },
                            }
                        }
                    }
                }
            }
        }
    };
    let called = match called {
        // Boxed: a probe is a whole call, on a rare path.
        Called::Uncertain { message, answer } => {
            Box::pin(retry::check(&task, call, &mut step, message, answer)).await?
        }
        called => called,
    };
    let called = if call.answers.is_empty() {
        called
    } else {
        expected(call, called, &task.context)
    };
    // A live write the vendor took (or its probe found done): if its save or outputs then fail,
    // the failure path would treat a done write as not done, so the run stops for a person
    // instead (`attention`).
    let mut went_through = false;
    let mut attention = None;
    let (answer, outcome) = match called {
        Called::Ok(mut answer) => {
            went_through = own_entry(&task, write);
            let mut result = as_of::at(started_at, || {
                outcome_of(&mut task, call, role, &mut answer)
            })
            .map_err(|message| after_the_call(&task.context, call, answer.status, message));
            if let (Ok((outputs, _)), true) = (&mut result, call.reports_found()) {
                outputs.insert("found".to_owned(), Value::Bool(true));
            }
            if role {
                if let Ok((outputs, saved)) = &mut result {
                    // Boxed: only role retrieval reads activity, so every other block's future
                    // does not carry room for a second call.
                    let activity =
                        Box::pin(activity(&task, call, &role_inputs, &answer, started_at)).await;
                    http += activity.http;
                    step.attempts += activity.attempts;
                    match activity.result {
                        Ok(Some(last)) => {
                            outputs.insert("last_activity".to_owned(), last.clone());
                            saved.insert("last_activity".to_owned(), last);
                        }
                        Ok(None) => {}
                        Err(message) => result = Err(message),
                    }
                    if let Some(note) = activity.note {
                        step.note = Some(note);
                    }
                }
                // last_activity only moves forward.
                if let Ok((outputs, saved)) = &mut result {
                    let old = &task.context["record"]["last_activity"];
                    if let Some(new) = saved.get("last_activity") {
                        let kept = later(old, new);
                        outputs.insert("last_activity".to_owned(), kept.clone());
                        saved.insert("last_activity".to_owned(), kept);
                    }
                }
            }
            if let (Ok((outputs, _)), Some(collect)) = (&mut result, &call.collect) {
                let items = answer.items.clone().unwrap_or_else(|| {
                    let pointer = client
                        .presets()
                        .action(&call.preset)
                        .and_then(|a| a.spec.items.clone())
                        .unwrap_or_default();
                    answer
                        .body
                        .pointer(&pointer)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                });
                let write = task.mode == RunMode::Live && task.persist;
                let summary = as_of::at(started_at, || {
                    super::collect::import(engine, collect, &items, &task.context, write)
                })?;
                outputs.extend(summary.outputs());
                if !write {
                    step.note = Some(format!(
                        "{} items listed; dry run: nothing written",
                        items.len()
                    ));
                }
            }
            (Some(answer), result)
        }
        Called::NotFound(answer) if role => {
            let mut saved = Map::new();
            if deactivate_missing {
                saved.insert("status".to_owned(), Value::String("deactivated".to_owned()));
                step.note =
                    Some("the vendor does not have this user: marked `deactivated`".to_owned());
            } else {
                step.note = Some("the vendor does not have this user".to_owned());
            }
            (Some(answer), Ok((role_outputs(false, Value::Null), saved)))
        }
        Called::NotFound(answer) => {
            let message = not_found_message(call, &answer);
            (Some(answer), Err(message))
        }
        Called::Failed { message, answer } => (answer, Err(message)),
        Called::Answered { answer, not_found } => {
            // A result, not the action's success: nothing is saved and no `outputs:` render
            // (they read the success's shape); `found` says which answer it was.
            let mut outputs = Map::new();
            if call.reports_found() {
                outputs.insert("found".to_owned(), Value::Bool(!not_found));
            }
            step.note = Some(format!(
                "answered {}{}, which `answers` lists: a result, not a failure; nothing saved",
                answer.status,
                if not_found { " (not found)" } else { "" }
            ));
            (Some(answer), Ok((outputs, Map::new())))
        }
        Called::Transient {
            message,
            answer,
            vendor_wait,
        } => {
            step.status = StepStatus::Retrying;
            step.error = Some(message);
            let mut done = finish(task, step, answer, None, http, durable_wait, t0).await?;
            done.transient = Some(Transient { vendor_wait });
            return Ok(done);
        }
        Called::Unknown {
            message,
            answer,
            attention,
        } => {
            // The outcome is unknown: the step stays `sending`, as after a crash.
            step.status = StepStatus::Sending;
            step.error = Some(message);
            step.note = Some("delivery uncertain: not sent again".to_owned());
            return finish(task, step, answer, Some(attention), http, durable_wait, t0).await;
        }
        Called::Uncertain { .. } => unreachable!("an uncertain write is checked above"),
    };
    match outcome {
        Ok((outputs, saved)) => {
            step.status = StepStatus::Succeeded;
            step.outputs = outputs;
            if !saved.is_empty() {
                if let (RunMode::Live, true, Some((collection, key))) =
                    (task.mode, task.persist, &task.subject)
                {
                    let base = task.context.get("record").cloned().unwrap_or(Value::Null);
                    save_subject(engine, task.run, collection, key, &base, &saved).await?;
                }
            }
            step.saved = saved;
        }
        Err(message) => {
            step.status = StepStatus::Failed;
            if went_through {
                attention = Some(format!(
                    "block `{}`: {message}; the write went through, so the run stops here instead of taking a failure path: set what it saves by hand, then run the workflow again if later blocks are still wanted",
                    step.block
                ));
            }
            step.error = Some(message);
        }
    }
    finish(task, step, answer, attention, http, durable_wait, t0).await
}

/// A block's inputs and the request it sends: the preset's, with the block's `request:` applied.
fn render_request(
    task: &mut Task,
    call: &ApiCall,
    credential: &CredentialName,
    given: Result<Fields, String>,
) -> Result<(Fields, crate::http::RenderedRequest), String> {
    let engine = task.engine.clone();
    let inner = &engine.inner;
    let client = &inner.client;
    let given = given.map_err(|m| format!("cannot render `with` {m}"))?;
    let inputs = client
        .resolve_inputs_with(&call.preset, &given, &task.context, &call.optional_inputs)
        .map_err(|e| e.to_string())?;
    let Some(request) = &call.request else {
        let request = client
            .render(&call.preset, credential, &inputs)
            .map_err(|e| e.to_string())?;
        return Ok((inputs, request));
    };
    // The override's templates see the inputs too: lent to the context, then taken back.
    let Value::Object(fields) = &mut task.context else {
        unreachable!("the run context is an object")
    };
    fields.insert("inputs".to_owned(), Value::Object(inputs));
    let patch = with_context(&mut task.context, |hb| {
        super::advanced::render(&inner.templates, request, hb)
    });
    let Some(Value::Object(inputs)) = task
        .context
        .as_object_mut()
        .and_then(|fields| fields.shift_remove("inputs"))
    else {
        unreachable!("inserted above")
    };
    let request = client
        .render_patched(&call.preset, credential, &inputs, Some(&patch?))
        .map_err(|e| e.to_string())?;
    Ok((inputs, request))
}

/// The error of a `save:` or `outputs:` that cannot render after the vendor answered: it says the
/// call itself went through (a write took effect), and, when the missing value was another
/// block's, how that block ended (compile checks that it is an earlier block, so it settled: a
/// skipped or failed one has no outputs).
fn after_the_call(context: &Value, call: &ApiCall, status: u16, message: String) -> String {
    let mut out = format!("`{}` answered {status}, but {message}", call.preset);
    // The strict renderer names the missing path: `blocks.ID.…` is not defined.
    let read = message
        .split("`blocks.")
        .nth(1)
        .and_then(|rest| rest.split(['.', '`']).next());
    if let Some(id) = read {
        // Every earlier block has settled; the context leaves out the skipped ones.
        match context["blocks"].get(id) {
            None => out.push_str(&format!(" (block `{id}` was skipped in this run)")),
            Some(block) if block["outcome"] != "succeeded" => {
                let outcome = block["outcome"].as_str().unwrap_or("unknown");
                out.push_str(&format!(" (block `{id}` ended `{outcome}`)"));
            }
            // Not found, or an answer `answers:` lists: succeeded without a success's outputs.
            Some(block)
                if block["outputs"]["found"] == false
                    || block["status"]
                        .as_u64()
                        .is_some_and(|s| !(200..300).contains(&s)) =>
            {
                let status = &block["status"];
                let what = if block["outputs"]["found"] == false {
                    " (not found)"
                } else {
                    ""
                };
                out.push_str(&format!(" (block `{id}` answered {status}{what}, which has no outputs but `found`; route on it with an edge `when:`)"));
            }
            Some(_) => {}
        }
    }
    out
}

/// A JSON object's fields.
pub(crate) type Fields = Map<String, Value>;

/// Outputs and saves of a successful call, rendered over the context plus the response.
pub(crate) fn outcome_of(
    task: &mut Task,
    call: &ApiCall,
    role: bool,
    answer: &mut Answer,
) -> Result<(Fields, Fields), String> {
    // The call's own `response`, `status` and `headers` join the context for the rendering and
    // go back to the answer after it (moved, not copied).
    if let Value::Object(fields) = &mut task.context {
        fields.insert("response".to_owned(), std::mem::take(&mut answer.body));
        fields.insert("status".to_owned(), Value::from(answer.status));
        let headers = std::mem::take(&mut answer.headers);
        fields.insert("headers".to_owned(), Value::Object(headers));
    }
    let (engine, prepared, node) = (&task.engine, &task.prepared, task.node);
    let result = with_context(&mut task.context, |hb| {
        render_outcome(engine, prepared, node, call, role, hb)
    });
    if let Value::Object(fields) = &mut task.context {
        if let Some(Value::Object(headers)) = fields.shift_remove("headers") {
            answer.headers = headers;
        }
        fields.shift_remove("status");
        answer.body = fields.shift_remove("response").unwrap_or(Value::Null);
    }
    result
}

fn render_outcome(
    engine: &Engine,
    prepared: &Prepared,
    node: NodeIndex,
    call: &ApiCall,
    role: bool,
    hb: &Context,
) -> Result<(Fields, Fields), String> {
    let templates = &engine.inner.templates;
    let mut outputs = if call.outputs.is_empty() {
        let mut outputs = Map::new();
        if let Some(defaults) = prepared.default_outputs.get(&node) {
            for (key, template) in defaults {
                if let Ok(value) = templates.render_value(template, hb) {
                    outputs.insert(key.clone(), value);
                }
            }
        }
        outputs
    } else {
        render_map(templates, &call.outputs, hb).map_err(|m| format!("cannot render output {m}"))?
    };
    let mut saved =
        render_map(templates, &call.save, hb).map_err(|m| format!("cannot render save {m}"))?;
    if role {
        if let Some(spec) = prepared.roles.get(&node) {
            let get = |t: &Option<crate::template::Template>| {
                t.as_ref()
                    .and_then(|t| templates.render_value(t, hb).ok())
                    .filter(|v| !v.is_null() && v.as_str() != Some(""))
            };
            let found_role = get(&spec.role);
            outputs.extend(role_outputs(
                true,
                found_role.clone().unwrap_or(Value::Null),
            ));
            if let Some(role) = found_role {
                saved.insert("role".to_owned(), role);
            }
            if let Some(last) = get(&spec.last_activity) {
                outputs.insert("last_activity".to_owned(), last.clone());
                saved.insert("last_activity".to_owned(), last);
            }
            let active = match get(&spec.active) {
                Some(Value::Bool(b)) => b,
                Some(Value::String(s)) => !matches!(
                    s.trim().to_lowercase().as_str(),
                    "false" | "no" | "0" | "inactive" | "disabled" | "deactivated" | "suspended"
                ),
                _ => true,
            };
            let status = if active { "active" } else { "deactivated" };
            outputs.insert("active".to_owned(), Value::Bool(active));
            saved.insert("status".to_owned(), Value::String(status.to_owned()));
        }
    }
    Ok((outputs, saved))
}

/// True for a live write's step, which has a history entry of its own: its `sending` intent,
/// written and flushed before the request leaves, then its outcome under the same key.
fn own_entry(task: &Task, write: bool) -> bool {
    write && task.persist && task.mode == RunMode::Live
}

/// Records the settled step (durably, before anything that depends on it starts).
async fn finish(
    task: Task,
    mut step: StepRecord,
    answer: Option<Answer>,
    attention: Option<String>,
    http: Duration,
    durable_wait: Duration,
    t0: Instant,
) -> Result<BlockDone, ExecError> {
    let inner = &task.engine.inner;
    let http_status = answer.as_ref().map(|a| a.status);
    let mut body = Value::Null;
    if let Some(answer) = answer {
        step.attempts = answer.attempts;
        // The body is redacted already (by the client, or in the recording it comes from).
        body = answer.body;
        let (kept, truncated) = context::cap_body(&body, answer.wire_len, inner.options.body_cap);
        step.response = Some(StepResponse {
            status: answer.status,
            headers: answer.headers,
            body: kept,
            truncated,
        });
    }
    // An offline replay's step has the recorded instant already.
    step.finished_at.get_or_insert_with(Utc::now);
    step.duration_us = t0.elapsed().as_micros() as u64;
    step.http_us = http.as_micros() as u64;
    // A live write's step replaces its `sending` intent here; every other step is written by the
    // run loop, together with the run's other unwritten steps, and flushed before anything that
    // depends on it starts (see `run.rs`).
    let written = own_entry(&task, step.write);
    if written {
        inner.history.put_steps(&[&step]).await?;
    }
    tracing::debug!(status = %step.status, "block settled");
    let settled = Settled {
        at: step.finished_at.unwrap_or(step.started_at),
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
        written,
        transient: None,
    })
}

/// A role retrieval's `found` and `role` outputs.
fn role_outputs(found: bool, role: Value) -> Fields {
    let mut outputs = Map::new();
    outputs.insert("found".to_owned(), Value::Bool(found));
    outputs.insert("role".to_owned(), role);
    outputs
}

/// The later of two activity instants (RFC 3339); the new value when the old one is missing or
/// unreadable, the old one when the new one is unreadable.
fn later(old: &Value, new: &Value) -> Value {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    match (parse(old), parse(new)) {
        (Some(a), Some(b)) if a > b => old.clone(),
        (Some(_), None) => old.clone(),
        _ => new.clone(),
    }
}

/// Merges `saved` into the subject record through the records store, so record triggers see the
/// change (a save by one workflow can start another), as run `run`'s own (see
/// [`crate::store::in_flight`]). A record not stored yet is created from the subject as the run
/// saw it (`base`) with the saves over it.
pub(crate) async fn save_subject(
    engine: &Engine,
    run: RunId,
    collection: &str,
    key: &str,
    base: &Value,
    saved: &Fields,
) -> Result<(), ExecError> {
    let Some(collection) = Collection::parse(collection) else {
        return Ok(());
    };
    let subject = Subject::new(collection, RecordKey::parse(key));
    let records = engine.records();
    let fields = if records.get(&subject).await?.is_none() {
        let mut fields = base.as_object().cloned().unwrap_or_default();
        fields.extend(saved.clone());
        fields
    } else {
        saved.clone()
    };
    let write = Write {
        subject,
        change: Change::Upsert {
            fields,
            mode: WriteMode::CreateUpdate,
        },
    };
    let holder = crate::store::in_flight::run_holder(run);
    // The write evaluates the record triggers' rules: on a blocking thread, never on the async
    // workers every run and the API share (a rule may run up to its time limit).
    let written = records
        .write(vec![write], engine.triggers(), Utc::now(), Some(holder))
        .await?;
    if written.iter().any(|w| !w.queued.is_empty()) {
        engine.wake_queue();
    }
    Ok(())
}

/// The outcome of reading a user's last activity with the role preset's `activity_action`.
struct Activity {
    /// The last activity, if the vendor has one; an error fails the block.
    result: Result<Option<Value>, String>,
    note: Option<String>,
    http: Duration,
    attempts: u32,
}

/// Reads the last activity when the role preset names an `activity_action`. The action takes the
/// role call's inputs it declares, and `user_uuid`: the user the role answer names
/// (`collection.0.user.uri` in Calendly's shape, else `resource.uri`). A 403 the preset marks
/// `unsupported` (a plan without the activity log) leaves last_activity as it is; not found
/// means no activity; any other error fails the block (and deactivates nobody). The request is
/// rendered as of `now`, the block's start.
///
/// Offline, the read is prepared as live (so a change to what it is given shows) and answered
/// from the recording: the step keeps what the block learned from it, not the response, so the
/// answer is the `last_activity` the recorded step saved (the later of the record's and the
/// vendor's, which the replay keeps as is), or the recorded "not available" note.
async fn activity(
    task: &Task,
    call: &ApiCall,
    role_inputs: &Fields,
    answer: &Answer,
    now: DateTime<Utc>,
) -> Activity {
    let inner = &task.engine.inner;
    let client = &inner.client;
    let mut out = Activity {
        result: Ok(None),
        note: None,
        http: Duration::ZERO,
        attempts: 0,
    };
    let Some(name) = client
        .presets()
        .action(&call.preset)
        .and_then(|a| a.spec.role.as_ref())
        .and_then(|r| r.activity_action.clone())
    else {
        return out;
    };
    let id = PresetId {
        vendor: call.preset.vendor.clone(),
        action: name,
    };
    let Some(action) = client.presets().action(&id) else {
        return out;
    };
    let mut given: Fields = role_inputs
        .iter()
        .filter(|(k, _)| action.spec.inputs.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if action.spec.inputs.contains_key("user_uuid") && !given.contains_key("user_uuid") {
        let user = [
            "/collection/0/user/uri",
            "/collection/0/user",
            "/resource/uri",
        ]
        .iter()
        .find_map(|p| answer.body.pointer(p).and_then(Value::as_str));
        match user {
            Some(user) => {
                given.insert("user_uuid".to_owned(), Value::String(user.to_owned()));
            }
            None => {
                out.note = Some(format!(
                    "the role answer names no user, so `{id}` was not read"
                ));
                return out;
            }
        }
    }
    let credential = CredentialName::new(call.credential.clone());
    let request = as_of::at(now, || {
        let inputs = client
            .resolve_inputs(&id, &given, &task.context)
            .map_err(|err| err.to_string())?;
        client
            .render(&id, &credential, &inputs)
            .map_err(|err| format!("reading the last activity: {err}"))
    });
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            out.result = Err(client.redactor().text(&message));
            return out;
        }
    };
    if task.mode == RunMode::Offline || (task.mode == RunMode::DryRun && task.recording.is_some()) {
        let recorded = task.recording.as_deref().and_then(|r| {
            r.steps
                .get(task.prepared.workflow.graph[task.node].id.as_str())
        });
        let unsupported = unsupported_note(&id);
        match recorded {
            Some(step) if step.note.as_deref() == Some(unsupported.as_str()) => {
                out.note = Some(unsupported);
            }
            Some(step) => {
                out.result = Ok(step
                    .saved
                    .get("last_activity")
                    .filter(|v| !v.is_null())
                    .cloned());
            }
            None => {}
        }
        return out;
    }
    let options = call_options(&call.retry, call.timeout);
    let sent = Instant::now();
    let result = client
        .send_rendered(&id, &credential, request, &options)
        .await;
    out.http = sent.elapsed();
    out.attempts = 1;
    match result {
        Ok(exchange) => {
            out.attempts = exchange.attempts;
            let hb = Context::from(serde_json::json!({"response": exchange.response.body}));
            // Compiled once, with the workflow (`Prepared::roles`).
            out.result = Ok(task
                .prepared
                .roles
                .get(&task.node)
                .and_then(|r| r.activity.as_ref())
                .and_then(|t| inner.templates.render_value(t, &hb).ok())
                .filter(|v| !v.is_null() && v.as_str() != Some("")));
        }
        Err(CallError::Unsupported { .. }) => {
            out.note = Some(unsupported_note(&id));
        }
        Err(CallError::NotFound { .. }) => {}
        Err(err) => {
            out.result = Err(client
                .redactor()
                .text(&format!("reading the last activity: {err}")));
        }
    }
    out
}

/// The note of a role retrieval whose activity read the vendor does not offer to this account.
fn unsupported_note(action: &PresetId) -> String {
    format!("`{action}` is not available for this account: last_activity left as it is")
}

//! Resuming a run a crash left unfinished, from its last durable step.
//!
//! Every block whose last step is settled keeps its outcome (and its saves are re-applied to the
//! in-memory subject); reads that were in flight are simply run again. A write found `sending`
//! has an unknown outcome: if its preset has a `probe` (a read and a rhai `done_when` over
//! `response` and `status`), the probe decides. Done means the write is marked succeeded without
//! sending it again, and its `save` and `outputs` render from the write's answer as the probe's
//! `answer` recovers it (the created user in the probe's list); when they cannot, the run stops
//! in `needs_attention` naming the block, since a later block would read nothing. Not done means
//! it is sent now. Without a probe, when the block's advanced mode overrides `request.path` or
//! `request.method` (the probe would read another resource), or when the probe itself cannot
//! answer (its call fails, or answers 429 or 5xx), the run stops in `needs_attention`, naming the
//! block, and nothing is sent. A block whose last step is `retrying` has not settled: the walk
//! tries it again once its time has come (see `retry`); a `wait` block's `waiting` step neither:
//! the walk judges the wait again (see `wait`).

use std::collections::HashMap;

use std::time::Instant;

use chrono::Utc;
use serde_json::{json, Map, Value};

use super::block::{answer_of, call_options, outcome_of, save_subject, Answer, Task};
use super::retry::{self, Class};
use super::run::{self, Resumed, Settled};
use super::{context, Engine, ExecError, RunOutcome};
use crate::compile::BlockKind;
use crate::config::CredentialName;
use crate::preset::PresetId;
use crate::store::api::{ReadHistory, WriteHistory};
use crate::store::history::{RunRecord, RunStatus, StepRecord, StepStatus};

/// What a probe said.
pub(crate) enum Verdict {
    /// The write took effect: its answer as the probe's `answer` recovers it, or why it cannot.
    Done(Result<Answer, String>),
    NotDone,
    Unknown(String),
}

pub(crate) async fn resume(engine: Engine, mut run: RunRecord) -> Result<RunOutcome, ExecError> {
    let history = engine.history().clone();
    let started = Instant::now();
    let prepared = match engine.prepare_snapshot(&run) {
        Ok(p) => p,
        Err(err @ (ExecError::Compile { .. } | ExecError::MissingSnapshot { .. })) => {
            run.status = RunStatus::Failed;
            run.error = Some(format!("cannot resume: {err}"));
            run.finished_at = Some(Utc::now());
            history.put_run(&run).await?;
            history.durable().await?;
            return Ok(RunOutcome {
                steps: history.steps(run.id).await?,
                run,
                duration: started.elapsed(),
                http: Default::default(),
                durable_wait: Default::default(),
            });
        }
        Err(err) => return Err(err),
    };
    let steps = history.steps(run.id).await?;
    let mut last: HashMap<String, StepRecord> = HashMap::new();
    for step in &steps {
        last.insert(step.block.clone(), step.clone());
    }
    let mut resumed = Resumed {
        next_seq: steps.iter().map(|s| s.seq + 1).max().unwrap_or(0),
        ..Resumed::default()
    };
    let mut record = run
        .subject
        .as_ref()
        .map(|s| s.record.clone())
        .unwrap_or_else(|| json!({}));
    let mut ordered: Vec<StepRecord> = last.into_values().collect();
    ordered.sort_by_key(|s| s.seq);
    let mut kept = steps.clone();
    for mut step in ordered {
        let Some(node) = prepared.node(&step.block) else {
            continue;
        };
        if matches!(
            step.status,
            StepStatus::WaitingApproval
                | StepStatus::Retrying
                | StepStatus::Held
                | StepStatus::Waiting
        ) {
            // Not settled: the walk reaches it again and looks for a decision, or tries it again
            // (when its time has come, see `retry`).
            continue;
        }
        if step.status == StepStatus::Sending {
            let verdict = probe(&engine, &prepared, node, &step, &record, &run).await;
            match verdict {
                Verdict::Done(recovered) => {
                    let mut task = Task {
                        engine: engine.clone(),
                        prepared: prepared.clone(),
                        node,
                        run: run.id,
                        seq: step.seq,
                        mode: run.mode,
                        context: context::build(&record, &run.vars, Map::new(), &Value::Null),
                        subject: None,
                        persist: true,
                        recording: None,
                    };
                    let call = match &prepared.workflow.graph[node].kind {
                        BlockKind::Api(call) => Some(call),
                        BlockKind::RoleRetrieval(role) => Some(&role.call),
                        BlockKind::Begin | BlockKind::Wait(_) | BlockKind::End => None,
                    };
                    let outcome = match (call, recovered) {
                        (None, _) => Ok((Map::new(), Map::new())),
                        (Some(_), Err(reason)) => Err(reason),
                        (Some(call), Ok(mut answer)) => {
                            outcome_of(&mut task, call, false, &mut answer)
                        }
                    };
                    step.finished_at = Some(Utc::now());
                    step.note = Some(
                        "outcome unknown after a restart; the preset's probe found the write had taken effect, so it was not sent again"
                            .to_owned(),
                    );
                    let (outputs, saved) = match outcome {
                        Ok(recovered) => recovered,
                        Err(reason) => {
                            // Done, but what it saves and outputs is lost: a later block would
                            // read nothing, so a person looks before anything else happens.
                            let message = format!(
                                "block `{}`: the write `{}` had taken effect before the process stopped (its probe found it), but its save and outputs cannot be recovered from the probe's answer: {reason}; set what it saves by hand, then run the workflow again if later blocks are still wanted",
                                step.block,
                                step.preset.as_deref().unwrap_or("?")
                            );
                            step.status = StepStatus::Failed;
                            step.error = Some(reason);
                            return needs_attention(history, run, step, kept, message, started)
                                .await;
                        }
                    };
                    step.outputs = outputs;
                    if let Some(subject) = &run.subject {
                        if !saved.is_empty() {
                            save_subject(
                                &engine,
                                run.id,
                                &subject.collection,
                                &subject.key,
                                &subject.record,
                                &saved,
                            )
                            .await?;
                        }
                    }
                    step.saved = saved;
                    step.status = StepStatus::Succeeded;
                    history.put_steps(&[&step]).await?;
                    if let Some(slot) = kept.iter_mut().find(|s| s.seq == step.seq) {
                        *slot = step.clone();
                    }
                }
                Verdict::NotDone => {
                    step.note = Some(
                        "outcome unknown after a restart; the preset's probe found the write had not taken effect, so it is sent again in a later step"
                            .to_owned(),
                    );
                    history.put_steps(&[&step]).await?;
                    continue;
                }
                Verdict::Unknown(reason) => {
                    let message = format!(
                        "block `{}`: the write `{}` may or may not have reached the vendor before the process stopped, and {reason}; check it at the vendor, then run the workflow again",
                        step.block,
                        step.preset.as_deref().unwrap_or("?")
                    );
                    step.note = Some("outcome unknown: not sent again".to_owned());
                    return needs_attention(history, run, step, kept, message, started).await;
                }
            }
        }
        if step.status == StepStatus::Succeeded {
            if let Value::Object(fields) = &mut record {
                for (k, v) in &step.saved {
                    fields.insert(k.clone(), v.clone());
                }
            }
        }
        resumed.settled.push((node, Settled::from_step(&step)));
    }
    history.durable().await?;
    resumed.record = Some(record);
    resumed.steps = kept;
    tracing::info!(run_id = %run.id, "resuming run");
    run::execute(engine, prepared, run, None, true, Some(resumed), None).await
}

/// Ends a resumed run in `needs_attention` with `message`, recording `step` as it now is.
async fn needs_attention(
    history: crate::store::any::AnyHistory,
    mut run: RunRecord,
    step: StepRecord,
    mut kept: Vec<StepRecord>,
    message: String,
    started: Instant,
) -> Result<RunOutcome, ExecError> {
    history.put_steps(&[&step]).await?;
    run.status = RunStatus::NeedsAttention;
    run.error = Some(message);
    run.finished_at = Some(Utc::now());
    history.put_run(&run).await?;
    history.durable().await?;
    if let Some(slot) = kept.iter_mut().find(|s| s.seq == step.seq) {
        *slot = step;
    }
    Ok(RunOutcome {
        run,
        steps: kept,
        duration: started.elapsed(),
        http: Default::default(),
        durable_wait: Default::default(),
    })
}

/// Asks a write's preset probe whether the write took effect (also used by `retry` for a write
/// whose delivery is uncertain). A probe answered with a transient failure (429, 5xx, …) cannot
/// tell.
pub(crate) async fn probe(
    engine: &Engine,
    prepared: &super::Prepared,
    node: petgraph::graph::NodeIndex,
    step: &StepRecord,
    record: &Value,
    run: &RunRecord,
) -> Verdict {
    let call = match &prepared.workflow.graph[node].kind {
        BlockKind::Api(call) => call,
        BlockKind::RoleRetrieval(role) => &role.call,
        BlockKind::Begin | BlockKind::Wait(_) | BlockKind::End => return Verdict::NotDone,
    };
    let client = engine.client();
    // The probe reads the resource the preset addresses; an override that addressed another one
    // (or sent another method) leaves it nothing trustworthy to read.
    if let Some(part) = call.request.as_ref().and_then(|r| r.readdressed()) {
        return Verdict::Unknown(format!(
            "its `{part}` overrides the preset's, so the preset's probe cannot check it"
        ));
    }
    let Some(spec) = client
        .presets()
        .action(&call.preset)
        .and_then(|a| a.spec.probe.clone())
    else {
        return Verdict::Unknown(format!("`{}` has no probe to check it", call.preset));
    };
    let probe_id = PresetId {
        vendor: call.preset.vendor.clone(),
        action: spec.action.clone(),
    };
    let condition = match crate::compile::rule_engine().compile(&spec.done_when) {
        Ok(c) => c,
        Err(err) => {
            return Verdict::Unknown(format!("its probe's `done_when` does not compile: {err}"))
        }
    };
    let given: Map<String, Value> = step
        .inputs
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let context = context::build(record, &run.vars, Map::new(), &Value::Null);
    let credential = CredentialName::new(call.credential.clone());
    let result = async {
        let probe_action = client
            .presets()
            .action(&probe_id)
            .ok_or_else(|| format!("its probe `{probe_id}` is not a preset action"))?;
        // The probe takes the write's inputs it declares.
        let inputs: Map<String, Value> = given
            .into_iter()
            .filter(|(k, _)| probe_action.spec.inputs.contains_key(k))
            .collect();
        let inputs = client
            .resolve_inputs(&probe_id, &inputs, &context)
            .map_err(|e| e.to_string())?;
        let options = call_options(&Default::default(), call.timeout);
        match client.call(&probe_id, &credential, &inputs, &options).await {
            Ok(exchange) => Ok(exchange.response),
            Err(err) => match err.response() {
                // A definitive answer (a 404 saying the resource is gone) is the probe's answer;
                // a rate limit or a server error says nothing about the write.
                Some(r) if retry::classify(&err, false) == Class::Definitive => Ok(r.clone()),
                _ => Err(format!(
                    "its probe `{probe_id}` failed: {}",
                    client.redactor().text(&err.to_string())
                )),
            },
        }
    }
    .await;
    let response = match result {
        Ok(response) => response,
        Err(reason) => return Verdict::Unknown(reason),
    };
    let scope = json!({"response": response.body, "status": response.status});
    match context::eval(&condition, &scope) {
        Ok(true) => Verdict::Done(recover(engine, spec.answer.as_ref(), response, scope)),
        Ok(false) => Verdict::NotDone,
        Err(err) => Verdict::Unknown(format!("its probe's `done_when` failed: {err}")),
    }
}

/// The write's answer from the probe's: the preset's `probe.answer` rendered over the probe's
/// `response` and `status` (headers and status stay the probe's), or the probe's answer as it is.
fn recover(
    engine: &Engine,
    template: Option<&Value>,
    response: crate::http::Response,
    scope: Value,
) -> Result<Answer, String> {
    let mut answer = answer_of(response, 1);
    if let Some(template) = template {
        let template = crate::template::JsonTemplate::compile(template)
            .map_err(|err| format!("its probe's `answer` does not compile: {err}"))?;
        let context = handlebars::Context::from(scope);
        answer.body = engine
            .inner
            .templates
            .render_json(&template, &context)
            .map_err(|err| format!("its probe's `answer` cannot be rendered: {err}"))?;
    }
    Ok(answer)
}

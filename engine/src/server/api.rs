//! The record and run routes of `blockyard serve`, mounted under `/api` by [`super::Server`].
//!
//! The JSON shapes are the CLI's `--json` shapes: a run is the history's run record, and a run
//! with its steps adds `"steps"` (as `blockyard history show --json`); `GET /api/runs` is
//! `history list --json`; an offline replay is `replay --offline --json` (against the run's
//! recorded vars and base URLs, as without `--config`). A live replay needs every credential its
//! blocks name: 409 otherwise.
//!
//! An answer that acknowledges a change (records written with the runs they trigger, a started
//! run's 202, a tick, a cancel, an approval) leaves only once the change is durable, on disk after
//! an fsync ([`crate::store`] says what that promises).
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /records/{collection}[?mode=create_update]` | one record or an array | `{"collection", "records": [{"key", "outcome", "queued"}], "queued"}` |
//! | `GET /records/{collection}/{key}` | | the record's fields |
//! | `GET /triggers/why?subject=EMAIL` | | `[{"subject", "trace": [trace entries]}]` |
//! | `GET /workflows` | | `[{"name", "file", "records", "on", "scheduled", "paused"}]` (`paused`: `{"by", "at"}` or null) |
//! | `POST /workflows/{name}/runs` | `{"subject"?, "vars"?, "wait"?, "force"?}` or none | 202 the run record; with `wait`, 200 the run with steps; 400 when a `records:` workflow gets no subject, 409 when the subject does not match the begin block (unless `force`) |
//! | `GET /runs?workflow=&status=&subject=&limit=` | | run records, newest first; a queued request not started yet as `{"queue_id", "status": "queued", …}` |
//! | `GET /runs/{id}` | | the run with its steps |
//! | `POST /runs/{id}/replay` | `{"from"?, "offline"?, "latest"?}` or none | the replay run with steps; offline: `{"original", "identical", "blocks", "replay"}` |
//! | `POST /runs/{id}/cancel` | | a run executing here: 202 `{"id", "cancel_requested": true}` (it stops before its next block); a run nothing executes (waiting for approval, `retrying`): 200 the run record, `cancelled` at once; 409 when finished |
//!
//! The operator routes (pause, resume-triggers, reload) are in [`super::ops`].
//!
//! A route refuses (400) every query parameter and body field it does not take, naming them and
//! what it takes, before it does anything: `POST /runs/{id}/replay?offline=true` is an error, not
//! a live replay. [`Params`] checks the query against a route's [`QuerySpec`], [`Body`] the JSON
//! body against its [`BodySpec`]; a route without options takes [`NoQuery`] and [`NoBody`] (an
//! empty body or `{}`). Record fields (`POST /records`, a run's `subject` and `vars`) are data,
//! not options, and are not checked.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::ApiError;
use crate::compile::RecordEvent;
use crate::exec::{
    Cancel, ExecError, Refusal, RunId, RunRecord, RunRequest, RunStatus, StepRecord,
};
use crate::records::{Change, Collection, Fields, KeyRule, Outcome, RecordKey, Write, WriteMode};
use crate::replay::{replay, ReplayOptions, Setup};
use crate::service::Shared;
use crate::store::history::RunFilter;
use crate::store::StoreError;
use crate::trigger::scheduler::{Clock, Scheduler};
use crate::trigger::WorkflowName;

pub(super) type ApiResult = Result<Response, ApiError>;

/// The routes, over the service's shared state.
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/records/{collection}", post(post_records))
        .route("/records/{collection}/{*key}", get(get_record))
        .route("/triggers/why", get(why))
        .route("/workflows", get(list_workflows))
        .route("/workflows/{name}/runs", post(start_run))
        .route("/workflows/{name}/tick", post(tick))
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(show_run))
        .route("/runs/{id}/replay", post(replay_run))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/blocks/{block}/approve", post(approve_block))
        .route("/runs/{id}/blocks/{block}/reject", post(reject_block))
        .merge(super::ops::routes())
        .with_state(shared)
}

pub(super) fn internal(err: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        internal(err)
    }
}

impl From<ExecError> for ApiError {
    fn from(err: ExecError) -> ApiError {
        match err {
            ExecError::UnknownRun { id } => ApiError::not_found(format!("no run `{id}`")),
            err @ ExecError::UnknownBlock { .. } => ApiError::bad_request(err.to_string()),
            err @ (ExecError::NotWaiting { .. }
            | ExecError::Cancelled { .. }
            | ExecError::ReplayCredential { .. }) => {
                ApiError::new(StatusCode::CONFLICT, err.to_string())
            }
            err => internal(err),
        }
    }
}

fn collection(name: &str) -> Result<Collection, ApiError> {
    Collection::parse(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no collection `{name}`; the collections are `people` and `saas_users`"
        ))
    })
}

fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{text}` is not a run id (26 characters, as `GET /api/runs` shows)"
        ))
    })
}

/// The query parameters a route takes.
pub(super) trait QuerySpec: DeserializeOwned + Send {
    /// Their names, as the API documents them.
    const NAMES: &'static [&'static str];
    /// The fields of the route's JSON body, named when a query parameter is refused (the options
    /// of `replay` and `runs` go in the body).
    const BODY: &'static [&'static str] = &[];
}

/// A route's query, checked against its [`QuerySpec`]: a parameter it does not take is a 400 that
/// names it and the ones it takes.
pub(super) struct Params<T>(pub(super) T);

impl<S: Send + Sync, T: QuerySpec> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params<T>, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut unknown: Vec<String> = Vec::new();
        for (name, _) in url::form_urlencoded::parse(query.as_bytes()) {
            if !T::NAMES.contains(&name.as_ref()) && !unknown.iter().any(|u| *u == name) {
                unknown.push(name.into_owned());
            }
        }
        if !unknown.is_empty() {
            let route = route(parts);
            let takes = match (T::NAMES, T::BODY) {
                ([], []) => "takes no query parameters".to_owned(),
                ([], body) => format!(
                    "takes no query parameters; send its options in the JSON body ({})",
                    ticked(body)
                ),
                (names, _) => format!("takes {}", ticked(names)),
            };
            return Err(ApiError::bad_request(format!(
                "unknown query {} {}: `{route}` {takes}",
                if unknown.len() == 1 {
                    "parameter"
                } else {
                    "parameters"
                },
                ticked(&unknown)
            )));
        }
        let Query(value) = Query::<T>::try_from_uri(&parts.uri).map_err(|err| {
            ApiError::bad_request(crate::template::lowercase_first(&err.body_text()))
        })?;
        Ok(Params(value))
    }
}

/// The fields a route's JSON body takes.
pub(super) trait BodySpec: DeserializeOwned + Default {
    /// Their names, as the API documents them.
    const FIELDS: &'static [&'static str];
}

/// A route's JSON body, checked against its [`BodySpec`]: empty means the defaults, and a field
/// the route does not take is a 400 that names it and the ones it takes.
pub(super) struct Body<T>(pub(super) T);

impl<S: Send + Sync, T: BodySpec> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Body<T>, Response> {
        let (parts, body) = request.into_parts();
        let route = route(&parts);
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        parse_body(&bytes, &route)
            .map(Body)
            .map_err(IntoResponse::into_response)
    }
}

fn parse_body<T: BodySpec>(bytes: &Bytes, route: &str) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|err| {
        ApiError::bad_request(format!("the request body is not valid JSON: {err}"))
    })?;
    let takes = match T::FIELDS {
        [] => "takes no body".to_owned(),
        fields => format!("takes {}", ticked(fields)),
    };
    let Value::Object(fields) = &value else {
        return Err(ApiError::bad_request(format!(
            "the request body is not a JSON object: `{route}` {takes}"
        )));
    };
    let unknown: Vec<&String> = fields
        .keys()
        .filter(|k| !T::FIELDS.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unknown {} {} in the request body: `{route}` {takes}",
            if unknown.len() == 1 {
                "field"
            } else {
                "fields"
            },
            ticked(&unknown)
        )));
    }
    serde_json::from_value(value)
        .map_err(|err| ApiError::bad_request(format!("the request body is not valid: {err}")))
}

/// `METHOD /api/route/{param}`, as the route was declared.
fn route(parts: &Parts) -> String {
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map_or_else(|| parts.uri.path(), MatchedPath::as_str);
    format!("{} {path}", parts.method)
}

/// `` `a`, `b` ``.
fn ticked(names: &[impl AsRef<str>]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// No query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoQuery {}

impl QuerySpec for NoQuery {
    const NAMES: &'static [&'static str] = &[];
}

/// No body (or an empty one, or `{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoBody {}

impl BodySpec for NoBody {
    const FIELDS: &'static [&'static str] = &[];
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Created => "created",
        Outcome::Updated => "updated",
        Outcome::Unchanged => "unchanged",
        Outcome::Skipped => "skipped",
        Outcome::Deleted => "deleted",
        Outcome::NotFound => "not_found",
    }
}

fn event_name(event: RecordEvent) -> &'static str {
    match event {
        RecordEvent::Created => "created",
        RecordEvent::Updated => "updated",
        RecordEvent::Deleted => "deleted",
    }
}

/// A run and its steps, as `history show --json`.
fn run_json(run: &RunRecord, steps: &[StepRecord]) -> Result<Value, ApiError> {
    let mut value = serde_json::to_value(run).map_err(internal)?;
    value["steps"] = serde_json::to_value(steps).map_err(internal)?;
    Ok(value)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    mode: Option<String>,
}

impl QuerySpec for RecordsQuery {
    const NAMES: &'static [&'static str] = &["mode"];
}

async fn post_records(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Params(query): Params<RecordsQuery>,
    Json(body): Json<Value>,
) -> ApiResult {
    let collection = collection(&name)?;
    let mode = match query.mode.as_deref() {
        None | Some("create_update") => WriteMode::CreateUpdate,
        Some("create_only") => WriteMode::CreateOnly,
        Some("update_only") => WriteMode::UpdateOnly,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown mode `{other}`; use `create_update`, `create_only` or `update_only`"
            )))
        }
    };
    let rows: Vec<Value> = match body {
        Value::Array(rows) => rows,
        row @ Value::Object(_) => vec![row],
        _ => {
            return Err(ApiError::bad_request(
                "the body must be a JSON object (one record) or an array of them",
            ))
        }
    };
    let rule = KeyRule::new(collection);
    let mut writes = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let Value::Object(fields) = row else {
            return Err(ApiError::bad_request(format!(
                "record {i} is not a JSON object"
            )));
        };
        let key = rule
            .key(&fields)
            .map_err(|err| ApiError::bad_request(format!("record {i}: {err}")))?;
        writes.push(Write {
            subject: crate::records::Subject::new(collection, key),
            change: Change::Upsert { fields, mode },
        });
    }
    tracing::debug!(
        collection = collection.name(),
        records = writes.len(),
        "writing records"
    );
    let keys: Vec<RecordKey> = writes.iter().map(|w| w.subject.key.clone()).collect();
    let triggers = shared.workflows().triggers().clone();
    // Off the async workers: the write evaluates the workflows' rules.
    let written = shared
        .records
        .write_blocking(writes, triggers, chrono::Utc::now())
        .await?;
    shared.engine.history().durable().await?;
    let queued: usize = written.iter().map(|w| w.queued.len()).sum();
    if queued > 0 {
        shared.wake.notify_one();
    }
    let records: Vec<Value> = keys
        .iter()
        .zip(&written)
        .map(|(key, written)| {
            json!({
                "key": key,
                "outcome": outcome_name(written.outcome),
                "queued": written.queued.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "collection": collection.name(),
        "records": records,
        "queued": queued,
    }))
    .into_response())
}

async fn get_record(
    State(shared): State<Arc<Shared>>,
    Path((name, key)): Path<(String, String)>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let collection = collection(&name)?;
    let subject = crate::records::Subject::new(collection, RecordKey::parse(&key));
    match shared.records.get(&subject)? {
        Some(fields) => Ok(Json(Value::Object(fields)).into_response()),
        None => Err(ApiError::not_found(format!(
            "no {} record `{}`",
            collection.name(),
            subject.key
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhyQuery {
    subject: String,
}

impl QuerySpec for WhyQuery {
    const NAMES: &'static [&'static str] = &["subject"];
}

/// The trigger trace of every record of a person: why workflows did or did not start.
async fn why(
    State(shared): State<Arc<Shared>>,
    Params(query): Params<WhyQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let mut out = Vec::new();
    for subject in shared.records.traced_subjects(&query.subject)? {
        let trace = shared.records.trace(&subject)?;
        out.push(json!({"subject": subject.to_string(), "trace": trace}));
    }
    Ok(Json(Value::Array(out)).into_response())
}

async fn list_workflows(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let workflows = shared.workflows();
    let list: Vec<Value> = workflows
        .iter()
        .map(|p| {
            let w = &p.workflow;
            json!({
                "name": w.name,
                "file": w.file.display().to_string(),
                "records": w.trigger.records.map(Collection::name),
                "on": w.trigger.on.iter().copied().map(event_name).collect::<Vec<_>>(),
                "scheduled": w.trigger.schedule.is_some(),
                "paused": shared.pauses.get(&w.name).ok().flatten(),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    /// The subject record's fields (at least its key); merged over the stored record.
    subject: Option<Fields>,
    #[serde(default)]
    vars: Map<String, Value>,
    /// Answer when the run has finished, with its steps.
    #[serde(default)]
    wait: bool,
    /// Run even when the subject does not match the begin block's conditions.
    #[serde(default)]
    force: bool,
}

impl BodySpec for StartRun {
    const FIELDS: &'static [&'static str] = &["subject", "vars", "wait", "force"];
}

/// `POST /workflows/{name}/runs` takes its options in the body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRunQuery {}

impl QuerySpec for StartRunQuery {
    const NAMES: &'static [&'static str] = &[];
    const BODY: &'static [&'static str] = StartRun::FIELDS;
}

/// `POST /api/workflows/{name}/tick`: fire a scheduled workflow's schedule now, as a tick would
/// (one run per matching record, or one run), without waiting for its cron time.
async fn tick(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let workflows = shared.workflows();
    let triggers = workflows.triggers().clone();
    let workflow = WorkflowName::new(name.as_str());
    if !triggers.scheduled().any(|w| w.name == workflow) {
        return Err(ApiError::not_found(format!(
            "no scheduled workflow `{name}` is loaded; `GET /api/workflows` lists them"
        )));
    }
    let scheduler = Scheduler::new(
        shared.records.clone(),
        shared.queue.clone(),
        triggers,
        Clock::system(),
    );
    let fired = scheduler
        .fire_blocking(&workflow, chrono::Utc::now())
        .await?;
    shared.wake.notify_one();
    let queued: Vec<String> = fired.queued.iter().map(ToString::to_string).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "workflow": name,
            "tick": fired.tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "queued": queued,
        })),
    )
        .into_response())
}

async fn start_run(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<StartRunQuery>,
    Body(body): Body<StartRun>,
) -> ApiResult {
    let workflows = shared.workflows();
    let prepared = workflows.get(&name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no workflow `{name}` is loaded; `GET /api/workflows` lists them"
        ))
    })?;
    let subject = match body.subject {
        None => None,
        Some(given) => {
            let collection = prepared
                .workflow
                .trigger
                .records
                .unwrap_or(Collection::People);
            let key = KeyRule::new(collection)
                .key(&given)
                .map_err(|err| ApiError::bad_request(format!("the subject: {err}")))?;
            let stored = crate::records::Subject::new(collection, key);
            let mut fields = shared.records.get(&stored)?.unwrap_or_default();
            fields.extend(given);
            Some(stored.with_record(fields))
        }
    };
    let request = RunRequest {
        vars: body.vars,
        ..RunRequest::manual(subject)
    };
    // 400 without a subject (the request lacks a part it needs); 409 when the subject's record
    // does not match (the request is whole, the record's state is what stands in the way).
    shared
        .engine
        .admit(prepared, &request, body.force)
        .map_err(|refusal| match refusal {
            Refusal::NoSubject { .. } => ApiError::bad_request(format!(
                "{refusal}; send it as `\"subject\": {{\"email\": ...}}`"
            )),
            Refusal::NotMatching { .. } => ApiError::new(
                StatusCode::CONFLICT,
                format!("{refusal}\nsend `\"force\": true` to run it anyway"),
            ),
        })?;
    let run = shared.engine.submit(prepared, request);
    let id = run.id;
    if body.wait {
        let outcome = run
            .handle
            .await
            .map_err(|err| internal(format!("the run task failed: {err}")))??;
        return Ok(Json(run_json(&outcome.run, &outcome.steps)?).into_response());
    }
    let recorded = run.recorded.wait().await;
    shared.track(id, run.handle);
    if !recorded {
        return Err(internal(format!(
            "run `{id}` stopped before it was recorded; see the service's log"
        )));
    }
    // The 202 promises the run: it is on disk before the answer leaves (one group commit).
    shared.engine.history().durable().await?;
    let run = shared.engine.history().run(id)?;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    workflow: Option<String>,
    status: Option<String>,
    subject: Option<String>,
    limit: Option<usize>,
}

impl QuerySpec for RunsQuery {
    const NAMES: &'static [&'static str] = &["workflow", "status", "subject", "limit"];
}

async fn list_runs(
    State(shared): State<Arc<Shared>>,
    Params(query): Params<RunsQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status `{text}`; use one of {}",
                RunStatus::NAMES.map(|n| format!("`{n}`")).join(", ")
            ))
        })?),
    };
    // Queue entries not started yet are listed as queued runs, as `history list` lists them.
    let runs = crate::store::queue::list(
        shared.engine.history(),
        &shared.queue,
        &RunFilter {
            workflow: query.workflow.filter(|w| !w.is_empty()),
            status,
            subject: query.subject.filter(|s| !s.is_empty()),
            since: None,
            limit: Some(query.limit.unwrap_or(50).min(1000)),
        },
    )?;
    let runs: Vec<Value> = runs
        .iter()
        .map(crate::store::queue::Listed::to_json)
        .collect();
    Ok(Json(runs).into_response())
}

async fn show_run(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let id = run_id(&id)?;
    let history = shared.engine.history();
    let run = history.run(id)?.ok_or(ExecError::UnknownRun { id })?;
    let steps = history.steps(id)?;
    Ok(Json(run_json(&run, &steps)?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// Reuse the recorded outcomes of the blocks before this one.
    from: Option<String>,
    /// Answer every call from the recording and compare.
    #[serde(default)]
    offline: bool,
    /// Use the loaded version of the workflow instead of the recorded snapshot.
    #[serde(default)]
    latest: bool,
}

impl BodySpec for ReplayBody {
    const FIELDS: &'static [&'static str] = &["from", "offline", "latest"];
}

/// `POST /runs/{id}/replay` takes its options in the body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayQuery {}

impl QuerySpec for ReplayQuery {
    const NAMES: &'static [&'static str] = &[];
    const BODY: &'static [&'static str] = ReplayBody::FIELDS;
}

async fn replay_run(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    _: Params<ReplayQuery>,
    Body(body): Body<ReplayBody>,
) -> ApiResult {
    let id = run_id(&id)?;
    let prepared = if body.latest {
        let run = shared
            .engine
            .history()
            .run(id)?
            .ok_or(ExecError::UnknownRun { id })?;
        let workflows = shared.workflows();
        let prepared = workflows.get(&run.workflow).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("workflow `{}` is not loaded any more", run.workflow),
            )
        })?;
        Some(prepared)
    } else {
        None
    };
    let options = ReplayOptions {
        from: body.from,
        offline: body.offline,
        // Offline, against the setup the run recorded: a difference is the workflow's.
        setup: Setup::Recorded,
    };
    let replayed = replay(&shared.engine, id, prepared, options).await?;
    let run = run_json(&replayed.outcome.run, &replayed.outcome.steps)?;
    if !body.offline {
        return Ok(Json(run).into_response());
    }
    Ok(Json(json!({
        "original": id.to_string(),
        "identical": replayed.identical(),
        "blocks": replayed.diffs,
        "replay": run,
    }))
    .into_response())
}

/// `POST /api/runs/{id}/blocks/{block}/approve`: approve a block waiting for approval; the run
/// continues, and the answer is the run with its steps once it stops again.
async fn approve_block(
    State(shared): State<Arc<Shared>>,
    Path((id, block)): Path<(String, String)>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    decide(&shared, &id, &block, true).await
}

/// `POST /api/runs/{id}/blocks/{block}/reject`: reject it; the block fails and `on_failure` routes.
async fn reject_block(
    State(shared): State<Arc<Shared>>,
    Path((id, block)): Path<(String, String)>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    decide(&shared, &id, &block, false).await
}

async fn decide(shared: &Shared, id: &str, block: &str, approve: bool) -> ApiResult {
    let id = run_id(id)?;
    let outcome = if approve {
        shared.engine.approve(id, block).await?
    } else {
        shared.engine.reject(id, block).await?
    };
    Ok(Json(run_json(&outcome.run, &outcome.steps)?).into_response())
}

async fn cancel_run(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let id = run_id(&id)?;
    match shared.engine.cancel(id).await? {
        Cancel::Requested => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id.to_string(), "cancel_requested": true})),
        )
            .into_response()),
        Cancel::Cancelled(run) => Ok(Json(run).into_response()),
        Cancel::Finished(run) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run `{id}` has already finished: {}", run.status),
        )),
    }
}

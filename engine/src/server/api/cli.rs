//! The routes the CLI needs to work through a running service (`blockyard history`, `records`,
//! `resume`, … on a data dir `serve` holds), beside the ones in [`super`]; each answers in the
//! shape of the command's `--json`.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /service` | | `{"version", "data_dir", "workflows_dir", "config", "presets", "workflows": [{"name", "file", "snapshot"}]}` |
//! | `GET /records/{collection}` | | `[{"key", "fields"}]`, in key order |
//! | `DELETE /records/{collection}/{key}` | | `{"subject", "outcome": "deleted"\|"not_found", "queued": [{"id", "workflow", "subject", "cause"}]}` |
//! | `POST /records/{collection}/batch?mode=` | `[{"key", "fields"}]` (keyed by the caller) | `{"outcomes": [...], "queued": [{"id", …}]}` |
//! | `POST /history/prune` | `{"older_than": "30d", "runs"?: true}` | `{"runs", "steps"}`: payloads blanked, or (`runs`) whole runs deleted |
//! | `POST /resume` | `{"run"?}` | `{"resumed": [runs with steps], "left": [retrying runs not due, with steps]}`; 409 for a run the service is executing |

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    collection, outcome_name, run_id, run_json, ApiErrorBody, ApiResult, Body, BodySpec, NoBody,
    NoQuery, Params, RecordsQuery,
};
use crate::exec::{ExecError, RunRecord, RunStatus};
use crate::records::{Change, Fields, RecordKey, Subject, Write};
use crate::server::ApiError;
use crate::service::Shared;
use crate::store::any::AnyHistory;
use crate::store::api::{ReadHistory, WriteHistory, WriteRecords};
use crate::store::queue::QueueId;

/// Adds the CLI's routes to the service's.
pub(super) fn routes(router: OpenApiRouter<Arc<Shared>>) -> OpenApiRouter<Arc<Shared>> {
    router
        .routes(routes!(service))
        .routes(routes!(list_records))
        .routes(routes!(write_batch))
        .routes(routes!(delete_record))
        .routes(super::admin(routes!(prune)))
        .routes(routes!(resume))
}

#[utoipa::path(get, path = "/service", tag = "service",
    responses((status = 200, description = "`{\"version\", \"data_dir\", \"workflows_dir\", \"config\", \"presets\", \"workflows\": [{\"name\", \"file\", \"snapshot\"}]}`: what the service was started with"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn service(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let setup = &shared.setup;
    // Absolute, for the CLI to compare with its own paths.
    let path = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_owned())
            .display()
            .to_string()
    };
    let workflows: Vec<Value> = shared
        .workflows()
        .iter()
        .map(|p| {
            json!({
                "name": p.workflow.name,
                "file": p.workflow.file.display().to_string(),
                "snapshot": p.snapshot,
            })
        })
        .collect();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": path(&setup.data_dir),
        "workflows_dir": path(&setup.workflows),
        "config": setup.config_file.as_deref().map(path),
        "presets": setup.presets_dir.as_deref().map(path),
        "workflows": workflows,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/records/{collection}", tag = "records",
    params(("collection" = String, Path, description = "`people` or `saas_users`", pattern = r"^(people|saas_users)$")),
    responses((status = 200, description = "`[{\"key\", \"fields\"}]`, in key order"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 404, description = "no such collection", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn list_records(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let collection = collection(&name)?;
    let mut out = Vec::new();
    for item in shared.records.scan(collection).await? {
        let (key, fields) = item?;
        out.push(json!({"key": key, "fields": fields}));
    }
    Ok(Json(Value::Array(out)).into_response())
}

/// The run requests `ids` as the CLI lists them (read before the worker is woken, so each is
/// still in the queue).
async fn queued_json(shared: &Shared, ids: &[QueueId]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(entry) = shared.queue.get(*id).await? {
            let request = &entry.request;
            out.push(json!({
                "id": id.to_string(),
                "workflow": request.workflow.as_str(),
                "subject": request.subject.as_ref().map(ToString::to_string),
                "cause": request.trigger.to_string(),
            }));
        }
    }
    Ok(out)
}

#[utoipa::path(delete, path = "/records/{collection}/{*key}", tag = "records",
    params(("collection" = String, Path, description = "`people` or `saas_users`", pattern = r"^(people|saas_users)$"), ("key" = String, Path, description = "the record's key")),
    responses((status = 200, description = "`{\"subject\", \"outcome\": \"deleted\"|\"not_found\", \"queued\"}`, once durable"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 404, description = "no such collection", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn delete_record(
    State(shared): State<Arc<Shared>>,
    Path((name, key)): Path<(String, String)>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let collection = collection(&name)?;
    let subject = Subject::new(collection, RecordKey::parse(&key));
    let triggers = shared.workflows().triggers().clone();
    let written = shared
        .records
        .write(
            vec![Write {
                subject: subject.clone(),
                change: Change::Delete,
            }],
            triggers,
            chrono::Utc::now(),
            None,
        )
        .await?;
    shared.engine.history().durable().await?;
    let Some(written) = written.into_iter().next() else {
        return Err(super::internal("the delete wrote nothing"));
    };
    let queued = queued_json(&shared, &written.queued).await?;
    if !written.queued.is_empty() {
        shared.wake.notify_one();
    }
    Ok(Json(json!({
        "subject": subject.to_string(),
        "outcome": outcome_name(written.outcome),
        "queued": queued,
    }))
    .into_response())
}

/// One row of a batch: its key, computed by the caller (the import's `--key` rule), and fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Row {
    key: String,
    #[schema(value_type = Object)]
    fields: Fields,
}

#[utoipa::path(post, path = "/records/{collection}/batch", tag = "records",
    params(("collection" = String, Path, description = "`people` or `saas_users`", pattern = r"^(people|saas_users)$"), RecordsQuery),
    request_body(content = Vec<Row>, description = "`[{\"key\", \"fields\"}]`: one import batch, keyed by the caller"),
    responses((status = 200, description = "`{\"outcomes\", \"queued\"}`, once durable"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 422, description = "a row is not `{\"key\", \"fields\"}`", body = ApiErrorBody), (status = 415, description = "the body is not `Content-Type: application/json`", body = ApiErrorBody), (status = 404, description = "no such collection", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
/// `POST /records/{collection}/batch`: one store transaction, as one batch of `records import`.
async fn write_batch(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Params(query): Params<RecordsQuery>,
    Json(rows): Json<Vec<Row>>,
) -> ApiResult {
    let collection = collection(&name)?;
    let mode = super::write_mode(query.mode.as_deref())?;
    let writes: Vec<Write> = rows
        .into_iter()
        .map(|row| Write {
            subject: Subject::new(collection, RecordKey::parse(&row.key)),
            change: Change::Upsert {
                fields: row.fields,
                mode,
            },
        })
        .collect();
    let triggers = shared.workflows().triggers().clone();
    let written = shared
        .records
        .write(writes, triggers, chrono::Utc::now(), None)
        .await?;
    shared.engine.history().durable().await?;
    let ids: Vec<QueueId> = written
        .iter()
        .flat_map(|w| w.queued.iter().copied())
        .collect();
    let queued = queued_json(&shared, &ids).await?;
    if !ids.is_empty() {
        shared.wake.notify_one();
    }
    let outcomes: Vec<&str> = written.iter().map(|w| outcome_name(w.outcome)).collect();
    Ok(Json(json!({"outcomes": outcomes, "queued": queued})).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PruneBody {
    /// How long ago a run finished for its payloads to go: `30m`, `24h`, `7d`.
    #[schema(value_type = String, required = true, pattern = r"^[0-9]{1,7}(ms|s|m|h|d)$")]
    older_than: Option<String>,
    /// `true`: delete the whole finished runs (with their steps, index entries, approvals,
    /// reminders and retry marks) instead of blanking their payloads.
    #[serde(default)]
    runs: bool,
}

impl BodySpec for PruneBody {
    const FIELDS: &'static [&'static str] = &["older_than", "runs"];
}

#[utoipa::path(post, path = "/history/prune", tag = "history",
    request_body(content = PruneBody, description = "`{\"older_than\": \"30d\", \"runs\"?: true}`"),
    responses((status = 200, description = "`{\"runs\", \"steps\"}`: what was pruned, or with `runs`, deleted (admin)"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 415, description = "the body is not `Content-Type: application/json`", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn prune(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    Body(body): Body<PruneBody>,
) -> ApiResult {
    let Some(text) = body.older_than else {
        return Err(ApiError::bad_request(
            "`POST /api/history/prune` needs `older_than` (`30d`): the payloads of runs finished longer ago are dropped",
        ));
    };
    let age = crate::compile::parse_duration(&text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`older_than` `{text}` is not a duration; write `30m`, `24h` or `7d`"
        ))
    })?;
    let cutoff = chrono::Duration::from_std(age)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`older_than` `{text}` reaches back further than a date can; write a shorter duration"
            ))
        })?;
    let history = shared.engine.history();
    let (runs, steps) = if body.runs {
        crate::service::retention::delete_finished_before(history, cutoff).await?
    } else {
        let report = match history {
            // sled: every finished run is rewritten, on a blocking thread.
            AnyHistory::Sled(history) => {
                let history = history.clone();
                tokio::task::spawn_blocking(move || history.prune(cutoff))
                    .await
                    .map_err(super::internal)??
            }
            history => history.prune(cutoff).await?,
        };
        (report.runs, report.steps)
    };
    shared.engine.history().durable().await?;
    Ok(Json(json!({"runs": runs, "steps": steps})).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    /// One run (else every unfinished one).
    #[schema(pattern = r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    run: Option<String>,
}

impl BodySpec for ResumeBody {
    const FIELDS: &'static [&'static str] = &["run"];
}

#[utoipa::path(post, path = "/resume", tag = "runs",
    request_body(content = Option<ResumeBody>, description = "`{\"run\"?}`: one run, or every unfinished one"),
    responses((status = 200, description = "`{\"resumed\", \"left\"}`"), (status = 409, description = "the service is executing that run", body = ApiErrorBody), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 404, description = "no such run", body = ApiErrorBody), (status = 415, description = "the body is not `Content-Type: application/json`", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
/// `POST /resume`: what `blockyard resume` does, in the service. Every unfinished run is the
/// service's own (it resumed them at its start), so without `run` this continues the `retrying`
/// runs whose next attempt has come (the timer loop would, a moment later) and lists the others.
async fn resume(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    Body(body): Body<ResumeBody>,
) -> ApiResult {
    let engine = &shared.engine;
    let history = engine.history();
    let now = engine.now();
    let not_due = |run: &RunRecord| {
        matches!(run.status, RunStatus::Retrying | RunStatus::Waiting)
            && run.wake_at.is_some_and(|at| at > now)
    };
    let mut resumed = Vec::new();
    let mut left: Vec<RunRecord> = Vec::new();
    match body.run {
        Some(id) => {
            let id = run_id(&id)?;
            let run = history.run(id).await?.ok_or(ExecError::UnknownRun { id })?;
            if engine.is_active(id) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("run `{id}` is executing in the service; it needs no resume (`blockyard history show {id}` follows it)"),
                ));
            }
            if not_due(&run) {
                left.push(run);
            } else {
                resumed.push(engine.resume(id).await?);
            }
        }
        None => {
            resumed = engine.resume_due(now).await?;
            for timer in engine.timers().all().await? {
                if resumed.iter().any(|o| o.run.id == timer.run) {
                    continue;
                }
                if let Some(run) = history.run(timer.run).await?.filter(not_due) {
                    left.push(run);
                }
            }
        }
    }
    let mut resumed_json = Vec::with_capacity(resumed.len());
    for outcome in &resumed {
        resumed_json.push(run_json(&outcome.run, &outcome.steps)?);
    }
    let mut left_json = Vec::with_capacity(left.len());
    for run in &left {
        left_json.push(run_json(run, &history.steps(run.id).await?)?);
    }
    Ok(Json(json!({"resumed": resumed_json, "left": left_json})).into_response())
}

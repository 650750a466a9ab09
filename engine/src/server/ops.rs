//! The operator routes of `blockyard serve`, mounted under `/api` with [`super::api`]'s: pause and
//! resume a workflow's triggers, list what is paused, reload the workflows.
//!
//! | route | role | answer |
//! |---|---|---|
//! | `GET /paused` | viewer | `[{"workflow", "by", "at"}]` |
//! | `POST /workflows/{name}/pause` | operator | `{"workflow", "paused": true, "by", "at", "already"}`; 404 when no such workflow is loaded |
//! | `POST /pause` | operator | every loaded workflow paused: `[{"workflow", "paused": true, "by", "at", "already"}]` |
//! | `POST /workflows/{name}/resume-triggers` | operator | `{"workflow", "paused": false, "was": {"by", "at"} or null}` (null: it was not paused) |
//! | `POST /resume-triggers` | operator | every paused workflow resumed: `[{"workflow", "paused": false, "was"}]` |
//! | `POST /reload` | admin | `{"workflows": N}`; 422 with `"errors"` (each `FILE:LINE:COL: error: …`) when the new set does not load, the old set kept |
//!
//! | `POST /retry-failed` | operator | body `{"workflow"?, "since"?, "error"?, "yes"?}`: without `yes` the dry listing, with it the live replays, each run at most once: `[{"run", "workflow", "status", "subject", "error", "action", "retried"?, "replay"?, "replay_error"?}]` ([`crate::service::retry::retry_failed`]) |
//! | `GET /metrics` | viewer | the Prometheus text format ([`super::metrics`]); also served at `/metrics`, outside `/api` |
//!
//! A pause holds the workflow's queued runs ([`crate::service::pause`] says how); a change is on
//! disk before it is answered, and it records who asked: the token's name ([`Actor`]). Every
//! route is added through the OpenAPI router with its `#[utoipa::path]`, as [`super::api`]'s are.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{
    admin, internal, since, ApiErrorBody, ApiResult, Body, BodySpec, NoBody, NoQuery, Params,
};
use super::{Actor, ApiError};
use crate::service::pause::Pause;
use crate::service::{ServiceError, Shared};
use crate::store::api::{Backend, ReadPauses, WritePauses};
use crate::trigger::LoadError;

/// Adds the operator routes to the service's (roles: `GET` viewer, `POST` operator, reload admin).
pub(super) fn routes(router: OpenApiRouter<Arc<Shared>>) -> OpenApiRouter<Arc<Shared>> {
    router
        .routes(routes!(list_paused))
        .routes(routes!(pause_one))
        .routes(routes!(pause_all))
        .routes(routes!(resume_one))
        .routes(routes!(resume_all))
        .routes(admin(routes!(reload)))
        .routes(routes!(retry_failed))
        .routes(routes!(super::metrics::serve_metrics))
}

fn paused_json(workflow: &str, pause: &Pause, already: bool) -> Value {
    json!({"workflow": workflow, "paused": true, "by": pause.by, "at": pause.at, "already": already})
}

#[utoipa::path(get, path = "/paused", tag = "operations",
    responses((status = 200, description = "`[{\"workflow\", \"by\", \"at\"}]`: the paused workflows"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn list_paused(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let list: Vec<Value> = shared
        .pauses()
        .list()
        .await?
        .into_iter()
        .map(|(workflow, p)| json!({"workflow": workflow, "by": p.by, "at": p.at}))
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

#[utoipa::path(post, path = "/workflows/{name}/pause", tag = "operations",
    params(("name" = String, Path, description = "a loaded workflow's name")),
    responses((status = 200, description = "`{\"workflow\", \"paused\": true, \"by\", \"at\", \"already\"}`, once durable"), (status = 404, description = "no such workflow", body = ApiErrorBody), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn pause_one(
    State(shared): State<Arc<Shared>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    if shared.workflows().get(&name).is_none() {
        return Err(super::api::unknown_workflow(&name));
    }
    let (pause, new) = shared
        .pauses()
        .pause(&name, &actor.name, chrono::Utc::now())
        .await?;
    shared.store.flush().await?;
    if new {
        tracing::info!(workflow = %name, by = %pause.by, "workflow paused");
    }
    Ok(Json(paused_json(&name, &pause, !new)).into_response())
}

#[utoipa::path(post, path = "/pause", tag = "operations",
    responses((status = 200, description = "every loaded workflow paused: `[{\"workflow\", \"paused\": true, \"by\", \"at\", \"already\"}]`"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn pause_all(
    State(shared): State<Arc<Shared>>,
    Extension(actor): Extension<Actor>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let now = chrono::Utc::now();
    let by = &actor.name;
    let mut out = Vec::new();
    for prepared in shared.workflows().iter() {
        let name = &prepared.workflow.name;
        let (pause, new) = shared.pauses().pause(name, by, now).await?;
        if new {
            tracing::info!(workflow = %name, by = %pause.by, "workflow paused");
        }
        out.push(paused_json(name, &pause, !new));
    }
    shared.store.flush().await?;
    Ok(Json(Value::Array(out)).into_response())
}

#[utoipa::path(post, path = "/workflows/{name}/resume-triggers", tag = "operations",
    params(("name" = String, Path, description = "a workflow's name")),
    responses((status = 200, description = "`{\"workflow\", \"paused\": false, \"was\": {\"by\", \"at\"} or null}`; its held runs start"), (status = 404, description = "no such workflow loaded or paused", body = ApiErrorBody), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn resume_one(
    State(shared): State<Arc<Shared>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let was = shared.pauses().resume(&name).await?;
    if was.is_none() && shared.workflows().get(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no workflow `{name}` is loaded or paused; `GET /api/workflows` lists them"
        )));
    }
    shared.store.flush().await?;
    if was.is_some() {
        tracing::info!(workflow = %name, by = %actor.name, "workflow triggers resumed");
        shared.wake.notify_one();
    }
    Ok(Json(json!({"workflow": name, "paused": false, "was": was})).into_response())
}

#[utoipa::path(post, path = "/resume-triggers", tag = "operations",
    responses((status = 200, description = "every paused workflow resumed: `[{\"workflow\", \"paused\": false, \"was\"}]`"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn resume_all(
    State(shared): State<Arc<Shared>>,
    Extension(actor): Extension<Actor>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let mut out = Vec::new();
    for (name, _) in shared.pauses().list().await? {
        let was = shared.pauses().resume(&name).await?;
        tracing::info!(workflow = %name, by = %actor.name, "workflow triggers resumed");
        out.push(json!({"workflow": name, "paused": false, "was": was}));
    }
    shared.store.flush().await?;
    shared.wake.notify_one();
    Ok(Json(Value::Array(out)).into_response())
}

#[utoipa::path(post, path = "/reload", tag = "operations",
    responses((status = 200, description = "`{\"workflows\": N}`: the new set runs"), (status = 422, description = "the new set does not load: `error.errors` lists each `FILE:LINE:COL: error: …`; the old set keeps running", body = ApiErrorBody), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn reload(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    match shared.reload().await {
        Ok(count) => Ok(Json(json!({"workflows": count})).into_response()),
        Err(ServiceError::Load(err)) => {
            let kept = shared.workflows().len();
            let errors: Vec<String> = match &err {
                LoadError::Invalid { errors, .. } => {
                    errors.iter().map(ToString::to_string).collect()
                }
                _ => Vec::new(),
            };
            tracing::warn!(error = %err, "reload failed, keeping the workflows already loaded");
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            let message =
                format!("reload failed, keeping the {kept} workflows already loaded: {err}");
            let body =
                json!({"error": {"status": status.as_u16(), "message": message, "errors": errors}});
            Ok((status, Json(body)).into_response())
        }
        Err(err) => Err(internal(err)),
    }
}

/// The body of `POST /retry-failed`: `retry-failed`'s filters and `--yes`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    /// Only runs of this workflow (its `name:`).
    workflow: Option<String>,
    /// Only runs started within this long (`30m`, `24h`, `7d`) or since this RFC 3339 instant.
    since: Option<String>,
    /// Only runs whose error contains this text (case-insensitive).
    error: Option<String>,
    /// Replay them (live); without it, only list what would be replayed.
    #[serde(default)]
    yes: bool,
}

impl BodySpec for RetryBody {
    const FIELDS: &'static [&'static str] = &["workflow", "since", "error", "yes"];
}

#[utoipa::path(post, path = "/retry-failed", tag = "operations",
    request_body(content = Option<RetryBody>, description = "the filters, and `yes` to replay"),
    responses((status = 200, description = "`[{\"run\", \"workflow\", \"status\", \"subject\", \"error\", \"action\", \"retried\"?, \"replay\"?, \"replay_error\"?}]`: `action` is `would_replay`, `skipped` (retried already), `replayed` or `replay_failed`; the replays are live, each run at most once"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody)))]
async fn retry_failed(
    State(shared): State<Arc<Shared>>,
    Extension(actor): Extension<Actor>,
    _: Params<NoQuery>,
    Body(body): Body<RetryBody>,
) -> ApiResult {
    let filter = crate::service::retry::RetryFilter {
        workflow: body.workflow,
        since: body.since.as_deref().map(since).transpose()?,
        error: body.error,
    };
    if body.yes {
        tracing::info!(by = %actor.name, "retrying failed runs");
    }
    let entries =
        crate::service::retry::retry_failed(&shared.engine, &filter, &actor.name, body.yes).await?;
    Ok(Json(entries).into_response())
}

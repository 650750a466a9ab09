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
//! A pause holds the workflow's queued runs ([`crate::service::pause`] says how); a change is on
//! disk before it is answered. Until named tokens with roles land, every route here takes the API
//! token as the other `/api` routes do; the role column is what each will require.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::api::{internal, ApiResult, Body, NoBody, NoQuery, Params};
use super::ApiError;
use crate::service::pause::Pause;
use crate::service::{ServiceError, Shared};
use crate::trigger::LoadError;

/// Who an API request acts as. One API token has no name yet: `api`.
// Integrator: with named tokens (issue 17 §2), this is the token's name.
fn actor() -> String {
    "api".to_owned()
}

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        // role: viewer
        .route("/paused", get(list_paused))
        // role: operator
        .route("/workflows/{name}/pause", post(pause_one))
        // role: operator
        .route("/pause", post(pause_all))
        // role: operator
        .route("/workflows/{name}/resume-triggers", post(resume_one))
        // role: operator
        .route("/resume-triggers", post(resume_all))
        // role: admin
        .route("/reload", post(reload))
        // role: viewer; served at `/metrics` (and `/api/metrics`)
        .route("/metrics", get(super::metrics::serve_metrics))
}

fn paused_json(workflow: &str, pause: &Pause, already: bool) -> Value {
    json!({"workflow": workflow, "paused": true, "by": pause.by, "at": pause.at, "already": already})
}

async fn list_paused(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let list: Vec<Value> = shared
        .pauses()
        .list()?
        .into_iter()
        .map(|(workflow, p)| json!({"workflow": workflow, "by": p.by, "at": p.at}))
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

async fn pause_one(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    if shared.workflows().get(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no workflow `{name}` is loaded; `GET /api/workflows` lists them"
        )));
    }
    let (pause, new) = shared.pauses().pause(&name, &actor(), chrono::Utc::now())?;
    shared.store.flush().await?;
    if new {
        tracing::info!(workflow = %name, by = %pause.by, "workflow paused");
    }
    Ok(Json(paused_json(&name, &pause, !new)).into_response())
}

async fn pause_all(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let now = chrono::Utc::now();
    let by = actor();
    let mut out = Vec::new();
    for prepared in shared.workflows().iter() {
        let name = &prepared.workflow.name;
        let (pause, new) = shared.pauses().pause(name, &by, now)?;
        if new {
            tracing::info!(workflow = %name, by = %pause.by, "workflow paused");
        }
        out.push(paused_json(name, &pause, !new));
    }
    shared.store.flush().await?;
    Ok(Json(Value::Array(out)).into_response())
}

async fn resume_one(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let was = shared.pauses().resume(&name)?;
    if was.is_none() && shared.workflows().get(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no workflow `{name}` is loaded or paused; `GET /api/workflows` lists them"
        )));
    }
    shared.store.flush().await?;
    if was.is_some() {
        tracing::info!(workflow = %name, by = %actor(), "workflow triggers resumed");
        shared.wake.notify_one();
    }
    Ok(Json(json!({"workflow": name, "paused": false, "was": was})).into_response())
}

async fn resume_all(
    State(shared): State<Arc<Shared>>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let mut out = Vec::new();
    for (name, _) in shared.pauses().list()? {
        let was = shared.pauses().resume(&name)?;
        tracing::info!(workflow = %name, by = %actor(), "workflow triggers resumed");
        out.push(json!({"workflow": name, "paused": false, "was": was}));
    }
    shared.store.flush().await?;
    shared.wake.notify_one();
    Ok(Json(Value::Array(out)).into_response())
}

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

//! The mass-change guard's routes: where a workflow's guard stands, and the operator's one
//! decision on its held batch (see [`crate::exec::guard`]).
//!
//! | route | answer |
//! |---|---|
//! | `GET /workflows/{name}/guard` | `{"workflow", "guard", "source", "counted", "allowed", "held": [run ids]}` |
//! | `POST /workflows/{name}/guard/release` | `{"workflow", "runs": [ids], "statuses": [the status each ended in]}` |
//! | `POST /workflows/{name}/guard/cancel` | the same, each `cancelled` |
//! | `GET /workflows/{name}/plan[?offline=true]` | the plan ([`crate::plan::Plan`]) |

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{ApiResult, Body, NoBody, NoQuery, Params};
use crate::server::ApiError;
use crate::service::Shared;

/// Adds the guard's routes.
pub(super) fn routes(router: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    router
        .route("/workflows/{name}/guard", get(status))
        .route("/workflows/{name}/guard/release", post(release))
        .route("/workflows/{name}/guard/cancel", post(cancel))
        .route("/workflows/{name}/plan", get(plan))
}

/// `?offline=true`: answer the dry runs' reads from the recorded runs.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanQuery {
    #[serde(default)]
    offline: bool,
}

impl super::QuerySpec for PlanQuery {
    const NAMES: &'static [&'static str] = &["offline"];
}

/// `GET /workflows/{name}/plan[?offline=true]`: the workflow's plan over the current records
/// ([`crate::plan`]).
async fn plan(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Params(query): Params<PlanQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let workflows = shared.workflows();
    let prepared = workflows.get(&name).ok_or_else(|| unknown(&name))?.clone();
    match crate::plan::plan(&shared.engine, &prepared, query.offline).await {
        Ok(plan) => Ok(Json(plan).into_response()),
        Err(err @ crate::plan::PlanError::NoCollection { .. }) => {
            Err(ApiError::bad_request(err.to_string()))
        }
        Err(crate::plan::PlanError::Exec(err)) => Err(err.into()),
    }
}

fn unknown(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no workflow `{name}` is loaded; `GET /api/workflows` lists them"
    ))
}

async fn status(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let workflows = shared.workflows();
    let prepared = workflows.get(&name).ok_or_else(|| unknown(&name))?;
    let status = shared.engine.guard_status(prepared)?;
    Ok(Json(status).into_response())
}

async fn release(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    if shared.workflows().get(&name).is_none() {
        return Err(unknown(&name));
    }
    Ok(Json(shared.engine.guard_release(&name).await?).into_response())
}

async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    if shared.workflows().get(&name).is_none() {
        return Err(unknown(&name));
    }
    Ok(Json(shared.engine.guard_cancel(&name).await?).into_response())
}

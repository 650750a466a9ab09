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
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiErrorBody, ApiResult, Body, NoBody, NoQuery, Params};
use crate::server::ApiError;
use crate::service::Shared;

/// Adds the guard's routes.
pub(super) fn routes(router: OpenApiRouter<Arc<Shared>>) -> OpenApiRouter<Arc<Shared>> {
    router
        .routes(routes!(status))
        .routes(routes!(release))
        .routes(routes!(cancel))
        .routes(routes!(plan))
}

/// `?offline=true`: answer the dry runs' reads from the recorded runs.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PlanQuery {
    #[serde(default)]
    offline: bool,
}

impl super::QuerySpec for PlanQuery {
    const NAMES: &'static [&'static str] = &["offline"];
}

#[utoipa::path(get, path = "/workflows/{name}/plan", tag = "workflows",
    params(("name" = String, Path, description = "a loaded workflow's name"), PlanQuery),
    responses((status = 200, description = "the plan: which records match the begin block now and the writes their dry runs would send"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody), (status = 404, description = "no such workflow", body = ApiErrorBody)))]
/// `GET /workflows/{name}/plan[?offline=true]`: the workflow's plan over the current records
/// ([`crate::plan`]).
async fn plan(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Params(query): Params<PlanQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let workflows = shared.workflows();
    let prepared = workflows
        .get(&name)
        .ok_or_else(|| super::unknown_workflow(&name))?
        .clone();
    match crate::plan::plan(&shared.engine, &prepared, query.offline).await {
        Ok(plan) => Ok(Json(plan).into_response()),
        Err(err @ crate::plan::PlanError::NoCollection { .. }) => {
            Err(ApiError::bad_request(err.to_string()))
        }
        Err(crate::plan::PlanError::Exec(err)) => Err(err.into()),
    }
}

#[utoipa::path(get, path = "/workflows/{name}/guard", tag = "guard",
    params(("name" = String, Path, description = "a loaded workflow's name")),
    responses((status = 200, description = "`{\"workflow\", \"guard\", \"source\", \"counted\", \"allowed\", \"held\"}`"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody), (status = 404, description = "no such workflow", body = ApiErrorBody)))]
async fn status(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    let workflows = shared.workflows();
    let prepared = workflows
        .get(&name)
        .ok_or_else(|| super::unknown_workflow(&name))?;
    let status = shared.engine.guard_status(prepared).await?;
    Ok(Json(status).into_response())
}

#[utoipa::path(post, path = "/workflows/{name}/guard/release", tag = "guard",
    params(("name" = String, Path, description = "a loaded workflow's name")),
    responses((status = 200, description = "`{\"workflow\", \"runs\", \"statuses\"}` once the released runs stop"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody), (status = 404, description = "no such workflow", body = ApiErrorBody)))]
async fn release(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    if shared.workflows().get(&name).is_none() {
        return Err(super::unknown_workflow(&name));
    }
    Ok(Json(shared.engine.guard_release(&name).await?).into_response())
}

#[utoipa::path(post, path = "/workflows/{name}/guard/cancel", tag = "guard",
    params(("name" = String, Path, description = "a loaded workflow's name")),
    responses((status = 200, description = "`{\"workflow\", \"runs\", \"statuses\"}`, each `cancelled`"), (status = 400, description = "a bad request: an unknown query parameter or body field, or a value that is not valid", body = ApiErrorBody), (status = 401, description = "no valid bearer token", body = ApiErrorBody), (status = 403, description = "the token lacks the role the route needs", body = ApiErrorBody), (status = 404, description = "no such workflow", body = ApiErrorBody)))]
async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    _: Params<NoQuery>,
    _: Body<NoBody>,
) -> ApiResult {
    if shared.workflows().get(&name).is_none() {
        return Err(super::unknown_workflow(&name));
    }
    Ok(Json(shared.engine.guard_cancel(&name).await?).into_response())
}

//! The control endpoints under `/_sandbox/`: read the request log, the state and the webhooks
//! the sink received, reset, reseed,
//! change the latency (`POST latency {"ms": N}`, for requests that arrive from then on), and
//! drive Calendly from the "user's side" (accept an invitation, switch the plan, switch the
//! token's user, log a member's activity now: `POST calendly/activity {"email": …}`, which the
//! reclamation demo uses), and the OAuth app (`POST oauth` with any of `deny`, `scopes`,
//! `access_ttl_secs`, `access_uses`, `rotate_refresh`, `redirect_uri`; `POST oauth/expire`
//! expires every access token issued so far).
//!
//! Control requests skip the gate entirely: no token, no rate limit, no latency, no injected
//! failures, and they are not recorded in the request log.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::calendly::AcceptError;
use super::http;
use super::{lock, CalendlyPlan, Shared};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    #[serde(default)]
    users: usize,
    #[serde(default)]
    seed: u64,
    #[serde(default = "enterprise")]
    plan: CalendlyPlan,
}

fn enterprise() -> CalendlyPlan {
    CalendlyPlan::Enterprise
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRequest {
    plan: CalendlyPlan,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyRequest {
    ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorRequest {
    email: String,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Box<Response>> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        Box::new(http::plain(
            StatusCode::BAD_REQUEST,
            &format!("invalid control body: {e}"),
        ))
    })
}

pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    rest: &str,
    _query: Option<&str>,
    body: &[u8],
) -> Response {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["requests"]) => http::json(StatusCode::OK, &shared.log.snapshot()),
        (&Method::GET, ["webhooks"]) => http::json(StatusCode::OK, &shared.sinks.webhooks()),
        (&Method::GET, ["mail"]) => http::json(StatusCode::OK, &shared.sinks.mails()),
        (&Method::GET, ["state"]) => {
            let calendly = lock(&shared.world.calendly).dump();
            let webex = lock(&shared.world.webex).dump();
            let scim = lock(&shared.world.scim).dump();
            http::json(
                StatusCode::OK,
                &json!({ "calendly": calendly, "webex": webex, "scim": scim }),
            )
        }
        (&Method::POST, ["reset"]) => {
            shared.reseed(0, 0, CalendlyPlan::Enterprise);
            http::empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["seed"]) => match parse::<SeedRequest>(body) {
            Ok(req) => {
                shared.reseed(req.users, req.seed, req.plan);
                let organization = lock(&shared.world.calendly).organization_uri();
                http::json(
                    StatusCode::OK,
                    &json!({ "users": req.users, "seed": req.seed, "plan": req.plan, "organization": organization }),
                )
            }
            Err(r) => *r,
        },
        (&Method::POST, ["latency"]) => match parse::<LatencyRequest>(body) {
            Ok(req) => {
                shared.set_latency(Duration::from_millis(req.ms));
                http::json(StatusCode::OK, &json!({ "ms": req.ms }))
            }
            Err(r) => *r,
        },
        (&Method::POST, ["calendly", "invitations", uuid, "accept"]) => {
            match lock(&shared.world.calendly).accept_invitation(uuid) {
                Ok(membership) => http::json(StatusCode::OK, &membership),
                Err(AcceptError::NotFound) => http::plain(StatusCode::NOT_FOUND, "no such invitation"),
                Err(AcceptError::NotPending) => {
                    http::plain(StatusCode::CONFLICT, "the invitation is not pending")
                }
            }
        }
        (&Method::POST, ["oauth"]) => match parse::<super::oauth::OAuthControl>(body) {
            Ok(req) => http::json(StatusCode::OK, &lock(&shared.oauth).control(req)),
            Err(r) => *r,
        },
        (&Method::POST, ["oauth", "expire"]) => {
            let expired = lock(&shared.oauth).expire_all();
            http::json(StatusCode::OK, &json!({ "expired": expired }))
        }
        (&Method::POST, ["calendly", "plan"]) => match parse::<PlanRequest>(body) {
            Ok(req) => {
                lock(&shared.world.calendly).plan = req.plan;
                http::json(StatusCode::OK, &json!({ "plan": req.plan }))
            }
            Err(r) => *r,
        },
        (&Method::POST, ["calendly", "actor"]) => match parse::<ActorRequest>(body) {
            Ok(req) => {
                if lock(&shared.world.calendly).set_actor(&req.email) {
                    http::json(StatusCode::OK, &json!({ "email": req.email }))
                } else {
                    http::plain(StatusCode::NOT_FOUND, "no member has that email")
                }
            }
            Err(r) => *r,
        },
        (&Method::POST, ["calendly", "activity"]) => match parse::<ActorRequest>(body) {
            Ok(req) => {
                if lock(&shared.world.calendly).record_activity(&req.email) {
                    http::json(StatusCode::OK, &json!({ "email": req.email }))
                } else {
                    http::plain(StatusCode::NOT_FOUND, "no member has that email")
                }
            }
            Err(r) => *r,
        },
        _ => http::plain(
            StatusCode::NOT_FOUND,
            "unknown control endpoint: GET requests|state|webhooks|mail, POST reset|seed|latency|oauth|oauth/expire|calendly/plan|calendly/actor|calendly/activity|calendly/invitations/{uuid}/accept",
        ),
    }
}

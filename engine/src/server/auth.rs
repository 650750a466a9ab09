//! Who may call the API: named bearer tokens, each with a [`Role`], and the [`Actor`] a request
//! acts as.
//!
//! [`authenticate`] runs on every `/api` request. It finds the token the `Authorization` header
//! carries (the scheme `Bearer` in any case; each configured token is compared in constant time,
//! all of them every time) and refuses with 401 when there is none or it matches none; with no
//! token configured (a loopback-only service, see [`super::ServerError::NoTokenOffLoopback`]) every
//! caller is the local admin, [`Actor::local`]. The request then needs the role its method asks
//! for: reads (`GET`, `HEAD`) `viewer`, everything else `operator`; a route that needs more
//! layers [`needs`] on its handler (`admin`). A caller without the role gets 403 naming the role.
//! The [`Actor`] goes into the request's extensions, so a handler that changes state records who
//! asked, and every state-changing request is logged (`api request`, with the actor's name, the
//! route and the path it changed). Token values are never logged: [`ApiToken`]'s `Debug` prints the name and role only.

use std::fmt;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiError;

/// What a token may do; each role may do everything the one before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read runs, records, workflows and traces.
    Viewer,
    /// Also run, replay, cancel, approve, reject and write records.
    Operator,
    /// Also the operations that remove or replace state (prune, reload, backup).
    Admin,
}

impl Role {
    pub const NAMES: [&'static str; 3] = ["viewer", "operator", "admin"];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name `BLOCKYARD_TOKEN` (or the config's single `token`) acts under.
pub const SINGLE_TOKEN_NAME: &str = "admin";

/// One API token: its name (the actor history records), its role and its value.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    value: String,
}

impl ApiToken {
    pub fn new(name: impl Into<String>, role: Role, value: impl Into<String>) -> ApiToken {
        ApiToken {
            name: name.into(),
            role,
            value: value.into(),
        }
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// Who a request acts as: a token's name and role, or the local admin of an open service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

impl Actor {
    /// The caller of a service without tokens (loopback only): trusted as admin.
    pub fn local() -> Actor {
        Actor {
            name: "local".to_owned(),
            role: Role::Admin,
        }
    }
}

/// The role a request's method needs before any route asks for more.
fn method_role(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Viewer
    } else {
        Role::Operator
    }
}

/// `METHOD /api/path/{param}`, as the route was declared (the path itself when no route matched).
fn route_name(request: &Request) -> String {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), MatchedPath::as_str);
    format!("{} {path}", request.method())
}

/// The request's path as the client sent it: under `/api`, the nested router sees it without
/// that prefix, which its matched path keeps.
fn full_path(request: &Request) -> String {
    let path = request.uri().path();
    let nested = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| m.as_str().starts_with("/api/"));
    if nested && !path.starts_with("/api/") {
        format!("/api{path}")
    } else {
        path.to_owned()
    }
}

fn forbidden(actor: &Actor, needs: Role, request: &Request) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "the token `{}` has the role `{}`; `{}` needs `{needs}`; use a token with that role",
            actor.name,
            actor.role,
            route_name(request)
        ),
    )
    .into_response()
}

/// The token in `Authorization: Bearer TOKEN`, the scheme in any case.
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// The `/api` middleware: 401 without a valid token, 403 without the method's role; otherwise
/// the request goes on with its [`Actor`] in its extensions.
pub(crate) async fn authenticate(
    State(tokens): State<std::sync::Arc<Vec<ApiToken>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let actor = if tokens.is_empty() {
        Actor::local()
    } else {
        let Some(given) = bearer(&request) else {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing `Authorization: Bearer TOKEN` (the token is `BLOCKYARD_TOKEN`)",
            )
            .into_response();
        };
        let Some(token) = find_token(&tokens, given) else {
            return ApiError::new(StatusCode::UNAUTHORIZED, "the bearer token is not valid")
                .into_response();
        };
        Actor {
            name: token.name.clone(),
            role: token.role,
        }
    };
    let needs = method_role(request.method());
    if actor.role < needs {
        return forbidden(&actor, needs, &request);
    }
    if needs > Role::Viewer {
        // A state-changing request is in the service's log with who asked.
        // The path names what was changed (a run id, a record key); never a query or a body.
        tracing::info!(actor = %actor.name, route = %route_name(&request), path = %full_path(&request), "api request");
    }
    request.extensions_mut().insert(actor);
    next.run(request).await
}

/// A route that needs more than its method's role layers this on its handler:
/// `post(prune).layer(middleware::from_fn_with_state(Role::Admin, auth::needs))`.
pub async fn needs(State(needs): State<Role>, request: Request, next: Next) -> Response {
    let actor = request
        .extensions()
        .get::<Actor>()
        .cloned()
        .unwrap_or_else(Actor::local);
    if actor.role < needs {
        return forbidden(&actor, needs, &request);
    }
    next.run(request).await
}

/// The configured token whose value is `given` (the console's login uses it too).
pub(crate) fn find_token<'a>(tokens: &'a [ApiToken], given: &str) -> Option<&'a ApiToken> {
    // Every token is compared, whichever matches: the time taken says nothing about which.
    let mut found: Option<&ApiToken> = None;
    for token in tokens {
        if constant_time_eq(given.as_bytes(), token.value.as_bytes()) {
            found = Some(token);
        }
    }
    found
}

/// Compares without an early exit, so the time taken does not reveal how much of a token matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

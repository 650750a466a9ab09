//! `blockyard serve`'s HTTP API: routing, bearer-token auth, request limits and JSON errors.
//!
//! Every `/api` route requires `Authorization: Bearer TOKEN` when a token is configured (from
//! `BLOCKYARD_TOKEN` or the config); without one, the server refuses any address but loopback, so an
//! unauthenticated API is never reachable from another machine. Bodies are limited (1 MiB by
//! default) and every error, including axum's own rejections, is JSON:
//! `{"error": {"status": 413, "message": "..."}}`. `/healthz` needs no token.
//!
//! The routes that act on records and runs are added by [`Server::start`]'s caller through
//! [`ApiRoutes`], so this module owns only the HTTP concerns and stays testable on its own; the
//! service's routes are in [`api`].

pub mod api;
pub mod metrics;
pub mod ops;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The bearer token every `/api` request must carry; `None` allows loopback only.
    pub token: Option<String>,
    pub body_limit: usize,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, token: Option<String>) -> ServerConfig {
        ServerConfig {
            listen,
            token,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("refusing to serve the API on `{listen}` without a token: set `BLOCKYARD_TOKEN` (or `token` in blockyard.yaml), or listen on 127.0.0.1")]
    NoTokenOffLoopback { listen: SocketAddr },
    #[error("cannot listen on `{listen}`: {source}")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
}

/// An API error: a status and a message, sent as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.status.as_u16(), "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The record and run routes, built by the service (they need its engine).
pub type ApiRoutes = Router;

/// A running API server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds and serves `api` (mounted under `/api`) and `/healthz`.
    pub async fn start(config: ServerConfig, api: ApiRoutes) -> Result<Server, ServerError> {
        if config.token.is_none() && !config.listen.ip().is_loopback() {
            return Err(ServerError::NoTokenOffLoopback {
                listen: config.listen,
            });
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    listen: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            listen: config.listen,
            source,
        })?;
        let app = router(config, api);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        Ok(Server {
            addr,
            shutdown: Some(tx),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections and waits for requests in flight to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The whole router: `/healthz`, then `/api` behind auth and limits, with JSON fallbacks.
pub fn router(config: ServerConfig, api: ApiRoutes) -> Router {
    let token: Arc<Option<String>> = Arc::new(config.token);
    let api = api
        .fallback(|| async {
            ApiError::not_found("no such API route; see `blockyard serve --help`")
        })
        .layer(middleware::from_fn_with_state(token, require_token))
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(config.body_limit));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        // `GET /metrics` is served by the API's router, behind the same token check.
        .route_service("/metrics", api.clone().into_service())
        .nest("/api", api)
        .fallback(|| async { ApiError::not_found("not found: the API is under `/api`") })
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token.as_ref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "the bearer token is not valid").into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer TOKEN` (the token is `BLOCKYARD_TOKEN`)",
        )
        .into_response(),
    }
}

/// Turns axum's plain-text rejections (oversized or malformed bodies) into JSON errors.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || response.status().is_success() {
        return response;
    }
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_owned(),
        _ if text.trim().is_empty() => status.canonical_reason().unwrap_or("error").to_lowercase(),
        _ => crate::template::lowercase_first(text.trim()),
    };
    let mut response = ApiError::new(status, message).into_response();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of an oversized body is never read, so the connection closes after this
        // answer; saying so keeps the client from sending its next request on it.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Compares without an early exit, so the time taken does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

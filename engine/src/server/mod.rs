//! `blockyard serve`'s HTTP API: connections, routing, auth, request guards, limits and JSON
//! errors.
//!
//! Every `/api` request carries one of the configured tokens (`Authorization: Bearer TOKEN`),
//! whose role must allow it ([`auth`]: 401 without a valid token, 403 without the role); with no
//! token configured, the server refuses any address but loopback and treats its callers as the
//! local admin, so an unauthenticated API is never reachable from another machine. Before that,
//! [`guard`] refuses what a hostile web page can send: a foreign `Host` on loopback (DNS
//! rebinding), a cross-site state-changing request, a body that is not JSON. Bodies are limited
//! (1 MiB by default) and every error, including axum's own rejections, is JSON:
//! `{"error": {"status": 413, "message": "..."}}`. `/healthz` (the process answers) and
//! `/readyz` (the service's [`Readiness`] check) need no token.
//!
//! Connections are served here rather than by `axum::serve`, for two bounds it lacks
//! ([`HttpLimits`]): a header-read timeout (hyper starts it whenever it waits for a request's
//! head, so it is also how long an idle kept-alive connection stays open) and a cap on open
//! connections. At the cap, the oldest open connection is asked to close (at once when it is
//! idle, after its answer when it is busy) before the next one is accepted, so idle sockets can
//! never starve a request.
//!
//! The routes that act on records and runs are added by [`Server::start`]'s caller through
//! [`ApiRoutes`], so this module owns only the HTTP concerns and stays testable on its own; the
//! service's routes are in [`api`]. The web console ([`console`], HTML pages with their own
//! login cookie, never accepted by `/api`) is mounted at `/` when [`ServerConfig::console`] has it.

pub mod api;
pub mod auth;
pub mod console;
mod guard;
pub mod metrics;
pub mod ops;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

pub use self::auth::{Actor, ApiToken, Role};

/// The default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Bounds on connections (`serve:` in blockyard.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection has to send a request's head, counted from when the server starts
    /// waiting for it (so also how long an idle kept-alive connection stays open).
    pub header_timeout: Duration,
    /// The most connections open at once (at least 1).
    pub max_connections: usize,
}

impl HttpLimits {
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            header_timeout: HttpLimits::DEFAULT_HEADER_TIMEOUT,
            max_connections: HttpLimits::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The tokens a request may carry; none allows loopback only, every caller an admin.
    pub tokens: Vec<ApiToken>,
    pub body_limit: usize,
    pub limits: HttpLimits,
    /// More names a loopback service answers to (a local reverse proxy's `Host`).
    pub allowed_hosts: Vec<String>,
    /// What `/readyz` asks; `None`: ready while the server runs.
    pub readiness: Option<Arc<dyn Readiness>>,
    /// The web console's routes, mounted at `/` ([`console::routes`]); `None`: no console (the
    /// API's JSON 404 answers there).
    pub console: Option<Router>,
}

impl ServerConfig {
    /// A server with one admin token (`BLOCKYARD_TOKEN`, named [`auth::SINGLE_TOKEN_NAME`]) or
    /// none, and the default limits.
    pub fn new(listen: SocketAddr, token: Option<String>) -> ServerConfig {
        ServerConfig {
            listen,
            tokens: token
                .map(|t| ApiToken::new(auth::SINGLE_TOKEN_NAME, Role::Admin, t))
                .into_iter()
                .collect(),
            body_limit: DEFAULT_BODY_LIMIT,
            limits: HttpLimits::default(),
            allowed_hosts: Vec::new(),
            readiness: None,
            console: None,
        }
    }
}

/// What `/readyz` checks: each failing check is named in its 503 answer.
pub trait Readiness: Send + Sync + std::fmt::Debug {
    /// The checks, each `(name, Ok(()) or why not)`.
    fn check(&self) -> Vec<(&'static str, Result<(), String>)>;
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
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds and serves `api` (mounted under `/api`), `/healthz` and `/readyz`.
    pub async fn start(config: ServerConfig, api: ApiRoutes) -> Result<Server, ServerError> {
        if config.tokens.is_empty() && !config.listen.ip().is_loopback() {
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
        let limits = config.limits;
        let app = router(config, api);
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(serve(listener, app, limits, stop));
        Ok(Server {
            addr,
            shutdown,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections and waits for requests in flight to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.task).await;
    }
}

/// The open connections, oldest first, each with the bell that asks it to close.
type Open = Arc<Mutex<BTreeMap<u64, Arc<Notify>>>>;

/// Accepts connections until `stop`, at most `limits.max_connections` at once, then waits for
/// the open ones to finish their requests.
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let cap = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(cap));
    let open: Open = Arc::default();
    let mut next_id: u64 = 0;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // At the cap: the oldest connection closes (an idle one at once) to make room.
                if let Some((_, bell)) = open.lock().unwrap_or_else(|e| e.into_inner()).pop_first()
                {
                    bell.notify_one();
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.changed() => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was taken: wait a
                    // moment rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let id = next_id;
        next_id += 1;
        let bell = Arc::new(Notify::new());
        open.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, bell.clone());
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let closed = tokio::select! {
                done = conn.as_mut() => Some(done),
                _ = bell.notified() => None,
                _ = stop.changed() => None,
            };
            if closed.is_none() {
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
            }
            open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            drop(permit);
        });
    }
    // Stopped: the open connections finish their requests and close (they saw `stop` too).
    drop(listener);
    let _ = slots.acquire_many(cap as u32).await;
}

/// The whole router: `/healthz`, `/readyz`, then `/api` behind auth and limits, all behind the
/// guard, with JSON fallbacks.
pub fn router(config: ServerConfig, api: ApiRoutes) -> Router {
    let tokens = Arc::new(config.tokens);
    let guard = Arc::new(guard::Guard::new(config.listen, &config.allowed_hosts));
    let readiness = config.readiness;
    let api = api
        .fallback(|| async {
            ApiError::not_found("no such API route; see `blockyard serve --help`")
        })
        .layer(middleware::from_fn_with_state(tokens, auth::authenticate))
        .layer(DefaultBodyLimit::max(config.body_limit));
    // The console (its own HTML 404 for what it does not know), or the API's JSON 404.
    let root = config.console.unwrap_or_else(|| {
        Router::new()
            .fallback(|| async { ApiError::not_found("not found: the API is under `/api`") })
    });
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(move || ready(readiness.clone())))
        // `GET /metrics` is served by the API's router, behind the same token check.
        .route_service("/metrics", api.clone().into_service())
        .nest("/api", api)
        .merge(root)
        .layer(middleware::from_fn_with_state(guard, guard::guard))
        .layer(middleware::from_fn(json_errors))
}

/// `/readyz`: 200 `{"status": "ready", "checks": {name: "ok"}}` when every check passes, else 503
/// with each failing check's reason.
async fn ready(readiness: Option<Arc<dyn Readiness>>) -> Response {
    // The checks write and fsync: off the async workers.
    let checks = match readiness {
        None => Vec::new(),
        Some(readiness) => match tokio::task::spawn_blocking(move || readiness.check()).await {
            Ok(checks) => checks,
            Err(err) => vec![("checks", Err(format!("the readiness check failed: {err}")))],
        },
    };
    let ready = checks.iter().all(|(_, result)| result.is_ok());
    let checks: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, result)| {
            let value = match result {
                Ok(()) => json!("ok"),
                Err(why) => json!(why),
            };
            (name.to_owned(), value)
        })
        .collect();
    if ready {
        Json(json!({"status": "ready", "checks": checks})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "checks": checks})),
        )
            .into_response()
    }
}

/// Turns axum's plain-text rejections (oversized or malformed bodies) into JSON errors.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    // The console's pages (HTML, its error page too) are not the API's to rewrite.
    if is_json || response.status().is_success() || response.status().is_redirection() {
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

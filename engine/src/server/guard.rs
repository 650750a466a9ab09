//! What a hostile web page can make a browser send to a service on the operator's machine,
//! refused before routing or auth.
//!
//! - **DNS rebinding**: on a loopback address, the `Host` must be `localhost`, `127.0.0.1`,
//!   `[::1]`, the listen address, or a name in `serve.allowed_hosts` (a local reverse proxy's);
//!   any port. Off loopback, when `serve.allowed_hosts` lists names, they (and the listen
//!   address) are the only ones it answers to; without a list any `Host` is taken, since off
//!   loopback a token is required, which a page does not have.
//! - **Cross-site requests**: a state-changing request (any method but `GET`, `HEAD`, `OPTIONS`)
//!   is refused when its `Sec-Fetch-Site` is not `same-origin` or `none`, or its `Origin` is not
//!   the origin the request was sent to (`http://` + its `Host`). A client that sends neither
//!   (curl, the CLI, a script) is not a browser and is let through.
//! - **JSON bodies**: a request with a body must say `Content-Type: application/json`; a form or
//!   `text/plain` body, which a page can send without a preflight, is 415. The one exception is
//!   a form (`application/x-www-form-urlencoded`) to the web console outside `/api`, whose forms
//!   carry a CSRF token it checks ([`super::console`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

const CROSS_SITE_HINT: &str = "a state-changing request must come from the service's own origin (or from a client that sends no `Origin`, such as curl or the CLI)";

/// The names a service answers to.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    /// `None`: any `Host` (off loopback with no `serve.allowed_hosts`).
    hosts: Option<Vec<String>>,
    /// Why a refused `Host` is refused, as the user reads it.
    refusal: String,
}

impl Guard {
    pub(crate) fn new(listen: SocketAddr, allowed_hosts: &[String]) -> Guard {
        let allowed = allowed_hosts.iter().map(|h| h.to_ascii_lowercase());
        let ip = match listen {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        if listen.ip().is_loopback() {
            let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
                .into_iter()
                .map(str::to_owned)
                .collect();
            hosts.push(ip);
            hosts.extend(allowed);
            return Guard {
                hosts: Some(hosts),
                refusal: "this service on a loopback address answers to `localhost`, `127.0.0.1` and `[::1]` (a guard against DNS rebinding); add a name a proxy uses to `serve.allowed_hosts`".to_owned(),
            };
        }
        // Off loopback a token is required, so any `Host` is taken unless the operator lists the
        // names (and then only those, and the listen address).
        if allowed_hosts.is_empty() {
            return Guard {
                hosts: None,
                refusal: String::new(),
            };
        }
        let listed = allowed_hosts
            .iter()
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut hosts: Vec<String> = allowed.collect();
        if !listen.ip().is_unspecified() {
            hosts.push(ip);
        }
        Guard {
            hosts: Some(hosts),
            refusal: format!("this service answers to the names in `serve.allowed_hosts` ({listed}); add the name its clients use there"),
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}

/// The host name of a `Host` header (or an origin's authority), without its port, lower case.
fn host_name(authority: &str) -> String {
    let name = if authority.starts_with('[') {
        authority
            .split_once(']')
            .map_or(authority, |(h, _)| h)
            .to_owned()
            + "]"
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_owned()
    };
    name.to_ascii_lowercase()
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware: see the module docs.
pub(crate) async fn guard(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = header(headers, header::HOST).unwrap_or_default();
    if let Some(hosts) = &guard.hosts {
        let name = host_name(host);
        if !hosts.contains(&name) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("refusing a request for host `{name}`: {}", guard.refusal),
            );
        }
    }
    let method = request.method();
    let safe = method == Method::GET || method == Method::HEAD || method == Method::OPTIONS;
    if !safe {
        if let Some(origin) = header(headers, header::ORIGIN) {
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|authority| authority.eq_ignore_ascii_case(host));
            if !same {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!("refusing a cross-site request from `{origin}`: {CROSS_SITE_HINT}"),
                );
            }
        }
        if let Some(site) = header(headers, header::HeaderName::from_static("sec-fetch-site")) {
            if site != "same-origin" && site != "none" {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!("refusing a `{site}` request (`Sec-Fetch-Site`): {CROSS_SITE_HINT}"),
                );
            }
        }
    }
    if has_body(headers) {
        let content_type = header(headers, header::CONTENT_TYPE).unwrap_or_default();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        // The console's forms (outside `/api`) are form-encoded; it checks their CSRF token.
        let console_form =
            essence == "application/x-www-form-urlencoded" && !is_api(request.uri().path());
        if essence != "application/json" && !console_form {
            let given = if essence.is_empty() {
                "has no `Content-Type`".to_owned()
            } else {
                format!("is `{essence}`")
            };
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "the request body {given}; send JSON with `Content-Type: application/json`"
                ),
            );
        }
    }
    next.run(request).await
}

/// Whether a path is the API's (`/api/…`, `/metrics`) rather than the console's.
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/metrics"
}

/// Whether the request says it has a body: a `Content-Length` above 0, or a chunked one.
fn has_body(headers: &HeaderMap) -> bool {
    let length = header(headers, header::CONTENT_LENGTH)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    length > 0 || headers.contains_key(header::TRANSFER_ENCODING)
}

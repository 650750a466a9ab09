//! The web console: server-rendered HTML pages at `/`, on the API's port, for people who would
//! rather look than read.
//!
//! This module owns the console's framework: its routes, the login session (cookie) and its
//! CSRF token, the role rules, the base layout, the error page and the embedded assets. Each
//! page lives in its own file beside it (`runs.rs`, `run.rs`, `approvals.rs`, …) with an askama
//! template in `templates/` (compiled into the binary; `askama.toml` at the crate root points
//! there).
//!
//! # Who may do what
//! - **Login**: `POST /login` with a form field `token`, one of the configured API tokens
//!   (compared in constant time, all of them every time). It opens a session kept in memory; the
//!   browser holds only its random id, in the cookie [`COOKIE`] (`HttpOnly; SameSite=Strict;
//!   Path=/`, 12 hours). The session ends at `POST /logout`, after 12 hours, or when `serve`
//!   stops. `/api/*` never reads the cookie: the API takes `Authorization: Bearer` only.
//! - **No token configured** (a loopback-only service): every caller is the local admin
//!   ([`Actor::local`]), as on the API; a session is still opened, silently, for its CSRF token.
//! - **Roles** as on the API ([`Role`]): a page shows only the buttons its actor may use
//!   ([`Ctx::can`]), and every state-changing handler checks again ([`Ctx::require`]): a forged
//!   form gets the 403 page naming the role needed.
//! - **CSRF**: every state-changing form is `application/x-www-form-urlencoded` and carries the
//!   session's token in the hidden field `csrf` (`{% include "csrf.html" %}`), checked in
//!   constant time by [`CsrfForm`]. The [`super::guard`] in front of everything still refuses a
//!   foreign `Host` and a cross-site `Origin`/`Sec-Fetch-Site`.
//!
//! # Adding a page
//! 1. A file `console/NAME.rs` with `pub(super) fn routes() -> Router<Arc<Console>>` (the routes
//!    it serves) and its handlers. A handler takes [`Ctx`] (the service, the actor, the CSRF
//!    token) and returns [`Page`]: `async fn show(ctx: Ctx) -> Page { … }`.
//! 2. A line `.merge(NAME::routes())` in [`routes`] (and `mod NAME;` above it).
//! 3. A template `templates/NAME.html` that starts with `{% extends "base.html" %}` and fills
//!    `{% block content %}`; its struct derives `askama::Template` with
//!    `#[template(path = "NAME.html")]` and has a field `layout: Layout` (made by
//!    [`Ctx::layout`], which names the page's title and its nav entry).
//!    The handler ends with `render(&template)`.
//! 4. A form that changes state: `method="post"`, `{% include "csrf.html" %}` inside it; the
//!    handler takes `ctx: Ctx, CsrfForm(form): CsrfForm<MyForm>` (`MyForm: Deserialize`, string
//!    fields; the form's fields besides `csrf` must all be in it) and calls
//!    `ctx.require(Role::Operator)?` first. It answers with [`see_other`] (post/redirect/get).
//!
//! Read the store through [`Ctx::history`] (the seam's [`ReadHistory`]), so a page works on any
//! backend. Wrong input is a [`PageError`] (rendered as the error page with its status); never
//! guess.
//!
//! # Assets
//! One CSS file and one plain JS file (progressive enhancement: every page is readable and every
//! form works without it), embedded with `include_str!` and served at a content-hashed URL
//! ([`css_url`], [`js_url`]) with `Cache-Control: public, max-age=31536000, immutable`.

mod approvals;
mod licenses;
mod login;
mod people;
mod run;
mod runs;
mod workflows;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;

use super::auth::{find_token, Actor, ApiToken, Role};
use crate::service::Shared;
use crate::store::api::ReadHistory;

/// The session cookie's name.
pub const COOKIE: &str = "blockyard_session";

/// How long a session lasts after its login.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// The most sessions kept at once; past it the oldest ends.
const MAX_SESSIONS: usize = 4096;

/// The console's shared state: the service and the sessions.
#[derive(Debug)]
pub struct Console {
    shared: Arc<Shared>,
    tokens: Arc<Vec<ApiToken>>,
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, Clone)]
struct Session {
    actor: Actor,
    csrf: Arc<str>,
    expires: Instant,
}

impl Console {
    /// No token configured: every caller is the local admin.
    fn open(&self) -> bool {
        self.tokens.is_empty()
    }

    fn session(&self, id: &str) -> Option<Session> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Opens a session for `actor`; returns its id.
    fn start(&self, actor: Actor) -> String {
        let id = random_hex();
        let session = Session {
            actor,
            csrf: random_hex().into(),
            expires: Instant::now() + SESSION_LIFETIME,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                if let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(id, _)| id.clone())
                {
                    sessions.remove(&oldest);
                }
            }
        }
        sessions.insert(id.clone(), session);
        id
    }

    fn end(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// 32 bytes from the OS's random source, in hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // The OS's random source failing is not something a console can carry on without.
    getrandom::fill(&mut bytes).expect("the OS's random source failed");
    let mut out = String::with_capacity(64);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The console's routes over the service's shared state, mounted at `/` by [`super::router`].
/// `tokens` are the API's tokens (the ones a login may use).
pub fn routes(shared: Arc<Shared>, tokens: Vec<ApiToken>) -> Router {
    let console = Arc::new(Console {
        shared,
        tokens: Arc::new(tokens),
        sessions: Mutex::new(HashMap::new()),
    });
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .merge(runs::routes())
        .merge(run::routes())
        .merge(approvals::routes())
        .route("/logout", axum::routing::post(login::logout))
        .merge(people::routes())
        .merge(workflows::routes())
        .merge(licenses::routes())
        .layer(middleware::from_fn_with_state(console.clone(), session));
    Router::new()
        .merge(pages)
        .merge(login::routes())
        .route("/assets/{name}", get(asset))
        .fallback(|| async {
            PageError::new(
                StatusCode::NOT_FOUND,
                "no such page; the console's pages are in the menu above",
            )
        })
        .with_state(console)
}

/// A console request's context: the service, who is asking, and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub actor: Actor,
    pub csrf: Arc<str>,
    /// No token configured: the console is open to local callers (no login, no logout).
    pub open: bool,
}

impl Ctx {
    /// Whether the actor's role allows what needs `role` (show a button only when it does).
    pub fn can(&self, role: Role) -> bool {
        self.actor.role >= role
    }

    /// 403 unless the actor's role allows `what` (e.g. "approving a block"), which needs `role`.
    pub fn require(&self, role: Role, what: &str) -> Result<(), PageError> {
        if self.can(role) {
            return Ok(());
        }
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the token `{}` has the role `{}`; {what} needs `{role}`; sign in with a token that has that role",
                self.actor.name, self.actor.role
            ),
        ))
    }

    /// The run history, read side (the store seam's trait: the page works on any backend).
    pub fn history(&self) -> &(impl ReadHistory + Sync) {
        self.shared.engine.history()
    }

    /// The base layout's values for a page titled `title` under the nav entry `nav` (one of
    /// [`NAV`]'s paths, e.g. `/runs`).
    pub fn layout(&self, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            actor: self.actor.name.clone(),
            role: self.actor.role.name(),
            csrf: self.csrf.clone(),
            open: self.open,
            css: css_url(),
            js: js_url(),
        }
    }
}

impl FromRequestParts<Arc<Console>> for Ctx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Console>) -> Result<Ctx, PageError> {
        parts.extensions.get::<Ctx>().cloned().ok_or_else(|| {
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page is not behind the console's session layer",
            )
        })
    }
}

/// The menu: `(path, label)`.
pub const NAV: [(&str, &str); 5] = [
    ("/runs", "Runs"),
    ("/approvals", "Approvals"),
    ("/people", "People"),
    ("/workflows", "Workflows"),
    ("/licenses", "Licenses"),
];

/// What `templates/base.html` shows around every page.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    /// The nav entry marked current.
    pub nav: &'static str,
    pub actor: String,
    pub role: &'static str,
    pub csrf: Arc<str>,
    pub open: bool,
    pub css: &'static str,
    pub js: &'static str,
}

impl Layout {
    /// The menu's entries.
    pub fn menu(&self) -> &'static [(&'static str, &'static str)] {
        &NAV
    }

    /// Whether `path` is the page's nav entry.
    pub fn is_current(&self, path: &str) -> bool {
        self.nav == path
    }
}

/// A page's answer: HTML, or the error page.
pub type Page = Result<Response, PageError>;

/// Renders a template as an HTML answer (never cached: it shows live state).
pub fn render(template: &impl Template) -> Page {
    let html = template.render().map_err(|err| {
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page failed: {err}"),
        )
    })?;
    Ok(html_response(StatusCode::OK, html))
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// After a form: go to `to` (303, so the browser GETs it).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// An error shown as the console's error page, with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<super::ApiError> for PageError {
    fn from(err: super::ApiError) -> PageError {
        PageError::new(err.status, err.message)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(err: crate::store::StoreError) -> PageError {
        super::ApiError::from(err).into()
    }
}

impl From<crate::exec::ExecError> for PageError {
    fn from(err: crate::exec::ExecError) -> PageError {
        super::ApiError::from(err).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
    css: &'static str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("error"),
            message: &self.message,
            css: css_url(),
        };
        // The error page has no template data that can fail to render; plain text if it does.
        let html = page
            .render()
            .unwrap_or_else(|_| format!("{} {}", self.status, self.message));
        html_response(self.status, html)
    }
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// `Set-Cookie` for a session id (or, `None`, one that clears it).
fn set_cookie(id: Option<&str>) -> HeaderValue {
    let text = match id {
        Some(id) => format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            SESSION_LIFETIME.as_secs()
        ),
        None => format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    };
    HeaderValue::from_str(&text).expect("a cookie of hex digits is a valid header")
}

/// The pages' layer: finds the session (or, on an open console, opens one), puts its [`Ctx`]
/// into the request; without a session a `GET` goes to the login page and anything else is 401.
async fn session(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    let found = cookie(request.headers()).and_then(|id| console.session(id));
    let (session, new_id) = match found {
        Some(session) => (session, None),
        None if console.open() => {
            let id = console.start(Actor::local());
            let session = console.session(&id).expect("a session just opened");
            (session, Some(id))
        }
        None => {
            if request.method() == axum::http::Method::GET {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let to = format!("/login?next={}", login::encode(&path));
                return Redirect::to(&to).into_response();
            }
            return PageError::new(
                StatusCode::UNAUTHORIZED,
                "you are not signed in (or your session has ended); sign in at /login and try again",
            )
            .into_response();
        }
    };
    request.extensions_mut().insert(Ctx {
        shared: console.shared.clone(),
        actor: session.actor,
        csrf: session.csrf,
        open: console.open(),
    });
    let mut response = next.run(request).await;
    if let Some(id) = new_id {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(Some(&id)));
    }
    response
}

/// A state-changing form: form-encoded, with the session's CSRF token in `csrf`; the other
/// fields deserialize into `T` (string values; a field `T` does not take is refused by
/// `#[serde(deny_unknown_fields)]` on it).
#[derive(Debug)]
pub struct CsrfForm<T>(pub T);

/// The message a form without the session's CSRF token gets (403).
pub const CSRF_REFUSED: &str = "the form's CSRF token is missing or does not match your session; reload the page and send the form again";

impl<T: DeserializeOwned> FromRequest<Arc<Console>> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(
        request: Request,
        state: &Arc<Console>,
    ) -> Result<CsrfForm<T>, PageError> {
        let ctx = request.extensions().get::<Ctx>().cloned().ok_or_else(|| {
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this form is not behind the console's session layer",
            )
        })?;
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if content_type != "application/x-www-form-urlencoded" {
            return Err(PageError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a console form is sent as `application/x-www-form-urlencoded`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|err| PageError::bad_request(err.body_text()))?;
        let (csrf, fields) = parse_form(&bytes);
        let given = csrf.unwrap_or_default();
        if !super::auth::constant_time_eq(given.as_bytes(), ctx.csrf.as_bytes()) {
            return Err(PageError::new(StatusCode::FORBIDDEN, CSRF_REFUSED));
        }
        serde_json::from_value(serde_json::Value::Object(fields))
            .map(CsrfForm)
            .map_err(|err| PageError::bad_request(format!("the form is not valid: {err}")))
    }
}

/// A form body's `csrf` field and its other fields (a repeated field keeps its last value).
fn parse_form(bytes: &[u8]) -> (Option<String>, serde_json::Map<String, serde_json::Value>) {
    let mut csrf = None;
    let mut fields = serde_json::Map::new();
    for (name, value) in url::form_urlencoded::parse(bytes) {
        if name == "csrf" {
            csrf = Some(value.into_owned());
        } else {
            fields.insert(
                name.into_owned(),
                serde_json::Value::String(value.into_owned()),
            );
        }
    }
    (csrf, fields)
}

/// The embedded assets.
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// FNV-1a, 64 bits: a content hash for an asset's URL (not a security measure).
fn content_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

static CSS_NAME: LazyLock<String> =
    LazyLock::new(|| format!("console.{}.css", content_hash(CSS.as_bytes())));
static JS_NAME: LazyLock<String> =
    LazyLock::new(|| format!("console.{}.js", content_hash(JS.as_bytes())));
static CSS_URL: LazyLock<String> = LazyLock::new(|| format!("/assets/{}", *CSS_NAME));
static JS_URL: LazyLock<String> = LazyLock::new(|| format!("/assets/{}", *JS_NAME));

/// The stylesheet's URL (`/assets/console.HASH.css`).
pub fn css_url() -> &'static str {
    CSS_URL.as_str()
}

/// The script's URL (`/assets/console.HASH.js`).
pub fn js_url() -> &'static str {
    JS_URL.as_str()
}

/// `GET /assets/{name}`: an embedded asset by its content-hashed name, cached for a year.
async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = if name == *CSS_NAME {
        (CSS, "text/css; charset=utf-8")
    } else if name == *JS_NAME {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return PageError::not_found(format!(
            "no asset `{name}`; the console's assets are `{}` and `{}`",
            *CSS_NAME, *JS_NAME
        ))
        .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for HTML built outside a template.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The block graph of `workflow` as inline SVG for a run: each block coloured by its last step in
/// `steps` (a block without one is `not_reached`) and the edges the run took highlighted
/// ([`crate::graph::svg`]; a page without a run draws `crate::graph::svg(workflow, None)`).
pub fn graph_svg(
    workflow: &crate::compile::Workflow,
    steps: &[crate::store::history::StepRecord],
) -> String {
    let marks = crate::graph::svg::Marks::from_steps(workflow, steps);
    crate::graph::svg::svg(workflow, Some(&marks))
}

/// A timestamp as the console shows it: `2026-11-30 22:04:05 UTC`.
pub fn when(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration as the console shows it: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asset_name_changes_with_its_content() {
        assert_ne!(content_hash(b"a {}"), content_hash(b"b {}"));
        assert!(css_url().starts_with("/assets/console.") && css_url().ends_with(".css"));
        assert!(js_url().starts_with("/assets/console.") && js_url().ends_with(".js"));
    }

    #[test]
    fn a_form_keeps_its_csrf_apart() {
        let (csrf, fields) = parse_form(b"csrf=abc&comment=ok+then&x=%2F");
        assert_eq!(csrf.as_deref(), Some("abc"));
        assert_eq!(fields["comment"], "ok then");
        assert_eq!(fields["x"], "/");
    }
}

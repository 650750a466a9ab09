//! The vendor sandbox: stateful, deterministic fakes of the Calendly, Webex and SCIM 2.0 APIs,
//! served over HTTP on loopback for tests, the demo and benchmarks.
//!
//! # Layout
//!
//! - this module owns the public handle ([`Sandbox`], [`SandboxConfig`]) and the server: one axum
//!   fallback handler reads the whole request, picks a [`Vendor`] by path prefix, and runs the
//!   *gate* (latency, bearer token, rate limit, failure injection) before the vendor's handler;
//! - [`calendly`], [`webex`] and [`scim`] each own one vendor's state (behind one `Mutex` per
//!   vendor, never held across an `.await`) and answer with that vendor's own status codes, error
//!   bodies and headers, as documented in `shared/reference/vendor-apis.md` and
//!   `scim-cron-reclaim.md`;
//! - [`oauth`] plays each vendor's OAuth authorization server (authorize page, token endpoint)
//!   and checks the access tokens it issued, with their expiry and scopes, in the gate;
//! - [`seed`] builds the same N people consistently across the three vendors from a seed;
//! - [`control`] serves `/_sandbox/...`: the request log, a state dump, reset, reseed, the
//!   latency, the OAuth app's behaviour (deny consent, granted scopes, token lifetimes, rotation;
//!   expire every access token), and the Calendly-only controls (accept an invitation, set the
//!   plan, set the acting user);
//! - [`sinks`] receives what the notification presets send (`POST /hooks/...`, an incoming
//!   webhook) and lists it under `/_sandbox/webhooks`;
//! - [`smtp`] is a plain-SMTP sink on its own loopback port ([`Sandbox::smtp_url`]) that keeps
//!   what `email.send` sends and lists it under `/_sandbox/mail`;
//! - [`gate`] holds the rate-limit windows and the seeded failure injector, [`log`] the bounded
//!   request log.
//!
//! Vendor handlers are synchronous functions from a parsed [`http::Ctx`] to a response: routing
//! is a `match` on path segments, so every route of a vendor is visible in one place.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), blockyard::sandbox::SandboxError> {
//! use blockyard::sandbox::{Sandbox, SandboxConfig};
//! let sandbox = Sandbox::start(SandboxConfig { seed_users: 10, ..SandboxConfig::default() }).await?;
//! println!("{}", sandbox.webex_url()); // http://127.0.0.1:PORT/webex/v1
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```

mod calendly;
mod control;
mod gate;
mod http;
mod ids;
mod log;
mod oauth;
mod scim;
mod seed;
mod sinks;
mod smtp;
mod store;
mod webex;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use calendly::CalendlyPlan;
pub use log::RecordedRequest;
pub use oauth::OAuthConfig;
#[doc(hidden)]
pub use scim::fuzz as scim_fuzz;
pub use sinks::ReceivedWebhook;
pub use smtp::ReceivedMail;

/// The largest request body the sandbox reads (bigger bodies get 413).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// How the sandbox is started. `Default` listens on `127.0.0.1:0` with no people, seed 0, no
/// token, no rate limit, no latency and no failures.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How many people to create in every vendor (the first is the Calendly owner).
    pub seed_users: usize,
    /// Seed for every generated id, name and date (with the same seed, the same data).
    pub seed: u64,
    /// When set, every vendor request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Requests allowed per vendor per fixed one-minute window; `None` means unlimited.
    pub rate_limit_per_min: Option<u32>,
    /// Delay added before every vendor response (`POST /_sandbox/latency` changes it).
    pub latency: Duration,
    /// Share of vendor requests (0.0 to 1.0) answered with 503, drawn from a seeded generator.
    pub fail_rate: f64,
    /// How many requests the request log keeps (the oldest are dropped first).
    pub request_log_capacity: usize,
    /// The OAuth app the vendors' authorize and token endpoints know.
    pub oauth: OAuthConfig,
    /// The SMTP sink's login `(user, password)`: when set, it advertises AUTH PLAIN and LOGIN
    /// and takes mail only after a login with exactly these; when `None`, it takes mail without
    /// one and refuses AUTH.
    pub smtp_login: Option<(String, String)>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed_users: 0,
            seed: 0,
            token: None,
            rate_limit_per_min: None,
            latency: Duration::ZERO,
            fail_rate: 0.0,
            request_log_capacity: 100_000,
            oauth: OAuthConfig::default(),
            smtp_login: None,
        }
    }
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("`fail_rate` must be between 0.0 and 1.0, got {fail_rate}")]
    FailRate { fail_rate: f64 },
    #[error("the rate limit must allow at least 1 request per minute")]
    ZeroRateLimit,
}

/// One of the three simulated vendors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vendor {
    Calendly,
    Webex,
    Scim,
}

impl Vendor {
    pub(crate) const ALL: [Vendor; 3] = [Vendor::Calendly, Vendor::Webex, Vendor::Scim];

    /// The path prefix the vendor is served under.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Vendor::Calendly => "/calendly",
            Vendor::Webex => "/webex/v1",
            Vendor::Scim => "/scim/v2",
        }
    }

    fn index(self) -> usize {
        match self {
            Vendor::Calendly => 0,
            Vendor::Webex => 1,
            Vendor::Scim => 2,
        }
    }
}

/// The three vendors' state, one lock each.
pub(crate) struct World {
    pub(crate) calendly: Mutex<calendly::CalendlyState>,
    pub(crate) webex: Mutex<webex::WebexState>,
    pub(crate) scim: Mutex<scim::ScimState>,
}

/// Everything the server shares between requests.
pub(crate) struct Shared {
    /// `http://IP:PORT`, the root every vendor URL is built from.
    pub(crate) base: String,
    pub(crate) token: Option<String>,
    /// The delay before every vendor response, in nanoseconds (changed at run time by
    /// `POST /_sandbox/latency`; a request already waiting keeps the delay it started with).
    latency: AtomicU64,
    pub(crate) world: World,
    pub(crate) log: log::RequestLog,
    pub(crate) limits: gate::RateLimits,
    pub(crate) faults: gate::Faults,
    pub(crate) oauth: Mutex<oauth::OAuth>,
    tracking: AtomicU64,
    pub(crate) sinks: sinks::Sinks,
    /// The SMTP sink's login, if it requires one.
    pub(crate) smtp_login: Option<(String, String)>,
}

/// Locks a vendor's state; a panic in another request never makes the sandbox unusable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency.load(Ordering::Relaxed))
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.store(nanos, Ordering::Relaxed);
    }

    /// Replaces every vendor's state with freshly seeded data and clears the request log.
    pub(crate) fn reseed(&self, users: usize, seed: u64, plan: CalendlyPlan) {
        let world = seed::build(&self.base, users, seed, plan);
        *lock(&self.world.calendly) = world.calendly;
        *lock(&self.world.webex) = world.webex;
        *lock(&self.world.scim) = world.scim;
        self.log.clear();
        self.limits.reset();
        self.faults.reseed(seed);
        self.tracking.store(0, Ordering::Relaxed);
        self.sinks.clear();
    }
}

/// A running sandbox. Dropping it stops the server; [`Sandbox::shutdown`] stops it gracefully.
pub struct Sandbox {
    addr: SocketAddr,
    /// The SMTP sink's address and its accept loop.
    smtp_addr: SocketAddr,
    smtp_task: JoinHandle<()>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Binds `config.listen`, seeds the vendors, spawns the server on the current tokio runtime
    /// and returns at once.
    pub async fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        if !(0.0..=1.0).contains(&config.fail_rate) {
            return Err(SandboxError::FailRate {
                fail_rate: config.fail_rate,
            });
        }
        if config.rate_limit_per_min == Some(0) {
            return Err(SandboxError::ZeroRateLimit);
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: config.listen,
            source,
        })?;
        let base = format!("http://{addr}");
        let world = seed::build(
            &base,
            config.seed_users,
            config.seed,
            CalendlyPlan::Enterprise,
        );
        let shared = Arc::new(Shared {
            base,
            token: config.token.clone(),
            latency: AtomicU64::new(0),
            world: World {
                calendly: Mutex::new(world.calendly),
                webex: Mutex::new(world.webex),
                scim: Mutex::new(world.scim),
            },
            log: log::RequestLog::new(config.request_log_capacity),
            limits: gate::RateLimits::new(config.rate_limit_per_min),
            faults: gate::Faults::new(config.fail_rate, config.seed),
            oauth: Mutex::new(oauth::OAuth::new(config.oauth.clone())),
            tracking: AtomicU64::new(0),
            sinks: sinks::Sinks::default(),
            smtp_login: config.smtp_login.clone(),
        });
        let smtp_listen = SocketAddr::new(config.listen.ip(), 0);
        let smtp_listener = tokio::net::TcpListener::bind(smtp_listen)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: smtp_listen,
                source,
            })?;
        let smtp_addr = smtp_listener
            .local_addr()
            .map_err(|source| SandboxError::Bind {
                addr: smtp_listen,
                source,
            })?;
        let smtp_task = tokio::spawn(smtp::serve(smtp_listener, Arc::clone(&shared)));
        shared.set_latency(config.latency);
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "sandbox server stopped");
            }
        });
        tracing::debug!(%addr, "sandbox listening");
        Ok(Sandbox {
            addr,
            smtp_addr,
            smtp_task,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT/calendly`
    pub fn calendly_url(&self) -> String {
        format!("{}{}", self.shared.base, Vendor::Calendly.prefix())
    }

    /// `http://IP:PORT/webex/v1`
    pub fn webex_url(&self) -> String {
        format!("{}{}", self.shared.base, Vendor::Webex.prefix())
    }

    /// `http://IP:PORT/scim/v2`
    pub fn scim_url(&self) -> String {
        format!("{}{}", self.shared.base, Vendor::Scim.prefix())
    }

    /// The Calendly organization URI of the seeded organization.
    pub fn organization_uri(&self) -> String {
        lock(&self.shared.world.calendly).organization_uri()
    }

    /// A URL of the webhook sink (`http://IP:PORT/hooks/<name>`): what is posted to it is listed
    /// by [`Sandbox::webhooks`].
    pub fn webhook_url(&self, name: &str) -> String {
        format!("{}{}/{name}", self.shared.base, sinks::HOOKS)
    }

    /// Every webhook the sink received (oldest first), as `GET /_sandbox/webhooks` shows.
    pub fn webhooks(&self) -> Vec<ReceivedWebhook> {
        self.shared.sinks.webhooks()
    }

    /// The SMTP sink's URL (`smtp://IP:PORT`), for a credential's `base_url` with `tls: none`.
    pub fn smtp_url(&self) -> String {
        format!("smtp://{}", self.smtp_addr)
    }

    /// Every message the SMTP sink received (oldest first), as `GET /_sandbox/mail` shows.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared.sinks.mails()
    }

    /// Every vendor request served so far (oldest first), as `GET /_sandbox/requests` shows.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.snapshot()
    }

    /// Switches the Calendly plan: `Standard` makes the activity log answer 403.
    pub fn set_calendly_plan(&self, plan: CalendlyPlan) {
        lock(&self.shared.world.calendly).plan = plan;
    }

    /// The OAuth app's settings now.
    pub fn oauth_config(&self) -> OAuthConfig {
        lock(&self.shared.oauth).config.clone()
    }

    /// Changes the OAuth app's settings from now on (as `POST /_sandbox/oauth` does).
    pub fn configure_oauth(&self, change: impl FnOnce(&mut OAuthConfig)) {
        change(&mut lock(&self.shared.oauth).config);
    }

    /// Expires every access token issued so far (`POST /_sandbox/oauth/expire`).
    pub fn expire_access_tokens(&self) {
        lock(&self.shared.oauth).expire_all();
    }

    /// The Calendly OAuth authorize URL (`auth.calendly.com/oauth/authorize` for real).
    pub fn calendly_authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.calendly_url())
    }

    /// The Calendly OAuth token URL.
    pub fn calendly_token_url(&self) -> String {
        format!("{}/oauth/token", self.calendly_url())
    }

    /// The Webex OAuth authorize URL (`webexapis.com/v1/authorize` for real).
    pub fn webex_authorize_url(&self) -> String {
        format!("{}/authorize", self.webex_url())
    }

    /// The Webex OAuth token URL.
    pub fn webex_token_url(&self) -> String {
        format!("{}/access_token", self.webex_url())
    }

    /// Changes the delay before every vendor response from now on, as `POST /_sandbox/latency`
    /// does (requests already waiting keep theirs).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.set_latency(latency);
    }

    /// Replaces all state with `users` people seeded from `seed` and clears the request log.
    pub fn reseed(&self, users: usize, seed: u64) {
        self.shared.reseed(users, seed, CalendlyPlan::Enterprise);
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits for the server.
    pub async fn shutdown(mut self) {
        self.smtp_task.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.smtp_task.abort();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("addr", &self.addr).finish()
    }
}

/// Where a request path leads.
enum Route<'a> {
    Vendor(Vendor, &'a str),
    Control(&'a str),
    Hook,
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    if let Some(rest) = path.strip_prefix("/_sandbox") {
        if rest.is_empty() || rest.starts_with('/') {
            return Route::Control(rest);
        }
    }
    if let Some(rest) = path.strip_prefix(sinks::HOOKS) {
        if rest.starts_with('/') {
            return Route::Hook;
        }
    }
    for vendor in Vendor::ALL {
        if let Some(rest) = path.strip_prefix(vendor.prefix()) {
            if rest.is_empty() || rest.starts_with('/') {
                return Route::Vendor(vendor, rest);
            }
        }
    }
    Route::Unknown
}

/// The one handler: reads the body, routes, runs the gate and the vendor, records the request.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return http::plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let path = parts.uri.path();
    let query = parts.uri.query();
    match route(path) {
        Route::Control(rest) => control::handle(&shared, &parts.method, rest, query, &body),
        Route::Hook if parts.method == axum::http::Method::POST => {
            shared.sinks.webhook(path, &body);
            // Slack's answer: a plain-text `ok`.
            http::bytes(StatusCode::OK, "text/plain", b"ok".to_vec())
        }
        Route::Hook => http::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the webhook sink takes POST; GET /_sandbox/webhooks lists what it received",
        ),
        Route::Unknown => http::plain(
            StatusCode::NOT_FOUND,
            "no such sandbox route: vendors live under /calendly, /webex/v1 and /scim/v2, the webhook sink under /hooks/",
        ),
        Route::Vendor(vendor, rest) => {
            let latency = shared.latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let tracking_id = match vendor {
                Vendor::Webex => {
                    let n = shared.tracking.fetch_add(1, Ordering::Relaxed);
                    format!("ROUTER_SANDBOX_{n:010}")
                }
                Vendor::Calendly | Vendor::Scim => String::new(),
            };
            let ctx = http::Ctx::new(
                &parts.method,
                rest,
                query,
                &parts.headers,
                &body,
                &tracking_id,
            );
            let mut response = gated(&shared, vendor, &ctx);
            if vendor == Vendor::Webex {
                if let Ok(value) = HeaderValue::from_str(&tracking_id) {
                    response.headers_mut().insert("trackingid", value);
                }
            }
            shared.log.record(
                &parts.method,
                path,
                query,
                body.clone(),
                response.status().as_u16(),
            );
            response
        }
    }
}

/// Token check, rate limit and failure injection, then the vendor's own handler.
fn gated(shared: &Shared, vendor: Vendor, ctx: &http::Ctx<'_>) -> Response {
    if let Some(endpoint) = oauth::endpoint(vendor, ctx) {
        let mut server = lock(&shared.oauth);
        return match endpoint {
            oauth::Endpoint::Authorize => server.authorize(vendor, ctx),
            oauth::Endpoint::Token => server.token(vendor, ctx),
        };
    }
    let admission = if oauth::carries_issued_token(ctx) {
        lock(&shared.oauth).admit(vendor, ctx)
    } else {
        oauth::Admission::NotOurs
    };
    match admission {
        oauth::Admission::Expired => {
            return match vendor {
                Vendor::Calendly => calendly::unauthenticated(),
                Vendor::Webex => webex::unauthorized(ctx),
                Vendor::Scim => scim::unauthorized(),
            }
        }
        oauth::Admission::MissingScope(scope) => {
            return match vendor {
                Vendor::Calendly => calendly::missing_scope(scope),
                Vendor::Webex | Vendor::Scim => webex::forbidden(ctx),
            }
        }
        oauth::Admission::Allowed | oauth::Admission::NotOurs => {}
    }
    if let (Some(token), oauth::Admission::NotOurs) = (&shared.token, admission) {
        if !ctx.has_bearer(token) {
            return match vendor {
                Vendor::Calendly => calendly::unauthenticated(),
                Vendor::Webex => webex::unauthorized(ctx),
                Vendor::Scim => scim::unauthorized(),
            };
        }
    }
    let window = shared.limits.take(vendor);
    let mut response = match window {
        Some(w) if w.exceeded => match vendor {
            Vendor::Calendly => calendly::too_many_requests(),
            Vendor::Webex => webex::too_many_requests(ctx, w.reset_secs),
            Vendor::Scim => scim::too_many_requests(w.reset_secs),
        },
        _ if shared.faults.fail() => match vendor {
            Vendor::Calendly => calendly::unavailable(),
            Vendor::Webex => webex::unavailable(ctx),
            Vendor::Scim => scim::unavailable(),
        },
        _ => match vendor {
            Vendor::Calendly => calendly::handle(&shared.world.calendly, ctx),
            Vendor::Webex => webex::handle(&shared.world.webex, ctx),
            Vendor::Scim => scim::handle(&shared.world.scim, ctx),
        },
    };
    if let (Vendor::Calendly, Some(w)) = (vendor, window) {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", HeaderValue::from(w.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(w.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(w.reset_secs));
    }
    response
}

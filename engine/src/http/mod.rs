//! The HTTP layer: every preset action performed as the vendor documents it, with credentials,
//! retries, rate limits, pagination and redaction handled here, once, for every workflow.
//!
//! [`Client`] is cheap to clone (an `Arc` inside) and is meant to be shared by every run: it holds
//! one reqwest connection pool (rustls, connect and request timeouts), the compiled presets, the
//! credentials with their OAuth2 token caches (and, for refresh tokens, the [`tokens`] store they
//! share with other processes), one [`RateLimiter`] and one connection cap per
//! credential (made with the client, not looked up per call), the [`Redactor`] and the [`Clock`]. The cap is a semaphore a request holds
//! from sending until its body is read (`max_connections`, 64 by default), so 10,000 runs in flight
//! share 64 pooled connections instead of opening 10,000 sockets to one vendor; waits for a retry
//! or a 429 do not hold it. A call goes through three steps an executor can use separately:
//!
//! 1. [`Client::resolve_inputs`]: `with:` values, preset defaults over the workflow context, the
//!    subject record's fields;
//! 2. [`Client::render`]: the concrete [`RenderedRequest`] (for `--dry-run` and history, shown
//!    and stored through [`Redactor::request`]);
//! 3. [`Client::call`] (or [`Client::send_rendered`] with the request from step 2): sends it with a [`CallOptions`] retry policy and timeout, follows pagination
//!    for `paginate` actions, performs read-modify-write for `merge` actions (Webex Update User is a
//!    GET then a PUT), and returns an [`Exchange`] or a typed [`CallError`].
//!
//! Retry rules: a connect error (the request provably never left) is retried for every method; a
//! timeout or broken connection, and 502/503/504, only for methods other than POST; 429 for every
//! method, after the vendor's own wait (`Retry-After`, or Calendly's `X-RateLimit-Reset` seconds)
//! during which the credential's limiter holds back every other run too. A 401 on an OAuth2
//! credential drops the cached token and tries once more with a fresh one.
//!
//! Nothing returned or logged here carries a secret: headers are redacted by name, and every
//! secret the client has resolved or been issued is redacted by value (see [`redact`]).

mod auth;
mod error;
pub mod paginate;
mod ratelimit;
pub mod redact;
pub mod request;
mod retry;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, SemaphorePermit};

pub use self::auth::{Authorization, Credential, Credentials, Secret};
pub use self::error::{CallError, RenderPart, TransportKind, VendorError};
pub use self::ratelimit::RateLimiter;
pub use self::redact::Redactor;
pub use self::request::RenderedRequest;
pub use self::retry::{Clock, RetryPolicy, VirtualTime};
pub use self::tokens::TokenStore;
pub use crate::config::CredentialName;

use self::paginate::NextPage;
use crate::config::CredentialConfig;
use crate::preset::{Action, Method, PresetId, PresetRegistry, Vendor};
use crate::template::TemplateEngine;

/// Per-call settings (a block's `retry:` and `timeout:`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallOptions {
    pub retry: RetryPolicy,
    /// The time limit of each attempt, from sending to the end of the body.
    pub timeout: Duration,
    /// The most pages a `paginate` action may fetch before it fails.
    pub max_pages: u32,
}

impl Default for CallOptions {
    fn default() -> CallOptions {
        CallOptions {
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
            max_pages: 1000,
        }
    }
}

/// A vendor's answer, redacted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case; sensitive ones show as `[redacted]`.
    pub headers: IndexMap<String, String>,
    /// The JSON body, a string for a non-JSON body, `null` for none. For a `paginate` action, the
    /// first page's body with its item list replaced by the items of every page.
    pub body: Value,
    /// For `paginate` actions and actions that declare `items`: the items, from every page.
    #[serde(skip)]
    pub items: Option<Vec<Value>>,
    /// How many pages were fetched.
    #[serde(skip)]
    pub pages: u32,
    /// The body's size on the wire in bytes, every page's (a bound for history's body cap).
    #[serde(skip)]
    pub wire_len: usize,
}

/// A successful call: what was sent (the first request, for a paginated one) and what came back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exchange {
    pub request: RenderedRequest,
    pub response: Response,
    /// HTTP requests sent in all (retries, pages and a merge's read included).
    #[serde(skip)]
    pub attempts: u32,
}

/// The shared vendor client.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    presets: Arc<PresetRegistry>,
    credentials: Credentials,
    engine: TemplateEngine,
    redactor: Redactor,
    clock: Clock,
    /// Each credential's rate limiter and connection cap, made with the client.
    limits: HashMap<CredentialName, Limits>,
}

/// One call's fixed parts.
struct Target<'a> {
    vendor: &'a Vendor,
    action: &'a Action,
    credential: &'a Arc<Credential>,
    base_url: String,
    token_url: Option<String>,
    limiter: Option<Arc<RateLimiter>>,
    /// Permits for requests open at once; `None` when the credential has no cap.
    connections: Option<Arc<Semaphore>>,
}

impl Target<'_> {
    /// Waits for a free connection under the credential's cap (at once when it has none).
    async fn connection(&self) -> Option<SemaphorePermit<'_>> {
        // The semaphore is never closed, so `acquire` fails only if it were.
        self.connections.as_ref()?.acquire().await.ok()
    }
}

/// A response before it is judged.
struct Raw {
    status: u16,
    headers: HeaderMap,
    body: Value,
    len: usize,
}

impl Client {
    /// A client on real time.
    pub fn new(
        presets: Arc<PresetRegistry>,
        credentials: Credentials,
    ) -> Result<Client, CallError> {
        Client::with_clock(presets, credentials, Clock::default())
    }

    /// A client whose waits (backoff, 429, rate limit) go through `clock`.
    pub fn with_clock(
        presets: Arc<PresetRegistry>,
        credentials: Credentials,
        clock: Clock,
    ) -> Result<Client, CallError> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            // `pool_max_idle_per_host` stays at reqwest's default (no limit, so never below a
            // credential's `max_connections`): a capped credential's connections are all kept
            // for reuse by the requests waiting for one.
            .user_agent(concat!("blockyard/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| CallError::Setup {
                message: transport_message(&err),
            })?;
        let limits = credentials
            .iter()
            .map(|cred| {
                let vendor = presets.vendor(&cred.config.vendor);
                (
                    cred.config.name.clone(),
                    Limits::of(&cred.config, vendor, &clock),
                )
            })
            .collect();
        // Every secret known before anything is rendered, so a request shown first is redacted.
        let redactor = Redactor::default();
        credentials
            .iter()
            .for_each(|cred| cred.register_secrets(&redactor));
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                presets,
                credentials,
                engine: TemplateEngine::new(),
                redactor,
                clock,
                limits,
            }),
        })
    }

    pub fn presets(&self) -> &PresetRegistry {
        &self.inner.presets
    }

    pub fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }

    /// The redactor holding every secret this client has seen; use it on anything that may
    /// quote a request (logs, history).
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    fn action(&self, id: &PresetId) -> Result<(&Vendor, &Action), CallError> {
        let unknown = || CallError::UnknownAction {
            action: id.to_string(),
        };
        let vendor = self.inner.presets.vendor(&id.vendor).ok_or_else(unknown)?;
        let action = vendor.actions.get(&id.action).ok_or_else(unknown)?;
        Ok((vendor, action))
    }

    fn target<'a>(
        &'a self,
        id: &PresetId,
        credential: &CredentialName,
    ) -> Result<Target<'a>, CallError> {
        let (vendor, action) = self.action(id)?;
        let cred =
            self.inner
                .credentials
                .get(credential)
                .ok_or_else(|| CallError::UnknownCredential {
                    credential: credential.clone(),
                })?;
        if cred.config.vendor != vendor.spec.vendor {
            return Err(CallError::WrongVendor {
                credential: credential.clone(),
                action: id.clone(),
                actual: cred.config.vendor.clone(),
                expected: vendor.spec.vendor.clone(),
            });
        }
        let base_url = cred
            .config
            .base_url
            .clone()
            .or_else(|| vendor.spec.base_url.clone())
            .ok_or_else(|| CallError::NoBaseUrl {
                vendor: vendor.spec.vendor.clone(),
                credential: credential.clone(),
            })?;
        let token_url = cred
            .config
            .token_url
            .clone()
            .or_else(|| vendor.spec.token_url.clone());
        let limits = self.inner.limits.get(credential);
        let limiter = limits.and_then(|l| l.limiter.clone());
        let connections = limits.and_then(|l| l.connections.clone());
        Ok(Target {
            vendor,
            action,
            credential: cred,
            base_url,
            token_url,
            limiter,
            connections,
        })
    }

    /// Resolves `id`'s inputs from `given` (a block's rendered `with:`), the preset defaults
    /// rendered over `context` (`{record, vars, blocks, run}`), and `context.record`.
    pub fn resolve_inputs(
        &self,
        id: &PresetId,
        given: &Map<String, Value>,
        context: &Value,
    ) -> Result<Map<String, Value>, CallError> {
        let (_, action) = self.action(id)?;
        request::resolve_inputs(&self.inner.engine, action, given, context)
    }

    /// The request `call` would send first, without sending it (no secret in it).
    pub fn render(
        &self,
        id: &PresetId,
        credential: &CredentialName,
        inputs: &Map<String, Value>,
    ) -> Result<RenderedRequest, CallError> {
        let target = self.target(id, credential)?;
        self.render_target(&target, target.action, inputs)
    }

    fn render_target(
        &self,
        target: &Target<'_>,
        action: &Action,
        inputs: &Map<String, Value>,
    ) -> Result<RenderedRequest, CallError> {
        let mut request = request::render(
            &self.inner.engine,
            target.vendor,
            action,
            &target.base_url,
            inputs,
            true,
        )?;
        if let Some(merge) = &action.spec.merge {
            let read = &target.vendor.actions[&merge.read];
            let read = request::render(
                &self.inner.engine,
                target.vendor,
                read,
                &target.base_url,
                inputs,
                true,
            )?;
            request.merge_read = Some(Box::new(read));
        }
        Ok(request)
    }

    /// Performs `id` with `credential` and resolved `inputs`.
    pub async fn call(
        &self,
        id: &PresetId,
        credential: &CredentialName,
        inputs: &Map<String, Value>,
        options: &CallOptions,
    ) -> Result<Exchange, CallError> {
        let request = self.render(id, credential, inputs)?;
        self.send_rendered(id, credential, request, options).await
    }

    /// Sends a request [`Client::render`] rendered for the same action and credential, as
    /// [`Client::call`] does: a caller that keeps the request (the executor records it) renders
    /// it once.
    pub async fn send_rendered(
        &self,
        id: &PresetId,
        credential: &CredentialName,
        mut request: RenderedRequest,
        options: &CallOptions,
    ) -> Result<Exchange, CallError> {
        let target = self.target(id, credential)?;
        let mut attempts = 0;
        if let Some(read) = request.merge_read.clone() {
            let merge = target
                .action
                .spec
                .merge
                .as_ref()
                .expect("merge_read implies merge");
            let url = read.full_url();
            // Boxed, as the paging below: the common call's future carries room for one send.
            let raw = Box::pin(self.send(&target, &read, &url, options, &mut attempts)).await?;
            let current = self.judge(&target, raw, false)?;
            let changes = request.body.take().unwrap_or(Value::Null);
            request.body = Some(request::merge(
                &current.body,
                &changes,
                &merge.drop,
                &merge.keep,
            ));
        }
        let response = if target.action.spec.paginate && target.vendor.spec.pagination.is_some() {
            Box::pin(self.collect_pages(&target, &request, options, &mut attempts)).await?
        } else {
            let url = request.full_url();
            let raw = self
                .send(&target, &request, &url, options, &mut attempts)
                .await?;
            self.judge(&target, raw, true)?
        };
        Ok(Exchange {
            request,
            response,
            attempts,
        })
    }

    /// Every page of a `paginate` action.
    async fn collect_pages(
        &self,
        target: &Target<'_>,
        first: &RenderedRequest,
        options: &CallOptions,
        attempts: &mut u32,
    ) -> Result<Response, CallError> {
        let style = target
            .vendor
            .spec
            .pagination
            .expect("checked by the caller");
        let pointer = target.action.spec.items.as_deref();
        let mut page = first.clone();
        let mut url = page.full_url();
        let mut start_index = 1;
        let mut items = Vec::new();
        let mut head: Option<Response> = None;
        let mut pages = 0;
        let mut wire_len = 0;
        loop {
            pages += 1;
            if pages > options.max_pages {
                return Err(CallError::TooManyPages {
                    action: target.action.id.clone(),
                    max: options.max_pages,
                });
            }
            let raw = self.send(target, &page, &url, options, attempts).await?;
            let headers = raw.headers.clone();
            let response = self.judge(target, raw, false)?;
            wire_len += response.wire_len;
            let received = response.items.as_ref().map_or(0, Vec::len);
            let next = paginate::next_page(
                style,
                &target.base_url,
                &headers,
                &response.body,
                start_index,
                received,
            );
            items.extend(response.items.clone().unwrap_or_default());
            if head.is_none() {
                head = Some(response);
            }
            match next {
                NextPage::Done => break,
                NextPage::Url(next) => url = next,
                NextPage::Param { name, value } => {
                    if name == "startIndex" {
                        start_index = value.parse().unwrap_or(start_index);
                    }
                    page.set_query(name, value);
                    url = page.full_url();
                }
                NextPage::Foreign(next) => {
                    return Err(CallError::ForeignPage {
                        action: target.action.id.clone(),
                        url: self.inner.redactor.text(&next),
                        base: target.base_url.clone(),
                    })
                }
            }
        }
        let mut response = head.expect("at least one page");
        if let Some(slot) = pointer.and_then(|p| response.body.pointer_mut(p)) {
            *slot = Value::Array(items.clone());
        }
        response.items = Some(items);
        response.pages = pages;
        response.wire_len = wire_len;
        Ok(response)
    }

    /// Turns a response into success or the right error. `final_step` applies the action's
    /// success statuses and `not_found` rule (a merge's read and pages use only the generic ones).
    fn judge(
        &self,
        target: &Target<'_>,
        raw: Raw,
        final_step: bool,
    ) -> Result<Response, CallError> {
        let spec = &target.action.spec;
        let redactor = &self.inner.redactor;
        let mut body = raw.body;
        normalize_booleans(
            &mut body,
            &target.vendor.spec.boolean_fields,
            spec.items.as_deref(),
        );
        redactor.json_in_place(&mut body);
        let headers: IndexMap<String, String> = raw
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                (
                    name.as_str().to_owned(),
                    redactor.header(name.as_str(), &value),
                )
            })
            .collect();
        let items = spec
            .items
            .as_deref()
            .and_then(|p| body.pointer(p).and_then(Value::as_array).cloned());
        let status = raw.status;
        let response = Response {
            status,
            headers,
            body,
            items,
            pages: 1,
            wire_len: raw.len,
        };
        let action = target.action.id.clone();
        let vendor_error = |response: &Response| {
            let mut error = VendorError::parse(
                &target.vendor.spec.vendor,
                target.vendor.spec.errors,
                status,
                &response.body,
                response.headers.get("trackingid").cloned(),
            );
            error.retry_after = wait_from_headers(target, &raw.headers);
            Box::new(error)
        };
        if spec.unsupported.contains(&status) {
            return Err(CallError::Unsupported {
                action,
                error: vendor_error(&response),
                response: Box::new(response),
            });
        }
        if status == 404 {
            return Err(CallError::NotFound {
                action,
                response: Box::new(response),
            });
        }
        if !(200..300).contains(&status) {
            return Err(CallError::Vendor {
                action,
                error: vendor_error(&response),
                response: Box::new(response),
            });
        }
        if final_step {
            if !spec.success.is_empty() && !spec.success.contains(&status) {
                return Err(CallError::UnexpectedStatus {
                    action,
                    expected: spec.success.clone(),
                    response: Box::new(response),
                });
            }
            let empty = spec
                .not_found
                .as_ref()
                .and_then(|nf| nf.empty.as_deref())
                .and_then(|p| response.body.pointer(p))
                .is_some_and(|list| list.as_array().is_some_and(Vec::is_empty));
            if empty {
                return Err(CallError::NotFound {
                    action,
                    response: Box::new(response),
                });
            }
        }
        Ok(response)
    }

    /// Sends one request to `url`, retrying as the rules in the module docs say.
    async fn send(
        &self,
        target: &Target<'_>,
        request: &RenderedRequest,
        url: &str,
        options: &CallOptions,
        attempts: &mut u32,
    ) -> Result<Raw, CallError> {
        let inner = &self.inner;
        let clock = &inner.clock;
        let started = clock.now();
        let body = request
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).expect("a JSON value serializes"));
        let method = reqwest_method(request.method);
        let is_post = request.method == Method::Post;
        // The URL as logs and errors show it, computed only when one is written.
        let shown_url = || inner.redactor.text(url);
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            *attempts += 1;
            if let Some(limiter) = &target.limiter {
                Box::pin(limiter.acquire()).await;
            }
            // A call waiting for a connection holds nothing built yet (10,000 runs may wait),
            // and its token is read after the wait, not before.
            let connection = target.connection().await;
            // Boxed: an OAuth2 token fetch is a whole HTTP exchange, rarely needed.
            let auth = Box::pin(target.credential.authorize(
                &inner.http,
                target.token_url.as_deref(),
                &inner.redactor,
            ))
            .await?;
            let mut builder = inner
                .http
                .request(method.clone(), url)
                .timeout(options.timeout);
            for (name, value) in &request.headers {
                if !name.eq_ignore_ascii_case("authorization") {
                    builder = builder.header(name, value);
                }
            }
            builder = builder.header(reqwest::header::AUTHORIZATION, auth.header.expose());
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let sent_at = clock.now();
            // Boxed: the HTTP exchange's state exists only while it runs, not in every call's
            // future (most of which may be waiting for a connection).
            let result = Box::pin(exchange(builder)).await;
            drop(connection);
            let (retryable, vendor_wait, outcome) = match result {
                Err(err) => {
                    let kind = if err.is_connect() {
                        TransportKind::Connect
                    } else if err.is_timeout() {
                        TransportKind::Timeout
                    } else {
                        TransportKind::Other
                    };
                    tracing::warn!(
                        action = %target.action.id,
                        method = request.method.as_str(),
                        url = %shown_url(),
                        attempt,
                        error = %kind,
                        "vendor call failed"
                    );
                    let error = CallError::Transport {
                        action: target.action.id.clone(),
                        method: request.method.as_str(),
                        url: shown_url(),
                        kind,
                        message: inner.redactor.text(&transport_message(&err)),
                    };
                    (kind == TransportKind::Connect || !is_post, None, Err(error))
                }
                Ok(raw) => {
                    tracing::info!(
                        action = %target.action.id,
                        method = request.method.as_str(),
                        url = %shown_url(),
                        status = raw.status,
                        attempt,
                        elapsed_ms = (clock.now() - sent_at).as_millis() as u64,
                        "vendor call"
                    );
                    match raw.status {
                        401 if target.credential.refreshable() && !refreshed => {
                            refreshed = true;
                            if let Some(token) = &auth.token {
                                Box::pin(target.credential.invalidate(token)).await;
                            }
                            tracing::info!(credential = %target.credential.name(), "oauth2: token refused, fetching a new one");
                            continue;
                        }
                        429 => {
                            let wait = wait_from_headers(target, &raw.headers);
                            if let (Some(limiter), Some(wait)) = (&target.limiter, wait) {
                                Box::pin(limiter.pause_for(wait)).await;
                            }
                            (true, wait, Ok(raw))
                        }
                        502..=504 => (!is_post, None, Ok(raw)),
                        _ => return Ok(raw),
                    }
                }
            };
            if retryable {
                let elapsed = clock.now().saturating_sub(started);
                if let Some(wait) = options.retry.next_wait(attempt, elapsed, vendor_wait) {
                    tracing::info!(
                        action = %target.action.id,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "retrying"
                    );
                    Box::pin(clock.sleep(wait)).await;
                    continue;
                }
            }
            return outcome;
        }
    }
}

/// The bounds every call with one credential shares: its rate limiter and its connection cap,
/// from the credential's settings over its vendor preset's (each `None` when off).
#[derive(Debug, Default)]
struct Limits {
    limiter: Option<Arc<RateLimiter>>,
    connections: Option<Arc<Semaphore>>,
}

impl Limits {
    fn of(credential: &CredentialConfig, vendor: Option<&Vendor>, clock: &Clock) -> Limits {
        let per_minute = match credential.rate_limit_per_minute {
            Some(0) => None,
            Some(n) => Some(n),
            None => vendor
                .and_then(|v| v.spec.rate_limit.as_ref())
                .map(|limit| limit.per_minute),
        };
        Limits {
            limiter: per_minute.map(|n| Arc::new(RateLimiter::new(n, clock.clone()))),
            connections: credential
                .max_connections
                .map(|max| Arc::new(Semaphore::new((max as usize).min(Semaphore::MAX_PERMITS)))),
        }
    }
}

/// Sends a request and reads its whole body.
async fn exchange(builder: reqwest::RequestBuilder) -> Result<Raw, reqwest::Error> {
    let mut response = builder.send().await?;
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    let bytes = response.bytes().await?;
    Ok(Raw {
        status,
        headers,
        len: bytes.len(),
        body: decode(&bytes),
    })
}

fn reqwest_method(method: Method) -> reqwest::Method {
    match method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
    }
}

/// How long the vendor asked to wait: the preset's `wait_header` (Calendly `X-RateLimit-Reset`,
/// seconds until the reset), else `Retry-After` (seconds or an HTTP date).
fn wait_from_headers(target: &Target<'_>, headers: &HeaderMap) -> Option<Duration> {
    let named = target
        .vendor
        .spec
        .rate_limit
        .as_ref()
        .map(|r| r.wait_header.as_str());
    named
        .into_iter()
        .chain(["retry-after"])
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .find_map(parse_wait)
}

fn parse_wait(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    Some(Duration::from_secs(secs.max(0) as u64))
}

/// JSON when the body parses as JSON, else text; `null` when empty.
fn decode(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `"true"`/`"false"` → booleans for `fields`, at the top level and in each item.
fn normalize_booleans(body: &mut Value, fields: &[String], items: Option<&str>) {
    if fields.is_empty() {
        return;
    }
    let fix = |value: &mut Value| {
        if let Value::Object(map) = value {
            for field in fields {
                if let Some(slot) = map.get_mut(field) {
                    match slot.as_str() {
                        Some("true") => *slot = Value::Bool(true),
                        Some("false") => *slot = Value::Bool(false),
                        _ => {}
                    }
                }
            }
        }
    };
    fix(body);
    if let Some(Value::Array(list)) = items.and_then(|p| body.pointer_mut(p)) {
        list.iter_mut().for_each(fix);
    }
}

/// A reqwest error as one lowercase line, with its causes but without the URL.
pub(crate) fn transport_message(err: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        parts.push(if err.is_timeout() {
            "operation timed out".to_owned()
        } else {
            "request failed".to_owned()
        });
    }
    parts.join(": ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_seconds() {
        assert_eq!(parse_wait("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_wait(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_wait("soon"), None);
    }

    #[test]
    fn string_booleans_become_booleans() {
        let mut body =
            serde_json::json!({"loginEnabled": "false", "items": [{"invitePending": "true"}]});
        normalize_booleans(
            &mut body,
            &["loginEnabled".into(), "invitePending".into()],
            Some("/items"),
        );
        assert_eq!(
            body,
            serde_json::json!({"loginEnabled": false, "items": [{"invitePending": true}]})
        );
    }
}

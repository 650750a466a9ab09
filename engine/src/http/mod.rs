//! The HTTP layer: every preset action performed as the vendor documents it, with credentials,
//! retries, rate limits, pagination and redaction handled here, once, for every workflow.
//!
//! [`Client`] is cheap to clone (an `Arc` inside) and is meant to be shared by every run: it holds
//! one reqwest connection pool (rustls, connect and request timeouts), the compiled presets, the
//! credentials with their OAuth2 token caches (and, for refresh tokens, the [`tokens`] store they
//! share with other processes), one [`RateLimiter`] and one connection cap per
//! credential (made with the client, not looked up per call; a service on PostgreSQL makes its
//! client with [`Client::on_store`], whose tokens and rate budgets every worker shares), the [`Redactor`] and the [`Clock`]. The cap is a semaphore a request holds
//! from sending until its body is read (`max_connections`, 64 by default), so 10,000 runs in flight
//! share 64 pooled connections instead of opening 10,000 sockets to one vendor; waits for a retry
//! or a 429 do not hold it. A call goes through three steps an executor can use separately:
//!
//! 1. [`Client::resolve_inputs`]: `with:` values, preset defaults over the workflow context, the
//!    subject record's fields;
//! 2. [`Client::render`]: the concrete [`RenderedRequest`] (for `--dry-run` and history, shown
//!    and stored through [`Redactor::request`]), or [`Client::render_patched`] with a block's
//!    advanced-mode [`RequestPatch`] applied;
//! 3. [`Client::call`] (or [`Client::send_rendered`] with the request from step 2): sends it with a [`CallOptions`] retry policy and timeout, follows pagination
//!    for `paginate` actions, performs read-modify-write for `merge` actions (Webex Update User is a
//!    GET then a PUT), and returns an [`Exchange`] or a typed [`CallError`].
//!
//! Paging always ends: the next page is read from the response as the vendor sent it (before
//! redaction, which would turn Calendly's `next_page_token` into `[redacted]`), a next page this
//! call has already fetched stops it ([`CallError::RepeatedPage`]), and so does a list longer than
//! the credential's `max_pages` (10,000 by default, [`CallError::TooManyPages`]).
//!
//! Retry rules: a connect error (the request provably never left) is retried for every method; a
//! timeout or broken connection, and 502/503/504, only for methods other than POST; 429 for every
//! method, after the vendor's own wait (`Retry-After`, or Calendly's `X-RateLimit-Reset` seconds)
//! during which the credential's limiter holds back every other run too. A vendor's wait is read
//! defensively (any number, date or garbage; never a panic) and honoured only up to the
//! credential's `max_wait` (15 minutes by default): a longer ask fails the call at once with the
//! transient [`CallError::WaitTooLong`], and pauses nothing. A 401 on an OAuth2 credential drops
//! the cached token and tries once more with a fresh one.
//!
//! A `transport: smtp` vendor (`email.send`) renders the same way; [`smtp`] sends its request as
//! one mail message instead of an HTTP request.
//!
//! [`login`] is `blockyard auth login`'s protocol (authorization code with PKCE, through the
//! `oauth2` crate over a reqwest client), which fills the token store the credentials refresh from.
//!
//! Nothing returned or logged here carries a secret: headers are redacted by name, and every
//! secret the client has resolved or been issued is redacted by value (see [`redact`]).

mod auth;
pub(crate) mod error;
pub mod login;
pub mod paginate;
mod ratelimit;
pub mod redact;
pub mod request;
mod retry;
pub mod smtp;
pub use crate::store::tokens;

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
pub use self::ratelimit::{Bucket, LocalBudget, RateLimiter};
pub use self::redact::Redactor;
pub use self::request::{RenderedRequest, RequestPatch};
pub use self::retry::{Clock, RetryPolicy, VirtualTime};
pub use self::tokens::TokenStore;
pub use crate::config::CredentialName;

use self::paginate::NextPage;
use crate::config::CredentialConfig;
use crate::preset::{Action, AuthKind, Method, PresetId, PresetRegistry, Transport, Vendor};
use crate::template::TemplateEngine;

/// Per-call settings (a block's `retry:` and `timeout:`). The bounds that belong to a vendor
/// account rather than to a call (`max_pages`, `max_wait`) are the credential's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallOptions {
    pub retry: RetryPolicy,
    /// The time limit of each attempt, from sending to the end of the body.
    pub timeout: Duration,
}

impl Default for CallOptions {
    fn default() -> CallOptions {
        CallOptions {
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
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
        Client::build(presets, credentials, clock, None)
    }

    /// The client of a service on `store`: on sled, [`Client::with_clock`] (the token store
    /// `credentials` were made with, in-process rate limiters); on PostgreSQL, every worker of
    /// the store shares its OAuth tokens (the credentials that keep theirs in a token store keep
    /// them in its `tokens` table, refreshed under the credential's row lock,
    /// [`crate::store::postgres::tokens`]) and each credential's request budget
    /// ([`RateLimiter::shared`]).
    pub fn on_store(
        presets: Arc<PresetRegistry>,
        credentials: Credentials,
        store: &crate::store::any::AnyStore,
        clock: Clock,
    ) -> Result<Client, CallError> {
        use crate::store::postgres::{budget::PgBudget, tokens::PgTokenStore};
        match store {
            crate::store::any::AnyStore::Sled(_) => Client::with_clock(presets, credentials, clock),
            crate::store::any::AnyStore::Postgres(pg) => Client::build(
                presets,
                credentials.keeping_tokens_in(Arc::new(PgTokenStore::new(pg))),
                clock,
                Some(PgBudget::new(pg)),
            ),
        }
    }

    fn build(
        presets: Arc<PresetRegistry>,
        credentials: Credentials,
        clock: Clock,
        budget: Option<crate::store::postgres::budget::PgBudget>,
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
                    Limits::of(&cred.config, vendor, &clock, budget.as_ref()),
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
        // `auth: url`: the secret URL is the whole address (the redactor knows it, so history,
        // logs and errors show `[redacted]` where it appears).
        let secret_url = if cred.config.auth == AuthKind::Url {
            cred.secret_url(&self.inner.redactor)?
        } else {
            None
        };
        if let Some(url) = &secret_url {
            let valid = url::Url::parse(url.expose())
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !valid {
                return Err(CallError::BadSecretUrl {
                    credential: credential.clone(),
                });
            }
            // Requests go to it less a trailing `/`: that form is a secret too.
            self.inner.redactor.add(url.expose().trim_end_matches('/'));
        }
        let base_url = secret_url
            .map(|url| url.expose().to_owned())
            .or_else(|| cred.config.base_url.clone())
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
        self.resolve_inputs_with(id, given, context, &[])
    }

    /// [`Client::resolve_inputs`], where a required input named in `optional` may stay empty (a
    /// block's advanced mode replaced every part of the request that read it).
    pub fn resolve_inputs_with(
        &self,
        id: &PresetId,
        given: &Map<String, Value>,
        context: &Value,
        optional: &[String],
    ) -> Result<Map<String, Value>, CallError> {
        let (_, action) = self.action(id)?;
        request::resolve_inputs(&self.inner.engine, action, given, context, optional)
    }

    /// The request `call` would send first, without sending it (no secret in it).
    pub fn render(
        &self,
        id: &PresetId,
        credential: &CredentialName,
        inputs: &Map<String, Value>,
    ) -> Result<RenderedRequest, CallError> {
        self.render_patched(id, credential, inputs, None)
    }

    /// [`Client::render`] with a block's advanced-mode `patch` applied: the request a block
    /// sends, shows in a dry run and records.
    pub fn render_patched(
        &self,
        id: &PresetId,
        credential: &CredentialName,
        inputs: &Map<String, Value>,
        patch: Option<&RequestPatch>,
    ) -> Result<RenderedRequest, CallError> {
        let target = self.target(id, credential)?;
        let mut request = self.render_target(&target, target.action, inputs)?;
        if let Some(patch) = patch {
            request::apply(
                &mut request,
                patch,
                target.vendor,
                target.action,
                &target.base_url,
            )?;
        }
        Ok(request)
    }

    fn render_target(
        &self,
        target: &Target<'_>,
        action: &Action,
        inputs: &Map<String, Value>,
    ) -> Result<RenderedRequest, CallError> {
        // `auth: url` sends no `Authorization` header, so the request does not show one.
        let smtp = target.vendor.spec.transport == Transport::Smtp;
        let sends_auth = target.credential.config.auth != AuthKind::Url && !smtp;
        let mut request = request::render(
            &self.inner.engine,
            target.vendor,
            action,
            &target.base_url,
            inputs,
            sends_auth,
        )?;
        if let Some(merge) = &action.spec.merge {
            let read = &target.vendor.actions[&merge.read];
            let read = request::render(
                &self.inner.engine,
                target.vendor,
                read,
                &target.base_url,
                inputs,
                sends_auth,
            )?;
            request.merge_read = Some(Box::new(read));
        }
        if smtp {
            // A message has no HTTP headers: its parts are the body.
            request.headers.clear();
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
        // Observes the call's duration however it ends (`blockyard_block_duration_seconds`).
        let _timed = Timed {
            preset: id,
            started: std::time::Instant::now(),
        };
        let mut attempts = 0;
        if target.vendor.spec.transport == Transport::Smtp {
            // One message, one attempt: a durable `retry:` may send it again.
            let response = Box::pin(smtp::send(
                id,
                target.credential,
                &self.inner.redactor,
                &request,
                options.timeout,
            ))
            .await?;
            return Ok(Exchange {
                request,
                response,
                attempts: 1,
            });
        }
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

    /// Every page of a `paginate` action: at most the credential's `max_pages`, and never a page
    /// this call has already fetched (a vendor that repeats its cursor would be followed forever).
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
        let max_pages = target.credential.config.max_pages;
        let pointer = target.action.spec.items.as_deref();
        let mut page = first.clone();
        let mut url = page.full_url();
        // The URLs of the pages before the current one, with their page numbers.
        let mut fetched: HashMap<String, u32> = HashMap::new();
        let mut start_index = 1;
        let mut items = Vec::new();
        let mut head: Option<Response> = None;
        let mut pages = 0;
        let mut wire_len = 0;
        loop {
            pages += 1;
            let raw = self.send(target, &page, &url, options, attempts).await?;
            // The next page as the vendor wrote it: `judge` redacts fields named like a secret,
            // Calendly's `next_page_token` among them.
            let received = pointer
                .and_then(|p| raw.body.pointer(p))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let next = paginate::next_page(
                style,
                &target.base_url,
                &raw.headers,
                &raw.body,
                start_index,
                received,
            );
            let mut response = self.judge(target, raw, false)?;
            wire_len += response.wire_len;
            items.extend(response.items.take().unwrap_or_default());
            if head.is_none() {
                head = Some(response);
            }
            let next = match next {
                NextPage::Done => break,
                NextPage::Url(next) => next,
                NextPage::Param { name, value } => {
                    if name == "startIndex" {
                        start_index = value.parse().unwrap_or(start_index);
                    }
                    page.set_query(name, value);
                    page.full_url()
                }
                NextPage::Foreign(next) => {
                    return Err(CallError::ForeignPage {
                        action: target.action.id.clone(),
                        url: self.inner.redactor.text(&next),
                        base: target.base_url.clone(),
                    })
                }
            };
            let again = if next == url {
                Some(pages)
            } else {
                fetched.get(&next).copied()
            };
            if let Some(again) = again {
                return Err(CallError::RepeatedPage {
                    action: target.action.id.clone(),
                    pages,
                    again,
                });
            }
            if pages >= max_pages {
                return Err(CallError::TooManyPages {
                    action: target.action.id.clone(),
                    credential: target.credential.config.name.clone(),
                    max: max_pages,
                });
            }
            fetched.insert(std::mem::replace(&mut url, next), pages);
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
        let Raw {
            status,
            headers,
            body,
            len,
        } = raw;
        let response = self.kept(target, status, &headers, body, len);
        let action = target.action.id.clone();
        let vendor_error = |response: &Response| {
            let mut error = VendorError::parse(
                &target.vendor.spec.vendor,
                target.vendor.spec.errors,
                status,
                &response.body,
                response.headers.get("trackingid").cloned(),
            );
            error.retry_after = wait_from_headers(target, &headers).map(|asked| asked.wait);
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

    /// A response as it may be kept and shown: string booleans normalized, body and headers
    /// redacted, the action's items picked out.
    fn kept(
        &self,
        target: &Target<'_>,
        status: u16,
        headers: &HeaderMap,
        mut body: Value,
        len: usize,
    ) -> Response {
        let spec = &target.action.spec;
        let redactor = &self.inner.redactor;
        normalize_booleans(
            &mut body,
            &target.vendor.spec.boolean_fields,
            spec.items.as_deref(),
        );
        redactor.json_in_place(&mut body);
        let headers: IndexMap<String, String> = headers
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
        Response {
            status,
            headers,
            body,
            items,
            pages: 1,
            wire_len: len,
        }
    }

    /// A 429 whose wait is longer than the credential's `max_wait`, as the error that fails the
    /// call at once (the limiter is not paused: the ask is not honoured at all).
    fn wait_too_long(
        &self,
        target: &Target<'_>,
        header: String,
        value: &str,
        asked: Duration,
        raw: Raw,
    ) -> CallError {
        let value: String = self
            .inner
            .redactor
            .text(value.trim())
            .chars()
            .take(64)
            .collect();
        let max = target.credential.config.max_wait;
        tracing::warn!(
            action = %target.action.id,
            header = %header,
            value = %value,
            max_wait_ms = max.as_millis() as u64,
            "the vendor asked for a longer wait than max_wait: not waiting"
        );
        CallError::WaitTooLong {
            action: target.action.id.clone(),
            credential: target.credential.config.name.clone(),
            header,
            value,
            asked,
            max,
            response: Box::new(self.kept(target, raw.status, &raw.headers, raw.body, raw.len)),
        }
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
            let metrics = crate::server::metrics::metrics();
            if attempt > 1 {
                metrics.vendor_retry(&target.action.id.vendor);
            }
            if let Some(limiter) = &target.limiter {
                let before = clock.now();
                Box::pin(limiter.acquire()).await;
                if clock.now() > before {
                    metrics.rate_limit_wait(&target.action.id.vendor);
                }
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
            if let Some(header) = &auth.header {
                builder = builder.header(reqwest::header::AUTHORIZATION, header.expose());
            }
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let sent_at = clock.now();
            // Boxed: the HTTP exchange's state exists only while it runs, not in every call's
            // future (most of which may be waiting for a connection).
            let result = Box::pin(exchange(builder)).await;
            drop(connection);
            metrics.vendor_request(
                &target.action.id.vendor,
                result.as_ref().ok().map(|raw| raw.status),
            );
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
                            let asked = wait_from_headers(target, &raw.headers);
                            if let Some(asked) =
                                asked.filter(|asked| asked.wait > target.credential.config.max_wait)
                            {
                                // Owned: the error takes the response, headers and all.
                                let (header, value) =
                                    (asked.header.to_owned(), asked.value.to_owned());
                                return Err(
                                    self.wait_too_long(target, header, &value, asked.wait, raw)
                                );
                            }
                            let wait = asked.map(|asked| asked.wait);
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

/// The bounds every call with one credential shares: its rate limiter (shared by every worker
/// on PostgreSQL, [`Client::on_store`]) and its connection cap, from the credential's settings
/// over its vendor preset's (each `None` when off).
#[derive(Debug, Default)]
struct Limits {
    limiter: Option<Arc<RateLimiter>>,
    connections: Option<Arc<Semaphore>>,
}

impl Limits {
    fn of(
        credential: &CredentialConfig,
        vendor: Option<&Vendor>,
        clock: &Clock,
        budget: Option<&crate::store::postgres::budget::PgBudget>,
    ) -> Limits {
        let per_minute = match credential.rate_limit_per_minute {
            Some(0) => None,
            Some(n) => Some(n),
            None => vendor
                .and_then(|v| v.spec.rate_limit.as_ref())
                .map(|limit| limit.per_minute),
        };
        Limits {
            limiter: per_minute.map(|n| {
                Arc::new(match budget {
                    Some(budget) => RateLimiter::shared(
                        n,
                        clock.clone(),
                        budget.clone(),
                        credential.vendor.as_str(),
                        credential.name.as_str(),
                    ),
                    None => RateLimiter::new(n, clock.clone()),
                })
            }),
            connections: credential
                .max_connections
                .map(|max| Arc::new(Semaphore::new((max as usize).min(Semaphore::MAX_PERMITS)))),
        }
    }
}

/// A call's duration, observed when it is dropped (on every path out of the call).
struct Timed<'a> {
    preset: &'a PresetId,
    started: std::time::Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        crate::server::metrics::metrics().block_took(self.preset, self.started.elapsed());
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
        Method::Head => reqwest::Method::HEAD,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
    }
}

/// A wait the vendor asked for, and the header that asked.
#[derive(Debug, Clone, Copy)]
struct AskedWait<'a> {
    /// The header's name as the preset (or RFC 9110) spells it.
    header: &'a str,
    value: &'a str,
    wait: Duration,
}

/// How long the vendor asked to wait: the preset's `wait_header` (Calendly `X-RateLimit-Reset`,
/// seconds until the reset), else `Retry-After` (seconds or an HTTP date).
fn wait_from_headers<'a>(target: &Target<'a>, headers: &'a HeaderMap) -> Option<AskedWait<'a>> {
    let named = target
        .vendor
        .spec
        .rate_limit
        .as_ref()
        .map(|r| r.wait_header.as_str());
    let now = chrono::Utc::now();
    named.into_iter().chain(["Retry-After"]).find_map(|header| {
        let value = headers.get(header)?.to_str().ok()?;
        let wait = parse_wait(value, now)?;
        Some(AskedWait {
            header,
            value,
            wait,
        })
    })
}

/// A wait header's value (RFC 9110 §10.2.3): delay-seconds or an HTTP date, read at `now`.
/// Whatever a vendor sends, this never panics: a decimal is read too; a number too large for a
/// `Duration` (`18446744073709551616`, `1e20`, `inf`) is `Duration::MAX`, past any `max_wait`; a
/// date in the past is no wait; a negative number, NaN or other text is no answer (`None`: the
/// computed backoff applies).
pub(crate) fn parse_wait(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits, so the one way to fail is a number past `u64::MAX`.
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let at = http_date(value)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// An HTTP date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or the obsolete RFC 850 and
/// asctime forms a recipient must still accept (RFC 9110 §5.6.7).
fn http_date(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&chrono::Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .into_iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(value, format).ok())
        .map(|at| at.and_utc())
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
    fn waits_parse_every_form_without_panicking() {
        let now = chrono::DateTime::parse_from_rfc3339("1994-11-06T08:49:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let wait = |value: &str| parse_wait(value, now);
        let secs = |n: u64| Some(Duration::from_secs(n));
        assert_eq!(wait("60"), secs(60));
        assert_eq!(wait(" 7 "), secs(7));
        assert_eq!(wait("2.5"), Some(Duration::from_millis(2_500)));
        assert_eq!(wait("999999999"), secs(999_999_999));
        assert_eq!(wait("18446744073709551615"), secs(u64::MAX));
        for huge in [
            "18446744073709551616",
            "99999999999999999999999",
            "1e20",
            "1e308",
            "inf",
        ] {
            assert_eq!(wait(huge), Some(Duration::MAX), "{huge}");
        }
        for no in ["-1", "-inf", "NaN", "soon", "", "1_000", "0x10"] {
            assert_eq!(wait(no), None, "{no}");
        }
        assert_eq!(wait("-0"), Some(Duration::ZERO));
        // The three HTTP date forms, 37 seconds after `now`; a date past is no wait.
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(wait(date), secs(37), "{date}");
        }
        assert_eq!(wait("Sat, 05 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(wait("Fri, 31 Dec 9999 23:59:59 GMT"), secs(252_618_189_059));
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

//! The vendors' OAuth 2.0 authorization servers, played by the sandbox: Calendly's
//! `/calendly/oauth/authorize` and `/calendly/oauth/token` (`auth.calendly.com/oauth/...` for
//! real), Webex's `/webex/v1/authorize` and `/webex/v1/access_token`.
//!
//! One registered app ([`OAuthConfig`]: client id, secret, the redirect URI, the scopes it was
//! granted) serves both vendors. The authorize page consents at once (no login form), or denies
//! when the `deny` control is set, redirecting with `code` and `state`, or `error=access_denied`.
//! It never redirects to a URI other than the registered one: a mismatch is a 400 page, as the
//! vendors show. A code lives 10 minutes, is single-use, and is bound to the redirect URI and the
//! PKCE challenge (S256) it was issued for. Refresh tokens rotate on use unless `rotate_refresh`
//! is off; access tokens expire after `access_ttl` or, to expire one in the middle of a run
//! without waiting, after `access_uses` requests or at `POST /_sandbox/oauth/expire`. Errors of the
//! token endpoint are RFC 6749's `{"error", "error_description"}`, which Calendly sends; Webex's
//! add its usual `message`, `errors` and `trackingId`.
//!
//! Vendor requests carrying an access token issued here are checked by [`OAuth::admit`]: an
//! expired or unknown `sbx-at-` token gets the vendor's 401, a token without the scope the route
//! needs gets its 403. A request with any other bearer token is left to the static `--token`
//! check, as before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{self, Ctx};
use super::Vendor;

/// The prefix of every access token the sandbox issues.
const ACCESS_PREFIX: &str = "sbx-at-";

/// How long an authorization code may be exchanged (Calendly's 10 minutes).
const CODE_TTL: Duration = Duration::from_secs(600);

/// The sandbox's registered OAuth app and how its tokens behave.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthConfig {
    pub client_id: String,
    pub client_secret: String,
    /// The one redirect URI registered for the app.
    pub redirect_uri: String,
    /// The scopes the app may be granted; a login asking for more gets only these (`None`: every
    /// scope asked for).
    pub scopes: Option<Vec<String>>,
    /// The `expires_in` of access tokens.
    pub access_ttl: Duration,
    /// How many vendor requests an access token serves before it expires (`None`: no limit).
    pub access_uses: Option<u32>,
    /// Whether a refresh spends the refresh token and issues a new one (Calendly's rule).
    pub rotate_refresh: bool,
    /// Whether the authorize page denies consent.
    pub deny: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            client_id: "sandbox-client".to_owned(),
            client_secret: "sandbox-client-secret".to_owned(),
            redirect_uri: crate::config::DEFAULT_REDIRECT_URI.to_owned(),
            scopes: None,
            access_ttl: Duration::from_secs(7200),
            access_uses: None,
            rotate_refresh: true,
            deny: false,
        }
    }
}

/// `POST /_sandbox/oauth`: changes the app's settings from now on (absent keys keep theirs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OAuthControl {
    #[serde(default)]
    deny: Option<bool>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    access_ttl_secs: Option<u64>,
    #[serde(default)]
    access_uses: Option<u32>,
    #[serde(default)]
    rotate_refresh: Option<bool>,
    #[serde(default)]
    redirect_uri: Option<String>,
}

struct Code {
    vendor: Vendor,
    redirect_uri: String,
    challenge: Option<String>,
    scopes: Vec<String>,
    issued: Instant,
}

struct Access {
    vendor: Vendor,
    scopes: Vec<String>,
    expires: Instant,
    uses_left: Option<u32>,
}

struct Grant {
    vendor: Vendor,
    scopes: Vec<String>,
}

/// The authorization server's state.
pub(crate) struct OAuth {
    pub(crate) config: OAuthConfig,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, Grant>,
    access: HashMap<String, Access>,
    issued: u64,
}

/// The OAuth endpoint a vendor path leads to, if any.
/// (Every vendor request passes here: it looks at the segments without allocating.)
pub(crate) fn endpoint(vendor: Vendor, ctx: &Ctx<'_>) -> Option<Endpoint> {
    let segment = |i: usize| ctx.segments.get(i).map(|s| s.as_ref());
    let (first, second, more) = (segment(0), segment(1), ctx.segments.len() > 2);
    if more {
        return None;
    }
    match (vendor, ctx.method, first, second) {
        (Vendor::Calendly, &Method::GET, Some("oauth"), Some("authorize"))
        | (Vendor::Webex, &Method::GET, Some("authorize"), None) => Some(Endpoint::Authorize),
        (Vendor::Calendly, &Method::POST, Some("oauth"), Some("token"))
        | (Vendor::Webex, &Method::POST, Some("access_token"), None) => Some(Endpoint::Token),
        _ => None,
    }
}

/// Whether the request carries an access token the sandbox issued (only then does the gate take
/// the OAuth lock).
pub(crate) fn carries_issued_token(ctx: &Ctx<'_>) -> bool {
    bearer(ctx).is_some_and(|token| token.starts_with(ACCESS_PREFIX))
}

pub(crate) enum Endpoint {
    Authorize,
    Token,
}

/// The scope a vendor route needs.
fn needed_scope(vendor: Vendor, ctx: &Ctx<'_>) -> Option<&'static str> {
    let read = ctx.method == Method::GET;
    match (vendor, ctx.segments.first()?.as_ref()) {
        (Vendor::Calendly, "users") => Some("users:read"),
        (
            Vendor::Calendly,
            "organization_memberships" | "organization_invitations" | "organizations",
        ) => Some(if read {
            "organizations:read"
        } else {
            "organizations:write"
        }),
        (Vendor::Calendly, "activity_log_entries") => Some("activity_log:read"),
        (Vendor::Webex, "people") => Some(if read {
            "spark-admin:people_read"
        } else {
            "spark-admin:people_write"
        }),
        _ => None,
    }
}

/// What [`OAuth::admit`] decided.
pub(crate) enum Admission {
    /// Not a sandbox-issued token: the static token check decides.
    NotOurs,
    Allowed,
    Expired,
    MissingScope(&'static str),
}

impl OAuth {
    pub(crate) fn new(config: OAuthConfig) -> OAuth {
        OAuth {
            config,
            codes: HashMap::new(),
            refresh: HashMap::new(),
            access: HashMap::new(),
            issued: 0,
        }
    }

    pub(crate) fn control(&mut self, control: OAuthControl) -> Value {
        let c = &mut self.config;
        if let Some(deny) = control.deny {
            c.deny = deny;
        }
        if let Some(scopes) = control.scopes {
            c.scopes = Some(scopes);
        }
        if let Some(secs) = control.access_ttl_secs {
            c.access_ttl = Duration::from_secs(secs);
        }
        if control.access_uses.is_some() {
            c.access_uses = control.access_uses;
        }
        if let Some(rotate) = control.rotate_refresh {
            c.rotate_refresh = rotate;
        }
        if let Some(uri) = control.redirect_uri {
            c.redirect_uri = uri;
        }
        json!({
            "client_id": c.client_id,
            "redirect_uri": c.redirect_uri,
            "scopes": c.scopes,
            "access_ttl_secs": c.access_ttl.as_secs(),
            "access_uses": c.access_uses,
            "rotate_refresh": c.rotate_refresh,
            "deny": c.deny,
        })
    }

    /// Expires every access token issued so far.
    pub(crate) fn expire_all(&mut self) -> usize {
        let now = Instant::now();
        for access in self.access.values_mut() {
            access.expires = now;
        }
        self.access.len()
    }

    /// Checks a vendor request's bearer token, if the sandbox issued it (counting one use).
    pub(crate) fn admit(&mut self, vendor: Vendor, ctx: &Ctx<'_>) -> Admission {
        let Some(token) = bearer(ctx) else {
            return Admission::NotOurs;
        };
        if !token.starts_with(ACCESS_PREFIX) {
            return Admission::NotOurs;
        }
        let Some(access) = self.access.get_mut(token) else {
            return Admission::Expired;
        };
        if access.vendor != vendor || Instant::now() >= access.expires {
            return Admission::Expired;
        }
        if let Some(left) = &mut access.uses_left {
            if *left == 0 {
                return Admission::Expired;
            }
            *left -= 1;
        }
        match needed_scope(vendor, ctx) {
            Some(scope) if !access.scopes.iter().any(|s| s == scope) => {
                Admission::MissingScope(scope)
            }
            _ => Admission::Allowed,
        }
    }

    /// `GET authorize`: consent at once (or deny), redirecting to the registered URI.
    pub(crate) fn authorize(&mut self, vendor: Vendor, ctx: &Ctx<'_>) -> Response {
        let q = &ctx.query;
        let client_id = q.get("client_id").unwrap_or_default();
        if client_id != self.config.client_id {
            return page(
                StatusCode::BAD_REQUEST,
                &format!("Unknown client_id `{client_id}`: no app is registered with it."),
            );
        }
        let redirect_uri = q.get("redirect_uri").unwrap_or_default();
        if redirect_uri != self.config.redirect_uri {
            return page(
                StatusCode::BAD_REQUEST,
                &format!(
                    "The redirect_uri `{redirect_uri}` does not match the redirect URI registered for this app (`{}`).",
                    self.config.redirect_uri
                ),
            );
        }
        let state = q.get("state").map(str::to_owned);
        let back = |pairs: &[(&str, &str)]| {
            let mut url = url::Url::parse(redirect_uri).expect("a registered URI parses");
            {
                let mut query = url.query_pairs_mut();
                for (k, v) in pairs {
                    query.append_pair(k, v);
                }
                if let Some(state) = &state {
                    query.append_pair("state", state);
                }
            }
            redirect(url.as_str())
        };
        if q.get("response_type") != Some("code") {
            return back(&[
                ("error", "unsupported_response_type"),
                ("error_description", "response_type must be code"),
            ]);
        }
        let challenge = q.get("code_challenge").map(str::to_owned);
        if challenge.is_some() && q.get("code_challenge_method") != Some("S256") {
            return back(&[
                ("error", "invalid_request"),
                ("error_description", "code_challenge_method must be S256"),
            ]);
        }
        if self.config.deny {
            return back(&[
                ("error", "access_denied"),
                ("error_description", "The user denied access to the app."),
            ]);
        }
        let asked: Vec<String> = q
            .get("scope")
            .unwrap_or_default()
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let scopes = match &self.config.scopes {
            None => asked,
            Some(allowed) => asked.into_iter().filter(|s| allowed.contains(s)).collect(),
        };
        self.issued += 1;
        let code = format!("sbx-code-{}-{}", self.issued, fastrand::u64(..));
        self.codes.insert(
            code.clone(),
            Code {
                vendor,
                redirect_uri: redirect_uri.to_owned(),
                challenge,
                scopes,
                issued: Instant::now(),
            },
        );
        back(&[("code", &code)])
    }

    /// `POST token`: `authorization_code` or `refresh_token`.
    pub(crate) fn token(&mut self, vendor: Vendor, ctx: &Ctx<'_>) -> Response {
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(ctx.body).into_owned().collect();
        let field = |name: &str| form.get(name).map(String::as_str);
        let (client_id, client_secret) = match basic(ctx) {
            Some(pair) => pair,
            None => (
                field("client_id").unwrap_or_default().to_owned(),
                field("client_secret").unwrap_or_default().to_owned(),
            ),
        };
        if client_id != self.config.client_id || client_secret != self.config.client_secret {
            return oauth_error(
                vendor,
                ctx,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
            );
        }
        let invalid_grant = |description: &str| {
            oauth_error(
                vendor,
                ctx,
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                description,
            )
        };
        let (scopes, spent) = match field("grant_type") {
            Some("authorization_code") => {
                let code = field("code").unwrap_or_default();
                // A code is single-use: taken out whether or not the exchange succeeds.
                let Some(issued) = self.codes.remove(code) else {
                    return invalid_grant("The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.");
                };
                if issued.vendor != vendor || issued.issued.elapsed() > CODE_TTL {
                    return invalid_grant("The authorization code has expired.");
                }
                if field("redirect_uri") != Some(issued.redirect_uri.as_str()) {
                    return invalid_grant("The redirect_uri does not match the redirection URI used in the authorization request.");
                }
                if let Some(challenge) = &issued.challenge {
                    let verifier = field("code_verifier").unwrap_or_default();
                    let computed = oauth2::PkceCodeChallenge::from_code_verifier_sha256(
                        &oauth2::PkceCodeVerifier::new(verifier.to_owned()),
                    );
                    if computed.as_str() != challenge {
                        return invalid_grant("The code_verifier does not match the code_challenge of the authorization request.");
                    }
                }
                (issued.scopes, None)
            }
            Some("refresh_token") => {
                let refresh = field("refresh_token").unwrap_or_default();
                let Some(grant) = self.refresh.get(refresh) else {
                    return invalid_grant("The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.");
                };
                if grant.vendor != vendor {
                    return invalid_grant("The refresh token was issued to another client.");
                }
                (grant.scopes.clone(), Some(refresh.to_owned()))
            }
            other => {
                return oauth_error(
                    vendor,
                    ctx,
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    &format!(
                        "The grant type `{}` is not supported.",
                        other.unwrap_or_default()
                    ),
                )
            }
        };
        self.issued += 1;
        let n = self.issued;
        let access = format!("{ACCESS_PREFIX}{n}-{:016x}", fastrand::u64(..));
        self.access.insert(
            access.clone(),
            Access {
                vendor,
                scopes: scopes.clone(),
                expires: Instant::now() + self.config.access_ttl,
                uses_left: self.config.access_uses,
            },
        );
        let refresh = match spent {
            Some(spent) if !self.config.rotate_refresh => spent,
            spent => {
                if let Some(spent) = spent {
                    self.refresh.remove(&spent);
                }
                let refresh = format!("sbx-rt-{n}-{:016x}", fastrand::u64(..));
                self.refresh.insert(
                    refresh.clone(),
                    Grant {
                        vendor,
                        scopes: scopes.clone(),
                    },
                );
                refresh
            }
        };
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.config.access_ttl.as_secs(),
            "refresh_token": refresh,
            "scope": scopes.join(" "),
        });
        if vendor == Vendor::Webex {
            body["refresh_token_expires_in"] = json!(7_776_000);
        }
        http::json(StatusCode::OK, &body)
    }
}

fn bearer<'c>(ctx: &'c Ctx<'_>) -> Option<&'c str> {
    let value = ctx.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// HTTP Basic client authentication, if the request uses it.
fn basic(ctx: &Ctx<'_>) -> Option<(String, String)> {
    let value = ctx.header("authorization")?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = decode_base64(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((unescape(id), unescape(secret)))
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits = 0u32;
    let mut count = 0;
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = TABLE.iter().position(|t| *t == byte)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// A token endpoint error in the vendor's shape.
fn oauth_error(
    vendor: Vendor,
    ctx: &Ctx<'_>,
    status: StatusCode,
    error: &str,
    description: &str,
) -> Response {
    let mut body = json!({ "error": error, "error_description": description });
    if vendor == Vendor::Webex {
        body["message"] = json!(description);
        body["errors"] = json!([{ "description": description }]);
        body["trackingId"] = json!(ctx.tracking_id);
    }
    http::json(status, &body)
}

/// A small HTML page, as the vendors' authorize pages answer an app's mistake.
fn page(status: StatusCode, message: &str) -> Response {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!("<!doctype html><title>Authorization error</title><h1>Authorization error</h1><p>{escaped}</p>\n");
    http::bytes(status, "text/html; charset=utf-8", body.into_bytes())
}

fn redirect(location: &str) -> Response {
    let mut response = http::empty(StatusCode::FOUND);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

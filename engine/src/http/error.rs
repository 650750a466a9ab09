//! What can go wrong with a vendor call, as data.
//!
//! [`CallError`] separates the failures an executor treats differently: setup (unknown action or
//! credential, an unset secret), rendering (a missing input or variable, named), transport (with
//! whether the request provably never left), the vendor's own error (with its own words, parsed
//! per the preset's [`ErrorStyle`]), not found, unsupported, the pagination guards (more pages than
//! the credential's `max_pages`, a repeated cursor) and a vendor wait past its `max_wait` (transient:
//! [`CallError::is_retryable`]). Every message is already redacted: building one goes through the
//! client's [`super::Redactor`]. Waits in messages are spoken as a person reads them (`15m`,
//! `31 years`), never as a raw `Duration`.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::Response;
use crate::config::{CredentialName, SecretError};
use crate::preset::{ErrorStyle, PresetId};
use crate::template::RenderFailure;

/// How a request failed to get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection was made: the request never reached the vendor.
    Connect,
    /// No answer in time: the vendor may have acted on it.
    Timeout,
    /// The connection broke after the request was sent, or another I/O failure.
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Other => "connection failed",
        })
    }
}

/// A vendor's error response, in its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorError {
    pub vendor: String,
    pub status: u16,
    /// Calendly `title`.
    pub title: Option<String>,
    /// Calendly and Webex `message`, SCIM `detail`.
    pub message: Option<String>,
    /// Calendly `details` (`parameter: message`), Webex `errors[].description`.
    pub details: Vec<String>,
    /// Webex `trackingId` (body or `Trackingid` header), for Cisco support.
    pub tracking_id: Option<String>,
    /// SCIM `scimType`.
    pub scim_type: Option<String>,
    /// How long the vendor asked us to wait (429).
    pub retry_after: Option<Duration>,
}

impl VendorError {
    /// Reads an error body in the vendor's style; fields that are absent stay `None`.
    pub fn parse(
        vendor: &str,
        style: ErrorStyle,
        status: u16,
        body: &Value,
        tracking_header: Option<String>,
    ) -> VendorError {
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let mut error = VendorError {
            vendor: vendor.to_owned(),
            status,
            title: None,
            message: None,
            details: Vec::new(),
            tracking_id: tracking_header,
            scim_type: None,
            retry_after: None,
        };
        match style {
            ErrorStyle::Calendly => {
                error.title = text(body.get("title"));
                error.message = text(body.get("message"));
                if let Some(Value::Array(details)) = body.get("details") {
                    error.details = details
                        .iter()
                        .filter_map(|d| {
                            let message = text(d.get("message"))?;
                            Some(match text(d.get("parameter")) {
                                Some(p) => format!("{p}: {message}"),
                                None => message,
                            })
                        })
                        .collect();
                }
            }
            ErrorStyle::Webex => {
                error.message = text(body.get("message"));
                if let Some(Value::Array(errors)) = body.get("errors") {
                    error.details = errors
                        .iter()
                        .filter_map(|e| text(e.get("description")))
                        .filter(|d| Some(d) != error.message.as_ref())
                        .collect();
                }
                if let Some(id) = text(body.get("trackingId")) {
                    error.tracking_id = Some(id);
                }
            }
            ErrorStyle::Scim => {
                // `status` is a string per RFC 7644 §3.12, a number on some servers; the HTTP
                // status is what counts, so it is only checked to be present.
                error.scim_type = text(body.get("scimType"));
                error.message = text(body.get("detail"));
            }
            ErrorStyle::Plain => {
                error.message = text(body.get("message")).or_else(|| text(body.get("error")));
            }
        }
        if error.message.is_none() && error.title.is_none() {
            if let Value::String(s) = body {
                let s = s.trim();
                if !s.is_empty() {
                    error.message = Some(s.chars().take(300).collect());
                }
            }
        }
        error
    }

    /// Rate limited or a gateway failure: worth another attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 429 | 502 | 503 | 504)
    }
}

impl fmt::Display for VendorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` answered {}", self.vendor, self.status)?;
        if let Some(title) = &self.title {
            write!(f, " `{title}`")?;
        }
        if let Some(scim_type) = &self.scim_type {
            write!(f, " `{scim_type}`")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        if !self.details.is_empty() {
            write!(f, " ({})", self.details.join("; "))?;
        }
        if let Some(id) = &self.tracking_id {
            write!(f, " [tracking id {id}]")?;
        }
        Ok(())
    }
}

/// Which part of a request failed to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderPart {
    Path,
    Query(String),
    Header(String),
    Body,
    Default(String),
}

impl fmt::Display for RenderPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderPart::Path => f.write_str("`path`"),
            RenderPart::Query(name) => write!(f, "query parameter `{name}`"),
            RenderPart::Header(name) => write!(f, "header `{name}`"),
            RenderPart::Body => f.write_str("`body`"),
            RenderPart::Default(name) => write!(f, "the default of input `{name}`"),
        }
    }
}

/// A vendor call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("unknown action `{action}`; `blockyard presets list` shows the actions")]
    UnknownAction { action: String },
    #[error("unknown credential `{credential}`; define it under `credentials:` in blockyard.yaml")]
    UnknownCredential { credential: CredentialName },
    #[error("credential `{credential}` is for `{actual}`, but `{action}` needs a `{expected}` credential")]
    WrongVendor {
        credential: CredentialName,
        action: PresetId,
        actual: String,
        expected: String,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("`{vendor}` has no base URL; set `base_url` on credential `{credential}`")]
    NoBaseUrl {
        vendor: String,
        credential: CredentialName,
    },
    #[error("the `url` of credential `{credential}` is not an http(s) URL; set it to the webhook address the service gave (it is a secret, so it is not shown)")]
    BadSecretUrl { credential: CredentialName },
    #[error("`{vendor}` has no OAuth2 token URL; set `token_url` on credential `{credential}`")]
    NoTokenUrl {
        vendor: String,
        credential: CredentialName,
    },
    #[error("`{action}`: input `{input}` is required; give it with `with: {{ {input}: ... }}` or set it on the record")]
    MissingInput { action: PresetId, input: String },
    #[error("`{action}` has no input `{input}`; its inputs are: {known}")]
    UnknownInput {
        action: PresetId,
        input: String,
        known: String,
    },
    #[error("`{action}`: cannot render {part}: {source}")]
    Render {
        action: PresetId,
        part: RenderPart,
        source: RenderFailure,
    },
    #[error("`{action}`: an input renders the path segment `{segment}`, which would address another resource; check the input")]
    DotSegment { action: PresetId, segment: String },
    #[error("`{action}`: `request.path` renders `{url}`, outside the credential's `base_url` `{base}`; refusing to send the credential there")]
    ForeignUrl {
        action: PresetId,
        url: String,
        base: String,
    },
    #[error("`{action}`: the rendered URL `{url}` is not a valid URL below `{base}`; check the credential's `base_url`")]
    BadUrl {
        action: PresetId,
        url: String,
        base: String,
    },
    #[error("`{action}`: {kind} {method} {url}: {message}")]
    Transport {
        action: PresetId,
        method: &'static str,
        url: String,
        kind: TransportKind,
        message: String,
    },
    #[error("`{action}`: {error}")]
    Vendor {
        action: PresetId,
        error: Box<VendorError>,
        response: Box<Response>,
    },
    #[error("`{action}`: not found (status {})", response.status)]
    NotFound {
        action: PresetId,
        response: Box<Response>,
    },
    #[error("`{action}`: not available for this account ({error})")]
    Unsupported {
        action: PresetId,
        error: Box<VendorError>,
        response: Box<Response>,
    },
    #[error("`{action}`: unexpected status {} (the preset expects {expected:?})", response.status)]
    UnexpectedStatus {
        action: PresetId,
        expected: Vec<u16>,
        response: Box<Response>,
    },
    #[error("credential `{credential}`: the token endpoint answered {status}: {message}; check the client id, secret and refresh token")]
    Token {
        credential: CredentialName,
        status: u16,
        message: String,
    },
    #[error("credential `{credential}`: {source}")]
    TokenStore {
        credential: CredentialName,
        source: super::tokens::TokenStoreError,
    },
    #[error("credential `{credential}`: the vendor issued new tokens, but {source}; the refresh token it replaced may be revoked already, so authorize the app again and put the new refresh token in `blockyard.yaml`")]
    TokenNotSaved {
        credential: CredentialName,
        source: super::tokens::TokenStoreError,
    },
    #[error("`{action}`: the next page is at `{url}`, outside the base URL `{base}`; refusing to send the credential there")]
    ForeignPage {
        action: PresetId,
        url: String,
        base: String,
    },
    #[error("`{action}`: the vendor has more than {max} pages, the most credential `{credential}` fetches in one call (`max_pages: {max}`); narrow the query or raise `max_pages`")]
    TooManyPages {
        action: PresetId,
        credential: CredentialName,
        max: u32,
    },
    #[error("`{action}`: after page {pages} the vendor pointed again at page {again}, which was already fetched (it repeats its next-page cursor), so the list would never end; stopped after {pages} pages")]
    RepeatedPage {
        action: PresetId,
        /// Pages fetched.
        pages: u32,
        /// The page the vendor pointed at again (1-based).
        again: u32,
    },
    #[error("`{action}`: the vendor asked to wait {} (`{header}: {value}`), more than the {} that credential `{credential}` waits at most (`max_wait`); not waiting: the call failed for now and may succeed later, or raise `max_wait`", Spoken(*asked), Exact(*max))]
    WaitTooLong {
        action: PresetId,
        credential: CredentialName,
        /// The header that asked, as the preset or RFC 9110 spells it (`Retry-After`).
        header: String,
        /// Its value as sent (redacted, at most 64 characters).
        value: String,
        /// The wait it asks for (`Duration::MAX` when beyond any duration).
        asked: Duration,
        /// The credential's `max_wait`.
        max: Duration,
        response: Box<Response>,
    },
    #[error("cannot set up the HTTP client: {message}")]
    Setup { message: String },
    /// An SMTP send that did not happen: the server's refusal (`code`), or a connection, TLS or
    /// message problem (no code).
    #[error("`{action}`: {}{message}", code.map(|c| format!("the mail server answered {c}: ")).unwrap_or_default())]
    Smtp {
        action: PresetId,
        code: Option<u16>,
        message: String,
        /// A 4xx answer, a timeout or a lost connection: trying later may succeed.
        transient: bool,
        /// The connection failed after it was made (a timeout, a drop): the server may have
        /// taken the message. False for a refusal (`code`) and a connection never made.
        maybe_sent: bool,
    },
    #[error("the `base_url` `{url}` of credential `{credential}` is not an SMTP URL; write `smtp://HOST:PORT` (and `tls:` `starttls`, `tls` or `none`)")]
    BadSmtpUrl {
        credential: CredentialName,
        url: String,
    },
}

impl CallError {
    /// Whether trying the call again later may succeed: a transport failure, a wait longer than
    /// the credential's, a vendor's or token endpoint's 408, 429 or 5xx (a token endpoint that
    /// could not be reached: status 0). The durable retry's one rule (`crate::exec::retry`
    /// sorts a retryable failure further: sent or not); the client's own in-call retries are
    /// narrower ([`VendorError::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Transport { .. } | CallError::WaitTooLong { .. } => true,
            CallError::Smtp { transient, .. } => *transient,
            CallError::Vendor { error, .. } => matches!(error.status, 408 | 429 | 500..=599),
            CallError::Token { status, .. } => matches!(status, 0 | 408 | 429 | 500..=599),
            CallError::UnknownAction { .. }
            | CallError::UnknownCredential { .. }
            | CallError::WrongVendor { .. }
            | CallError::Secret(_)
            | CallError::TokenStore { .. }
            | CallError::TokenNotSaved { .. }
            | CallError::NoBaseUrl { .. }
            | CallError::BadSecretUrl { .. }
            | CallError::NoTokenUrl { .. }
            | CallError::MissingInput { .. }
            | CallError::UnknownInput { .. }
            | CallError::Render { .. }
            | CallError::BadUrl { .. }
            | CallError::ForeignUrl { .. }
            | CallError::DotSegment { .. }
            | CallError::NotFound { .. }
            | CallError::Unsupported { .. }
            | CallError::UnexpectedStatus { .. }
            | CallError::ForeignPage { .. }
            | CallError::TooManyPages { .. }
            | CallError::RepeatedPage { .. }
            | CallError::Setup { .. }
            | CallError::BadSmtpUrl { .. } => false,
        }
    }

    /// The vendor's response, when there was one.
    pub fn response(&self) -> Option<&Response> {
        match self {
            CallError::Vendor { response, .. }
            | CallError::NotFound { response, .. }
            | CallError::Unsupported { response, .. }
            | CallError::UnexpectedStatus { response, .. }
            | CallError::WaitTooLong { response, .. } => Some(response),
            _ => None,
        }
    }
}

/// A wait in words, as a person reads it: exact below two days (`90s`, `15m`), then in whole
/// days or years; beyond 1000 years it says only that.
struct Spoken(Duration);

impl fmt::Display for Spoken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DAY: u64 = 86_400;
        // A Julian year, as astronomers count one: 365.25 days.
        const YEAR: u64 = 31_557_600;
        let secs = self.0.as_secs();
        if secs >= 1000 * YEAR {
            f.write_str("more than 1000 years")
        } else if secs >= 2 * YEAR {
            write!(f, "{} years", secs / YEAR)
        } else if secs >= 2 * DAY {
            write!(f, "{} days", secs / DAY)
        } else {
            Exact(self.0).fmt(f)
        }
    }
}

/// A duration as `blockyard.yaml` would spell it, in the largest unit that is exact (`15m`,
/// `90s`, `2500ms`).
pub(crate) struct Exact(pub(crate) Duration);

impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let unit = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ]
        .into_iter()
        .find(|(size, _)| ms != 0 && ms % size == 0);
        match unit {
            Some((size, name)) => write!(f, "{}{name}", ms / size),
            None => write!(f, "{ms}ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_spoken_exactly_when_short_and_roughly_when_long() {
        let spoken = |secs: u64| Spoken(Duration::from_secs(secs)).to_string();
        assert_eq!(spoken(0), "0ms");
        assert_eq!(spoken(11), "11s");
        assert_eq!(spoken(900), "15m");
        assert_eq!(spoken(3_601), "3601s");
        assert_eq!(spoken(86_400), "1d");
        assert_eq!(spoken(3 * 86_400 + 5), "3 days");
        assert_eq!(spoken(999_999_999), "31 years");
        assert_eq!(Spoken(Duration::MAX).to_string(), "more than 1000 years");
        assert_eq!(Exact(Duration::from_millis(2_500)).to_string(), "2500ms");
    }
}

//! Request and response plumbing shared by the vendors: the parsed request context ([`Ctx`]),
//! query-string access ([`Query`]) and small response builders.
//!
//! Vendors see a request as path segments after their prefix plus decoded query pairs, so their
//! routing is a plain `match` on a slice of `&str`.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Serialize;

pub(crate) const JSON: &str = "application/json";

/// One vendor request, parsed.
pub(crate) struct Ctx<'a> {
    pub(crate) method: &'a Method,
    /// Percent-decoded path segments after the vendor prefix, empty segments dropped.
    pub(crate) segments: Vec<Cow<'a, str>>,
    pub(crate) query: Query,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
    /// Webex's per-request tracking id (empty for the other vendors).
    pub(crate) tracking_id: &'a str,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        method: &'a Method,
        rest: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
        body: &'a [u8],
        tracking_id: &'a str,
    ) -> Ctx<'a> {
        let segments = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy())
            .collect();
        Ctx {
            method,
            segments,
            query: Query::parse(query),
            headers,
            body,
            tracking_id,
        }
    }

    /// The segments as `&str`, for matching.
    pub(crate) fn path(&self) -> Vec<&str> {
        self.segments.iter().map(|s| s.as_ref()).collect()
    }

    /// True when the request carries `Authorization: Bearer <token>`.
    pub(crate) fn has_bearer(&self, token: &str) -> bool {
        self.headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, value) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
            })
            .is_some_and(|value| value == token)
    }

    /// A request header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decoded query pairs, in order.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response with a body of the given content type.
pub(crate) fn bytes(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    typed_json(status, JSON, body)
}

/// A JSON response with another JSON media type (SCIM's `application/scim+json`).
pub(crate) fn typed_json<T: Serialize + ?Sized>(
    status: StatusCode,
    content_type: &'static str,
    body: &T,
) -> Response {
    match serde_json::to_vec(body) {
        Ok(body) => bytes(status, content_type, body),
        Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

/// An empty response.
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// A JSON `{"message": ...}` response, for sandbox-level errors (not any vendor's).
pub(crate) fn plain(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "message": message }))
}

/// Adds a header to a response (names and values are ours, so always valid).
pub(crate) fn with_header(mut response: Response, name: &'static str, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// Whether `email` looks like an address a vendor accepts: a local part, one `@`, and a domain
/// with a dot inside it (`grace@example` is refused), without whitespace.
pub(crate) fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
        && !domain.contains('@')
}

//! Redaction: what keeps credentials out of logs, errors, CLI output and history.
//!
//! Three layers. By name: headers such as `Authorization`, `Cookie`, `Set-Cookie` and any header,
//! query parameter or JSON key whose name says token, secret, password or key is replaced with
//! [`REDACTED`]. By shape: the password of a URL's userinfo (`http://user:PASS@host`) is replaced
//! wherever a URL appears, however short it is. By value: every secret the client knows (each
//! credential's configured secrets and URL passwords, registered when the client is made so that
//! a request shown before the first call is covered too; OAuth2 access and refresh tokens when
//! issued or read from the token store) is remembered by the shared [`Redactor`] and replaced
//! wherever it appears in text, so a vendor that echoes a token in an error body, a transport
//! error that quotes a URL, or a secret given as an input value still shows nothing.
//!
//! The promise: what blockyard prints, logs or records (a request as `call` or a dry run shows it
//! and history stores it, through [`Redactor::request`]; responses; errors) carries none of these;
//! only the request as sent carries the real values.

use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::RenderedRequest;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not searched for by value (they would redact ordinary words);
/// they are still redacted by name.
const MIN_SECRET_LEN: usize = 6;

/// True for a header, query parameter or JSON key whose value is a secret (ASCII case-insensitive;
/// no allocation, it runs for every key of every response body).
pub fn is_sensitive_name(name: &str) -> bool {
    const EXACT: [&str; 4] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ];
    const WORDS: [&str; 6] = [
        "token", "secret", "password", "api-key", "api_key", "apikey",
    ];
    let name = name.as_bytes();
    EXACT
        .iter()
        .any(|e| name.eq_ignore_ascii_case(e.as_bytes()))
        || WORDS.iter().any(|word| {
            name.windows(word.len())
                .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
        })
}

/// The known secret values, shared by every clone of a client.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<Arc<str>>>>,
}

impl Redactor {
    /// Remembers a secret value.
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if !secrets.iter().any(|s| &**s == secret) {
            secrets.push(Arc::from(secret));
            // Longest first, so a secret containing another is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every known secret replaced.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        redact_str(
            &self.secrets.read().unwrap_or_else(|e| e.into_inner()),
            &mut out,
        );
        out
    }

    /// A header value: by name, then by value.
    pub fn header(&self, name: &str, value: &str) -> String {
        if is_sensitive_name(name) {
            REDACTED.to_owned()
        } else {
            self.text(value)
        }
    }

    /// Remembers the password of `url`'s userinfo, as written and percent-decoded.
    pub fn add_url_password(&self, url: &str) {
        let Ok(url) = url::Url::parse(url) else {
            return;
        };
        if let Some(password) = url.password() {
            self.add(password);
            self.add(&percent_encoding::percent_decode_str(password).decode_utf8_lossy());
        }
    }

    /// Redacts a JSON value where it is: sensitive keys by name, every string by value (a
    /// response body is redacted once, when it arrives, without a copy).
    pub fn json_in_place(&self, value: &mut Value) {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        redact_value(&secrets, value);
    }

    /// `request` as it may be shown or stored: its URL's password, sensitive query parameters,
    /// headers and body keys by name, and every known secret by value. The request sent keeps
    /// the real values.
    /// [`Redactor::request`] as the JSON history records, redacted in its serialized form, so
    /// the request is not copied first (one per block a run records).
    pub fn request_json(&self, request: &RenderedRequest) -> Option<Value> {
        let mut value = serde_json::to_value(request).ok()?;
        self.json_in_place(&mut value);
        Some(value)
    }

    pub fn request(&self, request: &RenderedRequest) -> RenderedRequest {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut shown = request.clone();
        redact_request(&secrets, &mut shown);
        shown
    }
}

fn redact_request(secrets: &[Arc<str>], request: &mut RenderedRequest) {
    redact_str(secrets, &mut request.url);
    redact_str(secrets, &mut request.base_url);
    for (name, value) in request.query.iter_mut().chain(request.headers.iter_mut()) {
        if is_sensitive_name(name) {
            REDACTED.clone_into(value);
        } else {
            redact_str(secrets, value);
        }
    }
    if let Some(body) = &mut request.body {
        redact_value(secrets, body);
    }
    if let Some(read) = &mut request.merge_read {
        redact_request(secrets, read);
    }
}

/// Replaces every secret in `text`, and the password of any URL in it (allocates only when one
/// is found).
fn redact_str(secrets: &[Arc<str>], text: &mut String) {
    for secret in secrets {
        if text.contains(&**secret) {
            *text = text.replace(&**secret, REDACTED);
        }
    }
    if text.as_bytes().contains(&b'@') && text.contains("://") {
        redact_userinfo(text);
    }
}

/// Replaces the password of every `scheme://user:password@host` in `text`.
fn redact_userinfo(text: &mut String) {
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        // The authority ends at the path, query or fragment, or where the URL ends in prose.
        let end = text[start..]
            .find(|c: char| "/?#`'\"<>".contains(c) || c.is_whitespace())
            .map_or(text.len(), |i| start + i);
        from = end;
        let Some(at) = text[start..end].rfind('@').map(|i| start + i) else {
            continue;
        };
        let Some(colon) = text[start..at].find(':').map(|i| start + i) else {
            continue;
        };
        let password = colon + 1..at;
        if password.is_empty() || &text[password.clone()] == REDACTED {
            continue;
        }
        text.replace_range(password, REDACTED);
        from = colon + 1 + REDACTED.len();
    }
}

fn redact_value(secrets: &[Arc<str>], value: &mut Value) {
    match value {
        Value::String(s) => redact_str(secrets, s),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(secrets, v)),
        Value::Object(fields) => {
            for (k, v) in fields.iter_mut() {
                if is_sensitive_name(k) && !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_value(secrets, v);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_by_name_and_by_value() {
        let r = Redactor::default();
        r.add("s3cr3t-token");
        assert_eq!(r.text("bad token s3cr3t-token!"), "bad token [redacted]!");
        assert_eq!(r.header("Authorization", "Bearer x"), REDACTED);
        assert_eq!(r.header("Accept", "a s3cr3t-token"), "a [redacted]");
        let mut body = json!({"access_token": "abc", "m": ["s3cr3t-token"], "n": 1});
        r.json_in_place(&mut body);
        assert_eq!(
            body,
            json!({"access_token": REDACTED, "m": [REDACTED], "n": 1})
        );
    }

    #[test]
    fn a_urls_password_is_redacted_wherever_the_url_appears() {
        let r = Redactor::default();
        for (text, shown) in [
            (
                "GET http://robot:pw@127.0.0.1:8/calendly/users/me",
                "GET http://robot:[redacted]@127.0.0.1:8/calendly/users/me",
            ),
            (
                "`https://u:p%40ss@h`, `http://v:w@h?x=1` and http://x:y@h",
                "`https://u:[redacted]@h`, `http://v:[redacted]@h?x=1` and http://x:[redacted]@h",
            ),
            ("https://user@host/a:b@c", "https://user@host/a:b@c"),
            (
                "mail jane@acme.com at https://acme.com/",
                "mail jane@acme.com at https://acme.com/",
            ),
            ("http://u:[redacted]@h", "http://u:[redacted]@h"),
        ] {
            assert_eq!(r.text(text), shown, "{text}");
        }
        r.add_url_password("http://u:s%3Acret-pass@h/x");
        assert_eq!(
            r.text("echo s:cret-pass and s%3Acret-pass"),
            "echo [redacted] and [redacted]"
        );
    }

    #[test]
    fn a_request_is_shown_redacted_and_the_original_keeps_its_values() {
        let r = Redactor::default();
        r.add("s3cr3t-token");
        let request = RenderedRequest {
            action: "calendly.invite_user".to_owned(),
            method: crate::preset::Method::Post,
            url: "http://u:pw@h/invite/s3cr3t-token".to_owned(),
            query: vec![
                ("api_key".to_owned(), "k".to_owned()),
                ("q".to_owned(), "s3cr3t-token".to_owned()),
            ],
            headers: vec![("Authorization".to_owned(), REDACTED.to_owned())],
            body: Some(json!({"email": "s3cr3t-token", "password": "p", "n": 1})),
            merge_read: None,
            base_url: "http://u:pw@h".to_owned(),
        };
        let shown = r.request(&request);
        assert_eq!(shown.url, "http://u:[redacted]@h/invite/[redacted]");
        assert_eq!(
            shown.query,
            [
                ("api_key".to_owned(), REDACTED.to_owned()),
                ("q".to_owned(), REDACTED.to_owned())
            ]
        );
        assert_eq!(
            shown.body,
            Some(json!({"email": REDACTED, "password": REDACTED, "n": 1}))
        );
        // The JSON history records is the same, redacted without a copy of the request.
        assert_eq!(
            r.request_json(&request),
            Some(serde_json::to_value(&shown).unwrap())
        );
        assert_eq!(request.body.unwrap()["email"], "s3cr3t-token");
    }

    #[test]
    fn sensitive_names_ignore_ascii_case() {
        for name in [
            "Authorization",
            "SET-COOKIE",
            "X-Api-Key",
            "refresh_Token",
            "clientSecret",
        ] {
            assert!(is_sensitive_name(name), "{name}");
        }
        for name in ["email", "cookies_enabled", "keyboard", "tok"] {
            assert!(!is_sensitive_name(name), "{name}");
        }
    }
}

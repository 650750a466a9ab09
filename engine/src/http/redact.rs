//! Redaction: what keeps credentials out of logs, errors, CLI output and history.
//!
//! Two layers. By name: headers such as `Authorization`, `Cookie`, `Set-Cookie` and any header,
//! query parameter or JSON key whose name says token, secret, password or key is replaced with
//! [`REDACTED`]. By value: every secret the client has seen (configured secrets when resolved,
//! OAuth2 access and refresh tokens when issued) is remembered by the shared [`Redactor`] and
//! replaced wherever it appears in text, so a vendor that echoes a token in an error body, or a
//! transport error that quotes a URL, still shows nothing.

use std::sync::{Arc, RwLock};

use serde_json::Value;

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

    /// Redacts a JSON value where it is: sensitive keys by name, every string by value (a
    /// response body is redacted once, when it arrives, without a copy).
    pub fn json_in_place(&self, value: &mut Value) {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        redact_value(&secrets, value);
    }
}

/// Replaces every secret in `text` (allocates only when one is found).
fn redact_str(secrets: &[Arc<str>], text: &mut String) {
    for secret in secrets {
        if text.contains(&**secret) {
            *text = text.replace(&**secret, REDACTED);
        }
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

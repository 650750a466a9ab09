//! Credentials at run time: secrets resolved once, OAuth2 tokens cached in memory.
//!
//! [`Credentials`] is built from `blockyard.yaml` ([`crate::config::Config`]). When the client is
//! made, each [`Credential`] tells the [`Redactor`] every secret it can already read (configured
//! secrets, a password in its `base_url` or `token_url`), so that a request shown before the first
//! call is redacted too; it resolves its secrets for use on first use (so an unset variable of an
//! unused credential is not an error) and registers them with the [`Redactor`]. OAuth2 credentials fetch an access token with a
//! plain form POST to the token URL (`grant_type=refresh_token` or `client_credentials`), keep it
//! in memory until shortly before it expires, and drop it when the vendor answers 401, so the next
//! attempt fetches a fresh one (the client does that once per call). A refresh token the vendor
//! rotates is kept in memory only: blockyard never writes a secret anywhere.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::{CallError, Redactor};
use crate::config::{CredentialConfig, CredentialName, SecretError, SecretRef};
use crate::preset::AuthKind;

/// A secret value; it prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(super::redact::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(super::redact::REDACTED)
    }
}

/// Every configured credential, by name.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_name: IndexMap<CredentialName, Arc<Credential>>,
}

impl Credentials {
    pub fn from_config(config: &crate::config::Config) -> Credentials {
        let mut credentials = Credentials::default();
        for credential in config.credentials.values() {
            credentials.insert(credential.clone());
        }
        credentials
    }

    pub fn insert(&mut self, config: CredentialConfig) {
        self.by_name
            .insert(config.name.clone(), Arc::new(Credential::new(config)));
    }

    pub fn get(&self, name: &CredentialName) -> Option<&Arc<Credential>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Credential>> {
        self.by_name.values()
    }
}

/// The resolved secrets of a credential.
#[derive(Debug, Clone)]
enum Resolved {
    Bearer(Secret),
    Basic {
        username: String,
        password: Secret,
    },
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
    RefreshToken {
        client_id: String,
        client_secret: Secret,
    },
}

#[derive(Debug, Clone)]
struct CachedToken {
    access: Secret,
    /// Clock time after which the token is not used any more.
    expires_at: Option<tokio::time::Instant>,
}

/// One credential, with its secrets and token cache.
#[derive(Debug)]
pub struct Credential {
    pub config: CredentialConfig,
    resolved: OnceLock<Result<Resolved, SecretError>>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    /// The refresh token to use next (the configured one, or the one the vendor rotated to).
    refresh_token: std::sync::Mutex<Option<Secret>>,
}

/// What an authorized request carries.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The `Authorization` header value.
    pub header: Secret,
    /// The OAuth2 access token in use, to drop on a 401.
    pub token: Option<Secret>,
}

impl Credential {
    pub fn new(config: CredentialConfig) -> Credential {
        Credential {
            config,
            resolved: OnceLock::new(),
            token: tokio::sync::Mutex::new(None),
            refresh_token: std::sync::Mutex::new(None),
        }
    }

    /// Tells `redactor` every secret of this credential it can read now: configured secrets (one
    /// that cannot be read is reported when the credential is used) and the password of its
    /// `base_url` or `token_url`. Nothing is cached.
    pub fn register_secrets(&self, redactor: &Redactor) {
        let c = &self.config;
        for secret in [&c.token, &c.client_secret, &c.refresh_token, &c.password]
            .into_iter()
            .flatten()
        {
            if let Ok(value) = secret.resolve() {
                redactor.add(&value);
            }
        }
        for url in [&c.base_url, &c.token_url].into_iter().flatten() {
            redactor.add_url_password(url);
        }
    }

    pub fn name(&self) -> &CredentialName {
        &self.config.name
    }

    /// True for the OAuth2 styles, whose token can be refreshed after a 401.
    pub fn refreshable(&self) -> bool {
        matches!(
            self.config.auth,
            AuthKind::Oauth2ClientCredentials | AuthKind::Oauth2RefreshToken
        )
    }

    fn resolve(&self, redactor: &Redactor) -> Result<Resolved, CallError> {
        let result = self.resolved.get_or_init(|| {
            let secret = |r: &Option<SecretRef>| -> Result<Secret, SecretError> {
                // `Config::parse` checked that the fields the auth style needs are present.
                let r = r.as_ref().expect("checked when the config loaded");
                let value = r.resolve()?;
                redactor.add(&value);
                Ok(Secret::new(value))
            };
            let c = &self.config;
            let client_id = || c.client_id.clone().unwrap_or_default();
            Ok(match c.auth {
                AuthKind::Bearer => Resolved::Bearer(secret(&c.token)?),
                AuthKind::Basic => Resolved::Basic {
                    username: c.username.clone().unwrap_or_default(),
                    password: secret(&c.password)?,
                },
                AuthKind::Oauth2ClientCredentials => Resolved::ClientCredentials {
                    client_id: client_id(),
                    client_secret: secret(&c.client_secret)?,
                },
                AuthKind::Oauth2RefreshToken => {
                    let refresh = secret(&c.refresh_token)?;
                    *self.refresh_token.lock().unwrap_or_else(|e| e.into_inner()) = Some(refresh);
                    Resolved::RefreshToken {
                        client_id: client_id(),
                        client_secret: secret(&c.client_secret)?,
                    }
                }
            })
        });
        result.clone().map_err(CallError::from)
    }

    /// The `Authorization` header for the next request, fetching an OAuth2 token if none is cached.
    pub async fn authorize(
        &self,
        http: &reqwest::Client,
        token_url: Option<&str>,
        redactor: &Redactor,
    ) -> Result<Authorization, CallError> {
        let resolved = self.resolve(redactor)?;
        let (client_id, client_secret, refresh) = match resolved {
            Resolved::Bearer(token) => {
                return Ok(Authorization {
                    header: Secret::new(format!("Bearer {}", token.expose())),
                    token: None,
                })
            }
            Resolved::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                let header = Secret::new(format!("Basic {}", base64(pair.as_bytes())));
                redactor.add(header.expose());
                return Ok(Authorization {
                    header,
                    token: None,
                });
            }
            Resolved::ClientCredentials {
                client_id,
                client_secret,
            } => (client_id, client_secret, false),
            Resolved::RefreshToken {
                client_id,
                client_secret,
            } => (client_id, client_secret, true),
        };
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if token
                .expires_at
                .is_none_or(|at| tokio::time::Instant::now() < at)
            {
                return Ok(Authorization {
                    header: Secret::new(format!("Bearer {}", token.access.expose())),
                    token: Some(token.access.clone()),
                });
            }
        }
        let token_url = token_url.ok_or_else(|| CallError::NoTokenUrl {
            vendor: self.config.vendor.clone(),
            credential: self.config.name.clone(),
        })?;
        let mut form: Vec<(&str, String)> = vec![
            ("client_id", client_id),
            ("client_secret", client_secret.expose().to_owned()),
        ];
        if refresh {
            let current = self
                .refresh_token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .expect("set when the credential resolved");
            form.insert(0, ("grant_type", "refresh_token".to_owned()));
            form.push(("refresh_token", current.expose().to_owned()));
        } else {
            form.insert(0, ("grant_type", "client_credentials".to_owned()));
            if let Some(scope) = &self.config.scope {
                form.push(("scope", scope.clone()));
            }
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", super::request::encode_query(v)))
            .collect::<Vec<_>>()
            .join("&");
        let token_error = |status: u16, message: String| CallError::Token {
            credential: self.config.name.clone(),
            status,
            message: redactor.text(&message),
        };
        tracing::debug!(credential = %self.config.name, "oauth2: fetching an access token");
        let response = http
            .post(token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| token_error(0, super::transport_message(&err)))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|err| token_error(status, super::transport_message(&err)))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let message = ["error_description", "error", "message"]
                .iter()
                .find_map(|k| json.get(k).and_then(Value::as_str))
                .unwrap_or("no error description")
                .to_owned();
            return Err(token_error(status, message));
        }
        let Some(access) = json.get("access_token").and_then(Value::as_str) else {
            return Err(token_error(
                status,
                "the response has no `access_token`".to_owned(),
            ));
        };
        redactor.add(access);
        if let Some(rotated) = json.get("refresh_token").and_then(Value::as_str) {
            redactor.add(rotated);
            *self.refresh_token.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Secret::new(rotated));
        }
        let expires_at = json.get("expires_in").and_then(Value::as_u64).map(|secs| {
            // Renew a minute early so a token does not expire in flight.
            tokio::time::Instant::now() + Duration::from_secs(secs.saturating_sub(60))
        });
        let access = Secret::new(access);
        *cached = Some(CachedToken {
            access: access.clone(),
            expires_at,
        });
        Ok(Authorization {
            header: Secret::new(format!("Bearer {}", access.expose())),
            token: Some(access),
        })
    }

    /// The vendor refused `used` (401): forget it, unless another call already replaced it.
    pub async fn invalidate(&self, used: &Secret) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| &t.access == used) {
            *cached = None;
        }
    }
}

/// Standard base64 with padding (for basic auth; not worth a dependency).
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(
            super::base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}

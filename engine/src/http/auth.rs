//! Credentials at run time: secrets resolved once, OAuth2 tokens cached in memory and kept in
//! the token store.
//!
//! [`Credentials`] is built from `blockyard.yaml` ([`crate::config::Config`]). When the client is
//! made, each [`Credential`] tells the [`Redactor`] every secret it can already read (configured
//! secrets, a password in its `base_url` or `token_url`, stored tokens), so that a request shown
//! before the first call is redacted too; it resolves its secrets for use on first use (so an
//! unset variable of an unused credential is not an error). OAuth2 credentials fetch an access
//! token with a plain form POST to the token URL (`grant_type=refresh_token` or
//! `client_credentials`), keep it in memory until shortly before it expires, and drop it when the
//! vendor answers 401, so the next attempt fetches a fresh one (the client does that once per
//! call). An `auth: url` credential sends no header: its secret `url` is the address the client
//! sends to ([`Credential::secret_url`]), and the redactor knows it like any other secret.
//!
//! Refresh tokens may be single-use (Calendly revokes each one it is refreshed with). Built with
//! [`Credentials::persistent`], an `oauth2_refresh_token` credential keeps its tokens in the
//! token store of the config's data dir and refreshes only under its credential's lock
//! ([`CredentialTokens::lock_credential`]), as [`crate::store::tokens`] describes; a service on
//! PostgreSQL moves them to that store's `tokens` table ([`Credentials::keeping_tokens_in`]), so
//! every worker refreshes under one row lock. A later process, or a `serve` running beside a `call`,
//! picks up the token the last refresh returned, and the token `blockyard auth login` stored
//! stands in for a `refresh_token` the config does not have. Each refresh records the scopes the
//! vendor granted and when it happened, for `auth status` and `check`. Built with
//! [`Credentials::from_config`] (tests, embedding), the rotated token is kept in memory only.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::{CallError, Redactor};
use crate::config::{CredentialConfig, CredentialName, SecretError, SecretRef};
use crate::preset::AuthKind;
use crate::store::tokens::{
    self, CredentialTokens, FileTokenStore, StoredToken, TokenStore, TokenStoreError,
};

/// How long before its expiry an access token is renewed, so that it does not expire in flight.
const RENEW_EARLY: Duration = Duration::from_secs(60);

/// The longest a token request may take (the token store's lock is held meanwhile).
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The credentials of `config`, keeping the tokens a vendor rotates in memory only: for tests
    /// and embedding. A process whose successors use the same credentials wants
    /// [`Credentials::persistent`].
    pub fn from_config(config: &crate::config::Config) -> Credentials {
        let mut credentials = Credentials::default();
        for credential in config.credentials.values() {
            credentials.insert(credential.clone());
        }
        credentials
    }

    /// The credentials of `config`, keeping OAuth2 refresh-token credentials' tokens in the token
    /// store of the config's `data_dir` (what `call`, `run` and `serve` use).
    pub fn persistent(config: &crate::config::Config) -> Credentials {
        let store = FileTokenStore::in_dir(&config.data_dir);
        if let Some(warning) = store.warning() {
            tracing::warn!("{warning}");
        }
        Credentials::with_token_store(config, Arc::new(store))
    }

    /// The credentials of `config`, keeping OAuth2 refresh-token credentials' tokens in `store`.
    pub fn with_token_store(
        config: &crate::config::Config,
        store: Arc<dyn CredentialTokens>,
    ) -> Credentials {
        let mut credentials = Credentials::default();
        for credential in config.credentials.values() {
            let mut credential = Credential::new(credential.clone());
            if credential.config.auth == AuthKind::Oauth2RefreshToken {
                credential.store = Some(Arc::clone(&store));
            }
            credentials
                .by_name
                .insert(credential.config.name.clone(), Arc::new(credential));
        }
        credentials
    }

    /// These credentials, those that keep their tokens in a token store keeping them in `store`
    /// instead (the others, memory only, as they are): a service on PostgreSQL keeps them in the
    /// database every worker shares. Nothing resolved or cached is carried over.
    pub fn keeping_tokens_in(&self, store: Arc<dyn CredentialTokens>) -> Credentials {
        let by_name = self
            .by_name
            .iter()
            .map(|(name, credential)| {
                let credential = match credential.store {
                    Some(_) => {
                        let mut moved = Credential::new(credential.config.clone());
                        moved.store = Some(Arc::clone(&store));
                        Arc::new(moved)
                    }
                    None => Arc::clone(credential),
                };
                (name.clone(), credential)
            })
            .collect();
        Credentials { by_name }
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
        /// The refresh token in `blockyard.yaml`, if it has one (else `auth login` stored one).
        configured: Option<Secret>,
    },
    /// `auth: url`: no header; the URL is the secret.
    Url(Secret),
}

#[derive(Debug, Clone)]
struct CachedToken {
    access: Secret,
    /// Clock time after which the token is not used any more.
    expires_at: Option<tokio::time::Instant>,
}

/// The access token in memory, and the last one the vendor refused.
#[derive(Debug, Default)]
struct TokenState {
    cached: Option<CachedToken>,
    /// Refused with a 401: not to be taken from the token store again.
    refused: Option<Secret>,
}

/// Where, and as which client, tokens are requested.
struct Endpoint<'a> {
    http: &'a reqwest::Client,
    url: &'a str,
    client_id: &'a str,
    client_secret: &'a Secret,
}

/// What a token endpoint issued.
struct Issued {
    access: Secret,
    refresh: Option<Secret>,
    expires_in: Option<u64>,
    refresh_expires_in: Option<u64>,
    /// The granted scopes, when the vendor said (`scope`).
    scopes: Option<Vec<String>>,
}

/// One credential, with its secrets and token cache.
#[derive(Debug)]
pub struct Credential {
    pub config: CredentialConfig,
    resolved: OnceLock<Result<Resolved, SecretError>>,
    token: tokio::sync::Mutex<TokenState>,
    /// The refresh token to use next (the configured one, or the one the vendor rotated to),
    /// when there is no token store.
    refresh_token: std::sync::Mutex<Option<Secret>>,
    /// Where an `oauth2_refresh_token` credential keeps its tokens across processes.
    store: Option<Arc<dyn CredentialTokens>>,
}

/// What an authorized request carries.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The `Authorization` header value; `None` for `auth: url`, which sends none.
    pub header: Option<Secret>,
    /// The OAuth2 access token in use, to drop on a 401.
    pub token: Option<Secret>,
}

impl Credential {
    pub fn new(config: CredentialConfig) -> Credential {
        Credential {
            config,
            resolved: OnceLock::new(),
            token: tokio::sync::Mutex::new(TokenState::default()),
            refresh_token: std::sync::Mutex::new(None),
            store: None,
        }
    }

    /// Tells `redactor` every secret of this credential it can read now: configured secrets (one
    /// that cannot be read is reported when the credential is used), the password of its
    /// `base_url` or `token_url`, and the tokens the store keeps for it. Nothing is cached.
    pub fn register_secrets(&self, redactor: &Redactor) {
        let c = &self.config;
        for secret in [
            &c.token,
            &c.client_secret,
            &c.refresh_token,
            &c.password,
            &c.url,
        ]
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
        // A store on a server is not read here (this is not async): its tokens are learned when
        // a refresh reads them, before any is used.
        if let Some(entry) = self
            .store
            .as_ref()
            .and_then(|store| store.entry_now(c.name.as_str()))
        {
            register_stored(&entry, redactor);
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
                AuthKind::Oauth2RefreshToken => Resolved::RefreshToken {
                    configured: match &c.refresh_token {
                        Some(_) => Some(secret(&c.refresh_token)?),
                        None => None,
                    },
                    client_id: client_id(),
                    client_secret: secret(&c.client_secret)?,
                },
                AuthKind::Url => Resolved::Url(secret(&c.url)?),
            })
        });
        result.clone().map_err(CallError::from)
    }

    /// For `auth: basic`, the user name and password (read once and remembered by `redactor`):
    /// the SMTP transport's login. `None` for every other auth style.
    pub fn basic_login(&self, redactor: &Redactor) -> Result<Option<(String, Secret)>, CallError> {
        match self.resolve(redactor)? {
            Resolved::Basic { username, password } => Ok(Some((username, password))),
            _ => Ok(None),
        }
    }

    /// For `auth: url`, the secret URL requests go to (read once and remembered by `redactor`);
    /// `None` for every other auth style.
    pub fn secret_url(&self, redactor: &Redactor) -> Result<Option<Secret>, CallError> {
        match self.resolve(redactor)? {
            Resolved::Url(url) => Ok(Some(url)),
            _ => Ok(None),
        }
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
                    header: Some(Secret::new(format!("Bearer {}", token.expose()))),
                    token: None,
                })
            }
            Resolved::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                let header = Secret::new(format!("Basic {}", base64(pair.as_bytes())));
                redactor.add(header.expose());
                return Ok(Authorization {
                    header: Some(header),
                    token: None,
                });
            }
            Resolved::Url(_) => {
                return Ok(Authorization {
                    header: None,
                    token: None,
                })
            }
            Resolved::ClientCredentials {
                client_id,
                client_secret,
            } => (client_id, client_secret, None),
            Resolved::RefreshToken {
                client_id,
                client_secret,
                configured,
            } => (client_id, client_secret, Some(configured)),
        };
        let mut state = self.token.lock().await;
        if let Some(token) = state.cached.as_ref() {
            if token
                .expires_at
                .is_none_or(|at| tokio::time::Instant::now() < at)
            {
                return Ok(bearer(&token.access));
            }
        }
        let token_url = token_url.ok_or_else(|| CallError::NoTokenUrl {
            vendor: self.config.vendor.clone(),
            credential: self.config.name.clone(),
        })?;
        let endpoint = Endpoint {
            http,
            url: token_url,
            client_id: &client_id,
            client_secret: &client_secret,
        };
        let token = match (&self.store, refresh) {
            (Some(store), Some(configured)) => {
                Box::pin(self.refresh_stored(store, configured, &state, &endpoint, redactor))
                    .await?
            }
            (None, Some(configured)) => {
                let configured = configured.ok_or_else(|| CallError::TokenStore {
                    credential: self.config.name.clone(),
                    source: TokenStoreError::NotLoggedIn {
                        credential: self.config.name.to_string(),
                    },
                })?;
                let current = self
                    .refresh_token
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(configured)
                    .clone();
                let issued = self.fetch(&endpoint, Some(&current), redactor).await?;
                if let Some(rotated) = &issued.refresh {
                    *self.refresh_token.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(rotated.clone());
                }
                cached_for(&issued)
            }
            (_, None) => {
                let issued = self.fetch(&endpoint, None, redactor).await?;
                cached_for(&issued)
            }
        };
        let authorization = bearer(&token.access);
        state.cached = Some(token);
        Ok(authorization)
    }

    /// Refreshes under the credential's lock in the token store: the stored access token when
    /// another process already refreshed (and it is valid and not refused), else a refresh with
    /// the stored refresh token (or the configured one, when nothing stored descends from it),
    /// whose result is stored before it is used. An error before the save drops the lock, which
    /// leaves the entry as it was.
    async fn refresh_stored(
        &self,
        store: &Arc<dyn CredentialTokens>,
        configured: Option<Secret>,
        state: &TokenState,
        endpoint: &Endpoint<'_>,
        redactor: &Redactor,
    ) -> Result<CachedToken, CallError> {
        let name = self.config.name.as_str();
        let store_error = |source| CallError::TokenStore {
            credential: self.config.name.clone(),
            source,
        };
        let origin = configured.as_ref().map(|c| tokens::fingerprint(c.expose()));
        let locked = store.lock_credential(name).await.map_err(store_error)?;
        // A login's entry always counts; another one while it descends from the configured
        // refresh token (any, when the config has none).
        let entry = locked.entry().filter(|entry| {
            entry.origin == tokens::LOGIN || origin.as_ref().is_none_or(|o| &entry.origin == o)
        });
        let now = chrono::Utc::now().timestamp();
        if let Some(entry) = entry {
            register_stored(entry, redactor);
            if let Some(access) = &entry.access_token {
                let left = entry
                    .expires_at
                    .map(|at| at - now - RENEW_EARLY.as_secs() as i64);
                let refused = state.refused.as_ref().is_some_and(|r| r.expose() == access);
                if left.is_none_or(|left| left > 0) && !refused {
                    tracing::debug!(credential = %self.config.name, "oauth2: using the stored access token");
                    return Ok(CachedToken {
                        access: Secret::new(access.as_str()),
                        expires_at: left.map(|left| {
                            tokio::time::Instant::now() + Duration::from_secs(left as u64)
                        }),
                    });
                }
            }
        }
        let spend = match (entry, configured) {
            (Some(entry), _) => Secret::new(entry.refresh_token.as_str()),
            (None, Some(configured)) => configured,
            (None, None) => {
                return Err(store_error(TokenStoreError::NotLoggedIn {
                    credential: name.to_owned(),
                }))
            }
        };
        let kept_origin = entry.map(|e| e.origin.clone());
        let kept_scopes = entry.and_then(|e| e.scopes.clone());
        let kept_refresh_expiry = entry.and_then(|e| e.refresh_expires_at);
        let issued = self.fetch(endpoint, Some(&spend), redactor).await?;
        let at = |secs: u64| now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX));
        let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let saved = StoredToken {
            origin: match (kept_origin, origin) {
                (Some(kept), _) if kept == tokens::LOGIN => kept,
                (_, Some(origin)) => origin,
                (kept, None) => kept.unwrap_or_else(|| tokens::LOGIN.to_owned()),
            },
            refresh_token: issued
                .refresh
                .as_ref()
                .unwrap_or(&spend)
                .expose()
                .to_owned(),
            access_token: Some(issued.access.expose().to_owned()),
            expires_at: issued.expires_in.map(at),
            refresh_expires_at: issued.refresh_expires_in.map(at).or(kept_refresh_expiry),
            scopes: issued.scopes.clone().or(kept_scopes),
            last_refresh: Some(stamp.clone()),
            updated_at: stamp,
        };
        locked
            .save(Some(saved))
            .await
            .map_err(|source| CallError::TokenNotSaved {
                credential: self.config.name.clone(),
                source,
            })?;
        Ok(cached_for(&issued))
    }

    /// One token request: `refresh` for `grant_type=refresh_token`, else client credentials.
    async fn fetch(
        &self,
        endpoint: &Endpoint<'_>,
        refresh: Option<&Secret>,
        redactor: &Redactor,
    ) -> Result<Issued, CallError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", endpoint.client_id),
            ("client_secret", endpoint.client_secret.expose()),
        ];
        match refresh {
            Some(current) => {
                form.insert(0, ("grant_type", "refresh_token"));
                form.push(("refresh_token", current.expose()));
            }
            None => {
                form.insert(0, ("grant_type", "client_credentials"));
                if let Some(scope) = &self.config.scope {
                    form.push(("scope", scope));
                }
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
        let response = endpoint
            .http
            .post(endpoint.url)
            .timeout(TOKEN_TIMEOUT)
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
        let refresh = json
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(|rotated| {
                redactor.add(rotated);
                Secret::new(rotated)
            });
        Ok(Issued {
            access: Secret::new(access),
            refresh,
            expires_in: json.get("expires_in").and_then(Value::as_u64),
            refresh_expires_in: json.get("refresh_token_expires_in").and_then(Value::as_u64),
            scopes: json.get("scope").and_then(Value::as_str).map(split_scopes),
        })
    }

    /// The vendor refused `used` (401): forget it, unless another call already replaced it, and
    /// never take it from the token store again.
    pub async fn invalidate(&self, used: &Secret) {
        let mut state = self.token.lock().await;
        if state.cached.as_ref().is_some_and(|t| &t.access == used) {
            state.cached = None;
        }
        state.refused = Some(used.clone());
    }
}

/// The `Authorization` of an OAuth2 access token.
fn bearer(access: &Secret) -> Authorization {
    Authorization {
        header: Some(Secret::new(format!("Bearer {}", access.expose()))),
        token: Some(access.clone()),
    }
}

/// An issued token as the memory cache keeps it: renewed a minute before it expires.
fn cached_for(issued: &Issued) -> CachedToken {
    CachedToken {
        access: issued.access.clone(),
        expires_at: issued.expires_in.map(|secs| {
            tokio::time::Instant::now() + Duration::from_secs(secs).saturating_sub(RENEW_EARLY)
        }),
    }
}

/// Tells `redactor` the tokens of a store entry.
fn register_stored(entry: &StoredToken, redactor: &Redactor) {
    redactor.add(&entry.refresh_token);
    if let Some(access) = &entry.access_token {
        redactor.add(access);
    }
}

/// The scopes of a token response's `scope` (space-separated, as RFC 6749 says; Webex separates
/// them with commas in places, so both count).
pub fn split_scopes(scope: &str) -> Vec<String> {
    scope
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
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

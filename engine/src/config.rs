//! `blockyard.yaml`: the data directory, global variables, named credentials, the API token, the
//! named API tokens with their roles (`api_tokens`), `serve`'s connection bounds (`serve`), the
//! time limit of a rhai rule (`rule_time_limit`), the default `notify:` of every workflow, the
//! default mass-change guard (`guard:`) and what `serve` prunes and deletes by itself
//! (`retention:`, see [`crate::service::retention`]). An API token's value is `${ENV_VAR}` or
//! `file:/path`, never the token itself.
//!
//! The file mirrors the YAML exactly (`deny_unknown_fields`, so a misspelt key is an error) and
//! keeps a [`SourceMap`] so that every later problem (an unset environment variable, a secret file
//! that cannot be read) can name the file, line and key. Secret values are never stored in the
//! file: a secret field holds `${ENV_VAR}` or `file:/path/to/secret` (a literal is accepted for
//! local sandboxes) and is resolved only when a call first uses the credential, so a missing
//! Webex variable does not stop a Calendly call. Resolved secrets live in memory only, inside
//! [`crate::http::Secret`], whose `Debug` and `Display` print `[redacted]`; the tokens a vendor
//! issues to an `oauth2_refresh_token` credential are kept in `tokens.json` in [`Config::data_dir`]
//! (see [`crate::store::tokens`]); `auth login` needs `redirect_uri` (the one registered with the
//! vendor's app) and may take `authorize_url` and `scope`. An `auth: url` credential (a webhook's)
//! has no header at all: its `url` is a secret field holding the whole address, since knowing it
//! is the permission.
//!
//! An SMTP credential (vendor `email`) is `auth: basic` with `base_url: smtp://host:port` and
//! `tls:` `starttls` (the default), `tls`, or `none`, which is refused unless the server is on
//! loopback (see [`crate::http::smtp`]).
//!
//! A credential also carries the bounds of every call made with it: `rate_limit_per_minute`,
//! `max_connections`, `max_pages` and `max_wait`. Each is checked here, with the defaults filled
//! in, so the client never meets a bound that cannot bound (`max_pages: 0`, `max_wait: soon`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::preset::AuthKind;
use crate::spec::{Location, SourceMap, YamlPath};

/// The name of a credential in `blockyard.yaml` (`credential: webex` in a block).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CredentialName(pub String);

impl CredentialName {
    pub fn new(name: impl Into<String>) -> CredentialName {
        CredentialName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many requests a credential keeps open at once when `max_connections` is not set: enough
/// for a vendor's rate limit to be the bound, few enough that 10,000 runs in flight do not open
/// 10,000 sockets.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;

/// How many pages one call of a `paginate` action fetches at most when `max_pages` is not set:
/// a million members at Calendly's 100 a page, and a bound on a vendor that never stops.
pub const DEFAULT_MAX_PAGES: u32 = 10_000;

/// The longest a call waits when the vendor asks it to (`Retry-After`, `X-RateLimit-Reset`) and
/// `max_wait` is not set; a longer ask fails the call at once, as a transient failure.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// Where `blockyard auth login` listens for the vendor's redirect when a credential sets no
/// `redirect_uri`: register exactly this URI with the vendor's OAuth app.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:8765/callback";

/// `blockyard.yaml`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    vars: IndexMap<String, Value>,
    #[serde(default)]
    credentials: IndexMap<String, CredentialSpec>,
    /// The bearer token of `blockyard serve`'s API (`${ENV_VAR}` or `file:/path`).
    #[serde(default)]
    token: Option<String>,
    /// How long one evaluation of a rhai rule may run (`10ms` when unset).
    #[serde(default)]
    rule_time_limit: Option<String>,
    /// The URL of a running `blockyard serve` that CLI commands go through.
    #[serde(default)]
    server: Option<String>,
    /// Named tokens of `blockyard serve`'s API, each with a role.
    #[serde(default)]
    api_tokens: IndexMap<String, ApiTokenSpec>,
    /// `blockyard serve`'s connection bounds and the names it answers to.
    #[serde(default)]
    serve: ServeSpec,
    /// The `notify:` of every workflow that has none (see [`crate::notify`]).
    #[serde(default)]
    notify: Option<crate::notify::NotifySpec>,
    /// The mass-change guard of every workflow that has no `guard:` of its own.
    #[serde(default)]
    guard: Option<crate::compile::GuardSpec>,
    /// Warn when a loaded workflow's trigger matches more than this share of the current
    /// records (`50%` when unset).
    #[serde(default)]
    match_warning: Option<String>,
    /// Where the store is: `sled` (the data dir; the default) or `{postgres: {url: ...}}`.
    #[serde(default)]
    store: Option<serde_yaml::Value>,
    /// What `serve` prunes and deletes by itself.
    #[serde(default)]
    retention: RetentionSpec,
}

/// `retention:`, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSpec {
    #[serde(default)]
    payloads_after: Option<DurationText>,
    #[serde(default)]
    runs_after: Option<DurationText>,
    #[serde(default)]
    every: Option<DurationText>,
}

/// One named API token, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiTokenSpec {
    /// `viewer`, `operator` or `admin`.
    role: String,
    /// `${ENV_VAR}` or `file:/path`.
    token: String,
}

/// `serve:`, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSpec {
    #[serde(default)]
    header_timeout: Option<DurationText>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

/// One credential, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// The preset vendor it authenticates against (`calendly`, `webex`, `scim`).
    pub vendor: String,
    pub auth: AuthKind,
    /// Bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// OAuth2 client id (not a secret).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// For `oauth2_refresh_token`: a refresh token obtained by hand; without it, the one
    /// `blockyard auth login` stored is used.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// OAuth2 scopes (space-separated): asked for by the client-credentials grant and by
    /// `blockyard auth login` (which asks for every scope of the vendor's preset when unset).
    #[serde(default)]
    pub scope: Option<String>,
    /// The redirect URI registered with the vendor's OAuth app, for `blockyard auth login`
    /// (`http://127.0.0.1:8765/callback` when unset).
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Overrides the preset's OAuth2 authorize URL (a sandbox).
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Basic auth user name (not a secret).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Overrides the preset's base URL (sandbox, tests, regions; required for SCIM).
    #[serde(default)]
    pub base_url: Option<String>,
    /// For `auth: url`: the whole address requests go to, a secret (`${SLACK_WEBHOOK_URL}`).
    #[serde(default)]
    pub url: Option<String>,
    /// Overrides the preset's OAuth2 token URL.
    #[serde(default)]
    pub token_url: Option<String>,
    /// For an SMTP vendor (`email`): `starttls` (the default), `tls` or `none` (loopback only).
    #[serde(default)]
    pub tls: Option<crate::http::smtp::SmtpTls>,
    /// Overrides the vendor's request budget for this credential, in requests per minute (Calendly's
    /// Free plan allows 50, its paid plans the preset's 500); `0` turns the limiter off (a sandbox).
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
    /// The most requests open at once to the vendor with this credential (64 when unset); `0`
    /// lifts the cap. Calls beyond it wait their turn and reuse the open connections.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// The most pages one call of a `paginate` action fetches (10,000 when unset); a longer list
    /// fails the call.
    #[serde(default)]
    pub max_pages: Option<u32>,
    /// The longest the client waits when the vendor asks it to, such as `15m` (the default); a
    /// longer ask fails the call at once.
    #[serde(default)]
    pub max_wait: Option<DurationText>,
}

/// A duration as written (`15m`). Any scalar is taken as text, so a bare number (`900`) gets the
/// duration parser's message, which says what to write, rather than serde's type error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number and a unit, such as `30s`, `15m` or `1h`")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DurationText, E> {
                Ok(DurationText(text.to_owned()))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Where a secret value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `${NAME}`.
    Env(String),
    /// `file:/path`.
    File(PathBuf),
    /// Written in the file (acceptable for a local sandbox only).
    Literal(String),
}

impl SecretSource {
    pub fn parse(text: &str) -> SecretSource {
        let trimmed = text.trim();
        if let Some(name) = trimmed
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
        {
            SecretSource::Env(name.to_owned())
        } else if let Some(path) = trimmed.strip_prefix("file:") {
            SecretSource::File(PathBuf::from(path))
        } else {
            SecretSource::Literal(text.to_owned())
        }
    }
}

/// A secret field of a credential, with where it was written.
#[derive(Debug, Clone)]
pub struct SecretRef {
    pub source: SecretSource,
    /// The key, such as `credentials.webex.client_secret`.
    pub key: String,
    pub file: PathBuf,
    pub location: Location,
}

/// A secret that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{}:{location}: environment variable `{var}` (for `{key}`) is not set; export it or point `{key}` at a file with `file:/path`", file.display())]
    EnvMissing {
        var: String,
        key: String,
        file: PathBuf,
        location: Location,
    },
    #[error("{}:{location}: cannot read the secret file `{}` (for `{key}`): {reason}", file.display(), path.display())]
    FileUnreadable {
        path: PathBuf,
        key: String,
        file: PathBuf,
        location: Location,
        reason: String,
    },
    #[error("{}:{location}: `{key}` is empty", file.display())]
    Empty {
        key: String,
        file: PathBuf,
        location: Location,
    },
}

impl SecretRef {
    /// Reads the secret now (environment or file), trimming a trailing newline from files.
    pub fn resolve(&self) -> Result<String, SecretError> {
        let value = match &self.source {
            SecretSource::Literal(value) => value.clone(),
            SecretSource::Env(var) => std::env::var(var).map_err(|_| SecretError::EnvMissing {
                var: var.clone(),
                key: self.key.clone(),
                file: self.file.clone(),
                location: self.location,
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|err| SecretError::FileUnreadable {
                    path: path.clone(),
                    key: self.key.clone(),
                    file: self.file.clone(),
                    location: self.location,
                    reason: err.to_string().to_lowercase(),
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                key: self.key.clone(),
                file: self.file.clone(),
                location: self.location,
            });
        }
        Ok(value)
    }
}

/// One credential, checked.
#[derive(Debug, Clone)]
pub struct CredentialConfig {
    pub name: CredentialName,
    pub vendor: String,
    pub auth: AuthKind,
    pub token: Option<SecretRef>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretRef>,
    pub refresh_token: Option<SecretRef>,
    pub scope: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    pub base_url: Option<String>,
    /// For `auth: url`: the secret URL that is the whole address (a webhook's).
    pub url: Option<SecretRef>,
    pub token_url: Option<String>,
    /// For an SMTP vendor: how the connection is secured (see [`crate::http::smtp`]).
    pub tls: crate::http::smtp::SmtpTls,
    /// The registered redirect URI for `auth login` (see [`DEFAULT_REDIRECT_URI`]).
    pub redirect_uri: String,
    pub authorize_url: Option<String>,
    /// `Some(0)`: no limiter; `Some(n)`: n requests per minute; `None`: the preset's budget.
    pub rate_limit_per_minute: Option<u32>,
    /// `None`: no cap; `Some(n)`: at most n requests open at once (see [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: Option<u32>,
    /// The most pages one call of a `paginate` action fetches (at least 1; see [`DEFAULT_MAX_PAGES`]).
    pub max_pages: u32,
    /// The longest wait asked by the vendor that a call honours (more than zero; see
    /// [`DEFAULT_MAX_WAIT`]).
    pub max_wait: Duration,
    /// Where the credential is defined.
    pub file: PathBuf,
    pub location: Location,
}

/// `blockyard.yaml`, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Where history and records are kept (relative paths are relative to the file's directory).
    pub data_dir: PathBuf,
    /// Global variables, seen by templates as `vars.*`.
    pub vars: IndexMap<String, Value>,
    pub credentials: IndexMap<CredentialName, CredentialConfig>,
    /// The bearer token `blockyard serve`'s API requires (`BLOCKYARD_TOKEN` overrides it).
    pub token: Option<SecretRef>,
    /// How long one evaluation of a rhai rule (a `when:`) may run; see [`crate::rules`].
    pub rule_time_limit: Duration,
    /// The URL of a running `blockyard serve` (`http://127.0.0.1:8080`) that the CLI's state
    /// commands go through instead of the data dir (`--server` and `BLOCKYARD_SERVER` win).
    pub server: Option<String>,
    /// The named tokens of `blockyard serve`'s API, in the file's order.
    pub api_tokens: Vec<ApiTokenConfig>,
    /// `blockyard serve`'s connection bounds and extra host names.
    pub serve: ServeConfig,
    /// The alert of every workflow without a `notify:` of its own, its text compiled.
    pub notify: Option<std::sync::Arc<crate::notify::Notify>>,
    /// The default mass-change guard (`guard:`), for workflows without their own.
    pub guard: Option<crate::compile::Guard>,
    /// `match_warning:`, in percent (see [`crate::plan::load_warning`]).
    pub match_warning: f64,
    /// `store:`: where what blockyard keeps is (see [`StoreConfig`]).
    pub store: StoreConfig,
    /// `retention:`: what `serve` prunes and deletes by itself (off unless set).
    pub retention: crate::service::retention::Retention,
}

/// `store:`, checked. Absent or `sled`: the sled store in [`Config::data_dir`]. `postgres`:
/// a PostgreSQL database, its URL a secret field (`${ENV_VAR}` or `file:/path`; it holds a
/// password), read when a command opens the store:
///
/// ```yaml
/// store:
///   postgres:
///     url: ${BLOCKYARD_POSTGRES_URL}
/// ```
#[derive(Debug, Clone, Default)]
pub enum StoreConfig {
    #[default]
    Sled,
    Postgres {
        url: SecretRef,
    },
}

/// One named API token, checked: its value is read when `serve` starts.
#[derive(Debug, Clone)]
pub struct ApiTokenConfig {
    pub name: String,
    pub role: crate::server::Role,
    pub token: SecretRef,
}

/// `serve:`, checked, with the defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeConfig {
    pub limits: crate::server::HttpLimits,
    /// Names a loopback `serve` answers to besides `localhost`, `127.0.0.1` and `[::1]`; off
    /// loopback, when set, the only names (with the listen address) it answers to.
    pub allowed_hosts: Vec<String>,
}

/// A problem with `blockyard.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{}`: {reason}; pass `--config FILE` or create `blockyard.yaml` (see `examples/blockyard.yaml`)", file.display())]
    Unreadable { file: PathBuf, reason: String },
    #[error("{}:{location}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        location: Location,
        message: String,
    },
    #[error("{}:{location}: credential `{credential}` uses `auth: {auth}` but has no `{key}`; add it", file.display())]
    MissingField {
        file: PathBuf,
        location: Location,
        credential: String,
        auth: &'static str,
        key: &'static str,
    },
}

impl Config {
    /// Reads `explicit`, or `./blockyard.yaml` when no file is named.
    pub fn find(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match explicit {
            Some(path) => Config::load(path),
            None => Config::load(Path::new("blockyard.yaml")),
        }
    }

    /// Reads and checks one file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Unreadable {
            file: path.to_owned(),
            reason: err.to_string().to_lowercase(),
        })?;
        Config::parse(path, &text)
    }

    /// Checks `text` as if read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        crate::spec::limits::check(text).map_err(|err| ConfigError::Invalid {
            file: file.to_owned(),
            location: err.location,
            message: format!("{}; {}", err.limit, err.limit.hint()),
        })?;
        let spec: ConfigSpec = serde_yaml::from_str(text).map_err(|err| ConfigError::Invalid {
            file: file.to_owned(),
            location: crate::spec::yaml_error_location(&err),
            message: crate::spec::reword(&err.to_string()),
        })?;
        let map = SourceMap::build(text);
        let dir = file.parent().unwrap_or(Path::new("."));
        let data_dir = spec
            .data_dir
            .map(|d| if d.is_absolute() { d } else { dir.join(d) })
            .unwrap_or_else(|| dir.join(".blockyard"));
        let mut credentials = IndexMap::new();
        for (name, cred) in spec.credentials {
            let at = |key: Option<&str>| {
                let mut path = YamlPath::root().key("credentials").key(&name);
                if let Some(key) = key {
                    path = path.key(key);
                    map.value_location(&path)
                } else {
                    map.key_location(&path)
                }
            };
            let secret = |key: &str, value: &Option<String>| {
                value.as_ref().map(|value| SecretRef {
                    source: SecretSource::parse(value),
                    key: format!("credentials.{name}.{key}"),
                    file: file.to_owned(),
                    location: at(Some(key)),
                })
            };
            let invalid = |key: &str, message: &str| ConfigError::Invalid {
                file: file.to_owned(),
                location: at(Some(key)),
                message: format!("credentials.{name}.{key}: {message}"),
            };
            let max_pages = match cred.max_pages {
                None => DEFAULT_MAX_PAGES,
                Some(0) => {
                    let message =
                        format!("must be at least 1 (the default is {DEFAULT_MAX_PAGES})");
                    return Err(invalid("max_pages", &message));
                }
                Some(n) => n,
            };
            let max_wait = match &cred.max_wait {
                None => DEFAULT_MAX_WAIT,
                Some(DurationText(text)) => match crate::compile::parse_duration(text) {
                    Some(wait) if !wait.is_zero() => wait,
                    Some(_) => {
                        let message = "must be more than zero (the default is `15m`)";
                        return Err(invalid("max_wait", message));
                    }
                    None => {
                        let message = format!("`{text}` is not a duration; write a number and a unit, such as `30s`, `15m` or `1h`");
                        return Err(invalid("max_wait", &message));
                    }
                },
            };
            let config = CredentialConfig {
                name: CredentialName(name.clone()),
                vendor: cred.vendor.clone(),
                auth: cred.auth,
                token: secret("token", &cred.token),
                client_id: cred.client_id.clone(),
                client_secret: secret("client_secret", &cred.client_secret),
                refresh_token: secret("refresh_token", &cred.refresh_token),
                scope: cred.scope.clone(),
                username: cred.username.clone(),
                password: secret("password", &cred.password),
                base_url: cred.base_url.clone(),
                url: secret("url", &cred.url),
                token_url: cred.token_url.clone(),
                tls: cred.tls.unwrap_or_default(),
                redirect_uri: cred
                    .redirect_uri
                    .clone()
                    .unwrap_or_else(|| DEFAULT_REDIRECT_URI.to_owned()),
                authorize_url: cred.authorize_url.clone(),
                rate_limit_per_minute: cred.rate_limit_per_minute,
                max_connections: match cred.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS) {
                    0 => None,
                    n => Some(n),
                },
                max_pages,
                max_wait,
                file: file.to_owned(),
                location: at(None),
            };
            let missing = |key: &'static str| ConfigError::MissingField {
                file: file.to_owned(),
                location: at(None),
                credential: name.clone(),
                auth: auth_name(cred.auth),
                key,
            };
            let needed: &[(&'static str, bool)] = match cred.auth {
                AuthKind::Bearer => &[("token", config.token.is_some())],
                AuthKind::Basic => &[
                    ("username", config.username.is_some()),
                    ("password", config.password.is_some()),
                ],
                AuthKind::Oauth2ClientCredentials => &[
                    ("client_id", config.client_id.is_some()),
                    ("client_secret", config.client_secret.is_some()),
                ],
                // The refresh token may come from `blockyard auth login` instead.
                AuthKind::Oauth2RefreshToken => &[
                    ("client_id", config.client_id.is_some()),
                    ("client_secret", config.client_secret.is_some()),
                ],
                AuthKind::Url => &[("url", config.url.is_some())],
            };
            if let Some((key, _)) = needed.iter().find(|(_, present)| !present) {
                return Err(missing(key));
            }
            let smtp = config
                .base_url
                .as_deref()
                .is_some_and(|url| url.starts_with("smtp://"));
            if cred.tls.is_some() && !smtp {
                return Err(invalid(
                    "tls",
                    "`tls` is how an SMTP connection is secured; this credential's `base_url` is not `smtp://…`, so remove the key (HTTPS comes from the `https://` in the URL)",
                ));
            }
            if config.tls == crate::http::smtp::SmtpTls::None
                && !config
                    .base_url
                    .as_deref()
                    .is_some_and(crate::http::smtp::is_loopback_url)
            {
                return Err(invalid(
                    "tls",
                    "`none` sends the password and the mail in plain text, so it is only for a loopback server (`base_url: smtp://127.0.0.1:PORT`, the sandbox's sink); use `starttls` or `tls` for any other",
                ));
            }
            credentials.insert(CredentialName(name), config);
        }
        let token = spec.token.as_ref().map(|value| SecretRef {
            source: SecretSource::parse(value),
            key: "token".to_owned(),
            file: file.to_owned(),
            location: map.value_location(&YamlPath::root().key("token")),
        });
        let rule_time_limit = match &spec.rule_time_limit {
            None => crate::rules::DEFAULT_TIME_LIMIT,
            Some(text) => {
                let invalid = |message: String| ConfigError::Invalid {
                    file: file.to_owned(),
                    location: map.value_location(&YamlPath::root().key("rule_time_limit")),
                    message,
                };
                match crate::compile::parse_duration(text) {
                    Some(limit) if !limit.is_zero() => limit,
                    Some(_) => {
                        return Err(invalid(
                            "`rule_time_limit` must be more than 0: it is how long one rule may run"
                                .to_owned(),
                        ))
                    }
                    None => return Err(invalid(format!(
                        "invalid duration `{text}` for `rule_time_limit` (write a number and a unit: `10ms`, `1s`)"
                    ))),
                }
            }
        };
        if let Some(server) = &spec.server {
            let valid = url::Url::parse(server)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !valid {
                return Err(ConfigError::Invalid {
                    file: file.to_owned(),
                    location: map.value_location(&YamlPath::root().key("server")),
                    message: format!("server: `{server}` is not an http(s) URL; write the address `blockyard serve` prints, `http://127.0.0.1:8080`"),
                });
            }
        }
        let mut api_tokens = Vec::with_capacity(spec.api_tokens.len());
        for (name, token) in &spec.api_tokens {
            let path = YamlPath::root().key("api_tokens").key(name);
            let invalid = |key: &str, message: String| ConfigError::Invalid {
                file: file.to_owned(),
                location: map.value_location(&path.clone().key(key)),
                message: format!("api_tokens.{name}.{key}: {message}"),
            };
            let role = crate::server::Role::parse(&token.role).ok_or_else(|| {
                invalid(
                    "role",
                    format!(
                        "unknown role `{}`; use `viewer`, `operator` or `admin`",
                        token.role
                    ),
                )
            })?;
            let source = SecretSource::parse(&token.token);
            if matches!(source, SecretSource::Literal(_)) {
                return Err(invalid(
                    "token",
                    "write `${ENV_VAR}` or `file:/path`, not the token itself: the config file is not a secret".to_owned(),
                ));
            }
            api_tokens.push(ApiTokenConfig {
                name: name.clone(),
                role,
                token: SecretRef {
                    source,
                    key: format!("api_tokens.{name}.token"),
                    file: file.to_owned(),
                    location: map.value_location(&path.clone().key("token")),
                },
            });
        }
        let serve = {
            let invalid = |key: &str, message: String| ConfigError::Invalid {
                file: file.to_owned(),
                location: map.value_location(&YamlPath::root().key("serve").key(key)),
                message: format!("serve.{key}: {message}"),
            };
            let mut limits = crate::server::HttpLimits::default();
            if let Some(DurationText(text)) = &spec.serve.header_timeout {
                limits.header_timeout = match crate::compile::parse_duration(text) {
                    Some(timeout) if !timeout.is_zero() => timeout,
                    Some(_) => {
                        return Err(invalid(
                            "header_timeout",
                            "must be more than zero (the default is `10s`)".to_owned(),
                        ))
                    }
                    None => {
                        return Err(invalid("header_timeout", format!("`{text}` is not a duration; write a number and a unit, such as `10s` or `1m`")))
                    }
                };
            }
            match spec.serve.max_connections {
                None => {}
                Some(0) => {
                    return Err(invalid(
                        "max_connections",
                        format!(
                            "must be at least 1 (the default is {})",
                            crate::server::HttpLimits::DEFAULT_MAX_CONNECTIONS
                        ),
                    ))
                }
                Some(n) => limits.max_connections = n,
            }
            ServeConfig {
                limits,
                allowed_hosts: spec.serve.allowed_hosts.clone(),
            }
        };
        let notify = match &spec.notify {
            None => None,
            Some(notify) => Some(crate::notify::Notify::compile(notify).map_err(|err| {
                use crate::notify::NotifyProblem;
                let key = err.key;
                ConfigError::Invalid {
                    file: file.to_owned(),
                    location: map.value_location(&YamlPath::root().key("notify").key(key)),
                    message: match err.problem {
                        NotifyProblem::Template(err) => format!("invalid template in `notify.{key}`: {err}; write expressions as `{{{{name}}}}` or `<<name>>`"),
                        NotifyProblem::Duration(found) => format!("invalid duration `{found}` for `notify.{key}`; write a number and a unit, such as `4h` or `1d`"),
                        NotifyProblem::Invalid(message) => format!("invalid `notify.{key}`: {message}"),
                    },
                }
            })?),
        };
        let guard = match &spec.guard {
            None => None,
            Some(guard) => match crate::compile::guard_check(guard, true) {
                Ok(guard) => Some(guard),
                Err(problem) => {
                    let mut path = YamlPath::root().key("guard");
                    let location = match problem.key {
                        Some(key) => {
                            path = path.key(key);
                            map.value_location(&path)
                        }
                        None => map.key_location(&path),
                    };
                    return Err(ConfigError::Invalid {
                        file: file.to_owned(),
                        location,
                        message: problem.message,
                    });
                }
            },
        };
        let match_warning = match &spec.match_warning {
            None => crate::plan::DEFAULT_MATCH_WARNING,
            Some(text) => match text
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p))
            {
                Some(p) => p,
                None => {
                    return Err(ConfigError::Invalid {
                        file: file.to_owned(),
                        location: map.value_location(&YamlPath::root().key("match_warning")),
                        message: format!("`match_warning` `{text}` is not a share; write a percentage from 0% to 100%, such as `50%`"),
                    })
                }
            },
        };
        let store = store_config(spec.store.as_ref(), file, &map)?;
        let retention = retention_config(&spec.retention, file, &map)?;
        Ok(Config {
            retention,
            guard,
            match_warning,
            store,
            file: file.to_owned(),
            data_dir,
            vars: spec.vars,
            credentials,
            token,
            rule_time_limit,
            server: spec.server,
            api_tokens,
            serve,
            notify,
        })
    }

    /// The context templates see outside a run: `vars` (and empty `record`, `blocks`, `run`).
    pub fn context(&self) -> Value {
        serde_json::json!({
            "vars": Value::Object(self.vars.clone().into_iter().collect()),
            "record": {},
            "blocks": {},
            "run": {},
        })
    }
}

/// Checks `store:` (see [`StoreConfig`]).
/// `retention:`, checked: each age a positive duration, `payloads_after` shorter than
/// `runs_after`, and `every` only beside an age.
fn retention_config(
    spec: &RetentionSpec,
    file: &Path,
    map: &SourceMap,
) -> Result<crate::service::retention::Retention, ConfigError> {
    use crate::service::retention::{Retention, DEFAULT_EVERY};
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: file.to_owned(),
        location: map.value_location(&YamlPath::root().key("retention").key(key)),
        message: format!("retention.{key}: {message}"),
    };
    let duration = |key: &str, value: &Option<DurationText>, zero: &str| {
        let Some(DurationText(text)) = value else {
            return Ok(None);
        };
        match crate::compile::parse_duration(text) {
            Some(d) if !d.is_zero() => Ok(Some((d, text.trim().to_owned()))),
            Some(_) => Err(invalid(key, format!("must be more than zero; {zero}"))),
            None => Err(invalid(
                key,
                format!(
                    "`{text}` is not a duration; write a number and a unit, such as `30d` or `12h`"
                ),
            )),
        }
    };
    let payloads = duration(
        "payloads_after",
        &spec.payloads_after,
        "leave it out to keep payloads",
    )?;
    let runs = duration("runs_after", &spec.runs_after, "leave it out to keep runs")?;
    let every = duration(
        "every",
        &spec.every,
        "leave it out to run a pass every hour",
    )?;
    if let (Some((payloads, p)), Some((runs, r))) = (&payloads, &runs) {
        if payloads >= runs {
            return Err(invalid(
                "payloads_after",
                format!("`{p}` is not shorter than `runs_after` (`{r}`): runs are deleted whole before their payloads would be blanked; shorten it, or leave it out"),
            ));
        }
    }
    if payloads.is_none() && runs.is_none() && every.is_some() {
        return Err(invalid(
            "every",
            "sets how often retention runs, but neither `payloads_after` nor `runs_after` is set; add one, or leave `every` out".to_owned(),
        ));
    }
    Ok(Retention {
        payloads_after: payloads.map(|(d, _)| d),
        runs_after: runs.map(|(d, _)| d),
        every: every.map_or(DEFAULT_EVERY, |(d, _)| d),
    })
}

fn store_config(
    value: Option<&serde_yaml::Value>,
    file: &Path,
    map: &SourceMap,
) -> Result<StoreConfig, ConfigError> {
    use serde_yaml::Value as Yaml;
    let at = YamlPath::root().key("store");
    let invalid = |path: &YamlPath, message: String| ConfigError::Invalid {
        file: file.to_owned(),
        location: map.value_location(path),
        message,
    };
    const WRITE: &str = "write `store: sled` (the data dir, the default) or `store: {postgres: {url: \"${BLOCKYARD_POSTGRES_URL}\"}}`";
    let postgres = match value {
        None | Some(Yaml::Null) => return Ok(StoreConfig::Sled),
        Some(Yaml::String(name)) if name == "sled" => return Ok(StoreConfig::Sled),
        Some(Yaml::String(name)) if name == "postgres" => {
            return Err(invalid(
                &at,
                format!("`store: postgres` needs the database's URL; {WRITE}"),
            ))
        }
        Some(Yaml::Mapping(entries)) if entries.len() == 1 => match entries.get("postgres") {
            Some(postgres) => postgres,
            None => {
                let key = entries.keys().next().and_then(Yaml::as_str).unwrap_or("?");
                return Err(invalid(
                    &at,
                    format!("`store.{key}` is not a store; {WRITE}"),
                ));
            }
        },
        Some(Yaml::String(name)) => {
            return Err(invalid(
                &at,
                format!("`store` `{name}` is not a store; {WRITE}"),
            ))
        }
        Some(_) => {
            return Err(invalid(&at, format!("`store` is not a store; {WRITE}")));
        }
    };
    let at = at.key("postgres");
    let Yaml::Mapping(entries) = postgres else {
        return Err(invalid(
            &at,
            format!("`store.postgres` is a mapping with `url`; {WRITE}"),
        ));
    };
    if let Some(key) = entries
        .keys()
        .find(|key| key.as_str() != Some("url"))
        .map(|key| key.as_str().unwrap_or("?").to_owned())
    {
        return Err(invalid(
            &at.clone().key(&key),
            format!(
                "`store.postgres.{key}` is not a key of `store.postgres`; its one key is `url`"
            ),
        ));
    }
    let url_at = at.key("url");
    let url = match entries.get("url") {
        Some(Yaml::String(url)) if !url.trim().is_empty() => url,
        _ => {
            return Err(invalid(
                &url_at,
                format!("`store.postgres.url` is missing or empty; {WRITE}"),
            ))
        }
    };
    let source = SecretSource::parse(url);
    if let SecretSource::Literal(text) = &source {
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(invalid(
                &url_at,
                format!("`store.postgres.url` `{}` is not a `postgres://` URL nor `${{ENV_VAR}}` or `file:/path`; {WRITE}", crate::store::postgres::redact(text)),
            ));
        }
    }
    Ok(StoreConfig::Postgres {
        url: SecretRef {
            source,
            key: "store.postgres.url".to_owned(),
            file: file.to_owned(),
            location: map.value_location(&url_at),
        },
    })
}

/// The YAML spelling of an auth style.
pub fn auth_name(auth: AuthKind) -> &'static str {
    match auth {
        AuthKind::Bearer => "bearer",
        AuthKind::Oauth2ClientCredentials => "oauth2_client_credentials",
        AuthKind::Oauth2RefreshToken => "oauth2_refresh_token",
        AuthKind::Basic => "basic",
        AuthKind::Url => "url",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{HttpLimits, Role};

    const SAMPLE: &str = include_str!("../../examples/blockyard.yaml");

    #[test]
    fn the_sample_config_loads() {
        let config = Config::parse(Path::new("examples/blockyard.yaml"), SAMPLE).unwrap();
        assert_eq!(config.credentials.len(), 5);
        let webex = &config.credentials[&CredentialName::new("webex")];
        assert_eq!(webex.auth, AuthKind::Oauth2RefreshToken);
        assert_eq!(
            webex.client_secret.as_ref().unwrap().source,
            SecretSource::Env("WEBEX_CLIENT_SECRET".into())
        );
        let scim = &config.credentials[&CredentialName::new("scim")];
        assert_eq!(
            scim.token.as_ref().unwrap().source,
            SecretSource::File("/etc/blockyard/scim-token".into())
        );
        let alerts = &config.credentials[&CredentialName::new("alerts")];
        assert_eq!(alerts.auth, AuthKind::Url);
        assert_eq!(
            alerts.url.as_ref().unwrap().source,
            SecretSource::Env("SLACK_WEBHOOK_URL".into())
        );
    }

    #[test]
    fn the_sample_points_real_vendors_at_their_own_urls() {
        let config = Config::parse(Path::new("examples/blockyard.yaml"), SAMPLE).unwrap();
        let presets = crate::preset::PresetRegistry::builtin();
        for credential in config.credentials.values() {
            let Some(url) = &credential.base_url else {
                continue;
            };
            let vendor = presets.vendor(&credential.vendor).unwrap();
            match &vendor.spec.base_url {
                // An override in the sample for real vendors is the vendor's own URL...
                Some(own) => assert_eq!(url, own, "credential `{}`", credential.name),
                // ...or, for a service with no fixed URL (SCIM), an HTTPS one that is not local.
                None => assert!(
                    url.starts_with("https://") && !url.contains("127.0.0.1"),
                    "credential `{}`: {url}",
                    credential.name
                ),
            }
        }
    }

    #[test]
    fn an_unset_variable_names_itself_the_key_and_the_line() {
        let text = "credentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: ${BLOCKYARD_TEST_SURELY_UNSET}\n";
        let config = Config::parse(Path::new("b.yaml"), text).unwrap();
        let err = config.credentials[&CredentialName::new("calendly")]
            .token
            .as_ref()
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.yaml:5:12: environment variable `BLOCKYARD_TEST_SURELY_UNSET` (for `credentials.calendly.token`) is not set; export it or point `credentials.calendly.token` at a file with `file:/path`"
        );
    }

    #[test]
    fn a_missing_field_and_an_unknown_key_are_errors() {
        let text = "credentials:\n  webex:\n    vendor: webex\n    auth: oauth2_refresh_token\n    client_id: x\n";
        let err = Config::parse(Path::new("b.yaml"), text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.yaml:2:3: credential `webex` uses `auth: oauth2_refresh_token` but has no `client_secret`; add it"
        );
        // Without a `refresh_token`, `auth login` provides one.
        let text = "credentials:\n  webex:\n    vendor: webex\n    auth: oauth2_refresh_token\n    client_id: x\n    client_secret: y\n";
        let config = Config::parse(Path::new("b.yaml"), text).unwrap();
        let webex = &config.credentials[&CredentialName::new("webex")];
        assert!(webex.refresh_token.is_none());
        assert_eq!(webex.redirect_uri, "http://127.0.0.1:8765/callback");
        let err = Config::parse(Path::new("b.yaml"), "varz: {}\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("b.yaml:1:1: unknown field `varz`"),
            "{err}"
        );
    }

    #[test]
    fn the_api_token_is_a_secret_with_its_place() {
        let config =
            Config::parse(Path::new("b.yaml"), "data_dir: d\ntoken: ${SERVE_TOKEN}\n").unwrap();
        let token = config.token.unwrap();
        assert_eq!(token.source, SecretSource::Env("SERVE_TOKEN".into()));
        assert_eq!(token.key, "token");
        assert_eq!(token.location, Location::new(2, 8));
        assert!(Config::parse(Path::new("b.yaml"), "data_dir: d\n")
            .unwrap()
            .token
            .is_none());
    }

    #[test]
    fn named_api_tokens_have_a_role_and_a_secret_reference() {
        let text = "api_tokens:\n  ci:\n    role: viewer\n    token: ${CI_TOKEN}\n  alice:\n    role: operator\n    token: file:/etc/blockyard/alice\n";
        let config = Config::parse(Path::new("b.yaml"), text).unwrap();
        let tokens: Vec<(&str, Role, &SecretSource, Location)> = config
            .api_tokens
            .iter()
            .map(|t| (t.name.as_str(), t.role, &t.token.source, t.token.location))
            .collect();
        assert_eq!(
            tokens,
            [
                (
                    "ci",
                    Role::Viewer,
                    &SecretSource::Env("CI_TOKEN".into()),
                    Location::new(4, 12)
                ),
                (
                    "alice",
                    Role::Operator,
                    &SecretSource::File("/etc/blockyard/alice".into()),
                    Location::new(7, 12)
                ),
            ]
        );
        let err = |text: &str| {
            Config::parse(Path::new("b.yaml"), text)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("api_tokens:\n  ci:\n    role: reader\n    token: ${CI_TOKEN}\n"),
            "b.yaml:3:11: api_tokens.ci.role: unknown role `reader`; use `viewer`, `operator` or `admin`"
        );
        assert_eq!(
            err("api_tokens:\n  ci:\n    role: viewer\n    token: hunter2\n"),
            "b.yaml:4:12: api_tokens.ci.token: write `${ENV_VAR}` or `file:/path`, not the token itself: the config file is not a secret"
        );
        assert_eq!(
            err("api_tokens:\n  ci:\n    role: viewer\n    token: ${CI_TOKEN}\n    scope: all\n"),
            "b.yaml:5:5: api_tokens.ci: unknown field `scope`, expected `role` or `token`"
        );
    }

    #[test]
    fn retention_is_off_by_default_and_each_key_is_checked() {
        use crate::service::retention::Retention;
        let config = Config::parse(Path::new("b.yaml"), "data_dir: d\n").unwrap();
        assert_eq!(config.retention, Retention::default());
        assert!(config.retention.is_off());
        let config = Config::parse(
            Path::new("b.yaml"),
            "retention: {payloads_after: 30d, runs_after: 365d}\n",
        )
        .unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(
            config.retention,
            Retention {
                payloads_after: Some(30 * day),
                runs_after: Some(365 * day),
                every: Duration::from_secs(3600),
            }
        );
        let config = Config::parse(
            Path::new("b.yaml"),
            "retention:\n  runs_after: 90d\n  every: 15m\n",
        )
        .unwrap();
        assert_eq!(
            config.retention,
            Retention {
                payloads_after: None,
                runs_after: Some(90 * day),
                every: Duration::from_secs(900),
            }
        );
        let err = |text: &str| {
            Config::parse(Path::new("b.yaml"), text)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("retention:\n  runs_after: a year\n"),
            "b.yaml:2:15: retention.runs_after: `a year` is not a duration; write a number and a unit, such as `30d` or `12h`"
        );
        assert_eq!(
            err("retention:\n  payloads_after: 30\n"),
            "b.yaml:2:19: retention.payloads_after: `30` is not a duration; write a number and a unit, such as `30d` or `12h`"
        );
        assert_eq!(
            err("retention:\n  payloads_after: 0d\n"),
            "b.yaml:2:19: retention.payloads_after: must be more than zero; leave it out to keep payloads"
        );
        assert_eq!(
            err("retention:\n  runs_after: 0s\n"),
            "b.yaml:2:15: retention.runs_after: must be more than zero; leave it out to keep runs"
        );
        assert_eq!(
            err("retention:\n  runs_after: 30d\n  every: 0m\n"),
            "b.yaml:3:10: retention.every: must be more than zero; leave it out to run a pass every hour"
        );
        assert_eq!(
            err("retention:\n  payloads_after: 400d\n  runs_after: 365d\n"),
            "b.yaml:2:19: retention.payloads_after: `400d` is not shorter than `runs_after` (`365d`): runs are deleted whole before their payloads would be blanked; shorten it, or leave it out"
        );
        assert_eq!(
            err("retention:\n  every: 1h\n"),
            "b.yaml:2:10: retention.every: sets how often retention runs, but neither `payloads_after` nor `runs_after` is set; add one, or leave `every` out"
        );
        assert_eq!(
            err("retention:\n  keep_runs: 30d\n"),
            "b.yaml:2:3: retention: unknown field `keep_runs`, expected one of `payloads_after`, `runs_after`, `every`"
        );
    }

    #[test]
    fn serve_limits_default_and_must_bound() {
        let config = Config::parse(Path::new("b.yaml"), "data_dir: d\n").unwrap();
        assert_eq!(config.serve, ServeConfig::default());
        let config = Config::parse(
            Path::new("b.yaml"),
            "serve:\n  header_timeout: 5s\n  max_connections: 32\n  allowed_hosts: [blockyard.internal]\n",
        )
        .unwrap();
        assert_eq!(
            config.serve,
            ServeConfig {
                limits: HttpLimits {
                    header_timeout: Duration::from_secs(5),
                    max_connections: 32
                },
                allowed_hosts: vec!["blockyard.internal".to_owned()],
            }
        );
        let err = |text: &str| {
            Config::parse(Path::new("b.yaml"), text)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("serve:\n  max_connections: 0\n"),
            "b.yaml:2:20: serve.max_connections: must be at least 1 (the default is 256)"
        );
        assert_eq!(
            err("serve:\n  header_timeout: soon\n"),
            "b.yaml:2:19: serve.header_timeout: `soon` is not a duration; write a number and a unit, such as `10s` or `1m`"
        );
        assert_eq!(
            err("serve:\n  header_timeout: 0s\n"),
            "b.yaml:2:19: serve.header_timeout: must be more than zero (the default is `10s`)"
        );
    }

    #[test]
    fn the_rule_time_limit_defaults_to_10ms_and_must_be_a_positive_duration() {
        let limit =
            |text: &str| Config::parse(Path::new("b.yaml"), text).map(|c| c.rule_time_limit);
        assert_eq!(limit("data_dir: d\n"), Ok(Duration::from_millis(10)));
        assert_eq!(limit("rule_time_limit: 2s\n"), Ok(Duration::from_secs(2)));
        assert_eq!(
            limit("rule_time_limit: 10 millis\n").unwrap_err().to_string(),
            "b.yaml:1:18: invalid duration `10 millis` for `rule_time_limit` (write a number and a unit: `10ms`, `1s`)"
        );
        assert_eq!(
            limit("rule_time_limit: 0ms\n").unwrap_err().to_string(),
            "b.yaml:1:18: `rule_time_limit` must be more than 0: it is how long one rule may run"
        );
    }

    #[test]
    fn a_config_nested_too_deep_is_refused_at_the_level_past_the_limit() {
        let text = format!("vars:\n  a: {}{}\n", "[".repeat(140), "]".repeat(140));
        let err = Config::parse(Path::new("b.yaml"), &text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.yaml:2:132: yaml nested more than 128 levels deep; nest mappings and lists at most 128 levels"
        );
    }

    #[test]
    fn max_connections_defaults_to_64_and_0_lifts_the_cap() {
        let text = |extra: &str| {
            format!("credentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: t\n{extra}")
        };
        let cap = |extra: &str| {
            Config::parse(Path::new("b.yaml"), &text(extra))
                .unwrap()
                .credentials[&CredentialName::new("calendly")]
                .max_connections
        };
        assert_eq!(cap(""), Some(64));
        assert_eq!(cap("    max_connections: 2\n"), Some(2));
        assert_eq!(cap("    max_connections: 0\n"), None);
        let err = |value: &str| {
            Config::parse(
                Path::new("b.yaml"),
                &text(&format!("    max_connections: {value}\n")),
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            err("-1"),
            "b.yaml:6:22: credentials.calendly.max_connections: invalid type: integer `-1`, expected a whole number"
        );
        assert_eq!(
            err("many"),
            r#"b.yaml:6:22: credentials.calendly.max_connections: invalid type: string "many", expected a whole number"#
        );
    }

    #[test]
    fn max_pages_and_max_wait_have_defaults_and_refuse_what_cannot_bound() {
        let text = |extra: &str| {
            format!("credentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: t\n{extra}")
        };
        let bounds = |extra: &str| {
            let config = Config::parse(Path::new("b.yaml"), &text(extra)).unwrap();
            let cred = &config.credentials[&CredentialName::new("calendly")];
            (cred.max_pages, cred.max_wait)
        };
        assert_eq!(bounds(""), (10_000, Duration::from_secs(900)));
        assert_eq!(
            bounds("    max_pages: 3\n    max_wait: 90s\n"),
            (3, Duration::from_secs(90))
        );
        let err = |extra: &str| {
            Config::parse(Path::new("b.yaml"), &text(extra))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("    max_pages: 0\n"),
            "b.yaml:6:16: credentials.calendly.max_pages: must be at least 1 (the default is 10000)"
        );
        assert_eq!(
            err("    max_pages: -1\n"),
            "b.yaml:6:16: credentials.calendly.max_pages: invalid type: integer `-1`, expected a whole number"
        );
        assert_eq!(
            err("    max_wait: 0s\n"),
            "b.yaml:6:15: credentials.calendly.max_wait: must be more than zero (the default is `15m`)"
        );
        assert_eq!(
            err("    max_wait: soon\n"),
            "b.yaml:6:15: credentials.calendly.max_wait: `soon` is not a duration; write a number and a unit, such as `30s`, `15m` or `1h`"
        );
        assert_eq!(
            err("    max_wait: 900\n"),
            "b.yaml:6:15: credentials.calendly.max_wait: `900` is not a duration; write a number and a unit, such as `30s`, `15m` or `1h`"
        );
    }

    #[test]
    fn the_store_is_sled_by_default_or_postgres_with_a_secret_url() {
        let store = |text: &str| Config::parse(Path::new("b.yaml"), text).map(|c| c.store);
        assert!(matches!(store("data_dir: d\n"), Ok(StoreConfig::Sled)));
        assert!(matches!(store("store: sled\n"), Ok(StoreConfig::Sled)));
        let Ok(StoreConfig::Postgres { url }) = store("store:\n  postgres:\n    url: ${PG_URL}\n")
        else {
            panic!("postgres")
        };
        assert_eq!(url.source, SecretSource::Env("PG_URL".to_owned()));
        assert_eq!(url.key, "store.postgres.url");
        let err = |text: &str| store(text).unwrap_err().to_string();
        let write = "write `store: sled` (the data dir, the default) or `store: {postgres: {url: \"${BLOCKYARD_POSTGRES_URL}\"}}`";
        assert_eq!(
            err("store: mysql\n"),
            format!("b.yaml:1:8: `store` `mysql` is not a store; {write}")
        );
        assert_eq!(
            err("store: postgres\n"),
            format!("b.yaml:1:8: `store: postgres` needs the database's URL; {write}")
        );
        assert_eq!(
            err("store:\n  mysql:\n    url: x\n"),
            format!("b.yaml:2:3: `store.mysql` is not a store; {write}")
        );
        assert_eq!(
            err("store:\n  postgres:\n    uri: ${PG_URL}\n"),
            "b.yaml:3:10: `store.postgres.uri` is not a key of `store.postgres`; its one key is `url`"
        );
        assert_eq!(
            err("store:\n  postgres: {}\n"),
            format!("b.yaml:2:13: `store.postgres.url` is missing or empty; {write}")
        );
        // A literal URL is checked, and its password never shown.
        assert_eq!(
            err("store:\n  postgres:\n    url: mysql://root:hunter2@db/app\n"),
            format!("b.yaml:3:10: `store.postgres.url` `mysql://root:***@db/app` is not a `postgres://` URL nor `${{ENV_VAR}}` or `file:/path`; {write}")
        );
    }
}

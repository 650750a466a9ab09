//! `blockyard auth login`'s protocol: OAuth 2.0 authorization code with PKCE (S256), through the
//! `oauth2` crate over the project's reqwest client (no second HTTP stack).
//!
//! [`Login::start`] takes the authorize and token URLs and the PKCE switch from the vendor's
//! preset (a credential's `authorize_url`/`token_url` override them, for the sandbox), the scopes
//! from the credential's `scope` or else every scope the vendor's actions declare, and the
//! registered `redirect_uri`; it makes the authorize URL with a fresh `state` and PKCE challenge.
//! [`Login::code_from`] reads what came back (the redirect's query, or text pasted by hand: the
//! whole URL or the bare code), checks `state`, and turns a vendor's `error=` into words;
//! [`Login::exchange`] trades the code for tokens and [`LoginTokens::store`] writes them to the
//! token store as a [`LOGIN`] entry, which the credential then refreshes like any other.
//!
//! Every failure is a [`LoginError`] that says what happened in the user's words and what to do:
//! a denied consent, a redirect URI the app does not have registered, a wrong client secret, a
//! busy loopback port. No secret (client secret, code, verifier, tokens) is in any message.

use std::time::Duration;

use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::config::{auth_name, Config, CredentialConfig, CredentialName, SecretError};
use crate::preset::{AuthKind, PresetRegistry, Vendor};
use crate::store::tokens::{CredentialTokens, StoredToken, TokenStoreError, LOGIN};

/// The longest a token request of a login may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Fields a vendor adds to its token response (Webex: how long the refresh token lives).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VendorFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token_expires_in: Option<u64>,
}

impl oauth2::ExtraTokenFields for VendorFields {}

type TokenResponse = oauth2::StandardTokenResponse<VendorFields, oauth2::basic::BasicTokenType>;

type LoginClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    TokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("no credential `{credential}` in `{}`; add it under `credentials:` (see `examples/blockyard.yaml`)", file.display())]
    UnknownCredential {
        credential: String,
        file: std::path::PathBuf,
    },
    #[error("credential `{credential}` uses `auth: {auth}`; `blockyard auth login` is for `auth: oauth2_refresh_token` credentials")]
    NotOAuth {
        credential: String,
        auth: &'static str,
    },
    #[error("vendor `{vendor}` has no OAuth {which} URL; set `{which}_url` on credential `{credential}`")]
    NoEndpoint {
        credential: String,
        vendor: String,
        which: &'static str,
    },
    #[error("`{key}` of credential `{credential}` is not a valid URL (`{url}`): {reason}")]
    BadUrl {
        credential: String,
        key: &'static str,
        url: String,
        reason: String,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot listen on `{addr}` for the redirect URI `{redirect_uri}`: the port is in use by another program; stop that program, or register another loopback redirect URI with the vendor's app and set it as `redirect_uri` of credential `{credential}`")]
    PortInUse {
        credential: String,
        addr: String,
        redirect_uri: String,
    },
    #[error("cannot listen on `{addr}` for the redirect URI `{redirect_uri}`: {reason}; use `--paste` to paste the redirected address instead")]
    CannotListen {
        addr: String,
        redirect_uri: String,
        reason: String,
    },
    #[error("no redirect reached `{redirect_uri}` within {waited}; if the vendor's page said the redirect URI does not match, register `{redirect_uri}` exactly in the vendor's OAuth app (or set `redirect_uri` of credential `{credential}` to the one registered) and run `blockyard auth login {credential}` again")]
    NoRedirect {
        credential: String,
        redirect_uri: String,
        waited: String,
    },
    #[error("access was denied at the vendor's consent page ({error}{}); run `blockyard auth login {credential}` again and allow access, or ask an administrator of the vendor account to allow the app", description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        credential: String,
        error: String,
        description: Option<String>,
    },
    #[error("the vendor refused the authorization request ({error}{}); check `client_id`, `scope` and `redirect_uri` of credential `{credential}` against the vendor's OAuth app", description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    AuthorizeRefused {
        credential: String,
        error: String,
        description: Option<String>,
    },
    #[error("the redirect's `state` is not this login's (an older attempt's page, or a forged link); run `blockyard auth login {credential}` again and use the newest authorize URL")]
    StateMismatch { credential: String },
    #[error("the pasted text has no authorization code; paste the whole address the browser was sent to (it has `code=` in it), or the code alone")]
    NoCode,
    #[error("the vendor refused the client id `{client_id}` with this client secret (invalid_client); copy `client_id` and `client_secret` of credential `{credential}` again from the vendor's OAuth app")]
    WrongClientSecret {
        credential: String,
        client_id: String,
    },
    #[error("the vendor says the redirect URI does not match ({description}); register `{redirect_uri}` exactly in the vendor's OAuth app, or set `redirect_uri` of credential `{credential}` to the one registered")]
    RedirectMismatch {
        credential: String,
        redirect_uri: String,
        description: String,
    },
    #[error("the vendor refused the authorization code ({error}: {description}); codes are single-use and expire within minutes: run `blockyard auth login {credential}` again")]
    CodeRefused {
        credential: String,
        error: String,
        description: String,
    },
    #[error("cannot reach the token endpoint `{url}`: {reason}")]
    Transport { url: String, reason: String },
    #[error(
        "the token endpoint `{url}` answered {status} with no token in a form blockyard reads"
    )]
    BadResponse { url: String, status: String },
    #[error("the vendor issued no refresh token to credential `{credential}`; blockyard needs one to keep working after the access token expires (check that the app is allowed offline access)")]
    NoRefreshToken { credential: String },
    #[error("credential `{credential}`: {source}")]
    Store {
        credential: String,
        source: TokenStoreError,
    },
}

/// A login under way: the authorize URL to open, and what checks the answer.
#[derive(Debug)]
pub struct Login {
    client: LoginClient,
    credential: CredentialName,
    client_id: String,
    token_url: String,
    /// Where the user consents.
    pub authorize_url: url::Url,
    /// The registered redirect URI the vendor sends the browser back to.
    pub redirect_uri: url::Url,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    state: CsrfToken,
    verifier: Option<PkceCodeVerifier>,
}

/// What a login obtained.
pub struct LoginTokens {
    access: String,
    refresh: String,
    expires_in: Option<u64>,
    refresh_expires_in: Option<u64>,
    /// The scopes the vendor granted (those asked for, when its answer does not say).
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for LoginTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginTokens")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Every scope the actions of `vendor` declare, in the order they first appear.
pub fn vendor_scopes(vendor: &Vendor) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for action in vendor.actions.values() {
        for scope in &action.spec.scopes {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
    }
    scopes
}

/// The credential `name` of `config`, if it is an OAuth2 refresh-token one.
pub fn oauth_credential<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c CredentialConfig, LoginError> {
    let credential = config
        .credentials
        .get(&CredentialName::new(name))
        .ok_or_else(|| LoginError::UnknownCredential {
            credential: name.to_owned(),
            file: config.file.clone(),
        })?;
    if credential.auth != AuthKind::Oauth2RefreshToken {
        return Err(LoginError::NotOAuth {
            credential: name.to_owned(),
            auth: auth_name(credential.auth),
        });
    }
    Ok(credential)
}

impl Login {
    /// Prepares the login of credential `name`: the authorize URL with a new `state` and, where the
    /// vendor takes it, a PKCE challenge.
    pub fn start(
        config: &Config,
        presets: &PresetRegistry,
        name: &str,
    ) -> Result<Login, LoginError> {
        let credential = oauth_credential(config, name)?;
        let vendor = presets.vendor(&credential.vendor);
        let spec = vendor.map(|v| &v.spec);
        let endpoint = |which: &'static str, own: &Option<String>, preset: Option<&String>| {
            own.clone()
                .or_else(|| preset.cloned())
                .ok_or_else(|| LoginError::NoEndpoint {
                    credential: name.to_owned(),
                    vendor: credential.vendor.clone(),
                    which,
                })
        };
        let authorize = endpoint(
            "authorize",
            &credential.authorize_url,
            spec.and_then(|s| s.authorize_url.as_ref()),
        )?;
        let token_url = endpoint(
            "token",
            &credential.token_url,
            spec.and_then(|s| s.token_url.as_ref()),
        )?;
        let bad = |key: &'static str, url: &str, reason: String| LoginError::BadUrl {
            credential: name.to_owned(),
            key,
            url: url.to_owned(),
            reason,
        };
        let client_id = credential.client_id.clone().unwrap_or_default();
        let secret = credential
            .client_secret
            .as_ref()
            .expect("checked when the config loaded")
            .resolve()?;
        let client: LoginClient = oauth2::Client::new(ClientId::new(client_id.clone()))
            .set_client_secret(ClientSecret::new(secret))
            .set_auth_uri(
                AuthUrl::new(authorize.clone())
                    .map_err(|e| bad("authorize_url", &authorize, e.to_string()))?,
            )
            .set_token_uri(
                TokenUrl::new(token_url.clone())
                    .map_err(|e| bad("token_url", &token_url, e.to_string()))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(credential.redirect_uri.clone())
                    .map_err(|e| bad("redirect_uri", &credential.redirect_uri, e.to_string()))?,
            )
            // Calendly and Webex take the client's id and secret in the form body.
            .set_auth_type(oauth2::AuthType::RequestBody);
        let scopes = match &credential.scope {
            Some(scope) => super::auth::split_scopes(scope),
            None => vendor.map(vendor_scopes).unwrap_or_default(),
        };
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(scopes.iter().cloned().map(Scope::new));
        let mut verifier = None;
        if spec.is_some_and(|s| s.pkce) {
            let (challenge, pkce) = PkceCodeChallenge::new_random_sha256();
            request = request.set_pkce_challenge(challenge);
            verifier = Some(pkce);
        }
        let (authorize_url, state) = request.url();
        let redirect_uri = url::Url::parse(&credential.redirect_uri)
            .map_err(|e| bad("redirect_uri", &credential.redirect_uri, e.to_string()))?;
        Ok(Login {
            client,
            credential: credential.name.clone(),
            client_id,
            token_url,
            authorize_url,
            redirect_uri,
            scopes,
            state,
            verifier,
        })
    }

    pub fn credential(&self) -> &CredentialName {
        &self.credential
    }

    /// Where a loopback redirect URI listens (`127.0.0.1:8765`), or `None` when the registered
    /// URI is not `http://` on loopback (then the code must be pasted).
    pub fn loopback(&self) -> Option<(std::net::SocketAddr, String)> {
        let uri = &self.redirect_uri;
        if uri.scheme() != "http" {
            return None;
        }
        let ip: std::net::IpAddr = match uri.host()? {
            url::Host::Domain("localhost") => std::net::Ipv4Addr::LOCALHOST.into(),
            url::Host::Domain(_) => return None,
            url::Host::Ipv4(ip) => ip.into(),
            url::Host::Ipv6(ip) => ip.into(),
        };
        if !ip.is_loopback() {
            return None;
        }
        Some((
            std::net::SocketAddr::new(ip, uri.port_or_known_default()?),
            uri.path().to_owned(),
        ))
    }

    /// The code in the redirect's query string (`code=…&state=…`, or `error=…`).
    pub fn code_from_query(&self, query: &str) -> Result<String, LoginError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let credential = self.credential.to_string();
        if let Some(error) = get("error") {
            let description = get("error_description");
            return Err(if error == "access_denied" {
                LoginError::Denied {
                    credential,
                    error,
                    description,
                }
            } else {
                LoginError::AuthorizeRefused {
                    credential,
                    error,
                    description,
                }
            });
        }
        let code = get("code")
            .filter(|c| !c.is_empty())
            .ok_or(LoginError::NoCode)?;
        if get("state").as_deref() != Some(self.state.secret().as_str()) {
            return Err(LoginError::StateMismatch { credential });
        }
        Ok(code)
    }

    /// The code in text pasted by hand: the whole redirected address (whose `state` is checked)
    /// or the code alone.
    pub fn code_from_paste(&self, text: &str) -> Result<String, LoginError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(LoginError::NoCode);
        }
        if let Some((_, query)) = text.split_once('?') {
            let query = query.split('#').next().unwrap_or_default();
            return self.code_from_query(query);
        }
        if text.contains("code=") || text.contains("error=") {
            return self.code_from_query(text);
        }
        if text.contains(['/', ' ', '&']) {
            return Err(LoginError::NoCode);
        }
        Ok(text.to_owned())
    }

    /// Trades `code` for tokens at the token endpoint.
    pub async fn exchange(
        self,
        http: &reqwest::Client,
        code: String,
    ) -> Result<LoginTokens, LoginError> {
        let send = |request: oauth2::HttpRequest| async move {
            let (parts, body) = request.into_parts();
            let response = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .timeout(TOKEN_TIMEOUT)
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            let mut out = oauth2::HttpResponse::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, reqwest::Error>(out)
        };
        let mut request = self.client.exchange_code(AuthorizationCode::new(code));
        if let Some(verifier) = self.verifier {
            request = request.set_pkce_verifier(verifier);
        }
        let credential = self.credential.to_string();
        let response = request.request_async(&send).await.map_err(|err| {
            use oauth2::basic::BasicErrorResponseType as Kind;
            let credential = credential.clone();
            match err {
                oauth2::RequestTokenError::ServerResponse(answer) => {
                    let description = answer.error_description().cloned().unwrap_or_default();
                    match answer.error() {
                        Kind::InvalidClient | Kind::UnauthorizedClient => {
                            LoginError::WrongClientSecret {
                                credential,
                                client_id: self.client_id.clone(),
                            }
                        }
                        Kind::InvalidGrant if description.contains("redirect") => {
                            LoginError::RedirectMismatch {
                                credential,
                                redirect_uri: self.redirect_uri.to_string(),
                                description,
                            }
                        }
                        other => LoginError::CodeRefused {
                            credential,
                            error: other.to_string(),
                            description,
                        },
                    }
                }
                oauth2::RequestTokenError::Request(err) => LoginError::Transport {
                    url: self.token_url.clone(),
                    reason: super::transport_message(&err),
                },
                oauth2::RequestTokenError::Parse(..) | oauth2::RequestTokenError::Other(_) => {
                    LoginError::BadResponse {
                        url: self.token_url.clone(),
                        status: "a body".to_owned(),
                    }
                }
            }
        })?;
        let refresh = response
            .refresh_token()
            .ok_or_else(|| LoginError::NoRefreshToken {
                credential: credential.clone(),
            })?
            .secret()
            .clone();
        Ok(LoginTokens {
            access: response.access_token().secret().clone(),
            refresh,
            expires_in: response.expires_in().map(|d| d.as_secs()),
            refresh_expires_in: response.extra_fields().refresh_token_expires_in,
            scopes: match response.scopes() {
                Some(granted) => granted.iter().map(|s| s.to_string()).collect(),
                None => self.scopes.clone(),
            },
        })
    }
}

impl LoginTokens {
    /// Writes the tokens as credential `credential`'s entry (replacing any), under the lock.
    pub async fn store(
        &self,
        store: &dyn CredentialTokens,
        credential: &CredentialName,
    ) -> Result<(), LoginError> {
        let fail = |source| LoginError::Store {
            credential: credential.to_string(),
            source,
        };
        let now = chrono::Utc::now();
        let at = |secs: u64| {
            now.timestamp()
                .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX))
        };
        let entry = StoredToken {
            origin: LOGIN.to_owned(),
            refresh_token: self.refresh.clone(),
            access_token: Some(self.access.clone()),
            expires_at: self.expires_in.map(at),
            refresh_expires_at: self.refresh_expires_in.map(at),
            scopes: Some(self.scopes.clone()),
            last_refresh: None,
            updated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let locked = store
            .lock_credential(credential.as_str())
            .await
            .map_err(fail)?;
        locked.save(Some(entry)).await.map_err(fail)
    }

    /// The tokens, for the redactor of the process that logged in.
    pub fn secrets(&self) -> [&str; 2] {
        [&self.access, &self.refresh]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Login {
        let text = "credentials:\n  calendly:\n    vendor: calendly\n    auth: oauth2_refresh_token\n    client_id: app\n    client_secret: s3cret\n";
        let config = Config::parse(std::path::Path::new("b.yaml"), text).unwrap();
        Login::start(&config, &PresetRegistry::builtin(), "calendly").unwrap()
    }

    fn state(login: &Login) -> String {
        login
            .authorize_url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned()
    }

    #[test]
    fn the_authorize_url_carries_the_presets_endpoint_pkce_and_scopes() {
        let login = login();
        let url = login.authorize_url.as_str();
        assert!(
            url.starts_with(
                "https://auth.calendly.com/oauth/authorize?response_type=code&client_id=app&state="
            ),
            "{url}"
        );
        assert!(url.contains("&code_challenge_method=S256&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Fcallback&scope=users%3Aread+organizations%3Aread+activity_log%3Aread+organizations%3Awrite"), "{url}");
        assert!(!url.contains("s3cret"));
        assert_eq!(
            login.loopback(),
            Some(("127.0.0.1:8765".parse().unwrap(), "/callback".to_owned()))
        );
    }

    #[test]
    fn a_paste_is_a_whole_address_or_a_bare_code() {
        let login = login();
        let state = state(&login);
        let pasted = format!("http://127.0.0.1:8765/callback?code=abc123&state={state}\n");
        assert_eq!(login.code_from_paste(&pasted).unwrap(), "abc123");
        assert_eq!(login.code_from_paste("  abc123 \n").unwrap(), "abc123");
        assert_eq!(
            login.code_from_paste("\n").unwrap_err().to_string(),
            "the pasted text has no authorization code; paste the whole address the browser was sent to (it has `code=` in it), or the code alone"
        );
        assert_eq!(
            login
                .code_from_paste("http://127.0.0.1:8765/callback?state=x")
                .unwrap_err(),
            LoginError::NoCode
        );
        assert_eq!(
            login
                .code_from_paste("https://example.com/cb?error=invalid_scope&error_description=Unknown+scope")
                .unwrap_err()
                .to_string(),
            "the vendor refused the authorization request (invalid_scope: Unknown scope); check `client_id`, `scope` and `redirect_uri` of credential `calendly` against the vendor's OAuth app"
        );
    }

    #[test]
    fn only_an_oauth2_refresh_token_credential_logs_in() {
        let text = "credentials:\n  scim:\n    vendor: scim\n    auth: bearer\n    token: t\n";
        let config = Config::parse(std::path::Path::new("b.yaml"), text).unwrap();
        let presets = PresetRegistry::builtin();
        assert_eq!(
            Login::start(&config, &presets, "scim").unwrap_err().to_string(),
            "credential `scim` uses `auth: bearer`; `blockyard auth login` is for `auth: oauth2_refresh_token` credentials"
        );
        assert_eq!(
            Login::start(&config, &presets, "calendly").unwrap_err().to_string(),
            "no credential `calendly` in `b.yaml`; add it under `credentials:` (see `examples/blockyard.yaml`)"
        );
        let text = "credentials:\n  scim:\n    vendor: scim\n    auth: oauth2_refresh_token\n    client_id: a\n    client_secret: b\n";
        let config = Config::parse(std::path::Path::new("b.yaml"), text).unwrap();
        assert_eq!(
            Login::start(&config, &presets, "scim")
                .unwrap_err()
                .to_string(),
            "vendor `scim` has no OAuth authorize URL; set `authorize_url` on credential `scim`"
        );
    }
}

//! The web console: a real `Service` on loopback (temp data dir, the in-process sandbox) driven
//! over HTTP as a browser would (form posts with the page's CSRF token, the session cookie, the
//! `Origin` and `Sec-Fetch-Site` a browser sends), with named tokens of every role.

use std::time::Duration;

use blockyard::http::Credentials;
use blockyard::server::console::{COOKIE, CSRF_REFUSED};
use blockyard::server::{ApiToken, Role};
use blockyard::service::{Service, ServiceConfig};
use reqwest::header::HeaderMap;

use crate::support::{self, Env, WHOAMI};

mod framework;
mod licenses;
mod people;
mod run;
mod runs;
mod workflows;

pub const VIEWER: &str = "viewer-secret-1";
pub const OPERATOR: &str = "operator-secret-2";
pub const ADMIN: &str = "admin-secret-3";

/// An [`Env`] whose temp dir also holds `workflows/` with `whoami.yaml` and `extra` files.
pub async fn env_with(extra: &[(&str, &str)]) -> Env {
    let env = Env::seeded(5).await;
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    env.write("workflows/whoami.yaml", WHOAMI);
    for (name, text) in extra {
        env.write(&format!("workflows/{name}"), text);
    }
    let _ = support::root();
    env
}

/// The service with a viewer (`dana`), an operator (`olga`) and an admin (`adam`) token; with
/// `open`, none (the console open to local callers as admin).
pub async fn serve(env: &Env, open: bool) -> Service {
    let config = env.config();
    let api_tokens = if open {
        Vec::new()
    } else {
        vec![
            ApiToken::new("dana", Role::Viewer, VIEWER),
            ApiToken::new("olga", Role::Operator, OPERATOR),
            ApiToken::new("adam", Role::Admin, ADMIN),
        ]
    };
    Service::start(ServiceConfig {
        api_tokens,
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        poll: Duration::from_millis(100),
        ..ServiceConfig::new(
            env.path().join("workflows"),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    })
    .await
    .unwrap()
}

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The page's CSRF token (its first `csrf` hidden field).
    pub fn csrf(&self) -> String {
        let start = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body))
            + "name=\"csrf\" value=\"".len();
        let len = self.body[start..].find('"').unwrap();
        self.body[start..start + len].to_owned()
    }

    /// The error page's message.
    pub fn error_message(&self) -> String {
        let start = self
            .body
            .find("id=\"error-message\">")
            .unwrap_or_else(|| panic!("not the error page: {}", self.body))
            + "id=\"error-message\">".len();
        let len = self.body[start..].find("</p>").unwrap();
        unescape(&self.body[start..start + len])
    }
}

/// Undoes askama's HTML escaping (named and numeric entities).
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A browser: no redirects followed, the session cookie kept.
pub struct Browser {
    pub base: String,
    client: reqwest::Client,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(service: &Service) -> Browser {
        Browser {
            base: format!("http://{}", service.addr()),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Reply {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", format!("{COOKIE}={cookie}")),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let value = set
                .strip_prefix(&format!("{COOKIE}="))
                .unwrap()
                .split(';')
                .next()
                .unwrap();
            self.cookie = (!value.is_empty()).then(|| value.to_owned());
        }
        let body = response.text().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// A form post from the console's own page, as a browser sends it.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &self.base)
            .header("sec-fetch-site", "same-origin")
            .body(body);
        self.send(request).await
    }

    /// Signs in with `token`; panics unless the console takes it.
    pub async fn login(&mut self, token: &str) {
        let reply = self
            .post("/login", &[("token", token), ("next", "/runs")])
            .await;
        assert_eq!(
            (reply.status, reply.header("location")),
            (303, "/runs"),
            "{reply:?}"
        );
        assert!(self.cookie.is_some());
    }
}

/// What a CSRF refusal says.
pub fn csrf_refused() -> &'static str {
    CSRF_REFUSED
}

//! The console's login and logout: `GET /login` (the form), `POST /login` (a token → a session
//! cookie), `POST /logout` (ends the session). See the module docs of [`super`] for the session.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::{
    cookie, css_url, html_response, see_other, set_cookie, Actor, Console, CsrfForm, Ctx, Page,
    PageError,
};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/login", get(form).post(login))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    css: &'static str,
    next: &'a str,
    error: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Where to go after the login: a path on this console (never another site, nothing a
/// `Location` header cannot carry).
fn next_path(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            path
        }
        _ => "/runs",
    }
}

/// `next` for a URL's query.
pub(super) fn encode(path: &str) -> String {
    url::form_urlencoded::byte_serialize(path.as_bytes()).collect()
}

fn login_page(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let page = LoginPage {
        css: css_url(),
        next,
        error,
    };
    match page.render() {
        Ok(html) => html_response(status, html),
        Err(err) => PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page failed: {err}"),
        )
        .into_response(),
    }
}

/// `GET /login`: the form (an open console has no login: straight on).
async fn form(State(console): State<Arc<Console>>, Query(query): Query<NextQuery>) -> Response {
    let next = next_path(query.next.as_deref());
    if console.open() {
        return see_other(next);
    }
    login_page(StatusCode::OK, next, None)
}

/// `POST /login`'s form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `POST /login`: a configured token opens a session; anything else is the form again, 401.
async fn login(State(console): State<Arc<Console>>, headers: HeaderMap, body: String) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return PageError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a console form is sent as `application/x-www-form-urlencoded`",
        )
        .into_response();
    }
    let (_, fields) = super::parse_form(body.as_bytes());
    let form: LoginForm = match serde_json::from_value(serde_json::Value::Object(fields)) {
        Ok(form) => form,
        Err(err) => {
            return PageError::bad_request(format!("the form is not valid: {err}")).into_response()
        }
    };
    let LoginForm { token, next } = form;
    let next = next_path(next.as_deref()).to_owned();
    if console.open() {
        return see_other(&next);
    }
    let Some(found) = super::find_token(&console.tokens, token.trim()) else {
        let why = if token.trim().is_empty() {
            "enter an API token (one of `api_tokens` in blockyard.yaml, or `BLOCKYARD_TOKEN`)"
        } else {
            "that token matches none of the service's API tokens"
        };
        return login_page(StatusCode::UNAUTHORIZED, &next, Some(why));
    };
    let actor = Actor {
        name: found.name.clone(),
        role: found.role,
    };
    tracing::info!(actor = %actor.name, "console login");
    // A session the browser already had ends: one login, one session.
    if let Some(old) = cookie(&headers) {
        console.end(old);
    }
    let id = console.start(actor);
    let mut response = see_other(&next);
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(Some(&id)));
    response
}

/// `POST /logout`'s form: nothing but the CSRF token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoFields {}

/// `POST /logout`: ends the session and clears the cookie.
pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    _ctx: Ctx,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Page {
    if let Some(id) = cookie(&headers) {
        console.end(id);
    }
    let mut response = see_other("/login");
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(None));
    Ok(response)
}

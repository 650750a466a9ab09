//! The console's frame: login, the session cookie, logout, CSRF, the API's refusal of the
//! cookie, the open console, assets.

use super::{csrf_refused, env_with, serve, Browser, ADMIN, OPERATOR, VIEWER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_login_sets_a_strict_http_only_cookie_that_the_api_does_not_accept() {
    let env = env_with(&[]).await;
    let service = serve(&env, false).await;
    let mut browser = Browser::new(&service);

    // Not signed in: a page sends the browser to the login form, which comes back to it.
    let reply = browser.get("/?workflow=whoami").await;
    assert_eq!(
        (reply.status, reply.header("location")),
        (303, "/login?next=%2F%3Fworkflow%3Dwhoami")
    );
    let form = browser.get("/login?next=%2Fruns%3Fworkflow%3Dwhoami").await;
    assert_eq!(form.status, 200);
    assert!(form
        .body
        .contains("<form method=\"post\" action=\"/login\" id=\"login-form\">"));
    assert!(form.body.contains("name=\"token\""));
    assert!(form
        .body
        .contains("name=\"next\" value=\"/runs?workflow=whoami\""));

    // A wrong token: the form again, 401, and no cookie.
    let reply = browser
        .post("/login", &[("token", "nope"), ("next", "/runs")])
        .await;
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .body
            .contains("that token matches none of the service&#39;s API tokens")
            || reply
                .body
                .contains("that token matches none of the service&#x27;s API tokens"),
        "{}",
        reply.body
    );
    assert_eq!(browser.cookie, None);

    // A next that leaves the console, or that a header cannot carry, is not followed.
    for next in ["/runs\nSet-Cookie: x=1", "/\\evil.example.com"] {
        let reply = browser
            .post("/login", &[("token", "nope"), ("next", next)])
            .await;
        assert!(
            reply.body.contains("name=\"next\" value=\"/runs\""),
            "{next:?}"
        );
    }
    let reply = browser
        .post(
            "/login",
            &[("token", OPERATOR), ("next", "//evil.example.com/")],
        )
        .await;
    assert_eq!((reply.status, reply.header("location")), (303, "/runs"));
    let set = reply.header("set-cookie");
    let cookie = browser.cookie.clone().unwrap();
    assert_eq!(
        set,
        format!("blockyard_session={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200")
    );
    // The cookie is a random session id, never the token.
    assert_eq!(cookie.len(), 64);
    assert!(!set.contains(OPERATOR));

    // The API takes `Authorization: Bearer` only: the console's cookie is not a credential there.
    let api = reqwest::Client::new()
        .get(format!("{}/api/runs", browser.base))
        .header("cookie", format!("blockyard_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status().as_u16(), 401);
    assert_eq!(
        api.json::<serde_json::Value>().await.unwrap()["error"]["message"],
        "missing `Authorization: Bearer TOKEN` (the token is `BLOCKYARD_TOKEN`)"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_forms_without_the_sessions_csrf_token_are_refused() {
    let env = env_with(&[]).await;
    let service = serve(&env, false).await;
    let mut browser = Browser::new(&service);
    browser.login(ADMIN).await;

    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = browser.post("/logout", &form).await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(reply.error_message(), csrf_refused());
    }
    // Not signed in at all: 401, not a redirect (a form is not a page to come back to).
    let mut stranger = Browser::new(&service);
    let reply = stranger.post("/logout", &[("csrf", "x")]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.error_message(),
        "you are not signed in (or your session has ended); sign in at /login and try again"
    );
    // A form from another site is refused before the console sees it (the API's guard).
    let reply = reqwest::Client::new()
        .post(format!("{}/logout", browser.base))
        .header(
            "cookie",
            format!("blockyard_session={}", browser.cookie.clone().unwrap()),
        )
        .header("origin", "http://evil.example.com")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 403);
    // A console form in another encoding is refused.
    let reply = reqwest::Client::new()
        .post(format!("{}/logout", browser.base))
        .header(
            "cookie",
            format!("blockyard_session={}", browser.cookie.clone().unwrap()),
        )
        .header("content-type", "text/plain")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 415);
    // The API still refuses a form body.
    let reply = reqwest::Client::new()
        .post(format!("{}/api/workflows/whoami/runs", browser.base))
        .bearer_auth(VIEWER)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("wait=true")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 415);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_are_served_at_content_hashed_urls_cached_for_a_year() {
    let env = env_with(&[]).await;
    let service = serve(&env, false).await;
    let mut browser = Browser::new(&service);
    let login = browser.get("/login").await;
    let css = between(&login.body, "<link rel=\"stylesheet\" href=\"", "\"");
    assert!(
        css.starts_with("/assets/console.") && css.ends_with(".css"),
        "{css}"
    );
    let reply = browser.get(&css).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "text/css; charset=utf-8");
    assert_eq!(
        reply.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    // A colour for every run status, every step status and a block a run did not reach.
    let steps = [
        "sending",
        "succeeded",
        "failed",
        "skipped",
        "planned",
        "waiting_approval",
        "retrying",
        "held",
        "not_reached",
    ];
    let missing: Vec<&str> = blockyard::store::history::RunStatus::NAMES
        .iter()
        .chain(&steps)
        .copied()
        .filter(|name| !reply.body.contains(&format!(".status-{name} {{")))
        .collect();
    assert_eq!(missing, Vec::<&str>::new());
    // Any other name is a 404 (an old hash is not served as the new content).
    let reply = browser.get("/assets/console.0000000000000000.css").await;
    assert_eq!(reply.status, 404);
    // Pages are never cached.
    assert_eq!(login.header("cache-control"), "no-store");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_without_tokens_is_open_to_local_callers_as_admin_behind_the_host_check() {
    let env = env_with(&[]).await;
    let service = serve(&env, true).await;
    let mut browser = Browser::new(&service);
    // No login: straight on.
    let reply = browser.get("/login").await;
    assert_eq!((reply.status, reply.header("location")), (303, "/runs"));
    // A foreign Host (DNS rebinding) is refused as on the API.
    let reply = reqwest::Client::new()
        .get(format!("{}/", browser.base))
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 403);
    service.shutdown().await.unwrap();
}

/// The text between `start` and the next `end`.
pub fn between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {text}"))
        + start.len();
    let len = text[from..].find(end).unwrap();
    text[from..from + len].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logout_ends_the_session_and_clears_the_cookie() {
    let env = env_with(&[]).await;
    let service = serve(&env, false).await;
    let mut browser = Browser::new(&service);
    browser.login(VIEWER).await;
    let old = browser.cookie.clone().unwrap();
    let page = browser.get("/runs").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(
        "<span class=\"actor\">dana</span> <span class=\"role role-viewer\">viewer</span>"
    ));
    assert!(page
        .body
        .contains("<form method=\"post\" action=\"/logout\" class=\"logout\">"));
    let reply = browser.post("/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!((reply.status, reply.header("location")), (303, "/login"));
    assert_eq!(
        reply.header("set-cookie"),
        "blockyard_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    );
    assert_eq!(browser.cookie, None);
    // The old session id is dead on the server too, not only forgotten by the browser.
    browser.cookie = Some(old);
    let reply = browser.get("/runs").await;
    assert_eq!(
        (reply.status, reply.header("location")),
        (303, "/login?next=%2Fruns")
    );
    service.shutdown().await.unwrap();
}

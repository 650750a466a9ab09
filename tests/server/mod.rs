//! The service's HTTP API: auth, limits and JSON errors (with a stand-in route; the record and run
//! routes have their own tests).

use std::net::SocketAddr;

use axum::routing::post;
use axum::{Json, Router};
use blockyard::server::{Server, ServerConfig};
use serde_json::{json, Value};

fn echo_routes() -> Router {
    Router::new().route(
        "/echo",
        post(|Json(body): Json<Value>| async move { Json(body) }),
    )
}

async fn start(token: Option<&str>) -> Server {
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), token.map(str::to_owned));
    Server::start(config, echo_routes()).await.unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn every_api_route_needs_the_token_and_healthz_does_not() {
    let server = start(Some("t0ken")).await;
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::new();
    let healthz = send(client.get(format!("{base}/healthz"))).await;
    assert_eq!(healthz, (200, json!({"status": "ok"})));
    let missing = send(
        client
            .post(format!("{base}/api/echo"))
            .json(&json!({"a": 1})),
    )
    .await;
    assert_eq!(
        missing,
        (
            401,
            json!({"error": {"status": 401, "message": "missing `Authorization: Bearer TOKEN` (the token is `BLOCKYARD_TOKEN`)"}})
        )
    );
    let wrong = send(
        client
            .post(format!("{base}/api/echo"))
            .bearer_auth("nope")
            .json(&json!({"a": 1})),
    )
    .await;
    assert_eq!(
        wrong,
        (
            401,
            json!({"error": {"status": 401, "message": "the bearer token is not valid"}})
        )
    );
    let ok = send(
        client
            .post(format!("{base}/api/echo"))
            .bearer_auth("t0ken")
            .json(&json!({"a": 1})),
    )
    .await;
    assert_eq!(ok, (200, json!({"a": 1})));
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_and_malformed_bodies_get_json_errors() {
    let server = start(Some("t0ken")).await;
    let url = format!("http://{}/api/echo", server.addr());
    let client = reqwest::Client::new();
    let big = json!({"blob": "x".repeat(2 * 1024 * 1024)});
    let too_large = send(client.post(&url).bearer_auth("t0ken").json(&big)).await;
    assert_eq!(
        too_large,
        (
            413,
            json!({"error": {"status": 413, "message": "the request body is too large"}})
        )
    );
    let malformed = send(
        client
            .post(&url)
            .bearer_auth("t0ken")
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(
        malformed,
        (
            400,
            json!({"error": {"status": 400, "message": "failed to parse the request body as JSON: key must be a string at line 1 column 2"}})
        )
    );
    let unknown = send(
        client
            .get(format!("http://{}/api/nothing", server.addr()))
            .bearer_auth("t0ken"),
    )
    .await;
    assert_eq!(
        unknown,
        (
            404,
            json!({"error": {"status": 404, "message": "no such API route; see `blockyard serve --help`"}})
        )
    );
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_token_only_loopback_is_allowed() {
    let open: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let err = Server::start(ServerConfig::new(open, None), echo_routes())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing to serve the API on `0.0.0.0:0` without a token: set `BLOCKYARD_TOKEN` (or `token` in blockyard.yaml), or listen on 127.0.0.1"
    );
    let server = start(None).await;
    let ok = send(
        reqwest::Client::new()
            .post(format!("http://{}/api/echo", server.addr()))
            .json(&json!([1, 2])),
    )
    .await;
    assert_eq!(ok, (200, json!([1, 2])));
    server.shutdown().await;
}

#[tokio::test]
async fn the_authorization_scheme_is_case_insensitive() {
    let server = start(Some("t0ken")).await;
    let url = format!("http://{}/api/echo", server.addr());
    let client = reqwest::Client::new();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let answer = send(
            client
                .post(&url)
                .header("authorization", format!("{scheme} t0ken"))
                .json(&json!({"a": 1})),
        )
        .await;
        assert_eq!(answer, (200, json!({"a": 1})), "scheme `{scheme}`");
    }
    server.shutdown().await;
}

/// `GET /whoami` (the actor's name and role), `POST /echo`, and `POST /prune`, which needs
/// `admin`.
fn role_routes() -> Router {
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use axum::Extension;
    use blockyard::server::auth;
    use blockyard::server::{Actor, Role};
    Router::new()
        .route(
            "/whoami",
            get(|Extension(actor): Extension<Actor>| async move {
                Json(json!({"name": actor.name, "role": actor.role}))
            }),
        )
        .route(
            "/echo",
            post(|Json(body): Json<Value>| async move { Json(body) }),
        )
        .route(
            "/prune",
            post(|| async { Json(json!({"pruned": true})) })
                .layer(from_fn_with_state(Role::Admin, auth::needs)),
        )
}

#[tokio::test]
async fn each_named_token_may_do_what_its_role_allows_and_403_names_the_role() {
    use blockyard::server::{ApiToken, Role};
    let config = ServerConfig {
        tokens: vec![
            ApiToken::new("ci", Role::Viewer, "viewer-secret"),
            ApiToken::new("alice", Role::Operator, "operator-secret"),
            ApiToken::new("root", Role::Admin, "admin-secret"),
        ],
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), None)
    };
    let server = Server::start(config, role_routes()).await.unwrap();
    let base = format!("http://{}/api", server.addr());
    let client = reqwest::Client::new();
    let as_token = |token: &str, request: reqwest::RequestBuilder| request.bearer_auth(token);

    for (token, name, role) in [
        ("viewer-secret", "ci", "viewer"),
        ("operator-secret", "alice", "operator"),
        ("admin-secret", "root", "admin"),
    ] {
        let whoami = send(as_token(token, client.get(format!("{base}/whoami")))).await;
        assert_eq!(whoami, (200, json!({"name": name, "role": role})));
    }
    let echo = |token: &'static str| {
        as_token(token, client.post(format!("{base}/echo"))).json(&json!({"a": 1}))
    };
    assert_eq!(
        send(echo("viewer-secret")).await,
        (
            403,
            json!({"error": {"status": 403, "message": "the token `ci` has the role `viewer`; `POST /api/echo` needs `operator`; use a token with that role"}})
        )
    );
    assert_eq!(send(echo("operator-secret")).await, (200, json!({"a": 1})));
    assert_eq!(send(echo("admin-secret")).await, (200, json!({"a": 1})));
    let prune = |token: &'static str| as_token(token, client.post(format!("{base}/prune")));
    assert_eq!(
        send(prune("operator-secret")).await,
        (
            403,
            json!({"error": {"status": 403, "message": "the token `alice` has the role `operator`; `POST /api/prune` needs `admin`; use a token with that role"}})
        )
    );
    assert_eq!(
        send(prune("viewer-secret")).await,
        (
            403,
            json!({"error": {"status": 403, "message": "the token `ci` has the role `viewer`; `POST /api/prune` needs `operator`; use a token with that role"}})
        )
    );
    assert_eq!(
        send(prune("admin-secret")).await,
        (200, json!({"pruned": true}))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn without_tokens_a_local_caller_is_the_local_admin() {
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), None);
    let server = Server::start(config, role_routes()).await.unwrap();
    let base = format!("http://{}/api", server.addr());
    let client = reqwest::Client::new();
    assert_eq!(
        send(client.get(format!("{base}/whoami"))).await,
        (200, json!({"name": "local", "role": "admin"}))
    );
    assert_eq!(
        send(client.post(format!("{base}/prune"))).await,
        (200, json!({"pruned": true}))
    );
    server.shutdown().await;

    // `BLOCKYARD_TOKEN` alone is one admin token, named `admin`.
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some("t0ken".to_owned()));
    let server = Server::start(config, role_routes()).await.unwrap();
    let base = format!("http://{}/api", server.addr());
    assert_eq!(
        send(client.get(format!("{base}/whoami")).bearer_auth("t0ken")).await,
        (200, json!({"name": "admin", "role": "admin"}))
    );
    assert_eq!(
        send(client.post(format!("{base}/prune")).bearer_auth("t0ken")).await,
        (200, json!({"pruned": true}))
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_connection_cap_do_not_starve_an_authorised_request() {
    use blockyard::server::HttpLimits;
    let config = ServerConfig {
        limits: HttpLimits {
            // Far longer than the test: only the cap makes room.
            header_timeout: std::time::Duration::from_secs(600),
            max_connections: 4,
        },
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some("t0ken".to_owned()))
    };
    let server = Server::start(config, echo_routes()).await.unwrap();
    // 300 sockets that connect and never send a byte.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(server.addr()).await.unwrap());
    }
    let answer = send(
        reqwest::Client::new()
            .post(format!("http://{}/api/echo", server.addr()))
            .bearer_auth("t0ken")
            .json(&json!({"still": "served"})),
    )
    .await;
    assert_eq!(answer, (200, json!({"still": "served"})));
    drop(idle);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_no_request_head_is_closed_after_the_header_timeout() {
    use blockyard::server::HttpLimits;
    use tokio::io::AsyncReadExt;
    let config = ServerConfig {
        limits: HttpLimits {
            header_timeout: std::time::Duration::from_secs(10),
            max_connections: 16,
        },
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap(), Some("t0ken".to_owned()))
    };
    let server = Server::start(config, echo_routes()).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let started = tokio::time::Instant::now();
    // Half a request head, then nothing.
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"POST /api/echo HTTP/1.1\r\nHost: 127")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf).await;
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(10) && waited < std::time::Duration::from_secs(11),
        "closed after {waited:?}"
    );
    server.shutdown().await;
}

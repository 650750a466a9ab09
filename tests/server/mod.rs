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

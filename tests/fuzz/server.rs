//! The HTTP API's request parsing (query strings through `Params`, bodies through `Body` and the
//! JSON extractor), fuzzed against a real `serve` (`Service`) on loopback with the in-process
//! sandbox: whatever the query and body, the answer is never a 5xx and comes within the time bound.
//!
//! A saved input (`tests/fixtures/fuzz/server/*`) is the request's first line, `METHOD /path?query`,
//! then its body.

use std::time::{Duration, Instant};

use blockyard::http::Credentials;
use blockyard::service::{Service, ServiceConfig};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestRunner;

use crate::support::{Env, API_TOKEN, WHOAMI};

use super::json_value;

/// One request: method, path and query, body.
#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    target: String,
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Request> {
    let route = select(vec![
        ("POST", "/records/people"),
        ("POST", "/records/saas_users"),
        ("POST", "/records/nope"),
        ("GET", "/records/people/ada@example.com"),
        ("GET", "/records/people/"),
        ("GET", "/triggers/why"),
        ("GET", "/workflows"),
        ("POST", "/workflows/whoami/runs"),
        ("POST", "/workflows/nope/runs"),
        ("POST", "/workflows/whoami/tick"),
        ("GET", "/runs"),
        ("GET", "/runs/01JZZZZZZZZZZZZZZZZZZZZZZZ"),
        ("GET", "/runs/..%2F..%2Fetc"),
        ("POST", "/runs/01JZZZZZZZZZZZZZZZZZZZZZZZ/replay"),
        ("POST", "/runs/x/cancel"),
        ("POST", "/runs/x/blocks/me/approve"),
        ("POST", "/runs/x/blocks/me/reject"),
    ]);
    let query = proptest::collection::vec(
        (
            select(vec![
                "mode", "subject", "workflow", "status", "limit", "wait", "x", "", "limit[]",
            ]),
            prop_oneof![
                select(vec![
                    "create_only",
                    "update_only",
                    "create_update",
                    "succeeded",
                    "ada@example.com",
                    "-1",
                    "18446744073709551616",
                    "%FF",
                    "%",
                    "",
                    "whoami",
                ])
                .prop_map(str::to_owned),
                "[a-zA-Z0-9%=&+]{0,10}",
            ],
        ),
        0..3,
    )
    .prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    });
    let body = prop_oneof![
        Just(Vec::new()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        select(vec![
            r#"{"email": "ada@example.com", "status": "active"}"#,
            r#"[{"email": "a@example.com"}, {"email": 7}, 3]"#,
            r#"{"subject": {"email": "ada@example.com"}, "wait": true}"#,
            r#"{"subject": "ada", "vars": [], "force": "yes"}"#,
            r#"{"from": "me", "offline": true, "latest": false}"#,
            r#"{"from": "nope", "offline": 1}"#,
            r#"{"email": ""}"#,
            r#"{"app": "x", "email": "a@b.c"}"#,
            "{",
            "\u{0}",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    (route, query, body).prop_map(|((method, path), query, body)| Request {
        method,
        target: if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        },
        body,
    })
}

/// A `serve` on loopback over a seeded sandbox, with the `whoami` workflow.
async fn serve(env: &Env) -> Service {
    std::fs::create_dir_all(env.path().join("workflows")).unwrap();
    env.write("workflows/whoami.yaml", WHOAMI);
    let config = env.config();
    Service::start(ServiceConfig {
        token: Some(API_TOKEN.to_owned()),
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        poll: Duration::from_millis(200),
        ..ServiceConfig::new(
            env.path().join("workflows"),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    })
    .await
    .unwrap()
}

/// Sends `request` and checks the answer: not a 5xx, within the time bound.
async fn check(client: &reqwest::Client, base: &str, request: &Request) -> Result<(), String> {
    let started = Instant::now();
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap();
    let response = client
        .request(method, format!("{base}{}", request.target))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(request.body.clone())
        .send()
        .await
        .map_err(|err| format!("no answer: {err}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_server_error() {
        return Err(format!("{status} for {request:?}: {text}"));
    }
    let took = started.elapsed();
    if took > blockyard::fuzzing::TIME_BOUND {
        return Err(format!("{request:?} took {took:?}"));
    }
    Ok(())
}

#[test]
fn request_bodies_and_queries() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let env = runtime.block_on(Env::seeded(3));
    let service = runtime.block_on(serve(&env));
    let base = format!("http://{}/api", service.addr());
    let client = reqwest::Client::new();
    let mut runner = TestRunner::new(super::config(192));
    runner
        .run(&request(), |request| {
            runtime
                .block_on(check(&client, &base, &request))
                .map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|err| panic!("server: {err}"));
    runtime.block_on(service.shutdown()).unwrap();
}

/// Replays one saved request against a fresh `serve`.
pub fn replay(data: &[u8]) {
    let (line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], data[at + 1..].to_vec()),
        None => (data, Vec::new()),
    };
    let line = String::from_utf8_lossy(line);
    let (method, target) = line
        .split_once(' ')
        .expect("`METHOD /path` on the first line");
    let method = if method == "GET" { "GET" } else { "POST" };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let env = Env::seeded(3).await;
        let service = serve(&env).await;
        let base = format!("http://{}/api", service.addr());
        let request = Request {
            method,
            target: target.to_owned(),
            body,
        };
        let result = check(&reqwest::Client::new(), &base, &request).await;
        service.shutdown().await.unwrap();
        result.unwrap();
    });
}

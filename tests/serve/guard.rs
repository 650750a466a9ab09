//! What a hostile web page can send to a loopback `serve` without a token: a cross-site request,
//! a non-JSON body, a rebound DNS name. Each is refused before it does anything.

use serde_json::{json, Value};

use super::{error, service_config, with_workflows};
use crate::support::{self, Env};
use blockyard::service::{Service, ServiceConfig};

/// begin → `delete` (a SCIM delete that needs approval) → end.
const GATED_DELETE: &str = "name: gated-delete
blocks:
  begin:
    type: begin
    next: delete
  delete:
    type: api
    preset: scim.delete_user
    credential: scim
    approval: required
    with:
      scim_user_id: \"{{record.scim_user_id}}\"
    next: end
  end:
    type: end
";

/// A `serve` with no token on loopback (local callers are trusted), with the offboarding and
/// the gated delete loaded.
async fn open_service(env: &Env) -> Service {
    env.write("workflows/gated-delete.yaml", GATED_DELETE);
    Service::start(service_config(env, None)).await.unwrap()
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_serve_allowed_hosts_is_the_list_of_hosts_it_answers_to() {
    let env = with_workflows().await;
    let service = Service::start(ServiceConfig {
        allowed_hosts: vec!["blockyard.internal".to_owned()],
        token: Some(crate::support::API_TOKEN.to_owned()),
        ..ServiceConfig::new(
            super::workflows(&env),
            env.data_dir(),
            "0.0.0.0:0".parse().unwrap(),
        )
    })
    .await
    .unwrap();
    let port = service.addr().port();
    let client = reqwest::Client::new();
    let get = |host: &str| {
        client
            .get(format!("http://127.0.0.1:{port}/api/runs"))
            .header("host", format!("{host}:{port}"))
            .bearer_auth(crate::support::API_TOKEN)
            .send()
    };
    assert_eq!(
        answer(get("evil.example.com").await.unwrap()).await,
        error(
            403,
            "refusing a request for host `evil.example.com`: this service answers to the names in `serve.allowed_hosts` (`blockyard.internal`); add the name its clients use there"
        )
    );
    assert_eq!(
        get("Blockyard.Internal").await.unwrap().status().as_u16(),
        200
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_cross_site_text_plain_post_that_would_start_an_offboarding() {
    let env = with_workflows().await;
    let service = open_service(&env).await;
    let base = format!("http://{}/api", service.addr());
    let client = reqwest::Client::new();
    let email = env.member().await.0;
    // What `fetch(url, {method: "POST", mode: "no-cors", body})` on evil.example.com sends: a
    // "simple" request, so no preflight asks first.
    let response = client
        .post(format!("{base}/workflows/calendly-offboard/runs"))
        .header("origin", "http://evil.example.com")
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(json!({"subject": {"email": email, "status": "terminated"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(response).await,
        error(
            403,
            "refusing a cross-site request from `http://evil.example.com`: a state-changing request must come from the service's own origin (or from a client that sends no `Origin`, such as curl or the CLI)"
        )
    );
    // Without the browser's headers, the body must still say it is JSON.
    let response = client
        .post(format!("{base}/workflows/calendly-offboard/runs"))
        .header("content-type", "text/plain")
        .body(json!({"subject": {"email": email, "status": "terminated"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(response).await,
        error(
            415,
            "the request body is `text/plain`; send JSON with `Content-Type: application/json`"
        )
    );
    let (_, runs) = answer(client.get(format!("{base}/runs")).send().await.unwrap()).await;
    assert_eq!(runs, json!([]));
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_cross_site_approve_with_no_body() {
    let env = with_workflows().await;
    let service = open_service(&env).await;
    let base = format!("http://{}/api", service.addr());
    let client = reqwest::Client::new();
    let users = support::get_json(format!("{}/Users?count=1", env.sb.scim_url())).await;
    let scim_id = users["Resources"][0]["id"].as_str().unwrap();
    let email = users["Resources"][0]["userName"].as_str().unwrap();
    let (status, run) = answer(
        client
            .post(format!("{base}/workflows/gated-delete/runs"))
            .json(&json!({"subject": {"email": email, "scim_user_id": scim_id}, "wait": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &run["status"]),
        (200, &json!("waiting_approval")),
        "{run:#}"
    );
    let id = run["id"].as_str().unwrap();

    // A `<form method="post">` on another site, submitted by script: no body at all.
    let response = client
        .post(format!("{base}/runs/{id}/blocks/delete/approve"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(response).await,
        error(
            403,
            "refusing a cross-site request from `https://evil.example.com`: a state-changing request must come from the service's own origin (or from a client that sends no `Origin`, such as curl or the CLI)"
        )
    );
    // A browser that sends only `Sec-Fetch-Site` is refused too.
    let response = client
        .post(format!("{base}/runs/{id}/blocks/delete/approve"))
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(response).await,
        error(
            403,
            "refusing a `same-site` request (`Sec-Fetch-Site`): a state-changing request must come from the service's own origin (or from a client that sends no `Origin`, such as curl or the CLI)"
        )
    );
    let (_, shown) = answer(
        client
            .get(format!("{base}/runs/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shown["status"], "waiting_approval", "{shown:#}");
    assert!(env.writes().is_empty(), "{:?}", env.writes());

    // The service's own origin may.
    let response = client
        .post(format!("{base}/runs/{id}/blocks/delete/approve"))
        .header("origin", format!("http://{}", service.addr()))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    let (status, approved) = answer(response).await;
    assert_eq!(
        (status, &approved["status"]),
        (200, &json!("succeeded")),
        "{approved:#}"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_loopback_refuses_a_host_it_does_not_answer_to() {
    let env = with_workflows().await;
    let service = open_service(&env).await;
    let port = service.addr().port();
    let client = reqwest::Client::new();
    // DNS rebinding: evil.example.com now resolves to 127.0.0.1, and the page reads the answer
    // as same-origin.
    let response = client
        .get(format!("http://{}/api/runs", service.addr()))
        .header("host", format!("evil.example.com:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(response).await,
        error(
            403,
            "refusing a request for host `evil.example.com`: this service on a loopback address answers to `localhost`, `127.0.0.1` and `[::1]` (a guard against DNS rebinding); add a name a proxy uses to `serve.allowed_hosts`"
        )
    );
    for host in ["localhost", "127.0.0.1", "LocalHost"] {
        let response = client
            .get(format!("http://{}/api/runs", service.addr()))
            .header("host", format!("{host}:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "host `{host}`");
    }
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_readyz_fails_while_the_store_cannot_write_and_healthz_still_answers() {
    let env = with_workflows().await;
    let service = super::serve(&env).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", service.addr());
    let get = |path: &str| client.get(url(path)).send();
    assert_eq!(
        answer(get("/readyz").await.unwrap()).await,
        (
            200,
            json!({"status": "ready", "checks": {"store": "ok", "workflows": "ok", "scheduler": "ok"}})
        )
    );

    let store = service.shared().engine().records().store().clone();
    store.inject_flush_failure(Some("no space left on device"));
    let log = env.data_dir().join("db").join("db");
    let why = format!(
        "cannot make `{}` durable (fsync failed: no space left on device); what blockyard wrote since its last flush may not be on disk: check the disk, then restart blockyard",
        log.display()
    );
    assert_eq!(
        answer(get("/readyz").await.unwrap()).await,
        (
            503,
            json!({"status": "not_ready", "checks": {"store": why, "workflows": "ok", "scheduler": "ok"}})
        )
    );
    // The process is alive: `/healthz` says so, and a write says why it failed.
    assert_eq!(
        answer(get("/healthz").await.unwrap()).await,
        (200, json!({"status": "ok"}))
    );
    let api = crate::support::Api::new(&service);
    assert_eq!(
        api.post("/records/people", json!({"email": "a@b.c"})).await,
        error(500, &why)
    );

    store.inject_flush_failure(None);
    let (status, _) = answer(get("/readyz").await.unwrap()).await;
    assert_eq!(status, 200);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_takes_named_tokens_and_its_connection_cap_from_the_config() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let env = with_workflows().await;
    let config = std::fs::read_to_string(env.path().join("blockyard.yaml")).unwrap();
    env.write(
        "blockyard.yaml",
        &format!("{config}api_tokens:\n  ci:\n    role: viewer\n    token: ${{CI_TOKEN}}\n  alice:\n    role: operator\n    token: file:alice.token\nserve:\n  max_connections: 8\n  header_timeout: 10m\n"),
    );
    env.write("alice.token", "alice-secret\n");
    // Few file descriptors, as with `ulimit -n`: 300 idle sockets would exhaust them.
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -n 128 && exec \"$0\" serve --listen 127.0.0.1:0",
        ])
        .arg(env!("CARGO_BIN_EXE_blockyard"))
        .current_dir(env.path())
        .env_remove("BLOCKYARD_TOKEN")
        .env_remove("RUST_LOG")
        .env("CI_TOKEN", "ci-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve printed where it listens")
            .unwrap();
        seen.push(line.clone());
        if let Some(addr) = line.rsplit_once("on http://") {
            break addr.1.to_owned();
        }
    };
    assert!(
        !seen.iter().any(|l| l.contains("secret")),
        "a token was printed: {seen:?}"
    );
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/api");
    let (status, _) = answer(
        client
            .get(format!("{base}/workflows"))
            .bearer_auth("ci-secret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer(
            client
                .post(format!("{base}/workflows/whoami/runs"))
                .bearer_auth("ci-secret")
                .json(&json!({}))
                .send()
                .await
                .unwrap()
        )
        .await,
        error(
            403,
            "the token `ci` has the role `viewer`; `POST /api/workflows/{name}/runs` needs `operator`; use a token with that role"
        )
    );
    let (status, run) = answer(
        client
            .post(format!("{base}/workflows/whoami/runs"))
            .bearer_auth("alice-secret")
            .json(&json!({"wait": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &run["status"]),
        (200, &json!("succeeded")),
        "{run:#}"
    );
    // Pruning history and backing the store up are an admin's.
    for (path, body, route) in [
        (
            "history/prune",
            json!({"older_than": "30d"}),
            "POST /api/history/prune",
        ),
        (
            "store/backup",
            json!({"dir": env.path().join("copy")}),
            "POST /api/store/backup",
        ),
    ] {
        assert_eq!(
            answer(
                client
                    .post(format!("{base}/{path}"))
                    .bearer_auth("alice-secret")
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            )
            .await,
            error(
                403,
                &format!("the token `alice` has the role `operator`; `{route}` needs `admin`; use a token with that role")
            )
        );
    }
    assert!(!env.path().join("copy").exists());
    drop(idle);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_records_who_approved_with_their_comment_and_drops_the_stale_waiting_note() {
    let env = with_workflows().await;
    env.write("workflows/gated-delete.yaml", GATED_DELETE);
    let config = blockyard::service::ServiceConfig {
        api_tokens: vec![blockyard::server::ApiToken::new(
            "alice",
            blockyard::server::Role::Operator,
            "alice-secret",
        )],
        ..service_config(&env, None)
    };
    let service = Service::start(config).await.unwrap();
    let base = format!("http://{}/api", service.addr());
    let client = reqwest::Client::new();
    let users = support::get_json(format!("{}/Users?count=1", env.sb.scim_url())).await;
    let scim_id = users["Resources"][0]["id"].as_str().unwrap();
    let email = users["Resources"][0]["userName"].as_str().unwrap();
    let (status, run) = answer(
        client
            .post(format!("{base}/workflows/gated-delete/runs"))
            .bearer_auth("alice-secret")
            .json(&json!({"subject": {"email": email, "scim_user_id": scim_id}, "wait": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{run:#}");
    assert_eq!(
        run["trigger"],
        json!({"kind": "manual", "detail": "by alice"})
    );
    let id = run["id"].as_str().unwrap();

    let (status, approved) = answer(
        client
            .post(format!("{base}/runs/{id}/blocks/delete/approve"))
            .bearer_auth("alice-secret")
            .json(&json!({"comment": "HR ticket 4411"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &approved["status"]),
        (200, &json!("succeeded")),
        "{approved:#}"
    );
    let waited = &approved["steps"][1];
    assert_eq!(waited["status"], "waiting_approval", "{approved:#}");
    let note = waited["note"].as_str().unwrap();
    let at = waited["finished_at"].as_str().unwrap();
    let at = &at[..19];
    assert!(
        note.starts_with("approved by alice at ")
            && note.contains(at)
            && note.ends_with(": HR ticket 4411"),
        "{note}"
    );
    let (_, shown) = answer(
        client
            .get(format!("{base}/runs/{id}"))
            .bearer_auth("alice-secret")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        !shown.to_string().contains("blockyard approve"),
        "a finished run still says to approve it: {shown:#}"
    );
    assert_eq!(shown["steps"][1]["note"], waited["note"]);
    service.shutdown().await.unwrap();
}

/// `(METHOD, path)` of every operation in the OpenAPI document.
fn documented(doc: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.push((method.to_uppercase(), path.clone()));
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_describes_every_api_route_in_its_openapi_document() {
    let env = with_workflows().await;
    let service = super::serve(&env).await;
    let api = crate::support::Api::new(&service);
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    let operations = documented(&doc);
    let expected: Vec<(String, String)> = [
        ("DELETE", "/records/{collection}/{key}"),
        ("GET", "/metrics"),
        ("GET", "/paused"),
        ("GET", "/records/{collection}"),
        ("GET", "/records/{collection}/{key}"),
        ("GET", "/runs"),
        ("GET", "/runs/{id}"),
        ("GET", "/service"),
        ("GET", "/triggers/why"),
        ("GET", "/workflows"),
        ("GET", "/workflows/{name}/guard"),
        ("GET", "/workflows/{name}/plan"),
        ("POST", "/history/prune"),
        ("POST", "/pause"),
        ("POST", "/records/{collection}"),
        ("POST", "/records/{collection}/batch"),
        ("POST", "/reload"),
        ("POST", "/resume"),
        ("POST", "/resume-triggers"),
        ("POST", "/retry-failed"),
        ("POST", "/runs/{id}/blocks/{block}/approve"),
        ("POST", "/runs/{id}/blocks/{block}/reject"),
        ("POST", "/runs/{id}/cancel"),
        ("POST", "/runs/{id}/replay"),
        ("POST", "/store/backup"),
        ("POST", "/workflows/{name}/guard/cancel"),
        ("POST", "/workflows/{name}/guard/release"),
        ("POST", "/workflows/{name}/pause"),
        ("POST", "/workflows/{name}/resume-triggers"),
        ("POST", "/workflows/{name}/runs"),
        ("POST", "/workflows/{name}/tick"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(operations, expected);
    // Each documented operation is a route: the router answers it (not its "no such API route"
    // fallback, not 405), here with a query it refuses so that nothing runs.
    for (method, path) in &operations {
        let concrete = path
            .replace("{collection}", "people")
            .replace("{key}", "a@b.c")
            .replace("{id}", "01M8PZ2V27YS07G73C9DPA88VM")
            .replace("{block}", "delete")
            .replace("{name}", "whoami");
        let request = api.client.request(
            method.parse().unwrap(),
            format!("{}{concrete}?openapi_probe=1", api.base),
        );
        let (status, body) = api.send(request).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("unknown query parameter `openapi_probe`"),
            "{method} {path}: {body}"
        );
    }
}

/// A route added to the API with axum's `.route` instead of utoipa-axum's `routes!` (which does
/// not compile without a `#[utoipa::path]` annotation) would be missing from the document.
#[test]
fn every_api_route_is_added_through_the_openapi_router() {
    // The API's routes live in api.rs and, for the CLI's and the guard's, api/cli.rs and
    // api/guard.rs; the operator routes in ops.rs.
    let source = [
        "engine/src/server/api.rs",
        "engine/src/server/api/cli.rs",
        "engine/src/server/api/guard.rs",
        "engine/src/server/ops.rs",
    ]
    .map(|file| std::fs::read_to_string(crate::support::root().join(file)).unwrap())
    .join("\n");
    let outside: Vec<&str> = source
        .lines()
        .filter(|l| l.contains(".route(") || l.contains(".route_service(") || l.contains(".nest("))
        .filter(|l| !l.contains("router.route(OPENAPI_JSON"))
        .map(str::trim)
        .collect();
    assert!(
        outside.is_empty(),
        "routes added outside the OpenAPI document; add each with `.routes(routes!(handler))` and a `#[utoipa::path]` on the handler: {outside:#?}"
    );
    let doc = serde_json::to_value(blockyard::server::api::openapi()).unwrap();
    // `.routes(routes!(handler))`, or `.routes(admin(routes!(handler)))` for an admin route.
    let routed = source.matches("routes!(").count();
    assert_eq!(documented(&doc).len(), routed, "{:#?}", documented(&doc));
}

//! Operating `serve`: pausing and resuming a workflow's triggers, reloading over the API.

use serde_json::{json, Value};

use super::{error, serve, with_workflows};
use crate::support::Api;

/// The trace considerations of `email` by `calendly-offboard` that fired.
async fn fired(api: &Api, email: &str) -> Vec<Value> {
    let (_, why) = api.get(&format!("/triggers/why?subject={email}")).await;
    super::fired(&why).into_iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_paused_workflow_holds_its_runs_until_resumed_and_the_pause_survives_a_restart() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let email = env.member().await.0;

    assert_eq!(
        api.post("/workflows/nope/pause", json!({})).await,
        error(
            404,
            "no workflow `nope` is loaded; `GET /api/workflows` lists them"
        )
    );
    let (status, paused) = api
        .post("/workflows/calendly-offboard/pause", json!({}))
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        (
            &paused["workflow"],
            &paused["paused"],
            &paused["by"],
            &paused["already"]
        ),
        (
            &json!("calendly-offboard"),
            &json!(true),
            &json!("admin"),
            &json!(false)
        )
    );
    let at = chrono::DateTime::parse_from_rfc3339(paused["at"].as_str().unwrap()).unwrap();
    let at = at
        .to_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Pausing again keeps the first pause.
    let (_, again) = api
        .post("/workflows/calendly-offboard/pause", json!({}))
        .await;
    assert_eq!(
        (&again["at"], &again["already"]),
        (&paused["at"], &json!(true))
    );
    let (_, workflows) = api.get("/workflows").await;
    let offboard = workflows
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "calendly-offboard")
        .unwrap();
    assert_eq!(offboard["paused"]["by"], "admin");
    let whoami = workflows
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "whoami")
        .unwrap();
    assert_eq!(whoami["paused"], Value::Null);

    // The transition is queued, and held: the trace says why, and nothing is sent.
    api.post(
        "/records/people",
        json!({"email": email, "status": "active"}),
    )
    .await;
    let (status, body) = api
        .post(
            "/records/people",
            json!({"email": email, "status": "terminated"}),
        )
        .await;
    assert_eq!((status, &body["queued"]), (200, &json!(1)), "{body}");
    let held = format!("not started: workflow `calendly-offboard` paused by admin at {at}");
    let why = api
        .wait_for(&format!("/triggers/why?subject={email}"), |why| {
            super::fired(why)
                .iter()
                .any(|c| c["paused"] == held.as_str())
        })
        .await;
    assert_eq!(super::fired(&why)[0]["run"], Value::Null, "{why}");
    assert!(env.writes().is_empty(), "{:?}", env.writes());

    // Durable: a new process still holds it.
    service.shutdown().await.unwrap();
    let service = serve(&env).await;
    let api = Api::new(&service);
    let (status, list) = api.get("/paused").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        (&list[0]["workflow"], &list[0]["by"], &list[0]["at"]),
        (&json!("calendly-offboard"), &json!("admin"), &paused["at"])
    );
    assert!(env.writes().is_empty(), "{:?}", env.writes());

    // Resumed: the held run starts, and the trace keeps that it waited.
    let (status, resumed) = api
        .post("/workflows/calendly-offboard/resume-triggers", json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(
        (&resumed["paused"], &resumed["was"]["by"]),
        (&json!(false), &json!("admin"))
    );
    let runs = api
        .wait_for(&format!("/runs?subject={email}"), |runs| {
            runs.as_array()
                .unwrap()
                .first()
                .is_some_and(|r| r["status"] == "succeeded")
        })
        .await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(env.writes().len(), 1, "{:?}", env.writes());
    let fired = fired(&api, &email).await;
    assert_eq!(fired[0]["run"], runs[0]["id"]);
    assert_eq!(fired[0]["paused"], held.as_str());
    let (_, again) = api
        .post("/workflows/calendly-offboard/resume-triggers", json!({}))
        .await;
    assert_eq!(again["was"], Value::Null);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_pause_and_resume_every_workflow_at_once() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let (status, all) = api.post("/pause", json!({})).await;
    assert_eq!(status, 200, "{all}");
    let names: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["workflow"])
        .collect();
    assert_eq!(names, [&json!("calendly-offboard"), &json!("whoami")]);
    let (_, list) = api.get("/paused").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    // A run started by hand is not a trigger: it runs.
    let (status, run) = api
        .post("/workflows/whoami/runs", json!({"wait": true}))
        .await;
    assert_eq!((status, &run["status"]), (200, &json!("succeeded")));
    let (status, all) = api.post("/resume-triggers", json!({})).await;
    assert_eq!((status, all.as_array().unwrap().len()), (200, 2), "{all}");
    let (_, list) = api.get("/paused").await;
    assert_eq!(list, json!([]));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reload_over_the_api_keeps_the_old_set_on_error_with_file_and_line() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    env.write("workflows/broken.yaml", "name: broken\nblocks: {}\n");
    let (status, body) = api.post("/reload", json!({})).await;
    assert_eq!(status, 422, "{body}");
    let file = super::workflows(&env).join("broken.yaml");
    let dir = super::workflows(&env);
    let errors = [
        format!(
            "{}:2:1: error: the workflow has no `begin` block; add a block with `type: begin`",
            file.display()
        ),
        format!(
            "{}:2:1: error: the workflow has no `end` block; add a block with `type: end`",
            file.display()
        ),
    ];
    assert_eq!(body["error"]["errors"], json!(errors), "{body}");
    // (`invalid` twice is `LoadError::Invalid`'s own wording, as SIGHUP prints it.)
    assert_eq!(
        body["error"]["message"],
        format!(
            "reload failed, keeping the 2 workflows already loaded: workflows are invalid ({}, and 1 more) invalid; run `blockyard validate {}` to see every error",
            errors[0],
            dir.display()
        )
        .as_str()
    );
    assert_eq!(service.workflows().len(), 2);

    std::fs::remove_file(&file).unwrap();
    env.write(
        "workflows/whoami-too.yaml",
        &crate::support::WHOAMI.replace("name: whoami", "name: whoami-too"),
    );
    assert_eq!(
        api.post("/reload", json!({})).await,
        (200, json!({"workflows": 3}))
    );
    let (status, _) = api
        .post("/workflows/whoami-too/runs", json!({"wait": true}))
        .await;
    assert_eq!(status, 200);
    // Without the token, refused as every `/api` route is.
    let response = reqwest::Client::new()
        .post(format!("{}/reload", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    service.shutdown().await.unwrap();
}

/// The real binary as OS user `alice`: `(exit code, stdout, stderr)`.
fn as_alice(
    env: &crate::support::Env,
    args: &[&str],
    extra: &[(&str, &str)],
) -> (i32, String, String) {
    let mut command = env.command(args);
    command
        .env("USER", "alice")
        .env_remove("BLOCKYARD_SERVER")
        .env_remove("BLOCKYARD_TOKEN");
    for (k, v) in extra {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        crate::support::stdout(&out),
        crate::support::stderr(&out),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_triggers_on_the_binary_locally_and_through_a_running_serve() {
    let env = with_workflows().await;
    let (code, out, err) = as_alice(&env, &["pause", "nope"], &[]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(
        err,
        "error: no workflow `nope` in `workflows` (it has `calendly-offboard`, `whoami`); pass `--workflows DIR` for another directory\n"
    );
    let (code, _, err) = as_alice(&env, &["pause"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("the following required arguments were not provided:\n  <WORKFLOW|--all>"),
        "{err}"
    );

    let (code, out, err) = as_alice(&env, &["pause", "calendly-offboard"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("paused `calendly-offboard` (by alice at "),
        "{out}"
    );
    assert!(
        out.ends_with("): its triggered runs are queued and held until `blockyard resume-triggers calendly-offboard`\n"),
        "{out}"
    );

    // `serve` starts with it paused and says so; the CLI then acts through its API.
    let service = serve(&env).await;
    let api = Api::new(&service);
    let (_, list) = api.get("/paused").await;
    assert_eq!(list[0]["by"], "alice", "{list}");
    let (code, _, err) = as_alice(&env, &["resume-triggers", "calendly-offboard"], &[]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "error: the data dir `data` is in use by another blockyard process (a running `blockyard serve`?); stop it, or point this command at another `--data-dir`\n",
        )
    );
    let server = format!("http://{}", service.addr());
    let (code, _, err) = as_alice(&env, &["pause", "--all", "--server", &server], &[]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!("error: via the service at {server} refused the request: missing `Authorization: Bearer TOKEN` (the token is `BLOCKYARD_TOKEN`); set `BLOCKYARD_TOKEN` to the service's token\n")
    );
    let token = [("BLOCKYARD_TOKEN", crate::support::API_TOKEN)];
    let (code, out, err) = as_alice(&env, &["pause", "--all", "--server", &server], &token);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("`calendly-offboard` was already paused by alice at "),
        "{out}"
    );
    assert!(
        lines[1].starts_with("paused `whoami` (by admin at "),
        "{out}"
    );
    let server_env = [
        ("BLOCKYARD_TOKEN", crate::support::API_TOKEN),
        ("BLOCKYARD_SERVER", server.as_str()),
    ];
    let (code, out, err) = as_alice(&env, &["resume-triggers", "whoami", "--json"], &server_env);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&answer["workflow"], &answer["paused"], &answer["was"]["by"]),
        (&json!("whoami"), &json!(false), &json!("admin"))
    );
    service.shutdown().await.unwrap();

    let (code, out, err) = as_alice(&env, &["resume-triggers", "--all"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("resumed the triggers of `calendly-offboard` (paused by alice at "),
        "{out}"
    );
    let (_, out, _) = as_alice(&env, &["resume-triggers", "whoami"], &[]);
    assert_eq!(out, "`whoami` was not paused\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_metrics_count_runs_vendor_requests_calls_flushes_and_the_queue() {
    let env = with_workflows().await;
    // begin → `me` (approval required) → end: a run that parks waiting for approval.
    env.write(
        "workflows/gated.yaml",
        "name: gated\nblocks:\n  begin:\n    type: begin\n    next: me\n  me:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    approval: required\n    next: end\n  end:\n    type: end\n",
    );
    let service = serve(&env).await;
    let api = Api::new(&service);
    let (status, gated) = api
        .post("/workflows/gated/runs", json!({"wait": true}))
        .await;
    assert_eq!(
        (status, &gated["status"]),
        (200, &json!("waiting_approval"))
    );
    let (status, run) = api
        .post("/workflows/whoami/runs", json!({"wait": true}))
        .await;
    assert_eq!((status, &run["status"]), (200, &json!("succeeded")));
    let url = format!("http://{}/metrics", service.addr());
    let response = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    // A run's end is counted as its task ends, which may be just after the API answered.
    let finished = "blockyard_runs_finished_total{workflow=\"whoami\",outcome=\"succeeded\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(crate::support::API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let text = response.text().await.unwrap();
        if text.contains(finished) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // The counters are process-wide (other tests run in this process too): each line is there,
    // with a value of at least one where this test caused it.
    let value = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"));
        line[prefix.len()..].trim().parse().unwrap()
    };
    assert!(value("blockyard_runs_started_total{workflow=\"whoami\"}") >= 1.0);
    assert!(
        value("blockyard_runs_finished_total{workflow=\"whoami\",outcome=\"succeeded\"}") >= 1.0
    );
    assert!(value("blockyard_vendor_requests_total{vendor=\"calendly\",status=\"200\"}") >= 1.0);
    assert!(
        value("blockyard_block_duration_seconds_count{preset=\"calendly.current_user\"}") >= 1.0
    );
    assert!(value("blockyard_store_flush_seconds_count") >= 1.0);
    assert_eq!(value("blockyard_queue_depth"), 0.0);
    assert_eq!(value("blockyard_queue_oldest_age_seconds"), 0.0);
    // Parked runs, read from this service's store at the scrape: the one waiting for approval.
    assert_eq!(
        value("blockyard_runs_waiting{status=\"waiting_approval\"}"),
        1.0
    );
    assert_eq!(value("blockyard_runs_waiting{status=\"retrying\"}"), 0.0);
    assert_eq!(value("blockyard_runs_waiting{status=\"waiting\"}"), 0.0);
    assert_eq!(value("blockyard_runs_waiting{status=\"held\"}"), 0.0);
    assert!(
        text.contains("# TYPE blockyard_block_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_logs_json_lines_with_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let env = with_workflows().await;
    let mut child = env
        .command(&["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("BLOCKYARD_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen: Vec<Value> = Vec::new();
    let mut message = |line: String| -> String {
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"));
        let text = value["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        seen.push(value);
        text
    };
    let url = loop {
        let text = message(lines.next().unwrap().unwrap());
        if let Some(url) = text.strip_prefix("serving 2 workflows from `workflows` on ") {
            break url.to_owned();
        }
    };
    // A state-changing request is logged with who asked and what it changed.
    let id = "01M8PZ2V27YS07G73C9DPA88VM";
    let status = reqwest::Client::new()
        .post(format!("{url}/api/runs/{id}/cancel"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    let logged = loop {
        let line = lines.next().unwrap().unwrap();
        message(line.clone());
        let value: Value = serde_json::from_str(&line).unwrap();
        if value["fields"]["message"] == "api request" {
            break value;
        }
    };
    assert_eq!(
        (
            &logged["fields"]["actor"],
            &logged["fields"]["route"],
            &logged["fields"]["path"]
        ),
        (
            &json!("local"),
            &json!("POST /api/runs/{id}/cancel"),
            &json!(format!("/api/runs/{id}/cancel"))
        ),
        "{logged}"
    );
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let texts: Vec<String> = rest.into_iter().map(&mut message).collect();
    assert_eq!(
        texts.last().map(String::as_str),
        Some("stopped"),
        "{texts:?}"
    );
    assert!(child.wait().unwrap().success());
    assert!(
        seen.iter()
            .all(|v| v["level"] == "INFO" || v["level"] == "WARN"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|v| v.to_string().contains('\u{1b}')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_lists_first_replays_with_yes_and_never_twice() {
    let env = crate::support::Env::start(blockyard::sandbox::SandboxConfig {
        seed_users: 2,
        token: Some(crate::support::TOKEN.to_owned()),
        ..Default::default()
    })
    .await;
    env.write("whoami.yaml", crate::support::WHOAMI);
    let config = std::fs::read_to_string(env.path().join("blockyard.yaml")).unwrap();
    // An outage: the credential is refused.
    env.write(
        "blockyard.yaml",
        &config.replacen(crate::support::TOKEN, "revoked-token", 1),
    );
    for _ in 0..2 {
        let (code, _, err) = env.run(&["run", "whoami.yaml"]);
        assert_eq!(code, 1, "{err}");
    }
    env.write("blockyard.yaml", &config);
    let failed = env.json(&["history", "list", "--json"]);
    let ids: Vec<&str> = failed
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let error = failed[0]["error"].as_str().unwrap().to_owned();

    let (code, out, _) = env.run(&["retry-failed", "--error", "no such text"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "no failed or needs_attention runs match\n")
    );
    let sent = env.count("GET", "/users/me");
    let (code, out, err) = env.run(&["retry-failed", "--workflow", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "would replay {} whoami failed - ({error})\nwould replay {} whoami failed - ({error})\n2 runs would be replayed live; run again with `--yes` to replay them\n",
            ids[0], ids[1]
        )
    );
    assert_eq!(
        env.count("GET", "/users/me"),
        sent,
        "a listing sends nothing"
    );

    let (code, out, err) = env.run(&["retry-failed", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let mut new_runs = Vec::new();
    for (line, id) in lines.iter().zip(&ids) {
        let rest = line
            .strip_prefix(&format!("retried {id} as run "))
            .unwrap_or_else(|| panic!("{out}"));
        let (new, status) = rest.split_once(": ").unwrap();
        assert_eq!(status, "succeeded");
        new_runs.push(new.to_owned());
    }
    assert_eq!(env.count("GET", "/users/me"), sent + 2);

    // Again: each is skipped, naming its retry; nothing is sent.
    let (code, out, _) = env.run(&["retry-failed", "--yes"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    for ((line, id), new) in lines.iter().zip(&ids).zip(&new_runs) {
        assert!(
            line.starts_with(&format!("skipped {id}: already retried by run {new} at ")),
            "{out}"
        );
    }
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(env.count("GET", "/users/me"), sent + 2);
}

/// `(status, JSON body)` of `METHOD base+path` with `token`, no body.
async fn call(base: &str, method: &str, path: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_operator_routes_take_roles_and_record_the_token_name() {
    use blockyard::server::{ApiToken, Role};
    let env = with_workflows().await;
    let config = blockyard::service::ServiceConfig {
        api_tokens: vec![
            ApiToken::new("dashboard", Role::Viewer, "viewer-secret"),
            ApiToken::new("oncall-bot", Role::Operator, "operator-secret"),
        ],
        ..super::service_config(&env, Some(crate::support::API_TOKEN))
    };
    let service = blockyard::service::Service::start(config).await.unwrap();
    let root = format!("http://{}", service.addr());
    let base = format!("{root}/api");

    // A viewer reads what is paused and the metrics (at `/metrics` and `/api/metrics`)...
    assert_eq!(
        call(&base, "GET", "/paused", "viewer-secret").await,
        (200, json!([]))
    );
    for url in [format!("{root}/metrics"), format!("{base}/metrics")] {
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth("viewer-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let text = response.text().await.unwrap();
        assert!(
            text.contains("# TYPE blockyard_queue_depth gauge"),
            "{text}"
        );
    }
    // ... and changes nothing.
    for route in [
        "/workflows/{name}/pause",
        "/pause",
        "/workflows/{name}/resume-triggers",
        "/resume-triggers",
    ] {
        let path = route.replace("{name}", "whoami");
        assert_eq!(
            call(&base, "POST", &path, "viewer-secret").await,
            error(
                403,
                &format!("the token `dashboard` has the role `viewer`; `POST /api{route}` needs `operator`; use a token with that role")
            ),
            "{route}"
        );
    }
    // An operator pauses, and the pause names the token.
    let (status, paused) = call(&base, "POST", "/workflows/whoami/pause", "operator-secret").await;
    assert_eq!(
        (status, &paused["by"]),
        (200, &json!("oncall-bot")),
        "{paused}"
    );
    let (_, list) = call(&base, "GET", "/paused", "viewer-secret").await;
    assert_eq!(
        (&list[0]["workflow"], &list[0]["by"]),
        (&json!("whoami"), &json!("oncall-bot"))
    );
    let (status, all) = call(&base, "POST", "/pause", "operator-secret").await;
    assert_eq!(status, 200, "{all}");
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|p| p["by"] == "oncall-bot"),
        "{all}"
    );
    // Reload is admin only.
    assert_eq!(
        call(&base, "POST", "/reload", "operator-secret").await,
        error(
            403,
            "the token `oncall-bot` has the role `operator`; `POST /api/reload` needs `admin`; use a token with that role"
        )
    );
    assert_eq!(
        call(&base, "POST", "/reload", crate::support::API_TOKEN).await,
        (200, json!({"workflows": 2}))
    );
    let (status, resumed) = call(&base, "POST", "/resume-triggers", "operator-secret").await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed.as_array().unwrap().len(), 2, "{resumed}");
    service.shutdown().await.unwrap();
}

/// The real binary with the API token, no `BLOCKYARD_SERVER` (a running serve is found by its
/// `serve.json`): `(exit code, stdout, stderr)`.
fn cli(env: &crate::support::Env, args: &[&str]) -> (i32, String, String) {
    let out = env
        .command(args)
        .env("BLOCKYARD_TOKEN", crate::support::API_TOKEN)
        .env_remove("BLOCKYARD_SERVER")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        crate::support::stdout(&out),
        crate::support::stderr(&out),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_and_pause_go_through_a_running_serve_as_on_the_data_dir() {
    let env = crate::support::Env::start(blockyard::sandbox::SandboxConfig {
        seed_users: 2,
        token: Some(crate::support::TOKEN.to_owned()),
        ..Default::default()
    })
    .await;
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    env.write("workflows/whoami.yaml", crate::support::WHOAMI);
    let config = std::fs::read_to_string(env.path().join("blockyard.yaml")).unwrap();
    // An outage: the credential is refused.
    env.write(
        "blockyard.yaml",
        &config.replacen(crate::support::TOKEN, "revoked-token", 1),
    );
    for _ in 0..2 {
        let (code, _, err) = cli(&env, &["run", "workflows/whoami.yaml"]);
        assert_eq!(code, 1, "{err}");
    }
    env.write("blockyard.yaml", &config);
    let (code, local_listing, err) = cli(&env, &["retry-failed"]);
    assert_eq!(code, 0, "{err}");
    let (_, local_json, _) = cli(&env, &["retry-failed", "--json"]);

    let mut served = super::Served::start(&env, &[("BLOCKYARD_TOKEN", crate::support::API_TOKEN)]);
    served.read_until("serving");
    let sent = env.count("GET", "/users/me");
    // The listing through the service is the data dir's, word for word.
    assert_eq!(
        cli(&env, &["retry-failed"]),
        (0, local_listing.clone(), String::new())
    );
    assert_eq!(
        cli(&env, &["retry-failed", "--json"]),
        (0, local_json.clone(), String::new())
    );
    let listed: Value = serde_json::from_str(&local_json).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["action"], "would_replay", "{e}");
            e["run"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    assert_eq!(
        cli(&env, &["retry-failed", "--since", "soon"]),
        (
            2,
            String::new(),
            "error: `--since soon` is not a duration; write `30m`, `24h` or `7d`\n".to_owned()
        )
    );
    assert_eq!(
        env.count("GET", "/users/me"),
        sent,
        "a listing sends nothing"
    );

    // Pausing finds the service by its `serve.json` too, and names the token.
    let (code, out, err) = cli(&env, &["pause", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("paused `whoami` (by admin at "), "{out}");
    let (code, out, err) = cli(&env, &["resume-triggers", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("resumed the triggers of `whoami` (paused by admin at "),
        "{out}"
    );

    // Replayed live in the service, each once.
    let (code, out, err) = cli(&env, &["retry-failed", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let mut new_runs = Vec::new();
    for (line, id) in lines.iter().zip(&ids) {
        let rest = line
            .strip_prefix(&format!("retried {id} as run "))
            .unwrap_or_else(|| panic!("{out}"));
        let (new, status) = rest.split_once(": ").unwrap();
        assert_eq!(status, "succeeded");
        new_runs.push(new.to_owned());
    }
    assert_eq!(env.count("GET", "/users/me"), sent + 2);
    let (code, again, _) = cli(&env, &["retry-failed", "--yes"]);
    assert_eq!(code, 0, "{again}");
    let lines: Vec<&str> = again.lines().collect();
    assert_eq!(lines.len(), 2, "{again}");
    for ((line, id), new) in lines.iter().zip(&ids).zip(&new_runs) {
        assert!(
            line.starts_with(&format!("skipped {id}: already retried by run {new} at ")),
            "{again}"
        );
    }
    assert_eq!(env.count("GET", "/users/me"), sent + 2);

    // Stopped: the data dir says the same, and the marks name the token.
    served.signal("TERM");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
    assert_eq!(
        cli(&env, &["retry-failed", "--yes"]),
        (0, again, String::new())
    );
    let (_, marks, _) = cli(&env, &["retry-failed", "--json"]);
    let marks: Value = serde_json::from_str(&marks).unwrap();
    assert!(
        marks
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["retried"]["by"] == "admin"),
        "{marks}"
    );
    assert_eq!(env.count("GET", "/users/me"), sent + 2);
}

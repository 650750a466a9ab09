//! `blockyard serve`: a real `Service` on loopback with a temp data dir and its own workflows,
//! driven over HTTP, against the in-process sandbox; and the real binary stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blockyard::http::Credentials;
use blockyard::records::{Change, Collection, RecordKey, Subject, Write, WriteMode};
use blockyard::service::{worker, Service, ServiceConfig};
use blockyard::trigger::{Queue, Triggers};
use serde_json::{json, Value};

use crate::support::{self, blocks, Api, Env, THREE_READS, WHOAMI};

mod cli;
mod guard;
mod ops;
mod retention;
mod retries;
mod waits;

const TOKEN: &str = crate::support::API_TOKEN;

/// A [`support::Env`] whose temp dir also holds `workflows/`, with a copy of
/// `calendly-offboard.yaml` and `whoami.yaml`.
async fn with_workflows() -> Env {
    let env = Env::seeded(5).await;
    std::fs::create_dir(workflows(&env)).unwrap();
    std::fs::copy(
        support::workflow("calendly-offboard.yaml"),
        workflows(&env).join("calendly-offboard.yaml"),
    )
    .unwrap();
    env.write("workflows/whoami.yaml", WHOAMI);
    env
}

fn workflows(env: &Env) -> PathBuf {
    env.path().join("workflows")
}

fn service_config(env: &Env, token: Option<&str>) -> ServiceConfig {
    let config = env.config();
    ServiceConfig {
        token: token.map(str::to_owned),
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        poll: Duration::from_millis(200),
        ..ServiceConfig::new(
            workflows(env),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    }
}

async fn serve(env: &Env) -> Service {
    Service::start(service_config(env, Some(TOKEN)))
        .await
        .unwrap()
}

/// Waits (10 s at most) until the service's queue is empty: each entry acknowledged, after its
/// run or without one.
async fn drained(service: &Service) {
    let queue = Queue::open(service.shared().engine().records().store()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !queue.is_empty() {
        assert!(Instant::now() < deadline, "the queue never drained");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What a `GET /triggers/why` answer's first subject considered and fired.
fn fired(why: &Value) -> Vec<&Value> {
    why[0]["trace"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["considered"].as_array().unwrap())
        .filter(|c| c["fired"] == true)
        .collect()
}

fn error(status: u16, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"status": status, "message": message}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_api_refuses_bad_tokens_big_bodies_and_unknown_things_with_json_errors() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let url = format!("{}/records/people", api.base);
    let person = json!({"email": "a@b.c"});

    let response = api.client.post(&url).json(&person).send().await.unwrap();
    assert_eq!(
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap()
        ),
        error(
            401,
            "missing `Authorization: Bearer TOKEN` (the token is `BLOCKYARD_TOKEN`)"
        )
    );
    let response = api
        .client
        .post(&url)
        .bearer_auth("wrong")
        .json(&person)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap()
        ),
        error(401, "the bearer token is not valid")
    );

    let big = json!({"email": "a@b.c", "blob": "x".repeat(2 * 1024 * 1024)});
    let response = api
        .client
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&big)
        .send()
        .await
        .unwrap();
    // The unread rest of the body means the connection closes: the answer says so, and the
    // client's next request (below) goes on a new one.
    assert_eq!(response.headers()["connection"], "close");
    assert_eq!(
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap()
        ),
        error(413, "the request body is too large")
    );
    assert_eq!(
        api.post("/records/robots", person.clone()).await,
        error(
            404,
            "no collection `robots`; the collections are `people` and `saas_users`"
        )
    );
    assert_eq!(
        api.post(
            "/records/people",
            json!([{"email": "a@b.c"}, {"name": "x"}])
        )
        .await,
        error(400, "record 1: missing `email`")
    );
    assert_eq!(
        api.post("/records/people", json!("jane")).await,
        error(
            400,
            "the body must be a JSON object (one record) or an array of them"
        )
    );
    assert_eq!(
        api.get("/records/people/nobody@b.c").await,
        error(404, "no people record `nobody@b.c`")
    );
    assert_eq!(
        api.get("/runs/nope").await,
        error(
            400,
            "`nope` is not a run id (26 characters, as `GET /api/runs` shows)"
        )
    );
    assert_eq!(
        api.get("/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV").await,
        error(404, "no run `01ARZ3NDEKTSV4RRFFQ69G5FAV`")
    );
    assert_eq!(
        api.post("/workflows/nope/runs", json!({})).await,
        error(
            404,
            "no workflow `nope` is loaded; `GET /api/workflows` lists them"
        )
    );
    assert_eq!(
        api.get("/runs?status=done").await,
        error(400, "unknown status `done`; use one of `queued`, `running`, `retrying`, `waiting_approval`, `waiting`, `held`, `succeeded`, `completed_with_failures`, `failed`, `cancelled`, `needs_attention`")
    );
    // Nothing was written by the refused requests.
    assert_eq!(api.get("/runs").await, (200, json!([])));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_posted_person_starts_the_matching_workflow_exactly_once() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let email = env.member().await.0;

    // Created as active: `calendly-offboard` watches updates to terminated, so nothing starts.
    let (status, body) = api
        .post(
            "/records/people",
            json!({"email": email.to_uppercase(), "status": "active"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"][0]["outcome"], "created");
    assert_eq!(body["queued"], 0);

    let (status, body) = api
        .post(
            "/records/people",
            json!([{"email": email, "status": "terminated"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"][0]["key"], email.as_str());
    assert_eq!(body["records"][0]["outcome"], "updated");
    assert_eq!(body["queued"], 1);
    let queued = body["records"][0]["queued"][0].as_str().unwrap().to_owned();

    let runs = api
        .wait_for(&format!("/runs?subject={email}"), |runs| {
            runs.as_array()
                .unwrap()
                .first()
                .is_some_and(|r| r["status"] == "succeeded")
        })
        .await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    let run = &runs[0];
    assert_eq!(run["workflow"], "calendly-offboard");
    assert_eq!(run["trigger"]["kind"], "record");
    assert_eq!(
        run["trigger"]["detail"],
        format!("people/{email} updated (queue {queued})").as_str()
    );
    assert_eq!(env.writes().len(), 1, "{:?}", env.writes());
    assert!(env.writes()[0].starts_with("DELETE "), "{:?}", env.writes());

    // The run with its steps; the save landed on the record.
    let id = run["id"].as_str().unwrap();
    let (status, shown) = api.get(&format!("/runs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        support::blocks(&shown),
        [
            ("begin", "succeeded"),
            ("find", "succeeded"),
            ("remove", "succeeded"),
            ("end", "succeeded")
        ]
    );
    let (_, record) = api.get(&format!("/records/people/{email}")).await;
    assert_eq!(record["calendly_status"], "removed");

    // The same record again changes nothing and starts nothing.
    let (_, body) = api
        .post(
            "/records/people",
            json!({"email": email, "status": "terminated"}),
        )
        .await;
    assert_eq!(body["records"][0]["outcome"], "unchanged");
    assert_eq!(body["queued"], 0);
    drained(&service).await;
    let (_, runs) = api.get(&format!("/runs?subject={email}")).await;
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(env.writes().len(), 1);

    // Why: the trace names the run the update started.
    let (_, why) = api.get(&format!("/triggers/why?subject={email}")).await;
    let fired = fired(&why);
    assert_eq!(fired.len(), 1, "{why}");
    assert_eq!(fired[0]["run"], id);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_manual_runs_replay_and_cancel_answer() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    let api = Api::new(&service);

    let (status, workflows) = api.get("/workflows").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = workflows
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calendly-offboard", "whoami"]);

    let (status, run) = api
        .post("/workflows/whoami/runs", json!({"wait": true}))
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["trigger"]["kind"], "manual");
    assert_eq!(run["steps"].as_array().unwrap().len(), 3);
    let id = run["id"].as_str().unwrap().to_owned();

    // Without `wait` (and without a body): 202 and the run record, then it finishes.
    let response = api
        .client
        .post(format!("{}/workflows/whoami/runs", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let started: Value = response.json().await.unwrap();
    let second = started["id"].as_str().unwrap().to_owned();
    api.wait_for(&format!("/runs/{second}"), |r| r["status"] == "succeeded")
        .await;

    assert_eq!(
        api.post(&format!("/runs/{id}/cancel"), json!({})).await,
        error(409, &format!("run `{id}` has already finished: succeeded"))
    );

    let (status, offline) = api
        .post(&format!("/runs/{id}/replay"), json!({"offline": true}))
        .await;
    assert_eq!(status, 200, "{offline}");
    assert_eq!(offline["identical"], true);
    assert_eq!(offline["original"], id.as_str());

    let (status, replayed) = api.post(&format!("/runs/{id}/replay"), json!({})).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["replay_of"], id.as_str());
    assert_eq!(replayed["status"], "succeeded");

    let (_, runs) = api.get("/runs?workflow=whoami&limit=10").await;
    assert_eq!(runs.as_array().unwrap().len(), 3, "{runs}");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_reload_that_fails_keeps_the_old_workflows() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    env.write("workflows/broken.yaml", "name: broken\nblocks: {}\n");
    let err = service.reload().await.unwrap_err();
    assert!(err.to_string().contains("invalid"), "{err}");
    assert_eq!(service.workflows().len(), 2);
    let api = Api::new(&service);
    let (status, run) = api
        .post("/workflows/whoami/runs", json!({"wait": true}))
        .await;
    assert_eq!((status, &run["status"]), (200, &json!("succeeded")));

    std::fs::remove_file(workflows(&env).join("broken.yaml")).unwrap();
    env.write(
        "workflows/whoami-too.yaml",
        &WHOAMI.replace("name: whoami", "name: whoami-too"),
    );
    assert_eq!(service.reload().await.unwrap(), 3);
    let (status, _) = api
        .post("/workflows/whoami-too/runs", json!({"wait": true}))
        .await;
    assert_eq!(status, 200);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_holds_the_data_dir_and_other_commands_say_so() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    let data = env.data_dir().display().to_string();
    for args in [
        vec!["history", "list", "--data-dir", data.as_str()],
        vec!["records", "list", "people", "--data-dir", data.as_str()],
    ] {
        let out = support::blockyard_in(env.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            support::stderr(&out),
            format!("error: the data dir `{data}` is in use by another blockyard process (a running `blockyard serve`?); stop it, or point this command at another `--data-dir`\n")
        );
    }
    service.shutdown().await.unwrap();
}

/// The real binary, with its stderr lines.
struct Served {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
}

impl Served {
    fn start(env: &Env, extra_env: &[(&str, &str)]) -> Served {
        let mut command = env.command(&["serve", "--listen", "127.0.0.1:0"]);
        command
            .env_remove("BLOCKYARD_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Served { child, lines }
    }

    /// Reads stderr until a line contains `needle`; returns the lines read.
    fn read_until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return seen;
            }
        }
        panic!("stderr ended before `{needle}`: {seen:#?}");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_reloads_on_sighup_and_stops_on_sigterm_with_exit_0() {
    let env = with_workflows().await;
    let mut served = Served::start(&env, &[]);
    let start = served.read_until("serving");
    let serving = start.last().unwrap();
    assert!(
        serving.starts_with("serving 2 workflows from `workflows` on http://127.0.0.1:"),
        "{start:?}"
    );
    let addr = serving.rsplit("http://").next().unwrap().to_owned();
    let warning = served.read_until("BLOCKYARD_TOKEN");
    assert_eq!(
        warning.last().unwrap(),
        "warning: no BLOCKYARD_TOKEN and no `api_tokens`: the API is open to local users only (listening on loopback)"
    );
    let health = support::get_json(format!("http://{addr}/healthz")).await;
    assert_eq!(health, json!({"status": "ok"}));

    env.write("workflows/broken.yaml", "name: broken\n");
    served.signal("HUP");
    served.read_until("reload failed, keeping the workflows already loaded");
    let workflows = support::get_json(format!("http://{addr}/api/workflows")).await;
    assert_eq!(workflows.as_array().unwrap().len(), 2);

    served.signal("TERM");
    served.read_until("stopped");
    let status = served.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_refuses_to_start_on_an_invalid_workflow() {
    let env = with_workflows().await;
    env.write("workflows/broken.yaml", "name: broken\n");
    let mut served = Served::start(&env, &[("BLOCKYARD_TOKEN", "t")]);
    let lines = served.read_until("refusing to start");
    let status = served.child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{lines:#?}");
    assert!(lines[0].contains("broken.yaml"), "{lines:#?}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("error: refusing to start: "),
        "{lines:#?}"
    );
}

/// `whoami`, started every second by a schedule.
fn tick() -> String {
    WHOAMI.replace("name: whoami", "name: tick").replace(
        "    type: begin\n",
        "    type: begin\n    schedule: { cron: \"* * * * * *\", timezone: UTC }\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_schedule_fires_on_time_and_each_tick_runs_once() {
    let env = with_workflows().await;
    env.write("workflows/tick.yaml", &tick());
    let service = serve(&env).await;
    let api = Api::new(&service);
    let runs = api
        .wait_for("/runs?workflow=tick", |runs| {
            runs.as_array().unwrap().len() >= 2
                && runs
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["status"] == "succeeded")
        })
        .await;
    service.shutdown().await.unwrap();
    let mut ticks: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["trigger"]["kind"], "schedule", "{r}");
            let detail = r["trigger"]["detail"].as_str().unwrap();
            detail.split(" (queue").next().unwrap()
        })
        .collect();
    let all = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), all, "one run per tick: {runs}");
}

fn person(email: &str, status: &str) -> Write {
    let fields = json!({"email": email, "status": status});
    Write {
        subject: Subject::new(Collection::People, RecordKey::parse(email)),
        change: Change::Upsert {
            fields: fields.as_object().unwrap().clone(),
            mode: WriteMode::CreateUpdate,
        },
    }
}

/// A process recorded a queued run (and even finished it) but stopped before acknowledging the
/// queue entry: the next `serve` acknowledges the entry instead of starting the run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_run_recorded_but_not_acknowledged_before_a_stop_is_not_started_again() {
    let env = with_workflows().await;
    let email = env.member().await.0;
    {
        let engine = env.engine();
        let vars = env.config().vars.into_iter().collect();
        let triggers =
            Triggers::load_dir(&workflows(&env), engine.client().presets(), &vars).unwrap();
        let records = engine.records();
        let now = chrono::Utc::now();
        records
            .write(&[person(&email, "active")], &triggers, now)
            .unwrap();
        let written = records
            .write(&[person(&email, "terminated")], &triggers, now)
            .unwrap();
        assert_eq!(written[0].queued.len(), 1);
        let queue = Queue::open(records.store()).unwrap();
        let entry = queue.claim().unwrap().unwrap();
        let request = worker::run_request(records, &entry).unwrap();
        let prepared = engine
            .prepare_file(&workflows(&env).join("calendly-offboard.yaml"))
            .unwrap();
        let outcome = engine.run(&prepared, request).await.unwrap();
        assert!(outcome.succeeded());
        records.store().flush().await.unwrap();
    }
    assert_eq!(env.writes().len(), 1);

    let service = serve(&env).await;
    let api = Api::new(&service);
    drained(&service).await;
    let (_, runs) = api.get(&format!("/runs?subject={email}")).await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(env.writes().len(), 1, "{:?}", env.writes());
    let (_, why) = api.get(&format!("/triggers/why?subject={email}")).await;
    let fired = fired(&why);
    assert_eq!(fired[0]["run"], runs[0]["id"], "{why}");
    service.shutdown().await.unwrap();
}

/// `POST /api/runs/{id}/replay?offline=true` used to ignore the query and replay live, sending
/// real requests: every route now refuses a query parameter or a body field it does not take,
/// naming them and what it takes, before doing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_api_refuses_query_parameters_and_body_fields_it_does_not_take() {
    let env = with_workflows().await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let (status, run) = api
        .post("/workflows/whoami/runs", json!({"wait": true}))
        .await;
    assert_eq!(status, 200, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let seen = env.sb.requests().len();

    let response = api
        .client
        .post(format!("{}/runs/{id}/replay?offline=true", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap()
        ),
        error(
            400,
            "unknown query parameter `offline`: `POST /api/runs/{id}/replay` takes no query parameters; send its options in the JSON body (`from`, `offline`, `latest`)"
        )
    );
    assert_eq!(
        env.sb.requests().len(),
        seen,
        "the refused replay sent requests"
    );

    let takes_none = |route: &str| format!("`{route}` takes no query parameters");
    let with_body = |route: &str, fields: &str| {
        format!("`{route}` takes no query parameters; send its options in the JSON body ({fields})")
    };
    let routes: Vec<(reqwest::Method, String, String)> = vec![
        (
            reqwest::Method::POST,
            "/records/people".to_owned(),
            "`POST /api/records/{collection}` takes `mode`".to_owned(),
        ),
        (
            reqwest::Method::GET,
            "/records/people/a@b.c".to_owned(),
            takes_none("GET /api/records/{collection}/{*key}"),
        ),
        (
            reqwest::Method::GET,
            "/triggers/why?subject=a@b.c".to_owned(),
            "`GET /api/triggers/why` takes `subject`".to_owned(),
        ),
        (
            reqwest::Method::GET,
            "/workflows".to_owned(),
            takes_none("GET /api/workflows"),
        ),
        (
            reqwest::Method::POST,
            "/workflows/whoami/runs".to_owned(),
            with_body(
                "POST /api/workflows/{name}/runs",
                "`subject`, `vars`, `wait`, `force`, `dry_run`",
            ),
        ),
        (
            reqwest::Method::POST,
            "/workflows/whoami/tick".to_owned(),
            takes_none("POST /api/workflows/{name}/tick"),
        ),
        (
            reqwest::Method::GET,
            "/runs".to_owned(),
            "`GET /api/runs` takes `workflow`, `status`, `subject`, `since`, `limit`".to_owned(),
        ),
        (
            reqwest::Method::GET,
            format!("/runs/{id}"),
            takes_none("GET /api/runs/{id}"),
        ),
        (
            reqwest::Method::POST,
            format!("/runs/{id}/replay"),
            with_body("POST /api/runs/{id}/replay", "`from`, `offline`, `latest`"),
        ),
        (
            reqwest::Method::POST,
            format!("/runs/{id}/cancel"),
            takes_none("POST /api/runs/{id}/cancel"),
        ),
        (
            reqwest::Method::POST,
            format!("/runs/{id}/blocks/me/approve"),
            takes_none("POST /api/runs/{id}/blocks/{block}/approve"),
        ),
        (
            reqwest::Method::POST,
            format!("/runs/{id}/blocks/me/reject"),
            takes_none("POST /api/runs/{id}/blocks/{block}/reject"),
        ),
    ];
    for (method, path, takes) in &routes {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{separator}bogus=1&dry=", api.base);
        let answer = api
            .send(
                api.client
                    .request(method.clone(), url)
                    .json(&json!({"email": "a@b.c"})),
            )
            .await;
        assert_eq!(
            answer,
            error(
                400,
                &format!("unknown query parameters `bogus`, `dry`: {takes}")
            ),
            "{method} {path}"
        );
    }

    // Body fields: named, with the fields the route takes; a route that takes no body refuses any
    // field (an empty body or `{}` is fine).
    let bodies = [
        (
            reqwest::Method::POST,
            "/workflows/whoami/runs".to_owned(),
            json!({"wiat": true, "wait": true}),
            "unknown field `wiat` in the request body: `POST /api/workflows/{name}/runs` takes `subject`, `vars`, `wait`, `force`, `dry_run`",
        ),
        (
            reqwest::Method::POST,
            format!("/runs/{id}/replay"),
            json!({"ofline": true, "form": "me"}),
            "unknown fields `ofline`, `form` in the request body: `POST /api/runs/{id}/replay` takes `from`, `offline`, `latest`",
        ),
        (
            reqwest::Method::POST,
            format!("/runs/{id}/cancel"),
            json!({"force": true}),
            "unknown field `force` in the request body: `POST /api/runs/{id}/cancel` takes no body",
        ),
        (
            reqwest::Method::POST,
            format!("/runs/{id}/blocks/me/approve"),
            json!({"comments": "ok"}),
            "unknown field `comments` in the request body: `POST /api/runs/{id}/blocks/{block}/approve` takes `comment`",
        ),
        (
            reqwest::Method::POST,
            "/workflows/whoami/tick".to_owned(),
            json!({"at": "now"}),
            "unknown field `at` in the request body: `POST /api/workflows/{name}/tick` takes no body",
        ),
        (
            reqwest::Method::GET,
            "/runs".to_owned(),
            json!({"limit": 1}),
            "unknown field `limit` in the request body: `GET /api/runs` takes no body",
        ),
    ];
    for (method, path, body, message) in &bodies {
        let url = format!("{}{path}", api.base);
        let answer = api
            .send(api.client.request(method.clone(), url).json(body))
            .await;
        assert_eq!(answer, error(400, message), "{method} {path}");
    }
    assert_eq!(
        api.post(&format!("/runs/{id}/cancel"), json!({})).await,
        error(409, &format!("run `{id}` has already finished: succeeded"))
    );
    // Known names with values of the wrong type.
    assert_eq!(
        api.get("/runs?limit=many").await,
        error(
            400,
            "failed to deserialize query string: limit: invalid digit found in string"
        )
    );
    assert_eq!(
        api.post("/workflows/whoami/runs", json!({"wait": "yes"}))
            .await,
        error(
            400,
            r#"the request body is not valid: invalid type: string "yes", expected a boolean"#
        )
    );
    // A backup needs a directory: an empty one is a bad request, not a failed fsync (500).
    assert_eq!(
        api.post("/store/backup", json!({"dir": ""})).await,
        error(
            400,
            "the request body needs `dir`: the directory to write the backup to"
        )
    );
    assert_eq!(
        api.post(&format!("/runs/{id}/cancel"), json!([1])).await,
        error(
            400,
            "the request body is not a JSON object: `POST /api/runs/{id}/cancel` takes no body"
        )
    );

    // Nothing ran: one run, and no request beyond the first run's.
    let (_, runs) = api.get("/runs").await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(env.sb.requests().len(), seen);
    service.shutdown().await.unwrap();
}

/// A record write evaluates the watching workflows' rules on a blocking thread: `/healthz` of the
/// real binary, with a single async worker, answers while a rule runs to its time limit (it used
/// to wait for the rule), and the rule's trace names its workflow and the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_answers_healthz_while_a_rule_runs_to_its_time_limit() {
    let env = with_workflows().await;
    env.write(
        "workflows/spin.yaml",
        "name: spin\nblocks:\n  begin:\n    type: begin\n    records: people\n    on: [created]\n    when: 'blob(10000, 1).to_array().map(|x| blob(10000, 1).to_array().map(|y| x + y).len()).len() > 0'\n    next: end\n  end: {type: end}\n",
    );
    let config = env.path().join("blockyard.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}rule_time_limit: 3s\n")).unwrap();
    let mut served = Served::start(
        &env,
        &[
            ("TOKIO_WORKER_THREADS", "1"),
            ("RUST_LOG", "blockyard::server=debug,blockyard=info"),
        ],
    );
    let start = served.read_until("serving");
    let addr = start
        .last()
        .unwrap()
        .rsplit("http://")
        .next()
        .unwrap()
        .to_owned();

    let url = format!("http://{addr}/api/records/people");
    let post = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .json(&json!({"email": "jane@acme.com"}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    });
    // The write has begun, and with it the rule: the one async worker must still answer, and
    // the write must still be under way after it did (nothing of it is in the store yet: the
    // record, its trace and the run requests are written together, after the rule).
    served.read_until("writing records");
    let health = support::get_json(format!("http://{addr}/healthz")).await;
    assert_eq!(health, json!({"status": "ok"}));
    let why_url = format!("http://{addr}/api/triggers/why?subject=jane@acme.com");
    assert_eq!(
        support::get_json(&why_url).await,
        json!([]),
        "the write was over before /healthz answered"
    );

    let (status, body) = post.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"][0]["outcome"], "created");
    assert_eq!(body["queued"], 0);
    let warning = served.read_until("stopped by a limit");
    assert!(
        warning.last().unwrap().contains("workflow=spin"),
        "{warning:#?}"
    );
    let why = support::get_json(&why_url).await;
    let spin = why[0]["trace"][0]["considered"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["workflow"] == "spin")
        .unwrap();
    assert_eq!(
        spin["after"]["checks"][0]["outcome"],
        json!({
            "outcome": "error",
            "message": "workflow `spin`: `when:` ran longer than 3000 ms, the time limit for a rule; simplify the rule, or raise `rule_time_limit` in blockyard.yaml"
        })
    );

    served.signal("TERM");
    served.read_until("stopped");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
}

/// A cancel `serve` answered is on disk before the answer: killed (`kill -9`) while the run's next
/// block is in flight, the process leaves the run `running`, and `blockyard resume` stops it
/// before its next block instead of finishing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_cancel_it_answered_survives_a_kill_and_the_resumed_run_stops_before_its_next_block(
) {
    let env = Env::start(blockyard::sandbox::SandboxConfig {
        seed_users: 5,
        latency: Duration::from_millis(700),
        ..Default::default()
    })
    .await;
    std::fs::create_dir(workflows(&env)).unwrap();
    env.write("workflows/three-reads.yaml", THREE_READS);
    let mut served = Served::start(&env, &[]);
    let start = served.read_until("serving");
    let addr = start.last().unwrap().rsplit("http://").next().unwrap();
    let api = format!("http://{addr}/api");
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{api}/workflows/three-reads/runs"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let started: Value = response.json().await.unwrap();
    let id = started["id"].as_str().unwrap().to_owned();
    // `a` takes 700 ms; once it shows, `b` is in flight for 700 more.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = support::get_json(format!("{api}/runs/{id}")).await;
        if blocks(&run).contains(&("a", "succeeded")) {
            break;
        }
        assert!(Instant::now() < deadline, "`a` never settled: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = client
        .post(format!("{api}/runs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": id, "cancel_requested": true})
    );
    served.signal("KILL");
    served.child.wait().unwrap();
    assert!(
        env.data_dir().join("cancel").join(&id).exists(),
        "the cancel's marker is on disk"
    );

    let (code, stdout, stderr) = env.run(&["resume", &id]);
    assert_eq!(code, 5, "cancelled: {stdout}{stderr}");
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(shown["error"], "cancelled between steps");
    // Stopped before `b` (sent by the killed process, its outcome never recorded) was sent again.
    assert_eq!(blocks(&shown), [("begin", "succeeded"), ("a", "succeeded")]);
    assert!(!env.data_dir().join("cancel").join(&id).exists());
}

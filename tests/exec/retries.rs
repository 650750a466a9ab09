//! Durable retries: a transient failure parks the run as `retrying` (exit 6) with its next attempt
//! time in the store instead of taking `on_failure`; `resume` leaves it until that time; a write
//! whose delivery is uncertain is checked with its probe, never re-sent blind.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blockyard::config::Config;
use blockyard::exec::{
    DurableRetry, Engine, EngineOptions, RunOutcome, RunRequest, RunStatus, Subject,
};
use blockyard::http::{Client, Credentials};
use blockyard::preset::PresetRegistry;
use blockyard::sandbox::SandboxConfig;
use blockyard::store::history::{StepRecord, StepStatus};
use blockyard::store::Store;
use serde_json::{json, Map, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{self, Env};

/// begin → `details` (a Webex GET, no in-call retries) → `delete` → end, `details` failing to
/// `end`: the shape of the shipped `webex-offboard`.
const OFFBOARD: &str = "\
name: offboard
blocks:
  begin: {type: begin, records: people, on: [updated], next: details}
  details:
    type: api
    preset: webex.get_user_details
    credential: webex
    retry: {max_attempts: 1}
    next: delete
    on_failure: end
  delete: {type: api, preset: webex.delete_user, credential: webex, next: end}
  end: {type: end}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_parks_the_run_as_retrying_and_resume_waits_for_its_time() {
    let env = Env::start(SandboxConfig {
        seed_users: 2,
        fail_rate: 1.0,
        ..SandboxConfig::default()
    })
    .await;
    let file = env.write("offboard.yaml", OFFBOARD);
    let file = file.display().to_string();
    let args = [
        "run",
        file.as_str(),
        "--record",
        "email=leaver@example.com",
        "--record",
        "webex_user_id=P1",
    ];
    let (code, stdout, stderr) = env.run(&args);
    assert_eq!(code, 6, "not finished: {stdout}{stderr}");
    let first = stdout.lines().next().unwrap();
    assert!(first.ends_with("`offboard`: retrying"), "{stdout}");
    let id = first.split(' ').nth(1).unwrap().to_owned();
    assert!(stdout.contains("  details  retrying   GET "), "{stdout}");
    assert!(
        stdout.contains("error: `webex.get_user_details`: `webex` answered 503: Service Unavailable (injected by the sandbox)."),
        "{stdout}"
    );
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "retrying");
    assert!(shown.get("finished_at").is_none(), "{shown}");
    let wake_at = shown["wake_at"].as_str().unwrap().to_owned();
    let when = chrono::DateTime::parse_from_rfc3339(&wake_at)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    assert_eq!(
        support::blocks(&shown),
        [("begin", "succeeded"), ("details", "retrying")]
    );
    assert_eq!(
        shown["steps"][1]["retry"],
        json!({"attempt": 1, "since": shown["steps"][1]["retry"]["since"], "next_at": wake_at})
    );
    assert!(
        stdout.contains(&format!("  next attempt at {when}: `blockyard serve` continues the run then (or `blockyard resume` once that time has come)\n")),
        "{stdout}"
    );
    assert_eq!(
        shown["error"],
        "block `details` failed transiently (attempt 1): `webex.get_user_details`: `webex` answered 503: Service Unavailable (injected by the sandbox). [tracking id ROUTER_SANDBOX_0000000000]"
    );
    assert_eq!(env.count("DELETE", "/people/"), 0, "`delete` never ran");

    // Not due yet: `resume` leaves it alone and says when.
    let (code, stdout, _) = env.run(&["resume"]);
    assert_eq!(
        (code, stdout.as_str()),
        (
            6,
            format!(
                "run {id} is retrying: its next attempt is at {when}; not due yet, left alone\n"
            )
            .as_str()
        )
    );
    let (code, stdout, _) = env.run(&["resume", &id]);
    assert_eq!(
        (code, stdout.as_str()),
        (
            6,
            format!(
                "run {id} is retrying: its next attempt is at {when}; not due yet, left alone\n"
            )
            .as_str()
        )
    );
    assert_eq!(env.sb.requests().len(), 1, "nothing was sent again");

    // Cancelled at once, its timer dropped: nothing left to resume.
    let (code, stdout, _) = env.run(&["cancel", &id]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, format!("run {id} cancelled\n").as_str())
    );
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "cancelled");
    let (code, stdout, _) = env.run(&["resume"]);
    assert_eq!((code, stdout.as_str()), (0, "no unfinished runs\n"));
}

/// A temp dir whose `blockyard.yaml` points the `webex` credential at `server`.
fn wiremock_dir(server: &MockServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        format!(
            "data_dir: data\ncredentials:\n  webex: {{vendor: webex, auth: bearer, token: t0k3n, base_url: {}/webex, rate_limit_per_minute: 0}}\n",
            server.uri()
        ),
    )
    .unwrap();
    dir
}

/// begin → `create` (Webex Create User, a POST whose preset probes with a lookup by email) → end.
const CREATE: &str = "\
name: create
blocks:
  begin: {type: begin, next: create}
  create:
    type: api
    preset: webex.create_user
    credential: webex
    with: {email: new.hire@example.com, display_name: New Hire}
    next: end
  end: {type: end}
";

fn run_in(dir: &std::path::Path, file: &str, text: &str) -> (i32, String, Value) {
    std::fs::write(dir.join(file), text).unwrap();
    let out = support::blockyard_in(dir, &["run", file, "--json"]);
    let stdout = support::stdout(&out);
    let run = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("not JSON: {stdout}{}", support::stderr(&out)));
    (out.status.code().unwrap_or(-1), stdout, run)
}

async fn posts(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_503_that_took_effect_is_found_by_its_probe_and_not_sent_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/webex/people"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "try later"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/webex/people"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"items": [{"id": "P9", "emails": ["new.hire@example.com"]}]}),
            ),
        )
        .mount(&server)
        .await;
    let dir = wiremock_dir(&server);
    let (code, stdout, run) = run_in(dir.path(), "create.yaml", CREATE);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(run["status"], "succeeded");
    let step = &run["steps"][1];
    assert_eq!(step["status"], "succeeded");
    assert_eq!(
        step["note"],
        "delivery uncertain (`webex.create_user`: `webex` answered 503: try later); the preset's probe found the write had taken effect, so it was not sent again"
    );
    assert_eq!(posts(&server).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_503_that_did_not_take_effect_is_retried_later() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/webex/people"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "try later"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/webex/people"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": []})))
        .mount(&server)
        .await;
    let dir = wiremock_dir(&server);
    let (code, stdout, run) = run_in(dir.path(), "create.yaml", CREATE);
    assert_eq!(code, 6, "{stdout}");
    assert_eq!(run["status"], "retrying");
    let step = &run["steps"][1];
    assert_eq!(step["status"], "retrying");
    assert_eq!(
        step["note"],
        "delivery uncertain; the preset's probe found the write had not taken effect, so it is sent again at the next attempt"
    );
    assert_eq!(posts(&server).await, 1);
}

/// begin → `rename` (Webex Update User: a GET, then a PUT; the preset has no probe) → end.
const RENAME: &str = "\
name: rename
blocks:
  begin: {type: begin, next: rename}
  rename:
    type: api
    preset: webex.update_user
    credential: webex
    with: {webex_user_id: P1, display_name: Renamed}
    retry: {max_attempts: 1}
    next: end
  end: {type: end}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_503_without_a_probe_needs_attention_and_is_not_sent_again() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/webex/people/P1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"id": "P1", "emails": ["a@example.com"], "displayName": "A"}),
            ),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/webex/people/P1"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "try later"})))
        .mount(&server)
        .await;
    let dir = wiremock_dir(&server);
    let (code, stdout, run) = run_in(dir.path(), "rename.yaml", RENAME);
    assert_eq!(code, 4, "{stdout}");
    assert_eq!(run["status"], "needs_attention");
    assert_eq!(
        run["error"],
        "block `rename`: the write `webex.update_user` may or may not have taken effect (`webex.update_user`: `webex` answered 503: try later), and `webex.update_user` has no probe to check it; check it at the vendor, then run the workflow again"
    );
    assert_eq!(run["steps"][1]["status"], "sending");
    let puts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .count();
    assert_eq!(puts, 1);
}

/// An engine over `dir`'s `blockyard.yaml` and data dir whose durable retries wait `backoff`
/// (half of it random).
fn engine_in(dir: &std::path::Path, backoff: Duration) -> Engine {
    let config = Config::load(&dir.join("blockyard.yaml")).unwrap();
    let store = Store::open(&dir.join("data")).unwrap();
    let client = Client::new(
        Arc::new(PresetRegistry::builtin()),
        Credentials::from_config(&config),
    )
    .unwrap();
    let options = EngineOptions {
        durable_retry: DurableRetry {
            first: backoff,
            max: backoff,
        },
        ..EngineOptions::default()
    };
    Engine::new(&store, client, Map::new(), options).unwrap()
}

fn statuses(outcome: &RunOutcome) -> Vec<(&str, &str)> {
    outcome
        .steps
        .iter()
        .map(|s| (s.block.as_str(), s.status.name()))
        .collect()
}

/// Real time (wiremock answers from its own thread, so paused time would time its calls out),
/// with a 200 ms backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_did_not_take_effect_is_sent_again_when_its_time_comes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/webex/people"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "try later"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/webex/people"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "P9", "emails": ["new.hire@example.com"]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/webex/people"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": []})))
        .mount(&server)
        .await;
    let dir = wiremock_dir(&server);
    let engine = engine_in(dir.path(), Duration::from_millis(200));
    let prepared = engine
        .prepare(Path::new("create.yaml"), CREATE.to_owned())
        .unwrap();
    let outcome = engine
        .run(&prepared, RunRequest::manual(None))
        .await
        .unwrap();
    let id = outcome.run.id;
    assert_eq!(
        outcome.run.status,
        RunStatus::Retrying,
        "{:#?}",
        outcome.run.error
    );
    let wake_at = outcome.run.wake_at.unwrap();
    let timer = engine.history().timers().get(id).unwrap().unwrap();
    assert_eq!(timer.at, wake_at, "the timer is the run's next attempt");
    let waited = (wake_at - engine.now()).num_milliseconds();
    assert!(waited <= 200, "{waited}ms");

    // Not due yet: nothing happens.
    assert!(engine.resume_due(engine.now()).await.unwrap().is_empty());
    assert_eq!(posts(&server).await, 1);

    let wait = (wake_at - engine.now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    let outcomes = engine.resume_due(engine.now()).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    let outcome = &outcomes[0];
    assert_eq!(
        outcome.run.status,
        RunStatus::Succeeded,
        "{:#?}",
        outcome.steps
    );
    assert_eq!(outcome.run.wake_at, None);
    assert_eq!(
        statuses(outcome),
        [
            ("begin", "succeeded"),
            ("create", "retrying"),
            ("create", "succeeded"),
            ("end", "succeeded")
        ]
    );
    assert_eq!(outcome.steps[2].outputs["webex_user_id"], "P9");
    assert_eq!(
        posts(&server).await,
        2,
        "sent again once: the probe said it had not taken effect"
    );
    assert_eq!(engine.history().timers().all().unwrap(), []);
}

/// `details` fails with 503 every time, `give_up_after: 10m`.
fn give_up_workflow() -> String {
    OFFBOARD.replace(
        "retry: {max_attempts: 1}",
        "retry: {max_attempts: 1, give_up_after: 10m}",
    )
}

fn leaver() -> Subject {
    Subject {
        collection: "people".to_owned(),
        key: "leaver@example.com".to_owned(),
        record: json!({"email": "leaver@example.com", "webex_user_id": "P1"}),
    }
}

#[tokio::test(start_paused = true)]
async fn a_block_failing_transiently_gives_up_after_its_limit_and_only_then_takes_on_failure() {
    let env = Env::start(SandboxConfig {
        seed_users: 2,
        fail_rate: 1.0,
        ..SandboxConfig::default()
    })
    .await;
    let engine = env.engine();
    let prepared = engine
        .prepare(Path::new("offboard.yaml"), give_up_workflow())
        .unwrap();
    let mut outcome = engine
        .run(&prepared, RunRequest::manual(Some(leaver())))
        .await
        .unwrap();
    let id = outcome.run.id;
    let mut wakes = 0;
    while outcome.run.status == RunStatus::Retrying {
        assert!(wakes < 20, "never gave up: {:#?}", outcome.steps);
        let wait = (outcome.run.wake_at.unwrap() - engine.now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let mut outcomes = engine.resume_due(engine.now()).await.unwrap();
        assert_eq!(outcomes.len(), 1);
        outcome = outcomes.remove(0);
        wakes += 1;
    }
    assert_eq!(outcome.run.status, RunStatus::CompletedWithFailures);
    let details: Vec<&StepRecord> = outcome
        .steps
        .iter()
        .filter(|s| s.block == "details")
        .collect();
    let last = details.last().unwrap();
    let attempts = details.len();
    assert_eq!(attempts, wakes + 1);
    assert!(
        details[..attempts - 1]
            .iter()
            .all(|s| s.status == StepStatus::Retrying),
        "{details:#?}"
    );
    assert_eq!(last.status, StepStatus::Failed);
    let retry = last.retry.unwrap();
    assert_eq!((retry.attempt as usize, retry.next_at), (attempts, None));
    // The attempt before the last was scheduled at the limit exactly: the last one.
    let limit = retry.since + chrono::TimeDelta::minutes(10);
    assert_eq!(details[attempts - 2].retry.unwrap().next_at, Some(limit));
    assert_eq!(
        last.error.as_deref().unwrap(),
        format!("gave up after 10m of transient failures ({attempts} attempts, `retry.give_up_after`); the last: `webex.get_user_details`: `webex` answered 503: Service Unavailable (injected by the sandbox). [tracking id ROUTER_SANDBOX_{:010}]", attempts - 1)
    );
    assert_eq!(
        statuses(&outcome)[attempts + 1..],
        [("delete", "skipped"), ("end", "succeeded")]
    );
    assert_eq!(
        outcome.run.error.as_deref().unwrap(),
        format!(
            "block `details` failed: {}; the run went on through the `on_failure` path",
            last.error.as_deref().unwrap()
        )
    );
    assert!(engine.history().timers().get(id).unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_retrying_run_cancels_it_at_once_and_drops_its_timer() {
    let env = Env::start(SandboxConfig {
        seed_users: 2,
        fail_rate: 1.0,
        ..SandboxConfig::default()
    })
    .await;
    let engine = env.engine();
    let prepared = engine
        .prepare(Path::new("offboard.yaml"), OFFBOARD.to_owned())
        .unwrap();
    let outcome = engine
        .run(&prepared, RunRequest::manual(Some(leaver())))
        .await
        .unwrap();
    let id = outcome.run.id;
    assert_eq!(outcome.run.status, RunStatus::Retrying);
    assert!(matches!(
        engine.cancel(id).await.unwrap(),
        blockyard::exec::Cancel::Cancelled(_)
    ));
    let run = engine.history().run(id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(
        run.error.as_deref(),
        Some("cancelled while waiting to retry")
    );
    assert_eq!(run.wake_at, None);
    assert!(run.finished_at.is_some());
    assert!(engine.history().timers().get(id).unwrap().is_none());
    // Its time comes and goes: nothing wakes it, nothing is sent.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(engine.resume_due(engine.now()).await.unwrap().is_empty());
    assert_eq!(env.sb.requests().len(), 1);
    assert!(
        matches!(
            engine.cancel(id).await.unwrap(),
            blockyard::exec::Cancel::Finished(_)
        ),
        "finished already"
    );
}

/// begin → `delete` (Webex Delete User, whose probe reads the person: done when 404) → end.
const DELETE: &str = "\
name: delete
blocks:
  begin: {type: begin, next: delete}
  delete:
    type: api
    preset: webex.delete_user
    credential: webex
    with: {webex_user_id: P1}
    next: end
  end: {type: end}
";

/// A crash leaves the DELETE `sending`; at resume its probe is rate limited (429 after its
/// in-call retries): a 429 says nothing about the write, so the run needs attention and the
/// DELETE is not sent again (it used to read the 429 as "not deleted" and send it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_answered_429_cannot_tell_and_the_write_is_not_sent_again() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/webex/people/P1"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let dir = wiremock_dir(&server);
    std::fs::write(dir.path().join("delete.yaml"), DELETE).unwrap();
    let mut run = support::command_in(dir.path(), &["run", "delete.yaml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The DELETE has arrived (its intent was durable before it left): kill the process now.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.received_requests().await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the DELETE never left"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.kill().unwrap();
    run.wait().unwrap();

    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/webex/people/P1"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0")
                .set_body_json(json!({"message": "slow down"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let out = support::blockyard_in(dir.path(), &["resume", "--json"]);
    let stdout = support::stdout(&out);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    let runs: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(runs[0]["status"], "needs_attention");
    assert_eq!(
        runs[0]["error"],
        "block `delete`: the write `webex.delete_user` may or may not have reached the vendor before the process stopped, and its probe `webex.get_user_details` failed: `webex.get_user_details`: `webex` answered 429: slow down; check it at the vendor, then run the workflow again"
    );
    let deletes = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .count();
    assert_eq!(deletes, 0, "not sent again");
}

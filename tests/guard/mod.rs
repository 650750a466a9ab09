//! The mass-change guard: a real `Service` on loopback, the in-process sandbox's request log, and
//! the real binary for the operator's decision (through the service, and on the data dir).

use std::path::PathBuf;
use std::time::Duration;

use blockyard::http::Credentials;
use blockyard::service::{Service, ServiceConfig};
use serde_json::{json, Value};

use crate::support::{self, Api, Env};

/// `calendly-offboard` with a guard of 5 removals per hour.
fn guarded_offboard() -> String {
    let text = std::fs::read_to_string(support::workflow("calendly-offboard.yaml")).unwrap();
    let guarded = text.replace(
        "guard: { max_writes: 50, per: 1h }",
        "guard: { max_writes: 5, per: 1h }",
    );
    assert_ne!(guarded, text, "the shipped workflow has a guard to replace");
    guarded
}

async fn with_guarded_workflow() -> Env {
    let env = Env::seeded(30).await;
    std::fs::create_dir(workflows(&env)).unwrap();
    env.write("workflows/calendly-offboard.yaml", &guarded_offboard());
    env
}

fn workflows(env: &Env) -> PathBuf {
    env.path().join("workflows")
}

async fn serve(env: &Env) -> Service {
    let config = env.config();
    Service::start(ServiceConfig {
        token: Some(support::API_TOKEN.to_owned()),
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        poll: Duration::from_millis(200),
        ..ServiceConfig::new(
            workflows(env),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    })
    .await
    .unwrap()
}

/// `n` Calendly members who are not the owner.
async fn leavers(env: &Env, n: usize) -> Vec<String> {
    let members: Vec<String> = env
        .members()
        .await
        .into_iter()
        .filter(|m| m.2 != "owner")
        .map(|m| m.0)
        .collect();
    assert!(members.len() >= n, "{} members", members.len());
    members.into_iter().take(n).collect()
}

/// Imports `people` as active, then as terminated: one offboarding run each.
async fn offboard(api: &Api, people: &[String]) {
    for status in ["active", "terminated"] {
        let batch: Vec<Value> = people
            .iter()
            .map(|email| json!({"email": email, "status": status}))
            .collect();
        let (code, body) = api.post("/records/people", json!(batch)).await;
        assert_eq!(code, 200, "{body}");
    }
}

/// Waits until `n` runs of the workflow have stopped (finished or held) and returns them all.
async fn settled(api: &Api, n: usize) -> Vec<Value> {
    let runs = api
        .wait_for("/runs?workflow=calendly-offboard", |runs| {
            let runs = runs.as_array().unwrap();
            runs.len() == n
                && runs.iter().all(|r| {
                    ["succeeded", "held", "cancelled"].contains(&r["status"].as_str().unwrap())
                })
        })
        .await;
    runs.as_array().unwrap().clone()
}

fn count(runs: &[Value], status: &str) -> usize {
    runs.iter().filter(|r| r["status"] == status).count()
}

fn deletes(env: &Env) -> Vec<String> {
    env.writes()
        .into_iter()
        .filter(|w| w.starts_with("DELETE "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_five_per_hour_sends_five_holds_fifteen_survives_a_restart_and_a_release_sends_them_once(
) {
    let env = with_guarded_workflow().await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let people = leavers(&env, 22).await;

    offboard(&api, &people[..20]).await;
    let runs = settled(&api, 20).await;
    assert_eq!(count(&runs, "succeeded"), 5, "{runs:?}");
    assert_eq!(count(&runs, "held"), 15, "{runs:?}");
    assert_eq!(deletes(&env).len(), 5, "{:?}", deletes(&env));

    // History says why: the run's error and its held step.
    let held = runs.iter().find(|r| r["status"] == "held").unwrap();
    let why = "held by the mass-change guard before its destructive write: 5 destructive writes of `calendly-offboard` in the last 1h reached its limit of 5 (`guard: { max_writes: 5, per: 1h }`); `blockyard guard release calendly-offboard` sends the held batch, `blockyard guard cancel calendly-offboard` cancels it";
    assert_eq!(held["error"], why);
    let (_, shown) = api
        .get(&format!("/runs/{}", held["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        support::blocks(&shown),
        [
            ("begin", "succeeded"),
            ("find", "succeeded"),
            ("remove", "held")
        ]
    );
    // And the trigger trace, beside the run the update started.
    let subject = held["subject"]["key"].as_str().unwrap();
    let (_, why_trace) = api.get(&format!("/triggers/why?subject={subject}")).await;
    let considered = &why_trace[0]["trace"].as_array().unwrap().last().unwrap()["considered"][0];
    assert_eq!(considered["run"], held["id"], "{why_trace}");
    assert_eq!(considered["held"], why, "{why_trace}");

    // The count survives a restart: the 21st leaver is held too, nothing more is sent.
    service.shutdown().await.unwrap();
    let service = serve(&env).await;
    let api = Api::new(&service);
    let (_, status) = api.get("/workflows/calendly-offboard/guard").await;
    assert_eq!(status["counted"], 5, "{status}");
    assert_eq!(status["allowed"], 5, "{status}");
    assert_eq!(status["guard"], "max_writes: 5, per: 1h");
    assert_eq!(status["held"].as_array().unwrap().len(), 15, "{status}");
    offboard(&api, &people[20..21]).await;
    let runs = settled(&api, 21).await;
    assert_eq!(count(&runs, "held"), 16, "{runs:?}");
    assert_eq!(deletes(&env).len(), 5);

    // One decision, through the running service with the real binary, releases the batch: each
    // held removal is sent exactly once, and none of them counts.
    let cli_env = env.path().to_owned();
    let server = format!("http://{}", service.addr());
    let out = tokio::task::spawn_blocking(move || {
        let args = [
            "guard",
            "release",
            "calendly-offboard",
            "--json",
            "--server",
            &server,
        ];
        support::command_in(&cli_env, &args)
            .env("BLOCKYARD_TOKEN", support::API_TOKEN)
            .env_remove("BLOCKYARD_SERVER")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let released: Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    assert_eq!(released["runs"].as_array().unwrap().len(), 16, "{released}");
    assert!(
        released["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s == "succeeded"),
        "{released}"
    );
    let sent = deletes(&env);
    assert_eq!(sent.len(), 21, "{sent:?}");
    let mut distinct = sent.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 21, "each removal once: {sent:?}");
    let (_, status) = api.get("/workflows/calendly-offboard/guard").await;
    assert_eq!(
        status["counted"], 5,
        "released writes do not count: {status}"
    );
    assert_eq!(status["held"], json!([]));

    // The window is still full: the next leaver is held, a new batch.
    offboard(&api, &people[21..22]).await;
    let runs = settled(&api, 22).await;
    assert_eq!(count(&runs, "held"), 1, "{runs:?}");
    assert_eq!(deletes(&env).len(), 21);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_cancelling_the_held_batch_sends_none_of_it() {
    let env = with_guarded_workflow().await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let people = leavers(&env, 20).await;
    offboard(&api, &people).await;
    let runs = settled(&api, 20).await;
    assert_eq!(count(&runs, "held"), 15, "{runs:?}");
    service.shutdown().await.unwrap();

    // On the data dir (no service): list, then cancel the batch with the real binary.
    let (code, stdout, stderr) = env.run(&["guard", "held", "calendly-offboard", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 15);
    let (code, stdout, stderr) = env.run(&["guard", "cancel", "calendly-offboard"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("cancelled 15 held runs of `calendly-offboard`\n"),
        "{stdout}"
    );
    assert_eq!(deletes(&env).len(), 5);

    let service = serve(&env).await;
    let api = Api::new(&service);
    let runs = settled(&api, 20).await;
    assert_eq!(count(&runs, "cancelled"), 15);
    let cancelled = runs.iter().find(|r| r["status"] == "cancelled").unwrap();
    assert_eq!(
        cancelled["error"],
        "cancelled while held by the mass-change guard"
    );
    // Nothing is held any more, so a release sends nothing.
    let (code, body) = api
        .post("/workflows/calendly-offboard/guard/release", json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["runs"], json!([]));
    assert_eq!(deletes(&env).len(), 5);
    service.shutdown().await.unwrap();
}

#[test]
fn guard_keys_that_cannot_be_used_are_exact_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "guard: { max_writes: 5 }",
            "w.yaml:3:1: error: `guard` needs `per`, the sliding window its writes are counted in, such as `per: 1h`",
        ),
        (
            "guard: { per: 1h }",
            "w.yaml:3:1: error: `guard` needs a limit: `max_writes: N` (destructive writes) or `max_share: P%` (of the record collection)",
        ),
        (
            "guard: { max_writes: 5, max_share: 10%, per: 1h }",
            "w.yaml:3:36: error: `guard` takes `max_writes` or `max_share`, not both; keep one",
        ),
        (
            "guard: { max_share: ten, per: 1h }",
            "w.yaml:3:21: error: `guard.max_share` `ten` is not a share; write a percentage, such as `10%`",
        ),
        (
            "guard: { max_share: 150%, per: 1h }",
            "w.yaml:3:21: error: `guard.max_share` `150%` is out of range; write a percentage above 0% and at most 100%, such as `10%`",
        ),
        (
            "guard: { max_writes: 5, per: soon }",
            "w.yaml:3:30: error: `guard.per` `soon` is not a duration; write a number and a unit, such as `30m`, `1h` or `1d`",
        ),
        (
            "guard: { max_writes: 5, per: 0s }",
            "w.yaml:3:30: error: `guard.per` must be more than zero, such as `1h`",
        ),
    ];
    for (guard, expected) in cases {
        let text = format!("name: w\ndescription: d\n{guard}\nblocks:\n  begin:\n    type: begin\n    records: people\n    on: [updated]\n    next: end\n  end:\n    type: end\n");
        std::fs::write(dir.path().join("w.yaml"), text).unwrap();
        let out = support::blockyard_in(dir.path(), &["validate", "w.yaml"]);
        assert_eq!(
            support::stdout(&out).lines().next().unwrap_or_default(),
            expected,
            "{guard}: {}",
            support::stderr(&out)
        );
    }
    // A share needs a record collection; the config's guard is checked the same way.
    let scheduled = "name: s\nguard: { max_share: 10%, per: 1h }\nblocks:\n  begin:\n    type: begin\n    schedule: { cron: '0 * * * *' }\n    next: end\n  end:\n    type: end\n";
    std::fs::write(dir.path().join("s.yaml"), scheduled).unwrap();
    let out = support::blockyard_in(dir.path(), &["validate", "s.yaml"]);
    assert_eq!(
        support::stdout(&out).lines().next().unwrap_or_default(),
        "s.yaml:2:21: error: `guard.max_share` is a share of the workflow's record collection, and this workflow has none (`records:` in its begin block); use `max_writes`"
    );
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        "data_dir: data\nguard: { max_writes: 5, per: often }\n",
    )
    .unwrap();
    let out = support::blockyard_in(dir.path(), &["guard", "held", "w"]);
    assert_eq!(
        support::stderr(&out).trim_end(),
        "error: blockyard.yaml:2:30: `guard.per` `often` is not a duration; write a number and a unit, such as `30m`, `1h` or `1d`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_the_configs_default_guards_a_workflow_without_its_own() {
    let env = Env::seeded(10).await;
    std::fs::create_dir(workflows(&env)).unwrap();
    let unguarded = guarded_offboard().replace("guard: { max_writes: 5, per: 1h }\n", "");
    env.write("workflows/calendly-offboard.yaml", &unguarded);
    let config = std::fs::read_to_string(env.path().join("blockyard.yaml")).unwrap();
    env.write(
        "blockyard.yaml",
        &format!("{config}\nguard: {{ max_writes: 2, per: 30m }}\n"),
    );
    let config = env.config();
    let service = Service::start(ServiceConfig {
        token: Some(support::API_TOKEN.to_owned()),
        credentials: Credentials::from_config(&config),
        vars: config.vars.clone().into_iter().collect(),
        engine: blockyard::exec::EngineOptions {
            guard: config.guard,
            ..Default::default()
        },
        ..ServiceConfig::new(
            workflows(&env),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    })
    .await
    .unwrap();
    let api = Api::new(&service);
    let people = leavers(&env, 5).await;
    offboard(&api, &people).await;
    let runs = settled(&api, 5).await;
    assert_eq!(count(&runs, "succeeded"), 2, "{runs:?}");
    assert_eq!(count(&runs, "held"), 3, "{runs:?}");
    assert_eq!(deletes(&env).len(), 2);
    let (_, status) = api.get("/workflows/calendly-offboard/guard").await;
    assert_eq!(status["source"], "config", "{status}");
    assert_eq!(status["guard"], "max_writes: 2, per: 30m");
    service.shutdown().await.unwrap();
}

//! Several in-process `serve` services on one PostgreSQL schema, each a worker with its own
//! leases (`blockyard::exec::lease`): a run a stopped worker left is resumed by exactly one of
//! the others once its lease passes, and a cancel or an approval posted to one worker reaches a
//! run another executes or parked. They need `BLOCKYARD_TEST_POSTGRES` (see
//! [`super::postgres::server`]); without it each says it was skipped and passes.

use std::time::{Duration, Instant};

use blockyard::http::Credentials;
use blockyard::service::{Service, ServiceConfig};
use blockyard::store::any::AnyStore;
use blockyard::store::api::ReadHistory;
use blockyard::store::postgres::Postgres;
use blockyard::trigger::scheduler::Clock;
use serde_json::{json, Value};

use super::postgres::{schema_for, server, Schemas};
use crate::support::{Api, Env, API_TOKEN, THREE_READS, WHOAMI};

/// A fresh schema of the test server, migrated, and the env's workflows dir with `workflows`.
async fn setup(url: &str, schemas: &Schemas, env: &Env, workflows: &[(&str, &str)]) -> AnyStore {
    let name = schema_for(env.path());
    schemas.names.lock().unwrap().push(name.clone());
    let pg = Postgres::open_in_schema(url, &name).await.unwrap();
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    for (file, text) in workflows {
        env.write(&format!("workflows/{file}"), text);
    }
    AnyStore::from(pg)
}

/// A worker on `store` with `clock`.
async fn worker(env: &Env, store: &AnyStore, clock: Clock, grace: Duration) -> Service {
    let config = env.config();
    Service::start(ServiceConfig {
        token: Some(API_TOKEN.to_owned()),
        store: Some(store.clone()),
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        poll: Duration::from_millis(100),
        grace,
        clock,
        ..ServiceConfig::new(
            env.path().join("workflows"),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    })
    .await
    .unwrap()
}

async fn latency(env: &Env, ms: u64) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/_sandbox/latency", env.sb.addr()))
        .json(&json!({ "ms": ms }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
}

/// Polls the run until `done` holds on its record (20 s at most).
async fn wait_run(
    service: &Service,
    id: blockyard::store::history::RunId,
    done: impl Fn(&blockyard::store::history::RunRecord) -> bool,
) -> blockyard::store::history::RunRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = service.shared().engine().history().run(id).await.unwrap();
        if let Some(run) = run.filter(|r| done(r)) {
            return run;
        }
        assert!(Instant::now() < deadline, "the run never got there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_id(body: &Value) -> blockyard::store::history::RunId {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run id: {body}"))
        .parse()
        .unwrap()
}

/// A worker stops (its run cut off mid-call, as a kill would) and stops renewing its lease; two
/// others, whose clocks are past that lease, both look for orphans: one claims the run and
/// resumes it from its last durable step, the other leaves it, so it runs to its end once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_a_stopped_worker_left_is_resumed_by_exactly_one_other_once_its_lease_passes() {
    let Some(url) = server(
        "store::leases::a_run_a_stopped_worker_left_is_resumed_by_exactly_one_other_once_its_lease_passes",
    ) else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: std::sync::Mutex::default(),
    };
    let env = Env::seeded(2).await;
    let store = setup(&url, &schemas, &env, &[("whoami.yaml", WHOAMI)]).await;
    let name = schema_for(env.path());

    // Worker A starts a run whose call the sandbox holds, then stops at once (no grace).
    latency(&env, 60_000).await;
    let a = worker(&env, &store, Clock::system(), Duration::ZERO).await;
    let (status, started) = Api::new(&a).post("/workflows/whoami/runs", json!({})).await;
    assert_eq!(status, 202, "{started}");
    let id = run_id(&started);
    wait_run(&a, id, |r| r.status.name() == "running").await;
    let owner_a = a.shared().engine().worker().clone();
    a.shutdown().await.unwrap();
    latency(&env, 0).await;

    // B and C, a minute on: A's lease has passed for them.
    let later = Clock::starting_at(chrono::Utc::now() + chrono::TimeDelta::seconds(60));
    let b = worker(&env, &store, later, Duration::from_secs(5)).await;
    let c = worker(&env, &store, later, Duration::from_secs(5)).await;
    let run = wait_run(&b, id, |r| r.status.is_finished()).await;
    assert_eq!(run.status.name(), "succeeded", "{run:?}");
    let steps = b.shared().engine().history().steps(id).await.unwrap();
    let blocks: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s.block.as_str(), s.status.name()))
        .collect();
    assert_eq!(
        blocks,
        [
            ("begin", "succeeded"),
            ("me", "succeeded"),
            ("end", "succeeded")
        ]
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let owner: String = client
        .query_one(
            &format!("SELECT owner FROM {name}.runs WHERE id = $1"),
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    let (owner_b, owner_c) = (
        b.shared().engine().worker().to_string(),
        c.shared().engine().worker().to_string(),
    );
    assert_ne!(owner, owner_a.to_string());
    assert!(owner == owner_b || owner == owner_c, "{owner}");
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

/// A cancel posted to worker A reaches a run executing on worker B (through the store's cancel
/// requests, read before each block), and an approval posted to A continues a run B parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_and_an_approval_posted_to_one_worker_reach_a_run_of_another() {
    let Some(url) = server(
        "store::leases::a_cancel_and_an_approval_posted_to_one_worker_reach_a_run_of_another",
    ) else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: std::sync::Mutex::default(),
    };
    let env = Env::seeded(2).await;
    let approved = WHOAMI
        .replace("name: whoami", "name: whoami-approved")
        .replace(
            "credential: calendly\n",
            "credential: calendly\n    approval: required\n",
        );
    assert_ne!(approved, WHOAMI);
    let store = setup(
        &url,
        &schemas,
        &env,
        &[("three.yaml", THREE_READS), ("approved.yaml", &approved)],
    )
    .await;
    let a = worker(&env, &store, Clock::system(), Duration::from_secs(5)).await;
    let b = worker(&env, &store, Clock::system(), Duration::from_secs(5)).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));

    // A run on B, each read held 500 ms; cancelled through A once it runs.
    latency(&env, 500).await;
    let (status, started) = api_b.post("/workflows/three-reads/runs", json!({})).await;
    assert_eq!(status, 202, "{started}");
    let id = run_id(&started);
    wait_run(&b, id, |r| r.status.name() == "running").await;
    // A resume asked of A is refused while B's lease is live.
    let (status, refused) = api_a
        .post("/resume", json!({ "run": id.to_string() }))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(
        refused["error"]["message"],
        format!("run `{id}` is executing on another worker (its lease there is live); it continues there, or on another worker once that lease passes"),
    );
    let (status, cancel) = api_a.post(&format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{cancel}");
    assert_eq!(cancel["cancel_requested"], true, "{cancel}");
    let run = wait_run(&b, id, |r| r.status.is_finished()).await;
    assert_eq!(run.status.name(), "cancelled", "{run:?}");
    latency(&env, 0).await;

    // A run B parks waiting for approval, approved through A.
    let (status, started) = api_b
        .post("/workflows/whoami-approved/runs", json!({}))
        .await;
    assert_eq!(status, 202, "{started}");
    let id = run_id(&started);
    wait_run(&b, id, |r| r.status.name() == "waiting_approval").await;
    let (status, decided) = api_a
        .post(&format!("/runs/{id}/blocks/me/approve"), json!({}))
        .await;
    assert_eq!(status, 200, "{decided}");
    let run = wait_run(&a, id, |r| r.status.is_finished()).await;
    assert_eq!(run.status.name(), "succeeded", "{run:?}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A worker whose run another worker claimed (its lease passed during a stall) finds out at its
/// next renewal and stops the run before its next block, writing nothing more: the block in
/// flight ends, the next is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_run_another_claimed_stops_it_before_its_next_block() {
    use blockyard::store::api::{Backend, RunLeases, WorkerId};

    let Some(url) =
        server("store::leases::a_worker_whose_run_another_claimed_stops_it_before_its_next_block")
    else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: std::sync::Mutex::default(),
    };
    let env = Env::seeded(2).await;
    let store = setup(&url, &schemas, &env, &[("three.yaml", THREE_READS)]).await;
    latency(&env, 1_500).await;
    let a = worker(&env, &store, Clock::system(), Duration::ZERO).await;
    let api = Api::new(&a);
    let (status, started) = api.post("/workflows/three-reads/runs", json!({})).await;
    assert_eq!(status, 202, "{started}");
    let id = run_id(&started);
    wait_run(&a, id, |r| r.status.name() == "running").await;

    // Another worker, a minute on, claims it while its first read is in flight.
    let later = chrono::Utc::now() + chrono::TimeDelta::seconds(60);
    let thief = WorkerId::new("thief");
    let claimed = store
        .history()
        .unwrap()
        .claim_orphans(&thief, later, later + chrono::TimeDelta::seconds(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
    // A's renewal (this one, or its lease loop's if that came first) finds the run gone.
    a.shared()
        .engine()
        .renew_leases(chrono::Utc::now())
        .await
        .unwrap();

    // Once A's task has ended, a resume asked of A is refused: the thief's lease is live.
    let deadline = Instant::now() + Duration::from_secs(20);
    let leased = format!("run `{id}` is executing on another worker (its lease there is live); it continues there, or on another worker once that lease passes");
    loop {
        let (status, body) = api.post("/resume", json!({ "run": id.to_string() })).await;
        assert_eq!(status, 409, "{body}");
        if body["error"]["message"] == leased.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "A never stopped the run: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let history = a.shared().engine().history();
    let run = history.run(id).await.unwrap().unwrap();
    assert_eq!(run.status.name(), "running", "{run:?}");
    // A read-only run writes its steps together when it ends: stopped, it wrote none, and sent
    // only the read in flight when it lost the run.
    let steps = history.steps(id).await.unwrap();
    assert_eq!(steps.len(), 0, "{steps:?}");
    assert_eq!(env.count("GET", "/users/me"), 1);
    a.shutdown().await.unwrap();
}

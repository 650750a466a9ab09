//! The `wait` block under `serve`, in paused tokio time: a waiting run outlives its process and
//! the next `serve` wakes it once at its time, not earlier; a write of the subject record through
//! the API wakes it when `wake_when` holds (and only then), and the edges after it branch on the
//! outcome; a waiting run cancelled through the API is cancelled at once.

use std::time::Duration;

use serde_json::{json, Value};

use super::workflows;
use crate::support::{self, Env};

/// A week's grace that a person's return ends early: `me` runs only when woken.
const GRACE: &str = "\
name: grace
blocks:
  begin: {type: begin, records: people, on: [created], next: grace}
  grace:
    type: wait
    for: 7d
    wake_when: [{field: status, op: equals, value: back}]
    next:
      - {to: end, when: 'blocks.grace.outputs.outcome == \"elapsed\"'}
      - {to: me, when: 'blocks.grace.outputs.outcome == \"woken\"'}
  me: {type: api, preset: calendly.current_user, credential: calendly, next: end}
  end: {type: end}
";

async fn env() -> Env {
    let env = Env::seeded(1).await;
    std::fs::create_dir(workflows(&env)).unwrap();
    env.write("workflows/grace.yaml", GRACE);
    env
}

/// Posts one person and returns the id of the `grace` run it started, once it waits.
async fn waiting_run(api: &support::Api, email: &str) -> Value {
    let (code, answer) = api
        .post("/records/people", json!({"email": email, "status": "gone"}))
        .await;
    assert_eq!(code, 200, "{answer}");
    let runs = api
        .wait_for("/runs?workflow=grace", |runs| {
            runs.as_array()
                .unwrap()
                .iter()
                .any(|r| r["subject"]["key"] == email && r["status"] == "waiting")
        })
        .await;
    let id = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"]["key"] == email)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, shown) = api.get(&format!("/runs/{id}")).await;
    assert_eq!(code, 200);
    shown
}

/// `serve` polls its queue every 200 ms, so a virtual week would take minutes of real time: this
/// test waits two hours.
#[tokio::test(start_paused = true)]
async fn a_waiting_run_outlives_its_process_and_the_next_serve_wakes_it_once_at_its_time() {
    let env = env().await;
    env.write("workflows/grace.yaml", &GRACE.replace("for: 7d", "for: 2h"));
    let service = super::serve(&env).await;
    let api = support::Api::new(&service);
    let shown = waiting_run(&api, "leaver@example.com").await;
    let id = shown["id"].as_str().unwrap().to_owned();
    let wake_at = shown["wake_at"].as_str().unwrap().to_owned();
    // From the wait's start, by the engine's clock (paused time), rounded up to a second.
    let started =
        chrono::DateTime::parse_from_rfc3339(shown["steps"][1]["started_at"].as_str().unwrap())
            .unwrap();
    let wakes = chrono::DateTime::parse_from_rfc3339(&wake_at).unwrap();
    let week = (wakes - started).num_seconds();
    assert!((7200..=7201).contains(&week), "{shown}");
    assert_eq!(
        shown["error"],
        format!("block `grace` waits until {wake_at}, or until a write of the record makes `wake_when` hold")
    );
    assert_eq!(
        support::blocks(&shown),
        [("begin", "succeeded"), ("grace", "waiting")]
    );
    assert_eq!(shown["steps"][1]["outputs"]["until"], wake_at);
    service.shutdown().await.unwrap();

    // Another process (its clock starts at the wall time now, so the two hours are still ahead
    // of it): an hour and a half later it has not woken the run early.
    let service = super::serve(&env).await;
    let api = support::Api::new(&service);
    tokio::time::sleep(Duration::from_secs(5400)).await;
    let (_, shown) = api.get(&format!("/runs/{id}")).await;
    assert_eq!(shown["status"], "waiting", "woken early: {shown}");
    assert_eq!(shown["wake_at"], wake_at.as_str());

    // Soon after its time it has woken, once: one `grace` step, elapsed, and `me` skipped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    let shown = loop {
        let (_, shown) = api.get(&format!("/runs/{id}")).await;
        if shown["status"] != "waiting" && shown["status"] != "running" {
            break shown;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never woke: {shown}"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
    };
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert!(shown.get("wake_at").is_none(), "{shown}");
    assert_eq!(
        support::blocks(&shown),
        [
            ("begin", "succeeded"),
            ("grace", "succeeded"),
            ("me", "skipped"),
            ("end", "succeeded")
        ]
    );
    let grace = &shown["steps"][1];
    assert_eq!(grace["outputs"]["outcome"], "elapsed");
    assert_eq!(grace["note"], format!("elapsed: waited until {wake_at}"));
    let finished =
        chrono::DateTime::parse_from_rfc3339(grace["finished_at"].as_str().unwrap()).unwrap();
    assert!(finished >= wakes, "not before its time: {grace}");
    service.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_record_write_wakes_the_wait_when_wake_when_holds_and_cancel_ends_one_at_once() {
    let env = env().await;
    let service = super::serve(&env).await;
    let api = support::Api::new(&service);
    let kept = waiting_run(&api, "back@example.com").await;
    let cancelled = waiting_run(&api, "gone@example.com").await;
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    let cancelled_id = cancelled["id"].as_str().unwrap().to_owned();

    // Nothing executes a waiting run: cancelled at once.
    let (code, answer) = api
        .post(&format!("/runs/{cancelled_id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("cancelled")),
        "{answer}"
    );
    let (_, shown) = api.get(&format!("/runs/{cancelled_id}")).await;
    assert_eq!(shown["error"], "cancelled while waiting in block `grace`");
    assert!(shown.get("wake_at").is_none(), "{shown}");

    // A write where `wake_when` does not hold: the run judges it and waits on, same end.
    let (code, answer) = api
        .post(
            "/records/people",
            json!({"email": "back@example.com", "status": "still gone"}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (_, shown) = api.get(&format!("/runs/{kept_id}")).await;
    assert_eq!(shown["status"], "waiting", "{shown}");
    assert_eq!(shown["wake_at"], kept["wake_at"]);
    assert_eq!(
        support::blocks(&shown),
        [("begin", "succeeded"), ("grace", "waiting")]
    );

    // The person is back: the write wakes the wait, and the woken edge is taken.
    let (code, answer) = api
        .post(
            "/records/people",
            json!({"email": "back@example.com", "status": "back"}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    // At once: the timer loop sees the write's change to the timers (not its hourly look).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let (_, shown) = api.get(&format!("/runs/{kept_id}")).await;
        if shown["status"] != "waiting" && shown["status"] != "running" {
            break shown;
        }
        assert!(tokio::time::Instant::now() < deadline, "not woken: {shown}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert_eq!(
        support::blocks(&shown),
        [
            ("begin", "succeeded"),
            ("grace", "succeeded"),
            ("me", "succeeded"),
            ("end", "succeeded")
        ]
    );
    let grace = &shown["steps"][1];
    assert_eq!(grace["outputs"]["outcome"], "woken");
    assert!(
        grace["note"]
            .as_str()
            .unwrap()
            .starts_with("woken: `wake_when` held on the record at "),
        "{grace}"
    );
    let (_, cancelled) = api.get(&format!("/runs/{cancelled_id}")).await;
    assert_eq!(cancelled["status"], "cancelled");
    service.shutdown().await.unwrap();
}

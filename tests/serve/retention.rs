//! Retention without a person: `serve` with a `retention:` deletes old finished runs and blanks
//! old payloads by itself, hour after hour in paused tokio time, keeps runs not finished, and
//! counts what it freed in `/metrics`.

use std::time::Duration;

use blockyard::service::retention::Retention;
use blockyard::service::Service;
use blockyard::store::api::ApprovalStore;
use blockyard::store::approvals::{Approvals, Decision};
use blockyard::store::history::{
    History, RunId, RunMode, RunRecord, RunStatus, RunTrigger, StepRecord, StepResponse,
    StepStatus, Subject,
};
use blockyard::store::Store;
use blockyard::trigger::scheduler::Clock;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map};

use super::{service_config, workflows, TOKEN};
use crate::support::{Env, WHOAMI};

fn run(status: RunStatus, finished_at: Option<DateTime<Utc>>) -> RunRecord {
    let id = RunId::new();
    RunRecord {
        id,
        workflow: "whoami".to_owned(),
        file: "whoami.yaml".to_owned(),
        snapshot: "0".repeat(16),
        trigger: RunTrigger::manual(),
        subject: Some(Subject {
            collection: "people".to_owned(),
            key: "ann@acme.com".to_owned(),
            record: json!({"email": "ann@acme.com"}),
        }),
        vars: Map::new(),
        status,
        mode: RunMode::Live,
        created_at: id.created_at(),
        started_at: None,
        finished_at,
        replay_of: None,
        from_block: None,
        error: None,
        wake_at: None,
        pruned: false,
    }
}

/// Writes `record` as the engine does (first running, then as it ended) with one step that has a
/// response.
fn record(history: &History, record: &RunRecord) {
    history
        .put_run(&RunRecord {
            status: RunStatus::Running,
            finished_at: None,
            ..record.clone()
        })
        .unwrap();
    let mut step = StepRecord::new(record.id, 0, "me", "api", StepStatus::Succeeded, Utc::now());
    step.response = Some(StepResponse {
        status: 200,
        headers: Map::new(),
        body: json!({"email": "ann@acme.com"}),
        truncated: false,
    });
    history.put_steps(&[&step]).unwrap();
    history.put_run(record).unwrap();
}

/// The value of the metric line starting with `name ` in `text`.
fn metric(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"));
    line[name.len()..].trim().parse().unwrap()
}

/// Sleeps (paused time) until `hours` after `start`.
async fn until(start: tokio::time::Instant, hours: f64) {
    tokio::time::sleep_until(start + Duration::from_secs_f64(hours * 3600.0)).await;
}

/// The `/metrics` counters are process-wide: this is the one test in the process whose service
/// runs retention, so they count exactly what it freed.
#[tokio::test(start_paused = true)]
async fn serve_deletes_old_runs_and_blanks_old_payloads_by_itself_and_counts_what_it_freed() {
    let env = Env::seeded(0).await;
    std::fs::create_dir(workflows(&env)).unwrap();
    env.write("workflows/whoami.yaml", WHOAMI);
    let now = Utc::now();
    let hours = |h: i64| now - TimeDelta::minutes(h * 60 + 30);
    // Finished 5 days, 2 days and 12 hours ago (and half an hour, so no pass falls on the edge);
    // two runs parked for a person, finished never.
    let old = run(RunStatus::Succeeded, Some(hours(5 * 24)));
    let older_than_a_day = run(RunStatus::Failed, Some(hours(2 * 24)));
    let recent = run(RunStatus::Succeeded, Some(hours(12)));
    let parked = run(RunStatus::WaitingApproval, None);
    let held = run(RunStatus::Held, None);
    {
        let store = Store::open(&env.data_dir()).unwrap();
        let history = History::open(&store).unwrap();
        for r in [&old, &older_than_a_day, &recent, &parked, &held] {
            record(&history, r);
        }
        let decision = Decision {
            approved: true,
            at: hours(6 * 24),
            by: Some("dana".to_owned()),
            comment: None,
        };
        let approvals = Approvals::open(&store).unwrap();
        approvals.put(old.id, "me", decision.clone()).unwrap();
        approvals.put(parked.id, "me", decision).unwrap();
        store.flush().await.unwrap();
    }

    let service = Service::start(blockyard::service::ServiceConfig {
        retention: Retention {
            payloads_after: Some(Duration::from_secs(86_400)),
            runs_after: Some(Duration::from_secs(3 * 86_400)),
            every: Duration::from_secs(3600),
        },
        clock: Clock::starting_at(now),
        poll: Duration::from_secs(3600),
        ..service_config(&env, Some(TOKEN))
    })
    .await
    .unwrap();
    let start = tokio::time::Instant::now();
    let history = service.shared().engine().history().clone();
    let approvals = Approvals::open(service.shared().engine().records().store()).unwrap();
    let kept = |r: &RunRecord| {
        let stored = history.run(r.id).unwrap();
        let steps = history.steps(r.id).unwrap();
        assert_eq!(steps.len(), usize::from(stored.is_some()), "{}", r.id);
        stored.map(|s| (s.pruned, steps[0].response.is_some()))
    };
    let scrape = || async {
        let response = reqwest::Client::new()
            .get(format!("http://{}/metrics", service.addr()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        (
            metric(&text, "blockyard_retention_runs_deleted_total"),
            metric(&text, "blockyard_retention_payloads_pruned_total"),
        )
    };

    // The pass at start: the run older than `runs_after` goes, with its approval decision; the
    // one older than `payloads_after` keeps its record and step, without the response.
    until(start, 0.5).await;
    assert_eq!(kept(&old), None);
    assert_eq!(approvals.decision(old.id, "me").await.unwrap(), None);
    assert_eq!(kept(&older_than_a_day), Some((true, false)));
    assert_eq!(kept(&recent), Some((false, true)));
    assert_eq!(scrape().await, (1.0, 1.0));

    // A day on, the pass of each hour: the two-day-old run is three days old and goes; the recent
    // one is over a day old and is pruned.
    until(start, 11.5).await;
    assert_eq!(kept(&recent), Some((false, true)));
    until(start, 30.5).await;
    assert_eq!(kept(&older_than_a_day), None);
    assert_eq!(kept(&recent), Some((true, false)));
    assert_eq!(scrape().await, (2.0, 2.0));

    // The recent run turns three days old at 59.5 hours: gone at the pass of hour 60, not before.
    until(start, 59.5).await;
    assert_eq!(kept(&recent), Some((true, false)));
    until(start, 60.5).await;
    assert_eq!(kept(&recent), None);
    assert_eq!(scrape().await, (3.0, 2.0));

    // Runs parked for a person stay, however old, with what is kept for them.
    until(start, 24.0 * 30.0).await;
    assert_eq!(kept(&parked), Some((false, true)));
    assert_eq!(kept(&held), Some((false, true)));
    assert!(approvals.decision(parked.id, "me").await.unwrap().is_some());
    assert_eq!(scrape().await, (3.0, 2.0));
    service.shutdown().await.unwrap();
}

/// `POST /api/history/prune` with `"runs": true` deletes whole finished runs (what
/// `history prune --runs` sends through a service); a run waiting for approval stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_deletes_whole_finished_runs_when_asked() {
    let env = super::with_workflows().await;
    env.write(
        "workflows/gated.yaml",
        "name: gated\nblocks:\n  begin:\n    type: begin\n    next: me\n  me:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    approval: required\n    next: end\n  end:\n    type: end\n",
    );
    let service = super::serve(&env).await;
    let api = crate::support::Api::new(&service);
    let (status, run) = api
        .post("/workflows/whoami/runs", json!({"wait": true}))
        .await;
    assert_eq!((status, &run["status"]), (200, &json!("succeeded")));
    let (status, gated) = api
        .post("/workflows/gated/runs", json!({"wait": true}))
        .await;
    assert_eq!(
        (status, &gated["status"]),
        (200, &json!("waiting_approval"))
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        api.post("/history/prune", json!({"older_than": "1ms", "runs": true}))
            .await,
        (200, json!({"runs": 1, "steps": 3}))
    );
    let (status, _) = api
        .get(&format!("/runs/{}", run["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .get(&format!("/runs/{}", gated["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.post(
            "/history/prune",
            json!({"older_than": "1ms", "runs": "yes"})
        )
        .await,
        super::error(
            400,
            "the request body is not valid: invalid type: string \"yes\", expected a boolean"
        )
    );
    service.shutdown().await.unwrap();
}

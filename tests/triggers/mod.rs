//! Record triggers (rule transitions, the durable queue, traces) and schedules under paused time.

use std::path::Path;
use std::sync::Arc;

use blockyard::compile::compile_source;
use blockyard::preset::PresetRegistry;
use blockyard::records::{
    Change, Collection, Fields, RecordKey, RecordStore, Subject, Write, WriteMode,
};
use blockyard::spec::Source;
use blockyard::store::queue::Queue;
use blockyard::store::Store;
use blockyard::trigger::scheduler::{Clock, Scheduler};
use blockyard::trigger::{Cause, Triggers};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::support::{blockyard_in, stdout};

fn workflow(yaml: &str) -> Arc<blockyard::compile::Workflow> {
    let source = Source::new("test.yaml", yaml);
    Arc::new(compile_source(source, &PresetRegistry::builtin()).unwrap())
}

const OFFBOARD: &str = "name: offboard
blocks:
  begin:
    type: begin
    records: people
    on: [created, updated]
    rules:
      - { field: status, op: equals, value: terminated }
    next: end
  end:
    type: end
";

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn upsert(email: &str, fields: serde_json::Value) -> Write {
    Write {
        subject: Subject::new(Collection::People, RecordKey::parse(email)),
        change: Change::Upsert {
            fields: fields.as_object().unwrap().clone(),
            mode: WriteMode::CreateUpdate,
        },
    }
}

fn setup(dir: &Path, yaml: &str) -> (Store, RecordStore, Triggers) {
    let store = Store::open(dir).unwrap();
    let records = RecordStore::open(&store).unwrap();
    (
        store,
        records,
        Triggers::new([workflow(yaml)], &Fields::new()),
    )
}

#[test]
fn a_run_starts_only_when_the_rules_turn_true() {
    let dir = tempfile::tempdir().unwrap();
    let (store, records, triggers) = setup(dir.path(), OFFBOARD);
    let now = at("2026-03-01T00:00:00Z");
    // Each requested run is taken as done before the next write: a change that lands while one
    // is in flight is evaluated after it (`runs::` tests that).
    let queued = |w: Write| {
        let subject = w.subject.clone();
        let queued = records.write(&[w], &triggers, now).unwrap()[0]
            .queued
            .clone();
        for id in &queued {
            let holder = blockyard::store::in_flight::queue_holder(id);
            records.release(&subject, &holder, &triggers, now).unwrap();
        }
        queued.len()
    };
    // A new record that does not match: nothing.
    assert_eq!(
        queued(upsert(
            "jane@acme.com",
            json!({"email": "jane@acme.com", "status": "active"})
        )),
        0
    );
    // Unmatch → match: fires.
    assert_eq!(
        queued(upsert("jane@acme.com", json!({"status": "Terminated"}))),
        1
    );
    // Match → still match (another field changes): does not fire again.
    assert_eq!(
        queued(upsert("jane@acme.com", json!({"title": "Ex-employee"}))),
        0
    );
    // Match → unmatch → match: fires again.
    assert_eq!(
        queued(upsert("jane@acme.com", json!({"status": "active"}))),
        0
    );
    assert_eq!(
        queued(upsert("jane@acme.com", json!({"status": "terminated"}))),
        1
    );
    // A new record that matches: fires.
    assert_eq!(
        queued(upsert(
            "bob@acme.com",
            json!({"email": "bob@acme.com", "status": "terminated"})
        )),
        1
    );

    let queue = Queue::open(&store).unwrap();
    let pending = queue.pending().unwrap();
    assert_eq!(pending.len(), 3);
    assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
    let last = &pending[2].request;
    assert_eq!(last.workflow.as_str(), "offboard");
    assert_eq!(
        last.trigger,
        Cause::Record(blockyard::records::RecordEvent::Created)
    );
    assert_eq!(
        last.subject.as_ref().unwrap().to_string(),
        "people/bob@acme.com"
    );
    assert_eq!(last.snapshot.as_ref().unwrap()["status"], "terminated");
    assert_eq!(
        serde_json::to_value(last).unwrap()["trigger"],
        "record:created"
    );

    // The trace says why, per rule, and links the run once the executor has one.
    let trace = records
        .trace(&Subject::new(
            Collection::People,
            RecordKey::parse("jane@acme.com"),
        ))
        .unwrap();
    assert_eq!(trace.len(), 5);
    let fired = &trace[1].considered[0];
    assert!(fired.fired);
    let id = fired.queued.unwrap();
    assert!(records.link_run(id, "01RUN").unwrap());
    let trace = records
        .trace(&Subject::new(
            Collection::People,
            RecordKey::parse("jane@acme.com"),
        ))
        .unwrap();
    assert_eq!(trace[1].considered[0].run.as_deref(), Some("01RUN"));
    assert_eq!(
        trace[2].render(),
        "2026-03-01T00:00:00Z people/jane@acme.com record:updated
  offboard: no run: it already matched before this change
    before: match
      status equals \"terminated\": true (value: \"Terminated\")
    after: match
      status equals \"terminated\": true (value: \"Terminated\")
"
    );
}

#[test]
fn claimed_but_unacked_entries_are_delivered_again_after_a_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, records, triggers) = setup(dir.path(), OFFBOARD);
        for i in 0..3 {
            let email = format!("u{i}@acme.com");
            records
                .write(
                    &[upsert(
                        &email,
                        json!({"email": email, "status": "terminated"}),
                    )],
                    &triggers,
                    Utc::now(),
                )
                .unwrap();
        }
        let queue = Queue::open(&_store).unwrap();
        let first = queue.claim().unwrap().unwrap();
        assert!(queue.ack(first.id).unwrap());
        let second = queue.claim().unwrap().unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(queue.pending().unwrap().len(), 1);
        // Dropped without acking `second`.
    }
    let store = Store::open(dir.path()).unwrap();
    let queue = Queue::open(&store).unwrap();
    let mut delivered = Vec::new();
    while let Some(entry) = queue.claim().unwrap() {
        delivered.push(entry.request.subject.unwrap().key.to_string());
    }
    assert_eq!(delivered, ["u1@acme.com", "u2@acme.com"]);
}

#[test]
fn an_import_without_triggers_enqueues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("workflows")).unwrap();
    std::fs::write(dir.path().join("workflows/offboard.yaml"), OFFBOARD).unwrap();
    std::fs::write(
        dir.path().join("hr.csv"),
        "email,status\na@x.io,terminated\n",
    )
    .unwrap();
    let out = blockyard_in(
        dir.path(),
        &["records", "import", "people", "hr.csv", "--no-trigger"],
    );
    assert_eq!(
        stdout(&out),
        "people: 1 created, 0 updated, 0 unchanged, 0 rejected\n0 run requests queued\n"
    );
    std::fs::write(
        dir.path().join("hr2.csv"),
        "email,status\nb@x.io,terminated\n",
    )
    .unwrap();
    let out = blockyard_in(dir.path(), &["records", "import", "people", "hr2.csv"]);
    let text = stdout(&out);
    assert!(
        text.starts_with("people: 1 created, 0 updated, 0 unchanged, 0 rejected\n1 run requests queued; `blockyard serve` on this data dir starts them (`blockyard history list --status queued` lists them):\n  "),
        "{text}"
    );
    assert!(
        text.ends_with("  offboard  people/b@x.io  record:created\n"),
        "{text}"
    );
    let out = blockyard_in(dir.path(), &["triggers", "why", "--subject", "B@X.io"]);
    let text = stdout(&out);
    assert!(
        text.contains("people/b@x.io record:created\n  offboard: run requested (queue "),
        "{text}"
    );
    let out = blockyard_in(dir.path(), &["triggers", "why", "--subject", "a@x.io"]);
    assert_eq!(
        stdout(&out),
        "no trigger has considered `a@x.io` yet\nnot considered (no matching event or tick yet): offboard\n"
    );
    let store = Store::open(&dir.path().join(".blockyard")).unwrap();
    assert_eq!(Queue::open(&store).unwrap().len(), 1);
}

#[test]
fn schedule_next_prints_rfc3339_instants() {
    let dir = tempfile::tempdir().unwrap();
    let out = blockyard_in(
        dir.path(),
        &[
            "schedule",
            "next",
            "30 2 * * *",
            "--timezone",
            "America/New_York",
            "--after",
            "2026-03-07T00:00:00Z",
            "-n",
            "3",
        ],
    );
    assert_eq!(
        stdout(&out),
        "2026-03-07T07:30:00Z\n2026-03-08T07:00:00Z\n2026-03-09T06:30:00Z\n"
    );
    let out = blockyard_in(
        dir.path(),
        &[
            "schedule",
            "next",
            "0 */30 * * * *",
            "--timezone",
            "Europe/Berlin",
            "--after",
            "2026-10-25T00:00:00Z",
            "-n",
            "4",
            "--json",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        json!([
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:00:00Z"
        ])
    );
    let out = blockyard_in(dir.path(), &["schedule", "next", "61 * * * *"]);
    assert_eq!(
        crate::support::stderr(&out),
        "error: invalid cron expression `61 * * * *`: number out of bounds\n"
    );
    assert_eq!(out.status.code(), Some(2));
    let out = blockyard_in(
        dir.path(),
        &["schedule", "next", "@daily", "--timezone", "Europe/Berln"],
    );
    assert_eq!(
        crate::support::stderr(&out),
        "error: unknown time zone `Europe/Berln`; did you mean `Europe/Berlin`?\n"
    );
    // Both mistakes at once: both are reported.
    let out = blockyard_in(
        dir.path(),
        &[
            "schedule",
            "next",
            "61 * * * *",
            "--timezone",
            "Europe/Berln",
        ],
    );
    assert_eq!(
        crate::support::stderr(&out),
        "error: invalid cron expression `61 * * * *`: number out of bounds\nerror: unknown time zone `Europe/Berln`; did you mean `Europe/Berlin`?\n"
    );
    assert_eq!(out.status.code(), Some(2));
}

fn scheduled(cron: &str, zone: &str, catch_up: &str) -> String {
    format!(
        "name: tick
blocks:
  begin:
    type: begin
    schedule: {{ cron: \"{cron}\", timezone: {zone}, catch_up: {catch_up} }}
    next: end
  end:
    type: end
"
    )
}

/// Runs the scheduler from `start` for `hours` of paused time; the ticks it fired, as RFC 3339.
async fn ticks(dir: &Path, yaml: &str, start: &str, hours: u64) -> Vec<String> {
    let store = Store::open(dir).unwrap();
    let records = RecordStore::open(&store).unwrap();
    let triggers = Arc::new(Triggers::new([workflow(yaml)], &Fields::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let clock = Clock::starting_at(at(start));
    let handle = Scheduler::new(records, Queue::open(&store).unwrap(), triggers, clock)
        .notify(tx)
        .start();
    tokio::time::sleep(std::time::Duration::from_secs(hours * 3600)).await;
    handle.stop().await.unwrap();
    let mut out = Vec::new();
    while let Ok(fired) = rx.try_recv() {
        assert_eq!(fired.queued.len(), 1);
        out.push(
            fired
                .tick
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    out
}

#[tokio::test(start_paused = true)]
async fn new_york_spring_forward_fixed_job_fires_once_after_the_gap_and_interval_job_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = ticks(
        dir.path(),
        &scheduled("30 2 * * *", "America/New_York", "none"),
        "2026-03-07T12:00:00Z",
        48,
    )
    .await;
    assert_eq!(fixed, ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]);
    let dir = tempfile::tempdir().unwrap();
    let interval = ticks(
        dir.path(),
        &scheduled("*/30 * * * *", "America/New_York", "none"),
        "2026-03-08T06:10:00Z",
        2,
    )
    .await;
    // 01:30 EST, then 03:00 EDT: 02:00 and 02:30 do not exist.
    assert_eq!(
        interval,
        [
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-08T08:00:00Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn new_york_fall_back_fixed_job_fires_once_and_interval_job_fires_in_both_hours() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = ticks(
        dir.path(),
        &scheduled("30 1 * * *", "America/New_York", "none"),
        "2026-11-01T00:00:00Z",
        31,
    )
    .await;
    assert_eq!(fixed, ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]);
    let dir = tempfile::tempdir().unwrap();
    let interval = ticks(
        dir.path(),
        &scheduled("*/30 * * * *", "America/New_York", "none"),
        "2026-11-01T04:50:00Z",
        2,
    )
    .await;
    // 01:00 and 01:30 EDT, then 01:00 and 01:30 EST again.
    assert_eq!(
        interval,
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn berlin_transitions_follow_the_same_policy() {
    let dir = tempfile::tempdir().unwrap();
    let spring = ticks(
        dir.path(),
        &scheduled("30 2 * * *", "Europe/Berlin", "none"),
        "2026-03-28T12:00:00Z",
        24,
    )
    .await;
    assert_eq!(spring, ["2026-03-29T01:00:00Z"]);
    let dir = tempfile::tempdir().unwrap();
    let fall = ticks(
        dir.path(),
        &scheduled("30 2 * * *", "Europe/Berlin", "none"),
        "2026-10-24T12:00:00Z",
        24,
    )
    .await;
    assert_eq!(fall, ["2026-10-25T00:30:00Z"]);
    let dir = tempfile::tempdir().unwrap();
    let interval = ticks(
        dir.path(),
        &scheduled("*/30 * * * *", "Europe/Berlin", "none"),
        "2026-10-24T23:50:00Z",
        2,
    )
    .await;
    assert_eq!(
        interval,
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn catch_up_last_fires_the_most_recent_missed_tick_once_and_none_skips() {
    for (policy, expected) in [
        (
            "last",
            vec![
                "2026-03-01T06:00:00Z",
                "2026-03-04T06:00:00Z",
                "2026-03-05T06:00:00Z",
            ],
        ),
        ("none", vec!["2026-03-01T06:00:00Z", "2026-03-05T06:00:00Z"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let yaml = scheduled("0 6 * * *", "UTC", policy);
        let mut fired = ticks(dir.path(), &yaml, "2026-03-01T00:00:00Z", 12).await;
        // Down from 12:00 on the 1st until 12:00 on the 4th: three ticks missed.
        fired.extend(ticks(dir.path(), &yaml, "2026-03-04T12:00:00Z", 24).await);
        assert_eq!(fired, expected, "catch_up: {policy}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_tick_enqueues_one_run_per_matching_record_with_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: reclaim
blocks:
  begin:
    type: begin
    records: saas_users
    schedule: { cron: \"0 6 * * *\" }
    rules:
      - { field: app, op: equals, value: calendly }
      - { field: last_activity, op: before_days, value: 60 }
    next: end
  end:
    type: end
";
    let store = Store::open(dir.path()).unwrap();
    let records = RecordStore::open(&store).unwrap();
    let triggers = Arc::new(Triggers::new([workflow(yaml)], &Fields::new()));
    let user = |app: &str, email: &str, last: &str| Write {
        subject: Subject::new(
            Collection::SaasUsers,
            RecordKey::parse(&format!("{app}/{email}")),
        ),
        change: Change::Upsert {
            fields: json!({"app": app, "email": email, "last_activity": last})
                .as_object()
                .unwrap()
                .clone(),
            mode: WriteMode::CreateUpdate,
        },
    };
    records
        .write(
            &[
                user("calendly", "idle@acme.com", "2025-12-01"),
                user("calendly", "busy@acme.com", "2026-02-20"),
                user("webex", "idle@acme.com", "2025-12-01"),
            ],
            &triggers,
            at("2026-03-01T00:00:00Z"),
        )
        .unwrap();
    let queue = Queue::open(&store).unwrap();
    let handle = Scheduler::new(
        records.clone(),
        queue.clone(),
        triggers,
        Clock::starting_at(at("2026-03-01T00:00:00Z")),
    )
    .start();
    tokio::time::sleep(std::time::Duration::from_secs(7 * 3600)).await;
    handle.stop().await.unwrap();
    let pending = queue.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].request.subject.as_ref().unwrap().to_string(),
        "saas_users/calendly/idle@acme.com"
    );
    assert_eq!(pending[0].request.trigger, Cause::Schedule);
    assert_eq!(pending[0].request.at, at("2026-03-01T06:00:00Z"));
    let busy = records
        .trace(&Subject::new(
            Collection::SaasUsers,
            RecordKey::parse("calendly/busy@acme.com"),
        ))
        .unwrap();
    assert_eq!(busy.len(), 1);
    assert!(!busy[0].considered[0].fired);
    assert_eq!(
        queue
            .last_fired(&blockyard::trigger::WorkflowName::new("reclaim"))
            .unwrap(),
        Some(at("2026-03-01T06:00:00Z"))
    );
}

/// The mass-change guard can hold a run before the worker has linked it to its trace entry (the
/// run starts as soon as it is submitted; the link follows once its record is durable): the note
/// must reach the entry that requested the run all the same, and survive the link.
#[test]
fn a_held_note_written_before_the_run_is_linked_reaches_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, records, triggers) = setup(dir.path(), OFFBOARD);
    let now = at("2026-03-01T00:00:00Z");
    let write = upsert(
        "ada@acme.com",
        json!({"email": "ada@acme.com", "status": "terminated"}),
    );
    let subject = write.subject.clone();
    let queued = records.write(&[write], &triggers, now).unwrap()[0].queued[0];
    let why = "held by the mass-change guard before its destructive write";
    assert!(records
        .note_held(&subject, "01RUN", Some(queued), why)
        .unwrap());
    assert!(records.link_run(queued, "01RUN").unwrap());
    let trace = records.trace(&subject).unwrap();
    let considered = &trace.last().unwrap().considered[0];
    assert_eq!(considered.run.as_deref(), Some("01RUN"));
    assert_eq!(considered.held.as_deref(), Some(why));
}

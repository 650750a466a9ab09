//! The behaviour every store backend promises, written against the traits of
//! `blockyard::store::api` and not against sled: [`suite`] is the one body; sled runs it here,
//! and a next backend (PostgreSQL) calls the same body with its own `make`.

use std::path::Path;
use std::sync::Arc;

use blockyard::records::{
    Change, Collection, Fields, Outcome, RecordEvent, RecordKey, Subject, Write, WriteMode,
};
use blockyard::store::api::{
    ApprovalStore, Backend, CancelStore, DurableTimers, Evaluate, ReadGuard, ReadHistory,
    ReadPauses, ReadRecords, ReadReminders, ReadRetryMarks, RunQueue, ScheduleState, TriggerTraces,
    WriteGuard, WriteHistory, WritePauses, WriteRecords, WriteReminders, WriteRetryMarks,
};
use blockyard::store::approvals::Decision as Approval;
use blockyard::store::guard::Admission;
use blockyard::store::history::{
    BatchReport, RunFilter, RunId, RunMode, RunRecord, RunStatus, RunTrigger, StepRecord,
    StepStatus, Subject as RunSubject, TriggerKind,
};
use blockyard::store::in_flight::queue_holder;
use blockyard::store::pauses::Pause;
use blockyard::store::queue::{Cause, RunRequest, WorkflowName};
use blockyard::store::reminders::Reminder;
use blockyard::store::retries::RetryMark;
use blockyard::store::trace::{Consideration, Decision};
use blockyard::store::Store;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Map, Value};

/// A trigger evaluation without the trigger module: `offboard` watches people and fires when a
/// record's `status` turns `terminated`.
pub(super) struct Offboard;

fn terminated(fields: Option<&Fields>) -> bool {
    fields.and_then(|f| f.get("status")) == Some(&json!("terminated"))
}

impl Evaluate for Offboard {
    fn is_empty(&self) -> bool {
        false
    }
    fn watches(&self, collection: Collection, event: RecordEvent) -> bool {
        collection == Collection::People && event != RecordEvent::Deleted
    }
    fn consider(
        &self,
        subject: &Subject,
        event: RecordEvent,
        old: Option<&Fields>,
        new: Option<&Fields>,
        now: DateTime<Utc>,
    ) -> Vec<Decision> {
        if !self.watches(subject.collection, event) {
            return Vec::new();
        }
        let fired = terminated(new) && !terminated(old);
        vec![Decision {
            consideration: Consideration {
                workflow: WorkflowName::new("offboard"),
                before: None,
                after: None,
                fired,
                queued: None,
                run: None,
                excluded: None,
                held: None,
                paused: None,
            },
            request: fired.then(|| RunRequest {
                workflow: WorkflowName::new("offboard"),
                subject: Some(subject.clone()),
                snapshot: new.cloned(),
                trigger: Cause::Record(event),
                at: now,
            }),
        }]
    }
}

pub(super) fn person(email: &str) -> Subject {
    Subject::new(Collection::People, RecordKey::parse(email))
}

pub(super) fn upsert(email: &str, fields: Value) -> Write {
    let Value::Object(fields) = fields else {
        unreachable!()
    };
    Write {
        subject: person(email),
        change: Change::Upsert {
            fields,
            mode: WriteMode::CreateUpdate,
        },
    }
}

pub(super) fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

pub(super) fn run_record(status: RunStatus, email: Option<&str>) -> RunRecord {
    let id = RunId::new();
    RunRecord {
        id,
        workflow: "offboard".to_owned(),
        file: "offboard.yaml".to_owned(),
        snapshot: "0".repeat(16),
        trigger: RunTrigger::manual(),
        subject: email.map(|email| RunSubject {
            collection: "people".to_owned(),
            key: email.to_lowercase(),
            record: json!({ "email": email }),
        }),
        vars: Map::new(),
        status,
        mode: RunMode::Live,
        created_at: id.created_at(),
        started_at: None,
        finished_at: None,
        replay_of: None,
        from_block: None,
        error: None,
        wake_at: None,
        pruned: false,
    }
}

/// Every promise of the store, each on a fresh backend `make` opens in an empty directory.
pub async fn suite<B: Backend>(make: impl Fn(&Path) -> B) {
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let backend = make(dir.path());
        (dir, backend)
    };
    let (_d, b) = fresh();
    a_record_write_and_what_it_triggers_are_written_together(&b).await;
    let (_d, b) = fresh();
    a_held_subject_keeps_its_change_until_released(&b).await;
    let (_d, b) = fresh();
    the_queue_hands_out_oldest_first_at_least_once(&b).await;
    let (_d, b) = fresh();
    timers_fall_due_in_time_order(&b).await;
    let (_d, b) = fresh();
    a_watched_record_write_makes_its_watchers_due(&b).await;
    let (_d, b) = fresh();
    history_keeps_runs_steps_snapshots_and_the_subject_index(&b).await;
    let (_d, b) = fresh();
    retention_deletes_finished_runs_in_batches_with_what_is_kept_for_them(&b).await;
    let (_d, b) = fresh();
    retention_prunes_payloads_in_batches(&b).await;
    let (_d, b) = fresh();
    a_page_of_runs_goes_on_before_its_cursor_with_every_filter(&b).await;
    let (_d, b) = fresh();
    a_parked_run_is_woken_or_cancelled_once(&b).await;
    let (_d, b) = fresh();
    approvals_and_schedule_ticks_are_kept(&b).await;
    let (_d, b) = fresh();
    a_cancel_request_is_seen_by_every_handle_until_cleared(&b).await;
    let (dir, b) = fresh();
    the_guard_counts_in_a_sliding_window_and_keeps_releases(dir.path(), b, &make).await;
    let (dir, b) = fresh();
    pauses_keep_who_and_when_across_a_reopen(dir.path(), b, &make).await;
    let (dir, b) = fresh();
    a_run_is_marked_retried_once(dir.path(), b, &make).await;
    let (dir, b) = fresh();
    a_reminder_is_kept_for_the_same_blocks_and_claimed_once(dir.path(), b, &make).await;
    let (dir, b) = fresh();
    what_was_flushed_is_there_after_a_reopen(dir.path(), b, &make).await;
}

async fn a_record_write_and_what_it_triggers_are_written_together<B: Backend>(b: &B) {
    let records = b.records().unwrap();
    let queue = b.queue().unwrap();
    let evaluate: Arc<dyn Evaluate + Send + Sync> = Arc::new(Offboard);
    let jane = person("jane@acme.com");

    let written = records
        .write(
            vec![upsert(
                "Jane@Acme.com",
                json!({"email": "jane@acme.com", "status": "active"}),
            )],
            evaluate.clone(),
            at(0),
            None,
        )
        .await
        .unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].outcome, Outcome::Created);
    assert!(written[0].queued.is_empty());
    assert!(queue.pending().await.unwrap().is_empty());

    let written = records
        .write(
            vec![upsert("jane@acme.com", json!({"status": "terminated"}))],
            evaluate.clone(),
            at(1),
            None,
        )
        .await
        .unwrap();
    assert_eq!(written[0].outcome, Outcome::Updated);
    let [queued] = written[0].queued[..] else {
        panic!("one run requested: {written:?}")
    };
    // The record, the request and its trace, together.
    let record = records.get(&jane).await.unwrap().unwrap();
    assert_eq!(record["status"], "terminated");
    assert_eq!(record["email"], "jane@acme.com");
    let pending = queue.pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, queued);
    assert_eq!(pending[0].request.workflow, WorkflowName::new("offboard"));
    assert_eq!(pending[0].request.subject.as_ref(), Some(&jane));
    assert_eq!(
        pending[0].request.trigger,
        Cause::Record(RecordEvent::Updated)
    );
    let trace = records.trace(&jane).await.unwrap();
    assert_eq!(trace.len(), 2);
    assert!(!trace[0].considered[0].fired);
    assert!(trace[1].considered[0].fired);
    assert_eq!(trace[1].considered[0].queued, Some(queued));
    // The request holds its subject until it is done.
    let flight = records.in_flight(&jane).await.unwrap().unwrap();
    assert!(flight.holders.contains(&queue_holder(queued)), "{flight:?}");
    // Its run, once it exists, is named in the trace.
    assert!(records.link_run(queued, "RUN1").await.unwrap());
    let trace = records.trace(&jane).await.unwrap();
    assert_eq!(trace[1].considered[0].run.as_deref(), Some("RUN1"));

    // Listed by key (the key rule lowercases the email).
    let listed = records.list(Collection::People).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, RecordKey::parse("jane@acme.com"));
}

async fn a_held_subject_keeps_its_change_until_released<B: Backend>(b: &B) {
    let records = b.records().unwrap();
    let evaluate: Arc<dyn Evaluate + Send + Sync> = Arc::new(Offboard);
    let bob = person("bob@acme.com");
    records
        .write(
            vec![upsert("bob@acme.com", json!({"status": "active"}))],
            evaluate.clone(),
            at(0),
            None,
        )
        .await
        .unwrap();
    records.hold(&bob, "run:R").await.unwrap();
    let written = records
        .write(
            vec![upsert("bob@acme.com", json!({"status": "terminated"}))],
            evaluate.clone(),
            at(1),
            None,
        )
        .await
        .unwrap();
    // Applied, but not evaluated while the run holds the subject.
    assert_eq!(written[0].outcome, Outcome::Updated);
    assert!(written[0].queued.is_empty());
    assert_eq!(
        records.get(&bob).await.unwrap().unwrap()["status"],
        "terminated"
    );
    let flight = records.in_flight(&bob).await.unwrap().unwrap();
    assert!(flight.deferred.is_some(), "{flight:?}");
    // Released: the held-back change is evaluated then, once.
    let queued = records
        .release(&bob, "run:R", evaluate.clone(), at(2))
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    let queue = b.queue().unwrap();
    assert_eq!(queue.pending().await.unwrap()[0].id, queued[0]);
}

async fn the_queue_hands_out_oldest_first_at_least_once<B: Backend>(b: &B) {
    let records = b.records().unwrap();
    let evaluate: Arc<dyn Evaluate + Send + Sync> = Arc::new(Offboard);
    let writes = ["a@x.io", "b@x.io", "c@x.io"]
        .map(|email| upsert(email, json!({"status": "terminated"})))
        .to_vec();
    let written = records.write(writes, evaluate, at(0), None).await.unwrap();
    let ids: Vec<_> = written.iter().map(|w| w.queued[0]).collect();

    let queue = b.queue().unwrap();
    let first = queue.claim().await.unwrap().unwrap();
    let second = queue.claim().await.unwrap().unwrap();
    assert_eq!((first.id, second.id), (ids[0], ids[1]));
    // A claimed entry is not handed out again through the same handle, until released.
    assert_eq!(
        queue
            .pending()
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [ids[2]]
    );
    queue.release(first.id);
    assert_eq!(queue.claim().await.unwrap().unwrap().id, ids[0]);
    assert!(queue.ack(ids[0]).await.unwrap());
    assert!(!queue.ack(ids[0]).await.unwrap());
    // A new handle (a restarted process) gets every entry not acknowledged, oldest first.
    let restarted = b.queue().unwrap();
    assert_eq!(
        restarted
            .pending()
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [ids[1], ids[2]]
    );
}

async fn timers_fall_due_in_time_order<B: Backend>(b: &B) {
    let timers = b.timers().unwrap();
    let (r1, r2, r3) = (RunId::new(), RunId::new(), RunId::new());
    timers.set(r1, at(30)).await.unwrap();
    timers.set(r2, at(10)).await.unwrap();
    timers.set(r3, at(20)).await.unwrap();
    let due = |list: Vec<blockyard::store::timers::Timer>| {
        list.into_iter().map(|t| (t.run, t.at)).collect::<Vec<_>>()
    };
    assert_eq!(
        due(timers.due(at(20)).await.unwrap()),
        [(r2, at(10)), (r3, at(20))]
    );
    // Setting replaces; cancelling drops, once.
    timers.set(r2, at(40)).await.unwrap();
    assert_eq!(due(timers.due(at(20)).await.unwrap()), [(r3, at(20))]);
    assert!(timers.cancel(r3).await.unwrap());
    assert!(!timers.cancel(r3).await.unwrap());
    let next = timers.next().await.unwrap().unwrap();
    assert_eq!((next.run, next.at), (r1, at(30)));
    assert_eq!(
        due(timers.due(at(100)).await.unwrap()),
        [(r1, at(30)), (r2, at(40))]
    );
}

async fn a_watched_record_write_makes_its_watchers_due<B: Backend>(b: &B) {
    let timers = b.timers().unwrap();
    let records = b.records().unwrap();
    let evaluate: Arc<dyn Evaluate + Send + Sync> = Arc::new(Offboard);
    let (jane, bob) = (person("jane@acme.com"), person("bob@acme.com"));
    let (waiter, other) = (RunId::new(), RunId::new());
    timers.set(waiter, at(1000)).await.unwrap();
    timers.set(other, at(1000)).await.unwrap();
    // Watching twice is one watch.
    timers.watch(waiter, &jane.to_string()).await.unwrap();
    timers.watch(waiter, &jane.to_string()).await.unwrap();
    timers.watch(other, &bob.to_string()).await.unwrap();
    assert_eq!(timers.watchers(&jane.to_string()).await.unwrap(), [waiter]);
    assert!(timers.due(at(0)).await.unwrap().is_empty());

    // A write of the watched record makes its watcher due at once (the epoch), with the write;
    // the run watching another record keeps its time.
    records
        .write(
            vec![upsert("jane@acme.com", json!({"status": "active"}))],
            evaluate.clone(),
            at(0),
            None,
        )
        .await
        .unwrap();
    let due: Vec<_> = timers
        .due(at(0))
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.run, t.at))
        .collect();
    assert_eq!(due, [(waiter, Utc.timestamp_opt(0, 0).unwrap())]);
    let next = timers.due(at(1000)).await.unwrap();
    assert_eq!(next.len(), 2, "{next:?}");

    // Unwatched: a write no longer wakes it.
    timers.unwatch(waiter, &jane.to_string()).await.unwrap();
    timers.unwatch(waiter, &jane.to_string()).await.unwrap();
    assert!(timers.watchers(&jane.to_string()).await.unwrap().is_empty());
    timers.set(waiter, at(1000)).await.unwrap();
    records
        .write(
            vec![upsert("jane@acme.com", json!({"status": "away"}))],
            evaluate,
            at(1),
            None,
        )
        .await
        .unwrap();
    assert!(timers.due(at(1)).await.unwrap().is_empty());
    assert_eq!(timers.watchers(&bob.to_string()).await.unwrap(), [other]);
}

async fn history_keeps_runs_steps_snapshots_and_the_subject_index<B: Backend>(b: &B) {
    let history = b.history().unwrap();
    let hash = history.put_snapshot("name: offboard\n").await.unwrap();
    assert_eq!(
        history.put_snapshot("name: offboard\n").await.unwrap(),
        hash
    );
    assert_eq!(
        history.snapshot(&hash).await.unwrap().as_deref(),
        Some("name: offboard\n")
    );

    let mut run = run_record(RunStatus::Running, Some("Jane@Acme.com"));
    history.put_run(&run).await.unwrap();
    let other = run_record(RunStatus::Running, Some("bob@acme.com"));
    history.put_run(&other).await.unwrap();
    assert_eq!(history.run(run.id).await.unwrap().as_ref(), Some(&run));
    assert_eq!(history.unfinished().await.unwrap().len(), 2);

    let steps: Vec<StepRecord> = (0..3)
        .map(|seq| {
            let mut step = StepRecord::new(
                run.id,
                seq,
                &format!("b{seq}"),
                "api",
                StepStatus::Succeeded,
                at(0),
            );
            step.outputs.insert("n".to_owned(), json!(seq));
            step
        })
        .collect();
    history.put_steps(&[&steps[0]]).await.unwrap();
    history.put_steps(&[&steps[2], &steps[1]]).await.unwrap();
    let read = history.steps(run.id).await.unwrap();
    assert_eq!(
        read.iter().map(|s| s.seq).collect::<Vec<_>>(),
        [0, 1, 2],
        "in order"
    );

    // The subject index finds a person's runs whatever the case of the email.
    let filter = RunFilter {
        subject: Some("JANE@acme.com".to_owned()),
        ..RunFilter::default()
    };
    let found = history.list(&filter).await.unwrap();
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), [run.id]);

    // Finished and pruned: the run stays, its payloads go.
    run.status = RunStatus::Succeeded;
    run.finished_at = Some(Utc::now() - Duration::days(10));
    history.put_run(&run).await.unwrap();
    assert_eq!(history.unfinished().await.unwrap().len(), 1);
    let report = history.prune(Utc::now() - Duration::days(1)).await.unwrap();
    assert_eq!((report.runs, report.steps), (1, 3));
    let read = history.steps(run.id).await.unwrap();
    assert!(read.iter().all(|s| s.outputs.is_empty()), "{read:?}");
    assert!(history.run(run.id).await.unwrap().unwrap().pruned);
    history.durable().await.unwrap();
}

fn steps_of(run: RunId, n: u32) -> Vec<StepRecord> {
    (0..n)
        .map(|seq| {
            let mut step = StepRecord::new(
                run,
                seq,
                &format!("b{seq}"),
                "api",
                StepStatus::Succeeded,
                at(0),
            );
            step.outputs.insert("n".to_owned(), json!(seq));
            step
        })
        .collect()
}

/// Runs every batch of one retention pass, `limit` runs a batch: each batch's report.
async fn batches<F, Fut>(limit: usize, batch: F) -> Vec<BatchReport>
where
    F: Fn(Option<RunId>, usize) -> Fut,
    Fut: std::future::Future<Output = blockyard::store::api::Result<BatchReport>>,
{
    let mut reports = Vec::new();
    let mut after = None;
    loop {
        let report = batch(after, limit).await.unwrap();
        reports.push(report);
        match report.next {
            Some(next) => after = Some(next),
            None => return reports,
        }
    }
}

/// Whole runs finished before the cutoff go, with their steps, index entries, timer, watches,
/// approval decisions, reminder and retry mark; runs not finished (whatever their
/// `finished_at`), finished later, or with no finish time stay, and so do snapshots.
async fn retention_deletes_finished_runs_in_batches_with_what_is_kept_for_them<B: Backend>(b: &B) {
    let (history, timers, approvals, reminders, retries) = (
        b.history().unwrap(),
        b.timers().unwrap(),
        b.approvals().unwrap(),
        b.reminders().unwrap(),
        b.retries().unwrap(),
    );
    let hash = history.put_snapshot("name: offboard\n").await.unwrap();
    let cutoff = at(500);
    let put = |mut run: RunRecord, status: RunStatus, finished: Option<DateTime<Utc>>| {
        let (history, hash) = (&history, &hash);
        async move {
            // First written running (as the engine does: the indexes are written then).
            history.put_run(&run).await.unwrap();
            let steps = steps_of(run.id, 3);
            history.put_steps(&[&steps[0]]).await.unwrap();
            history.put_steps(&[&steps[1], &steps[2]]).await.unwrap();
            run.status = status;
            run.finished_at = finished;
            run.snapshot = hash.clone();
            history.put_run(&run).await.unwrap();
            run
        }
    };
    let mut old = Vec::new();
    for (i, status) in [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::CompletedWithFailures,
        RunStatus::NeedsAttention,
    ]
    .into_iter()
    .enumerate()
    {
        let run = run_record(RunStatus::Running, Some("Jane@Acme.com"));
        old.push(put(run, status, Some(at(i as i64))).await);
    }
    // What else is kept for a run: a stale timer and watch, decisions, a reminder, a retry mark.
    let first = old[0].id;
    timers.set(first, at(10_000)).await.unwrap();
    timers.watch(first, "people/jane@acme.com").await.unwrap();
    let decision = Approval {
        approved: true,
        at: at(1),
        by: Some("dana".to_owned()),
        comment: None,
    };
    for block in ["delete", "notify"] {
        approvals
            .decide(first, block, decision.clone())
            .await
            .unwrap();
    }
    let reminder = Reminder {
        since: at(0),
        blocks: vec!["delete".to_owned()],
        due: at(60),
        sent: Some(at(60)),
    };
    assert!(reminders.schedule(first, &reminder).await.unwrap());
    assert_eq!(
        retries
            .claim(&first.to_string(), "carol", at(2))
            .await
            .unwrap(),
        None
    );

    let mut kept = Vec::new();
    // Not finished, though (for the test) with an old finish time: never touched.
    for status in RunStatus::ALL.into_iter().filter(|s| !s.is_finished()) {
        let run = run_record(RunStatus::Running, Some("jane@acme.com"));
        kept.push(put(run, status, Some(at(0))).await);
    }
    let parked = kept
        .iter()
        .find(|r| r.status == RunStatus::WaitingApproval)
        .unwrap()
        .id;
    timers.watch(parked, "people/jane@acme.com").await.unwrap();
    approvals
        .decide(parked, "delete", decision.clone())
        .await
        .unwrap();
    // Finished at the cutoff or after, or with no finish time: kept.
    let run = run_record(RunStatus::Running, Some("jane@acme.com"));
    kept.push(put(run, RunStatus::Succeeded, Some(cutoff)).await);
    let run = run_record(RunStatus::Running, None);
    kept.push(put(run, RunStatus::Failed, Some(at(900))).await);
    let run = run_record(RunStatus::Running, None);
    kept.push(put(run, RunStatus::Failed, None).await);

    // Two runs a batch: every batch deletes at most two, and the pass ends.
    let reports = batches(2, |after, limit| {
        history.delete_finished_before(cutoff, after, limit)
    })
    .await;
    assert!(reports.iter().all(|r| r.runs <= 2), "{reports:?}");
    let (runs, steps) = reports
        .iter()
        .fold((0, 0), |(runs, steps), r| (runs + r.runs, steps + r.steps));
    assert_eq!((runs, steps), (5, 15), "{reports:?}");
    for run in &old {
        assert_eq!(history.run(run.id).await.unwrap(), None);
        assert_eq!(history.steps(run.id).await.unwrap(), []);
    }
    assert_eq!(timers.next().await.unwrap(), None, "the stale timer went");
    assert_eq!(
        timers.watchers("people/jane@acme.com").await.unwrap(),
        [parked],
        "the deleted run's watch went, the parked run's stayed"
    );
    for block in ["delete", "notify"] {
        assert_eq!(approvals.decision(first, block).await.unwrap(), None);
    }
    assert_eq!(
        approvals.decision(parked, "delete").await.unwrap(),
        Some(decision)
    );
    assert_eq!(reminders.reminder(first).await.unwrap(), None);
    assert_eq!(retries.mark(&first.to_string()).await.unwrap(), None);
    for run in &kept {
        assert_eq!(history.run(run.id).await.unwrap().as_ref(), Some(run));
        assert_eq!(history.steps(run.id).await.unwrap().len(), 3);
    }
    let ids = |runs: Vec<RunRecord>| -> Vec<RunId> { runs.iter().map(|r| r.id).collect() };
    let mut want: Vec<RunId> = kept.iter().map(|r| r.id).collect();
    want.sort_by_key(|id| std::cmp::Reverse(*id));
    assert_eq!(
        ids(history.list(&RunFilter::default()).await.unwrap()),
        want
    );
    let by_workflow = RunFilter {
        workflow: Some("offboard".to_owned()),
        ..RunFilter::default()
    };
    assert_eq!(ids(history.list(&by_workflow).await.unwrap()), want);
    let by_subject = RunFilter {
        subject: Some("jane@acme.com".to_owned()),
        ..RunFilter::default()
    };
    let jane: Vec<RunId> = want
        .iter()
        .copied()
        .filter(|id| kept.iter().any(|r| r.id == *id && r.subject.is_some()))
        .collect();
    assert_eq!(ids(history.list(&by_subject).await.unwrap()), jane);
    assert_eq!(
        history.snapshot(&hash).await.unwrap().as_deref(),
        Some("name: offboard\n")
    );

    // A second pass finds nothing; one batch of one run looks at one run.
    let again = batches(100, |after, limit| {
        history.delete_finished_before(cutoff, after, limit)
    })
    .await;
    assert_eq!(again.iter().map(|r| r.runs).sum::<usize>(), 0);
    let one = history
        .delete_finished_before(at(1_000), None, 1)
        .await
        .unwrap();
    assert!(one.runs <= 1 && one.next.is_some(), "{one:?}");
    history.durable().await.unwrap();
}

/// The payload prune in bounded batches: each batch prunes at most its limit, the pass prunes
/// every finished run older than the cutoff once, and runs not finished keep their payloads.
async fn retention_prunes_payloads_in_batches<B: Backend>(b: &B) {
    let history = b.history().unwrap();
    let mut runs = Vec::new();
    for i in 0..5 {
        let mut run = run_record(RunStatus::Running, None);
        history.put_run(&run).await.unwrap();
        let steps = steps_of(run.id, 2);
        history.put_steps(&[&steps[0], &steps[1]]).await.unwrap();
        if i < 4 {
            run.status = RunStatus::Succeeded;
            run.finished_at = Some(at(i));
            history.put_run(&run).await.unwrap();
        }
        runs.push(run);
    }
    let reports = batches(3, |after, limit| history.prune_batch(at(100), after, limit)).await;
    assert!(reports.iter().all(|r| r.runs <= 3), "{reports:?}");
    let (pruned, steps) = reports
        .iter()
        .fold((0, 0), |(runs, steps), r| (runs + r.runs, steps + r.steps));
    assert_eq!((pruned, steps), (4, 8), "{reports:?}");
    for (i, run) in runs.iter().enumerate() {
        let stored = history.run(run.id).await.unwrap().unwrap();
        let steps = history.steps(run.id).await.unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(stored.pruned, i < 4);
        assert_eq!(steps.iter().all(|s| s.outputs.is_empty()), i < 4);
    }
    let again = batches(3, |after, limit| history.prune_batch(at(100), after, limit)).await;
    assert_eq!(again.iter().map(|r| r.runs).sum::<usize>(), 0);
}

/// `before` (a page's cursor) and `trigger`, over the whole history and over the subject index.
async fn a_page_of_runs_goes_on_before_its_cursor_with_every_filter<B: Backend>(b: &B) {
    let history = b.history().unwrap();
    let mut runs = Vec::new();
    for i in 0..7 {
        let mut run = run_record(RunStatus::Running, Some("jane@acme.com"));
        if i == 3 {
            run.workflow = "onboard".to_owned();
        }
        if i % 2 == 1 {
            run.trigger = RunTrigger {
                kind: TriggerKind::Schedule,
                detail: None,
            };
        }
        history.put_run(&run).await.unwrap();
        runs.push(run);
    }
    // Newest first: by id.
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    let ids = |found: Vec<RunRecord>| found.iter().map(|r| r.id).collect::<Vec<_>>();
    for subject in [None, Some("Jane@acme.com".to_owned())] {
        let page = RunFilter {
            subject: subject.clone(),
            limit: Some(3),
            ..RunFilter::default()
        };
        let first = history.list(&page).await.unwrap();
        assert_eq!(
            ids(first),
            runs[..3].iter().map(|r| r.id).collect::<Vec<_>>()
        );
        let next = RunFilter {
            before: Some(runs[2].id),
            ..page.clone()
        };
        let second = history.list(&next).await.unwrap();
        assert_eq!(
            ids(second),
            runs[3..6].iter().map(|r| r.id).collect::<Vec<_>>()
        );
        let scheduled = RunFilter {
            subject,
            trigger: Some(TriggerKind::Schedule),
            before: Some(runs[1].id),
            ..RunFilter::default()
        };
        let want: Vec<RunId> = runs[2..]
            .iter()
            .filter(|r| r.trigger.kind == TriggerKind::Schedule)
            .map(|r| r.id)
            .collect();
        assert_eq!(ids(history.list(&scheduled).await.unwrap()), want);
    }
    // By workflow, also before a cursor.
    let onboard: Vec<RunId> = runs
        .iter()
        .filter(|r| r.workflow == "onboard")
        .map(|r| r.id)
        .collect();
    let by_workflow = RunFilter {
        workflow: Some("onboard".to_owned()),
        ..RunFilter::default()
    };
    assert_eq!(ids(history.list(&by_workflow).await.unwrap()), onboard);
    let offboard: Vec<RunId> = runs
        .iter()
        .filter(|r| r.workflow == "offboard")
        .map(|r| r.id)
        .collect();
    let before = RunFilter {
        workflow: Some("offboard".to_owned()),
        before: Some(offboard[1]),
        ..RunFilter::default()
    };
    assert_eq!(ids(history.list(&before).await.unwrap()), offboard[2..]);
}

async fn a_parked_run_is_woken_or_cancelled_once<B: Backend>(b: &B) {
    let history = b.history().unwrap();
    let timers = b.timers().unwrap();
    let mut retrying = run_record(RunStatus::Retrying, None);
    retrying.wake_at = Some(at(10));
    history.put_run(&retrying).await.unwrap();
    let mut waiting = run_record(RunStatus::Waiting, None);
    waiting.wake_at = Some(at(20));
    history.put_run(&waiting).await.unwrap();
    // A parked run's timer follows its record.
    assert_eq!(timers.due(at(100)).await.unwrap().len(), 2);

    let woken = history.wake(retrying.id).await.unwrap().unwrap();
    assert_eq!(woken.status, RunStatus::Running);
    assert_eq!(woken.wake_at, None);
    assert_eq!(history.wake(retrying.id).await.unwrap(), None, "woken once");
    let cancelled = history
        .cancel_parked(waiting.id, "cancelled by an administrator", at(15))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(history.wake(waiting.id).await.unwrap(), None);
    assert!(timers.due(at(100)).await.unwrap().is_empty());
}

async fn approvals_and_schedule_ticks_are_kept<B: Backend>(b: &B) {
    let approvals = b.approvals().unwrap();
    let run = RunId::new();
    assert_eq!(approvals.decision(run, "delete").await.unwrap(), None);
    let decision = Approval {
        approved: true,
        at: at(5),
        by: Some("dana".to_owned()),
        comment: Some("HR ticket 4411".to_owned()),
    };
    approvals
        .decide(run, "delete", decision.clone())
        .await
        .unwrap();
    assert_eq!(
        approvals.decision(run, "delete").await.unwrap(),
        Some(decision)
    );
    assert_eq!(approvals.decision(run, "other").await.unwrap(), None);

    let records = b.records().unwrap();
    let nightly = WorkflowName::new("nightly");
    assert_eq!(records.last_fired(&nightly).await.unwrap(), None);
    let request = RunRequest {
        workflow: nightly.clone(),
        subject: None,
        snapshot: None,
        trigger: Cause::Schedule,
        at: at(60),
    };
    let decision = Decision {
        consideration: Consideration {
            workflow: nightly.clone(),
            before: None,
            after: None,
            fired: true,
            queued: None,
            run: None,
            excluded: None,
            held: None,
            paused: None,
        },
        request: Some(request),
    };
    let queued = records
        .enqueue_tick(&nightly, at(60), vec![(None, decision)])
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(records.last_fired(&nightly).await.unwrap(), Some(at(60)));
    assert_eq!(b.queue().unwrap().pending().await.unwrap()[0].id, queued[0]);
}

async fn a_cancel_request_is_seen_by_every_handle_until_cleared<B: Backend>(b: &B) {
    let cancels = b.cancels().unwrap();
    let (run, other) = (RunId::new(), RunId::new());
    assert!(cancels.requested().await.unwrap().is_empty());
    cancels.request(run).await.unwrap();
    cancels.request(run).await.unwrap();
    // Another handle (another process) sees it.
    let elsewhere = b.cancels().unwrap();
    assert_eq!(
        elsewhere.requested().await.unwrap(),
        std::collections::HashSet::from([run])
    );
    cancels.request(other).await.unwrap();
    elsewhere.clear(run).await.unwrap();
    assert_eq!(
        cancels.requested().await.unwrap(),
        std::collections::HashSet::from([other])
    );
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3_600);

async fn the_guard_counts_in_a_sliding_window_and_keeps_releases<B: Backend>(
    dir: &Path,
    b: B,
    make: &impl Fn(&Path) -> B,
) {
    let guard = b.guard().unwrap();
    let (first, second, released) = (RunId::new(), RunId::new(), RunId::new());
    let admit = |run, block, now| guard.admit("offboard", run, block, now, HOUR, Some(2));
    assert_eq!(
        admit(first, "delete", at(0)).await.unwrap(),
        Admission::Admitted
    );
    // The same block retried or resumed is counted once.
    assert_eq!(
        admit(first, "delete", at(60)).await.unwrap(),
        Admission::Admitted
    );
    assert_eq!(guard.count("offboard", at(60), HOUR).await.unwrap(), 1);
    assert_eq!(
        admit(second, "delete", at(1_800)).await.unwrap(),
        Admission::Admitted
    );
    // Another workflow has a window of its own.
    assert_eq!(
        guard
            .admit("invite", RunId::new(), "remove", at(1_800), HOUR, Some(1))
            .await
            .unwrap(),
        Admission::Admitted
    );
    assert_eq!(
        admit(RunId::new(), "delete", at(3_540)).await.unwrap(),
        Admission::Held {
            count: 2,
            allowed: 2
        }
    );
    // No limit: counted, never held.
    assert_eq!(
        guard
            .admit("invite", RunId::new(), "remove", at(1_801), HOUR, None)
            .await
            .unwrap(),
        Admission::Admitted
    );
    assert_eq!(guard.count("invite", at(1_801), HOUR).await.unwrap(), 2);
    assert!(!guard.is_released(released).await.unwrap());
    guard.release(released, at(3_550)).await.unwrap();
    assert!(guard.is_released(released).await.unwrap());
    b.flush().await.unwrap();
    drop(guard);
    drop(b);

    let b = make(dir);
    let guard = b.guard().unwrap();
    assert!(guard.is_released(released).await.unwrap());
    assert!(!guard.is_released(first).await.unwrap());
    assert_eq!(guard.count("offboard", at(3_599), HOUR).await.unwrap(), 2);
    // An hour after the first write it has left the window: one more goes.
    assert_eq!(guard.count("offboard", at(3_600), HOUR).await.unwrap(), 1);
    assert_eq!(
        guard
            .admit("offboard", RunId::new(), "delete", at(3_600), HOUR, Some(2))
            .await
            .unwrap(),
        Admission::Admitted
    );
    // A block counted before the reopen is still counted once.
    assert_eq!(
        guard
            .admit("offboard", second, "delete", at(3_601), HOUR, Some(2))
            .await
            .unwrap(),
        Admission::Admitted
    );
    assert_eq!(guard.count("offboard", at(3_601), HOUR).await.unwrap(), 2);
}

async fn pauses_keep_who_and_when_across_a_reopen<B: Backend>(
    dir: &Path,
    b: B,
    make: &impl Fn(&Path) -> B,
) {
    let pauses = b.pauses().unwrap();
    assert!(pauses.list().await.unwrap().is_empty());
    assert_eq!(pauses.paused("offboard").await.unwrap(), None);
    let alice = Pause {
        by: "alice".to_owned(),
        at: at(0),
    };
    assert_eq!(
        pauses.pause("offboard", "alice", at(0)).await.unwrap(),
        (alice.clone(), true)
    );
    // Paused again: the first pause is kept.
    assert_eq!(
        pauses.pause("offboard", "bob", at(60)).await.unwrap(),
        (alice.clone(), false)
    );
    let bob = Pause {
        by: "bob".to_owned(),
        at: at(120),
    };
    pauses.pause("invite", "bob", at(120)).await.unwrap();
    assert_eq!(
        pauses.list().await.unwrap(),
        vec![
            ("invite".to_owned(), bob.clone()),
            ("offboard".to_owned(), alice.clone())
        ]
    );
    assert_eq!(pauses.resume("invite").await.unwrap(), Some(bob));
    assert_eq!(pauses.resume("invite").await.unwrap(), None);
    b.flush().await.unwrap();
    drop(pauses);
    drop(b);

    let b = make(dir);
    let pauses = b.pauses().unwrap();
    assert_eq!(
        pauses.paused("offboard").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(pauses.paused("invite").await.unwrap(), None);
    assert_eq!(
        pauses.list().await.unwrap(),
        vec![("offboard".to_owned(), alice.clone())]
    );
    assert_eq!(pauses.resume("offboard").await.unwrap(), Some(alice));
    assert!(pauses.list().await.unwrap().is_empty());
}

async fn a_run_is_marked_retried_once<B: Backend>(dir: &Path, b: B, make: &impl Fn(&Path) -> B) {
    let retries = b.retries().unwrap();
    let (failed, other) = (RunId::new().to_string(), RunId::new().to_string());
    assert_eq!(retries.mark(&failed).await.unwrap(), None);
    // Marked before the replay starts: no run yet.
    assert_eq!(retries.claim(&failed, "alice", at(0)).await.unwrap(), None);
    let marked = RetryMark {
        at: at(0),
        by: "alice".to_owned(),
        run: None,
    };
    assert_eq!(retries.mark(&failed).await.unwrap(), Some(marked.clone()));
    // A second claim (another handle: another process) is refused with the mark it met.
    let elsewhere = b.retries().unwrap();
    assert_eq!(
        elsewhere.claim(&failed, "bob", at(60)).await.unwrap(),
        Some(marked.clone())
    );
    let replay = RunId::new().to_string();
    retries
        .link(&failed, marked.clone(), &replay)
        .await
        .unwrap();
    let linked = RetryMark {
        run: Some(replay),
        ..marked
    };
    assert_eq!(elsewhere.mark(&failed).await.unwrap(), Some(linked.clone()));
    assert_eq!(retries.mark(&other).await.unwrap(), None);
    b.flush().await.unwrap();
    drop((retries, elsewhere));
    drop(b);

    let b = make(dir);
    let retries = b.retries().unwrap();
    assert_eq!(retries.mark(&failed).await.unwrap(), Some(linked.clone()));
    assert_eq!(
        retries.claim(&failed, "carol", at(120)).await.unwrap(),
        Some(linked)
    );
    assert_eq!(retries.claim(&other, "carol", at(120)).await.unwrap(), None);
}

async fn a_reminder_is_kept_for_the_same_blocks_and_claimed_once<B: Backend>(
    dir: &Path,
    b: B,
    make: &impl Fn(&Path) -> B,
) {
    let reminders = b.reminders().unwrap();
    let (run, other) = (RunId::new(), RunId::new());
    let first = Reminder {
        since: at(0),
        blocks: vec!["approve".to_owned(), "sign_off".to_owned()],
        due: at(3600),
        sent: None,
    };
    assert!(reminders.schedule(run, &first).await.unwrap());
    // Waiting for the same blocks again keeps the reminder: its due time does not move.
    let again = Reminder {
        since: at(100),
        due: at(3700),
        ..first.clone()
    };
    assert!(!reminders.schedule(run, &again).await.unwrap());
    assert_eq!(reminders.reminder(run).await.unwrap(), Some(first.clone()));
    let sooner = Reminder {
        since: at(0),
        blocks: vec!["approve".to_owned()],
        due: at(60),
        sent: None,
    };
    assert!(reminders.schedule(other, &sooner).await.unwrap());
    assert_eq!(
        reminders.pending().await.unwrap(),
        [(other, sooner.clone()), (run, first.clone())],
        "earliest due first"
    );

    // Claimed once: the second claim of the same reminder as read loses.
    assert!(reminders.claim(run, &first, at(3600)).await.unwrap());
    assert!(!reminders.claim(run, &first, at(3601)).await.unwrap());
    let sent = Reminder {
        sent: Some(at(3600)),
        ..first.clone()
    };
    assert_eq!(
        reminders.pending().await.unwrap(),
        [(other, sooner.clone())]
    );

    // Across a reopen: kept, still sent once.
    b.flush().await.unwrap();
    drop(reminders);
    drop(b);
    let b = make(dir);
    let reminders = b.reminders().unwrap();
    assert_eq!(reminders.reminder(run).await.unwrap(), Some(sent));
    assert!(!reminders.claim(run, &first, at(3700)).await.unwrap());
    // Waiting for other blocks later is a new reminder; a dropped one is gone.
    let later = Reminder {
        since: at(5000),
        blocks: vec!["final".to_owned()],
        due: at(8600),
        sent: None,
    };
    assert!(reminders.schedule(run, &later).await.unwrap());
    assert_eq!(reminders.reminder(run).await.unwrap(), Some(later.clone()));
    reminders.remove(other).await.unwrap();
    assert_eq!(reminders.reminder(other).await.unwrap(), None);
    assert_eq!(reminders.pending().await.unwrap(), [(run, later)]);
}

async fn what_was_flushed_is_there_after_a_reopen<B: Backend>(
    dir: &Path,
    b: B,
    make: &impl Fn(&Path) -> B,
) {
    let history = b.history().unwrap();
    let run = run_record(RunStatus::Running, None);
    history.put_run(&run).await.unwrap();
    b.flush().await.unwrap();
    drop(history);
    drop(b);
    let b = make(dir);
    assert_eq!(
        b.history()
            .unwrap()
            .run(run.id)
            .await
            .unwrap()
            .map(|r| r.id),
        Some(run.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_every_promise_of_the_store() {
    suite(|dir| Store::open(dir).unwrap()).await;
}

/// The closed enum the engine holds keeps the same promises, dispatching to its sled arm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_enum_keeps_every_promise_on_sled() {
    suite(|dir| blockyard::store::any::AnyStore::from(Store::open(dir).unwrap())).await;
}

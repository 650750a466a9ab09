//! What several workers on one store need of it, on every backend: two handles on one database
//! stand for two workers (on PostgreSQL two pools on one schema; on sled, whose data dir one
//! process holds, two handles of that process). Each case is one body, [`workers`], run on sled
//! here and on PostgreSQL when `BLOCKYARD_TEST_POSTGRES` names a server.

use std::path::Path;
use std::sync::Mutex;

use blockyard::store::api::{Backend, ReadHistory, RunQueue, ScheduleState, WriteHistory};
use blockyard::store::history::RunStatus;
use blockyard::store::postgres::Postgres;
use blockyard::store::queue::{Cause, RunRequest, WorkflowName};
use blockyard::store::trace::{Consideration, Decision};
use blockyard::store::Store;

use super::postgres::{schema_for, server, Schemas};
use super::suite::{at, run_record};

/// Every case, each on a fresh store `make` opens in an empty directory; `twin` opens a second
/// handle on the same store (another worker).
pub async fn workers<B: Backend>(make: impl Fn(&Path) -> B, twin: impl Fn(&Path, &B) -> B) {
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let one = make(dir.path());
        let two = twin(dir.path(), &one);
        (dir, one, two)
    };
    let (_d, one, two) = fresh();
    each_schedule_tick_is_enqueued_once(&one, &two).await;
    let (_d, one, two) = fresh();
    each_due_timer_wakes_its_run_once(&one, &two).await;
}

fn tick_decision(
    workflow: &WorkflowName,
    tick: i64,
) -> Vec<(Option<blockyard::records::Subject>, Decision)> {
    vec![(
        None,
        Decision {
            consideration: Consideration {
                workflow: workflow.clone(),
                before: None,
                after: None,
                fired: true,
                queued: None,
                run: None,
                excluded: None,
                held: None,
                paused: None,
            },
            request: Some(RunRequest {
                workflow: workflow.clone(),
                subject: None,
                snapshot: None,
                trigger: Cause::Schedule,
                at: at(tick),
            }),
        },
    )]
}

async fn each_schedule_tick_is_enqueued_once<B: Backend>(one: &B, two: &B) {
    let (a, b) = (one.records().unwrap(), two.records().unwrap());
    let nightly = WorkflowName::new("nightly");
    // Two workers fire the same tick at once: one enqueues it, the other gets nothing.
    let (x, y) = tokio::join!(
        a.enqueue_tick(&nightly, at(60), tick_decision(&nightly, 60)),
        b.enqueue_tick(&nightly, at(60), tick_decision(&nightly, 60)),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(
        (x.len() + y.len(), x.len().max(y.len())),
        (1, 1),
        "{x:?} {y:?}"
    );
    let pending = one.queue().unwrap().pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(b.last_fired(&nightly).await.unwrap(), Some(at(60)));
    // A tick already fired, or one before it (a worker whose clock is behind), enqueues nothing.
    for tick in [60, 30] {
        let again = b
            .enqueue_tick(&nightly, at(tick), tick_decision(&nightly, tick))
            .await
            .unwrap();
        assert_eq!(again, [], "tick {tick}");
    }
    assert_eq!(a.last_fired(&nightly).await.unwrap(), Some(at(60)));
    // The next tick fires.
    let next = b
        .enqueue_tick(&nightly, at(120), tick_decision(&nightly, 120))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(one.queue().unwrap().pending().await.unwrap().len(), 2);
}

async fn each_due_timer_wakes_its_run_once<B: Backend>(one: &B, two: &B) {
    let (a, b) = (one.history().unwrap(), two.history().unwrap());
    for status in [RunStatus::Retrying, RunStatus::Waiting] {
        let mut parked = run_record(status, None);
        parked.wake_at = Some(at(10));
        a.put_run(&parked).await.unwrap();
        let (x, y) = tokio::join!(a.wake(parked.id), b.wake(parked.id));
        let woken: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
        assert_eq!(woken.len(), 1, "{status:?} woken once");
        assert_eq!(woken[0].status, RunStatus::Running);
        assert_eq!(
            b.run(parked.id).await.unwrap().unwrap().status,
            RunStatus::Running
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_serves_several_handles() {
    workers(|dir| Store::open(dir).unwrap(), |_, one| one.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serves_several_workers() {
    let Some(url) = server("store::workers::postgres_serves_several_workers") else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    // Each call is a pool of its own: a second call for one directory is another worker.
    let open = |dir: &Path| {
        let name = schema_for(dir);
        let pg = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(Postgres::open_in_schema(&url, &name))
        })
        .unwrap();
        let mut names = schemas.names.lock().unwrap();
        if !names.contains(&name) {
            names.push(name);
        }
        pg
    };
    workers(open, |dir, _| open(dir)).await;
}

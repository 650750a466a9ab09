//! What several workers on one store need of it, on every backend: two handles on one database
//! stand for two workers (on PostgreSQL two pools on one schema; on sled, whose data dir one
//! process holds, two handles of that process). Each case is one body, [`workers`], run on sled
//! here and on PostgreSQL when `BLOCKYARD_TEST_POSTGRES` names a server.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use blockyard::store::api::{
    Backend, Evaluate, QueueLeases, RateBudget, ReadHistory, Renewed, RunLeases, RunQueue,
    ScheduleState, WorkerId, WriteHistory, WriteRecords,
};
use blockyard::store::history::{RunId, RunStatus};
use blockyard::store::postgres::budget::PgBudget;
use blockyard::store::postgres::tokens::PgTokenStore;
use blockyard::store::postgres::Postgres;
use blockyard::store::queue::{Cause, RunRequest, WorkflowName};
use blockyard::store::tokens::{CredentialTokens, FileTokenStore, StoredToken};
use blockyard::store::trace::{Consideration, Decision};
use blockyard::store::Store;

use super::postgres::{schema_for, server, Schemas};
use super::suite::{at, run_record, upsert, Offboard};

/// Every case, each on a fresh store `make` opens in an empty directory; `twin` opens a second
/// handle on the same store (another worker).
pub async fn workers<B>(make: impl Fn(&Path) -> B, twin: impl Fn(&Path, &B) -> B)
where
    B: Backend,
    B::History: RunLeases,
    B::Queue: QueueLeases,
{
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
    let (_d, one, two) = fresh();
    a_run_is_its_workers_until_its_lease_passes_then_one_worker_claims_it(&one, &two).await;
    let (_d, one, two) = fresh();
    a_queue_claim_is_leased_renewed_and_claimed_again_once_it_passes(&one, &two).await;
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

async fn a_run_is_its_workers_until_its_lease_passes_then_one_worker_claims_it<B>(one: &B, two: &B)
where
    B: Backend,
    B::History: RunLeases,
{
    let (a, b) = (one.history().unwrap(), two.history().unwrap());
    let (wa, wb, wc) = (WorkerId::new("a"), WorkerId::new("b"), WorkerId::new("c"));
    let mut running: Vec<_> = (0..4)
        .map(|_| run_record(RunStatus::Running, None))
        .collect();
    for run in &mut running {
        run.created_at = at(0);
        a.put_run(run).await.unwrap();
    }
    let mut ids: Vec<RunId> = running.iter().map(|r| r.id).collect();
    ids.sort();
    let mut parked = run_record(RunStatus::Retrying, None);
    parked.created_at = at(0);
    parked.wake_at = Some(at(5));
    a.put_run(&parked).await.unwrap();
    let mut done = run_record(RunStatus::Succeeded, None);
    done.created_at = at(0);
    a.put_run(&done).await.unwrap();
    if !a.shared() {
        // One process holds the store: every run is its own, nothing is leased or lost.
        assert!(!b.shared());
        assert!(b.take(ids[0], &wb, at(10), at(40)).await.unwrap());
        assert_eq!(a.renew(&wa, at(60)).await.unwrap(), Renewed::default());
        assert_eq!(
            b.claim_orphans(&wb, at(1000), at(1030), 10).await.unwrap(),
            []
        );
        let woken = b.wake_for(parked.id, &wb, at(40)).await.unwrap().unwrap();
        assert_eq!(woken.status, RunStatus::Running);
        return;
    }
    // Recorded and not taken: an orphan only one lease length after its creation.
    assert_eq!(b.claim_orphans(&wb, at(20), at(50), 10).await.unwrap(), []);
    for id in &ids[..3] {
        assert!(a.take(*id, &wa, at(1), at(40)).await.unwrap());
    }
    // A live lease is its worker's alone; the worker itself takes its run again.
    assert!(!b.take(ids[0], &wb, at(10), at(40)).await.unwrap());
    assert!(a.take(ids[0], &wa, at(10), at(40)).await.unwrap());
    assert!(!b.take(RunId::new(), &wb, at(10), at(40)).await.unwrap());
    // The run nobody took is an orphan now; the taken ones are not.
    let claimed = b.claim_orphans(&wb, at(35), at(65), 10).await.unwrap();
    assert_eq!(claimed.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[3]]);
    assert!(b.take(ids[3], &wb, at(36), at(65)).await.unwrap());
    // Renewing keeps every run of the worker in one step.
    assert_eq!(
        a.renew(&wa, at(60)).await.unwrap(),
        Renewed {
            runs: ids[..3].to_vec(),
            queued: Vec::new()
        }
    );
    assert_eq!(b.claim_orphans(&wc, at(50), at(80), 10).await.unwrap(), []);
    // Worker `a` dies: past its leases two workers claim at once, and each run goes to one.
    let (x, y) = tokio::join!(
        a.claim_orphans(&wb, at(61), at(100), 10),
        b.claim_orphans(&wc, at(61), at(100), 10),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut got: Vec<RunId> = x.iter().chain(&y).map(|r| r.id).collect();
    got.sort();
    assert_eq!(got, ids[..3], "{x:?} {y:?}");
    assert!(x.iter().chain(&y).all(|r| r.status == RunStatus::Running));
    // Worker `b`'s own run (leased until 65) was not claimed by it nor by `c`.
    // A worker that was only slow renews nothing: its runs are others' now.
    assert_eq!(a.renew(&wa, at(62)).await.unwrap(), Renewed::default());
    // Parked and finished runs are nobody's; a woken run is its waker's at once.
    assert_eq!(
        a.claim_orphans(&wa, at(500), at(530), 10)
            .await
            .unwrap()
            .len(),
        4
    );
    let woken = b.wake_for(parked.id, &wb, at(600)).await.unwrap().unwrap();
    assert_eq!(woken.status, RunStatus::Running);
    assert!(!a.take(parked.id, &wa, at(550), at(580)).await.unwrap());
    assert_eq!(
        a.claim_orphans(&wa, at(550), at(580), 10).await.unwrap(),
        []
    );
    assert_eq!(
        b.renew(&wb, at(700)).await.unwrap().runs,
        [parked.id],
        "`b` holds the run it woke"
    );
}

async fn a_queue_claim_is_leased_renewed_and_claimed_again_once_it_passes<B>(one: &B, two: &B)
where
    B: Backend,
    B::History: RunLeases,
    B::Queue: QueueLeases,
{
    let records = one.records().unwrap();
    let evaluate: Arc<dyn Evaluate + Send + Sync> = Arc::new(Offboard);
    let writes = ["a@x.io", "b@x.io", "c@x.io"]
        .map(|email| upsert(email, serde_json::json!({"status": "terminated"})))
        .to_vec();
    let written = records.write(writes, evaluate, at(0), None).await.unwrap();
    let ids: Vec<_> = written.iter().map(|w| w.queued[0]).collect();
    let (qa, qb) = (one.queue().unwrap(), two.queue().unwrap());
    let (wa, wb, wc) = (WorkerId::new("a"), WorkerId::new("b"), WorkerId::new("c"));
    if !one.history().unwrap().shared() {
        // One process: claims are per handle (the process), oldest first, without a lease.
        assert_eq!(
            qa.claim_for(&wa, at(0), at(30)).await.unwrap().unwrap().id,
            ids[0]
        );
        assert_eq!(
            qa.claim_for(&wa, at(0), at(30)).await.unwrap().unwrap().id,
            ids[1]
        );
        assert!(qa.release_for(ids[0], &wa).await.unwrap());
        assert!(!qa.release_for(ids[0], &wa).await.unwrap());
        assert_eq!(
            qa.claim_for(&wa, at(0), at(30)).await.unwrap().unwrap().id,
            ids[0]
        );
        return;
    }
    // Two workers claiming at once get two entries, oldest first.
    let (x, y) = tokio::join!(
        qa.claim_for(&wa, at(0), at(30)),
        qb.claim_for(&wb, at(0), at(100)),
    );
    let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
    let mut got = vec![x.id, y.id];
    got.sort();
    assert_eq!(got, ids[..2]);
    let (ea, eb) = if x.id == ids[0] {
        (ids[0], ids[1])
    } else {
        (ids[1], ids[0])
    };
    // The third entry, then nothing: every entry is held.
    assert_eq!(
        qa.claim_for(&wa, at(10), at(30)).await.unwrap().unwrap().id,
        ids[2]
    );
    assert_eq!(qb.claim_for(&wb, at(10), at(40)).await.unwrap(), None);
    // `a` renews both its claims; `b` gives its back, which another worker then claims.
    let renewed = one.history().unwrap().renew(&wa, at(60)).await.unwrap();
    let mut mine = vec![ea, ids[2]];
    mine.sort();
    assert_eq!(
        renewed,
        Renewed {
            runs: Vec::new(),
            queued: mine
        }
    );
    assert!(!qb.release_for(ea, &wb).await.unwrap(), "not `b`'s");
    assert!(qb.release_for(eb, &wb).await.unwrap());
    assert_eq!(
        qb.claim_for(&wc, at(20), at(100))
            .await
            .unwrap()
            .unwrap()
            .id,
        eb
    );
    assert_eq!(qb.claim_for(&wb, at(50), at(100)).await.unwrap(), None);
    // Past `a`'s leases its two entries are claimed again, each by one of two workers.
    let (x, y) = tokio::join!(
        qa.claim_for(&wb, at(61), at(200)),
        qb.claim_for(&wc, at(61), at(200)),
    );
    let mut got = vec![x.unwrap().unwrap().id, y.unwrap().unwrap().id];
    got.sort();
    let mut mine = vec![ea, ids[2]];
    mine.sort();
    assert_eq!(got, mine);
    assert_eq!(
        one.history().unwrap().renew(&wa, at(62)).await.unwrap(),
        Renewed::default()
    );
    // An acked entry is gone for everyone.
    assert!(qa.ack(ea).await.unwrap());
    assert!(!qb.release_for(ea, &wb).await.unwrap());
}

/// Two workers take from one budget: together no more than it holds, each told how long to wait.
async fn a_rate_budget_is_shared_by_every_worker<R>(a: &R, b: &R)
where
    R: RateBudget + Clone + Send + Sync + 'static,
{
    let secs = Duration::from_secs;
    // Two tokens a minute: one each, then the wait for the next (one every 30 s).
    assert_eq!(
        a.acquire("calendly", "main", 2, at(0)).await.unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        b.acquire("calendly", "main", 2, at(0)).await.unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        a.acquire("calendly", "main", 2, at(0)).await.unwrap(),
        secs(30)
    );
    assert_eq!(
        b.acquire("calendly", "main", 2, at(20)).await.unwrap(),
        secs(10)
    );
    // Another credential has its own bucket.
    assert_eq!(
        b.acquire("calendly", "other", 2, at(20)).await.unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        b.acquire("calendly", "main", 2, at(30)).await.unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        a.acquire("calendly", "main", 2, at(30)).await.unwrap(),
        secs(30)
    );
    // A 429 seen by one worker holds the other back until its end, then the bucket goes on.
    b.pause_until("calendly", "main", 2, at(100)).await.unwrap();
    b.pause_until("calendly", "main", 2, at(90)).await.unwrap();
    assert_eq!(
        a.acquire("calendly", "main", 2, at(70)).await.unwrap(),
        secs(30)
    );
    assert_eq!(
        a.acquire("calendly", "main", 2, at(100)).await.unwrap(),
        Duration::ZERO
    );
    // Many at once, from both: exactly the budget is handed out.
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let budget = if i % 2 == 0 { a.clone() } else { b.clone() };
        asks.spawn(async move { budget.acquire("webex", "main", 5, at(0)).await });
    }
    let waits: Vec<Duration> = asks
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let granted = waits.iter().filter(|w| w.is_zero()).count();
    assert_eq!(granted, 5, "{waits:?}");
}

fn tokens(refresh: &str, access: &str, expires_at: i64) -> StoredToken {
    StoredToken {
        origin: "login".to_owned(),
        refresh_token: refresh.to_owned(),
        access_token: Some(access.to_owned()),
        expires_at: Some(expires_at),
        refresh_expires_at: None,
        scopes: None,
        last_refresh: None,
        updated_at: "2027-01-15T08:00:00Z".to_owned(),
    }
}

/// A refresh as the http layer does one: lock the credential, use a valid stored access token,
/// else spend the stored refresh token at the vendor (`vendor`: Calendly's single-use tokens,
/// `r1` rotated to `r2`) and save what it returned; the access token it ends with.
async fn refresh(
    store: Arc<dyn CredentialTokens>,
    spent: Arc<std::sync::atomic::AtomicUsize>,
    vendor_called: Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>,
) -> String {
    let locked = store.lock_credential("calendly").await.unwrap();
    let entry = locked.entry().cloned().unwrap();
    if entry.expires_at.unwrap() > 1_800_000_000 {
        return entry.access_token.unwrap();
    }
    spent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        entry.refresh_token, "r1",
        "a spent refresh token was spent again"
    );
    // The vendor answers once the other worker waits for the lock.
    if let Some((called, answer)) = vendor_called {
        called.notify_one();
        answer.notified().await;
    }
    locked
        .save(Some(tokens("r2", "a2", 1_800_003_600)))
        .await
        .unwrap();
    "a2".to_owned()
}

/// Two workers refresh one credential at once: the vendor is called once, and the second uses
/// the rotated tokens. `waiting` resolves once the second worker waits for the lock.
async fn a_single_use_refresh_token_is_spent_once<W>(
    a: Arc<dyn CredentialTokens>,
    b: Arc<dyn CredentialTokens>,
    waiting: impl Fn() -> W,
) where
    W: std::future::Future<Output = ()>,
{
    assert_eq!(a.entry("calendly").await.unwrap(), None);
    let seed = a.lock_credential("calendly").await.unwrap();
    assert!(seed.entry().is_none());
    seed.save(Some(tokens("r1", "a1", 0))).await.unwrap();
    // A lock dropped without saving changes nothing and lets the next one in.
    let dropped = b.lock_credential("calendly").await.unwrap();
    assert_eq!(dropped.entry(), Some(&tokens("r1", "a1", 0)));
    drop(dropped);

    let spent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (called, answer) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let first = tokio::spawn(refresh(
        a.clone(),
        spent.clone(),
        Some((called.clone(), answer.clone())),
    ));
    called.notified().await;
    let second = tokio::spawn(refresh(b.clone(), spent.clone(), None));
    waiting().await;
    answer.notify_one();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.as_str(), second.as_str()), ("a2", "a2"));
    assert_eq!(spent.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        b.entry("calendly").await.unwrap(),
        Some(tokens("r2", "a2", 1_800_003_600))
    );
    // Removing the entry is saving none.
    let locked = b.lock_credential("calendly").await.unwrap();
    locked.save(None).await.unwrap();
    assert_eq!(a.entry("calendly").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_serves_several_handles() {
    workers(|dir| Store::open(dir).unwrap(), |_, one| one.clone()).await;
    let budget = blockyard::http::LocalBudget::default();
    a_rate_budget_is_shared_by_every_worker(&budget, &budget.clone()).await;
    // The data dir's token store: two handles (two processes) share its file lock.
    let dir = tempfile::tempdir().unwrap();
    a_single_use_refresh_token_is_spent_once(
        Arc::new(FileTokenStore::in_dir(dir.path())),
        Arc::new(FileTokenStore::in_dir(dir.path())),
        || async {},
    )
    .await;
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
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        PgBudget::new(&open(dir.path())),
        PgBudget::new(&open(dir.path())),
    );
    a_rate_budget_is_shared_by_every_worker(&a, &b).await;
    let (one, two) = (open(dir.path()), open(dir.path()));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let client = Arc::new(client);
    // The second worker waits on the credential's lock (seen in `pg_locks`).
    let waiting = || {
        let client = client.clone();
        async move {
            loop {
                let row = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                             AND NOT granted
                             AND classid::bigint = (hashtextextended($1, 0) >> 32) & 4294967295
                             AND objid::bigint = hashtextextended($1, 0) & 4294967295)",
                        &[&"tokens/calendly"],
                    )
                    .await
                    .unwrap();
                if row.get::<_, bool>(0) {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
    };
    a_single_use_refresh_token_is_spent_once(
        Arc::new(PgTokenStore::new(&one)),
        Arc::new(PgTokenStore::new(&two)),
        waiting,
    )
    .await;
    // A row that does not decode is named, with the place of the fault and nothing of its text.
    let name = schema_for(dir.path());
    client
        .batch_execute(&format!(
            r#"INSERT INTO {name}.tokens (credential, token)
               VALUES ('webex', '{{"refresh_token": 5, "origin": "secret-looking-value"}}')"#
        ))
        .await
        .unwrap();
    let store = PgTokenStore::new(&one);
    let redacted = one.url().to_owned();
    let corrupt = format!("the tokens of `webex` in the PostgreSQL store at `{redacted}` are not valid (line 1, column 19); run `blockyard auth login webex` to store new ones");
    assert_eq!(store.entry("webex").await.unwrap_err().to_string(), corrupt);
    assert_eq!(
        store
            .lock_credential("webex")
            .await
            .unwrap_err()
            .to_string(),
        corrupt
    );
    // A store whose schema lacks the table says so, and what to do.
    client
        .batch_execute(&format!("DROP TABLE {name}.tokens"))
        .await
        .unwrap();
    assert_eq!(
        store.lock_credential("webex").await.unwrap_err().to_string(),
        format!("cannot lock the tokens of `webex` in the PostgreSQL store at `{redacted}`: db error: ERROR: relation \"tokens\" does not exist; check that the database is reachable and its schema migrated (`blockyard store migrate`)")
    );
}

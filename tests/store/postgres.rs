//! The store on PostgreSQL: the behaviour suite ([`super::suite::suite`]) on a real server, each
//! case in a fresh schema, and what the backend itself promises (migrations, a redacted URL).
//!
//! They need a server: `BLOCKYARD_TEST_POSTGRES=postgres://…` (`scripts/pg test` starts a
//! throwaway cluster and sets it; `.ci/run` runs every test inside one). Without it each test
//! says on stderr that it was skipped and how to run it, and passes.

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use blockyard::store::postgres::{redact, schema, Postgres};
use blockyard::store::StoreError;

use super::suite::suite;

/// The test server's URL, or `None` after saying (past the test harness's capture) that `test`
/// was skipped and how to run it.
pub(super) fn server(test: &str) -> Option<String> {
    match std::env::var("BLOCKYARD_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let line = format!("skipped {test}: no PostgreSQL (BLOCKYARD_TEST_POSTGRES is not set); run `scripts/pg test` to run it on a throwaway cluster\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

/// A schema name for one test directory (its path hashed: FNV-1a 64).
pub(super) fn schema_for(dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("blockyard_test_{hash:016x}")
}

/// Drops the schemas a test made, when it ends (passed or not).
pub(super) struct Schemas {
    pub(super) url: String,
    pub(super) names: Mutex<Vec<String>>,
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap());
        if names.is_empty() {
            return;
        }
        let url = self.url.clone();
        // A thread of its own: the test's runtime may be gone or busy.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                for name in names {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_promise_of_the_store() {
    let Some(url) = server("store::postgres::postgres_keeps_every_promise_of_the_store") else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    suite(|dir| {
        // The suite opens a backend synchronously (sled opens so); this one connects and
        // migrates on the test's runtime.
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
    })
    .await;
}

/// A URL with its schema set (the tests' own, dropped at the end).
async fn open_fresh(url: &str, schemas: &Schemas) -> Postgres {
    let dir = tempfile::tempdir().unwrap();
    let name = schema_for(dir.path());
    schemas.names.lock().unwrap().push(name.clone());
    Postgres::open_in_schema(url, &name).await.unwrap()
}

/// A run retention deletes leaves no row in any table keyed by run (the subject index included,
/// which no trait method reads without its run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_run_leaves_no_row_behind() {
    use blockyard::store::api::{
        ApprovalStore, Backend, DurableTimers, WriteHistory, WriteReminders, WriteRetryMarks,
    };
    use blockyard::store::history::{RunStatus, StepRecord, StepStatus};
    let Some(url) = server("store::postgres::a_deleted_run_leaves_no_row_behind") else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let pg = open_fresh(&url, &schemas).await;
    let history = pg.history().unwrap();
    let mut run = super::suite::run_record(RunStatus::Running, Some("Jane@Acme.com"));
    history.put_run(&run).await.unwrap();
    let step = StepRecord::new(
        run.id,
        0,
        "me",
        "api",
        StepStatus::Succeeded,
        super::suite::at(0),
    );
    history.put_steps(&[&step]).await.unwrap();
    run.status = RunStatus::Succeeded;
    run.finished_at = Some(super::suite::at(1));
    history.put_run(&run).await.unwrap();
    let timers = pg.timers().unwrap();
    timers.set(run.id, super::suite::at(100)).await.unwrap();
    timers.watch(run.id, "people/jane@acme.com").await.unwrap();
    let decision = blockyard::store::approvals::Decision {
        approved: false,
        at: super::suite::at(1),
        by: None,
        comment: None,
    };
    pg.approvals()
        .unwrap()
        .decide(run.id, "me", decision)
        .await
        .unwrap();
    let reminder = blockyard::store::reminders::Reminder {
        since: super::suite::at(0),
        blocks: vec!["me".to_owned()],
        due: super::suite::at(60),
        sent: None,
    };
    pg.reminders()
        .unwrap()
        .schedule(run.id, &reminder)
        .await
        .unwrap();
    pg.retries()
        .unwrap()
        .claim(&run.id.to_string(), "carol", super::suite::at(2))
        .await
        .unwrap();

    let name = schemas.names.lock().unwrap()[0].clone();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables = [
        ("runs", "id"),
        ("steps", "run_id"),
        ("run_subjects", "run_id"),
        ("timers", "run_id"),
        ("timer_watches", "run_id"),
        ("approvals", "run_id"),
        ("approval_reminders", "run_id"),
        ("retry_marks", "run_id"),
    ];
    let rows = |id: String| {
        let client = &client;
        let name = &name;
        async move {
            let mut counts = Vec::new();
            for (table, column) in tables {
                let n: i64 = client
                    .query_one(
                        &format!("SELECT count(*) FROM {name}.{table} WHERE {column} = $1"),
                        &[&id],
                    )
                    .await
                    .unwrap()
                    .get(0);
                counts.push((table, n));
            }
            counts
        }
    };
    assert!(
        rows(run.id.to_string()).await.iter().all(|(_, n)| *n == 1),
        "{:?}",
        rows(run.id.to_string()).await
    );
    let report = history
        .delete_finished_before(super::suite::at(10), None, 10)
        .await
        .unwrap();
    assert_eq!((report.runs, report.steps, report.next), (1, 1, None));
    assert_eq!(
        rows(run.id.to_string()).await,
        tables.map(|(table, _)| (table, 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_an_older_schema_is_migrated_and_a_newer_one_refused() {
    let Some(url) = server("store::postgres::migrations_apply_once_an_older_schema_is_migrated_and_a_newer_one_refused")
    else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let pg = open_fresh(&url, &schemas).await;
    assert_eq!(schema::version(&pg).await.unwrap(), schema::VERSION);
    let again = schema::migrate(&pg).await.unwrap();
    assert_eq!((again.from, again.to), (schema::VERSION, schema::VERSION));

    let name = schemas.names.lock().unwrap()[0].clone();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // A database left at version 1 (before the token table, the wait watches, the approval
    // reminders and the workers' leases and rate buckets) is brought to the current one.
    client
        .batch_execute(&format!(
            "DROP TABLE {name}.tokens, {name}.timer_watches, {name}.approval_reminders, {name}.rate_buckets; DROP INDEX {name}.queue_by_claimer; ALTER TABLE {name}.runs DROP COLUMN owner, DROP COLUMN lease_until_ns; DELETE FROM {name}.schema_version WHERE version > 1"
        ))
        .await
        .unwrap();
    let migrated = schema::migrate(&pg).await.unwrap();
    assert_eq!((migrated.from, migrated.to), (1, schema::VERSION));
    client
        .batch_execute(&format!("SELECT count(*) FROM {name}.tokens"))
        .await
        .unwrap();

    client
        .batch_execute(&format!(
            "INSERT INTO {name}.schema_version (version) VALUES (99)"
        ))
        .await
        .unwrap();
    // A later release migrated this database: this one refuses it, naming no password.
    let err = Postgres::open_in_schema(&url, &name).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the PostgreSQL database at `{}` has schema version 99, newer than this blockyard knows (version {}); run the blockyard release that migrated it",
            redact(&url),
            schema::VERSION
        )
    );
    assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_not_in_the_error() {
    let Some(url) = server("store::postgres::a_refused_password_is_not_in_the_error") else {
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let mut wrong = parsed.clone();
    wrong.set_password(Some("wrong-s3cret-pw")).unwrap();
    let err = Postgres::open(wrong.as_str())
        .await
        .unwrap_err()
        .to_string();
    let shown = format!(
        "postgres://{}:***@{}:{}{}",
        parsed.username(),
        parsed.host_str().unwrap(),
        parsed.port().unwrap(),
        parsed.path()
    );
    assert_eq!(
        err,
        format!("the PostgreSQL store at `{shown}` failed: db error: FATAL: password authentication failed for user \"{}\"", parsed.username())
    );
    assert!(!err.contains("wrong-s3cret-pw"), "{err}");
    assert!(!err.contains(parsed.password().unwrap()), "{err}");
}

/// Needs no server: the URL is refused before any connection.
#[test]
fn a_url_blockyard_cannot_use_is_refused_without_its_password() {
    let err = Postgres::connect("mysql://root:hunter2@db/app", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the PostgreSQL URL `mysql://root:***@db/app` is not usable: it does not start with `postgres://` (or `postgresql://`); write it as `postgres://USER:PASSWORD@HOST:PORT/DATABASE`"
    );
    let err = Postgres::connect("postgres://u:hunter2@db/app?sslmode=require", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the PostgreSQL URL `postgres://u:***@db/app?sslmode=require` is not usable: `sslmode=require` asks for TLS, which blockyard's PostgreSQL store does not speak yet; connect over loopback, a private network or a tunnel with `sslmode=disable`; write it as `postgres://USER:PASSWORD@HOST:PORT/DATABASE`"
    );
    let err = Postgres::connect("postgres://u:hunter2@db:notaport/app", None).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Needs no server: `serve` runs on the database `store: postgres` names (one it cannot reach is
/// an error), and the commands that open a local store refuse it; neither serves from the sled
/// data dir behind the user's back.
#[test]
fn store_postgres_is_never_answered_from_a_sled_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        "data_dir: data\nstore:\n  postgres:\n    url: ${PG_URL}\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("workflows")).unwrap();
    let failed = |args: &[&str], message: &str| {
        let out = crate::support::command_in(dir.path(), args)
            .env("PG_URL", "postgres://u:hunter2@127.0.0.1:1/db")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_eq!(crate::support::stderr(&out), message);
    };
    // `serve` runs on the database: one it cannot reach is an error naming it (password
    // redacted), not a start on the data dir.
    failed(
        &["serve", "--listen", "127.0.0.1:0"],
        "error: the PostgreSQL store at `postgres://u:***@127.0.0.1:1/db` failed: error connecting to server: Connection refused (os error 111)\n",
    );
    // The other commands go through a `serve` on it; with none, they refuse.
    failed(&["history", "list"], "error: `blockyard.yaml` sets `store: postgres`, and this command runs on PostgreSQL only through `blockyard serve`: start `serve` (then this command finds it through the data dir `data`), or give `--server URL`; it will not fall back to the sled data dir (remove `store:` to use that instead)\n");
    // Nothing was made in the data dir: no sled store behind the user's back.
    assert!(!dir.path().join("data").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_applies_the_schema_once_and_prints_its_version() {
    let Some(url) =
        server("store::postgres::store_migrate_applies_the_schema_once_and_prints_its_version")
    else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let name = schema_for(dir.path());
    schemas.names.lock().unwrap().push(name.clone());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    // The URL puts the tables in the test's schema.
    let in_schema = format!("{url}?options=-c%20search_path%3D{name}");
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        "store:\n  postgres:\n    url: ${PG_URL}\n",
    )
    .unwrap();
    let migrate = || {
        let out = crate::support::command_in(dir.path(), &["store", "migrate"])
            .env("PG_URL", &in_schema)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let printed = crate::support::stdout(&out);
        assert!(
            !printed.contains(url::Url::parse(&url).unwrap().password().unwrap()),
            "{printed}"
        );
        printed
    };
    let shown = redact(&in_schema);
    assert_eq!(
        migrate(),
        format!(
            "migrated the PostgreSQL store at `{shown}` from schema version 0 to {}\n",
            schema::VERSION
        )
    );
    assert_eq!(
        migrate(),
        format!(
            "the PostgreSQL store at `{shown}` is at schema version {} already\n",
            schema::VERSION
        )
    );
}

/// `blockyard store copy` (the real binary) copies every part of a sled data dir, and a second
/// copy skips what is there, copying nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_copies_a_sled_data_dir_and_a_second_copy_skips_what_is_there() {
    use blockyard::records::Collection;
    use blockyard::store::api::*;
    use blockyard::store::history::RunFilter;
    use blockyard::store::Store;

    use super::suite::{at, person};

    let Some(url) = server(
        "store::postgres::store_copy_copies_a_sled_data_dir_and_a_second_copy_skips_what_is_there",
    ) else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // A sled data dir with something in every part.
    let sled = Store::open(&data).unwrap();
    let (run, queued, hash, decision, cancelled) = fill(&sled).await;
    // A `wait` block's watch and an approval reminder (one sent already).
    sled.timers()
        .unwrap()
        .watch(run.id, "people/jane@acme.com")
        .unwrap();
    let reminder = blockyard::store::reminders::Reminder {
        since: at(10),
        blocks: vec!["remove".to_owned()],
        due: at(70),
        sent: Some(at(75)),
    };
    assert!(sled
        .reminders()
        .unwrap()
        .schedule(run.id, &reminder)
        .unwrap());
    drop(sled);
    std::fs::write(
        data.join("tokens.json"),
        r#"{"credentials": {"calendly": {"origin": "login", "refresh_token": "r-1", "updated_at": "2026-11-30T10:00:00Z"}}}"#,
    )
    .unwrap();

    let name = schema_for(dir.path());
    schemas.names.lock().unwrap().push(name.clone());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    let in_schema = format!("{url}?options=-c%20search_path%3D{name}");
    let copy = || {
        let out = crate::support::command_in(
            dir.path(),
            &["store", "copy", "--to", &in_schema, "--data-dir", "data"],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        crate::support::stdout(&out)
    };
    let first = copy();
    let shown = redact(&in_schema);
    assert_eq!(
        first,
        format!(
            "snapshots: 1 copied, 0 there already\n\
             runs: 1 copied, 0 there already\n\
             steps: 2 copied, 0 there already\n\
             subject index: 1 copied, 0 there already\n\
             timers: 1 copied, 0 there already\n\
             timer watches: 1 copied, 0 there already\n\
             records: 1 copied, 0 there already\n\
             in-flight entries: 1 copied, 0 there already\n\
             queue: 1 copied, 0 there already\n\
             traces: 1 copied, 0 there already\n\
             trace counters: 1 copied, 0 there already\n\
             trace links: 1 copied, 0 there already\n\
             schedule ticks: 0 copied, 0 there already\n\
             approvals: 1 copied, 0 there already\n\
             cancel requests: 1 copied, 0 there already\n\
             guard counts: 1 copied, 0 there already\n\
             guard releases: 1 copied, 0 there already\n\
             pauses: 1 copied, 0 there already\n\
             retry marks: 1 copied, 0 there already\n\
             approval reminders: 1 copied, 0 there already\n\
             tokens: 1 copied, 0 there already\n\
             copied `data` into the PostgreSQL store at `{shown}`\n"
        )
    );
    let again = copy();
    assert!(
        again.contains("runs: 0 copied, 1 there already\n"),
        "{again}"
    );
    assert!(!again.lines().any(|l| l.contains(": 1 copied")), "{again}");

    // What the PostgreSQL store reads back is what sled held.
    let pg = Postgres::open_in_schema(&url, &name).await.unwrap();
    let jane = person("jane@acme.com");
    let fields = pg.records().unwrap().get(&jane).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_string(&fields).unwrap(),
        r#"{"status":"terminated","b":1,"a":2}"#,
        "the fields keep their order"
    );
    assert_eq!(
        pg.records()
            .unwrap()
            .list(Collection::People)
            .await
            .unwrap()
            .len(),
        1
    );
    let history = pg.history().unwrap();
    assert_eq!(history.run(run.id).await.unwrap(), Some(run.clone()));
    assert_eq!(history.steps(run.id).await.unwrap().len(), 2);
    assert!(history.snapshot(&hash).await.unwrap().is_some());
    let filter = RunFilter {
        subject: Some("JANE@acme.com".to_owned()),
        ..RunFilter::default()
    };
    assert_eq!(history.list(&filter).await.unwrap().len(), 1);
    let due = pg.timers().unwrap().due(at(100)).await.unwrap();
    assert_eq!(
        due.iter().map(|t| (t.run, t.at)).collect::<Vec<_>>(),
        [(run.id, at(90))]
    );
    assert_eq!(
        pg.timers()
            .unwrap()
            .watchers("people/jane@acme.com")
            .await
            .unwrap(),
        [run.id]
    );
    assert_eq!(
        pg.reminders().unwrap().reminder(run.id).await.unwrap(),
        Some(reminder)
    );
    assert_eq!(pg.queue().unwrap().pending().await.unwrap()[0].id, queued);
    let trace = pg.records().unwrap().trace(&jane).await.unwrap();
    assert_eq!(trace[0].considered[0].queued, Some(queued));
    assert!(pg
        .records()
        .unwrap()
        .link_run(queued, "RUN9")
        .await
        .unwrap());
    assert_eq!(
        pg.approvals()
            .unwrap()
            .decision(run.id, "delete")
            .await
            .unwrap(),
        Some(decision)
    );
    assert!(pg
        .cancels()
        .unwrap()
        .requested()
        .await
        .unwrap()
        .contains(&cancelled));
    let guard = pg.guard().unwrap();
    assert_eq!(guard.count("offboard", at(20), HOUR).await.unwrap(), 1);
    assert!(guard.is_released(cancelled).await.unwrap());
    assert_eq!(
        pg.pauses()
            .unwrap()
            .paused("invite")
            .await
            .unwrap()
            .unwrap()
            .by,
        "alice"
    );
    assert_eq!(
        pg.retries()
            .unwrap()
            .mark("FAILED1")
            .await
            .unwrap()
            .unwrap()
            .by,
        "bob"
    );
    let token: String = client
        .query_one(
            &format!("SELECT token::text FROM {name}.tokens WHERE credential = 'calendly'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&token).unwrap()["refresh_token"],
        "r-1"
    );
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Something in every part of the store `b`, through the traits.
async fn fill<B: blockyard::store::api::Backend>(
    b: &B,
) -> (
    blockyard::store::history::RunRecord,
    blockyard::store::queue::QueueId,
    String,
    blockyard::store::approvals::Decision,
    blockyard::store::history::RunId,
) {
    use std::sync::Arc;

    use blockyard::store::api::*;
    use blockyard::store::approvals::Decision;
    use blockyard::store::history::{RunId, RunStatus, StepRecord, StepStatus};
    use serde_json::json;

    use super::suite::{at, run_record, upsert, Offboard};

    let evaluate: Arc<dyn Evaluate + Send + Sync> = Arc::new(Offboard);
    let records = b.records().unwrap();
    let written = records
        .write(
            vec![upsert(
                "jane@acme.com",
                json!({"status": "terminated", "b": 1, "a": 2}),
            )],
            evaluate.clone(),
            at(0),
            None,
        )
        .await
        .unwrap();
    let queued = written[0].queued[0];
    let history = b.history().unwrap();
    let hash = history.put_snapshot("name: offboard\n").await.unwrap();
    let mut run = run_record(RunStatus::Running, Some("jane@acme.com"));
    history.put_run(&run).await.unwrap();
    run.status = RunStatus::Retrying;
    run.wake_at = Some(at(90));
    history.put_run(&run).await.unwrap();
    let steps: Vec<StepRecord> = (0..2)
        .map(|seq| StepRecord::new(run.id, seq, "b", "api", StepStatus::Succeeded, at(1)))
        .collect();
    history.put_steps(&[&steps[0], &steps[1]]).await.unwrap();
    let decision = Decision {
        approved: false,
        at: at(5),
        by: Some("dana".to_owned()),
        comment: None,
    };
    b.approvals()
        .unwrap()
        .decide(run.id, "delete", decision.clone())
        .await
        .unwrap();
    let cancelled = RunId::new();
    b.cancels().unwrap().request(cancelled).await.unwrap();
    let guard = b.guard().unwrap();
    guard
        .admit("offboard", run.id, "delete", at(10), HOUR, Some(5))
        .await
        .unwrap();
    guard.release(cancelled, at(11)).await.unwrap();
    b.pauses()
        .unwrap()
        .pause("invite", "alice", at(12))
        .await
        .unwrap();
    b.retries()
        .unwrap()
        .claim("FAILED1", "bob", at(13))
        .await
        .unwrap();
    b.flush().await.unwrap();
    (run, queued, hash, decision, cancelled)
}

/// Workers on one database: queue handles claiming at once never get the same entry, and the
/// guard admits no more than its limit across handles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_on_one_database_never_claim_one_entry_twice_nor_pass_the_guard_together() {
    use std::collections::HashSet;
    use std::sync::Arc;

    use blockyard::store::api::*;
    use blockyard::store::guard::Admission;
    use blockyard::store::history::RunId;

    use super::suite::{at, upsert, Offboard};

    let Some(url) = server(
        "store::postgres::handles_on_one_database_never_claim_one_entry_twice_nor_pass_the_guard_together",
    ) else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let pg = open_fresh(&url, &schemas).await;
    let evaluate: Arc<dyn Evaluate + Send + Sync> = Arc::new(Offboard);
    let writes = (0..40)
        .map(|i| {
            upsert(
                &format!("p{i}@x.io"),
                serde_json::json!({"status": "terminated"}),
            )
        })
        .collect();
    let written = pg
        .records()
        .unwrap()
        .write(writes, evaluate, at(0), None)
        .await
        .unwrap();
    assert_eq!(written.iter().map(|w| w.queued.len()).sum::<usize>(), 40);

    let workers: Vec<_> = (0..4)
        .map(|_| {
            let queue = pg.queue().unwrap();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(entry) = queue.claim().await.unwrap() {
                    mine.push(entry.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for worker in workers {
        claimed.extend(worker.await.unwrap());
    }
    assert_eq!(claimed.len(), 40, "every entry claimed");
    assert_eq!(
        claimed.iter().collect::<HashSet<_>>().len(),
        40,
        "none twice"
    );

    let admitted: Vec<_> = (0..8)
        .map(|_| {
            let guard = pg.guard().unwrap();
            tokio::spawn(async move {
                guard
                    .admit("offboard", RunId::new(), "delete", at(0), HOUR, Some(3))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut passed = 0;
    for admission in admitted {
        if admission.await.unwrap() == Admission::Admitted {
            passed += 1;
        }
    }
    assert_eq!(passed, 3, "the limit holds across handles");
}

/// The closed enum the engine holds keeps the same promises, dispatching to its PostgreSQL arm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_enum_keeps_every_promise_on_postgres() {
    let Some(url) = server("store::postgres::the_store_enum_keeps_every_promise_on_postgres")
    else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    suite(|dir| {
        let name = schema_for(dir);
        let pg = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(Postgres::open_in_schema(&url, &name))
        })
        .unwrap();
        let mut names = schemas.names.lock().unwrap();
        if !names.contains(&name) {
            names.push(name);
        }
        blockyard::store::any::AnyStore::from(pg)
    })
    .await;
}

/// `greet`: a record created starts it; it reads Calendly and saves onto the record.
const GREET: &str = "name: greet\nblocks:\n  begin: {type: begin, records: people, on: [created], next: me}\n  me: {type: api, preset: calendly.current_user, credential: calendly, save: {calendly_user: \"{{response.resource.uri}}\"}, next: end}\n  end: {type: end}\n";

/// The real `blockyard serve` with `store: postgres` runs on the database: a manual begin → api →
/// end run against the sandbox, and a run a record write triggers (its save written back onto
/// the record), all kept in PostgreSQL and none in a sled data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_runs_a_manual_run_and_one_a_record_write_triggers() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    let Some(url) = server(
        "store::postgres::serve_on_postgres_runs_a_manual_run_and_one_a_record_write_triggers",
    ) else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let env = crate::support::Env::seeded(2).await;
    let name = schema_for(env.path());
    schemas.names.lock().unwrap().push(name.clone());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    let in_schema = format!("{url}?options=-c%20search_path%3D{name}");
    let config = std::fs::read_to_string(env.path().join("blockyard.yaml")).unwrap();
    env.write(
        "blockyard.yaml",
        &format!("{config}store:\n  postgres:\n    url: ${{PG_URL}}\n"),
    );
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    env.write("workflows/whoami.yaml", crate::support::WHOAMI);
    env.write("workflows/greet.yaml", GREET);

    let token = crate::support::API_TOKEN;
    let mut child = env
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .env("PG_URL", &in_schema)
        .env("BLOCKYARD_TOKEN", token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let base = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("serve stopped: {said:?}"))
            .unwrap();
        said.push(line.clone());
        if let Some(url) = line.strip_prefix("serving 2 workflows from `workflows` on ") {
            break format!("{url}/api");
        }
    };
    // The URL it names has its password redacted.
    assert!(
        said.iter()
            .any(|l| l.starts_with("store: PostgreSQL at `postgres://")),
        "{said:?}"
    );
    assert!(
        !said.iter().any(|l| in_schema.contains(l.as_str())),
        "{said:?}"
    );
    let http = reqwest::Client::new();
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.bearer_auth(token).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };

    // A manual run, begin → api → end.
    let (status, run) = send(
        http.post(format!("{base}/workflows/whoami/runs"))
            .json(&json!({"wait": true})),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        crate::support::blocks(&run),
        [
            ("begin", "succeeded"),
            ("me", "succeeded"),
            ("end", "succeeded")
        ]
    );

    // A record write triggers `greet`, which saves onto the record.
    let (status, written) = send(
        http.post(format!("{base}/records/people"))
            .json(&json!({"email": "ada@example.com", "name": "Ada"})),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["queued"], 1, "{written}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let runs = loop {
        let (status, runs) = send(http.get(format!("{base}/runs?workflow=greet"))).await;
        assert_eq!(status, 200, "{runs}");
        if runs[0]["status"] == "succeeded" {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "the triggered run never finished: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["trigger"]["kind"], "record", "{runs}");
    let (status, record) = send(http.get(format!("{base}/records/people/ada@example.com"))).await;
    assert_eq!(status, 200, "{record}");
    assert!(
        record["calendly_user"]
            .as_str()
            .is_some_and(|u| u.starts_with("http")),
        "{record}"
    );

    // The CLI reaches the database through the service (its `serve.json` in the data dir).
    let listed = env
        .command(&["history", "list", "--json"])
        .env("PG_URL", &in_schema)
        .env("BLOCKYARD_TOKEN", token)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // Kept in PostgreSQL, not in a sled data dir.
    let kept: i64 = client
        .query_one(&format!("SELECT count(*) FROM {name}.runs"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 2);
    assert!(!env.data_dir().join("db").exists());

    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let exit = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(exit.success(), "{exit:?} {said:?} {rest:?}");
}

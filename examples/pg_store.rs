//! The store's own durable write throughput on PostgreSQL and sled, through the seam's traits:
//! each run is `put_run` (running), `put_steps` (3 steps), `put_run` (succeeded), `durable`,
//! one at a time and 64 in flight. BENCHMARKS.md ("The PostgreSQL store") has the figures.
//!
//!   scripts/pg run cargo run --release --example pg_store -- [RUNS]
//!
//! PostgreSQL is `BLOCKYARD_TEST_POSTGRES` (scripts/pg sets it), in a schema of its own that is
//! dropped at the end; sled is a data dir in a temp dir.

use std::sync::Arc;
use std::time::Instant;

use blockyard::store::api::{Backend, WriteHistory};
use blockyard::store::history::{
    RunId, RunMode, RunRecord, RunStatus, RunTrigger, StepRecord, StepStatus,
};
use blockyard::store::postgres::Postgres;
use blockyard::store::Store;
use chrono::Utc;
use serde_json::Map;

fn run_record() -> RunRecord {
    let id = RunId::new();
    RunRecord {
        id,
        workflow: "offboard".to_owned(),
        file: "offboard.yaml".to_owned(),
        snapshot: "0".repeat(16),
        trigger: RunTrigger::manual(),
        subject: None,
        vars: Map::new(),
        status: RunStatus::Running,
        mode: RunMode::Live,
        created_at: id.created_at(),
        started_at: Some(Utc::now()),
        finished_at: None,
        replay_of: None,
        from_block: None,
        error: None,
        wake_at: None,
        pruned: false,
    }
}

async fn one_run<H: WriteHistory>(history: &H) {
    let mut run = run_record();
    history.put_run(&run).await.unwrap();
    let steps: Vec<StepRecord> = (0..3)
        .map(|seq| StepRecord::new(run.id, seq, "b", "api", StepStatus::Succeeded, Utc::now()))
        .collect();
    history
        .put_steps(&steps.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    run.status = RunStatus::Succeeded;
    run.finished_at = Some(Utc::now());
    history.put_run(&run).await.unwrap();
    history.durable().await.unwrap();
}

/// Runs per second for `runs` runs, `in_flight` at a time.
async fn measure<B: Backend + 'static>(backend: Arc<B>, runs: usize, in_flight: usize) -> f64
where
    B::History: 'static,
{
    let history = Arc::new(backend.history().unwrap());
    let started = Instant::now();
    let per_task = runs / in_flight;
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let history = history.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    one_run(&*history).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per_task * in_flight) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let sled = Arc::new(Store::open(dir.path()).unwrap());
    for in_flight in [1, 64] {
        let rate = measure(sled.clone(), runs, in_flight).await;
        println!("sled        {in_flight:>3} in flight: {rate:>8.0} runs/s");
    }
    let Ok(url) = std::env::var("BLOCKYARD_TEST_POSTGRES") else {
        println!("postgres    skipped: BLOCKYARD_TEST_POSTGRES is not set (run it under `scripts/pg run`)");
        return;
    };
    let schema = format!("bench_{}", std::process::id());
    let pg = Arc::new(Postgres::open_in_schema(&url, &schema).await.unwrap());
    for in_flight in [1, 64] {
        let rate = measure(pg.clone(), runs, in_flight).await;
        println!("postgres    {in_flight:>3} in flight: {rate:>8.0} runs/s");
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

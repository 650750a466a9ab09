//! How fast the web console's runs page answers over a large history.
//!
//! Run with `cargo run --release --example console [RUNS]` (100,000 by default). It writes RUNS
//! runs straight into a fresh store in a temp dir (ten workflows `wf-0`..`wf-9` taking turns,
//! 10,000 people with RUNS / 10,000 runs each, every status, a few runs of a rare workflow
//! `rare` among the oldest), flushes, starts a `Service` on that data dir with the console open
//! (no token: loopback), and times `GET /runs` over HTTP on loopback, the whole answer read:
//! the newest page unfiltered, filtered by a workflow, by a person (the subject index), by
//! outcome, and by the rare workflow (a scan of the whole history: the worst case). Each is
//! requested 5 times to warm up, then 40 times; it prints the median, the 95th percentile and the
//! slowest.

use std::time::{Duration, Instant};

use blockyard::service::{Service, ServiceConfig};
use blockyard::store::history::{
    History, RunId, RunMode, RunRecord, RunStatus, RunTrigger, Subject, TriggerKind,
};
use blockyard::store::Store;
use chrono::Utc;
use serde_json::json;

/// The allocator the `blockyard` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKFLOW: &str = "name: NAME\nblocks:\n  begin:\n    type: begin\n    next: me\n  me:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    next: end\n  end:\n    type: end\n";

fn fill(history: &History, runs: usize) {
    let start = Utc::now() - chrono::Duration::days(30);
    let people = 10_000;
    for i in 0..runs {
        let created = start + chrono::Duration::milliseconds(i as i64 * 20);
        let id: RunId = ulid::Ulid::from_datetime(created.into())
            .to_string()
            .parse()
            .unwrap();
        // The rare workflow: 20 runs among the oldest 1,000.
        let workflow = if i < 1_000 && i % 50 == 0 {
            "rare".to_owned()
        } else {
            format!("wf-{}", i % 10)
        };
        let email = format!("person{}@acme.com", (i * 7919) % people);
        let status = RunStatus::ALL[(i / 3) % RunStatus::ALL.len()];
        let run = RunRecord {
            id,
            workflow,
            file: "workflows/wf.yaml".to_owned(),
            snapshot: "0".repeat(16),
            trigger: RunTrigger {
                kind: if i % 4 == 0 {
                    TriggerKind::Schedule
                } else {
                    TriggerKind::Record
                },
                detail: Some(format!("people/{email} updated")),
            },
            subject: Some(Subject {
                collection: "people".to_owned(),
                key: email.clone(),
                record: json!({"email": email, "name": "A Person", "status": "active", "department": "IT"}),
            }),
            vars: Default::default(),
            status,
            mode: RunMode::Live,
            created_at: created,
            started_at: Some(created),
            finished_at: status
                .is_finished()
                .then(|| created + chrono::Duration::milliseconds(900)),
            replay_of: None,
            from_block: None,
            error: (status == RunStatus::Failed)
                .then(|| "block `me` failed: Calendly answered 500".to_owned()),
            wake_at: None,
            pruned: false,
        };
        // First written running (as the engine does: it indexes the subject), then finished.
        history
            .put_run(&RunRecord {
                status: RunStatus::Running,
                ..run.clone()
            })
            .unwrap();
        history.put_run(&run).unwrap();
    }
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("RUNS is a number"))
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let workflows = dir.path().join("workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        for i in 0..10 {
            let name = format!("wf-{i}");
            std::fs::write(
                workflows.join(format!("{name}.yaml")),
                WORKFLOW.replace("NAME", &name),
            )
            .unwrap();
        }
        let t0 = Instant::now();
        {
            let store = Store::open(&data).unwrap();
            let history = History::open(&store).unwrap();
            fill(&history, runs);
            store.flush().await.unwrap();
        }
        println!("wrote {runs} runs in {:.1?}", t0.elapsed());
        let service = Service::start(ServiceConfig::new(
            workflows,
            data,
            "127.0.0.1:0".parse().unwrap(),
        ))
        .await
        .unwrap();
        let base = format!("http://{}", service.addr());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        // The open console gives a session (its CSRF token) on the first page.
        let first = client.get(format!("{base}/runs")).send().await.unwrap();
        let cookie = first
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        println!();
        println!("| `GET` | rows | median | p95 | slowest |");
        println!("|---|---|---|---|---|");
        for path in [
            "/runs",
            "/runs?workflow=wf-3",
            "/runs?subject=person42@acme.com",
            "/runs?status=completed_with_failures",
            "/runs?workflow=wf-3&subject=person42@acme.com",
            "/runs?workflow=rare",
        ] {
            let mut times: Vec<Duration> = Vec::new();
            let mut rows = 0;
            for i in 0..45 {
                let t = Instant::now();
                let response = client
                    .get(format!("{base}{path}"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{path}");
                let body = response.text().await.unwrap();
                let took = t.elapsed();
                rows = body.matches("<tr class=\"run\"").count();
                if i >= 5 {
                    times.push(took);
                }
            }
            times.sort();
            let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
            println!(
                "| `{path}` | {rows} | {:.1?} | {:.1?} | {:.1?} |",
                times[times.len() / 2],
                p95,
                times[times.len() - 1]
            );
        }
        service.shutdown().await.unwrap();
    });
}

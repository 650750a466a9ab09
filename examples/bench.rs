//! Engine throughput, per-block overhead and memory, against the in-process sandbox.
//!
//! Run with `cargo run --release --example bench`. A begin → api (`calendly.current_user`, a GET)
//! → end workflow with durable history in a temp dir, at 1, 64 and 1,000 runs in flight, next to
//! a plain reqwest loop sending the same GET at the same concurrency (and, at 1,000, the same loop
//! over 64 connections, as the engine's default `max_connections` sends it), each the median of
//! three interleaved passes, with this disk's fsync latency printed first (the floor under one run
//! in flight, which waits for its own flush); then the engine overhead per API block (run time
//! minus time inside the HTTP call, with and without the durable wait), and the resident memory
//! with 10,000 runs in flight (against a sandbox that answers after 2 s, so none has finished when
//! it is read). Each throughput phase also runs the engine without history (`persist: false`, as
//! an offline replay runs: nothing written, nothing flushed), to show what the history costs, and
//! prints how many `History::durable` calls and sled flushes it took per run (how well the group
//! commit coalesces).
//!
//! At one run in flight the bench also prints the rate against this disk's floor for it, 1 / (one
//! sandbox round trip + one fsync), both probed beside each pass.
//!
//! `bench engine [IN_FLIGHT [RUNS [no-history]]]` and `bench raw [IN_FLIGHT [REQUESTS]]` run one
//! side alone, for a profiler or `time`.
//!
//! `bench disk [RUNS [IN_FLIGHT [LIST_RUNS]]]` measures what a run costs on disk: the data dir's
//! growth per begin → GET → end run over 10,000 runs (64 in flight), and per run whose GET answers
//! a 10 KiB body (a small vendor server in the bench); then it grows the store to 100,000 runs and
//! times `history show` of a random run (`History::run` and `History::steps`) and `history list`
//! with the CLI's default (the newest 50).
//!
//! `bench serve [RUNS]` measures one run at a time through `blockyard serve`'s API: a `Service`
//! on loopback (its store in a temp dir), the same workflow started with `POST
//! /api/workflows/bench/runs {"wait": true}` (answered when the run is durably finished), next
//! to three probes measured in the same process: one HTTP round trip to the service (`GET
//! /healthz`), one round trip to the sandbox (the GET the run sends), and one fsync in the data
//! dir. A durable run acknowledged over HTTP cannot be faster than the three together (the floor);
//! the bench prints the loop's rate against it. Probes and loop alternate over three passes.
//!
//! The memory phase runs in a fresh child process (this example re-run as `bench memory URL
//! [MAX_CONNECTIONS]`), against a slow sandbox in this process: the figures are the engine's
//! alone, as in production where the vendors are remote, and not the heap left over from the
//! throughput phases nor the sandbox's own open connections. It runs twice: with the default
//! `max_connections` (64 requests open at once, the other runs waiting their turn) and with the
//! cap off (`0`: 10,000 connections). Memory is read 1.5 s after the 10,000 runs are submitted,
//! while none has finished; then the child sets the sandbox's latency to 0 (`POST
//! /_sandbox/latency`) so the queued runs finish in seconds, not 10,000 / 64 × 2 s. For scale, a
//! third child (`bench memory-raw URL`) holds 10,000 plain reqwest GETs in flight against the
//! same sandbox: the floor of 10,000 connections.
//!
//! The throughput phases use the default cap too (at 1,000 in flight the engine's runs share 64
//! connections where the raw loop opens 1,000); `BENCH_MAX_CONNECTIONS=0` lifts it there.
//!
//! `BENCH_POSTGRES=postgres://…` runs `bench engine` on the PostgreSQL store instead of sled (a
//! schema of its own on that server; the other phases refuse it): `scripts/pg run env BENCH_POSTGRES=… bench engine 1 2000`
//! (the fsync probe then still measures the temp dir's disk, not the server's commit).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockyard::config::{Config, DEFAULT_MAX_CONNECTIONS};
use blockyard::exec::{Engine, EngineOptions, Prepared, RunRequest};
use blockyard::http::{Client, Credentials};
use blockyard::preset::PresetRegistry;
use blockyard::sandbox::{Sandbox, SandboxConfig};
use blockyard::service::{Service, ServiceConfig};
use blockyard::store::any::AnyStore;
use blockyard::store::history::{RunFilter, RunId};
use blockyard::store::postgres::Postgres;
use blockyard::store::{Store, StoreOptions};

/// The allocator the `blockyard` binary uses (see `engine/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKFLOW: &str = "name: bench\nblocks:\n  begin:\n    type: begin\n    next: me\n  me:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    next: end\n  end:\n    type: end\n";

/// The engine of the throughput phases: the default `max_connections` (64), or
/// `BENCH_MAX_CONNECTIONS` (`0` lifts the cap) to see what the cap costs or buys.
fn start_engine(calendly_url: &str, dir: &Path) -> (Engine, Arc<Prepared>) {
    let max_connections = std::env::var("BENCH_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    start_engine_with(calendly_url, dir, max_connections)
}

/// The engine, with `max_connections` on the credential when given (`0`: no cap).
fn start_engine_with(
    calendly_url: &str,
    dir: &Path,
    max_connections: Option<u32>,
) -> (Engine, Arc<Prepared>) {
    let cap = max_connections
        .map(|n| format!("    max_connections: {n}\n"))
        .unwrap_or_default();
    let config = Config::parse(
        Path::new("blockyard.yaml"),
        &format!(
            "credentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: bench-token-123456\n    base_url: {}\n    rate_limit_per_minute: 0\n{cap}",
            calendly_url
        ),
    )
    .unwrap();
    // `BENCH_SLED_CACHE_MB` overrides the store's page cache bound, to see what it costs.
    let mut store_options = StoreOptions::default();
    if let Some(mb) = std::env::var("BENCH_SLED_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        store_options.cache_capacity = mb * 1024 * 1024;
    }
    // `BENCH_SLED_LOW_SPACE=1`: sled's `Mode::LowSpace` instead of `HighThroughput`.
    if std::env::var("BENCH_SLED_LOW_SPACE").is_ok_and(|v| v == "1") {
        store_options.high_throughput = false;
    }
    // `BENCH_POSTGRES=postgres://…`: the engine on the PostgreSQL store instead (a schema of its
    // own, `bench_PID`, dropped by nobody: use a throwaway cluster, `scripts/pg run`).
    let store: AnyStore = match std::env::var("BENCH_POSTGRES") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("bench_{}_{}", std::process::id(), fastrand::u32(..));
            let pg = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(Postgres::open_in_schema(&url, &schema))
            })
            .unwrap();
            pg.into()
        }
        _ => Store::open_with(dir, store_options).unwrap().into(),
    };
    let client = Client::new(
        Arc::new(PresetRegistry::builtin()),
        Credentials::from_config(&config),
    )
    .unwrap();
    let options = EngineOptions {
        max_in_flight: 20_000,
        ..EngineOptions::default()
    };
    let engine = Engine::new(store, client, Default::default(), options).unwrap();
    let prepared = engine
        .prepare(Path::new("bench.yaml"), WORKFLOW.to_owned())
        .unwrap();
    (engine, prepared)
}

/// Throughput passes per figure; the tables show the median.
const REPEATS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How long this disk takes to make a small append durable: the floor under a run that waits
/// for its own flush (1 in flight).
fn fsync_latency(dir: &Path) -> (Duration, Duration) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            file.write_all(&[0u8; 512]).unwrap();
            let start = Instant::now();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `total` runs, `concurrency` at a time. `history: false` runs them without recording
/// anything (as offline replays do), to show what the engine costs without its history.
async fn engine_rate(
    engine: &Engine,
    prepared: &Arc<Prepared>,
    concurrency: usize,
    total: usize,
    history: bool,
) -> (f64, Vec<Duration>, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (engine, prepared, next) = (engine.clone(), prepared.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut overhead = Vec::new();
            let mut durable = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let request = RunRequest {
                    persist: history,
                    ..RunRequest::manual(None)
                };
                let outcome = engine.run(&prepared, request).await.unwrap();
                assert!(outcome.succeeded(), "{:?}", outcome.run.error);
                overhead.push(outcome.duration.saturating_sub(outcome.http));
                durable.push(outcome.durable_wait);
            }
            (overhead, durable)
        }));
    }
    let (mut overhead, mut durable) = (Vec::new(), Vec::new());
    for task in tasks {
        let (o, d) = task.await.unwrap();
        overhead.extend(o);
        durable.extend(d);
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    (rate, overhead, durable)
}

/// A plain reqwest loop: `concurrency` tasks sending the GET, at most `connections` at once
/// when given (as the engine's `max_connections` does).
async fn raw_rate(url: &str, concurrency: usize, total: usize, connections: Option<usize>) -> f64 {
    let client = reqwest::Client::new();
    let cap = Arc::new(tokio::sync::Semaphore::new(
        connections.unwrap_or(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url, cap) = (client.clone(), next.clone(), url.to_owned(), cap.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let _connection = cap.acquire().await.unwrap();
                let response = client
                    .get(&url)
                    .header("Authorization", "Bearer bench-token-123456")
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                let _ = response.bytes().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sets the latency of the sandbox serving `calendly_url` through its control endpoint.
async fn set_sandbox_latency(calendly_url: &str, ms: u64) {
    let root = calendly_url.strip_suffix("/calendly").unwrap();
    let response = reqwest::Client::new()
        .post(format!("{root}/_sandbox/latency"))
        .json(&serde_json::json!({ "ms": ms }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// `bench memory URL [MAX_CONNECTIONS]`: 10,000 engine runs in flight against the slow sandbox
/// at `URL`, with `max_connections` on the credential when given.
async fn memory_phase(url: &str, max_connections: Option<u32>) {
    let label = match max_connections {
        Some(0) => "engine, max_connections 0 (no cap)".to_owned(),
        Some(n) => format!("engine, max_connections {n}"),
        None => format!("engine, max_connections {DEFAULT_MAX_CONNECTIONS} (the default)"),
    };
    let dir = tempfile::tempdir().unwrap();
    let (engine, prepared) = start_engine_with(url, dir.path(), max_connections);
    println!("{label}, before 10,000 runs: {}", memory());
    let run = engine.run(&prepared, RunRequest::manual(None));
    println!("(one run's future: {} bytes)", std::mem::size_of_val(&run));
    drop(run);
    let start = Instant::now();
    let handles: Vec<_> = (0..10_000)
        .map(|_| engine.submit(&prepared, RunRequest::manual(None)).handle)
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let finished = handles.iter().filter(|h| h.is_finished()).count();
    println!(
        "{label}, 10,000 runs in flight: {} ({finished} finished so far)",
        memory()
    );
    // The sandbox answers the queued runs at once from now on (those already waiting in it
    // still take their 2 s).
    set_sandbox_latency(url, 0).await;
    let mut ok = 0;
    for handle in handles {
        if handle.await.unwrap().unwrap().succeeded() {
            ok += 1;
        }
    }
    println!(
        "{label}, after: {} ({ok} succeeded in {:?})",
        memory(),
        start.elapsed()
    );
    assert_eq!(ok, 10_000, "every run succeeds");
}

/// `bench memory-raw URL`: 10,000 plain reqwest GETs in flight, for scale.
async fn memory_raw_phase(url: &str) {
    let client = reqwest::Client::new();
    println!("raw reqwest, before 10,000 GETs: {}", memory());
    let handles: Vec<_> = (0..10_000)
        .map(|_| {
            let request = client
                .get(format!("{url}/users/me"))
                .header("Authorization", "Bearer bench-token-123456");
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                response.bytes().await.unwrap().len()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let finished = handles.iter().filter(|h| h.is_finished()).count();
    println!(
        "raw reqwest, 10,000 GETs in flight: {} ({finished} finished so far)",
        memory()
    );
    for handle in handles {
        handle.await.unwrap();
    }
    println!("raw reqwest, after: {}", memory());
}

/// The throughput phases' sandbox (no latency), data dir and engine.
async fn throughput_setup() -> (Sandbox, tempfile::TempDir, Engine, Arc<Prepared>) {
    let sandbox = Sandbox::start(SandboxConfig {
        seed_users: 5,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, prepared) = start_engine(&sandbox.calendly_url(), dir.path());
    (sandbox, dir, engine, prepared)
}

/// The `IN_FLIGHT` and count arguments of `bench engine` and `bench raw` (64 and 20,000).
fn counts(args: &[String]) -> (usize, usize) {
    let at = |i: usize, default| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    (at(0, 64), at(1, 20_000))
}

/// `bench engine [IN_FLIGHT [RUNS [no-history]]]`: the engine phase alone (64 in flight, 20,000
/// runs by default; `no-history` records nothing), for a profiler.
async fn engine_phase(args: &[String]) {
    let (concurrency, total) = counts(args);
    let history = args.get(2).map(String::as_str) != Some("no-history");
    let (sandbox, dir, engine, prepared) = throughput_setup().await;
    let (rate, mut overhead, mut durable) =
        engine_rate(&engine, &prepared, concurrency, total, history).await;
    if concurrency == 1 {
        let url = format!("{}/users/me", sandbox.calendly_url());
        let vendor = round_trip(&reqwest::Client::new(), &url, true, 2_000).await;
        let fsync = fsync_latency(dir.path()).0;
        print_floor(&mut [rate], &mut [vendor], &mut [fsync]);
    }
    overhead.sort();
    durable.sort();
    println!(
        "{concurrency} in flight: {rate:.0} runs/s, overhead median {:?}, of which durable wait {:?}",
        percentile(&overhead, 0.5),
        percentile(&durable, 0.5)
    );
    sandbox.shutdown().await;
}

/// One run in flight against this machine's floor for it, 1 / (one sandbox round trip + one
/// fsync): the medians of the passes' rates and probes.
fn print_floor(rates: &mut [f64], vendor: &mut [Duration], fsync: &mut [Duration]) {
    vendor.sort();
    fsync.sort();
    let (vendor, fsync) = (vendor[vendor.len() / 2], fsync[fsync.len() / 2]);
    let floor = vendor + fsync;
    let rate = median(rates);
    println!(
        "One run in flight: {rate:.0} runs/s against 1 / (sandbox round trip {vendor:?} + fsync {fsync:?}) = {:.0} runs/s: **{:.0} %** of this disk's limit",
        1.0 / floor.as_secs_f64(),
        100.0 * rate * floor.as_secs_f64()
    );
}

/// Median round trip of `GET url` sent `count` times one after another (keep-alive).
async fn round_trip(client: &reqwest::Client, url: &str, bearer: bool, count: usize) -> Duration {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let request = client.get(url);
        let request = if bearer {
            request.header("Authorization", "Bearer bench-token-123456")
        } else {
            request
        };
        let start = Instant::now();
        let response = request.send().await.unwrap();
        assert!(response.status().is_success());
        let _ = response.bytes().await.unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    percentile(&times, 0.5)
}

/// `bench serve [RUNS]`: one run at a time through `serve`'s API (2,000 runs per pass by
/// default), against the floor of one HTTP round trip to the service, one to the sandbox and one
/// fsync.
async fn serve_phase(args: &[String]) {
    let total = args.first().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let sandbox = Sandbox::start(SandboxConfig {
        seed_users: 5,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let workflows = dir.path().join("workflows");
    std::fs::create_dir(&workflows).unwrap();
    std::fs::write(workflows.join("bench.yaml"), WORKFLOW).unwrap();
    let config = Config::parse(
        Path::new("blockyard.yaml"),
        &format!(
            "credentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: bench-token-123456\n    base_url: {}\n    rate_limit_per_minute: 0\n",
            sandbox.calendly_url()
        ),
    )
    .unwrap();
    let service = Service::start(ServiceConfig {
        credentials: Credentials::from_config(&config),
        ..ServiceConfig::new(
            workflows,
            dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
        )
    })
    .await
    .unwrap();
    let base = format!("http://{}", service.addr());
    let start_url = format!("{base}/api/workflows/bench/runs");
    let sandbox_url = format!("{}/users/me", sandbox.calendly_url());
    let history = service.shared().engine().history().clone();
    let before = history.commit_stats();
    // On a worker, as the other phases' loops: the runtime's main thread would add a cross-thread
    // wake-up to every round trip, probes and runs alike.
    let data_dir = dir.path().to_owned();
    let (mut rates, mut latencies, mut http, mut vendor, mut fsync) = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let (mut rates, mut latencies) = (Vec::new(), Vec::new());
        let (mut http, mut vendor, mut fsync) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..REPEATS {
            http.push(round_trip(&client, &format!("{base}/healthz"), false, 2_000).await);
            vendor.push(round_trip(&client, &sandbox_url, true, 2_000).await);
            fsync.push(fsync_latency(&data_dir).0);
            let mut times = Vec::with_capacity(total);
            let start = Instant::now();
            for _ in 0..total {
                let t = Instant::now();
                let response = client
                    .post(&start_url)
                    .header("content-type", "application/json")
                    .body(r#"{"wait": true}"#)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let body = response.bytes().await.unwrap();
                let succeeded = br#""status":"succeeded""#;
                assert!(
                    body.windows(succeeded.len()).any(|w| w == succeeded),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
                times.push(t.elapsed());
            }
            rates.push(total as f64 / start.elapsed().as_secs_f64());
            times.sort();
            latencies.push(percentile(&times, 0.5));
        }
        (rates, latencies, http, vendor, fsync)
    })
    .await
    .unwrap();
    let after = history.commit_stats();
    let passes = rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" / ");
    let runs = (REPEATS * total) as f64;
    for sorted in [&mut http, &mut vendor, &mut fsync, &mut latencies] {
        sorted.sort();
    }
    let mid = |v: &[Duration]| v[v.len() / 2];
    let floor = mid(&http) + mid(&vendor) + mid(&fsync);
    let rate = median(&mut rates);
    println!("One run at a time through `serve`'s API (begin → GET → end, `\"wait\": true`), {total} runs per pass, medians of {REPEATS} passes:");
    println!();
    println!("| runs/s | run latency (median) | HTTP round trip to serve | sandbox round trip | fsync | floor: 1 / (sum) | runs/s / floor | durable calls per run | flushes per run |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {rate:.0} | {:?} | {:?} | {:?} | {:?} | {:.0} runs/s ({floor:?}) | {:.0} % | {:.2} | {:.2} |",
        mid(&latencies),
        mid(&http),
        mid(&vendor),
        mid(&fsync),
        1.0 / floor.as_secs_f64(),
        100.0 * rate * floor.as_secs_f64(),
        (after.calls - before.calls) as f64 / runs,
        (after.flushes - before.flushes) as f64 / runs,
    );
    println!("(runs/s of each pass: {passes})");
    service.shutdown().await.unwrap();
    sandbox.shutdown().await;
}

/// Bytes of the files under `dir`: `(apparent length, allocated)`.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut allocated) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (l, a) = dir_size(&entry.path());
            len += l;
            allocated += a;
        } else {
            len += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    (len, allocated)
}

/// A vendor whose `GET /users/me` answers a user with about 10 KiB of members beside it (varied
/// text, as a real page is: a run of one letter would compress to nothing).
async fn big_body_server() -> (String, tokio::task::JoinHandle<()>) {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut members = Vec::new();
    let mut text = 0;
    while text < 10 * 1024 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let member = serde_json::json!({
            "uri": format!("https://api.calendly.com/users/{:016x}", seed),
            "name": format!("Person {:x}", seed >> 40),
            "email": format!("p{:x}@example.com", seed >> 24),
        });
        text += member.to_string().len() + 1;
        members.push(member);
    }
    let body = serde_json::json!({
        "resource": {
            "uri": "https://api.calendly.com/users/AAAA",
            "current_organization": "https://api.calendly.com/organizations/ORG1",
            "members": members,
        }
    })
    .to_string();
    let app = axum::Router::new().route(
        "/users/me",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, server)
}

/// The JSON size of a run as `history show --json` gives it (record and steps), in bytes.
fn json_size(engine: &Engine, id: RunId) -> usize {
    let history = engine.history();
    let run = history.run(id).unwrap().unwrap();
    let steps = history.steps(id).unwrap();
    serde_json::to_vec(&run).unwrap().len() + serde_json::to_vec(&steps).unwrap().len()
}

/// The data dir's growth over `runs` runs (`in_flight` at a time) against the vendor at `url`,
/// after 100 warm-up runs; returns the data dir, the engine and the prepared workflow for more.
async fn disk_growth(
    label: &str,
    url: &str,
    runs: usize,
    in_flight: usize,
) -> (tempfile::TempDir, Engine, Arc<Prepared>) {
    let dir = tempfile::tempdir().unwrap();
    let (engine, prepared) = start_engine(url, dir.path());
    engine_rate(&engine, &prepared, 8, 100, true).await;
    let (len0, alloc0) = dir_size(dir.path());
    let start = Instant::now();
    let (rate, _, _) = engine_rate(&engine, &prepared, in_flight, runs, true).await;
    let elapsed = start.elapsed();
    let (len1, alloc1) = dir_size(dir.path());
    let newest = engine.history().list(&RunFilter {
        limit: Some(1),
        ..RunFilter::default()
    });
    let json = json_size(&engine, newest.unwrap()[0].id);
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / runs as f64;
    println!(
        "| {label} | {runs} at {in_flight} in flight | {:.0} B ({:.2} KiB) | {:.0} B | {json} B | {rate:.0} runs/s ({elapsed:.1?}) |",
        per(len0, len1),
        per(len0, len1) / 1024.0,
        per(alloc0, alloc1),
    );
    (dir, engine, prepared)
}

/// Median time of `count` calls of `f`.
fn time_median<T>(count: usize, mut f: impl FnMut(usize) -> T) -> Duration {
    let mut times: Vec<Duration> = (0..count)
        .map(|i| {
            let start = Instant::now();
            std::hint::black_box(f(i));
            start.elapsed()
        })
        .collect();
    times.sort();
    percentile(&times, 0.5)
}

/// `bench disk [RUNS [IN_FLIGHT [LIST_RUNS]]]`: the data dir's growth per begin → GET → end run
/// after RUNS runs (10,000, 64 in flight), and per run with a 10 KiB response body; then the
/// store grown to LIST_RUNS runs (100,000), and the time of `history show` of one run
/// (`History::run` and `History::steps`) and of `history list` (its default: the newest 50).
async fn disk_phase(args: &[String]) {
    let at = |i: usize, default| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (runs, in_flight, list_runs): (usize, usize, usize) =
        (at(0, 10_000), at(1, 64), at(2, 100_000));
    let sandbox = Sandbox::start(SandboxConfig {
        seed_users: 5,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    println!(
        "Data dir growth per run (files' length, and blocks allocated), after 100 warm-up runs:"
    );
    println!();
    println!("| run | runs | growth per run | allocated per run | `history show --json` size of one run | rate |");
    println!("|---|---|---|---|---|---|");
    let (big_url, big_server) = big_body_server().await;
    let (big_dir, big_engine, _) =
        disk_growth("begin → GET (10 KiB body) → end", &big_url, runs, in_flight).await;
    drop((big_engine, big_dir));
    big_server.abort();
    let (dir, engine, prepared) = disk_growth(
        "begin → GET → end",
        &sandbox.calendly_url(),
        runs,
        in_flight,
    )
    .await;
    let done = runs + 100;
    if list_runs > done {
        engine_rate(&engine, &prepared, in_flight, list_runs - done, true).await;
    }
    let (len, _) = dir_size(dir.path());
    let history = engine.history();
    let all_filter = RunFilter::default();
    let mut all = Vec::new();
    let list_all = time_median(3, |_| {
        all = history.list(&all_filter).unwrap();
    });
    let ids: Vec<RunId> = all.iter().map(|r| r.id).collect();
    let default = RunFilter {
        limit: Some(50),
        ..RunFilter::default()
    };
    let list = time_median(201, |_| history.list(&default).unwrap().len());
    let mut seed: u64 = 1;
    let show = time_median(2_001, |_| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let id = ids[(seed >> 33) as usize % ids.len()];
        (history.run(id).unwrap(), history.steps(id).unwrap())
    });
    println!();
    println!(
        "{} runs ({:.1} MiB, {:.0} B per run): `history list` (newest 50) {list:?}, `history show` of a random run (record and steps) {show:?}, list of all {list_all:?} (medians)",
        ids.len(),
        len as f64 / (1024.0 * 1024.0),
        len as f64 / ids.len() as f64
    );
    drop((engine, prepared, dir));
    sandbox.shutdown().await;
}

/// `bench raw [IN_FLIGHT [REQUESTS]]`: the plain reqwest loop alone (64 in flight, 20,000
/// requests by default), to compare with `bench engine` under a profiler or `time`.
async fn raw_phase(args: &[String]) {
    let (concurrency, total) = counts(args);
    let (sandbox, _dir, _engine, _prepared) = throughput_setup().await;
    let url = format!("{}/users/me", sandbox.calendly_url());
    let rate = raw_rate(&url, concurrency, total, None).await;
    println!("{concurrency} in flight: {rate:.0} requests/s");
    sandbox.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let args: Vec<String> = std::env::args().collect();
    // Only `bench engine` runs on PostgreSQL; every other phase opens its own sled store, and
    // would print sled's figures under a PostgreSQL label.
    if std::env::var("BENCH_POSTGRES").is_ok_and(|url| !url.is_empty())
        && args.get(1).map(String::as_str) != Some("engine")
    {
        eprintln!(
            "bench: BENCH_POSTGRES applies to `bench engine` only; unset it for the other phases"
        );
        std::process::exit(2);
    }
    match args.get(1).map(String::as_str) {
        Some("memory") => {
            let max_connections = args.get(3).map(|n| n.parse().unwrap());
            return runtime.block_on(memory_phase(&args[2], max_connections));
        }
        Some("memory-raw") => return runtime.block_on(memory_raw_phase(&args[2])),
        Some("engine") => return runtime.block_on(engine_phase(&args[2..])),
        Some("raw") => return runtime.block_on(raw_phase(&args[2..])),
        Some("serve") => return runtime.block_on(serve_phase(&args[2..])),
        Some("disk") => return runtime.block_on(disk_phase(&args[2..])),
        _ => {}
    }
    runtime.block_on(async {
        let (sandbox, dir, engine, prepared) = throughput_setup().await;
        let url = format!("{}/users/me", sandbox.calendly_url());
        let (fsync_median, fsync_p99) = fsync_latency(dir.path());
        println!(
            "fsync in the data dir (512-byte append + fdatasync, 200 times): median {fsync_median:?}, p99 {fsync_p99:?}"
        );
        println!();
        println!("Each figure is the median of {REPEATS} passes (raw and engine interleaved).");
        println!();
        println!("| runs in flight | engine runs/s | raw reqwest req/s | engine / raw | raw reqwest over 64 connections | engine without history, runs/s | without history / raw |");
        println!("|---|---|---|---|---|---|---|");
        let mut overheads = Vec::new();
        let mut commits = Vec::new();
        let probe_client = reqwest::Client::new();
        // One run in flight against its floor: 1 / (one sandbox round trip + one fsync), each
        // probe measured beside each pass.
        let (mut one, mut vendor, mut fsync) = (Vec::new(), Vec::new(), Vec::new());
        for (concurrency, total) in [(1, 2_000), (64, 10_000), (1_000, 20_000)] {
            let (mut raws, mut capped, mut rates) = (Vec::new(), Vec::new(), Vec::new());
            let mut bare = Vec::new();
            let (mut overhead, mut durable) = (Vec::new(), Vec::new());
            let before = engine.history().commit_stats();
            for _ in 0..REPEATS {
                raws.push(raw_rate(&url, concurrency, total, None).await);
                if concurrency > 64 {
                    capped.push(raw_rate(&url, concurrency, total, Some(64)).await);
                }
                let (rate, o, d) = engine_rate(&engine, &prepared, concurrency, total, true).await;
                rates.push(rate);
                if concurrency == 1 {
                    one.push(rate);
                    vendor.push(round_trip(&probe_client, &url, true, 2_000).await);
                    fsync.push(fsync_latency(dir.path()).0);
                }
                let (rate, _, _) = engine_rate(&engine, &prepared, concurrency, total, false).await;
                bare.push(rate);
                overhead.extend(o);
                durable.extend(d);
            }
            let after = engine.history().commit_stats();
            let (raw, rate, bare) = (median(&mut raws), median(&mut rates), median(&mut bare));
            let capped = if capped.is_empty() {
                "(same)".to_owned()
            } else {
                format!("{:.0}", median(&mut capped))
            };
            println!(
                "| {concurrency} | {rate:.0} | {raw:.0} | {:.0} % | {capped} | {bare:.0} | {:.0} % |",
                100.0 * rate / raw,
                100.0 * bare / raw
            );
            let runs = (REPEATS * total) as f64;
            commits.push((
                concurrency,
                (after.calls - before.calls) as f64 / runs,
                (after.flushes - before.flushes) as f64 / runs,
            ));
            overheads.push((concurrency, overhead, durable));
        }
        println!();
        print_floor(&mut one, &mut vendor, &mut fsync);
        println!();
        println!("| runs in flight | durable calls per run | sled flushes per run |");
        println!("|---|---|---|");
        for (concurrency, calls, flushes) in commits {
            println!("| {concurrency} | {calls:.2} | {flushes:.3} |");
        }
        println!();
        println!("Overhead per API block: run time minus time inside the HTTP call; the durable wait is the run's share of the group commit's fsync, and the rest is the engine's own work.");
        println!();
        println!("| runs in flight | overhead median | p99 | durable wait median | p99 | without the durable wait, median | p99 |");
        println!("|---|---|---|---|---|---|---|");
        for (concurrency, overhead, durable) in &mut overheads {
            let mut own: Vec<Duration> = overhead
                .iter()
                .zip(durable.iter())
                .map(|(o, d)| o.saturating_sub(*d))
                .collect();
            overhead.sort();
            durable.sort();
            own.sort();
            println!(
                "| {concurrency} | {:?} | {:?} | {:?} | {:?} | {:?} | {:?} |",
                percentile(overhead, 0.5),
                percentile(overhead, 0.99),
                percentile(durable, 0.5),
                percentile(durable, 0.99),
                percentile(&own, 0.5),
                percentile(&own, 0.99)
            );
        }
        sandbox.shutdown().await;
        drop((engine, prepared, dir));

        // 10,000 runs in flight at once: the sandbox answers after 2 s (until the engine child
        // lifts the latency to let its queued runs finish).
        let slow = Sandbox::start(SandboxConfig {
            seed_users: 5,
            latency: Duration::from_secs(2),
            request_log_capacity: 20_000,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let url = slow.calendly_url();
        for (mode, max_connections) in [("memory-raw", None), ("memory", None), ("memory", Some("0"))]
        {
            slow.set_latency(Duration::from_secs(2));
            println!();
            let mut args = vec![mode.to_owned(), url.clone()];
            args.extend(max_connections.map(str::to_owned));
            let status = tokio::task::spawn_blocking(move || {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args(args)
                    .status()
            })
            .await
            .unwrap()
            .unwrap();
            assert!(status.success(), "`bench {mode}` failed");
        }
        slow.shutdown().await;
    });
}

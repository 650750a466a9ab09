//! The crash soak: kill -9 `blockyard serve` (or `blockyard records import`) in the middle of a
//! batch of deleting runs, restart it, and check that nothing was lost and nothing was done twice.
//!
//!   cargo run --example soak -- [serve|import|both|workers|schedule] [--records N] [--kills K] [--latency-ms MS] [--seed S] [--workers W] [--seconds S] [--postgres URL]
//!
//! (`scripts/soak` builds and runs it; `.ci/run` runs a short pass.) It starts the sandbox in this
//! process, seeded with N SCIM users and answering every request after MS ms, and a temp dir with a
//! `blockyard.yaml` pointing at it and one workflow, `soak-delete`: a `people` record created with
//! `status: terminated` → find the SCIM user → delete it → end. Then:
//!
//! - `serve`: starts the real `blockyard serve` and posts the N records to `POST /api/records/people`
//!   in batches of 10 (a batch whose answer a kill cut off is posted again), while SIGKILLing `serve`
//!   K times at random moments (each when a random share of the runs has finished) and restarting
//!   it each time;
//! - `import`: writes the N records to a CSV and runs `blockyard records import` on it K times,
//!   each SIGKILLed at a later moment of the import than the one before (until one finishes first),
//!   then once to the end; then starts `serve` to run what the imports queued.
//!
//! - `workers`: W `serve` workers (default 3) share one PostgreSQL database (`--postgres URL`, or
//!   `BLOCKYARD_TEST_POSTGRES`; a database of its own is created on that server and dropped at
//!   the end); the records are posted to any live worker while K times a random worker is
//!   SIGKILLed and a new one started; the checks below then read any worker's history;
//! - `schedule`: W workers run a one-second schedule for S seconds (`--seconds`, default 20), one
//!   of them SIGKILLed in the middle: no tick may run twice, and no second between the first tick
//!   and the last may be missing.
//!
//! When `serve` has no run left to finish it checks, from the sandbox's request log and the
//! history (`GET /api/runs`): every record triggered exactly one run, every run ended in a
//! terminal state, no `DELETE` was sent twice for a user, and every user whose run succeeded was
//! deleted. It prints what it checked and exits 1 on any loss or duplicate (2 on a setup error),
//! keeping the temp dir (with `serve`'s logs) for a look.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use blockyard::sandbox::{Sandbox, SandboxConfig};
use serde_json::{json, Value};
use tokio::sync::Mutex;

const WORKFLOW: &str = r#"name: soak-delete
description: Delete the SCIM user of a person record created as terminated (the crash soak)
blocks:
  begin:
    type: begin
    records: people
    on: [created]
    rules:
      - { field: status, op: equals, value: terminated }
    next: find
  find:
    type: api
    preset: scim.find_user
    credential: scim
    with:
      user_name: "{{record.email}}"
    answers: [not_found]
    outputs:
      id: "{{response.Resources.0.id}}"
    next:
      - { to: delete, when: 'blocks.find.outputs.found' }
      - { to: end, when: '!blocks.find.outputs.found' }
  delete:
    type: api
    preset: scim.delete_user
    credential: scim
    with:
      scim_user_id: "{{blocks.find.outputs.id}}"
    answers: [not_found]
    next: end
  end:
    type: end
"#;

const TERMINAL: &[&str] = &[
    "succeeded",
    "completed_with_failures",
    "failed",
    "cancelled",
    "needs_attention",
];

#[derive(Debug, Clone)]
struct Options {
    variants: Vec<&'static str>,
    records: usize,
    kills: usize,
    latency_ms: u64,
    seed: u64,
    bin: PathBuf,
    /// `workers` and `schedule`: how many `serve` workers share the PostgreSQL store.
    workers: usize,
    /// `schedule`: how long the workers run the one-second schedule.
    seconds: u64,
    /// `workers` and `schedule`: the PostgreSQL server (a database is created on it per variant).
    postgres: Option<String>,
}

fn options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        variants: vec!["serve", "import"],
        records: 50,
        kills: 3,
        latency_ms: 20,
        seed: fastrand::u64(..),
        bin: std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("blockyard"))
            .context("the example's directory")?,
        workers: 3,
        seconds: 20,
        postgres: std::env::var("BLOCKYARD_TEST_POSTGRES")
            .ok()
            .filter(|url| !url.is_empty()),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<String> {
            args.next()
                .with_context(|| format!("`{name}` needs a value"))
        };
        match arg.as_str() {
            "serve" => options.variants = vec!["serve"],
            "import" => options.variants = vec!["import"],
            "both" => options.variants = vec!["serve", "import"],
            "workers" => options.variants = vec!["workers"],
            "schedule" => options.variants = vec!["schedule"],
            "--workers" => options.workers = value("--workers")?.parse()?,
            "--seconds" => options.seconds = value("--seconds")?.parse()?,
            "--postgres" => options.postgres = Some(value("--postgres")?),
            "--records" => options.records = value("--records")?.parse()?,
            "--kills" => options.kills = value("--kills")?.parse()?,
            "--latency-ms" => options.latency_ms = value("--latency-ms")?.parse()?,
            "--seed" => options.seed = value("--seed")?.parse()?,
            "--bin" => options.bin = value("--bin")?.into(),
            other => bail!(
                "unknown argument `{other}`; usage: soak [serve|import|both|workers|schedule] [--records N] [--kills K] [--latency-ms MS] [--seed S] [--bin PATH] [--workers W] [--seconds S] [--postgres URL]"
            ),
        }
    }
    if options.records > 1000 {
        bail!("--records goes up to 1000 (`GET /api/runs`, which the checks read, lists 1000 runs at most)");
    }
    let several = options
        .variants
        .iter()
        .any(|v| ["workers", "schedule"].contains(v));
    if several && options.postgres.is_none() {
        bail!("`workers` and `schedule` need a PostgreSQL server: pass --postgres URL or set BLOCKYARD_TEST_POSTGRES (`scripts/pg run scripts/soak workers` starts a throwaway one)");
    }
    if several && options.workers < 2 {
        bail!("--workers is at least 2 (one worker is the `serve` variant)");
    }
    if !options.bin.is_file() {
        bail!(
            "no blockyard binary at `{}`; build it first (`cargo build --bin blockyard`) or pass --bin",
            options.bin.display()
        );
    }
    Ok(options)
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("soak: error: {err:#}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut failed = false;
    for variant in options.variants.clone() {
        match runtime.block_on(soak(variant, &options)) {
            Ok(true) => {}
            Ok(false) => failed = true,
            Err(err) => {
                eprintln!("soak {variant}: error: {err:#}");
                std::process::exit(2);
            }
        }
    }
    if failed {
        println!("soak: FAILED");
        std::process::exit(1);
    }
    println!("soak: passed");
}

/// One variant; `Ok(false)` when a check failed.
async fn soak(variant: &'static str, options: &Options) -> Result<bool> {
    fastrand::seed(options.seed);
    if variant == "schedule" {
        println!(
            "soak schedule: {} workers, {} s, seed {}",
            options.workers, options.seconds, options.seed
        );
    } else {
        println!(
            "soak {variant}: {} records, {} kills, sandbox latency {} ms, seed {}",
            options.records, options.kills, options.latency_ms, options.seed
        );
    }
    let sandbox = Sandbox::start(SandboxConfig {
        seed_users: options.records,
        seed: options.seed,
        latency: Duration::from_millis(options.latency_ms),
        ..SandboxConfig::default()
    })
    .await?;
    let dir = tempfile::Builder::new()
        .prefix("blockyard-soak-")
        .tempdir()?;
    let work = Work::new(dir.path(), &sandbox, options)?;
    let users = work.users(&sandbox).await?;
    if users.len() != options.records {
        bail!(
            "the sandbox has {} SCIM users, not {}",
            users.len(),
            options.records
        );
    }
    if variant == "workers" || variant == "schedule" {
        let cluster = Cluster::new(dir.path(), &sandbox, options, variant).await?;
        let passed = if variant == "workers" {
            cluster.workers_with_kills(&sandbox, &users).await
        } else {
            cluster.schedule_with_kills().await
        };
        cluster.stop_all().await?;
        cluster.drop_database().await;
        let passed = passed?;
        println!(
            "soak {variant}: {}",
            if passed { "passed" } else { "FAILED" }
        );
        if passed {
            sandbox.shutdown().await;
        } else {
            let kept = dir.keep();
            println!(
                "soak {variant}: kept {} (wN/serve.log has worker N's output)",
                kept.display()
            );
        }
        return Ok(passed);
    }
    let started = Instant::now();
    match variant {
        "serve" => work.serve_with_kills(&users).await?,
        _ => work.import_with_kills(&users).await?,
    }
    let passed = work.verify(&sandbox, &users).await?;
    println!(
        "soak {variant}: {} in {:.1} s",
        if passed { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if passed {
        sandbox.shutdown().await;
    } else {
        let kept = dir.keep();
        println!(
            "soak {variant}: kept {} (serve.log has serve's output)",
            kept.display()
        );
    }
    Ok(passed)
}

struct Work {
    dir: PathBuf,
    options: Options,
    /// `127.0.0.1:PORT`: the same for every restart of `serve`.
    listen: String,
    serve: Arc<Mutex<Option<Child>>>,
    client: reqwest::Client,
}

impl Work {
    fn new(dir: &Path, sandbox: &Sandbox, options: &Options) -> Result<Work> {
        let base = format!("http://{}", sandbox.addr());
        std::fs::write(
            dir.join("blockyard.yaml"),
            format!(
                "data_dir: data\ncredentials:\n  scim: {{vendor: scim, auth: bearer, token: soak, base_url: {base}/scim/v2, rate_limit_per_minute: 0}}\n"
            ),
        )?;
        std::fs::create_dir(dir.join("workflows"))?;
        std::fs::write(dir.join("workflows/soak-delete.yaml"), WORKFLOW)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Work {
            dir: dir.to_owned(),
            options: options.clone(),
            listen: format!("127.0.0.1:{port}"),
            serve: Arc::new(Mutex::new(None)),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    fn api(&self) -> String {
        format!("http://{}/api", self.listen)
    }

    /// The seeded SCIM users: userName (the email) → id, a page of 1000 at a time.
    async fn users(&self, sandbox: &Sandbox) -> Result<BTreeMap<String, String>> {
        let mut users = BTreeMap::new();
        loop {
            let list: Value = self
                .client
                .get(format!(
                    "{}/Users?count=1000&startIndex={}",
                    sandbox.scim_url(),
                    users.len() + 1
                ))
                .bearer_auth("soak")
                .send()
                .await?
                .json()
                .await?;
            let page = list["Resources"].as_array().context("a SCIM list")?;
            for user in page {
                let name = user["userName"].as_str().context("userName")?;
                let id = user["id"].as_str().context("id")?;
                users.insert(name.to_lowercase(), id.to_owned());
            }
            if page.is_empty() || users.len() as u64 >= list["totalResults"].as_u64().unwrap_or(0) {
                return Ok(users);
            }
        }
    }

    /// Starts `serve` and waits (30 s at most) until it answers.
    async fn start_serve(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))?;
        writeln!(&log, "--- soak: starting serve")?;
        let child = Command::new(&self.options.bin)
            .args(["serve", "--listen", &self.listen, "--grace", "1"])
            .current_dir(&self.dir)
            .env_remove("BLOCKYARD_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting blockyard serve")?;
        *self.serve.lock().await = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = self
                .client
                .get(format!("http://{}/healthz", self.listen))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Some(status) = self.serve.lock().await.as_mut().unwrap().try_wait()? {
                bail!("serve exited at start ({status}); see serve.log");
            }
            if Instant::now() > deadline {
                bail!("serve did not answer /healthz within 30 s; see serve.log");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs `serve` and waits for it to be gone.
    async fn kill_serve(&self) -> Result<()> {
        if let Some(mut child) = self.serve.lock().await.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops `serve` gracefully (SIGTERM), at the end.
    async fn stop_serve(&self) -> Result<()> {
        if let Some(mut child) = self.serve.lock().await.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    fn record(email: &str) -> Value {
        json!({"email": email, "name": "Soak", "status": "terminated"})
    }

    /// Posts the records in batches while a second task SIGKILLs and restarts `serve` K times.
    async fn serve_with_kills(&self, users: &BTreeMap<String, String>) -> Result<()> {
        self.start_serve().await?;
        let emails: Vec<&String> = users.keys().collect();
        let batches: Vec<Value> = emails
            .chunks(10)
            .map(|chunk| Value::Array(chunk.iter().map(|e| Work::record(e)).collect()))
            .collect();
        // Each kill lands when a random share of the runs has finished (never all of them), so
        // every kill finds runs in flight, some of them with a write on the wire.
        let mut targets: Vec<usize> = (0..self.options.kills)
            .map(|_| fastrand::usize(0..users.len().max(1)))
            .collect();
        targets.sort_unstable();
        let killer = async {
            let mut log = Vec::new();
            for (k, target) in targets.iter().enumerate() {
                let done = loop {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
                    if let Ok(done) = self.terminal_runs().await {
                        if done >= *target {
                            break done;
                        }
                    }
                };
                self.kill_serve().await?;
                log.push(format!(
                    "kill {}: SIGKILL with {done} of {} runs finished",
                    k + 1,
                    users.len()
                ));
                self.start_serve().await?;
            }
            anyhow::Ok(log)
        };
        let poster = async {
            let mut retries = 0;
            for batch in &batches {
                // Cut off by a kill: post the batch again once serve is back.
                while !post_records(&self.client, &self.api(), batch).await? {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            anyhow::Ok(retries)
        };
        let (kills, retries) = tokio::try_join!(killer, poster)?;
        for line in &kills {
            println!("  {line}");
        }
        println!(
            "  posted {} records in {} batches ({retries} batch posts cut off by a kill, posted again)",
            emails.len(),
            batches.len()
        );
        Ok(())
    }

    /// Runs `blockyard records import` on a CSV of the records, SIGKILLing it until K kills
    /// landed while it ran, then to the end; then `serve` runs what it queued.
    async fn import_with_kills(&self, users: &BTreeMap<String, String>) -> Result<()> {
        let mut csv = String::from("email,name,status\n");
        for email in users.keys() {
            csv += &format!("{email},Soak,terminated\n");
        }
        std::fs::write(self.dir.join("people.csv"), csv)?;
        let import = || {
            Command::new(&self.options.bin)
                .args(["records", "import", "people", "people.csv"])
                .current_dir(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        };
        // How long a process takes to open the data dir (`records list`), and a whole import (into
        // a scratch data dir): the kills land around the two, where the import reads and writes.
        let timed = |args: &[&str]| -> Result<u64> {
            let started = Instant::now();
            let out = Command::new(&self.options.bin)
                .args(args)
                .current_dir(&self.dir)
                .output()?;
            if !out.status.success() {
                bail!(
                    "`blockyard {}` failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(started.elapsed().as_millis() as u64)
        };
        let scratch = self.dir.join("scratch-data");
        let scratch_arg = scratch.to_str().context("a UTF-8 temp dir")?;
        let open = timed(&["records", "list", "people", "--json"])?;
        let whole = timed(&[
            "records",
            "import",
            "people",
            "people.csv",
            "--no-trigger",
            "--data-dir",
            scratch_arg,
        ])?;
        std::fs::remove_dir_all(&scratch)?;
        // Timings on a busy machine vary: spread the kills from half the opening to half again
        // the whole import.
        let (open, whole) = (open / 2, (whole * 3 / 2).max(open + 1));
        let written = || -> Result<usize> {
            let out = Command::new(&self.options.bin)
                .args(["records", "list", "people", "--json"])
                .current_dir(&self.dir)
                .output()?;
            let list: Value = serde_json::from_slice(&out.stdout)
                .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
            Ok(list.as_array().map_or(0, Vec::len))
        };
        // Kill j lands at a later point of the import than kill j - 1 (the window from opening to
        // the end, in K + 1 steps, with jitter), until an import finishes before its kill. When
        // the first import finishes before its kill (timings on a busy machine vary), the data dir
        // is removed (nothing but the imports touched it) and the round starts over, earlier.
        let (mut landed, mut attempts) = (0, 0);
        for round in 0..5u64 {
            let scale = |ms: u64| ms * (5 - round) / 5;
            let (open, whole) = (scale(open), scale(whole));
            let window = whole.saturating_sub(open).max(1);
            for k in 0..self.options.kills {
                attempts += 1;
                let mut child = import()?;
                let at = open + window * (k as u64 + 1) / (self.options.kills as u64 + 1);
                let jitter = window / (2 * (self.options.kills as u64 + 1));
                let delay = fastrand::u64(at.saturating_sub(jitter)..=at + jitter);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                match child.try_wait()? {
                    None => {
                        child.kill()?;
                        child.wait()?;
                        landed += 1;
                        println!(
                            "  kill {landed}: SIGKILL after {delay} ms, {} of {} records written",
                            written()?,
                            users.len()
                        );
                    }
                    Some(status) if status.success() => {
                        println!("  import {attempts} finished before its kill at {delay} ms");
                        break;
                    }
                    Some(status) => {
                        let mut err = String::new();
                        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err)?;
                        bail!("an import exited {status}: {err}");
                    }
                }
            }
            if landed > 0 {
                break;
            }
            println!("  no kill landed: starting over with an empty data dir, earlier");
            std::fs::remove_dir_all(self.dir.join("data"))?;
        }
        if landed == 0 {
            bail!("no kill landed in 5 rounds: the import finishes too fast; use more --records");
        }
        let last = Command::new(&self.options.bin)
            .args(["records", "import", "people", "people.csv"])
            .current_dir(&self.dir)
            .output()?;
        if !last.status.success() {
            bail!(
                "the last import failed: {}",
                String::from_utf8_lossy(&last.stderr)
            );
        }
        println!(
            "  {landed} kills landed in {attempts} imports (opening the data dir: {open} ms, a whole import: {whole} ms); the last one: {}",
            String::from_utf8_lossy(&last.stdout).lines().next().unwrap_or_default()
        );
        self.start_serve().await?;
        Ok(())
    }

    /// The soak's runs, as `GET /api/runs` lists them.
    async fn runs(&self) -> Result<Vec<Value>> {
        let response = self
            .client
            .get(format!(
                "{}/runs?workflow=soak-delete&limit=1000",
                self.api()
            ))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("GET /api/runs: {}", response.status());
        }
        let runs: Value = response.json().await?;
        runs.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("GET /api/runs is not a list: {runs}"))
    }

    async fn terminal_runs(&self) -> Result<usize> {
        Ok(self
            .runs()
            .await?
            .iter()
            .filter(|r| r["status"].as_str().is_some_and(|s| TERMINAL.contains(&s)))
            .count())
    }

    /// Waits for every run to end, stops `serve`, and checks the history and the request log.
    async fn verify(&self, sandbox: &Sandbox, users: &BTreeMap<String, String>) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(600);
        let runs = loop {
            let runs = self.runs().await?;
            let open = runs
                .iter()
                .filter(|r| !r["status"].as_str().is_some_and(|s| TERMINAL.contains(&s)))
                .count();
            if runs.len() >= users.len() && open == 0 {
                break runs;
            }
            if Instant::now() > deadline {
                println!(
                    "  timed out: {} runs listed, {open} not finished after 10 min",
                    runs.len()
                );
                break runs;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Nothing may start late: give serve a moment, then stop it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let runs_after = self.runs().await?.len();
        self.stop_serve().await?;
        Ok(check(&runs, runs_after, sandbox, users))
    }
}

/// Posts one batch of records to `{api}/records/people`: `Ok(true)` when accepted, `Ok(false)`
/// when the connection was cut off (a kill: post it again), an error for any other answer.
async fn post_records(client: &reqwest::Client, api: &str, batch: &Value) -> Result<bool> {
    match client
        .post(format!("{api}/records/people"))
        .json(batch)
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => Ok(true),
        Ok(response) => {
            let status = response.status();
            bail!("posting records: {status}: {}", response.text().await?)
        }
        Err(_) => Ok(false),
    }
}

/// Checks the soak's runs (`runs`, all of them once none was left open; `runs_after` listed half
/// a second later) against the records and the sandbox's request log: every record triggered
/// exactly one run, every run is terminal, no DELETE was sent twice, every succeeded run's DELETE
/// was sent. Prints what it checked; whether it all held.
fn check(
    runs: &[Value],
    runs_after: usize,
    sandbox: &Sandbox,
    users: &BTreeMap<String, String>,
) -> bool {
    let mut failures = Vec::new();
    let mut by_subject: HashMap<String, Vec<&Value>> = HashMap::new();
    for run in runs {
        let key = run["subject"]["key"].as_str().unwrap_or("?").to_lowercase();
        by_subject.entry(key).or_default().push(run);
    }
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for run in runs {
        *statuses
            .entry(run["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let missing: Vec<&String> = users
        .keys()
        .filter(|e| !by_subject.contains_key(*e))
        .collect();
    let twice: Vec<(&String, usize)> = by_subject
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .map(|(k, runs)| (k, runs.len()))
        .collect();
    let open: Vec<&Value> = runs
        .iter()
        .filter(|r| !r["status"].as_str().is_some_and(|s| TERMINAL.contains(&s)))
        .collect();
    println!(
        "  runs: {} for {} records ({})",
        runs.len(),
        users.len(),
        statuses
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !missing.is_empty() {
        failures.push(format!(
            "{} records triggered no run (lost), e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if !twice.is_empty() {
        failures.push(format!(
            "{} records triggered more than one run, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        ));
    }
    if !open.is_empty() {
        failures.push(format!(
            "{} runs did not reach a terminal state",
            open.len()
        ));
    }
    if runs_after != runs.len() {
        failures.push(format!(
            "{} runs appeared after every run had finished",
            runs_after - runs.len()
        ));
    }
    println!(
        "  checked: every record triggered exactly one run, and every run is terminal: {}",
        if missing.is_empty() && twice.is_empty() && open.is_empty() {
            "ok"
        } else {
            "NO"
        }
    );

    // The request log: DELETE /scim/v2/Users/{id}, per user.
    let requests = sandbox.requests();
    let mut deletes: HashMap<&str, usize> = HashMap::new();
    for request in &requests {
        if request.method == "DELETE" {
            if let Some(id) = request.path.strip_prefix("/scim/v2/Users/") {
                *deletes.entry(id).or_default() += 1;
            }
        }
    }
    let sent_twice: Vec<(&str, usize)> = deletes
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    let succeeded_not_deleted: Vec<&String> = users
        .iter()
        .filter(|(email, id)| {
            by_subject
                .get(*email)
                .is_some_and(|runs| runs.iter().any(|r| r["status"] == "succeeded"))
                && !deletes.contains_key(id.as_str())
        })
        .map(|(email, _)| email)
        .collect();
    let deleted = users
        .values()
        .filter(|id| deletes.contains_key(id.as_str()))
        .count();
    println!(
        "  request log: {} vendor requests, {} DELETEs for {deleted} of {} users",
        requests.len(),
        deletes.values().sum::<usize>(),
        users.len()
    );
    if !sent_twice.is_empty() {
        failures.push(format!(
            "{} users got more than one DELETE (a write sent twice), e.g. {:?}",
            sent_twice.len(),
            &sent_twice[..sent_twice.len().min(5)]
        ));
    }
    if !succeeded_not_deleted.is_empty() {
        failures.push(format!(
            "{} runs succeeded without their DELETE in the request log, e.g. {:?}",
            succeeded_not_deleted.len(),
            &succeeded_not_deleted[..succeeded_not_deleted.len().min(5)]
        ));
    }
    println!(
        "  checked: no DELETE sent twice, every succeeded run's DELETE sent: {}",
        if sent_twice.is_empty() && succeeded_not_deleted.is_empty() {
            "ok"
        } else {
            "NO"
        }
    );
    for failure in &failures {
        println!("  FAILED: {failure}");
    }
    failures.is_empty()
}

/// The `schedule` variant's workflow: a run every second, nothing else.
const TICK_WORKFLOW: &str = r#"name: soak-tick
description: A run every second (the schedule soak of several workers)
blocks:
  begin:
    type: begin
    schedule: { cron: "* * * * * *", timezone: UTC, catch_up: none }
    next: end
  end:
    type: end
"#;

/// One `serve` worker of a [`Cluster`]: its own directory (config, workflows, a data dir it does
/// not share) and port, the store in PostgreSQL.
struct Worker {
    name: String,
    listen: String,
    child: Child,
}

/// Several `serve` workers on one PostgreSQL database (the `workers` and `schedule` variants).
struct Cluster {
    root: PathBuf,
    options: Options,
    variant: &'static str,
    /// The server's URL with the soak's own database.
    url: String,
    /// The server's URL as given (to drop the soak's database at the end).
    admin_url: String,
    database: String,
    config: String,
    workers: Mutex<Vec<Worker>>,
    started: std::sync::atomic::AtomicUsize,
    client: reqwest::Client,
}

impl Cluster {
    /// Creates a database of its own on the server, writes the workers' config, and migrates the
    /// schema once (so that workers starting together do not race to create it).
    async fn new(
        root: &Path,
        sandbox: &Sandbox,
        options: &Options,
        variant: &'static str,
    ) -> Result<Cluster> {
        let admin_url = options.postgres.clone().context("a PostgreSQL URL")?;
        let database = format!(
            "blockyard_soak_{}_{}",
            std::process::id(),
            fastrand::u32(..)
        );
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .context("connecting to PostgreSQL")?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .context("creating the soak's database")?;
        // postgres://user:password@host:port/DATABASE[?params]
        let (before, params) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), None), |(b, p)| (b, Some(p)));
        let slash = before
            .rfind('/')
            .filter(|&i| i > "postgres://".len())
            .context("a PostgreSQL URL with a database")?;
        let url = format!(
            "{}/{database}{}",
            &before[..slash],
            params.map_or_else(String::new, |p| format!("?{p}"))
        );
        let base = format!("http://{}", sandbox.addr());
        let config = format!(
            "data_dir: data\nstore:\n  postgres:\n    url: ${{BLOCKYARD_SOAK_POSTGRES}}\ncredentials:\n  scim: {{vendor: scim, auth: bearer, token: soak, base_url: {base}/scim/v2, rate_limit_per_minute: 0}}\n"
        );
        let cluster = Cluster {
            root: root.to_owned(),
            options: options.clone(),
            variant,
            url,
            admin_url,
            database,
            config,
            workers: Mutex::new(Vec::new()),
            started: std::sync::atomic::AtomicUsize::new(0),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        };
        let dir = cluster.worker_dir("migrate")?;
        let out = Command::new(&options.bin)
            .args(["store", "migrate"])
            .current_dir(&dir)
            .env("BLOCKYARD_SOAK_POSTGRES", &cluster.url)
            .output()?;
        if !out.status.success() {
            bail!(
                "`blockyard store migrate` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(cluster)
    }

    /// A worker's directory: the config and the variant's workflow.
    fn worker_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(dir.join("workflows"))?;
        std::fs::write(dir.join("blockyard.yaml"), &self.config)?;
        let (file, text) = match self.variant {
            "schedule" => ("soak-tick.yaml", TICK_WORKFLOW),
            _ => ("soak-delete.yaml", WORKFLOW),
        };
        std::fs::write(dir.join("workflows").join(file), text)?;
        Ok(dir)
    }

    /// Starts one more worker and waits (30 s at most) until it answers.
    async fn start_worker(&self) -> Result<()> {
        let n = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let name = format!("w{n}");
        let dir = self.worker_dir(&name)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let child = Command::new(&self.options.bin)
            .args(["serve", "--listen", &listen, "--grace", "1"])
            .current_dir(&dir)
            .env_remove("BLOCKYARD_TOKEN")
            .env("BLOCKYARD_SOAK_POSTGRES", &self.url)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting blockyard serve")?;
        let mut worker = Worker {
            name,
            listen,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = self
                .client
                .get(format!("http://{}/healthz", worker.listen))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if let Some(status) = worker.child.try_wait()? {
                bail!(
                    "worker {} exited at start ({status}); see {}/serve.log",
                    worker.name,
                    worker.name
                );
            }
            if Instant::now() > deadline {
                let _ = worker.child.kill();
                bail!(
                    "worker {} did not answer /healthz within 30 s; see {}/serve.log",
                    worker.name,
                    worker.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.workers.lock().await.push(worker);
        Ok(())
    }

    /// SIGKILLs a random worker; its name.
    async fn kill_one(&self) -> Result<String> {
        let mut workers = self.workers.lock().await;
        let at = fastrand::usize(0..workers.len());
        let mut worker = workers.remove(at);
        worker.child.kill()?;
        worker.child.wait()?;
        Ok(worker.name)
    }

    /// Stops every worker (SIGTERM, then SIGKILL after 10 s).
    async fn stop_all(&self) -> Result<()> {
        let workers = std::mem::take(&mut *self.workers.lock().await);
        for mut worker in workers {
            Command::new("kill")
                .args(["-TERM", &worker.child.id().to_string()])
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while worker.child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    worker.child.kill()?;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    async fn drop_database(&self) {
        if let Ok((client, connection)) =
            tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", self.database))
                .await;
        }
    }

    /// A live worker's API, chosen at random (every worker serves the same data).
    async fn api(&self) -> Result<String> {
        let workers = self.workers.lock().await;
        let worker = workers
            .get(fastrand::usize(0..workers.len().max(1)))
            .context("no worker is running")?;
        Ok(format!("http://{}/api", worker.listen))
    }

    /// The variant's runs, as a live worker's `GET /api/runs` lists them.
    async fn runs(&self, workflow: &str) -> Result<Vec<Value>> {
        let api = self.api().await?;
        let response = self
            .client
            .get(format!("{api}/runs?workflow={workflow}&limit=1000"))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("GET /api/runs: {}", response.status());
        }
        let runs: Value = response.json().await?;
        runs.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("GET /api/runs is not a list: {runs}"))
    }

    /// `workers`: W workers; the records posted in batches of 10 to any live worker while K
    /// times a random worker is SIGKILLed and a new one started; then the checks of the `serve`
    /// variant, from the history every worker serves and the sandbox's request log.
    async fn workers_with_kills(
        &self,
        sandbox: &Sandbox,
        users: &BTreeMap<String, String>,
    ) -> Result<bool> {
        for _ in 0..self.options.workers {
            self.start_worker().await?;
        }
        println!(
            "  {} workers on one PostgreSQL database",
            self.options.workers
        );
        let emails: Vec<&String> = users.keys().collect();
        let batches: Vec<Value> = emails
            .chunks(10)
            .map(|chunk| Value::Array(chunk.iter().map(|e| Work::record(e)).collect()))
            .collect();
        let mut targets: Vec<usize> = (0..self.options.kills)
            .map(|_| fastrand::usize(users.len() / 10..users.len() * 8 / 10 + 1))
            .collect();
        targets.sort_unstable();
        let terminal = |runs: &[Value]| {
            runs.iter()
                .filter(|r| r["status"].as_str().is_some_and(|s| TERMINAL.contains(&s)))
                .count()
        };
        let killer = async {
            let mut log = Vec::new();
            for (k, target) in targets.iter().enumerate() {
                let done = loop {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
                    if let Ok(runs) = self.runs("soak-delete").await {
                        if terminal(&runs) >= *target {
                            break terminal(&runs);
                        }
                    }
                };
                let killed = self.kill_one().await?;
                self.start_worker().await?;
                log.push(format!(
                    "kill {}: SIGKILL of worker {killed} with {done} of {} runs finished; a new worker started",
                    k + 1,
                    users.len()
                ));
            }
            anyhow::Ok(log)
        };
        let poster = async {
            let mut retries = 0;
            for batch in &batches {
                // Cut off by a kill: post the batch again to a live worker.
                while !post_records(&self.client, &self.api().await?, batch).await? {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            anyhow::Ok(retries)
        };
        let (kills, retries) = tokio::try_join!(killer, poster)?;
        for line in &kills {
            println!("  {line}");
        }
        println!(
            "  posted {} records in {} batches ({retries} batch posts cut off by a kill, posted again)",
            emails.len(),
            batches.len()
        );
        let deadline = Instant::now() + Duration::from_secs(600);
        let runs = loop {
            let runs = self.runs("soak-delete").await?;
            let open = runs.len() - terminal(&runs);
            if runs.len() >= users.len() && open == 0 {
                break runs;
            }
            if Instant::now() > deadline {
                println!(
                    "  timed out: {} runs listed, {open} not finished after 10 min",
                    runs.len()
                );
                break runs;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let runs_after = self.runs("soak-delete").await?.len();
        Ok(check(&runs, runs_after, sandbox, users))
    }

    /// `schedule`: W workers run a one-second schedule for S seconds, one of them SIGKILLed
    /// (and not replaced) at a random moment in the middle; no tick may run twice, and no second
    /// between the first tick and the last may be missing (a worker was always alive).
    async fn schedule_with_kills(&self) -> Result<bool> {
        for _ in 0..self.options.workers {
            self.start_worker().await?;
        }
        let seconds = self.options.seconds;
        println!(
            "  {} workers on one PostgreSQL database, a one-second schedule for {seconds} s",
            self.options.workers
        );
        let kill_at = fastrand::u64(seconds * 250..=seconds * 750);
        tokio::time::sleep(Duration::from_millis(kill_at)).await;
        let killed = self.kill_one().await?;
        println!(
            "  SIGKILL of worker {killed} after {:.1} s",
            kill_at as f64 / 1000.0
        );
        tokio::time::sleep(Duration::from_millis(seconds * 1000 - kill_at)).await;
        let mut ticks: BTreeMap<Tick, usize> = BTreeMap::new();
        let runs = self.runs("soak-tick").await?;
        for run in &runs {
            let detail = run["trigger"]["detail"].as_str().unwrap_or_default();
            let tick = detail
                .strip_prefix("tick ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .with_context(|| format!("a schedule run's trigger detail `{detail}`"))?;
            *ticks.entry(tick.timestamp()).or_default() += 1;
        }
        let mut failures = Vec::new();
        let twice: Vec<_> = ticks.iter().filter(|(_, n)| **n > 1).collect();
        if !twice.is_empty() {
            failures.push(format!(
                "{} ticks ran more than once, e.g. {:?}",
                twice.len(),
                &twice[..twice.len().min(5)]
            ));
        }
        let (first, last) = match (ticks.keys().next(), ticks.keys().last()) {
            (Some(first), Some(last)) => (*first, *last),
            _ => bail!("no tick ran in {seconds} s"),
        };
        let missed: Vec<Tick> = (first..=last).filter(|t| !ticks.contains_key(t)).collect();
        if !missed.is_empty() {
            failures.push(format!(
                "{} seconds between the first tick and the last did not run, e.g. {:?}",
                missed.len(),
                &missed[..missed.len().min(5)]
            ));
        }
        // The span of ticks covers the run but for start-up and the last second.
        if last - first + 1 < seconds as i64 - 3 {
            failures.push(format!(
                "ticks ran over {} s of the {seconds} s",
                last - first + 1
            ));
        }
        println!(
            "  {} runs for {} distinct ticks over {} s; checked: no tick twice, none missed: {}",
            runs.len(),
            ticks.len(),
            last - first + 1,
            if failures.is_empty() { "ok" } else { "NO" }
        );
        for failure in &failures {
            println!("  FAILED: {failure}");
        }
        Ok(failures.is_empty())
    }
}

/// A tick, as a Unix timestamp in seconds.
type Tick = i64;

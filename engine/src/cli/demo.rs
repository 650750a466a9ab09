//! `blockyard demo`: the whole product in one command, on embedded defaults.
//!
//! Starts the simulated vendors and a real `serve` in this process (the shipped workflows and
//! `examples/people.csv` are compiled into the binary), then drives it only through its HTTP API,
//! as a user would: imports people, lets record triggers start runs, offboards a leaver, ingests
//! Calendly members, forces a role-retrieval tick and a reclamation tick (with one excluded user;
//! idle users are told and wait out a short grace period, one of them signs in meanwhile and
//! keeps the licence, the others lose it), approves a SCIM delete, shows one person's history
//! across workflows, replays a run offline, and leaves a second leaver's SCIM delete waiting for
//! approval. With `--serve` it then keeps the service (API and web console) and the simulated
//! vendors running at printed URLs until Ctrl-C or SIGTERM, so the console's pages show the demo's
//! runs.
//!
//! Counts are by run status, never flattered (`completed_with_failures` and `failed` apart from
//! `succeeded`), and each run that did not succeed is listed with the vendor's reason. The sample people are mostly
//! known to the vendors already (their "already a member" and "already exists" answers are
//! results the workflows list, not failures), and five are new hires, two of them with a mistyped
//! address that the vendors refuse.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use blockyard::config::Config;
use blockyard::http::Credentials;
use blockyard::sandbox::{Sandbox, SandboxConfig};
use blockyard::service::{Service, ServiceConfig};
use serde_json::{json, Value};

/// The shipped workflows, as the demo serves them.
const WORKFLOWS: [(&str, &str); 13] = [
    (
        "calendly-invite.yaml",
        include_str!("../../../workflows/calendly-invite.yaml"),
    ),
    (
        "calendly-user-details.yaml",
        include_str!("../../../workflows/calendly-user-details.yaml"),
    ),
    (
        "calendly-offboard.yaml",
        include_str!("../../../workflows/calendly-offboard.yaml"),
    ),
    (
        "calendly-role-daily.yaml",
        include_str!("../../../workflows/calendly-role-daily.yaml"),
    ),
    (
        "calendly-ingest.yaml",
        include_str!("../../../workflows/calendly-ingest.yaml"),
    ),
    (
        "webex-ingest.yaml",
        include_str!("../../../workflows/webex-ingest.yaml"),
    ),
    (
        "webex-create.yaml",
        include_str!("../../../workflows/webex-create.yaml"),
    ),
    (
        "webex-update.yaml",
        include_str!("../../../workflows/webex-update.yaml"),
    ),
    (
        "webex-offboard.yaml",
        include_str!("../../../workflows/webex-offboard.yaml"),
    ),
    (
        "webex-role-daily.yaml",
        include_str!("../../../workflows/webex-role-daily.yaml"),
    ),
    (
        "scim-provision.yaml",
        include_str!("../../../workflows/scim-provision.yaml"),
    ),
    (
        "scim-import.yaml",
        include_str!("../../../workflows/scim-import.yaml"),
    ),
    (
        "reclaim-idle.yaml",
        include_str!("../../../workflows/reclaim-idle.yaml"),
    ),
];

/// The demo's grace period before a licence is reclaimed (`reclaim-idle`'s is a week).
const DEMO_GRACE: &str = "5s";

/// Sample HR data; its people are the sandbox's people for seed 7, plus five new hires (two with
/// a mistyped address that the vendors refuse).
const PEOPLE: &str = include_str!("../../../examples/people.csv");
const SEED: u64 = 7;
const SEED_USERS: usize = 24;

/// Run the whole product against simulated vendors: triggers, ingest, roles, reclamation,
/// approval, history and replay.
///
/// Nothing leaves this machine: Calendly, Webex and SCIM are simulated in-process, and the
/// service listens on a loopback port. The data dir is temporary unless `--data-dir` is given
/// (then `blockyard history list --data-dir DIR` shows the runs afterwards).
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the data here instead of a temporary directory (it must not be in use).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// After the story, keep the service (its web console at `/`, its API at `/api`) and the
    /// simulated vendors running at the printed URLs until Ctrl-C or SIGTERM.
    #[arg(long)]
    serve: bool,
    /// Where the demo's service listens (port 0: any free port).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:0",
        requires = "serve"
    )]
    listen: SocketAddr,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let workflows_dir = temp.path().join("workflows");
    std::fs::create_dir_all(&workflows_dir)?;
    for (name, text) in WORKFLOWS {
        // The reclamation's grace period is shortened so the demo shows it end to end.
        let text = match name {
            "reclaim-idle.yaml" => {
                text.replace("grace_period: 7d ", &format!("grace_period: {DEMO_GRACE} "))
            }
            _ => text.to_owned(),
        };
        std::fs::write(workflows_dir.join(name), text)?;
    }
    let sandbox = Sandbox::start(SandboxConfig {
        seed_users: SEED_USERS,
        seed: SEED,
        ..SandboxConfig::default()
    })
    .await?;
    let config = demo_config(&sandbox, temp.path())?;
    let vars = config.vars.clone().into_iter().collect();
    // The demo's API client is an operator named `dana`, with a token made for this run.
    let token = ulid::Ulid::new().to_string();
    let service = Service::start(ServiceConfig {
        credentials: Credentials::from_config(&config),
        vars,
        poll: Duration::from_millis(200),
        api_tokens: vec![blockyard::server::ApiToken::new(
            "dana",
            blockyard::server::Role::Operator,
            token.clone(),
        )],
        ..ServiceConfig::new(workflows_dir, data_dir.clone(), args.listen)
    })
    .await?;
    let api = Api::new(service.addr().to_string(), token);
    println!(
        "blockyard demo: simulated Calendly, Webex and SCIM 2.0 ({SEED_USERS} people) at http://{}",
        sandbox.addr()
    );
    println!(
        "serving {} workflows from an in-process `blockyard serve` at http://{}/api (data: {})\n",
        WORKFLOWS.len(),
        service.addr(),
        data_dir.display()
    );
    let result = tour(&api, &sandbox).await;
    if result.is_ok() {
        println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
        if args.serve {
            // Listening before the URLs are printed: a signal sent as soon as they are read is
            // not lost.
            let stop = super::sandbox::shutdown_signal()?;
            println!(
                "\nserving until Ctrl-C:\n  console  http://{addr}/  (log in as `dana` with the token {token})\n  API      http://{addr}/api\n  vendors  http://{}",
                sandbox.addr(),
                addr = service.addr(),
                token = api.token,
            );
            stop.await;
            println!("stopping");
        }
    }
    service.shutdown().await?;
    sandbox.shutdown().await;
    result
}

/// The configuration a user would write for the sandbox.
fn demo_config(sandbox: &Sandbox, dir: &Path) -> anyhow::Result<Config> {
    let credential = |name: &str, url: &str| {
        format!("  {name}:\n    vendor: {name}\n    auth: bearer\n    token: demo-token\n    base_url: {url}\n    rate_limit_per_minute: 0\n")
    };
    let text = format!(
        "vars:\n  calendly_organization: {}\ncredentials:\n{}{}{}  licence_notices:\n    vendor: webhook\n    auth: url\n    url: http://{}/hooks/licence-notices\n",
        sandbox.organization_uri(),
        credential("calendly", &sandbox.calendly_url()),
        credential("webex", &sandbox.webex_url()),
        credential("scim", &sandbox.scim_url()),
        sandbox.addr(),
    );
    Ok(Config::parse(&dir.join("blockyard.yaml"), &text)?)
}

async fn tour(api: &Api, sandbox: &Sandbox) -> anyhow::Result<()> {
    // 1. Import people: record triggers start the onboarding workflows.
    let people = parse_people(PEOPLE)?;
    let answer = api
        .post("/records/people", &Value::Array(people.clone()))
        .await?;
    let queued = queued_ids(&answer);
    println!(
        "1. import examples/people.csv: {} people created; their record triggers queued {} runs",
        people.len(),
        queued.len()
    );
    let runs = api.wait_for(&queued).await?;
    println!("   {}", summary(&runs));
    println!(
        "   answers the workflows list as results: {}",
        answers(&runs)
    );
    for line in refusals(&runs) {
        println!("   refused: {line}");
    }

    // 2. A leaver: HR marks someone terminated; calendly-offboard starts by itself.
    let leaver = "dennis.wirth@example.com";
    let answer = api
        .post(
            "/records/people",
            &json!({"email": leaver, "status": "terminated"}),
        )
        .await?;
    let runs = api.wait_for(&queued_ids(&answer)).await?;
    println!(
        "\n2. HR marks {leaver} terminated → started by the record change: {}",
        names(&runs)
    );
    if let Some(run) = runs.iter().find(|r| r["workflow"] == "calendly-offboard") {
        api.timeline(run).await?;
    }

    // 3. Ingest: every Calendly member into saas_users, with an identity directory's four lists.
    let run = api.run_now("calendly-ingest").await?;
    let counts = step_outputs(&run, "members");
    println!(
        "\n3. calendly-ingest (daily; run now): {} new, {} updated, {} activated, {} deactivated saas_users",
        counts["new"], counts["updated"], counts["activated"], counts["deactivated"]
    );

    // 4. Role retrieval: the daily tick, forced now.
    let runs = api.tick("calendly-role-daily").await?;
    let mut roles: BTreeMap<String, usize> = BTreeMap::new();
    for run in &runs {
        let role = step_outputs(run, "role")["role"]
            .as_str()
            .unwrap_or("not found")
            .to_owned();
        *roles.entry(role).or_default() += 1;
    }
    let roles: Vec<String> = roles.iter().map(|(r, n)| format!("{n} {r}")).collect();
    println!(
        "\n4. calendly-role-daily tick (forced now): {} users checked; roles: {}; {}",
        runs.len(),
        roles.join(", "),
        summary(&runs)
    );
    for line in refusals(&runs) {
        println!("   refused: {line}");
    }

    // 5. Reclamation the way ServiceNow SAM runs it, with one idle user excluded by a record field
    //    and a grace period of seconds instead of a week.
    let idle = api.idle_calendly_users(60).await?;
    let excluded = idle.first().cloned();
    if let Some(email) = &excluded {
        api.post(
            "/records/saas_users",
            &json!({"app": "calendly", "email": email, "reclaim_excluded": true}),
        )
        .await?;
    }
    let runs = api.tick("reclaim-idle").await?;
    let waiting: Vec<(String, String)> = runs
        .iter()
        .filter(|r| r["status"] == "waiting")
        .filter_map(|r| {
            let id = r["id"].as_str()?.to_owned();
            let key = r["subject"]["key"].as_str()?.to_owned();
            Some((id, key))
        })
        .collect();
    let notice = sandbox
        .webhooks()
        .into_iter()
        .find(|w| w.path.ends_with("/licence-notices"))
        .and_then(|w| w.body["text"].as_str().map(str::to_owned))
        .unwrap_or_default();
    println!(
        "\n5. reclaim-idle tick (forced now): {} Calendly users idle for more than 60 days; {} candidates told through the `licence_notices` webhook and waiting out a {DEMO_GRACE} grace period (`waiting`, durably); {} left alone (`reclaim_excluded: true`)",
        idle.len(),
        waiting.len(),
        excluded.as_deref().unwrap_or("nobody")
    );
    println!("   the notice: \"{notice}\"");
    if let Some(email) = &excluded {
        let why = api.get(&format!("/triggers/why?subject={email}")).await?;
        if let Some(line) = why.to_string().split("excluded: ").nth(1) {
            println!(
                "   why not {email}: excluded: {}",
                line.split('"').next().unwrap_or("")
            );
        }
    }
    // One of them signs in during the grace period: the role retrieval tick saves the fresh
    // `last_activity`, and that write wakes the wait.
    if let Some((id, key)) = waiting.first() {
        let email = key.rsplit('/').next().unwrap_or(key);
        api.sandbox_activity(sandbox, email).await?;
        api.tick("calendly-role-daily").await?;
        let run = api.finished(id).await?;
        let record = api.get(&format!("/records/saas_users/{key}")).await?;
        println!(
            "   {email} signs in during the grace period; the calendly-role-daily tick saves `last_activity`, which wakes the wait (`{}`) → run {}, reclaim_state: {} ({})",
            step_outputs(&run, "grace")["outcome"].as_str().unwrap_or("?"),
            run["status"].as_str().unwrap_or("?"),
            record["reclaim_state"].as_str().unwrap_or("?"),
            record["reclaim_reason"].as_str().unwrap_or("?"),
        );
    }
    // The others: the grace period elapses, the activity is read again, and the licence goes.
    let mut reclaimed: Vec<String> = Vec::new();
    for (id, key) in waiting.iter().skip(1) {
        let run = api.finished(id).await?;
        let removed = run["steps"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["block"] == "remove_membership" && s["status"] == "succeeded")
        });
        if removed {
            reclaimed.push(key.rsplit('/').next().unwrap_or(key).to_owned());
        }
    }
    let shown: Vec<&str> = reclaimed.iter().take(3).map(String::as_str).collect();
    let more = reclaimed.len().saturating_sub(shown.len());
    println!(
        "   after the grace period: activity read again, {} memberships removed ({}{}) → reclaim_state: reclaimed, licence_freed: calendly organization membership",
        reclaimed.len(),
        shown.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() },
    );

    // 6. Approval: the same change asked scim-provision to delete the SCIM user, which waits for
    //    an administrator (OneLogin's "You must approve deletion").
    let waiting = api
        .runs(&format!(
            "/runs?workflow=scim-provision&subject={leaver}&status=waiting_approval"
        ))
        .await?;
    if let Some(run) = waiting.first() {
        let id = run["id"].as_str().unwrap_or_default().to_owned();
        println!(
            "\n6. scim-provision for {leaver} is waiting for approval at block `delete` (run {id})"
        );
        let deletes_before = scim_deletes(sandbox);
        let approved = api
            .post(
                &format!("/runs/{id}/blocks/delete/approve"),
                &json!({"comment": "access review done"}),
            )
            .await?;
        println!(
            "   approved over the API by operator `dana` (`blockyard approve {id} delete --comment TEXT` does the same) → run {}; SCIM DELETE sent {} time",
            approved["status"].as_str().unwrap_or("?"),
            scim_deletes(sandbox) - deletes_before
        );
        let waited = approved["steps"].as_array().and_then(|steps| {
            steps
                .iter()
                .find(|s| s["block"] == "delete" && s["status"] == "waiting_approval")
        });
        if let Some(note) = waited.and_then(|s| s["note"].as_str()) {
            println!("   history records: {note}");
        }
    }

    // 7. One person's history across workflows.
    let runs = api.runs(&format!("/runs?subject={leaver}")).await?;
    println!("\n7. history of {leaver} ({} runs):", runs.len());
    for run in runs.iter().rev() {
        println!(
            "   {}  {:<22} {:<10} {}",
            run["id"].as_str().unwrap_or(""),
            run["workflow"].as_str().unwrap_or(""),
            run["status"].as_str().unwrap_or(""),
            run["trigger"]["detail"].as_str().unwrap_or("")
        );
    }

    // 8. Offline replay: re-render the recorded run against its recording, sending nothing.
    if let Some(run) = runs.iter().find(|r| r["workflow"] == "calendly-offboard") {
        let id = run["id"].as_str().unwrap_or_default();
        let replay = api
            .post(&format!("/runs/{id}/replay"), &json!({"offline": true}))
            .await?;
        println!(
            "\n8. offline replay of {id} (calendly-offboard): {}",
            if replay["identical"] == true {
                "identical to the recording, nothing sent"
            } else {
                "differs from the recording"
            }
        );
    }

    // 9. A second leaver, left to an administrator: the SCIM deletion waits for approval, and
    //    stays waiting (the console's Approvals page lists it under `--serve`).
    let second = "hedy.sutherland@example.com";
    let answer = api
        .post(
            "/records/people",
            &json!({"email": second, "status": "terminated"}),
        )
        .await?;
    let runs = api.wait_for(&queued_ids(&answer)).await?;
    match runs
        .iter()
        .find(|r| r["workflow"] == "scim-provision" && r["status"] == "waiting_approval")
    {
        Some(run) => {
            let id = run["id"].as_str().unwrap_or_default();
            println!(
                "\n9. HR marks {second} terminated → scim-provision waits for approval at block `delete` (run {id}); left waiting for an administrator (`blockyard approve {id} delete` or the console's Approvals page decides it)"
            );
        }
        None => println!(
            "\n9. HR marks {second} terminated → started by the record change: {}; none waits for approval",
            names(&runs)
        ),
    }
    Ok(())
}

fn parse_people(csv_text: &str) -> anyhow::Result<Vec<Value>> {
    let mut lines = csv_text.lines();
    let header: Vec<&str> = lines
        .next()
        .context("people.csv is empty")?
        .split(',')
        .collect();
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields = header
                .iter()
                .zip(line.split(','))
                .map(|(k, v)| ((*k).to_owned(), Value::String(v.to_owned())))
                .collect();
            Value::Object(fields)
        })
        .collect())
}

fn queued_ids(answer: &Value) -> Vec<String> {
    answer["records"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["queued"].as_array().into_iter().flatten())
        .filter_map(|q| q.as_str().map(str::to_owned))
        .collect()
}

/// Runs per workflow, then per status, succeeded first: `calendly-invite 12 · … (80 succeeded,
/// 2 failed)`.
fn summary(runs: &[Value]) -> String {
    let mut by_workflow: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_outcome: BTreeMap<(bool, &str), usize> = BTreeMap::new();
    for run in runs {
        *by_workflow
            .entry(run["workflow"].as_str().unwrap_or("?"))
            .or_default() += 1;
        let outcome = outcome(run);
        *by_outcome
            .entry((outcome != "succeeded", outcome))
            .or_default() += 1;
    }
    let workflows: Vec<String> = by_workflow
        .iter()
        .map(|(w, n)| format!("{w} {n}"))
        .collect();
    let outcomes: Vec<String> = by_outcome
        .iter()
        .map(|((_, o), n)| format!("{n} {o}"))
        .collect();
    format!("{} ({})", workflows.join(" · "), outcomes.join(", "))
}

/// How a run ended: its status.
fn outcome(run: &Value) -> &str {
    run["status"].as_str().unwrap_or("?")
}

/// The first failed step of a run.
fn failed_step(run: &Value) -> Option<&Value> {
    run["steps"]
        .as_array()?
        .iter()
        .find(|s| s["status"] == "failed")
}

/// The steps that succeeded on an answer their block lists (`answers:`), by workflow and
/// answer: `calendly-invite 400 ×9, calendly-user-details not found ×3`.
fn answers(runs: &[Value]) -> String {
    let mut counts: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for run in runs {
        let workflow = run["workflow"].as_str().unwrap_or("?");
        for step in run["steps"].as_array().into_iter().flatten() {
            let answered = step["status"] == "succeeded"
                && step["note"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("answered "));
            if !answered {
                continue;
            }
            let answer = if step["outputs"]["found"] == false {
                "not found".to_owned()
            } else {
                step["response"]["status"].to_string()
            };
            *counts.entry((workflow, answer)).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return "none".to_owned();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|((workflow, answer), n)| format!("{workflow} {answer} ×{n}"))
        .collect();
    parts.join(", ")
}

/// One line per run that did not succeed, sorted: workflow, subject, outcome and the reason.
fn refusals(runs: &[Value]) -> Vec<String> {
    let mut lines: Vec<String> = runs
        .iter()
        .filter(|run| outcome(run) != "succeeded")
        .map(|run| {
            let reason = failed_step(run)
                .and_then(|s| s["error"].as_str())
                .or_else(|| run["error"].as_str())
                .unwrap_or("no reason recorded");
            format!(
                "{} {}: {}: {reason}",
                run["workflow"].as_str().unwrap_or("?"),
                run["subject"]["key"].as_str().unwrap_or("-"),
                outcome(run)
            )
        })
        .collect();
    lines.sort();
    lines
}

fn names(runs: &[Value]) -> String {
    let names: Vec<&str> = runs.iter().filter_map(|r| r["workflow"].as_str()).collect();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

fn step_outputs(run: &Value, block: &str) -> Value {
    run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["block"] == block)
        .map(|s| s["outputs"].clone())
        .unwrap_or(Value::Null)
}

fn scim_deletes(sandbox: &Sandbox) -> usize {
    sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/scim/"))
        .count()
}

/// A small client of the service's API, with its bearer token.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(addr: String, token: String) -> Api {
        Api {
            base: format!("http://{addr}/api"),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        answer(response).await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        answer(response).await
    }

    async fn runs(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .get(path)
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until every queue entry has a run that has stopped, and returns those runs with
    /// their steps. Runs name their queue entry in their trigger detail.
    async fn wait_for(&self, queued: &[String]) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let wanted: HashSet<&str> = queued.iter().map(String::as_str).collect();
        loop {
            let runs = self.runs("/runs?limit=1000").await?;
            let done: Vec<&Value> = runs
                .iter()
                .filter(|run| {
                    let detail = run["trigger"]["detail"].as_str().unwrap_or("");
                    wanted.iter().any(|q| detail.contains(q))
                        && !matches!(run["status"].as_str(), Some("queued" | "running"))
                })
                .collect();
            if done.len() >= wanted.len() {
                let mut out = Vec::with_capacity(done.len());
                for run in done {
                    out.push(
                        self.get(&format!("/runs/{}", run["id"].as_str().unwrap_or("")))
                            .await?,
                    );
                }
                return Ok(out);
            }
            if Instant::now() > deadline {
                bail!(
                    "runs did not finish within 30 s ({} of {})",
                    done.len(),
                    wanted.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (30 s at most) until run `id` has finished, and returns it with its steps.
    async fn finished(&self, id: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = self.get(&format!("/runs/{id}")).await?;
            let status = run["status"].as_str().unwrap_or("");
            if !matches!(status, "queued" | "running" | "waiting" | "retrying") {
                return Ok(run);
            }
            if Instant::now() > deadline {
                bail!("run {id} did not finish within 30 s (it is {status})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Logs a sign-in of the Calendly member `email` now, at the simulated vendor.
    async fn sandbox_activity(&self, sandbox: &Sandbox, email: &str) -> anyhow::Result<()> {
        let url = format!("http://{}/_sandbox/calendly/activity", sandbox.addr());
        let response = self
            .http
            .post(url)
            .json(&json!({"email": email}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "the sandbox did not log activity for {email}: {}",
                response.status()
            );
        }
        Ok(())
    }

    /// A manual run, waited for.
    async fn run_now(&self, workflow: &str) -> anyhow::Result<Value> {
        self.post(
            &format!("/workflows/{workflow}/runs"),
            &json!({"wait": true}),
        )
        .await
    }

    /// Fires a workflow's schedule now and waits for the runs it queued.
    async fn tick(&self, workflow: &str) -> anyhow::Result<Vec<Value>> {
        let answer = self
            .post(&format!("/workflows/{workflow}/tick"), &json!({}))
            .await?;
        let queued: Vec<String> = answer["queued"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q.as_str().map(str::to_owned))
            .collect();
        self.wait_for(&queued).await
    }

    /// Calendly saas_users whose last activity (or, never active, creation) is older than `days`.
    async fn idle_calendly_users(&self, days: i64) -> anyhow::Result<Vec<String>> {
        let runs = self
            .runs("/runs?workflow=calendly-role-daily&limit=1000")
            .await?;
        let mut idle = Vec::new();
        for run in runs {
            let Some(key) = run["subject"]["key"].as_str() else {
                continue;
            };
            let record = self.get(&format!("/records/saas_users/{key}")).await?;
            let date = |name: &str| record[name].as_str().filter(|s| !s.is_empty());
            if blockyard::rules::days_idle(date("last_activity"), date("created_at")) > days {
                if let Some(email) = record["email"].as_str() {
                    idle.push(email.to_owned());
                }
            }
        }
        idle.sort();
        idle.dedup();
        Ok(idle)
    }

    /// Prints a run's blocks: method, path and status of each call.
    async fn timeline(&self, run: &Value) -> anyhow::Result<()> {
        println!(
            "   run {} {} in {} steps",
            run["id"].as_str().unwrap_or(""),
            run["status"].as_str().unwrap_or(""),
            run["steps"].as_array().map_or(0, Vec::len)
        );
        for step in run["steps"].as_array().into_iter().flatten() {
            let request = &step["request"];
            let call = match (request["method"].as_str(), request["url"].as_str()) {
                (Some(method), Some(url)) => {
                    let path = url.split_once("/calendly").map_or(url, |(_, p)| p);
                    let path = path.split('?').next().unwrap_or(path);
                    let status = step["response"]["status"]
                        .as_u64()
                        .map(|s| format!(" → {s}"))
                        .unwrap_or_default();
                    format!("{method} {path}{status}")
                }
                _ => String::new(),
            };
            println!(
                "     {:<8} {:<10} {call}",
                step["block"].as_str().unwrap_or(""),
                step["status"].as_str().unwrap_or("")
            );
        }
        Ok(())
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("the API answered {status}: {body}");
    }
    Ok(body)
}

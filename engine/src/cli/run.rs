//! `blockyard run WORKFLOW`: one run of a workflow, recorded in the history of the data dir.
//!
//! The subject record comes from `--record-file FILE.json` or `--record KEY=VALUE` pairs; `--var`
//! overlays the config's and the workflow's `vars`. A workflow whose begin block names `records:`
//! needs a subject, and the subject must match the begin block's `when:`/`rules:` (and not be
//! left out by `exclude:`) unless `--force`: a refused run starts nothing, prints the conditions
//! in `triggers why`'s words and exits 2. Dry runs are held to the same rule. Prints the
//! block-by-block outcome, or with `--json` the run record with its steps (`id` is the run id).
//! The exit code says how the run ended (`RunStatus::exit_code`: 0 succeeded, 1 failed, 3
//! completed with failures, 4 needs attention, 5 cancelled, 6 not finished), 2 usage or setup
//! errors. A run that ends `retrying` (a call failed transiently) says when its next attempt is:
//! `blockyard serve` continues it then, or `blockyard resume` once that time has come. Under a
//! running service (its `serve.json` in the data dir, or `--server`) the run is started there, of
//! the workflow it has loaded from that file (same name and content, else an error). This file
//! also holds the setup the other run-related commands share (config, data dir, printing);
//! [`super::client`] picks the data dir or the service.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use blockyard::config::Config;
use blockyard::exec::{Refusal, RunRequest};
use blockyard::store::history::{RunMode, RunRecord, RunStatus, StepRecord, StepStatus, Subject};
use serde_json::{Map, Value};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workflow file (through a running service, one it has loaded: same name and content).
    workflow: PathBuf,
    /// The subject record, as a JSON object in a file.
    #[arg(long, value_name = "FILE.json", conflicts_with = "record")]
    record_file: Option<PathBuf>,
    /// A field of the subject record, as KEY=VALUE; repeat for more.
    #[arg(long, value_name = "KEY=VALUE")]
    record: Vec<String>,
    /// A workflow variable, as KEY=VALUE, over the config's and the workflow's `vars`.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    vars: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Perform reads, render writes and list them as the plan, send no write, save nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run even when the subject does not match the begin block's `when:`/`rules:` (or its
    /// `exclude:` leaves it out).
    #[arg(long)]
    force: bool,
    /// Print the run as JSON.
    #[arg(long)]
    json: bool,
}

/// `--config` and `--data-dir`, shared by every command that opens the store.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The configuration file (default: ./blockyard.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data dir (default: the config's `data_dir`, else ./.blockyard). When a running
    /// `blockyard serve` holds it (its `serve.json`), the command goes through that service.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Go through the running `blockyard serve` at this URL (default: `BLOCKYARD_SERVER`, else
    /// the config's `server:`); its token is `BLOCKYARD_TOKEN`, else the config's `token`.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    server: Option<String>,
    /// The presets workflows are compiled and run against.
    #[command(flatten)]
    pub presets: super::PresetArgs,
}

impl CommonArgs {
    /// `--server URL`, when given.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// Whether `--data-dir` was given.
    pub fn data_dir_given(&self) -> bool {
        self.data_dir.is_some()
    }

    /// The file `--config` names, when it is given (not `./blockyard.yaml` found by default).
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// The config, when there is one; its `rule_time_limit` becomes the process's (every command
    /// that evaluates rules reads the config here first).
    pub fn config(&self) -> anyhow::Result<Option<Config>> {
        let config = match &self.config {
            Some(path) => Some(Config::find(Some(path))?),
            None if Path::new("blockyard.yaml").exists() => Some(Config::find(None)?),
            None => None,
        };
        if let Some(config) = &config {
            blockyard::compile::rule_engine().set_time_limit(config.rule_time_limit);
        }
        Ok(config)
    }

    pub fn data_dir(&self, config: Option<&Config>) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| config.map(|c| c.data_dir.clone()))
            .unwrap_or_else(|| PathBuf::from(".blockyard"))
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// `KEY=VALUE` pairs; `true`, `false`, `null`, numbers and values starting with `[` or `{` are JSON.
pub fn parse_pairs(flag: &str, pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    parse_pairs_as(flag, pairs, true)
}

/// `KEY=VALUE` pairs as [`parse_pairs`] reads them, except that with `numbers` false a number stays
/// text (`call --with`, whose inputs are often ids made of digits).
pub fn parse_pairs_as(
    flag: &str,
    pairs: &[String],
    numbers: bool,
) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("`--{flag} {pair}` has no `=`; write `--{flag} KEY=VALUE`");
        };
        let trimmed = value.trim_start();
        let json = matches!(value, "true" | "false" | "null")
            || trimmed.starts_with('[')
            || trimmed.starts_with('{')
            || (numbers && value.parse::<f64>().is_ok());
        let value = if json {
            serde_json::from_str(value)
                .with_context(|| format!("`--{flag} {key}=...` is not valid JSON"))?
        } else {
            Value::String(value.to_owned())
        };
        map.insert(key.trim().to_owned(), value);
    }
    Ok(map)
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let record = match &args.record_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read `{}`", file.display()))?;
            match serde_json::from_str::<Value>(&text)
                .with_context(|| format!("`{}` is not JSON", file.display()))?
            {
                Value::Object(fields) => Some(fields),
                _ => bail!(
                    "`{}` must hold one JSON object (the subject record)",
                    file.display()
                ),
            }
        }
        None if args.record.is_empty() => None,
        None => Some(parse_pairs("record", &args.record)?),
    };
    let vars = parse_pairs("var", &args.vars)?;
    let (run, steps) = match super::client::Backend::open(&args.common)? {
        super::client::Backend::Local(local) => {
            let engine = local.engine()?;
            let prepared = engine.prepare_file(&args.workflow)?;
            let collection = prepared
                .workflow
                .trigger
                .records
                .map_or("people", |c| c.name())
                .to_owned();
            let subject = record.map(|fields| subject_of(&collection, fields));
            let mut request = RunRequest {
                vars,
                mode: if args.dry_run {
                    RunMode::DryRun
                } else {
                    RunMode::Live
                },
                ..RunRequest::manual(subject)
            };
            request.trigger.detail = Some(format!("by {}", super::approve::os_user()));
            if let Err(refusal) = engine.admit(&prepared, &request, args.force) {
                match refusal {
                    Refusal::NoSubject { collection, .. } => {
                        refuse_no_subject(&refusal.to_string(), collection)?
                    }
                    Refusal::NotMatching { .. } => refuse_not_matching(&refusal.to_string())?,
                }
            }
            let outcome = runtime()?.block_on(engine.run(&prepared, request))?;
            (outcome.run, outcome.steps)
        }
        super::client::Backend::Remote(remote) => {
            let name = remote.loaded_workflow(&args.workflow)?;
            let mut body = serde_json::json!({
                "vars": vars,
                "wait": true,
                "force": args.force,
                "dry_run": args.dry_run,
            });
            if let Some(record) = record {
                body["subject"] = Value::Object(record);
            }
            let path = format!("/workflows/{}/runs", super::client::encode_key(&name));
            match remote.try_post(&path, body)? {
                Ok(answer) => super::client::run_steps(answer)?,
                // The API's refusals, in the words of the local path (its hints are the API's).
                Err(refused)
                    if refused.status == 400
                        && refused.message.contains("; send it as `\"subject\"") =>
                {
                    let text = refused
                        .message
                        .split("; send it as")
                        .next()
                        .unwrap_or_default();
                    let collection = if text.contains("`saas_users`") {
                        "saas_users"
                    } else {
                        "people"
                    };
                    refuse_no_subject(text, collection)?;
                    unreachable!()
                }
                Err(refused)
                    if refused.status == 409
                        && refused.message.contains("\nsend `\"force\": true`") =>
                {
                    let text = refused.message.split("\nsend `").next().unwrap_or_default();
                    refuse_not_matching(text)?;
                    unreachable!()
                }
                Err(refused) => return Err(remote.refused(refused)),
            }
        }
    };
    print_run_steps(&run, &steps, args.json)?;
    Ok(ExitCode::from(run.status.exit_code()))
}

/// A run refused for want of a subject, with the flags that give one.
fn refuse_no_subject(refusal: &str, collection: &str) -> anyhow::Result<()> {
    let key = match collection {
        "saas_users" => "`--record app=... --record email=...`",
        _ => "`--record email=...`",
    };
    bail!("{refusal}; give it with {key} or `--record-file FILE.json`")
}

/// A run refused because its subject does not match, with the flag that runs it anyway.
fn refuse_not_matching(refusal: &str) -> anyhow::Result<()> {
    bail!("{refusal}\nrun it anyway with `--force`")
}

/// The subject of a record: keyed by lowercased email (`app/email` for SaaS users).
pub fn subject_of(collection: &str, fields: Map<String, Value>) -> Subject {
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_lowercase);
    let email = text("email").or_else(|| text("id")).unwrap_or_default();
    let key = match (collection, text("app")) {
        ("saas_users", Some(app)) => format!("{app}/{email}"),
        _ => email,
    };
    Subject {
        collection: collection.to_owned(),
        key,
        record: Value::Object(fields),
    }
}

/// The run and its steps as one JSON object.
pub fn run_json(run: &RunRecord, steps: &[StepRecord]) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(run)?;
    value["steps"] = serde_json::to_value(steps)?;
    Ok(value)
}

/// A run's outcome as `run` prints it, from the run and its steps (read here or answered by the
/// service).
pub fn print_run_steps(run: &RunRecord, steps: &[StepRecord], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&run_json(run, steps)?)?);
    } else {
        print_run(run, steps, false);
    }
    Ok(())
}

fn millis(us: u64) -> String {
    if us >= 10_000 {
        format!("{} ms", us / 1000)
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

/// The readable block-by-block outcome; `detail` adds requests and responses.
pub fn print_run(run: &RunRecord, steps: &[StepRecord], detail: bool) {
    let took = match (run.started_at, run.finished_at) {
        (Some(a), Some(b)) => format!(
            " in {}",
            millis((b - a).num_microseconds().unwrap_or(0).max(0) as u64)
        ),
        _ => String::new(),
    };
    let mode = match run.mode {
        RunMode::Live => "",
        RunMode::DryRun => " (dry run)",
        RunMode::Offline => " (offline replay)",
    };
    println!(
        "run {} `{}`{mode}: {}{took}",
        run.id, run.workflow, run.status
    );
    if let Some(subject) = &run.subject {
        println!("  subject: {}/{}", subject.collection, subject.key);
    }
    println!("  trigger: {}", run.trigger);
    if let Some(of) = run.replay_of {
        println!("  replay of: {of}");
    }
    let width = steps.iter().map(|s| s.block.len()).max().unwrap_or(0);
    for step in steps {
        let mut line = format!("  {:width$}  {:9}", step.block, step.status.name());
        if let Some(request) = &step.request {
            let method = request["method"].as_str().unwrap_or("");
            let url = request["url"].as_str().unwrap_or("");
            line.push_str(&format!("  {method} {url}"));
        }
        if let Some(response) = &step.response {
            line.push_str(&format!(" → {}", response.status));
        }
        if step.status != StepStatus::Skipped && step.duration_us > 0 {
            line.push_str(&format!("  ({})", millis(step.duration_us)));
        }
        println!("{line}");
        if !step.saved.is_empty() {
            let fields: Vec<&str> = step.saved.keys().map(String::as_str).collect();
            println!("  {:width$}  saved: {}", "", fields.join(", "));
        }
        if let Some(error) = &step.error {
            println!("  {:width$}  error: {error}", "");
        }
        if let Some(note) = &step.note {
            println!("  {:width$}  note: {note}", "");
        }
        if let Some(retry) = &step.retry {
            let next = match retry.next_at {
                Some(at) => format!("next attempt at {}", when(at)),
                None => "gave up".to_owned(),
            };
            println!(
                "  {:width$}  retry: attempt {}, failing since {}; {next}",
                "",
                retry.attempt,
                when(retry.since)
            );
        }
        if detail {
            if let Some(request) = &step.request {
                println!("  {:width$}  request: {}", "", request);
            }
            if let Some(response) = &step.response {
                let body = response.body.to_string();
                let body = if body.len() > 400 {
                    format!(
                        "{}…",
                        &body[..body.char_indices().nth(400).map_or(body.len(), |(i, _)| i)]
                    )
                } else {
                    body
                };
                println!("  {:width$}  response: {} {body}", "", response.status);
            }
            if !step.outputs.is_empty() {
                println!(
                    "  {:width$}  outputs: {}",
                    "",
                    Value::Object(step.outputs.clone())
                );
            }
        }
    }
    if let Some(error) = &run.error {
        println!("  {}: {error}", run.status);
    }
    if let Some(at) = run.wake_at.filter(|_| run.status == RunStatus::Waiting) {
        println!(
            "  waiting until {}: `blockyard serve` continues the run then (or `blockyard resume` once that time has come)",
            when(at)
        );
    }
    if let Some(at) = run.wake_at.filter(|_| run.status == RunStatus::Retrying) {
        println!(
            "  next attempt at {}: `blockyard serve` continues the run then (or `blockyard resume` once that time has come)",
            when(at)
        );
    }
}

/// An instant as the run output shows it: `2026-11-30 17:05:09 UTC`.
pub fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

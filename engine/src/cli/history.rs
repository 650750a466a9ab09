//! `blockyard history list|show|prune`: the runs recorded in a data dir.
//!
//! `list` prints one line per run: id, creation time, status, mode (`live`, `dry_run`, `offline`,
//! or `replay` with the run it replays at the end of the line), workflow and subject, so a dry
//! run or a replay never reads like a live run. A run request queued while no `serve` runs (by
//! `records import`, say) has no run yet; it is listed as `queued`, by its queue id, "waiting for
//! `blockyard serve`" (`queue_id` instead of `id` in `--json`), until `serve` starts its run.
//! Each command reads the data dir, or goes through the running service ([`Backend`]).

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use blockyard::compile::parse_duration;
use blockyard::store::history::{RunFilter, RunId, RunMode, RunRecord, RunStatus};
use blockyard::store::queue::{self, Listed, Queue};
use serde_json::{json, Value};

use super::client::Backend;
use super::run::{print_run, run_json, CommonArgs};

#[derive(Debug, clap::Subcommand)]
pub enum HistoryCommand {
    /// List runs, newest first.
    List(ListArgs),
    /// Show one run: the block timeline with durations, requests and responses.
    Show(ShowArgs),
    /// Drop the payloads (requests, responses, saves) of old runs, keeping the run records; with
    /// `--runs`, delete the old finished runs whole.
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only runs of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// Only runs with this status (`history list --status x` names them all); `queued` includes
    /// run requests `blockyard serve` has not started yet.
    #[arg(long)]
    status: Option<String>,
    /// Only runs about this person (their email): a timeline across all workflows.
    #[arg(long, value_name = "EMAIL")]
    subject: Option<String>,
    /// Only runs started within this long (`30m`, `24h`, `7d`).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// At most this many runs.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    common: CommonArgs,
    /// Print a JSON array of run records, newest first (as `GET /api/runs`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The run id.
    run: String,
    #[command(flatten)]
    common: CommonArgs,
    /// Print the run record with its `steps` as JSON (as `GET /api/runs/{id}`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Drop payloads of runs finished longer ago than this (`30d`).
    #[arg(long, value_name = "DURATION")]
    older_than: String,
    /// Delete those runs whole instead (with their steps, index entries, approval decisions and
    /// reminders, retry marks); runs not finished are never deleted.
    #[arg(long)]
    runs: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// How a run sent its calls, as `history list` shows it: `live`, `dry_run`, `offline`, or `replay`
/// for a live replay of another run.
fn mode_name(run: &RunRecord) -> &'static str {
    match (run.mode, run.replay_of) {
        (RunMode::Live, Some(_)) => "replay",
        (RunMode::Live, None) => "live",
        (RunMode::DryRun, _) => "dry_run",
        (RunMode::Offline, _) => "offline",
    }
}

pub fn parse_run_id(text: &str) -> anyhow::Result<RunId> {
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "`{text}` is not a run id (26 characters, as `blockyard history list` shows)"
        )
    })
}

/// The instant `--FLAG TEXT` (a duration) before now.
pub(super) fn ago(flag: &str, text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let d = parse_duration(text).with_context(|| {
        format!("`--{flag} {text}` is not a duration; write `30m`, `24h` or `7d`")
    })?;
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .with_context(|| {
            format!(
                "`--{flag} {text}` reaches back further than a date can; write a shorter duration"
            )
        })
}

pub fn run(command: HistoryCommand) -> anyhow::Result<ExitCode> {
    match command {
        HistoryCommand::List(args) => {
            let status = match &args.status {
                None => None,
                Some(s) => match RunStatus::parse(s) {
                    Some(s) => Some(s),
                    None => bail!(
                        "unknown status `{s}`; use one of {}",
                        RunStatus::NAMES.map(|n| format!("`{n}`")).join(", ")
                    ),
                },
            };
            let since = match &args.since {
                None => None,
                Some(text) => Some(ago("since", text)?),
            };
            let filter = RunFilter {
                workflow: args.workflow.clone(),
                status,
                subject: args.subject.clone(),
                since,
                limit: Some(args.limit),
                ..RunFilter::default()
            };
            let runs = list(&Backend::open(&args.common)?, &filter)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("no runs");
            } else {
                for listed in &runs {
                    print_listed(listed)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Show(args) => {
            let id = parse_run_id(&args.run)?;
            let backend = Backend::open(&args.common)?;
            let Some((run, steps)) = backend.run(id)? else {
                match backend {
                    Backend::Local(_) => bail!(
                        "no run `{id}` in this data dir; `blockyard history list` shows the runs"
                    ),
                    Backend::Remote(remote) => return Err(remote.no_run(id)),
                }
            };
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&run_json(&run, &steps)?)?
                );
            } else {
                print_run(&run, &steps, true);
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Prune(args) => {
            let cutoff = ago("older-than", &args.older_than)?;
            let (runs, steps) = match Backend::open(&args.common)? {
                Backend::Local(local) => {
                    let history = local.history()?;
                    let (runs, steps) = if args.runs {
                        super::run::runtime()?.block_on(
                            blockyard::service::retention::delete_finished_before(&history, cutoff),
                        )?
                    } else {
                        let report = history.prune(cutoff)?;
                        (report.runs, report.steps)
                    };
                    local.flush()?;
                    (runs as u64, steps as u64)
                }
                Backend::Remote(remote) => {
                    let body = match args.runs {
                        true => json!({"older_than": args.older_than, "runs": true}),
                        false => json!({"older_than": args.older_than}),
                    };
                    let report = remote.post("/history/prune", body)?;
                    (
                        report["runs"].as_u64().unwrap_or(0),
                        report["steps"].as_u64().unwrap_or(0),
                    )
                }
            };
            if args.runs {
                println!("deleted {runs} finished runs ({steps} steps) and what was kept for them");
            } else {
                println!("pruned the payloads of {runs} runs ({steps} steps); run records kept");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The most runs one `GET /api/runs` lists.
const API_LIMIT: usize = 1000;

/// The runs `filter` keeps, newest first, as `history list --json` shows them (a queued request
/// not started yet with its `queue_id`).
fn list(backend: &Backend, filter: &RunFilter) -> anyhow::Result<Vec<Value>> {
    match backend {
        Backend::Local(local) => {
            let history = local.history()?;
            let queue = Queue::open(history.store())?;
            let runs = super::run::runtime()?.block_on(queue::list(&history, &queue, filter))?;
            Ok(runs.iter().map(Listed::to_json).collect())
        }
        Backend::Remote(remote) => {
            let limit = filter.limit.unwrap_or(50);
            if limit > API_LIMIT {
                bail!(
                    "{}: `--limit {limit}` is more than the service lists at once ({API_LIMIT}); narrow the list with `--since`, `--workflow` or `--status`",
                    remote.via()
                );
            }
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if let Some(workflow) = &filter.workflow {
                query.append_pair("workflow", workflow);
            }
            if let Some(status) = filter.status {
                query.append_pair("status", status.name());
            }
            if let Some(subject) = &filter.subject {
                query.append_pair("subject", subject);
            }
            if let Some(since) = filter.since {
                query.append_pair(
                    "since",
                    &since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                );
            }
            query.append_pair("limit", &limit.to_string());
            let runs = remote.get(&format!("/runs?{}", query.finish()))?;
            match runs {
                Value::Array(runs) => Ok(runs),
                other => bail!("{}: the run list is not an array: {other}", remote.via()),
            }
        }
    }
}

/// One line of `history list`.
fn print_listed(listed: &Value) -> anyhow::Result<()> {
    if let Some(queue_id) = listed["queue_id"].as_str() {
        let subject = listed["subject"]["key"].as_str().unwrap_or("-");
        let created =
            chrono::DateTime::parse_from_rfc3339(listed["created_at"].as_str().unwrap_or_default())
                .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
        println!(
            "{queue_id}  {created}  {:16}  {:7}  {:24}  {subject}  (waiting for `blockyard serve`)",
            RunStatus::Queued.name(),
            "live",
            listed["workflow"].as_str().unwrap_or_default(),
        );
        return Ok(());
    }
    let run: RunRecord = serde_json::from_value(listed.clone())
        .with_context(|| format!("a listed run this CLI cannot read: {listed}"))?;
    let subject = run.subject.as_ref().map_or("-", |s| s.key.as_str());
    let replay = run
        .replay_of
        .map_or_else(String::new, |of| format!("  (replay of {of})"));
    println!(
        "{}  {}  {:16}  {:7}  {:24}  {subject}{replay}",
        run.id,
        run.created_at.format("%Y-%m-%d %H:%M:%S"),
        run.status.name(),
        mode_name(&run),
        run.workflow,
    );
    Ok(())
}

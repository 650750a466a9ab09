//! `blockyard resume`: finishes every run a stopped process left unfinished, from its last
//! durable step (a write whose outcome is unknown is checked with its preset's probe first), and
//! continues every `retrying` run whose next attempt has come. A `retrying` run whose time has
//! not come is left alone, saying when it is (exit 6, not finished); `blockyard serve` wakes it
//! by itself. Under a running service (its `serve.json`, or `--server`), the service has resumed
//! its unfinished runs itself: `resume` asks it (`POST /api/resume`) to continue the due
//! `retrying` runs (or the one run named, unless it is executing there).

use std::process::ExitCode;

use blockyard::exec::Engine;
use blockyard::store::history::{RunId, RunRecord, RunStatus};
use serde_json::json;

use super::client::{run_steps, Backend, RunSteps};
use super::history::parse_run_id;
use super::run::{init_tracing, print_run_steps, run_json, runtime, when, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Resume only this run (default: every unfinished run, and every retrying run whose next
    /// attempt has come).
    run: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Print a JSON array of the unfinished runs (resumed, or retrying and not due), each with its steps.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let run = args.run.as_deref().map(parse_run_id).transpose()?;
    let (resumed, left) = match Backend::open(&args.common)? {
        Backend::Local(local) => resume_local(&local.engine()?, run)?,
        Backend::Remote(remote) => {
            let body = match run {
                Some(id) => json!({"run": id.to_string()}),
                None => json!({}),
            };
            let answer = remote.post("/resume", body)?;
            let runs = |key: &str| -> anyhow::Result<Vec<RunSteps>> {
                answer[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .cloned()
                    .map(run_steps)
                    .collect()
            };
            (runs("resumed")?, runs("left")?)
        }
    };
    if resumed.is_empty() && left.is_empty() && !args.json {
        println!("no unfinished runs");
    }
    if args.json {
        let runs = resumed
            .iter()
            .chain(&left)
            .map(|(run, steps)| run_json(run, steps))
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        for (run, steps) in &resumed {
            print_run_steps(run, steps, false)?;
        }
        for (run, _) in &left {
            let at = run.wake_at.map(when).unwrap_or_default();
            let what = match run.status {
                RunStatus::Waiting => "it waits until",
                _ => "its next attempt is at",
            };
            println!(
                "run {} is {}: {what} {at}; not due yet, left alone",
                run.id, run.status
            );
        }
    }
    // The most serious outcome among the resumed runs (and those left alone: not finished).
    let severity = |code: u8| match code {
        0 => 0,
        5 => 1,
        6 => 2,
        3 => 3,
        4 => 4,
        _ => 5,
    };
    let code = resumed
        .iter()
        .chain(&left)
        .map(|(run, _)| run.status.exit_code())
        .max_by_key(|&c| severity(c))
        .unwrap_or(0);
    Ok(ExitCode::from(code))
}

/// Resumes in this process: the runs resumed, and the retrying ones left alone (not due yet).
fn resume_local(
    engine: &Engine,
    run: Option<RunId>,
) -> anyhow::Result<(Vec<RunSteps>, Vec<RunSteps>)> {
    let rt = runtime()?;
    let now = engine.now();
    let history = engine.history();
    let not_due = |run: &RunRecord| {
        matches!(run.status, RunStatus::Retrying | RunStatus::Waiting)
            && run.wake_at.is_some_and(|at| at > now)
    };
    let mut outcomes = Vec::new();
    // Retrying runs whose next attempt has not come: left alone.
    let mut left: Vec<RunRecord> = Vec::new();
    match run {
        Some(id) => match history.run(id)? {
            Some(run) if not_due(&run) => left.push(run),
            _ => outcomes.push(rt.block_on(engine.resume(id))?),
        },
        None => {
            outcomes = rt.block_on(engine.resume_unfinished())?;
            outcomes.extend(rt.block_on(engine.resume_due(now))?);
            for timer in history.timers().all()? {
                if outcomes.iter().any(|o| o.run.id == timer.run) {
                    continue;
                }
                if let Some(run) = history.run(timer.run)?.filter(not_due) {
                    left.push(run);
                }
            }
        }
    }
    let resumed = outcomes.into_iter().map(|o| (o.run, o.steps)).collect();
    let mut kept = Vec::with_capacity(left.len());
    for run in left {
        let steps = history.steps(run.id)?;
        kept.push((run, steps));
    }
    Ok((resumed, kept))
}

//! `blockyard resume`: finishes every run a stopped process left unfinished, from its last
//! durable step (a write whose outcome is unknown is checked with its preset's probe first), and
//! continues every `retrying` run whose next attempt has come. A `retrying` run whose time has
//! not come is left alone, saying when it is (exit 6, not finished); `blockyard serve` wakes it
//! by itself.

use std::process::ExitCode;

use blockyard::store::history::{RunRecord, RunStatus};

use super::history::parse_run_id;
use super::run::{init_tracing, print_outcome, run_json, runtime, when, CommonArgs};

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
    let (_, engine) = args.common.engine()?;
    let rt = runtime()?;
    let now = engine.now();
    let history = engine.history();
    let not_due = |run: &RunRecord| {
        run.status == RunStatus::Retrying && run.wake_at.is_some_and(|at| at > now)
    };
    let mut outcomes = Vec::new();
    // Retrying runs whose next attempt has not come: left alone.
    let mut left: Vec<RunRecord> = Vec::new();
    match &args.run {
        Some(id) => {
            let id = parse_run_id(id)?;
            match history.run(id)? {
                Some(run) if not_due(&run) => left.push(run),
                _ => outcomes.push(rt.block_on(engine.resume(id))?),
            }
        }
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
    if outcomes.is_empty() && left.is_empty() && !args.json {
        println!("no unfinished runs");
    }
    if args.json {
        let mut runs = outcomes
            .iter()
            .map(|o| run_json(&o.run, &o.steps))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for run in &left {
            runs.push(run_json(run, &history.steps(run.id)?)?);
        }
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        for outcome in &outcomes {
            print_outcome(outcome, false)?;
        }
        for run in &left {
            let at = run.wake_at.map(when).unwrap_or_default();
            println!(
                "run {} is retrying: its next attempt is at {at}; not due yet, left alone",
                run.id
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
    let code = outcomes
        .iter()
        .map(|o| o.run.status)
        .chain(left.iter().map(|r| r.status))
        .map(RunStatus::exit_code)
        .max_by_key(|&c| severity(c))
        .unwrap_or(0);
    Ok(ExitCode::from(code))
}

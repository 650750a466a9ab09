//! `blockyard resume`: finishes every run a stopped process left unfinished, from its last
//! durable step (a write whose outcome is unknown is checked with its preset's probe first).

use std::process::ExitCode;

use super::history::parse_run_id;
use super::run::{init_tracing, print_outcome, runtime, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Resume only this run (default: every unfinished run).
    run: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long)]
    json: bool,
}

pub fn run(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let (_, engine) = args.common.engine()?;
    let rt = runtime()?;
    let outcomes = match &args.run {
        Some(id) => vec![rt.block_on(engine.resume(parse_run_id(id)?))?],
        None => rt.block_on(engine.resume_unfinished())?,
    };
    if outcomes.is_empty() && !args.json {
        println!("no unfinished runs");
    }
    if args.json {
        let runs: Vec<_> = outcomes
            .iter()
            .map(|o| super::run::run_json(&o.run, &o.steps))
            .collect::<anyhow::Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        for outcome in &outcomes {
            print_outcome(outcome, false)?;
        }
    }
    // The most serious outcome among the resumed runs.
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
        .map(|o| o.run.status.exit_code())
        .max_by_key(|&c| severity(c))
        .unwrap_or(0);
    Ok(ExitCode::from(code))
}

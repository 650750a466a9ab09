//! `blockyard replay RUN`: re-run a recorded run live (a new run linked to it), or `--offline`
//! against its recording, printing per block how the replay differs (exit 1 on any difference).
//!
//! Offline it needs only the data dir: requests are rendered with the run's recorded vars and base
//! URLs, unless `--config FILE` is given explicitly (a `./blockyard.yaml` found by default only
//! says where the data dir is); then with that config's credentials and vars.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use blockyard::replay::{replay, ReplayOptions, Setup};
use serde_json::json;

use super::history::parse_run_id;
use super::run::{init_tracing, print_outcome, run_json, runtime, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The run to replay.
    run: String,
    /// Use today's version of the workflow file the run was started from.
    #[arg(long, conflicts_with = "workflow")]
    latest: bool,
    /// Use this workflow file instead of the recorded snapshot.
    #[arg(long, value_name = "FILE")]
    workflow: Option<PathBuf>,
    /// Reuse the recorded outcomes of the blocks before BLOCK and run from there.
    #[arg(long, value_name = "BLOCK")]
    from: Option<String>,
    /// Send nothing: answer every call from the recording and print the differences. Renders
    /// with the run's recorded vars and base URLs, or with those of `--config FILE` when given.
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    common: CommonArgs,
    /// Print JSON: live, the replay run with its steps; offline, `{"original", "identical", "blocks", "replay"}`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let id = parse_run_id(&args.run)?;
    let (_, engine) = args.common.engine()?;
    let file = match (&args.workflow, args.latest) {
        (Some(file), _) => Some(file.clone()),
        (None, true) => match engine.history().run(id)? {
            Some(run) => Some(PathBuf::from(run.file)),
            None => {
                bail!("no run `{id}` in this data dir; `blockyard history list` shows the runs")
            }
        },
        (None, false) => None,
    };
    let prepared = match file {
        Some(file) => Some(engine.prepare_file(&file)?),
        None => None,
    };
    let config_file = args.common.config_file();
    let options = ReplayOptions {
        from: args.from.clone(),
        offline: args.offline,
        setup: match config_file {
            Some(_) => Setup::Engine,
            None => Setup::Recorded,
        },
    };
    let replayed = runtime()?.block_on(replay(&engine, id, prepared, options))?;
    if !args.offline {
        print_outcome(&replayed.outcome, args.json)?;
        return Ok(super::run::exit_code(&replayed.outcome));
    }
    let identical = replayed.identical();
    if args.json {
        let out = json!({
            "original": id.to_string(),
            "identical": identical,
            "blocks": replayed.diffs,
            "replay": run_json(&replayed.outcome.run, &replayed.outcome.steps)?,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let setup = match config_file {
            Some(file) => format!("the credentials and vars of `{}`", file.display()),
            None => "the run's recorded vars and base URLs".to_owned(),
        };
        println!(
            "offline replay of {id} (`{}`): nothing sent, rendered with {setup}",
            replayed.outcome.run.workflow
        );
        for diff in &replayed.diffs {
            if diff.is_empty() {
                println!("  {}: identical", diff.block);
                continue;
            }
            println!("  {}: differs", diff.block);
            if let Some((old, new)) = &diff.outcome {
                println!("    outcome: {old} → {new}");
            }
            for line in &diff.request {
                println!("    request {line}");
            }
            for line in &diff.saved {
                println!("    saved {line}");
            }
        }
        println!(
            "{}",
            if identical {
                "identical to the recording"
            } else {
                "differs from the recording"
            }
        );
    }
    Ok(if identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

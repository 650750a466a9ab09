//! `blockyard replay RUN`: re-run a recorded run live (a new run linked to it), or `--offline`
//! against its recording, printing per block how the replay differs (exit 1 on any difference).
//!
//! Offline it needs only the data dir: requests are rendered with the run's recorded vars and base
//! URLs, unless `--config FILE` is given explicitly (a `./blockyard.yaml` found by default only
//! says where the data dir is); then with that config's credentials and vars.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use blockyard::replay::{replay, BlockDiff, ReplayOptions, Setup};
use blockyard::store::history::{RunId, RunRecord, StepRecord};
use serde_json::json;

use super::client::{run_steps, Backend, Remote};
use super::history::parse_run_id;
use super::run::{init_tracing, print_run_steps, run_json, runtime, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The run to replay.
    run: String,
    /// Use today's version of the workflow file the run was started from (through a running
    /// service: the version of the run's workflow it has loaded).
    #[arg(long, conflicts_with = "workflow")]
    latest: bool,
    /// Use this workflow file instead of the recorded snapshot (through a running service, it must
    /// be the run's workflow as the service has loaded it: same name and content).
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
    let config_file = args.common.config_file();
    let replayed = match Backend::open(&args.common)? {
        Backend::Local(local) => {
            let engine = local.engine()?;
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
            let options = ReplayOptions {
                from: args.from.clone(),
                offline: args.offline,
                setup: match config_file {
                    Some(_) => Setup::Engine,
                    None => Setup::Recorded,
                },
            };
            let replayed = runtime()?.block_on(replay(&engine, id, prepared, options))?;
            Replayed {
                identical: replayed.identical(),
                diffs: replayed.diffs,
                run: replayed.outcome.run,
                steps: replayed.outcome.steps,
            }
        }
        Backend::Remote(remote) => {
            if args.offline && config_file.is_some() {
                bail!(
                    "`--offline --config` cannot be used {}: the service replays offline with the run's recorded vars and base URLs; drop `--config`",
                    remote.via()
                );
            }
            // The service replays with its loaded version of the run's workflow (`latest`); a
            // file must be that version.
            if let Some(file) = &args.workflow {
                let name = remote.loaded_workflow(file)?;
                let Some((run, _)) = remote.run(id)? else {
                    return Err(remote.no_run(id));
                };
                if run.workflow != name {
                    bail!(
                        "`{}` is workflow `{name}`, but run {id} is of `{}`; {} replays a run with the loaded version of its own workflow",
                        file.display(),
                        run.workflow,
                        remote.via()
                    );
                }
            }
            replay_remote(&remote, &args, id)?
        }
    };
    finish(&args, id, replayed)
}

/// What a replay did, read here or answered by the service.
struct Replayed {
    identical: bool,
    diffs: Vec<BlockDiff>,
    run: RunRecord,
    steps: Vec<StepRecord>,
}

/// `POST /api/runs/{id}/replay`.
fn replay_remote(remote: &Remote, args: &ReplayArgs, id: RunId) -> anyhow::Result<Replayed> {
    let body = json!({
        "from": args.from,
        "offline": args.offline,
        "latest": args.latest || args.workflow.is_some(),
    });
    let answer = remote.post(&format!("/runs/{id}/replay"), body)?;
    if !args.offline {
        let (run, steps) = run_steps(answer)?;
        return Ok(Replayed {
            identical: false,
            diffs: Vec::new(),
            run,
            steps,
        });
    }
    let (run, steps) = run_steps(answer["replay"].clone())?;
    Ok(Replayed {
        identical: answer["identical"] == true,
        diffs: serde_json::from_value(answer["blocks"].clone())
            .with_context(|| format!("{}: unreadable differences", remote.via()))?,
        run,
        steps,
    })
}

fn finish(args: &ReplayArgs, id: RunId, replayed: Replayed) -> anyhow::Result<ExitCode> {
    if !args.offline {
        print_run_steps(&replayed.run, &replayed.steps, args.json)?;
        return Ok(ExitCode::from(replayed.run.status.exit_code()));
    }
    let identical = replayed.identical;
    if args.json {
        let out = json!({
            "original": id.to_string(),
            "identical": identical,
            "blocks": replayed.diffs,
            "replay": run_json(&replayed.run, &replayed.steps)?,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let setup = match args.common.config_file() {
            Some(file) => format!("the credentials and vars of `{}`", file.display()),
            None => "the run's recorded vars and base URLs".to_owned(),
        };
        println!(
            "offline replay of {id} (`{}`): nothing sent, rendered with {setup}",
            replayed.run.workflow
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

//! `blockyard guard held|release|cancel WORKFLOW`: the operator's side of the mass-change guard
//! (see `blockyard::exec::guard`).
//!
//! `held` lists the runs of a workflow the guard holds now. `release` is one decision for the
//! whole held batch: each run is marked released (durably) and continued, its destructive writes
//! sent without counting again; `cancel` cancels them all, nothing of theirs sent. Under a running
//! service the decision goes through its API (`POST /api/workflows/NAME/guard/release|cancel`)
//! and the runs continue there. Exit code 0, or 1 when a released run did not succeed.

use std::process::ExitCode;

use blockyard::exec::guard::BatchDecision;
use blockyard::store::history::{RunId, RunStatus};
use serde_json::{json, Value};

use super::client::{encode_key, Backend};
use super::run::{init_tracing, runtime, CommonArgs};

#[derive(Debug, clap::Subcommand)]
pub enum GuardCommand {
    /// List the runs of a workflow held by its mass-change guard.
    Held(GuardArgs),
    /// Release the whole held batch of a workflow: its destructive writes are sent, uncounted.
    Release(GuardArgs),
    /// Cancel the whole held batch of a workflow: nothing of it is sent.
    Cancel(GuardArgs),
}

#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    /// The workflow's name (its `name:`).
    workflow: String,
    #[command(flatten)]
    common: CommonArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: GuardCommand) -> anyhow::Result<ExitCode> {
    init_tracing();
    match command {
        GuardCommand::Held(args) => held(args),
        GuardCommand::Release(args) => decide(args, true),
        GuardCommand::Cancel(args) => decide(args, false),
    }
}

fn held(args: GuardArgs) -> anyhow::Result<ExitCode> {
    let runs: Vec<(String, String)> = match Backend::open(&args.common)? {
        Backend::Local(local) => runtime()?
            .block_on(local.engine()?.held_runs(&args.workflow))?
            .into_iter()
            .map(|r| (r.id.to_string(), r.error.unwrap_or_default()))
            .collect(),
        Backend::Remote(remote) => {
            let path = format!("/runs?workflow={}&status=held", encode_key(&args.workflow));
            let answer = remote.get(&path)?;
            let mut runs: Vec<(String, String)> = answer
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["id"].as_str().unwrap_or_default().to_owned(),
                        r["error"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            runs.reverse();
            runs
        }
    };
    if args.json {
        let out: Vec<Value> = runs
            .iter()
            .map(|(id, why)| json!({"run": id, "why": why}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if runs.is_empty() {
        println!("no run of `{}` is held", args.workflow);
    } else {
        println!("{} runs of `{}` held:", runs.len(), args.workflow);
        for (id, _) in &runs {
            println!("  {id}");
        }
        if let Some((_, why)) = runs.first() {
            println!("why: {why}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(args: GuardArgs, release: bool) -> anyhow::Result<ExitCode> {
    let decision: BatchDecision = match Backend::open(&args.common)? {
        Backend::Local(local) => {
            let engine = local.engine()?;
            let rt = runtime()?;
            if release {
                rt.block_on(engine.guard_release(&args.workflow))?
            } else {
                rt.block_on(engine.guard_cancel(&args.workflow))?
            }
        }
        Backend::Remote(remote) => {
            let verb = if release { "release" } else { "cancel" };
            let path = format!("/workflows/{}/guard/{verb}", encode_key(&args.workflow));
            let answer = remote.post(&path, json!({}))?;
            let runs = answer["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str()?.parse::<RunId>().ok())
                .collect();
            let statuses = answer["statuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| RunStatus::parse(s.as_str()?))
                .collect();
            BatchDecision {
                workflow: args.workflow.clone(),
                runs,
                statuses,
            }
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else if decision.runs.is_empty() {
        println!(
            "no run of `{}` is held; nothing to {}",
            args.workflow,
            if release { "release" } else { "cancel" }
        );
    } else {
        let verb = if release { "released" } else { "cancelled" };
        println!(
            "{verb} {} held runs of `{}`",
            decision.runs.len(),
            args.workflow
        );
        for (id, status) in decision.runs.iter().zip(&decision.statuses) {
            println!("  {id}  {status}");
        }
    }
    let failed = release && decision.statuses.iter().any(|s| *s != RunStatus::Succeeded);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

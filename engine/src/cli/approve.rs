//! `blockyard approve RUN BLOCK` and `blockyard reject RUN BLOCK`: decide on a block that says
//! `approval: required`.
//!
//! The decision is recorded durably, then the run continues in this process (as `resume` would):
//! approved, the block runs; rejected, it fails ("rejected by an administrator") and its
//! `on_failure` edges are followed, else the run fails. Prints the run's outcome; exit code 0 when
//! it succeeded, 1 otherwise (failed, or waiting for another approval). Under a running service
//! (its `serve.json` in the data dir, or `--server`) the decision goes through its API and the
//! run continues there; the answer comes when it stops again.

use std::process::ExitCode;

use serde_json::json;

use super::client::{encode_key, run_steps, Backend};
use super::history::parse_run_id;
use super::run::{init_tracing, print_run_steps, runtime, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The run id (`blockyard history list --status waiting_approval`).
    run: String,
    /// The block waiting for approval.
    block: String,
    #[command(flatten)]
    common: CommonArgs,
    /// Print the run as JSON.
    #[arg(long)]
    json: bool,
}

/// Approves (`approved`) or rejects the block and continues the run.
pub fn run(args: DecideArgs, approved: bool) -> anyhow::Result<ExitCode> {
    init_tracing();
    let id = parse_run_id(&args.run)?;
    let (run, steps) = match Backend::open(&args.common)? {
        Backend::Local(local) => {
            let engine = local.engine()?;
            let rt = runtime()?;
            let outcome = if approved {
                rt.block_on(engine.approve(id, &args.block))?
            } else {
                rt.block_on(engine.reject(id, &args.block))?
            };
            (outcome.run, outcome.steps)
        }
        Backend::Remote(remote) => {
            let decision = if approved { "approve" } else { "reject" };
            let path = format!("/runs/{id}/blocks/{}/{decision}", encode_key(&args.block));
            run_steps(remote.post(&path, json!({}))?)?
        }
    };
    print_run_steps(&run, &steps, args.json)?;
    Ok(ExitCode::from(run.status.exit_code()))
}

//! `blockyard approve RUN BLOCK` and `blockyard reject RUN BLOCK`: decide on a block that says
//! `approval: required`.
//!
//! The decision is recorded durably, then the run continues in this process (as `resume` would):
//! approved, the block runs; rejected, it fails ("rejected by an administrator") and its
//! `on_failure` edges are followed, else the run fails. Prints the run's outcome; exit code 0 when
//! it succeeded, 1 otherwise (failed, or waiting for another approval).

use std::process::ExitCode;

use super::history::parse_run_id;
use super::run::{init_tracing, print_outcome, runtime, CommonArgs};

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
    let (_, engine) = args.common.engine()?;
    let rt = runtime()?;
    let outcome = if approved {
        rt.block_on(engine.approve(id, &args.block))?
    } else {
        rt.block_on(engine.reject(id, &args.block))?
    };
    print_outcome(&outcome, args.json)?;
    Ok(super::run::exit_code(&outcome))
}

//! `blockyard approve RUN BLOCK` and `blockyard reject RUN BLOCK`: decide on a block that says
//! `approval: required`.
//!
//! The decision is recorded durably, then the run continues in this process (as `resume` would):
//! approved, the block runs; rejected, it fails ("rejected by an administrator") and its
//! `on_failure` edges are followed, else the run fails. Prints the run's outcome; exit code 0 when
//! it succeeded, 1 otherwise (failed, or waiting for another approval). The decision records the
//! OS user (`$USER`) as who decided, and `--comment`.

use std::process::ExitCode;

use blockyard::exec::approval::Decider;

use super::history::parse_run_id;
use super::run::{init_tracing, print_outcome, runtime, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The run id (`blockyard history list --status waiting_approval`).
    run: String,
    /// The block waiting for approval.
    block: String,
    /// Why: recorded with who decided (the OS user) and when, shown by `history show`.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
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
    let decider = Decider {
        by: Some(os_user()),
        comment: args.comment.filter(|c| !c.trim().is_empty()),
    };
    let outcome = rt.block_on(engine.decide(id, &args.block, approved, decider))?;
    print_outcome(&outcome, args.json)?;
    Ok(super::run::exit_code(&outcome))
}

/// Who runs this command on the data dir: `$USER`, else `$LOGNAME`, else `$USERNAME` (Windows).
pub(crate) fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "an unknown local user".to_owned())
}

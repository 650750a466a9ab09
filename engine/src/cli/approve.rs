//! `blockyard approve RUN BLOCK` and `blockyard reject RUN BLOCK`: decide on a block that says
//! `approval: required`.
//!
//! The decision is recorded durably, then the run continues in this process (as `resume` would):
//! approved, the block runs; rejected, it fails ("rejected by an administrator") and its
//! `on_failure` edges are followed, else the run fails. Prints the run's outcome; exit code 0 when
//! it succeeded, 1 otherwise (failed, or waiting for another approval). The decision records who
//! decided (the OS user, `$USER`, on a data dir; the token's name through a service) and
//! `--comment`. Under a running service (its `serve.json` in the data dir, or `--server`) the
//! decision goes through its API and the run continues there; the answer comes when it stops
//! again.

use std::process::ExitCode;

use blockyard::exec::approval::Decider;
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
    let comment = args.comment.filter(|c| !c.trim().is_empty());
    let (run, steps) = match Backend::open(&args.common)? {
        Backend::Local(local) => {
            let engine = local.engine()?;
            let decider = Decider {
                by: Some(os_user()),
                comment,
            };
            let outcome = runtime()?.block_on(engine.decide(id, &args.block, approved, decider))?;
            (outcome.run, outcome.steps)
        }
        Backend::Remote(remote) => {
            let decision = if approved { "approve" } else { "reject" };
            let path = format!("/runs/{id}/blocks/{}/{decision}", encode_key(&args.block));
            let body = match comment {
                Some(comment) => json!({ "comment": comment }),
                None => json!({}),
            };
            run_steps(remote.post(&path, body)?)?
        }
    };
    print_run_steps(&run, &steps, args.json)?;
    Ok(ExitCode::from(run.status.exit_code()))
}

/// Who runs this command on the data dir: `$USER`, else `$LOGNAME`, else `$USERNAME` (Windows).
pub(crate) fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "an unknown local user".to_owned())
}

//! `blockyard retry-failed`: after an outage, replay live every failed or `needs_attention` run
//! matching the filters, each at most once (`blockyard::service::retry` keeps the marks).
//!
//! Without `--yes` it only lists what it would replay (and what it skips, already retried); with
//! `--yes` it replays each, in the order they were created, and prints the new run's outcome.
//! On a data dir no process holds, the replays run here, with this config's credentials, as the
//! OS user; under `blockyard serve` (its `serve.json`, or `--server`) they run in the service, with
//! its credentials, through `POST /api/retry-failed`, as the token's name. Both give the same
//! listing and the same lines (`blockyard::service::retry::retry_failed` does the work); `--json`
//! prints the entries.

use std::process::ExitCode;

use blockyard::service::pause::os_user;
use blockyard::service::retry::{retry_failed, RetryAction, RetryEntry, RetryFilter};
use chrono::SecondsFormat;
use serde_json::json;

use super::client::Backend;
use super::run::{init_tracing, runtime, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// Only runs of this workflow (its `name:`).
    #[arg(long, value_name = "NAME")]
    workflow: Option<String>,
    /// Only runs started within this long (`30m`, `24h`, `7d`).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Only runs whose error contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    error: Option<String>,
    /// Replay them; without it, only list what would be replayed.
    #[arg(long)]
    yes: bool,
    /// Print the entries as a JSON array (`[{"run", "workflow", "status", "subject", "error",
    /// "action", "retried"?, "replay"?, "replay_error"?}]`, as `POST /api/retry-failed`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn line(entry: &RetryEntry) -> String {
    format!(
        "{} {} {} {} ({})",
        entry.run,
        entry.workflow,
        entry.status,
        entry.subject.as_deref().unwrap_or("-"),
        entry.error.as_deref().unwrap_or("no error text")
    )
}

fn text(entry: &RetryEntry) -> String {
    match entry.action {
        RetryAction::WouldReplay => format!("would replay {}", line(entry)),
        RetryAction::Skipped => {
            let Some(mark) = &entry.retried else {
                return format!("skipped {}: already retried", entry.run);
            };
            let at = mark.at.to_rfc3339_opts(SecondsFormat::Secs, true);
            match &mark.run {
                Some(new) => format!("skipped {}: already retried by run {new} at {at}", entry.run),
                None => format!(
                    "skipped {}: a retry was started at {at} by {} but its run was not recorded; see `blockyard history list`",
                    entry.run, mark.by
                ),
            }
        }
        RetryAction::Replayed => {
            let (new, status) = entry
                .replay
                .as_ref()
                .map(|r| (r.id.as_str(), r.status.as_str()))
                .unwrap_or_default();
            format!("retried {} as run {new}: {status}", entry.run)
        }
        RetryAction::ReplayFailed => format!(
            "retrying {} failed: {}",
            entry.run,
            entry.replay_error.as_deref().unwrap_or_default()
        ),
    }
}

pub fn run(args: RetryArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let since = match &args.since {
        None => None,
        Some(text) => Some(super::history::ago("since", text)?),
    };
    let entries: Vec<RetryEntry> = match Backend::open(&args.common)? {
        Backend::Local(local) => {
            let engine = local.engine()?;
            let filter = RetryFilter {
                workflow: args.workflow.clone(),
                since,
                error: args.error.clone(),
            };
            runtime()?.block_on(retry_failed(&engine, &filter, &os_user(), args.yes))?
        }
        Backend::Remote(remote) => serde_json::from_value(remote.post(
            "/retry-failed",
            json!({
                "workflow": args.workflow,
                "since": args.since,
                "error": args.error,
                "yes": args.yes,
            }),
        )?)?,
    };
    let all_ok = !entries.iter().any(RetryEntry::unsuccessful);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else if entries.is_empty() {
        println!("no failed or needs_attention runs match");
    } else {
        for entry in &entries {
            println!("{}", text(entry));
        }
        if !args.yes {
            let todo = entries
                .iter()
                .filter(|e| e.action == RetryAction::WouldReplay)
                .count();
            println!(
                "{todo} run{} would be replayed live; run again with `--yes` to replay {}",
                if todo == 1 { "" } else { "s" },
                if todo == 1 { "it" } else { "them" }
            );
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

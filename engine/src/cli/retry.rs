//! `blockyard retry-failed`: after an outage, replay live every failed or `needs_attention` run
//! matching the filters, each at most once (`blockyard::service::retry` keeps the marks).
//!
//! Without `--yes` it only lists what it would replay (and what it skips, already retried); with
//! `--yes` it replays each, in the order they were created, and prints the new run's outcome.
//! It works on a data dir no process holds: stop `serve` first (the runs it replays are live, on
//! this machine, with this config's credentials).

use std::process::ExitCode;

use anyhow::bail;
use blockyard::exec::RunRecord;
use blockyard::replay::{replay, ReplayOptions, Setup};
use blockyard::service::pause::os_user;
use blockyard::service::retry::{candidates, Retries, RetryFilter, RetryMark};
use chrono::SecondsFormat;

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
    #[command(flatten)]
    common: CommonArgs,
}

fn line(run: &RunRecord) -> String {
    let subject = run
        .subject
        .as_ref()
        .map(|s| format!("{}/{}", s.collection, s.key))
        .unwrap_or_else(|| "-".to_owned());
    format!(
        "{} {} {} {} ({})",
        run.id,
        run.workflow,
        run.status,
        subject,
        run.error.as_deref().unwrap_or("no error text")
    )
}

fn skipped(run: &RunRecord, mark: &RetryMark) -> String {
    let at = mark.at.to_rfc3339_opts(SecondsFormat::Secs, true);
    match &mark.run {
        Some(new) => format!("skipped {}: already retried by run {new} at {at}", run.id),
        None => format!(
            "skipped {}: a retry was started at {at} by {} but its run was not recorded; see `blockyard history list`",
            run.id, mark.by
        ),
    }
}

pub fn run(args: RetryArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let since = match &args.since {
        None => None,
        Some(text) => Some(chrono::Utc::now() - super::history::duration("since", text)?),
    };
    let filter = RetryFilter {
        workflow: args.workflow.clone(),
        since,
        error: args.error.clone(),
    };
    let engine = match Backend::open(&args.common)? {
        Backend::Local(local) => local.engine()?,
        Backend::Remote(remote) => bail!(
            "{} holds this data dir; `retry-failed` does not work through it yet: stop it, then run `retry-failed` again",
            remote.via()
        ),
    };
    let store = engine.records().store().clone();
    let retries = Retries::open(&store)?;
    let found = candidates(engine.history(), &retries, &filter)?;
    if found.is_empty() {
        println!("no failed or needs_attention runs match");
        return Ok(ExitCode::SUCCESS);
    }
    let todo: Vec<&RunRecord> = found
        .iter()
        .filter(|(_, mark)| mark.is_none())
        .map(|(run, _)| run)
        .collect();
    for (run, mark) in &found {
        match mark {
            Some(mark) => println!("{}", skipped(run, mark)),
            None if args.yes => {}
            None => println!("would replay {}", line(run)),
        }
    }
    if !args.yes {
        println!(
            "{} run{} would be replayed live; run again with `--yes` to replay {}",
            todo.len(),
            if todo.len() == 1 { "" } else { "s" },
            if todo.len() == 1 { "it" } else { "them" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let by = os_user();
    let rt = runtime()?;
    let mut all_ok = true;
    for run in todo {
        let id = run.id.to_string();
        if let Some(mark) = retries.claim(&id, &by, chrono::Utc::now())? {
            println!("{}", skipped(run, &mark));
            continue;
        }
        // The mark is durable before the replay sends anything: never twice, even after a crash.
        rt.block_on(store.flush())?;
        let options = ReplayOptions {
            from: None,
            offline: false,
            setup: Setup::Engine,
        };
        match rt.block_on(replay(&engine, run.id, None, options)) {
            Ok(replayed) => {
                let new = &replayed.outcome.run;
                let mark = retries.get(&id)?.expect("claimed above");
                retries.link(&id, mark, &new.id.to_string())?;
                all_ok &= new.status.name() == "succeeded";
                println!("retried {id} as run {}: {}", new.id, new.status);
            }
            Err(err) => {
                all_ok = false;
                println!("retrying {id} failed: {err}");
            }
        }
    }
    rt.block_on(store.flush())?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

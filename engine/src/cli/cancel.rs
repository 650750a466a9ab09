//! `blockyard cancel RUN`: stops a run between steps.
//!
//! When no process holds the data dir, an unfinished run is marked `cancelled` at once (so
//! `resume` leaves it alone, and a run waiting for approval can no longer be approved); when one
//! does (a `blockyard run` in progress), a marker file asks it to stop the run before its next
//! block starts. Under `blockyard serve` (its `serve.json` in the data dir, or `--server`), the
//! cancel goes through its API (`POST /api/runs/{id}/cancel`), which cancels a run waiting for
//! approval at once and asks a run it executes to stop before its next block.

use std::process::ExitCode;

use anyhow::bail;
use blockyard::exec::cancel::{mark_cancelled, reason, request_by_marker};
use blockyard::records::{Collection, RecordKey, RecordStore, Subject};
use blockyard::store::history::{History, RunId, RunMode};
use blockyard::store::in_flight::run_holder;
use blockyard::store::StoreError;
use blockyard::trigger::Triggers;
use serde_json::json;

use super::client::{Backend, Remote};
use super::history::parse_run_id;
use super::run::CommonArgs;

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run id.
    run: String,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn run(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let id = parse_run_id(&args.run)?;
    let local = match Backend::open(&args.common) {
        Ok(Backend::Local(local)) => local,
        Ok(Backend::Remote(remote)) => return cancel_remote(&remote, id),
        Err(err) => match err.downcast_ref::<StoreError>() {
            Some(StoreError::Locked { dir }) => {
                request_by_marker(dir, id)?;
                println!("asked the process running {id} to stop it before its next block");
                return Ok(ExitCode::SUCCESS);
            }
            _ => return Err(err),
        },
    };
    let store = &local.store;
    let history = History::open(store)?;
    let Some(run) = history.run(id)? else {
        bail!("no run `{id}` in this data dir; `blockyard history list` shows the runs");
    };
    if run.status.is_finished() {
        println!("run {id} already finished: {}", run.status);
        return Ok(ExitCode::from(1));
    }
    let run = super::run::runtime()?.block_on(async {
        let reason = reason(&history, &run).await?;
        mark_cancelled(&history, run, reason).await
    })?;
    // Its hold on the subject goes; record changes held back for after it wait for the
    // next `serve`, which has the workflows to evaluate them.
    if let Some(subject) = run.subject.as_ref().filter(|_| run.mode == RunMode::Live) {
        if let Some(collection) = Collection::parse(&subject.collection) {
            RecordStore::open(store)?.release(
                &Subject::new(collection, RecordKey::parse(&subject.key)),
                &run_holder(id),
                &Triggers::none(),
                chrono::Utc::now(),
            )?;
        }
    }
    local.flush()?;
    println!("run {id} cancelled");
    Ok(ExitCode::SUCCESS)
}

/// `POST /api/runs/{id}/cancel`, answered as the local path answers.
fn cancel_remote(remote: &Remote, id: RunId) -> anyhow::Result<ExitCode> {
    match remote.try_post(&format!("/runs/{id}/cancel"), json!({}))? {
        Ok(answer) if answer["cancel_requested"] == true => {
            println!("asked the process running {id} to stop it before its next block");
        }
        Ok(_) => println!("run {id} cancelled"),
        Err(refused) if refused.status == 404 => return Err(remote.no_run(id)),
        Err(refused) if refused.status == 409 => {
            let run = remote.get(&format!("/runs/{id}"))?;
            println!(
                "run {id} already finished: {}",
                run["status"].as_str().unwrap_or("?")
            );
            return Ok(ExitCode::from(1));
        }
        Err(refused) => return Err(remote.refused(refused)),
    }
    Ok(ExitCode::SUCCESS)
}

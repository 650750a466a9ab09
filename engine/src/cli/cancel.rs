//! `blockyard cancel RUN`: stops a run between steps.
//!
//! When no process holds the data dir, an unfinished run is marked `cancelled` at once (so
//! `resume` leaves it alone, and a run waiting for approval can no longer be approved); when one
//! does (a `blockyard run` in progress), a marker file asks it to stop the run before its next
//! block starts. Under `blockyard serve`, cancel through its API (`POST /api/runs/{id}/cancel`),
//! which cancels a run waiting for approval at once.

use std::process::ExitCode;

use anyhow::bail;
use blockyard::exec::cancel::{mark_cancelled, reason, request_by_marker};
use blockyard::records::{Collection, RecordKey, RecordStore, Subject};
use blockyard::store::history::{History, RunMode};
use blockyard::store::in_flight::run_holder;
use blockyard::store::{Store, StoreError};
use blockyard::trigger::Triggers;

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
    let config = args.common.config()?;
    let dir = args.common.data_dir(config.as_ref());
    match Store::open(&dir) {
        Ok(store) => {
            let history = History::open(&store)?;
            let Some(run) = history.run(id)? else {
                bail!("no run `{id}` in this data dir; `blockyard history list` shows the runs");
            };
            if run.status.is_finished() {
                println!("run {id} already finished: {}", run.status);
                return Ok(ExitCode::from(1));
            }
            let reason = reason(&history, &run)?;
            let run = mark_cancelled(&history, run, reason)?;
            // Its hold on the subject goes; record changes held back for after it wait for the
            // next `serve`, which has the workflows to evaluate them.
            if let Some(subject) = run.subject.as_ref().filter(|_| run.mode == RunMode::Live) {
                if let Some(collection) = Collection::parse(&subject.collection) {
                    RecordStore::open(&store)?.release(
                        &Subject::new(collection, RecordKey::parse(&subject.key)),
                        &run_holder(id),
                        &Triggers::none(),
                        chrono::Utc::now(),
                    )?;
                }
            }
            super::run::runtime()?.block_on(store.flush())?;
            println!("run {id} cancelled");
        }
        Err(StoreError::Locked { .. }) => {
            request_by_marker(&dir, id)?;
            println!("asked the process running {id} to stop it before its next block");
        }
        Err(err) => return Err(err.into()),
    }
    Ok(ExitCode::SUCCESS)
}

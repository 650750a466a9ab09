//! `blockyard store backup DIR` and `blockyard store restore BACKUP DATA_DIR`: a consistent copy of
//! a data dir, and putting one back (see `blockyard::store::backup` for how a copy of a live
//! store is consistent).
//!
//! A data dir a running `serve` holds cannot be opened here (sled lets one process open it): back
//! it up through the service with `--server URL` (`POST /api/store/backup`, with the API token
//! from `BLOCKYARD_TOKEN`); the backup is written by the server, so `DIR` is a path on its
//! machine. Restore needs the data dir free: stop `serve` first.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use blockyard::store::backup::{restore, BackupReport};
use blockyard::store::{Store, StoreError};

use super::run::CommonArgs;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the data dir, at one instant, into DIR (a new or empty directory), while runs go on.
    Backup(BackupArgs),
    /// Put a backup back as a data dir (no process may hold it; `--force` to replace one).
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup: a new or empty directory.
    dir: PathBuf,
    /// Back up the data dir of the `blockyard serve` at this URL (`http://127.0.0.1:8080`),
    /// through its API, with the token in `BLOCKYARD_TOKEN`; DIR is on the server's machine.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A directory `blockyard store backup` wrote.
    backup: PathBuf,
    /// The data dir to restore into (new or empty, unless `--force`).
    data_dir: PathBuf,
    /// Replace the store of a data dir that is not empty (its token store is kept).
    #[arg(long)]
    force: bool,
}

pub fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Backup(args) => backup(args),
        StoreCommand::Restore(args) => {
            restore(&args.backup, &args.data_dir, args.force)?;
            println!(
                "restored `{}` into `{}`; `blockyard resume` (or `blockyard serve`) finishes the runs it holds unfinished",
                args.backup.display(),
                args.data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let report = match &args.server {
        Some(server) => through_server(server, &args.dir)?,
        None => {
            let config = args.common.config()?;
            let data_dir = args.common.data_dir(config.as_ref());
            let store = match Store::open(&data_dir) {
                Err(StoreError::Locked { dir }) => bail!(
                    "the data dir `{}` is in use by another blockyard process; when it is `blockyard serve`, back it up through it: `blockyard store backup {} --server http://ADDR` (with `BLOCKYARD_TOKEN`)",
                    dir.display(),
                    args.dir.display()
                ),
                other => other?,
            };
            store.backup(&args.dir)?
        }
    };
    println!(
        "backed up {} entries in {} trees into `{}`",
        report.entries,
        report.trees,
        report.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `POST /api/store/backup` on a running `serve`, with `dir` made absolute (the server's working
/// directory is not this one's).
fn through_server(server: &str, dir: &Path) -> anyhow::Result<BackupReport> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot resolve the backup directory `{}`", dir.display()))?;
    let url = format!("{}/api/store/backup", server.trim_end_matches('/'));
    super::run::runtime()?.block_on(async {
        let mut request = reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({ "dir": dir }));
        if let Ok(token) = std::env::var("BLOCKYARD_TOKEN") {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach `blockyard serve` at `{server}`"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            bail!("the server refused the backup ({status}): {message}");
        }
        Ok(BackupReport {
            dir: body["dir"].as_str().map(PathBuf::from).unwrap_or(dir),
            trees: body["trees"].as_u64().unwrap_or(0) as usize,
            entries: body["entries"].as_u64().unwrap_or(0),
        })
    })
}

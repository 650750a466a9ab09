//! `blockyard store backup DIR` and `blockyard store restore BACKUP DATA_DIR`: a consistent copy of
//! a data dir, and putting one back (see `blockyard::store::backup` for how a copy of a live
//! store is consistent). `blockyard store migrate` brings a PostgreSQL store's schema to this
//! release's version, and `blockyard store copy` copies a sled data dir into one
//! (`blockyard::store::postgres`). `blockyard serve` runs on a `store: postgres` database; the
//! other commands that would open a local store refuse such a config ([`refuse_postgres`]) rather
//! than use the sled data dir behind the user's back.
//!
//! A data dir a running `serve` holds is backed up through the service, like every state command
//! (its `serve.json`, or `--server URL`: `POST /api/store/backup`, with the API token from
//! `BLOCKYARD_TOKEN`); the backup is then written by the server, so `DIR` is a path on its
//! machine. Restore needs the data dir free: stop `serve` first.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use blockyard::config::{Config, StoreConfig};
use blockyard::store::backup::{restore, BackupReport};
use blockyard::store::postgres::{schema, Postgres};
use blockyard::store::StoreError;

use super::client::Backend;

use super::run::{runtime, CommonArgs};

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the data dir, at one instant, into DIR (a new or empty directory), while runs go on.
    Backup(BackupArgs),
    /// Put a backup back as a data dir (no process may hold it; `--force` to replace one).
    Restore(RestoreArgs),
    /// Apply the PostgreSQL store's schema migrations (the config's `store: postgres`) and print
    /// its schema version.
    Migrate(MigrateArgs),
    /// Copy a sled data dir into the PostgreSQL store (migrating it first); run it again to
    /// finish a copy that stopped: what is there already is skipped.
    Copy(CopyArgs),
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The PostgreSQL URL (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`; default: the config's
    /// `store.postgres.url`, which keeps the password out of the process list).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// The sled data dir to copy (default: the config's `data_dir`, else ./.blockyard).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The configuration file (default: ./blockyard.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The configuration file (default: ./blockyard.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup: a new or empty directory.
    dir: PathBuf,
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
        StoreCommand::Migrate(args) => migrate(args),
        StoreCommand::Copy(args) => copy(args),
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
    let report = match Backend::open(&args.common) {
        Ok(Backend::Local(local)) => local.store.backup(&args.dir)?,
        Ok(Backend::Remote(remote)) => {
            // The server writes the backup: `dir` is made absolute, as its working directory is
            // not this one's.
            let dir = std::path::absolute(&args.dir).with_context(|| {
                format!("cannot resolve the backup directory `{}`", args.dir.display())
            })?;
            let body = remote.post("/store/backup", serde_json::json!({ "dir": dir }))?;
            BackupReport {
                dir: body["dir"].as_str().map(PathBuf::from).unwrap_or(dir),
                trees: body["trees"].as_u64().unwrap_or(0) as usize,
                entries: body["entries"].as_u64().unwrap_or(0),
            }
        }
        Err(err) => match err.downcast_ref::<StoreError>() {
            Some(StoreError::Locked { dir }) => bail!(
                "the data dir `{}` is in use by another blockyard process; when it is `blockyard serve`, back it up through it: `blockyard store backup {} --server http://ADDR` (with `BLOCKYARD_TOKEN`)",
                dir.display(),
                args.dir.display()
            ),
            _ => return Err(err),
        },
    };
    println!(
        "backed up {} entries in {} trees into `{}`",
        report.entries,
        report.trees,
        report.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The PostgreSQL URL of the config's `store: postgres` (`what` is the command, for the error).
fn postgres_url(config: &Config, what: &str) -> anyhow::Result<String> {
    match &config.store {
        StoreConfig::Postgres { url } => Ok(url.resolve()?),
        StoreConfig::Sled => bail!(
            "`{what}` works on a PostgreSQL store, and `{}` sets none; add `store: {{postgres: {{url: \"${{BLOCKYARD_POSTGRES_URL}}\"}}}}` to it (a sled data dir needs no migration: its format is checked when it opens)",
            config.file.display()
        ),
    }
}

fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::find(args.config.as_deref())?;
    let url = postgres_url(&config, "blockyard store migrate")?;
    let migrated = runtime()?.block_on(async {
        let pg = Postgres::connect(&url, None)?;
        schema::migrate(&pg).await.map(|m| (pg, m))
    });
    let (pg, migrated) = migrated?;
    if migrated.from == migrated.to {
        println!(
            "the PostgreSQL store at `{}` is at schema version {} already",
            pg.url(),
            migrated.to
        );
    } else {
        println!(
            "migrated the PostgreSQL store at `{}` from schema version {} to {}",
            pg.url(),
            migrated.from,
            migrated.to
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a config with `store: postgres` for `what`, which runs on the sled data dir `dir`
/// only in this release: never a silent fallback to the data dir.
pub fn refuse_postgres(config: Option<&Config>, what: &str, dir: &Path) -> anyhow::Result<()> {
    match config {
        Some(config) if matches!(config.store, StoreConfig::Postgres { .. }) => bail!(
            "`{}` sets `store: postgres`, and {what} runs on PostgreSQL only through `blockyard serve`: start `serve` (then {what} finds it through the data dir `{}`), or give `--server URL`; it will not fall back to the sled data dir (remove `store:` to use that instead)",
            config.file.display(),
            dir.display()
        ),
        _ => Ok(()),
    }
}

fn copy(args: CopyArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Some(Config::find(Some(path))?),
        None if Path::new("blockyard.yaml").exists() => Some(Config::find(None)?),
        None => None,
    };
    let url = match (&args.to, &config) {
        (Some(url), _) => url.clone(),
        (None, Some(config)) => postgres_url(config, "blockyard store copy")?,
        (None, None) => bail!(
            "`blockyard store copy` needs the PostgreSQL store: give `--to postgres://USER:PASSWORD@HOST:PORT/DATABASE`, or `store: {{postgres: {{url: ...}}}}` in `blockyard.yaml`"
        ),
    };
    let dir = args
        .data_dir
        .clone()
        .or_else(|| config.as_ref().map(|c| c.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from(".blockyard"));
    if !dir.join(blockyard::store::FORMAT_FILE).exists() && !dir.join("db").exists() {
        bail!(
            "`{}` is not a blockyard data dir (no `{}` file and no `db`); pass the data dir to copy with `--data-dir DIR`",
            dir.display(),
            blockyard::store::FORMAT_FILE
        );
    }
    let store = blockyard::store::Store::open(&dir)?;
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:20} {bar:40} {pos}/{len}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = |part: &'static str, done: u64, total: u64| {
        bar.set_message(part);
        bar.set_length(total);
        bar.set_position(done);
    };
    let (pg, report) = runtime()?.block_on(async {
        let pg = Postgres::connect(&url, None)?;
        schema::migrate(&pg).await?;
        let report = blockyard::store::postgres::copy::copy(&store, &pg, &progress).await?;
        Ok::<_, StoreError>((pg, report))
    })?;
    bar.finish_and_clear();
    for part in &report {
        println!(
            "{}: {} copied, {} there already",
            part.part, part.copied, part.skipped
        );
    }
    println!(
        "copied `{}` into the PostgreSQL store at `{}`",
        dir.display(),
        pg.url()
    );
    Ok(ExitCode::SUCCESS)
}

//! `blockyard records import|list|show|delete`: the record collections from the command line.
//!
//! Also home of the workflow loading that record writes trigger ([`TriggerArgs`]); the data dir
//! and config come from [`CommonArgs`], as for every store-using command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use blockyard::config::Config;
use blockyard::records::import::{import, Format, ImportOptions};
use blockyard::records::{
    Change, Collection, Fields, KeyRule, Outcome, RecordKey, RecordStore, Subject, Write, WriteMode,
};
use blockyard::store::queue::{Queue, QueueId};
use blockyard::store::Store;
use blockyard::trigger::Triggers;

use super::run::CommonArgs;
use super::PresetArgs;

/// Which workflows record writes may start.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// The directory of workflows whose record triggers the writes are checked against.
    #[arg(long, value_name = "DIR", default_value = "workflows")]
    workflows: PathBuf,
    /// Write the records without starting any workflow.
    #[arg(long)]
    no_trigger: bool,
}

impl TriggerArgs {
    /// The workflows; none with `--no-trigger`, or when the default `workflows/` does not exist.
    pub fn load(&self, config: Option<&Config>, presets: &PresetArgs) -> anyhow::Result<Triggers> {
        if self.no_trigger || (self.workflows == Path::new("workflows") && !self.workflows.is_dir())
        {
            return Ok(Triggers::none());
        }
        let global: Fields = config
            .map(|c| c.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Triggers::load_dir(
            &self.workflows,
            &presets.load()?,
            &global,
        )?)
    }
}

/// A record collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CollectionArg {
    People,
    #[value(name = "saas_users")]
    SaasUsers,
}

impl From<CollectionArg> for Collection {
    fn from(c: CollectionArg) -> Collection {
        match c {
            CollectionArg::People => Collection::People,
            CollectionArg::SaasUsers => Collection::SaasUsers,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum RecordsCommand {
    /// Upsert records from a CSV, JSON (array of objects) or JSONL file.
    ///
    /// Prints the counts (created, updated, unchanged, rejected) and each rejected row with its line
    /// and reason; a rejected row is skipped and the rest imported. Exit code 0 when every row was
    /// used, 1 when any was rejected, 2 when the import could not run.
    ///
    /// Example: `blockyard records import people hr.csv --mode create_update`
    Import(ImportArgs),
    /// List a collection's records (`--json`: an array of their fields).
    List(ListArgs),
    /// Show one record: `blockyard records show people jane@acme.com`.
    Show(ShowArgs),
    /// Delete one record (workflows watching `deleted` are started unless `--no-trigger`).
    Delete(DeleteArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    collection: CollectionArg,
    /// The file to import.
    file: PathBuf,
    /// The file's format (default: from its extension).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The field that identifies a record (default `email`; SaaS users are keyed by `app` too).
    #[arg(long, value_name = "FIELD")]
    key: Option<String>,
    /// Create and update, only create new records, or only update existing ones.
    #[arg(long, value_enum, default_value = "create_update")]
    mode: ModeArg,
    /// Report what would change, and write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    triggers: TriggerArgs,
    #[command(flatten)]
    common: CommonArgs,
}

/// `--mode`, spelt as the workflow language spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    #[value(name = "create_update")]
    CreateUpdate,
    #[value(name = "create_only")]
    CreateOnly,
    #[value(name = "update_only")]
    UpdateOnly,
}

impl From<ModeArg> for WriteMode {
    fn from(m: ModeArg) -> WriteMode {
        match m {
            ModeArg::CreateUpdate => WriteMode::CreateUpdate,
            ModeArg::CreateOnly => WriteMode::CreateOnly,
            ModeArg::UpdateOnly => WriteMode::UpdateOnly,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    collection: CollectionArg,
    /// Print a JSON array of the records' fields instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    collection: CollectionArg,
    /// The record's key: an email, or `app/email` for a SaaS user.
    key: String,
    /// Print the record's fields as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    collection: CollectionArg,
    /// The record's key: an email, or `app/email` for a SaaS user.
    key: String,
    #[command(flatten)]
    triggers: TriggerArgs,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn run(command: RecordsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RecordsCommand::Import(args) => run_import(args),
        RecordsCommand::List(args) => run_list(args),
        RecordsCommand::Show(args) => run_show(args),
        RecordsCommand::Delete(args) => run_delete(args),
    }
}

fn run_import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = match args.format.or_else(|| Format::from_path(&args.file)) {
        Some(f) => f,
        None => bail!(
            "cannot tell the format of `{}` from its extension; pass `--format csv|json|jsonl`",
            args.file.display()
        ),
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open `{}`", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (store, config) = args.common.open()?;
    let triggers = args.triggers.load(config.as_ref(), &args.common.presets)?;
    let records = RecordStore::open(&store)?;
    let collection = Collection::from(args.collection);
    let options = ImportOptions {
        collection,
        key: match &args.key {
            Some(field) => KeyRule::with_field(collection, field),
            None => KeyRule::new(collection),
        },
        mode: args.mode.into(),
        format,
        dry_run: args.dry_run,
    };
    let bar = if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {elapsed} (eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let summary = import(
        file,
        &options,
        &records,
        &triggers,
        chrono::Utc::now(),
        &mut |read| bar.set_position(read),
    );
    bar.finish_and_clear();
    let summary = summary?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(store.flush())?;
    let prefix = if summary.dry_run { "dry run: " } else { "" };
    println!("{prefix}{}: {}", collection.name(), summary.counts());
    if summary.dry_run {
        println!(
            "{} run requests would be queued; nothing was written",
            summary.queued
        );
    } else {
        print_queued(&store, summary.queued, &summary.queued_ids)?;
    }
    for rejection in &summary.rejections {
        println!("{rejection}");
    }
    if summary.rejected > summary.rejections.len() as u64 {
        println!(
            "… and {} more rejected rows",
            summary.rejected - summary.rejections.len() as u64
        );
    }
    Ok(if summary.rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = args.common.open()?;
    let records = RecordStore::open(&store)?;
    let collection = Collection::from(args.collection);
    if args.json {
        let all: Vec<Fields> = records
            .list(collection)
            .map(|r| r.map(|(_, fields)| fields))
            .collect::<Result<_, _>>()?;
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        let mut n = 0;
        for item in records.list(collection) {
            let (key, fields) = item?;
            println!("{key}  {}", serde_json::Value::Object(fields));
            n += 1;
        }
        if n == 0 {
            eprintln!("no {} records", collection.name());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn find(
    common: &CommonArgs,
    collection: Collection,
    key: &str,
) -> anyhow::Result<(Store, Subject)> {
    let (store, _) = common.open()?;
    Ok((store, Subject::new(collection, RecordKey::parse(key))))
}

fn run_show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let collection = Collection::from(args.collection);
    let (store, subject) = find(&args.common, collection, &args.key)?;
    let Some(fields) = RecordStore::open(&store)?.get(&subject)? else {
        eprintln!(
            "error: no {} record `{}`; `blockyard records list {}` shows them",
            collection.name(),
            subject.key,
            collection.name()
        );
        return Ok(ExitCode::from(1));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&fields)?);
    } else {
        for (name, value) in &fields {
            match value {
                serde_json::Value::String(s) => println!("{name}: {s}"),
                other => println!("{name}: {other}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let collection = Collection::from(args.collection);
    let (store, config) = args.common.open()?;
    let subject = Subject::new(collection, RecordKey::parse(&args.key));
    let triggers = args.triggers.load(config.as_ref(), &args.common.presets)?;
    let written = RecordStore::open(&store)?.write(
        &[Write {
            subject: subject.clone(),
            change: Change::Delete,
        }],
        &triggers,
        chrono::Utc::now(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(store.flush())?;
    match written.first().map(|w| w.outcome) {
        Some(Outcome::Deleted) => {
            println!("deleted {subject}");
            let queued = &written[0].queued;
            if !queued.is_empty() {
                print_queued(&store, queued.len() as u64, queued)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("error: no {} record `{}`", collection.name(), subject.key);
            Ok(ExitCode::from(1))
        }
    }
}

/// The most queued runs an import lists one by one.
const QUEUED_LISTED: usize = 20;

/// How many run requests a write queued, how they start, and the first of them (id, workflow,
/// subject, cause).
fn print_queued(store: &Store, total: u64, ids: &[QueueId]) -> anyhow::Result<()> {
    if total == 0 {
        println!("0 run requests queued");
        return Ok(());
    }
    println!(
        "{total} run requests queued; `blockyard serve` on this data dir starts them (`blockyard history list --status queued` lists them):"
    );
    let queue = Queue::open(store)?;
    for id in ids.iter().take(QUEUED_LISTED) {
        if let Some(entry) = queue.get(*id)? {
            let subject = entry
                .request
                .subject
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string);
            println!(
                "  {id}  {}  {subject}  {}",
                entry.request.workflow, entry.request.trigger
            );
        }
    }
    let listed = ids.len().min(QUEUED_LISTED) as u64;
    if total > listed {
        println!("  … and {} more", total - listed);
    }
    Ok(())
}

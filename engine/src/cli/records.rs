//! `blockyard records import|list|show|delete`: the record collections from the command line.
//!
//! Also home of the workflow loading that record writes trigger ([`TriggerArgs`]); the data dir
//! and config come from [`CommonArgs`], as for every store-using command. Through a running
//! service ([`Backend`]) the service's workflows decide what a write starts, and `import` sends
//! the file's rows in batches (read, keyed and rejected with their lines here, as locally).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use blockyard::config::Config;
use blockyard::records::import::{
    import, import_to, Format, ImportError, ImportOptions, Sink, Written,
};
use blockyard::records::{
    Change, Collection, Fields, KeyRule, Outcome, RecordKey, Subject, Write, WriteMode,
};
use blockyard::store::queue::QueueId;
use blockyard::trigger::Triggers;

use super::client::{encode_key, Backend, QueuedRequest, Remote};
use super::run::CommonArgs;
use super::PresetArgs;

/// Which workflows record writes may start.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// The directory of workflows whose record triggers the writes are checked against (default:
    /// `workflows`; through a running service, the service's, and another is an error).
    #[arg(long, value_name = "DIR")]
    workflows: Option<PathBuf>,
    /// Write the records without starting any workflow.
    #[arg(long)]
    no_trigger: bool,
}

impl TriggerArgs {
    /// The workflows; none with `--no-trigger`, or when the default `workflows/` does not exist.
    pub fn load(&self, config: Option<&Config>, presets: &PresetArgs) -> anyhow::Result<Triggers> {
        let workflows = match &self.workflows {
            Some(dir) => dir.clone(),
            None if Path::new("workflows").is_dir() => PathBuf::from("workflows"),
            None => return Ok(Triggers::none()),
        };
        if self.no_trigger {
            return Ok(Triggers::none());
        }
        let global: Fields = config
            .map(|c| c.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(Triggers::load_dir(&workflows, &presets.load()?, &global)?)
    }

    /// Through a running service its workflows decide what a write starts: `--no-trigger` or
    /// another `--workflows` is an error.
    pub fn check_service(&self, remote: &Remote) -> anyhow::Result<()> {
        if self.no_trigger {
            bail!(
                "`--no-trigger` cannot be used {}: the service's workflows decide what a write starts; drop it, or stop the service to write without triggers",
                remote.via()
            );
        }
        remote.check_workflows(self.workflows.as_deref())
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
    let backend = Backend::open(&args.common)?;
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
    let mut progress = |read| bar.set_position(read);
    let (summary, queued) = match &backend {
        Backend::Local(local) => {
            let triggers = args
                .triggers
                .load(local.config.as_ref(), &args.common.presets)?;
            let records = local.records()?;
            let summary = import(
                file,
                &options,
                &records,
                &triggers,
                chrono::Utc::now(),
                &mut progress,
            );
            bar.finish_and_clear();
            let summary = summary?;
            local.flush()?;
            let queued =
                local.queued(&summary.queued_ids[..summary.queued_ids.len().min(QUEUED_LISTED)])?;
            (summary, queued)
        }
        Backend::Remote(remote) => {
            args.triggers.check_service(remote)?;
            if args.dry_run {
                bail!(
                    "`--dry-run` cannot be used {}: it reads the store, which the service holds; stop the service for a dry run",
                    remote.via()
                );
            }
            let mut sink = Batches {
                remote,
                collection,
                mode: args.mode,
                queued: Vec::new(),
                total_queued: Vec::new(),
            };
            let summary = import_to(file, &options, &mut sink, &mut progress);
            bar.finish_and_clear();
            (summary?, sink.queued)
        }
    };
    let prefix = if summary.dry_run { "dry run: " } else { "" };
    println!("{prefix}{}: {}", collection.name(), summary.counts());
    if summary.dry_run {
        println!(
            "{} run requests would be queued; nothing was written",
            summary.queued
        );
    } else {
        print_queued(&backend, summary.queued, &queued);
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

/// An import's batches, sent to the service (`POST /api/records/{collection}/batch`), keyed here
/// by the import's key rule.
struct Batches<'a> {
    remote: &'a Remote,
    collection: Collection,
    mode: ModeArg,
    /// The first [`QUEUED_LISTED`] run requests the batches queued.
    queued: Vec<QueuedRequest>,
    /// The ids of the run requests the current batch queued.
    total_queued: Vec<QueueId>,
}

/// The most bytes of rows one request carries: under the service's default body limit (1 MiB).
const REQUEST_BYTES: usize = 768 * 1024;

impl Batches<'_> {
    /// Sends `rows` (serialized) in one request: their outcomes, in order.
    fn send(&mut self, rows: &[Vec<u8>]) -> Result<Vec<Outcome>, ImportError> {
        let failed = |err: anyhow::Error| ImportError::Sink {
            message: format!("{err:#}"),
        };
        let mut body = Vec::with_capacity(rows.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(row);
        }
        body.push(b']');
        let mode = match self.mode {
            ModeArg::CreateUpdate => "create_update",
            ModeArg::CreateOnly => "create_only",
            ModeArg::UpdateOnly => "update_only",
        };
        let path = format!("/records/{}/batch?mode={mode}", self.collection.name());
        let answer = self.remote.post_raw(&path, body).map_err(failed)?;
        let unreadable = |what: &str| {
            failed(anyhow::anyhow!(
                "{}: unreadable answer ({what}): {answer}",
                self.remote.via()
            ))
        };
        let queued: Vec<QueuedRequest> =
            serde_json::from_value(answer["queued"].clone()).map_err(|_| unreadable("queued"))?;
        let outcomes = answer["outcomes"].as_array().cloned().unwrap_or_default();
        if outcomes.len() != rows.len() {
            return Err(unreadable("one outcome per record"));
        }
        let outcomes = outcomes
            .iter()
            .map(|o| match o.as_str() {
                Some("created") => Outcome::Created,
                Some("updated") => Outcome::Updated,
                Some("unchanged") => Outcome::Unchanged,
                Some("skipped") => Outcome::Skipped,
                Some("deleted") => Outcome::Deleted,
                _ => Outcome::NotFound,
            })
            .collect();
        self.total_queued
            .extend(queued.iter().filter_map(|q| q.id.parse::<QueueId>().ok()));
        let room = QUEUED_LISTED.saturating_sub(self.queued.len());
        self.queued.extend(queued.into_iter().take(room));
        Ok(outcomes)
    }
}

impl Sink for Batches<'_> {
    /// One import batch, in as few requests as the body limit allows (each one transaction).
    fn write(&mut self, batch: &[Write]) -> Result<Vec<Written>, ImportError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut rows: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        for write in batch {
            let row = match &write.change {
                Change::Upsert { fields, .. } => {
                    serde_json::json!({"key": write.subject.key.as_str(), "fields": fields})
                }
                Change::Delete => serde_json::json!({"key": write.subject.key.as_str()}),
            };
            let row = serde_json::to_vec(&row).map_err(|err| ImportError::Sink {
                message: err.to_string(),
            })?;
            if !rows.is_empty() && size + row.len() > REQUEST_BYTES {
                outcomes.extend(self.send(&rows)?);
                rows.clear();
                size = 0;
            }
            size += row.len() + 1;
            rows.push(row);
        }
        if !rows.is_empty() {
            outcomes.extend(self.send(&rows)?);
        }
        // The summary counts the queued requests and keeps their ids; which write queued which
        // does not matter to it, so they all go with the first.
        let mut written: Vec<Written> = outcomes
            .into_iter()
            .map(|outcome| Written {
                outcome,
                queued: Vec::new(),
            })
            .collect();
        if let Some(first) = written.first_mut() {
            first.queued = std::mem::take(&mut self.total_queued);
        }
        Ok(written)
    }
}

fn run_list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let backend = Backend::open(&args.common)?;
    let collection = Collection::from(args.collection);
    let all = backend.records(collection)?;
    if args.json {
        let all: Vec<&Fields> = all.iter().map(|(_, fields)| fields).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (key, fields) in &all {
            println!("{key}  {}", serde_json::to_string(fields)?);
        }
        if all.is_empty() {
            eprintln!("no {} records", collection.name());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let collection = Collection::from(args.collection);
    let subject = Subject::new(collection, RecordKey::parse(&args.key));
    let Some(fields) = Backend::open(&args.common)?.record(&subject)? else {
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
    let subject = Subject::new(collection, RecordKey::parse(&args.key));
    let backend = Backend::open(&args.common)?;
    let (deleted, queued, total) = match &backend {
        Backend::Local(local) => {
            let triggers = args
                .triggers
                .load(local.config.as_ref(), &args.common.presets)?;
            let written = local.records()?.write(
                &[Write {
                    subject: subject.clone(),
                    change: Change::Delete,
                }],
                &triggers,
                chrono::Utc::now(),
            )?;
            local.flush()?;
            let Some(written) = written.into_iter().next() else {
                bail!("the delete of {subject} wrote nothing");
            };
            let total = written.queued.len() as u64;
            let queued =
                local.queued(&written.queued[..written.queued.len().min(QUEUED_LISTED)])?;
            (written.outcome == Outcome::Deleted, queued, total)
        }
        Backend::Remote(remote) => {
            args.triggers.check_service(remote)?;
            let answer = remote.delete(&format!(
                "/records/{}/{}",
                collection.name(),
                encode_key(subject.key.as_str())
            ))?;
            let queued: Vec<QueuedRequest> = serde_json::from_value(answer["queued"].clone())
                .with_context(|| format!("{}: unreadable answer: {answer}", remote.via()))?;
            let total = queued.len() as u64;
            (answer["outcome"] == "deleted", queued, total)
        }
    };
    if deleted {
        println!("deleted {subject}");
        if total > 0 {
            print_queued(&backend, total, &queued);
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: no {} record `{}`", collection.name(), subject.key);
        Ok(ExitCode::from(1))
    }
}

/// The most queued runs an import lists one by one.
const QUEUED_LISTED: usize = 20;

/// How many run requests a write queued, how they start, and the first of them (id, workflow,
/// subject, cause).
fn print_queued(backend: &Backend, total: u64, listed: &[QueuedRequest]) {
    if total == 0 {
        println!("0 run requests queued");
        return;
    }
    match backend {
        Backend::Local(_) => println!(
            "{total} run requests queued; `blockyard serve` on this data dir starts them (`blockyard history list --status queued` lists them):"
        ),
        Backend::Remote(remote) => println!(
            "{total} run requests queued; the service at {} starts them (`blockyard history list` follows them):",
            remote.url
        ),
    }
    for request in listed.iter().take(QUEUED_LISTED) {
        println!(
            "  {}  {}  {}  {}",
            request.id,
            request.workflow,
            request.subject.as_deref().unwrap_or("-"),
            request.cause
        );
    }
    let shown = listed.len().min(QUEUED_LISTED) as u64;
    if total > shown {
        println!("  … and {} more", total - shown);
    }
}

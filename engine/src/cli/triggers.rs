//! `blockyard triggers why --subject EMAIL`: which workflows considered a record, and why they did
//! or did not start a run.

use std::path::PathBuf;
use std::process::ExitCode;

use blockyard::records::RecordStore;
use blockyard::trigger::{load_workflows, TraceEntry};

use super::run::CommonArgs;

#[derive(Debug, clap::Subcommand)]
pub enum TriggersCommand {
    /// Print the trigger trace of a subject: each change or schedule tick that considered it, each
    /// workflow's conditions before and after, and the run requests queued.
    ///
    /// Example: `blockyard triggers why --subject jane@acme.com --workflow webex-offboard`
    Why(WhyArgs),
}

#[derive(Debug, clap::Args)]
pub struct WhyArgs {
    /// The subject: an email (every collection), or `people/EMAIL`, `saas_users/APP/EMAIL`.
    #[arg(long, value_name = "EMAIL")]
    subject: String,
    /// Only this workflow.
    #[arg(long, value_name = "NAME")]
    workflow: Option<String>,
    /// The workflows directory, to name watching workflows that have not considered the subject.
    #[arg(long, value_name = "DIR", default_value = "workflows")]
    workflows: PathBuf,
    /// Print the trace entries as a JSON array (`[{"subject", "trace"}]`, as `GET /api/triggers/why`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn run(command: TriggersCommand) -> anyhow::Result<ExitCode> {
    match command {
        TriggersCommand::Why(args) => why(args),
    }
}

fn why(args: WhyArgs) -> anyhow::Result<ExitCode> {
    let (store, _) = args.common.open()?;
    let records = RecordStore::open(&store)?;
    let wanted = args.subject.trim().to_lowercase();
    let subjects: Vec<_> = records
        .traced_subjects(wanted.rsplit('/').next().unwrap_or(&wanted))?
        .into_iter()
        .filter(|s| !wanted.contains('/') || s.to_string() == wanted)
        .collect();
    let mut entries: Vec<TraceEntry> = Vec::new();
    for subject in &subjects {
        entries.extend(records.trace(subject)?);
    }
    if let Some(name) = &args.workflow {
        for entry in &mut entries {
            entry.considered.retain(|c| c.workflow.as_str() == name);
        }
        entries.retain(|e| !e.considered.is_empty());
    }
    entries.sort_by_key(|e| e.at);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        let scope = match &args.workflow {
            Some(name) => format!(" by workflow `{name}`"),
            None => String::new(),
        };
        println!("no trigger has considered `{}`{scope} yet", args.subject);
    }
    for entry in &entries {
        print!("{}", entry.render());
    }
    if args.workflows.is_dir() {
        if let Ok(workflows) = load_workflows(&args.workflows, &args.common.presets.load()?) {
            let silent: Vec<&str> = workflows
                .iter()
                .filter(|w| w.trigger.records.is_some())
                .filter(|w| args.workflow.as_deref().is_none_or(|n| n == w.name))
                .filter(|w| {
                    !entries
                        .iter()
                        .any(|e| e.considered.iter().any(|c| c.workflow.as_str() == w.name))
                })
                .map(|w| w.name.as_str())
                .collect();
            if !silent.is_empty() {
                println!(
                    "not considered (no matching event or tick yet): {}",
                    silent.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `blockyard triggers why --subject EMAIL`: which workflows considered a record, and why they did
//! or did not start a run. Reads the data dir, or goes through the running service ([`Backend`]),
//! whose workflows are then the ones named as not considered yet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use blockyard::trigger::{load_workflows, TraceEntry};

use super::client::Backend;
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
    /// The workflows directory, to name watching workflows that have not considered the subject
    /// (default: `workflows`; through a running service, the service's).
    #[arg(long, value_name = "DIR")]
    workflows: Option<PathBuf>,
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
    let backend = Backend::open(&args.common)?;
    if let Backend::Remote(remote) = &backend {
        remote.check_workflows(args.workflows.as_deref())?;
    }
    let wanted = args.subject.trim().to_lowercase();
    let email = wanted.rsplit('/').next().unwrap_or(&wanted);
    let mut entries: Vec<TraceEntry> = Vec::new();
    for (subject, trace) in traces(&backend, email)? {
        if !wanted.contains('/') || subject == wanted {
            entries.extend(trace);
        }
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
    if let Some(watching) = watching(&backend, &args)? {
        let silent: Vec<&str> = watching
            .iter()
            .map(String::as_str)
            .filter(|w| args.workflow.as_deref().is_none_or(|n| n == *w))
            .filter(|w| {
                !entries
                    .iter()
                    .any(|e| e.considered.iter().any(|c| c.workflow.as_str() == *w))
            })
            .collect();
        if !silent.is_empty() {
            println!(
                "not considered (no matching event or tick yet): {}",
                silent.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The trigger trace of every record of the person `email`, by subject (`people/EMAIL`).
fn traces(backend: &Backend, email: &str) -> anyhow::Result<Vec<(String, Vec<TraceEntry>)>> {
    match backend {
        Backend::Local(local) => {
            let records = local.records()?;
            let mut out = Vec::new();
            for subject in records.traced_subjects(email)? {
                out.push((subject.to_string(), records.trace(&subject)?));
            }
            Ok(out)
        }
        Backend::Remote(remote) => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("subject", email);
            let answer = remote.get(&format!("/triggers/why?{}", query.finish()))?;
            let mut out = Vec::new();
            for item in answer.as_array().into_iter().flatten() {
                let trace: Vec<TraceEntry> = serde_json::from_value(item["trace"].clone())
                    .with_context(|| format!("{}: unreadable trace", remote.via()))?;
                out.push((
                    item["subject"].as_str().unwrap_or_default().to_owned(),
                    trace,
                ));
            }
            Ok(out)
        }
    }
}

/// The workflows that watch a record collection, by name: those of `--workflows` (when it loads),
/// or the service's.
fn watching(backend: &Backend, args: &WhyArgs) -> anyhow::Result<Option<Vec<String>>> {
    match backend {
        Backend::Local(_) => {
            let dir = args
                .workflows
                .clone()
                .unwrap_or_else(|| PathBuf::from("workflows"));
            if !dir.is_dir() {
                return Ok(None);
            }
            let Ok(workflows) = load_workflows(&dir, &args.common.presets.load()?) else {
                return Ok(None);
            };
            Ok(Some(
                workflows
                    .iter()
                    .filter(|w| w.trigger.records.is_some())
                    .map(|w| w.name.clone())
                    .collect(),
            ))
        }
        Backend::Remote(remote) => {
            let list = remote.get("/workflows")?;
            Ok(Some(
                list.as_array()
                    .into_iter()
                    .flatten()
                    .filter(|w| !w["records"].is_null())
                    .filter_map(|w| w["name"].as_str().map(str::to_owned))
                    .collect(),
            ))
        }
    }
}

//! `blockyard pause WORKFLOW|--all` and `blockyard resume-triggers WORKFLOW|--all`: hold and
//! release a workflow's triggered runs (see `blockyard::service::pause`: queue and hold).
//!
//! On a data dir no process holds, the change is written there, as the OS user; `serve` honours it
//! when it starts. Under `blockyard serve` (its `serve.json` in the data dir, or `--server URL` /
//! `BLOCKYARD_SERVER`), it goes through the service's API with `BLOCKYARD_TOKEN`
//! ([`super::client::Backend`]), and the service records the token's name.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use blockyard::service::pause::{os_user, Pauses};
use blockyard::store::Store;
use blockyard::trigger::load_workflows;
use chrono::SecondsFormat;
use serde_json::{json, Value};

use super::client::{Backend, Remote};
use super::run::{runtime, CommonArgs};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["workflow", "all"])))]
pub struct PauseArgs {
    /// The workflow (its `name:`).
    workflow: Option<String>,
    /// Every workflow: for `pause`, those in `--workflows` (or the service's); for
    /// `resume-triggers`, every paused one.
    #[arg(long)]
    all: bool,
    /// The directory of workflows the name is checked against (a local data dir only).
    #[arg(long, value_name = "DIR", default_value = "workflows")]
    workflows: PathBuf,
    /// Print the result as JSON (the API's answer) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn run(args: PauseArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let results = match Backend::open(&args.common)? {
        Backend::Remote(remote) => via_service(&args, &remote, pause)?,
        Backend::Local(local) => on_data_dir(&args, &local.store, pause)?,
    };
    if args.json {
        let out = if args.all {
            Value::Array(results)
        } else {
            results.into_iter().next().unwrap_or(Value::Null)
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    if results.is_empty() {
        println!(
            "{}",
            if pause {
                "no workflow to pause"
            } else {
                "no workflow was paused"
            }
        );
    }
    for r in &results {
        let name = r["workflow"].as_str().unwrap_or_default();
        if pause {
            let (by, at) = (r["by"].as_str().unwrap_or_default(), short(&r["at"]));
            if r["already"] == true {
                println!("`{name}` was already paused by {by} at {at}");
            } else {
                println!("paused `{name}` (by {by} at {at}): its triggered runs are queued and held until `blockyard resume-triggers {name}`");
            }
        } else if r["was"].is_null() {
            println!("`{name}` was not paused");
        } else {
            let (by, at) = (
                r["was"]["by"].as_str().unwrap_or_default(),
                short(&r["was"]["at"]),
            );
            println!(
                "resumed the triggers of `{name}` (paused by {by} at {at}); its held runs start"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An RFC 3339 instant to the second.
fn short(at: &Value) -> String {
    at.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc().to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn on_data_dir(args: &PauseArgs, store: &Store, pause: bool) -> anyhow::Result<Vec<Value>> {
    let pauses = Pauses::open(store)?;
    let mut out = Vec::new();
    if pause {
        let presets = args.common.presets.load()?;
        let names: Vec<String> = load_workflows(&args.workflows, &presets)?
            .iter()
            .map(|w| w.name.clone())
            .collect();
        let chosen: Vec<String> = match &args.workflow {
            None => names.clone(),
            Some(name) if names.contains(name) => vec![name.clone()],
            Some(name) => bail!(
                "no workflow `{name}` in `{}` (it has {}); pass `--workflows DIR` for another directory",
                args.workflows.display(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                }
            ),
        };
        let by = os_user();
        let now = chrono::Utc::now();
        for name in chosen {
            let (p, new) = pauses.pause(&name, &by, now)?;
            out.push(
                json!({"workflow": name, "paused": true, "by": p.by, "at": p.at, "already": !new}),
            );
        }
    } else {
        let chosen: Vec<String> = match &args.workflow {
            None => pauses.list()?.into_iter().map(|(name, _)| name).collect(),
            Some(name) => vec![name.clone()],
        };
        for name in chosen {
            let was = pauses.resume(&name)?;
            out.push(json!({"workflow": name, "paused": false, "was": was}));
        }
    }
    runtime()?.block_on(store.flush())?;
    Ok(out)
}

/// `POST /api/workflows/{name}/pause` (or `…/resume-triggers`, `/api/pause`, `/api/resume-triggers`).
fn via_service(args: &PauseArgs, remote: &Remote, pause: bool) -> anyhow::Result<Vec<Value>> {
    let path = match (&args.workflow, pause) {
        (Some(name), true) => format!("/workflows/{name}/pause"),
        (Some(name), false) => format!("/workflows/{name}/resume-triggers"),
        (None, true) => "/pause".to_owned(),
        (None, false) => "/resume-triggers".to_owned(),
    };
    Ok(match remote.post(&path, json!({}))? {
        Value::Array(list) => list,
        one => vec![one],
    })
}

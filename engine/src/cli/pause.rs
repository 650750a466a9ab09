//! `blockyard pause WORKFLOW|--all` and `blockyard resume-triggers WORKFLOW|--all`: hold and
//! release a workflow's triggered runs (see `blockyard::service::pause`: queue and hold).
//!
//! On a data dir no process holds, the change is written there, as the OS user; `serve` honours it
//! when it starts. While `serve` holds the data dir, `--server URL` (or `BLOCKYARD_SERVER`) sends
//! it through the service's API with `BLOCKYARD_TOKEN`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use blockyard::service::pause::{os_user, Pauses};
use blockyard::store::{Store, StoreError};
use blockyard::trigger::load_workflows;
use chrono::SecondsFormat;
use serde_json::{json, Value};

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
    /// A running `blockyard serve` to act through (`http://ADDR`; default `BLOCKYARD_SERVER`),
    /// with `BLOCKYARD_TOKEN`.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Print the result as JSON (the API's answer) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn run(args: PauseArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let server = args.server.clone().or_else(|| {
        std::env::var("BLOCKYARD_SERVER")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let results = match &server {
        Some(url) => via_service(&args, url, pause)?,
        None => local(&args, pause)?,
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

fn local(args: &PauseArgs, pause: bool) -> anyhow::Result<Vec<Value>> {
    let config = args.common.config()?;
    let dir = args.common.data_dir(config.as_ref());
    let store = match Store::open(&dir) {
        Ok(store) => store,
        Err(StoreError::Locked { .. }) => bail!(
            "the data dir `{}` is in use by another blockyard process (a running `blockyard serve`?); act through it: `blockyard {} {} --server http://ADDR` (its token in `BLOCKYARD_TOKEN`)",
            dir.display(),
            if pause { "pause" } else { "resume-triggers" },
            args.workflow.as_deref().unwrap_or("--all"),
        ),
        Err(err) => return Err(err.into()),
    };
    let pauses = Pauses::open(&store)?;
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

fn via_service(args: &PauseArgs, url: &str, pause: bool) -> anyhow::Result<Vec<Value>> {
    let base = url.trim_end_matches('/');
    let path = match (&args.workflow, pause) {
        (Some(name), true) => format!("/api/workflows/{name}/pause"),
        (Some(name), false) => format!("/api/workflows/{name}/resume-triggers"),
        (None, true) => "/api/pause".to_owned(),
        (None, false) => "/api/resume-triggers".to_owned(),
    };
    let token = std::env::var("BLOCKYARD_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let (status, body) = runtime()?.block_on(async {
        let mut request = reqwest::Client::new().post(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.with_context(|| {
            format!("cannot reach the service at {base}; is `blockyard serve` running there?")
        })?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("the service at {base} did not answer with JSON"))?;
        anyhow::Ok((status, body))
    })?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("via the service at {base}: {message} ({})", status.as_u16());
    }
    Ok(match body {
        Value::Array(list) => list,
        one => vec![one],
    })
}

//! Replay: re-running a recorded run, live or offline against its recording.
//!
//! Live replay is a new run linked to the original (`replay_of`), with the recorded subject and
//! `vars`, and the recorded workflow snapshot unless a newer definition is given; `--from BLOCK`
//! reuses the recorded outcomes (outputs, saves, responses) of every block that is neither BLOCK
//! nor after it, and runs from there.
//!
//! A live replay needs every credential the blocks it runs name; without one it is refused
//! before anything runs ([`ExecError::ReplayCredential`]).
//!
//! Offline replay sends nothing and saves nothing: every vendor call is answered from the
//! recorded step of the same block, and the result is compared with the recording block by
//! block: the rendered request, the saved fields and the outcome (which gives the path taken).
//! It is how a changed workflow is tested against real past runs: identical means the change does
//! not alter what those runs did. So that an unchanged workflow replays identical:
//! - it runs as of the recorded run: `run.id` and `run.started_at` are the recorded run's, and each
//!   step takes its recorded step's instants, which the time helpers read ([`crate::as_of`]);
//! - every call is answered from the recording, the ones the step keeps no response of by what
//!   the step shows the block learned from them: role retrieval's activity read by the
//!   `last_activity` it saved, a merge's read by the body its request sent;
//! - it needs no config ([`Setup::Recorded`]): it renders with the run's recorded `vars` and the
//!   base URLs its requests were rendered below, and no secret (nothing is sent). With
//!   [`Setup::Engine`] (`--config FILE`) it renders with the engine's credentials and its config
//!   vars over the recorded ones instead: a run tested against a new setup;
//! - a run that had not finished stops where its recording stops: a block waiting for approval
//!   (still gated) or held by the mass-change guard (still destructive) is not rendered, a
//!   `retrying` block is answered by its recorded transient failure, and a `wait` still waiting
//!   waits (the run loop, [`crate::exec`], does this when given the recording).

use std::collections::BTreeSet;
use std::sync::Arc;

use indexmap::IndexMap;
use petgraph::visit::Dfs;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::compile::BlockKind;
use crate::config::{CredentialConfig, CredentialName, SecretRef, SecretSource};
use crate::exec::{Engine, ExecError, Prepared, Recording, RunOutcome, RunRequest};
use crate::http::Credentials;
use crate::preset::{AuthKind, PresetId, PresetRegistry};
use crate::spec::Location;
use crate::store::api::ReadHistory;
use crate::store::history::{RunId, RunMode, RunTrigger, StepRecord, TriggerKind};
use crate::template::TemplateEngine;

/// What an offline replay sends a secret-URL credential's requests to (nothing is sent).
const SECRET_URL_STAND_IN: &str = "https://secret-url.invalid";

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Run from this block, reusing the recorded outcomes of the blocks before it.
    pub from: Option<String>,
    /// Answer every call from the recording and compare.
    pub offline: bool,
    /// Offline: what the requests are rendered with.
    pub setup: Setup,
}

/// What an offline replay renders requests with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Setup {
    /// The run's recorded vars and the base URLs its recorded requests were rendered below: no
    /// config is needed, and a difference is the workflow's.
    #[default]
    Recorded,
    /// The engine's credentials, and its config vars over the recorded vars (`--config FILE`).
    Engine,
}

/// One block's differences between the recording and the replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockDiff {
    pub block: String,
    /// `recorded → replayed` outcome, when it differs (a different path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<(String, String)>,
    /// Request differences, one line per JSON path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<String>,
    /// Saved-field differences, one line per field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saved: Vec<String>,
}

impl BlockDiff {
    pub fn is_empty(&self) -> bool {
        self.outcome.is_none() && self.request.is_empty() && self.saved.is_empty()
    }
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub original: RunId,
    pub outcome: RunOutcome,
    /// Offline only: per block (in the replay's order, then blocks only the recording has).
    pub diffs: Vec<BlockDiff>,
}

impl Replayed {
    /// Offline: true when no block differs.
    pub fn identical(&self) -> bool {
        self.diffs.iter().all(BlockDiff::is_empty)
    }
}

/// Replays run `original`, with `workflow` when given (a newer definition), else the recorded
/// snapshot.
pub async fn replay(
    engine: &Engine,
    original: RunId,
    workflow: Option<Arc<Prepared>>,
    options: ReplayOptions,
) -> Result<Replayed, ExecError> {
    let history = engine.history();
    let run = history
        .run(original)
        .await?
        .ok_or(ExecError::UnknownRun { id: original })?;
    let prepared = match workflow {
        Some(p) => p,
        None => engine.prepare_snapshot(&run)?,
    };
    let recorded = history.steps(original).await?;
    let recording = Recording::new(&run, recorded.clone(), options.from.clone());
    let mut vars = run.vars.clone();
    let own;
    let engine = match (options.offline, options.setup) {
        (true, Setup::Recorded) => {
            let credentials =
                recorded_credentials(&prepared, &recording, engine.client().presets());
            own = engine.with_credentials(credentials)?;
            &own
        }
        (true, Setup::Engine) => {
            for (name, value) in engine.config_vars() {
                vars.insert(name.clone(), value.clone());
            }
            engine
        }
        (false, _) => {
            configured(engine, &prepared, original, options.from.as_deref())?;
            engine
        }
    };
    let request = RunRequest {
        trigger: RunTrigger {
            kind: TriggerKind::Replay,
            detail: Some(format!(
                "{}of {original}",
                if options.offline { "offline " } else { "" }
            )),
        },
        subject: run.subject.clone(),
        vars,
        mode: if options.offline {
            RunMode::Offline
        } else {
            RunMode::Live
        },
        replay_of: Some(original),
        recording: (options.offline || options.from.is_some()).then_some(recording),
        persist: !options.offline,
    };
    let outcome = engine.run(&prepared, request).await?;
    let diffs = if options.offline {
        compare(&recorded, &outcome.steps)
    } else {
        Vec::new()
    };
    Ok(Replayed {
        original,
        outcome,
        diffs,
    })
}

/// The API and role retrieval blocks of a workflow, with their calls.
fn calls(prepared: &Prepared) -> impl Iterator<Item = (&str, &crate::compile::ApiCall)> {
    let graph = &prepared.workflow.graph;
    graph.node_indices().filter_map(move |node| {
        let block = &graph[node];
        match &block.kind {
            BlockKind::Api(call) => Some((block.id.as_str(), call)),
            BlockKind::RoleRetrieval(role) => Some((block.id.as_str(), &role.call)),
            BlockKind::Begin | BlockKind::Wait(_) | BlockKind::End => None,
        }
    })
}

/// Checks that the engine has every credential the blocks a live replay runs name (with `from`,
/// that block and the ones after it): without one the replay would record a run whose calls
/// failed without being sent.
fn configured(
    engine: &Engine,
    prepared: &Prepared,
    id: RunId,
    from: Option<&str>,
) -> Result<(), ExecError> {
    let graph = &prepared.workflow.graph;
    let runs: Option<BTreeSet<&str>> = from.and_then(|from| prepared.node(from)).map(|start| {
        let mut after = BTreeSet::new();
        let mut dfs = Dfs::new(graph, start);
        while let Some(node) = dfs.next(graph) {
            after.insert(graph[node].id.as_str());
        }
        after
    });
    if from.is_some() && runs.is_none() {
        return Ok(()); // an unknown block: the run says so
    }
    let credentials = engine.client().credentials();
    for (block, call) in calls(prepared) {
        let name = CredentialName::new(call.credential.clone());
        if runs.as_ref().is_none_or(|r| r.contains(block)) && credentials.get(&name).is_none() {
            return Err(ExecError::ReplayCredential {
                id,
                block: block.to_owned(),
                credential: call.credential.clone(),
            });
        }
    }
    Ok(())
}

/// The credentials of [`Setup::Recorded`]: each credential a block of the workflow names, with the
/// base URL the recorded step of a block using it was rendered below, and no secret (nothing is
/// sent). A credential no recorded step shows has none, so it renders below the vendor's base
/// URL, as a configured credential without `base_url` does.
fn recorded_credentials(
    prepared: &Prepared,
    recording: &Recording,
    presets: &PresetRegistry,
) -> Credentials {
    let templates = TemplateEngine::new();
    let mut by_name: IndexMap<&str, CredentialConfig> = IndexMap::new();
    for (block, call) in calls(prepared) {
        let credential = by_name
            .entry(&call.credential)
            .or_insert_with(|| CredentialConfig {
                name: CredentialName::new(call.credential.clone()),
                vendor: call.preset.vendor.clone(),
                auth: AuthKind::Bearer,
                token: None,
                client_id: None,
                client_secret: None,
                refresh_token: None,
                scope: None,
                username: None,
                password: None,
                base_url: None,
                url: None,
                token_url: None,
                tls: Default::default(),
                redirect_uri: crate::config::DEFAULT_REDIRECT_URI.to_owned(),
                authorize_url: None,
                rate_limit_per_minute: Some(0),
                max_connections: None,
                max_pages: crate::config::DEFAULT_MAX_PAGES,
                max_wait: crate::config::DEFAULT_MAX_WAIT,
                file: format!("the recording of run {}", recording.run).into(),
                location: Location::START,
            });
        // A secret-URL credential (a webhook's) was recorded as `[redacted]`: it renders below a
        // stand-in the redactor knows, so the replayed request shows `[redacted]` too.
        let secret_url = presets
            .vendor(&call.preset.vendor)
            .is_some_and(|vendor| vendor.spec.auth.contains(&AuthKind::Url));
        if secret_url && credential.url.is_none() {
            credential.auth = AuthKind::Url;
            credential.url = Some(SecretRef {
                source: SecretSource::Literal(SECRET_URL_STAND_IN.to_owned()),
                key: format!("credentials.{}.url", call.credential),
                file: credential.file.clone(),
                location: Location::START,
            });
        }
        if credential.base_url.is_none() {
            credential.base_url = recording
                .steps
                .get(block)
                .and_then(|step| recorded_base_url(step, presets, &templates));
        }
    }
    let mut credentials = Credentials::default();
    for credential in by_name.into_values() {
        credentials.insert(credential);
    }
    credentials
}

/// The base URL a recorded step's request was rendered below: as the step keeps it, or, for a
/// step recorded before steps kept it, the request's URL less the path its preset renders from
/// the recorded inputs (`None` when the URL does not end with that path: the request was not the
/// preset's own).
fn recorded_base_url(
    step: &StepRecord,
    presets: &PresetRegistry,
    templates: &TemplateEngine,
) -> Option<String> {
    if let Some(base) = &step.base_url {
        return Some(base.clone());
    }
    const MARK: &str = "http://base.invalid";
    let url = step.request.as_ref()?.get("url")?.as_str()?;
    let id = PresetId::parse(step.preset.as_deref()?)?;
    let vendor = presets.vendor(&id.vendor)?;
    let action = vendor.actions.get(&id.action)?;
    let inputs = step.inputs.as_ref()?.as_object()?;
    let rendered =
        crate::http::request::render(templates, vendor, action, MARK, inputs, false).ok()?;
    let path = rendered.url.strip_prefix(MARK)?;
    url.strip_suffix(path).map(str::to_owned)
}

/// Block-by-block differences between recorded and replayed steps.
pub fn compare(recorded: &[StepRecord], replayed: &[StepRecord]) -> Vec<BlockDiff> {
    let last = |steps: &[StepRecord], block: &str| -> Option<StepRecord> {
        steps.iter().rev().find(|s| s.block == block).cloned()
    };
    let mut blocks: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for step in replayed.iter().chain(recorded) {
        if seen.insert(step.block.clone()) {
            blocks.push(step.block.clone());
        }
    }
    blocks
        .into_iter()
        .map(|block| {
            let old = last(recorded, &block);
            let new = last(replayed, &block);
            let status = |s: &Option<StepRecord>| {
                s.as_ref()
                    .map_or("not run".to_owned(), |s| s.status.to_string())
            };
            let (old_status, new_status) = (status(&old), status(&new));
            let mut request = Vec::new();
            diff_json(
                "",
                old.as_ref()
                    .and_then(|s| s.request.as_ref())
                    .unwrap_or(&Value::Null),
                new.as_ref()
                    .and_then(|s| s.request.as_ref())
                    .unwrap_or(&Value::Null),
                &mut request,
            );
            let mut saved = Vec::new();
            let empty = Map::new();
            diff_json(
                "",
                &Value::Object(old.as_ref().map_or(&empty, |s| &s.saved).clone()),
                &Value::Object(new.as_ref().map_or(&empty, |s| &s.saved).clone()),
                &mut saved,
            );
            BlockDiff {
                block,
                outcome: (old_status != new_status).then_some((old_status, new_status)),
                request,
                saved,
            }
        })
        .collect()
}

/// One line per differing leaf: `path: recorded → replayed`.
fn diff_json(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff_json(
                    &sub,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (a, b) if a == b => {}
        (a, b) => {
            let show = |v: &Value| match v {
                Value::Null => "(absent)".to_owned(),
                other => other.to_string(),
            };
            let label = if path.is_empty() { "(whole)" } else { path };
            out.push(format!("{label}: {} → {}", show(a), show(b)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_step_recorded_without_its_base_url_has_it_derived_from_its_url_and_preset_path() {
        let presets = PresetRegistry::builtin();
        let templates = TemplateEngine::new();
        let mut step = StepRecord::new(
            RunId::new(),
            1,
            "remove",
            "api",
            crate::store::history::StepStatus::Succeeded,
            chrono::Utc::now(),
        );
        step.preset = Some("calendly.remove_user_membership".to_owned());
        step.inputs = Some(json!({"membership_uuid": "https://x/organization_memberships/M1"}));
        step.request = Some(json!({
            "url": "http://127.0.0.1:9/calendly/organization_memberships/M1"
        }));
        let base = |step: &StepRecord| recorded_base_url(step, &presets, &templates);
        assert_eq!(base(&step).as_deref(), Some("http://127.0.0.1:9/calendly"));
        // Not the preset's own path (an advanced-mode override): no base URL is guessed.
        step.request = Some(json!({"url": "http://127.0.0.1:9/calendly/elsewhere/M1"}));
        assert_eq!(base(&step), None);
        // Kept by the step: taken as is.
        step.base_url = Some("https://api.calendly.com".to_owned());
        assert_eq!(base(&step).as_deref(), Some("https://api.calendly.com"));
    }

    #[test]
    fn json_differences_name_their_paths() {
        let mut out = Vec::new();
        diff_json(
            "",
            &json!({"url": "a", "query": {"email": "x"}}),
            &json!({"url": "a", "query": {"email": "y", "count": "1"}}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "query.count: (absent) → \"1\"".to_owned(),
                "query.email: \"x\" → \"y\"".to_owned()
            ]
        );
    }
}

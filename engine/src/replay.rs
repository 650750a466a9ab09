//! Replay: re-running a recorded run, live or offline against its recording.
//!
//! Live replay is a new run linked to the original (`replay_of`), with the recorded subject and
//! `vars`, and the recorded workflow snapshot unless a newer definition is given; `--from BLOCK`
//! reuses the recorded outcomes (outputs, saves, responses) of every block that is neither BLOCK
//! nor after it, and runs from there.
//!
//! Offline replay sends nothing and saves nothing: every vendor call is answered with the
//! recorded response of the same block, and the result is compared with the recording block by
//! block: the rendered request, the saved fields and the outcome (which gives the path taken).
//! It is how a changed workflow is tested against real past runs: identical means the change does
//! not alter what those runs did.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::exec::{Engine, ExecError, Prepared, Recording, RunOutcome, RunRequest};
use crate::store::history::{RunId, RunMode, RunTrigger, StepRecord, TriggerKind};

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Run from this block, reusing the recorded outcomes of the blocks before it.
    pub from: Option<String>,
    /// Answer every call from the recording and compare.
    pub offline: bool,
}

/// One block's differences between the recording and the replay.
#[derive(Debug, Clone, Serialize)]
pub struct BlockDiff {
    pub block: String,
    /// `recorded → replayed` outcome, when it differs (a different path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<(String, String)>,
    /// Request differences, one line per JSON path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request: Vec<String>,
    /// Saved-field differences, one line per field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
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
        .run(original)?
        .ok_or(ExecError::UnknownRun { id: original })?;
    let prepared = match workflow {
        Some(p) => p,
        None => engine.prepare_snapshot(&run)?,
    };
    let recorded = history.steps(original)?;
    let recording = Recording::new(&run, recorded.clone(), options.from.clone());
    let request = RunRequest {
        trigger: RunTrigger {
            kind: TriggerKind::Replay,
            detail: Some(format!(
                "{}of {original}",
                if options.offline { "offline " } else { "" }
            )),
        },
        subject: run.subject.clone(),
        vars: run.vars.clone(),
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

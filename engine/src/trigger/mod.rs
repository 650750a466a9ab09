//! Triggers: which workflows a record write or a schedule tick starts, and why.
//!
//! [`Triggers`] holds the compiled workflows that start by themselves (Begin names `records` + `on`,
//! or `schedule`). For a record write, [`Triggers::consider`] evaluates each workflow watching that
//! collection and event on the record before and after the write, and asks for a run only when the
//! result **turns true** (see [`Consideration::fires`]): an update to a record that already matched
//! starts nothing. The decision is pure; [`crate::records::RecordStore`] writes the record, the
//! [`RunRequest`]s and the [`trace`] in one transaction, and holds the decision back while a run
//! for the subject is in flight ([`crate::store::in_flight`]). [`scheduler`] does the same at each tick
//! of a `schedule:`.
//!
//! A run started by hand is judged by the same conditions ([`consider_manual`]): the executor
//! refuses one whose subject does not match, quoting the consideration as `triggers why` would.
//!
//! Conditions are evaluated with the shared sandboxed rhai engine ([`crate::compile::rule_engine`]):
//! `when:` sees `record` and `vars` (the configuration's global variables, overridden by the
//! workflow's own), and structured `rules:` all must hold (case rules in [`crate::rules`]). A
//! `when:` stopped by a rule limit (time or size) does not match; its trace names the workflow and
//! says what to do, and the first such stop of each workflow is logged as a warning. Evaluation is
//! synchronous and CPU-bound: async callers run it on a blocking thread (see
//! [`crate::records::RecordStore::write_blocking`]).

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::compile::{compile_file, CompileError, Workflow};
use crate::preset::PresetRegistry;
use crate::records::{Collection, Fields, RecordEvent, Subject};
use crate::rules::{map_to_dynamic, Evaluation};
pub use crate::store::queue::{Cause, Queue, QueueEntry, QueueId, RunRequest, WorkflowName};

pub mod scheduler;
pub mod trace;

pub use trace::{Check, Consideration, Decision, TraceEntry, Verdict};

/// Workflows that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the workflows directory `{}`: {reason}; pass `--workflows DIR`", dir.display())]
    Unreadable { dir: PathBuf, reason: String },
    #[error("{} invalid; run `blockyard validate {}` to see every error", describe_invalid(.errors), dir.display())]
    Invalid {
        dir: PathBuf,
        errors: Vec<CompileError>,
    },
    #[error("two workflows are named `{name}`: `{}` and `{}`; rename one", first.display(), second.display())]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

fn describe_invalid(errors: &[CompileError]) -> String {
    match errors.first() {
        Some(first) if errors.len() == 1 => format!("a workflow is invalid ({first})"),
        Some(first) => format!(
            "workflows are invalid ({first}, and {} more)",
            errors.len() - 1
        ),
        None => "workflows are invalid".to_owned(),
    }
}

/// A workflow that starts by itself, with its `vars` ready for rhai.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    pub(crate) name: WorkflowName,
    pub(crate) workflow: Arc<Workflow>,
    pub(crate) vars: rhai::Dynamic,
    /// The same `vars` as JSON, for `exclude:`.
    vars_json: Value,
    /// Whether a rule limit stop of this workflow was logged already.
    warned: Arc<AtomicBool>,
}

/// The workflows that start by themselves, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    watched: Vec<Watched>,
}

impl Triggers {
    /// No workflows: writes start nothing (`records import --no-trigger`).
    pub fn none() -> Triggers {
        Triggers::default()
    }

    /// The given workflows (those without a trigger are left out), with `global` variables (the
    /// configuration's `vars`) under each workflow's own.
    pub fn new(workflows: impl IntoIterator<Item = Arc<Workflow>>, global: &Fields) -> Triggers {
        let mut watched: Vec<Watched> = workflows
            .into_iter()
            .filter(|w| {
                w.trigger.schedule.is_some()
                    || (w.trigger.records.is_some() && !w.trigger.on.is_empty())
            })
            .map(|workflow| {
                let mut vars = global.clone();
                for (k, v) in &workflow.vars {
                    vars.insert(k.clone(), v.clone());
                }
                Watched {
                    name: WorkflowName::new(&workflow.name),
                    vars: map_to_dynamic(&vars),
                    vars_json: Value::Object(vars),
                    workflow,
                    warned: Arc::new(AtomicBool::new(false)),
                }
            })
            .collect();
        watched.sort_by(|a, b| a.name.cmp(&b.name));
        Triggers { watched }
    }

    /// Compiles every `*.yaml`/`*.yml` file in `dir` (not recursively).
    pub fn load_dir(
        dir: &Path,
        presets: &PresetRegistry,
        global: &Fields,
    ) -> Result<Triggers, LoadError> {
        let workflows = load_workflows(dir, presets)?;
        Ok(Triggers::new(workflows, global))
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// The workflows, by name.
    pub fn workflows(&self) -> impl Iterator<Item = &Arc<Workflow>> {
        self.watched.iter().map(|w| &w.workflow)
    }

    /// Whether any workflow watches `event`s of `collection`.
    pub fn watches(&self, collection: Collection, event: RecordEvent) -> bool {
        self.watched.iter().any(|w| {
            w.workflow.trigger.records == Some(collection) && w.workflow.trigger.on.contains(&event)
        })
    }

    /// Evaluates a workflow's conditions on a record.
    pub fn verdict(
        &self,
        workflow: &WorkflowName,
        record: &Fields,
        now: DateTime<Utc>,
    ) -> Option<Verdict> {
        let w = self.watched.iter().find(|w| &w.name == workflow)?;
        Some(evaluate(w, record, now))
    }

    /// The workflows with a `schedule:`.
    pub(crate) fn scheduled(&self) -> impl Iterator<Item = &Watched> {
        self.watched
            .iter()
            .filter(|w| w.workflow.trigger.schedule.is_some())
    }

    /// Why `workflow`'s `exclude:` leaves `subject` out (`listed in `vars.reclaim_exclusions``),
    /// or `None` when it does not.
    pub fn exclusion(
        &self,
        workflow: &WorkflowName,
        subject: &Subject,
        record: &Fields,
    ) -> Option<String> {
        let w = self.watched.iter().find(|w| &w.name == workflow)?;
        w.exclusion(subject, record)
    }

    /// What a write of `subject` (`old` → `new`, the `event` it is) starts: one decision per
    /// workflow watching that collection and event, firing when the conditions turn true.
    ///
    /// - `created`: fires when the new record matches;
    /// - `updated`: fires when the new record matches and the old one did not;
    /// - `deleted`: fires when the deleted record matched (its snapshot is the record as it was).
    pub fn consider(
        &self,
        subject: &Subject,
        event: RecordEvent,
        old: Option<&Fields>,
        new: Option<&Fields>,
        now: DateTime<Utc>,
    ) -> Vec<Decision> {
        let mut decisions = Vec::new();
        let old_record = old.map(Record::new);
        let new_record = new.map(Record::new);
        for w in &self.watched {
            let trigger = &w.workflow.trigger;
            if trigger.records != Some(subject.collection) || !trigger.on.contains(&event) {
                continue;
            }
            let before = old_record.as_ref().map(|r| r.evaluate(w, now));
            let after = new_record.as_ref().map(|r| r.evaluate(w, now));
            let excluded = new.or(old).and_then(|r| w.exclusion(subject, r));
            let fires = excluded.is_none()
                && match event {
                    RecordEvent::Created | RecordEvent::Updated => {
                        after.as_ref().is_some_and(|v| v.matched)
                            && !before.as_ref().is_some_and(|v| v.matched)
                    }
                    RecordEvent::Deleted => before.as_ref().is_some_and(|v| v.matched),
                };
            let request = fires.then(|| RunRequest {
                workflow: w.name.clone(),
                subject: Some(subject.clone()),
                snapshot: new.or(old).cloned(),
                trigger: Cause::Record(event),
                at: now,
            });
            decisions.push(Decision {
                consideration: Consideration {
                    workflow: w.name.clone(),
                    before,
                    after,
                    fired: fires,
                    queued: None,
                    run: None,
                    excluded,
                    held: None,
                    paused: None,
                },
                request,
            });
        }
        decisions
    }
}

impl crate::store::records::Evaluate for Triggers {
    fn is_empty(&self) -> bool {
        Triggers::is_empty(self)
    }
    fn watches(&self, collection: Collection, event: RecordEvent) -> bool {
        Triggers::watches(self, collection, event)
    }
    fn consider(
        &self,
        subject: &Subject,
        event: RecordEvent,
        old: Option<&Fields>,
        new: Option<&Fields>,
        now: DateTime<Utc>,
    ) -> Vec<Decision> {
        Triggers::consider(self, subject, event, old, new, now)
    }
}

impl Watched {
    /// Why this workflow's `exclude:` leaves the record out.
    pub(crate) fn exclusion(&self, subject: &Subject, record: &Fields) -> Option<String> {
        let exclusion = self.workflow.trigger.exclude.as_ref()?;
        let record = Value::Object(record.clone());
        exclusion.reason(subject.key.as_str(), &record, &self.vars_json)
    }
}

/// The workflow files directly in `dir` (`*.yaml`, `*.yml`, not recursive), sorted.
pub fn workflow_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|err| LoadError::Unreadable {
        dir: dir.to_owned(),
        reason: err.to_string().to_lowercase(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Refuses two workflows with the same `name:` (naming the first two files that share one).
pub fn unique_names<'a>(
    workflows: impl IntoIterator<Item = &'a Workflow>,
) -> Result<(), LoadError> {
    let mut seen: HashMap<&str, &Workflow> = HashMap::new();
    for w in workflows {
        if let Some(first) = seen.insert(&w.name, w) {
            return Err(LoadError::Duplicate {
                name: w.name.clone(),
                first: first.file.clone(),
                second: w.file.clone(),
            });
        }
    }
    Ok(())
}

/// Compiles every workflow file directly in `dir`, all errors at once.
pub fn load_workflows(
    dir: &Path,
    presets: &PresetRegistry,
) -> Result<Vec<Arc<Workflow>>, LoadError> {
    let mut workflows: Vec<Arc<Workflow>> = Vec::new();
    let mut errors = Vec::new();
    for file in workflow_files(dir)? {
        match compile_file(file, presets) {
            Ok(w) => workflows.push(Arc::new(w)),
            Err(mut found) => errors.append(&mut found),
        }
    }
    if !errors.is_empty() {
        return Err(LoadError::Invalid {
            dir: dir.to_owned(),
            errors,
        });
    }
    unique_names(workflows.iter().map(|w| &**w))?;
    Ok(workflows)
}

/// How a trigger would judge `record` now, for a run started by hand: `workflow`'s `when:` and
/// `rules:` on the record as it is (no transition: a manual run asks whether the subject matches,
/// not whether it just started to), and its `exclude:`. `fired` says whether the run may start;
/// [`Consideration::explain`] says why not, in `triggers why`'s words. `vars` are the run's.
pub fn consider_manual(
    workflow: &Arc<Workflow>,
    vars: &Fields,
    key: &str,
    record: &Fields,
    now: DateTime<Utc>,
) -> Consideration {
    let watched = Watched {
        name: WorkflowName::new(&workflow.name),
        workflow: workflow.clone(),
        vars: map_to_dynamic(vars),
        vars_json: Value::Object(vars.clone()),
        // A rule stopped by a limit is in the refusal itself; nothing to log.
        warned: Arc::new(AtomicBool::new(true)),
    };
    let verdict = evaluate(&watched, record, now);
    let excluded = workflow.trigger.exclude.as_ref().and_then(|exclusion| {
        exclusion.reason(key, &Value::Object(record.clone()), &watched.vars_json)
    });
    Consideration {
        workflow: watched.name,
        before: None,
        fired: verdict.matched && excluded.is_none(),
        after: Some(verdict),
        queued: None,
        run: None,
        excluded,
        held: None,
        paused: None,
    }
}

/// Evaluates a workflow's `when:` and `rules:` on a record (every check, for the trace).
pub(crate) fn evaluate(w: &Watched, record: &Fields, now: DateTime<Utc>) -> Verdict {
    Record::new(record).evaluate(w, now)
}

/// A record being evaluated, converted for rhai once (when a `when:` first needs it) however
/// many workflows look at it.
struct Record<'a> {
    fields: &'a Fields,
    rhai: OnceCell<rhai::Dynamic>,
}

impl<'a> Record<'a> {
    fn new(fields: &'a Fields) -> Record<'a> {
        Record {
            fields,
            rhai: OnceCell::new(),
        }
    }

    fn evaluate(&self, w: &Watched, now: DateTime<Utc>) -> Verdict {
        let trigger = &w.workflow.trigger;
        let record = self.fields;
        let mut checks = Vec::with_capacity(trigger.rules.len() + 1);
        let mut matched = true;
        if let Some(when) = &trigger.when {
            let rhai = self.rhai.get_or_init(|| map_to_dynamic(record));
            let outcome = match crate::compile::rule_engine().evaluate(when, rhai, &w.vars) {
                Err(err) if err.is_limit() => {
                    let message = format!("workflow `{}`: `when:` {err}", w.name);
                    if !w.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            workflow = %w.name,
                            error = %message,
                            "a rule was stopped by a limit; the record does not match (later stops of this workflow are in the trigger traces only)"
                        );
                    }
                    Evaluation::Error { message }
                }
                result => Evaluation::from(result),
            };
            matched &= outcome.matched();
            checks.push(Check::When {
                source: when.source().to_owned(),
                outcome,
            });
        }
        for rule in &trigger.rules {
            let holds = rule.holds(record, now);
            matched &= holds;
            checks.push(Check::Rule {
                rule: rule.describe(),
                actual: record.get(&rule.field).cloned().unwrap_or(Value::Null),
                holds,
            });
        }
        Verdict { matched, checks }
    }
}

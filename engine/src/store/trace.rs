//! The trigger trace: for each subject, the last [`TRACE_LIMIT`] evaluations that considered it.
//!
//! Each [`TraceEntry`] says what happened to the record (`record:updated`, a schedule tick), which
//! workflows considered it, what each check evaluated to (per rule for structured rules, the
//! result for a rhai `when:`), whether the result turned true, and the [`QueueId`] of the run
//! request it enqueued. `blockyard triggers why` prints them.
//!
//! Run ids do not exist when a request is enqueued; the executor calls
//! [`crate::records::RecordStore::link_run`] with the queue id once the run exists, and the entry
//! then names the run too.
//!
//! The store owns these types (it keeps them, and a [`Decision`] is what it receives from the
//! trigger evaluation it must write atomically with a record); `crate::trigger` evaluates rules
//! into them and re-exports them under `crate::trigger::trace`.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::queue::{Cause, QueueId, RunRequest, WorkflowName};
use crate::records::Subject;
use crate::rules::Evaluation;

/// How many entries are kept per subject; older ones are overwritten.
pub const TRACE_LIMIT: u64 = 20;

/// One evaluation of a subject.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TraceEntry {
    /// Per subject, increasing.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub subject: Subject,
    pub cause: Cause,
    pub considered: Vec<Consideration>,
    /// Why the change was held back, or that it was evaluated after a run (see
    /// [`crate::store::in_flight`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One workflow's look at a subject.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Consideration {
    pub workflow: WorkflowName,
    /// The conditions on the record before the write (none for a new record or a schedule tick).
    pub before: Option<Verdict>,
    /// The conditions on the record after the write (none for a delete).
    pub after: Option<Verdict>,
    /// Whether a run was requested.
    pub fired: bool,
    /// The queue entry of the requested run.
    pub queued: Option<QueueId>,
    /// The run, once the executor has linked it.
    pub run: Option<String>,
    /// Why the workflow's `exclude:` leaves this subject out (no run, whatever the conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    /// Why the run is held by the mass-change guard, once it is (`crate::exec::guard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Why the requested run has not started: `not started: workflow `NAME` paused by WHO at
    /// WHEN` (see `crate::service::pause`); kept once the run starts, as a record of the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

/// A consideration and, when it fires, the run request it makes: what a trigger evaluation
/// hands the store to write with the record (see [`super::records::Evaluate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub consideration: Consideration,
    pub request: Option<RunRequest>,
}

/// The conditions' result on one record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    pub matched: bool,
    pub checks: Vec<Check>,
}

/// One condition's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Check {
    /// A structured rule: `status equals "terminated"`, the field's value, whether it held.
    Rule {
        rule: String,
        actual: Value,
        holds: bool,
    },
    /// A rhai `when:`.
    When { source: String, outcome: Evaluation },
}

impl TraceEntry {
    /// The entry as text, one line per workflow and check.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} {}",
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.subject,
            self.cause
        );
        if let Some(note) = &self.note {
            let _ = writeln!(out, "  {note}");
        }
        for c in &self.considered {
            let _ = write!(out, "  {}: {}", c.workflow, c.explain());
        }
        out
    }
}

impl Consideration {
    /// What came of it, in `triggers why`'s words: `run requested (queue …)`, `no run: the
    /// conditions do not hold`, `no run: excluded: …`.
    pub fn outcome(&self) -> String {
        match (&self.before, &self.after, self.fired) {
            (_, _, false) if self.excluded.is_some() => {
                format!(
                    "no run: excluded: {}",
                    self.excluded.as_deref().unwrap_or("")
                )
            }
            (_, _, true) if self.held.is_some() => format!(
                "run requested (queue {}, run {}), {}",
                self.queued.map(|q| q.to_string()).unwrap_or_default(),
                self.run.as_deref().unwrap_or_default(),
                self.held.as_deref().unwrap_or_default()
            ),
            (_, _, true) => match (&self.queued, &self.run) {
                (Some(q), Some(run)) => match &self.paused {
                    Some(paused) => {
                        format!("run requested (queue {q}, run {run}); was held: {paused}")
                    }
                    None => format!("run requested (queue {q}, run {run})"),
                },
                (Some(q), None) => match &self.paused {
                    Some(paused) => format!("run requested (queue {q}), {paused}"),
                    None => format!("run requested (queue {q})"),
                },
                _ => "run requested".to_owned(),
            },
            (Some(b), Some(a), false) if b.matched && a.matched => {
                "no run: it already matched before this change".to_owned()
            }
            (_, Some(a), false) if !a.matched => "no run: the conditions do not hold".to_owned(),
            (Some(b), None, false) if !b.matched => {
                "no run: the deleted record did not match".to_owned()
            }
            _ => "no run".to_owned(),
        }
    }

    /// The outcome line, then each verdict with every check, as `triggers why` prints them under
    /// the workflow's name (and a refused manual run quotes them).
    pub fn explain(&self) -> String {
        let mut out = self.outcome();
        out.push('\n');
        if let Some(before) = &self.before {
            render_verdict(&mut out, "before", before);
        }
        if let Some(after) = &self.after {
            render_verdict(&mut out, "after", after);
        }
        out
    }
}

fn render_verdict(out: &mut String, label: &str, verdict: &Verdict) {
    let _ = writeln!(
        out,
        "    {label}: {}",
        if verdict.matched { "match" } else { "no match" }
    );
    for check in &verdict.checks {
        let _ = match check {
            Check::Rule {
                rule,
                actual,
                holds,
            } => writeln!(out, "      {rule}: {holds} (value: {})", Shown(actual)),
            Check::When { source, outcome } => writeln!(out, "      when `{source}`: {outcome}"),
        };
    }
}

struct Shown<'a>(&'a Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Null => f.write_str("none"),
            other => write!(f, "{other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_request_says_why_it_has_not_started_and_keeps_it_once_it_runs() {
        let queued = QueueId::generate();
        let held = "not started: workflow `offboard` paused by alice at 2026-11-30T10:00:00Z";
        let mut c = Consideration {
            workflow: WorkflowName::new("offboard"),
            before: None,
            after: None,
            fired: true,
            queued: Some(queued),
            run: None,
            excluded: None,
            held: None,
            paused: Some(held.to_owned()),
        };
        assert_eq!(
            c.outcome(),
            format!("run requested (queue {queued}), {held}")
        );
        c.run = Some("01RUN".to_owned());
        assert_eq!(
            c.outcome(),
            format!("run requested (queue {queued}, run 01RUN); was held: {held}")
        );
    }
}

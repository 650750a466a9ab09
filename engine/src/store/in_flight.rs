//! Subjects in flight: which runs (and queued run requests) a subject record has outstanding, and
//! the record changes held back until they are done.
//!
//! A record change that lands while a run for its subject is in flight is not evaluated by the
//! triggers at once: it is evaluated after the run, as if it had landed then. Evaluated at once it
//! can miss a transition (a person marked terminated while the run that creates their account is
//! in flight: the rule held before and after, so nothing starts, and the account stays) or race
//! the run (a delete started while the create is still going).
//!
//! The `in_flight` tree holds, per subject (`collection/key`), an [`InFlight`]: its *holders* and
//! the [`Deferred`] change. A holder is `queue:ID` from the moment a run request for the subject
//! is queued (in the same transaction as the write that queued it) until its run exists, and
//! `run:ID` from the moment a live run of the subject is created until it reaches a final status
//! (a run waiting for approval holds its subject). [`crate::records::RecordStore`] does the rest:
//!
//! - a write of a subject with holders, by anyone but a run holding it, is applied to the record
//!   at once but not evaluated; the fields it changed are remembered with their values from
//!   before the first such write ([`Deferred`]) and the trace says so;
//! - a save by a run holding the subject is evaluated at once, on the record as it would be
//!   without the held-back changes (they come after the run);
//! - when the last holder goes, the held-back change is evaluated as one: the record as it is
//!   now, against the same record with the changed fields put back as they were. The runs it
//!   starts hold the subject in turn.
//!
//! The tree is durable with the records and the queue, so a change held back when a process
//! stops is evaluated after the next `serve` start: holders whose queue entry or run no longer
//! exists (or has finished) are dropped then ([`crate::records::RecordStore::reconcile`]).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::records::Fields;

/// The tree of subjects in flight.
pub(crate) const IN_FLIGHT: &str = "in_flight";

/// One subject's outstanding runs and held-back change.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InFlight {
    /// `queue:ID` and `run:ID`.
    pub holders: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferred>,
}

/// Record changes held back while the subject was in flight.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Deferred {
    /// Whether the record existed before the first held-back change.
    pub existed: bool,
    /// The fields the changes set or changed, with their values before the first of them.
    #[serde(default)]
    pub before: Map<String, Value>,
    /// The fields the changes added, which the record did not have before.
    #[serde(default)]
    pub absent: BTreeSet<String>,
    /// When the first change was held back.
    pub since: DateTime<Utc>,
}

/// The holder of a queued run request.
pub fn queue_holder(id: impl std::fmt::Display) -> String {
    format!("queue:{id}")
}

/// The holder of a run.
pub fn run_holder(id: impl std::fmt::Display) -> String {
    format!("run:{id}")
}

/// A holder as people read it: `run 01J…`, `queued run request 01J…`.
pub fn describe(holder: &str) -> String {
    match holder.split_once(':') {
        Some(("run", id)) => format!("run {id}"),
        Some(("queue", id)) => format!("queued run request {id}"),
        _ => holder.to_owned(),
    }
}

impl InFlight {
    /// The holder a note names: a run before a queued request.
    pub fn named_holder(&self) -> Option<&str> {
        self.holders
            .iter()
            .find(|h| h.starts_with("run:"))
            .or_else(|| self.holders.iter().next())
            .map(String::as_str)
    }

    /// Nothing outstanding and nothing held back.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.deferred.is_none()
    }
}

impl Deferred {
    /// Starts holding back changes of a record that was `old` before the first of them.
    pub fn new(old: Option<&Fields>, since: DateTime<Utc>) -> Deferred {
        Deferred {
            existed: old.is_some(),
            before: Map::new(),
            absent: BTreeSet::new(),
            since,
        }
    }

    /// Remembers the fields a change from `old` to `new` touched (a field touched before keeps
    /// the value it had before the first change).
    pub fn add(&mut self, old: Option<&Fields>, new: Option<&Fields>) {
        let empty = Map::new();
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        let changed = old
            .iter()
            .filter(|(k, v)| new.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(new.keys().filter(|k| !old.contains_key(*k)));
        for key in changed {
            if self.before.contains_key(key) || self.absent.contains(key) {
                continue;
            }
            match old.get(key) {
                Some(value) => {
                    self.before.insert(key.clone(), value.clone());
                }
                None => {
                    self.absent.insert(key.clone());
                }
            }
        }
    }

    /// Forgets fields a run then wrote itself: the record has the run's value, so a held-back
    /// change of them is no change any more.
    pub fn forget<'a>(&mut self, keys: impl IntoIterator<Item = &'a String>) {
        for key in keys {
            self.before.shift_remove(key);
            self.absent.remove(key);
        }
    }

    /// `record` with the held-back changes undone: the record as it would be without them.
    pub fn revert(&self, record: &Fields) -> Fields {
        let mut out = record.clone();
        for (key, value) in &self.before {
            out.insert(key.clone(), value.clone());
        }
        for key in &self.absent {
            out.shift_remove(key);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Fields {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn revert_undoes_exactly_the_held_back_changes_and_keeps_the_runs_own() {
        let original = fields(json!({"email": "a@x.io", "status": "active"}));
        let mut deferred = Deferred::new(Some(&original), Utc::now());
        // HR: terminated, and a new field.
        let hr = fields(json!({"email": "a@x.io", "status": "terminated", "note": "left"}));
        deferred.add(Some(&original), Some(&hr));
        // HR again: the first value before the changes is kept.
        let hr2 = fields(json!({"email": "a@x.io", "status": "gone", "note": "left"}));
        deferred.add(Some(&hr), Some(&hr2));
        // The run saves an id (and overwrites the note).
        let mut now = hr2.clone();
        now.insert("user_id".to_owned(), json!("U1"));
        now.insert("note".to_owned(), json!("run"));
        deferred.forget([&"user_id".to_owned(), &"note".to_owned()]);
        assert_eq!(
            Value::Object(deferred.revert(&now)),
            json!({"email": "a@x.io", "status": "active", "user_id": "U1", "note": "run"})
        );
    }
}

//! The durable trigger queue: run requests waiting for the executor, and schedules' last ticks.
//!
//! A [`RunRequest`] is written in the same sled transaction as the record write (or schedule tick)
//! that caused it (see [`super::records`]), so after a crash either both are there or neither is.
//! Entries are keyed by a [`QueueId`], a monotonic ULID, so the tree iterates in the order requests
//! were made. Consumption is at-least-once:
//!
//! - [`Queue::claim`] hands out the oldest unclaimed entry and remembers the claim in memory only;
//! - [`Queue::ack`] deletes it (durable at the next flush);
//! - an entry claimed but not acked when the process stops is delivered again after a restart, and
//!   [`Queue::release`] puts it back at once (a worker that gives up).
//!
//! Claims live in the [`Queue`] handle (shared by its clones), so a process opens one `Queue` per
//! store and hands clones to its workers.
//!
//! Until the executor takes it, a request has no run: [`list`] shows it among the runs as a
//! queued one (`history list`, `GET /api/runs`), so runs queued while no `serve` runs are never
//! invisible.
//!
//! The `schedules` tree keeps, per workflow, the instant of the last tick that enqueued its run
//! requests, written in that same transaction: catch-up after a restart (`catch_up: last`) reads it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::history::{RunFilter, RunMode, RunRecord, RunStatus, RunTrigger, TriggerKind};
use super::{Store, StoreError};
use crate::compile::RecordEvent;
use crate::records::{Fields, Subject};

/// A workflow's name (its `name:`), the id run requests and traces use.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct WorkflowName(String);

impl WorkflowName {
    pub fn new(name: impl Into<String>) -> WorkflowName {
        WorkflowName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkflowName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tree of per-workflow last schedule ticks.
pub(crate) const SCHEDULES: &str = "schedules";

/// A queue entry's id: a ULID, monotonic within a process, so ids sort by the time they were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(ulid::Ulid);

/// The queue entry a run's trigger detail names (`people/jane@acme.com updated (queue 01J…)`).
pub fn queue_id_of(detail: &str) -> Option<QueueId> {
    let start = detail.rfind("(queue ")? + "(queue ".len();
    let end = detail[start..].find(')')? + start;
    detail[start..end].parse().ok()
}

impl QueueId {
    /// A new id, later than every id this process made before.
    pub fn generate() -> QueueId {
        static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
        let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        let generator = guard.get_or_insert_with(ulid::Generator::new);
        // The generator only fails after 2^80 ids in one millisecond.
        QueueId(generator.generate().unwrap_or_else(|_| ulid::Ulid::new()))
    }

    pub(crate) fn to_bytes(self) -> [u8; 16] {
        self.0 .0.to_be_bytes()
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<QueueId> {
        let bytes: [u8; 16] = bytes.try_into().ok()?;
        Some(QueueId(ulid::Ulid(u128::from_be_bytes(bytes))))
    }

    /// When the id was made.
    pub fn datetime(self) -> DateTime<Utc> {
        DateTime::<Utc>::from(self.0.datetime())
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for QueueId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<QueueId, ulid::DecodeError> {
        ulid::Ulid::from_string(s).map(QueueId)
    }
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<QueueId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What caused a run request: `record:created`, `record:updated`, `record:deleted` or `schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    Record(RecordEvent),
    Schedule,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Record(RecordEvent::Created) => "record:created",
            Cause::Record(RecordEvent::Updated) => "record:updated",
            Cause::Record(RecordEvent::Deleted) => "record:deleted",
            Cause::Schedule => "schedule",
        }
    }

    pub fn parse(text: &str) -> Option<Cause> {
        Some(match text {
            "record:created" => Cause::Record(RecordEvent::Created),
            "record:updated" => Cause::Record(RecordEvent::Updated),
            "record:deleted" => Cause::Record(RecordEvent::Deleted),
            "schedule" => Cause::Schedule,
            _ => return None,
        })
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Cause {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cause, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Cause::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown trigger `{text}`")))
    }
}

/// A request to start one run, as the executor receives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRequest {
    pub workflow: WorkflowName,
    /// The record the run is about; `None` for a scheduled workflow without `records:`.
    pub subject: Option<Subject>,
    /// The subject's fields when the request was made (after the write; before it for a delete).
    pub snapshot: Option<Fields>,
    pub trigger: Cause,
    /// When the request was made: the write's instant, or the schedule tick.
    pub at: DateTime<Utc>,
}

/// A queued run request and its id.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueEntry {
    pub id: QueueId,
    pub request: RunRequest,
}

impl QueueEntry {
    /// What started it, as its run's trigger will say: `record` with `people/jane@acme.com
    /// updated (queue ID)`, or `schedule` with `tick INSTANT (queue ID)`.
    pub fn trigger(&self) -> RunTrigger {
        let request = &self.request;
        let (kind, detail) = match request.trigger {
            Cause::Record(_) => {
                let event = request.trigger.as_str().trim_start_matches("record:");
                let subject = request
                    .subject
                    .as_ref()
                    .map_or_else(String::new, |s| format!("{s} "));
                (TriggerKind::Record, format!("{subject}{event}"))
            }
            Cause::Schedule => (
                TriggerKind::Schedule,
                format!("tick {}", request.at.to_rfc3339()),
            ),
        };
        RunTrigger {
            kind,
            detail: Some(format!("{detail} (queue {})", self.id)),
        }
    }

    /// The entry as `history list --json` shows a run that has not started: `queue_id` instead
    /// of `id` (no run exists yet), status `queued`, and the trigger and subject its run will have.
    pub fn as_queued_run(&self) -> Value {
        let request = &self.request;
        let mut run = json!({
            "queue_id": self.id.to_string(),
            "workflow": request.workflow.as_str(),
            "trigger": self.trigger(),
            "status": RunStatus::Queued,
            "mode": RunMode::Live,
            "created_at": self.id.datetime().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        if let Some(subject) = &request.subject {
            run["subject"] = json!({
                "collection": subject.collection.name(),
                "key": subject.key.as_str(),
                "record": request.snapshot.clone().map_or(Value::Null, Value::Object),
            });
        }
        run
    }

    /// Whether `history list`'s `filter` keeps this entry (its status is `queued`).
    fn listed(&self, filter: &RunFilter) -> bool {
        let request = &self.request;
        let subject = filter.subject.as_ref().map(|s| s.trim().to_lowercase());
        filter.status.is_none_or(|s| s == RunStatus::Queued)
            && filter
                .workflow
                .as_ref()
                .is_none_or(|w| w == request.workflow.as_str())
            && filter.since.is_none_or(|since| self.id.datetime() >= since)
            && subject.is_none_or(|wanted| {
                request.subject.as_ref().is_some_and(|s| {
                    let email = request
                        .snapshot
                        .as_ref()
                        .and_then(|f| f.get("email"))
                        .and_then(Value::as_str)
                        .map(str::to_lowercase);
                    s.key.email() == wanted || email.as_deref() == Some(wanted.as_str())
                })
            })
    }
}

/// A line of `history list`: a run, or a queued request whose run has not started (its run is
/// created when `blockyard serve` takes it from the queue).
#[derive(Debug, Clone)]
pub enum Listed {
    Run(Box<RunRecord>),
    Queued(QueueEntry),
}

impl Listed {
    /// A run as `history list --json` shows it ([`QueueEntry::as_queued_run`] for an entry).
    pub fn to_json(&self) -> Value {
        match self {
            Listed::Run(run) => serde_json::to_value(run).unwrap_or(Value::Null),
            Listed::Queued(entry) => entry.as_queued_run(),
        }
    }
}

/// The runs `filter` keeps and the queued requests not started yet (unclaimed by `queue`), newest
/// first: a run request is listed as a queued run from the moment it is queued.
pub async fn list(
    history: &(impl super::api::ReadHistory + Sync),
    queue: &(impl super::api::RunQueue + Sync),
    filter: &RunFilter,
) -> Result<Vec<Listed>, StoreError> {
    let mut listed: Vec<Listed> = history
        .list(filter)
        .await?
        .into_iter()
        .map(|run| Listed::Run(Box::new(run)))
        .collect();
    let queued = queue.pending().await?;
    if queued.is_empty() {
        return Ok(listed);
    }
    listed.extend(
        queued
            .into_iter()
            .filter(|e| e.listed(filter))
            .map(Listed::Queued),
    );
    // Run ids and queue ids are both ULIDs: they sort by creation, to the millisecond and
    // within it.
    listed.sort_by_key(|l| {
        std::cmp::Reverse(match l {
            Listed::Run(run) => run.id.0 .0,
            Listed::Queued(entry) => entry.id.0 .0,
        })
    });
    listed.truncate(filter.limit.unwrap_or(usize::MAX));
    Ok(listed)
}

/// The consumer side of the queue. Cheap to clone; clones share claims.
#[derive(Debug, Clone)]
pub struct Queue {
    tree: sled::Tree,
    schedules: sled::Tree,
    claimed: Arc<Mutex<BTreeSet<QueueId>>>,
    gate: super::Gate,
}

impl Queue {
    /// The queue of `store`. Open it once per process (claims are per handle).
    pub fn open(store: &Store) -> Result<Queue, StoreError> {
        Ok(Queue {
            tree: store.tree(super::trees::QUEUE)?,
            schedules: store.tree(SCHEDULES)?,
            claimed: Arc::default(),
            gate: store.gate().clone(),
        })
    }

    /// Every entry not claimed through this handle, oldest first.
    pub fn pending(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            let entry = decode(&key, &value)?;
            if !claimed.contains(&entry.id) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// One entry, claimed or not.
    pub fn get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        let key = id.to_bytes();
        match self.tree.get(key)? {
            None => Ok(None),
            Some(value) => decode(&key, &value).map(Some),
        }
    }

    /// How many entries the queue holds, claimed or not.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Takes the oldest unclaimed entry; it stays in the store until [`Queue::ack`].
    pub fn claim(&self) -> Result<Option<QueueEntry>, StoreError> {
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        for item in self.tree.iter() {
            let (key, value) = item?;
            let Some(id) = QueueId::from_bytes(&key) else {
                continue;
            };
            if claimed.contains(&id) {
                continue;
            }
            let entry = decode(&key, &value)?;
            claimed.insert(id);
            return Ok(Some(entry));
        }
        Ok(None)
    }

    /// Removes a claimed (or any) entry: its run has been recorded. Returns whether it was there.
    pub fn ack(&self, id: QueueId) -> Result<bool, StoreError> {
        let removed = {
            let _writing = self.gate.writing();
            self.tree.remove(id.to_bytes())?.is_some()
        };
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        Ok(removed)
    }

    /// Gives a claimed entry back, to be claimed again.
    pub fn release(&self, id: QueueId) {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// [`Queue::release`], saying whether this handle held `id`.
    pub fn give_back(&self, id: QueueId) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// The last schedule tick that enqueued `workflow`'s runs.
    pub fn last_fired(&self, workflow: &WorkflowName) -> Result<Option<DateTime<Utc>>, StoreError> {
        let Some(value) = self.schedules.get(workflow.as_str())? else {
            return Ok(None);
        };
        decode_last_fired(workflow, &value).map(Some)
    }
}

/// A `schedules` entry: `workflow`'s last tick.
pub(crate) fn decode_last_fired(
    workflow: &WorkflowName,
    value: &[u8],
) -> Result<DateTime<Utc>, StoreError> {
    serde_json::from_slice(value).map_err(|err| StoreError::Corrupt {
        tree: SCHEDULES,
        key: workflow.to_string(),
        message: err.to_string(),
    })
}

fn decode(key: &[u8], value: &[u8]) -> Result<QueueEntry, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        tree: super::trees::QUEUE,
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    };
    let id = QueueId::from_bytes(key).ok_or_else(|| corrupt("not a queue id".to_owned()))?;
    let request = serde_json::from_slice(value).map_err(|err| corrupt(err.to_string()))?;
    Ok(QueueEntry { id, request })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        assert!(ids
            .windows(2)
            .all(|w| w[0] < w[1] && w[0].to_bytes() < w[1].to_bytes()));
        let text = ids[7].to_string();
        assert_eq!(text.parse::<QueueId>().unwrap(), ids[7]);
        assert_eq!(QueueId::from_bytes(&ids[7].to_bytes()), Some(ids[7]));
    }

    #[test]
    fn causes_read_as_written() {
        for cause in [
            Cause::Record(RecordEvent::Created),
            Cause::Record(RecordEvent::Updated),
            Cause::Record(RecordEvent::Deleted),
            Cause::Schedule,
        ] {
            assert_eq!(Cause::parse(cause.as_str()), Some(cause));
        }
    }
}

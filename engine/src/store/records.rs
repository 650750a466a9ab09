//! Records, their traces, and the run requests they trigger, written together.
//!
//! Trees: `records` (`collection/key` → the fields as JSON), `queue` (see [`super::queue`]),
//! `traces` (`subject \0 slot` → a [`TraceEntry`], `subject \0 #` → the subject's next sequence
//! number; slot = sequence mod [`TRACE_LIMIT`], so each subject keeps its last entries without a
//! scan) and `trace_links` (queue id → where its trace entry is, until the executor links the run).
//!
//! A fifth tree, `in_flight`, holds per subject the runs and queued requests outstanding and the
//! record changes held back until they are done ([`super::in_flight`]).
//!
//! [`RecordStore::write`] applies a batch of writes in **one** sled transaction over all the trees:
//! a record, the run requests its change triggers, and the trace of that decision become durable
//! together or not at all, so a crash can neither lose a trigger nor leave one for a record that
//! was never written. Callers batch (an import writes a few hundred rows per transaction) and flush
//! once at the end; nothing here fsyncs per write.

use chrono::{DateTime, Utc};

use super::in_flight::{describe, queue_holder, Deferred, InFlight, IN_FLIGHT};
use super::queue::{QueueId, RunRequest, SCHEDULES};
use super::{trees, Store, StoreError};
use crate::compile::RecordEvent;
use crate::records::{self, Change, Collection, Fields, Outcome, RecordKey, Subject, Write};
use crate::trigger::trace::{TraceEntry, TRACE_LIMIT};
use crate::trigger::{Cause, Consideration, Decision, Triggers, WorkflowName};

use sled::transaction::{
    ConflictableTransactionError as TxError, TransactionError, TransactionalTree,
};
use sled::Transactional;

/// The trace tree.
pub(crate) const TRACES: &str = "traces";
/// Queue id → trace key, until the run is linked.
pub(crate) const TRACE_LINKS: &str = "trace_links";

/// What one write did, and the run requests it enqueued.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub outcome: Outcome,
    pub queued: Vec<QueueId>,
}

/// The records API over the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RecordStore {
    store: Store,
    records: sled::Tree,
    queue: sled::Tree,
    traces: sled::Tree,
    links: sled::Tree,
    schedules: sled::Tree,
    in_flight: sled::Tree,
}

impl RecordStore {
    pub fn open(store: &Store) -> Result<RecordStore, StoreError> {
        Ok(RecordStore {
            store: store.clone(),
            records: store.tree(trees::RECORDS)?,
            queue: store.tree(trees::QUEUE)?,
            traces: store.tree(TRACES)?,
            links: store.tree(TRACE_LINKS)?,
            schedules: store.tree(SCHEDULES)?,
            in_flight: store.tree(IN_FLIGHT)?,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A record's fields.
    pub fn get(&self, subject: &Subject) -> Result<Option<Fields>, StoreError> {
        let key = record_key(subject);
        match self.records.get(&key)? {
            None => Ok(None),
            Some(value) => decode_record(key.as_bytes(), &value).map(Some),
        }
    }

    /// Every record of `collection`, by key.
    pub fn list(
        &self,
        collection: Collection,
    ) -> impl Iterator<Item = Result<(RecordKey, Fields), StoreError>> + '_ {
        let prefix = format!("{}/", collection.name());
        let skip = prefix.len();
        self.records.scan_prefix(prefix).map(move |item| {
            let (key, value) = item?;
            let fields = decode_record(&key, &value)?;
            let text = String::from_utf8_lossy(&key[skip..]);
            Ok((RecordKey::parse(&text), fields))
        })
    }

    /// How many records `collection` holds.
    pub fn count(&self, collection: Collection) -> usize {
        self.records
            .scan_prefix(format!("{}/", collection.name()))
            .keys()
            .count()
    }

    /// Applies `writes` in order, in one transaction with the run requests `triggers` decide on
    /// and their traces. Not flushed: call [`Store::flush`] when the batch should be durable.
    ///
    /// A write of a subject with a run in flight is applied but its evaluation held back until
    /// the run is done (see [`super::in_flight`]).
    pub fn write(
        &self,
        writes: &[Write],
        triggers: &Triggers,
        now: DateTime<Utc>,
    ) -> Result<Vec<Written>, StoreError> {
        self.write_as(writes, triggers, now, None)
    }

    /// [`RecordStore::write`] by a run (`by` is its holder, `run:ID`): a save onto a subject the
    /// run holds is evaluated at once, on the record without the changes held back for after it.
    pub fn write_as(
        &self,
        writes: &[Write],
        triggers: &Triggers,
        now: DateTime<Utc>,
        by: Option<&str>,
    ) -> Result<Vec<Written>, StoreError> {
        self.in_transaction(|tx| {
            let records = tx.records;
            let mut out = Vec::with_capacity(writes.len());
            for write in writes {
                let key = record_key(&write.subject);
                let old = match records.get(&key)? {
                    Some(value) => {
                        Some(decode_record(key.as_bytes(), &value).map_err(TxError::Abort)?)
                    }
                    None => None,
                };
                let (new, outcome) = records::apply(old.as_ref(), &write.change);
                match outcome {
                    Outcome::Created | Outcome::Updated => {
                        let value = serde_json::to_vec(&new).expect("fields serialize");
                        records.insert(key.as_bytes(), value)?;
                    }
                    Outcome::Deleted => {
                        records.remove(key.as_bytes())?;
                    }
                    Outcome::Unchanged | Outcome::Skipped | Outcome::NotFound => {}
                }
                let mut queued = Vec::new();
                if let Some(event) = outcome.event() {
                    queued = tx.evaluate(
                        write,
                        &key,
                        event,
                        old.as_ref(),
                        new.as_ref(),
                        triggers,
                        now,
                        by,
                    )?;
                }
                out.push(Written { outcome, queued });
            }
            Ok(out)
        })
    }

    /// Makes `holder` (`run:ID`, see [`super::in_flight`]) hold `subject`: changes to it are
    /// evaluated after the holder is released.
    pub fn hold(&self, subject: &Subject, holder: &str) -> Result<(), StoreError> {
        let key = record_key(subject);
        let result = self.in_flight.transaction(|in_flight| {
            let mut flight = get_in_flight(in_flight, &key)?.unwrap_or_default();
            if flight.holders.insert(holder.to_owned()) {
                put_in_flight(in_flight, &key, &flight)?;
            }
            Ok(())
        });
        unwrap_tx(result)
    }

    /// Releases `holder`'s hold on `subject`. When nothing holds it any more, the changes held
    /// back meanwhile are evaluated, as one, with `triggers` (kept for later when `triggers` is
    /// empty, as in a command that loaded no workflows). Returns the run requests queued.
    pub fn release(
        &self,
        subject: &Subject,
        holder: &str,
        triggers: &Triggers,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>, StoreError> {
        let key = record_key(subject);
        self.in_transaction(|tx| {
            let Some(mut flight) = get_in_flight(tx.in_flight, &key)? else {
                return Ok(Vec::new());
            };
            if !flight.holders.remove(holder) {
                return Ok(Vec::new());
            }
            tx.settle(subject, &key, flight, Some(holder), triggers, now)
        })
    }

    /// Drops the holders `alive` says are gone (a queue entry acknowledged, a run finished or
    /// unknown: what a stopped process left) and evaluates the changes held back for subjects
    /// nothing holds any more. Returns the run requests queued.
    pub fn reconcile(
        &self,
        alive: impl Fn(&str) -> bool,
        triggers: &Triggers,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>, StoreError> {
        let keys: Vec<String> = self
            .in_flight
            .iter()
            .keys()
            .map(|k| k.map(|k| String::from_utf8_lossy(&k).into_owned()))
            .collect::<Result<_, _>>()?;
        let mut queued = Vec::new();
        for key in keys {
            let Some((collection, rest)) = key.split_once('/') else {
                continue;
            };
            let Some(collection) = Collection::parse(collection) else {
                continue;
            };
            let subject = Subject::new(collection, RecordKey::parse(rest));
            // `alive` reads other trees: outside the transaction (sled's transactions and plain
            // reads share one lock, so a read inside one would wait for itself).
            let Some(flight) = self.in_flight(&subject)? else {
                continue;
            };
            let gone: Vec<&String> = flight.holders.iter().filter(|h| !alive(h)).collect();
            queued.extend(self.in_transaction(|tx| {
                let Some(mut flight) = get_in_flight(tx.in_flight, &key)? else {
                    return Ok(Vec::new());
                };
                for holder in &gone {
                    flight.holders.remove(*holder);
                }
                tx.settle(&subject, &key, flight, None, triggers, now)
            })?);
        }
        Ok(queued)
    }

    /// What holds `subject` and what is held back for after it.
    pub fn in_flight(&self, subject: &Subject) -> Result<Option<InFlight>, StoreError> {
        let key = record_key(subject);
        match self.in_flight.get(&key)? {
            None => Ok(None),
            Some(value) => decode_in_flight(key.as_bytes(), &value).map(Some),
        }
    }

    fn in_transaction<T>(
        &self,
        f: impl Fn(&Tx<'_>) -> Result<T, TxError<StoreError>>,
    ) -> Result<T, StoreError> {
        let trees = (
            &self.records,
            &self.queue,
            &self.traces,
            &self.links,
            &self.in_flight,
        );
        let result = trees.transaction(|(records, queue, traces, links, in_flight)| {
            f(&Tx {
                records,
                queue,
                traces,
                links,
                in_flight,
            })
        });
        unwrap_tx(result)
    }

    /// Enqueues one schedule tick's run requests and records `tick` as `workflow`'s last, in one
    /// transaction (so a tick is enqueued exactly once, even across a crash).
    pub(crate) fn enqueue_tick(
        &self,
        workflow: &WorkflowName,
        tick: DateTime<Utc>,
        decisions: Vec<(Option<Subject>, Decision)>,
    ) -> Result<Vec<QueueId>, StoreError> {
        let last = serde_json::to_vec(&tick).expect("instants serialize");
        let trees = (
            &self.queue,
            &self.traces,
            &self.links,
            &self.schedules,
            &self.in_flight,
        );
        let result = trees.transaction(|(queue, traces, links, schedules, in_flight)| {
            let mut ids = Vec::new();
            for (subject, decision) in &decisions {
                match subject {
                    Some(subject) => ids.extend(record_decisions(
                        queue,
                        traces,
                        links,
                        in_flight,
                        subject,
                        Cause::Schedule,
                        tick,
                        vec![decision.clone()],
                        None,
                    )?),
                    None => {
                        if let Some(request) = &decision.request {
                            ids.push(enqueue(queue, request)?);
                        }
                    }
                }
            }
            schedules.insert(workflow.as_str(), last.clone())?;
            Ok(ids)
        });
        unwrap_tx(result)
    }

    /// A subject's trace, oldest first.
    pub fn trace(&self, subject: &Subject) -> Result<Vec<TraceEntry>, StoreError> {
        let mut prefix = subject.to_string().into_bytes();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.traces.scan_prefix(&prefix) {
            let (key, value) = item?;
            if key.ends_with(b"\0#") {
                continue;
            }
            out.push(decode_trace(&key, &value)?);
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    /// The subjects with a trace whose email (or whole key) is `email`, in any collection.
    pub fn traced_subjects(&self, email: &str) -> Result<Vec<Subject>, StoreError> {
        let email = email.trim().to_lowercase();
        let mut subjects: Vec<Subject> = Vec::new();
        for item in self.traces.iter().keys() {
            let key = item?;
            let Some(end) = key.iter().position(|&b| b == 0) else {
                continue;
            };
            let text = String::from_utf8_lossy(&key[..end]);
            let Some((collection, rest)) = text.split_once('/') else {
                continue;
            };
            let Some(collection) = Collection::parse(collection) else {
                continue;
            };
            let key = RecordKey::parse(rest);
            if (key.email() == email || key.as_str() == email)
                && !subjects
                    .iter()
                    .any(|s| s.collection == collection && s.key == key)
            {
                subjects.push(Subject::new(collection, key));
            }
        }
        Ok(subjects)
    }

    /// Names the run started for the queue entry `queued` in its trace entry. Returns false when
    /// the entry is gone (overwritten by newer ones, or already linked).
    pub fn link_run(&self, queued: QueueId, run: &str) -> Result<bool, StoreError> {
        let Some(trace_key) = self.links.get(queued.to_bytes())? else {
            return Ok(false);
        };
        let result = (&self.traces, &self.links).transaction(|(traces, links)| {
            links.remove(&queued.to_bytes())?;
            let Some(value) = traces.get(&trace_key)? else {
                return Ok(false);
            };
            let mut entry = decode_trace(&trace_key, &value).map_err(TxError::Abort)?;
            let Some(c) = entry
                .considered
                .iter_mut()
                .find(|c| c.queued == Some(queued))
            else {
                return Ok(false);
            };
            c.run = Some(run.to_owned());
            traces.insert(
                &trace_key,
                serde_json::to_vec(&entry).expect("traces serialize"),
            )?;
            Ok(true)
        });
        unwrap_tx(result)
    }
}

/// The trees a record write changes, inside its transaction.
struct Tx<'a> {
    records: &'a TransactionalTree,
    queue: &'a TransactionalTree,
    traces: &'a TransactionalTree,
    links: &'a TransactionalTree,
    in_flight: &'a TransactionalTree,
}

impl Tx<'_> {
    /// Evaluates one applied write (`old` → `new`) and queues what it starts, or holds it back
    /// while the subject is in flight (see [`super::in_flight`]).
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        write: &Write,
        key: &str,
        event: RecordEvent,
        old: Option<&Fields>,
        new: Option<&Fields>,
        triggers: &Triggers,
        now: DateTime<Utc>,
        by: Option<&str>,
    ) -> Result<Vec<QueueId>, TxError<StoreError>> {
        let subject = &write.subject;
        // Held back only where a workflow watches the collection: elsewhere there is nothing
        // to evaluate, now or later.
        let watched = || {
            [
                RecordEvent::Created,
                RecordEvent::Updated,
                RecordEvent::Deleted,
            ]
            .into_iter()
            .any(|e| triggers.watches(subject.collection, e))
        };
        let mut flight = match get_in_flight(self.in_flight, key)? {
            Some(flight) if !flight.holders.is_empty() && watched() => flight,
            _ => {
                let decisions = triggers.consider(subject, event, old, new, now);
                return self.decide(subject, Cause::Record(event), now, decisions, None);
            }
        };
        let own = by.is_some_and(|holder| flight.holders.contains(holder));
        if !own {
            let deferred = flight
                .deferred
                .get_or_insert_with(|| Deferred::new(old, now));
            deferred.add(old, new);
            let note = format!(
                "deferred: {} is in flight for this subject; the change is evaluated when it finishes",
                describe(flight.named_holder().unwrap_or("a run"))
            );
            put_in_flight(self.in_flight, key, &flight)?;
            return self.decide(subject, Cause::Record(event), now, Vec::new(), Some(note));
        }
        // A save by a run holding the subject comes before the changes held back for after the
        // run: it is judged on the record without them.
        let view = match (&mut flight.deferred, old, new, &write.change) {
            (Some(deferred), Some(old), Some(new), Change::Upsert { fields, .. }) => {
                let before = deferred.revert(old);
                deferred.forget(fields.keys());
                let after = deferred.revert(new);
                put_in_flight(self.in_flight, key, &flight)?;
                Some((before, after))
            }
            _ => None,
        };
        let (old, new) = match &view {
            Some((before, after)) => (Some(before), Some(after)),
            None => (old, new),
        };
        let decisions = triggers.consider(subject, event, old, new, now);
        self.decide(subject, Cause::Record(event), now, decisions, None)
    }

    /// With `flight` (a subject's, minus a holder just released): when nothing holds the
    /// subject any more, evaluates the held-back change as one and queues what it starts, then
    /// stores what is left of `flight`.
    fn settle(
        &self,
        subject: &Subject,
        key: &str,
        mut flight: InFlight,
        released: Option<&str>,
        triggers: &Triggers,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>, TxError<StoreError>> {
        let deferred = if flight.holders.is_empty() && !triggers.is_empty() {
            flight.deferred.take()
        } else {
            None
        };
        if flight.is_empty() {
            self.in_flight.remove(key.as_bytes())?;
        } else {
            put_in_flight(self.in_flight, key, &flight)?;
        }
        let Some(deferred) = deferred else {
            return Ok(Vec::new());
        };
        let current = match self.records.get(key)? {
            Some(value) => Some(decode_record(key.as_bytes(), &value).map_err(TxError::Abort)?),
            None => None,
        };
        let before = deferred
            .existed
            .then(|| deferred.revert(current.as_ref().unwrap_or(&Fields::new())));
        let event = match (before.is_some(), current.is_some()) {
            (false, true) => RecordEvent::Created,
            (true, true) => RecordEvent::Updated,
            (true, false) => RecordEvent::Deleted,
            (false, false) => return Ok(Vec::new()),
        };
        let decisions = triggers.consider(subject, event, before.as_ref(), current.as_ref(), now);
        let note = match released {
            Some(holder) => format!("evaluated after {} finished", describe(holder)),
            None => "evaluated once nothing was in flight for this subject any more".to_owned(),
        };
        self.decide(subject, Cause::Record(event), now, decisions, Some(note))
    }

    fn decide(
        &self,
        subject: &Subject,
        cause: Cause,
        at: DateTime<Utc>,
        decisions: Vec<Decision>,
        note: Option<String>,
    ) -> Result<Vec<QueueId>, TxError<StoreError>> {
        record_decisions(
            self.queue,
            self.traces,
            self.links,
            self.in_flight,
            subject,
            cause,
            at,
            decisions,
            note,
        )
    }
}

fn get_in_flight(
    in_flight: &TransactionalTree,
    key: &str,
) -> Result<Option<InFlight>, TxError<StoreError>> {
    match in_flight.get(key.as_bytes())? {
        None => Ok(None),
        Some(value) => decode_in_flight(key.as_bytes(), &value)
            .map(Some)
            .map_err(TxError::Abort),
    }
}

fn put_in_flight(
    in_flight: &TransactionalTree,
    key: &str,
    flight: &InFlight,
) -> Result<(), TxError<StoreError>> {
    in_flight.insert(
        key.as_bytes(),
        serde_json::to_vec(flight).expect("in-flight entries serialize"),
    )?;
    Ok(())
}

fn decode_in_flight(key: &[u8], value: &[u8]) -> Result<InFlight, StoreError> {
    serde_json::from_slice(value).map_err(|err| StoreError::Corrupt {
        tree: IN_FLIGHT,
        key: String::from_utf8_lossy(key).into_owned(),
        message: err.to_string(),
    })
}

/// Writes each decision's run request (the subject's queued requests hold it, see
/// [`super::in_flight`]), then one trace entry with them all and `note`.
#[allow(clippy::too_many_arguments)]
fn record_decisions(
    queue: &TransactionalTree,
    traces: &TransactionalTree,
    links: &TransactionalTree,
    in_flight: &TransactionalTree,
    subject: &Subject,
    cause: Cause,
    at: DateTime<Utc>,
    decisions: Vec<Decision>,
    note: Option<String>,
) -> Result<Vec<QueueId>, TxError<StoreError>> {
    if decisions.is_empty() && note.is_none() {
        return Ok(Vec::new());
    }
    let mut queued = Vec::new();
    let mut considered: Vec<Consideration> = Vec::with_capacity(decisions.len());
    for Decision {
        mut consideration,
        request,
    } in decisions
    {
        if let Some(request) = request {
            let id = enqueue(queue, &request)?;
            consideration.queued = Some(id);
            queued.push(id);
        }
        considered.push(consideration);
    }
    if !queued.is_empty() {
        let key = record_key(subject);
        let mut flight = get_in_flight(in_flight, &key)?.unwrap_or_default();
        flight.holders.extend(queued.iter().map(queue_holder));
        put_in_flight(in_flight, &key, &flight)?;
    }
    let mut prefix = subject.to_string().into_bytes();
    prefix.push(0);
    let mut counter_key = prefix.clone();
    counter_key.push(b'#');
    let seq = match traces.get(&counter_key)? {
        Some(v) => v
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or_default(),
        None => 0,
    };
    traces.insert(counter_key, &(seq + 1).to_be_bytes())?;
    let mut key = prefix;
    key.extend_from_slice(&((seq % TRACE_LIMIT) as u8).to_be_bytes());
    let entry = TraceEntry {
        seq,
        at,
        subject: subject.clone(),
        cause,
        considered,
        note,
    };
    traces.insert(
        key.as_slice(),
        serde_json::to_vec(&entry).expect("traces serialize"),
    )?;
    for id in &queued {
        links.insert(&id.to_bytes(), key.as_slice())?;
    }
    Ok(queued)
}

fn enqueue(
    queue: &TransactionalTree,
    request: &RunRequest,
) -> Result<QueueId, TxError<StoreError>> {
    let id = QueueId::generate();
    queue.insert(
        &id.to_bytes(),
        serde_json::to_vec(request).expect("run requests serialize"),
    )?;
    Ok(id)
}

fn unwrap_tx<T>(result: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    result.map_err(|err| match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(err) => StoreError::Sled(err),
    })
}

fn record_key(subject: &Subject) -> String {
    subject.to_string()
}

fn decode_record(key: &[u8], value: &[u8]) -> Result<Fields, StoreError> {
    serde_json::from_slice(value).map_err(|err| StoreError::Corrupt {
        tree: trees::RECORDS,
        key: String::from_utf8_lossy(key).into_owned(),
        message: err.to_string(),
    })
}

fn decode_trace(key: &[u8], value: &[u8]) -> Result<TraceEntry, StoreError> {
    serde_json::from_slice(value).map_err(|err| StoreError::Corrupt {
        tree: TRACES,
        key: String::from_utf8_lossy(key).into_owned(),
        message: err.to_string(),
    })
}

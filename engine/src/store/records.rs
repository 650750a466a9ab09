//! Records, their traces, and the run requests they trigger, written together.
//!
//! Trees: `records` (`collection/key` → the fields as JSON), `queue` (see [`super::queue`]),
//! `traces` (`subject \0 slot` → a [`TraceEntry`], `subject \0 #` → the subject's next sequence
//! number; slot = sequence mod [`TRACE_LIMIT`], so each subject keeps its last entries without a
//! scan) and `trace_links` (queue id → where its trace entry is, until the executor links the run).
//!
//! The write's transaction also takes the durable timers' trees ([`super::timers`]): a run whose
//! `wait` block watches the record written is woken by it, durably with the write.
//!
//! A fifth tree, `in_flight`, holds per subject the runs and queued requests outstanding and the
//! record changes held back until they are done ([`super::in_flight`]).
//!
//! [`RecordStore::write`] applies a batch of writes in **one** sled transaction over all the trees:
//! a record, the run requests its change triggers, and the trace of that decision become durable
//! together or not at all, so a crash can neither lose a trigger nor leave one for a record that
//! was never written. What a change triggers is decided before the transaction (deciding evaluates
//! rules, and a sled transaction holds a lock that every other store access waits for), and the
//! transaction applies it only if the records (and the subjects' in-flight entries) are still as
//! they were read. Callers batch (an import writes a few hundred rows per transaction) and flush
//! once at the end; nothing here fsyncs per write. The write is synchronous and evaluates rules;
//! async callers use [`RecordStore::write_blocking`].

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::in_flight::{describe, queue_holder, Deferred, InFlight, IN_FLIGHT};
use super::queue::{decode_last_fired, Cause, QueueId, RunRequest, WorkflowName, SCHEDULES};
use super::trace::{Consideration, Decision, TraceEntry, TRACE_LIMIT};
use super::{trees, Store, StoreError};
use crate::compile::RecordEvent;
use crate::records::{self, Change, Collection, Fields, Outcome, RecordKey, Subject, Write};

use sled::transaction::{
    ConflictableTransactionError as TxError, TransactionError, TransactionalTree,
};
use sled::Transactional;

/// The trace tree.
pub(crate) const TRACES: &str = "traces";
/// Queue id → trace key, until the run is linked.
pub(crate) const TRACE_LINKS: &str = "trace_links";

/// What decides the run requests a record change starts: the trigger module's workflows
/// (`crate::trigger::Triggers` implements it), handed to the store as a callback so the store
/// never names them. The store calls it before its transaction, on the calling thread (async
/// callers go through [`RecordStore::write_blocking`]); it evaluates rules and must do no I/O, and
/// the store writes the [`Decision`]s it returns atomically with the record.
pub trait Evaluate {
    /// Whether nothing watches any record (a command that loaded no workflows).
    fn is_empty(&self) -> bool;
    /// Whether anything watches `event`s of `collection`.
    fn watches(&self, collection: Collection, event: RecordEvent) -> bool;
    /// What the change of `subject` (`old` → `new`, the `event` it is) starts: one decision per
    /// workflow watching it.
    fn consider(
        &self,
        subject: &Subject,
        event: RecordEvent,
        old: Option<&Fields>,
        new: Option<&Fields>,
        now: DateTime<Utc>,
    ) -> Vec<Decision>;
}

impl<E: Evaluate + ?Sized> Evaluate for Arc<E> {
    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
    fn watches(&self, collection: Collection, event: RecordEvent) -> bool {
        (**self).watches(collection, event)
    }
    fn consider(
        &self,
        subject: &Subject,
        event: RecordEvent,
        old: Option<&Fields>,
        new: Option<&Fields>,
        now: DateTime<Utc>,
    ) -> Vec<Decision> {
        (**self).consider(subject, event, old, new, now)
    }
}

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
    /// The durable timers: a write wakes the runs whose `wait` watches the record.
    timers: super::timers::Timers,
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
            timers: super::timers::Timers::open(store)?,
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
    /// The decisions are made before the transaction, on the records as they are read then: they
    /// evaluate rules, and a sled transaction holds a lock every other read and write of the store
    /// waits for. The transaction then checks that each record (and each subject's in-flight
    /// entry) is still as read, and applies the records and the decisions; when one changed in
    /// between, the batch is decided again.
    ///
    /// A write of a subject with a run in flight is applied but its evaluation held back until
    /// the run is done (see [`super::in_flight`]).
    pub fn write(
        &self,
        writes: &[Write],
        triggers: &dyn Evaluate,
        now: DateTime<Utc>,
    ) -> Result<Vec<Written>, StoreError> {
        self.write_as(writes, triggers, now, None)
    }

    /// [`RecordStore::write`] by a run (`by` is its holder, `run:ID`): a save onto a subject the
    /// run holds is evaluated at once, on the record without the changes held back for after it.
    pub fn write_as(
        &self,
        writes: &[Write],
        triggers: &dyn Evaluate,
        now: DateTime<Utc>,
        by: Option<&str>,
    ) -> Result<Vec<Written>, StoreError> {
        loop {
            let planned = self.plan(writes, triggers, now, by)?;
            if let Some(written) = self.commit(&planned, now)? {
                return Ok(written);
            }
        }
    }

    /// Decides `writes` on the records as stored now (a record written earlier in the batch is
    /// seen as that write left it, and a subject an earlier write queued a run for as in flight).
    fn plan<'w>(
        &self,
        writes: &'w [Write],
        triggers: &dyn Evaluate,
        now: DateTime<Utc>,
        by: Option<&str>,
    ) -> Result<Plan<'w>, StoreError> {
        let mut batch: HashMap<String, Option<Fields>> = HashMap::new();
        // Per subject: its in-flight entry as read (checked again at commit), and whether an
        // earlier write of the batch queued a run for it.
        let mut flights: HashMap<String, (Option<sled::IVec>, Option<InFlight>, bool)> =
            HashMap::new();
        let mut planned = Vec::with_capacity(writes.len());
        for write in writes {
            let key = record_key(&write.subject);
            let (old, seen) = match batch.get(&key) {
                Some(fields) => (fields.clone(), None),
                None => {
                    let raw = self.records.get(&key)?;
                    let old = match &raw {
                        Some(value) => Some(decode_record(key.as_bytes(), value)?),
                        None => None,
                    };
                    (old, Some(raw))
                }
            };
            let (new, outcome) = records::apply(old.as_ref(), &write.change);
            let action = match outcome.event() {
                None => Action::None,
                Some(event) => {
                    if !flights.contains_key(&key) {
                        let raw = self.in_flight.get(&key)?;
                        let flight = match &raw {
                            Some(value) => Some(decode_in_flight(key.as_bytes(), value)?),
                            None => None,
                        };
                        flights.insert(key.clone(), (raw, flight, false));
                    }
                    let (_, flight, queued) = &flights[&key];
                    let action = decide(
                        write,
                        event,
                        old.as_ref(),
                        new.as_ref(),
                        flight.as_ref(),
                        *queued,
                        triggers,
                        now,
                        by,
                    );
                    if action.queues() {
                        if let Some(entry) = flights.get_mut(&key) {
                            entry.2 = true;
                        }
                    }
                    action
                }
            };
            let value = match outcome {
                Outcome::Created | Outcome::Updated => {
                    Some(serde_json::to_vec(&new).expect("fields serialize"))
                }
                _ => None,
            };
            batch.insert(key.clone(), new);
            planned.push(Planned {
                subject: &write.subject,
                key,
                seen,
                value,
                outcome,
                action,
            });
        }
        let flights = flights
            .into_iter()
            .map(|(key, (raw, _, _))| (key, raw))
            .collect();
        Ok(Plan {
            writes: planned,
            flights,
        })
    }

    /// Applies `planned` in one transaction, or returns `None` (writing nothing) when a record or
    /// an in-flight entry is no longer as it was read.
    fn commit(
        &self,
        planned: &Plan<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Written>>, StoreError> {
        self.in_transaction(|tx| {
            for p in &planned.writes {
                if let Some(seen) = &p.seen {
                    if tx.records.get(p.key.as_bytes())? != *seen {
                        return Ok(None);
                    }
                }
            }
            for (key, seen) in &planned.flights {
                if tx.in_flight.get(key.as_bytes())? != *seen {
                    return Ok(None);
                }
            }
            let mut out = Vec::with_capacity(planned.writes.len());
            for p in &planned.writes {
                match (p.outcome, &p.value) {
                    (Outcome::Created | Outcome::Updated, Some(value)) => {
                        tx.records.insert(p.key.as_bytes(), value.as_slice())?;
                    }
                    (Outcome::Deleted, _) => {
                        tx.records.remove(p.key.as_bytes())?;
                    }
                    _ => {}
                }
                let queued = match p.outcome.event() {
                    Some(event) => {
                        // A run waiting on this record judges its `wake_when` again, at once.
                        super::timers::wake_watchers(tx.waits, &p.key)?;
                        tx.apply(p.subject, &p.key, event, &p.action, now)?
                    }
                    None => Vec::new(),
                };
                out.push(Written {
                    outcome: p.outcome,
                    queued,
                });
            }
            Ok(Some(out))
        })
    }

    /// [`Self::write`] on a blocking thread, for async callers: deciding what a write triggers
    /// evaluates every watching workflow's conditions, CPU work (up to each rule's time limit)
    /// that must not hold an async worker, or `/healthz` and every other request wait behind it.
    pub async fn write_blocking<E: Evaluate + Send + Sync + 'static>(
        &self,
        writes: Vec<Write>,
        triggers: Arc<E>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Written>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(&writes, &*triggers, now))
            .await
            .map_err(|err| StoreError::Io {
                message: format!("the record write task failed: {err}"),
            })?
    }

    /// Enqueues one schedule tick's run requests and records `tick` as `workflow`'s last, in one
    /// transaction (so a tick is enqueued exactly once, even across a crash). A tick not after
    /// `workflow`'s last (fired already, by another caller, or before it) enqueues nothing: the
    /// result is empty and the last tick stays.
    pub fn enqueue_tick(
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
        let _writing = self.store.gate().writing();
        let result = trees.transaction(|(queue, traces, links, schedules, in_flight)| {
            let mut ids = Vec::new();
            if let Some(value) = schedules.get(workflow.as_str())? {
                let fired = decode_last_fired(workflow, &value).map_err(TxError::Abort)?;
                if fired >= tick {
                    return Ok(ids);
                }
            }
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

    /// Makes `holder` (`run:ID`, see [`super::in_flight`]) hold `subject`: changes to it are
    /// evaluated after the holder is released.
    pub fn hold(&self, subject: &Subject, holder: &str) -> Result<(), StoreError> {
        let key = record_key(subject);
        let _writing = self.store.gate().writing();
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
        triggers: &dyn Evaluate,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>, StoreError> {
        self.settle(
            subject,
            |flight| flight.holders.remove(holder),
            Some(holder),
            triggers,
            now,
        )
    }

    /// Every holder of an in-flight subject.
    pub fn holders(&self) -> Result<Vec<String>, StoreError> {
        let mut holders = std::collections::BTreeSet::new();
        for item in self.in_flight.iter() {
            let (key, value) = item?;
            holders.extend(decode_in_flight(&key, &value)?.holders);
        }
        Ok(holders.into_iter().collect())
    }

    /// Drops the holders `alive` says are gone (a queue entry acknowledged, a run finished or
    /// unknown: what a stopped process left) and evaluates the changes held back for subjects
    /// nothing holds any more. Returns the run requests queued.
    pub fn reconcile(
        &self,
        alive: impl Fn(&str) -> bool,
        triggers: &dyn Evaluate,
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
            queued.extend(self.settle(
                &subject,
                |flight| {
                    let before = flight.holders.len();
                    flight.holders.retain(|h| alive(h));
                    flight.holders.len() < before || flight.holders.is_empty()
                },
                None,
                triggers,
                now,
            )?);
        }
        Ok(queued)
    }

    /// Changes `subject`'s in-flight entry with `change` (which says whether it changed
    /// anything); when nothing holds the subject any more, evaluates the held-back change as one
    /// (the record as it is now against the same record with the changed fields put back as they
    /// were) and queues what it starts. Decided outside the transaction, like a write.
    fn settle(
        &self,
        subject: &Subject,
        change: impl Fn(&mut InFlight) -> bool,
        released: Option<&str>,
        triggers: &dyn Evaluate,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>, StoreError> {
        let key = record_key(subject);
        loop {
            let seen = self.in_flight.get(&key)?;
            let Some(value) = &seen else {
                return Ok(Vec::new());
            };
            let mut flight = decode_in_flight(key.as_bytes(), value)?;
            if !change(&mut flight) {
                return Ok(Vec::new());
            }
            let deferred = if flight.holders.is_empty() && !triggers.is_empty() {
                flight.deferred.take()
            } else {
                None
            };
            // The evaluation, on the record as read (checked again at commit).
            let mut record_seen = None;
            let mut evaluation = None;
            if let Some(deferred) = deferred {
                let raw = self.records.get(&key)?;
                let current = match &raw {
                    Some(value) => Some(decode_record(key.as_bytes(), value)?),
                    None => None,
                };
                let before = deferred
                    .existed
                    .then(|| deferred.revert(current.as_ref().unwrap_or(&Fields::new())));
                let event = match (before.is_some(), current.is_some()) {
                    (false, true) => Some(RecordEvent::Created),
                    (true, true) => Some(RecordEvent::Updated),
                    (true, false) => Some(RecordEvent::Deleted),
                    (false, false) => None,
                };
                if let Some(event) = event {
                    let decisions =
                        triggers.consider(subject, event, before.as_ref(), current.as_ref(), now);
                    evaluation = Some((event, decisions));
                }
                record_seen = Some(raw);
            }
            let note = match released {
                Some(holder) => format!("evaluated after {} finished", describe(holder)),
                None => "evaluated once nothing was in flight for this subject any more".to_owned(),
            };
            let committed = self.in_transaction(|tx| {
                if tx.in_flight.get(key.as_bytes())? != seen {
                    return Ok(None);
                }
                if let Some(raw) = &record_seen {
                    if tx.records.get(key.as_bytes())? != *raw {
                        return Ok(None);
                    }
                }
                if flight.is_empty() {
                    tx.in_flight.remove(key.as_bytes())?;
                } else {
                    put_in_flight(tx.in_flight, &key, &flight)?;
                }
                match &evaluation {
                    Some((event, decisions)) => tx
                        .decide(
                            subject,
                            Cause::Record(*event),
                            now,
                            decisions.clone(),
                            Some(note.clone()),
                        )
                        .map(Some),
                    None => Ok(Some(Vec::new())),
                }
            })?;
            if let Some(queued) = committed {
                return Ok(queued);
            }
        }
    }

    /// What holds `subject` and what is held back for after it.
    pub fn in_flight(&self, subject: &Subject) -> Result<Option<InFlight>, StoreError> {
        let key = record_key(subject);
        match self.in_flight.get(&key)? {
            None => Ok(None),
            Some(value) => decode_in_flight(key.as_bytes(), &value).map(Some),
        }
    }

    /// Runs `f` in one transaction over the trees a record write changes.
    fn in_transaction<T>(
        &self,
        f: impl Fn(&Tx<'_>) -> Result<T, TxError<StoreError>>,
    ) -> Result<T, StoreError> {
        let (watches, by_time, by_run) = self.timers.trees();
        let trees = (
            &self.records,
            &self.queue,
            &self.traces,
            &self.links,
            &self.in_flight,
            watches,
            by_time,
            by_run,
        );
        let _writing = self.store.gate().writing();
        let result = trees.transaction(
            |(records, queue, traces, links, in_flight, watches, by_time, by_run)| {
                f(&Tx {
                    records,
                    queue,
                    traces,
                    links,
                    in_flight,
                    waits: (watches, by_time, by_run),
                })
            },
        );
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

    /// Notes on the trace entry that started `run` (of `subject`) why the run is held (the
    /// mass-change guard, [`crate::exec::guard`]): `triggers why` shows it beside the run. The
    /// entry is the one linked to `run`, or, when the guard holds the run before the worker has
    /// linked it, the one that queued it (`queued`). Written in a transaction, so a concurrent
    /// write of the entry (the link) does not drop the note. `false` when no kept entry names the
    /// run (a manual run, or an entry overwritten since).
    pub fn note_held(
        &self,
        subject: &Subject,
        run: &str,
        queued: Option<QueueId>,
        why: &str,
    ) -> Result<bool, StoreError> {
        let _writing = self.store.gate().writing();
        let mut prefix = subject.to_string().into_bytes();
        prefix.push(0);
        let names = |c: &crate::store::trace::Consideration| {
            c.run.as_deref() == Some(run) || (queued.is_some() && c.queued == queued)
        };
        for item in self.traces.scan_prefix(&prefix) {
            let (key, value) = item?;
            if key.ends_with(b"\0#") {
                continue;
            }
            if !decode_trace(&key, &value)?.considered.iter().any(names) {
                continue;
            }
            let result = self.traces.transaction(|traces| {
                let Some(value) = traces.get(&key)? else {
                    return Ok(false);
                };
                let mut entry = decode_trace(&key, &value).map_err(TxError::Abort)?;
                let Some(c) = entry.considered.iter_mut().find(|c| names(c)) else {
                    return Ok(false);
                };
                c.held = Some(why.to_owned());
                traces.insert(&key, serde_json::to_vec(&entry).expect("traces serialize"))?;
                Ok(true)
            });
            return unwrap_tx(result);
        }
        Ok(false)
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
        let _writing = self.store.gate().writing();
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

impl RecordStore {
    /// Notes on the trace entry of queue entry `queued` why its run has not started (a paused
    /// workflow, [`crate::service::pause`]); a note already there is kept. Returns whether an
    /// entry was noted (an entry with no trace, such as a tick of a schedule without `records`,
    /// has none to note).
    pub fn note_paused(&self, queued: QueueId, held: &str) -> Result<bool, StoreError> {
        let _writing = self.store.gate().writing();
        let Some(trace_key) = self.links.get(queued.to_bytes())? else {
            return Ok(false);
        };
        let result = self.traces.transaction(|traces| {
            let Some(value) = traces.get(&trace_key)? else {
                return Ok(false);
            };
            let mut entry = decode_trace(&trace_key, &value).map_err(TxError::Abort)?;
            let Some(c) = entry
                .considered
                .iter_mut()
                .find(|c| c.queued == Some(queued) && c.paused.is_none())
            else {
                return Ok(false);
            };
            c.paused = Some(held.to_owned());
            traces.insert(
                &trace_key,
                serde_json::to_vec(&entry).expect("traces serialize"),
            )?;
            Ok(true)
        });
        unwrap_tx(result)
    }
}

/// A batch of writes, decided before its transaction.
struct Plan<'w> {
    writes: Vec<Planned<'w>>,
    /// The in-flight entry of each subject the batch evaluated, as read (checked at commit).
    flights: Vec<(String, Option<sled::IVec>)>,
}

/// One write of a batch, decided before its transaction.
struct Planned<'w> {
    subject: &'w Subject,
    key: String,
    /// The stored value the decision was made on, checked again at commit (`None` for a record
    /// an earlier write of the batch decided on).
    seen: Option<Option<sled::IVec>>,
    /// The record to store, serialized (created or updated).
    value: Option<Vec<u8>>,
    outcome: Outcome,
    action: Action,
}

/// What a write's change does to the triggers (the PostgreSQL backend decides with it too).
pub(super) enum Action {
    /// No event (unchanged, skipped, not found).
    None,
    /// Evaluated now: these decisions.
    Decide(Vec<Decision>),
    /// Held back while the subject is in flight: the change from `old` to `new`.
    Hold {
        old: Option<Fields>,
        new: Option<Fields>,
    },
    /// A save by a run holding the subject, evaluated without the held-back change: the
    /// decisions, and the fields it wrote (no longer held back).
    Own {
        decisions: Vec<Decision>,
        written: Vec<String>,
    },
}

impl Action {
    /// Whether it queues a run request.
    pub(super) fn queues(&self) -> bool {
        match self {
            Action::Decide(decisions) | Action::Own { decisions, .. } => {
                decisions.iter().any(|d| d.request.is_some())
            }
            Action::None | Action::Hold { .. } => false,
        }
    }
}

/// Decides one write's change (`old` → `new`, `event`) given its subject's in-flight entry
/// (`queued`: an earlier write of the batch queued a run for it): evaluated now, held back while
/// a run is in flight, or, for a save by the run holding it, evaluated without the held-back
/// change (see [`super::in_flight`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn decide(
    write: &Write,
    event: RecordEvent,
    old: Option<&Fields>,
    new: Option<&Fields>,
    flight: Option<&InFlight>,
    queued: bool,
    triggers: &dyn Evaluate,
    now: DateTime<Utc>,
    by: Option<&str>,
) -> Action {
    let subject = &write.subject;
    let held = queued || flight.is_some_and(|f| !f.holders.is_empty());
    // Held back only where a workflow watches the collection: elsewhere there is nothing to
    // evaluate, now or later.
    let watched = || {
        [
            RecordEvent::Created,
            RecordEvent::Updated,
            RecordEvent::Deleted,
        ]
        .into_iter()
        .any(|e| triggers.watches(subject.collection, e))
    };
    if !held || !watched() {
        return Action::Decide(triggers.consider(subject, event, old, new, now));
    }
    let own = by.is_some_and(|holder| flight.is_some_and(|f| f.holders.contains(holder)));
    if !own {
        return Action::Hold {
            old: old.cloned(),
            new: new.cloned(),
        };
    }
    let written: Vec<String> = match &write.change {
        Change::Upsert { fields, .. } => fields.keys().cloned().collect(),
        Change::Delete => Vec::new(),
    };
    // A save by a run holding the subject comes before the changes held back for after the run:
    // it is judged on the record without them.
    let decisions = match (flight.and_then(|f| f.deferred.as_ref()), old, new) {
        (Some(deferred), Some(old), Some(new)) => {
            let before = deferred.revert(old);
            let mut rest = deferred.clone();
            rest.forget(&written);
            let after = rest.revert(new);
            triggers.consider(subject, event, Some(&before), Some(&after), now)
        }
        _ => triggers.consider(subject, event, old, new, now),
    };
    Action::Own { decisions, written }
}

/// The trees a record write changes, inside its transaction.
struct Tx<'a> {
    records: &'a TransactionalTree,
    queue: &'a TransactionalTree,
    traces: &'a TransactionalTree,
    links: &'a TransactionalTree,
    in_flight: &'a TransactionalTree,
    /// The timer trees ([`super::timers::wake_watchers`]).
    waits: (
        &'a TransactionalTree,
        &'a TransactionalTree,
        &'a TransactionalTree,
    ),
}

impl Tx<'_> {
    /// Applies a planned write's [`Action`]: queues its decisions, or holds its change back (the
    /// trace says so), and keeps the subject's in-flight entry in step.
    fn apply(
        &self,
        subject: &Subject,
        key: &str,
        event: RecordEvent,
        action: &Action,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>, TxError<StoreError>> {
        let cause = Cause::Record(event);
        match action {
            Action::None => Ok(Vec::new()),
            Action::Decide(decisions) => self.decide(subject, cause, now, decisions.clone(), None),
            Action::Hold { old, new } => {
                let mut flight = get_in_flight(self.in_flight, key)?.unwrap_or_default();
                let deferred = flight
                    .deferred
                    .get_or_insert_with(|| Deferred::new(old.as_ref(), now));
                deferred.add(old.as_ref(), new.as_ref());
                let note = format!(
                    "deferred: {} is in flight for this subject; the change is evaluated when it finishes",
                    describe(flight.named_holder().unwrap_or("a run"))
                );
                put_in_flight(self.in_flight, key, &flight)?;
                self.decide(subject, cause, now, Vec::new(), Some(note))
            }
            Action::Own { decisions, written } => {
                if let Some(mut flight) = get_in_flight(self.in_flight, key)? {
                    if let Some(deferred) = &mut flight.deferred {
                        deferred.forget(written);
                        put_in_flight(self.in_flight, key, &flight)?;
                    }
                }
                self.decide(subject, cause, now, decisions.clone(), None)
            }
        }
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

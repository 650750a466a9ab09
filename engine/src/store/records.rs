//! Records, their traces, and the run requests they trigger, written together.
//!
//! Trees: `records` (`collection/key` → the fields as JSON), `queue` (see [`super::queue`]),
//! `traces` (`subject \0 slot` → a [`TraceEntry`], `subject \0 #` → the subject's next sequence
//! number; slot = sequence mod [`TRACE_LIMIT`], so each subject keeps its last entries without a
//! scan) and `trace_links` (queue id → where its trace entry is, until the executor links the run).
//!
//! [`RecordStore::write`] applies a batch of writes in **one** sled transaction over all four trees:
//! a record, the run requests its change triggers, and the trace of that decision become durable
//! together or not at all, so a crash can neither lose a trigger nor leave one for a record that
//! was never written. What a change triggers is decided before the transaction (deciding evaluates
//! rules, and a sled transaction holds a lock that every other store access waits for), and the
//! transaction applies it only if the records are still as they were read. Callers batch (an import writes a few hundred rows per transaction) and flush
//! once at the end; nothing here fsyncs per write. The write is synchronous and evaluates rules;
//! async callers use [`RecordStore::write_blocking`].

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::queue::{QueueId, RunRequest, SCHEDULES};
use super::{trees, Store, StoreError};
use crate::records::{self, Collection, Fields, Outcome, RecordKey, Subject, Write};
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
    /// waits for. The transaction then checks that each record is still as read, and applies the
    /// records and the decisions; when one changed in between, the batch is decided again.
    pub fn write(
        &self,
        writes: &[Write],
        triggers: &Triggers,
        now: DateTime<Utc>,
    ) -> Result<Vec<Written>, StoreError> {
        loop {
            let planned = self.plan(writes, triggers, now)?;
            if let Some(written) = self.commit(&planned, now)? {
                return Ok(written);
            }
        }
    }

    /// Decides `writes` on the records as stored now (a record written earlier in the batch is
    /// seen as that write left it).
    fn plan<'w>(
        &self,
        writes: &'w [Write],
        triggers: &Triggers,
        now: DateTime<Utc>,
    ) -> Result<Vec<Planned<'w>>, StoreError> {
        let mut batch: HashMap<String, Option<Fields>> = HashMap::new();
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
            let decisions = match outcome.event() {
                Some(event) => {
                    triggers.consider(&write.subject, event, old.as_ref(), new.as_ref(), now)
                }
                None => Vec::new(),
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
                decisions,
            });
        }
        Ok(planned)
    }

    /// Applies `planned` in one transaction, or returns `None` (writing nothing) when a record is
    /// no longer as it was read.
    fn commit(
        &self,
        planned: &[Planned<'_>],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Written>>, StoreError> {
        let result = (&self.records, &self.queue, &self.traces, &self.links).transaction(
            |(records, queue, traces, links)| {
                for p in planned {
                    if let Some(seen) = &p.seen {
                        if records.get(p.key.as_bytes())? != *seen {
                            return Ok(None);
                        }
                    }
                }
                let mut out = Vec::with_capacity(planned.len());
                for p in planned {
                    match (p.outcome, &p.value) {
                        (Outcome::Created | Outcome::Updated, Some(value)) => {
                            records.insert(p.key.as_bytes(), value.as_slice())?;
                        }
                        (Outcome::Deleted, _) => {
                            records.remove(p.key.as_bytes())?;
                        }
                        _ => {}
                    }
                    let queued = match p.outcome.event() {
                        Some(event) => record_decisions(
                            queue,
                            traces,
                            links,
                            p.subject,
                            Cause::Record(event),
                            now,
                            p.decisions.clone(),
                        )?,
                        None => Vec::new(),
                    };
                    out.push(Written {
                        outcome: p.outcome,
                        queued,
                    });
                }
                Ok(Some(out))
            },
        );
        unwrap_tx(result)
    }

    /// [`Self::write`] on a blocking thread, for async callers: deciding what a write triggers
    /// evaluates every watching workflow's conditions, CPU work (up to each rule's time limit)
    /// that must not hold an async worker, or `/healthz` and every other request wait behind it.
    pub async fn write_blocking(
        &self,
        writes: Vec<Write>,
        triggers: Arc<Triggers>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Written>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(&writes, &triggers, now))
            .await
            .map_err(|err| StoreError::Io {
                message: format!("the record write task failed: {err}"),
            })?
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
        let result = (&self.queue, &self.traces, &self.links, &self.schedules).transaction(
            |(queue, traces, links, schedules)| {
                let mut ids = Vec::new();
                for (subject, decision) in &decisions {
                    match subject {
                        Some(subject) => ids.extend(record_decisions(
                            queue,
                            traces,
                            links,
                            subject,
                            Cause::Schedule,
                            tick,
                            vec![decision.clone()],
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
    decisions: Vec<Decision>,
}

/// Writes each decision's run request, then one trace entry with them all.
fn record_decisions(
    queue: &TransactionalTree,
    traces: &TransactionalTree,
    links: &TransactionalTree,
    subject: &Subject,
    cause: Cause,
    at: DateTime<Utc>,
    decisions: Vec<Decision>,
) -> Result<Vec<QueueId>, TxError<StoreError>> {
    if decisions.is_empty() {
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

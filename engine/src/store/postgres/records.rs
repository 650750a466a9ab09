//! Records, their triggered run requests and traces, in-flight subjects and schedule ticks on
//! PostgreSQL: `records`, `in_flight`, `queue`, `traces` (a subject's last
//! [`TRACE_LIMIT`] entries, numbered by `trace_counters`), `trace_links` and `schedules`.
//!
//! A record write is decided as on sled ([`crate::store::records`]): the records and in-flight
//! entries it touches are read, the [`Evaluate`] callback decides on a blocking thread (it
//! evaluates rules; it does no I/O), and then one transaction locks the subjects
//! (`pg_advisory_xact_lock`, in key order), checks that what was read is unchanged, and writes
//! the records, the run requests, the in-flight entries and the traces, and makes due the timers
//! of the runs whose `wait` watches a written record (`timer_watches`); when something changed
//! in between, the batch is decided again. Deciding uses the sled side's own rules
//! (`records::decide`), so both backends hold back and release changes alike.
//!
//! A schedule tick updates its workflow's `schedules` row first, and only when the tick is after
//! the last one: a second worker firing the same tick waits on that row, then finds it fired
//! and enqueues nothing, so each tick fires once across workers.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::Json;

use super::queue::enqueue;
use super::{instant, nanos, Postgres, LOCK_KEY};
use crate::compile::RecordEvent;
use crate::records::{self, Collection, Fields, Outcome, RecordKey, Subject, Write};
use crate::store::api::{
    Evaluate, ReadRecords, Result, ScheduleState, TriggerTraces, WriteRecords,
};
use crate::store::in_flight::{describe, queue_holder, Deferred, InFlight};
use crate::store::queue::{Cause, QueueId, WorkflowName};
use crate::store::records::{decide, Action, Written};
use crate::store::trace::{Consideration, Decision, TraceEntry, TRACE_LIMIT};
use crate::store::StoreError;

/// The records side of one PostgreSQL store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgRecords {
    pg: Postgres,
}

/// A subject's row key.
type Key = (String, String);

fn key_of(subject: &Subject) -> Key {
    (
        subject.collection.name().to_owned(),
        subject.key.as_str().to_owned(),
    )
}

/// A subject's record and in-flight entry as read (their stored JSON text).
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    record: Option<String>,
    flight: Option<String>,
}

/// One write, decided before its transaction.
struct Planned {
    subject: Subject,
    /// The record to store (created or updated), as JSON.
    value: Option<String>,
    outcome: Outcome,
    action: Action,
}

type Tx<'a> = Transaction<'a>;
type PgResult<T> = std::result::Result<T, StoreError>;

impl PgRecords {
    pub fn new(pg: &Postgres) -> PgRecords {
        PgRecords { pg: pg.clone() }
    }

    /// How many records `collection` holds.
    pub async fn count(&self, collection: Collection) -> PgResult<u64> {
        let client = self.pg.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM records WHERE collection = $1",
                &[&collection.name()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    fn decode_record(&self, key: &Key, text: &str) -> PgResult<Fields> {
        serde_json::from_str(text).map_err(|e| {
            self.pg
                .corrupt("records", format!("{}/{}", key.0, key.1), e)
        })
    }

    fn decode_flight(&self, key: &Key, text: &str) -> PgResult<InFlight> {
        serde_json::from_str(text).map_err(|e| {
            self.pg
                .corrupt("in_flight", format!("{}/{}", key.0, key.1), e)
        })
    }

    fn decode_trace(&self, key: &Key, text: &str) -> PgResult<TraceEntry> {
        serde_json::from_str(text)
            .map_err(|e| self.pg.corrupt("traces", format!("{}/{}", key.0, key.1), e))
    }

    /// The records and in-flight entries of `keys`, as stored now (in `tx`'s snapshot).
    async fn read(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        keys: &[Key],
    ) -> PgResult<HashMap<Key, Seen>> {
        let (collections, names): (Vec<&str>, Vec<&str>) =
            keys.iter().map(|(c, k)| (c.as_str(), k.as_str())).unzip();
        let rows = client
            .query(
                "SELECT s.c, s.k, r.fields::text, f.entry::text
                 FROM unnest($1::text[], $2::text[]) AS s(c, k)
                 LEFT JOIN records r ON r.collection = s.c AND r.key = s.k
                 LEFT JOIN in_flight f ON f.collection = s.c AND f.key = s.k",
                &[&collections, &names],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    (row.get(0), row.get(1)),
                    Seen {
                        record: row.get(2),
                        flight: row.get(3),
                    },
                )
            })
            .collect())
    }

    /// Decides `writes` on what was read (a record written earlier in the batch is seen as that
    /// write left it, a subject an earlier write queued a run for as in flight): sled's
    /// `RecordStore::plan` over rows.
    fn plan(
        &self,
        writes: &[Write],
        seen: &HashMap<Key, Seen>,
        triggers: &dyn Evaluate,
        now: DateTime<Utc>,
        by: Option<&str>,
    ) -> PgResult<Vec<Planned>> {
        let mut batch: HashMap<Key, Option<Fields>> = HashMap::new();
        let mut flights: HashMap<Key, (Option<InFlight>, bool)> = HashMap::new();
        let mut planned = Vec::with_capacity(writes.len());
        for write in writes {
            let key = key_of(&write.subject);
            let stored = seen.get(&key).cloned().unwrap_or_default();
            let old = match batch.get(&key) {
                Some(fields) => fields.clone(),
                None => stored
                    .record
                    .as_deref()
                    .map(|text| self.decode_record(&key, text))
                    .transpose()?,
            };
            let (new, outcome) = records::apply(old.as_ref(), &write.change);
            let action = match outcome.event() {
                None => Action::None,
                Some(event) => {
                    if !flights.contains_key(&key) {
                        let flight = stored
                            .flight
                            .as_deref()
                            .map(|text| self.decode_flight(&key, text))
                            .transpose()?;
                        flights.insert(key.clone(), (flight, false));
                    }
                    let (flight, queued) = &flights[&key];
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
                            entry.1 = true;
                        }
                    }
                    action
                }
            };
            let value = match outcome {
                Outcome::Created | Outcome::Updated => {
                    Some(serde_json::to_string(&new).expect("fields serialize"))
                }
                _ => None,
            };
            batch.insert(key, new);
            planned.push(Planned {
                subject: write.subject.clone(),
                value,
                outcome,
                action,
            });
        }
        Ok(planned)
    }

    /// Locks `keys` (sorted, distinct) for the rest of `tx`.
    async fn lock(&self, tx: &Tx<'_>, keys: &[Key]) -> PgResult<()> {
        let stmt = tx
            .prepare_cached(LOCK_KEY)
            .await
            .map_err(|e| self.pg.error(e))?;
        for (c, k) in keys {
            tx.execute(&stmt, &[&format!("subject {c}/{k}")])
                .await
                .map_err(|e| self.pg.error(e))?;
        }
        Ok(())
    }

    /// A subject's in-flight entry, in `tx`.
    async fn get_in_flight(&self, tx: &Tx<'_>, key: &Key) -> PgResult<Option<InFlight>> {
        let row = tx
            .query_opt(
                "SELECT entry::text FROM in_flight WHERE collection = $1 AND key = $2",
                &[&key.0, &key.1],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        row.map(|row| self.decode_flight(key, row.get(0)))
            .transpose()
    }

    async fn put_in_flight(&self, tx: &Tx<'_>, key: &Key, flight: &InFlight) -> PgResult<()> {
        tx.execute(
            "INSERT INTO in_flight (collection, key, entry) VALUES ($1, $2, $3)
             ON CONFLICT (collection, key) DO UPDATE SET entry = $3",
            &[&key.0, &key.1, &Json(flight)],
        )
        .await
        .map_err(|e| self.pg.error(e))?;
        Ok(())
    }

    /// Applies a planned write's [`Action`] in `tx`: queues its decisions, or holds its change
    /// back (the trace says so), keeping the subject's in-flight entry in step.
    async fn apply(
        &self,
        tx: &Tx<'_>,
        subject: &Subject,
        event: RecordEvent,
        action: &Action,
        now: DateTime<Utc>,
    ) -> PgResult<Vec<QueueId>> {
        let key = key_of(subject);
        let cause = Cause::Record(event);
        match action {
            Action::None => Ok(Vec::new()),
            Action::Decide(decisions) => {
                self.record_decisions(tx, subject, cause, now, decisions.clone(), None)
                    .await
            }
            Action::Hold { old, new } => {
                let mut flight = self.get_in_flight(tx, &key).await?.unwrap_or_default();
                let deferred = flight
                    .deferred
                    .get_or_insert_with(|| Deferred::new(old.as_ref(), now));
                deferred.add(old.as_ref(), new.as_ref());
                let note = format!(
                    "deferred: {} is in flight for this subject; the change is evaluated when it finishes",
                    describe(flight.named_holder().unwrap_or("a run"))
                );
                self.put_in_flight(tx, &key, &flight).await?;
                self.record_decisions(tx, subject, cause, now, Vec::new(), Some(note))
                    .await
            }
            Action::Own { decisions, written } => {
                if let Some(mut flight) = self.get_in_flight(tx, &key).await? {
                    if let Some(deferred) = &mut flight.deferred {
                        deferred.forget(written);
                        self.put_in_flight(tx, &key, &flight).await?;
                    }
                }
                self.record_decisions(tx, subject, cause, now, decisions.clone(), None)
                    .await
            }
        }
    }

    /// Writes each decision's run request (the subject's queued requests hold it), then one
    /// trace entry with them all and `note`, keeping the subject's last [`TRACE_LIMIT`].
    async fn record_decisions(
        &self,
        tx: &Tx<'_>,
        subject: &Subject,
        cause: Cause,
        at: DateTime<Utc>,
        decisions: Vec<Decision>,
        note: Option<String>,
    ) -> PgResult<Vec<QueueId>> {
        if decisions.is_empty() && note.is_none() {
            return Ok(Vec::new());
        }
        let pg = &self.pg;
        let key = key_of(subject);
        let mut queued = Vec::new();
        let mut considered: Vec<Consideration> = Vec::with_capacity(decisions.len());
        for Decision {
            mut consideration,
            request,
        } in decisions
        {
            if let Some(request) = request {
                let id = enqueue(tx, &request).await.map_err(|e| pg.error(e))?;
                consideration.queued = Some(id);
                queued.push(id);
            }
            considered.push(consideration);
        }
        if !queued.is_empty() {
            let mut flight = self.get_in_flight(tx, &key).await?.unwrap_or_default();
            flight.holders.extend(queued.iter().map(queue_holder));
            self.put_in_flight(tx, &key, &flight).await?;
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO trace_counters (collection, key, next_seq) VALUES ($1, $2, 1)
                 ON CONFLICT (collection, key)
                     DO UPDATE SET next_seq = trace_counters.next_seq + 1
                 RETURNING next_seq - 1",
            )
            .await
            .map_err(|e| pg.error(e))?;
        let seq: i64 = tx
            .query_one(&stmt, &[&key.0, &key.1])
            .await
            .map_err(|e| pg.error(e))?
            .get(0);
        let entry = TraceEntry {
            seq: seq as u64,
            at,
            subject: subject.clone(),
            cause,
            considered,
            note,
        };
        let stmt = tx
            .prepare_cached(
                "INSERT INTO traces (collection, key, seq, entry) VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(|e| pg.error(e))?;
        tx.execute(&stmt, &[&key.0, &key.1, &seq, &Json(&entry)])
            .await
            .map_err(|e| pg.error(e))?;
        let oldest = seq - TRACE_LIMIT as i64;
        if oldest >= 0 {
            for table in ["traces", "trace_links"] {
                tx.execute(
                    &format!(
                        "DELETE FROM {table} WHERE collection = $1 AND key = $2 AND seq <= $3"
                    ),
                    &[&key.0, &key.1, &oldest],
                )
                .await
                .map_err(|e| pg.error(e))?;
            }
        }
        for id in &queued {
            tx.execute(
                "INSERT INTO trace_links (queue_id, collection, key, seq) VALUES ($1, $2, $3, $4)",
                &[&id.to_string(), &key.0, &key.1, &seq],
            )
            .await
            .map_err(|e| pg.error(e))?;
        }
        Ok(queued)
    }

    /// In a record write's `tx`: moves the timer of every run watching `subject`'s record
    /// (`timer_watches`) to the epoch, so it falls due at once, durable with the write (sled's
    /// `timers::wake_watchers`: a watcher without a timer gets one).
    async fn wake_watchers(&self, tx: &Tx<'_>, subject: &Subject) -> PgResult<()> {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO timers (run_id, at_ns)
                 SELECT run_id, 0 FROM timer_watches WHERE record = $1
                 ON CONFLICT (run_id) DO UPDATE
                     SET at_ns = 0, lease_owner = NULL, lease_until_ns = NULL",
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        tx.execute(&stmt, &[&subject.to_string()])
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }

    /// Applies `writes` as [`WriteRecords::write`] says.
    async fn write_batch(
        &self,
        writes: Arc<Vec<Write>>,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
        by: Option<Arc<str>>,
    ) -> PgResult<Vec<Written>> {
        let pg = &self.pg;
        let keys: Vec<Key> = writes
            .iter()
            .map(|w| key_of(&w.subject))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut client = pg.client().await?;
        loop {
            let seen = Arc::new(self.read(&client, &keys).await?);
            let planned = {
                let (this, writes, seen, evaluate, by) = (
                    self.clone(),
                    writes.clone(),
                    seen.clone(),
                    evaluate.clone(),
                    by.clone(),
                );
                blocking(move || this.plan(&writes, &seen, &*evaluate, now, by.as_deref())).await?
            };
            let tx = client.transaction().await.map_err(|e| pg.error(e))?;
            self.lock(&tx, &keys).await?;
            if self.read(&tx, &keys).await? != *seen {
                // Changed since it was decided on: decide again.
                tx.rollback().await.map_err(|e| pg.error(e))?;
                continue;
            }
            let mut out = Vec::with_capacity(planned.len());
            for p in &planned {
                let (c, k) = key_of(&p.subject);
                match (p.outcome, &p.value) {
                    (Outcome::Created | Outcome::Updated, Some(value)) => {
                        let stmt = tx
                            .prepare_cached(
                                "INSERT INTO records (collection, key, fields)
                                 VALUES ($1, $2, $3::text::json)
                                 ON CONFLICT (collection, key)
                                     DO UPDATE SET fields = excluded.fields",
                            )
                            .await
                            .map_err(|e| pg.error(e))?;
                        tx.execute(&stmt, &[&c, &k, value])
                            .await
                            .map_err(|e| pg.error(e))?;
                    }
                    (Outcome::Deleted, _) => {
                        tx.execute(
                            "DELETE FROM records WHERE collection = $1 AND key = $2",
                            &[&c, &k],
                        )
                        .await
                        .map_err(|e| pg.error(e))?;
                    }
                    _ => {}
                }
                let queued = match p.outcome.event() {
                    Some(event) => {
                        // A run waiting on this record judges its `wake_when` again, at once.
                        self.wake_watchers(&tx, &p.subject).await?;
                        self.apply(&tx, &p.subject, event, &p.action, now).await?
                    }
                    None => Vec::new(),
                };
                out.push(Written {
                    outcome: p.outcome,
                    queued,
                });
            }
            tx.commit().await.map_err(|e| pg.error(e))?;
            return Ok(out);
        }
    }

    /// Releases `holder`'s hold on `subject` (sled's `RecordStore::settle`): when nothing holds
    /// it any more, the change held back is evaluated as one and what it starts is queued.
    async fn settle(
        &self,
        subject: &Subject,
        holder: &str,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
    ) -> PgResult<Vec<QueueId>> {
        self.settle_with(
            subject,
            &|flight: &mut InFlight| flight.holders.remove(holder),
            Some(holder),
            evaluate,
            now,
        )
        .await
    }

    /// Changes `subject`'s in-flight entry with `change` (which says whether it changed
    /// anything); when nothing holds the subject any more, the change held back is evaluated as
    /// one and what it starts is queued. `released`: the holder whose release this is.
    async fn settle_with(
        &self,
        subject: &Subject,
        change: &(dyn Fn(&mut InFlight) -> bool + Send + Sync),
        released: Option<&str>,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
    ) -> PgResult<Vec<QueueId>> {
        let pg = &self.pg;
        let key = key_of(subject);
        let keys = [key.clone()];
        let mut client = pg.client().await?;
        loop {
            let seen = self
                .read(&client, &keys)
                .await?
                .remove(&key)
                .unwrap_or_default();
            let Some(text) = &seen.flight else {
                return Ok(Vec::new());
            };
            let mut flight = self.decode_flight(&key, text)?;
            if !change(&mut flight) {
                return Ok(Vec::new());
            }
            let deferred = if flight.holders.is_empty() && !evaluate.is_empty() {
                flight.deferred.take()
            } else {
                None
            };
            let evaluation = match deferred {
                None => None,
                Some(deferred) => {
                    let current = seen
                        .record
                        .as_deref()
                        .map(|text| self.decode_record(&key, text))
                        .transpose()?;
                    let (subject, evaluate) = (subject.clone(), evaluate.clone());
                    blocking(move || {
                        let before = deferred
                            .existed
                            .then(|| deferred.revert(current.as_ref().unwrap_or(&Fields::new())));
                        let event = match (before.is_some(), current.is_some()) {
                            (false, true) => Some(RecordEvent::Created),
                            (true, true) => Some(RecordEvent::Updated),
                            (true, false) => Some(RecordEvent::Deleted),
                            (false, false) => None,
                        };
                        Ok(event.map(|event| {
                            let decisions = evaluate.consider(
                                &subject,
                                event,
                                before.as_ref(),
                                current.as_ref(),
                                now,
                            );
                            (event, decisions)
                        }))
                    })
                    .await?
                }
            };
            let note = match released {
                Some(holder) => format!("evaluated after {} finished", describe(holder)),
                None => "evaluated once nothing was in flight for this subject any more".to_owned(),
            };
            let tx = client.transaction().await.map_err(|e| pg.error(e))?;
            self.lock(&tx, &keys).await?;
            let now_seen = self
                .read(&tx, &keys)
                .await?
                .remove(&key)
                .unwrap_or_default();
            if now_seen != seen {
                tx.rollback().await.map_err(|e| pg.error(e))?;
                continue;
            }
            if flight.is_empty() {
                tx.execute(
                    "DELETE FROM in_flight WHERE collection = $1 AND key = $2",
                    &[&key.0, &key.1],
                )
                .await
                .map_err(|e| pg.error(e))?;
            } else {
                self.put_in_flight(&tx, &key, &flight).await?;
            }
            let queued = match evaluation {
                Some((event, decisions)) => {
                    self.record_decisions(
                        &tx,
                        subject,
                        Cause::Record(event),
                        now,
                        decisions,
                        Some(note),
                    )
                    .await?
                }
                None => Vec::new(),
            };
            tx.commit().await.map_err(|e| pg.error(e))?;
            return Ok(queued);
        }
    }
}

/// Deciding evaluates rules: on a blocking thread, as every async caller.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> PgResult<T> + Send + 'static,
) -> PgResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Io {
            message: format!("the record write task failed: {err}"),
        })?
}

impl ReadRecords for PgRecords {
    async fn get(&self, subject: &Subject) -> Result<Option<Fields>> {
        let key = key_of(subject);
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT fields::text FROM records WHERE collection = $1 AND key = $2",
                &[&key.0, &key.1],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        row.map(|row| self.decode_record(&key, row.get(0)))
            .transpose()
    }

    async fn list(&self, collection: Collection) -> Result<Vec<(RecordKey, Fields)>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT key, fields::text FROM records WHERE collection = $1 ORDER BY key",
                &[&collection.name()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        rows.iter()
            .map(|row| {
                let name: String = row.get(0);
                let key = (collection.name().to_owned(), name);
                let fields = self.decode_record(&key, row.get(1))?;
                Ok((RecordKey::parse(&key.1), fields))
            })
            .collect()
    }

    async fn in_flight(&self, subject: &Subject) -> Result<Option<InFlight>> {
        let key = key_of(subject);
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT entry::text FROM in_flight WHERE collection = $1 AND key = $2",
                &[&key.0, &key.1],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        row.map(|row| self.decode_flight(&key, row.get(0)))
            .transpose()
    }
}

impl WriteRecords for PgRecords {
    async fn write(
        &self,
        writes: Vec<Write>,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
        by: Option<String>,
    ) -> Result<Vec<Written>> {
        self.write_batch(Arc::new(writes), evaluate, now, by.map(Arc::from))
            .await
    }

    async fn hold(&self, subject: &Subject, holder: &str) -> Result<()> {
        let pg = &self.pg;
        let key = key_of(subject);
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        self.lock(&tx, std::slice::from_ref(&key)).await?;
        let mut flight = self.get_in_flight(&tx, &key).await?.unwrap_or_default();
        if flight.holders.insert(holder.to_owned()) {
            self.put_in_flight(&tx, &key, &flight).await?;
        }
        tx.commit().await.map_err(|e| pg.error(e))
    }

    async fn release(
        &self,
        subject: &Subject,
        holder: &str,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>> {
        self.settle(subject, holder, evaluate, now).await
    }
}

impl ScheduleState for PgRecords {
    async fn last_fired(&self, workflow: &WorkflowName) -> Result<Option<DateTime<Utc>>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT last_fired_ns FROM schedules WHERE workflow = $1",
                &[&workflow.as_str()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(row.map(|row| instant(row.get(0))))
    }

    async fn enqueue_tick(
        &self,
        workflow: &WorkflowName,
        tick: DateTime<Utc>,
        decisions: Vec<(Option<Subject>, Decision)>,
    ) -> Result<Vec<QueueId>> {
        let pg = &self.pg;
        let keys: Vec<Key> = decisions
            .iter()
            .filter_map(|(s, _)| s.as_ref().map(key_of))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        // The tick first: its row's lock makes a second worker firing the same tick wait for
        // this transaction, then find the tick fired (the conditional update re-reads the row)
        // and enqueue nothing.
        let fired = tx
            .query_opt(
                "INSERT INTO schedules (workflow, last_fired_ns) VALUES ($1, $2)
                 ON CONFLICT (workflow) DO UPDATE SET last_fired_ns = $2
                     WHERE schedules.last_fired_ns < $2
                 RETURNING 1",
                &[&workflow.as_str(), &nanos(tick)],
            )
            .await
            .map_err(|e| pg.error(e))?;
        if fired.is_none() {
            return Ok(Vec::new());
        }
        self.lock(&tx, &keys).await?;
        let mut ids = Vec::new();
        for (subject, decision) in decisions {
            match subject {
                Some(subject) => ids.extend(
                    self.record_decisions(
                        &tx,
                        &subject,
                        Cause::Schedule,
                        tick,
                        vec![decision],
                        None,
                    )
                    .await?,
                ),
                None => {
                    if let Some(request) = &decision.request {
                        ids.push(enqueue(&tx, request).await.map_err(|e| pg.error(e))?);
                    }
                }
            }
        }
        tx.commit().await.map_err(|e| pg.error(e))?;
        Ok(ids)
    }
}

impl TriggerTraces for PgRecords {
    async fn trace(&self, subject: &Subject) -> Result<Vec<TraceEntry>> {
        let key = key_of(subject);
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT entry::text FROM traces WHERE collection = $1 AND key = $2 ORDER BY seq",
                &[&key.0, &key.1],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        rows.iter()
            .map(|row| self.decode_trace(&key, row.get(0)))
            .collect()
    }

    async fn link_run(&self, queued: QueueId, run: &str) -> Result<bool> {
        let pg = &self.pg;
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        let Some(link) = tx
            .query_opt(
                "DELETE FROM trace_links WHERE queue_id = $1 RETURNING collection, key, seq",
                &[&queued.to_string()],
            )
            .await
            .map_err(|e| pg.error(e))?
        else {
            return Ok(false);
        };
        let key: Key = (link.get(0), link.get(1));
        let seq: i64 = link.get(2);
        let row = tx
            .query_opt(
                "SELECT entry::text FROM traces
                 WHERE collection = $1 AND key = $2 AND seq = $3 FOR UPDATE",
                &[&key.0, &key.1, &seq],
            )
            .await
            .map_err(|e| pg.error(e))?;
        let linked = match row {
            None => false,
            Some(row) => {
                let mut entry = self.decode_trace(&key, row.get(0))?;
                match entry
                    .considered
                    .iter_mut()
                    .find(|c| c.queued == Some(queued))
                {
                    None => false,
                    Some(c) => {
                        c.run = Some(run.to_owned());
                        tx.execute(
                            "UPDATE traces SET entry = $4
                             WHERE collection = $1 AND key = $2 AND seq = $3",
                            &[&key.0, &key.1, &seq, &Json(&entry)],
                        )
                        .await
                        .map_err(|e| pg.error(e))?;
                        true
                    }
                }
            }
        };
        tx.commit().await.map_err(|e| pg.error(e))?;
        Ok(linked)
    }
}

/// What the engine notes on trace entries, as the sled records store does
/// ([`crate::store::records::RecordStore::note_held`] and its siblings).
impl PgRecords {
    /// Notes on the trace entry that started `run` (of `subject`) why the run is held: the entry
    /// linked to `run`, or the one that queued it (`queued`). `false` when no kept entry names
    /// the run.
    pub async fn note_held(
        &self,
        subject: &Subject,
        run: &str,
        queued: Option<QueueId>,
        why: &str,
    ) -> PgResult<bool> {
        let pg = &self.pg;
        let key = key_of(subject);
        let names = |c: &Consideration| {
            c.run.as_deref() == Some(run) || (queued.is_some() && c.queued == queued)
        };
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        let rows = tx
            .query(
                "SELECT seq, entry::text FROM traces
                 WHERE collection = $1 AND key = $2 ORDER BY seq FOR UPDATE",
                &[&key.0, &key.1],
            )
            .await
            .map_err(|e| pg.error(e))?;
        let mut noted = false;
        for row in &rows {
            let seq: i64 = row.get(0);
            let mut entry = self.decode_trace(&key, row.get(1))?;
            let Some(c) = entry.considered.iter_mut().find(|c| names(c)) else {
                continue;
            };
            c.held = Some(why.to_owned());
            tx.execute(
                "UPDATE traces SET entry = $4 WHERE collection = $1 AND key = $2 AND seq = $3",
                &[&key.0, &key.1, &seq, &Json(&entry)],
            )
            .await
            .map_err(|e| pg.error(e))?;
            noted = true;
            break;
        }
        tx.commit().await.map_err(|e| pg.error(e))?;
        Ok(noted)
    }

    /// Notes on the trace entry of queue entry `queued` why its run has not started (a paused
    /// workflow); a note already there is kept. Whether an entry was noted.
    pub async fn note_paused(&self, queued: QueueId, held: &str) -> PgResult<bool> {
        let pg = &self.pg;
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        let row = tx
            .query_opt(
                "SELECT t.collection, t.key, t.seq, t.entry::text
                 FROM trace_links l
                 JOIN traces t ON t.collection = l.collection AND t.key = l.key AND t.seq = l.seq
                 WHERE l.queue_id = $1 FOR UPDATE OF t",
                &[&queued.to_string()],
            )
            .await
            .map_err(|e| pg.error(e))?;
        let Some(row) = row else {
            return Ok(false);
        };
        let key: Key = (row.get(0), row.get(1));
        let seq: i64 = row.get(2);
        let mut entry = self.decode_trace(&key, row.get(3))?;
        let Some(c) = entry
            .considered
            .iter_mut()
            .find(|c| c.queued == Some(queued) && c.paused.is_none())
        else {
            return Ok(false);
        };
        c.paused = Some(held.to_owned());
        tx.execute(
            "UPDATE traces SET entry = $4 WHERE collection = $1 AND key = $2 AND seq = $3",
            &[&key.0, &key.1, &seq, &Json(&entry)],
        )
        .await
        .map_err(|e| pg.error(e))?;
        tx.commit().await.map_err(|e| pg.error(e))?;
        Ok(true)
    }

    /// The subjects with a trace whose email (or whole key) is `email`, in any collection.
    pub async fn traced_subjects(&self, email: &str) -> PgResult<Vec<Subject>> {
        let email = email.trim().to_lowercase();
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT collection, key FROM traces ORDER BY collection, key",
                &[],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        let mut subjects = Vec::new();
        for row in &rows {
            let Some(collection) = Collection::parse(row.get(0)) else {
                continue;
            };
            let key = RecordKey::parse(row.get(1));
            if key.email() == email || key.as_str() == email {
                subjects.push(Subject::new(collection, key));
            }
        }
        Ok(subjects)
    }
}

/// What a stopped process left in flight (sled's `RecordStore::reconcile`).
impl PgRecords {
    /// Every holder of an in-flight subject.
    pub async fn holders(&self) -> PgResult<Vec<String>> {
        let client = self.pg.client().await?;
        let rows = client
            .query("SELECT collection, key, entry::text FROM in_flight", &[])
            .await
            .map_err(|e| self.pg.error(e))?;
        let mut holders = BTreeSet::new();
        for row in &rows {
            let key: Key = (row.get(0), row.get(1));
            holders.extend(self.decode_flight(&key, row.get(2))?.holders);
        }
        Ok(holders.into_iter().collect())
    }

    /// Drops the holders `alive` says are gone and evaluates the changes held back for subjects
    /// nothing holds any more. Returns the run requests queued.
    pub async fn reconcile(
        &self,
        alive: &(dyn Fn(&str) -> bool + Send + Sync),
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
    ) -> PgResult<Vec<QueueId>> {
        let rows = {
            let client = self.pg.client().await?;
            client
                .query(
                    "SELECT collection, key FROM in_flight ORDER BY collection, key",
                    &[],
                )
                .await
                .map_err(|e| self.pg.error(e))?
        };
        let change = |flight: &mut InFlight| {
            let before = flight.holders.len();
            flight.holders.retain(|h| alive(h));
            flight.holders.len() < before || flight.holders.is_empty()
        };
        let mut queued = Vec::new();
        for row in &rows {
            let Some(collection) = Collection::parse(row.get(0)) else {
                continue;
            };
            let subject = Subject::new(collection, RecordKey::parse(row.get(1)));
            queued.extend(
                self.settle_with(&subject, &change, None, evaluate.clone(), now)
                    .await?,
            );
        }
        Ok(queued)
    }
}

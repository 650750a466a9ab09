//! The store seam: what the engine keeps, as traits a backend implements, and the one
//! behaviour suite (`tests/store/suite.rs`) every backend passes.
//!
//! Modelled on restatedev/restate's `storage-api`: one trait per concern, its read side apart
//! from its write side where readers (`history list`, `GET /api/runs`, `triggers why`) need no
//! write access: [`ReadHistory`]/[`WriteHistory`] (runs, steps, workflow snapshots, the subject
//! index, parked runs), [`ReadRecords`]/[`WriteRecords`] (records, with the run requests a write
//! triggers and their traces written atomically with it, and the per-subject in-flight
//! ordering), [`RunQueue`], [`DurableTimers`] (the wake-up times of retrying and waiting runs,
//! and the records a `wait` watches: a write of one makes its watchers due, in the write's
//! transaction), [`ApprovalStore`], [`CancelStore`], [`ScheduleState`], [`TriggerTraces`],
//! [`ReadGuard`]/[`WriteGuard`] (the mass-change guard's counted writes and releases),
//! [`ReadPauses`]/[`WritePauses`] (paused workflows), [`ReadRetryMarks`]/[`WriteRetryMarks`]
//! (`retry-failed`'s marks), [`ReadReminders`]/[`WriteReminders`] (approval reminders, each
//! claimed once before it is sent); a [`Backend`] opens them all and makes writes durable. The
//! OAuth token store has its own trait (`store/tokens.rs`).
//!
//! For several workers on one store: [`RunLeases`] (on the history handle: which worker executes
//! which run, under a lease it renews, and the orphans of a dead worker, claimed once) and
//! [`QueueLeases`] (on the queue handle: claims under the same leases), each worker named by a
//! [`WorkerId`]; [`RateBudget`] (a vendor's request budget, one token bucket per vendor and
//! credential for every worker).
//!
//! What a record write triggers reaches the store as a callback, [`Evaluate`], which the store
//! calls before its transaction and which does no I/O: the store never names the trigger module.
//!
//! # Async
//!
//! Every method returns a future: a network backend (PostgreSQL) waits on its server in each.
//! sled answers from memory or its page cache, so its futures are ready at once (no task, no
//! allocation), except where deciding what a record write triggers evaluates rules (a blocking
//! thread, as [`RecordStore::write_blocking`]) and a flush (an fsync, on a blocking thread).
//!
//! # How the engine holds the backend
//!
//! A closed set of backends, dispatched by `match`: the sled types ([`History`], [`RecordStore`],
//! [`Queue`], [`Timers`], [`Approvals`], [`GuardStore`], [`Pauses`], [`Retries`], [`Reminders`],
//! opened from [`Store`]) implement these traits, and so does [`super::postgres::Postgres`] (its
//! tables, one module per concern). The engine holds [`super::any::AnyStore`] and its parts, an
//! enum of the two per part implementing the same traits by `match`, and calls the traits: no
//! `dyn` and, on sled, no boxed future on the hot path. What only one caller needs and no trait
//! says (a collection's size, trace notes, `reconcile`) is on those enums, answered by each
//! backend.

use std::collections::HashSet;
use std::future::{ready, Future};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::approvals::{Approvals, Decision as ApprovalDecision};
use super::backup::{BackupError, BackupReport};
use super::cancels::CancelMarkers;
use super::guard::{Admission, GuardStore};
use super::history::{BatchReport, History, PruneReport, RunFilter, RunId, RunRecord, StepRecord};
use super::in_flight::InFlight;
use super::pauses::{Pause, Pauses};
use super::queue::{Queue, QueueEntry, QueueId, WorkflowName};
use super::records::{RecordStore, Written};
use super::reminders::{Reminder, Reminders};
use super::retries::{Retries, RetryMark};
use super::timers::{Timer, Timers};
use super::trace::{Decision, TraceEntry};
use super::{Store, StoreError};
use crate::records::{Collection, Fields, RecordKey, Subject, Write};

pub use super::records::Evaluate;

/// What store futures resolve to.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Run history, read side.
pub trait ReadHistory {
    /// One run.
    fn run(&self, id: RunId) -> impl Future<Output = Result<Option<RunRecord>>> + Send;
    /// A run's steps, in order.
    fn steps(&self, id: RunId) -> impl Future<Output = Result<Vec<StepRecord>>> + Send;
    /// A stored workflow text, by the hash [`WriteHistory::put_snapshot`] returned.
    fn snapshot(&self, hash: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Runs matching `filter`, newest first; `filter.subject` goes through the subject index.
    fn list(&self, filter: &RunFilter) -> impl Future<Output = Result<Vec<RunRecord>>> + Send;
    /// Runs queued or running when their process stopped, oldest first (not parked ones).
    fn unfinished(&self) -> impl Future<Output = Result<Vec<RunRecord>>> + Send;
}

/// Run history, write side. Writes are not durable until [`WriteHistory::durable`].
pub trait WriteHistory: ReadHistory {
    /// Stores a workflow text by its content hash (idempotent); returns the hash.
    fn put_snapshot(&self, text: &str) -> impl Future<Output = Result<String>> + Send;
    /// Writes a run record, its subject index entry while `queued`/`running`, and its timer
    /// (`wake_at` set: set; else dropped).
    fn put_run(&self, run: &RunRecord) -> impl Future<Output = Result<()>> + Send;
    /// Writes steps of one run (each sequence number in exactly one write).
    fn put_steps(&self, steps: &[&StepRecord]) -> impl Future<Output = Result<()>> + Send;
    /// Claims a parked run whose timer fell due: `running`, its timer dropped, atomically (of two
    /// callers one gets it).
    fn wake(&self, id: RunId) -> impl Future<Output = Result<Option<RunRecord>>> + Send;
    /// Cancels a parked run atomically with dropping its timer.
    fn cancel_parked(
        &self,
        id: RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<RunRecord>>> + Send;
    /// Blanks the recorded payloads of runs finished before `cutoff`.
    fn prune(&self, cutoff: DateTime<Utc>) -> impl Future<Output = Result<PruneReport>> + Send;
    /// One bounded batch of [`WriteHistory::prune`] (`serve`'s retention): goes through the runs
    /// after `after` in id order, at most `limit` of them, and blanks the payloads of those
    /// finished before `cutoff`. Its `next` is where the next batch goes on (`None`: done).
    fn prune_batch(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> impl Future<Output = Result<BatchReport>> + Send;
    /// Deletes whole runs finished before `cutoff`, in one bounded batch as
    /// [`WriteHistory::prune_batch`]: each run with its steps, its index entries, and its timer,
    /// record watches, approval decisions, approval reminder and retry mark, atomically. A run
    /// not finished (queued, running, or parked: waiting, retrying, waiting for approval, held)
    /// is never touched; workflow snapshots stay.
    fn delete_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> impl Future<Output = Result<BatchReport>> + Send;
    /// Makes every write so far durable (group-committed with other callers).
    fn durable(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Records, read side.
pub trait ReadRecords {
    fn get(&self, subject: &Subject) -> impl Future<Output = Result<Option<Fields>>> + Send;
    /// Every record of `collection`, by key.
    fn list(
        &self,
        collection: Collection,
    ) -> impl Future<Output = Result<Vec<(RecordKey, Fields)>>> + Send;
    /// The runs and requests outstanding for `subject`, and the change held back meanwhile.
    fn in_flight(&self, subject: &Subject)
        -> impl Future<Output = Result<Option<InFlight>>> + Send;
}

/// Records, write side: a write, the run requests `evaluate` decides it triggers and their
/// traces are written atomically (all or none); a write of a subject something holds is applied
/// and its evaluation held back until released.
pub trait WriteRecords: ReadRecords {
    /// Applies `writes` in order, with what `evaluate` decides (called before the transaction,
    /// never with I/O). `by` is the holder of a run saving onto its own subject.
    fn write(
        &self,
        writes: Vec<Write>,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
        by: Option<String>,
    ) -> impl Future<Output = Result<Vec<Written>>> + Send;
    /// `holder` holds `subject`: changes to it are held back until released.
    fn hold(&self, subject: &Subject, holder: &str) -> impl Future<Output = Result<()>> + Send;
    /// Releases `holder`'s hold; when none is left, evaluates the held-back change as one.
    fn release(
        &self,
        subject: &Subject,
        holder: &str,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<QueueId>>> + Send;
}

/// The durable queue of run requests: at-least-once, oldest first.
pub trait RunQueue {
    /// Every entry not claimed through this handle, oldest first.
    fn pending(&self) -> impl Future<Output = Result<Vec<QueueEntry>>> + Send;
    /// The oldest unclaimed entry, claimed (until acked or released, or the process stops).
    fn claim(&self) -> impl Future<Output = Result<Option<QueueEntry>>> + Send;
    /// Removes an entry: its run has been recorded. Whether it was there.
    fn ack(&self, id: QueueId) -> impl Future<Output = Result<bool>> + Send;
    /// Gives a claimed entry back.
    fn release(&self, id: QueueId);
}

/// The wake-up times of parked runs.
pub trait DurableTimers {
    /// Sets `run`'s timer (replacing the one it had).
    fn set(&self, run: RunId, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;
    /// Drops `run`'s timer; whether it had one.
    fn cancel(&self, run: RunId) -> impl Future<Output = Result<bool>> + Send;
    /// The timers due at `now`, earliest first.
    fn due(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Vec<Timer>>> + Send;
    /// The earliest timer.
    fn next(&self) -> impl Future<Output = Result<Option<Timer>>> + Send;
    /// `run` waits on the record `record` (`collection/key`): a record write of it moves `run`'s
    /// timer to the epoch in the write's own transaction, so it falls due at once.
    fn watch(&self, run: RunId, record: &str) -> impl Future<Output = Result<()>> + Send;
    /// `run` no longer waits on `record`.
    fn unwatch(&self, run: RunId, record: &str) -> impl Future<Output = Result<()>> + Send;
    /// The runs waiting on `record`.
    fn watchers(&self, record: &str) -> impl Future<Output = Result<Vec<RunId>>> + Send;
}

/// Administrators' decisions on blocks waiting for approval.
pub trait ApprovalStore {
    fn decision(
        &self,
        run: RunId,
        block: &str,
    ) -> impl Future<Output = Result<Option<ApprovalDecision>>> + Send;
    fn decide(
        &self,
        run: RunId,
        block: &str,
        decision: ApprovalDecision,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The latest decisions (of the newest runs that have any), most recently decided first.
    fn recent(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(RunId, String, ApprovalDecision)>>> + Send;
}

/// Durable requests to stop a run, seen by whichever process runs it.
pub trait CancelStore {
    /// Asks that `run` stop before its next block: durable when this resolves.
    fn request(&self, run: RunId) -> impl Future<Output = Result<()>> + Send;
    /// The runs asked to stop.
    fn requested(&self) -> impl Future<Output = Result<HashSet<RunId>>> + Send;
    /// Forgets `run`'s request (it finished).
    fn clear(&self, run: RunId) -> impl Future<Output = Result<()>> + Send;
}

/// Schedules' last ticks, written atomically with the run requests a tick enqueues.
pub trait ScheduleState {
    fn last_fired(
        &self,
        workflow: &WorkflowName,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
    /// Enqueues one tick's requests and records `tick` as `workflow`'s last, atomically; a tick
    /// not after `workflow`'s last (another worker fired it, or it is older) enqueues nothing and
    /// returns no id, so each tick fires once across every handle on the store.
    fn enqueue_tick(
        &self,
        workflow: &WorkflowName,
        tick: DateTime<Utc>,
        decisions: Vec<(Option<Subject>, Decision)>,
    ) -> impl Future<Output = Result<Vec<QueueId>>> + Send;
}

/// The trigger trace: each subject's last evaluations.
pub trait TriggerTraces {
    /// A subject's trace, oldest first.
    fn trace(&self, subject: &Subject) -> impl Future<Output = Result<Vec<TraceEntry>>> + Send;
    /// Names the run a queued request became in its trace entry; whether it was found.
    fn link_run(&self, queued: QueueId, run: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// The mass-change guard's counts, read side.
pub trait ReadGuard {
    /// The destructive writes of `workflow` counted in the window `(now - per, now]` (and any
    /// stamped later, by a clock that was ahead).
    fn count(
        &self,
        workflow: &str,
        now: DateTime<Utc>,
        per: Duration,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Whether an operator released `run`.
    fn is_released(&self, run: RunId) -> impl Future<Output = Result<bool>> + Send;
}

/// The mass-change guard, write side: counted destructive writes and released runs.
pub trait WriteGuard: ReadGuard {
    /// Counts the destructive write of `block` in `run` at `now` when fewer than `allowed` are in
    /// the window (`None`: no limit, always counted), else says it is held; checking and counting
    /// are one step for callers sharing this handle. A block counted before is admitted again
    /// without counting.
    fn admit(
        &self,
        workflow: &str,
        run: RunId,
        block: &str,
        now: DateTime<Utc>,
        per: Duration,
        allowed: Option<u64>,
    ) -> impl Future<Output = Result<Admission>> + Send;
    /// Records that an operator released `run`: its destructive writes go without counting.
    fn release(&self, run: RunId, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;
}

/// Paused workflows, read side.
pub trait ReadPauses {
    /// The pause of `workflow`, if it is paused.
    fn paused(&self, workflow: &str) -> impl Future<Output = Result<Option<Pause>>> + Send;
    /// Every paused workflow, by name.
    fn list(&self) -> impl Future<Output = Result<Vec<(String, Pause)>>> + Send;
}

/// Paused workflows, write side.
pub trait WritePauses: ReadPauses {
    /// Pauses `workflow`; one already paused keeps its first pause, returned with `false`.
    fn pause(
        &self,
        workflow: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Pause, bool)>> + Send;
    /// Resumes `workflow`'s triggers; the pause it lifted, or `None` when it was not paused.
    fn resume(&self, workflow: &str) -> impl Future<Output = Result<Option<Pause>>> + Send;
}

/// `retry-failed`'s marks, read side.
pub trait ReadRetryMarks {
    /// The mark of `run`, if it was retried.
    fn mark(&self, run: &str) -> impl Future<Output = Result<Option<RetryMark>>> + Send;
}

/// `retry-failed`'s marks, write side: a run is marked before its replay starts.
pub trait WriteRetryMarks: ReadRetryMarks {
    /// Marks `run` as retried unless it is already (of two callers one wins); the existing mark
    /// when it was.
    fn claim(
        &self,
        run: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<RetryMark>>> + Send;
    /// Names the replay run on `run`'s mark.
    fn link(
        &self,
        run: &str,
        mark: RetryMark,
        replay: &str,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Approval reminders, read side: one per run waiting for approval under a `notify:` with
/// `remind_approvers_after`.
pub trait ReadReminders {
    /// `run`'s reminder, if it has one.
    fn reminder(&self, run: RunId) -> impl Future<Output = Result<Option<Reminder>>> + Send;
    /// Every reminder not sent yet, earliest due first.
    fn pending(&self) -> impl Future<Output = Result<Vec<(RunId, Reminder)>>> + Send;
}

/// Approval reminders, write side: each is claimed before it is sent, so it is sent at most once.
pub trait WriteReminders: ReadReminders {
    /// Schedules `reminder` for `run` unless it already has one for the same blocks (its due
    /// time does not move); whether it wrote one.
    fn schedule(
        &self,
        run: RunId,
        reminder: &Reminder,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Marks `run`'s reminder (as read: `current`) sent at `now`; `false` when it changed since
    /// it was read (another loop claimed it, or it was replaced): of two callers one wins.
    fn claim(
        &self,
        run: RunId,
        current: &Reminder,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Drops `run`'s reminder.
    fn remove(&self, run: RunId) -> impl Future<Output = Result<()>> + Send;
}

/// One backend: opens every part of the store over one data dir.
pub trait Backend: Send + Sync {
    type History: WriteHistory + Send + Sync;
    type Records: WriteRecords + ScheduleState + TriggerTraces + Send + Sync;
    type Queue: RunQueue + Send + Sync;
    type Timers: DurableTimers + Send + Sync;
    type Approvals: ApprovalStore + Send + Sync;
    type Cancels: CancelStore + Send + Sync;
    type Guard: WriteGuard + Send + Sync;
    type Pauses: WritePauses + Send + Sync;
    type Retries: WriteRetryMarks + Send + Sync;
    type Reminders: WriteReminders + Send + Sync;

    fn history(&self) -> Result<Self::History>;
    fn records(&self) -> Result<Self::Records>;
    /// A queue handle (claims are per handle: a new handle is a restarted process).
    fn queue(&self) -> Result<Self::Queue>;
    fn timers(&self) -> Result<Self::Timers>;
    fn approvals(&self) -> Result<Self::Approvals>;
    fn cancels(&self) -> Result<Self::Cancels>;
    /// A guard handle (admitting is one step per handle: the engine holds one).
    fn guard(&self) -> Result<Self::Guard>;
    fn pauses(&self) -> Result<Self::Pauses>;
    fn retries(&self) -> Result<Self::Retries>;
    fn reminders(&self) -> Result<Self::Reminders>;
    /// Makes every write so far durable.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;
    /// A consistent copy of the whole store into `dir` (new or empty).
    fn backup(
        &self,
        dir: &Path,
    ) -> impl Future<Output = std::result::Result<BackupReport, BackupError>> + Send;
}

impl ReadHistory for History {
    fn run(&self, id: RunId) -> impl Future<Output = Result<Option<RunRecord>>> + Send {
        ready(History::run(self, id))
    }
    fn steps(&self, id: RunId) -> impl Future<Output = Result<Vec<StepRecord>>> + Send {
        ready(History::steps(self, id))
    }
    fn snapshot(&self, hash: &str) -> impl Future<Output = Result<Option<String>>> + Send {
        ready(History::snapshot(self, hash))
    }
    fn list(&self, filter: &RunFilter) -> impl Future<Output = Result<Vec<RunRecord>>> + Send {
        ready(History::list(self, filter))
    }
    fn unfinished(&self) -> impl Future<Output = Result<Vec<RunRecord>>> + Send {
        ready(History::unfinished(self))
    }
}

impl WriteHistory for History {
    fn put_snapshot(&self, text: &str) -> impl Future<Output = Result<String>> + Send {
        ready(History::put_snapshot(self, text))
    }
    fn put_run(&self, run: &RunRecord) -> impl Future<Output = Result<()>> + Send {
        ready(History::put_run(self, run))
    }
    fn put_steps(&self, steps: &[&StepRecord]) -> impl Future<Output = Result<()>> + Send {
        ready(History::put_steps(self, steps))
    }
    fn wake(&self, id: RunId) -> impl Future<Output = Result<Option<RunRecord>>> + Send {
        ready(History::wake(self, id))
    }
    fn cancel_parked(
        &self,
        id: RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<RunRecord>>> + Send {
        ready(History::cancel_parked(self, id, reason, at))
    }
    fn prune(&self, cutoff: DateTime<Utc>) -> impl Future<Output = Result<PruneReport>> + Send {
        ready(History::prune(self, cutoff))
    }
    /// On a blocking thread: a batch reads and writes up to `limit` runs.
    fn prune_batch(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> impl Future<Output = Result<BatchReport>> + Send {
        let history = self.clone();
        retention(move || history.prune_batch(cutoff, after, limit))
    }
    /// On a blocking thread, as [`WriteHistory::prune_batch`].
    fn delete_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> impl Future<Output = Result<BatchReport>> + Send {
        let history = self.clone();
        retention(move || history.delete_finished_before(cutoff, after, limit))
    }
    fn durable(&self) -> impl Future<Output = Result<()>> + Send {
        History::durable(self)
    }
}

impl ReadRecords for RecordStore {
    fn get(&self, subject: &Subject) -> impl Future<Output = Result<Option<Fields>>> + Send {
        ready(RecordStore::get(self, subject))
    }
    fn list(
        &self,
        collection: Collection,
    ) -> impl Future<Output = Result<Vec<(RecordKey, Fields)>>> + Send {
        ready(RecordStore::list(self, collection).collect())
    }
    fn in_flight(
        &self,
        subject: &Subject,
    ) -> impl Future<Output = Result<Option<InFlight>>> + Send {
        ready(RecordStore::in_flight(self, subject))
    }
}

/// Deciding what a write triggers evaluates rules: on a blocking thread, as every async caller.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Io {
            message: format!("the record write task failed: {err}"),
        })?
}

/// A retention batch of the sled history, on a blocking thread.
async fn retention(
    work: impl FnOnce() -> Result<BatchReport> + Send + 'static,
) -> Result<BatchReport> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Io {
            message: format!("the retention task failed: {err}"),
        })?
}

impl WriteRecords for RecordStore {
    fn write(
        &self,
        writes: Vec<Write>,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
        by: Option<String>,
    ) -> impl Future<Output = Result<Vec<Written>>> + Send {
        let store = self.clone();
        blocking(move || store.write_as(&writes, &*evaluate, now, by.as_deref()))
    }
    fn hold(&self, subject: &Subject, holder: &str) -> impl Future<Output = Result<()>> + Send {
        ready(RecordStore::hold(self, subject, holder))
    }
    fn release(
        &self,
        subject: &Subject,
        holder: &str,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<QueueId>>> + Send {
        let (store, subject, holder) = (self.clone(), subject.clone(), holder.to_owned());
        blocking(move || store.release(&subject, &holder, &*evaluate, now))
    }
}

impl ScheduleState for RecordStore {
    fn last_fired(
        &self,
        workflow: &WorkflowName,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send {
        ready(Queue::open(self.store()).and_then(|queue| queue.last_fired(workflow)))
    }
    fn enqueue_tick(
        &self,
        workflow: &WorkflowName,
        tick: DateTime<Utc>,
        decisions: Vec<(Option<Subject>, Decision)>,
    ) -> impl Future<Output = Result<Vec<QueueId>>> + Send {
        ready(RecordStore::enqueue_tick(self, workflow, tick, decisions))
    }
}

impl TriggerTraces for RecordStore {
    fn trace(&self, subject: &Subject) -> impl Future<Output = Result<Vec<TraceEntry>>> + Send {
        ready(RecordStore::trace(self, subject))
    }
    fn link_run(&self, queued: QueueId, run: &str) -> impl Future<Output = Result<bool>> + Send {
        ready(RecordStore::link_run(self, queued, run))
    }
}

impl RunQueue for Queue {
    fn pending(&self) -> impl Future<Output = Result<Vec<QueueEntry>>> + Send {
        ready(Queue::pending(self))
    }
    fn claim(&self) -> impl Future<Output = Result<Option<QueueEntry>>> + Send {
        ready(Queue::claim(self))
    }
    fn ack(&self, id: QueueId) -> impl Future<Output = Result<bool>> + Send {
        ready(Queue::ack(self, id))
    }
    fn release(&self, id: QueueId) {
        Queue::release(self, id);
    }
}

impl DurableTimers for Timers {
    fn set(&self, run: RunId, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send {
        ready(Timers::set(self, run, at))
    }
    fn cancel(&self, run: RunId) -> impl Future<Output = Result<bool>> + Send {
        ready(Timers::cancel(self, run))
    }
    fn due(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Vec<Timer>>> + Send {
        ready(Timers::due(self, now))
    }
    fn next(&self) -> impl Future<Output = Result<Option<Timer>>> + Send {
        ready(Timers::next(self))
    }
    fn watch(&self, run: RunId, record: &str) -> impl Future<Output = Result<()>> + Send {
        ready(Timers::watch(self, run, record))
    }
    fn unwatch(&self, run: RunId, record: &str) -> impl Future<Output = Result<()>> + Send {
        ready(Timers::unwatch(self, run, record))
    }
    fn watchers(&self, record: &str) -> impl Future<Output = Result<Vec<RunId>>> + Send {
        ready(Timers::watchers(self, record))
    }
}

impl ApprovalStore for Approvals {
    fn decision(
        &self,
        run: RunId,
        block: &str,
    ) -> impl Future<Output = Result<Option<ApprovalDecision>>> + Send {
        ready(Approvals::get(self, run, block))
    }
    fn decide(
        &self,
        run: RunId,
        block: &str,
        decision: ApprovalDecision,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(Approvals::put(self, run, block, decision))
    }
    fn recent(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(RunId, String, ApprovalDecision)>>> + Send {
        ready(Approvals::recent(self, limit))
    }
}

impl CancelStore for CancelMarkers {
    fn request(&self, run: RunId) -> impl Future<Output = Result<()>> + Send {
        ready(self.write(run).map_err(|err| StoreError::Io {
            message: format!(
                "cannot write the cancel marker `{}`: {err}",
                self.marker(run).display()
            ),
        }))
    }
    fn requested(&self) -> impl Future<Output = Result<HashSet<RunId>>> + Send {
        ready(Ok(self.scan()))
    }
    fn clear(&self, run: RunId) -> impl Future<Output = Result<()>> + Send {
        self.remove(run);
        ready(Ok(()))
    }
}

impl ReadGuard for GuardStore {
    fn count(
        &self,
        workflow: &str,
        now: DateTime<Utc>,
        per: Duration,
    ) -> impl Future<Output = Result<u64>> + Send {
        ready(GuardStore::count(self, workflow, now, per))
    }
    fn is_released(&self, run: RunId) -> impl Future<Output = Result<bool>> + Send {
        ready(GuardStore::is_released(self, run))
    }
}

impl WriteGuard for GuardStore {
    fn admit(
        &self,
        workflow: &str,
        run: RunId,
        block: &str,
        now: DateTime<Utc>,
        per: Duration,
        allowed: Option<u64>,
    ) -> impl Future<Output = Result<Admission>> + Send {
        ready(GuardStore::admit(
            self, workflow, run, block, now, per, allowed,
        ))
    }
    fn release(&self, run: RunId, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send {
        ready(GuardStore::release(self, run, at))
    }
}

impl ReadPauses for Pauses {
    fn paused(&self, workflow: &str) -> impl Future<Output = Result<Option<Pause>>> + Send {
        ready(Pauses::get(self, workflow))
    }
    fn list(&self) -> impl Future<Output = Result<Vec<(String, Pause)>>> + Send {
        ready(Pauses::list(self))
    }
}

impl WritePauses for Pauses {
    fn pause(
        &self,
        workflow: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Pause, bool)>> + Send {
        ready(Pauses::pause(self, workflow, by, at))
    }
    fn resume(&self, workflow: &str) -> impl Future<Output = Result<Option<Pause>>> + Send {
        ready(Pauses::resume(self, workflow))
    }
}

impl ReadRetryMarks for Retries {
    fn mark(&self, run: &str) -> impl Future<Output = Result<Option<RetryMark>>> + Send {
        ready(Retries::get(self, run))
    }
}

impl WriteRetryMarks for Retries {
    fn claim(
        &self,
        run: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<RetryMark>>> + Send {
        ready(Retries::claim(self, run, by, at))
    }
    fn link(
        &self,
        run: &str,
        mark: RetryMark,
        replay: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(Retries::link(self, run, mark, replay))
    }
}

impl ReadReminders for Reminders {
    fn reminder(&self, run: RunId) -> impl Future<Output = Result<Option<Reminder>>> + Send {
        ready(Reminders::get(self, run))
    }
    fn pending(&self) -> impl Future<Output = Result<Vec<(RunId, Reminder)>>> + Send {
        ready(Reminders::pending(self))
    }
}

impl WriteReminders for Reminders {
    fn schedule(
        &self,
        run: RunId,
        reminder: &Reminder,
    ) -> impl Future<Output = Result<bool>> + Send {
        ready(Reminders::schedule(self, run, reminder))
    }
    fn claim(
        &self,
        run: RunId,
        current: &Reminder,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send {
        ready(Reminders::claim(self, run, current, now))
    }
    fn remove(&self, run: RunId) -> impl Future<Output = Result<()>> + Send {
        ready(Reminders::remove(self, run))
    }
}

/// sled: the one backend today.
impl Backend for Store {
    type History = History;
    type Records = RecordStore;
    type Queue = Queue;
    type Timers = Timers;
    type Approvals = Approvals;
    type Cancels = CancelMarkers;
    type Guard = GuardStore;
    type Pauses = Pauses;
    type Retries = Retries;
    type Reminders = Reminders;

    fn history(&self) -> Result<History> {
        History::open(self)
    }
    fn records(&self) -> Result<RecordStore> {
        RecordStore::open(self)
    }
    fn queue(&self) -> Result<Queue> {
        Queue::open(self)
    }
    fn timers(&self) -> Result<Timers> {
        Timers::open(self)
    }
    fn approvals(&self) -> Result<Approvals> {
        Approvals::open(self)
    }
    fn cancels(&self) -> Result<CancelMarkers> {
        Ok(CancelMarkers::in_data_dir(self.dir()))
    }
    fn guard(&self) -> Result<GuardStore> {
        GuardStore::open(self)
    }
    fn pauses(&self) -> Result<Pauses> {
        Pauses::open(self)
    }
    fn retries(&self) -> Result<Retries> {
        Retries::open(self)
    }
    fn reminders(&self) -> Result<Reminders> {
        Reminders::open(self)
    }
    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        Store::flush(self)
    }
    fn backup(
        &self,
        dir: &Path,
    ) -> impl Future<Output = std::result::Result<BackupReport, BackupError>> + Send {
        let (store, dir) = (self.clone(), dir.to_owned());
        async move {
            tokio::task::spawn_blocking(move || store.backup(&dir))
                .await
                .map_err(|err| {
                    BackupError::from(StoreError::Io {
                        message: format!("the backup task failed: {err}"),
                    })
                })?
        }
    }
}

/// One worker: a process sharing a store with others. The leases it holds (on runs, on queue
/// entries) name it; a fresh id per process ([`WorkerId::generate`]) means a restarted worker
/// takes its former runs back as any other worker does, once their leases pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(String);

impl WorkerId {
    /// A new id, unique to this process (a ULID).
    pub fn generate() -> WorkerId {
        WorkerId(ulid::Ulid::new().to_string())
    }
    /// An id chosen by its operator (a host name, say): unique among the store's workers.
    pub fn new(id: impl Into<String>) -> WorkerId {
        WorkerId(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`RunLeases::renew`] kept: the runs and queue entries whose leases it extended. A run or
/// entry the worker was executing and that is not here is no longer its own (its lease passed
/// and another worker claimed it): the worker stops it without writing anything more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewed {
    /// The worker's runs (queued or running), by id.
    pub runs: Vec<RunId>,
    /// The queue entries it claimed and has not acked, by id.
    pub queued: Vec<QueueId>,
}

/// Which worker executes which run, when several share a store.
///
/// A run that is `queued` or `running` belongs to the worker executing it, under a lease
/// (`lease_until`) the worker keeps renewing ([`RunLeases::renew`], every lease of the worker in
/// one step). A worker takes a run when it records it from a queue entry or resumes it
/// ([`RunLeases::take`]), and when its timer wakes it ([`RunLeases::wake_for`]: the wake and the
/// lease in one step). A worker that dies stops renewing; once its runs' leases pass they are
/// orphans, and another worker claims them ([`RunLeases::claim_orphans`]: of two claimers each
/// run goes to one) and resumes them from their last durable step. A run recorded and never
/// taken is an orphan one lease length after its creation (the worker that recorded it died
/// before taking it). Parked and finished runs are nobody's: a timer, an approval or nothing
/// continues them.
///
/// All times are passed in (`now`, `until`): the store reads no clock, so the caller's clock
/// (and a test's) decides when a lease passes.
///
/// sled keeps no leases: its data dir is one process's (its lock refuses a second), so every
/// unfinished run is that process's, resumed at its start from [`ReadHistory::unfinished`].
/// There [`RunLeases::shared`] is `false`, `take` always succeeds, `wake_for` is `wake`,
/// `renew` renews nothing (and nothing can be lost), and `claim_orphans` finds none.
pub trait RunLeases {
    /// Whether workers share this store's runs (leases are kept): `false` when one process holds
    /// it, and every unfinished run is that process's.
    fn shared(&self) -> bool;
    /// `worker` takes `run` until `until`, unless another worker's lease on it is live at `now`
    /// (a parked or finished run's lease is never live: no worker executes it, and an approval
    /// or a cancel on any worker may take it); whether it took it (`false` too when there is no
    /// such run).
    fn take(
        &self,
        run: RunId,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// [`WriteHistory::wake`], the woken run taken by `worker` until `until` in the same step (a
    /// run woken by `wake` alone has no live lease, and another worker may claim it).
    fn wake_for(
        &self,
        id: RunId,
        worker: &WorkerId,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<RunRecord>>> + Send;
    /// Extends every lease `worker` still holds (its queued and running runs, its unacked queue
    /// claims) to `until`, in one step; what it holds.
    fn renew(
        &self,
        worker: &WorkerId,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Renewed>> + Send;
    /// Claims for `worker`, until `until`, up to `limit` orphans at `now`: queued or running runs
    /// of another worker whose lease passed (or that nobody took within `until - now` of their
    /// creation), oldest first. Atomic: of two workers claiming at once, each run goes to one.
    fn claim_orphans(
        &self,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RunRecord>>> + Send;
}

/// The run queue's claims under leases, when several workers share it: a claim lasts until
/// acked ([`RunQueue::ack`]), given back, or its lease passes (renewed with the worker's runs by
/// [`RunLeases::renew`]); an entry whose lease passed is claimed again by any worker. sled claims
/// per handle, in memory, with no lease: its one process holds every claim until it stops.
pub trait QueueLeases {
    /// The oldest entry no lease holds at `now` (never claimed, given back, or its claim's lease
    /// passed), claimed by `worker` until `until`. Of two workers claiming at once, one gets it.
    fn claim_for(
        &self,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<QueueEntry>>> + Send;
    /// Gives back an entry `worker` claimed, at once; whether `worker` held it.
    fn release_for(
        &self,
        id: QueueId,
        worker: &WorkerId,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// sled: one process, every unfinished run its own (see [`RunLeases`]).
impl RunLeases for History {
    fn shared(&self) -> bool {
        false
    }
    fn take(
        &self,
        _run: RunId,
        _worker: &WorkerId,
        _now: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(true))
    }
    fn wake_for(
        &self,
        id: RunId,
        _worker: &WorkerId,
        _until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<RunRecord>>> + Send {
        ready(History::wake(self, id))
    }
    fn renew(
        &self,
        _worker: &WorkerId,
        _until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Renewed>> + Send {
        ready(Ok(Renewed::default()))
    }
    fn claim_orphans(
        &self,
        _worker: &WorkerId,
        _now: DateTime<Utc>,
        _until: DateTime<Utc>,
        _limit: usize,
    ) -> impl Future<Output = Result<Vec<RunRecord>>> + Send {
        ready(Ok(Vec::new()))
    }
}

/// sled: claims per handle, without a lease (see [`QueueLeases`]).
impl QueueLeases for Queue {
    fn claim_for(
        &self,
        _worker: &WorkerId,
        _now: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<QueueEntry>>> + Send {
        ready(Queue::claim(self))
    }
    fn release_for(
        &self,
        id: QueueId,
        _worker: &WorkerId,
    ) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(Queue::give_back(self, id)))
    }
}

/// A vendor's request budget per (vendor, credential), shared by every worker of the store: a
/// token bucket of `per_minute` tokens refilled continuously (`per_minute / 60` a second). The
/// caller asks for a token and, when told to wait, sleeps that long (on its own clock) and asks
/// again; times are passed in, the store reads no clock. PostgreSQL keeps one bucket row per
/// (vendor, credential), taken from in one `UPDATE` (`store/postgres/budget.rs`, with its
/// accuracy); the in-process budget for one process is `crate::http::LocalBudget`.
pub trait RateBudget {
    /// Takes one request's token from the bucket of (`vendor`, `credential`) at `now` (a bucket
    /// not seen yet starts full): [`Duration::ZERO`] when taken, else how long to wait before
    /// asking again, nothing taken (the time to the next token, or to the end of a pause).
    fn acquire(
        &self,
        vendor: &str,
        credential: &str,
        per_minute: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Duration>> + Send;
    /// The vendor said to wait (a 429): no worker gets a token of this bucket before `until` (a
    /// later pause wins over an earlier one). `per_minute` sizes the bucket when it is not there
    /// yet (full as of `until`).
    fn pause_until(
        &self,
        vendor: &str,
        credential: &str,
        per_minute: u32,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
}

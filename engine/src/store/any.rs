//! The backend the engine holds: a closed set (sled, PostgreSQL), dispatched by `match`.
//!
//! [`AnyStore`] is the handle every layer above the store holds, and [`AnyHistory`],
//! [`AnyRecords`], [`AnyQueue`], [`AnyTimers`], [`AnyApprovals`], [`AnyCancels`], [`AnyGuard`],
//! [`AnyPauses`], [`AnyRetries`] and [`AnyReminders`] are its parts, one enum per part. Each
//! implements the seam's traits ([`super::api`]) by a `match` on its arm, so the engine pays no
//! `dyn` and the sled arm no boxed future: its futures stay the ready ones of the sled types (the
//! dispatching future only wraps them). The PostgreSQL arm's futures (its queries) are boxed, so
//! a run's future, which awaits many of them, does not grow to their size.
//!
//! Each part also dereferences to its sled type, for the sled-only tools that read its insides
//! (the tests' `entries`, `timers().get`, `records().store()`): that is a programming error on a
//! PostgreSQL store, and panics saying so. Code that must run on both backends calls the traits
//! (or [`AnyHistory::sled`] and its siblings, which say `None` on PostgreSQL).

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::api::{
    ApprovalStore, Backend, CancelStore, DurableTimers, Evaluate, QueueLeases, ReadGuard,
    ReadHistory, ReadPauses, ReadRecords, ReadReminders, ReadRetryMarks, Renewed, Result,
    RunLeases, RunQueue, ScheduleState, TriggerTraces, WorkerId, WriteGuard, WriteHistory,
    WritePauses, WriteRecords, WriteReminders, WriteRetryMarks,
};
use super::approvals::{Approvals, Decision as ApprovalDecision};
use super::backup::{BackupError, BackupReport};
use super::cancels::CancelMarkers;
use super::guard::{Admission, GuardStore};
use super::history::{BatchReport, History, PruneReport, RunFilter, RunId, RunRecord, StepRecord};
use super::in_flight::InFlight;
use super::pauses::{Pause, Pauses};
use super::postgres::guard::PgGuard;
use super::postgres::history::PgHistory;
use super::postgres::marks::PgMarks;
use super::postgres::queue::{PgQueue, PgTimers};
use super::postgres::records::PgRecords;
use super::postgres::reminders::PgReminders;
use super::postgres::Postgres;
use super::queue::{Queue, QueueEntry, QueueId, WorkflowName};
use super::records::{RecordStore, Written};
use super::reminders::{Reminder, Reminders};
use super::retries::{Retries, RetryMark};
use super::timers::{Timer, Timers};
use super::trace::{Decision, TraceEntry};
use super::{Store, StoreError};
use crate::records::{Collection, Fields, RecordKey, Subject, Write};

/// One enum per part of the store: its two arms, `From` both, the sled arm when it is one, and a
/// `Deref` to the sled type for sled-only tools (see the module docs).
macro_rules! part {
    ($(#[$doc:meta])* $name:ident, $sled:ty, $pg:ty, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub enum $name {
            Sled($sled),
            Postgres($pg),
        }

        impl $name {
            /// The sled arm; `None` on PostgreSQL.
            pub fn sled(&self) -> Option<&$sled> {
                match self {
                    $name::Sled(part) => Some(part),
                    $name::Postgres(_) => None,
                }
            }

            /// Waits for a future of this part on a synchronous caller ([`AnyStore::wait`]).
            pub fn wait<F: Future>(&self, future: F) -> Result<F::Output> {
                wait_on(matches!(self, $name::Sled(_)), $what, future)
            }
        }

        impl From<$sled> for $name {
            fn from(part: $sled) -> $name {
                $name::Sled(part)
            }
        }

        impl From<$pg> for $name {
            fn from(part: $pg) -> $name {
                $name::Postgres(part)
            }
        }

        /// The sled type, for sled-only tools; panics on PostgreSQL (a programming error: code
        /// for both backends calls the seam's traits).
        impl std::ops::Deref for $name {
            type Target = $sled;
            fn deref(&self) -> &$sled {
                match self {
                    $name::Sled(part) => part,
                    $name::Postgres(_) => panic!(concat!(
                        "the sled-only side of the ",
                        $what,
                        " was used on a PostgreSQL store; call the store seam's traits instead"
                    )),
                }
            }
        }
    };
}

/// `$call` on whichever arm `$self` is, awaited. The PostgreSQL arm's future (a pooled
/// connection, a statement, its rows) is boxed, so the dispatching future stays as small as the
/// sled arm's ready one: a run's future awaits dozens of these and 10,000 runs may be in flight,
/// and one allocation is nothing beside a round trip to the server.
macro_rules! dispatch {
    ($self:ident, $part:ident => $call:expr) => {
        match $self {
            Self::Sled($part) => $call.await,
            Self::Postgres($part) => Box::pin($call).await,
        }
    };
}

part!(
    /// Run history ([`ReadHistory`], [`WriteHistory`]).
    AnyHistory,
    History,
    PgHistory,
    "history"
);
part!(
    /// Records, with schedule state and trigger traces ([`ReadRecords`], [`WriteRecords`],
    /// [`ScheduleState`], [`TriggerTraces`]).
    AnyRecords,
    RecordStore,
    PgRecords,
    "records"
);
part!(
    /// The run queue ([`RunQueue`]).
    AnyQueue,
    Queue,
    PgQueue,
    "queue"
);
part!(
    /// Durable timers ([`DurableTimers`]).
    AnyTimers,
    Timers,
    PgTimers,
    "timers"
);
part!(
    /// Approval decisions ([`ApprovalStore`]).
    AnyApprovals,
    Approvals,
    PgMarks,
    "approvals"
);
part!(
    /// Cancel requests ([`CancelStore`]).
    AnyCancels,
    CancelMarkers,
    PgMarks,
    "cancel markers"
);
part!(
    /// The mass-change guard ([`ReadGuard`], [`WriteGuard`]).
    AnyGuard,
    GuardStore,
    PgGuard,
    "guard"
);
part!(
    /// Paused workflows ([`ReadPauses`], [`WritePauses`]).
    AnyPauses,
    Pauses,
    PgMarks,
    "pauses"
);
part!(
    /// `retry-failed`'s marks ([`ReadRetryMarks`], [`WriteRetryMarks`]).
    AnyRetries,
    Retries,
    PgMarks,
    "retry marks"
);
part!(
    /// Approval reminders ([`ReadReminders`], [`WriteReminders`]).
    AnyReminders,
    Reminders,
    PgReminders,
    "reminders"
);

/// The store the engine holds: a sled data dir or a PostgreSQL database. Cheap to clone.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Sled(Store),
    Postgres(Postgres),
}

impl From<Store> for AnyStore {
    fn from(store: Store) -> AnyStore {
        AnyStore::Sled(store)
    }
}

impl From<&Store> for AnyStore {
    fn from(store: &Store) -> AnyStore {
        AnyStore::Sled(store.clone())
    }
}

impl From<Postgres> for AnyStore {
    fn from(store: Postgres) -> AnyStore {
        AnyStore::Postgres(store)
    }
}

impl From<&AnyStore> for AnyStore {
    fn from(store: &AnyStore) -> AnyStore {
        store.clone()
    }
}

impl AnyStore {
    /// The sled store; `None` on PostgreSQL.
    pub fn sled(&self) -> Option<&Store> {
        match self {
            AnyStore::Sled(store) => Some(store),
            AnyStore::Postgres(_) => None,
        }
    }

    /// The data dir of a sled store; `None` on PostgreSQL (which has none).
    pub fn dir(&self) -> Option<&Path> {
        self.sled().map(Store::dir)
    }

    /// Where the store is, for messages: the data dir, or the URL with its password redacted.
    pub fn location(&self) -> String {
        match self {
            AnyStore::Sled(store) => store.dir().display().to_string(),
            AnyStore::Postgres(pg) => pg.url().to_owned(),
        }
    }

    /// The run queue whose claims are `worker`'s ([`super::api::QueueLeases`]; renewed with
    /// its runs by [`RunLeases::renew`]): on sled, the plain queue (one process claims).
    pub fn queue_for(&self, worker: &WorkerId) -> Result<AnyQueue> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::queue(s)?.into(),
            AnyStore::Postgres(p) => super::postgres::queue::PgQueue::for_worker(p, worker).into(),
        })
    }

    /// Whether a write can be made durable now (`serve`'s `/readyz`), on the calling thread:
    /// sled writes and flushes its `health` tree (blocking, as before); PostgreSQL makes a
    /// synchronous commit, waited for on this thread ([`AnyStore::wait`]).
    pub fn check_writable(&self) -> Result<()> {
        match self {
            AnyStore::Sled(store) => store.check_writable(),
            AnyStore::Postgres(pg) => self.wait(pg.durable())?,
        }
    }
}

/// Both backends' parts, each in its arm.
impl Backend for AnyStore {
    type History = AnyHistory;
    type Records = AnyRecords;
    type Queue = AnyQueue;
    type Timers = AnyTimers;
    type Approvals = AnyApprovals;
    type Cancels = AnyCancels;
    type Guard = AnyGuard;
    type Pauses = AnyPauses;
    type Retries = AnyRetries;
    type Reminders = AnyReminders;

    fn history(&self) -> Result<AnyHistory> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::history(s)?.into(),
            AnyStore::Postgres(p) => Backend::history(p)?.into(),
        })
    }
    fn records(&self) -> Result<AnyRecords> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::records(s)?.into(),
            AnyStore::Postgres(p) => Backend::records(p)?.into(),
        })
    }
    fn queue(&self) -> Result<AnyQueue> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::queue(s)?.into(),
            AnyStore::Postgres(p) => Backend::queue(p)?.into(),
        })
    }
    fn timers(&self) -> Result<AnyTimers> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::timers(s)?.into(),
            AnyStore::Postgres(p) => Backend::timers(p)?.into(),
        })
    }
    fn approvals(&self) -> Result<AnyApprovals> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::approvals(s)?.into(),
            AnyStore::Postgres(p) => Backend::approvals(p)?.into(),
        })
    }
    fn cancels(&self) -> Result<AnyCancels> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::cancels(s)?.into(),
            AnyStore::Postgres(p) => AnyCancels::Postgres(Backend::cancels(p)?),
        })
    }
    fn guard(&self) -> Result<AnyGuard> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::guard(s)?.into(),
            AnyStore::Postgres(p) => Backend::guard(p)?.into(),
        })
    }
    fn pauses(&self) -> Result<AnyPauses> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::pauses(s)?.into(),
            AnyStore::Postgres(p) => AnyPauses::Postgres(Backend::pauses(p)?),
        })
    }
    fn retries(&self) -> Result<AnyRetries> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::retries(s)?.into(),
            AnyStore::Postgres(p) => AnyRetries::Postgres(Backend::retries(p)?),
        })
    }
    fn reminders(&self) -> Result<AnyReminders> {
        Ok(match self {
            AnyStore::Sled(s) => Backend::reminders(s)?.into(),
            AnyStore::Postgres(p) => Backend::reminders(p)?.into(),
        })
    }
    async fn flush(&self) -> Result<()> {
        dispatch!(self, s => Backend::flush(s))
    }
    async fn backup(&self, dir: &Path) -> std::result::Result<BackupReport, BackupError> {
        dispatch!(self, s => Backend::backup(s, dir))
    }
}

impl ReadHistory for AnyHistory {
    async fn run(&self, id: RunId) -> Result<Option<RunRecord>> {
        dispatch!(self, h => ReadHistory::run(h, id))
    }
    async fn steps(&self, id: RunId) -> Result<Vec<StepRecord>> {
        dispatch!(self, h => ReadHistory::steps(h, id))
    }
    async fn snapshot(&self, hash: &str) -> Result<Option<String>> {
        dispatch!(self, h => ReadHistory::snapshot(h, hash))
    }
    async fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        dispatch!(self, h => ReadHistory::list(h, filter))
    }
    async fn unfinished(&self) -> Result<Vec<RunRecord>> {
        dispatch!(self, h => ReadHistory::unfinished(h))
    }
}

impl WriteHistory for AnyHistory {
    async fn put_snapshot(&self, text: &str) -> Result<String> {
        dispatch!(self, h => WriteHistory::put_snapshot(h, text))
    }
    async fn put_run(&self, run: &RunRecord) -> Result<()> {
        dispatch!(self, h => WriteHistory::put_run(h, run))
    }
    async fn put_steps(&self, steps: &[&StepRecord]) -> Result<()> {
        dispatch!(self, h => WriteHistory::put_steps(h, steps))
    }
    async fn wake(&self, id: RunId) -> Result<Option<RunRecord>> {
        dispatch!(self, h => WriteHistory::wake(h, id))
    }
    async fn cancel_parked(
        &self,
        id: RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<RunRecord>> {
        dispatch!(self, h => WriteHistory::cancel_parked(h, id, reason, at))
    }
    async fn prune(&self, cutoff: DateTime<Utc>) -> Result<PruneReport> {
        dispatch!(self, h => WriteHistory::prune(h, cutoff))
    }
    async fn prune_batch(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> Result<BatchReport> {
        dispatch!(self, h => WriteHistory::prune_batch(h, cutoff, after, limit))
    }
    async fn delete_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> Result<BatchReport> {
        dispatch!(self, h => WriteHistory::delete_finished_before(h, cutoff, after, limit))
    }
    async fn durable(&self) -> Result<()> {
        dispatch!(self, h => WriteHistory::durable(h))
    }
}

impl ReadRecords for AnyRecords {
    async fn get(&self, subject: &Subject) -> Result<Option<Fields>> {
        dispatch!(self, r => ReadRecords::get(r, subject))
    }
    async fn list(&self, collection: Collection) -> Result<Vec<(RecordKey, Fields)>> {
        dispatch!(self, r => ReadRecords::list(r, collection))
    }
    async fn in_flight(&self, subject: &Subject) -> Result<Option<InFlight>> {
        dispatch!(self, r => ReadRecords::in_flight(r, subject))
    }
}

impl WriteRecords for AnyRecords {
    async fn write(
        &self,
        writes: Vec<Write>,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
        by: Option<String>,
    ) -> Result<Vec<Written>> {
        dispatch!(self, r => WriteRecords::write(r, writes, evaluate, now, by))
    }
    async fn hold(&self, subject: &Subject, holder: &str) -> Result<()> {
        dispatch!(self, r => WriteRecords::hold(r, subject, holder))
    }
    async fn release(
        &self,
        subject: &Subject,
        holder: &str,
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>> {
        dispatch!(self, r => WriteRecords::release(r, subject, holder, evaluate, now))
    }
}

impl ScheduleState for AnyRecords {
    async fn last_fired(&self, workflow: &WorkflowName) -> Result<Option<DateTime<Utc>>> {
        dispatch!(self, r => ScheduleState::last_fired(r, workflow))
    }
    async fn enqueue_tick(
        &self,
        workflow: &WorkflowName,
        tick: DateTime<Utc>,
        decisions: Vec<(Option<Subject>, Decision)>,
    ) -> Result<Vec<QueueId>> {
        dispatch!(self, r => ScheduleState::enqueue_tick(r, workflow, tick, decisions))
    }
}

impl TriggerTraces for AnyRecords {
    async fn trace(&self, subject: &Subject) -> Result<Vec<TraceEntry>> {
        dispatch!(self, r => TriggerTraces::trace(r, subject))
    }
    async fn link_run(&self, queued: QueueId, run: &str) -> Result<bool> {
        dispatch!(self, r => TriggerTraces::link_run(r, queued, run))
    }
}

impl RunQueue for AnyQueue {
    async fn pending(&self) -> Result<Vec<QueueEntry>> {
        dispatch!(self, q => RunQueue::pending(q))
    }
    async fn claim(&self) -> Result<Option<QueueEntry>> {
        dispatch!(self, q => RunQueue::claim(q))
    }
    async fn ack(&self, id: QueueId) -> Result<bool> {
        dispatch!(self, q => RunQueue::ack(q, id))
    }
    fn release(&self, id: QueueId) {
        match self {
            AnyQueue::Sled(q) => RunQueue::release(q, id),
            AnyQueue::Postgres(q) => RunQueue::release(q, id),
        }
    }
}

impl DurableTimers for AnyTimers {
    async fn set(&self, run: RunId, at: DateTime<Utc>) -> Result<()> {
        dispatch!(self, t => DurableTimers::set(t, run, at))
    }
    async fn cancel(&self, run: RunId) -> Result<bool> {
        dispatch!(self, t => DurableTimers::cancel(t, run))
    }
    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Timer>> {
        dispatch!(self, t => DurableTimers::due(t, now))
    }
    async fn next(&self) -> Result<Option<Timer>> {
        dispatch!(self, t => DurableTimers::next(t))
    }
    async fn watch(&self, run: RunId, record: &str) -> Result<()> {
        dispatch!(self, t => DurableTimers::watch(t, run, record))
    }
    async fn unwatch(&self, run: RunId, record: &str) -> Result<()> {
        dispatch!(self, t => DurableTimers::unwatch(t, run, record))
    }
    async fn watchers(&self, record: &str) -> Result<Vec<RunId>> {
        dispatch!(self, t => DurableTimers::watchers(t, record))
    }
}

impl ApprovalStore for AnyApprovals {
    async fn decision(&self, run: RunId, block: &str) -> Result<Option<ApprovalDecision>> {
        dispatch!(self, a => ApprovalStore::decision(a, run, block))
    }
    async fn decide(&self, run: RunId, block: &str, decision: ApprovalDecision) -> Result<()> {
        dispatch!(self, a => ApprovalStore::decide(a, run, block, decision))
    }
    async fn recent(&self, limit: usize) -> Result<Vec<(RunId, String, ApprovalDecision)>> {
        dispatch!(self, a => ApprovalStore::recent(a, limit))
    }
}

impl CancelStore for AnyCancels {
    async fn request(&self, run: RunId) -> Result<()> {
        dispatch!(self, c => CancelStore::request(c, run))
    }
    async fn requested(&self) -> Result<HashSet<RunId>> {
        dispatch!(self, c => CancelStore::requested(c))
    }
    async fn clear(&self, run: RunId) -> Result<()> {
        dispatch!(self, c => CancelStore::clear(c, run))
    }
}

impl ReadGuard for AnyGuard {
    async fn count(&self, workflow: &str, now: DateTime<Utc>, per: Duration) -> Result<u64> {
        dispatch!(self, g => ReadGuard::count(g, workflow, now, per))
    }
    async fn is_released(&self, run: RunId) -> Result<bool> {
        dispatch!(self, g => ReadGuard::is_released(g, run))
    }
}

impl WriteGuard for AnyGuard {
    async fn admit(
        &self,
        workflow: &str,
        run: RunId,
        block: &str,
        now: DateTime<Utc>,
        per: Duration,
        allowed: Option<u64>,
    ) -> Result<Admission> {
        dispatch!(self, g => WriteGuard::admit(g, workflow, run, block, now, per, allowed))
    }
    async fn release(&self, run: RunId, at: DateTime<Utc>) -> Result<()> {
        dispatch!(self, g => WriteGuard::release(g, run, at))
    }
}

impl ReadPauses for AnyPauses {
    async fn paused(&self, workflow: &str) -> Result<Option<Pause>> {
        dispatch!(self, p => ReadPauses::paused(p, workflow))
    }
    async fn list(&self) -> Result<Vec<(String, Pause)>> {
        dispatch!(self, p => ReadPauses::list(p))
    }
}

impl WritePauses for AnyPauses {
    async fn pause(&self, workflow: &str, by: &str, at: DateTime<Utc>) -> Result<(Pause, bool)> {
        dispatch!(self, p => WritePauses::pause(p, workflow, by, at))
    }
    async fn resume(&self, workflow: &str) -> Result<Option<Pause>> {
        dispatch!(self, p => WritePauses::resume(p, workflow))
    }
}

impl ReadRetryMarks for AnyRetries {
    async fn mark(&self, run: &str) -> Result<Option<RetryMark>> {
        dispatch!(self, r => ReadRetryMarks::mark(r, run))
    }
}

impl WriteRetryMarks for AnyRetries {
    async fn claim(&self, run: &str, by: &str, at: DateTime<Utc>) -> Result<Option<RetryMark>> {
        dispatch!(self, r => WriteRetryMarks::claim(r, run, by, at))
    }
    async fn link(&self, run: &str, mark: RetryMark, replay: &str) -> Result<()> {
        dispatch!(self, r => WriteRetryMarks::link(r, run, mark, replay))
    }
}

impl ReadReminders for AnyReminders {
    async fn reminder(&self, run: RunId) -> Result<Option<Reminder>> {
        dispatch!(self, r => ReadReminders::reminder(r, run))
    }
    async fn pending(&self) -> Result<Vec<(RunId, Reminder)>> {
        dispatch!(self, r => ReadReminders::pending(r))
    }
}

impl WriteReminders for AnyReminders {
    async fn schedule(&self, run: RunId, reminder: &Reminder) -> Result<bool> {
        dispatch!(self, r => WriteReminders::schedule(r, run, reminder))
    }
    async fn claim(&self, run: RunId, current: &Reminder, now: DateTime<Utc>) -> Result<bool> {
        dispatch!(self, r => WriteReminders::claim(r, run, current, now))
    }
    async fn remove(&self, run: RunId) -> Result<()> {
        dispatch!(self, r => WriteReminders::remove(r, run))
    }
}

impl AnyStore {
    /// Waits for a store future on a synchronous caller (a sync API such as
    /// [`crate::exec::Engine::prepare`], or a blocking thread). On sled the futures this is given
    /// are ready at once (the sled types' own methods): polled once, no runtime needed. On
    /// PostgreSQL it blocks the thread on the future, which needs the multi-threaded runtime
    /// every command and `serve` run on (a blocking thread of it, or a worker through
    /// `block_in_place`); anywhere else it is an error rather than a hang.
    pub fn wait<F: Future>(&self, future: F) -> Result<F::Output> {
        wait_on(matches!(self, AnyStore::Sled(_)), "store", future)
    }
}

/// [`AnyStore::wait`]: a sled future (`sled`) is polled once, which answers it; anything else
/// blocks the thread on a multi-threaded runtime.
fn wait_on<F: Future>(sled: bool, what: &str, future: F) -> Result<F::Output> {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    if sled {
        if let Poll::Ready(out) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            return Ok(out);
        }
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(future)))
        }
        _ => Err(StoreError::Io {
            message: format!(
                "the {what} store was waited on outside a multi-threaded async runtime (a blockyard bug)"
            ),
        }),
    }
}

impl AnyRecords {
    /// How many records `collection` holds (the guard's share of a collection).
    pub async fn collection_size(&self, collection: Collection) -> Result<u64> {
        match self {
            AnyRecords::Sled(records) => Ok(records.count(collection) as u64),
            AnyRecords::Postgres(records) => Box::pin(records.count(collection)).await,
        }
    }

    /// Notes on the trace entry that started `run` why it is held (see
    /// [`RecordStore::note_held`]).
    pub async fn note_held(
        &self,
        subject: &Subject,
        run: &str,
        queued: Option<QueueId>,
        why: &str,
    ) -> Result<bool> {
        match self {
            AnyRecords::Sled(records) => records.note_held(subject, run, queued, why),
            AnyRecords::Postgres(records) => {
                Box::pin(records.note_held(subject, run, queued, why)).await
            }
        }
    }

    /// Notes on the trace entry of `queued` why its run has not started (see
    /// [`RecordStore::note_paused`]).
    pub async fn note_paused(&self, queued: QueueId, held: &str) -> Result<bool> {
        match self {
            AnyRecords::Sled(records) => records.note_paused(queued, held),
            AnyRecords::Postgres(records) => Box::pin(records.note_paused(queued, held)).await,
        }
    }

    /// Every record of `collection`, by key: on sled read as the iteration goes, on PostgreSQL
    /// in one query.
    pub async fn scan(&self, collection: Collection) -> Result<Scan<'_>> {
        Ok(Scan(match self {
            AnyRecords::Sled(records) => ScanFrom::Sled(Box::new(records.list(collection))),
            AnyRecords::Postgres(records) => ScanFrom::Listed(
                Box::pin(ReadRecords::list(records, collection))
                    .await?
                    .into_iter(),
            ),
        }))
    }

    /// Every holder of an in-flight subject (see [`crate::store::in_flight`]).
    pub async fn holders(&self) -> Result<Vec<String>> {
        match self {
            AnyRecords::Sled(records) => records.holders(),
            AnyRecords::Postgres(records) => Box::pin(records.holders()).await,
        }
    }

    /// Drops the holders `alive` says are gone and evaluates the changes held back for subjects
    /// nothing holds any more (see [`RecordStore::reconcile`]); the run requests queued.
    pub async fn reconcile(
        &self,
        alive: &(dyn Fn(&str) -> bool + Send + Sync),
        evaluate: Arc<dyn Evaluate + Send + Sync>,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueId>> {
        match self {
            AnyRecords::Sled(records) => records.reconcile(alive, &*evaluate, now),
            AnyRecords::Postgres(records) => {
                Box::pin(records.reconcile(alive, evaluate, now)).await
            }
        }
    }

    /// The subjects with a trace whose email (or whole key) is `email` (see
    /// [`RecordStore::traced_subjects`]).
    pub async fn traced_subjects(&self, email: &str) -> Result<Vec<Subject>> {
        match self {
            AnyRecords::Sled(records) => records.traced_subjects(email),
            AnyRecords::Postgres(records) => Box::pin(records.traced_subjects(email)).await,
        }
    }
}

/// How often a loop waiting for timer changes looks again on PostgreSQL, which tells nobody
/// when a record write's transaction makes a watcher due.
const TIMER_POLL: Duration = Duration::from_secs(1);

impl AnyTimers {
    /// Every timer (sled: by run; PostgreSQL: earliest first).
    pub async fn all(&self) -> Result<Vec<Timer>> {
        match self {
            AnyTimers::Sled(timers) => timers.all(),
            AnyTimers::Postgres(timers) => {
                Box::pin(DurableTimers::due(timers, DateTime::<Utc>::MAX_UTC)).await
            }
        }
    }

    /// Resolves when a timer may have changed since this was called: sled says when its timers
    /// tree is written (however it was written: a record write's transaction moves a watcher's
    /// timer); on PostgreSQL after [`TIMER_POLL`], so a loop looks again.
    pub fn changes(&self) -> TimerChanges {
        TimerChanges(match self {
            AnyTimers::Sled(timers) => Changes::Sled(timers.subscribe()),
            AnyTimers::Postgres(_) => Changes::Poll(Box::pin(tokio::time::sleep(TIMER_POLL))),
        })
    }
}

/// See [`AnyTimers::changes`].
pub struct TimerChanges(Changes);

enum Changes {
    Sled(sled::Subscriber),
    Poll(std::pin::Pin<Box<tokio::time::Sleep>>),
}

impl Future for TimerChanges {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match &mut self.0 {
            Changes::Sled(subscriber) => std::pin::Pin::new(subscriber).poll(cx).map(drop),
            Changes::Poll(sleep) => sleep.as_mut().poll(cx),
        }
    }
}

/// The records of a collection ([`AnyRecords::scan`]).
pub struct Scan<'a>(ScanFrom<'a>);

type Listed = std::result::Result<(RecordKey, Fields), StoreError>;

enum ScanFrom<'a> {
    Sled(Box<dyn Iterator<Item = Listed> + Send + 'a>),
    Listed(std::vec::IntoIter<(RecordKey, Fields)>),
}

impl Iterator for Scan<'_> {
    type Item = Listed;
    fn next(&mut self) -> Option<Listed> {
        match &mut self.0 {
            ScanFrom::Sled(records) => records.next(),
            ScanFrom::Listed(records) => records.next().map(Ok),
        }
    }
}

impl AnyQueue {
    /// One entry, claimed or not.
    pub async fn get(&self, id: QueueId) -> Result<Option<QueueEntry>> {
        match self {
            AnyQueue::Sled(queue) => queue.get(id),
            AnyQueue::Postgres(queue) => Box::pin(queue.get(id)).await,
        }
    }

    /// How many entries the queue holds, claimed or not.
    pub async fn size(&self) -> Result<usize> {
        match self {
            AnyQueue::Sled(queue) => Ok(queue.len()),
            AnyQueue::Postgres(queue) => Box::pin(queue.len()).await,
        }
    }
}

impl AnyHistory {
    /// How many runs are parked in each of [`super::history::RunStatus::PARKED`], in that order
    /// (sled reads every run: on a blocking thread).
    pub async fn parked_counts(&self) -> Result<[(super::history::RunStatus, usize); 4]> {
        match self {
            AnyHistory::Sled(history) => {
                let history = history.clone();
                tokio::task::spawn_blocking(move || history.parked_counts())
                    .await
                    .map_err(|err| StoreError::Io {
                        message: format!("the run count task failed: {err}"),
                    })?
            }
            AnyHistory::Postgres(history) => Box::pin(history.parked_counts()).await,
        }
    }
}

impl RunLeases for AnyHistory {
    fn shared(&self) -> bool {
        match self {
            AnyHistory::Sled(h) => h.shared(),
            AnyHistory::Postgres(h) => h.shared(),
        }
    }
    async fn take(
        &self,
        run: RunId,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        dispatch!(self, h => RunLeases::take(h, run, worker, now, until))
    }
    async fn wake_for(
        &self,
        id: RunId,
        worker: &WorkerId,
        until: DateTime<Utc>,
    ) -> Result<Option<RunRecord>> {
        dispatch!(self, h => RunLeases::wake_for(h, id, worker, until))
    }
    async fn renew(&self, worker: &WorkerId, until: DateTime<Utc>) -> Result<Renewed> {
        dispatch!(self, h => RunLeases::renew(h, worker, until))
    }
    async fn claim_orphans(
        &self,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        dispatch!(self, h => RunLeases::claim_orphans(h, worker, now, until, limit))
    }
}

impl QueueLeases for AnyQueue {
    async fn claim_for(
        &self,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<QueueEntry>> {
        dispatch!(self, q => QueueLeases::claim_for(q, worker, now, until))
    }
    async fn release_for(&self, id: QueueId, worker: &WorkerId) -> Result<bool> {
        dispatch!(self, q => QueueLeases::release_for(q, id, worker))
    }
}

//! One run: the ready-set walk of the graph, settling blocks and choosing edges.
//!
//! # When the run flushes
//!
//! A settled step is kept with the run's other *unwritten* steps and written to history with them,
//! as one entry ([`History::put_steps`](crate::store::history::History::put_steps)), at the first
//! point where something needs it: a flush (below), a write about to start, the run waiting on
//! blocks in flight while one of its unwritten steps holds a vendor call's outcome (so `history
//! show` sees it), and the run's end. A live write's step is the exception: it has an entry of its
//! own (its intent, then its outcome; `block.rs`). So begin → read → end writes one steps entry,
//! not three. Written steps are made durable (one group commit, shared with every other run in
//! flight) at the first point where something *depends* on them:
//!
//! 1. **A write's request.** A live write's intent (`sending`) is flushed before it leaves
//!    (`block.rs`), and that flush covers every step and run record written before it.
//! 2. **A later block's request.** Before an API or role retrieval block sends a read, every
//!    API/role step settled so far in the run is flushed (unless already covered), so a vendor
//!    never sees a request rendered from an outcome a crash could still lose.
//! 3. **A save visible to others.** A step that saved fields onto the subject record is flushed as
//!    soon as the run learns of it, before anything else starts.
//! 4. **The run's final status reported to the caller.** The finished run record is written after
//!    the last steps and one flush covers them all before the outcome is returned.
//!
//! Nothing else waits for a flush: `begin`, `end`, skipped blocks and the `running` run record
//! carry nothing a crash could lose that matters (the graph recomputes them, and before any
//! write a flush covers them anyway); until a read's outcome is written, `history show` lists the
//! run's earlier steps only. A crash before a run's first flush loses a run that sent
//! reads only; `resume` re-runs unflushed reads. So begin → read → end costs one flush per run,
//! where it used to cost two (one after the read, one for the run record).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use petgraph::graph::NodeIndex;
use petgraph::visit::{Dfs, EdgeRef};
use petgraph::Direction;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::approval::{self, Gate};
use super::block::{self, BlockDone, Task};
use super::guard::{self, GuardGate};
use super::{context, retry, wait, Engine, ExecError, Prepared, Recording, RunOutcome};
use crate::compile::{BlockKind, EdgeKind, Wait, WaitFor};
use crate::store::api::{DurableTimers, ReadHistory, ReadRecords, WriteHistory};
use crate::store::history::{RunMode, RunRecord, RunStatus, StepRecord, StepStatus};

/// How a block settled, as later blocks and edges see it.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    pub status: StepStatus,
    pub http_status: Option<u16>,
    pub body: Value,
    pub outputs: Map<String, Value>,
    /// When the block settled (its step's `finished_at`): the conditions of the edges out of it
    /// are evaluated as of then, or later.
    pub at: DateTime<Utc>,
}

impl Settled {
    pub(crate) fn from_step(step: &StepRecord) -> Settled {
        Settled {
            at: step.finished_at.unwrap_or(step.started_at),
            status: step.status,
            http_status: step.response.as_ref().map(|r| r.status),
            body: step
                .response
                .as_ref()
                .map(|r| r.body.clone())
                .unwrap_or(Value::Null),
            outputs: step.outputs.clone(),
        }
    }

    fn context(&self) -> Value {
        json!({
            "response": self.body,
            "outputs": self.outputs,
            "status": self.http_status,
            "outcome": self.status.name(),
        })
    }

    fn succeeded(&self) -> bool {
        matches!(self.status, StepStatus::Succeeded | StepStatus::Planned)
    }
}

/// The state a resumed run continues from.
#[derive(Debug, Default)]
pub(crate) struct Resumed {
    /// Steps already recorded (kept in the outcome).
    pub steps: Vec<StepRecord>,
    pub settled: Vec<(NodeIndex, Settled)>,
    /// The subject record with every recorded save applied.
    pub record: Option<Value>,
    pub next_seq: u32,
}

/// Runs (or continues) one run. A plain fn returning the instrumented future, so the future is
/// the run's state alone, not that plus a copy of the arguments (10,000 may be in flight).
pub(crate) fn execute(
    engine: Engine,
    prepared: Arc<Prepared>,
    mut record: RunRecord,
    recording: Option<Recording>,
    persist: bool,
    resumed: Option<Resumed>,
    mut recorded: Option<oneshot::Sender<()>>,
) -> impl std::future::Future<Output = Result<RunOutcome, ExecError>> + Send {
    let span = tracing::info_span!(
        "run",
        workflow = %record.workflow,
        run_id = %record.id,
        trigger = %record.trigger,
    );
    async move {
        let inner = &engine.inner;
        let history = &inner.history;
        // A new run is this worker's once its record is written (a shared store; a resumed run
        // was taken before it continued).
        let mut unleased = persist && resumed.is_none();
        let permit = match inner.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if persist {
                    history.put_run(&record).await?;
                    if std::mem::take(&mut unleased) {
                        engine.lease_new(record.id).await?;
                    }
                    announce(&mut recorded);
                }
                inner
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|err| ExecError::Task {
                        message: err.to_string(),
                    })?
            }
        };
        let started = Instant::now();
        record.status = RunStatus::Running;
        let started_at = *record.started_at.get_or_insert_with(Utc::now);
        if persist {
            history.put_run(&record).await?;
            if unleased {
                engine.lease_new(record.id).await?;
            }
            announce(&mut recorded);
        }
        let mut resumed = resumed.unwrap_or_default();
        // One step per block in the common case: no regrowth while the run is in flight.
        let blocks = prepared.workflow.graph.node_count();
        resumed
            .steps
            .reserve_exact(blocks.saturating_sub(resumed.steps.len()));
        let mut walk = Walk {
            engine: &engine,
            prepared: &prepared,
            settled: vec![None; prepared.workflow.graph.node_count()],
            running: HashSet::new(),
            subject: resumed.record.unwrap_or_else(|| {
                record
                    .subject
                    .as_ref()
                    .map(|s| s.record.clone())
                    .unwrap_or_else(|| json!({}))
            }),
            vars: record.vars.clone(),
            // An offline replay renders `run.*` as the recorded run's.
            run_context: match recording
                .as_ref()
                .filter(|_| record.mode == RunMode::Offline)
            {
                Some(rec) => {
                    json!({"id": rec.run.to_string(), "started_at": rec.started_at.to_rfc3339()})
                }
                None => json!({"id": record.id.to_string(), "started_at": started_at.to_rfc3339()}),
            },
            as_of: None,
            steps: resumed.steps,
            unwritten: Vec::new(),
            unwritten_call: false,
            seq: resumed.next_seq,
            http: Duration::ZERO,
            durable_wait: Duration::ZERO,
            unflushed: false,
        };
        for (node, settled) in resumed.settled {
            walk.settle(node, settled);
        }
        let recording = recording.map(Arc::new);
        if record.mode == RunMode::Offline {
            walk.as_of = recording.clone();
        }
        if let Some(rec) = &recording {
            if let Some(from) = &rec.from {
                walk.reuse(&record, rec, from, persist)?;
                walk.unflushed = persist;
            }
        }
        let mut failure: Option<String> = None;
        let mut attention: Option<String> = None;
        let mut cancelled = false;
        let mut tasks: JoinSet<Result<BlockDone, ExecError>> = JoinSet::new();
        // Blocks started by this pass of the ready set, not yet running.
        let mut ready: Vec<Task> = Vec::new();
        // Blocks waiting for an administrator's approval (see `approval`).
        let mut waiting: HashSet<NodeIndex> = HashSet::new();
        // Destructive writes held by the mass-change guard, with why (see `guard`).
        let mut held: Option<String> = None;
        let mut held_blocks: HashSet<NodeIndex> = HashSet::new();
        // Blocks that failed transiently, with their next attempt's time (see `retry`).
        let mut retrying: HashMap<NodeIndex, DateTime<Utc>> = HashMap::new();
        // `wait` blocks waiting, with when each ends (see `wait`).
        let mut waits: HashMap<NodeIndex, DateTime<Utc>> = HashMap::new();
        // A resumed run may hold blocks whose next attempt has not come yet.
        let parked_blocks = walk.steps.iter().any(|s| s.status == StepStatus::Retrying);
        loop {
            if failure.is_none() && attention.is_none() && !cancelled {
                // Start (or skip) every block whose predecessors have all settled.
                let mut progress = true;
                while progress {
                    progress = false;
                    for node in prepared.workflow.graph.node_indices() {
                        if walk.settled[node.index()].is_some()
                            || walk.running.contains(&node)
                            || waiting.contains(&node)
                            || held_blocks.contains(&node)
                            || retrying.contains_key(&node)
                            || waits.contains_key(&node)
                        {
                            continue;
                        }
                        let Some(taken) = walk.entry(node) else {
                            continue;
                        };
                        if !taken {
                            let step = walk.trivial_step(&record, node, StepStatus::Skipped);
                            walk.record_settled(node, step, persist);
                            progress = true;
                            continue;
                        }
                        if inner.cancels.is_requested(record.id).await {
                            cancelled = true;
                            break;
                        }
                        // Another worker claimed it (see [`super::lease`]): nothing more is
                        // written here.
                        if engine.lease_lost(record.id) {
                            tracing::error!(run_id = %record.id, "this worker lost the run's lease to another worker; stopping it here before its next block");
                            return Err(ExecError::LeaseLost { id: record.id });
                        }
                        match &prepared.workflow.graph[node].kind {
                            BlockKind::Begin | BlockKind::End => {
                                let step = walk.trivial_step(&record, node, StepStatus::Succeeded);
                                walk.record_settled(node, step, persist);
                                progress = true;
                            }
                            BlockKind::Wait(spec) => {
                                match walk.wait(&record, node, spec, persist).await? {
                                    WaitNow::Parked(at) => {
                                        waits.insert(node, at);
                                    }
                                    WaitNow::Settled(step, replaces) => {
                                        let step = *step;
                                        if step.status == StepStatus::Failed
                                            && failure.is_none()
                                            && !prepared
                                                .workflow
                                                .graph
                                                .edges_directed(node, Direction::Outgoing)
                                                .any(|e| e.weight().kind == EdgeKind::Failure)
                                        {
                                            failure = Some(format!(
                                                "block `{}` failed: {}",
                                                step.block,
                                                step.error.as_deref().unwrap_or("no detail")
                                            ));
                                        }
                                        walk.settle_wait(node, step, replaces, persist).await?;
                                        progress = true;
                                    }
                                }
                            }
                            BlockKind::Api(_) | BlockKind::RoleRetrieval(_) => {
                                if parked_blocks {
                                    if let Some(at) = walk
                                        .retry_due_at(node)
                                        .filter(|at| *at > inner.options.clock.now())
                                    {
                                        retrying.insert(node, at);
                                        continue;
                                    }
                                }
                                // An offline replay stops where the recorded run stopped
                                // before the block's call: nothing answers a call never sent.
                                if let Some((status, note)) = walk.recorded_stop(node) {
                                    let mut step = walk.trivial_step(&record, node, status);
                                    step.finished_at = None;
                                    step.note = Some(note.clone());
                                    walk.steps.push(step);
                                    if status == StepStatus::Held {
                                        held_blocks.insert(node);
                                        held.get_or_insert(note);
                                    } else {
                                        waiting.insert(node);
                                    }
                                    continue;
                                }
                                match approval::gate(
                                    &engine,
                                    &prepared,
                                    node,
                                    record.id,
                                    record.mode,
                                    persist,
                                )
                                .await?
                                {
                                    Gate::Go => {}
                                    Gate::Wait => {
                                        let mut step = walk.trivial_step(
                                            &record,
                                            node,
                                            StepStatus::WaitingApproval,
                                        );
                                        step.finished_at = None;
                                        step.note = Some(format!(
                                            "waiting for approval: `blockyard approve {} {}`",
                                            record.id, step.block
                                        ));
                                        history.put_steps(&[&step]).await?;
                                        walk.steps.push(step);
                                        waiting.insert(node);
                                        continue;
                                    }
                                    Gate::Rejected => {
                                        let mut step =
                                            walk.trivial_step(&record, node, StepStatus::Failed);
                                        step.error = Some(approval::REJECTED.to_owned());
                                        if failure.is_none()
                                            && !prepared
                                                .workflow
                                                .graph
                                                .edges_directed(node, Direction::Outgoing)
                                                .any(|e| e.weight().kind == EdgeKind::Failure)
                                        {
                                            failure = Some(format!(
                                                "block `{}` failed: {}",
                                                step.block,
                                                approval::REJECTED
                                            ));
                                        }
                                        walk.record_settled(node, step, persist);
                                        progress = true;
                                        continue;
                                    }
                                }
                                if let GuardGate::Hold(why) =
                                    guard::gate(&engine, &prepared, node, &record, persist).await?
                                {
                                    let mut step =
                                        walk.trivial_step(&record, node, StepStatus::Held);
                                    step.finished_at = None;
                                    step.note = Some(why.clone());
                                    walk.write_unwritten().await?;
                                    history.put_steps(&[&step]).await?;
                                    walk.steps.push(step);
                                    held_blocks.insert(node);
                                    held.get_or_insert(why);
                                    continue;
                                }
                                // Rule 2: a read is about to leave; a write flushes its own intent
                                // (covering these steps too), offline replay sends nothing.
                                if walk.unflushed
                                    && record.mode != RunMode::Offline
                                    && !prepared.writes[node.index()]
                                {
                                    walk.flush().await?;
                                } else if prepared.writes[node.index()] {
                                    // Its intent's flush covers the steps before it.
                                    walk.write_unwritten().await?;
                                }
                                let task = Task {
                                    engine: engine.clone(),
                                    prepared: prepared.clone(),
                                    node,
                                    run: record.id,
                                    seq: walk.next_seq(),
                                    mode: record.mode,
                                    context: walk.context(),
                                    subject: record
                                        .subject
                                        .as_ref()
                                        .map(|s| (s.collection.clone(), s.key.clone())),
                                    persist,
                                    recording: recording.clone(),
                                };
                                walk.running.insert(node);
                                ready.push(task);
                            }
                        }
                    }
                    if cancelled {
                        break;
                    }
                }
            }
            if walk.unwritten_call && !(ready.is_empty() && tasks.is_empty()) {
                // A block is about to be waited on: a settled call's outcome is shown meanwhile.
                walk.write_unwritten().await?;
            }
            // A block that is the only one in flight runs in the run's own task (no spawn, no
            // wake-up across threads); blocks that can run together each get a task.
            let mut done = if ready.len() == 1 && tasks.is_empty() {
                let task = ready.pop().expect("one ready block");
                Box::pin(block::execute(task)).await?
            } else {
                for task in ready.drain(..) {
                    tasks.spawn(block::execute(task).in_current_span());
                }
                let Some(joined) = tasks.join_next().await else {
                    break;
                };
                joined.map_err(|err| ExecError::Task {
                    message: err.to_string(),
                })??
            };
            walk.running.remove(&done.node);
            walk.http += done.http;
            walk.durable_wait += done.durable_wait;
            if persist {
                walk.unflushed = true;
            }
            if let Some(message) = done.attention.take() {
                attention = Some(message);
            }
            if let Some(transient) = done.transient.take() {
                if let Some(at) = walk.retry_later(&mut done, transient.vendor_wait).await? {
                    // Not settled: parked until `at` (its successors wait with it).
                    if persist && !done.written {
                        walk.unwritten.push(walk.steps.len());
                        walk.unwritten_call = true;
                    }
                    walk.steps.push(done.step);
                    retrying.insert(done.node, at);
                    continue;
                }
                // It gave up: settled `failed`, as any failure.
            }
            for (k, v) in &done.step.saved {
                if let Value::Object(fields) = &mut walk.subject {
                    fields.insert(k.clone(), v.clone());
                }
            }
            if done.settled.status == StepStatus::Failed
                && !prepared
                    .workflow
                    .graph
                    .edges_directed(done.node, Direction::Outgoing)
                    .any(|e| e.weight().kind == EdgeKind::Failure)
                && failure.is_none()
            {
                failure = Some(format!(
                    "block `{}` failed: {}",
                    done.step.block,
                    done.step.error.as_deref().unwrap_or("no detail")
                ));
            }
            if persist && !done.written {
                walk.unwritten.push(walk.steps.len());
                walk.unwritten_call = true;
            }
            let saved = persist && record.mode == RunMode::Live && !done.step.saved.is_empty();
            walk.steps.push(done.step);
            walk.settle(done.node, done.settled);
            if saved {
                walk.flush().await?; // rule 3: the flush writes the step that saved, and covers it
            }
        }
        drop(permit);
        let end = walk.settled[prepared.workflow.end.index()].as_ref();
        let (status, error) = if let Some(message) = attention {
            (RunStatus::NeedsAttention, Some(message))
        } else if cancelled {
            (
                RunStatus::Cancelled,
                Some("cancelled between steps".to_owned()),
            )
        } else if let Some(message) = failure {
            (RunStatus::Failed, Some(message))
        } else if end.is_some_and(Settled::succeeded) {
            // A block that failed and whose `on_failure` edge was taken (the run went on):
            // the run is not reported as if nothing failed.
            let handled: Vec<String> = walk
                .settled
                .iter()
                .enumerate()
                .filter(|(_, s)| s.as_ref().is_some_and(|s| s.status == StepStatus::Failed))
                .map(|(i, _)| {
                    let block = prepared.workflow.graph[NodeIndex::new(i)].id.as_str();
                    let error = walk
                        .steps
                        .iter()
                        .rev()
                        .find(|s| s.block == block)
                        .and_then(|s| s.error.as_deref())
                        .unwrap_or("no detail");
                    format!("block `{block}` failed: {error}")
                })
                .collect();
            if handled.is_empty() {
                (RunStatus::Succeeded, None)
            } else {
                (
                    RunStatus::CompletedWithFailures,
                    Some(format!(
                        "{}; the run went on through the `on_failure` path",
                        handled.join("; ")
                    )),
                )
            }
        } else if !retrying.is_empty() || !waits.is_empty() {
            // Parked until the earliest next attempt or end of a wait; the run record's
            // `wake_at` sets its timer.
            let retry = retrying.iter().min_by_key(|(_, at)| **at);
            let wait = waits.iter().min_by_key(|(_, at)| **at);
            match (retry, wait) {
                (Some((node, at)), wait) if wait.is_none_or(|(_, w)| at <= w) => {
                    record.wake_at = Some(*at);
                    (RunStatus::Retrying, Some(walk.retrying_error(*node)))
                }
                (_, Some((node, at))) => {
                    record.wake_at = Some(*at);
                    (RunStatus::Waiting, Some(walk.waiting_reason(*node, *at)))
                }
                (Some((node, at)), None) => {
                    record.wake_at = Some(*at);
                    (RunStatus::Retrying, Some(walk.retrying_error(*node)))
                }
                (None, None) => unreachable!("one of them is not empty"),
            }
        } else if let Some(why) = held {
            (RunStatus::Held, Some(why))
        } else if !waiting.is_empty() {
            (RunStatus::WaitingApproval, None)
        } else {
            (RunStatus::Failed, Some("no path reached `end`".to_owned()))
        };
        record.status = status;
        record.error = error;
        if !matches!(status, RunStatus::Retrying | RunStatus::Waiting) {
            record.wake_at = None;
        }
        if status.is_finished() {
            record.finished_at = Some(Utc::now());
        }
        if persist {
            // Rule 4: one flush for the run record and every step not flushed yet.
            walk.write_unwritten().await?;
            // A held run's note in its subject's trigger trace goes first: once the run record
            // says `held`, a reader of the trace must find the note (the same flush makes both
            // durable).
            if record.status == RunStatus::Held {
                guard::trace_held(&engine, &record).await;
            }
            history.put_run(&record).await?;
            // An approval reminder (`notify.remind_approvers_after`), durable with the record.
            if record.status == RunStatus::WaitingApproval && record.mode == RunMode::Live {
                let notify = prepared.workflow.notify.as_ref();
                if let Some(notify) = notify.or(inner.options.notify.as_ref()) {
                    // Every step of the run, also those of the walks before a resume.
                    let steps = history.steps(record.id).await?;
                    engine.schedule_reminder(notify, &record, &steps).await?;
                }
            }
            walk.flush().await?;
            if record.wake_at.is_some() {
                inner.parked.notify_one();
            }
        }
        // `notify:` (live runs only), once the final record is durable.
        let notify = prepared.workflow.notify.as_ref();
        if let Some(notify) = notify.or(inner.options.notify.as_ref()) {
            if persist && record.mode == RunMode::Live && notify.wants(record.status) {
                let (client, templates) = (&inner.client, &inner.templates);
                Box::pin(notify.send(client, templates, &record, &walk.subject, &walk.vars)).await;
            }
        }
        inner.cancels.clear(record.id).await;
        tracing::debug!(status = %record.status, "run finished");
        walk.steps.sort_by_key(|s| s.seq);
        Ok(RunOutcome {
            run: record,
            steps: walk.steps,
            duration: started.elapsed(),
            http: walk.http,
            durable_wait: walk.durable_wait,
        })
    }
    .instrument(span)
}

/// What a `wait` block does when the walk reaches it.
enum WaitNow {
    /// It ended (or failed): its step, and the index in the run's steps of the `waiting` step
    /// it replaces (same sequence number), if it had one.
    Settled(Box<StepRecord>, Option<usize>),
    /// It waits until then.
    Parked(DateTime<Utc>),
}

/// Tells whoever submitted the run that its record is in the history (the first time only).
fn announce(recorded: &mut Option<oneshot::Sender<()>>) {
    if let Some(sender) = recorded.take() {
        let _ = sender.send(());
    }
}

struct Walk<'a> {
    engine: &'a Engine,
    prepared: &'a Prepared,
    settled: Vec<Option<Settled>>,
    running: HashSet<NodeIndex>,
    /// The subject record, saves applied.
    subject: Value,
    vars: Map<String, Value>,
    run_context: Value,
    /// An offline replay's recording, whose instants the replay's steps take (see `as_of`).
    as_of: Option<Arc<Recording>>,
    steps: Vec<StepRecord>,
    /// Indices into `steps` of the steps not written to history yet.
    unwritten: Vec<usize>,
    /// One of the unwritten steps is an API or role retrieval block's.
    unwritten_call: bool,
    seq: u32,
    http: Duration,
    durable_wait: Duration,
    /// API/role steps were written since the run's last flush.
    unflushed: bool,
}

impl Walk<'_> {
    /// Makes every history write so far durable (group commit), timing the wait.
    async fn flush(&mut self) -> Result<(), ExecError> {
        self.write_unwritten().await?;
        let wait = Instant::now();
        // Boxed: a run's future keeps no room for the flush while it waits on anything else.
        Box::pin(self.engine.inner.history.durable()).await?;
        self.durable_wait += wait.elapsed();
        self.unflushed = false;
        Ok(())
    }

    /// Writes the unwritten steps to history, as one entry.
    async fn write_unwritten(&mut self) -> Result<(), ExecError> {
        if !self.unwritten.is_empty() {
            let steps: Vec<&StepRecord> = self.unwritten.iter().map(|&i| &self.steps[i]).collect();
            self.engine.inner.history.put_steps(&steps).await?;
            self.unwritten.clear();
        }
        self.unwritten_call = false;
        Ok(())
    }

    /// In an offline replay, where the recorded run stopped before `node`'s call: its recorded
    /// step was `waiting_approval` (and the block still needs approval) or `held` by the
    /// mass-change guard (and the block is still a destructive write). The status and note of the
    /// replayed step, which stops there too.
    fn recorded_stop(&self, node: NodeIndex) -> Option<(StepStatus, String)> {
        let recording = self.as_of.as_ref()?;
        let block = &self.prepared.workflow.graph[node];
        let step = recording.steps.get(block.id.as_str())?;
        match step.status {
            StepStatus::WaitingApproval => {
                let required = match &block.kind {
                    BlockKind::Api(call) => call.approval_required,
                    BlockKind::RoleRetrieval(role) => role.call.approval_required,
                    BlockKind::Begin | BlockKind::Wait(_) | BlockKind::End => false,
                };
                required.then(|| {
                    (
                        StepStatus::WaitingApproval,
                        format!(
                            "the recorded run waits for approval here (`blockyard approve {} {}`); an offline replay stops here too",
                            recording.run, block.id
                        ),
                    )
                })
            }
            StepStatus::Held if self.prepared.destructive[node.index()] => Some((
                StepStatus::Held,
                step.note.clone().unwrap_or_else(|| {
                    "held by the mass-change guard in the recorded run".to_owned()
                }),
            )),
            _ => None,
        }
    }

    /// The last step of `node`'s block, if it is `retrying`: the time of its next attempt.
    fn retry_due_at(&self, node: NodeIndex) -> Option<DateTime<Utc>> {
        let block = self.prepared.workflow.graph[node].id.as_str();
        let last = self.steps.iter().rev().find(|s| s.block == block)?;
        (last.status == StepStatus::Retrying)
            .then(|| last.retry.and_then(|r| r.next_at))
            .flatten()
    }

    /// Schedules the next attempt of a block whose call failed transiently (its step says
    /// `retrying`): the attempt number and first failure come from the block's previous
    /// transient failure. Returns the next attempt's time; `None` when the block gives up, its step
    /// then `failed` (the run goes on as for any failure).
    async fn retry_later(
        &mut self,
        done: &mut BlockDone,
        vendor_wait: Option<Duration>,
    ) -> Result<Option<DateTime<Utc>>, ExecError> {
        let inner = &self.engine.inner;
        let block = &self.prepared.workflow.graph[done.node];
        let give_up_after = match &block.kind {
            BlockKind::Api(call) => call.retry.give_up_after,
            BlockKind::RoleRetrieval(role) => role.call.retry.give_up_after,
            BlockKind::Begin | BlockKind::Wait(_) | BlockKind::End => None,
        }
        .unwrap_or(retry::DEFAULT_GIVE_UP_AFTER);
        // The block's last transient failure (a step after it may be a write's `sending` intent
        // that a crash interrupted: the attempts still count on).
        let previous = self
            .steps
            .iter()
            .rev()
            .filter(|s| s.block == done.step.block)
            .find_map(|s| s.retry);
        // An offline replay answers with the recorded transient failure: it is at the recorded
        // attempt, retried when the recording says.
        let recorded = self
            .as_of
            .as_ref()
            .and_then(|r| r.steps.get(&done.step.block))
            .and_then(|s| s.retry)
            .filter(|r| r.next_at.is_some());
        let step_retry = match recorded {
            Some(recorded) => recorded,
            None => retry::step_retry(
                &inner.options.durable_retry,
                give_up_after,
                previous,
                inner.options.clock.now(),
                vendor_wait,
            ),
        };
        let step = &mut done.step;
        step.retry = Some(step_retry);
        if step_retry.next_at.is_none() {
            step.status = StepStatus::Failed;
            let attempts = match step_retry.attempt {
                1 => "1 attempt".to_owned(),
                n => format!("{n} attempts"),
            };
            step.error = Some(format!(
                "gave up after {} of transient failures ({attempts}, `retry.give_up_after`); the last: {}",
                retry::spoken(give_up_after),
                step.error.as_deref().unwrap_or("no detail")
            ));
            done.settled.status = StepStatus::Failed;
        }
        if done.written {
            // A live write's step has its own entry: it is written again with its retry.
            inner.history.put_steps(&[step]).await?;
        }
        Ok(step_retry.next_at)
    }

    /// Judges the `wait` block `node`: ended (elapsed, woken, or failed to start), or still
    /// waiting until when. A live wait reads the subject record as stored now (and keeps it: the
    /// blocks after a wait see the record as it is when the wait ends); a wait with `wake_when`
    /// watches the record first, so a write of it after this read wakes the run again.
    async fn wait(
        &mut self,
        record: &RunRecord,
        node: NodeIndex,
        spec: &Wait,
        persist: bool,
    ) -> Result<WaitNow, ExecError> {
        let inner = &self.engine.inner;
        let block = self.prepared.workflow.graph[node].id.as_str();
        let now = inner.options.clock.now();
        // The block's `waiting` step, when the run parked in it before.
        let previous = self
            .steps
            .iter()
            .rposition(|s| s.block == block)
            .filter(|&i| self.steps[i].status == StepStatus::Waiting);
        let mut step = self.trivial_step(record, node, StepStatus::Succeeded);
        if record.mode == RunMode::Offline {
            // Reproduces the recorded outcome; nothing is waited for.
            let recorded = self
                .as_of
                .as_ref()
                .and_then(|r| r.steps.get(block))
                .cloned();
            match recorded {
                Some(rec) if rec.status == StepStatus::Failed => {
                    step.status = StepStatus::Failed;
                    step.error = rec.error;
                }
                Some(rec) if rec.status != StepStatus::Waiting => {
                    // The record as the recorded wait found it, for the blocks after it.
                    if let Value::Object(fields) = &mut self.subject {
                        for (k, v) in &rec.saved {
                            fields.insert(k.clone(), v.clone());
                        }
                    }
                    step.saved = rec.saved.clone();
                    let outcome = rec.outputs.get("outcome").and_then(Value::as_str);
                    step.note = Some(format!(
                        "the recorded wait ended `{}`; an offline replay does not wait",
                        outcome.unwrap_or(wait::ELAPSED)
                    ));
                    step.outputs = rec.outputs;
                }
                Some(rec) => {
                    // The recorded run waits here: the replay stops here too.
                    let until = rec
                        .outputs
                        .get("until")
                        .and_then(Value::as_str)
                        .and_then(crate::rules::parse_instant)
                        .unwrap_or(step.started_at);
                    step.status = StepStatus::Waiting;
                    step.finished_at = None;
                    step.note = Some(format!(
                        "the recorded run waits here until {}; an offline replay stops here too",
                        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ));
                    step.outputs = rec.outputs;
                    self.steps.push(step);
                    return Ok(WaitNow::Parked(until));
                }
                None => {
                    step.status = StepStatus::Planned;
                    step.outputs
                        .insert("outcome".to_owned(), wait::ELAPSED.into());
                    step.note = Some(
                        "the recorded run did not reach this wait; replayed as if it elapsed, without waiting"
                            .to_owned(),
                    );
                }
            }
            return Ok(WaitNow::Settled(Box::new(step), None));
        }
        let until = match previous {
            Some(i) => self.steps[i]
                .outputs
                .get("until")
                .and_then(Value::as_str)
                .and_then(crate::rules::parse_instant),
            None => None,
        };
        let until = match (until, &spec.how) {
            (Some(until), _) => until,
            (None, WaitFor::For(d)) => {
                now + chrono::TimeDelta::from_std(*d).unwrap_or(chrono::TimeDelta::MAX)
            }
            (None, WaitFor::Until(template)) => {
                let context = handlebars::Context::from(self.context());
                let rendered = crate::as_of::at(step.started_at, || {
                    inner.templates.render(template, &context)
                })
                .map_err(|err| err.to_string())
                .and_then(|text| wait::until_instant(&text, self.prepared.workflow.timezone));
                match rendered {
                    Ok(until) => until,
                    Err(message) => {
                        step.status = StepStatus::Failed;
                        step.error = Some(format!("cannot start the wait: {message}"));
                        return Ok(WaitNow::Settled(Box::new(step), None));
                    }
                }
            }
        };
        // Whole seconds (rounded up: never earlier), as history shows it and a resumed wait
        // reads it back.
        let until = match until.timestamp_subsec_nanos() {
            0 => until,
            nanos => until + chrono::TimeDelta::nanoseconds(1_000_000_000 - i64::from(nanos)),
        };
        let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        step.outputs
            .insert("until".to_owned(), until_text.clone().into());
        if record.mode == RunMode::Live {
            if let Some(subject) = &record.subject {
                if spec.wake_when.is_some() && persist {
                    inner.timers.watch(record.id, &subject.record_key()).await?;
                }
                let current = match super::records_subject(subject) {
                    Some(s) => self.engine.records().get(&s).await?,
                    None => None,
                };
                if let Some(current) = current {
                    // What others wrote meanwhile: kept on the step (`saved`), so a resume and
                    // an offline replay see the record as the wait did.
                    for (k, v) in &current {
                        if self.subject.get(k) != Some(v) {
                            step.saved.insert(k.clone(), v.clone());
                        }
                    }
                    self.subject = Value::Object(current);
                }
            }
        }
        let woken = spec
            .wake_when
            .as_ref()
            .is_some_and(|w| wait::holds(w, &self.subject, &self.vars, now));
        match previous {
            Some(i) => {
                step.started_at = self.steps[i].started_at;
                step.seq = self.steps[i].seq;
                self.seq -= 1; // the step replaces the `waiting` one: no new sequence number
            }
            // Timed by the engine's clock, as its end is.
            None => step.started_at = now,
        }
        step.finished_at = Some(now);
        if woken {
            step.outputs
                .insert("outcome".to_owned(), wait::WOKEN.into());
            step.note = Some(format!(
                "woken: `wake_when` held on the record at {}, before the wait's end ({until_text})",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
            return Ok(WaitNow::Settled(Box::new(step), previous));
        }
        if until <= now {
            step.outputs
                .insert("outcome".to_owned(), wait::ELAPSED.into());
            step.note = Some(match previous {
                Some(_) => format!("elapsed: waited until {until_text}"),
                None => format!(
                    "elapsed at once: the wait's end ({until_text}) had already passed when it started"
                ),
            });
            return Ok(WaitNow::Settled(Box::new(step), previous));
        }
        if record.mode == RunMode::DryRun {
            step.status = StepStatus::Planned;
            step.outputs
                .insert("outcome".to_owned(), wait::ELAPSED.into());
            step.note = Some(format!(
                "would wait until {until_text}{}; a dry run does not wait (later blocks are shown as if it elapsed)",
                if spec.wake_when.is_some() { ", or until `wake_when` holds" } else { "" }
            ));
            return Ok(WaitNow::Settled(Box::new(step), None));
        }
        if previous.is_none() {
            step.saved.clear(); // judged again when the wait ends
            step.status = StepStatus::Waiting;
            step.finished_at = None;
            step.note = Some(self.waiting_reason(node, until));
            if persist {
                self.write_unwritten().await?;
                inner.history.put_steps(&[&step]).await?;
            }
            self.steps.push(step);
        }
        Ok(WaitNow::Parked(until))
    }

    /// Settles a `wait` block: a step that replaces its `waiting` step is written over it (its own
    /// entry, same sequence number); any other is kept like a begin's.
    async fn settle_wait(
        &mut self,
        node: NodeIndex,
        step: StepRecord,
        replaces: Option<usize>,
        persist: bool,
    ) -> Result<(), ExecError> {
        match replaces {
            None => self.record_settled(node, step, persist),
            Some(i) => {
                if persist {
                    self.engine.inner.history.put_steps(&[&step]).await?;
                    self.unflushed = true;
                }
                self.settle(node, Settled::from_step(&step));
                self.steps[i] = step;
            }
        }
        Ok(())
    }

    /// What a run parked in `node`'s wait waits for (its `error` while `waiting`).
    fn waiting_reason(&self, node: NodeIndex, until: DateTime<Utc>) -> String {
        let block = &self.prepared.workflow.graph[node];
        let until = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let wakes = match &block.kind {
            BlockKind::Wait(w) if w.wake_when.is_some() => {
                ", or until a write of the record makes `wake_when` hold"
            }
            _ => "",
        };
        format!("block `{}` waits until {until}{wakes}", block.id)
    }

    /// The run's error while it waits to retry `node`'s block.
    fn retrying_error(&self, node: NodeIndex) -> String {
        let block = self.prepared.workflow.graph[node].id.as_str();
        let step = self.steps.iter().rev().find(|s| s.block == block);
        let attempt = step.and_then(|s| s.retry).map_or(1, |r| r.attempt);
        let error = step.and_then(|s| s.error.as_deref()).unwrap_or("no detail");
        format!("block `{block}` failed transiently (attempt {attempt}): {error}")
    }

    fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq += 1;
        seq
    }

    fn settle(&mut self, node: NodeIndex, settled: Settled) {
        self.settled[node.index()] = Some(settled);
    }

    /// Settles `node` with a step the run loop made itself (begin, end, skipped, rejected, or
    /// reused by a replay): kept for the outcome and, when the run persists, written with the
    /// run's next entry.
    fn record_settled(&mut self, node: NodeIndex, step: StepRecord, persist: bool) {
        if persist {
            self.unwritten.push(self.steps.len());
        }
        self.settle(node, Settled::from_step(&step));
        self.steps.push(step);
    }

    /// The template context now: `blocks` holds every settled block that was not skipped. It is
    /// built when a block starts or an edge condition needs it, not as blocks settle, so a
    /// response no later block reads is never copied.
    fn context(&self) -> Value {
        let graph = &self.prepared.workflow.graph;
        let blocks: Map<String, Value> = self
            .settled
            .iter()
            .enumerate()
            .filter_map(|(index, settled)| {
                let settled = settled.as_ref()?;
                (settled.status != StepStatus::Skipped).then(|| {
                    (
                        graph[NodeIndex::new(index)].id.to_string(),
                        settled.context(),
                    )
                })
            })
            .collect();
        context::build(&self.subject, &self.vars, blocks, &self.run_context)
    }

    /// `None` while a predecessor has not settled; else whether an edge into `node` was taken.
    /// Conditions are evaluated as of when the last predecessor settled (see [`crate::as_of`]).
    fn entry(&self, node: NodeIndex) -> Option<bool> {
        let graph = &self.prepared.workflow.graph;
        let mut ready: Option<DateTime<Utc>> = None;
        for edge in graph.edges_directed(node, Direction::Incoming) {
            ready = ready.max(Some(self.settled[edge.source().index()].as_ref()?.at));
        }
        let Some(ready) = ready else {
            return Some(true); // `begin`
        };
        let mut taken = false;
        let mut context: Option<Value> = None;
        for edge in graph.edges_directed(node, Direction::Incoming) {
            let source = self.settled[edge.source().index()].as_ref()?;
            if taken {
                continue;
            }
            let follows = match edge.weight().kind {
                EdgeKind::Next => source.succeeded(),
                EdgeKind::Failure => source.status == StepStatus::Failed,
            };
            if !follows {
                continue;
            }
            taken = match &edge.weight().when {
                None => true,
                Some(condition) => {
                    let context = context.get_or_insert_with(|| self.context());
                    match crate::as_of::at(ready, || context::eval(condition, context)) {
                        Ok(value) => value,
                        Err(message) => {
                            tracing::warn!(
                                block = %graph[node].id,
                                condition = condition.source(),
                                error = %message,
                                "edge condition failed; the edge is not taken"
                            );
                            false
                        }
                    }
                }
            };
        }
        Some(taken)
    }

    fn trivial_step(
        &mut self,
        record: &RunRecord,
        node: NodeIndex,
        status: StepStatus,
    ) -> StepRecord {
        let block = &self.prepared.workflow.graph[node];
        let (started, finished) = match &self.as_of {
            Some(recording) => recording.instants(block.id.as_str()),
            None => {
                let now = Utc::now();
                (now, now)
            }
        };
        let seq = self.next_seq();
        StepRecord {
            finished_at: Some(finished),
            ..StepRecord::new(
                record.id,
                seq,
                block.id.as_str(),
                block.kind.name(),
                status,
                started,
            )
        }
    }

    /// Replay `--from`: settles every block that is neither `from` nor after it with the
    /// recorded outcome, applying its recorded saves to the (in-memory) subject.
    fn reuse(
        &mut self,
        record: &RunRecord,
        recording: &Recording,
        from: &str,
        persist: bool,
    ) -> Result<(), ExecError> {
        let graph = &self.prepared.workflow.graph;
        let start = self
            .prepared
            .node(from)
            .ok_or_else(|| ExecError::UnknownBlock {
                workflow: self.prepared.workflow.name.clone(),
                block: from.to_owned(),
            })?;
        let mut after = HashSet::new();
        let mut dfs = Dfs::new(graph, start);
        while let Some(node) = dfs.next(graph) {
            after.insert(node);
        }
        let mut reused: Vec<(NodeIndex, StepRecord)> = graph
            .node_indices()
            .filter(|n| !after.contains(n))
            .filter_map(|n| Some((n, recording.steps.get(graph[n].id.as_str())?.clone())))
            .collect();
        reused.sort_by_key(|(_, s)| s.seq);
        for (node, mut step) in reused {
            let original = step.run;
            step.run = record.id;
            step.seq = self.next_seq();
            step.note = Some(format!("reused from run {original}"));
            for (k, v) in &step.saved {
                if let Value::Object(fields) = &mut self.subject {
                    fields.insert(k.clone(), v.clone());
                }
            }
            self.record_settled(node, step, persist);
        }
        // A block before `from` that the recording never ran was skipped there.
        let skipped: Vec<NodeIndex> = graph
            .node_indices()
            .filter(|n| !after.contains(n) && self.settled[n.index()].is_none())
            .collect();
        for node in skipped {
            let step = self.trivial_step(record, node, StepStatus::Skipped);
            self.record_settled(node, step, persist);
        }
        Ok(())
    }
}

//! The executor: runs a compiled workflow on tokio, recording every step durably.
//!
//! [`Engine`] is shared by every run of a process (cheap to clone): the store it runs on
//! ([`AnyStore`]: the sled data dir or PostgreSQL, every part called through the store seam's
//! traits, [`crate::store::api`]), its history, the records with the triggers record writes
//! evaluate ([`Engine::set_triggers`]), the vendor
//! [`Client`], a semaphore bounding the runs in flight, the cancel requests, the approval
//! decisions ([`approval`]) and the mass-change guard, which holds runs before a destructive write
//! past a workflow's limit ([`guard`]). A run asked for by hand is first [`Engine::admit`]ted: a workflow with
//! `records:` needs a subject, and the subject must match the begin block's conditions unless
//! forced. A workflow is [`Engine::prepare`]d once (compiled, its text stored as a snapshot by
//! content hash) and run any number of times with [`Engine::run`] (await the outcome) or
//! [`Engine::submit`] (spawn it). [`Engine::resume_unfinished`] finishes the runs a crash left;
//! [`Engine::wake_due`] and [`Engine::resume_due`] continue the `retrying` runs whose next
//! attempt has come (`serve`'s timer loop, `blockyard resume`). On a store several workers share
//! (PostgreSQL), every run the engine executes is its worker's under a lease ([`lease`]): another
//! worker's live run is neither continued nor cancelled here, and a run whose lease another
//! worker claimed stops before its next block.
//!
//! Runs of one subject are ordered: a live run of a workflow for a subject waits its turn behind
//! the runs of that workflow for that subject submitted before it ([`turns`]), and holds the
//! subject record from its creation to its final status, so a record change made meanwhile is
//! evaluated by the triggers after it ([`crate::store::in_flight`]).
//!
//! # Semantics
//!
//! The graph is walked as a ready set ([`run`]): a block starts when every predecessor has settled
//! and at least one edge into it was taken (the source's outcome matches the edge kind, `next` for
//! success and `on_failure` for failure, and the edge's `when:` holds); when every predecessor has
//! settled and no edge was taken, the block is skipped, which settles it and propagates. Blocks
//! whose predecessors are settled run concurrently. A failed block with no `on_failure` edge fails
//! the run: no new block starts, the ones in flight finish, and the run is `failed`.
//!
//! Time is read from recorded instants ([`crate::as_of`]): a block's templates see `now` as the
//! instant it started (its step's `started_at`), an edge's condition the instant its target became
//! ready (the latest `finished_at` before it). An offline replay takes the recorded run's instants
//! and id ([`Recording`]), so it renders and decides what the original did.
//!
//! A block whose call fails *transiently* (429, 5xx, 408, timeouts, connection errors, after the
//! client's in-call retries) does not fail and does not settle: its step is `retrying` and it is
//! tried again later ([`retry`]). Independent branches go on; when nothing else can run, the run
//! parks as `retrying`, its record's `wake_at` the earliest next attempt and a timer for it in the
//! store, and is continued when that time comes, until the block's `retry.give_up_after` has
//! passed (then it fails like any block). A write whose delivery is uncertain is checked with its
//! preset's probe at once, never sent again blind.
//!
//! A `wait` block ([`wait`]) does not settle until its time comes or its `wake_when` holds on
//! the subject record; when nothing else can run, the run parks as `waiting` the same way (its
//! `wake_at` the wait's end), watching the record so a write of it wakes the run to judge
//! `wake_when` again.
//!
//! # Durability
//!
//! Every block's step is written to history (a run's steps settled together as one entry, see
//! [`run`]) and made durable (group commit, see
//! [`crate::store::history`]) before anything that depends on it starts: a later block's request,
//! a save others can see, the run's final status (the precise rules are in [`run`]). A write is recorded as
//! `sending` (its rendered request) and made durable *before* it is sent, then overwritten with
//! its outcome; a crash therefore leaves exactly the writes whose outcome is unknown, which
//! [`resume`] checks with the preset's probe instead of sending them blindly (a write answered
//! 5xx or timed out is checked the same way at once, see [`retry`]). A parked run's record and
//! its timer are made durable by the same flush. Saves are written
//! onto the subject record before the step that made them is marked done, so a crash between the
//! two repeats an idempotent save, never loses one.

mod advanced;
pub mod approval;
mod block;
pub mod cancel;
mod collect;
mod context;
pub mod guard;
pub mod lease;
pub mod reminders;
mod resume;
pub mod retry;
mod run;
mod turns;
mod wait;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use petgraph::graph::NodeIndex;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::compile::{BlockKind, CompileError, Workflow};
use crate::http::{Client, Credentials};
use crate::preset::{ActionKind, PresetId};
use crate::spec::Source;
use crate::store::any::{AnyApprovals, AnyGuard, AnyHistory, AnyRecords, AnyStore, AnyTimers};
use crate::store::api::{
    Backend, DurableTimers, ReadHistory, RunLeases, WriteHistory, WriteRecords,
};
pub use crate::store::history::{
    History, RunId, RunMode, RunRecord, RunStatus, RunTrigger, StepRecord, Subject,
};
use crate::store::in_flight::run_holder;
use crate::store::StoreError;
use crate::template::{Template, TemplateEngine};
use crate::trigger::scheduler::Clock;
use crate::trigger::Triggers;

pub use self::retry::{DurableRetry, DEFAULT_GIVE_UP_AFTER};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Runs executing at once; more wait (status `queued`) for a slot.
    pub max_in_flight: usize,
    /// The largest response body history keeps whole, in bytes (64 KiB by default).
    pub body_cap: usize,
    /// The backoff between durable retries of a block (1 minute doubling to 1 hour).
    pub durable_retry: DurableRetry,
    /// The wall clock durable retries are timed by (`serve` passes its own, so tests run it
    /// under paused tokio time).
    pub clock: Clock,
    /// The config's `notify:`: the alert of a workflow without one of its own.
    pub notify: Option<Arc<crate::notify::Notify>>,
    /// The mass-change guard of workflows without a `guard:` of their own (the config's).
    pub guard: Option<crate::compile::Guard>,
    /// Loading a workflow whose trigger matches more than this percentage of the current records
    /// warns (the config's `match_warning`; see [`crate::plan::load_warning`]).
    pub match_warning: f64,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            max_in_flight: 256,
            body_cap: 64 * 1024,
            durable_retry: DurableRetry::default(),
            clock: Clock::system(),
            notify: None,
            guard: None,
            match_warning: crate::plan::DEFAULT_MATCH_WARNING,
        }
    }
}

/// A failure of the engine itself (not of a run: a run that fails is an [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("`{}` does not compile:\n{}", file, errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Compile {
        file: String,
        errors: Vec<CompileError>,
    },
    #[error("no run `{id}` in this data dir; `blockyard history list` shows the runs")]
    UnknownRun { id: RunId },
    #[error("run `{id}` refers to workflow snapshot `{hash}`, which is not in the store")]
    MissingSnapshot { id: RunId, hash: String },
    #[error("workflow `{workflow}` has no block `{block}`")]
    UnknownBlock { workflow: String, block: String },
    #[error("run `{id}` is not waiting for approval of block `{block}`; `blockyard history show {id}` shows where it is")]
    NotWaiting { id: RunId, block: String },
    #[error("run `{id}` was cancelled, so block `{block}` can no longer be approved or rejected; start a new run if it is still wanted")]
    Cancelled { id: RunId, block: String },
    #[error("run `{id}` is executing on another worker (its lease there is live); it continues there, or on another worker once that lease passes")]
    Leased { id: RunId },
    #[error("run `{id}` is no longer this worker's: its lease passed without a renewal and another worker claimed it, which resumes it from its last durable step; stopped here before its next block")]
    LeaseLost { id: RunId },
    #[error("the run task stopped unexpectedly: {message}")]
    Task { message: String },
    #[error("cannot record the cancel of run `{id}` in `{}`: {message}; check that the data dir is writable and has space", path.display())]
    CancelMarker {
        id: RunId,
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot set up the vendor client: {message}")]
    Client { message: String },
    #[error("a live replay of run `{id}` sends requests, but credential `{credential}` (block `{block}`) is not configured: define it under `credentials:` in blockyard.yaml (or the file `--config` names), or replay offline, which sends nothing and needs no config")]
    ReplayCredential {
        id: RunId,
        block: String,
        credential: String,
    },
}

/// Why a run asked for by hand does not start ([`Engine::admit`]). The CLI and the API add how to
/// give a subject or force the run, in their own terms.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("`{workflow}` runs on a `{collection}` record (its begin block says `records: {collection}`) and none was given")]
    NoSubject {
        workflow: String,
        collection: &'static str,
    },
    #[error("`{}` does not start for `{subject}`: {}", consideration.workflow, consideration.explain().trim_end())]
    NotMatching {
        /// `collection/key`.
        subject: String,
        /// The begin block's conditions on the subject, as `triggers why` shows them.
        consideration: Box<crate::trigger::Consideration>,
    },
}

/// A compiled workflow ready to run, with its snapshot stored.
#[derive(Debug)]
pub struct Prepared {
    /// Shared with the trigger set, which watches the same compiled workflow.
    pub workflow: Arc<Workflow>,
    /// The workflow's YAML text, as stored in the snapshot.
    pub text: String,
    /// The snapshot's content hash.
    pub snapshot: String,
    /// Per API block without `outputs:`, the preset's default outputs, compiled.
    default_outputs: HashMap<NodeIndex, Vec<(String, Template)>>,
    /// Per role retrieval block: role, last activity and active templates.
    roles: HashMap<NodeIndex, RoleTemplates>,
    /// By node index: the block's call is a write (its preset's kind, or its `request.method`'s).
    writes: Vec<bool>,
    /// By node index: the block's write is destructive (its preset says `destructive: true`, or
    /// its `request.method` is `DELETE`): the mass-change guard counts it.
    destructive: Vec<bool>,
}

#[derive(Debug)]
struct RoleTemplates {
    role: Option<Template>,
    last_activity: Option<Template>,
    active: Option<Template>,
    /// The `last_activity` output of the preset's `activity_action`, when it names one.
    activity: Option<Template>,
}

impl Prepared {
    /// Whether `node`'s call is a destructive write (see [`guard`]).
    pub fn is_destructive(&self, node: NodeIndex) -> bool {
        self.destructive.get(node.index()).copied().unwrap_or(false)
    }

    /// The node of a block id.
    pub fn node(&self, block: &str) -> Option<NodeIndex> {
        self.workflow.block(block)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub trigger: RunTrigger,
    /// The record the run is about; `None` for a workflow without `records:`.
    pub subject: Option<Subject>,
    /// `--var` values, over the config's and the workflow's `vars`.
    pub vars: Map<String, Value>,
    pub mode: RunMode,
    /// The run this one replays.
    pub replay_of: Option<RunId>,
    /// Outcomes to take as already settled instead of running those blocks (replay `--from`,
    /// offline replay): the recorded steps, and for `--from` the block to run from.
    pub recording: Option<Recording>,
    /// Record the run in history (false for offline replays).
    pub persist: bool,
}

impl RunRequest {
    /// A manual live run.
    pub fn manual(subject: Option<Subject>) -> RunRequest {
        RunRequest {
            trigger: RunTrigger::manual(),
            subject,
            vars: Map::new(),
            mode: RunMode::Live,
            replay_of: None,
            recording: None,
            persist: true,
        }
    }
}

/// The steps of a recorded run, for replay.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The recorded run: an offline replay renders `run.id` and `run.started_at` as its.
    pub run: RunId,
    pub started_at: DateTime<Utc>,
    /// The last step of each block, by block id.
    pub steps: HashMap<String, StepRecord>,
    /// Replay `--from`: blocks that are neither this block nor after it reuse their recording.
    pub from: Option<String>,
}

impl Recording {
    /// The recording of `run`, whose steps are `steps`.
    pub fn new(run: &RunRecord, steps: Vec<StepRecord>, from: Option<String>) -> Recording {
        let mut by_block = HashMap::new();
        for step in steps {
            by_block.insert(step.block.clone(), step);
        }
        Recording {
            run: run.id,
            started_at: run.started_at.unwrap_or(run.created_at),
            steps: by_block,
            from,
        }
    }

    /// When `block` started and finished in the recorded run, which an offline replay takes as
    /// its own instants (the time helpers read them); the run's start for a block it never ran.
    pub(crate) fn instants(&self, block: &str) -> (DateTime<Utc>, DateTime<Utc>) {
        match self.steps.get(block) {
            Some(step) => (step.started_at, step.finished_at.unwrap_or(step.started_at)),
            None => (self.started_at, self.started_at),
        }
    }
}

/// A run started with [`Engine::submit`].
#[derive(Debug)]
pub struct Submitted {
    pub id: RunId,
    pub handle: tokio::task::JoinHandle<Result<RunOutcome, ExecError>>,
    pub recorded: Recorded,
}

/// Word of when a submitted run's record is in the history (written as it starts, or as it
/// queues for a slot).
#[derive(Debug)]
pub struct Recorded(tokio::sync::oneshot::Receiver<()>);

impl Recorded {
    /// True once the record is written; false when the run ended without writing it (it failed
    /// before, or does not persist).
    pub async fn wait(self) -> bool {
        self.0.await.is_ok()
    }
}

/// What [`Engine::cancel`] did.
#[derive(Debug, Clone)]
pub enum Cancel {
    /// The run is executing in this process: it stops before its next block.
    Requested,
    /// Nothing was executing it (it waited for approval, or a stopped process left it): it is
    /// `cancelled` now, durably.
    Cancelled(RunRecord),
    /// It had already finished; nothing changed.
    Finished(RunRecord),
}

/// A finished (or stopped) run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
    /// Wall time from start to finish.
    pub duration: Duration,
    /// Time spent inside vendor calls, summed over blocks.
    pub http: Duration,
    /// Time spent waiting for history to become durable.
    pub durable_wait: Duration,
}

impl RunOutcome {
    pub fn succeeded(&self) -> bool {
        self.run.status == RunStatus::Succeeded
    }
}

/// A history subject as the records store names it (`None` for an unknown collection).
fn records_subject(subject: &Subject) -> Option<crate::records::Subject> {
    let collection = crate::records::Collection::parse(&subject.collection)?;
    Some(crate::records::Subject::new(
        collection,
        crate::records::RecordKey::parse(&subject.key),
    ))
}

/// A run executing in this process, until dropped.
struct Active {
    engine: Engine,
    id: RunId,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.engine
            .inner
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.engine.inner.leases.forget(self.id);
    }
}

/// The shared executor.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The store every part below was opened from (sled or PostgreSQL).
    store: AnyStore,
    history: AnyHistory,
    /// The parked runs' timers.
    timers: AnyTimers,
    /// Where `save:`, role retrieval and `collect:` write records (with `triggers`).
    records: AnyRecords,
    /// The workflows a record write by a run may start ([`Triggers::none`] unless serving).
    triggers: std::sync::RwLock<Arc<Triggers>>,
    approvals: AnyApprovals,
    /// The mass-change guard's counts and releases ([`guard`]).
    guard: AnyGuard,
    client: Client,
    config_vars: Map<String, Value>,
    options: EngineOptions,
    permits: Arc<Semaphore>,
    cancels: cancel::Cancels,
    /// The runs a task of this process is executing (or holding for a permit): a cancel asks
    /// them to stop; any other unfinished run is cancelled at once.
    active: std::sync::Mutex<HashSet<RunId>>,
    /// Held while a cancel, an approval, a resume or a timer decides on a run nothing executes,
    /// so they never interleave (across the store's awaits: a tokio mutex).
    deciding: tokio::sync::Mutex<()>,
    /// The lines of runs per workflow and subject.
    turns: turns::Turns,
    /// Woken when run requests are queued (the queue's consumer, under `serve`).
    waker: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    templates: TemplateEngine,
    /// Notified when a run parks with a timer (see [`Engine::timers_changed`]).
    parked: tokio::sync::Notify,
    /// This worker's id and the runs it holds leases on, when workers share the store
    /// ([`lease`]).
    leases: lease::Leases,
}

impl Engine {
    /// An engine over `store` (a sled [`crate::store::Store`] or an [`AnyStore`]), calling
    /// vendors through `client`; `config_vars` are the config's `vars` (the bottom layer of every
    /// run's `vars`).
    pub fn new(
        store: impl Into<AnyStore>,
        client: Client,
        config_vars: Map<String, Value>,
        options: EngineOptions,
    ) -> Result<Engine, ExecError> {
        let store = store.into();
        Ok(Engine {
            inner: Arc::new(Inner {
                history: store.history()?,
                timers: store.timers()?,
                records: store.records()?,
                triggers: std::sync::RwLock::new(Arc::new(Triggers::none())),
                approvals: store.approvals()?,
                guard: store.guard()?,
                client,
                config_vars,
                permits: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
                options,
                cancels: cancel::Cancels::new(store.cancels()?),
                store,
                active: std::sync::Mutex::default(),
                deciding: tokio::sync::Mutex::default(),
                turns: turns::Turns::default(),
                waker: std::sync::OnceLock::new(),
                templates: TemplateEngine::new(),
                parked: tokio::sync::Notify::new(),
                leases: lease::Leases::new(),
            }),
        })
    }

    /// The store the engine runs on.
    pub fn store(&self) -> &AnyStore {
        &self.inner.store
    }

    pub fn history(&self) -> &AnyHistory {
        &self.inner.history
    }

    /// The parked runs' timers.
    pub fn timers(&self) -> &AnyTimers {
        &self.inner.timers
    }

    /// The records runs write to.
    pub fn records(&self) -> &AnyRecords {
        &self.inner.records
    }

    /// Sets the workflows whose record triggers a run's record writes evaluate (a save by one
    /// workflow can start another); [`Triggers::none`] until called.
    pub fn set_triggers(&self, triggers: Arc<Triggers>) {
        *self
            .inner
            .triggers
            .write()
            .unwrap_or_else(|e| e.into_inner()) = triggers;
    }

    /// The triggers record writes evaluate.
    pub fn triggers(&self) -> Arc<Triggers> {
        self.inner
            .triggers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The share above which a loaded workflow's matching is warned about, in percent.
    pub fn match_warning(&self) -> f64 {
        self.inner.options.match_warning
    }

    /// The config's `vars`, the bottom layer of every run's `vars`.
    pub fn config_vars(&self) -> &Map<String, Value> {
        &self.inner.config_vars
    }

    /// An engine over the same store and presets whose client has `credentials` instead, and no
    /// config vars: what an offline replay renders with when it takes the recorded run's base
    /// URLs rather than a config's. Record triggers are not shared (it writes no record).
    pub fn with_credentials(&self, credentials: Credentials) -> Result<Engine, ExecError> {
        let presets = Arc::new(self.inner.client.presets().clone());
        let client = Client::new(presets, credentials).map_err(|err| ExecError::Client {
            message: err.to_string(),
        })?;
        Engine::new(
            &self.inner.store,
            client,
            Map::new(),
            self.inner.options.clone(),
        )
    }

    /// Compiles a workflow's text and stores its snapshot.
    pub fn prepare(&self, file: &Path, text: String) -> Result<Arc<Prepared>, ExecError> {
        let workflow = crate::compile::compile_source(
            Source::new(file, text.clone()),
            self.inner.client.presets(),
        )
        .map_err(|errors| ExecError::Compile {
            file: file.display().to_string(),
            errors,
        })?;
        let snapshot = self
            .inner
            .store
            .wait(self.inner.history.put_snapshot(&text))??;
        Ok(Arc::new(self.prepared(workflow, text, snapshot)))
    }

    /// Reads, compiles and snapshots a workflow file.
    pub fn prepare_file(&self, file: &Path) -> Result<Arc<Prepared>, ExecError> {
        let source = Source::read(file).map_err(|err| ExecError::Compile {
            file: file.display().to_string(),
            errors: vec![err],
        })?;
        self.prepare(&source.path, source.text)
    }

    /// The stored snapshot of a run, compiled.
    pub fn prepare_snapshot(&self, run: &RunRecord) -> Result<Arc<Prepared>, ExecError> {
        let text = (self.inner.store)
            .wait(self.inner.history.snapshot(&run.snapshot))??
            .ok_or_else(|| ExecError::MissingSnapshot {
                id: run.id,
                hash: run.snapshot.clone(),
            })?;
        self.prepare(Path::new(&run.file), text)
    }

    fn prepared(&self, workflow: Workflow, text: String, snapshot: String) -> Prepared {
        let presets = self.inner.client.presets();
        let compile = |source: &str| Template::compile(source).ok();
        let mut default_outputs = HashMap::new();
        let mut roles = HashMap::new();
        let mut writes = vec![false; workflow.graph.node_count()];
        let mut destructive = vec![false; workflow.graph.node_count()];
        for node in workflow.graph.node_indices() {
            let call = match &workflow.graph[node].kind {
                BlockKind::Api(call) => call,
                BlockKind::RoleRetrieval(role) => {
                    if let Some(spec) = presets
                        .action(&role.call.preset)
                        .and_then(|a| a.spec.role.as_ref())
                    {
                        let activity = spec.activity_action.as_ref().and_then(|action| {
                            let id = PresetId {
                                vendor: role.call.preset.vendor.clone(),
                                action: action.clone(),
                            };
                            let source = presets.action(&id)?.spec.outputs.get("last_activity")?;
                            compile(source)
                        });
                        roles.insert(
                            node,
                            RoleTemplates {
                                role: compile(&spec.role),
                                last_activity: spec.last_activity.as_deref().and_then(compile),
                                active: spec.active.as_deref().and_then(compile),
                                activity,
                            },
                        );
                    }
                    &role.call
                }
                BlockKind::Begin | BlockKind::Wait(_) | BlockKind::End => continue,
            };
            // The call's own kind: a `request.method` override decides it over the preset's.
            writes[node.index()] = call.kind == ActionKind::Write;
            destructive[node.index()] = call.kind == ActionKind::Write
                && (presets
                    .action(&call.preset)
                    .is_some_and(|a| a.is_destructive())
                    || call
                        .request
                        .as_ref()
                        .and_then(|r| r.method)
                        .is_some_and(|m| m == crate::preset::Method::Delete));
            if call.outputs.is_empty() {
                if let Some(action) = presets.action(&call.preset) {
                    let outputs: Vec<(String, Template)> = action
                        .spec
                        .outputs
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), compile(v)?)))
                        .collect();
                    if !outputs.is_empty() {
                        default_outputs.insert(node, outputs);
                    }
                }
            }
        }
        Prepared {
            workflow: Arc::new(workflow),
            text,
            snapshot,
            default_outputs,
            roles,
            writes,
            destructive,
        }
    }

    /// Runs a workflow to its end and returns the outcome.
    pub async fn run(
        &self,
        prepared: &Arc<Prepared>,
        request: RunRequest,
    ) -> Result<RunOutcome, ExecError> {
        // A run kept nowhere (`plan`, the console's approval preview) is not a run started.
        if request.persist {
            crate::server::metrics::metrics().run_started(&prepared.workflow.name);
        }
        let persist = request.persist;
        let record = self.new_record(prepared, &request);
        let _active = self.activate(record.id);
        let turn = self.take_turn(&record, request.persist).await?;
        self.wait_turn(turn.as_ref(), &record, request.persist, &mut None)
            .await?;
        let result = run::execute(
            self.clone(),
            prepared.clone(),
            record,
            request.recording,
            request.persist,
            None,
            None,
        )
        .await;
        self.after_run(&result, persist).await;
        result
    }

    /// Starts a run in the background: its id, a handle on its outcome, and word of when its
    /// record is in the history.
    pub fn submit(&self, prepared: &Arc<Prepared>, request: RunRequest) -> Submitted {
        if request.persist {
            crate::server::metrics::metrics().run_started(&prepared.workflow.name);
        }
        let record = self.new_record(prepared, &request);
        let id = record.id;
        let engine = self.clone();
        let prepared = prepared.clone();
        let (sender, recorded) = tokio::sync::oneshot::channel();
        let active = self.activate(id);
        // Joined now, so runs of one workflow for one subject take turns in submission order.
        let turn = self.take_turn_now(&record, request.persist);
        let persist = request.persist;
        let recording = request.recording;
        let handle = tokio::spawn(async move {
            let _active = active;
            let turn = turn?;
            let mut sender = Some(sender);
            engine
                .wait_turn(turn.as_ref(), &record, persist, &mut sender)
                .await?;
            let result = run::execute(
                engine.clone(),
                prepared,
                record,
                recording,
                persist,
                None,
                sender,
            )
            .await;
            engine.after_run(&result, persist).await;
            result
        });
        Submitted {
            id,
            handle,
            recorded: Recorded(recorded),
        }
    }

    /// Cancels a run: one this process is executing stops between steps ([`Cancel::Requested`]);
    /// an unfinished run nothing executes (waiting for approval, `retrying`, or left by a stopped
    /// process) is `cancelled` at once and durably, so an approval can no longer open its gate and
    /// a timer no longer wakes it. Either way the cancel is on disk when this returns: the run's
    /// cancel marker is written and fsynced (a run resumed after a crash stops before its next
    /// block), or the store is flushed.
    pub async fn cancel(&self, id: RunId) -> Result<Cancel, ExecError> {
        let history = &self.inner.history;
        let outcome = {
            let _deciding = self.lock_deciding().await;
            let run = history.run(id).await?.ok_or(ExecError::UnknownRun { id })?;
            if run.status.is_finished() {
                return Ok(Cancel::Finished(run));
            }
            // A run whose record says it is parked on a timer but whose task is still active
            // has parked and is only finishing up (a woken run is `running` before it is
            // active again): cancelled at once, like any parked run, or its request would be
            // cleared as the task ends and the run left waiting.
            let finishing = matches!(run.status, RunStatus::Retrying | RunStatus::Waiting);
            if self.is_active(id) && !finishing {
                self.inner.cancels.request(id);
                // A run waiting for its turn stops waiting, and stops before its first block.
                self.inner.turns.wake();
                Cancel::Requested
            } else if !run.status.is_parked() && !self.take_lease(id).await? {
                // Executing on another worker (a shared store): asked through the store, which
                // that worker reads before each block.
                Cancel::Requested
            } else {
                self.inner.leases.forget(id);
                let reason = cancel::reason(history, &run).await?;
                let cancelled = if run.status.is_parked() {
                    // Atomic against a timer waking it at the same moment.
                    history
                        .cancel_parked(id, &reason, chrono::Utc::now())
                        .await?
                } else {
                    Some(cancel::mark_cancelled(history, run, reason).await?)
                };
                match cancelled {
                    Some(run) => Cancel::Cancelled(run),
                    // Woken (or finished) meanwhile: it is executing, or done.
                    None => {
                        let run = history.run(id).await?.ok_or(ExecError::UnknownRun { id })?;
                        if run.status.is_finished() {
                            return Ok(Cancel::Finished(run));
                        }
                        self.inner.cancels.request(id);
                        self.inner.turns.wake();
                        Cancel::Requested
                    }
                }
            }
        };
        if let Cancel::Requested = outcome {
            self.inner.cancels.persist(id).await?;
            // A run that finished meanwhile has cleared its request already: its marker goes too.
            if history
                .run(id)
                .await?
                .is_some_and(|run| run.status.is_finished())
            {
                self.inner.cancels.clear(id).await;
            }
            return Ok(outcome);
        }
        history.durable().await?;
        if let Cancel::Cancelled(run) = &outcome {
            self.release_subject(run).await;
        }
        Ok(outcome)
    }

    async fn lock_deciding(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.deciding.lock().await
    }

    /// Whether a task of this process is executing run `id` (or holding it for its turn).
    pub(crate) fn is_active(&self, id: RunId) -> bool {
        self.inner
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    /// Marks `id` as executing in this process until the guard is dropped.
    fn activate(&self, id: RunId) -> Active {
        self.inner
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        Active {
            engine: self.clone(),
            id,
        }
    }

    /// Finishes every run that was queued or running when its process stopped.
    pub async fn resume_unfinished(&self) -> Result<Vec<RunOutcome>, ExecError> {
        let mut outcomes = Vec::new();
        for run in self.inner.history.unfinished().await? {
            outcomes.push(self.continue_run(run).await?);
        }
        Ok(outcomes)
    }

    /// Continues an unfinished run (resumed, woken, or approved) in its turn, and releases its
    /// subject when it finishes. A run cancelled since `run` was read is left as it is.
    pub(crate) async fn continue_run(&self, run: RunRecord) -> Result<RunOutcome, ExecError> {
        let (run, _active) = {
            let _deciding = self.lock_deciding().await;
            let id = run.id;
            let current = self
                .inner
                .history
                .run(id)
                .await?
                .ok_or(ExecError::UnknownRun { id })?;
            if current.status.is_finished() {
                return Ok(RunOutcome {
                    steps: self.inner.history.steps(id).await?,
                    run: current,
                    duration: Duration::ZERO,
                    http: Duration::ZERO,
                    durable_wait: Duration::ZERO,
                });
            }
            (run, self.activate(id))
        };
        self.continue_active(run).await
    }

    /// [`Engine::continue_run`] for a run already marked active.
    pub(crate) async fn continue_active(&self, run: RunRecord) -> Result<RunOutcome, ExecError> {
        // On a shared store: this worker's from now on, unless another's lease on it is live.
        if !self.take_lease(run.id).await? {
            return Err(ExecError::Leased { id: run.id });
        }
        let turn = self.take_turn(&run, true).await?;
        if let Some(turn) = &turn {
            turn.wait().await;
        }
        let result = resume::resume(self.clone(), run).await;
        self.after_run(&result, true).await;
        result
    }

    /// A live run's place in the line of its workflow and subject, and its hold on the subject
    /// record ([`crate::store::in_flight`]); none for a run without a subject, a dry run or an
    /// offline replay.
    async fn take_turn(
        &self,
        run: &RunRecord,
        persist: bool,
    ) -> Result<Option<turns::Turn>, ExecError> {
        let Some(subject) = run
            .subject
            .as_ref()
            .filter(|_| persist && run.mode == RunMode::Live)
        else {
            return Ok(None);
        };
        if let Some(held) = records_subject(subject) {
            self.inner.records.hold(&held, &run_holder(run.id)).await?;
        }
        let line = format!("{}/{}", subject.collection, subject.key);
        Ok(Some(self.join_line(&run.workflow, line, run.id)))
    }

    /// [`Engine::take_turn`] on the calling thread, for [`Engine::submit`], which joins the
    /// line before it returns so runs take turns in submission order (a ready future on sled;
    /// on PostgreSQL the thread waits for the hold, see [`AnyStore::wait`]).
    fn take_turn_now(
        &self,
        run: &RunRecord,
        persist: bool,
    ) -> Result<Option<turns::Turn>, ExecError> {
        self.inner.store.wait(self.take_turn(run, persist))?
    }

    /// Waits for a new run's turn, recording it `queued` (and saying so to `recorded`) when
    /// another run of its workflow for its subject is ahead.
    async fn wait_turn(
        &self,
        turn: Option<&turns::Turn>,
        record: &RunRecord,
        persist: bool,
        recorded: &mut Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(), ExecError> {
        let Some(turn) = turn.filter(|t| !t.is_first()) else {
            return Ok(());
        };
        if persist {
            self.inner.history.put_run(record).await?;
            self.lease_new(record.id).await?;
            if let Some(sender) = recorded.take() {
                let _ = sender.send(());
            }
        }
        turn.wait().await;
        Ok(())
    }

    /// After a run's task: a run that finished releases its subject, and the record changes held
    /// back while it was in flight are evaluated (a run waiting for approval keeps its hold).
    /// Only a kept run (`persist`) is counted in the metrics.
    async fn after_run(&self, result: &Result<RunOutcome, ExecError>, persist: bool) {
        if let Ok(outcome) = result {
            if outcome.run.status.is_finished() {
                self.release_subject(&outcome.run).await;
                if persist {
                    crate::server::metrics::metrics()
                        .run_finished(&outcome.run.workflow, outcome.run.status.name());
                }
            }
        }
    }

    /// Releases a finished run's hold on its subject record, evaluating what was held back.
    pub(crate) async fn release_subject(&self, run: &RunRecord) {
        let Some(subject) = run.subject.as_ref().and_then(records_subject) else {
            return;
        };
        if run.mode != RunMode::Live {
            return;
        }
        let released = match &self.inner.records {
            // sled: on the calling thread, as before (the release evaluates what was held back).
            AnyRecords::Sled(records) => records.release(
                &subject,
                &run_holder(run.id),
                &self.triggers(),
                chrono::Utc::now(),
            ),
            records => {
                let triggers = self.triggers();
                records
                    .release(&subject, &run_holder(run.id), triggers, chrono::Utc::now())
                    .await
            }
        };
        match released {
            Ok(queued) if !queued.is_empty() => self.wake_queue(),
            Ok(_) => {}
            Err(err) => {
                tracing::error!(run_id = %run.id, error = %err, "releasing the run's subject failed; the next start settles it")
            }
        }
    }

    /// Tells the queue's consumer that run requests were queued (see [`Engine::set_waker`]).
    pub(crate) fn wake_queue(&self) {
        if let Some(waker) = self.inner.waker.get() {
            waker.notify_one();
        }
    }

    /// What to wake when a run's record writes (or the end of a run) queue run requests: the
    /// queue's consumer under `serve`.
    pub fn set_waker(&self, waker: Arc<tokio::sync::Notify>) {
        let _ = self.inner.waker.set(waker);
    }

    /// Finishes one unfinished run (a `retrying` one is woken first, whether or not its time
    /// has come).
    pub async fn resume(&self, id: RunId) -> Result<RunOutcome, ExecError> {
        let history = &self.inner.history;
        let (run, _active) = {
            let _deciding = self.lock_deciding().await;
            let mut run = history.run(id).await?.ok_or(ExecError::UnknownRun { id })?;
            if matches!(run.status, RunStatus::Retrying | RunStatus::Waiting) {
                let now = self.now();
                match history
                    .wake_for(id, self.worker(), self.lease_until(now))
                    .await?
                {
                    Some(woken) => run = woken,
                    None => {
                        // Woken or cancelled by someone else meanwhile: left as it is.
                        let run = history.run(id).await?.ok_or(ExecError::UnknownRun { id })?;
                        return Ok(RunOutcome {
                            steps: history.steps(id).await?,
                            run,
                            duration: Duration::ZERO,
                            http: Duration::ZERO,
                            durable_wait: Duration::ZERO,
                        });
                    }
                }
            }
            (run, self.activate(id))
        };
        self.continue_active(run).await
    }

    /// The engine's wall clock now (the one durable retries are timed by).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.options.clock.now()
    }

    /// Claims every parked run whose timer is due at `now` (a `retrying` run whose next attempt
    /// has come): each becomes `running` and its timer is dropped, so no one else wakes it, and
    /// it counts as executing here (a cancel asks it to stop). Continue each with
    /// [`Engine::resume_record`].
    pub async fn wake_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<RunRecord>, ExecError> {
        let history = &self.inner.history;
        let _deciding = self.lock_deciding().await;
        let mut woken = Vec::new();
        for timer in self.inner.timers.due(now).await? {
            // Active before it is woken (and taken with a lease, on a shared store), so a
            // renewal meanwhile never takes it for a run nothing here executes.
            let fresh = self
                .inner
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(timer.run);
            match history
                .wake_for(timer.run, self.worker(), self.lease_until(now))
                .await
            {
                Ok(Some(run)) => {
                    self.leased(run.id);
                    woken.push(run);
                }
                other => {
                    if fresh {
                        self.inner
                            .active
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&timer.run);
                    }
                    other?;
                }
            }
        }
        Ok(woken)
    }

    /// Continues a run from its record: one [`Engine::wake_due`] claimed, or one
    /// [`ReadHistory::unfinished`] listed.
    pub async fn resume_record(&self, run: RunRecord) -> Result<RunOutcome, ExecError> {
        self.continue_run(run).await
    }

    /// Wakes and continues, one after another, every parked run whose timer is due at `now`.
    pub async fn resume_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<RunOutcome>, ExecError> {
        let mut outcomes = Vec::new();
        for run in self.wake_due(now).await? {
            outcomes.push(self.resume_record(run).await?);
        }
        Ok(outcomes)
    }

    /// Notified (one stored permit) when a run of this engine parks with a timer: a loop
    /// sleeping until the earliest timer (`serve`'s) looks again.
    pub fn timers_changed(&self) -> &tokio::sync::Notify {
        &self.inner.parked
    }

    /// Whether a run asked for by hand may start: a workflow whose begin block names `records:`
    /// needs a subject (always), and unless `force` the subject must match the begin block's
    /// `when:`/`rules:` and not be left out by its `exclude:`, judged on the subject record as
    /// given ([`crate::trigger::consider_manual`]).
    pub fn admit(
        &self,
        prepared: &Prepared,
        request: &RunRequest,
        force: bool,
    ) -> Result<(), Refusal> {
        let workflow = &prepared.workflow;
        let trigger = &workflow.trigger;
        let Some(subject) = &request.subject else {
            return match trigger.records {
                Some(collection) => Err(Refusal::NoSubject {
                    workflow: workflow.name.clone(),
                    collection: collection.name(),
                }),
                None => Ok(()),
            };
        };
        let conditions = trigger.when.is_some() || !trigger.rules.is_empty();
        if force || !(conditions || trigger.exclude.is_some()) {
            return Ok(());
        }
        let empty = Map::new();
        let record = subject.record.as_object().unwrap_or(&empty);
        let consideration = crate::trigger::consider_manual(
            workflow,
            &self.run_vars(prepared, request),
            &subject.key,
            record,
            chrono::Utc::now(),
        );
        if consideration.fired {
            return Ok(());
        }
        Err(Refusal::NotMatching {
            subject: format!("{}/{}", subject.collection, subject.key),
            consideration: Box::new(consideration),
        })
    }

    /// A run's `vars`: the config's, overlaid by the workflow's, overlaid by the request's.
    fn run_vars(&self, prepared: &Prepared, request: &RunRequest) -> Map<String, Value> {
        let mut vars = self.inner.config_vars.clone();
        for (k, v) in &prepared.workflow.vars {
            vars.insert(k.clone(), v.clone());
        }
        for (k, v) in &request.vars {
            vars.insert(k.clone(), v.clone());
        }
        vars
    }

    fn new_record(&self, prepared: &Prepared, request: &RunRequest) -> RunRecord {
        let vars = self.run_vars(prepared, request);
        let id = RunId::new();
        RunRecord {
            id,
            workflow: prepared.workflow.name.clone(),
            file: prepared.workflow.file.display().to_string(),
            snapshot: prepared.snapshot.clone(),
            trigger: request.trigger.clone(),
            subject: request.subject.clone(),
            vars,
            status: RunStatus::Queued,
            mode: request.mode,
            created_at: id.created_at(),
            started_at: None,
            finished_at: None,
            replay_of: request.replay_of,
            from_block: request.recording.as_ref().and_then(|r| r.from.clone()),
            error: None,
            wake_at: None,
            pruned: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::preset::PresetRegistry;
    use crate::sandbox::{Sandbox, SandboxConfig};
    use crate::store::Store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_only_run_writes_its_steps_as_one_entry_and_a_save_writes_them_at_once() {
        let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            Path::new("blockyard.yaml"),
            &format!(
                "credentials:\n  calendly: {{vendor: calendly, auth: bearer, token: t0k3n-for-tests, base_url: {}}}\n",
                sandbox.calendly_url()
            ),
        )
        .unwrap();
        let client = Client::new(
            Arc::new(PresetRegistry::builtin()),
            Credentials::from_config(&config),
        )
        .unwrap();
        let store = Store::open(dir.path()).unwrap();
        let engine = Engine::new(&store, client, Map::new(), EngineOptions::default()).unwrap();
        let text = "name: whoami\nblocks:\n  begin: {type: begin, next: me}\n  me: {type: api, preset: calendly.current_user, credential: calendly, next: end}\n  end: {type: end}\n";
        let prepared = engine
            .prepare(Path::new("whoami.yaml"), text.to_owned())
            .unwrap();
        let outcome = engine
            .run(&prepared, RunRequest::manual(None))
            .await
            .unwrap();
        assert!(outcome.succeeded(), "{:?}", outcome.run.error);
        let history = engine.history();
        // begin, me and end, written together when the run ended: one sled insert, not three.
        assert_eq!(history.entries(outcome.run.id), [(0, 3)]);
        let blocks: Vec<String> = history
            .steps(outcome.run.id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.block)
            .collect();
        assert_eq!(blocks, ["begin", "me", "end"]);

        // A read that saves onto the subject is flushed as soon as the run learns of it (rule 3),
        // so its step is written then, with `begin`; `end` follows on its own.
        let text = text.replace(
            "credential: calendly, next: end}",
            "credential: calendly, save: {calendly_user: \"{{response.resource.uri}}\"}, next: end}",
        );
        let prepared = engine.prepare(Path::new("whoami-save.yaml"), text).unwrap();
        let subject = Subject {
            collection: "people".to_owned(),
            key: "ada@example.com".to_owned(),
            record: serde_json::json!({ "email": "ada@example.com" }),
        };
        let outcome = engine
            .run(&prepared, RunRequest::manual(Some(subject)))
            .await
            .unwrap();
        assert!(outcome.succeeded(), "{:?}", outcome.run.error);
        assert!(!outcome.steps[1].saved.is_empty(), "{:?}", outcome.steps[1]);
        assert_eq!(history.entries(outcome.run.id), [(0, 2), (2, 1)]);
        sandbox.shutdown().await;
    }
}

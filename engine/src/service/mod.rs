//! `blockyard serve`'s service: one process that owns a data dir and keeps workflows running.
//!
//! A [`Service`] holds the [`Engine`], the [`RecordStore`], the trigger [`Queue`], the loaded
//! [`Workflows`] (every workflow of a directory, compiled and snapshotted, with the [`Triggers`]
//! of those that start by themselves), the [`Scheduler`] and the HTTP [`Server`] whose `/api`
//! routes are [`crate::server::api`]. The pieces meet in [`Shared`], which the API handlers and
//! the queue [`worker`] share behind an `Arc`.
//!
//! # Lifecycle
//!
//! [`Service::start`] loads the workflows (refusing to start, with every compile error, when one
//! is invalid), settles the queue entries a previous process started but did not acknowledge
//! (see [`worker`]), drops the holds on subject records that process left and evaluates the
//! record changes held back for them ([`crate::store::in_flight`]), resumes unfinished runs in
//! the background (on a store several workers share, only the orphans of stopped workers, claimed
//! by the lease loop, [`leases`]), then starts the scheduler, the worker, the timer loop that wakes parked
//! (`retrying`) runs when their time comes ([`wake`]), the approval reminder loop ([`reminders`]),
//! the retention loop when the config's `retention:` asks for one ([`retention`]) and the
//! server. The engine times durable retries by the service's [`Clock`]. [`Service::reload`] swaps in a freshly loaded set (SIGHUP, or `POST /api/reload` through
//! [`Shared::reload`]); a set that fails to load leaves the old one in place. [`Service::shutdown`] stops taking work (the server
//! first, then the worker and the scheduler), lets the runs in flight finish for up to
//! [`ServiceConfig::grace`] (a run still going after that is stopped where it is, exactly like a
//! crash: the next start resumes it from its last durable step), and flushes the store.
//!
//! `blockyard serve` announces where it listens in the data dir ([`endpoint`], `serve.json`), so
//! that CLI commands on that data dir go through the API; `GET /api/service` tells them what the
//! service was started with ([`ServiceConfig::config_file`], [`ServiceConfig::presets_dir`]).

pub mod endpoint;
pub mod leases;
pub mod pause;
pub mod reload;
pub mod reminders;
pub mod retention;
pub mod retry;
pub mod wake;
pub mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::compile::CompileError;
use crate::exec::{Engine, EngineOptions, ExecError, Prepared, RunId, RunOutcome};
use crate::http::{CallError, Client, Credentials};
use crate::preset::PresetRegistry;
use crate::records::Fields;
use crate::server::{ApiToken, HttpLimits, Readiness, Server, ServerConfig, ServerError};
use crate::spec::Source;
use crate::store::any::{AnyPauses, AnyQueue, AnyRecords, AnyStore};
use crate::store::api::{Backend, ReadHistory, RunQueue};
use crate::store::{Store, StoreError};
use crate::trigger::scheduler::{Clock, Fired, Scheduler, SchedulerHandle};
use crate::trigger::{unique_names, workflow_files, LoadError, Triggers};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The directory of workflow files (`*.yaml`, `*.yml`, not recursive).
    pub workflows: PathBuf,
    pub data_dir: PathBuf,
    /// The store to run on, opened (`store: postgres`); `None`: the sled store in `data_dir`.
    pub store: Option<AnyStore>,
    /// Where the API listens; port 0 picks a free port ([`Service::addr`] tells which).
    pub listen: SocketAddr,
    /// The API's single admin token (`BLOCKYARD_TOKEN`, acting as `admin`); with no
    /// `api_tokens` either, the API allows loopback only.
    pub token: Option<String>,
    /// The named API tokens with their roles (`api_tokens` in blockyard.yaml).
    pub api_tokens: Vec<ApiToken>,
    /// The HTTP connection bounds (`serve:` in blockyard.yaml).
    pub http: HttpLimits,
    /// `serve.allowed_hosts`: more names a loopback API answers to; off loopback, when set, the
    /// only ones.
    pub allowed_hosts: Vec<String>,
    pub presets: Arc<PresetRegistry>,
    /// The vendor credentials; on PostgreSQL, those that keep OAuth tokens in a token store
    /// keep them in the database's instead ([`Client::on_store`]).
    pub credentials: Credentials,
    /// The configuration's `vars`.
    pub vars: Fields,
    pub engine: EngineOptions,
    /// How often the worker looks at the queue when nothing woke it.
    pub poll: Duration,
    /// How long [`Service::shutdown`] lets runs in flight finish.
    pub grace: Duration,
    /// The scheduler's and the timer loop's clock (the engine's too: it replaces
    /// `engine.clock`).
    pub clock: Clock,
    /// The config file the service was started with, as `GET /api/service` reports it (the CLI
    /// refuses a different `--config` through the service).
    pub config_file: Option<PathBuf>,
    /// The directory of extra presets (`--presets`), reported the same way.
    pub presets_dir: Option<PathBuf>,
    /// `retention:`: what the service prunes and deletes by itself ([`retention`]; off by
    /// default).
    pub retention: retention::Retention,
}

impl ServiceConfig {
    /// Defaults: the shipped presets, no credentials, no vars, a 1 s poll and a 30 s grace.
    pub fn new(workflows: PathBuf, data_dir: PathBuf, listen: SocketAddr) -> ServiceConfig {
        ServiceConfig {
            workflows,
            data_dir,
            store: None,
            listen,
            token: None,
            api_tokens: Vec::new(),
            http: HttpLimits::default(),
            allowed_hosts: Vec::new(),
            presets: Arc::new(PresetRegistry::builtin()),
            credentials: Credentials::default(),
            vars: Fields::new(),
            engine: EngineOptions::default(),
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(30),
            clock: Clock::system(),
            config_file: None,
            presets_dir: None,
            retention: retention::Retention::default(),
        }
    }
}

/// Why the service did not start (or reload).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot set up the vendor client: {0}")]
    Client(#[from] CallError),
}

/// The loaded workflows: every file of the directory, compiled and snapshotted, by name.
#[derive(Debug)]
pub struct Workflows {
    by_name: BTreeMap<String, Arc<Prepared>>,
    triggers: Arc<Triggers>,
}

impl Workflows {
    /// Compiles every workflow in `dir`, gathering all errors; stores each one's snapshot.
    pub fn load(dir: &Path, engine: &Engine, vars: &Fields) -> Result<Workflows, ServiceError> {
        let mut errors: Vec<CompileError> = Vec::new();
        let mut loaded: Vec<Arc<Prepared>> = Vec::new();
        for file in workflow_files(dir)? {
            let source = match Source::read(&file) {
                Ok(source) => source,
                Err(err) => {
                    errors.push(err);
                    continue;
                }
            };
            // One compile per workflow: the engine's prepared form, whose workflow the triggers
            // watch too.
            match engine.prepare(&source.path, source.text) {
                Ok(prepared) => loaded.push(prepared),
                Err(ExecError::Compile {
                    errors: mut found, ..
                }) => errors.append(&mut found),
                Err(err) => return Err(err.into()),
            }
        }
        if !errors.is_empty() {
            return Err(LoadError::Invalid {
                dir: dir.to_owned(),
                errors,
            }
            .into());
        }
        unique_names(loaded.iter().map(|p| &*p.workflow))?;
        let by_name: BTreeMap<String, Arc<Prepared>> = loaded
            .iter()
            .map(|p| (p.workflow.name.clone(), p.clone()))
            .collect();
        let triggers = Triggers::new(loaded.iter().map(|p| p.workflow.clone()), vars);
        Ok(Workflows {
            by_name,
            triggers: Arc::new(triggers),
        })
    }

    /// A workflow by its `name:`.
    pub fn get(&self, name: &str) -> Option<&Arc<Prepared>> {
        self.by_name.get(name)
    }

    /// Every workflow, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Prepared>> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The workflows that start by themselves.
    pub fn triggers(&self) -> &Arc<Triggers> {
        &self.triggers
    }
}

/// What the API handlers and the worker share.
#[derive(Debug)]
pub struct Shared {
    pub(crate) engine: Engine,
    pub(crate) store: AnyStore,
    pub(crate) records: AnyRecords,
    pub(crate) queue: AnyQueue,
    /// The paused workflows, whose queued requests the worker holds ([`pause`]).
    pub(crate) pauses: AnyPauses,
    workflows: RwLock<Arc<Workflows>>,
    /// Woken when records are written, the scheduler fires or a run's end queues runs.
    pub(crate) wake: Arc<Notify>,
    /// Runs started by this process (and the resume of unfinished ones), until they finish.
    runs: Mutex<JoinSet<()>>,
    /// What the service was started with, for `GET /api/service`.
    pub(crate) setup: Setup,
    /// The scheduler's loop, for `/readyz` (replaced on reload).
    scheduler: Mutex<Option<AbortHandle>>,
    /// What [`Shared::reload`] needs, set once the scheduler runs ([`reload`]).
    pub(crate) reloader: std::sync::OnceLock<reload::Reloader>,
}

/// What a service was started with, as `GET /api/service` reports it.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) workflows: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) presets_dir: Option<PathBuf>,
}

impl Shared {
    /// Backs the store up into `dir` (new or empty), at one instant, while runs go on (see
    /// [`crate::store::backup`]); on a blocking thread, since it copies every entry. A
    /// PostgreSQL store is refused: it is backed up with the database's own tools.
    pub async fn backup(
        &self,
        dir: std::path::PathBuf,
    ) -> Result<crate::store::backup::BackupReport, crate::store::backup::BackupError> {
        self.store.backup(&dir).await
    }
}

/// `/readyz`: the store takes a durable write, workflows are loaded, the scheduler runs.
#[derive(Debug)]
struct ServiceReadiness(Arc<Shared>);

impl Readiness for ServiceReadiness {
    fn check(&self) -> Vec<(&'static str, Result<(), String>)> {
        let shared = &self.0;
        let store = shared.store.check_writable().map_err(|err| err.to_string());
        let workflows = match shared.workflows().len() {
            0 => Err(
                "no workflows are loaded; add one to the workflows directory and reload".to_owned(),
            ),
            _ => Ok(()),
        };
        let scheduler = match &*shared.scheduler.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(task) if !task.is_finished() => Ok(()),
            _ => {
                Err("the scheduler has stopped; see the service's log, then restart it".to_owned())
            }
        };
        vec![
            ("store", store),
            ("workflows", workflows),
            ("scheduler", scheduler),
        ]
    }
}

/// Aborts a run's task when the task watching it is aborted (a shutdown past its grace).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Shared {
    /// The current workflows.
    pub fn workflows(&self) -> Arc<Workflows> {
        self.workflows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn records(&self) -> &AnyRecords {
        &self.records
    }

    /// The store the service runs on.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The paused workflows.
    pub fn pauses(&self) -> &AnyPauses {
        &self.pauses
    }

    /// Keeps a submitted run until it finishes (so shutdown can wait for it) and logs its end.
    pub(crate) fn track(&self, id: RunId, handle: JoinHandle<Result<RunOutcome, ExecError>>) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        while runs.try_join_next().is_some() {}
        runs.spawn(async move {
            let _abort = AbortOnDrop(handle.abort_handle());
            match handle.await {
                Ok(Ok(outcome)) => {
                    tracing::info!(run_id = %id, workflow = %outcome.run.workflow, status = %outcome.run.status, "run finished")
                }
                Ok(Err(err)) => tracing::error!(run_id = %id, error = %err, "run stopped"),
                Err(err) if err.is_cancelled() => {}
                Err(err) => tracing::error!(run_id = %id, error = %err, "run task failed"),
            }
        });
    }

    fn spawn_tracked(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(task);
    }
}

/// A running service.
#[derive(Debug)]
pub struct Service {
    shared: Arc<Shared>,
    config: ServiceConfig,
    server: Server,
    scheduler: Arc<tokio::sync::Mutex<Option<SchedulerHandle>>>,
    fired: mpsc::UnboundedSender<Fired>,
    forward: JoinHandle<()>,
    worker: JoinHandle<()>,
    /// The timer loop ([`wake`]).
    timers: JoinHandle<()>,
    /// The approval reminder loop ([`reminders`]).
    reminders: JoinHandle<()>,
    /// The retention loop ([`retention`]), when `retention:` asks for one.
    retention: Option<JoinHandle<()>>,
    /// The lease loop ([`leases`]), on a shared store.
    leases: Option<(JoinHandle<()>, watch::Sender<bool>)>,
    stop: watch::Sender<bool>,
}

impl Service {
    /// Opens the data dir, loads the workflows, and starts everything (see the module docs).
    pub async fn start(config: ServiceConfig) -> Result<Service, ServiceError> {
        let store = match &config.store {
            Some(store) => store.clone(),
            None => AnyStore::from(Store::open(&config.data_dir)?),
        };
        // On PostgreSQL, OAuth tokens and rate budgets are the store's, shared by every worker.
        let client = Client::on_store(
            config.presets.clone(),
            config.credentials.clone(),
            &store,
            crate::http::Clock::default(),
        )?;
        let options = EngineOptions {
            clock: config.clock,
            ..config.engine.clone()
        };
        let engine = Engine::new(&store, client, config.vars.clone(), options)?;
        let workflows = Workflows::load(&config.workflows, &engine, &config.vars)?;
        warn_matching(&engine, &workflows);
        // A save by one workflow can start another: run writes evaluate the loaded triggers.
        engine.set_triggers(workflows.triggers.clone());
        let records = store.records()?;
        // On a shared store the queue's claims are this worker's, renewed with its runs.
        let queue = store.queue_for(engine.worker())?;
        if engine.shared_store() {
            tracing::info!(worker = %engine.worker(), lease_secs = crate::exec::lease::LEASE.as_secs(), "this worker shares its store with others");
        }
        let pauses = store.pauses()?;
        let shared = Arc::new(Shared {
            engine,
            store,
            records,
            queue,
            pauses,
            workflows: RwLock::new(Arc::new(workflows)),
            wake: Arc::new(Notify::new()),
            runs: Mutex::new(JoinSet::new()),
            setup: Setup {
                workflows: config.workflows.clone(),
                data_dir: config.data_dir.clone(),
                config_file: config.config_file.clone(),
                presets_dir: config.presets_dir.clone(),
            },
            scheduler: Mutex::new(None),
            reloader: std::sync::OnceLock::new(),
        });
        shared.engine.set_waker(shared.wake.clone());
        let settled = worker::settle_started(&shared).await?;
        if settled > 0 {
            tracing::info!(
                entries = settled,
                "acknowledged queue entries whose runs had already started"
            );
        }
        let queued = reconcile_in_flight(&shared).await?;
        if queued > 0 {
            tracing::info!(
                runs = queued,
                "record changes held back while a stopped process had runs in flight started runs"
            );
        }
        // Listed now, before the timer loop can wake a parked run into `running`: each run is
        // continued by one of them, never both. On a shared store the unfinished runs of live
        // workers are theirs: the lease loop claims the orphans instead ([`leases`]).
        let unfinished = if shared.engine.shared_store() {
            Vec::new()
        } else {
            shared.engine.history().unfinished().await?
        };
        let resumer = shared.clone();
        shared.spawn_tracked(async move {
            let count = unfinished.len();
            for run in unfinished {
                let id = run.id;
                if let Err(err) = resumer.engine.resume_record(run).await {
                    tracing::error!(run_id = %id, error = %err, "resuming an unfinished run failed");
                }
            }
            if count > 0 {
                tracing::info!(runs = count, "resumed unfinished runs");
            }
        });
        let (fired, mut fired_rx) = mpsc::unbounded_channel::<Fired>();
        let waker = shared.clone();
        let forward = tokio::spawn(async move {
            while fired_rx.recv().await.is_some() {
                waker.wake.notify_one();
            }
        });
        let scheduler = Arc::new(tokio::sync::Mutex::new(Some(start_scheduler(
            &shared,
            config.clock,
            fired.clone(),
        ))));
        let _ = shared.reloader.set(reload::Reloader {
            dir: config.workflows.clone(),
            vars: config.vars.clone(),
            clock: config.clock,
            scheduler: scheduler.clone(),
            fired: fired.downgrade(),
        });
        let (stop, stopped) = watch::channel(false);
        let worker = tokio::spawn(worker::run(shared.clone(), stopped.clone(), config.poll));
        let reminders = tokio::spawn(reminders::run(
            shared.clone(),
            stopped.clone(),
            config.clock,
        ));
        let retention = (!config.retention.is_off()).then(|| {
            tokio::spawn(retention::run(
                shared.engine.history().clone(),
                config.retention,
                stopped.clone(),
                config.clock,
            ))
        });
        // Stopped after the runs in flight (their leases renewed until then).
        let leases = shared.engine.shared_store().then(|| {
            let (done, finished) = watch::channel(false);
            let task = tokio::spawn(leases::run(
                shared.clone(),
                stopped.clone(),
                finished,
                config.clock,
            ));
            (task, done)
        });
        let timers = tokio::spawn(wake::run(shared.clone(), stopped, config.clock));
        let mut server_config = ServerConfig::new(config.listen, config.token.clone());
        server_config
            .tokens
            .extend(config.api_tokens.iter().cloned());
        server_config.limits = config.http;
        server_config.allowed_hosts = config.allowed_hosts.clone();
        server_config.readiness = Some(Arc::new(ServiceReadiness(shared.clone())));
        server_config.console = Some(crate::server::console::routes(
            shared.clone(),
            server_config.tokens.clone(),
        ));
        let server = Server::start(server_config, crate::server::api::routes(shared.clone())).await;
        let server = match server {
            Ok(server) => server,
            Err(err) => {
                let _ = stop.send(true);
                let _ = worker.await;
                let _ = timers.await;
                let _ = reminders.await;
                if let Some(retention) = retention {
                    let _ = retention.await;
                }
                if let Some((leases, done)) = leases {
                    let _ = done.send(true);
                    let _ = leases.await;
                }
                if let Some(scheduler) = scheduler.lock().await.take() {
                    let _ = scheduler.stop().await;
                }
                return Err(err.into());
            }
        };
        Ok(Service {
            shared,
            config,
            server,
            scheduler,
            fired,
            forward,
            worker,
            timers,
            reminders,
            retention,
            leases,
            stop,
        })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The loaded workflows.
    pub fn workflows(&self) -> Arc<Workflows> {
        self.shared.workflows()
    }

    /// Loads the workflows again and swaps them in, restarting the scheduler on the new set.
    /// On failure the old set stays (and keeps running) and the error says why.
    pub async fn reload(&self) -> Result<usize, ServiceError> {
        self.shared.reload().await
    }

    /// Stops taking work, lets runs in flight finish (up to the grace period), and flushes.
    pub async fn shutdown(self) -> Result<(), ServiceError> {
        self.server.shutdown().await;
        let _ = self.stop.send(true);
        let _ = self.worker.await;
        let _ = self.timers.await;
        let _ = self.reminders.await;
        if let Some(retention) = self.retention {
            let _ = retention.await;
        }
        if let Some(scheduler) = self.scheduler.lock().await.take() {
            scheduler.stop().await?;
        }
        drop(self.fired);
        let _ = self.forward.await;
        let mut runs =
            std::mem::take(&mut *self.shared.runs.lock().unwrap_or_else(|e| e.into_inner()));
        let drained = tokio::time::timeout(self.config.grace, async {
            while runs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                runs = runs.len(),
                "runs still going after the grace period are stopped here and resume at the next start"
            );
            runs.shutdown().await;
        }
        if let Some((leases, done)) = self.leases {
            let _ = done.send(true);
            let _ = leases.await;
        }
        self.shared.store.flush().await?;
        Ok(())
    }
}

/// Drops the holds on subject records that a stopped process left (a queue entry since
/// acknowledged, a run finished or never recorded) and evaluates the record changes held back
/// for subjects nothing holds any more. Returns how many runs that queued.
async fn reconcile_in_flight(shared: &Shared) -> Result<usize, StoreError> {
    let triggers = shared.workflows().triggers().clone();
    let (AnyRecords::Sled(records), AnyQueue::Sled(queue), Some(history)) = (
        &shared.records,
        &shared.queue,
        shared.engine.history().sled(),
    ) else {
        // PostgreSQL: whether each holder is alive is asked first (each a query), then the
        // dead ones are dropped.
        let pending: std::collections::HashSet<_> = shared
            .queue
            .pending()
            .await?
            .into_iter()
            .map(|entry| entry.id)
            .collect();
        let mut alive = std::collections::HashSet::new();
        for holder in shared.records.holders().await? {
            let is_alive = match holder.split_once(':') {
                Some(("queue", id)) => id.parse().is_ok_and(|id| pending.contains(&id)),
                Some(("run", id)) => match id.parse() {
                    Ok(id) => shared
                        .engine
                        .history()
                        .run(id)
                        .await?
                        .is_some_and(|run| !run.status.is_finished()),
                    Err(_) => false,
                },
                _ => false,
            };
            if is_alive {
                alive.insert(holder);
            }
        }
        let queued = shared
            .records
            .reconcile(
                &|holder: &str| alive.contains(holder),
                triggers,
                chrono::Utc::now(),
            )
            .await?;
        return Ok(queued.len());
    };
    let alive = |holder: &str| match holder.split_once(':') {
        Some(("queue", id)) => id
            .parse()
            .ok()
            .and_then(|id| queue.get(id).ok().flatten())
            .is_some(),
        Some(("run", id)) => id
            .parse()
            .ok()
            .and_then(|id| history.run(id).ok().flatten())
            .is_some_and(|run| !run.status.is_finished()),
        _ => false,
    };
    let queued = records.reconcile(alive, &triggers, chrono::Utc::now())?;
    Ok(queued.len())
}

fn start_scheduler(
    shared: &Shared,
    clock: Clock,
    fired: mpsc::UnboundedSender<Fired>,
) -> SchedulerHandle {
    let started = Scheduler::new(
        shared.records.clone(),
        shared.queue.clone(),
        shared.workflows().triggers().clone(),
        clock,
    )
    .notify(fired)
    .start();
    // For `/readyz`: the loop now running, replaced on reload.
    *shared.scheduler.lock().unwrap_or_else(|e| e.into_inner()) = Some(started.task());
    started
}

/// Warns (in the log) about each loaded workflow whose trigger matches more than the configured
/// share of the current records ([`crate::plan::load_warning`]).
fn warn_matching(engine: &Engine, workflows: &Workflows) {
    for prepared in workflows.iter() {
        match crate::plan::load_warning(engine, prepared, engine.match_warning()) {
            Ok(Some(warning)) => tracing::warn!(workflow = %prepared.workflow.name, "{warning}"),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(workflow = %prepared.workflow.name, error = %err, "cannot check how many records the workflow matches")
            }
        }
    }
}

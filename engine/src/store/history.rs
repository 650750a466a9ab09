//! Run history: runs, steps, workflow snapshots and the subject index, in sled.
//!
//! Five trees (names in [`super::trees`]):
//!
//! - `runs`: [`RunId`] (a ULID, 16 bytes big-endian, so keys sort by time) → [`RunRecord`];
//! - `steps`: run id + sequence number (`u32` big-endian) → the run's steps. A live write
//!   step has an entry of its own, stored twice under the same key: first as `sending` (the
//!   intent, before the request leaves), then with its outcome, so a crash leaves exactly the
//!   writes whose outcome is unknown. Every other step is written with the run's other steps
//!   settled since its last write to history, as one entry under the lowest of their
//!   sequence numbers ([`History::put_steps`]): a begin → read → end run writes one entry, not
//!   three (each sled insert costs about as much as the rest of the run's engine work);
//! - `snapshots`: content hash → the workflow's YAML text, so a run can be replayed with the
//!   definition it ran, even after the file changed;
//! - `subjects`: lowercased subject key (an email) + `0x00` + run id → empty: a person's timeline.
//! - `workflow_runs`: workflow name + `0x00` + run id → empty: a workflow's runs, newest last, so
//!   listing a workflow's newest runs reads only its own, however rare it is among the others
//!   (the web console's runs page filters by workflow). A store written before it existed gets
//!   it built once, when its history is opened (the key `0x00` alone marks it built).
//!
//! Run and step entries are in the compact binary encoding of [`super::codec`] (MessagePack
//! behind a version byte, LZ4 on the longer ones): well under half the disk of their JSON,
//! which matters twice because sled writes each value several times (its log, then each
//! rewrite of the leaf that holds it). Entries written as JSON by earlier releases are read as they are,
//! and `history prune` rewrites them in the binary encoding.
//!
//! A parked run that continues by itself (`retrying`) has a durable timer ([`super::timers`]),
//! kept in step with its record by [`History::put_run`]; [`History::wake`] claims a run whose
//! timer fell due and [`History::cancel_parked`] cancels a parked run at once, each as one atomic
//! swap of the run record.
//!
//! Durability is group commit: writers put their entries, then await [`History::durable`]. One
//! caller at a time flushes (the leader: [`Store::flush`], sled's flush and one `fdatasync` of its
//! log, see [`super`]); every caller that arrives while that flush is in flight
//! waits for it to finish and then either finds its writes covered (they were made before the
//! leader started) or takes the lead of the next flush, which covers everyone waiting. So at most
//! one flush is in flight, many runs share each one, and no caller flushes twice.
//! Before it flushes, the leader yields once, so runs already scheduled to ask join its flush.
//! [`History::commit_stats`] counts the calls and the flushes, to measure how well they coalesce.
//! A sled flush covers the whole database and sled recovers a prefix of its log, so a flush also
//! makes durable every earlier write of any tree (a run's saves onto its subject record included).
//!
//! Retention ([`History::prune`]) keeps the compact run records and drops the step payloads
//! (requests, responses, saved fields and outputs) of runs finished before a cutoff;
//! [`History::delete_finished_before`] deletes whole finished runs, with everything kept for them
//! (index entries, timer, record watch, approval decisions and reminder, retry mark). Both go in
//! bounded batches ([`History::prune_batch`], [`BatchReport`]), for `serve`'s retention loop.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use ulid::Ulid;

use super::timers::Timers;
use super::{codec, timestamp, trees, Store, StoreError};

/// A run's id: a ULID, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub Ulid);

impl RunId {
    pub fn new() -> RunId {
        RunId(Ulid::new())
    }

    pub(crate) fn key(self) -> [u8; 16] {
        self.0 .0.to_be_bytes()
    }

    pub(crate) fn from_key(bytes: &[u8]) -> Option<RunId> {
        let bytes: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        Some(RunId(Ulid(u128::from_be_bytes(bytes))))
    }

    /// When the id was made.
    pub fn created_at(self) -> DateTime<Utc> {
        DateTime::<Utc>::from(self.0.datetime())
    }
}

impl Default for RunId {
    fn default() -> RunId {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for RunId {
    type Err = ulid::DecodeError;

    fn from_str(s: &str) -> Result<RunId, Self::Err> {
        Ulid::from_string(s.trim()).map(RunId)
    }
}

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; ulid::ULID_LEN];
        s.serialize_str(self.0.array_to_str(&mut buf))
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RunId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a run is in its life: the one vocabulary history, the API, the CLI (`--status`, the
/// exit codes of `run`, `resume`, `approve` and `replay`) and the demo use.
///
/// Not finished: `queued`, `running`, `retrying`, `waiting_approval`, `waiting` (a `wait` block)
/// and `held`. Finished: `succeeded` (every block that ran succeeded), `completed_with_failures`
/// (the run reached `end`, but a block failed and the run went on through its `on_failure` path:
/// never reported like `succeeded`), `failed`, `cancelled`, `needs_attention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for a slot (or for `serve` to pick it up).
    Queued,
    Running,
    /// A block's call failed transiently; the run waits for its next attempt, durably.
    Retrying,
    /// A block says `approval: required`; the run continues after `blockyard approve` (or
    /// `reject`). Not finished, but not resumed by `resume` either.
    WaitingApproval,
    /// A `wait` block waits, durably: the run continues by itself at `wake_at` (or when a write
    /// of its subject makes the wait's `wake_when` hold); its `error` says what it waits for.
    Waiting,
    /// Stopped before a destructive write by the mass-change guard until an operator releases
    /// or cancels the held batch (`blockyard guard`); its `error` says why.
    Held,
    /// Every block that ran succeeded, and the run reached `end`.
    Succeeded,
    /// The run reached `end` through a failure path: at least one block failed and its
    /// `on_failure` edge was taken.
    CompletedWithFailures,
    /// A block failed with no `on_failure` edge, or no path reached `end`.
    Failed,
    Cancelled,
    /// A write's outcome is unknown and no probe can tell: a person must look before it is sent.
    NeedsAttention,
}

impl RunStatus {
    pub const ALL: [RunStatus; 11] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Retrying,
        RunStatus::WaitingApproval,
        RunStatus::Waiting,
        RunStatus::Held,
        RunStatus::Succeeded,
        RunStatus::CompletedWithFailures,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::NeedsAttention,
    ];

    pub const NAMES: [&'static str; 11] = [
        "queued",
        "running",
        "retrying",
        "waiting_approval",
        "waiting",
        "held",
        "succeeded",
        "completed_with_failures",
        "failed",
        "cancelled",
        "needs_attention",
    ];

    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Retrying => "retrying",
            RunStatus::WaitingApproval => "waiting_approval",
            RunStatus::Waiting => "waiting",
            RunStatus::Held => "held",
            RunStatus::Succeeded => "succeeded",
            RunStatus::CompletedWithFailures => "completed_with_failures",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::NeedsAttention => "needs_attention",
        }
    }

    pub fn parse(name: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    /// True for a run that waits, not in flight, for a time (`retrying`, `waiting`: it has a
    /// timer, see [`super::timers`]) or a person (`waiting_approval`, `held`). `resume` leaves
    /// such a run alone; cancelling it cancels it at once ([`History::cancel_parked`]).
    /// The statuses of a run that continues later by itself (a timer) or by a person.
    pub const PARKED: [RunStatus; 4] = [
        RunStatus::WaitingApproval,
        RunStatus::Retrying,
        RunStatus::Waiting,
        RunStatus::Held,
    ];

    pub fn is_parked(self) -> bool {
        RunStatus::PARKED.contains(&self)
    }

    /// True once nothing more will happen to the run.
    pub fn is_finished(self) -> bool {
        match self {
            RunStatus::Queued
            | RunStatus::Running
            | RunStatus::Retrying
            | RunStatus::WaitingApproval
            | RunStatus::Waiting
            | RunStatus::Held => false,
            RunStatus::Succeeded
            | RunStatus::CompletedWithFailures
            | RunStatus::Failed
            | RunStatus::Cancelled
            | RunStatus::NeedsAttention => true,
        }
    }

    /// The exit code of a command that ran (or resumed, approved, replayed) a run and stopped
    /// with it in this status: 0 succeeded, 1 failed, 3 completed with failures, 4 needs
    /// attention, 5 cancelled, 6 not finished (2 is for usage and setup errors, before any run).
    pub fn exit_code(self) -> u8 {
        match self {
            RunStatus::Succeeded => 0,
            RunStatus::Failed => 1,
            RunStatus::CompletedWithFailures => 3,
            RunStatus::NeedsAttention => 4,
            RunStatus::Cancelled => 5,
            RunStatus::Queued
            | RunStatus::Running
            | RunStatus::Retrying
            | RunStatus::WaitingApproval
            | RunStatus::Waiting
            | RunStatus::Held => 6,
        }
    }
}

/// The exit codes [`RunStatus::exit_code`] gives, as `--help` shows them.
pub const EXIT_CODES: &str = "Exit codes: 0 succeeded; 1 failed; 2 usage or setup error (no run started); 3 completed_with_failures (a block failed and the run went on through its `on_failure` path); 4 needs_attention; 5 cancelled; 6 not finished (waiting_approval, waiting, retrying, queued).";

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// `blockyard run`, or the API's "start a run".
    Manual,
    /// A record event matched the Begin block's rules.
    Record,
    /// A schedule tick.
    Schedule,
    /// `blockyard replay`.
    Replay,
}

impl TriggerKind {
    pub const ALL: [TriggerKind; 4] = [
        TriggerKind::Manual,
        TriggerKind::Record,
        TriggerKind::Schedule,
        TriggerKind::Replay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TriggerKind::Manual => "manual",
            TriggerKind::Record => "record",
            TriggerKind::Schedule => "schedule",
            TriggerKind::Replay => "replay",
        }
    }

    pub fn parse(text: &str) -> Option<TriggerKind> {
        TriggerKind::ALL.into_iter().find(|k| k.name() == text)
    }
}

/// What started a run, with a human detail (`people/jane@acme.com updated`, the cron tick).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrigger {
    pub kind: TriggerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl RunTrigger {
    pub fn manual() -> RunTrigger {
        RunTrigger {
            kind: TriggerKind::Manual,
            detail: None,
        }
    }
}

impl fmt::Display for RunTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.name();
        match &self.detail {
            Some(detail) => write!(f, "{kind} ({detail})"),
            None => f.write_str(kind),
        }
    }
}

/// A run's subject: the record it is about, as it was when the run started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// `people` or `saas_users`.
    pub collection: String,
    /// The record's key in its collection (a lowercased email; `app/email` for SaaS users).
    pub key: String,
    /// The record's fields when the run started.
    pub record: Value,
}

impl Subject {
    /// The record's key in the records store, `collection/key` (what a `wait` watches).
    pub fn record_key(&self) -> String {
        format!("{}/{}", self.collection, self.key)
    }

    /// The key of the per-person index: the lowercased email, else the record key.
    pub fn index_key(&self) -> String {
        match self.record.get("email").and_then(Value::as_str) {
            Some(email) if !email.is_empty() => email.to_lowercase(),
            _ => self.key.to_lowercase(),
        }
    }
}

/// How the run sends vendor calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Reads and writes are sent; saves are written onto the subject record.
    #[default]
    Live,
    /// Reads are sent; writes are rendered and listed, not sent; nothing is saved.
    DryRun,
    /// Every call is answered from a recorded run; nothing is sent or saved.
    Offline,
}

/// The compact record of a run (kept by `history prune`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub workflow: String,
    /// The workflow file the run was started from.
    pub file: String,
    /// The content hash of the workflow snapshot (`snapshots` tree).
    pub snapshot: String,
    pub trigger: RunTrigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// The effective `vars` (config, overlaid by the workflow's, overlaid by `--var`).
    #[serde(default)]
    pub vars: Map<String, Value>,
    pub status: RunStatus,
    #[serde(default)]
    pub mode: RunMode,
    #[serde(serialize_with = "timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "timestamp::option"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "timestamp::option"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// The run this one replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<RunId>,
    /// For a replay `--from BLOCK`: the block it ran from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_block: Option<String>,
    /// Why the run failed, needs attention, (`retrying`) why its last attempt failed, or
    /// (`held`) why the guard holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a parked run continues by itself: a `retrying` run's next attempt, a `waiting` run's
    /// end of its wait. The store keeps a timer for it ([`super::timers`]); `None` for every
    /// other run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "timestamp::option"
    )]
    pub wake_at: Option<DateTime<Utc>>,
    /// True once `history prune` dropped the step payloads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
}

/// What happened to one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// A write's request is about to leave (or left): its outcome is not known yet.
    Sending,
    Succeeded,
    Failed,
    /// No edge into the block was taken.
    Skipped,
    /// Dry run: a write rendered and held back.
    Planned,
    /// The block needs an administrator's approval before it runs.
    WaitingApproval,
    /// The block's call failed transiently (429, 5xx, 408, a timeout, a connection error): the
    /// block is tried again at the step's `retry.next_at`, and has not settled.
    Retrying,
    /// A destructive write held by the mass-change guard, not sent; it goes when the held batch
    /// is released (see [`crate::exec::guard`]).
    Held,
    /// A `wait` block waiting: its `outputs.until` is when it ends, unless `wake_when` holds
    /// first; it has not settled.
    Waiting,
}

impl StepStatus {
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Sending => "sending",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Planned => "planned",
            StepStatus::WaitingApproval => "waiting_approval",
            StepStatus::Retrying => "retrying",
            StepStatus::Held => "held",
            StepStatus::Waiting => "waiting",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A vendor response as history keeps it: redacted, the body capped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: Map<String, Value>,
    pub body: Value,
    /// True when the body was longer than the cap and is kept as a truncated string.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One block of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run: RunId,
    /// Order within the run.
    pub seq: u32,
    pub block: String,
    /// `begin`, `api`, `role_retrieval`, `end`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// True for a preset action of kind `write`.
    #[serde(default)]
    pub write: bool,
    pub status: StepStatus,
    /// HTTP requests sent for the block (retries, pages and a merge's read included).
    #[serde(default)]
    pub attempts: u32,
    /// The resolved preset inputs (what a probe or a resume renders the request from again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
    /// The rendered request, secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// The base URL the request was rendered below (the credential's, else the vendor's): an
    /// offline replay without a config renders with it. Runs recorded before it was kept have
    /// none; their replay derives it from `request.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<StepResponse>,
    /// Fields written onto the subject record.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub saved: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Something worth knowing that is not an error (a probe's verdict, a held-back write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A durable retry: set on a `retrying` step, and on the `failed` step of a block that gave
    /// up after transient failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<StepRetry>,
    #[serde(serialize_with = "timestamp::serialize")]
    pub started_at: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "timestamp::option"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time of the block, in microseconds.
    #[serde(default)]
    pub duration_us: u64,
    /// Time spent in vendor calls, in microseconds.
    #[serde(default)]
    pub http_us: u64,
}

impl StepRecord {
    /// A step of `block` with nothing recorded yet: no call, no response, no saves, started `at`.
    pub fn new(
        run: RunId,
        seq: u32,
        block: &str,
        kind: &str,
        status: StepStatus,
        at: DateTime<Utc>,
    ) -> StepRecord {
        StepRecord {
            run,
            seq,
            block: block.to_owned(),
            kind: kind.to_owned(),
            preset: None,
            write: false,
            status,
            attempts: 0,
            inputs: None,
            request: None,
            base_url: None,
            response: None,
            saved: Map::new(),
            outputs: Map::new(),
            error: None,
            note: None,
            retry: None,
            started_at: at,
            finished_at: None,
            duration_us: 0,
            http_us: 0,
        }
    }
}

/// Where a block is in its durable retries (see [`StepStatus::Retrying`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRetry {
    /// Which attempt of the block this step was: 1 for the first call that failed transiently.
    pub attempt: u32,
    /// When the block first failed transiently; `retry.give_up_after` counts from here.
    #[serde(serialize_with = "timestamp::serialize")]
    pub since: DateTime<Utc>,
    /// When the block is tried again; `None` once it gave up.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "timestamp::option"
    )]
    pub next_at: Option<DateTime<Utc>>,
}

/// Which runs `history list` shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<RunStatus>,
    /// A person's email (case-insensitive): their runs across all workflows.
    pub subject: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
    /// What started the runs.
    pub trigger: Option<TriggerKind>,
    /// Only runs older than this one (a page's cursor: the last run of the page before).
    pub before: Option<RunId>,
}

/// What `history prune` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub runs: usize,
    pub steps: usize,
}

/// What one batch of retention did ([`History::prune_batch`],
/// [`History::delete_finished_before`]): the runs pruned or deleted, their steps, and where the
/// next batch starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    pub runs: usize,
    pub steps: usize,
    /// The last run this batch looked at, when runs are left after it: the next batch goes on
    /// after it. `None` when the batch looked at the last run.
    pub next: Option<RunId>,
}

/// The run history of one store.
#[derive(Clone)]
pub struct History {
    store: Store,
    runs: sled::Tree,
    steps: sled::Tree,
    snapshots: sled::Tree,
    subjects: sled::Tree,
    workflows: sled::Tree,
    timers: Timers,
    commit: Arc<GroupCommit>,
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("dir", &self.store.dir())
            .finish()
    }
}

struct GroupCommit {
    /// Tickets handed out: each caller of `durable` takes the next one.
    requested: AtomicU64,
    /// Every ticket up to this one is durable; changes wake the waiting callers.
    done: tokio::sync::watch::Sender<u64>,
    /// True while a leader's flush is in flight.
    flushing: AtomicBool,
    /// Flushes started (each one sled `flush`).
    flushes: AtomicU64,
}

impl Default for GroupCommit {
    fn default() -> GroupCommit {
        GroupCommit {
            requested: AtomicU64::new(0),
            done: tokio::sync::watch::Sender::new(0),
            flushing: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
        }
    }
}

/// Ends a leader's turn even when its future is dropped mid-flush: clears `flushing` and wakes
/// the waiters (one of them takes the lead if its writes are not covered yet).
struct LeaderTurn<'a> {
    commit: &'a GroupCommit,
    covered: Option<u64>,
}

impl Drop for LeaderTurn<'_> {
    fn drop(&mut self) {
        self.commit.flushing.store(false, Ordering::SeqCst);
        let covered = self.covered;
        self.commit.done.send_modify(|done| {
            if let Some(covered) = covered {
                *done = (*done).max(covered);
            }
        });
    }
}

/// How many callers asked for durability and how many flushes served them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Calls of [`History::durable`].
    pub calls: u64,
    /// sled flushes those calls caused.
    pub flushes: u64,
}

fn corrupt(tree: &'static str, key: &[u8], err: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        message: err.to_string(),
    }
}

fn step_key(run: RunId, seq: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(&run.key());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The record of a `runs` entry, in either encoding ([`codec`]) (also `store copy`'s reader).
pub(crate) fn decode_run(key: &[u8], value: &[u8]) -> Result<RunRecord, StoreError> {
    let Some(id) = RunId::from_key(key) else {
        return Err(corrupt(trees::RUNS, key, "the key is not a run id"));
    };
    codec::decode_run(id, value).map_err(|err| corrupt(trees::RUNS, id.to_string().as_bytes(), err))
}

/// The steps of one `steps` entry (one step or several), in either encoding ([`codec`]) (also
/// `store copy`'s reader).
pub(crate) fn decode_steps(key: &[u8], value: &[u8]) -> Result<Vec<StepRecord>, StoreError> {
    let Some(run) = RunId::from_key(key) else {
        return Err(corrupt(
            trees::STEPS,
            key,
            "the key is not a run id and a sequence number",
        ));
    };
    codec::decode_steps(run, value).map_err(|err| {
        let seq = key
            .get(16..20)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap_or_default()));
        corrupt(trees::STEPS, format!("{run}/{seq}").as_bytes(), err)
    })
}

/// The content hash of a workflow snapshot: FNV-1a 64 over the text, as 16 hex digits (stable
/// across builds and platforms, unlike std's hasher).
pub fn snapshot_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl History {
    /// The history trees of `store`.
    pub fn open(store: &Store) -> Result<History, StoreError> {
        let history = History {
            store: store.clone(),
            runs: store.tree(trees::RUNS)?,
            steps: store.tree(trees::STEPS)?,
            snapshots: store.tree(trees::SNAPSHOTS)?,
            subjects: store.tree(trees::SUBJECTS)?,
            workflows: store.tree(trees::WORKFLOWS)?,
            timers: Timers::open(store)?,
            commit: Arc::default(),
        };
        history.build_workflow_index()?;
        Ok(history)
    }

    /// The marker of a built workflow index (no workflow name is empty).
    const WORKFLOWS_BUILT: &'static [u8] = &[0];

    /// `workflow \0 run id`: a run's entry in the workflow index.
    fn workflow_key(workflow: &str, id: RunId) -> Vec<u8> {
        let mut key = Vec::with_capacity(workflow.len() + 17);
        key.extend_from_slice(workflow.as_bytes());
        key.push(0);
        key.extend_from_slice(&id.key());
        key
    }

    /// Indexes every run by workflow once, for a store written before the index existed.
    fn build_workflow_index(&self) -> Result<(), StoreError> {
        if self.workflows.contains_key(History::WORKFLOWS_BUILT)? {
            return Ok(());
        }
        let _writing = self.store.gate().writing();
        for entry in self.runs.iter() {
            let (key, value) = entry?;
            let run: RunRecord = decode_run(&key, &value)?;
            self.workflows
                .insert(History::workflow_key(&run.workflow, run.id), &[])?;
        }
        self.workflows.insert(History::WORKFLOWS_BUILT, &[])?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The parked runs' timers (kept in step with the run records by [`History::put_run`]).
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// Makes every history write made before this call durable, sharing the fsync with every
    /// concurrent caller (group commit).
    pub async fn durable(&self) -> Result<(), StoreError> {
        let commit = &self.commit;
        let mut done = commit.done.subscribe();
        let ticket = commit.requested.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            if *done.borrow_and_update() >= ticket {
                return Ok(());
            }
            if !commit.flushing.swap(true, Ordering::SeqCst) {
                // The leader: every ticket handed out so far had its writes made before it was
                // taken, so this flush covers them all.
                let mut turn = LeaderTurn {
                    commit,
                    covered: None,
                };
                // Before flushing, every task already scheduled on this worker runs once: runs
                // about to ask for durability take their tickets now and share this flush instead
                // of waiting for the next one (at 64 and 1,000 runs in flight this cut sled
                // flushes per run from about 0.15 to 0.04; more passes only lengthened the wait).
                tokio::task::yield_now().await;
                let covered = commit.requested.load(Ordering::SeqCst);
                commit.flushes.fetch_add(1, Ordering::Relaxed);
                self.store.flush().await?;
                turn.covered = Some(covered);
                drop(turn);
                continue;
            }
            // A flush is in flight: wait for it to end (the sender lives as long as `self`).
            if done.changed().await.is_err() {
                return Err(StoreError::Io {
                    message: "the history closed while waiting for a flush".to_owned(),
                });
            }
        }
    }

    /// Calls of [`History::durable`] and flushes so far (shared by every clone of this history).
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            calls: self.commit.requested.load(Ordering::Relaxed),
            flushes: self.commit.flushes.load(Ordering::Relaxed),
        }
    }

    /// Stores a workflow's text and returns its hash (a no-op when already stored).
    pub fn put_snapshot(&self, text: &str) -> Result<String, StoreError> {
        let hash = snapshot_hash(text);
        if !self.snapshots.contains_key(hash.as_bytes())? {
            let _writing = self.store.gate().writing();
            self.snapshots.insert(hash.as_bytes(), text.as_bytes())?;
        }
        Ok(hash)
    }

    /// A stored workflow text.
    pub fn snapshot(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .snapshots
            .get(hash.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Writes a run record (creating it, or replacing the stored one) and, while the run is
    /// `queued` or `running` (a run record is always first written in one of those), its subject
    /// index entry: later writes of the record find it there already.
    ///
    /// The run's timer follows the record: a record with a `wake_at` sets it (before the record
    /// is written), any other drops it (after), so a cancelled or finished run never wakes. A
    /// crash between the two leaves at most a stale timer, which [`History::wake`] ignores.
    pub fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let _writing = self.store.gate().writing();
        if let Some(at) = run.wake_at {
            self.timers.set(run.id, at)?;
        }
        self.runs.insert(run.id.key(), codec::encode_run(run))?;
        if run.wake_at.is_none() {
            self.timers.cancel(run.id)?;
        }
        if run.status != RunStatus::Waiting {
            if let Some(subject) = &run.subject {
                self.timers.unwatch(run.id, &subject.record_key())?;
            }
        }
        let first_write = matches!(run.status, RunStatus::Queued | RunStatus::Running);
        if let Some(subject) = run.subject.as_ref().filter(|_| first_write) {
            let mut key = subject.index_key().into_bytes();
            key.push(0);
            key.extend_from_slice(&run.id.key());
            self.subjects.insert(key, &[])?;
        }
        if first_write {
            self.workflows
                .insert(History::workflow_key(&run.workflow, run.id), &[])?;
        }
        Ok(())
    }

    /// One run.
    pub fn run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        let key = id.key();
        match self.runs.get(key)? {
            None => Ok(None),
            Some(bytes) => decode_run(&key, &bytes).map(Some),
        }
    }

    /// Writes a step (a later write under the same `seq` replaces it).
    pub fn put_step(&self, step: &StepRecord) -> Result<(), StoreError> {
        let _writing = self.store.gate().writing();
        self.steps
            .insert(step_key(step.run, step.seq), codec::encode_steps(&[step]))?;
        Ok(())
    }

    /// Writes steps of one run as one entry, under the lowest of their sequence numbers (a single
    /// step is written as by [`History::put_step`]). None of them may have an entry of its own:
    /// a step's sequence number is in exactly one entry.
    pub fn put_steps(&self, steps: &[&StepRecord]) -> Result<(), StoreError> {
        match steps {
            [] => Ok(()),
            [step] => self.put_step(step),
            [first, rest @ ..] => {
                let seq = rest.iter().fold(first.seq, |low, s| low.min(s.seq));
                let _writing = self.store.gate().writing();
                self.steps
                    .insert(step_key(first.run, seq), codec::encode_steps(steps))?;
                Ok(())
            }
        }
    }

    /// A run's steps, in order.
    pub fn steps(&self, id: RunId) -> Result<Vec<StepRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.steps.scan_prefix(id.key()) {
            let (key, value) = entry?;
            out.extend(decode_steps(&key, &value)?);
        }
        // Entries sort by their lowest sequence number; a later entry can hold an earlier step
        // (a block that settled while a later-numbered one was still in flight).
        out.sort_by_key(|s| s.seq);
        Ok(out)
    }

    /// The `(key's sequence number, steps in the entry)` of each of a run's `steps` entries.
    #[cfg(test)]
    pub(crate) fn entries(&self, run: RunId) -> Vec<(u32, usize)> {
        self.steps
            .scan_prefix(run.key())
            .map(|entry| {
                let (key, value) = entry.unwrap();
                let seq = u32::from_be_bytes(key[16..].try_into().unwrap());
                (seq, decode_steps(&key, &value).unwrap().len())
            })
            .collect()
    }

    /// Runs matching `filter`, newest first.
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let keep = |run: &RunRecord| {
            filter.workflow.as_ref().is_none_or(|w| &run.workflow == w)
                && filter.status.is_none_or(|s| run.status == s)
                && filter.since.is_none_or(|since| run.created_at >= since)
                && filter.trigger.is_none_or(|t| run.trigger.kind == t)
        };
        match &filter.subject {
            Some(subject) => {
                let mut prefix = subject.to_lowercase().into_bytes();
                prefix.push(0);
                // Before the cursor: the subject's index keys below `prefix + cursor`.
                let mut end = prefix.clone();
                match filter.before {
                    Some(before) => end.extend_from_slice(&before.key()),
                    None => end.push(0xff),
                }
                for entry in self.subjects.range(prefix.clone()..end).rev() {
                    let (key, _) = entry?;
                    let Some(id) = RunId::from_key(&key[prefix.len()..]) else {
                        continue;
                    };
                    if let Some(run) = self.run(id)? {
                        if keep(&run) {
                            out.push(run);
                            if out.len() >= limit {
                                break;
                            }
                        }
                    }
                }
            }
            None if filter.workflow.is_some() => {
                let workflow = filter.workflow.as_deref().unwrap_or_default();
                let prefix = History::workflow_key(workflow, RunId(Ulid(0)));
                let prefix = &prefix[..workflow.len() + 1];
                let end = match filter.before {
                    Some(before) => History::workflow_key(workflow, before),
                    None => {
                        let mut end = prefix.to_vec();
                        end.push(0xff);
                        end
                    }
                };
                for entry in self.workflows.range(prefix.to_vec()..end).rev() {
                    let (key, _) = entry?;
                    let Some(id) = RunId::from_key(&key[prefix.len()..]) else {
                        continue;
                    };
                    let Some(run) = self.run(id)? else {
                        continue;
                    };
                    if filter.since.is_some_and(|since| run.created_at < since) {
                        break; // ids sort by time: everything further is older
                    }
                    if keep(&run) {
                        out.push(run);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            None => {
                let runs = match filter.before {
                    Some(before) => self.runs.range(..before.key()),
                    None => self.runs.range::<&[u8], _>(..),
                };
                for entry in runs.rev() {
                    let (key, value) = entry?;
                    let run: RunRecord = decode_run(&key, &value)?;
                    if filter.since.is_some_and(|since| run.created_at < since) {
                        break; // ids sort by time: everything further is older
                    }
                    if keep(&run) {
                        out.push(run);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Claims a parked run whose timer fell due, to continue it: a `retrying` (or `waiting`)
    /// record becomes `running` (its `wake_at` cleared, its timer dropped) in one atomic swap, so
    /// of two callers waking the same run only one gets it. Returns the record to resume, or
    /// `None` when the run is not parked on a timer (cancelled, finished, already woken): its
    /// stale timer, if any, is dropped.
    pub fn wake(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.swap_parked(id, |run| {
            matches!(run.status, RunStatus::Retrying | RunStatus::Waiting).then(|| RunRecord {
                status: RunStatus::Running,
                wake_at: None,
                ..run.clone()
            })
        })
    }

    /// Cancels a parked run (see [`RunStatus::is_parked`]) at once: it becomes `cancelled` with
    /// `reason` as its error, and its timer is dropped, in one atomic swap (a timer waking it at
    /// the same moment finds it cancelled). Returns the cancelled record, or `None` when the run
    /// is not parked (in flight, finished, or unknown). Not flushed.
    pub fn cancel_parked(
        &self,
        id: RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.swap_parked(id, |run| {
            run.status.is_parked().then(|| RunRecord {
                status: RunStatus::Cancelled,
                error: Some(reason.to_owned()),
                finished_at: Some(at),
                wake_at: None,
                ..run.clone()
            })
        })
    }

    /// Replaces run `id`'s record with `change(record)` when that is `Some`, atomically (a
    /// compare-and-swap, tried again if another writer got there first), then drops its timer.
    fn swap_parked(
        &self,
        id: RunId,
        change: impl Fn(&RunRecord) -> Option<RunRecord>,
    ) -> Result<Option<RunRecord>, StoreError> {
        let key = id.key();
        loop {
            let Some(old) = self.runs.get(key)? else {
                self.timers.cancel(id)?;
                return Ok(None);
            };
            let run: RunRecord = decode_run(&key, &old)?;
            let Some(new) = change(&run) else {
                if run.wake_at.is_none() {
                    self.timers.cancel(id)?;
                }
                return Ok(None);
            };
            let swapped = {
                let _writing = self.store.gate().writing();
                self.runs
                    .compare_and_swap(key, Some(old), Some(codec::encode_run(&new)))?
            };
            if swapped.is_ok() {
                self.timers.cancel(id)?;
                if let Some(subject) = &new.subject {
                    self.timers.unwatch(id, &subject.record_key())?;
                }
                return Ok(Some(new));
            }
        }
    }

    /// Runs that were queued or running when their process stopped, oldest first (not the
    /// parked ones: a timer or a person continues those).
    pub fn unfinished(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.runs.iter() {
            let (key, value) = entry?;
            let run: RunRecord = decode_run(&key, &value)?;
            // A run waiting for approval continues when approved, a retrying one when its timer
            // falls due: not on `resume`.
            if !run.status.is_finished() && !run.status.is_parked() {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// How many runs are parked in each of [`RunStatus::PARKED`], in that order (one pass over
    /// the runs; `serve`'s `/metrics`).
    pub fn parked_counts(&self) -> Result<[(RunStatus, usize); 4], StoreError> {
        let mut counts = RunStatus::PARKED.map(|status| (status, 0));
        for entry in self.runs.iter() {
            let (key, value) = entry?;
            let run: RunRecord = decode_run(&key, &value)?;
            if let Some((_, n)) = counts.iter_mut().find(|(status, _)| *status == run.status) {
                *n += 1;
            }
        }
        Ok(counts)
    }

    /// Drops the step payloads (request, response, saved fields, outputs, inputs) of runs that
    /// finished before `cutoff`; run records, step statuses and timings stay.
    pub fn prune(&self, cutoff: DateTime<Utc>) -> Result<PruneReport, StoreError> {
        let batch = self.prune_batch(cutoff, None, usize::MAX)?;
        Ok(PruneReport {
            runs: batch.runs,
            steps: batch.steps,
        })
    }

    /// The runs after `after` (all when `None`), in id order.
    fn runs_after(&self, after: Option<RunId>) -> sled::Iter {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |id| Bound::Excluded(id.key()));
        self.runs.range::<[u8; 16], _>((start, Bound::Unbounded))
    }

    /// One batch of [`History::prune`]: looks at up to `limit` runs after `after`, in id order,
    /// and prunes those finished before `cutoff`.
    pub fn prune_batch(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> Result<BatchReport, StoreError> {
        let mut report = BatchReport::default();
        let (mut looked, mut last) = (0, None);
        for entry in self.runs_after(after) {
            if looked == limit.max(1) {
                report.next = last;
                break;
            }
            looked += 1;
            let (key, value) = entry?;
            let mut run: RunRecord = decode_run(&key, &value)?;
            last = Some(run.id);
            let old = run.finished_at.is_some_and(|at| at < cutoff);
            if !old || run.pruned || !run.status.is_finished() {
                continue;
            }
            let entries: Vec<_> = self
                .steps
                .scan_prefix(run.id.key())
                .collect::<Result<_, _>>()?;
            for (key, value) in entries {
                let mut steps = decode_steps(&key, &value)?;
                for step in &mut steps {
                    step.inputs = None;
                    step.request = None;
                    step.response = None;
                    step.saved.clear();
                    step.outputs.clear();
                }
                report.steps += steps.len();
                let value = codec::encode_steps(&steps.iter().collect::<Vec<_>>());
                let _writing = self.store.gate().writing();
                self.steps.insert(key, value)?;
            }
            run.pruned = true;
            self.put_run(&run)?;
            report.runs += 1;
        }
        Ok(report)
    }

    /// Deletes whole runs that finished before `cutoff` (see [`BatchReport`]): looks at up to
    /// `limit` runs after `after`, in id order. A run goes with its steps, its subject and
    /// workflow index entries, and its timer, record watch, approval decisions, approval
    /// reminder and retry mark, in one transaction; a run not finished (queued, running or
    /// parked) is never touched, and workflow snapshots stay (other runs may share them).
    pub fn delete_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> Result<BatchReport, StoreError> {
        let others = RunTrees {
            approvals: self.store.tree(super::approvals::APPROVALS)?,
            reminders: self.store.tree(super::reminders::REMINDERS)?,
            retried: self.store.tree(super::retries::TREE)?,
        };
        let mut report = BatchReport::default();
        let (mut looked, mut last) = (0, None);
        for entry in self.runs_after(after) {
            if looked == limit.max(1) {
                report.next = last;
                break;
            }
            looked += 1;
            let (key, value) = entry?;
            let run: RunRecord = decode_run(&key, &value)?;
            last = Some(run.id);
            let old = run.finished_at.is_some_and(|at| at < cutoff);
            if !old || !run.status.is_finished() {
                continue;
            }
            if let Some(steps) = self.delete_run(&run, &value, &others)? {
                report.runs += 1;
                report.steps += steps;
            }
        }
        Ok(report)
    }

    /// Deletes `run` (stored as `stored`) and everything kept for it, in one transaction;
    /// `None` when its record changed since it was read (it is looked at again next time).
    fn delete_run(
        &self,
        run: &RunRecord,
        stored: &[u8],
        others: &RunTrees,
    ) -> Result<Option<usize>, StoreError> {
        let mut steps = 0;
        let mut step_keys = Vec::new();
        for entry in self.steps.scan_prefix(run.id.key()) {
            let (key, value) = entry?;
            steps += decode_steps(&key, &value)?.len();
            step_keys.push(key);
        }
        let mut decisions = run.id.to_string().into_bytes();
        decisions.push(0);
        let decision_keys: Vec<sled::IVec> = others
            .approvals
            .scan_prefix(&decisions)
            .keys()
            .collect::<Result<_, _>>()?;
        let subject_key = run.subject.as_ref().map(|subject| {
            let mut key = subject.index_key().into_bytes();
            key.push(0);
            key.extend_from_slice(&run.id.key());
            key
        });
        let watched = run.subject.as_ref().map(Subject::record_key);
        let workflow_key = History::workflow_key(&run.workflow, run.id);
        let (watches, by_time, by_run) = self.timers.trees();
        let trees = [
            &self.runs,
            &self.steps,
            &self.subjects,
            &self.workflows,
            watches,
            by_time,
            by_run,
            &others.approvals,
            &others.reminders,
            &others.retried,
        ];
        let id = run.id.key();
        let _writing = self.store.gate().writing();
        let result = trees[..].transaction(|trees| {
            let [runs, steps, subjects, workflows, watches, by_time, by_run, approvals, reminders, retried] =
                &trees[..]
            else {
                unreachable!("ten trees");
            };
            if runs.get(id)?.as_deref() != Some(stored) {
                return Err(ConflictableTransactionError::Abort(()));
            }
            runs.remove(&id)?;
            for key in &step_keys {
                steps.remove(key)?;
            }
            if let Some(key) = &subject_key {
                subjects.remove(key.as_slice())?;
            }
            workflows.remove(workflow_key.as_slice())?;
            if let Some(record) = &watched {
                if let Some(runs) = watches.get(record.as_bytes())? {
                    let kept: Vec<u8> = runs
                        .chunks(16)
                        .filter(|c| *c != id)
                        .flatten()
                        .copied()
                        .collect();
                    if kept.is_empty() {
                        watches.remove(record.as_bytes())?;
                    } else if kept.len() != runs.len() {
                        watches.insert(record.as_bytes(), kept)?;
                    }
                }
            }
            if let Some(timer) = by_run.remove(&id)? {
                by_time.remove(timer)?;
            }
            for key in &decision_keys {
                approvals.remove(key)?;
            }
            reminders.remove(&id)?;
            retried.remove(run.id.to_string().as_bytes())?;
            Ok(())
        });
        match result {
            Ok(()) => Ok(Some(steps)),
            Err(TransactionError::Abort(())) => Ok(None),
            Err(TransactionError::Storage(err)) => Err(err.into()),
        }
    }
}

/// The trees of other concerns that keep something per run (see
/// [`History::delete_finished_before`]).
struct RunTrees {
    approvals: sled::Tree,
    reminders: sled::Tree,
    retried: sled::Tree,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_record(status: RunStatus) -> RunRecord {
        let id = RunId::new();
        RunRecord {
            id,
            workflow: "w".to_owned(),
            file: "w.yaml".to_owned(),
            snapshot: "0".repeat(16),
            trigger: RunTrigger::manual(),
            subject: None,
            vars: Map::new(),
            status,
            mode: RunMode::Live,
            created_at: id.created_at(),
            started_at: None,
            finished_at: None,
            replay_of: None,
            from_block: None,
            error: None,
            wake_at: None,
            pruned: false,
        }
    }

    fn step(run: RunId, seq: u32, block: &str) -> StepRecord {
        let mut step = StepRecord::new(run, seq, block, "api", StepStatus::Succeeded, Utc::now());
        step.response = Some(StepResponse {
            status: 200,
            headers: Map::new(),
            body: serde_json::json!({ "block": block }),
            truncated: false,
        });
        step
    }

    #[test]
    fn a_store_without_the_workflow_index_gets_it_built_when_its_history_opens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::open(&store).unwrap();
        let mut ids = Vec::new();
        for workflow in ["a", "b", "a", "ab", "a"] {
            let mut run = run_record(RunStatus::Running);
            run.workflow = workflow.to_owned();
            history.put_run(&run).unwrap();
            ids.push((workflow, run.id));
        }
        let of = |history: &History, workflow: &str| -> Vec<RunId> {
            let filter = RunFilter {
                workflow: Some(workflow.to_owned()),
                ..RunFilter::default()
            };
            history
                .list(&filter)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect()
        };
        let mut want: Vec<RunId> = ids
            .iter()
            .filter(|(w, _)| *w == "a")
            .map(|(_, id)| *id)
            .collect();
        want.sort_by_key(|id| std::cmp::Reverse(*id));
        assert_eq!(of(&history, "a"), want);
        // As a store written before the index: the tree is empty, the marker gone.
        store.tree(trees::WORKFLOWS).unwrap().clear().unwrap();
        assert_eq!(
            of(&history, "a"),
            Vec::<RunId>::new(),
            "the index is what is read"
        );
        let reopened = History::open(&store).unwrap();
        assert_eq!(of(&reopened, "a"), want);
        assert_eq!(of(&reopened, "ab").len(), 1);
        assert_eq!(of(&reopened, "c").len(), 0);
    }

    #[test]
    fn steps_written_together_are_one_entry_and_read_back_in_order_and_prune_keeps_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::open(&store).unwrap();
        let mut run = run_record(RunStatus::Succeeded);
        run.finished_at = Some(Utc::now());
        history.put_run(&run).unwrap();
        // A write (seq 1) in flight while a parallel read (seq 2) settles: the read is written
        // with `begin` (seq 0) before the write's outcome, then `end` (seq 3) on its own.
        let (begin, write, read, end) = (
            step(run.id, 0, "begin"),
            step(run.id, 1, "write"),
            step(run.id, 2, "read"),
            step(run.id, 3, "end"),
        );
        history.put_steps(&[&read, &begin]).unwrap();
        history.put_step(&write).unwrap();
        history.put_steps(&[&end]).unwrap();
        history.put_steps(&[]).unwrap();
        assert_eq!(history.entries(run.id), [(0, 2), (1, 1), (3, 1)]);
        let blocks = |steps: Vec<StepRecord>| -> Vec<(u32, String)> {
            steps.into_iter().map(|s| (s.seq, s.block)).collect()
        };
        let order = [(0, "begin"), (1, "write"), (2, "read"), (3, "end")]
            .map(|(seq, block)| (seq, block.to_owned()));
        assert_eq!(blocks(history.steps(run.id).unwrap()), order);
        assert_eq!(history.steps(run.id).unwrap()[2], read);

        let report = history.prune(Utc::now()).unwrap();
        assert_eq!(report, PruneReport { runs: 1, steps: 4 });
        assert_eq!(history.entries(run.id), [(0, 2), (1, 1), (3, 1)]);
        let pruned = history.steps(run.id).unwrap();
        assert_eq!(blocks(pruned.clone()), order);
        assert!(pruned.iter().all(|s| s.response.is_none()));
        assert_eq!(pruned[2].status, StepStatus::Succeeded);
    }

    /// A run record with every field set, and odd values where an encoding could slip: a
    /// nanosecond timestamp, floats, a negative and a huge integer, key order, unicode.
    fn full_run() -> RunRecord {
        let mut run = run_record(RunStatus::Retrying);
        run.trigger = RunTrigger {
            kind: TriggerKind::Record,
            detail: Some("people/jane@acme.com updated".to_owned()),
        };
        run.subject = Some(Subject {
            collection: "people".to_owned(),
            key: "jane@acme.com".to_owned(),
            record: serde_json::json!({"email": "Jane@Acme.com", "z": 1, "a": [1.5, -2, null, true], "big": u64::MAX, "name": "Jäne ✓"}),
        });
        run.vars = serde_json::json!({"org": "o1", "n": 0.1, "nested": {"b": 1, "a": 2}})
            .as_object()
            .unwrap()
            .clone();
        run.mode = RunMode::DryRun;
        run.started_at = Some(DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap());
        run.finished_at = Some(DateTime::from_timestamp(1_764_000_001, 0).unwrap());
        run.replay_of = Some(RunId::new());
        run.from_block = Some("me".to_owned());
        run.error = Some("429 from `calendly`".to_owned());
        run.wake_at = Some(DateTime::from_timestamp(253_402_300_799, 999_000_000).unwrap());
        run.pruned = true;
        run
    }

    /// A write step with every field set.
    fn full_step(run: RunId, seq: u32) -> StepRecord {
        let mut step = step(run, seq, "remove");
        step.preset = Some("calendly.remove_member".to_owned());
        step.write = true;
        step.status = StepStatus::Failed;
        step.attempts = 3;
        step.inputs = Some(serde_json::json!({"membership": "m1"}));
        step.request = Some(
            serde_json::json!({"method": "DELETE", "url": "https://x/m1", "headers": {"Authorization": "[redacted]"}}),
        );
        step.base_url = Some("https://x".to_owned());
        if let Some(response) = &mut step.response {
            response.status = 503;
            response
                .headers
                .insert("retry-after".to_owned(), "2".into());
            response.truncated = true;
        }
        step.saved.insert("removed".to_owned(), true.into());
        step.outputs.insert("count".to_owned(), 2.5.into());
        step.error = Some("503".to_owned());
        step.note = Some("gave up".to_owned());
        step.retry = Some(StepRetry {
            attempt: 3,
            since: DateTime::from_timestamp(1_764_000_000, 1).unwrap(),
            next_at: None,
        });
        step.finished_at = Some(DateTime::from_timestamp(1_764_000_002, 500_000).unwrap());
        step.duration_us = 1_234_567;
        step.http_us = 987;
        step
    }

    #[test]
    fn the_binary_encoding_reads_back_the_same_records_and_the_same_json() {
        let run = full_run();
        let value = codec::encode_run(&run);
        assert_eq!(
            value[0],
            codec::COMPRESSED,
            "a record this long is compressed"
        );
        let back = decode_run(&run.id.key(), &value).unwrap();
        assert_eq!(back, run);
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&run).unwrap(),
            "`history show --json` prints the same text"
        );
        let bare = run_record(RunStatus::Queued);
        let value = codec::encode_run(&bare);
        assert_eq!(value[0], codec::VERSION, "a short record is kept as it is");
        assert_eq!(decode_run(&bare.id.key(), &value).unwrap(), bare);

        let steps = [
            full_step(run.id, 4),
            StepRecord::new(
                run.id,
                2,
                "begin",
                "begin",
                StepStatus::Succeeded,
                Utc::now(),
            ),
        ];
        let key = step_key(run.id, 2);
        let value = codec::encode_steps(&steps.iter().collect::<Vec<_>>());
        let back = decode_steps(&key, &value).unwrap();
        assert_eq!(back, steps);
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&steps).unwrap()
        );
        // Smaller than its JSON.
        assert!(value.len() < serde_json::to_vec(&steps).unwrap().len());
    }

    #[test]
    fn an_entry_in_an_unknown_encoding_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::open(&store).unwrap();
        let run = run_record(RunStatus::Succeeded);
        store
            .tree(trees::RUNS)
            .unwrap()
            .insert(run.id.key(), &[7, 1, 2][..])
            .unwrap();
        assert_eq!(
            history.run(run.id).unwrap_err().to_string(),
            format!("a stored `runs` entry `{}` is unreadable: unknown encoding (first byte 0x07; this blockyard reads JSON and binary versions 1 and 2): it may have been written by a newer blockyard", run.id)
        );
        // A damaged length is not believed (nor allocated).
        let other = run_record(RunStatus::Succeeded);
        store
            .tree(trees::RUNS)
            .unwrap()
            .insert(other.id.key(), &[2, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3][..])
            .unwrap();
        assert_eq!(
            history.run(other.id).unwrap_err().to_string(),
            format!("a stored `runs` entry `{}` is unreadable: the compressed entry says 2147483647 bytes, more than its 3 bytes can hold", other.id)
        );
        store
            .tree(trees::STEPS)
            .unwrap()
            .insert(step_key(run.id, 3), &[0x01, 0xc1][..])
            .unwrap();
        assert!(history
            .steps(run.id)
            .unwrap_err()
            .to_string()
            .starts_with(&format!(
                "a stored `steps` entry `{}/3` is unreadable: ",
                run.id
            )));
    }

    #[test]
    fn a_data_dir_written_as_json_reads_back_identically_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // As the JSON releases wrote it: each record a JSON object, steps written together a
        // JSON array under the lowest of their sequence numbers, with the indexes.
        let mut run = full_run();
        run.status = RunStatus::Failed;
        run.wake_at = None;
        run.pruned = false;
        let steps = [
            step(run.id, 0, "begin"),
            full_step(run.id, 1),
            step(run.id, 2, "read"),
            step(run.id, 3, "end"),
        ];
        let (runs, step_tree) = (
            store.tree(trees::RUNS).unwrap(),
            store.tree(trees::STEPS).unwrap(),
        );
        runs.insert(run.id.key(), serde_json::to_vec(&run).unwrap())
            .unwrap();
        step_tree
            .insert(
                step_key(run.id, 0),
                serde_json::to_vec(&[&steps[2], &steps[0]]).unwrap(),
            )
            .unwrap();
        step_tree
            .insert(step_key(run.id, 1), serde_json::to_vec(&steps[1]).unwrap())
            .unwrap();
        step_tree
            .insert(step_key(run.id, 3), serde_json::to_vec(&steps[3]).unwrap())
            .unwrap();
        let mut subject = b"jane@acme.com\0".to_vec();
        subject.extend_from_slice(&run.id.key());
        store
            .tree(trees::SUBJECTS)
            .unwrap()
            .insert(subject, &[])
            .unwrap();
        let history = History::open(&store).unwrap();

        assert_eq!(history.run(run.id).unwrap().unwrap(), run);
        assert_eq!(history.steps(run.id).unwrap(), steps);
        assert_eq!(history.list(&RunFilter::default()).unwrap(), [run.clone()]);
        for filter in [
            RunFilter {
                workflow: Some("w".to_owned()),
                ..RunFilter::default()
            },
            RunFilter {
                subject: Some("Jane@acme.com".to_owned()),
                ..RunFilter::default()
            },
        ] {
            assert_eq!(history.list(&filter).unwrap(), [run.clone()]);
        }
        assert_eq!(history.entries(run.id), [(0, 2), (1, 1), (3, 1)]);

        // Prune: the payloads go, the record says so; every entry is rewritten (in the binary
        // encoding) and still read.
        let report = history.prune(Utc::now()).unwrap();
        assert_eq!(report, PruneReport { runs: 1, steps: 4 });
        let pruned = history.run(run.id).unwrap().unwrap();
        assert_eq!(
            pruned,
            RunRecord {
                pruned: true,
                ..run.clone()
            }
        );
        assert_ne!(runs.get(run.id.key()).unwrap().unwrap()[0], b'{');
        assert_eq!(history.entries(run.id), [(0, 2), (1, 1), (3, 1)]);
        let kept = history.steps(run.id).unwrap();
        let want: Vec<StepRecord> = steps
            .iter()
            .map(|s| StepRecord {
                inputs: None,
                request: None,
                response: None,
                saved: Map::new(),
                outputs: Map::new(),
                ..s.clone()
            })
            .collect();
        assert_eq!(kept, want);
        for entry in step_tree.iter() {
            assert!(matches!(
                entry.unwrap().1[0],
                codec::VERSION | codec::COMPRESSED
            ));
        }
        assert_eq!(history.prune(Utc::now()).unwrap(), PruneReport::default());
    }

    #[test]
    fn deleting_a_run_leaves_no_index_entry_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::open(&store).unwrap();
        let mut run = run_record(RunStatus::Running);
        run.subject = Some(Subject {
            collection: "people".to_owned(),
            key: "jane@acme.com".to_owned(),
            record: serde_json::json!({ "email": "Jane@Acme.com" }),
        });
        history.put_run(&run).unwrap();
        history.put_steps(&[&step(run.id, 0, "begin")]).unwrap();
        run.status = RunStatus::Succeeded;
        run.finished_at = Some(Utc::now());
        history.put_run(&run).unwrap();
        let entries = |tree: &sled::Tree| -> usize {
            tree.iter()
                .keys()
                .filter(|key| key.as_ref().unwrap().ends_with(&run.id.key()))
                .count()
        };
        assert_eq!(
            (entries(&history.subjects), entries(&history.workflows)),
            (1, 1)
        );
        let report = history
            .delete_finished_before(Utc::now(), None, 10)
            .unwrap();
        assert_eq!(
            report,
            BatchReport {
                runs: 1,
                steps: 1,
                next: None
            }
        );
        assert_eq!(
            (entries(&history.subjects), entries(&history.workflows)),
            (0, 0)
        );
        assert_eq!(history.steps.len() + history.runs.len(), 0);
    }

    #[test]
    fn a_parked_runs_timer_follows_its_record_and_only_one_caller_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::open(&store).unwrap();
        let at = Utc::now() + chrono::TimeDelta::minutes(5);
        let mut run = run_record(RunStatus::Retrying);
        run.wake_at = Some(at);
        history.put_run(&run).unwrap();
        let timer = history.timers().get(run.id).unwrap().unwrap();
        assert_eq!(
            (timer.run, timer.at.timestamp_millis()),
            (run.id, at.timestamp_millis())
        );
        // Parked runs are not `unfinished`: their timer (or a person) continues them.
        assert!(history.unfinished().unwrap().is_empty());

        // Woken once: the record becomes `running`, the timer goes; a second caller gets nothing.
        let woken = history.wake(run.id).unwrap().unwrap();
        assert_eq!((woken.status, woken.wake_at), (RunStatus::Running, None));
        assert_eq!(history.run(run.id).unwrap().unwrap(), woken);
        assert!(history.timers().get(run.id).unwrap().is_none());
        assert_eq!(history.wake(run.id).unwrap(), None);
        assert_eq!(history.unfinished().unwrap(), std::slice::from_ref(&woken));

        // Any record without `wake_at` drops the timer: a finished run never wakes.
        history.put_run(&run).unwrap();
        let finished = RunRecord {
            status: RunStatus::Failed,
            wake_at: None,
            ..run.clone()
        };
        history.put_run(&finished).unwrap();
        assert!(history.timers().all().unwrap().is_empty());

        // Cancelled at once while parked; not when in flight or finished.
        history.put_run(&run).unwrap();
        let now = Utc::now();
        let cancelled = history
            .cancel_parked(run.id, "cancelled while waiting to retry", now)
            .unwrap()
            .unwrap();
        assert_eq!(cancelled.status, RunStatus::Cancelled);
        assert_eq!(
            cancelled.error.as_deref(),
            Some("cancelled while waiting to retry")
        );
        assert_eq!(
            (cancelled.finished_at, cancelled.wake_at),
            (Some(now), None)
        );
        assert!(history.timers().all().unwrap().is_empty());
        assert_eq!(
            history.wake(run.id).unwrap(),
            None,
            "a cancelled run never wakes"
        );
        assert_eq!(history.cancel_parked(run.id, "again", now).unwrap(), None);
        history.put_run(&woken).unwrap();
        assert_eq!(
            history.cancel_parked(run.id, "in flight", now).unwrap(),
            None
        );
        // A stale timer (its record no longer parked) is dropped by whoever tries to wake it.
        history.timers().set(run.id, at).unwrap();
        assert_eq!(history.wake(run.id).unwrap(), None);
        assert!(history.timers().all().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_flushes_and_each_sees_its_writes_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::open(&store).unwrap();
        // Every caller writes, then all ask for durability at once: a group commit must let them
        // share flushes (how many depends on scheduling, so the test asks only that some were
        // shared, and that every write is durable).
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let history = history.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let run = run_record(RunStatus::Succeeded);
                    history.put_run(&run).unwrap();
                    barrier.wait().await;
                    history.durable().await.unwrap();
                    run.id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        let stats = history.commit_stats();
        assert_eq!(stats.calls, 64);
        assert!(
            (1..64).contains(&stats.flushes),
            "64 concurrent callers took {} flushes: none was shared",
            stats.flushes
        );
        // A caller with nothing new still gets a flush of its own (its ticket is not covered).
        history.durable().await.unwrap();
        assert_eq!(history.commit_stats().flushes, stats.flushes + 1);
        drop(history);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let history = History::open(&store).unwrap();
        for id in ids {
            assert!(history.run(id).unwrap().is_some());
        }
    }
}

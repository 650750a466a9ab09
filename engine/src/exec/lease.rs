//! Which runs this engine executes when several workers share the store (PostgreSQL): the
//! engine's [`WorkerId`] and the leases it holds on runs ([`RunLeases`]).
//!
//! On a shared store ([`RunLeases::shared`]) every run the engine executes is its own under a
//! lease of [`LEASE`]: a new run is taken as soon as its record is written, a resumed or
//! approved run before it continues ([`Engine::continue_active`] refuses a run another worker's
//! live lease holds, [`ExecError::Leased`]), a woken run in the same step as its wake. `serve`
//! renews them every [`RENEW_EVERY`] ([`Engine::renew_leases`], `crate::service::leases`). A
//! run this engine took and the renewal no longer finds is no longer its own (its lease passed
//! during a stall and another worker claimed it): it is marked lost and its walk stops before its
//! next block with [`ExecError::LeaseLost`], writing nothing more; the worker that claimed it
//! resumes it from its last durable step, where a write in flight is probed, never sent again
//! blind ([`super::resume`]).
//!
//! On sled (one process per data dir) nothing here does anything: `take` always succeeds and
//! nothing is renewed or lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Engine, ExecError, RunId};
use crate::store::api::{RunLeases, WorkerId};

/// How long a run stays this worker's without a renewal: a killed worker's runs are resumed
/// elsewhere once it passes (and the next orphan scan comes, at most [`RENEW_EVERY`] later).
pub const LEASE: Duration = Duration::from_secs(15);

/// How often `serve` renews its leases and looks for orphans: a third of [`LEASE`], so two
/// renewals can fail or be late before a lease passes.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// The leases of one engine.
#[derive(Debug)]
pub(crate) struct Leases {
    pub(crate) worker: WorkerId,
    /// The runs taken, each with the renewal round it was taken in (a renewal answered before a
    /// run was taken does not say it lost it).
    taken: Mutex<HashMap<RunId, u64>>,
    /// Renewal rounds started.
    round: AtomicU64,
    /// The runs taken and not renewed: another worker holds them now.
    lost: Mutex<HashSet<RunId>>,
}

impl Leases {
    pub(crate) fn new() -> Leases {
        Leases {
            worker: WorkerId::generate(),
            taken: Mutex::default(),
            round: AtomicU64::new(0),
            lost: Mutex::default(),
        }
    }

    fn noted(&self, id: RunId) {
        let round = self.round.load(Ordering::SeqCst);
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, round);
    }

    /// Forgets a run whose task ended here.
    pub(crate) fn forget(&self, id: RunId) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if !taken.is_empty() {
            taken.remove(&id);
        }
        drop(taken);
        self.lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    pub(crate) fn is_lost(&self, id: RunId) -> bool {
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        !lost.is_empty() && lost.contains(&id)
    }
}

/// What one renewal found.
#[derive(Debug, Default)]
pub struct Renewal {
    /// Runs this engine was executing that another worker holds now (stopped before their next
    /// block).
    pub lost: Vec<RunId>,
    /// Runs the store says are this worker's but no task of this process executes (their task
    /// ended on an error): the caller resumes them.
    pub stale: Vec<RunId>,
}

impl Engine {
    /// This engine's worker id (its leases name it).
    pub fn worker(&self) -> &WorkerId {
        &self.inner.leases.worker
    }

    /// Whether workers share the store (leases are kept).
    pub fn shared_store(&self) -> bool {
        self.inner.history.shared()
    }

    /// The end of a lease taken now.
    pub(crate) fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::from_std(LEASE).unwrap_or(TimeDelta::MAX)
    }

    /// Takes run `id` for this worker (a shared store; always `true` on sled): `false` when
    /// another worker's lease on it is live.
    pub(crate) async fn take_lease(&self, id: RunId) -> Result<bool, ExecError> {
        let history = &self.inner.history;
        if !history.shared() {
            return Ok(true);
        }
        let now = self.now();
        let taken = history
            .take(id, self.worker(), now, self.lease_until(now))
            .await?;
        if taken {
            self.inner.leases.noted(id);
        }
        Ok(taken)
    }

    /// [`Engine::take_lease`] for a run this engine has just recorded. Another worker holds it
    /// only if it claimed it as an orphan first (this worker stalled past a lease between
    /// recording and taking it): then it is lost here, and stops before its first block.
    pub(crate) async fn lease_new(&self, id: RunId) -> Result<(), ExecError> {
        if !self.take_lease(id).await? {
            tracing::error!(run_id = %id, worker = %self.worker(), "a run this worker just recorded is held by another worker; it continues there");
            self.inner
                .leases
                .lost
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
        }
        Ok(())
    }

    /// Notes runs the store gave this worker with their lease (claimed orphans, woken runs).
    pub(crate) fn leased(&self, id: RunId) {
        if self.inner.history.shared() {
            self.inner.leases.noted(id);
        }
    }

    /// Whether run `id`, which this engine took, is another worker's now: its walk stops before
    /// its next block.
    pub(crate) fn lease_lost(&self, id: RunId) -> bool {
        self.inner.leases.is_lost(id)
    }

    /// Renews every lease of this worker until a lease from `now`; marks lost the runs it took
    /// that were not renewed, and says which runs the store holds for it that nothing here
    /// executes.
    pub async fn renew_leases(&self, now: DateTime<Utc>) -> Result<Renewal, ExecError> {
        let history = &self.inner.history;
        if !history.shared() {
            return Ok(Renewal::default());
        }
        let leases = &self.inner.leases;
        let round = leases.round.fetch_add(1, Ordering::SeqCst);
        let renewed = history.renew(self.worker(), self.lease_until(now)).await?;
        let kept: HashSet<RunId> = renewed.runs.iter().copied().collect();
        let mut renewal = Renewal::default();
        {
            let taken = leases.taken.lock().unwrap_or_else(|e| e.into_inner());
            let mut lost = leases.lost.lock().unwrap_or_else(|e| e.into_inner());
            for (id, taken_in) in taken.iter() {
                if *taken_in <= round
                    && !kept.contains(id)
                    && self.is_active(*id)
                    && lost.insert(*id)
                {
                    renewal.lost.push(*id);
                }
            }
            for id in &renewed.runs {
                if !taken.contains_key(id) && !self.is_active(*id) {
                    renewal.stale.push(*id);
                }
            }
        }
        Ok(renewal)
    }
}

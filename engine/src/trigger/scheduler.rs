//! The scheduler: at each tick of a workflow's `schedule:`, enqueue its run requests.
//!
//! One tokio task sleeps (`tokio::time::sleep_until`) until the earliest next tick of any scheduled
//! workflow, then for each workflow that is due enqueues one run request per record of its
//! collection matching its conditions (evaluated at the tick instant), or a single request when it
//! names no `records`, and records the tick as the workflow's last, all in one store transaction
//! ([`ScheduleState::enqueue_tick`]): a tick is enqueued exactly once even across a crash. The tick
//! is durable (the store flushed) before it is reported or its runs are started. If the task wakes
//! late past several ticks it fires the latest one only. A tick is fired on a blocking thread
//! ([`Scheduler::fire_blocking`]): it evaluates the conditions on every record.
//!
//! Catch-up on start, per workflow: with `catch_up: last` (the default) and a stored last tick,
//! the most recent tick missed while blockyard was down fires once, at once; with `catch_up: none`
//! (or on the very first start) missed ticks are skipped and the next one is awaited.
//!
//! Time comes from a [`Clock`] that maps tokio's clock to wall time, so tests run under
//! `#[tokio::test(start_paused = true)]` from a chosen UTC instant and advance through days of
//! ticks instantly. The mapping is fixed when the clock is made: a wall-clock step (NTP) after
//! start is not followed.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{
    evaluate, Cause, Consideration, Decision, QueueId, RunRequest, Triggers, Watched, WorkflowName,
};
use crate::spec::CatchUp;
use crate::store::any::{AnyQueue, AnyRecords};
use crate::store::api::{ReadRecords, ScheduleState};
use crate::store::StoreError;

/// Tokio's clock as wall time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: DateTime<Utc>,
    start: Instant,
}

impl Clock {
    /// The system's wall time now.
    pub fn system() -> Clock {
        Clock::starting_at(Utc::now())
    }

    /// A clock that reads `wall` now (tests: a chosen instant, with paused tokio time).
    pub fn starting_at(wall: DateTime<Utc>) -> Clock {
        Clock {
            wall,
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        self.wall + TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX)
    }

    /// The tokio instant at which the wall clock reads `at`.
    pub fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        match (at - self.wall).to_std() {
            Ok(ahead) => self.start + ahead,
            Err(_) => self.start,
        }
    }
}

/// A scheduled workflow's run requests, made at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub workflow: WorkflowName,
    pub tick: DateTime<Utc>,
    pub queued: Vec<QueueId>,
}

/// The schedule loop's inputs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// The records a tick evaluates, and the store its ticks and requests are kept in.
    records: AnyRecords,
    triggers: Arc<Triggers>,
    clock: Clock,
    fired: Option<tokio::sync::mpsc::UnboundedSender<Fired>>,
}

/// A running scheduler.
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), StoreError>>,
}

impl SchedulerHandle {
    /// A handle that tells whether the loop still runs (it ends on a store error).
    pub(crate) fn task(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }

    /// Stops the loop (between ticks, never halfway through enqueuing one) and waits for it.
    pub async fn stop(self) -> Result<(), StoreError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Ok(()),
        }
    }
}

impl Scheduler {
    /// A scheduler of `triggers`' schedules, enqueuing into `queue` through `records` (the
    /// records side of the store writes a tick and its requests in one transaction, so `queue`
    /// is the same store's and is not used on its own).
    pub fn new(
        records: impl Into<AnyRecords>,
        queue: impl Into<AnyQueue>,
        triggers: Arc<Triggers>,
        clock: Clock,
    ) -> Scheduler {
        let _ = queue.into();
        Scheduler {
            records: records.into(),
            triggers,
            clock,
            fired: None,
        }
    }

    /// Reports every tick fired on `sender` (for `serve`'s log, and tests).
    pub fn notify(mut self, sender: tokio::sync::mpsc::UnboundedSender<Fired>) -> Scheduler {
        self.fired = Some(sender);
        self
    }

    /// Spawns the loop on the current tokio runtime.
    pub fn start(self) -> SchedulerHandle {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(self.run(stopped));
        SchedulerHandle { stop, task }
    }

    /// The loop; returns when `stop` turns true (or its sender is dropped).
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut cursors: Vec<(WorkflowName, DateTime<Utc>)> = Vec::new();
        for Watched { name, workflow, .. } in self.triggers.scheduled() {
            let Some((schedule, catch_up)) = &workflow.trigger.schedule else {
                continue;
            };
            let last = self.records.last_fired(name).await?;
            if let (CatchUp::Last, Some(last)) = (catch_up, last) {
                if let Some(missed) = latest_due(schedule, last, now) {
                    self.fire_blocking(name, missed).await?;
                }
            }
            cursors.push((name.clone(), now));
        }
        loop {
            let next = cursors
                .iter()
                .filter_map(|(name, cursor)| {
                    Some((self.schedule(name)?.next_after(*cursor)?, name))
                })
                .min();
            let Some((at, _)) = next else {
                // Nothing scheduled: wait to be stopped.
                let _ = stop.wait_for(|s| *s).await;
                return Ok(());
            };
            tokio::select! {
                _ = tokio::time::sleep_until(self.clock.instant_at(at)) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            let now = self.clock.now();
            for (name, cursor) in &mut cursors {
                let Some(schedule) = self.schedule(name) else {
                    continue;
                };
                if let Some(tick) = latest_due(schedule, *cursor, now) {
                    self.fire_blocking(name, tick).await?;
                    *cursor = tick;
                }
            }
        }
    }

    fn schedule(&self, name: &WorkflowName) -> Option<&crate::schedule::Schedule> {
        self.triggers
            .scheduled()
            .find(|w| &w.name == name)
            .and_then(|w| w.workflow.trigger.schedule.as_ref().map(|(s, _)| s))
    }

    /// [`Self::fire`] on a blocking thread, for async callers: a tick evaluates the workflow's
    /// conditions on every record of its collection, which must not hold an async worker.
    pub async fn fire_blocking(
        &self,
        workflow: &WorkflowName,
        tick: DateTime<Utc>,
    ) -> Result<Fired, StoreError> {
        let (scheduler, workflow) = (self.clone(), workflow.clone());
        tokio::task::spawn_blocking(move || scheduler.fire(&workflow, tick))
            .await
            .map_err(|err| StoreError::Io {
                message: format!("the schedule tick task failed: {err}"),
            })?
    }

    /// Enqueues `workflow`'s run requests for `tick` and records it as the last tick, durably
    /// (the store is flushed before this returns or reports the tick). Synchronous: on
    /// PostgreSQL it waits for the store on this thread ([`AnyRecords::wait`]).
    pub fn fire(&self, workflow: &WorkflowName, tick: DateTime<Utc>) -> Result<Fired, StoreError> {
        let Some(watched) = self.triggers.scheduled().find(|w| &w.name == workflow) else {
            return Ok(Fired {
                workflow: workflow.clone(),
                tick,
                queued: Vec::new(),
            });
        };
        let Watched {
            name, workflow: w, ..
        } = watched;
        let trigger = &w.trigger;
        let mut decisions = Vec::new();
        match trigger.records {
            None => decisions.push((
                None,
                Decision {
                    consideration: Consideration {
                        workflow: name.clone(),
                        before: None,
                        after: None,
                        fired: true,
                        queued: None,
                        run: None,
                        excluded: None,
                        held: None,
                        paused: None,
                    },
                    request: Some(RunRequest {
                        workflow: name.clone(),
                        subject: None,
                        snapshot: None,
                        trigger: Cause::Schedule,
                        at: tick,
                    }),
                },
            )),
            Some(collection) => {
                let listed = match &self.records {
                    AnyRecords::Sled(records) => records.list(collection).collect(),
                    records => records.wait(ReadRecords::list(records, collection))?,
                };
                for (key, fields) in listed? {
                    let verdict = evaluate(watched, &fields, tick);
                    let subject = crate::records::Subject::new(collection, key);
                    let excluded = watched.exclusion(&subject, &fields);
                    let fires = verdict.matched && excluded.is_none();
                    let request = fires.then(|| RunRequest {
                        workflow: name.clone(),
                        subject: Some(subject.clone()),
                        snapshot: Some(fields.clone()),
                        trigger: Cause::Schedule,
                        at: tick,
                    });
                    decisions.push((
                        Some(subject),
                        Decision {
                            consideration: Consideration {
                                workflow: name.clone(),
                                before: None,
                                fired: fires,
                                after: Some(verdict),
                                queued: None,
                                run: None,
                                excluded,
                                held: None,
                                paused: None,
                            },
                            request,
                        },
                    ));
                }
            }
        }
        let queued = match &self.records {
            AnyRecords::Sled(records) => {
                let queued = records.enqueue_tick(name, tick, decisions)?;
                records.store().flush_blocking()?;
                queued
            }
            // Committed durably by its transaction.
            records => records.wait(records.enqueue_tick(name, tick, decisions))??,
        };
        let fired = Fired {
            workflow: name.clone(),
            tick,
            queued,
        };
        tracing::info!(workflow = %fired.workflow, tick = %fired.tick, runs = fired.queued.len(), "schedule tick");
        if let Some(sender) = &self.fired {
            let _ = sender.send(fired.clone());
        }
        Ok(fired)
    }
}

/// The latest tick in `(after, now]`, if any.
fn latest_due(
    schedule: &crate::schedule::Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut tick = schedule.next_after(after).filter(|t| *t <= now)?;
    for _ in 0..10_000 {
        match schedule.next_after(tick) {
            Some(next) if next <= now => tick = next,
            _ => return Some(tick),
        }
    }
    // Down for more than 10,000 ticks: ask croner for the last one directly.
    schedule
        .last_at_or_before(now)
        .filter(|t| *t > after)
        .or(Some(tick))
}

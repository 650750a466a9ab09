//! The timer loop: wakes parked runs when their timers fall due, and continues them.
//!
//! Parked runs are `retrying` runs (their next attempt) and `waiting` runs (a `wait` block's end;
//! a write of the subject record moves a watching wait's timer to now, see
//! [`crate::store::timers`], and the loop sees that change in the timers tree).
//!
//! One task sleeps (`tokio::time::sleep_until`, through the service's [`Clock`], so tests run it
//! under paused tokio time) until the earliest timer in the store ([`crate::store::timers`]),
//! then claims every run whose timer is due ([`Engine::wake_due`]: `retrying` or `waiting`
//! becomes `running` and the timer is dropped in one atomic swap, so a run is woken once) and
//! continues each in its own tracked task, like a run the worker started (on a shared store the
//! wake takes the run under this worker's lease in the same step, see [`crate::exec::lease`]). A run that parks while the loop sleeps
//! notifies it ([`Engine::timers_changed`]) so it looks at the earliest timer again. Timers
//! that fell due while no process was running fire at once when the service starts.
//!
//! [`Engine::wake_due`]: crate::exec::Engine::wake_due
//! [`Engine::timers_changed`]: crate::exec::Engine::timers_changed

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use crate::store::api::DurableTimers;
use crate::trigger::scheduler::Clock;

/// The longest the loop sleeps without looking at the store again.
const IDLE: Duration = Duration::from_secs(3600);

/// The timer loop; returns when `stop` turns true.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>, clock: Clock) {
    loop {
        if *stop.borrow() {
            return;
        }
        let engine = &shared.engine;
        // Subscribed before reading the timers: a timer a record write's transaction moves
        // (a `wait`'s `wake_when` to judge again) wakes the loop however it was written.
        let changes = engine.timers().changes();
        match engine.wake_due(clock.now()).await {
            Ok(woken) => {
                for run in woken {
                    let id = run.id;
                    tracing::info!(run_id = %id, workflow = %run.workflow, "waking a parked run");
                    let engine = engine.clone();
                    let handle = tokio::spawn(async move { engine.resume_record(run).await });
                    shared.track(id, handle);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "waking parked runs failed; trying again shortly")
            }
        }
        let now = tokio::time::Instant::now();
        let until = match engine.timers().next().await {
            Ok(Some(timer)) => clock.instant_at(timer.at).min(now + IDLE),
            Ok(None) => now + IDLE,
            Err(err) => {
                tracing::error!(error = %err, "reading the timers failed; trying again shortly");
                now + Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = engine.timers_changed().notified() => {}
            _ = changes => {}
            _ = tokio::time::sleep_until(until) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

//! The reminder loop: sends approval reminders when they fall due
//! ([`Engine::send_due_reminders`], see [`crate::exec::reminders`]).
//!
//! One task sleeps, through the service's [`Clock`] (so tests run it under paused tokio time),
//! until the earliest reminder not sent yet, and at most [`RECHECK`]: a reminder scheduled while
//! it sleeps is sent at most that late. Reminders that fell due while no process was running are
//! sent when the service starts.
//!
//! [`Engine::send_due_reminders`]: crate::exec::Engine::send_due_reminders

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use crate::trigger::scheduler::Clock;

/// The longest the loop sleeps without looking at the store again.
const RECHECK: Duration = Duration::from_secs(60);

/// The reminder loop; returns when `stop` turns true.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>, clock: Clock) {
    loop {
        if *stop.borrow() {
            return;
        }
        let engine = &shared.engine;
        match Box::pin(engine.send_due_reminders(clock.now())).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(sent, "approval reminders sent"),
            Err(err) => {
                tracing::error!(error = %err, "sending approval reminders failed; trying again shortly")
            }
        }
        let now = tokio::time::Instant::now();
        let until = match engine.next_reminder().await {
            Ok(Some(due)) => clock
                .instant_at(due)
                .clamp(now + Duration::from_secs(1), now + RECHECK),
            Ok(None) => now + RECHECK,
            Err(err) => {
                tracing::error!(error = %err, "reading the approval reminders failed; trying again shortly");
                now + RECHECK
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

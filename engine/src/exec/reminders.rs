//! Approval reminders: a live run that stops to wait for approval under a `notify:` with
//! `remind_approvers_after` gets a reminder in the store ([`crate::store::reminders`]), due that
//! long after it started waiting; [`Engine::send_due_reminders`] (called by `serve`'s reminder
//! loop, [`crate::service::reminders`]) sends each due one once, on the notify channel (webhook
//! or email), if the run is still waiting then. One reminder per wait: a run is reminded once for
//! the blocks it waits for, not every period (a reminder repeated every day would train people to
//! ignore it); a later wait for other blocks gets its own.
//!
//! The `notify:` used is the run's own workflow snapshot's (else the config's), so a reload that
//! drops `remind_approvers_after` still reminds the runs that were waiting under it.

use serde_json::json;

use super::{Engine, ExecError};
use crate::notify::Notify;
use crate::store::any::AnyReminders;
use crate::store::api::{Backend, ReadHistory, ReadReminders, WriteReminders};
use crate::store::history::{RunRecord, RunStatus, StepRecord, StepStatus};
use crate::store::reminders::Reminder;

impl Engine {
    fn reminders(&self) -> Result<AnyReminders, ExecError> {
        Ok(self.inner.store.reminders()?)
    }

    /// Schedules the approval reminder of `record`, a live run that has just stopped to wait for
    /// approval with `steps`, when `notify` asks for reminders. Not flushed: the caller's flush
    /// of the run record makes it durable.
    pub(crate) async fn schedule_reminder(
        &self,
        notify: &Notify,
        record: &RunRecord,
        steps: &[StepRecord],
    ) -> Result<(), ExecError> {
        let Some(after) = notify.remind_after else {
            return Ok(());
        };
        let mut blocks: Vec<String> = steps
            .iter()
            .filter(|s| s.status == StepStatus::WaitingApproval)
            .map(|s| s.block.clone())
            .collect();
        blocks.sort();
        blocks.dedup();
        let since = self.inner.options.clock.now();
        let due = since + chrono::TimeDelta::from_std(after).unwrap_or(chrono::TimeDelta::MAX);
        let reminder = Reminder {
            since,
            blocks,
            due,
            sent: None,
        };
        if self.reminders()?.schedule(record.id, &reminder).await? {
            tracing::debug!(run_id = %record.id, due = %due, "approval reminder scheduled");
        }
        Ok(())
    }

    /// When the earliest reminder not sent yet falls due.
    pub async fn next_reminder(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, ExecError> {
        Ok(self
            .reminders()?
            .pending()
            .await?
            .first()
            .map(|(_, r)| r.due))
    }

    /// Sends every approval reminder due at `now` whose run still waits for approval, each once
    /// (claimed and flushed before it is sent); drops the reminders of runs no longer waiting.
    /// Returns how many were sent.
    pub async fn send_due_reminders(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, ExecError> {
        let reminders = self.reminders()?;
        let mut sent = 0;
        for (id, reminder) in reminders.pending().await? {
            if reminder.due > now {
                break;
            }
            let run = match self.history().run(id).await? {
                Some(run) if run.status == RunStatus::WaitingApproval => run,
                _ => {
                    reminders.remove(id).await?;
                    continue;
                }
            };
            if !reminders.claim(id, &reminder, now).await? {
                continue;
            }
            self.inner.store.flush().await?;
            let prepared = self.prepare_snapshot(&run)?;
            let notify = prepared
                .workflow
                .notify
                .clone()
                .or_else(|| self.inner.options.notify.clone());
            let Some(notify) = notify.filter(|n| n.remind_after.is_some()) else {
                continue;
            };
            let subject = run
                .subject
                .as_ref()
                .map_or_else(|| json!({}), |s| s.record.clone());
            let vars = run.vars.clone();
            let delivered = Box::pin(notify.remind(
                &self.inner.client,
                &self.inner.templates,
                &run,
                &reminder,
                &subject,
                &vars,
            ))
            .await;
            if delivered {
                sent += 1;
            }
        }
        Ok(sent)
    }
}

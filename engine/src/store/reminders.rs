//! Approval reminders: one entry per run waiting for approval under a `notify:` with
//! `remind_approvers_after` (see [`crate::notify`] and [`crate::exec::reminders`]).
//!
//! Tree `approval_reminders`: run id → a [`Reminder`] as JSON: when the run started waiting, for
//! which blocks, when the reminder falls due, and when it was sent. A run stopping to wait for the
//! same blocks again (a `resume` without a decision) keeps its entry, so its due time does not
//! move; a run waiting for other blocks later gets a new one. Sending claims the entry first
//! ([`Reminders::claim`]: a compare-and-swap to `sent`, flushed before anything is sent), so two
//! loops or a restart send a reminder at most once; a crash between the claim and the send loses
//! that one reminder rather than doubling it. Entries stay after they are sent (a few bytes per
//! waiting run) and are dropped when their run is found no longer waiting.
//!
//! Behind the store seam as [`super::api::ReadReminders`]/[`super::api::WriteReminders`] (the
//! PostgreSQL side: `postgres/reminders.rs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::history::RunId;
use super::{Store, StoreError};

/// The tree holding reminders.
pub(crate) const REMINDERS: &str = "approval_reminders";

/// One run's approval reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// When the run stopped to wait.
    pub since: DateTime<Utc>,
    /// The blocks it waits for approval of.
    pub blocks: Vec<String>,
    /// When the reminder is sent.
    pub due: DateTime<Utc>,
    /// When it was claimed for sending (`None` until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<DateTime<Utc>>,
}

/// The reminders of one store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reminders {
    tree: sled::Tree,
    gate: super::Gate,
}

impl Reminders {
    pub fn open(store: &Store) -> Result<Reminders, StoreError> {
        Ok(Reminders {
            tree: store.tree(REMINDERS)?,
            gate: store.gate().clone(),
        })
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Reminder, StoreError> {
        serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
            tree: REMINDERS,
            key: String::from_utf8_lossy(key).into_owned(),
            message: err.to_string(),
        })
    }

    /// `run`'s reminder, if it has one.
    pub fn get(&self, run: RunId) -> Result<Option<Reminder>, StoreError> {
        match self.tree.get(run.key())? {
            Some(bytes) => Reminders::decode(&run.key(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Schedules `reminder` for `run`, unless it already has one for the same blocks. Returns
    /// whether it wrote one. Not flushed: the run record's flush makes it durable.
    pub fn schedule(&self, run: RunId, reminder: &Reminder) -> Result<bool, StoreError> {
        if let Some(current) = self.get(run)? {
            if current.blocks == reminder.blocks {
                return Ok(false);
            }
        }
        let value = serde_json::to_vec(reminder).expect("reminders serialize");
        let _writing = self.gate.writing();
        self.tree.insert(run.key(), value)?;
        Ok(true)
    }

    /// Every reminder, sent or not, by run (`store copy`).
    pub fn all(&self) -> Result<Vec<(RunId, Reminder)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.iter() {
            let (key, bytes) = entry?;
            let reminder = Reminders::decode(&key, &bytes)?;
            let run = RunId::from_key(&key).ok_or_else(|| StoreError::Corrupt {
                tree: REMINDERS,
                key: String::from_utf8_lossy(&key).into_owned(),
                message: "not a run id".to_owned(),
            })?;
            out.push((run, reminder));
        }
        Ok(out)
    }

    /// Every reminder not sent yet, earliest due first.
    pub fn pending(&self) -> Result<Vec<(RunId, Reminder)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.iter() {
            let (key, bytes) = entry?;
            let reminder = Reminders::decode(&key, &bytes)?;
            if reminder.sent.is_some() {
                continue;
            }
            let run = RunId::from_key(&key).ok_or_else(|| StoreError::Corrupt {
                tree: REMINDERS,
                key: String::from_utf8_lossy(&key).into_owned(),
                message: "not a run id".to_owned(),
            })?;
            out.push((run, reminder));
        }
        out.sort_by_key(|(_, r)| r.due);
        Ok(out)
    }

    /// Marks `run`'s reminder (as read: `current`) sent at `now`. Returns `false` when it
    /// changed since it was read (another loop claimed it, or it was replaced). Not flushed.
    pub fn claim(
        &self,
        run: RunId,
        current: &Reminder,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let old = serde_json::to_vec(current).expect("reminders serialize");
        let mut sent = current.clone();
        sent.sent = Some(now);
        let new = serde_json::to_vec(&sent).expect("reminders serialize");
        let _writing = self.gate.writing();
        Ok(self
            .tree
            .compare_and_swap(run.key(), Some(old), Some(new))?
            .is_ok())
    }

    /// Drops `run`'s reminder.
    pub fn remove(&self, run: RunId) -> Result<(), StoreError> {
        let _writing = self.gate.writing();
        self.tree.remove(run.key())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_reminder_is_kept_for_the_same_blocks_and_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reminders = Reminders::open(&store).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let run = RunId::new();
        let first = Reminder {
            since: t0,
            blocks: vec!["approve".into()],
            due: t0 + chrono::TimeDelta::hours(1),
            sent: None,
        };
        assert!(reminders.schedule(run, &first).unwrap());
        let later = Reminder {
            due: t0 + chrono::TimeDelta::hours(5),
            ..first.clone()
        };
        assert!(
            !reminders.schedule(run, &later).unwrap(),
            "same blocks: kept"
        );
        assert_eq!(reminders.pending().unwrap(), [(run, first.clone())]);
        assert!(reminders.claim(run, &first, t0).unwrap());
        assert!(!reminders.claim(run, &first, t0).unwrap(), "claimed once");
        assert_eq!(reminders.pending().unwrap(), []);
    }
}

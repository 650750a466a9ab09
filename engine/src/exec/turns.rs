//! Turns: two runs of one workflow for one subject never execute at once.
//!
//! Every live run with a subject joins the line of its `(workflow, subject)` when it is created
//! (synchronously, so runs queue in the order they were submitted) and leaves it when its task
//! ends. A run that is not first in its line is recorded `queued` and waits; it starts when the
//! runs ahead of it have left (or when it is cancelled: it then stops before its first block).
//! A run continued later (approved, woken to retry, resumed) takes a turn again and waits for a
//! run of its line that is executing. A parked run (waiting for approval, or to retry) has no
//! task, so it does not hold back another run of its workflow for the subject; it does hold its
//! subject for record triggers (see [`crate::store::in_flight`]), so a record change made
//! meanwhile is evaluated after it.
//!
//! Lines are per process: `serve` is the one process that runs workflows of a data dir.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::{Engine, RunId};

/// A line's key: the workflow's name and the subject's `collection/key`.
type Key = (String, String);

/// The lines of one engine.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    lines: Mutex<HashMap<Key, VecDeque<RunId>>>,
    /// Woken when a run leaves a line (or a waiting run is cancelled).
    changed: Notify,
}

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<RunId>>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the runs waiting for a turn, to look again.
    pub(crate) fn wake(&self) {
        self.changed.notify_waiters();
    }
}

/// A run's place in its line, until dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    engine: Engine,
    key: Key,
    id: RunId,
}

impl Engine {
    /// Puts run `id` of `workflow` for `subject` (`collection/key`) at the end of its line (where
    /// it stays, if it is in it already).
    pub(crate) fn join_line(&self, workflow: &str, subject: String, id: RunId) -> Turn {
        let key = (workflow.to_owned(), subject);
        let mut lines = self.inner.turns.lock();
        let line = lines.entry(key.clone()).or_default();
        if !line.contains(&id) {
            line.push_back(id);
        }
        Turn {
            engine: self.clone(),
            key,
            id,
        }
    }
}

impl Turn {
    /// True when no run of the line is ahead of this one.
    pub(crate) fn is_first(&self) -> bool {
        self.engine
            .inner
            .turns
            .lock()
            .get(&self.key)
            .and_then(VecDeque::front)
            == Some(&self.id)
    }

    /// Waits until the run is first in its line, or cancelled.
    pub(crate) async fn wait(&self) {
        let turns = &self.engine.inner.turns;
        loop {
            let changed = turns.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_first() || self.engine.inner.cancels.is_requested(self.id).await {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let turns = &self.engine.inner.turns;
        {
            let mut lines = turns.lock();
            if let Some(line) = lines.get_mut(&self.key) {
                line.retain(|id| *id != self.id);
                if line.is_empty() {
                    lines.remove(&self.key);
                }
            }
        }
        turns.wake();
    }
}

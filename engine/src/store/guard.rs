//! The mass-change guard's durable state: every destructive write admitted, per workflow, in a
//! sliding window, and the runs an operator released.
//!
//! Three trees, in the one store so they are durable with the history and survive restarts:
//! - `guard_writes`: `workflow \0 at (i64 nanoseconds, big-endian with the sign bit flipped) \0
//!   run \0 block` → empty. Counting a window is one range scan of the workflow's prefix.
//! - `guard_admitted`: `run \0 block` → the `guard_writes` key, so a block retried or resumed is
//!   counted once, not once per attempt.
//! - `guard_released`: `run` → when it was released: its destructive writes go without counting.
//!
//! [`GuardStore::admit`] checks and counts under one process-wide lock, so two runs at the
//! threshold cannot both pass. Entries older than [`KEEP`] (or the window, when longer) are pruned
//! as new ones come. The API is small on purpose (open, admit, count, release, is_released): it is
//! the sled side of the seam's [`super::api::ReadGuard`]/[`super::api::WriteGuard`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::history::RunId;
use super::{Store, StoreError};

const WRITES: &str = "guard_writes";
const ADMITTED: &str = "guard_admitted";
const RELEASED: &str = "guard_released";

/// How long counted writes are kept at least (a window is never longer than what is kept).
pub const KEEP: Duration = Duration::from_secs(30 * 86_400);

/// What [`GuardStore::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted now (or counted before, for this run and block): send it.
    Admitted,
    /// `count` destructive writes are in the window already and `allowed` is the limit: hold it.
    Held { count: u64, allowed: u64 },
}

/// The guard's trees.
#[derive(Clone, Debug)]
pub struct GuardStore {
    writes: sled::Tree,
    admitted: sled::Tree,
    released: sled::Tree,
    lock: Arc<Mutex<()>>,
    gate: super::Gate,
}

fn time_key(at: DateTime<Utc>) -> [u8; 8] {
    let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    ((nanos as u64) ^ (1 << 63)).to_be_bytes()
}

fn prefix(workflow: &str) -> Vec<u8> {
    let mut key = workflow.as_bytes().to_vec();
    key.push(0);
    key
}

fn run_block(run: RunId, block: &str) -> Vec<u8> {
    let mut key = run.to_string().into_bytes();
    key.push(0);
    key.extend_from_slice(block.as_bytes());
    key
}

impl GuardStore {
    pub fn open(store: &Store) -> Result<GuardStore, StoreError> {
        Ok(GuardStore {
            writes: store.tree(WRITES)?,
            admitted: store.tree(ADMITTED)?,
            released: store.tree(RELEASED)?,
            lock: Arc::new(Mutex::new(())),
            gate: store.gate().clone(),
        })
    }

    /// The destructive writes of `workflow` counted in the window `(now - per, now]` (and any
    /// stamped later, by a clock that was ahead).
    pub fn count(
        &self,
        workflow: &str,
        now: DateTime<Utc>,
        per: Duration,
    ) -> Result<u64, StoreError> {
        let prefix = prefix(workflow);
        let from = now - chrono::Duration::from_std(per).unwrap_or(chrono::Duration::MAX);
        let mut start = prefix.clone();
        // Strictly after `from`: one nanosecond later.
        start.extend_from_slice(&time_key(from + chrono::Duration::nanoseconds(1)));
        let mut end = prefix;
        end.push(0xff);
        let mut n = 0;
        for entry in self.writes.range(start..end) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// Counts the destructive write of `block` in `run` at `now` when fewer than `allowed` are in
    /// the window (no limit: `None`, always counted), else says it is held. A block counted
    /// before is admitted again without counting.
    pub fn admit(
        &self,
        workflow: &str,
        run: RunId,
        block: &str,
        now: DateTime<Utc>,
        per: Duration,
        allowed: Option<u64>,
    ) -> Result<Admission, StoreError> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // Its two inserts (or removals) are one write to a backup.
        let _writing = self.gate.writing();
        let counted = run_block(run, block);
        if self.admitted.contains_key(&counted)? {
            return Ok(Admission::Admitted);
        }
        if let Some(allowed) = allowed {
            let count = self.count(workflow, now, per)?;
            if count >= allowed {
                return Ok(Admission::Held { count, allowed });
            }
        }
        let mut key = prefix(workflow);
        key.extend_from_slice(&time_key(now));
        key.push(0);
        key.extend_from_slice(&counted);
        self.writes.insert(key.as_slice(), &[][..])?;
        self.admitted.insert(counted, key)?;
        self.prune(
            workflow,
            now - chrono::Duration::from_std(per.max(KEEP)).unwrap_or(chrono::Duration::MAX),
        )?;
        Ok(Admission::Admitted)
    }

    /// Drops the counted writes of `workflow` at or before `before`.
    fn prune(&self, workflow: &str, before: DateTime<Utc>) -> Result<(), StoreError> {
        let prefix = prefix(workflow);
        let mut end = prefix.clone();
        end.extend_from_slice(&time_key(before));
        end.push(0xff);
        let skip = prefix.len() + 9; // `workflow \0`, the time, `\0`: then `run \0 block`
        let old: Vec<sled::IVec> = self
            .writes
            .range(prefix..end)
            .keys()
            .collect::<Result<_, _>>()?;
        for key in old {
            self.writes.remove(&key)?;
            if let Some(counted) = key.get(skip..) {
                self.admitted.remove(counted)?;
            }
        }
        Ok(())
    }

    /// Records that an operator released `run`: its destructive writes go without counting.
    pub fn release(&self, run: RunId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let _writing = self.gate.writing();
        self.released
            .insert(run.to_string().as_bytes(), at.to_rfc3339().as_bytes())?;
        Ok(())
    }

    /// Whether `run` was released.
    pub fn is_released(&self, run: RunId) -> Result<bool, StoreError> {
        Ok(self.released.contains_key(run.to_string().as_bytes())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::minutes(minutes)
    }

    const HOUR: Duration = Duration::from_secs(3_600);

    #[test]
    fn the_window_slides_a_block_counts_once_and_the_count_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunId::new;
        {
            let store = Store::open(dir.path()).unwrap();
            let guard = GuardStore::open(&store).unwrap();
            let first = run();
            assert_eq!(
                guard
                    .admit("w", first, "delete", at(0), HOUR, Some(2))
                    .unwrap(),
                Admission::Admitted
            );
            // Retried or resumed: not counted again.
            assert_eq!(
                guard
                    .admit("w", first, "delete", at(1), HOUR, Some(2))
                    .unwrap(),
                Admission::Admitted
            );
            assert_eq!(
                guard
                    .admit("w", run(), "delete", at(30), HOUR, Some(2))
                    .unwrap(),
                Admission::Admitted
            );
            // Another workflow has its own window.
            assert_eq!(
                guard
                    .admit("other", run(), "delete", at(30), HOUR, Some(1))
                    .unwrap(),
                Admission::Admitted
            );
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let guard = GuardStore::open(&store).unwrap();
        assert_eq!(guard.count("w", at(59), HOUR).unwrap(), 2);
        assert_eq!(
            guard
                .admit("w", run(), "delete", at(59), HOUR, Some(2))
                .unwrap(),
            Admission::Held {
                count: 2,
                allowed: 2
            }
        );
        // An hour after the first write it has left the window: one in it, so one more goes.
        assert_eq!(guard.count("w", at(60), HOUR).unwrap(), 1);
        assert_eq!(
            guard
                .admit("w", run(), "delete", at(60), HOUR, Some(2))
                .unwrap(),
            Admission::Admitted
        );
        // No limit: counted, never held.
        assert_eq!(
            guard
                .admit("w", run(), "delete", at(61), HOUR, None)
                .unwrap(),
            Admission::Admitted
        );
        assert_eq!(guard.count("w", at(61), HOUR).unwrap(), 3);
        let released = run();
        assert!(!guard.is_released(released).unwrap());
        guard.release(released, at(62)).unwrap();
        assert!(guard.is_released(released).unwrap());
    }
}

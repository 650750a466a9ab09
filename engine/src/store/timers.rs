//! Durable timers: one wake-up time per parked run, so a run can wait for hours across restarts.
//!
//! A run that must continue later by itself (a `retrying` run's next attempt; later the `wait`
//! block and the guard) has a timer: the time it wakes. Two trees, written together in one sled
//! transaction so they always agree:
//!
//! - `timers`: wake time (milliseconds since the epoch, `u64` big-endian) + run id → empty, so
//!   iterating the tree visits timers in the order they fall due ([`Timers::due`],
//!   [`Timers::next`]);
//! - `timer_runs`: run id → its timer's key, so a run's timer is found (and replaced, or
//!   dropped) without a scan.
//!
//! A third tree, `timer_watches` (a record's key, `collection/key` → the run ids waiting on it,
//! 16 bytes each), is how a record write wakes a `wait` block's `wake_when:`: a run parked in a
//! wait that has one watches its subject ([`Timers::watch`]), and the record write's own sled
//! transaction moves every watcher's timer to the epoch ([`wake_watchers`]), so it falls due at
//! once and is durable with the write. The woken run judges `wake_when` itself, on the record
//! as the write left it, and parks again at its old time when it does not hold.
//!
//! A run has at most one timer. The history keeps the timers in step with the run records
//! ([`super::history::History::put_run`]: a record with a `wake_at` sets its timer, any other
//! record drops it), and its group commit makes them durable with the record; nothing else
//! needs to call [`Timers::set`] or [`Timers::cancel`]. Whoever wakes a run claims it first
//! ([`super::history::History::wake`]), so a timer that fires twice (two loops, a restart) wakes
//! it once.

use chrono::{DateTime, TimeZone, Utc};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

use super::history::RunId;
use super::{Store, StoreError};

/// The tree of timers by wake time.
const TIMERS: &str = "timers";
/// The tree of timers by run.
const TIMER_RUNS: &str = "timer_runs";
/// The tree of runs whose wait watches a record, by record key.
const TIMER_WATCHES: &str = "timer_watches";

/// One run's wake-up time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub run: RunId,
    pub at: DateTime<Utc>,
}

/// The timers of one store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Timers {
    by_time: sled::Tree,
    by_run: sled::Tree,
    watches: sled::Tree,
    gate: super::Gate,
}

fn millis(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_millis()).unwrap_or(0)
}

fn key(run: RunId, at: DateTime<Utc>) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&millis(at).to_be_bytes());
    key[8..].copy_from_slice(&run.key());
    key
}

fn decode(key: &[u8]) -> Result<Timer, StoreError> {
    let corrupt = || StoreError::Corrupt {
        tree: TIMERS,
        key: String::from_utf8_lossy(key).into_owned(),
        message: "not a wake time and a run id".to_owned(),
    };
    let ms: [u8; 8] = key
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let run = RunId::from_key(&key[8..]).ok_or_else(corrupt)?;
    let ms = i64::try_from(u64::from_be_bytes(ms)).map_err(|_| corrupt())?;
    let at = Utc.timestamp_millis_opt(ms).single().ok_or_else(corrupt)?;
    Ok(Timer { run, at })
}

fn unwrap_tx<T>(result: Result<T, TransactionError<()>>) -> Result<T, StoreError> {
    match result {
        Ok(value) => Ok(value),
        Err(TransactionError::Storage(err)) => Err(err.into()),
        Err(TransactionError::Abort(())) => unreachable!("timer transactions never abort"),
    }
}

impl Timers {
    pub fn open(store: &Store) -> Result<Timers, StoreError> {
        Ok(Timers {
            by_time: store.tree(TIMERS)?,
            by_run: store.tree(TIMER_RUNS)?,
            watches: store.tree(TIMER_WATCHES)?,
            gate: store.gate().clone(),
        })
    }

    /// The trees a record write's transaction wakes watchers in: (watches, by time, by run).
    pub(crate) fn trees(&self) -> (&sled::Tree, &sled::Tree, &sled::Tree) {
        (&self.watches, &self.by_time, &self.by_run)
    }

    /// A stream of changes to the timers, for a loop that sleeps until the earliest: a timer set
    /// by a record write's transaction (a woken watcher) shows here too.
    pub fn subscribe(&self) -> sled::Subscriber {
        self.by_time.watch_prefix(Vec::new())
    }

    /// `run` waits on the record `record` (`collection/key`): a write of it wakes the run.
    /// Transactional, so a record write either sees the watch or committed before it.
    pub fn watch(&self, run: RunId, record: &str) -> Result<(), StoreError> {
        let _writing = self.gate.writing();
        let result = self.watches.transaction(|watches| {
            let mut runs = watches
                .get(record.as_bytes())?
                .map(|v| v.to_vec())
                .unwrap_or_default();
            if !runs.chunks(16).any(|c| c == run.key()) {
                runs.extend_from_slice(&run.key());
                watches.insert(record.as_bytes(), runs)?;
            }
            Ok::<_, ConflictableTransactionError<()>>(())
        });
        unwrap_tx(result)
    }

    /// `run` no longer waits on `record`. One lookup when nothing watches it.
    pub fn unwatch(&self, run: RunId, record: &str) -> Result<(), StoreError> {
        if !self.watches.contains_key(record.as_bytes())? {
            return Ok(());
        }
        let _writing = self.gate.writing();
        let result = self.watches.transaction(|watches| {
            let Some(runs) = watches.get(record.as_bytes())? else {
                return Ok(());
            };
            let kept: Vec<u8> = runs
                .chunks(16)
                .filter(|c| *c != run.key())
                .flatten()
                .copied()
                .collect();
            if kept.is_empty() {
                watches.remove(record.as_bytes())?;
            } else if kept.len() != runs.len() {
                watches.insert(record.as_bytes(), kept)?;
            }
            Ok::<_, ConflictableTransactionError<()>>(())
        });
        unwrap_tx(result)
    }

    /// Every watch: (record, run), by record (`store copy`).
    pub fn all_watches(&self) -> Result<Vec<(String, RunId)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.watches.iter() {
            let (record, runs) = entry?;
            let record = String::from_utf8_lossy(&record).into_owned();
            for run in runs.chunks(16).filter_map(RunId::from_key) {
                out.push((record.clone(), run));
            }
        }
        Ok(out)
    }

    /// The runs watching `record`.
    pub fn watchers(&self, record: &str) -> Result<Vec<RunId>, StoreError> {
        Ok(self
            .watches
            .get(record.as_bytes())?
            .map(|runs| runs.chunks(16).filter_map(RunId::from_key).collect())
            .unwrap_or_default())
    }

    /// Sets `run`'s timer to `at`, replacing the one it had. Not flushed: the history's next
    /// group commit makes it durable.
    pub fn set(&self, run: RunId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let new = key(run, at);
        let _writing = self.gate.writing();
        let result = (&self.by_time, &self.by_run).transaction(|(by_time, by_run)| {
            if let Some(old) = by_run.insert(&run.key(), &new)? {
                if old.as_ref() != new {
                    by_time.remove(old)?;
                }
            }
            by_time.insert(&new, &[])?;
            Ok::<_, ConflictableTransactionError<()>>(())
        });
        unwrap_tx(result)
    }

    /// Drops `run`'s timer. Returns whether it had one. One lookup when it has none.
    pub fn cancel(&self, run: RunId) -> Result<bool, StoreError> {
        if !self.by_run.contains_key(run.key())? {
            return Ok(false);
        }
        let _writing = self.gate.writing();
        let result = (&self.by_time, &self.by_run).transaction(|(by_time, by_run)| {
            let Some(old) = by_run.remove(&run.key())? else {
                return Ok(false);
            };
            by_time.remove(old)?;
            Ok::<_, ConflictableTransactionError<()>>(true)
        });
        unwrap_tx(result)
    }

    /// `run`'s timer, if it has one.
    pub fn get(&self, run: RunId) -> Result<Option<Timer>, StoreError> {
        match self.by_run.get(run.key())? {
            Some(key) => decode(&key).map(Some),
            None => Ok(None),
        }
    }

    /// Every timer due at `now` (its time is `now` or earlier), earliest first.
    pub fn due(&self, now: DateTime<Utc>) -> Result<Vec<Timer>, StoreError> {
        let mut end = [0xffu8; 24];
        end[..8].copy_from_slice(&millis(now).to_be_bytes());
        let mut out = Vec::new();
        for entry in self.by_time.range(..=end) {
            let (key, _) = entry?;
            out.push(decode(&key)?);
        }
        Ok(out)
    }

    /// The earliest timer.
    pub fn next(&self) -> Result<Option<Timer>, StoreError> {
        match self.by_time.first()? {
            Some((key, _)) => decode(&key).map(Some),
            None => Ok(None),
        }
    }

    /// Every timer, earliest first.
    pub fn all(&self) -> Result<Vec<Timer>, StoreError> {
        let mut out = Vec::new();
        for entry in self.by_time.iter() {
            let (key, _) = entry?;
            out.push(decode(&key)?);
        }
        Ok(out)
    }
}

/// Inside a record write's transaction over ([`Timers::trees`]): moves the timer of every run
/// watching `record` to the epoch, so the timer loop wakes it at once. Returns how many.
pub(crate) fn wake_watchers<E>(
    (watches, by_time, by_run): (&TransactionalTree, &TransactionalTree, &TransactionalTree),
    record: &str,
) -> Result<usize, ConflictableTransactionError<E>> {
    let Some(runs) = watches.get(record.as_bytes())? else {
        return Ok(0);
    };
    let epoch = Utc.timestamp_opt(0, 0).single().expect("the epoch");
    let mut woken = 0;
    for run in runs.chunks(16).filter_map(RunId::from_key) {
        let new = key(run, epoch);
        if let Some(old) = by_run.insert(&run.key(), &new)? {
            if old.as_ref() != new {
                by_time.remove(old)?;
            }
        }
        by_time.insert(&new, &[])?;
        woken += 1;
    }
    Ok(woken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fall_due_in_time_order_and_a_run_has_at_most_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let timers = Timers::open(&store).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let minutes = |n: i64| t0 + chrono::TimeDelta::minutes(n);
        let (a, b, c) = (RunId::new(), RunId::new(), RunId::new());
        timers.set(a, minutes(30)).unwrap();
        timers.set(b, minutes(10)).unwrap();
        timers.set(c, minutes(20)).unwrap();
        // Replacing moves `a` from 30 to 5: one timer per run.
        timers.set(a, minutes(5)).unwrap();
        assert_eq!(timers.all().unwrap().len(), 3);
        assert_eq!(
            timers.next().unwrap(),
            Some(Timer {
                run: a,
                at: minutes(5)
            })
        );
        assert_eq!(timers.due(minutes(4)).unwrap(), []);
        let due: Vec<RunId> = timers
            .due(minutes(10))
            .unwrap()
            .iter()
            .map(|t| t.run)
            .collect();
        assert_eq!(due, [a, b], "due at 10 means 10 or earlier, earliest first");
        assert_eq!(
            timers.get(c).unwrap(),
            Some(Timer {
                run: c,
                at: minutes(20)
            })
        );

        assert!(timers.cancel(a).unwrap());
        assert!(!timers.cancel(a).unwrap(), "already dropped");
        assert_eq!(timers.get(a).unwrap(), None);
        let left: Vec<RunId> = timers.all().unwrap().iter().map(|t| t.run).collect();
        assert_eq!(left, [b, c]);

        // Durable across a reopen (after a flush).
        drop(timers);
        futures_flush(&store);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let timers = Timers::open(&store).unwrap();
        assert_eq!(
            timers.next().unwrap(),
            Some(Timer {
                run: b,
                at: minutes(10)
            })
        );
    }

    fn futures_flush(store: &Store) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(store.flush())
            .unwrap();
    }
}

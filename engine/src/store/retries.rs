//! Retry marks of `retry-failed`: the durable mark that keeps a failed run from being retried
//! twice.
//!
//! One sled tree (`retried`: run id → [`RetryMark`] as JSON). A run is marked
//! ([`Retries::claim`], which of two callers only one wins) **before** its replay starts, then
//! the mark names the replay run once it exists ([`Retries::link`]); a mark without a run still
//! counts as retried. Which runs to retry and the replays are the service's (`service::retry`).

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

pub(crate) const TREE: &str = "retried";

/// That a run was retried: when, by whom, and by which new run (once it exists).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryMark {
    pub at: DateTime<Utc>,
    pub by: String,
    pub run: Option<String>,
}

/// The retry marks of a data dir.
#[derive(Debug, Clone)]
pub struct Retries {
    tree: sled::Tree,
    gate: super::Gate,
}

impl Retries {
    pub fn open(store: &Store) -> Result<Retries, StoreError> {
        Ok(Retries {
            tree: store.tree(TREE)?,
            gate: store.gate().clone(),
        })
    }

    pub fn get(&self, run: &str) -> Result<Option<RetryMark>, StoreError> {
        match self.tree.get(run.as_bytes())? {
            None => Ok(None),
            Some(value) => decode(run, &value).map(Some),
        }
    }

    /// Marks `run` as retried unless it is already; returns the existing mark when it was.
    pub fn claim(
        &self,
        run: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<RetryMark>, StoreError> {
        let _writing = self.gate.writing();
        let mark = RetryMark {
            at,
            by: by.to_owned(),
            run: None,
        };
        let value = serde_json::to_vec(&mark).expect("a mark serializes");
        match self
            .tree
            .compare_and_swap(run.as_bytes(), None as Option<&[u8]>, Some(value))?
        {
            Ok(()) => Ok(None),
            Err(err) => match err.current {
                Some(current) => decode(run, &current).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Names the replay run on `run`'s mark.
    pub fn link(&self, run: &str, mut mark: RetryMark, replay: &str) -> Result<(), StoreError> {
        let _writing = self.gate.writing();
        mark.run = Some(replay.to_owned());
        self.tree.insert(
            run.as_bytes(),
            serde_json::to_vec(&mark).expect("a mark serializes"),
        )?;
        Ok(())
    }
}

fn decode(run: &str, value: &[u8]) -> Result<RetryMark, StoreError> {
    serde_json::from_slice(value).map_err(|err| StoreError::Corrupt {
        tree: TREE,
        key: run.to_owned(),
        message: err.to_string(),
    })
}

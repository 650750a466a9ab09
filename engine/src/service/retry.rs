//! Bulk retry after an outage (`blockyard retry-failed`): which failed or `needs_attention` live
//! runs match the filters, and the durable mark that keeps each from being retried twice.
//!
//! A run is marked (`retried` tree: run id → [`RetryMark`]) **before** its live replay starts,
//! then the mark names the replay run once it exists; a mark without a run (a process stopped in
//! between) still counts as retried, so a crash can leave a run un-retried but never retry it
//! twice. A retry is an ordinary live replay ([`crate::replay`]): a new run linked to the original
//! by `replay_of`; if it fails too, it is a candidate of its own next time.

use chrono::{DateTime, Utc};

use crate::exec::RunRecord;
use crate::store::history::{History, RunFilter, RunMode, RunStatus};
use crate::store::{Store, StoreError};

const TREE: &str = "retried";

/// That a run was retried: when, by whom, and by which new run (once it exists).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryMark {
    pub at: DateTime<Utc>,
    pub by: String,
    pub run: Option<String>,
}

/// Which runs to retry.
#[derive(Debug, Clone, Default)]
pub struct RetryFilter {
    pub workflow: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// A piece of the run's error text (case-insensitive).
    pub error: Option<String>,
}

/// The retry marks of a data dir.
#[derive(Debug, Clone)]
pub struct Retries {
    tree: sled::Tree,
}

impl Retries {
    pub fn open(store: &Store) -> Result<Retries, StoreError> {
        Ok(Retries {
            tree: store.tree(TREE)?,
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

/// The live runs that failed or need attention and match `filter`, oldest first, each with its
/// retry mark when it has one.
pub fn candidates(
    history: &History,
    retries: &Retries,
    filter: &RetryFilter,
) -> Result<Vec<(RunRecord, Option<RetryMark>)>, StoreError> {
    let needle = filter.error.as_ref().map(|e| e.to_lowercase());
    let mut out = Vec::new();
    for status in [RunStatus::Failed, RunStatus::NeedsAttention] {
        let runs = history.list(&RunFilter {
            workflow: filter.workflow.clone(),
            status: Some(status),
            since: filter.since,
            ..RunFilter::default()
        })?;
        for run in runs {
            if run.mode != RunMode::Live {
                continue;
            }
            if let Some(needle) = &needle {
                let error = run.error.as_deref().unwrap_or_default().to_lowercase();
                if !error.contains(needle.as_str()) {
                    continue;
                }
            }
            let mark = retries.get(&run.id.to_string())?;
            out.push((run, mark));
        }
    }
    out.sort_by_key(|(run, _)| run.created_at);
    Ok(out)
}

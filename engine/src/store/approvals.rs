//! Approval decisions: an administrator's decision on a block waiting for one
//! (`crate::exec::approval` says when runs wait and how a decision continues them).
//!
//! Tree `approvals`: `run \0 block` → a [`Decision`], as JSON. A decision is kept after its run
//! finishes, so approving twice is told apart from approving a block that never waited.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::history::RunId;
use super::{Store, StoreError};

/// The tree holding decisions.
pub(crate) const APPROVALS: &str = "approvals";

/// An administrator's decision on one block of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    pub at: DateTime<Utc>,
    /// Who decided: the API token's name, or the OS user of a CLI on the data dir (absent in
    /// decisions recorded before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Decision {
    /// `approved by alice at 2026-11-30T19:32:06Z: HR ticket 4411`, the waiting step's note once
    /// decided.
    pub fn note(&self) -> String {
        let verb = if self.approved {
            "approved"
        } else {
            "rejected"
        };
        let by = self.by.as_deref().unwrap_or("an unnamed caller");
        let at = self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match &self.comment {
            Some(comment) => format!("{verb} by {by} at {at}: {comment}"),
            None => format!("{verb} by {by} at {at}"),
        }
    }
}

/// The recorded decisions.
#[derive(Debug, Clone)]
pub struct Approvals {
    tree: sled::Tree,
    gate: super::Gate,
}

impl Approvals {
    pub fn open(store: &Store) -> Result<Approvals, StoreError> {
        Ok(Approvals {
            tree: store.tree(APPROVALS)?,
            gate: store.gate().clone(),
        })
    }

    fn key(run: RunId, block: &str) -> Vec<u8> {
        let mut key = run.to_string().into_bytes();
        key.push(0);
        key.extend_from_slice(block.as_bytes());
        key
    }

    /// The decision on `block` of `run`, if one was made.
    pub fn get(&self, run: RunId, block: &str) -> Result<Option<Decision>, StoreError> {
        let key = Approvals::key(run, block);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|err| StoreError::Corrupt {
                        tree: APPROVALS,
                        key: String::from_utf8_lossy(&key).into_owned(),
                        message: err.to_string(),
                    })
            }
        }
    }

    /// Decisions on the newest runs that have any, the most recently decided first: at most
    /// `limit`, taken from the decisions on the `4 × limit` newest runs (keys sort by run id,
    /// so by run creation, not by decision time).
    pub fn recent(&self, limit: usize) -> Result<Vec<(RunId, String, Decision)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.iter().rev().take(limit.saturating_mul(4)) {
            let (key, value) = entry?;
            let corrupt = |message: String| StoreError::Corrupt {
                tree: APPROVALS,
                key: String::from_utf8_lossy(&key).into_owned(),
                message,
            };
            let text = std::str::from_utf8(&key).map_err(|err| corrupt(err.to_string()))?;
            let (run, block) = text
                .split_once('\0')
                .ok_or_else(|| corrupt("no block in the key".to_owned()))?;
            let run: RunId = run
                .parse()
                .map_err(|_| corrupt("not a run id".to_owned()))?;
            let decision: Decision =
                serde_json::from_slice(&value).map_err(|err| corrupt(err.to_string()))?;
            out.push((run, block.to_owned(), decision));
        }
        out.sort_by_key(|d| std::cmp::Reverse(d.2.at));
        out.truncate(limit);
        Ok(out)
    }

    /// Records the decision on `block` of `run` (replacing one made before). Not flushed.
    pub fn put(&self, run: RunId, block: &str, decision: Decision) -> Result<(), StoreError> {
        let value = serde_json::to_vec(&decision).expect("decisions serialize");
        let _writing = self.gate.writing();
        self.tree.insert(Approvals::key(run, block), value)?;
        Ok(())
    }
}

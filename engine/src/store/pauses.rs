//! Paused workflows' durable state: which workflows' triggers are held, by whom and since when.
//!
//! One sled tree (`paused`: workflow name → [`Pause`] as JSON), so a pause survives a restart;
//! callers flush the store before they acknowledge a change. What a pause means (queue and hold)
//! is the service's (`service::pause`); this module only keeps it.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Store, StoreError};

const TREE: &str = "paused";

/// Who paused a workflow, and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pause {
    pub by: String,
    pub at: DateTime<Utc>,
}

impl Pause {
    /// `workflow `NAME` paused by WHO at WHEN`, as traces and errors say it.
    pub fn describe(&self, workflow: &str) -> String {
        format!(
            "workflow `{workflow}` paused by {} at {}",
            self.by,
            self.at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }
}

/// The paused workflows of a data dir.
#[derive(Debug, Clone)]
pub struct Pauses {
    tree: sled::Tree,
    gate: super::Gate,
}

impl Pauses {
    pub fn open(store: &Store) -> Result<Pauses, StoreError> {
        Ok(Pauses {
            tree: store.tree(TREE)?,
            gate: store.gate().clone(),
        })
    }

    /// Pauses `workflow`. A workflow already paused keeps its first pause, returned with `false`.
    pub fn pause(
        &self,
        workflow: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(Pause, bool), StoreError> {
        let _writing = self.gate.writing();
        if let Some(existing) = self.get(workflow)? {
            return Ok((existing, false));
        }
        let pause = Pause {
            by: by.to_owned(),
            at,
        };
        self.tree.insert(
            workflow.as_bytes(),
            serde_json::to_vec(&pause).expect("a pause serializes"),
        )?;
        Ok((pause, true))
    }

    /// Resumes `workflow`'s triggers; the pause it lifted, or `None` when it was not paused.
    pub fn resume(&self, workflow: &str) -> Result<Option<Pause>, StoreError> {
        let _writing = self.gate.writing();
        match self.tree.remove(workflow.as_bytes())? {
            None => Ok(None),
            Some(value) => decode(workflow.as_bytes(), &value).map(Some),
        }
    }

    /// The pause of `workflow`, if it is paused.
    pub fn get(&self, workflow: &str) -> Result<Option<Pause>, StoreError> {
        match self.tree.get(workflow.as_bytes())? {
            None => Ok(None),
            Some(value) => decode(workflow.as_bytes(), &value).map(Some),
        }
    }

    /// Every paused workflow, by name.
    pub fn list(&self) -> Result<Vec<(String, Pause)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            out.push((
                String::from_utf8_lossy(&key).into_owned(),
                decode(&key, &value)?,
            ));
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<Pause, StoreError> {
    serde_json::from_slice(value).map_err(|err| StoreError::Corrupt {
        tree: TREE,
        key: String::from_utf8_lossy(key).into_owned(),
        message: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_is_kept_across_a_reopen_and_the_first_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .unwrap()
            .to_utc();
        {
            let store = Store::open(dir.path()).unwrap();
            let pauses = Pauses::open(&store).unwrap();
            assert!(pauses.pause("offboard", "alice", at).unwrap().1);
            let (kept, new) = pauses
                .pause("offboard", "bob", at + chrono::TimeDelta::hours(1))
                .unwrap();
            assert_eq!((kept.by.as_str(), new), ("alice", false));
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let pauses = Pauses::open(&store).unwrap();
        let pause = pauses.get("offboard").unwrap().unwrap();
        assert_eq!(
            pause.describe("offboard"),
            "workflow `offboard` paused by alice at 2026-11-30T10:00:00Z"
        );
        assert_eq!(pauses.resume("offboard").unwrap(), Some(pause));
        assert_eq!(pauses.resume("offboard").unwrap(), None);
        assert!(pauses.list().unwrap().is_empty());
    }
}

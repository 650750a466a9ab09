//! Cancellation: a run stops between steps once asked to.
//!
//! Two ways to ask, because sled lets one process hold a data dir: inside the process (the API,
//! `serve`), [`Cancels::request`] sets an in-memory flag; from another process (`blockyard cancel`
//! while `blockyard run` holds the store), a marker file `DATA_DIR/cancel/RUN_ID` is dropped and
//! the executor looks for it before starting each block. A block already sending finishes first:
//! cancellation never leaves a write with an unknown outcome.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::history::RunId;

/// The directory of cancel markers in a data dir.
pub fn marker_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cancel")
}

/// Asks the process running `run` in `data_dir` to stop it between steps.
pub fn request_by_marker(data_dir: &Path, run: RunId) -> std::io::Result<()> {
    let dir = marker_dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(run.to_string()), b"")
}

/// The cancel requests of one engine.
#[derive(Debug)]
pub(crate) struct Cancels {
    flags: Mutex<HashSet<RunId>>,
    dir: PathBuf,
}

impl Cancels {
    pub(crate) fn new(data_dir: &Path) -> Cancels {
        Cancels {
            flags: Mutex::default(),
            dir: marker_dir(data_dir),
        }
    }

    pub(crate) fn request(&self, run: RunId) {
        self.flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run);
    }

    pub(crate) fn is_requested(&self, run: RunId) -> bool {
        let flagged = {
            let flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
            !flags.is_empty() && flags.contains(&run)
        };
        flagged || self.dir.join(run.to_string()).exists()
    }

    /// Forgets a finished run's request.
    pub(crate) fn clear(&self, run: RunId) {
        self.flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run);
        let _ = std::fs::remove_file(self.dir.join(run.to_string()));
    }
}

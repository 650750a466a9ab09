//! Cancellation: a run stops between steps once asked to.
//!
//! Two ways to ask, because sled lets one process hold a data dir: inside the process (the API,
//! `serve`), [`Cancels::request`] sets an in-memory flag; from another process (`blockyard cancel`
//! while `blockyard run` holds the store), a marker file `DATA_DIR/cancel/RUN_ID` is dropped and
//! the executor looks for it before starting each block (it reads the marker dir at most every
//! 100 ms, so a marker is seen within that). A block already sending finishes first:
//! cancellation never leaves a write with an unknown outcome.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How often the marker dir is read again: a cancel from another process is seen within this
/// (between steps, as always), and a run no longer costs a file lookup per block.
const SCAN_EVERY: Duration = Duration::from_millis(100);

/// The cancel requests of one engine.
#[derive(Debug)]
pub(crate) struct Cancels {
    flags: Mutex<HashSet<RunId>>,
    dir: PathBuf,
    /// The markers found by the last read of `dir`, and when it was read.
    markers: Mutex<(Option<Instant>, HashSet<RunId>)>,
}

impl Cancels {
    pub(crate) fn new(data_dir: &Path) -> Cancels {
        Cancels {
            flags: Mutex::default(),
            dir: marker_dir(data_dir),
            markers: Mutex::default(),
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
        if flagged {
            return true;
        }
        let mut markers = self.markers.lock().unwrap_or_else(|e| e.into_inner());
        if markers.0.is_none_or(|at| at.elapsed() >= SCAN_EVERY) {
            *markers = (Some(Instant::now()), self.scan());
        }
        markers.1.contains(&run)
    }

    /// The run ids of the marker files (none when the dir does not exist).
    fn scan(&self) -> HashSet<RunId> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return HashSet::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Forgets a finished run's request (and removes its marker, when one was seen).
    pub(crate) fn clear(&self, run: RunId) {
        self.flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run);
        let marked = self
            .markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .remove(&run);
        if marked {
            let _ = std::fs::remove_file(self.dir.join(run.to_string()));
        }
    }
}

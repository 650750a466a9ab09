//! Cancel markers: the durable request to stop a run, `DATA_DIR/cancel/RUN_ID`.
//!
//! Files beside sled rather than a tree, because the process asking is often not the one running
//! the run (`blockyard cancel` while `blockyard run` holds the store, and sled lets one process
//! open it). A marker is durable when written (the file, its directory and a new directory's
//! parent fsynced); `crate::exec::cancel` says when runs look for them and drop them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::history::RunId;

/// The markers' directory in a data dir.
pub const DIR: &str = "cancel";

/// The directory of cancel markers in `data_dir`.
pub fn marker_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

/// The cancel markers of one data dir. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CancelMarkers {
    dir: PathBuf,
}

impl CancelMarkers {
    pub fn in_data_dir(data_dir: &Path) -> CancelMarkers {
        CancelMarkers {
            dir: marker_dir(data_dir),
        }
    }

    /// Writes `run`'s marker and fsyncs it, its directory and, when the directory was just
    /// created, its parent: on disk when this returns.
    pub fn write(&self, run: RunId) -> std::io::Result<()> {
        let dir = &self.dir;
        let created = !dir.exists();
        std::fs::create_dir_all(dir)?;
        std::fs::File::create(dir.join(run.to_string()))?.sync_all()?;
        std::fs::File::open(dir)?.sync_all()?;
        match dir.parent() {
            Some(parent) if created => std::fs::File::open(parent)?.sync_all(),
            _ => Ok(()),
        }
    }

    /// Where `run`'s marker is.
    pub fn marker(&self, run: RunId) -> PathBuf {
        self.dir.join(run.to_string())
    }

    /// The runs with a marker (none when the directory does not exist).
    pub fn scan(&self) -> HashSet<RunId> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return HashSet::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Removes `run`'s marker, if it has one.
    pub fn remove(&self, run: RunId) {
        let _ = std::fs::remove_file(self.marker(run));
    }
}

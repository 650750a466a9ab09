//! The embedded store: one sled database in the data dir, behind this module only.
//!
//! Everything durable lives here, each concern in its own trees: run history (runs, steps,
//! workflow snapshots, the subject index), the parked runs' timers ([`timers`]), records
//! (`people`, `saas_users`), and the trigger queue.
//! Keeping sled (0.34) behind [`Store`] means it can be swapped without touching the engine; no
//! other module names a sled type. Values are JSON (serde) so that `history show --json` and a
//! debugging `sled` dump read the same thing; keys are designed to sort (ULIDs, `collection/key`).
//!
//! sled lets one process open a data dir at a time. [`Store::open`] turns the lock failure into
//! [`StoreError::Locked`], which says which directory and what to do, instead of sled's raw error.

use std::path::{Path, PathBuf};

pub mod history;
pub mod in_flight;
pub mod queue;
pub mod records;
pub mod timers;
mod timestamp;

/// Names of the trees, in one place.
pub mod trees {
    /// Runs by id (ULID): the compact run record.
    pub const RUNS: &str = "runs";
    /// Steps by `run id / sequence`.
    pub const STEPS: &str = "steps";
    /// Workflow snapshots by content hash.
    pub const SNAPSHOTS: &str = "snapshots";
    /// `subject / run id` → empty: a person's runs across workflows.
    pub const SUBJECTS: &str = "subjects";
    /// Records, by `collection / key`.
    pub const RECORDS: &str = "records";
    /// The durable trigger queue.
    pub const QUEUE: &str = "queue";
}

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the data dir `{}` is in use by another blockyard process (a running `blockyard serve`?); stop it, or point this command at another `--data-dir`", dir.display())]
    Locked { dir: PathBuf },
    #[error("cannot open the data dir `{}`: {source}", dir.display())]
    Open { dir: PathBuf, source: sled::Error },
    #[error("the store failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("the store failed: {message}")]
    Io { message: String },
    #[error("a stored `{tree}` entry `{key}` is unreadable: {message}")]
    Corrupt {
        tree: &'static str,
        key: String,
        message: String,
    },
}

/// How a [`Store`] opens its sled database.
///
/// The defaults are what every command uses: a bounded page cache (sled's own default is 1 GiB,
/// which a long-running `serve` grows into), `HighThroughput` mode (less segment compaction
/// work on the write path, at the price of some disk space), and sled's background flush every
/// 500 ms kept as a backstop for writers that do not flush themselves (the run history always
/// flushes explicitly, see [`history`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most memory sled's page cache may use, in bytes.
    pub cache_capacity: u64,
    /// Optimise sled for write throughput rather than disk space.
    pub high_throughput: bool,
    /// sled's background flush interval; `None` turns it off.
    pub flush_every_ms: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            cache_capacity: 64 * 1024 * 1024,
            high_throughput: true,
            flush_every_ms: Some(500),
        }
    }
}

/// The database of one data dir. Cheap to clone (sled handles are reference-counted).
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with the default [`StoreOptions`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|err| StoreError::Open {
            dir: dir.to_owned(),
            source: sled::Error::Io(err),
        })?;
        let config = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(options.cache_capacity)
            .mode(if options.high_throughput {
                sled::Mode::HighThroughput
            } else {
                sled::Mode::LowSpace
            })
            .flush_every_ms(options.flush_every_ms);
        // sled releases its lock when its background flusher exits after the last handle drops,
        // so reopening a dir in the same process can briefly see it held: retry for up to 500 ms
        // before saying another process has it.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    if attempts >= 25 {
                        return Err(StoreError::Locked {
                            dir: dir.to_owned(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(err) => {
                    return Err(StoreError::Open {
                        dir: dir.to_owned(),
                        source: err,
                    })
                }
            }
        };
        Ok(Store {
            db,
            dir: dir.to_owned(),
        })
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A tree, for the store's own submodules (history, records, queue).
    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Makes every write so far durable. sled's blocking `flush` runs on tokio's blocking pool
    /// (its `flush_async` completes through sled's own thread pool, and stalled under many
    /// concurrent runs); callers that want to share fsyncs go through the history's group commit.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|err| StoreError::Io {
                message: format!("the flush task failed: {err}"),
            })??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_dir_says_it_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the data dir `{}` is in use by another blockyard process (a running `blockyard serve`?); stop it, or point this command at another `--data-dir`",
                dir.path().display()
            )
        );
    }
}

//! The embedded store: one sled database in the data dir, behind this module only.
//!
//! Everything durable lives here, each concern in its own trees: run history (runs, steps,
//! workflow snapshots, the subject index), the parked runs' timers ([`timers`]), records
//! (`people`, `saas_users`), the trigger queue, the mass-change guard's counted writes and
//! releases ([`guard`]), paused workflows ([`pauses`]) and `retry-failed`'s retry marks
//! ([`retries`]). Each is behind a trait of the seam ([`api`]). [`postgres`] implements the same
//! traits on PostgreSQL (with `blockyard store migrate` and `store copy`). The engine holds
//! either through the closed enums of [`any`] ([`any::AnyStore`] and one per part), which
//! dispatch by `match`: `serve` runs on PostgreSQL with `store: postgres`.
//!
//! Layers run one way: cli/server → service → exec → store. This module and [`crate::records`]
//! own their nouns ([`queue::WorkflowName`], [`queue::QueueId`], [`history::RunId`], the
//! [`trace`] entries) and import nothing from the trigger, service or server modules (a test
//! checks the sources): what a record write triggers reaches the store as the result of a
//! [`records::Evaluate`] callback, which the trigger module implements.
//! Keeping sled (0.34) behind [`Store`] and [`any`] means it can be swapped without touching the
//! engine; no other module names a `sled::` type (a test checks the sources). Values are JSON
//! (serde), except the history's run and step records, the bulk of what a data dir holds, which
//! are in a compact binary encoding ([`codec`]); keys are designed to sort (ULIDs,
//! `collection/key`).
//!
//! The data dir holds a format version ([`FORMAT_FILE`], [`FORMAT_VERSION`]), checked at open
//! before sled touches anything. Every write passes the store's [`Gate`] shared, so that
//! [`backup`] can copy all trees at one instant while the process runs.
//!
//! sled lets one process open a data dir at a time. [`Store::open`] turns the lock failure into
//! [`StoreError::Locked`], which says which directory and what to do, instead of sled's raw error.
//!
//! # What durable means
//!
//! A write is **durable** once a [`Store::flush`] that started after it has returned: it is then
//! on the disk, after an `fdatasync` of every file sled wrote since the last flush and an `fsync`
//! of each directory in which a file was created. Nothing is acknowledged before that: a write's
//! `sending` intent before the request leaves and a run's end before its outcome is reported (the
//! history's group commit, [`history`]); a record write with the run requests it triggers before
//! the API or `blockyard records` answers (an import flushes once, before its summary); a started
//! run before `POST /api/workflows/{name}/runs` answers 202; a queue entry's acknowledgement, an
//! approval decision, the cancel of a parked run, a schedule tick. Two durable things live outside
//! sled, fsynced the same way: cancel markers ([`crate::exec::cancel`]) and the OAuth2 token
//! store (`tokens.json`: a temp file, fsync, rename, fsync of its directory;
//! [`crate::http::tokens`]).
//! Each flush reports how long it took to the hook [`observe_flushes`] sets (`serve`'s metrics), so
//! the store imports nothing from the layers above it.
//!
//! - **A process kill** (`kill -9`, a panic, the OOM killer) loses nothing acknowledged, and
//!   usually nothing else: what sled handed to the kernel survives in the page cache.
//! - **A host crash or power loss** loses nothing acknowledged. Writes not yet acknowledged may be
//!   lost: a run's `running` record, the steps of a run that has sent reads only (`resume` sends
//!   them again), a record written by an import that had not finished.
//! - **Not promised**, because `fsync` does not reach the disk there: a data dir on a filesystem
//!   mounted with `nobarrier` (or `barrier=0`), on a disk or VM disk whose volatile write cache
//!   ignores flush requests (qemu `cache=unsafe`), under `libeatmydata`, on tmpfs (`/dev/shm`:
//!   memory, which a host crash empties), or on a network share (NFS, SMB: neither sled's lock nor
//!   fsync means there what it means on a local disk).
//!
//! # How: sled's flush, then fsync
//!
//! sled 0.34's `flush` writes its log buffers with `pwrite`, then calls
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on them (Linux): the pages are written, but
//! no file metadata is committed (the log grows, so its new size is not on disk) and the device's
//! write cache is not flushed, which its manual page says makes it unfit for data integrity. sled
//! fsyncs the log only from its background flusher (every 500 ms, [`StoreOptions`]), and never
//! fsyncs its blob files (`db/blobs/`: any value or tree node over about 128 KiB) or a directory.
//! So [`Store::flush`], in one blocking task:
//!
//! 1. runs sled's flush: every write made before it is in the log file, and every blob the log
//!    points to is written (sled writes a blob whole before the log entry pointing at it);
//! 2. `fdatasync`s each blob file that appeared since the last flush, then fsyncs `db/blobs/` when
//!    one did, so the log never durably points to a blob that is not;
//! 3. `fdatasync`s the log through a descriptor the store opened read-only when it opened sled.
//!    An fsync acts on the file, not on the descriptor: it writes every dirty page of the log
//!    whoever wrote it, commits the metadata needed to read them back (the new size), and flushes
//!    the device's write cache. sled 0.34 has no setting to do this itself, and keeps one log
//!    file for its lifetime, so one descriptor opened at start covers every later write.
//!
//! At open, sled's `conf` (which it writes without an fsync), the `db` directory, the data dir
//! and, when the data dir was just created, its parent are fsynced, so the files sled created
//! are found after a crash. sled's snapshots (`db/snap.*`, written only at open) are fsynced by
//! sled. The history's group commit calls [`Store::flush`] once for every run waiting, so many
//! runs still share one fsync.
//!
//! A failed fsync poisons the store: Linux may drop pages it could not write and report success
//! on the next fsync, so after one failure nothing can be promised. Every later flush fails with
//! the first error, and the process must be restarted (it recovers from what is on disk).
//!
//! [`Store::check_writable`] (a small write to the `health` tree, then a flush) is what `serve`'s
//! `/readyz` asks. [`Store::inject_flush_failure`] is the one fault-injection hook, for tests: it
//! makes every flush fail as a full disk would, until it is switched off.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use gate::Gate;

pub mod any;
pub mod api;
pub mod approvals;
pub mod backup;
pub mod cancels;
mod codec;
mod gate;
pub mod guard;
pub mod history;
pub mod in_flight;
pub mod pauses;
pub mod postgres;
pub mod queue;
pub mod records;
pub mod reminders;
pub mod retries;
pub mod timers;
mod timestamp;
pub mod tokens;
pub mod trace;

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
    /// `workflow / run id` → empty: a workflow's runs (the console's filter by workflow).
    pub const WORKFLOWS: &str = "workflow_runs";
    /// Records, by `collection / key`.
    pub const RECORDS: &str = "records";
    /// The durable trigger queue.
    pub const QUEUE: &str = "queue";
    /// `probe` → the time of the last write check ([`super::Store::check_writable`]).
    pub const HEALTH: &str = "health";
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
    #[error("cannot make `{}` durable (fsync failed: {message}); what blockyard wrote since its last flush may not be on disk: check the disk, then restart blockyard", path.display())]
    Sync { path: PathBuf, message: String },
    #[error("the data dir `{}` has format version {found}, newer than this blockyard reads (version {supported}); run the blockyard release that wrote it, or restore a backup this release made (`blockyard store restore`)", dir.display())]
    NewerFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("the data dir `{}` has an unreadable format version in `{}` ({content:?}); it holds one number, such as `{supported}`: restore it, or restore the data dir from a backup", dir.display(), file.display())]
    BadFormat {
        dir: PathBuf,
        file: PathBuf,
        content: String,
        supported: u32,
    },
    #[error("a stored `{tree}` entry `{key}` is unreadable: {message}")]
    Corrupt {
        tree: &'static str,
        key: String,
        message: String,
    },
    /// A PostgreSQL statement failed (`url` has its password redacted).
    #[error("the PostgreSQL store at `{url}` failed: {message}")]
    Postgres { url: String, message: String },
    /// The PostgreSQL store's URL is unusable (`url` has its password redacted).
    #[error("the PostgreSQL URL `{url}` is not usable: {message}; write it as `postgres://USER:PASSWORD@HOST:PORT/DATABASE`")]
    PostgresUrl { url: String, message: String },
    #[error("the PostgreSQL database at `{url}` has schema version {found}, newer than this blockyard knows (version {supported}); run the blockyard release that migrated it")]
    NewerSchema {
        url: String,
        found: i32,
        supported: i32,
    },
}

/// The version of the on-disk format this build reads and writes, kept in the data dir's
/// [`FORMAT_FILE`]. A data dir written before the file existed (no file, but a `db`) is version 1,
/// the format those releases wrote; [`Store::open`] then writes the file. An older version is
/// migrated at open, a newer one is refused.
///
/// - 1: history's run and step records as JSON.
/// - 2: history's run and step records in the compact binary encoding (`codec`). Version 1's
///   JSON entries still read (a value's first byte tells the two apart), so migrating from 1 only
///   writes the new version: a release that reads only JSON then refuses the data dir with what
///   to do, instead of failing on the first binary entry it meets.
pub const FORMAT_VERSION: u32 = 2;

/// The file in the data dir that holds [`FORMAT_VERSION`], as text (`1\n`).
pub const FORMAT_FILE: &str = "format";

/// Checks the format version of the data dir `dir` before sled opens it: `Ok(true)` when the
/// file must be written (a new data dir, or one from before the file existed).
fn check_format(dir: &Path) -> Result<bool, StoreError> {
    let file = dir.join(FORMAT_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(err) => {
            return Err(StoreError::Open {
                dir: dir.to_owned(),
                source: sled::Error::Io(err),
            })
        }
    };
    let bad = || StoreError::BadFormat {
        dir: dir.to_owned(),
        file: file.clone(),
        content: text.chars().take(40).collect(),
        supported: FORMAT_VERSION,
    };
    let found: u32 = text.trim().parse().map_err(|_| bad())?;
    match found {
        0 => Err(bad()),
        FORMAT_VERSION => Ok(false),
        newer if newer > FORMAT_VERSION => Err(StoreError::NewerFormat {
            dir: dir.to_owned(),
            found: newer,
            supported: FORMAT_VERSION,
        }),
        // 1 → 2: nothing to rewrite (see [`FORMAT_VERSION`]); the new version is written.
        1 => Ok(true),
        _ => Err(bad()),
    }
}

/// Writes [`FORMAT_FILE`] durably: a temp file, fsync, rename, fsync of the data dir.
pub(crate) fn write_format(dir: &Path) -> Result<(), StoreError> {
    use std::io::Write as _;
    let file = dir.join(FORMAT_FILE);
    let temp = dir.join(format!("{FORMAT_FILE}.tmp"));
    std::fs::File::create(&temp)
        .and_then(|mut f| {
            f.write_all(format!("{FORMAT_VERSION}\n").as_bytes())?;
            f.sync_all()
        })
        .map_err(|err| sync_error(&temp, &err))?;
    std::fs::rename(&temp, &file).map_err(|err| sync_error(&file, &err))?;
    sync_dir(dir)
}

/// How a [`Store`] opens its sled database.
///
/// The defaults are what every command uses: a bounded page cache (sled's own default is 1 GiB,
/// which a long-running `serve` grows into), `HighThroughput` mode (less segment compaction
/// work on the write path, at the price of some disk space), and sled's background flush (with an
/// fsync of its log) every 500 ms, kept as a backstop: it bounds how much of what was not
/// acknowledged yet a crash can lose. Nothing acknowledged waits for it: every durable point
/// calls [`Store::flush`].
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
    files: Arc<SledFiles>,
    gate: Gate,
}

/// sled's files as [`Store::flush`] fsyncs them after sled's own flush (see the module docs).
#[derive(Debug)]
struct SledFiles {
    /// sled's log, `db/db`, opened read-only: an fsync through it syncs the file.
    log: File,
    log_path: PathBuf,
    /// `db/blobs`.
    blobs: PathBuf,
    state: Mutex<SyncState>,
}

#[derive(Debug, Default)]
struct SyncState {
    /// The blob files already fsynced (sled creates each once and never rewrites it).
    synced_blobs: HashSet<OsString>,
    /// The first fsync failure (the file, the error): every later flush reports it.
    failed: Option<(PathBuf, String)>,
    /// A fault-injection switch for tests: while set, every flush fails with this message (as a
    /// full disk would), without poisoning the store. See [`Store::inject_flush_failure`].
    injected: Option<String>,
}

fn sync_error(path: &Path, err: &std::io::Error) -> StoreError {
    StoreError::Sync {
        path: path.to_owned(),
        message: err.to_string().to_lowercase(),
    }
}

/// fsyncs a directory, so the files created (or renamed) in it are found after a crash.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| sync_error(dir, &err))
}

impl SledFiles {
    /// Opens the log of the sled database in `db_dir` and fsyncs what sled created at open:
    /// its `conf`, the `db` directory and the data dir (its parent too when `created`).
    fn open(data_dir: &Path, db_dir: &Path, created: bool) -> Result<SledFiles, StoreError> {
        let log_path = db_dir.join("db");
        let log = File::open(&log_path).map_err(|err| sync_error(&log_path, &err))?;
        let conf = db_dir.join("conf");
        File::open(&conf)
            .and_then(|f| f.sync_all())
            .map_err(|err| sync_error(&conf, &err))?;
        let blobs = db_dir.join("blobs");
        let files = SledFiles {
            log,
            log_path,
            blobs,
            state: Mutex::default(),
        };
        files.sync_blobs(&mut files.state.lock().unwrap_or_else(|e| e.into_inner()))?;
        sync_dir(db_dir)?;
        sync_dir(data_dir)?;
        if created {
            match data_dir.parent() {
                Some(parent) if parent.as_os_str().is_empty() => sync_dir(Path::new("."))?,
                Some(parent) => sync_dir(parent)?,
                None => {}
            }
        }
        Ok(files)
    }

    /// Makes durable everything sled's last flush wrote: new blob files (and their directory),
    /// then the log. After a failure, fails with the first error without trying again.
    fn sync(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(message) = &state.injected {
            return Err(sync_error(
                &self.log_path,
                &std::io::Error::other(message.clone()),
            ));
        }
        if let Some((path, message)) = &state.failed {
            return Err(StoreError::Sync {
                path: path.clone(),
                message: message.clone(),
            });
        }
        let synced = self.sync_blobs(&mut state).and_then(|()| {
            self.log
                .sync_data()
                .map_err(|err| sync_error(&self.log_path, &err))
        });
        if let Err(StoreError::Sync { path, message }) = &synced {
            state.failed = Some((path.clone(), message.clone()));
        }
        synced
    }

    /// fsyncs each blob file not fsynced yet, then the blobs directory when there was one.
    fn sync_blobs(&self, state: &mut SyncState) -> Result<(), StoreError> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(sync_error(&self.blobs, &err)),
        };
        let mut present = HashSet::with_capacity(state.synced_blobs.len());
        let mut new = false;
        for entry in entries {
            let name = entry
                .map_err(|err| sync_error(&self.blobs, &err))?
                .file_name();
            if !state.synced_blobs.contains(&name) {
                let path = self.blobs.join(&name);
                match File::open(&path).and_then(|f| f.sync_data()) {
                    Ok(()) => new = true,
                    // Removed by sled's blob collection since the listing.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(sync_error(&path, &err)),
                }
            }
            present.insert(name);
        }
        state.synced_blobs = present;
        if new {
            sync_dir(&self.blobs)?;
        }
        Ok(())
    }
}

/// Told how long each flush took; the service's metrics set it ([`observe_flushes`]), so the store
/// reports its flush latency without knowing the layers above it.
static FLUSH_OBSERVER: std::sync::OnceLock<fn(std::time::Duration)> = std::sync::OnceLock::new();

/// Has every later flush, of any store in this process, report its duration to `observer`. Set
/// once per process: later calls change nothing.
pub fn observe_flushes(observer: fn(std::time::Duration)) {
    let _ = FLUSH_OBSERVER.set(observer);
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with the default [`StoreOptions`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|err| StoreError::Open {
            dir: dir.to_owned(),
            source: sled::Error::Io(err),
        })?;
        let write_format_file = check_format(dir)?;
        let db_dir = dir.join("db");
        let config = sled::Config::new()
            .path(&db_dir)
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
        let files = SledFiles::open(dir, &db_dir, created)?;
        if write_format_file {
            write_format(dir)?;
        }
        Ok(Store {
            db,
            dir: dir.to_owned(),
            files: Arc::new(files),
            gate: Gate::default(),
        })
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gate every write of this store passes (see [`backup`]).
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    /// A tree, for the store's own submodules (history, records, queue).
    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Makes every write so far durable: sled's flush, then an fsync of the files it wrote (see
    /// the module docs). Runs on tokio's blocking pool (sled's `flush_async` completes through
    /// sled's own thread pool, and stalled under many concurrent runs); callers that want to
    /// share fsyncs go through the history's group commit.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush_blocking())
            .await
            .map_err(|err| StoreError::Io {
                message: format!("the flush task failed: {err}"),
            })?
    }

    /// [`Store::flush`], on the calling thread.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.db.flush()?;
        let synced = self.files.sync();
        if let Some(observe) = FLUSH_OBSERVER.get() {
            observe(started.elapsed());
        }
        synced
    }

    /// Whether a write can be made durable now: writes the time to the `health` tree and
    /// flushes (`serve`'s `/readyz`). Blocking.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let now = chrono::Utc::now().to_rfc3339();
        self.tree(trees::HEALTH)?.insert("probe", now.as_bytes())?;
        self.flush_blocking()
    }

    /// Fault injection, for tests of what a failing disk does: while `Some(message)`, every flush
    /// fails (`message` as its error) and nothing is promised durable; `None` ends it. Unlike a
    /// real fsync failure it does not poison the store.
    #[doc(hidden)]
    pub fn inject_flush_failure(&self, message: Option<&str>) {
        self.files
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .injected = message.map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers run one way (cli/server → service → exec → store): the store and records own their
    /// nouns and import nothing from the trigger, service or server modules, nor from the layers
    /// above those (exec, cli). Comments may name them.
    #[test]
    fn the_store_and_records_import_nothing_from_the_layers_above() {
        fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["engine/src/store", "engine/src/records"] {
            sources(&root.join(dir), &mut files);
        }
        files.sort();
        assert!(files.len() > 5, "found the sources: {files:?}");
        let mut found = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            // A path through `crate::` (`crate::trigger::X`, `crate::{trigger, …}`) or any line
            // of a `use` (a group split over lines too).
            let mut in_use = false;
            for (n, line) in text.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    continue;
                }
                let starts_use = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
                    .iter()
                    .any(|p| trimmed.starts_with(p));
                let imports = in_use || starts_use || trimmed.contains("crate::");
                in_use = (in_use || starts_use) && !trimmed.contains(';');
                let words: Vec<&str> = trimmed
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .collect();
                if imports
                    && words
                        .iter()
                        .any(|w| matches!(*w, "trigger" | "service" | "server" | "exec" | "cli"))
                {
                    found.push(format!(
                        "{}:{}: {trimmed}",
                        file.strip_prefix(root).unwrap().display(),
                        n + 1
                    ));
                }
            }
        }
        assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
    }

    /// sled stays behind the store: no module outside `store/` names a `sled::` item (the engine
    /// holds the backends through [`any`]). Comments may name it.
    #[test]
    fn no_module_outside_the_store_names_sled() {
        fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let store = root.join("engine/src/store");
        let mut files = Vec::new();
        sources(&root.join("engine/src"), &mut files);
        files.retain(|f| !f.starts_with(&store));
        files.sort();
        assert!(files.len() > 20, "found the sources: {files:?}");
        let mut found = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if code.contains("sled::") {
                    found.push(format!(
                        "{}:{}: {}",
                        file.strip_prefix(root).unwrap().display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
        assert!(
            found.is_empty(),
            "sled outside the store:\n{}",
            found.join("\n")
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_flush_fsyncs_each_new_blob_once_and_a_failed_fsync_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("t").unwrap();
        // Over sled's inline limit (about 128 KiB): the value goes to a blob file of its own.
        tree.insert("big", vec![7u8; 300 * 1024]).unwrap();
        store.flush_blocking().unwrap();
        let blobs: HashSet<OsString> = std::fs::read_dir(dir.path().join("db/blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!blobs.is_empty(), "the big value is a blob");
        let synced = |store: &Store| store.files.state.lock().unwrap().synced_blobs.clone();
        assert_eq!(synced(&store), blobs);
        tree.insert("small", "x").unwrap();
        store.flush_blocking().unwrap();
        assert_eq!(synced(&store), blobs);

        // A log whose fsync fails (procfs refuses fsync): the flush says which file and why.
        let files = |log: &Path, failed: Option<(PathBuf, String)>| {
            Arc::new(SledFiles {
                log: File::open(log).unwrap(),
                log_path: log.to_owned(),
                blobs: dir.path().join("db/blobs"),
                state: Mutex::new(SyncState {
                    synced_blobs: blobs.clone(),
                    failed,
                    injected: None,
                }),
            })
        };
        let broken = Store {
            files: files(Path::new("/proc/self/stat"), None),
            ..store.clone()
        };
        let message = "cannot make `/proc/self/stat` durable (fsync failed: invalid argument (os error 22)); what blockyard wrote since its last flush may not be on disk: check the disk, then restart blockyard";
        assert_eq!(broken.flush_blocking().unwrap_err().to_string(), message);
        // Poisoned: every later flush fails with the first error, even where an fsync would now
        // succeed (the real log), since the pages the failed one dropped are gone.
        let failed = broken.files.state.lock().unwrap().failed.clone();
        assert!(failed.is_some());
        let poisoned = Store {
            files: files(&dir.path().join("db/db"), failed),
            ..store.clone()
        };
        assert_eq!(poisoned.flush_blocking().unwrap_err().to_string(), message);
        assert_eq!(poisoned.flush_blocking().unwrap_err().to_string(), message);
        store.flush_blocking().unwrap();
    }

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

//! `blockyard store backup` and `restore`: a consistent copy of a data dir, and putting one back.
//!
//! # Consistency
//!
//! A backup is the store at one instant, across all its trees: [`Store::backup`] takes the
//! store's write gate exclusively ([`super::Gate`]: every write of the store passes it shared,
//! one sled write or transaction at a time), so it waits for the writes under way and holds
//! every later one back while it copies. Reads go on. Under the gate it copies every sled tree,
//! entry by entry, into a new sled database in the backup directory (sled 0.34 has no snapshot
//! and its files are not consistent on their own while it runs, so the files are not copied), and
//! the cancel markers (`cancel/`). Then it lets writes through again and flushes the copy (sled's
//! flush and an fsync of its files, as for any durable write), and writes the [`FORMAT_FILE`].
//!
//! What it holds is exactly what a crash at that instant would have left had everything been
//! flushed: a run mid-block, one waiting for approval or parked to retry, a queued request not yet
//! taken. The engine recovers from such a state by design, so `blockyard resume` (or `serve`,
//! which resumes at start) finishes the runs a restored backup holds, as after a crash.
//!
//! Writers wait for as long as the copy takes (it reads and writes every entry once). The OAuth
//! token store (`tokens.json`) is not copied: its refresh tokens rotate on use, so a copy is soon
//! spent; a restored data dir keeps the target's own, or signs in again.
//!
//! A live `serve` holds its data dir (sled lets one process open it), so a backup of it goes
//! through the service (`POST /api/store/backup`), which calls [`Store::backup`] on its store.
//!
//! [`restore`] copies a backup's files into a data dir no process holds, refusing a non-empty one
//! unless forced, and opens the result, which checks its format version.

use std::path::{Path, PathBuf};

use super::{check_format, Store, StoreError, FORMAT_FILE};

use super::cancels::DIR as CANCEL_DIR;

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupReport {
    /// The backup directory.
    pub dir: PathBuf,
    /// Trees copied.
    pub trees: usize,
    /// Entries copied, over all trees.
    pub entries: u64,
}

/// A backup or restore that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup directory `{}` is not empty; name a new directory (a backup never writes over one)", dir.display())]
    BackupNotEmpty { dir: PathBuf },
    #[error("`{}` is not a blockyard backup (it has no `{FORMAT_FILE}` file and `db` directory); pass a directory `blockyard store backup` wrote", dir.display())]
    NotABackup { dir: PathBuf },
    #[error("the data dir `{}` is not empty; pass `--force` to replace its store with the backup's", dir.display())]
    TargetNotEmpty { dir: PathBuf },
    #[error("cannot copy `{}`: {message}", path.display())]
    Copy { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn copy_error(path: &Path, err: &std::io::Error) -> BackupError {
    BackupError::Copy {
        path: path.to_owned(),
        message: err.to_string().to_lowercase(),
    }
}

/// Whether `dir` is missing or an empty directory.
fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(err) => Err(copy_error(dir, &err)),
    }
}

/// Copies the files of `from` into `to` (created), recursively, fsyncing each file and directory.
fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::create_dir_all(to).map_err(|err| copy_error(to, &err))?;
    for entry in std::fs::read_dir(from).map_err(|err| copy_error(from, &err))? {
        let entry = entry.map_err(|err| copy_error(from, &err))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if entry
            .file_type()
            .map_err(|err| copy_error(&source, &err))?
            .is_dir()
        {
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target)
                .and_then(|_| std::fs::File::open(&target)?.sync_all())
                .map_err(|err| copy_error(&source, &err))?;
        }
    }
    super::sync_dir(to)?;
    Ok(())
}

impl Store {
    /// Copies this store, at one instant, into `dir` (a new or empty directory), which is then a
    /// data dir of its own. Blocking: async callers run it on a blocking thread.
    pub fn backup(&self, dir: &Path) -> Result<BackupReport, BackupError> {
        if !is_empty_dir(dir)? {
            return Err(BackupError::BackupNotEmpty {
                dir: dir.to_owned(),
            });
        }
        // Opening the copy creates its sled files and its format file.
        let copy = Store::open(dir)?;
        let mut report = BackupReport {
            dir: dir.to_owned(),
            trees: 0,
            entries: 0,
        };
        {
            let _quiet = self.gate().quiesce();
            for name in self.db.tree_names() {
                let from = self.db.open_tree(&name).map_err(StoreError::from)?;
                let to = copy.db.open_tree(&name).map_err(StoreError::from)?;
                for entry in from.iter() {
                    let (key, value) = entry.map_err(StoreError::from)?;
                    to.insert(key, value).map_err(StoreError::from)?;
                    report.entries += 1;
                }
                report.trees += 1;
            }
            let markers = self.dir.join(CANCEL_DIR);
            if markers.is_dir() {
                copy_tree(&markers, &dir.join(CANCEL_DIR))?;
            }
        }
        copy.flush_blocking()?;
        Ok(report)
    }
}

/// Removes the directory `dir` and what it holds, if it exists.
fn remove_dir(dir: &Path) -> Result<(), BackupError> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(copy_error(dir, &err)),
        _ => Ok(()),
    }
}

/// Puts the backup in `backup` back as the data dir `data_dir`. A data dir that is not empty is
/// refused unless `force`, which replaces its store (`db`, the cancel markers and the format
/// file) and leaves its other files (the token store); a data dir a process holds is refused
/// either way ([`StoreError::Locked`]). The result is opened once, which checks it.
pub fn restore(backup: &Path, data_dir: &Path, force: bool) -> Result<(), BackupError> {
    if !backup.join(FORMAT_FILE).is_file() || !backup.join("db").is_dir() {
        return Err(BackupError::NotABackup {
            dir: backup.to_owned(),
        });
    }
    check_format(backup)?;
    if !is_empty_dir(data_dir)? {
        if !force {
            return Err(BackupError::TargetNotEmpty {
                dir: data_dir.to_owned(),
            });
        }
        if data_dir.join("db").is_dir() {
            // Fails when a process holds it; released when dropped.
            drop(Store::open(data_dir)?);
        }
    }
    std::fs::create_dir_all(data_dir).map_err(|err| copy_error(data_dir, &err))?;
    // Each part is copied beside the one it replaces, then renamed over it: a copy that fails
    // halfway leaves the data dir as it was.
    for name in ["db", CANCEL_DIR] {
        let from = backup.join(name);
        let to = data_dir.join(name);
        let staged = data_dir.join(format!("{name}.restoring"));
        remove_dir(&staged)?;
        if from.is_dir() {
            copy_tree(&from, &staged)?;
        }
        remove_dir(&to)?;
        if from.is_dir() {
            std::fs::rename(&staged, &to).map_err(|err| copy_error(&to, &err))?;
        }
    }
    // The backup's version is this build's (checked above): written as a new data dir's is.
    super::write_format(data_dir)?;
    drop(Store::open(data_dir)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The copy is the store at one instant: a write under way when the backup starts (two
    /// inserts, like a run record and its timer) is in it whole, never half.
    #[test]
    fn writes_outside_the_history_wait_for_a_backup_under_way() {
        use crate::records::Subject;
        use crate::store::queue::QueueId;
        use crate::store::records::RecordStore;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let records = RecordStore::open(&store).unwrap();
        let guard = crate::store::guard::GuardStore::open(&store).unwrap();
        let pauses = crate::store::pauses::Pauses::open(&store).unwrap();
        let retries = crate::store::retries::Retries::open(&store).unwrap();
        for note in ["paused", "held", "guard", "pause", "retry"] {
            let quiet = store.gate().quiesce();
            let (done, finished) = std::sync::mpsc::channel();
            let writer = {
                let records = records.clone();
                let (guard, pauses, retries) = (guard.clone(), pauses.clone(), retries.clone());
                std::thread::spawn(move || {
                    let subject = Subject::new(
                        crate::records::Collection::People,
                        crate::records::RecordKey::parse("ada@example.com"),
                    );
                    let now = chrono::Utc::now();
                    let noted = match note {
                        "paused" => records.note_paused(QueueId::generate(), "paused by dana"),
                        "held" => records.note_held(&subject, "01RUN", None, "held by the guard"),
                        "guard" => guard
                            .admit(
                                "offboard",
                                crate::store::history::RunId::new(),
                                "delete",
                                now,
                                Duration::from_secs(3600),
                                None,
                            )
                            .map(|_| true),
                        "pause" => pauses.pause("offboard", "dana", now).map(|_| true),
                        _ => retries.claim("01RUN", "dana", now).map(|_| true),
                    };
                    done.send(()).unwrap();
                    noted
                })
            };
            assert!(
                finished.recv_timeout(Duration::from_millis(200)).is_err(),
                "a write ({note}) went through while a backup copied the store"
            );
            drop(quiet);
            writer.join().unwrap().unwrap();
        }
    }

    #[test]
    fn a_backup_waits_for_the_write_under_way_and_copies_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let tree = store.tree("t").unwrap();
        let writing = store.gate().writing();
        tree.insert("first", "1").unwrap();

        let (done, finished) = std::sync::mpsc::channel();
        let backup = {
            let store = store.clone();
            let to = dir.path().join("backup");
            std::thread::spawn(move || {
                let report = store.backup(&to);
                done.send(()).unwrap();
                report
            })
        };
        // Not finished while the write is under way (on a correct gate this never fails).
        assert!(
            finished.recv_timeout(Duration::from_millis(200)).is_err(),
            "the backup finished during a write"
        );
        tree.insert("second", "2").unwrap();
        drop(writing);
        backup.join().unwrap().unwrap();
        drop(store);

        let copy = Store::open(&dir.path().join("backup")).unwrap();
        let tree = copy.tree("t").unwrap();
        assert_eq!(tree.get("first").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(tree.get("second").unwrap().as_deref(), Some(&b"2"[..]));
    }
}

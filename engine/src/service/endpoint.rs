//! `serve.json`: where a running `blockyard serve` listens, written into its data dir so that a
//! CLI command pointed at the same data dir talks to the service instead of failing on the lock.
//!
//! The file holds the API's URL and the process id, never a token (the CLI reads the token from
//! `BLOCKYARD_TOKEN`). `serve` writes it once it listens and removes it on a clean stop; a file
//! left by a process that is gone (a kill, a crash) is stale: [`Endpoint::find`] ignores it when
//! its pid is not alive (checked under `/proc` on Linux; elsewhere a file is taken as live, and a
//! service that cannot be reached says so).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the data dir.
pub const FILE: &str = "serve.json";

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The API's base URL, `http://127.0.0.1:8080` (the routes are under `/api`).
    pub url: String,
    /// The serving process.
    pub pid: u32,
}

/// Why `serve.json` could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot write `{}`: {source}; check the data dir's permissions", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is not a service endpoint ({reason}); remove it if no `blockyard serve` runs on this data dir", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl Endpoint {
    /// This process, listening at `url`.
    pub fn this_process(url: String) -> Endpoint {
        Endpoint {
            url,
            pid: std::process::id(),
        }
    }

    /// `DATA_DIR/serve.json`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// Writes the file (through a temporary file and a rename, so a reader never sees half).
    pub fn write(&self, data_dir: &Path) -> Result<(), EndpointError> {
        let path = Endpoint::path(data_dir);
        let tmp = data_dir.join(format!(".{FILE}.{}", self.pid));
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| EndpointError::Write { path, source })
    }

    /// Removes the file if it is this endpoint's (a newer service's file is left alone).
    pub fn remove(&self, data_dir: &Path) {
        let path = Endpoint::path(data_dir);
        if let Ok(Some(found)) = Endpoint::read(&path) {
            if found == *self {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// The live service of `data_dir`: `None` without a file, or with a stale one.
    pub fn find(data_dir: &Path) -> Result<Option<Endpoint>, EndpointError> {
        Ok(Endpoint::read(&Endpoint::path(data_dir))?.filter(|e| alive(e.pid)))
    }

    fn read(path: &Path) -> Result<Option<Endpoint>, EndpointError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(EndpointError::Invalid {
                    path: path.to_owned(),
                    reason: err.to_string().to_lowercase(),
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| EndpointError::Invalid {
                path: path.to_owned(),
                reason: err.to_string(),
            })
    }
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_a_dead_process_is_stale_and_one_of_a_live_process_is_found() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Endpoint::find(dir.path()).unwrap(), None);
        let live = Endpoint::this_process("http://127.0.0.1:1".into());
        live.write(dir.path()).unwrap();
        assert_eq!(Endpoint::find(dir.path()).unwrap(), Some(live.clone()));
        let dead = Endpoint {
            url: "http://127.0.0.1:2".into(),
            pid: u32::MAX - 1,
        };
        dead.write(dir.path()).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(Endpoint::find(dir.path()).unwrap(), None);
        }
        // Another process's file is not this one's to remove.
        live.remove(dir.path());
        assert!(Endpoint::path(dir.path()).exists());
        dead.remove(dir.path());
        assert!(!Endpoint::path(dir.path()).exists());
    }
}

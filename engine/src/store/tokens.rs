//! The token store: the OAuth2 tokens vendors issue, kept where the next process finds them.
//!
//! Calendly's refresh tokens are single-use: a refresh revokes the token it spent and returns a
//! new one. A process that kept the new one in memory only would leave every later process (and
//! itself after a restart) holding a revoked token (`invalid_grant`). So the tokens of each
//! `oauth2_refresh_token` credential live in a [`TokenStore`]: per credential name, the refresh
//! token to spend next, the access token in use with its expiry (unix seconds), the scopes the
//! vendor granted, and when the tokens were last refreshed. `blockyard auth login` writes an entry;
//! [`crate::http::Credential`] reads and rotates it; `auth status` shows it without its secrets;
//! `auth logout` removes it.
//!
//! [`TokenStore`] is the seam of the store for one host (`auth login`, `status`, `logout`): [`TokenStore::lock`] hands out the one
//! [`TokenLock`] of the store, under which a refresh reads the entry, spends its refresh token
//! and writes the rotated one before anyone else may read it, so a single-use refresh token is
//! spent once. [`FileTokenStore`] is the implementation for one host: `tokens.json` in the
//! config's data dir, mode 0600. [`CredentialTokens`] is the same promise one credential at a
//! time and async throughout ([`EntryLock::save`] writes and releases), which a store shared by
//! several hosts implements: PostgreSQL's locks the credential's row
//! ([`crate::store::postgres::tokens`]); the file store implements it under its one lock. The
//! client's credentials refresh through [`CredentialTokens`] on either store
//! ([`crate::http::Client::on_store`] picks PostgreSQL's for a service on it).
//!
//! - Every refresh happens while holding an exclusive lock on `tokens.json.lock` (an advisory
//!   `flock`, released by the OS when a process dies), so a `call` and a running `serve` never
//!   spend the same refresh token. Under the lock the file is read again: an access token another
//!   process stored that is still valid is used without a refresh, and otherwise the refresh token
//!   spent is the stored one, never a copy read earlier.
//! - New tokens are written (a temp file created 0600, fsync, rename over `tokens.json`, fsync of
//!   the directory, and of its parent when the directory was just created) before the new access
//!   token is used; a failed write is an error.
//! - An entry written by `auth login` has the origin [`LOGIN`]. Any other entry keeps a
//!   fingerprint of the configured refresh token it descends from, so pasting a new refresh token
//!   into `blockyard.yaml` (after authorizing the app again) makes the config's win; the next
//!   refresh replaces the entry. A login entry wins over the config's refresh token until
//!   `auth logout` forgets it.
//! - A file others may read (wider than 0600, say after a copy) is reported by
//!   [`TokenStore::warning`], which the commands print at start.
//! - Tokens never reach history, logs or errors: the file holds nothing else, its entries print as
//!   `[redacted]`, errors name the file and never its contents, and the client's redactor learns
//!   every token it reads.
//!
//! The store belongs to the config's data dir (not a `--data-dir` given to one command), so every
//! process using one `blockyard.yaml` shares it; with `store: postgres` it is the database's
//! `tokens` table instead, for `serve`'s workers and the commands alike. A client built without a store
//! ([`crate::http::Credentials::from_config`], for tests and embedding) keeps rotated tokens in
//! memory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// The store's file name in the data dir.
pub const FILE: &str = "tokens.json";

/// The origin of an entry written by `blockyard auth login` (not descended from a configured
/// refresh token).
pub const LOGIN: &str = "login";

/// The future of [`TokenStore::lock`].
pub type Locking<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn TokenLock>, TokenStoreError>> + Send + 'a>>;

/// Where the OAuth2 tokens of a config are kept, shared by every process that uses it.
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// Where the tokens are, for people (a path; never a secret).
    fn location(&self) -> String;

    /// The stored tokens, without the lock (a write replaces them whole, so a read never sees
    /// half of one); empty when nothing was stored yet.
    fn read(&self) -> Result<Tokens, TokenStoreError>;

    /// Waits for the store's exclusive lock: until it is dropped, no other process or task reads
    /// under the lock or writes.
    fn lock(&self) -> Locking<'_>;

    /// [`TokenStore::lock`], blocking the calling thread.
    fn lock_blocking(&self) -> Result<Box<dyn TokenLock>, TokenStoreError>;

    /// Something the user should know at start, such as a file others can read.
    fn warning(&self) -> Option<TokenStoreWarning> {
        None
    }
}

/// The store, locked: read, then write what replaces it. The lock is released when dropped.
pub trait TokenLock: Send + fmt::Debug {
    fn read(&self) -> Result<Tokens, TokenStoreError>;
    fn write(&self, tokens: &Tokens) -> Result<(), TokenStoreError>;
}

impl dyn TokenLock {
    /// Replaces (or, with `None`, removes) the entry of `credential`, keeping the others.
    pub fn update(
        &self,
        credential: &str,
        entry: Option<StoredToken>,
    ) -> Result<Option<StoredToken>, TokenStoreError> {
        let mut tokens = self.read()?;
        let old = match entry {
            Some(entry) => tokens.credentials.insert(credential.to_owned(), entry),
            None => tokens.credentials.remove(credential),
        };
        self.write(&tokens)?;
        Ok(old)
    }
}

/// The future of [`CredentialTokens::entry`].
pub type Reading<'a> =
    Pin<Box<dyn Future<Output = Result<Option<StoredToken>, TokenStoreError>> + Send + 'a>>;

/// The future of [`CredentialTokens::lock_credential`].
pub type LockingEntry<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn EntryLock>, TokenStoreError>> + Send + 'a>>;

/// The future of [`EntryLock::save`].
pub type Saving = Pin<Box<dyn Future<Output = Result<(), TokenStoreError>> + Send>>;

/// The token store one credential at a time, async end to end: what a refresh needs (lock the
/// credential's entry, read it, spend its refresh token, save the rotated one, release), so that
/// a store on a server (PostgreSQL, [`crate::store::postgres::tokens::PgTokenStore`]) waits on
/// the network without blocking a thread, and locks one credential, not every one.
/// [`FileTokenStore`] implements it too, under its one file lock.
pub trait CredentialTokens: Send + Sync + fmt::Debug {
    /// Where the tokens are, for people (never a secret).
    fn location(&self) -> String;

    /// `credential`'s entry, without the lock.
    fn entry<'a>(&'a self, credential: &'a str) -> Reading<'a>;

    /// Waits for `credential`'s lock: until the lock is saved or dropped, no other process or
    /// task gets it. Dropping it without saving leaves the entry as it was.
    fn lock_credential<'a>(&'a self, credential: &'a str) -> LockingEntry<'a>;

    /// `credential`'s entry when it can be read without waiting on anything but a local file
    /// (the file store), for the redactor to learn its tokens up front; `None` from a store on a
    /// server (and on any error: the refresh that reads the entry reports it).
    fn entry_now(&self, _credential: &str) -> Option<StoredToken> {
        None
    }
}

/// One credential's entry, locked: read it, then save what replaces it, which releases the lock.
pub trait EntryLock: Send + fmt::Debug {
    /// The entry as it is under the lock (`None`: nothing stored for the credential).
    fn entry(&self) -> Option<&StoredToken>;

    /// Replaces the entry (or, with `None`, removes it) and releases the lock: durable when it
    /// resolves, and an error when it is not written.
    fn save(self: Box<Self>, entry: Option<StoredToken>) -> Saving;
}

/// Where the tokens of one data dir are kept: `tokens.json`, mode 0600, under a `flock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTokenStore {
    path: PathBuf,
}

/// The file's content.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    #[serde(default)]
    pub credentials: BTreeMap<String, StoredToken>,
}

/// The current tokens of one credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredToken {
    /// [`LOGIN`], or the [`fingerprint`] of the configured refresh token these descend from.
    pub origin: String,
    /// The refresh token to spend next.
    pub refresh_token: String,
    /// The access token in use, if the vendor issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// When the access token expires (unix seconds); `None` when the vendor did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When the refresh token expires (unix seconds; Webex says, Calendly's do not expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at: Option<i64>,
    /// The scopes the vendor granted, when it said (`scope` in its token response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// When the tokens were last refreshed (RFC 3339); `None` until the first refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<String>,
    /// When the entry was written (RFC 3339), for people reading the file.
    pub updated_at: String,
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("origin", &self.origin)
            .field("refresh_token", &crate::http::redact::REDACTED)
            .field("expires_at", &self.expires_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(&self.credentials).finish()
    }
}

/// A token store that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenStoreError {
    #[error("cannot {action} the token store `{}`: {reason}; the data dir must be writable by this user", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the token store `{}` is not valid ({reason}); move it away to start again from the refresh tokens in blockyard.yaml or `blockyard auth login`", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("no tokens are stored for it; run `blockyard auth login {credential}` (or set its `refresh_token`)")]
    NotLoggedIn { credential: String },
    #[error("cannot {action} the tokens of `{credential}` in the PostgreSQL store at `{url}`: {reason}; check that the database is reachable and its schema migrated (`blockyard store migrate`)")]
    Postgres {
        action: &'static str,
        credential: String,
        /// The store's URL, its password redacted.
        url: String,
        reason: String,
    },
    #[error("the tokens of `{credential}` in the PostgreSQL store at `{url}` are not valid ({reason}); run `blockyard auth login {credential}` to store new ones")]
    CorruptRow {
        credential: String,
        url: String,
        reason: String,
    },
}

/// What a command says at start about the token store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenStoreWarning {
    #[error("the token store `{}` has mode {mode:04o}, so other users may read its tokens; run `chmod 600 {}`", path.display(), path.display())]
    Wide { path: PathBuf, mode: u32 },
}

/// The fingerprint of a configured refresh token: FNV-1a 64 as 16 hex digits. It only tells
/// tokens apart (the file it is kept in holds the live token itself).
pub fn fingerprint(secret: &str) -> String {
    crate::store::history::snapshot_hash(secret)
}

impl FileTokenStore {
    /// The store of data dir `dir`: `dir/tokens.json` (neither is created until a token is stored).
    pub fn in_dir(dir: &Path) -> FileTokenStore {
        FileTokenStore {
            path: dir.join(FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn io(&self, action: &'static str, err: &std::io::Error) -> TokenStoreError {
        TokenStoreError::Io {
            action,
            path: self.path.clone(),
            reason: err.to_string().to_lowercase(),
        }
    }

    /// The lock, if no one holds it now.
    pub fn try_lock(&self) -> Result<Option<FileLock>, TokenStoreError> {
        let file = self.open_lock()?;
        match fs2::FileExt::try_lock_exclusive(&file) {
            Ok(()) => Ok(Some(FileLock {
                store: self.clone(),
                _file: file,
            })),
            Err(err) if err.kind() == fs2::lock_contended_error().kind() => Ok(None),
            Err(err) => Err(self.io("lock", &err)),
        }
    }

    fn lock_file(&self) -> Result<FileLock, TokenStoreError> {
        let file = self.open_lock()?;
        fs2::FileExt::lock_exclusive(&file).map_err(|err| self.io("lock", &err))?;
        Ok(FileLock {
            store: self.clone(),
            _file: file,
        })
    }

    fn read_file(&self) -> Result<Tokens, TokenStoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Tokens::default()),
            Err(err) => return Err(self.io("read", &err)),
        };
        // Only the place of a syntax error is reported: serde's messages may quote a value.
        serde_json::from_slice(&bytes).map_err(|err| TokenStoreError::Corrupt {
            path: self.path.clone(),
            reason: format!("line {}, column {}", err.line(), err.column()),
        })
    }

    fn open_lock(&self) -> Result<File, TokenStoreError> {
        // A directory created here is fsynced into its parent, so the tokens written in it are
        // found after a crash (the file's own fsyncs do not cover the directory's entry).
        let created = !self.dir().exists();
        std::fs::create_dir_all(self.dir())
            .map_err(|err| self.io("create the directory of", &err))?;
        if let Some(parent) = self.dir().parent().filter(|_| created) {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            sync_dir(parent).map_err(|err| self.io("create the directory of", &err))?;
        }
        let mut lock = self.path.clone().into_os_string();
        lock.push(".lock");
        private(OpenOptions::new().read(true).write(true).create(true))
            .open(PathBuf::from(lock))
            .map_err(|err| self.io("open the lock of", &err))
    }

    /// Replaces the file with `tokens`: a temp file 0600, fsync, rename, fsync of the directory.
    fn write(&self, tokens: &Tokens) -> Result<(), TokenStoreError> {
        let fail = |err: std::io::Error| self.io("write", &err);
        let mut text = serde_json::to_vec_pretty(tokens).expect("tokens serialize");
        text.push(b'\n');
        let mut temp = self.path.clone().into_os_string();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let mut file = private(OpenOptions::new().write(true).create(true).truncate(true))
            .open(&temp)
            .map_err(fail)?;
        // A temp file left by a crash keeps its mode: make sure of 0600 before writing a token.
        set_private(&file).map_err(fail)?;
        file.write_all(&text).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(fail)?;
        sync_dir(self.dir()).map_err(fail)
    }
}

impl TokenStore for FileTokenStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn read(&self) -> Result<Tokens, TokenStoreError> {
        self.read_file()
    }

    /// Waits for the lock in a blocking thread (another process may hold it for a whole token
    /// request), creating the data dir and the lock file when needed.
    fn lock(&self) -> Locking<'_> {
        let store = self.clone();
        Box::pin(async move {
            let path = store.path.clone();
            match tokio::task::spawn_blocking(move || store.lock_file()).await {
                Ok(locked) => locked.map(|l| Box::new(l) as Box<dyn TokenLock>),
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => Err(TokenStoreError::Io {
                    action: "lock",
                    path,
                    reason: err.to_string(),
                }),
            }
        })
    }

    fn lock_blocking(&self) -> Result<Box<dyn TokenLock>, TokenStoreError> {
        Ok(Box::new(self.lock_file()?))
    }

    fn warning(&self) -> Option<TokenStoreWarning> {
        let mode = file_mode(&self.path)?;
        (mode & 0o077 != 0).then(|| TokenStoreWarning::Wide {
            path: self.path.clone(),
            mode,
        })
    }
}

/// The file store one credential at a time: every credential under the file's one lock.
impl CredentialTokens for FileTokenStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn entry<'a>(&'a self, credential: &'a str) -> Reading<'a> {
        let read = self
            .read_file()
            .map(|mut tokens| tokens.credentials.remove(credential));
        Box::pin(std::future::ready(read))
    }

    fn entry_now(&self, credential: &str) -> Option<StoredToken> {
        self.read_file().ok()?.credentials.remove(credential)
    }

    fn lock_credential<'a>(&'a self, credential: &'a str) -> LockingEntry<'a> {
        Box::pin(async move {
            let locked = TokenStore::lock(self).await?;
            let tokens = locked.read()?;
            let entry = tokens.credentials.get(credential).cloned();
            Ok(Box::new(FileEntryLock {
                locked,
                path: self.path.clone(),
                credential: credential.to_owned(),
                entry,
            }) as Box<dyn EntryLock>)
        })
    }
}

/// One credential's entry of the file store, under the file's lock.
#[derive(Debug)]
struct FileEntryLock {
    locked: Box<dyn TokenLock>,
    path: PathBuf,
    credential: String,
    entry: Option<StoredToken>,
}

impl EntryLock for FileEntryLock {
    fn entry(&self) -> Option<&StoredToken> {
        self.entry.as_ref()
    }

    /// Read again and written whole on a blocking thread (a rename and two fsyncs).
    fn save(self: Box<Self>, entry: Option<StoredToken>) -> Saving {
        Box::pin(async move {
            let path = self.path.clone();
            match tokio::task::spawn_blocking(move || {
                self.locked.update(&self.credential, entry).map(drop)
            })
            .await
            {
                Ok(saved) => saved,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => Err(TokenStoreError::Io {
                    action: "write",
                    path,
                    reason: err.to_string(),
                }),
            }
        })
    }
}

/// The file store, locked.
#[derive(Debug)]
pub struct FileLock {
    store: FileTokenStore,
    _file: File,
}

impl TokenLock for FileLock {
    fn read(&self) -> Result<Tokens, TokenStoreError> {
        self.store.read_file()
    }

    fn write(&self, tokens: &Tokens) -> Result<(), TokenStoreError> {
        self.store.write(tokens)
    }
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(std::fs::metadata(path).ok()?.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> Option<u32> {
    None
}

#[cfg(unix)]
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600)
}

#[cfg(not(unix))]
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

#[cfg(unix)]
fn set_private(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(refresh: &str) -> StoredToken {
        StoredToken {
            origin: fingerprint("configured"),
            refresh_token: refresh.to_owned(),
            access_token: Some("access-token-1".to_owned()),
            expires_at: Some(1_900_000_000),
            refresh_expires_at: None,
            scopes: Some(vec!["users:read".to_owned()]),
            last_refresh: None,
            updated_at: "2026-11-30T00:00:00Z".to_owned(),
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_store_is_written_whole_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::in_dir(&dir.path().join("data"));
        assert!(store.read().unwrap().credentials.is_empty());
        // A temp file a crash left behind, readable by all, is not reused as it is.
        let locked = store.lock_blocking().unwrap();
        assert_eq!(store.warning(), None);
        std::fs::write(dir.path().join("data/tokens.json.tmp"), "stale").unwrap();
        std::fs::set_permissions(
            dir.path().join("data/tokens.json.tmp"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let mut tokens = locked.read().unwrap();
        tokens
            .credentials
            .insert("calendly".to_owned(), entry("refresh-token-2"));
        locked.write(&tokens).unwrap();
        drop(locked);
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join("data").join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("tokens.json"), 0o600);
        assert_eq!(store.warning(), None);
        assert_eq!(mode("tokens.json.lock"), 0o600);
        assert!(!dir.path().join("data/tokens.json.tmp").exists());
        assert_eq!(
            store.read().unwrap().credentials["calendly"],
            entry("refresh-token-2")
        );
        assert_eq!(
            format!("{:?}", store.read().unwrap()),
            r#"{"calendly": StoredToken { origin: "6c435319645ee39d", refresh_token: "[redacted]", expires_at: Some(1900000000), updated_at: "2026-11-30T00:00:00Z", .. }}"#
        );
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::in_dir(dir.path());
        let held = store.lock_file().unwrap();
        // Another open of the lock file (as another process would) cannot take it.
        assert!(store.try_lock().unwrap().is_none());
        drop(held);
        assert!(store.try_lock().unwrap().is_some());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_quotes_nothing_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::in_dir(dir.path());
        std::fs::write(
            store.path(),
            r#"{"credentials": {"calendly": {"refresh_token": 5, "origin": "secret-looking-value"}}}"#,
        )
        .unwrap();
        let err = store.read().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the token store `{}` is not valid (line 1, column 48); move it away to start again from the refresh tokens in blockyard.yaml or `blockyard auth login`",
                store.path().display()
            )
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_warned_about_with_what_to_do() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::in_dir(dir.path());
        std::fs::write(store.path(), "{}").unwrap();
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = store.path().display();
        assert_eq!(
            store.warning().unwrap().to_string(),
            format!("the token store `{path}` has mode 0644, so other users may read its tokens; run `chmod 600 {path}`")
        );
    }
}

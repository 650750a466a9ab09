//! The OAuth token store on PostgreSQL ([`CredentialTokens`] for [`PgTokenStore`]): table
//! `tokens` (migration 2), one row per credential, its [`StoredToken`] as JSON.
//!
//! A refresh locks its credential for the whole exchange with the vendor: a transaction on a
//! connection of its own takes the credential's transaction-scoped advisory lock (which also
//! covers a credential with no row yet: two workers spending the configured refresh token for
//! the first time) and reads the row `FOR UPDATE`; [`EntryLock::save`] writes the rotated tokens
//! and commits, which releases both. A second worker refreshing meanwhile waits on the lock, then
//! reads the rotated row and uses its access token, or spends the new refresh token: a
//! single-use refresh token is spent once. A lock dropped without saving rolls back (on a task of
//! its own, the connection then going back to the pool; with no runtime left, the connection is
//! closed, which ends the transaction on the server).
//!
//! Errors name the credential and the redacted URL, never a token: a row that does not decode
//! says where (line and column), as the file store does.

use std::fmt;

use deadpool_postgres::Object;
use tokio_postgres::types::Json;

use super::{causes, Postgres};
use crate::store::tokens::{
    CredentialTokens, EntryLock, LockingEntry, Reading, Saving, StoredToken, TokenStoreError,
};

/// The token store of one PostgreSQL store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgTokenStore {
    pg: Postgres,
}

impl PgTokenStore {
    pub fn new(pg: &Postgres) -> PgTokenStore {
        PgTokenStore { pg: pg.clone() }
    }
}

fn failed(
    url: &str,
    action: &'static str,
    credential: &str,
    err: &dyn std::error::Error,
) -> TokenStoreError {
    TokenStoreError::Postgres {
        action,
        credential: credential.to_owned(),
        url: url.to_owned(),
        reason: causes(err),
    }
}

fn decode(url: &str, credential: &str, text: &str) -> Result<StoredToken, TokenStoreError> {
    // Only the place of a syntax error: serde's messages may quote a value.
    serde_json::from_str(text).map_err(|err| TokenStoreError::CorruptRow {
        credential: credential.to_owned(),
        url: url.to_owned(),
        reason: format!("line {}, column {}", err.line(), err.column()),
    })
}

impl CredentialTokens for PgTokenStore {
    fn location(&self) -> String {
        format!("the `tokens` table of {}", self.pg.url())
    }

    fn entry<'a>(&'a self, credential: &'a str) -> Reading<'a> {
        Box::pin(async move {
            let url = self.pg.url();
            let client = self
                .pg
                .inner
                .pool
                .get()
                .await
                .map_err(|e| failed(url, "read", credential, &e))?;
            let row = client
                .query_opt(
                    "SELECT token::text FROM tokens WHERE credential = $1",
                    &[&credential],
                )
                .await
                .map_err(|e| failed(url, "read", credential, &e))?;
            row.map(|row| decode(url, credential, row.get(0)))
                .transpose()
        })
    }

    fn lock_credential<'a>(&'a self, credential: &'a str) -> LockingEntry<'a> {
        Box::pin(async move {
            let url = self.pg.url();
            let fail = |e: &dyn std::error::Error| failed(url, "lock", credential, e);
            let client = self.pg.inner.pool.get().await.map_err(|e| fail(&e))?;
            let mut locked = PgEntryLock {
                client: Some(client),
                url: url.to_owned(),
                credential: credential.to_owned(),
                entry: None,
                open: false,
            };
            let client = locked.client.as_ref().expect("just set");
            client.batch_execute("BEGIN").await.map_err(|e| fail(&e))?;
            locked.open = true;
            client
                .execute(super::LOCK_KEY, &[&format!("tokens/{credential}")])
                .await
                .map_err(|e| fail(&e))?;
            let row = client
                .query_opt(
                    "SELECT token::text FROM tokens WHERE credential = $1 FOR UPDATE",
                    &[&credential],
                )
                .await
                .map_err(|e| fail(&e))?;
            locked.entry = row
                .map(|row| decode(url, credential, row.get(0)))
                .transpose()?;
            Ok(Box::new(locked) as Box<dyn EntryLock>)
        })
    }
}

/// One credential's row, locked by the open transaction on `client`.
struct PgEntryLock {
    /// `None` once saved (the connection went back to the pool).
    client: Option<Object>,
    url: String,
    credential: String,
    entry: Option<StoredToken>,
    /// Whether the transaction is open (to roll back when dropped).
    open: bool,
}

impl fmt::Debug for PgEntryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEntryLock")
            .field("url", &self.url)
            .field("credential", &self.credential)
            .field("entry", &self.entry)
            .finish()
    }
}

impl EntryLock for PgEntryLock {
    fn entry(&self) -> Option<&StoredToken> {
        self.entry.as_ref()
    }

    fn save(mut self: Box<Self>, entry: Option<StoredToken>) -> Saving {
        Box::pin(async move {
            let (url, credential) = (self.url.clone(), self.credential.clone());
            let fail = |e: &dyn std::error::Error| failed(&url, "save", &credential, e);
            let client = self.client.as_ref().expect("a lock is saved once");
            match &entry {
                Some(entry) => client
                    .execute(
                        "INSERT INTO tokens (credential, token) VALUES ($1, $2)
                         ON CONFLICT (credential) DO UPDATE SET token = $2",
                        &[&credential, &Json(entry)],
                    )
                    .await
                    .map_err(|e| fail(&e))?,
                None => client
                    .execute("DELETE FROM tokens WHERE credential = $1", &[&credential])
                    .await
                    .map_err(|e| fail(&e))?,
            };
            client.batch_execute("COMMIT").await.map_err(|e| fail(&e))?;
            self.open = false;
            Ok(())
        })
    }
}

impl Drop for PgEntryLock {
    /// An unsaved lock (or a failed save) rolls back, releasing the row.
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if !self.open {
            return;
        }
        let mut detached = Detach(Some(client));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let rolled_back = match &detached.0 {
                    Some(client) => client.batch_execute("ROLLBACK").await.is_ok(),
                    None => false,
                };
                if rolled_back {
                    // Back to the pool, its transaction over.
                    drop(detached.0.take());
                }
            });
        }
        // No runtime to roll back on: `detached` closes the connection.
    }
}

/// A connection that, dropped still held (its rollback failed or never ran: a runtime shutting
/// down drops the task), is closed instead of going back to the pool inside a transaction; the
/// server then ends the transaction and its locks.
struct Detach(Option<Object>);

impl Drop for Detach {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

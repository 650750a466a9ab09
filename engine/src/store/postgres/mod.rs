//! The PostgreSQL backend of the store seam ([`super::api`]): every store trait in native SQL,
//! tables with real columns and indexes (the schema is in `migrations/*.sql`, applied by
//! [`schema::migrate`]), one module per concern as on the sled side: [`history`] (runs, steps,
//! snapshots, the subject index), [`records`] (records, their triggered run requests and traces,
//! in-flight subjects, schedule ticks), [`queue`] (the run queue, durable timers and the records
//! a `wait` watches), [`leases`] (which worker holds which run and queue entry), [`guard`] (the
//! mass-change guard), [`marks`] (approvals, cancels, pauses, retry marks), [`reminders`]
//! (approval reminders), [`budget`] (the vendors' rate budgets, shared by every worker),
//! [`tokens`] (the OAuth token store, each credential's row locked for a refresh).
//!
//! # Driver and connection
//!
//! `tokio-postgres` with a `deadpool-postgres` pool; no ORM, no compile-time checked queries.
//! Statements are prepared once per connection (`prepare_cached`). No TLS: the connection is
//! plain TCP (or a Unix socket), so point it at a server on loopback, a private network or a
//! tunnel; a URL asking for TLS (`sslmode=require`) is refused rather than silently sent in the
//! clear. The URL's password is never logged nor put in an error: every error names the URL
//! through [`redact`].
//!
//! # What durable means here
//!
//! Every write is a PostgreSQL transaction (a single statement, or several in one `BEGIN`
//! … `COMMIT` where they must be atomic), committed before its future resolves. With the
//! server's `fsync` and `synchronous_commit` on (their defaults; `scripts/pg` sets them
//! explicitly), a commit has reached the server's write-ahead log on disk when it returns: a
//! record write, a queue ack, an approval, a cancel, a tick are durable when they resolve.
//! History writes (`put_run`, `put_steps`) are the exception the trait allows ("not durable
//! until `durable`"): they commit with `synchronous_commit = off`, atomic and visible at once
//! but on disk only at the next [`super::api::WriteHistory::durable`] (or
//! [`super::api::Backend::flush`]), a synchronous commit that flushes the log up to itself and so
//! covers every commit before it on every connection. A run's writes then share one WAL flush,
//! as sled's group commit shares one fsync. A server configured with `fsync = off` promises less,
//! and blockyard cannot tell.
//!
//! # Several workers
//!
//! Writes that must be one step are one transaction, and the ones that read before they write
//! take a row or advisory lock so that several processes on one database agree: a record write
//! locks its subjects (`pg_advisory_xact_lock`) before it checks that what it decided on is
//! unchanged, the guard's check-and-count locks its workflow's window, waking or cancelling a
//! parked run locks its row (`FOR UPDATE`), a schedule tick updates its `schedules` row only
//! when it is after the last (so a tick fires once). The queue is claimed with `FOR UPDATE SKIP
//! LOCKED` and a lease column (`lease_until_ns`); a queued or running run has an owner and a
//! lease (migration 4), renewed by its worker and claimed by another once it passes: [`leases`].
//! The timers' lease columns are unused: waking a run locks its row, which is enough. A token
//! refresh locks its credential's row for the whole exchange with the vendor ([`tokens`]), and
//! every request takes its token from one bucket row per vendor and credential ([`budget`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use super::StoreError;

pub mod budget;
pub mod copy;
pub mod guard;
pub mod history;
pub mod leases;
pub mod marks;
pub mod queue;
pub mod records;
pub mod reminders;
pub mod schema;
pub mod tokens;
mod url;

pub use url::redact;

/// How many connections one process keeps at most.
const POOL_SIZE: usize = 16;

/// A connection pool to one PostgreSQL database (and schema). Cheap to clone: every part of the
/// store opened from it shares the pool.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The URL with its password redacted: what errors say.
    url: String,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.inner.url)
            .finish()
    }
}

impl Postgres {
    /// Opens the database at `url` and brings its schema to the version this build knows
    /// ([`schema::migrate`]); a newer schema is refused.
    pub async fn open(url: &str) -> Result<Postgres, StoreError> {
        let pg = Postgres::connect(url, None)?;
        schema::migrate(&pg).await?;
        Ok(pg)
    }

    /// [`Postgres::open`] in the schema `name` of the database (created when missing): the
    /// tables live there, beside whatever else the database holds. `name` is lowercase letters,
    /// digits and `_`.
    pub async fn open_in_schema(url: &str, name: &str) -> Result<Postgres, StoreError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(StoreError::PostgresUrl {
                url: redact(url),
                message: format!("the schema name `{name}` is not lowercase letters, digits and `_` (starting with a letter)"),
            });
        }
        let pg = Postgres::connect(url, Some(name))?;
        let client = pg.client().await?;
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {name}"))
            .await
            .map_err(|err| pg.error(err))?;
        drop(client);
        schema::migrate(&pg).await?;
        Ok(pg)
    }

    /// A pool for `url` (no connection is made yet), its tables in `schema` when given.
    pub fn connect(url: &str, schema: Option<&str>) -> Result<Postgres, StoreError> {
        let redacted = redact(url);
        let bad = |message: String| StoreError::PostgresUrl {
            url: redacted.clone(),
            message,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "it does not start with `postgres://` (or `postgresql://`)".to_owned(),
            ));
        }
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|err| bad(err.to_string()))?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(bad("`sslmode=require` asks for TLS, which blockyard's PostgreSQL store does not speak yet; connect over loopback, a private network or a tunnel with `sslmode=disable`".to_owned()));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("blockyard");
        }
        if let Some(schema) = schema {
            config.options(format!("-c search_path={schema}"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|err| bad(err.to_string()))?;
        Ok(Postgres {
            inner: Arc::new(Inner {
                pool,
                url: redacted,
            }),
        })
    }

    /// The URL, its password redacted.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(|err| match err {
            deadpool_postgres::PoolError::Backend(err) => self.error(err),
            err => self.error(err),
        })
    }

    /// A failure of this store, naming its (redacted) URL and every cause (the server's own
    /// message is the cause of tokio-postgres's `db error`).
    pub(crate) fn error(&self, err: impl std::error::Error) -> StoreError {
        self.failed(causes(&err))
    }

    /// A failure of this store, said in `message`.
    pub(crate) fn failed(&self, message: impl Into<String>) -> StoreError {
        StoreError::Postgres {
            url: self.inner.url.clone(),
            message: message.into(),
        }
    }

    /// Waits until every commit made so far, on any connection, is on disk: a synchronous
    /// commit of a transaction with an id (`txid_current()` gives it one, so it writes a commit
    /// record), which flushes the write-ahead log up to that record.
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute(
                "BEGIN; SET LOCAL synchronous_commit TO ON; SELECT txid_current(); COMMIT",
            )
            .await
            .map_err(|err| self.error(err))
    }

    /// A stored document this build cannot read.
    /// A run id read from `table`; a column that is not one is [`StoreError::Corrupt`].
    pub(crate) fn run_id(
        &self,
        table: &'static str,
        text: &str,
    ) -> Result<super::history::RunId, StoreError> {
        text.parse()
            .map_err(|e: ulid::DecodeError| self.corrupt(table, text, e))
    }

    pub(crate) fn corrupt(
        &self,
        table: &'static str,
        key: impl fmt::Display,
        err: impl fmt::Display,
    ) -> StoreError {
        StoreError::Corrupt {
            tree: table,
            key: key.to_string(),
            message: err.to_string(),
        }
    }
}

/// `err` and every cause it has that its text does not already say, joined by `: `.
pub(crate) fn causes(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// An instant as stored: nanoseconds since the Unix epoch (saturating outside 1677–2262, as the
/// sled guard's keys do).
pub(crate) fn nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// A stored instant.
pub(crate) fn instant(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

/// The transaction-scoped advisory lock key of `what` (a subject, a guard window).
pub(crate) const LOCK_KEY: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

/// PostgreSQL: every part of the store on one pool.
impl super::api::Backend for Postgres {
    type History = history::PgHistory;
    type Records = records::PgRecords;
    type Queue = queue::PgQueue;
    type Timers = queue::PgTimers;
    type Approvals = marks::PgMarks;
    type Cancels = marks::PgMarks;
    type Guard = guard::PgGuard;
    type Pauses = marks::PgMarks;
    type Retries = marks::PgMarks;
    type Reminders = reminders::PgReminders;

    fn history(&self) -> Result<history::PgHistory, StoreError> {
        Ok(history::PgHistory::new(self))
    }
    fn records(&self) -> Result<records::PgRecords, StoreError> {
        Ok(records::PgRecords::new(self))
    }
    fn queue(&self) -> Result<queue::PgQueue, StoreError> {
        Ok(queue::PgQueue::new(self))
    }
    fn timers(&self) -> Result<queue::PgTimers, StoreError> {
        Ok(queue::PgTimers::new(self))
    }
    fn approvals(&self) -> Result<marks::PgMarks, StoreError> {
        Ok(marks::PgMarks::new(self))
    }
    fn cancels(&self) -> Result<marks::PgMarks, StoreError> {
        Ok(marks::PgMarks::new(self))
    }
    fn guard(&self) -> Result<guard::PgGuard, StoreError> {
        Ok(guard::PgGuard::new(self))
    }
    fn pauses(&self) -> Result<marks::PgMarks, StoreError> {
        Ok(marks::PgMarks::new(self))
    }
    fn retries(&self) -> Result<marks::PgMarks, StoreError> {
        Ok(marks::PgMarks::new(self))
    }
    fn reminders(&self) -> Result<reminders::PgReminders, StoreError> {
        Ok(reminders::PgReminders::new(self))
    }
    /// Every write so far on disk (see [`Postgres::durable`]).
    fn flush(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        self.durable()
    }
    /// Refused: a PostgreSQL store is backed up with the database's own tools.
    fn backup(
        &self,
        _dir: &std::path::Path,
    ) -> impl std::future::Future<
        Output = Result<super::backup::BackupReport, super::backup::BackupError>,
    > + Send {
        std::future::ready(Err(super::backup::BackupError::Store(self.failed(
            "`blockyard store backup` copies a sled data dir; back a PostgreSQL store up with the database's own tools (`pg_dump`, or the server's base backups)",
        ))))
    }
}

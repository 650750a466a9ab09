//! The run queue and the durable timers (with the records a `wait` watches, `timer_watches`) on
//! PostgreSQL.
//!
//! A queue handle has an owner id; [`RunQueue::claim`] marks the oldest entry no live claim
//! holds as its own (`claimed_by`, and a lease until `lease_until_ns`), picked with `FOR UPDATE
//! SKIP LOCKED` so that workers claiming at once never get the same entry. A claim whose lease
//! ran out (its process died) can be claimed again. A handle made for a worker
//! ([`PgQueue::for_worker`]) claims as that worker, and the worker's renewal
//! ([`crate::store::api::RunLeases::renew`]) extends its claims with its runs' leases; the
//! claims under explicit times and leases are [`crate::store::api::QueueLeases`]'s (in
//! `leases.rs`). A claim that nothing renews lasts [`LEASE`]. [`RunQueue::release`] is not
//! async: it is noted on the handle and applied by the handle's next call, before anything else
//! it does.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use super::{instant, nanos, Postgres};
use crate::store::api::{DurableTimers, Result, RunQueue, WorkerId};
use crate::store::history::RunId;
use crate::store::queue::{QueueEntry, QueueId, RunRequest};
use crate::store::timers::Timer;

/// How long a claim holds an entry without being renewed.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// One handle on the queue (one process, or a restarted one).
#[derive(Debug, Clone)]
pub struct PgQueue {
    pg: Postgres,
    owner: String,
    /// Entries released since the last call, given back by the next.
    released: Arc<Mutex<BTreeSet<QueueId>>>,
}

impl PgQueue {
    pub fn new(pg: &Postgres) -> PgQueue {
        PgQueue::for_worker(pg, &WorkerId::generate())
    }

    /// A handle whose claims are `worker`'s: [`RunQueue::claim`] claims as `worker`, so
    /// [`crate::store::api::RunLeases::renew`] renews them with the worker's runs.
    pub fn for_worker(pg: &Postgres, worker: &WorkerId) -> PgQueue {
        PgQueue {
            pg: pg.clone(),
            owner: worker.as_str().to_owned(),
            released: Arc::default(),
        }
    }

    pub(super) fn pg(&self) -> &Postgres {
        &self.pg
    }

    /// Gives back the entries [`RunQueue::release`] noted.
    async fn give_back(&self, client: &deadpool_postgres::Object) -> Result<()> {
        let ids: Vec<String> = {
            let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *released)
                .into_iter()
                .map(|id| id.to_string())
                .collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        client
            .execute(
                "UPDATE queue SET claimed_by = NULL, lease_until_ns = NULL
                 WHERE id = ANY($1) AND claimed_by = $2",
                &[&ids, &self.owner],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }

    pub(super) fn decode(&self, id: &str, request: &str) -> Result<QueueEntry> {
        let corrupt = |err: String| self.pg.corrupt("queue", id, err);
        Ok(QueueEntry {
            id: id
                .parse()
                .map_err(|e: ulid::DecodeError| corrupt(e.to_string()))?,
            request: serde_json::from_str::<RunRequest>(request)
                .map_err(|e| corrupt(e.to_string()))?,
        })
    }
}

impl PgQueue {
    /// One entry, claimed or not.
    pub async fn get(&self, id: QueueId) -> Result<Option<QueueEntry>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT id, request::text FROM queue WHERE id = $1",
                &[&id.to_string()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        row.map(|row| self.decode(row.get(0), row.get(1)))
            .transpose()
    }

    /// How many entries the queue holds, claimed or not.
    pub async fn len(&self) -> Result<usize> {
        let client = self.pg.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM queue", &[])
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}

impl RunQueue for PgQueue {
    async fn pending(&self) -> Result<Vec<QueueEntry>> {
        let client = self.pg.client().await?;
        self.give_back(&client).await?;
        let rows = client
            .query(
                "SELECT id, request::text FROM queue
                 WHERE claimed_by IS DISTINCT FROM $1 ORDER BY id",
                &[&self.owner],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        rows.iter()
            .map(|row| self.decode(row.get(0), row.get(1)))
            .collect()
    }

    async fn claim(&self) -> Result<Option<QueueEntry>> {
        let client = self.pg.client().await?;
        self.give_back(&client).await?;
        let now = nanos(Utc::now());
        let until = now.saturating_add(LEASE.as_nanos() as i64);
        let stmt = client
            .prepare_cached(
                "UPDATE queue SET claimed_by = $1, lease_until_ns = $3
                 WHERE id = (SELECT id FROM queue
                             WHERE claimed_by IS NULL OR (claimed_by <> $1 AND lease_until_ns < $2)
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, request::text",
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        let row = client
            .query_opt(&stmt, &[&self.owner, &now, &until])
            .await
            .map_err(|e| self.pg.error(e))?;
        row.map(|row| self.decode(row.get(0), row.get(1)))
            .transpose()
    }

    async fn ack(&self, id: QueueId) -> Result<bool> {
        self.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let client = self.pg.client().await?;
        self.give_back(&client).await?;
        let stmt = client
            .prepare_cached("DELETE FROM queue WHERE id = $1")
            .await
            .map_err(|e| self.pg.error(e))?;
        let n = client
            .execute(&stmt, &[&id.to_string()])
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(n > 0)
    }

    fn release(&self, id: QueueId) {
        self.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
    }
}

/// The timers of one PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgTimers {
    pg: Postgres,
}

impl PgTimers {
    pub fn new(pg: &Postgres) -> PgTimers {
        PgTimers { pg: pg.clone() }
    }

    fn decode(&self, run: &str, at: i64) -> Result<Timer> {
        Ok(Timer {
            run: self.pg.run_id("timers", run)?,
            at: instant(at),
        })
    }
}

impl DurableTimers for PgTimers {
    async fn set(&self, run: RunId, at: DateTime<Utc>) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "INSERT INTO timers (run_id, at_ns) VALUES ($1, $2)
                 ON CONFLICT (run_id) DO UPDATE
                     SET at_ns = $2, lease_owner = NULL, lease_until_ns = NULL",
                &[&run.to_string(), &nanos(at)],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }

    async fn cancel(&self, run: RunId) -> Result<bool> {
        let client = self.pg.client().await?;
        let n = client
            .execute("DELETE FROM timers WHERE run_id = $1", &[&run.to_string()])
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(n > 0)
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Timer>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT run_id, at_ns FROM timers WHERE at_ns <= $1 ORDER BY at_ns, run_id",
                &[&nanos(now)],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        rows.iter()
            .map(|row| self.decode(row.get(0), row.get(1)))
            .collect()
    }

    async fn next(&self) -> Result<Option<Timer>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT run_id, at_ns FROM timers ORDER BY at_ns, run_id LIMIT 1",
                &[],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        row.map(|row| self.decode(row.get(0), row.get(1)))
            .transpose()
    }

    async fn watch(&self, run: RunId, record: &str) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "INSERT INTO timer_watches (record, run_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&record, &run.to_string()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }

    async fn unwatch(&self, run: RunId, record: &str) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "DELETE FROM timer_watches WHERE record = $1 AND run_id = $2",
                &[&record, &run.to_string()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }

    async fn watchers(&self, record: &str) -> Result<Vec<RunId>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT run_id FROM timer_watches WHERE record = $1 ORDER BY run_id",
                &[&record],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        rows.iter()
            .map(|row| {
                let run: &str = row.get(0);
                self.pg.run_id("timer_watches", run)
            })
            .collect()
    }
}

/// Enqueues `request` in `tx`: its new id.
pub(crate) async fn enqueue(
    tx: &deadpool_postgres::Transaction<'_>,
    request: &RunRequest,
) -> std::result::Result<QueueId, tokio_postgres::Error> {
    let id = QueueId::generate();
    let stmt = tx
        .prepare_cached("INSERT INTO queue (id, workflow, request) VALUES ($1, $2, $3)")
        .await?;
    tx.execute(
        &stmt,
        &[&id.to_string(), &request.workflow.as_str(), &Json(request)],
    )
    .await?;
    Ok(id)
}

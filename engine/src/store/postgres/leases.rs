//! Which worker holds which run and queue entry on PostgreSQL ([`RunLeases`] for
//! [`PgHistory`], [`QueueLeases`] for [`PgQueue`]): the `owner`/`lease_until_ns` columns of
//! `runs` (migration 4) and the `claimed_by`/`lease_until_ns` columns of `queue`.
//!
//! Each step is one statement (or one transaction taking the rows' locks), so workers agree
//! without talking to each other: claims pick rows with `FOR UPDATE SKIP LOCKED` and re-check
//! the lease on the row they lock, so of two claimers one gets each row; a renewal updates the
//! worker's runs and queue entries in one statement, and only rows the worker still owns. The
//! statements name the statuses of the partial index `runs_unfinished` as literals
//! (`'queued', 'running'`), so the planner uses it: a unit test keeps them equal to the
//! statuses `ReadHistory::unfinished` reads.

use chrono::{DateTime, Utc};

use super::history::{woken, PgHistory};
use super::nanos;
use super::queue::PgQueue;
use crate::store::api::{QueueLeases, Renewed, Result, RunLeases, WorkerId};
use crate::store::history::{RunId, RunRecord};
use crate::store::queue::{QueueEntry, QueueId};

impl RunLeases for PgHistory {
    fn shared(&self) -> bool {
        true
    }

    async fn take(
        &self,
        run: RunId,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let pg = self.pg();
        let client = pg.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE runs SET owner = $2, lease_until_ns = $4
                 WHERE id = $1
                   AND (owner IS NULL OR owner = $2 OR lease_until_ns IS NULL
                        OR lease_until_ns < $3
                        OR status NOT IN ('queued', 'running'))",
            )
            .await
            .map_err(|e| pg.error(e))?;
        let n = client
            .execute(
                &stmt,
                &[
                    &run.to_string(),
                    &worker.as_str(),
                    &nanos(now),
                    &nanos(until),
                ],
            )
            .await
            .map_err(|e| pg.error(e))?;
        Ok(n > 0)
    }

    async fn wake_for(
        &self,
        id: RunId,
        worker: &WorkerId,
        until: DateTime<Utc>,
    ) -> Result<Option<RunRecord>> {
        self.swap_parked(id, woken, Some((worker.as_str(), nanos(until))))
            .await
    }

    async fn renew(&self, worker: &WorkerId, until: DateTime<Utc>) -> Result<Renewed> {
        let pg = self.pg();
        let client = pg.client().await?;
        let stmt = client
            .prepare_cached(
                "WITH r AS (UPDATE runs SET lease_until_ns = $2
                            WHERE owner = $1 AND status IN ('queued', 'running')
                            RETURNING id),
                      q AS (UPDATE queue SET lease_until_ns = $2
                            WHERE claimed_by = $1
                            RETURNING id)
                 SELECT true, id FROM r UNION ALL SELECT false, id FROM q",
            )
            .await
            .map_err(|e| pg.error(e))?;
        let rows = client
            .query(&stmt, &[&worker.as_str(), &nanos(until)])
            .await
            .map_err(|e| pg.error(e))?;
        let mut renewed = Renewed::default();
        for row in rows {
            let id: &str = row.get(1);
            if row.get::<_, bool>(0) {
                renewed.runs.push(pg.run_id("runs", id)?);
            } else {
                renewed.queued.push(
                    id.parse()
                        .map_err(|e: ulid::DecodeError| pg.corrupt("queue", id, e))?,
                );
            }
        }
        renewed.runs.sort();
        renewed.queued.sort();
        Ok(renewed)
    }

    async fn claim_orphans(
        &self,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let pg = self.pg();
        let client = pg.client().await?;
        let (now, until) = (nanos(now), nanos(until));
        // A run nobody took is an orphan one lease length after its creation.
        let grace = until.saturating_sub(now).max(0);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let stmt = client
            .prepare_cached(
                "UPDATE runs SET owner = $1, lease_until_ns = $3
                 WHERE id IN (
                     SELECT id FROM runs
                     WHERE status IN ('queued', 'running')
                       AND owner IS DISTINCT FROM $1
                       AND coalesce(lease_until_ns, created_ns + $4) < $2
                     ORDER BY id LIMIT $5
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id, record::text",
            )
            .await
            .map_err(|e| pg.error(e))?;
        let mut rows = client
            .query(&stmt, &[&worker.as_str(), &now, &until, &grace, &limit])
            .await
            .map_err(|e| pg.error(e))?;
        rows.sort_by(|a, b| a.get::<_, &str>(0).cmp(b.get::<_, &str>(0)));
        rows.iter().map(|row| self.decode_run(row.get(1))).collect()
    }
}

impl QueueLeases for PgQueue {
    async fn claim_for(
        &self,
        worker: &WorkerId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<QueueEntry>> {
        let pg = self.pg();
        let client = pg.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE queue SET claimed_by = $1, lease_until_ns = $3
                 WHERE id = (SELECT id FROM queue
                             WHERE claimed_by IS NULL OR lease_until_ns IS NULL
                                OR lease_until_ns < $2
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, request::text",
            )
            .await
            .map_err(|e| pg.error(e))?;
        let row = client
            .query_opt(&stmt, &[&worker.as_str(), &nanos(now), &nanos(until)])
            .await
            .map_err(|e| pg.error(e))?;
        row.map(|row| self.decode(row.get(0), row.get(1)))
            .transpose()
    }

    async fn release_for(&self, id: QueueId, worker: &WorkerId) -> Result<bool> {
        let pg = self.pg();
        let client = pg.client().await?;
        let n = client
            .execute(
                "UPDATE queue SET claimed_by = NULL, lease_until_ns = NULL
                 WHERE id = $1 AND claimed_by = $2",
                &[&id.to_string(), &worker.as_str()],
            )
            .await
            .map_err(|e| pg.error(e))?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::unfinished_statuses;

    #[test]
    fn the_statements_name_the_unfinished_statuses() {
        assert_eq!(unfinished_statuses(), ["queued", "running"]);
    }
}

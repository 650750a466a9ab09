//! The mass-change guard on PostgreSQL: `guard_writes` (one row per counted run and block, with
//! its workflow and time: the window is an index range) and `guard_releases`.
//!
//! [`WriteGuard::admit`] checks and counts in one transaction under an advisory lock on the
//! workflow's window, so two workers (not only two callers sharing a handle) never both take
//! the last place in it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{nanos, Postgres, LOCK_KEY};
use crate::store::api::{ReadGuard, Result, WriteGuard};
use crate::store::guard::{Admission, KEEP};
use crate::store::history::RunId;

/// The guard of one PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgGuard {
    pg: Postgres,
}

impl PgGuard {
    pub fn new(pg: &Postgres) -> PgGuard {
        PgGuard { pg: pg.clone() }
    }
}

/// `now - per`, in stored nanoseconds (saturating).
fn window_start(now: DateTime<Utc>, per: Duration) -> i64 {
    nanos(now).saturating_sub(i64::try_from(per.as_nanos()).unwrap_or(i64::MAX))
}

const COUNT: &str = "SELECT count(*) FROM guard_writes WHERE workflow = $1 AND at_ns > $2";

impl ReadGuard for PgGuard {
    async fn count(&self, workflow: &str, now: DateTime<Utc>, per: Duration) -> Result<u64> {
        let client = self.pg.client().await?;
        let n: i64 = client
            .query_one(COUNT, &[&workflow, &window_start(now, per)])
            .await
            .map_err(|e| self.pg.error(e))?
            .get(0);
        Ok(n as u64)
    }

    async fn is_released(&self, run: RunId) -> Result<bool> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM guard_releases WHERE run_id = $1",
                &[&run.to_string()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(row.is_some())
    }
}

impl WriteGuard for PgGuard {
    async fn admit(
        &self,
        workflow: &str,
        run: RunId,
        block: &str,
        now: DateTime<Utc>,
        per: Duration,
        allowed: Option<u64>,
    ) -> Result<Admission> {
        let pg = &self.pg;
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        let run = run.to_string();
        tx.execute(LOCK_KEY, &[&format!("guard {workflow}")])
            .await
            .map_err(|e| pg.error(e))?;
        let counted = tx
            .query_opt(
                "SELECT 1 FROM guard_writes WHERE run_id = $1 AND block = $2",
                &[&run, &block],
            )
            .await
            .map_err(|e| pg.error(e))?;
        if counted.is_some() {
            tx.commit().await.map_err(|e| pg.error(e))?;
            return Ok(Admission::Admitted);
        }
        if let Some(allowed) = allowed {
            let count: i64 = tx
                .query_one(COUNT, &[&workflow, &window_start(now, per)])
                .await
                .map_err(|e| pg.error(e))?
                .get(0);
            let count = count as u64;
            if count >= allowed {
                tx.commit().await.map_err(|e| pg.error(e))?;
                return Ok(Admission::Held { count, allowed });
            }
        }
        tx.execute(
            "INSERT INTO guard_writes (run_id, block, workflow, at_ns) VALUES ($1, $2, $3, $4)",
            &[&run, &block, &workflow, &nanos(now)],
        )
        .await
        .map_err(|e| pg.error(e))?;
        // What no window reaches any more (at or before `now - max(per, KEEP)`).
        tx.execute(
            "DELETE FROM guard_writes WHERE workflow = $1 AND at_ns <= $2",
            &[&workflow, &window_start(now, per.max(KEEP))],
        )
        .await
        .map_err(|e| pg.error(e))?;
        tx.commit().await.map_err(|e| pg.error(e))?;
        Ok(Admission::Admitted)
    }

    async fn release(&self, run: RunId, at: DateTime<Utc>) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "INSERT INTO guard_releases (run_id, at_ns) VALUES ($1, $2)
                 ON CONFLICT (run_id) DO UPDATE SET at_ns = $2",
                &[&run.to_string(), &nanos(at)],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }
}

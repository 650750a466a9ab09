//! The small durable marks on PostgreSQL, one table each: approval decisions (`approvals`),
//! cancel requests (`cancels`), paused workflows (`pauses`) and `retry-failed`'s marks
//! (`retry_marks`). Each write is one statement; "of two callers one wins" is a primary key
//! with `ON CONFLICT DO NOTHING`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{instant, nanos, Postgres};
use crate::store::api::{
    ApprovalStore, CancelStore, ReadPauses, ReadRetryMarks, Result, WritePauses, WriteRetryMarks,
};
use crate::store::approvals::Decision;
use crate::store::history::RunId;
use crate::store::pauses::Pause;
use crate::store::retries::RetryMark;

/// Approvals, cancels, pauses and retry marks of one PostgreSQL store (one handle serves every
/// one of these traits).
#[derive(Debug, Clone)]
pub struct PgMarks {
    pg: Postgres,
}

impl PgMarks {
    pub fn new(pg: &Postgres) -> PgMarks {
        PgMarks { pg: pg.clone() }
    }
}

impl ApprovalStore for PgMarks {
    async fn decision(&self, run: RunId, block: &str) -> Result<Option<Decision>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT approved, at_ns, by_whom, comment FROM approvals
                 WHERE run_id = $1 AND block = $2",
                &[&run.to_string(), &block],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(row.map(|row| Decision {
            approved: row.get(0),
            at: instant(row.get(1)),
            by: row.get(2),
            comment: row.get(3),
        }))
    }

    async fn decide(&self, run: RunId, block: &str, decision: Decision) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "INSERT INTO approvals (run_id, block, approved, at_ns, by_whom, comment)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id, block) DO UPDATE
                     SET approved = $3, at_ns = $4, by_whom = $5, comment = $6",
                &[
                    &run.to_string(),
                    &block,
                    &decision.approved,
                    &nanos(decision.at),
                    &decision.by,
                    &decision.comment,
                ],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }

    /// As sled answers: the decisions of the newest runs that have any (up to four per wanted
    /// one, by run id), most recently decided first.
    async fn recent(&self, limit: usize) -> Result<Vec<(RunId, String, Decision)>> {
        let client = self.pg.client().await?;
        let scan = i64::try_from(limit.saturating_mul(4)).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT run_id, block, approved, at_ns, by_whom, comment FROM
                   (SELECT * FROM approvals ORDER BY run_id DESC, block DESC LIMIT $1) newest
                 ORDER BY at_ns DESC, run_id DESC, block DESC LIMIT $2",
                &[&scan, &limit],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        rows.iter()
            .map(|row| {
                let id: &str = row.get(0);
                let run = self.pg.run_id("approvals", id)?;
                let decision = Decision {
                    approved: row.get(2),
                    at: instant(row.get(3)),
                    by: row.get(4),
                    comment: row.get(5),
                };
                Ok((run, row.get::<_, String>(1), decision))
            })
            .collect()
    }
}

impl CancelStore for PgMarks {
    async fn request(&self, run: RunId) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "INSERT INTO cancels (run_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&run.to_string()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }

    async fn requested(&self) -> Result<HashSet<RunId>> {
        let client = self.pg.client().await?;
        let rows = client
            .query("SELECT run_id FROM cancels", &[])
            .await
            .map_err(|e| self.pg.error(e))?;
        rows.iter()
            .map(|row| {
                let id: &str = row.get(0);
                self.pg.run_id("cancels", id)
            })
            .collect()
    }

    async fn clear(&self, run: RunId) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute("DELETE FROM cancels WHERE run_id = $1", &[&run.to_string()])
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }
}

impl ReadPauses for PgMarks {
    async fn paused(&self, workflow: &str) -> Result<Option<Pause>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT by_whom, at_ns FROM pauses WHERE workflow = $1",
                &[&workflow],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(row.map(|row| Pause {
            by: row.get(0),
            at: instant(row.get(1)),
        }))
    }

    async fn list(&self) -> Result<Vec<(String, Pause)>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT workflow, by_whom, at_ns FROM pauses ORDER BY workflow",
                &[],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    row.get(0),
                    Pause {
                        by: row.get(1),
                        at: instant(row.get(2)),
                    },
                )
            })
            .collect())
    }
}

impl WritePauses for PgMarks {
    async fn pause(&self, workflow: &str, by: &str, at: DateTime<Utc>) -> Result<(Pause, bool)> {
        let client = self.pg.client().await?;
        loop {
            let inserted = client
                .execute(
                    "INSERT INTO pauses (workflow, by_whom, at_ns) VALUES ($1, $2, $3)
                     ON CONFLICT (workflow) DO NOTHING",
                    &[&workflow, &by, &nanos(at)],
                )
                .await
                .map_err(|e| self.pg.error(e))?;
            if inserted > 0 {
                let pause = Pause {
                    by: by.to_owned(),
                    at,
                };
                return Ok((pause, true));
            }
            let row = client
                .query_opt(
                    "SELECT by_whom, at_ns FROM pauses WHERE workflow = $1",
                    &[&workflow],
                )
                .await
                .map_err(|e| self.pg.error(e))?;
            // None: resumed in between; pause again.
            if let Some(row) = row {
                let first = Pause {
                    by: row.get(0),
                    at: instant(row.get(1)),
                };
                return Ok((first, false));
            }
        }
    }

    async fn resume(&self, workflow: &str) -> Result<Option<Pause>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "DELETE FROM pauses WHERE workflow = $1 RETURNING by_whom, at_ns",
                &[&workflow],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(row.map(|row| Pause {
            by: row.get(0),
            at: instant(row.get(1)),
        }))
    }
}

impl ReadRetryMarks for PgMarks {
    async fn mark(&self, run: &str) -> Result<Option<RetryMark>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT by_whom, at_ns, replay FROM retry_marks WHERE run_id = $1",
                &[&run],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(row.map(|row| RetryMark {
            by: row.get(0),
            at: instant(row.get(1)),
            run: row.get(2),
        }))
    }
}

impl WriteRetryMarks for PgMarks {
    async fn claim(&self, run: &str, by: &str, at: DateTime<Utc>) -> Result<Option<RetryMark>> {
        let client = self.pg.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO retry_marks (run_id, by_whom, at_ns) VALUES ($1, $2, $3)
                 ON CONFLICT (run_id) DO NOTHING",
                &[&run, &by, &nanos(at)],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        if inserted > 0 {
            return Ok(None);
        }
        // Marks are never removed: the one that won is there.
        ReadRetryMarks::mark(self, run).await
    }

    async fn link(&self, run: &str, mark: RetryMark, replay: &str) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "INSERT INTO retry_marks (run_id, by_whom, at_ns, replay) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (run_id) DO UPDATE SET by_whom = $2, at_ns = $3, replay = $4",
                &[&run, &mark.by, &nanos(mark.at), &replay],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }
}

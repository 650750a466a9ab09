//! Approval reminders on PostgreSQL: `approval_reminders`, one row per run (sled's
//! [`crate::store::reminders`]). Scheduling keeps a row for the same blocks in one `INSERT … ON
//! CONFLICT … WHERE` (its due time does not move); claiming is one `UPDATE` of the row as it was
//! read, still unsent, so of two workers one sends the reminder.

use chrono::{DateTime, Utc};

use super::{instant, nanos, Postgres};
use crate::store::api::{ReadReminders, Result, WriteReminders};
use crate::store::history::RunId;
use crate::store::reminders::Reminder;

/// The approval reminders of one PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgReminders {
    pg: Postgres,
}

impl PgReminders {
    pub fn new(pg: &Postgres) -> PgReminders {
        PgReminders { pg: pg.clone() }
    }

    fn decode(&self, row: &tokio_postgres::Row) -> Result<(RunId, Reminder)> {
        let run: &str = row.get(0);
        let run = self.pg.run_id("approval_reminders", run)?;
        Ok((
            run,
            Reminder {
                since: instant(row.get(1)),
                blocks: row.get(2),
                due: instant(row.get(3)),
                sent: row.get::<_, Option<i64>>(4).map(instant),
            },
        ))
    }
}

const COLUMNS: &str = "run_id, since_ns, blocks, due_ns, sent_ns";

impl ReadReminders for PgReminders {
    async fn reminder(&self, run: RunId) -> Result<Option<Reminder>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM approval_reminders WHERE run_id = $1"),
                &[&run.to_string()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        row.map(|row| self.decode(&row).map(|(_, r)| r)).transpose()
    }

    async fn pending(&self) -> Result<Vec<(RunId, Reminder)>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM approval_reminders WHERE sent_ns IS NULL
                     ORDER BY due_ns, run_id"
                ),
                &[],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        rows.iter().map(|row| self.decode(row)).collect()
    }
}

impl WriteReminders for PgReminders {
    async fn schedule(&self, run: RunId, reminder: &Reminder) -> Result<bool> {
        let client = self.pg.client().await?;
        let n = client
            .execute(
                "INSERT INTO approval_reminders (run_id, since_ns, blocks, due_ns, sent_ns)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (run_id) DO UPDATE
                     SET since_ns = excluded.since_ns, blocks = excluded.blocks,
                         due_ns = excluded.due_ns, sent_ns = excluded.sent_ns
                     WHERE approval_reminders.blocks IS DISTINCT FROM excluded.blocks",
                &[
                    &run.to_string(),
                    &nanos(reminder.since),
                    &reminder.blocks,
                    &nanos(reminder.due),
                    &reminder.sent.map(nanos),
                ],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(n > 0)
    }

    async fn claim(&self, run: RunId, current: &Reminder, now: DateTime<Utc>) -> Result<bool> {
        let client = self.pg.client().await?;
        let n = client
            .execute(
                "UPDATE approval_reminders SET sent_ns = $6
                 WHERE run_id = $1 AND since_ns = $2 AND blocks = $3 AND due_ns = $4
                     AND sent_ns IS NOT DISTINCT FROM $5",
                &[
                    &run.to_string(),
                    &nanos(current.since),
                    &current.blocks,
                    &nanos(current.due),
                    &current.sent.map(nanos),
                    &nanos(now),
                ],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(n > 0)
    }

    async fn remove(&self, run: RunId) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "DELETE FROM approval_reminders WHERE run_id = $1",
                &[&run.to_string()],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }
}

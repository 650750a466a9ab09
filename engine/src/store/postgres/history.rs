//! Run history on PostgreSQL: `runs` (the record as JSON beside the columns queried: workflow,
//! status, creation and finish times, pruned), `steps` (one row per step), `snapshots`,
//! `run_subjects` (the per-person index) and the run's timer (`timers`, kept in step with the
//! record in the same transaction). Run and step writes commit asynchronously and are made
//! durable by [`WriteHistory::durable`], as on sled. Retention goes in batches of runs in id
//! order: a payload prune transaction per run, a whole-run delete as one statement per batch
//! that deletes the runs with their rows in every other table keyed by run.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use super::{nanos, Postgres};
use crate::store::api::{ReadHistory, Result, WriteHistory};
use crate::store::history::{
    snapshot_hash, BatchReport, PruneReport, RunFilter, RunId, RunRecord, RunStatus, StepRecord,
    TriggerKind,
};

/// `put_run` and `put_steps` commit without waiting for the WAL flush: like sled's writes, they
/// are durable at the next [`WriteHistory::durable`] (the trait's promise), so a run's steps
/// share one flush instead of paying one each.
const ASYNC_COMMIT: &str = "SET LOCAL synchronous_commit TO OFF";

/// The history of one PostgreSQL store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgHistory {
    pg: Postgres,
}

impl PgHistory {
    pub fn new(pg: &Postgres) -> PgHistory {
        PgHistory { pg: pg.clone() }
    }

    pub(super) fn pg(&self) -> &Postgres {
        &self.pg
    }

    /// How many runs are parked in each of [`RunStatus::PARKED`], in that order (`serve`'s
    /// `/metrics`).
    pub async fn parked_counts(&self) -> Result<[(RunStatus, usize); 4]> {
        let names: Vec<&str> = RunStatus::PARKED.iter().map(|s| s.name()).collect();
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT status, count(*) FROM runs WHERE status = ANY($1) GROUP BY status",
                &[&names],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        let mut counts = RunStatus::PARKED.map(|status| (status, 0));
        for row in &rows {
            let status: &str = row.get(0);
            let n: i64 = row.get(1);
            if let Some((_, count)) = counts.iter_mut().find(|(s, _)| s.name() == status) {
                *count = usize::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    pub(super) fn decode_run(&self, text: &str) -> Result<RunRecord> {
        serde_json::from_str(text).map_err(|err| self.pg.corrupt("runs", short(text), err))
    }

    fn decode_step(&self, text: &str) -> Result<StepRecord> {
        serde_json::from_str(text).map_err(|err| self.pg.corrupt("steps", short(text), err))
    }

    /// Where the batch after one that found `ids` (at most `limit`) goes on: after its last run
    /// when it was full, else nowhere.
    fn next_after(&self, ids: &[String], limit: usize) -> Result<Option<RunId>> {
        match ids.last() {
            Some(last) if ids.len() >= limit => self.pg.run_id("runs", last).map(Some),
            _ => Ok(None),
        }
    }

    /// Replaces run `id`'s record with `change(record)` when that is `Some`, under the row's lock,
    /// dropping its timer (see [`crate::store::history::History::wake`]).
    /// With `owner`, the changed run is taken by that worker until the given time (see
    /// [`crate::store::api::RunLeases::wake_for`]).
    pub(super) async fn swap_parked(
        &self,
        id: RunId,
        change: impl Fn(&RunRecord) -> Option<RunRecord>,
        owner: Option<(&str, i64)>,
    ) -> Result<Option<RunRecord>> {
        let pg = &self.pg;
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        let key = id.to_string();
        let row = tx
            .query_opt(
                "SELECT record::text FROM runs WHERE id = $1 FOR UPDATE",
                &[&key],
            )
            .await
            .map_err(|e| pg.error(e))?;
        let drop_timer = "DELETE FROM timers WHERE run_id = $1";
        let Some(row) = row else {
            tx.execute(drop_timer, &[&key])
                .await
                .map_err(|e| pg.error(e))?;
            tx.commit().await.map_err(|e| pg.error(e))?;
            return Ok(None);
        };
        let run = self.decode_run(row.get(0))?;
        let Some(new) = change(&run) else {
            if run.wake_at.is_none() {
                tx.execute(drop_timer, &[&key])
                    .await
                    .map_err(|e| pg.error(e))?;
            }
            tx.commit().await.map_err(|e| pg.error(e))?;
            return Ok(None);
        };
        write_run(&tx, &new).await.map_err(|e| pg.error(e))?;
        if let Some((owner, until)) = owner {
            tx.execute(
                "UPDATE runs SET owner = $2, lease_until_ns = $3 WHERE id = $1",
                &[&key, &owner, &until],
            )
            .await
            .map_err(|e| pg.error(e))?;
        }
        tx.execute(drop_timer, &[&key])
            .await
            .map_err(|e| pg.error(e))?;
        tx.commit().await.map_err(|e| pg.error(e))?;
        Ok(Some(new))
    }
}

/// A parked run its timer wakes: `running`, without its wake-up time (`None`: not parked on a
/// timer).
pub(super) fn woken(run: &RunRecord) -> Option<RunRecord> {
    matches!(run.status, RunStatus::Retrying | RunStatus::Waiting).then(|| RunRecord {
        status: RunStatus::Running,
        wake_at: None,
        ..run.clone()
    })
}

/// The start of a stored document, to name it in an error.
fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

/// Upserts the run row (not its timer or index).
async fn write_run(
    tx: &deadpool_postgres::Transaction<'_>,
    run: &RunRecord,
) -> std::result::Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO runs (id, workflow, status, created_ns, finished_ns, pruned, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET workflow = $2, status = $3, created_ns = $4,
                 finished_ns = $5, pruned = $6, record = $7",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &run.id.to_string(),
            &run.workflow,
            &run.status.name(),
            &nanos(run.created_at),
            &run.finished_at.map(nanos),
            &run.pruned,
            &Json(run),
        ],
    )
    .await?;
    Ok(())
}

/// The statuses of finished runs (the only ones retention prunes or deletes).
fn finished_statuses() -> Vec<&'static str> {
    RunStatus::ALL
        .into_iter()
        .filter(|s| s.is_finished())
        .map(RunStatus::name)
        .collect()
}

/// A batch size as a SQL `LIMIT`.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The statuses [`ReadHistory::unfinished`] returns: neither finished nor parked.
pub(super) fn unfinished_statuses() -> Vec<&'static str> {
    RunStatus::ALL
        .into_iter()
        .filter(|s| !s.is_finished() && !s.is_parked())
        .map(RunStatus::name)
        .collect()
}

impl ReadHistory for PgHistory {
    async fn run(&self, id: RunId) -> Result<Option<RunRecord>> {
        let pg = &self.pg;
        let client = pg.client().await?;
        let stmt = client
            .prepare_cached("SELECT record::text FROM runs WHERE id = $1")
            .await
            .map_err(|e| pg.error(e))?;
        let row = client
            .query_opt(&stmt, &[&id.to_string()])
            .await
            .map_err(|e| pg.error(e))?;
        row.map(|row| self.decode_run(row.get(0))).transpose()
    }

    async fn steps(&self, id: RunId) -> Result<Vec<StepRecord>> {
        let pg = &self.pg;
        let client = pg.client().await?;
        let rows = client
            .query(
                "SELECT step::text FROM steps WHERE run_id = $1 ORDER BY seq",
                &[&id.to_string()],
            )
            .await
            .map_err(|e| pg.error(e))?;
        rows.iter()
            .map(|row| self.decode_step(row.get(0)))
            .collect()
    }

    async fn snapshot(&self, hash: &str) -> Result<Option<String>> {
        let pg = &self.pg;
        let client = pg.client().await?;
        let row = client
            .query_opt("SELECT text FROM snapshots WHERE hash = $1", &[&hash])
            .await
            .map_err(|e| pg.error(e))?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let pg = &self.pg;
        let client = pg.client().await?;
        let limit = filter
            .limit
            .map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let status = filter.status.map(RunStatus::name);
        let since = filter.since.map(nanos);
        let subject = filter.subject.as_ref().map(|s| s.to_lowercase());
        let trigger = filter.trigger.map(TriggerKind::name);
        // Run ids are ULIDs, whose text sorts as their bytes do (sled's key order).
        let before = filter.before.map(|id| id.to_string());
        let rows = client
            .query(
                "SELECT r.record::text FROM runs r
                 WHERE ($1::text IS NULL OR r.workflow = $1)
                   AND ($2::text IS NULL OR r.status = $2)
                   AND ($3::bigint IS NULL OR r.created_ns >= $3)
                   AND ($4::text IS NULL OR r.id IN
                        (SELECT run_id FROM run_subjects WHERE subject = $4))
                   AND ($6::text IS NULL OR r.record->'trigger'->>'kind' = $6)
                   AND ($7::text IS NULL OR r.id < $7)
                 ORDER BY r.id DESC LIMIT $5",
                &[
                    &filter.workflow,
                    &status,
                    &since,
                    &subject,
                    &limit,
                    &trigger,
                    &before,
                ],
            )
            .await
            .map_err(|e| pg.error(e))?;
        rows.iter().map(|row| self.decode_run(row.get(0))).collect()
    }

    async fn unfinished(&self) -> Result<Vec<RunRecord>> {
        let pg = &self.pg;
        let client = pg.client().await?;
        let rows = client
            .query(
                "SELECT record::text FROM runs WHERE status = ANY($1) ORDER BY id",
                &[&unfinished_statuses()],
            )
            .await
            .map_err(|e| pg.error(e))?;
        rows.iter().map(|row| self.decode_run(row.get(0))).collect()
    }
}

impl WriteHistory for PgHistory {
    async fn put_snapshot(&self, text: &str) -> Result<String> {
        let pg = &self.pg;
        let hash = snapshot_hash(text);
        let client = pg.client().await?;
        client
            .execute(
                "INSERT INTO snapshots (hash, text) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                &[&hash, &text],
            )
            .await
            .map_err(|e| pg.error(e))?;
        Ok(hash)
    }

    /// The record, its timer (set or dropped) and, while `queued`/`running`, its subject index
    /// entry, in one transaction.
    async fn put_run(&self, run: &RunRecord) -> Result<()> {
        let pg = &self.pg;
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        tx.batch_execute(ASYNC_COMMIT)
            .await
            .map_err(|e| pg.error(e))?;
        let id = run.id.to_string();
        write_run(&tx, run).await.map_err(|e| pg.error(e))?;
        match run.wake_at {
            Some(at) => {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO timers (run_id, at_ns) VALUES ($1, $2)
                         ON CONFLICT (run_id) DO UPDATE
                             SET at_ns = $2, lease_owner = NULL, lease_until_ns = NULL",
                    )
                    .await
                    .map_err(|e| pg.error(e))?;
                tx.execute(&stmt, &[&id, &nanos(at)])
                    .await
                    .map_err(|e| pg.error(e))?;
            }
            None => {
                let stmt = tx
                    .prepare_cached("DELETE FROM timers WHERE run_id = $1")
                    .await
                    .map_err(|e| pg.error(e))?;
                tx.execute(&stmt, &[&id]).await.map_err(|e| pg.error(e))?;
            }
        }
        let first_write = matches!(run.status, RunStatus::Queued | RunStatus::Running);
        if let Some(subject) = run.subject.as_ref().filter(|_| first_write) {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO run_subjects (subject, run_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(|e| pg.error(e))?;
            tx.execute(&stmt, &[&subject.index_key(), &id])
                .await
                .map_err(|e| pg.error(e))?;
        }
        tx.commit().await.map_err(|e| pg.error(e))
    }

    async fn put_steps(&self, steps: &[&StepRecord]) -> Result<()> {
        let pg = &self.pg;
        let Some(first) = steps.first() else {
            return Ok(());
        };
        let mut client = pg.client().await?;
        let tx = client.transaction().await.map_err(|e| pg.error(e))?;
        tx.batch_execute(ASYNC_COMMIT)
            .await
            .map_err(|e| pg.error(e))?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO steps (run_id, seq, step)
                 SELECT $1, s.seq, s.step FROM unnest($2::integer[], $3::json[]) AS s(seq, step)
                 ON CONFLICT (run_id, seq) DO UPDATE SET step = excluded.step",
            )
            .await
            .map_err(|e| pg.error(e))?;
        let seqs: Vec<i32> = steps.iter().map(|s| s.seq as i32).collect();
        let docs: Vec<Json<&StepRecord>> = steps.iter().map(|s| Json(*s)).collect();
        tx.execute(&stmt, &[&first.run.to_string(), &seqs, &docs])
            .await
            .map_err(|e| pg.error(e))?;
        tx.commit().await.map_err(|e| pg.error(e))
    }

    async fn wake(&self, id: RunId) -> Result<Option<RunRecord>> {
        self.swap_parked(id, woken, None).await
    }

    async fn cancel_parked(
        &self,
        id: RunId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<RunRecord>> {
        self.swap_parked(
            id,
            |run| {
                run.status.is_parked().then(|| RunRecord {
                    status: RunStatus::Cancelled,
                    error: Some(reason.to_owned()),
                    finished_at: Some(at),
                    wake_at: None,
                    ..run.clone()
                })
            },
            None,
        )
        .await
    }

    /// Each run in its own transaction: its steps blanked and the run marked pruned together.
    async fn prune(&self, cutoff: DateTime<Utc>) -> Result<PruneReport> {
        let batch = self.prune_batch(cutoff, None, usize::MAX).await?;
        Ok(PruneReport {
            runs: batch.runs,
            steps: batch.steps,
        })
    }

    /// The runs to prune after `after`, `limit` at most, then each in its own transaction.
    async fn prune_batch(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> Result<BatchReport> {
        let pg = &self.pg;
        let mut client = pg.client().await?;
        let limit = limit.max(1);
        let ids: Vec<String> = client
            .query(
                "SELECT id FROM runs WHERE NOT pruned AND finished_ns < $1 AND status = ANY($2)
                   AND ($3::text IS NULL OR id > $3)
                 ORDER BY id LIMIT $4",
                &[
                    &nanos(cutoff),
                    &finished_statuses(),
                    &after.map(|id| id.to_string()),
                    &sql_limit(limit),
                ],
            )
            .await
            .map_err(|e| pg.error(e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut report = BatchReport {
            next: self.next_after(&ids, limit)?,
            ..BatchReport::default()
        };
        for id in ids {
            let tx = client.transaction().await.map_err(|e| pg.error(e))?;
            let Some(row) = tx
                .query_opt(
                    "SELECT record::text FROM runs WHERE id = $1 AND NOT pruned FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(|e| pg.error(e))?
            else {
                continue;
            };
            let mut run = self.decode_run(row.get(0))?;
            let rows = tx
                .query(
                    "SELECT step::text FROM steps WHERE run_id = $1 ORDER BY seq",
                    &[&id],
                )
                .await
                .map_err(|e| pg.error(e))?;
            for row in rows {
                let mut step = self.decode_step(row.get(0))?;
                step.inputs = None;
                step.request = None;
                step.response = None;
                step.saved.clear();
                step.outputs.clear();
                tx.execute(
                    "UPDATE steps SET step = $3 WHERE run_id = $1 AND seq = $2",
                    &[&id, &(step.seq as i32), &Json(&step)],
                )
                .await
                .map_err(|e| pg.error(e))?;
                report.steps += 1;
            }
            run.pruned = true;
            write_run(&tx, &run).await.map_err(|e| pg.error(e))?;
            tx.execute("DELETE FROM timers WHERE run_id = $1", &[&id])
                .await
                .map_err(|e| pg.error(e))?;
            tx.commit().await.map_err(|e| pg.error(e))?;
            report.runs += 1;
        }
        Ok(report)
    }

    /// Deletes the batch's runs and everything kept for them in one statement (one transaction):
    /// the run rows are deleted only while still finished before `cutoff`, and the rows of the
    /// other tables only for the runs deleted.
    async fn delete_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        after: Option<RunId>,
        limit: usize,
    ) -> Result<BatchReport> {
        let pg = &self.pg;
        let client = pg.client().await?;
        let limit = limit.max(1);
        let finished = finished_statuses();
        let rows = client
            .query(
                "SELECT id, record::text FROM runs WHERE finished_ns < $1 AND status = ANY($2)
                   AND ($3::text IS NULL OR id > $3)
                 ORDER BY id LIMIT $4",
                &[
                    &nanos(cutoff),
                    &finished,
                    &after.map(|id| id.to_string()),
                    &sql_limit(limit),
                ],
            )
            .await
            .map_err(|e| pg.error(e))?;
        let mut ids = Vec::with_capacity(rows.len());
        // The subject index entries and record watches, by the keys they were written under.
        let (mut subjects, mut subject_runs) = (Vec::new(), Vec::new());
        let (mut watched, mut watch_runs) = (Vec::new(), Vec::new());
        for row in &rows {
            let id: String = row.get(0);
            let run = self.decode_run(row.get(1))?;
            if let Some(subject) = &run.subject {
                subjects.push(subject.index_key());
                subject_runs.push(id.clone());
                watched.push(subject.record_key());
                watch_runs.push(id.clone());
            }
            ids.push(id);
        }
        let next = self.next_after(&ids, limit)?;
        if ids.is_empty() {
            return Ok(BatchReport::default());
        }
        let row = client
            .query_one(
                "WITH doomed AS (
                     DELETE FROM runs WHERE id = ANY($1) AND finished_ns < $2 AND status = ANY($3)
                     RETURNING id
                 ), gone_steps AS (
                     DELETE FROM steps WHERE run_id IN (SELECT id FROM doomed) RETURNING 1
                 ), gone_subjects AS (
                     DELETE FROM run_subjects
                     WHERE (subject, run_id) IN (SELECT * FROM unnest($4::text[], $5::text[]))
                       AND run_id IN (SELECT id FROM doomed)
                 ), gone_watches AS (
                     DELETE FROM timer_watches
                     WHERE (record, run_id) IN (SELECT * FROM unnest($6::text[], $7::text[]))
                       AND run_id IN (SELECT id FROM doomed)
                 ), gone_timers AS (
                     DELETE FROM timers WHERE run_id IN (SELECT id FROM doomed)
                 ), gone_approvals AS (
                     DELETE FROM approvals WHERE run_id IN (SELECT id FROM doomed)
                 ), gone_reminders AS (
                     DELETE FROM approval_reminders WHERE run_id IN (SELECT id FROM doomed)
                 ), gone_marks AS (
                     DELETE FROM retry_marks WHERE run_id IN (SELECT id FROM doomed)
                 )
                 SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM gone_steps)",
                &[
                    &ids,
                    &nanos(cutoff),
                    &finished,
                    &subjects,
                    &subject_runs,
                    &watched,
                    &watch_runs,
                ],
            )
            .await
            .map_err(|e| pg.error(e))?;
        let (runs, steps): (i64, i64) = (row.get(0), row.get(1));
        Ok(BatchReport {
            runs: usize::try_from(runs).unwrap_or_default(),
            steps: usize::try_from(steps).unwrap_or_default(),
            next,
        })
    }

    /// A synchronous commit of a transaction with an id: it returns once the write-ahead log is
    /// on disk up to its commit record, which covers every commit made before it, on any
    /// connection, the asynchronous ones of [`Self::put_run`] and [`Self::put_steps`] included.
    /// Concurrent callers share the server's WAL flushes (its own group commit).
    async fn durable(&self) -> Result<()> {
        self.pg.durable().await
    }
}

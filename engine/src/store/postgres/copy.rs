//! `blockyard store copy`: a sled data dir into a PostgreSQL store, part by part (snapshots,
//! runs, steps, the subject index, timers and the `wait` block's watches, records, in-flight
//! entries, the queue, traces and their links, schedule ticks, approvals, cancel requests, the
//! guard's counts and releases, pauses, retry marks, approval reminders, OAuth tokens).
//!
//! Each part is read from sled whole, then written in chunks of [`CHUNK`] rows, one transaction
//! each, every row with `ON CONFLICT DO NOTHING`: a copy stopped half way (a kill, a lost
//! connection) is finished by running it again, which skips the rows already there and copies
//! the rest. A row already in the database is never overwritten, so copy a data dir no process
//! is writing (the sled lock sees to that: the data dir cannot be open in `serve` meanwhile).
//! The OAuth token store (`tokens.json`) is copied into `tokens`, one row per credential, for
//! the PostgreSQL token store that comes with the engine's move onto PostgreSQL.

use chrono::{DateTime, Utc};
use tokio_postgres::types::{Json, ToSql};

use super::{nanos, Postgres};
use crate::store::approvals::Decision;
use crate::store::cancels::CancelMarkers;
use crate::store::history::{self, RunId};
use crate::store::pauses::Pauses;
use crate::store::queue::{QueueId, RunRequest};
use crate::store::reminders::Reminders;
use crate::store::retries::RetryMark;
use crate::store::timers::Timers;
use crate::store::tokens::{FileTokenStore, TokenStore};
use crate::store::trace::TraceEntry;
use crate::store::{trees, Store, StoreError};

/// Rows written per transaction.
pub const CHUNK: usize = 500;

/// What one part of the copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub part: &'static str,
    /// Rows written now.
    pub copied: u64,
    /// Rows that were there already (an earlier copy).
    pub skipped: u64,
}

type Param = Box<dyn ToSql + Sync + Send>;

/// One part: its insert statement and its rows.
struct Part {
    name: &'static str,
    sql: &'static str,
    rows: Vec<Vec<Param>>,
}

fn corrupt(tree: &'static str, key: &[u8], err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        message: err.to_string(),
    }
}

fn text(tree: &'static str, key: &[u8], value: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(value.to_vec()).map_err(|err| corrupt(tree, key, err))
}

/// `collection/key` → its two halves.
fn subject(tree: &'static str, key: &[u8]) -> Result<(String, String), StoreError> {
    let text = String::from_utf8_lossy(key);
    match text.split_once('/') {
        Some((c, k)) => Ok((c.to_owned(), k.to_owned())),
        None => Err(corrupt(tree, key, "no `collection/` in the key")),
    }
}

/// Every entry of sled tree `name`.
fn entries(store: &Store, name: &str) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
    Ok(store.tree(name)?.iter().collect::<Result<Vec<_>, _>>()?)
}

/// Reads every part from the sled store (blocking).
fn read(store: &Store) -> Result<Vec<Part>, StoreError> {
    let mut parts = Vec::new();
    let mut part = |name, sql, rows| {
        parts.push(Part { name, sql, rows });
    };

    let mut rows = Vec::new();
    for (key, value) in entries(store, trees::SNAPSHOTS)? {
        rows.push(vec![
            Box::new(text(trees::SNAPSHOTS, &key, &key)?) as Param,
            Box::new(text(trees::SNAPSHOTS, &key, &value)?),
        ]);
    }
    part(
        "snapshots",
        "INSERT INTO snapshots (hash, text) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        rows,
    );

    let mut rows = Vec::new();
    for (key, value) in entries(store, trees::RUNS)? {
        // In either of the history's encodings (JSON, or binary: `store::codec`); the
        // database's `record` column holds the record's JSON.
        let run = history::decode_run(&key, &value)?;
        let record = serde_json::to_string(&run).map_err(|err| corrupt(trees::RUNS, &key, err))?;
        rows.push(vec![
            Box::new(run.id.to_string()) as Param,
            Box::new(run.workflow.clone()),
            Box::new(run.status.name()),
            Box::new(nanos(run.created_at)),
            Box::new(run.finished_at.map(nanos)),
            Box::new(run.pruned),
            Box::new(record),
        ]);
    }
    part(
        "runs",
        "INSERT INTO runs (id, workflow, status, created_ns, finished_ns, pruned, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7::text::json) ON CONFLICT DO NOTHING",
        rows,
    );

    let mut rows = Vec::new();
    for (key, value) in entries(store, trees::STEPS)? {
        for step in history::decode_steps(&key, &value)? {
            rows.push(vec![
                Box::new(step.run.to_string()) as Param,
                Box::new(step.seq as i32),
                Box::new(Json(step)),
            ]);
        }
    }
    part(
        "steps",
        "INSERT INTO steps (run_id, seq, step) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        rows,
    );

    let mut rows = Vec::new();
    for (key, _) in entries(store, trees::SUBJECTS)? {
        let Some(split) = key.len().checked_sub(17).filter(|&i| key[i] == 0) else {
            return Err(corrupt(
                trees::SUBJECTS,
                &key,
                "no run id after the subject",
            ));
        };
        let run = RunId::from_key(&key[split + 1..])
            .ok_or_else(|| corrupt(trees::SUBJECTS, &key, "no run id after the subject"))?;
        rows.push(vec![
            Box::new(String::from_utf8_lossy(&key[..split]).into_owned()) as Param,
            Box::new(run.to_string()),
        ]);
    }
    part(
        "subject index",
        "INSERT INTO run_subjects (subject, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        rows,
    );

    let rows = Timers::open(store)?
        .all()?
        .into_iter()
        .map(|t| vec![Box::new(t.run.to_string()) as Param, Box::new(nanos(t.at))])
        .collect();
    part(
        "timers",
        "INSERT INTO timers (run_id, at_ns) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        rows,
    );

    let rows = Timers::open(store)?
        .all_watches()?
        .into_iter()
        .map(|(record, run)| vec![Box::new(record) as Param, Box::new(run.to_string())])
        .collect();
    part(
        "timer watches",
        "INSERT INTO timer_watches (record, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        rows,
    );

    for (name, tree, sql) in [
        (
            "records",
            trees::RECORDS,
            "INSERT INTO records (collection, key, fields) VALUES ($1, $2, $3::text::json)
             ON CONFLICT DO NOTHING",
        ),
        (
            "in-flight entries",
            crate::store::in_flight::IN_FLIGHT,
            "INSERT INTO in_flight (collection, key, entry) VALUES ($1, $2, $3::text::json)
             ON CONFLICT DO NOTHING",
        ),
    ] {
        let mut rows = Vec::new();
        for (key, value) in entries(store, tree)? {
            let (c, k) = subject(trees::RECORDS, &key)?;
            rows.push(vec![
                Box::new(c) as Param,
                Box::new(k),
                Box::new(text(trees::RECORDS, &key, &value)?),
            ]);
        }
        part(name, sql, rows);
    }

    let mut rows = Vec::new();
    for (key, value) in entries(store, trees::QUEUE)? {
        let id = QueueId::from_bytes(&key)
            .ok_or_else(|| corrupt(trees::QUEUE, &key, "not a queue id"))?;
        let request: RunRequest =
            serde_json::from_slice(&value).map_err(|err| corrupt(trees::QUEUE, &key, err))?;
        rows.push(vec![
            Box::new(id.to_string()) as Param,
            Box::new(request.workflow.as_str().to_owned()),
            Box::new(text(trees::QUEUE, &key, &value)?),
        ]);
    }
    part(
        "queue",
        "INSERT INTO queue (id, workflow, request) VALUES ($1, $2, $3::text::json)
         ON CONFLICT DO NOTHING",
        rows,
    );

    // Traces: `subject \0 slot` → an entry, `subject \0 #` → the subject's next number.
    let traces_tree = crate::store::records::TRACES;
    let traces = entries(store, traces_tree)?;
    let (mut rows, mut counters) = (Vec::new(), Vec::new());
    for (key, value) in &traces {
        let Some(end) = key.iter().position(|&b| b == 0) else {
            return Err(corrupt(traces_tree, key, "no subject in the key"));
        };
        let (c, k) = subject(traces_tree, &key[..end])?;
        if key.ends_with(b"\0#") {
            let next = value
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|err| corrupt(traces_tree, key, err))?;
            counters.push(vec![
                Box::new(c) as Param,
                Box::new(k),
                Box::new(next as i64),
            ]);
            continue;
        }
        let entry: TraceEntry =
            serde_json::from_slice(value).map_err(|err| corrupt(traces_tree, key, err))?;
        rows.push(vec![
            Box::new(c) as Param,
            Box::new(k),
            Box::new(entry.seq as i64),
            Box::new(text(traces_tree, key, value)?),
        ]);
    }
    part(
        "traces",
        "INSERT INTO traces (collection, key, seq, entry) VALUES ($1, $2, $3, $4::text::json)
         ON CONFLICT DO NOTHING",
        rows,
    );
    part(
        "trace counters",
        "INSERT INTO trace_counters (collection, key, next_seq) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        counters,
    );

    let links_tree = crate::store::records::TRACE_LINKS;
    let mut rows = Vec::new();
    for (key, value) in entries(store, links_tree)? {
        let id =
            QueueId::from_bytes(&key).ok_or_else(|| corrupt(links_tree, &key, "not a queue id"))?;
        // The entry it points at: gone (overwritten by newer ones) means nothing to link.
        let Some((_, entry)) = traces.iter().find(|(k, _)| *k == value) else {
            continue;
        };
        let Some(end) = value.iter().position(|&b| b == 0) else {
            continue;
        };
        let (c, k) = subject(links_tree, &value[..end])?;
        let entry: TraceEntry =
            serde_json::from_slice(entry).map_err(|err| corrupt(traces_tree, &value, err))?;
        rows.push(vec![
            Box::new(id.to_string()) as Param,
            Box::new(c),
            Box::new(k),
            Box::new(entry.seq as i64),
        ]);
    }
    part(
        "trace links",
        "INSERT INTO trace_links (queue_id, collection, key, seq) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        rows,
    );

    let schedules_tree = crate::store::queue::SCHEDULES;
    let mut rows = Vec::new();
    for (key, value) in entries(store, schedules_tree)? {
        let at: DateTime<Utc> =
            serde_json::from_slice(&value).map_err(|err| corrupt(schedules_tree, &key, err))?;
        rows.push(vec![
            Box::new(String::from_utf8_lossy(&key).into_owned()) as Param,
            Box::new(nanos(at)),
        ]);
    }
    part(
        "schedule ticks",
        "INSERT INTO schedules (workflow, last_fired_ns) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        rows,
    );

    // The sled tree names of approvals, the guard and retry marks (see their modules).
    let mut rows = Vec::new();
    for (key, value) in entries(store, "approvals")? {
        let Some(end) = key.iter().position(|&b| b == 0) else {
            return Err(corrupt("approvals", &key, "no block in the key"));
        };
        let decision: Decision =
            serde_json::from_slice(&value).map_err(|err| corrupt("approvals", &key, err))?;
        rows.push(vec![
            Box::new(String::from_utf8_lossy(&key[..end]).into_owned()) as Param,
            Box::new(String::from_utf8_lossy(&key[end + 1..]).into_owned()),
            Box::new(decision.approved),
            Box::new(nanos(decision.at)),
            Box::new(decision.by),
            Box::new(decision.comment),
        ]);
    }
    part(
        "approvals",
        "INSERT INTO approvals (run_id, block, approved, at_ns, by_whom, comment)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        rows,
    );

    let rows = CancelMarkers::in_data_dir(store.dir())
        .scan()
        .into_iter()
        .map(|run| vec![Box::new(run.to_string()) as Param])
        .collect();
    part(
        "cancel requests",
        "INSERT INTO cancels (run_id) VALUES ($1) ON CONFLICT DO NOTHING",
        rows,
    );

    // `workflow \0 time(8) \0 run \0 block`, the time a sortable i64 (sign bit flipped).
    let mut rows = Vec::new();
    for (key, _) in entries(store, "guard_writes")? {
        let bad = || corrupt("guard_writes", &key, "not `workflow, time, run, block`");
        let end = key.iter().position(|&b| b == 0).ok_or_else(bad)?;
        let time: [u8; 8] = key
            .get(end + 1..end + 9)
            .and_then(|t| t.try_into().ok())
            .ok_or_else(bad)?;
        let rest = key.get(end + 10..).ok_or_else(bad)?;
        let split = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
        rows.push(vec![
            Box::new(String::from_utf8_lossy(&rest[..split]).into_owned()) as Param,
            Box::new(String::from_utf8_lossy(&rest[split + 1..]).into_owned()),
            Box::new(String::from_utf8_lossy(&key[..end]).into_owned()),
            Box::new((u64::from_be_bytes(time) ^ (1 << 63)) as i64),
        ]);
    }
    part(
        "guard counts",
        "INSERT INTO guard_writes (run_id, block, workflow, at_ns) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        rows,
    );

    let mut rows = Vec::new();
    for (key, value) in entries(store, "guard_released")? {
        let at = DateTime::parse_from_rfc3339(&String::from_utf8_lossy(&value))
            .map_err(|err| corrupt("guard_released", &key, err))?;
        rows.push(vec![
            Box::new(String::from_utf8_lossy(&key).into_owned()) as Param,
            Box::new(nanos(at.with_timezone(&Utc))),
        ]);
    }
    part(
        "guard releases",
        "INSERT INTO guard_releases (run_id, at_ns) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        rows,
    );

    let rows = Pauses::open(store)?
        .list()?
        .into_iter()
        .map(|(workflow, pause)| {
            vec![
                Box::new(workflow) as Param,
                Box::new(pause.by),
                Box::new(nanos(pause.at)),
            ]
        })
        .collect();
    part(
        "pauses",
        "INSERT INTO pauses (workflow, by_whom, at_ns) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        rows,
    );

    let mut rows = Vec::new();
    for (key, value) in entries(store, "retried")? {
        let mark: RetryMark =
            serde_json::from_slice(&value).map_err(|err| corrupt("retried", &key, err))?;
        rows.push(vec![
            Box::new(String::from_utf8_lossy(&key).into_owned()) as Param,
            Box::new(mark.by),
            Box::new(nanos(mark.at)),
            Box::new(mark.run),
        ]);
    }
    part(
        "retry marks",
        "INSERT INTO retry_marks (run_id, by_whom, at_ns, replay) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        rows,
    );

    let rows = Reminders::open(store)?
        .all()?
        .into_iter()
        .map(|(run, r)| {
            vec![
                Box::new(run.to_string()) as Param,
                Box::new(nanos(r.since)),
                Box::new(r.blocks),
                Box::new(nanos(r.due)),
                Box::new(r.sent.map(nanos)),
            ]
        })
        .collect();
    part(
        "approval reminders",
        "INSERT INTO approval_reminders (run_id, since_ns, blocks, due_ns, sent_ns)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        rows,
    );

    let tokens = FileTokenStore::in_dir(store.dir())
        .read()
        .map_err(|err| StoreError::Io {
            message: err.to_string(),
        })?;
    let rows = tokens
        .credentials
        .into_iter()
        .map(|(credential, token)| vec![Box::new(credential) as Param, Box::new(Json(token))])
        .collect();
    part(
        "tokens",
        "INSERT INTO tokens (credential, token) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        rows,
    );
    Ok(parts)
}

/// Copies `store` into `pg` (migrated already), telling `progress` each part's name, rows done
/// and rows in all after every chunk.
pub async fn copy(
    store: &Store,
    pg: &Postgres,
    progress: &(dyn Fn(&'static str, u64, u64) + Sync),
) -> Result<Vec<Copied>, StoreError> {
    let reading = store.clone();
    let parts = tokio::task::spawn_blocking(move || read(&reading))
        .await
        .map_err(|err| StoreError::Io {
            message: format!("reading the data dir failed: {err}"),
        })??;
    let mut client = pg.client().await?;
    let mut report = Vec::with_capacity(parts.len());
    for part in parts {
        let total = part.rows.len() as u64;
        let mut copied = Copied {
            part: part.name,
            copied: 0,
            skipped: 0,
        };
        progress(part.name, 0, total);
        let mut done = 0;
        for chunk in part.rows.chunks(CHUNK) {
            let tx = client.transaction().await.map_err(|e| pg.error(e))?;
            let stmt = tx.prepare_cached(part.sql).await.map_err(|e| pg.error(e))?;
            for row in chunk {
                let params: Vec<&(dyn ToSql + Sync)> = row
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                match tx.execute(&stmt, &params).await.map_err(|e| pg.error(e))? {
                    0 => copied.skipped += 1,
                    _ => copied.copied += 1,
                }
            }
            tx.commit().await.map_err(|e| pg.error(e))?;
            done += chunk.len() as u64;
            progress(part.name, done, total);
        }
        report.push(copied);
    }
    Ok(report)
}

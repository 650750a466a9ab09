//! `plan`: whom a workflow would touch if it were enabled now, and with which writes.
//!
//! The begin block's `when:`/`rules:` (and `exclude:`) are evaluated against **every current
//! record** of its collection, as if the workflow had just been enabled: a record matches when its
//! current fields satisfy the rule, whatever its history (a record that already matched before,
//! and so would not start a run on its next update, is listed too). Each matching record is then
//! dry-run ([`RunMode::DryRun`], not recorded in history): reads are sent, writes are rendered and
//! never sent. The plan counts the matches and the writes per preset action (with its method,
//! vendor and whether it is destructive) and keeps one row per person with the writes their run
//! would send (the rendered requests, redacted, for `--verbose`).
//!
//! With `offline`, nothing is sent at all: each dry run's reads are answered from the latest
//! recorded live run of the workflow for that person (a person without one gets a failed dry run
//! saying there is no recorded answer), as `replay --offline` answers them.
//!
//! Dry runs go [`CONCURRENCY`] at a time; every vendor read still goes through the credential's
//! client, so its rate budget (`rate_limit_per_minute`, the preset's `rate_limit`) and
//! `max_connections` bound what reaches the vendor.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::exec::{Engine, ExecError, Prepared, Recording, RunRequest};
use crate::records::{Fields, Subject as RecordSubject};
use crate::store::api::ReadHistory;
use crate::store::history::{RunFilter, RunMode, RunStatus, StepStatus, Subject};
use crate::trigger::{Triggers, WorkflowName};

/// Dry runs at once.
pub const CONCURRENCY: usize = 32;

/// The plan of one workflow.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Plan {
    pub workflow: String,
    pub collection: String,
    /// Records in the collection.
    pub records: usize,
    /// Records whose current fields satisfy the begin block's rule (and are not excluded).
    pub matching: usize,
    /// Records the rule matches that `exclude:` leaves out.
    pub excluded: usize,
    /// Writes the runs would send, per preset action, most first.
    pub writes: Vec<WriteCount>,
    /// Destructive writes among them.
    pub destructive: usize,
    /// How the dry runs ended, per status.
    pub outcomes: BTreeMap<String, usize>,
    /// One row per matching record, in key order.
    pub people: Vec<PlanRow>,
}

/// Writes of one preset action.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct WriteCount {
    /// `calendly.remove_user_membership`.
    pub preset: String,
    pub vendor: String,
    pub method: String,
    pub destructive: bool,
    pub count: usize,
}

/// What one matching record's run would do.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlanRow {
    pub subject: String,
    /// The dry run's status (`succeeded`, `failed`, …).
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub writes: Vec<PlannedWrite>,
}

/// One write a run would send.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PlannedWrite {
    pub block: String,
    pub preset: String,
    pub method: String,
    pub destructive: bool,
    /// The rendered request (redacted).
    pub request: Value,
}

/// Why a workflow cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("workflow `{workflow}` does not start from records (its begin block has no `records:`), so there is nothing to plan over; `blockyard run --dry-run` shows one run")]
    NoCollection { workflow: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Plans `prepared` over every current record of its collection (see the module docs); `offline`:
/// each dry run's reads are answered from the latest recorded live run of the workflow for that
/// person, and nothing at all is sent.
pub async fn plan(
    engine: &Engine,
    prepared: &Arc<Prepared>,
    offline: bool,
) -> Result<Plan, PlanError> {
    let workflow = &prepared.workflow;
    let Some(collection) = workflow.trigger.records else {
        return Err(PlanError::NoCollection {
            workflow: workflow.name.clone(),
        });
    };
    let global: Fields = engine.config_vars().clone();
    let triggers = Triggers::new([workflow.clone()], &global);
    let name = WorkflowName::new(&workflow.name);
    let now = Utc::now();
    let mut records = 0;
    let mut excluded = 0;
    let mut matching: Vec<(String, Fields)> = Vec::new();
    let scan = engine
        .records()
        .scan(collection)
        .await
        .map_err(ExecError::from)?;
    for entry in scan {
        let (key, fields) = entry.map_err(ExecError::from)?;
        records += 1;
        let matched = triggers
            .verdict(&name, &fields, now)
            .is_some_and(|v| v.matched);
        if !matched {
            continue;
        }
        let subject = RecordSubject::new(collection, key.clone());
        if triggers.exclusion(&name, &subject, &fields).is_some() {
            excluded += 1;
            continue;
        }
        matching.push((key.to_string(), fields));
    }
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (key, fields)) in matching.iter().enumerate() {
        let engine = engine.clone();
        let prepared = prepared.clone();
        let permits = permits.clone();
        let subject = Subject {
            collection: collection.name().to_owned(),
            key: key.clone(),
            record: Value::Object(fields.clone()),
        };
        let recording = if offline {
            Some(latest_recording(&engine, &workflow.name, key).await?)
        } else {
            None
        };
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let request = RunRequest {
                mode: RunMode::DryRun,
                persist: false,
                recording,
                ..RunRequest::manual(Some(subject))
            };
            (i, engine.run(&prepared, request).await)
        });
    }
    let mut rows: Vec<Option<PlanRow>> = vec![None; matching.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, outcome) = joined.map_err(|err| ExecError::Task {
            message: err.to_string(),
        })?;
        let outcome = outcome?;
        let writes = outcome
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Planned)
            .map(|s| {
                let node = prepared.node(&s.block);
                PlannedWrite {
                    block: s.block.clone(),
                    preset: s.preset.clone().unwrap_or_default(),
                    method: s
                        .request
                        .as_ref()
                        .and_then(|r| r["method"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    destructive: node.is_some_and(|n| prepared.is_destructive(n)),
                    request: s.request.clone().unwrap_or(Value::Null),
                }
            })
            .collect();
        rows[i] = Some(PlanRow {
            subject: matching[i].0.clone(),
            status: outcome.run.status,
            error: outcome.run.error.clone(),
            writes,
        });
    }
    let people: Vec<PlanRow> = rows.into_iter().flatten().collect();
    let mut counts: BTreeMap<(String, String, bool), usize> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let mut destructive = 0;
    for row in &people {
        *outcomes.entry(row.status.name().to_owned()).or_insert(0) += 1;
        for write in &row.writes {
            *counts
                .entry((
                    write.preset.clone(),
                    write.method.clone(),
                    write.destructive,
                ))
                .or_insert(0) += 1;
            destructive += usize::from(write.destructive);
        }
    }
    let mut writes: Vec<WriteCount> = counts
        .into_iter()
        .map(|((preset, method, destructive), count)| WriteCount {
            vendor: preset.split('.').next().unwrap_or_default().to_owned(),
            preset,
            method,
            destructive,
            count,
        })
        .collect();
    writes.sort_by(|a, b| b.count.cmp(&a.count).then(a.preset.cmp(&b.preset)));
    Ok(Plan {
        workflow: workflow.name.clone(),
        collection: collection.name().to_owned(),
        records,
        matching: people.len(),
        excluded,
        writes,
        destructive,
        outcomes,
        people,
    })
}

/// The steps of the latest live run of `workflow` for `key` that still has them (not pruned), as
/// the recording `plan --offline` answers reads from; an empty one (every read then fails with
/// "no recorded answer") when there is none.
async fn latest_recording(
    engine: &Engine,
    workflow: &str,
    key: &str,
) -> Result<Recording, ExecError> {
    let history = engine.history();
    let runs = history
        .list(&RunFilter {
            workflow: Some(workflow.to_owned()),
            subject: Some(key.to_owned()),
            ..RunFilter::default()
        })
        .await?;
    for run in runs {
        if run.mode == RunMode::Live
            && !run.pruned
            && run.subject.as_ref().is_some_and(|s| s.key == key)
        {
            let steps = history.steps(run.id).await?;
            return Ok(Recording::new(&run, steps, None));
        }
    }
    Ok(Recording {
        run: crate::store::history::RunId::new(),
        started_at: Utc::now(),
        steps: Default::default(),
        from: None,
    })
}

/// How many current records of its collection `prepared`'s trigger matches now (for the load-time
/// warning): `(matching, records)`, or `None` without a collection.
pub fn matching_share(
    engine: &Engine,
    prepared: &Prepared,
) -> Result<Option<(usize, usize)>, ExecError> {
    let workflow = &prepared.workflow;
    let Some(collection) = workflow.trigger.records else {
        return Ok(None);
    };
    let triggers = Triggers::new([workflow.clone()], &Map::clone(engine.config_vars()));
    let name = WorkflowName::new(&workflow.name);
    let now = Utc::now();
    let (mut matched, mut records) = (0, 0);
    // Synchronous (a load-time check): PostgreSQL's answer is waited for on this thread.
    let store = engine.records();
    for entry in store.wait(store.scan(collection))?? {
        let (_, fields) = entry?;
        records += 1;
        if triggers
            .verdict(&name, &fields, now)
            .is_some_and(|v| v.matched)
        {
            matched += 1;
        }
    }
    Ok(Some((matched, records)))
}

/// The share of a collection above which loading a workflow warns (`match_warning:` in the
/// config), in percent.
pub const DEFAULT_MATCH_WARNING: f64 = 50.0;

/// The load-time warning for `prepared` when its trigger matches more than `share` percent of
/// the current records of its collection: "workflow `x` would start for 4,812 of 5,000 people
/// now …". `None` under the share, or without a collection or records.
pub fn load_warning(
    engine: &Engine,
    prepared: &Prepared,
    share: f64,
) -> Result<Option<String>, ExecError> {
    let Some((matched, records)) = matching_share(engine, prepared)? else {
        return Ok(None);
    };
    if records == 0 || (matched as f64) * 100.0 <= share * (records as f64) {
        return Ok(None);
    }
    let collection = prepared
        .workflow
        .trigger
        .records
        .map_or("records", |c| c.name());
    Ok(Some(format!(
        "workflow `{}` would start for {} of {} {collection} now (more than the {share}% `match_warning`); check its begin rule and the records: `blockyard plan {}` shows whom and which writes",
        prepared.workflow.name,
        thousands(matched),
        thousands(records),
        prepared.workflow.file.display(),
    )))
}

/// `4812` as `4,812`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::thousands(4812), "4,812");
        assert_eq!(super::thousands(5000), "5,000");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}

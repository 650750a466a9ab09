//! Ingest: `collect:` upserts every listed item into a record collection and reports the four
//! lists an identity directory shows on import (new, updated, activated, deactivated).
//!
//! Each item (every page's, see [`crate::http::Response::items`]) is rendered through the block's
//! `fields` (templates over `item`, `vars` and `run`); its key is the rendered sync `key` field,
//! made into a [`RecordKey`] by the collection's [`KeyRule`] (people by lowercased email, SaaS users
//! by lowercased `app/email`). Against the stored record, an item is:
//!
//! - **new** when there is no record (created, unless `mode: update_only`);
//! - **activated** when the record's `status` is `deactivated` or `inactive` and the item's is
//!   `active` (or the mapping sets no status: then `status: active` is written);
//! - **deactivated** when the record is active and the item's status is `inactive`/`deactivated`;
//! - **updated** when any mapped field differs; otherwise unchanged and not listed.
//!
//! With `missing: deactivate`, every record in `scope` (all `scope` fields equal) that the vendor
//! did not list and is not already deactivated gets `status: deactivated` (listed as deactivated).
//! `create_only` leaves existing records alone. Writes go through [`RecordStore::write`] with the
//! engine's triggers, in batches, merging fields (saved fields survive a re-import), off the async
//! worker (they evaluate the triggers' rules). In a dry run the lists are computed and nothing is
//! written.

use std::collections::HashSet;

use chrono::Utc;
use handlebars::Context;
use serde_json::{json, Map, Value};

use super::{Engine, ExecError};
use crate::compile::{Collect, ImportMode, Missing};
use crate::records::{Change, Fields, KeyRule, RecordKey, Subject, Write, WriteMode};
use crate::store::any::AnyRecords;
use crate::store::api::{ReadRecords, WriteRecords};
use crate::store::StoreError;

/// Records per write transaction.
const BATCH: usize = 500;

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub(crate) struct Summary {
    new: Vec<String>,
    updated: Vec<String>,
    activated: Vec<String>,
    deactivated: Vec<String>,
    /// Items that could not be imported, with the reason.
    errors: Vec<String>,
}

impl Summary {
    /// `{new: N, updated: N, activated: N, deactivated: N, lists: {...}}`, the block's outputs.
    pub(crate) fn outputs(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("new".to_owned(), json!(self.new.len()));
        out.insert("updated".to_owned(), json!(self.updated.len()));
        out.insert("activated".to_owned(), json!(self.activated.len()));
        out.insert("deactivated".to_owned(), json!(self.deactivated.len()));
        out.insert(
            "lists".to_owned(),
            json!({
                "new": self.new,
                "updated": self.updated,
                "activated": self.activated,
                "deactivated": self.deactivated,
            }),
        );
        if !self.errors.is_empty() {
            out.insert("errors".to_owned(), json!(self.errors));
        }
        out
    }
}

fn status_of(fields: &Fields) -> Option<&str> {
    fields.get("status").and_then(Value::as_str)
}

fn is_inactive(status: Option<&str>) -> bool {
    matches!(status, Some("deactivated" | "inactive"))
}

/// Imports `items`; writes only when `write` is true.
pub(crate) fn import(
    engine: &Engine,
    collect: &Collect,
    items: &[Value],
    context: &Value,
    write: bool,
) -> Result<Summary, ExecError> {
    let templates = &engine.inner.templates;
    let records = engine.records();
    // Synchronous (the walk renders under `as_of`): sled answers at once; PostgreSQL's answers
    // are waited for on this thread (`AnyStore::wait`).
    let store = &engine.inner.store;
    let rule = KeyRule::with_field(collect.into, collect.key.clone());
    let mut base = Map::new();
    base.insert("vars".to_owned(), context["vars"].clone());
    base.insert("run".to_owned(), context["run"].clone());
    let mut summary = Summary::default();
    let mut writes: Vec<Write> = Vec::new();
    let mut listed: HashSet<RecordKey> = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        base.insert("item".to_owned(), item.clone());
        let hb = Context::from(Value::Object(base.clone()));
        let mut fields = Fields::with_capacity(collect.fields.len());
        let mut failed = None;
        for (name, template) in &collect.fields {
            match templates.render_json(template, &hb) {
                Ok(value) => {
                    fields.insert(name.clone(), value);
                }
                Err(err) => {
                    failed = Some(format!("item {index}: field `{name}`: {err}"));
                    break;
                }
            }
        }
        if let Some(message) = failed {
            summary.errors.push(message);
            continue;
        }
        let key = match rule.key(&fields) {
            Ok(key) => key,
            Err(err) => {
                summary.errors.push(format!("item {index}: {err}"));
                continue;
            }
        };
        // The stored key field is normalized like the key (a lowercased email).
        if let Some(Value::String(text)) = fields.get_mut(&collect.key) {
            *text = text.trim().to_lowercase();
        }
        if !listed.insert(key.clone()) {
            continue; // listed twice: the first wins
        }
        let subject = Subject::new(collect.into, key.clone());
        let old = store.wait(ReadRecords::get(records, &subject))??;
        let (list, fields) = match &old {
            None if collect.mode == ImportMode::UpdateOnly => continue,
            None => (&mut summary.new, fields),
            Some(_) if collect.mode == ImportMode::CreateOnly => continue,
            Some(old) => {
                let mut fields = fields;
                let was_inactive = is_inactive(status_of(old));
                let now_inactive = is_inactive(status_of(&fields));
                if was_inactive && !now_inactive && !fields.contains_key("status") {
                    fields.insert("status".to_owned(), json!("active"));
                }
                if fields.iter().all(|(k, v)| old.get(k) == Some(v)) {
                    continue;
                }
                let list = if was_inactive && !now_inactive {
                    &mut summary.activated
                } else if !was_inactive && now_inactive {
                    &mut summary.deactivated
                } else {
                    &mut summary.updated
                };
                (list, fields)
            }
        };
        list.push(key.to_string());
        writes.push(upsert(subject, fields));
    }
    if collect.missing == Missing::Deactivate {
        let listed_now: Box<dyn Iterator<Item = Result<(RecordKey, Fields), StoreError>>> =
            match records {
                AnyRecords::Sled(sled) => Box::new(sled.list(collect.into)),
                records => Box::new(
                    store
                        .wait(ReadRecords::list(records, collect.into))??
                        .into_iter()
                        .map(Ok),
                ),
            };
        for entry in listed_now {
            let (key, fields) = entry?;
            let in_scope = collect
                .scope
                .iter()
                .all(|(field, value)| fields.get(field) == Some(value));
            if !in_scope || listed.contains(&key) || status_of(&fields) == Some("deactivated") {
                continue;
            }
            summary.deactivated.push(key.to_string());
            let mut change = Fields::new();
            change.insert("status".to_owned(), json!("deactivated"));
            writes.push(upsert(Subject::new(collect.into, key), change));
        }
    }
    if write {
        let triggers = engine.triggers();
        match records {
            AnyRecords::Sled(records) => off_worker(|| {
                writes
                    .chunks(BATCH)
                    .try_for_each(|batch| records.write(batch, &triggers, Utc::now()).map(drop))
            })?,
            records => {
                for batch in writes.chunks(BATCH) {
                    let write = WriteRecords::write(
                        records,
                        batch.to_vec(),
                        triggers.clone(),
                        Utc::now(),
                        None,
                    );
                    store.wait(write)??;
                }
            }
        }
    }
    Ok(summary)
}

/// Runs `f`, which evaluates rules (CPU work up to their time limits), without holding an async
/// worker: on a multi-threaded runtime's worker the worker's other tasks move to another thread
/// first (`block_in_place`); elsewhere (a blocking thread, a current-thread runtime) it just runs.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn upsert(subject: Subject, fields: Fields) -> Write {
    Write {
        subject,
        change: Change::Upsert {
            fields,
            mode: WriteMode::CreateUpdate,
        },
    }
}

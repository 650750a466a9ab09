//! Importing records from CSV, JSON (an array of objects) or JSONL (one object per line).
//!
//! The file is streamed: rows are parsed one at a time and written in batches of [`BATCH`] rows,
//! each batch one store transaction with the run requests it triggers (see
//! [`crate::store::records`]); nothing is fsynced per row, and the caller flushes once at the end.
//! A row that cannot be used (no key, a CSV row with the wrong number of fields, a JSONL line that
//! is not an object) is counted as rejected with its line and reason and skipped; the rest of the
//! import goes on. A JSON array that stops being valid JSON cannot be read past, so the rows before
//! it are imported and the error is the last rejection.
//!
//! CSV cells are text; an empty cell is the empty string. `--dry-run` reads the store and reports
//! what would happen, writing nothing.
//!
//! [`import_to`] reads a file the same way but hands each batch to a [`Sink`] instead of a store:
//! `blockyard records import` sends them to a running `serve` that holds the data dir.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;

use super::{
    apply, json_type, Change, Collection, Fields, KeyError, KeyRule, Outcome, RecordKey,
    RecordStore, Subject, Write, WriteMode,
};
use crate::store::queue::QueueId;
use crate::store::records::Evaluate;
pub use crate::store::records::Written;
use crate::store::StoreError;

/// Rows per store transaction.
pub const BATCH: usize = 500;
/// Rejections kept with their reason (all are counted).
pub const MAX_REJECTIONS_KEPT: usize = 1000;
/// Queued run requests kept by id (all are counted).
pub const MAX_QUEUED_KEPT: usize = 1000;

/// An import file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
    Jsonl,
}

impl Format {
    /// The format a file's extension names (`.csv`, `.json`, `.jsonl`/`.ndjson`).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// Where a row is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// A line (CSV, JSONL, or a JSON syntax error).
    Line(u64),
    /// The n-th element (from 1) of a JSON array.
    Item(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Item(n) => write!(f, "item {n}"),
        }
    }
}

/// Why a row was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("expected {expected} fields, found {found}")]
    FieldCount { expected: u64, found: u64 },
    #[error("not valid UTF-8")]
    Utf8,
    #[error("expected an object, found {found}")]
    NotObject { found: &'static str },
    #[error("invalid JSON: {message}")]
    Json { message: String },
    #[error("invalid JSON: {message}; the rest of the file was not read")]
    JsonStopped { message: String },
}

/// A rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub at: Location,
    pub reason: RowError,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// `update_only` rows whose record does not exist.
    pub skipped: u64,
    pub rejected: u64,
    /// The first [`MAX_REJECTIONS_KEPT`] rejections.
    pub rejections: Vec<Rejection>,
    /// Run requests enqueued (in a dry run: that would be).
    pub queued: u64,
    /// The first [`MAX_QUEUED_KEPT`] of them (none in a dry run), oldest first.
    pub queued_ids: Vec<QueueId>,
    pub dry_run: bool,
}

impl Summary {
    /// `2 created, 1 updated, 0 unchanged, 1 rejected` (and `, N skipped` when any were).
    pub fn counts(&self) -> String {
        let mut text = format!(
            "{} created, {} updated, {} unchanged, {} rejected",
            self.created, self.updated, self.unchanged, self.rejected
        );
        if self.skipped > 0 {
            text.push_str(&format!(
                ", {} skipped (not found, `update_only`)",
                self.skipped
            ));
        }
        text
    }
}

/// An import that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the import file: {reason}")]
    Read { reason: String },
    /// A [`Sink`] could not write a batch (its message says where and why).
    #[error("{message}")]
    Sink { message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub collection: Collection,
    pub key: KeyRule,
    pub mode: WriteMode,
    pub format: Format,
    pub dry_run: bool,
}

/// Where an import's batches go when not into a store of this process.
pub trait Sink {
    /// Writes one batch (one transaction): each write's outcome and the run requests it queued.
    fn write(&mut self, batch: &[Write]) -> Result<Vec<Written>, ImportError>;
}

/// Where the batches go.
enum Target<'a> {
    Store {
        store: &'a RecordStore,
        triggers: &'a dyn Evaluate,
        now: DateTime<Utc>,
    },
    Sink(&'a mut dyn Sink),
}

/// Imports `input` into `store`, telling `progress` how many bytes have been read after each batch.
pub fn import(
    input: impl Read,
    options: &ImportOptions,
    store: &RecordStore,
    triggers: &dyn Evaluate,
    now: DateTime<Utc>,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, ImportError> {
    run(
        input,
        options,
        Target::Store {
            store,
            triggers,
            now,
        },
        progress,
    )
}

/// Imports `input` through `sink`, as [`import`] does into a store; a dry run needs the store
/// (`options.dry_run` is refused).
pub fn import_to(
    input: impl Read,
    options: &ImportOptions,
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, ImportError> {
    if options.dry_run {
        return Err(ImportError::Sink {
            message: "a dry run reads the store; it cannot go through a sink".to_owned(),
        });
    }
    run(input, options, Target::Sink(sink), progress)
}

fn run<'a>(
    input: impl Read,
    options: &'a ImportOptions,
    target: Target<'a>,
    progress: &'a mut dyn FnMut(u64),
) -> Result<Summary, ImportError> {
    let read = Rc::new(Cell::new(0));
    let input = BufReader::with_capacity(
        64 * 1024,
        Counting {
            inner: input,
            read: read.clone(),
        },
    );
    let mut importer = Importer {
        options,
        target,
        batch: Vec::with_capacity(BATCH),
        overlay: HashMap::new(),
        summary: Summary {
            dry_run: options.dry_run,
            ..Summary::default()
        },
        read,
        progress,
    };
    match options.format {
        Format::Csv => importer.csv(input)?,
        Format::Jsonl => importer.jsonl(input)?,
        Format::Json => importer.json(input)?,
    }
    importer.flush()?;
    Ok(importer.summary)
}

struct Counting<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

struct Importer<'a> {
    options: &'a ImportOptions,
    target: Target<'a>,
    batch: Vec<Write>,
    /// In a dry run, the records as the import would have left them.
    overlay: HashMap<RecordKey, Option<Fields>>,
    summary: Summary,
    read: Rc<Cell<u64>>,
    progress: &'a mut dyn FnMut(u64),
}

fn read_error(err: impl fmt::Display) -> ImportError {
    ImportError::Read {
        reason: err.to_string().to_lowercase(),
    }
}

impl Importer<'_> {
    fn reject(&mut self, at: Location, reason: RowError) {
        self.summary.rejected += 1;
        if self.summary.rejections.len() < MAX_REJECTIONS_KEPT {
            self.summary.rejections.push(Rejection { at, reason });
        }
    }

    fn row(&mut self, at: Location, fields: Fields) -> Result<(), ImportError> {
        match self.options.key.key(&fields) {
            Err(err) => self.reject(at, err.into()),
            Ok(key) => {
                self.batch.push(Write {
                    subject: Subject::new(self.options.collection, key),
                    change: Change::Upsert {
                        fields,
                        mode: self.options.mode,
                    },
                });
                if self.batch.len() >= BATCH {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.summary.created += 1,
            Outcome::Updated => self.summary.updated += 1,
            Outcome::Unchanged => self.summary.unchanged += 1,
            Outcome::Skipped => self.summary.skipped += 1,
            Outcome::Deleted | Outcome::NotFound => {}
        }
    }

    fn flush(&mut self) -> Result<(), ImportError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let dry = match &self.target {
            Target::Store {
                store,
                triggers,
                now,
            } if self.options.dry_run => Some((*store, *triggers, *now)),
            _ => None,
        };
        if let Some((store, triggers, now)) = dry {
            for write in &batch {
                let old = match self.overlay.get(&write.subject.key) {
                    Some(known) => known.clone(),
                    None => store.get(&write.subject)?,
                };
                let (new, outcome) = apply(old.as_ref(), &write.change);
                if let Some(event) = outcome.event() {
                    let decisions =
                        triggers.consider(&write.subject, event, old.as_ref(), new.as_ref(), now);
                    self.summary.queued +=
                        decisions.iter().filter(|d| d.request.is_some()).count() as u64;
                }
                self.overlay.insert(write.subject.key.clone(), new);
                self.count(outcome);
            }
        } else {
            let written = match &mut self.target {
                Target::Store {
                    store,
                    triggers,
                    now,
                } => store.write(&batch, *triggers, *now)?,
                Target::Sink(sink) => sink.write(&batch)?,
            };
            for written in written {
                self.summary.queued += written.queued.len() as u64;
                let room = MAX_QUEUED_KEPT.saturating_sub(self.summary.queued_ids.len());
                self.summary
                    .queued_ids
                    .extend(written.queued.iter().take(room));
                self.count(written.outcome);
            }
            self.batch = batch;
            self.batch.clear();
        }
        (self.progress)(self.read.get());
        Ok(())
    }

    fn csv(&mut self, input: impl Read) -> Result<(), ImportError> {
        let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(input);
        let headers: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(|h| h.trim().to_owned()).collect(),
            Err(err) => return Err(read_error(err)),
        };
        let mut record = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    let line = record.position().map_or(0, |p| p.line());
                    let mut fields = Fields::with_capacity(headers.len());
                    for (name, value) in headers.iter().zip(record.iter()) {
                        if !name.is_empty() {
                            fields.insert(name.clone(), Value::String(value.to_owned()));
                        }
                    }
                    self.row(Location::Line(line), fields)?;
                }
                Err(err) => match err.kind() {
                    csv::ErrorKind::UnequalLengths {
                        pos,
                        expected_len,
                        len,
                    } => {
                        let line = pos.as_ref().map_or(0, |p| p.line());
                        self.reject(
                            Location::Line(line),
                            RowError::FieldCount {
                                expected: *expected_len,
                                found: *len,
                            },
                        );
                    }
                    csv::ErrorKind::Utf8 { pos, .. } => {
                        let line = pos.as_ref().map_or(0, |p| p.line());
                        self.reject(Location::Line(line), RowError::Utf8);
                    }
                    _ => return Err(read_error(err)),
                },
            }
        }
    }

    fn jsonl(&mut self, mut input: impl BufRead) -> Result<(), ImportError> {
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line).map_err(read_error)? == 0 {
                return Ok(());
            }
            number += 1;
            let at = Location::Line(number);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(fields)) => self.row(at, fields)?,
                Ok(other) => self.reject(
                    at,
                    RowError::NotObject {
                        found: json_type(&other),
                    },
                ),
                Err(err) => self.reject(
                    at,
                    RowError::Json {
                        message: json_message(&err),
                    },
                ),
            }
        }
    }

    fn json(&mut self, input: impl Read) -> Result<(), ImportError> {
        let mut de = serde_json::Deserializer::from_reader(input);
        let mut failure = None;
        let result = Items {
            importer: self,
            failure: &mut failure,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if let Some(err) = failure {
            return Err(err);
        }
        if let Err(err) = result {
            if err.is_io() {
                return Err(read_error(err));
            }
            self.reject(
                Location::Line(err.line() as u64),
                RowError::JsonStopped {
                    message: json_message(&err),
                },
            );
        }
        Ok(())
    }
}

/// serde_json's message without its ` at line L column C` suffix (the location is reported apart).
fn json_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Streams a JSON array's elements into the importer, one at a time.
struct Items<'a, 'b> {
    importer: &'a mut Importer<'b>,
    failure: &'a mut Option<ImportError>,
}

impl<'de> DeserializeSeed<'de> for Items<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Items<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut n = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            n += 1;
            let at = Location::Item(n);
            match value {
                Value::Object(fields) => {
                    if let Err(err) = self.importer.row(at, fields) {
                        *self.failure = Some(err);
                        return Err(de::Error::custom("the import stopped"));
                    }
                }
                other => self.importer.reject(
                    at,
                    RowError::NotObject {
                        found: json_type(&other),
                    },
                ),
            }
        }
        Ok(())
    }
}

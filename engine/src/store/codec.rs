//! The binary encoding of the history's run and step records (the `runs` and `steps` trees).
//!
//! An entry is one version byte ([`VERSION`]) followed by MessagePack (rmp-serde) of a fixed
//! array of the record's fields, in the order of the wire structs below: no field names, absent
//! values as one `nil` byte, timestamps as `[seconds, nanoseconds]` instead of RFC 3339 text,
//! and nothing the entry's key already says (a run record's id is its `runs` key; a step's run
//! is the first 16 bytes of its `steps` key). Enums keep their names (`succeeded`, `manual`),
//! the same words as the JSON, so reordering an enum cannot change what an entry means.
//! Vendor data (`vars`, the subject's fields, a step's inputs, request, response and outputs)
//! stays JSON values, in MessagePack. An entry of 128 bytes or more is LZ4-compressed (version
//! byte [`COMPRESSED`], then the MessagePack's length) when that makes it shorter: vendor
//! bodies repeat their keys and URL prefixes, and sled writes every value more than once (its
//! log, then each rewrite of the leaf holding it), so each byte saved here is saved again there.
//! A begin → GET → end run's data dir growth went from 3.9 KiB to 1.7 KiB, one with a 10 KiB
//! body from 16.7 KiB to 6.5 KiB (`BENCHMARKS.md`). Entries decode to the very same structs, so
//! `history show --json` prints the same text.
//!
//! Entries written before this encoding are JSON: a run record or a single step is an object
//! (first byte `{`), several steps written together are an array (`[`). [`decode_run`] and
//! [`decode_steps`] read both, so an existing data dir needs no migration; a rewrite (a run's
//! next record, `history prune`) writes the binary encoding. The version bytes can never be `{`
//! or `[`, and a later layout takes the next free one. A release before this encoding reads a
//! binary entry as a corrupt one (an error naming the entry), so a data dir written by this
//! release cannot go back to one.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::history::{
    RunId, RunMode, RunRecord, RunStatus, RunTrigger, StepRecord, StepResponse, StepRetry,
    StepStatus, Subject, TriggerKind,
};

/// The first byte of an entry in this encoding.
pub(crate) const VERSION: u8 = 1;

/// A timestamp: seconds since the epoch and nanoseconds (chrono's own parts, so exact).
#[derive(Serialize, Deserialize)]
struct Ts(i64, u32);

impl Ts {
    fn of(at: &DateTime<Utc>) -> Ts {
        Ts(at.timestamp(), at.timestamp_subsec_nanos())
    }

    fn at(self) -> Result<DateTime<Utc>, String> {
        DateTime::from_timestamp(self.0, self.1)
            .ok_or_else(|| format!("timestamp [{}, {}] is out of range", self.0, self.1))
    }
}

fn option_at(ts: Option<Ts>) -> Result<Option<DateTime<Utc>>, String> {
    ts.map(Ts::at).transpose()
}

/// A [`RunRecord`] without its id (the key).
#[derive(Serialize, Deserialize)]
struct RunWire<'a> {
    workflow: Cow<'a, str>,
    file: Cow<'a, str>,
    snapshot: Cow<'a, str>,
    trigger: TriggerKind,
    trigger_detail: Option<Cow<'a, str>>,
    /// `[collection, key, record]`.
    subject: Option<(Cow<'a, str>, Cow<'a, str>, Cow<'a, Value>)>,
    vars: Cow<'a, Map<String, Value>>,
    status: RunStatus,
    mode: RunMode,
    created_at: Ts,
    started_at: Option<Ts>,
    finished_at: Option<Ts>,
    replay_of: Option<RunId>,
    from_block: Option<Cow<'a, str>>,
    error: Option<Cow<'a, str>>,
    wake_at: Option<Ts>,
    pruned: bool,
}

/// A [`StepResponse`]: `[status, headers, body, truncated]`.
type ResponseWire<'a> = (u16, Cow<'a, Map<String, Value>>, Cow<'a, Value>, bool);

/// A [`StepRecord`] without its run (the key).
#[derive(Serialize, Deserialize)]
struct StepWire<'a> {
    seq: u32,
    block: Cow<'a, str>,
    kind: Cow<'a, str>,
    preset: Option<Cow<'a, str>>,
    write: bool,
    status: StepStatus,
    attempts: u32,
    inputs: Option<Cow<'a, Value>>,
    request: Option<Cow<'a, Value>>,
    base_url: Option<Cow<'a, str>>,
    response: Option<ResponseWire<'a>>,
    saved: Cow<'a, Map<String, Value>>,
    outputs: Cow<'a, Map<String, Value>>,
    error: Option<Cow<'a, str>>,
    note: Option<Cow<'a, str>>,
    /// `[attempt, since, next_at]`.
    retry: Option<(u32, Ts, Option<Ts>)>,
    started_at: Ts,
    finished_at: Option<Ts>,
    duration_us: u64,
    http_us: u64,
}

fn str_of(text: &Option<String>) -> Option<Cow<'_, str>> {
    text.as_deref().map(Cow::Borrowed)
}

fn owned(text: Option<Cow<'_, str>>) -> Option<String> {
    text.map(Cow::into_owned)
}

impl<'a> StepWire<'a> {
    fn of(step: &'a StepRecord) -> StepWire<'a> {
        StepWire {
            seq: step.seq,
            block: Cow::Borrowed(&step.block),
            kind: Cow::Borrowed(&step.kind),
            preset: str_of(&step.preset),
            write: step.write,
            status: step.status,
            attempts: step.attempts,
            inputs: step.inputs.as_ref().map(Cow::Borrowed),
            request: step.request.as_ref().map(Cow::Borrowed),
            base_url: str_of(&step.base_url),
            response: step.response.as_ref().map(|r| {
                (
                    r.status,
                    Cow::Borrowed(&r.headers),
                    Cow::Borrowed(&r.body),
                    r.truncated,
                )
            }),
            saved: Cow::Borrowed(&step.saved),
            outputs: Cow::Borrowed(&step.outputs),
            error: str_of(&step.error),
            note: str_of(&step.note),
            retry: step
                .retry
                .as_ref()
                .map(|r| (r.attempt, Ts::of(&r.since), r.next_at.as_ref().map(Ts::of))),
            started_at: Ts::of(&step.started_at),
            finished_at: step.finished_at.as_ref().map(Ts::of),
            duration_us: step.duration_us,
            http_us: step.http_us,
        }
    }

    fn into_step(self, run: RunId) -> Result<StepRecord, String> {
        Ok(StepRecord {
            run,
            seq: self.seq,
            block: self.block.into_owned(),
            kind: self.kind.into_owned(),
            preset: owned(self.preset),
            write: self.write,
            status: self.status,
            attempts: self.attempts,
            inputs: self.inputs.map(Cow::into_owned),
            request: self.request.map(Cow::into_owned),
            base_url: owned(self.base_url),
            response: self
                .response
                .map(|(status, headers, body, truncated)| StepResponse {
                    status,
                    headers: headers.into_owned(),
                    body: body.into_owned(),
                    truncated,
                }),
            saved: self.saved.into_owned(),
            outputs: self.outputs.into_owned(),
            error: owned(self.error),
            note: owned(self.note),
            retry: match self.retry {
                None => None,
                Some((attempt, since, next_at)) => Some(StepRetry {
                    attempt,
                    since: since.at()?,
                    next_at: option_at(next_at)?,
                }),
            },
            started_at: self.started_at.at()?,
            finished_at: option_at(self.finished_at)?,
            duration_us: self.duration_us,
            http_us: self.http_us,
        })
    }
}

/// The first byte of an entry in this encoding, LZ4-compressed: then the length of the
/// MessagePack (`u32` little-endian) and the LZ4 block of it.
pub(crate) const COMPRESSED: u8 = 2;

/// Entries shorter than this are kept as they are: LZ4 finds little to take out of them.
const COMPRESS_FROM: usize = 128;

/// The MessagePack of `value` behind its version byte, compressed when that is shorter.
fn write<T: Serialize>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.push(VERSION);
    rmp_serde::encode::write(&mut out, value).expect("history records encode");
    let plain = &out[1..];
    if plain.len() < COMPRESS_FROM {
        return out;
    }
    let mut packed = vec![0u8; 5 + lz4_flex::block::get_maximum_output_size(plain.len())];
    packed[0] = COMPRESSED;
    packed[1..5].copy_from_slice(&(plain.len() as u32).to_le_bytes());
    match lz4_flex::block::compress_into(plain, &mut packed[5..]) {
        Ok(len) if 5 + len < out.len() => {
            packed.truncate(5 + len);
            packed
        }
        _ => out,
    }
}

/// The MessagePack of a binary entry (its bytes after the version byte), decompressed.
fn plain(version: u8, body: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    if version == VERSION {
        return Ok(Cow::Borrowed(body));
    }
    let (len, block) = body
        .split_first_chunk::<4>()
        .ok_or("the compressed entry is cut short")?;
    let len = u32::from_le_bytes(*len) as usize;
    // LZ4 expands at most 255 times: a larger length is damage, not data (and no allocation).
    if len > block.len().saturating_mul(255) {
        return Err(format!(
            "the compressed entry says {len} bytes, more than its {} bytes can hold",
            block.len()
        ));
    }
    lz4_flex::block::decompress(block, len)
        .map(Cow::Owned)
        .map_err(|err| format!("the compressed entry is damaged: {err}"))
}

/// A run record's `runs` entry.
pub(crate) fn encode_run(run: &RunRecord) -> Vec<u8> {
    let wire = RunWire {
        workflow: Cow::Borrowed(&run.workflow),
        file: Cow::Borrowed(&run.file),
        snapshot: Cow::Borrowed(&run.snapshot),
        trigger: run.trigger.kind,
        trigger_detail: str_of(&run.trigger.detail),
        subject: run.subject.as_ref().map(|s| {
            (
                Cow::Borrowed(s.collection.as_str()),
                Cow::Borrowed(s.key.as_str()),
                Cow::Borrowed(&s.record),
            )
        }),
        vars: Cow::Borrowed(&run.vars),
        status: run.status,
        mode: run.mode,
        created_at: Ts::of(&run.created_at),
        started_at: run.started_at.as_ref().map(Ts::of),
        finished_at: run.finished_at.as_ref().map(Ts::of),
        replay_of: run.replay_of,
        from_block: str_of(&run.from_block),
        error: str_of(&run.error),
        wake_at: run.wake_at.as_ref().map(Ts::of),
        pruned: run.pruned,
    };
    write(&wire, 256)
}

/// Run `id`'s record from its `runs` entry, in either encoding.
pub(crate) fn decode_run(id: RunId, value: &[u8]) -> Result<RunRecord, String> {
    match value.split_first() {
        Some((b'{', _)) => serde_json::from_slice(value).map_err(|err| err.to_string()),
        Some((&version @ (VERSION | COMPRESSED), body)) => {
            let body = plain(version, body)?;
            let wire: RunWire = rmp_serde::from_slice(&body).map_err(|err| err.to_string())?;
            Ok(RunRecord {
                id,
                workflow: wire.workflow.into_owned(),
                file: wire.file.into_owned(),
                snapshot: wire.snapshot.into_owned(),
                trigger: RunTrigger {
                    kind: wire.trigger,
                    detail: owned(wire.trigger_detail),
                },
                subject: wire.subject.map(|(collection, key, record)| Subject {
                    collection: collection.into_owned(),
                    key: key.into_owned(),
                    record: record.into_owned(),
                }),
                vars: wire.vars.into_owned(),
                status: wire.status,
                mode: wire.mode,
                created_at: wire.created_at.at()?,
                started_at: option_at(wire.started_at)?,
                finished_at: option_at(wire.finished_at)?,
                replay_of: wire.replay_of,
                from_block: owned(wire.from_block),
                error: owned(wire.error),
                wake_at: option_at(wire.wake_at)?,
                pruned: wire.pruned,
            })
        }
        _ => Err(unknown(value)),
    }
}

/// One `steps` entry holding `steps` (one or several steps of one run).
pub(crate) fn encode_steps(steps: &[&StepRecord]) -> Vec<u8> {
    let wire: Vec<StepWire> = steps.iter().map(|step| StepWire::of(step)).collect();
    write(&wire, 512 * steps.len())
}

/// The steps of run `run`'s `steps` entry, in either encoding.
pub(crate) fn decode_steps(run: RunId, value: &[u8]) -> Result<Vec<StepRecord>, String> {
    match value.split_first() {
        Some((b'[', _)) => serde_json::from_slice(value).map_err(|err| err.to_string()),
        Some((b'{', _)) => serde_json::from_slice(value)
            .map(|step| vec![step])
            .map_err(|err| err.to_string()),
        Some((&version @ (VERSION | COMPRESSED), body)) => {
            let body = plain(version, body)?;
            let wire: Vec<StepWire> =
                rmp_serde::from_slice(&body).map_err(|err| err.to_string())?;
            wire.into_iter().map(|step| step.into_step(run)).collect()
        }
        _ => Err(unknown(value)),
    }
}

fn unknown(value: &[u8]) -> String {
    match value.first() {
        None => "the entry is empty".to_owned(),
        Some(byte) => format!(
            "unknown encoding (first byte {byte:#04x}; this blockyard reads JSON and binary versions {VERSION} and {COMPRESSED}): it may have been written by a newer blockyard"
        ),
    }
}

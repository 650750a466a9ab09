//! The raw model of workflow YAML: `*Spec` types that mirror the file exactly, and loading them with
//! the position of every key kept.
//!
//! Every struct denies unknown fields, so a misspelt key is an error, never silently ignored. Values
//! that need checking against something else (preset names, block ids, cron expressions, rule
//! operators) stay strings here; [`crate::compile`] turns them into the checked model.
//!
//! Loading reports every problem it can in one pass. YAML is parsed once with `serde_yaml` for the
//! data and once with yaml-rust2 for positions ([`location::SourceMap`]); each block is then
//! deserialized on its own, with `serde_path_to_error` tracking the path of a failure, so an error
//! deep in one block points at its key and does not hide the errors of the other blocks. A block
//! with an unknown key is retried without it, so every unknown key is reported, not only the first.
//! `serde_yaml` is used only in this module and [`crate::preset`], so it can be swapped.
//! [`limits::check`] refuses a file nested too deep or whose aliases expand too far before anything
//! is built from it (the same check guards presets and `blockyard.yaml`).

use std::borrow::Borrow;
use std::fmt;
use std::path::PathBuf;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compile::{CompileError, CompileErrorKind};

mod answers;
pub mod limits;
mod load;
pub mod location;
mod targets;
mod unique;

pub use answers::{AnswerSpec, AnswerStatus, Answers};
pub(crate) use load::reword;
pub use load::{
    load, load_partial, load_str, strip_position, yaml_error_location, BrokenBlock, LoadedSpec,
};
pub use location::{Location, SourceMap, YamlPath};
pub use targets::{StringList, TargetSpec, Targets};

/// The id of a block: its key under `blocks:`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct BlockId(String);

impl BlockId {
    pub fn new(id: impl Into<String>) -> BlockId {
        BlockId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for BlockId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A workflow file: a graph of blocks from `begin` to `end`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "blockyard workflow")]
pub struct WorkflowSpec {
    /// The workflow's name, unique among the workflows a service loads.
    pub name: String,
    /// What the workflow does, for people reading `history` and `graph`.
    #[serde(default)]
    pub description: Option<String>,
    /// Variables visible to templates as `vars.NAME` (they override the config's `vars`).
    #[serde(default, deserialize_with = "unique::map")]
    pub vars: IndexMap<String, Value>,
    /// The blocks, by id. Exactly one `begin` and one `end`.
    #[serde(deserialize_with = "unique::map")]
    pub blocks: IndexMap<BlockId, BlockSpec>,
    /// An alert sent when a run ends `failed` or `needs_attention` (see [`crate::notify`]).
    #[serde(default)]
    pub notify: Option<crate::notify::NotifySpec>,
    /// The mass-change guard: past this many destructive writes in a window, runs are held
    /// (the config's `guard:` when unset).
    #[serde(default)]
    pub guard: Option<crate::compile::GuardSpec>,
    /// The IANA time zone dates are read in (a `wait` block's `until:` date) and `schedule:`
    /// ticks in when it names none of its own; UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// One block; `type` says which kind.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockSpec {
    /// Where a run starts, and what starts it.
    Begin(Box<BeginSpec>),
    /// One vendor API call through a preset.
    Api(Box<ApiSpec>),
    /// Reads a SaaS user's role and activity, and deactivates users the vendor no longer has.
    RoleRetrieval(Box<RoleRetrievalSpec>),
    /// Waits, durably, for a time or until the subject record says so.
    Wait(Box<WaitSpec>),
    /// Where a run ends.
    End(EndSpec),
}

impl BlockSpec {
    pub const TYPES: [&'static str; 5] = ["begin", "api", "role_retrieval", "wait", "end"];

    pub fn type_name(&self) -> &'static str {
        match self {
            BlockSpec::Begin(_) => "begin",
            BlockSpec::Api(_) => "api",
            BlockSpec::RoleRetrieval(_) => "role_retrieval",
            BlockSpec::Wait(_) => "wait",
            BlockSpec::End(_) => "end",
        }
    }

    /// The success edges.
    pub fn next(&self) -> &Targets {
        static NONE: Targets = Targets(Vec::new());
        match self {
            BlockSpec::Begin(b) => &b.next,
            BlockSpec::Api(b) => &b.next,
            BlockSpec::RoleRetrieval(b) => &b.next,
            BlockSpec::Wait(b) => &b.next,
            BlockSpec::End(_) => &NONE,
        }
    }

    /// The failure edges.
    pub fn on_failure(&self) -> &Targets {
        static NONE: Targets = Targets(Vec::new());
        match self {
            BlockSpec::Api(b) => &b.on_failure,
            BlockSpec::RoleRetrieval(b) => &b.on_failure,
            BlockSpec::Wait(b) => &b.on_failure,
            BlockSpec::Begin(_) | BlockSpec::End(_) => &NONE,
        }
    }
}

/// The Begin block: triggers and the first edges.
///
/// A workflow can always be run by hand. It also starts by itself when it names `records` and `on`
/// (one run per record event whose rule result turns true), or `schedule` (at each tick, one run per
/// record matching the rules, or a single run when no `records` is named).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginSpec {
    /// The record collection whose records are the runs' subjects: `people` or `saas_users`.
    #[serde(default)]
    pub records: Option<String>,
    /// Record events that start a run: `created`, `updated`, `deleted` (one or a list).
    #[serde(default)]
    pub on: Option<StringList>,
    /// A rhai expression over `record` and `vars` that must be true.
    #[serde(default)]
    pub when: Option<String>,
    /// Structured rules (Oomnitza's), all of which must hold.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Start runs on a cron schedule.
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    /// Subjects that never start a run, whatever the rules say.
    #[serde(default)]
    pub exclude: Option<ExcludeSpec>,
    /// The blocks to run first.
    #[serde(default)]
    pub next: Targets,
}

/// Exclusions (license reclamation's "excluded users"): by address, by a `vars` list, or by a
/// record field. Addresses compare case-insensitively.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExcludeSpec {
    /// Email addresses (or record keys) to leave alone.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The name of a `vars` entry holding a list of addresses to leave alone.
    #[serde(default)]
    pub var: Option<String>,
    /// A record field that, when true (or `"true"`, `"yes"`), leaves the record alone.
    #[serde(default)]
    pub field: Option<String>,
}

/// One structured rule: `{field: last_activity, op: before_days, value: 60}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The record field the rule reads.
    pub field: String,
    /// One of `equals`, `not_equals`, `contains`, `starts_with`, `ends_with`, `is_empty`,
    /// `not_empty`, `in`, `before_days`, `after_days`.
    pub op: String,
    /// The value to compare with (a list for `in`, a number of days for `before_days`/`after_days`,
    /// none for `is_empty`/`not_empty`).
    #[serde(default)]
    pub value: Option<Value>,
}

/// `schedule: {cron: "0 6 * * *", timezone: Europe/Berlin}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// 5 fields (`min hour day month weekday`), 6 with seconds first, or `@daily`, `@hourly`, ….
    pub cron: String,
    /// An IANA time zone such as `America/New_York`; UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// What to do about ticks missed while blockyard was down: `none`, or `last` (the default) to
    /// run the most recent one.
    #[serde(default)]
    pub catch_up: Option<CatchUp>,
}

/// Catch-up policy for missed schedule ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    None,
    #[default]
    Last,
}

/// An API block: one call of a preset action.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// The action to call, as `vendor.action` (`blockyard presets list` shows them).
    pub preset: String,
    /// The credential's name in `blockyard.yaml`; the vendor's name when absent.
    #[serde(default)]
    pub credential: Option<String>,
    /// The preset's inputs. An input not given here comes from the subject record's field of the
    /// same name.
    #[serde(default, deserialize_with = "unique::map")]
    pub with: IndexMap<String, Value>,
    /// Advanced mode: override parts of the preset's request.
    #[serde(default)]
    pub request: Option<RequestSpec>,
    /// Fields written onto the subject record, from `response`, `status` and `headers`.
    #[serde(default, deserialize_with = "unique::map")]
    pub save: IndexMap<String, Value>,
    /// Values later blocks read as `blocks.ID.outputs.NAME`.
    #[serde(default, deserialize_with = "unique::map")]
    pub outputs: IndexMap<String, Value>,
    /// Vendor answers that are results, not failures: statuses (`409`), `not_found` (a 404 or a
    /// find preset's empty list), or `{status, when}`. The block succeeds on them without
    /// `save:` or `outputs:` (`found: false` on not found), and its `next` edges route on them.
    #[serde(default)]
    pub answers: Answers,
    /// Retry policy for retryable failures.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// How long one attempt may take, such as `30s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Whether a person must approve this block before it runs: `required`.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// Ingest: upsert every item of every page into a record collection.
    #[serde(default)]
    pub collect: Option<CollectSpec>,
    /// The blocks to run when this one succeeds.
    #[serde(default)]
    pub next: Targets,
    /// The blocks to run when this one fails. A failure with no `on_failure` fails the run.
    #[serde(default)]
    pub on_failure: Targets,
}

/// A role retrieval block: reads a `saas_users` record's role from the vendor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRetrievalSpec {
    /// A role action, such as `calendly.user_role` or `webex.user_role`.
    pub preset: String,
    /// The credential's name in `blockyard.yaml`; the vendor's name when absent.
    #[serde(default)]
    pub credential: Option<String>,
    /// The preset's inputs (defaulting to the subject record's fields of the same name).
    #[serde(default, deserialize_with = "unique::map")]
    pub with: IndexMap<String, Value>,
    /// Mark users the vendor does not have, or has deactivated, as `deactivated` (default true).
    #[serde(default = "default_true")]
    pub deactivate_missing: bool,
    /// Fields written onto the subject record, besides `role`, `last_activity` and `status`.
    #[serde(default, deserialize_with = "unique::map")]
    pub save: IndexMap<String, Value>,
    /// Values later blocks read as `blocks.ID.outputs.NAME` (besides `found` and `role`).
    #[serde(default, deserialize_with = "unique::map")]
    pub outputs: IndexMap<String, Value>,
    /// Retry policy for retryable failures.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// How long one attempt may take, such as `30s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Whether a person must approve this block before it runs: `required`.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// The blocks to run when this one succeeds.
    #[serde(default)]
    pub next: Targets,
    /// The blocks to run when the vendor call fails (a failure never deactivates anyone).
    #[serde(default)]
    pub on_failure: Targets,
}

/// A wait block: `for: 7d`, or `until:` an instant or a date; `wake_when:` ends it early.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// How long to wait, such as `7d`, `12h`, `30m`.
    #[serde(default, rename = "for")]
    pub duration: Option<String>,
    /// A template rendering an RFC 3339 instant, or a `YYYY-MM-DD` date (its midnight in the
    /// workflow's `timezone:`).
    #[serde(default)]
    pub until: Option<String>,
    /// Ends the wait early when it holds on the subject record: a rhai condition (a string) or
    /// a list of structured rules, all of which must hold. Checked when the wait starts and on
    /// every later write of the record.
    #[serde(default)]
    pub wake_when: Option<WakeWhenSpec>,
    /// The blocks to run when the wait ends (branch on `blocks.ID.outputs.outcome`).
    #[serde(default)]
    pub next: Targets,
    /// The blocks to run when the wait cannot start (an `until` that does not render a time).
    #[serde(default)]
    pub on_failure: Targets,
}

/// `wake_when:`: a rhai condition or a list of rules.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum WakeWhenSpec {
    When(String),
    Rules(Vec<RuleSpec>),
}

impl<'de> Deserialize<'de> for WakeWhenSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WakeWhenSpec, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(when) => Ok(WakeWhenSpec::When(when)),
            rules @ Value::Array(_) => serde_json::from_value(rules)
                .map(WakeWhenSpec::Rules)
                .map_err(|err| D::Error::custom(format!("a rule of `wake_when`: {err}"))),
            _ => Err(D::Error::custom(
                "write a rhai condition (a string) or a list of rules (`{field, op, value}`)",
            )),
        }
    }
}

fn default_true() -> bool {
    true
}

/// The End block.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndSpec {}

/// `collect:`: the identity directory's import. Every item of every page becomes a record of
/// `into`, found by its `key` field; records of the same `scope` the vendor no longer lists can be
/// deactivated, and a deactivated record listed again is reactivated.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectSpec {
    /// The collection: `people` or `saas_users`.
    pub into: String,
    /// The sync key: the mapped field that identifies a record (`email`).
    pub key: String,
    /// `create_update` (the default), `create_only` or `update_only`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Record field → template over `item` (one listed user) and `vars`.
    #[serde(deserialize_with = "unique::map")]
    pub fields: IndexMap<String, Value>,
    /// What to do with records of the scope that the vendor no longer lists: `keep` (the
    /// default) or `deactivate` (sets `status: deactivated`).
    #[serde(default)]
    pub missing: Option<String>,
    /// Which existing records this import speaks for (`{app: calendly}`); all of `into` when empty.
    #[serde(default, deserialize_with = "unique::map")]
    pub scope: IndexMap<String, Value>,
}

/// `approval: required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    Required,
}

/// Advanced-mode overrides of a preset's request. Strings are templates over the block's context
/// plus the preset's resolved inputs as `inputs.*`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Replaces the preset's method: `GET`, `HEAD`, `POST`, `PUT`, `PATCH` or `DELETE`. Any
    /// method but `GET` and `HEAD` makes the block a write.
    #[serde(default)]
    pub method: Option<String>,
    /// Replaces the preset's path: a path below the credential's `base_url`, starting with `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Query parameters merged over the preset's: a value replaces or adds one, `null` removes one.
    #[serde(default, deserialize_with = "unique::map")]
    pub query: IndexMap<String, Value>,
    /// Headers merged over the preset's: a value replaces or adds one, `null` removes one.
    #[serde(default, deserialize_with = "unique::map")]
    pub headers: IndexMap<String, Option<String>>,
    /// Replaces the preset's JSON body (each string leaf is a template); `null` sends no body.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<Value>")]
    pub body: Option<Value>,
}

/// A key that is present, `null` included, as `Some` (absent stays `None` through `default`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A retry policy: `max_attempts`, `initial_delay`, `max_delay` and `max_elapsed` bound the
/// retries within one call (exponential backoff with jitter, for retryable failures only);
/// `give_up_after` bounds the durable retries of the block after that (the run waits as
/// `retrying`, across restarts).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 means no retry).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// The wait before the first retry, such as `500ms`.
    #[serde(default)]
    pub initial_delay: Option<String>,
    /// The longest wait between attempts, such as `30s`.
    #[serde(default)]
    pub max_delay: Option<String>,
    /// The longest time all attempts together may take, such as `2m`.
    #[serde(default)]
    pub max_elapsed: Option<String>,
    /// How long a block whose call keeps failing transiently (429, 5xx, 408, timeouts,
    /// connection errors) is tried again, durably, counted from its first transient failure,
    /// such as `24h` (the default); `0s` fails the block at the first one.
    #[serde(default)]
    pub give_up_after: Option<String>,
}

/// A workflow file's text and the name to show for it in errors.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Reads a file; an unreadable file is a compile error at line 1.
    pub fn read(path: impl Into<PathBuf>) -> Result<Source, CompileError> {
        let path = path.into();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Source { path, text }),
            Err(err) => Err(CompileError {
                file: path,
                location: Location::START,
                block: None,
                kind: CompileErrorKind::Io {
                    message: err.to_string().to_lowercase(),
                },
            }),
        }
    }
}

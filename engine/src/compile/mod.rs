//! Compiling a workflow: spec + presets → a checked [`Workflow`], or every error at once.
//!
//! The checked model is what the executor runs, so it cannot be invalid: block ids resolve, there is
//! exactly one `begin` and one `end`, the graph is acyclic, every block is reachable from `begin`
//! and can reach `end`, presets and their required inputs exist, templates, rhai expressions,
//! cron expressions, time zones and rule operators have been parsed, and `answers:` lists only
//! `not_found` and statuses that can be results (not a 2xx, not one blockyard retries). The graph
//! is a petgraph `DiGraph` whose nodes are [`Block`]s (closed [`BlockKind`] enum) and whose edges
//! carry their kind (success or failure) and compiled `when:` condition.
//!
//! Errors are gathered, not returned at the first one: the loader's (unknown keys, bad values), the
//! per-block checks and the graph checks all land in one list, sorted by position.

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use crate::preset::{Action, ActionKind, Method, PresetId, PresetRegistry};
use crate::rules::{Condition, Rule, RuleEngine, RuleOp};
use crate::schedule::{Schedule, ScheduleError};
use crate::spec::{
    self, AnswerStatus, Answers, ApiSpec, Approval, BeginSpec, BlockId, BlockSpec, CatchUp,
    CollectSpec, LoadedSpec, RequestSpec, RetrySpec, RoleRetrievalSpec, Source, Targets, YamlPath,
};
use crate::template::{JsonTemplate, Template, TemplateError};

mod error;
mod graph_checks;
mod guard;

pub use error::{suggest, AnswerProblem, CompileError, CompileErrorKind, JsonError};
pub use guard::{check as guard_check, Guard, GuardLimit, GuardProblem, GuardSpec};

/// A checked workflow, ready to run.
#[derive(Debug)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    pub vars: IndexMap<String, Value>,
    pub file: PathBuf,
    pub graph: DiGraph<Block, Edge>,
    pub begin: NodeIndex,
    pub end: NodeIndex,
    pub trigger: Trigger,
    /// `notify:`, its text compiled (see [`crate::notify`]).
    pub notify: Option<std::sync::Arc<crate::notify::Notify>>,
    /// The workflow's own `guard:` (the engine falls back to the config's default).
    pub guard: Option<Guard>,
    /// `timezone:`: where a `wait` block's `until:` date is read (UTC by default).
    pub timezone: chrono_tz::Tz,
}

impl Workflow {
    pub fn block(&self, id: &str) -> Option<NodeIndex> {
        self.graph
            .node_indices()
            .find(|&n| self.graph[n].id.as_str() == id)
    }
}

/// A block of the checked workflow.
#[derive(Debug)]
pub struct Block {
    pub id: BlockId,
    pub kind: BlockKind,
}

/// What a block does.
#[derive(Debug)]
pub enum BlockKind {
    Begin,
    Api(ApiCall),
    RoleRetrieval(RoleRetrieval),
    Wait(Wait),
    End,
}

impl BlockKind {
    pub fn name(&self) -> &'static str {
        match self {
            BlockKind::Begin => "begin",
            BlockKind::Api(_) => "api",
            BlockKind::RoleRetrieval(_) => "role_retrieval",
            BlockKind::Wait(_) => "wait",
            BlockKind::End => "end",
        }
    }
}

/// A checked `wait` block: how long, and what ends it early.
#[derive(Debug)]
pub struct Wait {
    pub how: WaitFor,
    /// `wake_when:`: ends the wait when it holds on the subject record.
    pub wake_when: Option<WakeWhen>,
}

/// A wait block's outputs: `outcome` (`elapsed` or `woken`) and `until` (when it was to end,
/// RFC 3339).
pub const WAIT_OUTPUTS: [&str; 2] = ["outcome", "until"];

/// How long a wait lasts.
#[derive(Debug)]
pub enum WaitFor {
    /// `for:`: from when the wait starts.
    For(Duration),
    /// `until:`: a template rendering an RFC 3339 instant or a `YYYY-MM-DD` date (its midnight
    /// in the workflow's time zone).
    Until(Template),
}

/// `wake_when:` compiled: a rhai condition, or rules that must all hold.
#[derive(Debug)]
pub enum WakeWhen {
    When(Condition),
    Rules(Vec<Rule>),
}

/// A checked preset call.
#[derive(Debug)]
pub struct ApiCall {
    pub preset: PresetId,
    pub credential: String,
    /// Inputs given in `with:` (templates over the workflow context).
    pub with: IndexMap<String, JsonTemplate>,
    pub request: Option<RequestOverride>,
    /// What the call does once `request.method` is applied: a write unless the method is `GET`
    /// or `HEAD` (a preset's own kind when the method is not overridden).
    pub kind: ActionKind,
    /// Inputs the preset requires that no part of the request sent uses any more (the override
    /// replaced every part that read them), so a run does not require them.
    pub optional_inputs: Vec<String>,
    pub save: IndexMap<String, JsonTemplate>,
    pub outputs: IndexMap<String, JsonTemplate>,
    /// Vendor answers that are results, not failures (`answers:`), in the order written.
    pub answers: Vec<ExpectedAnswer>,
    pub retry: RetrySettings,
    pub timeout: Option<Duration>,
    pub approval_required: bool,
    /// Ingest settings, on list actions.
    pub collect: Option<Collect>,
}

impl ApiCall {
    /// Whether the block has the `found` output: it lists `not_found` (or `404`) as an answer.
    pub fn reports_found(&self) -> bool {
        self.answers.iter().any(|a| a.status.is_not_found())
    }
}

/// One checked `answers:` entry: a vendor answer that makes the block succeed instead of fail.
#[derive(Debug)]
pub struct ExpectedAnswer {
    pub status: AnswerMatch,
    /// When set, the answer counts only when this holds over `{status, response, headers,
    /// record, vars}`.
    pub when: Option<Condition>,
}

/// Which vendor answers an [`ExpectedAnswer`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMatch {
    /// "The vendor does not have it": a 404, or the empty list the preset's `not_found` names.
    NotFound,
    /// This status (never a 2xx, nor one blockyard retries).
    Status(u16),
}

impl AnswerMatch {
    /// Counts a not-found answer (`not_found`, or `404` on a preset without `not_found`).
    pub fn is_not_found(self) -> bool {
        matches!(self, AnswerMatch::NotFound | AnswerMatch::Status(404))
    }
}

/// A checked `collect:`.
#[derive(Debug)]
pub struct Collect {
    pub into: Collection,
    /// The sync key: one of `fields`.
    pub key: String,
    pub mode: ImportMode,
    /// Record field → template over `item`, `vars` and `run`.
    pub fields: IndexMap<String, JsonTemplate>,
    pub missing: Missing,
    /// Field values that mark the existing records this import speaks for.
    pub scope: IndexMap<String, Value>,
}

/// How an import treats new and existing records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    #[default]
    CreateUpdate,
    CreateOnly,
    UpdateOnly,
}

impl ImportMode {
    pub const NAMES: [&'static str; 3] = ["create_update", "create_only", "update_only"];

    pub fn parse(name: &str) -> Option<ImportMode> {
        match name {
            "create_update" => Some(ImportMode::CreateUpdate),
            "create_only" => Some(ImportMode::CreateOnly),
            "update_only" => Some(ImportMode::UpdateOnly),
            _ => None,
        }
    }
}

/// What an import does with records the vendor no longer lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missing {
    #[default]
    Keep,
    Deactivate,
}

impl Missing {
    pub const NAMES: [&'static str; 2] = ["keep", "deactivate"];

    pub fn parse(name: &str) -> Option<Missing> {
        match name {
            "keep" => Some(Missing::Keep),
            "deactivate" => Some(Missing::Deactivate),
            _ => None,
        }
    }
}

/// Subjects a workflow leaves alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusion {
    /// Lowercased addresses or record keys.
    pub subjects: std::collections::BTreeSet<String>,
    /// A `vars` entry holding a list of addresses.
    pub var: Option<String>,
    /// A record field that excludes the record when true.
    pub field: Option<String>,
}

impl Exclusion {
    /// Why the record with `key` is excluded, or `None` when it is not.
    pub fn reason(&self, key: &str, record: &Value, vars: &Value) -> Option<String> {
        let key = key.to_lowercase();
        let email = record
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_lowercase);
        let named = |candidate: &str| candidate == key || Some(candidate) == email.as_deref();
        if self.subjects.iter().any(|s| named(s)) {
            return Some("listed in `exclude.subjects`".to_owned());
        }
        if let Some(var) = &self.var {
            let listed = vars
                .get(var)
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|item| named(&item.to_lowercase()))
                });
            if listed {
                return Some(format!("listed in `vars.{var}`"));
            }
        }
        if let Some(field) = &self.field {
            let set = match record.get(field) {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => matches!(s.to_lowercase().as_str(), "true" | "yes" | "1"),
                Some(Value::Number(n)) => n.as_i64() == Some(1),
                _ => false,
            };
            if set {
                return Some(format!("`{field}` is set on the record"));
            }
        }
        None
    }
}

/// A checked role retrieval.
#[derive(Debug)]
pub struct RoleRetrieval {
    pub call: ApiCall,
    pub deactivate_missing: bool,
}

/// Advanced-mode overrides, compiled. Templates see the block's context plus the preset's
/// resolved inputs as `inputs.*`.
#[derive(Debug)]
pub struct RequestOverride {
    /// Replaces the preset's method.
    pub method: Option<Method>,
    /// Replaces the preset's path (a path below the credential's `base_url`, starting with `/`).
    pub path: Option<Template>,
    /// Merged over the preset's query: `Some` sets a parameter, `None` removes it.
    pub query: IndexMap<String, Option<JsonTemplate>>,
    /// Merged over the preset's headers: `Some` sets a header, `None` removes it.
    pub headers: IndexMap<String, Option<Template>>,
    /// Replaces the preset's body; a body that renders `null` sends none.
    pub body: Option<JsonTemplate>,
}

impl RequestOverride {
    /// The parts that change which resource a request addresses (`request.path`,
    /// `request.method`), for the messages of what cannot follow an override (a preset's probe).
    pub fn readdressed(&self) -> Option<&'static str> {
        match (&self.path, &self.method) {
            (Some(_), _) => Some("request.path"),
            (None, Some(_)) => Some("request.method"),
            (None, None) => None,
        }
    }
}

/// A block's retry settings; `None` fields take the engine's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrySettings {
    pub max_attempts: Option<u32>,
    pub initial_delay: Option<Duration>,
    pub max_delay: Option<Duration>,
    pub max_elapsed: Option<Duration>,
    /// Durable retries: how long after the block's first transient failure it is still tried
    /// again (see [`crate::exec`]'s `retry` module); `None` is the default, 24 hours.
    pub give_up_after: Option<Duration>,
}

/// An edge of the graph.
#[derive(Debug)]
pub struct Edge {
    pub kind: EdgeKind,
    pub when: Option<Condition>,
}

/// Which outcome of its source block an edge follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    Next,
    Failure,
}

/// A record collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    People,
    SaasUsers,
}

impl Collection {
    pub const NAMES: [&'static str; 2] = ["people", "saas_users"];

    pub fn parse(name: &str) -> Option<Collection> {
        match name {
            "people" => Some(Collection::People),
            "saas_users" => Some(Collection::SaasUsers),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Collection::People => "people",
            Collection::SaasUsers => "saas_users",
        }
    }
}

/// A record event that can start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordEvent {
    Created,
    Updated,
    Deleted,
}

impl RecordEvent {
    pub const NAMES: [&'static str; 3] = ["created", "updated", "deleted"];

    pub fn parse(name: &str) -> Option<RecordEvent> {
        match name {
            "created" => Some(RecordEvent::Created),
            "updated" => Some(RecordEvent::Updated),
            "deleted" => Some(RecordEvent::Deleted),
            _ => None,
        }
    }
}

/// What starts the workflow (besides a manual run, which is always allowed).
#[derive(Debug, Default)]
pub struct Trigger {
    pub records: Option<Collection>,
    pub on: Vec<RecordEvent>,
    pub when: Option<Condition>,
    pub rules: Vec<Rule>,
    pub schedule: Option<(Schedule, CatchUp)>,
    pub exclude: Option<Exclusion>,
}

/// Reads and compiles a workflow file.
pub fn compile_file(
    path: impl Into<PathBuf>,
    presets: &PresetRegistry,
) -> Result<Workflow, Vec<CompileError>> {
    let source = Source::read(path).map_err(|err| vec![err])?;
    compile_source(source, presets)
}

/// Compiles a workflow's text.
pub fn compile_source(
    source: Source,
    presets: &PresetRegistry,
) -> Result<Workflow, Vec<CompileError>> {
    let (loaded, mut errors) = spec::load_partial(source);
    let Some(loaded) = loaded else {
        errors.sort_by_key(|e| e.location);
        return Err(errors);
    };
    check(&loaded, presets, errors)
}

/// Compiles an already loaded spec.
pub fn compile(
    loaded: &LoadedSpec,
    presets: &PresetRegistry,
) -> Result<Workflow, Vec<CompileError>> {
    check(loaded, presets, Vec::new())
}

/// Runs every check on `loaded`, adding to the loader's `errors`.
fn check(
    loaded: &LoadedSpec,
    presets: &PresetRegistry,
    mut errors: Vec<CompileError>,
) -> Result<Workflow, Vec<CompileError>> {
    let workflow = Compiler {
        loaded,
        presets,
        rules: rule_engine(),
        errors: &mut errors,
        bare_names: loaded.spec.blocks.values().any(|b| match b {
            BlockSpec::Begin(begin) => begin.records.is_some(),
            _ => false,
        }),
        block_refs: Vec::new(),
    }
    .compile();
    errors.sort_by_key(|e| e.location);
    match workflow {
        Some(workflow) if errors.is_empty() => Ok(workflow),
        _ => Err(errors),
    }
}

/// The rhai engine, built once per process.
pub fn rule_engine() -> &'static RuleEngine {
    static ENGINE: std::sync::OnceLock<RuleEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(RuleEngine::new)
}

/// Variable roots a workflow template may read.
const CONTEXT_ROOTS: [&str; 4] = ["record", "vars", "blocks", "run"];
/// Roots inside `collect.fields`: one listed item, plus the variables.
const ITEM_ROOTS: [&str; 3] = ["item", "vars", "run"];
/// Roots inside `request:` (advanced mode): the context plus the preset's resolved inputs.
const REQUEST_ROOTS: [&str; 5] = ["record", "vars", "blocks", "run", "inputs"];
/// Roots inside `save:` and `outputs:`: the context plus the response.
const RESPONSE_ROOTS: [&str; 7] = [
    "record", "vars", "blocks", "run", "response", "status", "headers",
];

struct Compiler<'a> {
    loaded: &'a LoadedSpec,
    presets: &'a PresetRegistry,
    rules: &'static RuleEngine,
    errors: &'a mut Vec<CompileError>,
    /// The workflow has a subject record, so a bare `{{name}}` in a template whose roots include
    /// `record` reads the record's field `name`.
    bare_names: bool,
    /// Every `blocks.…` path a template reads, checked against the graph once it is built.
    block_refs: Vec<BlockRef>,
}

/// A template's `blocks.ID…` path and where it is.
struct BlockRef {
    /// The block whose template reads it.
    block: BlockId,
    yaml: YamlPath,
    /// The key, as errors name it (`with.email`).
    key: String,
    path: String,
}

impl<'a> Compiler<'a> {
    fn key_error(&mut self, path: &YamlPath, block: Option<&BlockId>, kind: CompileErrorKind) {
        let err = self.loaded.error_at_key(path, block, kind);
        self.errors.push(err);
    }

    fn value_error(&mut self, path: &YamlPath, block: Option<&BlockId>, kind: CompileErrorKind) {
        let err = self.loaded.error_at_value(path, block, kind);
        self.errors.push(err);
    }

    fn compile(mut self) -> Option<Workflow> {
        let spec = &self.loaded.spec;
        let has_subject = spec.blocks.values().any(|b| match b {
            BlockSpec::Begin(begin) => begin.records.is_some(),
            _ => false,
        });
        let mut kinds = IndexMap::with_capacity(spec.blocks.len());
        let mut trigger = Trigger::default();
        for (id, block) in &spec.blocks {
            let kind = match block {
                BlockSpec::Begin(begin) => {
                    let path = YamlPath::root().key("blocks").key(id.as_str());
                    if let Some(t) = self.begin(id, begin, &path) {
                        trigger = t;
                    }
                    Some(BlockKind::Begin)
                }
                BlockSpec::Api(api) => self.api(id, api, has_subject).map(BlockKind::Api),
                BlockSpec::RoleRetrieval(role) => self
                    .role(id, role, has_subject)
                    .map(BlockKind::RoleRetrieval),
                BlockSpec::Wait(wait) => self.wait(id, wait, has_subject).map(BlockKind::Wait),
                BlockSpec::End(_) => Some(BlockKind::End),
            };
            kinds.insert(id.clone(), kind);
        }
        let edges = self.edge_conditions();
        let guard = spec
            .guard
            .as_ref()
            .and_then(|g| match guard::check(g, has_subject) {
                Ok(guard) => Some(guard),
                Err(GuardProblem { key, message }) => {
                    let path = YamlPath::root().key("guard");
                    let kind = CompileErrorKind::InvalidGuard { message };
                    match key {
                        Some(key) => self.value_error(&path.key(key), None, kind),
                        None => self.key_error(&path, None, kind),
                    }
                    None
                }
            });
        let notify = self.notify();
        let timezone = self.timezone();
        let mut workflow = graph_checks::check(&mut self, kinds, edges, trigger)?;
        workflow.guard = guard;
        workflow.notify = notify;
        workflow.timezone = timezone.unwrap_or(chrono_tz::UTC);
        Some(workflow)
    }

    /// The workflow's `timezone:` (UTC when absent); `None` after an error at it.
    fn timezone(&mut self) -> Option<chrono_tz::Tz> {
        let Some(zone) = &self.loaded.spec.timezone else {
            return Some(chrono_tz::UTC);
        };
        match crate::schedule::parse_zone(zone) {
            Ok(tz) => Some(tz),
            Err(ScheduleError::TimeZone { zone, suggestion }) => {
                self.value_error(
                    &YamlPath::root().key("timezone"),
                    None,
                    CompileErrorKind::UnknownTimeZone { zone, suggestion },
                );
                None
            }
            Err(_) => None,
        }
    }

    /// A `wait` block: exactly one of `for:` and `until:`; `wake_when:` needs a subject.
    fn wait(&mut self, id: &BlockId, wait: &spec::WaitSpec, has_subject: bool) -> Option<Wait> {
        let errors_before = self.errors.len();
        let block_path = YamlPath::root().key("blocks").key(id.as_str());
        let how = match (&wait.duration, &wait.until) {
            (Some(_), Some(_)) => {
                self.key_error(
                    &block_path.key("until"),
                    Some(id),
                    CompileErrorKind::InvalidWait {
                        message: "has both `for:` and `until:`; a wait takes one of them"
                            .to_owned(),
                    },
                );
                None
            }
            (None, None) => {
                self.key_error(
                    &block_path.key("type"),
                    Some(id),
                    CompileErrorKind::InvalidWait {
                        message: "waits for nothing; give it `for:` (a duration such as `7d`) or `until:` (a time, such as `\"{{record.last_day}}\"`)".to_owned(),
                    },
                );
                None
            }
            (Some(text), None) => self
                .duration(Site::new(id, &["for"]), text)
                .map(WaitFor::For),
            (None, Some(until)) => self
                .template(Site::new(id, &["until"]), until, &CONTEXT_ROOTS)
                .map(WaitFor::Until),
        };
        let wake_when = match &wait.wake_when {
            None => None,
            Some(_) if !has_subject => {
                self.key_error(
                    &block_path.key("wake_when"),
                    Some(id),
                    CompileErrorKind::InvalidWait {
                        message: "has `wake_when:`, which reads the subject record, but the workflow has none; name `records:` in the begin block".to_owned(),
                    },
                );
                None
            }
            Some(spec::WakeWhenSpec::When(source)) => match self.rules.compile(source) {
                Ok(c) => Some(WakeWhen::When(c)),
                Err(err) => {
                    self.value_error(
                        &block_path.key("wake_when"),
                        Some(id),
                        CompileErrorKind::Rhai {
                            key: "wake_when".to_owned(),
                            message: err.to_string(),
                        },
                    );
                    None
                }
            },
            Some(spec::WakeWhenSpec::Rules(rules)) => {
                let mut out = Vec::with_capacity(rules.len());
                for (i, rule) in rules.iter().enumerate() {
                    let rule_path = block_path.key("wake_when").index(i);
                    match RuleOp::parse(&rule.op) {
                        None => self.value_error(
                            &rule_path.key("op"),
                            Some(id),
                            CompileErrorKind::UnknownRuleOperator {
                                op: rule.op.clone(),
                                suggestion: suggest(&rule.op, RuleOp::NAMES),
                            },
                        ),
                        Some(op) => match Rule::new(&rule.field, op, rule.value.as_ref()) {
                            Ok(r) => out.push(r),
                            Err(err) => self.value_error(
                                &rule_path.key(if rule.value.is_some() { "value" } else { "op" }),
                                Some(id),
                                CompileErrorKind::InvalidRuleValue {
                                    op: rule.op.clone(),
                                    message: err.0,
                                },
                            ),
                        },
                    }
                }
                Some(WakeWhen::Rules(out))
            }
        };
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Wait {
            how: how?,
            wake_when,
        })
    }

    /// `notify:`, checked, its templates compiled; a problem is an error at its key.
    /// Whether a block says `approval: required` (a run of the workflow can wait for approval).
    fn has_approval_gate(&self) -> bool {
        self.loaded.spec.blocks.values().any(|block| match block {
            BlockSpec::Api(api) => api.approval.is_some(),
            BlockSpec::RoleRetrieval(role) => role.approval.is_some(),
            BlockSpec::Begin(_) | BlockSpec::Wait(_) | BlockSpec::End(_) => false,
        })
    }

    fn notify(&mut self) -> Option<std::sync::Arc<crate::notify::Notify>> {
        use crate::notify::NotifyProblem;
        let spec = self.loaded.spec.notify.as_ref()?;
        match crate::notify::Notify::compile(spec) {
            Ok(notify) if notify.remind_after.is_some() && !self.has_approval_gate() => {
                self.value_error(
                    &YamlPath::root().key("notify").key("remind_approvers_after"),
                    None,
                    CompileErrorKind::InvalidValue {
                        key: "notify.remind_approvers_after".to_owned(),
                        message: "no block of this workflow has `approval: required`, so no run of it waits for approval; remove the key or gate a block".to_owned(),
                    },
                );
                None
            }
            Ok(notify) => Some(notify),
            Err(err) => {
                let key = format!("notify.{}", err.key);
                let kind = match err.problem {
                    NotifyProblem::Template(message) => CompileErrorKind::Template { key, message },
                    NotifyProblem::Duration(found) => {
                        CompileErrorKind::InvalidDuration { key, found }
                    }
                    NotifyProblem::Invalid(message) => {
                        CompileErrorKind::InvalidValue { key, message }
                    }
                };
                self.value_error(&YamlPath::root().key("notify").key(err.key), None, kind);
                None
            }
        }
    }

    fn begin(&mut self, id: &BlockId, begin: &BeginSpec, path: &YamlPath) -> Option<Trigger> {
        let block = Some(id);
        let mut ok = true;
        let mut trigger = Trigger::default();
        if let Some(records) = &begin.records {
            match Collection::parse(records) {
                Some(c) => trigger.records = Some(c),
                None => {
                    ok = false;
                    self.value_error(
                        &path.key("records"),
                        block,
                        CompileErrorKind::UnknownCollection {
                            found: records.clone(),
                            suggestion: suggest(records, Collection::NAMES),
                        },
                    );
                }
            }
        }
        if let Some(on) = &begin.on {
            for (i, event) in on.0.iter().enumerate() {
                match RecordEvent::parse(event) {
                    Some(e) => trigger.on.push(e),
                    None => {
                        ok = false;
                        let at = if on.0.len() == 1 {
                            path.key("on")
                        } else {
                            path.key("on").index(i)
                        };
                        self.value_error(
                            &at,
                            block,
                            CompileErrorKind::UnknownRecordEvent {
                                found: event.clone(),
                                suggestion: suggest(event, RecordEvent::NAMES),
                            },
                        );
                    }
                }
            }
            if begin.records.is_none() {
                ok = false;
                self.key_error(
                    &path.key("on"),
                    block,
                    CompileErrorKind::InvalidTrigger {
                        message:
                            "`on` needs `records:` to say which collection's events start a run"
                                .to_owned(),
                    },
                );
            }
        } else if begin.records.is_some() && begin.schedule.is_none() {
            ok = false;
            self.key_error(
                &path.key("records"),
                block,
                CompileErrorKind::InvalidTrigger {
                    message: "`records` needs `on:` (record events) or `schedule:` to start runs"
                        .to_owned(),
                },
            );
        }
        if (begin.when.is_some() || !begin.rules.is_empty())
            && begin.records.is_none()
            && begin.schedule.is_none()
        {
            ok = false;
            let key = if begin.when.is_some() {
                "when"
            } else {
                "rules"
            };
            self.key_error(
                &path.key(key),
                block,
                CompileErrorKind::InvalidTrigger {
                    message: format!("`{key}` filters records, so it needs `records:`"),
                },
            );
        }
        if let Some(when) = &begin.when {
            match self.rules.compile(when) {
                Ok(c) => trigger.when = Some(c),
                Err(err) => {
                    ok = false;
                    self.value_error(
                        &path.key("when"),
                        block,
                        CompileErrorKind::Rhai {
                            key: "when".to_owned(),
                            message: err.to_string(),
                        },
                    );
                }
            }
        }
        for (i, rule) in begin.rules.iter().enumerate() {
            let rule_path = path.key("rules").index(i);
            match RuleOp::parse(&rule.op) {
                None => {
                    ok = false;
                    self.value_error(
                        &rule_path.key("op"),
                        block,
                        CompileErrorKind::UnknownRuleOperator {
                            op: rule.op.clone(),
                            suggestion: suggest(&rule.op, RuleOp::NAMES),
                        },
                    );
                }
                Some(op) => match Rule::new(&rule.field, op, rule.value.as_ref()) {
                    Ok(r) => trigger.rules.push(r),
                    Err(err) => {
                        ok = false;
                        let at = if rule.value.is_some() {
                            rule_path.key("value")
                        } else {
                            rule_path.key("op")
                        };
                        self.value_error(
                            &at,
                            block,
                            CompileErrorKind::InvalidRuleValue {
                                op: rule.op.clone(),
                                message: err.0,
                            },
                        );
                    }
                },
            }
        }
        if let Some(exclude) = &begin.exclude {
            if begin.records.is_none() {
                ok = false;
                self.key_error(
                    &path.key("exclude"),
                    block,
                    CompileErrorKind::InvalidTrigger {
                        message: "`exclude` leaves out records, so it needs `records:`".to_owned(),
                    },
                );
            }
            trigger.exclude = Some(Exclusion {
                subjects: exclude.subjects.iter().map(|s| s.to_lowercase()).collect(),
                var: exclude.var.clone(),
                field: exclude.field.clone(),
            });
        }
        if let Some(schedule) = &begin.schedule {
            let sched_path = path.key("schedule");
            // A schedule without a zone of its own ticks in the workflow's (an unknown one is
            // reported at `timezone:`, and UTC stands in meanwhile).
            let zone = schedule.timezone.as_deref().or(self
                .loaded
                .spec
                .timezone
                .as_deref()
                .filter(|z| crate::schedule::parse_zone(z).is_ok()));
            match Schedule::parse(&schedule.cron, zone) {
                Ok(s) => trigger.schedule = Some((s, schedule.catch_up.unwrap_or_default())),
                Err(errors) => {
                    ok = false;
                    for error in errors {
                        let (key, kind) = match error {
                            ScheduleError::Cron { expr, message } => {
                                ("cron", CompileErrorKind::Cron { expr, message })
                            }
                            ScheduleError::TimeZone { zone, suggestion } => (
                                "timezone",
                                CompileErrorKind::UnknownTimeZone { zone, suggestion },
                            ),
                        };
                        self.value_error(&sched_path.key(key), block, kind);
                    }
                }
            }
        }
        ok.then_some(trigger)
    }

    fn api(&mut self, id: &BlockId, api: &ApiSpec, has_subject: bool) -> Option<ApiCall> {
        let parts = CallParts {
            preset: &api.preset,
            credential: api.credential.as_deref(),
            with: &api.with,
            request: api.request.as_ref(),
            save: &api.save,
            outputs: &api.outputs,
            answers: Some(&api.answers),
            retry: api.retry.as_ref(),
            timeout: api.timeout.as_deref(),
            approval: api.approval,
            collect: api.collect.as_ref(),
        };
        self.call(id, parts, has_subject, false)
    }

    fn role(
        &mut self,
        id: &BlockId,
        role: &RoleRetrievalSpec,
        has_subject: bool,
    ) -> Option<RoleRetrieval> {
        let parts = CallParts {
            preset: &role.preset,
            credential: role.credential.as_deref(),
            with: &role.with,
            request: None,
            save: &role.save,
            outputs: &role.outputs,
            answers: None,
            retry: role.retry.as_ref(),
            timeout: role.timeout.as_deref(),
            approval: role.approval,
            collect: None,
        };
        let call = self.call(id, parts, has_subject, true)?;
        Some(RoleRetrieval {
            call,
            deactivate_missing: role.deactivate_missing,
        })
    }

    fn call(
        &mut self,
        id: &BlockId,
        parts: CallParts<'_>,
        has_subject: bool,
        role: bool,
    ) -> Option<ApiCall> {
        let errors_before = self.errors.len();
        let preset = self.resolve_preset(Site::new(id, &["preset"]), parts.preset, role);
        let mut with = IndexMap::with_capacity(parts.with.len());
        for (key, value) in parts.with {
            let keys = ["with", key.as_str()];
            let site = Site::new(id, &keys);
            if let Some((preset_id, action)) = &preset {
                if !action.spec.inputs.contains_key(key) {
                    self.key_error(
                        &site.yaml(),
                        Some(id),
                        CompileErrorKind::UnknownInput {
                            preset: preset_id.to_string(),
                            input: key.clone(),
                            suggestion: suggest(key, action.spec.inputs.keys().map(String::as_str)),
                        },
                    );
                    continue;
                }
            }
            if let Some(t) = self.json_template(site, value, &CONTEXT_ROOTS) {
                with.insert(key.clone(), t);
            }
        }
        let request = parts
            .request
            .and_then(|r| self.request(id, r, preset.as_ref().map(|(p, a)| (p, *a))));
        let optional_inputs = match (&preset, &request) {
            (Some((_, action)), Some(request)) => self.optional_inputs(action, request),
            _ => Vec::new(),
        };
        if let Some((preset_id, action)) = &preset {
            if !has_subject {
                let missing: Vec<String> = action
                    .required_inputs()
                    .filter(|input| {
                        !parts.with.contains_key(*input)
                            && !optional_inputs.iter().any(|o| o == input)
                    })
                    .map(str::to_owned)
                    .collect();
                for input in missing {
                    self.value_error(
                        &Site::new(id, &["preset"]).yaml(),
                        Some(id),
                        CompileErrorKind::MissingInput {
                            preset: preset_id.to_string(),
                            input,
                        },
                    );
                }
            }
        }
        let mut save = IndexMap::with_capacity(parts.save.len());
        for (key, value) in parts.save {
            if let Some(t) =
                self.json_template(Site::new(id, &["save", key]), value, &RESPONSE_ROOTS)
            {
                save.insert(key.clone(), t);
            }
        }
        let mut outputs = IndexMap::with_capacity(parts.outputs.len());
        for (key, value) in parts.outputs {
            if let Some(t) =
                self.json_template(Site::new(id, &["outputs", key]), value, &RESPONSE_ROOTS)
            {
                outputs.insert(key.clone(), t);
            }
        }
        let answers = match parts.answers {
            Some(answers) => self.answers(id, answers, preset.as_ref().map(|(p, a)| (p, *a))),
            None => Vec::new(),
        };
        if answers.iter().any(|a| a.status.is_not_found()) && parts.outputs.contains_key("found") {
            self.key_error(
                &Site::new(id, &["outputs", "found"]).yaml(),
                Some(id),
                CompileErrorKind::InvalidValue {
                    key: "outputs.found".to_owned(),
                    message: "`found` is the output a block listing `not_found` in `answers` has already; name this output otherwise".to_owned(),
                },
            );
        }
        let retry = self.retry(id, parts.retry);
        let timeout = parts
            .timeout
            .and_then(|t| self.duration(Site::new(id, &["timeout"]), t));
        let collect = match (parts.collect, &preset) {
            (Some(spec), Some((preset_id, action))) => self.collect(id, spec, preset_id, action),
            _ => None,
        };
        if self.errors.len() > errors_before {
            return None;
        }
        let (preset, action) = preset?;
        let kind = match request.as_ref().and_then(|r| r.method) {
            Some(method) => method.kind(),
            None => action.spec.kind,
        };
        Some(ApiCall {
            kind,
            optional_inputs,
            credential: parts
                .credential
                .map(str::to_owned)
                .unwrap_or_else(|| preset.vendor.clone()),
            preset,
            with,
            request,
            save,
            outputs,
            answers,
            retry: retry.unwrap_or_default(),
            timeout,
            approval_required: parts.approval == Some(Approval::Required),
            collect,
        })
    }

    /// Checks `answers:`: each entry a status from 100 to 599 that is neither a success already
    /// nor a transient failure blockyard retries, or `not_found`; none twice; conditions parsed.
    fn answers(
        &mut self,
        id: &BlockId,
        answers: &Answers,
        preset: Option<(&PresetId, &Action)>,
    ) -> Vec<ExpectedAnswer> {
        let block = Some(id);
        let base = Site::new(id, &["answers"]).yaml();
        let mut out: Vec<ExpectedAnswer> = Vec::with_capacity(answers.0.len());
        // Each entry's match, and whether it holds unconditionally.
        let mut seen: Vec<(AnswerMatch, bool)> = Vec::new();
        for (i, entry) in answers.iter().enumerate() {
            let at = if entry.bare {
                base.index(i)
            } else {
                base.index(i).key("status")
            };
            let written = entry.status.to_string();
            let code = match &entry.status {
                AnswerStatus::Code(code) => Some(*code),
                AnswerStatus::Name(name) if name == "not_found" => None,
                AnswerStatus::Name(name) => match name.trim().parse::<i64>() {
                    Ok(code) => Some(code),
                    Err(_) => {
                        self.value_error(
                            &at,
                            block,
                            CompileErrorKind::InvalidAnswer {
                                entry: written,
                                problem: AnswerProblem::UnknownName {
                                    suggestion: suggest(name, ["not_found"]),
                                },
                            },
                        );
                        continue;
                    }
                },
            };
            let problem = |code: i64| match code {
                ..=99 | 600.. => Some(AnswerProblem::NotAStatus),
                200..=299 => Some(AnswerProblem::Success),
                429 | 502..=504 => Some(AnswerProblem::Transient),
                _ => None,
            };
            let status = match code {
                None => AnswerMatch::NotFound,
                Some(code) => match problem(code) {
                    Some(problem) => {
                        self.value_error(
                            &at,
                            block,
                            CompileErrorKind::InvalidAnswer {
                                entry: written,
                                problem,
                            },
                        );
                        continue;
                    }
                    None => AnswerMatch::Status(code as u16),
                },
            };
            let empty = preset
                .and_then(|(_, action)| action.spec.not_found.as_ref())
                .and_then(|nf| nf.empty.clone());
            if let (AnswerMatch::Status(404), Some(pointer), Some((preset, _))) =
                (status, &empty, preset)
            {
                self.value_error(
                    &at,
                    block,
                    CompileErrorKind::InvalidAnswer {
                        entry: written,
                        problem: AnswerProblem::NotFoundByList {
                            preset: preset.to_string(),
                            pointer: pointer.clone(),
                        },
                    },
                );
                continue;
            }
            let unconditional = entry.when.is_none();
            let clash = seen.iter().find_map(|&(other, other_unconditional)| {
                if !(unconditional || other_unconditional) {
                    return None;
                }
                if other == status {
                    Some(AnswerProblem::Twice)
                } else if status.is_not_found() && other.is_not_found() {
                    Some(AnswerProblem::CountedByNotFound)
                } else {
                    None
                }
            });
            if let Some(problem) = clash {
                self.value_error(
                    &at,
                    block,
                    CompileErrorKind::InvalidAnswer {
                        entry: written,
                        problem,
                    },
                );
                continue;
            }
            seen.push((status, unconditional));
            let when = match &entry.when {
                None => None,
                Some(when) => match self.rules.compile(when) {
                    Ok(condition) => Some(condition),
                    Err(err) => {
                        self.value_error(
                            &base.index(i).key("when"),
                            block,
                            CompileErrorKind::Rhai {
                                key: "answers.when".to_owned(),
                                message: err.to_string(),
                            },
                        );
                        continue;
                    }
                },
            };
            out.push(ExpectedAnswer { status, when });
        }
        out
    }

    fn collect(
        &mut self,
        id: &BlockId,
        spec: &CollectSpec,
        preset: &PresetId,
        action: &crate::preset::Action,
    ) -> Option<Collect> {
        let block = Some(id);
        let before = self.errors.len();
        if action.spec.items.is_none() {
            self.key_error(
                &Site::new(id, &["collect"]).yaml(),
                block,
                CompileErrorKind::InvalidValue {
                    key: "collect".to_owned(),
                    message: format!("preset `{preset}` does not list items, so there is nothing to collect; use a list action such as `calendly.list_memberships`"),
                },
            );
        }
        let into = self.option(
            Site::new(id, &["collect", "into"]),
            &spec.into,
            &Collection::NAMES,
            Collection::parse,
        );
        let mode = match &spec.mode {
            None => Some(ImportMode::default()),
            Some(m) => self.option(
                Site::new(id, &["collect", "mode"]),
                m,
                &ImportMode::NAMES,
                ImportMode::parse,
            ),
        };
        let missing = match &spec.missing {
            None => Some(Missing::default()),
            Some(m) => self.option(
                Site::new(id, &["collect", "missing"]),
                m,
                &Missing::NAMES,
                Missing::parse,
            ),
        };
        if !spec.fields.contains_key(&spec.key) {
            self.value_error(
                &Site::new(id, &["collect", "key"]).yaml(),
                block,
                CompileErrorKind::InvalidValue {
                    key: "collect.key".to_owned(),
                    message: format!(
                        "`{}` is not one of the mapped `fields`, so records cannot be matched; map it, for example `{}: \"{{{{item.email}}}}\"`",
                        spec.key, spec.key
                    ),
                },
            );
        }
        let mut fields = IndexMap::with_capacity(spec.fields.len());
        for (key, value) in &spec.fields {
            let keys = ["collect", "fields", key.as_str()];
            if let Some(t) = self.json_template(Site::new(id, &keys), value, &ITEM_ROOTS) {
                fields.insert(key.clone(), t);
            }
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Collect {
            into: into?,
            key: spec.key.clone(),
            mode: mode?,
            fields,
            missing: missing?,
            scope: spec.scope.clone(),
        })
    }

    /// A value from a closed set, with a did-you-mean.
    fn option<T>(
        &mut self,
        site: Site<'_>,
        found: &str,
        names: &[&'static str],
        parse: fn(&str) -> Option<T>,
    ) -> Option<T> {
        let parsed = parse(found);
        if parsed.is_none() {
            self.value_error(
                &site.yaml(),
                Some(site.block),
                CompileErrorKind::UnknownValue {
                    key: site.label(),
                    found: found.to_owned(),
                    expected: names.to_vec(),
                    suggestion: suggest(found, names.iter().copied()),
                },
            );
        }
        parsed
    }

    fn resolve_preset(
        &mut self,
        site: Site<'_>,
        preset: &str,
        role: bool,
    ) -> Option<(PresetId, &'a crate::preset::Action)> {
        let block = Some(site.block);
        let Some(preset_id) = PresetId::parse(preset) else {
            self.value_error(
                &site.yaml(),
                block,
                CompileErrorKind::MalformedPreset {
                    found: preset.to_owned(),
                },
            );
            return None;
        };
        let presets = self.presets;
        let Some(vendor) = presets.vendor(&preset_id.vendor) else {
            self.value_error(
                &site.yaml(),
                block,
                CompileErrorKind::UnknownVendor {
                    vendor: preset_id.vendor.clone(),
                    suggestion: suggest(
                        &preset_id.vendor,
                        presets.vendors().map(|v| v.spec.vendor.as_str()),
                    ),
                },
            );
            return None;
        };
        let Some(action) = vendor.actions.get(&preset_id.action) else {
            let candidates = vendor
                .actions
                .iter()
                .filter(|(_, a)| !role || a.spec.role.is_some())
                .map(|(name, _)| name.as_str());
            self.value_error(
                &site.yaml(),
                block,
                CompileErrorKind::UnknownAction {
                    vendor: preset_id.vendor.clone(),
                    action: preset_id.action.clone(),
                    suggestion: suggest(&preset_id.action, candidates),
                },
            );
            return None;
        };
        if role && action.spec.role.is_none() {
            self.value_error(
                &site.yaml(),
                block,
                CompileErrorKind::NotARoleAction {
                    preset: preset.to_owned(),
                },
            );
            return None;
        }
        Some((preset_id, action))
    }

    fn template(&mut self, site: Site<'_>, source: &str, roots: &[&str]) -> Option<Template> {
        let compiled = Template::compile(source);
        let mut t = self.checked(site, compiled, Template::variable_paths, roots)?;
        if self.bare_names(roots) {
            t.qualify_bare_names(roots);
        }
        Some(t)
    }

    fn json_template(
        &mut self,
        site: Site<'_>,
        value: &Value,
        roots: &[&str],
    ) -> Option<JsonTemplate> {
        let compiled = JsonTemplate::compile(value);
        let mut t = self.checked(site, compiled, JsonTemplate::variable_paths, roots)?;
        if self.bare_names(roots) {
            t.qualify_bare_names(roots);
        }
        Some(t)
    }

    /// Whether a bare name in a template over `roots` reads the subject record's field.
    fn bare_names(&self, roots: &[&str]) -> bool {
        self.bare_names && roots.contains(&"record")
    }

    /// A compiled template that reads only `roots` (or, where [`Compiler::bare_names`] allows,
    /// bare names), or its errors reported at `site`.
    fn checked<T>(
        &mut self,
        site: Site<'_>,
        compiled: Result<T, TemplateError>,
        variable_paths: fn(&T) -> Vec<String>,
        roots: &[&str],
    ) -> Option<T> {
        match compiled {
            Ok(t) => {
                let bare = self.bare_names(roots);
                let paths = variable_paths(&t);
                let mut found: Vec<&str> = paths
                    .iter()
                    // A bare name where bare names are allowed reads the record: no root to check.
                    .filter(|path| !bare || path.contains(['.', '/', '[']))
                    .map(|path| path.split(['.', '/', '[']).next().unwrap_or_default())
                    .collect();
                found.dedup();
                let ok = self.check_roots(site, found, roots);
                if ok && roots.contains(&"blocks") {
                    for path in paths.iter().filter(|p| p.starts_with("blocks.")) {
                        self.block_refs.push(BlockRef {
                            block: site.block.clone(),
                            yaml: site.yaml(),
                            key: site.label(),
                            path: path.clone(),
                        });
                    }
                }
                ok.then_some(t)
            }
            Err(err) => {
                self.value_error(
                    &site.yaml(),
                    Some(site.block),
                    CompileErrorKind::Template {
                        key: site.label(),
                        message: err.to_string(),
                    },
                );
                None
            }
        }
    }

    fn check_roots(&mut self, site: Site<'_>, found: Vec<&str>, roots: &[&str]) -> bool {
        let mut ok = true;
        for root in found {
            if !roots.contains(&root) {
                ok = false;
                self.value_error(
                    &site.yaml(),
                    Some(site.block),
                    CompileErrorKind::UnknownVariable {
                        key: site.label(),
                        root: root.to_owned(),
                        suggestion: suggest(root, roots.iter().copied()),
                    },
                );
            }
        }
        ok
    }

    /// Compiles advanced mode's `request:`. `preset` is the block's resolved action, when it
    /// resolved, for checking the `inputs.*` the templates read.
    fn request(
        &mut self,
        id: &BlockId,
        request: &RequestSpec,
        preset: Option<(&PresetId, &Action)>,
    ) -> Option<RequestOverride> {
        let before = self.errors.len();
        let invalid = |this: &mut Self, keys: &[&str], message: String| {
            this.value_error(
                &Site::new(id, keys).yaml(),
                Some(id),
                CompileErrorKind::InvalidValue {
                    key: keys.join("."),
                    message,
                },
            );
        };
        let method = request.method.as_ref().and_then(|m| {
            let parsed = Method::parse(m);
            if parsed.is_none() {
                let expected = Method::NAMES.map(|n| format!("`{n}`")).join(", ");
                invalid(
                    self,
                    &["request", "method"],
                    format!("unknown method `{m}`, expected one of {expected}"),
                );
            }
            parsed
        });
        let path = request.path.as_ref().and_then(|p| {
            let literal = literal_text(p);
            let lower = p.trim_start().to_ascii_lowercase();
            let problem = if lower.starts_with("http://") || lower.starts_with("https://") {
                Some(format!("`{p}` is an absolute URL; give the path below the credential's `base_url`, starting with `/`, so the credential's token never goes to another host"))
            } else if !p.starts_with('/') {
                Some(format!("`{p}` must start with `/`: it is the path below the credential's `base_url`"))
            } else if literal.contains(['?', '#']) {
                Some(format!("`{p}` holds a `?` or `#`; give query parameters in `request.query`"))
            } else {
                None
            };
            if let Some(message) = problem {
                invalid(self, &["request", "path"], message);
                return None;
            }
            self.template(Site::new(id, &["request", "path"]), p, &REQUEST_ROOTS)
        });
        let mut query = IndexMap::with_capacity(request.query.len());
        for (key, value) in &request.query {
            let keys = ["request", "query", key.as_str()];
            if value.is_null() {
                query.insert(key.clone(), None);
            } else if let Some(t) = self.json_template(Site::new(id, &keys), value, &REQUEST_ROOTS)
            {
                query.insert(key.clone(), Some(t));
            }
        }
        let mut headers = IndexMap::with_capacity(request.headers.len());
        for (key, value) in &request.headers {
            let keys = ["request", "headers", key.as_str()];
            if key.eq_ignore_ascii_case("authorization") {
                invalid(
                    self,
                    &keys,
                    "`Authorization` comes from the block's credential and cannot be set here; name another credential with `credential:`".to_owned(),
                );
                continue;
            }
            match value {
                None => {
                    headers.insert(key.clone(), None);
                }
                Some(v) => {
                    if let Some(t) = self.template(Site::new(id, &keys), v, &REQUEST_ROOTS) {
                        headers.insert(key.clone(), Some(t));
                    }
                }
            }
        }
        let body = request.body.as_ref().and_then(|b| {
            self.json_template(Site::new(id, &["request", "body"]), b, &REQUEST_ROOTS)
        });
        let compiled = RequestOverride {
            method,
            path,
            query,
            headers,
            body,
        };
        if let Some((preset_id, action)) = preset {
            self.check_override_inputs(id, &compiled, preset_id, action);
        }
        (self.errors.len() == before).then_some(compiled)
    }

    /// Every `inputs.NAME` an override reads names one of the preset's inputs.
    fn check_override_inputs(
        &mut self,
        id: &BlockId,
        request: &RequestOverride,
        preset: &PresetId,
        action: &Action,
    ) {
        let mut sites: Vec<(Vec<&str>, Vec<String>)> = Vec::new();
        if let Some(path) = &request.path {
            sites.push((vec!["request", "path"], path.variable_paths()));
        }
        for (key, t) in &request.query {
            if let Some(t) = t {
                sites.push((vec!["request", "query", key], t.variable_paths()));
            }
        }
        for (key, t) in &request.headers {
            if let Some(t) = t {
                sites.push((vec!["request", "headers", key], t.variable_paths()));
            }
        }
        if let Some(body) = &request.body {
            sites.push((vec!["request", "body"], body.variable_paths()));
        }
        for (keys, paths) in sites {
            for input in override_inputs(&paths) {
                if !action.spec.inputs.contains_key(input) {
                    self.value_error(
                        &Site::new(id, &keys).yaml(),
                        Some(id),
                        CompileErrorKind::UnknownInput {
                            preset: preset.to_string(),
                            input: input.to_owned(),
                            suggestion: suggest(
                                input,
                                action.spec.inputs.keys().map(String::as_str),
                            ),
                        },
                    );
                }
            }
        }
    }

    /// The inputs `action` requires that the request sent with `request` applied no longer
    /// reads: neither a part of the preset the override keeps nor the override itself.
    fn optional_inputs(&self, action: &Action, request: &RequestOverride) -> Vec<String> {
        let mut used: Vec<String> = Vec::new();
        let mut read = |roots: Vec<&str>| used.extend(roots.into_iter().map(str::to_owned));
        let merge_read = action.spec.merge.as_ref().and_then(|m| {
            self.presets
                .vendor(&action.id.vendor)
                .and_then(|v| v.actions.get(&m.read))
        });
        for preset_part in std::iter::once(action).chain(merge_read) {
            if request.path.is_none() {
                read(preset_part.path.variable_roots());
            }
            for (key, t) in &preset_part.query {
                if !request.query.contains_key(key) {
                    read(t.variable_roots());
                }
            }
            for (key, t) in &preset_part.headers {
                if !request.headers.keys().any(|k| k.eq_ignore_ascii_case(key)) {
                    read(t.variable_roots());
                }
            }
            if let (None, Some(body)) = (&request.body, &preset_part.body) {
                read(body.variable_roots());
            }
        }
        let mut paths = Vec::new();
        paths.extend(request.path.iter().flat_map(Template::variable_paths));
        for t in request.query.values().flatten() {
            paths.extend(t.variable_paths());
        }
        for t in request.headers.values().flatten() {
            paths.extend(t.variable_paths());
        }
        paths.extend(request.body.iter().flat_map(JsonTemplate::variable_paths));
        used.extend(override_inputs(&paths).map(str::to_owned));
        action
            .required_inputs()
            .filter(|input| !used.iter().any(|u| u == input))
            .map(str::to_owned)
            .collect()
    }

    fn retry(&mut self, id: &BlockId, retry: Option<&RetrySpec>) -> Option<RetrySettings> {
        let retry = retry?;
        let mut settings = RetrySettings {
            max_attempts: retry.max_attempts,
            ..RetrySettings::default()
        };
        if retry.max_attempts == Some(0) {
            self.value_error(
                &Site::new(id, &["retry", "max_attempts"]).yaml(),
                Some(id),
                CompileErrorKind::InvalidValue {
                    key: "retry.max_attempts".to_owned(),
                    message: "must be at least 1 (the first attempt counts)".to_owned(),
                },
            );
        }
        for (key, value, slot) in [
            (
                "initial_delay",
                &retry.initial_delay,
                &mut settings.initial_delay,
            ),
            ("max_delay", &retry.max_delay, &mut settings.max_delay),
            ("max_elapsed", &retry.max_elapsed, &mut settings.max_elapsed),
            (
                "give_up_after",
                &retry.give_up_after,
                &mut settings.give_up_after,
            ),
        ] {
            if let Some(text) = value {
                *slot = self.duration(Site::new(id, &["retry", key]), text);
            }
        }
        Some(settings)
    }

    fn duration(&mut self, site: Site<'_>, text: &str) -> Option<Duration> {
        let parsed = parse_duration(text);
        if parsed.is_none() {
            self.value_error(
                &site.yaml(),
                Some(site.block),
                CompileErrorKind::InvalidDuration {
                    key: site.label(),
                    found: text.to_owned(),
                },
            );
        }
        parsed
    }

    /// Compiles every edge's `when:` and returns them by (block, edge kind, index).
    fn edge_conditions(&mut self) -> IndexMap<(BlockId, EdgeKind, usize), Condition> {
        let mut out = IndexMap::new();
        let spec = &self.loaded.spec;
        for (id, block) in &spec.blocks {
            for (kind, key, targets) in declared_edges(block.next(), block.on_failure()) {
                for (i, target) in targets.iter().enumerate() {
                    let Some(when) = &target.when else { continue };
                    match self.rules.compile(when) {
                        Ok(c) => {
                            out.insert((id.clone(), kind, i), c);
                        }
                        Err(err) => {
                            let at = YamlPath::root()
                                .key("blocks")
                                .key(id.as_str())
                                .key(key)
                                .index(i)
                                .key("when");
                            self.value_error(
                                &at,
                                Some(id),
                                CompileErrorKind::Rhai {
                                    key: format!("{key}.when"),
                                    message: err.to_string(),
                                },
                            );
                        }
                    }
                }
            }
        }
        out
    }
}

/// Where in a block something is (`with.email` of block `find`), without allocating: the YAML path
/// and the label are built only when an error needs them.
#[derive(Clone, Copy)]
struct Site<'s> {
    block: &'s BlockId,
    keys: &'s [&'s str],
}

impl<'s> Site<'s> {
    fn new(block: &'s BlockId, keys: &'s [&'s str]) -> Site<'s> {
        Site { block, keys }
    }

    fn yaml(&self) -> YamlPath {
        self.keys.iter().fold(
            YamlPath::root().key("blocks").key(self.block.as_str()),
            |p, k| p.key(k),
        )
    }

    fn label(&self) -> String {
        self.keys.join(".")
    }
}

struct CallParts<'a> {
    preset: &'a str,
    credential: Option<&'a str>,
    with: &'a IndexMap<String, Value>,
    request: Option<&'a RequestSpec>,
    save: &'a IndexMap<String, Value>,
    outputs: &'a IndexMap<String, Value>,
    answers: Option<&'a Answers>,
    retry: Option<&'a RetrySpec>,
    timeout: Option<&'a str>,
    approval: Option<Approval>,
    collect: Option<&'a CollectSpec>,
}

/// The input names `inputs.NAME` paths read.
fn override_inputs(paths: &[String]) -> impl Iterator<Item = &str> {
    paths.iter().filter_map(|path| {
        let rest = path.strip_prefix("inputs.")?;
        rest.split(['.', '/', '[']).next()
    })
}

/// A template's text outside its expressions (`{{…}}` and `<<…>>`).
fn literal_text(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    loop {
        let next = [("{{", "}}"), ("<<", ">>")]
            .iter()
            .filter_map(|(open, close)| rest.find(open).map(|i| (i, *open, *close)))
            .min_by_key(|(i, _, _)| *i);
        let Some((start, open, close)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        match rest[start + open.len()..].find(close) {
            Some(end) => rest = &rest[start + open.len() + end + close.len()..],
            None => return out,
        }
    }
}

/// `500ms`, `30s`, `5m`, `1h`, `2d` → a duration.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

/// The edges a block declares, as (kind, yaml key, targets).
fn declared_edges<'a>(
    next: &'a Targets,
    on_failure: &'a Targets,
) -> [(EdgeKind, &'static str, &'a Targets); 2] {
    [
        (EdgeKind::Next, "next", next),
        (EdgeKind::Failure, "on_failure", on_failure),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_ticks_in_the_workflow_zone_unless_it_names_its_own() {
        let presets = PresetRegistry::builtin();
        let zone = |schedule: &str| {
            let text = format!(
                "name: z\ntimezone: America/New_York\nblocks:\n  begin: {{type: begin, schedule: {schedule}, next: end}}\n  end: {{type: end}}\n"
            );
            let workflow = compile_source(Source::new("z.yaml", text), &presets).unwrap();
            assert_eq!(workflow.timezone, chrono_tz::America::New_York);
            workflow.trigger.schedule.unwrap().0.zone()
        };
        assert_eq!(zone("{cron: '0 6 * * *'}"), chrono_tz::America::New_York);
        assert_eq!(
            zone("{cron: '0 6 * * *', timezone: Europe/Berlin}"),
            chrono_tz::Europe::Berlin
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration("s"), None);
    }
}

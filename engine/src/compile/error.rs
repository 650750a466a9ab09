//! Compile errors: what went wrong (a closed [`CompileErrorKind`] with structured fields), where
//! (file, line, column), and in which block.
//!
//! Messages follow one style: lowercase, identifiers in backticks, the block named, and a hint
//! (`did you mean …?`, what to write instead) after a `; ` where one helps. Printed, an error is one
//! line, `FILE:LINE:COL: error: MESSAGE`, so editors and terminals can jump to it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::spec::{BlockId, Location};

/// One problem found in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub file: PathBuf,
    pub location: Location,
    pub block: Option<BlockId>,
    pub kind: CompileErrorKind,
}

impl CompileError {
    /// The message without the position: what is wrong, the block, then a hint.
    pub fn message(&self) -> String {
        let mut message = match (&self.block, self.kind.is_about_block()) {
            (Some(block), true) => format!("block `{block}` {}", self.kind),
            _ => self.kind.to_string(),
        };
        if let (Some(block), true) = (&self.block, self.kind.mentions_block()) {
            message.push_str(&format!(" in block `{block}`"));
        }
        if let Some(hint) = self.kind.hint() {
            message.push_str("; ");
            message.push_str(&hint);
        }
        message
    }

    /// The JSON shape `validate --json` prints.
    pub fn to_json(&self) -> JsonError<'_> {
        JsonError {
            file: &self.file,
            line: self.location.line,
            column: self.location.column,
            block: self.block.as_ref().map(BlockId::as_str),
            message: self.message(),
        }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: error: {}",
            self.file.display(),
            self.location,
            self.message()
        )
    }
}

impl std::error::Error for CompileError {}

/// `{file, line, column, block, message}`.
#[derive(Debug, Serialize)]
pub struct JsonError<'a> {
    pub file: &'a Path,
    pub line: u32,
    pub column: u32,
    pub block: Option<&'a str>,
    pub message: String,
}

/// Everything that can be wrong with a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileErrorKind {
    /// The file cannot be read.
    Io {
        message: String,
    },
    /// The YAML itself does not parse.
    Syntax {
        message: String,
    },
    /// The document is not a mapping with `name` and `blocks`.
    NotAWorkflow,
    /// The YAML nests too deep or expands too far through aliases (see [`crate::spec::limits`]).
    YamlLimit {
        limit: crate::spec::limits::YamlLimit,
    },
    /// A key the language does not have.
    UnknownKey {
        key: String,
        within: String,
        suggestion: Option<String>,
    },
    /// A key the language requires is absent.
    MissingKey {
        key: String,
        within: String,
    },
    /// A value of the wrong type or shape (from serde, reworded).
    InvalidValue {
        key: String,
        message: String,
    },
    /// The same key twice in one mapping.
    DuplicateKey {
        key: String,
        first: Location,
    },
    /// The same block id twice.
    DuplicateBlock {
        first: Location,
    },
    /// A block without `type`, or with one the language does not have.
    UnknownBlockType {
        found: String,
        suggestion: Option<String>,
    },
    MissingBlockType,
    /// No block of type `begin` (or `end`).
    MissingBegin,
    MissingEnd,
    /// A second `begin` (or `end`) block.
    DuplicateBegin {
        first: BlockId,
    },
    DuplicateEnd {
        first: BlockId,
    },
    /// `next` or `on_failure` names a block that does not exist.
    UnknownTarget {
        edge: &'static str,
        target: String,
        suggestion: Option<String>,
    },
    /// An edge into `begin`.
    EdgeIntoBegin {
        edge: &'static str,
    },
    /// Blocks that lead back to themselves, in order.
    Cycle {
        blocks: Vec<BlockId>,
    },
    /// No path from `begin` to this block.
    Unreachable,
    /// No path from this block to `end`.
    DeadEnd {
        end: BlockId,
    },
    /// `preset:` is not `vendor.action`.
    MalformedPreset {
        found: String,
    },
    UnknownVendor {
        vendor: String,
        suggestion: Option<String>,
    },
    UnknownAction {
        vendor: String,
        action: String,
        suggestion: Option<String>,
    },
    /// A role retrieval block naming an action that reads no role.
    NotARoleAction {
        preset: String,
    },
    /// A required preset input that nothing provides.
    MissingInput {
        preset: String,
        input: String,
    },
    /// A value outside a closed set (`collect.mode`, `collect.into`, …).
    UnknownValue {
        key: String,
        found: String,
        expected: Vec<&'static str>,
        suggestion: Option<String>,
    },
    /// A `with:` key the preset does not declare.
    UnknownInput {
        preset: String,
        input: String,
        suggestion: Option<String>,
    },
    /// A handlebars template that does not parse.
    Template {
        key: String,
        message: String,
    },
    /// A template naming a variable root that does not exist.
    UnknownVariable {
        key: String,
        root: String,
        suggestion: Option<String>,
    },
    /// `blocks.ID` where the workflow has no block `ID`.
    UnknownBlockRef {
        key: String,
        block: String,
        suggestion: Option<String>,
    },
    /// `blocks.ID` where `ID` is not before the reading block on every path from `begin` (a
    /// parallel branch, a later block, or the block itself).
    BlockNotBefore {
        key: String,
        block: String,
        itself: bool,
    },
    /// `blocks.ID.FIELD` where `FIELD` is none of `response`, `outputs`, `status`, `outcome`.
    UnknownBlockField {
        key: String,
        block: String,
        field: String,
        suggestion: Option<String>,
    },
    /// `blocks.ID.outputs.NAME` where block `ID` declares no output `NAME`.
    UnknownOutput {
        key: String,
        block: String,
        output: String,
        declared: Vec<String>,
        suggestion: Option<String>,
    },
    /// A rhai expression that does not parse.
    Rhai {
        key: String,
        message: String,
    },
    /// A cron expression that does not parse.
    Cron {
        expr: String,
        message: String,
    },
    UnknownTimeZone {
        zone: String,
        suggestion: Option<String>,
    },
    UnknownRuleOperator {
        op: String,
        suggestion: Option<String>,
    },
    UnknownCollection {
        found: String,
        suggestion: Option<String>,
    },
    UnknownRecordEvent {
        found: String,
        suggestion: Option<String>,
    },
    /// A rule operator given a value it cannot use.
    InvalidRuleValue {
        op: String,
        message: String,
    },
    /// Trigger keys that do not go together.
    InvalidTrigger {
        message: String,
    },
    /// A `guard:` that cannot be used (see [`super::GuardSpec`]).
    InvalidGuard {
        message: String,
    },
    /// A `wait` block whose keys do not go together (both or neither of `for`/`until`,
    /// `wake_when` without a subject).
    InvalidWait {
        message: String,
    },
    /// A duration such as `30s` that does not parse.
    InvalidDuration {
        key: String,
        found: String,
    },
    /// An `answers:` entry that cannot be an answer, as written.
    InvalidAnswer {
        entry: String,
        problem: AnswerProblem,
    },
}

/// Why an `answers:` entry cannot be an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerProblem {
    /// Outside 100..=599.
    NotAStatus,
    /// A 2xx: a success already.
    Success,
    /// 429, 502, 503 or 504: retried, then a failure, never a result.
    Transient,
    /// A name other than `not_found`.
    UnknownName { suggestion: Option<String> },
    /// `404` on a preset that says not found with an empty list (status 200).
    NotFoundByList { preset: String, pointer: String },
    /// The same status twice (one of them unconditional).
    Twice,
    /// `404` and `not_found` both (one of them unconditional).
    CountedByNotFound,
}

impl fmt::Display for AnswerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerProblem::NotAStatus => f.write_str("is not an HTTP status (100 to 599)"),
            AnswerProblem::Success => f.write_str("is a success already"),
            AnswerProblem::Transient => f.write_str(
                "is a transient failure, which blockyard retries; it is never a result",
            ),
            AnswerProblem::UnknownName { .. } => {
                f.write_str("is neither an HTTP status nor `not_found`")
            }
            AnswerProblem::NotFoundByList { preset, pointer } => write!(
                f,
                "misses how `{preset}` says not found: an empty `{pointer}` with status 200, not a 404"
            ),
            AnswerProblem::Twice => f.write_str("is listed twice"),
            AnswerProblem::CountedByNotFound => {
                f.write_str("is counted twice: `not_found` counts a 404 already")
            }
        }
    }
}

impl CompileErrorKind {
    /// Kinds whose message reads as a sentence about the block: "block `x` is not reachable…".
    fn is_about_block(&self) -> bool {
        matches!(
            self,
            CompileErrorKind::DuplicateBlock { .. }
                | CompileErrorKind::Unreachable
                | CompileErrorKind::DeadEnd { .. }
                | CompileErrorKind::DuplicateBegin { .. }
                | CompileErrorKind::DuplicateEnd { .. }
                | CompileErrorKind::InvalidWait { .. }
        )
    }

    /// Whether [`CompileError::message`] should add ` in block `…``.
    fn mentions_block(&self) -> bool {
        !self.is_about_block()
            && !matches!(
                self,
                CompileErrorKind::Io { .. }
                    | CompileErrorKind::Syntax { .. }
                    | CompileErrorKind::YamlLimit { .. }
                    | CompileErrorKind::NotAWorkflow
                    | CompileErrorKind::MissingBegin
                    | CompileErrorKind::MissingEnd
                    | CompileErrorKind::Cycle { .. }
            )
    }

    /// What to do about it, where the error alone does not say.
    pub fn hint(&self) -> Option<String> {
        use CompileErrorKind as K;
        let did_you_mean = |s: &Option<String>| s.as_ref().map(|s| format!("did you mean `{s}`?"));
        match self {
            K::UnknownKey { suggestion, .. }
            | K::UnknownBlockType { suggestion, .. }
            | K::UnknownTarget { suggestion, .. }
            | K::UnknownVendor { suggestion, .. }
            | K::UnknownInput { suggestion, .. }
            | K::UnknownValue { suggestion, .. }
            | K::UnknownVariable { suggestion, .. }
            | K::UnknownBlockRef { suggestion, .. }
            | K::UnknownBlockField { suggestion, .. }
            | K::UnknownTimeZone { suggestion, .. }
            | K::UnknownRuleOperator { suggestion, .. }
            | K::UnknownCollection { suggestion, .. }
            | K::UnknownRecordEvent { suggestion, .. } => did_you_mean(suggestion),
            K::UnknownAction {
                vendor, suggestion, ..
            } => suggestion
                .as_ref()
                .map(|s| format!("did you mean `{vendor}.{s}`?"))
                .or_else(|| Some(format!("`blockyard presets list` shows the actions of `{vendor}`"))),
            K::UnknownOutput {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean `{s}`?")),
            K::UnknownOutput { block, .. } => Some(format!(
                "declare it in the `outputs:` of `{block}`"
            )),
            K::BlockNotBefore { itself: true, .. } => Some(
                "a block reads its own call as `response`, `status` and `headers` (in `save:` and `outputs:`)"
                    .to_owned(),
            ),
            K::BlockNotBefore { block, .. } => Some(format!(
                "a block starts once every block before it has settled; lead `{block}` into it with `next`, or read another block"
            )),
            K::YamlLimit { limit } => Some(limit.hint()),
            K::MissingBlockType => Some(
                "add `type:` with one of `begin`, `api`, `role_retrieval`, `wait`, `end`".to_owned(),
            ),
            K::MissingBegin => Some("add a block with `type: begin`".to_owned()),
            K::MissingEnd => Some("add a block with `type: end`".to_owned()),
            K::Unreachable => {
                Some("name it in the `next` or `on_failure` of an earlier block".to_owned())
            }
            K::DeadEnd { end } => Some(format!(
                "give it a `next` or `on_failure` that leads to `{end}`"
            )),
            K::MalformedPreset { .. } => {
                Some("write `vendor.action`, for example `webex.delete_user`".to_owned())
            }
            K::MissingInput { input, .. } => Some(format!(
                "give it in `with:`, or name `records:` in the begin block so `{input}` can come from the subject record"
            )),
            K::Template { .. } => {
                Some("write expressions as `{{name}}` or `<<name>>`".to_owned())
            }
            K::Cron { .. } => Some(
                "use 5 fields (`min hour day month weekday`), 6 with seconds first, or a nickname such as `@daily`"
                    .to_owned(),
            ),
            K::Cycle { .. } => Some("workflows are acyclic: use `retry:` to repeat a call".to_owned()),
            K::EdgeIntoBegin { .. } => Some("`begin` starts the run and takes no incoming edges".to_owned()),
            K::InvalidAnswer { problem, .. } => match problem {
                AnswerProblem::UnknownName { suggestion } => did_you_mean(suggestion),
                AnswerProblem::Success => Some(
                    "`answers` lists the statuses that would otherwise fail the block".to_owned(),
                ),
                AnswerProblem::Transient => Some(
                    "set `retry:` for how long to keep trying".to_owned(),
                ),
                AnswerProblem::NotFoundByList { .. } => {
                    Some("write `not_found`, which counts both".to_owned())
                }
                AnswerProblem::NotAStatus
                | AnswerProblem::Twice
                | AnswerProblem::CountedByNotFound => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for CompileErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CompileErrorKind as K;
        match self {
            K::Io { message } => write!(f, "cannot read the file: {message}"),
            K::Syntax { message } => write!(f, "invalid yaml: {message}"),
            K::NotAWorkflow => write!(f, "a workflow is a mapping with `name` and `blocks`"),
            K::YamlLimit { limit } => write!(f, "{limit}"),
            K::UnknownKey { key, within, .. } if within.is_empty() => write!(f, "unknown key `{key}`"),
            K::UnknownKey { key, within, .. } => write!(f, "unknown key `{key}` in {within}"),
            K::MissingKey { key, within } if within.is_empty() => write!(f, "missing key `{key}`"),
            K::MissingKey { key, within } => write!(f, "missing key `{key}` in {within}"),
            K::InvalidValue { key, message } => write!(f, "invalid `{key}`: {message}"),
            K::DuplicateKey { key, first } => {
                write!(f, "duplicate key `{key}` (first at line {})", first.line)
            }
            K::DuplicateBlock { first } => {
                write!(f, "is defined twice (first at line {})", first.line)
            }
            K::UnknownBlockType { found, .. } => write!(f, "unknown block type `{found}`"),
            K::MissingBlockType => write!(f, "missing key `type`"),
            K::MissingBegin => write!(f, "the workflow has no `begin` block"),
            K::MissingEnd => write!(f, "the workflow has no `end` block"),
            K::DuplicateBegin { first } => {
                write!(f, "is a second `begin` block (the first is `{first}`)")
            }
            K::DuplicateEnd { first } => write!(f, "is a second `end` block (the first is `{first}`)"),
            K::UnknownTarget { edge, target, .. } => {
                write!(f, "`{edge}` names block `{target}`, which does not exist")
            }
            K::EdgeIntoBegin { edge } => write!(f, "`{edge}` leads into `begin`"),
            K::Cycle { blocks } => {
                write!(f, "cycle: ")?;
                for block in blocks {
                    write!(f, "`{block}` → ")?;
                }
                match blocks.first() {
                    Some(first) => write!(f, "`{first}`"),
                    None => Ok(()),
                }
            }
            K::Unreachable => write!(f, "is not reachable from `begin`"),
            K::DeadEnd { end } => write!(f, "has no path to `{end}`"),
            K::MalformedPreset { found } => write!(f, "preset `{found}` is not `vendor.action`"),
            K::UnknownVendor { vendor, .. } => write!(f, "unknown vendor `{vendor}`"),
            K::UnknownAction { vendor, action, .. } => {
                write!(f, "vendor `{vendor}` has no action `{action}`")
            }
            K::NotARoleAction { preset } => {
                write!(f, "preset `{preset}` reads no role, so it cannot serve `role_retrieval`")
            }
            K::MissingInput { preset, input } => {
                write!(f, "preset `{preset}` requires input `{input}`")
            }
            K::UnknownValue {
                key,
                found,
                expected,
                ..
            } => {
                let expected: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
                write!(
                    f,
                    "unknown value `{found}` for `{key}` (expected one of {})",
                    expected.join(", ")
                )
            }
            K::UnknownInput { preset, input, .. } => {
                write!(f, "preset `{preset}` has no input `{input}`")
            }
            K::Template { key, message } => write!(f, "invalid template in `{key}`: {message}"),
            K::UnknownVariable { key, root, .. } => {
                write!(f, "unknown variable `{root}` in `{key}`")
            }
            K::UnknownBlockRef { key, block, .. } => {
                write!(f, "`{key}` reads `blocks.{block}`, but there is no block `{block}`")
            }
            K::BlockNotBefore { key, block, itself: true } => {
                write!(f, "`{key}` reads `blocks.{block}`, its own block, which has not settled yet")
            }
            K::BlockNotBefore { key, block, .. } => write!(
                f,
                "`{key}` reads `blocks.{block}`, but `{block}` is not on the way from `begin` to this block, so it may not have run"
            ),
            K::UnknownBlockField { key, block, field, .. } => write!(
                f,
                "`{key}` reads `blocks.{block}.{field}`; a block has `response`, `outputs`, `status` and `outcome`"
            ),
            K::UnknownOutput {
                key,
                block,
                output,
                declared,
                ..
            } => {
                write!(f, "`{key}` reads output `{output}` of block `{block}`, which ")?;
                if declared.is_empty() {
                    write!(f, "has no outputs")
                } else {
                    let list: Vec<String> = declared.iter().map(|d| format!("`{d}`")).collect();
                    write!(f, "has {}", list.join(", "))
                }
            }
            K::Rhai { key, message } => write!(f, "invalid expression in `{key}`: {message}"),
            K::Cron { expr, message } => write!(f, "invalid cron expression `{expr}`: {message}"),
            K::UnknownTimeZone { zone, .. } => write!(f, "unknown time zone `{zone}`"),
            K::UnknownRuleOperator { op, .. } => write!(f, "unknown rule operator `{op}`"),
            K::UnknownCollection { found, .. } => write!(
                f,
                "unknown record collection `{found}` (collections are `people` and `saas_users`)"
            ),
            K::UnknownRecordEvent { found, .. } => write!(
                f,
                "unknown record event `{found}` (events are `created`, `updated` and `deleted`)"
            ),
            K::InvalidRuleValue { op, message } => {
                write!(f, "rule operator `{op}` {message}")
            }
            K::InvalidTrigger { message } => write!(f, "{message}"),
            K::InvalidGuard { message } => write!(f, "{message}"),
            K::InvalidWait { message } => write!(f, "{message}"),
            K::InvalidAnswer { entry, problem } => {
                write!(f, "`answers` entry `{entry}` {problem}")
            }
            K::InvalidDuration { key, found } => write!(
                f,
                "invalid duration `{found}` for `{key}` (write a number and a unit: `500ms`, `30s`, `5m`, `1h`)"
            ),
        }
    }
}

/// The closest of `candidates` to `found`, when close enough to be a likely typo.
pub fn suggest<'a, I>(found: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let found_lower = found.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != found)
        .map(|c| {
            let lower = c.to_lowercase();
            let distance = strsim::damerau_levenshtein(&found_lower, &lower);
            // Ties go to the candidate sharing the longest prefix: `remove_membership` means
            // `remove_user_membership` more than `get_membership`.
            let prefix = found_lower
                .chars()
                .zip(lower.chars())
                .take_while(|(a, b)| a == b)
                .count();
            (distance, std::cmp::Reverse(prefix), c)
        })
        .filter(|(distance, _, c)| {
            let longest = found.chars().count().max(c.chars().count());
            *distance <= (longest / 3).max(1)
        })
        .min_by_key(|(distance, prefix, _)| (*distance, *prefix))
        .map(|(_, _, c)| c.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_not_unrelated_words() {
        let keys = ["credential", "preset", "with", "next"];
        assert_eq!(suggest("credentail", keys).as_deref(), Some("credential"));
        assert_eq!(suggest("nxt", keys).as_deref(), Some("next"));
        assert_eq!(suggest("banana", keys), None);
    }
}

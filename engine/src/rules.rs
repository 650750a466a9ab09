//! Conditions: rhai expressions (`when:` on Begin blocks and edges) and Oomnitza-style structured
//! rules (`rules:`), both compiled once when a workflow loads.
//!
//! The rhai engine is sandboxed: no modules, no `eval`, bounded operations, string, array and map
//! sizes and expression depth, so a rule can neither do I/O nor run away. rhai checks sizes after
//! an operation and its operation count between operations, so two more bounds hold within one:
//! the built-ins whose result can dwarf their inputs (`replace`, `split`, `map`, ...) check the
//! size of what they would build before building it ([`bounded`]), and each evaluation has a
//! wall-clock limit ([`RuleEngine::set_time_limit`], 10 ms by default; `rule_time_limit` in
//! `blockyard.yaml`), checked at every operation against a clock kept per thread, since the engine
//! is compiled once and shared (a gap between two operations counts at most a tenth of the limit,
//! see [`Clock`]). A limit hit is a [`RuleError`] that says what to do.
//!
//! Structured rules are a closed [`RuleOp`] enum. Case rules: `equals`, `not_equals`, `contains`,
//! `starts_with`, `ends_with` and `in` compare strings case-insensitively (emails and statuses
//! arrive in every case from HR systems and vendors); numbers and booleans compare by value.
//!
//! Evaluation ([`Rule::holds`], [`RuleEngine::eval`]) takes `now` as a parameter and never fails:
//!
//! - A field is read from the record's top level; a missing field and `null` have no value.
//! - `equals`/`in` compare as numbers when both sides are numbers (`60` equals `"60.0"`),
//!   otherwise as lowercased text; a field without a value equals nothing, and so `not_equals`
//!   holds for it.
//! - `contains`, `starts_with`, `ends_with` need a text (or number, or boolean) value; a missing one
//!   does not hold.
//! - `is_empty` holds for a missing field, `null` and `""` (whitespace is a value); `not_empty` is its
//!   negation.
//! - `before_days: N` holds when the field is an RFC 3339 instant or a `YYYY-MM-DD` date strictly
//!   more than N whole days before `now` (`now - date > N days`: 60 days and one second is before 60
//!   days, exactly 60 days is not); `after_days: N` holds when it is within the last N days
//!   (`now - date <= N days`, future dates included). A missing or unparseable date holds for
//!   neither: a never-active user is not silently reclaimed.
//! - A rhai `when:` sees `record` (the record's fields) and `vars`; a result that is not a
//!   boolean, or an error (a type mismatch, a limit hit), is a non-match whose reason is kept
//!   ([`Evaluation::Error`]), never a panic.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A rhai expression that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RhaiError {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl fmt::Display for RhaiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            if line > 1 {
                write!(f, " (expression line {line}, column {column})")?;
            } else {
                write!(f, " (expression column {column})")?;
            }
        }
        Ok(())
    }
}

/// A compiled rhai expression.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    ast: Arc<rhai::AST>,
}

impl Condition {
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn ast(&self) -> &rhai::AST {
        &self.ast
    }
}

mod bounded;

/// How long one evaluation may run when nothing else is configured.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_millis(10);

/// The most operations one evaluation may run.
pub const MAX_OPERATIONS: u64 = 100_000;

thread_local! {
    /// The clock of the evaluation running on this thread (see [`Clock`]).
    static CLOCK: Cell<Option<Clock>> = const { Cell::new(None) };
}

/// The time an evaluation has used, read at each operation.
///
/// The time between two operations counts in full up to a tenth of the limit: one operation
/// cannot take long (sizes are bounded), so a longer gap is this thread waiting for a busy
/// machine's CPU, which must not fail a sound rule. A runaway rule still stops within its limit
/// plus a few operations.
#[derive(Debug, Clone, Copy)]
struct Clock {
    last: Instant,
    used: Duration,
    limit: Duration,
}

impl Clock {
    /// Counts the time since the last operation; true once the limit is passed.
    fn tick() -> bool {
        let Some(mut clock) = CLOCK.get() else {
            return false;
        };
        let now = Instant::now();
        clock.used += now
            .saturating_duration_since(clock.last)
            .min(clock.limit / 10);
        clock.last = now;
        CLOCK.set(Some(clock));
        clock.used > clock.limit
    }
}

/// The token `on_progress` stops an evaluation with when its time is up.
#[derive(Debug, Clone, Copy)]
struct TimeUp;

/// Starts this thread's clock for one evaluation; the previous one comes back when dropped.
struct Timed(Option<Clock>);

impl Timed {
    fn start(limit: Duration) -> Timed {
        Timed(CLOCK.replace(Some(Clock {
            last: Instant::now(),
            used: Duration::ZERO,
            limit,
        })))
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        CLOCK.set(self.0);
    }
}

/// What a rule built that passed a size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// One string's bytes.
    String,
    /// The bytes of all the strings in an array or map.
    Strings,
    /// The items of an array (a blob's bytes count as items), through nested arrays and maps.
    Array,
    /// The entries of an object map, through nested arrays and maps.
    Map,
}

/// Why a rule's evaluation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// It ran past the time limit.
    #[error("ran longer than {} ms, the time limit for a rule; simplify the rule, or raise `rule_time_limit` in blockyard.yaml", limit.as_millis())]
    TimeLimit { limit: Duration },
    /// It ran more than [`MAX_OPERATIONS`] operations.
    #[error("ran more than {limit} operations, the limit for a rule; simplify the rule")]
    Operations { limit: u64 },
    /// It would build (or built) a value over a size limit: `by` a bounded built-in, which knows
    /// the `size` when it can compute it up front, or else as rhai's own checks found.
    #[error("{}", describe_too_large(*by, *measure, *size, *limit))]
    TooLarge {
        by: Option<&'static str>,
        measure: Measure,
        size: Option<u64>,
        limit: u64,
    },
    /// Anything else rhai reports (a type mismatch, an unknown function), lowercased.
    #[error("{message}")]
    Failed { message: String },
}

impl RuleError {
    /// Whether a limit stopped it (the rule is too costly), rather than a mistake in it.
    pub fn is_limit(&self) -> bool {
        !matches!(self, RuleError::Failed { .. })
    }

    fn from_rhai(err: &rhai::EvalAltResult, engine: &rhai::Engine, limit: Duration) -> RuleError {
        use rhai::EvalAltResult as E;
        let mut inner = err;
        // A bounded built-in's or the clock's stop, however deep in closure calls it happened.
        while let E::ErrorInFunctionCall(_, _, err, _) = inner {
            inner = err;
        }
        match inner {
            E::ErrorRuntime(value, _) if value.is::<RuleError>() => {
                return value.clone().cast::<RuleError>()
            }
            E::ErrorTerminated(token, _) if token.is::<TimeUp>() => {
                return RuleError::TimeLimit { limit }
            }
            E::ErrorTooManyOperations(_) => {
                return RuleError::Operations {
                    limit: engine.max_operations(),
                }
            }
            E::ErrorDataTooLarge(what, _) => {
                let (measure, limit) = if what.contains("string") {
                    (Measure::Strings, engine.max_string_size())
                } else if what.contains("map") {
                    (Measure::Map, engine.max_map_size())
                } else {
                    (Measure::Array, engine.max_array_size())
                };
                return RuleError::TooLarge {
                    by: None,
                    measure,
                    size: None,
                    limit: limit as u64,
                };
            }
            _ => {}
        }
        RuleError::Failed {
            message: crate::template::lowercase_first(&err.to_string()),
        }
    }
}

fn describe_too_large(by: Option<&str>, measure: Measure, size: Option<u64>, limit: u64) -> String {
    let (what, unit) = match measure {
        Measure::String => ("a string of", "bytes"),
        Measure::Strings => ("strings of", "bytes"),
        Measure::Array => ("an array of", "items"),
        Measure::Map => ("an object map of", "entries"),
    };
    let size = match size {
        Some(size) => format!("{size} {unit}"),
        None => format!("more than {limit} {unit}"),
    };
    let by = match by {
        Some(by) => format!("`{by}` would build"),
        None => "it needs".to_owned(),
    };
    format!("{by} {what} {size}; the limit for a rule is {limit} {unit}, so simplify the rule")
}

/// The sandboxed rhai engine.
pub struct RuleEngine {
    engine: rhai::Engine,
    /// Each evaluation's time limit, in microseconds.
    time_limit: AtomicU64,
}

impl fmt::Debug for RuleEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RuleEngine")
    }
}

impl Default for RuleEngine {
    fn default() -> RuleEngine {
        RuleEngine::new()
    }
}

impl RuleEngine {
    pub fn new() -> RuleEngine {
        let mut engine = rhai::Engine::new();
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});
        engine.disable_symbol("eval");
        engine.set_max_operations(MAX_OPERATIONS);
        engine.set_max_string_size(64 * 1024);
        engine.set_max_array_size(10_000);
        engine.set_max_map_size(10_000);
        engine.set_max_expr_depths(64, 32);
        engine.set_max_call_levels(16);
        // Every operation looks at the clock: a single one is bounded in size, not in time.
        engine.on_progress(|_| Clock::tick().then(|| rhai::Dynamic::from(TimeUp)));
        bounded::register(&mut engine);
        engine.register_fn("days_since", days_since);
        engine.register_fn("days_idle", |record: rhai::Map| {
            let field = |name: &str| {
                record
                    .get(name)
                    .and_then(|v| v.clone().into_string().ok())
                    .filter(|s| !s.is_empty())
            };
            days_idle(
                field("last_activity").as_deref(),
                field("created_at").as_deref(),
            )
        });
        RuleEngine {
            engine,
            time_limit: AtomicU64::new(DEFAULT_TIME_LIMIT.as_micros() as u64),
        }
    }

    /// How long one evaluation may run from now on (`rule_time_limit` in `blockyard.yaml`).
    pub fn set_time_limit(&self, limit: Duration) {
        let micros = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        self.time_limit.store(micros, Ordering::Relaxed);
    }

    pub fn time_limit(&self) -> Duration {
        Duration::from_micros(self.time_limit.load(Ordering::Relaxed))
    }

    /// Evaluates `ast` with `scope`, within the time limit.
    pub fn run<T: Clone + Send + Sync + 'static>(
        &self,
        scope: &mut rhai::Scope,
        ast: &rhai::AST,
    ) -> Result<T, RuleError> {
        let limit = self.time_limit();
        let _timed = Timed::start(limit);
        self.engine
            .eval_ast_with_scope::<T>(scope, ast)
            .map_err(|err| RuleError::from_rhai(&err, &self.engine, limit))
    }

    /// Compiles an expression (statements and loops are not expressions, so cannot appear).
    pub fn compile(&self, source: &str) -> Result<Condition, RhaiError> {
        self.engine
            .compile_expression(source)
            .map(|ast| Condition {
                source: source.to_owned(),
                ast: Arc::new(ast),
            })
            .map_err(|err| RhaiError {
                message: crate::template::lowercase_first(&err.err_type().to_string()),
                line: err.position().line(),
                column: err.position().position(),
            })
    }

    pub fn engine(&self) -> &rhai::Engine {
        &self.engine
    }
}

/// Whole days from an RFC 3339 instant (or a `YYYY-MM-DD` date) until now ([`crate::as_of::now`]:
/// in an edge condition, when its target became ready, also in a replay); -1 when unparseable.
pub fn days_since(date: &str) -> i64 {
    parse_instant(date)
        .map(|at| (crate::as_of::now() - at).num_days())
        .unwrap_or(-1)
}

/// Days without activity, as license reclamation counts them: since `last_activity`, or since
/// `created_at` for a user who was never active; -1 when neither is a date. rhai: `days_idle(record)`.
pub fn days_idle(last_activity: Option<&str>, created_at: Option<&str>) -> i64 {
    match last_activity.or(created_at) {
        Some(date) => days_since(date),
        None => -1,
    }
}

/// An RFC 3339 instant or a `YYYY-MM-DD` date (taken as midnight UTC).
pub fn parse_instant(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&chrono::Utc));
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// A structured rule operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOp {
    Equals,
    NotEquals,
    Contains,
    StartsWith,
    EndsWith,
    IsEmpty,
    NotEmpty,
    In,
    BeforeDays,
    AfterDays,
}

impl RuleOp {
    pub const NAMES: [&'static str; 10] = [
        "equals",
        "not_equals",
        "contains",
        "starts_with",
        "ends_with",
        "is_empty",
        "not_empty",
        "in",
        "before_days",
        "after_days",
    ];

    pub fn parse(name: &str) -> Option<RuleOp> {
        Some(match name {
            "equals" => RuleOp::Equals,
            "not_equals" => RuleOp::NotEquals,
            "contains" => RuleOp::Contains,
            "starts_with" => RuleOp::StartsWith,
            "ends_with" => RuleOp::EndsWith,
            "is_empty" => RuleOp::IsEmpty,
            "not_empty" => RuleOp::NotEmpty,
            "in" => RuleOp::In,
            "before_days" => RuleOp::BeforeDays,
            "after_days" => RuleOp::AfterDays,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A checked structured rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub field: String,
    pub op: RuleOp,
    pub value: RuleValue,
}

/// A rule's operand, normalised when the workflow loads.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleValue {
    None,
    /// Lowercased text (for case-insensitive string comparisons).
    Text(String),
    /// Lowercased members of `in`.
    List(Vec<String>),
    Days(i64),
}

/// Why a rule's value does not fit its operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleValueError(pub String);

impl Rule {
    pub fn new(field: &str, op: RuleOp, value: Option<&Value>) -> Result<Rule, RuleValueError> {
        let text = |v: &Value| match v {
            Value::String(s) => s.to_lowercase(),
            other => other.to_string(),
        };
        let value = match op {
            RuleOp::IsEmpty | RuleOp::NotEmpty => match value {
                None | Some(Value::Null) => RuleValue::None,
                Some(_) => return Err(RuleValueError("takes no `value`".to_owned())),
            },
            RuleOp::In => match value {
                Some(Value::Array(items)) => RuleValue::List(items.iter().map(text).collect()),
                _ => return Err(RuleValueError("needs a list as `value`".to_owned())),
            },
            RuleOp::BeforeDays | RuleOp::AfterDays => match value.and_then(Value::as_i64) {
                Some(days) if days >= 0 => RuleValue::Days(days),
                _ => {
                    return Err(RuleValueError(
                        "needs a whole number of days as `value`".to_owned(),
                    ))
                }
            },
            _ => match value {
                Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                    RuleValue::Text(text(v))
                }
                _ => {
                    return Err(RuleValueError(
                        "needs a string, number or boolean as `value`".to_owned(),
                    ))
                }
            },
        };
        Ok(Rule {
            field: field.to_owned(),
            op,
            value,
        })
    }
}

/// The outcome of a rhai condition.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Evaluation {
    /// The expression returned a boolean.
    Bool { value: bool },
    /// It returned something else (shown as text); a non-match.
    NotBool { value: String, type_name: String },
    /// It failed (a type mismatch, an unknown function, a limit); a non-match.
    Error { message: String },
}

impl Evaluation {
    /// Whether the condition holds.
    pub fn matched(&self) -> bool {
        matches!(self, Evaluation::Bool { value: true })
    }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evaluation::Bool { value } => write!(f, "{value}"),
            Evaluation::NotBool { value, type_name } => {
                write!(f, "`{value}` ({type_name}, not a boolean: no match)")
            }
            Evaluation::Error { message } => write!(f, "error: {message} (no match)"),
        }
    }
}

impl RuleEngine {
    /// Evaluates `condition` with `record` and `vars` in scope (see [`to_dynamic`]).
    ///
    /// The scope is built per call from the already converted values (a clone of a rhai map
    /// shares nothing mutable, so conditions cannot change the record).
    pub fn eval(
        &self,
        condition: &Condition,
        record: &rhai::Dynamic,
        vars: &rhai::Dynamic,
    ) -> Evaluation {
        Evaluation::from(self.evaluate(condition, record, vars))
    }

    /// [`Self::eval`], with the error as data (to tell a limit from a mistake).
    pub fn evaluate(
        &self,
        condition: &Condition,
        record: &rhai::Dynamic,
        vars: &rhai::Dynamic,
    ) -> Result<rhai::Dynamic, RuleError> {
        let mut scope = rhai::Scope::new();
        scope.push_constant_dynamic("record", record.clone());
        scope.push_constant_dynamic("vars", vars.clone());
        self.run::<rhai::Dynamic>(&mut scope, &condition.ast)
    }
}

impl From<Result<rhai::Dynamic, RuleError>> for Evaluation {
    fn from(result: Result<rhai::Dynamic, RuleError>) -> Evaluation {
        match result {
            Ok(value) => match value.as_bool() {
                Ok(value) => Evaluation::Bool { value },
                Err(type_name) => Evaluation::NotBool {
                    value: value.to_string(),
                    type_name: type_name.to_owned(),
                },
            },
            Err(err) => Evaluation::Error {
                message: err.to_string(),
            },
        }
    }
}

/// Converts JSON into a rhai value (objects become maps, numbers `i64` or `f64`).
pub fn to_dynamic(value: &Value) -> rhai::Dynamic {
    match value {
        Value::Null => rhai::Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            let array: rhai::Array = items.iter().map(to_dynamic).collect();
            array.into()
        }
        Value::Object(map) => map_to_dynamic(map),
    }
}

/// Converts a record's fields into a rhai map.
pub fn map_to_dynamic(map: &serde_json::Map<String, Value>) -> rhai::Dynamic {
    let mut out = rhai::Map::new();
    for (key, value) in map {
        out.insert(key.as_str().into(), to_dynamic(value));
    }
    out.into()
}

impl Rule {
    /// Whether the rule holds for `record` at `now` (see the module doc for the case rules).
    pub fn holds(
        &self,
        record: &serde_json::Map<String, Value>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let field = match record.get(&self.field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        };
        match (self.op, &self.value) {
            (RuleOp::IsEmpty, _) => is_empty(field),
            (RuleOp::NotEmpty, _) => !is_empty(field),
            (RuleOp::Equals, RuleValue::Text(want)) => field.is_some_and(|v| equals(v, want)),
            (RuleOp::NotEquals, RuleValue::Text(want)) => !field.is_some_and(|v| equals(v, want)),
            (RuleOp::In, RuleValue::List(items)) => {
                field.is_some_and(|v| items.iter().any(|want| equals(v, want)))
            }
            (RuleOp::Contains, RuleValue::Text(want)) => {
                text_of(field).is_some_and(|t| lower(&t).contains(want.as_str()))
            }
            (RuleOp::StartsWith, RuleValue::Text(want)) => text_of(field)
                .is_some_and(|t| t.get(..want.len()).is_some_and(|p| eq_lower(p, want))),
            (RuleOp::EndsWith, RuleValue::Text(want)) => text_of(field).is_some_and(|t| {
                t.len() >= want.len()
                    && t.get(t.len() - want.len()..)
                        .is_some_and(|s| eq_lower(s, want))
            }),
            (RuleOp::BeforeDays, RuleValue::Days(days)) => {
                age(field, now).is_some_and(|age| age > chrono::TimeDelta::days(*days))
            }
            (RuleOp::AfterDays, RuleValue::Days(days)) => {
                age(field, now).is_some_and(|age| age <= chrono::TimeDelta::days(*days))
            }
            // `Rule::new` pairs every operator with its value shape; any other pairing cannot be
            // built, and would not hold.
            _ => false,
        }
    }

    /// The rule as written: `status equals "terminated"`.
    pub fn describe(&self) -> String {
        match &self.value {
            RuleValue::None => format!("{} {}", self.field, self.op.name()),
            RuleValue::Text(t) => format!("{} {} {t:?}", self.field, self.op.name()),
            RuleValue::List(items) => format!("{} {} {items:?}", self.field, self.op.name()),
            RuleValue::Days(d) => format!("{} {} {d}", self.field, self.op.name()),
        }
    }
}

fn is_empty(field: Option<&Value>) -> bool {
    match field {
        None => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

fn text_of(field: Option<&Value>) -> Option<std::borrow::Cow<'_, str>> {
    match field? {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(std::borrow::Cow::Owned(v.to_string())),
        _ => None,
    }
}

/// Lowercases only when needed.
fn lower(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_uppercase) {
        std::borrow::Cow::Owned(text.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// `text` equals the already lowercased `want`, ignoring case.
fn eq_lower(text: &str, want: &str) -> bool {
    if text.is_ascii() {
        text.eq_ignore_ascii_case(want)
    } else {
        text.to_lowercase() == want
    }
}

fn equals(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => {
            eq_lower(s, want)
                || matches!((s.trim().parse::<f64>(), want.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
        }
        Value::Number(n) => match (n.as_f64(), want.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => false,
        },
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        _ => false,
    }
}

fn age(field: Option<&Value>, now: chrono::DateTime<chrono::Utc>) -> Option<chrono::TimeDelta> {
    match field? {
        Value::String(s) => parse_instant(s).map(|at| now - at),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> chrono::DateTime<chrono::Utc> {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    fn holds(field: &str, op: &str, value: Option<Value>, record: Value) -> bool {
        let rule = Rule::new(field, RuleOp::parse(op).unwrap(), value.as_ref()).unwrap();
        rule.holds(record.as_object().unwrap(), now())
    }

    #[test]
    fn equals_ignores_case_and_compares_numbers_by_value() {
        let r = json!({"status": "Terminated", "age": 60, "n": "60.0", "admin": true});
        assert!(holds(
            "status",
            "equals",
            Some(json!("terminated")),
            r.clone()
        ));
        assert!(holds(
            "status",
            "equals",
            Some(json!("TERMINATED")),
            r.clone()
        ));
        assert!(!holds("status", "equals", Some(json!("active")), r.clone()));
        assert!(holds("age", "equals", Some(json!("60")), r.clone()));
        assert!(holds("n", "equals", Some(json!(60)), r.clone()));
        assert!(holds("admin", "equals", Some(json!(true)), r.clone()));
        assert!(!holds("missing", "equals", Some(json!("x")), r.clone()));
    }

    #[test]
    fn not_equals_holds_for_a_missing_field() {
        let r = json!({"status": "Active"});
        assert!(holds(
            "status",
            "not_equals",
            Some(json!("deactivated")),
            r.clone()
        ));
        assert!(!holds(
            "status",
            "not_equals",
            Some(json!("ACTIVE")),
            r.clone()
        ));
        assert!(holds("missing", "not_equals", Some(json!("x")), r));
    }

    #[test]
    fn text_operators_ignore_case() {
        let r = json!({"email": "Jane.Doe@ACME.com", "n": 12345});
        assert!(holds(
            "email",
            "contains",
            Some(json!("doe@acme")),
            r.clone()
        ));
        assert!(holds(
            "email",
            "starts_with",
            Some(json!("JANE")),
            r.clone()
        ));
        assert!(holds(
            "email",
            "ends_with",
            Some(json!("@acme.COM")),
            r.clone()
        ));
        assert!(!holds(
            "email",
            "ends_with",
            Some(json!("@acme.org")),
            r.clone()
        ));
        assert!(holds("n", "starts_with", Some(json!(123)), r.clone()));
        assert!(!holds("missing", "contains", Some(json!("a")), r.clone()));
        assert!(!holds(
            "email",
            "starts_with",
            Some(json!("jane.doe@acme.com.au")),
            r
        ));
    }

    #[test]
    fn non_ascii_text_compares_without_case() {
        let r = json!({"name": "ÉMILE Zoë"});
        assert!(holds("name", "equals", Some(json!("émile zoË")), r.clone()));
        assert!(holds(
            "name",
            "starts_with",
            Some(json!("émile")),
            r.clone()
        ));
        assert!(holds("name", "ends_with", Some(json!("ZOË")), r.clone()));
        assert!(holds("name", "contains", Some(json!("le z")), r));
    }

    #[test]
    fn is_empty_covers_missing_null_and_the_empty_string() {
        let r = json!({"a": "", "b": null, "c": " ", "d": 0});
        for field in ["a", "b", "missing"] {
            assert!(holds(field, "is_empty", None, r.clone()), "{field}");
            assert!(!holds(field, "not_empty", None, r.clone()), "{field}");
        }
        for field in ["c", "d"] {
            assert!(!holds(field, "is_empty", None, r.clone()), "{field}");
            assert!(holds(field, "not_empty", None, r.clone()), "{field}");
        }
    }

    #[test]
    fn in_matches_any_member_without_case() {
        let r = json!({"dept": "Sales", "level": 3});
        assert!(holds(
            "dept",
            "in",
            Some(json!(["sales", "Support"])),
            r.clone()
        ));
        assert!(!holds("dept", "in", Some(json!(["support"])), r.clone()));
        assert!(holds("level", "in", Some(json!([1, 3])), r.clone()));
        assert!(!holds("missing", "in", Some(json!(["x"])), r));
    }

    #[test]
    fn before_days_is_strictly_more_than_n_days_ago() {
        // now is 2026-03-01T12:00:00Z; 60 days before is 2025-12-31T12:00:00Z.
        let at = |t: &str| json!({ "last_activity": t });
        let before = |t: &str| holds("last_activity", "before_days", Some(json!(60)), at(t));
        assert!(before("2025-12-31T11:59:59Z"));
        assert!(!before("2025-12-31T12:00:00Z"));
        assert!(!before("2026-02-28T00:00:00Z"));
        assert!(before("2025-12-01"));
        assert!(!before("2025-12-31T06:00:00-07:00"));
        assert!(!before("not a date"));
        assert!(!holds("missing", "before_days", Some(json!(60)), at("x")));
        assert!(!holds(
            "last_activity",
            "before_days",
            Some(json!(1)),
            json!({"last_activity": 5})
        ));
    }

    #[test]
    fn after_days_is_within_the_last_n_days() {
        let at = |t: &str| json!({ "last_activity": t });
        let after = |t: &str| holds("last_activity", "after_days", Some(json!(30)), at(t));
        assert!(after("2026-01-30T12:00:00Z"));
        assert!(!after("2026-01-30T11:59:59Z"));
        assert!(after("2026-03-01"));
        assert!(after("2026-04-01T00:00:00Z"));
        assert!(!after(""));
        assert!(!holds("missing", "after_days", Some(json!(30)), at("x")));
    }

    #[test]
    fn rhai_conditions_see_record_and_vars_and_errors_are_non_matches() {
        let engine = RuleEngine::new();
        let vars = to_dynamic(&json!({"depts": ["Sales"]}));
        let record = to_dynamic(&json!({"status": "terminated", "department": "Sales", "n": 3}));
        let eval = |src: &str| engine.eval(&engine.compile(src).unwrap(), &record, &vars);
        assert_eq!(
            eval(r#"record.status == "terminated""#),
            Evaluation::Bool { value: true }
        );
        assert!(eval("vars.depts.contains(record.department)").matched());
        assert_eq!(
            eval("record.n + 1"),
            Evaluation::NotBool {
                value: "4".to_owned(),
                type_name: "i64".to_owned()
            }
        );
        let Evaluation::Error { message } = eval("record.status - 1 > 0") else {
            panic!("expected an error");
        };
        assert!(message.starts_with("function not found"), "{message}");
        assert!(!eval("record.missing == 1").matched());
    }

    /// The message of an evaluation that must fail.
    fn failure(engine: &RuleEngine, source: &str, record: Value) -> String {
        let condition = engine.compile(source).unwrap();
        match engine.eval(&condition, &to_dynamic(&record), &to_dynamic(&json!({}))) {
            Evaluation::Error { message } => message,
            other => panic!("`{source}` did not fail: {other:?}"),
        }
    }

    #[test]
    fn amplifying_built_ins_refuse_a_result_over_the_limits_before_building_it() {
        let engine = RuleEngine::new();
        // The sizes are what is tested: time is no limit here, however slow the machine.
        engine.set_time_limit(Duration::from_secs(600));
        let fails = |source: &str| failure(&engine, source, json!({}));
        // 10,000 × 10,000 bytes: this allocated about 300 MB before rhai's size check ran.
        assert_eq!(
            fails(r#"blob(10000, 97).as_string().replace("a", blob(10000, 97).as_string()) == """#),
            "`replace` would build a string of 100000000 bytes; the limit for a rule is 65536 bytes, so simplify the rule"
        );
        assert_eq!(
            fails(r#"blob(10000, 97).as_string().replace("", "1234567") == """#),
            "`replace` would build a string of 80007 bytes; the limit for a rule is 65536 bytes, so simplify the rule"
        );
        assert_eq!(
            fails(r#"blob(10000, 97).as_string().replace('a', blob(10000, 98).as_string()) == """#),
            "`replace` would build a string of 100000000 bytes; the limit for a rule is 65536 bytes, so simplify the rule"
        );
        assert_eq!(
            fails(r#"blob(10000, 97).as_string().split("").len() > 0"#),
            "`split` would build an array of 10002 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        assert_eq!(
            fails(r#"blob(10000, 97).as_string().split('a', 20000).len() > 0"#),
            "`split` would build an array of 10001 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        assert_eq!(
            fails(r#"blob(10000, 97).as_string().split_rev("a").len() > 0"#),
            "`split_rev` would build an array of 10001 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        // Each call's result is within the limits, the array they add up to is not: this built
        // 10,000 arrays of 5,000 items (800 MB) before the check.
        assert_eq!(
            fails("blob(10000, 97).to_array().map(|x| blob(5000, 97).to_array()).len() > 0"),
            "`map` would build an array of more than 10000 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        assert_eq!(
            fails("blob(10000, 97).to_array().zip(blob(10000, 1).to_array(), |a, b| blob(5000, a)).len() > 0"),
            "`zip` would build an array of more than 10000 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        assert_eq!(
            fails("blob(5000, 97).to_array().map(|x| blob(20, x).as_string()).len() > 0"),
            "`map` would build strings of more than 65536 bytes; the limit for a rule is 65536 bytes, so simplify the rule"
        );
        assert_eq!(
            fails("(blob(10000, 97).as_string() + \"a\").to_chars().len() > 0"),
            "`to_chars` would build an array of 10001 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        assert_eq!(
            fails("blob(10000, 1).to_array().for_each(|| this = blob(5000, 1).to_array()) == ()"),
            "`for_each` would build an array of more than 10000 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        assert_eq!(
            fails("#{a: 1, b: 2}.map(|k| blob(9000, 1).to_array()).len() > 0"),
            "`map` would build an array of more than 10000 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        // rhai's own checks: after `+`, which at most doubles what it is given, and before `pad`
        // and `blob`.
        let s = "blob(10000, 97).as_string()";
        assert_eq!(
            fails(&format!("({s} + {s} + {s} + {s} + {s} + {s} + {s}).len() > 0")),
            "it needs strings of more than 65536 bytes; the limit for a rule is 65536 bytes, so simplify the rule"
        );
        assert_eq!(
            fails(r#"("" + "a").pad(70000, "bc") == ()"#),
            "it needs strings of more than 65536 bytes; the limit for a rule is 65536 bytes, so simplify the rule"
        );
        assert_eq!(
            fails("blob(20000, 1).len() > 0"),
            "it needs an array of more than 10000 items; the limit for a rule is 10000 items, so simplify the rule"
        );
        assert_eq!(
            fails("[].pad(20000, 1).len() > 0"),
            "it needs an array of more than 10000 items; the limit for a rule is 10000 items, so simplify the rule"
        );
    }

    #[test]
    fn bounded_built_ins_otherwise_behave_as_rhais() {
        let engine = RuleEngine::new();
        let record = to_dynamic(&json!({"s": "a-b-c", "list": [1, 2, 3], "m": {"x": 1}}));
        let vars = to_dynamic(&json!({}));
        let eval = |source: &str| engine.eval(&engine.compile(source).unwrap(), &record, &vars);
        let holds = |source: &str| {
            assert_eq!(eval(source), Evaluation::Bool { value: true }, "{source}");
        };
        holds(r#"record.s.split("-") == ["a", "b", "c"]"#);
        holds(r#"record.s.split('-') == ["a", "b", "c"]"#);
        holds(r#"record.s.split("-", 2) == ["a", "b-c"]"#);
        holds(r#"record.s.split('-', 2) == ["a", "b-c"]"#);
        holds(r#"record.s.split_rev("-") == ["c", "b", "a"]"#);
        holds(r#"record.s.split_rev("-", 2) == ["c", "a-b"]"#);
        holds(r#"record.s.split_rev('-') == ["c", "b", "a"]"#);
        holds(r#"record.s.split_rev('-', 2) == ["c", "a-b"]"#);
        holds(r#""a b  c".split() == ["a", "b", "c"]"#);
        holds(r#""".split(",") == [""]"#);
        holds(r#"record.s.to_chars().len() == 5"#);
        holds(r#"("" + record.s).replace("-", "+") == ()"#);
        holds(r#"record.list.map(|x| x * 2) == [2, 4, 6]"#);
        holds(r#"record.list.map(|x, i| x * i) == [0, 2, 6]"#);
        holds(r#"record.list.map(|| this + 1) == [2, 3, 4]"#);
        holds(r#"record.list.zip([10, 20, 30], |a, b| a + b) == [11, 22, 33]"#);
        holds(r#"record.list.zip([10, 20, 30], |a, b, i| i) == [0, 1, 2]"#);
        holds(r#"record.m.map(|k| this + 1) == #{x: 2}"#);
        holds(r#"record.m.map(|k, v| k + v) == #{x: "x1"}"#);
        holds(r#"[1, 2, 3].for_each(|| this *= 2) == ()"#);
        // `replace` changes its string in place, which only a script (not a condition) can show.
        let script = |source: &str| engine.engine().eval::<rhai::Dynamic>(source).unwrap();
        for (source, replaced) in [
            (r#"let s = "a-b-c"; s.replace("-", "+"); s"#, "a+b+c"),
            (r#"let s = "a-b-c"; s.replace("-", '+'); s"#, "a+b+c"),
            (r#"let s = "a-b-c"; s.replace('-', "<>"); s"#, "a<>b<>c"),
            (r#"let s = "a-b-c"; s.replace('-', '+'); s"#, "a+b+c"),
            (r#"let s = "ab"; s.replace("", "."); s"#, ".a.b."),
            (r#"let s = ""; s.replace("", "."); s"#, ""),
            (
                r#"let xs = [1, 2]; xs.for_each(|i| this += i); xs"#,
                "[1, 3]",
            ),
        ] {
            assert_eq!(script(source).to_string(), replaced, "{source}");
        }
        assert_eq!(
            eval("record.list.map(|x| x.nope())"),
            Evaluation::Error {
                message: "function not found: nope (i64) (line 1, position 23)\nin closure call (line 1, position 13)\nin call to function 'map' (line 1, position 13)".to_owned()
            }
        );
    }

    #[test]
    fn closures_called_by_built_ins_are_bounded_by_the_time_limit() {
        // rhai counts the operations of a closure that `map` calls apart from the expression's,
        // so 10,000 closures of 1,000 operations each pass its operation limit; the clock stops
        // them.
        let engine = RuleEngine::new();
        assert_eq!(
            failure(
                &engine,
                "blob(10000, 1).to_array().map(|x| blob(1000, 1).to_array().map(|y| y + x).len()).len() > 0",
                json!({})
            ),
            "ran longer than 10 ms, the time limit for a rule; simplify the rule, or raise `rule_time_limit` in blockyard.yaml"
        );
    }

    #[test]
    fn an_evaluation_stops_at_the_time_limit() {
        let engine = RuleEngine::new();
        // Each `contains` compares 10,000 items, and the expression makes 1,000 of them: seconds
        // of work in few operations and little memory.
        let list: Vec<i64> = (0..10_000).collect();
        assert_eq!(
            failure(
                &engine,
                "blob(1000, 1).to_array().map(|x| record.list.contains(-1)).len() > 0",
                json!({ "list": list })
            ),
            "ran longer than 10 ms, the time limit for a rule; simplify the rule, or raise `rule_time_limit` in blockyard.yaml"
        );
    }

    #[test]
    fn days_idle_counts_from_creation_for_users_never_active() {
        let engine = RuleEngine::new();
        let idle = engine.compile("days_idle(record) > 60").unwrap();
        let eval = |record: serde_json::Value| {
            engine
                .eval(&idle, &to_dynamic(&record), &to_dynamic(&json!({})))
                .matched()
        };
        assert!(eval(json!({"last_activity": "2020-01-01T00:00:00Z"})));
        assert!(eval(
            json!({"last_activity": "", "created_at": "2020-01-01"})
        ));
        assert!(!eval(
            json!({"last_activity": chrono::Utc::now().to_rfc3339(), "created_at": "2020-01-01"})
        ));
        // Neither date: -1 days, never idle.
        assert!(!eval(json!({})));
    }
}

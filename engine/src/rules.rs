//! Conditions: rhai expressions (`when:` on Begin blocks and edges) and Oomnitza-style structured
//! rules (`rules:`), both compiled once when a workflow loads.
//!
//! The rhai engine is sandboxed: no modules, no `eval`, bounded operations, string, array and map
//! sizes and expression depth, so a rule can neither do I/O nor run away. Structured rules are a
//! closed [`RuleOp`] enum. Case rules: `equals`, `not_equals`, `contains`, `starts_with`,
//! `ends_with` and `in` compare strings case-insensitively (emails and statuses arrive in every
//! case from HR systems and vendors); numbers and booleans compare by value.
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

use std::fmt;
use std::sync::Arc;

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

/// The sandboxed rhai engine.
pub struct RuleEngine {
    engine: rhai::Engine,
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
        engine.set_max_operations(100_000);
        engine.set_max_string_size(64 * 1024);
        engine.set_max_array_size(10_000);
        engine.set_max_map_size(10_000);
        engine.set_max_expr_depths(64, 32);
        engine.set_max_call_levels(16);
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
        RuleEngine { engine }
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
        let mut scope = rhai::Scope::new();
        scope.push_constant_dynamic("record", record.clone());
        scope.push_constant_dynamic("vars", vars.clone());
        match self
            .engine
            .eval_ast_with_scope::<rhai::Dynamic>(&mut scope, &condition.ast)
        {
            Ok(value) => match value.as_bool() {
                Ok(value) => Evaluation::Bool { value },
                Err(type_name) => Evaluation::NotBool {
                    value: value.to_string(),
                    type_name: type_name.to_owned(),
                },
            },
            Err(err) => Evaluation::Error {
                message: crate::template::lowercase_first(&err.to_string()),
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

//! Conditions: rhai expressions (`when:` on Begin blocks and edges) and Oomnitza-style structured
//! rules (`rules:`), both compiled once when a workflow loads.
//!
//! The rhai engine is sandboxed: no modules, no `eval`, bounded operations, string, array and map
//! sizes and expression depth, so a rule can neither do I/O nor run away. Structured rules are a
//! closed [`RuleOp`] enum. Case rules: `equals`, `not_equals`, `contains`, `starts_with`,
//! `ends_with` and `in` compare strings case-insensitively (emails and statuses arrive in every
//! case from HR systems and vendors); numbers and booleans compare by value.

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
                message: lowercase_first(&err.err_type().to_string()),
                line: err.position().line(),
                column: err.position().position(),
            })
    }

    pub fn engine(&self) -> &rhai::Engine {
        &self.engine
    }
}

/// Whole days from an RFC 3339 instant (or a `YYYY-MM-DD` date) until now; -1 when unparseable.
pub fn days_since(date: &str) -> i64 {
    parse_instant(date)
        .map(|at| (chrono::Utc::now() - at).num_days())
        .unwrap_or(-1)
}

/// An RFC 3339 instant or a `YYYY-MM-DD` date (taken as midnight UTC).
pub fn parse_instant(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&chrono::Utc));
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
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

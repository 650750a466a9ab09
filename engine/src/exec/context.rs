//! The run context templates and conditions see, and the conversions around it.
//!
//! A template sees `{record, vars, blocks: {ID: {response, outputs, status, outcome}}, run: {id,
//! started_at}}` (in an offline replay, the recorded run's id and start); inside `save:` and `outputs:` also `response`, `status` and `headers` of the
//! block's own call. `blocks.ID.status` is the HTTP status of the block's call (as `status` is
//! inside `save:`), `outcome` is how the block settled (`succeeded`, `failed`, `skipped`,
//! `planned`). Edge `when:` conditions are rhai over the same context.

use serde_json::{Map, Value};

use crate::rules::{Condition, RuleError};

/// `{record, vars, blocks, run}`.
pub(crate) fn build(
    record: &Value,
    vars: &Map<String, Value>,
    blocks: Map<String, Value>,
    run: &Value,
) -> Value {
    let mut context = Map::with_capacity(4);
    context.insert("record".to_owned(), record.clone());
    context.insert("vars".to_owned(), Value::Object(vars.clone()));
    context.insert("blocks".to_owned(), Value::Object(blocks));
    context.insert("run".to_owned(), run.clone());
    Value::Object(context)
}

/// A JSON value as a rhai value.
pub(crate) fn to_dynamic(value: &Value) -> rhai::Dynamic {
    match value {
        Value::Null => rhai::Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or_default().into(),
        },
        Value::String(s) => s.clone().into(),
        Value::Array(items) => rhai::Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(fields) => rhai::Dynamic::from_map(
            fields
                .iter()
                .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
                .collect(),
        ),
    }
}

/// Evaluates a condition with every top-level field of `context` as a variable, within the rule
/// limits (time and size, see [`crate::rules`]).
pub(crate) fn eval(condition: &Condition, context: &Value) -> Result<bool, String> {
    let mut scope = rhai::Scope::new();
    if let Value::Object(fields) = context {
        for (name, value) in fields {
            scope.push_dynamic(name.as_str(), to_dynamic(value));
        }
    }
    crate::compile::rule_engine()
        .run::<bool>(&mut scope, condition.ast())
        .map_err(|err| match err {
            RuleError::Failed { message } => message.to_lowercase(),
            limit => limit.to_string(),
        })
}

/// A body as history keeps it: unchanged when its JSON text fits in `cap` bytes, else the first
/// `cap` bytes of that text as a string, flagged truncated.
///
/// `wire_len` is the body's size as it arrived. Written again as compact JSON (and redacted) a
/// body grows by well under 4 times (a float such as `1e5` becomes `100000.0`, a redacted
/// value `[redacted]`), so a body that came in under a quarter of the cap is kept without
/// measuring; otherwise its length is counted without writing the text out, and only a body
/// over the cap is serialized.
pub(crate) fn cap_body(body: &Value, wire_len: Option<usize>, cap: usize) -> (Value, bool) {
    let small = match body {
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
        Value::String(s) => s.len() <= cap,
        _ if wire_len.is_some_and(|n| n.saturating_mul(4) <= cap) => true,
        _ => json_len(body) <= cap,
    };
    if small {
        return (body.clone(), false);
    }
    let text = body.to_string();
    if text.len() <= cap {
        return (body.clone(), false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (Value::String(text[..end].to_owned()), true)
}

/// The length of a value's compact JSON text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("a JSON value serializes");
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_over_the_cap_are_truncated_on_a_char_boundary() {
        let (kept, truncated) = cap_body(&json!({"a": 1}), None, 64);
        assert_eq!((kept, truncated), (json!({"a": 1}), false));
        let (kept, truncated) = cap_body(&json!({"name": "ééééé"}), None, 12);
        assert!(truncated);
        assert_eq!(kept, json!("{\"name\":\"é"));
        // Under a quarter of the cap on the wire: kept unmeasured; else measured and capped.
        assert_eq!(
            cap_body(&json!({"a": 1}), Some(7), 28),
            (json!({"a": 1}), false)
        );
        let body = json!({"list": [1, 2, 3, 4, 5, 6, 7, 8]});
        assert_eq!(
            cap_body(&body, Some(26), 20),
            (json!("{\"list\":[1,2,3,4,5,6"), true)
        );
    }

    #[test]
    fn conditions_see_the_context() {
        let cond = crate::compile::rule_engine()
            .compile("blocks.find.status == 200 && record.email.contains(\"@\")")
            .unwrap();
        let context = json!({"record": {"email": "a@b.c"}, "blocks": {"find": {"status": 200}}});
        assert_eq!(eval(&cond, &context), Ok(true));
    }
}

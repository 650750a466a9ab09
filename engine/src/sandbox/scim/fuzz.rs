//! The SCIM parsers' properties, for the property tests (`tests/fuzz`) and the fuzz targets
//! (`fuzz/`), which cannot reach the crate-private [`super::filter`] and [`super::patch`]: each
//! check takes hostile input, drives the parser as a request would, and panics when a property
//! fails (a panic is what both harnesses report).

use serde_json::{json, Map, Value};

use super::filter::{self, AttrPath, Filter, Literal, Op};
use super::patch::{self, PATCH_OP};
use super::schema::{self, Kind};

/// A stored user to match filters against and patch.
fn user() -> Map<String, Value> {
    let Value::Object(user) = json!({
        "schemas": [schema::USER], "userName": "ada@example.com", "active": true,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
    }) else {
        unreachable!("a JSON object")
    };
    user
}

/// A filter parses or fails with an `invalidFilter` error; one that parses matches the stored user
/// or not (never panics), and renders to text that parses back to the same filter.
pub fn check_filter(text: &str) {
    let parsed = match filter::parse(text) {
        Ok(parsed) => parsed,
        Err(err) => {
            assert_eq!(err.scim_type, Some("invalidFilter"), "{err:?} for {text:?}");
            return;
        }
    };
    filter::matches(&parsed, &user());
    let rendered = render(&parsed);
    let again = filter::parse(&rendered).unwrap_or_else(|err| {
        panic!("`{text}` parsed, its rendering `{rendered}` did not: {err:?}")
    });
    assert!(
        same(&parsed, &again),
        "`{text}` rendered as `{rendered}` parses differently: {parsed:?} then {again:?}"
    );
}

/// A PATCH body (any bytes; JSON is applied to a stored user) is applied, then the result validated
/// as the server does, or it fails with a SCIM error of status 400.
pub fn check_patch(bytes: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    // Bodies without the PatchOp schema only reach the first check; most get it added.
    let body = match body {
        Value::Array(ops) => json!({"schemas": [PATCH_OP], "Operations": ops}),
        other => other,
    };
    let mut working = user();
    let result = patch::apply(Kind::User, &mut working, &body)
        .and_then(|()| schema::validate(Kind::User, &working));
    if let Err(err) = result {
        assert_eq!(err.status.as_u16(), 400, "{err:?} for {body}");
        assert!(err.scim_type.is_some(), "{err:?} for {body}");
    }
}

/// A PATCH `path` parses or fails with `invalidPath`.
pub fn check_path(text: &str) {
    if let Err(err) = filter::parse_path(text) {
        assert_eq!(err.scim_type, Some("invalidPath"), "{err:?} for {text:?}");
    }
}

/// The filter as text, with parentheses only where precedence (`and` before `or`, both left
/// associative) needs them, so the text nests no deeper than the filter it came from did.
fn render(filter: &Filter) -> String {
    let mut out = String::new();
    render_into(filter, &mut out);
    out
}

fn render_into(filter: &Filter, out: &mut String) {
    let part = |f: &Filter, parens: bool, out: &mut String| {
        if parens {
            out.push('(');
        }
        render_into(f, out);
        if parens {
            out.push(')');
        }
    };
    match filter {
        Filter::And(a, b) => {
            part(a, matches!(**a, Filter::Or(..)), out);
            out.push_str(" and ");
            part(b, matches!(**b, Filter::Or(..) | Filter::And(..)), out);
        }
        Filter::Or(a, b) => {
            part(a, false, out);
            out.push_str(" or ");
            part(b, matches!(**b, Filter::Or(..)), out);
        }
        Filter::Not(inner) => {
            out.push_str("not (");
            render_into(inner, out);
            out.push(')');
        }
        Filter::Present(path) => {
            attr_path(path, out);
            out.push_str(" pr");
        }
        Filter::Compare(path, op, literal) => {
            attr_path(path, out);
            out.push(' ');
            out.push_str(match op {
                Op::Eq => "eq",
                Op::Ne => "ne",
                Op::Co => "co",
                Op::Sw => "sw",
                Op::Ew => "ew",
                Op::Gt => "gt",
                Op::Ge => "ge",
                Op::Lt => "lt",
                Op::Le => "le",
            });
            out.push(' ');
            match literal {
                Literal::Str(s) => out.push_str(&Value::String(s.clone()).to_string()),
                Literal::Num(n) => out.push_str(&n.to_string()),
                Literal::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Literal::Null => out.push_str("null"),
            }
        }
        Filter::Complex(path, inner) => {
            attr_path(path, out);
            out.push('[');
            render_into(inner, out);
            out.push(']');
        }
    }
}

fn attr_path(path: &AttrPath, out: &mut String) {
    if let Some(urn) = &path.urn {
        out.push_str(urn);
        out.push(':');
    }
    out.push_str(&path.attr);
    if let Some(sub) = &path.sub {
        out.push('.');
        out.push_str(sub);
    }
}

/// Equality, with NaN equal to itself.
fn same(a: &Filter, b: &Filter) -> bool {
    match (a, b) {
        (Filter::And(a1, a2), Filter::And(b1, b2)) | (Filter::Or(a1, a2), Filter::Or(b1, b2)) => {
            same(a1, b1) && same(a2, b2)
        }
        (Filter::Not(a), Filter::Not(b)) => same(a, b),
        (Filter::Complex(p, a), Filter::Complex(q, b)) => p == q && same(a, b),
        (Filter::Compare(p, o, Literal::Num(x)), Filter::Compare(q, r, Literal::Num(y))) => {
            p == q && o == r && (x == y || (x.is_nan() && y.is_nan()))
        }
        _ => a == b,
    }
}

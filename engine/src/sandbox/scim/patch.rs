//! SCIM PATCH (RFC 7644 §3.5.2): `add`, `replace` and `remove`, with and without `path`,
//! including value-filtered paths (`members[value eq "…"]`, `emails[type eq "work"].value`).
//!
//! Operations are applied in order to a *copy* of the stored attributes; the caller validates
//! the result against the schema and stores it only if every operation succeeded, which makes a
//! PATCH atomic. Ops are case-insensitive (Entra ID sends `"Replace"`); values are normalized by
//! that final validation (so `"False"` becomes `false`).

use serde_json::{Map, Value};

use super::filter::{self, AttrPath, Filter, Literal, Op, PatchPath};
use super::schema::{self, Attr, Kind, Mutability};
use super::ScimError;

pub(crate) const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    Add,
    Replace,
    Remove,
}

/// Applies a PatchOp request body to `resource` (the stored attributes, with `schemas`).
pub(crate) fn apply(
    kind: Kind,
    resource: &mut Map<String, Value>,
    body: &Value,
) -> Result<(), ScimError> {
    let body = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the PATCH body must be a JSON object"))?;
    let declared = body
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|v| v.as_str().is_some_and(|v| v.eq_ignore_ascii_case(PATCH_OP)))
        });
    if !declared {
        return Err(ScimError::invalid_syntax(format!(
            "`schemas` must contain `{PATCH_OP}`"
        )));
    }
    let ops = filter::get_ci(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("`Operations` must be an array"))?;
    for op in ops {
        let op = op
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax("each operation must be a JSON object"))?;
        let name = filter::get_ci(op, "op")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let which = match name.to_ascii_lowercase().as_str() {
            "add" => PatchKind::Add,
            "replace" => PatchKind::Replace,
            "remove" => PatchKind::Remove,
            _ => {
                return Err(ScimError::invalid_value(format!(
                    "unknown PATCH op `{name}`"
                )))
            }
        };
        let value = filter::get_ci(op, "value").cloned().unwrap_or(Value::Null);
        match filter::get_ci(op, "path").and_then(Value::as_str) {
            Some(path) if kind.extension(path.trim()).is_some() => {
                let urn = kind.extension(path.trim()).unwrap_or_default();
                apply_extension(kind, resource, which, urn, value)?;
            }
            Some(path) if !path.trim().is_empty() => {
                let path = filter::parse_path(path)?;
                apply_path(kind, resource, which, &path, value)?;
            }
            _ => {
                if which == PatchKind::Remove {
                    return Err(ScimError::no_target("`remove` needs a `path`"));
                }
                let Value::Object(fields) = value else {
                    return Err(ScimError::invalid_syntax(
                        "without a `path`, `value` must be a JSON object of attributes",
                    ));
                };
                for (key, v) in fields {
                    if let Some(urn) = kind.extension(&key) {
                        apply_extension(kind, resource, which, urn, v)?;
                        continue;
                    }
                    let path = filter::parse_path(&key)?;
                    apply_path(kind, resource, which, &path, v)?;
                }
            }
        }
    }
    Ok(())
}

/// An operation whose path is a whole extension schema (`urn:…:enterprise:2.0:User`).
fn apply_extension(
    kind: Kind,
    resource: &mut Map<String, Value>,
    which: PatchKind,
    urn: &str,
    value: Value,
) -> Result<(), ScimError> {
    if which == PatchKind::Remove {
        resource.remove(urn);
        return Ok(());
    }
    let Value::Object(fields) = value else {
        return Err(ScimError::invalid_value(format!(
            "`{urn}` takes a JSON object"
        )));
    };
    if which == PatchKind::Replace {
        resource.remove(urn);
    }
    for (attr, v) in fields {
        if attr.eq_ignore_ascii_case("schemas") {
            continue;
        }
        let path = PatchPath {
            path: AttrPath {
                urn: Some(urn.to_owned()),
                attr,
                sub: None,
            },
            filter: None,
            sub: None,
        };
        apply_path(kind, resource, which, &path, v)?;
    }
    Ok(())
}

/// An object holding attributes, with the definitions of those attributes.
type Container<'a> = (&'a mut Map<String, Value>, &'static [Attr]);

/// The object holding the attribute: the resource itself, or an extension's object.
fn container<'a>(
    kind: Kind,
    resource: &'a mut Map<String, Value>,
    urn: Option<&str>,
    create: bool,
) -> Result<Option<Container<'a>>, ScimError> {
    let unknown = |urn: &str| ScimError::invalid_path(format!("unknown schema `{urn}`"));
    match urn {
        None => Ok(Some((resource, kind.attrs()))),
        Some(urn) if urn.eq_ignore_ascii_case(kind.core()) => Ok(Some((resource, kind.attrs()))),
        Some(urn) => {
            let canonical = kind.extension(urn).ok_or_else(|| unknown(urn))?;
            let attrs = kind.schema_attrs(canonical).ok_or_else(|| unknown(urn))?;
            if !resource.contains_key(canonical) {
                if !create {
                    return Ok(None);
                }
                resource.insert(canonical.to_owned(), Value::Object(Map::new()));
            }
            match resource.get_mut(canonical) {
                Some(Value::Object(ext)) => Ok(Some((ext, attrs))),
                _ => Err(ScimError::invalid_path(format!(
                    "`{canonical}` is not an object"
                ))),
            }
        }
    }
}

/// Dedup key of a multi-valued element: its `value` sub-attribute when it has one.
fn same_element(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => match (x.get("value"), y.get("value")) {
            (Some(p), Some(q)) => p == q,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn merge(target: &mut Value, value: Value) {
    match (target, value) {
        (Value::Object(t), Value::Object(v)) => {
            for (k, val) in v {
                t.insert(k, val);
            }
        }
        (t, v) => *t = v,
    }
}

fn apply_path(
    kind: Kind,
    resource: &mut Map<String, Value>,
    which: PatchKind,
    path: &PatchPath,
    value: Value,
) -> Result<(), ScimError> {
    let name = schema::strip_core(kind, &path.path.attr).to_owned();
    // Common attributes.
    if ["id", "meta", "schemas"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(&name))
        && path.path.urn.is_none()
    {
        return Err(ScimError::mutability(format!(
            "`{name}` cannot be modified"
        )));
    }
    if name.eq_ignore_ascii_case("externalId") && path.path.urn.is_none() {
        match which {
            PatchKind::Remove => {
                resource.remove("externalId");
            }
            PatchKind::Add | PatchKind::Replace => {
                resource.insert("externalId".into(), value);
            }
        }
        return Ok(());
    }
    let create = which != PatchKind::Remove;
    let Some((obj, attrs)) = container(kind, resource, path.path.urn.as_deref(), create)? else {
        return Ok(());
    };
    let attr = schema::find(attrs, &name)
        .ok_or_else(|| ScimError::invalid_path(format!("unknown attribute `{name}`")))?;
    if attr.mutability == Mutability::ReadOnly {
        return Err(ScimError::mutability(format!(
            "`{}` is read-only",
            attr.name
        )));
    }
    let key = attr.name.clone();
    // `a.b` (sub in the attribute path) and `a[f].b` (sub after the filter) mean the same thing.
    let sub_name = path.path.sub.as_deref().or(path.sub.as_deref());
    let sub = match sub_name {
        Some(s) => Some(
            attr.sub_attr(s)
                .ok_or_else(|| {
                    ScimError::invalid_path(format!("unknown attribute `{}.{s}`", attr.name))
                })?
                .name
                .clone(),
        ),
        None => None,
    };
    match (&path.filter, sub) {
        (None, None) => match which {
            PatchKind::Remove => {
                obj.remove(&key);
            }
            PatchKind::Add if attr.multi => {
                let new: Vec<Value> = match value {
                    Value::Array(items) => items,
                    Value::Null => Vec::new(),
                    other => vec![other],
                };
                let list = obj
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !list.is_array() {
                    *list = Value::Array(Vec::new());
                }
                if let Value::Array(list) = list {
                    for item in new {
                        match list.iter_mut().find(|e| same_element(e, &item)) {
                            Some(existing) => merge(existing, item),
                            None => list.push(item),
                        }
                    }
                }
            }
            PatchKind::Add | PatchKind::Replace => match obj.get_mut(&key) {
                Some(existing) if !attr.multi && existing.is_object() && value.is_object() => {
                    merge(existing, value)
                }
                _ => {
                    obj.insert(key, value);
                }
            },
        },
        (None, Some(sub)) => {
            if attr.multi {
                if let Some(Value::Array(items)) = obj.get_mut(&key) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        set_sub(item, &sub, which, value.clone());
                    }
                }
                return Ok(());
            }
            if which == PatchKind::Remove {
                if let Some(Value::Object(inner)) = obj.get_mut(&key) {
                    inner.remove(&sub);
                }
            } else {
                let inner = obj
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !inner.is_object() {
                    *inner = Value::Object(Map::new());
                }
                if let Value::Object(inner) = inner {
                    inner.insert(sub, value);
                }
            }
        }
        (Some(selector), sub) => {
            if !attr.multi {
                return Err(ScimError::invalid_path(format!(
                    "`{}` is not multi-valued, so it cannot take a filter",
                    attr.name
                )));
            }
            let mut items = match obj.remove(&key) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            let hits: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, v)| v.as_object().is_some_and(|o| filter::matches(selector, o)))
                .map(|(i, _)| i)
                .collect();
            let result = if hits.is_empty() {
                match (which, &sub, simple_eq(selector)) {
                    (PatchKind::Add | PatchKind::Replace, Some(sub), Some((attr, literal))) => {
                        let mut element = Map::new();
                        element.insert(attr, literal);
                        element.insert(sub.clone(), value);
                        items.push(Value::Object(element));
                        Ok(())
                    }
                    _ => Err(ScimError::no_target(format!(
                        "no value of `{}` matches the filter",
                        attr.name
                    ))),
                }
            } else {
                match (which, sub) {
                    (PatchKind::Remove, None) => {
                        let mut i = 0;
                        items.retain(|_| {
                            let keep = !hits.contains(&i);
                            i += 1;
                            keep
                        });
                    }
                    (which, Some(sub)) => {
                        for &i in &hits {
                            if let Some(o) = items[i].as_object_mut() {
                                set_sub(o, &sub, which, value.clone());
                            }
                        }
                    }
                    (PatchKind::Replace, None) => {
                        for &i in &hits {
                            items[i] = value.clone();
                        }
                    }
                    (PatchKind::Add, None) => {
                        for &i in &hits {
                            merge(&mut items[i], value.clone());
                        }
                    }
                }
                Ok(())
            };
            if !items.is_empty() {
                obj.insert(key, Value::Array(items));
            }
            result?;
        }
    }
    Ok(())
}

fn set_sub(item: &mut Map<String, Value>, sub: &str, which: PatchKind, value: Value) {
    match which {
        PatchKind::Remove => {
            item.remove(sub);
        }
        PatchKind::Add | PatchKind::Replace => {
            item.insert(sub.to_owned(), value);
        }
    }
}

/// `attr eq "literal"`, the only selector a missing element can be created from.
fn simple_eq(filter: &Filter) -> Option<(String, Value)> {
    match filter {
        Filter::Compare(path, Op::Eq, literal) if path.urn.is_none() && path.sub.is_none() => {
            let value = match literal {
                Literal::Str(s) => Value::String(s.clone()),
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Num(n) => serde_json::Number::from_f64(*n).map(Value::Number)?,
                Literal::Null => return None,
            };
            Some((path.attr.clone(), value))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(resource: Value, ops: Value) -> Result<Value, ScimError> {
        let mut r = resource.as_object().unwrap().clone();
        apply(
            Kind::User,
            &mut r,
            &json!({"schemas": [PATCH_OP], "Operations": ops}),
        )?;
        Ok(Value::Object(r))
    }

    fn base() -> Value {
        json!({"schemas": [schema::USER], "userName": "a@x.io", "active": true,
               "emails": [{"value": "a@x.io", "type": "work", "primary": true}]})
    }

    #[test]
    fn paths_and_pathless_ops() {
        let r = patch(
            base(),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .unwrap();
        assert_eq!(
            r["active"], "False",
            "values are normalized later, by validation"
        );
        let r = patch(
            base(),
            json!([{"op": "replace", "value": {"active": false, "name.givenName": "B"}}]),
        )
        .unwrap();
        assert_eq!(
            (r["active"].clone(), r["name"]["givenName"].clone()),
            (json!(false), json!("B"))
        );
        let r = patch(
            base(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x.io"}]),
        )
        .unwrap();
        assert_eq!(r["emails"][0]["value"], "b@x.io");
        let r = patch(
            base(),
            json!([{"op": "add", "path": "emails[type eq \"home\"].value", "value": "h@x.io"}]),
        )
        .unwrap();
        assert_eq!(r["emails"][1], json!({"type": "home", "value": "h@x.io"}));
        let r = patch(
            base(),
            json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
        )
        .unwrap();
        assert!(r.get("emails").is_none());
        let r = patch(base(), json!([{"op": "add", "path": "emails", "value": [{"value": "a@x.io", "type": "home"}, {"value": "c@x.io"}]}])).unwrap();
        assert_eq!(
            r["emails"].as_array().unwrap().len(),
            2,
            "same value merges"
        );
        let r = patch(
            base(),
            json!([{"op": "add", "value": {schema::ENTERPRISE: {"department": "Ops"}}}]),
        )
        .unwrap();
        assert_eq!(r[schema::ENTERPRISE]["department"], "Ops");
    }

    #[test]
    fn errors_have_scim_types() {
        let kind = |ops: Value| patch(base(), ops).unwrap_err().scim_type;
        assert_eq!(kind(json!([{"op": "remove"}])), Some("noTarget"));
        assert_eq!(
            kind(json!([{"op": "replace", "path": "bogus", "value": 1}])),
            Some("invalidPath")
        );
        assert_eq!(
            kind(json!([{"op": "frobnicate", "path": "active"}])),
            Some("invalidValue")
        );
        assert_eq!(
            kind(json!([{"op": "replace", "path": "id", "value": "x"}])),
            Some("mutability")
        );
        assert_eq!(
            kind(json!([{"op": "remove", "path": "emails[type eq \"other\"]"}])),
            Some("noTarget")
        );
    }
}

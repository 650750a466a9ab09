//! Rendering a preset action into a concrete request, without sending it.
//!
//! The inputs are resolved first ([`resolve_inputs`]): a value given in `with:`, else the input's
//! preset default rendered over the workflow context (a default that renders `null` counts as not
//! given), else the subject record's field of the same name. The action's compiled templates then
//! see those inputs plus `base_url`, and each part is encoded for where it lands:
//!
//! - the path through [`TemplateEngine::render_path`], every expression percent-encoded as one
//!   segment, so `../admin`, `a/b` or `?x=1` in a value never changes which resource is addressed;
//! - query parameters as separate name/value pairs, encoded by [`encode_query`] (a parameter that
//!   renders empty is left out);
//! - the JSON body leaf by leaf ([`TemplateEngine::render_value`]): a leaf that is exactly one
//!   expression keeps its JSON type, and an object member whose single expression renders `null`
//!   is left out (an optional input that was not given, such as SCIM `externalId`).
//!
//! The result, [`RenderedRequest`], is what `--dry-run` prints and history keeps: it carries no
//! secret (the `Authorization` header shows `[redacted]`; the real value is added when sending).

use std::fmt;

use handlebars::Context;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::RenderPart;
use super::CallError;
use crate::preset::{Action, Method, Pagination, Vendor};
use crate::template::{JsonTemplate, TemplateEngine};

/// Query values: everything but RFC 3986 unreserved characters is percent-encoded (a space is
/// `%20`, which every server reads as a space, unlike `+`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query name or value.
pub fn encode_query(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// A request ready to send, with no secret in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedRequest {
    /// `vendor.action`.
    pub action: String,
    pub method: Method,
    /// The URL without its query.
    pub url: String,
    /// Query parameters in order, not encoded.
    #[serde(serialize_with = "pairs_as_map")]
    pub query: Vec<(String, String)>,
    /// Headers in order; credentials show as `[redacted]`.
    #[serde(serialize_with = "pairs_as_map")]
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// For read-modify-write actions: the read whose result this request's body is merged into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_read: Option<Box<RenderedRequest>>,
    /// The base URL `url` is below (the credential's, else the vendor's). Not part of the request
    /// as shown and diffed: history keeps it beside it (`StepRecord::base_url`), for replay.
    #[serde(skip)]
    pub base_url: String,
}

/// Name/value pairs as a JSON object (a repeated name keeps its last value).
fn pairs_as_map<S: serde::Serializer>(
    pairs: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(pairs.len()))?;
    for (name, value) in pairs {
        map.serialize_entry(name, value)?;
    }
    map.end()
}

impl RenderedRequest {
    /// The URL with its query, encoded.
    pub fn full_url(&self) -> String {
        if self.query.is_empty() {
            return self.url.clone();
        }
        let query = self
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
            .collect::<Vec<_>>()
            .join("&");
        format!("{}?{query}", self.url)
    }

    /// Sets a query parameter (replacing it, or appending it).
    pub fn set_query(&mut self, name: &str, value: String) {
        match self.query.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.query.push((name.to_owned(), value)),
        }
    }
}

impl fmt::Display for RenderedRequest {
    /// The request as an HTTP client would show it: request line, headers, body.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(read) = &self.merge_read {
            writeln!(f, "{read}")?;
            writeln!(f, "(then, with the changes merged into the result:)")?;
        }
        writeln!(f, "{} {}", self.method, self.full_url())?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        if let Some(body) = &self.body {
            writeln!(f)?;
            writeln!(
                f,
                "{}",
                serde_json::to_string_pretty(body).unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// Advanced mode's changes to a preset's request (a block's `request:`), already rendered over
/// the block's context: [`apply`] makes them to a [`RenderedRequest`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestPatch {
    pub method: Option<Method>,
    /// Replaces the path below the base URL: starts with `/`, expressions already encoded.
    pub path: Option<String>,
    /// Sets (`Some`) or removes (`None`) query parameters, in order.
    pub query: Vec<(String, Option<String>)>,
    /// Sets (`Some`) or removes (`None`) headers (names compared without case), in order.
    pub headers: Vec<(String, Option<String>)>,
    /// Replaces the body; `Some(None)` sends none.
    pub body: Option<Option<Value>>,
}

/// Makes `patch`'s changes to `request`, rendered for `action` below `base_url`: the method and
/// body are replaced, the path is replaced (for a read-modify-write action, the read's too, so
/// both address the same resource), query parameters and headers are merged over the preset's.
/// A body added or removed brings (the vendor's media type, else JSON) or drops `Content-Type`,
/// unless the patch sets it.
pub fn apply(
    request: &mut RenderedRequest,
    patch: &RequestPatch,
    vendor: &Vendor,
    action: &Action,
    base_url: &str,
) -> Result<(), CallError> {
    if let Some(method) = patch.method {
        request.method = method;
    }
    if let Some(path) = &patch.path {
        let url = url_on_origin(action, base_url, path)?;
        if let Some(read) = &mut request.merge_read {
            read.url = url.clone();
        }
        request.url = url;
    }
    for (name, value) in &patch.query {
        request.query.retain(|(k, _)| k != name);
        if let Some(value) = value {
            request.query.push((name.clone(), value.clone()));
        }
    }
    if let Some(body) = &patch.body {
        let had = request.body.is_some();
        request.body = body.clone();
        match (had, request.body.is_some()) {
            (false, true) => {
                // The vendor's media type where its preset names one (SCIM's), as a preset's own
                // body gets.
                let media = vendor
                    .spec
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                    .map_or("application/json", |(_, v)| v.as_str());
                request
                    .headers
                    .push(("Content-Type".to_owned(), media.to_owned()))
            }
            (true, false) => request
                .headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type")),
            _ => {}
        }
    }
    for (name, value) in &patch.headers {
        match (
            request
                .headers
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(name)),
            value,
        ) {
            (Some((_, slot)), Some(value)) => *slot = value.clone(),
            (None, Some(value)) => request.headers.push((name.clone(), value.clone())),
            (_, None) => request
                .headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case(name)),
        }
    }
    Ok(())
}

/// `base_url` joined with a rendered `path`: refused when a segment is a dot segment (URL
/// parsers remove those, which would address another resource) and when the result is no URL.
fn url_below(action: &Action, base_url: &str, path: &str) -> Result<String, CallError> {
    // `.` and `..` (however encoded) are dot segments: URL parsers remove them, which would
    // address another resource, so a value that renders to one is refused.
    if let Some(segment) = path.split('/').find(|s| {
        let s = s.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    }) {
        return Err(CallError::DotSegment {
            action: action.id.clone(),
            segment: segment.to_owned(),
        });
    }
    let base = base_url.trim_end_matches('/');
    let url = format!("{base}{path}");
    if url::Url::parse(&url).is_err() {
        return Err(CallError::BadUrl {
            action: action.id.clone(),
            url,
            base: base_url.to_owned(),
        });
    }
    Ok(url)
}

/// [`url_below`], and on the same origin as `base_url`: a preset's path is always below it (it
/// starts with `/` and every expression is one encoded segment); an override's is checked.
fn url_on_origin(action: &Action, base_url: &str, path: &str) -> Result<String, CallError> {
    let url = url_below(action, base_url, path)?;
    let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
    if origin(&url) != origin(base_url) {
        return Err(CallError::ForeignUrl {
            action: action.id.clone(),
            url,
            base: base_url.to_owned(),
        });
    }
    Ok(url)
}

/// Resolves an action's inputs: `given`, else the rendered default, else `record.<name>`. A
/// required input named in `optional` may stay empty (advanced mode replaced what read it).
pub fn resolve_inputs(
    engine: &TemplateEngine,
    action: &Action,
    given: &Map<String, Value>,
    context: &Value,
    optional: &[String],
) -> Result<Map<String, Value>, CallError> {
    if let Some(unknown) = given.keys().find(|k| !action.spec.inputs.contains_key(*k)) {
        let known = action
            .spec
            .inputs
            .keys()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>();
        return Err(CallError::UnknownInput {
            action: action.id.clone(),
            input: unknown.clone(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        });
    }
    let mut wrapped: Option<Context> = None;
    let mut inputs = Map::with_capacity(action.spec.inputs.len());
    for (name, spec) in &action.spec.inputs {
        let mut value = given.get(name).cloned().unwrap_or(Value::Null);
        if value.is_null() {
            if let Some(default) = action.defaults.get(name) {
                let context = match &wrapped {
                    Some(c) => c,
                    None => wrapped.insert(Context::wraps(context).map_err(|err| {
                        CallError::Render {
                            action: action.id.clone(),
                            part: RenderPart::Default(name.clone()),
                            source: err.into(),
                        }
                    })?),
                };
                value =
                    engine
                        .render_json(default, context)
                        .map_err(|source| CallError::Render {
                            action: action.id.clone(),
                            part: RenderPart::Default(name.clone()),
                            source,
                        })?;
            }
        }
        if value.is_null() {
            if let Some(field) = context.get("record").and_then(|r| r.get(name)) {
                value = field.clone();
            }
        }
        if spec.required
            && (value.is_null() || value.as_str() == Some(""))
            && !optional.iter().any(|o| o == name)
        {
            return Err(CallError::MissingInput {
                action: action.id.clone(),
                input: name.clone(),
            });
        }
        inputs.insert(name.clone(), value);
    }
    Ok(inputs)
}

/// Renders `action` for `base_url` with resolved `inputs`. `auth` says whether to show an
/// `Authorization` header (redacted).
pub fn render(
    engine: &TemplateEngine,
    vendor: &Vendor,
    action: &Action,
    base_url: &str,
    inputs: &Map<String, Value>,
    auth: bool,
) -> Result<RenderedRequest, CallError> {
    let mut data = inputs.clone();
    data.insert("base_url".to_owned(), Value::String(base_url.to_owned()));
    let context = Context::wraps(Value::Object(data)).map_err(|err| CallError::Render {
        action: action.id.clone(),
        part: RenderPart::Path,
        source: err.into(),
    })?;
    let failed = |part: RenderPart| {
        let id = action.id.clone();
        move |source| CallError::Render {
            action: id,
            part,
            source,
        }
    };
    let path = engine
        .render_path(&action.path, &context)
        .map_err(failed(RenderPart::Path))?;
    let url = url_below(action, base_url, &path)?;
    let mut query = Vec::with_capacity(action.query.len() + 1);
    if action.spec.paginate
        && vendor.spec.pagination == Some(Pagination::ScimIndex)
        && !action.query.contains_key("startIndex")
    {
        query.push(("startIndex".to_owned(), "1".to_owned()));
    }
    for (name, template) in &action.query {
        let value = engine
            .render(template, &context)
            .map_err(failed(RenderPart::Query(name.clone())))?;
        if !value.is_empty() {
            query.push((name.clone(), value));
        }
    }
    let body = match &action.body {
        Some(body) => Some(render_body(engine, body, &context).map_err(failed(RenderPart::Body))?),
        None => None,
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: String| match headers
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
    {
        Some((_, v)) => *v = value,
        None => headers.push((name.to_owned(), value)),
    };
    set("Accept", "application/json".to_owned());
    if body.is_some() {
        set("Content-Type", "application/json".to_owned());
    }
    for (name, value) in &vendor.spec.headers {
        if name.eq_ignore_ascii_case("content-type") && body.is_none() {
            continue;
        }
        set(name, value.clone());
    }
    for (name, template) in &action.headers {
        let value = engine
            .render(template, &context)
            .map_err(failed(RenderPart::Header(name.clone())))?;
        set(name, value);
    }
    if auth {
        set("Authorization", super::redact::REDACTED.to_owned());
    }
    Ok(RenderedRequest {
        action: action.id.to_string(),
        method: action.spec.method,
        url,
        query,
        headers,
        body,
        merge_read: None,
        base_url: base_url.to_owned(),
    })
}

/// Renders a body leaf by leaf, leaving out object members whose single expression is `null`.
pub fn render_body(
    engine: &TemplateEngine,
    template: &JsonTemplate,
    context: &Context,
) -> Result<Value, crate::template::RenderFailure> {
    Ok(match template {
        JsonTemplate::Value(v) => v.clone(),
        JsonTemplate::Text(t) => engine.render_value(t, context)?,
        JsonTemplate::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_body(engine, i, context))
                .collect::<Result<_, _>>()?,
        ),
        JsonTemplate::Object(fields) => {
            let mut out = Map::with_capacity(fields.len());
            for (key, value) in fields {
                let rendered = render_body(engine, value, context)?;
                let optional = matches!(value, JsonTemplate::Text(t) if t.single_path().is_some());
                if !(optional && rendered.is_null()) {
                    out.insert(key.clone(), rendered);
                }
            }
            Value::Object(out)
        }
    })
}

/// Read-modify-write: the current resource with `drop`ped fields removed (and only `keep` fields
/// kept, when given), then every change that is not `null` or `""` written over it.
pub fn merge(current: &Value, changes: &Value, drop: &[String], keep: &[String]) -> Value {
    let mut out = Map::new();
    if let Value::Object(fields) = current {
        for (key, value) in fields {
            let kept = keep.is_empty() || keep.iter().any(|k| k == key);
            if kept && !drop.iter().any(|d| d == key) {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if let Value::Object(fields) = changes {
        for (key, value) in fields {
            if !(value.is_null() || value.as_str() == Some("")) {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::{PresetId, PresetRegistry};
    use serde_json::json;

    fn rendered<'r>(
        registry: &'r PresetRegistry,
        id: &str,
        inputs: Value,
    ) -> (RenderedRequest, &'r Vendor, &'r Action) {
        let id = PresetId::parse(id).unwrap();
        let vendor = registry.vendor(&id.vendor).unwrap();
        let action = registry.action(&id).unwrap();
        let inputs = inputs.as_object().unwrap().clone();
        let engine = TemplateEngine::new();
        let mut request = render(
            &engine,
            vendor,
            action,
            "https://api.example.com/v1",
            &inputs,
            true,
        )
        .unwrap();
        if let Some(merge) = &action.spec.merge {
            let read = &vendor.actions[&merge.read];
            let read = render(
                &engine,
                vendor,
                read,
                "https://api.example.com/v1",
                &inputs,
                true,
            )
            .unwrap();
            request.merge_read = Some(Box::new(read));
        }
        (request, vendor, action)
    }

    #[test]
    fn a_patch_merges_query_and_headers_and_null_removes() {
        let registry = PresetRegistry::builtin();
        let (mut request, vendor, action) = rendered(
            &registry,
            "calendly.find_membership",
            json!({"organization": "ORG", "email": "a@b.c"}),
        );
        let patch = RequestPatch {
            query: vec![
                ("email".to_owned(), None),
                ("organization".to_owned(), Some("OTHER".to_owned())),
                ("count".to_owned(), Some("5".to_owned())),
            ],
            headers: vec![
                ("accept".to_owned(), None),
                ("X-Trace".to_owned(), Some("t".to_owned())),
            ],
            ..RequestPatch::default()
        };
        apply(
            &mut request,
            &patch,
            vendor,
            action,
            "https://api.example.com/v1",
        )
        .unwrap();
        assert_eq!(
            request.full_url(),
            "https://api.example.com/v1/organization_memberships?organization=OTHER&count=5"
        );
        assert_eq!(
            request.headers,
            [
                ("Authorization".to_owned(), "[redacted]".to_owned()),
                ("X-Trace".to_owned(), "t".to_owned())
            ]
        );
        assert_eq!(request.body, None);
    }

    #[test]
    fn a_patched_path_addresses_a_merge_read_too_and_stays_on_the_origin() {
        let registry = PresetRegistry::builtin();
        let (mut request, vendor, action) = rendered(
            &registry,
            "webex.update_user",
            json!({"webex_user_id": "P1", "display_name": "D", "first_name": null, "last_name": null}),
        );
        let patch = RequestPatch {
            path: Some("/people/P2".to_owned()),
            body: Some(None),
            ..RequestPatch::default()
        };
        apply(
            &mut request,
            &patch,
            vendor,
            action,
            "https://api.example.com/v1",
        )
        .unwrap();
        assert_eq!(request.url, "https://api.example.com/v1/people/P2");
        assert_eq!(request.merge_read.as_ref().unwrap().url, request.url);
        assert_eq!(request.body, None);
        assert!(!request.headers.iter().any(|(k, _)| k == "Content-Type"));
        // A path that would leave the base URL's origin is refused (the origin is never changed
        // by a path that starts with `/`, but an `@` could change it for a base without a path).
        let (mut request, vendor, action) = rendered(
            &registry,
            "webex.delete_user",
            json!({"webex_user_id": "P1"}),
        );
        let patch = RequestPatch {
            path: Some("@elsewhere.example/x".to_owned()),
            ..RequestPatch::default()
        };
        let err = apply(
            &mut request,
            &patch,
            vendor,
            action,
            "https://api.example.com",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`webex.delete_user`: `request.path` renders `https://api.example.com@elsewhere.example/x`, outside the credential's `base_url` `https://api.example.com`; refusing to send the credential there"
        );
    }
}

//! Templates: handlebars in strict mode, without HTML escaping, with Oomnitza's `<<name>>` accepted
//! as `{{name}}`, compiled once when a workflow or preset loads.
//!
//! A [`Template`] keeps its parsed form so a run never parses text again, and knows whether it is
//! exactly one `{{path}}`: such a template, as a JSON leaf, yields the value with its JSON type
//! (`{{response}}` saves the whole object, `{{active}}` stays a boolean) instead of text. A
//! [`JsonTemplate`] is a JSON value whose string leaves are templates, rendered leaf by leaf: a body
//! is never built by pasting text into JSON, so no value can change a request's shape.
//!
//! [`TemplateEngine`] holds the handlebars registry (strict: a missing variable is an error naming
//! it) and the helpers: `json`, `lower`, `upper`, `default`, `urlencode`, `last_segment`, `now`,
//! `days_ago`, `from_now`, `resource_uri`. Its `segment` variant percent-encodes every expression, for paths.
//! `now`, `days_ago` and `from_now` read [`crate::as_of::now`], so a replay renders them as of the recorded run.

use std::fmt;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    handlebars_helper, Context, Handlebars, Path as HbsPath, RenderContext, RenderError,
    Renderable, StringOutput,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Characters escaped in a path segment: everything but unreserved characters (RFC 3986).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A template that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    /// Line and column within the template, when handlebars knows them.
    pub position: Option<(usize, usize)>,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some((line, column)) = self.position {
            if line > 1 {
                write!(f, " (template line {line}, column {column})")?;
            } else {
                write!(f, " (template column {column})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for TemplateError {}

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    form: Form,
}

/// The three shapes a template takes; the first two never touch the handlebars parser or renderer.
#[derive(Debug, Clone)]
enum Form {
    /// Plain text.
    Literal,
    /// Exactly one `{{a.b.c}}`.
    Path(Vec<String>),
    /// Anything else: helpers, blocks, several expressions.
    Handlebars(Box<handlebars::Template>),
}

impl Template {
    /// Parses `source`, after turning `<<name>>` into `{{name}}`.
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        if !source.contains("{{") && !source.contains("<<") && !source.contains("}}") {
            return Ok(Template {
                source: source.to_owned(),
                form: Form::Literal,
            });
        }
        let text = expand_alias(source);
        if let Some(path) = simple_path(&text) {
            return Ok(Template {
                source: source.to_owned(),
                form: Form::Path(path.split('.').map(str::to_owned).collect()),
            });
        }
        let compiled = handlebars::Template::compile(&text).map_err(|err| TemplateError {
            message: match err.reason() {
                // pest's expectations name grammar rules, which mean nothing to a workflow author.
                handlebars::TemplateErrorReason::InvalidSyntax(_)
                    if text.matches("{{").count() != text.matches("}}").count() =>
                {
                    "an expression opened with `{{` is not closed with `}}`".to_owned()
                }
                handlebars::TemplateErrorReason::InvalidSyntax(_) => {
                    "invalid handlebars syntax".to_owned()
                }
                other => first_line(&other.to_string()),
            },
            position: err.pos(),
        })?;
        Ok(Template {
            source: source.to_owned(),
            form: Form::Handlebars(Box::new(compiled)),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first segment of every variable the template reads at the top level (`record` for
    /// `{{record.email}}`), for checking names before anything runs. Paths inside `#each` and
    /// `#with` blocks are relative to the block's value and are left out.
    pub fn variable_roots(&self) -> Vec<&str> {
        match &self.form {
            Form::Literal => Vec::new(),
            Form::Path(path) => vec![path[0].as_str()],
            Form::Handlebars(compiled) => {
                let mut roots = Vec::new();
                collect_roots(&compiled.elements, &mut roots);
                roots.sort_unstable();
                roots.dedup();
                roots
            }
        }
    }

    /// Every variable the template reads at the top level, as written (`record.email`,
    /// `inputs.user_name`); scoped paths are left out as in [`Template::variable_roots`].
    pub fn variable_paths(&self) -> Vec<String> {
        match &self.form {
            Form::Literal => Vec::new(),
            Form::Path(path) => vec![path.join(".")],
            Form::Handlebars(compiled) => {
                let mut paths = Vec::new();
                collect_paths(&compiled.elements, &mut paths);
                let mut paths: Vec<String> = paths.into_iter().map(str::to_owned).collect();
                paths.sort_unstable();
                paths.dedup();
                paths
            }
        }
    }

    /// Makes every bare name (one identifier, such as `{{webex_user_id}}` or `<<email>>`) that is
    /// not one of `roots` read `record.<name>`, the subject record's field, as Oomnitza's presets
    /// do. Dotted paths, helpers and paths inside `#each`/`#with` are left as they are.
    pub fn qualify_bare_names(&mut self, roots: &[&str]) {
        let bare = |name: &str| !name.contains(['.', '/', '[']) && !roots.contains(&name);
        match &mut self.form {
            Form::Literal => {}
            Form::Path(path) => {
                if path.len() == 1 && !roots.contains(&path[0].as_str()) {
                    path.insert(0, "record".to_owned());
                }
            }
            Form::Handlebars(compiled) => qualify_elements(&mut compiled.elements, &bare),
        }
    }

    /// The path of a single-expression template (`["record", "email"]` for `{{record.email}}`).
    pub fn single_path(&self) -> Option<&[String]> {
        match &self.form {
            Form::Path(path) => Some(path),
            _ => None,
        }
    }
}

/// `{{ a.b.c }}` (identifier segments only, not a helper's name) → `a.b.c`.
fn simple_path(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let ok = !inner.is_empty()
        && inner.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && segment != "this"
                && segment != "else"
        })
        // `{{now}}` calls the helper: handlebars decides, not the variable fast path.
        && !HELPERS.contains(&inner);
    ok.then_some(inner)
}

fn first_line(message: &str) -> String {
    lowercase_first(message.lines().next().unwrap_or_default().trim())
}

/// A library's message in our style: its first letter lowercased (`Unexpected '='` → `unexpected '='`).
pub(crate) fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `<<name>>` → `{{name}}`, for Oomnitza's preset syntax.
fn expand_alias(source: &str) -> std::borrow::Cow<'_, str> {
    if !source.contains("<<") {
        return std::borrow::Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("<<") {
        let after = &rest[start + 2..];
        match after.find(">>") {
            Some(end) if !after[..end].contains(['<', '>', '\n']) => {
                out.push_str(&rest[..start]);
                out.push_str("{{");
                out.push_str(&after[..end]);
                out.push_str("}}");
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str(&rest[..start + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The helpers [`TemplateEngine`] registers, with handlebars' own: a bare `{{now}}` calls one.
pub const HELPERS: [&str; 26] = [
    "json",
    "lower",
    "upper",
    "default",
    "urlencode",
    "last_segment",
    "now",
    "days_ago",
    "from_now",
    "resource_uri",
    "if",
    "unless",
    "each",
    "with",
    "lookup",
    "raw",
    "log",
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "and",
    "or",
    "not",
];

/// A `{{name}}` with no parameters that is not a helper: handlebars reads it as a variable.
fn bare_variable(helper: &handlebars::template::HelperTemplate) -> Option<&str> {
    match &helper.name {
        Parameter::Name(name)
            if helper.params.is_empty()
                && helper.hash.is_empty()
                && !helper.block
                && name != "len"
                && !HELPERS.contains(&name.as_str()) =>
        {
            Some(name)
        }
        _ => None,
    }
}

fn qualify_elements(elements: &mut [TemplateElement], bare: &impl Fn(&str) -> bool) {
    let qualify = |param: &mut Parameter| {
        let name = match &*param {
            Parameter::Path(HbsPath::Relative((_, raw)))
                if bare(raw) && raw != "this" && !HELPERS.contains(&raw.as_str()) =>
            {
                raw.clone()
            }
            _ => return,
        };
        if let Ok(path) = HbsPath::parse(&format!("record.{name}")) {
            *param = Parameter::Path(path);
        }
    };
    for element in elements {
        match element {
            TemplateElement::Expression(helper)
            | TemplateElement::HtmlExpression(helper)
            | TemplateElement::HelperBlock(helper) => {
                if let Some(name) = bare_variable(helper).filter(|n| bare(n)) {
                    if let Ok(path) = HbsPath::parse(&format!("record.{name}")) {
                        helper.name = Parameter::Path(path);
                    }
                }
                let is_helper_call =
                    !helper.params.is_empty() || !helper.hash.is_empty() || helper.block;
                if !is_helper_call {
                    qualify(&mut helper.name);
                }
                if let Parameter::Subexpression(sub) = &mut helper.name {
                    qualify_elements(std::slice::from_mut(&mut sub.element), bare);
                }
                for param in helper.params.iter_mut().chain(helper.hash.values_mut()) {
                    match param {
                        Parameter::Subexpression(sub) => {
                            qualify_elements(std::slice::from_mut(&mut sub.element), bare)
                        }
                        other => qualify(other),
                    }
                }
                let scoped =
                    matches!(&helper.name, Parameter::Name(n) if n == "each" || n == "with");
                if !scoped {
                    if let Some(inner) = &mut helper.template {
                        qualify_elements(&mut inner.elements, bare);
                    }
                }
                if let Some(inner) = &mut helper.inverse {
                    qualify_elements(&mut inner.elements, bare);
                }
            }
            _ => {}
        }
    }
}

fn collect_roots<'a>(elements: &'a [TemplateElement], roots: &mut Vec<&'a str>) {
    let mut paths = Vec::new();
    collect_paths(elements, &mut paths);
    roots.extend(
        paths
            .into_iter()
            .map(|raw| raw.split(['.', '/', '[']).next().unwrap_or_default()),
    );
}

/// Every top-level variable path read by `elements`, as written.
fn collect_paths<'a>(elements: &'a [TemplateElement], roots: &mut Vec<&'a str>) {
    for element in elements {
        match element {
            TemplateElement::Expression(helper)
            | TemplateElement::HtmlExpression(helper)
            | TemplateElement::HelperBlock(helper) => {
                let is_helper_call =
                    !helper.params.is_empty() || !helper.hash.is_empty() || helper.block;
                if let Some(name) = bare_variable(helper) {
                    roots.push(name);
                }
                match &helper.name {
                    Parameter::Path(path) if !is_helper_call => path_of(path, roots),
                    Parameter::Subexpression(sub) => {
                        collect_paths(std::slice::from_ref(&sub.element), roots)
                    }
                    _ => {}
                }
                for param in helper.params.iter().chain(helper.hash.values()) {
                    param_roots(param, roots);
                }
                let scoped =
                    matches!(&helper.name, Parameter::Name(n) if n == "each" || n == "with");
                if !scoped {
                    if let Some(inner) = &helper.template {
                        collect_paths(&inner.elements, roots);
                    }
                }
                if let Some(inner) = &helper.inverse {
                    collect_paths(&inner.elements, roots);
                }
            }
            _ => {}
        }
    }
}

fn param_roots<'a>(param: &'a Parameter, roots: &mut Vec<&'a str>) {
    match param {
        Parameter::Path(path) => path_of(path, roots),
        Parameter::Subexpression(sub) => collect_paths(std::slice::from_ref(&sub.element), roots),
        _ => {}
    }
}

fn path_of<'a>(path: &'a HbsPath, paths: &mut Vec<&'a str>) {
    if let HbsPath::Relative((_, raw)) = path {
        let root = raw.split(['.', '/', '[']).next().unwrap_or_default();
        let helper = HELPERS.contains(&raw.as_str());
        if !root.is_empty() && root != "this" && !root.starts_with('@') && root != ".." && !helper {
            paths.push(raw);
        }
    }
}

/// A JSON value whose string leaves are templates.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    /// A non-string leaf, copied as is.
    Value(Value),
    Text(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub fn compile(value: &Value) -> Result<JsonTemplate, TemplateError> {
        Ok(match value {
            Value::String(s) => JsonTemplate::Text(Template::compile(s)?),
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .map(JsonTemplate::compile)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => JsonTemplate::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), JsonTemplate::compile(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => JsonTemplate::Value(other.clone()),
        })
    }

    pub fn variable_roots(&self) -> Vec<&str> {
        let mut roots = Vec::new();
        self.each_template(&mut |t| roots.extend(t.variable_roots()));
        roots.sort_unstable();
        roots.dedup();
        roots
    }

    /// Every variable path its leaves read (see [`Template::variable_paths`]).
    pub fn variable_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        self.each_template(&mut |t| paths.extend(t.variable_paths()));
        paths.sort_unstable();
        paths.dedup();
        paths
    }

    /// [`Template::qualify_bare_names`] on every leaf.
    pub fn qualify_bare_names(&mut self, roots: &[&str]) {
        match self {
            JsonTemplate::Value(_) => {}
            JsonTemplate::Text(t) => t.qualify_bare_names(roots),
            JsonTemplate::Array(items) => {
                items.iter_mut().for_each(|i| i.qualify_bare_names(roots))
            }
            JsonTemplate::Object(fields) => fields
                .iter_mut()
                .for_each(|(_, v)| v.qualify_bare_names(roots)),
        }
    }

    fn each_template<'a>(&'a self, f: &mut impl FnMut(&'a Template)) {
        match self {
            JsonTemplate::Value(_) => {}
            JsonTemplate::Text(t) => f(t),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.each_template(f)),
            JsonTemplate::Object(fields) => fields.iter().for_each(|(_, v)| v.each_template(f)),
        }
    }
}

handlebars_helper!(json_helper: |v: Json| v.to_string());
handlebars_helper!(lower_helper: |s: str| s.to_lowercase());
handlebars_helper!(upper_helper: |s: str| s.to_uppercase());
/// `{{default VALUE FALLBACK}}`: FALLBACK when VALUE is missing, null or "". Written by hand (not
/// with `handlebars_helper!`) because strict mode must let this one helper see a missing value.
struct DefaultHelper;

impl handlebars::HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, RenderError> {
        let fallback = h.param(1).map(|p| p.value().clone()).unwrap_or(Value::Null);
        let value = match h.param(0) {
            Some(p) if !p.is_value_missing() => match p.value() {
                Value::Null => fallback,
                Value::String(s) if s.is_empty() => fallback,
                other => other.clone(),
            },
            _ => fallback,
        };
        Ok(handlebars::ScopedJson::Derived(value))
    }
}

handlebars_helper!(urlencode_helper: |s: Json| {
    let text = match s { Value::String(s) => s.clone(), other => other.to_string() };
    utf8_percent_encode(&text, SEGMENT).to_string()
});
handlebars_helper!(last_segment_helper: |s: str| last_segment(s).to_owned());
// `now` is [`crate::as_of::now`]: the instant the block started, in a run and in its replay.
handlebars_helper!(now_helper: | | crate::as_of::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
/// `{{days_ago N}}`: the instant N days before [`crate::as_of::now`]; an N further than a date can
/// reach is a render error (chrono would panic).
struct DaysAgoHelper;

impl handlebars::HelperDef for DaysAgoHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, RenderError> {
        let param = h
            .param(0)
            .ok_or(handlebars::RenderErrorReason::ParamNotFoundForIndex(
                "days_ago", 0,
            ))?;
        let days = param.value().as_i64().ok_or_else(|| {
            handlebars::RenderErrorReason::InvalidParamType("a whole number of days")
        })?;
        let at = chrono::Duration::try_days(days)
            .and_then(|d| crate::as_of::now().checked_sub_signed(d))
            .ok_or_else(|| {
                handlebars::RenderErrorReason::Other(format!(
                    "`days_ago {days}` is further from now than a date can be"
                ))
            })?;
        Ok(handlebars::ScopedJson::Derived(Value::String(
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )))
    }
}
/// `{{from_now "7d"}}`: the instant a duration (`30s`, `12h`, `7d`, as `for:` and `retry` spell
/// them) after [`crate::as_of::now`], RFC 3339 in whole seconds.
struct FromNowHelper;

impl handlebars::HelperDef for FromNowHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, RenderError> {
        let param = h
            .param(0)
            .ok_or(handlebars::RenderErrorReason::ParamNotFoundForIndex(
                "from_now", 0,
            ))?;
        let text = match param.value() {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let at = crate::compile::parse_duration(&text)
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| crate::as_of::now().checked_add_signed(d))
            .ok_or_else(|| {
                handlebars::RenderErrorReason::Other(format!(
                    "`from_now` takes a duration such as `7d`, `12h` or `30s`, not `{text}`"
                ))
            })?;
        Ok(handlebars::ScopedJson::Derived(Value::String(
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )))
    }
}

handlebars_helper!(resource_uri_helper: |base: str, kind: str, id: str| resource_uri(base, kind, id));

/// The last non-empty `/`-separated segment: a Calendly URI's uuid.
pub fn last_segment(s: &str) -> &str {
    s.trim_end_matches('/').rsplit('/').next().unwrap_or(s)
}

/// A resource URI from either a URI (kept as is) or a bare id (`{base}/{kind}/{id}`): Calendly
/// takes organizations as URIs, while users often hold only the uuid.
pub fn resource_uri(base: &str, kind: &str, id: &str) -> String {
    if id.starts_with("http://") || id.starts_with("https://") {
        id.to_owned()
    } else {
        format!("{}/{kind}/{id}", base.trim_end_matches('/'))
    }
}

/// A template failed to render (a missing variable, a helper given the wrong type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderFailure {
    pub message: String,
}

impl From<RenderError> for RenderFailure {
    fn from(err: RenderError) -> RenderFailure {
        let message = match err.reason() {
            handlebars::RenderErrorReason::MissingVariable(Some(path)) => {
                format!("`{path}` is not defined")
            }
            other => first_line(&other.to_string()),
        };
        RenderFailure { message }
    }
}

/// The handlebars registries and helpers.
pub struct TemplateEngine {
    text: Handlebars<'static>,
    segment: Handlebars<'static>,
}

impl fmt::Debug for TemplateEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TemplateEngine")
    }
}

impl Default for TemplateEngine {
    fn default() -> TemplateEngine {
        TemplateEngine::new()
    }
}

impl TemplateEngine {
    pub fn new() -> TemplateEngine {
        let registry = |escape: fn(&str) -> String| {
            let mut hbs = Handlebars::new();
            hbs.set_strict_mode(true);
            hbs.register_escape_fn(escape);
            hbs.register_helper("json", Box::new(json_helper));
            hbs.register_helper("lower", Box::new(lower_helper));
            hbs.register_helper("upper", Box::new(upper_helper));
            hbs.register_helper("default", Box::new(DefaultHelper));
            hbs.register_helper("urlencode", Box::new(urlencode_helper));
            hbs.register_helper("last_segment", Box::new(last_segment_helper));
            hbs.register_helper("now", Box::new(now_helper));
            hbs.register_helper("days_ago", Box::new(DaysAgoHelper));
            hbs.register_helper("from_now", Box::new(FromNowHelper));
            hbs.register_helper("resource_uri", Box::new(resource_uri_helper));
            hbs
        };
        TemplateEngine {
            text: registry(handlebars::no_escape),
            segment: registry(|s| utf8_percent_encode(s, SEGMENT).to_string()),
        }
    }

    /// Renders as text.
    pub fn render(&self, template: &Template, context: &Context) -> Result<String, RenderFailure> {
        render_with(&self.text, template, context)
    }

    /// Renders a path: every expression's value is percent-encoded as one path segment, so
    /// `../admin` or `a/b` in a value stays inside its segment.
    pub fn render_path(
        &self,
        template: &Template,
        context: &Context,
    ) -> Result<String, RenderFailure> {
        render_with(&self.segment, template, context)
    }

    /// Renders as a JSON value: a single `{{path}}` keeps its value's type, anything else is text.
    pub fn render_value(
        &self,
        template: &Template,
        context: &Context,
    ) -> Result<Value, RenderFailure> {
        if let Some(path) = template.single_path() {
            return lookup_defined(context, path).cloned();
        }
        self.render(template, context).map(Value::String)
    }

    /// Renders every leaf of a JSON template.
    pub fn render_json(
        &self,
        template: &JsonTemplate,
        context: &Context,
    ) -> Result<Value, RenderFailure> {
        Ok(match template {
            JsonTemplate::Value(v) => v.clone(),
            JsonTemplate::Text(t) => self.render_value(t, context)?,
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render_json(i, context))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_json(v, context)?)))
                    .collect::<Result<_, RenderFailure>>()?,
            ),
        })
    }
}

fn render_with(
    registry: &Handlebars<'static>,
    template: &Template,
    context: &Context,
) -> Result<String, RenderFailure> {
    match &template.form {
        Form::Literal => Ok(template.source.clone()),
        Form::Path(path) => {
            // The same text handlebars would write, through the registry's escape function.
            let text = match lookup_defined(context, path)? {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            Ok(registry.get_escape_fn()(&text))
        }
        Form::Handlebars(compiled) => {
            let mut rc = RenderContext::new(None);
            let mut out = StringOutput::new();
            compiled.render(registry, context, &mut rc, &mut out)?;
            out.into_string().map_err(|err| RenderFailure {
                message: err.to_string(),
            })
        }
    }
}

/// The value at a single-expression template's path, or strict mode's error naming it.
fn lookup_defined<'a>(context: &'a Context, path: &[String]) -> Result<&'a Value, RenderFailure> {
    lookup(context.data(), path).ok_or_else(|| RenderFailure {
        message: format!("`{}` is not defined", path.join(".")),
    })
}

/// Follows `path` (object keys and array indexes) into `value`.
pub fn lookup<'a, S: AsRef<str>>(value: &'a Value, path: &[S]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, segment| {
        let segment = segment.as_ref();
        match value {
            Value::Object(fields) => fields.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(value: Value) -> Context {
        Context::wraps(value).unwrap()
    }

    #[test]
    fn the_alias_is_the_same_as_braces() {
        let engine = TemplateEngine::new();
        let t = Template::compile("/people/<<webex_user_id>>").unwrap();
        assert_eq!(t.variable_roots(), ["webex_user_id"]);
        assert_eq!(
            engine
                .render(&t, &ctx(json!({"webex_user_id": "Y2lz"})))
                .unwrap(),
            "/people/Y2lz"
        );
    }

    #[test]
    fn strict_mode_names_the_missing_variable() {
        let engine = TemplateEngine::new();
        let t = Template::compile("hello {{record.name}}").unwrap();
        let err = engine.render(&t, &ctx(json!({"record": {}}))).unwrap_err();
        assert_eq!(err.message, "`record.name` is not defined");
    }

    #[test]
    fn no_html_escaping_and_segments_are_encoded_in_paths() {
        let engine = TemplateEngine::new();
        let t = Template::compile("/users/{{id}}").unwrap();
        let c = ctx(json!({"id": "../a b/\"<x>&"}));
        assert_eq!(engine.render(&t, &c).unwrap(), "/users/../a b/\"<x>&");
        assert_eq!(
            engine.render_path(&t, &c).unwrap(),
            "/users/..%2Fa%20b%2F%22%3Cx%3E%26"
        );
    }

    #[test]
    fn a_single_expression_keeps_its_json_type() {
        let engine = TemplateEngine::new();
        let body = JsonTemplate::compile(
            &json!({"active": "{{active}}", "name": "n: {{name}}", "raw": "{{obj}}"}),
        )
        .unwrap();
        let out = engine
            .render_json(
                &body,
                &ctx(json!({"active": false, "name": "a\"b", "obj": {"x": [1]}})),
            )
            .unwrap();
        assert_eq!(
            out,
            json!({"active": false, "name": "n: a\"b", "raw": {"x": [1]}})
        );
    }

    #[test]
    fn syntax_errors_are_reported_with_a_position() {
        let err = Template::compile("{{#if x}}open").unwrap_err();
        assert!(err.message.starts_with("invalid handlebars syntax") || !err.message.is_empty());
        assert!(Template::compile("{{record.email").is_err());
    }

    #[test]
    fn bare_names_read_the_record_and_roots_keep_precedence() {
        let engine = TemplateEngine::new();
        let roots = ["record", "vars", "blocks", "run"];
        let context = ctx(json!({
            "record": {"email": "A@B.COM", "vars": "field", "items": [{"name": "n1"}], "id": 7},
            "vars": {"x": "v"},
        }));
        let render = |source: &str| {
            let mut t = Template::compile(source).unwrap();
            t.qualify_bare_names(&roots);
            engine.render(&t, &context).unwrap()
        };
        assert_eq!(render("<<email>>"), "A@B.COM");
        assert_eq!(render("to {{email}} and {{vars.x}}"), "to A@B.COM and v");
        assert_eq!(render("{{lower email}}"), "a@b.com");
        assert_eq!(render("{{#if email}}yes{{/if}}"), "yes");
        assert_eq!(render("{{#each record.items}}{{name}}{{/each}}"), "n1");
        assert_eq!(render("{{default (lower email) \"x\"}}"), "a@b.com");
        // A root is a root even when the record has a field of that name.
        assert_eq!(render("{{vars.x}}"), "v");
        // Helpers called without arguments stay helpers.
        assert!(render("{{now}}").ends_with('Z'));
        // A single expression keeps its JSON type.
        let mut t = Template::compile("{{id}}").unwrap();
        t.qualify_bare_names(&roots);
        assert_eq!(engine.render_value(&t, &context).unwrap(), json!(7));
        // Roots report what is read after qualifying; a misspelt bare name fails at run time.
        let mut t = Template::compile("{{emial}} {{vars.x}}").unwrap();
        assert_eq!(t.variable_roots(), ["emial", "vars"]);
        t.qualify_bare_names(&roots);
        assert_eq!(t.variable_roots(), ["record", "vars"]);
        assert_eq!(
            engine.render(&t, &context).unwrap_err().message,
            "`record.emial` is not defined"
        );
    }

    #[test]
    fn every_listed_helper_is_registered() {
        // Called with no argument, a registered helper fails (or not) in its own way; an
        // unregistered name would be read as a variable and be "not defined".
        let engine = TemplateEngine::new();
        for name in HELPERS {
            let t = Template::compile(&format!("{{{{{name}}}}} ")).unwrap();
            if let Err(err) = engine.render(&t, &ctx(json!({}))) {
                assert_ne!(err.message, format!("`{name}` is not defined"), "{name}");
            }
        }
    }

    #[test]
    fn time_helpers_render_as_of_the_pinned_instant() {
        let engine = TemplateEngine::new();
        let at = "2020-02-03T04:05:06.789Z".parse().unwrap();
        let t = Template::compile("{{now}} {{days_ago 7}} {{from_now \"7d\"}}").unwrap();
        let out = crate::as_of::at(at, || engine.render(&t, &ctx(json!({}))).unwrap());
        assert_eq!(
            out,
            "2020-02-03T04:05:06Z 2020-01-27T04:05:06Z 2020-02-10T04:05:06Z"
        );
    }

    #[test]
    fn days_ago_further_than_a_date_can_be_is_an_error_not_a_panic() {
        let engine = TemplateEngine::new();
        let at = "2020-02-03T04:05:06Z".parse().unwrap();
        for days in ["99999999999", "-99999999999", "9223372036854775807"] {
            let t = Template::compile(&format!("{{{{days_ago {days}}}}}")).unwrap();
            let out = crate::as_of::at(at, || engine.render(&t, &ctx(json!({}))));
            assert_eq!(
                out.unwrap_err().to_string(),
                format!("`days_ago {days}` is further from now than a date can be")
            );
        }
        for bad in ["\"a week\"", "\"99999999999d\""] {
            let t = Template::compile(&format!("{{{{from_now {bad}}}}}")).unwrap();
            let out = crate::as_of::at(at, || engine.render(&t, &ctx(json!({}))));
            assert_eq!(
                out.unwrap_err().to_string(),
                format!(
                    "`from_now` takes a duration such as `7d`, `12h` or `30s`, not `{}`",
                    bad.trim_matches('"')
                )
            );
        }
    }

    #[test]
    fn helpers_work() {
        let engine = TemplateEngine::new();
        let t = Template::compile(
            "{{last_segment org}} {{lower e}} {{default missing \"x\"}} {{default absent \"y\"}}",
        )
        .unwrap();
        let out = engine
            .render(&t, &ctx(json!({"org": "https://api.calendly.com/organizations/ABC", "e": "A@B.COM", "missing": null})))
            .unwrap();
        assert_eq!(out, "ABC a@b.com x y");
    }
}

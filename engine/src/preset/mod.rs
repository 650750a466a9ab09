//! Vendor presets: what an API block's `preset: vendor.action` means, as data.
//!
//! A preset file (`presets/<vendor>.yaml`) describes one vendor: its base URL, the auth styles it
//! takes, its rate-limit and pagination conventions and the shape of its error bodies; then each
//! action: title (as the vendor tools name it), `kind` (read or write), method, templated path,
//! query, headers and body, the inputs it declares, and the OAuth `scopes` and vendor role
//! (`admin`) it needs. For OAuth the
//! vendor also names its `authorize_url` and `pkce`, what `auth login` reads after a login
//! (`login`) and the reads `blockyard check` performs (`check`). The three shipped files are compiled into
//! the binary with `include_str!`; `--presets DIR` adds vendors or replaces shipped ones.
//!
//! Action templates see the action's inputs by name (`/people/{{webex_user_id}}`, or Oomnitza's
//! `<<webex_user_id>>`) plus `base_url`; input defaults are templates over the workflow's context
//! (`{{vars.calendly_organization}}`). Loading checks every template parses and names only declared
//! inputs, so a preset mistake is caught when the preset loads, not when a run sends a request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::{self, Template};

/// The presets shipped in the binary.
pub const BUILTIN: [(&str, &str); 5] = [
    (
        "presets/calendly.yaml",
        include_str!("../../../presets/calendly.yaml"),
    ),
    (
        "presets/webex.yaml",
        include_str!("../../../presets/webex.yaml"),
    ),
    (
        "presets/scim.yaml",
        include_str!("../../../presets/scim.yaml"),
    ),
    (
        "presets/webhook.yaml",
        include_str!("../../../presets/webhook.yaml"),
    ),
    (
        "presets/email.yaml",
        include_str!("../../../presets/email.yaml"),
    ),
];

/// A vendor's preset file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VendorSpec {
    /// The name workflows use before the dot: `calendly` in `calendly.invite_user`.
    pub vendor: String,
    /// The vendor's display name.
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// How requests leave: `http` (the default) or `smtp` (each action's rendered body is a mail
    /// message sent to the credential's SMTP server; see [`crate::http::smtp`]).
    #[serde(default)]
    pub transport: Transport,
    /// The API's base URL; absent when every customer has their own (SCIM), so a credential must
    /// give `base_url`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The auth styles the vendor accepts.
    pub auth: Vec<AuthKind>,
    /// Where to get OAuth2 tokens, for the OAuth2 auth styles.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Where `blockyard auth login` sends the user to consent (the authorization code flow).
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Whether the authorization code flow takes PKCE (`code_challenge_method=S256`).
    #[serde(default)]
    pub pkce: bool,
    /// What `blockyard auth login` reads once logged in, and the `vars` line it prints.
    #[serde(default)]
    pub login: Option<LoginSpec>,
    /// The read actions `blockyard check` performs, in order.
    #[serde(default)]
    pub check: Vec<CheckSpec>,
    /// Headers sent with every request (for example SCIM's media type).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// The vendor's request budget and how it says "slow down".
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// How the vendor pages through lists.
    #[serde(default)]
    pub pagination: Option<Pagination>,
    /// The shape of the vendor's error bodies.
    pub errors: ErrorStyle,
    /// Response fields the vendor documents as booleans but may send as `"true"`/`"false"`
    /// strings (Webex `invitePending`, `loginEnabled`); the client turns such strings into
    /// booleans, at the top level of a response body and in each listed item.
    #[serde(default)]
    pub boolean_fields: Vec<String>,
    /// The actions, by name.
    pub actions: IndexMap<String, ActionSpec>,
}

/// After `auth login`: a read action and one of its outputs that becomes a global variable.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginSpec {
    /// The action to perform (Calendly: `current_user`).
    pub action: String,
    /// Its output to show (Calendly: `organization`).
    pub output: String,
    /// The `vars` key the output belongs in (Calendly: `calendly_organization`).
    pub var: String,
}

/// One read `blockyard check` performs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// The read action.
    pub action: String,
    /// The likely cause when the vendor refuses it and no scope is missing.
    pub refused: String,
}

/// How a credential authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Bearer,
    Oauth2ClientCredentials,
    Oauth2RefreshToken,
    Basic,
    /// No `Authorization` header: the credential's `url` (a secret, such as a Slack or Teams
    /// incoming-webhook URL) is the whole address, so knowing it is the permission.
    Url,
}

/// A vendor's request budget and how it signals that it was exceeded.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests allowed per minute, per credential.
    pub per_minute: u32,
    /// The response header that says how many seconds to wait after a 429 (`Retry-After` for
    /// Webex, `X-RateLimit-Reset` for Calendly).
    pub wait_header: String,
}

/// How a vendor's requests are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// An HTTP request to the base URL.
    #[default]
    Http,
    /// One mail message over SMTP: the rendered body's `from`, `to`, `cc`, `subject` and `body`,
    /// sent to the credential's `base_url` (`smtp://host:port`).
    Smtp,
}

/// How a vendor pages through lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pagination {
    /// Calendly: `pagination.next_page` (a URL) or `pagination.next_page_token`.
    CalendlyCursor,
    /// Webex: a `Link: <…>; rel="next"` header.
    LinkHeader,
    /// SCIM 2.0: `startIndex`/`count` until `totalResults`.
    ScimIndex,
}

/// The shape of a vendor's error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStyle {
    /// `{"title", "message", "details": [{"parameter", "message"}]}`.
    Calendly,
    /// `{"message", "errors": [{"description"}], "trackingId"}`.
    Webex,
    /// `{"schemas": [...Error], "status": "400", "scimType", "detail"}`.
    Scim,
    /// Anything else (a webhook): a JSON body's `message` or `error`, else the body as text.
    Plain,
}

/// Whether an action changes the vendor's state. Dry runs perform reads and hold writes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Read,
    Write,
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionKind::Read => "read",
            ActionKind::Write => "write",
        })
    }
}

/// HTTP methods presets use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub const NAMES: [&'static str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

    /// The method named `name`, in any case.
    pub fn parse(name: &str) -> Option<Method> {
        match name.to_ascii_uppercase().as_str() {
            "GET" => Some(Method::Get),
            "HEAD" => Some(Method::Head),
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "PATCH" => Some(Method::Patch),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }

    /// What a request with this method does: `GET` and `HEAD` read, every other method writes.
    pub fn kind(self) -> ActionKind {
        match self {
            Method::Get | Method::Head => ActionKind::Read,
            Method::Post | Method::Put | Method::Patch | Method::Delete => ActionKind::Write,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action of a vendor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// The name vendor tools give it, such as "Calendly Invite User".
    pub title: String,
    /// What it does, and what to know before using it.
    pub description: String,
    pub kind: ActionKind,
    /// A write that deletes, removes or deactivates something (a user, a membership, an
    /// invitation): the mass-change guard counts it (see [`crate::exec::guard`]). Only on
    /// `kind: write`; a `DELETE` must say it (`true`, or `false` for one that deletes nothing a
    /// person would miss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    pub method: Method,
    /// The path below the base URL; each expression is percent-encoded as one path segment.
    pub path: String,
    /// Query parameters (templates); a parameter whose value renders empty is left out.
    #[serde(default)]
    pub query: IndexMap<String, Value>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// The JSON body; each string leaf is a template, and a leaf that is one expression keeps the
    /// JSON type of its value.
    #[serde(default)]
    pub body: Option<Value>,
    /// The inputs a workflow gives in `with:`.
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    /// Statuses that mean success (any 2xx when empty).
    #[serde(default)]
    pub success: Vec<u16>,
    /// Follow the vendor's pagination and collect the items of every page.
    #[serde(default)]
    pub paginate: bool,
    /// Where the list of items is in a response body (a JSON pointer such as `/collection`).
    #[serde(default)]
    pub items: Option<String>,
    /// Read-modify-write: fetch the current resource with another action, merge this action's body
    /// into it, drop read-only fields, and send the whole (Webex Update User).
    #[serde(default)]
    pub merge: Option<MergeSpec>,
    /// How the response says "no such user" (besides 404), for find and role actions.
    #[serde(default)]
    pub not_found: Option<NotFoundSpec>,
    /// Statuses that mean the vendor cannot answer this for this account (not a failure of the
    /// user), such as Calendly's 403 for the activity log outside Enterprise plans.
    #[serde(default)]
    pub unsupported: Vec<u16>,
    /// For role actions: where the role, activity and state are in the response.
    #[serde(default)]
    pub role: Option<RoleReadSpec>,
    /// For writes: a read action that tells whether the write already took effect, used when a
    /// crash left its outcome unknown.
    #[serde(default)]
    pub probe: Option<ProbeSpec>,
    /// The outputs a block gets without declaring any (templates over `response`).
    #[serde(default)]
    pub outputs: IndexMap<String, String>,
    /// The OAuth2 scopes the action needs (`auth login` asks for them, `auth status` and
    /// `check` name the missing ones).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The role the token's user must hold at the vendor, where scopes are not enough (Calendly:
    /// an organization admin or owner to manage members).
    #[serde(default)]
    pub admin: Option<String>,
}

/// One declared input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub description: String,
    /// A workflow must provide it (in `with:`, from the subject record, or through `default`).
    #[serde(default)]
    pub required: bool,
    /// A value used when none is given: a template over the workflow's context.
    #[serde(default)]
    pub default: Option<Value>,
}

/// Read-modify-write settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeSpec {
    /// The read action (same vendor) that fetches the current resource.
    pub read: String,
    /// Fields of the current resource that must not be sent back.
    pub drop: Vec<String>,
    /// When not empty, only these fields of the current resource are sent back (the vendor's
    /// writable fields), so a field the vendor adds later is never echoed into a write.
    #[serde(default)]
    pub keep: Vec<String>,
}

/// How a response says "not found".
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotFoundSpec {
    /// A JSON pointer to a list that is empty when nothing was found (`/collection`).
    #[serde(default)]
    pub empty: Option<String>,
}

/// Where a role action's answers are, as templates over `response`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleReadSpec {
    pub role: String,
    #[serde(default)]
    pub last_activity: Option<String>,
    /// Renders `true` or `false`: whether the vendor considers the user active.
    #[serde(default)]
    pub active: Option<String>,
    /// Another action of the vendor that gives the last activity (Calendly's activity log).
    #[serde(default)]
    pub activity_action: Option<String>,
}

/// The read that checks a write's effect.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// The read action (same vendor), called with the write's inputs.
    pub action: String,
    /// A rhai expression over `response` and `status` that is true when the write has taken effect.
    pub done_when: String,
    /// The write's answer, recovered from the probe's: a JSON template over the probe's
    /// `response` and `status` (`"{{response.Resources.0}}"` when the probe lists the created
    /// user). A block's `save` and `outputs` render from it when the probe found the write done;
    /// without it they render from the probe's answer as it is.
    #[serde(default)]
    pub answer: Option<Value>,
}

/// `vendor.action`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PresetId {
    pub vendor: String,
    pub action: String,
}

impl PresetId {
    /// Splits `vendor.action`; `None` when there is no dot or a side is empty.
    pub fn parse(s: &str) -> Option<PresetId> {
        let (vendor, action) = s.split_once('.')?;
        if vendor.is_empty() || action.is_empty() || action.contains('.') {
            return None;
        }
        Some(PresetId {
            vendor: vendor.to_owned(),
            action: action.to_owned(),
        })
    }
}

impl fmt::Display for PresetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.vendor, self.action)
    }
}

/// A vendor's presets, checked, with the action templates compiled.
#[derive(Debug)]
pub struct Vendor {
    pub spec: VendorSpec,
    /// Where it was loaded from.
    pub file: PathBuf,
    pub actions: IndexMap<String, Action>,
}

/// An action with its templates compiled once.
#[derive(Debug)]
pub struct Action {
    pub id: PresetId,
    pub spec: ActionSpec,
    pub path: Template,
    pub query: IndexMap<String, Template>,
    pub headers: IndexMap<String, Template>,
    pub body: Option<template::JsonTemplate>,
    /// The inputs' `default`s, compiled: templates over the workflow's context.
    pub defaults: IndexMap<String, template::JsonTemplate>,
}

impl Action {
    /// Whether the action deletes, removes or deactivates (`destructive: true`).
    pub fn is_destructive(&self) -> bool {
        self.spec.destructive == Some(true)
    }

    /// Inputs a workflow must provide.
    pub fn required_inputs(&self) -> impl Iterator<Item = &str> {
        self.spec
            .inputs
            .iter()
            .filter(|(_, input)| input.required && input.default.is_none())
            .map(|(name, _)| name.as_str())
    }
}

/// A problem in a preset file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: error: {message}", file.display())]
pub struct PresetError {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Every known vendor, by name. Vendors are shared, so a registry is cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct PresetRegistry {
    vendors: IndexMap<String, Arc<Vendor>>,
}

impl PresetRegistry {
    /// The shipped presets, parsed and compiled once per process.
    pub fn builtin() -> PresetRegistry {
        static SHIPPED: OnceLock<PresetRegistry> = OnceLock::new();
        SHIPPED
            .get_or_init(|| {
                let mut registry = PresetRegistry::default();
                for (file, text) in BUILTIN {
                    let vendor = load_vendor(Path::new(file), text).unwrap_or_else(|errors| {
                        panic!("shipped preset {file} is invalid: {errors:?}")
                    });
                    registry.insert(vendor);
                }
                registry
            })
            .clone()
    }

    /// The shipped presets plus every `*.yaml`/`*.yml` in `dir` (a vendor defined there replaces
    /// the shipped one of the same name).
    pub fn with_dir(dir: &Path) -> Result<PresetRegistry, Vec<PresetError>> {
        let mut registry = PresetRegistry::builtin();
        let mut errors = Vec::new();
        let read_error = |err: std::io::Error| PresetError {
            file: dir.to_owned(),
            line: 1,
            column: 1,
            message: format!(
                "cannot read the presets directory: {}",
                err.to_string().to_lowercase()
            ),
        };
        let entries = std::fs::read_dir(dir).map_err(|err| vec![read_error(err)])?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
            })
            .collect();
        files.sort();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => match load_vendor(&file, &text) {
                    Ok(vendor) => registry.insert(vendor),
                    Err(mut more) => errors.append(&mut more),
                },
                Err(err) => errors.push(PresetError {
                    file: file.clone(),
                    line: 1,
                    column: 1,
                    message: format!("cannot read the file: {}", err.to_string().to_lowercase()),
                }),
            }
        }
        if errors.is_empty() {
            Ok(registry)
        } else {
            Err(errors)
        }
    }

    pub fn insert(&mut self, vendor: Vendor) {
        self.vendors
            .insert(vendor.spec.vendor.clone(), Arc::new(vendor));
    }

    pub fn vendor(&self, name: &str) -> Option<&Vendor> {
        self.vendors.get(name).map(Arc::as_ref)
    }

    pub fn vendors(&self) -> impl Iterator<Item = &Vendor> {
        self.vendors.values().map(Arc::as_ref)
    }

    pub fn action(&self, id: &PresetId) -> Option<&Action> {
        self.vendors.get(&id.vendor)?.actions.get(&id.action)
    }

    /// Every action, vendor by vendor, in file order.
    pub fn actions(&self) -> impl Iterator<Item = (&Vendor, &Action)> {
        self.vendors()
            .flat_map(|vendor| vendor.actions.values().map(move |action| (vendor, action)))
    }
}

/// Parses and checks one preset file.
pub fn load_vendor(file: &Path, text: &str) -> Result<Vendor, Vec<PresetError>> {
    crate::spec::limits::check(text).map_err(|err| {
        vec![PresetError {
            file: file.to_owned(),
            line: err.location.line,
            column: err.location.column,
            message: format!("{}; {}", err.limit, err.limit.hint()),
        }]
    })?;
    let spec: VendorSpec = serde_yaml::from_str(text).map_err(|err| {
        let location = crate::spec::yaml_error_location(&err);
        vec![PresetError {
            file: file.to_owned(),
            line: location.line,
            column: location.column,
            message: crate::spec::strip_position(&err.to_string()),
        }]
    })?;
    let map = crate::spec::SourceMap::build(text);
    let mut errors = Vec::new();
    let mut actions = IndexMap::new();
    for (name, action) in &spec.actions {
        let mut check = ActionCheck {
            file,
            map: &map,
            name,
            action,
            errors: &mut errors,
        };
        let path = check.template("path", &action.path);
        let mut query = IndexMap::new();
        for (key, value) in &action.query {
            let source = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let Some(template) = check.template("query", &source) {
                query.insert(key.clone(), template);
            }
        }
        let mut headers = IndexMap::new();
        for (key, value) in &action.headers {
            if let Some(template) = check.template("headers", value) {
                headers.insert(key.clone(), template);
            }
        }
        let body = action.body.as_ref().and_then(|body| {
            let compiled = template::JsonTemplate::compile(body);
            check.checked("body", compiled, template::JsonTemplate::variable_roots)
        });
        for (key, referenced) in [
            ("merge", action.merge.as_ref().map(|m| m.read.as_str())),
            ("probe", action.probe.as_ref().map(|p| p.action.as_str())),
            (
                "role",
                action
                    .role
                    .as_ref()
                    .and_then(|r| r.activity_action.as_deref()),
            ),
        ] {
            if let Some(referenced) = referenced {
                if !spec.actions.contains_key(referenced) {
                    check.error(
                        key,
                        format!("`{key}` names action `{referenced}`, which does not exist"),
                    );
                }
            }
        }
        if let Some(answer) = action.probe.as_ref().and_then(|p| p.answer.as_ref()) {
            if let Err(err) = template::JsonTemplate::compile(answer) {
                check.error(
                    "probe",
                    format!("invalid template in `probe.answer`: {err}"),
                );
            }
        }
        if action.destructive == Some(true) && action.kind != ActionKind::Write {
            check.error(
                "destructive",
                "`destructive: true` is only for `kind: write` actions (a read changes nothing); remove it or make the action a write".to_owned(),
            );
        }
        if spec.transport == Transport::Smtp
            && (action.kind != ActionKind::Write || action.body.is_none())
        {
            check.error(
                "kind",
                "an action of a `transport: smtp` vendor sends one message: it must be `kind: write` with a `body` of `from`, `to`, `subject` and `body`".to_owned(),
            );
        }
        if action.destructive.is_none() && action.method == Method::Delete {
            check.error(
                "method",
                "a `DELETE` action must say whether it is destructive: add `destructive: true` (the mass-change guard counts it) or `destructive: false`".to_owned(),
            );
        }
        let mut defaults = IndexMap::new();
        for (input, spec) in &action.inputs {
            if let Some(default) = &spec.default {
                match template::JsonTemplate::compile(default) {
                    Ok(default) => {
                        defaults.insert(input.clone(), default);
                    }
                    Err(err) => check.error(
                        "inputs",
                        format!("invalid template in the default of input `{input}`: {err}"),
                    ),
                }
            }
        }
        if let Some(path) = path {
            actions.insert(
                name.clone(),
                Action {
                    id: PresetId {
                        vendor: spec.vendor.clone(),
                        action: name.clone(),
                    },
                    spec: action.clone(),
                    path,
                    query,
                    headers,
                    body,
                    defaults,
                },
            );
        }
    }
    // `login` and `check` name read actions of this vendor.
    let named = spec
        .login
        .iter()
        .map(|l| ("login", &l.action))
        .chain(spec.check.iter().map(|c| ("check", &c.action)));
    for (key, name) in named {
        let problem = match spec.actions.get(name) {
            None => Some("which does not exist"),
            Some(action) if action.kind != ActionKind::Read => Some("which is not a read"),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            let location = map.key_location(&crate::spec::YamlPath::root().key(key));
            errors.push(PresetError {
                file: file.to_owned(),
                line: location.line,
                column: location.column,
                message: format!("`{key}` names action `{name}`, {problem}"),
            });
        }
    }
    if errors.is_empty() {
        Ok(Vendor {
            spec,
            file: file.to_owned(),
            actions,
        })
    } else {
        Err(errors)
    }
}

/// Checks one action's templates, reporting each problem at the action's key.
struct ActionCheck<'a> {
    file: &'a Path,
    map: &'a crate::spec::SourceMap,
    name: &'a str,
    action: &'a ActionSpec,
    errors: &'a mut Vec<PresetError>,
}

impl ActionCheck<'_> {
    fn error(&mut self, key: &str, message: String) {
        let path = crate::spec::YamlPath::root()
            .key("actions")
            .key(self.name)
            .key(key);
        let location = self.map.value_location(&path);
        self.errors.push(PresetError {
            file: self.file.to_owned(),
            line: location.line,
            column: location.column,
            message: format!("action `{}`: {message}", self.name),
        });
    }

    fn template(&mut self, key: &str, source: &str) -> Option<Template> {
        self.checked(key, Template::compile(source), Template::variable_roots)
    }

    /// A compiled template whose variables are all `base_url` or declared inputs.
    fn checked<T>(
        &mut self,
        key: &str,
        compiled: Result<T, template::TemplateError>,
        variable_roots: fn(&T) -> Vec<&str>,
    ) -> Option<T> {
        match compiled {
            Ok(template) => {
                for root in variable_roots(&template) {
                    if root != "base_url" && !self.action.inputs.contains_key(root) {
                        self.error(
                            key,
                            format!("`{key}` uses `{root}`, which is not a declared input"),
                        );
                    }
                }
                Some(template)
            }
            Err(err) => {
                self.error(key, format!("invalid template in `{key}`: {err}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_presets_load() {
        let registry = PresetRegistry::builtin();
        let names: Vec<_> = registry.vendors().map(|v| v.spec.vendor.as_str()).collect();
        assert_eq!(names, ["calendly", "webex", "scim", "webhook", "email"]);
    }

    #[test]
    fn a_template_naming_an_undeclared_input_is_an_error() {
        let text = "vendor: x\ntitle: X\nauth: [bearer]\nerrors: scim\nactions:\n  get:\n    title: X Get\n    description: d\n    kind: read\n    method: GET\n    path: /users/{{user_id}}\n";
        let errors = load_vendor(Path::new("x.yaml"), text).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "x.yaml:11:11: error: action `get`: `path` uses `user_id`, which is not a declared input"
        );
    }

    #[test]
    fn the_shipped_destructive_actions_are_the_deletes_removals_and_deactivations() {
        let registry = PresetRegistry::builtin();
        let destructive: Vec<String> = registry
            .vendors()
            .flat_map(|v| v.actions.values())
            .filter(|a| a.is_destructive())
            .map(|a| a.id.to_string())
            .collect();
        assert_eq!(
            destructive,
            [
                "calendly.remove_user_membership",
                "calendly.revoke_invitation",
                "webex.delete_user",
                "scim.deactivate_user",
                "scim.delete_user",
                "scim.remove_from_group",
            ]
        );
    }

    #[test]
    fn destructive_is_only_for_writes_and_a_delete_must_say_it() {
        let head = "vendor: x\ntitle: X\nauth: [bearer]\nerrors: scim\nactions:\n";
        let read = format!("{head}  get:\n    title: X Get\n    description: d\n    kind: read\n    destructive: true\n    method: GET\n    path: /users\n");
        let errors = load_vendor(Path::new("x.yaml"), &read).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "x.yaml:10:18: error: action `get`: `destructive: true` is only for `kind: write` actions (a read changes nothing); remove it or make the action a write"
        );
        let delete = format!("{head}  del:\n    title: X Delete\n    description: d\n    kind: write\n    method: DELETE\n    path: /users\n");
        let errors = load_vendor(Path::new("x.yaml"), &delete).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "x.yaml:10:13: error: action `del`: a `DELETE` action must say whether it is destructive: add `destructive: true` (the mass-change guard counts it) or `destructive: false`"
        );
    }
}

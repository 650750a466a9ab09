//! The SCIM 2.0 fake (RFC 7643, RFC 7644): Users and Groups, plus the discovery endpoints
//! ServiceProviderConfig, ResourceTypes and Schemas.
//!
//! Resources are stored as validated JSON attribute maps (canonical attribute names, see
//! [`schema::validate`]) with server-kept `id`, timestamps and a version from one server-wide
//! counter; `meta.version` and the `ETag` header are the weak tag `W/"N"`. Responses are
//! `application/scim+json`; errors use the SCIM Error schema with `status` as a string.
//! [`filter`] parses and evaluates filters, [`patch`] applies PatchOp requests atomically;
//! [`fuzz`] holds their properties for the fuzzers, which cannot reach them otherwise.

mod filter;
pub mod fuzz;
mod patch;
mod schema;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::http::{self, Ctx};
use super::ids::{millis_time, uuid};
use super::lock;
use super::seed::{SeedPerson, SeedRole};
use super::store::Table;
use schema::Kind;

const SCIM_JSON: &str = "application/scim+json";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// The most resources one page returns (advertised as `filter.maxResults`).
const MAX_RESULTS: usize = 1000;
const DEFAULT_COUNT: usize = 100;

/// A SCIM error response (RFC 7644 §3.12), as data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScimError {
    pub(crate) status: StatusCode,
    pub(crate) scim_type: Option<&'static str>,
    pub(crate) detail: String,
}

impl ScimError {
    fn new(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> ScimError {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    pub(crate) fn invalid_syntax(detail: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("invalidSyntax"), detail)
    }
    pub(crate) fn invalid_value(detail: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }
    pub(crate) fn invalid_filter(detail: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("invalidFilter"), detail)
    }
    pub(crate) fn invalid_path(detail: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("invalidPath"), detail)
    }
    pub(crate) fn no_target(detail: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("noTarget"), detail)
    }
    pub(crate) fn mutability(detail: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("mutability"), detail)
    }
    fn uniqueness(detail: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::CONFLICT, Some("uniqueness"), detail)
    }
    fn not_found(detail: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::NOT_FOUND, None, detail)
    }

    fn response(&self) -> Response {
        let mut body = Map::new();
        body.insert("schemas".into(), json!([ERROR]));
        body.insert("status".into(), json!(self.status.as_u16().to_string()));
        if let Some(t) = self.scim_type {
            body.insert("scimType".into(), json!(t));
        }
        body.insert("detail".into(), json!(self.detail));
        http::typed_json(self.status, SCIM_JSON, &body)
    }
}

pub(crate) fn unauthorized() -> Response {
    ScimError::new(
        StatusCode::UNAUTHORIZED,
        None,
        "Authorization failure: a valid bearer token is required.",
    )
    .response()
}

pub(crate) fn too_many_requests(retry_after: u64) -> Response {
    let response = ScimError::new(
        StatusCode::TOO_MANY_REQUESTS,
        None,
        "Too many requests: retry after the number of seconds in Retry-After.",
    )
    .response();
    http::with_header(response, "retry-after", &retry_after.to_string())
}

pub(crate) fn unavailable() -> Response {
    ScimError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "Service unavailable (injected by the sandbox).",
    )
    .response()
}

/// One stored User or Group.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    id: String,
    /// Validated attributes, `schemas` included; no `id` and no `meta`.
    attrs: Map<String, Value>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    version: u64,
}

impl Resource {
    fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// Everything the SCIM fake knows.
pub(crate) struct ScimState {
    /// `http://IP:PORT/scim/v2`
    base: String,
    users: Table<Resource>,
    groups: Table<Resource>,
    /// Lowercased userName → user id.
    user_names: HashMap<String, String>,
    /// The server-wide version counter.
    version: u64,
    rng: fastrand::Rng,
}

impl ScimState {
    pub(crate) fn seeded(root: &str, people: &[SeedPerson], seed: u64) -> ScimState {
        let mut state = ScimState {
            base: format!("{root}/scim/v2"),
            users: Table::default(),
            groups: Table::default(),
            user_names: HashMap::new(),
            version: 0,
            rng: fastrand::Rng::with_seed(seed ^ 0x5C1_5C1),
        };
        let mut admins = Vec::new();
        for p in people {
            let attrs = json!({
                "schemas": [schema::USER],
                "userName": p.email,
                "name": { "formatted": p.name(), "givenName": p.first, "familyName": p.last },
                "displayName": p.name(),
                "emails": [{ "value": p.email, "type": "work", "primary": true }],
                "active": true,
            });
            let id = state.insert(Kind::User, attrs_of(attrs), p.created);
            if p.role != SeedRole::Member {
                admins.push(json!({ "value": id, "display": p.name() }));
            }
        }
        if !admins.is_empty() {
            let attrs = json!({ "schemas": [schema::GROUP], "displayName": "Administrators", "members": admins });
            let created = people.first().map(|p| p.created).unwrap_or_else(Utc::now);
            state.insert(Kind::Group, attrs_of(attrs), created);
        }
        state
    }

    fn table(&self, kind: Kind) -> &Table<Resource> {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    fn table_mut(&mut self, kind: Kind) -> &mut Table<Resource> {
        match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Stores a new, already validated resource; returns its id.
    fn insert(&mut self, kind: Kind, attrs: Map<String, Value>, at: DateTime<Utc>) -> String {
        let id = uuid(&mut self.rng);
        if let (Kind::User, Some(name)) = (kind, attrs.get("userName").and_then(Value::as_str)) {
            self.user_names.insert(name.to_lowercase(), id.clone());
        }
        let version = self.next_version();
        let resource = Resource {
            id: id.clone(),
            attrs,
            created: at,
            modified: at,
            version,
        };
        self.table_mut(kind).insert(id.clone(), resource);
        id
    }

    /// The user holding `user_name`, if any.
    fn user_named(&self, user_name: &str) -> Option<&String> {
        self.user_names.get(&user_name.to_lowercase())
    }

    fn location(&self, kind: Kind, id: &str) -> String {
        format!("{}/{}/{id}", self.base, kind.endpoint())
    }

    /// Group memberships per user id (for the read-only `groups` attribute).
    fn memberships(&self) -> HashMap<&str, Vec<Value>> {
        let mut out: HashMap<&str, Vec<Value>> = HashMap::new();
        for g in self.groups.values() {
            let display = g.attrs.get("displayName").cloned().unwrap_or(Value::Null);
            for m in g
                .attrs
                .get("members")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = m.get("value").and_then(Value::as_str) {
                    out.entry(id).or_default().push(json!({
                        "value": g.id,
                        "$ref": self.location(Kind::Group, &g.id),
                        "display": display,
                        "type": "direct",
                    }));
                }
            }
        }
        out
    }

    /// The resource as returned to clients: `id`, attributes (never-returned ones dropped),
    /// derived `groups`, and `meta`.
    fn render(&self, kind: Kind, r: &Resource, groups: Option<&Vec<Value>>) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert(
            "schemas".into(),
            r.attrs
                .get("schemas")
                .cloned()
                .unwrap_or_else(|| json!([kind.core()])),
        );
        out.insert("id".into(), Value::String(r.id.clone()));
        for (k, v) in &r.attrs {
            if k == "schemas" {
                continue;
            }
            if schema::find(kind.attrs(), k).is_some_and(|a| a.never_returned) {
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
        if let Some(groups) = groups.filter(|g| !g.is_empty()) {
            out.insert("groups".into(), Value::Array(groups.clone()));
        }
        out.insert(
            "meta".into(),
            json!({
                "resourceType": kind.name(),
                "created": millis_time(&r.created),
                "lastModified": millis_time(&r.modified),
                "location": self.location(kind, &r.id),
                "version": r.etag(),
            }),
        );
        out
    }

    fn render_one(&self, kind: Kind, r: &Resource) -> Map<String, Value> {
        match kind {
            Kind::User => {
                // Only this user's groups (cheaper than `memberships()` on the hot GET path).
                let groups: Vec<Value> = self
                    .groups
                    .values()
                    .filter(|g| {
                        g.attrs
                            .get("members")
                            .and_then(Value::as_array)
                            .is_some_and(|ms| {
                                ms.iter().any(|m| {
                                    m.get("value").and_then(Value::as_str) == Some(r.id.as_str())
                                })
                            })
                    })
                    .map(|g| {
                        json!({
                            "value": g.id,
                            "$ref": self.location(Kind::Group, &g.id),
                            "display": g.attrs.get("displayName").cloned().unwrap_or(Value::Null),
                            "type": "direct",
                        })
                    })
                    .collect();
                self.render(kind, r, Some(&groups))
            }
            Kind::Group => self.render(kind, r, None),
        }
    }

    /// The whole state as JSON, for `/_sandbox/state`.
    pub(crate) fn dump(&self) -> Value {
        let memberships = self.memberships();
        json!({
            "Users": self.users.values().map(|r| Value::Object(self.render(Kind::User, r, memberships.get(r.id.as_str())))).collect::<Vec<_>>(),
            "Groups": self.groups.values().map(|r| Value::Object(self.render(Kind::Group, r, None))).collect::<Vec<_>>(),
        })
    }
}

fn attrs_of(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Routing.

pub(crate) fn handle(state: &Mutex<ScimState>, ctx: &Ctx<'_>) -> Response {
    let path = ctx.path();
    let mut s = lock(state);
    let kind = |name: &str| match name {
        "Users" => Some(Kind::User),
        "Groups" => Some(Kind::Group),
        _ => None,
    };
    let result = match (ctx.method, path.as_slice()) {
        (&Method::GET, ["ServiceProviderConfig"]) => {
            Ok(scim_json(StatusCode::OK, &service_provider_config(&s.base)))
        }
        (&Method::GET, ["ResourceTypes"]) => {
            let items: Vec<Value> = [Kind::User, Kind::Group]
                .iter()
                .map(|k| resource_type(&s.base, *k))
                .collect();
            Ok(scim_json(
                StatusCode::OK,
                &list_response(items.len(), 1, items),
            ))
        }
        (&Method::GET, ["ResourceTypes", name]) => match *name {
            "User" => Ok(scim_json(
                StatusCode::OK,
                &resource_type(&s.base, Kind::User),
            )),
            "Group" => Ok(scim_json(
                StatusCode::OK,
                &resource_type(&s.base, Kind::Group),
            )),
            other => Err(ScimError::not_found(format!(
                "Resource type {other} not found"
            ))),
        },
        (&Method::GET, ["Schemas"]) => {
            let items: Vec<Value> = schema::schema_resources()
                .iter()
                .map(|v| schema_resource(&s.base, v))
                .collect();
            Ok(scim_json(
                StatusCode::OK,
                &list_response(items.len(), 1, items),
            ))
        }
        (&Method::GET, ["Schemas", id]) => schema::schema_resources()
            .iter()
            .find(|v| v["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)))
            .map(|v| scim_json(StatusCode::OK, &schema_resource(&s.base, v)))
            .ok_or_else(|| ScimError::not_found(format!("Schema {id} not found"))),
        (&Method::GET, [endpoint]) if kind(endpoint).is_some() => {
            let params = ListParams::from_query(ctx);
            params.and_then(|p| list(&s, &[kind(endpoint).unwrap_or(Kind::User)], &p))
        }
        (&Method::POST, [endpoint, ".search"]) if kind(endpoint).is_some() => {
            let params = ListParams::from_search(ctx.body);
            params.and_then(|p| list(&s, &[kind(endpoint).unwrap_or(Kind::User)], &p))
        }
        (&Method::POST, [".search"]) => {
            ListParams::from_search(ctx.body).and_then(|p| list(&s, &[Kind::User, Kind::Group], &p))
        }
        (&Method::POST, [endpoint]) if kind(endpoint).is_some() => {
            create(&mut s, kind(endpoint).unwrap_or(Kind::User), ctx)
        }
        (&Method::GET, [endpoint, id]) if kind(endpoint).is_some() => {
            get(&s, kind(endpoint).unwrap_or(Kind::User), id, ctx)
        }
        (&Method::PUT, [endpoint, id]) if kind(endpoint).is_some() => {
            replace(&mut s, kind(endpoint).unwrap_or(Kind::User), id, ctx)
        }
        (&Method::PATCH, [endpoint, id]) if kind(endpoint).is_some() => {
            modify(&mut s, kind(endpoint).unwrap_or(Kind::User), id, ctx)
        }
        (&Method::DELETE, [endpoint, id]) if kind(endpoint).is_some() => {
            delete(&mut s, kind(endpoint).unwrap_or(Kind::User), id, ctx)
        }
        (_, ["ServiceProviderConfig" | "ResourceTypes" | "Schemas" | "Users" | "Groups", ..]) => {
            Err(ScimError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                format!("{} is not supported on /{}", ctx.method, path.join("/")),
            ))
        }
        _ => Err(ScimError::not_found(format!(
            "no SCIM endpoint at /{}",
            path.join("/")
        ))),
    };
    result.unwrap_or_else(|e| e.response())
}

fn scim_json<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    http::typed_json(status, SCIM_JSON, body)
}

fn list_response(total: usize, start: usize, items: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_RESULTS },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token (`--token`).",
            "specUri": "https://datatracker.ietf.org/doc/html/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

fn resource_type(base: &str, kind: Kind) -> Value {
    let extensions: Vec<Value> = kind
        .extensions()
        .iter()
        .map(|e| json!({ "schema": e, "required": false }))
        .collect();
    let mut v = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": kind.name(),
        "name": kind.name(),
        "endpoint": format!("/{}", kind.endpoint()),
        "description": match kind { Kind::User => "User Account", Kind::Group => "Group" },
        "schema": kind.core(),
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{base}/ResourceTypes/{}", kind.name()),
        },
    });
    if !extensions.is_empty() {
        v["schemaExtensions"] = Value::Array(extensions);
    }
    v
}

fn schema_resource(base: &str, schema: &Value) -> Value {
    let mut v = schema.clone();
    let id = v["id"].as_str().unwrap_or_default().to_owned();
    v["meta"] = json!({ "resourceType": "Schema", "location": format!("{base}/Schemas/{id}") });
    v
}

// ---------------------------------------------------------------------------------------------
// Queries.

struct ListParams {
    filter: Option<filter::Filter>,
    start: usize,
    count: usize,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

fn split_list(raw: Option<&str>) -> Vec<String> {
    raw.map(|r| {
        r.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn index_param(name: &str, raw: Option<&str>) -> Result<Option<i64>, ScimError> {
    match raw {
        None => Ok(None),
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ScimError::invalid_value(format!("`{name}` must be an integer"))),
    }
}

impl ListParams {
    fn new(
        filter: Option<&str>,
        start: Option<i64>,
        count: Option<i64>,
        attributes: Vec<String>,
        excluded: Vec<String>,
    ) -> Result<ListParams, ScimError> {
        let filter = match filter {
            Some(f) if !f.trim().is_empty() => Some(filter::parse(f)?),
            _ => None,
        };
        Ok(ListParams {
            filter,
            start: start.unwrap_or(1).max(1) as usize,
            count: (count.unwrap_or(DEFAULT_COUNT as i64).max(0) as usize).min(MAX_RESULTS),
            attributes,
            excluded,
        })
    }

    fn from_query(ctx: &Ctx<'_>) -> Result<ListParams, ScimError> {
        let q = &ctx.query;
        ListParams::new(
            q.get("filter"),
            index_param("startIndex", q.get("startIndex"))?,
            index_param("count", q.get("count"))?,
            split_list(q.get("attributes")),
            split_list(q.get("excludedAttributes")),
        )
    }

    fn from_search(body: &[u8]) -> Result<ListParams, ScimError> {
        let body: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
            ScimError::invalid_syntax(format!("the body is not a JSON object: {e}"))
        })?;
        let declared = body
            .get("schemas")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|v| v == SEARCH));
        if !declared {
            return Err(ScimError::invalid_syntax(format!(
                "`schemas` must contain `{SEARCH}`"
            )));
        }
        let names = |key: &str| -> Vec<String> {
            match body.get(key) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Some(Value::String(s)) => split_list(Some(s)),
                _ => Vec::new(),
            }
        };
        ListParams::new(
            body.get("filter").and_then(Value::as_str),
            body.get("startIndex").and_then(Value::as_i64),
            body.get("count").and_then(Value::as_i64),
            names("attributes"),
            names("excludedAttributes"),
        )
    }
}

/// A resource rendered for a response, with its kind.
type Rendered = (Kind, Map<String, Value>);

fn list(s: &ScimState, kinds: &[Kind], params: &ListParams) -> Result<Response, ScimError> {
    let memberships = if kinds.contains(&Kind::User) {
        s.memberships()
    } else {
        HashMap::new()
    };
    let render =
        |(kind, r): (Kind, &Resource)| (kind, s.render(kind, r, memberships.get(r.id.as_str())));
    let all = || {
        kinds
            .iter()
            .flat_map(|k| s.table(*k).values().map(move |r| (*k, r)))
    };
    let (total, page): (usize, Vec<Rendered>) = match &params.filter {
        None => (
            kinds.iter().map(|k| s.table(*k).len()).sum(),
            all()
                .skip(params.start - 1)
                .take(params.count)
                .map(render)
                .collect(),
        ),
        Some(f) => {
            let hits: Vec<Rendered> = all()
                .map(render)
                .filter(|(_, r)| filter::matches(f, r))
                .collect();
            let total = hits.len();
            (
                total,
                hits.into_iter()
                    .skip(params.start - 1)
                    .take(params.count)
                    .collect(),
            )
        }
    };
    let items = page
        .into_iter()
        .map(|(kind, r)| Value::Object(project(kind, r, &params.attributes, &params.excluded)))
        .collect();
    Ok(scim_json(
        StatusCode::OK,
        &list_response(total, params.start, items),
    ))
}

/// Applies `attributes` / `excludedAttributes` (RFC 7644 §3.9); `id` and `schemas` always stay.
fn project(
    kind: Kind,
    mut r: Map<String, Value>,
    attributes: &[String],
    excluded: &[String],
) -> Map<String, Value> {
    let split = |name: &str| -> (String, Option<String>) {
        let name = schema::strip_core(kind, name);
        if let Some(urn) = kind.extensions().iter().find(|e| {
            name.len() > e.len()
                && name[..e.len()].eq_ignore_ascii_case(e)
                && name.as_bytes()[e.len()] == b':'
        }) {
            return ((*urn).to_owned(), Some(name[urn.len() + 1..].to_owned()));
        }
        match name.split_once('.') {
            Some((a, b)) => (a.to_owned(), Some(b.to_owned())),
            None => (name.to_owned(), None),
        }
    };
    let always = |k: &str| k == "id" || k == "schemas";
    if !attributes.is_empty() {
        let wanted: Vec<(String, Option<String>)> = attributes.iter().map(|a| split(a)).collect();
        r.retain(|k, v| {
            if always(k) {
                return true;
            }
            let subs: Vec<&Option<String>> = wanted
                .iter()
                .filter(|(a, _)| a.eq_ignore_ascii_case(k))
                .map(|(_, s)| s)
                .collect();
            if subs.is_empty() {
                return false;
            }
            if subs.iter().all(|s| s.is_some()) {
                let keep = |o: &mut Map<String, Value>| {
                    o.retain(|sk, _| {
                        subs.iter()
                            .any(|s| s.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(sk)))
                    })
                };
                match v {
                    Value::Object(o) => keep(o),
                    Value::Array(items) => items
                        .iter_mut()
                        .filter_map(Value::as_object_mut)
                        .for_each(keep),
                    _ => {}
                }
            }
            true
        });
    }
    for (a, sub) in excluded.iter().map(|e| split(e)) {
        let Some(key) = r.keys().find(|k| k.eq_ignore_ascii_case(&a)).cloned() else {
            continue;
        };
        if always(&key) {
            continue;
        }
        match sub {
            None => {
                r.remove(&key);
            }
            Some(sub) => match r.get_mut(&key) {
                Some(Value::Object(o)) => o.retain(|k, _| !k.eq_ignore_ascii_case(&sub)),
                Some(Value::Array(items)) => items
                    .iter_mut()
                    .filter_map(Value::as_object_mut)
                    .for_each(|o| o.retain(|k, _| !k.eq_ignore_ascii_case(&sub))),
                _ => {}
            },
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Writes.

fn body_object(ctx: &Ctx<'_>) -> Result<Map<String, Value>, ScimError> {
    serde_json::from_slice(ctx.body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not a JSON object: {e}")))
}

fn one(s: &ScimState, kind: Kind, r: &Resource, status: StatusCode, ctx: &Ctx<'_>) -> Response {
    let rendered = s.render_one(kind, r);
    let attributes = split_list(ctx.query.get("attributes"));
    let excluded = split_list(ctx.query.get("excludedAttributes"));
    let body = project(kind, rendered, &attributes, &excluded);
    http::with_header(scim_json(status, &body), "etag", &r.etag())
}

/// Fails with 409 when `attrs.userName` belongs to a user other than `except`.
fn check_unique(
    s: &ScimState,
    kind: Kind,
    attrs: &Map<String, Value>,
    except: Option<&str>,
) -> Result<(), ScimError> {
    if kind != Kind::User {
        return Ok(());
    }
    let name = attrs
        .get("userName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match s.user_named(name) {
        Some(id) if Some(id.as_str()) != except => Err(ScimError::uniqueness(format!(
            "userName `{name}` is already taken"
        ))),
        _ => Ok(()),
    }
}

/// 412 when `If-Match` is given and matches neither `*` nor the current version.
fn check_if_match(r: &Resource, ctx: &Ctx<'_>) -> Result<(), ScimError> {
    let Some(wanted) = ctx.header("if-match") else {
        return Ok(());
    };
    let strip = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    };
    let current = strip(&r.etag());
    if wanted
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == current)
    {
        Ok(())
    } else {
        Err(ScimError::new(
            StatusCode::PRECONDITION_FAILED,
            None,
            format!(
                "resource version mismatch: the current version is {}",
                r.etag()
            ),
        ))
    }
}

fn create(s: &mut ScimState, kind: Kind, ctx: &Ctx<'_>) -> Result<Response, ScimError> {
    let body = body_object(ctx)?;
    let attrs = schema::validate(kind, &body)?;
    check_unique(s, kind, &attrs, None)?;
    let id = s.insert(kind, attrs, Utc::now());
    let location = s.location(kind, &id);
    let r = s
        .table(kind)
        .get(&id)
        .cloned()
        .ok_or_else(|| ScimError::not_found("vanished"))?;
    Ok(http::with_header(
        one(s, kind, &r, StatusCode::CREATED, ctx),
        "location",
        &location,
    ))
}

fn find(s: &ScimState, kind: Kind, id: &str) -> Result<Resource, ScimError> {
    s.table(kind)
        .get(id)
        .cloned()
        .ok_or_else(|| ScimError::not_found(format!("Resource {id} not found")))
}

fn get(s: &ScimState, kind: Kind, id: &str, ctx: &Ctx<'_>) -> Result<Response, ScimError> {
    let r = s
        .table(kind)
        .get(id)
        .ok_or_else(|| ScimError::not_found(format!("Resource {id} not found")))?;
    if let Some(tags) = ctx.header("if-none-match") {
        if tags
            .split(',')
            .any(|t| t.trim() == r.etag() || t.trim() == "*")
        {
            return Ok(http::with_header(
                http::empty(StatusCode::NOT_MODIFIED),
                "etag",
                &r.etag(),
            ));
        }
    }
    Ok(one(s, kind, r, StatusCode::OK, ctx))
}

/// Stores new attributes for an existing resource and answers 200 with it.
fn store(
    s: &mut ScimState,
    kind: Kind,
    mut r: Resource,
    attrs: Map<String, Value>,
    ctx: &Ctx<'_>,
) -> Response {
    if kind == Kind::User {
        if let Some(old) = r.attrs.get("userName").and_then(Value::as_str) {
            s.user_names.remove(&old.to_lowercase());
        }
        if let Some(new) = attrs.get("userName").and_then(Value::as_str) {
            s.user_names.insert(new.to_lowercase(), r.id.clone());
        }
    }
    r.attrs = attrs;
    r.modified = Utc::now();
    r.version = s.next_version();
    let response = one(s, kind, &r, StatusCode::OK, ctx);
    s.table_mut(kind).insert(r.id.clone(), r);
    response
}

fn replace(s: &mut ScimState, kind: Kind, id: &str, ctx: &Ctx<'_>) -> Result<Response, ScimError> {
    let r = find(s, kind, id)?;
    check_if_match(&r, ctx)?;
    let body = body_object(ctx)?;
    let attrs = schema::validate(kind, &body)?;
    check_unique(s, kind, &attrs, Some(id))?;
    Ok(store(s, kind, r, attrs, ctx))
}

fn modify(s: &mut ScimState, kind: Kind, id: &str, ctx: &Ctx<'_>) -> Result<Response, ScimError> {
    let r = find(s, kind, id)?;
    check_if_match(&r, ctx)?;
    let body: Value = serde_json::from_slice(ctx.body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not JSON: {e}")))?;
    let mut working = r.attrs.clone();
    patch::apply(kind, &mut working, &body)?;
    let attrs = schema::validate(kind, &working)?;
    check_unique(s, kind, &attrs, Some(id))?;
    Ok(store(s, kind, r, attrs, ctx))
}

fn delete(s: &mut ScimState, kind: Kind, id: &str, ctx: &Ctx<'_>) -> Result<Response, ScimError> {
    let r = find(s, kind, id)?;
    check_if_match(&r, ctx)?;
    s.table_mut(kind).remove(id);
    if kind == Kind::User {
        if let Some(name) = r.attrs.get("userName").and_then(Value::as_str) {
            s.user_names.remove(&name.to_lowercase());
        }
        for g in s.groups.values_mut() {
            if let Some(Value::Array(members)) = g.attrs.get_mut("members") {
                members.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
            }
        }
    }
    Ok(http::empty(StatusCode::NO_CONTENT))
}

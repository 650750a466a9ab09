//! The Webex People API fake: people (list, get, create, replace, delete), roles and licenses.
//!
//! Faithful quirks: `POST /people` answers 200 (not 201); `PUT` replaces the whole record and
//! needs `displayName`; every person holds the implicitly assigned "Messaging" license, so a PUT
//! that leaves it out answers 400, and so does an address without a dotted domain (as Calendly's
//! invite refuses it); lists page with an RFC 5988 `Link: <…>; rel="next"` header
//! pointing back at the sandbox; errors are `{"message","errors":[{"description"}],"trackingId"}`
//! with the same id in the `Trackingid` header. The token belongs to an administrator, so
//! `GET /people` without filters lists everyone.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::http::{self, Ctx};
use super::ids::{cursor, millis_time, parse_cursor, webex_id};
use super::lock;
use super::seed::{anchor, SeedPerson, SeedRole};
use super::store::Table;

/// The largest `max` a list honours; bigger values are clamped, as Webex does.
const MAX_PAGE: usize = 1000;
/// Fields a PUT or POST may set besides the ones modelled explicitly; they are kept verbatim.
const FREE_FIELDS: &[&str] = &[
    "phoneNumbers",
    "extension",
    "locationId",
    "avatar",
    "department",
    "manager",
    "managerId",
    "title",
    "addresses",
    "siteUrls",
];

#[derive(Debug, Clone, Serialize)]
pub(crate) struct NamedId {
    id: String,
    name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct License {
    id: String,
    name: String,
    /// Assigned to everyone automatically; a PUT may not drop it.
    implicit: bool,
    total_units: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Person {
    id: String,
    emails: Vec<String>,
    display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nick_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<String>,
    org_id: String,
    roles: Vec<String>,
    licenses: Vec<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
    #[serde(serialize_with = "ser_time")]
    created: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    last_modified: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_time"
    )]
    last_activity: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    invite_pending: bool,
    login_enabled: bool,
    #[serde(rename = "type")]
    kind: &'static str,
}

fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&millis_time(t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&millis_time(t)),
        None => s.serialize_none(),
    }
}

/// Everything the Webex fake knows.
pub(crate) struct WebexState {
    /// `http://IP:PORT/webex/v1`
    base: String,
    org_id: String,
    /// The token's person (an administrator), when anyone is seeded.
    me: Option<String>,
    people: Table<Person>,
    /// Lowercased email → person id.
    by_email: HashMap<String, String>,
    roles: Vec<NamedId>,
    licenses: Vec<License>,
    rng: fastrand::Rng,
}

impl WebexState {
    pub(crate) fn seeded(root: &str, people: &[SeedPerson], seed: u64) -> WebexState {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x00E8_E8E8);
        let org_id = webex_id(&mut rng, "ORGANIZATION");
        let roles = [
            "Full Administrator",
            "User Administrator",
            "Read-only Administrator",
            "Device Administrator",
        ]
        .into_iter()
        .map(|name| NamedId {
            id: webex_id(&mut rng, "ROLE"),
            name: name.into(),
        })
        .collect::<Vec<_>>();
        let licenses = [
            ("Messaging", true, 100_000),
            ("Meeting - Webex Enterprise Edition", false, 5_000),
            ("Webex Calling - Professional", false, 2_000),
        ]
        .into_iter()
        .map(|(name, implicit, total_units)| License {
            id: webex_id(&mut rng, "LICENSE"),
            name: name.into(),
            implicit,
            total_units,
        })
        .collect::<Vec<_>>();
        let mut state = WebexState {
            base: format!("{root}/webex/v1"),
            org_id,
            me: None,
            people: Table::default(),
            by_email: HashMap::new(),
            roles,
            licenses,
            rng,
        };
        let recent = anchor() - chrono::Duration::days(30);
        for p in people {
            let id = webex_id(&mut state.rng, "PEOPLE");
            let roles = match p.role {
                SeedRole::Owner => vec![state.roles[0].id.clone()],
                SeedRole::Admin => vec![state.roles[1].id.clone()],
                SeedRole::Member => Vec::new(),
            };
            let mut licenses = vec![state.licenses[0].id.clone()];
            if state.rng.f64() < 0.6 {
                licenses.push(state.licenses[1].id.clone());
            }
            if state.rng.f64() < 0.3 {
                licenses.push(state.licenses[2].id.clone());
            }
            let last_activity = p.activity.first().copied();
            let status = match last_activity {
                Some(t) if t >= recent => "active",
                Some(_) => "inactive",
                None => "unknown",
            };
            let mut extra = Map::new();
            extra.insert("department".into(), Value::String("Engineering".into()));
            let person = Person {
                id: id.clone(),
                emails: vec![p.email.clone()],
                display_name: p.name(),
                nick_name: Some(p.first.clone()),
                first_name: Some(p.first.clone()),
                last_name: Some(p.last.clone()),
                org_id: state.org_id.clone(),
                roles,
                licenses,
                extra,
                created: p.created,
                last_modified: p.created,
                timezone: Some(p.timezone.to_owned()),
                last_activity,
                status: Some(status),
                invite_pending: p.activity.is_empty(),
                login_enabled: true,
                kind: "person",
            };
            if p.role == SeedRole::Owner {
                state.me = Some(id.clone());
            }
            state
                .by_email
                .insert(p.email.to_ascii_lowercase(), id.clone());
            state.people.insert(id, person);
        }
        state
    }

    fn implicit_license_ids(&self) -> impl Iterator<Item = &str> {
        self.licenses
            .iter()
            .filter(|l| l.implicit)
            .map(|l| l.id.as_str())
    }

    /// The whole state as JSON, for `/_sandbox/state`.
    pub(crate) fn dump(&self) -> Value {
        json!({
            "orgId": self.org_id,
            "me": self.me,
            "people": self.people.values().collect::<Vec<_>>(),
            "roles": self.roles,
            "licenses": self.licenses.iter().map(|l| json!({
                "id": l.id, "name": l.name, "implicit": l.implicit,
            })).collect::<Vec<_>>(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors in Webex's shape.

fn error(ctx: &Ctx<'_>, status: StatusCode, message: &str) -> Response {
    http::json(
        status,
        &json!({
            "message": message,
            "errors": [{ "description": message }],
            "trackingId": ctx.tracking_id,
        }),
    )
}

fn not_found(ctx: &Ctx<'_>) -> Response {
    error(
        ctx,
        StatusCode::NOT_FOUND,
        "The requested resource could not be found.",
    )
}

pub(crate) fn unauthorized(ctx: &Ctx<'_>) -> Response {
    error(
        ctx,
        StatusCode::UNAUTHORIZED,
        "The request requires a valid access token set in the Authorization request header.",
    )
}

/// Webex's 403 (a token without the scope or role the endpoint needs).
pub(crate) fn forbidden(ctx: &Ctx<'_>) -> Response {
    error(
        ctx,
        StatusCode::FORBIDDEN,
        "The request is understood, but it has been refused or access is not allowed.",
    )
}

pub(crate) fn too_many_requests(ctx: &Ctx<'_>, retry_after: u64) -> Response {
    let response = error(
        ctx,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests have been sent in a given amount of time. Retry after the number of seconds in Retry-After.",
    );
    http::with_header(response, "retry-after", &retry_after.to_string())
}

pub(crate) fn unavailable(ctx: &Ctx<'_>) -> Response {
    error(
        ctx,
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable (injected by the sandbox).",
    )
}

// ---------------------------------------------------------------------------------------------
// Routing.

pub(crate) fn handle(state: &Mutex<WebexState>, ctx: &Ctx<'_>) -> Response {
    let path = ctx.path();
    let mut s = lock(state);
    match (ctx.method, path.as_slice()) {
        (&Method::GET, ["people"]) => list_people(&s, ctx),
        (&Method::POST, ["people"]) => create_person(&mut s, ctx),
        (&Method::GET, ["people", "me"]) => match s.me.as_deref().and_then(|id| s.people.get(id)) {
            Some(p) => http::json(StatusCode::OK, p),
            None => not_found(ctx),
        },
        (&Method::GET, ["people", id]) => match s.people.get(id) {
            Some(p) => http::json(StatusCode::OK, p),
            None => not_found(ctx),
        },
        (&Method::PUT, ["people", id]) => replace_person(&mut s, id, ctx),
        (&Method::DELETE, ["people", id]) => match s.people.remove(id) {
            Some(p) => {
                for email in &p.emails {
                    s.by_email.remove(&email.to_ascii_lowercase());
                }
                if s.me.as_deref() == Some(*id) {
                    s.me = None;
                }
                http::empty(StatusCode::NO_CONTENT)
            }
            None => not_found(ctx),
        },
        (&Method::GET, ["roles"]) => http::json(StatusCode::OK, &json!({ "items": s.roles })),
        (&Method::GET, ["roles", id]) => match s.roles.iter().find(|r| r.id == *id) {
            Some(r) => http::json(StatusCode::OK, r),
            None => not_found(ctx),
        },
        (&Method::GET, ["licenses"]) => {
            let items: Vec<Value> = s.licenses.iter().map(|l| license_json(&s, l)).collect();
            http::json(StatusCode::OK, &json!({ "items": items }))
        }
        (&Method::GET, ["licenses", id]) => match s.licenses.iter().find(|l| l.id == *id) {
            Some(l) => http::json(StatusCode::OK, &license_json(&s, l)),
            None => not_found(ctx),
        },
        (
            _,
            ["people"] | ["people", _] | ["roles"] | ["roles", _] | ["licenses"] | ["licenses", _],
        ) => error(
            ctx,
            StatusCode::METHOD_NOT_ALLOWED,
            "The requested method is not allowed on this resource.",
        ),
        _ => not_found(ctx),
    }
}

fn license_json(s: &WebexState, l: &License) -> Value {
    let consumed = s
        .people
        .values()
        .filter(|p| p.licenses.contains(&l.id))
        .count();
    json!({
        "id": l.id,
        "name": l.name,
        "totalUnits": l.total_units,
        "consumedUnits": consumed,
    })
}

fn list_people(s: &WebexState, ctx: &Ctx<'_>) -> Response {
    let max = match ctx.query.get("max") {
        None => 100,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(MAX_PAGE),
            _ => {
                return error(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    "Invalid value for max: must be a positive integer.",
                )
            }
        },
    };
    let from = match ctx.query.get("after") {
        None | Some("") => 0,
        Some(token) => match parse_cursor(token) {
            Some(n) => n,
            None => return error(ctx, StatusCode::BAD_REQUEST, "Invalid cursor in `after`."),
        },
    };
    let email = ctx.query.get("email");
    let display_name = ctx.query.get("displayName").map(str::to_lowercase);
    let ids: Option<Vec<&str>> = ctx.query.get("id").map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    });
    if ids.as_ref().is_some_and(|ids| ids.len() > 85) {
        return error(
            ctx,
            StatusCode::BAD_REQUEST,
            "Too many ids: at most 85 may be given.",
        );
    }
    let roles: Option<Vec<&str>> = ctx
        .query
        .get("roles")
        .map(|raw| raw.split(',').filter(|s| !s.is_empty()).collect());
    let page = s.people.page(from, max, |p| {
        email.is_none_or(|e| p.emails.iter().any(|pe| pe.eq_ignore_ascii_case(e)))
            && display_name
                .as_deref()
                .is_none_or(|d| p.display_name.to_lowercase().starts_with(d))
            && ids.as_ref().is_none_or(|ids| ids.contains(&p.id.as_str()))
            && roles
                .as_ref()
                .is_none_or(|roles| p.roles.iter().any(|r| roles.contains(&r.as_str())))
    });
    let mut body = Map::new();
    if ids.is_some() {
        // A list filtered by `id` never carries presence data.
        let items: Vec<Person> = page
            .rows
            .iter()
            .map(|p| Person {
                status: None,
                last_activity: None,
                ..(*p).clone()
            })
            .collect();
        body.insert("items".into(), json!(items));
        let not_found: Vec<&str> = ids
            .iter()
            .flatten()
            .copied()
            .filter(|id| !s.people.contains(id))
            .collect();
        body.insert("notFoundIds".into(), json!(not_found));
    } else {
        body.insert("items".into(), json!(page.rows));
    }
    let response = http::json(StatusCode::OK, &body);
    match page.next {
        None => response,
        Some(next) => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for name in ["email", "displayName", "id", "roles"] {
                if let Some(v) = ctx.query.get(name) {
                    q.append_pair(name, v);
                }
            }
            q.append_pair("max", &max.to_string());
            q.append_pair("after", &cursor(next));
            let link = format!("<{}/people?{}>; rel=\"next\"", s.base, q.finish());
            http::with_header(response, "link", &link)
        }
    }
}

/// A validated POST or PUT body.
struct PersonInput {
    emails: Option<Vec<String>>,
    display_name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    roles: Option<Vec<String>>,
    licenses: Option<Vec<String>>,
    login_enabled: Option<bool>,
    extra: Map<String, Value>,
}

fn string_list(value: &Value, field: &str) -> Result<Vec<String>, String> {
    value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| format!("`{field}` must be an array of strings."))
}

fn opt_string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{field}` must be a string.")),
    }
}

fn parse_input(s: &WebexState, raw: &[u8]) -> Result<PersonInput, String> {
    let body: Map<String, Value> = serde_json::from_slice(raw)
        .map_err(|e| format!("The request body is not a JSON object: {e}."))?;
    let emails = body
        .get("emails")
        .map(|v| string_list(v, "emails"))
        .transpose()?;
    let roles = body
        .get("roles")
        .map(|v| string_list(v, "roles"))
        .transpose()?;
    let licenses = body
        .get("licenses")
        .map(|v| string_list(v, "licenses"))
        .transpose()?;
    if let Some(bad) = roles
        .iter()
        .flatten()
        .find(|r| !s.roles.iter().any(|k| &k.id == *r))
    {
        return Err(format!("Invalid role id: {bad}"));
    }
    if let Some(bad) = licenses
        .iter()
        .flatten()
        .find(|l| !s.licenses.iter().any(|k| &k.id == *l))
    {
        return Err(format!("Invalid license id: {bad}"));
    }
    let login_enabled = match body.get("loginEnabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s == "true" => Some(true),
        Some(Value::String(s)) if s == "false" => Some(false),
        Some(_) => return Err("`loginEnabled` must be true or false.".into()),
    };
    let extra = FREE_FIELDS
        .iter()
        .filter_map(|f| {
            body.get(*f)
                .filter(|v| !v.is_null())
                .map(|v| ((*f).to_owned(), v.clone()))
        })
        .collect();
    Ok(PersonInput {
        emails,
        display_name: opt_string(&body, "displayName")?.filter(|d| !d.trim().is_empty()),
        first_name: opt_string(&body, "firstName")?,
        last_name: opt_string(&body, "lastName")?,
        roles,
        licenses,
        login_enabled,
        extra,
    })
}

/// The id of another person already using one of `emails`.
fn email_taken<'a>(
    s: &'a WebexState,
    emails: &[String],
    except: Option<&str>,
) -> Option<&'a String> {
    emails
        .iter()
        .filter_map(|e| s.by_email.get(&e.to_ascii_lowercase()))
        .find(|id| Some(id.as_str()) != except)
}

fn create_person(s: &mut WebexState, ctx: &Ctx<'_>) -> Response {
    let input = match parse_input(s, ctx.body) {
        Ok(i) => i,
        Err(message) => return error(ctx, StatusCode::BAD_REQUEST, &message),
    };
    let emails = match input.emails {
        Some(e) if !e.is_empty() && e.iter().all(|e| http::valid_email(e)) => e,
        _ => {
            return error(
                ctx,
                StatusCode::BAD_REQUEST,
                "`emails` is required and must hold a valid email address.",
            )
        }
    };
    let display_name = match (&input.display_name, &input.first_name, &input.last_name) {
        (Some(d), _, _) => d.clone(),
        (None, None, None) => {
            return error(
                ctx,
                StatusCode::BAD_REQUEST,
                "One of `displayName`, `firstName` or `lastName` is required.",
            )
        }
        (None, first, last) => [first.as_deref(), last.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
    };
    if email_taken(s, &emails, None).is_some() {
        return error(
            ctx,
            StatusCode::CONFLICT,
            "A person with this email address already exists.",
        );
    }
    let mut licenses: Vec<String> = s.implicit_license_ids().map(str::to_owned).collect();
    for l in input.licenses.unwrap_or_default() {
        if !licenses.contains(&l) {
            licenses.push(l);
        }
    }
    let id = webex_id(&mut s.rng, "PEOPLE");
    let now = Utc::now();
    let person = Person {
        id: id.clone(),
        emails: emails.clone(),
        display_name,
        nick_name: input.first_name.clone(),
        first_name: input.first_name,
        last_name: input.last_name,
        org_id: s.org_id.clone(),
        roles: input.roles.unwrap_or_default(),
        licenses,
        extra: input.extra,
        created: now,
        last_modified: now,
        timezone: None,
        last_activity: None,
        status: Some("unknown"),
        invite_pending: true,
        login_enabled: input.login_enabled.unwrap_or(true),
        kind: "person",
    };
    for email in &emails {
        s.by_email.insert(email.to_ascii_lowercase(), id.clone());
    }
    let response = http::json(StatusCode::OK, &person);
    s.people.insert(id, person);
    response
}

fn replace_person(s: &mut WebexState, id: &str, ctx: &Ctx<'_>) -> Response {
    let Some(current) = s.people.get(id).cloned() else {
        return not_found(ctx);
    };
    let input = match parse_input(s, ctx.body) {
        Ok(i) => i,
        Err(message) => return error(ctx, StatusCode::BAD_REQUEST, &message),
    };
    let Some(display_name) = input.display_name else {
        return error(ctx, StatusCode::BAD_REQUEST, "`displayName` is required.");
    };
    let emails = match input.emails {
        None => current.emails.clone(),
        Some(e) if !e.is_empty() && e.iter().all(|e| http::valid_email(e)) => e,
        Some(_) => {
            return error(
                ctx,
                StatusCode::BAD_REQUEST,
                "`emails` must hold a valid email address.",
            )
        }
    };
    let licenses = input.licenses.unwrap_or_default();
    let dropped: Vec<&str> = s
        .implicit_license_ids()
        .filter(|l| current.licenses.iter().any(|c| c == l) && !licenses.iter().any(|n| n == l))
        .collect();
    if !dropped.is_empty() {
        return error(
            ctx,
            StatusCode::BAD_REQUEST,
            &format!(
                "Implicitly assigned license(s) cannot be removed: {}. Include them in `licenses`.",
                dropped.join(", ")
            ),
        );
    }
    if email_taken(s, &emails, Some(id)).is_some() {
        return error(
            ctx,
            StatusCode::CONFLICT,
            "A person with this email address already exists.",
        );
    }
    for email in &current.emails {
        s.by_email.remove(&email.to_ascii_lowercase());
    }
    for email in &emails {
        s.by_email.insert(email.to_ascii_lowercase(), id.to_owned());
    }
    let person = Person {
        emails,
        display_name,
        nick_name: input.first_name.clone(),
        first_name: input.first_name,
        last_name: input.last_name,
        roles: input.roles.unwrap_or_default(),
        licenses,
        extra: input.extra,
        last_modified: Utc::now(),
        login_enabled: input.login_enabled.unwrap_or(current.login_enabled),
        ..current
    };
    let response = if ctx.query.get("minResponse") == Some("true") {
        http::empty(StatusCode::NO_CONTENT)
    } else {
        http::json(StatusCode::OK, &person)
    };
    s.people.insert(id.to_owned(), person);
    response
}

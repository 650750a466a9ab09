//! The Calendly API v2 fake: users, organization memberships, invitations and the activity log.
//!
//! Resources are identified by URIs built from the sandbox's own base URL
//! (`http://IP:PORT/calendly/users/AAAA…`), so `pagination.next_page` and the last segment of any
//! URI work against the sandbox. The token's user (`users/me`) is the *actor*: by default the
//! organization owner, switchable through `/_sandbox/calendly/actor` to test admin and user
//! permissions. Errors are Calendly's `{"title","message","details"?}`.

use std::sync::Mutex;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::http::{self, Ctx};
use super::ids::{calendly_time, calendly_uuid, cursor, parse_cursor};
use super::lock;
use super::seed::{SeedPerson, SeedRole};
use super::store::Table;

/// The Calendly subscription the sandbox pretends to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalendlyPlan {
    /// Activity log available.
    Enterprise,
    /// Activity log answers 403 "Please upgrade your Calendly account to Enterprise."
    Standard,
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Admin,
    Owner,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
}

impl InvitationStatus {
    fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Declined => "declined",
        }
    }

    fn parse(s: &str) -> Option<InvitationStatus> {
        match s {
            "pending" => Some(InvitationStatus::Pending),
            "accepted" => Some(InvitationStatus::Accepted),
            "declined" => Some(InvitationStatus::Declined),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    uuid: String,
    name: String,
    slug: String,
    email: String,
    timezone: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct Membership {
    uuid: String,
    user: String,
    role: Role,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct Invitation {
    uuid: String,
    email: String,
    status: InvitationStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_sent_at: Option<DateTime<Utc>>,
    user: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ActivityEntry {
    uuid: String,
    occurred_at: DateTime<Utc>,
    actor: String,
    action: &'static str,
}

/// Everything the Calendly fake knows.
pub(crate) struct CalendlyState {
    /// `http://IP:PORT/calendly`
    base: String,
    org: String,
    pub(crate) plan: CalendlyPlan,
    /// The user uuid the token acts as (`users/me`); `None` only before seeding an owner.
    actor: String,
    users: Table<User>,
    memberships: Table<Membership>,
    invitations: Table<Invitation>,
    /// Sorted by `occurred_at`, oldest first.
    activity: Vec<ActivityEntry>,
    rng: fastrand::Rng,
}

impl CalendlyState {
    /// Seeds the organization from `people`; with no people, an owner exists anyway (the token's
    /// user must answer `users/me`), in Calendly only.
    pub(crate) fn seeded(
        root: &str,
        people: &[SeedPerson],
        seed: u64,
        plan: CalendlyPlan,
    ) -> CalendlyState {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0xCA1E_0D1F);
        let org = calendly_uuid(&mut rng);
        let mut state = CalendlyState {
            base: format!("{root}/calendly"),
            org,
            plan,
            actor: String::new(),
            users: Table::default(),
            memberships: Table::default(),
            invitations: Table::default(),
            activity: Vec::new(),
            rng,
        };
        let fallback;
        let people = if people.is_empty() {
            let mut owner = super::seed::people(1, seed).remove(0);
            owner.first = "Sandbox".into();
            owner.last = "Owner".into();
            owner.email = format!("owner@{}", super::seed::DOMAIN);
            fallback = vec![owner];
            &fallback[..]
        } else {
            people
        };
        for person in people {
            let role = match person.role {
                SeedRole::Owner => Role::Owner,
                SeedRole::Admin => Role::Admin,
                SeedRole::Member => Role::User,
            };
            let user = state.add_member(&person.name(), &person.email, role, person.created);
            if role == Role::Owner {
                state.actor = user.clone();
            }
            for (i, at) in person.activity.iter().enumerate() {
                let uuid = calendly_uuid(&mut state.rng);
                state.activity.push(ActivityEntry {
                    uuid,
                    occurred_at: *at,
                    actor: user.clone(),
                    action: if i == 0 { "Login" } else { "Update" },
                });
            }
        }
        state.activity.sort_by_key(|e| e.occurred_at);
        state
    }

    /// Creates a user and their membership; returns the user uuid.
    fn add_member(&mut self, name: &str, email: &str, role: Role, at: DateTime<Utc>) -> String {
        let uuid = calendly_uuid(&mut self.rng);
        let slug = name.to_ascii_lowercase().replace(' ', "-");
        self.users.insert(
            uuid.clone(),
            User {
                uuid: uuid.clone(),
                name: name.to_owned(),
                slug,
                email: email.to_owned(),
                timezone: "America/New_York".into(),
                created_at: at,
                updated_at: at,
            },
        );
        let membership = calendly_uuid(&mut self.rng);
        self.memberships.insert(
            membership.clone(),
            Membership {
                uuid: membership,
                user: uuid.clone(),
                role,
                created_at: at,
                updated_at: at,
            },
        );
        uuid
    }

    pub(crate) fn organization_uri(&self) -> String {
        format!("{}/organizations/{}", self.base, self.org)
    }

    fn user_uri(&self, uuid: &str) -> String {
        format!("{}/users/{uuid}", self.base)
    }

    fn user_json(&self, user: &User, with_org: bool) -> Value {
        let mut v = json!({
            "uri": self.user_uri(&user.uuid),
            "name": user.name,
            "slug": user.slug,
            "email": user.email,
            "scheduling_url": format!("https://calendly.com/{}", user.slug),
            "timezone": user.timezone,
            "avatar_url": null,
            "created_at": calendly_time(&user.created_at),
            "updated_at": calendly_time(&user.updated_at),
        });
        if with_org {
            v["current_organization"] = Value::String(self.organization_uri());
            v["resource_type"] = Value::String("User".into());
            v["locale"] = Value::String("en".into());
        }
        v
    }

    fn membership_json(&self, m: &Membership) -> Value {
        let user = self
            .users
            .get(&m.user)
            .map(|u| self.user_json(u, false))
            .unwrap_or(Value::Null);
        json!({
            "uri": format!("{}/organization_memberships/{}", self.base, m.uuid),
            "role": m.role.as_str(),
            "user": user,
            "organization": self.organization_uri(),
            "updated_at": calendly_time(&m.updated_at),
            "created_at": calendly_time(&m.created_at),
        })
    }

    fn invitation_json(&self, i: &Invitation) -> Value {
        let mut v = json!({
            "uri": format!("{}/invitations/{}", self.organization_uri(), i.uuid),
            "organization": self.organization_uri(),
            "email": i.email,
            "status": i.status.as_str(),
            "created_at": calendly_time(&i.created_at),
            "updated_at": calendly_time(&i.updated_at),
            "last_sent_at": i.last_sent_at.as_ref().map(calendly_time),
        });
        if let Some(user) = &i.user {
            v["user"] = Value::String(self.user_uri(user));
        }
        v
    }

    fn member_of(&self, user: &str) -> Option<&Membership> {
        self.memberships.values().find(|m| m.user == user)
    }

    fn actor_role(&self) -> Option<Role> {
        self.member_of(&self.actor).map(|m| m.role)
    }

    fn is_member_email(&self, email: &str) -> bool {
        self.memberships.values().any(|m| {
            self.users
                .get(&m.user)
                .is_some_and(|u| u.email.eq_ignore_ascii_case(email))
        })
    }

    /// Accepts a pending invitation: creates the user and a `user` membership.
    pub(crate) fn accept_invitation(&mut self, uuid: &str) -> Result<Value, AcceptError> {
        let invitation = self.invitations.get(uuid).ok_or(AcceptError::NotFound)?;
        if invitation.status != InvitationStatus::Pending {
            return Err(AcceptError::NotPending);
        }
        let email = invitation.email.clone();
        let now = Utc::now();
        let local = email.split('@').next().unwrap_or(&email).replace('.', " ");
        let user = self.add_member(&local, &email, Role::User, now);
        if let Some(inv) = self.invitations.get_mut(uuid) {
            inv.status = InvitationStatus::Accepted;
            inv.updated_at = now;
            inv.user = Some(user.clone());
        }
        let membership = self.member_of(&user).cloned();
        Ok(membership
            .map(|m| json!({ "resource": self.membership_json(&m) }))
            .unwrap_or(Value::Null))
    }

    /// Makes the member with `email` the token's user.
    /// Logs a `Login` by the member with `email` now (the activity log role retrieval reads);
    /// `false` when no member has that email.
    pub(crate) fn record_activity(&mut self, email: &str) -> bool {
        let found = self
            .memberships
            .values()
            .filter_map(|m| self.users.get(&m.user))
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .map(|u| u.uuid.clone());
        let Some(actor) = found else {
            return false;
        };
        let uuid = calendly_uuid(&mut self.rng);
        self.activity.push(ActivityEntry {
            uuid,
            occurred_at: Utc::now(),
            actor,
            action: "Login",
        });
        self.activity.sort_by_key(|e| e.occurred_at);
        true
    }

    pub(crate) fn set_actor(&mut self, email: &str) -> bool {
        let found = self
            .memberships
            .values()
            .filter_map(|m| self.users.get(&m.user))
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .map(|u| u.uuid.clone());
        match found {
            Some(uuid) => {
                self.actor = uuid;
                true
            }
            None => false,
        }
    }

    /// The whole state as JSON, for `/_sandbox/state`.
    pub(crate) fn dump(&self) -> Value {
        json!({
            "organization": self.organization_uri(),
            "plan": self.plan,
            "actor": self.user_uri(&self.actor),
            "users": self.users.values().map(|u| self.user_json(u, true)).collect::<Vec<_>>(),
            "memberships": self.memberships.values().map(|m| self.membership_json(m)).collect::<Vec<_>>(),
            "invitations": self.invitations.values().map(|i| self.invitation_json(i)).collect::<Vec<_>>(),
            "activity_log_entries": self.activity.len(),
        })
    }
}

/// Why `/_sandbox/calendly/invitations/{uuid}/accept` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptError {
    NotFound,
    NotPending,
}

// ---------------------------------------------------------------------------------------------
// Errors in Calendly's shape.

fn error(status: StatusCode, title: &str, message: &str) -> Response {
    http::json(status, &json!({ "title": title, "message": message }))
}

fn invalid(parameter: &str, message: &str) -> Response {
    http::json(
        StatusCode::BAD_REQUEST,
        &json!({
            "title": "Invalid Argument",
            "message": "The supplied parameters are invalid.",
            "details": [{ "parameter": parameter, "message": message }],
        }),
    )
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Resource Not Found",
        "The server could not find the requested resource.",
    )
}

fn permission_denied(message: &str) -> Response {
    error(StatusCode::FORBIDDEN, "Permission Denied", message)
}

const NO_PERMISSION: &str = "You do not have permission to perform this action";

pub(crate) fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Unauthenticated",
        "The access token is invalid",
    )
}

/// A 403 for an OAuth token without the scope the endpoint needs.
pub(crate) fn missing_scope(scope: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "Permission Denied",
        &format!(
            "This action requires the `{scope}` scope, which the access token was not granted."
        ),
    )
}

pub(crate) fn too_many_requests() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        "You have exceeded the rate limit. Wait for X-RateLimit-Reset seconds before retrying.",
    )
}

pub(crate) fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable",
        "The service is temporarily unavailable (injected by the sandbox).",
    )
}

// ---------------------------------------------------------------------------------------------
// Routing.

pub(crate) fn handle(state: &Mutex<CalendlyState>, ctx: &Ctx<'_>) -> Response {
    let path = ctx.path();
    let mut s = lock(state);
    match (ctx.method, path.as_slice()) {
        (&Method::GET, ["users", "me"]) => {
            let actor = s.actor.clone();
            get_user(&s, &actor)
        }
        (&Method::GET, ["users", uuid]) => get_user(&s, uuid),
        (&Method::GET, ["organization_memberships"]) => list_memberships(&s, ctx),
        (&Method::GET, ["organization_memberships", uuid]) => match s.memberships.get(uuid) {
            Some(m) => http::json(StatusCode::OK, &json!({ "resource": s.membership_json(m) })),
            None => not_found(),
        },
        (&Method::DELETE, ["organization_memberships", uuid]) => remove_membership(&mut s, uuid),
        (&Method::GET, ["organizations", org]) if *org == s.org => http::json(
            StatusCode::OK,
            &json!({ "resource": {
                "uri": s.organization_uri(),
                "name": "Sandbox Organization",
                "plan": match s.plan { CalendlyPlan::Enterprise => "enterprise", CalendlyPlan::Standard => "standard" },
                "stage": "paid",
            }}),
        ),
        (&Method::POST, ["organizations", org, "invitations"]) => invite(&mut s, org, ctx),
        (&Method::GET, ["organizations", org, "invitations"]) => list_invitations(&s, org, ctx),
        (&Method::GET, ["organizations", org, "invitations", uuid]) if *org == s.org => {
            match s.invitations.get(uuid) {
                Some(i) => http::json(StatusCode::OK, &json!({ "resource": s.invitation_json(i) })),
                None => not_found(),
            }
        }
        (&Method::DELETE, ["organizations", org, "invitations", uuid]) => revoke(&mut s, org, uuid),
        (&Method::GET, ["activity_log_entries"]) => activity_log(&s, ctx),
        _ => not_found(),
    }
}

fn get_user(s: &CalendlyState, uuid: &str) -> Response {
    match s.users.get(uuid) {
        Some(u) => http::json(StatusCode::OK, &json!({ "resource": s.user_json(u, true) })),
        None => not_found(),
    }
}

/// The last path segment of a URI (Calendly ids are URIs; filters accept either).
fn last_segment(uri: &str) -> &str {
    uri.trim_end_matches('/').rsplit('/').next().unwrap_or(uri)
}

/// A query parameter Calendly would reject with 400 "Invalid Argument".
#[derive(Debug)]
struct BadParam {
    parameter: &'static str,
    message: String,
}

impl BadParam {
    fn new(parameter: &'static str, message: impl Into<String>) -> BadParam {
        BadParam {
            parameter,
            message: message.into(),
        }
    }

    fn response(&self) -> Response {
        invalid(self.parameter, &self.message)
    }
}

/// Parses `count` (default 20) within `1..=max`.
fn count(ctx: &Ctx<'_>, max: usize) -> Result<usize, BadParam> {
    match ctx.query.get("count") {
        None => Ok(20),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(BadParam::new(
                "count",
                format!("must be an integer between 1 and {max}"),
            )),
        },
    }
}

fn page_start(ctx: &Ctx<'_>) -> Result<u64, BadParam> {
    match ctx.query.get("page_token") {
        None | Some("") => Ok(0),
        Some(token) => parse_cursor(token).ok_or_else(|| BadParam::new("page_token", "is invalid")),
    }
}

/// Calendly's pagination object; `keep` are the query pairs to repeat in `next_page`.
fn pagination(
    base: &str,
    path: &str,
    keep: &[(&str, &str)],
    count: usize,
    next: Option<String>,
) -> Value {
    let next_page = next.as_ref().map(|token| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in keep {
            q.append_pair(k, v);
        }
        q.append_pair("count", &count.to_string());
        q.append_pair("page_token", token);
        format!("{base}/{path}?{}", q.finish())
    });
    json!({
        "count": count,
        "next_page": next_page,
        "previous_page": null,
        "next_page_token": next,
        "previous_page_token": null,
    })
}

fn list_memberships(s: &CalendlyState, ctx: &Ctx<'_>) -> Response {
    let organization = ctx.query.get("organization");
    let user = ctx.query.get("user");
    if organization.is_none() && user.is_none() {
        return invalid(
            "organization",
            "one of `organization` or `user` must be given",
        );
    }
    if let Some(org) = organization {
        if last_segment(org) != s.org {
            return permission_denied("You do not have permission to access this organization");
        }
    }
    let count = match count(ctx, 100) {
        Ok(n) => n,
        Err(e) => return e.response(),
    };
    let from = match page_start(ctx) {
        Ok(n) => n,
        Err(e) => return e.response(),
    };
    let email = ctx.query.get("email");
    let role = ctx.query.get("role");
    let user_uuid = user.map(last_segment);
    let page = s.memberships.page(from, count, |m| {
        user_uuid.is_none_or(|u| m.user == u)
            && role.is_none_or(|r| m.role.as_str() == r)
            && email.is_none_or(|e| {
                s.users
                    .get(&m.user)
                    .is_some_and(|u| u.email.eq_ignore_ascii_case(e))
            })
    });
    let collection: Vec<Value> = page.rows.iter().map(|m| s.membership_json(m)).collect();
    let keep: Vec<(&str, &str)> = [
        ("organization", organization),
        ("user", user),
        ("email", email),
        ("role", role),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let pagination = pagination(
        &s.base,
        "organization_memberships",
        &keep,
        count,
        page.next.map(cursor),
    );
    http::json(
        StatusCode::OK,
        &json!({ "collection": collection, "pagination": pagination }),
    )
}

fn remove_membership(s: &mut CalendlyState, uuid: &str) -> Response {
    let Some(target) = s.memberships.get(uuid).cloned() else {
        return not_found();
    };
    match s.actor_role() {
        Some(Role::Admin | Role::Owner) => {}
        Some(Role::User) | None => return permission_denied(NO_PERMISSION),
    }
    if target.user == s.actor {
        return permission_denied("You can not remove yourself from organization");
    }
    if target.role == Role::Owner {
        return permission_denied("You can not change owner role");
    }
    s.memberships.remove(uuid);
    http::empty(StatusCode::NO_CONTENT)
}

fn invite(s: &mut CalendlyState, org: &str, ctx: &Ctx<'_>) -> Response {
    if org != s.org {
        return permission_denied("You cannot modify members from another organization");
    }
    if s.actor_role().is_none_or(|r| r == Role::User) {
        return permission_denied(NO_PERMISSION);
    }
    let body: Value = match serde_json::from_slice(ctx.body) {
        Ok(v) => v,
        Err(_) => return invalid("email", "must be filled"),
    };
    let email = body
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    if email.is_empty() {
        return invalid("email", "must be filled");
    }
    if !http::valid_email(email) {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid Email",
            "The email address is invalid.",
        );
    }
    if s.is_member_email(email) {
        return error(
            StatusCode::BAD_REQUEST,
            "Already Organization Member",
            "This user is already a member of your organization.",
        );
    }
    let pending = s
        .invitations
        .values()
        .any(|i| i.status == InvitationStatus::Pending && i.email.eq_ignore_ascii_case(email));
    if pending {
        return error(
            StatusCode::BAD_REQUEST,
            "Already Invited",
            "This user has already been invited to your organization.",
        );
    }
    let uuid = calendly_uuid(&mut s.rng);
    let now = Utc::now();
    let invitation = Invitation {
        uuid: uuid.clone(),
        email: email.to_owned(),
        status: InvitationStatus::Pending,
        created_at: now,
        updated_at: now,
        last_sent_at: Some(now),
        user: None,
    };
    let body = json!({ "resource": s.invitation_json(&invitation) });
    s.invitations.insert(uuid, invitation);
    http::json(StatusCode::CREATED, &body)
}

fn list_invitations(s: &CalendlyState, org: &str, ctx: &Ctx<'_>) -> Response {
    if org != s.org {
        return permission_denied("You do not have permission to access this organization");
    }
    let count = match count(ctx, 100) {
        Ok(n) => n,
        Err(e) => return e.response(),
    };
    let status = match ctx.query.get("status") {
        None => None,
        Some(raw) => match InvitationStatus::parse(raw) {
            Some(st) => Some(st),
            None => return invalid("status", "must be one of pending, accepted, declined"),
        },
    };
    let descending = match ctx.query.get("sort") {
        None | Some("created_at:asc") => false,
        Some("created_at:desc") => true,
        Some(_) => return invalid("sort", "must be created_at:asc or created_at:desc"),
    };
    let email = ctx.query.get("email");
    let matching: Vec<&Invitation> = {
        let keep = |i: &&Invitation| {
            status.is_none_or(|st| i.status == st)
                && email.is_none_or(|e| i.email.eq_ignore_ascii_case(e))
        };
        if descending {
            s.invitations.values().rev().filter(keep).collect()
        } else {
            s.invitations.values().filter(keep).collect()
        }
    };
    let from = match page_start(ctx) {
        Ok(n) => n as usize,
        Err(e) => return e.response(),
    };
    let page: Vec<Value> = matching
        .iter()
        .skip(from)
        .take(count)
        .map(|i| s.invitation_json(i))
        .collect();
    let next = (from + count < matching.len()).then(|| cursor((from + count) as u64));
    let keep: Vec<(&str, &str)> = [
        ("status", ctx.query.get("status")),
        ("email", email),
        ("sort", ctx.query.get("sort")),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let path = format!("organizations/{}/invitations", s.org);
    let pagination = pagination(&s.base, &path, &keep, count, next);
    http::json(
        StatusCode::OK,
        &json!({ "collection": page, "pagination": pagination }),
    )
}

fn revoke(s: &mut CalendlyState, org: &str, uuid: &str) -> Response {
    if org != s.org {
        return permission_denied("You cannot modify members from another organization");
    }
    if s.actor_role().is_none_or(|r| r == Role::User) {
        return permission_denied(NO_PERMISSION);
    }
    match s.invitations.get(uuid).map(|i| i.status) {
        None => not_found(),
        Some(InvitationStatus::Accepted) => error(
            StatusCode::BAD_REQUEST,
            "Invitation Already Accepted",
            "This invitation has already been accepted and cannot be revoked.",
        ),
        Some(InvitationStatus::Pending | InvitationStatus::Declined) => {
            s.invitations.remove(uuid);
            http::empty(StatusCode::NO_CONTENT)
        }
    }
}

fn parse_time(ctx: &Ctx<'_>, name: &'static str) -> Result<Option<DateTime<Utc>>, BadParam> {
    match ctx.query.get(name) {
        None => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| BadParam::new(name, "must be a UTC date-time (RFC 3339)")),
    }
}

fn activity_log(s: &CalendlyState, ctx: &Ctx<'_>) -> Response {
    let Some(org) = ctx.query.get("organization") else {
        return invalid("organization", "is missing");
    };
    if last_segment(org) != s.org {
        return permission_denied("You do not have permission to access this organization");
    }
    if s.plan == CalendlyPlan::Standard {
        return permission_denied("Please upgrade your Calendly account to Enterprise.");
    }
    if s.actor_role().is_none_or(|r| r == Role::User) {
        return permission_denied(NO_PERMISSION);
    }
    let count = match count(ctx, 1000) {
        Ok(n) => n,
        Err(e) => return e.response(),
    };
    let descending = match ctx.query.get("sort") {
        None | Some("occurred_at:desc") => true,
        Some("occurred_at:asc") => false,
        Some(_) => return invalid("sort", "must be occurred_at:asc or occurred_at:desc"),
    };
    let (min, max) = match (
        parse_time(ctx, "min_occurred_at"),
        parse_time(ctx, "max_occurred_at"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e.response(),
    };
    let actors: Vec<&str> = ctx
        .query
        .all("actor")
        .chain(ctx.query.all("actor[]"))
        .flat_map(|v| v.split(','))
        .filter(|v| !v.is_empty())
        .map(last_segment)
        .collect();
    let keep = |e: &&ActivityEntry| {
        (actors.is_empty() || actors.contains(&e.actor.as_str()))
            && min.is_none_or(|t| e.occurred_at >= t)
            && max.is_none_or(|t| e.occurred_at <= t)
    };
    let matching: Vec<&ActivityEntry> = if descending {
        s.activity.iter().rev().filter(keep).collect()
    } else {
        s.activity.iter().filter(keep).collect()
    };
    let from = match page_start(ctx) {
        Ok(n) => n as usize,
        Err(e) => return e.response(),
    };
    let collection: Vec<Value> = matching
        .iter()
        .skip(from)
        .take(count)
        .map(|e| activity_json(s, e))
        .collect();
    let next = (from + count < matching.len()).then(|| cursor((from + count) as u64));
    let mut keep_pairs: Vec<(&str, &str)> = vec![("organization", org)];
    let actor_param = ctx.query.get("actor");
    for (k, v) in [
        ("actor", actor_param),
        ("sort", ctx.query.get("sort")),
        ("min_occurred_at", ctx.query.get("min_occurred_at")),
        ("max_occurred_at", ctx.query.get("max_occurred_at")),
    ] {
        if let Some(v) = v {
            keep_pairs.push((k, v));
        }
    }
    let last_event_time = matching
        .iter()
        .map(|e| e.occurred_at)
        .max()
        .map(|t| calendly_time(&t));
    http::json(
        StatusCode::OK,
        &json!({
            "collection": collection,
            "pagination": pagination(&s.base, "activity_log_entries", &keep_pairs, count, next),
            "last_event_time": last_event_time,
            "total_count": matching.len(),
            "exceeds_max_total_count": false,
        }),
    )
}

fn activity_json(s: &CalendlyState, e: &ActivityEntry) -> Value {
    let user = s.users.get(&e.actor);
    let role = s
        .member_of(&e.actor)
        .map(|m| m.role.as_str())
        .unwrap_or("user");
    json!({
        "occurred_at": calendly_time(&e.occurred_at),
        "uri": format!("{}/activity_log_entries/{}", s.base, e.uuid),
        "namespace": "User",
        "action": e.action,
        "actor": {
            "uri": s.user_uri(&e.actor),
            "type": "User",
            "organization": { "uri": s.organization_uri(), "role": role },
            "display_name": user.map(|u| u.name.as_str()),
            "alternative_identifier": user.map(|u| u.email.as_str()),
        },
        "fully_qualified_name": format!("User.{}", e.action),
        "details": {},
        "organization": s.organization_uri(),
    })
}

//! The People pages: the `people` and `saas_users` collections as list views (search, column
//! sorting; Oomnitza's list views), and a person's page: their records, their runs across
//! workflows (the history's subject index) and their trigger trace ("why did or didn't it run",
//! what `blockyard triggers why` prints).
//!
//! The list's data side is [`list_view`], a plain function over the records, so sorting, search
//! and idle days are unit-tested without a server. Idle days count as `days_idle(record)` does
//! in rules (since `last_activity`, else `created_at`), as of [`crate::as_of::now`].
//!
//! Element ids the browser test and the page's CSS use: `#people-search` (the form, fields `q`,
//! `collection`, `sort`, `dir`), `#people-table` / `#saas-users-table`, a row
//! `tr.record[data-key=KEY]`, a header link `a.sort[data-sort=COLUMN]`; on a person's page
//! `#person-record`, `#person-accounts`, `#person-runs` (rows `tr.run[data-run=ID]`),
//! `#person-trace` (entries `li.trace-entry`), `#person-not-considered`.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{render, when, Console, Ctx, Layout, Page, PageError};
use crate::records::{Collection, Fields, RecordKey, Subject};
use crate::store::api::{ReadHistory, ReadRecords, TriggerTraces};
use crate::store::history::{RunFilter, RunRecord};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/people", get(list))
        .route("/people/{email}", get(person))
}

/// A field as text: strings as they are, numbers and booleans printed, anything else empty.
pub(super) fn text(fields: &Fields, name: &str) -> String {
    match fields.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        _ => String::new(),
    }
}

/// `text` as one URL path segment (`/people/{segment}`).
pub(super) fn segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'@')
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'+');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// A person's page.
pub fn person_href(email: &str) -> String {
    format!("/people/{}", segment(email))
}

/// Days without activity at `now`: since `last_activity`, or since `created_at` for a user never
/// active (the first of the two that is set); `None` when it is not a date.
pub(super) fn idle_days(fields: &Fields, now: DateTime<Utc>) -> Option<i64> {
    let date = ["last_activity", "created_at"]
        .iter()
        .map(|f| text(fields, f))
        .find(|t| !t.is_empty())?;
    crate::rules::parse_instant(&date).map(|at| (now - at).num_days())
}

/// Which list the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    People,
    SaasUsers,
}

impl Which {
    fn parse(name: &str) -> Result<Which, PageError> {
        match name {
            "people" => Ok(Which::People),
            "saas_users" => Ok(Which::SaasUsers),
            other => Err(PageError::bad_request(format!(
                "no collection `{other}`; the people page lists `people` or `saas_users`"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Which::People => "people",
            Which::SaasUsers => "saas_users",
        }
    }

    /// The columns it sorts by, in the order shown.
    pub fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Which::People => &[
                ("email", "Email"),
                ("name", "Name"),
                ("status", "Status"),
                ("department", "Department"),
                ("idle_days", "Idle days"),
            ],
            Which::SaasUsers => &[
                ("email", "Email"),
                ("app", "App"),
                ("role", "Role"),
                ("status", "Status"),
                ("last_activity", "Last activity"),
                ("idle_days", "Idle days"),
            ],
        }
    }
}

/// One vendor account of a person: the `saas_users` record's app, role, status, last activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub app: String,
    pub role: String,
    pub status: String,
    pub last_activity: String,
}

/// A row of either list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: String,
    pub email: String,
    pub name: String,
    pub status: String,
    pub department: String,
    pub app: String,
    pub role: String,
    pub last_activity: String,
    /// A person's: their fewest idle days over their accounts (their latest activity anywhere).
    pub idle_days: Option<i64>,
    /// A person's vendor accounts (empty on a SaaS user's row).
    pub accounts: Vec<Account>,
}

impl Row {
    fn sort_key(&self, column: &str) -> SortKey<'_> {
        match column {
            "name" => SortKey::Text(&self.name),
            "status" => SortKey::Text(&self.status),
            "department" => SortKey::Text(&self.department),
            "app" => SortKey::Text(&self.app),
            "role" => SortKey::Text(&self.role),
            "last_activity" => SortKey::Text(&self.last_activity),
            "idle_days" => SortKey::Number(self.idle_days),
            _ => SortKey::Text(&self.email),
        }
    }

    /// Whether the search `q` (lowercased) is in one of the row's texts.
    fn matches(&self, q: &str) -> bool {
        [
            &self.key,
            &self.email,
            &self.name,
            &self.status,
            &self.department,
            &self.app,
            &self.role,
        ]
        .iter()
        .any(|t| t.to_lowercase().contains(q))
            || self
                .accounts
                .iter()
                .any(|a| a.app.to_lowercase().contains(q) || a.role.to_lowercase().contains(q))
    }

    /// The person's page.
    pub fn href(&self) -> String {
        person_href(&self.email)
    }

    /// The idle days as shown: a number, or `—` when unknown.
    pub fn idle(&self) -> String {
        self.idle_days.map_or("—".to_owned(), |d| d.to_string())
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'a> {
    Text(&'a str),
    /// Unknown (`None`) sorts before every number.
    Number(Option<i64>),
}

/// The list view asked for: which collection, search, sort column and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub which: Which,
    pub q: String,
    pub sort: &'static str,
    pub desc: bool,
}

impl ListQuery {
    /// Reads the page's query; every parameter is checked (a wrong one is an error, not ignored).
    pub fn parse(params: &HashMap<String, String>) -> Result<ListQuery, PageError> {
        let mut names: Vec<&String> = params.keys().collect();
        names.sort();
        if let Some(unknown) = names
            .into_iter()
            .find(|n| !["collection", "q", "sort", "dir"].contains(&n.as_str()))
        {
            return Err(PageError::bad_request(format!(
                "unknown query parameter `{unknown}`; the people page takes `collection`, `q`, `sort` and `dir`"
            )));
        }
        let which = match params.get("collection").map(String::as_str) {
            None | Some("") => Which::People,
            Some(name) => Which::parse(name)?,
        };
        let sort = match params.get("sort").map(String::as_str) {
            None | Some("") => "email",
            Some(name) => which
                .columns()
                .iter()
                .find(|(c, _)| *c == name)
                .map(|(c, _)| *c)
                .ok_or_else(|| {
                    let names: Vec<&str> = which.columns().iter().map(|(c, _)| *c).collect();
                    PageError::bad_request(format!(
                        "cannot sort `{}` by `{name}`; sort by one of: {}",
                        which.name(),
                        names.join(", ")
                    ))
                })?,
        };
        let desc = match params.get("dir").map(String::as_str) {
            None | Some("") | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(PageError::bad_request(format!(
                    "no sort direction `{other}`; use `asc` or `desc`"
                )))
            }
        };
        Ok(ListQuery {
            which,
            q: params
                .get("q")
                .map(|q| q.trim().to_owned())
                .unwrap_or_default(),
            sort,
            desc,
        })
    }

    /// The link of a column header: this column ascending, or the other way when it is the
    /// current one.
    pub fn sort_link(&self, column: &str) -> String {
        let dir = if self.sort == column && !self.desc {
            "desc"
        } else {
            "asc"
        };
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("collection", self.which.name());
        if !self.q.is_empty() {
            query.append_pair("q", &self.q);
        }
        query.append_pair("sort", column);
        query.append_pair("dir", dir);
        format!("/people?{}", query.finish())
    }

    /// The arrow after the current sort column's header.
    pub fn arrow(&self, column: &str) -> &'static str {
        match (self.sort == column, self.desc) {
            (false, _) => "",
            (true, false) => " ▲",
            (true, true) => " ▼",
        }
    }

    /// The `aria-sort` of a column header.
    pub fn aria_sort(&self, column: &str) -> &'static str {
        match (self.sort == column, self.desc) {
            (false, _) => "none",
            (true, false) => "ascending",
            (true, true) => "descending",
        }
    }
}

/// The rows of `query.which`, searched and sorted, from every `people` and `saas_users` record
/// (a person's row shows their accounts), with idle days as of `now`.
pub fn list_view(
    people: &[(RecordKey, Fields)],
    saas_users: &[(RecordKey, Fields)],
    query: &ListQuery,
    now: DateTime<Utc>,
) -> Vec<Row> {
    let account_row = |key: &RecordKey, fields: &Fields| Row {
        key: key.to_string(),
        email: {
            let email = text(fields, "email");
            if email.is_empty() {
                key.email().to_owned()
            } else {
                email
            }
        },
        name: text(fields, "name"),
        status: text(fields, "status"),
        department: text(fields, "department"),
        app: text(fields, "app"),
        role: text(fields, "role"),
        last_activity: text(fields, "last_activity"),
        idle_days: idle_days(fields, now),
        accounts: Vec::new(),
    };
    let mut rows: Vec<Row> = match query.which {
        Which::SaasUsers => saas_users
            .iter()
            .map(|(key, fields)| account_row(key, fields))
            .collect(),
        Which::People => {
            let mut accounts: HashMap<&str, Vec<&(RecordKey, Fields)>> = HashMap::new();
            for user in saas_users {
                accounts.entry(user.0.email()).or_default().push(user);
            }
            people
                .iter()
                .map(|(key, fields)| {
                    let mut row = account_row(key, fields);
                    row.app.clear();
                    row.role.clear();
                    row.last_activity.clear();
                    let theirs = accounts.get(key.email()).map_or(&[][..], Vec::as_slice);
                    row.idle_days = theirs.iter().filter_map(|(_, f)| idle_days(f, now)).min();
                    row.accounts = theirs
                        .iter()
                        .map(|(_, f)| Account {
                            app: text(f, "app"),
                            role: text(f, "role"),
                            status: text(f, "status"),
                            last_activity: text(f, "last_activity"),
                        })
                        .collect();
                    row
                })
                .collect()
        }
    };
    if !query.q.is_empty() {
        let q = query.q.to_lowercase();
        rows.retain(|row| row.matches(&q));
    }
    // Stable: rows with equal keys stay in key order (the store's).
    rows.sort_by(|a, b| {
        let order = a.sort_key(query.sort).cmp(&b.sort_key(query.sort));
        if query.desc {
            order.reverse()
        } else {
            order
        }
    });
    rows
}

#[derive(Template)]
#[template(path = "people.html")]
struct ListPage {
    layout: Layout,
    query: ListQuery,
    rows: Vec<Row>,
    total: usize,
}

async fn list(ctx: Ctx, Query(params): Query<HashMap<String, String>>) -> Page {
    let query = ListQuery::parse(&params)?;
    let records = ctx.shared.records();
    let people = ReadRecords::list(records, Collection::People).await?;
    let saas_users = ReadRecords::list(records, Collection::SaasUsers).await?;
    let total = match query.which {
        Which::People => people.len(),
        Which::SaasUsers => saas_users.len(),
    };
    let rows = list_view(&people, &saas_users, &query, crate::as_of::now());
    render(&ListPage {
        layout: ctx.layout("People", "/people"),
        query,
        rows,
        total,
    })
}

/// A run as the person's timeline and the workflows page list it.
#[derive(Debug, Clone)]
pub struct RunLine {
    pub id: String,
    pub workflow: String,
    pub status: &'static str,
    pub trigger: String,
    pub created: String,
    pub duration: String,
    pub error: String,
}

impl RunLine {
    /// The run's workflow's page.
    pub fn workflow_href(&self) -> String {
        format!("/workflows/{}", segment(&self.workflow))
    }

    pub fn of(run: &RunRecord) -> RunLine {
        RunLine {
            id: run.id.to_string(),
            workflow: run.workflow.clone(),
            status: run.status.name(),
            trigger: run.trigger.to_string(),
            created: when(&run.created_at),
            duration: match (run.started_at, run.finished_at) {
                (Some(start), Some(end)) => super::duration(end - start),
                _ => String::new(),
            },
            error: run.error.clone().unwrap_or_default(),
        }
    }
}

/// One record of the person, its fields as `name: value` lines.
#[derive(Debug, Clone)]
pub struct RecordView {
    pub subject: String,
    pub fields: Vec<(String, String)>,
}

impl RecordView {
    fn of(subject: &Subject, fields: &Fields) -> RecordView {
        RecordView {
            subject: subject.to_string(),
            fields: fields
                .iter()
                .map(|(k, v)| {
                    let shown = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), shown)
                })
                .collect(),
        }
    }
}

/// One trigger trace entry: when, which record, what happened, and each workflow's verdict.
#[derive(Debug, Clone)]
pub struct TraceView {
    pub at: String,
    pub subject: String,
    pub cause: String,
    pub note: String,
    /// (workflow, fired, outcome line, the checks as `triggers why` prints them)
    pub considered: Vec<(String, bool, String, String)>,
}

#[derive(Template)]
#[template(path = "person.html")]
struct PersonPage {
    layout: Layout,
    email: String,
    records: Vec<RecordView>,
    runs: Vec<RunLine>,
    trace: Vec<TraceView>,
    /// (workflow, its page)
    not_considered: Vec<(String, String)>,
}

/// How many of a person's runs the page lists.
const PERSON_RUNS: usize = 50;

async fn person(ctx: Ctx, Path(email): Path<String>) -> Page {
    let email = email.trim().to_lowercase();
    let records = ctx.shared.records();
    let mut views = Vec::new();
    let person = Subject::new(Collection::People, RecordKey::parse(&email));
    if let Some(fields) = ReadRecords::get(records, &person).await? {
        views.push(RecordView::of(&person, &fields));
    }
    for (key, fields) in ReadRecords::list(records, Collection::SaasUsers).await? {
        if key.email() == email {
            views.push(RecordView::of(
                &Subject::new(Collection::SaasUsers, key),
                &fields,
            ));
        }
    }
    let runs = ctx
        .history()
        .list(&RunFilter {
            subject: Some(email.clone()),
            limit: Some(PERSON_RUNS),
            ..RunFilter::default()
        })
        .await?;
    let mut entries = Vec::new();
    for subject in records.traced_subjects(&email).await? {
        entries.extend(TriggerTraces::trace(records, &subject).await?);
    }
    if views.is_empty() && runs.is_empty() && entries.is_empty() {
        return Err(PageError::not_found(format!(
            "no record, run or trigger trace of `{email}`; the People page lists everyone the service knows"
        )));
    }
    entries.sort_by(|a, b| b.at.cmp(&a.at).then(b.seq.cmp(&a.seq)));
    let workflows = ctx.shared.workflows();
    let not_considered = workflows
        .iter()
        .filter(|p| p.workflow.trigger.records.is_some())
        .map(|p| p.workflow.name.clone())
        .filter(|name| {
            !entries
                .iter()
                .any(|e| e.considered.iter().any(|c| c.workflow.as_str() == name))
        })
        .map(|name| {
            let href = format!("/workflows/{}", segment(&name));
            (name, href)
        })
        .collect();
    let trace = entries
        .iter()
        .map(|e| TraceView {
            at: when(&e.at),
            subject: e.subject.to_string(),
            cause: e.cause.to_string(),
            note: e.note.clone().unwrap_or_default(),
            considered: e
                .considered
                .iter()
                .map(|c| {
                    let explained = c.explain();
                    let checks = explained
                        .split_once('\n')
                        .map_or(String::new(), |(_, rest)| rest.to_owned());
                    (c.workflow.to_string(), c.fired, c.outcome(), checks)
                })
                .collect(),
        })
        .collect();
    render(&PersonPage {
        layout: ctx.layout(format!("Person {email}"), "/people"),
        email,
        records: views,
        runs: runs.iter().map(RunLine::of).collect(),
        trace,
        not_considered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Fields {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    type Records = Vec<(RecordKey, Fields)>;

    fn data() -> (Records, Records) {
        let people = vec![
            (
                RecordKey::parse("ann@acme.com"),
                fields(
                    json!({"email": "ann@acme.com", "name": "Ann", "status": "active", "department": "Sales"}),
                ),
            ),
            (
                RecordKey::parse("bob@acme.com"),
                fields(
                    json!({"email": "bob@acme.com", "name": "Bob", "status": "terminated", "department": "IT"}),
                ),
            ),
            (
                RecordKey::parse("cy@acme.com"),
                fields(
                    json!({"email": "cy@acme.com", "name": "Cy", "status": "active", "department": "Sales"}),
                ),
            ),
        ];
        let saas = vec![
            (
                RecordKey::parse("calendly/ann@acme.com"),
                fields(
                    json!({"app": "calendly", "email": "ann@acme.com", "role": "admin", "status": "active", "last_activity": "2026-11-20T00:00:00Z"}),
                ),
            ),
            (
                RecordKey::parse("webex/ann@acme.com"),
                fields(
                    json!({"app": "webex", "email": "ann@acme.com", "role": "user", "status": "active", "last_activity": "2026-08-01T12:00:00Z"}),
                ),
            ),
            (
                RecordKey::parse("webex/bob@acme.com"),
                fields(
                    json!({"app": "webex", "email": "bob@acme.com", "role": "user", "status": "active", "last_activity": "", "created_at": "2026-01-01"}),
                ),
            ),
        ];
        (people, saas)
    }

    fn query(pairs: &[(&str, &str)]) -> Result<ListQuery, PageError> {
        ListQuery::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn idle_days_count_from_last_activity_else_creation() {
        let (_, saas) = data();
        assert_eq!(idle_days(&saas[0].1, now()), Some(10));
        assert_eq!(idle_days(&saas[2].1, now()), Some(333));
        assert_eq!(
            idle_days(&fields(json!({"last_activity": "soon"})), now()),
            None
        );
        assert_eq!(idle_days(&Fields::new(), now()), None);
    }

    #[test]
    fn people_show_their_accounts_and_sort_by_idle_days() {
        let (people, saas) = data();
        let q = query(&[("sort", "idle_days"), ("dir", "desc")]).unwrap();
        let rows = list_view(&people, &saas, &q, now());
        let order: Vec<(&str, Option<i64>)> = rows
            .iter()
            .map(|r| (r.email.as_str(), r.idle_days))
            .collect();
        // Ann's latest activity anywhere is 10 days ago; Cy has no account (unknown sorts first,
        // so last descending).
        assert_eq!(
            order,
            [
                ("bob@acme.com", Some(333)),
                ("ann@acme.com", Some(10)),
                ("cy@acme.com", None)
            ]
        );
        assert_eq!(
            rows[1].accounts,
            [
                Account {
                    app: "calendly".into(),
                    role: "admin".into(),
                    status: "active".into(),
                    last_activity: "2026-11-20T00:00:00Z".into()
                },
                Account {
                    app: "webex".into(),
                    role: "user".into(),
                    status: "active".into(),
                    last_activity: "2026-08-01T12:00:00Z".into()
                }
            ]
        );
    }

    #[test]
    fn search_looks_in_every_shown_column() {
        let (people, saas) = data();
        let emails = |pairs: &[(&str, &str)]| -> Vec<String> {
            list_view(&people, &saas, &query(pairs).unwrap(), now())
                .into_iter()
                .map(|r| r.key)
                .collect()
        };
        assert_eq!(emails(&[("q", "sales")]), ["ann@acme.com", "cy@acme.com"]);
        assert_eq!(emails(&[("q", "ADMIN")]), ["ann@acme.com"]);
        assert_eq!(
            emails(&[
                ("collection", "saas_users"),
                ("q", "webex"),
                ("sort", "role"),
                ("dir", "desc")
            ]),
            ["webex/ann@acme.com", "webex/bob@acme.com"]
        );
        assert_eq!(
            emails(&[("collection", "saas_users"), ("sort", "last_activity")]),
            [
                "webex/bob@acme.com",
                "webex/ann@acme.com",
                "calendly/ann@acme.com"
            ]
        );
    }

    #[test]
    fn a_wrong_parameter_is_an_error_not_ignored() {
        let message = |pairs: &[(&str, &str)]| query(pairs).unwrap_err().message;
        assert_eq!(
            message(&[("sort", "app")]),
            "cannot sort `people` by `app`; sort by one of: email, name, status, department, idle_days"
        );
        assert_eq!(
            message(&[("dir", "up")]),
            "no sort direction `up`; use `asc` or `desc`"
        );
        assert_eq!(
            message(&[("collection", "users")]),
            "no collection `users`; the people page lists `people` or `saas_users`"
        );
        assert_eq!(
            message(&[("search", "x")]),
            "unknown query parameter `search`; the people page takes `collection`, `q`, `sort` and `dir`"
        );
    }

    #[test]
    fn a_header_link_turns_the_current_sort_around() {
        let q = query(&[("q", "a b"), ("sort", "name")]).unwrap();
        assert_eq!(
            q.sort_link("name"),
            "/people?collection=people&q=a+b&sort=name&dir=desc"
        );
        assert_eq!(
            q.sort_link("email"),
            "/people?collection=people&q=a+b&sort=email&dir=asc"
        );
        assert_eq!((q.arrow("name"), q.arrow("email")), (" ▲", ""));
    }
}

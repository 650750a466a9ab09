//! The runs page: `GET /runs`, newest first, with filters (workflow, outcome, subject, trigger,
//! since), pages by cursor (`before=RUN_ID`: the runs older than that one) and live updates
//! (`GET /runs/live`, the same table as a fragment, which the script polls every 3 s on the
//! first page, and on any page while one of its runs is unfinished).
//!
//! Polling rather than server-sent events: an event stream holds a connection open for as long
//! as the tab is, and `serve` caps open connections and closes the oldest at the cap
//! ([`crate::server::HttpLimits`]), so a few open tabs would count against the API's clients;
//! a poll is one short request, the same page the browser would load, and needs no state on
//! the server. The list reads the store through [`ReadHistory::list`]; a filter by subject goes
//! through the store's subject index.

use std::sync::Arc;

use askama::Template;
use axum::http::Uri;
use axum::routing::get;
use axum::Router;

use super::{duration, render, when, Console, Ctx, Layout, Page, PageError};
use crate::store::api::ReadHistory;
use crate::store::history::{RunFilter, RunId, RunRecord, RunStatus, TriggerKind};

/// Runs on one page.
pub const PAGE_SIZE: usize = 50;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/runs", get(page))
        .route("/runs/live", get(live))
}

/// The query parameters the runs page takes.
const PARAMS: [&str; 6] = [
    "workflow", "status", "subject", "trigger", "since", "before",
];

/// The filters as the user wrote them (empty: none).
#[derive(Debug, Default, Clone)]
pub(super) struct Filters {
    pub workflow: String,
    pub status: String,
    pub subject: String,
    pub trigger: String,
    pub since: String,
    pub before: String,
}

impl Filters {
    /// Reads `?workflow=…&status=…`; a parameter the page does not take is an error.
    fn parse(uri: &Uri) -> Result<Filters, PageError> {
        let mut filters = Filters::default();
        let query = uri.query().unwrap_or_default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.trim().to_owned();
            match name.as_ref() {
                "workflow" => filters.workflow = value,
                "status" => filters.status = value,
                "subject" => filters.subject = value,
                "trigger" => filters.trigger = value,
                "since" => filters.since = value,
                "before" => filters.before = value,
                other => {
                    return Err(PageError::bad_request(format!(
                        "unknown filter `{other}`: the runs page takes {}",
                        PARAMS.map(|p| format!("`{p}`")).join(", ")
                    )))
                }
            }
        }
        Ok(filters)
    }

    /// The store's filter for one page (one run more than a page, to tell whether there is a
    /// next one).
    fn run_filter(&self) -> Result<RunFilter, PageError> {
        let status = match self.status.as_str() {
            "" => None,
            text => Some(RunStatus::parse(text).ok_or_else(|| {
                PageError::bad_request(format!(
                    "unknown outcome `{text}`; use one of {}",
                    RunStatus::NAMES.map(|n| format!("`{n}`")).join(", ")
                ))
            })?),
        };
        let trigger = match self.trigger.as_str() {
            "" => None,
            text => Some(TriggerKind::parse(text).ok_or_else(|| {
                PageError::bad_request(format!(
                    "unknown trigger `{text}`; use one of {}",
                    TriggerKind::ALL
                        .map(|k| format!("`{}`", k.name()))
                        .join(", ")
                ))
            })?),
        };
        let before = match self.before.as_str() {
            "" => None,
            text => Some(text.parse::<RunId>().map_err(|_| {
                PageError::bad_request(format!(
                    "`before` `{text}` is not a run id (26 characters, as the runs page shows)"
                ))
            })?),
        };
        let since = match self.since.as_str() {
            "" => None,
            text => Some(crate::server::api::since(text)?),
        };
        Ok(RunFilter {
            workflow: (!self.workflow.is_empty()).then(|| self.workflow.clone()),
            status,
            subject: (!self.subject.is_empty()).then(|| self.subject.clone()),
            since,
            limit: Some(PAGE_SIZE + 1),
            trigger,
            before,
        })
    }

    /// The query string of these filters with another cursor (`None`: the first page).
    fn query(&self, before: Option<&str>) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("workflow", &self.workflow),
            ("status", &self.status),
            ("subject", &self.subject),
            ("trigger", &self.trigger),
            ("since", &self.since),
        ] {
            if !value.is_empty() {
                out.append_pair(name, value);
            }
        }
        if let Some(before) = before {
            out.append_pair("before", before);
        }
        out.finish()
    }
}

/// One run as a row of the table.
#[derive(Debug, Clone)]
pub(super) struct RunRow {
    pub id: String,
    pub workflow: String,
    /// The status's name (`completed_with_failures`): the class `status-NAME` colours it.
    pub status: &'static str,
    /// The status in words.
    pub label: String,
    pub subject: String,
    pub trigger: String,
    pub created: String,
    pub took: String,
    pub error: String,
    pub mode: &'static str,
}

impl RunRow {
    pub(super) fn new(run: &RunRecord) -> RunRow {
        let took = match (run.started_at, run.finished_at) {
            (Some(start), Some(end)) => duration(end - start),
            (Some(start), None) if !run.status.is_finished() => {
                format!("{} so far", duration(chrono::Utc::now() - start))
            }
            _ => String::new(),
        };
        RunRow {
            id: run.id.to_string(),
            workflow: run.workflow.clone(),
            status: run.status.name(),
            label: status_label(run.status.name()),
            subject: run
                .subject
                .as_ref()
                .map(|s| s.key.to_string())
                .unwrap_or_default(),
            trigger: run.trigger.to_string(),
            created: when(&run.created_at),
            took,
            error: run.error.clone().unwrap_or_default(),
            mode: match run.mode {
                crate::store::history::RunMode::Live => "",
                crate::store::history::RunMode::DryRun => "dry run",
                crate::store::history::RunMode::Offline => "offline",
            },
        }
    }
}

/// `completed_with_failures` → `completed with failures`.
pub(super) fn status_label(name: &str) -> String {
    name.replace('_', " ")
}

/// An option of a filter's `<select>`.
#[derive(Debug, Clone)]
pub(super) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn choices<'a>(values: impl IntoIterator<Item = &'a str>, current: &str) -> Vec<Choice> {
    let mut out = vec![Choice {
        value: String::new(),
        label: "any".to_owned(),
        selected: current.is_empty(),
    }];
    out.extend(values.into_iter().map(|v| Choice {
        value: v.to_owned(),
        label: status_label(v),
        selected: v == current,
    }));
    out
}

/// The table (and the live fragment).
#[derive(Template)]
#[template(path = "runs_table.html")]
struct RunsTable {
    rows: Vec<RunRow>,
    /// The fragment's URL while the table should follow the runs; empty: it is still.
    poll: String,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    layout: Layout,
    filters: Filters,
    workflows: Vec<Choice>,
    statuses: Vec<Choice>,
    triggers: Vec<Choice>,
    table: RunsTable,
    /// The next (older) page's URL; empty on the last page.
    older: String,
    /// The first page's URL when this is not it.
    newest: String,
}

/// One page of runs: the rows, and the cursor of the next page.
async fn load(ctx: &Ctx, filters: &Filters) -> Result<(Vec<RunRecord>, Option<RunId>), PageError> {
    let filter = filters.run_filter()?;
    let mut runs = ctx.history().list(&filter).await?;
    let next = if runs.len() > PAGE_SIZE {
        runs.truncate(PAGE_SIZE);
        runs.last().map(|r| r.id)
    } else {
        None
    };
    Ok((runs, next))
}

fn table(filters: &Filters, runs: &[RunRecord]) -> RunsTable {
    // The first page follows new runs; an older page only while one of its runs is unfinished.
    let follow = filters.before.is_empty() || runs.iter().any(|r| !r.status.is_finished());
    let query = filters.query((!filters.before.is_empty()).then_some(filters.before.as_str()));
    RunsTable {
        rows: runs.iter().map(RunRow::new).collect(),
        poll: if follow {
            format!("/runs/live?{query}")
        } else {
            String::new()
        },
    }
}

/// `GET /runs`.
async fn page(ctx: Ctx, uri: Uri) -> Page {
    let filters = Filters::parse(&uri)?;
    let (runs, next) = load(&ctx, &filters).await?;
    let mut names: Vec<String> = ctx
        .shared
        .workflows()
        .iter()
        .map(|p| p.workflow.name.clone())
        .collect();
    // A workflow no longer loaded still has runs: keep the filter it is in.
    if !filters.workflow.is_empty() && !names.contains(&filters.workflow) {
        names.push(filters.workflow.clone());
    }
    let workflows = {
        let mut out = choices([], &filters.workflow);
        out.extend(names.iter().map(|n| Choice {
            value: n.clone(),
            label: n.clone(),
            selected: *n == filters.workflow,
        }));
        out
    };
    let page = RunsPage {
        layout: ctx.layout("Runs", "/runs"),
        workflows,
        statuses: choices(RunStatus::NAMES, &filters.status),
        triggers: choices(TriggerKind::ALL.map(TriggerKind::name), &filters.trigger),
        table: table(&filters, &runs),
        older: next
            .map(|id| format!("/runs?{}", filters.query(Some(&id.to_string()))))
            .unwrap_or_default(),
        newest: if filters.before.is_empty() {
            String::new()
        } else {
            format!("/runs?{}", filters.query(None))
        },
        filters,
    };
    render(&page)
}

/// `GET /runs/live`: the table alone, for the script to swap in.
async fn live(ctx: Ctx, uri: Uri) -> Page {
    let filters = Filters::parse(&uri)?;
    let (runs, _) = load(&ctx, &filters).await?;
    render(&table(&filters, &runs))
}

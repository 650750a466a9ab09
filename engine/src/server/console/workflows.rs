//! The Workflows pages: every loaded workflow with its trigger in words, its last run and success
//! rate (over its runs of the last [`LIST_DAYS`] days, read in one pass for all workflows); a workflow's page adds its graph ([`crate::graph::svg`]) and, for a schedule, its next
//! five fire times in the workflow's time zone. Files of the workflows directory that do not load
//! (what a reload would refuse, with each error's file, line and column) or that changed since the
//! service loaded them are listed too, so a broken edit shows before the reload that fails.
//!
//! The data side ([`trigger_words`], [`fire_times`], [`Success`], [`load_problems`]) is plain
//! functions, unit-tested without a server.
//!
//! Element ids: `#workflows-table` (rows `tr.workflow[data-workflow=NAME]`),
//! `#workflow-load-errors` (items `li.load-problem[data-file=FILE]`, errors `li.load-error`);
//! on a workflow's page `#workflow-trigger`, `#workflow-schedule` (times `li.fire-time`),
//! `#workflow-graph` (the SVG), `#workflow-runs` (rows `tr.run[data-run=ID]`),
//! `#workflow-success`.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use askama::Template;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use super::people::{segment, RunLine};
use super::{render, Console, Ctx, Layout, Page, PageError};
use crate::compile::{compile_source, Workflow};
use crate::exec::Prepared;
use crate::preset::PresetRegistry;
use crate::spec::Source;
use crate::store::api::ReadHistory;
use crate::store::history::{RunFilter, RunRecord, RunStatus};

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/workflows", get(list))
        .route("/workflows/{name}", get(show))
}

/// How many recent runs the success rate counts.
pub const RATE_WINDOW: usize = 100;
/// The list page's window: runs of the last this many days…
pub const LIST_DAYS: i64 = 30;
/// …and at most this many of them (newest first), read in one pass for every workflow.
pub const LIST_RUNS: usize = 10_000;
/// How many runs a workflow's page lists.
const LAST_RUNS: usize = 20;

/// The workflow's trigger, in sentences: what starts it, on which records, under which conditions,
/// and who is left out.
pub fn trigger_words(workflow: &Workflow) -> Vec<String> {
    let trigger = &workflow.trigger;
    let mut lines = Vec::new();
    let events: Vec<&str> = trigger
        .on
        .iter()
        .map(|e| match e {
            crate::compile::RecordEvent::Created => "created",
            crate::compile::RecordEvent::Updated => "updated",
            crate::compile::RecordEvent::Deleted => "deleted",
        })
        .collect();
    let events = match events.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    };
    match (&trigger.schedule, trigger.records) {
        (Some((schedule, _)), Some(records)) => lines.push(format!(
            "Runs on the schedule `{}` ({}), once for each `{}` record that matches",
            schedule.expr(),
            schedule.zone(),
            records.name()
        )),
        (Some((schedule, _)), None) => lines.push(format!(
            "Runs on the schedule `{}` ({})",
            schedule.expr(),
            schedule.zone()
        )),
        (None, _) => {}
    }
    if let Some(records) = trigger.records {
        if !events.is_empty() {
            lines.push(format!(
                "Runs when a `{}` record is {events} and matches",
                records.name()
            ));
        } else if trigger.schedule.is_none() {
            lines.push(format!(
                "Runs on a `{}` record only when asked (no `on:` event, no schedule)",
                records.name()
            ));
        }
    }
    if trigger.schedule.is_none() && trigger.records.is_none() {
        lines.push("Runs only when asked (`blockyard run`, the API or the console)".to_owned());
    }
    for rule in &trigger.rules {
        lines.push(format!("if {}", rule.describe()));
    }
    if let Some(when) = &trigger.when {
        lines.push(format!("if `{}`", when.source()));
    }
    if let Some(exclude) = &trigger.exclude {
        let mut who = Vec::new();
        if !exclude.subjects.is_empty() {
            let listed: Vec<&str> = exclude.subjects.iter().map(String::as_str).collect();
            who.push(listed.join(", "));
        }
        if let Some(var) = &exclude.var {
            who.push(format!("the addresses in `vars.{var}`"));
        }
        if let Some(field) = &exclude.field {
            who.push(format!("records with `{field}: true`"));
        }
        lines.push(format!("except {}", who.join("; ")));
    }
    lines
}

/// The next `n` fire times after `now`, in the schedule's zone (`2026-12-01 07:00 UTC`).
pub fn fire_times(workflow: &Workflow, now: DateTime<Utc>, n: usize) -> Vec<String> {
    let Some((schedule, _)) = &workflow.trigger.schedule else {
        return Vec::new();
    };
    let zone = schedule.zone();
    schedule
        .upcoming(now, n)
        .into_iter()
        .map(|at| {
            at.with_timezone(&zone)
                .format("%a %Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .collect()
}

/// How a workflow's recent runs ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Success {
    /// Finished runs counted (at most [`RATE_WINDOW`] recent runs, unfinished ones left out).
    pub finished: usize,
    pub succeeded: usize,
    /// Finished through a failure path (`completed_with_failures`): not counted as succeeded.
    pub through_failure: usize,
}

impl Success {
    pub fn of(runs: &[RunRecord]) -> Success {
        let mut out = Success::default();
        for run in runs.iter().filter(|r| r.status.is_finished()) {
            out.finished += 1;
            match run.status {
                RunStatus::Succeeded => out.succeeded += 1,
                RunStatus::CompletedWithFailures => out.through_failure += 1,
                _ => {}
            }
        }
        out
    }

    /// `87% (13 of 15 finished runs)`, or `no finished run` .
    pub fn words(&self) -> String {
        if self.finished == 0 {
            return "no finished run".to_owned();
        }
        let percent = self.succeeded * 100 / self.finished;
        format!(
            "{percent}% ({} of {} finished runs succeeded)",
            self.succeeded, self.finished
        )
    }
}

/// A file of the workflows directory that the service does not run as it is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    pub file: String,
    /// What is wrong: each error located (`FILE:LINE:COL: error: …`), or why it is not loaded.
    pub errors: Vec<String>,
    /// True when the file does not load (a reload would fail); false when it loads but the service
    /// runs an older version, or has not loaded it yet.
    pub invalid: bool,
}

/// The files of `dir` that are not what the service runs: compiled again (only those whose text
/// differs from the loaded one), with their errors.
pub fn load_problems(
    dir: &FsPath,
    loaded: &[Arc<Prepared>],
    presets: &PresetRegistry,
) -> Vec<LoadProblem> {
    let files = match crate::trigger::workflow_files(dir) {
        Ok(files) => files,
        Err(err) => {
            return vec![LoadProblem {
                file: dir.display().to_string(),
                errors: vec![err.to_string()],
                invalid: true,
            }]
        }
    };
    let mut out = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        let source = match Source::read(&file) {
            Ok(source) => source,
            Err(err) => {
                out.push(LoadProblem {
                    file: shown,
                    errors: vec![err.to_string()],
                    invalid: true,
                });
                continue;
            }
        };
        let running = loaded.iter().find(|p| same_file(&p.workflow.file, &file));
        if running.is_some_and(|p| p.text == source.text) {
            continue;
        }
        match compile_source(source, presets) {
            Err(errors) => out.push(LoadProblem {
                file: shown,
                errors: errors.iter().map(ToString::to_string).collect(),
                invalid: true,
            }),
            Ok(_) => out.push(LoadProblem {
                file: shown,
                errors: vec![match running {
                    Some(_) => "changed since the service loaded it; reload to run the new version"
                        .to_owned(),
                    None => "not loaded yet; reload to load it".to_owned(),
                }],
                invalid: false,
            }),
        }
    }
    out
}

fn same_file(a: &FsPath, b: &FsPath) -> bool {
    a == b || (a.canonicalize().ok().zip(b.canonicalize().ok())).is_some_and(|(a, b)| a == b)
}

/// A workflow's page.
pub fn href(name: &str) -> String {
    format!("/workflows/{}", segment(name))
}

/// A row of the list.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub href: String,
    pub description: String,
    pub trigger: Vec<String>,
    pub next: String,
    pub last: Option<RunLine>,
    pub success: String,
}

#[derive(Template)]
#[template(path = "workflows.html")]
struct ListPage {
    layout: Layout,
    workflows: Vec<Summary>,
    problems: Vec<LoadProblem>,
    dir: String,
    window: usize,
    days: i64,
}

fn setup_dir(ctx: &Ctx) -> PathBuf {
    ctx.shared.setup.workflows.clone()
}

async fn recent(ctx: &Ctx, name: &str, limit: usize) -> Result<Vec<RunRecord>, PageError> {
    Ok(ctx
        .history()
        .list(&RunFilter {
            workflow: Some(name.to_owned()),
            limit: Some(limit),
            ..RunFilter::default()
        })
        .await?)
}

async fn list(ctx: Ctx) -> Page {
    let workflows = ctx.shared.workflows();
    let loaded: Vec<Arc<Prepared>> = workflows.iter().cloned().collect();
    let now = crate::as_of::now();
    // One pass over the newest runs of the window for every workflow, rather than one scan per
    // workflow (a rarely run workflow would make each of those read the whole history).
    let window = ctx
        .history()
        .list(&RunFilter {
            since: Some(now - chrono::Duration::days(LIST_DAYS)),
            limit: Some(LIST_RUNS),
            ..RunFilter::default()
        })
        .await?;
    let mut rows = Vec::with_capacity(loaded.len());
    for prepared in &loaded {
        let w = &prepared.workflow;
        let runs: Vec<RunRecord> = window
            .iter()
            .filter(|r| r.workflow == w.name)
            .take(RATE_WINDOW)
            .cloned()
            .collect();
        rows.push(Summary {
            name: w.name.clone(),
            href: href(&w.name),
            description: w.description.clone().unwrap_or_default(),
            trigger: trigger_words(w),
            next: fire_times(w, now, 1).into_iter().next().unwrap_or_default(),
            last: runs.first().map(RunLine::of),
            success: Success::of(&runs).words(),
        });
    }
    let dir = setup_dir(&ctx);
    let presets = ctx.shared.engine().client().presets().clone();
    let problems = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || load_problems(&dir, &loaded, &presets))
            .await
            .map_err(|err| {
                PageError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("checking the workflow files failed: {err}"),
                )
            })?
    };
    render(&ListPage {
        layout: ctx.layout("Workflows", "/workflows"),
        workflows: rows,
        problems,
        dir: dir.display().to_string(),
        window: RATE_WINDOW,
        days: LIST_DAYS,
    })
}

#[derive(Template)]
#[template(path = "workflow.html")]
struct ShowPage {
    layout: Layout,
    runs_href: String,
    description: String,
    file: String,
    trigger: Vec<String>,
    zone: String,
    fire_times: Vec<String>,
    svg: String,
    runs: Vec<RunLine>,
    success: String,
    through_failure: usize,
}

async fn show(ctx: Ctx, Path(name): Path<String>) -> Page {
    let workflows = ctx.shared.workflows();
    let Some(prepared) = workflows.get(&name) else {
        let names: Vec<&str> = workflows.iter().map(|p| p.workflow.name.as_str()).collect();
        return Err(PageError::not_found(format!(
            "no workflow `{name}` is loaded; loaded: {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    };
    let w = &prepared.workflow;
    let runs = recent(&ctx, &w.name, RATE_WINDOW).await?;
    let success = Success::of(&runs);
    render(&ShowPage {
        layout: ctx.layout(format!("Workflow {}", w.name), "/workflows"),
        runs_href: format!(
            "/runs?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("workflow", &w.name)
                .finish()
        ),
        description: w.description.clone().unwrap_or_default(),
        file: w.file.display().to_string(),
        trigger: trigger_words(w),
        zone: w
            .trigger
            .schedule
            .as_ref()
            .map(|(s, _)| s.zone().to_string())
            .unwrap_or_default(),
        fire_times: fire_times(w, crate::as_of::now(), 5),
        svg: crate::graph::svg(w, None),
        runs: runs.iter().take(LAST_RUNS).map(RunLine::of).collect(),
        success: success.words(),
        through_failure: success.through_failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::{RunId, RunMode, RunTrigger};

    fn shipped(name: &str) -> Workflow {
        let path = FsPath::new(env!("CARGO_MANIFEST_DIR"))
            .join("workflows")
            .join(name);
        crate::compile::compile_file(path, &PresetRegistry::builtin())
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_record_trigger_in_words() {
        assert_eq!(
            trigger_words(&shipped("calendly-offboard.yaml")),
            [
                "Runs when a `people` record is updated and matches",
                "if status equals \"terminated\"",
                "if email not_empty",
            ]
        );
        let scim = trigger_words(&shipped("scim-provision.yaml"));
        assert_eq!(
            scim[0],
            "Runs when a `people` record is created or updated and matches"
        );
        assert_eq!(
            scim.last().unwrap(),
            "if `record.scim_synced != `${record.status}|${record.name}``"
        );
    }

    #[test]
    fn a_schedule_in_words_with_its_next_five_times_in_its_zone() {
        let reclaim = shipped("reclaim-idle.yaml");
        assert_eq!(
            trigger_words(&reclaim),
            [
                "Runs on the schedule `0 7 * * *` (UTC), once for each `saas_users` record that matches",
                "if status not_equals \"deactivated\"",
                "if app in [\"calendly\", \"webex\"]",
                "if `days_idle(record) > vars.threshold_days && !(\"reclaim_state\" in record && record.reclaim_state == \"notified\")`",
                "except the addresses in `vars.reclaim_exclusions`; records with `reclaim_excluded: true`",
            ]
        );
        let now: DateTime<Utc> = "2026-11-30T08:00:00Z".parse().unwrap();
        assert_eq!(
            fire_times(&reclaim, now, 5),
            [
                "Tue 2026-12-01 07:00 UTC",
                "Wed 2026-12-02 07:00 UTC",
                "Thu 2026-12-03 07:00 UTC",
                "Fri 2026-12-04 07:00 UTC",
                "Sat 2026-12-05 07:00 UTC",
            ]
        );
        // A zone other than UTC: the times are the zone's wall clock, daylight saving included.
        let text = "name: zoned\nblocks:\n  begin: {type: begin, schedule: {cron: \"30 9 * * 1\", timezone: Europe/Berlin}, next: end}\n  end: {type: end}\n";
        let zoned =
            compile_source(Source::new("zoned.yaml", text), &PresetRegistry::builtin()).unwrap();
        assert_eq!(
            trigger_words(&zoned),
            ["Runs on the schedule `30 9 * * 1` (Europe/Berlin)"]
        );
        let march: DateTime<Utc> = "2027-03-20T00:00:00Z".parse().unwrap();
        assert_eq!(
            fire_times(&zoned, march, 2),
            ["Mon 2027-03-22 09:30 CET", "Mon 2027-03-29 09:30 CEST"]
        );
        assert_eq!(
            fire_times(&shipped("calendly-offboard.yaml"), now, 5),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_success_rate_counts_finished_runs_only() {
        let run = |status| {
            let id = RunId::new();
            RunRecord {
                id,
                workflow: "w".into(),
                file: "w.yaml".into(),
                snapshot: "hash".into(),
                trigger: RunTrigger::manual(),
                subject: None,
                vars: Default::default(),
                status,
                mode: RunMode::default(),
                created_at: id.created_at(),
                started_at: None,
                finished_at: None,
                replay_of: None,
                from_block: None,
                error: None,
                wake_at: None,
                pruned: false,
            }
        };
        let runs = [
            run(RunStatus::Succeeded),
            run(RunStatus::Succeeded),
            run(RunStatus::CompletedWithFailures),
            run(RunStatus::Failed),
            run(RunStatus::Running),
            run(RunStatus::WaitingApproval),
        ];
        let success = Success::of(&runs);
        assert_eq!(
            success,
            Success {
                finished: 4,
                succeeded: 2,
                through_failure: 1
            }
        );
        assert_eq!(success.words(), "50% (2 of 4 finished runs succeeded)");
        assert_eq!(Success::of(&[]).words(), "no finished run");
    }

    #[test]
    fn a_broken_file_shows_its_located_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.yaml");
        let text = "name: good\nblocks:\n  begin: {type: begin, next: end}\n  end: {type: end}\n";
        std::fs::write(&good, text).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "name: broken\nblocks:\n  begin: {type: begin, next: nowhere}\n  end: {type: end}\n",
        )
        .unwrap();
        let presets = PresetRegistry::builtin();
        let store = crate::store::Store::open(&dir.path().join("data")).unwrap();
        let client = crate::http::Client::new(
            Arc::new(presets.clone()),
            crate::http::Credentials::default(),
        )
        .unwrap();
        let engine = crate::exec::Engine::new(
            &store,
            client,
            Default::default(),
            crate::exec::EngineOptions::default(),
        )
        .unwrap();
        let loaded = vec![engine.prepare(&good, text.to_owned()).unwrap()];
        let problems = load_problems(dir.path(), &loaded, &presets);
        let file = dir.path().join("b.yaml").display().to_string();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].file, file);
        assert!(problems[0].invalid);
        assert_eq!(problems[0].errors.len(), 1, "{problems:?}");
        assert!(
            problems[0].errors[0].starts_with(&format!("{file}:3:")),
            "{problems:?}"
        );
        assert!(problems[0].errors[0].contains("`nowhere`"), "{problems:?}");

        // The loaded file changed on disk: it loads, but is not what runs.
        std::fs::write(&good, text.replace("good", "better")).unwrap();
        let problems = load_problems(dir.path(), &loaded, &presets);
        assert_eq!(
            problems[0],
            LoadProblem {
                file: good.display().to_string(),
                errors: vec![
                    "changed since the service loaded it; reload to run the new version".into()
                ],
                invalid: false
            }
        );
    }
}

//! The Licenses page (ServiceNow SAM's SaaS license view): per vendor (a `saas_users` record's
//! `app`), its users by role and status, how many are idle past each reclamation threshold, how
//! many are in each reclaim state, the reclamations under way, what was reclaimed (or cancelled
//! by new activity) in the last 30 days, and who is excluded and why.
//!
//! A reclamation policy is a loaded workflow over `saas_users` with a numeric `threshold_days`
//! var (the shipped `reclaim-idle`); its threshold and exclusions are read from the workflow as it
//! runs (config vars overlaid by the workflow's, as a run gets them). As in SAM, a candidate is
//! `not excluded ∧ days idle > threshold` (days idle as `days_idle(record)`: since
//! `last_activity`, else `created_at`), over users not `deactivated`; excluded users are left
//! out of the idle counts and listed apart.
//!
//! The reclaim states are what `reclaim-idle` saves on the record (docs/reclamation.md):
//! `reclaim_state: candidate` (with `reclaim_reason`, `reclaim_flagged_at`), `notified`
//! (`reclaim_notified_at`, `reclaim_on`), `cancelled` (`reclaim_activity_at`) or `reclaimed`
//! (`reclaimed_at`, `licence_freed`). Every record in a state is counted; candidates and notified
//! users are listed whatever their age, cancelled and reclaimed ones when their date (the activity,
//! the reclamation) is in the last 30 days, or is missing or unreadable (listed as saved, so no
//! decision hides). A state value other than the four is counted and listed under its own name.
//! A record saved by the `reclaim-idle` of before the rebuild carries `reclaim_decision:
//! reclaimed` (`reclaimed_at`) or `cancelled` (`reclaim_flagged_at`, the day it was kept) and no
//! `reclaim_state`: it is counted and listed once in that state, marked legacy; a record with both
//! keys is in its `reclaim_state` (the newer run's), its old `reclaim_decision` ignored.
//!
//! The data side is [`license_view`], a plain function unit-tested without a server.
//!
//! Element ids: `#license-vendors` (a section `section.vendor[data-app=APP]` per vendor, with
//! `table.by-role`, `table.idle`, cells `td[data-threshold=DAYS]`, and `table.states`, cells
//! `td[data-state=STATE]`), `#license-policies`, `#license-states` (candidates and notified users:
//! rows `tr.state[data-key=KEY][data-state=STATE]`, badges `span.state-STATE`),
//! `#license-decisions` (cancelled and reclaimed: rows
//! `tr.decision[data-key=KEY][data-state=STATE]`, `[data-legacy=reclaim_decision]` on a legacy
//! record, badges `span.decision-{reclaimed|cancelled}`), `#license-excluded` (rows
//! `tr.excluded[data-key=KEY]`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use askama::Template;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::people::{idle_days, person_href, text};
use super::{render, when, Console, Ctx, Layout, Page};
use crate::compile::{Collection, Exclusion, Workflow};
use crate::records::{Fields, RecordKey};
use crate::store::api::ReadRecords;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/licenses", get(show))
}

/// How far back the decisions go.
pub const DECISION_DAYS: i64 = 30;

/// The `reclaim_state` values `reclaim-idle` saves, in a reclamation's order.
pub const RECLAIM_STATES: [&str; 4] = ["candidate", "notified", "cancelled", "reclaimed"];

/// The states that end a reclamation: listed for [`DECISION_DAYS`] only.
fn decided(state: &str) -> bool {
    matches!(state, "cancelled" | "reclaimed")
}

/// Thresholds shown for every vendor besides the policies' own (SAM's 30-day SSO default, its
/// 60-day direct default, and 90).
pub const STANDARD_THRESHOLDS: [i64; 3] = [30, 60, 90];

/// A reclamation policy: a workflow over `saas_users` with a `threshold_days` var.
#[derive(Debug)]
pub struct Policy<'a> {
    pub workflow: &'a str,
    pub threshold: i64,
    pub exclusion: Option<&'a Exclusion>,
    /// The vars a run of it gets (config's, overlaid by the workflow's).
    pub vars: Value,
}

/// The reclamation policies among `workflows`.
pub fn policies<'a>(
    workflows: impl IntoIterator<Item = &'a Workflow>,
    config_vars: &serde_json::Map<String, Value>,
) -> Vec<Policy<'a>> {
    workflows
        .into_iter()
        .filter(|w| w.trigger.records == Some(Collection::SaasUsers))
        .filter_map(|w| {
            let mut vars = config_vars.clone();
            for (k, v) in &w.vars {
                vars.insert(k.clone(), v.clone());
            }
            let threshold = vars.get("threshold_days")?.as_i64()?;
            Some(Policy {
                workflow: &w.name,
                threshold,
                exclusion: w.trigger.exclude.as_ref(),
                vars: Value::Object(vars),
            })
        })
        .collect()
}

/// One threshold column: its days and the policies that use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    pub days: i64,
    pub policies: Vec<String>,
}

/// One vendor's users.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vendor {
    pub app: String,
    pub total: usize,
    /// The statuses seen, in order: the columns of `by_role`.
    pub statuses: Vec<String>,
    /// Per role (`(none)` when unset): the count per status, in `statuses`' order.
    pub by_role: Vec<(String, Vec<usize>)>,
    /// Per status: the count.
    pub status_totals: Vec<usize>,
    /// Per threshold (in [`LicenseView::thresholds`]' order): users not deactivated and not
    /// excluded, idle more than that many days.
    pub idle: Vec<usize>,
    /// Users not deactivated whose idle days are unknown (no date to count from).
    pub unknown_idle: usize,
    /// Per reclaim state (in [`LicenseView::states`]' order): the users in it.
    pub states: Vec<StateCount>,
}

/// The users of a vendor in one reclaim state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateCount {
    pub all: usize,
    /// For `cancelled` and `reclaimed`: those listed in the decisions (last [`DECISION_DAYS`]).
    pub recent: Option<usize>,
}

/// A reclamation under way: a user in a state other than `cancelled` or `reclaimed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaiming {
    pub key: String,
    pub app: String,
    pub email: String,
    pub href: String,
    pub state: String,
    /// `reclaim_notified_at` when notified, else `reclaim_flagged_at`.
    pub since: String,
    /// `reclaim_on`: when the licence goes.
    pub reclaim_on: String,
    pub reason: String,
}

/// A reclamation decision saved on a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub key: String,
    pub app: String,
    pub email: String,
    pub href: String,
    /// `reclaimed` or `cancelled`.
    pub decision: String,
    /// `reclaimed_at`, or the activity that cancelled it (`reclaim_activity_at`; a legacy
    /// record's `reclaim_flagged_at`).
    pub at: String,
    pub reason: String,
    /// `licence_freed` when reclaimed.
    pub licence_freed: String,
    /// Saved as `reclaim_decision`, before `reclaim-idle` was rebuilt.
    pub legacy: bool,
}

/// A user a policy leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub key: String,
    pub app: String,
    pub email: String,
    pub href: String,
    pub workflow: String,
    pub reason: String,
    pub idle: String,
}

/// The page's data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LicenseView {
    pub thresholds: Vec<Threshold>,
    /// [`RECLAIM_STATES`], then any other `reclaim_state` value seen, sorted.
    pub states: Vec<String>,
    pub vendors: Vec<Vendor>,
    /// By vendor, state (in `states`' order), then key.
    pub reclaiming: Vec<Reclaiming>,
    /// Newest first (an unreadable date last).
    pub decisions: Vec<Decision>,
    pub excluded: Vec<Excluded>,
}

fn deactivated(fields: &Fields) -> bool {
    text(fields, "status") == "deactivated"
}

/// The record's reclaim state, and whether it is a legacy `reclaim_decision`.
fn reclaim_state(fields: &Fields) -> Option<(String, bool)> {
    let state = text(fields, "reclaim_state");
    if !state.is_empty() {
        return Some((state, false));
    }
    let decision = text(fields, "reclaim_decision");
    (!decision.is_empty()).then_some((decision, true))
}

/// A saved instant as the page shows it: parsed, else as saved, else `—`.
fn shown(fields: &Fields, name: &str) -> (Option<DateTime<Utc>>, String) {
    let saved = text(fields, name);
    match crate::rules::parse_instant(&saved) {
        Some(at) => (Some(at), when(&at)),
        None if saved.is_empty() => (None, "—".to_owned()),
        None => (None, saved),
    }
}

/// Why a policy leaves the user out: `(workflow, reason)` of the first policy that does.
fn exclusion(
    policies: &[Policy<'_>],
    key: &RecordKey,
    fields: &Fields,
) -> Option<(String, String)> {
    let record = Value::Object(fields.clone());
    policies.iter().find_map(|p| {
        let reason = p.exclusion?.reason(key.as_str(), &record, &p.vars)?;
        Some((p.workflow.to_owned(), reason))
    })
}

/// The license view of every `saas_users` record under `policies`, as of `now`.
pub fn license_view(
    saas_users: &[(RecordKey, Fields)],
    policies: &[Policy<'_>],
    now: DateTime<Utc>,
) -> LicenseView {
    let mut by_days: BTreeMap<i64, Vec<String>> = STANDARD_THRESHOLDS
        .iter()
        .map(|d| (*d, Vec::new()))
        .collect();
    for p in policies {
        by_days
            .entry(p.threshold)
            .or_default()
            .push(p.workflow.to_owned());
    }
    let thresholds: Vec<Threshold> = by_days
        .into_iter()
        .map(|(days, policies)| Threshold { days, policies })
        .collect();

    let mut apps: BTreeMap<String, Vec<(&RecordKey, &Fields)>> = BTreeMap::new();
    for (key, fields) in saas_users {
        let app = text(fields, "app");
        let app = if app.is_empty() {
            key.as_str()
                .split_once('/')
                .map_or("(none)", |(a, _)| a)
                .to_owned()
        } else {
            app
        };
        apps.entry(app).or_default().push((key, fields));
    }

    let mut states: Vec<String> = RECLAIM_STATES.iter().map(|s| (*s).to_owned()).collect();
    let others: BTreeSet<String> = saas_users
        .iter()
        .filter_map(|(_, f)| reclaim_state(f))
        .map(|(state, _)| state)
        .filter(|s| !RECLAIM_STATES.contains(&s.as_str()))
        .collect();
    states.extend(others);

    let mut view = LicenseView {
        thresholds,
        states,
        ..LicenseView::default()
    };
    let since = now - Duration::days(DECISION_DAYS);
    let mut decisions = Vec::new();
    for (app, users) in apps {
        let statuses: BTreeSet<String> = users
            .iter()
            .map(|(_, f)| or_none(text(f, "status")))
            .collect();
        let statuses: Vec<String> = statuses.into_iter().collect();
        let mut roles: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut status_totals = vec![0; statuses.len()];
        let mut idle = vec![0; view.thresholds.len()];
        let mut unknown_idle = 0;
        let mut state_counts: Vec<StateCount> = view
            .states
            .iter()
            .map(|s| StateCount {
                all: 0,
                recent: decided(s).then_some(0),
            })
            .collect();
        for (key, fields) in &users {
            let status = or_none(text(fields, "status"));
            let column = statuses.iter().position(|s| *s == status).unwrap_or(0);
            roles
                .entry(or_none(text(fields, "role")))
                .or_insert_with(|| vec![0; statuses.len()])[column] += 1;
            status_totals[column] += 1;
            let email = {
                let email = text(fields, "email");
                if email.is_empty() {
                    key.email().to_owned()
                } else {
                    email
                }
            };
            let days = idle_days(fields, now);
            if !deactivated(fields) {
                match exclusion(policies, key, fields) {
                    Some((workflow, reason)) => view.excluded.push(Excluded {
                        key: key.to_string(),
                        app: app.clone(),
                        href: person_href(&email),
                        email: email.clone(),
                        workflow,
                        reason,
                        idle: days.map_or("—".to_owned(), |d| d.to_string()),
                    }),
                    None => match days {
                        Some(days) => {
                            for (i, t) in view.thresholds.iter().enumerate() {
                                if days > t.days {
                                    idle[i] += 1;
                                }
                            }
                        }
                        None => unknown_idle += 1,
                    },
                }
            }
            let Some((state, legacy)) = reclaim_state(fields) else {
                continue;
            };
            let column = view.states.iter().position(|s| *s == state).unwrap_or(0);
            let count = &mut state_counts[column];
            count.all += 1;
            if !decided(&state) {
                let (_, since_at) = if state == "notified" {
                    shown(fields, "reclaim_notified_at")
                } else {
                    shown(fields, "reclaim_flagged_at")
                };
                view.reclaiming.push(Reclaiming {
                    key: key.to_string(),
                    app: app.clone(),
                    href: person_href(&email),
                    email,
                    since: since_at,
                    reclaim_on: shown(fields, "reclaim_on").1,
                    reason: text(fields, "reclaim_reason"),
                    state,
                });
                continue;
            }
            let at_field = match (state.as_str(), legacy) {
                ("reclaimed", _) => "reclaimed_at",
                (_, false) => "reclaim_activity_at",
                (_, true) => "reclaim_flagged_at",
            };
            let (at, at_text) = shown(fields, at_field);
            if at.is_some_and(|at| at <= since || at > now) {
                continue;
            }
            if let Some(recent) = &mut count.recent {
                *recent += 1;
            }
            let licence_freed = match (state.as_str(), text(fields, "licence_freed")) {
                ("reclaimed", freed) if freed.is_empty() => "not recorded".to_owned(),
                ("reclaimed", freed) => freed,
                _ => "—".to_owned(),
            };
            decisions.push((
                at,
                Decision {
                    key: key.to_string(),
                    app: app.clone(),
                    href: person_href(&email),
                    email,
                    decision: state,
                    at: at_text,
                    reason: text(fields, "reclaim_reason"),
                    licence_freed,
                    legacy,
                },
            ));
        }
        view.vendors.push(Vendor {
            app,
            total: users.len(),
            statuses,
            by_role: roles.into_iter().collect(),
            status_totals,
            idle,
            unknown_idle,
            states: state_counts,
        });
    }
    // Newest first (`None`, an unreadable date, sorts last), then by key.
    decisions.sort_by(|(a_at, a), (b_at, b)| b_at.cmp(a_at).then(a.key.cmp(&b.key)));
    view.decisions = decisions.into_iter().map(|(_, d)| d).collect();
    let states = &view.states;
    let order = |state: &str| states.iter().position(|s| s == state);
    view.reclaiming
        .sort_by(|a, b| (&a.app, order(&a.state), &a.key).cmp(&(&b.app, order(&b.state), &b.key)));
    view
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "(none)".to_owned()
    } else {
        text
    }
}

#[derive(Template)]
#[template(path = "licenses.html")]
struct LicensesPage {
    layout: Layout,
    view: LicenseView,
    /// (workflow, its page, threshold, what it excludes)
    policies: Vec<(String, String, i64, String)>,
    decision_days: i64,
}

async fn show(ctx: Ctx) -> Page {
    let records = ctx.shared.records();
    let saas_users = ReadRecords::list(records, Collection::SaasUsers).await?;
    let workflows = ctx.shared.workflows();
    let policies = policies(
        workflows.iter().map(|p| &*p.workflow),
        ctx.shared.engine().config_vars(),
    );
    let view = license_view(&saas_users, &policies, crate::as_of::now());
    let described = policies
        .iter()
        .map(|p| {
            let excludes = match p.exclusion {
                None => "no exclusions".to_owned(),
                Some(e) => {
                    let mut parts = Vec::new();
                    if !e.subjects.is_empty() {
                        let listed: Vec<&str> = e.subjects.iter().map(String::as_str).collect();
                        parts.push(format!("`exclude.subjects`: {}", listed.join(", ")));
                    }
                    if let Some(var) = &e.var {
                        let listed: Vec<String> = p
                            .vars
                            .get(var)
                            .and_then(Value::as_array)
                            .map(|items| {
                                items
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default();
                        parts.push(format!("`vars.{var}`: {}", listed.join(", ")));
                    }
                    if let Some(field) = &e.field {
                        parts.push(format!("records with `{field}: true`"));
                    }
                    parts.join("; ")
                }
            };
            (
                p.workflow.to_owned(),
                super::workflows::href(p.workflow),
                p.threshold,
                excludes,
            )
        })
        .collect();
    render(&LicensesPage {
        layout: ctx.layout("Licenses", "/licenses"),
        view,
        policies: described,
        decision_days: DECISION_DAYS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::PresetRegistry;
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

    fn reclaim() -> Workflow {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/reclaim-idle.yaml");
        crate::compile::compile_file(path, &PresetRegistry::builtin()).unwrap()
    }

    fn user(app: &str, email: &str, extra: Value) -> (RecordKey, Fields) {
        let mut f = fields(json!({"app": app, "email": email, "status": "active", "role": "user"}));
        f.extend(fields(extra));
        (RecordKey::parse(&format!("{app}/{email}")), f)
    }

    #[test]
    fn the_reclaim_workflow_is_a_policy_with_its_threshold() {
        let workflow = reclaim();
        let config = serde_json::Map::new();
        let found = policies([&workflow], &config);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].workflow, found[0].threshold),
            ("reclaim-idle", 60)
        );
        // The workflow's own var wins over the config's, as in a run.
        let mut config = serde_json::Map::new();
        config.insert("threshold_days".into(), json!(45));
        assert_eq!(policies([&workflow], &config)[0].threshold, 60);
        let offboard = crate::compile::compile_file(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("workflows/calendly-offboard.yaml"),
            &PresetRegistry::builtin(),
        )
        .unwrap();
        assert!(
            policies([&offboard], &config).is_empty(),
            "people, not saas_users"
        );
    }

    #[test]
    fn vendors_by_role_status_idle_decisions_and_exclusions() {
        let workflow = reclaim();
        let policies = policies([&workflow], &serde_json::Map::new());
        let users = vec![
            // Idle 100 days.
            user(
                "calendly",
                "old@acme.com",
                json!({"last_activity": "2026-08-22T12:00:00Z"}),
            ),
            // Idle 61 days, an admin.
            user(
                "calendly",
                "mid@acme.com",
                json!({"role": "admin", "last_activity": "2026-09-30T12:00:00Z"}),
            ),
            // Idle exactly 60 days: not past 60.
            user(
                "calendly",
                "edge@acme.com",
                json!({"last_activity": "2026-10-01T12:00:00Z"}),
            ),
            // Never active, created 200 days ago, but the CEO: excluded by the var.
            user(
                "calendly",
                "ceo@example.com",
                json!({"last_activity": "", "created_at": "2026-05-14"}),
            ),
            // Excluded by its field.
            user(
                "webex",
                "vip@acme.com",
                json!({"reclaim_excluded": true, "last_activity": "2025-01-01T00:00:00Z"}),
            ),
            // Reclaimed 3 days ago (deactivated: not counted idle).
            user(
                "webex",
                "gone@acme.com",
                json!({"status": "deactivated", "reclaim_state": "reclaimed", "reclaimed_at": "2026-11-27T07:00:00Z", "reclaim_reason": "no activity for more than 60 days, none during the 7d grace period", "licence_freed": "webex user and its licenses", "last_activity": "2026-01-01T00:00:00Z"}),
            ),
            // Reclaimed 40 days ago: counted, out of the window.
            user(
                "webex",
                "older@acme.com",
                json!({"status": "deactivated", "reclaim_state": "reclaimed", "reclaimed_at": "2026-10-21T07:00:00Z"}),
            ),
            // Cancelled by activity during the grace period.
            user(
                "webex",
                "back@acme.com",
                json!({"reclaim_state": "cancelled", "reclaim_flagged_at": "2026-11-20T07:00:00Z", "reclaim_activity_at": "2026-11-29T09:00:00Z", "reclaim_reason": "activity on 2026-11-29T09:00:00Z", "last_activity": "2026-11-29T09:00:00Z"}),
            ),
            // Cancelled, its activity date unreadable: listed as saved, last.
            user(
                "webex",
                "odd@acme.com",
                json!({"reclaim_state": "cancelled", "reclaim_activity_at": "yesterday", "last_activity": "2026-11-29T09:00:00Z"}),
            ),
            // No date at all.
            user("webex", "new@acme.com", json!({})),
            // Saved by the old reclaim-idle: kept on activity, the day it was flagged.
            user(
                "webex",
                "legacy@acme.com",
                json!({"reclaim_decision": "cancelled", "reclaim_flagged_at": "2026-11-28T07:00:00Z", "reclaim_reason": "activity seen after the user was flagged", "last_activity": "2026-11-28T06:00:00Z"}),
            ),
            // Kept by the old one, a candidate of the new one: in its `reclaim_state` only.
            user(
                "calendly",
                "again@acme.com",
                json!({"last_activity": "2026-09-01T12:00:00Z", "reclaim_decision": "cancelled", "reclaim_state": "candidate", "reclaim_flagged_at": "2026-11-30T07:00:00Z", "reclaim_reason": "no activity for more than 60 days"}),
            ),
            // Told, the licence goes on 2026-12-07.
            user(
                "calendly",
                "told@acme.com",
                json!({"last_activity": "2026-09-01T12:00:00Z", "reclaim_state": "notified", "reclaim_flagged_at": "2026-11-30T07:00:00Z", "reclaim_notified_at": "2026-11-30T07:00:05Z", "reclaim_on": "2026-12-07T07:00:05Z", "reclaim_reason": "no activity for more than 60 days"}),
            ),
            // A state no shipped workflow writes: counted and listed under its name.
            user(
                "calendly",
                "paused@acme.com",
                json!({"last_activity": "2026-11-29T12:00:00Z", "reclaim_state": "on_hold"}),
            ),
        ];
        let view = license_view(&users, &policies, now());
        assert_eq!(
            view.thresholds,
            [
                Threshold {
                    days: 30,
                    policies: vec![]
                },
                Threshold {
                    days: 60,
                    policies: vec!["reclaim-idle".into()]
                },
                Threshold {
                    days: 90,
                    policies: vec![]
                },
            ]
        );
        let calendly = &view.vendors[0];
        assert_eq!(calendly.app, "calendly");
        assert_eq!(calendly.total, 7);
        assert_eq!(calendly.statuses, ["active"]);
        assert_eq!(
            calendly.by_role,
            [("admin".to_owned(), vec![1]), ("user".to_owned(), vec![6])]
        );
        // > 30: old, mid, edge, again, told; > 60: old, mid, again, told; > 90: old (again and
        // told are idle exactly 90 days). The CEO is excluded.
        assert_eq!(calendly.idle, [5, 4, 1]);
        let webex = &view.vendors[1];
        assert_eq!(webex.statuses, ["active", "deactivated"]);
        assert_eq!(webex.status_totals, [5, 2]);
        assert_eq!(
            webex.idle,
            [0, 0, 0],
            "vip excluded, back, odd and legacy active, new unknown"
        );
        assert_eq!(webex.unknown_idle, 1);

        assert_eq!(
            view.states,
            ["candidate", "notified", "cancelled", "reclaimed", "on_hold"]
        );
        let count = |all, recent| StateCount { all, recent };
        assert_eq!(
            calendly.states,
            [
                count(1, None),
                count(1, None),
                count(0, Some(0)),
                count(0, Some(0)),
                count(1, None)
            ]
        );
        // The legacy record once, as cancelled; gone and older reclaimed, older out of the window.
        assert_eq!(
            webex.states,
            [
                count(0, None),
                count(0, None),
                count(3, Some(3)),
                count(2, Some(1)),
                count(0, None)
            ]
        );
        let reclaiming: Vec<(&str, &str, &str, &str, &str)> = view
            .reclaiming
            .iter()
            .map(|r| {
                (
                    r.key.as_str(),
                    r.state.as_str(),
                    r.since.as_str(),
                    r.reclaim_on.as_str(),
                    r.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            reclaiming,
            [
                (
                    "calendly/again@acme.com",
                    "candidate",
                    "2026-11-30 07:00:00 UTC",
                    "—",
                    "no activity for more than 60 days"
                ),
                (
                    "calendly/told@acme.com",
                    "notified",
                    "2026-11-30 07:00:05 UTC",
                    "2026-12-07 07:00:05 UTC",
                    "no activity for more than 60 days"
                ),
                ("calendly/paused@acme.com", "on_hold", "—", "—", ""),
            ]
        );
        let decisions: Vec<(&str, &str, &str, &str, bool)> = view
            .decisions
            .iter()
            .map(|d| {
                (
                    d.key.as_str(),
                    d.decision.as_str(),
                    d.at.as_str(),
                    d.licence_freed.as_str(),
                    d.legacy,
                )
            })
            .collect();
        assert_eq!(
            decisions,
            [
                (
                    "webex/back@acme.com",
                    "cancelled",
                    "2026-11-29 09:00:00 UTC",
                    "—",
                    false
                ),
                (
                    "webex/legacy@acme.com",
                    "cancelled",
                    "2026-11-28 07:00:00 UTC",
                    "—",
                    true
                ),
                (
                    "webex/gone@acme.com",
                    "reclaimed",
                    "2026-11-27 07:00:00 UTC",
                    "webex user and its licenses",
                    false
                ),
                ("webex/odd@acme.com", "cancelled", "yesterday", "—", false),
            ]
        );
        let excluded: Vec<(&str, &str, &str)> = view
            .excluded
            .iter()
            .map(|e| (e.key.as_str(), e.workflow.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            excluded,
            [
                (
                    "calendly/ceo@example.com",
                    "reclaim-idle",
                    "listed in `vars.reclaim_exclusions`"
                ),
                (
                    "webex/vip@acme.com",
                    "reclaim-idle",
                    "`reclaim_excluded` is set on the record"
                ),
            ]
        );
        assert_eq!(view.excluded[0].idle, "200");
    }
}

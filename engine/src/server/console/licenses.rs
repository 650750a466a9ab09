//! The Licenses page (ServiceNow SAM's SaaS license view): per vendor (a `saas_users` record's
//! `app`), its users by role and status, how many are idle past each reclamation threshold, what
//! was reclaimed (or kept on new activity) in the last 30 days, and who is excluded and why.
//!
//! A reclamation policy is a loaded workflow over `saas_users` with a numeric `threshold_days`
//! var (the shipped `reclaim-idle`); its threshold and exclusions are read from the workflow as it
//! runs (config vars overlaid by the workflow's, as a run gets them). As in SAM, a candidate is
//! `not excluded ∧ days idle > threshold` (days idle as `days_idle(record)`: since
//! `last_activity`, else `created_at`), over users not `deactivated`; excluded users are left
//! out of the idle counts and listed apart. Decisions come from what the reclaim workflow saves on
//! the record: `reclaim_decision: reclaimed` with `reclaimed_at`, or `cancelled` (activity seen
//! after the user was flagged) with `reclaim_flagged_at`.
//!
//! The data side is [`license_view`], a plain function unit-tested without a server.
//!
//! Element ids: `#license-vendors` (a section `section.vendor[data-app=APP]` per vendor, with
//! `table.by-role` and `table.idle`, cells `td[data-threshold=DAYS]`), `#license-policies`,
//! `#license-decisions` (rows `tr.decision[data-key=KEY]`), `#license-excluded` (rows
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
    pub at: String,
    pub reason: String,
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
    pub vendors: Vec<Vendor>,
    /// Newest first.
    pub decisions: Vec<Decision>,
    pub excluded: Vec<Excluded>,
}

fn deactivated(fields: &Fields) -> bool {
    text(fields, "status") == "deactivated"
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

    let mut view = LicenseView {
        thresholds,
        ..LicenseView::default()
    };
    let since = now - Duration::days(DECISION_DAYS);
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
            let decision = text(fields, "reclaim_decision");
            let at_field = match decision.as_str() {
                "reclaimed" => "reclaimed_at",
                "cancelled" => "reclaim_flagged_at",
                _ => continue,
            };
            let Some(at) = crate::rules::parse_instant(&text(fields, at_field)) else {
                continue;
            };
            if at > since && at <= now {
                view.decisions.push(Decision {
                    key: key.to_string(),
                    app: app.clone(),
                    href: person_href(&email),
                    email,
                    decision,
                    at: when(&at),
                    reason: text(fields, "reclaim_reason"),
                });
            }
        }
        view.vendors.push(Vendor {
            app,
            total: users.len(),
            statuses,
            by_role: roles.into_iter().collect(),
            status_totals,
            idle,
            unknown_idle,
        });
    }
    // `when` is sortable text (`YYYY-MM-DD HH:MM:SS UTC`): newest first, then by key.
    view.decisions
        .sort_by(|a, b| b.at.cmp(&a.at).then(a.key.cmp(&b.key)));
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
                json!({"status": "deactivated", "reclaim_decision": "reclaimed", "reclaimed_at": "2026-11-27T07:00:00Z", "reclaim_reason": "no activity for more than 60 days", "last_activity": "2026-01-01T00:00:00Z"}),
            ),
            // Reclaimed 40 days ago: out of the window.
            user(
                "webex",
                "older@acme.com",
                json!({"status": "deactivated", "reclaim_decision": "reclaimed", "reclaimed_at": "2026-10-21T07:00:00Z"}),
            ),
            // Kept: activity after it was flagged.
            user(
                "webex",
                "back@acme.com",
                json!({"reclaim_decision": "cancelled", "reclaim_flagged_at": "2026-11-29T07:00:00Z", "reclaim_reason": "activity seen after the user was flagged", "last_activity": "2026-11-29T09:00:00Z"}),
            ),
            // No date at all.
            user("webex", "new@acme.com", json!({})),
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
        assert_eq!(calendly.total, 4);
        assert_eq!(calendly.statuses, ["active"]);
        assert_eq!(
            calendly.by_role,
            [("admin".to_owned(), vec![1]), ("user".to_owned(), vec![3])]
        );
        // > 30: old, mid, edge; > 60: old, mid; > 90: old. The CEO is excluded.
        assert_eq!(calendly.idle, [3, 2, 1]);
        let webex = &view.vendors[1];
        assert_eq!(webex.statuses, ["active", "deactivated"]);
        assert_eq!(webex.status_totals, [3, 2]);
        assert_eq!(
            webex.idle,
            [0, 0, 0],
            "vip excluded, back active, new unknown"
        );
        assert_eq!(webex.unknown_idle, 1);
        let decisions: Vec<(&str, &str, &str)> = view
            .decisions
            .iter()
            .map(|d| (d.key.as_str(), d.decision.as_str(), d.at.as_str()))
            .collect();
        assert_eq!(
            decisions,
            [
                (
                    "webex/back@acme.com",
                    "cancelled",
                    "2026-11-29 07:00:00 UTC"
                ),
                (
                    "webex/gone@acme.com",
                    "reclaimed",
                    "2026-11-27 07:00:00 UTC"
                ),
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

//! The Licenses page: per vendor, users by role and status, idle counts past each threshold (the
//! policy workflow's own included), users in each reclaim state as the rebuilt `reclaim-idle`
//! saves them (and a record saved by the old one), decisions of the last 30 days, exclusions and
//! why.

use serde_json::json;

use super::people::{days_ago, write};
use super::{env_with, serve, unescape, Browser, VIEWER};

/// A reclamation policy: over `saas_users`, a `threshold_days` var and exclusions.
const POLICY: &str = "\
name: reclaim-test
vars:
  threshold_days: 45
  reclaim_exclusions: [ceo@acme.com]
blocks:
  begin:
    type: begin
    records: saas_users
    on: [deleted]
    exclude: { var: reclaim_exclusions, field: reclaim_excluded }
    next: end
  end:
    type: end
";

/// An instant as the console shows it.
fn shown(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_show_vendors_idle_counts_states_decisions_and_exclusions() {
    let (flagged, notified, reclaim_on) = (days_ago(1), days_ago(2), days_ago(-5));
    let (activity, reclaimed, legacy) = (days_ago(5), days_ago(3), days_ago(10));
    let env = env_with(&[("reclaim-test.yaml", POLICY)]).await;
    let service = serve(&env, false).await;
    write(
        &service,
        "saas_users",
        json!([
            // Records as the rebuilt reclaim-idle saves them.
            {"app": "calendly", "email": "old@acme.com", "role": "user", "status": "active", "last_activity": days_ago(100),
             "reclaim_state": "candidate", "reclaim_reason": "no activity for more than 45 days", "reclaim_flagged_at": flagged},
            {"app": "calendly", "email": "mid@acme.com", "role": "admin", "status": "active", "last_activity": days_ago(50),
             "reclaim_state": "notified", "reclaim_reason": "no activity for more than 45 days", "reclaim_flagged_at": notified,
             "reclaim_notified_at": notified, "reclaim_on": reclaim_on},
            {"app": "calendly", "email": "new@acme.com", "role": "user", "status": "active", "last_activity": activity,
             "reclaim_state": "cancelled", "reclaim_reason": format!("activity on {activity}"), "reclaim_flagged_at": days_ago(8),
             "reclaim_activity_at": activity},
            {"app": "calendly", "email": "ceo@acme.com", "role": "owner", "status": "active", "last_activity": days_ago(300)},
            {"app": "webex", "email": "vip@acme.com", "role": "user", "status": "active", "reclaim_excluded": true, "last_activity": days_ago(400)},
            {"app": "webex", "email": "gone@acme.com", "role": "user", "status": "deactivated", "reclaim_state": "reclaimed",
             "reclaimed_at": reclaimed, "reclaim_reason": "no activity for more than 45 days", "licence_freed": "webex user and its licenses",
             "last_activity": days_ago(200)},
            // Reclaimed 40 days ago: counted, not listed.
            {"app": "webex", "email": "older@acme.com", "role": "user", "status": "deactivated", "reclaim_state": "reclaimed",
             "reclaimed_at": days_ago(40), "reclaim_reason": "no activity for more than 45 days", "licence_freed": "webex user and its licenses"},
            // Saved by the reclaim-idle of before the rebuild.
            {"app": "webex", "email": "legacy@acme.com", "role": "user", "status": "deactivated", "reclaim_decision": "reclaimed",
             "reclaimed_at": legacy, "reclaim_reason": "no activity for more than 45 days", "last_activity": days_ago(300)},
        ]),
    )
    .await;
    let mut browser = Browser::new(&service);
    browser.login(VIEWER).await;

    let page = browser.get("/licenses").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = unescape(&page.body);
    assert!(
        body.contains("<li class=\"policy\" data-workflow=\"reclaim-test\"><a href=\"/workflows/reclaim-test\">reclaim-test</a>: reclaims users idle more than <strong>45 days</strong>; excludes `vars.reclaim_exclusions`: ceo@acme.com; records with `reclaim_excluded: true`</li>"),
        "{body}"
    );
    let calendly = &body[body
        .find("<section class=\"vendor\" data-app=\"calendly\">")
        .expect("calendly")..];
    let calendly = &calendly[..calendly.find("</section>").unwrap()];
    assert!(
        calendly.contains("<h2>calendly <span class=\"muted\">(4 users)</span></h2>"),
        "{calendly}"
    );
    assert!(
        calendly.contains("<tr data-role=\"admin\"><td>admin</td><td>1</td></tr>"),
        "{calendly}"
    );
    assert!(
        calendly.contains("<tr data-role=\"user\"><td>user</td><td>2</td></tr>"),
        "{calendly}"
    );
    // Past 30: old, mid; past 45 (the policy's): old, mid; past 60 and 90: old. The CEO is
    // excluded, so not counted.
    assert!(
        calendly.contains("<td data-threshold=\"30\">2</td><td data-threshold=\"45\">2</td><td data-threshold=\"60\">1</td><td data-threshold=\"90\">1</td>"),
        "{calendly}"
    );
    assert!(
        calendly.contains(
            "<th>Idle > 45 days <span class=\"muted\">(reclaimed by reclaim-test)</span></th>"
        ),
        "{calendly}"
    );
    let webex = &body[body
        .find("<section class=\"vendor\" data-app=\"webex\">")
        .expect("webex")..];
    let webex = &webex[..webex.find("</section>").unwrap()];
    assert!(
        webex.contains("<tr data-role=\"user\"><td>user</td><td>1</td><td>3</td></tr>"),
        "{webex}"
    );
    // Users in each reclaim state, per vendor: every record in the state, and how many of them
    // in the last 30 days for the decided ones. The legacy record counts once, as reclaimed.
    assert!(
        calendly.contains("<tr><td data-state=\"candidate\">1</td><td data-state=\"notified\">1</td><td data-state=\"cancelled\">1 <span class=\"recent muted\">(1 in the last 30 days)</span></td><td data-state=\"reclaimed\">0 <span class=\"recent muted\">(0 in the last 30 days)</span></td></tr>"),
        "{calendly}"
    );
    assert!(
        webex.contains("<tr><td data-state=\"candidate\">0</td><td data-state=\"notified\">0</td><td data-state=\"cancelled\">0 <span class=\"recent muted\">(0 in the last 30 days)</span></td><td data-state=\"reclaimed\">3 <span class=\"recent muted\">(2 in the last 30 days)</span></td></tr>"),
        "{webex}"
    );

    // Candidates with the reason and since when; notified with the reclaim date.
    let states = &body[body
        .find("<section id=\"license-states\">")
        .expect("license-states")..];
    let states = &states[..states.find("</section>").unwrap()];
    assert!(
        states.contains(&format!("<tr class=\"state\" data-key=\"calendly/old@acme.com\" data-state=\"candidate\"><td>calendly</td><td><a href=\"/people/old@acme.com\">old@acme.com</a></td><td><span class=\"badge state-candidate\">candidate</span></td><td>{}</td><td>—</td><td>no activity for more than 45 days</td></tr>", shown(&flagged))),
        "{states}"
    );
    assert!(
        states.contains(&format!("<tr class=\"state\" data-key=\"calendly/mid@acme.com\" data-state=\"notified\"><td>calendly</td><td><a href=\"/people/mid@acme.com\">mid@acme.com</a></td><td><span class=\"badge state-notified\">notified</span></td><td>{}</td><td>{}</td><td>no activity for more than 45 days</td></tr>", shown(&notified), shown(&reclaim_on))),
        "{states}"
    );
    assert_eq!(states.matches("<tr class=\"state\"").count(), 2, "{states}");

    // Cancelled (with the activity date) and reclaimed (with the date and the licence freed) in
    // the last 30 days, newest first; the legacy record once, said to be one.
    let decisions = &body[body.find("<section id=\"license-decisions\">").unwrap()..];
    let decisions = &decisions[..decisions.find("</section>").unwrap()];
    let rows: Vec<&str> = decisions
        .split("<tr class=\"decision\"")
        .skip(1)
        .map(|row| &row[..row.find("</tr>").unwrap()])
        .collect();
    assert_eq!(
        rows,
        [
            format!(" data-key=\"webex/gone@acme.com\" data-state=\"reclaimed\"><td>{}</td><td>webex</td><td><a href=\"/people/gone@acme.com\">gone@acme.com</a></td><td><span class=\"badge decision-reclaimed\">reclaimed</span></td><td>no activity for more than 45 days</td><td>webex user and its licenses</td>", shown(&reclaimed)),
            format!(" data-key=\"calendly/new@acme.com\" data-state=\"cancelled\"><td>{}</td><td>calendly</td><td><a href=\"/people/new@acme.com\">new@acme.com</a></td><td><span class=\"badge decision-cancelled\">cancelled</span></td><td>activity on {activity}</td><td>—</td>", shown(&activity)),
            format!(" data-key=\"webex/legacy@acme.com\" data-state=\"reclaimed\" data-legacy=\"reclaim_decision\"><td>{}</td><td>webex</td><td><a href=\"/people/legacy@acme.com\">legacy@acme.com</a></td><td><span class=\"badge decision-reclaimed\">reclaimed</span></td><td>no activity for more than 45 days <span class=\"legacy muted\">(saved as `reclaim_decision` before reclaim-idle was rebuilt)</span></td><td>not recorded</td>", shown(&legacy)),
        ],
        "{decisions}"
    );
    let excluded = &body[body.find("<section id=\"license-excluded\">").unwrap()..];
    assert!(
        excluded.contains("<tr class=\"excluded\" data-key=\"calendly/ceo@acme.com\"><td>calendly</td><td><a href=\"/people/ceo@acme.com\">ceo@acme.com</a></td><td>300</td><td>reclaim-test</td><td>listed in `vars.reclaim_exclusions`</td></tr>"),
        "{excluded}"
    );
    assert!(
        excluded.contains("<tr class=\"excluded\" data-key=\"webex/vip@acme.com\"><td>webex</td><td><a href=\"/people/vip@acme.com\">vip@acme.com</a></td><td>400</td><td>reclaim-test</td><td>`reclaim_excluded` is set on the record</td></tr>"),
        "{excluded}"
    );
    service.shutdown().await.unwrap();
}

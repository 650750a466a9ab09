//! The Licenses page: per vendor, users by role and status, idle counts past each threshold (the
//! policy workflow's own included), decisions of the last 30 days, exclusions and why.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_show_vendors_idle_counts_decisions_and_exclusions() {
    let env = env_with(&[("reclaim-test.yaml", POLICY)]).await;
    let service = serve(&env, false).await;
    write(
        &service,
        "saas_users",
        json!([
            {"app": "calendly", "email": "old@acme.com", "role": "user", "status": "active", "last_activity": days_ago(100)},
            {"app": "calendly", "email": "mid@acme.com", "role": "admin", "status": "active", "last_activity": days_ago(50)},
            {"app": "calendly", "email": "new@acme.com", "role": "user", "status": "active", "last_activity": days_ago(5)},
            {"app": "calendly", "email": "ceo@acme.com", "role": "owner", "status": "active", "last_activity": days_ago(300)},
            {"app": "webex", "email": "vip@acme.com", "role": "user", "status": "active", "reclaim_excluded": true, "last_activity": days_ago(400)},
            {"app": "webex", "email": "gone@acme.com", "role": "user", "status": "deactivated", "reclaim_decision": "reclaimed",
             "reclaimed_at": days_ago(3), "reclaim_reason": "no activity for more than 45 days", "last_activity": days_ago(200)},
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
        webex.contains("<tr data-role=\"user\"><td>user</td><td>1</td><td>1</td></tr>"),
        "{webex}"
    );

    let decisions = &body[body.find("<section id=\"license-decisions\">").unwrap()..];
    assert!(
        decisions.contains("<tr class=\"decision\" data-key=\"webex/gone@acme.com\">"),
        "{decisions}"
    );
    assert!(
        decisions.contains("<a href=\"/people/gone@acme.com\">gone@acme.com</a></td><td><span class=\"badge decision-reclaimed\">reclaimed</span></td><td>no activity for more than 45 days</td>"),
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

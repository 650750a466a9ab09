//! The run page and the approvals page: what they show, the role rules (a viewer sees no button
//! and a forged form is refused), approve and reject in place with who decided, cancel, and the
//! live and offline replays.

use serde_json::{json, Value};

use super::{env_with, serve, unescape, Browser, ADMIN, OPERATOR, VIEWER};
use crate::support::Env;

/// calendly-offboard with `approval: required` on the delete.
const GATED: &str = "\
name: offboard-gated
blocks:
  begin:
    type: begin
    records: people
    on: [updated]
    rules:
      - { field: status, op: equals, value: terminated }
    next: find
  find:
    type: api
    preset: calendly.find_membership
    credential: calendly
    with:
      email: \"{{record.email}}\"
    answers: [not_found]
    outputs:
      membership: \"{{response.collection.0.uri}}\"
    next:
      - { to: remove, when: 'blocks.find.outputs.found' }
      - { to: end, when: '!blocks.find.outputs.found' }
  remove:
    type: api
    preset: calendly.remove_user_membership
    credential: calendly
    approval: required
    with:
      membership_uuid: \"{{blocks.find.outputs.membership}}\"
    save:
      calendly_status: removed
    next: end
  end:
    type: end
";

/// Starts `workflow` through the API (as an admin) and waits until it stops: the run.
async fn start(base: &str, workflow: &str, subject: Option<Value>) -> Value {
    let mut body = json!({"wait": true});
    if let Some(subject) = subject {
        body["subject"] = subject;
    }
    let response = reqwest::Client::new()
        .post(format!("{base}/api/workflows/{workflow}/runs"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let run: Value = response.json().await.unwrap();
    assert!(status == 200 || status == 202, "{status} {run}");
    run
}

async fn api_run(base: &str, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/runs/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Two members of the sandbox's Calendly (not the owner), by email.
async fn two_members(env: &Env) -> (String, String) {
    let members: Vec<_> = env
        .members()
        .await
        .into_iter()
        .filter(|m| m.2 != "owner")
        .collect();
    (members[0].0.clone(), members[1].0.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_approvals_show_the_request_and_let_an_operator_but_not_a_viewer_decide() {
    let env = env_with(&[("gated.yaml", GATED)]).await;
    let service = serve(&env, false).await;
    let mut viewer = Browser::new(&service);
    let base = viewer.base.clone();
    let (ann, bob) = two_members(&env).await;
    let first = start(
        &base,
        "offboard-gated",
        Some(json!({"email": ann, "status": "terminated"})),
    )
    .await;
    let second = start(
        &base,
        "offboard-gated",
        Some(json!({"email": bob, "status": "terminated"})),
    )
    .await;
    assert_eq!(first["status"], "waiting_approval", "{first}");
    let (first, second) = (
        first["id"].as_str().unwrap().to_owned(),
        second["id"].as_str().unwrap().to_owned(),
    );
    let membership = |run: &Value| {
        run["steps"][1]["outputs"]["membership"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned()
    };
    let first_uuid = membership(&api_run(&base, &first).await);

    // A viewer sees the waiting runs, oldest first, with the exact request, and no button.
    viewer.login(VIEWER).await;
    let page = viewer.get("/approvals").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let text = unescape(&page.body);
    let rows: Vec<&str> = text
        .split("<tr class=\"approval\" id=\"approval-")
        .skip(1)
        .map(|r| &r[..26])
        .collect();
    assert_eq!(rows, [first.as_str(), second.as_str()]);
    assert!(
        text.contains(&format!(
            "<div class=\"mono pending-line\">DELETE http://{}/calendly/organization_memberships/{first_uuid}</div>",
            env.sb.addr()
        )),
        "{text}"
    );
    assert!(text.contains(&format!("<td>{ann}</td>")));
    assert!(!text.contains("class=\"approve\""));
    assert!(!text.contains("class=\"reject\""));
    let run_page = viewer.get(&format!("/runs/{first}")).await;
    assert!(run_page
        .body
        .contains("<span class=\"badge status-waiting_approval\">waiting approval</span>"));
    for form in [
        "class=\"approve\"",
        "class=\"reject\"",
        "class=\"cancel\"",
        "class=\"replay-live\"",
    ] {
        assert!(!run_page.body.contains(form), "a viewer sees {form}");
    }
    // ... and a forged form (with the viewer's own CSRF token) is refused anyway.
    let csrf = run_page.csrf();
    let reply = viewer
        .post(
            &format!("/runs/{first}/approve"),
            &[("csrf", &csrf), ("block", "remove"), ("comment", "")],
        )
        .await;
    assert_eq!(
        (reply.status, reply.error_message()),
        (
            403,
            "the token `dana` has the role `viewer`; approving a block needs `operator`; sign in with a token that has that role".to_owned()
        )
    );
    let reply = viewer
        .post(&format!("/runs/{first}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(api_run(&base, &first).await["status"], "waiting_approval");

    // An operator approves in place, with a comment; without the CSRF token it is refused.
    let mut operator = Browser::new(&service);
    operator.login(OPERATOR).await;
    let page = operator.get("/approvals").await;
    assert!(page.body.contains(&format!(
        "<form method=\"post\" action=\"/runs/{first}/approve\" class=\"approve\">"
    )));
    let csrf = page.csrf();
    let reply = operator
        .post(
            &format!("/runs/{first}/approve"),
            &[("block", "remove"), ("back", "approvals")],
        )
        .await;
    assert_eq!(
        (reply.status, reply.error_message()),
        (403, super::csrf_refused().to_owned())
    );
    let reply = operator
        .post(
            &format!("/runs/{first}/approve"),
            &[
                ("csrf", &csrf),
                ("block", "remove"),
                ("comment", "HR ticket 7"),
                ("back", "approvals"),
            ],
        )
        .await;
    assert_eq!(
        (reply.status, reply.header("location")),
        (303, "/approvals"),
        "{}",
        reply.body
    );
    assert_eq!(api_run(&base, &first).await["status"], "succeeded");
    let reply = operator
        .post(
            &format!("/runs/{second}/reject"),
            &[
                ("csrf", &csrf),
                ("block", "remove"),
                ("comment", "still employed"),
            ],
        )
        .await;
    assert_eq!(
        (reply.status, reply.header("location").to_owned()),
        (303, format!("/runs/{second}"))
    );
    assert_eq!(api_run(&base, &second).await["status"], "failed");
    // Deciding again: the run is not waiting any more.
    let reply = operator
        .post(
            &format!("/runs/{first}/approve"),
            &[("csrf", &csrf), ("block", "remove")],
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.body);

    // Who decided and when is shown afterwards, and nothing waits any more.
    let page = operator.get("/approvals").await;
    let text = unescape(&page.body);
    assert!(text.contains("No run is waiting for an approval."));
    let decided: Vec<&str> = text.split("<tr class=\"decided ").skip(1).collect();
    assert_eq!(decided.len(), 2, "{text}");
    assert!(
        decided[0].starts_with(&format!(
            "rejected\" data-run=\"{second}\" data-block=\"remove\">"
        )),
        "{}",
        decided[0]
    );
    assert!(
        decided[0].contains("<td class=\"by\">olga</td>")
            && decided[0].contains("<td class=\"comment\">still employed</td>")
    );
    assert!(decided[1].starts_with(&format!("approved\" data-run=\"{first}\"")));
    assert!(decided[1].contains("<td class=\"comment\">HR ticket 7</td>"));

    // The run page: the timeline with the delete sent, its request and response, what it saved,
    // the decision's note, the trigger and the subject's record; finished, so not polled.
    let page = operator.get(&format!("/runs/{first}")).await;
    let text = unescape(&page.body);
    assert!(text.contains("<span class=\"badge status-succeeded\">succeeded</span>"));
    assert!(
        text.contains("<div id=\"run-live\">"),
        "a finished run is not polled"
    );
    // The waiting step, decided, then the block's own step.
    assert!(text.contains("<li class=\"step\" id=\"step-2\" data-block=\"remove\" data-status=\"waiting_approval\">"), "{text}");
    assert!(
        text.contains("<span class=\"badge status-waiting_approval\">approval decided</span>"),
        "{text}"
    );
    assert!(
        text.contains(
            "<li class=\"step\" id=\"step-3\" data-block=\"remove\" data-status=\"succeeded\">"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "DELETE http://{}/calendly/organization_memberships/{first_uuid} → 204",
            env.sb.addr()
        )),
        "{text}"
    );
    assert!(text.contains("<details class=\"request\"><summary>Request</summary>"));
    assert!(text.contains("Saved: <code>calendly_status</code> = <code>removed</code>"));
    assert!(text.contains("<div class=\"note\">approved by olga at "));
    assert!(text.contains(": HR ticket 7</div>"));
    assert!(text.contains(&format!("<pre id=\"run-record\">{{\n  \"email\": \"{ann}\",\n  \"status\": \"terminated\"\n}}</pre>")), "{text}");
    assert!(
        text.contains("<dd id=\"run-trigger\">manual (by adam)</dd>"),
        "{text}"
    );
    // The graph: each block coloured by its step, the gate marked.
    assert!(text.contains("<div class=\"graph\" id=\"run-graph\"><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"workflow-graph\" data-workflow=\"offboard-gated\""));
    assert!(text.contains("<g class=\"block kind-api gate status-succeeded\" data-block=\"remove\" data-status=\"succeeded\">"), "{text}");
    let rejected = unescape(&operator.get(&format!("/runs/{second}")).await.body);
    assert!(rejected.contains("<g class=\"block kind-api gate status-failed\" data-block=\"remove\" data-status=\"failed\">"), "{rejected}");
    assert!(
        rejected.contains("<p id=\"run-status\"><span class=\"badge status-failed\">failed</span>")
    );
    // The token never reaches a page.
    assert!(!text.contains(crate::support::TOKEN));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_run_page_replays_offline_with_its_diff_live_to_a_new_run_and_cancels() {
    let env = env_with(&[("gated.yaml", GATED)]).await;
    let service = serve(&env, false).await;
    let mut operator = Browser::new(&service);
    let base = operator.base.clone();
    operator.login(OPERATOR).await;
    let run = start(&base, "whoami", None).await;
    let id = run["id"].as_str().unwrap().to_owned();

    let page = operator.get(&format!("/runs/{id}")).await;
    assert!(page.body.contains("class=\"replay-offline\""));
    assert!(
        !page.body.contains("class=\"cancel\""),
        "a finished run has no cancel"
    );
    let csrf = page.csrf();
    let reply = operator
        .post(
            &format!("/runs/{id}/replay"),
            &[("csrf", &csrf), ("mode", "offline")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let text = unescape(&reply.body);
    assert!(
        text.contains(
            "<p id=\"replay-verdict\" class=\"diff-same\">identical to the recording</p>"
        ),
        "{text}"
    );
    for block in ["begin", "me", "end"] {
        assert!(
            text.contains(&format!(
                "<li class=\"diff-block identical\" data-block=\"{block}\">"
            )),
            "{text}"
        );
    }
    let reply = operator
        .post(
            &format!("/runs/{id}/replay"),
            &[("csrf", &csrf), ("mode", "sideways")],
        )
        .await;
    assert_eq!(
        (reply.status, reply.error_message()),
        (
            400,
            "unknown replay mode `sideways`; use `live` or `offline`".to_owned()
        )
    );
    let reply = operator
        .post(
            &format!("/runs/{id}/replay"),
            &[("csrf", &csrf), ("mode", "live")],
        )
        .await;
    assert_eq!(reply.status, 303);
    let new = reply
        .header("location")
        .trim_start_matches("/runs/")
        .to_owned();
    assert_ne!(new, id);
    let page = operator.get(&format!("/runs/{new}")).await;
    assert!(
        unescape(&page.body).contains(&format!(
            "<dt>Replay of</dt><dd><a class=\"mono\" href=\"/runs/{id}\">{id}</a>"
        )),
        "{}",
        page.body
    );

    // Cancel a waiting run; a second cancel finds it finished.
    let (ann, _) = two_members(&env).await;
    let gated = start(
        &base,
        "offboard-gated",
        Some(json!({"email": ann, "status": "terminated"})),
    )
    .await;
    let gated = gated["id"].as_str().unwrap().to_owned();
    let page = operator.get(&format!("/runs/{gated}")).await;
    assert!(page.body.contains(&format!(
        "<div id=\"run-live\" data-poll=\"/runs/{gated}/live\">"
    )));
    assert!(page.body.contains("class=\"approve\""));
    let live = operator.get(&format!("/runs/{gated}/live")).await;
    assert!(live.body.starts_with(&format!(
        "<div id=\"run-live\" data-poll=\"/runs/{gated}/live\">"
    )));
    let reply = operator
        .post(&format!("/runs/{gated}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (reply.status, reply.header("location").to_owned()),
        (303, format!("/runs/{gated}"))
    );
    assert_eq!(api_run(&base, &gated).await["status"], "cancelled");
    let reply = operator
        .post(&format!("/runs/{gated}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (reply.status, reply.error_message()),
        (
            409,
            format!("run `{gated}` has already finished: cancelled")
        )
    );

    // Unknown and malformed ids.
    let reply = operator.get("/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!(
        (reply.status, reply.error_message()),
        (404, "no run `01ARZ3NDEKTSV4RRFFQ69G5FAV`".to_owned())
    );
    let reply = operator.get("/runs/nope").await;
    assert_eq!(
        (reply.status, reply.error_message()),
        (
            400,
            "`nope` is not a run id (26 characters, as the runs page shows)".to_owned()
        )
    );
    service.shutdown().await.unwrap();
}

/// The Approvals page previews what an approved block will send by a dry run that is kept
/// nowhere: it is not a run, and `/metrics` must not count it as one started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_approval_previews_are_not_counted_as_runs_started() {
    // A workflow name no other test uses: the metrics are process-wide.
    let gated = GATED.replace("name: offboard-gated", "name: metrics-gated");
    let env = env_with(&[("gated.yaml", gated.as_str())]).await;
    let service = serve(&env, false).await;
    let mut viewer = Browser::new(&service);
    let base = viewer.base.clone();
    let (ann, _) = two_members(&env).await;
    let run = start(
        &base,
        "metrics-gated",
        Some(json!({"email": ann, "status": "terminated"})),
    )
    .await;
    assert_eq!(run["status"], "waiting_approval", "{run}");
    viewer.login(VIEWER).await;
    for _ in 0..2 {
        let page = viewer.get("/approvals").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("DELETE "), "{}", page.body);
    }
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let started = "blockyard_runs_started_total{workflow=\"metrics-gated\"} ";
    let line = text
        .lines()
        .find(|l| l.starts_with(started))
        .unwrap_or_else(|| panic!("no `{started}` in:\n{text}"));
    assert_eq!(&line[started.len()..], "1");
    service.shutdown().await.unwrap();
}

//! The Workflows pages: each loaded workflow with its trigger in words, last run and success
//! rate; a workflow's page with its graph, its schedule's next five fire times in its zone and
//! its runs; a file that does not load shows its located errors.

use serde_json::json;

use super::people::{api, GREET};
use super::{env_with, serve, unescape, Browser, VIEWER};

const NIGHTLY: &str = "\
name: nightly
description: A nightly tick in Berlin
blocks:
  begin:
    type: begin
    schedule: { cron: \"30 2 * * *\", timezone: Europe/Berlin }
    next: end
  end:
    type: end
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_list_their_triggers_runs_and_files_that_do_not_load() {
    let env = env_with(&[("greet.yaml", GREET), ("nightly.yaml", NIGHTLY)]).await;
    let service = serve(&env, false).await;
    let (status, run) = api(
        &service,
        "POST",
        "/workflows/whoami/runs",
        Some(json!({"wait": true})),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    // An edit that breaks a file after the service loaded it.
    env.write(
        "workflows/broken.yaml",
        "name: broken\nblocks:\n  begin: {type: begin, next: nowhere}\n  end: {type: end}\n",
    );
    let mut browser = Browser::new(&service);
    browser.login(VIEWER).await;

    let page = browser.get("/workflows").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = unescape(&page.body);
    for name in ["greet", "nightly", "whoami"] {
        assert!(
            body.contains(&format!("<tr class=\"workflow\" data-workflow=\"{name}\">")),
            "{body}"
        );
    }
    assert!(
        body.contains("<td class=\"trigger\"><div>Runs when a `people` record is created or updated and matches</div><div>if status equals \"active\"</div></td>"),
        "{body}"
    );
    assert!(
        body.contains("<div>Runs on the schedule `30 2 * * *` (Europe/Berlin)</div>"),
        "{body}"
    );
    assert!(
        body.contains(&format!("<a href=\"/runs/{run_id}\"><span class=\"badge status-succeeded\">succeeded</span></a>")),
        "{body}"
    );
    assert!(
        body.contains("<td class=\"success\">100% (1 of 1 finished runs succeeded)</td>"),
        "{body}"
    );
    assert!(
        body.contains("<td class=\"success\">no finished run</td>"),
        "{body}"
    );
    assert!(
        body.contains(
            "<td class=\"last\"><span class=\"muted\">no run in the last 30 days</span></td>"
        ),
        "{body}"
    );
    // The broken file, with its error located.
    let file = env
        .path()
        .join("workflows/broken.yaml")
        .display()
        .to_string();
    let problems = &body[body
        .find("<section id=\"workflow-load-errors\"")
        .expect("load errors shown")..];
    assert!(
        problems.contains(&format!("<li class=\"load-problem invalid\" data-file=\"{file}\"><span class=\"mono\">{file}</span> <strong class=\"error\">does not load</strong>")),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("<li class=\"load-error error mono\">{file}:3:")),
        "{problems}"
    );
    assert!(problems.contains("`nowhere`"), "{problems}");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_page_draws_its_graph_and_next_five_fire_times() {
    let env = env_with(&[("nightly.yaml", NIGHTLY)]).await;
    let service = serve(&env, false).await;
    let mut browser = Browser::new(&service);
    browser.login(VIEWER).await;

    let page = browser.get("/workflows/nightly").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = unescape(&page.body);
    assert!(
        body.contains("<title>Workflow nightly · blockyard</title>"),
        "{body}"
    );
    assert!(
        body.contains("<h2>Next five runs (Europe/Berlin)</h2>"),
        "{body}"
    );
    let times: Vec<&str> = body
        .split("<li class=\"fire-time\">")
        .skip(1)
        .map(|rest| &rest[..rest.find("</li>").unwrap()])
        .collect();
    assert_eq!(times.len(), 5, "{body}");
    for at in &times {
        assert!(
            at.contains(" 02:30 CET") || at.contains(" 02:30 CEST"),
            "{times:?}"
        );
    }
    // The graph, inline (not escaped).
    let graph = &page.body[page
        .body
        .find("<div class=\"graph\" id=\"workflow-graph\">")
        .expect("graph")..];
    assert!(
        graph.starts_with("<div class=\"graph\" id=\"workflow-graph\"><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"workflow-graph\" data-workflow=\"nightly\""),
        "{graph}"
    );
    assert!(graph.contains("<g class=\"block kind-begin\" data-block=\"begin\">"));
    assert!(graph.contains("<g class=\"edge next\" data-from=\"begin\" data-to=\"end\">"));
    assert!(
        body.contains("<tr><td colspan=\"5\" class=\"muted\">never run</td></tr>"),
        "{body}"
    );

    // The whoami workflow: the run it had.
    let (status, run) = api(
        &service,
        "POST",
        "/workflows/whoami/runs",
        Some(json!({"wait": true})),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    let id = run["id"].as_str().unwrap();
    let page = browser.get("/workflows/whoami").await;
    assert!(
        page.body
            .contains(&format!("<tr class=\"run\" data-run=\"{id}\">")),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<p>100% (1 of 1 finished runs succeeded)</p>"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("id=\"workflow-schedule\""),
        "{}",
        page.body
    );

    let page = browser.get("/workflows/nope").await;
    assert_eq!(page.status, 404);
    assert_eq!(
        page.error_message(),
        "no workflow `nope` is loaded; loaded: nightly, whoami"
    );
    service.shutdown().await.unwrap();
}

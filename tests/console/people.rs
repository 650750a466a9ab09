//! The People pages: the list views (search, sorting, a wrong parameter refused) and a person's
//! page (records, runs across workflows, the trigger trace), over records written through the
//! API of a real service.

use std::time::{Duration, Instant};

use blockyard::service::Service;
use serde_json::{json, Value};

use super::{env_with, serve, unescape, Browser, ADMIN, VIEWER};

/// A workflow started by an active person's creation or update: one Calendly read.
pub const GREET: &str = "\
name: greet
description: Say hello to active people
blocks:
  begin:
    type: begin
    records: people
    on: [created, updated]
    rules:
      - { field: status, op: equals, value: active }
    next: me
  me:
    type: api
    preset: calendly.current_user
    credential: calendly
    next: end
  end:
    type: end
";

/// A request to the service's API as the admin: `(status, JSON body)`.
pub async fn api(service: &Service, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{}/api{path}", service.addr());
    let request = match method {
        "POST" => client.post(url).json(&body.unwrap_or(json!({}))),
        _ => client.get(url),
    };
    let response = request.bearer_auth(ADMIN).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Writes `records` into `collection` through the API.
pub async fn write(service: &Service, collection: &str, records: Value) {
    let (status, body) = api(
        service,
        "POST",
        &format!("/records/{collection}"),
        Some(records),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Polls `GET /api{path}` until `done` holds (20 s at most).
pub async fn wait_for(service: &Service, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api(service, "GET", path, None).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out on {path}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `data-key`s of the list's rows, in order.
fn keys(body: &str) -> Vec<String> {
    body.split("<tr class=\"record\" data-key=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .collect()
}

/// A date `days` ago, as an RFC 3339 instant.
pub fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339()
}

async fn seed(service: &Service) {
    write(
        service,
        "people",
        json!([
            {"email": "ann@acme.com", "name": "Ann", "status": "inactive", "department": "Sales"},
            {"email": "bob@acme.com", "name": "Bob", "status": "terminated", "department": "IT"},
            {"email": "cy@acme.com", "name": "Cy <3", "status": "inactive", "department": "Sales"},
        ]),
    )
    .await;
    write(
        service,
        "saas_users",
        json!([
            {"app": "calendly", "email": "ann@acme.com", "role": "admin", "status": "active", "last_activity": days_ago(10)},
            {"app": "webex", "email": "ann@acme.com", "role": "user", "status": "active", "last_activity": days_ago(120)},
            {"app": "webex", "email": "bob@acme.com", "role": "user", "status": "active", "last_activity": days_ago(200)},
        ]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_lists_search_and_sort_both_collections() {
    let env = env_with(&[]).await;
    let service = serve(&env, false).await;
    seed(&service).await;
    let mut browser = Browser::new(&service);
    browser.login(VIEWER).await;

    let page = browser.get("/people").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("<table id=\"people-table\">"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<form method=\"get\" action=\"/people\" class=\"filters\" id=\"people-search\" role=\"search\">"));
    assert_eq!(
        keys(&page.body),
        ["ann@acme.com", "bob@acme.com", "cy@acme.com"]
    );
    // A person's row: their accounts with role and last activity, and their fewest idle days.
    let ann = &page.body[page.body.find("data-key=\"ann@acme.com\"").unwrap()..];
    let ann = &ann[..ann.find("</tr>").unwrap()];
    assert!(
        ann.contains("<a href=\"/people/ann@acme.com\">ann@acme.com</a>"),
        "{ann}"
    );
    assert!(ann.contains("<div class=\"account\" data-app=\"calendly\"><strong>calendly</strong>: admin · active"), "{ann}");
    assert!(
        ann.contains(
            "<div class=\"account\" data-app=\"webex\"><strong>webex</strong>: user · active"
        ),
        "{ann}"
    );
    assert!(ann.contains("<td class=\"idle\">10</td>"), "{ann}");
    // User text is escaped.
    assert!(
        page.body.contains("<td>Cy &lt;3</td>") || page.body.contains("<td>Cy &#60;3</td>"),
        "{}",
        page.body
    );

    // Search, then sort by idle days, most idle first (unknown last).
    let page = browser.get("/people?q=SALES").await;
    assert_eq!(keys(&page.body), ["ann@acme.com", "cy@acme.com"]);
    assert!(page.body.contains("2 of 3 people records"), "{}", page.body);
    let page = browser.get("/people?sort=idle_days&dir=desc").await;
    assert_eq!(
        keys(&page.body),
        ["bob@acme.com", "ann@acme.com", "cy@acme.com"]
    );
    // The current column's header turns the order around.
    assert!(
        page.body.contains("<th aria-sort=\"descending\"><a class=\"sort\" data-sort=\"idle_days\" href=\"/people?collection=people&amp;sort=idle_days&amp;dir=asc\">Idle days ▼</a></th>")
            || page.body.contains("<th aria-sort=\"descending\"><a class=\"sort\" data-sort=\"idle_days\" href=\"/people?collection=people&#38;sort=idle_days&#38;dir=asc\">Idle days ▼</a></th>"),
        "{}",
        page.body
    );

    // The SaaS users' list.
    let page = browser
        .get("/people?collection=saas_users&sort=last_activity")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<table id=\"saas-users-table\">"));
    assert_eq!(
        keys(&page.body),
        [
            "webex/bob@acme.com",
            "webex/ann@acme.com",
            "calendly/ann@acme.com"
        ]
    );
    let page = browser.get("/people?collection=saas_users&q=admin").await;
    assert_eq!(keys(&page.body), ["calendly/ann@acme.com"]);

    // A wrong parameter is refused, never ignored.
    let page = browser
        .get("/people?collection=saas_users&sort=department")
        .await;
    assert_eq!(page.status, 400);
    assert_eq!(
        page.error_message(),
        "cannot sort `saas_users` by `department`; sort by one of: email, app, role, status, last_activity, idle_days"
    );
    let page = browser.get("/people?order=email").await;
    assert_eq!(page.status, 400);
    assert_eq!(
        page.error_message(),
        "unknown query parameter `order`; the people page takes `collection`, `q`, `sort` and `dir`"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_page_shows_records_runs_and_why_workflows_did_or_did_not_run() {
    let env = env_with(&[("greet.yaml", GREET)]).await;
    let service = serve(&env, false).await;
    seed(&service).await;
    // Ann turns active: `greet` runs for her. Bob stays terminated: it does not.
    write(
        &service,
        "people",
        json!({"email": "ann@acme.com", "status": "active"}),
    )
    .await;
    write(
        &service,
        "people",
        json!({"email": "bob@acme.com", "department": "Ops"}),
    )
    .await;
    let runs = wait_for(&service, "/runs?subject=ann@acme.com", |runs| {
        runs.as_array()
            .is_some_and(|r| r.len() == 1 && r[0]["status"] == "succeeded")
    })
    .await;
    let run = runs[0]["id"].as_str().unwrap().to_owned();
    let mut browser = Browser::new(&service);
    browser.login(VIEWER).await;

    let page = browser.get("/people/Ann@Acme.com").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains("<title>Person ann@acme.com · blockyard</title>"),
        "{body}"
    );
    assert!(body.contains("<section id=\"person-record\">"));
    assert!(
        body.contains("<div class=\"record-card\" data-subject=\"people/ann@acme.com\">"),
        "{body}"
    );
    assert!(
        body.contains(
            "<div class=\"record-card\" data-subject=\"saas_users/calendly/ann@acme.com\">"
        ),
        "{body}"
    );
    assert!(body.contains("<dt>department</dt><dd>Sales</dd>"), "{body}");
    // The run, linked to its page and its workflow's.
    assert!(
        body.contains(&format!("<tr class=\"run\" data-run=\"{run}\">\n  <td class=\"mono\"><a href=\"/runs/{run}\">{run}</a></td>\n  <td><a href=\"/workflows/greet\">greet</a></td>\n  <td><span class=\"badge status-succeeded\">succeeded</span></td>")),
        "{body}"
    );
    // Why it ran: the update matched, the creation did not.
    let trace = &body[body.find("<section id=\"person-trace\">").unwrap()..];
    let entries: Vec<&str> = trace.split("<li class=\"trace-entry\">").skip(1).collect();
    assert_eq!(entries.len(), 2, "{trace}");
    assert!(
        entries[0].contains("people/ann@acme.com</span> record:updated"),
        "{}",
        entries[0]
    );
    assert!(
        entries[0].contains("<li class=\"consideration fired\" data-workflow=\"greet\"><strong>greet</strong>: run requested (queue "),
        "{}",
        entries[0]
    );
    assert!(
        unescape(entries[1]).contains("<strong>greet</strong>: no run: the conditions do not hold<pre>    after: no match\n      status equals \"active\": false (value: \"inactive\")\n</pre>"),
        "{}",
        entries[1]
    );

    // Bob: considered twice, never run.
    let page = browser.get("/people/bob@acme.com").await;
    assert!(
        page.body.contains("no run about bob@acme.com"),
        "{}",
        page.body
    );
    assert!(
        unescape(&page.body).contains("<strong>greet</strong>: no run: the conditions do not hold"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("id=\"person-not-considered\""),
        "{}",
        page.body
    );

    // Cy: her creation was considered.
    let page = browser.get("/people/cy@acme.com").await;
    assert!(
        page.body.contains("<li class=\"trace-entry\">"),
        "{}",
        page.body
    );

    // Nobody: the error page says so.
    let page = browser.get("/people/nobody@acme.com").await;
    assert_eq!(page.status, 404);
    assert_eq!(
        page.error_message(),
        "no record, run or trigger trace of `nobody@acme.com`; the People page lists everyone the service knows"
    );
    service.shutdown().await.unwrap();
}

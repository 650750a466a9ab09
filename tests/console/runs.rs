//! The runs page: every outcome's colour, filters, pages by cursor, the live fragment.

use blockyard::store::history::{
    RunId, RunMode, RunRecord, RunStatus, RunTrigger, Subject, TriggerKind,
};
use chrono::{Duration, Utc};
use serde_json::json;

use super::{env_with, serve, Browser, VIEWER};

/// A run recorded straight into the service's history.
pub fn put_run(
    service: &blockyard::service::Service,
    workflow: &str,
    status: RunStatus,
    subject: Option<&str>,
    trigger: TriggerKind,
    age: Duration,
) -> RunId {
    let created = Utc::now() - age;
    // An id of the run's creation time, as the engine makes them (ids sort by time).
    let id: RunId = ulid::Ulid::from_datetime(created.into())
        .to_string()
        .parse()
        .unwrap();
    let run = RunRecord {
        id,
        workflow: workflow.to_owned(),
        file: format!("workflows/{workflow}.yaml"),
        snapshot: "none".to_owned(),
        trigger: RunTrigger {
            kind: trigger,
            detail: None,
        },
        subject: subject.map(|email| Subject {
            collection: "people".to_owned(),
            key: email.to_owned(),
            record: json!({"email": email, "status": "active"}),
        }),
        vars: Default::default(),
        status,
        mode: RunMode::Live,
        created_at: created,
        started_at: Some(created),
        finished_at: status
            .is_finished()
            .then(|| created + Duration::milliseconds(1500)),
        replay_of: None,
        from_block: None,
        error: (status == RunStatus::Failed).then(|| "block `me` failed: 500".to_owned()),
        wake_at: None,
        pruned: false,
    };
    // A run is indexed by subject when it is first written queued or running.
    let history = service.shared().engine().history();
    history
        .put_run(&RunRecord {
            status: RunStatus::Queued,
            ..run.clone()
        })
        .unwrap();
    history.put_run(&run).unwrap();
    id
}

/// The `href` of the link with `id`, unescaped.
pub fn link(body: &str, id: &str) -> String {
    let end = body
        .find(&format!("\" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no link #{id} in {body}"));
    let start = body[..end].rfind("href=\"").unwrap() + "href=\"".len();
    super::unescape(&body[start..end])
}

/// The ids of the runs a runs page lists, in order.
fn listed(body: &str) -> Vec<String> {
    body.split("<tr class=\"run\" id=\"run-")
        .skip(1)
        .map(|rest| rest[..26].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_runs_page_colours_every_outcome_and_filters_by_workflow_outcome_subject_trigger_and_since(
) {
    let env = env_with(&[]).await;
    let service = serve(&env, false).await;
    let mut ids = Vec::new();
    for (i, status) in RunStatus::ALL.into_iter().enumerate() {
        let subject = if i % 2 == 0 {
            "ann@acme.com"
        } else {
            "bob@acme.com"
        };
        let trigger = if i % 3 == 0 {
            TriggerKind::Schedule
        } else {
            TriggerKind::Record
        };
        ids.push(put_run(
            &service,
            "whoami",
            status,
            Some(subject),
            trigger,
            Duration::hours(i as i64),
        ));
    }
    let old = put_run(
        &service,
        "gone",
        RunStatus::Succeeded,
        None,
        TriggerKind::Manual,
        Duration::days(3),
    );
    let mut browser = Browser::new(&service);
    browser.login(VIEWER).await;

    let page = browser.get("/runs").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<table id=\"runs-table\">"));
    assert!(page
        .body
        .contains("<div id=\"runs-live\" data-poll=\"/runs/live?\">"));
    // Newest first, and every status with its own class and words.
    let mut newest_first: Vec<String> = ids.iter().map(ToString::to_string).collect();
    newest_first.push(old.to_string());
    assert_eq!(listed(&page.body), newest_first);
    for status in RunStatus::ALL {
        let badge = format!(
            "<span class=\"badge status-{}\">{}</span>",
            status.name(),
            status.name().replace('_', " ")
        );
        assert!(page.body.contains(&badge), "no {badge}");
    }
    assert!(page.body.contains(
        "<span class=\"badge status-completed_with_failures\">completed with failures</span>"
    ));
    assert!(super::unescape(&page.body)
        .contains("<div class=\"error small\">block `me` failed: 500</div>"));

    let only = |page: &super::Reply, picked: &[usize]| {
        let want: Vec<String> = picked.iter().map(|i| ids[*i].to_string()).collect();
        assert_eq!(listed(&page.body), want, "{}", page.body);
    };
    let page = browser.get("/runs?workflow=gone").await;
    assert_eq!(listed(&page.body), [old.to_string()]);
    let page = browser.get("/runs?workflow=whoami&status=failed").await;
    only(&page, &[8]);
    // Subject, in any case (the index is by lowercased email).
    let page = browser.get("/runs?subject=ANN@acme.com").await;
    only(&page, &[0, 2, 4, 6, 8, 10]);
    let page = browser.get("/runs?trigger=schedule").await;
    only(&page, &[0, 3, 6, 9]);
    let page = browser.get("/runs?since=150m").await;
    only(&page, &[0, 1, 2]);
    let page = browser
        .get("/runs?subject=bob@acme.com&trigger=record")
        .await;
    only(&page, &[1, 5, 7]);
    // The filters the page was asked for are selected in its form.
    let page = browser.get("/runs?status=held&workflow=whoami").await;
    assert!(page
        .body
        .contains("<option value=\"held\" selected>held</option>"));
    assert!(page
        .body
        .contains("<option value=\"whoami\" selected>whoami</option>"));
    only(&page, &[5]);

    // Wrong filters are errors, never ignored.
    for (query, message) in [
        ("/runs?workflw=whoami", "unknown filter `workflw`: the runs page takes `workflow`, `status`, `subject`, `trigger`, `since`, `before`"),
        ("/runs?status=done", "unknown outcome `done`; use one of `queued`, `running`, `retrying`, `waiting_approval`, `waiting`, `held`, `succeeded`, `completed_with_failures`, `failed`, `cancelled`, `needs_attention`"),
        ("/runs?trigger=cron", "unknown trigger `cron`; use one of `manual`, `record`, `schedule`, `replay`"),
        ("/runs?before=42", "`before` `42` is not a run id (26 characters, as the runs page shows)"),
        ("/runs?since=yesterday", "`since` `yesterday` is neither a duration (`30m`, `24h`, `7d`) nor an RFC 3339 instant"),
    ] {
        let page = browser.get(query).await;
        assert_eq!((page.status, page.error_message()), (400, message.to_owned()), "{query}");
    }
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_runs_page_pages_by_cursor_and_only_older_pages_of_finished_runs_stop_polling() {
    let env = env_with(&[]).await;
    let service = serve(&env, false).await;
    let mut ids: Vec<RunId> = (0..120)
        .map(|i| {
            put_run(
                &service,
                "whoami",
                RunStatus::Succeeded,
                Some("ann@acme.com"),
                TriggerKind::Record,
                Duration::seconds(i),
            )
        })
        .collect();
    // Newest first is by id (ids sort by creation time).
    ids.sort();
    ids.reverse();
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let mut browser = Browser::new(&service);
    browser.login(VIEWER).await;

    for query in ["", "subject=ann@acme.com&"] {
        let first = browser.get(&format!("/runs?{query}")).await;
        assert_eq!(listed(&first.body), ids[..50]);
        assert!(!first.body.contains("id=\"runs-newest\""));
        let older = link(&first.body, "runs-older");
        let expected = format!("/runs?{}before={}", query.replace('@', "%40"), ids[49]);
        assert_eq!(older, expected);
        let second = browser.get(&older).await;
        assert_eq!(listed(&second.body), ids[50..100]);
        // An older page whose runs have all finished does not poll.
        assert!(
            second.body.contains("<div id=\"runs-live\">"),
            "{}",
            second.body
        );
        assert!(second.body.contains("id=\"runs-newest\""));
        let older = link(&second.body, "runs-older");
        let third = browser.get(&older).await;
        assert_eq!(listed(&third.body), ids[100..]);
        assert!(!third.body.contains("id=\"runs-older\""));
    }

    // The live fragment is the table alone, with the same filters.
    let live = browser.get("/runs/live?workflow=whoami").await;
    assert_eq!(live.status, 200);
    assert!(live
        .body
        .starts_with("<div id=\"runs-live\" data-poll=\"/runs/live?workflow=whoami\">"));
    assert_eq!(listed(&live.body), ids[..50]);
    assert!(!live.body.contains("<html"));
    service.shutdown().await.unwrap();
}

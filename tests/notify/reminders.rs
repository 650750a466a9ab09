//! Approval reminders under `serve`: a run waiting for approval longer than
//! `notify.remind_approvers_after` gets one reminder, from whichever process runs the reminder
//! loop when it falls due, and never a second one after a restart. Paused tokio time: the hours
//! pass at once.

use std::time::Duration;

use blockyard::config::Config;
use blockyard::http::Credentials;
use blockyard::service::{Service, ServiceConfig};
use serde_json::json;

use crate::support::Env;

/// begin → `tell` (a webhook post that needs approval) → end, reminding after an hour.
const GATED: &str = r#"name: gated
notify:
  credential: alerts
  on: []
  remind_approvers_after: 1h
  reminder_text: "{{run.workflow}} for {{record.email}} waits for {{run.blocks}} since {{run.waiting_since}}"
blocks:
  begin:
    type: begin
    next: tell
  tell:
    type: api
    preset: webhook.post
    credential: alerts
    approval: required
    with:
      payload: {text: "approved"}
    next: end
  end:
    type: end
"#;

fn service_config(env: &Env) -> ServiceConfig {
    let config = Config::load(&env.path().join("blockyard.yaml")).unwrap();
    ServiceConfig {
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        poll: Duration::from_millis(200),
        ..ServiceConfig::new(
            env.path().join("workflows"),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    }
}

/// Sleeps `minutes` of (paused) time in one-minute steps, so each loop runs as it would.
async fn pass(minutes: u64) {
    for _ in 0..minutes {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiting_run_is_reminded_once_after_the_set_time_and_not_again_after_a_restart() {
    let env = Env::seeded(0).await;
    let url = env.sb.webhook_url("reminders-SECRET");
    let config = env.path().join("blockyard.yaml");
    let text = std::fs::read_to_string(&config).unwrap()
        + format!("  alerts: {{vendor: webhook, auth: url, url: \"{url}\"}}\n").as_str();
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    let file = env.write("workflows/gated.yaml", GATED);

    // The run stops to wait for approval in another process (the CLI), which schedules the
    // reminder in the store and exits: a restart before it falls due does not lose it.
    let run = env.json(&[
        "run",
        &file.display().to_string(),
        "--record",
        "email=ann@acme.com",
        "--json",
    ]);
    assert_eq!(run["status"], "waiting_approval", "{run}");
    let id = run["id"].as_str().unwrap().to_owned();

    let service = Service::start(service_config(&env)).await.unwrap();
    pass(50).await;
    assert!(env.sb.webhooks().is_empty(), "not before the hour");
    pass(15).await;
    let received = env.sb.webhooks();
    assert_eq!(received.len(), 1, "{received:?}");
    let text = received[0].body["text"].as_str().unwrap();
    assert!(
        text.starts_with("gated for ann@acme.com waits for `tell` since "),
        "{text}"
    );
    pass(180).await;
    assert_eq!(env.sb.webhooks().len(), 1, "one reminder per wait");
    service.shutdown().await.unwrap();

    // A new process on the same data dir: the reminder was sent, so it is not sent again.
    let service = Service::start(service_config(&env)).await.unwrap();
    pass(180).await;
    assert_eq!(env.sb.webhooks().len(), 1, "not again after a restart");
    service.shutdown().await.unwrap();

    // The run still waits; approving it runs the block (its post is the second message). The
    // sandbox is served by this runtime, so the CLI runs beside it, not blocking it.
    let command = env.command(&["approve", &id, "tell", "--json"]);
    let out = tokio::task::spawn_blocking(move || {
        let mut command = command;
        command.output().unwrap()
    })
    .await
    .unwrap();
    let (code, stdout, stderr) = (
        out.status.code().unwrap_or(-1),
        crate::support::stdout(&out),
        crate::support::stderr(&out),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let received = env.sb.webhooks();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].body, json!({"text": "approved"}));
}

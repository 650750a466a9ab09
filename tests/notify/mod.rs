//! Notifications against the sandbox's sinks: `webhook.post` sends the rendered JSON to the
//! credential's secret URL (and a dry run and an offline replay send nothing); the URL appears in
//! no history record, output or file of the data dir.

use serde_json::json;

use crate::support::{self, Env};

mod mail;
mod reminders;

/// A `webhook` credential named `alerts` whose secret URL is a sandbox sink, added to `env`'s
/// config; returns the URL.
fn add_webhook(env: &Env) -> String {
    let url = env.sb.webhook_url("T0001/B0002/hook-SECRET-77f1");
    let config = env.path().join("blockyard.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!("  alerts: {{vendor: webhook, auth: url, url: \"{url}\"}}\n");
    std::fs::write(&config, text).unwrap();
    url
}

const ALERT: &str = r#"name: alert
blocks:
  begin:
    type: begin
    next: tell
  tell:
    type: api
    preset: webhook.post
    credential: alerts
    with:
      payload:
        text: "{{record.email}} leaves on {{record.last_day}}"
        tags: ["offboarding"]
    next: end
  end:
    type: end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_block_sends_the_rendered_json_and_its_url_stays_secret() {
    let env = Env::seeded(0).await;
    let url = add_webhook(&env);
    let file = env.write("alert.yaml", ALERT);
    let file = file.display().to_string();
    let args = [
        "run",
        &file,
        "--record",
        "email=ann@acme.com",
        "--record",
        "last_day=2026-12-31",
    ];

    // A dry run shows the message and sends nothing.
    let (code, stdout, stderr) = env.run(&[&args[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("tell   planned    POST [redacted]"),
        "{stdout}"
    );
    let planned = env.json(&[&args[..], &["--dry-run", "--json"]].concat());
    assert_eq!(planned["steps"][1]["status"], "planned", "{planned}");
    assert_eq!(
        planned["steps"][1]["request"]["body"],
        json!({"text": "ann@acme.com leaves on 2026-12-31", "tags": ["offboarding"]})
    );
    assert!(env.sb.webhooks().is_empty(), "a dry run sent nothing");

    let run = env.json(&[&args[..], &["--json"]].concat());
    assert_eq!(run["status"], "succeeded", "{run}");
    let received = env.sb.webhooks();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/hooks/T0001/B0002/hook-SECRET-77f1");
    assert_eq!(
        received[0].body,
        json!({"text": "ann@acme.com leaves on 2026-12-31", "tags": ["offboarding"]})
    );
    // History keeps the rendered message, and the URL redacted.
    let id = run["id"].as_str().unwrap();
    let shown = env.json(&["history", "show", id, "--json"]);
    let step = &shown["steps"][1];
    assert_eq!(step["block"], "tell");
    assert_eq!(step["request"]["method"], "POST");
    assert_eq!(step["request"]["url"], "[redacted]");
    assert_eq!(
        step["request"]["body"],
        json!({"text": "ann@acme.com leaves on 2026-12-31", "tags": ["offboarding"]})
    );

    // Offline replay answers from the recording: identical, nothing sent.
    let (code, stdout, stderr) = env.run(&["replay", id, "--offline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("identical to the recording"), "{stdout}");
    assert_eq!(env.sb.webhooks().len(), 1, "offline replay sent nothing");

    // The secret part of the URL is nowhere in the data dir or in what was printed.
    let (_, text, _) = env.run(&["history", "show", id]);
    assert!(!text.contains("hook-SECRET-77f1"), "{text}");
    assert!(!shown.to_string().contains("hook-SECRET-77f1"), "{shown}");
    assert_eq!(
        support::files_containing(&env.data_dir(), "hook-SECRET-77f1"),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!stdout.contains(&url));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_lists_received_webhooks_under_sandbox_webhooks() {
    let env = Env::seeded(0).await;
    let url = env.sb.webhook_url("x");
    let http = reqwest::Client::new();
    let answer = http
        .post(&url)
        .body(r#"{"text":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "ok");
    let listed = support::get_json(format!("http://{}/_sandbox/webhooks", env.sb.addr())).await;
    assert_eq!(
        listed,
        json!([{"path": "/hooks/x", "body": {"text": "hi"}}])
    );
}

#[test]
fn a_url_credential_without_a_url_is_refused() {
    let err = blockyard::config::Config::parse(
        std::path::Path::new("b.yaml"),
        "credentials:\n  alerts: {vendor: webhook, auth: url}\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "b.yaml:2:3: credential `alerts` uses `auth: url` but has no `url`; add it"
    );
}

/// The exact request of `webhook.post`: a POST of the payload to the secret URL, with no
/// `Authorization` header; a Slack-style refusal (400, `invalid_payload` as text) is the error.
#[tokio::test]
async fn webhook_post_sends_its_exact_request_and_reports_a_refusal() {
    use blockyard::config::{Config, CredentialName};
    use blockyard::http::{CallOptions, Client, Credentials};
    use blockyard::preset::{PresetId, PresetRegistry};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/T1/B1/good-SECRET-1a2b"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/services/T1/B1/bad-SECRET-3c4d"))
        .respond_with(ResponseTemplate::new(400).set_body_string("invalid_payload"))
        .mount(&server)
        .await;
    let uri = server.uri();
    let text = format!(
        "credentials:\n  good: {{vendor: webhook, auth: url, url: \"{uri}/services/T1/B1/good-SECRET-1a2b\"}}\n  bad: {{vendor: webhook, auth: url, url: \"{uri}/services/T1/B1/bad-SECRET-3c4d\"}}\n  broken: {{vendor: webhook, auth: url, url: \"not a url SECRET-5e6f\"}}\n"
    );
    let config = Config::parse(std::path::Path::new("b.yaml"), &text).unwrap();
    let client = Client::new(
        std::sync::Arc::new(PresetRegistry::builtin()),
        Credentials::from_config(&config),
    )
    .unwrap();
    let id = PresetId::parse("webhook.post").unwrap();
    let inputs = json!({"payload": {"text": "hello"}});
    let inputs = inputs.as_object().unwrap();
    let options = CallOptions::default();
    let names = ["good", "bad", "broken"].map(CredentialName::new);
    let call = |n: usize| client.call(&id, &names[n], inputs, &options);
    let sent = call(0).await.unwrap();
    assert_eq!(sent.response.status, 200);
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/services/T1/B1/good-SECRET-1a2b");
    assert_eq!(request.url.query(), None);
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&request.body).unwrap(),
        json!({"text": "hello"})
    );

    let err = call(1).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "`webhook.post`: `webhook` answered 400: invalid_payload"
    );
    let err = call(2).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the `url` of credential `broken` is not an http(s) URL; set it to the webhook address the service gave (it is a secret, so it is not shown)"
    );
    let rendered = client.render(&id, &names[0], inputs).unwrap();
    let shown = client.redactor().request(&rendered);
    assert_eq!(shown.url, "[redacted]");
    assert_eq!(
        shown.headers,
        [
            ("Accept".to_owned(), "application/json".to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned())
        ],
        "no Authorization header is sent, so none is shown"
    );
}

/// A webhook block whose address the sandbox does not serve (404): the run fails.
const FAILING: &str = r#"name: failing
notify:
  credential: alerts
  text: "{{run.workflow}} failed for {{record.email}} ({{run.status}}): {{run.error}}"
blocks:
  begin:
    type: begin
    next: tell
  tell:
    type: api
    preset: webhook.post
    credential: nowhere
    with:
      payload: {text: "hello"}
    next: end
  end:
    type: end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_sends_its_notify_alert_once_and_a_dry_run_none() {
    let env = Env::seeded(0).await;
    add_webhook(&env);
    let config = env.path().join("blockyard.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!(
        "  nowhere: {{vendor: webhook, auth: url, url: \"http://{}/nowhere-SECRET-9a9a\"}}\n",
        env.sb.addr()
    );
    std::fs::write(&config, text).unwrap();
    let file = env.write("failing.yaml", FAILING).display().to_string();

    let (code, stdout, stderr) =
        env.run(&["run", &file, "--record", "email=ann@acme.com", "--dry-run"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(env.sb.webhooks().is_empty(), "a dry run alerts nobody");

    let run = env.json(&["run", &file, "--record", "email=ann@acme.com", "--json"]);
    assert_eq!(run["status"], "failed", "{run}");
    let received = env.sb.webhooks();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].path, "/hooks/T0001/B0002/hook-SECRET-77f1");
    assert_eq!(
        received[0].body,
        json!({"text": "failing failed for ann@acme.com (failed): block `tell` failed: `webhook.post`: not found (status 404)"})
    );
    let id = run["id"].as_str().unwrap();
    let (code, stdout, stderr) = env.run(&["replay", id, "--offline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        env.sb.webhooks().len(),
        1,
        "an offline replay alerts nobody"
    );
    assert_eq!(
        support::files_containing(&env.data_dir(), "SECRET"),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn bad_notify_keys_are_compile_errors() {
    let dir = tempfile::tempdir().unwrap();
    let body = "blocks:\n  begin:\n    type: begin\n    next: end\n  end:\n    type: end\n";
    let cases = [
        (
            "notify:\n  credential: alerts\n  channel: ops\n",
            "checked 1 workflow: 0 valid, 1 invalid (1 error)\nDIR/w.yaml:4:3: error: unknown key `channel` in `notify`\n",
        ),
        (
            "notify:\n  credential: alerts\n  on: [failed, cancelled]\n",
            "checked 1 workflow: 0 valid, 1 invalid (1 error)\nDIR/w.yaml:4:16: error: invalid `notify.on[1]`: unknown value `cancelled`, expected `failed` or `needs_attention`\n",
        ),
        (
            "notify:\n  on: [failed]\n",
            "checked 1 workflow: 0 valid, 1 invalid (1 error)\nDIR/w.yaml:2:1: error: missing key `credential` in `notify`\n",
        ),
        (
            "notify:\n  credential: alerts\n  text: \"{{#if}}\"\n",
            "checked 1 workflow: 0 valid, 1 invalid (1 error)\nDIR/w.yaml:4:9: error: invalid template in `notify.text`: invalid handlebars syntax (template column 8); write expressions as `{{name}}` or `<<name>>`\n",
        ),
    ];
    for (notify, expected) in cases {
        let file = dir.path().join("w.yaml");
        std::fs::write(&file, format!("name: w\n{notify}{body}")).unwrap();
        let out = support::blockyard(&["validate", &file.display().to_string()]);
        let shown = support::stderr(&out) + support::stdout(&out).as_str();
        assert_eq!(
            shown.replace(&dir.path().display().to_string(), "DIR"),
            expected
        );
    }
}

/// The config's `notify:` alerts for a workflow without one of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configs_notify_alerts_for_a_workflow_without_one() {
    let env = Env::seeded(0).await;
    add_webhook(&env);
    let config = env.path().join("blockyard.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!(
        "  nowhere: {{vendor: webhook, auth: url, url: \"http://{}/nowhere\"}}\nnotify:\n  credential: alerts\n  on: [failed]\n",
        env.sb.addr()
    );
    std::fs::write(&config, text).unwrap();
    let workflow = FAILING.replace(
        "notify:\n  credential: alerts\n  text: \"{{run.workflow}} failed for {{record.email}} ({{run.status}}): {{run.error}}\"\n",
        "",
    );
    let file = env.write("failing.yaml", &workflow).display().to_string();
    let run = env.json(&["run", &file, "--record", "email=ann@acme.com", "--json"]);
    assert_eq!(run["status"], "failed", "{run}");
    let id = run["id"].as_str().unwrap();
    let received = env.sb.webhooks();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0].body,
        json!({"text": format!("blockyard: run {id} of `failing` ended failed: block `tell` failed: `webhook.post`: not found (status 404)")})
    );
}

#[test]
fn a_bad_notify_in_the_config_is_refused() {
    let parse = |text: &str| {
        blockyard::config::Config::parse(std::path::Path::new("b.yaml"), text)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        parse("notify:\n  credential: alerts\n  text: \"{{#if}}\"\n"),
        "b.yaml:3:9: invalid template in `notify.text`: invalid handlebars syntax (template column 8); write expressions as `{{name}}` or `<<name>>`"
    );
    assert_eq!(
        parse("notify:\n  credential: alerts\n  when: failed\n"),
        "b.yaml:3:3: notify: unknown field `when`, expected one of `credential`, `on`, `text`, `to`, `from`, `subject`, `remind_approvers_after`, `reminder_text`"
    );
}

//! Advanced mode: a block's `request:` is what is sent, shown, recorded and replayed, and a
//! method that writes makes the block a write.

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{blocks, Env, TOKEN};

/// `webex.delete_user`, but addressed at the record's `other_id` with an extra query parameter.
const DELETE_OTHER: &str = "name: delete-other\nblocks:\n  begin:\n    type: begin\n    records: people\n    on: [updated]\n    next: delete\n  delete:\n    type: api\n    preset: webex.delete_user\n    credential: webex\n    request:\n      path: \"/people/{{record.other_id}}\"\n      query:\n        reason: \"leaver {{inputs.webex_user_id}}\"\n    next: end\n  end:\n    type: end\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overridden_path_and_query_are_what_is_sent_and_recorded() {
    let env = Env::seeded(0).await;
    let file = env.write("delete-other.yaml", DELETE_OTHER);
    let (code, stdout, stderr) = env.run(&[
        "run",
        &file.display().to_string(),
        "--record",
        "email=leaver@example.com",
        "--record",
        "webex_user_id=PRESET-ID",
        "--record",
        "other_id=OTHER-ID",
        "--json",
    ]);
    // The sandbox has no such person: 404, the block fails; what matters is where it went.
    assert_eq!(code, 1, "{stdout}{stderr}");
    let requests = env.sb.requests();
    let sent: Vec<(String, String, Option<String>)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.query.clone()))
        .collect();
    assert_eq!(
        sent,
        [(
            "DELETE".to_owned(),
            "/webex/v1/people/OTHER-ID".to_owned(),
            Some("reason=leaver%20PRESET-ID".to_owned())
        )]
    );
    let run: Value = serde_json::from_str(&stdout).unwrap();
    let request = &run["steps"][1]["request"];
    assert_eq!(request["method"], "DELETE");
    assert!(
        request["url"]
            .as_str()
            .unwrap()
            .ends_with("/webex/v1/people/OTHER-ID"),
        "{request}"
    );
    assert_eq!(request["query"]["reason"], "leaver PRESET-ID");
}

/// A read preset whose method is overridden to DELETE.
const READ_AS_DELETE: &str = "name: read-as-delete\nblocks:\n  begin:\n    type: begin\n    next: details\n  details:\n    type: api\n    preset: webex.get_user_details\n    credential: webex\n    with:\n      webex_user_id: P1\n    request:\n      method: DELETE\n    next: end\n  end:\n    type: end\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_method_on_a_read_preset_is_a_write_a_dry_run_holds_back() {
    let env = Env::seeded(0).await;
    let file = env.write("read-as-delete.yaml", READ_AS_DELETE);
    let (code, stdout, stderr) =
        env.run(&["run", &file.display().to_string(), "--dry-run", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        blocks(&run),
        [
            ("begin", "succeeded"),
            ("details", "planned"),
            ("end", "succeeded")
        ]
    );
    assert_eq!(run["steps"][1]["request"]["method"], "DELETE");
    assert_eq!(run["steps"][1]["write"], true);
    assert!(env.sb.requests().is_empty(), "{:?}", env.sb.requests());
}

/// Every part overridden, against wiremock: method and body replaced, query and headers merged
/// over the preset's (the override wins, `null` removes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_part_of_a_request_can_be_overridden() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/v2/Users/U1/extra"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "U1"})))
        .mount(&server)
        .await;
    let env = Env::seeded(0).await;
    env.write(
        "blockyard.yaml",
        &format!(
            "data_dir: data\ncredentials:\n  scim:\n    vendor: scim\n    auth: bearer\n    token: {TOKEN}\n    base_url: {}/v2\n    rate_limit_per_minute: 0\n",
            server.uri()
        ),
    );
    // `scim.find_user` is `GET /Users?filter=userName eq "…"`, with `user_name` required: the
    // override replaces the only part that used it, so it is not required any more.
    let workflow = "name: everything\nblocks:\n  begin:\n    type: begin\n    next: find\n  find:\n    type: api\n    preset: scim.find_user\n    credential: scim\n    request:\n      method: put\n      path: \"/Users/{{vars.user}}/extra\"\n      query:\n        filter: \"userName eq \\\"{{vars.user}}\\\"\"\n        count: \"7\"\n      headers:\n        Accept: null\n        X-Audit: \"by blockyard\"\n      body:\n        active: false\n        who: \"{{vars.user}}\"\n    next: end\n  end:\n    type: end\n";
    let file = env.write("everything.yaml", workflow);
    let (code, stdout, stderr) = env.run(&[
        "run",
        &file.display().to_string(),
        "--var",
        "user=U1",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method.as_str(), "PUT");
    assert_eq!(request.url.path(), "/v2/Users/U1/extra");
    assert_eq!(
        request.url.query(),
        Some("filter=userName%20eq%20%22U1%22&count=7")
    );
    assert_eq!(request.headers.get("x-audit").unwrap(), "by blockyard");
    // The preset's `Accept: application/scim+json` is gone (reqwest sends its own default), and
    // the body the preset did not have is sent with the vendor's media type.
    assert_eq!(request.headers.get("accept").unwrap(), "*/*");
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/scim+json"
    );
    assert_eq!(
        request.headers.get("authorization").unwrap(),
        &format!("Bearer {TOKEN}")
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body, serde_json::json!({"active": false, "who": "U1"}));
    // The write is recorded as it was sent.
    let run: Value = serde_json::from_str(&stdout).unwrap();
    let step = &run["steps"][1];
    assert_eq!(step["write"], true);
    assert_eq!(step["request"]["method"], "PUT");
    assert_eq!(
        step["request"]["query"],
        serde_json::json!({"filter": "userName eq \"U1\"", "count": "7"})
    );
    assert_eq!(step["request"]["body"], body);
}

/// Oomnitza's card writes `<<webex_user_id>>`: a bare name reads the subject record's field.
const BARE_NAMES: &str = "name: bare-names\nblocks:\n  begin:\n    type: begin\n    records: people\n    on: [updated]\n    next: details\n  details:\n    type: api\n    preset: webex.get_user_details\n    credential: webex\n    with:\n      webex_user_id: \"<<webex_user_id>>\"\n    save:\n      seen_as: \"{{email}} / {{response.id}}\"\n    next: end\n  end:\n    type: end\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_name_reads_the_subject_records_field() {
    let env = Env::seeded(0).await;
    let file = env.write("bare-names.yaml", BARE_NAMES);
    let (code, stdout, stderr) = env.run(&["validate", &file.display().to_string()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (_, stdout, stderr) = env.run(&[
        "run",
        &file.display().to_string(),
        "--record",
        "email=someone@example.com",
        "--record",
        "webex_user_id=BARE-ID",
        "--json",
    ]);
    let sent: Vec<String> = env
        .sb
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(sent, ["GET /webex/v1/people/BARE-ID"], "{stdout}{stderr}");
    // A misspelt bare name is the record's business: it fails the run, naming the field.
    let misspelt = BARE_NAMES.replace("<<webex_user_id>>", "<<webex_userid>>");
    let file = env.write("misspelt.yaml", &misspelt);
    let (code, stdout, _) = env.run(&[
        "run",
        &file.display().to_string(),
        "--record",
        "email=someone@example.com",
        "--json",
    ]);
    assert_eq!(code, 1, "{stdout}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        run["steps"][1]["error"],
        "cannot render `with` `webex_user_id`: `record.webex_userid` is not defined"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_shows_what_an_added_override_changes() {
    let env = Env::seeded(0).await;
    let details = BARE_NAMES
        .replace("<<webex_user_id>>", "{{record.webex_user_id}}")
        .replace("{{email}}", "{{record.email}}");
    let file = env.write("details.yaml", &details);
    let run = env.json(&[
        "run",
        &file.display().to_string(),
        "--record",
        "email=someone@example.com",
        "--record",
        "webex_user_id=P1",
        "--json",
    ]);
    let id = run["id"].as_str().unwrap();
    let sent = env.sb.requests().len();
    let changed = details.replace(
        "    save:\n",
        "    request:\n      method: DELETE\n      query:\n        callerId: \"{{inputs.webex_user_id}}\"\n    save:\n",
    );
    let file = env.write("changed.yaml", &changed);
    let (code, stdout, stderr) = env.run(&[
        "replay",
        id,
        "--offline",
        "--workflow",
        &file.display().to_string(),
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("    request method: \"GET\" → \"DELETE\"\n    request query.callerId: (absent) → \"P1\"\n"),
        "{stdout}"
    );
    assert_eq!(env.sb.requests().len(), sent, "offline replay sent nothing");
}

/// A crash left the overridden DELETE `sending`: the preset's probe reads the person the preset
/// addresses (`webex_user_id`), not the one the override deleted, so resume must not trust it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_does_not_trust_the_preset_probe_after_a_path_override() {
    use blockyard::exec::{RunMode, RunRecord, RunStatus, RunTrigger, StepRecord, Subject};
    use blockyard::store::history::{RunId, StepStatus};

    let env = Env::seeded(0).await;
    let plain = DELETE_OTHER.replace(
        "\n      query:\n        reason: \"leaver {{inputs.webex_user_id}}\"",
        "",
    );
    let file = env.write("delete-other.yaml", &plain);
    {
        let engine = env.engine();
        let prepared = engine.prepare_file(&file).unwrap();
        let history = engine.history();
        let id = RunId::new();
        let now = chrono::Utc::now();
        let record = serde_json::json!({
            "email": "leaver@example.com",
            "webex_user_id": "PRESET-ID",
            "other_id": "OTHER-ID"
        });
        history
            .put_run(&RunRecord {
                id,
                workflow: "delete-other".to_owned(),
                file: file.display().to_string(),
                snapshot: prepared.snapshot.clone(),
                trigger: RunTrigger::manual(),
                subject: Some(Subject {
                    collection: "people".to_owned(),
                    key: "leaver@example.com".to_owned(),
                    record,
                }),
                vars: serde_json::Map::new(),
                status: RunStatus::Running,
                mode: RunMode::Live,
                created_at: id.created_at(),
                started_at: Some(now),
                finished_at: None,
                replay_of: None,
                from_block: None,
                error: None,
                wake_at: None,
                pruned: false,
            })
            .unwrap();
        let begin = StepRecord::new(id, 0, "begin", "begin", StepStatus::Succeeded, now);
        let mut delete = StepRecord::new(id, 1, "delete", "api", StepStatus::Sending, now);
        delete.preset = Some("webex.delete_user".to_owned());
        delete.write = true;
        delete.inputs = Some(serde_json::json!({"webex_user_id": "PRESET-ID"}));
        history.put_steps(&[&begin, &delete]).unwrap();
        history.durable().await.unwrap();
    }
    let (code, stdout, stderr) = env.run(&["resume"]);
    assert_eq!(code, 4, "needs attention: {stdout}{stderr}");
    assert!(
        stdout.contains("  needs_attention: block `delete`: the write `webex.delete_user` may or may not have reached the vendor before the process stopped, and its `request.path` overrides the preset's, so the preset's probe cannot check it; check it at the vendor, then run the workflow again\n"),
        "{stdout}"
    );
    assert!(env.sb.requests().is_empty(), "{:?}", env.sb.requests());
}

//! Offline replay is faithful: it runs as of the recorded run (`run.*`, `now`, `days_ago`, edge
//! conditions' `days_since`), answers every recorded call (role retrieval's activity read, a
//! merge's read), and needs only the data dir; an explicit `--config` overrides the recorded setup.

use blockyard::exec::RunId;
use blockyard::store::history::{StepRecord, StepStatus};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::workflow;
use crate::support::{self, Env, TOKEN};

/// A role retrieval (with the activity read) that saves what the time helpers and `run.*` give,
/// then goes on to `later` only when 2020-01-01 is a year ago or more.
const AS_OF: &str = r#"name: as-of
blocks:
  begin:
    type: begin
    records: people
    on: [updated]
    next: role
  role:
    type: role_retrieval
    preset: calendly.user_role
    credential: calendly
    with:
      email: "{{record.email}}"
    save:
      checked_at: "{{now}}"
      week_before: "{{days_ago 7}}"
      run_started_at: "{{run.started_at}}"
      run_id: "{{run.id}}"
    next:
      - { to: end, when: 'days_since("2020-01-01") < 365' }
      - { to: later, when: 'days_since("2020-01-01") >= 365' }
  later:
    type: api
    preset: calendly.current_user
    credential: calendly
    next: end
  end:
    type: end
"#;

/// A run recorded in February 2020 (made by moving a run made now there, with what it would have
/// rendered then) replays identical: its templates and edge conditions are evaluated as of the
/// recorded instants, and its activity read is answered with what the recorded step learned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_renders_and_decides_as_of_the_recorded_run() {
    let env = Env::seeded(5).await;
    let (email, _, _) = env.member().await;
    let file = env.write("as-of.yaml", AS_OF);
    let record = format!("email={email}");
    let run = env.json(&[
        "run",
        &file.display().to_string(),
        "--record",
        &record,
        "--json",
    ]);
    assert_eq!(run["status"], "succeeded", "{run}");
    // Today, 2020-01-01 is more than a year ago.
    assert_eq!(support::blocks(&run)[2], ("later", "succeeded"));
    let original: RunId = run["id"].as_str().unwrap().parse().unwrap();

    // The same run as it went on 2020-02-03: every instant then, `later` skipped, the saves as
    // they render then.
    let at: DateTime<Utc> = "2020-02-03T04:05:06.789Z".parse().unwrap();
    let moved = RunId::new();
    {
        let engine = env.engine();
        let history = engine.history();
        let mut record = history.run(original).unwrap().unwrap();
        record.id = moved;
        record.started_at = Some(at);
        record.finished_at = Some(at);
        let mut steps = history.steps(original).unwrap();
        for step in &mut steps {
            step.run = moved;
            step.started_at = at;
            step.finished_at = Some(at);
            if step.block == "role" {
                assert!(
                    step.saved["last_activity"].is_string(),
                    "the activity read found the member's last activity: {:?}",
                    step.saved
                );
                step.saved
                    .insert("checked_at".into(), json!("2020-02-03T04:05:06Z"));
                step.saved
                    .insert("week_before".into(), json!("2020-01-27T04:05:06Z"));
                let started = "2020-02-03T04:05:06.789+00:00";
                step.saved.insert("run_started_at".into(), json!(started));
                step.saved.insert("run_id".into(), json!(moved.to_string()));
            }
            if step.block == "later" {
                let mut skipped =
                    StepRecord::new(moved, step.seq, "later", "api", StepStatus::Skipped, at);
                skipped.finished_at = Some(at);
                *step = skipped;
            }
        }
        history.put_run(&record).unwrap();
        history
            .put_steps(&steps.iter().collect::<Vec<_>>())
            .unwrap();
        history.durable().await.unwrap();
    }

    let sent = env.sb.requests().len();
    let (code, stdout, stderr) = env.run(&["replay", &moved.to_string(), "--offline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("\nidentical to the recording\n"),
        "{stdout}"
    );
    assert_eq!(env.sb.requests().len(), sent, "offline replay sent nothing");
}

/// Webex Update User reads the person and PUTs the merge back; the recording keeps the PUT, and
/// the offline replay merges into what the recorded PUT sent, as the live call merged into the
/// read: identical, and a changed value shows as the one difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_answers_a_merge_read_from_the_recording() {
    let env = Env::seeded(5).await;
    let people = support::get_json(format!("{}/people", env.sb.webex_url())).await;
    let person = &people["items"][0];
    let id = person["id"].as_str().unwrap();
    let run = env.json(&[
        "run",
        &workflow("webex-update.yaml"),
        "--record",
        &format!("webex_user_id={id}"),
        "--record",
        "name=Ada Renamed",
        "--record",
        "first_name=Ada",
        "--record",
        "last_name=Renamed",
        "--json",
    ]);
    assert_eq!(run["status"], "succeeded", "{run}");
    let body = &run["steps"][1]["request"]["body"];
    assert_eq!(body["displayName"], "Ada Renamed");
    assert!(
        body["emails"].is_array(),
        "the read's fields were merged: {body}"
    );
    let run = run["id"].as_str().unwrap();

    let (code, stdout, stderr) = env.run(&["replay", run, "--offline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("\nidentical to the recording\n"),
        "{stdout}"
    );

    let changed = std::fs::read_to_string(support::workflow("webex-update.yaml"))
        .unwrap()
        .replace(
            "first_name: \"{{record.first_name}}\"",
            "first_name: \"{{upper record.first_name}}\"",
        );
    let file = env.write("webex-update-upper.yaml", &changed);
    let (code, stdout, stderr) = env.run(&[
        "replay",
        run,
        "--offline",
        "--workflow",
        &file.display().to_string(),
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("    ")).collect();
    assert_eq!(
        lines,
        ["    request body.firstName: \"Ada\" → \"ADA\""],
        "{stdout}"
    );
}

/// An offline replay needs no config: it renders with the run's recorded vars and the base URLs
/// its requests used, and needs no secret. An explicit `--config` renders with that config's
/// credentials and vars instead (a run tested against a new setup). A live replay sends requests,
/// so without the credentials it is refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_needs_no_config_and_an_explicit_one_overrides_the_recorded_setup() {
    let env = Env::seeded(5).await;
    let record = format!("email={}", env.member().await.0);
    let run = env.json(&[
        "run",
        &workflow("calendly-offboard.yaml"),
        "--record",
        &record,
        "--record",
        "status=terminated",
        "--json",
    ]);
    let id = run["id"].as_str().unwrap();
    let sent = env.sb.requests().len();
    // Another directory, with no `blockyard.yaml`: only the data dir.
    let elsewhere = tempfile::tempdir().unwrap();
    let data = env.data_dir().display().to_string();
    let replay = |args: &[&str]| {
        let out = support::blockyard_in(elsewhere.path(), args);
        let code = out.status.code().unwrap_or(-1);
        (code, support::stdout(&out), support::stderr(&out))
    };
    let (code, stdout, stderr) = replay(&["replay", id, "--offline", "--data-dir", &data]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("\nidentical to the recording\n"),
        "{stdout}"
    );

    // A config whose Calendly credential points elsewhere, with a secret nobody set, and another
    // organization in its vars.
    let base = env.sb.calendly_url();
    let org = env.sb.organization_uri();
    let config = std::fs::read_to_string(env.path().join("blockyard.yaml")).unwrap();
    let moved = config
        .replace(
            &format!("base_url: {base},"),
            "base_url: http://127.0.0.1:9/calendly,",
        )
        .replace(
            &format!("calendly_organization: {org}"),
            "calendly_organization: https://api.calendly.com/organizations/MOVED",
        )
        .replace(TOKEN, "\"${BLOCKYARD_TEST_TOKEN_NEVER_SET}\"");
    assert_ne!(moved, config);
    let moved = env.write("moved.yaml", &moved);
    let moved = moved.display().to_string();
    let (code, stdout, stderr) = replay(&[
        "replay",
        id,
        "--offline",
        "--data-dir",
        &data,
        "--config",
        &moved,
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let line = format!(
        "    request url: \"{base}/organization_memberships\" → \"http://127.0.0.1:9/calendly/organization_memberships\""
    );
    assert!(stdout.contains(&line), "{stdout}");
    let line = format!(
        "    request query.organization: \"{org}\" → \"https://api.calendly.com/organizations/MOVED\""
    );
    assert!(stdout.contains(&line), "{stdout}");
    assert!(stdout.contains(&format!(
        "rendered with the credentials and vars of `{moved}`"
    )));
    assert_eq!(env.sb.requests().len(), sent, "offline replay sent nothing");

    // Live, with no config: refused, and no run is recorded.
    let runs = env
        .json(&["history", "list", "--json"])
        .as_array()
        .unwrap()
        .len();
    let (code, stdout, stderr) = replay(&["replay", id, "--data-dir", &data]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: a live replay of run `{id}` sends requests, but credential `calendly` (block `find`) is not configured: define it under `credentials:` in blockyard.yaml (or the file `--config` names), or replay offline, which sends nothing and needs no config\n"
        )
    );
    assert_eq!(
        env.json(&["history", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        runs
    );
    assert_eq!(env.sb.requests().len(), sent);
}

/// Replays run `id` offline (`--json`): exit 0, identical to the recording, and the replayed run's
/// status and blocks.
fn replays_identical(env: &Env, id: &str) -> (String, Vec<(String, String)>) {
    let (code, stdout, stderr) = env.run(&["replay", id, "--offline", "--json"]);
    let replay: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}{stderr}"));
    assert_eq!(replay["identical"], true, "{:#}", replay["blocks"]);
    assert_eq!(code, 0, "{stderr}");
    let blocks = support::blocks(&replay["replay"])
        .into_iter()
        .map(|(b, s)| (b.to_owned(), s.to_owned()))
        .collect();
    (
        replay["replay"]["status"].as_str().unwrap().to_owned(),
        blocks,
    )
}

fn owned(blocks: &[(&str, &str)]) -> Vec<(String, String)> {
    blocks
        .iter()
        .map(|(b, s)| ((*b).to_owned(), (*s).to_owned()))
        .collect()
}

/// A run still waiting for approval replays offline as it is: the gated block waits for approval
/// (not rendered, not answered), and the replay stops there, identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_of_a_run_waiting_for_approval_waits_where_it_waits() {
    let env = Env::seeded(5).await;
    let users = support::get_json(format!("{}/Users?count=1", env.sb.scim_url())).await;
    let email = users["Resources"][0]["userName"].as_str().unwrap();
    let asked = env.json(&[
        "run",
        &workflow("scim-provision.yaml"),
        "--record",
        &format!("email={email}"),
        "--record",
        "name=Leaving Person",
        "--record",
        "status=terminated",
        "--json",
    ]);
    assert_eq!(asked["status"], "waiting_approval", "{asked:#}");
    let recorded = support::blocks(&asked);
    let id = asked["id"].as_str().unwrap();
    let sent = env.sb.requests().len();
    let (status, blocks) = replays_identical(&env, id);
    assert_eq!(status, "waiting_approval");
    assert_eq!(blocks, owned(&recorded));
    assert!(
        blocks.contains(&("delete".to_owned(), "waiting_approval".to_owned())),
        "{blocks:?}"
    );
    let (_, stdout, _) = env.run(&["replay", id, "--offline", "--json"]);
    let replay: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let steps = replay["replay"]["steps"].as_array().unwrap();
    let delete = steps.iter().find(|s| s["block"] == "delete").unwrap();
    assert_eq!(
        delete["note"],
        format!("the recorded run waits for approval here (`blockyard approve {id} delete`); an offline replay stops here too")
    );
    assert!(delete.get("request").is_none(), "{delete}");
    assert_eq!(env.sb.requests().len(), sent, "offline replay sent nothing");
}

/// A run held by the mass-change guard replays offline as held: the held write is not rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_of_a_held_run_is_held_where_it_was() {
    let env = Env::seeded(10).await;
    let text = std::fs::read_to_string(support::workflow("calendly-offboard.yaml")).unwrap();
    let guarded = text.replace(
        "guard: { max_writes: 50, per: 1h }",
        "guard: { max_writes: 1, per: 1h }",
    );
    assert_ne!(guarded, text);
    let file = env.write("calendly-offboard.yaml", &guarded);
    let file = file.display().to_string();
    let leavers: Vec<String> = env
        .members()
        .await
        .into_iter()
        .filter(|m| m.2 != "owner")
        .map(|m| m.0)
        .take(2)
        .collect();
    let mut runs = Vec::new();
    for email in &leavers {
        runs.push(env.json(&[
            "run",
            &file,
            "--record",
            &format!("email={email}"),
            "--record",
            "status=terminated",
            "--json",
        ]));
    }
    assert_eq!(runs[0]["status"], "succeeded", "{:#}", runs[0]);
    assert_eq!(runs[1]["status"], "held", "{:#}", runs[1]);
    let recorded = support::blocks(&runs[1]);
    assert!(recorded.iter().any(|b| b.1 == "held"), "{recorded:?}");
    let (status, blocks) = replays_identical(&env, runs[1]["id"].as_str().unwrap());
    assert_eq!(status, "held");
    assert_eq!(blocks, owned(&recorded));
}

/// A run retrying after a transient failure replays offline as retrying: the block's request is
/// rendered (a change to it shows) and answered by the recorded transient failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_of_a_retrying_run_retries_where_it_did() {
    let env = Env::start(blockyard::sandbox::SandboxConfig {
        seed_users: 2,
        fail_rate: 1.0,
        ..Default::default()
    })
    .await;
    let file = env.write(
        "offboard.yaml",
        "\
name: offboard
blocks:
  begin: {type: begin, records: people, on: [updated], next: details}
  details:
    type: api
    preset: webex.get_user_details
    credential: webex
    retry: {max_attempts: 1}
    next: delete
    on_failure: end
  delete: {type: api, preset: webex.delete_user, credential: webex, next: end}
  end: {type: end}
",
    );
    let run = env.json(&[
        "run",
        &file.display().to_string(),
        "--record",
        "email=leaver@example.com",
        "--record",
        "webex_user_id=P1",
        "--json",
    ]);
    assert_eq!(run["status"], "retrying", "{run:#}");
    let recorded = support::blocks(&run);
    let (status, blocks) = replays_identical(&env, run["id"].as_str().unwrap());
    assert_eq!(status, "retrying");
    assert_eq!(blocks, owned(&recorded));
}

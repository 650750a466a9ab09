//! Runs do what they say: manual runs respect the begin block, runs of one subject are ordered
//! under `serve`, a cancel of a parked run is immediate, resume recovers what a probed write saved,
//! `history list` shows each run's mode, and runs queued by an import are visible.

use std::path::PathBuf;
use std::time::Duration;

use blockyard::http::Credentials;
use blockyard::sandbox::SandboxConfig;
use blockyard::service::{Service, ServiceConfig};
use serde_json::{json, Value};

use crate::support::{self, Api, Env, WHOAMI};

const TOKEN: &str = crate::support::API_TOKEN;

/// A sandbox seeded with 5 users that takes `latency` to answer each vendor request.
async fn slow(latency: Duration) -> Env {
    Env::start(SandboxConfig {
        seed_users: 5,
        latency,
        ..SandboxConfig::default()
    })
    .await
}

fn shipped(name: &str) -> String {
    support::workflow(name).display().to_string()
}

/// `env`'s `workflows/` dir, with the given files (`(name, text)`).
fn workflows(env: &Env, files: &[(&str, &str)]) -> PathBuf {
    let dir = env.path().join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

async fn serve(env: &Env) -> Service {
    let config = env.config();
    Service::start(ServiceConfig {
        token: Some(TOKEN.to_owned()),
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        poll: Duration::from_millis(100),
        ..ServiceConfig::new(
            env.path().join("workflows"),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    })
    .await
    .unwrap()
}

fn error(status: u16, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"status": status, "message": message}}),
    )
}

fn instant(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not an instant: {value}"))
        .parse()
        .unwrap()
}

/// The status of a run's last step for `block`.
fn step_status<'a>(run: &'a Value, block: &str) -> &'a str {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s["block"] == block)
        .and_then(|s| s["status"].as_str())
        .unwrap_or("(no step)")
}

// ---------------------------------------------------------------------------------------------
// `history list` shows the mode

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_list_shows_whether_a_run_was_live_a_dry_run_or_a_replay() {
    let env = Env::seeded(1).await;
    let file = env.write("whoami.yaml", WHOAMI);
    let file = file.to_str().unwrap();
    let live = env.json(&["run", file, "--json"]);
    let dry = env.json(&["run", file, "--dry-run", "--json"]);
    let live_id = live["id"].as_str().unwrap().to_owned();
    let replayed = env.json(&["replay", &live_id, "--json"]);
    for run in [&live, &dry, &replayed] {
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let (code, stdout, stderr) = env.run(&["history", "list"]);
    assert_eq!(code, 0, "{stderr}");
    let line = |run: &Value, mode: &str, suffix: &str| {
        let created: chrono::DateTime<chrono::Utc> = instant(&run["created_at"]);
        format!(
            "{}  {}  succeeded         {mode:7}  whoami                    -{suffix}",
            run["id"].as_str().unwrap(),
            created.format("%Y-%m-%d %H:%M:%S"),
        )
    };
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            line(&replayed, "replay", &format!("  (replay of {live_id})")),
            line(&dry, "dry_run", ""),
            line(&live, "live", ""),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Manual runs respect the begin block

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_for_a_subject_the_begin_block_does_not_match_is_refused_unless_forced() {
    let env = Env::seeded(5).await;
    let email = env.member().await.0;
    let sent = env.sb.requests().len();
    let record = format!("email={email}");
    let offboard = shipped("calendly-offboard.yaml");
    let args = [
        "run",
        &offboard,
        "--record",
        &record,
        "--record",
        "status=active",
        "--dry-run",
    ];
    let (code, stdout, stderr) = env.run(&args);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (
            2,
            "",
            format!(
                "error: `calendly-offboard` does not start for `people/{email}`: no run: the conditions do not hold\n    after: no match\n      status equals \"terminated\": false (value: \"active\")\n      email not_empty: true (value: \"{email}\")\nrun it anyway with `--force`\n"
            )
            .as_str()
        )
    );
    assert_eq!(
        env.sb.requests().len(),
        sent,
        "the refused run sent nothing"
    );
    let (_, listed, _) = env.run(&["history", "list"]);
    assert_eq!(listed, "no runs\n");

    // The words are `triggers why`'s, for a `when:` too.
    let gated = env.write(
        "gated.yaml",
        "name: gated\nblocks:\n  begin:\n    type: begin\n    records: people\n    on: [updated]\n    when: 'record.department == \"Sales\"'\n    next: end\n  end:\n    type: end\n",
    );
    let (code, _, stderr) = env.run(&[
        "run",
        gated.to_str().unwrap(),
        "--record",
        &record,
        "--record",
        "department=Support",
    ]);
    assert_eq!(
        (code, stderr),
        (
            2,
            format!("error: `gated` does not start for `people/{email}`: no run: the conditions do not hold\n    after: no match\n      when `record.department == \"Sales\"`: false\nrun it anyway with `--force`\n")
        )
    );

    // `--force` runs it: the dry run plans the DELETE.
    let mut forced = args.to_vec();
    forced.extend(["--force", "--json"]);
    let (code, stdout, stderr) = env.run(&forced);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(step_status(&run, "remove"), "planned", "{run:#}");

    // A subject that matches runs without `--force`.
    let (code, stdout, stderr) = env.run(&[
        "run",
        &offboard,
        "--record",
        &record,
        "--record",
        "status=terminated",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_of_a_records_workflow_without_a_subject_is_refused() {
    let env = Env::seeded(1).await;
    let (code, stdout, stderr) = env.run(&["run", &shipped("calendly-offboard.yaml")]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (
            2,
            "",
            "error: `calendly-offboard` runs on a `people` record (its begin block says `records: people`) and none was given; give it with `--record email=...` or `--record-file FILE.json`\n"
        )
    );
    // `--force` does not make up a subject.
    let (code, _, _) = env.run(&["run", &shipped("calendly-offboard.yaml"), "--force"]);
    assert_eq!(code, 2);
    assert!(env.sb.requests().is_empty(), "{:?}", env.sb.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_a_run_the_begin_block_does_not_match_unless_forced() {
    let env = Env::seeded(5).await;
    let offboard = std::fs::read_to_string(support::workflow("calendly-offboard.yaml")).unwrap();
    workflows(&env, &[("calendly-offboard.yaml", &offboard)]);
    let email = env.member().await.0;
    let service = serve(&env).await;
    let api = Api::new(&service);
    // The stored record says active; the subject given names only the key.
    let (status, _) = api
        .post(
            "/records/people",
            json!({"email": email, "status": "active"}),
        )
        .await;
    assert_eq!(status, 200);
    let path = "/workflows/calendly-offboard/runs";
    assert_eq!(
        api.post(path, json!({"subject": {"email": email}})).await,
        error(
            409,
            &format!("`calendly-offboard` does not start for `people/{email}`: no run: the conditions do not hold\n    after: no match\n      status equals \"terminated\": false (value: \"active\")\n      email not_empty: true (value: \"{email}\")\nsend `\"force\": true` to run it anyway")
        )
    );
    assert_eq!(
        api.post(path, json!({})).await,
        error(
            400,
            "`calendly-offboard` runs on a `people` record (its begin block says `records: people`) and none was given; send it as `\"subject\": {\"email\": ...}`"
        )
    );
    let (_, runs) = api.get("/runs").await;
    assert_eq!(runs, json!([]));
    assert!(env.writes().is_empty());

    let (status, run) = api
        .post(
            path,
            json!({"subject": {"email": email}, "force": true, "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(step_status(&run, "remove"), "succeeded");
    service.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Cancel of a run waiting for approval

/// begin → `delete` (a SCIM delete that needs approval) → end.
const GATED_DELETE: &str = "name: gated-delete
blocks:
  begin:
    type: begin
    records: people
    on: [updated]
    next: delete
  delete:
    type: api
    preset: scim.delete_user
    credential: scim
    approval: required
    with:
      scim_user_id: \"{{record.scim_user_id}}\"
    next: end
  end:
    type: end
";

async fn scim_user(env: &Env) -> (String, String) {
    let users = support::get_json(format!("{}/Users?count=1", env.sb.scim_url())).await;
    let user = &users["Resources"][0];
    (
        user["userName"].as_str().unwrap().to_owned(),
        user["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_cancels_a_run_waiting_for_approval_at_once_and_it_cannot_be_approved() {
    let env = Env::seeded(5).await;
    workflows(&env, &[("gated-delete.yaml", GATED_DELETE)]);
    let (email, scim_id) = scim_user(&env).await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let (status, run) = api
        .post(
            "/workflows/gated-delete/runs",
            json!({"subject": {"email": email, "scim_user_id": scim_id}, "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "waiting_approval", "{run:#}");
    let id = run["id"].as_str().unwrap().to_owned();

    let (status, cancelled) = api.post(&format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled:#}");
    assert_eq!(
        cancelled["error"],
        "cancelled while waiting for approval of block `delete`"
    );
    let (_, shown) = api.get(&format!("/runs/{id}")).await;
    assert_eq!(shown["status"], "cancelled", "{shown:#}");
    assert!(shown["finished_at"].is_string(), "{shown:#}");

    assert_eq!(
        api.post(&format!("/runs/{id}/blocks/delete/approve"), json!({}))
            .await,
        error(
            409,
            &format!("run `{id}` was cancelled, so block `delete` can no longer be approved or rejected; start a new run if it is still wanted")
        )
    );
    assert_eq!(
        api.post(&format!("/runs/{id}/cancel"), json!({})).await,
        error(409, &format!("run `{id}` has already finished: cancelled"))
    );
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_cancels_a_run_waiting_for_approval_and_approve_then_says_why_not() {
    let env = Env::seeded(5).await;
    let (email, scim_id) = scim_user(&env).await;
    let file = env.write("gated-delete.yaml", GATED_DELETE);
    let asked = env.json(&[
        "run",
        file.to_str().unwrap(),
        "--record",
        &format!("email={email}"),
        "--record",
        &format!("scim_user_id={scim_id}"),
        "--json",
    ]);
    assert_eq!(asked["status"], "waiting_approval", "{asked:#}");
    let id = asked["id"].as_str().unwrap();
    let (code, stdout, stderr) = env.run(&["cancel", id]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, format!("run {id} cancelled\n").as_str(), "")
    );
    let shown = env.json(&["history", "show", id, "--json"]);
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(
        shown["error"],
        "cancelled while waiting for approval of block `delete`"
    );
    // The waiting step no longer says how to approve it.
    assert_eq!(
        shown["steps"][1]["note"], "cancelled while waiting for approval",
        "{shown:#}"
    );
    let (code, _, stderr) = env.run(&["approve", id, "delete"]);
    assert_eq!(
        (code, stderr),
        (
            2,
            format!("error: run `{id}` was cancelled, so block `delete` can no longer be approved or rejected; start a new run if it is still wanted\n")
        )
    );
    assert!(env.writes().is_empty(), "{:?}", env.writes());
}

// ---------------------------------------------------------------------------------------------
// Resume recovers what a probed write saved; a save that fails after a write needs attention

/// begin → `create` (a SCIM user, saving and outputting its id) → `check` (reads it back by the
/// id `create` output) → end.
fn provision(save: &str) -> String {
    format!(
        "name: provision
blocks:
  begin:
    type: begin
    records: people
    on: [created]
    next: create
  create:
    type: api
    preset: scim.create_user
    credential: scim
    with:
      user_name: \"{{{{record.email}}}}\"
      display_name: \"{{{{record.name}}}}\"
    outputs:
      id: \"{{{{response.id}}}}\"
    save:
{save}
    next: check
    on_failure: end
  check:
    type: api
    preset: scim.get_user
    credential: scim
    with:
      scim_user_id: \"{{{{blocks.create.outputs.id}}}}\"
    next: end
  end:
    type: end
"
    )
}

/// Writes a run of `file` that a crash left with `create` `sending` for `email`.
async fn crashed_during_create(env: &Env, file: &std::path::Path, email: &str) -> String {
    use blockyard::exec::{RunMode, RunRecord, RunStatus, RunTrigger, StepRecord, Subject};
    use blockyard::store::history::{RunId, StepStatus};

    let engine = env.engine();
    let prepared = engine.prepare_file(file).unwrap();
    let history = engine.history();
    let id = RunId::new();
    let now = chrono::Utc::now();
    history
        .put_run(&RunRecord {
            id,
            workflow: "provision".to_owned(),
            file: file.display().to_string(),
            snapshot: prepared.snapshot.clone(),
            trigger: RunTrigger::manual(),
            subject: Some(Subject {
                collection: "people".to_owned(),
                key: email.to_owned(),
                record: json!({"email": email, "name": "Pat Doe"}),
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
            pruned: false,
            wake_at: None,
        })
        .unwrap();
    let begin = StepRecord::new(id, 0, "begin", "begin", StepStatus::Succeeded, now);
    let mut create = StepRecord::new(id, 1, "create", "api", StepStatus::Sending, now);
    create.preset = Some("scim.create_user".to_owned());
    create.write = true;
    create.inputs = Some(json!({"user_name": email, "display_name": "Pat Doe", "active": true}));
    history.put_steps(&[&begin, &create]).unwrap();
    history.durable().await.unwrap();
    id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_recovers_save_and_outputs_of_a_write_its_probe_found_done() {
    let env = Env::seeded(5).await;
    // The user the interrupted create made: the sandbox has it.
    let (email, scim_id) = scim_user(&env).await;
    let file = env.write(
        "provision.yaml",
        &provision("      scim_user_id: \"{{response.id}}\""),
    );
    let id = crashed_during_create(&env, &file, &email).await;
    let (code, stdout, stderr) = env.run(&["resume", &id, "--json"]);
    let resumed: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run = &resumed[0];
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let create = &run["steps"][1];
    assert_eq!(create["block"], "create");
    assert_eq!(create["outputs"], json!({"id": scim_id}), "{create:#}");
    assert_eq!(create["saved"], json!({"scim_user_id": scim_id}));
    assert_eq!(step_status(run, "check"), "succeeded");
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    let stored = env.json(&["records", "show", "people", &email, "--json"]);
    assert_eq!(stored["scim_user_id"], scim_id.as_str(), "{stored:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_needs_attention_naming_the_block_when_a_save_cannot_be_recovered() {
    let env = Env::seeded(5).await;
    let (email, _) = scim_user(&env).await;
    let file = env.write(
        "provision.yaml",
        &provision("      scim_location: \"{{headers.location}}\""),
    );
    let id = crashed_during_create(&env, &file, &email).await;
    let (_, stdout, stderr) = env.run(&["resume", &id, "--json"]);
    let resumed: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    let run = &resumed[0];
    assert_eq!(run["status"], "needs_attention", "{stdout}{stderr}");
    assert_eq!(
        run["error"],
        "block `create`: the write `scim.create_user` had taken effect before the process stopped (its probe found it), but its save and outputs cannot be recovered from the probe's answer: cannot render save `scim_location`: `headers.location` is not defined; set what it saves by hand, then run the workflow again if later blocks are still wanted"
    );
    assert_eq!(step_status(run, "check"), "(no step)");
    assert!(env.writes().is_empty(), "{:?}", env.writes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_cannot_render_after_a_live_write_needs_attention_not_the_failure_path() {
    let env = Env::seeded(1).await;
    let file = env.write(
        "provision.yaml",
        &provision("      scim_location: \"{{response.no_such_field}}\""),
    );
    let (_, stdout, stderr) = env.run(&[
        "run",
        file.to_str().unwrap(),
        "--record",
        "email=new.person@example.com",
        "--record",
        "name=New Person",
        "--json",
    ]);
    let run: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    assert_eq!(run["status"], "needs_attention", "{stdout}{stderr}");
    assert_eq!(
        run["error"],
        "block `create`: `scim.create_user` answered 201, but cannot render save `scim_location`: `response.no_such_field` is not defined; the write went through, so the run stops here instead of taking a failure path: set what it saves by hand, then run the workflow again if later blocks are still wanted"
    );
    assert_eq!(step_status(&run, "end"), "(no step)", "{run:#}");
    assert_eq!(env.writes(), ["POST /scim/v2/Users"]);
}

// ---------------------------------------------------------------------------------------------
// Runs queued by an import

/// A run for every new person with an email.
const WELCOME: &str = "name: welcome
blocks:
  begin:
    type: begin
    records: people
    on: [created]
    rules:
      - { field: email, op: not_empty }
    next: me
  me:
    type: api
    preset: calendly.current_user
    credential: calendly
    next: end
  end:
    type: end
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_says_which_runs_it_queued_and_how_they_start_and_history_lists_them() {
    let env = Env::seeded(1).await;
    workflows(&env, &[("welcome.yaml", WELCOME)]);
    env.write(
        "hr.csv",
        "email,name\nada@example.com,Ada\ngrace@example.com,Grace\n",
    );
    let (code, stdout, stderr) = env.run(&["records", "import", "people", "hr.csv"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(
        lines[..2],
        [
            "people: 2 created, 0 updated, 0 unchanged, 0 rejected",
            "2 run requests queued; `blockyard serve` on this data dir starts them (`blockyard history list --status queued` lists them):",
        ],
        "{stdout}"
    );
    let queued: Vec<String> = lines[2..]
        .iter()
        .map(|l| l.trim().split("  ").next().unwrap().to_owned())
        .collect();
    for (line, (id, email)) in lines[2..]
        .iter()
        .zip(queued.iter().zip(["ada@example.com", "grace@example.com"]))
    {
        assert_eq!(
            *line,
            format!("  {id}  welcome  people/{email}  record:created")
        );
    }

    let (code, stdout, _) = env.run(&["history", "list", "--status", "queued"]);
    assert_eq!(code, 0);
    let listed: Vec<&str> = stdout.lines().collect();
    assert_eq!(listed.len(), 2, "{stdout}");
    for (line, (id, email)) in listed.iter().zip(
        queued
            .iter()
            .rev()
            .zip(["grace@example.com", "ada@example.com"]),
    ) {
        assert!(line.starts_with(id.as_str()), "{line}");
        assert!(
            line.ends_with(&format!(
                "  queued            live     welcome                   {email}  (waiting for `blockyard serve`)"
            )),
            "{line}"
        );
    }
    let json = env.json(&["history", "list", "--status", "queued", "--json"]);
    assert_eq!(json[0]["queue_id"], queued[1].as_str(), "{json:#}");
    assert_eq!(json[0]["status"], "queued");
    assert_eq!(json[0]["workflow"], "welcome");

    // `serve` starts them, and they are runs like any other.
    let service = serve(&env).await;
    let api = Api::new(&service);
    let runs = api
        .wait_for("/runs?workflow=welcome", |runs| {
            let runs = runs.as_array().unwrap();
            runs.len() == 2 && runs.iter().all(|r| r["status"] == "succeeded")
        })
        .await;
    assert!(runs[0]["queue_id"].is_null(), "{runs:#}");
    let (_, queued_now) = api.get("/runs?status=queued").await;
    assert_eq!(queued_now, json!([]));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_list_json_shows_a_queue_entry_as_a_queued_run() {
    let env = Env::seeded(1).await;
    workflows(&env, &[("welcome.yaml", WELCOME)]);
    env.write("hr.csv", "email,name\nada@example.com,Ada\n");
    let (code, stdout, stderr) = env.run(&["records", "import", "people", "hr.csv"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let json = env.json(&["history", "list", "--json"]);
    assert_eq!(json.as_array().unwrap().len(), 1, "{json:#}");
    assert_eq!(json[0]["status"], "queued");
    assert_eq!(json[0]["subject"]["key"], "ada@example.com");
    assert_eq!(
        json[0]["trigger"],
        json!({"kind": "record", "detail": format!("people/ada@example.com created (queue {})", json[0]["queue_id"].as_str().unwrap())})
    );
}

// ---------------------------------------------------------------------------------------------
// Runs of one subject are ordered under `serve`

/// A read per person: runs on demand for any person with an email.
const LOOKUP: &str = "name: lookup
blocks:
  begin:
    type: begin
    records: people
    on: [updated]
    rules:
      - { field: email, op: not_empty }
    next: me
  me:
    type: api
    preset: calendly.current_user
    credential: calendly
    next: end
  end:
    type: end
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_two_runs_of_one_workflow_for_one_subject_never_overlap() {
    let env = slow(Duration::from_millis(400)).await;
    workflows(&env, &[("lookup.yaml", LOOKUP)]);
    let service = serve(&env).await;
    let api = Api::new(&service);
    let subject = json!({"subject": {"email": "pat@example.com"}});
    let (status, first) = api.post("/workflows/lookup/runs", subject.clone()).await;
    assert_eq!(
        (status, &first["status"]),
        (202, &json!("running")),
        "{first}"
    );
    // The second waits for the first: recorded `queued`.
    let (status, second) = api.post("/workflows/lookup/runs", subject.clone()).await;
    assert_eq!(
        (status, &second["status"]),
        (202, &json!("queued")),
        "{second}"
    );
    // A run for another subject is not held back.
    let (status, other) = api
        .post(
            "/workflows/lookup/runs",
            json!({"subject": {"email": "lee@example.com"}}),
        )
        .await;
    assert_eq!(
        (status, &other["status"]),
        (202, &json!("running")),
        "{other}"
    );
    let done = |id: &Value| {
        let path = format!("/runs/{}", id.as_str().unwrap());
        let api = &api;
        async move { api.wait_for(&path, |r| r["status"] == "succeeded").await }
    };
    let first = done(&first["id"]).await;
    let second = done(&second["id"]).await;
    done(&other["id"]).await;
    assert!(
        instant(&second["started_at"]) >= instant(&first["finished_at"]),
        "the second run started before the first finished: {first:#} {second:#}"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_status_change_during_a_run_is_evaluated_after_it_as_a_transition() {
    // `scim-provision` creates the user of a new active person; while its create is in flight,
    // HR marks the person terminated. Evaluated at once, that is no transition (the rule held
    // before and after), and the create's save does not make one: nobody would ever deprovision
    // them. Evaluated after the create run, it is one, and a second run goes for the delete.
    // Each vendor call takes a second: the change lands while the create is in flight.
    let env = slow(Duration::from_millis(1000)).await;
    let provision = std::fs::read_to_string(support::workflow("scim-provision.yaml")).unwrap();
    workflows(&env, &[("scim-provision.yaml", &provision)]);
    let service = serve(&env).await;
    let api = Api::new(&service);
    let email = "pat.doe@example.com";
    let (status, body) = api
        .post(
            "/records/people",
            json!({"email": email, "name": "Pat Doe", "status": "active"}),
        )
        .await;
    assert_eq!((status, &body["queued"]), (200, &json!(1)), "{body}");
    // The create is in flight once its intent is recorded (`sending`). Until a worker takes the
    // request, the list shows it as a queue entry, with a `queue_id` and no run `id` yet.
    let runs = api
        .wait_for(&format!("/runs?subject={email}"), |runs| {
            runs.as_array().unwrap().len() == 1 && runs[0]["id"].is_string()
        })
        .await;
    let first_id = runs[0]["id"].as_str().unwrap().to_owned();
    api.wait_for(&format!("/runs/{first_id}"), |r| {
        step_status(r, "create") == "sending"
    })
    .await;
    let (status, body) = api
        .post(
            "/records/people",
            json!({"email": email, "status": "terminated"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queued"], 0, "evaluated after the run: {body}");

    // Finished (its `find` took `on_failure` to `create`, which the run-status vocabulary may
    // report as more than `succeeded`).
    let first = api
        .wait_for(&format!("/runs/{first_id}"), |r| {
            r["finished_at"].is_string()
        })
        .await;
    assert_eq!(step_status(&first, "create"), "succeeded", "{first:#}");
    let runs = api
        .wait_for(&format!("/runs?subject={email}"), |runs| {
            runs.as_array().unwrap().len() == 2 && runs[0]["status"] == "waiting_approval"
        })
        .await;
    let second = &runs[0];
    assert!(
        second["trigger"]["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("people/{email} updated (queue ")),
        "{second:#}"
    );
    assert!(
        instant(&second["created_at"]) >= instant(&first["finished_at"]),
        "{first:#} {second:#}"
    );
    let (_, shown) = api
        .get(&format!("/runs/{}", second["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        step_status(&shown, "delete"),
        "waiting_approval",
        "{shown:#}"
    );
    assert_eq!(env.count("POST", "/Users"), 1);
    assert_eq!(env.count("DELETE", "/Users"), 0);

    // `triggers why` says the change waited for the run, then what it started.
    let (_, why) = api.get(&format!("/triggers/why?subject={email}")).await;
    let trace = why[0]["trace"].as_array().unwrap();
    let notes: Vec<&str> = trace.iter().filter_map(|e| e["note"].as_str()).collect();
    assert_eq!(
        notes,
        [
            format!("deferred: run {first_id} is in flight for this subject; the change is evaluated when it finishes"),
            format!("evaluated after run {first_id} finished"),
        ],
        "{why:#}"
    );
    service.shutdown().await.unwrap();
}

/// Leavers with an account: a run when `status` turns `terminated` for a person with a `user_id`.
const OFFBOARD_ACCOUNT: &str = "name: offboard
blocks:
  begin:
    type: begin
    records: people
    on: [updated]
    rules:
      - { field: status, op: equals, value: terminated }
      - { field: user_id, op: not_empty }
    next: end
  end:
    type: end
";

#[test]
fn a_change_while_a_run_holds_its_subject_is_evaluated_after_it_and_the_runs_own_save_at_once() {
    use blockyard::records::{
        Change, Collection, RecordKey, RecordStore, Subject, Write, WriteMode,
    };
    use blockyard::store::Store;
    use blockyard::trigger::Triggers;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let records = RecordStore::open(&store).unwrap();
    let workflow = blockyard::compile::compile_source(
        blockyard::spec::Source::new("offboard.yaml", OFFBOARD_ACCOUNT),
        &blockyard::preset::PresetRegistry::builtin(),
    )
    .unwrap();
    let triggers = Triggers::new([std::sync::Arc::new(workflow)], &serde_json::Map::new());
    let jane = Subject::new(Collection::People, RecordKey::parse("jane@acme.com"));
    let upsert = |fields: Value| Write {
        subject: jane.clone(),
        change: Change::Upsert {
            fields: fields.as_object().unwrap().clone(),
            mode: WriteMode::CreateUpdate,
        },
    };
    let now = chrono::Utc::now();
    let queued = |write: Write, by: Option<&str>| {
        records.write_as(&[write], &triggers, now, by).unwrap()[0]
            .queued
            .len()
    };
    assert_eq!(
        queued(
            upsert(json!({"email": "jane@acme.com", "status": "active"})),
            None
        ),
        0
    );

    // The run that creates her account holds her record; HR marks her terminated meanwhile.
    records.hold(&jane, "run:R1").unwrap();
    assert_eq!(queued(upsert(json!({"status": "terminated"})), None), 0);
    // The run saves the account's id: judged without HR's change (which comes after the run),
    // so no run starts while the account is still being made.
    assert_eq!(queued(upsert(json!({"user_id": "U1"})), Some("run:R1")), 0);
    // The run ends: HR's change is a transition now, and starts the offboarding once.
    let started = records.release(&jane, "run:R1", &triggers, now).unwrap();
    assert_eq!(started.len(), 1);
    let flight = records.in_flight(&jane).unwrap().unwrap();
    assert_eq!(
        flight.holders.into_iter().collect::<Vec<_>>(),
        [format!("queue:{}", started[0])]
    );
    assert!(flight.deferred.is_none());

    let trace = records.trace(&jane).unwrap();
    let notes: Vec<Option<&str>> = trace.iter().map(|e| e.note.as_deref()).collect();
    assert_eq!(
        notes,
        [
            Some("deferred: run R1 is in flight for this subject; the change is evaluated when it finishes"),
            None,
            Some("evaluated after run R1 finished"),
        ]
    );
    // The save was judged on the record without HR's change: no match before or after.
    assert!(!trace[1].considered[0].fired, "{:#?}", trace[1]);
    assert!(trace[2].considered[0].fired, "{:#?}", trace[2]);
    // Without workflows to judge them (a command that loaded none), held-back changes wait.
    records.hold(&jane, "run:R2").unwrap();
    assert_eq!(queued(upsert(json!({"status": "active"})), None), 0);
    let none = records
        .release(&jane, "run:R2", &Triggers::none(), now)
        .unwrap();
    assert!(none.is_empty());
    assert!(records
        .in_flight(&jane)
        .unwrap()
        .unwrap()
        .deferred
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_records_the_os_user_and_the_comment_of_an_approval() {
    let env = Env::seeded(5).await;
    let (email, scim_id) = scim_user(&env).await;
    let file = env.write("gated-delete.yaml", GATED_DELETE);
    let as_dana = |args: &[&str]| {
        let out = env.command(args).env("USER", "dana").output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            support::stdout(&out),
            support::stderr(&out),
        )
    };
    let (_, asked, _) = as_dana(&[
        "run",
        file.to_str().unwrap(),
        "--record",
        &format!("email={email}"),
        "--record",
        &format!("scim_user_id={scim_id}"),
        "--json",
    ]);
    let asked: serde_json::Value = serde_json::from_str(&asked).unwrap();
    assert_eq!(
        asked["trigger"],
        json!({"kind": "manual", "detail": "by dana"})
    );
    let id = asked["id"].as_str().unwrap();
    let (code, _, stderr) = as_dana(&["approve", id, "delete", "--comment", "HR ticket 4411"]);
    assert_eq!(code, 0, "{stderr}");
    let shown = env.json(&["history", "show", id, "--json"]);
    let waited = &shown["steps"][1];
    let at = waited["finished_at"].as_str().unwrap();
    assert_eq!(
        waited["note"],
        format!("approved by dana at {}Z: HR ticket 4411", &at[..19]).as_str(),
        "{shown:#}"
    );
    let (_, text, _) = env.run(&["history", "show", id]);
    assert!(text.contains("  trigger: manual (by dana)\n"), "{text}");
    assert!(
        text.contains(&format!(
            "note: approved by dana at {}Z: HR ticket 4411\n",
            &at[..19]
        )),
        "{text}"
    );
    assert!(!text.contains("blockyard approve"), "{text}");
}

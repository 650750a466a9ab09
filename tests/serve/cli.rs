//! The CLI while `blockyard serve` runs: each state command goes through the service's API (found
//! by its `serve.json` in the data dir, or named with `--server`) and gives what the same command
//! gives against the data dir once the service has stopped.

use serde_json::Value;

use super::{with_workflows, Served};
use crate::support::{Env, API_TOKEN};

/// begin → `me` (Calendly's current user, approval required) → end.
const GATED: &str = "\
name: gated
blocks:
  begin:
    type: begin
    next: me
  me:
    type: api
    preset: calendly.current_user
    credential: calendly
    approval: required
    next: end
  end:
    type: end
";

/// Runs the real binary from the env's dir with the API token and no `BLOCKYARD_SERVER`:
/// `(exit code, stdout, stderr)`.
fn cli(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env
        .command(args)
        .env("BLOCKYARD_TOKEN", API_TOKEN)
        .env_remove("BLOCKYARD_SERVER")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &(i32, String, String)) -> Value {
    serde_json::from_str(&out.1).unwrap_or_else(|_| panic!("not JSON: {out:?}"))
}

/// The id of a run printed as JSON.
fn id(run: &Value) -> String {
    run["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cli_commands_go_through_the_running_service_and_answer_as_on_the_data_dir() {
    let env = with_workflows().await;
    env.write("workflows/gated.yaml", GATED);
    env.write(
        "people.csv",
        "email,name,status\nann@acme.com,Ann,active\nbad-row\nbob@acme.com,Bob,active\n,NoKey,active\n",
    );
    let mut served = Served::start(&env, &[("BLOCKYARD_TOKEN", API_TOKEN)]);
    let start = served.read_until("serving");
    let url = format!(
        "http://{}",
        start.last().unwrap().rsplit("http://").next().unwrap()
    );

    // Where it listens, in the data dir: URL and pid, never the token.
    let announced = std::fs::read_to_string(env.data_dir().join("serve.json")).unwrap();
    let endpoint: Value = serde_json::from_str(&announced).unwrap();
    assert_eq!(endpoint["url"], url.as_str());
    assert_eq!(endpoint["pid"], served.child.id());
    assert!(!announced.contains(API_TOKEN));

    // Changes, through the service (they would fail on the lock without it).
    let import = cli(&env, &["records", "import", "people", "people.csv"]);
    let run = cli(&env, &["run", "workflows/whoami.yaml", "--json"]);
    assert_eq!(run.0, 0, "{run:?}");
    let run = json(&run);
    let dry = json(&cli(
        &env,
        &["run", "workflows/whoami.yaml", "--dry-run", "--json"],
    ));
    assert_eq!(
        (&dry["status"], &dry["mode"]),
        (&"succeeded".into(), &"dry_run".into())
    );
    let gated = cli(&env, &["run", "workflows/gated.yaml", "--json"]);
    assert_eq!(gated.0, 6, "{gated:?}");
    let gated = json(&gated);
    assert_eq!(gated["status"], "waiting_approval");
    let approved = cli(&env, &["approve", &id(&gated), "me", "--json"]);
    assert_eq!(approved.0, 0, "{approved:?}");
    let approved = json(&approved);
    assert_eq!(approved["status"], "succeeded");
    let rejected_run = json(&cli(&env, &["run", "workflows/gated.yaml", "--json"]));
    let rejected = cli(&env, &["reject", &id(&rejected_run), "me", "--json"]);
    assert_eq!(rejected.0, 1, "{rejected:?}");
    let rejected = json(&rejected);
    let cancelled_run = json(&cli(&env, &["run", "workflows/gated.yaml", "--json"]));
    let cancel = cli(&env, &["cancel", &id(&cancelled_run)]);
    assert_eq!(
        cancel,
        (
            0,
            format!("run {} cancelled\n", id(&cancelled_run)),
            String::new()
        )
    );
    let cancel_again = cli(&env, &["cancel", &id(&cancelled_run)]);
    assert_eq!(
        cancel_again,
        (
            1,
            format!("run {} already finished: cancelled\n", id(&cancelled_run)),
            String::new()
        )
    );
    let replayed = cli(&env, &["replay", &id(&run), "--json"]);
    assert_eq!(replayed.0, 0, "{replayed:?}");
    let replayed = json(&replayed);
    let deleted = cli(&env, &["records", "delete", "people", "bob@acme.com"]);
    assert_eq!(
        deleted,
        (0, "deleted people/bob@acme.com\n".to_owned(), String::new())
    );

    // Reads, through the service.
    let run_id = id(&run);
    let reads: Vec<Vec<&str>> = vec![
        vec!["history", "list"],
        vec!["history", "list", "--json", "--since", "1h"],
        vec![
            "history",
            "list",
            "--workflow",
            "gated",
            "--status",
            "cancelled",
        ],
        vec!["history", "show", &run_id],
        vec!["history", "show", &run_id, "--json"],
        vec!["records", "list", "people"],
        vec!["records", "list", "people", "--json"],
        vec!["records", "show", "people", "ann@acme.com"],
        vec!["records", "show", "people", "bob@acme.com"],
        vec!["triggers", "why", "--subject", "ann@acme.com"],
        vec!["triggers", "why", "--subject", "ann@acme.com", "--json"],
        vec!["resume"],
        vec!["history", "prune", "--older-than", "30d"],
        vec!["history", "prune", "--older-than", "30d", "--runs"],
    ];
    let through: Vec<_> = reads.iter().map(|args| cli(&env, args)).collect();
    // An offline replay adds a run (after the reads), the same both ways.
    let offline = cli(&env, &["replay", &run_id, "--offline"]);
    assert_eq!(offline.0, 0, "{offline:?}");
    // What the changes answered is what the history has.
    let shown = |run: &Value| json(&cli(&env, &["history", "show", &id(run), "--json"]));
    for change in [&run, &dry, &approved, &rejected, &replayed] {
        assert_eq!(shown(change), *change);
    }

    served.signal("TERM");
    served.read_until("stopped");
    assert_eq!(served.child.wait().unwrap().code(), Some(0));
    assert!(
        !env.data_dir().join("serve.json").exists(),
        "a clean stop leaves serve.json behind"
    );

    // The same reads against the data dir give the same answers.
    for (args, through) in reads.iter().zip(&through) {
        assert_eq!(cli(&env, args), *through, "{args:?}");
    }
    assert_eq!(cli(&env, &["replay", &run_id, "--offline"]), offline);
    // An import into a fresh data dir answers as the one through the service did.
    let fresh = cli(
        &env,
        &[
            "records",
            "import",
            "people",
            "people.csv",
            "--data-dir",
            "fresh",
        ],
    );
    assert_eq!(import, fresh);
    assert_eq!(
        import,
        (
            1,
            "people: 2 created, 0 updated, 0 unchanged, 2 rejected\n0 run requests queued\nline 3: expected 3 fields, found 1\nline 5: missing `email`\n".to_owned(),
            String::new()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cli_through_the_service_refuses_what_it_cannot_honour_and_says_which_path_it_took() {
    let env = with_workflows().await;
    let mut served = Served::start(&env, &[("BLOCKYARD_TOKEN", API_TOKEN)]);
    let start = served.read_until("serving");
    let url = format!(
        "http://{}",
        start.last().unwrap().rsplit("http://").next().unwrap()
    );
    let error = |args: &[&str]| {
        let (code, stdout, stderr) = cli(&env, args);
        assert_eq!((code, stdout.as_str()), (2, ""), "{args:?}: {stderr}");
        stderr
    };

    // A workflow file the service has not loaded, or has loaded with other content.
    env.write(
        "elsewhere.yaml",
        &crate::support::WHOAMI.replace("name: whoami", "name: elsewhere"),
    );
    assert_eq!(
        error(&["run", "elsewhere.yaml"]),
        format!("error: the service at {url} has no workflow `elsewhere` loaded (from `elsewhere.yaml`); put the file in its workflows directory (`{}`) and reload it (SIGHUP), or stop the service to run the file on the data dir\n", super::workflows(&env).canonicalize().unwrap().display())
    );
    env.write(
        "edited.yaml",
        &crate::support::WHOAMI.replace("Ask Calendly", "Ask Calendly again"),
    );
    assert_eq!(
        error(&["run", "edited.yaml"]),
        format!("error: `edited.yaml` differs from the workflow `whoami` the service at {url} has loaded (`workflows/whoami.yaml`); reload the service (SIGHUP) after editing, or run the loaded one by giving its file\n")
    );
    let run = json(&cli(&env, &["run", "workflows/whoami.yaml", "--json"]));
    assert_eq!(
        error(&["replay", &id(&run), "--workflow", "elsewhere.yaml"]),
        format!("error: the service at {url} has no workflow `elsewhere` loaded (from `elsewhere.yaml`); put the file in its workflows directory (`{}`) and reload it (SIGHUP), or stop the service to run the file on the data dir\n", super::workflows(&env).canonicalize().unwrap().display())
    );

    // Presets, config and options the service would not apply.
    std::fs::create_dir(env.path().join("presets")).unwrap();
    assert_eq!(
        error(&["history", "list", "--presets", "presets"]),
        format!("error: `--presets presets` is not the presets directory the service at {url} runs with (the shipped presets only); drop `--presets` (the service's presets apply), or stop the service to use these on the data dir\n")
    );
    let config = std::fs::read_to_string(env.path().join("blockyard.yaml")).unwrap();
    env.write("other.yaml", &config);
    assert_eq!(
        error(&["history", "list", "--config", "other.yaml"]),
        format!(
            "error: `--config other.yaml` is not the config the service at {url} runs with (`{}`); drop `--config` (the service's config applies), or stop the service to use this one on the data dir\n",
            env.path().join("blockyard.yaml").canonicalize().unwrap().display()
        )
    );
    assert_eq!(
        error(&["records", "delete", "people", "a@b.c", "--no-trigger"]),
        format!("error: `--no-trigger` cannot be used via the service at {url}: the service's workflows decide what a write starts; drop it, or stop the service to write without triggers\n")
    );
    env.write("people.csv", "email\na@b.c\n");
    assert_eq!(
        error(&["records", "import", "people", "people.csv", "--dry-run"]),
        format!("error: `--dry-run` cannot be used via the service at {url}: it reads the store, which the service holds; stop the service for a dry run\n")
    );
    assert_eq!(
        error(&["history", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]),
        format!("error: no run `01ARZ3NDEKTSV4RRFFQ69G5FAV` in the data dir of the service at {url}; `blockyard history list` shows the runs\n")
    );

    assert_eq!(
        error(&["cancel", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]),
        format!("error: no run `01ARZ3NDEKTSV4RRFFQ69G5FAV` in the data dir of the service at {url}; `blockyard history list` shows the runs\n")
    );
    assert_eq!(
        error(&["approve", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "me"]),
        format!("error: via the service at {url}: no run `01ARZ3NDEKTSV4RRFFQ69G5FAV`\n")
    );

    // A wrong token says what to set.
    let out = env
        .command(&["history", "list"])
        .env("BLOCKYARD_TOKEN", "wrong")
        .env_remove("BLOCKYARD_SERVER")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("error: via the service at {url} refused the request: the bearer token is not valid; set `BLOCKYARD_TOKEN` to the service's token\n")
    );

    served.signal("KILL");
    served.child.wait().unwrap();
    // Killed, it leaves serve.json behind: stale (its pid is gone), it is ignored.
    assert!(env.data_dir().join("serve.json").exists());
    assert_eq!(
        cli(&env, &["history", "list", "--status", "failed"]),
        (0, "no runs\n".to_owned(), String::new())
    );

    // A named service that is not there says what to do.
    let (code, stdout, stderr) = cli(&env, &["history", "list", "--server", "http://127.0.0.1:1"]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(
        stderr.starts_with("error: cannot reach the service at http://127.0.0.1:1 (error sending request for url (http://127.0.0.1:1/api/service)"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("); check that `blockyard serve` runs there, or stop naming it (`--server`, `BLOCKYARD_SERVER`, the config's `server:`; a `serve.json` it left in the data dir after a crash can be removed)\n"),
        "{stderr}"
    );
    let out = env
        .command(&["history", "list"])
        .env("BLOCKYARD_SERVER", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("error: cannot reach the service at http://127.0.0.1:1 ("),);
    env.write(
        "served.yaml",
        &format!("{config}server: http://127.0.0.1:1\n"),
    );
    let (_, _, stderr) = cli(&env, &["history", "list", "--config", "served.yaml"]);
    assert!(
        stderr.starts_with("error: cannot reach the service at http://127.0.0.1:1 ("),
        "{stderr}"
    );
    // `--data-dir` given: the data dir, not the config's service.
    let data = env.data_dir().display().to_string();
    assert_eq!(
        cli(
            &env,
            &[
                "history",
                "list",
                "--config",
                "served.yaml",
                "--data-dir",
                &data,
                "--status",
                "failed"
            ]
        ),
        (0, "no runs\n".to_owned(), String::new())
    );
    env.write("bad.yaml", &format!("{config}server: 127.0.0.1:8080\n"));
    let (_, _, stderr) = cli(&env, &["history", "list", "--config", "bad.yaml"]);
    assert_eq!(
        stderr,
        format!("error: bad.yaml:{}:9: server: `127.0.0.1:8080` is not an http(s) URL; write the address `blockyard serve` prints, `http://127.0.0.1:8080`\n", config.lines().count() + 1)
    );
    assert_eq!(
        error(&["serve", "--server", "http://127.0.0.1:1"]),
        "error: `serve` takes no `--server`: it is the service; give `--listen ADDR` for where it listens\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cli_records_import_through_the_service_sends_big_batches_in_parts_and_lists_the_runs_it_queued(
) {
    let env = with_workflows().await;
    env.write(
        "workflows/welcome.yaml",
        &crate::support::WHOAMI
            .replace("name: whoami", "name: welcome")
            .replace(
                "    type: begin\n",
                "    type: begin\n    records: people\n    on: [created]\n",
            ),
    );
    // 600 SaaS users of 2.5 KB each: a batch of 500 is more than one request may carry.
    let note = "x".repeat(2500);
    let mut users = String::from("app,email,note\n");
    for i in 0..600 {
        users.push_str(&format!("webex,user{i}@acme.com,{note}\n"));
    }
    env.write("users.csv", &users);
    env.write(
        "people.jsonl",
        "{\"email\": \"ann@acme.com\"}\n{\"email\": \"bob@acme.com\"}\n[1]\n",
    );
    let mut served = Served::start(&env, &[("BLOCKYARD_TOKEN", API_TOKEN)]);
    let start = served.read_until("serving");
    let url = format!(
        "http://{}",
        start.last().unwrap().rsplit("http://").next().unwrap()
    );

    assert_eq!(
        cli(&env, &["records", "import", "saas_users", "users.csv"]),
        (
            0,
            "saas_users: 600 created, 0 updated, 0 unchanged, 0 rejected\n0 run requests queued\n"
                .to_owned(),
            String::new()
        )
    );
    let (code, stdout, stderr) = cli(&env, &["records", "import", "people", "people.jsonl"]);
    assert_eq!((code, stderr.as_str()), (1, ""), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "people: 2 created, 0 updated, 0 unchanged, 1 rejected"
    );
    assert_eq!(
        lines[1],
        format!("2 run requests queued; the service at {url} starts them (`blockyard history list` follows them):")
    );
    for (line, email) in lines[2..4].iter().zip(["ann", "bob"]) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0].len(), 26, "{line}");
        assert_eq!(
            &fields[1..3],
            ["welcome", &format!("people/{email}@acme.com")],
            "{line}"
        );
    }
    assert_eq!(lines[4..], ["line 3: expected an object, found a list"]);
    assert_eq!(
        cli(&env, &["records", "show", "saas_users", "webex/user599@acme.com", "--json"]).1,
        format!("{{\n  \"app\": \"webex\",\n  \"email\": \"user599@acme.com\",\n  \"note\": \"{note}\"\n}}\n")
    );
    served.signal("TERM");
    served.read_until("stopped");
    served.child.wait().unwrap();
}

/// The routes the CLI uses refuse what they do not take, with the same JSON errors as the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_api_cli_routes_refuse_unknown_options_and_bad_values() {
    let env = with_workflows().await;
    let service = super::serve(&env).await;
    let api = crate::support::Api::new(&service);
    let error = |status: u16, message: &str| super::error(status, message);
    assert_eq!(
        api.post("/history/prune", serde_json::json!({})).await,
        error(400, "`POST /api/history/prune` needs `older_than` (`30d`): the payloads of runs finished longer ago are dropped")
    );
    assert_eq!(
        api.post(
            "/history/prune",
            serde_json::json!({"older_than": "a while"})
        )
        .await,
        error(
            400,
            "`older_than` `a while` is not a duration; write `30m`, `24h` or `7d`"
        )
    );
    // `null` is no body, as the OpenAPI document's optional bodies say.
    assert_eq!(
        api.post("/history/prune", serde_json::Value::Null).await,
        error(400, "`POST /api/history/prune` needs `older_than` (`30d`): the payloads of runs finished longer ago are dropped")
    );
    assert_eq!(
        api.post("/history/prune", serde_json::json!({"older": "30d"})).await,
        error(400, "unknown field `older` in the request body: `POST /api/history/prune` takes `older_than`, `runs`")
    );
    assert_eq!(
        api.post("/history/prune", serde_json::json!({"older_than": "30d"}))
            .await,
        (200, serde_json::json!({"runs": 0, "steps": 0}))
    );
    assert_eq!(
        api.get("/runs?since=yesterday").await,
        error(400, "`since` `yesterday` is neither a duration (`30m`, `24h`, `7d`) nor an RFC 3339 instant")
    );
    assert_eq!(
        api.get("/runs?since=2h").await,
        (200, serde_json::json!([]))
    );
    // Durations longer ago than a date can be are refused, not a panic and a dropped connection.
    assert_eq!(
        api.get("/runs?since=999999999d").await,
        error(400, "`since` `999999999d` reaches back further than a date can; write a shorter duration or an RFC 3339 instant")
    );
    assert_eq!(
        api.post(
            "/history/prune",
            serde_json::json!({"older_than": "999999999d"})
        )
        .await,
        error(
            400,
            "`older_than` `999999999d` reaches back further than a date can; write a shorter duration"
        )
    );
    assert_eq!(
        api.get("/service?verbose=1").await,
        error(
            400,
            "unknown query parameter `verbose`: `GET /api/service` takes no query parameters"
        )
    );
    assert_eq!(
        api.get("/records/staff").await,
        error(
            404,
            "no collection `staff`; the collections are `people` and `saas_users`"
        )
    );
    assert_eq!(
        api.post(
            "/records/people/batch",
            serde_json::json!([{"key": "a@b.c", "felds": {}}])
        )
        .await,
        error(422, "failed to deserialize the JSON body into the target type: [0].felds: unknown field `felds`, expected `key` or `fields` at line 1 column 23")
    );
    assert_eq!(
        api.post(
            "/resume",
            serde_json::json!({"run": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
        )
        .await,
        error(404, "no run `01ARZ3NDEKTSV4RRFFQ69G5FAV`")
    );
    assert_eq!(
        api.post("/resume", serde_json::json!({})).await,
        (200, serde_json::json!({"resumed": [], "left": []}))
    );
    let (status, deleted) = api
        .send(
            api.client
                .delete(format!("{}/records/people/a@b.c", api.base)),
        )
        .await;
    assert_eq!(
        (status, deleted),
        (
            200,
            serde_json::json!({"subject": "people/a@b.c", "outcome": "not_found", "queued": []})
        )
    );
    service.shutdown().await.unwrap();
}

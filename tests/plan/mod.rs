//! `blockyard plan`: the real binary over 1,000 seeded people, its counts checked against what
//! live runs of the same people then do (the sandbox's request log).

use std::sync::Arc;

use blockyard::exec::RunRequest;
use blockyard::store::history::{StepStatus, Subject};
use serde_json::{json, Value};

use crate::support::{self, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_over_1000_people_counts_exactly_what_live_runs_then_send() {
    let env = Env::seeded(60).await;
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    std::fs::copy(
        support::workflow("calendly-offboard.yaml"),
        env.path().join("workflows/calendly-offboard.yaml"),
    )
    .unwrap();
    let members: Vec<String> = env
        .members()
        .await
        .into_iter()
        .filter(|m| m.2 != "owner")
        .map(|m| m.0)
        .take(40)
        .collect();
    assert_eq!(members.len(), 40);
    // 40 leavers Calendly has, 10 it does not, 950 people staying (10 of them Calendly members).
    let mut csv = String::from("email,status\n");
    for email in &members {
        csv.push_str(&format!("{email},terminated\n"));
    }
    for i in 0..10 {
        csv.push_str(&format!("ghost{i}@nowhere.test,terminated\n"));
    }
    for i in 0..950 {
        csv.push_str(&format!("person{i:04}@acme.test,active\n"));
    }
    env.write("people.csv", &csv);
    let (code, _, stderr) = env.run(&["records", "import", "people", "people.csv", "--no-trigger"]);
    assert_eq!(code, 0, "{stderr}");

    let before = env.sb.requests().len();
    let plan = env.json(&["plan", "workflows/calendly-offboard.yaml", "--json"]);
    assert_eq!(plan["records"], 1000, "{plan}");
    assert_eq!(plan["matching"], 50);
    assert_eq!(plan["excluded"], 0);
    assert_eq!(
        plan["writes"],
        json!([{"preset": "calendly.remove_user_membership", "vendor": "calendly", "method": "DELETE", "destructive": true, "count": 40}])
    );
    assert_eq!(plan["destructive"], 40);
    assert_eq!(plan["outcomes"], json!({"succeeded": 50}));
    // Reads were sent (one lookup per match), writes never.
    assert_eq!(env.sb.requests().len() - before, 50);
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    let planned: Vec<String> = plan["people"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["writes"].as_array().unwrap().is_empty())
        .map(|r| r["subject"].as_str().unwrap().to_owned())
        .collect();
    let mut leavers = members.clone();
    leavers.sort();
    assert_eq!(planned, leavers);

    // The table, as a person reads it.
    let (code, stdout, stderr) = env.run(&["plan", "workflows/calendly-offboard.yaml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(
            "`calendly-offboard` would start for 50 of 1000 people now (0 more excluded).\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("writes (40 destructive):\n      40  DELETE calendly.remove_user_membership  (destructive)\n"), "{stdout}");
    let row = |subject: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{subject} ")))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        row(&leavers[0]),
        [
            leavers[0].as_str(),
            "succeeded",
            "DELETE",
            "calendly.remove_user_membership"
        ]
    );
    assert_eq!(
        row("ghost0@nowhere.test"),
        ["ghost0@nowhere.test", "succeeded", "none"]
    );

    // `validate` with the data dir warns past the config's `match_warning` share (5% here).
    let (code, stdout, stderr) = env.run(&["validate", "workflows/", "--data-dir", "data"]);
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    let (_, _, stderr) = env.run(&["validate", "workflows/"]);
    assert!(stderr.starts_with("records matched: not checked (give `--data-dir DIR` to check how many current records each workflow would start for)\n"), "{stderr}");
    let config = std::fs::read_to_string(env.path().join("blockyard.yaml")).unwrap();
    env.write("blockyard.yaml", &format!("{config}\nmatch_warning: 4%\n"));
    let (code, stdout, stderr) = env.run(&["validate", "workflows/", "--data-dir", "data"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "workflows/calendly-offboard.yaml: warning: workflow `calendly-offboard` would start for 50 of 1,000 people now (more than the 4% `match_warning`); check its begin rule and the records: `blockyard plan workflows/calendly-offboard.yaml` shows whom and which writes\n"
    );

    // `serve` says the same when it loads the workflows.
    {
        use std::io::{BufRead, BufReader};
        let mut child = env
            .command(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--workflows",
                "workflows",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut before_serving = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.starts_with("serving ") {
                break;
            }
            before_serving.push(line);
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        let warning = "workflow `calendly-offboard` would start for 50 of 1,000 people now (more than the 4% `match_warning`); check its begin rule and the records: `blockyard plan workflows/calendly-offboard.yaml` shows whom and which writes";
        assert!(
            before_serving.iter().any(|l| l.contains(warning)),
            "{before_serving:#?}"
        );
    }

    // Now for real: each planned person's live run sends exactly the planned writes.
    let engine = env.engine();
    let prepared = engine
        .prepare_file(&env.path().join("workflows/calendly-offboard.yaml"))
        .unwrap();
    let mut sent_by: Vec<String> = Vec::new();
    for row in plan["people"].as_array().unwrap() {
        let key = row["subject"].as_str().unwrap();
        let subject = Subject {
            collection: "people".to_owned(),
            key: key.to_owned(),
            record: json!({"email": key, "status": "terminated"}),
        };
        let outcome = engine
            .run(&Arc::clone(&prepared), RunRequest::manual(Some(subject)))
            .await
            .unwrap();
        assert_eq!(outcome.run.status.name(), row["status"].as_str().unwrap());
        if outcome
            .steps
            .iter()
            .any(|s| s.write && s.status == StepStatus::Succeeded)
        {
            sent_by.push(key.to_owned());
        }
    }
    sent_by.sort();
    assert_eq!(sent_by, planned);
    let deletes: Vec<Value> = env.writes().into_iter().map(Value::String).collect();
    assert_eq!(deletes.len(), 40, "{deletes:?}");
    assert!(deletes
        .iter()
        .all(|w| w.as_str().unwrap().starts_with("DELETE ")));
    drop(engine);

    // Offline, the same plan from the recorded runs, with nothing sent at all; a person without
    // a recorded run says so.
    env.write("late.csv", "email,status\nlate@acme.test,terminated\n");
    let (code, _, stderr) = env.run(&["records", "import", "people", "late.csv", "--no-trigger"]);
    assert_eq!(code, 0, "{stderr}");
    let before = env.sb.requests().len();
    let offline = env.json(&[
        "plan",
        "workflows/calendly-offboard.yaml",
        "--json",
        "--offline",
    ]);
    assert_eq!(env.sb.requests().len(), before, "offline sends nothing");
    assert_eq!(offline["matching"], 51, "{offline}");
    assert_eq!(offline["writes"], plan["writes"]);
    assert_eq!(offline["outcomes"], json!({"succeeded": 50, "failed": 1}));
    let late = offline["people"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"] == "late@acme.test")
        .unwrap();
    assert_eq!(
        late["error"],
        "block `find` failed: offline: block `find` did not call the vendor in the recorded run, so there is no recorded answer"
    );
}

/// The figure in BENCHMARKS.md: `plan` (the real binary, a debug or release build as run) over
/// 10,000 people of whom 1,000 match, each a dry run whose lookup the sandbox answers.
/// `cargo test --release --test lib plan::plan_over_10000 -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn plan_over_10000_people_measured() {
    let env = Env::seeded(60).await;
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    std::fs::copy(
        support::workflow("calendly-offboard.yaml"),
        env.path().join("workflows/calendly-offboard.yaml"),
    )
    .unwrap();
    let mut csv = String::from("email,status\n");
    for i in 0..10_000 {
        let status = if i % 10 == 0 { "terminated" } else { "active" };
        csv.push_str(&format!("person{i:05}@acme.test,{status}\n"));
    }
    env.write("people.csv", &csv);
    let (code, _, stderr) = env.run(&["records", "import", "people", "people.csv", "--no-trigger"]);
    assert_eq!(code, 0, "{stderr}");
    let started = std::time::Instant::now();
    let plan = env.json(&["plan", "workflows/calendly-offboard.yaml", "--json"]);
    let elapsed = started.elapsed();
    assert_eq!(plan["matching"], 1000);
    println!(
        "plan over {} records, {} matching: {:.2}s",
        plan["records"],
        plan["matching"],
        elapsed.as_secs_f64()
    );
}

/// Through a running service, `plan` answers what it answers on the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_through_a_running_service_is_the_same_plan() {
    use blockyard::http::Credentials;
    use blockyard::service::{Service, ServiceConfig};
    let env = Env::seeded(10).await;
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    std::fs::copy(
        support::workflow("calendly-offboard.yaml"),
        env.path().join("workflows/calendly-offboard.yaml"),
    )
    .unwrap();
    let members: Vec<String> = env
        .members()
        .await
        .into_iter()
        .filter(|m| m.2 != "owner")
        .map(|m| m.0)
        .take(3)
        .collect();
    let mut csv = String::from("email,status\n");
    for email in &members {
        csv.push_str(&format!("{email},terminated\n"));
    }
    csv.push_str("stay@acme.test,active\n");
    env.write("people.csv", &csv);
    let (code, _, stderr) = env.run(&["records", "import", "people", "people.csv", "--no-trigger"]);
    assert_eq!(code, 0, "{stderr}");
    let local = env.json(&["plan", "workflows/calendly-offboard.yaml", "--json"]);

    let config = env.config();
    let service = Service::start(ServiceConfig {
        token: Some(support::API_TOKEN.to_owned()),
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        ..ServiceConfig::new(
            env.path().join("workflows"),
            env.data_dir(),
            "127.0.0.1:0".parse().unwrap(),
        )
    })
    .await
    .unwrap();
    let server = format!("http://{}", service.addr());
    let dir = env.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let args = [
            "plan",
            "workflows/calendly-offboard.yaml",
            "--json",
            "--server",
            &server,
        ];
        support::command_in(&dir, &args)
            .env("BLOCKYARD_TOKEN", support::API_TOKEN)
            .env_remove("BLOCKYARD_SERVER")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let remote: Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    assert_eq!(remote["matching"], 3, "{remote}");
    assert_eq!(remote["records"], 4);
    for key in [
        "workflow",
        "records",
        "matching",
        "excluded",
        "writes",
        "destructive",
        "outcomes",
    ] {
        assert_eq!(remote[key], local[key], "{key}");
    }
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    service.shutdown().await.unwrap();
}

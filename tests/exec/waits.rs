//! The `wait` block through the real binary: an `until` already past elapses at once (the step
//! says so), a date `until` is read in the workflow's time zone, a dry run shows the wait as
//! planned, an offline replay reproduces the recorded outcome without waiting, and `cancel`
//! ends a waiting run at once.

use crate::support::{self, Env};

/// begin → `notice` (a wait until the leaver's last day) → `me` when it elapsed → end.
const LAST_DAY: &str = "\
name: last-day
timezone: Europe/Berlin
blocks:
  begin: {type: begin, records: people, on: [updated], next: notice}
  notice:
    type: wait
    until: \"{{record.last_day}}\"
    wake_when: 'record.status == \"staying\"'
    next:
      - {to: me, when: 'blocks.notice.outputs.outcome == \"elapsed\"'}
      - {to: end, when: 'blocks.notice.outputs.outcome == \"woken\"'}
  me: {type: api, preset: calendly.current_user, credential: calendly, next: end}
  end: {type: end}
";

fn run_id(stdout: &str) -> String {
    stdout.split(' ').nth(1).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_until_already_past_elapses_at_once_and_replays_offline_the_same() {
    let env = Env::seeded(1).await;
    let file = env.write("last-day.yaml", LAST_DAY).display().to_string();
    let args = [
        "run",
        &file,
        "--record",
        "email=leaver@example.com",
        "--record",
        "last_day=2020-01-31",
    ];
    let (code, stdout, stderr) = env.run(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let id = run_id(&stdout);
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(
        support::blocks(&shown),
        [
            ("begin", "succeeded"),
            ("notice", "succeeded"),
            ("me", "succeeded"),
            ("end", "succeeded")
        ]
    );
    let notice = &shown["steps"][1];
    // Midnight in Berlin (UTC+1 in January) is 23:00 UTC the day before.
    assert_eq!(notice["outputs"]["until"], "2020-01-30T23:00:00Z");
    assert_eq!(notice["outputs"]["outcome"], "elapsed");
    assert_eq!(
        notice["note"],
        "elapsed at once: the wait's end (2020-01-30T23:00:00Z) had already passed when it started"
    );

    let (code, stdout, stderr) = env.run(&["replay", &id, "--offline", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let replay: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(replay["identical"], true, "{replay}");
    let steps = replay["replay"]["steps"].as_array().unwrap();
    let notice = steps.iter().find(|s| s["block"] == "notice").unwrap();
    assert_eq!(notice["outputs"]["outcome"], "elapsed", "{replay}");
    assert_eq!(
        notice["note"],
        "the recorded wait ended `elapsed`; an offline replay does not wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_until_is_midnight_in_the_workflow_zone_and_cancel_ends_the_wait_at_once() {
    let env = Env::seeded(1).await;
    let file = env.write("last-day.yaml", LAST_DAY).display().to_string();
    let record = [
        "--record",
        "email=leaver@example.com",
        "--record",
        "last_day=2099-07-15",
    ];
    // A dry run shows the wait as planned and the blocks after it as if it elapsed.
    let mut dry = vec!["run", file.as_str(), "--dry-run"];
    dry.extend(record);
    let (code, stdout, stderr) = env.run(&dry);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("would wait until 2099-07-14T22:00:00Z, or until `wake_when` holds; a dry run does not wait (later blocks are shown as if it elapsed)"),
        "{stdout}"
    );

    let mut live = vec!["run", file.as_str()];
    live.extend(record);
    let (code, stdout, stderr) = env.run(&live);
    assert_eq!(code, 6, "not finished: {stdout}{stderr}");
    let id = run_id(&stdout);
    assert!(
        stdout.contains("  waiting: block `notice` waits until 2099-07-14T22:00:00Z, or until a write of the record makes `wake_when` hold\n  waiting until 2099-07-14 22:00:00 UTC: `blockyard serve` continues the run then (or `blockyard resume` once that time has come)"),
        "{stdout}"
    );
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "waiting");
    // Midnight in Berlin in summer (UTC+2).
    assert_eq!(shown["wake_at"], "2099-07-14T22:00:00Z");
    assert_eq!(
        support::blocks(&shown),
        [("begin", "succeeded"), ("notice", "waiting")]
    );

    // `resume` leaves a wait whose time has not come.
    let (code, stdout, _) = env.run(&["resume"]);
    assert_eq!(code, 6, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "run {id} is waiting: it waits until 2099-07-14 22:00:00 UTC; not due yet, left alone"
        )),
        "{stdout}"
    );

    let (code, stdout, stderr) = env.run(&["cancel", &id]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(shown["error"], "cancelled while waiting in block `notice`");
    assert!(shown.get("wake_at").is_none(), "{shown}");
}

/// A write of the subject record by another process (`records import`, which exits as soon as
/// it has written) wakes the wait durably: the next `resume` judges `wake_when` on the record as
/// written, waits on when it does not hold, and ends the wait `woken` when it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_by_another_process_wakes_the_wait_on_the_next_resume() {
    let env = Env::seeded(1).await;
    let file = env.write("last-day.yaml", LAST_DAY).display().to_string();
    let (code, stdout, stderr) = env.run(&[
        "run",
        &file,
        "--record",
        "email=leaver@example.com",
        "--record",
        "last_day=2099-07-15",
    ]);
    assert_eq!(code, 6, "{stdout}{stderr}");
    let id = run_id(&stdout);
    let import = |status: &str| {
        let rows = format!(
            r#"[{{"email": "leaver@example.com", "last_day": "2099-07-15", "status": "{status}"}}]"#
        );
        env.write("people.json", &rows);
        let (code, stdout, stderr) = env.run(&["records", "import", "people", "people.json"]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    };

    import("leaving");
    let (code, stdout, _) = env.run(&["resume"]);
    assert_eq!(code, 6, "{stdout}");
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "waiting", "{shown}");
    assert_eq!(shown["wake_at"], "2099-07-14T22:00:00Z");
    assert_eq!(
        support::blocks(&shown),
        [("begin", "succeeded"), ("notice", "waiting")]
    );

    import("staying");
    let (code, stdout, stderr) = env.run(&["resume"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert_eq!(
        support::blocks(&shown),
        [
            ("begin", "succeeded"),
            ("notice", "succeeded"),
            ("me", "skipped"),
            ("end", "succeeded")
        ]
    );
    assert_eq!(shown["steps"][1]["outputs"]["outcome"], "woken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_draws_a_wait_as_its_own_shape() {
    let env = Env::seeded(1).await;
    let file = env.write("last-day.yaml", LAST_DAY).display().to_string();
    let (code, mermaid, stderr) = env.run(&["graph", &file]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        mermaid.contains("    n1[/\"notice<br/>wait until {{record.last_day}} or wake_when\"/]\n"),
        "{mermaid}"
    );
    let (code, dot, stderr) = env.run(&["graph", &file, "--format", "dot"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        dot.contains("    n1 [shape=parallelogram, label=\"notice\\nwait until {{record.last_day}} or wake_when\"];\n"),
        "{dot}"
    );
}

/// A run parked in a `wait` replays offline as parked there: the wait is `waiting` (not taken as
/// elapsed), nothing after it runs, and the replay is identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_still_waiting_replays_offline_waiting_where_it_waits() {
    let env = Env::seeded(1).await;
    let file = env.write("last-day.yaml", LAST_DAY).display().to_string();
    let args = [
        "run",
        &file,
        "--record",
        "email=leaver@example.com",
        "--record",
        "last_day=2099-01-31",
    ];
    let (code, stdout, stderr) = env.run(&args);
    assert_eq!(code, 6, "{stdout}{stderr}");
    let id = run_id(&stdout);
    let (code, stdout, stderr) = env.run(&["replay", &id, "--offline", "--json"]);
    let replay: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}{stderr}"));
    assert_eq!(replay["identical"], true, "{:#}", replay["blocks"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(replay["replay"]["status"], "waiting");
    assert_eq!(
        support::blocks(&replay["replay"]),
        [("begin", "succeeded"), ("notice", "waiting")]
    );
    let notice = &replay["replay"]["steps"][1];
    assert_eq!(notice["outputs"]["until"], "2099-01-30T23:00:00Z");
    assert_eq!(
        notice["note"],
        "the recorded run waits here until 2099-01-30T23:00:00Z; an offline replay stops here too"
    );
}

//! Executor paths the happy-path tests do not reach: a write with no probe whose outcome is
//! unknown after a crash, `blockyard cancel` while a run is in progress, and `history prune`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::slow;
use crate::support::{blocks, Env, THREE_READS, WHOAMI};

/// begin → `me` (a GET) → `revoke` (a DELETE whose preset has no probe) → end.
const REVOKE: &str = "name: revoke\nblocks:\n  begin:\n    type: begin\n    next: me\n  me:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    next: revoke\n  revoke:\n    type: api\n    preset: calendly.revoke_invitation\n    credential: calendly\n    with:\n      invitation_uuid: 0a1b2c3d-0000-4000-8000-000000000001\n    next: end\n  end:\n    type: end\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_a_probe_whose_outcome_is_unknown_needs_attention_and_is_not_resent() {
    let env = slow(Duration::from_millis(600)).await;
    let file = env.write("revoke.yaml", REVOKE);
    let mut run = env
        .command(&["run", &file.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The sandbox logs a request once it answers it: when `me`'s GET shows up, the DELETE has
    // just left (its intent is flushed first) and takes 600 ms.
    env.wait_for_requests_after(0).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.kill().unwrap(); // SIGKILL, with the DELETE in flight
    run.wait().unwrap();
    // The sandbox drops a request whose client went away, or answers it (and logs it) 600 ms
    // after it arrived: either way the run cannot know the outcome.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = env.writes();
    assert!(sent.len() <= 1, "{sent:?}");

    let (code, stdout, stderr) = env.run(&["resume"]);
    assert_eq!(code, 4, "needs attention: {stdout}{stderr}");
    let message = "block `revoke`: the write `calendly.revoke_invitation` may or may not have reached the vendor before the process stopped, and `calendly.revoke_invitation` has no probe to check it; check it at the vendor, then run the workflow again";
    assert!(stdout.contains(": needs_attention"), "{stdout}");
    assert!(
        stdout.contains(&format!("  needs_attention: {message}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("note: outcome unknown: not sent again"),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await; // a DELETE sent now would be logged
    assert_eq!(env.writes(), sent, "nothing was sent again");

    let listed = env.json(&["history", "list", "--json"]);
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "needs_attention");
    assert_eq!(shown["error"], message);
    assert_eq!(
        blocks(&shown),
        [
            ("begin", "succeeded"),
            ("me", "succeeded"),
            ("revoke", "sending")
        ]
    );

    // The run is finished: a second resume leaves it alone and sends nothing.
    let (code, stdout, _) = env.run(&["resume"]);
    assert_eq!((code, stdout.as_str()), (0, "no unfinished runs\n"));
    assert_eq!(env.writes(), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_run_in_another_process_between_steps() {
    // 1 s per call: `blockyard cancel` spends 500 ms finding the data dir locked before it drops
    // its marker (now fsynced), which must land before `b` ends, even on a busy machine.
    let env = slow(Duration::from_millis(1000)).await;
    let file = env.write("three-reads.yaml", THREE_READS);
    let mut run = env
        .command(&["run", &file.display().to_string(), "--json"])
        .env("RUST_LOG", "blockyard=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run's id is in its tracing span; the first line that names it is `a` settling. The
    // rest of stderr is drained, as the run's logging panics on a closed stderr.
    let stderr = run.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("run_id=") {
                let id: String = line[at + 7..].chars().take(26).collect();
                let _ = tx.send(id);
            }
        }
    });
    let id = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the run logged its id");
    // `b` is in flight now (1 s); `c` has not started.
    let (code, stdout, stderr) = env.run(&["cancel", &id]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!("asked the process running {id} to stop it before its next block\n")
    );
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "cancelled");
    let finished: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(finished["id"], id.as_str());
    assert_eq!(finished["status"], "cancelled");
    assert_eq!(finished["error"], "cancelled between steps");
    assert_eq!(
        blocks(&finished),
        [
            ("begin", "succeeded"),
            ("a", "succeeded"),
            ("b", "succeeded")
        ]
    );
    assert_eq!(env.sb.requests().len(), 2, "`c` was never sent");

    // The same, as history has it; the marker is gone and the run is not resumed.
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(blocks(&shown), blocks(&finished));
    assert!(!env.path().join("data/cancel").join(&id).exists());
    let (_, stdout, _) = env.run(&["resume"]);
    assert_eq!(stdout, "no unfinished runs\n");
    let (code, stdout, _) = env.run(&["cancel", &id]);
    assert_eq!(
        (code, stdout),
        (1, format!("run {id} already finished: cancelled\n"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_prune_keeps_compact_run_records_and_drops_step_payloads() {
    let env = Env::seeded(5).await;
    let file = env.write("whoami.yaml", WHOAMI);
    let run = env.json(&["run", &file.display().to_string(), "--json"]);
    assert_eq!(run["status"], "succeeded");
    let id = run["id"].as_str().unwrap().to_owned();
    assert!(run["steps"][1]["response"]["body"].is_object());

    // Nothing finished more than an hour ago.
    let (code, stdout, stderr) = env.run(&["history", "prune", "--older-than", "1h"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "pruned the payloads of 0 runs (0 steps); run records kept\n"
    );
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown, run, "the run is untouched");

    std::thread::sleep(Duration::from_millis(20));
    let (code, stdout, stderr) = env.run(&["history", "prune", "--older-than", "1ms"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "pruned the payloads of 1 runs (3 steps); run records kept\n"
    );
    let pruned = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(pruned["status"], "succeeded");
    assert_eq!(pruned["pruned"], true);
    // The compact record is unchanged but for the flag.
    for field in [
        "workflow",
        "file",
        "snapshot",
        "trigger",
        "created_at",
        "started_at",
        "finished_at",
    ] {
        assert_eq!(pruned[field], run[field], "{field}");
    }
    assert_eq!(blocks(&pruned), blocks(&run));
    let me = &pruned["steps"][1];
    for payload in ["inputs", "request", "response", "saved", "outputs"] {
        assert!(me.get(payload).is_none(), "{payload} kept: {me}");
    }
    assert_eq!(me["preset"], "calendly.current_user");
    assert_eq!(me["duration_us"], run["steps"][1]["duration_us"]);
    let listed = env.json(&["history", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    // Pruned runs are not pruned again.
    let (_, stdout, _) = env.run(&["history", "prune", "--older-than", "1ms"]);
    assert_eq!(
        stdout,
        "pruned the payloads of 0 runs (0 steps); run records kept\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_prune_runs_deletes_whole_finished_runs_and_never_a_waiting_one() {
    let env = Env::seeded(5).await;
    let file = env.write("whoami.yaml", WHOAMI);
    let run = env.json(&["run", &file.display().to_string(), "--json"]);
    assert_eq!(run["status"], "succeeded");
    let id = run["id"].as_str().unwrap().to_owned();
    let gated = env.write(
        "gated.yaml",
        "name: gated\nblocks:\n  begin:\n    type: begin\n    next: me\n  me:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    approval: required\n    next: end\n  end:\n    type: end\n",
    );
    let (code, out, _) = env.run(&["run", &gated.display().to_string(), "--json"]);
    let waiting: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, &waiting["status"]),
        (6, &Value::from("waiting_approval"))
    );

    let (code, stdout, stderr) = env.run(&["history", "prune", "--older-than", "1h", "--runs"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "deleted 0 finished runs (0 steps) and what was kept for them\n"
    );
    std::thread::sleep(Duration::from_millis(20));
    let (code, stdout, stderr) = env.run(&["history", "prune", "--older-than", "1ms", "--runs"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "deleted 1 finished runs (3 steps) and what was kept for them\n"
    );
    let (code, _, stderr) = env.run(&["history", "show", &id]);
    assert_eq!(
        (code, stderr),
        (
            2,
            format!(
                "error: no run `{id}` in this data dir; `blockyard history list` shows the runs\n"
            )
        )
    );
    let listed = env.json(&["history", "list", "--json"]);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [waiting["id"].as_str().unwrap()],
        "the waiting run stays"
    );
}

/// begin → me → (maybe, skipped by its edge's `when`) → after: `after` reads `maybe`'s outputs.
const READS_A_SKIPPED_BLOCK: &str = "name: reads-skipped\nblocks:\n  begin:\n    type: begin\n    next: me\n  me:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    next:\n      - { to: maybe, when: 'false' }\n      - { to: after }\n  maybe:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    outputs: { uri: \"{{response.resource.uri}}\" }\n    next: after\n  after:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    outputs: { same: \"{{blocks.maybe.outputs.uri}}\" }\n    next: end\n  end:\n    type: end\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_skipped_blocks_outputs_fails_saying_the_call_went_through() {
    let env = Env::seeded(1).await;
    let file = env.write("reads-skipped.yaml", READS_A_SKIPPED_BLOCK);
    let (code, stdout, stderr) = env.run(&["run", &file.display().to_string(), "--json"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        blocks(&run),
        [
            ("begin", "succeeded"),
            ("me", "succeeded"),
            ("maybe", "skipped"),
            ("after", "failed")
        ]
    );
    assert_eq!(
        run["steps"][3]["error"],
        "`calendly.current_user` answered 200, but cannot render output `same`: `blocks.maybe.outputs.uri` is not defined (block `maybe` was skipped in this run)"
    );
}

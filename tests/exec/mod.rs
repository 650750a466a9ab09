//! The executor and run history against the in-process sandbox: semantics, durability across a
//! `kill -9`, offline replay with and without divergence, dry runs, and no secret in history.

use std::process::Stdio;
use std::time::Duration;

use blockyard::sandbox::SandboxConfig;
use serde_json::Value;

use crate::support::{self, Env, TOKEN};

mod answers;
mod paths;
mod replay;
mod request;
mod retries;
mod waits;

/// A sandbox seeded with 5 users that takes `latency` to answer each request.
async fn slow(latency: Duration) -> Env {
    Env::start(SandboxConfig {
        seed_users: 5,
        latency,
        ..SandboxConfig::default()
    })
    .await
}

/// A shipped workflow's path, as an argument.
fn workflow(name: &str) -> String {
    support::workflow(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sends_each_write_once_saves_outputs_and_records_every_step() {
    let env = Env::seeded(5).await;
    let (email, _, _) = env.member().await;
    let record = format!("email={email}");
    let (code, stdout, stderr) = env.run(&[
        "run",
        &workflow("calendly-offboard.yaml"),
        "--record",
        &record,
        "--record",
        "status=terminated",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(run["status"], "succeeded");
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(
        support::blocks(&run),
        [
            ("begin", "succeeded"),
            ("find", "succeeded"),
            ("remove", "succeeded"),
            ("end", "succeeded")
        ]
    );
    // `outputs` of `find` fed `remove`'s path; `save` wrote onto the subject.
    let membership = steps[1]["outputs"]["membership"].as_str().unwrap();
    assert!(steps[2]["request"]["url"]
        .as_str()
        .unwrap()
        .ends_with(membership.rsplit('/').next().unwrap()));
    assert_eq!(steps[2]["saved"]["calendly_status"], "removed");
    assert_eq!(steps[2]["response"]["status"], 204);
    assert_eq!(env.writes().len(), 1, "{:?}", env.writes());

    // The second run finds no membership: `not_found` is an answer `find` lists, so it
    // succeeds with `found: false`, routes straight to `end` around `remove`, which is skipped;
    // no block failed, and nothing is sent.
    let (code, stdout, _) = env.run(&[
        "run",
        &workflow("calendly-offboard.yaml"),
        "--record",
        &record,
        "--record",
        "status=terminated",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}");
    let again: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(again["status"], "succeeded");
    assert_eq!(
        support::blocks(&again),
        [
            ("begin", "succeeded"),
            ("find", "succeeded"),
            ("remove", "skipped"),
            ("end", "succeeded")
        ]
    );
    assert_eq!(
        again["steps"][1]["outputs"],
        serde_json::json!({"found": false})
    );

    // The same lookup without `answers:`, routed around with `on_failure: end` as workflows did
    // before: `find` fails, and the run went through a failure path and says so (exit 3).
    let routed = std::fs::read_to_string(workflow("calendly-offboard.yaml"))
        .unwrap()
        .replace("    answers: [not_found]\n    outputs:", "    outputs:")
        .replace(
            "    next:\n      - { to: remove, when: 'blocks.find.outputs.found' }\n      - { to: end, when: '!blocks.find.outputs.found' }\n",
            "    next: remove\n    on_failure: end\n",
        );
    assert!(routed.contains("on_failure: end"), "{routed}");
    let routed = env.write("routed.yaml", &routed);
    let (code, stdout, _) = env.run(&[
        "run",
        &routed.display().to_string(),
        "--record",
        &record,
        "--record",
        "status=terminated",
    ]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains(": completed_with_failures"), "{stdout}");
    let handled = env.json(&[
        "history",
        "list",
        "--status",
        "completed_with_failures",
        "--json",
    ]);
    assert_eq!(handled.as_array().unwrap().len(), 1, "{handled}");
    assert_eq!(
        handled[0]["error"],
        "block `find` failed: `calendly.find_membership`: not found (status 200); the run went on through the `on_failure` path"
    );
    let clean = env.json(&["history", "list", "--status", "succeeded", "--json"]);
    assert_eq!(
        clean.as_array().unwrap().len(),
        2,
        "the first two runs: {clean}"
    );
    assert!(stdout.contains("find    failed"), "{stdout}");
    assert!(stdout.contains("remove  skipped"), "{stdout}");
    assert_eq!(env.writes().len(), 1);

    // History: a person's timeline, and no secret anywhere in it.
    let listed = env.json(&[
        "history",
        "list",
        "--subject",
        &email.to_uppercase(),
        "--json",
    ]);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let id = run["id"].as_str().unwrap();
    let (code, shown, _) = env.run(&["history", "show", id, "--json"]);
    assert_eq!(code, 0);
    assert!(!shown.contains(TOKEN), "the token leaked into history");
    assert!(shown.contains("[redacted]"));
    let (_, text, _) = env.run(&["history", "show", id]);
    assert!(text.contains("DELETE"), "{text}");
    let failed = env.json(&["history", "list", "--status", "failed", "--json"]);
    assert!(failed.as_array().unwrap().is_empty());
    // A duration longer ago than a date can be is an error, not a panic.
    assert_eq!(
        env.run(&["history", "list", "--since", "999999999d"]),
        (2, String::new(), "error: `--since 999999999d` reaches back further than a date can; write a shorter duration\n".to_owned())
    );
    assert_eq!(
        env.run(&["history", "prune", "--older-than", "999999999d"]),
        (2, String::new(), "error: `--older-than 999999999d` reaches back further than a date can; write a shorter duration\n".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_performs_reads_and_holds_writes_back() {
    let env = Env::seeded(5).await;
    let record = format!("email={}", env.member().await.0);
    let before = env.sb.requests().len();
    let (code, stdout, _) = env.run(&[
        "run",
        &workflow("calendly-offboard.yaml"),
        "--record",
        &record,
        "--record",
        "status=terminated",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("remove  planned    DELETE"), "{stdout}");
    assert!(env.writes().is_empty());
    assert_eq!(
        env.sb.requests().len(),
        before + 1,
        "the read was performed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_is_identical_for_the_same_workflow_and_shows_a_changed_one() {
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

    let (code, stdout, stderr) = env.run(&["replay", id, "--offline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("identical to the recording"), "{stdout}");

    let changed = std::fs::read_to_string(workflow("calendly-offboard.yaml"))
        .unwrap()
        .replace("calendly_status: removed", "calendly_status: offboarded");
    let file = env.write("changed.yaml", &changed);
    let (code, stdout, _) = env.run(&[
        "replay",
        id,
        "--offline",
        "--workflow",
        &file.display().to_string(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("saved calendly_status: \"removed\" → \"offboarded\""),
        "{stdout}"
    );
    assert_eq!(env.sb.requests().len(), sent, "offline replay sent nothing");

    // A live replay from `remove` reuses `find`'s recorded outputs: no new GET is sent. The
    // membership is gone, so the DELETE answers 404, an answer `remove` lists: nothing saved.
    let (code, stdout, _) = env.run(&["replay", id, "--from", "remove", "--json"]);
    let replay: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(replay["replay_of"], id);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(replay["steps"][2]["block"], "remove");
    assert_eq!(replay["steps"][2]["response"]["status"], 404);
    assert_eq!(
        replay["steps"][2]["outputs"],
        serde_json::json!({"found": false})
    );
    assert!(
        replay["steps"][2]["saved"]["calendly_status"].is_null(),
        "{stdout}"
    );
    let requests = env.sb.requests();
    assert_eq!(requests.len(), sent + 1, "only the DELETE was sent");
    assert_eq!(requests.last().unwrap().method, "DELETE");
    // The reused steps are in the replay's history too, as the outcome listed them.
    let shown = env.json(&["history", "show", replay["id"].as_str().unwrap(), "--json"]);
    assert_eq!(support::blocks(&shown), support::blocks(&replay));
    assert_eq!(shown["steps"][1]["block"], "find");
}

/// Kills `blockyard run` with SIGKILL while the DELETE is in flight, then resumes: the write is
/// sent exactly once in all, and the run finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_write_then_resume_never_sends_a_write_twice() {
    let env = slow(Duration::from_millis(300)).await;
    let (email, _, _) = env.member().await;
    let baseline = env.sb.requests().len();
    let record = format!("email={email}");
    let mut run = env
        .command(&[
            "run",
            &workflow("calendly-offboard.yaml"),
            "--record",
            &record,
            "--record",
            "status=terminated",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the `find` GET was answered: the DELETE leaves right after and takes 300 ms.
    env.wait_for_requests_after(baseline).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await; // let the in-flight DELETE land, if it does

    let (code, stdout, stderr) = env.run(&["resume"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    let deletes = env.writes();
    assert_eq!(
        deletes.len(),
        1,
        "each write is sent exactly once: {deletes:?}"
    );
    let (_, stdout, _) = env.run(&["resume"]);
    assert!(stdout.contains("no unfinished runs"), "{stdout}");
}

/// Approval waits durably: the process that reached `approval: required` exits, and a new process
/// approves and finishes the run, sending the delete exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_outlives_the_process_that_asked_for_it() {
    let env = Env::seeded(5).await;
    let users = support::get_json(format!("{}/Users?count=1", env.sb.scim_url())).await;
    let email = users["Resources"][0]["userName"]
        .as_str()
        .unwrap()
        .to_owned();
    let scim_id = users["Resources"][0]["id"].as_str().unwrap().to_owned();
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
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    let id = asked["id"].as_str().unwrap();

    let (code, stdout, stderr) = env.run(&["approve", id, "delete"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(env.writes(), [format!("DELETE /scim/v2/Users/{scim_id}")]);
    let shown = env.json(&["history", "show", id, "--json"]);
    assert_eq!(shown["status"], "succeeded", "{shown:#}");
    // Approving again is refused, and sends nothing.
    let (code, _, stderr) = env.run(&["approve", id, "delete"]);
    assert_eq!(
        (code, stderr),
        (
            2,
            format!("error: run `{id}` is not waiting for approval of block `delete`; `blockyard history show {id}` shows where it is\n")
        )
    );
    assert_eq!(env.writes().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_compiles_against_the_presets_dir_it_is_given() {
    let env = Env::seeded(1).await;
    // The shipped Calendly preset with one more action, `whoami`.
    let shipped = std::fs::read_to_string(support::root().join("presets/calendly.yaml")).unwrap();
    let extended = format!(
        "{shipped}\n  whoami:\n    title: Who am I\n    description: The credential's user.\n    kind: read\n    method: GET\n    path: /users/me\n"
    );
    std::fs::create_dir(env.path().join("extra")).unwrap();
    env.write("extra/calendly.yaml", &extended);
    let flow = env.write(
        "whoami.yaml",
        &support::WHOAMI.replace("calendly.current_user", "calendly.whoami"),
    );
    let flow = flow.to_str().unwrap();

    let (code, _, stderr) = env.run(&["run", flow]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: `{flow}` does not compile:\n{flow}:9:13: error: vendor `calendly` has no action `whoami` in block `me`; `blockyard presets list` shows the actions of `calendly`\n"
        )
    );

    let (code, stdout, stderr) = env.run(&["run", flow, "--presets", "extra", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        support::blocks(&run),
        [
            ("begin", "succeeded"),
            ("me", "succeeded"),
            ("end", "succeeded")
        ]
    );
    assert_eq!(run["steps"][1]["preset"], "calendly.whoami");
}

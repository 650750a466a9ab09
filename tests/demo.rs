//! `blockyard demo`: the newcomer's first command runs every seed job end to end.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{blockyard_in, command_in, stderr, stdout};

#[test]
fn the_demo_runs_every_seed_job_and_exits_0() {
    // Run it from an empty directory: the demo needs nothing but the binary.
    let dir = tempfile::tempdir().unwrap();
    let out = blockyard_in(
        dir.path(),
        &[
            "demo",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    // The counts are by outcome, exactly, for seed 7: the vendors know most people already
    // (answers, not failures), and refuse the two mistyped addresses.
    for expected in [
        "\n1. import examples/people.csv: 29 people created; their record triggers queued 89 runs\n",
        "\n   calendly-invite 11 · calendly-user-details 29 · scim-provision 29 · webex-create 20 (87 succeeded, 2 failed)\n",
        "\n   answers the workflows list as results: calendly-invite 400 ×8, calendly-user-details not found ×5, scim-provision not found ×5, webex-create 409 ×16\n",
        "\n   refused: calendly-invite ole.dahl@example: failed: `calendly.invite_user`: `calendly` answered 400 `Invalid Email`: The email address is invalid.\n",
        "\n   refused: webex-create tim.berners-lee@example: failed: `webex.create_user`: `webex` answered 400: `emails` is required and must hold a valid email address. [tracking id ",
        "\n4. calendly-role-daily tick (forced now): 23 users checked; roles: 2 admin, 1 owner, 20 user; calendly-role-daily 23 (23 succeeded)\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(text.matches("refused: ").count(), 2, "{text}");
    // The leaver's Webex id was saved although Webex answered 409 to the create: offboarding
    // starts there too.
    let started = text
        .lines()
        .find(|l| l.contains("started by the record change:"))
        .unwrap_or_default();
    for workflow in ["calendly-offboard", "scim-provision", "webex-offboard"] {
        assert!(started.contains(workflow), "{started}");
    }
    for expected in [
        "2. HR marks dennis.wirth@example.com terminated → started by the record change:",
        "DELETE /organization_memberships/",
        "3. calendly-ingest (daily; run now): 23 new, 0 updated, 0 activated, 0 deactivated saas_users",
        "left alone (`reclaim_excluded: true`)",
        "candidates told through the `licence_notices` webhook and waiting out a 5s grace period (`waiting`, durably)",
        "   the notice: \"Your calendly licence has not been used for more than 60 days. It will be reclaimed on ",
        "signs in during the grace period; the calendly-role-daily tick saves `last_activity`, which wakes the wait (`woken`) → run succeeded, reclaim_state: cancelled (activity on ",
        "   after the grace period: activity read again, ",
        " → reclaim_state: reclaimed, licence_freed: calendly organization membership",
        "is waiting for approval at block `delete`",
        "approved over the API by operator `dana`",
        "→ run succeeded; SCIM DELETE sent 1 time",
        "\n   history records: approved by dana at ",
        "7. history of dennis.wirth@example.com",
        "identical to the recording, nothing sent",
        "9. HR marks hedy.sutherland@example.com terminated → scim-provision waits for approval at block `delete` (run ",
        "left waiting for an administrator",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The runs stay in the data dir for the history commands.
    let history = blockyard_in(
        dir.path(),
        &[
            "history",
            "list",
            "--subject",
            "dennis.wirth@example.com",
            "--data-dir",
            "data",
        ],
    );
    assert_eq!(history.status.code(), Some(0), "{}", stderr(&history));
    assert!(
        stdout(&history).contains("calendly-offboard"),
        "{}",
        stdout(&history)
    );
}

/// Every run the demo finished replays offline identical, from a directory with no config and only
/// `--data-dir`: rendered with the run's recorded vars and the base URLs its requests used,
/// `run.*` and the time helpers as of the original run, and every call answered from the
/// recording (role retrieval's activity read included). An edited workflow still shows its diff.
#[test]
fn every_demo_run_replays_offline_identical_with_only_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = blockyard_in(dir.path(), &["demo", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list = blockyard_in(
        dir.path(),
        &[
            "history",
            "list",
            "--data-dir",
            data,
            "--limit",
            "1000",
            "--json",
        ],
    );
    let runs: Value = serde_json::from_str(&stdout(&list)).unwrap();
    let runs = runs.as_array().unwrap();
    assert!(runs.len() > 100, "{} runs", runs.len());
    assert!(!dir.path().join("blockyard.yaml").exists());

    // The one run the demo leaves waiting for approval replays as it is: waiting at `delete`.
    let waiting: Vec<&Value> = runs
        .iter()
        .filter(|run| run["status"] == "waiting_approval")
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:#?}");
    assert_eq!(waiting[0]["workflow"], "scim-provision");
    // A process opens a data dir at a time: four workers, each replaying a share of the runs on
    // its own copy of it.
    let ids: Vec<&str> = runs.iter().map(|run| run["id"].as_str().unwrap()).collect();
    let workers = 4;
    let differing: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let copy = dir.path().join(format!("data-{worker}"));
                copy_dir(Path::new(data), &copy);
                let ids: Vec<&str> = ids.iter().skip(worker).step_by(workers).copied().collect();
                let dir = dir.path();
                scope.spawn(move || {
                    let copy = copy.to_str().unwrap();
                    let mut differing = Vec::new();
                    for id in ids {
                        let out =
                            blockyard_in(dir, &["replay", id, "--offline", "--data-dir", copy]);
                        let text = stdout(&out);
                        if out.status.code() != Some(0)
                            || !text.ends_with("\nidentical to the recording\n")
                        {
                            differing.push(format!("{text}{}", stderr(&out)));
                        }
                    }
                    differing
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap())
            .collect()
    });
    assert!(
        differing.is_empty(),
        "{} of {} runs differ from their recording; the first:\n{}",
        differing.len(),
        runs.len(),
        differing[0]
    );

    // A reclamation that removed a membership (role retrieval, activity read, the notice, the
    // grace period's wait, `days_idle` edges), replayed with one saved field edited: that field is the only difference.
    let reclaimed = runs
        .iter()
        .filter(|run| run["workflow"] == "reclaim-idle")
        .map(|run| run["id"].as_str().unwrap())
        .find(|id| {
            let shown = blockyard_in(
                dir.path(),
                &["history", "show", id, "--data-dir", data, "--json"],
            );
            let shown: Value = serde_json::from_str(&stdout(&shown)).unwrap();
            crate::support::blocks(&shown).contains(&("remove_membership", "succeeded"))
        })
        .expect("the demo reclaims a membership");
    let text = std::fs::read_to_string(crate::support::workflow("reclaim-idle.yaml")).unwrap();
    // The removal's reason (the candidate's, saved before, says "no activity for more than"
    // too, without the grace period).
    let edited = text.replace(
        "reclaim_reason: \"no activity for more than {{vars.threshold_days}} days, none during",
        "reclaim_reason: \"idle for more than {{vars.threshold_days}} days, none during",
    );
    assert_ne!(edited, text);
    let file = dir.path().join("reclaim-idle-edited.yaml");
    std::fs::write(&file, edited).unwrap();
    let out = blockyard_in(
        dir.path(),
        &[
            "replay",
            reclaimed,
            "--offline",
            "--data-dir",
            data,
            "--workflow",
            file.to_str().unwrap(),
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let differences: Vec<&str> = text
        .lines()
        .filter(|line| line.ends_with(": differs") || line.starts_with("    "))
        .collect();
    assert_eq!(
        differences,
        [
            "  remove_membership: differs",
            "    saved reclaim_reason: \"no activity for more than 60 days, none during the 5s grace period\" → \"idle for more than 60 days, none during the 5s grace period\"",
        ],
        "{text}"
    );
}

/// Copies a directory tree (a data dir no process has open).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `demo --serve` tells the story, then keeps the service (API and console) and the simulated
/// vendors running at the URLs it prints, with the second leaver's SCIM delete still waiting for
/// approval, until SIGTERM (Ctrl-C's SIGINT too), when it stops with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_keeps_the_service_and_console_running_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command_in(dir.path(), &["demo", "--serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let read_until = |needle: &str| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(err) => panic!("no line with `{needle}` ({err}): {seen:#?}"),
            }
        }
    };
    let story = read_until("vendors  http://");
    let at = |prefix: &str| {
        story
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {story:#?}"))
            .to_owned()
    };
    assert!(
        story.contains(&"serving until Ctrl-C:".to_owned()),
        "{story:#?}"
    );
    // `  console  http://127.0.0.1:PORT/  (log in as `dana` with the token TOKEN)`
    let console = at("  console  ");
    let (url, login) = console.split_once("  ").unwrap();
    let token = login
        .strip_prefix("(log in as `dana` with the token ")
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{console}"));
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    assert_eq!(at("  API      "), format!("{url}api"));
    let vendors = at("  vendors  ");

    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{url}healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    // The console: its login form, where the printed token signs in.
    let login = http.get(format!("{url}login")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let form = login.text().await.unwrap();
    assert!(
        form.contains("<form method=\"post\" action=\"/login\" id=\"login-form\">"),
        "{form}"
    );
    // Signed in with the printed token, the console's pages show the demo's data.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = no_redirects
        .post(format!("{url}login"))
        .header("origin", url.trim_end_matches('/'))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", token), ("next", "/people")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let people = no_redirects
        .get(format!("{url}people?q=hedy"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(people.status(), 200);
    let people = people.text().await.unwrap();
    assert!(
        people.contains("<tr class=\"record\" data-key=\"hedy.sutherland@example.com\">"),
        "{people}"
    );
    // The run the story left waiting is still waiting, on the Approvals page and in the API.
    let approvals = no_redirects
        .get(format!("{url}approvals"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(approvals.status(), 200);
    let approvals = approvals.text().await.unwrap();
    assert_eq!(
        approvals.matches("<tr class=\"approval\"").count(),
        1,
        "{approvals}"
    );
    assert!(
        approvals.contains("<td>hedy.sutherland@example.com</td>"),
        "{approvals}"
    );
    let waiting: Value = http
        .get(format!("{url}api/runs?status=waiting_approval"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let waiting: Vec<(&str, &str)> = waiting
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["workflow"].as_str().unwrap(),
                r["subject"]["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(waiting, [("scim-provision", "hedy.sutherland@example.com")]);
    // The simulated vendors answer too.
    let scim = http
        .get(format!("{vendors}/scim/v2/Users"))
        .bearer_auth("demo-token")
        .send()
        .await
        .unwrap();
    assert_eq!(scim.status(), 200);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    read_until("stopping");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `--listen` is where `--serve` listens: without `--serve` it is an error, not a key ignored.
#[test]
fn demo_listen_without_serve_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = blockyard_in(dir.path(), &["demo", "--listen", "127.0.0.1:8080"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "error: the following required arguments were not provided:\n  --serve\n\nUsage: blockyard demo --serve --listen <ADDR>\n\nFor more information, try '--help'.\n"
    );
}

/// The child's stdout, line by line, through a channel (so a wait for a line has a deadline).
fn stdout_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

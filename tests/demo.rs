//! `blockyard demo`: the newcomer's first command runs every seed job end to end.

use std::path::Path;

use serde_json::Value;

use crate::support::{blockyard_in, stderr, stdout};

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

/// Every run the demo made replays offline identical, from a directory with no config and only
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

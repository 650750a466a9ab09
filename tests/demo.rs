//! `blockyard demo`: the newcomer's first command runs every seed job end to end.

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
        "is waiting for approval at block `delete`",
        "→ run succeeded; SCIM DELETE sent 1 time",
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

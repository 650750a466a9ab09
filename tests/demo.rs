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
    for expected in [
        "1. import examples/people.csv: 26 people created",
        "2. HR marks dennis.wirth@example.com terminated → started by the record change:",
        "DELETE /organization_memberships/",
        "3. calendly-ingest (daily; run now): 23 new, 0 updated, 0 activated, 0 deactivated saas_users",
        "4. calendly-role-daily tick (forced now): 23 users checked",
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

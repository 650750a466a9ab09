//! Records: importing CSV, JSON and JSONL through the real binary, modes, dry runs, and the
//! durable queue surviving a kill.

use std::path::Path;

use blockyard::records::{Collection, RecordStore};
use blockyard::store::queue::Queue;
use blockyard::store::Store;

use crate::support::{blockyard_in, stdout};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> (String, i32) {
    let out = blockyard_in(dir, args);
    (
        stdout(&out) + crate::support::stderr(&out).as_str(),
        out.status.code().unwrap_or(-1),
    )
}

fn open(dir: &Path) -> (Store, RecordStore) {
    let store = Store::open(&dir.join(".blockyard")).unwrap();
    let records = RecordStore::open(&store).unwrap();
    (store, records)
}

#[test]
fn a_bad_csv_row_in_the_middle_is_reported_with_its_line_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "hr.csv",
        "email,name,status\njane@acme.com,Jane,active\nbob@acme.com,Bob,active\n,Nobody,active\ncarol@acme.com,Carol\nDan@Acme.com,Dan,active\n",
    );
    let (out, code) = run(dir.path(), &["records", "import", "people", "hr.csv"]);
    assert_eq!(
        out,
        "people: 3 created, 0 updated, 0 unchanged, 2 rejected\n0 run requests queued\nline 4: missing `email`\nline 5: expected 3 fields, found 2\n"
    );
    assert_eq!(code, 1);
    let (out, code) = run(dir.path(), &["records", "list", "people"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines()
            .map(|l| l.split("  ").next().unwrap())
            .collect::<Vec<_>>(),
        ["bob@acme.com", "dan@acme.com", "jane@acme.com"]
    );
}

#[test]
fn json_and_jsonl_import_and_report_items_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "users.json",
        r#"[{"app": "calendly", "email": "jane@acme.com", "role": "admin"}, 7, {"email": "x@acme.com"}]"#,
    );
    let (out, code) = run(
        dir.path(),
        &["records", "import", "saas_users", "users.json"],
    );
    assert_eq!(
        out,
        "saas_users: 1 created, 0 updated, 0 unchanged, 2 rejected\n0 run requests queued\nitem 2: expected an object, found a number\nitem 3: missing `app`\n"
    );
    assert_eq!(code, 1);
    write(
        dir.path(),
        "users.jsonl",
        "{\"app\": \"calendly\", \"email\": \"jane@acme.com\", \"role\": \"user\"}\n{not json\n\n{\"app\": \"webex\", \"email\": \"jane@acme.com\"}\n",
    );
    let (out, _) = run(
        dir.path(),
        &["records", "import", "saas_users", "users.jsonl"],
    );
    assert_eq!(
        out,
        "saas_users: 1 created, 1 updated, 0 unchanged, 1 rejected\n0 run requests queued\nline 2: invalid JSON: key must be a string\n"
    );
    let (out, code) = run(
        dir.path(),
        &[
            "records",
            "show",
            "saas_users",
            "calendly/jane@acme.com",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown,
        serde_json::json!({"app": "calendly", "email": "jane@acme.com", "role": "user"})
    );
}

#[test]
fn modes_and_dry_runs() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.csv",
        "email,status\na@x.io,active\nb@x.io,active\n",
    );
    write(
        dir.path(),
        "b.csv",
        "email,status\na@x.io,terminated\nc@x.io,active\nb@x.io,active\n",
    );
    let (out, _) = run(
        dir.path(),
        &["records", "import", "people", "a.csv", "--dry-run"],
    );
    assert_eq!(
        out,
        "dry run: people: 2 created, 0 updated, 0 unchanged, 0 rejected\n0 run requests would be queued; nothing was written\n"
    );
    let (out, _) = run(dir.path(), &["records", "list", "people", "--json"]);
    assert_eq!(out.trim(), "[]");
    run(dir.path(), &["records", "import", "people", "a.csv"]);
    let (out, _) = run(
        dir.path(),
        &[
            "records",
            "import",
            "people",
            "b.csv",
            "--mode",
            "create_only",
        ],
    );
    assert_eq!(
        out.lines().next().unwrap(),
        "people: 1 created, 0 updated, 2 unchanged, 0 rejected"
    );
    write(
        dir.path(),
        "d.csv",
        "email,status\na@x.io,terminated\nz@x.io,active\n",
    );
    let (out, code) = run(
        dir.path(),
        &[
            "records",
            "import",
            "people",
            "d.csv",
            "--mode",
            "update_only",
        ],
    );
    assert_eq!(
        out.lines().next().unwrap(),
        "people: 0 created, 1 updated, 0 unchanged, 0 rejected, 1 skipped (not found, `update_only`)"
    );
    assert_eq!(code, 0);
    let (out, _) = run(dir.path(), &["records", "show", "people", "A@X.IO"]);
    assert_eq!(out, "email: a@x.io\nstatus: terminated\n");
    let (out, code) = run(dir.path(), &["records", "delete", "people", "c@x.io"]);
    assert_eq!((out.as_str(), code), ("deleted people/c@x.io\n", 0));
    let (out, code) = run(dir.path(), &["records", "show", "people", "c@x.io"]);
    assert_eq!(
        (out.as_str(), code),
        (
            "error: no people record `c@x.io`; `blockyard records list people` shows them\n",
            1
        )
    );
}

#[test]
fn an_unknown_extension_asks_for_a_format() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "hr.txt", "email\na@x.io\n");
    let (out, code) = run(dir.path(), &["records", "import", "people", "hr.txt"]);
    assert_eq!(
        out,
        "error: cannot tell the format of `hr.txt` from its extension; pass `--format csv|json|jsonl`\n"
    );
    assert_eq!(code, 2);
    let (out, code) = run(
        dir.path(),
        &["records", "import", "people", "hr.txt", "--format", "csv"],
    );
    assert_eq!(
        (out.lines().next().unwrap(), code),
        ("people: 1 created, 0 updated, 0 unchanged, 0 rejected", 0)
    );
}

/// A workflow that starts on every new person, so every created record has exactly one run request.
const ON_CREATE: &str = include_str!("../fixtures/on-create.yaml");

#[test]
fn a_killed_import_leaves_no_record_without_its_trigger_and_no_trigger_without_its_record() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("workflows")).unwrap();
    write(&dir.path().join("workflows"), "on-create.yaml", ON_CREATE);
    let mut csv = String::from("email,name\n");
    for i in 0..200_000 {
        csv.push_str(&format!("user{i}@acme.com,User {i}\n"));
    }
    write(dir.path(), "big.csv", &csv);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blockyard"))
        .args(["records", "import", "people", "big.csv"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the import has written a few batches, then kill it mid-way.
    let log = dir.path().join(".blockyard/db/blobs");
    let started = std::time::Instant::now();
    while !log.exists() && started.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the import finished before it was killed; make the file bigger"
    );

    let (store, records) = open(dir.path());
    let keys: std::collections::BTreeSet<String> = records
        .list(Collection::People)
        .map(|r| r.unwrap().0.to_string())
        .collect();
    let queue = Queue::open(&store).unwrap();
    let mut queued = std::collections::BTreeSet::new();
    for entry in queue.pending().unwrap() {
        let subject = entry.request.subject.unwrap();
        assert!(
            queued.insert(subject.key.to_string()),
            "duplicate trigger for {subject}"
        );
    }
    assert_eq!(keys, queued, "records and their triggers differ");
    assert!(
        keys.len() < 200_000,
        "the kill came too late to test anything"
    );
    assert!(
        !keys.is_empty(),
        "the kill came before anything was written"
    );
    eprintln!("{} records written before the kill", keys.len());
}

/// Workflows whose `when:` would build 100 MB in one `replace` or runs past `rule_time_limit`:
/// the import goes on, the record matches neither, and the trace names each workflow and the
/// limit it hit. The `replace` alone used to allocate about 300 MB per evaluation.
#[test]
fn a_rule_stopped_by_a_limit_does_not_match_and_its_trace_names_the_workflow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("workflows")).unwrap();
    let workflow = |name: &str, when: &str| {
        format!(
            "name: {name}\nblocks:\n  begin:\n    type: begin\n    records: people\n    on: [created]\n    when: '{when}'\n    next: end\n  end: {{type: end}}\n"
        )
    };
    write(
        dir.path(),
        "workflows/amplify.yaml",
        &workflow(
            "amplify",
            r#"blob(10000, 97).as_string().replace("a", blob(10000, 97).as_string()) == """#,
        ),
    );
    write(
        dir.path(),
        "workflows/slow.yaml",
        &workflow(
            "slow",
            "blob(200, 1).to_array().map(|x| record.list.contains(-1)).len() > 0",
        ),
    );
    write(dir.path(), "blockyard.yaml", "rule_time_limit: 50ms\n");
    let list: Vec<u32> = (0..10_000).collect();
    write(
        dir.path(),
        "people.jsonl",
        &format!(
            "{}\n",
            serde_json::json!({"email": "jane@acme.com", "list": list})
        ),
    );
    let (out, code) = run(dir.path(), &["records", "import", "people", "people.jsonl"]);
    assert_eq!(
        (out.as_str(), code),
        (
            "people: 1 created, 0 updated, 0 unchanged, 0 rejected\n0 run requests queued\n",
            0
        )
    );
    let (out, code) = run(
        dir.path(),
        &["triggers", "why", "--subject", "jane@acme.com"],
    );
    assert_eq!(code, 0, "{out}");
    let checks: Vec<&str> = out.lines().filter(|l| l.contains("when `")).collect();
    assert_eq!(
        checks,
        [
            r#"      when `blob(10000, 97).as_string().replace("a", blob(10000, 97).as_string()) == ""`: error: workflow `amplify`: `when:` `replace` would build a string of 100000000 bytes; the limit for a rule is 65536 bytes, so simplify the rule (no match)"#,
            "      when `blob(200, 1).to_array().map(|x| record.list.contains(-1)).len() > 0`: error: workflow `slow`: `when:` ran longer than 50 ms, the time limit for a rule; simplify the rule, or raise `rule_time_limit` in blockyard.yaml (no match)",
        ]
    );
}

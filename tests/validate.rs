//! The workflow language: every compile error kind against its exact message and position, the
//! shipped workflows and presets, the `validate`, `graph`, `schema` and `presets` commands, and
//! large generated workflows.

use std::collections::BTreeSet;
use std::fmt::Write;

use blockyard::compile::{compile_source, CompileErrorKind};
use blockyard::preset::PresetRegistry;
use blockyard::spec::Source;
use serde_json::Value;

use crate::generate::{chain, fan_out};
use crate::support::{blockyard, blockyard_in, root, stderr, stdout};

/// One fixture per error kind in `tests/fixtures/invalid/`, with exactly what `validate` prints.
const EXPECTED: &[(&str, &str)] = &[
    (
        "cron",
        r#"cron.yaml:5:23: error: invalid cron expression `0 25 * * *`: number out of bounds in block `begin`; use 5 fields (`min hour day month weekday`), 6 with seconds first, or a nickname such as `@daily`"#,
    ),
    (
        "cycle",
        r#"cycle.yaml:4:3: error: cycle: `find` → `details` → `delete` → `find`; workflows are acyclic: use `retry:` to repeat a call"#,
    ),
    (
        "dead_end",
        r#"dead_end.yaml:4:3: error: block `details` has no path to `end`; give it a `next` or `on_failure` that leads to `end`"#,
    ),
    (
        "duplicate_begin",
        r#"duplicate_begin.yaml:4:3: error: block `start` is a second `begin` block (the first is `begin`)"#,
    ),
    (
        "duplicate_block",
        r#"duplicate_block.yaml:5:3: error: block `end` is defined twice (first at line 4)"#,
    ),
    (
        "duplicate_end",
        r#"duplicate_end.yaml:5:3: error: block `finish` is a second `end` block (the first is `end`)"#,
    ),
    (
        "duplicate_key",
        r#"duplicate_key.yaml:7:5: error: duplicate key `preset` (first at line 6) in block `delete`"#,
    ),
    (
        "edge_condition",
        r#"edge_condition.yaml:9:15: error: invalid expression in `next.when`: unexpected '=' (expression column 15) in block `begin`"#,
    ),
    (
        "edge_into_begin",
        r#"edge_into_begin.yaml:9:17: error: `on_failure` leads into `begin` in block `delete`; `begin` starts the run and takes no incoming edges"#,
    ),
    (
        "give_up_after",
        r#"give_up_after.yaml:9:22: error: invalid duration `a day` for `retry.give_up_after` (write a number and a unit: `500ms`, `30s`, `5m`, `1h`) in block `delete`"#,
    ),
    (
        "invalid_duration",
        r#"invalid_duration.yaml:8:14: error: invalid duration `30 seconds` for `timeout` (write a number and a unit: `500ms`, `30s`, `5m`, `1h`) in block `delete`"#,
    ),
    (
        "invalid_value",
        r#"invalid_value.yaml:9:21: error: invalid `retry.max_attempts`: invalid type: string "many", expected a whole number in block `delete`"#,
    ),
    (
        "malformed_preset",
        r#"malformed_preset.yaml:4:31: error: preset `webex_delete_user` is not `vendor.action` in block `delete`; write `vendor.action`, for example `webex.delete_user`"#,
    ),
    (
        "many_errors",
        r#"many_errors.yaml:11:5: error: unknown key `credentail` in block `find`; did you mean `credential`?
many_errors.yaml:13:7: error: preset `calendly.find_membership` has no input `emial` in block `find`; did you mean `email`?
many_errors.yaml:17:13: error: vendor `calendly` has no action `remove_membership` in block `remove`; did you mean `calendly.remove_user_membership`?
many_errors.yaml:18:11: error: `next` names block `ende`, which does not exist in block `remove`; did you mean `end`?"#,
    ),
    (
        "missing_begin",
        r#"missing_begin.yaml:2:1: error: the workflow has no `begin` block; add a block with `type: begin`"#,
    ),
    (
        "missing_blocks",
        r#"missing_blocks.yaml:1:1: error: missing key `blocks` in the workflow"#,
    ),
    (
        "missing_end",
        r#"missing_end.yaml:2:1: error: the workflow has no `end` block; add a block with `type: end`"#,
    ),
    (
        "missing_input",
        r#"missing_input.yaml:6:13: error: preset `webex.delete_user` requires input `webex_user_id` in block `delete`; give it in `with:`, or name `records:` in the begin block so `webex_user_id` can come from the subject record"#,
    ),
    (
        "missing_key",
        r#"missing_key.yaml:4:3: error: missing key `preset` in block `call`"#,
    ),
    (
        "missing_type",
        r#"missing_type.yaml:4:3: error: missing key `type` in block `delete`; add `type:` with one of `begin`, `api`, `role_retrieval`, `wait`, `end`"#,
    ),
    (
        "not_a_role_action",
        r#"not_a_role_action.yaml:6:13: error: preset `calendly.invite_user` reads no role, so it cannot serve `role_retrieval` in block `role`"#,
    ),
    (
        "not_a_workflow",
        r#"not_a_workflow.yaml:1:1: error: a workflow is a mapping with `name` and `blocks`"#,
    ),
    (
        "request_override",
        r#"request_override.yaml:9:15: error: invalid `request.method`: unknown method `ERASE`, expected one of `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` in block `delete`
request_override.yaml:10:13: error: invalid `request.path`: `https://elsewhere.example/people/{{inputs.webex_user_id}}` is an absolute URL; give the path below the credential's `base_url`, starting with `/`, so the credential's token never goes to another host in block `delete`
request_override.yaml:12:24: error: invalid `request.headers.Authorization`: `Authorization` comes from the block's credential and cannot be set here; name another credential with `credential:` in block `delete`
request_override.yaml:13:13: error: preset `webex.delete_user` has no input `webex_userid` in block `delete`; did you mean `webex_user_id`?"#,
    ),
    (
        "request_path",
        r#"request_path.yaml:8:21: error: invalid `request.path`: `/people?email={{vars.email}}` holds a `?` or `#`; give query parameters in `request.query` in block `find`
request_path.yaml:14:21: error: invalid `request.path`: `people/{{inputs.webex_user_id}}` must start with `/`: it is the path below the credential's `base_url` in block `relative`"#,
    ),
    (
        "rhai_syntax",
        r#"rhai_syntax.yaml:7:11: error: invalid expression in `when`: script is incomplete (expression column 33) in block `begin`"#,
    ),
    (
        "rule_operator",
        r#"rule_operator.yaml:8:30: error: unknown rule operator `eqals` in block `begin`; did you mean `equals`?"#,
    ),
    (
        "rule_value",
        r#"rule_value.yaml:8:57: error: rule operator `before_days` needs a whole number of days as `value` in block `begin`"#,
    ),
    (
        "syntax",
        r#"syntax.yaml:4:6: error: invalid yaml: did not find expected ',' or '}', while parsing a flow mapping"#,
    ),
    (
        "template_syntax",
        r#"template_syntax.yaml:8:22: error: invalid template in `with.webex_user_id`: an expression opened with `{{` is not closed with `}}` (template column 23) in block `delete`; write expressions as `{{name}}` or `<<name>>`"#,
    ),
    (
        "timezone",
        r#"timezone.yaml:5:43: error: unknown time zone `America/New_Yrok` in block `begin`; did you mean `America/New_York`?"#,
    ),
    (
        "trigger_without_records",
        r#"trigger_without_records.yaml:3:24: error: `on` needs `records:` to say which collection's events start a run in block `begin`"#,
    ),
    (
        "unknown_action",
        r#"unknown_action.yaml:6:13: error: vendor `webex` has no action `delet_user` in block `delete`; did you mean `webex.delete_user`?"#,
    ),
    (
        "unknown_block_key",
        r#"unknown_block_key.yaml:9:5: error: unknown key `credentail` in block `delete`; did you mean `credential`?"#,
    ),
    (
        "unknown_collection",
        r#"unknown_collection.yaml:3:33: error: unknown record collection `peeple` (collections are `people` and `saas_users`) in block `begin`; did you mean `people`?"#,
    ),
    (
        "unknown_event",
        r#"unknown_event.yaml:3:55: error: unknown record event `udpated` (events are `created`, `updated` and `deleted`) in block `begin`; did you mean `updated`?"#,
    ),
    (
        "unknown_input",
        r#"unknown_input.yaml:8:7: error: preset `webex.delete_user` has no input `webex_userid` in block `delete`; did you mean `webex_user_id`?"#,
    ),
    (
        "unknown_nested_key",
        r#"unknown_nested_key.yaml:9:7: error: unknown key `max_attemps` in `retry` in block `delete`; did you mean `max_attempts`?"#,
    ),
    (
        "unknown_target",
        r#"unknown_target.yaml:8:11: error: `next` names block `ned`, which does not exist in block `delete`; did you mean `end`?"#,
    ),
    (
        "unknown_top_level_key",
        r#"unknown_top_level_key.yaml:2:1: error: unknown key `descripton` in the workflow; did you mean `description`?"#,
    ),
    (
        "unknown_type",
        r#"unknown_type.yaml:5:11: error: unknown block type `apii` in block `delete`; did you mean `api`?"#,
    ),
    (
        "unknown_variable",
        r#"unknown_variable.yaml:8:22: error: unknown variable `recrod` in `with.webex_user_id` in block `delete`; did you mean `record`?"#,
    ),
    (
        "unknown_vendor",
        r#"unknown_vendor.yaml:4:31: error: unknown vendor `webx` in block `delete`; did you mean `webex`?"#,
    ),
    (
        "unreachable",
        r#"unreachable.yaml:4:3: error: block `orphan` is not reachable from `begin`; name it in the `next` or `on_failure` of an earlier block"#,
    ),
    (
        "block_refs",
        r#"block_refs.yaml:13:20: error: `outputs.who` reads `blocks.find`, but `find` is not on the way from `begin` to this block, so it may not have run in block `audit`; a block starts once every block before it has settled; lead `find` into it with `next`, or read another block
block_refs.yaml:18:29: error: `with.membership_uuid` reads output `membershp` of block `find`, which has `membership` in block `remove`; did you mean `membership`?
block_refs.yaml:20:19: error: `save.removed_by` reads `blocks.ghost`, but there is no block `ghost` in block `remove`
block_refs.yaml:21:19: error: `save.status_was` reads `blocks.find.statuss`; a block has `response`, `outputs`, `status` and `outcome` in block `remove`; did you mean `status`?
block_refs.yaml:22:12: error: `save.own` reads `blocks.remove`, its own block, which has not settled yet in block `remove`; a block reads its own call as `response`, `status` and `headers` (in `save:` and `outputs:`)"#,
    ),
    (
        "collect_not_a_list",
        r#"collect_not_a_list.yaml:7:5: error: invalid `collect`: preset `calendly.current_user` does not list items, so there is nothing to collect; use a list action such as `calendly.list_memberships` in block `me`"#,
    ),
    (
        "collect_options",
        r#"collect_options.yaml:8:13: error: unknown value `saas_user` for `collect.into` (expected one of `people`, `saas_users`) in block `members`; did you mean `saas_users`?
collect_options.yaml:9:12: error: invalid `collect.key`: `mail` is not one of the mapped `fields`, so records cannot be matched; map it, for example `mail: "{{item.email}}"` in block `members`
collect_options.yaml:10:13: error: unknown value `create_and_update` for `collect.mode` (expected one of `create_update`, `create_only`, `update_only`) in block `members`; did you mean `create_update`?
collect_options.yaml:11:53: error: unknown variable `record` in `collect.fields.name` in block `members`
collect_options.yaml:12:16: error: unknown value `deactivated` for `collect.missing` (expected one of `keep`, `deactivate`) in block `members`; did you mean `deactivate`?"#,
    ),
    (
        "answers",
        r#"answers.yaml:8:26: error: `answers` entry `404` misses how `calendly.find_membership` says not found: an empty `/collection` with status 200, not a 404 in block `find`; write `not_found`, which counts both
answers.yaml:8:31: error: `answers` entry `204` is a success already in block `find`; `answers` lists the statuses that would otherwise fail the block
answers.yaml:8:36: error: `answers` entry `99` is not an HTTP status (100 to 599) in block `find`
answers.yaml:8:40: error: `answers` entry `notfound` is neither an HTTP status nor `not_found` in block `find`; did you mean `not_found`?
answers.yaml:8:50: error: `answers` entry `503` is a transient failure, which blockyard retries; it is never a result in block `find`; set `retry:` for how long to keep trying
answers.yaml:10:7: error: invalid `outputs.found`: `found` is the output a block listing `not_found` in `answers` has already; name this output otherwise in block `find`
answers.yaml:18:18: error: `answers` entry `409` is listed twice in block `create`
answers.yaml:20:9: error: `answers` entry `404` is counted twice: `not_found` counts a 404 already in block `create`
answers.yaml:21:29: error: invalid expression in `answers.when`: script is incomplete (expression column 18) in block `create`"#,
    ),
    (
        "answers_shape",
        r#"answers_shape.yaml:8:14: error: invalid `answers`: invalid type: integer `409`, expected a list of statuses, `not_found` or `{status, when}` entries in block `one`
answers_shape.yaml:14:15: error: missing key `status` in `answers[0]` in block `two`
answers_shape.yaml:14:16: error: unknown key `code` in `answers[0]` in block `two`
answers_shape.yaml:20:5: error: unknown key `answers` in block `role`"#,
    ),
    (
        "exclude_without_records",
        r#"exclude_without_records.yaml:6:5: error: `exclude` leaves out records, so it needs `records:` in block `begin`"#,
    ),
    (
        "misspelt_blocks",
        r#"misspelt_blocks.yaml:1:1: error: missing key `blocks` in the workflow
misspelt_blocks.yaml:2:1: error: unknown key `blokcs` in the workflow; did you mean `blocks`?"#,
    ),
    (
        "cron_and_timezone",
        r#"cron_and_timezone.yaml:5:23: error: invalid cron expression `0 25 * * *`: number out of bounds in block `begin`; use 5 fields (`min hour day month weekday`), 6 with seconds first, or a nickname such as `@daily`
cron_and_timezone.yaml:5:47: error: unknown time zone `America/New_Yrok` in block `begin`; did you mean `America/New_York`?"#,
    ),
    (
        "wait",
        r#"wait.yaml:2:11: error: unknown time zone `Europe/Berlni`; did you mean `Europe/Berlin`?
wait.yaml:5:31: error: block `both` has both `for:` and `until:`; a wait takes one of them
wait.yaml:6:13: error: block `neither` waits for nothing; give it `for:` (a duration such as `7d`) or `until:` (a time, such as `"{{record.last_day}}"`)
wait.yaml:7:26: error: invalid duration `7 days` for `for` (write a number and a unit: `500ms`, `30s`, `5m`, `1h`) in block `bad`
wait.yaml:8:34: error: unknown key `untill` in block `unknown`; did you mean `until`?
wait.yaml:9:32: error: block `wakes` has `wake_when:`, which reads the subject record, but the workflow has none; name `records:` in the begin block"#,
    ),
    (
        "wait_rules",
        r#"wait_rules.yaml:7:44: error: unknown rule operator `after_dayz` in block `rules`; did you mean `after_days`?
wait_rules.yaml:9:43: error: invalid `wake_when`: write a rhai condition (a string) or a list of rules (`{field, op, value}`) in block `shape`
wait_rules.yaml:10:63: error: invalid expression in `wake_when`: script is incomplete (expression column 17) in block `rhai`"#,
    ),
];

#[test]
fn every_invalid_fixture_prints_its_exact_errors() {
    let dir = root().join("tests/fixtures/invalid");
    let mut failures = String::new();
    for (name, expected) in EXPECTED {
        let out = blockyard_in(&dir, &["validate", &format!("{name}.yaml")]);
        let printed = stdout(&out);
        if printed.trim_end() != *expected || out.status.code() != Some(1) {
            let _ = writeln!(
                failures,
                "--- {name} (exit {:?})\nexpected:\n{expected}\nprinted:\n{printed}",
                out.status.code()
            );
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn every_fixture_file_has_an_expectation() {
    let names: BTreeSet<String> = std::fs::read_dir(root().join("tests/fixtures/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = EXPECTED.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, expected);
}

#[test]
fn validate_json_prints_file_line_column_block_and_message() {
    let dir = root().join("tests/fixtures/invalid");
    let out = blockyard_in(
        &dir,
        &[
            "validate",
            "--json",
            "unknown_target.yaml",
            "missing_blocks.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {
                "file": "unknown_target.yaml",
                "line": 8,
                "column": 11,
                "block": "delete",
                "message": "`next` names block `ned`, which does not exist in block `delete`; did you mean `end`?"
            },
            {
                "file": "missing_blocks.yaml",
                "line": 1,
                "column": 1,
                "block": null,
                "message": "missing key `blocks` in the workflow"
            }
        ])
    );
}

#[test]
fn shipped_workflows_validate() {
    let out = blockyard(&["validate", "workflows/"]);
    assert_eq!(stdout(&out), "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(" 0 invalid (0 errors)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_shipped_workflow_and_preset_compiles() {
    let presets = PresetRegistry::with_dir(&root().join("presets")).expect("presets/ loads");
    let mut count = 0;
    for entry in std::fs::read_dir(root().join("workflows")).unwrap() {
        let path = entry.unwrap().path();
        let source = Source::read(&path).unwrap();
        if let Err(errors) = compile_source(source, &presets) {
            panic!("{} does not compile: {errors:#?}", path.display());
        }
        count += 1;
    }
    assert!(count >= 4, "only {count} workflows shipped");
    let actions = presets.actions().count();
    assert!(actions >= 29, "only {actions} preset actions");
}

#[test]
fn validate_distinguishes_invalid_workflows_from_usage_errors() {
    let missing = blockyard(&["validate", "no/such/dir"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing),
        "error: cannot read `no/such/dir`: No such file or directory (os error 2)\n"
    );
    let nothing = blockyard(&["validate"]);
    assert_eq!(nothing.status.code(), Some(2));
    let mixed = blockyard(&[
        "validate",
        "workflows/",
        "tests/fixtures/invalid/cycle.yaml",
    ]);
    assert_eq!(mixed.status.code(), Some(1));
    assert_eq!(
        stdout(&mixed),
        "tests/fixtures/invalid/cycle.yaml:4:3: error: cycle: `find` → `details` → `delete` → `find`; workflows are acyclic: use `retry:` to repeat a call\n"
    );
}

#[test]
fn graph_draws_mermaid_with_shapes_and_labelled_edges() {
    let out = blockyard(&["graph", "workflows/calendly-offboard.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        r#"flowchart TD
    n0(["begin"])
    n1["find<br/>calendly.find_membership"]
    n2["remove<br/>calendly.remove_user_membership"]
    n3((("end")))
    n0 --> n1
    n1 -->|"when blocks.find.outputs.found"| n2
    n1 -->|"when !blocks.find.outputs.found"| n3
    n2 --> n3
"#
    );
}

#[test]
fn graph_labels_conditional_edges_and_role_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("branch.yaml");
    std::fs::write(
        &file,
        r#"name: branch
blocks:
  begin:
    type: begin
    records: saas_users
    schedule: {cron: "@daily"}
    next:
      - {to: role, when: 'record.app == "calendly"'}
      - end
  role: {type: role_retrieval, preset: calendly.user_role, next: end, on_failure: end}
  end: {type: end}
"#,
    )
    .unwrap();
    let out = blockyard(&["graph", file.to_str().unwrap(), "--format", "dot"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(
        dot.contains(r#"n1 [shape=hexagon, label="role\ncalendly.user_role"];"#),
        "{dot}"
    );
    assert!(
        dot.contains(r#"n0 -> n1 [label="when record.app == \"calendly\""];"#),
        "{dot}"
    );
    assert!(
        dot.contains(r##"n1 -> n2 [style=dashed, color="#c0392b", label="on_failure"];"##),
        "{dot}"
    );
    let mermaid = stdout(&blockyard(&["graph", file.to_str().unwrap()]));
    assert!(
        mermaid.contains(r#"n1{{"role<br/>calendly.user_role"}}"#),
        "{mermaid}"
    );
    assert!(
        mermaid.contains(r##"n0 -->|"when record.app == #quot;calendly#quot;"| n1"##),
        "{mermaid}"
    );
}

#[test]
fn graph_marks_approval_gates_in_mermaid_and_dot() {
    let out = blockyard(&["graph", "workflows/scim-provision.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mermaid = stdout(&out);
    assert!(
        mermaid.contains("    n5[\"delete<br/>scim.delete_user<br/>approval required\"]\n"),
        "{mermaid}"
    );
    assert_eq!(mermaid.matches("approval required").count(), 1, "{mermaid}");
    let out = blockyard(&["graph", "workflows/scim-provision.yaml", "--format", "dot"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(
        dot.contains(r#"    n5 [shape=box, style=bold, label="delete\nscim.delete_user\napproval required"];"#),
        "{dot}"
    );
    assert_eq!(dot.matches("style=bold").count(), 1, "{dot}");
}

#[test]
fn graph_dot_renders_with_graphviz() {
    if std::process::Command::new("dot")
        .arg("-V")
        .output()
        .is_err()
    {
        // CI installs Graphviz (`.ci/run`); a developer machine without it skips the render.
        assert!(
            std::env::var_os("CI").is_none(),
            "Graphviz `dot` is required in CI"
        );
        eprintln!("skipping: Graphviz `dot` is not installed");
        return;
    }
    for workflow in [
        "webex-offboard",
        "calendly-offboard",
        "calendly-role-daily",
        "calendly-invite",
    ] {
        let out = blockyard(&[
            "graph",
            &format!("workflows/{workflow}.yaml"),
            "--format",
            "dot",
        ]);
        let mut child = std::process::Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let rendered = child.wait_with_output().unwrap();
        assert!(
            rendered.status.success(),
            "{workflow}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        assert!(String::from_utf8_lossy(&rendered.stdout).contains("<svg"));
    }
}

#[test]
fn graph_of_an_invalid_workflow_prints_its_errors() {
    let out = blockyard(&["graph", "tests/fixtures/invalid/unreachable.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "tests/fixtures/invalid/unreachable.yaml:4:3: error: block `orphan` is not reachable from `begin`; name it in the `next` or `on_failure` of an earlier block\n"
    );
}

#[test]
fn schema_describes_the_language() {
    let out = blockyard(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(schema["title"], "blockyard workflow");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["name", "blocks"]));
    let text = schema.to_string();
    for kind in ["\"begin\"", "\"api\"", "\"role_retrieval\"", "\"end\""] {
        assert!(text.contains(kind), "schema lacks block type {kind}");
    }
}

#[test]
fn presets_list_json_has_exactly_the_documented_keys() {
    let out = blockyard(&["presets", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let list: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list.len(), PresetRegistry::builtin().actions().count());
    for item in &list {
        let keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["vendor", "action", "title", "kind", "method", "path"]
        );
    }
    let invite = list.iter().find(|i| i["action"] == "invite_user").unwrap();
    assert_eq!(
        invite,
        &serde_json::json!({
            "vendor": "calendly", "action": "invite_user", "title": "Calendly Invite User",
            "kind": "write", "method": "POST", "path": "/organizations/{{last_segment organization}}/invitations"
        })
    );
}

#[test]
fn presets_show_describes_inputs() {
    let out = blockyard(&["presets", "show", "webex.delete_user", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let shown: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["title"], "Webex Delete User");
    assert_eq!(shown["method"], "DELETE");
    assert_eq!(
        shown["inputs"],
        serde_json::json!([{"name": "webex_user_id", "required": true, "description": "The person's id."}])
    );
    let typo = blockyard(&["presets", "show", "webex.delet_user"]);
    assert_eq!(typo.status.code(), Some(2));
    assert_eq!(
        stderr(&typo),
        "error: there is no preset action `webex.delet_user`; did you mean `webex.delete_user`?\n"
    );
}

#[test]
fn a_ten_thousand_block_chain_compiles() {
    let workflow = compile_source(
        Source::new("chain.yaml", chain(10_000)),
        &PresetRegistry::builtin(),
    )
    .unwrap();
    assert_eq!(workflow.graph.node_count(), 10_002);
    assert_eq!(workflow.graph.edge_count(), 10_000 + 1 + 10_000);
}

#[test]
fn a_thousand_wide_fan_out_compiles_and_a_broken_one_reports_each_block() {
    let yaml = fan_out(1000);
    let workflow = compile_source(
        Source::new("fan.yaml", yaml.clone()),
        &PresetRegistry::builtin(),
    )
    .unwrap();
    assert_eq!(workflow.graph.node_count(), 1002);
    let broken = yaml.replace("next: end}", "}");
    let errors =
        compile_source(Source::new("fan.yaml", broken), &PresetRegistry::builtin()).unwrap_err();
    // Every fanned-out block and `begin` lead nowhere, and nothing leads to `end`.
    assert_eq!(errors.len(), 1002);
    assert_eq!(
        errors
            .iter()
            .filter(|e| matches!(e.kind, CompileErrorKind::DeadEnd { .. }))
            .count(),
        1001
    );
    assert_eq!(
        errors[1001].to_string(),
        "fan.yaml:1006:3: error: block `end` is not reachable from `begin`; name it in the `next` or `on_failure` of an earlier block"
    );
    assert_eq!(
        errors[1000].to_string(),
        "fan.yaml:1005:3: error: block `b999` has no path to `end`; give it a `next` or `on_failure` that leads to `end`"
    );
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    // The read end is closed before the command starts, so its first write fails (as in
    // `blockyard presets list | head -0`): no panic message, the status a shell shows for SIGPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blockyard"))
        .args(["presets", "list"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert_eq!(stderr(&out), "");
}

/// A workflow nested 10,000 levels deep (block style, one space per level): refused at the 129th
/// level with its position, where it used to abort `validate` with a stack overflow.
#[test]
fn a_ten_thousand_level_mapping_is_refused_where_it_passes_the_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("name: deep\nvars:\n");
    for level in 1..=10_000 {
        text.push_str(&" ".repeat(level));
        text.push_str("k:\n");
    }
    text.push_str("blocks:\n  begin: {type: begin, next: end}\n  end: {type: end}\n");
    std::fs::write(dir.path().join("deep.yaml"), text).unwrap();
    let out = blockyard_in(dir.path(), &["validate", "deep.yaml"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str(), stderr(&out).as_str()),
        (
            Some(1),
            "deep.yaml:130:129: error: yaml nested more than 128 levels deep; nest mappings and lists at most 128 levels\n",
            "checked 1 workflow: 0 valid, 1 invalid (1 error)\n"
        )
    );
}

/// An anchor on a 1 MB string and 2,000 aliases of it (2 GB once expanded): refused at the alias
/// that passes 1 MiB of expansion, where it used to take seconds and gigabytes to validate.
#[test]
fn aliases_that_expand_past_the_limit_are_refused_at_the_alias() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "name: bomb\nvars:\n  big: &big \"{}\"\n  copies:\n",
        "x".repeat(1_000_000)
    );
    for _ in 0..2000 {
        text.push_str("    - *big\n");
    }
    text.push_str("blocks:\n  begin: {type: begin, next: end}\n  end: {type: end}\n");
    std::fs::write(dir.path().join("bomb.yaml"), text).unwrap();
    let out = blockyard_in(dir.path(), &["validate", "bomb.yaml"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (
            Some(1),
            "bomb.yaml:6:7: error: yaml aliases expand to more than 1 MiB; alias large values fewer times (1 MiB of expansion is the limit)\n"
        )
    );
}

/// Every command and subcommand path of the binary, from `--help`'s `Commands:` sections.
fn command_paths(prefix: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args.push("--help");
    let help = crate::support::stdout(&crate::support::blockyard(&args));
    let mut out = vec![prefix.to_vec()];
    let Some(section) = help.split("Commands:\n").nth(1) else {
        return out;
    };
    for line in section.lines().take_while(|l| l.starts_with("  ")) {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name == "help" {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(name.to_owned());
        out.extend(command_paths(&path));
    }
    out
}

#[test]
fn every_json_flag_says_what_it_prints() {
    let mut bare = Vec::new();
    let mut with_json = 0;
    for path in command_paths(&[]) {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = crate::support::stdout(&crate::support::blockyard(&args));
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with("--json") {
                continue;
            }
            with_json += 1;
            // Short help puts the description on the flag's line, long help on the next one.
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
            if line.trim() == "--json" && (next.is_empty() || next.starts_with('-')) {
                bare.push(path.join(" "));
            }
        }
    }
    assert!(with_json >= 10, "found only {with_json} `--json` flags");
    assert!(
        bare.is_empty(),
        "`--json` without a description in: {bare:?}"
    );
}

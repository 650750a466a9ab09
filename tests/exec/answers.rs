//! `answers:`: vendor answers a block counts as results rather than failures. An answered block
//! succeeds (its `found` output says whether the vendor had the thing), applies no `save:` and
//! renders no `outputs:`, and its edges route on it; an answer it does not list still fails.

use std::path::Path;

use blockyard::exec::{RunRequest, RunStatus};
use blockyard::store::history::{StepRecord, StepStatus};
use serde_json::{json, Value};

use crate::support::Env;

/// A lookup of a Webex person who does not exist (404), routed on `found`.
const LOOKUP: &str = r#"name: lookup
blocks:
  begin: {type: begin, next: details}
  details:
    type: api
    preset: webex.get_user_details
    with: {webex_user_id: Y2lzY29zcGFyazovL3VzL1BFT1BMRS9ub2JvZHk}
    answers: [not_found]
    outputs:
      email: "{{response.emails.0}}"
    next:
      - {to: gone, when: '!blocks.details.outputs.found'}
      - {to: there, when: 'blocks.details.outputs.found'}
  gone: {type: api, preset: webex.list_people, next: end}
  there: {type: api, preset: webex.list_people, next: end}
  end: {type: end}
"#;

fn step<'a>(steps: &'a [StepRecord], block: &str) -> &'a StepRecord {
    steps
        .iter()
        .find(|s| s.block == block)
        .unwrap_or_else(|| panic!("no step `{block}` in {steps:#?}"))
}

fn statuses(steps: &[StepRecord]) -> Vec<(&str, StepStatus)> {
    steps.iter().map(|s| (s.block.as_str(), s.status)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_404_succeeds_saves_nothing_and_routes_on_found() {
    let env = Env::seeded(2).await;
    let engine = env.engine();
    let prepared = engine
        .prepare(Path::new("lookup.yaml"), LOOKUP.to_owned())
        .unwrap();
    let run = engine
        .run(&prepared, RunRequest::manual(None))
        .await
        .unwrap();
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:#?}", run.steps);
    assert_eq!(
        statuses(&run.steps),
        [
            ("begin", StepStatus::Succeeded),
            ("details", StepStatus::Succeeded),
            ("gone", StepStatus::Succeeded),
            ("there", StepStatus::Skipped),
            ("end", StepStatus::Succeeded),
        ]
    );
    let details = step(&run.steps, "details");
    // The block's own `outputs:` are for a person; the answer has only `found`.
    assert_eq!(
        Value::Object(details.outputs.clone()),
        json!({"found": false})
    );
    assert!(details.saved.is_empty());
    assert_eq!(details.error, None);
    assert_eq!(details.response.as_ref().unwrap().status, 404);
    assert_eq!(
        details.note.as_deref(),
        Some("answered 404 (not found), which `answers` lists: a result, not a failure; nothing saved")
    );
}

/// Invites an existing member (400 `Already Organization Member`) and then a malformed address
/// (400 `Invalid Email`) under the same answer.
const INVITES: &str = r#"name: invites
vars:
  member: MEMBER
blocks:
  begin: {type: begin, next: again}
  again:
    type: api
    preset: calendly.invite_user
    with: {email: "{{vars.member}}"}
    answers:
      - {status: 400, when: 'response.title == "Already Organization Member"'}
    save: {calendly_status: invited}
    next:
      - {to: invalid, when: 'blocks.again.status == 400'}
  invalid:
    type: api
    preset: calendly.invite_user
    with: {email: "someone@localhost"}
    answers:
      - {status: 400, when: 'response.title == "Already Organization Member"'}
    next: end
  end: {type: end}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_answer_counts_only_when_its_condition_holds() {
    let env = Env::seeded(3).await;
    let (member, _, _) = env.member().await;
    let engine = env.engine();
    let prepared = engine
        .prepare(
            Path::new("invites.yaml"),
            INVITES.replace("MEMBER", &member),
        )
        .unwrap();
    let run = engine
        .run(&prepared, RunRequest::manual(None))
        .await
        .unwrap();
    assert_eq!(run.run.status, RunStatus::Failed, "{:#?}", run.steps);
    let again = step(&run.steps, "again");
    assert_eq!(again.status, StepStatus::Succeeded);
    assert_eq!(Value::Object(again.outputs.clone()), json!({}));
    assert!(again.saved.is_empty(), "an answer saves nothing");
    assert_eq!(
        again.note.as_deref(),
        Some("answered 400, which `answers` lists: a result, not a failure; nothing saved")
    );
    // The same status with another title is the vendor refusing: a failure, as before.
    let invalid = step(&run.steps, "invalid");
    assert_eq!(invalid.status, StepStatus::Failed);
    assert_eq!(
        invalid.error.as_deref(),
        Some("`calendly.invite_user`: `calendly` answered 400 `Invalid Email`: The email address is invalid.")
    );
    assert_eq!(env.count("POST", "/invitations"), 2);
}

/// Calendly answers a lookup of an unknown address with an empty list: the preset's `not_found`.
const FIND: &str = r#"name: find
blocks:
  begin: {type: begin, next: find}
  find:
    type: api
    preset: calendly.find_membership
    with: {email: nobody@example.com}
    answers: [not_found]
    next: end
  end: {type: end}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_list_the_preset_calls_not_found_is_the_not_found_answer_and_replays_offline() {
    let env = Env::seeded(2).await;
    let id = {
        let engine = env.engine();
        let prepared = engine
            .prepare(Path::new("find.yaml"), FIND.to_owned())
            .unwrap();
        let run = engine
            .run(&prepared, RunRequest::manual(None))
            .await
            .unwrap();
        assert_eq!(run.run.status, RunStatus::Succeeded, "{:#?}", run.steps);
        let find = step(&run.steps, "find");
        assert_eq!(Value::Object(find.outputs.clone()), json!({"found": false}));
        assert_eq!(find.response.as_ref().unwrap().status, 200);
        assert_eq!(
            find.note.as_deref(),
            Some("answered 200 (not found), which `answers` lists: a result, not a failure; nothing saved")
        );
        run.run.id.to_string()
    };
    // Offline, the recorded answer is judged again by the same `answers:` and matches.
    let (code, stdout, stderr) = env.run(&["replay", &id, "--offline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("identical"), "{stdout}");
}

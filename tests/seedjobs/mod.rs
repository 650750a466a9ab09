//! The shipped workflows end to end against the in-process sandbox: each test runs the real file
//! from `workflows/` through an in-process [`Engine`] over a temp data dir, then checks the
//! vendor's side (the sandbox's request log and state) and the records, not only the run status.

use std::sync::Arc;

use blockyard::exec::{Engine, RunOutcome, RunRequest, RunStatus};
use blockyard::records::{Collection, RecordKey, Subject};
use blockyard::sandbox::SandboxConfig;
use blockyard::store::history::{self, RunMode};
use blockyard::trigger::Triggers;
use serde_json::{json, Map, Value};

use crate::support::{self, Env};

/// A [`support::Env`] and an engine over its data dir.
struct Harness {
    env: Env,
    engine: Engine,
}

impl std::ops::Deref for Harness {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.env
    }
}

impl Harness {
    async fn new(config: SandboxConfig) -> Harness {
        let env = Env::start(config).await;
        let engine = env.engine();
        Harness { env, engine }
    }

    async fn seeded(users: usize) -> Harness {
        Harness::new(SandboxConfig {
            seed_users: users,
            ..SandboxConfig::default()
        })
        .await
    }

    async fn run(&self, name: &str, subject: Option<history::Subject>) -> RunOutcome {
        self.run_mode(name, subject, RunMode::Live).await
    }

    async fn run_mode(
        &self,
        name: &str,
        subject: Option<history::Subject>,
        mode: RunMode,
    ) -> RunOutcome {
        self.run_with(name, subject, mode, Map::new()).await
    }

    /// [`Harness::run_mode`] with `--var` values.
    async fn run_with(
        &self,
        name: &str,
        subject: Option<history::Subject>,
        mode: RunMode,
        vars: Map<String, Value>,
    ) -> RunOutcome {
        let prepared = self.engine.prepare_file(&support::workflow(name)).unwrap();
        let request = RunRequest {
            mode,
            vars,
            ..RunRequest::manual(subject)
        };
        self.engine.run(&prepared, request).await.unwrap()
    }

    /// Runs `name` live and asserts that the run succeeded with no block failed: a benign
    /// answer (not found, already exists) is one the workflow lists in `answers:`, never a
    /// failure routed around with `on_failure`.
    async fn run_succeeded(&self, name: &str, subject: Option<history::Subject>) -> RunOutcome {
        let run = self.run(name, subject).await;
        assert_eq!(run.run.status, RunStatus::Succeeded, "{:#?}", run.steps);
        let failed: Vec<&str> = run
            .steps
            .iter()
            .filter(|s| s.status == history::StepStatus::Failed)
            .map(|s| s.block.as_str())
            .collect();
        assert!(
            failed.is_empty(),
            "failed blocks {failed:?}: {:#?}",
            run.steps
        );
        run
    }

    /// Loads the shipped workflows' record triggers into the engine, and opens their queue.
    fn watch_shipped_workflows(&self) -> blockyard::trigger::Queue {
        let triggers = Triggers::load_dir(
            &support::root().join("workflows"),
            self.engine.client().presets(),
            &self.config().vars.into_iter().collect(),
        )
        .unwrap();
        self.engine.set_triggers(std::sync::Arc::new(triggers));
        blockyard::trigger::Queue::open(self.engine.records().store()).unwrap()
    }

    /// The subject of a run over the stored `saas_users` record `key`.
    fn stored(&self, key: &str) -> Option<history::Subject> {
        let record = self.record(Collection::SaasUsers, key).unwrap();
        subject("saas_users", key, Value::Object(record))
    }

    fn record(&self, collection: Collection, key: &str) -> Option<Map<String, Value>> {
        self.engine
            .records()
            .get(&Subject::new(collection, RecordKey::parse(key)))
            .unwrap()
    }

    /// Removes a membership at the vendor (as an admin would), outside any workflow.
    async fn remove_member(&self, uri: &str) {
        let uuid = uri.rsplit('/').next().unwrap();
        let url = format!("{}/organization_memberships/{uuid}", self.sb.calendly_url());
        let status = reqwest::Client::new()
            .delete(url)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }
}

fn subject(collection: &str, key: &str, record: Value) -> Option<history::Subject> {
    Some(history::Subject {
        collection: collection.to_owned(),
        key: key.to_owned(),
        record,
    })
}

fn step<'a>(outcome: &'a RunOutcome, block: &str) -> &'a history::StepRecord {
    outcome
        .steps
        .iter()
        .rev()
        .find(|s| s.block == block)
        .unwrap_or_else(|| panic!("no step `{block}` in {:#?}", outcome.steps))
}

fn status(record: &Map<String, Value>) -> &str {
    record["status"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendly_ingest_creates_deactivates_and_dry_runs_list_without_writing() {
    let h = Harness::seeded(6).await;
    let members = h.members().await;
    let first = h.run_succeeded("calendly-ingest.yaml", None).await;
    let outputs = &step(&first, "members").outputs;
    assert_eq!(outputs["new"], 6);
    assert_eq!(outputs["deactivated"], 0);
    assert_eq!(h.engine.records().count(Collection::SaasUsers), 6);
    for (email, uri, role) in &members {
        let record = h
            .record(Collection::SaasUsers, &format!("calendly/{email}"))
            .unwrap();
        assert_eq!(status(&record), "active");
        assert_eq!(record["calendly_membership"], json!(uri));
        assert_eq!(record["role"], json!(role));
    }

    // The vendor drops a member: a dry run lists it, writes nothing.
    let (gone, uri, _) = h.member().await;
    h.remove_member(&uri).await;
    let key = format!("calendly/{gone}");
    let dry = h
        .run_mode("calendly-ingest.yaml", None, RunMode::DryRun)
        .await;
    let outputs = &step(&dry, "members").outputs;
    assert_eq!(outputs["lists"]["deactivated"], json!([key]));
    assert_eq!(outputs["lists"]["new"], json!([]));
    assert_eq!(outputs["lists"]["updated"], json!([]));
    assert_eq!(
        status(&h.record(Collection::SaasUsers, &key).unwrap()),
        "active"
    );

    // A live run deactivates it; the others are unchanged.
    let second = h.run("calendly-ingest.yaml", None).await;
    let outputs = &step(&second, "members").outputs;
    assert_eq!(outputs["deactivated"], 1);
    assert_eq!(outputs["new"], 0);
    assert_eq!(outputs["updated"], 0);
    assert_eq!(
        status(&h.record(Collection::SaasUsers, &key).unwrap()),
        "deactivated"
    );
    // A third run has nothing left to do: an already deactivated record is not listed again.
    let third = h.run("calendly-ingest.yaml", None).await;
    assert_eq!(step(&third, "members").outputs["deactivated"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendly_ingest_reactivates_a_deactivated_user_listed_again() {
    let h = Harness::seeded(3).await;
    let (email, _, _) = h.member().await;
    let key = format!("calendly/{email}");
    h.run("calendly-ingest.yaml", None).await;
    let write = blockyard::records::Write {
        subject: Subject::new(Collection::SaasUsers, RecordKey::parse(&key)),
        change: blockyard::records::Change::Upsert {
            fields: json!({"status": "deactivated", "note": "kept"})
                .as_object()
                .unwrap()
                .clone(),
            mode: blockyard::records::WriteMode::CreateUpdate,
        },
    };
    h.engine
        .records()
        .write(&[write], &Triggers::none(), chrono::Utc::now())
        .unwrap();
    let again = h.run("calendly-ingest.yaml", None).await;
    let outputs = &step(&again, "members").outputs;
    assert_eq!(outputs["lists"]["activated"], json!([key]));
    let record = h.record(Collection::SaasUsers, &key).unwrap();
    assert_eq!(status(&record), "active");
    assert_eq!(record["note"], "kept", "fields saved on the record survive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendly_role_daily_writes_the_role_and_deactivates_a_removed_member() {
    let h = Harness::seeded(4).await;
    h.run("calendly-ingest.yaml", None).await;
    let (email, uri, role) = h.member().await;
    let key = format!("calendly/{email}");
    let run = h
        .run_succeeded("calendly-role-daily.yaml", h.stored(&key))
        .await;
    let role_step = step(&run, "role");
    assert_eq!(role_step.outputs["found"], true);
    assert_eq!(role_step.outputs["role"], json!(role));
    let stored = h.record(Collection::SaasUsers, &key).unwrap();
    assert_eq!(stored["role"], json!(role));
    assert_eq!(status(&stored), "active");
    // The activity log was read (Enterprise plan).
    assert!(h.count("GET", "activity_log_entries") >= 1);

    // Removed at the vendor: deactivated locally.
    h.remove_member(&uri).await;
    let run = h.run("calendly-role-daily.yaml", h.stored(&key)).await;
    assert_eq!(run.run.status, RunStatus::Succeeded);
    assert_eq!(step(&run, "role").outputs["found"], false);
    let stored = h.record(Collection::SaasUsers, &key).unwrap();
    assert_eq!(status(&stored), "deactivated");

    // Already deactivated: not processed (no call).
    let before = h.sb.requests().len();
    let run = h.run("calendly-role-daily.yaml", h.stored(&key)).await;
    assert_eq!(run.run.status, RunStatus::Succeeded);
    assert_eq!(h.sb.requests().len(), before, "no vendor call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendly_role_daily_never_deactivates_on_a_vendor_error() {
    let h = Harness::new(SandboxConfig {
        seed_users: 2,
        fail_rate: 1.0,
        ..SandboxConfig::default()
    })
    .await;
    let key = "calendly/someone@example.com";
    let record = json!({"app": "calendly", "email": "someone@example.com", "status": "active", "last_activity": "2024-01-01T00:00:00Z"});
    let run = h
        .run(
            "calendly-role-daily.yaml",
            subject("saas_users", key, record),
        )
        .await;
    // A 503 is transient: the run waits to try again, and deactivates nobody meanwhile.
    assert_eq!(run.run.status, RunStatus::Retrying);
    let role = step(&run, "role");
    assert_eq!(role.status, history::StepStatus::Retrying, "{role:#?}");
    assert!(role.saved.is_empty(), "{:?}", role.saved);
    assert!(
        h.record(Collection::SaasUsers, key).is_none(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendly_offboard_removes_the_membership_once() {
    let h = Harness::seeded(4).await;
    let (email, uri, _) = h.member().await;
    h.run_succeeded(
        "calendly-offboard.yaml",
        subject(
            "people",
            &email,
            json!({"email": email, "status": "terminated"}),
        ),
    )
    .await;
    let uuid = uri.rsplit('/').next().unwrap();
    assert_eq!(h.count("DELETE", uuid), 1);
    assert!(!h.members().await.iter().any(|m| m.0 == email));
    let person = h.record(Collection::People, &email).unwrap();
    assert_eq!(person["calendly_status"], "removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendly_invite_creates_an_invitation() {
    let h = Harness::seeded(2).await;
    let email = "new.hire@example.com";
    h.run_succeeded(
        "calendly-invite.yaml",
        subject(
            "people",
            email,
            json!({"email": email, "department": "Sales"}),
        ),
    )
    .await;
    let posts: Vec<_> =
        h.sb.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/invitations"))
            .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body["email"], email);
    let person = h.record(Collection::People, email).unwrap();
    assert_eq!(person["calendly_status"], "invited");
    assert!(person["calendly_invitation"]
        .as_str()
        .unwrap()
        .contains("invitations"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_provision_creates_then_waits_for_approval_before_deleting() {
    let h = Harness::seeded(1).await;
    let email = "pat.doe@example.com";
    let person = json!({"email": email, "name": "Pat Doe", "status": "active"});
    // "No such user" is an answer `find` lists: it routes to `create`, and the run succeeds.
    let run = h
        .run_succeeded("scim-provision.yaml", subject("people", email, person))
        .await;
    assert_eq!(step(&run, "find").outputs["found"], false);
    assert_eq!(h.count("POST", "/Users"), 1);
    let stored = h.record(Collection::People, email).unwrap();
    assert_eq!(stored["scim_status"], "active");

    let mut terminated = stored.clone();
    terminated.insert("status".to_owned(), json!("terminated"));
    let run = h
        .run(
            "scim-provision.yaml",
            subject("people", email, Value::Object(terminated)),
        )
        .await;
    assert_eq!(
        run.run.status,
        RunStatus::WaitingApproval,
        "{:#?}",
        run.steps
    );
    assert_eq!(
        step(&run, "delete").status,
        history::StepStatus::WaitingApproval
    );
    assert_eq!(
        h.count("DELETE", "/Users"),
        0,
        "nothing deleted before approval"
    );
    // Durable, and not picked up by `resume`.
    let stored_run = h.engine.history().run(run.run.id).unwrap().unwrap();
    assert_eq!(stored_run.status, RunStatus::WaitingApproval);
    assert!(h.engine.resume_unfinished().await.unwrap().is_empty());
    // Approving another block is refused.
    assert!(h.engine.approve(run.run.id, "update").await.is_err());

    let approved = h.engine.approve(run.run.id, "delete").await.unwrap();
    assert_eq!(
        approved.run.status,
        RunStatus::Succeeded,
        "{:#?}",
        approved.steps
    );
    assert_eq!(h.count("DELETE", "/Users"), 1);
    let stored = h.record(Collection::People, email).unwrap();
    assert_eq!(stored["scim_status"], "deleted");
    // A second approval is refused and sends nothing.
    assert!(h.engine.approve(run.run.id, "delete").await.is_err());
    assert_eq!(h.count("DELETE", "/Users"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_provision_rejected_delete_sends_nothing_and_fails() {
    let h = Harness::seeded(1).await;
    let email = "lee.roe@example.com";
    let person = json!({"email": email, "name": "Lee Roe", "status": "active"});
    h.run("scim-provision.yaml", subject("people", email, person))
        .await;
    let mut terminated = h.record(Collection::People, email).unwrap();
    terminated.insert("status".to_owned(), json!("terminated"));
    let run = h
        .run(
            "scim-provision.yaml",
            subject("people", email, Value::Object(terminated)),
        )
        .await;
    assert_eq!(run.run.status, RunStatus::WaitingApproval);
    let rejected = h.engine.reject(run.run.id, "delete").await.unwrap();
    assert_eq!(rejected.run.status, RunStatus::Failed);
    assert_eq!(
        step(&rejected, "delete").error.as_deref(),
        Some("rejected by an administrator")
    );
    assert_eq!(h.count("DELETE", "/Users"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_import_dry_run_lists_new_users_without_writing() {
    let h = Harness::seeded(3).await;
    let dry = h.run_mode("scim-import.yaml", None, RunMode::DryRun).await;
    assert_eq!(dry.run.status, RunStatus::Succeeded, "{:#?}", dry.steps);
    let outputs = &step(&dry, "users").outputs;
    assert_eq!(outputs["new"], 3, "{outputs:?}");
    assert_eq!(outputs["lists"]["new"].as_array().unwrap().len(), 3);
    assert_eq!(h.engine.records().count(Collection::People), 0);
    let live = h.run("scim-import.yaml", None).await;
    assert_eq!(step(&live, "users").outputs["new"], 3);
    assert_eq!(h.engine.records().count(Collection::People), 3);
    let again = h.run("scim-import.yaml", None).await;
    let outputs = &step(&again, "users").outputs;
    assert_eq!(
        (&outputs["new"], &outputs["updated"]),
        (&json!(0), &json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_by_one_workflow_starts_another_through_record_triggers() {
    let h = Harness::seeded(2).await;
    let queue = h.watch_shipped_workflows();
    assert!(queue.is_empty());
    // The invite saves onto a person not stored yet: the record is created through the records
    // store, so the workflows watching people `created` consider it (scim-provision fires).
    let email = "new.hire@example.com";
    let person =
        json!({"email": email, "name": "New Hire", "status": "active", "department": "Sales"});
    h.run_succeeded("calendly-invite.yaml", subject("people", email, person))
        .await;
    let fired: Vec<String> = queue
        .pending()
        .unwrap()
        .into_iter()
        .map(|e| e.request.workflow.to_string())
        .collect();
    assert!(fired.contains(&"scim-provision".to_owned()), "{fired:?}");
    let trace = h
        .engine
        .records()
        .trace(&Subject::new(Collection::People, RecordKey::parse(email)))
        .unwrap();
    assert_eq!(trace.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_idle_leaves_excluded_users_out_and_reclaims_an_idle_one() {
    let h = Harness::seeded(4).await;
    h.run("calendly-ingest.yaml", None).await;
    let members = h.members().await;
    let others: Vec<_> = members.iter().filter(|m| m.2 != "owner").collect();
    let (idle, idle_uri) = (others[0].0.clone(), others[0].1.clone());
    let excluded = others[1].0.clone();
    let active = others[2].0.clone();
    let old = "2020-01-01T00:00:00Z";
    let recent = chrono::Utc::now().to_rfc3339();
    let set = |email: &str, fields: Value| blockyard::records::Write {
        subject: Subject::new(
            Collection::SaasUsers,
            RecordKey::parse(&format!("calendly/{email}")),
        ),
        change: blockyard::records::Change::Upsert {
            fields: fields.as_object().unwrap().clone(),
            mode: blockyard::records::WriteMode::CreateUpdate,
        },
    };
    h.engine
        .records()
        .write(
            &[
                set(&idle, json!({"last_activity": old, "created_at": old})),
                set(
                    &excluded,
                    json!({"last_activity": old, "created_at": old, "reclaim_excluded": true}),
                ),
                set(&active, json!({"last_activity": recent})),
            ],
            &Triggers::none(),
            chrono::Utc::now(),
        )
        .unwrap();
    // The schedule tick: the excluded user starts no run, and the trace says why.
    let workflows = blockyard::trigger::load_workflows(
        &support::root().join("workflows"),
        h.engine.client().presets(),
    )
    .unwrap()
    .into_iter()
    .filter(|w| w.name == "reclaim-idle");
    let vars: Map<String, Value> = h.config().vars.into_iter().collect();
    let triggers = Triggers::new(workflows, &vars);
    let name = blockyard::trigger::WorkflowName::new("reclaim-idle");
    let excluded_subject = Subject::new(
        Collection::SaasUsers,
        RecordKey::parse(&format!("calendly/{excluded}")),
    );
    let excluded_record = h
        .record(Collection::SaasUsers, excluded_subject.key.as_str())
        .unwrap();
    assert_eq!(
        triggers
            .exclusion(&name, &excluded_subject, &excluded_record)
            .as_deref(),
        Some("`reclaim_excluded` is set on the record")
    );
    let queue = blockyard::trigger::Queue::open(h.engine.records().store()).unwrap();
    let scheduler = blockyard::trigger::scheduler::Scheduler::new(
        h.engine.records().clone(),
        queue.clone(),
        Arc::new(triggers),
        blockyard::trigger::scheduler::Clock::system(),
    );
    let fired = scheduler.fire(&name, chrono::Utc::now()).unwrap();
    let queued: Vec<String> = queue
        .pending()
        .unwrap()
        .into_iter()
        .filter(|e| fired.queued.contains(&e.id))
        .filter_map(|e| e.request.subject.map(|s| s.key.to_string()))
        .collect();
    let idle_key = format!("calendly/{idle}");
    assert!(queued.contains(&idle_key), "{queued:?}");
    assert!(
        !queued.contains(&format!("calendly/{excluded}")),
        "{queued:?}"
    );
    assert!(
        !queued.contains(&format!("calendly/{active}")),
        "{queued:?}"
    );
    let trace = h.engine.records().trace(&excluded_subject).unwrap();
    let rendered = trace.last().unwrap().render();
    assert!(
        rendered.contains("no run: excluded: `reclaim_excluded` is set on the record"),
        "{rendered}"
    );

    // The idle user's run: activity refreshed (the sandbox's log has nothing newer than 2020 for
    // this user, or only older entries), still idle: a candidate, told, and (a grace period of
    // none, so the wait elapses at once) the activity read again and the membership removed.
    h.sb.set_calendly_plan(blockyard::sandbox::CalendlyPlan::Standard);
    let vars = json!({"grace_period": "0s"}).as_object().unwrap().clone();
    let run = h
        .run_with(
            "reclaim-idle.yaml",
            h.stored(&idle_key),
            RunMode::Live,
            vars,
        )
        .await;
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:#?}", run.steps);
    let taken: Vec<&str> = run
        .steps
        .iter()
        .filter(|s| s.status != history::StepStatus::Skipped)
        .map(|s| s.block.as_str())
        .collect();
    assert_eq!(
        taken,
        [
            "begin",
            "calendly_activity",
            "notify",
            "grace",
            "recheck_calendly",
            "remove_calendly",
            "remove_membership",
            "end"
        ]
    );
    assert_eq!(step(&run, "grace").outputs["outcome"], "elapsed");
    let uuid = idle_uri.rsplit('/').next().unwrap();
    assert_eq!(h.count("DELETE", uuid), 1);
    let stored = h.record(Collection::SaasUsers, &idle_key).unwrap();
    assert_eq!(stored["reclaim_state"], "reclaimed");
    assert_eq!(
        stored["reclaim_reason"],
        "no activity for more than 60 days, none during the 0s grace period"
    );
    assert_eq!(stored["licence_freed"], "calendly organization membership");
    assert!(stored["reclaimed_at"].is_string(), "{stored:?}");
    assert_eq!(status(&stored), "deactivated");
    // The notice went to the webhook with the date the licence would be reclaimed.
    let hooks = h.sb.webhooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].body["to"], json!(idle));
    assert_eq!(
        hooks[0].body["text"],
        json!(format!(
            "Your calendly licence has not been used for more than 60 days. It will be reclaimed on {} unless you use it before then.",
            stored["reclaim_on"].as_str().unwrap()
        ))
    );
    assert_eq!(
        stored["last_activity"], old,
        "a 403 activity log leaves last_activity as it is"
    );
}

/// `reclaim: report` (SAM's "Reclaim subscriptions" unticked): an idle user becomes a candidate
/// with the reason, and nothing else happens: no notice, no wait, no removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_idle_in_report_mode_marks_candidates_and_removes_nothing() {
    let h = Harness::seeded(4).await;
    h.run("calendly-ingest.yaml", None).await;
    let members = h.members().await;
    let (idle, idle_uri) = members
        .iter()
        .find(|m| m.2 != "owner")
        .map(|m| (m.0.clone(), m.1.clone()))
        .unwrap();
    let key = format!("calendly/{idle}");
    let old = "2020-01-01T00:00:00Z";
    h.engine
        .records()
        .write(
            &[blockyard::records::Write {
                subject: Subject::new(Collection::SaasUsers, RecordKey::parse(&key)),
                change: blockyard::records::Change::Upsert {
                    fields: json!({"last_activity": old, "created_at": old})
                        .as_object()
                        .unwrap()
                        .clone(),
                    mode: blockyard::records::WriteMode::CreateUpdate,
                },
            }],
            &Triggers::none(),
            chrono::Utc::now(),
        )
        .unwrap();
    h.sb.set_calendly_plan(blockyard::sandbox::CalendlyPlan::Standard);
    let vars = json!({"reclaim": "report"}).as_object().unwrap().clone();
    let run = h
        .run_with("reclaim-idle.yaml", h.stored(&key), RunMode::Live, vars)
        .await;
    assert_eq!(run.run.status, RunStatus::Succeeded, "{:#?}", run.steps);
    let taken: Vec<&str> = run
        .steps
        .iter()
        .filter(|s| s.status != history::StepStatus::Skipped)
        .map(|s| s.block.as_str())
        .collect();
    assert_eq!(taken, ["begin", "calendly_activity", "end"]);
    let stored = h.record(Collection::SaasUsers, &key).unwrap();
    assert_eq!(stored["reclaim_state"], "candidate");
    assert_eq!(
        stored["reclaim_reason"],
        "no activity for more than 60 days"
    );
    assert_eq!(status(&stored), "active");
    assert!(h.sb.webhooks().is_empty());
    assert_eq!(h.count("DELETE", idle_uri.rsplit('/').next().unwrap()), 0);
}

/// `approval: required`: after the grace period the run waits for a person at block `approve`,
/// removes nothing meanwhile, and reclaims once approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_idle_with_approval_required_waits_for_it_before_the_removal() {
    let h = Harness::seeded(4).await;
    h.run("calendly-ingest.yaml", None).await;
    let members = h.members().await;
    let (idle, idle_uri) = members
        .iter()
        .find(|m| m.2 != "owner")
        .map(|m| (m.0.clone(), m.1.clone()))
        .unwrap();
    let key = format!("calendly/{idle}");
    let old = "2020-01-01T00:00:00Z";
    h.engine
        .records()
        .write(
            &[blockyard::records::Write {
                subject: Subject::new(Collection::SaasUsers, RecordKey::parse(&key)),
                change: blockyard::records::Change::Upsert {
                    fields: json!({"last_activity": old, "created_at": old})
                        .as_object()
                        .unwrap()
                        .clone(),
                    mode: blockyard::records::WriteMode::CreateUpdate,
                },
            }],
            &Triggers::none(),
            chrono::Utc::now(),
        )
        .unwrap();
    h.sb.set_calendly_plan(blockyard::sandbox::CalendlyPlan::Standard);
    let vars = json!({"grace_period": "0s", "approval": "required"})
        .as_object()
        .unwrap()
        .clone();
    let run = h
        .run_with("reclaim-idle.yaml", h.stored(&key), RunMode::Live, vars)
        .await;
    assert_eq!(
        run.run.status,
        RunStatus::WaitingApproval,
        "{:#?}",
        run.steps
    );
    assert_eq!(
        step(&run, "approve").status,
        history::StepStatus::WaitingApproval
    );
    let uuid = idle_uri.rsplit('/').next().unwrap();
    assert_eq!(h.count("DELETE", uuid), 0);
    assert_eq!(
        h.record(Collection::SaasUsers, &key).unwrap()["reclaim_state"],
        "notified"
    );

    let approved = h.engine.approve(run.run.id, "approve").await.unwrap();
    assert_eq!(
        approved.run.status,
        RunStatus::Succeeded,
        "{:#?}",
        approved.steps
    );
    assert_eq!(h.count("DELETE", uuid), 1);
    assert_eq!(
        h.record(Collection::SaasUsers, &key).unwrap()["reclaim_state"],
        "reclaimed"
    );
    // The notice, then the approved block's message.
    assert_eq!(h.sb.webhooks().len(), 2);
}

/// The seeded Webex people.
async fn webex_people(h: &Harness) -> Vec<Value> {
    let body = support::get_json(format!("{}/people?max=100", h.sb.webex_url())).await;
    body["items"].as_array().unwrap().clone()
}

/// A seeded Webex person (not the first, who is the admin).
async fn webex_person(h: &Harness) -> Value {
    webex_people(h).await.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webex_update_reads_then_puts_every_writable_field_with_licenses_kept() {
    let h = Harness::seeded(3).await;
    let person = webex_person(&h).await;
    let id = person["id"].as_str().unwrap();
    let email = person["emails"][0].as_str().unwrap().to_lowercase();
    let record = json!({"email": email, "name": "Renamed Person", "first_name": "Renamed", "last_name": "Person", "webex_user_id": id, "status": "active"});
    h.run_succeeded("webex-update.yaml", subject("people", &email, record))
        .await;
    let calls: Vec<_> =
        h.sb.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(id))
            .collect();
    let methods: Vec<&str> = calls.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "PUT"]);
    assert_eq!(calls[1].body["displayName"], "Renamed Person");
    assert_eq!(calls[1].body["licenses"], person["licenses"]);
    let stored = h.record(Collection::People, &email).unwrap();
    assert_eq!(stored["webex_display_name"], "Renamed Person");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webex_offboard_deletes_the_user_once() {
    let h = Harness::seeded(3).await;
    let person = webex_person(&h).await;
    let id = person["id"].as_str().unwrap();
    let email = person["emails"][0].as_str().unwrap().to_lowercase();
    let record = json!({"email": email, "status": "terminated", "webex_user_id": id});
    h.run_succeeded("webex-offboard.yaml", subject("people", &email, record))
        .await;
    assert_eq!(h.count("DELETE", id), 1);
    let stored = h.record(Collection::People, &email).unwrap();
    assert!(stored["webex_deleted_at"].is_string());
    assert!(stored["webex_status"].is_string());
}

/// Deletes a Webex person at the vendor (as an admin would), outside any workflow.
async fn remove_webex_person(h: &Harness, id: &str) {
    let status = reqwest::Client::new()
        .delete(format!("{}/people/{id}", h.sb.webex_url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webex_ingest_downloads_every_person_and_deactivates_one_removed_at_the_vendor() {
    let h = Harness::seeded(5).await;
    let person = webex_person(&h).await;
    let id = person["id"].as_str().unwrap();
    let email = person["emails"][0].as_str().unwrap().to_lowercase();
    let first = h.run_succeeded("webex-ingest.yaml", None).await;
    assert_eq!(
        step(&first, "people").outputs["new"],
        5,
        "{:?}",
        step(&first, "people").outputs
    );
    let key = format!("webex/{email}");
    let record = h.record(Collection::SaasUsers, &key).unwrap();
    assert_eq!(record["webex_user_id"], json!(id));
    assert_eq!(record["app"], "webex");
    assert_eq!(status(&record), "active");
    assert_eq!(record["last_activity"], person["lastActivity"]);

    remove_webex_person(&h, id).await;
    let second = h.run("webex-ingest.yaml", None).await;
    let outputs = &step(&second, "people").outputs;
    assert_eq!(outputs["deactivated"], 1);
    assert_eq!(outputs["lists"]["deactivated"], json!([key]));
    assert_eq!(
        status(&h.record(Collection::SaasUsers, &key).unwrap()),
        "deactivated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webex_role_daily_writes_role_and_activity_and_deactivates_a_removed_person() {
    let h = Harness::seeded(4).await;
    let ingest = h.run("webex-ingest.yaml", None).await;
    assert_eq!(ingest.run.status, RunStatus::Succeeded);
    let person = webex_person(&h).await;
    let id = person["id"].as_str().unwrap();
    let key = format!(
        "webex/{}",
        person["emails"][0].as_str().unwrap().to_lowercase()
    );

    let run = h
        .run_succeeded("webex-role-daily.yaml", h.stored(&key))
        .await;
    assert_eq!(step(&run, "role").outputs["found"], true);
    let stored = h.record(Collection::SaasUsers, &key).unwrap();
    let expected_role = if person["roles"].as_array().is_some_and(|r| !r.is_empty()) {
        "admin"
    } else {
        "user"
    };
    assert_eq!(stored["role"], expected_role);
    assert_eq!(status(&stored), "active");

    remove_webex_person(&h, id).await;
    let run = h
        .run_succeeded("webex-role-daily.yaml", h.stored(&key))
        .await;
    assert_eq!(step(&run, "role").outputs["found"], false);
    assert_eq!(
        status(&h.record(Collection::SaasUsers, &key).unwrap()),
        "deactivated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webex_create_creates_the_person_once_and_saves_the_webex_id() {
    let h = Harness::seeded(2).await;
    let email = "new.hire@example.com";
    let record = json!({"email": email, "name": "New Hire", "first_name": "New", "last_name": "Hire", "department": "Sales", "status": "active"});
    h.run_succeeded("webex-create.yaml", subject("people", email, record))
        .await;
    assert_eq!(h.count("POST", "/webex/v1/people"), 1);
    let stored = h.record(Collection::People, email).unwrap();
    let id = stored["webex_user_id"].as_str().unwrap().to_owned();
    let found: Value =
        support::get_json(format!("{}/people?email={email}", h.sb.webex_url())).await;
    assert_eq!(found["items"][0]["id"], json!(id));
    assert_eq!(found["items"][0]["displayName"], "New Hire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webex_create_for_a_person_webex_already_has_saves_their_id_so_offboarding_starts() {
    let h = Harness::seeded(3).await;
    let queue = h.watch_shipped_workflows();
    let person = webex_person(&h).await;
    let id = person["id"].as_str().unwrap();
    let email = person["emails"][0].as_str().unwrap().to_lowercase();
    let record = json!({"email": email, "name": "Known Person", "first_name": "Known", "last_name": "Person", "department": "Sales", "status": "active"});
    let run = h
        .run_succeeded("webex-create.yaml", subject("people", &email, record))
        .await;
    // Webex refuses the create (409: the email is taken); the workflow looks the person up.
    assert_eq!(step(&run, "create").response.as_ref().unwrap().status, 409);
    assert_eq!(h.count("POST", "/webex/v1/people"), 1);
    let stored = h.record(Collection::People, &email).unwrap();
    assert_eq!(stored["webex_user_id"], json!(id));

    // HR marks them terminated later: webex-offboard's rule holds now, so it starts.
    let terminated = blockyard::records::Write {
        subject: Subject::new(Collection::People, RecordKey::parse(&email)),
        change: blockyard::records::Change::Upsert {
            fields: json!({"status": "terminated"}).as_object().unwrap().clone(),
            mode: blockyard::records::WriteMode::CreateUpdate,
        },
    };
    let records = h.engine.records();
    let triggers = h.engine.triggers();
    let now = chrono::Utc::now();
    records.write(&[terminated], &triggers, now).unwrap();
    let fired = || -> Vec<String> {
        queue
            .pending()
            .unwrap()
            .into_iter()
            .map(|e| e.request.workflow.to_string())
            .collect()
    };
    // The runs the create's save queued for them (the record was new) are still waiting: a
    // change made meanwhile is evaluated after them. Once they are done, it starts the offboarding.
    assert!(
        !fired().contains(&"webex-offboard".to_owned()),
        "{:?}",
        fired()
    );
    for entry in queue.pending().unwrap() {
        queue.ack(entry.id).unwrap();
        let holder = blockyard::store::in_flight::queue_holder(entry.id);
        let subject = entry.request.subject.unwrap();
        records.release(&subject, &holder, &triggers, now).unwrap();
    }
    assert!(
        fired().contains(&"webex-offboard".to_owned()),
        "{:?}",
        fired()
    );
    let stored = h.record(Collection::People, &email).unwrap();
    h.run_succeeded(
        "webex-offboard.yaml",
        subject("people", &email, Value::Object(stored)),
    )
    .await;
    assert_eq!(h.count("DELETE", id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webex_offboard_of_a_person_webex_no_longer_has_succeeds_without_a_delete() {
    let h = Harness::seeded(3).await;
    let person = webex_person(&h).await;
    let id = person["id"].as_str().unwrap();
    let email = person["emails"][0].as_str().unwrap().to_lowercase();
    remove_webex_person(&h, id).await;
    let record = json!({"email": email, "status": "terminated", "webex_user_id": id});
    let run = h
        .run_succeeded("webex-offboard.yaml", subject("people", &email, record))
        .await;
    assert_eq!(step(&run, "details").outputs["found"], false);
    assert_eq!(step(&run, "delete").status, history::StepStatus::Skipped);
    assert_eq!(h.count("DELETE", id), 1, "only the admin's own delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendly_user_details_saves_the_user_organization_and_membership_ids() {
    let h = Harness::seeded(3).await;
    let (email, membership, _) = h.member().await;
    h.run_succeeded(
        "calendly-user-details.yaml",
        subject(
            "people",
            &email,
            json!({"email": email, "status": "active"}),
        ),
    )
    .await;
    let last = |uri: &str| uri.rsplit('/').next().unwrap().to_owned();
    let stored = h.record(Collection::People, &email).unwrap();
    assert_eq!(
        stored["calendly_organization_membership_id"],
        json!(last(&membership))
    );
    assert_eq!(
        stored["calendly_organization_id"],
        json!(last(&h.sb.organization_uri()))
    );
    let user = support::get_json(format!(
        "{}/users/{}",
        h.sb.calendly_url(),
        stored["calendly_user_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(
        user["resource"]["email"].as_str().unwrap().to_lowercase(),
        email
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_idle_cancels_when_the_vendor_shows_activity_after_the_user_was_flagged() {
    let h = Harness::seeded(8).await;
    // A Webex person the vendor saw recently, whom the local record still thinks is idle.
    let person = webex_people(&h)
        .await
        .into_iter()
        .find(|p| {
            p["lastActivity"]
                .as_str()
                .is_some_and(|at| blockyard::rules::days_since(at) < 30)
        })
        .expect("a recently active person");
    let id = person["id"].as_str().unwrap();
    let email = person["emails"][0].as_str().unwrap().to_lowercase();
    let key = format!("webex/{email}");
    let old = "2020-01-01T00:00:00Z";
    let record = json!({"app": "webex", "email": email, "webex_user_id": id, "status": "active",
                        "last_activity": old, "created_at": old});
    let run = h
        .run_succeeded("reclaim-idle.yaml", subject("saas_users", &key, record))
        .await;
    let taken: Vec<&str> = run
        .steps
        .iter()
        .filter(|s| s.status != history::StepStatus::Skipped)
        .map(|s| s.block.as_str())
        .collect();
    assert_eq!(taken, ["begin", "webex_activity", "keep_webex", "end"]);
    assert_eq!(h.count("DELETE", id), 0);
    assert!(h.sb.webhooks().is_empty(), "no notice");
    let stored = h.record(Collection::SaasUsers, &key).unwrap();
    assert_eq!(stored["reclaim_state"], "cancelled");
    assert_eq!(
        stored["reclaim_reason"],
        json!(format!(
            "activity on {}",
            person["lastActivity"].as_str().unwrap()
        ))
    );
    assert_eq!(stored["reclaim_activity_at"], person["lastActivity"]);
    assert_eq!(stored["last_activity"], person["lastActivity"]);
    assert_eq!(status(&stored), "active");
}

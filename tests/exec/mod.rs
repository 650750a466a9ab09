//! The executor and run history against the in-process sandbox: semantics, durability across a
//! `kill -9`, offline replay with and without divergence, dry runs, and no secret in history.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blockyard::sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

use crate::support;

mod paths;

const TOKEN: &str = "calendly-secret-token-4242";

/// A temp dir with a `blockyard.yaml` pointing at the sandbox at `base` (`http://IP:PORT`).
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(base: &str, organization: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("blockyard.yaml"),
            format!(
                "data_dir: data\nvars:\n  calendly_organization: {organization}\ncredentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: ${{CALENDLY_TEST_TOKEN}}\n    base_url: {base}/calendly\n"
            ),
        )
        .unwrap();
        Env { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_blockyard"));
        command
            .args(args)
            .current_dir(self.path())
            .env("CALENDLY_TEST_TOKEN", TOKEN)
            .env_remove("RUST_LOG");
        command
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            support::stdout(&out),
            support::stderr(&out),
        )
    }

    fn json(&self, args: &[&str]) -> Value {
        let (_, stdout, stderr) = self.run(args);
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}\n{stderr}"))
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn workflow(name: &str) -> String {
    support::root()
        .join("workflows")
        .join(name)
        .display()
        .to_string()
}

async fn sandbox(latency: Duration) -> Sandbox {
    Sandbox::start(SandboxConfig {
        seed_users: 5,
        latency,
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

fn base(sb: &Sandbox) -> String {
    format!("http://{}", sb.addr())
}

/// An email of a seeded Calendly member who is not the owner.
async fn member_email(sb: &Sandbox) -> String {
    let url = format!(
        "{}/organization_memberships?organization={}&count=10",
        sb.calendly_url(),
        sb.organization_uri()
    );
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["collection"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] != "owner")
        .unwrap()["user"]["email"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn writes(sb: &Sandbox) -> Vec<String> {
    sb.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sends_each_write_once_saves_outputs_and_records_every_step() {
    let sb = sandbox(Duration::ZERO).await;
    let env = Env::new(&base(&sb), &sb.organization_uri());
    let email = member_email(&sb).await;
    let record = format!("email={email}");
    let (code, stdout, stderr) = env.run(&[
        "run",
        &workflow("calendly-offboard.yaml"),
        "--record",
        &record,
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(run["status"], "succeeded");
    let steps = run["steps"].as_array().unwrap();
    let blocks: Vec<(&str, &str)> = steps
        .iter()
        .map(|s| (s["block"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        blocks,
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
    assert_eq!(writes(&sb).len(), 1, "{:?}", writes(&sb));

    // The second run finds no membership: `find` fails, `on_failure: end` routes around
    // `remove`, which is skipped; the run still succeeds and sends nothing.
    let (code, stdout, _) = env.run(&[
        "run",
        &workflow("calendly-offboard.yaml"),
        "--record",
        &record,
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("find    failed"), "{stdout}");
    assert!(stdout.contains("remove  skipped"), "{stdout}");
    assert_eq!(writes(&sb).len(), 1);

    // History: a person's timeline, and no secret anywhere in it.
    let listed = env.json(&[
        "history",
        "list",
        "--subject",
        &email.to_uppercase(),
        "--json",
    ]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let id = run["id"].as_str().unwrap();
    let (code, shown, _) = env.run(&["history", "show", id, "--json"]);
    assert_eq!(code, 0);
    assert!(!shown.contains(TOKEN), "the token leaked into history");
    assert!(shown.contains("[redacted]"));
    let (_, text, _) = env.run(&["history", "show", id]);
    assert!(text.contains("DELETE"), "{text}");
    let failed = env.json(&["history", "list", "--status", "failed", "--json"]);
    assert!(failed.as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_performs_reads_and_holds_writes_back() {
    let sb = sandbox(Duration::ZERO).await;
    let env = Env::new(&base(&sb), &sb.organization_uri());
    let record = format!("email={}", member_email(&sb).await);
    let before = sb.requests().len();
    let (code, stdout, _) = env.run(&[
        "run",
        &workflow("calendly-offboard.yaml"),
        "--record",
        &record,
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("remove  planned    DELETE"), "{stdout}");
    assert!(writes(&sb).is_empty());
    assert_eq!(sb.requests().len(), before + 1, "the read was performed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_replay_is_identical_for_the_same_workflow_and_shows_a_changed_one() {
    let sb = sandbox(Duration::ZERO).await;
    let env = Env::new(&base(&sb), &sb.organization_uri());
    let record = format!("email={}", member_email(&sb).await);
    let run = env.json(&[
        "run",
        &workflow("calendly-offboard.yaml"),
        "--record",
        &record,
        "--json",
    ]);
    let id = run["id"].as_str().unwrap();
    let sent = sb.requests().len();

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
    assert_eq!(sb.requests().len(), sent, "offline replay sent nothing");

    // A live replay from `remove` reuses `find`'s recorded outputs: no new GET is sent.
    let (code, stdout, _) = env.run(&["replay", id, "--from", "remove", "--json"]);
    let replay: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(replay["replay_of"], id);
    assert_eq!(
        code, 1,
        "the membership is gone, so the DELETE now fails: {stdout}"
    );
    let requests = sb.requests();
    assert_eq!(requests.len(), sent + 1, "only the DELETE was sent");
    assert_eq!(requests.last().unwrap().method, "DELETE");
}

/// Kills `blockyard run` with SIGKILL while the DELETE is in flight, then resumes: the write is
/// sent exactly once in all, and the run finishes.
async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn requests(base: &str) -> Vec<Value> {
    get(&format!("{base}/_sandbox/requests"))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_write_then_resume_never_sends_a_write_twice() {
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_blockyard"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--seed-users",
            "5",
            "--latency-ms",
            "300",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let calendly = lines.next().unwrap().unwrap();
    let calendly = calendly.split_once(' ').unwrap().1.to_owned();
    let base = calendly.trim_end_matches("/calendly").to_owned();
    let org = get(&format!("{calendly}/users/me")).await["resource"]["current_organization"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = get(&format!(
        "{calendly}/organization_memberships?organization={org}&count=10"
    ))
    .await;
    let email = members["collection"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] != "owner")
        .unwrap()["user"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let baseline = requests(&base).await.len();
    let env = Env::new(&base, &org);
    let record = format!("email={email}");
    let mut run = env
        .command(&[
            "run",
            &workflow("calendly-offboard.yaml"),
            "--record",
            &record,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the `find` GET was answered: the DELETE leaves right after and takes 300 ms.
    let deadline = Instant::now() + Duration::from_secs(20);
    while requests(&base).await.len() <= baseline {
        assert!(
            Instant::now() < deadline,
            "the run never called the sandbox"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await; // let the in-flight DELETE land, if it does

    let (code, stdout, stderr) = env.run(&["resume"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    let deletes: Vec<Value> = requests(&base)
        .await
        .into_iter()
        .filter(|r| r["method"] != "GET")
        .collect();
    assert_eq!(
        deletes.len(),
        1,
        "each write is sent exactly once: {deletes:?}"
    );
    let (_, stdout, _) = env.run(&["resume"]);
    assert!(stdout.contains("no unfinished runs"), "{stdout}");
    let _ = sandbox.kill();
    let _ = sandbox.wait();
}

/// Approval waits durably: the process that reached `approval: required` exits, and a new process
/// approves and finishes the run, sending the delete exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_outlives_the_process_that_asked_for_it() {
    let sb = sandbox(Duration::ZERO).await;
    let env = Env::new(&base(&sb), &sb.organization_uri());
    env.write(
        "blockyard.yaml",
        &format!(
            "data_dir: data\ncredentials:\n  scim:\n    vendor: scim\n    auth: bearer\n    token: ${{CALENDLY_TEST_TOKEN}}\n    base_url: {}\n",
            sb.scim_url()
        ),
    );
    let users = get(&format!("{}/Users?count=1", sb.scim_url())).await;
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
    assert!(writes(&sb).is_empty(), "{:?}", writes(&sb));
    let id = asked["id"].as_str().unwrap();

    let (code, stdout, stderr) = env.run(&["approve", id, "delete"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(writes(&sb), [format!("DELETE /scim/v2/Users/{scim_id}")]);
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
    assert_eq!(writes(&sb).len(), 1);
}

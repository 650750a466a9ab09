//! `blockyard store backup` and `restore`, with the real binary: a data dir copied while a run
//! waits for approval restores to a state `approve` finishes; a live `serve` is backed up through
//! its API while runs go on, and the restored copy's unfinished runs finish under `resume`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::{json, Value};

use crate::support::{self, Env, WHOAMI};

/// `run scim-provision.yaml` for a seeded SCIM user: a run waiting for approval of `delete`.
async fn waiting_for_approval(env: &Env) -> (String, String) {
    let users = support::get_json(format!("{}/Users?count=1", env.sb.scim_url())).await;
    let email = users["Resources"][0]["userName"]
        .as_str()
        .unwrap()
        .to_owned();
    let scim_id = users["Resources"][0]["id"].as_str().unwrap().to_owned();
    let asked = env.json(&[
        "run",
        support::workflow("scim-provision.yaml").to_str().unwrap(),
        "--record",
        &format!("email={email}"),
        "--record",
        "name=Leaving Person",
        "--record",
        "status=terminated",
        "--json",
    ]);
    assert_eq!(asked["status"], "waiting_approval", "{asked:#}");
    (asked["id"].as_str().unwrap().to_owned(), scim_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_a_run_waits_for_approval_restores_to_a_state_approve_finishes() {
    let env = Env::seeded(5).await;
    let (id, scim_id) = waiting_for_approval(&env).await;

    let (code, stdout, stderr) = env.run(&["store", "backup", "backup"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("backed up ") && stdout.ends_with(" into `backup`\n"),
        "{stdout}"
    );
    // A backup never writes over a directory that holds something.
    let (code, _, stderr) = env.run(&["store", "backup", "backup"]);
    assert_eq!(
        (code, stderr.as_str()),
        (2, "error: the backup directory `backup` is not empty; name a new directory (a backup never writes over one)\n")
    );

    // The run goes on in the original: the backup does not follow.
    let (code, stdout, stderr) = env.run(&["approve", &id, "delete"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(env.writes(), [format!("DELETE /scim/v2/Users/{scim_id}")]);

    // Restored over the data dir: refused while it holds something, unless forced.
    let (code, _, stderr) = env.run(&["store", "restore", "backup", "data"]);
    assert_eq!(
        (code, stderr.as_str()),
        (2, "error: the data dir `data` is not empty; pass `--force` to replace its store with the backup's\n")
    );
    std::fs::create_dir(env.path().join("nothing")).unwrap();
    let (code, _, stderr) = env.run(&["store", "restore", "nothing", "elsewhere"]);
    assert_eq!(
        (code, stderr.as_str()),
        (2, "error: `nothing` is not a blockyard backup (it has no `format` file and `db` directory); pass a directory `blockyard store backup` wrote\n")
    );
    // A backup a newer release wrote is refused.
    let newer = env.path().join("newer");
    std::fs::create_dir(&newer).unwrap();
    std::fs::create_dir(newer.join("db")).unwrap();
    std::fs::write(newer.join("format"), "7\n").unwrap();
    let (code, _, stderr) = env.run(&["store", "restore", "newer", "elsewhere"]);
    assert_eq!(
        (code, stderr.as_str()),
        (2, "error: the data dir `newer` has format version 7, newer than this blockyard reads (version 2); run the blockyard release that wrote it, or restore a backup this release made (`blockyard store restore`)\n")
    );

    let (code, stdout, stderr) = env.run(&["store", "restore", "backup", "data", "--force"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        "restored `backup` into `data`; `blockyard resume` (or `blockyard serve`) finishes the runs it holds unfinished\n"
    );
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "waiting_approval", "{shown:#}");
    // The restored run is approved and finishes; the sandbox user is gone already, so its delete
    // is sent again and answered 404, as for any approval after the fact.
    let (code, stdout, stderr) = env.run(&["approve", &id, "delete"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let shown = env.json(&["history", "show", &id, "--json"]);
    assert_eq!(shown["status"], "succeeded", "{shown:#}");
    assert_eq!(env.writes().len(), 2, "{:?}", env.writes());
}

/// The real `serve`, its address, and its stderr.
struct Served {
    child: std::process::Child,
    addr: String,
}

impl Served {
    fn start(env: &Env) -> Served {
        let mut child = env
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .env("BLOCKYARD_TOKEN", support::API_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("serve printed its address").unwrap();
            if let Some(addr) = line.split("http://").nth(1) {
                break addr.to_owned();
            }
        };
        // Keep reading stderr so serve never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Served { child, addr }
    }

    fn stop(mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_serve_is_backed_up_through_its_api_while_runs_go_on() {
    let env = Env::seeded(5).await;
    std::fs::create_dir(env.path().join("workflows")).unwrap();
    env.write("workflows/whoami.yaml", WHOAMI);
    let served = Served::start(&env);
    let base = format!("http://{}/api", served.addr);
    let client = reqwest::Client::new();

    // The data dir is held: a backup goes through the serve that holds it (its `serve.json`),
    // which wants its token.
    let (code, _, stderr) = env.run(&["store", "backup", "local"]);
    assert_eq!(
        (code, stderr),
        (2, format!("error: via the service at http://{} refused the request: missing `Authorization: Bearer TOKEN` (the token is `BLOCKYARD_TOKEN`); set `BLOCKYARD_TOKEN` to the service's token\n", served.addr))
    );
    // The route needs the API token, like every other.
    let refused = client
        .post(format!("{base}/store/backup"))
        .json(&json!({"dir": env.path().join("stolen")}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(!env.path().join("stolen").exists());

    // Runs start all along while the backup is taken.
    let starting = {
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..30 {
                let response = client
                    .post(format!("{base}/workflows/whoami/runs"))
                    .bearer_auth(support::API_TOKEN)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                let run: Value = response.json().await.unwrap();
                ids.push(run.clone());
            }
            ids
        })
    };
    let server = format!("http://{}", served.addr);
    let backup = tokio::task::spawn_blocking({
        let command = env
            .command(&["store", "backup", "live", "--server", &server])
            .env("BLOCKYARD_TOKEN", support::API_TOKEN)
            .output();
        move || command
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        backup.status.code(),
        Some(0),
        "{}",
        support::stderr(&backup)
    );
    let stdout = support::stdout(&backup);
    let live = env.path().join("live");
    assert!(
        stdout.ends_with(&format!(" into `{}`\n", live.display())),
        "{stdout}"
    );
    let started = starting.await.unwrap();
    assert_eq!(started.len(), 30);
    // Into a directory that holds something: 409, nothing written.
    let again = client
        .post(format!("{base}/store/backup"))
        .bearer_auth(support::API_TOKEN)
        .json(&json!({"dir": live}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        format!(
            "the backup directory `{}` is not empty; name a new directory (a backup never writes over one)",
            live.display()
        )
    );
    // Nothing is restored into a data dir a process holds, forced or not.
    let (code, _, stderr) = env.run(&["store", "restore", "live", "data", "--force"]);
    assert_eq!(
        (code, stderr.as_str()),
        (2, "error: the data dir `data` is in use by another blockyard process (a running `blockyard serve`?); stop it, or point this command at another `--data-dir`\n")
    );
    served.stop();

    // The copy is a data dir of its own: every run in it is whole, and those it holds
    // unfinished finish under `resume`.
    let (code, stdout, stderr) = env.run(&["store", "restore", "live", "restored"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let (code, stdout, stderr) = env.run(&["resume", "--data-dir", "restored"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let runs = env.json(&["history", "list", "--data-dir", "restored", "--json"]);
    let runs = runs.as_array().unwrap();
    assert!(runs.len() <= 30, "{runs:#?}");
    for run in runs {
        let id = run["id"].as_str();
        let Some(id) = id else {
            // A request still queued at the instant of the backup: taken by the next `serve`.
            assert!(run["queue_id"].is_string(), "{run:#}");
            continue;
        };
        let shown = env.json(&["history", "show", id, "--data-dir", "restored", "--json"]);
        assert_eq!(shown["status"], "succeeded", "{shown:#}");
    }
}

//! Runs do what they say: manual runs respect the begin block, runs of one subject are ordered
//! under `serve`, a cancel of a parked run is immediate, resume recovers what a probed write saved,
//! `history list` shows each run's mode, and runs queued by an import are visible.

use serde_json::Value;

use crate::support::{Env, WHOAMI};

fn instant(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not an instant: {value}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// `history list` shows the mode

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_list_shows_whether_a_run_was_live_a_dry_run_or_a_replay() {
    let env = Env::seeded(1).await;
    let file = env.write("whoami.yaml", WHOAMI);
    let file = file.to_str().unwrap();
    let live = env.json(&["run", file, "--json"]);
    let dry = env.json(&["run", file, "--dry-run", "--json"]);
    let live_id = live["id"].as_str().unwrap().to_owned();
    let replayed = env.json(&["replay", &live_id, "--json"]);
    for run in [&live, &dry, &replayed] {
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let (code, stdout, stderr) = env.run(&["history", "list"]);
    assert_eq!(code, 0, "{stderr}");
    let line = |run: &Value, mode: &str, suffix: &str| {
        let created: chrono::DateTime<chrono::Utc> = instant(&run["created_at"]);
        format!(
            "{}  {}  succeeded         {mode:7}  whoami                    -{suffix}",
            run["id"].as_str().unwrap(),
            created.format("%Y-%m-%d %H:%M:%S"),
        )
    };
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            line(&replayed, "replay", &format!("  (replay of {live_id})")),
            line(&dry, "dry_run", ""),
            line(&live, "live", ""),
        ]
    );
}

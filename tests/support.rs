//! The shared test harness: running the real binary and reading its output, and [`Env`], an
//! in-process sandbox with a temp dir whose `blockyard.yaml` points every credential at it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockyard::config::Config;
use blockyard::exec::{Engine, EngineOptions};
use blockyard::http::{Client, Credentials};
use blockyard::preset::PresetRegistry;
use blockyard::sandbox::{Sandbox, SandboxConfig};
use blockyard::store::Store;
use serde_json::Value;

/// The repository root (where `workflows/` and `presets/` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped workflow file, `workflows/{name}`.
pub fn workflow(name: &str) -> PathBuf {
    root().join("workflows").join(name)
}

/// The real `blockyard` binary with `args`, run from `dir`, with no `RUST_LOG` of ours.
pub fn command_in(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blockyard"));
    command.args(args).current_dir(dir).env_remove("RUST_LOG");
    command
}

/// Runs the real `blockyard` binary with `args` from `dir`, returning its output.
pub fn blockyard_in(dir: &Path, args: &[&str]) -> Output {
    command_in(dir, args)
        .output()
        .expect("the blockyard binary runs")
}

/// Runs the real `blockyard` binary with `args` from the repository root.
pub fn blockyard(args: &[&str]) -> Output {
    blockyard_in(&root(), args)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

/// `GET url`, answered with JSON.
pub async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// A run's steps (as history's JSON has them) as `(block, status)` pairs.
pub fn blocks(run: &Value) -> Vec<(&str, &str)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["block"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect()
}

/// A workflow of one read: begin → `me` (Calendly's current user, with the `calendly`
/// credential) → end.
pub const WHOAMI: &str = "\
name: whoami
description: Ask Calendly who the credential is
blocks:
  begin:
    type: begin
    next: me
  me:
    type: api
    preset: calendly.current_user
    credential: calendly
    next: end
  end:
    type: end
";

/// begin → a → b → c → end, each a GET.
pub const THREE_READS: &str = "name: three-reads\nblocks:\n  begin:\n    type: begin\n    next: a\n  a:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    next: b\n  b:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    next: c\n  c:\n    type: api\n    preset: calendly.current_user\n    credential: calendly\n    next: end\n  end:\n    type: end\n";

/// The token of every credential in an [`Env`]'s config: no run may write it into history.
pub const TOKEN: &str = "sandbox-secret-token-4242";

/// An in-process sandbox and a temp dir holding a `blockyard.yaml` (data dir `data`) with a
/// `calendly`, a `webex` and a `scim` credential pointing at it, without client rate limits, and
/// a `licence_notices` webhook credential posting to its sink.
/// Drive it with the real binary ([`Env::run`]) or with an in-process [`Env::engine`].
pub struct Env {
    pub sb: Sandbox,
    dir: tempfile::TempDir,
}

impl Env {
    pub async fn start(config: SandboxConfig) -> Env {
        let sb = Sandbox::start(config).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let base = format!("http://{}", sb.addr());
        let credential = |vendor: &str, path: &str| {
            format!("  {vendor}: {{vendor: {vendor}, auth: bearer, token: {TOKEN}, base_url: {base}{path}, rate_limit_per_minute: 0}}\n")
        };
        // `licence_notices`: the webhook `reclaim-idle` tells users on, the sandbox's sink.
        let text = format!(
            "data_dir: data\nvars:\n  calendly_organization: {}\ncredentials:\n{}{}{}  licence_notices: {{vendor: webhook, auth: url, url: {base}/hooks/licence-notices}}\n",
            sb.organization_uri(),
            credential("calendly", "/calendly"),
            credential("webex", "/webex/v1"),
            credential("scim", "/scim/v2"),
        );
        std::fs::write(dir.path().join("blockyard.yaml"), text).unwrap();
        Env { sb, dir }
    }

    /// A sandbox seeded with `users` users, answering at once.
    pub async fn seeded(users: usize) -> Env {
        Env::start(SandboxConfig {
            seed_users: users,
            ..SandboxConfig::default()
        })
        .await
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn config(&self) -> Config {
        Config::load(&self.path().join("blockyard.yaml")).unwrap()
    }

    /// An engine over the data dir with the config's credentials and vars and the built-in
    /// presets (it holds the data dir until dropped).
    pub fn engine(&self) -> Engine {
        let config = self.config();
        let store = Store::open(&self.data_dir()).unwrap();
        let client = Client::new(
            Arc::new(PresetRegistry::builtin()),
            Credentials::from_config(&config),
        )
        .unwrap();
        let vars = config.vars.into_iter().collect();
        Engine::new(&store, client, vars, EngineOptions::default()).unwrap()
    }

    /// Writes `text` to `name` in the temp dir.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The real binary with `args`, run from the temp dir.
    pub fn command(&self, args: &[&str]) -> Command {
        command_in(self.path(), args)
    }

    /// Runs the real binary: `(exit code, stdout, stderr)`.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
    }

    /// Runs the real binary and parses its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let (_, stdout, stderr) = self.run(args);
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}\n{stderr}"))
    }

    /// The Calendly members as `(email, membership uri, role)`, emails in lower case.
    pub async fn members(&self) -> Vec<(String, String, String)> {
        let url = format!(
            "{}/organization_memberships?organization={}&count=100",
            self.sb.calendly_url(),
            self.sb.organization_uri()
        );
        let body = get_json(url).await;
        body["collection"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["user"]["email"].as_str().unwrap().to_lowercase(),
                    m["uri"].as_str().unwrap().to_owned(),
                    m["role"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// A Calendly member who is not the owner, as `(email, membership uri, role)`.
    pub async fn member(&self) -> (String, String, String) {
        self.members()
            .await
            .into_iter()
            .find(|m| m.2 != "owner")
            .unwrap()
    }

    /// The writes the sandbox answered, as `METHOD /path`.
    pub fn writes(&self) -> Vec<String> {
        self.sb
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// How many `method` requests to a path containing `path_contains` the sandbox answered.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.sb
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    /// Waits (20 s at most) until the sandbox has answered more than `seen` requests.
    pub async fn wait_for_requests_after(&self, seen: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.sb.requests().len() <= seen {
            assert!(
                Instant::now() < deadline,
                "the run never called the sandbox"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The token of the in-process `serve` API in tests ([`Api`] sends it).
pub const API_TOKEN: &str = "serve-test-token";

/// A client for the HTTP API of an in-process `serve` (`Service`), with [`API_TOKEN`].
pub struct Api {
    /// `http://ADDR/api`.
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(service: &blockyard::service::Service) -> Api {
        Api {
            base: format!("http://{}/api", service.addr()),
            client: reqwest::Client::new(),
        }
    }

    /// Sends `request` with the token: `(status, JSON body)`.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.bearer_auth(API_TOKEN).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.client.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// Polls `GET path` until `done` holds on the answer (20 s at most).
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(path).await;
            assert_eq!(status, 200, "{body}");
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

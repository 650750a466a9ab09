//! The web console in a real browser: headless Chromium driven over WebDriver from Rust
//! (fantoccini, talking plain HTTP to a chromedriver this test starts on a free loopback port),
//! against a real `serve` (in process, temp data dir, the shipped workflows) and the in-process
//! sandbox, with a viewer's and an admin's token.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without them the
//! test says so on stderr and passes as skipped. Every page it visits is saved as a PNG in a temp
//! folder whose path it prints (`cargo test --test lib browser:: -- --nocapture` shows it); with
//! `BLOCKYARD_SCREENSHOTS=DIR` the top of the run detail page is also copied to `DIR/console-run.png`
//! (relative to the repository root: `BLOCKYARD_SCREENSHOTS=docs` refreshes the README's
//! picture).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blockyard::http::Credentials;
use blockyard::server::{ApiToken, Role};
use blockyard::service::{Service, ServiceConfig};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::support::{self, Api, Env, API_TOKEN};

mod console;

/// The viewer's token (`vera`).
const VIEWER: &str = "browser-viewer-token-1";

/// How long the browser waits for a page to show what the test expects.
const PATIENCE: Duration = Duration::from_secs(20);

/// The arguments Chromium runs with: headless, as root (CI), and without the background
/// networking that stalls it on a closed network.
const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
];

/// The browser and its driver, found on `PATH`.
struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Tools {
    /// `None` (and a line on stderr saying how to install them) when either is missing.
    fn find() -> Option<Tools> {
        let chromium = on_path("chromium");
        let chromedriver = on_path("chromedriver");
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Some(Tools {
                chromium,
                chromedriver,
            }),
            (chromium, chromedriver) => {
                let missing: Vec<&str> = [
                    chromium.is_none().then_some("`chromium`"),
                    chromedriver.is_none().then_some("`chromedriver`"),
                ]
                .into_iter()
                .flatten()
                .collect();
                eprintln!(
                    "browser test skipped: {} not found on PATH; install them with `apt-get install -y chromium chromium-driver` (Debian; .ci/run does it)",
                    missing.join(" and ")
                );
                None
            }
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| file.is_file())
}

/// A chromedriver on a free loopback port, stopped (by its pid) when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start(tools: &Tools) -> Chromedriver {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // It says when it listens: "ChromeDriver was started successfully on port N."
        let out = child.stdout.take().unwrap();
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = send.send(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            match receive.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("started successfully") => break,
                Ok(line) => seen.push(line),
                Err(err) => {
                    let _ = child.kill();
                    panic!("chromedriver did not start ({err}): {seen:#?}");
                }
            }
        }
        Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A new browser session: headless Chromium with a fresh profile in `profile`.
    async fn session(&self, tools: &Tools, profile: &Path) -> Client {
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push("--window-size=1280,900".to_owned());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": tools.chromium,
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|err| panic!("no session from chromedriver at {}: {err}", self.url))
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshots go: a temp folder that stays after the test.
struct Screens {
    dir: PathBuf,
}

impl Screens {
    fn new() -> Screens {
        let dir = tempfile::Builder::new()
            .prefix("blockyard-console-")
            .tempdir()
            .unwrap()
            .keep();
        eprintln!("browser test: screenshots in {}", dir.display());
        Screens { dir }
    }

    /// Saves the whole page (the viewport grown to the page's height, at most 4000 px) as
    /// `NAME.png`; returns its path.
    async fn save(&self, browser: &Client, name: &str) -> PathBuf {
        let page = measure(browser, "return document.documentElement.scrollHeight;").await;
        self.save_view(browser, name, page.min(4000)).await
    }

    /// Saves the top `height` px of the page (the viewport set to that height, 1280 px wide)
    /// as `NAME.png`; returns its path.
    async fn save_view(&self, browser: &Client, name: &str, height: u64) -> PathBuf {
        // The window's size counts the browser's own frame: grow or shrink the window by the
        // viewport's difference.
        let viewport = measure(browser, "return window.innerHeight;").await;
        let (width, window) = browser.get_window_size().await.unwrap();
        browser
            .set_window_size(
                width as u32,
                (window + height).saturating_sub(viewport) as u32,
            )
            .await
            .unwrap();
        let png = browser.screenshot().await.unwrap();
        browser
            .set_window_size(width as u32, window as u32)
            .await
            .unwrap();
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// A number a script returns.
async fn measure(browser: &Client, script: &str) -> u64 {
    browser
        .execute(script, vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

/// The service under test: the shipped workflows over the in-process sandbox, with a viewer
/// (`vera`) and an admin (`adam`, whose token is [`API_TOKEN`], so [`Api`] drives it too).
async fn serve(env: &Env) -> Service {
    let workflows = env.path().join("workflows");
    std::fs::create_dir(&workflows).unwrap();
    for entry in std::fs::read_dir(support::root().join("workflows")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, workflows.join(path.file_name().unwrap())).unwrap();
    }
    let config = env.config();
    Service::start(ServiceConfig {
        api_tokens: vec![
            ApiToken::new("vera", Role::Viewer, VIEWER),
            ApiToken::new("adam", Role::Admin, API_TOKEN),
        ],
        credentials: Credentials::from_config(&config),
        vars: config.vars.into_iter().collect(),
        poll: Duration::from_millis(100),
        ..ServiceConfig::new(workflows, env.data_dir(), "127.0.0.1:0".parse().unwrap())
    })
    .await
    .unwrap()
}

/// Runs to look at: a new hire (invited, provisioned), a mistyped address the vendors refuse
/// (failed runs), the new hire terminated (the SCIM delete waits for approval), and Calendly's
/// members ingested into `saas_users`. Returns the waiting run's id.
async fn make_runs(api: &Api) -> String {
    let people = json!([
        {"email": "new.hire@example.com", "name": "New Hire", "first_name": "New", "last_name": "Hire",
         "department": "Engineering", "title": "Engineer", "status": "active"},
        {"email": "mistyped@example", "name": "Mis Typed", "first_name": "Mis", "last_name": "Typed",
         "department": "Sales", "title": "Account Executive", "status": "active"},
    ]);
    let (status, body) = api.post("/records/people", people).await;
    assert_eq!(status, 200, "{body}");
    settled(api).await;
    let (status, body) = api
        .post(
            "/records/people",
            json!({"email": "new.hire@example.com", "status": "terminated"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let waiting = api
        .wait_for("/runs?status=waiting_approval", |runs| {
            runs.as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    let (status, body) = api
        .post("/workflows/calendly-ingest/runs", json!({"wait": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    settled(api).await;
    waiting[0]["id"].as_str().unwrap().to_owned()
}

/// Waits until no run is queued or running.
async fn settled(api: &Api) {
    api.wait_for("/runs?limit=1000", |runs| {
        runs.as_array().is_some_and(|runs| {
            runs.iter()
                .all(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
        })
    })
    .await;
}

/// Signs in through the login form with `token`.
async fn login(browser: &Client, base: &str, token: &str) {
    browser.goto(&format!("{base}/")).await.unwrap();
    // Not signed in: `/` leads to the login form.
    let form = find(browser, "#login-form").await;
    form.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(browser, "the login", false, || async {
        browser.current_url().await.unwrap().path() != "/login"
    })
    .await;
}

/// The first element matching `css`, waited for ([`PATIENCE`] at most).
async fn find(browser: &Client, css: &str) -> Element {
    match browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(err) => {
            let url = browser.current_url().await.unwrap();
            let source = browser.source().await.unwrap_or_default();
            panic!("no `{css}` on {url} within {PATIENCE:?} ({err}); the page:\n{source}")
        }
    }
}

/// Signs out with the header's button.
async fn logout(browser: &Client) {
    find(browser, "#who form.logout button")
        .await
        .click()
        .await
        .unwrap();
    find(browser, "#login-form").await;
}

/// Clicks the first element matching `css`, waited for.
async fn click(browser: &Client, css: &str) {
    find(browser, css).await.click().await.unwrap();
}

/// The text of the first element matching `css`, waited for.
async fn text(browser: &Client, css: &str) -> String {
    find(browser, css).await.text().await.unwrap()
}

/// Whether an element matches `css` now (no waiting).
async fn exists(browser: &Client, css: &str) -> bool {
    !browser
        .find_all(Locator::Css(css))
        .await
        .unwrap()
        .is_empty()
}

/// Polls `check` on the page until it holds ([`PATIENCE`] at most), reloading between tries
/// when `reload` (a page without live updates).
async fn until<F, Fut>(browser: &Client, what: &str, reload: bool, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {PATIENCE:?} on {}",
            browser.current_url().await.unwrap()
        );
        if reload {
            browser.refresh().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

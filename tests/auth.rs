//! `blockyard auth login|status|logout` and `blockyard check` against the sandbox's OAuth servers,
//! with the real binary. The test plays the browser: it reads the authorize URL the binary prints,
//! GETs it (the sandbox consents at once, or denies), and either follows the redirect to the
//! binary's loopback listener or pastes the redirected address on the binary's stdin.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Stdio};

use blockyard::sandbox::{Sandbox, SandboxConfig};
use serde_json::{json, Value};

use crate::support::{self, THREE_READS};

const CLIENT_ID: &str = "sandbox-client";
const CLIENT_SECRET: &str = "sandbox-client-secret";

/// The sandbox and a temp dir whose `blockyard.yaml` has a `calendly` credential connected by
/// `auth login` (no `refresh_token`), redirecting to a free loopback port.
struct Setup {
    sb: Sandbox,
    dir: tempfile::TempDir,
    redirect_uri: String,
}

/// A free loopback port (the listener is closed again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Setup {
    async fn start() -> Setup {
        let sb = Sandbox::start(SandboxConfig {
            seed_users: 3,
            token: Some(support::TOKEN.to_owned()),
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let redirect_uri = format!("http://127.0.0.1:{}/callback", free_port());
        let uri = redirect_uri.clone();
        sb.configure_oauth(|c| c.redirect_uri = uri);
        let setup = Setup {
            sb,
            dir: tempfile::tempdir().unwrap(),
            redirect_uri,
        };
        setup.configure(CLIENT_SECRET, &setup.redirect_uri.clone(), "");
        std::fs::write(setup.dir.path().join("three-reads.yaml"), THREE_READS).unwrap();
        setup
    }

    /// Writes `blockyard.yaml`: the `calendly` credential with `secret`, `redirect_uri` and `extra`
    /// top-level text.
    fn configure(&self, secret: &str, redirect_uri: &str, extra: &str) {
        let base = self.sb.calendly_url();
        std::fs::write(
            self.dir.path().join("blockyard.yaml"),
            format!(
                "data_dir: data\n{extra}credentials:\n  calendly:\n    vendor: calendly\n    auth: oauth2_refresh_token\n    client_id: {CLIENT_ID}\n    client_secret: {secret}\n    redirect_uri: {redirect_uri}\n    base_url: {base}\n    authorize_url: {base}/oauth/authorize\n    token_url: {base}/oauth/token\n    rate_limit_per_minute: 0\n"
            ),
        )
        .unwrap();
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = support::command_in(self.dir.path(), args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            support::stdout(&out),
            support::stderr(&out),
        )
    }

    /// Starts the binary with `args`, stdin and stdout piped.
    fn spawn(&self, args: &[&str]) -> Login {
        let mut child = support::command_in(self.dir.path(), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Login {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn tokens(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("data/tokens.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn entry(&self) -> Value {
        self.tokens()["credentials"]["calendly"].clone()
    }

    /// A complete `auth login calendly --paste` with consent: `(exit code, stdout, stderr)`.
    async fn login_by_paste(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["auth", "login", "calendly", "--paste", "--no-browser"];
        args.extend_from_slice(extra);
        let mut login = self.spawn(&args);
        let url = login.authorize_url().await;
        let location = browse(&url).await;
        login.paste(&location);
        login.finish().await
    }
}

/// A running `auth login`.
struct Login {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Login {
    /// The authorize URL it printed.
    async fn authorize_url(&mut self) -> String {
        loop {
            let line = self.lines.recv().await.expect("the login printed its URL");
            self.seen.push(line.clone());
            if let Some(url) = line.trim().strip_prefix("http") {
                return format!("http{url}");
            }
        }
    }

    fn paste(&mut self, text: &str) {
        let mut stdin = self.child.stdin.take().unwrap();
        writeln!(stdin, "{text}").unwrap();
    }

    /// Waits for the exit: `(exit code, all of stdout, stderr)`.
    async fn finish(mut self) -> (i32, String, String) {
        let mut child = self.child;
        let (code, stderr) = tokio::task::spawn_blocking(move || {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            (child.wait().unwrap().code().unwrap_or(-1), stderr)
        })
        .await
        .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        let mut stdout = self.seen.join("\n");
        stdout.push('\n');
        (code, stdout, stderr)
    }
}

/// Plays the browser at the authorize URL: the sandbox's redirect (its `Location`).
async fn browse(url: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 302, "{}", response.text().await.unwrap());
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Asserts that no token of the store and not the client secret is in `text`.
fn assert_no_secret(setup: &Setup, text: &str) {
    let entry = setup.entry();
    for secret in [
        entry["refresh_token"].as_str().unwrap(),
        entry["access_token"].as_str().unwrap(),
        CLIENT_SECRET,
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_login_by_paste_stores_tokens_and_shows_the_organization() {
    let setup = Setup::start().await;
    let (code, stdout, stderr) = setup.login_by_paste(&[]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let org = setup.sb.organization_uri();
    assert!(
        stdout.ends_with(&format!(
            "Paste the address the browser was sent to (or the code): \nLogged in: the tokens of `calendly` are in `data/tokens.json`.\nGranted scopes: users:read organizations:read activity_log:read organizations:write\n\n`calendly.current_user` says organization: {org}\nAdd it to `blockyard.yaml` (or run again with `--write-config`):\n\nvars:\n  calendly_organization: {org}\n"
        )),
        "{stdout}"
    );
    assert_eq!(stderr, "");
    let entry = setup.entry();
    assert_eq!(entry["origin"], "login");
    assert_eq!(
        entry["scopes"],
        json!([
            "users:read",
            "organizations:read",
            "activity_log:read",
            "organizations:write"
        ])
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(setup.dir.path().join("data/tokens.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_no_secret(&setup, &stdout);
    // The authorize request carried PKCE S256 and the registered redirect URI.
    let authorize = setup
        .sb
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/oauth/authorize"))
        .unwrap();
    let query = authorize.query.unwrap();
    assert!(query.contains("code_challenge_method=S256"), "{query}");
    assert!(query.contains("code_challenge="), "{query}");
    // The stored tokens serve a later process.
    let (code, stdout, stderr) = setup.run(&["call", "calendly.current_user"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_no_secret(&setup, &format!("{stdout}{stderr}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browserless_login_through_the_loopback_redirect_writes_the_organization() {
    let setup = Setup::start().await;
    let mut login = setup.spawn(&[
        "auth",
        "login",
        "calendly",
        "--no-browser",
        "--write-config",
    ]);
    let url = login.authorize_url().await;
    let location = browse(&url).await;
    assert!(
        location.starts_with(&format!("{}?code=", setup.redirect_uri)),
        "{location}"
    );
    // The browser follows the redirect to the binary's listener, which answers with a page.
    let page = reqwest::get(&location).await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("blockyard is connected: credential <b>calendly</b> has its tokens."),
        "{page}"
    );
    let (code, stdout, stderr) = login.finish().await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let org = setup.sb.organization_uri();
    assert!(
        stdout.ends_with(&format!(
            "Wrote `vars.calendly_organization: {org}` to `blockyard.yaml`.\n"
        )),
        "{stdout}"
    );
    let config = std::fs::read_to_string(setup.dir.path().join("blockyard.yaml")).unwrap();
    assert!(
        config.ends_with(&format!("vars:\n  calendly_organization: {org}\n")),
        "{config}"
    );
    // With the organization in the config, a workflow runs on the stored tokens.
    let (code, stdout, stderr) = setup.run(&["run", "three-reads.yaml", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_a_restart() {
    let setup = Setup::start().await;
    let (code, stdout, stderr) = setup.login_by_paste(&[]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let first = setup.entry();
    // Each process finds the access token expired, refreshes, and stores the rotated token.
    let mut spent = vec![first["refresh_token"].as_str().unwrap().to_owned()];
    for _ in 0..2 {
        setup.sb.expire_access_tokens();
        let (code, stdout, stderr) = setup.run(&["call", "calendly.current_user"]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let entry = setup.entry();
        let refresh = entry["refresh_token"].as_str().unwrap().to_owned();
        assert!(!spent.contains(&refresh), "the refresh token rotated");
        assert_eq!(entry["origin"], "login");
        assert!(entry["last_refresh"].is_string(), "{entry}");
        assert_eq!(entry["scopes"], first["scopes"]);
        spent.push(refresh);
    }
    // The spent one is refused, in Calendly's shape.
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/token", setup.sb.calendly_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("refresh_token", &spent[0]),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "invalid_grant", "error_description": "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_that_expires_in_the_middle_of_a_run_is_refreshed() {
    let setup = Setup::start().await;
    let (code, stdout, stderr) = setup.login_by_paste(&["--write-config"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // From now on every access token serves one request: `a` refreshes (the stored token is
    // expired), `b` and `c` each meet an expired token in the middle of the run.
    setup.sb.expire_access_tokens();
    setup.sb.configure_oauth(|c| c.access_uses = Some(1));
    let before = setup.sb.requests().len();
    let (code, stdout, stderr) = setup.run(&["run", "three-reads.yaml", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(run["status"], "succeeded", "{stdout}");
    let seen: Vec<(String, u16)> = setup.sb.requests()[before..]
        .iter()
        .map(|r| (r.path.rsplit('/').next().unwrap().to_owned(), r.status))
        .collect();
    let expected: Vec<(String, u16)> = [
        ("me", 401),
        ("token", 200),
        ("me", 200),
        ("me", 401),
        ("token", 200),
        ("me", 200),
        ("me", 401),
        ("token", 200),
        ("me", 200),
    ]
    .iter()
    .map(|(p, s)| ((*p).to_owned(), *s))
    .collect();
    assert_eq!(seen, expected);
    assert_no_secret(&setup, &format!("{stdout}{stderr}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_missing_scope_and_login_names_it() {
    let setup = Setup::start().await;
    setup.sb.configure_oauth(|c| {
        c.scopes = Some(vec![
            "users:read".to_owned(),
            "organizations:read".to_owned(),
            "organizations:write".to_owned(),
        ])
    });
    let (code, stdout, stderr) = setup.login_by_paste(&["--write-config"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "error: the vendor did not grant `activity_log:read` to credential `calendly`; the actions that need them will be refused: add them to the scopes of the vendor's OAuth app and run `blockyard auth login calendly` again\n"
    );
    let (code, stdout, stderr) = setup.run(&["check"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "calendly (calendly)\n  ok       calendly.current_user\n  ok       calendly.members_page\n  refused  calendly.activity_log_page: `calendly.activity_log_page`: `calendly` answered 403 `Permission Denied`: This action requires the `activity_log:read` scope, which the access token was not granted.\n           likely cause: missing scope `activity_log:read`: add it to the vendor's OAuth app and run `blockyard auth login calendly` again\n"
    );
    let (code, stdout, _) = setup.run(&["check", "calendly", "--json"]);
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["credentials"][0]["checks"][2]["status"], 403);
    // With every scope granted, every check passes.
    setup.sb.configure_oauth(|c| c.scopes = None);
    let (code, stdout, stderr) = setup.login_by_paste(&[]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = setup.run(&["check"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "calendly (calendly)\n  ok       calendly.current_user\n  ok       calendly.members_page\n  ok       calendly.activity_log_page\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_status_shows_sources_expiry_and_scopes_and_never_a_secret() {
    let setup = Setup::start().await;
    let (code, stdout, stderr) = setup.run(&["auth", "status", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status[0]["tokens"], json!({"stored": false}));
    assert_eq!(
        status[0]["scopes"],
        json!({"granted": null, "needed": null, "missing": null})
    );
    assert_eq!(status[0]["action"], "run `blockyard auth login calendly`");
    setup.sb.configure_oauth(|c| {
        c.scopes = Some(vec![
            "users:read".to_owned(),
            "organizations:read".to_owned(),
        ])
    });
    let (code, _, _) = setup.login_by_paste(&[]).await;
    assert_eq!(code, 1);
    std::fs::create_dir(setup.dir.path().join("workflows")).unwrap();
    std::fs::copy(
        support::workflow("calendly-offboard.yaml"),
        setup.dir.path().join("workflows/calendly-offboard.yaml"),
    )
    .unwrap();
    let (code, text, stderr) = setup.run(&["auth", "status"]);
    assert_eq!(code, 0, "{text}{stderr}");
    let (code, json_text, stderr) = setup.run(&["auth", "status", "--json"]);
    assert_eq!(code, 0, "{json_text}{stderr}");
    for output in [&text, &json_text] {
        assert_no_secret(&setup, output);
    }
    let status: Value = serde_json::from_str(&json_text).unwrap();
    let item = &status[0];
    assert_eq!(item["auth"], "oauth2_refresh_token");
    assert_eq!(
        item["secrets"]["client_secret"],
        json!({"from": "config", "name": "credentials.calendly.client_secret", "available": true})
    );
    assert_eq!(item["tokens"]["stored"], true);
    assert_eq!(item["tokens"]["from"], "auth login");
    assert_eq!(item["tokens"]["access_token_expired"], false);
    assert_eq!(
        item["scopes"]["granted"],
        json!(["users:read", "organizations:read"])
    );
    assert_eq!(item["scopes"]["missing"], json!(["organizations:write"]));
    assert!(
        text.contains("  granted scopes: users:read organizations:read\n  needed scopes: organizations:read organizations:write\n  missing scopes: `organizations:write`\n"),
        "{text}"
    );
    // `auth logout` forgets the tokens.
    let (code, stdout, _) = setup.run(&["auth", "logout", "calendly"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "Forgot the tokens of `calendly` (the vendor still lists the app as allowed until you remove it there).\n"
    );
    assert_eq!(setup.tokens()["credentials"], json!({}));
    let (code, stdout, stderr) = setup.run(&["call", "calendly.current_user"]);
    assert_eq!(code, 2, "{stdout}");
    assert_eq!(
        stderr,
        "error: credential `calendly`: no tokens are stored for it; run `blockyard auth login calendly` (or set its `refresh_token`)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_is_said_in_the_users_words() {
    let setup = Setup::start().await;
    setup.sb.configure_oauth(|c| c.deny = true);
    let (code, stdout, stderr) = setup.login_by_paste(&[]).await;
    assert_eq!(code, 2, "{stdout}");
    assert_eq!(
        stderr,
        "error: access was denied at the vendor's consent page (access_denied: The user denied access to the app.); run `blockyard auth login calendly` again and allow access, or ask an administrator of the vendor account to allow the app\n"
    );
    assert!(!setup.dir.path().join("data/tokens.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_said_in_the_users_words() {
    let setup = Setup::start().await;
    setup.configure("not-the-secret", &setup.redirect_uri, "");
    let (code, stdout, stderr) = setup.login_by_paste(&[]).await;
    assert_eq!(code, 2, "{stdout}");
    assert_eq!(
        stderr,
        "error: the vendor refused the client id `sandbox-client` with this client secret (invalid_client); copy `client_id` and `client_secret` of credential `calendly` again from the vendor's OAuth app\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_uri_the_app_has_not_registered_is_said_in_the_users_words() {
    let setup = Setup::start().await;
    let other = format!("http://127.0.0.1:{}/callback", free_port());
    setup.configure(CLIENT_SECRET, &other, "");
    let mut login = setup.spawn(&[
        "auth",
        "login",
        "calendly",
        "--no-browser",
        "--timeout",
        "2s",
    ]);
    let url = login.authorize_url().await;
    // The vendor's page says so, and sends the browser nowhere.
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains(&format!(
        "The redirect_uri `{other}` does not match the redirect URI registered for this app (`{}`).",
        setup.redirect_uri
    )));
    let (code, _, stderr) = login.finish().await;
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        format!("error: no redirect reached `{other}` within 2s; if the vendor's page said the redirect URI does not match, register `{other}` exactly in the vendor's OAuth app (or set `redirect_uri` of credential `calendly` to the one registered) and run `blockyard auth login calendly` again\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_port_in_use_is_said_in_the_users_words() {
    let setup = Setup::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let uri = format!("http://127.0.0.1:{port}/callback");
    setup.configure(CLIENT_SECRET, &uri, "");
    let (code, stdout, stderr) = setup.run(&["auth", "login", "calendly", "--no-browser"]);
    assert_eq!(code, 2, "{stdout}");
    assert_eq!(
        stderr,
        format!("error: cannot listen on `127.0.0.1:{port}` for the redirect URI `{uri}`: the port is in use by another program; stop that program, or register another loopback redirect URI with the vendor's app and set it as `redirect_uri` of credential `calendly`\n")
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_address_from_another_login_is_refused_by_its_state() {
    let setup = Setup::start().await;
    let mut login = setup.spawn(&["auth", "login", "calendly", "--paste", "--no-browser"]);
    let url = login.authorize_url().await;
    let forged = url.replace("state=", "state=x");
    let location = browse(&forged).await;
    login.paste(&location);
    let (code, _, stderr) = login.finish().await;
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "error: the redirect's `state` is not this login's (an older attempt's page, or a forged link); run `blockyard auth login calendly` again and use the newest authorize URL\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webex_logs_in_and_refuses_a_spent_code_in_its_shape() {
    let setup = Setup::start().await;
    let base = setup.sb.webex_url();
    std::fs::write(
        setup.dir.path().join("blockyard.yaml"),
        format!(
            "data_dir: data\ncredentials:\n  webex:\n    vendor: webex\n    auth: oauth2_refresh_token\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    redirect_uri: {}\n    base_url: {base}\n    authorize_url: {base}/authorize\n    token_url: {base}/access_token\n    rate_limit_per_minute: 0\n",
            setup.redirect_uri
        ),
    )
    .unwrap();
    let mut login = setup.spawn(&["auth", "login", "webex", "--paste", "--no-browser"]);
    let url = login.authorize_url().await;
    assert!(
        url.contains("scope=spark-admin%3Apeople_read+spark-admin%3Apeople_write"),
        "{url}"
    );
    let location = browse(&url).await;
    login.paste(&location);
    let (code, stdout, stderr) = login.finish().await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let entry = &setup.tokens()["credentials"]["webex"];
    assert!(entry["refresh_expires_at"].is_i64(), "{entry}");
    // Webex's refresh token lives 90 days in the sandbox: not soon.
    let status: Value = serde_json::from_str(&setup.run(&["auth", "status", "--json"]).1).unwrap();
    assert_eq!(status[0]["tokens"]["refresh_token_expires_soon"], false);
    let (code, stdout, stderr) = setup.run(&["check", "webex"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "webex (webex)\n  ok       webex.people_page\n");
    // The code was single-use.
    let code = location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{base}/access_token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", code),
            ("redirect_uri", &setup.redirect_uri),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["message"], body["error_description"]);
    assert!(body["trackingId"]
        .as_str()
        .unwrap()
        .starts_with("ROUTER_SANDBOX_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_store_others_can_read_is_warned_about_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::start().await;
    let (code, stdout, stderr) = setup.login_by_paste(&["--write-config"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let file = setup.dir.path().join("data/tokens.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warning = "warning: the token store `data/tokens.json` has mode 0644, so other users may read its tokens; run `chmod 600 data/tokens.json`\n";
    let (code, _, stderr) = setup.run(&["call", "calendly.current_user"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr, warning);
    let (code, _, stderr) = setup.run(&["run", "three-reads.yaml"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr, warning);
    let (code, _, stderr) = setup.run(&["check"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr, warning);
}

#[test]
fn validate_reports_the_scopes_a_workflow_directory_needs() {
    let out = support::blockyard(&["validate", "workflows/", "--scopes"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    // `calendly-role-daily` reads the last activity through `user_role`, so the activity log's
    // scope counts too; `reclaim-idle` tells users through the `licence_notices` webhook.
    assert_eq!(
        support::stdout(&out),
        "scopes needed, by credential:\n  calendly: organizations:read organizations:write activity_log:read users:read\n  licence_notices: none\n  scim: none\n  webex: spark-admin:people_read spark-admin:people_write\n"
    );
    let out = support::blockyard(&["validate", "workflows/", "--scopes", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(support::stderr(&out).contains("the argument '--scopes' cannot be used with '--json'"));
}

#[test]
fn presets_show_lists_the_scopes_an_action_needs() {
    let out = support::blockyard(&["presets", "show", "webex.delete_user", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let shown: Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    assert_eq!(
        shown["scopes"],
        json!(["spark-admin:people_read", "spark-admin:people_write"])
    );
    assert_eq!(
        shown["admin"],
        "full administrator, user administrator or external full administrator (read-only, provisioning and device administrators cannot delete)"
    );
    let out = support::blockyard(&["presets", "show", "calendly.last_activity"]);
    assert!(
        support::stdout(&out).contains("\n  scopes: activity_log:read\n"),
        "{}",
        support::stdout(&out)
    );
}

#[test]
fn the_sandbox_oauth_example_matches_the_sandbox_app() {
    let config =
        blockyard::config::Config::load(&support::root().join("examples/sandbox-oauth.yaml"))
            .unwrap();
    let app = blockyard::sandbox::OAuthConfig::default();
    for credential in config.credentials.values() {
        assert_eq!(
            credential.client_id.as_deref(),
            Some(app.client_id.as_str())
        );
        let secret = credential
            .client_secret
            .as_ref()
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(secret, app.client_secret);
        assert_eq!(credential.redirect_uri, app.redirect_uri);
        assert!(credential.refresh_token.is_none(), "auth login provides it");
    }
    assert_eq!(config.credentials.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_redirect_uri_makes_the_login_read_a_pasted_address() {
    // A Production Calendly app must redirect to HTTPS, where blockyard cannot listen.
    let setup = Setup::start().await;
    let uri = "https://connect.example.com/calendly/callback";
    setup
        .sb
        .configure_oauth(|c| c.redirect_uri = uri.to_owned());
    setup.configure(CLIENT_SECRET, uri, "");
    let mut login = setup.spawn(&["auth", "login", "calendly", "--no-browser"]);
    let url = login.authorize_url().await;
    let location = browse(&url).await;
    assert!(location.starts_with(&format!("{uri}?code=")), "{location}");
    login.paste(&location);
    let (code, stdout, stderr) = login.finish().await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("The redirect URI `{uri}` is not an http:// loopback address, so blockyard cannot catch the redirect: paste it below.\n")),
        "{stdout}"
    );
    assert_eq!(setup.entry()["origin"], "login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_data_dir_the_tokens_live_in_dot_blockyard_beside_the_config() {
    let setup = Setup::start().await;
    let path = setup.dir.path().join("blockyard.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("data_dir: data\n", "")).unwrap();
    let (code, stdout, stderr) = setup.login_by_paste(&[]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("Logged in: the tokens of `calendly` are in `.blockyard/tokens.json`.\n"),
        "{stdout}"
    );
    // `call` (which has no --data-dir) finds them there, and its refresh rotates them there.
    setup.sb.expire_access_tokens();
    let before = std::fs::read_to_string(setup.dir.path().join(".blockyard/tokens.json")).unwrap();
    let (code, stdout, stderr) = setup.run(&["call", "calendly.current_user"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let after = std::fs::read_to_string(setup.dir.path().join(".blockyard/tokens.json")).unwrap();
    assert_ne!(before, after);
    assert!(!setup.dir.path().join("data").exists());
}

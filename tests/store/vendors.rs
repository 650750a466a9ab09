//! What the vendor client of several workers on one PostgreSQL store shares: OAuth tokens (a
//! single-use refresh token is spent once, whichever worker refreshes) and each credential's
//! request budget (a 429 one worker meets holds every worker back). Two pools on one schema stand
//! for two workers. They need a server (`BLOCKYARD_TEST_POSTGRES`, see [`super::postgres`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockyard::config::{Config, CredentialName};
use blockyard::http::{CallOptions, Client, Clock, Credentials};
use blockyard::preset::{PresetId, PresetRegistry};
use blockyard::sandbox::{Sandbox, SandboxConfig};
use blockyard::service::{Service, ServiceConfig};
use blockyard::store::any::AnyStore;
use blockyard::store::postgres::tokens::PgTokenStore;
use blockyard::store::postgres::Postgres;
use blockyard::store::tokens::{CredentialTokens, StoredToken, LOGIN};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::postgres::{schema_for, server, Schemas};

const CLIENT_ID: &str = "sandbox-client";
const CLIENT_SECRET: &str = "sandbox-client-secret";

/// Two pools (two workers) on a fresh schema, dropped with `schemas`.
async fn two_workers(url: &str, schemas: &Schemas) -> (Postgres, Postgres) {
    let dir = tempfile::tempdir().unwrap();
    let name = schema_for(dir.path());
    schemas.names.lock().unwrap().push(name.clone());
    let one = Postgres::open_in_schema(url, &name).await.unwrap();
    let two = Postgres::open_in_schema(url, &name).await.unwrap();
    (one, two)
}

/// A refresh and an access token of the sandbox's Calendly app, as `auth login` gets them
/// (the authorize page consents at once; no PKCE).
async fn issued_tokens(sb: &Sandbox) -> (String, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = blockyard::config::DEFAULT_REDIRECT_URI;
    let authorized = http
        .get(sb.calendly_authorize_url())
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", "users:read"),
        ])
        .send()
        .await
        .unwrap();
    let location = authorized.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: serde_json::Value = http
        .post(sb.calendly_token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", redirect),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        tokens["refresh_token"].as_str().unwrap().to_owned(),
        tokens["access_token"].as_str().unwrap().to_owned(),
    )
}

/// `blockyard.yaml` in `dir` with a `calendly` credential connected by `auth login` (no
/// `refresh_token` of its own) and `per_minute` requests a minute.
fn oauth_config(dir: &Path, calendly_url: &str, per_minute: u32) -> Config {
    let file = dir.join("blockyard.yaml");
    std::fs::write(
        &file,
        format!(
            "data_dir: data\ncredentials:\n  calendly:\n    vendor: calendly\n    auth: oauth2_refresh_token\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    base_url: {calendly_url}\n    token_url: {calendly_url}/oauth/token\n    rate_limit_per_minute: {per_minute}\n"
        ),
    )
    .unwrap();
    Config::load(&file).unwrap()
}

/// A service on `pg` as `serve` starts one from `config` (its credentials keep their tokens in
/// a token store), with no workflows.
async fn service(config: &Config, pg: &Postgres, workflows: &Path) -> Service {
    let mut service = ServiceConfig::new(
        workflows.to_owned(),
        config.data_dir.clone(),
        "127.0.0.1:0".parse().unwrap(),
    );
    service.store = Some(AnyStore::from(pg.clone()));
    service.credentials = Credentials::persistent(config);
    Service::start(service).await.unwrap()
}

async fn current_user(client: &Client) -> Result<u16, String> {
    let id = PresetId::parse("calendly.current_user").unwrap();
    let inputs = client
        .resolve_inputs(&id, &serde_json::Map::new(), &serde_json::json!({}))
        .unwrap();
    client
        .call(
            &id,
            &CredentialName::new("calendly"),
            &inputs,
            &CallOptions::default(),
        )
        .await
        .map(|exchange| exchange.response.status)
        .map_err(|err| err.to_string())
}

/// Two `serve` workers on one database, each on a host of its own (its own data dir), find the
/// credential's access token expired and refresh at the same time: one refresh reaches the
/// vendor, whose single-use refresh token is spent once, and both calls succeed with what it
/// issued. Their requests were counted in the database's bucket, not each worker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_refresh_an_expired_token_once() {
    let Some(url) = server("store::vendors::two_workers_refresh_an_expired_token_once") else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let (one, two) = two_workers(&url, &schemas).await;
    let sb = Sandbox::start(SandboxConfig {
        seed_users: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let (refresh, access) = issued_tokens(&sb).await;
    // `auth login`'s entry, in the database: its access token has expired.
    let entry = StoredToken {
        origin: LOGIN.to_owned(),
        refresh_token: refresh.clone(),
        access_token: Some(access),
        expires_at: Some(0),
        refresh_expires_at: None,
        scopes: Some(vec!["users:read".to_owned()]),
        last_refresh: None,
        updated_at: "2026-12-01T00:00:00Z".to_owned(),
    };
    let tokens = PgTokenStore::new(&one);
    let locked = tokens.lock_credential("calendly").await.unwrap();
    locked.save(Some(entry)).await.unwrap();
    sb.expire_access_tokens();
    // Each token request takes a while, so the second worker's refresh starts during the first.
    sb.set_latency(Duration::from_millis(300));

    let (host_a, host_b, workflows) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let calendly = sb.calendly_url();
    let (config_a, config_b) = (
        oauth_config(host_a.path(), &calendly, 6),
        oauth_config(host_b.path(), &calendly, 6),
    );
    let a = service(&config_a, &one, workflows.path()).await;
    let b = service(&config_b, &two, workflows.path()).await;
    let before = sb.requests().len();
    let (got_a, got_b) = tokio::join!(
        current_user(a.shared().engine().client()),
        current_user(b.shared().engine().client())
    );
    assert_eq!((got_a, got_b), (Ok(200), Ok(200)));
    let seen: Vec<(String, u16)> = sb.requests()[before..]
        .iter()
        .map(|r| (r.path.rsplit('/').next().unwrap().to_owned(), r.status))
        .collect();
    let refreshes = seen.iter().filter(|(p, _)| p == "token").count();
    assert_eq!(refreshes, 1, "{seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|s| *s == &("me".to_owned(), 200))
            .count(),
        2,
        "{seen:?}"
    );
    // The rotated tokens are in the database, and in neither host's data dir.
    let stored = tokens.entry("calendly").await.unwrap().unwrap();
    assert_ne!(stored.refresh_token, refresh);
    assert_eq!(stored.origin, LOGIN);
    assert!(stored.last_refresh.is_some());
    for config in [&config_a, &config_b] {
        assert!(!config.data_dir.join("tokens.json").exists());
    }
    // Both calls took their token from the one bucket (6 a minute, two taken; a little refilled).
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let name = schemas.names.lock().unwrap()[0].clone();
    let rows = client
        .query(
            &format!("SELECT vendor, credential, tokens FROM {name}.rate_buckets"),
            &[],
        )
        .await
        .unwrap();
    let buckets: Vec<(String, String, f64)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    assert_eq!(
        (buckets[0].0.as_str(), buckets[0].1.as_str()),
        ("calendly", "calendly")
    );
    assert!(buckets[0].2 < 4.5, "{buckets:?}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    sb.shutdown().await;
}

/// A client of a worker on `pg` as a service makes it, on `clock`, with a bearer `calendly`
/// credential of `per_minute` requests a minute at `server`.
fn bearer_client(pg: &Postgres, server: &MockServer, per_minute: u32, clock: Clock) -> Client {
    let text = format!(
        "credentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: calendly-token-123\n    base_url: {}\n    rate_limit_per_minute: {per_minute}\n",
        server.uri()
    );
    let config = Config::parse(Path::new("blockyard.yaml"), &text).unwrap();
    Client::on_store(
        Arc::new(PresetRegistry::builtin()),
        Credentials::from_config(&config),
        &AnyStore::from(pg.clone()),
        clock,
    )
    .unwrap()
}

fn me() -> serde_json::Value {
    serde_json::json!({"resource": {"uri": "https://api.calendly.com/users/U1", "name": "Jane"}})
}

/// A budget of 3 a minute shared by two workers: their requests, taken in turns, start at
/// 0 s (three, the full bucket), then one each 20 s, whichever worker sends it; each worker
/// alone would have sent its three at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_request_budget() {
    let Some(url) = server("store::vendors::two_workers_share_one_request_budget") else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let (one, two) = two_workers(&url, &schemas).await;
    let vendor = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/users/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(me()))
        .mount(&vendor)
        .await;
    // One virtual clock: time moves only when a worker waits.
    let clock = Clock::virtual_clock();
    let workers = [
        bearer_client(&one, &vendor, 3, clock.clone()),
        bearer_client(&two, &vendor, 3, clock.clone()),
    ];
    let mut sent_at = Vec::new();
    for turn in 0..6 {
        assert_eq!(current_user(&workers[turn % 2]).await, Ok(200));
        sent_at.push(clock.now().as_secs());
    }
    assert_eq!(sent_at, [0, 0, 0, 20, 40, 60]);
    assert_eq!(clock.waits(), [Duration::from_secs(20); 3]);
    assert_eq!(vendor.received_requests().await.unwrap().len(), 6);
}

/// A 429 one worker meets (Calendly's, `Retry-After: 30`) pauses the other worker's requests on
/// that credential until its end too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_one_worker_meets_holds_every_worker_back() {
    let Some(url) = server("store::vendors::a_429_one_worker_meets_holds_every_worker_back") else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let (one, two) = two_workers(&url, &schemas).await;
    let vendor = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/users/me"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .up_to_n_times(1)
        .mount(&vendor)
        .await;
    Mock::given(method("GET"))
        .and(path("/users/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(me()))
        .mount(&vendor)
        .await;
    // A clock each (each worker's own time), both starting at the same instant.
    let (clock_a, clock_b) = (Clock::virtual_clock(), Clock::virtual_clock());
    let a = bearer_client(&one, &vendor, 600, clock_a.clone());
    let b = bearer_client(&two, &vendor, 600, clock_b.clone());
    assert_eq!(current_user(&a).await, Ok(200));
    assert_eq!(clock_a.waits(), [Duration::from_secs(30)]);
    // Worker b, still at the 429's instant, waits the vendor's 30 s before sending.
    assert_eq!(current_user(&b).await, Ok(200));
    assert_eq!(clock_b.waits(), [Duration::from_secs(30)]);
    assert_eq!(vendor.received_requests().await.unwrap().len(), 3);
}

/// With `store: postgres`, `auth status`, `call` and `auth logout` use the tokens in the
/// database (what every `serve` worker refreshes from), never a `tokens.json` in the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_commands_and_call_use_the_tokens_in_the_database() {
    let Some(url) =
        server("store::vendors::the_auth_commands_and_call_use_the_tokens_in_the_database")
    else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let (pg, _) = two_workers(&url, &schemas).await;
    let name = schemas.names.lock().unwrap()[0].clone();
    let in_schema = format!("{url}?options=-c%20search_path%3D{name}");
    let sb = Sandbox::start(SandboxConfig {
        seed_users: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let (refresh, access) = issued_tokens(&sb).await;
    let tokens = PgTokenStore::new(&pg);
    let locked = tokens.lock_credential("calendly").await.unwrap();
    locked
        .save(Some(StoredToken {
            origin: LOGIN.to_owned(),
            refresh_token: refresh.clone(),
            access_token: Some(access.clone()),
            expires_at: Some(0),
            refresh_expires_at: None,
            scopes: Some(vec!["users:read".to_owned()]),
            last_refresh: None,
            updated_at: "2026-12-01T00:00:00Z".to_owned(),
        }))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = oauth_config(dir.path(), &sb.calendly_url(), 0);
    let text = std::fs::read_to_string(&config.file).unwrap();
    std::fs::write(
        &config.file,
        format!("{text}store:\n  postgres:\n    url: ${{PG_URL}}\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = crate::support::command_in(dir.path(), args)
            .env("PG_URL", &in_schema)
            .output()
            .unwrap();
        let (stdout, stderr) = (crate::support::stdout(&out), crate::support::stderr(&out));
        for secret in [refresh.as_str(), access.as_str(), CLIENT_SECRET] {
            assert!(!stdout.contains(secret) && !stderr.contains(secret));
        }
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = run(&["auth", "status", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status[0]["tokens"]["stored"], true, "{status}");
    assert_eq!(status[0]["tokens"]["from"], "auth login", "{status}");
    assert_eq!(
        status[0]["tokens"]["access_token_expired"], true,
        "{status}"
    );
    let (code, stdout, stderr) = run(&["auth", "status"]);
    assert_eq!(code, Some(0), "{stderr}");
    let shown = blockyard::store::postgres::redact(&in_schema);
    assert!(
        stdout.starts_with(&format!("Token store: the `tokens` table of {shown}\n")),
        "{stdout}"
    );
    // `call` refreshes through the database: the rotated token is there.
    let (code, stdout, stderr) = run(&["call", "calendly.current_user"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let rotated = tokens.entry("calendly").await.unwrap().unwrap();
    assert_ne!(rotated.refresh_token, refresh);
    assert!(rotated.last_refresh.is_some());
    assert!(!dir.path().join("data/tokens.json").exists());
    let (code, stdout, stderr) = run(&["auth", "logout", "calendly"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "Forgot the tokens of `calendly` (the vendor still lists the app as allowed until you remove it there).\n");
    assert_eq!(tokens.entry("calendly").await.unwrap(), None);
    let (code, stdout, _) = run(&["auth", "logout", "calendly"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout, "No tokens were stored for `calendly`.\n");
    sb.shutdown().await;
}

/// With `store: postgres`, `auth login` stores the tokens in the database, where `serve`'s
/// workers refresh from, and its vendor `login` action (Calendly's organization, written with
/// `--write-config`) uses them from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_stores_the_tokens_in_the_database() {
    use std::io::{BufRead as _, Write as _};
    let Some(url) = server("store::vendors::auth_login_stores_the_tokens_in_the_database") else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let (pg, _) = two_workers(&url, &schemas).await;
    let name = schemas.names.lock().unwrap()[0].clone();
    let in_schema = format!("{url}?options=-c%20search_path%3D{name}");
    let sb = Sandbox::start(SandboxConfig {
        seed_users: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = oauth_config(dir.path(), &sb.calendly_url(), 0);
    let text = std::fs::read_to_string(&config.file).unwrap();
    std::fs::write(
        &config.file,
        format!(
            "{text}    authorize_url: {}\nstore:\n  postgres:\n    url: ${{PG_URL}}\n",
            sb.calendly_authorize_url()
        ),
    )
    .unwrap();
    let mut child = crate::support::command_in(
        dir.path(),
        &[
            "auth",
            "login",
            "calendly",
            "--paste",
            "--no-browser",
            "--write-config",
        ],
    )
    .env("PG_URL", &in_schema)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let authorize = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "no authorize URL");
            if let Some(url) = line.trim().strip_prefix("http") {
                return (format!("http{url}"), stdout);
            }
        }
    });
    let (authorize, mut stdout) = authorize.await.unwrap();
    // The browser's part: the sandbox consents at once and redirects.
    let location = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    writeln!(child.stdin.take().unwrap(), "{location}").unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.code(),
            rest,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    let (code, printed, stderr) = out;
    assert_eq!(code, Some(0), "{printed}{stderr}");
    let shown = blockyard::store::postgres::redact(&in_schema);
    assert!(
        printed.contains(&format!(
            "Logged in: the tokens of `calendly` are in the `tokens` table of {shown}."
        )),
        "{printed}"
    );
    let stored = PgTokenStore::new(&pg)
        .entry("calendly")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.origin, LOGIN);
    assert!(!printed.contains(&stored.refresh_token), "{printed}");
    assert!(!dir.path().join("data/tokens.json").exists());
    // The organization, read with the stored tokens, is written into the config.
    let written = Config::load(&config.file).unwrap();
    assert_eq!(
        written.vars["calendly_organization"],
        serde_json::json!(sb.organization_uri())
    );
    sb.shutdown().await;
}

//! The token store across processes: an OAuth server on loopback whose refresh tokens are
//! single-use (as Calendly's are: each refresh revokes the token it spent), and the real binary run
//! again and again with one `blockyard.yaml`. Every process must find the token the previous one
//! rotated to, and no token may show in any output or history file.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};

use crate::support;

const CLIENT_ID: &str = "blockyard-app";
const CLIENT_SECRET: &str = "client-SECRET-a41f";
/// The refresh token pasted into `blockyard.yaml`.
const FIRST: &str = "first-REFRESH-7c21";

/// What the OAuth server knows.
#[derive(Debug, Default)]
struct Issuer {
    /// The one refresh token it accepts now.
    valid: String,
    /// Every refresh token presented to it, in order.
    presented: Vec<String>,
    /// The access tokens it honours.
    access: Vec<String>,
    issued: u32,
    /// `expires_in` of the access tokens it issues.
    expires_in: u64,
    /// How long it takes to answer a token request.
    delay: Duration,
}

type Shared = Arc<Mutex<Issuer>>;

/// `POST /oauth/token`: `grant_type=refresh_token` with the one valid refresh token, which it
/// revokes; anything else is `invalid_grant`.
async fn token(State(issuer): State<Shared>, body: String) -> (StatusCode, Json<Value>) {
    let delay = issuer.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let mut issuer = issuer.lock().unwrap();
    issuer.presented.push(field("refresh_token").to_owned());
    if field("grant_type") != "refresh_token"
        || field("client_id") != CLIENT_ID
        || field("client_secret") != CLIENT_SECRET
        || field("refresh_token") != issuer.valid
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "invalid_grant", "error_description": "The provided authorization grant or refresh token is invalid, expired, revoked or was issued to another client."}),
            ),
        );
    }
    issuer.issued += 1;
    let n = issuer.issued;
    issuer.valid = format!("rotated-REFRESH-{n}-5e7a");
    let access = format!("issued-ACCESS-{n}-91b0");
    issuer.access.push(access.clone());
    (
        StatusCode::OK,
        Json(json!({
            "token_type": "Bearer",
            "access_token": access,
            "refresh_token": issuer.valid,
            "expires_in": issuer.expires_in,
            "scope": "default",
        })),
    )
}

/// `GET /calendly/users/me`, for a valid access token only.
async fn me(State(issuer): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if issuer.lock().unwrap().access.iter().any(|a| a == presented) {
        (
            StatusCode::OK,
            Json(
                json!({"resource": {"uri": "https://api.calendly.com/users/U1", "current_organization": "https://api.calendly.com/organizations/ORG1"}}),
            ),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"title": "Unauthenticated", "message": "The access token is invalid"})),
        )
    }
}

/// The OAuth server and a temp dir with a `blockyard.yaml` whose `calendly` credential uses it.
struct Setup {
    issuer: Shared,
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
}

impl Setup {
    async fn start(expires_in: u64) -> Setup {
        let issuer: Shared = Arc::new(Mutex::new(Issuer {
            valid: FIRST.to_owned(),
            expires_in,
            ..Issuer::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .route("/oauth/token", post(token))
            .route("/calendly/users/me", get(me))
            .with_state(Arc::clone(&issuer));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let setup = Setup {
            issuer,
            dir: tempfile::tempdir().unwrap(),
            addr,
        };
        setup.configure(FIRST);
        std::fs::write(setup.dir.path().join("whoami.yaml"), support::WHOAMI).unwrap();
        setup
    }

    /// Writes `blockyard.yaml` with `refresh_token` as the credential's refresh token.
    fn configure(&self, refresh_token: &str) {
        let addr = self.addr;
        std::fs::write(
            self.dir.path().join("blockyard.yaml"),
            format!(
                "data_dir: data\ncredentials:\n  calendly:\n    vendor: calendly\n    auth: oauth2_refresh_token\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    refresh_token: {refresh_token}\n    base_url: http://{addr}/calendly\n    token_url: http://{addr}/oauth/token\n"
            ),
        )
        .unwrap();
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the binary with `args` (debug logs on); it ends with `(exit code, stdout + stderr)`.
    fn spawn(&self, args: &[&str]) -> tokio::task::JoinHandle<(i32, String)> {
        let dir = self.dir.path().to_owned();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = support::command_in(&dir, &args)
                .env("RUST_LOG", "debug")
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                format!("{}{}", support::stdout(&out), support::stderr(&out)),
            )
        })
    }

    /// Runs the binary with `args` (debug logs on): `(exit code, stdout + stderr)`.
    async fn blockyard(&self, args: &[&str]) -> (i32, String) {
        self.spawn(args).await.unwrap()
    }

    fn presented(&self) -> Vec<String> {
        self.issuer.lock().unwrap().presented.clone()
    }

    /// Every secret the server knows of: refresh tokens spent or current, access tokens.
    fn secrets(&self) -> Vec<String> {
        let issuer = self.issuer.lock().unwrap();
        let mut secrets = vec![CLIENT_SECRET.to_owned(), issuer.valid.clone()];
        secrets.extend(issuer.presented.iter().cloned());
        secrets.extend(issuer.access.iter().cloned());
        secrets
    }

    /// Asserts that no secret is in `output` or in a data dir file other than the token store.
    fn assert_no_secret_in(&self, output: &str) {
        for secret in self.secrets() {
            assert!(!output.contains(&secret), "`{secret}` leaked:\n{output}");
            let files: Vec<_> = support::files_containing(&self.data_dir(), &secret)
                .into_iter()
                .filter(|f| f.file_name().unwrap() != "tokens.json")
                .collect();
            assert!(files.is_empty(), "`{secret}` is in {files:?}");
        }
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_in_a_row_all_succeed_with_single_use_refresh_tokens() {
    // Access tokens that live a minute are renewed at once: every process refreshes.
    let setup = Setup::start(60).await;
    let mut output = String::new();
    for args in [
        &["call", "calendly.current_user"][..],
        &["run", "whoami.yaml"],
        &["call", "calendly.current_user", "--json"],
    ] {
        let (code, out) = setup.blockyard(args).await;
        assert_eq!(code, 0, "{args:?}:\n{out}");
        output += &out;
    }
    // Each process spent the token the previous one was given, never one already spent.
    assert_eq!(
        setup.presented(),
        [FIRST, "rotated-REFRESH-1-5e7a", "rotated-REFRESH-2-5e7a"]
    );
    let store = setup.data_dir().join("tokens.json");
    assert_eq!(mode(&store), 0o600);
    let stored: Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert_eq!(
        stored["credentials"]["calendly"]["refresh_token"],
        "rotated-REFRESH-3-5e7a"
    );
    setup.assert_no_secret_in(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_access_token_serves_later_processes_and_a_pasted_refresh_token_wins() {
    let setup = Setup::start(7200).await;
    let mut output = String::new();
    for _ in 0..2 {
        let (code, out) = setup.blockyard(&["call", "calendly.current_user"]).await;
        assert_eq!(code, 0, "{out}");
        output += &out;
    }
    assert_eq!(
        setup.presented(),
        [FIRST],
        "the second process used the stored access token"
    );

    // The vendor revokes the access token: the next process is refused once, refreshes with
    // the stored refresh token, and does not take the refused access token from the store again.
    setup.issuer.lock().unwrap().access.clear();
    let (code, out) = setup.blockyard(&["call", "calendly.current_user"]).await;
    assert_eq!(code, 0, "{out}");
    output += &out;
    assert_eq!(setup.presented(), [FIRST, "rotated-REFRESH-1-5e7a"]);

    // Someone authorizes the app again and pastes the new refresh token into the config: it
    // wins over the stored one (and the access token issued from it).
    let pasted = "pasted-REFRESH-e3e3";
    {
        let mut issuer = setup.issuer.lock().unwrap();
        issuer.valid = pasted.to_owned();
        issuer.access.clear();
    }
    setup.configure(pasted);
    for _ in 0..2 {
        let (code, out) = setup.blockyard(&["call", "calendly.current_user"]).await;
        assert_eq!(code, 0, "{out}");
        output += &out;
    }
    assert_eq!(
        setup.presented(),
        [FIRST, "rotated-REFRESH-1-5e7a", pasted],
        "the pasted token was spent once, and its successor's access token served the last call"
    );
    setup.assert_no_secret_in(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_at_once_never_spend_the_same_refresh_token() {
    // Every process must refresh, and each token request takes a while: without one lock
    // across processes, two would spend the same token and one would get `invalid_grant`.
    let setup = Setup::start(60).await;
    setup.issuer.lock().unwrap().delay = Duration::from_millis(100);
    let calls: Vec<_> = (0..3)
        .map(|_| setup.spawn(&["call", "calendly.current_user"]))
        .collect();
    let mut output = String::new();
    for call in calls {
        let (code, out) = call.await.unwrap();
        assert_eq!(code, 0, "{out}");
        output += &out;
    }
    let presented = setup.presented();
    assert_eq!(presented.len(), 3, "{presented:?}");
    let mut unique = presented.clone();
    unique.dedup();
    assert_eq!(unique, presented, "a refresh token was spent twice");
    setup.assert_no_secret_in(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_token_store_stops_a_call_before_any_token_is_spent() {
    let setup = Setup::start(60).await;
    std::fs::create_dir_all(setup.data_dir()).unwrap();
    std::fs::write(
        setup.data_dir().join("tokens.json"),
        "{\"credentials\": {\"calendly\": ",
    )
    .unwrap();
    let dir = setup.dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        support::blockyard_in(&dir, &["call", "calendly.current_user"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(support::stdout(&out), "");
    assert_eq!(
        support::stderr(&out),
        // Written here with the umask's mode, the file also gets the warning.
        "warning: the token store `data/tokens.json` has mode 0644, so other users may read its tokens; run `chmod 600 data/tokens.json`\nerror: credential `calendly`: the token store `data/tokens.json` is not valid (line 1, column 29); move it away to start again from the refresh tokens in blockyard.yaml or `blockyard auth login`\n"
    );
    assert!(setup.presented().is_empty(), "no refresh token was spent");
}

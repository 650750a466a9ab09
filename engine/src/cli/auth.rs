//! `blockyard auth login|status|logout`: connect a credential to its vendor with OAuth, see what
//! each credential holds, forget stored tokens.
//!
//! `login` runs [`blockyard::http::login`]: it prints the authorize URL (and opens a browser
//! unless `--no-browser`), takes the code from the loopback redirect URI it listens on, or from
//! text pasted on stdin (`--paste`, and always when the registered redirect URI is not an
//! `http://` loopback one), stores the tokens, says which asked-for scopes were not granted, and
//! then performs the vendor's `login` action (Calendly: the organization URI, with the `vars`
//! line to add, or written with `--write-config`). `status` reads the config and the token store
//! and prints no secret; `logout` removes a credential's stored tokens (the vendor is not told).
//!
//! The token store is the one the config's `serve` refreshes from ([`ConfigTokens`]): the data
//! dir's `tokens.json`, or with `store: postgres` the database's `tokens` table, so `login` puts
//! the tokens where every worker finds them, and `status`, `logout`, `call` and `check` see and
//! rotate the ones the workers use (never a file beside them).

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use blockyard::config::StoreConfig;
use blockyard::config::{auth_name, Config, CredentialName, SecretRef, SecretSource};
use blockyard::http::login::{self, Login, LoginError};
use blockyard::http::{CallOptions, Client, Credentials};
use blockyard::preset::{AuthKind, PresetId, PresetRegistry};
use blockyard::store::postgres::tokens::PgTokenStore;
use blockyard::store::postgres::Postgres;
use blockyard::store::tokens::{CredentialTokens, FileTokenStore, StoredToken, TokenStore, LOGIN};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Connect a credential to its vendor: OAuth consent in a browser, tokens into the token store.
    Login(LoginArgs),
    /// Each credential: auth kind, where its secrets come from, token expiry, granted and missing scopes.
    Status(StatusArgs),
    /// Forget the tokens stored for a credential.
    Logout(LogoutArgs),
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The credential (a name under `credentials:` with `auth: oauth2_refresh_token`).
    credential: String,
    /// Only print the authorize URL; do not open a browser.
    #[arg(long)]
    no_browser: bool,
    /// Read the redirected address (or the code) from stdin instead of listening on the redirect URI.
    #[arg(long)]
    paste: bool,
    /// Write the variable the vendor's login reads (Calendly's organization) into the config.
    #[arg(long)]
    write_config: bool,
    /// How long to wait for the redirect, such as `5m`.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    timeout: String,
    /// The configuration file (default: ./blockyard.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The workflows whose scopes count as needed (default: ./workflows when it exists).
    #[arg(long, value_name = "DIR")]
    workflows: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The configuration file (default: ./blockyard.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    credential: String,
    /// The configuration file (default: ./blockyard.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(command: AuthCommand) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    match command {
        AuthCommand::Login(args) => login(args),
        AuthCommand::Status(args) => status(args),
        AuthCommand::Logout(args) => logout(args),
    }
}

/// The token store of `config`, with its warning printed.
pub fn token_store(config: &Config) -> FileTokenStore {
    let store = FileTokenStore::in_dir(&config.data_dir);
    if let Some(warning) = store.warning() {
        eprintln!("warning: {warning}");
    }
    store
}

/// Prints the token store's warning, for commands whose logs show errors only (`call`, `run`);
/// `serve` logs it at `warn`.
pub fn warn_about_token_store(config: &Config) {
    if matches!(config.store, StoreConfig::Sled) {
        token_store(config);
    }
}

/// Where the OAuth tokens of a config are kept: the data dir's file, or the `tokens` table of
/// the config's PostgreSQL store (connected when first used; not migrated here, which is
/// `serve`'s and `blockyard store migrate`'s job).
pub enum ConfigTokens {
    File(FileTokenStore),
    Postgres(PgTokenStore),
}

impl ConfigTokens {
    /// The token store of `config` (the file's warning printed).
    pub fn of(config: &Config) -> anyhow::Result<ConfigTokens> {
        Ok(match &config.store {
            StoreConfig::Sled => ConfigTokens::File(token_store(config)),
            StoreConfig::Postgres { url } => {
                let pg = Postgres::connect(&url.resolve()?, None)?;
                ConfigTokens::Postgres(PgTokenStore::new(&pg))
            }
        })
    }

    pub fn shared(&self) -> Arc<dyn CredentialTokens> {
        match self {
            ConfigTokens::File(store) => Arc::new(store.clone()),
            ConfigTokens::Postgres(store) => Arc::new(store.clone()),
        }
    }

    /// Where the tokens are, for people (a path or a redacted URL).
    pub fn location(&self) -> String {
        self.shared().location()
    }

    /// Where the tokens are, in a sentence: the path in backticks, or the database's table.
    fn in_words(&self) -> String {
        match self {
            ConfigTokens::File(store) => format!("`{}`", store.path().display()),
            ConfigTokens::Postgres(store) => store.location(),
        }
    }

    /// `config`'s credentials, refreshing OAuth2 tokens through this store.
    pub fn credentials(&self, config: &Config) -> Credentials {
        Credentials::with_token_store(config, self.shared())
    }

    /// The stored entry of each `auth: oauth2_refresh_token` credential of `config`.
    pub async fn entries(&self, config: &Config) -> anyhow::Result<BTreeMap<String, StoredToken>> {
        let store = self.shared();
        let mut entries = BTreeMap::new();
        for cred in config.credentials.values() {
            if cred.auth != AuthKind::Oauth2RefreshToken {
                continue;
            }
            if let Some(entry) = store.entry(cred.name.as_str()).await? {
                entries.insert(cred.name.to_string(), entry);
            }
        }
        Ok(entries)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let timeout = blockyard::compile::parse_duration(&args.timeout)
        .filter(|t| !t.is_zero())
        .with_context(|| {
            format!(
                "`--timeout {}` is not a duration; write a number and a unit, such as `5m`",
                args.timeout
            )
        })?;
    let config = Config::find(args.config.as_deref())?;
    let presets = PresetRegistry::builtin();
    let login = Login::start(&config, &presets, &args.credential)?;
    let store = ConfigTokens::of(&config)?;
    let shared = store.shared();
    let credential = login.credential().clone();
    let asked = login.scopes.clone();
    let loopback = if args.paste { None } else { login.loopback() };
    if !args.paste && loopback.is_none() {
        println!(
            "The redirect URI `{}` is not an http:// loopback address, so blockyard cannot catch the redirect: paste it below.",
            login.redirect_uri
        );
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let listener = match &loopback {
            Some((addr, _)) => Some(bind(*addr, &login).await?),
            None => None,
        };
        println!("To connect credential `{credential}`, open this address in a browser and allow access:\n\n  {}\n", login.authorize_url);
        if !args.no_browser {
            open_browser(login.authorize_url.as_str());
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot set up the HTTP client")?;
        let tokens = match (listener, &loopback) {
            (Some(listener), Some((_, path))) => {
                println!("Waiting for the vendor to send the browser back to {} ...", login.redirect_uri);
                let (mut stream, code) =
                    wait_for_redirect(&listener, path, &login, timeout, &args.timeout).await?;
                // Stored before the page says it worked.
                let result = match code {
                    Ok(code) => match login.exchange(&http, code).await {
                        Ok(tokens) => tokens.store(&*shared, &credential).await.map(|()| tokens),
                        Err(err) => Err(err),
                    },
                    Err(err) => Err(err),
                };
                let page = match &result {
                    Ok(_) => format!("blockyard is connected: credential <b>{credential}</b> has its tokens. You can close this tab."),
                    Err(err) => format!("blockyard could not connect credential <b>{credential}</b>: {}", html(&err.to_string())),
                };
                respond(&mut stream, result.is_ok(), &page).await;
                result?
            }
            _ => {
                print!("Paste the address the browser was sent to (or the code): ");
                std::io::stdout().flush().ok();
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the pasted address from stdin")?;
                let code = login.code_from_paste(&line)?;
                let tokens = login.exchange(&http, code).await?;
                tokens.store(&*shared, &credential).await?;
                tokens
            }
        };
        println!(
            "\nLogged in: the tokens of `{credential}` are in {}.",
            store.in_words()
        );
        println!("Granted scopes: {}", list_or_none(&tokens.scopes));
        let missing: Vec<String> = asked
            .iter()
            .filter(|s| !tokens.scopes.contains(s))
            .cloned()
            .collect();
        let mut code = ExitCode::SUCCESS;
        if !missing.is_empty() {
            eprintln!(
                "error: the vendor did not grant {} to credential `{credential}`; the actions that need them will be refused: add them to the scopes of the vendor's OAuth app and run `blockyard auth login {credential}` again",
                backticked(&missing)
            );
            code = ExitCode::from(1);
        }
        after_login(&config, &presets, &credential, args.write_config, &store).await?;
        Ok(code)
    })
}

/// Binds the loopback redirect URI's address, in the user's words when it is taken.
async fn bind(
    addr: std::net::SocketAddr,
    login: &Login,
) -> Result<tokio::net::TcpListener, LoginError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::AddrInUse => LoginError::PortInUse {
                credential: login.credential().to_string(),
                addr: addr.to_string(),
                redirect_uri: login.redirect_uri.to_string(),
            },
            _ => LoginError::CannotListen {
                addr: addr.to_string(),
                redirect_uri: login.redirect_uri.to_string(),
                reason: err.to_string().to_lowercase(),
            },
        })
}

/// Accepts connections on the loopback listener until one asks for the redirect path; others
/// (a favicon) get 404. Returns the connection, to answer with the outcome, and its code.
async fn wait_for_redirect(
    listener: &tokio::net::TcpListener,
    path: &str,
    login: &Login,
    timeout: Duration,
    waited: &str,
) -> anyhow::Result<(tokio::net::TcpStream, Result<String, LoginError>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let accepted = tokio::time::timeout_at(deadline, listener.accept()).await;
        let Ok(accepted) = accepted else {
            return Err(LoginError::NoRedirect {
                credential: login.credential().to_string(),
                redirect_uri: login.redirect_uri.to_string(),
                waited: waited.to_owned(),
            }
            .into());
        };
        let (mut stream, _) = accepted.context("cannot accept a connection on the redirect URI")?;
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let target = head
            .lines()
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .unwrap_or("");
        let (got_path, query) = target.split_once('?').unwrap_or((target, ""));
        if got_path != path {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        return Ok((stream, login.code_from_query(query)));
    }
}

/// Answers the browser with a small page.
async fn respond(stream: &mut tokio::net::TcpStream, ok: bool, message: &str) {
    let title = if ok { "Connected" } else { "Not connected" };
    let body = format!("<!doctype html><meta charset=utf-8><title>blockyard: {title}</title><h1>{title}</h1><p>{message}</p>\n");
    let status = if ok { "200 OK" } else { "400 Bad Request" };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Opens `url` in the desktop's browser, if there is one; failing quietly (the URL is printed).
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// The vendor's `login` action: shows the value (Calendly's organization URI) and the `vars`
/// line, or writes it with `--write-config`.
async fn after_login(
    config: &Config,
    presets: &PresetRegistry,
    credential: &CredentialName,
    write: bool,
    store: &ConfigTokens,
) -> anyhow::Result<()> {
    let cred = &config.credentials[credential];
    let Some(spec) = presets
        .vendor(&cred.vendor)
        .and_then(|v| v.spec.login.clone())
    else {
        return Ok(());
    };
    let id = PresetId {
        vendor: cred.vendor.clone(),
        action: spec.action.clone(),
    };
    let client = Client::new(Arc::new(presets.clone()), store.credentials(config))?;
    let redactor = client.redactor().clone();
    let inputs = client
        .resolve_inputs(&id, &serde_json::Map::new(), &config.context())
        .map_err(|e| anyhow::anyhow!(redactor.text(&e.to_string())))?;
    let exchange = client
        .call(&id, credential, &inputs, &CallOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!(redactor.text(&e.to_string())))?;
    let source = presets
        .action(&id)
        .and_then(|a| a.spec.outputs.get(&spec.output))
        .with_context(|| format!("`{id}` has no output `{}`", spec.output))?;
    let template =
        blockyard::template::Template::compile(source).map_err(|e| anyhow::anyhow!("{e}"))?;
    let value = blockyard::template::TemplateEngine::new()
        .render(
            &template,
            &handlebars::Context::from(json!({ "response": exchange.response.body })),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("\n`{id}` says {}: {value}", spec.output);
    let line = format!("  {}: {value}", spec.var);
    if config.vars.get(&spec.var).and_then(Value::as_str) == Some(value.as_str()) {
        println!(
            "`vars.{}` in `{}` is already set to it.",
            spec.var,
            config.file.display()
        );
    } else if write {
        write_var(&config.file, &spec.var, &value)?;
        println!(
            "Wrote `vars.{}: {value}` to `{}`.",
            spec.var,
            config.file.display()
        );
    } else {
        println!(
            "Add it to `{}` (or run again with `--write-config`):\n\nvars:\n{line}",
            config.file.display()
        );
    }
    Ok(())
}

/// Sets `vars.KEY` in the config file's text: replaces the key's line under `vars:`, or adds it
/// (and `vars:` when there is none); the rest of the file is left as written.
fn write_var(file: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read `{}`", file.display()))?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = format!("  {key}: {value}");
    match lines.iter().position(|l| l.trim_end() == "vars:") {
        Some(vars) => {
            let end = lines[vars + 1..]
                .iter()
                .position(|l| !l.is_empty() && !l.starts_with(' '))
                .map_or(lines.len(), |i| vars + 1 + i);
            let existing =
                (vars + 1..end).find(|&i| lines[i].trim_start().starts_with(&format!("{key}:")));
            match existing {
                Some(i) => lines[i] = line,
                None => lines.insert(vars + 1, line),
            }
        }
        None => {
            lines.push("vars:".to_owned());
            lines.push(line);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(file, out).with_context(|| format!("cannot write `{}`", file.display()))?;
    // The written file must still load.
    Config::load(file)?;
    Ok(())
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(" ")
    }
}

fn backticked(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a configured secret comes from, without its value.
fn source(secret: &SecretRef) -> Value {
    let (from, name, available) = match &secret.source {
        SecretSource::Env(var) => ("env", var.clone(), std::env::var_os(var).is_some()),
        SecretSource::File(path) => ("file", path.display().to_string(), path.is_file()),
        SecretSource::Literal(_) => ("config", secret.key.clone(), true),
    };
    json!({ "from": from, "name": name, "available": available })
}

/// The scopes the workflows in `dir` need, per credential name (see [`scopes_of_files`]).
pub fn workflow_scopes(dir: &Path, presets: &PresetRegistry) -> BTreeMap<String, Vec<String>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    scopes_of_files(&files, presets)
}

/// The scopes the workflow `files` need, per credential name: every mapping with a
/// `preset: vendor.action` counts for its `credential` (or the vendor's name, as blocks default).
/// A file that cannot be read or parsed is skipped (`validate` reports it).
pub fn scopes_of_files(
    files: &[PathBuf],
    presets: &PresetRegistry,
) -> BTreeMap<String, Vec<String>> {
    fn walk(value: &serde_yaml::Value, found: &mut Vec<(String, String)>) {
        match value {
            serde_yaml::Value::Mapping(map) => {
                if let Some(preset) = map.get("preset").and_then(|p| p.as_str()) {
                    let credential = map
                        .get("credential")
                        .and_then(|c| c.as_str())
                        .map(str::to_owned)
                        .unwrap_or_else(|| preset.split('.').next().unwrap_or("").to_owned());
                    found.push((credential, preset.to_owned()));
                }
                for value in map.values() {
                    walk(value, found);
                }
            }
            serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut needed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            continue;
        };
        let mut found = Vec::new();
        walk(&value, &mut found);
        for (credential, preset) in found {
            let Some(id) = PresetId::parse(&preset) else {
                continue;
            };
            let Some(action) = presets.action(&id) else {
                continue;
            };
            // The actions an action performs too: a merge's read, a probe, a role's activity.
            let spec = &action.spec;
            let also = [
                spec.merge.as_ref().map(|m| &m.read),
                spec.probe.as_ref().map(|p| &p.action),
                spec.role.as_ref().and_then(|r| r.activity_action.as_ref()),
            ];
            let scopes = needed.entry(credential).or_default();
            let others = also.into_iter().flatten().filter_map(|name| {
                presets.action(&PresetId {
                    vendor: id.vendor.clone(),
                    action: name.clone(),
                })
            });
            for performed in std::iter::once(action).chain(others) {
                for scope in &performed.spec.scopes {
                    if !scopes.contains(scope) {
                        scopes.push(scope.clone());
                    }
                }
            }
        }
    }
    needed
}

/// How long before a refresh token lapses (Webex's) `auth status` says to log in again: 14 days.
const RENEW_LOGIN_WITHIN: i64 = 14 * 24 * 3600;

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = Config::find(args.config.as_deref())?;
    let presets = PresetRegistry::builtin();
    let store = ConfigTokens::of(&config)?;
    let stored = runtime()?.block_on(store.entries(&config))?;
    let dir = args.workflows.clone().or_else(|| {
        let default = PathBuf::from("workflows");
        default.is_dir().then_some(default)
    });
    // Without a workflows dir, what is needed is unknown (not "nothing").
    let needed = dir.as_deref().map(|d| workflow_scopes(d, &presets));
    let time = |secs: i64| {
        chrono::DateTime::from_timestamp(secs, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let now = chrono::Utc::now().timestamp();
    let mut out = Vec::new();
    for cred in config.credentials.values() {
        let name = cred.name.as_str();
        let mut secrets = serde_json::Map::new();
        for (key, secret) in [
            ("token", &cred.token),
            ("client_secret", &cred.client_secret),
            ("refresh_token", &cred.refresh_token),
            ("password", &cred.password),
        ] {
            if let Some(secret) = secret {
                secrets.insert(key.to_owned(), source(secret));
            }
        }
        let mut item = json!({
            "credential": name,
            "vendor": cred.vendor,
            "auth": auth_name(cred.auth),
            "secrets": secrets,
        });
        if cred.auth == AuthKind::Oauth2RefreshToken {
            let entry = stored.get(name);
            let granted = entry.and_then(|e| e.scopes.clone());
            let need = needed
                .as_ref()
                .map(|n| n.get(name).cloned().unwrap_or_default());
            let missing: Option<Vec<String>> = match (&granted, &need) {
                (Some(g), Some(n)) => Some(n.iter().filter(|s| !g.contains(s)).cloned().collect()),
                _ => None,
            };
            item["tokens"] = match entry {
                None => json!({ "stored": false }),
                Some(e) => json!({
                    "stored": true,
                    "from": if e.origin == LOGIN { "auth login" } else { "refresh_token in the config" },
                    "access_token_expires_at": e.expires_at.and_then(time),
                    "access_token_expired": e.expires_at.map(|at| at <= now),
                    "refresh_token_expires_at": e.refresh_expires_at.and_then(time),
                    "refresh_token_expires_soon": e.refresh_expires_at.map(|at| at - now < RENEW_LOGIN_WITHIN),
                    "last_refresh": e.last_refresh,
                    "updated_at": e.updated_at,
                }),
            };
            item["scopes"] = json!({
                "granted": granted,
                "needed": need,
                "missing": missing,
            });
            if entry.is_none() && cred.refresh_token.is_none() {
                item["action"] = json!(format!("run `blockyard auth login {name}`"));
            }
        }
        out.push(item);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("Token store: {}", store.location());
    if let Some(dir) = &dir {
        println!("Scopes needed by the workflows in {}", dir.display());
    }
    for item in &out {
        println!(
            "\n{} ({}, auth: {})",
            item["credential"].as_str().unwrap_or_default(),
            item["vendor"].as_str().unwrap_or_default(),
            item["auth"].as_str().unwrap_or_default()
        );
        if let Some(secrets) = item["secrets"].as_object() {
            for (key, s) in secrets {
                let available = if s["available"] == json!(true) {
                    ""
                } else {
                    " (not available)"
                };
                println!(
                    "  {key}: from {} `{}`{available}",
                    s["from"].as_str().unwrap_or_default(),
                    s["name"].as_str().unwrap_or_default()
                );
            }
        }
        let tokens = &item["tokens"];
        if tokens["stored"] == json!(true) {
            println!(
                "  tokens: in the token store, from {}",
                tokens["from"].as_str().unwrap_or_default()
            );
            let text = |v: &Value| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| "unknown".to_owned())
            };
            let expired = if tokens["access_token_expired"] == json!(true) {
                " (expired; renewed on next use)"
            } else {
                ""
            };
            println!(
                "  access token expires: {}{expired}",
                text(&tokens["access_token_expires_at"])
            );
            if !tokens["refresh_token_expires_at"].is_null() {
                let soon = if tokens["refresh_token_expires_soon"] == json!(true) {
                    format!(
                        " (soon: run `blockyard auth login {}` before then)",
                        item["credential"].as_str().unwrap_or_default()
                    )
                } else {
                    String::new()
                };
                println!(
                    "  refresh token expires: {}{soon}",
                    text(&tokens["refresh_token_expires_at"])
                );
            }
            println!(
                "  last refresh: {}",
                tokens["last_refresh"].as_str().unwrap_or("never")
            );
        } else if tokens["stored"] == json!(false) {
            println!("  tokens: none stored");
        }
        let scopes = &item["scopes"];
        if !scopes.is_null() {
            let list = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            match scopes["granted"].as_array() {
                Some(_) => println!(
                    "  granted scopes: {}",
                    list_or_none(&list(&scopes["granted"]))
                ),
                None => println!("  granted scopes: unknown"),
            }
            if scopes["needed"].is_null() {
                println!("  needed scopes: unknown (no ./workflows; pass `--workflows DIR`)");
            } else {
                println!(
                    "  needed scopes: {}",
                    list_or_none(&list(&scopes["needed"]))
                );
            }
            let missing = list(&scopes["missing"]);
            if !missing.is_empty() {
                println!("  missing scopes: {}", backticked(&missing));
            }
        }
        if let Some(action) = item["action"].as_str() {
            println!("  to connect: {action}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let config = Config::find(args.config.as_deref())?;
    login::oauth_credential(&config, &args.credential)?;
    let store = ConfigTokens::of(&config)?.shared();
    let removed = runtime()?.block_on(async {
        let locked = store.lock_credential(&args.credential).await?;
        let stored = locked.entry().is_some();
        if stored {
            locked.save(None).await?;
        }
        anyhow::Ok(stored)
    })?;
    if removed {
        println!(
            "Forgot the tokens of `{}` (the vendor still lists the app as allowed until you remove it there).",
            args.credential
        );
    } else {
        println!("No tokens were stored for `{}`.", args.credential);
    }
    Ok(ExitCode::SUCCESS)
}

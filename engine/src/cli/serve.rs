//! `blockyard serve`: the long-running service (scheduler, trigger queue, workers, HTTP API).
//!
//! Prints what it is doing to stderr, then runs until SIGINT or SIGTERM and stops gracefully
//! (exit 0); SIGHUP reloads the workflows, keeping the old set when the new one does not load.
//! The API's tokens are the config's `api_tokens` (each named, with a role) and one admin token,
//! `BLOCKYARD_TOKEN` else the config's `token`, which acts as `admin`; values are read here and
//! never printed. The config's `serve:` sets the connection bounds and extra host names. Once it
//! listens it writes `serve.json` (URL and pid, no token) into the data dir, so CLI commands on
//! that data dir go through its API ([`blockyard::service::endpoint`]); a clean stop removes it.
//! `--log-format json` writes every stderr line, the status lines included, as one JSON object.
//!
//! With `store: postgres` in the config it runs on that database (connected and migrated at
//! start, a newer schema refused; the URL's password never printed) instead of the data dir's
//! sled store; the data dir then holds only `serve.json` (the OAuth tokens are the database's too,
//! shared by every worker: `blockyard::http::Client::on_store`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use blockyard::config::StoreConfig;
use blockyard::exec::EngineOptions;
use blockyard::http::Credentials;
use blockyard::records::Fields;
use blockyard::service::endpoint::Endpoint;
use blockyard::service::{Service, ServiceConfig, ServiceError};
use blockyard::store::any::AnyStore;
use blockyard::store::api::ReadPauses;
use blockyard::store::postgres::Postgres;
use blockyard::trigger::LoadError;

use super::run::{runtime, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The directory of workflows to serve.
    #[arg(long, value_name = "DIR", default_value = "workflows")]
    workflows: PathBuf,
    /// Where the API listens (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How long a stop waits for runs in flight, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    grace: u64,
    /// How stderr is written: `text` (colour only at a terminal) or `json` (one JSON object a
    /// line, the start, reload and stop messages included).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    common: CommonArgs,
}

/// `serve --log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Whether `--log-format json` is on: [`say!`] then logs instead of printing.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A status line on stderr: printed as is, or as a JSON log line under `--log-format json`.
macro_rules! say {
    ($($arg:tt)*) => {
        if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(target: "blockyard::serve", "{}", format_args!($($arg)*));
        } else {
            eprintln!($($arg)*);
        }
    };
}

fn init_tracing(format: LogFormat) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("blockyard=info"))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder.json().with_ansi(false).try_init()
        }
        // Colour only for a person at a terminal, never into a log file or a pipe.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing(args.log_format);
    if args.common.server().is_some() {
        bail!("`serve` takes no `--server`: it is the service; give `--listen ADDR` for where it listens");
    }
    let config = args.common.config()?;
    let data_dir = args.common.data_dir(config.as_ref());
    // `store: postgres`: the URL is read now (an unset variable is an error before anything
    // starts); the database is opened on the runtime below.
    let postgres = match config.as_ref().map(|c| &c.store) {
        Some(StoreConfig::Postgres { url }) => Some(url.resolve()?),
        _ => None,
    };
    let token = match std::env::var("BLOCKYARD_TOKEN") {
        Ok(token) if !token.is_empty() => Some(token),
        _ => match config.as_ref().and_then(|c| c.token.as_ref()) {
            Some(secret) => Some(secret.resolve()?),
            None => None,
        },
    };
    let mut api_tokens = Vec::new();
    if let Some(config) = &config {
        for named in &config.api_tokens {
            if token.is_some() && named.name == blockyard::server::auth::SINGLE_TOKEN_NAME {
                bail!(
                    "`api_tokens.{}` has the name `BLOCKYARD_TOKEN` (or `token`) acts under; rename it, or drop the single token",
                    named.name
                );
            }
            api_tokens.push(blockyard::server::ApiToken::new(
                named.name.clone(),
                named.role,
                named.token.resolve()?,
            ));
        }
    }
    let open = token.is_none() && api_tokens.is_empty();
    let serve = config.as_ref().map(|c| c.serve.clone()).unwrap_or_default();
    let vars: Fields = config
        .as_ref()
        .map(|c| c.vars.clone().into_iter().collect())
        .unwrap_or_default();
    let mut service_config = ServiceConfig {
        token,
        api_tokens,
        http: serve.limits,
        allowed_hosts: serve.allowed_hosts,
        presets: Arc::new(args.common.presets.load()?),
        credentials: config
            .as_ref()
            .map(Credentials::persistent)
            .unwrap_or_default(),
        vars,
        grace: Duration::from_secs(args.grace),
        config_file: config.as_ref().map(|c| absolute(&c.file)),
        presets_dir: args.common.presets.dir().map(absolute),
        retention: config.as_ref().map(|c| c.retention).unwrap_or_default(),
        engine: EngineOptions {
            notify: config.as_ref().and_then(|c| c.notify.clone()),
            guard: config.as_ref().and_then(|c| c.guard),
            match_warning: config
                .as_ref()
                .map_or(blockyard::plan::DEFAULT_MATCH_WARNING, |c| c.match_warning),
            ..EngineOptions::default()
        },
        ..ServiceConfig::new(args.workflows.clone(), data_dir.clone(), args.listen)
    };
    runtime()?.block_on(async move {
        // Listen before announcing: a supervisor that signals as soon as it reads `serving` must
        // not meet the default action (SIGHUP would end the process instead of reloading it).
        let mut signals = Signals::listen()?;
        if let Some(url) = &postgres {
            let pg = Postgres::open(url).await?;
            say!("store: PostgreSQL at `{}`", pg.url());
            // The data dir still holds `serve.json` (the tokens are the database's).
            std::fs::create_dir_all(&data_dir).with_context(|| {
                format!("cannot create the data dir `{}`", data_dir.display())
            })?;
            service_config.store = Some(AnyStore::from(pg));
        }
        let service = match Service::start(service_config).await {
            Ok(service) => service,
            Err(ServiceError::Load(LoadError::Invalid { dir, errors })) => {
                for error in &errors {
                    say!("{error}");
                }
                bail!(
                    "refusing to start: {} error(s) in the workflows of `{}`",
                    errors.len(),
                    dir.display()
                );
            }
            Err(err) => return Err(err.into()),
        };
        // Announced before `serving` is printed: a command started on that line finds it.
        let endpoint = Endpoint::this_process(local_url(service.addr()));
        if let Err(err) = endpoint.write(&data_dir) {
            say!("warning: {err}; CLI commands on this data dir cannot find the service (give them `--server {}`)", endpoint.url);
        }
        let count = service.workflows().len();
        say!(
            "serving {count} workflow{} from `{}` on http://{}",
            if count == 1 { "" } else { "s" },
            args.workflows.display(),
            service.addr()
        );
        for (name, pause) in ReadPauses::list(service.shared().pauses()).await? {
            say!(
                "paused: `{name}` by {} at {}; its triggered runs are held until `blockyard resume-triggers {name}`",
                pause.by,
                pause.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        if open {
            say!("warning: no BLOCKYARD_TOKEN and no `api_tokens`: the API is open to local users only (listening on loopback)");
        }
        let stopped = signals.wait_for_stop(&service).await;
        say!("stopping: no new work; waiting for runs in flight");
        endpoint.remove(&data_dir);
        stopped?;
        service.shutdown().await?;
        say!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// The URL a local CLI reaches `addr` at: an unspecified address (`0.0.0.0`) by loopback.
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// `path` made absolute (as the service reports it to the CLI, which compares paths).
fn absolute(path: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// The signals that stop or reload the service.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
        })
    }

    /// Runs until SIGINT or SIGTERM, reloading on SIGHUP.
    async fn wait_for_stop(&mut self, service: &Service) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Ok(()),
                _ = self.int.recv() => return Ok(()),
                _ = self.hup.recv() => match service.reload().await {
                    Ok(count) => say!("reloaded: serving {count} workflows"),
                    Err(err) => {
                        if let ServiceError::Load(LoadError::Invalid { errors, .. }) = &err {
                            for error in errors {
                                say!("{error}");
                            }
                        }
                        say!("reload failed, keeping the workflows already loaded: {err}");
                    }
                },
            }
        }
    }
}

/// Ctrl-C stops the service.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        Ok(Signals)
    }

    async fn wait_for_stop(&mut self, _service: &Service) -> anyhow::Result<()> {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}

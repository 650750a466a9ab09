//! `blockyard sandbox`: serves the simulated Calendly, Webex and SCIM 2.0 APIs (and the SMTP
//! sink) until SIGINT or SIGTERM. The three base URLs and the SMTP sink's URL are the only thing
//! written to stdout (one per line, flushed), so scripts can read them; logs go to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use blockyard::sandbox::{Sandbox, SandboxConfig};

/// Serve simulated Calendly, Webex and SCIM 2.0 APIs on loopback.
#[derive(Debug, clap::Args)]
#[command(
    after_long_help = "The sandbox is stateful and deterministic: `--seed-users N` creates the same N people (same \
emails) in all three vendors for a given `--seed`, with an organization owner, a few admins and \
some people whose last activity is long ago. On start it prints its base URLs, one per line:

  calendly http://127.0.0.1:PORT/calendly
  webex http://127.0.0.1:PORT/webex/v1
  scim http://127.0.0.1:PORT/scim/v2
  smtp smtp://127.0.0.1:PORT2

and serves until SIGINT or SIGTERM. Control endpoints live under /_sandbox/: GET requests (the \
request log), GET state, POST reset, POST seed {\"users\":N,\"seed\":S}, POST latency \
{\"ms\":N} (from the next request on), POST calendly/invitations/{uuid}/accept, POST calendly/plan \
{\"plan\":\"standard\"}, GET webhooks, GET mail, POST oauth {\"deny\":true, \"scopes\":[...], \"access_ttl_secs\":N, \"access_uses\":N, \
\"rotate_refresh\":false, \"redirect_uri\":\"...\"}, POST oauth/expire.

OAuth: /calendly/oauth/authorize and /calendly/oauth/token, /webex/v1/authorize and \
/webex/v1/access_token serve one app: client id `sandbox-client`, client secret \
`sandbox-client-secret`, redirect URI http://127.0.0.1:8765/callback; consent is given at once. \
`examples/sandbox-oauth.yaml` connects to it with `blockyard auth login`.

Example:
  blockyard sandbox --listen 127.0.0.1:8089 --seed-users 50 --token secret --rate-limit 600/min"
)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8089", value_name = "IP:PORT")]
    listen: SocketAddr,
    /// People to create in every vendor (the first is the Calendly organization owner).
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed_users: usize,
    /// Seed for generated ids, names and dates: the same seed gives the same data.
    #[arg(long, default_value_t = 0, value_name = "S")]
    seed: u64,
    /// Require `Authorization: Bearer <T>` on every vendor request (401 otherwise).
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Requests allowed per vendor per minute, as `N/min` (e.g. `600/min`); excess gets 429.
    #[arg(long, value_name = "N/min")]
    rate_limit: Option<RatePerMinute>,
    /// Delay added before every vendor response, in milliseconds (`POST /_sandbox/latency`
    /// changes it while serving).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Share of vendor requests answered with 503, from 0.0 to 1.0 (seeded by `--seed`).
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    fail_rate: f64,
    /// The SMTP sink's login (AUTH PLAIN or LOGIN required and checked). `email.send` always
    /// logs in, so give it to send from a workflow: an `email` credential with `base_url` the
    /// printed `smtp://` URL, `tls: none`, `auth: basic` and this user and password. Without
    /// it the sink takes mail only from clients that do not log in.
    #[arg(long, value_name = "USER:PASSWORD")]
    smtp_login: Option<String>,
}

/// `N/min`, parsed.
#[derive(Debug, Clone, Copy)]
struct RatePerMinute(u32);

impl FromStr for RatePerMinute {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n = s
            .strip_suffix("/min")
            .ok_or_else(|| format!("expected `N/min` (e.g. `600/min`), got `{s}`"))?;
        match n.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(RatePerMinute(n)),
            _ => Err(format!(
                "expected a positive whole number of requests before `/min`, got `{n}`"
            )),
        }
    }
}

pub fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        anyhow::bail!(
            "`--fail-rate` must be between 0.0 and 1.0, got {}",
            args.fail_rate
        );
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let config = SandboxConfig {
        listen: args.listen,
        seed_users: args.seed_users,
        seed: args.seed,
        token: args.token,
        rate_limit_per_min: args.rate_limit.map(|r| r.0),
        latency: Duration::from_millis(args.latency_ms),
        fail_rate: args.fail_rate,
        smtp_login: match args.smtp_login.as_deref().map(|l| l.split_once(':')) {
            None => None,
            Some(Some((user, password))) if !user.is_empty() && !password.is_empty() => {
                Some((user.to_owned(), password.to_owned()))
            }
            Some(_) => anyhow::bail!("`--smtp-login` takes `USER:PASSWORD`, both not empty"),
        },
        ..SandboxConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let sandbox = Sandbox::start(config).await?;
        // Listening before the URLs are printed: a signal sent as soon as they are read is not
        // lost (it used to kill the process before the handler existed).
        let stop = shutdown_signal()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "calendly {}", sandbox.calendly_url())?;
            writeln!(out, "webex {}", sandbox.webex_url())?;
            writeln!(out, "scim {}", sandbox.scim_url())?;
            writeln!(out, "smtp {}", sandbox.smtp_url())?;
            out.flush()?;
        }
        tracing::info!(addr = %sandbox.addr(), "sandbox serving; stop with Ctrl-C or SIGTERM");
        stop.await;
        tracing::info!("shutting down");
        sandbox.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Listens for SIGINT and SIGTERM from now on; the future resolves on either.
pub(super) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

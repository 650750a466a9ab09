//! `blockyard call VENDOR.ACTION`: perform one preset action and show the request and response.
//!
//! This is how a user checks a credential ("validate connection") before building workflows.
//! Inputs come from `--with KEY=VALUE` (a value of `true`, `false`, `null`, or one starting with
//! `[` or `{`, is read as JSON; anything else is a string), then the preset defaults over the
//! config's `vars`. The request is printed redacted (credentials, a password in the URL, and any
//! configured secret given as an input value); `--dry-run` stops there. Exit codes: 0 for a
//! 2xx response, 1 for any other outcome of the call, 2 for setup errors (config, usage).
//! `RUST_LOG=debug` shows the client's tracing on stderr, redacted like everything else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use blockyard::config::{Config, CredentialName};
use blockyard::http::{CallError, CallOptions, Client, RenderedRequest, Response};
use blockyard::preset::{PresetId, PresetRegistry};
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The action, as `vendor.action` (for example `calendly.current_user`).
    action: String,
    /// The credential to use (a name under `credentials:`); defaults to the only one for the vendor.
    #[arg(long)]
    credential: Option<String>,
    /// An input of the action, as KEY=VALUE; repeat for more.
    #[arg(long = "with", value_name = "KEY=VALUE")]
    with: Vec<String>,
    /// The configuration file (default: ./blockyard.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A directory of preset files, added to (or replacing) the shipped ones.
    #[arg(long, value_name = "DIR")]
    presets: Option<PathBuf>,
    /// Show the request without sending it.
    #[arg(long)]
    dry_run: bool,
    /// Print `{"request": ..., "response": {"status", "headers", "body"}}` as JSON.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for each attempt.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

pub fn run(args: CallArgs) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let Some(id) = PresetId::parse(&args.action) else {
        bail!(
            "`{}` is not an action; write it as `vendor.action`, such as `calendly.current_user`",
            args.action
        );
    };
    let presets = match &args.presets {
        Some(dir) => PresetRegistry::with_dir(dir).map_err(|errors| {
            anyhow::anyhow!(errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"))
        })?,
        None => PresetRegistry::builtin(),
    };
    if presets.action(&id).is_none() {
        bail!("unknown action `{id}`; `blockyard presets list` shows the actions");
    }
    let config = Config::find(args.config.as_deref())?;
    let credential = pick_credential(&config, &id, args.credential.as_deref())?;
    let given = super::run::parse_pairs_as("with", &args.with, false)?;
    // The config's token store (its warning printed): `serve`'s (the database's, with `store: postgres`).
    let tokens = super::auth::ConfigTokens::of(&config)?;
    let client = Client::new(Arc::new(presets), tokens.credentials(&config))?;
    let redactor = client.redactor();
    // A render error may quote the base URL (and a password in it).
    let redacted = |err: CallError| anyhow::anyhow!(redactor.text(&err.to_string()));
    let inputs = client
        .resolve_inputs(&id, &given, &config.context())
        .map_err(redacted)?;
    let request = client.render(&id, &credential, &inputs).map_err(redacted)?;
    if args.dry_run {
        let shown = redactor.request(&request);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "request": shown }))?
            );
        } else {
            print_request(&shown);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let options = CallOptions {
        timeout: Duration::from_secs(args.timeout),
        ..CallOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(client.call(&id, &credential, &inputs, &options));
    if let Err(
        err @ (CallError::Secret(_) | CallError::NoTokenUrl { .. } | CallError::TokenStore { .. }),
    ) = result
    {
        // Setup, not an outcome of the call: exit 2 like any other configuration error.
        return Err(redacted(err));
    }
    let (request, response, error) = match &result {
        Ok(exchange) => (&exchange.request, Some(&exchange.response), None),
        Err(err) => (
            &request,
            err.response(),
            Some(redactor.text(&err.to_string())),
        ),
    };
    let ok = response.is_some_and(|r| (200..300).contains(&r.status));
    let request = &redactor.request(request);
    if args.json {
        let mut out = json!({ "request": request });
        if let Some(response) = response {
            out["response"] = serde_json::to_value(response)?;
        }
        if let (Some(error), false) = (&error, ok) {
            out["error"] = Value::String(error.clone());
        }
        println!("{}", redactor.text(&serde_json::to_string_pretty(&out)?));
    } else {
        print_request(request);
        if let Some(response) = response {
            println!();
            print_response(response, redactor);
        }
        match (&error, ok) {
            (Some(error), false) => eprintln!("error: {error}"),
            (Some(note), true) => eprintln!("note: {note}"),
            _ => {}
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--credential`, or the only credential configured for the action's vendor.
fn pick_credential(
    config: &Config,
    id: &PresetId,
    named: Option<&str>,
) -> anyhow::Result<CredentialName> {
    if let Some(name) = named {
        let name = CredentialName::new(name);
        if !config.credentials.contains_key(&name) {
            bail!(
                "unknown credential `{name}`; `{}` defines: {}",
                config.file.display(),
                list(config.credentials.keys().map(CredentialName::as_str))
            );
        }
        return Ok(name);
    }
    let matching: Vec<&CredentialName> = config
        .credentials
        .values()
        .filter(|c| c.vendor == id.vendor)
        .map(|c| &c.name)
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "`{}` has no credential for `{}`; add one under `credentials:` with `vendor: {}`",
            config.file.display(),
            id.vendor,
            id.vendor
        ),
        several => bail!(
            "`{}` has several credentials for `{}` ({}); pick one with `--credential NAME`",
            config.file.display(),
            id.vendor,
            list(several.iter().map(|n| n.as_str()))
        ),
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn print_request(request: &RenderedRequest) {
    if let Some(read) = &request.merge_read {
        print_request(read);
        println!("> (then, with the changes merged into the result:)");
    }
    println!("> {} {}", request.method, request.full_url());
    for (name, value) in &request.headers {
        println!("> {name}: {value}");
    }
    if let Some(body) = &request.body {
        println!(">");
        for line in serde_json::to_string_pretty(body)
            .unwrap_or_default()
            .lines()
        {
            println!("> {line}");
        }
    }
}

fn print_response(response: &Response, redactor: &blockyard::http::Redactor) {
    let reason = reqwest::StatusCode::from_u16(response.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    println!("< {} {reason}", response.status);
    for (name, value) in &response.headers {
        println!("< {name}: {value}");
    }
    if let Some(items) = &response.items {
        if response.pages > 1 {
            println!("< ({} items from {} pages)", items.len(), response.pages);
        }
    }
    match &response.body {
        Value::Null => {}
        body => {
            println!();
            let text = match body {
                Value::String(s) => s.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            };
            println!("{}", redactor.text(&text));
        }
    }
}

//! `blockyard check [CREDENTIAL...]`: the "validate connection" button. For each credential
//! (all of them when none is named), perform the read actions its vendor's preset lists under
//! `check:` (Calendly: the current user, one member, one activity log entry; Webex: one person)
//! and report each as ok or refused, with the vendor's words and the likely cause: a scope the
//! token was not granted (from the token store), else the preset's cause for that read (a plan
//! without the activity log, a wrong organization, a user who is not an admin). Exit codes: 0 when
//! every read passed, 1 when one was refused, 2 for setup errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use blockyard::config::{Config, CredentialName};
use blockyard::http::{CallError, CallOptions, Client};
use blockyard::preset::{PresetId, PresetRegistry};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The credentials to check (default: every one whose vendor's preset lists checks).
    credentials: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The configuration file (default: ./blockyard.yaml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let config = Config::find(args.config.as_deref())?;
    let presets = PresetRegistry::builtin();
    let names: Vec<CredentialName> = if args.credentials.is_empty() {
        config
            .credentials
            .values()
            .filter(|c| {
                presets
                    .vendor(&c.vendor)
                    .is_some_and(|v| !v.spec.check.is_empty())
            })
            .map(|c| c.name.clone())
            .collect()
    } else {
        let mut names = Vec::new();
        for name in &args.credentials {
            let name = CredentialName::new(name.as_str());
            if !config.credentials.contains_key(&name) {
                anyhow::bail!(
                    "no credential `{name}` in `{}`; `blockyard auth status` lists the credentials",
                    config.file.display()
                );
            }
            names.push(name);
        }
        names
    };
    let store = super::auth::ConfigTokens::of(&config)?;
    let client = Client::new(Arc::new(presets.clone()), store.credentials(&config))?;
    let redactor = client.redactor().clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stored = runtime.block_on(store.entries(&config))?;
    let mut report = Vec::new();
    let mut all_ok = true;
    for name in &names {
        let cred = &config.credentials[name];
        let granted = stored.get(name.as_str()).and_then(|e| e.scopes.clone());
        let checks = presets
            .vendor(&cred.vendor)
            .map(|v| v.spec.check.clone())
            .unwrap_or_default();
        let mut results = Vec::new();
        for check in &checks {
            let id = PresetId {
                vendor: cred.vendor.clone(),
                action: check.action.clone(),
            };
            let action = presets.action(&id).expect("checked when the preset loaded");
            let outcome = runtime.block_on(async {
                let inputs =
                    client.resolve_inputs(&id, &serde_json::Map::new(), &config.context())?;
                client
                    .call(&id, name, &inputs, &CallOptions::default())
                    .await
            });
            let mut result = json!({ "action": id.to_string(), "title": action.spec.title });
            match outcome {
                Ok(exchange) => {
                    result["ok"] = json!(true);
                    result["status"] = json!(exchange.response.status);
                }
                Err(err) => {
                    all_ok = false;
                    let missing: Vec<&String> = granted
                        .as_ref()
                        .map(|g| {
                            action
                                .spec
                                .scopes
                                .iter()
                                .filter(|s| !g.contains(s))
                                .collect()
                        })
                        .unwrap_or_default();
                    let status = err.response().map(|r| r.status);
                    let cause = if !missing.is_empty() {
                        format!(
                            "missing scope {}: add it to the vendor's OAuth app and run `blockyard auth login {name}` again",
                            missing.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                        )
                    } else if matches!(status, Some(401..=404)) {
                        check.refused.clone()
                    } else {
                        cause_of(&err)
                    };
                    result["ok"] = json!(false);
                    result["status"] = json!(status);
                    result["message"] = json!(redactor.text(&err.to_string()));
                    result["cause"] = json!(cause);
                }
            }
            results.push(result);
        }
        report.push(json!({ "credential": name, "vendor": cred.vendor, "checks": results }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "ok": all_ok, "credentials": report }))?
        );
    } else {
        for item in &report {
            println!(
                "{} ({})",
                item["credential"].as_str().unwrap_or_default(),
                item["vendor"].as_str().unwrap_or_default()
            );
            for check in item["checks"].as_array().into_iter().flatten() {
                let action = check["action"].as_str().unwrap_or_default();
                if check["ok"] == json!(true) {
                    println!("  ok       {action}");
                } else {
                    println!(
                        "  refused  {action}: {}",
                        check["message"].as_str().unwrap_or_default()
                    );
                    println!(
                        "           likely cause: {}",
                        check["cause"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        if report.is_empty() {
            println!("No credential to check: no preset of the configured vendors lists checks.");
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The likely cause of a failure that is not the vendor refusing the read.
fn cause_of(err: &CallError) -> String {
    match err {
        CallError::Secret(_) | CallError::TokenStore { .. } => {
            "the credential is not set up (see the message)".to_owned()
        }
        CallError::Token { .. } => {
            "the vendor refused the credential's tokens: run `blockyard auth login` for it again"
                .to_owned()
        }
        CallError::Transport { .. } => {
            "the vendor cannot be reached (network, `base_url`)".to_owned()
        }
        CallError::MissingInput { .. } | CallError::Render { .. } => {
            "a variable the read needs is not set in the config's `vars`".to_owned()
        }
        _ => "see the vendor's answer".to_owned(),
    }
}

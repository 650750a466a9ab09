//! `blockyard presets list|show`: what API blocks can call.

use std::process::ExitCode;

use anyhow::bail;
use blockyard::compile::suggest;
use blockyard::preset::PresetId;
use serde_json::json;

use super::PresetArgs;

#[derive(Debug, clap::Subcommand)]
pub enum PresetsCommand {
    /// List every action: vendor, action, title, kind (read or write), method and path.
    List {
        /// Print a JSON array of `{vendor, action, title, kind, method, path}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        presets: PresetArgs,
    },
    /// Describe one action and its inputs, for example `blockyard presets show webex.delete_user`.
    Show {
        /// The action, as `vendor.action`.
        #[arg(value_name = "VENDOR.ACTION")]
        action: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        presets: PresetArgs,
    },
}

pub fn run(command: PresetsCommand) -> anyhow::Result<ExitCode> {
    match command {
        PresetsCommand::List { json, presets } => {
            let registry = presets.load()?;
            if json {
                let list: Vec<_> = registry
                    .actions()
                    .map(|(vendor, action)| {
                        json!({
                            "vendor": vendor.spec.vendor,
                            "action": action.id.action,
                            "title": action.spec.title,
                            "kind": action.spec.kind.to_string(),
                            "method": action.spec.method.as_str(),
                            "path": action.spec.path,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<[String; 4]> = registry
                    .actions()
                    .map(|(vendor, action)| {
                        [
                            action.id.to_string(),
                            action.spec.title.clone(),
                            action.spec.kind.to_string(),
                            request_line(vendor, &action.spec),
                        ]
                    })
                    .collect();
                let widths: Vec<usize> = (0..3)
                    .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
                    .collect();
                for row in &rows {
                    println!(
                        "{:w0$}  {:w1$}  {:w2$}  {}",
                        row[0],
                        row[1],
                        row[2],
                        row[3],
                        w0 = widths[0],
                        w1 = widths[1],
                        w2 = widths[2]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PresetsCommand::Show {
            action,
            json,
            presets,
        } => {
            let registry = presets.load()?;
            let Some(id) = PresetId::parse(&action) else {
                bail!("`{action}` is not `vendor.action`, for example `webex.delete_user`");
            };
            let Some(found) = registry.action(&id) else {
                let all: Vec<String> = registry.actions().map(|(_, a)| a.id.to_string()).collect();
                let hint = suggest(&action, all.iter().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| "; `blockyard presets list` shows them all".to_owned());
                bail!("there is no preset action `{action}`{hint}");
            };
            let spec = &found.spec;
            let inputs: Vec<_> = spec
                .inputs
                .iter()
                .map(|(name, input)| {
                    json!({
                        "name": name,
                        "required": input.required && input.default.is_none(),
                        "description": input.description,
                    })
                })
                .collect();
            if json {
                let out = json!({
                    "vendor": id.vendor,
                    "action": id.action,
                    "title": spec.title,
                    "kind": spec.kind.to_string(),
                    "method": spec.method.as_str(),
                    "path": spec.path,
                    "description": spec.description,
                    "inputs": inputs,
                    "scopes": spec.scopes,
                    "admin": spec.admin,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{id}: {}", spec.title);
                let vendor = registry
                    .vendor(&id.vendor)
                    .expect("the action was found in it");
                println!("  {} ({})", request_line(vendor, spec), spec.kind);
                println!("  {}", spec.description);
                if !spec.scopes.is_empty() {
                    println!("  scopes: {}", spec.scopes.join(" "));
                }
                if let Some(admin) = &spec.admin {
                    println!("  needs: {admin}");
                }
                if spec.inputs.is_empty() {
                    println!("  inputs: none");
                } else {
                    println!("  inputs:");
                    for (name, input) in &spec.inputs {
                        let required = if input.required && input.default.is_none() {
                            "required".to_owned()
                        } else if let Some(default) = &input.default {
                            format!("default {}", serde_json::to_string(default)?)
                        } else {
                            "optional".to_owned()
                        };
                        println!("    {name} ({required}): {}", input.description);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How an action's request reads in a listing: `METHOD PATH`, or `SMTP message` for a
/// `transport: smtp` vendor (its method and path mean nothing).
fn request_line(
    vendor: &blockyard::preset::Vendor,
    spec: &blockyard::preset::ActionSpec,
) -> String {
    match vendor.spec.transport {
        blockyard::preset::Transport::Smtp => "SMTP message".to_owned(),
        blockyard::preset::Transport::Http => format!("{} {}", spec.method, spec.path),
    }
}

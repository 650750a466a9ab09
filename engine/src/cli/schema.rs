//! `blockyard schema`: the JSON Schema of the workflow language.

use std::process::ExitCode;

/// Print the JSON Schema of workflow files.
///
/// For editors: save it and point yaml-language-server at it, for example with a first line
/// `# yaml-language-server: $schema=./blockyard.schema.json` in each workflow, after
/// `blockyard schema > blockyard.schema.json`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn run(_args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let schema = schemars::schema_for!(blockyard::spec::WorkflowSpec);
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

//! `blockyard validate PATH...`: compile workflow files and print every error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use blockyard::compile::{compile_file, CompileError};

use super::PresetArgs;

/// Check workflow files. Directories are searched recursively for `*.yaml` and `*.yml`.
///
/// Every problem is printed at once, one per line, as `FILE:LINE:COL: error: MESSAGE`. Exit code 0
/// when every file is valid, 1 when any is not, 2 when a path does not exist.
///
/// Example: `blockyard validate workflows/ my-flow.yaml --json`
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Workflow files or directories.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Print a JSON array of `{file, line, column, block, message}` instead of text.
    #[arg(long)]
    json: bool,
    /// Also print the OAuth scopes the workflows need, per credential (from the presets' `scopes`).
    #[arg(long, conflicts_with = "json")]
    scopes: bool,
    #[command(flatten)]
    presets: PresetArgs,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let presets = args.presets.load()?;
    let mut files = Vec::new();
    for path in &args.paths {
        collect(path, &mut files)?;
    }
    if files.is_empty() {
        bail!("no `*.yaml` or `*.yml` files in {}", describe(&args.paths));
    }
    let mut errors: Vec<CompileError> = Vec::new();
    let mut invalid = 0;
    for file in &files {
        if let Err(mut found) = compile_file(file.clone(), &presets) {
            invalid += 1;
            errors.append(&mut found);
        }
    }
    if args.json {
        let json: Vec<_> = errors.iter().map(CompileError::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for error in &errors {
            println!("{error}");
        }
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        eprintln!(
            "checked {}: {} valid, {} invalid ({})",
            plural(files.len(), "workflow"),
            files.len() - invalid,
            invalid,
            plural(errors.len(), "error"),
        );
        if args.scopes {
            let needed = super::auth::scopes_of_files(&files, &presets);
            println!("scopes needed, by credential:");
            for (credential, scopes) in &needed {
                let list = if scopes.is_empty() {
                    "none".to_owned()
                } else {
                    scopes.join(" ")
                };
                println!("  {credential}: {list}");
            }
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds `path` (a file) or the workflow files below it (a directory), sorted.
fn collect(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    if meta.is_file() {
        files.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read directory `{}`", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(entry);
        }
    }
    Ok(())
}

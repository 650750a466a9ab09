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
    /// Also check, over the records of this data dir, whether a workflow's trigger matches more
    /// than the config's `match_warning` share (50% by default) of them now.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
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
    let mut valid = Vec::new();
    for file in &files {
        match compile_file(file.clone(), &presets) {
            Ok(_) => valid.push(file.clone()),
            Err(mut found) => {
                invalid += 1;
                errors.append(&mut found);
            }
        }
    }
    let warnings = match &args.data_dir {
        None => {
            // Invalid workflows are not run against records anyway.
            if !args.json && invalid == 0 {
                eprintln!("records matched: not checked (give `--data-dir DIR` to check how many current records each workflow would start for)");
            }
            Vec::new()
        }
        Some(dir) => match_warnings(dir, &valid, presets.clone())?,
    };
    if args.json {
        let json: Vec<_> = errors.iter().map(CompileError::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for error in &errors {
            println!("{error}");
        }
        for warning in &warnings {
            println!("{warning}");
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

/// `FILE: warning: …` for each workflow matching more than the config's `match_warning` share of
/// the records in `dir` ([`blockyard::plan::load_warning`]).
fn match_warnings(
    dir: &Path,
    files: &[PathBuf],
    presets: blockyard::preset::PresetRegistry,
) -> anyhow::Result<Vec<String>> {
    use blockyard::exec::{Engine, EngineOptions};
    let config = blockyard::config::Config::find(None).ok();
    let store = blockyard::store::Store::open(dir).with_context(|| {
        format!(
            "cannot check the records of `{}` (a running `blockyard serve` warns about them in its log when it loads the workflows)",
            dir.display()
        )
    })?;
    let client = blockyard::http::Client::new(
        std::sync::Arc::new(presets),
        blockyard::http::Credentials::default(),
    )?;
    let vars = config
        .as_ref()
        .map(|c| c.vars.clone().into_iter().collect())
        .unwrap_or_default();
    let share = config
        .as_ref()
        .map_or(blockyard::plan::DEFAULT_MATCH_WARNING, |c| c.match_warning);
    let engine = Engine::new(&store, client, vars, EngineOptions::default())?;
    let mut out = Vec::new();
    for file in files {
        let prepared = engine.prepare_file(file)?;
        if let Some(warning) = blockyard::plan::load_warning(&engine, &prepared, share)? {
            out.push(format!("{}: warning: {warning}", file.display()));
        }
    }
    Ok(out)
}

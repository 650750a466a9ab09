//! `blockyard plan WORKFLOW [--verbose] [--json] [--offline]`: whom the workflow would touch if it were
//! enabled now (see `blockyard::plan`): the begin rule over every current record, a dry run for
//! each match (reads sent, writes never), a summary and a per-person table. Under a running
//! service it is planned there (`GET /api/workflows/NAME/plan`), for a workflow it has loaded.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use blockyard::plan::Plan;

use super::client::{encode_key, Backend};
use super::run::{init_tracing, runtime, CommonArgs};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The workflow file (through a running service, one it has loaded).
    workflow: PathBuf,
    /// Also print each write's rendered request (secrets redacted).
    #[arg(long)]
    verbose: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Send nothing at all: answer each dry run's reads from the latest recorded live run of the
    /// workflow for that person (one without gets a failed dry run saying so).
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let started = Instant::now();
    let plan: Plan = match Backend::open(&args.common)? {
        Backend::Local(local) => {
            let engine = local.engine()?;
            let prepared = engine.prepare_file(&args.workflow)?;
            runtime()?.block_on(blockyard::plan::plan(&engine, &prepared, args.offline))?
        }
        Backend::Remote(remote) => {
            let name = remote.loaded_workflow(&args.workflow)?;
            let query = if args.offline { "?offline=true" } else { "" };
            let answer = remote.get(&format!("/workflows/{}/plan{query}", encode_key(&name)))?;
            serde_json::from_value(answer)
                .context("the service answered a plan this CLI cannot read")?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    print(&plan, args.verbose);
    eprintln!("planned in {:.1}s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn print(plan: &Plan, verbose: bool) {
    println!(
        "`{}` would start for {} of {} {} now ({} more excluded).",
        plan.workflow, plan.matching, plan.records, plan.collection, plan.excluded
    );
    println!("A record counts when its current fields match the begin rule, whatever its history: enabled now, the workflow starts for it on its next change only if it did not match before.");
    if plan.writes.is_empty() {
        println!("writes: none");
    } else {
        println!("writes ({} destructive):", plan.destructive);
        for w in &plan.writes {
            println!(
                "  {:>6}  {} {}{}",
                w.count,
                w.method,
                w.preset,
                if w.destructive { "  (destructive)" } else { "" }
            );
        }
    }
    let outcomes: Vec<String> = plan
        .outcomes
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    if !outcomes.is_empty() {
        println!("dry runs: {}", outcomes.join(", "));
    }
    if plan.people.is_empty() {
        return;
    }
    println!();
    let width = plan
        .people
        .iter()
        .map(|r| r.subject.len())
        .max()
        .unwrap_or(0)
        .max(7);
    println!("{:width$}  {:<10}  writes", "subject", "dry run");
    for row in &plan.people {
        let writes: Vec<String> = row
            .writes
            .iter()
            .map(|w| format!("{} {}", w.method, w.preset))
            .collect();
        let writes = if writes.is_empty() {
            match &row.error {
                Some(error) => format!("none ({error})"),
                None => "none".to_owned(),
            }
        } else {
            writes.join(", ")
        };
        println!(
            "{:width$}  {:<10}  {}",
            row.subject,
            row.status.name(),
            writes
        );
        if verbose {
            for w in &row.writes {
                println!(
                    "    {}: {}",
                    w.block,
                    serde_json::to_string(&w.request).unwrap_or_default()
                );
            }
        }
    }
}

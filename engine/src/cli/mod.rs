//! The command line: one file per command, `anyhow` for errors, and the one place where outcomes
//! become exit codes (0 success, 1 the thing checked or run failed, 2 usage or setup errors).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod approve;
mod auth;
mod call;
mod cancel;
mod check;
mod client;
mod demo;
mod graph;
mod guard;
mod history;
mod pause;
mod plan;
mod presets;
mod records;
mod replay;
mod resume;
mod retry;
mod run;
mod sandbox;
mod schedule;
mod schema;
mod serve;
mod store;
mod triggers;
mod validate;

use blockyard::store::history::EXIT_CODES;

/// `replay`: a live replay exits as a run does; an offline one says whether it differs.
const REPLAY_EXIT_CODES: &str = "Exit codes: offline, 0 identical to the recording and 1 differs; live, as `run`: 0 succeeded; 1 failed; 2 usage or setup error (no run started); 3 completed_with_failures; 4 needs_attention; 5 cancelled; 6 not finished (waiting_approval, waiting, retrying, queued).";

/// `resume`: the most serious outcome of the runs it resumed.
const RESUME_EXIT_CODES: &str = "Exit codes: 0 every resumed run succeeded (or none was unfinished); otherwise the code of the most serious outcome among them: 1 failed, 4 needs_attention, 3 completed_with_failures, 6 not finished (a retrying run whose next attempt has not come is left alone: 6), 5 cancelled; 2 usage or setup error.";

/// Workflow automation for SaaS user lifecycle work: invite, update, offboard and audit the people
/// in Calendly, Webex and any SCIM 2.0 service.
#[derive(Debug, Parser)]
#[command(name = "blockyard", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole product against simulated vendors, in one command (start here).
    Demo(demo::DemoArgs),
    /// Check workflow files and print every error as FILE:LINE:COL: error: MESSAGE.
    Validate(validate::ValidateArgs),
    /// Draw a workflow's graph as mermaid (the default) or Graphviz dot.
    Graph(graph::GraphArgs),
    /// Print the JSON Schema of the workflow language, for editors.
    Schema(schema::SchemaArgs),
    /// List and describe the vendor presets that API blocks call.
    #[command(subcommand)]
    Presets(presets::PresetsCommand),
    /// Perform one preset action (to check a credential) and print the request and response.
    ///
    /// The action is performed exactly as its preset file defines it: `call` has no block, so no
    /// workflow's advanced-mode `request:` applies. To see the request a block with `request:`
    /// sends, run its workflow with `blockyard run WORKFLOW --dry-run` (writes are shown, not
    /// sent).
    Call(call::CallArgs),
    /// Serve simulated Calendly, Webex and SCIM 2.0 APIs on loopback, for trying workflows safely.
    Sandbox(sandbox::SandboxArgs),
    /// Import, list, show and delete records (`people`, `saas_users`).
    #[command(subcommand)]
    Records(records::RecordsCommand),
    /// Preview a cron schedule's next fire instants.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Explain record triggers: `triggers why --subject jane@acme.com`.
    #[command(subcommand)]
    Triggers(triggers::TriggersCommand),
    /// Run a workflow once for a subject record, recording every step in the history.
    #[command(after_help = EXIT_CODES)]
    Run(run::RunArgs),
    /// List, show and prune recorded runs.
    #[command(subcommand)]
    History(history::HistoryCommand),
    /// Back up a data dir (a live one through `serve`) and restore a backup.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Re-run a recorded run, live or offline against its recording (with a diff).
    #[command(after_help = REPLAY_EXIT_CODES)]
    Replay(replay::ReplayArgs),
    /// Finish the runs a stopped process left unfinished.
    #[command(after_help = RESUME_EXIT_CODES)]
    Resume(resume::ResumeArgs),
    /// Stop a run between steps.
    Cancel(cancel::CancelArgs),
    /// Approve a block waiting for approval (`approval: required`) and continue the run.
    #[command(after_help = EXIT_CODES)]
    Approve(approve::DecideArgs),
    /// Reject a block waiting for approval: it fails, and the run follows `on_failure` or fails.
    #[command(after_help = EXIT_CODES)]
    Reject(approve::DecideArgs),
    /// Whom a workflow would touch if enabled now: its begin rule over every current record, a
    /// dry run for each match (writes never sent), a summary and a per-person table.
    Plan(plan::PlanArgs),
    /// The mass-change guard: list, release or cancel a workflow's held runs.
    #[command(subcommand)]
    Guard(guard::GuardCommand),
    /// Pause a workflow's triggers: its record and schedule runs are queued and held (none is
    /// lost, none starts) until `resume-triggers`; runs in flight finish, runs started by hand
    /// still run. Durable, with who paused and when.
    Pause(pause::PauseArgs),
    /// Resume a paused workflow's triggers: the runs held for it start.
    ResumeTriggers(pause::PauseArgs),
    /// After an outage: replay live every failed or needs_attention run matching the filters,
    /// each at most once (a dry listing without `--yes`); under a running `serve`, the service
    /// replays them.
    ///
    /// Exit codes: 0 listed, or every replay succeeded; 1 a replay did not succeed; 2 usage or
    /// setup error.
    RetryFailed(retry::RetryArgs),
    /// Serve the workflows of a directory: scheduler, trigger queue, workers and an HTTP API.
    ///
    /// The API (under `/api`; bearer tokens: the config's named `api_tokens`, each `viewer`,
    /// `operator` or `admin`, and `BLOCKYARD_TOKEN` as one admin) upserts records, starts, lists,
    /// shows, replays and cancels runs; without a token it listens on loopback only. It refuses
    /// cross-site requests, foreign `Host`s on loopback and non-JSON bodies. `/healthz`: alive;
    /// `/readyz`: store writable, workflows loaded, scheduler running. SIGINT/SIGTERM stop
    /// gracefully; SIGHUP reloads the workflows.
    ///
    /// It writes where it listens into the data dir (`serve.json`: URL and pid, no token) and
    /// removes it on a clean stop: while it runs, `history`, `records`, `triggers why`, `run`,
    /// `replay`, `resume`, `cancel`, `approve`, `reject`, `pause`, `resume-triggers`, `retry-failed`
    /// and `store backup` on that data dir go through its API (with `BLOCKYARD_TOKEN`), as do
    /// those given `--server URL`.
    #[command(after_help = SERVE_ROUTES)]
    Serve(serve::ServeArgs),
    /// Connect credentials to their vendors (OAuth login), show what each holds, forget tokens.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Perform each credential's read checks and report ok / refused with the likely cause.
    Check(check::CheckArgs),
}

/// `serve --help`: the routes, with the role each needs.
const SERVE_ROUTES: &str = "\
Routes (JSON; under /api a bearer token whose role allows the route: GET viewer, the rest operator,
unless marked; every /api route is described in GET /api/openapi.json):
  GET  /healthz, /readyz                         process alive; ready to work (no token)
  GET  /metrics                                  Prometheus text format (viewer)
  POST /api/records/{collection}                 upsert records, start the runs they trigger
  GET  /api/records/{collection}/{key}           one record
  GET  /api/triggers/why?subject=EMAIL           why a subject's writes started runs or not
  GET  /api/workflows                            the loaded workflows, each with `paused` (by, at)
  POST /api/workflows/{name}/runs                start a run by hand (not held by a pause)
  POST /api/workflows/{name}/tick                fire a schedule now
  GET  /api/runs, /api/runs/{id}                 list and show runs
  POST /api/runs/{id}/replay | cancel            replay or cancel a run
  POST /api/runs/{id}/blocks/{block}/approve | reject
  GET  /api/paused                               paused workflows: by whom, since when (viewer)
  POST /api/workflows/{name}/pause | resume-triggers, /api/pause | /api/resume-triggers (operator)
  POST /api/reload                               reload the workflows as SIGHUP does (admin)
  POST /api/retry-failed                         list, or with `yes` replay, failed runs once (operator)
  POST /api/history/prune, /api/store/backup     drop old payloads or runs; back the data dir up (admin)

Pause is queue-and-hold: a paused workflow's record and schedule triggers still queue their runs,
which start only after `blockyard resume-triggers`; `serve` lists what is paused when it starts.";

const AFTER_HELP: &str = "\
Start here:
  blockyard validate workflows/          check every workflow, errors with file:line:col
  blockyard graph workflows/webex-offboard.yaml
  blockyard presets list                 the vendor actions API blocks can call

Exit codes: 0 success, 1 the workflow or run failed, 2 usage or setup error.";

/// Loads the shipped presets, plus a directory's when `--presets DIR` is given.
#[derive(Debug, Clone, clap::Args)]
pub struct PresetArgs {
    /// A directory of extra preset files (`VENDOR.yaml`); a vendor there replaces the shipped one.
    #[arg(long, value_name = "DIR", global = true)]
    presets: Option<std::path::PathBuf>,
}

impl PresetArgs {
    /// `--presets DIR`, when given.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.presets.as_deref()
    }

    pub fn load(&self) -> anyhow::Result<blockyard::preset::PresetRegistry> {
        match &self.presets {
            None => Ok(blockyard::preset::PresetRegistry::builtin()),
            Some(dir) => blockyard::preset::PresetRegistry::with_dir(dir).map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!(
                    "the presets in `{}` are invalid:\n{}",
                    dir.display(),
                    lines.join("\n")
                )
            }),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Presets(command) => presets::run(command),
        Command::Call(args) => call::run(args),
        Command::Sandbox(args) => sandbox::run(args),
        Command::Records(command) => records::run(command),
        Command::Schedule(command) => schedule::run(command),
        Command::Triggers(command) => triggers::run(command),
        Command::Run(args) => run::run(args),
        Command::History(command) => history::run(command),
        Command::Replay(args) => replay::run(args),
        Command::Resume(args) => resume::run(args),
        Command::Cancel(args) => cancel::run(args),
        Command::Approve(args) => approve::run(args, true),
        Command::Reject(args) => approve::run(args, false),
        Command::Guard(command) => guard::run(command),
        Command::Plan(args) => plan::run(args),
        Command::Pause(args) => pause::run(args, true),
        Command::ResumeTriggers(args) => pause::run(args, false),
        Command::RetryFailed(args) => retry::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Store(command) => store::run(command),
        Command::Auth(command) => auth::run(command),
        Command::Check(args) => check::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

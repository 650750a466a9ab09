//! `blockyard schedule next EXPR`: preview a cron schedule's fire instants before trusting it.

use std::process::ExitCode;

use anyhow::bail;
use blockyard::schedule::{Schedule, ScheduleError};
use chrono::{DateTime, SecondsFormat, Utc};

#[derive(Debug, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Print the next fire instants of a cron expression, one RFC 3339 UTC instant per line.
    ///
    /// 5 fields (`min hour day month weekday`), 6 with seconds first, or `@daily`, `@hourly`, ….
    /// Daylight saving follows Vixie cron: a fixed-time job runs once on a changeover day, an
    /// interval job runs in both copies of a repeated hour and skips a missing one.
    ///
    /// Example: `blockyard schedule next "30 2 * * *" --timezone America/New_York -n 3`
    Next(NextArgs),
}

#[derive(Debug, clap::Args)]
pub struct NextArgs {
    /// The cron expression (quote it).
    expr: String,
    /// The IANA time zone the expression is read in.
    #[arg(long, value_name = "TZ", default_value = "UTC")]
    timezone: String,
    /// Start after this RFC 3339 instant (default: now).
    #[arg(long, value_name = "RFC3339")]
    after: Option<String>,
    /// How many instants to print.
    #[arg(short = 'n', default_value_t = 5)]
    n: usize,
    /// Print a JSON array of instants.
    #[arg(long)]
    json: bool,
}

pub fn run(command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    match command {
        ScheduleCommand::Next(args) => next(args),
    }
}

fn next(args: NextArgs) -> anyhow::Result<ExitCode> {
    let schedule = match Schedule::parse(&args.expr, Some(&args.timezone)) {
        Ok(s) => s,
        // Every problem on its own `error:` line.
        Err(errors) => bail!(
            "{}",
            errors
                .iter()
                .map(|err| match err {
                    ScheduleError::TimeZone {
                        suggestion: Some(s),
                        ..
                    } => format!("{err}; did you mean `{s}`?"),
                    _ => err.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\nerror: ")
        ),
    };
    let after = match &args.after {
        None => Utc::now(),
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(at) => at.with_timezone(&Utc),
            Err(_) => bail!(
                "invalid `--after` instant `{text}`: write RFC 3339, such as `2026-03-08T07:00:00Z`"
            ),
        },
    };
    let instants: Vec<String> = schedule
        .upcoming(after, args.n)
        .iter()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&instants)?);
    } else {
        for instant in &instants {
            println!("{instant}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

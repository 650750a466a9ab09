//! The command line: one file per command, `anyhow` for errors, and the one place where outcomes
//! become exit codes (0 success, 1 the thing checked or run failed, 2 usage or setup errors).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod call;
mod sandbox;

/// Workflow automation for SaaS user lifecycle work: invite, update, offboard and audit the people
/// in Calendly, Webex and any SCIM 2.0 service.
#[derive(Debug, Parser)]
#[command(name = "blockyard", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Perform one preset action (to check a credential) and print the request and response.
    Call(call::CallArgs),
    /// Serve simulated Calendly, Webex and SCIM 2.0 APIs on loopback, for trying workflows safely.
    Sandbox(sandbox::SandboxArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Call(args) => call::run(args),
        Command::Sandbox(args) => sandbox::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

//! `blockyard sandbox` (placeholder; see the sandbox issue).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {}

pub fn run(_args: SandboxArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the sandbox is not built yet")
}

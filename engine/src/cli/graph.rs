//! `blockyard graph FILE`: draw a workflow.

use std::path::PathBuf;
use std::process::ExitCode;

use blockyard::compile::compile_file;
use blockyard::graph::{render, Format};

use super::PresetArgs;

/// Draw a workflow's graph.
///
/// Mermaid (the default) pastes into GitHub, GitLab and most wikis; dot renders with Graphviz:
/// `blockyard graph workflows/webex-offboard.yaml --format dot | dot -Tsvg > flow.svg`.
/// Begin is a stadium, API blocks are boxes, role retrieval a hexagon, end a double circle; failure
/// edges are dashed, conditional edges carry their `when`; a block with `approval: required` says
/// so (`approval required`, drawn bold in dot).
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The workflow file.
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Mermaid)]
    format: FormatArg,
    #[command(flatten)]
    presets: PresetArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Mermaid,
    Dot,
}

pub fn run(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let presets = args.presets.load()?;
    match compile_file(args.file, &presets) {
        Ok(workflow) => {
            let format = match args.format {
                FormatArg::Mermaid => Format::Mermaid,
                FormatArg::Dot => Format::Dot,
            };
            print!("{}", render(&workflow, format));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for error in errors {
                eprintln!("{error}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

//! `celeriac workflow ID`: a workflow's tree, read from the result backend
//! (see `celeriac::workflow`), drawn for a terminal or printed as JSON.

use crate::CliError;
use celeriac::workflow::{self, RenderOptions};
use celeriac_common::backend::ResultBackend;
use celeriac_common::cli::BackendArgs;
use std::io::IsTerminal;
use std::process::ExitCode;

/// Flags of `celeriac workflow`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkflowArgs {
    /// A task id (any task of the workflow) or a group id.
    id: String,
    /// Print the tree as JSON instead of drawing it.
    #[arg(long)]
    json: bool,
    /// Members drawn per group; the others are counted in one line (0: all).
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// Colour the states: auto (when stdout is a terminal and NO_COLOR is
    /// unset), always or never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

impl WorkflowArgs {
    /// Prints the tree; exit 1 when the id is unknown to the backend.
    pub(crate) async fn run(self, mut config: celeriac::Config) -> Result<ExitCode, CliError> {
        self.backend.apply(&mut config);
        let backend = ResultBackend::connect(&config.result_backend).await?;
        if config.migrate_on_start {
            backend.migrate().await?;
        }
        let Some(tree) = workflow::load(&backend, &self.id).await? else {
            eprintln!(
                "celeriac: no task or group {} in the result backend (not started yet, \
                 expired, or another backend)",
                self.id
            );
            return Ok(ExitCode::FAILURE);
        };
        if self.json {
            crate::print_json(&tree)?;
            return Ok(ExitCode::SUCCESS);
        }
        let color = match self.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        celeriac_common::out!(
            "{}",
            tree.render(RenderOptions {
                color,
                members: self.members,
            })
        );
        Ok(ExitCode::SUCCESS)
    }
}

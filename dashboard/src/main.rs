//! `celeriac-dashboard`: the web dashboard (also `celeriac dashboard`).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    celeriac_dashboard::cli::main(celeriac_dashboard::cli::Cli::parse())
}

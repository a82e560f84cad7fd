//! `celeriac-beat`: runs schedules (`run`), changes them while beat runs
//! (`schedule ...`), and previews triggers (`preview`).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    celeriac_beat::cli::main(celeriac_beat::cli::Cli::parse())
}

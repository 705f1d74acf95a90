//! `dagraid-coordinator`: the coordinator binary. Parses flags and runs the library's
//! [`dagraid_coordinator::run_command`] (the `dagraid coordinator` subcommand of the `dagraid`
//! tool runs the same, with the same flags).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    dagraid_coordinator::run_command(dagraid_coordinator::config::Args::parse())
}

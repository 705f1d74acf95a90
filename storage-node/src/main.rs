//! `dagraid-node`: the storage node binary. Parses flags and runs the library's
//! [`dagraid_node::run_command`] (the `dagraid node` subcommand of the `dagraid` tool runs the
//! same, with the same flags).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    dagraid_node::run_command(dagraid_node::config::Args::parse())
}

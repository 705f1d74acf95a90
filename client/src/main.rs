//! `dagraid`: the command-line tool. Parses flags and runs [`dagraid_client::cli::run`]; errors
//! are one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser as _;
use dagraid_client::cli::{Args, run};

/// Ctrl-C or SIGTERM; only `dagraid up` waits for it.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dagraid: error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` puts the whole chain of causes on one line.
            eprintln!("dagraid: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

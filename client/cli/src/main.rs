//! `dagraid`: the command-line tool. Runs `dagraid node` / `dagraid coordinator` through
//! [`dagraid_cli::server::run_if_server`], and otherwise parses [`dagraid_cli::Args`] and runs
//! [`dagraid_cli::run`]; errors are one line on stderr and a non-zero exit code.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser as _;
use dagraid_cli::{Args, run};

/// Completes on SIGTERM or SIGINT (Ctrl-C); only `dagraid up` waits for it. The handlers are
/// installed when this is called, so a signal that arrives while `up` is still starting its
/// children stops the cluster cleanly instead of killing `dagraid` alone.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = dagraid_cli::server::run_if_server(&argv) {
        return code;
    }
    let args = Args::parse_from(argv);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dagraid: error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match runtime.block_on(async { shutdown_signal() }) {
        Ok(shutdown) => shutdown,
        Err(err) => {
            eprintln!("dagraid: error: cannot install the signal handlers: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` puts the whole chain of causes on one line.
            eprintln!("dagraid: error: {err:#}");
            if err
                .downcast_ref::<dagraid_cli::parity::ParityMismatches>()
                .is_some()
            {
                return ExitCode::from(dagraid_cli::parity::MISMATCH_EXIT_CODE);
            }
            ExitCode::FAILURE
        }
    }
}

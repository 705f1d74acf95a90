//! `dagraid-coordinator`: the coordinator binary. Parses flags and runs the library's
//! [`dagraid_coordinator::run_command`] (the `dagraid coordinator` subcommand of the `dagraid`
//! tool runs the same, with the same flags).

use std::process::ExitCode;

<<<<<<< HEAD
use clap::Parser;
use dagraid_coordinator::Coordinator;
use dagraid_coordinator::config::Args;

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled, so a signal sent right after the listening line is printed
/// already stops the coordinator gracefully instead of killing it.
fn shutdown_signal() -> Result<impl Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| format!("installing the {name} handler: {e}"))
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn serve(config: dagraid_coordinator::CoordinatorConfig) -> Result<(), String> {
    let coordinator = Coordinator::start(config)
        .await
        .map_err(|e| e.to_string())?;
    let shutdown = shutdown_signal()?;
    // The one line scripts, `dagraid up` and the test harness wait for, first.
    println!(
        "dagraid-coordinator listening on {}",
        coordinator.local_addr()
    );
    if let Some(addr) = coordinator.metrics_addr() {
        println!("dagraid-coordinator metrics on http://{addr}/metrics");
    }
    if let Some(addr) = coordinator.nbd_addr() {
        println!("dagraid-coordinator nbd on nbd://{addr}/");
    }
    coordinator
        .run_until(shutdown)
        .await
        .map_err(|e| e.to_string())
}
=======
use clap::Parser as _;
>>>>>>> up

fn main() -> ExitCode {
    dagraid_coordinator::run_command(dagraid_coordinator::config::Args::parse())
}

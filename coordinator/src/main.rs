//! `dagraid-coordinator`: the coordinator binary. Parses flags (and an optional TOML file), then
//! runs the library's coordinator until SIGTERM or Ctrl-C.

use std::process::ExitCode;

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

async fn serve(args: Args) -> Result<(), String> {
    let config = args.into_config()?;
    let coordinator = Coordinator::start(config)
        .await
        .map_err(|e| e.to_string())?;
    let shutdown = shutdown_signal()?;
    // The one line scripts, `dagraid up` and the test harness wait for.
    println!(
        "dagraid-coordinator listening on {}",
        coordinator.local_addr()
    );
    coordinator
        .run_until(shutdown)
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| format!("starting the runtime: {e}"))
        .and_then(|runtime| runtime.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dagraid-coordinator: error: {err}");
            ExitCode::FAILURE
        }
    }
}

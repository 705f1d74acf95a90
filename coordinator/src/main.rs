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

fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry_args = args.telemetry.clone();
    let result = args.into_config().and_then(|config| {
        let runtime =
            tokio::runtime::Runtime::new().map_err(|e| format!("starting the runtime: {e}"))?;
        runtime.block_on(async {
            let telemetry = dagraid_telemetry::init(&telemetry_args, "dagraid-coordinator")?;
            let served = serve(config).await;
            // The spans still queued go out before the runtime (and the exporter's
            // connection) ends.
            telemetry.shutdown().await;
            served
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dagraid-coordinator: error: {err}");
            ExitCode::FAILURE
        }
    }
}

//! `dagraid-node`: the storage node binary. Parses flags (and an optional TOML file), then runs
//! the library's server until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dagraid_node::NodeError;
use dagraid_node::config::{DEFAULT_LISTEN, DEFAULT_MAX_IO_BYTES, FileConfig, NodeConfig};

/// A dagraid storage node: serves checksummed component blocks over gRPC.
#[derive(Debug, Parser)]
#[command(name = "dagraid-node", version)]
struct Args {
    /// TOML file with any of the options below (kebab-case keys); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:7100].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for the node state and component files (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node id, fixed at the first start [default: generated].
    #[arg(long)]
    node_id: Option<String>,
    /// Cluster id, fixed at the first start [default: dagraid].
    #[arg(long)]
    cluster_id: Option<String>,
    /// Largest payload of one read or write, in bytes [default: 16777216].
    #[arg(long)]
    max_io_bytes: Option<u64>,
    /// Accept InjectFault calls, and keep unsynced writes in a volatile write cache so that an
    /// injected power cut loses them (tests only).
    #[arg(long)]
    fault_injection: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free port) [default: off].
    #[arg(long, value_name = "ADDR", env = "DAGRAID_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    telemetry: dagraid_telemetry::TelemetryArgs,
}

fn config(args: &Args) -> Result<NodeConfig, NodeError> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| NodeError::Config(format!("cannot read {}: {e}", path.display())))?;
            FileConfig::parse(&text)
                .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?
        }
        None => FileConfig::default(),
    };
    let data_dir = args.data_dir.clone().or(file.data_dir).ok_or_else(|| {
        NodeError::Config("--data-dir is required (or data-dir in the config file)".into())
    })?;
    Ok(NodeConfig {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
        data_dir,
        node_id: args.node_id.clone().or(file.node_id),
        cluster_id: args.cluster_id.clone().or(file.cluster_id),
        max_io_bytes: args
            .max_io_bytes
            .or(file.max_io_bytes)
            .unwrap_or(DEFAULT_MAX_IO_BYTES),
        fault_injection: args.fault_injection || file.fault_injection.unwrap_or(false),
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
    })
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled, so a signal sent right after the listening line is printed
/// already stops the node gracefully instead of killing it.
fn shutdown_signal() -> Result<impl Future<Output = ()>, NodeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| NodeError::io(format!("installing the {name} handler"), e))
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

async fn serve(config: NodeConfig) -> Result<(), NodeError> {
    let started = dagraid_node::start(config).await?;
    let shutdown = shutdown_signal()?;
    // The one line scripts and the test harness wait for, first.
    println!("dagraid-node listening on {}", started.local_addr());
    if let Some(addr) = started.metrics_addr() {
        println!("dagraid-node metrics on http://{addr}/metrics");
    }
    let power_lost = started.node().power_lost().clone();
    tokio::select! {
        served = started.serve(shutdown) => served,
        () = power_lost.cancelled() => {
            // Like a machine losing its power: no graceful step at all.
            eprintln!("dagraid-node: power cut (fault injection): exiting");
            std::process::exit(dagraid_node::POWER_CUT_EXIT_CODE)
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = config(&args).and_then(|config| {
        let runtime =
            tokio::runtime::Runtime::new().map_err(|e| NodeError::io("starting the runtime", e))?;
        runtime.block_on(async {
            let telemetry = dagraid_telemetry::init(&args.telemetry, "dagraid-node")
                .map_err(NodeError::Config)?;
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
            eprintln!("dagraid-node: error: {err}");
            ExitCode::FAILURE
        }
    }
}

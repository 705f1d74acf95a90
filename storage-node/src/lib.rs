//! The dagraid storage node: serves the checksummed blocks of its components from local files
//! over gRPC (`dagraid.storage.v1`).
//!
//! Code map, bottom up:
//! - [`backend`]: blocking positioned I/O and sync under a component ([`backend::FileBackend`]).
//! - [`layout`], [`slot`], [`checksum`]: the on-disk format of a component file (format 2);
//!   [`migrate`]: opening a header, migrating format 1 files crash-safely.
//! - [`group_commit`]: fdatasyncs shared by concurrent writes, a few in flight at once.
//! - [`failure_marker`]: the durable record that a component failed for good.
//! - [`block_store`]: one component: checksummed reads and writes, region locks, slot areas.
//! - [`fencing`], [`node_state`]: the owner epoch, the per-component fence epochs (durable in
//!   each component's epoch slots), the node epoch's durable record.
//! - [`faults`]: test-only fault injection, off unless enabled; [`volatile_cache`]: in that
//!   mode, the volatile write cache in front of every component file that makes a power cut
//!   possible ([`Node::power_cut`]).
//! - [`memory`]: a node's data directory in memory (disks, node state, failure markers) for the
//!   deterministic simulation; nothing there blocks, so nothing leaves the async task.
//! - [`node`]: the data directory and its components; every request is validated here.
//! - [`service`]: the gRPC adapter; [`error`] is the one error type and its status mapping.
//! - [`metrics`]: the `/metrics` registry (call metrics, per-component counters read at
//!   scrape time); calls are traced by `dagraid_telemetry`'s gRPC layer, disk I/O in
//!   [`block_store`] (`disk.read`, `disk.write`, `disk.flush`).
//! - [`start`] / [`run`]: bind, open, serve, shut down gracefully ([`start_with`]: on memory
//!   and injected connections, [`NodeSetup`]); [`run_command`]: the whole
//!   process behind [`config::Args`] (runtime, telemetry, signals, the listening lines). The
//!   `dagraid-node` binary and the `dagraid node` subcommand of the `dagraid` tool are thin
//!   wrappers over it.

pub mod backend;
pub mod block_store;
pub mod checksum;
pub mod config;
pub mod error;
pub mod failure_marker;
pub mod faults;
pub mod fencing;
pub mod group_commit;
pub mod layout;
pub mod memory;
pub mod metrics;
pub mod migrate;
pub mod node;
pub mod node_state;
pub mod service;
pub mod slot;
#[cfg(test)]
mod testing;
pub mod volatile_cache;

use std::net::SocketAddr;
use std::sync::Arc;

use dagraid_proto::storage::v1::storage_node_server::StorageNodeServer;
use dagraid_telemetry::{GrpcServerLayer, MetricsServer};
use dagraid_tls::transport::Incoming;
use dagraid_tls::{Role, ServerTls};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use config::NodeConfig;
pub use error::NodeError;
pub use node::Node;
pub use service::StorageService;

/// Exit status of a `dagraid-node` process that lost its power ([`Node::power_cut`]): it exits
/// abruptly right after the cut, and is meant to be started again on its data directory.
pub const POWER_CUT_EXIT_CODE: i32 = 86;

/// HTTP/2 frame size: 1 MiB frames carry a 1 MiB block in one frame (see STACK.md: the setting
/// that matters for large transfers).
pub const HTTP2_MAX_FRAME_SIZE: u32 = 1 << 20;
/// HTTP/2 per-stream flow-control window.
pub const HTTP2_STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 per-connection flow-control window.
pub const HTTP2_CONNECTION_WINDOW: u32 = 32 << 20;
/// Room for the message fields around a payload of `max_io_bytes`: tonic's own decode limit is
/// `max_io_bytes` plus this, so an oversized payload reaches the node's RESOURCE_EXHAUSTED check
/// instead of tonic's OUT_OF_RANGE.
pub const MESSAGE_OVERHEAD_BYTES: u64 = 1 << 20;

/// A node whose data directory is open and whose socket is bound, not yet serving.
pub struct StartedNode {
    node: Arc<Node>,
    listener: Listener,
    local_addr: SocketAddr,
    metrics: Arc<metrics::NodeMetrics>,
    metrics_server: Option<MetricsServer>,
    tls: Option<Arc<ServerTls>>,
}

/// Where the served connections come from.
enum Listener {
    Tcp(tokio::net::TcpListener),
    Injected(Incoming),
}

/// What a node runs on besides its [`NodeConfig`]: its data directory and its connections.
/// The default is the binary's (files under `data_dir`, a socket bound on `listen`); the
/// deterministic simulation hands in memory and a simulated network instead.
#[derive(Default)]
pub struct NodeSetup {
    /// The data directory in memory ([`memory`]) instead of files under `data_dir` (which then
    /// only names it in messages).
    pub media: Option<Arc<memory::MemoryMedia>>,
    /// The connections to serve instead of a socket bound on `listen` (then reported as the
    /// local address as given). Plaintext only: refused with TLS.
    pub incoming: Option<Incoming>,
}

/// Calls that get a span only when they carry a trace context: polled by the coordinator's
/// health loop every second.
const QUIET_METHODS: &[&str] = &[
    "dagraid.storage.v1.StorageNode/GetNodeInfo",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
];

/// Opens the data directory and binds the listening socket.
///
/// Errors are precise and final: a bad data directory, a directory in use, a corrupt component
/// file, an address in use.
pub async fn start(config: NodeConfig) -> Result<StartedNode, NodeError> {
    start_with(config, NodeSetup::default()).await
}

/// [`start`] on the data directory and connections of `setup` (in memory, a simulated network).
pub async fn start_with(config: NodeConfig, setup: NodeSetup) -> Result<StartedNode, NodeError> {
    config.validate()?;
    if setup.incoming.is_some() && config.tls.is_some() {
        return Err(NodeError::Config(
            "TLS is not served over injected connections".into(),
        ));
    }
    let node = match setup.media {
        // Nothing in memory blocks: opened right here.
        Some(media) => Node::open_in_memory(&config, media)?,
        None => {
            let open_config = config.clone();
            tokio::task::spawn_blocking(move || Node::open(&open_config))
                .await
                .map_err(|e| {
                    NodeError::io("opening the data directory", std::io::Error::other(e))
                })??
        }
    };
    let (listener, local_addr) = match setup.incoming {
        Some(incoming) => (Listener::Injected(incoming), config.listen),
        None => {
            let listener =
                tokio::net::TcpListener::bind(config.listen)
                    .await
                    .map_err(|source| NodeError::Bind {
                        addr: config.listen,
                        source,
                    })?;
            let local_addr = listener.local_addr().map_err(|source| NodeError::Bind {
                addr: config.listen,
                source,
            })?;
            (Listener::Tcp(listener), local_addr)
        }
    };
    let tls = match &config.tls {
        None => None,
        Some(files) => {
            let tls =
                ServerTls::load(files.clone()).map_err(|e| NodeError::Config(e.to_string()))?;
            if let Some(cert) = &files.cert {
                dagraid_tls::check_certificate_names(cert, &Role::Node(node.node_id().into()))
                    .map_err(|e| NodeError::Config(e.to_string()))?;
            }
            Some(tls)
        }
    };
    let node = Arc::new(node);
    let metrics = Arc::new(metrics::NodeMetrics::new(node.clone()));
    let metrics_server = match config.metrics_listen {
        None => None,
        Some(addr) => Some(
            MetricsServer::start(addr, metrics.registry().clone())
                .await
                .map_err(|source| NodeError::Bind { addr, source })?,
        ),
    };
    Ok(StartedNode {
        node,
        listener,
        local_addr,
        metrics,
        metrics_server,
        tls,
    })
}

impl StartedNode {
    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node behind the server.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Where `/metrics` is served (port 0 resolved), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// The node's TLS material, when it serves TLS ([`ServerTls::reload`] replaces it).
    pub fn tls(&self) -> Option<&Arc<ServerTls>> {
        self.tls.as_ref()
    }

    /// The node's metrics (served at [`StartedNode::metrics_addr`] when configured).
    pub fn metrics(&self) -> &Arc<metrics::NodeMetrics> {
        &self.metrics
    }

    /// Serves until `shutdown` completes, then stops accepting, releases hung operations and
    /// waits for the calls in progress.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let limit = (self.node.max_io_bytes() + MESSAGE_OVERHEAD_BYTES) as usize;
        let service = StorageNodeServer::new(StorageService::new(self.node.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        // With TLS, the storage API answers the coordinator only (health answers anyone).
        let only_coordinator = self.tls.is_some();
        let service = InterceptedService::new(service, move |request: tonic::Request<()>| {
            if only_coordinator {
                dagraid_tls::require_role(&request, &Role::Coordinator)?;
            }
            Ok(request)
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<StorageNodeServer<StorageService>>()
            .await;
        let token = self.node.shutdown_token().clone();
        match &self.tls {
            Some(_) => tracing::info!(addr = %self.local_addr, tls = true, "serving"),
            None => tracing::warn!(
                addr = %self.local_addr,
                "serving plaintext gRPC (no TLS): anyone who reaches this port can read and write every component; see docs/SECURITY.md"
            ),
        }
        let traced = GrpcServerLayer::new(Some(self.metrics.grpc().clone())).quiet(QUIET_METHODS);
        // Kept until the server stops.
        let _metrics_server = self.metrics_server;
        let router = Server::builder()
            .layer(traced)
            .max_frame_size(HTTP2_MAX_FRAME_SIZE)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .add_service(health_service)
            .add_service(service);
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down");
            health
                .set_not_serving::<StorageNodeServer<StorageService>>()
                .await;
            token.cancel();
        };
        match (self.listener, &self.tls) {
            (Listener::Injected(incoming), _) => {
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?
            }
            (Listener::Tcp(listener), Some(tls)) => {
                router
                    .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                    .await?
            }
            (Listener::Tcp(listener), None) => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?
            }
        }
        Ok(())
    }
}

/// Opens, binds and serves until `shutdown` completes. An injected power cut does not end it:
/// the caller watches [`Node::power_lost`] (the binary exits at once).
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    start(config).await?.serve(shutdown).await
}

/// The whole `dagraid-node` process for its parsed command line: builds the runtime, starts
/// trace export, serves until SIGTERM or SIGINT, and turns an error into one line on stderr and
/// a failing exit status. Shared by the `dagraid-node` binary and `dagraid node`, so the two
/// behave alike (flags, the lines `dagraid up` and the tests wait for, exit statuses).
pub fn run_command(args: config::Args) -> std::process::ExitCode {
    let result = args.to_config().and_then(|config| {
        let runtime =
            tokio::runtime::Runtime::new().map_err(|e| NodeError::io("starting the runtime", e))?;
        runtime.block_on(async {
            let telemetry = dagraid_telemetry::init(&args.telemetry, "dagraid-node")
                .map_err(NodeError::Config)?;
            let served = serve_announced(config).await;
            // The spans still queued go out before the runtime (and the exporter's
            // connection) ends.
            telemetry.shutdown().await;
            served
        })
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dagraid-node: error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
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

/// Starts the node, prints its listening line (and its metrics line), and serves until a
/// signal; an injected power cut exits the process at once.
async fn serve_announced(config: NodeConfig) -> Result<(), NodeError> {
    let started = start(config).await?;
    let shutdown = shutdown_signal()?;
    if let Some(tls) = started.tls() {
        dagraid_tls::reload_on_hangup(vec![dagraid_tls::Reloadable::Server(tls.clone())])
            .map_err(|e| NodeError::Config(e.to_string()))?;
    }
    // The one line scripts, `dagraid up` and the test harness wait for, first.
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
            std::process::exit(POWER_CUT_EXIT_CODE)
        }
    }
}

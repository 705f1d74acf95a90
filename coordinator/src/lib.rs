//! The dagraid coordinator: serves RAID volumes over gRPC (`dagraid.volume.v1`), running every
//! access as DAGs of the core's access pipeline against remote storage nodes.
//!
//! Code map:
//! - [`config`]: [`CoordinatorConfig`] from flags, an optional TOML file and the environment.
//! - [`store`]: the embedded store (`<data-dir>/coordinator.redb`): versioned volume records
//!   (with their counters and clean flag) and the owner epoch.
//! - [`labels`]: component labels on the storage nodes: written to every surviving component
//!   on each state change, read back at assembly; the test-only crash hooks (of state changes
//!   and of parity-map updates).
//! - [`durable`]: [`durable::VolumeStates`], the core's `StateRecorder` of a volume: every state
//!   change durable on the labels and in the store before the access that caused it is
//!   answered; the clean flag.
//! - [`resync`]: the background resync of a volume assembled after an unclean shutdown.
//! - [`node_client`]: connections to one storage node ([`node_client::NodeClient`]), the
//!   coordinator's fencing ([`node_client::FencingContext`]) and the admin calls on a node.
//! - [`remote`]: [`remote::RemoteComponent`], the core's `ComponentIo` over gRPC, with a deadline
//!   per call that does not count time queued locally.
//! - [`registry`]: the storage nodes, their health, and the health loop that fails the columns of
//!   a node that is down.
//! - [`spares`]: the hot-spare pool ([`spares::SparePool`]): spare components on the nodes,
//!   their spare labels and their records in the store; add, remove, the best fit for a
//!   volume, take and release.
//! - [`volumes`]: creating (provisioning and labelling components), deleting, finding and
//!   assembling volumes (from their labels and the store, at start and on demand).
//! - [`service`]: the `VolumeService` gRPC implementation and the bearer-token check.
//! - [`error`]: node-call errors and their `Status -> IoError` mapping.
//! - [`service_error`]: the volume API's [`service_error::ServiceError`] and its one
//!   `-> Status` mapping.
//! - [`rpc_metrics`]: latency and errors of the calls to the storage nodes, owned by the node
//!   clients that record them.
//! - [`metrics`]: the `/metrics` registry: volume, DAG, firing, component, stripe-lock and
//!   storage-RPC metrics, mostly read at scrape time from the core's counters. Traces: every
//!   API call gets a span from `dagraid_telemetry`'s gRPC layer (the caller's trace context as
//!   its parent); the core's `access`, `dag` and node spans nest under it, and the node client
//!   carries the context on to the storage nodes.
//! - [`nbd`]: the NBD export of every volume (`--nbd-listen`): the wire format, the handshake,
//!   and requests run straight on the volume's access pipeline.
//! - [`Coordinator`] / [`run`]: start-up (store, epoch, fencing, assembly), serving, graceful
//!   shutdown (drain, then every volume marked clean); [`run_command`]: the whole process behind
//!   [`config::Args`] (runtime, telemetry, signals, the listening lines). The
//!   `dagraid-coordinator` binary and the `dagraid coordinator` subcommand of the `dagraid` tool
//!   are thin wrappers over it.

pub mod config;
pub mod durable;
pub mod error;
pub mod ids;
pub mod labels;
pub mod metrics;
pub mod nbd;
pub mod node_client;
pub mod rebuild;
pub mod registry;
pub mod remote;
pub mod resync;
pub mod rpc_metrics;
pub mod scrub;
pub mod service;
pub mod service_error;
pub mod spares;
pub mod store;
mod throttle;
pub mod volumes;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dagraid_core::access::ArrayConfig;
use dagraid_core::admission::{Admission, AdmissionLimits};
use dagraid_core::engine::EngineConfig;
use dagraid_proto::volume::v1::volume_service_server::VolumeServiceServer;
use dagraid_telemetry::{GrpcServerLayer, MetricsServer};
use dagraid_tls::transport::{Connector, Incoming};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use config::CoordinatorConfig;

use crate::config::NodeSpec;
use crate::labels::{CrashHook, CrashHooks, CrashPoint};
use crate::metrics::CoordinatorMetrics;
use crate::node_client::{
    FencingContext, HTTP2_CONNECTION_WINDOW, HTTP2_MAX_FRAME_SIZE, HTTP2_STREAM_WINDOW,
    NodeClientConfig,
};
use crate::rebuild::{RebuildSettings, Rebuilds};
use crate::registry::NodeRegistry;
use crate::scrub::{ScrubSettings, Scrubs};
use crate::service::{BearerAuth, VolumeApi};
use crate::spares::SparePool;
use crate::store::{MemoryStoreMedia, Store, StoreError};
use crate::volumes::{VolumeManager, VolumeManagerConfig};

/// Room for the message fields around a payload of `max_io_bytes`: the gRPC decode limit is
/// `max_io_bytes` plus this, so an oversized Write reaches the service's own precise check
/// (`too-large`) instead of tonic's generic limit.
pub const MESSAGE_OVERHEAD_BYTES: u64 = 1 << 20;

/// Why the coordinator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A configuration value is not acceptable.
    #[error("configuration: {0}")]
    Config(String),
    /// The data directory cannot be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The store cannot be opened or used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listening socket cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A storage node client cannot be set up.
    #[error(transparent)]
    Node(#[from] error::NodeClientError),
    /// The gRPC server failed.
    #[error("serving: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// A coordinator task was lost.
    #[error("coordinator task: {0}")]
    Task(String),
}

/// What a coordinator runs on besides its [`CoordinatorConfig`]: its store and its transports.
/// The default is the binary's (the store file in the data directory, a socket bound on
/// `listen`, TCP to the nodes); the deterministic simulation hands in memory and a simulated
/// network instead (plaintext only: refused with TLS).
#[derive(Default)]
pub struct CoordinatorSetup {
    /// The store in memory instead of `<data-dir>/coordinator.redb` (the data directory is
    /// then neither created nor used).
    pub store: Option<MemoryStoreMedia>,
    /// The API's connections instead of a socket bound on `listen` (then reported as the local
    /// address as given).
    pub incoming: Option<Incoming>,
    /// How to reach the storage nodes instead of TCP, with short keepalives
    /// ([`NodeClientConfig::for_injected`]).
    pub node_connector: Option<Connector>,
    /// Random ids (volumes, spares, replacement components) drawn from this seed and the
    /// owner epoch instead of the operating system's randomness ([`ids::IdSource::seeded`]).
    pub id_seed: Option<u64>,
}

/// A running coordinator (started in-process): its address, and the handle that stops it.
/// Dropping it stops the coordinator in the background; [`Coordinator::stop`] waits for that.
#[derive(Debug)]
pub struct Coordinator {
    local_addr: SocketAddr,
    epoch: u64,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), CoordinatorError>>>,
    metrics: Arc<CoordinatorMetrics>,
    metrics_server: Option<MetricsServer>,
    spares: Arc<SparePool>,
    nbd_addr: Option<SocketAddr>,
    reloader: Reloader,
}

/// What SIGHUP reads again: the TLS material and the token file. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reloader {
    tls: Vec<dagraid_tls::Reloadable>,
    token: Option<(PathBuf, BearerAuth)>,
}

impl Reloader {
    /// Reads every file again; what fails keeps what is in use and says why in the log (never
    /// the token itself).
    pub fn reload(&self) {
        for material in &self.tls {
            material.reload_logged();
        }
        if let Some((path, auth)) = &self.token {
            match config::read_token_file(path) {
                Ok(token) => {
                    auth.set_token(Some(&token));
                    tracing::info!(file = %path.display(), "token reloaded: the old one no longer works");
                }
                Err(e) => tracing::warn!(error = %e, "token reload failed: the token in use stays"),
            }
        }
    }

    /// Whether there is anything to reload.
    pub fn is_empty(&self) -> bool {
        self.tls.is_empty() && self.token.is_none()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Coordinator {
    /// Starts a coordinator: opens the store (refusing a data directory another coordinator
    /// uses), binds the socket, checks the storage nodes, takes a new owner epoch (durably,
    /// before serving) and fences the reachable nodes with it (the others are fenced before the
    /// first write to them), assembles the stored volumes from their labels (waiting up to
    /// `assembly_wait` for nodes that do not answer; each assembled volume is marked dirty,
    /// durably, before it serves), starts the health loop and serves. Returns once the socket
    /// accepts calls.
    pub async fn start(config: CoordinatorConfig) -> Result<Coordinator, CoordinatorError> {
        Self::start_with(config, CoordinatorSetup::default()).await
    }

    /// [`Coordinator::start`] on the store and transports of `setup` (in memory, a simulated
    /// network).
    pub async fn start_with(
        config: CoordinatorConfig,
        setup: CoordinatorSetup,
    ) -> Result<Coordinator, CoordinatorError> {
        config.validate().map_err(CoordinatorError::Config)?;
        if (setup.incoming.is_some() || setup.node_connector.is_some()) && config.tls.is_some() {
            return Err(CoordinatorError::Config(
                "TLS is not supported over injected transports".into(),
            ));
        }
        let path = config.store_path();
        if let Some(media) = setup.store {
            let store = Store::open_in_memory(media, &path)?;
            return match Self::assemble_and_serve(
                config,
                store.clone(),
                setup.incoming,
                setup.node_connector,
                setup.id_seed,
            )
            .await
            {
                Ok(c) => Ok(c),
                Err(e) => {
                    store.close();
                    Err(e)
                }
            };
        }
        let dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || {
            if dir.exists() && !dir.is_dir() {
                return Err(CoordinatorError::DataDir {
                    path: dir.clone(),
                    source: std::io::Error::other("exists and is not a directory"),
                });
            }
            std::fs::create_dir_all(&dir).map_err(|source| CoordinatorError::DataDir {
                path: dir.clone(),
                source,
            })?;
            Ok(Store::open(&path)?)
        })
        .await
        .map_err(|e| CoordinatorError::Task(e.to_string()))??;

        match Self::assemble_and_serve(
            config,
            store.clone(),
            setup.incoming,
            setup.node_connector,
            setup.id_seed,
        )
        .await
        {
            Ok(c) => Ok(c),
            Err(e) => {
                store.close();
                Err(e)
            }
        }
    }

    async fn assemble_and_serve(
        config: CoordinatorConfig,
        store: Store,
        incoming: Option<Incoming>,
        node_connector: Option<Connector>,
        id_seed: Option<u64>,
    ) -> Result<Coordinator, CoordinatorError> {
        let (listener, local_addr) = match incoming {
            Some(incoming) => (Err(incoming), config.listen),
            None => {
                let listener =
                    tokio::net::TcpListener::bind(config.listen)
                        .await
                        .map_err(|source| CoordinatorError::Bind {
                            addr: config.listen,
                            source,
                        })?;
                let local_addr =
                    listener
                        .local_addr()
                        .map_err(|source| CoordinatorError::Bind {
                            addr: config.listen,
                            source,
                        })?;
                (Ok(listener), local_addr)
            }
        };
        // Bound before anything is assembled, so a port in use fails the start at once.
        let nbd_listener = match config.nbd_listen {
            None => None,
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| CoordinatorError::Bind { addr, source })?,
            ),
        };
        let nbd_addr = nbd_listener.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(addr) = nbd_addr {
            // Logged before the listening line is printed: `dagraid up` and the tests read it.
            tracing::info!(%addr, read_only = config.nbd_read_only, tls = ?config.nbd_tls_mode(), "nbd export listening");
        }
        // The API's certificate is also the client certificate the nodes are called with.
        let (server_tls, client_tls) = match &config.tls {
            None => (None, None),
            Some(files) => {
                let tls_error = |e: dagraid_tls::TlsError| CoordinatorError::Config(e.to_string());
                if let Some(cert) = &files.cert {
                    dagraid_tls::check_certificate_names(cert, &dagraid_tls::Role::Coordinator)
                        .map_err(tls_error)?;
                }
                (
                    Some(dagraid_tls::ServerTls::load(files.clone()).map_err(tls_error)?),
                    Some(dagraid_tls::ClientTls::load(files.clone()).map_err(tls_error)?),
                )
            }
        };
        let metrics = Arc::new(CoordinatorMetrics::new());
        let metrics_server = match config.metrics_listen {
            None => None,
            Some(addr) => Some(
                MetricsServer::start(addr, metrics.registry().clone())
                    .await
                    .map_err(|source| CoordinatorError::Bind { addr, source })?,
            ),
        };

        let (records, spare_records) = store
            .blocking(|store| Ok::<_, StoreError>((store.volumes()?, store.spares()?)))
            .await?;
        // Nodes only stored volumes name still serve those volumes: keep them, at the address
        // recorded.
        let configured: BTreeSet<&str> = config.nodes.iter().map(|n| n.id.as_str()).collect();
        let mut extra: Vec<NodeSpec> = Vec::new();
        for c in records.iter().flat_map(|r| &r.components) {
            if !configured.contains(c.node_id.as_str()) && !extra.iter().any(|n| n.id == c.node_id)
            {
                tracing::warn!(node = %c.node_id, address = %c.node_address, "a stored volume names a storage node missing from the configuration; using its recorded address");
                extra.push(NodeSpec {
                    id: c.node_id.clone(),
                    address: c.node_address.clone(),
                });
            }
        }
        // Likewise the nodes of stored spares (so they can still be used or removed).
        for s in &spare_records {
            if !configured.contains(s.node_id.as_str()) && !extra.iter().any(|n| n.id == s.node_id)
            {
                tracing::warn!(node = %s.node_id, address = %s.node_address, spare = %s.id, "a stored spare names a storage node missing from the configuration; using its recorded address");
                extra.push(NodeSpec {
                    id: s.node_id.clone(),
                    address: s.node_address.clone(),
                });
            }
        }

        let fencing = FencingContext::new(config.cluster_id.clone(), 0);
        let registry = Arc::new(NodeRegistry::new(
            &config.nodes,
            &extra,
            fencing.clone(),
            {
                let client = NodeClientConfig {
                    metrics: Some(metrics.storage().clone()),
                    tls: client_tls.clone(),
                    ..node_client_config(&config)
                };
                match node_connector {
                    Some(connector) => client.for_injected(connector),
                    None => client,
                }
            },
            config.node_deadline,
        )?);
        registry.check_all(config.gone_after).await;

        // A new owner epoch, above any a node has seen, durable before anything is served.
        let seen = registry
            .nodes()
            .iter()
            .filter_map(|n| n.health().epoch)
            .max()
            .unwrap_or(0);
        let epoch = store
            .take_epoch_async(seen.saturating_add(1), node_client::OWNER_EPOCH_STEP)
            .await?;
        fencing.raise_epoch(epoch);
        let fenced = registry.fence_all(epoch).await;
        tracing::info!(
            epoch,
            fenced,
            nodes = registry.nodes().len(),
            "owner epoch taken"
        );

        let crash = CrashHooks {
            labels: config.test_crash_after_label_writes.map(|k| {
                tracing::warn!(
                    k,
                    "TEST HOOK: the process aborts after {k} label writes of the first state change"
                );
                CrashHook::new(CrashPoint::LabelWrites, k)
            }),
            map: config.test_crash_after_map_writes.map(|k| {
                tracing::warn!(
                    k,
                    "TEST HOOK: the process aborts after {k} writes (metadata records, then the store) of the first parity-map update"
                );
                CrashHook::new(CrashPoint::MapWrites, k)
            }),
        };
        let ids = Arc::new(match id_seed {
            Some(seed) => ids::IdSource::seeded(seed, epoch),
            None => ids::IdSource::os(),
        });
        let spares = Arc::new(
            SparePool::new(store.clone(), registry.clone(), spare_records).with_ids(ids.clone()),
        );
        let volumes = Arc::new(VolumeManager::new(
            store.clone(),
            registry.clone(),
            spares.clone(),
            VolumeManagerConfig {
                array: ArrayConfig {
                    engine: EngineConfig {
                        node_deadline: config.node_deadline,
                    },
                    // One admission for every volume: they share the storage nodes.
                    admission: Some(Admission::new(AdmissionLimits {
                        in_progress: config.max_accesses,
                        queued: config.max_queued_accesses,
                    })),
                    region_bytes: config.parity_map_region_bytes,
                    // A later coordinator's partial-parity log entries rank above ours.
                    log_epoch: epoch,
                    partial_parity_log: config.partial_parity_log,
                    ..ArrayConfig::default()
                },
                map_cooldown: config.parity_map_cooldown,
                label_deadline: config.node_deadline,
                assembly_wait: config.assembly_wait,
                crash,
                resync: crate::resync::ResyncSettings {
                    retry_initial: config.resync_retry_initial,
                    retry_max: config.resync_retry_max,
                },
                ids,
            },
        ));
        metrics.watch(&volumes);
        volumes.assemble_all(records).await;

        let stop = CancellationToken::new();
        let rebuilds = Rebuilds::new(
            volumes.clone(),
            RebuildSettings {
                down_out_delay: config.down_out_delay,
                default_rate: config.rebuild_rate,
                busy_rate: config.rebuild_rate_busy,
                ..RebuildSettings::default()
            },
        );
        metrics.watch_rebuilds(&rebuilds);
        let rebuild_stop = stop.child_token();
        let rebuild_task = tokio::spawn(
            rebuilds
                .clone()
                .run(async move { rebuild_stop.cancelled().await }),
        );
        let scrubs = Scrubs::new(
            volumes.clone(),
            store.clone(),
            ScrubSettings {
                default_rate: config.scrub_rate,
                busy_rate: config.scrub_rate_busy,
                ..ScrubSettings::default()
            },
        );
        metrics.watch_scrubs(&scrubs);
        // Parity jobs a restart cut short go on from their checkpoints.
        scrubs.resume().await;
        let health_task = tokio::spawn(registry::health_loop(
            registry.clone(),
            volumes.clone(),
            config.health_interval,
            config.gone_after,
            stop.child_token(),
        ));

        // The NBD export stops with the API: no new connection or request, and every request
        // read is answered, before the volumes are drained and marked clean.
        let nbd_task = nbd_listener.map(|listener| {
            tokio::spawn(nbd::serve(
                listener,
                volumes.clone(),
                nbd::NbdSettings {
                    tls: match (config.nbd_tls_mode(), &server_tls) {
                        (config::NbdTls::On, Some(tls)) => nbd::ExportTls::On(tls.clone()),
                        (config::NbdTls::Require, Some(tls)) => {
                            nbd::ExportTls::Require(tls.clone())
                        }
                        _ => nbd::ExportTls::Off,
                    },
                    ..nbd::NbdSettings::new(config.max_io_bytes, config.nbd_read_only)
                },
                stop.child_token(),
            ))
        });
        let limit = usize::try_from(config.max_io_bytes + MESSAGE_OVERHEAD_BYTES)
            .map_err(|_| CoordinatorError::Config("max-io-bytes too large".into()))?;
        let api = VolumeServiceServer::new(VolumeApi::new(
            volumes.clone(),
            rebuilds.clone(),
            scrubs.clone(),
            config.max_io_bytes,
        ))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
        let auth = BearerAuth::new(config.token.as_deref(), server_tls.is_some());
        let token_file = config.token_file.clone().map(|path| (path, auth.clone()));
        let api = InterceptedService::new(api, auth);
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<VolumeServiceServer<VolumeApi>>().await;
        let reflection = reflection_service()?;
        let signal = stop.clone();
        // Health checks are polled: traced only when they carry a trace context.
        let traced = GrpcServerLayer::new(Some(metrics.grpc().clone()))
            .quiet(&["grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch"]);
        let router = Server::builder()
            .layer(traced)
            .max_frame_size(HTTP2_MAX_FRAME_SIZE)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(api);
        let shutdown = async move {
            signal.cancelled().await;
            tracing::info!("shutting down: no new calls; waiting for the calls in progress");
            health
                .set_not_serving::<VolumeServiceServer<VolumeApi>>()
                .await;
        };
        type Serving =
            std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
        let server: Serving = match (listener, &server_tls) {
            (Err(incoming), _) => Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown)),
            (Ok(listener), Some(tls)) => {
                Box::pin(router.serve_with_incoming_shutdown(tls.incoming(listener), shutdown))
            }
            (Ok(listener), None) => {
                tracing::warn!(
                    addr = %local_addr,
                    "serving the volume API over plaintext gRPC (no TLS): see docs/SECURITY.md"
                );
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown))
            }
        };
        let stop_all = stop.clone();
        // An access retries at most a few DAGs, each bounded by the node deadline.
        let drain_within = config.node_deadline * 6 + Duration::from_secs(1);
        let task = tokio::spawn(async move {
            let served = server.await;
            // Whatever ended the server, stop the health loop and the resyncs, let detached
            // accesses finish, then mark the volumes clean before the store closes.
            stop_all.cancel();
            if let Some(nbd) = nbd_task {
                let _ = nbd.await;
            }
            let _ = health_task.await;
            // The jobs end their stripe and record their checkpoint.
            let _ = rebuild_task.await;
            scrubs.stop().await;
            volumes.stop_resyncs().await;
            volumes.drain(drain_within).await;
            volumes.mark_clean_all().await;
            volumes.clear();
            drop(volumes);
            store.close();
            tracing::info!("stopped");
            served.map_err(CoordinatorError::from)
        });
        tracing::info!(addr = %local_addr, epoch, tls = server_tls.is_some(), "serving");
        let reloader = Reloader {
            tls: server_tls
                .map(dagraid_tls::Reloadable::Server)
                .into_iter()
                .chain(client_tls.map(dagraid_tls::Reloadable::Client))
                .collect(),
            token: token_file,
        };
        Ok(Coordinator {
            local_addr,
            epoch,
            stop,
            task: Some(task),
            metrics,
            metrics_server,
            spares,
            nbd_addr,
            reloader,
        })
    }

    /// What SIGHUP reads again (the TLS material, the token file).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Where the NBD export listens (port 0 resolved), if it does.
    pub fn nbd_addr(&self) -> Option<SocketAddr> {
        self.nbd_addr
    }

    /// The hot-spare pool (the service's; tests and in-process callers reach it here).
    pub fn spares(&self) -> &Arc<SparePool> {
        &self.spares
    }

    /// The coordinator's metrics (served at [`Coordinator::metrics_addr`] when configured).
    pub fn metrics(&self) -> &Arc<CoordinatorMetrics> {
        &self.metrics
    }

    /// Where `/metrics` is served (port 0 resolved), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The owner epoch this coordinator took.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Stops accepting calls, lets the calls in progress finish, stops the health loop and the
    /// resyncs, marks every volume clean (labels and store) and closes the store (the data
    /// directory can be opened again once this returns).
    pub async fn stop(mut self) -> Result<(), CoordinatorError> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| CoordinatorError::Task(e.to_string()))?,
            None => Ok(()),
        }
    }

    /// Serves until `shutdown` completes (then stops gracefully), or until the server fails.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), CoordinatorError> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            ended = &mut task => {
                return ended.map_err(|e| CoordinatorError::Task(e.to_string()))?;
            }
            () = shutdown => {}
        }
        self.stop.cancel();
        task.await
            .map_err(|e| CoordinatorError::Task(e.to_string()))?
    }
}

/// How the coordinator talks to each storage node. The node deadline is the node client's
/// timeout, which starts when a call is sent (after its wait for a place among the node's calls
/// in flight): it measures the node alone, and the engine adds none of its own around these
/// calls (`ComponentIo::own_deadline`).
/// gRPC server reflection (v1) of the services a coordinator serves: the volume API and
/// health, so `grpcurl` lists and calls them without `.proto` files. It describes the API and
/// answers no volume call, so it sits outside the bearer token like health.
fn reflection_service() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    CoordinatorError,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dagraid_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("dagraid.volume.v1.VolumeService")
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .map_err(|e| CoordinatorError::Config(format!("gRPC reflection: {e}")))
}

fn node_client_config(config: &CoordinatorConfig) -> NodeClientConfig {
    NodeClientConfig {
        io_deadline: config.node_deadline,
        max_in_flight: config.max_in_flight_per_node,
        ..NodeClientConfig::default()
    }
}

/// Starts a coordinator and serves until `shutdown` completes, then stops accepting, lets the
/// calls in progress finish and closes the store.
pub async fn run(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CoordinatorError> {
    Coordinator::start(config).await?.run_until(shutdown).await
}

/// The whole `dagraid-coordinator` process for its parsed command line: builds the runtime,
/// starts trace export, serves until SIGTERM or SIGINT, and turns an error into one line on
/// stderr and a failing exit status. Shared by the `dagraid-coordinator` binary and `dagraid
/// coordinator`, so the two behave alike (flags, the lines `dagraid up` and the tests wait for,
/// exit statuses).
pub fn run_command(args: config::Args) -> std::process::ExitCode {
    let telemetry_args = args.telemetry.clone();
    let result = args.into_config().and_then(|config| {
        let runtime =
            tokio::runtime::Runtime::new().map_err(|e| format!("starting the runtime: {e}"))?;
        runtime.block_on(async {
            let telemetry = dagraid_telemetry::init(&telemetry_args, "dagraid-coordinator")?;
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
            eprintln!("dagraid-coordinator: error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

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

/// Starts the coordinator, prints its listening line (and its metrics line), and serves until a
/// signal.
async fn serve_announced(config: CoordinatorConfig) -> Result<(), String> {
    let coordinator = Coordinator::start(config)
        .await
        .map_err(|e| e.to_string())?;
    let shutdown = shutdown_signal()?;
    let reloader = coordinator.reloader();
    if !reloader.is_empty() {
        dagraid_tls::on_hangup(move || reloader.reload()).map_err(|e| e.to_string())?;
    }
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

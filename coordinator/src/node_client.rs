//! The coordinator's connection to one storage node.
//!
//! A [`NodeClient`] owns a few HTTP/2 connections to the node, used round robin: several 1 MiB
//! transfers in flight on one connection are slower than the same transfers spread over a few
//! (see STACK.md). Connections are made lazily and remade after a failure, so a node that is down
//! when the coordinator starts, or restarts later, costs failed calls and nothing else.
//!
//! **Block I/O is a stack of tower layers** ([`crate::remote::RemoteComponent`] calls it
//! through [`NodeClient::io_call`]), outermost first:
//!
//! ```text
//! concurrency_limit(max_in_flight)   wait for one of the node's places in flight (FIFO): queue time
//!   ObserveLayer                     time the call at the node into the RPC metrics (timeouts too)
//!     map_err(deadline_status)       the timeout's expiry as DEADLINE_EXCEEDED
//!       timeout(io_deadline)         starts when the call is sent: measures the node, nothing else
//!         NodeRpc                    trace context, `grpc-timeout`, a connection round robin, the RPC
//! ```
//!
//! The timeout sits inside the limit, so a call's deadline starts only once it holds its place
//! and leaves for the node: time queued in the coordinator is never mistaken for a slow node,
//! and a timeout only ever happens to a call that was sent. No outer deadline counts the queue
//! either ([`dagraid_core::io::ComponentIo::own_deadline`]); the wait is bounded because every
//! call ahead ends within its own deadline and the accesses that feed the queue are admitted
//! through a bounded queue of their own ([`dagraid_core::admission`]). HTTP/2 keepalive finds a
//! dead peer on an idle connection within seconds.
//!
//! The admin calls the coordinator needs (node info, components, slots, fencing) are plain
//! methods here, with proto types converted at this boundary.
//!
//! Every call carries the current span's W3C trace context (a block I/O call runs inside its
//! DAG node's span, so the node's call span nests under it) and is timed into
//! [`crate::rpc_metrics::StorageRpcMetrics`] when the client has them.
//!
//! **Protocol checked first.** A node must speak storage protocol version
//! [`dagraid_proto::storage::MIN_PROTOCOL_VERSION`] (2) or newer: [`NodeClient::node_info`]
//! (the registry's first call to every node, and its health check) refuses an older node with
//! [`NodeClientError::IncompatibleNode`] naming it, and [`NodeClient::ensure_fenced`] checks it
//! once before the first Fence of this client, so no write reaches an older node. A version 2
//! node is driven like a newer one, except that its log area cannot be used: it answers the log
//! calls of version 3 (`WriteLog`, `ReadLog`) UNIMPLEMENTED, which
//! [`crate::remote::RemoteComponent`] reports as an invalid request naming the node as too old.
//!
//! **Log calls are block calls.** `WriteLog` and `ReadLog` go through the same stack as block
//! I/O (limit, metrics, I/O deadline), carrying fencing as block writes and reads do.
//!
//! **Epochs on reads.** Block and slot reads carry the coordinator's fencing too: a node refuses
//! them once a newer owner (or a component fence) took over. A client at epoch 0 owns nothing
//! (a coordinator takes its epoch, at least 1, before its first read), so its reads carry none
//! and are served unchecked: inspection tools and tests use such clients.
//!
//! **Fenced before the first write.** A client sends `Fence(epoch)` to its node before the first
//! mutating call (block write, flush, slot write, create, delete) of each owner epoch
//! ([`NodeClient::ensure_fenced`]), unless [`NodeClient::fence`] already did. So a node that was
//! unreachable when the coordinator started (and was not fenced then) drains the writes of older
//! coordinator lives before it receives any write of this one, and refuses them afterwards.
//!
//! **Components fenced one at a time.** A write that timed out has an unknown outcome: it may
//! still land, late, over another connection. Before such a component is written again, the
//! access fences it alone ([`NodeClient::fence_component`]): a component fence epoch above the
//! owner epoch, durable on the node, which drains the component's older calls and refuses them
//! from then on; this client's later calls on the component carry that epoch
//! ([`NodeClient::component_epoch`]). Owner epochs are taken in steps of [`OWNER_EPOCH_STEP`]
//! and component fence epochs lie between an owner's epoch and the next step, so a newer owner
//! is above every component fence of an older one. The answer to the fence doubles as a
//! liveness probe: a node that answers it is slow, not gone. The node applies a fence before
//! its answer arrives here, so it may refuse a call this client sent at the old epoch first: the
//! fence is noted as on its way before it is sent, and such a refusal waits for that fence of
//! that component only, then the call goes again at the new epoch (`NodeClient::moved_past`).
//! A refusal with no such fence (a newer owner) is answered at once.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_proto::storage::v1 as pb;
use dashmap::DashMap;
use futures::future::BoxFuture;
use pb::storage_node_client::StorageNodeClient;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tower::limit::ConcurrencyLimit;
use tower::timeout::Timeout;
use tower::util::MapErr;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

use crate::error::NodeClientError;
use crate::rpc_metrics::{NodeRpcMetrics, StorageRpcMetrics};

/// HTTP/2 frame size: a 1 MiB block travels in one frame (the setting that matters most for
/// large transfers, STACK.md). The storage node uses the same value.
pub const HTTP2_MAX_FRAME_SIZE: u32 = 1 << 20;
/// HTTP/2 per-stream flow-control window: room for several 1 MiB blocks before a window update.
pub const HTTP2_STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 per-connection flow-control window.
pub const HTTP2_CONNECTION_WINDOW: u32 = 32 << 20;
/// Encode and decode limit of one message: above the largest payload any node accepts (a node's
/// `max_io_bytes` is at most 1 GiB) plus its message overhead, so that the node, not this
/// client, decides what is too large and says so precisely.
pub const MAX_MESSAGE_BYTES: usize = (1 << 30) + (2 << 20);

/// Owner epochs are multiples of this ([`crate::store::Store::take_epoch`]); the epochs up to
/// the next multiple are that owner's component fence epochs ([`NodeClient::fence_component`]).
pub const OWNER_EPOCH_STEP: u64 = 1 << 32;

/// Ownership of the writes of one coordinator: cluster id and owner epoch, shared by all its
/// node clients and attached to every mutating call.
///
/// The epoch only goes up; a node refuses calls with an epoch older than the newest it has seen
/// (answered as [`crate::error::NodeErrorKind::Fenced`]).
#[derive(Debug)]
pub struct FencingContext {
    cluster_id: String,
    epoch: AtomicU64,
}

impl FencingContext {
    /// The owner `epoch` in cluster `cluster_id`.
    pub fn new(cluster_id: impl Into<String>, epoch: u64) -> Arc<Self> {
        Arc::new(Self {
            cluster_id: cluster_id.into(),
            epoch: AtomicU64::new(epoch),
        })
    }

    /// The cluster id every call carries.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The epoch calls carry from now on.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Raises the epoch to at least `epoch` and returns the epoch now in force (never lowers it:
    /// an older epoch would only get every call refused).
    pub fn raise_epoch(&self, epoch: u64) -> u64 {
        self.epoch.fetch_max(epoch, Ordering::AcqRel).max(epoch)
    }

    pub(crate) fn to_proto(&self) -> pb::Fencing {
        pb::Fencing {
            cluster_id: self.cluster_id.clone(),
            epoch: self.epoch(),
        }
    }
}

/// How a [`NodeClient`] talks to its node.
#[derive(Debug, Clone)]
pub struct NodeClientConfig {
    /// HTTP/2 connections to the node, used round robin.
    pub connections: usize,
    /// Block I/O calls in flight to the node at once; more wait their turn locally (first come,
    /// first served), and that wait does not count against [`NodeClientConfig::io_deadline`].
    pub max_in_flight: usize,
    /// Deadline of one block read, write or flush, from the moment it is sent (after its wait
    /// for a place in flight): it measures the node. The engine puts no deadline of its own
    /// around these calls (`ComponentIo::own_deadline`).
    pub io_deadline: Duration,
    /// Deadline of one admin call (node info, create, delete, slots, fence).
    pub admin_deadline: Duration,
    /// Deadline of establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 pings, sent even on idle connections.
    pub keepalive_interval: Duration,
    /// A connection whose ping is not answered within this is closed.
    pub keepalive_timeout: Duration,
    /// Where call latencies and errors are counted; `None`: not counted.
    pub metrics: Option<StorageRpcMetrics>,
    /// TLS to the node with the coordinator's certificate; `None`: plaintext. With it the
    /// node must present a certificate naming its id ([`NodeClient::for_node`]).
    pub tls: Option<Arc<dagraid_tls::ClientTls>>,
    /// How to reach the node instead of the operating system's TCP (the deterministic
    /// simulation's network); plaintext only, refused with `tls`. Such a transport wants short
    /// keepalives ([`NodeClientConfig::for_injected`]): a connection cut by a partition is
    /// then closed soon, and a new one is made once the network heals.
    pub connector: Option<dagraid_tls::transport::Connector>,
}

impl Default for NodeClientConfig {
    fn default() -> Self {
        Self {
            connections: 4,
            max_in_flight: 64,
            io_deadline: Duration::from_secs(5),
            admin_deadline: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(2),
            metrics: None,
            tls: None,
            connector: None,
        }
    }
}

/// HTTP/2 ping interval over an injected transport ([`NodeClientConfig::for_injected`]).
pub const INJECTED_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// HTTP/2 ping timeout over an injected transport.
pub const INJECTED_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

impl NodeClientConfig {
    /// This configuration over `connector`, with the short keepalives
    /// ([`INJECTED_KEEPALIVE_INTERVAL`], [`INJECTED_KEEPALIVE_TIMEOUT`]) that close a
    /// connection a partition cut, so the channel connects again once it heals.
    pub fn for_injected(self, connector: dagraid_tls::transport::Connector) -> Self {
        Self {
            connector: Some(connector),
            keepalive_interval: INJECTED_KEEPALIVE_INTERVAL,
            keepalive_timeout: INJECTED_KEEPALIVE_TIMEOUT,
            ..self
        }
    }

    fn validate(&self) -> Result<(), NodeClientError> {
        if self.connector.is_some() && self.tls.is_some() {
            return Err(NodeClientError::InvalidConfig(
                "TLS is not supported over an injected connector",
            ));
        }
        if self.connections == 0 {
            return Err(NodeClientError::InvalidConfig(
                "connections must be at least 1",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(NodeClientError::InvalidConfig(
                "max_in_flight must be at least 1 (and within tokio's semaphore limit)",
            ));
        }
        for (d, what) in [
            (self.io_deadline, "io_deadline must be positive"),
            (self.admin_deadline, "admin_deadline must be positive"),
            (self.connect_timeout, "connect_timeout must be positive"),
            (
                self.keepalive_interval,
                "keepalive_interval must be positive",
            ),
            (self.keepalive_timeout, "keepalive_timeout must be positive"),
        ] {
            if d.is_zero() {
                return Err(NodeClientError::InvalidConfig(what));
            }
        }
        Ok(())
    }
}

/// State of a component as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeComponentState {
    /// Serving reads and writes.
    Optimal,
    /// Failed for good on the node; serves nothing until deleted and re-created.
    Failed {
        /// The node's reason.
        reason: String,
    },
}

/// A component hosted by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// The component id.
    pub id: String,
    /// Serial seeding the block checksums.
    pub serial: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks in the component.
    pub block_count: u64,
    /// Bytes of its log area (`ComponentInfo.log_bytes`; 0: none).
    pub log_bytes: u64,
    /// Whether the node serves it.
    pub state: NodeComponentState,
}

/// Identity and limits of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id, fixed at its first start.
    pub node_id: String,
    /// The node's cluster id.
    pub cluster_id: String,
    /// Highest owner epoch the node has accepted.
    pub epoch: u64,
    /// The components it hosts.
    pub components: Vec<ComponentInfo>,
    /// Largest payload of one read or write.
    pub max_io_bytes: u64,
    /// Whether the node accepts fault injection (tests only).
    pub fault_injection_enabled: bool,
    /// The node's software version.
    pub version: String,
    /// The storage protocol version the node speaks (at least
    /// [`dagraid_proto::storage::MIN_PROTOCOL_VERSION`]: older nodes are refused).
    pub protocol_version: u32,
}

/// Largest payload of the label area.
pub const LABEL_AREA_BYTES: usize = 4096;

/// The small atomically replaced areas of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotArea {
    /// The component label (at most 4 KiB).
    Label,
    /// The coordinator's metadata area (at most 64 KiB).
    Metadata,
}

impl SlotArea {
    fn to_proto(self) -> pb::SlotArea {
        match self {
            SlotArea::Label => pb::SlotArea::Label,
            SlotArea::Metadata => pb::SlotArea::Metadata,
        }
    }
}

/// The newest complete version of a slot area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotVersion {
    /// Sequence number of this version (1 for the first write).
    pub sequence: u64,
    /// Its content.
    pub payload: Bytes,
}

type Rpc = StorageNodeClient<Channel>;

/// One block RPC: its request message, its answer, and how to send it.
pub(crate) trait BlockCall: Send + 'static {
    /// The node's answer.
    type Answer: Send + 'static;
    /// The RPC's name, in metrics and errors.
    const NAME: &'static str;
    /// Sends `request` on `client`.
    fn send(
        client: Rpc,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<Self::Answer>, Status>>
    where
        Self: Sized;
}

impl BlockCall for pb::ReadBlocksRequest {
    type Answer = pb::ReadBlocksResponse;
    const NAME: &'static str = "ReadBlocks";
    fn send(
        mut client: Rpc,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<Self::Answer>, Status>> {
        Box::pin(async move { client.read_blocks(request).await })
    }
}

impl BlockCall for pb::WriteBlocksRequest {
    type Answer = pb::WriteBlocksResponse;
    const NAME: &'static str = "WriteBlocks";
    fn send(
        mut client: Rpc,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<Self::Answer>, Status>> {
        Box::pin(async move { client.write_blocks(request).await })
    }
}

impl BlockCall for pb::WriteLogRequest {
    type Answer = pb::WriteLogResponse;
    const NAME: &'static str = "WriteLog";
    fn send(
        mut client: Rpc,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<Self::Answer>, Status>> {
        Box::pin(async move { client.write_log(request).await })
    }
}

impl BlockCall for pb::ReadLogRequest {
    type Answer = pb::ReadLogResponse;
    const NAME: &'static str = "ReadLog";
    fn send(
        mut client: Rpc,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<Self::Answer>, Status>> {
        Box::pin(async move { client.read_log(request).await })
    }
}

impl BlockCall for pb::FlushRequest {
    type Answer = pb::FlushResponse;
    const NAME: &'static str = "Flush";
    fn send(
        mut client: Rpc,
        request: Request<Self>,
    ) -> BoxFuture<'static, Result<Response<Self::Answer>, Status>> {
        Box::pin(async move { client.flush(request).await })
    }
}

/// The innermost service of the block I/O stack: sends one block call on the next connection,
/// with the current span's trace context and the deadline in `grpc-timeout` (so the node gives
/// up on work nobody waits for).
#[derive(Clone)]
struct NodeRpc {
    clients: Arc<[Rpc]>,
    next: Arc<AtomicUsize>,
    deadline: Duration,
}

impl<C: BlockCall> Service<C> for NodeRpc {
    type Response = C::Answer;
    type Error = Status;
    type Future = BoxFuture<'static, Result<C::Answer, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Each connection waits for its own readiness inside the generated client.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: C) -> Self::Future {
        let mut request = Request::new(message);
        request.set_timeout(self.deadline);
        dagraid_telemetry::propagation::inject_current(request.metadata_mut());
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let client = self.clients[i % self.clients.len()].clone();
        Box::pin(async move { C::send(client, request).await.map(Response::into_inner) })
    }
}

/// The timeout's expiry (or any other error a layer raised) as a status: DEADLINE_EXCEEDED for
/// a call that was sent and got no answer within its deadline.
fn deadline_status(error: BoxError) -> Status {
    match error.downcast::<Status>() {
        Ok(status) => *status,
        Err(error) if error.is::<tower::timeout::error::Elapsed>() => Status::deadline_exceeded(
            "the node gave no answer within the I/O deadline (counted from when the call was sent)",
        ),
        Err(error) => Status::unknown(error.to_string()),
    }
}

/// Times each call into the node's RPC metrics: latency and error code by RPC name.
#[derive(Clone)]
struct ObserveLayer {
    metrics: Option<NodeRpcMetrics>,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`ObserveLayer`].
#[derive(Clone)]
struct Observe<S> {
    inner: S,
    metrics: Option<NodeRpcMetrics>,
}

impl<C, S> Service<C> for Observe<S>
where
    C: BlockCall,
    S: Service<C, Response = C::Answer, Error = Status>,
    S::Future: Send + 'static,
{
    type Response = C::Answer;
    type Error = Status;
    type Future = BoxFuture<'static, Result<C::Answer, Status>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, message: C) -> Self::Future {
        let start = Instant::now();
        let answer = self.inner.call(message);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let answer = answer.await;
            if let Some(m) = &metrics {
                let error = answer.as_ref().err().map(|s| s.code() as i32);
                m.observe(C::NAME, start.elapsed().as_secs_f64(), error);
            }
            answer
        })
    }
}

/// The block I/O stack, outermost first (see the module documentation).
type IoStack = ConcurrencyLimit<Observe<MapErr<Timeout<NodeRpc>, fn(BoxError) -> Status>>>;

fn io_stack(
    clients: Arc<[Rpc]>,
    next: Arc<AtomicUsize>,
    config: &NodeClientConfig,
    metrics: Option<NodeRpcMetrics>,
) -> IoStack {
    ServiceBuilder::new()
        // Waits for a place among the node's calls in flight: the queue, counted by no deadline.
        .concurrency_limit(config.max_in_flight)
        // Times what the node took (timeouts included) into the metrics.
        .layer(ObserveLayer { metrics })
        .map_err(deadline_status as fn(BoxError) -> Status)
        // Starts when the call is sent: the node's time alone.
        .timeout(config.io_deadline)
        .service(NodeRpc {
            clients,
            next,
            deadline: config.io_deadline,
        })
}

/// Connections to one storage node, shared by every component on it (cheap to clone).
#[derive(Clone)]
pub struct NodeClient {
    inner: Arc<Inner>,
}

/// FAILED_PRECONDITION / `stale-epoch` with `message`: a newer coordinator owns the node.
fn stale_epoch(message: String) -> Status {
    let mut status = Status::failed_precondition(message);
    status.metadata_mut().insert(
        dagraid_proto::error_kind::HEADER,
        tonic::metadata::MetadataValue::from_static(dagraid_proto::error_kind::STALE_EPOCH),
    );
    status
}

/// A component fence this client completed.
#[derive(Debug, Clone, Copy)]
struct ComponentFence {
    epoch: u64,
    sequence: u64,
}

/// A component fence on its way ([`Inner::component_fences_pending`]): noted while it lives,
/// forgotten on drop (the fence recorded, failed, or dropped before its answer), which wakes
/// the calls waiting for it.
struct PendingFence<'a> {
    inner: &'a Inner,
    component: &'a str,
}

impl<'a> PendingFence<'a> {
    fn new(inner: &'a Inner, component: &'a str, epoch: u64) -> Self {
        inner
            .component_fences_pending
            .insert(component.to_owned(), epoch);
        Self { inner, component }
    }
}

impl Drop for PendingFence<'_> {
    fn drop(&mut self) {
        self.inner.component_fences_pending.remove(self.component);
        self.inner.component_fence_settled.notify_waiters();
    }
}

struct Inner {
    address: String,
    clients: Arc<[Rpc]>,
    next: Arc<AtomicUsize>,
    /// Block I/O: limit, metrics, timeout, RPC (cloned per call; the clones share the limit).
    io: IoStack,
    fencing: Arc<FencingContext>,
    /// The highest epoch the node is known to be fenced at by this client.
    fenced: AtomicU64,
    /// One Fence at a time.
    fence_lock: tokio::sync::Mutex<()>,
    /// Whether the node was seen to speak a protocol version this client accepts.
    protocol_checked: AtomicBool,
    /// Components this client fenced on their own: the fence epoch and the sequence number of
    /// the fence that set it ([`NodeClient::fence_component`]).
    component_fences: DashMap<String, ComponentFence>,
    /// Component fences sent so far (their sequence numbers).
    component_fences_sent: AtomicU64,
    /// One component fence at a time.
    component_fence_lock: tokio::sync::Mutex<()>,
    /// The log-area size of every component this client saw in a node answer (node info,
    /// listing, creation), by id ([`NodeClient::component_log_bytes`]).
    component_logs: DashMap<String, u64>,
    /// Component fences on their way: the epoch sent, from before the Fence is sent until its
    /// answer is recorded in `component_fences` (or the fence failed or was dropped). A call the
    /// node refused because of such a fence waits for it ([`NodeClient::moved_past`]).
    component_fences_pending: DashMap<String, u64>,
    /// Woken whenever an entry of `component_fences_pending` is removed.
    component_fence_settled: tokio::sync::Notify,
    config: NodeClientConfig,
    metrics: Option<NodeRpcMetrics>,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient")
            .field("address", &self.inner.address)
            .field("connections", &self.inner.clients.len())
            .finish_non_exhaustive()
    }
}

impl NodeClient {
    /// A client of the node at `address` (`host:port`, or an `http://` URI), over plaintext
    /// (a config with TLS needs the node's id: [`NodeClient::for_node`]). Connects lazily: it
    /// returns at once even if the node is down. Must be called inside a tokio runtime.
    pub fn new(
        address: &str,
        fencing: Arc<FencingContext>,
        config: NodeClientConfig,
    ) -> Result<Self, NodeClientError> {
        Self::build(None, address, fencing, config)
    }

    /// A client of storage node `node_id` at `address`. With TLS in `config`, a connection is
    /// made only to a peer whose certificate names that node (`ID.node.dagraid`): whatever else
    /// answers at the address fails the handshake.
    pub fn for_node(
        node_id: &str,
        address: &str,
        fencing: Arc<FencingContext>,
        config: NodeClientConfig,
    ) -> Result<Self, NodeClientError> {
        Self::build(Some(node_id), address, fencing, config)
    }

    fn build(
        node_id: Option<&str>,
        address: &str,
        fencing: Arc<FencingContext>,
        config: NodeClientConfig,
    ) -> Result<Self, NodeClientError> {
        config.validate()?;
        let uri = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| NodeClientError::InvalidAddress {
                address: address.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .max_frame_size(HTTP2_MAX_FRAME_SIZE)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
        if endpoint.uri().host().is_none() || endpoint.uri().port_u16().is_none() {
            return Err(NodeClientError::InvalidAddress {
                address: address.to_owned(),
                reason: "expected host:port".into(),
            });
        }
        let connector = match (&config.tls, node_id) {
            (None, _) => None,
            (Some(tls), Some(id)) => Some(
                tls.connector(&dagraid_tls::Role::Node(id.to_owned()).dns_name())
                    .map_err(|e| NodeClientError::InvalidAddress {
                        address: address.to_owned(),
                        reason: e.to_string(),
                    })?,
            ),
            (Some(_), None) => {
                return Err(NodeClientError::InvalidConfig(
                    "TLS to a storage node needs the node's id (NodeClient::for_node)",
                ));
            }
        };
        // Each lazy channel is its own connection.
        let clients: Arc<[Rpc]> = (0..config.connections)
            .map(|_| {
                let channel = match (&config.connector, &connector) {
                    (Some(injected), _) => endpoint.connect_with_connector_lazy(injected.clone()),
                    (None, Some(connector)) => {
                        endpoint.connect_with_connector_lazy(connector.clone())
                    }
                    (None, None) => endpoint.connect_lazy(),
                };
                StorageNodeClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .collect();
        let next = Arc::new(AtomicUsize::new(0));
        let metrics = config.metrics.as_ref().map(|m| m.for_node(address));
        Ok(Self {
            inner: Arc::new(Inner {
                address: address.to_owned(),
                io: io_stack(clients.clone(), next.clone(), &config, metrics.clone()),
                clients,
                next,
                fencing,
                fenced: AtomicU64::new(0),
                fence_lock: tokio::sync::Mutex::new(()),
                protocol_checked: AtomicBool::new(false),
                component_fences: DashMap::new(),
                component_fences_sent: AtomicU64::new(0),
                component_fence_lock: tokio::sync::Mutex::new(()),
                component_logs: DashMap::new(),
                component_fences_pending: DashMap::new(),
                component_fence_settled: tokio::sync::Notify::new(),
                metrics,
                config,
            }),
        })
    }

    /// The node's address as given.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The fencing every mutating call of this client carries.
    pub fn fencing(&self) -> &Arc<FencingContext> {
        &self.inner.fencing
    }

    /// The epoch this client's calls on `component` carry: the owner epoch, or the
    /// component's own fence epoch once [`NodeClient::fence_component`] raised it (and no newer
    /// owner epoch replaced it).
    pub fn component_epoch(&self, component: &str) -> u64 {
        let owner = self.inner.fencing.epoch();
        match self.inner.component_fences.get(component) {
            Some(f) if f.epoch > owner => f.epoch,
            _ => owner,
        }
    }

    /// The fencing a mutating call on `component` carries.
    pub(crate) fn fencing_for(&self, component: &str) -> pb::Fencing {
        pb::Fencing {
            cluster_id: self.inner.fencing.cluster_id().to_owned(),
            epoch: self.component_epoch(component),
        }
    }

    /// The fencing a read of `component` carries: none at owner epoch 0 (see the module doc).
    pub(crate) fn read_fencing_for(&self, component: &str) -> Option<pb::Fencing> {
        (self.inner.fencing.epoch() > 0).then(|| self.fencing_for(component))
    }

    /// Fences `component` alone, after a write on it ended with an unknown outcome: when this
    /// returns `Ok`, every call this client sent on the component before the call began has
    /// finished on the node or will be refused there, so the write can be redone without a late
    /// copy of the old one landing after it. Returns the component's fence epoch, which this
    /// client's later calls on it carry.
    ///
    /// Callers that began while another fence of the component was on its way share the next
    /// one (any fence sent after a caller began covers that caller's writes). The fence is an
    /// admin call under the I/O deadline, not queued behind the node's block calls; the node
    /// makes the epoch durable in the component's file before it counts. Fails with the node's
    /// answer, DEADLINE_EXCEEDED if it does not answer (a node that answers is slow, not gone),
    /// or FAILED_PRECONDITION / `stale-epoch` when a newer owner took over.
    pub async fn fence_component(&self, component: &str) -> Result<u64, Status> {
        let began = self.inner.component_fences_sent.load(Ordering::Acquire);
        let owner = self.inner.fencing.epoch();
        if owner == 0 {
            return Err(Status::failed_precondition(
                "a client at epoch 0 owns nothing and cannot fence a component",
            ));
        }
        self.ensure_fenced().await?;
        let _one_at_a_time = self.inner.component_fence_lock.lock().await;
        if let Some(f) = self.inner.component_fences.get(component)
            && f.sequence > began
            && f.epoch > owner
        {
            return Ok(f.epoch);
        }
        let epoch = self.component_epoch(component) + 1;
        if epoch / OWNER_EPOCH_STEP != owner / OWNER_EPOCH_STEP {
            return Err(Status::resource_exhausted(format!(
                "component {component}: this owner's component fence epochs are used up; restart the coordinator to take a new owner epoch"
            )));
        }
        let sequence = self
            .inner
            .component_fences_sent
            .fetch_add(1, Ordering::AcqRel)
            + 1;
        // Noted before the Fence is sent: the node may apply it, and refuse a call of this
        // client sent at the old epoch, before its answer arrives here.
        let _pending = PendingFence::new(&self.inner, component, epoch);
        let answer = self.send_fence(epoch, component).await?;
        if answer.epoch > epoch {
            return Err(stale_epoch(format!(
                "component {component} is at epoch {}, above this coordinator's {epoch}: a newer coordinator owns it",
                answer.epoch
            )));
        }
        self.inner
            .component_fences
            .insert(component.to_owned(), ComponentFence { epoch, sequence });
        tracing::info!(node = %self.inner.address, component, epoch, "component fenced after a write with an unknown outcome");
        Ok(epoch)
    }

    /// The size of component `id`'s log area as the node last reported it to this client (in
    /// [`NodeClient::node_info`], which the registry's health checks call every interval,
    /// [`NodeClient::list_components`] or [`NodeClient::create_component`]); `None` if no such
    /// answer named the component yet.
    pub fn component_log_bytes(&self, id: &str) -> Option<u64> {
        self.inner.component_logs.get(id).map(|v| *v)
    }

    /// Whether this client's epoch for `component` moved past `sent`, the epoch a call the
    /// node refused as stale carried: then the refusal came from this client's own component
    /// fence, and the call may be sent again at the new epoch. When it has not moved yet but a
    /// fence of this component above `sent` is on its way (the node applied it and refused the
    /// call before the fence's answer was recorded here), waits for that fence to be recorded,
    /// fail or be dropped, and looks again. Any other refusal (a newer owner) answers `false`
    /// at once: a fence of another component, or none at all, is never waited for.
    pub(crate) async fn moved_past(&self, component: &str, sent: u64) -> bool {
        loop {
            let settled = self.inner.component_fence_settled.notified();
            tokio::pin!(settled);
            // Registered before the checks, so a fence that settles between them still wakes
            // this waiter (notify_waiters keeps no permit).
            settled.as_mut().enable();
            if self.component_epoch(component) > sent {
                return true;
            }
            let in_flight = self
                .inner
                .component_fences_pending
                .get(component)
                .is_some_and(|epoch| *epoch > sent);
            if !in_flight {
                return false;
            }
            settled.await;
        }
    }

    /// The client's settings.
    pub fn config(&self) -> &NodeClientConfig {
        &self.inner.config
    }

    fn pick(&self) -> Rpc {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.clients[i % self.inner.clients.len()].clone()
    }

    /// One admin call of RPC `name` under `deadline`, which starts now (admin calls are not
    /// queued: they pass no limit of calls in flight). The deadline is also sent to
    /// the node (`grpc-timeout`), so the node gives up on work nobody waits for; expiry is
    /// answered here as DEADLINE_EXCEEDED even when the node never answers at all (a stopped
    /// process). The call carries the current span's trace context.
    async fn call<M, T, F, Fut>(
        &self,
        name: &'static str,
        deadline: Duration,
        message: M,
        rpc: F,
    ) -> Result<T, Status>
    where
        F: FnOnce(Rpc, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut request = Request::new(message);
        request.set_timeout(deadline);
        dagraid_telemetry::propagation::inject_current(request.metadata_mut());
        let start = Instant::now();
        let answer = match tokio::time::timeout(deadline, rpc(self.pick(), request)).await {
            Ok(answer) => answer.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {deadline:?}"
            ))),
        };
        if let Some(m) = &self.inner.metrics {
            let error = answer.as_ref().err().map(|s| s.code() as i32);
            m.observe(name, start.elapsed().as_secs_f64(), error);
        }
        answer
    }

    /// The highest epoch this client has fenced its node at (0: never).
    pub fn fenced_epoch(&self) -> u64 {
        self.inner.fenced.load(Ordering::Acquire)
    }

    /// Makes sure the node has been fenced at the current owner epoch before a mutating call:
    /// sends `Fence(epoch)` (under the I/O deadline) if this client has not done so yet. Fails
    /// with the node's answer, or FAILED_PRECONDITION / `stale-epoch` when the node answers with
    /// a newer epoch (another coordinator owns it).
    pub async fn ensure_fenced(&self) -> Result<(), Status> {
        let epoch = self.inner.fencing.epoch();
        if epoch == 0 || self.fenced_epoch() >= epoch {
            return Ok(());
        }
        let _one_at_a_time = self.inner.fence_lock.lock().await;
        if self.fenced_epoch() >= epoch {
            return Ok(());
        }
        if !self.inner.protocol_checked.load(Ordering::Acquire) {
            let info = self
                .call(
                    "GetNodeInfo",
                    self.inner.config.io_deadline,
                    pb::GetNodeInfoRequest {},
                    |mut c, r| async move { c.get_node_info(r).await },
                )
                .await?;
            self.check_protocol(&info)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
        }
        let answer = self.send_fence(epoch, "").await?;
        self.fenced_at(epoch, answer.epoch)?;
        tracing::info!(node = %self.inner.address, epoch, "storage node fenced before its first write of this epoch");
        Ok(())
    }

    /// One Fence at `epoch` under the I/O deadline (an admin call, not queued behind block
    /// I/O): of the whole node when `component` is empty, else of that component alone.
    async fn send_fence(&self, epoch: u64, component: &str) -> Result<pb::FenceResponse, Status> {
        let request = pb::FenceRequest {
            cluster_id: self.inner.fencing.cluster_id().to_owned(),
            epoch,
            component_id: component.to_owned(),
        };
        self.call(
            "Fence",
            self.inner.config.io_deadline,
            request,
            |mut c, r| async move { c.fence(r).await },
        )
        .await
    }

    /// Records a successful Fence at `epoch` whose node answered `now`.
    fn fenced_at(&self, epoch: u64, now: u64) -> Result<(), Status> {
        if now > epoch {
            return Err(stale_epoch(format!(
                "the node is at epoch {now}, above this coordinator's {epoch}: a newer coordinator owns it"
            )));
        }
        self.inner.fenced.fetch_max(epoch, Ordering::AcqRel);
        Ok(())
    }

    /// A block I/O call through the stack: waits (uncounted) for a place among the node's
    /// calls in flight, then is sent under the I/O deadline, which starts then. Dropping the
    /// future while it waits leaves the queue; nothing was sent.
    pub(crate) async fn io_call<C: BlockCall>(&self, message: C) -> Result<C::Answer, Status> {
        let mut io = self.inner.io.clone();
        ServiceExt::<C>::ready(&mut io).await?.call(message).await
    }

    /// The deadline of one block call, counted from when it is sent.
    pub fn io_deadline(&self) -> Duration {
        self.inner.config.io_deadline
    }

    async fn admin_call<M, T, F, Fut>(
        &self,
        name: &'static str,
        message: M,
        rpc: F,
    ) -> Result<T, NodeClientError>
    where
        F: FnOnce(Rpc, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call(name, self.inner.config.admin_deadline, message, rpc)
            .await
            .map_err(|status| {
                let err = NodeClientError::from_status(&self.inner.address, name, &status);
                tracing::debug!(node = %self.inner.address, call = name, error = %err, "node call failed");
                err
            })
    }

    /// Refuses a node older than the protocol version this client needs.
    fn check_protocol(&self, info: &pb::NodeInfo) -> Result<(), NodeClientError> {
        let needed = dagraid_proto::storage::MIN_PROTOCOL_VERSION;
        if info.protocol_version < needed {
            let err = NodeClientError::IncompatibleNode {
                node: self.inner.address.clone(),
                protocol_version: info.protocol_version,
                needed,
                version: info.version.clone(),
            };
            tracing::warn!(node = %self.inner.address, error = %err, "storage node refused");
            return Err(err);
        }
        self.inner.protocol_checked.store(true, Ordering::Release);
        Ok(())
    }

    /// Identity, epoch, limits and components of the node. Doubles as the health check. A node
    /// older than storage protocol version [`dagraid_proto::storage::MIN_PROTOCOL_VERSION`] is
    /// refused ([`NodeClientError::IncompatibleNode`]).
    pub async fn node_info(&self) -> Result<NodeInfo, NodeClientError> {
        let info = self
            .admin_call(
                "GetNodeInfo",
                pb::GetNodeInfoRequest {},
                |mut c, r| async move { c.get_node_info(r).await },
            )
            .await?;
        self.check_protocol(&info)?;
        let components = info
            .components
            .into_iter()
            .map(|c| self.component_info("GetNodeInfo", c))
            .collect::<Result<_, _>>()?;
        Ok(NodeInfo {
            node_id: info.node_id,
            cluster_id: info.cluster_id,
            epoch: info.epoch,
            components,
            max_io_bytes: info.max_io_bytes,
            fault_injection_enabled: info.fault_injection_enabled,
            version: info.version,
            protocol_version: info.protocol_version,
        })
    }

    /// Creates a zero-filled component; `serial` 0 lets the node choose one.
    pub async fn create_component(
        &self,
        id: &str,
        block_size: u32,
        block_count: u64,
        serial: u64,
    ) -> Result<ComponentInfo, NodeClientError> {
        self.gate("CreateComponent").await?;
        let request = pb::CreateComponentRequest {
            fencing: Some(self.inner.fencing.to_proto()),
            component_id: id.to_owned(),
            block_size,
            block_count,
            serial,
            log_bytes: 0,
        };
        let answer = self
            .admin_call("CreateComponent", request, |mut c, r| async move {
                c.create_component(r).await
            })
            .await?;
        let info = answer.component.ok_or_else(|| {
            NodeClientError::invalid_response(
                &self.inner.address,
                "CreateComponent",
                "the answer carries no component".into(),
            )
        })?;
        self.component_info("CreateComponent", info)
    }

    /// The components hosted by the node.
    pub async fn list_components(&self) -> Result<Vec<ComponentInfo>, NodeClientError> {
        let answer = self
            .admin_call(
                "ListComponents",
                pb::ListComponentsRequest {},
                |mut c, r| async move { c.list_components(r).await },
            )
            .await?;
        answer
            .components
            .into_iter()
            .map(|c| self.component_info("ListComponents", c))
            .collect()
    }

    /// Deletes a component and its file.
    pub async fn delete_component(&self, id: &str) -> Result<(), NodeClientError> {
        self.gate("DeleteComponent").await?;
        let request = pb::DeleteComponentRequest {
            fencing: Some(self.fencing_for(id)),
            component_id: id.to_owned(),
        };
        self.admin_call("DeleteComponent", request, |mut c, r| async move {
            c.delete_component(r).await
        })
        .await?;
        self.inner.component_logs.remove(id);
        Ok(())
    }

    /// The newest complete version of a slot area of component `id`; `None` if never written.
    pub async fn read_slot(
        &self,
        id: &str,
        area: SlotArea,
    ) -> Result<Option<SlotVersion>, NodeClientError> {
        let request = pb::ReadSlotRequest {
            component_id: id.to_owned(),
            area: area.to_proto() as i32,
            fencing: self.read_fencing_for(id),
        };
        let answer = self
            .admin_call("ReadSlot", request, |mut c, r| async move {
                c.read_slot(r).await
            })
            .await?;
        Ok(answer.present.then_some(SlotVersion {
            sequence: answer.sequence,
            payload: answer.payload,
        }))
    }

    /// Atomically replaces the content of a slot area; returns the new version's sequence.
    pub async fn write_slot(
        &self,
        id: &str,
        area: SlotArea,
        payload: Bytes,
    ) -> Result<u64, NodeClientError> {
        self.gate("WriteSlot").await?;
        let request = pb::WriteSlotRequest {
            fencing: Some(self.fencing_for(id)),
            component_id: id.to_owned(),
            area: area.to_proto() as i32,
            payload,
        };
        let answer = self
            .admin_call("WriteSlot", request, |mut c, r| async move {
                c.write_slot(r).await
            })
            .await?;
        Ok(answer.sequence)
    }

    /// Raises the node's owner epoch to `epoch` (in this client's cluster) and waits until every
    /// write accepted under an older epoch has drained; returns the node's epoch afterwards.
    /// When that is `epoch`, later mutating calls of this epoch need no new Fence.
    ///
    /// The client's own [`FencingContext`] is left alone: the coordinator raises it once the
    /// nodes are fenced.
    pub async fn fence(&self, epoch: u64) -> Result<u64, NodeClientError> {
        let request = pb::FenceRequest {
            cluster_id: self.inner.fencing.cluster_id().to_owned(),
            epoch,
            component_id: String::new(),
        };
        let answer = self
            .admin_call("Fence", request, |mut c, r| async move { c.fence(r).await })
            .await?;
        if answer.epoch == epoch {
            self.inner.fenced.fetch_max(epoch, Ordering::AcqRel);
        }
        Ok(answer.epoch)
    }

    /// [`NodeClient::ensure_fenced`] for the admin calls.
    async fn gate(&self, call: &'static str) -> Result<(), NodeClientError> {
        self.ensure_fenced()
            .await
            .map_err(|status| NodeClientError::from_status(&self.inner.address, call, &status))
    }

    fn component_info(
        &self,
        call: &'static str,
        info: pb::ComponentInfo,
    ) -> Result<ComponentInfo, NodeClientError> {
        let state = match pb::ComponentState::try_from(info.state) {
            Ok(pb::ComponentState::Optimal) => NodeComponentState::Optimal,
            Ok(pb::ComponentState::Failed) => NodeComponentState::Failed {
                reason: info.failure_reason,
            },
            Ok(pb::ComponentState::Unspecified) | Err(_) => {
                return Err(NodeClientError::invalid_response(
                    &self.inner.address,
                    call,
                    format!(
                        "component {:?} has state {}, neither OPTIMAL nor FAILED",
                        info.component_id, info.state
                    ),
                ));
            }
        };
        self.inner
            .component_logs
            .insert(info.component_id.clone(), info.log_bytes);
        Ok(ComponentInfo {
            id: info.component_id,
            serial: info.serial,
            block_size: info.block_size,
            block_count: info.block_count,
            log_bytes: info.log_bytes,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::NodeErrorKind;

    #[test]
    fn the_epoch_only_goes_up() {
        let f = FencingContext::new("c", 3);
        assert_eq!(f.raise_epoch(2), 3);
        assert_eq!(f.epoch(), 3);
        assert_eq!(f.raise_epoch(7), 7);
        assert_eq!(f.to_proto().epoch, 7);
        assert_eq!(f.to_proto().cluster_id, "c");
    }

    #[tokio::test]
    async fn bad_addresses_and_settings_are_refused_precisely() {
        let f = FencingContext::new("c", 0);
        for bad in ["", "no port", "http://", "127.0.0.1"] {
            let e = NodeClient::new(bad, f.clone(), NodeClientConfig::default()).unwrap_err();
            assert!(
                matches!(e, NodeClientError::InvalidAddress { .. }),
                "{bad:?}: {e}"
            );
        }
        for config in [
            NodeClientConfig {
                connections: 0,
                ..NodeClientConfig::default()
            },
            NodeClientConfig {
                max_in_flight: 0,
                ..NodeClientConfig::default()
            },
            NodeClientConfig {
                io_deadline: Duration::ZERO,
                ..NodeClientConfig::default()
            },
        ] {
            let e = NodeClient::new("127.0.0.1:1", f.clone(), config).unwrap_err();
            assert!(matches!(e, NodeClientError::InvalidConfig(_)), "{e}");
        }
        let ok = NodeClient::new("127.0.0.1:1", f.clone(), NodeClientConfig::default()).unwrap();
        assert_eq!(ok.address(), "127.0.0.1:1");
        NodeClient::new("http://localhost:7100", f, NodeClientConfig::default()).unwrap();
    }

    /// The simulation's seams end to end: a storage node on memory media, served over
    /// connections handed in, reached through an injected connector.
    #[tokio::test]
    async fn a_client_reaches_an_in_memory_node_through_injected_transports() {
        use dagraid_tls::transport::{BoxedIo, Connector, Incoming};
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
        let incoming: Incoming = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|io| (Ok(BoxedIo::new(io)), rx))
        }));
        let media = dagraid_node::memory::MemoryMedia::new(7);
        let config = dagraid_node::NodeConfig {
            node_id: Some("n1".into()),
            ..dagraid_node::NodeConfig::new("/sim/n1")
        };
        let node = dagraid_node::start_with(
            config,
            dagraid_node::NodeSetup {
                media: Some(media.clone()),
                incoming: Some(incoming),
            },
        )
        .await
        .unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let served = tokio::spawn(node.serve(stop.clone().cancelled_owned()));
        let connector = Connector::new(move |uri: tonic::codegen::http::Uri| {
            let tx = tx.clone();
            async move {
                assert_eq!(uri.host(), Some("n1"));
                let (client, server) = tokio::io::duplex(1 << 20);
                tx.send(server)
                    .map_err(|_| std::io::Error::other("node gone"))?;
                Ok(BoxedIo::new(client))
            }
        });
        let config = NodeClientConfig::default().for_injected(connector);
        assert_eq!(config.keepalive_interval, INJECTED_KEEPALIVE_INTERVAL);
        let client = NodeClient::new("n1:7100", FencingContext::new("dagraid", 1), config).unwrap();
        assert_eq!(client.node_info().await.unwrap().node_id, "n1");
        let created = client.create_component("c1", 512, 16, 0).await.unwrap();
        assert_ne!(created.serial, 0);
        assert!(media.component("c1").is_some());
        stop.cancel();
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_node_that_is_not_there_is_unavailable_not_a_hang() {
        // A port nobody listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = NodeClient::new(
            &format!("127.0.0.1:{port}"),
            FencingContext::new("c", 0),
            NodeClientConfig::default(),
        )
        .unwrap();
        let e = client.node_info().await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::Unavailable), "{e}");
    }
}

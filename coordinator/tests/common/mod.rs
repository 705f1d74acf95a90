//! In-process clusters for the coordinator's tests: real storage nodes (`dagraid_node`) on
//! 127.0.0.1:0 temporary directories, and the coordinator itself, talking real gRPC.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dagraid_coordinator::Coordinator;
use dagraid_coordinator::config::{CoordinatorConfig, NodeSpec};
use dagraid_coordinator::node_client::{FencingContext, NodeClient, NodeClientConfig};
use dagraid_coordinator::remote::RemoteComponent;
use dagraid_core::io::ComponentIo;
use dagraid_core::layout::{ColumnSet, Geometry, Layout, RaidLevel};
use dagraid_core::testing::reference::{verify_columns, volume_from_columns};
use dagraid_proto::error_kind;
use dagraid_proto::volume::v1 as pb;
use pb::volume_service_client::VolumeServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// Deadline of one test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `test` under [`TEST_TIMEOUT`].
pub async fn with_timeout<T>(test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, test).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// One storage node served in this process.
pub struct Node {
    pub id: String,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Node {
    /// A node on a fresh directory, on a free port.
    pub async fn start(id: &str) -> Node {
        let mut node = Node {
            id: id.to_owned(),
            dir: tempfile::tempdir().unwrap(),
            addr: ([127, 0, 0, 1], 0).into(),
            stop: None,
            task: None,
        };
        node.serve(([127, 0, 0, 1], 0).into()).await;
        node
    }

    async fn serve(&mut self, listen: SocketAddr) {
        self.serve_with(listen, None).await;
    }

    async fn serve_with(&mut self, listen: SocketAddr, max_io_bytes: Option<u64>) {
        let mut config = dagraid_node::NodeConfig::new(self.dir.path().join("data"));
        config.listen = listen;
        if let Some(max) = max_io_bytes {
            config.max_io_bytes = max;
        }
        config.node_id = Some(self.id.clone());
        config.cluster_id = Some("dagraid".into());
        // Tests slow nodes down (DELAY) through the node's own fault injection.
        config.fault_injection = true;
        let started = dagraid_node::start(config).await.expect("node starts");
        self.addr = started.local_addr();
        let (tx, rx) = oneshot::channel();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            started
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .expect("node serves");
        }));
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (the socket closes) and waits until it has.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Serves again on the same directory and port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let addr = self.addr;
        self.serve(addr).await;
    }

    /// Serves again on the same directory and port, taking at most `max_io_bytes` per call.
    pub async fn restart_with_max_io(&mut self, max_io_bytes: u64) {
        self.stop().await;
        let addr = self.addr;
        self.serve_with(addr, Some(max_io_bytes)).await;
    }

    /// A client of this node (reads need no fencing).
    pub fn client(&self) -> NodeClient {
        NodeClient::new(
            &self.addr.to_string(),
            FencingContext::new("dagraid", 0),
            NodeClientConfig::default(),
        )
        .unwrap()
    }
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone, Default)]
pub struct Token(pub Option<String>);

impl Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(request)
    }
}

/// A volume API client.
pub type Client = VolumeServiceClient<InterceptedService<Channel, Token>>;

/// Nodes and a coordinator over them.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub data_dir: tempfile::TempDir,
    pub config: CoordinatorConfig,
    pub coordinator: Option<Coordinator>,
}

impl Cluster {
    /// `nodes` nodes and a coordinator checking them every 100 ms; `tune` adjusts the
    /// coordinator's configuration.
    pub async fn start(nodes: usize, tune: impl FnOnce(&mut CoordinatorConfig)) -> Cluster {
        init_logging();
        let mut started = Vec::new();
        for i in 1..=nodes {
            started.push(Node::start(&format!("n{i}")).await);
        }
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = CoordinatorConfig::new(data_dir.path().join("coordinator"));
        config.listen = ([127, 0, 0, 1], 0).into();
        config.health_interval = Duration::from_millis(100);
        config.gone_after = Duration::from_millis(300);
        config.nodes = started
            .iter()
            .map(|n| NodeSpec {
                id: n.id.clone(),
                address: n.addr().to_string(),
            })
            .collect();
        tune(&mut config);
        let mut cluster = Cluster {
            nodes: started,
            data_dir,
            config,
            coordinator: None,
        };
        cluster.start_coordinator().await;
        cluster
    }

    /// Starts the coordinator on the cluster's data directory.
    pub async fn start_coordinator(&mut self) {
        assert!(self.coordinator.is_none());
        self.coordinator = Some(
            Coordinator::start(self.config.clone())
                .await
                .expect("coordinator starts"),
        );
    }

    /// Stops the coordinator gracefully.
    pub async fn stop_coordinator(&mut self) {
        if let Some(c) = self.coordinator.take() {
            c.stop().await.expect("clean stop");
        }
    }

    /// The coordinator's address.
    pub fn addr(&self) -> SocketAddr {
        self.coordinator.as_ref().unwrap().local_addr()
    }

    /// A client carrying the configured token.
    pub async fn client(&self) -> Client {
        self.client_with(Token(self.config.token.clone())).await
    }

    /// A client carrying `token`.
    pub async fn client_with(&self, token: Token) -> Client {
        VolumeServiceClient::with_interceptor(channel(self.addr()).await, token)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// The node of id `id`.
    pub fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    /// The node of id `id`, mutably.
    pub fn node_mut(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }
}

/// A channel for large messages.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .max_frame_size(1 << 20)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .connect()
        .await
        .unwrap()
}

/// A create request.
pub fn create(name: &str, level: pb::RaidLevel, size: u64) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.into(),
        level: level as i32,
        size_bytes: size,
        ..Default::default()
    }
}

/// The layout a volume answer describes.
pub fn layout_of(v: &pb::Volume) -> Layout {
    let level = match pb::RaidLevel::try_from(v.level).unwrap() {
        pb::RaidLevel::Raid0 => RaidLevel::Raid0,
        pb::RaidLevel::Raid1 => RaidLevel::Raid1,
        pb::RaidLevel::Raid4 => RaidLevel::Raid4,
        pb::RaidLevel::Raid5 => RaidLevel::Raid5,
        pb::RaidLevel::Raid6 => RaidLevel::Raid6,
        pb::RaidLevel::Unspecified => panic!("no level"),
    };
    let bs = u64::from(v.block_size);
    let blocks = v.components[0].size_bytes / bs;
    Layout::new(
        level,
        Geometry::new(v.columns as usize, v.stripe_unit_bytes / bs, bs, blocks).unwrap(),
    )
    .unwrap()
}

/// Every column of `v` read straight from its node (failed columns: empty).
pub async fn read_columns(cluster: &Cluster, v: &pb::Volume) -> Vec<Vec<u8>> {
    let mut columns = Vec::new();
    for c in &v.components {
        if c.state != pb::ComponentState::Optimal as i32 {
            columns.push(vec![0; c.size_bytes as usize]);
            continue;
        }
        let remote = RemoteComponent::new(
            cluster.node(&c.node_id).client(),
            c.component_id.clone(),
            v.block_size,
            c.size_bytes / u64::from(v.block_size),
        )
        .unwrap();
        let mut bytes = Vec::with_capacity(c.size_bytes as usize);
        let per_call = (1u64 << 20) / u64::from(v.block_size);
        let mut block = 0;
        while block < remote.block_count() {
            let n = per_call.min(remote.block_count() - block);
            bytes.extend_from_slice(&remote.read(block, n as u32).await.unwrap());
            block += n;
        }
        columns.push(bytes);
    }
    columns
}

/// The column checker: reads every live column straight from the nodes, verifies parity, Q and
/// mirrors against the data, and (when `model` is given and nothing failed) that the data units
/// hold exactly the model's bytes.
pub async fn check_columns(cluster: &Cluster, v: &pb::Volume, model: Option<&[u8]>) {
    let layout = layout_of(v);
    let columns = read_columns(cluster, v).await;
    let skip: ColumnSet = v
        .components
        .iter()
        .filter(|c| c.state != pb::ComponentState::Optimal as i32)
        .map(|c| c.column as usize)
        .collect();
    if let Err(errors) = verify_columns(&layout, &columns, &skip) {
        panic!(
            "volume {}: {} redundancy mismatches, first: {:?}",
            v.name,
            errors.len(),
            &errors[..errors.len().min(5)]
        );
    }
    if let Some(model) = model
        && skip.is_empty()
    {
        assert!(
            volume_from_columns(&layout, &columns) == model,
            "volume {}: the columns do not hold the model's bytes",
            v.name
        );
    }
}

/// Storage node `id` as the coordinator's cluster info shows it.
pub async fn storage_node(client: &mut Client, id: &str) -> pb::StorageNodeInfo {
    let info = client
        .get_cluster_info(pb::GetClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    info.nodes
        .into_iter()
        .find(|n| n.node_id == id)
        .unwrap_or_else(|| panic!("the cluster info names no node {id}"))
}

/// The `dagraid-error-kind` of a status.
pub fn kind(status: &Status) -> String {
    status
        .metadata()
        .get(error_kind::HEADER)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Asserts a call failed with `code` and `kind`; returns the status.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug>(
    r: Result<T, Status>,
    code: Code,
    expected_kind: &str,
) -> Status {
    let status = r.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(kind(&status), expected_kind, "{status:?}");
    status
}

/// Random bytes from a seeded generator.
pub fn random_bytes(rng: &mut impl rand::Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Polls `f` until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Shared handle for tests that keep clients around.
pub type Shared<T> = Arc<T>;

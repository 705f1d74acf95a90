//! A local cluster of real processes: N `dagraid-node`s and one `dagraid-coordinator`, each on a
//! 127.0.0.1 port it picked, with fault knobs (kill -9, SIGSTOP, restart) and the column checker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use dagraid_core::layout::{ColumnSet, Geometry, Layout, RaidLevel};
use dagraid_core::testing::reference::verify_columns;
use dagraid_proto::storage::v1 as spb;
use dagraid_proto::volume::v1 as vpb;
use dagraid_tls::Role;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::node::{NodeOptions, NodeProcess};
use crate::process;

/// The line the coordinator prints on stdout once it serves.
pub const COORDINATOR_PREFIX: &str = "dagraid-coordinator listening on ";
/// Its second line with `--metrics-listen`.
pub const COORDINATOR_METRICS_PREFIX: &str = "dagraid-coordinator metrics on ";

/// Path of the `dagraid-coordinator` binary: `DAGRAID_COORDINATOR_BIN`, else next to the test
/// executable.
pub fn coordinator_binary() -> Result<PathBuf> {
    process::binary("dagraid-coordinator", "DAGRAID_COORDINATOR_BIN")
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Storage nodes.
    pub nodes: usize,
    /// The coordinator's bearer token (`--token`).
    pub token: Option<String>,
    /// `--node-deadline-ms` of the coordinator.
    pub node_deadline_ms: u64,
    /// `--health-interval-ms` of the coordinator.
    pub health_interval_ms: u64,
    /// Start the nodes with `--fault-injection`.
    pub fault_injection: bool,
    /// More flags for the coordinator (e.g. `--assembly-wait-ms`).
    pub coordinator_args: Vec<String>,
    /// Environment of every process (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub env: Vec<(String, String)>,
    /// Start every process with `--metrics-listen 127.0.0.1:0` (their URLs: `metrics_url()`).
    pub metrics: bool,
    /// `--down-out-delay-ms` of the coordinator (how long a column stays failed before it is
    /// rebuilt onto a spare); `None`: the coordinator's default.
    pub down_out_delay_ms: Option<u64>,
    /// `--rebuild-rate` of the coordinator (bytes per second; 0: no limit); `None`: its default.
    pub rebuild_rate: Option<u64>,
    /// Mutual TLS on every link, under a cluster CA of the test's own ([`Cluster::pki`]); on
    /// by default, so the suite runs the way a cluster is deployed. Off: every process is
    /// started with `--insecure`; a test that turns it off says why.
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 5,
            token: Some("test-token".to_owned()),
            node_deadline_ms: 2000,
            health_interval_ms: 500,
            fault_injection: false,
            coordinator_args: Vec::new(),
            env: Vec::new(),
            metrics: false,
            down_out_delay_ms: None,
            rebuild_rate: None,
            tls: true,
        }
    }
}

/// A running `dagraid-coordinator` on a temporary data directory; killed when dropped.
pub struct CoordinatorProcess {
    data_dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    addr: SocketAddr,
    metrics_url: Option<String>,
}

impl CoordinatorProcess {
    /// Starts a coordinator with `args` (besides `--listen` and `--data-dir`).
    pub async fn start(args: Vec<String>) -> Result<Self> {
        Self::start_with_env(args, Vec::new()).await
    }

    /// [`CoordinatorProcess::start`] with environment variables `env`. With
    /// `--metrics-listen` among `args`, its metrics line is read too ([`Self::metrics_url`]).
    pub async fn start_with_env(args: Vec<String>, env: Vec<(String, String)>) -> Result<Self> {
        let data_dir = tempfile::tempdir().context("creating the coordinator data directory")?;
        let mut c = CoordinatorProcess {
            data_dir,
            args,
            env,
            child: None,
            addr: ([127, 0, 0, 1], 0).into(),
            metrics_url: None,
        };
        c.spawn("127.0.0.1:0").await?;
        Ok(c)
    }

    /// Its `/metrics` URL (started with `--metrics-listen`).
    pub fn metrics_url(&self) -> Option<&str> {
        self.metrics_url.as_deref()
    }

    /// Its `/metrics` now, as Prometheus text.
    pub async fn scrape(&self) -> Result<String> {
        let url = self
            .metrics_url()
            .context("the coordinator was started without --metrics-listen")?;
        crate::process::http_get(url).await
    }

    async fn spawn(&mut self, listen: &str) -> Result<()> {
        let mut cmd = Command::new(coordinator_binary()?);
        cmd.arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = self.data_dir.path().join("coordinator.log");
        let metrics = self.args.iter().any(|a| a == "--metrics-listen");
        let (child, addr, metrics_url) = process::spawn_listening_with(
            cmd,
            "dagraid-coordinator",
            COORDINATOR_PREFIX,
            metrics.then_some(COORDINATOR_METRICS_PREFIX),
            &log,
        )
        .await?;
        self.child = Some(child);
        self.addr = addr;
        self.metrics_url = metrics_url;
        Ok(())
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything it logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("coordinator.log")).unwrap_or_default()
    }

    /// kill -9.
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill -9")?;
        }
        Ok(())
    }

    /// SIGTERM and wait.
    pub async fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let child = self.child.take().context("coordinator is not running")?;
        process::terminate(child).await
    }

    /// SIGHUP: the coordinator reads its TLS material and token file again.
    pub async fn hangup(&self) -> Result<()> {
        process::signal(self.child.as_ref(), "-HUP").await
    }

    /// Sets (`Some`) or removes (`None`) an environment variable of the next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v.to_owned()));
        }
    }

    /// Waits for the process to exit by itself (a crash, an abort), for at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("coordinator is not running")?;
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .with_context(|| format!("the coordinator did not exit within {timeout:?}"))?
            .context("waiting for the coordinator")?;
        self.child = None;
        Ok(status)
    }

    /// Starts it again on the same data directory and port (after kill -9 if it runs).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9().await?;
        let listen = self.addr.to_string();
        self.spawn(&listen).await
    }
}

/// Storage nodes and a coordinator.
pub struct Cluster {
    /// The storage nodes, `node1` first.
    pub nodes: Vec<NodeProcess>,
    /// The coordinator.
    pub coordinator: CoordinatorProcess,
    /// The options it was started with.
    pub options: ClusterOptions,
    /// The cluster CA, with [`ClusterOptions::tls`].
    pub pki: Option<crate::tls::TestPki>,
}

impl Cluster {
    /// Starts `options.nodes` storage nodes (ids `node1`, `node2`, ...; cluster id `dagraid`)
    /// and a coordinator that knows them.
    pub async fn start(options: ClusterOptions) -> Result<Cluster> {
        let pki = if options.tls {
            Some(crate::tls::TestPki::new()?)
        } else {
            None
        };
        let mut nodes = Vec::new();
        for i in 1..=options.nodes {
            let id = format!("node{i}");
            let tls = match &pki {
                Some(pki) => Some(crate::node::NodeTls {
                    node: pki.files(&Role::Node(id.clone()))?,
                    caller: pki.files(&Role::Coordinator)?,
                }),
                None => None,
            };
            nodes.push(
                NodeProcess::start(NodeOptions {
                    node_id: Some(id),
                    cluster_id: Some("dagraid".to_owned()),
                    fault_injection: options.fault_injection,
                    metrics: options.metrics,
                    env: options.env.clone(),
                    tls,
                    ..NodeOptions::default()
                })
                .await?,
            );
        }
        let mut args = vec![
            "--cluster-id".to_owned(),
            "dagraid".to_owned(),
            "--node-deadline-ms".to_owned(),
            options.node_deadline_ms.to_string(),
            "--health-interval-ms".to_owned(),
            options.health_interval_ms.to_string(),
        ];
        for (i, n) in nodes.iter().enumerate() {
            args.push("--node".to_owned());
            args.push(format!("node{}={}", i + 1, n.addr()));
        }
        if let Some(t) = &options.token {
            args.push("--token".to_owned());
            args.push(t.clone());
        }
        if options.metrics {
            args.push("--metrics-listen".to_owned());
            args.push("127.0.0.1:0".to_owned());
        }
        if let Some(ms) = options.down_out_delay_ms {
            args.push("--down-out-delay-ms".to_owned());
            args.push(ms.to_string());
        }
        if let Some(rate) = options.rebuild_rate {
            args.push("--rebuild-rate".to_owned());
            args.push(rate.to_string());
        }
        match &pki {
            Some(pki) => args.extend(pki.server_args(&Role::Coordinator)?),
            None => args.push("--insecure".to_owned()),
        }
        args.extend(options.coordinator_args.iter().cloned());
        let coordinator = CoordinatorProcess::start_with_env(args, options.env.clone()).await?;
        Ok(Cluster {
            nodes,
            coordinator,
            options,
            pki,
        })
    }

    /// The coordinator's URL (`https://` with TLS).
    pub fn url(&self) -> String {
        match &self.pki {
            Some(_) => format!("https://{}", self.coordinator.addr()),
            None => self.coordinator.url(),
        }
    }

    /// What a client of the volume API presents with [`ClusterOptions::tls`]: the CA and the
    /// client certificate.
    pub fn client_tls(&self) -> Result<Option<dagraid_client::TlsFiles>> {
        self.pki
            .as_ref()
            .map(|pki| pki.files(&Role::Client))
            .transpose()
    }

    /// The SDK options that reach this cluster's volume API: its token and, with TLS, the CA
    /// and the client certificate. Tests add their timeouts and retries on top.
    pub fn client_options(&self) -> dagraid_client::ClientOptions {
        dagraid_client::ClientOptions {
            token: self.options.token.clone(),
            tls: self.client_tls().expect("the cluster's client certificate"),
            ..dagraid_client::ClientOptions::default()
        }
    }

    /// The `dagraid` CLI's flags that reach this cluster: `--coordinator URL --token T` and,
    /// with TLS, `--tls-ca`, `--tls-cert` and `--tls-key` of the client certificate.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec!["--coordinator".to_owned(), self.url()];
        if let Some(token) = &self.options.token {
            args.extend(["--token".to_owned(), token.clone()]);
        }
        if let Some(files) = self.client_tls().expect("the cluster's client certificate") {
            args.extend(crate::tls::server_args(&files));
        }
        args
    }

    /// A raw volume-API client (generated code) carrying the cluster's token (and, with TLS,
    /// the client certificate).
    pub async fn volume_client(&self) -> Result<RawVolumeClient> {
        self.volume_client_presenting(self.client_tls()?).await
    }

    /// A raw volume-API client that presents no client certificate (with TLS: the CA only),
    /// so that the token alone decides what it may do.
    pub async fn volume_client_without_certificate(&self) -> Result<RawVolumeClient> {
        let ca_only = self.pki.as_ref().map(|pki| pki.ca_only());
        self.volume_client_presenting(ca_only).await
    }

    async fn volume_client_presenting(
        &self,
        tls: Option<dagraid_client::TlsFiles>,
    ) -> Result<RawVolumeClient> {
        let channel = match tls {
            Some(files) => {
                crate::tls::channel(self.coordinator.addr(), &files, &Role::Coordinator).await?
            }
            None => crate::node::channel(self.coordinator.addr())
                .await
                .context("connecting to the coordinator")?,
        };
        Ok(RawVolumeClient {
            inner: vpb::volume_service_client::VolumeServiceClient::new(channel)
                .max_decoding_message_size(crate::node::CLIENT_MESSAGE_LIMIT)
                .max_encoding_message_size(crate::node::CLIENT_MESSAGE_LIMIT),
            token: self.options.token.clone(),
        })
    }

    /// Cuts the power of `nodes[index]` and starts it again on its data directory and address
    /// ([`NodeProcess::power_cut`]; the cluster must run with
    /// [`ClusterOptions::fault_injection`]). The coordinator sees what it sees of any node that
    /// dies mid-call and comes back.
    pub async fn power_cut(&mut self, index: usize, seed: u64) -> Result<()> {
        let node = self
            .nodes
            .get_mut(index)
            .ok_or_else(|| anyhow!("no node at index {index}"))?;
        node.power_cut(seed).await
    }

    /// The node whose id is `node_id`, mutable (to kill or restart it).
    pub fn node_by_id_mut(&mut self, node_id: &str) -> Option<&mut NodeProcess> {
        let i: usize = node_id.strip_prefix("node")?.parse().ok()?;
        self.nodes.get_mut(i.checked_sub(1)?)
    }

    /// The node whose id is `node_id`.
    pub fn node_by_id(&self, node_id: &str) -> Option<&NodeProcess> {
        let i: usize = node_id.strip_prefix("node")?.parse().ok()?;
        self.nodes.get(i.checked_sub(1)?)
    }

    /// The column checker: reads every live column of `volume` straight from its storage node
    /// and checks P, Q and mirrors against the data. Columns the coordinator reports failed are
    /// skipped, and so are `also_skip` (nodes known dead). Returns the columns' contents.
    pub async fn check_columns(&self, volume: &str, also_skip: &[usize]) -> Result<Vec<Vec<u8>>> {
        let v = self.volume_client().await?.get_volume(volume).await?;
        let layout = layout_of(&v)?;
        let mut skip: ColumnSet = also_skip.iter().copied().collect();
        let mut cols = Vec::with_capacity(v.components.len());
        for c in &v.components {
            let failed = c.state() != vpb::ComponentState::Optimal;
            if failed {
                skip.insert(c.column as usize);
            }
            if skip.contains(c.column as usize) {
                cols.push(vec![
                    0u8;
                    layout.geometry().used_bytes_per_column() as usize
                ]);
                continue;
            }
            let node = self
                .node_by_id(&c.node_id)
                .ok_or_else(|| anyhow!("column {} is on unknown node {}", c.column, c.node_id))?;
            cols.push(
                read_component(node, &c.component_id, &layout)
                    .await
                    .with_context(|| {
                        format!(
                            "reading column {} ({}) of {volume}",
                            c.column, c.component_id
                        )
                    })?,
            );
        }
        if let Err(errors) = verify_columns(&layout, &cols, &skip) {
            bail!(
                "volume {volume}: {} inconsistent units, first: {:?}",
                errors.len(),
                &errors[..errors.len().min(5)]
            );
        }
        Ok(cols)
    }
}

impl Cluster {
    /// Reads the used part of column `column` of `volume` straight from its node, whatever the
    /// coordinator says of its state (a failed column's stale contents, say).
    pub async fn read_column(&self, volume: &str, column: usize) -> Result<Vec<u8>> {
        let v = self.volume_client().await?.get_volume(volume).await?;
        let layout = layout_of(&v)?;
        let c = v
            .components
            .get(column)
            .ok_or_else(|| anyhow!("volume {volume} has no column {column}"))?;
        let node = self
            .node_by_id(&c.node_id)
            .ok_or_else(|| anyhow!("column {column} is on unknown node {}", c.node_id))?;
        read_component(node, &c.component_id, &layout).await
    }
}

/// The layout a volume description implies.
pub fn layout_of(v: &vpb::Volume) -> Result<Layout> {
    let level = match v.level() {
        vpb::RaidLevel::Raid0 => RaidLevel::Raid0,
        vpb::RaidLevel::Raid1 => RaidLevel::Raid1,
        vpb::RaidLevel::Raid4 => RaidLevel::Raid4,
        vpb::RaidLevel::Raid5 => RaidLevel::Raid5,
        vpb::RaidLevel::Raid6 => RaidLevel::Raid6,
        vpb::RaidLevel::Unspecified => bail!("volume {} has no level", v.name),
    };
    let bs = u64::from(v.block_size);
    let per_column = v
        .components
        .first()
        .map(|c| c.size_bytes / bs)
        .ok_or_else(|| anyhow!("volume {} has no components", v.name))?;
    let layout = Layout::new(
        level,
        Geometry::new(v.columns as usize, v.stripe_unit_bytes / bs, bs, per_column)?,
    )?;
    Ok(layout)
}

/// Reads the used part of a component, 4 MiB at a time, straight from its node.
async fn read_component(node: &NodeProcess, id: &str, layout: &Layout) -> Result<Vec<u8>> {
    let mut client = node.client().await?;
    let bs = layout.geometry().block_size();
    let blocks = layout.geometry().used_blocks_per_column();
    let step = ((4 << 20) / bs).max(1);
    let mut out = Vec::with_capacity((blocks * bs) as usize);
    let mut b = 0;
    while b < blocks {
        let n = step.min(blocks - b);
        let r = client
            .read_blocks(spb::ReadBlocksRequest {
                fencing: None,
                component_id: id.to_owned(),
                start_block: b,
                block_count: n as u32,
            })
            .await
            .with_context(|| format!("ReadBlocks {id} {b}+{n}"))?;
        out.extend_from_slice(&r.into_inner().data);
        b += n;
    }
    Ok(out)
}

/// The generated volume client with the token attached to every call.
pub struct RawVolumeClient {
    /// The generated client.
    pub inner: vpb::volume_service_client::VolumeServiceClient<Channel>,
    /// The token sent, if any.
    pub token: Option<String>,
}

impl RawVolumeClient {
    /// `msg` as a request carrying the token.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    /// GetVolume.
    pub async fn get_volume(&mut self, name: &str) -> Result<vpb::Volume> {
        let req = self.request(vpb::GetVolumeRequest {
            name: name.to_owned(),
        });
        Ok(self.inner.get_volume(req).await?.into_inner())
    }
}

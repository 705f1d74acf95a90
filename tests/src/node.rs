//! A real `dagraid-node` process for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dagraid_proto::storage::v1 as pb;
use dagraid_proto::storage::v1::storage_node_client::StorageNodeClient;
use tokio::process::{Child, Command};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// The line the node prints on stdout once it serves.
pub const LISTENING_PREFIX: &str = "dagraid-node listening on ";
/// Its second line with `--metrics-listen`.
pub const METRICS_PREFIX: &str = "dagraid-node metrics on ";
pub use crate::process::START_TIMEOUT;
/// Client-side message limit: above any node's payload limit used in tests.
pub const CLIENT_MESSAGE_LIMIT: usize = 256 << 20;

/// Path of the `dagraid-node` binary: `DAGRAID_NODE_BIN`, else next to the test executable.
pub fn node_binary() -> Result<PathBuf> {
    crate::process::binary("dagraid-node", "DAGRAID_NODE_BIN")
}

/// How to start a node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `--node-id`.
    pub node_id: Option<String>,
    /// `--cluster-id`.
    pub cluster_id: Option<String>,
    /// `--max-io-bytes`.
    pub max_io_bytes: Option<u64>,
    /// `--fault-injection`.
    pub fault_injection: bool,
    /// `--metrics-listen 127.0.0.1:0`, and read the metrics URL from the second line.
    pub metrics: bool,
    /// Environment variables (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub env: Vec<(String, String)>,
    /// Serve TLS (and answer the coordinator only); `None`: plaintext (`--insecure`).
    pub tls: Option<NodeTls>,
}

/// A node's TLS: its own certificate, and what the test calls it with.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// The node's certificate (naming `ID.node.dagraid`), key and CA.
    pub node: dagraid_client::TlsFiles,
    /// What [`NodeProcess::client`] presents: the coordinator's certificate (the tests read
    /// components as the coordinator would).
    pub caller: dagraid_client::TlsFiles,
}

/// A running `dagraid-node` on a temporary data directory; killed when dropped.
pub struct NodeProcess {
    options: NodeOptions,
    data_dir: tempfile::TempDir,
    log_path: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    metrics_url: Option<String>,
}

impl NodeProcess {
    /// Starts a node on `127.0.0.1:0` with a fresh data directory.
    pub async fn start(options: NodeOptions) -> Result<Self> {
        let data_dir = tempfile::tempdir().context("creating the data directory")?;
        let log_path = data_dir.path().join("node.log");
        let mut node = Self {
            options,
            data_dir,
            log_path,
            child: None,
            addr: ([127, 0, 0, 1], 0).into(),
            metrics_url: None,
        };
        node.spawn("127.0.0.1:0").await?;
        Ok(node)
    }

    /// Starts a node with default options.
    pub async fn start_default() -> Result<Self> {
        Self::start(NodeOptions::default()).await
    }

    async fn spawn(&mut self, listen: &str) -> Result<()> {
        let data = self.data_dir.path().join("data");
        let mut cmd = Command::new(node_binary()?);
        cmd.arg("--listen").arg(listen).arg("--data-dir").arg(&data);
        if let Some(id) = &self.options.node_id {
            cmd.arg("--node-id").arg(id);
        }
        if let Some(id) = &self.options.cluster_id {
            cmd.arg("--cluster-id").arg(id);
        }
        if let Some(max) = self.options.max_io_bytes {
            cmd.arg("--max-io-bytes").arg(max.to_string());
        }
        if self.options.fault_injection {
            cmd.arg("--fault-injection");
        }
        if self.options.metrics {
            cmd.arg("--metrics-listen").arg("127.0.0.1:0");
        }
        match &self.options.tls {
            Some(tls) => {
                cmd.args(crate::tls::server_args(&tls.node));
            }
            None => {
                cmd.arg("--insecure");
            }
        }
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        let (child, addr, metrics_url) = crate::process::spawn_listening_with(
            cmd,
            "dagraid-node",
            LISTENING_PREFIX,
            self.options.metrics.then_some(METRICS_PREFIX),
            &self.log_path,
        )
        .await?;
        self.child = Some(child);
        self.addr = addr;
        self.metrics_url = metrics_url;
        Ok(())
    }

    /// Its `/metrics` URL (started with [`NodeOptions::metrics`]).
    pub fn metrics_url(&self) -> Option<&str> {
        self.metrics_url.as_deref()
    }

    /// Its `/metrics` now, as Prometheus text.
    pub async fn scrape(&self) -> Result<String> {
        let url = self
            .metrics_url()
            .context("the node was started without --metrics-listen")?;
        crate::process::http_get(url).await
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// Path of component `id`'s file.
    pub fn component_file(&self, id: &str) -> PathBuf {
        self.data_dir().join("components").join(format!("{id}.dgc"))
    }

    /// Empties the data directory of a stopped node (after [`NodeProcess::kill9`] or
    /// [`NodeProcess::terminate`]): started again, it is a node whose disk was replaced, with
    /// no component. Its log is kept.
    pub fn wipe_data_dir(&self) -> Result<()> {
        if self.child.is_some() {
            bail!("the node still runs: stop it before wiping its data directory");
        }
        let data = self.data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {}", data.display()))?;
        }
        Ok(())
    }

    /// Corrupts block `block` of component `id` in its file on disk (one data byte flipped,
    /// its checksum left as it is; `block_size` is the component's block size, data region at
    /// 4096, docs/STORAGE-NODE.md), synced: the node answers DATA_LOSS for that block, and only
    /// that one, until it is written again. Without fault injection the node reads the file
    /// itself, so the node may run meanwhile.
    pub fn corrupt_block(&self, id: &str, block_size: u64, block: u64) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom, Write};
        if self.options.fault_injection {
            bail!("with --fault-injection the node reads through its volatile cache, not the file");
        }
        let path = self.component_file(id);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let at = 4096 + block * block_size + block_size / 2;
        let mut byte = [0u8; 1];
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut byte)?;
        byte[0] ^= 0x5a;
        file.seek(SeekFrom::Start(at))?;
        file.write_all(&byte)?;
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
        Ok(())
    }

    /// Everything the node logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; `Err` after `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_log_count(needle, 1, timeout).await
    }

    /// Waits until the log contains `needle` at least `count` times; `Err` after `timeout`.
    pub async fn wait_for_log_count(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return Ok(log);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{needle:?} not logged within {timeout:?}; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new connection (its own HTTP/2 connection) with the node.
    pub async fn client(&self) -> Result<StorageNodeClient<Channel>> {
        Ok(StorageNodeClient::new(self.channel().await?)
            .max_decoding_message_size(CLIENT_MESSAGE_LIMIT)
            .max_encoding_message_size(CLIENT_MESSAGE_LIMIT))
    }

    /// A raw channel, for other services on the node (health); over TLS with the caller's
    /// certificate when the node serves TLS.
    pub async fn channel(&self) -> Result<Channel> {
        match (&self.options.tls, &self.options.node_id) {
            (Some(tls), Some(id)) => {
                crate::tls::channel(self.addr, &tls.caller, &dagraid_tls::Role::Node(id.clone()))
                    .await
            }
            _ => channel(self.addr).await,
        }
    }

    /// Kills the process with SIGKILL (no shutdown at all) and waits for it.
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("kill -9")?;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        let child = self.child.take().context("node is not running")?;
        crate::process::terminate(child).await
    }

    /// Starts the node again on the same data directory (a new port), after a kill or SIGTERM.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.kill9().await?;
        }
        self.spawn("127.0.0.1:0").await
    }

    /// Starts the node again on the same data directory and the same address, so that clients
    /// holding the old address find it again.
    pub async fn restart_on_same_port(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.kill9().await?;
        }
        let listen = self.addr.to_string();
        self.spawn(&listen).await
    }

    /// Cuts the node's power and starts it again on the same data directory and address (see
    /// [`NodeProcess::power_off`]): it comes back with exactly what it had synced, plus the
    /// torn sectors of the sync that was in flight. Needs [`NodeOptions::fault_injection`].
    pub async fn power_cut(&mut self, seed: u64) -> Result<()> {
        self.power_off(seed).await?;
        self.restart_on_same_port().await
    }

    /// Cuts the node's power and leaves it down (start it again with
    /// [`NodeProcess::restart_on_same_port`] or [`NodeProcess::restart`]): InjectFault
    /// `POWER_CUT` discards every write not yet synced on every component, tears the writes of
    /// the syncs in flight (drawn from `seed`), and the process exits at once with
    /// [`dagraid_node::POWER_CUT_EXIT_CODE`]. Needs [`NodeOptions::fault_injection`].
    pub async fn power_off(&mut self, seed: u64) -> Result<()> {
        let mut client = self.client().await?;
        let answer = client
            .inject_fault(pb::InjectFaultRequest {
                kind: pb::FaultKind::PowerCut as i32,
                seed,
                ..Default::default()
            })
            .await;
        if let Err(status) = &answer
            && matches!(
                status.code(),
                Code::FailedPrecondition | Code::InvalidArgument
            )
        {
            bail!("power cut refused: {status:?}");
        }
        // The process exits right after the cut, whether or not the answer made it out first.
        let child = self.child.as_mut().context("node is not running")?;
        let status = tokio::time::timeout(START_TIMEOUT, child.wait())
            .await
            .map_err(|_| {
                anyhow::anyhow!("the node did not exit after a power cut (answer: {answer:?})")
            })?
            .context("waiting for the node")?;
        self.child = None;
        if status.code() != Some(dagraid_node::POWER_CUT_EXIT_CODE) {
            bail!(
                "the node exited with {status} after a power cut, not {}; log:\n{}",
                dagraid_node::POWER_CUT_EXIT_CODE,
                self.log()
            );
        }
        Ok(())
    }

    /// Holds the syncs of component `id` after they wrote their data into the file and before
    /// their fdatasync (InjectFault `HOLD_SYNCS`), until its faults are cleared or the power is
    /// cut: a power cut then surely tears the writes they carry. Needs
    /// [`NodeOptions::fault_injection`].
    pub async fn hold_syncs(&self, id: &str) -> Result<()> {
        self.client()
            .await?
            .inject_fault(pb::InjectFaultRequest {
                component_id: id.to_owned(),
                kind: pb::FaultKind::HoldSyncs as i32,
                ..Default::default()
            })
            .await
            .with_context(|| format!("holding the syncs of {id}"))?;
        Ok(())
    }

    /// Stops the process with SIGSTOP: it keeps its sockets but answers nothing.
    pub async fn pause(&self) -> Result<()> {
        self.signal("-STOP").await
    }

    /// SIGHUP: the node reads its TLS material again.
    pub async fn hangup(&self) -> Result<()> {
        self.signal("-HUP").await
    }

    /// Resumes a process stopped by [`NodeProcess::pause`] (SIGCONT).
    pub async fn resume(&self) -> Result<()> {
        self.signal("-CONT").await
    }

    async fn signal(&self, signal: &str) -> Result<()> {
        crate::process::signal(self.child.as_ref(), signal).await
    }
}

/// An endpoint configured for 1 MiB messages: 1 MiB frames, 8/32 MiB windows, no Nagle, a
/// 10 s connect timeout (plaintext here; [`crate::tls::channel`] adds TLS to it).
pub fn endpoint(addr: SocketAddr) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .max_frame_size(dagraid_node::HTTP2_MAX_FRAME_SIZE)
        .initial_stream_window_size(dagraid_node::HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(dagraid_node::HTTP2_CONNECTION_WINDOW))
}

/// A plaintext channel over [`endpoint`].
pub async fn channel(addr: SocketAddr) -> Result<Channel> {
    endpoint(addr)?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// A storage-node client over a new connection, with large message limits.
pub async fn connect(addr: SocketAddr) -> Result<StorageNodeClient<Channel>> {
    Ok(StorageNodeClient::new(channel(addr).await?)
        .max_decoding_message_size(CLIENT_MESSAGE_LIMIT)
        .max_encoding_message_size(CLIENT_MESSAGE_LIMIT))
}

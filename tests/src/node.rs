//! A real `dagraid-node` process for tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use dagraid_proto::storage::v1::storage_node_client::StorageNodeClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

/// The line the node prints on stdout once it serves.
pub const LISTENING_PREFIX: &str = "dagraid-node listening on ";
/// How long a node may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Client-side message limit: above any node's payload limit used in tests.
pub const CLIENT_MESSAGE_LIMIT: usize = 256 << 20;

/// Path of the `dagraid-node` binary: `DAGRAID_NODE_BIN`, else next to the test executable
/// (`target/<profile>/dagraid-node` for a test in `target/<profile>/deps/`).
pub fn node_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("DAGRAID_NODE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("test executable {} has no grandparent", exe.display()))?;
    let bin = dir.join(format!("dagraid-node{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        bail!(
            "{} not found: build it first (`cargo build -p dagraid-node`, or run `cargo test --workspace`), or set DAGRAID_NODE_BIN",
            bin.display()
        );
    }
    Ok(bin)
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
}

/// A running `dagraid-node` on a temporary data directory; killed when dropped.
pub struct NodeProcess {
    options: NodeOptions,
    data_dir: tempfile::TempDir,
    log_path: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("opening the node log")?;
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning dagraid-node")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let addr = match line {
            Ok(Ok(Some(line))) => line
                .strip_prefix(LISTENING_PREFIX)
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                .ok_or_else(|| anyhow!("unexpected first line from dagraid-node: {line:?}")),
            Ok(Ok(None)) => {
                let status = child.wait().await?;
                Err(anyhow!("dagraid-node exited ({status}) before listening"))
            }
            Ok(Err(err)) => Err(anyhow!("reading dagraid-node stdout: {err}")),
            Err(_) => Err(anyhow!(
                "dagraid-node did not listen within {START_TIMEOUT:?}"
            )),
        };
        let addr = addr.map_err(|err| anyhow!("{err}; log:\n{}", self.log()))?;
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        self.addr = addr;
        Ok(())
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// Path of component `id`'s file.
    pub fn component_file(&self, id: &str) -> PathBuf {
        self.data_dir().join("components").join(format!("{id}.dgc"))
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
        connect(self.addr).await
    }

    /// A raw channel, for other services on the node (health).
    pub async fn channel(&self) -> Result<Channel> {
        channel(self.addr).await
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
        let mut child = self.child.take().context("node is not running")?;
        let pid = child.id().context("node already exited")?;
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed: {status}");
        }
        Ok(tokio::time::timeout(START_TIMEOUT, child.wait())
            .await
            .context("node did not stop after SIGTERM")??)
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

    /// Stops the process with SIGSTOP: it keeps its sockets but answers nothing.
    pub async fn pause(&self) -> Result<()> {
        self.signal("-STOP").await
    }

    /// Resumes a process stopped by [`NodeProcess::pause`] (SIGCONT).
    pub async fn resume(&self) -> Result<()> {
        self.signal("-CONT").await
    }

    async fn signal(&self, signal: &str) -> Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("node is not running")?;
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .await
            .with_context(|| format!("running kill {signal}"))?;
        if !status.success() {
            bail!("kill {signal} {pid} failed: {status}");
        }
        Ok(())
    }
}

/// A channel configured for 1 MiB messages: 1 MiB frames, 8/32 MiB windows, no Nagle.
pub async fn channel(addr: SocketAddr) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    endpoint
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .max_frame_size(dagraid_node::HTTP2_MAX_FRAME_SIZE)
        .initial_stream_window_size(dagraid_node::HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(dagraid_node::HTTP2_CONNECTION_WINDOW)
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

//! Node configuration: what `dagraid-node` (and `dagraid node`) reads from its flags ([`Args`])
//! and optional TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::NodeError;

/// Default cluster id of a node started for the first time.
pub const DEFAULT_CLUSTER_ID: &str = "dagraid";
/// Default limit of one read or write payload: 16 MiB.
pub const DEFAULT_MAX_IO_BYTES: u64 = 16 << 20;
/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7100";

/// Everything a storage node needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Address to serve gRPC on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory holding the node state and the component files.
    pub data_dir: PathBuf,
    /// Node id; `None` keeps the stored one, or generates one at the first start.
    pub node_id: Option<String>,
    /// Cluster id; `None` keeps the stored one, or uses [`DEFAULT_CLUSTER_ID`] at the first start.
    pub cluster_id: Option<String>,
    /// Largest data payload of one WriteBlocks, or answer of one ReadBlocks.
    pub max_io_bytes: u64,
    /// Whether InjectFault is accepted; also puts every component behind a volatile write cache
    /// (power cuts, [`crate::volatile_cache`]).
    pub fault_injection: bool,
    /// Where to serve Prometheus metrics (`/metrics`); `None`: not served. Port 0 picks one.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS: the node's certificate (naming `ID.node.dagraid`), key and the cluster CA; the
    /// storage API then answers only the coordinator (docs/SECURITY.md). `None`: plaintext.
    pub tls: Option<dagraid_tls::TlsFiles>,
}

/// The optional TOML configuration file; every key is optional and flags override it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`NodeConfig::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`NodeConfig::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`NodeConfig::node_id`].
    pub node_id: Option<String>,
    /// See [`NodeConfig::cluster_id`].
    pub cluster_id: Option<String>,
    /// See [`NodeConfig::max_io_bytes`].
    pub max_io_bytes: Option<u64>,
    /// See [`NodeConfig::fault_injection`].
    pub fault_injection: Option<bool>,
    /// See [`NodeConfig::metrics_listen`].
    pub metrics_listen: Option<SocketAddr>,
}

impl FileConfig {
    /// Parses a TOML configuration; the error is one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|err| {
            err.to_string()
                .lines()
                .map(str::trim)
                // Drop the source excerpt ("1 | key = ...", "|  ^^^").
                .filter(|line| {
                    let rest = line.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
                    !rest.is_empty() && !rest.starts_with('|') && !rest.starts_with('^')
                })
                .collect::<Vec<_>>()
                .join(": ")
        })
    }
}

impl NodeConfig {
    /// A configuration with defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: data_dir.into(),
            node_id: None,
            cluster_id: None,
            max_io_bytes: DEFAULT_MAX_IO_BYTES,
            fault_injection: false,
            metrics_listen: None,
            tls: None,
        }
    }

    /// Refuses values the node cannot run with.
    pub fn validate(&self) -> Result<(), NodeError> {
        if self.max_io_bytes < u64::from(crate::layout::MIN_BLOCK_SIZE) {
            return Err(NodeError::Config(format!(
                "max-io-bytes must be at least {} (one block)",
                crate::layout::MIN_BLOCK_SIZE
            )));
        }
        // Leaves room for the gRPC message overhead under tonic's u32-sized limit.
        if self.max_io_bytes > 1 << 30 {
            return Err(NodeError::Config(
                "max-io-bytes must be at most 1 GiB".into(),
            ));
        }
        for (what, id) in [("node-id", &self.node_id), ("cluster-id", &self.cluster_id)] {
            if let Some(id) = id
                && (id.is_empty() || id.len() > 128 || id.chars().any(char::is_control))
            {
                return Err(NodeError::Config(format!(
                    "{what} must be 1 to 128 printable characters"
                )));
            }
        }
        Ok(())
    }
}

/// The `dagraid-node` command line, shared by the `dagraid-node` binary and `dagraid node` (the
/// `dagraid` tool runs a storage node in its own process with exactly these flags).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dagraid-node",
    version,
    about = "A dagraid storage node: serves checksummed component blocks over gRPC."
)]
pub struct Args {
    /// TOML file with any of the options below (kebab-case keys); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:7100].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the node state and component files (created if missing).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node id, fixed at the first start [default: generated].
    #[arg(long)]
    pub node_id: Option<String>,
    /// Cluster id, fixed at the first start [default: dagraid].
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Largest payload of one read or write, in bytes [default: 16777216].
    #[arg(long)]
    pub max_io_bytes: Option<u64>,
    /// Accept InjectFault calls, and keep unsynced writes in a volatile write cache so that an
    /// injected power cut loses them (tests only).
    #[arg(long)]
    pub fault_injection: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free port) [default: off].
    #[arg(long, value_name = "ADDR", env = "DAGRAID_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// TLS (docs/SECURITY.md): with it the storage API answers only a peer whose certificate
    /// names the coordinator.
    #[command(flatten)]
    pub tls: dagraid_tls::TlsArgs,
    /// Trace export (the standard `OTEL_*` variables and their flags).
    #[command(flatten)]
    pub telemetry: dagraid_telemetry::TelemetryArgs,
}

impl Args {
    /// The flags over the optional TOML file over the defaults. `--data-dir` (or `data-dir` in
    /// the file) is required; every error is one line naming the bad value.
    pub fn to_config(&self) -> Result<NodeConfig, NodeError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    NodeError::Config(format!("cannot read {}: {e}", path.display()))
                })?;
                FileConfig::parse(&text)
                    .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let data_dir = self.data_dir.clone().or(file.data_dir).ok_or_else(|| {
            NodeError::Config("--data-dir is required (or data-dir in the config file)".into())
        })?;
        Ok(NodeConfig {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            data_dir,
            node_id: self.node_id.clone().or(file.node_id),
            cluster_id: self.cluster_id.clone().or(file.cluster_id),
            max_io_bytes: self
                .max_io_bytes
                .or(file.max_io_bytes)
                .unwrap_or(DEFAULT_MAX_IO_BYTES),
            fault_injection: self.fault_injection || file.fault_injection.unwrap_or(false),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            tls: self
                .tls
                .server_files()
                .map_err(|e| NodeError::Config(e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_config_parses_kebab_case_and_refuses_unknown_keys() {
        let cfg = FileConfig::parse(
            "listen = \"127.0.0.1:9\"\ndata-dir = \"/d\"\nmax-io-bytes = 4096\nfault-injection = true\n",
        )
        .unwrap();
        assert_eq!(cfg.listen, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(cfg.max_io_bytes, Some(4096));
        assert_eq!(cfg.fault_injection, Some(true));
        let err = FileConfig::parse("datadir = \"/d\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("datadir"), "{err}");
    }

    #[test]
    fn validation_refuses_tiny_limits() {
        let mut cfg = NodeConfig::new("/d");
        cfg.validate().unwrap();
        cfg.max_io_bytes = 100;
        assert!(cfg.validate().is_err());
    }
}

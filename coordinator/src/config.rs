//! Coordinator configuration: the `dagraid-coordinator` flags, the optional TOML file and the
//! environment, merged into one validated [`CoordinatorConfig`].
//!
//! Precedence: a flag (or its environment variable) overrides the file, which overrides the
//! default. Storage nodes given by flag or `DAGRAID_NODES` replace the file's list as a whole.
//! Every error is one line naming the bad value.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default cluster id (the storage node's default too).
pub const DEFAULT_CLUSTER_ID: &str = "dagraid";
/// Default engine deadline of one disk operation.
pub const DEFAULT_NODE_DEADLINE_MS: u64 = 5000;
/// Default interval of the storage-node health checks.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 1000;
/// Default of [`CoordinatorConfig::gone_after`].
pub const DEFAULT_GONE_AFTER_MS: u64 = 3000;
/// Default of [`CoordinatorConfig::max_in_flight_per_node`].
pub const DEFAULT_MAX_IN_FLIGHT_PER_NODE: usize = 64;
/// Largest accepted `max-in-flight-per-node`.
pub const MAX_MAX_IN_FLIGHT_PER_NODE: usize = 65_536;
/// Default of [`CoordinatorConfig::max_accesses`].
pub const DEFAULT_MAX_ACCESSES: usize = 128;
/// Default of [`CoordinatorConfig::max_queued_accesses`].
pub const DEFAULT_MAX_QUEUED_ACCESSES: usize = 1024;
/// Largest accepted `max-accesses` and `max-queued-accesses`.
pub const MAX_ACCESS_LIMIT: usize = 1 << 20;
/// Default time assembly waits for storage nodes that do not answer.
pub const DEFAULT_ASSEMBLY_WAIT_MS: u64 = 10_000;
/// Default down-out delay: ten minutes, longer than any node restart.
pub const DEFAULT_DOWN_OUT_DELAY_MS: u64 = 600_000;
/// Default rebuild rate limit while clients are idle: 256 MiB/s.
pub const DEFAULT_REBUILD_RATE: u64 = 256 << 20;
/// Default rebuild rate limit while clients read or write: 8 MiB/s (md's speed_limit_min idea:
/// the rebuild yields the disks to user I/O).
pub const DEFAULT_REBUILD_RATE_BUSY: u64 = 8 << 20;
/// Default parity check/rewrite rate limit while clients are idle: 64 MiB/s of stripes.
pub const DEFAULT_SCRUB_RATE: u64 = 64 << 20;
/// Default parity check/rewrite rate limit while clients read or write: 4 MiB/s.
pub const DEFAULT_SCRUB_RATE_BUSY: u64 = 4 << 20;
/// Default wait before a resync that stopped with an error is retried.
pub const DEFAULT_RESYNC_RETRY_INITIAL_MS: u64 = 1000;
/// Default longest wait between resync retries (the wait doubles up to it).
pub const DEFAULT_RESYNC_RETRY_MAX_MS: u64 = 30_000;
/// Default largest Read length / Write payload: 16 MiB.
pub const DEFAULT_MAX_IO_BYTES: u64 = 16 << 20;
/// Smallest accepted `max-io-bytes`: one 4 KiB block.
pub const MIN_MAX_IO_BYTES: u64 = 4096;
/// Largest accepted `max-io-bytes`: 1 GiB (gRPC messages are limited to 4 GiB, and a read is
/// held in memory whole).
pub const MAX_MAX_IO_BYTES: u64 = 1 << 30;
/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = "coordinator.redb";

/// TLS on the NBD export (`--nbd-tls`): `NBD_OPT_STARTTLS` with the coordinator's certificate,
/// a client certificate naming `client.dagraid` (or `coordinator.dagraid`) required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NbdTls {
    /// No TLS: `NBD_OPT_STARTTLS` is refused (`NBD_REP_ERR_POLICY`).
    Off,
    /// TLS offered, plaintext still served (the spec's SELECTIVETLS, no TLS-only export).
    On,
    /// TLS required (the spec's FORCEDTLS): every option but `NBD_OPT_STARTTLS` and
    /// `NBD_OPT_ABORT` before it is answered `NBD_REP_ERR_TLS_REQD`.
    Require,
}

/// A storage node the coordinator uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's id (its `--node-id`); volume records name nodes by it.
    pub id: String,
    /// Its gRPC address, `host:port`.
    pub address: String,
}

impl FromStr for NodeSpec {
    type Err = String;

    /// `ID=HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, address) = s
            .split_once('=')
            .ok_or_else(|| format!("storage node {s:?} is not ID=HOST:PORT"))?;
        let spec = NodeSpec {
            id: id.trim().to_owned(),
            address: address.trim().to_owned(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl NodeSpec {
    fn validate(&self) -> Result<(), String> {
        if let Some(problem) = id_problem(&self.id) {
            return Err(format!("storage node id {:?}: {problem}", self.id));
        }
        let (host, port) = self
            .address
            .rsplit_once(':')
            .ok_or_else(|| self.bad_address("expected HOST:PORT"))?;
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(self.bad_address("the host is missing or malformed"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => Err(self.bad_address("the port must be 1 to 65535")),
        }
    }

    fn bad_address(&self, why: &str) -> String {
        format!(
            "storage node {}: address {:?}: {why}",
            self.id, self.address
        )
    }
}

/// Why an id (node or cluster) is not acceptable.
fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > 128 {
        return Some("must be 1 to 128 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed");
    }
    None
}

/// Everything a coordinator needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Address to serve the volume API on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the coordinator's store (`coordinator.redb`); created if missing.
    pub data_dir: PathBuf,
    /// Cluster id shared with the storage nodes; every mutating node call carries it.
    pub cluster_id: String,
    /// The storage nodes, in the order volume creation picks them.
    pub nodes: Vec<NodeSpec>,
    /// Bearer token every volume API call must carry; `None` leaves the API open.
    pub token: Option<String>,
    /// Where [`CoordinatorConfig::token`] was read from, when it came from a file: read again
    /// on SIGHUP, so the token is rotated without a restart (the old one stops working).
    pub token_file: Option<PathBuf>,
    /// The engine's deadline of one disk operation (the node client's own deadline is a little
    /// shorter, so a slow node is reported as a node timeout).
    pub node_deadline: Duration,
    /// Interval of the storage-node health checks.
    pub health_interval: Duration,
    /// How long a storage node must go without answering a health check (and miss at least two
    /// in a row) before it is *gone*: only then are its columns failed (or, beyond the layout's
    /// tolerance, marked gone and the volume failed). A node that answers, however slowly, is
    /// never gone.
    pub gone_after: Duration,
    /// Largest Read length and Write payload.
    pub max_io_bytes: u64,
    /// Block reads, writes and flushes in flight to one storage node at once (all its volumes
    /// together). More wait their turn in the coordinator, and that wait is never counted
    /// against [`CoordinatorConfig::node_deadline`].
    pub max_in_flight_per_node: usize,
    /// Reads, writes and flushes (all volumes together) running at once; more wait in a queue.
    pub max_accesses: usize,
    /// Reads, writes and flushes waiting to run; one more is refused at once with
    /// RESOURCE_EXHAUSTED `overloaded` (back-pressure: nothing was done, no column failed).
    pub max_queued_accesses: usize,
    /// How long assembly waits for a storage node that does not answer before it fails the
    /// node's columns (only nodes whose columns the latest record calls optimal are awaited).
    pub assembly_wait: Duration,
    /// **Test only**: abort the process after this many label writes of the first state change
    /// recorded (`crate::labels::CrashHook`); from `DAGRAID_TEST_CRASH_AFTER_LABEL_WRITES`.
    pub test_crash_after_label_writes: Option<usize>,
    /// **Test only**: abort the process after this many metadata record writes of the first
    /// parity-map update (one more: after its store write) (`crate::labels::CrashHook`); from
    /// `DAGRAID_TEST_CRASH_AFTER_MAP_WRITES`.
    pub test_crash_after_map_writes: Option<usize>,
    /// Where to serve Prometheus metrics (`/metrics`); `None`: not served. Port 0 picks one.
    pub metrics_listen: Option<SocketAddr>,
    /// Wait before a resync that stopped with an error is retried (and after a retry that
    /// made progress).
    pub resync_retry_initial: Duration,
    /// Longest wait between resync retries: the wait doubles after each retry that made no
    /// progress, up to this.
    pub resync_retry_max: Duration,
    /// How long a column stays failed before it is reconstructed onto a spare of the pool
    /// (Ceph's `mon_osd_down_out_interval`): longer than a node restart, so a node that comes
    /// back is re-added rather than rebuilt. 0 rebuilds at once.
    pub down_out_delay: Duration,
    /// Default rate limit of a reconstruction or copyback while no client I/O is seen, in bytes
    /// written per second (0: no limit).
    pub rebuild_rate: u64,
    /// Rate limit of a reconstruction or copyback while clients read or write (an access ran
    /// within the last 200 ms), in bytes per second (0: no limit): user I/O comes first.
    pub rebuild_rate_busy: u64,
    /// Default rate limit of a parity check or rewrite while no client I/O is seen, in bytes of
    /// stripes per second (0: no limit).
    pub scrub_rate: u64,
    /// Rate limit of a parity check or rewrite while clients read or write, in bytes of stripes
    /// per second (0: no limit).
    pub scrub_rate_busy: u64,
    /// Bytes of volume data per parity-map region (rounded down to whole stripes, at least
    /// one): the unit a crash costs a resync of.
    pub parity_map_region_bytes: u64,
    /// How long a region stays marked dirty after its last write.
    pub parity_map_cooldown: Duration,
    /// Whether writes while a volume is degraded are first logged in the partial-parity log
    /// (`dagraid_core::ppl`; default on). Off, they cost less, and a crash while degraded
    /// needs `dagraid volume assemble --force` again (the write hole is open).
    pub partial_parity_log: bool,
    /// Serve every volume over NBD here (export name = volume name); `None`: no NBD export.
    /// A non-loopback address needs [`CoordinatorConfig::nbd_insecure`] or
    /// [`NbdTls::Require`].
    pub nbd_listen: Option<SocketAddr>,
    /// Accept a non-loopback [`CoordinatorConfig::nbd_listen`] without TLS required (plaintext
    /// NBD has no authentication).
    pub nbd_insecure: bool,
    /// TLS on the NBD export; `None`: [`NbdTls::On`] when [`CoordinatorConfig::tls`] is set,
    /// [`NbdTls::Off`] otherwise ([`CoordinatorConfig::nbd_tls_mode`]). `On` or `Require`
    /// without TLS material is refused by [`CoordinatorConfig::validate`].
    pub nbd_tls: Option<NbdTls>,
    /// Export every volume read-only over NBD (writes, trims and zeroing answer EPERM).
    pub nbd_read_only: bool,
    /// TLS (docs/SECURITY.md): the coordinator's certificate (naming `coordinator.dagraid`),
    /// key and the cluster CA. The volume API then serves TLS and accepts a client certificate
    /// (naming `client.dagraid`) or the token; the storage nodes are called over TLS, each
    /// expected to present its own node certificate. `None`: plaintext everywhere.
    pub tls: Option<dagraid_tls::TlsFiles>,
}

/// Reads a token file: its content without surrounding whitespace. The error names the file,
/// never the content.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "token file {}: the token must be one line of visible ASCII (it travels in an HTTP header)",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// Refuses an NBD listening address that is not loopback unless TLS is required (`tls`
/// [`NbdTls::Require`]: every client then shows a certificate of the cluster) or `insecure`:
/// plaintext NBD carries no credentials, so anyone who reaches the port could read and write
/// every volume.
pub fn check_nbd_listen(addr: SocketAddr, insecure: bool, tls: NbdTls) -> Result<(), String> {
    if addr.ip().is_loopback() || insecure || tls == NbdTls::Require {
        return Ok(());
    }
    Err(format!(
        "--nbd-listen {addr} is not a loopback address and --nbd-tls is not require: plaintext NBD has no authentication, so anyone who reaches it could read and write every volume; listen on 127.0.0.1, pass --nbd-tls require (clients then need a certificate of the cluster), or pass --nbd-insecure to accept that"
    ))
}

impl CoordinatorConfig {
    /// Defaults for everything but the data directory; no storage nodes.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: data_dir.into(),
            cluster_id: DEFAULT_CLUSTER_ID.to_owned(),
            nodes: Vec::new(),
            token: None,
            token_file: None,
            node_deadline: Duration::from_millis(DEFAULT_NODE_DEADLINE_MS),
            health_interval: Duration::from_millis(DEFAULT_HEALTH_INTERVAL_MS),
            gone_after: Duration::from_millis(DEFAULT_GONE_AFTER_MS),
            max_io_bytes: DEFAULT_MAX_IO_BYTES,
            max_in_flight_per_node: DEFAULT_MAX_IN_FLIGHT_PER_NODE,
            max_accesses: DEFAULT_MAX_ACCESSES,
            max_queued_accesses: DEFAULT_MAX_QUEUED_ACCESSES,
            assembly_wait: Duration::from_millis(DEFAULT_ASSEMBLY_WAIT_MS),
            test_crash_after_label_writes: None,
            test_crash_after_map_writes: None,
            metrics_listen: None,
            resync_retry_initial: Duration::from_millis(DEFAULT_RESYNC_RETRY_INITIAL_MS),
            resync_retry_max: Duration::from_millis(DEFAULT_RESYNC_RETRY_MAX_MS),
            down_out_delay: Duration::from_millis(DEFAULT_DOWN_OUT_DELAY_MS),
            rebuild_rate: DEFAULT_REBUILD_RATE,
            rebuild_rate_busy: DEFAULT_REBUILD_RATE_BUSY,
            scrub_rate: DEFAULT_SCRUB_RATE,
            scrub_rate_busy: DEFAULT_SCRUB_RATE_BUSY,
            parity_map_region_bytes: dagraid_core::parity_map::DEFAULT_REGION_BYTES,
            partial_parity_log: true,
            nbd_listen: None,
            nbd_insecure: false,
            nbd_tls: None,
            nbd_read_only: false,
            tls: None,
            parity_map_cooldown: dagraid_core::parity_map::DEFAULT_COOLDOWN,
        }
    }

    /// The NBD export's TLS mode: [`CoordinatorConfig::nbd_tls`], or by default
    /// [`NbdTls::On`] with TLS material and [`NbdTls::Off`] without.
    pub fn nbd_tls_mode(&self) -> NbdTls {
        self.nbd_tls.unwrap_or(if self.tls.is_some() {
            NbdTls::On
        } else {
            NbdTls::Off
        })
    }

    /// Path of the store file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join(STORE_FILE)
    }

    /// Refuses values the coordinator cannot run with; the error is one line.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(problem) = id_problem(&self.cluster_id) {
            return Err(format!("cluster-id {:?}: {problem}", self.cluster_id));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data-dir must not be empty".into());
        }
        let mut ids = HashSet::new();
        let mut addresses = HashSet::new();
        for node in &self.nodes {
            node.validate()?;
            if self.tls.is_some() {
                // Each node is expected to present a certificate naming ID.node.dagraid.
                dagraid_tls::check_node_id(&node.id).map_err(|e| e.to_string())?;
            }
            if !ids.insert(node.id.as_str()) {
                return Err(format!("storage node id {:?} is given twice", node.id));
            }
            if !addresses.insert(node.address.as_str()) {
                return Err(format!(
                    "storage node address {:?} is given twice (columns must be on distinct nodes)",
                    node.address
                ));
            }
        }
        if let Some(token) = &self.token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(
                "token must be non-empty visible ASCII (it travels in an HTTP header)".into(),
            );
        }
        if self.parity_map_region_bytes < 4096 {
            return Err(format!(
                "parity-map-region-bytes must be at least 4096, got {}",
                self.parity_map_region_bytes
            ));
        }
        if self.node_deadline < Duration::from_millis(10)
            || self.node_deadline > Duration::from_secs(600)
        {
            return Err(format!(
                "node-deadline-ms must be 10 to 600000, got {}",
                self.node_deadline.as_millis()
            ));
        }
        if self.health_interval < Duration::from_millis(10)
            || self.health_interval > Duration::from_secs(3600)
        {
            return Err(format!(
                "health-interval-ms must be 10 to 3600000, got {}",
                self.health_interval.as_millis()
            ));
        }
        if self.gone_after > Duration::from_secs(3600) {
            return Err(format!(
                "gone-after-ms must be 0 to 3600000, got {}",
                self.gone_after.as_millis()
            ));
        }
        if self.assembly_wait > Duration::from_secs(3600) {
            return Err(format!(
                "assembly-wait-ms must be 0 to 3600000, got {}",
                self.assembly_wait.as_millis()
            ));
        }
        if self.resync_retry_initial < Duration::from_millis(10)
            || self.resync_retry_initial > Duration::from_secs(3600)
        {
            return Err(format!(
                "resync-retry-initial-ms must be 10 to 3600000, got {}",
                self.resync_retry_initial.as_millis()
            ));
        }
        if self.resync_retry_max < self.resync_retry_initial
            || self.resync_retry_max > Duration::from_secs(86_400)
        {
            return Err(format!(
                "resync-retry-max-ms must be resync-retry-initial-ms ({}) to 86400000, got {}",
                self.resync_retry_initial.as_millis(),
                self.resync_retry_max.as_millis()
            ));
        }
        let nbd_tls = self.nbd_tls_mode();
        if nbd_tls != NbdTls::Off && self.tls.is_none() {
            return Err(format!(
                "--nbd-tls {} needs the coordinator's TLS material (--tls-ca, --tls-cert, --tls-key)",
                if nbd_tls == NbdTls::On {
                    "on"
                } else {
                    "require"
                }
            ));
        }
        if let Some(addr) = self.nbd_listen {
            check_nbd_listen(addr, self.nbd_insecure, nbd_tls)?;
        }
        if !(MIN_MAX_IO_BYTES..=MAX_MAX_IO_BYTES).contains(&self.max_io_bytes) {
            return Err(format!(
                "max-io-bytes must be {MIN_MAX_IO_BYTES} to {MAX_MAX_IO_BYTES}, got {}",
                self.max_io_bytes
            ));
        }
        if !(1..=MAX_MAX_IN_FLIGHT_PER_NODE).contains(&self.max_in_flight_per_node) {
            return Err(format!(
                "max-in-flight-per-node must be 1 to {MAX_MAX_IN_FLIGHT_PER_NODE}, got {}",
                self.max_in_flight_per_node
            ));
        }
        if !(1..=MAX_ACCESS_LIMIT).contains(&self.max_accesses) {
            return Err(format!(
                "max-accesses must be 1 to {MAX_ACCESS_LIMIT}, got {}",
                self.max_accesses
            ));
        }
        if self.max_queued_accesses > MAX_ACCESS_LIMIT {
            return Err(format!(
                "max-queued-accesses must be 0 to {MAX_ACCESS_LIMIT}, got {}",
                self.max_queued_accesses
            ));
        }
        Ok(())
    }
}

/// The optional TOML configuration file; every key is optional and flags override it.
///
/// ```toml
/// listen = "0.0.0.0:7070"
/// data-dir = "/var/lib/dagraid/coordinator"
/// cluster-id = "dagraid"
/// token = "s3cret"
/// node-deadline-ms = 5000
/// health-interval-ms = 1000
/// gone-after-ms = 3000
/// max-io-bytes = 16777216
/// max-in-flight-per-node = 64
/// max-accesses = 128
/// max-queued-accesses = 1024
/// assembly-wait-ms = 10000
/// metrics-listen = "0.0.0.0:9464"
/// resync-retry-initial-ms = 1000
/// resync-retry-max-ms = 30000
/// down-out-delay-ms = 600000
/// rebuild-rate = 268435456
/// rebuild-rate-busy = 8388608
/// nodes = [
///   { id = "node1", address = "127.0.0.1:7001" },
///   { id = "node2", address = "127.0.0.1:7002" },
/// ]
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`CoordinatorConfig::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`CoordinatorConfig::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`CoordinatorConfig::cluster_id`].
    pub cluster_id: Option<String>,
    /// See [`CoordinatorConfig::nodes`].
    pub nodes: Option<Vec<NodeSpec>>,
    /// See [`CoordinatorConfig::token`].
    pub token: Option<String>,
    /// See [`CoordinatorConfig::token_file`].
    pub token_file: Option<PathBuf>,
    /// See [`CoordinatorConfig::node_deadline`], in milliseconds.
    pub node_deadline_ms: Option<u64>,
    /// See [`CoordinatorConfig::health_interval`], in milliseconds.
    pub health_interval_ms: Option<u64>,
    /// See [`CoordinatorConfig::gone_after`], in milliseconds.
    pub gone_after_ms: Option<u64>,
    /// See [`CoordinatorConfig::max_io_bytes`].
    pub max_io_bytes: Option<u64>,
    /// See [`CoordinatorConfig::max_in_flight_per_node`].
    pub max_in_flight_per_node: Option<usize>,
    /// See [`CoordinatorConfig::max_accesses`].
    pub max_accesses: Option<usize>,
    /// See [`CoordinatorConfig::max_queued_accesses`].
    pub max_queued_accesses: Option<usize>,
    /// See [`CoordinatorConfig::assembly_wait`], in milliseconds.
    pub assembly_wait_ms: Option<u64>,
    /// See [`CoordinatorConfig::metrics_listen`].
    pub metrics_listen: Option<SocketAddr>,
    /// See [`CoordinatorConfig::resync_retry_initial`], in milliseconds.
    pub resync_retry_initial_ms: Option<u64>,
    /// See [`CoordinatorConfig::resync_retry_max`], in milliseconds.
    pub resync_retry_max_ms: Option<u64>,
    /// See [`CoordinatorConfig::down_out_delay`], in milliseconds.
    pub down_out_delay_ms: Option<u64>,
    /// See [`CoordinatorConfig::rebuild_rate`].
    pub rebuild_rate: Option<u64>,
    /// See [`CoordinatorConfig::rebuild_rate_busy`].
    pub rebuild_rate_busy: Option<u64>,
    /// See [`CoordinatorConfig::scrub_rate`].
    pub scrub_rate: Option<u64>,
    /// See [`CoordinatorConfig::scrub_rate_busy`].
    pub scrub_rate_busy: Option<u64>,
    /// See [`CoordinatorConfig::parity_map_region_bytes`].
    pub parity_map_region_bytes: Option<u64>,
    /// See [`CoordinatorConfig::parity_map_cooldown`], in milliseconds.
    pub parity_map_cooldown_ms: Option<u64>,
    /// See [`CoordinatorConfig::partial_parity_log`].
    pub partial_parity_log: Option<bool>,
    /// See [`CoordinatorConfig::nbd_listen`].
    pub nbd_listen: Option<SocketAddr>,
    /// See [`CoordinatorConfig::nbd_insecure`].
    pub nbd_insecure: Option<bool>,
    /// See [`CoordinatorConfig::nbd_tls`]: `"off"`, `"on"` or `"require"`.
    pub nbd_tls: Option<NbdTls>,
    /// See [`CoordinatorConfig::nbd_read_only`].
    pub nbd_read_only: Option<bool>,
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

/// The `dagraid-coordinator` command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dagraid-coordinator",
    version,
    about = "The dagraid coordinator: serves RAID volumes over gRPC (dagraid.volume.v1) on top of dagraid storage nodes."
)]
pub struct Args {
    /// TOML file with any of the options below (kebab-case keys, nodes as
    /// `nodes = [{ id = "...", address = "host:port" }]`); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve the volume API on (port 0 picks a free port) [default: 127.0.0.1:7070].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the coordinator's store (created if missing). Required here or in the file.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster id shared with the storage nodes [default: dagraid].
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// A storage node, as ID=HOST:PORT; repeat for each node (order matters: volume creation
    /// picks nodes in this order). The environment form is a comma list.
    #[arg(
        long = "node",
        value_name = "ID=ADDR",
        env = "DAGRAID_NODES",
        value_delimiter = ','
    )]
    pub nodes: Vec<NodeSpec>,
    /// Bearer token every API call must carry (`authorization: Bearer TOKEN`); none by default.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DAGRAID_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// File holding the bearer token (one line; surrounding whitespace ignored). Read again on
    /// SIGHUP: write the new token into it and send SIGHUP to rotate it without a restart (the
    /// old token stops working at once). Conflicts with --token.
    #[arg(
        long,
        value_name = "FILE",
        env = "DAGRAID_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Deadline of one disk operation on a storage node, in milliseconds [default: 5000].
    #[arg(long, value_name = "MS")]
    pub node_deadline_ms: Option<u64>,
    /// Interval of the storage-node health checks, in milliseconds [default: 1000].
    #[arg(long, value_name = "MS")]
    pub health_interval_ms: Option<u64>,
    /// How long a storage node goes without answering health checks before it is gone and its
    /// columns are failed, in milliseconds [default: 3000]. A node that answers is never gone.
    #[arg(long, value_name = "MS")]
    pub gone_after_ms: Option<u64>,
    /// Largest Read length and Write payload, in bytes [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub max_io_bytes: Option<u64>,
    /// Block reads, writes and flushes in flight to one storage node at once; more wait in the
    /// coordinator, and the wait is not counted against the node deadline [default: 64].
    #[arg(long, value_name = "N")]
    pub max_in_flight_per_node: Option<usize>,
    /// Reads, writes and flushes (all volumes together) running at once; more wait their turn
    /// [default: 128].
    #[arg(long, value_name = "N")]
    pub max_accesses: Option<usize>,
    /// Reads, writes and flushes waiting to run; one more is refused with RESOURCE_EXHAUSTED
    /// `overloaded` [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_queued_accesses: Option<usize>,
    /// How long assembly at start waits for a storage node that does not answer before it
    /// fails its columns, in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    pub assembly_wait_ms: Option<u64>,
    /// Test only: abort after this many label writes of the first state change recorded.
    #[arg(
        long,
        value_name = "K",
        env = "DAGRAID_TEST_CRASH_AFTER_LABEL_WRITES",
        hide = true
    )]
    pub test_crash_after_label_writes: Option<usize>,
    /// Test only: abort after this many metadata record writes of the first parity-map update
    /// (one more: after its store write).
    #[arg(
        long,
        value_name = "K",
        env = "DAGRAID_TEST_CRASH_AFTER_MAP_WRITES",
        hide = true
    )]
    pub test_crash_after_map_writes: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free port) [default: off].
    #[arg(long, value_name = "ADDR", env = "DAGRAID_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Wait before a resync that stopped with an error (a node timing out, ...) is retried,
    /// in milliseconds; it doubles after each retry that made no progress [default: 1000].
    #[arg(long, value_name = "MS")]
    pub resync_retry_initial_ms: Option<u64>,
    /// Longest wait between resync retries, in milliseconds [default: 30000].
    #[arg(long, value_name = "MS")]
    pub resync_retry_max_ms: Option<u64>,
    /// How long a column stays failed before it is reconstructed onto a spare, in
    /// milliseconds; 0 rebuilds at once [default: 600000].
    #[arg(long, value_name = "MS", env = "DAGRAID_DOWN_OUT_DELAY_MS")]
    pub down_out_delay_ms: Option<u64>,
    /// Default rate limit of a reconstruction or copyback while clients are idle, in bytes per
    /// second; 0: no limit [default: 268435456].
    #[arg(long, value_name = "BYTES_PER_SEC", env = "DAGRAID_REBUILD_RATE")]
    pub rebuild_rate: Option<u64>,
    /// Rate limit of a reconstruction or copyback while clients read or write, in bytes per
    /// second; 0: no limit [default: 8388608].
    #[arg(long, value_name = "BYTES_PER_SEC", env = "DAGRAID_REBUILD_RATE_BUSY")]
    pub rebuild_rate_busy: Option<u64>,
    /// Default rate limit of a parity check or rewrite while clients are idle, in bytes of
    /// stripes per second; 0: no limit [default: 67108864].
    #[arg(long, value_name = "BYTES_PER_SEC", env = "DAGRAID_SCRUB_RATE")]
    pub scrub_rate: Option<u64>,
    /// Rate limit of a parity check or rewrite while clients read or write, in bytes of
    /// stripes per second; 0: no limit [default: 4194304].
    #[arg(long, value_name = "BYTES_PER_SEC", env = "DAGRAID_SCRUB_RATE_BUSY")]
    pub scrub_rate_busy: Option<u64>,
    /// Bytes of volume data per parity-map region, rounded down to whole stripes (at least
    /// one): after a crash, only the regions written in the last cooldown are resynced
    /// [default: 67108864].
    #[arg(long, value_name = "BYTES", env = "DAGRAID_PARITY_MAP_REGION_BYTES")]
    pub parity_map_region_bytes: Option<u64>,
    /// How long a parity-map region stays dirty after its last write, in milliseconds
    /// [default: 10000].
    #[arg(long, value_name = "MS", env = "DAGRAID_PARITY_MAP_COOLDOWN_MS")]
    pub parity_map_cooldown_ms: Option<u64>,
    /// Log every write made while a volume is degraded in the partial-parity log first, so a
    /// crash in the middle of one cannot damage the failed column's data and the volume is
    /// assembled by itself after it; `false` saves that cost and leaves the write hole open (a
    /// crash while degraded then needs `dagraid volume assemble --force`) [default: true].
    #[arg(long, value_name = "BOOL", env = "DAGRAID_PARTIAL_PARITY_LOG")]
    pub partial_parity_log: Option<bool>,
    /// Export every volume over NBD at ADDR (export name = volume name; port 0 picks a free
    /// port), e.g. 127.0.0.1:10809 [default: off]. Plaintext NBD has no authentication: an
    /// address that is not loopback is refused unless --nbd-tls require or --nbd-insecure is
    /// given.
    #[arg(long, value_name = "ADDR", env = "DAGRAID_NBD_LISTEN")]
    pub nbd_listen: Option<SocketAddr>,
    /// Accept a --nbd-listen address that is not loopback without --nbd-tls require: anyone
    /// who reaches it in plaintext can read and write every volume.
    #[arg(long)]
    pub nbd_insecure: bool,
    /// TLS on the NBD export (NBD_OPT_STARTTLS, with the --tls-* certificate; clients need a
    /// certificate naming client.dagraid): off; on (offered, plaintext still served); require
    /// (plaintext refused) [default: on with --tls-*, off without].
    #[arg(long, value_name = "MODE", env = "DAGRAID_NBD_TLS")]
    pub nbd_tls: Option<NbdTls>,
    /// Export the volumes read-only over NBD (writes, trims and zeroing answer EPERM).
    #[arg(long)]
    pub nbd_read_only: bool,
    /// TLS on the volume API and to the storage nodes (docs/SECURITY.md).
    #[command(flatten)]
    pub tls: dagraid_tls::TlsArgs,
    /// Trace export (OTLP/gRPC), configured like any OpenTelemetry SDK.
    #[command(flatten)]
    pub telemetry: dagraid_telemetry::TelemetryArgs,
}

impl Args {
    /// Merges the flags with the file they name (if any) and validates the result.
    pub fn into_config(self) -> Result<CoordinatorConfig, String> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                FileConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        self.merge(file)
    }

    /// Merges the flags over `file` and validates the result.
    pub fn merge(self, file: FileConfig) -> Result<CoordinatorConfig, String> {
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .ok_or("--data-dir is required (or data-dir in the config file)")?;
        let mut config = CoordinatorConfig::new(data_dir);
        if let Some(listen) = self.listen.or(file.listen) {
            config.listen = listen;
        }
        if let Some(id) = self.cluster_id.or(file.cluster_id) {
            config.cluster_id = id;
        }
        config.nodes = if self.nodes.is_empty() {
            file.nodes.unwrap_or_default()
        } else {
            self.nodes
        };
        config.token_file = self.token_file.or(file.token_file);
        config.token = match (&config.token_file, self.token.or(file.token)) {
            (None, token) => token,
            (Some(_), Some(_)) => {
                return Err("give a token or a token file, not both".into());
            }
            (Some(path), None) => Some(read_token_file(path)?),
        };
        if let Some(ms) = self.node_deadline_ms.or(file.node_deadline_ms) {
            config.node_deadline = Duration::from_millis(ms);
        }
        if let Some(ms) = self.health_interval_ms.or(file.health_interval_ms) {
            config.health_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = self.gone_after_ms.or(file.gone_after_ms) {
            config.gone_after = Duration::from_millis(ms);
        }
        if let Some(bytes) = self.max_io_bytes.or(file.max_io_bytes) {
            config.max_io_bytes = bytes;
        }
        if let Some(n) = self.max_in_flight_per_node.or(file.max_in_flight_per_node) {
            config.max_in_flight_per_node = n;
        }
        if let Some(n) = self.max_accesses.or(file.max_accesses) {
            config.max_accesses = n;
        }
        if let Some(n) = self.max_queued_accesses.or(file.max_queued_accesses) {
            config.max_queued_accesses = n;
        }
        if let Some(ms) = self.assembly_wait_ms.or(file.assembly_wait_ms) {
            config.assembly_wait = Duration::from_millis(ms);
        }
        config.test_crash_after_label_writes = self.test_crash_after_label_writes;
        config.test_crash_after_map_writes = self.test_crash_after_map_writes;
        config.metrics_listen = self.metrics_listen.or(file.metrics_listen);
        if let Some(ms) = self
            .resync_retry_initial_ms
            .or(file.resync_retry_initial_ms)
        {
            config.resync_retry_initial = Duration::from_millis(ms);
        }
        if let Some(ms) = self.resync_retry_max_ms.or(file.resync_retry_max_ms) {
            config.resync_retry_max = Duration::from_millis(ms);
        }
        if let Some(ms) = self.down_out_delay_ms.or(file.down_out_delay_ms) {
            config.down_out_delay = Duration::from_millis(ms);
        }
        if let Some(rate) = self.rebuild_rate.or(file.rebuild_rate) {
            config.rebuild_rate = rate;
        }
        if let Some(rate) = self.rebuild_rate_busy.or(file.rebuild_rate_busy) {
            config.rebuild_rate_busy = rate;
        }
        if let Some(rate) = self.scrub_rate.or(file.scrub_rate) {
            config.scrub_rate = rate;
        }
        if let Some(rate) = self.scrub_rate_busy.or(file.scrub_rate_busy) {
            config.scrub_rate_busy = rate;
        }
        if let Some(bytes) = self
            .parity_map_region_bytes
            .or(file.parity_map_region_bytes)
        {
            config.parity_map_region_bytes = bytes;
        }
        if let Some(ms) = self.parity_map_cooldown_ms.or(file.parity_map_cooldown_ms) {
            config.parity_map_cooldown = Duration::from_millis(ms);
        }
        if let Some(on) = self.partial_parity_log.or(file.partial_parity_log) {
            config.partial_parity_log = on;
        }
        config.nbd_listen = self.nbd_listen.or(file.nbd_listen);
        config.nbd_insecure = self.nbd_insecure || file.nbd_insecure.unwrap_or(false);
        config.nbd_tls = self.nbd_tls.or(file.nbd_tls);
        config.nbd_read_only = self.nbd_read_only || file.nbd_read_only.unwrap_or(false);
        config.tls = self.tls.server_files().map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn only_loopback_unless_insecure() {
        let lo: SocketAddr = "127.0.0.1:10809".parse().unwrap();
        let lo6: SocketAddr = "[::1]:10809".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:10809".parse().unwrap();
        for tls in [NbdTls::Off, NbdTls::On] {
            assert!(check_nbd_listen(lo, false, tls).is_ok());
            assert!(check_nbd_listen(lo6, false, tls).is_ok());
            let err = check_nbd_listen(any, false, tls).unwrap_err();
            assert!(err.contains("--nbd-insecure"), "{err}");
            assert!(err.contains("--nbd-tls require"), "{err}");
            assert!(check_nbd_listen(any, true, tls).is_ok());
        }
        // Required TLS: every client shows a certificate of the cluster, any address will do.
        assert!(check_nbd_listen(any, false, NbdTls::Require).is_ok());
    }

    /// `args`, plus `--insecure` unless they give TLS files (these tests are about everything
    /// but TLS).
    fn parse(args: &[&str]) -> Result<CoordinatorConfig, String> {
        let mut all = vec!["dagraid-coordinator"];
        all.extend_from_slice(args);
        if !args.iter().any(|a| a.starts_with("--tls-")) {
            all.push("--insecure");
        }
        Args::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .merge(FileConfig::default())
    }

    #[test]
    fn flags_give_the_config_with_defaults() {
        let c = parse(&[
            "--data-dir",
            "/d",
            "--node",
            "n1=127.0.0.1:7001",
            "--node",
            "n2=localhost:7002",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(c.cluster_id, "dagraid");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[1].id, "n2");
        assert_eq!(c.nodes[1].address, "localhost:7002");
        assert_eq!(c.token, None);
        assert_eq!(c.node_deadline, Duration::from_secs(5));
        assert_eq!(c.health_interval, Duration::from_secs(1));
        assert_eq!(c.max_io_bytes, 16 << 20);
        assert_eq!(c.assembly_wait, Duration::from_secs(10));
        assert_eq!(c.max_in_flight_per_node, 64);
        assert_eq!((c.max_accesses, c.max_queued_accesses), (128, 1024));
        assert_eq!(c.test_crash_after_label_writes, None);
        assert_eq!(c.test_crash_after_map_writes, None);
        assert_eq!(c.store_path(), PathBuf::from("/d/coordinator.redb"));
    }

    #[test]
    fn the_file_is_read_and_flags_override_it() {
        let file = FileConfig::parse(
            r#"
listen = "127.0.0.1:9000"
data-dir = "/from-file"
cluster-id = "c1"
token = "t0k"
node-deadline-ms = 700
health-interval-ms = 50
max-io-bytes = 65536
assembly-wait-ms = 250
max-in-flight-per-node = 8
max-accesses = 16
max-queued-accesses = 0
nodes = [{ id = "a", address = "h1:1" }, { id = "b", address = "h2:2" }]
"#,
        )
        .unwrap();
        let c = Args::try_parse_from(["x", "--insecure"])
            .unwrap()
            .merge(file.clone())
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/from-file"));
        assert_eq!(c.cluster_id, "c1");
        assert_eq!(c.token.as_deref(), Some("t0k"));
        assert_eq!(c.node_deadline, Duration::from_millis(700));
        assert_eq!(c.health_interval, Duration::from_millis(50));
        assert_eq!(c.max_io_bytes, 65536);
        assert_eq!(c.assembly_wait, Duration::from_millis(250));
        assert_eq!(c.max_in_flight_per_node, 8);
        assert_eq!((c.max_accesses, c.max_queued_accesses), (16, 0));
        assert_eq!(c.nodes.len(), 2);

        let c = Args::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/flag",
            "--node",
            "z=h9:9",
            "--max-io-bytes",
            "4096",
            "--assembly-wait-ms",
            "0",
            "--max-in-flight-per-node",
            "1",
            "--insecure",
        ])
        .unwrap()
        .merge(file)
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.data_dir, PathBuf::from("/flag"));
        assert_eq!(c.nodes, vec!["z=h9:9".parse::<NodeSpec>().unwrap()]);
        assert_eq!(c.max_io_bytes, 4096);
        assert_eq!(c.assembly_wait, Duration::ZERO);
        assert_eq!(c.max_in_flight_per_node, 1);
        assert_eq!(c.cluster_id, "c1");
    }

    #[test]
    fn plaintext_needs_insecure() {
        let err = Args::try_parse_from(["x", "--data-dir", "/d"])
            .unwrap()
            .merge(FileConfig::default())
            .unwrap_err();
        assert!(err.contains("no TLS material"), "{err}");
    }

    #[test]
    fn nbd_tls_defaults_to_the_tls_material_and_needs_it() {
        let plain = parse(&["--data-dir", "/d"]).unwrap();
        assert_eq!(plain.nbd_tls_mode(), NbdTls::Off);
        let tls = [
            "--data-dir",
            "/d",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ];
        assert_eq!(parse(&tls).unwrap().nbd_tls_mode(), NbdTls::On);
        let mut off = tls.to_vec();
        off.extend(["--nbd-tls", "off"]);
        assert_eq!(parse(&off).unwrap().nbd_tls_mode(), NbdTls::Off);
        let mut require = tls.to_vec();
        require.extend(["--nbd-tls", "require", "--nbd-listen", "0.0.0.0:0"]);
        assert_eq!(parse(&require).unwrap().nbd_tls_mode(), NbdTls::Require);
        for mode in ["on", "require"] {
            let err = parse(&["--data-dir", "/d", "--nbd-tls", mode]).unwrap_err();
            assert!(err.contains("--tls-cert"), "{err}");
        }
        let file = FileConfig::parse("nbd-tls = \"require\"").unwrap();
        assert_eq!(file.nbd_tls, Some(NbdTls::Require));
        assert!(FileConfig::parse("nbd-tls = \"maybe\"").is_err());
    }

    #[test]
    fn a_comma_list_of_nodes_is_accepted() {
        let c = parse(&["--data-dir", "/d", "--node", "a=h:1,b=h:2"]).unwrap();
        assert_eq!(c.nodes.len(), 2);
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for (args, expect) in [
            (vec![], "--data-dir is required"),
            (vec!["--data-dir", "/d", "--node", "n1"], "not ID=HOST:PORT"),
            (vec!["--data-dir", "/d", "--node", "n1=host"], "HOST:PORT"),
            (vec!["--data-dir", "/d", "--node", "n1=h:0"], "port"),
            (vec!["--data-dir", "/d", "--node", "n 1=h:1"], "only A-Z"),
            (
                vec!["--data-dir", "/d", "--node", "a=h:1", "--node", "a=h:2"],
                "given twice",
            ),
            (
                vec!["--data-dir", "/d", "--node", "a=h:1", "--node", "b=h:1"],
                "given twice",
            ),
            (
                vec!["--data-dir", "/d", "--max-io-bytes", "10"],
                "max-io-bytes",
            ),
            (
                vec!["--data-dir", "/d", "--node-deadline-ms", "0"],
                "node-deadline-ms",
            ),
            (
                vec!["--data-dir", "/d", "--health-interval-ms", "0"],
                "health-interval-ms",
            ),
            (vec!["--data-dir", "/d", "--cluster-id", ""], "cluster-id"),
            (
                vec!["--data-dir", "/d", "--assembly-wait-ms", "3600001"],
                "assembly-wait-ms",
            ),
            (
                vec!["--data-dir", "/d", "--max-in-flight-per-node", "0"],
                "max-in-flight-per-node",
            ),
            (
                vec!["--data-dir", "/d", "--max-accesses", "0"],
                "max-accesses",
            ),
            (
                vec!["--data-dir", "/d", "--max-queued-accesses", "9999999"],
                "max-queued-accesses",
            ),
            (vec!["--data-dir", "/d", "--token", "a b"], "token"),
            (vec!["--data-dir", "/d", "--listen", "nowhere"], "listen"),
        ] {
            let err = parse(&args).unwrap_err();
            assert!(err.contains(expect), "{args:?}: {err}");
        }
        let err = FileConfig::parse("nodes = 3").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        let err = FileConfig::parse("datadir = \"/d\"").unwrap_err();
        assert!(err.contains("datadir"), "{err}");
    }
}

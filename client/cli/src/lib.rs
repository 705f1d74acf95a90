//! The `dagraid` command-line tool: flags ([`Args`]), the verbs, and [`run`]. It is also the
//! storage node and the coordinator ([`server`]: `dagraid node`, `dagraid coordinator`), so that
//! `dagraid up` runs a whole cluster from this one executable. The SDK it is built on
//! (`dagraid-client`) stays free of both servers.
//!
//! - `certs.rs`: `dagraid certs init`, the cluster CA and a certificate per process for a
//!   deployment of your own (the compose file's `certs` step).
//! - `cluster_file.rs`: `<data-dir>/cluster.toml`, written by `dagraid up`, read by the verbs.
//! - `health.rs`: `dagraid health`, the container health check.
//! - `output.rs`: tables and JSON.
//! - `parity.rs`: `dagraid volume parity check|rewrite`, and following them (`--wait`).
//! - `rebuild.rs`: `dagraid volume rebuild`, `volume re-add` and `volume copyback`, and following
//!   them (`--wait`).
//! - `watch.rs`: `dagraid status --watch`.
//! - `spare.rs`: `dagraid spare add|remove|list`, the hot-spare pool.
//! - `up.rs`: `dagraid up`, a local cluster of `dagraid node` and `dagraid coordinator`
//!   processes, supervised; [`supervisor`]: its restart policy and the state file `dagraid
//!   status` reads.
//! - [`server`]: `dagraid node` and `dagraid coordinator`, the servers' own command lines.
//!
//! The binary (`src/main.rs`) runs [`server::run_if_server`] for the two server subcommands,
//! and otherwise only parses [`Args`] and calls [`run`].

pub mod certs;
pub mod cluster_file;
pub mod health;
pub mod output;
pub mod parity;
mod rebuild;
pub mod server;
pub mod spare;
pub mod supervisor;
mod up;
mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use cluster_file::ClusterFile;
use dagraid_client::size::{Size, parse_size};
use dagraid_client::{Client, ClientError, ClientOptions, RaidLevel, VolumeSpec};

/// Environment variable naming the coordinator URL.
pub const ENV_COORDINATOR: &str = "DAGRAID_COORDINATOR";
/// Environment variable holding the bearer token.
pub const ENV_TOKEN: &str = "DAGRAID_TOKEN";
/// Environment variable naming a directory of `dagraid-node` and `dagraid-coordinator`
/// binaries for `dagraid up` to run instead of this executable's `dagraid node` and `dagraid
/// coordinator`.
pub const ENV_BIN_DIR: &str = "DAGRAID_BIN_DIR";
/// Default of `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "./dagraid-data";

const AFTER_HELP: &str = "\
Sizes and offsets take a whole number of bytes or a binary unit: 4096, 4KiB (= 4k = 4K),
64KiB, 1MiB (= 1M), 1GiB (= 1G), 1TiB; KB/MB/GB are refused as ambiguous.

Quick start (from a clone of the repository; `cargo run --release --` is `dagraid`):
  cargo run --release -- up                    # local cluster, volume vol0 (RAID 5, 1 GiB)
  alias dagraid=./target/release/dagraid       # in another terminal, same directory
  echo hello | dagraid write vol0 --offset 0
  dagraid read vol0 --offset 0 --length 6
  dagraid status --watch";

/// dagraid: networked RAID volumes, in the spirit of raidctl.
///
/// `dagraid up` starts a local cluster (storage nodes and a coordinator, each its own process)
/// and writes DATA_DIR/cluster.toml; the other verbs talk to the coordinator it names, or to
/// the one given with --coordinator.
#[derive(Debug, Parser)]
#[command(name = "dagraid", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Coordinator URL, e.g. http://127.0.0.1:7070 [default: the one in DATA_DIR/cluster.toml].
    #[arg(long, env = ENV_COORDINATOR, global = true, value_name = "URL")]
    pub coordinator: Option<String>,
    /// Bearer token of the coordinator [default: the one in DATA_DIR/cluster.toml when it
    /// names the same coordinator].
    #[arg(long, env = ENV_TOKEN, global = true, hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CA bundle (PEM) the coordinator's certificate must chain to, for an https://
    /// coordinator [default: the one in DATA_DIR/cluster.toml when it names the same
    /// coordinator].
    #[arg(long, env = "DAGRAID_TLS_CA", global = true, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM, naming client.dagraid): the coordinator accepts it instead of
    /// the token.
    #[arg(
        long,
        env = "DAGRAID_TLS_CERT",
        global = true,
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(
        long,
        env = "DAGRAID_TLS_KEY",
        global = true,
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Directory of the local cluster (DATA_DIR): cluster.toml, the nodes' and the coordinator's
    /// data, logs.
    #[arg(
        long,
        global = true,
        default_value = DEFAULT_DATA_DIR,
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Print JSON (one document) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Deadline of one call to the coordinator, in seconds.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local cluster, supervise it, and keep it running until Ctrl-C or SIGTERM.
    ///
    /// Starts --nodes storage nodes plus one for a hot spare (each a `dagraid node` process of
    /// this same executable, on a free 127.0.0.1 port) and a `dagraid coordinator` on --listen,
    /// writes DATA_DIR/cluster.toml (coordinator URL and token, mode 0600), creates volume vol0
    /// (RAID 5 over the first --nodes nodes, 1 GiB) if it does not exist, adds a spare sized
    /// for vol0 on the last node, and prints the endpoints, the status and what to try. Nothing
    /// else needs to be built: `cargo run --release -- up` from a fresh clone is enough.
    ///
    /// The spare node: node N+1 holds no column of vol0, only a hot spare sized for its
    /// columns. A column that fails (its node killed, `dagraid fail`) waits --down-out-delay,
    /// then is rebuilt onto the spare; `dagraid status --watch` shows the progress.
    ///
    /// The supervisor: a process that exits is started again, on the address it had (the
    /// coordinator knows the nodes by address), after a back-off: a node after 5 s (longer than
    /// the coordinator's 3 s rule for a node gone, so its failed column is re-added from the
    /// regions written while it was away rather than rebuilt in full), the coordinator after
    /// 1 s, doubling up to 30 s, from the start again after a run of a minute. A process that
    /// exits 5 times within 10 minutes is given up on: it stays down, the others keep running,
    /// and `dagraid status` names it with its exit count and its log. Each decision is a line
    /// on the output. On Ctrl-C or SIGTERM the coordinator is stopped first, then the nodes,
    /// so a clean stop fails no component.
    ///
    /// The data directory (DATA_DIR, --data-dir, default ./dagraid-data): cluster.toml (the
    /// coordinator's URL and the token, for the other verbs), coordinator/ (its store), nodeN/
    /// (each node's component files), logs/NAME.log (each process's output), up-state.json
    /// (what the supervisor did, for `dagraid status`), up.lock (one `dagraid up` per
    /// directory). Run again on the same data directory, it reuses the token and the data;
    /// delete the directory to start afresh.
    ///
    /// With $DAGRAID_BIN_DIR set, the dagraid-node and dagraid-coordinator binaries found
    /// there are run instead of this executable's `dagraid node` and `dagraid coordinator`.
    Up(UpArgs),
    /// Run a storage node: `dagraid node [FLAGS]`, with exactly the flags of the `dagraid-node`
    /// binary (`dagraid node --help`); what `dagraid up` runs for each node.
    Node(server::ServerArgs),
    /// Run a coordinator: `dagraid coordinator [FLAGS]`, with exactly the flags of the
    /// `dagraid-coordinator` binary (`dagraid coordinator --help`); what `dagraid up` runs.
    Coordinator(server::ServerArgs),
    /// Create, list and delete volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Add, remove and list the hot spares a failed column is rebuilt onto.
    #[command(subcommand)]
    Spare(spare::SpareCommand),
    /// Make the cluster CA and the certificates of its processes, for a deployment of your
    /// own (`dagraid up` makes its own in DATA_DIR/tls; docs/SECURITY.md).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Show the cluster's nodes and every volume, or one volume, like `raidctl -s`.
    ///
    /// Per volume: level, size, geometry and state (optimal, degraded, reconstructing, failed);
    /// per component: column, storage node, address, component id and state (with the
    /// column's progress while reconstructing or copied back); counters; a line per running
    /// or last rebuild, why a failed column waits, and the spares available.
    ///
    /// With --watch, again every --interval until Ctrl-C: redrawn in place with a progress bar
    /// per running rebuild on a terminal, a block per look after a timestamp line otherwise
    /// (with --json, one JSON object per line).
    Status {
        /// Show only this volume.
        volume: Option<String>,
        /// Show it again every --interval until interrupted (Ctrl-C ends it, exit 0).
        #[arg(long)]
        watch: bool,
        /// Milliseconds between two looks with --watch.
        #[arg(long, default_value_t = 2000, value_name = "MS", requires = "watch",
              value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        interval: u64,
        /// Stop after this many looks (for tests).
        #[arg(long, hide = true, requires = "watch", value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Write a file (or stdin) into a volume at an offset.
    ///
    /// Reads FILE, or standard input when FILE is `-` or absent, and writes its bytes at
    /// --offset; returns once they are durable on every live column.
    Write {
        /// The volume.
        volume: String,
        /// Volume offset of the first byte (a size: 0, 4096, 1MiB, ...).
        #[arg(long, value_parser = size_arg)]
        offset: u64,
        /// The input file; `-` or absent: standard input.
        file: Option<PathBuf>,
    },
    /// Read bytes of a volume to stdout or a file (raw bytes).
    Read {
        /// The volume.
        volume: String,
        /// Volume offset of the first byte (a size: 0, 4096, 1MiB, ...).
        #[arg(long, value_parser = size_arg)]
        offset: u64,
        /// Number of bytes (a size: 4096, 1MiB, ...).
        #[arg(long, value_parser = size_arg)]
        length: u64,
        /// Write to this file instead of stdout (created or truncated).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Fail one column of a volume, like `raidctl -f`.
    ///
    /// The component is never read or written again; the volume goes degraded. Refused when
    /// the layout would not survive it.
    Fail {
        /// The volume.
        volume: String,
        /// The column to fail (0-based, as `dagraid status` shows).
        column: u32,
    },
    /// Check a coordinator or storage node with the gRPC health service (no token needed).
    ///
    /// Exit code 0 and `...: serving` when it answers SERVING, 1 otherwise (not serving,
    /// unreachable, no answer within --timeout). The container images' health checks run it.
    Health {
        /// The server, host:port or a URL (e.g. 127.0.0.1:7001, http://coordinator:7070).
        address: String,
        /// The gRPC service to ask about: dagraid.volume.v1.VolumeService (the coordinator),
        /// dagraid.storage.v1.StorageNode (a storage node) [default: the server as a whole].
        #[arg(long, default_value = "")]
        service: String,
        /// With --tls-ca (or an https:// address): the name the server's certificate must
        /// carry, `coordinator.dagraid` or `ID.node.dagraid`. No client certificate is
        /// presented: the health service needs none.
        #[arg(
            long,
            env = "DAGRAID_TLS_SERVER_NAME",
            default_value = "coordinator.dagraid",
            value_name = "NAME"
        )]
        tls_server_name: String,
    },
}

/// Options of `dagraid up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Number of storage nodes (at least 3: vol0 is RAID 5 over all of them).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(3..=64))]
    pub nodes: u32,
    /// Address the coordinator listens on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Address the coordinator exports every volume on over NBD (`nbd://ADDR/vol0`; port 0
    /// picks a free port; loopback only, NBD has no authentication; docs/NBD.md).
    #[arg(long, default_value = "127.0.0.1:10809", value_name = "ADDR")]
    pub nbd_listen: SocketAddr,
    /// How long each process may take to print its listening line, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub start_timeout: u64,
    /// How long a failed column waits before the coordinator rebuilds it onto the spare, in
    /// seconds (the coordinator's down-out delay; short, so that it can be watched).
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub down_out_delay: u64,
    /// The first restart delay of every child, in milliseconds, instead of the supervisor's
    /// (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub restart_delay_ms: Option<u64>,
    /// Plaintext gRPC between every part, no TLS (anyone on this machine can then call the
    /// storage nodes). By default `up` makes a cluster CA and a certificate per process in
    /// DATA_DIR/tls on its first start and runs every link with mutual TLS.
    #[arg(long)]
    pub insecure: bool,
}

/// `dagraid volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume: one component per column on distinct storage nodes.
    Create {
        /// Name: 1 to 64 characters of [A-Za-z0-9._-].
        name: String,
        /// RAID level: raid0, raid1, raid4, raid5 or raid6.
        #[arg(long, default_value = "raid5")]
        level: RaidLevel,
        /// Usable size (rounded up to whole stripes), e.g. 1GiB.
        #[arg(long, value_parser = size_arg)]
        size: u64,
        /// Number of columns [default: every storage node].
        #[arg(long)]
        columns: Option<u32>,
        /// Stripe unit, a multiple of the block size [default: 64KiB].
        #[arg(long, value_parser = size_arg)]
        stripe_unit: Option<u64>,
        /// Block size [default: 4KiB].
        #[arg(long, value_parser = size_arg)]
        block_size: Option<u64>,
        /// Storage node ids for the columns, in column order, comma-separated
        /// [default: the coordinator picks].
        #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
        nodes: Vec<String>,
    },
    /// List every volume with its level, size and state.
    List,
    /// Delete a volume and its components.
    Delete {
        /// The volume.
        name: String,
    },
    /// Assemble a volume again from the labels on its components, like `raidctl -C`.
    ///
    /// For a volume the coordinator did not assemble at start (state not-assembled: not shut
    /// down cleanly and degraded, or more failures than its layout tolerates). Without --force
    /// a volume that is not clean and degraded stays unassembled and the answer says what
    /// forcing would risk; with --force it is assembled, and what is at risk is printed.
    Assemble {
        /// The volume.
        name: String,
        /// Assemble it even though it was not shut down cleanly and is degraded (the RAID 5
        /// write hole: stripes written at the crash may rebuild the failed column's data wrong).
        #[arg(long)]
        force: bool,
    },
    /// List the lost byte ranges of a volume: bytes that answer DATA_LOSS until written again
    /// (a write cut short on more columns than the layout tolerates, or a resync that could not
    /// repair them).
    Lost {
        /// The volume.
        name: String,
    },
    /// Reconstruct a failed column now: onto a spare of the pool (the best fit, or --spare),
    /// or in place (--in-place), without waiting for the coordinator's down-out delay.
    ///
    /// The volume keeps serving I/O meanwhile; the column is current below its watermark.
    /// --wait follows it to its end (a progress bar on a terminal, a line every few seconds
    /// otherwise): exit 0 once done, 1 with the error if it stops before the end. Without
    /// --wait, `dagraid status --watch` follows it.
    Rebuild(rebuild::RebuildArgs),
    /// Re-add a failed column from its own component, back on its node after an outage.
    ///
    /// The component's label must name this volume, column and geometry at a counter not
    /// above the volume's, or it is refused (and never re-added). It is fenced at a new epoch,
    /// then only the regions the parity map names dirty (written while it was away, or in
    /// flight when it failed) are rebuilt onto it. When the map cannot say what it missed
    /// (the label is older than the map's last clear), the column is reconstructed in full onto
    /// it, and the answer says why. The coordinator does this by itself when a node it found
    /// gone answers again; this is the same by hand. --wait follows it to its end like
    /// `volume rebuild --wait`.
    #[command(name = "re-add")]
    ReAdd(rebuild::ReAddArgs),
    /// Copy a column that lives on a spare back to a new component on --to NODE, without
    /// stopping I/O; the spare returns to the pool once the copy is done.
    ///
    /// --wait follows it to its end like `volume rebuild --wait`.
    Copyback(rebuild::CopybackArgs),
    /// Check or rewrite a volume's parity online (RAID 1, 4, 5, 6), while clients read and
    /// write: throttled, user I/O first. `dagraid status` shows the progress.
    #[command(subcommand)]
    Parity(parity::ParityCommand),
}

fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

/// Runs one invocation. `shutdown` ends `dagraid up`; the other verbs never poll it.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    match &args.command {
        Command::Up(up_args) => up::run(&args, up_args, shutdown).await,
        Command::Node(_) | Command::Coordinator(_) => Err(anyhow!(
            "`node` and `coordinator` take their own flags and must come first: \
             `dagraid node [FLAGS]`, `dagraid coordinator [FLAGS]` (see their --help)"
        )),
        Command::Certs(command) => certs::run(command),
        Command::Health {
            address,
            service,
            tls_server_name,
        } => {
            let tls = args
                .tls_ca
                .as_ref()
                .map(|ca| (ca.as_path(), tls_server_name.as_str()));
            health::check(address, service, tls, Duration::from_secs(args.timeout)).await
        }
        _ => {
            let telemetry = trace_export();
            let result = async {
                let target = Target::resolve(&args)?;
                let client = target.connect(&args).await?;
                verb(&args, &target, &client, shutdown)
                    .await
                    .map_err(|e| target.explain(e))
            }
            .await;
            if let Some(t) = telemetry {
                t.shutdown().await;
            }
            result
        }
    }
}

/// When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the verb's calls are exported as one trace (the
/// SDK's `client.read` / `client.write` span, the coordinator's and the nodes' spans under it);
/// otherwise nothing is set up. Only warnings are logged (stderr stays the verbs').
fn trace_export() -> Option<dagraid_telemetry::Telemetry> {
    let var = |k: &str| std::env::var(k).ok();
    let args = dagraid_telemetry::TelemetryArgs {
        otlp_endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        service_name: var("OTEL_SERVICE_NAME"),
        trace_sampler: var("OTEL_TRACES_SAMPLER"),
        trace_sampler_arg: var("OTEL_TRACES_SAMPLER_ARG"),
    };
    let settings = match dagraid_telemetry::TraceSettings::resolve(&args, "dagraid") {
        Ok(s) if s.endpoint.is_some() => s,
        Ok(_) => return None,
        Err(e) => {
            eprintln!("dagraid: warning: no trace export: {e}");
            return None;
        }
    };
    let filter = tracing_subscriber::EnvFilter::new("warn");
    match dagraid_telemetry::build(&settings, filter, std::io::stderr, false) {
        Ok((dispatch, telemetry)) => {
            let _ = tracing::dispatcher::set_global_default(dispatch);
            Some(telemetry)
        }
        Err(e) => {
            eprintln!("dagraid: warning: no trace export: {e}");
            None
        }
    }
}

/// The coordinator the verbs talk to, and where that choice came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    url: String,
    token: Option<String>,
    /// TLS material for an https:// coordinator.
    tls: Option<dagraid_client::TlsFiles>,
    /// The cluster file, when the URL came from it.
    from_file: Option<PathBuf>,
}

impl Target {
    fn resolve(args: &Args) -> anyhow::Result<Self> {
        let path = ClusterFile::path_in(&args.data_dir);
        let file = ClusterFile::load(&path)?;
        let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
            (None, None, None) => None,
            (Some(ca), cert, key) => Some(dagraid_client::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, _, _) => {
                return Err(anyhow!(
                    "--tls-cert needs --tls-ca (the CA the coordinator's certificate chains to)"
                ));
            }
        };
        Self::choose(
            args.coordinator.as_deref(),
            args.token.as_deref(),
            tls,
            file,
            &path,
        )
    }

    /// --coordinator (or its env) wins; the file's token and client certificate are used only
    /// for the file's own coordinator, so a credential never leaks to another server.
    fn choose(
        coordinator: Option<&str>,
        token: Option<&str>,
        tls: Option<dagraid_client::TlsFiles>,
        file: Option<ClusterFile>,
        path: &Path,
    ) -> anyhow::Result<Self> {
        match (coordinator, file) {
            (Some(url), file) => {
                let file = file.filter(|f| same_url(&f.coordinator, url));
                Ok(Self {
                    url: url.to_owned(),
                    token: token
                        .map(str::to_owned)
                        .or(file.as_ref().map(|f| f.token.clone())),
                    tls: tls.or(file.as_ref().and_then(ClusterFile::tls)),
                    from_file: None,
                })
            }
            (None, Some(file)) => Ok(Self {
                tls: tls.or(file.tls()),
                url: file.coordinator,
                token: token.map(str::to_owned).or(Some(file.token)),
                from_file: Some(path.to_owned()),
            }),
            (None, None) => Err(anyhow!(
                "no coordinator: pass --coordinator URL (or set {ENV_COORDINATOR}), or start a \
                 local cluster with `dagraid up` (there is no {})",
                path.display()
            )),
        }
    }

    async fn connect(&self, args: &Args) -> anyhow::Result<Client> {
        let options = ClientOptions {
            token: self.token.clone(),
            request_timeout: Duration::from_secs(args.timeout),
            tls: self.tls.clone(),
            ..ClientOptions::default()
        };
        Client::connect(self.url.clone(), options)
            .await
            .map_err(|e| self.explain(e.into()))
    }

    /// Adds where the coordinator came from to errors that suggest the wrong one.
    fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        let Some(client_err) = err.downcast_ref::<ClientError>() else {
            return err;
        };
        match (client_err, &self.from_file) {
            (e, Some(path)) if e.is_transport() => err.context(format!(
                "cannot reach the coordinator at {} (from {}): is `dagraid up` running?",
                self.url,
                path.display()
            )),
            (e, None) if e.is_transport() => {
                err.context(format!("cannot reach the coordinator at {}", self.url))
            }
            (ClientError::Unauthenticated { .. }, _) if self.token.is_none() => err.context(
                format!("the coordinator wants a token: pass --token or set {ENV_TOKEN}"),
            ),
            _ => err,
        }
    }
}

fn same_url(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s.trim().trim_end_matches('/');
        s.strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s)
    }
    norm(a) == norm(b)
}

async fn verb(
    args: &Args,
    target: &Target,
    client: &Client,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let _ = target;
    match &args.command {
        Command::Up(_)
        | Command::Health { .. }
        | Command::Certs(_)
        | Command::Node(_)
        | Command::Coordinator(_) => {
            unreachable!("handled by run")
        }
        Command::Volume(VolumeCommand::Create {
            name,
            level,
            size,
            columns,
            stripe_unit,
            block_size,
            nodes,
        }) => {
            let mut spec = VolumeSpec::new(name.clone(), *level, *size).nodes(nodes.clone());
            spec.columns = *columns;
            spec.stripe_unit_bytes = *stripe_unit;
            spec.block_size = block_size
                .map(|b| {
                    u32::try_from(b).map_err(|_| anyhow!("--block-size {} is too large", Size(b)))
                })
                .transpose()?;
            let volume = client.create_volume(spec).await?;
            if args.json {
                print_json(&output::volume_json(&volume));
            } else {
                print!("created {}", output::volume_status(&volume));
            }
        }
        Command::Volume(VolumeCommand::List) => {
            let volumes = client.list_volumes().await?;
            if args.json {
                let list: Vec<_> = volumes.iter().map(output::volume_json).collect();
                print_json(&serde_json::json!({ "volumes": list }));
            } else {
                print!("{}", output::volume_list(&volumes));
            }
        }
        Command::Volume(VolumeCommand::Delete { name }) => {
            client.delete_volume(name).await?;
            if args.json {
                print_json(&serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted volume {name}");
            }
        }
        Command::Volume(VolumeCommand::Assemble { name, force }) => {
            let outcome = client.assemble_volume(name, *force).await?;
            if args.json {
                let failed: Vec<_> = outcome
                    .newly_failed
                    .iter()
                    .map(|(column, reason)| serde_json::json!({ "column": column, "reason": reason }))
                    .collect();
                print_json(&serde_json::json!({
                    "volume": output::volume_json(&outcome.volume),
                    "at_risk": outcome.at_risk,
                    "newly_failed": failed,
                }));
            } else {
                println!("assembled volume {name}");
                if let Some(risk) = &outcome.at_risk {
                    println!("at risk: {risk}");
                }
                for (column, reason) in &outcome.newly_failed {
                    println!("column {column} failed: {reason}");
                }
                print!("{}", output::volume_status(&outcome.volume));
            }
        }
        Command::Volume(VolumeCommand::Lost { name }) => {
            let ranges = client.list_lost(name).await?;
            if args.json {
                let list: Vec<_> = ranges
                    .iter()
                    .map(|r| serde_json::json!({ "offset": r.offset, "length": r.length }))
                    .collect();
                print_json(&serde_json::json!({
                    "volume": name,
                    "lost_bytes": ranges.iter().map(|r| r.length).sum::<u64>(),
                    "ranges": list,
                }));
            } else if ranges.is_empty() {
                println!("volume {name}: nothing lost");
            } else {
                let total: u64 = ranges.iter().map(|r| r.length).sum();
                println!(
                    "volume {name}: {total} bytes lost in {} range(s); writing them again makes them readable",
                    ranges.len()
                );
                println!("{:>20}  {:>20}  {:>20}", "OFFSET", "END", "LENGTH");
                for r in &ranges {
                    println!(
                        "{:>20}  {:>20}  {:>20}",
                        r.offset,
                        r.offset + r.length,
                        r.length
                    );
                }
            }
        }
        Command::Spare(command) => spare::run(args.json, client, command).await?,
        Command::Volume(VolumeCommand::Rebuild(a)) => {
            rebuild::rebuild(args.json, client, a, shutdown).await?
        }
        Command::Volume(VolumeCommand::Copyback(a)) => {
            rebuild::copyback(args.json, client, a, shutdown).await?
        }
        Command::Volume(VolumeCommand::ReAdd(a)) => {
            rebuild::re_add(args.json, client, a, shutdown).await?
        }
        Command::Volume(VolumeCommand::Parity(p)) => {
            parity::run(args.json, client, p, shutdown).await?
        }
        Command::Status {
            volume,
            watch: true,
            interval,
            count,
        } => {
            let settings = watch::Watch {
                interval: Duration::from_millis(*interval),
                count: *count,
            };
            watch::watch(args.json, client, volume.as_deref(), settings, shutdown).await?
        }
        Command::Status { volume, .. } => {
            let local = local_cluster(args, target);
            status_with_local(args.json, client, volume.as_deref(), local.as_ref()).await?
        }
        Command::Write {
            volume,
            offset,
            file,
        } => write(args, client, volume, *offset, file.as_deref()).await?,
        Command::Read {
            volume,
            offset,
            length,
            output,
        } => read(args, client, volume, *offset, *length, output.as_deref()).await?,
        Command::Fail { volume, column } => {
            let after = client.fail_component(volume, *column).await?;
            if args.json {
                print_json(&output::volume_json(&after));
            } else {
                println!("failed column {column} of {volume}");
                print!("{}", output::volume_status(&after));
            }
        }
    }
    Ok(())
}

/// `dagraid status [VOLUME]`, also printed by `dagraid up`.
pub(crate) async fn status(
    json: bool,
    client: &Client,
    volume: Option<&str>,
) -> anyhow::Result<()> {
    let (cluster, volumes) = fetch_status(client, volume).await?;
    if json {
        print_json(&output::status_json(&cluster, &volumes));
        return Ok(());
    }
    print!(
        "{}",
        output::status_text(volume.is_none().then_some(&cluster), &volumes)
    );
    Ok(())
}

/// The state of the `dagraid up` behind the coordinator the verbs talk to, if there is one:
/// its state file in DATA_DIR, written by a `dagraid up` still running, for this coordinator.
fn local_cluster(args: &Args, target: &Target) -> Option<supervisor::StateFile> {
    supervisor::StateFile::load_live(&args.data_dir)
        .filter(|s| target.from_file.is_some() || same_url(&s.coordinator, &target.url))
}

/// `dagraid status [VOLUME]` with what the supervisor of the local cluster did (given-up and
/// restarted processes), when `local` has it.
async fn status_with_local(
    json: bool,
    client: &Client,
    volume: Option<&str>,
    local: Option<&supervisor::StateFile>,
) -> anyhow::Result<()> {
    let Some(local) = local else {
        return status(json, client, volume).await;
    };
    let (cluster, volumes) = fetch_status(client, volume).await?;
    if json {
        let mut value = output::status_json(&cluster, &volumes);
        if let Some(map) = value.as_object_mut() {
            map.insert(
                "local_cluster".into(),
                serde_json::to_value(local).expect("the state serialises"),
            );
        }
        print_json(&value);
        return Ok(());
    }
    print!(
        "{}",
        output::status_text(volume.is_none().then_some(&cluster), &volumes)
    );
    let data_dir = local
        .children
        .first()
        .and_then(|c| c.log.parent())
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_default();
    for line in local.status_lines(&data_dir) {
        println!("{line}");
    }
    Ok(())
}

/// What `status` shows: the cluster, and one volume or every volume.
async fn fetch_status(
    client: &Client,
    volume: Option<&str>,
) -> anyhow::Result<(dagraid_client::ClusterInfo, Vec<dagraid_client::VolumeInfo>)> {
    Ok(match volume {
        Some(name) => {
            let handle = client.volume(name);
            let (cluster, volume) = tokio::try_join!(client.cluster_info(), handle.describe())?;
            (cluster, vec![volume])
        }
        None => tokio::try_join!(client.cluster_info(), client.list_volumes())?,
    })
}

/// Bytes read from the input per round of calls: enough for every call in flight to carry a
/// full chunk, and bounded so that a large file never sits in memory whole.
fn round_bytes(max_io: u64, in_flight: usize) -> usize {
    let want = max_io.saturating_mul(in_flight as u64);
    want.clamp(1 << 20, 64 << 20) as usize
}

async fn write(
    args: &Args,
    client: &Client,
    volume: &str,
    offset: u64,
    file: Option<&Path>,
) -> anyhow::Result<()> {
    let mut input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match file {
        None => Box::new(tokio::io::stdin()),
        Some(p) if p == Path::new("-") => Box::new(tokio::io::stdin()),
        Some(p) => Box::new(
            tokio::fs::File::open(p)
                .await
                .with_context(|| format!("cannot open {}", p.display()))?,
        ),
    };
    let source = match file {
        Some(p) if p != Path::new("-") => p.display().to_string(),
        _ => "standard input".to_owned(),
    };
    let vol = client.volume(volume);
    let round = round_bytes(client.max_io_bytes().await?, client.options().max_in_flight);
    let mut written: u64 = 0;
    loop {
        let mut buf = Vec::with_capacity(round);
        (&mut input)
            .take(round as u64)
            .read_to_end(&mut buf)
            .await
            .with_context(|| format!("cannot read {source}"))?;
        if buf.is_empty() {
            break;
        }
        let at = offset
            .checked_add(written)
            .ok_or_else(|| anyhow!("offset overflows"))?;
        let n = buf.len() as u64;
        match vol.write_at(at, buf).await {
            Ok(()) => {}
            Err(err) if written == 0 => return Err(err.into()),
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!(
                    "writing at offset {at} of {volume} ({written} bytes before it were written)"
                )));
            }
        }
        written += n;
    }
    if written == 0 {
        bail!("nothing to write: {source} is empty");
    }
    if args.json {
        print_json(&serde_json::json!({ "volume": volume, "offset": offset, "bytes": written }));
    } else {
        println!(
            "wrote {written} bytes ({}) to {volume} at offset {offset}",
            Size(written)
        );
    }
    Ok(())
}

async fn read(
    args: &Args,
    client: &Client,
    volume: &str,
    offset: u64,
    length: u64,
    output_path: Option<&Path>,
) -> anyhow::Result<()> {
    if length == 0 {
        bail!("--length must be at least 1 byte");
    }
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match output_path {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let vol = client.volume(volume);
    let round = round_bytes(client.max_io_bytes().await?, client.options().max_in_flight) as u64;
    let mut done: u64 = 0;
    while done < length {
        let n = (length - done).min(round) as usize;
        let at = offset
            .checked_add(done)
            .ok_or_else(|| anyhow!("offset overflows"))?;
        let data = match vol.read_at(at, n).await {
            Ok(data) => data,
            Err(err) if done == 0 => return Err(err.into()),
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!(
                    "reading at offset {at} of {volume} ({done} bytes before it were read)"
                )));
            }
        };
        match out.write_all(&data).await {
            Ok(()) => {}
            // `dagraid read ... | head -c 10`: the reader has seen enough.
            Err(e) if output_path.is_none() && e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok(());
            }
            Err(e) => {
                let name = output_path
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "standard output".into());
                return Err(anyhow::Error::new(e).context(format!("cannot write {name}")));
            }
        }
        done += n as u64;
    }
    match out.flush().await {
        Err(e) if output_path.is_none() && e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot flush the output")?,
    }
    if let Some(p) = output_path {
        if args.json {
            print_json(&serde_json::json!({
                "volume": volume, "offset": offset, "bytes": length, "output": p,
            }));
        } else {
            println!(
                "read {length} bytes ({}) of {volume} at offset {offset} into {}",
                Size(length),
                p.display()
            );
        }
    }
    Ok(())
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialise")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("dagraid").chain(argv.iter().copied()))
    }

    #[test]
    fn verbs_parse() {
        let a = parse(&[
            "volume",
            "create",
            "v1",
            "--level",
            "raid6",
            "--size",
            "1GiB",
            "--columns",
            "6",
            "--stripe-unit",
            "128KiB",
            "--block-size",
            "4k",
            "--nodes",
            "a,b,c,d,e,f",
        ])
        .unwrap();
        match a.command {
            Command::Volume(VolumeCommand::Create {
                level,
                size,
                columns,
                stripe_unit,
                block_size,
                nodes,
                ..
            }) => {
                assert_eq!(level, RaidLevel::Raid6);
                assert_eq!(size, 1 << 30);
                assert_eq!(columns, Some(6));
                assert_eq!(stripe_unit, Some(128 << 10));
                assert_eq!(block_size, Some(4096));
                assert_eq!(nodes, ["a", "b", "c", "d", "e", "f"]);
            }
            other => panic!("{other:?}"),
        }
        let a = parse(&[
            "read", "vol0", "--offset", "1MiB", "--length", "4k", "-o", "x", "--json",
        ])
        .unwrap();
        assert!(a.json);
        assert!(matches!(
            a.command,
            Command::Read {
                offset: 1048576,
                length: 4096,
                ..
            }
        ));
        let a = parse(&[
            "--data-dir",
            "/tmp/d",
            "write",
            "vol0",
            "--offset",
            "0",
            "-",
        ])
        .unwrap();
        assert_eq!(a.data_dir, PathBuf::from("/tmp/d"));
        let a = parse(&["volume", "assemble", "vol0", "--force"]).unwrap();
        assert!(matches!(
            a.command,
            Command::Volume(VolumeCommand::Assemble { force: true, .. })
        ));
        let a = parse(&["up", "--nodes", "6", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(a.command, Command::Up(UpArgs { nodes: 6, .. })));
        let a = parse(&[
            "volume", "rebuild", "vol0", "--column", "2", "--spare", "sp-1", "--rate", "64MiB",
            "--wait",
        ])
        .unwrap();
        match a.command {
            Command::Volume(VolumeCommand::Rebuild(r)) => {
                assert_eq!((r.volume.as_str(), r.column), ("vol0", 2));
                assert_eq!(r.spare.as_deref(), Some("sp-1"));
                assert!(!r.in_place && r.follow.wait);
                assert_eq!(r.follow.rate, Some(64 << 20));
                assert_eq!(r.follow.poll_ms, 500);
            }
            other => panic!("{other:?}"),
        }
        let a = parse(&[
            "volume", "copyback", "vol0", "--column", "1", "--to", "node2", "--rate", "8M/s",
        ])
        .unwrap();
        match a.command {
            Command::Volume(VolumeCommand::Copyback(c)) => {
                assert_eq!((c.column, c.to.as_str()), (1, "node2"));
                assert_eq!(c.follow.rate, Some(8 << 20));
                assert!(!c.follow.wait);
            }
            other => panic!("{other:?}"),
        }
        let a = parse(&["status", "vol0", "--watch", "--interval", "250"]).unwrap();
        assert!(matches!(
            a.command,
            Command::Status {
                watch: true,
                interval: 250,
                count: None,
                ..
            }
        ));
        let a = parse(&["status"]).unwrap();
        assert!(matches!(
            a.command,
            Command::Status {
                watch: false,
                interval: 2000,
                ..
            }
        ));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for argv in [
            &["volume", "create", "v", "--size", "1GB"][..],
            &[
                "volume", "create", "v", "--size", "1GiB", "--level", "raid3",
            ],
            &["volume", "create", "v"],
            &["read", "vol0", "--offset", "0"],
            &["write", "vol0"],
            &["fail", "vol0", "x"],
            &["up", "--nodes", "2"],
            &["up", "--listen", "nowhere"],
            &["frobnicate"],
            &["volume", "rebuild", "vol0"],
            &[
                "volume",
                "rebuild",
                "vol0",
                "--column",
                "1",
                "--in-place",
                "--spare",
                "s",
            ],
            &["volume", "rebuild", "vol0", "--column", "1", "--rate", "0"],
            &[
                "volume", "rebuild", "vol0", "--column", "1", "--rate", "1MB",
            ],
            &["volume", "rebuild", "vol0", "--column", "-1"],
            &["volume", "copyback", "vol0", "--column", "1"],
            &["status", "--interval", "100"],
            &["status", "--watch", "--interval", "0"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?} was accepted");
        }
    }

    #[test]
    fn target_precedence() {
        let path = Path::new("/d/cluster.toml");
        let file = || Some(ClusterFile::new("http://127.0.0.1:7070", "filetoken"));
        // Nothing: a clear error naming both ways.
        let err = Target::choose(None, None, None, None, path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--coordinator") && err.contains("dagraid up"),
            "{err}"
        );
        // The file alone.
        let t = Target::choose(None, None, None, file(), path).unwrap();
        assert_eq!(t.url, "http://127.0.0.1:7070");
        assert_eq!(t.token.as_deref(), Some("filetoken"));
        assert_eq!(t.from_file.as_deref(), Some(path));
        // --token beats the file's token.
        let t = Target::choose(None, Some("flag"), None, file(), path).unwrap();
        assert_eq!(t.token.as_deref(), Some("flag"));
        // --coordinator naming the file's coordinator still gets the file's token...
        let t = Target::choose(Some("127.0.0.1:7070/"), None, None, file(), path).unwrap();
        assert_eq!(t.token.as_deref(), Some("filetoken"));
        assert_eq!(t.from_file, None);
        // ...another coordinator never does.
        let t = Target::choose(
            Some("http://elsewhere.invalid:7070"),
            None,
            None,
            file(),
            path,
        )
        .unwrap();
        assert_eq!(t.token, None);
        // The file's client certificate likewise: only for the file's own coordinator.
        let tls = dagraid_client::TlsFiles {
            ca: "/d/tls/ca.pem".into(),
            cert: Some("/d/tls/client.pem".into()),
            key: Some("/d/tls/client-key.pem".into()),
        };
        let with_tls =
            || Some(ClusterFile::new("https://127.0.0.1:7070", "filetoken").with_tls(&tls));
        let t = Target::choose(None, None, None, with_tls(), path).unwrap();
        assert_eq!(t.tls.as_ref(), Some(&tls));
        let t = Target::choose(Some("https://127.0.0.1:7070"), None, None, with_tls(), path);
        assert_eq!(t.unwrap().tls.as_ref(), Some(&tls));
        let elsewhere = Some("https://elsewhere.invalid:7070");
        let t = Target::choose(elsewhere, None, None, with_tls(), path).unwrap();
        assert_eq!(t.tls, None);
    }

    #[test]
    fn rounds_are_bounded() {
        assert_eq!(round_bytes(4 << 20, 4), 16 << 20);
        assert_eq!(round_bytes(4096, 4), 1 << 20);
        assert_eq!(round_bytes(1 << 30, 4), 64 << 20);
    }
}

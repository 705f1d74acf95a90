//! `dagraid up`: a local cluster of real processes, supervised until Ctrl-C or SIGTERM.
//!
//! Every child is this same executable: `dagraid node ...` for a storage node, `dagraid
//! coordinator ...` for the coordinator (or, with `$DAGRAID_BIN_DIR` set, the `dagraid-node`
//! and `dagraid-coordinator` binaries found there), so `cargo run -- up` needs nothing else
//! built.
//!
//! Order matters both ways. Start: every storage node, each waited for until it prints
//! `dagraid-node listening on <addr>`, then the coordinator with those addresses, waited for
//! until it prints `dagraid-coordinator listening on <addr>`. Stop: the coordinator first (it
//! holds the volumes; with it gone no access is in flight), then the nodes, so that a clean stop
//! fails no component.
//!
//! Supervision (`supervisor.rs` has the policy): each child runs under a task of its own that
//! waits for it to exit, says so, and starts it again after a back-off, on the address it had
//! at its first start (`--listen` with that address: the coordinator knows the nodes by
//! address, the cluster file names the coordinator's), until it exits too often and is given
//! up on. `<data-dir>/up-state.json` tells `dagraid status` what the supervisor did.
//!
//! Children run in their own process group: a Ctrl-C in the terminal reaches only this process,
//! which then stops them in order. Their stderr goes to `<data-dir>/logs/<name>.log`, shown when
//! one fails to start. A `dagraid up` killed with SIGKILL leaves its children running (there is
//! no portable parent-death signal without `unsafe`); the lock on the data directory is released
//! and the next `dagraid up` fails on the coordinator's port until they are stopped.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures::FutureExt as _;
use rand::Rng as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::cluster_file::ClusterFile;
use super::supervisor::{
    COORDINATOR_FIRST_BACKOFF, ChildRecord, ChildState, Decision, NODE_FIRST_BACKOFF,
    RestartPolicy, Restarts, StateFile,
};
use super::{Args, ENV_BIN_DIR, UpArgs};
use dagraid_client::size::Size;
use dagraid_client::{Client, ClientError, ClientOptions, RaidLevel, VolumeSpec};
use dagraid_tls::Role;
use dagraid_tls::pki::ClusterPki;

const NODE_BIN: &str = "dagraid-node";
const COORDINATOR_BIN: &str = "dagraid-coordinator";
/// Cluster id of the local cluster, given to every process.
const CLUSTER_ID: &str = "dagraid";
/// The cluster CA and the processes' certificates, inside the data directory.
const TLS_DIR: &str = "tls";
/// The volume `dagraid up` makes on a new cluster.
const DEFAULT_VOLUME: &str = "vol0";
const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;
/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a child's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 25;
/// What a storage node prints when it is ready: its address, then its metrics URL.
const NODE_READY: (&str, &str) = ("dagraid-node listening on ", "dagraid-node metrics on ");
/// What the coordinator prints when it is ready.
const COORDINATOR_READY: (&str, &str) = (
    "dagraid-coordinator listening on ",
    "dagraid-coordinator metrics on ",
);

pub(super) async fn run(
    args: &Args,
    up: &UpArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Polled from the start, so that a Ctrl-C during start-up is ours too (and stops what has
    // started) rather than the default disposition killing this process alone.
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    let data_dir = args.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let _lock = DataDirLock::take(&data_dir)?;
    let launchers = Launchers::find()?;
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

    let file_path = ClusterFile::path_in(&data_dir);
    let previous = ClusterFile::load(&file_path)?;
    let token = match (&args.token, &previous) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => file.token.clone(),
        (None, None) => generate_token(),
    };

    let mut cluster = LocalCluster::default();
    let start = start_cluster(&mut cluster, args, up, &launchers, &token, &file_path);
    let started = tokio::select! {
        result = start => result,
        () = &mut shutdown => Err(anyhow!("interrupted while starting")),
    };
    if let Err(err) = started {
        cluster.stop().await;
        return Err(err);
    }
    let state_path = StateFile::path_in(&data_dir);
    let supervised = cluster.supervise(up, &state_path);
    println!("dagraid up: running; Ctrl-C or SIGTERM stops it");
    let _ = std::io::stdout().flush();
    shutdown.await;
    println!("dagraid up: stopping");
    supervised.stop().await;
    let _ = std::fs::remove_file(&state_path);
    println!("dagraid up: stopped");
    Ok(())
}

/// How a child is started: a program and the arguments before its own flags.
#[derive(Debug, Clone)]
struct Launcher {
    program: PathBuf,
    /// `node` or `coordinator` when the program is this executable; nothing for the separate
    /// binaries.
    subcommand: Option<&'static str>,
}

/// The node's and the coordinator's [`Launcher`].
#[derive(Debug, Clone)]
struct Launchers {
    node: Launcher,
    coordinator: Launcher,
}

impl Launchers {
    /// `$DAGRAID_BIN_DIR/dagraid-node` and `.../dagraid-coordinator` when that is set (an
    /// explicit choice: other builds, stand-ins in tests); otherwise this executable itself.
    fn find() -> anyhow::Result<Self> {
        if let Some(dir) = std::env::var_os(ENV_BIN_DIR).filter(|d| !d.is_empty()) {
            let find = |name: &str| -> anyhow::Result<PathBuf> {
                let candidate = Path::new(&dir).join(name);
                if is_executable(&candidate) {
                    return Ok(candidate);
                }
                bail!(
                    "cannot find {name} in ${ENV_BIN_DIR} ({}): build it with `cargo build --workspace`, or unset ${ENV_BIN_DIR} to run this executable's own `dagraid node` and `dagraid coordinator`",
                    Path::new(&dir).display()
                )
            };
            return Ok(Self {
                node: Launcher {
                    program: find(NODE_BIN)?,
                    subcommand: None,
                },
                coordinator: Launcher {
                    program: find(COORDINATOR_BIN)?,
                    subcommand: None,
                },
            });
        }
        let exe = std::env::current_exe().context(
            "cannot find this executable (to run `dagraid node` and `dagraid coordinator`)",
        )?;
        Ok(Self {
            node: Launcher {
                program: exe.clone(),
                subcommand: Some("node"),
            },
            coordinator: Launcher {
                program: exe,
                subcommand: Some("coordinator"),
            },
        })
    }
}

/// Everything needed to start a child, again and again.
#[derive(Debug, Clone)]
struct ChildSpec {
    name: String,
    launcher: Launcher,
    /// Its own flags.
    args: Vec<String>,
    envs: Vec<(String, String)>,
    ready: (&'static str, &'static str),
    log_path: PathBuf,
    start_timeout: Duration,
}

impl ChildSpec {
    /// After the first start: the same addresses every time (`--listen` and `--metrics-listen`
    /// set to what it printed), since the coordinator and the cluster file know it by them.
    fn pin_addresses(&mut self, address: &str, metrics_url: &str) {
        set_flag(&mut self.args, "--listen", address);
        if let Some(metrics) = metrics_url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
        {
            set_flag(&mut self.args, "--metrics-listen", metrics);
        }
    }
}

/// `DATA_DIR/tls/nbd`: the CA and the client certificate under the names libnbd's
/// `tls-certificates=DIR` expects (`ca-cert.pem`, `client-cert.pem`, `client-key.pem`),
/// copied again on every start.
fn nbd_certificates(pki: &ClusterPki) -> anyhow::Result<PathBuf> {
    let dir = pki.dir().join("nbd");
    let client = pki.ensure(&Role::Client)?;
    dagraid_tls::pki::export(
        &client,
        &dir,
        ["ca-cert.pem", "client-cert.pem", "client-key.pem"],
    )?;
    Ok(dir)
}

/// The NBD export's address from the coordinator's log: its stdout line `dagraid-coordinator
/// nbd on nbd://ADDR/` (there whatever RUST_LOG says) or its log line `nbd export listening
/// addr=ADDR`, the newest of either.
fn nbd_address_in(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        if let Some(rest) = l.strip_prefix("dagraid-coordinator nbd on nbd://") {
            return Some(rest.trim().trim_end_matches('/').to_owned());
        }
        l.contains("nbd export listening")
            .then(|| l.split("addr=").nth(1))
            .flatten()
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_owned)
    })
}

/// Replaces the value of `flag` in `args`, if it is there.
fn set_flag(args: &mut [String], flag: &str, value: &str) {
    if let Some(i) = args.iter().position(|a| a == flag)
        && let Some(v) = args.get_mut(i + 1)
    {
        *v = value.to_owned();
    }
}

async fn start_cluster(
    cluster: &mut LocalCluster,
    args: &Args,
    up: &UpArgs,
    launchers: &Launchers,
    token: &str,
    file_path: &Path,
) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    let start_timeout = Duration::from_secs(up.start_timeout);
    let logs = data_dir.join("logs");
    let down_out_delay_ms = up.down_out_delay.saturating_mul(1000);

    // Every node at once; those that started are kept (and stopped in order) even when
    // another fails. One more than --nodes: vol0's columns go on the first --nodes, the last
    // one holds its hot spare.
    let spare_node = format!("node{}", up.nodes + 1);
    // The cluster CA and a certificate per process, made on the first start and kept.
    let pki =
        if up.insecure {
            None
        } else {
            let dir = data_dir.join(TLS_DIR);
            Some(ClusterPki::open_or_create(&dir).with_context(|| {
                format!("making the cluster's certificates in {}", dir.display())
            })?)
        };
    let tls_args = |role: Role| -> anyhow::Result<Vec<String>> {
        let Some(pki) = &pki else {
            return Ok(vec!["--insecure".to_owned()]);
        };
        // The coordinator's also names the addresses it listens on: libnbd's `nbds://` checks
        // the URI's host against it and cannot be told `coordinator.dagraid` (docs/NBD.md).
        let mut ips: Vec<std::net::IpAddr> = [up.listen.ip(), up.nbd_listen.ip()]
            .into_iter()
            .filter(|ip| matches!(role, Role::Coordinator) && !ip.is_unspecified())
            .collect();
        ips.dedup();
        let files = pki.ensure_naming(&role, &ips)?;
        let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
            return Err(anyhow::anyhow!("no certificate for {}", role.dns_name()));
        };
        Ok(vec![
            "--tls-ca".to_owned(),
            path_arg(&files.ca)?,
            "--tls-cert".into(),
            path_arg(cert)?,
            "--tls-key".into(),
            path_arg(key)?,
        ])
    };
    let mut specs = Vec::new();
    for i in 1..=up.nodes + 1 {
        let id = format!("node{i}");
        let dir = path_arg(&data_dir.join(&id))?;
        let mut node_args = vec![
            "--listen".to_owned(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir,
            "--node-id".into(),
            id.clone(),
            "--cluster-id".into(),
            CLUSTER_ID.into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ];
        node_args.extend(tls_args(Role::Node(id.clone()))?);
        specs.push(ChildSpec {
            log_path: logs.join(format!("{id}.log")),
            name: id.clone(),
            launcher: launchers.node.clone(),
            args: node_args,
            envs: Vec::new(),
            ready: NODE_READY,
            start_timeout,
        });
    }
    let mut first_error = None;
    for result in futures::future::join_all(specs.into_iter().map(start_process)).await {
        match result {
            Ok(process) => cluster.nodes.push(process),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }

    let coordinator_dir = data_dir.join("coordinator");
    let mut coordinator_args = vec![
        "--listen".to_owned(),
        up.listen.to_string(),
        "--data-dir".into(),
        path_arg(&coordinator_dir)?,
        "--cluster-id".into(),
        CLUSTER_ID.into(),
    ];
    for node in &cluster.nodes {
        coordinator_args.push("--node".into());
        coordinator_args.push(format!("{}={}", node.spec.name, node.address));
    }
    coordinator_args.push("--metrics-listen".into());
    coordinator_args.push("127.0.0.1:0".into());
    coordinator_args.push("--down-out-delay-ms".into());
    coordinator_args.push(down_out_delay_ms.to_string());
    coordinator_args.push("--nbd-listen".into());
    coordinator_args.push(up.nbd_listen.to_string());
    coordinator_args.extend(tls_args(Role::Coordinator)?);
    // The token goes in the environment, not on the command line, where `ps` would show it.
    let coordinator = start_process(ChildSpec {
        name: "coordinator".into(),
        launcher: launchers.coordinator.clone(),
        args: coordinator_args,
        envs: vec![("DAGRAID_TOKEN".into(), token.to_owned())],
        ready: COORDINATOR_READY,
        log_path: logs.join("coordinator.log"),
        start_timeout,
    })
    .await?;
    let client_tls = match &pki {
        Some(pki) => Some(pki.ensure(&Role::Client)?),
        None => None,
    };
    let scheme = if client_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}", coordinator.address);
    // The NBD export's real address (port 0 resolved), from the coordinator's log; pinned for
    // its restarts like its other addresses.
    let nbd = if up.nbd_listen.port() == 0 {
        // Its stdout line follows the ready lines into the log: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match nbd_address_in(&coordinator.spec.log_path) {
                Some(addr) => break Some(addr),
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                None => break None,
            }
        }
    } else {
        Some(up.nbd_listen.to_string())
    };
    let mut coordinator = coordinator;
    if let Some(nbd) = &nbd {
        set_flag(&mut coordinator.spec.args, "--nbd-listen", nbd);
    }
    cluster.coordinator = Some(coordinator);

    let mut file = ClusterFile::new(url.clone(), token);
    if let Some(tls) = &client_tls {
        file = file.with_tls(tls);
    }
    file.save(file_path)?;

    let client = Client::connect(
        url.clone(),
        ClientOptions {
            token: Some(token.to_owned()),
            tls: client_tls.clone(),
            ..ClientOptions::default()
        },
    )
    .await
    .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let volumes = client.list_volumes().await.context("listing the volumes")?;
    let mut vol0 = volumes.into_iter().find(|v| v.name == DEFAULT_VOLUME);
    if vol0.is_none() {
        // Its columns on the first --nodes nodes, never on the spare's.
        let spec = VolumeSpec::new(DEFAULT_VOLUME, RaidLevel::Raid5, DEFAULT_VOLUME_SIZE)
            .columns(up.nodes)
            .nodes((1..=up.nodes).map(|i| format!("node{i}")));
        match client.create_volume(spec).await {
            Ok(v) => {
                println!(
                    "dagraid up: created volume {} ({}, {})",
                    v.name,
                    v.level,
                    Size(v.size_bytes)
                );
                vol0 = Some(v);
            }
            Err(ClientError::VolumeExists { .. }) => {}
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("cannot create volume {DEFAULT_VOLUME}")));
            }
        }
    }
    let spare = add_spare(&client, &spare_node, vol0.as_ref()).await;

    println!(
        "dagraid up: local cluster in {} (logs in {})",
        data_dir.display(),
        logs.display()
    );
    let mut rows = Vec::new();
    for p in cluster.coordinator.iter().chain(&cluster.nodes) {
        let address = if p.spec.name == "coordinator" {
            url.clone()
        } else {
            p.address.clone()
        };
        rows.push(vec![
            p.spec.name.clone(),
            address,
            p.pid.to_string(),
            p.metrics.clone(),
        ]);
    }
    for line in super::output::table(&["PROCESS", "ADDRESS", "PID", "METRICS"], &rows).lines() {
        println!("  {line}");
    }
    println!(
        "  token: in {} (mode 0600); the other verbs read it from there",
        file_path.display()
    );
    match &pki {
        Some(pki) => println!(
            "  TLS: every link is mutual TLS under the cluster CA {}; a client uses it with the client certificate beside it (client.pem, client-key.pem; docs/SECURITY.md)",
            pki.ca().display()
        ),
        None => println!("  TLS: off (--insecure): every link is plaintext"),
    }
    if spare {
        println!(
            "  {spare_node} holds a hot spare for {DEFAULT_VOLUME}: a failed column is rebuilt onto it {} s after it fails (`dagraid spare list`)",
            up.down_out_delay
        );
    }
    println!(
        "  supervised: a process that exits is started again on the same address (a node after {} s, the coordinator after {} s, doubling up to {} s); one that exits {} times within {} min is given up on (`dagraid status` says so)",
        NODE_FIRST_BACKOFF.as_secs(),
        COORDINATOR_FIRST_BACKOFF.as_secs(),
        super::supervisor::MAX_BACKOFF.as_secs(),
        super::supervisor::GIVE_UP_EXITS,
        super::supervisor::GIVE_UP_WINDOW.as_secs() / 60,
    );
    match &nbd {
        Some(nbd) => {
            println!(
                "  NBD: every volume is a block device at nbd://{nbd}/<volume>, e.g. nbd://{nbd}/{DEFAULT_VOLUME} (nbdinfo, qemu-img, nbdcopy, fio; docs/NBD.md)"
            );
            if let Some(pki) = &pki {
                let dir = nbd_certificates(pki)?;
                println!(
                    "  NBD over TLS: nbds://{nbd}/{DEFAULT_VOLUME}?tls-certificates={} (libnbd's file names)",
                    dir.display()
                );
            }
        }
        None => println!(
            "  NBD: every volume is exported (its address is in {})",
            logs.join("coordinator.log").display()
        ),
    }
    println!();
    super::status(false, &client, None).await?;
    println!();
    let victim = cluster
        .nodes
        .get(2)
        .or(cluster.nodes.first())
        .map(|n| (n.spec.name.clone(), n.pid));
    print!("{}", banner(&args.data_dir, victim, up.down_out_delay));
    println!();
    let _ = std::io::stdout().flush();
    Ok(())
}

/// What to try, with commands that work as printed from the directory `up` was started in.
fn banner(data_dir: &Path, victim: Option<(String, u32)>, down_out_delay: u64) -> String {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    let shown = |p: &Path| -> String {
        match cwd.as_deref().and_then(|c| p.strip_prefix(c).ok()) {
            Some(rel) => format!("./{}", rel.display()),
            None => p.display().to_string(),
        }
    };
    let mut dagraid = exe
        .as_deref()
        .map(shown)
        .unwrap_or_else(|| "dagraid".into());
    if data_dir != Path::new(super::DEFAULT_DATA_DIR) {
        dagraid = format!("{dagraid} --data-dir {}", shown(data_dir));
    }
    let (name, pid) = victim.unwrap_or_else(|| ("node3".into(), 0));
    let steps: [(String, String); 7] = [
        (format!("alias dagraid='{dagraid}'"), String::new()),
        (
            "echo hello | dagraid write vol0 --offset 0".into(),
            String::new(),
        ),
        (
            "dagraid read vol0 --offset 0 --length 6".into(),
            "hello".into(),
        ),
        (
            "dagraid status --watch".into(),
            "in a third terminal; Ctrl-C ends it".into(),
        ),
        (
            format!("kill -9 {pid}"),
            format!("{name}: found gone within ~4 s, vol0 degraded; `up` restarts it"),
        ),
        (
            String::new(),
            "and the coordinator re-adds its column: vol0 optimal again".into(),
        ),
        (
            "dagraid read vol0 --offset 0 --length 6".into(),
            "hello, all along".into(),
        ),
    ];
    let mut text = String::from("Try it, in another terminal in this directory:\n");
    for (command, comment) in steps {
        let line = if comment.is_empty() {
            format!("  {command}")
        } else {
            format!("  {command:<44} # {comment}")
        };
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text.push_str(&format!(
        "A node that stays down has its column rebuilt onto the spare after {down_out_delay} s; `dagraid --help` lists every verb.\n"
    ));
    text
}
/// Makes sure the pool has a spare on `node` sized for `vol0` (its columns' size and block
/// size); says whether there is one. A cluster without its spare still runs: failures are
/// printed as warnings.
async fn add_spare(client: &Client, node: &str, vol0: Option<&dagraid_client::VolumeInfo>) -> bool {
    let spares = match client.list_spares().await {
        Ok(s) => s,
        Err(err) => {
            println!("dagraid up: warning: cannot list the spares: {err}");
            return false;
        }
    };
    if spares.iter().any(|s| s.node_id == node) {
        return true;
    }
    let Some(vol0) = vol0 else {
        println!("dagraid up: warning: no spare added: there is no volume {DEFAULT_VOLUME}");
        return false;
    };
    let size = vol0
        .components
        .iter()
        .map(|c| c.size_bytes)
        .max()
        .unwrap_or(0);
    match client.add_spare(node, size, vol0.block_size).await {
        Ok(s) => {
            println!(
                "dagraid up: added spare {} on {} ({})",
                s.id,
                s.node_id,
                Size(s.size_bytes)
            );
            true
        }
        Err(err) => {
            println!("dagraid up: warning: no spare added on {node}: {err}");
            false
        }
    }
}

/// A child that got ready.
#[derive(Debug)]
struct Process {
    spec: ChildSpec,
    child: Child,
    pid: u32,
    /// What it printed after "listening on ".
    address: String,
    /// Its `/metrics` URL, from its second line.
    metrics: String,
    /// When it was started.
    started: Instant,
}

/// The children while they start (stopped in order when one fails).
#[derive(Debug, Default)]
struct LocalCluster {
    nodes: Vec<Process>,
    coordinator: Option<Process>,
}

impl LocalCluster {
    /// The coordinator first, then every node at once.
    async fn stop(&mut self) {
        if let Some(coordinator) = &mut self.coordinator {
            coordinator.stop().await;
        }
        futures::future::join_all(self.nodes.iter_mut().map(Process::stop)).await;
    }

    /// Hands every child to a supervising task of its own.
    fn supervise(self, up: &UpArgs, state_path: &Path) -> Supervised {
        let coordinator_url = self
            .coordinator
            .as_ref()
            .map(|c| format!("http://{}", c.address))
            .unwrap_or_default();
        let children: Vec<Process> = self.coordinator.into_iter().chain(self.nodes).collect();
        let state = Arc::new(SharedState {
            path: state_path.to_owned(),
            file: Mutex::new(StateFile {
                version: 1,
                pid: std::process::id(),
                coordinator: coordinator_url,
                give_up_window_secs: super::supervisor::GIVE_UP_WINDOW.as_secs(),
                children: children
                    .iter()
                    .map(|p| ChildRecord {
                        name: p.spec.name.clone(),
                        pid: p.pid,
                        address: p.address.clone(),
                        state: ChildState::Running,
                        exits: 0,
                        restarts: 0,
                        log: p.spec.log_path.clone(),
                    })
                    .collect(),
            }),
        });
        state.save();
        let mut coordinator = None;
        let mut nodes = Vec::new();
        for mut process in children {
            let first = match (up.restart_delay_ms, process.spec.name == "coordinator") {
                (Some(ms), _) => Duration::from_millis(ms),
                (None, true) => COORDINATOR_FIRST_BACKOFF,
                (None, false) => NODE_FIRST_BACKOFF,
            };
            let address = process.address.clone();
            let metrics = process.metrics.clone();
            process.spec.pin_addresses(&address, &metrics);
            let stop = CancellationToken::new();
            let is_coordinator = process.spec.name == "coordinator";
            let task = tokio::spawn(supervise_child(
                process,
                RestartPolicy::with_first_backoff(first),
                state.clone(),
                stop.clone(),
            ));
            if is_coordinator {
                coordinator = Some((stop, task));
            } else {
                nodes.push((stop, task));
            }
        }
        Supervised { coordinator, nodes }
    }
}

/// The supervising tasks, each with the token that stops its child.
struct Supervised {
    coordinator: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    nodes: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Supervised {
    /// The coordinator first, then every node at once; nothing is restarted meanwhile.
    async fn stop(self) {
        if let Some((stop, task)) = self.coordinator {
            stop.cancel();
            let _ = task.await;
        }
        for (stop, _) in &self.nodes {
            stop.cancel();
        }
        futures::future::join_all(self.nodes.into_iter().map(|(_, task)| task)).await;
    }
}

/// The state file's contents, rewritten on every change.
struct SharedState {
    path: PathBuf,
    file: Mutex<StateFile>,
}

impl SharedState {
    fn update(&self, name: &str, change: impl FnOnce(&mut ChildRecord)) {
        {
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = file.children.iter_mut().find(|c| c.name == name) {
                change(c);
            }
        }
        self.save();
    }

    fn save(&self) {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = file.save(&self.path) {
            eprintln!("dagraid up: warning: {err:#}");
        }
    }
}

/// Runs one child until `stop`: waits for it to exit, and starts it again under `policy` until
/// it is given up on. Every decision is a line on stdout and a change of the state file.
async fn supervise_child(
    mut process: Process,
    policy: RestartPolicy,
    state: Arc<SharedState>,
    stop: CancellationToken,
) {
    let name = process.spec.name.clone();
    let mut restarts = Restarts::new(policy);
    loop {
        let status = tokio::select! {
            status = process.child.wait() => status,
            () = stop.cancelled() => {
                process.stop().await;
                return;
            }
        };
        // What happened, as `<name> ...`: its exit, or a restart that failed.
        let mut what = match status {
            Ok(status) => format!("(pid {}) exited: {}", process.pid, describe_exit(status)),
            Err(err) => format!("(pid {}) cannot be waited for: {err}", process.pid),
        };
        let mut started = process.started;
        // Until it runs again, or is given up on.
        loop {
            let decision = restarts.on_exit(started, Instant::now());
            let exits = restarts.exits();
            let after = match decision {
                Decision::GiveUp => {
                    println!(
                        "dagraid up: {name} {what}; giving up on it: {} exits within {} min; it stays down (its log: {}); the others keep running",
                        restarts.recent_exits(),
                        restarts.policy().give_up_window.as_secs() / 60,
                        process.spec.log_path.display()
                    );
                    let _ = std::io::stdout().flush();
                    state.update(&name, |c| {
                        c.state = ChildState::GivenUp;
                        c.exits = exits;
                    });
                    stop.cancelled().await;
                    return;
                }
                Decision::Restart { after } => {
                    println!(
                        "dagraid up: {name} {what}; restarting it in {} on {} (exit {} of {} within {} min before giving up)",
                        describe_delay(after),
                        process.address,
                        restarts.recent_exits(),
                        restarts.policy().give_up_exits,
                        restarts.policy().give_up_window.as_secs() / 60,
                    );
                    let _ = std::io::stdout().flush();
                    state.update(&name, |c| {
                        c.state = ChildState::Restarting;
                        c.exits = exits;
                    });
                    after
                }
            };
            tokio::select! {
                () = tokio::time::sleep(after) => {}
                () = stop.cancelled() => return,
            }
            let attempt = Instant::now();
            let result = tokio::select! {
                result = start_process(process.spec.clone()) => result,
                // Dropping the start kills the child (kill_on_drop).
                () = stop.cancelled() => return,
            };
            match result {
                Ok(again) => {
                    println!(
                        "dagraid up: {name} restarted: pid {}, on {}",
                        again.pid, again.address
                    );
                    let _ = std::io::stdout().flush();
                    let (new_pid, address) = (again.pid, again.address.clone());
                    state.update(&name, |c| {
                        c.state = ChildState::Running;
                        c.pid = new_pid;
                        c.address = address;
                        c.restarts += 1;
                    });
                    process = again;
                    break;
                }
                Err(err) => {
                    // The first line: the log's tail is in the log.
                    let err = format!("{err:#}");
                    what = format!(
                        "failed to restart: {}",
                        err.lines().next().unwrap_or_default()
                    );
                    started = attempt;
                }
            }
        }
    }
}

fn describe_delay(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

impl Process {
    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_TIMEOUT`].
    async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let name = &self.spec.name;
        let pid = rustix::process::Pid::from_raw(self.pid as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt as _;
                // Dying of the SIGTERM it was sent is a normal stop.
                if !status.success() && status.signal() != Some(15) {
                    println!(
                        "dagraid up: {name} exited after SIGTERM: {}",
                        describe_exit(status)
                    );
                }
            }
            Ok(Err(err)) => eprintln!("dagraid up: cannot wait for {name}: {err}"),
            Err(_) => {
                eprintln!(
                    "dagraid up: {name} did not exit within {STOP_TIMEOUT:?} of SIGTERM: killing it"
                );
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
            }
        }
    }
}

/// Spawns the child of `spec`, its stderr (and any stdout after its first two lines) to its
/// log, and waits until it prints its listening line (starting with the first prefix of
/// `ready`) and then its metrics line (the second).
async fn start_process(spec: ChildSpec) -> anyhow::Result<Process> {
    let (ready_prefix, metrics_prefix) = spec.ready;
    let name = spec.name.clone();
    let program = spec.launcher.program.clone();
    let log_path = spec.log_path.clone();
    let timeout = spec.start_timeout;
    let mut args: Vec<String> = spec
        .launcher
        .subcommand
        .map(str::to_owned)
        .into_iter()
        .collect();
    args.extend(spec.args.iter().cloned());
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    // Where this run's part of the log starts.
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        log,
        "--- dagraid up: starting {} {}",
        program.display(),
        args.join(" ")
    );
    let stderr = log
        .try_clone()
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let started = Instant::now();
    let mut child = Command::new(&program)
        .args(&args)
        .envs(spec.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().expect("stdout is piped");
    let (ready_tx, ready_rx) = oneshot::channel::<(String, String)>();
    // Reads the listening and metrics lines, then keeps draining stdout into the log so that
    // the child never blocks on a full pipe.
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut ready_tx = Some(ready_tx);
        let mut address = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix(ready_prefix) {
                address = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix(metrics_prefix)
                && let Some(address) = address.take()
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send((address, rest.trim().to_owned()));
            }
            let _ = writeln!(log, "{line}");
        }
    });
    let failure = |what: String| {
        let tail = log_tail(&log_path, log_start);
        anyhow!(
            "{name} ({}) {what}; its log {}:\n{tail}",
            program.display(),
            log_path.display()
        )
    };
    tokio::select! {
        ready = ready_rx => match ready {
            Ok((address, metrics)) if !address.is_empty() => Ok(Process {
                spec,
                child,
                pid,
                address,
                metrics,
                started,
            }),
            _ => {
                // Closed its stdout without the line: wait for it to exit (or kill it).
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let what = match status {
                    Ok(Ok(status)) => format!("exited before it was ready: {}", describe_exit(status)),
                    _ => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        "closed its output without printing its listening line".to_owned()
                    }
                };
                Err(failure(what))
            }
        },
        status = child.wait() => {
            let what = match status {
                Ok(status) => format!("exited before it was ready: {}", describe_exit(status)),
                Err(err) => format!("cannot be waited for: {err}"),
            };
            Err(failure(what))
        }
        () = tokio::time::sleep(timeout) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(failure(format!(
                "did not print its listening line within {timeout:?} (killed)"
            )))
        }
    }
}

/// The last lines of this run's part of a log, indented.
fn log_tail(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let mut tail: VecDeque<&str> = VecDeque::new();
    for line in text.lines().filter(|l| !l.starts_with("--- dagraid up:")) {
        if tail.len() == LOG_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    if tail.is_empty() {
        return "  (empty)".to_owned();
    }
    tail.iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                1 => " (SIGHUP)",
                2 => " (SIGINT)",
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        _ => status.to_string(),
    }
}

fn path_arg(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", path.display()))
}

/// 32 random bytes, hex.
fn generate_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// An exclusive `flock` on `<data-dir>/up.lock` for as long as `dagraid up` runs: two of them
/// on one data directory would start two sets of nodes over the same files.
struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    fn take(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("up.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                bail!(
                    "another `dagraid up` is running on {}{}",
                    data_dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    }
                );
            }
            Err(err) => bail!("cannot lock {}: {err}", path.display()),
        }
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nbd_address_is_read_from_the_stdout_line_or_the_log_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("coordinator.log");
        assert_eq!(nbd_address_in(&log), None);
        std::fs::write(
            &log,
            "x INFO nbd export listening addr=127.0.0.1:1 read_only=false\n\
             dagraid-coordinator nbd on nbd://127.0.0.1:2/\n",
        )
        .unwrap();
        assert_eq!(nbd_address_in(&log).as_deref(), Some("127.0.0.1:2"));
        std::fs::write(
            &log,
            "x INFO nbd export listening addr=127.0.0.1:3 tls=On\n",
        )
        .unwrap();
        assert_eq!(nbd_address_in(&log).as_deref(), Some("127.0.0.1:3"));
    }

    #[test]
    fn tokens_are_random_hex() {
        let a = generate_token();
        let b = generate_token();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn data_dir_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::take(dir.path()).unwrap();
        let err = DataDirLock::take(dir.path()).err().unwrap().to_string();
        assert!(err.contains("another `dagraid up`"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        DataDirLock::take(dir.path()).unwrap();
    }

    #[test]
    fn log_tail_shows_this_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "old run\n").unwrap();
        let from = std::fs::metadata(&path).unwrap().len();
        let mut text = String::from("--- dagraid up: starting x\n");
        for i in 0..40 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let tail = log_tail(&path, from);
        assert!(!tail.contains("old run") && !tail.contains("starting"));
        assert!(tail.ends_with("  line 39"));
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
    }

    #[test]
    fn exits_are_described() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit status 1");
    }
}

//! `dagraid up`: a local cluster of real processes, supervised until Ctrl-C or SIGTERM.
//!
//! Order matters both ways. Start: every storage node, each waited for until it prints
//! `dagraid-node listening on <addr>`, then the coordinator with those addresses, waited for
//! until it prints `dagraid-coordinator listening on <addr>`. Stop: the coordinator first (it
//! holds the volumes; with it gone no access is in flight), then the nodes, so that a clean stop
//! fails no component.
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
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::FutureExt as _;
use rand::Rng as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::cluster_file::ClusterFile;
use super::{Args, ENV_BIN_DIR, UpArgs};
use crate::size::Size;
use crate::{Client, ClientError, ClientOptions, RaidLevel, VolumeSpec};

const NODE_BIN: &str = "dagraid-node";
const COORDINATOR_BIN: &str = "dagraid-coordinator";
/// Cluster id of the local cluster, given to every process.
const CLUSTER_ID: &str = "dagraid";
/// The volume `dagraid up` makes on a new cluster.
const DEFAULT_VOLUME: &str = "vol0";
const DEFAULT_VOLUME_SIZE: u64 = 1 << 30;
/// The down-out delay `up` gives its coordinator: a failed column waits this long before it is
/// rebuilt onto the spare (short, so the rebuild can be watched; a real cluster waits longer
/// than a node restart).
const DOWN_OUT_DELAY_MS: u64 = 30_000;
/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a child's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 25;

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
    let node_bin = find_binary(NODE_BIN)?;
    let coordinator_bin = find_binary(COORDINATOR_BIN)?;
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
    let start = start_cluster(
        &mut cluster,
        args,
        up,
        &node_bin,
        &coordinator_bin,
        &token,
        &file_path,
    );
    let started = tokio::select! {
        result = start => result,
        () = &mut shutdown => Err(anyhow!("interrupted while starting")),
    };
    if let Err(err) = started {
        cluster.stop().await;
        return Err(err);
    }
    println!("dagraid up: running; Ctrl-C or SIGTERM stops it");
    cluster.supervise(&mut shutdown).await;
    println!("dagraid up: stopping");
    cluster.stop().await;
    println!("dagraid up: stopped");
    Ok(())
}

async fn start_cluster(
    cluster: &mut LocalCluster,
    args: &Args,
    up: &UpArgs,
    node_bin: &Path,
    coordinator_bin: &Path,
    token: &str,
    file_path: &Path,
) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    let timeout = Duration::from_secs(up.start_timeout);
    let logs = data_dir.join("logs");

    // Every node at once; those that started are kept (and stopped in order) even when
    // another fails. One more than --nodes: vol0's columns go on the first --nodes, the last
    // one holds its hot spare.
    let spare_node = format!("node{}", up.nodes + 1);
    let mut nodes = Vec::new();
    for i in 1..=up.nodes + 1 {
        let id = format!("node{i}");
        let dir = path_arg(&data_dir.join(&id))?;
        nodes.push((id, dir));
    }
    let starts = nodes.into_iter().map(|(id, dir)| {
        let args = vec![
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
        start_process(
            id,
            node_bin,
            args,
            &[],
            &logs,
            ("dagraid-node listening on ", "dagraid-node metrics on "),
            timeout,
        )
    });
    let mut first_error = None;
    for result in futures::future::join_all(starts).await {
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
        coordinator_args.push(format!("{}={}", node.name, node.address));
    }
    coordinator_args.push("--metrics-listen".into());
    coordinator_args.push("127.0.0.1:0".into());
    coordinator_args.push("--down-out-delay-ms".into());
    coordinator_args.push(DOWN_OUT_DELAY_MS.to_string());
    // The token goes in the environment, not on the command line, where `ps` would show it.
    let coordinator = start_process(
        "coordinator".into(),
        coordinator_bin,
        coordinator_args,
        &[("DAGRAID_TOKEN", token)],
        &logs,
        (
            "dagraid-coordinator listening on ",
            "dagraid-coordinator metrics on ",
        ),
        timeout,
    )
    .await?;
    let url = format!("http://{}", coordinator.address);
    cluster.coordinator = Some(coordinator);

    ClusterFile::new(url.clone(), token).save(file_path)?;

    let client = Client::connect(
        url.clone(),
        ClientOptions {
            token: Some(token.to_owned()),
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
    let mut rows = vec![vec![
        "coordinator".to_owned(),
        url.clone(),
        cluster
            .coordinator
            .as_ref()
            .map_or(0, |c| c.pid)
            .to_string(),
        cluster
            .coordinator
            .as_ref()
            .map_or_else(String::new, |c| c.metrics.clone()),
    ]];
    for node in &cluster.nodes {
        rows.push(vec![
            node.name.clone(),
            node.address.clone(),
            node.pid.to_string(),
            node.metrics.clone(),
        ]);
    }
    for line in super::output::table(&["PROCESS", "ADDRESS", "PID", "METRICS"], &rows).lines() {
        println!("  {line}");
    }
    println!(
        "  token: in {} (mode 0600); the other verbs read it from there",
        file_path.display()
    );
    if spare {
        println!(
            "  {spare_node} holds a hot spare for {DEFAULT_VOLUME}: a failed column is rebuilt onto it {} s after it fails (`dagraid spare list`)",
            DOWN_OUT_DELAY_MS / 1000
        );
    }
    println!();
    super::status(false, &client, None).await?;
    println!();
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Makes sure the pool has a spare on `node` sized for `vol0` (its columns' size and block
/// size); says whether there is one. A cluster without its spare still runs: failures are
/// printed as warnings.
async fn add_spare(client: &Client, node: &str, vol0: Option<&crate::VolumeInfo>) -> bool {
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

/// One child process of the local cluster.
#[derive(Debug)]
struct Process {
    name: String,
    child: Child,
    pid: u32,
    /// What it printed after "listening on ".
    address: String,
    /// Its `/metrics` URL, from its second line.
    metrics: String,
    /// Set once it has exited.
    exited: Option<ExitStatus>,
}

#[derive(Debug, Default)]
struct LocalCluster {
    nodes: Vec<Process>,
    coordinator: Option<Process>,
}

impl LocalCluster {
    /// Waits for `shutdown`, reporting every child that exits meanwhile; the others keep
    /// running.
    async fn supervise(&mut self, shutdown: &mut (impl Future<Output = ()> + Unpin)) {
        loop {
            let exits: Vec<_> = self
                .coordinator
                .iter_mut()
                .chain(self.nodes.iter_mut())
                .filter(|p| p.exited.is_none())
                .map(|p| {
                    async move {
                        let status = p.child.wait().await;
                        (p, status)
                    }
                    .boxed()
                })
                .collect();
            let any_exit = async move {
                if exits.is_empty() {
                    std::future::pending::<()>().await;
                }
                let ((process, status), _, _) = futures::future::select_all(exits).await;
                match status {
                    Ok(status) => {
                        println!(
                            "dagraid up: {} (pid {}) exited: {}; the others keep running",
                            process.name,
                            process.pid,
                            describe_exit(status)
                        );
                        process.exited = Some(status);
                    }
                    Err(err) => {
                        eprintln!(
                            "dagraid up: cannot wait for {} (pid {}): {err}",
                            process.name, process.pid
                        );
                        // Not watched again.
                        process.exited = Some(ExitStatus::default());
                    }
                }
            };
            tokio::select! {
                () = &mut *shutdown => return,
                () = any_exit => {}
            }
        }
    }

    /// The coordinator first, then every node at once.
    async fn stop(&mut self) {
        if let Some(coordinator) = &mut self.coordinator {
            coordinator.stop().await;
        }
        futures::future::join_all(self.nodes.iter_mut().map(Process::stop)).await;
    }
}

impl Process {
    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_TIMEOUT`].
    async fn stop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exited = Some(status);
            return;
        }
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
                        "dagraid up: {} exited after SIGTERM: {}",
                        self.name,
                        describe_exit(status)
                    );
                }
                self.exited = Some(status);
            }
            Ok(Err(err)) => eprintln!("dagraid up: cannot wait for {}: {err}", self.name),
            Err(_) => {
                eprintln!(
                    "dagraid up: {} did not exit within {STOP_TIMEOUT:?} of SIGTERM: killing it",
                    self.name
                );
                let _ = self.child.start_kill();
                if let Ok(status) = self.child.wait().await {
                    self.exited = Some(status);
                }
            }
        }
    }
}

/// Spawns `program` with `args`, its stderr (and any stdout after its first two lines) to
/// `<logs>/<name>.log`, and waits until it prints its listening line (starting with the first
/// prefix of `ready`) and then its metrics line (the second).
async fn start_process(
    name: String,
    program: &Path,
    args: Vec<String>,
    envs: &[(&str, &str)],
    logs: &Path,
    ready: (&'static str, &'static str),
    timeout: Duration,
) -> anyhow::Result<Process> {
    let (ready_prefix, metrics_prefix) = ready;
    let log_path = logs.join(format!("{name}.log"));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    // Where this run's part of the log starts.
    let shown_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        log,
        "--- dagraid up: starting {} {}",
        program.display(),
        shown_args.join(" ")
    );
    let stderr = log
        .try_clone()
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut child = Command::new(program)
        .args(&args)
        .envs(envs.iter().copied())
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
                name,
                child,
                pid,
                address,
                metrics,
                exited: None,
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

/// Where `name` is: `$DAGRAID_BIN_DIR` (an explicit choice wins), next to this executable (the
/// same cargo target directory), then PATH.
fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_BIN_DIR).filter(|d| !d.is_empty()) {
        let candidate = Path::new(&dir).join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        bail!(
            "cannot find {name} in ${ENV_BIN_DIR} ({}): build it with `cargo build --workspace`",
            Path::new(&dir).display()
        );
    }
    let exe = std::env::current_exe().ok();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    let beside = exe
        .as_deref()
        .and_then(Path::parent)
        .map(|d| format!("not in {}, ", d.display()))
        .unwrap_or_default();
    bail!(
        "cannot find {name}: {beside}not on PATH and ${ENV_BIN_DIR} is not set; build it with \
         `cargo build --workspace` (it lands next to dagraid) or set ${ENV_BIN_DIR}"
    )
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

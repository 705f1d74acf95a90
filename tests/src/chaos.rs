//! The real-process chaos soak: a cluster of real processes on 127.0.0.1, clients running the
//! register workload ([`crate::workload`]), and faults drawn from a seed, always within the
//! layout's tolerance; at the end a full read-back, the linearizability checker over the whole
//! run ([`crate::linearizability`]) and the column checker.
//!
//! The fault schedule is drawn up front from its own RNG ([`schedule`]), so the same seed gives
//! the same schedule whatever the timing. Faults run one at a time (apply, hold, heal). Before
//! each, the volume's state decides whether it may run: a storage-node fault only if the
//! columns out (failed or gone) plus its own stay within the tolerance (and one that may fail
//! its column only while the volume is not resyncing), a coordinator crash only
//! while no column is gone (a column the record names failed is covered by the partial-parity
//! log; a gone one is not: the RAID 5
//! write hole, docs/COORDINATOR.md). A fault that may not run is skipped and counted.
//!
//! Without spares, a node kill, power cut or long stall that fails its column uses up one unit
//! of tolerance for the rest of the run (a failed column is not re-added yet, issue 20); the
//! schedule therefore places at most `tolerance` of them, between 65% and 90% of the run, and
//! the repeatable faults (SIGSTOP shorter than the node deadline, coordinator kill -9 and
//! restart) throughout.
//!
//! With spares ([`ChaosConfig::spares`]), the cluster has that many more nodes, each holding a
//! hot spare, and the coordinator rebuilds a failed column onto a spare at once (down-out delay
//! 0): the redundancy comes back, so column-failing faults are drawn throughout the run (after a
//! quarter of it), on any node, and still run only within the tolerance. Before each fault the
//! pool is topped up: a node that holds no column and no spare (an original node whose column
//! moved to a spare, back after its restart) gets a new spare, as an operator would after
//! replacing a disk. The summary counts the rebuilds completed (columns that became optimal on a
//! new component).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dagraid_client::{
    Client, ClientOptions, ComponentState, RaidLevel, RetryPolicy, VolumeInfo, VolumeSpec,
    VolumeState,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, ClusterOptions};
use crate::linearizability::{Nanos, Op, OpKind, ReadOutcome, Verdict, check};
use crate::workload::{ClientRecord, Registers, decode, run_client};

/// The volume the soak runs on.
pub const VOLUME: &str = "chaos";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The volume's size: small, so the final read-back and the column checker are quick.
const VOLUME_BYTES: u64 = 16 * MIB;
const STRIPE_UNIT: u64 = 16 * KIB;
const BLOCK_SIZE: u32 = 4096;
/// The coordinator's node deadline: a SIGSTOP is always well shorter (a call that times out
/// inside an access fails its column, docs/STATE.md).
const NODE_DEADLINE_MS: u64 = 3000;
/// The coordinator's gone rule (`--gone-after-ms`): a stall stays below it, above the deadline.
const GONE_AFTER_MS: u64 = 6000;
/// No fault before this.
const WARMUP: Duration = Duration::from_secs(3);
/// Most faults in one run.
pub const MAX_FAULTS: usize = 2000;
/// How long recovery steps may take (a restart, an assembly, the final settling).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The RAID levels the soak runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosLevel {
    /// RAID 5 over 5 nodes (tolerates 1).
    Raid5,
    /// RAID 6 over 6 nodes (tolerates 2).
    Raid6,
}

impl ChaosLevel {
    /// Storage nodes (= columns).
    pub fn nodes(self) -> usize {
        match self {
            ChaosLevel::Raid5 => 5,
            ChaosLevel::Raid6 => 6,
        }
    }

    /// Nodes of a run with `spares` spares: the volume's, then one per spare.
    pub fn nodes_with(self, spares: usize) -> usize {
        self.nodes() + spares
    }

    /// Column failures the layout tolerates.
    pub fn tolerance(self) -> usize {
        match self {
            ChaosLevel::Raid5 => 1,
            ChaosLevel::Raid6 => 2,
        }
    }

    fn raid(self) -> RaidLevel {
        match self {
            ChaosLevel::Raid5 => RaidLevel::Raid5,
            ChaosLevel::Raid6 => RaidLevel::Raid6,
        }
    }
}

impl std::str::FromStr for ChaosLevel {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "raid5" => Ok(ChaosLevel::Raid5),
            "raid6" => Ok(ChaosLevel::Raid6),
            _ => bail!("unknown level {s:?}: expected raid5 or raid6"),
        }
    }
}

impl fmt::Display for ChaosLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChaosLevel::Raid5 => "raid5",
            ChaosLevel::Raid6 => "raid6",
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// How long the clients run (faults are drawn within it).
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// The level (and so the number of nodes).
    pub level: ChaosLevel,
    /// Seed of the fault schedule and of the clients' choices.
    pub seed: u64,
    /// Blocks used as registers, from block 0 (two stripes' worth by default).
    pub registers: u64,
    /// Print the schedule and each fault on stderr as it happens.
    pub progress: bool,
    /// Hot spares, each on a node of its own beyond the volume's (0: none). With spares the
    /// coordinator runs with a down-out delay of 0 and failed columns are rebuilt during the
    /// soak.
    pub spares: usize,
}

impl ChaosConfig {
    /// A run of `duration` at `level` with `seed`, 8 clients, 32 registers.
    pub fn new(level: ChaosLevel, duration: Duration, seed: u64) -> Self {
        Self {
            duration,
            clients: 8,
            level,
            seed,
            registers: 32,
            progress: false,
            spares: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.clients == 0 || self.clients > 1024 {
            bail!("clients must be 1 to 1024, got {}", self.clients);
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            bail!(
                "the duration must be above 0 and at most 24 h, got {:?}",
                self.duration
            );
        }
        if self.registers < 2 || self.registers > 4096 {
            bail!("registers must be 2 to 4096, got {}", self.registers);
        }
        if self.spares > 4 {
            bail!("spares must be 0 to 4, got {}", self.spares);
        }
        Ok(())
    }
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// kill -9 of storage node `node` (index), restarted on the same data and port after the
    /// hold. Fails its column if any I/O reached it meanwhile: at most `tolerance` at once.
    /// A hold beyond the gone rule (about half of them) has the node found gone, so its
    /// column comes back by re-add once it answers (without spares).
    NodeKill {
        /// The node's index (`node1` is 0).
        node: usize,
    },
    /// SIGSTOP of storage node `node`, SIGCONT after the hold (shorter than the node deadline
    /// and the gone rule, so its column is not failed).
    NodePause {
        /// The node's index.
        node: usize,
    },
    /// SIGSTOP of storage node `node` for longer than the node deadline (less than the gone
    /// rule), SIGCONT after the hold: the writes in flight to it time out, so the coordinator
    /// fences and redoes them, or fails the column when the fence cannot answer either. Counts
    /// against the tolerance like a kill.
    NodeStall {
        /// The node's index.
        node: usize,
    },
    /// kill -9 of the coordinator, restarted on the same data directory and port after the hold.
    CoordinatorKill,
    /// kill -9 of storage node `node`; once its column is failed (and that is durable: a
    /// flush), kill -9 of the coordinator, restarted at once: the volume, not clean and
    /// degraded, must be assembled by itself (the partial-parity log replayed). The node is
    /// restarted after the hold (beyond the gone rule: its column comes back by re-add, or was
    /// rebuilt onto a spare). Counts against the tolerance like a kill.
    DegradedCrash {
        /// The node's index.
        node: usize,
    },
    /// A power cut of storage node `node` (InjectFault `POWER_CUT`: its writes not yet synced
    /// are lost, the syncs in flight torn, the process exits), restarted on the same data and
    /// port after the hold. Counts against the tolerance like a kill.
    PowerCut {
        /// The node's index.
        node: usize,
        /// Seed of the torn sectors.
        seed: u64,
    },
}

impl FaultKind {
    /// A short name, for the tables.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::NodeKill { .. } => "node kill -9",
            FaultKind::NodePause { .. } => "node SIGSTOP",
            FaultKind::NodeStall { .. } => "node SIGSTOP > deadline",
            FaultKind::CoordinatorKill => "coordinator kill -9",
            FaultKind::DegradedCrash { .. } => "node kill + coordinator kill -9",
            FaultKind::PowerCut { .. } => "node power cut",
        }
    }
}

/// A fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// When it starts, from the start of the clients.
    pub at: Duration,
    /// What.
    pub kind: FaultKind,
    /// How long until it is healed (restart, SIGCONT).
    pub hold: Duration,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FaultKind::NodeKill { node }
            | FaultKind::NodePause { node }
            | FaultKind::NodeStall { node }
            | FaultKind::DegradedCrash { node }
            | FaultKind::PowerCut { node, .. } => {
                format!("{} node{}", self.kind.name(), node + 1)
            }
            FaultKind::CoordinatorKill => self.kind.name().to_owned(),
        };
        write!(
            f,
            "t={:>8.3}s  {what} for {} ms",
            self.at.as_secs_f64(),
            self.hold.as_millis()
        )
    }
}

/// The fault schedule of `config`: a function of the seed, the level and the duration only.
pub fn schedule(config: &ChaosConfig) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5c4e_d01e);
    let nodes = config.level.nodes_with(config.spares);
    let end = config.duration;
    let mut faults = Vec::new();
    let mut at = WARMUP;
    while at < end && faults.len() < MAX_FAULTS {
        let kind = if rng.random_bool(0.6) {
            FaultKind::NodePause {
                node: rng.random_range(0..nodes),
            }
        } else {
            FaultKind::CoordinatorKill
        };
        let hold = match kind {
            FaultKind::NodePause { .. } => Duration::from_millis(rng.random_range(200..1200)),
            _ => Duration::from_millis(rng.random_range(200..2000)),
        };
        faults.push(Fault { at, kind, hold });
        at += Duration::from_millis(rng.random_range(1500..5000));
    }
    // The faults that may use up the tolerance (a kill, a power cut, or a SIGSTOP beyond the
    // node deadline): distinct nodes, between 65% and 90% of the run (after the first, a RAID 5 run
    // can do little more).
    if config.spares > 0 {
        // With spares a failed column is rebuilt: such faults every 8 to 20 s from a quarter
        // of the run to 90% of it, on any node (they run only within the tolerance).
        let mut at = (end / 4).max(WARMUP);
        let to = end * 9 / 10;
        let mut first = true;
        while at < to && faults.len() < MAX_FAULTS {
            let node = rng.random_range(0..nodes);
            let mut f = column_fault(&mut rng, node, at);
            if std::mem::take(&mut first) {
                f = degraded_crash(node, at);
            }
            faults.push(f);
            at += Duration::from_millis(rng.random_range(8000..20000));
        }
        faults.sort_by_key(|f| f.at);
        faults.truncate(MAX_FAULTS);
        return faults;
    }
    let mut victims: Vec<usize> = (0..nodes).collect();
    for _ in 0..config.level.tolerance() {
        if end < WARMUP * 4 {
            break;
        }
        let node = victims.swap_remove(rng.random_range(0..victims.len()));
        let from = end.as_millis() as u64 * 65 / 100;
        let to = (end.as_millis() as u64 * 9 / 10).max(from + 1);
        let at = Duration::from_millis(rng.random_range(from..to));
        // The first of them crashes the coordinator while the column is out.
        let f = column_fault(&mut rng, node, at);
        faults.push(
            if faults
                .iter()
                .any(|f: &Fault| matches!(f.kind, FaultKind::DegradedCrash { .. }))
            {
                f
            } else {
                degraded_crash(node, at)
            },
        );
    }
    faults.sort_by_key(|f| f.at);
    faults.truncate(MAX_FAULTS);
    faults
}

/// A node kill with a coordinator crash while its column is out, at `at`
/// ([`FaultKind::DegradedCrash`]): held beyond the gone rule after the coordinator's restart.
fn degraded_crash(node: usize, at: Duration) -> Fault {
    Fault {
        at,
        kind: FaultKind::DegradedCrash { node },
        hold: Duration::from_millis(GONE_AFTER_MS + 1500),
    }
}

/// A fault that may fail `node`'s column at `at`: a kill, a power cut, or a stall beyond the
/// node deadline.
fn column_fault(rng: &mut StdRng, node: usize, at: Duration) -> Fault {
    match rng.random_range(0..3) {
        0 => Fault {
            at,
            kind: FaultKind::NodeKill { node },
            hold: Duration::from_millis(match rng.random_range(500..2500) {
                // Beyond the gone rule: the node is found gone, its column re-added.
                long @ 1500.. => long + GONE_AFTER_MS,
                short => short,
            }),
        },
        1 => Fault {
            at,
            kind: FaultKind::PowerCut {
                node,
                seed: rng.random(),
            },
            hold: Duration::from_millis(rng.random_range(500..2500)),
        },
        _ => Fault {
            at,
            kind: FaultKind::NodeStall { node },
            hold: Duration::from_millis(
                rng.random_range(NODE_DEADLINE_MS + 200..GONE_AFTER_MS - 300),
            ),
        },
    }
}

/// What a run saw, and its verdict.
#[derive(Debug)]
pub struct Summary {
    /// The configuration.
    pub config: ChaosConfig,
    /// The schedule drawn.
    pub schedule: Vec<Fault>,
    /// Time from the clients' start to the end of the final checks.
    pub elapsed: Duration,
    /// Calls by (kind, outcome).
    pub calls: BTreeMap<(&'static str, &'static str), u64>,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Faults run, by kind.
    pub faults_run: BTreeMap<&'static str, u64>,
    /// Faults skipped (tolerance, state), by kind and reason.
    pub faults_skipped: BTreeMap<(&'static str, String), u64>,
    /// Coordinator restarts.
    pub coordinator_restarts: u64,
    /// Storage-node restarts after kill -9.
    pub node_restarts: u64,
    /// Storage nodes resumed after SIGSTOP.
    pub node_resumes: u64,
    /// Power cuts that took effect (the node exited as a power cut makes it).
    pub power_cuts: u64,
    /// Longest time a client went without a successful answer (failed or slow calls).
    pub longest_unavailable: Duration,
    /// Longest time a recovery took (a restarted coordinator's volume assembled, a restarted
    /// node reachable again).
    pub longest_recovery: Duration,
    /// Columns out at the end.
    pub columns_out: Vec<usize>,
    /// Spares added to the pool (at the start, and each top-up).
    pub spares_added: u64,
    /// Rebuilds completed: columns seen optimal on a component other than their first.
    pub rebuilds_completed: u64,
    /// Re-adds started (a column back on its own component after its node was found gone and
    /// answered again: from the regions written meanwhile, or in full when the map could not
    /// say), from the coordinator's log; the checks at the end run once none is running.
    pub readds: u64,
    /// Node kills that outlasted the gone rule (no spares): each must end with its column
    /// back by re-add.
    pub long_kills: u64,
    /// Coordinator crashes while a column was out ([`FaultKind::DegradedCrash`]): each volume
    /// was assembled by itself, the partial-parity log replayed.
    pub degraded_crashes: u64,
    /// Blocks recorded lost at some point.
    pub lost_blocks: BTreeSet<u64>,
    /// Bytes of registers with an acknowledged write that did not read back as a write.
    pub acknowledged_bytes_lost: u64,
    /// Non-zero bytes outside the registers (a misdirected write).
    pub stray_bytes: u64,
    /// The linearizability checker's verdict.
    pub verdict: Verdict,
    /// The column checker's answer.
    pub column_check: std::result::Result<(), String>,
    /// Anything else that went wrong (a volume not assembled after a restart, ...).
    pub problems: Vec<String>,
}

impl Summary {
    /// No violation, no acknowledged byte lost, no stray byte, columns agree, no problem.
    pub fn is_clean(&self) -> bool {
        self.verdict.is_linearizable()
            && self.acknowledged_bytes_lost == 0
            && self.stray_bytes == 0
            && self.column_check.is_ok()
            && self.problems.is_empty()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "chaos soak: {} over {} nodes, {} clients, {} registers, seed {}, {:.0} s of load ({:.0} s in all)",
            c.level,
            c.level.nodes_with(c.spares),
            c.clients,
            c.registers,
            c.seed,
            c.duration.as_secs_f64(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "\noperations (calls)")?;
        writeln!(f, "  {:<12} {:<14} {:>10}", "kind", "outcome", "count")?;
        for ((kind, outcome), n) in &self.calls {
            writeln!(f, "  {kind:<12} {outcome:<14} {n:>10}")?;
        }
        writeln!(f, "\nfaults")?;
        writeln!(f, "  {:<22} {:>6}", "kind", "run")?;
        for (kind, n) in &self.faults_run {
            writeln!(f, "  {kind:<22} {n:>6}")?;
        }
        for ((kind, why), n) in &self.faults_skipped {
            writeln!(f, "  {kind:<22} {n:>6} skipped: {why}")?;
        }
        writeln!(f, "\nrecoveries")?;
        writeln!(
            f,
            "  coordinator restarts   {:>6}",
            self.coordinator_restarts
        )?;
        writeln!(
            f,
            "  node restarts          {:>6} ({} after a power cut)",
            self.node_restarts, self.power_cuts
        )?;
        writeln!(f, "  node resumes           {:>6}", self.node_resumes)?;
        writeln!(
            f,
            "  longest recovery       {:>9.3} s",
            self.longest_recovery.as_secs_f64()
        )?;
        writeln!(
            f,
            "  longest unavailability {:>9.3} s (one client, between two successful answers)",
            self.longest_unavailable.as_secs_f64()
        )?;
        writeln!(f, "\nerrors by kind")?;
        if self.errors.is_empty() {
            writeln!(f, "  none")?;
        }
        for (kind, n) in &self.errors {
            writeln!(f, "  {kind:<22} {n:>6}")?;
        }
        if c.spares > 0 {
            writeln!(f, "\nrebuilds ({} spare nodes)", c.spares)?;
            writeln!(f, "  spares added           {:>6}", self.spares_added)?;
            writeln!(f, "  rebuilds completed     {:>6}", self.rebuilds_completed)?;
        }
        writeln!(f, "\nend state")?;
        writeln!(f, "  columns out            {:?}", self.columns_out)?;
        writeln!(
            f,
            "  re-adds                {} ({} node kills beyond the gone rule)",
            self.readds, self.long_kills
        )?;
        writeln!(
            f,
            "  crashes while degraded {} (assembled by replaying the partial-parity log)",
            self.degraded_crashes
        )?;
        writeln!(f, "  blocks recorded lost   {}", self.lost_blocks.len())?;
        writeln!(
            f,
            "  acknowledged bytes lost {}",
            self.acknowledged_bytes_lost
        )?;
        writeln!(f, "  stray bytes            {}", self.stray_bytes)?;
        writeln!(
            f,
            "  column checker         {}",
            match &self.column_check {
                Ok(()) => "agrees".to_owned(),
                Err(e) => format!("FAILED: {e}"),
            }
        )?;
        writeln!(
            f,
            "  linearizability        {} ({} blocks, {} ops, {} search steps, {} violations)",
            if self.verdict.is_linearizable() {
                "ok"
            } else {
                "VIOLATED"
            },
            self.verdict.blocks,
            self.verdict.ops,
            self.verdict.steps,
            self.verdict.violations.len()
        )?;
        for v in &self.verdict.violations {
            writeln!(f, "\n{v}")?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        writeln!(
            f,
            "\nverdict: {}",
            if self.is_clean() { "CLEAN" } else { "FAILED" }
        )
    }
}

async fn connect(cluster: &Cluster, retry: RetryPolicy) -> Result<Client> {
    Client::connect(
        cluster.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connections: 1,
            retry,
            ..cluster.client_options()
        },
    )
    .await
    .context("connecting to the coordinator")
}

/// Columns failed or gone.
fn columns_out(info: &VolumeInfo) -> BTreeSet<usize> {
    info.components
        .iter()
        .filter(|c| c.state != ComponentState::Optimal || c.gone)
        .map(|c| c.column as usize)
        .collect()
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the soak of `config`; `Err` only when the run itself could not be carried out (a
/// process that would not start); violations are in the [`Summary`].
pub async fn run(config: &ChaosConfig) -> Result<Summary> {
    config.validate()?;
    let level = config.level;
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: level.nodes_with(config.spares),
        fault_injection: true,
        node_deadline_ms: NODE_DEADLINE_MS,
        coordinator_args: vec!["--gone-after-ms".to_owned(), GONE_AFTER_MS.to_string()],
        down_out_delay_ms: (config.spares > 0).then_some(0),
        ..ClusterOptions::default()
    })
    .await?;
    let admin = connect(&cluster, RetryPolicy::default()).await?;
    let mut spec = VolumeSpec::new(VOLUME, level.raid(), VOLUME_BYTES)
        .columns(level.nodes() as u32)
        .stripe_unit_bytes(STRIPE_UNIT);
    spec.block_size = Some(BLOCK_SIZE);
    if config.spares > 0 {
        spec.nodes = (1..=level.nodes()).map(|i| format!("node{i}")).collect();
    }
    let info = admin
        .create_volume(spec)
        .await
        .context("creating the volume")?;
    let bs = u64::from(info.block_size);
    let stripe_blocks = info
        .stripe_data_bytes()
        .context("the volume has no data columns")?
        / bs;
    let volume_blocks = info.size_bytes / bs;
    let registers = Registers {
        first_block: 0,
        count: config.registers.min(volume_blocks),
        block_size: bs,
        stripe_blocks,
    };
    let mut spares_added = 0;
    for i in 0..config.spares {
        add_spare(&cluster, &format!("node{}", level.nodes() + i + 1)).await?;
        spares_added += 1;
    }
    let schedule = schedule(config);
    if config.progress {
        eprintln!("fault schedule (seed {}):", config.seed);
        for f in &schedule {
            eprintln!("  {f}");
        }
    }

    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..config.clients {
        let client = connect(&cluster, RetryPolicy::default()).await?;
        clients.push(tokio::spawn(run_client(
            c as u32,
            config.seed,
            client.volume(VOLUME),
            registers,
            epoch,
            stop.clone(),
        )));
    }
    // The lost set, polled: a block recorded lost only for a while still makes its DATA_LOSS
    // reads legal.
    // With spares, the members too: every (column, component) seen optimal.
    let first_members: BTreeSet<(u32, String)> = info
        .components
        .iter()
        .map(|c| (c.column, c.component_id.clone()))
        .collect();
    let poller = {
        let admin = admin.clone();
        let stop = stop.clone();
        let mut raw = if config.spares > 0 {
            Some(cluster.volume_client().await?)
        } else {
            None
        };
        let mut members = first_members.clone();
        tokio::spawn(async move {
            let mut lost = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(ranges) = admin.list_lost(VOLUME).await {
                    for r in ranges {
                        lost.extend(r.offset / bs..(r.offset + r.length).div_ceil(bs));
                    }
                }
                if let Some(raw) = raw.as_mut()
                    && let Ok(v) = raw.get_volume(VOLUME).await
                {
                    members.extend(optimal_members(&v));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (lost, members)
        })
    };

    let mut summary = Summary {
        config: config.clone(),
        schedule: schedule.clone(),
        elapsed: Duration::ZERO,
        calls: BTreeMap::new(),
        errors: BTreeMap::new(),
        faults_run: BTreeMap::new(),
        faults_skipped: BTreeMap::new(),
        coordinator_restarts: 0,
        node_restarts: 0,
        node_resumes: 0,
        power_cuts: 0,
        longest_unavailable: Duration::ZERO,
        longest_recovery: Duration::ZERO,
        columns_out: Vec::new(),
        spares_added: 0,
        rebuilds_completed: 0,
        readds: 0,
        long_kills: 0,
        degraded_crashes: 0,
        lost_blocks: BTreeSet::new(),
        acknowledged_bytes_lost: 0,
        stray_bytes: 0,
        verdict: Verdict::default(),
        column_check: Ok(()),
        problems: Vec::new(),
    };

    let mut fault_error = None;
    for fault in &schedule {
        if fault.at >= config.duration {
            break;
        }
        tokio::time::sleep_until((epoch + fault.at).into()).await;
        if config.spares > 0 {
            match top_up_spares(&cluster, config).await {
                Ok(n) => spares_added += n,
                Err(e) => {
                    if config.progress {
                        eprintln!("  spare pool not topped up: {e:#}");
                    }
                }
            }
        }
        if let Err(e) = run_fault(&mut cluster, &admin, fault, level, &mut summary).await {
            // The cluster could not be brought back: stop the run and report it.
            fault_error = Some(format!("{fault}: {e:#}"));
            break;
        }
    }
    if let Some(e) = fault_error {
        summary.problems.push(format!("fault not healed: {e}"));
    } else {
        tokio::time::sleep_until((epoch + config.duration).into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut ops: Vec<Op> = Vec::new();
    let mut torn = Vec::new();
    for c in clients {
        let rec: ClientRecord = c.await.context("a client task failed")?;
        ops.extend(rec.ops);
        for (k, n) in rec.calls {
            *summary.calls.entry(k).or_default() += n;
        }
        for (k, n) in rec.errors {
            *summary.errors.entry(k).or_default() += n;
        }
        summary.longest_unavailable = summary.longest_unavailable.max(rec.longest_unavailable);
        torn.extend(rec.torn_blocks);
    }
    let (mut lost, mut members) = poller.await.context("the lost-set poller failed")?;
    lost.extend(torn);
    if config.progress {
        eprintln!(
            "t={:.1}s clients stopped; settling",
            epoch.elapsed().as_secs_f64()
        );
    }

    // Settle: assembled, not resyncing, no rebuild or re-add running.
    let vol = admin.volume(VOLUME);
    let settled = eventually(SETTLE_TIMEOUT, || async {
        let s = vol.status().await.ok()?;
        (matches!(s.state, VolumeState::Optimal | VolumeState::Degraded)
            && !s.rebuilds.iter().any(|r| r.running))
        .then_some(s)
    })
    .await;
    let status = match settled {
        Some(status) => status,
        None => {
            let now = vol.status().await.context("volume status after the run")?;
            summary.problems.push(format!(
                "the volume did not settle (optimal or degraded) within {SETTLE_TIMEOUT:?}: {} (the checks below ran anyway)",
                now.state.as_str()
            ));
            now
        }
    };
    summary.columns_out = columns_out(&status).into_iter().collect();
    summary.readds = cluster.coordinator.log().matches("re-add starts").count() as u64;
    if config.spares > 0 {
        if let Ok(v) = cluster.volume_client().await?.get_volume(VOLUME).await {
            members.extend(optimal_members(&v));
        }
        summary.spares_added = spares_added;
        summary.rebuilds_completed = members.difference(&first_members).count() as u64;
    }

    // The final read-back: every register, recorded in the history; the rest must be zeros.
    let reader = config.clients as u32;
    let mut last_read: BTreeMap<u64, ReadOutcome> = BTreeMap::new();
    for block in registers.first_block..registers.first_block + registers.count {
        let invoke = epoch.elapsed().as_nanos() as Nanos;
        let answer = vol.read_at(block * bs, bs as usize).await;
        let complete = epoch.elapsed().as_nanos() as Nanos;
        let (outcome, error) = match &answer {
            Ok(data) => (ReadOutcome::Value(decode(data, block)), String::new()),
            Err(e) => (crate::linearizability::classify_read(e), e.to_string()),
        };
        last_read.insert(block, outcome);
        ops.push(Op {
            client: reader,
            block,
            invoke,
            complete,
            kind: OpKind::Read { outcome },
            error,
        });
    }
    let rest_start = (registers.first_block + registers.count) * bs;
    let mut offset = rest_start;
    while offset < info.size_bytes {
        let len = (info.size_bytes - offset).min(MIB) as usize;
        match vol.read_at(offset, len).await {
            Ok(data) => summary.stray_bytes += data.iter().filter(|&&b| b != 0).count() as u64,
            Err(e) => summary
                .problems
                .push(format!("reading back bytes {offset}+{len}: {e}")),
        }
        offset += len as u64;
    }
    if let Ok(ranges) = admin.list_lost(VOLUME).await {
        for r in ranges {
            lost.extend(r.offset / bs..(r.offset + r.length).div_ceil(bs));
        }
    }
    // Acknowledged bytes lost: a register with an acknowledged write that does not read back
    // as some write (zeros, DATA_LOSS, an error).
    let acknowledged: BTreeSet<u64> = ops
        .iter()
        .filter(|o| {
            matches!(
                o.kind,
                OpKind::Write {
                    outcome: crate::linearizability::WriteOutcome::Applied,
                    ..
                }
            )
        })
        .map(|o| o.block)
        .collect();
    for block in &acknowledged {
        if !matches!(
            last_read.get(block),
            Some(ReadOutcome::Value(crate::linearizability::Observed::Write(
                _
            )))
        ) {
            summary.acknowledged_bytes_lost += bs;
        }
    }
    summary.lost_blocks = lost.clone();
    summary.verdict = check(&ops, &lost);
    summary.column_check = cluster
        .check_columns(VOLUME, &[])
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:#}"));
    summary.elapsed = epoch.elapsed();
    Ok(summary)
}

/// The (column, component) pairs of `v` whose column is optimal.
fn optimal_members(v: &dagraid_proto::volume::v1::Volume) -> Vec<(u32, String)> {
    use dagraid_proto::volume::v1::ComponentState as S;
    v.components
        .iter()
        .filter(|c| c.state() == S::Optimal)
        .map(|c| (c.column, c.component_id.clone()))
        .collect()
}

/// Adds a hot spare on `node`, as large as the volume's components.
async fn add_spare(cluster: &Cluster, node: &str) -> Result<()> {
    let mut raw = cluster.volume_client().await?;
    let req = raw.request(dagraid_proto::volume::v1::AddSpareRequest {
        node_id: node.to_owned(),
        size_bytes: 0,
        block_size: 0,
    });
    raw.inner
        .add_spare(req)
        .await
        .with_context(|| format!("adding a spare on {node}"))?;
    Ok(())
}

/// Adds a spare on every reachable node that holds no column of the volume and no spare (an
/// original node whose column was rebuilt onto a spare, back after its restart), until the
/// pool has `config.spares` free ones. Returns how many it added.
async fn top_up_spares(cluster: &Cluster, config: &ChaosConfig) -> Result<u64> {
    use dagraid_proto::volume::v1 as vpb;
    let mut raw = cluster.volume_client().await?;
    let v = raw.get_volume(VOLUME).await?;
    let req = raw.request(vpb::ListSparesRequest {});
    let spares = raw.inner.list_spares(req).await?.into_inner().spares;
    let mut free = spares.iter().filter(|s| s.volume.is_empty()).count();
    let req = raw.request(vpb::GetClusterInfoRequest {});
    let info = raw.inner.get_cluster_info(req).await?.into_inner();
    let mut added = 0;
    for node in info.nodes {
        if free >= config.spares {
            break;
        }
        let holds_column = v.components.iter().any(|c| c.node_id == node.node_id);
        let holds_spare = spares.iter().any(|s| s.node_id == node.node_id);
        if node.reachable && !holds_column && !holds_spare {
            add_spare(cluster, &node.node_id).await?;
            if config.progress {
                eprintln!("  spare added on {}", node.node_id);
            }
            free += 1;
            added += 1;
        }
    }
    Ok(added)
}

/// Runs one fault if the volume's state allows it: apply, hold, heal, wait for recovery.
async fn run_fault(
    cluster: &mut Cluster,
    admin: &Client,
    fault: &Fault,
    level: ChaosLevel,
    summary: &mut Summary,
) -> Result<()> {
    let name = fault.kind.name();
    let mut skip = |why: &str| {
        *summary
            .faults_skipped
            .entry((name, why.to_owned()))
            .or_default() += 1;
        if summary.config.progress {
            eprintln!("  skipped {fault}: {why}");
        }
    };
    let status = match admin.volume(VOLUME).status().await {
        Ok(s) => s,
        Err(_) => {
            skip("volume status unavailable");
            return Ok(());
        }
    };
    let out = columns_out(&status);
    let column_of = |node: usize| {
        let id = format!("node{}", node + 1);
        status
            .components
            .iter()
            .find(|c| c.node_id == id)
            .map(|c| c.column as usize)
    };
    match fault.kind {
        FaultKind::CoordinatorKill => {
            // A column out that the record names (failed, or being re-added or rebuilt) is
            // covered by the partial-parity log: the restart replays it. A gone column is not
            // in the record (a crash would need a forced assembly), nor is a resync's stripe.
            if status.components.iter().any(|c| c.gone) {
                skip("a column is gone (a crash would need a forced assembly)");
                return Ok(());
            }
            if !out.is_empty()
                && !matches!(status.state, VolumeState::Optimal | VolumeState::Degraded)
            {
                skip("a column is out and the volume is resyncing");
                return Ok(());
            }
            if status.state == VolumeState::NotAssembled {
                skip("the volume is not assembled");
                return Ok(());
            }
        }
        FaultKind::NodeKill { node }
        | FaultKind::NodePause { node }
        | FaultKind::NodeStall { node }
        | FaultKind::DegradedCrash { node }
        | FaultKind::PowerCut { node, .. } => {
            if matches!(fault.kind, FaultKind::DegradedCrash { .. })
                && status.components.iter().any(|c| c.gone)
            {
                skip("a column is gone (a crash would need a forced assembly)");
                return Ok(());
            }
            let mut after = out.clone();
            if let Some(c) = column_of(node) {
                after.insert(c);
            }
            if after.len() > level.tolerance() {
                skip("beyond the layout's tolerance");
                return Ok(());
            }
            // A column that fails while the volume is resyncing after a coordinator crash is
            // the write hole again (its stripes not yet resynced may rebuild it wrong): the
            // resync then never finishes. Only SIGSTOPs below the deadline run meanwhile.
            let may_fail_column = !matches!(fault.kind, FaultKind::NodePause { .. });
            if may_fail_column
                && !matches!(status.state, VolumeState::Optimal | VolumeState::Degraded)
            {
                skip("the volume is resyncing (a column failing now is the write hole)");
                return Ok(());
            }
        }
    }
    if summary.config.progress {
        eprintln!("  {fault} (columns out before: {out:?})");
    }
    *summary.faults_run.entry(name).or_default() += 1;
    match fault.kind {
        FaultKind::NodePause { node } | FaultKind::NodeStall { node } => {
            cluster.nodes[node].pause().await?;
            tokio::time::sleep(fault.hold).await;
            cluster.nodes[node].resume().await?;
            summary.node_resumes += 1;
        }
        FaultKind::NodeKill { node } | FaultKind::PowerCut { node, .. } => {
            match fault.kind {
                FaultKind::PowerCut { seed, .. } => {
                    cluster.nodes[node].power_off(seed).await?;
                    summary.power_cuts += 1;
                }
                _ => cluster.nodes[node].kill9().await?,
            }
            tokio::time::sleep(fault.hold).await;
            let healed = Instant::now();
            cluster.nodes[node].restart_on_same_port().await?;
            summary.node_restarts += 1;
            let id = format!("node{}", node + 1);
            let back = eventually(SETTLE_TIMEOUT, || async {
                let info = admin.cluster_info().await.ok()?;
                info.nodes
                    .iter()
                    .any(|n| n.node_id == id && n.reachable)
                    .then_some(())
            })
            .await;
            if back.is_none() {
                bail!("{id} not reachable again within {SETTLE_TIMEOUT:?}");
            }
            // A kill beyond the gone rule (no spares): the node was found gone, so its column
            // comes back by re-add; that is part of the recovery.
            if matches!(fault.kind, FaultKind::NodeKill { .. })
                && fault.hold > Duration::from_millis(GONE_AFTER_MS)
                && summary.config.spares == 0
            {
                summary.long_kills += 1;
                let readded = eventually(SETTLE_TIMEOUT, || async {
                    let s = admin.volume(VOLUME).status().await.ok()?;
                    (!s.components
                        .iter()
                        .any(|c| c.node_id == id && c.state == ComponentState::Failed))
                    .then_some(())
                })
                .await;
                if readded.is_none() {
                    summary.problems.push(format!(
                        "{id} is back after {} ms, beyond the gone rule, but its column was not re-added within {SETTLE_TIMEOUT:?}",
                        fault.hold.as_millis()
                    ));
                }
            }
            summary.longest_recovery = summary.longest_recovery.max(healed.elapsed());
        }
        FaultKind::CoordinatorKill => {
            cluster.coordinator.kill9().await?;
            tokio::time::sleep(fault.hold).await;
            let healed = Instant::now();
            restart_coordinator(cluster, admin, summary).await?;
            summary.longest_recovery = summary.longest_recovery.max(healed.elapsed());
        }
        FaultKind::DegradedCrash { node } => {
            cluster.nodes[node].kill9().await?;
            let id = format!("node{}", node + 1);
            let failed = eventually(SETTLE_TIMEOUT, || async {
                let s = admin.volume(VOLUME).status().await.ok()?;
                s.components
                    .iter()
                    .any(|c| c.node_id == id && c.state != ComponentState::Optimal)
                    .then_some(())
            })
            .await;
            // A flush returns once every state change before it is durable: the failure is in
            // the record, with its log period, before the crash.
            if failed.is_some() && admin.volume(VOLUME).flush().await.is_ok() {
                cluster.coordinator.kill9().await?;
                restart_coordinator(cluster, admin, summary).await?;
                summary.degraded_crashes += 1;
            } else {
                summary.problems.push(format!(
                    "{id} killed, but its column was not seen out (or the flush failed): no crash while degraded"
                ));
            }
            tokio::time::sleep(fault.hold).await;
            let healed = Instant::now();
            cluster.nodes[node].restart_on_same_port().await?;
            summary.node_restarts += 1;
            if summary.config.spares == 0 {
                summary.long_kills += 1;
                let readded = eventually(SETTLE_TIMEOUT, || async {
                    let s = admin.volume(VOLUME).status().await.ok()?;
                    (!s.components
                        .iter()
                        .any(|c| c.node_id == id && c.state == ComponentState::Failed))
                    .then_some(())
                })
                .await;
                if readded.is_none() {
                    summary.problems.push(format!(
                        "{id} is back after a coordinator crash while it was out, but its column was not re-added within {SETTLE_TIMEOUT:?}"
                    ));
                }
            }
            summary.longest_recovery = summary.longest_recovery.max(healed.elapsed());
        }
    }
    Ok(())
}

/// Restarts the coordinator (after a kill -9) and waits until the volume is assembled: by
/// itself, never by force (a volume not assembled is an error of the soak).
async fn restart_coordinator(
    cluster: &mut Cluster,
    admin: &Client,
    summary: &mut Summary,
) -> Result<()> {
    cluster.coordinator.restart().await?;
    summary.coordinator_restarts += 1;
    let vol = admin.volume(VOLUME);
    let assembled = eventually(SETTLE_TIMEOUT, || async {
        let s = vol.status().await.ok()?;
        (s.state != VolumeState::NotAssembled).then_some(())
    })
    .await;
    if assembled.is_none() {
        let why = vol
            .status()
            .await
            .map(|s| s.assembly.problem.clone())
            .unwrap_or_default();
        bail!("the volume was not assembled within {SETTLE_TIMEOUT:?}: {why:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let c = ChaosConfig::new(ChaosLevel::Raid6, Duration::from_secs(600), 7);
        assert_eq!(schedule(&c), schedule(&c));
        let other = ChaosConfig::new(ChaosLevel::Raid6, Duration::from_secs(600), 8);
        assert_ne!(schedule(&c), schedule(&other));
    }

    #[test]
    fn kills_stay_within_the_tolerance_and_late_in_the_run() {
        for level in [ChaosLevel::Raid5, ChaosLevel::Raid6] {
            for seed in 0..20 {
                let c = ChaosConfig::new(level, Duration::from_secs(120), seed);
                let s = schedule(&c);
                let kills: Vec<&Fault> = s
                    .iter()
                    .filter(|f| {
                        matches!(
                            f.kind,
                            FaultKind::NodeKill { .. }
                                | FaultKind::NodeStall { .. }
                                | FaultKind::DegradedCrash { .. }
                                | FaultKind::PowerCut { .. }
                        )
                    })
                    .collect();
                assert_eq!(kills.len(), level.tolerance());
                assert!(kills.iter().all(|f| f.at >= c.duration * 65 / 100));
                let mut nodes: Vec<_> = kills
                    .iter()
                    .map(|f| match f.kind {
                        FaultKind::NodeKill { node }
                        | FaultKind::NodeStall { node }
                        | FaultKind::DegradedCrash { node }
                        | FaultKind::PowerCut { node, .. } => node,
                        _ => unreachable!(),
                    })
                    .collect();
                nodes.sort_unstable();
                nodes.dedup();
                assert_eq!(nodes.len(), kills.len());
                assert!(s.windows(2).all(|w| w[0].at <= w[1].at));
                assert!(s.iter().all(|f| match f.kind {
                    FaultKind::NodePause { .. } =>
                        f.hold < Duration::from_millis(NODE_DEADLINE_MS / 2),
                    FaultKind::NodeStall { .. } =>
                        f.hold > Duration::from_millis(NODE_DEADLINE_MS)
                            && f.hold < Duration::from_millis(GONE_AFTER_MS),
                    _ => true,
                }));
            }
        }
    }

    #[test]
    fn with_spares_column_faults_run_throughout_on_any_node() {
        for seed in 0..20 {
            let mut c = ChaosConfig::new(ChaosLevel::Raid5, Duration::from_secs(300), seed);
            c.spares = 1;
            let s = schedule(&c);
            assert_eq!(s, schedule(&c));
            let kills: Vec<&Fault> = s
                .iter()
                .filter(|f| {
                    !matches!(
                        f.kind,
                        FaultKind::NodePause { .. } | FaultKind::CoordinatorKill
                    )
                })
                .collect();
            assert!(
                kills.len() >= 10,
                "seed {seed}: {} column faults",
                kills.len()
            );
            assert!(
                kills
                    .iter()
                    .all(|f| f.at >= c.duration / 4 && f.at < c.duration * 9 / 10)
            );
            assert!(s.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(s.iter().all(|f| match f.kind {
                FaultKind::NodeKill { node }
                | FaultKind::NodePause { node }
                | FaultKind::NodeStall { node }
                | FaultKind::DegradedCrash { node }
                | FaultKind::PowerCut { node, .. } => node < 6,
                FaultKind::CoordinatorKill => true,
            }));
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = ChaosConfig::new(ChaosLevel::Raid5, Duration::from_secs(1), 1);
        c.clients = 0;
        assert!(c.validate().is_err());
        assert!("raid7".parse::<ChaosLevel>().is_err());
        assert_eq!("RAID6".parse::<ChaosLevel>().unwrap(), ChaosLevel::Raid6);
    }
}

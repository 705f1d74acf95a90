//! The whole cluster in one deterministic simulation (issue 25), on turmoil: a coordinator host
//! and four storage-node hosts run their real code (`dagraid_coordinator::Coordinator`,
//! `dagraid_node::start_with`) over turmoil's simulated TCP, each node on in-memory media
//! (`dagraid_node::memory`), the coordinator's store in memory, trace export off. A client host
//! creates a RAID 5 volume through the real gRPC API, writes a workload drawn from the seed and
//! records what was acknowledged, while faults drawn from the same seed hit the cluster: a node
//! cut off from the coordinator and healed, a node crashed and started again. Then everything
//! is healed, the volume must come back to optimal (re-add), every byte must read back as
//! acknowledged, and the column checker reads every component straight from its node and
//! checks parity against data on every stripe.
//!
//! `cargo test -p dagraid-tests --test simulation` runs the CI seeds; `SIM_SEED=S` runs seed
//! `S` alone and prints its events (`-- --nocapture` to see them); `SIM_SEEDS=N` runs seeds
//! 1..=N. A failing seed prints the command that replays it.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use dagraid_coordinator::config::NodeSpec;
use dagraid_coordinator::store::MemoryStoreMedia;
use dagraid_coordinator::{Coordinator, CoordinatorConfig, CoordinatorSetup};
use dagraid_core::layout::ColumnSet;
use dagraid_core::testing::reference::verify_columns;
use dagraid_node::memory::MemoryMedia;
use dagraid_node::{NodeConfig, NodeSetup};
use dagraid_proto::storage::v1 as spb;
use dagraid_proto::volume::v1 as vpb;
use dagraid_tls::transport::{BoxedIo, Connector, Incoming};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

/// Seeds `cargo test` runs when neither `SIM_SEED` nor `SIM_SEEDS` is set (about 0.25 s each,
/// some 30 s in all on a 2-core machine); 30, 67 and 71 found the bug of
/// [`regression_seed_16_a_column_failed_before_its_node_was_gone_is_re_added`]. Fewer than a
/// sweep on purpose: a run is not fully deterministic yet (ARCHITECTURE.md, "The deterministic
/// simulation"), so a CI seed can take another history from one run to the next, and a seed
/// of a rare bug still open would then fail CI at random.
const CI_SEEDS: std::ops::RangeInclusive<u64> = 1..=120;

const COORDINATOR: &str = "coordinator";
const COORDINATOR_PORT: u16 = 7070;
const NODE_PORT: u16 = 7100;
const NODES: [&str; 4] = ["node1", "node2", "node3", "node4"];
const VOLUME: &str = "vol";
const BLOCK: u64 = 4096;
const STRIPE_UNIT: u64 = 16 * 1024;
/// 3 data columns of 16 KiB units: 32 stripes.
const VOLUME_BYTES: u64 = 3 * STRIPE_UNIT * 32;
/// Largest read of the read-back and of the column checker.
const READ_CHUNK: u64 = 64 * 1024;
/// Simulated time a run may take before it counts as hung.
const SIM_LIMIT: Duration = Duration::from_secs(900);

/// A fault the client asks the simulation to apply (crashes are the `Sim`'s to do).
#[derive(Debug, Clone)]
enum Fault {
    /// The coordinator and the node cut off both ways (in-flight messages lost).
    Partition(&'static str),
    /// Messages from the first host to the second lost, the other way through.
    PartitionOneway(&'static str, &'static str),
    /// Messages between the coordinator and the node held, delivered at the heal (a stall).
    Hold(&'static str),
    /// The coordinator's link to the node healed, held messages delivered.
    Heal(&'static str),
    Crash(&'static str),
    Restart(&'static str),
    /// Every message between the coordinator and the node takes this long, to twice as long.
    Slow(&'static str, Duration),
    /// The link back to turmoil's default latency (0 to 100 ms).
    Fast(&'static str),
}

/// What the client and the driver loop share (one thread: turmoil runs every host on it).
#[derive(Default)]
struct Shared {
    faults: VecDeque<Fault>,
    events: Vec<String>,
    /// The nodes' media, for faults on the disks themselves.
    media: HashMap<&'static str, std::sync::Arc<MemoryMedia>>,
    stats: Stats,
}

/// Figures of one run, summed over a sweep.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    faults: u64,
    acknowledged_writes: u64,
    acknowledged_bytes: u64,
    unknown_writes: u64,
    bad_blocks: u64,
    refused_reads: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.faults += o.faults;
        self.acknowledged_writes += o.acknowledged_writes;
        self.acknowledged_bytes += o.acknowledged_bytes;
        self.unknown_writes += o.unknown_writes;
        self.bad_blocks += o.bad_blocks;
        self.refused_reads += o.refused_reads;
    }
}

type SharedRef = Rc<RefCell<Shared>>;

fn event(shared: &SharedRef, what: String) {
    let at = turmoil::sim_elapsed().unwrap_or_default();
    shared
        .borrow_mut()
        .events
        .push(format!("{:>9.3}s {what}", at.as_secs_f64()));
}

/// The connections accepted on a simulated listener, as a server's injected incoming stream.
fn incoming(listener: turmoil::net::TcpListener) -> Incoming {
    Box::pin(futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| BoxedIo::new(s));
        Some((accepted, listener))
    }))
}

/// Connects over the simulated network to the URI's `host:port`.
fn connector() -> Connector {
    Connector::new(|uri: Uri| async move {
        let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
            return Err(std::io::Error::other(format!("{uri}: expected host:port")));
        };
        let stream = turmoil::net::TcpStream::connect((host, port)).await?;
        Ok(BoxedIo::new(stream))
    })
}

fn channel(address: &str) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("valid address")
        // A connection to a crashed or cut-off host closes instead of hanging every call.
        .timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_millis(500))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(connector())
}

type Api = vpb::volume_service_client::VolumeServiceClient<Channel>;

/// The model of the volume: the acknowledged bytes, and for bytes under a write of unknown
/// outcome the other value they may hold.
struct Model {
    bytes: Vec<u8>,
    maybe: HashMap<usize, Vec<u8>>,
}

impl Model {
    fn acknowledged(&mut self, offset: usize, data: &[u8]) {
        self.bytes[offset..offset + data.len()].copy_from_slice(data);
        for i in offset..offset + data.len() {
            self.maybe.remove(&i);
        }
    }

    fn unknown(&mut self, offset: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.maybe.entry(offset + i).or_default().push(*b);
        }
    }

    /// The first byte of `got` (read at `offset`) that no history allows.
    fn check(&self, offset: usize, got: &[u8]) -> Result<(), String> {
        for (i, b) in got.iter().enumerate() {
            let at = offset + i;
            if *b != self.bytes[at] && !self.maybe.get(&at).is_some_and(|m| m.contains(b)) {
                return Err(format!(
                    "byte {at}: read {b:#04x}, acknowledged {:#04x}, possible {:?}",
                    self.bytes[at],
                    self.maybe.get(&at)
                ));
            }
        }
        Ok(())
    }
}

/// How the coordinator is cut off from one node.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Both,
    /// The coordinator's messages to the node lost; the node's answers get through.
    CoordinatorToNode,
    /// The node's answers lost; the coordinator's messages get through.
    NodeToCoordinator,
    /// Nothing lost, everything held until the heal.
    Stall,
}

/// The fault schedule and workload of one seed.
struct Plan {
    cut: Cut,
    partitioned: &'static str,
    partition_for: Duration,
    /// The cut node's link to the coordinator slow after the heal, this latency to twice it.
    slow: Option<(&'static str, Duration)>,
    /// Latent bad blocks: volume blocks (in distinct stripes) corrupted on their column.
    bad_blocks: Vec<u64>,
    crashed: &'static str,
    down_for: Duration,
    /// The coordinator crashes before this write (counted over the whole workload) ...
    coordinator_crash_at: Option<usize>,
    /// ... and starts again this much later.
    coordinator_down_for: Duration,
    /// Two nodes cut off at once (beyond RAID 5's tolerance), with reads meanwhile.
    beyond: Option<(&'static str, &'static str, Duration)>,
    writes_per_phase: usize,
}

/// The fault kinds of the CI seeds and of a sweep unless `SIM_FAULTS` says otherwise: those
/// that pass every seed tried. The others find the bugs of the ignored regression cases.
const CI_FAULTS: &[&str] = &["stall", "slow", "bad-blocks"];

/// The fault kinds of a run: `SIM_FAULTS` (a comma-separated list, or `all`), else
/// [`CI_FAULTS`]. A run draws every kind's values from the seed either way, so a seed's other
/// faults stay the same when one kind is turned off.
fn fault_kinds() -> Vec<String> {
    match std::env::var("SIM_FAULTS") {
        Ok(list) if list == "all" => ALL_FAULTS.iter().map(|k| k.to_string()).collect(),
        Ok(list) if list == "none" => Vec::new(),
        Ok(list) => list.split(',').map(|k| k.trim().to_owned()).collect(),
        Err(_) => CI_FAULTS.iter().map(|k| k.to_string()).collect(),
    }
}

/// Every fault kind a run can draw besides the first step's partition and node crash.
const ALL_FAULTS: &[&str] = &[
    "oneway",
    "stall",
    "slow",
    "bad-blocks",
    "coordinator-crash",
    "beyond",
];

/// Write phases of the workload.
const PHASES: usize = 5;

impl Plan {
    /// The first step's faults and the workload's size come from `rng` as they always did
    /// (a seed of the first step replays the same history with no other kinds), the other
    /// kinds from `more`.
    fn draw(rng: &mut StdRng, more: &mut StdRng, kinds: &[String]) -> Self {
        let partitioned = NODES[rng.random_range(0..NODES.len())];
        // Below and above the coordinator's 3 s gone threshold.
        let partition_for = Duration::from_millis(rng.random_range(500..8000));
        let crashed = NODES[rng.random_range(0..NODES.len())];
        let down_for = Duration::from_millis(rng.random_range(500..8000));
        let writes_per_phase = rng.random_range(4..12);
        let rng = more;
        let cut = match rng.random_range(0..4) {
            0 => Cut::Both,
            1 => Cut::CoordinatorToNode,
            2 => Cut::NodeToCoordinator,
            _ => Cut::Stall,
        };
        let slow = rng.random_bool(0.5).then(|| {
            (
                NODES[rng.random_range(0..NODES.len())],
                Duration::from_millis(rng.random_range(100..1500)),
            )
        });
        let stripes = VOLUME_BYTES / (3 * STRIPE_UNIT);
        let mut bad_stripes: Vec<u64> = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            let s = rng.random_range(0..stripes);
            if !bad_stripes.contains(&s) {
                bad_stripes.push(s);
            }
        }
        let per_stripe = 3 * STRIPE_UNIT / BLOCK;
        let bad_blocks = bad_stripes
            .iter()
            .map(|s| s * per_stripe + rng.random_range(0..per_stripe))
            .collect();
        let coordinator_crash_at = rng
            .random_bool(0.5)
            .then(|| rng.random_range(0..PHASES * writes_per_phase));
        let coordinator_down_for = Duration::from_millis(rng.random_range(100..6000));
        let beyond = rng.random_bool(0.3).then(|| {
            let a = rng.random_range(0..NODES.len());
            let b = (a + rng.random_range(1..NODES.len())) % NODES.len();
            (
                NODES[a],
                NODES[b],
                Duration::from_millis(rng.random_range(500..8000)),
            )
        });
        let on = |kind: &str| kinds.iter().any(|k| k == kind);
        Plan {
            cut: match cut {
                Cut::CoordinatorToNode | Cut::NodeToCoordinator if !on("oneway") => Cut::Both,
                Cut::Stall if !on("stall") => Cut::Both,
                cut => cut,
            },
            slow: slow.filter(|_| on("slow")),
            bad_blocks: if on("bad-blocks") {
                bad_blocks
            } else {
                Vec::new()
            },
            coordinator_crash_at: coordinator_crash_at.filter(|_| on("coordinator-crash")),
            beyond: beyond.filter(|_| on("beyond")),
            partitioned,
            partition_for,
            crashed,
            down_for,
            coordinator_down_for,
            writes_per_phase,
        }
    }
}

/// The client's side of a run: the API, the seed's randomness, the model.
struct Client {
    api: Api,
    rng: StdRng,
    /// The randomness of the fault kinds beyond the first step's.
    more: StdRng,
    model: Model,
    shared: SharedRef,
    writes: usize,
    coordinator_crash_at: Option<usize>,
    coordinator_down_for: Duration,
}

impl Client {
    fn fault(&self, f: Fault) {
        event(&self.shared, format!("fault: {f:?}"));
        let mut shared = self.shared.borrow_mut();
        shared.faults.push_back(f);
        shared.stats.faults += 1;
    }

    /// Writes `n` random extents, recording each as acknowledged or of unknown outcome; the
    /// coordinator crashes on the way if the plan says so.
    async fn write_some(&mut self, n: usize) {
        for _ in 0..n {
            if self.coordinator_crash_at == Some(self.writes) {
                self.fault(Fault::Crash(COORDINATOR));
                tokio::time::sleep(self.coordinator_down_for).await;
                self.fault(Fault::Restart(COORDINATOR));
            }
            self.writes += 1;
            let rng = &mut self.rng;
            let blocks = VOLUME_BYTES / BLOCK;
            let first = rng.random_range(0..blocks);
            let count = rng.random_range(1..=6).min(blocks - first);
            let offset = (first * BLOCK) as usize;
            let mut data = vec![0u8; (count * BLOCK) as usize];
            rng.fill(&mut data[..]);
            let pause = Duration::from_millis(rng.random_range(10..300));
            let answer = self
                .api
                .write(vpb::WriteRequest {
                    volume: VOLUME.into(),
                    offset: offset as u64,
                    data: data.clone().into(),
                })
                .await;
            match answer {
                Ok(_) => {
                    self.model.acknowledged(offset, &data);
                    let mut shared = self.shared.borrow_mut();
                    shared.stats.acknowledged_writes += 1;
                    shared.stats.acknowledged_bytes += data.len() as u64;
                }
                Err(status) => {
                    event(
                        &self.shared,
                        format!(
                            "write {offset}+{} failed: {:?} {}",
                            data.len(),
                            status.code(),
                            status.message()
                        ),
                    );
                    self.model.unknown(offset, &data);
                    self.shared.borrow_mut().stats.unknown_writes += 1;
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Reads `length` bytes at `offset`: bytes must be what the model allows; an error is
    /// allowed only where `refusal_allowed` (beyond the layout's tolerance) and is counted.
    async fn read_checked(
        &mut self,
        offset: u64,
        length: u64,
        refusal_allowed: bool,
    ) -> Result<(), String> {
        let answer = self
            .api
            .read(vpb::ReadRequest {
                volume: VOLUME.into(),
                offset,
                length,
            })
            .await;
        match answer {
            Ok(r) => self
                .model
                .check(offset as usize, &r.into_inner().data)
                .map_err(|e| format!("read {offset}+{length}: {e}")),
            Err(s) if refusal_allowed => {
                event(
                    &self.shared,
                    format!(
                        "read {offset}+{length} refused: {:?} {}",
                        s.code(),
                        s.message()
                    ),
                );
                self.shared.borrow_mut().stats.refused_reads += 1;
                Ok(())
            }
            Err(s) => Err(format!("read {offset}+{length}: {s}")),
        }
    }

    /// Reads the whole volume back through the API and compares it with the model.
    async fn read_all(&mut self) -> Result<(), String> {
        let mut offset = 0;
        while offset < VOLUME_BYTES {
            let length = READ_CHUNK.min(VOLUME_BYTES - offset);
            self.read_checked(offset, length, false).await?;
            offset += length;
        }
        Ok(())
    }

    /// Waits for the volume to be optimal; if it does not get there, still reads every byte
    /// back (a volume that never settles must not lose or change acknowledged bytes either).
    async fn settle(&mut self) -> Result<(), String> {
        let Err(e) = optimal(&mut self.api, &self.shared, Duration::from_secs(120)).await else {
            return Ok(());
        };
        Err(match self.read_all().await {
            Ok(()) => format!("{e} (every acknowledged byte still reads back)"),
            Err(read) => format!("{e}; and the read-back failed: {read}"),
        })
    }

    /// Corrupts one byte of each of `blocks` (volume blocks) on the column that holds it, as
    /// a latent bad block the node's checksums find.
    async fn corrupt(&mut self, blocks: &[u64]) -> Result<(), String> {
        let v = volume(&mut self.api).await.map_err(|s| s.to_string())?;
        let layout = dagraid_tests::cluster::layout_of(&v).map_err(|e| e.to_string())?;
        for &block in blocks {
            let at = layout
                .locate(block * BLOCK)
                .map_err(|e| format!("block {block}: {e}"))?;
            let c = v
                .components
                .iter()
                .find(|c| c.column as usize == at.column)
                .ok_or_else(|| format!("no component for column {}", at.column))?;
            let byte = self.more.random_range(0..BLOCK);
            let shared = self.shared.borrow();
            let disk = shared
                .media
                .iter()
                .find(|(name, _)| **name == c.node_id.as_str())
                .and_then(|(_, media)| media.component(&c.component_id))
                .ok_or_else(|| format!("no disk for component {}", c.component_id))?;
            disk.corrupt(dagraid_node::layout::HEADER_REGION_BYTES + at.component_offset + byte);
            drop(shared);
            event(
                &self.shared,
                format!(
                    "fault: bad block: volume block {block} (column {}, {} component byte {})",
                    at.column, c.node_id, at.component_offset
                ),
            );
            let mut shared = self.shared.borrow_mut();
            shared.stats.faults += 1;
            shared.stats.bad_blocks += 1;
        }
        Ok(())
    }
}

async fn volume(api: &mut Api) -> Result<vpb::Volume, tonic::Status> {
    Ok(api
        .get_volume(vpb::GetVolumeRequest {
            name: VOLUME.into(),
        })
        .await?
        .into_inner())
}

fn summary(v: &vpb::Volume) -> String {
    let columns: Vec<String> = v
        .components
        .iter()
        .map(|c| format!("{}:{:?}", c.node_id, c.state()))
        .collect();
    format!("{:?} [{}]", v.state(), columns.join(" "))
}

/// Waits until the volume is optimal with every column optimal.
async fn optimal(api: &mut Api, shared: &SharedRef, within: Duration) -> Result<(), String> {
    let until = tokio::time::Instant::now() + within;
    let mut last = String::new();
    loop {
        if let Ok(v) = volume(api).await {
            let now = summary(&v);
            if now != last {
                event(shared, format!("volume {now}"));
                last = now;
            }
            let all = v
                .components
                .iter()
                .all(|c| c.state() == vpb::ComponentState::Optimal);
            if v.state() == vpb::VolumeState::Optimal && all {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > until {
            return Err(format!(
                "the volume is not optimal within {within:?}: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The column checker: every component read straight from its node, parity checked against
/// data on every stripe.
async fn check_columns(api: &mut Api) -> Result<(), String> {
    let v = volume(api).await.map_err(|s| s.to_string())?;
    let layout = dagraid_tests::cluster::layout_of(&v).map_err(|e| e.to_string())?;
    let used = layout.geometry().used_blocks_per_column();
    let mut columns = Vec::new();
    for c in &v.components {
        let mut node = spb::storage_node_client::StorageNodeClient::new(channel(&c.node_address))
            .max_decoding_message_size(usize::MAX);
        let mut column = Vec::new();
        let step = READ_CHUNK / BLOCK;
        let mut b = 0;
        while b < used {
            let n = step.min(used - b);
            let r = node
                .read_blocks(spb::ReadBlocksRequest {
                    fencing: None,
                    component_id: c.component_id.clone(),
                    start_block: b,
                    block_count: n as u32,
                })
                .await
                .map_err(|s| format!("column {}: ReadBlocks {b}+{n}: {s}", c.column))?;
            column.extend_from_slice(&r.into_inner().data);
            b += n;
        }
        columns.push(column);
    }
    verify_columns(&layout, &columns, &ColumnSet::default()).map_err(|errors| {
        format!(
            "{} inconsistent units, first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        )
    })
}

/// The client's whole run: the volume, the workload with its faults, the checks.
async fn scenario(seed: u64, kinds: Vec<String>, shared: SharedRef) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut more = StdRng::seed_from_u64(seed ^ 0x5eed_fa17_0000_0000);
    let plan = Plan::draw(&mut rng, &mut more, &kinds);
    let mut api = Api::new(channel(&format!("{COORDINATOR}:{COORDINATOR_PORT}")))
        .max_decoding_message_size(usize::MAX);
    // The coordinator first checks the nodes; creation needs all of them.
    let created = loop {
        match api
            .create_volume(vpb::CreateVolumeRequest {
                name: VOLUME.into(),
                level: vpb::RaidLevel::Raid5 as i32,
                size_bytes: VOLUME_BYTES,
                columns: NODES.len() as u32,
                stripe_unit_bytes: STRIPE_UNIT,
                block_size: BLOCK as u32,
                nodes: NODES.iter().map(|n| n.to_string()).collect(),
            })
            .await
        {
            Ok(v) => break v.into_inner(),
            Err(s) if turmoil::elapsed() < Duration::from_secs(30) => {
                tracing::debug!(status = %s, "volume not created yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(s) => return Err(format!("creating the volume: {s}")),
        }
    };
    event(
        &shared,
        format!("volume created: id {} {}", created.id, summary(&created)),
    );
    let n = plan.writes_per_phase;
    let mut c = Client {
        api,
        rng,
        more,
        model: Model {
            bytes: vec![0; VOLUME_BYTES as usize],
            maybe: HashMap::new(),
        },
        shared: shared.clone(),
        writes: 0,
        coordinator_crash_at: plan.coordinator_crash_at,
        coordinator_down_for: plan.coordinator_down_for,
    };

    // Phase 1-3: the coordinator cut off from one node (both ways, one way or stalled),
    // another link maybe slow.
    c.write_some(n).await;
    let p = plan.partitioned;
    c.fault(match plan.cut {
        Cut::Both => Fault::Partition(p),
        Cut::CoordinatorToNode => Fault::PartitionOneway(COORDINATOR, p),
        Cut::NodeToCoordinator => Fault::PartitionOneway(p, COORDINATOR),
        Cut::Stall => Fault::Hold(p),
    });
    c.write_some(n).await;
    tokio::time::sleep(plan.partition_for).await;
    c.fault(Fault::Heal(p));
    // The node comes back slow (the same node: a slow node besides the cut one would be two
    // faults at once, beyond RAID 5's tolerance when the slow one's calls time out).
    if let Some((_, latency)) = plan.slow {
        c.fault(Fault::Slow(p, latency));
    }
    c.write_some(n).await;
    if plan.slow.is_some() {
        c.fault(Fault::Fast(p));
    }
    c.settle().await?;

    // Latent bad blocks, one per stripe at most, with every node up: writes over them, then
    // reads of them must answer the acknowledged bytes (and repair them).
    if !plan.bad_blocks.is_empty() {
        c.corrupt(&plan.bad_blocks).await?;
        for &block in &plan.bad_blocks {
            c.read_checked(block * BLOCK, BLOCK, false).await?;
        }
        event(&shared, "bad blocks read back as acknowledged".into());
    }

    // Phase 4-5: a node crashed and started again.
    c.fault(Fault::Crash(plan.crashed));
    c.write_some(n).await;
    tokio::time::sleep(plan.down_for).await;
    c.fault(Fault::Restart(plan.crashed));
    c.write_some(n).await;
    c.settle().await?;

    // Beyond tolerance: two nodes cut off at once; reads may be refused, never wrong.
    if let Some((a, b, for_)) = plan.beyond {
        c.fault(Fault::Partition(a));
        c.fault(Fault::Partition(b));
        let until = tokio::time::Instant::now() + for_;
        while tokio::time::Instant::now() < until {
            let blocks = VOLUME_BYTES / BLOCK;
            let first = c.more.random_range(0..blocks);
            let count = c.more.random_range(1..=16).min(blocks - first);
            c.read_checked(first * BLOCK, count * BLOCK, true).await?;
            tokio::time::sleep(Duration::from_millis(c.more.random_range(10..500))).await;
        }
        c.fault(Fault::Heal(a));
        c.fault(Fault::Heal(b));
        c.settle().await?;
    }

    c.read_all().await?;
    event(&shared, "read-back: every byte as acknowledged".into());
    check_columns(&mut c.api).await?;
    event(
        &shared,
        "column checker: parity equal to data on every stripe".into(),
    );
    Ok(())
}

fn node_host(sim: &mut turmoil::Sim<'_>, name: &'static str, media: std::sync::Arc<MemoryMedia>) {
    sim.host(name, move || {
        let media = media.clone();
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", NODE_PORT)).await?;
            let config = NodeConfig {
                listen: ([0, 0, 0, 0], NODE_PORT).into(),
                node_id: Some(name.into()),
                ..NodeConfig::new(format!("/sim/{name}"))
            };
            let started = dagraid_node::start_with(
                config,
                NodeSetup {
                    media: Some(media),
                    incoming: Some(incoming(listener)),
                },
            )
            .await?;
            started.serve(std::future::pending()).await?;
            Ok(())
        }
    });
}

fn coordinator_host(sim: &mut turmoil::Sim<'_>, store: MemoryStoreMedia, seed: u64) {
    sim.host(COORDINATOR, move || {
        let store = store.clone();
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", COORDINATOR_PORT)).await?;
            let config = CoordinatorConfig {
                listen: ([0, 0, 0, 0], COORDINATOR_PORT).into(),
                nodes: NODES
                    .iter()
                    .map(|n| NodeSpec {
                        id: n.to_string(),
                        address: format!("{n}:{NODE_PORT}"),
                    })
                    .collect(),
                ..CoordinatorConfig::new("/sim/coordinator")
            };
            let coordinator = Coordinator::start_with(
                config,
                CoordinatorSetup {
                    store: Some(store),
                    incoming: Some(incoming(listener)),
                    node_connector: Some(connector()),
                    id_seed: Some(seed),
                },
            )
            .await?;
            coordinator.run_until(std::future::pending()).await?;
            Ok(())
        }
    });
}

/// What a run leaves: its events and figures.
type Run = (Vec<String>, Stats);

/// Runs seed `seed`; `Err` carries what failed and the run's events.
fn run(seed: u64, kinds: &[&str]) -> Result<Run, (String, Vec<String>)> {
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(SIM_LIMIT)
        .tick_duration(Duration::from_millis(2))
        .rng_seed(seed)
        .build();
    let shared: SharedRef = Rc::default();
    for (i, name) in NODES.iter().enumerate() {
        let media = MemoryMedia::new(seed ^ ((i as u64 + 1) << 48));
        shared.borrow_mut().media.insert(name, media.clone());
        node_host(&mut sim, name, media);
    }
    coordinator_host(&mut sim, MemoryStoreMedia::default(), seed);
    let outcome: Rc<RefCell<Option<Result<(), String>>>> = Rc::default();
    {
        let shared = shared.clone();
        let outcome = outcome.clone();
        sim.client("client", async move {
            let r = scenario(seed, kinds, shared).await;
            *outcome.borrow_mut() = Some(r);
            Ok(())
        });
    }
    let events = |shared: &SharedRef| shared.borrow().events.clone();
    loop {
        let done = match sim.step() {
            Ok(done) => done,
            Err(e) => return Err((format!("simulation: {e}"), events(&shared))),
        };
        let pending: Vec<Fault> = shared.borrow_mut().faults.drain(..).collect();
        for f in pending {
            match f {
                Fault::Partition(node) => sim.partition(COORDINATOR, node),
                Fault::PartitionOneway(from, to) => sim.partition_oneway(from, to),
                Fault::Hold(node) => sim.hold(COORDINATOR, node),
                Fault::Heal(node) => {
                    sim.repair(COORDINATOR, node);
                    sim.release(COORDINATOR, node);
                }
                Fault::Crash(host) => sim.crash(host),
                Fault::Restart(host) => sim.bounce(host),
                Fault::Slow(node, latency) => {
                    sim.set_link_latency(COORDINATOR, node, latency);
                    sim.set_link_max_message_latency(COORDINATOR, node, latency * 2);
                }
                Fault::Fast(node) => {
                    sim.set_link_latency(COORDINATOR, node, Duration::ZERO);
                    sim.set_link_max_message_latency(COORDINATOR, node, Duration::from_millis(100));
                }
            }
        }
        if done {
            break;
        }
    }
    let result = outcome.borrow_mut().take();
    match result {
        Some(Ok(())) => Ok((events(&shared), shared.borrow().stats)),
        Some(Err(e)) => Err((e, events(&shared))),
        None => Err(("the client never finished".into(), events(&shared))),
    }
}

fn replay_command(seed: u64, kinds: &[&str]) -> String {
    format!(
        "SIM_SEED={seed} SIM_FAULTS={} cargo test -p dagraid-tests --test simulation -- --nocapture",
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(",")
        }
    )
}

/// Runs one regression seed with these fault kinds, printing its events if it fails.
fn regression(seed: u64, kinds: &[&str]) {
    log_if_asked();
    if let Err((why, events)) = run(seed, kinds) {
        for e in &events {
            println!("seed {seed}: {e}");
        }
        panic!(
            "seed {seed}: {why}; replay: {}",
            replay_command(seed, kinds)
        );
    }
}

fn log_if_asked() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Regression case (fixed): node1 crashes and is started again 3.1 s later, within the
/// coordinator's gone threshold (3 s and two missed health checks), after a write failed its
/// column. The node was never found gone, so its failed column was never noted as returned and
/// the volume stayed degraded until the down-out delay (a full rebuild onto a spare; never,
/// with no spare). 8 of seeds 1..=100 hit it (16, 30, 67, 71, 76, 84, 94, 98; partitions of
/// about 4 s too). Fixed by `VolumeManager::node_silent`: a node with a failed column that
/// misses a health check is away, and its column is re-added when it answers again.
#[test]
fn regression_seed_16_a_column_failed_before_its_node_was_gone_is_re_added() {
    regression(16, &[]);
}

/// Open bug: the coordinator crashes soon after a node found gone answers again, before that
/// node's failed column is re-added. The new coordinator assembles the volume with the column
/// failed and the node answering: the node was never away for it, so the column is never
/// noted as returned and the volume stays degraded (seeds 1, 2, 9, 13, 23, 25, 53 of 1..=60
/// with coordinator crashes). Noting every such column as returned at assembly fixed the seed
/// but also re-added columns failed by hand (`dagraid fail`), which stay failed until re-added
/// by hand (`client/cli/tests/up.rs` caught it); the fix needs the administrator's fail
/// recorded durably.
#[test]
#[ignore = "open bug: a column whose re-add a coordinator crash cut off is not re-added after the restart"]
fn open_seed_2_a_column_failed_before_a_coordinator_restart_is_re_added() {
    regression(2, &["coordinator-crash"]);
}

/// Regression case (fixed): node3, found gone during an 11 s partition, comes back slow (1.5
/// to 3 s a message). Its re-add starts, a label write on the old connection fails, the column
/// is failed again and the re-add stops; the node never misses a health check after that, so
/// nothing noted the column as returned again and the volume stayed degraded (seeds 9, 32, 54
/// of 1..=60 with slow links; seed 55 without, the label write racing the reconnection).
/// Fixed in `Rebuilds`: a re-add cut short by its column failing again is tried again, up to
/// `READD_TRIES` times in a row.
#[test]
fn regression_seed_9_a_re_add_cut_short_on_a_slow_node_is_tried_again() {
    regression(9, &["slow"]);
}

/// Regression case (fixed): node3 and the coordinator crash together, so the volume (not shut
/// down cleanly, a column missing at the crash and not covered by the partial-parity log) is
/// not assembled without `--force`, and the refusal says "bring their nodes back and the volume
/// assembles by itself". The node came back, but nothing assembled an unassembled volume again
/// (only the coordinator's start and `dagraid volume assemble`): it stayed NotAssembled. Seeds
/// 42, 50, 57, 82 of 1..=100 with coordinator crashes. Fixed by
/// `VolumeManager::assemble_returned`, which the reconstruction monitor calls on each look: a
/// volume not assembled while a node of a failed column did not answer is assembled again,
/// not forced, once that node answers.
#[test]
fn regression_seed_42_an_unassembled_volume_is_assembled_when_its_node_returns() {
    regression(42, &["coordinator-crash"]);
}

/// Open bug: after a coordinator crash the volume is assembled not clean and resyncs its dirty
/// regions; a node is cut off during the resync and its column failed. The resync cannot
/// recompute the parity of a stripe whose data unit is on the failed column and retries
/// forever, while the re-add of that column waits for the resync to finish: the volume stays
/// Resyncing with the column failed after the node answers again. Seeds 81 and 89 of 1..=100
/// with coordinator crashes (81, 89, 121, 124 of 1..=200).
///
/// Not a small fix, and not done: the stripes the resync cannot do are those whose parity a
/// write cut short by the crash may have torn and whose data unit is on the failed column. A
/// re-add rebuilds the column's units of the dirty regions from the parity, which is exactly
/// what may be torn there, so starting it before the resync ends would serve wrong bytes. The
/// returned component holds such a unit as it was when the column failed, right unless a
/// degraded write changed it since (its new value then only in the parity): the re-add has to
/// keep the component's own units of the stripes awaiting their resync that no write touched
/// while the column was out (the resync then recomputes their parity) and rebuild only the
/// others, which needs a per-stripe record of those writes that the parity map (per region)
/// does not keep.
#[test]
#[ignore = "open bug: a resync that needs a failed column and that column's re-add wait for each other"]
fn open_seed_81_a_resync_and_the_re_add_it_waits_for_finish() {
    regression(81, &["coordinator-crash"]);
}

/// Regression case (fixed): node4's messages to the coordinator are lost (one-way partition)
/// while the coordinator fences its component after a write with an unknown outcome: the node
/// takes the component's new fence epoch, the coordinator never hears so, and the column is
/// failed. After the heal every re-add read its label at the old epoch and was refused as
/// `stale-epoch`; the re-add gave up after `READD_TRIES` and the volume stayed degraded. Seeds
/// 1, 44, 49, 50, 58 of 1..=60 with one-way partitions; with the CI kinds, seed 892 of the
/// 2,500-seed sweep, and 1126 (the re-add's own fence answer lost on a connection to a node
/// back slow). Fixed in `Rebuilds::start_readd`: the re-add fences the component before it
/// reads anything from it (at the lost fence's epoch again, which the node takes again), then
/// reads the label at the new epoch.
#[test]
fn regression_seed_1_a_fence_answer_lost_in_a_one_way_partition() {
    regression(1, &["oneway"]);
}

/// Open bug: two nodes (node2, node4) cut off at once for 3 s, beyond RAID 5's tolerance:
/// reads were refused as unavailable, never wrong, but after the heal node2's column stays
/// failed: its re-add is refused because its label counter (7) is newer than the one the
/// coordinator expects, and given up after `READD_TRIES`. Seeds 13, 76, 91, 163 of 1..=280
/// with the CI kinds and two nodes cut off. The log shows how: the end of an earlier re-add of
/// node2's column (column optimal, counter 7) was written to that column's label, but not
/// recorded (node4's label could not be written, and failing its column would exceed the
/// tolerance), so the volume stayed at counter 6.
#[test]
#[ignore = "open bug: after two nodes were cut off at once, a column's label is newer than the coordinator expects and it is never re-added"]
fn open_seed_13_a_volume_comes_back_after_two_nodes_were_cut_off() {
    regression(13, &["stall", "slow", "bad-blocks", "beyond"]);
}

/// The coordinator's ids come from the seed (`CoordinatorSetup::id_seed`): the volume a seed
/// creates has the same id every time it runs (they were `rand::random`, another each run).
#[test]
fn a_seed_creates_its_volume_under_the_same_id_every_run() {
    let id = |seed: u64| {
        let events = match run(seed, &[]) {
            Ok((events, _)) | Err((_, events)) => events,
        };
        events
            .iter()
            .find_map(|e| {
                let (_, rest) = e.split_once("volume created: id ")?;
                rest.split_whitespace().next().map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("seed {seed}: no volume created: {events:?}"))
    };
    assert_eq!(id(3), id(3));
}

#[test]
fn simulated_cluster_keeps_every_acknowledged_byte() {
    log_if_asked();
    let one = std::env::var("SIM_SEED").ok().map(|s| {
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("SIM_SEED={s} is not a number"))
    });
    let sweep = std::env::var("SIM_SEEDS")
        .ok()
        .map(|s| s.parse::<u64>().expect("SIM_SEEDS is a number"));
    let seeds: Vec<u64> = match (one, sweep) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (1..=n).collect(),
        (None, None) => CI_SEEDS.collect(),
    };
    let kinds = fault_kinds();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let mut failed = Vec::new();
    let mut total = Stats::default();
    let sweep_started = std::time::Instant::now();
    for &seed in &seeds {
        let started = std::time::Instant::now();
        match run(seed, &kinds) {
            Ok((events, stats)) => {
                total += stats;
                if one.is_some() {
                    for e in &events {
                        println!("seed {seed}: {e}");
                    }
                }
                println!("seed {seed}: ok in {:.1?}", started.elapsed());
            }
            Err((why, events)) => {
                for e in &events {
                    println!("seed {seed}: {e}");
                }
                println!("seed {seed}: FAILED: {why}");
                println!("replay: {}", replay_command(seed, &kinds));
                failed.push(seed);
            }
        }
    }
    println!(
        "{} seeds, {} failed, in {:.1?}: {total:?}",
        seeds.len(),
        failed.len(),
        sweep_started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed: {failed:?}; replay one with `{}`",
        failed.len(),
        seeds.len(),
        replay_command(failed.first().copied().unwrap_or_default(), &kinds)
    );
}

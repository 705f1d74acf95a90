//! Cluster benchmark: `cargo bench -p dagraid-tests --bench cluster`.
//!
//! Starts a real cluster in this process, on 127.0.0.1:0 ports: 5 storage nodes (`dagraid_node`)
//! on temporary directories and the coordinator (`Coordinator::start`), each on its own tokio
//! runtime as if it were its own process. Creates two RAID 5 volumes over the 5 nodes (64 KiB
//! stripe units, 4 KiB blocks) and measures, in one run:
//!
//! - **through the coordinator**: the SDK (`dagraid_client`) reading and writing the volume;
//! - **direct**: this process sending the identical component I/O straight to the storage nodes
//!   over the storage API: the same bytes (data and the parity it computes itself) to the same
//!   components at the same blocks, with the same concurrency (every unit of every stripe of one
//!   access at once), with no coordinator hop and no DAG.
//!
//! Workloads: 1 MiB sequential writes (4 full stripes each) and reads, 4 KiB random writes
//! (read old data and parity, then write both) and reads, and 1 MiB sequential reads of a volume
//! with one column failed through the API next to the same reads of the healthy volume. The
//! compared measurements run in alternating rounds, so a change of load on the shared machine
//! hits both sides of a ratio.
//!
//! Every run asserts that nothing was failed spuriously (the healthy volume is optimal with no
//! error and no DAG rolled backward; the degraded one has exactly the column failed on purpose),
//! and that both sides left the same bytes: the whole volume read through the coordinator and
//! direct equals a model of every write, and parity is consistent on every column.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dagraid_client::{
    Client, ClientOptions, ComponentState, RaidLevel as SdkLevel, VolumeInfo, VolumeSpec,
    VolumeState,
};
use dagraid_coordinator::{Coordinator, CoordinatorConfig, config::NodeSpec};
use dagraid_core::layout::{ColumnSet, Geometry, Layout, RaidLevel};
use dagraid_core::parity::xor_many;
use dagraid_core::testing::reference::verify_columns;
use dagraid_proto::storage::v1 as pb;
use futures::future::join_all;
use pb::storage_node_client::StorageNodeClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint};

const NODES: usize = 5;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BLOCK: u64 = 4 * KIB;
const UNIT: u64 = 64 * KIB;
const LARGE: u64 = MIB;
const SMALL: u64 = 4 * KIB;
/// Size of each volume: every component holds a quarter of it.
const REGION: u64 = 256 * MIB;
/// The column failed (through the API) in the degraded volume.
const FAILED_COLUMN: u32 = 2;
/// Connections to each node on the direct side: as many as the coordinator's node client opens.
const DIRECT_CONNECTIONS: usize = 4;
const CLUSTER: &str = "dagraid";

/// Length of one round of one measurement; `CLUSTER_BENCH_MS` overrides it. Short rounds, many
/// of them: the machine's load changes within seconds, and each side must see the same load.
fn round() -> Duration {
    let ms = std::env::var("CLUSTER_BENCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ms)
}
/// Rounds of each measurement, alternating with the measurements it is compared with.
const ROUNDS: usize = 20;

/// Rounds of workload group `name` (`seq-write`, `seq-read`, `small`): [`ROUNDS`], or none when
/// `CLUSTER_BENCH_ONLY` (comma-separated) does not list it, e.g. to profile one group.
fn rounds(name: &str) -> usize {
    let on =
        std::env::var("CLUSTER_BENCH_ONLY").map_or(true, |only| only.split(',').any(|w| w == name));
    if on { ROUNDS } else { 0 }
}

// ---------------------------------------------------------------- samples

/// Operations and latencies of one measurement.
struct Sample {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    bytes_per_op: u64,
    /// CPU time of this process's threads during the measurement, by [`Part`].
    cpu_ns: [u64; 3],
}

impl Sample {
    fn new(bytes_per_op: u64) -> Self {
        Self {
            ops: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
            bytes_per_op,
            cpu_ns: [0; 3],
        }
    }
    /// Microseconds of CPU per operation spent by `part`'s threads.
    fn cpu_us(&self, part: Part) -> f64 {
        self.cpu_ns[part as usize] as f64 / 1e3 / self.ops as f64
    }
    fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn gbps(&self) -> f64 {
        self.iops() * self.bytes_per_op as f64 / 1e9
    }
    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1e6
    }
    fn p50(&self) -> f64 {
        self.percentile_us(0.5)
    }
    fn iops_cell(&self) -> String {
        format!(
            "{:.0} IOPS (p50 {:.0} us, p99 {:.0} us)",
            self.iops(),
            self.p50(),
            self.percentile_us(0.99)
        )
    }
    fn gbps_cell(&self) -> String {
        format!(
            "{:.3} GB/s (p50 {:.0} us, p99 {:.0} us)",
            self.gbps(),
            self.p50(),
            self.percentile_us(0.99)
        )
    }
}

/// Runs `op(n)` one at a time for `run` (at least once) on `rt`, adding to `sample`.
fn measure<F, Fut>(rt: &Runtime, sample: &mut Sample, run: Duration, mut op: F)
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let cpu_before = cpu_ns();
    rt.block_on(async {
        let start = Instant::now();
        let mut n = 0u64;
        while n == 0 || start.elapsed() < run {
            let t0 = Instant::now();
            op(n).await;
            sample.latencies.push(t0.elapsed());
            n += 1;
        }
        sample.ops += n;
        sample.elapsed += start.elapsed();
    });
    for (total, (after, before)) in sample
        .cpu_ns
        .iter_mut()
        .zip(cpu_ns().into_iter().zip(cpu_before))
    {
        *total += after.saturating_sub(before);
    }
}

/// The parts of the cluster, told apart by the names of their runtimes' threads.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// The 5 storage nodes' runtime.
    Nodes = 0,
    /// The coordinator's runtime.
    Coordinator = 1,
    /// The SDK client's runtime and the bench's own thread (which drives the direct I/O).
    Client = 2,
}

/// CPU time used so far by this process's live threads, by [`Part`] (`/proc` schedstat, ns).
fn cpu_ns() -> [u64; 3] {
    dagraid_tests::cpu::by_thread_name(|comm| {
        Some(match comm {
            "nodes" => Part::Nodes,
            "coordinator" => Part::Coordinator,
            _ => Part::Client,
        } as usize)
    })
}

// ---------------------------------------------------------------- the model of the volume

/// What the healthy volume must hold: every write of both sides applied in order.
struct Model(Mutex<Vec<u8>>);

impl Model {
    fn apply(&self, offset: u64, data: &[u8]) {
        let mut m = self.0.lock().unwrap();
        m[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }
    fn get(&self, offset: u64, len: u64) -> Bytes {
        let m = self.0.lock().unwrap();
        Bytes::copy_from_slice(&m[offset as usize..(offset + len) as usize])
    }
}

// ---------------------------------------------------------------- direct

/// This process's own connections to one storage node, used round robin.
#[derive(Clone)]
struct NodeConns {
    clients: Arc<Vec<StorageNodeClient<Channel>>>,
    next: Arc<AtomicUsize>,
}

impl NodeConns {
    async fn connect(address: &str) -> Self {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .tcp_nodelay(true)
            .max_frame_size(dagraid_node::HTTP2_MAX_FRAME_SIZE)
            .initial_stream_window_size(dagraid_node::HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(dagraid_node::HTTP2_CONNECTION_WINDOW);
        let mut clients = Vec::new();
        for _ in 0..DIRECT_CONNECTIONS {
            let channel = endpoint.connect().await.expect("connect to a node");
            clients.push(
                StorageNodeClient::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        }
        Self {
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn pick(&self) -> StorageNodeClient<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.clients[i % self.clients.len()].clone()
    }
}

/// The volume's components, addressed straight over the storage API.
struct Direct {
    layout: Layout,
    /// Per column: the node's connections and the component id.
    columns: Vec<(NodeConns, String)>,
    fencing: pb::Fencing,
}

impl Direct {
    async fn read(&self, column: usize, first_block: u64, blocks: u64) -> Bytes {
        let (node, component) = &self.columns[column];
        let data = node
            .pick()
            .read_blocks(pb::ReadBlocksRequest {
                fencing: None,
                component_id: component.clone(),
                start_block: first_block,
                block_count: blocks as u32,
            })
            .await
            .expect("direct read")
            .into_inner()
            .data;
        assert_eq!(data.len() as u64, blocks * BLOCK);
        data
    }

    async fn write(&self, column: usize, first_block: u64, data: Bytes) {
        let (node, component) = &self.columns[column];
        node.pick()
            .write_blocks(pb::WriteBlocksRequest {
                fencing: Some(self.fencing.clone()),
                component_id: component.clone(),
                start_block: first_block,
                data,
            })
            .await
            .expect("direct write");
    }

    /// A fault-free read: every touched unit's blocks, all at once (block-aligned ranges).
    async fn read_range(&self, offset: u64, len: u64) -> Vec<Bytes> {
        let map = self.layout.map(offset, len).unwrap();
        join_all(map.stripes.iter().flat_map(|s| {
            s.units
                .iter()
                .map(|u| self.read(u.column, u.blocks.first, u.blocks.count))
        }))
        .await
    }

    /// Full-stripe writes: parity computed here, then every data and parity unit of every
    /// stripe written at once.
    async fn write_full_stripes(&self, offset: u64, data: &Bytes) {
        let map = self.layout.map(offset, data.len() as u64).unwrap();
        let mut writes = Vec::new();
        for s in &map.stripes {
            assert!(s.is_full_stripe(UNIT), "only whole stripes here");
            let units: Vec<Bytes> = s
                .units
                .iter()
                .map(|u| data.slice(u.buffer_offset as usize..(u.buffer_offset + u.len) as usize))
                .collect();
            let sources: Vec<&[u8]> = units.iter().map(|u| &u[..]).collect();
            let mut parity = BytesMut::zeroed(UNIT as usize);
            xor_many(&mut parity, &sources).unwrap();
            let p = s.p().unwrap();
            writes.push((p.column, p.blocks.first, parity.freeze()));
            for (u, bytes) in s.units.iter().zip(units) {
                writes.push((u.column, u.blocks.first, bytes));
            }
        }
        join_all(writes.into_iter().map(|(c, b, d)| self.write(c, b, d))).await;
    }

    /// A small write of whole blocks inside one unit: read old data and old parity at once,
    /// compute the new parity, write data and parity at once.
    async fn small_write(&self, offset: u64, data: Bytes) {
        let map = self.layout.map(offset, data.len() as u64).unwrap();
        let s = &map.stripes[0];
        let (u, p) = (&s.units[0], s.p().unwrap());
        assert!(s.units.len() == 1 && u.is_whole_blocks(BLOCK) && p.blocks == u.blocks);
        let (old_d, old_p) = futures::join!(
            self.read(u.column, u.blocks.first, u.blocks.count),
            self.read(p.column, p.blocks.first, p.blocks.count)
        );
        let mut new_p = BytesMut::zeroed(data.len());
        xor_many(&mut new_p, &[&old_p, &old_d, &data]).unwrap();
        futures::join!(
            self.write(u.column, u.blocks.first, data),
            self.write(p.column, p.blocks.first, new_p.freeze())
        );
    }

    /// The blocks of `offset..offset + len` as they are on their data column.
    async fn write_data_only(&self, offset: u64, data: Bytes) {
        let loc = self.layout.locate(offset).unwrap();
        self.write(loc.column, loc.component_offset / BLOCK, data)
            .await;
    }

    /// Every column of the volume, whole.
    async fn columns(&self) -> Vec<Vec<u8>> {
        let blocks = self.layout.geometry().blocks_per_column();
        let per_call = MIB / BLOCK;
        let mut out = Vec::new();
        for c in 0..self.columns.len() {
            let mut col = Vec::with_capacity((blocks * BLOCK) as usize);
            let mut b = 0;
            while b < blocks {
                let n = per_call.min(blocks - b);
                col.extend_from_slice(&self.read(c, b, n).await);
                b += n;
            }
            out.push(col);
        }
        out
    }
}

fn layout_of(v: &VolumeInfo) -> Layout {
    assert_eq!(v.level, SdkLevel::Raid5);
    let bs = u64::from(v.block_size);
    let blocks = v.components[0].size_bytes / bs;
    Layout::new(
        RaidLevel::Raid5,
        Geometry::new(v.columns as usize, v.stripe_unit_bytes / bs, bs, blocks).unwrap(),
    )
    .unwrap()
}

async fn direct_for(v: &VolumeInfo, epoch: u64) -> Direct {
    let mut columns = Vec::new();
    for c in &v.components {
        columns.push((
            NodeConns::connect(&c.node_address).await,
            c.component_id.clone(),
        ));
    }
    Direct {
        layout: layout_of(v),
        columns,
        fencing: pb::Fencing {
            cluster_id: CLUSTER.into(),
            epoch,
        },
    }
}

// ---------------------------------------------------------------- the cluster

/// A runtime whose threads are named `name` (profiles tell the parts apart by thread name).
fn runtime(name: &str, threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn random_bytes(rng: &mut StdRng, len: u64) -> Bytes {
    let mut v = vec![0u8; len as usize];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

fn verdict(ratio: f64, met: bool) -> &'static str {
    match (ratio.is_nan(), met) {
        (true, _) => "not run",
        (false, true) => "met",
        (false, false) => "MISSED",
    }
}

fn assert_healthy(v: &VolumeInfo) {
    assert_eq!(v.state, VolumeState::Optimal, "{}: {v:?}", v.name);
    assert!(
        v.components
            .iter()
            .all(|c| c.state == ComponentState::Optimal),
        "a component was failed spuriously: {v:?}"
    );
    assert_eq!(v.counters.errors, 0, "{v:?}");
    assert_eq!(v.counters.dags_rolled_backward, 0, "{v:?}");
    assert_eq!(v.counters.lost_stripes, 0, "{v:?}");
}

fn main() {
    let total = Instant::now();
    let run = round();
    let dir = tempfile::tempdir().expect("temp dir");
    // Each server on its own runtime, as it would be in its own process.
    let nodes_rt = runtime("nodes", 2);
    let coord_rt = runtime("coordinator", 2);
    let client_rt = runtime("client", 2);

    let mut specs = Vec::new();
    for i in 1..=NODES {
        let mut config = dagraid_node::NodeConfig::new(dir.path().join(format!("node{i}")));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.node_id = Some(format!("n{i}"));
        config.cluster_id = Some(CLUSTER.into());
        let started = nodes_rt
            .block_on(dagraid_node::start(config))
            .expect("node starts");
        specs.push(NodeSpec {
            id: format!("n{i}"),
            address: started.local_addr().to_string(),
        });
        nodes_rt.spawn(started.serve(std::future::pending()));
    }
    let mut config = CoordinatorConfig::new(dir.path().join("coordinator"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.nodes = specs;
    let coordinator = coord_rt
        .block_on(Coordinator::start(config))
        .expect("coordinator starts");
    let epoch = coordinator.epoch();
    let url = format!("http://{}", coordinator.local_addr());

    let mut rng = StdRng::seed_from_u64(6);
    let large = random_bytes(&mut rng, LARGE);
    let small = random_bytes(&mut rng, SMALL);
    let model = Arc::new(Model(Mutex::new(Vec::new())));

    let (healthy, degraded, direct) = client_rt.block_on(async {
        let client = Client::connect(url, ClientOptions::default())
            .await
            .expect("connect to the coordinator");
        let mut infos = Vec::new();
        for name in ["healthy", "degraded"] {
            let v = client
                .create_volume(VolumeSpec::new(name, SdkLevel::Raid5, REGION))
                .await
                .expect("create volume");
            assert_eq!(
                (v.columns, v.stripe_unit_bytes, v.block_size),
                (5, UNIT, 4096)
            );
            assert_eq!(v.size_bytes, REGION);
            // Filled once, unmeasured, so every later access touches written blocks.
            let vol = client.volume(name);
            for i in 0..REGION / LARGE {
                vol.write_at(i * LARGE, large.clone()).await.expect("fill");
            }
            infos.push(v);
        }
        let mut m = Vec::with_capacity(REGION as usize);
        for _ in 0..REGION / LARGE {
            m.extend_from_slice(&large);
        }
        *model.0.lock().unwrap() = m;
        let after = client
            .fail_component("degraded", FAILED_COLUMN)
            .await
            .expect("fail a column");
        assert_eq!(after.state, VolumeState::Degraded);
        let direct = direct_for(&infos[0], epoch).await;
        (client.volume("healthy"), client.volume("degraded"), direct)
    });
    let stripes = REGION / LARGE;
    let blocks = REGION / SMALL;

    // Warm-up of every path, unmeasured.
    let mut scratch = Sample::new(0);
    let warm = Duration::from_millis(200);
    measure(&client_rt, &mut scratch, warm, |n| {
        let v = healthy.clone();
        async move {
            v.read_at((n % stripes) * LARGE, LARGE as usize)
                .await
                .unwrap();
        }
    });
    measure(&client_rt, &mut scratch, warm, |n| {
        let d = &direct;
        async move {
            d.read_range((n % stripes) * LARGE, LARGE).await;
        }
    });

    // 1 MiB sequential writes: 4 full stripes per access.
    let mut coord_seq_write = Sample::new(LARGE);
    let mut direct_seq_write = Sample::new(LARGE);
    let mut next_write = 0u64;
    for _ in 0..rounds("seq-write") {
        measure(&client_rt, &mut coord_seq_write, run, |_| {
            let off = (next_write % stripes) * LARGE;
            next_write += 1;
            let (v, data) = (healthy.clone(), large.clone());
            async move { v.write_at(off, data).await.expect("write") }
        });
        measure(&client_rt, &mut direct_seq_write, run, |_| {
            let off = (next_write % stripes) * LARGE;
            next_write += 1;
            let (d, data) = (&direct, &large);
            async move { d.write_full_stripes(off, data).await }
        });
    }

    // 1 MiB sequential reads: healthy through the coordinator, direct, and the degraded volume
    // through the coordinator, alternating.
    let mut coord_seq_read = Sample::new(LARGE);
    let mut direct_seq_read = Sample::new(LARGE);
    let mut degraded_seq_read = Sample::new(LARGE);
    let mut next_read = 0u64;
    for _ in 0..rounds("seq-read") {
        measure(&client_rt, &mut coord_seq_read, run, |_| {
            let off = (next_read % stripes) * LARGE;
            next_read += 1;
            let v = healthy.clone();
            async move {
                let got = v.read_at(off, LARGE as usize).await.expect("read");
                assert_eq!(got.len() as u64, LARGE);
            }
        });
        measure(&client_rt, &mut direct_seq_read, run, |_| {
            let off = (next_read % stripes) * LARGE;
            next_read += 1;
            let d = &direct;
            async move {
                let got = d.read_range(off, LARGE).await;
                assert_eq!(got.iter().map(|b| b.len() as u64).sum::<u64>(), LARGE);
            }
        });
        measure(&client_rt, &mut degraded_seq_read, run, |_| {
            let off = (next_read % stripes) * LARGE;
            next_read += 1;
            let v = degraded.clone();
            async move {
                let got = v.read_at(off, LARGE as usize).await.expect("degraded read");
                assert_eq!(got.len() as u64, LARGE);
            }
        });
    }

    // 4 KiB random writes and reads, one at a time. The direct small write does the identical
    // component I/O (old data and parity read, new data and parity written); "one block write"
    // is a single WriteBlocks of 4 KiB to a data column, rewriting the bytes it holds.
    let mut coord_small_write = Sample::new(SMALL);
    let mut direct_small_write = Sample::new(SMALL);
    let mut direct_block_write = Sample::new(SMALL);
    let mut coord_small_read = Sample::new(SMALL);
    let mut direct_small_read = Sample::new(SMALL);
    let mut rng_c = StdRng::seed_from_u64(1);
    let mut rng_d = StdRng::seed_from_u64(2);
    for _ in 0..rounds("small") {
        measure(&client_rt, &mut coord_small_write, run, |_| {
            let off = rng_c.random_range(0..blocks) * SMALL;
            let (v, data, model) = (healthy.clone(), small.clone(), model.clone());
            async move {
                v.write_at(off, data.clone()).await.expect("small write");
                model.apply(off, &data);
            }
        });
        measure(&client_rt, &mut direct_small_write, run, |_| {
            let off = rng_d.random_range(0..blocks) * SMALL;
            let (d, data, model) = (&direct, small.clone(), model.clone());
            async move {
                d.small_write(off, data.clone()).await;
                model.apply(off, &data);
            }
        });
        measure(&client_rt, &mut direct_block_write, run, |_| {
            let off = rng_d.random_range(0..blocks) * SMALL;
            let (d, data) = (&direct, model.get(off, SMALL));
            async move { d.write_data_only(off, data).await }
        });
        measure(&client_rt, &mut coord_small_read, run, |_| {
            let off = rng_c.random_range(0..blocks) * SMALL;
            let v = healthy.clone();
            async move {
                let got = v.read_at(off, SMALL as usize).await.expect("small read");
                assert_eq!(got.len() as u64, SMALL);
            }
        });
        measure(&client_rt, &mut direct_small_read, run, |_| {
            let off = rng_d.random_range(0..blocks) * SMALL;
            let d = &direct;
            async move {
                let got = d.read_range(off, SMALL).await;
                assert_eq!(got[0].len() as u64, SMALL);
            }
        });
    }

    // Nothing failed spuriously, and both sides left exactly the model's bytes and consistent
    // parity.
    client_rt.block_on(async {
        assert_healthy(&healthy.describe().await.unwrap());
        let d = degraded.describe().await.unwrap();
        assert_eq!(d.state, VolumeState::Degraded);
        for c in &d.components {
            let want = if c.column == FAILED_COLUMN {
                ComponentState::Failed
            } else {
                ComponentState::Optimal
            };
            assert_eq!(c.state, want, "degraded volume: {d:?}");
        }
        assert_eq!(d.counters.errors, 0, "{d:?}");
        let want = model.get(0, REGION);
        let got = healthy.read_at(0, REGION as usize).await.unwrap();
        assert!(got == want, "the volume differs from the model");
        let columns = direct.columns().await;
        verify_columns(&direct.layout, &columns, &ColumnSet::new())
            .unwrap_or_else(|e| panic!("parity mismatches: {:?}", &e[..e.len().min(3)]));
        let mut got = Vec::with_capacity(REGION as usize);
        for i in 0..REGION / (16 * MIB) {
            for b in direct.read_range(i * 16 * MIB, 16 * MIB).await {
                got.extend_from_slice(&b);
            }
        }
        assert!(got == want[..], "direct reads differ from the model");
    });
    coord_rt.block_on(coordinator.stop()).expect("clean stop");

    // ------------------------------------------------------------ the report
    let seq_write = ratio(coord_seq_write.gbps(), direct_seq_write.gbps());
    let seq_read = ratio(coord_seq_read.gbps(), direct_seq_read.gbps());
    let small_write_p50 = ratio(coord_small_write.p50(), direct_small_write.p50());
    let block_write_p50 = ratio(coord_small_write.p50(), direct_block_write.p50());
    let small_read_p50 = ratio(coord_small_read.p50(), direct_small_read.p50());
    let degraded = ratio(degraded_seq_read.gbps(), coord_seq_read.gbps());

    println!(
        "## Cluster: RAID 5 over {NODES} nodes, coordinator vs direct (one run, {:.0} s, rounds of {} ms x {ROUNDS})",
        total.elapsed().as_secs_f64(),
        run.as_millis()
    );
    println!();
    println!(
        "| workload, 1 in flight | through the coordinator (SDK) | direct, same component I/O | coordinator / direct |"
    );
    println!("|---|---|---|---|");
    println!(
        "| 1 MiB sequential write (4 full stripes: 16 data + 4 parity writes of 64 KiB) | {} | {} | {seq_write:.2}x GB/s |",
        coord_seq_write.gbps_cell(),
        direct_seq_write.gbps_cell()
    );
    println!(
        "| 1 MiB sequential read (16 reads of 64 KiB) | {} | {} | {seq_read:.2}x GB/s |",
        coord_seq_read.gbps_cell(),
        direct_seq_read.gbps_cell()
    );
    println!(
        "| 4 KiB random write (read data + parity, then write both) | {} | {} | {small_write_p50:.2}x p50, {:.2}x IOPS |",
        coord_small_write.iops_cell(),
        direct_small_write.iops_cell(),
        ratio(coord_small_write.iops(), direct_small_write.iops())
    );
    println!(
        "| 4 KiB random write vs one 4 KiB block write | {} | {} | {block_write_p50:.2}x p50 |",
        coord_small_write.iops_cell(),
        direct_block_write.iops_cell()
    );
    println!(
        "| 4 KiB random read (1 read of 4 KiB) | {} | {} | {small_read_p50:.2}x p50, {:.2}x IOPS |",
        coord_small_read.iops_cell(),
        direct_small_read.iops_cell(),
        ratio(coord_small_read.iops(), direct_small_read.iops())
    );
    println!();
    println!("| 1 MiB sequential read through the coordinator | result | degraded / healthy |");
    println!("|---|---|---|");
    println!(
        "| healthy volume | {} | 1.00x |",
        coord_seq_read.gbps_cell()
    );
    println!(
        "| volume with column {FAILED_COLUMN} failed (API) | {} | {degraded:.2}x GB/s |",
        degraded_seq_read.gbps_cell()
    );
    println!();
    println!(
        "| CPU per operation (this process's threads, by runtime) | nodes | coordinator | client and bench | total |"
    );
    println!("|---|---|---|---|---|");
    for (name, sample) in [
        ("1 MiB write, coordinator", &coord_seq_write),
        ("1 MiB write, direct", &direct_seq_write),
        ("1 MiB read, coordinator", &coord_seq_read),
        ("1 MiB read, direct", &direct_seq_read),
        ("1 MiB read, degraded, coordinator", &degraded_seq_read),
        ("4 KiB write, coordinator", &coord_small_write),
        ("4 KiB write, direct", &direct_small_write),
        ("4 KiB read, coordinator", &coord_small_read),
        ("4 KiB read, direct", &direct_small_read),
    ] {
        let parts = [Part::Nodes, Part::Coordinator, Part::Client].map(|p| sample.cpu_us(p));
        println!(
            "| {name} | {:.0} us | {:.0} us | {:.0} us | {:.0} us |",
            parts[0],
            parts[1],
            parts[2],
            parts.iter().sum::<f64>()
        );
    }
    println!();
    println!("Targets (issue 6):");
    println!(
        "- full-stripe writes >= 0.5x direct: {} ({seq_write:.2}x)",
        verdict(seq_write, seq_write >= 0.5)
    );
    println!(
        "- sequential reads >= 0.6x direct: {} ({seq_read:.2}x)",
        verdict(seq_read, seq_read >= 0.6)
    );
    println!(
        "- 4 KiB small-write p50 <= 4x the direct 4 KiB write p50: {} ({small_write_p50:.2}x the same component I/O; {block_write_p50:.2}x one block write)",
        verdict(small_write_p50, small_write_p50 <= 4.0)
    );
    println!(
        "- degraded reads >= 0.5x healthy: {} ({degraded:.2}x)",
        verdict(degraded, degraded >= 0.5)
    );
    println!(
        "- no component failed spuriously: met (healthy volume optimal, no errors, no DAG rolled backward; degraded volume: only column {FAILED_COLUMN} failed)"
    );
}

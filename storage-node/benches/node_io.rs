//! Storage-node I/O benchmark: `cargo bench -p dagraid-node --bench node_io`.
//!
//! In one run, on loopback, it measures through gRPC against an in-process `dagraid-node`
//! (durable writes: group commit) and directly on a file with the same sync policy (pwrite, then
//! fdatasync before the write counts as done):
//! - 4 KiB random writes at 1 and 16 in flight: IOPS, p50, p99;
//! - 1 MiB sequential writes and reads: GB/s;
//! - a bare tonic server answering the same 1 MiB messages from memory (no disk), the ceiling
//!   of the transport.
//!
//! It prints a Markdown table of the results and their ratios, plus the two targets of issue 2:
//! 4 KiB writes at 16 in flight >= 2x one-fdatasync-per-write, and 1 MiB gRPC reads >= 0.7x the
//! bare tonic server. Durations are fixed per measurement so the whole run takes well under a
//! minute.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_node::{
    HTTP2_CONNECTION_WINDOW, HTTP2_MAX_FRAME_SIZE, HTTP2_STREAM_WINDOW, NodeConfig,
};
use dagraid_proto::storage::v1 as pb;
use pb::storage_node_client::StorageNodeClient;
use pb::storage_node_server::{StorageNode, StorageNodeServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

const SMALL: usize = 4096;
const LARGE: usize = 1 << 20;
/// Size of the component and of the direct file: large enough that 4 KiB writes are random.
const REGION: u64 = 256 << 20;
/// Measurements that are compared run in alternating rounds of this length, so a load change on
/// the shared machine hits both sides of a ratio alike.
const ROUND: Duration = Duration::from_millis(600);
const ROUNDS: usize = 4;
const CLUSTER: &str = "dagraid";

type Client = StorageNodeClient<Channel>;

/// Latencies of one measurement.
struct Sample {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    bytes_per_op: usize,
}

impl Sample {
    fn empty(bytes_per_op: usize) -> Self {
        Self {
            ops: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
            bytes_per_op,
        }
    }
    fn absorb(&mut self, other: Sample) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
    fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn gbps(&self) -> f64 {
        self.ops as f64 * self.bytes_per_op as f64 / self.elapsed.as_secs_f64() / 1e9
    }
    fn percentile_us(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1e6
    }
    fn iops_cell(&self) -> String {
        format!(
            "{:.0} IOPS (p50 {:.0} us, p99 {:.0} us)",
            self.iops(),
            self.percentile_us(0.50),
            self.percentile_us(0.99)
        )
    }
    fn gbps_cell(&self) -> String {
        format!(
            "{:.2} GB/s (p50 {:.0} us)",
            self.gbps(),
            self.percentile_us(0.5)
        )
    }
}

fn merge(parts: Vec<(u64, Vec<Duration>)>, elapsed: Duration, bytes_per_op: usize) -> Sample {
    let mut sample = Sample {
        ops: 0,
        elapsed,
        latencies: Vec::new(),
        bytes_per_op,
    };
    for (ops, lat) in parts {
        sample.ops += ops;
        sample.latencies.extend(lat);
    }
    sample
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

// ---------------------------------------------------------------- direct file, same sync policy

fn open_direct_file(path: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("bench file");
    // Preallocated like a component file.
    if rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, REGION).is_err() {
        file.set_len(REGION).expect("size the bench file");
    }
    file
}

/// `threads` threads, each: pwrite `size` bytes at an offset from `offset_of`, then fdatasync.
fn direct_writes(
    file: &Arc<File>,
    threads: usize,
    size: usize,
    run: Duration,
    min_ops: u64,
    offset_of: impl Fn(u64, &mut StdRng) -> u64 + Send + Sync + 'static,
) -> Sample {
    let offset_of = Arc::new(offset_of);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let file = file.clone();
            let offset_of = offset_of.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(t as u64);
                let data = random_bytes(&mut rng, size);
                let mut lat = Vec::new();
                loop {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    if start.elapsed() >= run && n >= min_ops {
                        break;
                    }
                    let t0 = Instant::now();
                    file.write_all_at(&data, offset_of(n, &mut rng)).unwrap();
                    file.sync_data().unwrap();
                    lat.push(t0.elapsed());
                }
                (lat.len() as u64, lat)
            })
        })
        .collect();
    let parts = handles.into_iter().map(|h| h.join().unwrap()).collect();
    merge(parts, start.elapsed(), size)
}

fn direct_sequential_reads(file: &File, run: Duration) -> Sample {
    let mut buf = vec![0u8; LARGE];
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        let t0 = Instant::now();
        file.read_exact_at(&mut buf, (n * LARGE as u64) % REGION)
            .unwrap();
        std::hint::black_box(&buf);
        lat.push(t0.elapsed());
        n += 1;
    }
    merge(vec![(n, lat)], start.elapsed(), LARGE)
}

// ---------------------------------------------------------------- through gRPC

async fn connect(addr: std::net::SocketAddr) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .max_frame_size(HTTP2_MAX_FRAME_SIZE)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .connect()
        .await
        .expect("connect");
    StorageNodeClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn write_request(start_block: u64, data: Bytes) -> pb::WriteBlocksRequest {
    pb::WriteBlocksRequest {
        fencing: Some(pb::Fencing {
            cluster_id: CLUSTER.into(),
            epoch: 0,
        }),
        component_id: "bench".into(),
        start_block,
        data,
    }
}

/// `in_flight` tasks on one connection, each writing `size` bytes at blocks from `block_of`.
async fn grpc_writes(
    client: &Client,
    in_flight: usize,
    size: usize,
    run: Duration,
    min_ops: u64,
    block_of: fn(u64, &mut StdRng) -> u64,
) -> Sample {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let mut client = client.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(100 + t as u64);
                let data = random_bytes(&mut rng, size);
                let mut lat = Vec::new();
                loop {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    if start.elapsed() >= run && n >= min_ops {
                        break;
                    }
                    let req = write_request(block_of(n, &mut rng), data.clone());
                    let t0 = Instant::now();
                    client.write_blocks(req).await.expect("write");
                    lat.push(t0.elapsed());
                }
                (lat.len() as u64, lat)
            })
        })
        .collect();
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.unwrap());
    }
    merge(parts, start.elapsed(), size)
}

async fn grpc_sequential_reads(client: &Client, run: Duration) -> Sample {
    let mut client = client.clone();
    let blocks = (LARGE / SMALL) as u32;
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        let req = pb::ReadBlocksRequest {
            fencing: None,
            component_id: "bench".into(),
            start_block: (n * u64::from(blocks)) % (REGION / SMALL as u64),
            block_count: blocks,
        };
        let t0 = Instant::now();
        let data = client
            .read_blocks(req)
            .await
            .expect("read")
            .into_inner()
            .data;
        assert_eq!(data.len(), LARGE);
        lat.push(t0.elapsed());
        n += 1;
    }
    merge(vec![(n, lat)], start.elapsed(), LARGE)
}

// ---------------------------------------------------------------- bare tonic server

/// Answers ReadBlocks with a prebuilt 1 MiB message and accepts WriteBlocks without storing:
/// the same messages as the node, with no disk and no checksums.
struct BareTonic {
    block: Bytes,
}

#[tonic::async_trait]
impl StorageNode for BareTonic {
    async fn read_blocks(
        &self,
        _: Request<pb::ReadBlocksRequest>,
    ) -> Result<Response<pb::ReadBlocksResponse>, Status> {
        Ok(Response::new(pb::ReadBlocksResponse {
            data: self.block.clone(),
        }))
    }
    async fn write_blocks(
        &self,
        _: Request<pb::WriteBlocksRequest>,
    ) -> Result<Response<pb::WriteBlocksResponse>, Status> {
        Ok(Response::new(pb::WriteBlocksResponse {}))
    }
    async fn write_log(
        &self,
        _: Request<pb::WriteLogRequest>,
    ) -> Result<Response<pb::WriteLogResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn read_log(
        &self,
        _: Request<pb::ReadLogRequest>,
    ) -> Result<Response<pb::ReadLogResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_node_info(
        &self,
        _: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn create_component(
        &self,
        _: Request<pb::CreateComponentRequest>,
    ) -> Result<Response<pb::CreateComponentResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn list_components(
        &self,
        _: Request<pb::ListComponentsRequest>,
    ) -> Result<Response<pb::ListComponentsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn delete_component(
        &self,
        _: Request<pb::DeleteComponentRequest>,
    ) -> Result<Response<pb::DeleteComponentResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn flush(
        &self,
        _: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn read_slot(
        &self,
        _: Request<pb::ReadSlotRequest>,
    ) -> Result<Response<pb::ReadSlotResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn write_slot(
        &self,
        _: Request<pb::WriteSlotRequest>,
    ) -> Result<Response<pb::WriteSlotResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn fence(
        &self,
        _: Request<pb::FenceRequest>,
    ) -> Result<Response<pb::FenceResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn inject_fault(
        &self,
        _: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn clear_faults(
        &self,
        _: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

async fn start_bare_tonic() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let service = StorageNodeServer::new(BareTonic {
        block: random_bytes(&mut rng, LARGE),
    })
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(64 << 20);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        Server::builder()
            .max_frame_size(HTTP2_MAX_FRAME_SIZE)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    addr
}

async fn bare_reads(client: &Client, run: Duration) -> Sample {
    let mut client = client.clone();
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        let req = pb::ReadBlocksRequest {
            fencing: None,
            component_id: "bench".into(),
            start_block: 0,
            block_count: 256,
        };
        let t0 = Instant::now();
        let data = client
            .read_blocks(req)
            .await
            .expect("read")
            .into_inner()
            .data;
        assert_eq!(data.len(), LARGE);
        lat.push(t0.elapsed());
        n += 1;
    }
    merge(vec![(n, lat)], start.elapsed(), LARGE)
}

// ---------------------------------------------------------------- main

fn random_small_block(_: u64, rng: &mut StdRng) -> u64 {
    rng.random_range(0..REGION / SMALL as u64)
}

fn sequential_large_block(n: u64, _: &mut StdRng) -> u64 {
    (n * (LARGE / SMALL) as u64) % (REGION / SMALL as u64)
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}x", a / b)
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let total = Instant::now();

    // The node runs on its own runtime, as it would in its own process.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut config = NodeConfig::new(dir.path().join("node"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    let started = server_rt
        .block_on(dagraid_node::start(config))
        .expect("start node");
    let node_addr = started.local_addr();
    let node_state = started.node().clone();
    server_rt.spawn(started.serve(std::future::pending()));
    let bare_addr = server_rt.block_on(start_bare_tonic());

    let direct = Arc::new(open_direct_file(&dir.path().join("direct.bin")));

    let (node, bare) = client_rt.block_on(async {
        let mut node = connect(node_addr).await;
        node.create_component(pb::CreateComponentRequest {
            log_bytes: 0,
            fencing: Some(pb::Fencing {
                cluster_id: CLUSTER.into(),
                epoch: 0,
            }),
            component_id: "bench".into(),
            block_size: SMALL as u32,
            block_count: REGION / SMALL as u64,
            serial: 1,
        })
        .await
        .expect("create component");
        (node, connect(bare_addr).await)
    });

    let passes = REGION / LARGE as u64;
    let seq = |n: u64, _: &mut StdRng| (n * LARGE as u64) % REGION;
    let rnd = |_: u64, rng: &mut StdRng| rng.random_range(0..REGION / SMALL as u64) * SMALL as u64;
    // One full unmeasured pass of 1 MiB writes on each side first: every later write overwrites
    // allocated blocks, on both sides alike.
    client_rt.block_on(grpc_writes(
        &node,
        1,
        LARGE,
        Duration::ZERO,
        passes,
        sequential_large_block,
    ));
    direct_writes(&direct, 1, LARGE, Duration::ZERO, passes, seq);

    let mut grpc_large_write = Sample::empty(LARGE);
    let mut direct_large_write = Sample::empty(LARGE);
    let mut bare_write = Sample::empty(LARGE);
    let mut grpc_large_read = Sample::empty(LARGE);
    let mut direct_large_read = Sample::empty(LARGE);
    let mut bare_read = Sample::empty(LARGE);
    let mut grpc_small_1 = Sample::empty(SMALL);
    let mut direct_small_1 = Sample::empty(SMALL);
    let mut grpc_small_16 = Sample::empty(SMALL);
    let mut direct_small_16 = Sample::empty(SMALL);
    for _ in 0..ROUNDS {
        grpc_large_write.absorb(client_rt.block_on(grpc_writes(
            &node,
            1,
            LARGE,
            ROUND,
            0,
            sequential_large_block,
        )));
        direct_large_write.absorb(direct_writes(&direct, 1, LARGE, ROUND, 0, seq));
        bare_write.absorb(client_rt.block_on(grpc_writes(
            &bare,
            1,
            LARGE,
            ROUND,
            0,
            sequential_large_block,
        )));
    }
    for _ in 0..ROUNDS {
        grpc_large_read.absorb(client_rt.block_on(grpc_sequential_reads(&node, ROUND)));
        direct_large_read.absorb(direct_sequential_reads(&direct, ROUND));
        bare_read.absorb(client_rt.block_on(bare_reads(&bare, ROUND)));
    }
    // The four 4 KiB measurements alternate in one loop: the target compares gRPC at 16 in flight
    // with the direct file at 1 in flight, and a change of load on the shared disk must hit both.
    let syncs = || node_state.components_list()[0].syncs_completed();
    let mut syncs_16 = 0;
    for _ in 0..ROUNDS {
        grpc_small_1.absorb(client_rt.block_on(grpc_writes(
            &node,
            1,
            SMALL,
            ROUND,
            0,
            random_small_block,
        )));
        direct_small_1.absorb(direct_writes(&direct, 1, SMALL, ROUND, 0, rnd));
        let before = syncs();
        grpc_small_16.absorb(client_rt.block_on(grpc_writes(
            &node,
            16,
            SMALL,
            ROUND,
            0,
            random_small_block,
        )));
        syncs_16 += syncs() - before;
        direct_small_16.absorb(direct_writes(&direct, 16, SMALL, ROUND, 0, rnd));
    }

    println!(
        "## dagraid-node I/O on loopback (one run, {:.0} s)",
        total.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "| operation | through gRPC (dagraid-node) | direct on a file, same sync policy | gRPC / direct |"
    );
    println!("|---|---|---|---|");
    println!(
        "| 4 KiB random durable write, 1 in flight | {} | {} | {} |",
        grpc_small_1.iops_cell(),
        direct_small_1.iops_cell(),
        ratio(grpc_small_1.iops(), direct_small_1.iops())
    );
    println!(
        "| 4 KiB random durable write, 16 in flight | {} | {} (16 threads) | {} |",
        grpc_small_16.iops_cell(),
        direct_small_16.iops_cell(),
        ratio(grpc_small_16.iops(), direct_small_16.iops())
    );
    println!(
        "| 1 MiB sequential durable write, 1 in flight | {} | {} | {} |",
        grpc_large_write.gbps_cell(),
        direct_large_write.gbps_cell(),
        ratio(grpc_large_write.gbps(), direct_large_write.gbps())
    );
    println!(
        "| 1 MiB sequential read, 1 in flight | {} | {} | {} |",
        grpc_large_read.gbps_cell(),
        direct_large_read.gbps_cell(),
        ratio(grpc_large_read.gbps(), direct_large_read.gbps())
    );
    println!();
    println!(
        "| transport ceiling: bare tonic, same messages, no disk | result | dagraid-node / bare tonic |"
    );
    println!("|---|---|---|");
    println!(
        "| 1 MiB read answer, 1 in flight | {} | {} |",
        bare_read.gbps_cell(),
        ratio(grpc_large_read.gbps(), bare_read.gbps())
    );
    println!(
        "| 1 MiB write request, 1 in flight | {} | {} |",
        bare_write.gbps_cell(),
        ratio(grpc_large_write.gbps(), bare_write.gbps())
    );
    println!();
    println!(
        "Group commit at 16 in flight: {} writes shared {} fdatasyncs ({:.1} writes per sync).",
        grpc_small_16.ops,
        syncs_16,
        grpc_small_16.ops as f64 / syncs_16.max(1) as f64
    );
    println!();
    let group_commit = grpc_small_16.iops() / direct_small_1.iops();
    let read_vs_bare = grpc_large_read.gbps() / bare_read.gbps();
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("| target (issue 2) | measured | target | |");
    println!("|---|---|---|---|");
    println!(
        "| 4 KiB durable writes, gRPC at 16 in flight / one fdatasync per write (direct, 1 in flight) | {group_commit:.2}x | >= 2x | {} |",
        verdict(group_commit >= 2.0)
    );
    println!(
        "| 1 MiB reads, gRPC / bare tonic | {read_vs_bare:.2}x | >= 0.7x | {} |",
        verdict(read_vs_bare >= 0.7)
    );
    client_rt.shutdown_timeout(Duration::from_secs(1));
    server_rt.shutdown_timeout(Duration::from_secs(1));
}

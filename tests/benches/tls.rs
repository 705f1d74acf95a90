//! TLS against plaintext: `cargo bench -p dagraid-tests --bench tls`.
//!
//! Starts two real clusters in this process on 127.0.0.1:0 ports, each of 5 storage nodes
//! (`dagraid_node`) and a coordinator (`Coordinator::start`), every server on its own tokio
//! runtime as if it were its own process: one with mutual TLS on every link (client ->
//! coordinator, coordinator -> nodes; a cluster CA of its own, `dagraid_tests::tls::TestPki`),
//! one plaintext. Each holds a RAID 5 volume (5 columns, 64 KiB stripe units, 4 KiB blocks),
//! filled once. Then, in alternating rounds so that a change of load on the shared machine hits
//! both sides of each ratio, through the SDK:
//!
//! - 4 KiB random writes, `SMALL_IN_FLIGHT` at once (read-modify-write of data and parity);
//! - 1 MiB sequential reads (4 full stripes each), one at a time.
//!
//! It prints, per workload, both sides' rates and latencies and the ratio TLS / plaintext, and
//! checks at the end that every byte written reads back from both volumes.
//!
//! Between the rounds it also measures what TLS itself costs per MiB, without sockets or gRPC:
//! the same rustls configurations as the TLS cluster's client -> coordinator link, a client and
//! a server connection in memory, 1 MiB of application data written on one, its records
//! handed to the other and read out (encryption, decryption and rustls's copies, on one
//! thread). A 1 MiB read crosses two TLS links (node -> coordinator, coordinator -> client),
//! so it costs twice that in CPU; on this machine's 2 cores that adds at least one such time
//! to its latency, which bounds the ratio the reads can reach: plaintext latency / (plaintext
//! latency + the per-MiB record time). The bench prints that bound beside the measured ratio.
//!
//! `TLS_BENCH_MS` sets the length of one round (default 200 ms), `TLS_BENCH_ROUNDS` their
//! number per side (default 20).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_client::{Client, ClientOptions, RaidLevel, Volume, VolumeSpec};
use dagraid_coordinator::{Coordinator, CoordinatorConfig, config::NodeSpec};
use dagraid_tests::tls::TestPki;
use dagraid_tls::Role;
use dagraid_tls::{ClientTls, ServerTls};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;

const NODES: usize = 5;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SMALL: u64 = 4 * KIB;
const LARGE: u64 = MIB;
const VOLUME: u64 = 64 * MIB;
const SMALL_IN_FLIGHT: usize = 4;
const CLUSTER: &str = "dagraid";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Operations, bytes and latencies of one side of one workload.
#[derive(Default)]
struct Sample {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Sample {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile_us(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1e6
    }
    fn cell(&self, bytes_per_op: u64) -> String {
        let rate = if bytes_per_op >= MIB {
            format!("{:.3} GB/s", self.per_second() * bytes_per_op as f64 / 1e9)
        } else {
            format!("{:.0} IOPS", self.per_second())
        };
        format!(
            "{rate} (p50 {:.0} us, p99 {:.0} us)",
            self.percentile_us(0.5),
            self.percentile_us(0.99)
        )
    }
}

/// A client and a server rustls connection joined in memory, their handshake done: what TLS
/// costs per byte with no socket or gRPC around it.
struct RecordLink {
    client: rustls::ClientConnection,
    server: rustls::ServerConnection,
    wire: Vec<u8>,
    sink: Vec<u8>,
}

impl RecordLink {
    /// The configurations of the SDK -> coordinator link of `pki`'s cluster.
    fn new(pki: &TestPki) -> RecordLink {
        let server = ServerTls::load(pki.files(&Role::Coordinator).expect("coordinator files"))
            .expect("server TLS");
        let client =
            ClientTls::load(pki.files(&Role::Client).expect("client files")).expect("client TLS");
        let name = rustls_pki_types::ServerName::try_from(Role::Coordinator.dns_name())
            .expect("server name");
        let mut link = RecordLink {
            client: rustls::ClientConnection::new(client.config(), name).expect("client"),
            server: rustls::ServerConnection::new(server.config()).expect("server"),
            wire: Vec::new(),
            sink: vec![0; 64 * KIB as usize],
        };
        while link.client.is_handshaking() || link.server.is_handshaking() {
            link.client_to_server();
            link.server_to_client();
        }
        link.server_to_client(); // session tickets
        link
    }

    fn client_to_server(&mut self) -> u64 {
        let mut plaintext = 0;
        while self.client.wants_write() {
            self.wire.clear();
            self.client.write_tls(&mut self.wire).expect("write_tls");
            let mut records = &self.wire[..];
            while !records.is_empty() {
                self.server.read_tls(&mut records).expect("read_tls");
                self.server.process_new_packets().expect("server records");
                loop {
                    match std::io::Read::read(&mut self.server.reader(), &mut self.sink) {
                        Ok(0) => break,
                        Ok(n) => plaintext += n as u64,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("server read: {e}"),
                    }
                }
            }
        }
        plaintext
    }

    fn server_to_client(&mut self) {
        while self.server.wants_write() {
            self.wire.clear();
            self.server.write_tls(&mut self.wire).expect("write_tls");
            let mut records = &self.wire[..];
            while !records.is_empty() {
                self.client.read_tls(&mut records).expect("read_tls");
                self.client.process_new_packets().expect("client records");
            }
        }
    }

    /// Sends `data` from the client to the server (64 KiB at a time, rustls's default send
    /// buffer) and answers how long it took.
    fn send(&mut self, data: &[u8]) -> Duration {
        let start = Instant::now();
        let mut received = 0;
        for chunk in data.chunks(64 * KIB as usize) {
            std::io::Write::write_all(&mut self.client.writer(), chunk).expect("write");
            received += self.client_to_server();
        }
        let took = start.elapsed();
        assert_eq!(received, data.len() as u64, "every byte crossed the link");
        took
    }
}

/// One cluster: its runtimes stay alive as long as it does.
struct Bench {
    _dir: tempfile::TempDir,
    _pki: Option<TestPki>,
    _coordinator: Coordinator,
    _nodes: Runtime,
    _coordinator_rt: Runtime,
    volume: Volume,
}

/// Starts a cluster (TLS with `tls`) and a filled volume on `client_rt`.
fn start(tls: bool, client_rt: &Runtime, fill: &Bytes) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = tls.then(|| TestPki::new().expect("a cluster CA"));
    let suffix = if tls { "tls" } else { "plain" };
    let nodes = runtime(&format!("nodes-{suffix}"));
    let coordinator_rt = runtime(&format!("coordinator-{suffix}"));
    let mut specs = Vec::new();
    for i in 1..=NODES {
        let id = format!("n{i}");
        let mut config = dagraid_node::NodeConfig::new(dir.path().join(&id));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.node_id = Some(id.clone());
        config.cluster_id = Some(CLUSTER.into());
        config.tls = pki
            .as_ref()
            .map(|p| p.files(&Role::Node(id.clone())).expect("node certificate"));
        let started = nodes
            .block_on(dagraid_node::start(config))
            .expect("node starts");
        specs.push(NodeSpec {
            id,
            address: started.local_addr().to_string(),
        });
        nodes.spawn(started.serve(std::future::pending()));
    }
    let mut config = CoordinatorConfig::new(dir.path().join("coordinator"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.nodes = specs;
    config.tls = pki.as_ref().map(|p| {
        p.files(&Role::Coordinator)
            .expect("coordinator certificate")
    });
    let coordinator = coordinator_rt
        .block_on(Coordinator::start(config))
        .expect("coordinator starts");
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{}", coordinator.local_addr());
    let options = ClientOptions {
        tls: pki
            .as_ref()
            .map(|p| p.files(&Role::Client).expect("client certificate")),
        ..ClientOptions::default()
    };
    let volume = client_rt.block_on(async {
        let client = Client::connect(url, options)
            .await
            .expect("connect to the coordinator");
        client
            .create_volume(VolumeSpec::new("v", RaidLevel::Raid5, VOLUME).columns(5))
            .await
            .expect("create volume");
        let volume = client.volume("v");
        for i in 0..VOLUME / LARGE {
            volume
                .write_at(i * LARGE, fill.clone())
                .await
                .expect("fill");
        }
        volume
    });
    Bench {
        _dir: dir,
        _pki: pki,
        _coordinator: coordinator,
        _nodes: nodes,
        _coordinator_rt: coordinator_rt,
        volume,
    }
}

/// Runs `op(n)` `in_flight` at a time for `run`, adding to `sample`.
fn measure<F, Fut>(rt: &Runtime, sample: &mut Sample, run: Duration, in_flight: usize, op: F)
where
    F: Fn(u64) -> Fut + Sync,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        let next = std::sync::atomic::AtomicU64::new(0);
        let workers = (0..in_flight).map(|_| async {
            let mut latencies = Vec::new();
            while start.elapsed() < run || latencies.is_empty() {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t0 = Instant::now();
                op(n).await;
                latencies.push(t0.elapsed());
            }
            latencies
        });
        for latencies in futures::future::join_all(workers).await {
            sample.ops += latencies.len() as u64;
            sample.latencies.extend(latencies);
        }
        sample.elapsed += start.elapsed();
    });
}

fn main() {
    let run = Duration::from_millis(env_or("TLS_BENCH_MS", 200));
    let rounds = env_or("TLS_BENCH_ROUNDS", 20);
    let client_rt = runtime("client");
    let mut rng = StdRng::seed_from_u64(24);
    let mut fill = vec![0u8; LARGE as usize];
    rng.fill(&mut fill[..]);
    let fill = Bytes::from(fill);
    let sides = [
        ("tls", start(true, &client_rt, &fill)),
        ("plaintext", start(false, &client_rt, &fill)),
    ];
    let mut small = rng.random::<u64>();
    let payloads: Arc<Vec<Bytes>> = Arc::new(
        (0..64)
            .map(|_| {
                let mut b = vec![0u8; SMALL as usize];
                rng.fill(&mut b[..]);
                Bytes::from(b)
            })
            .collect(),
    );
    // The model of both volumes: the fill, then every small write (the same on both sides).
    let mut model = Vec::with_capacity(VOLUME as usize);
    for _ in 0..VOLUME / LARGE {
        model.extend_from_slice(&fill);
    }
    let blocks = VOLUME / SMALL;
    // A pseudo-random walk over the blocks, the same for both sides: the multiplier is odd
    // and `blocks` a power of two, so no two of the first `blocks` writes of a round share a
    // block (writes in flight together never race for one).
    assert!(blocks.is_power_of_two());
    let offset_of = |seed: u64, n: u64| {
        seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % blocks * SMALL
    };

    // Warm-up of both paths (connections, handshakes), unmeasured.
    for (_, side) in &sides {
        let mut scratch = Sample::default();
        measure(
            &client_rt,
            &mut scratch,
            Duration::from_millis(300),
            1,
            |n| {
                let v = side.volume.clone();
                async move {
                    v.read_at((n % (VOLUME / LARGE)) * LARGE, LARGE as usize)
                        .await
                        .expect("read");
                }
            },
        );
    }

    let mut writes = [Sample::default(), Sample::default()];
    let mut reads = [Sample::default(), Sample::default()];
    let mut link = RecordLink::new(sides[0].1._pki.as_ref().expect("the TLS side's CA"));
    let mut record_time = Duration::ZERO;
    let mut record_mib = 0u32;
    for round in 0..rounds {
        // TLS's own cost per MiB, between the cluster rounds (nothing else of ours runs).
        for _ in 0..8 {
            record_time += link.send(&fill);
            record_mib += 1;
        }
        // Alternate which side goes first, too.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &i in &order {
            // Each side writes the same offsets and payloads: the same seed per round.
            let seed = small;
            let written = std::sync::Mutex::new(Vec::new());
            measure(&client_rt, &mut writes[i], run, SMALL_IN_FLIGHT, |n| {
                let v = sides[i].1.volume.clone();
                let off = offset_of(seed, n);
                let data = payloads[(n % 64) as usize].clone();
                written.lock().unwrap().push(n);
                async move { v.write_at(off, data).await.expect("write") }
            });
            // Bring the other side to the same bytes afterwards, unmeasured, so that both
            // volumes stay equal to the model.
            let written = written.into_inner().unwrap();
            let other = 1 - i;
            client_rt.block_on(async {
                for &n in &written {
                    let off = offset_of(seed, n);
                    let data = payloads[(n % 64) as usize].clone();
                    sides[other]
                        .1
                        .volume
                        .write_at(off, data)
                        .await
                        .expect("write");
                }
            });
            for &n in &written {
                let off = offset_of(seed, n) as usize;
                model[off..off + SMALL as usize].copy_from_slice(&payloads[(n % 64) as usize]);
            }
            small = small.wrapping_add(0x1234_5678_9abc_def1);
        }
        for &i in &order {
            // Sequential from where this side's last round ended.
            let first = reads[i].ops;
            measure(&client_rt, &mut reads[i], run, 1, |n| {
                let v = sides[i].1.volume.clone();
                let off = ((first + n) % (VOLUME / LARGE)) * LARGE;
                async move {
                    v.read_at(off, LARGE as usize).await.expect("read");
                }
            });
        }
    }

    println!("TLS against plaintext, {rounds} alternating rounds of {run:?} per side");
    println!(
        "  4 KiB random writes ({SMALL_IN_FLIGHT} in flight): tls {} | plaintext {} | ratio {:.3}",
        writes[0].cell(SMALL),
        writes[1].cell(SMALL),
        writes[0].per_second() / writes[1].per_second()
    );
    println!(
        "  1 MiB sequential reads (1 in flight):   tls {} | plaintext {} | ratio {:.3}",
        reads[0].cell(LARGE),
        reads[1].cell(LARGE),
        reads[0].per_second() / reads[1].per_second()
    );
    let per_mib = record_time / record_mib;
    let plain = Duration::from_secs_f64(1.0 / reads[1].per_second());
    println!(
        "  rustls record layer, 1 MiB through a client -> server pair in memory: {:.0} us \
         ({:.2} GB/s); a 1 MiB read crosses 2 links: {:.0} us of CPU, at least {:.0} us of \
         latency on 2 cores; bound on the read ratio: {:.0} / ({:.0} + {:.0}) = {:.3}",
        per_mib.as_secs_f64() * 1e6,
        MIB as f64 / per_mib.as_secs_f64() / 1e9,
        2.0 * per_mib.as_secs_f64() * 1e6,
        per_mib.as_secs_f64() * 1e6,
        plain.as_secs_f64() * 1e6,
        plain.as_secs_f64() * 1e6,
        per_mib.as_secs_f64() * 1e6,
        plain.as_secs_f64() / (plain + per_mib).as_secs_f64()
    );

    // Every byte written reads back, from both volumes.
    client_rt.block_on(async {
        for (name, side) in &sides {
            for i in 0..VOLUME / LARGE {
                let got = side
                    .volume
                    .read_at(i * LARGE, LARGE as usize)
                    .await
                    .expect("read back");
                let at = (i * LARGE) as usize;
                assert!(
                    got[..] == model[at..at + LARGE as usize],
                    "{name}: the MiB at {at} differs from what was written"
                );
            }
        }
    });
    println!("  read back: both volumes equal every write");
}

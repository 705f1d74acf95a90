//! Tracing overhead: `cargo bench -p dagraid-tests --bench tracing`.
//!
//! Two identical clusters in this process (5 storage nodes and a coordinator each, on
//! 127.0.0.1:0 ports, every server on its own runtime as if it were its own process), each with
//! a RAID 5 volume (5 columns, 64 KiB units), and the SDK writing 4 KiB at random aligned offsets
//! with 4 and with 16 writes in flight:
//!
//! - **traced**: every thread of that cluster (and of its client) runs under the production
//!   subscriber *with* export: 100% sampling (`always_on`), the export layer, the export
//!   thread, OTLP/gRPC to a real receiver in this process (`OtlpReceiver`, counting);
//! - **plain**: the production subscriber without an endpoint (the log layer only, at `info`,
//!   to a sink), i.e. tracing off.
//!
//! Rounds of 1 s alternate in pairs, each side first in every other pair, so a change of load on
//! the shared machine hits both sides of the ratio. A traced round ends with a flush inside its
//! time: the export of all its spans is paid by the round. At the end the run asserts that the
//! receiver got every span that ended (none dropped, none lost in a failed export) and prints the
//! traced/plain throughput ratio against the 0.9 target (rates over all rounds, and the median
//! of the pairs' ratios), and the CPU time per write of each
//! side and of the export path (export thread and receiver) from `/proc` schedstat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_client::{Client, ClientOptions, RaidLevel, Volume, VolumeSpec};
use dagraid_coordinator::{Coordinator, CoordinatorConfig, config::NodeSpec};
use dagraid_telemetry::{LayerOptions, TraceSettings};
use dagraid_tests::otlp_receiver::OtlpReceiver;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;
use tracing::Dispatch;

const NODES: usize = 5;
const VOLUME_BYTES: u64 = 256 << 20;
const WRITE: u64 = 4096;
/// Writes in flight: a client waiting on each write's durability, and a CPU-bound load that
/// saturates the machine's two cores.
const IN_FLIGHT: [usize; 2] = [4, 16];
/// Short rounds, many of them: a change of load on the shared machine then falls on both sides
/// alike.
const ROUNDS: usize = 12;
const ROUND: Duration = Duration::from_secs(1);

/// A runtime whose every thread (workers and blocking pool) runs under `dispatch`.
fn runtime(name: &str, threads: usize, dispatch: &Dispatch) -> Runtime {
    let d = dispatch.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .on_thread_start(move || {
            // Kept for the thread's life.
            std::mem::forget(tracing::dispatcher::set_default(&d));
        })
        .enable_all()
        .build()
        .unwrap()
}

/// One cluster and the SDK handle on its volume, every runtime under `dispatch`.
struct Side {
    name: &'static str,
    _dir: tempfile::TempDir,
    _nodes: Runtime,
    _coordinator_rt: Runtime,
    _coordinator: Coordinator,
    client_rt: Runtime,
    volume: Volume,
    ops: [u64; 2],
    busy: [Duration; 2],
    /// CPU time of this side's threads (and of the bench's thread while it drove this side's
    /// rounds), ns, by load.
    cpu_ns: [u64; 2],
    /// CPU time of the export thread and of the receiver's runtime during this side's rounds.
    export_cpu_ns: [u64; 2],
    /// Each round's writes per second, by load.
    round_rates: [Vec<f64>; 2],
}

impl Side {
    fn start(name: &'static str, dispatch: &Dispatch) -> Side {
        let dir = tempfile::tempdir().unwrap();
        let nodes = runtime(&format!("{name}-nodes"), 2, dispatch);
        let coordinator_rt = runtime(&format!("{name}-coord"), 2, dispatch);
        let client_rt = runtime(&format!("{name}-client"), 2, dispatch);
        let mut specs = Vec::new();
        for i in 1..=NODES {
            let mut config = dagraid_node::NodeConfig::new(dir.path().join(format!("node{i}")));
            config.listen = "127.0.0.1:0".parse().unwrap();
            config.node_id = Some(format!("n{i}"));
            let started = nodes.block_on(dagraid_node::start(config)).unwrap();
            specs.push(NodeSpec {
                id: format!("n{i}"),
                address: started.local_addr().to_string(),
            });
            nodes.spawn(started.serve(std::future::pending()));
        }
        let mut config = CoordinatorConfig::new(dir.path().join("coordinator"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.nodes = specs;
        let coordinator = coordinator_rt.block_on(Coordinator::start(config)).unwrap();
        let url = format!("http://{}", coordinator.local_addr());
        let volume = client_rt.block_on(async {
            let client = Client::connect(url, ClientOptions::default())
                .await
                .unwrap();
            client
                .create_volume(
                    VolumeSpec::new("bench", RaidLevel::Raid5, VOLUME_BYTES)
                        .columns(NODES as u32)
                        .stripe_unit_bytes(64 << 10),
                )
                .await
                .unwrap();
            let v = client.volume("bench");
            // Warm up: connections, the cached limits.
            v.write_at(0, vec![0u8; WRITE as usize]).await.unwrap();
            v
        });
        Side {
            name,
            _dir: dir,
            _nodes: nodes,
            _coordinator_rt: coordinator_rt,
            _coordinator: coordinator,
            client_rt,
            volume,
            ops: [0; 2],
            busy: [Duration::ZERO; 2],
            cpu_ns: [0; 2],
            export_cpu_ns: [0; 2],
            round_rates: [Vec::new(), Vec::new()],
        }
    }

    /// Random 4 KiB writes, `IN_FLIGHT[level]` at once, for one round; `finish` runs inside
    /// the round's time and CPU window once the writes are done (the traced side flushes its
    /// spans there, so the export of every span of the round is paid by the round).
    fn round(&mut self, level: usize, seed: u64, finish: impl FnOnce()) {
        let in_flight = IN_FLIGHT[level];
        let volume = self.volume.clone();
        let done = Arc::new(AtomicU64::new(0));
        let counted = done.clone();
        let started = Instant::now();
        let cpu_before = cpu_ns(self.name);
        self.client_rt.block_on(async move {
            let blocks = VOLUME_BYTES / WRITE;
            let mut rng = StdRng::seed_from_u64(seed);
            let data = Bytes::from(vec![0x5au8; WRITE as usize]);
            let offsets: Vec<u64> = (0..1_000_000)
                .map(|_| rng.random_range(0..blocks) * WRITE)
                .collect();
            let deadline = Instant::now() + ROUND;
            let mut writes = futures::stream::iter(offsets)
                .take_while(|_| std::future::ready(Instant::now() < deadline))
                .map(|o| {
                    let v = volume.clone();
                    let d = data.clone();
                    async move { v.write_at(o, d).await }
                })
                .buffer_unordered(in_flight);
            while let Some(r) = writes.next().await {
                r.expect("a benchmark write failed");
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        finish();
        let took = started.elapsed();
        let ops = done.load(Ordering::Relaxed);
        self.busy[level] += took;
        self.ops[level] += ops;
        self.round_rates[level].push(ops as f64 / took.as_secs_f64());
        let cpu_after = cpu_ns(self.name);
        // Only live threads are summed: a blocking-pool thread that ended during the round
        // takes its time out of the sum, which must not wrap.
        self.cpu_ns[level] += cpu_after.0.saturating_sub(cpu_before.0);
        self.export_cpu_ns[level] += cpu_after.1.saturating_sub(cpu_before.1);
    }

    fn rate(&self, level: usize) -> f64 {
        self.ops[level] as f64 / self.busy[level].as_secs_f64()
    }

    /// The median over the rounds of (this side's rate / `other`'s rate in the same pair).
    fn median_ratio(&self, other: &Side, level: usize) -> f64 {
        let mut r: Vec<f64> = self.round_rates[level]
            .iter()
            .zip(&other.round_rates[level])
            .map(|(a, b)| a / b)
            .collect();
        r.sort_by(f64::total_cmp);
        let n = r.len();
        if n == 0 {
            return 0.0;
        }
        if n % 2 == 1 {
            r[n / 2]
        } else {
            (r[n / 2 - 1] + r[n / 2]) / 2.0
        }
    }

    /// CPU µs per write: this side's threads, and the export path's.
    fn cpu_per_write(&self, level: usize) -> (f64, f64) {
        let ops = self.ops[level].max(1) as f64;
        (
            self.cpu_ns[level] as f64 / ops / 1e3,
            self.export_cpu_ns[level] as f64 / ops / 1e3,
        )
    }
}

/// CPU time used so far (`/proc` schedstat, ns) by the threads of side `name` plus the
/// bench's own thread (which drives the side's writes), and by the export path (the export
/// thread and the receiver's runtime).
fn cpu_ns(name: &str) -> (u64, u64) {
    let [side, export] = dagraid_tests::cpu::by_thread_name(|comm| {
        if comm.starts_with(name) || comm.starts_with("tracing-") {
            Some(0)
        } else if comm.starts_with("dagraid-otlp")
            || comm.starts_with("otlp")
            || comm.starts_with("OpenTelemetry")
        {
            Some(1)
        } else {
            None
        }
    });
    (side, export)
}

/// The export layer's options: all off (the default), or those named in
/// `DAGRAID_BENCH_LAYER` (`location,threads,inactivity,target,activation`) on, to measure what
/// each costs.
fn layer_options() -> LayerOptions {
    let on = std::env::var("DAGRAID_BENCH_LAYER").unwrap_or_default();
    let has = |name: &str| on.split(',').any(|o| o.trim() == name);
    LayerOptions {
        location: has("location"),
        threads: has("threads"),
        tracked_inactivity: has("inactivity"),
        target: has("target"),
        context_activation: has("activation"),
    }
}

fn main() {
    let started = Instant::now();
    // The receiver and the exporter's connection live on a runtime of their own.
    let telemetry_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp")
        .enable_all()
        .build()
        .unwrap();
    let receiver = telemetry_rt.block_on(OtlpReceiver::counting()).unwrap();
    let settings = TraceSettings {
        endpoint: Some(receiver.endpoint()),
        service_name: Some("dagraid-bench".into()),
        // 100% unless the run asks for a ratio (DAGRAID_BENCH_RATIO=0.01).
        sampler: Some(match std::env::var("DAGRAID_BENCH_RATIO") {
            Ok(r) => dagraid_telemetry::sampler("parentbased_traceidratio", Some(&r)).unwrap(),
            Err(_) => dagraid_telemetry::sampler("always_on", None).unwrap(),
        }),
        layer: layer_options(),
        log_spans: std::env::var_os("DAGRAID_BENCH_LOG_SPANS").is_some(),
        ..TraceSettings::default()
    };
    let info = || tracing_subscriber::EnvFilter::new("info");
    let (traced, telemetry) = telemetry_rt
        .block_on(async { dagraid_telemetry::build(&settings, info(), std::io::sink, false) })
        .unwrap();
    let off = TraceSettings {
        endpoint: None,
        ..settings.clone()
    };
    let (plain, _) = dagraid_telemetry::build(&off, info(), std::io::sink, false).unwrap();

    let mut sides = [Side::start("traced", &traced), Side::start("plain", &plain)];
    let flush = || telemetry.flush_blocking().expect("flush");
    for level in 0..IN_FLIGHT.len() {
        for round in 0..ROUNDS {
            // Each side goes first in every other pair.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                if i == 0 {
                    sides[0].round(level, round as u64, flush);
                } else {
                    sides[1].round(level, round as u64, || {});
                }
            }
        }
    }
    let flush = std::thread::spawn(move || telemetry.flush_blocking().map(|()| telemetry));
    let telemetry = flush.join().unwrap().expect("flush");
    let dagraid_telemetry::counting::Snapshot {
        ended,
        dropped,
        exported,
        failed,
    } = dagraid_telemetry::counting::stats().snapshot();
    let received = receiver.count();

    let [t, p] = &sides;
    println!(
        "tracing overhead: 4 KiB random writes, RAID 5 over {NODES} in-process nodes, {ROUNDS} alternating rounds of {ROUND:?} per load"
    );
    for (level, in_flight) in IN_FLIGHT.iter().enumerate() {
        let ratio = t.rate(level) / p.rate(level);
        println!(
            "  {in_flight:>2} in flight: traced {:>6.0} writes/s ({} writes), plain {:>6.0} writes/s ({} writes): traced / plain {ratio:.3} (target >= 0.9: {}), median of the {ROUNDS} pairs {:.3}",
            t.rate(level),
            t.ops[level],
            p.rate(level),
            p.ops[level],
            if ratio >= 0.9 { "met" } else { "NOT MET" },
            t.median_ratio(p, level),
        );
        let (tc, te) = t.cpu_per_write(level);
        let (pc, _) = p.cpu_per_write(level);
        println!(
            "     CPU per write: traced {tc:.0} us + export path {te:.0} us, plain {pc:.0} us: traced / plain {:.3}",
            (tc + te) / pc
        );
    }
    println!(
        "  spans: {ended} ended, {received} received, {exported} exported, {dropped} dropped, {failed} lost in failed exports ({:.1} per write)",
        ended as f64 / (t.ops.iter().sum::<u64>() + 1) as f64
    );
    println!(
        "  sampler {:?}, layer options {:?}, log layer sees spans: {}, OTEL_BSP_MAX_EXPORT_BATCH_SIZE={:?}, OTEL_BSP_MAX_QUEUE_SIZE={:?}",
        settings.sampler,
        settings.layer,
        settings.log_spans,
        std::env::var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").ok(),
        std::env::var("OTEL_BSP_MAX_QUEUE_SIZE").ok(),
    );
    println!("  run took {:.0} s", started.elapsed().as_secs_f64());
    assert_eq!(dropped, 0, "spans were dropped");
    assert_eq!(failed, 0, "spans were lost in failed exports");
    assert_eq!(received, ended, "the receiver got every span that ended");
    telemetry_rt.block_on(telemetry.shutdown());
    drop(sides);
}

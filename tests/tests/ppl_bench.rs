//! The partial-parity-log benchmark of docs/BENCHMARKS.md ("Partial-parity log"), a measured
//! run on real processes:
//!
//! `cargo build -p dagraid-node -p dagraid-coordinator --bins`
//! `cargo test -p dagraid-tests --test ppl_bench -- --ignored --nocapture measured`
//!
//! Two clusters side by side, each of 4 storage nodes and a coordinator, each with one RAID 5
//! volume over its 4 nodes (64 KiB units, 4 KiB blocks, `PPL_BENCH_MIB` MiB, default 128),
//! written whole first. Then on each, node 2 is killed (kill -9) and a full-stripe write fails
//! its column: the volume is degraded (checked) for the rest of the run, with no spare to
//! rebuild onto. The coordinators differ only in `--partial-parity-log`:
//!
//! - **log on** (`true`, the default): every write first logs, durably, on the stripe's
//!   surviving parity column, what the stripe's failed data unit holds after the write over the
//!   unit range the write touches (read by a degraded read where the write does not cover it);
//! - **log off** (`false`): degraded writes are not logged.
//!
//! In one run, in alternating rounds (the order of the sides rotated every round), three kinds
//! of writes, 4 writers through the SDK (4 in flight), each on its own write slots
//! (slot / 4 % 4), for `PPL_BENCH_ROUND_MS` (default 2000) per round, kind and side; one
//! warm-up round of half that, then 8 measured rounds:
//!
//! (a) 4 KiB at random blocks (the log reads the failed unit's block when the write is to
//! another unit of its stripe);
//! (b) 64 KiB at random units (aligned to a unit: a write to the failed unit covers it, no read
//! for the log; a write to another unit of the stripe reads the failed unit's whole 64 KiB);
//! (c) 192 KiB at random stripes (full-stripe writes: the failed unit is covered, no read).
//!
//! IOPS, p50 and p99 of each side and kind over all its measured rounds; per write, the log
//! bytes written and the block bytes read and written on the 3 surviving nodes (their
//! `/metrics`: `dagraid_node_component_log_bytes_total`, `dagraid_node_component_bytes_total`;
//! the coordinator's `/metrics` has no log counter), and the DAGs the coordinator ran, by kind
//! (`dagraid_dags_total`).
//!
//! Every round ends with the whole volume read back (degraded) against a model of every
//! acknowledged write. The column checker is skipped: it cannot check a degraded RAID 5 (the
//! failed column is the only redundancy).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_client::{
    Client, ClientOptions, RaidLevel, RetryPolicy, Volume, VolumeSpec, VolumeState,
};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::harness::check_acknowledged;
use dagraid_tests::prom::sample;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const UNIT: u64 = 64 * KIB;
/// Writers, each with one write in flight.
const IN_FLIGHT: u64 = 4;
/// Measured rounds per kind and side, after one warm-up round each.
const ROUNDS: usize = 8;
/// The SDK cuts a write of at most the coordinator's `--max-io-bytes` (default 16 MiB) at the
/// multiples of that size: a stripe across one (5 of the 682 stripes of 128 MiB) would be
/// written as two partial-stripe calls, so no write goes there.
const SDK_GRID: u64 = 16 * MIB;
/// The node killed on both sides (index into `Cluster::nodes`).
const DEAD: usize = 1;
/// The kinds of writes: name and size.
const KINDS: [(&str, u64); 3] = [
    ("4 KiB random", 4 * KIB),
    ("64 KiB unit-aligned", UNIT),
    ("192 KiB full stripe", 3 * UNIT),
];

fn volume_bytes() -> u64 {
    env_u64("PPL_BENCH_MIB", 128) * MIB
}

fn round_length() -> Duration {
    Duration::from_millis(env_u64("PPL_BENCH_ROUND_MS", 2000))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one side measured for one kind of write.
#[derive(Default)]
struct Measured {
    latencies: Vec<Duration>,
    seconds: f64,
    round_iops: Vec<f64>,
    /// Bytes on the surviving nodes during the measured rounds: log written, blocks read,
    /// blocks written.
    log_bytes: f64,
    read_bytes: f64,
    write_bytes: f64,
    /// DAGs the coordinator ran during the measured rounds, by kind.
    dags: BTreeMap<String, f64>,
}

/// One cluster with its degraded volume and the model of its contents.
struct Side {
    name: &'static str,
    cluster: Cluster,
    client: Client,
    model: Arc<Mutex<Vec<u8>>>,
    measured: Vec<Measured>,
    /// Writes that failed: side, kind, offset, length, the error.
    errors: Vec<String>,
}

impl Side {
    async fn start(name: &'static str, log: bool, seed: u64) -> Side {
        let mut cluster = Cluster::start(ClusterOptions {
            nodes: 4,
            metrics: true,
            coordinator_args: vec!["--partial-parity-log".to_owned(), log.to_string()],
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let client = connect(&cluster).await;
        let mut spec = VolumeSpec::new("vol", RaidLevel::Raid5, volume_bytes())
            .columns(4)
            .stripe_unit_bytes(UNIT);
        spec.nodes = (1..=4).map(|i| format!("node{i}")).collect();
        let info = client.create_volume(spec).await.unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut model = vec![0u8; info.size_bytes as usize];
        rng.fill(&mut model[..]);
        for (i, chunk) in model.chunks(4 * MIB as usize).enumerate() {
            client
                .volume("vol")
                .write_at(i as u64 * 4 * MIB, Bytes::copy_from_slice(chunk))
                .await
                .unwrap();
        }

        // Node 2 dies; a full-stripe write (it reaches every column) fails its column.
        cluster.nodes[DEAD].kill9().await.unwrap();
        let mut probe = vec![0u8; 3 * UNIT as usize];
        rng.fill(&mut probe[..]);
        client
            .volume("vol")
            .write_at(0, Bytes::copy_from_slice(&probe))
            .await
            .unwrap();
        model[..probe.len()].copy_from_slice(&probe);
        let s = client.volume("vol").status().await.unwrap();
        assert_eq!(s.state, VolumeState::Degraded, "{name}: {s:?}");
        Side {
            name,
            cluster,
            client,
            model: Arc::new(Mutex::new(model)),
            measured: KINDS.iter().map(|_| Measured::default()).collect(),
            errors: Vec::new(),
        }
    }

    fn volume(&self) -> Volume {
        self.client.volume("vol")
    }

    fn size(&self) -> u64 {
        self.model.lock().unwrap().len() as u64
    }

    /// (log bytes written, block bytes read, block bytes written) on the surviving nodes.
    async fn node_bytes(&self) -> (f64, f64, f64) {
        let mut total = (0.0, 0.0, 0.0);
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            if i == DEAD {
                continue;
            }
            let text = node.scrape().await.unwrap();
            let write = [("op", "write")];
            total.0 += sample(&text, "dagraid_node_component_log_bytes_total", &write);
            total.1 += sample(
                &text,
                "dagraid_node_component_bytes_total",
                &[("op", "read")],
            );
            total.2 += sample(&text, "dagraid_node_component_bytes_total", &write);
        }
        total
    }

    /// The DAGs the coordinator ran so far, by kind (`dagraid_dags_total`, every outcome).
    async fn dags(&self) -> BTreeMap<String, f64> {
        let text = self.cluster.coordinator.scrape().await.unwrap();
        let mut by_kind = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("dagraid_dags_total{") else {
                continue;
            };
            let (labels, value) = rest.rsplit_once(' ').unwrap();
            let kind = labels
                .split(',')
                .find_map(|l| l.strip_prefix("kind=\""))
                .unwrap()
                .trim_end_matches(['"', '}']);
            *by_kind.entry(kind.to_owned()).or_insert(0.0) += value.parse::<f64>().unwrap();
        }
        by_kind
    }

    /// The volume is still degraded, and the whole of it reads back (degraded) as the model of
    /// acknowledged writes, except inside `unknown` (writes that failed), where each byte is
    /// the old or the new one. No column checker: a degraded RAID 5 has no redundancy left to
    /// check.
    async fn check(&self, unknown: &[(u64, Vec<u8>)]) {
        let vol = self.volume();
        let s = vol.status().await.unwrap();
        assert_eq!(s.state, VolumeState::Degraded, "{}: {s:?}", self.name);
        let size = self.size();
        let mut at = 0u64;
        while at < size {
            let n = (4 * MIB).min(size - at);
            let got = vol.read_at(at, n as usize).await.unwrap();
            let model = self.model.lock().unwrap();
            let want = &model[at as usize..(at + n) as usize];
            if got[..] != want[..] {
                let here: Vec<(u64, Vec<u8>)> = unknown
                    .iter()
                    .filter(|(off, d)| *off < at + n && off + d.len() as u64 > at)
                    .map(|(off, d)| {
                        let from = at.max(*off);
                        let to = (at + n).min(off + d.len() as u64);
                        (
                            from - at,
                            d[(from - off) as usize..(to - off) as usize].to_vec(),
                        )
                    })
                    .collect();
                eprintln!("{}: read back at {at}..{}", self.name, at + n);
                check_acknowledged(&got, want, &here);
            }
            at += n;
        }
    }
}

async fn connect(cluster: &Cluster) -> Client {
    Client::connect(
        cluster.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::none(),
            ..cluster.client_options()
        },
    )
    .await
    .unwrap()
}

/// What a round left: the latency of every acknowledged write, the writes that failed (with
/// their error), and how long it ran.
struct Load {
    latencies: Vec<Duration>,
    failed: Vec<(u64, Vec<u8>, String)>,
    took: Duration,
}

/// One round of `length`: `IN_FLIGHT` writers of `len` bytes at random `len`-aligned offsets
/// (slots) of the volume, writer `w` only at slots `i / IN_FLIGHT % IN_FLIGHT == w` (so the
/// model knows the order of writes to a byte); each acknowledged write goes into the model. A
/// writer stops at its first error. No slot across a multiple of [`SDK_GRID`].
///
/// Not `i % IN_FLIGHT == w`: the parity column of a stripe is its number mod 4, so with
/// full-stripe writes each writer would then write only stripes of one parity column, and the
/// writer on the stripes whose parity is on the failed column (never logged) would set its own
/// pace. Owned this way, every writer's slots cover every stripe position and parity column.
async fn write_round(side: &Side, len: u64, length: Duration, seed: u64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let slots = side.size() / len;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..IN_FLIGHT {
        let (vol, model, stop) = (side.volume(), side.model.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * IN_FLIGHT + w);
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let slot = loop {
                    let r = rng.random_range(0..slots);
                    let slot = r / (IN_FLIGHT * IN_FLIGHT) * IN_FLIGHT * IN_FLIGHT
                        + w * IN_FLIGHT
                        + r % IN_FLIGHT;
                    // Not across a multiple of the SDK's grid: it would be two calls.
                    let crosses = (slot * len) / SDK_GRID != (slot * len + len - 1) / SDK_GRID;
                    if slot < slots && !crosses {
                        break slot;
                    }
                };
                let offset = slot * len;
                let mut data = vec![0u8; len as usize];
                rng.fill(&mut data[..]);
                let t = Instant::now();
                match vol.write_at(offset, Bytes::copy_from_slice(&data)).await {
                    Ok(()) => {
                        latencies.push(t.elapsed());
                        model.lock().unwrap()[offset as usize..(offset + len) as usize]
                            .copy_from_slice(&data);
                    }
                    Err(e) => return (latencies, Some((offset, data, format!("{e:?}")))),
                }
            }
            (latencies, None)
        }));
    }
    let mut load = Load {
        latencies: Vec::new(),
        failed: Vec::new(),
        took: Duration::ZERO,
    };
    for t in tasks {
        let (latencies, failed) = t.await.unwrap();
        load.latencies.extend(latencies);
        load.failed.extend(failed);
    }
    load.took = start.elapsed();
    timer.await.unwrap();
    load
}

/// `dags` divided by `writes`, as `kind n.nn` pairs.
fn per_write(dags: &BTreeMap<String, f64>, writes: f64) -> String {
    let parts: Vec<String> = dags
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", v / writes))
        .collect();
    parts.join(", ")
}

/// p50 and p99 of `lat`, in microseconds.
fn percentiles(lat: &mut [Duration]) -> (u128, u128) {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_micros();
    (at(0.50), at(0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measured run of a few minutes; see docs/BENCHMARKS.md"]
async fn measured() {
    let started = Instant::now();
    let mut sides = vec![
        Side::start("log on", true, 1).await,
        Side::start("log off", false, 2).await,
    ];
    println!(
        "ppl bench: 2 clusters of 4 nodes, RAID 5 over 4, {} MiB volumes, node {} killed and its column failed (filled and degraded in {:.1} s)",
        sides[0].size() / MIB,
        DEAD + 1,
        started.elapsed().as_secs_f64()
    );
    // Both sides degraded from here on, so the log-off side is not slower for another reason.
    for s in &sides {
        let status = s.volume().status().await.unwrap();
        println!("  {}: {:?}", s.name, status.state);
    }

    let length = round_length();
    let mut seed = 100;
    for round in 0..=ROUNDS {
        for (k, &(kind, len)) in KINDS.iter().enumerate() {
            for i in 0..sides.len() {
                let side = &mut sides[(round + k + i) % 2];
                seed += 1;
                let length = if round == 0 { length / 2 } else { length };
                let before = side.node_bytes().await;
                let dags_before = side.dags().await;
                let load = write_round(side, len, length, seed).await;
                let after = side.node_bytes().await;
                let mut dags = side.dags().await;
                for (k, v) in &mut dags {
                    *v -= dags_before.get(k).copied().unwrap_or(0.0);
                }
                dags.retain(|_, v| *v > 0.0);
                let n = load.latencies.len() as f64;
                let iops = n / load.took.as_secs_f64();
                println!(
                    "  round {round} {kind} {}: {} writes, {iops:.0} IOPS, per write: log {:.0} B, read {:.0} B, written {:.0} B, DAGs {}{}",
                    side.name,
                    load.latencies.len(),
                    (after.0 - before.0) / n,
                    (after.1 - before.1) / n,
                    (after.2 - before.2) / n,
                    per_write(&dags, n),
                    if round == 0 { " (warm-up)" } else { "" }
                );
                for (offset, data, e) in &load.failed {
                    let line = format!(
                        "{} round {round} {kind}: write of {} bytes at {offset} failed: {e}",
                        side.name,
                        data.len()
                    );
                    println!("  FAILED: {line}");
                    side.errors.push(line);
                }
                if round > 0 {
                    let m = &mut side.measured[k];
                    m.latencies.extend(load.latencies);
                    m.seconds += load.took.as_secs_f64();
                    m.round_iops.push(iops);
                    m.log_bytes += after.0 - before.0;
                    m.read_bytes += after.1 - before.1;
                    m.write_bytes += after.2 - before.2;
                    for (k, v) in dags {
                        *m.dags.entry(k).or_insert(0.0) += v;
                    }
                }
                let unknown: Vec<(u64, Vec<u8>)> =
                    load.failed.into_iter().map(|(o, d, _)| (o, d)).collect();
                side.check(&unknown).await;
            }
        }
    }

    for (k, &(kind, _)) in KINDS.iter().enumerate() {
        let mut summary = Vec::new();
        for s in &mut sides {
            let m = &mut s.measured[k];
            let n = m.latencies.len();
            let (p50, p99) = percentiles(&mut m.latencies);
            let iops = n as f64 / m.seconds;
            summary.push((iops, p50, p99));
            println!(
                "({kind}) {}: {n} writes, {iops:.0} IOPS, p50 {p50} us, p99 {p99} us; per write on the surviving nodes: log {:.0} B, read {:.0} B, written {:.0} B; DAGs per write {}",
                s.name,
                m.log_bytes / n as f64,
                m.read_bytes / n as f64,
                m.write_bytes / n as f64,
                per_write(&m.dags, n as f64),
            );
        }
        let mut pairs: Vec<f64> = sides[0].measured[k]
            .round_iops
            .iter()
            .zip(&sides[1].measured[k].round_iops)
            .map(|(on, off)| on / off)
            .collect();
        pairs.sort_by(f64::total_cmp);
        let (on, off) = (summary[0], summary[1]);
        println!(
            "({kind}) on / off: IOPS {:.3} (median of rounds {:.3}), p50 {:.3}, p99 {:.3}",
            on.0 / off.0,
            pairs[pairs.len() / 2],
            on.1 as f64 / off.1 as f64,
            on.2 as f64 / off.2 as f64
        );
    }
    println!("ppl bench: {:.0} s in all", started.elapsed().as_secs_f64());
    let errors: Vec<&String> = sides.iter().flat_map(|s| &s.errors).collect();
    assert!(
        errors.is_empty(),
        "writes failed while degraded: {errors:#?}"
    );
}

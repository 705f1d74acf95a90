//! The parity-map benchmark of docs/BENCHMARKS.md ("Parity map"), a measured run on real
//! processes:
//!
//! `cargo build -p dagraid-node -p dagraid-coordinator --bins`
//! `cargo test -p dagraid-tests --test parity_map_bench -- --ignored --nocapture measured`
//!
//! Three clusters side by side, each of 4 storage nodes and a coordinator, each with one RAID 5
//! volume over its 4 nodes (64 KiB units, 4 KiB blocks, `PARITY_MAP_BENCH_MIB` MiB, default
//! 256), written whole first. The coordinators differ only in their parity-map flags:
//!
//! - **default**: `--parity-map-region-bytes` and `--parity-map-cooldown-ms` at their defaults
//!   (64 MiB, 10 s);
//! - **one region** (the map's marking "off"): a region larger than the volume, so the volume is
//!   one region, and a cooldown of an hour: the region is marked by the fill's first write and
//!   never cleared, so no later write waits for a mark. The map still exists (its bookkeeping
//!   on every write is paid); only the marks are gone;
//! - **1 MiB, 500 ms**: regions of about 1 MiB cleared after 500 ms of quiet, so random writes
//!   keep hitting clean regions and waiting for their marks.
//!
//! In one run, in alternating rounds (the order rotated every round):
//!
//! (a) **the map's cost on 4 KiB random writes.** 4 writers through the SDK (4 in flight), each
//! writing 4 KiB at random blocks of its own (block % 4), for `PARITY_MAP_BENCH_ROUND_MS`
//! (default 2000) per round and side; IOPS, p50 and p99 of each side over all its rounds.
//!
//! (b) **recovery time after a crash.** The same write load on ~1% of the volume (the 1 MiB
//! side's regions spread over the volume, and the same byte ranges on the one-region side),
//! then kill -9 of the coordinator under it: the time from the restart (process start included)
//! until the volume is optimal with its resync completed, polled every 10 ms. On the 1 MiB side
//! the resync covers the ~1% of regions written; on the one-region side it covers the whole
//! volume (its one region is dirty): a full resync of a volume of the same size, geometry and
//! load. A third kind of round restarts the 1 MiB side after a clean shutdown (SIGTERM): the
//! floor of a restart with nothing to resync.
//!
//! Every round ends with the whole volume read back against a model of every acknowledged write
//! (a write cut by the crash may read old or new) and the column checker.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_client::{
    Client, ClientOptions, ParityMapInfo, RaidLevel, ResyncProgress, RetryPolicy, Volume,
    VolumeSpec, VolumeState,
};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::eventually;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BS: u64 = 4096;
/// Writers, each with one write in flight.
const IN_FLIGHT: u64 = 4;
/// Rounds of (a) per side, after one warm-up round each.
const ROUNDS_A: usize = 5;
/// Rounds of (b) of each kind.
const ROUNDS_B: usize = 3;
/// The 1 MiB side's cooldown.
const SHORT_COOLDOWN_MS: u64 = 500;
/// How long the load of (b) runs before the crash.
const LOAD_BEFORE_CRASH: Duration = Duration::from_millis(1500);

fn volume_bytes() -> u64 {
    env_u64("PARITY_MAP_BENCH_MIB", 256) * MIB
}

fn round_length() -> Duration {
    Duration::from_millis(env_u64("PARITY_MAP_BENCH_ROUND_MS", 2000))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One cluster with its volume and the model of its contents.
struct Side {
    name: &'static str,
    cluster: Cluster,
    client: Client,
    model: Arc<Mutex<Vec<u8>>>,
    map: ParityMapInfo,
    /// (a): latencies of every measured write, and the seconds measured.
    latencies: Vec<Duration>,
    seconds: f64,
    /// (a): IOPS of each measured round.
    round_iops: Vec<f64>,
}

impl Side {
    async fn start(name: &'static str, args: &[&str], seed: u64) -> Side {
        let cluster = Cluster::start(ClusterOptions {
            nodes: 4,
            coordinator_args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let client = connect(&cluster).await;
        let mut spec = VolumeSpec::new("vol", RaidLevel::Raid5, volume_bytes())
            .columns(4)
            .stripe_unit_bytes(64 * KIB);
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
        let map = client
            .volume("vol")
            .status()
            .await
            .unwrap()
            .parity_map
            .expect("an assembled volume has a parity map");
        Side {
            name,
            cluster,
            client,
            model: Arc::new(Mutex::new(model)),
            map,
            latencies: Vec::new(),
            seconds: 0.0,
            round_iops: Vec::new(),
        }
    }

    fn volume(&self) -> Volume {
        self.client.volume("vol")
    }

    fn size(&self) -> u64 {
        self.model.lock().unwrap().len() as u64
    }

    async fn dirty_regions(&self) -> u64 {
        let status = self.volume().status().await.unwrap();
        status.parity_map.unwrap().dirty_regions
    }

    /// The whole volume read back equals the model, except inside `unknown` (writes cut by a
    /// crash), where each byte is the old or the new one; the model takes what was read there.
    /// Then the column checker.
    async fn check(&self, unknown: &[(u64, Vec<u8>)]) {
        let vol = self.volume();
        let size = self.size();
        let mut at = 0u64;
        while at < size {
            let n = (4 * MIB).min(size - at);
            let got = vol.read_at(at, n as usize).await.unwrap();
            let mut model = self.model.lock().unwrap();
            let want = &mut model[at as usize..(at + n) as usize];
            if got[..] != want[..] {
                for (i, (g, w)) in got.iter().zip(want.iter_mut()).enumerate() {
                    if g == w {
                        continue;
                    }
                    let byte = at + i as u64;
                    let new = unknown.iter().find_map(|(off, data)| {
                        (*off..*off + data.len() as u64)
                            .contains(&byte)
                            .then(|| data[(byte - off) as usize])
                    });
                    assert_eq!(
                        new,
                        Some(*g),
                        "{}: byte {byte} is {g:#x}, acknowledged {w:#x}",
                        self.name
                    );
                    *w = *g;
                }
            }
            at += n;
        }
        self.cluster.check_columns("vol", &[]).await.unwrap();
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

/// What a load left: the latency of every acknowledged write, the writes whose outcome is
/// unknown (cut by a crash), and how long it ran.
struct Load {
    latencies: Vec<Duration>,
    unknown: Vec<(u64, Vec<u8>)>,
    took: Duration,
}

/// `IN_FLIGHT` writers of 4 KiB at random blocks of `blocks` (ranges of block indexes, each
/// starting at a multiple of `IN_FLIGHT`), writer `w` only on blocks `b % IN_FLIGHT == w` (so
/// the model knows the order of writes to a block), until `stop` or a writer's first error;
/// each acknowledged write goes into `model`.
async fn random_writes(
    vol: &Volume,
    model: &Arc<Mutex<Vec<u8>>>,
    blocks: &[Range<u64>],
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Load {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..IN_FLIGHT {
        let (vol, model, stop) = (vol.clone(), model.clone(), stop.clone());
        let blocks = blocks.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * IN_FLIGHT + w);
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let range = &blocks[rng.random_range(0..blocks.len())];
                let block = rng.random_range(range.clone()) / IN_FLIGHT * IN_FLIGHT + w;
                let block = if block >= range.end {
                    block - IN_FLIGHT
                } else {
                    block
                };
                let offset = block * BS;
                let mut data = vec![0u8; BS as usize];
                rng.fill(&mut data[..]);
                let t = Instant::now();
                match vol.write_at(offset, Bytes::copy_from_slice(&data)).await {
                    Ok(()) => {
                        latencies.push(t.elapsed());
                        model.lock().unwrap()[offset as usize..(offset + BS) as usize]
                            .copy_from_slice(&data);
                    }
                    Err(_) => return (latencies, Some((offset, data))),
                }
            }
            (latencies, None)
        }));
    }
    let mut load = Load {
        latencies: Vec::new(),
        unknown: Vec::new(),
        took: Duration::ZERO,
    };
    for t in tasks {
        let (latencies, unknown) = t.await.unwrap();
        load.latencies.extend(latencies);
        load.unknown.extend(unknown);
    }
    load.took = start.elapsed();
    load
}

/// (a): one round of `length` of 4 KiB random writes over the whole volume of `side`.
async fn write_round(side: &Side, length: Duration, seed: u64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let whole = 0..side.size() / BS;
    let blocks = std::slice::from_ref(&whole);
    let load = random_writes(&side.volume(), &side.model, blocks, seed, stop).await;
    timer.await.unwrap();
    assert!(
        load.unknown.is_empty(),
        "{}: a write failed without a crash",
        side.name
    );
    load
}

/// p50 and p99 of `lat`, in microseconds.
fn percentiles(lat: &mut [Duration]) -> (u128, u128) {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_micros();
    (at(0.50), at(0.99))
}

/// How a round of (b) ends: what the restart found and how long it took.
struct Recovery {
    took: Duration,
    resync: Option<ResyncProgress>,
}

/// (b): the write load on `blocks` for [`LOAD_BEFORE_CRASH`], kill -9 of the coordinator under
/// it (or, with `clean`, the load stopped and a SIGTERM), then the restart: time until the
/// volume is optimal with its resync (if any) completed. Ends with the read-back and the
/// column checker.
async fn crash_round(side: &mut Side, blocks: &[Range<u64>], clean: bool, seed: u64) -> Recovery {
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (vol, model, blocks, stop) = (
            side.volume(),
            side.model.clone(),
            blocks.to_vec(),
            stop.clone(),
        );
        tokio::spawn(async move { random_writes(&vol, &model, &blocks, seed, stop).await })
    };
    tokio::time::sleep(LOAD_BEFORE_CRASH).await;
    let dirty_at_crash = side.dirty_regions().await;
    let unknown = if clean {
        stop.store(true, Ordering::Relaxed);
        let load = load.await.unwrap();
        assert!(load.unknown.is_empty());
        side.cluster.coordinator.terminate().await.unwrap();
        Vec::new()
    } else {
        side.cluster.coordinator.kill9().await.unwrap();
        load.await.unwrap().unknown
    };

    let t = Instant::now();
    side.cluster.coordinator.restart().await.unwrap();
    side.client = connect(&side.cluster).await;
    let vol = side.volume();
    let resync = loop {
        let s = vol.status().await.unwrap();
        let resynced = match &s.resync {
            None => clean,
            Some(r) => !clean && r.completed(),
        };
        if s.state == VolumeState::Optimal && resynced {
            break s.resync;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "{}: not optimal: {s:?}",
            side.name
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = t.elapsed();
    println!(
        "  {} {}: {dirty_at_crash} regions dirty at the {}, optimal {:.3} s after the restart, resync {:?}",
        side.name,
        if clean { "clean restart" } else { "kill -9" },
        if clean { "shutdown" } else { "crash" },
        took.as_secs_f64(),
        resync
            .as_ref()
            .map(|r| (r.regions_total, r.stripes_total, r.full)),
    );
    side.check(&unknown).await;
    Recovery { took, resync }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measured run of a few minutes; see docs/BENCHMARKS.md"]
async fn measured() {
    let started = Instant::now();
    let short = SHORT_COOLDOWN_MS.to_string();
    let mut sides = vec![
        Side::start("default", &[], 1).await,
        Side::start(
            "one region",
            &[
                "--parity-map-region-bytes",
                "1099511627776",
                "--parity-map-cooldown-ms",
                "3600000",
            ],
            2,
        )
        .await,
        Side::start(
            "1 MiB, 500 ms",
            &[
                "--parity-map-region-bytes",
                "1048576",
                "--parity-map-cooldown-ms",
                &short,
            ],
            3,
        )
        .await,
    ];
    assert_eq!(sides[1].map.regions, 1, "{:?}", sides[1].map);
    println!(
        "parity map bench: 3 clusters of 4 nodes, RAID 5 over 4, {} MiB volumes (filled in {:.1} s)",
        sides[0].size() / MIB,
        started.elapsed().as_secs_f64()
    );
    for s in &sides {
        println!(
            "  {}: {} regions of {} KiB, cooldown {:?}",
            s.name,
            s.map.regions,
            s.map.region_bytes / KIB,
            s.map.cooldown
        );
    }

    // (a) 4 KiB random writes, 4 in flight, alternating rounds (a warm-up round first).
    let length = round_length();
    let mut seed = 100;
    for round in 0..=ROUNDS_A {
        for i in 0..sides.len() {
            let side = &mut sides[(round + i) % 3];
            let dirty_before = side.dirty_regions().await;
            seed += 1;
            let length = if round == 0 { length / 2 } else { length };
            let load = write_round(side, length, seed).await;
            let iops = load.latencies.len() as f64 / load.took.as_secs_f64();
            println!(
                "  round {round} {}: {} writes, {iops:.0} IOPS, {dirty_before} regions dirty before{}",
                side.name,
                load.latencies.len(),
                if round == 0 { " (warm-up)" } else { "" }
            );
            if round > 0 {
                side.latencies.extend(load.latencies);
                side.seconds += load.took.as_secs_f64();
                side.round_iops.push(iops);
            }
            side.check(&[]).await;
        }
    }
    let mut summary = Vec::new();
    for s in &mut sides {
        let n = s.latencies.len();
        let (p50, p99) = percentiles(&mut s.latencies);
        summary.push((n as f64 / s.seconds, p50, p99));
        println!(
            "(a) {}: {n} writes, {:.0} IOPS, p50 {p50} us, p99 {p99} us",
            s.name,
            n as f64 / s.seconds
        );
    }
    let off = summary[1];
    for (i, s) in sides.iter().enumerate() {
        let mut pairs: Vec<f64> = s
            .round_iops
            .iter()
            .zip(&sides[1].round_iops)
            .map(|(x, y)| x / y)
            .collect();
        pairs.sort_by(f64::total_cmp);
        println!(
            "(a) {} / one region: IOPS {:.3} (median of rounds {:.3}), p50 {:.3}, p99 {:.3}",
            s.name,
            summary[i].0 / off.0,
            pairs[pairs.len() / 2],
            summary[i].1 as f64 / off.1 as f64,
            summary[i].2 as f64 / off.2 as f64
        );
    }

    // (b) kill -9 with ~1% of the regions dirty (1 MiB side) vs a full resync (one-region side,
    // the same byte ranges written), and a clean restart; alternating.
    let small = sides[2].map.clone();
    let region_blocks = small.region_bytes / BS;
    // 1% of the regions, rounded to the nearest.
    let k = ((small.regions + 50) / 100).max(1);
    let blocks: Vec<Range<u64>> = (0..k)
        .map(|i| {
            let first = i * small.regions / k * region_blocks;
            first..(first + region_blocks).min(sides[2].size() / BS)
        })
        .collect();
    println!(
        "(b) load on {k} of {} regions of {} KiB ({:.2}%)",
        small.regions,
        small.region_bytes / KIB,
        k as f64 * 100.0 / small.regions as f64
    );
    let mut partial = Vec::new();
    let mut full = Vec::new();
    let mut clean = Vec::new();
    for round in 0..ROUNDS_B {
        for kind in 0..3 {
            seed += 1;
            match (round + kind) % 3 {
                0 => {
                    let side: &Side = &sides[2];
                    eventually(
                        "the 1 MiB side's regions cooled down",
                        Duration::from_secs(60),
                        || async move { (side.dirty_regions().await == 0).then_some(()) },
                    )
                    .await;
                    let r = crash_round(&mut sides[2], &blocks, false, seed).await;
                    let resync = r.resync.unwrap();
                    assert!(!resync.full);
                    assert_eq!(resync.regions_total, k, "{resync:?}");
                    partial.push((r.took, resync));
                }
                1 => {
                    let r = crash_round(&mut sides[1], &blocks, false, seed).await;
                    let resync = r.resync.unwrap();
                    assert_eq!(resync.regions_total, 1, "{resync:?}");
                    full.push((r.took, resync));
                }
                _ => {
                    let r = crash_round(&mut sides[2], &blocks, true, seed).await;
                    clean.push(r.took);
                }
            }
        }
    }
    let mean = |d: &[Duration]| d.iter().map(Duration::as_secs_f64).sum::<f64>() / d.len() as f64;
    let partial_s = mean(&partial.iter().map(|p| p.0).collect::<Vec<_>>());
    let full_s = mean(&full.iter().map(|p| p.0).collect::<Vec<_>>());
    let clean_s = mean(&clean);
    println!(
        "(b) restart to optimal, mean of {ROUNDS_B}: {k} regions dirty ({} stripes) {partial_s:.3} s, full ({} stripes) {full_s:.3} s, clean restart {clean_s:.3} s; partial / full {:.3}",
        partial[0].1.stripes_total,
        full[0].1.stripes_total,
        partial_s / full_s
    );
    println!(
        "parity map bench: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
}

//! The rebuild benchmark of docs/BENCHMARKS.md ("Rebuild"), a measured run on real processes:
//!
//! `cargo build -p dagraid-node -p dagraid-coordinator --bins`
//! `cargo test -p dagraid-tests --test rebuild_bench -- --ignored --nocapture measured`
//!
//! A cluster of 4 storage nodes and a coordinator (`--rebuild-rate 0`: no default limit), a
//! RAID 5 volume over the 4 nodes (64 KiB units, 4 KiB blocks, `REBUILD_BENCH_MIB` MiB of
//! data, default 192, so 64 MiB per column), written whole. In one run, in alternating rounds:
//!
//! (a) **rebuild vs a plain program.** A rebuild round fails column 1 (FailComponent) and
//! rebuilds it in place (`RebuildColumn{in_place}`, no rate limit): time from the call's answer
//! to the column optimal, polled every 10 ms. A plain-program round does the same work on the
//! same machine with no dagraid in the way: it reads the 3 surviving components' files straight
//! from the nodes' data directories (their data regions), XORs them and writes one file on the
//! same file system, 1 MiB at a time, one fdatasync at the end. A third round does it 64 KiB
//! at a time (the stripe unit) with an fdatasync after each write, as the rebuild writes through
//! a node (a write is durable before its answer) one stripe at a time.
//!
//! (b) **user writes during a rebuild.** 4 KiB random writes, 1 in flight, while column 1 is
//! rebuilt in place at the coordinator's default rate (64 MiB/s, given in the request), against
//! the same writes on the optimal volume for as long; p50 and p99 of each.
//!
//! Asserted at the end: the whole volume reads back as a model of every write, and the column
//! checker agrees.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_client::{Client, ClientOptions, RaidLevel, RetryPolicy, VolumeSpec};
use dagraid_proto::volume::v1 as vpb;
use dagraid_tests::cluster::{Cluster, ClusterOptions, layout_of};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BS: u64 = 4096;
/// Rounds of each kind, alternating.
const ROUNDS: usize = 4;
/// The rate the requests of (b) give (while the writes run, the busy limit applies).
const DEFAULT_RATE: u64 = 64 * MIB;

/// The rate of the rebuilds of (b): `REBUILD_BENCH_RATE` bytes/s, default the default rate.
fn user_round_rate() -> u64 {
    std::env::var("REBUILD_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_RATE)
}

/// `REBUILD_BENCH_ONLY=b` skips (a).
fn run_a() -> bool {
    std::env::var("REBUILD_BENCH_ONLY").map_or(true, |v| v != "b")
}

fn volume_bytes() -> u64 {
    std::env::var("REBUILD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(192)
        * MIB
}

async fn get(cluster: &Cluster) -> vpb::Volume {
    cluster
        .volume_client()
        .await
        .unwrap()
        .get_volume("vol")
        .await
        .unwrap()
}

fn optimal(v: &vpb::Volume) -> bool {
    v.state() == vpb::VolumeState::Optimal
        && v.components
            .iter()
            .all(|c| c.state() == vpb::ComponentState::Optimal)
}

/// Fails column 1 and rebuilds it in place at `rate` (0: the coordinator's default, here none);
/// returns when the rebuild was started.
async fn start_rebuild(cluster: &Cluster, c: &Client, rate: u64) {
    c.fail_component("vol", 1).await.unwrap();
    let mut raw = cluster.volume_client().await.unwrap();
    let req = raw.request(vpb::RebuildColumnRequest {
        volume: "vol".into(),
        column: 1,
        in_place: true,
        rate_bytes_per_second: rate,
        ..Default::default()
    });
    raw.inner.rebuild_column(req).await.unwrap();
}

/// Waits (polling every 10 ms) until the volume is optimal again.
async fn wait_optimal(cluster: &Cluster) {
    let mut raw = cluster.volume_client().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v = raw.get_volume("vol").await.unwrap();
        // The column turns optimal a moment before its job says it completed.
        let r = v.rebuilds.iter().find(|r| r.column == 1);
        if optimal(&v) && r.is_some_and(|r| r.completed) {
            let r = r.unwrap();
            assert!(r.error.is_empty() && r.lost_blocks == 0, "{r:?}");
            return;
        }
        assert!(Instant::now() < deadline, "the rebuild did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The plain program: XOR of `sources`' data regions into `target`'s, `chunk` bytes at a time;
/// an fdatasync after each write if `sync_each`, else one at the end.
fn plain_rebuild(sources: &[PathBuf], target: &Path, bytes: u64, chunk: usize, sync_each: bool) {
    use std::os::unix::fs::FileExt;
    let files: Vec<std::fs::File> = sources
        .iter()
        .map(|p| std::fs::File::open(p).unwrap())
        .collect();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(target)
        .unwrap();
    let mut bufs = vec![vec![0u8; chunk]; files.len()];
    let mut dst = vec![0u8; chunk];
    let mut at = 0u64;
    while at < bytes {
        for (f, b) in files.iter().zip(bufs.iter_mut()) {
            f.read_exact_at(b, 4096 + at).unwrap();
        }
        dst.fill(0);
        let srcs: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        dagraid_core::parity::xor_many(&mut dst, &srcs).unwrap();
        out.write_all_at(&dst, 4096 + at).unwrap();
        if sync_each {
            out.sync_data().unwrap();
        }
        at += chunk as u64;
    }
    out.sync_data().unwrap();
}

/// p50 and p99 of `lat`, in microseconds.
fn percentiles(lat: &mut [Duration]) -> (u128, u128) {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_micros();
    (at(0.50), at(0.99))
}

/// 4 KiB random writes, 1 in flight, until `stop` (or `max`): their latencies.
async fn small_writes(
    c: &Client,
    model: &mut [u8],
    rng: &mut StdRng,
    stop: Option<Arc<AtomicBool>>,
    max: Duration,
) -> Vec<Duration> {
    let vol = c.volume("vol");
    let blocks = model.len() as u64 / BS;
    let start = Instant::now();
    let mut lat = Vec::new();
    while start.elapsed() < max && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
        let offset = rng.random_range(0..blocks) * BS;
        let mut data = vec![0u8; BS as usize];
        rng.fill(&mut data[..]);
        let t = Instant::now();
        vol.write_at(offset, Bytes::copy_from_slice(&data))
            .await
            .unwrap();
        lat.push(t.elapsed());
        model[offset as usize..(offset + BS) as usize].copy_from_slice(&data);
    }
    lat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measured run of a few minutes; see docs/BENCHMARKS.md"]
async fn measured() {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        rebuild_rate: Some(0),
        down_out_delay_ms: Some(3_600_000),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let c = Client::connect(
        cluster.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::none(),
            ..cluster.client_options()
        },
    )
    .await
    .unwrap();
    let mut spec = VolumeSpec::new("vol", RaidLevel::Raid5, volume_bytes())
        .columns(4)
        .stripe_unit_bytes(64 * KIB);
    spec.nodes = (1..=4).map(|i| format!("node{i}")).collect();
    let info = c.create_volume(spec).await.unwrap();
    let mut rng = StdRng::seed_from_u64(19);
    let mut model = vec![0u8; info.size_bytes as usize];
    rng.fill(&mut model[..]);
    for (i, chunk) in model.chunks(4 * MIB as usize).enumerate() {
        c.volume("vol")
            .write_at(i as u64 * 4 * MIB, Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let v = get(&cluster).await;
    let layout = layout_of(&v).unwrap();
    let column_bytes = layout.geometry().used_bytes_per_column();
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("rebuilt.dgc");
    println!(
        "rebuild bench: RAID 5 over 4 nodes, {} MiB volume, {} MiB per column, {} stripes",
        info.size_bytes / MIB,
        column_bytes / MIB,
        layout.stripes()
    );

    // (a) rebuild vs the plain program, alternating.
    let mut rebuild = Vec::new();
    let mut plain = Vec::new();
    let mut plain_unit = Vec::new();
    for round in 0..if run_a() { ROUNDS } else { 0 } {
        let t = Instant::now();
        start_rebuild(&cluster, &c, 0).await;
        wait_optimal(&cluster).await;
        rebuild.push(t.elapsed());

        // The surviving columns' files, as the volume's members are now.
        let v = get(&cluster).await;
        let sources: Vec<PathBuf> = v
            .components
            .iter()
            .filter(|m| m.column != 1)
            .map(|m| {
                cluster
                    .node_by_id(&m.node_id)
                    .unwrap()
                    .component_file(&m.component_id)
            })
            .collect();
        for (chunk, sync_each, out) in [
            (MIB as usize, false, &mut plain),
            ((64 * KIB) as usize, true, &mut plain_unit),
        ] {
            let (s, t2) = (sources.clone(), target.clone());
            let t = Instant::now();
            tokio::task::spawn_blocking(move || {
                plain_rebuild(&s, &t2, column_bytes, chunk, sync_each)
            })
            .await
            .unwrap();
            out.push(t.elapsed());
        }
        println!(
            "  round {round}: rebuild {:.3} s, plain 1 MiB {:.3} s, plain 64 KiB + fdatasync {:.3} s",
            rebuild[round].as_secs_f64(),
            plain[round].as_secs_f64(),
            plain_unit[round].as_secs_f64()
        );
    }
    // The plain program's output is the column: check one round's against the rebuilt one.
    if run_a() {
        let v = get(&cluster).await;
        let rebuilt = cluster
            .node_by_id(&v.components[1].node_id)
            .unwrap()
            .component_file(&v.components[1].component_id);
        {
            use std::os::unix::fs::FileExt;
            let (a, b) = (
                std::fs::File::open(&rebuilt).unwrap(),
                std::fs::File::open(&target).unwrap(),
            );
            let mut x = vec![0u8; MIB as usize];
            let mut y = vec![0u8; MIB as usize];
            let mut at = 0;
            while at < column_bytes {
                a.read_exact_at(&mut x, 4096 + at).unwrap();
                b.read_exact_at(&mut y, 4096 + at).unwrap();
                assert!(x == y, "the plain program's column differs at {at}");
                at += MIB;
            }
        }
        let rate = |d: &[Duration]| {
            let total: f64 = d.iter().map(Duration::as_secs_f64).sum();
            column_bytes as f64 * d.len() as f64 / total / 1e6
        };
        let best =
            |d: &[Duration]| column_bytes as f64 / d.iter().min().unwrap().as_secs_f64() / 1e6;
        let (r, p, pu) = (rate(&rebuild), rate(&plain), rate(&plain_unit));
        println!(
            "(a) MB/s of rebuilt column, mean over {ROUNDS} rounds (best): rebuild {r:.1} ({:.1}), plain 1 MiB {p:.1} ({:.1}), plain 64 KiB + fdatasync {pu:.1} ({:.1}); rebuild / plain {:.2}x, rebuild / plain 64 KiB + fdatasync {:.2}x",
            best(&rebuild),
            best(&plain),
            best(&plain_unit),
            r / p,
            r / pu
        );
    }

    // (b) 4 KiB writes during a rebuild at the default rate vs none, alternating.
    let mut during = Vec::new();
    let mut without = Vec::new();
    let mut rebuild_s = Vec::new();
    for _ in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let t = Instant::now();
        start_rebuild(&cluster, &c, user_round_rate()).await;
        let watcher = {
            let stop = stop.clone();
            let raw = cluster.volume_client().await.unwrap();
            tokio::spawn(async move {
                let mut raw = raw;
                loop {
                    let v = raw.get_volume("vol").await.unwrap();
                    if optimal(&v) {
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let lat = small_writes(
            &c,
            &mut model,
            &mut rng,
            Some(stop),
            Duration::from_secs(600),
        )
        .await;
        let took = t.elapsed();
        watcher.await.unwrap();
        wait_optimal(&cluster).await;
        rebuild_s.push(took.as_secs_f64());
        let n = lat.len();
        during.extend(lat);
        let quiet = small_writes(&c, &mut model, &mut rng, None, took).await;
        println!(
            "  round: rebuild at {} B/s took {:.2} s, {n} writes during it, {} writes without",
            user_round_rate(),
            took.as_secs_f64(),
            quiet.len()
        );
        without.extend(quiet);
    }
    let (d50, d99) = percentiles(&mut during);
    let (w50, w99) = percentiles(&mut without);
    let secs: f64 = rebuild_s.iter().sum();
    println!(
        "(b) 4 KiB write, 1 in flight: during a rebuild at {} B/s {} writes, p50 {d50} us, p99 {d99} us ({:.0} IOPS); without {} writes, p50 {w50} us, p99 {w99} us ({:.0} IOPS); p50 during / without {:.2}x",
        user_round_rate(),
        during.len(),
        during.len() as f64 / secs,
        without.len(),
        without.len() as f64 / secs,
        d50 as f64 / w50 as f64
    );

    // Everything reads back, and the columns agree.
    let vol = c.volume("vol");
    let mut at = 0usize;
    while at < model.len() {
        let n = (4 * MIB as usize).min(model.len() - at);
        let got = vol.read_at(at as u64, n).await.unwrap();
        assert!(got[..] == model[at..at + n], "bytes {at}+{n} differ");
        at += n;
    }
    cluster.check_columns("vol", &[]).await.unwrap();
}

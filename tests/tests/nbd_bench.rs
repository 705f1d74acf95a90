//! The NBD benchmark of docs/BENCHMARKS.md ("NBD export"), a measured run on real processes:
//!
//! `cargo build -p dagraid-node -p dagraid-coordinator --bins`
//! `cargo test -p dagraid-tests --test nbd_bench -- --ignored --nocapture measured`
//!
//! Three targets side by side, in one run, in alternating rounds (their order rotated every
//! round):
//!
//! - **dagraid NBD**: a RAID 5 volume over 5 storage nodes (64 KiB units, 4 KiB blocks,
//!   `NBD_BENCH_MIB` MiB, default 256), through the coordinator's NBD export, driven by fio's
//!   nbd engine;
//! - **nbdkit file**: `nbdkit file` serving one plain file of the same size in a temporary
//!   directory on the same disk, driven by the same fio jobs;
//! - **dagraid gRPC**: the same volume through the client SDK, the same patterns with the same
//!   number of requests in flight (16 tasks for QD 16, 1 for sequential), written in Rust.
//!
//! Four patterns, `NBD_BENCH_ROUND_S` seconds (default 4) each per round and target: sequential
//! 1 MiB write and read (QD 1), 4 KiB random write and read (QD 16). One warm-up round, then
//! `NBD_BENCH_ROUNDS` (default 3) measured rounds; per pattern, the MB/s or IOPS of each target
//! summed over its measured rounds, and the ratios dagraid NBD / nbdkit file and dagraid NBD /
//! dagraid gRPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_client::{RaidLevel, Volume, VolumeSpec};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::eventually;
use dagraid_tests::harness::client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MIB: u64 = 1 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Pattern {
    name: &'static str,
    write: bool,
    random: bool,
    block: u64,
    depth: u64,
}

const PATTERNS: [Pattern; 4] = [
    Pattern {
        name: "seq 1 MiB write",
        write: true,
        random: false,
        block: MIB,
        depth: 1,
    },
    Pattern {
        name: "seq 1 MiB read",
        write: false,
        random: false,
        block: MIB,
        depth: 1,
    },
    Pattern {
        name: "rand 4 KiB write QD16",
        write: true,
        random: true,
        block: 4096,
        depth: 16,
    },
    Pattern {
        name: "rand 4 KiB read QD16",
        write: false,
        random: true,
        block: 4096,
        depth: 16,
    },
];

/// Bytes moved by one fio job against `uri` for `seconds`.
async fn fio(uri: &str, p: Pattern, size: u64, seconds: u64) -> u64 {
    let rw = match (p.write, p.random) {
        (true, true) => "randwrite",
        (false, true) => "randread",
        (true, false) => "write",
        (false, false) => "read",
    };
    let out = tokio::process::Command::new("fio")
        .args([
            "--name=bench",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            &format!("--rw={rw}"),
            &format!("--bs={}", p.block),
            &format!("--iodepth={}", p.depth),
            &format!("--size={size}"),
            &format!("--runtime={seconds}"),
            "--time_based",
            "--output-format=json",
        ])
        .output()
        .await
        .expect("fio runs");
    assert!(
        out.status.success(),
        "fio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // fio may print notes before its JSON.
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text.find('{').map_or("", |i| &text[i..]);
    let json: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("fio's JSON: {e}: {text}"));
    let job = &json["jobs"][0];
    let side = if p.write { "write" } else { "read" };
    job[side]["io_bytes"].as_u64().expect("io_bytes")
}

/// Bytes moved through the SDK with `p`'s pattern for `seconds`.
async fn grpc(volume: &Volume, p: Pattern, size: u64, seconds: u64, seed: u64) -> u64 {
    let moved = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for t in 0..p.depth {
        let (volume, moved) = (volume.clone(), moved.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * 100 + t);
            let blocks = size / p.block;
            let data = Bytes::from(vec![0x5au8; p.block as usize]);
            let mut next = 0;
            while Instant::now() < until {
                let at = if p.random {
                    rng.random_range(0..blocks) * p.block
                } else {
                    let at = next * p.block;
                    next = (next + 1) % blocks;
                    at
                };
                if p.write {
                    volume.write_at(at, data.clone()).await.expect("write");
                } else {
                    volume.read_at(at, p.block as usize).await.expect("read");
                }
                moved.fetch_add(p.block, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    moved.load(Ordering::Relaxed)
}

/// A free port on 127.0.0.1 for nbdkit (a bench, not a test: the short race is acceptable).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored (docs/BENCHMARKS.md)"]
async fn measured() {
    let size = env_u64("NBD_BENCH_MIB", 256) * MIB;
    let seconds = env_u64("NBD_BENCH_ROUND_S", 4);
    let rounds = env_u64("NBD_BENCH_ROUNDS", 3) as usize;

    let cluster = Cluster::start(ClusterOptions {
        nodes: 5,
        coordinator_args: vec!["--nbd-listen".into(), "127.0.0.1:0".into()],
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let c = client(&cluster).await;
    c.create_volume(VolumeSpec::new("bench", RaidLevel::Raid5, size).columns(5))
        .await
        .unwrap();
    let addr: SocketAddr = eventually("the nbd export", Duration::from_secs(30), || async {
        cluster
            .coordinator
            .log()
            .lines()
            .find(|l| l.contains("nbd export listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })
    .await;
    let dagraid_uri = format!("nbd://{addr}/bench");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.img");
    std::fs::File::create(&file).unwrap().set_len(size).unwrap();
    let port = free_port();
    let mut nbdkit = tokio::process::Command::new("nbdkit")
        .args([
            "--foreground",
            "--exit-with-parent",
            "--port",
            &port.to_string(),
            "--ipaddr",
            "127.0.0.1",
            "file",
        ])
        .arg(format!("file={}", file.display()))
        .kill_on_drop(true)
        .spawn()
        .expect("nbdkit runs");
    let nbdkit_uri = format!("nbd://127.0.0.1:{port}/");
    eventually("nbdkit listening", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    // Fill both, so reads read written data.
    for uri in [&dagraid_uri, &nbdkit_uri] {
        let out = tokio::process::Command::new("fio")
            .args([
                "--name=fill",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--rw=write",
                "--bs=1M",
                "--iodepth=4",
                &format!("--size={size}"),
            ])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let volume = c.volume("bench");
    let targets = ["dagraid NBD", "nbdkit file", "dagraid gRPC"];
    // totals[pattern][target] over the measured rounds.
    let mut totals = vec![[0u64; 3]; PATTERNS.len()];
    for round in 0..=rounds {
        for (pi, p) in PATTERNS.iter().enumerate() {
            for k in 0..3 {
                let t = (k + round + pi) % 3;
                let secs = if round == 0 { 1 } else { seconds };
                let bytes = match t {
                    0 => fio(&dagraid_uri, *p, size, secs).await,
                    1 => fio(&nbdkit_uri, *p, size, secs).await,
                    _ => grpc(&volume, *p, size, secs, round as u64).await,
                };
                if round > 0 {
                    totals[pi][t] += bytes;
                    eprintln!(
                        "round {round} {:<22} {:<13} {:>9.1} MB/s",
                        p.name,
                        targets[t],
                        bytes as f64 / secs as f64 / 1e6
                    );
                }
            }
        }
    }
    let measured = (rounds as u64 * seconds) as f64;
    eprintln!();
    eprintln!("| pattern | dagraid NBD | nbdkit file | dagraid gRPC | NBD / nbdkit | NBD / gRPC |");
    eprintln!("|---|---|---|---|---|---|");
    for (pi, p) in PATTERNS.iter().enumerate() {
        let rate = |t: usize| {
            let per_s = totals[pi][t] as f64 / measured;
            if p.random {
                format!("{:.0} IOPS", per_s / p.block as f64)
            } else {
                format!("{:.1} MB/s", per_s / 1e6)
            }
        };
        let ratio = |a: usize, b: usize| totals[pi][a] as f64 / totals[pi][b].max(1) as f64;
        eprintln!(
            "| {} | {} | {} | {} | {:.2}x | {:.2}x |",
            p.name,
            rate(0),
            rate(1),
            rate(2),
            ratio(0, 1),
            ratio(0, 2)
        );
    }
    let _ = nbdkit.kill().await;
}

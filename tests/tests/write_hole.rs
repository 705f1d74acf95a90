//! The write hole while degraded, closed by the partial-parity log (issue 20, items 3 and 4), on
//! real processes: a node is killed and its column failed, writes go on degraded, and the
//! coordinator is killed (kill -9) in the middle of them, alone or together with a power cut of
//! every surviving node. The restarted coordinator assembles the volume by itself (no
//! `--force`): it replays the log, so the failed column's data, which lives only in parity,
//! reads back as acknowledged. Then the node comes back, its column is re-added, and the column
//! checker finds every stripe consistent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{RaidLevel, VolumeInfo, VolumeSpec, VolumeState};
use dagraid_proto::storage::v1 as spb;
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::harness::{UnknownWrites, check_acknowledged, client, random, settled};
use dagraid_tests::{eventually, with_timeout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const VOLUME: &str = "wh";
const WRITERS: u64 = 6;

/// How the coordinator's crash comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// kill -9 of the coordinator.
    Kill9,
    /// kill -9 of the coordinator and a power cut of every surviving node.
    PowerCut,
    /// kill -9 of the coordinator; then the log area of one surviving parity column does not
    /// read (a LOG_READ fault) at the first assemblies: the volume is not assembled (nothing
    /// applied, nothing hidden) until the log reads again.
    UnreadableLog,
}

async fn crash_while_degraded(level: RaidLevel, crash: Crash, seed: u64) {
    let power_cut = crash == Crash::PowerCut;
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            nodes: 5,
            fault_injection: crash != Crash::Kill9,
            node_deadline_ms: 1000,
            health_interval_ms: 200,
            coordinator_args: vec![
                "--assembly-wait-ms".into(),
                "3000".into(),
                "--gone-after-ms".into(),
                "1000".into(),
            ],
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(
                VolumeSpec::new(VOLUME, level, 4 * MIB)
                    .columns(if level == RaidLevel::Raid1 { 4 } else { 5 })
                    .stripe_unit_bytes(16 * KIB),
            )
            .await
            .unwrap();
        let size = info.size_bytes as usize;
        let mut rng = StdRng::seed_from_u64(seed);
        let first = random(&mut rng, size);
        c.volume(VOLUME)
            .write_at(0, Bytes::from(first.clone()))
            .await
            .unwrap();

        // Node 2 dies; the first write that reaches it fails its column.
        let dead = column_node(&info, 1);
        cluster.nodes[dead].kill9().await.unwrap();
        let reference = Arc::new(Mutex::new(first));
        let probe = random(&mut rng, size / 4);
        c.volume(VOLUME)
            .write_at(0, Bytes::from(probe.clone()))
            .await
            .unwrap();
        reference.lock().unwrap()[..probe.len()].copy_from_slice(&probe);
        let s = c.volume(VOLUME).status().await.unwrap();
        assert_eq!(s.state, VolumeState::Degraded, "{s:?}");
        eprintln!(
            "{level:?}: column of node {} failed; degraded writes",
            dead + 1
        );

        // Small writes, most of them into part of a stripe, until the crash.
        let region = size / WRITERS as usize;
        let unknown: Arc<Mutex<UnknownWrites>> = Arc::default();
        let acks = Arc::new(AtomicU64::new(0));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let vol = c.volume(VOLUME);
            let (reference, unknown, acks) = (reference.clone(), unknown.clone(), acks.clone());
            writers.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed * 100 + w);
                loop {
                    let len = rng.random_range(1..=6usize) * 4096;
                    let offset =
                        w as usize * region + rng.random_range(0..=(region - len) / 4096) * 4096;
                    let data = random(&mut rng, len);
                    match vol.write_at(offset as u64, Bytes::from(data.clone())).await {
                        Ok(()) => {
                            reference.lock().unwrap()[offset..offset + len].copy_from_slice(&data);
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            unknown.lock().unwrap().push((offset as u64, data));
                            return;
                        }
                    }
                }
            }));
        }
        eventually(
            "degraded writes acknowledged",
            Duration::from_secs(120),
            || {
                let acks = acks.clone();
                async move { (acks.load(Ordering::SeqCst) >= 300).then_some(()) }
            },
        )
        .await;
        eprintln!(
            "{level:?}: {} writes acknowledged; kill -9",
            acks.load(Ordering::SeqCst)
        );
        cluster.coordinator.kill9().await.unwrap();
        if power_cut {
            // Every surviving node loses what it had not synced, and the syncs in flight tear.
            for i in (0..cluster.nodes.len()).filter(|&i| i != dead) {
                cluster.nodes[i].power_off(seed + i as u64).await.unwrap();
            }
            for i in (0..cluster.nodes.len()).filter(|&i| i != dead) {
                cluster.nodes[i].restart_on_same_port().await.unwrap();
            }
        }
        for w in writers {
            w.await.unwrap();
        }

        if crash == Crash::UnreadableLog {
            // Column 0's log area fails every read; its labels still read.
            let component = info.components[0].component_id.clone();
            let node = column_node(&info, 0);
            cluster.nodes[node]
                .client()
                .await
                .unwrap()
                .inject_fault(spb::InjectFaultRequest {
                    component_id: component.clone(),
                    kind: spb::FaultKind::Fail as i32,
                    ops: spb::FaultOps::LogRead as i32,
                    count: 0,
                    status_code: tonic::Code::Unavailable as i32,
                    ..Default::default()
                })
                .await
                .unwrap();
            cluster.coordinator.restart().await.unwrap();
            let c = client(&cluster).await;
            let s = c.volume(VOLUME).status().await.unwrap();
            assert_eq!(s.state, VolumeState::NotAssembled, "{s:?}");
            let problem = s.assembly.problem.clone().unwrap_or_default();
            assert!(
                problem.contains("partial-parity log cannot be read on column 0"),
                "{problem}"
            );
            assert!(s.assembly.needs_force, "{s:?}");
            // Tried again while it still does not read: refused again, nothing written.
            let again = c.assemble_volume(VOLUME, false).await;
            assert!(again.is_err(), "{again:?}");
            eprintln!("{level:?}: not assembled while the log does not read: {problem}");
            cluster.nodes[node]
                .client()
                .await
                .unwrap()
                .clear_faults(spb::ClearFaultsRequest {
                    component_id: component,
                })
                .await
                .unwrap();
            c.assemble_volume(VOLUME, false).await.unwrap();
        } else {
            // Assembled by itself: the log is replayed, no `--force`.
            cluster.coordinator.restart().await.unwrap();
        }
        let c = client(&cluster).await;
        let s = settled(&c, VOLUME).await;
        eprintln!("{level:?}: restarted, {:?}", s.state);
        assert_eq!(s.state, VolumeState::Degraded, "{s:?}");
        let log = cluster.coordinator.log();
        let replayed: u64 = log
            .lines()
            .find(|l| l.contains("partial-parity log replayed"))
            .and_then(|l| l.split("replayed=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no replay in the log: {log}"));
        if level != RaidLevel::Raid1 {
            assert!(
                replayed > 0,
                "the log named stripes written degraded: {log}"
            );
        }
        assert!(!log.contains("assembled by force"), "{log}");
        // The failed column's data comes from parity: every acknowledged byte reads back.
        let got = c.volume(VOLUME).read_at(0, size).await.unwrap();
        let reference = reference.lock().unwrap().clone();
        let unknown = unknown.lock().unwrap().clone();
        check_acknowledged(&got, &reference, &unknown);

        eprintln!("{level:?}: every acknowledged byte read back; the node comes back");
        // The node comes back; its column is re-added; then every stripe is consistent.
        cluster.nodes[dead].restart_on_same_port().await.unwrap();
        // Re-added by itself: the node did not answer this coordinator's assembly.
        let healed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Ok(s) = c.volume(VOLUME).status().await
                    && s.state == VolumeState::Optimal
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if healed.is_err() {
            let log = cluster.coordinator.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("dagraid_coordinator"))
                .collect();
            panic!(
                "{level:?}: the column was not re-added within 60 s: {:?}\n{}",
                c.volume(VOLUME).status().await,
                lines.join("\n")
            );
        }
        let again = c.volume(VOLUME).read_at(0, size).await.unwrap();
        assert_eq!(again, got, "the re-added column serves what parity did");
        cluster.check_columns(VOLUME, &[]).await.unwrap();
    })
    .await;
}

/// The index in the cluster of the node holding `column` (node ids are node1, node2, ...).
fn column_node(info: &VolumeInfo, column: usize) -> usize {
    info.components[column]
        .node_id
        .strip_prefix("node")
        .and_then(|n| n.parse::<usize>().ok())
        .expect("node ids are node1, node2, ...")
        - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid5_kill9_of_the_coordinator_during_degraded_writes_assembles_by_itself() {
    crash_while_degraded(RaidLevel::Raid5, Crash::Kill9, 31).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid5_power_cut_of_every_node_during_degraded_writes_assembles_by_itself() {
    crash_while_degraded(RaidLevel::Raid5, Crash::PowerCut, 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid6_with_one_node_killed_kill9_and_power_cut_during_degraded_writes() {
    crash_while_degraded(RaidLevel::Raid6, Crash::PowerCut, 33).await;
}

/// RAID 1 has no write hole (the live copy of a pair is its data): a crash while degraded is
/// assembled by itself too, with nothing to replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid1_kill9_of_the_coordinator_during_degraded_writes_assembles_by_itself() {
    crash_while_degraded(RaidLevel::Raid1, Crash::Kill9, 34).await;
}

/// A log area that does not read at assembly: the volume waits, not assembled and saying which
/// column, and is assembled (the log replayed, every acknowledged byte intact) once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid5_log_unreadable_at_assembly_is_not_assembled_until_it_reads() {
    crash_while_degraded(RaidLevel::Raid5, Crash::UnreadableLog, 35).await;
}

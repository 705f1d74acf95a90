//! Crash-proof cluster state on real processes: the coordinator killed (kill -9) under a write
//! load, a node coming back with old data, a crash after every k of the n label writes of a
//! state change, late writes of an older coordinator life, and a degraded volume after a crash
//! (refused, then assembled by force through the CLI). Every test ends with the column checker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{
    Client, ClientError, ClientOptions, ComponentState, RaidLevel, RetryPolicy, VolumeInfo,
    VolumeSpec, VolumeState,
};
use dagraid_coordinator::labels::CRASH_AFTER_LABEL_WRITES_ENV;
use dagraid_core::meta::label::ComponentLabel;
use dagraid_proto::storage::v1 as spb;
use dagraid_proto::volume::v1 as vpb;
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::{eventually, with_timeout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

async fn client(cluster: &Cluster) -> Client {
    Client::connect(
        cluster.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(20),
            retry: RetryPolicy::none(),
            ..cluster.client_options()
        },
    )
    .await
    .expect("connect to the coordinator")
}

fn random(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Waits until `volume` is assembled and its resync (if any) has ended; returns its status.
async fn settled(c: &Client, volume: &str) -> VolumeInfo {
    eventually(
        &format!("{volume} assembled with its resync done"),
        Duration::from_secs(60),
        || async {
            let v = c.volume(volume).status().await.ok()?;
            let resyncing =
                v.state == VolumeState::Resyncing || v.resync.as_ref().is_some_and(|r| r.running);
            (!resyncing && v.state != VolumeState::NotAssembled).then_some(v)
        },
    )
    .await
}

/// The index in `cluster.nodes` of the node holding `column` of `volume`.
async fn node_of(c: &Client, volume: &str, column: usize) -> usize {
    let info = c.volume(volume).describe().await.unwrap();
    let id = &info.components[column].node_id;
    id.trim_start_matches("node").parse::<usize>().unwrap() - 1
}

/// Writes of unknown outcome (the coordinator died before answering): offset and data.
type Unknown = Vec<(u64, Vec<u8>)>;

/// Checks `got` against `reference`: every byte equal, except inside the writes of unknown
/// outcome, where each byte is the old or the new one.
fn check_acknowledged(got: &[u8], reference: &[u8], unknown: &Unknown, what: &str) {
    assert_eq!(got.len(), reference.len(), "{what}: length");
    let mut maybe: Vec<Option<u8>> = vec![None; got.len()];
    for (off, data) in unknown {
        for (i, b) in data.iter().enumerate() {
            maybe[*off as usize + i] = Some(*b);
        }
    }
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        let ok = g == r || maybe[i] == Some(g);
        assert!(
            ok,
            "{what}: byte {i} is {g:#x}; acknowledged {r:#x}, in-flight {:?}",
            maybe[i]
        );
    }
}

/// The modification counter of every column's label but `skip`, read straight from the nodes.
async fn label_counters(cluster: &Cluster, info: &VolumeInfo, skip: &[u32]) -> Vec<u64> {
    let mut counters = Vec::new();
    for comp in info.components.iter().filter(|c| !skip.contains(&c.column)) {
        let node = cluster.node_by_id(&comp.node_id).unwrap();
        let slot = node
            .client()
            .await
            .unwrap()
            .read_slot(spb::ReadSlotRequest {
                fencing: None,
                component_id: comp.component_id.clone(),
                area: spb::SlotArea::Label as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(slot.present, "column {} has a label", comp.column);
        let label = ComponentLabel::decode(&slot.payload).unwrap();
        assert_eq!(label.volume_id, info.id);
        assert_eq!(label.column, comp.column);
        counters.push(label.mod_counter);
    }
    counters
}

/// The coordinator flags of these tests: a short assembly wait (nodes killed on purpose).
fn options() -> ClusterOptions {
    ClusterOptions {
        coordinator_args: vec!["--assembly-wait-ms".into(), "3000".into()],
        ..ClusterOptions::default()
    }
}

/// One volume under load: what was acknowledged, and the writes whose answer never came.
struct Loaded {
    name: String,
    size: u64,
    reference: Arc<Mutex<Vec<u8>>>,
    unknown: Arc<Mutex<Unknown>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_coordinator_under_writes_reassembles_resyncs_and_loses_nothing() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            fault_injection: true,
            ..options()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let mut rng = StdRng::seed_from_u64(1);
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut volumes = Vec::new();
        let mut tasks = Vec::new();
        for (name, level, columns) in [
            ("r1", RaidLevel::Raid1, 4),
            ("r5", RaidLevel::Raid5, 5),
            ("r6", RaidLevel::Raid6, 5),
        ] {
            let info = c
                .create_volume(
                    VolumeSpec::new(name, level, 4 * MIB)
                        .columns(columns)
                        .stripe_unit_bytes(16 * KIB),
                )
                .await
                .unwrap();
            let size = info.size_bytes;
            let first = random(&mut rng, size as usize);
            c.volume(name)
                .write_at(0, Bytes::from(first.clone()))
                .await
                .unwrap();
            let loaded = Loaded {
                name: name.to_owned(),
                size,
                reference: Arc::new(Mutex::new(first)),
                unknown: Arc::default(),
            };
            // Writers on disjoint regions, each until its first error (the coordinator is
            // gone): that write's outcome is unknown.
            let writers = 2u64;
            let region = size / writers;
            for w in 0..writers {
                let vol = c.volume(name);
                let (reference, unknown, acked) = (
                    loaded.reference.clone(),
                    loaded.unknown.clone(),
                    acked.clone(),
                );
                let seed = 100 + w + 10 * columns as u64;
                tasks.push(tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed);
                    loop {
                        let off = w * region + rng.random_range(0..region - 1);
                        let len = rng.random_range(1..=(w * region + region - off).min(48 * KIB));
                        let data = random(&mut rng, len as usize);
                        match vol.write_at(off, Bytes::from(data.clone())).await {
                            Ok(()) => {
                                reference.lock().unwrap()[off as usize..(off + len) as usize]
                                    .copy_from_slice(&data);
                                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Err(_) => {
                                unknown.lock().unwrap().push((off, data));
                                return;
                            }
                        }
                    }
                }));
            }
            volumes.push(loaded);
        }
        eventually(
            "60 writes acknowledged",
            Duration::from_secs(60),
            || async { (acked.load(std::sync::atomic::Ordering::SeqCst) >= 60).then_some(()) },
        )
        .await;
        // Make sure the crash tears a stripe: r5's column 1 node holds its next write for 5 s,
        // the coordinator dies meanwhile (before its 2 s deadline fails the column), and the
        // next coordinator's Fence refuses the held write when it comes out. The stripe's other
        // columns have the write, column 1 does not: only the resync makes it consistent.
        let r5 = c.volume("r5").describe().await.unwrap();
        let x = node_of(&c, "r5", 1).await;
        cluster.nodes[x]
            .client()
            .await
            .unwrap()
            .inject_fault(spb::InjectFaultRequest {
                component_id: r5.components[1].component_id.clone(),
                kind: spb::FaultKind::Delay as i32,
                ops: spb::FaultOps::Write as i32,
                count: 1,
                delay_ms: 5000,
                status_code: 0,
                seed: 0,
            })
            .await
            .unwrap();
        cluster.nodes[x]
            .wait_for_log("injected fault", Duration::from_secs(10))
            .await
            .unwrap();
        cluster.coordinator.kill9().await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(c.cluster_info().await.is_err(), "the coordinator is gone");

        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        for v in &volumes {
            let s = settled(&c, &v.name).await;
            assert_eq!(s.state, VolumeState::Optimal, "{s:?}");
            let resync = s
                .resync
                .expect("a volume that was not shut down cleanly is resynced");
            assert_eq!(resync.error, None, "{}", v.name);
            assert_eq!(resync.stripes_done, resync.stripes_total, "{}", v.name);
            assert_eq!(resync.stripes_skipped, 0, "{}", v.name);
            let got = c.volume(&v.name).read_at(0, v.size as usize).await.unwrap();
            let reference = v.reference.lock().unwrap().clone();
            let unknown = v.unknown.lock().unwrap().clone();
            assert!(!unknown.is_empty());
            check_acknowledged(&got, &reference, &unknown, &v.name);
            cluster.check_columns(&v.name, &[]).await.unwrap();
        }
        assert!(cluster.coordinator.log().contains("resync finished"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_with_old_data_stays_failed_across_coordinator_restarts() {
    with_timeout(async {
        let mut cluster = Cluster::start(options()).await.unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(
                VolumeSpec::new("r5", RaidLevel::Raid5, 2 * MIB)
                    .columns(5)
                    .stripe_unit_bytes(16 * KIB),
            )
            .await
            .unwrap();
        let size = info.size_bytes as usize;
        let mut rng = StdRng::seed_from_u64(2);
        let old = random(&mut rng, size);
        let vol = c.volume("r5");
        vol.write_at(0, Bytes::from(old.clone())).await.unwrap();
        let old_column = cluster.read_column("r5", 2).await.unwrap();

        let x = node_of(&c, "r5", 2).await;
        cluster.nodes[x].kill9().await.unwrap();
        let new = random(&mut rng, size);
        vol.write_at(0, Bytes::from(new.clone())).await.unwrap();
        let s = vol.status().await.unwrap();
        assert_eq!(s.components[2].state, ComponentState::Failed);

        // The node comes back on its old data: the coordinator sees it, and never reads it.
        cluster.nodes[x].restart_on_same_port().await.unwrap();
        let node_id = s.components[2].node_id.clone();
        eventually(
            "the node reachable again",
            Duration::from_secs(30),
            || async {
                let info = c.cluster_info().await.ok()?;
                info.nodes
                    .iter()
                    .any(|n| n.node_id == node_id && n.reachable)
                    .then_some(())
            },
        )
        .await;
        assert!(vol.read_at(0, size).await.unwrap()[..] == new[..]);
        assert_eq!(
            vol.status().await.unwrap().components[2].state,
            ComponentState::Failed
        );

        // A clean restart: assembled at once, degraded, the node still failed.
        cluster.coordinator.terminate().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let vol = c.volume("r5");
        let s = settled(&c, "r5").await;
        assert_eq!(s.state, VolumeState::Degraded);
        assert_eq!(s.components[2].state, ComponentState::Failed);
        assert_eq!(s.resync, None, "a clean volume needs no resync");
        assert!(vol.read_at(0, size).await.unwrap()[..] == new[..]);

        // A crash: not clean and degraded, assembled by itself (the partial-parity log is
        // replayed); still the node stays failed.
        cluster.coordinator.kill9().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let vol = c.volume("r5");
        let s = settled(&c, "r5").await;
        assert_eq!(s.components[2].state, ComponentState::Failed);
        assert!(!s.assembly.forced && !s.assembly.needs_force, "{s:?}");
        assert_eq!(s.state, VolumeState::Degraded);
        assert!(
            vol.read_at(0, size).await.unwrap()[..] == new[..],
            "no stale byte is ever read"
        );
        // The node's component still holds the old data: nothing was read from it, nothing
        // written to it.
        assert!(cluster.read_column("r5", 2).await.unwrap() == old_column);
        cluster.check_columns("r5", &[2]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_k_of_n_label_writes_fails_no_healthy_component() {
    // Five rounds of crash and reassembly: a longer deadline than the others.
    let test = async {
        let mut cluster = Cluster::start(options()).await.unwrap();
        // RAID 5 over 5 columns, column 2 lost: the change is written to n = 4 labels.
        for k in 0..=4usize {
            let name = format!("k{k}");
            let c = client(&cluster).await;
            let info = c
                .create_volume(
                    VolumeSpec::new(&name, RaidLevel::Raid5, MIB)
                        .columns(5)
                        .stripe_unit_bytes(16 * KIB),
                )
                .await
                .unwrap();
            let size = info.size_bytes as usize;
            let stripe = info.stripe_data_bytes().unwrap() as usize;
            let mut rng = StdRng::seed_from_u64(10 + k as u64);
            let old = random(&mut rng, size);
            c.volume(&name)
                .write_at(0, Bytes::from(old.clone()))
                .await
                .unwrap();
            let x = node_of(&c, &name, 2).await;

            // Arm the hook for the next life, then lose column 2's node and write across it.
            cluster
                .coordinator
                .set_env(CRASH_AFTER_LABEL_WRITES_ENV, Some(&k.to_string()));
            cluster.coordinator.terminate().await.unwrap();
            cluster.coordinator.restart().await.unwrap();
            let c = client(&cluster).await;
            settled(&c, &name).await;
            cluster.nodes[x].kill9().await.unwrap();
            let w = random(&mut rng, stripe);
            let written = c
                .volume(&name)
                .write_at(stripe as u64, Bytes::from(w.clone()))
                .await;
            assert!(
                written.is_err(),
                "k = {k}: the coordinator aborts before the ack"
            );
            cluster
                .coordinator
                .wait_exit(Duration::from_secs(30))
                .await
                .unwrap();
            let log = cluster.coordinator.log();
            assert!(
                log.contains(&format!("aborting after {k} label writes")),
                "k = {k}: {log}"
            );
            // Exactly k of the surviving columns carry the new label (column 2 failed).
            let counters = label_counters(&cluster, &info, &[2]).await;
            let newest = counters.iter().max().copied().unwrap();
            let ahead = counters.iter().filter(|&&c| c == newest).count();
            if k == 0 {
                assert!(counters.iter().all(|&c| c == newest), "{counters:?}");
            } else {
                assert_eq!(ahead, k, "k = {k}: counters {counters:?}");
            }

            // The node comes back on its old label; the coordinator restarts without the hook.
            cluster.nodes[x].restart_on_same_port().await.unwrap();
            cluster
                .coordinator
                .set_env(CRASH_AFTER_LABEL_WRITES_ENV, None);
            cluster.coordinator.restart().await.unwrap();
            let c = client(&cluster).await;
            let s = c.volume(&name).status().await.unwrap();
            for comp in s.components.iter().filter(|comp| comp.column != 2) {
                assert_eq!(
                    comp.state,
                    ComponentState::Optimal,
                    "k = {k}: a healthy column was failed: {s:?}"
                );
            }
            if k == 0 {
                // The failure never reached a label or the store: column 2 is in use again
                // (its write was never acknowledged), and the volume is resynced.
                assert_eq!(s.components[2].state, ComponentState::Optimal, "{s:?}");
                assert_ne!(s.state, VolumeState::NotAssembled, "{s:?}");
            } else {
                // The highest counter records column 2 failed, with its partial-parity log
                // period: not clean and degraded, assembled by itself (the log is replayed).
                assert_eq!(s.components[2].state, ComponentState::Failed, "k = {k}");
                assert!(
                    !s.assembly.needs_force && !s.assembly.forced,
                    "k = {k}: {s:?}"
                );
            }
            let s = settled(&c, &name).await;
            assert_eq!(
                s.state,
                if k == 0 {
                    VolumeState::Optimal
                } else {
                    VolumeState::Degraded
                },
                "k = {k}"
            );
            let got = c.volume(&name).read_at(0, size).await.unwrap();
            check_acknowledged(&got, &old, &vec![(stripe as u64, w)], &name);
            cluster.check_columns(&name, &[]).await.unwrap();
            c.delete_volume(&name).await.unwrap();
        }
    };
    match tokio::time::timeout(Duration::from_secs(400), test).await {
        Ok(()) => {}
        Err(_) => panic!("test did not finish within 400 s"),
    }
}

/// Issue 17, item 2: a write that timed out on a live node has an unknown outcome. The
/// coordinator fences that component alone and redoes the write: the access is acknowledged,
/// the column is not failed, no stripe is lost, and the late copy of the first write (the
/// node's apply-later fault, released after a second write of the same bytes) is refused and
/// never lands. A new coordinator life then takes an owner epoch above that component fence,
/// and writes the component again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_an_unknown_outcome_is_fenced_and_redone_and_its_late_copy_never_lands() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            fault_injection: true,
            ..options()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(
                VolumeSpec::new("r5", RaidLevel::Raid5, MIB)
                    .columns(5)
                    .stripe_unit_bytes(16 * KIB),
            )
            .await
            .unwrap();
        let size = info.size_bytes as usize;
        let stripe = info.stripe_data_bytes().unwrap() as usize;
        let mut rng = StdRng::seed_from_u64(4);
        let mut reference = random(&mut rng, size);
        let vol = c.volume("r5");
        vol.write_at(0, Bytes::from(reference.clone()))
            .await
            .unwrap();
        let epoch = c.cluster_info().await.unwrap().epoch;

        // Column 1's node answers the next write with a timeout and applies it 5 s later.
        let x = node_of(&c, "r5", 1).await;
        let component = info.components[1].component_id.clone();
        cluster.nodes[x]
            .client()
            .await
            .unwrap()
            .inject_fault(spb::InjectFaultRequest {
                component_id: component.clone(),
                kind: spb::FaultKind::LateApply as i32,
                ops: spb::FaultOps::Write as i32,
                count: 1,
                delay_ms: 5_000,
                status_code: 0,
                seed: 0,
            })
            .await
            .unwrap();
        let first = random(&mut rng, stripe);
        vol.write_at(0, Bytes::from(first.clone())).await.unwrap();
        let s = vol.status().await.unwrap();
        assert!(
            s.components
                .iter()
                .all(|k| k.state == ComponentState::Optimal),
            "a write that timed out on a live node failed a column: {:?}",
            s.components
        );
        assert_eq!(s.state, VolumeState::Optimal);
        assert!(c.list_lost("r5").await.unwrap().is_empty());
        cluster.nodes[x]
            .wait_for_log("component fenced", Duration::from_secs(10))
            .await
            .unwrap();

        // A second write of the same bytes, then the late copy of the first is released.
        let second = random(&mut rng, stripe);
        vol.write_at(0, Bytes::from(second.clone())).await.unwrap();
        reference[..stripe].copy_from_slice(&second);
        let log = cluster.nodes[x]
            .wait_for_log("late-applied operation refused", Duration::from_secs(40))
            .await
            .unwrap();
        assert!(!log.contains("late-applied operation done"), "{log}");
        assert!(
            vol.read_at(0, size).await.unwrap()[..] == reference[..],
            "the late write landed over the second one"
        );
        cluster.check_columns("r5", &[]).await.unwrap();

        // A new coordinator life: an owner epoch above the component fence of the last one,
        // every node fenced at it, and the fenced component written again.
        cluster.coordinator.terminate().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let now = c.cluster_info().await.unwrap().epoch;
        assert!(now > epoch, "epoch {now} after {epoch}");
        let node = cluster.nodes[x]
            .client()
            .await
            .unwrap()
            .get_node_info(spb::GetNodeInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(node.epoch, now, "the node was fenced at the new epoch");
        let fenced_at = node
            .components
            .iter()
            .find(|k| k.component_id == component)
            .unwrap()
            .fence_epoch;
        assert!(
            fenced_at > epoch && fenced_at < now,
            "component fence epoch {fenced_at} lies between the owner epochs {epoch} and {now}"
        );
        let s = settled(&c, "r5").await;
        assert_eq!(s.state, VolumeState::Optimal);
        let third = random(&mut rng, 2 * stripe);
        c.volume("r5")
            .write_at(0, Bytes::from(third.clone()))
            .await
            .unwrap();
        reference[..2 * stripe].copy_from_slice(&third);
        assert!(c.volume("r5").read_at(0, size).await.unwrap()[..] == reference[..]);
        cluster.check_columns("r5", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_a_node_lost_at_the_crash_refuses_assembly_and_force_through_the_cli_brings_the_data_back()
 {
    with_timeout(async {
        let mut cluster = Cluster::start(options()).await.unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(
                VolumeSpec::new("r5", RaidLevel::Raid5, 2 * MIB)
                    .columns(5)
                    .stripe_unit_bytes(16 * KIB),
            )
            .await
            .unwrap();
        let size = info.size_bytes as usize;
        let mut rng = StdRng::seed_from_u64(5);
        let mut reference = random(&mut rng, size);
        let vol = c.volume("r5");
        vol.write_at(0, Bytes::from(reference.clone()))
            .await
            .unwrap();
        let x = node_of(&c, "r5", 3).await;
        for _ in 0..20 {
            let off = rng.random_range(0..size - 1);
            let len = rng.random_range(1..=(size - off).min(40 * KIB as usize));
            let data = random(&mut rng, len);
            vol.write_at(off as u64, Bytes::from(data.clone()))
                .await
                .unwrap();
            reference[off..off + len].copy_from_slice(&data);
        }
        assert_eq!(vol.status().await.unwrap().state, VolumeState::Optimal);

        // The coordinator and column 3's node die together: the column was current at the
        // crash, so no partial-parity log covers its writes in flight (docs/STATE.md).
        cluster.coordinator.kill9().await.unwrap();
        cluster.nodes[x].kill9().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let vol = c.volume("r5");
        let s = vol.status().await.unwrap();
        assert_eq!(s.state, VolumeState::NotAssembled);
        assert!(s.assembly.needs_force, "{s:?}");
        let problem = s.assembly.problem.clone().unwrap();
        assert!(problem.contains("--force"), "{problem}");
        assert!(problem.contains("were current at the crash"), "{problem}");
        assert_eq!(s.components[3].state, ComponentState::Failed);
        assert!(matches!(
            vol.read_at(0, 4096).await,
            Err(ClientError::NotAssembled { .. })
        ));
        assert!(matches!(
            vol.write_at(0, Bytes::from_static(b"x")).await,
            Err(ClientError::NotAssembled { .. })
        ));
        let listed = c.list_volumes().await.unwrap();
        assert_eq!(listed[0].state, VolumeState::NotAssembled);

        // The CLI: refused without --force, assembled with it, saying what is at risk.
        let cli = dagraid_tests::process::binary("dagraid", "DAGRAID_BIN").unwrap();
        let run = |force: bool| {
            let mut cmd = tokio::process::Command::new(&cli);
            cmd.args(cluster.cli_args())
                .args(["volume", "assemble", "r5"]);
            if force {
                cmd.arg("--force");
            }
            cmd.output()
        };
        let refused = run(false).await.unwrap();
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("not assembled"), "{stderr}");
        let forced = run(true).await.unwrap();
        let stdout = String::from_utf8_lossy(&forced.stdout);
        assert!(
            forced.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&forced.stderr)
        );
        assert!(stdout.contains("at risk:"), "{stdout}");
        assert!(stdout.contains("assembled volume r5"), "{stdout}");

        let s = settled(&c, "r5").await;
        assert_eq!(s.state, VolumeState::Degraded);
        assert!(s.assembly.forced);
        let resync = s.resync.expect("a forced assembly resyncs what it can");
        assert!(resync.stripes_skipped > 0, "{resync:?}");
        assert!(
            vol.read_at(0, size).await.unwrap()[..] == reference[..],
            "the acknowledged data is back"
        );
        cluster.check_columns("r5", &[3]).await.unwrap();
    })
    .await;
}

/// Issue 16, item 2, on real processes: a write torn beyond the tolerance marks its stripe
/// lost, durably before the answer (the coordinator is killed right after it and the store has
/// the set); after the forced assembly the failed column's bytes in that stripe answer DATA_LOSS
/// (before, they were rebuilt from the torn parity and served wrong); a write of the stripe
/// makes it readable again and the columns agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_stripe_stays_lost_across_a_coordinator_kill9_until_it_is_rewritten() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            fault_injection: true,
            ..options()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(
                VolumeSpec::new("t", RaidLevel::Raid5, MIB)
                    .columns(5)
                    .stripe_unit_bytes(16 * KIB),
            )
            .await
            .unwrap();
        let size = info.size_bytes as usize;
        let mut rng = StdRng::seed_from_u64(16);
        let mut reference = random(&mut rng, size);
        let vol = c.volume("t");
        vol.write_at(0, Bytes::from(reference.clone()))
            .await
            .unwrap();
        let mut raw = cluster.volume_client().await.unwrap();
        let layout =
            dagraid_tests::cluster::layout_of(&raw.get_volume("t").await.unwrap()).unwrap();
        let stripe0 = &layout.map(0, layout.stripe_data_bytes()).unwrap().stripes[0];
        let a = stripe0.units[0].column;
        let parity = stripe0.parity[0].column;
        // Column x holds stripe 0's second data unit: failed first, then read degraded.
        let x = stripe0.units[1].column;
        let x_bytes =
            stripe0.units[1].volume_offset..stripe0.units[1].volume_offset + stripe0.units[1].len;
        assert!(a != x && parity != x);
        c.fail_component("t", x as u32).await.unwrap();
        // The parity write of the next write to stripe 0 fails with a local error on the node
        // (not a timeout, whose write would be fenced and redone): beyond the tolerance.
        let p_node = node_of(&c, "t", parity).await;
        cluster.nodes[p_node]
            .client()
            .await
            .unwrap()
            .inject_fault(spb::InjectFaultRequest {
                component_id: info.components[parity].component_id.clone(),
                kind: spb::FaultKind::Fail as i32,
                // The block write: the partial-parity log write before it succeeds.
                ops: spb::FaultOps::BlockWrite as i32,
                count: 1,
                delay_ms: 0,
                status_code: tonic::Code::Internal as i32,
                seed: 0,
            })
            .await
            .unwrap();
        let torn = vol
            .write_at(0, Bytes::from(random(&mut rng, 4096)))
            .await
            .unwrap_err();
        assert!(matches!(torn, ClientError::TornWrite { .. }), "{torn:?}");
        let stripe_bytes = layout.stripe_data_bytes();

        // Killed right after the answer: the lost set is in the store already.
        cluster.coordinator.kill9().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let vol = c.volume("t");
        // Not clean and degraded, column x failed in the record: assembled by itself, the
        // partial-parity log replayed; the stripe stays lost (never un-lost by a replay).
        let s = settled(&c, "t").await;
        assert!(!s.assembly.forced && !s.assembly.needs_force, "{s:?}");
        assert_eq!(s.lost_bytes, stripe_bytes, "{s:?}");
        let lost = c.list_lost("t").await.unwrap();
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].offset, lost[0].length), (0, stripe_bytes));

        // The failed column's bytes in the torn stripe are lost, not rebuilt wrong.
        let err = vol
            .read_at(x_bytes.start, (x_bytes.end - x_bytes.start) as usize)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreadable { .. }), "{err:?}");
        // Bytes of other stripes are served.
        let rest = vol
            .read_at(stripe_bytes, size - stripe_bytes as usize)
            .await
            .unwrap();
        assert!(rest[..] == reference[stripe_bytes as usize..]);
        // A write of the whole stripe makes it readable again, and the columns agree.
        let fresh = random(&mut rng, stripe_bytes as usize);
        vol.write_at(0, Bytes::from(fresh.clone())).await.unwrap();
        reference[..stripe_bytes as usize].copy_from_slice(&fresh);
        assert!(c.list_lost("t").await.unwrap().is_empty());
        let all = vol.read_at(0, size).await.unwrap();
        assert!(all[..] == reference[..]);
        assert_eq!(vol.status().await.unwrap().lost_bytes, 0);
        cluster.check_columns("t", &[x]).await.unwrap();
    })
    .await;
}

/// Issue 16, item 7: one label write at assembly that never answers does not leave the volume
/// unassembled (before: "the assembled state could not be recorded", no retry); the write is
/// tried again and the volume is assembled with every column in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lost_label_write_at_assembly_is_retried_and_the_volume_assembles() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            fault_injection: true,
            ..options()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(
                VolumeSpec::new("a", RaidLevel::Raid5, MIB)
                    .columns(5)
                    .stripe_unit_bytes(16 * KIB),
            )
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let data = random(&mut rng, info.size_bytes as usize);
        c.volume("a")
            .write_at(0, Bytes::from(data.clone()))
            .await
            .unwrap();
        let x = node_of(&c, "a", 2).await;
        cluster.coordinator.terminate().await.unwrap();
        // The next write on column 2's component (the label write of the next assembly) hangs.
        cluster.nodes[x]
            .client()
            .await
            .unwrap()
            .inject_fault(spb::InjectFaultRequest {
                component_id: info.components[2].component_id.clone(),
                kind: spb::FaultKind::Hang as i32,
                ops: spb::FaultOps::Write as i32,
                count: 1,
                delay_ms: 0,
                status_code: 0,
                seed: 0,
            })
            .await
            .unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let s = eventually("the volume assembled", Duration::from_secs(60), || {
            let c = c.clone();
            async move {
                c.volume("a")
                    .status()
                    .await
                    .ok()
                    .filter(|s| s.state != VolumeState::NotAssembled)
            }
        })
        .await;
        assert_eq!(s.state, VolumeState::Optimal, "{s:?}");
        assert!(
            s.components
                .iter()
                .all(|c| c.state == ComponentState::Optimal),
            "{s:?}"
        );
        let got = c.volume("a").read_at(0, data.len()).await.unwrap();
        assert!(got[..] == data[..]);
        assert!(
            cluster
                .coordinator
                .log()
                .contains("the assembled state could not be recorded; trying again"),
            "the first label write was lost and retried"
        );
        cluster.check_columns("a", &[]).await.unwrap();
    })
    .await;
}

/// Flips one byte of the block holding volume byte `offset` of `volume` in its component's
/// file, behind the node's back (the node reads through the same page cache): that block then
/// answers DATA_LOSS. `volume` is its description (taken while the coordinator was up).
/// Returns the first byte of the volume block.
fn corrupt_volume_block(cluster: &Cluster, volume: &vpb::Volume, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let layout = dagraid_tests::cluster::layout_of(volume).unwrap();
    let bs = layout.geometry().block_size();
    let at = layout.locate(offset).unwrap();
    let comp = &volume.components[at.column];
    let node = cluster.node_by_id(&comp.node_id).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(node.component_file(&comp.component_id))
        .unwrap();
    // Block data starts after the 4 KiB header (docs/STORAGE-NODE.md).
    let pos = 4096 + at.component_offset / bs * bs + 17;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, pos).unwrap();
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, pos).unwrap();
    file.sync_all().unwrap();
    offset / bs * bs
}

/// Issue 16, item 5: the coordinator killed under writes, then a data block corrupted on a
/// node's component file of a RAID 6 and of a RAID 5 volume. The next coordinator's resync
/// repairs the RAID 6 block (P and Q agree) and records the RAID 5 block lost (its parity is
/// suspect after the crash), goes on to the end, and leaves both volumes optimal and consistent;
/// the lost block answers DATA_LOSS until written, and a clean shutdown marks both clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_a_bad_checksum_is_repaired_or_recorded_lost_by_the_resync() {
    with_timeout(async {
        let mut cluster = Cluster::start(options()).await.unwrap();
        let c = client(&cluster).await;
        let mut rng = StdRng::seed_from_u64(51);
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut volumes = Vec::new();
        let mut tasks = Vec::new();
        for (name, level) in [("q6", RaidLevel::Raid6), ("p5", RaidLevel::Raid5)] {
            let info = c
                .create_volume(
                    VolumeSpec::new(name, level, MIB)
                        .columns(5)
                        .stripe_unit_bytes(16 * KIB),
                )
                .await
                .unwrap();
            let size = info.size_bytes;
            let first = random(&mut rng, size as usize);
            c.volume(name)
                .write_at(0, Bytes::from(first.clone()))
                .await
                .unwrap();
            let loaded = Loaded {
                name: name.to_owned(),
                size,
                reference: Arc::new(Mutex::new(first)),
                unknown: Arc::default(),
            };
            // One writer in the volume's first half, until the coordinator is gone.
            let vol = c.volume(name);
            let (reference, unknown, acked) = (
                loaded.reference.clone(),
                loaded.unknown.clone(),
                acked.clone(),
            );
            let half = size / 2;
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(size);
                loop {
                    let off = rng.random_range(0..half - 1);
                    let len = rng.random_range(1..=(half - off).min(32 * KIB));
                    let data = random(&mut rng, len as usize);
                    match vol.write_at(off, Bytes::from(data.clone())).await {
                        Ok(()) => {
                            reference.lock().unwrap()[off as usize..(off + len) as usize]
                                .copy_from_slice(&data);
                            acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(_) => {
                            unknown.lock().unwrap().push((off, data));
                            return;
                        }
                    }
                }
            }));
            volumes.push(loaded);
        }
        eventually(
            "40 writes acknowledged",
            Duration::from_secs(60),
            || async { (acked.load(std::sync::atomic::Ordering::SeqCst) >= 40).then_some(()) },
        )
        .await;
        let mut raw = cluster.volume_client().await.unwrap();
        let mut described = Vec::new();
        for v in &volumes {
            described.push(raw.get_volume(&v.name).await.unwrap());
        }
        cluster.coordinator.kill9().await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        // A data block in the second half (no write was in flight there at the crash): the
        // second data unit of a stripe, a few blocks in.
        let mut bad = Vec::new();
        for (v, d) in volumes.iter().zip(&described) {
            let offset = v.size / 2 + 3 * 64 * KIB + 16 * KIB + 2 * 4096 + 100;
            bad.push(corrupt_volume_block(&cluster, d, offset));
        }

        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        for (v, &block) in volumes.iter().zip(&bad) {
            let s = settled(&c, &v.name).await;
            assert_eq!(s.state, VolumeState::Optimal, "{s:?}");
            let resync = s.resync.clone().expect("resynced");
            assert!(resync.completed(), "{resync:?}");
            assert_eq!(resync.stripes_skipped, 0, "{resync:?}");
            let reference = v.reference.lock().unwrap().clone();
            let unknown = v.unknown.lock().unwrap().clone();
            let vol = c.volume(&v.name);
            if v.name == "q6" {
                assert_eq!(
                    (resync.stripes_repaired, resync.stripes_lost),
                    (1, 0),
                    "{resync:?}"
                );
                assert_eq!(s.lost_bytes, 0);
                let got = vol.read_at(0, v.size as usize).await.unwrap();
                check_acknowledged(&got, &reference, &unknown, &v.name);
            } else {
                assert_eq!(
                    (resync.stripes_repaired, resync.stripes_lost),
                    (0, 1),
                    "{resync:?}"
                );
                let lost = c.list_lost(&v.name).await.unwrap();
                assert_eq!(lost.len(), 1, "{lost:?}");
                assert_eq!((lost[0].offset, lost[0].length), (block, 4096));
                let err = vol.read_at(block, 4096).await.unwrap_err();
                assert!(matches!(err, ClientError::Unreadable { .. }), "{err:?}");
                // Everything else is served as acknowledged.
                let before = vol.read_at(0, block as usize).await.unwrap();
                check_acknowledged(&before, &reference[..block as usize], &unknown, &v.name);
                let after = vol
                    .read_at(block + 4096, (v.size - block - 4096) as usize)
                    .await
                    .unwrap();
                assert!(after[..] == reference[(block + 4096) as usize..]);
                // A whole write of the block makes it readable again.
                let fresh = random(&mut rng, 4096);
                vol.write_at(block, Bytes::from(fresh.clone()))
                    .await
                    .unwrap();
                assert_eq!(vol.read_at(block, 4096).await.unwrap()[..], fresh[..]);
                assert!(c.list_lost(&v.name).await.unwrap().is_empty());
            }
            cluster.check_columns(&v.name, &[]).await.unwrap();
        }
        // Resynced to the end: a clean shutdown marks both clean.
        cluster.coordinator.terminate().await.unwrap();
        let log = cluster.coordinator.log();
        assert_eq!(log.matches("volume marked clean").count(), 2, "{log}");
    })
    .await;
}

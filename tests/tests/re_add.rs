//! Re-add after a short outage on real processes (issue 20, item 2): a column whose node was
//! away comes back by resyncing only the regions the parity map names (written while it was
//! away, or in flight when it failed), not the whole component; an administrator's fail is not
//! undone by itself; the map survives a clean restart while degraded; a component that does not
//! fit is refused. Every test ends with a full read-back and the column checker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{
    Client, ClientError, ComponentState, RaidLevel, RebuildKind, VolumeSpec, VolumeState,
};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::harness::{UnknownWrites, check_acknowledged, client, random, settled};
use dagraid_tests::prom::sample;
use dagraid_tests::{eventually, with_timeout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Regions of one stripe (RAID 5 over 4 columns, 64 KiB units: 192 KiB of data per stripe).
const REGION_BYTES: u64 = 192 * KIB;
/// One stripe unit: what a re-add writes to its column per region.
const UNIT: u64 = 64 * KIB;

fn options(cooldown_ms: u64) -> ClusterOptions {
    ClusterOptions {
        nodes: 4,
        metrics: true,
        node_deadline_ms: 1000,
        health_interval_ms: 200,
        coordinator_args: vec![
            "--gone-after-ms".into(),
            "1000".into(),
            "--parity-map-region-bytes".into(),
            REGION_BYTES.to_string(),
            "--parity-map-cooldown-ms".into(),
            cooldown_ms.to_string(),
        ],
        ..ClusterOptions::default()
    }
}

/// Creates RAID 5 volume `name` over 4 columns, fills it with random bytes and waits until the
/// fill's regions cooled down (nothing dirty). Answers the contents.
async fn create_filled(c: &Client, name: &str, size: u64, seed: u64) -> Vec<u8> {
    let info = c
        .create_volume(
            VolumeSpec::new(name, RaidLevel::Raid5, size)
                .columns(4)
                .stripe_unit_bytes(UNIT),
        )
        .await
        .unwrap();
    let size = info.size_bytes;
    let mut rng = StdRng::seed_from_u64(seed);
    let data = random(&mut rng, size as usize);
    for off in (0..size).step_by(MIB as usize) {
        let end = (off + MIB).min(size);
        c.volume(name)
            .write_at(
                off,
                Bytes::copy_from_slice(&data[off as usize..end as usize]),
            )
            .await
            .unwrap();
    }
    eventually(
        "the fill's regions cooled down",
        Duration::from_secs(60),
        || async {
            let m = c.volume(name).status().await.ok()?.parity_map?;
            (m.dirty_regions == 0).then_some(())
        },
    )
    .await;
    data
}

/// How the node of column 1 goes away for 10 s.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGSTOP, then SIGCONT: it keeps its sockets (and the calls queued in them).
    Pause,
    /// kill -9, then started again on the same data directory and address.
    KillAndRestart,
}

/// The node of column 1 away for 10 s under a write load into 6 of 128 regions: the column
/// fails, its node is found gone, and when it answers again the column is re-added by itself,
/// rebuilding at most the 6 regions written (one stripe unit each), never the whole component;
/// every acknowledged byte reads back and the columns agree.
async fn node_away_for_10s_under_writes(outage: Outage) {
    with_timeout(async {
        let mut cluster = Cluster::start(options(1000)).await.unwrap();
        let c = client(&cluster).await;
        let first = create_filled(&c, "ra", 24 * MIB, 21).await;
        let size = first.len() as u64;
        let regions = size.div_ceil(REGION_BYTES);
        assert_eq!(regions, 128);
        let info = c.volume("ra").status().await.unwrap();
        let node_id = info.components[1].node_id.clone();

        let k = 6;
        let chosen: Vec<u64> = (0..k).map(|i| i * regions / k + 3).collect();
        let reference = Arc::new(Mutex::new(first));
        let unknown: Arc<Mutex<UnknownWrites>> = Arc::default();
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..2u64 {
            let vol = c.volume("ra");
            let (reference, unknown, acked, chosen, stop) = (
                reference.clone(),
                unknown.clone(),
                acked.clone(),
                chosen.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(300 + w);
                let mut n = w as usize;
                while !stop.load(Ordering::SeqCst) {
                    let region = chosen[n % chosen.len()];
                    n += 2;
                    let start = region * REGION_BYTES;
                    let len = rng.random_range(1..=16 * KIB);
                    let off = rng.random_range(start..=start + REGION_BYTES - len);
                    let data = random(&mut rng, len as usize);
                    match vol.write_at(off, Bytes::from(data.clone())).await {
                        Ok(()) => {
                            reference.lock().unwrap()[off as usize..(off + len) as usize]
                                .copy_from_slice(&data);
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            unknown.lock().unwrap().push((off, data));
                            return;
                        }
                    }
                }
            }));
        }
        eventually("the load runs", Duration::from_secs(30), || async {
            (acked.load(Ordering::SeqCst) >= 2 * k).then_some(())
        })
        .await;
        match outage {
            Outage::Pause => cluster.node_by_id(&node_id).unwrap().pause().await.unwrap(),
            Outage::KillAndRestart => cluster
                .node_by_id_mut(&node_id)
                .unwrap()
                .kill9()
                .await
                .unwrap(),
        }
        eventually("column 1 failed", Duration::from_secs(30), || async {
            let v = c.volume("ra").status().await.ok()?;
            (v.components[1].state == ComponentState::Failed).then_some(())
        })
        .await;
        // The outage itself (the fault, not a wait for readiness): the load goes on degraded.
        let before = acked.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            acked.load(Ordering::SeqCst) > before,
            "writes go on while the node is stopped"
        );
        let held = c.volume("ra").status().await.unwrap().parity_map.unwrap();
        assert!(
            held.dirty_regions <= k,
            "only the regions written are dirty (held while degraded): {held:?}"
        );
        match outage {
            Outage::Pause => cluster
                .node_by_id(&node_id)
                .unwrap()
                .resume()
                .await
                .unwrap(),
            Outage::KillAndRestart => cluster
                .node_by_id_mut(&node_id)
                .unwrap()
                .restart_on_same_port()
                .await
                .unwrap(),
        }
        let done = eventually(
            "column 1 re-added and optimal",
            Duration::from_secs(60),
            || async {
                let v = c.volume("ra").status().await.ok()?;
                let r = v.rebuild_of(1)?.clone();
                (r.completed && v.components[1].state == ComponentState::Optimal).then_some(r)
            },
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(done.kind, RebuildKind::ReAdd, "{done:?}");
        assert_eq!(done.note, None, "{done:?}");
        assert_eq!(done.component_id, info.components[1].component_id);
        assert!(
            (1..=k).contains(&done.regions_resynced),
            "at most the regions written meanwhile: {done:?}"
        );
        assert!(
            done.bytes_done > 0 && done.bytes_done <= done.regions_resynced * UNIT,
            "one stripe unit per region rebuilt, not the component ({} bytes): {done:?}",
            info.components[1].size_bytes
        );
        let v = c.volume("ra").status().await.unwrap();
        assert_eq!(v.state, VolumeState::Optimal, "{v:?}");
        let got = c.volume("ra").read_at(0, size as usize).await.unwrap();
        let reference = reference.lock().unwrap().clone();
        let unknown = unknown.lock().unwrap().clone();
        check_acknowledged(&got, &reference, &unknown);
        cluster.check_columns("ra", &[]).await.unwrap();
        let log = cluster.coordinator.log();
        assert!(log.contains("re-add starts"), "{outage:?}: {log}");
        // The metric says how many regions the re-add rebuilt.
        let text = cluster.coordinator.scrape().await.unwrap();
        let regions = sample(
            &text,
            "dagraid_rebuild_regions_resynced_total",
            &[("volume", "ra"), ("column", "1"), ("kind", "re_add")],
        );
        assert_eq!(regions, done.regions_resynced as f64, "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_for_10s_under_writes_is_re_added_with_only_the_regions_written() {
    node_away_for_10s_under_writes(Outage::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_under_writes_is_re_added_with_only_the_regions_written() {
    node_away_for_10s_under_writes(Outage::KillAndRestart).await;
}

/// An administrator's fail stays (no re-add by itself); the regions written while the column
/// is failed stay dirty past the cooldown and across a clean restart; `re_add_column` by hand
/// then rebuilds exactly those; a re-add of a column that is not failed, or of one whose
/// component its node lost, is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_add_by_hand_after_a_clean_restart_rebuilds_exactly_the_regions_written() {
    with_timeout(async {
        let mut cluster = Cluster::start(options(300)).await.unwrap();
        let c = client(&cluster).await;
        let mut reference = create_filled(&c, "rb", 6 * MIB, 22).await;
        let failed = c.fail_component("rb", 2).await.unwrap();
        assert_eq!(failed.state, VolumeState::Degraded);
        let mut rng = StdRng::seed_from_u64(23);
        for region in [0u64, 10, 20] {
            let off = region * REGION_BYTES + 1000;
            let data = random(&mut rng, 20_000);
            c.volume("rb")
                .write_at(off, Bytes::from(data.clone()))
                .await
                .unwrap();
            reference[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
        // Well past the cooldown and several looks of the monitor: still failed, still dirty.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let v = c.volume("rb").status().await.unwrap();
        assert_eq!(v.components[2].state, ComponentState::Failed, "{v:?}");
        assert_eq!(v.parity_map.as_ref().unwrap().dirty_regions, 3, "{v:?}");

        cluster.coordinator.terminate().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let v = settled(&c, "rb").await;
        assert_eq!(v.state, VolumeState::Degraded, "{v:?}");
        assert!(v.resync.is_none(), "clean: no resync: {:?}", v.resync);
        assert_eq!(
            v.parity_map.as_ref().unwrap().dirty_regions,
            3,
            "the map is kept across a clean restart while degraded: {v:?}"
        );

        let e = c.re_add_column("rb", 1, None).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::RebuildRefused { message } if message.contains("only a failed column")),
            "{e:?}"
        );
        let started = c.re_add_column("rb", 2, None).await.unwrap();
        let r = started.rebuild_of(2).unwrap();
        assert_eq!((r.kind, r.regions_total), (RebuildKind::ReAdd, 3), "{r:?}");
        let done = eventually("column 2 re-added", Duration::from_secs(60), || async {
            let v = c.volume("rb").status().await.ok()?;
            let r = v.rebuild_of(2)?.clone();
            (r.completed && v.components[2].state == ComponentState::Optimal).then_some(r)
        })
        .await;
        assert_eq!(done.regions_resynced, 3, "{done:?}");
        assert_eq!(done.bytes_done, 3 * UNIT, "{done:?}");
        eventually(
            "the map cools down once optimal",
            Duration::from_secs(30),
            || async {
                let m = c.volume("rb").status().await.ok()?.parity_map?;
                (m.dirty_regions == 0).then_some(())
            },
        )
        .await;
        let got = c.volume("rb").read_at(0, reference.len()).await.unwrap();
        check_acknowledged(&got, &reference, &[]);
        cluster.check_columns("rb", &[]).await.unwrap();

        // A component its node lost is refused, and the column stays failed.
        let v = c.fail_component("rb", 3).await.unwrap();
        let member = v.components[3].clone();
        let node = cluster.node_by_id_mut(&member.node_id).unwrap();
        node.kill9().await.unwrap();
        std::fs::remove_file(node.component_file(&member.component_id)).unwrap();
        node.restart_on_same_port().await.unwrap();
        let e = eventually(
            "the node answers and the re-add is refused",
            Duration::from_secs(30),
            || async {
                match c.re_add_column("rb", 3, None).await {
                    Err(ClientError::RebuildRefused { message })
                        if message.contains("missing") =>
                    {
                        Some(message)
                    }
                    _ => None,
                }
            },
        )
        .await;
        assert!(e.contains(&member.component_id), "{e}");
        let v = c.volume("rb").status().await.unwrap();
        assert_eq!(v.components[3].state, ComponentState::Failed, "{v:?}");
        let got = c.volume("rb").read_at(0, reference.len()).await.unwrap();
        check_acknowledged(&got, &reference, &[]);
        cluster.check_columns("rb", &[]).await.unwrap();
    })
    .await;
}

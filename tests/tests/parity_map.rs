//! The parity map on real processes (issue 20, item 1): a crash costs a resync of the regions
//! written within the cooldown, not of the whole volume. Every test ends with a full read-back
//! and the column checker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{RaidLevel, VolumeSpec, VolumeState};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::harness::{UnknownWrites, check_acknowledged, client, random, settled};
use dagraid_tests::{eventually, with_timeout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Regions of one stripe (RAID 5 over 4 columns, 64 KiB units: 192 KiB of data per stripe).
const REGION_BYTES: u64 = 192 * KIB;

/// Long enough that every region the load writes stays dirty until the crash, short enough to
/// wait for the initial fill to cool down.
const COOLDOWN_MS: u64 = 3000;

/// A kill -9 of the coordinator under a write load that touches 5% of the volume: the restart
/// resyncs exactly the regions the load wrote (dirty at the crash), not the volume; then every
/// acknowledged byte reads back and the columns agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_writes_to_5_percent_of_the_volume_resyncs_only_those_regions() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            nodes: 4,
            coordinator_args: vec![
                "--assembly-wait-ms".into(),
                "3000".into(),
                "--parity-map-region-bytes".into(),
                REGION_BYTES.to_string(),
                "--parity-map-cooldown-ms".into(),
                COOLDOWN_MS.to_string(),
            ],
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(
                VolumeSpec::new("pm", RaidLevel::Raid5, 60 * MIB)
                    .columns(4)
                    .stripe_unit_bytes(64 * KIB),
            )
            .await
            .unwrap();
        let size = info.size_bytes;
        let map = info
            .parity_map
            .clone()
            .expect("an assembled volume has a map");
        assert_eq!(map.region_bytes, REGION_BYTES);
        let regions = size.div_ceil(REGION_BYTES);
        assert_eq!(map.regions, regions);
        // Fill the volume (every region dirty), then let it cool down: nothing dirty.
        let mut rng = StdRng::seed_from_u64(20);
        let first = random(&mut rng, size as usize);
        for off in (0..size).step_by(MIB as usize) {
            let end = (off + MIB).min(size);
            c.volume("pm")
                .write_at(
                    off,
                    Bytes::copy_from_slice(&first[off as usize..end as usize]),
                )
                .await
                .unwrap();
        }
        let dirty = c.volume("pm").status().await.unwrap().parity_map.unwrap();
        assert!(dirty.dirty_regions > 0, "{dirty:?}");
        eventually(
            "the fill's regions cooled down",
            Duration::from_secs(60),
            || async {
                let m = c.volume("pm").status().await.ok()?.parity_map?;
                (m.dirty_regions == 0).then_some(())
            },
        )
        .await;

        // 5% of the regions, spread over the volume, written round-robin by 2 writers so that
        // every one of them is rewritten well within the cooldown until the crash.
        let k = (regions / 20).max(2);
        let chosen: Vec<u64> = (0..k).map(|i| i * regions / k).collect();
        let reference = Arc::new(Mutex::new(first));
        let unknown: Arc<Mutex<UnknownWrites>> = Arc::default();
        let acked = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..2u64 {
            let vol = c.volume("pm");
            let (reference, unknown, acked, chosen) = (
                reference.clone(),
                unknown.clone(),
                acked.clone(),
                chosen.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(200 + w);
                let mut n = w as usize;
                loop {
                    let region = chosen[n % chosen.len()];
                    n += 2;
                    let start = region * REGION_BYTES;
                    let end = (start + REGION_BYTES).min(size);
                    let len = rng.random_range(1..=16 * KIB).min(end - start);
                    let off = rng.random_range(start..=end - len);
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
        let enough = 3 * k;
        eventually(
            "every chosen region written a few times",
            Duration::from_secs(60),
            || async { (acked.load(Ordering::SeqCst) >= enough).then_some(()) },
        )
        .await;
        let during = c.volume("pm").status().await.unwrap().parity_map.unwrap();
        assert!(
            during.dirty_regions <= k,
            "only the regions written are dirty: {during:?}, {k} written"
        );
        cluster.coordinator.kill9().await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }

        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let s = settled(&c, "pm").await;
        assert_eq!(s.state, VolumeState::Optimal, "{s:?}");
        let resync = s
            .resync
            .expect("a volume not shut down cleanly is resynced");
        assert_eq!(resync.error, None);
        assert!(!resync.full, "the map was kept: {resync:?}");
        // Exactly the regions the load wrote: each was rewritten within the cooldown before
        // the crash, and no other region was written since the fill cooled down.
        assert_eq!(resync.regions_total, k, "{resync:?}");
        assert_eq!(resync.regions_done, k, "{resync:?}");
        assert_eq!(resync.stripes_total, k, "one stripe per region: {resync:?}");
        assert_eq!(resync.stripes_done, resync.stripes_total);
        let got = c.volume("pm").read_at(0, size as usize).await.unwrap();
        let reference = reference.lock().unwrap().clone();
        let unknown = unknown.lock().unwrap().clone();
        check_acknowledged(&got, &reference, &unknown);
        cluster.check_columns("pm", &[]).await.unwrap();
        let log = cluster.coordinator.log();
        assert!(log.contains("resync finished"), "{log}");
    })
    .await;
}

/// A clean restart leaves nothing to resync; a write after it marks its region again, and the
/// region is cleared after the cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_resyncs_nothing_and_a_region_is_marked_and_cleared_again() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            nodes: 4,
            coordinator_args: vec![
                "--parity-map-region-bytes".into(),
                REGION_BYTES.to_string(),
                "--parity-map-cooldown-ms".into(),
                "500".into(),
            ],
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        c.create_volume(
            VolumeSpec::new("pm", RaidLevel::Raid5, 6 * MIB)
                .columns(4)
                .stripe_unit_bytes(64 * KIB),
        )
        .await
        .unwrap();
        let data = vec![7u8; 8192];
        c.volume("pm")
            .write_at(REGION_BYTES * 3 + 100, Bytes::from(data.clone()))
            .await
            .unwrap();
        let m = c.volume("pm").status().await.unwrap().parity_map.unwrap();
        assert_eq!(m.dirty_regions, 1, "{m:?}");
        cluster.coordinator.terminate().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let s = settled(&c, "pm").await;
        assert_eq!(s.state, VolumeState::Optimal);
        assert!(s.resync.is_none(), "clean: no resync: {:?}", s.resync);
        assert_eq!(s.parity_map.unwrap().dirty_regions, 0);
        c.volume("pm")
            .write_at(0, Bytes::from(data.clone()))
            .await
            .unwrap();
        assert_eq!(
            c.volume("pm")
                .status()
                .await
                .unwrap()
                .parity_map
                .unwrap()
                .dirty_regions,
            1
        );
        eventually("the region cleared", Duration::from_secs(30), || async {
            let m = c.volume("pm").status().await.ok()?.parity_map?;
            (m.dirty_regions == 0).then_some(())
        })
        .await;
        let got = c.volume("pm").read_at(0, 8192).await.unwrap();
        assert_eq!(&got[..], &data[..]);
        cluster.check_columns("pm", &[]).await.unwrap();
    })
    .await;
}

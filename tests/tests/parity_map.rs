//! The parity map on real processes (issue 20, item 1): a crash costs a resync of the regions
//! written within the cooldown, not of the whole volume; and a crash after every `k` of the
//! writes of a parity-map update (a mark, a clear) leaves a map that names every region that
//! may be torn (issue 20, item 4). Every test ends with a full read-back and the column checker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{Client, RaidLevel, VolumeInfo, VolumeSpec, VolumeState};
use dagraid_coordinator::labels::CRASH_AFTER_MAP_WRITES_ENV;
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

/// RAID 5 over 4 columns, none failed: a parity-map update writes n = 4 metadata records, then
/// the store.
const RECORDS: usize = 4;

/// The cooldown of the crash tests: short, so a region resynced after a crash is cleared soon.
const SHORT_COOLDOWN_MS: u64 = 500;

/// A cluster of 4 nodes with volume `pm` (RAID 5 over 4 columns, 64 KiB units, regions of one
/// stripe, a short cooldown), filled with random bytes and cooled down (no region dirty).
/// Answers the cluster, the volume's size and its bytes.
async fn filled_volume(seed: u64) -> (Cluster, u64, Vec<u8>) {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        coordinator_args: vec![
            "--parity-map-region-bytes".into(),
            REGION_BYTES.to_string(),
            "--parity-map-cooldown-ms".into(),
            SHORT_COOLDOWN_MS.to_string(),
        ],
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let c = client(&cluster).await;
    let info = c
        .create_volume(
            VolumeSpec::new("pm", RaidLevel::Raid5, 6 * MIB)
                .columns(4)
                .stripe_unit_bytes(64 * KIB),
        )
        .await
        .unwrap();
    let size = info.size_bytes;
    assert_eq!(info.parity_map.unwrap().region_bytes, REGION_BYTES);
    let mut rng = StdRng::seed_from_u64(seed);
    let bytes = random(&mut rng, size as usize);
    c.volume("pm")
        .write_at(0, Bytes::from(bytes.clone()))
        .await
        .unwrap();
    cooled(&c).await;
    (cluster, size, bytes)
}

/// Waits until no region of `pm` is dirty (the last write's region cleared).
async fn cooled(c: &Client) -> VolumeInfo {
    eventually("no region dirty", Duration::from_secs(30), || async {
        let s = c.volume("pm").status().await.ok()?;
        (s.parity_map.as_ref()?.dirty_regions == 0).then_some(s)
    })
    .await
}

/// Waits for the coordinator armed with the map crash hook at `k` to abort, and checks that
/// the hook (not something else) ended it, where `k` says.
async fn aborted_by_the_map_hook(cluster: &mut Cluster, k: usize) {
    let status = cluster
        .coordinator
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!status.success(), "k = {k}: {status:?}");
    let log = cluster.coordinator.log();
    let expected = if k <= RECORDS {
        format!("aborting after {k} metadata record writes of a parity-map update\n")
    } else {
        "aborting after the metadata record writes of a parity-map update and the store write"
            .to_owned()
    };
    assert!(
        log.contains(&format!(
            "test hook {CRASH_AFTER_MAP_WRITES_ENV}: {expected}"
        )),
        "k = {k}: {log}"
    );
}

/// After the crash: restarts the coordinator without the hook, waits for the volume to settle
/// and checks it is optimal, its resync (it was not shut down cleanly) took `regions` regions
/// from the map, every acknowledged byte reads back (`unknown`: old or new bytes), and the
/// columns agree (no torn stripe left unsynced). Answers what it read.
async fn restarted_and_checked(
    cluster: &mut Cluster,
    k: usize,
    regions: u64,
    reference: &[u8],
    unknown: &UnknownWrites,
) -> Vec<u8> {
    cluster
        .coordinator
        .set_env(CRASH_AFTER_MAP_WRITES_ENV, None);
    cluster.coordinator.restart().await.unwrap();
    let c = client(cluster).await;
    let s = settled(&c, "pm").await;
    assert_eq!(s.state, VolumeState::Optimal, "k = {k}: {s:?}");
    let resync = s
        .resync
        .expect("a volume not shut down cleanly is resynced");
    assert_eq!(resync.error, None, "k = {k}");
    assert!(!resync.full, "k = {k}: the map was kept: {resync:?}");
    assert_eq!(resync.regions_total, regions, "k = {k}: {resync:?}");
    assert_eq!(resync.regions_done, regions, "k = {k}: {resync:?}");
    let got = c
        .volume("pm")
        .read_at(0, reference.len())
        .await
        .unwrap()
        .to_vec();
    check_acknowledged(&got, reference, unknown);
    cluster.check_columns("pm", &[]).await.unwrap();
    got
}

/// Issue 20, item 4: the coordinator aborts in the middle of a **mark** (the first write into a
/// clean region waits for a copy of the map naming it: the metadata records, one at a time, then
/// the store), after each `k` of its n = 4 record writes and after the store write (k = n + 1).
/// The write is never issued (it fails with the coordinator); at the restart the region is
/// resynced exactly when some copy names it (a record for k >= 1, the union at assembly keeps
/// it), the volume is optimal, its bytes are intact and its columns agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_k_of_the_writes_of_a_mark_leaves_the_region_on_the_map_or_unwritten() {
    with_timeout(async {
        let (mut cluster, size, mut reference) = filled_volume(41).await;
        let mut rng = StdRng::seed_from_u64(42);
        for k in 0..=RECORDS + 1 {
            // Armed for the next life, shut down cleanly: it starts with no region dirty.
            cluster
                .coordinator
                .set_env(CRASH_AFTER_MAP_WRITES_ENV, Some(&k.to_string()));
            cluster.coordinator.terminate().await.unwrap();
            cluster.coordinator.restart().await.unwrap();
            let c = client(&cluster).await;
            let s = settled(&c, "pm").await;
            assert_eq!(s.state, VolumeState::Optimal, "k = {k}: {s:?}");
            assert!(s.resync.is_none(), "k = {k}: clean: {:?}", s.resync);
            assert_eq!(s.parity_map.unwrap().dirty_regions, 0, "k = {k}");

            // A write into a clean region (a new one each round): its mark is the first map
            // update of this life, and the hook cuts it.
            let region = 1 + 3 * k as u64;
            let off = region * REGION_BYTES + 4096;
            assert!(off + 8192 <= size);
            let w = random(&mut rng, 8192);
            let written = c.volume("pm").write_at(off, Bytes::from(w.clone())).await;
            assert!(
                written.is_err(),
                "k = {k}: the coordinator aborts before the write is issued"
            );
            aborted_by_the_map_hook(&mut cluster, k).await;

            // k = 0: no copy names the region, and nothing was written into it. k >= 1: a
            // record (and from k = n + 1 the store) names it; the union at assembly keeps it.
            let regions = u64::from(k >= 1);
            let unknown = vec![(off, w)];
            let got = restarted_and_checked(&mut cluster, k, regions, &reference, &unknown).await;
            // The write waited for its mark, so it was never issued: the old bytes.
            let range = off as usize..off as usize + 8192;
            assert!(
                got[range.clone()] == reference[range],
                "k = {k}: the write was issued before its mark was durable"
            );
            reference = got;
            // The resynced region cools before the next round (cleared, no hook armed).
            cooled(&client(&cluster).await).await;
        }
    })
    .await;
}

/// Issue 20, item 4: the coordinator aborts in the middle of a **clear**. A region is written,
/// the coordinator killed (kill -9) and restarted with the hook: assembly pins the region, the
/// resync rewrites it, it cools down, and its clear is the first map update of that life, cut
/// after `k` of its n = 4 record writes (k = n + 1: after the store write). The restart without
/// the hook takes the union of the copies: the region is resynced again unless the clear
/// reached the store (any outcome is consistent: the region is clean on disk after its first
/// resync); the volume ends optimal with every acknowledged byte and agreeing columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_k_of_the_writes_of_a_clear_keeps_the_union_of_the_copies() {
    with_timeout(async {
        let (mut cluster, size, mut reference) = filled_volume(51).await;
        let mut rng = StdRng::seed_from_u64(52);
        for (round, k) in [0, 2, RECORDS, RECORDS + 1].into_iter().enumerate() {
            let c = client(&cluster).await;
            cooled(&c).await;
            let region = 1 + 3 * round as u64;
            let off = region * REGION_BYTES + 4096;
            assert!(off + 8192 <= size);
            let w = random(&mut rng, 8192);
            c.volume("pm")
                .write_at(off, Bytes::from(w.clone()))
                .await
                .unwrap();
            reference[off as usize..off as usize + 8192].copy_from_slice(&w);
            let m = c.volume("pm").status().await.unwrap().parity_map.unwrap();
            assert_eq!(m.dirty_regions, 1, "k = {k}: {m:?}");

            // kill -9 with the region dirty, restart armed: the clear after its resync aborts.
            cluster
                .coordinator
                .set_env(CRASH_AFTER_MAP_WRITES_ENV, Some(&k.to_string()));
            cluster.coordinator.restart().await.unwrap();
            aborted_by_the_map_hook(&mut cluster, k).await;

            // The store names the region until the clear reaches it (k <= n), and so do the
            // records the clear did not reach: the union resyncs it again. After the store
            // write (k = n + 1) no copy names it.
            let regions = u64::from(k <= RECORDS);
            reference =
                restarted_and_checked(&mut cluster, k, regions, &reference, &Vec::new()).await;
        }
        cooled(&client(&cluster).await).await;
    })
    .await;
}

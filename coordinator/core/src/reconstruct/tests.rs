//! Reconstruction and copyback over in-memory components: every redundant level rebuilds a
//! failed column onto a blank spare while writes go on, RAID 6 rebuilds two columns in one
//! pass, a bad block on a surviving column is recorded lost (RAID 5) or repaired (RAID 6)
//! without stopping the rebuild, and a copyback under writes leaves the replacement equal to
//! the column. Every test ends with the column checker and a full read-back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::access::{AccessError, Array, ArrayConfig, InMemoryStates};
use crate::array::{ComponentState, ComponentStates};
use crate::dag::ComponentTable;
use crate::engine::EngineConfig;
use crate::io::{ComponentIo, IoErrorKind};
use crate::layout::{ColumnSet, Geometry, Layout, RaidLevel};
use crate::testing::MemComponent;
use crate::testing::reference::{column_images, verify_columns};
use crate::testing::{Fault, FaultyComponent, Gate, IoLog, IoOp, Trigger};

const BS: u32 = 16;
const UNIT_BLOCKS: u64 = 4;
const STRIPES: u64 = 12;

struct Rig {
    layout: Layout,
    volume: Vec<u8>,
    mems: Vec<Arc<MemComponent>>,
    array: Arc<Array>,
}

fn columns_for(level: RaidLevel) -> usize {
    match level {
        RaidLevel::Raid1 => 4,
        _ => level.min_columns() + 2,
    }
}

fn rig(level: RaidLevel, seed: u64) -> Rig {
    let columns = columns_for(level);
    let layout = Layout::new(
        level,
        Geometry::new(columns, UNIT_BLOCKS, u64::from(BS), STRIPES * UNIT_BLOCKS).unwrap(),
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let volume: Vec<u8> = (0..layout.capacity()).map(|_| rng.random()).collect();
    let mems: Vec<Arc<MemComponent>> = column_images(&layout, &volume)
        .into_iter()
        .enumerate()
        .map(|(c, img)| MemComponent::with_contents(format!("c{c}"), BS, img))
        .collect();
    let table: ComponentTable = mems
        .iter()
        .map(|m| m.clone() as Arc<dyn ComponentIo>)
        .collect::<Vec<_>>()
        .into();
    let states = ComponentStates::all_optimal(columns);
    let config = ArrayConfig {
        engine: EngineConfig {
            node_deadline: Duration::from_secs(1),
        },
        ..ArrayConfig::default()
    };
    let array = Array::new(layout, table, states, config, Arc::new(InMemoryStates)).unwrap();
    Rig {
        layout,
        volume,
        mems,
        array,
    }
}

impl Rig {
    fn blank(&self, id: &str) -> Arc<MemComponent> {
        MemComponent::new(id, BS, self.layout.geometry().blocks_per_column())
    }

    /// A blank spare `id` that failed `column` is then reconstructed onto.
    async fn onto(&self, column: usize, id: &str) -> Arc<MemComponent> {
        let spare = self.blank(id);
        self.array
            .start_reconstruction(column, Some(spare.clone() as Arc<dyn ComponentIo>))
            .await
            .unwrap();
        spare
    }

    /// Random writes of whole blocks, applied to the reference as they are acknowledged.
    async fn writes(&mut self, seed: u64, count: usize) {
        let mut rng = StdRng::seed_from_u64(seed);
        let bs = u64::from(BS);
        let blocks = self.layout.capacity() / bs;
        for _ in 0..count {
            let first = rng.random_range(0..blocks);
            let n = rng.random_range(1..=(blocks - first).min(12));
            let data: Vec<u8> = (0..n * bs).map(|_| rng.random()).collect();
            self.array
                .write(first * bs, Bytes::from(data.clone()))
                .await
                .unwrap();
            let at = (first * bs) as usize;
            self.volume[at..at + data.len()].copy_from_slice(&data);
        }
    }

    async fn read_all(&self) -> Result<Vec<u8>, AccessError> {
        let (data, _) = self.array.read(0, self.layout.capacity()).await?;
        Ok(data.into_bytes().to_vec())
    }

    /// Every stripe of `columns` reconstructed, with writes between the stripes.
    async fn sweep(&mut self, columns: &ColumnSet, seed: u64) -> u64 {
        let mut lost = 0;
        for stripe in 0..self.layout.stripes() {
            let done = self
                .array
                .reconstruct_stripe(columns, stripe)
                .await
                .unwrap();
            assert_eq!(done.columns.len(), columns.len(), "stripe {stripe}");
            lost += done.lost.iter().map(|r| r.end - r.start).sum::<u64>();
            if stripe % 3 == 1 {
                self.writes(seed + stripe, 4).await;
            }
        }
        lost
    }

    fn assert_columns(&self, table: &[Arc<MemComponent>]) {
        let contents: Vec<Vec<u8>> = table.iter().map(|m| m.contents()).collect();
        verify_columns(&self.layout, &contents, &ColumnSet::new()).unwrap();
        let expect = column_images(&self.layout, &self.volume);
        for (c, m) in table.iter().enumerate() {
            let used = expect[c].len();
            assert!(m.contents()[..used] == expect[c][..], "column {c} differs");
        }
    }
}

async fn rebuild_one(level: RaidLevel, column: usize) {
    let mut r = rig(level, 7 + column as u64);
    r.writes(1, 10).await;
    r.array.fail_component(column).await.unwrap();
    // Degraded writes while the column is failed.
    r.writes(2, 10).await;
    let spare = r.onto(column, "spare").await;
    assert_eq!(
        r.array.states().get(column),
        Some(ComponentState::Reconstructing)
    );
    let mut only = ColumnSet::new();
    only.insert(column);
    assert_eq!(r.sweep(&only, 100).await, 0);
    r.array.finish_reconstruction(column).await.unwrap();
    assert_eq!(r.array.states().get(column), Some(ComponentState::Optimal));
    let mut table = r.mems.clone();
    table[column] = spare;
    r.assert_columns(&table);
    assert_eq!(r.read_all().await.unwrap(), r.volume);
}

#[tokio::test]
async fn every_redundant_level_rebuilds_a_failed_column_onto_a_spare_under_writes() {
    for level in [
        RaidLevel::Raid1,
        RaidLevel::Raid4,
        RaidLevel::Raid5,
        RaidLevel::Raid6,
    ] {
        for column in 0..columns_for(level) {
            rebuild_one(level, column).await;
        }
    }
}

#[tokio::test]
async fn raid6_rebuilds_two_columns_in_one_pass() {
    let mut r = rig(RaidLevel::Raid6, 3);
    r.array.fail_component(1).await.unwrap();
    r.array.fail_component(4).await.unwrap();
    r.writes(5, 10).await;
    let s1 = r.onto(1, "s1").await;
    let s4 = r.onto(4, "s4").await;
    let both: ColumnSet = [1, 4].into_iter().collect();
    assert_eq!(r.sweep(&both, 50).await, 0);
    r.array.finish_reconstruction(1).await.unwrap();
    r.array.finish_reconstruction(4).await.unwrap();
    let mut table = r.mems.clone();
    table[1] = s1;
    table[4] = s4;
    r.assert_columns(&table);
    assert_eq!(r.read_all().await.unwrap(), r.volume);
}

#[tokio::test]
async fn a_spare_is_never_read_above_its_watermark_and_unfinished_work_is_refused() {
    let mut r = rig(RaidLevel::Raid5, 11);
    r.array.fail_component(2).await.unwrap();
    let spare = r.blank("spare");
    // Garbage on the spare: a read that used it above the watermark would see it.
    spare.poke(0, &vec![0xAB; spare.contents().len()]);
    r.array
        .start_reconstruction(2, Some(spare.clone() as Arc<dyn ComponentIo>))
        .await
        .unwrap();
    let only: ColumnSet = [2].into_iter().collect();
    for stripe in 0..r.layout.stripes() / 2 {
        r.array.reconstruct_stripe(&only, stripe).await.unwrap();
    }
    r.writes(9, 10).await;
    assert_eq!(r.read_all().await.unwrap(), r.volume);
    assert!(matches!(
        r.array.finish_reconstruction(2).await,
        Err(AccessError::Rebuild { column: 2, .. })
    ));
    // An optimal column cannot start a reconstruction.
    assert!(r.array.start_reconstruction(0, None).await.is_err());
}

#[tokio::test]
async fn raid5_bad_block_on_a_survivor_is_recorded_lost_and_the_rebuild_completes() {
    let r = rig(RaidLevel::Raid5, 21);
    r.array.fail_component(0).await.unwrap();
    let spare = r.onto(0, "spare").await;
    // A latent bad block on column 3, stripe 5, row 1.
    let bad = 5 * UNIT_BLOCKS + 1;
    r.mems[3].mark_bad(bad);
    let only: ColumnSet = [0].into_iter().collect();
    let mut lost = 0;
    for stripe in 0..r.layout.stripes() {
        let done = r.array.reconstruct_stripe(&only, stripe).await.unwrap();
        lost += done.lost.iter().map(|b| b.end - b.start).sum::<u64>();
    }
    r.array.finish_reconstruction(0).await.unwrap();
    // The row had two erased data blocks (unless one of them is parity): at least one lost.
    assert!(lost >= 1, "lost {lost}");
    let lost_set = r.array.lost();
    assert!(lost_set.blocks() == lost);
    let mut table = r.mems.clone();
    table[0] = spare;
    let contents: Vec<Vec<u8>> = table.iter().map(|m| m.contents()).collect();
    verify_columns(&r.layout, &contents, &ColumnSet::new()).unwrap();
    // Every block not lost reads back as written; the lost ones answer unreadable.
    let bs = u64::from(BS);
    for block in 0..r.layout.capacity() / bs {
        let got = r.array.read(block * bs, bs).await;
        if lost_set.intersects(block..block + 1) {
            assert!(
                matches!(got, Err(AccessError::Unreadable { .. })),
                "block {block}"
            );
        } else {
            let at = (block * bs) as usize;
            assert_eq!(
                got.unwrap().0.into_bytes().to_vec(),
                r.volume[at..at + bs as usize].to_vec(),
                "block {block}"
            );
        }
    }
}

#[tokio::test]
async fn raid6_bad_block_on_a_survivor_is_repaired_during_a_single_rebuild() {
    let r = rig(RaidLevel::Raid6, 31);
    r.array.fail_component(1).await.unwrap();
    let spare = r.onto(1, "spare").await;
    r.mems[3].mark_bad(2 * UNIT_BLOCKS + 2);
    let only: ColumnSet = [1].into_iter().collect();
    let mut repaired = 0;
    for stripe in 0..r.layout.stripes() {
        let done = r.array.reconstruct_stripe(&only, stripe).await.unwrap();
        assert!(done.lost.is_empty());
        repaired += done.repaired_blocks;
    }
    assert_eq!(repaired, 1);
    r.array.finish_reconstruction(1).await.unwrap();
    assert_eq!(r.array.lost().blocks(), 0);
    let mut table = r.mems.clone();
    table[1] = spare;
    r.assert_columns(&table);
    assert_eq!(r.read_all().await.unwrap(), r.volume);
}

#[tokio::test]
async fn a_copyback_under_writes_leaves_the_replacement_equal_to_the_column() {
    let mut r = rig(RaidLevel::Raid5, 41);
    r.writes(1, 10).await;
    let replacement = r.blank("replacement");
    let copy = r
        .array
        .start_copyback(2, replacement.clone() as Arc<dyn ComponentIo>)
        .await
        .unwrap();
    assert_eq!(r.array.states().get(2), Some(ComponentState::Copyback));
    for stripe in 0..r.layout.stripes() {
        r.array.copy_stripe(2, &copy, stripe).await.unwrap();
        if stripe % 2 == 0 {
            r.writes(200 + stripe, 3).await;
        }
    }
    r.array.finish_copyback(2, &copy).await.unwrap();
    assert_eq!(r.array.states().get(2), Some(ComponentState::Optimal));
    assert_eq!(r.array.components()[2].id(), "replacement");
    r.writes(300, 5).await;
    let mut table = r.mems.clone();
    table[2] = replacement;
    r.assert_columns(&table);
    assert_eq!(r.read_all().await.unwrap(), r.volume);
}

#[tokio::test]
async fn an_aborted_copyback_leaves_the_column_on_its_spare() {
    let mut r = rig(RaidLevel::Raid5, 51);
    let replacement = r.blank("replacement");
    let copy = r
        .array
        .start_copyback(1, replacement as Arc<dyn ComponentIo>)
        .await
        .unwrap();
    r.array.copy_stripe(1, &copy, 0).await.unwrap();
    r.array.abort_copyback(1, &copy, "operator").await.unwrap();
    assert_eq!(r.array.states().get(1), Some(ComponentState::Optimal));
    assert_eq!(r.array.components()[1].id(), "c1");
    r.writes(7, 10).await;
    r.assert_columns(&r.mems.clone());
    assert_eq!(r.read_all().await.unwrap(), r.volume);
}

#[tokio::test]
async fn nothing_is_rebuilt_or_recorded_lost_while_another_column_is_gone() {
    let mut r = rig(RaidLevel::Raid5, 61);
    r.array.fail_component(0).await.unwrap();
    let spare = r.onto(0, "spare").await;
    // Column 2's node is gone: the volume is beyond its tolerance until it answers again.
    assert!(r.array.set_gone(2, true));
    let only: ColumnSet = [0].into_iter().collect();
    let refused = r.array.reconstruct_stripe(&only, 0).await;
    assert!(
        matches!(refused, Err(AccessError::Unrecoverable { .. })),
        "{refused:?}"
    );
    assert_eq!(r.array.lost().blocks(), 0);
    assert_eq!(r.array.states().recovered()[0], 0);
    assert!(spare.contents().iter().all(|&b| b == 0));
    // Back: the rebuild goes on.
    r.array.set_gone(2, false);
    assert_eq!(r.sweep(&only, 5).await, 0);
    r.array.finish_reconstruction(0).await.unwrap();
    let mut table = r.mems.clone();
    table[0] = spare;
    r.assert_columns(&table);
}

#[tokio::test]
async fn batches_of_stripes_rebuild_what_single_stripes_do_with_writes_between() {
    for level in [RaidLevel::Raid1, RaidLevel::Raid5, RaidLevel::Raid6] {
        let mut r = rig(level, 71);
        r.array.fail_component(1).await.unwrap();
        r.writes(72, 10).await;
        let spare = r.onto(1, "spare").await;
        let only: ColumnSet = [1].into_iter().collect();
        let mut at = 0;
        while at < r.layout.stripes() {
            let done = r
                .array
                .reconstruct_stripes(&only, at..at + 5)
                .await
                .unwrap();
            assert_eq!(done.columns, vec![1]);
            at = r.array.states().recovered()[1];
            r.writes(80 + at, 3).await;
        }
        r.array.finish_reconstruction(1).await.unwrap();
        let mut table = r.mems.clone();
        table[1] = spare;
        r.assert_columns(&table);
        assert_eq!(r.read_all().await.unwrap(), r.volume, "{level:?}");
    }
}

/// A blank spare behind a [`FaultyComponent`] (faults injected into its calls), failed
/// `column` reconstructed onto it.
async fn onto_faulty(r: &Rig, column: usize) -> (Arc<MemComponent>, Arc<FaultyComponent>) {
    r.array.fail_component(column).await.unwrap();
    let spare = r.blank("spare");
    let faulty = FaultyComponent::new(spare.clone() as Arc<dyn ComponentIo>, IoLog::new());
    r.array
        .start_reconstruction(column, Some(faulty.clone() as Arc<dyn ComponentIo>))
        .await
        .unwrap();
    (spare, faulty)
}

/// Waits until `faulty` acknowledged a write at `block`.
async fn acknowledged(faulty: &FaultyComponent, block: u64) {
    faulty
        .log()
        .wait_until(|records| {
            records
                .iter()
                .any(|r| r.op == IoOp::Write && r.start_block == block && r.result == Some(Ok(())))
        })
        .await;
}

#[tokio::test]
async fn two_batches_in_flight_move_the_watermark_in_order() {
    let mut r = rig(RaidLevel::Raid5, 81);
    r.writes(82, 10).await;
    let (spare, faulty) = onto_faulty(&r, 1).await;
    let only: ColumnSet = [1].into_iter().collect();
    // The first batch's write waits; the second's is acknowledged meanwhile.
    let gate = Gate::new();
    faulty.inject(
        Trigger::always().op(IoOp::Write).at_block(0).times(1),
        Fault::HoldUntil(gate.clone()),
    );
    let mut a = r
        .array
        .start_reconstruct_stripes(&only, 0..4, None)
        .await
        .unwrap();
    let b = r
        .array
        .start_reconstruct_stripes(&only, 4..8, Some(&mut a))
        .await
        .unwrap();
    acknowledged(&faulty, 4 * UNIT_BLOCKS).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        r.array.states().recovered()[1],
        0,
        "not past the held batch"
    );
    gate.open();
    assert_eq!(a.finish().await.unwrap().columns, vec![1]);
    let done = b.finish().await.unwrap();
    assert_eq!(done.columns, vec![1]);
    assert_eq!(done.bytes, 4 * UNIT_BLOCKS * u64::from(BS));
    assert_eq!(r.array.states().recovered()[1], 8);
    // The rest two at a time, with writes between.
    let mut at = 8;
    while at < STRIPES {
        let mut a = r
            .array
            .start_reconstruct_stripes(&only, at..at + 2, None)
            .await
            .unwrap();
        let b = r
            .array
            .start_reconstruct_stripes(&only, at + 2..at + 4, Some(&mut a))
            .await
            .unwrap();
        a.finish().await.unwrap();
        b.finish().await.unwrap();
        at = r.array.states().recovered()[1];
        r.writes(83 + at, 3).await;
    }
    assert_eq!(at, STRIPES);
    r.array.finish_reconstruction(1).await.unwrap();
    let mut table = r.mems.clone();
    table[1] = spare;
    r.assert_columns(&table);
    assert_eq!(r.read_all().await.unwrap(), r.volume);
}

#[tokio::test]
async fn a_failure_in_the_second_batch_leaves_the_watermark_at_the_first_ones_end() {
    let mut r = rig(RaidLevel::Raid5, 91);
    let (spare, faulty) = onto_faulty(&r, 1).await;
    let only: ColumnSet = [1].into_iter().collect();
    // Every write at the second batch's first block times out (fenced, tried again, given up);
    // the first batch's write is held until then.
    let gate = Gate::new();
    faulty.inject(
        Trigger::always().op(IoOp::Write).at_block(0).times(1),
        Fault::HoldUntil(gate.clone()),
    );
    faulty.inject(
        Trigger::always().op(IoOp::Write).at_block(4 * UNIT_BLOCKS),
        Fault::Fail(IoErrorKind::Timeout),
    );
    let mut a = r
        .array
        .start_reconstruct_stripes(&only, 0..4, None)
        .await
        .unwrap();
    let b = r
        .array
        .start_reconstruct_stripes(&only, 4..8, Some(&mut a))
        .await
        .unwrap();
    gate.open();
    assert_eq!(a.finish().await.unwrap().columns, vec![1]);
    assert!(b.finish().await.is_err());
    assert_eq!(
        r.array.states().get(1),
        Some(ComponentState::Reconstructing)
    );
    assert_eq!(
        r.array.states().recovered()[1],
        4,
        "the first batch's end, no further"
    );
    // The sweep goes on from there once the fault is gone.
    faulty.clear();
    r.writes(92, 5).await;
    r.array
        .reconstruct_stripes(&only, 4..STRIPES)
        .await
        .unwrap();
    r.array.finish_reconstruction(1).await.unwrap();
    let mut table = r.mems.clone();
    table[1] = spare;
    r.assert_columns(&table);
    assert_eq!(r.read_all().await.unwrap(), r.volume);
}

#[tokio::test]
async fn a_batch_above_one_that_failed_moves_no_watermark() {
    let mut r = rig(RaidLevel::Raid5, 95);
    let (spare, faulty) = onto_faulty(&r, 1).await;
    let only: ColumnSet = [1].into_iter().collect();
    // The first batch's first stripe cannot be written (timeouts, fenced, given up); the second
    // batch's writes are all acknowledged.
    faulty.inject(
        Trigger::always().op(IoOp::Write).at_block(0),
        Fault::Fail(IoErrorKind::Timeout),
    );
    let mut a = r
        .array
        .start_reconstruct_stripes(&only, 0..4, None)
        .await
        .unwrap();
    let b = r
        .array
        .start_reconstruct_stripes(&only, 4..8, Some(&mut a))
        .await
        .unwrap();
    assert!(a.finish().await.is_err());
    let done = b.finish().await.unwrap();
    assert!(done.columns.is_empty(), "{done:?}");
    assert_eq!(done.bytes, 0);
    acknowledged(&faulty, 4 * UNIT_BLOCKS).await;
    assert_eq!(r.array.states().recovered()[1], 0);
    // Nothing at or above the watermark is ever read from the target: the rebuild starts
    // again from it.
    faulty.clear();
    r.writes(96, 5).await;
    r.array
        .reconstruct_stripes(&only, 0..STRIPES)
        .await
        .unwrap();
    r.array.finish_reconstruction(1).await.unwrap();
    let mut table = r.mems.clone();
    table[1] = spare;
    r.assert_columns(&table);
    assert_eq!(r.read_all().await.unwrap(), r.volume);
}

/// The rig with parity-map regions of one stripe each.
fn rig_with_stripe_regions(level: RaidLevel, seed: u64) -> Rig {
    let mut r = rig(level, seed);
    let config = ArrayConfig {
        engine: EngineConfig {
            node_deadline: Duration::from_secs(1),
        },
        region_bytes: r.layout.stripe_data_bytes(),
        ..ArrayConfig::default()
    };
    let table: ComponentTable = r
        .mems
        .iter()
        .map(|m| m.clone() as Arc<dyn ComponentIo>)
        .collect::<Vec<_>>()
        .into();
    r.array = Array::new(
        r.layout,
        table,
        ComponentStates::all_optimal(r.mems.len()),
        config,
        Arc::new(InMemoryStates),
    )
    .unwrap();
    r
}

impl Rig {
    /// Writes `len` random bytes into stripe `stripe` (the reference follows).
    async fn write_in_stripe(&mut self, stripe: u64, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let sb = self.layout.stripe_data_bytes();
        let data: Vec<u8> = (0..u64::from(BS) * 2).map(|_| rng.random()).collect();
        let at = stripe * sb + u64::from(BS);
        self.array
            .write(at, Bytes::from(data.clone()))
            .await
            .unwrap();
        self.volume[at as usize..at as usize + data.len()].copy_from_slice(&data);
    }
}

#[tokio::test]
async fn a_re_add_rebuilds_only_the_regions_written_while_away_and_the_component_ends_current() {
    for level in [RaidLevel::Raid1, RaidLevel::Raid5, RaidLevel::Raid6] {
        let mut r = rig_with_stripe_regions(level, 31);
        r.writes(1, 10).await;
        assert!(r.array.cool_parity_map(Duration::ZERO).await.unwrap());
        assert_eq!(r.array.parity_map().counts().dirty, 0);
        r.array.fail_component(1).await.unwrap();
        assert!(r.array.map_held());
        // Degraded writes into stripes 3 and 7: the column's copy there is now stale.
        r.write_in_stripe(3, 2).await;
        r.write_in_stripe(7, 3).await;
        // Held while degraded: nothing is cleared, whatever the cooldown.
        assert!(!r.array.cool_parity_map(Duration::ZERO).await.unwrap());
        assert_eq!(r.array.parity_map().counts().dirty, 2);
        // The component comes back with what it held when it failed.
        r.array.start_readd(1, None).await.unwrap();
        assert_eq!(r.array.states().get(1), Some(ComponentState::Stale));
        let only: ColumnSet = [1].into_iter().collect();
        let map_dirty = |r: &Rig, s: u64| {
            let m = r.array.parity_map();
            m.is_dirty(m.region_of(s))
        };
        let mut stripe = 0;
        let mut rebuilt = Vec::new();
        let mut wrote = false;
        while stripe < r.layout.stripes() {
            if stripe > 3 && !wrote {
                wrote = true;
                // A write above the watermark into a clean region: degraded for the stale
                // column, so the region is marked and the sweep rebuilds it.
                r.write_in_stripe(9, 4).await;
            }
            if map_dirty(&r, stripe) {
                let done = r.array.reconstruct_stripe(&only, stripe).await.unwrap();
                assert_eq!(done.columns, vec![1], "{level} stripe {stripe}");
                rebuilt.push(stripe);
                stripe += 1;
            } else {
                let at = r
                    .array
                    .advance_clean(&only, stripe..r.layout.stripes())
                    .await
                    .unwrap();
                assert!(at > stripe, "{level}: a clean region is passed");
                assert_eq!(r.array.states().recovered()[1], at);
                stripe = at;
            }
        }
        assert_eq!(rebuilt, vec![3, 7, 9], "{level}");
        r.array.finish_reconstruction(1).await.unwrap();
        assert_eq!(r.array.states().get(1), Some(ComponentState::Optimal));
        assert!(!r.array.map_held());
        r.assert_columns(&r.mems.clone());
        assert_eq!(r.read_all().await.unwrap(), r.volume, "{level}");
        assert!(r.array.cool_parity_map(Duration::ZERO).await.unwrap());
    }
}

#[tokio::test]
async fn a_clean_region_never_moves_the_watermark_of_a_column_reconstructing_onto_a_blank() {
    let r = rig_with_stripe_regions(RaidLevel::Raid5, 32);
    r.array.fail_component(2).await.unwrap();
    let _spare = r.onto(2, "spare").await;
    let only: ColumnSet = [2].into_iter().collect();
    let at = r
        .array
        .advance_clean(&only, 0..r.layout.stripes())
        .await
        .unwrap();
    assert_eq!(at, r.layout.stripes(), "the map is clean everywhere");
    assert_eq!(r.array.states().recovered()[2], 0, "a blank holds nothing");
}

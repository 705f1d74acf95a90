//! Builders against a plain model: for every layout, random byte ranges, random failed and
//! unreadable columns, every DAG that selection picks is built, run over in-memory components,
//! and checked: reads return the model's bytes, writes leave every live column exactly as the
//! model says (data, parity, Q, mirrors), failed columns are never written, and nothing lost is
//! ever read (lost columns hold garbage, so reading them would give wrong bytes).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BuildError, ColumnFaults, DagFamily, StripeRequest, build};
use crate::dag::ComponentTable;
use crate::dag::select::{AccessKind, select};
use crate::engine::{Direction, Engine};
use crate::io::ComponentIo;
use crate::layout::{ColumnSet, Geometry, Layout, RaidLevel, UnitRole};
use crate::testing::MemComponent;
use crate::testing::reference::column_images;

const BS: u32 = 8;
const UNIT_BLOCKS: u64 = 3;
/// Four stripes and one unused block per column.
const BLOCKS: u64 = 4 * UNIT_BLOCKS + 1;

struct Array {
    layout: Layout,
    volume: Vec<u8>,
    mems: Vec<Arc<MemComponent>>,
    table: ComponentTable,
}

fn array(level: RaidLevel, columns: usize, seed: u64) -> Array {
    crate::engine::tests::capture::install_router();
    let layout = Layout::new(
        level,
        Geometry::new(columns, UNIT_BLOCKS, u64::from(BS), BLOCKS).unwrap(),
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
    Array {
        layout,
        volume,
        mems,
        table,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    crate::engine::tests::capture::install_router();
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Whether the access must be served: losses within what the layout covers for it.
fn must_succeed(
    layout: &Layout,
    access: &crate::layout::StripeAccess,
    faults: &ColumnFaults,
) -> bool {
    let lost = |c: usize| !faults.readable(c);
    match layout.level() {
        RaidLevel::Raid0 => access.units.iter().all(|u| !lost(u.column)),
        RaidLevel::Raid1 => access
            .units
            .iter()
            .all(|u| !lost(u.column) || u.mirror_column.is_some_and(|m| !lost(m))),
        _ => (0..layout.columns()).filter(|&c| lost(c)).count() <= layout.fault_tolerance(),
    }
}

#[derive(Debug, Clone)]
struct Case {
    level: RaidLevel,
    columns: usize,
    offset: u64,
    len: u64,
    write: bool,
    failed: Vec<usize>,
    unreadable: Vec<usize>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(RaidLevel::ALL.to_vec()),
        0usize..4,
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        prop::collection::vec(0usize..8, 0..3),
        prop::collection::vec(0usize..8, 0..3),
        any::<u64>(),
    )
        .prop_map(
            |(level, extra, offset, len, write, failed, unreadable, seed)| {
                let columns = match level {
                    RaidLevel::Raid1 => 2 + 2 * (extra % 3),
                    _ => level.min_columns() + extra,
                };
                Case {
                    level,
                    columns,
                    offset,
                    len,
                    write,
                    failed: failed.into_iter().filter(|&c| c < columns).collect(),
                    unreadable: unreadable.into_iter().filter(|&c| c < columns).collect(),
                    seed,
                }
            },
        )
}

fn run_case(c: &Case) -> Result<(), TestCaseError> {
    let a = array(c.level, c.columns, c.seed);
    let cap = a.layout.capacity();
    let offset = c.offset % cap;
    // Mostly short accesses, sometimes long ones.
    let max = cap - offset;
    let len = 1 + if c.len.is_multiple_of(4) {
        c.len % max
    } else {
        c.len % max.min(40)
    };
    let map = a.layout.map(offset, len).unwrap();
    let faults = ColumnFaults {
        failed: c.failed.iter().copied().collect(),
        unreadable: c.unreadable.iter().copied().collect::<ColumnSet>(),
    };
    let bs = u64::from(BS);
    // Lost columns hold garbage: failed ones everywhere, unreadable ones over every touched hull.
    for col in faults.failed.iter() {
        let size = (BLOCKS * bs) as usize;
        a.mems[col].poke(0, &vec![0xee; size]);
    }
    for col in faults
        .unreadable
        .iter()
        .filter(|&col| !faults.failed.contains(col))
    {
        for s in &map.stripes {
            let hull = s.layout.component_blocks_of(s.unit_blocks.clone()).unwrap();
            let bytes = hull.bytes(bs);
            let garbage = vec![0x5a; (bytes.end - bytes.start) as usize];
            a.mems[col].poke(bytes.start as usize, &garbage);
        }
    }
    let before: Vec<Vec<u8>> = a.mems.iter().map(|m| m.contents()).collect();
    let mut rng = StdRng::seed_from_u64(c.seed ^ 0x9e37);
    let data: Bytes = (0..len)
        .map(|_| rng.random::<u8>())
        .collect::<Vec<_>>()
        .into();
    let mut expect_volume = a.volume.clone();
    if c.write {
        expect_volume[offset as usize..(offset + len) as usize].copy_from_slice(&data);
    }
    let kind = if c.write {
        AccessKind::Write
    } else {
        AccessKind::Read
    };
    let engine = Engine::default();
    let rt = runtime();
    let mut served = Vec::new();
    for s in &map.stripes {
        let req = StripeRequest {
            layout: &a.layout,
            access: s,
            components: &a.table,
            faults: &faults,
            data: c.write.then_some(&data),
            load: &[],
            in_sync: true,
            repair: false,
        };
        let built = select(&a.layout, s, kind, &faults).and_then(|f| build(f, &req));
        let must = must_succeed(&a.layout, s, &faults);
        let built = match built {
            Ok(b) => b,
            Err(BuildError::Unrecoverable { .. }) if !must => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("stripe {}: {e}", s.stripe))),
        };
        prop_assert_eq!(built.family.is_write(), c.write);
        let family = built.family;
        let result = rt.block_on(engine.execute(built.dag));
        prop_assert_eq!(result.direction(), Direction::Forward, "{}", family);
        for p in &built.pieces {
            served.extend_from_slice(&result.buffer(p.slot).unwrap()[p.range.clone()]);
        }
    }
    if !c.write {
        prop_assert_eq!(
            served.as_slice(),
            &a.volume[offset as usize..(offset + len) as usize]
        );
    }
    let expect = column_images(&a.layout, &expect_volume);
    for (col, mem) in a.mems.iter().enumerate() {
        let now = mem.contents();
        if faults.failed.contains(col) {
            prop_assert!(now == before[col], "failed column {} was written", col);
        } else if !faults.unreadable.contains(col) {
            if c.write {
                prop_assert!(now == expect[col], "column {} differs from the model", col);
            } else {
                prop_assert!(now == before[col], "a read changed column {}", col);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_selected_dag_serves_the_model(c in case()) {
        run_case(&c)?;
    }
}

/// Runs one stripe access with `faults`, returning the DAG family and its result.
fn run_one(
    a: &Array,
    offset: u64,
    data: Option<&Bytes>,
    len: u64,
    faults: &ColumnFaults,
) -> (DagFamily, Vec<u8>) {
    let map = a.layout.map(offset, len).unwrap();
    assert_eq!(map.stripes.len(), 1);
    let s = &map.stripes[0];
    let kind = if data.is_some() {
        AccessKind::Write
    } else {
        AccessKind::Read
    };
    let req = StripeRequest {
        layout: &a.layout,
        access: s,
        components: &a.table,
        faults,
        data,
        load: &[],
        in_sync: true,
        // Reads here run as the pipeline's repair pass does (rebuilt blocks written back).
        repair: data.is_none(),
    };
    let family = select(&a.layout, s, kind, faults).unwrap();
    let built = build(family, &req).unwrap();
    let result = runtime().block_on(Engine::default().execute(built.dag));
    assert_eq!(result.direction(), Direction::Forward);
    let mut out = BytesMut::new();
    for p in &built.pieces {
        out.extend_from_slice(&result.buffer(p.slot).unwrap()[p.range.clone()]);
    }
    (family, out.to_vec())
}

#[test]
fn a_degraded_read_repairs_the_unreadable_copy() {
    // RAID 5 over 4 columns; stripe 0: data units 0, 1, 2 on columns 0, 1, 2, P on column 3.
    let a = array(RaidLevel::Raid5, 4, 7);
    let bs = u64::from(BS);
    assert_eq!(
        a.layout.stripe(0).unwrap().role_of(1),
        Some(UnitRole::Data { index: 1 })
    );
    let unit = a.layout.unit_bytes();
    let good = a.mems[1].contents();
    a.mems[1].poke(0, &vec![0; (UNIT_BLOCKS * bs) as usize]);
    let faults = ColumnFaults {
        failed: ColumnSet::new(),
        unreadable: [1].into_iter().collect(),
    };
    let (family, bytes) = run_one(&a, unit + 3, None, 10, &faults);
    assert_eq!(family, DagFamily::DegradedRead);
    assert_eq!(bytes, a.volume[(unit + 3) as usize..(unit + 13) as usize]);
    // The rebuilt hull (the unit's first two blocks) is back on column 1.
    let hull = 0..(2 * bs) as usize;
    assert_eq!(a.mems[1].contents()[hull.clone()], good[hull]);
}

#[test]
fn a_failed_column_is_never_written_and_the_write_still_lands_in_parity() {
    let a = array(RaidLevel::Raid5, 4, 9);
    let faults = ColumnFaults::failed([1].into_iter().collect());
    let unit = a.layout.unit_bytes();
    let data = Bytes::from(vec![0xab; 5]);
    let (family, _) = run_one(&a, unit + 2, Some(&data), 5, &faults);
    assert_eq!(family, DagFamily::DegradedWrite);
    // Reading the same bytes back degraded gives the new data (rebuilt from P).
    let (family, bytes) = run_one(&a, unit + 2, None, 5, &faults);
    assert_eq!(family, DagFamily::DegradedRead);
    assert_eq!(bytes, vec![0xab; 5]);
}

#[test]
fn raid6_double_failure_reads_every_data_pair() {
    let a = array(RaidLevel::Raid6, 6, 11);
    let unit = a.layout.unit_bytes();
    let sl = a.layout.stripe(0).unwrap();
    for x in 0..4 {
        for y in x + 1..4 {
            let faults = ColumnFaults::failed(
                [sl.data_column(x).unwrap(), sl.data_column(y).unwrap()]
                    .into_iter()
                    .collect(),
            );
            let (family, bytes) = run_one(&a, x as u64 * unit, None, unit, &faults);
            assert_eq!(family, DagFamily::DegradedRead);
            let start = (x as u64 * unit) as usize;
            assert_eq!(bytes, a.volume[start..start + unit as usize], "D{x}+D{y}");
        }
    }
}

/// RAID 6, every loss pattern of up to two columns (data+data, data+P, data+Q, P+Q, one, none),
/// on every stripe of the rotation, as failures and as data loss: a whole-stripe read, then an
/// unaligned write, then the whole stripe again, all checked against the model.
#[test]
fn raid6_every_loss_pattern_of_up_to_two_columns() {
    for columns in [4, 5, 6] {
        let mut patterns: Vec<Vec<usize>> = vec![vec![]];
        for x in 0..columns {
            patterns.push(vec![x]);
            for y in x + 1..columns {
                patterns.push(vec![x, y]);
            }
        }
        for lost in &patterns {
            for as_failure in [true, false] {
                let a = array(RaidLevel::Raid6, columns, 3);
                let set: ColumnSet = lost.iter().copied().collect();
                let faults = if as_failure {
                    ColumnFaults::failed(set)
                } else {
                    ColumnFaults {
                        failed: ColumnSet::new(),
                        unreadable: set,
                    }
                };
                let sb = a.layout.stripe_data_bytes();
                for stripe in 0..a.layout.stripes() {
                    let start = stripe * sb;
                    let what = format!("{columns} columns, lost {lost:?}, stripe {stripe}");
                    let (_, bytes) = run_one(&a, start, None, sb, &faults);
                    let expect = &a.volume[start as usize..(start + sb) as usize];
                    assert_eq!(bytes, expect, "{what}: read");
                    let data = Bytes::from(vec![stripe as u8 ^ 0xc3; (sb / 2) as usize]);
                    run_one(&a, start + 5, Some(&data), sb / 2, &faults);
                    let (_, bytes) = run_one(&a, start, None, sb, &faults);
                    let mut expect = expect.to_vec();
                    expect[5..5 + data.len()].copy_from_slice(&data);
                    assert_eq!(bytes, expect, "{what}: read after write");
                }
            }
        }
    }
}

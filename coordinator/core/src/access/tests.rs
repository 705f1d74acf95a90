//! The access pipeline over in-memory components: random concurrent workloads against a plain
//! reference with components failing at random moments, the fault matrix over every DAG family
//! and node, torn-stripe detection under concurrency, data-loss recovery, durable-state ordering,
//! and cancellation.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{AccessError, Array, ArrayConfig, InMemoryStates, StateRecorder};
use crate::array::{ArrayState, ComponentState, ComponentStates};
use crate::dag::builders::{ColumnFaults, DagFamily, StripeRequest, build};
use crate::dag::select::{AccessKind, select};
use crate::dag::{ComponentTable, Mnemonic};
use crate::engine::EngineConfig;
use crate::io::{ComponentIo, IoErrorKind};
use crate::layout::{ColumnSet, Geometry, Layout, RaidLevel};
use crate::testing::reference::{column_images, verify_columns};
use crate::testing::{Fault, FaultyComponent, Gate, IoLog, IoOp, MemComponent, Trigger};

const BS: u32 = 16;
const UNIT_BLOCKS: u64 = 4;
const STRIPES: u64 = 8;

struct Rig {
    layout: Layout,
    volume: Vec<u8>,
    images: Vec<Vec<u8>>,
    mems: Vec<Arc<MemComponent>>,
    faulty: Vec<Arc<FaultyComponent>>,
    log: IoLog,
    array: Arc<Array>,
}

fn columns_for(level: RaidLevel) -> usize {
    match level {
        RaidLevel::Raid1 => 4,
        _ => level.min_columns() + 1,
    }
}

fn rig_with(
    level: RaidLevel,
    columns: usize,
    seed: u64,
    failed: &[usize],
    recorder: Arc<dyn StateRecorder>,
) -> Rig {
    crate::engine::tests::capture::install_router();
    let layout = Layout::new(
        level,
        Geometry::new(
            columns,
            UNIT_BLOCKS,
            u64::from(BS),
            STRIPES * UNIT_BLOCKS + 1,
        )
        .unwrap(),
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let volume: Vec<u8> = (0..layout.capacity()).map(|_| rng.random()).collect();
    let images = column_images(&layout, &volume);
    let log = IoLog::new();
    let mems: Vec<Arc<MemComponent>> = images
        .iter()
        .enumerate()
        .map(|(c, img)| MemComponent::with_contents(format!("c{c}"), BS, img.clone()))
        .collect();
    let faulty: Vec<Arc<FaultyComponent>> = mems
        .iter()
        .map(|m| FaultyComponent::new(m.clone() as Arc<dyn ComponentIo>, log.clone()))
        .collect();
    let table: ComponentTable = faulty
        .iter()
        .map(|f| f.clone() as Arc<dyn ComponentIo>)
        .collect::<Vec<_>>()
        .into();
    let mut states = vec![ComponentState::Optimal; columns];
    for &c in failed {
        states[c] = ComponentState::Failed;
    }
    let states = ComponentStates::from_states(&layout, states).unwrap();
    let config = ArrayConfig {
        engine: EngineConfig {
            node_deadline: Duration::from_secs(1),
        },
        ..ArrayConfig::default()
    };
    let array = Array::new(layout, table, states, config, recorder).unwrap();
    Rig {
        layout,
        volume,
        images,
        mems,
        faulty,
        log,
        array,
    }
}

fn rig(level: RaidLevel, seed: u64, failed: &[usize]) -> Rig {
    rig_with(
        level,
        columns_for(level),
        seed,
        failed,
        Arc::new(InMemoryStates),
    )
}

impl Rig {
    fn contents(&self) -> Vec<Vec<u8>> {
        self.mems.iter().map(|m| m.contents()).collect()
    }

    /// Parity, Q and mirrors agree with the data on every live column, except in lost stripes.
    fn assert_consistent(&self) {
        let skip = self.array.states().failed_columns();
        if let Err(errors) = verify_columns(&self.layout, &self.contents(), &skip) {
            let lost: Vec<String> = self
                .array
                .lost_stripes()
                .iter()
                .map(|s| format!("stripe {s}:"))
                .collect();
            let real: Vec<&String> = errors
                .iter()
                .filter(|e| !lost.iter().any(|l| e.starts_with(l)))
                .collect();
            assert!(real.is_empty(), "inconsistent: {real:?}");
        }
    }
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Bytes {
    (0..len)
        .map(|_| rng.random::<u8>())
        .collect::<Vec<_>>()
        .into()
}

// ------------------------------------------------------------------ random concurrent workloads

/// Workers own disjoint byte segments (cut at random, so two workers share blocks and stripes),
/// write and read random sub-ranges of them, and check every read against the reference. At a
/// random moment up to `failures` columns start failing every call.
async fn workload(level: RaidLevel, seed: u64, failures: usize) {
    let r = rig(level, seed, &[]);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xabcdef);
    let cap = r.layout.capacity();
    let workers = 4usize;
    let mut segments: Vec<Vec<(u64, u64)>> = vec![Vec::new(); workers];
    let mut pos = 0;
    let mut w = 0;
    while pos < cap {
        let len = rng
            .random_range(1..=3 * r.layout.unit_bytes())
            .min(cap - pos);
        segments[w % workers].push((pos, len));
        pos += len;
        w += 1;
    }
    let reference = Arc::new(Mutex::new(r.volume.clone()));
    let ops = Arc::new(AtomicU64::new(0));
    let total_ops = 120u64;
    let mut fail_plan: Vec<(u64, usize)> = Vec::new();
    let mut cols: Vec<usize> = (0..r.layout.columns()).collect();
    for _ in 0..failures {
        let c = cols.remove(rng.random_range(0..cols.len()));
        // RAID 1: never both copies of a pair.
        if level == RaidLevel::Raid1 {
            cols.retain(|&o| o / 2 != c / 2);
        }
        fail_plan.push((rng.random_range(0..total_ops * workers as u64), c));
    }
    let fail_plan = Arc::new(fail_plan);
    let mut tasks = Vec::new();
    for (w, segs) in segments.into_iter().enumerate() {
        let array = r.array.clone();
        let reference = reference.clone();
        let ops = ops.clone();
        let faulty = r.faulty.clone();
        let fail_plan = fail_plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * 31 + w as u64);
            for _ in 0..total_ops {
                let n = ops.fetch_add(1, Ordering::Relaxed);
                for &(at, c) in fail_plan.iter() {
                    if at == n {
                        faulty[c].inject(Trigger::always(), Fault::Fail(IoErrorKind::Unavailable));
                    }
                }
                let (seg_start, seg_len) = segs[rng.random_range(0..segs.len())];
                let off = rng.random_range(0..seg_len);
                let len = rng.random_range(1..=seg_len - off);
                let offset = seg_start + off;
                if rng.random_bool(0.6) {
                    let data = random_bytes(&mut rng, len as usize);
                    array
                        .write(offset, data.clone())
                        .await
                        .unwrap_or_else(|e| panic!("{level} write {offset}+{len}: {e}"));
                    reference.lock().unwrap()[offset as usize..(offset + len) as usize]
                        .copy_from_slice(&data);
                } else {
                    let (got, _) = array
                        .read(offset, len)
                        .await
                        .unwrap_or_else(|e| panic!("{level} read {offset}+{len}: {e}"));
                    let expect = reference.lock().unwrap()
                        [offset as usize..(offset + len) as usize]
                        .to_vec();
                    assert_eq!(
                        got.into_bytes().as_ref(),
                        expect.as_slice(),
                        "{level} read {offset}+{len}"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Everything reads back, and the redundancy of the survivors is consistent.
    let (all, _) = r.array.read(0, cap).await.unwrap();
    assert!(
        all.into_bytes().as_ref() == reference.lock().unwrap().as_slice(),
        "{level} final read"
    );
    r.assert_consistent();
    let failed = r.array.states().failed_columns();
    for &(_, c) in fail_plan.iter() {
        let hit = r
            .log
            .records()
            .iter()
            .any(|rec| rec.component == format!("c{c}") && rec.fault.is_some());
        assert_eq!(
            failed.contains(c),
            hit,
            "{level}: column {c} failed iff a call hit the fault"
        );
    }
    assert!(failed.len() <= failures);
    if failed.is_empty() {
        assert_eq!(r.array.array_state(), ArrayState::Optimal);
    } else {
        assert_eq!(r.array.array_state(), ArrayState::Degraded);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workloads_fault_free() {
    for level in RaidLevel::ALL {
        for seed in 0..6 {
            workload(level, seed, 0).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workloads_with_one_failure() {
    for level in [
        RaidLevel::Raid1,
        RaidLevel::Raid4,
        RaidLevel::Raid5,
        RaidLevel::Raid6,
    ] {
        for seed in 10..18 {
            workload(level, seed, 1).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workloads_with_two_failures_on_raid6() {
    for seed in 20..30 {
        workload(RaidLevel::Raid6, seed, 2).await;
    }
}

// ------------------------------------------------------------------ the fault matrix

/// One access of the matrix: the array's failed columns and the access.
#[derive(Debug, Clone)]
struct Scenario {
    level: RaidLevel,
    failed: Vec<usize>,
    write: bool,
    offset: u64,
    len: u64,
}

fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for level in RaidLevel::ALL {
        let r = rig(level, 0, &[]);
        let unit = r.layout.unit_bytes();
        let stripe = r.layout.stripe_data_bytes();
        // All inside stripe 1; unaligned pieces force partial-block read-modify-writes.
        let ranges = [
            (stripe + 3, 10),
            (stripe + unit - 5, 10),
            (stripe, stripe),
            (stripe + 16, stripe - 32),
        ];
        let mut failed_sets: Vec<Vec<usize>> = vec![vec![]];
        if level != RaidLevel::Raid0 {
            failed_sets.extend((0..r.layout.columns()).map(|c| vec![c]));
        }
        if level == RaidLevel::Raid6 {
            // Stripe 1 of five columns: P on column 3, Q on 4, data on 0, 1, 2.
            failed_sets.extend([vec![0, 1], vec![1, 3], vec![2, 4], vec![3, 4]]);
        }
        for failed in &failed_sets {
            for &(offset, len) in &ranges {
                for write in [false, true] {
                    out.push(Scenario {
                        level,
                        failed: failed.clone(),
                        write,
                        offset,
                        len,
                    });
                }
            }
        }
    }
    out
}

/// The disk nodes `(mnemonic, column)` of every DAG the scenario's stripe would run first.
fn disk_nodes(r: &Rig, s: &Scenario) -> (DagFamily, Vec<(Mnemonic, usize)>) {
    let map = r.layout.map(s.offset, s.len).unwrap();
    let access = &map.stripes[0];
    let faults = ColumnFaults::failed(s.failed.iter().copied().collect());
    let data = Bytes::from(vec![0u8; s.len as usize]);
    let kind = if s.write {
        AccessKind::Write
    } else {
        AccessKind::Read
    };
    let family = select(&r.layout, access, kind, &faults).unwrap();
    let req = StripeRequest {
        layout: &r.layout,
        access,
        components: &r.array.components(),
        faults: &faults,
        data: s.write.then_some(&data),
        load: &[],
        in_sync: true,
        repair: false,
    };
    let built = build(family, &req).unwrap();
    let nodes = built
        .dag
        .nodes()
        .iter()
        .filter_map(|n| n.op().target().map(|t| (n.mnemonic(), t.component)))
        .collect();
    (family, nodes)
}

fn fault_kinds() -> Vec<(&'static str, Fault)> {
    vec![
        ("unavailable", Fault::Fail(IoErrorKind::Unavailable)),
        ("timeout", Fault::Fail(IoErrorKind::Timeout)),
        (
            "component_failed",
            Fault::Fail(IoErrorKind::ComponentFailed),
        ),
        ("other", Fault::Fail(IoErrorKind::Other)),
        (
            "data_loss",
            Fault::Fail(IoErrorKind::DataLoss { bad_blocks: vec![] }),
        ),
        ("hang", Fault::Hang),
        ("late_apply", Fault::LateApply(Gate::new())),
    ]
}

#[tokio::test(start_paused = true)]
async fn fault_matrix_every_family_every_node_every_fault() {
    let mut families = BTreeSet::new();
    let mut runs = 0;
    for s in scenarios() {
        let probe = rig(s.level, 1, &s.failed);
        let (family, nodes) = disk_nodes(&probe, &s);
        families.insert((s.level.to_string(), family.name()));
        for &(mnemonic, column) in &nodes {
            for (fault_name, fault) in fault_kinds() {
                let what =
                    format!("{s:?} {family} fault {fault_name} at {mnemonic} on column {column}");
                run_fault(&s, mnemonic, column, fault, &what).await;
                runs += 1;
            }
        }
    }
    // Every family of every level was exercised.
    for (level, fam) in [
        ("RAID 0", "ff_read"),
        ("RAID 0", "nonredundant_write"),
        ("RAID 1", "mirror_read"),
        ("RAID 1", "mirror_write"),
        ("RAID 5", "ff_read"),
        ("RAID 5", "degraded_read"),
        ("RAID 5", "small_write"),
        ("RAID 5", "large_write"),
        ("RAID 5", "degraded_write"),
        ("RAID 5", "nonredundant_write"),
        ("RAID 4", "degraded_write"),
        ("RAID 6", "ff_read"),
        ("RAID 6", "degraded_read"),
        ("RAID 6", "degraded_write"),
        ("RAID 6", "small_write"),
        ("RAID 6", "large_write"),
        ("RAID 6", "nonredundant_write"),
    ] {
        assert!(
            families.contains(&(level.to_owned(), fam)),
            "{level} {fam} not covered"
        );
    }
    assert!(runs > 1000, "{runs} runs");
}

async fn run_fault(s: &Scenario, mnemonic: Mnemonic, column: usize, fault: Fault, what: &str) {
    let r = rig(s.level, 1, &s.failed);
    let gate = match &fault {
        Fault::LateApply(g) => Some(g.clone()),
        _ => None,
    };
    let op = if mnemonic.is_write() {
        IoOp::Write
    } else {
        IoOp::Read
    };
    r.faulty[column].inject(Trigger::node(mnemonic).op(op).times(1), fault.clone());
    let range = s.offset as usize..(s.offset + s.len) as usize;
    let old = r.volume[range.clone()].to_vec();
    let new: Vec<u8> = old.iter().map(|b| b ^ 0xff).collect();
    let stripe = r.layout.map(s.offset, s.len).unwrap().stripes[0].clone();

    let result = if s.write {
        r.array
            .write(s.offset, Bytes::from(new.clone()))
            .await
            .map(|_| Vec::new())
    } else {
        r.array
            .read(s.offset, s.len)
            .await
            .map(|(d, _)| d.into_bytes().to_vec())
    };
    if let Some(g) = gate {
        g.open();
        // Let the late write land.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let failed_now = r.array.states().failed_columns();
    let is_data_loss = matches!(fault, Fault::Fail(IoErrorKind::DataLoss { .. }));
    // Data loss on a read never fails the component.
    if is_data_loss && !mnemonic.is_write() {
        assert!(
            !failed_now.contains(column),
            "{what}: data loss failed the column"
        );
    }
    match &result {
        Ok(bytes) if !s.write => assert_eq!(bytes, &old, "{what}: read served wrong bytes"),
        Ok(_) => {}
        Err(AccessError::Unrecoverable {
            offset, len, torn, ..
        }) => {
            // Only when the layout had no tolerance left for this column.
            assert_eq!(
                (*offset, *len),
                (
                    stripe.volume_range.start,
                    stripe.volume_range.end - stripe.volume_range.start
                ),
                "{what}: the error names the stripe's bytes"
            );
            let tolerance_left = {
                let mut f: ColumnSet = s.failed.iter().copied().collect();
                f.insert(column);
                r.layout.tolerates(&f)
            };
            assert!(
                !tolerance_left || is_data_loss,
                "{what}: unrecoverable although tolerated: {result:?}"
            );
            assert_eq!(
                *torn,
                r.array.lost_stripes().contains(&stripe.stripe),
                "{what}"
            );
        }
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
    // Read the range back: all old or all new, never a mix; all new if acknowledged.
    match r.array.read(s.offset, s.len).await {
        Ok((d, _)) => {
            let got = d.into_bytes().to_vec();
            if s.write && result.is_ok() {
                assert_eq!(got, new, "{what}: acknowledged write not read back");
            } else {
                assert!(got == old || got == new, "{what}: torn stripe read back");
            }
        }
        Err(AccessError::Unreadable { .. }) => {
            assert!(result.is_err(), "{what}: acknowledged write unreadable");
        }
        Err(AccessError::Unrecoverable { .. }) => {
            assert!(result.is_err() || !s.write, "{what}");
        }
        Err(e) => panic!("{what}: read back failed: {e}"),
    }
    // No other stripe changed on any live column.
    let unit = r.layout.unit_bytes() as usize;
    for (c, now) in r.contents().iter().enumerate() {
        if failed_now.contains(c) {
            continue;
        }
        for st in (0..STRIPES as usize).filter(|&st| st as u64 != stripe.stripe) {
            let span = st * unit..(st + 1) * unit;
            assert!(
                now[span.clone()] == r.images[c][span],
                "{what}: stripe {st} changed on column {c}"
            );
        }
    }
    r.assert_consistent();
}

// ------------------------------------------------------------------ torn stripes under concurrency

/// Writers fill whole stripes with one version byte per access; readers of unaligned ranges
/// across those stripes must see every stripe uniform: never part of one write and part of
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_writers_and_readers_never_see_a_torn_stripe() {
    for level in RaidLevel::ALL {
        let r = rig(level, 5, &[]);
        let sb = r.layout.stripe_data_bytes();
        let stripes = 4u64;
        r.array
            .write(0, Bytes::from(vec![0u8; (stripes * sb) as usize]))
            .await
            .unwrap();
        let version = Arc::new(AtomicU64::new(1));
        let mut tasks = Vec::new();
        for w in 0..6u64 {
            let array = r.array.clone();
            let version = version.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w);
                for _ in 0..60 {
                    if w % 2 == 0 {
                        let first = rng.random_range(0..stripes);
                        let n = rng.random_range(1..=(stripes - first).min(2));
                        let v = version.fetch_add(1, Ordering::Relaxed) as u8;
                        array
                            .write(first * sb, Bytes::from(vec![v; (n * sb) as usize]))
                            .await
                            .unwrap();
                    } else {
                        let offset = rng.random_range(0..stripes * sb - 1);
                        let len = rng.random_range(1..=(stripes * sb - offset).min(2 * sb));
                        let (d, _) = array.read(offset, len).await.unwrap();
                        let bytes = d.into_bytes();
                        for (i, chunk) in bytes.chunks(1).enumerate() {
                            let pos = offset + i as u64;
                            let stripe_start = (pos / sb * sb).max(offset);
                            let first = bytes[(stripe_start - offset) as usize];
                            assert_eq!(chunk[0], first, "{level}: torn stripe {} read", pos / sb);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        r.assert_consistent();
    }
}

// ------------------------------------------------------------------ data loss

#[tokio::test]
async fn data_loss_on_a_read_is_rebuilt_and_rewritten_not_failed() {
    let r = rig(RaidLevel::Raid5, 3, &[]);
    let (offset, len) = (100, 50);
    let loc = r.layout.locate(offset).unwrap();
    let col = loc.column;
    let bad = loc.component_offset / u64::from(BS);
    r.faulty[col].inject(
        Trigger::always().op(IoOp::Read).times(1),
        Fault::Fail(IoErrorKind::DataLoss {
            bad_blocks: vec![bad],
        }),
    );
    let (d, report) = r.array.read(offset, len).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), &r.volume[100..150]);
    let families: Vec<_> = report.dags.iter().map(|d| d.family).collect();
    assert_eq!(
        families,
        [DagFamily::FaultFreeRead, DagFamily::DegradedRead]
    );
    assert_eq!(r.array.array_state(), ArrayState::Optimal);
    // The bad block, and only it, was written back to the column that lost it (issue 17,
    // item 3: before, the whole hull of the column under the read's shared lock).
    let repairs: Vec<(u64, u64)> = r
        .log
        .writes()
        .iter()
        .filter(|w| {
            w.component == format!("c{col}") && w.issuer.is_some_and(|i| i.mnemonic == Mnemonic::W)
        })
        .map(|w| (w.start_block, w.block_count))
        .collect();
    assert_eq!(repairs, vec![(bad, 1)]);
    r.assert_consistent();
}

#[tokio::test]
async fn the_counters_see_every_dag_firing_and_retry() {
    use crate::engine::Direction;
    let r = rig(RaidLevel::Raid5, 5, &[]);
    let st = r.array.stats();
    let fam = |f: DagFamily| DagFamily::ALL.iter().position(|x| *x == f).unwrap();
    let dir = |d: Direction| Direction::ALL.iter().position(|x| *x == d).unwrap();
    let e = r.array.engine_stats();
    // A fault-free small write: one DAG forward, every node fired once.
    r.array.write(0, Bytes::from(vec![1u8; 16])).await.unwrap();
    assert_eq!(
        st.dag_outcomes[fam(DagFamily::SmallWrite)][dir(Direction::Forward)]
            .load(Ordering::Relaxed),
        1
    );
    for m in [
        Mnemonic::Rod,
        Mnemonic::Rop,
        Mnemonic::Xor,
        Mnemonic::Cmt,
        Mnemonic::Wnd,
    ] {
        assert_eq!(e.firings(m, false, false), 1, "{m}");
    }
    // Rod fails: the first DAG rolls back (Rod failed, the other reads undone), the retry is a
    // degraded write.
    let col = r.layout.locate(0).unwrap().column;
    r.faulty[col].inject(
        Trigger::node(Mnemonic::Rod).times(1),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    let report = r.array.write(0, Bytes::from(vec![2u8; 16])).await.unwrap();
    assert_eq!(report.retries(), 1);
    assert_eq!(e.firings(Mnemonic::Rod, false, true), 1);
    assert_eq!(e.firings(Mnemonic::Rop, true, false), 1, "Rop undone");
    assert_eq!(
        e.firings(Mnemonic::Nil, true, false),
        1,
        "the header undone"
    );
    assert_eq!(
        st.dag_outcomes[fam(DagFamily::SmallWrite)][dir(Direction::RolledBackward)]
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        st.dag_outcomes[fam(DagFamily::DegradedWrite)][dir(Direction::Forward)]
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(st.writes.load(Ordering::Relaxed), 2);
    assert_eq!(st.write_latency.snapshot().count(), 2);
    assert_eq!(e.dags_in_flight(), 0);
    r.array.read(0, 16).await.unwrap();
    r.array.flush().await.unwrap();
    assert_eq!(st.read_latency.snapshot().count(), 1);
    assert_eq!(st.flushes.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn raid0_data_loss_is_an_error_naming_the_range() {
    let r = rig(RaidLevel::Raid0, 3, &[]);
    r.faulty[0].inject(
        Trigger::always().op(IoOp::Read),
        Fault::Fail(IoErrorKind::DataLoss {
            bad_blocks: vec![0],
        }),
    );
    let err = r.array.read(0, 20).await.unwrap_err();
    assert!(
        matches!(
            err,
            AccessError::Unrecoverable {
                offset: 0,
                len: 20,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("bytes 0..20 cannot be served"),
        "{err}"
    );
}

// ------------------------------------------------------------------ more failures than tolerated

#[tokio::test]
async fn a_post_commit_write_failure_without_tolerance_is_an_error_and_the_stripe_is_lost() {
    let r = rig(RaidLevel::Raid5, 4, &[0]);
    // Stripe 0 has parity on column 3; a small write at volume offset 16*4 (unit 1, column 1).
    let offset = r.layout.unit_bytes();
    r.faulty[3].inject(
        Trigger::node(Mnemonic::Wnp),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    // Its node is down: the fence before a redo does not answer either.
    r.faulty[3].inject(
        Trigger::always().op(IoOp::Fence),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    let err = r
        .array
        .write(offset, Bytes::from_static(b"hello"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AccessError::Unrecoverable { torn: true, .. }),
        "{err}"
    );
    assert_eq!(r.array.lost_stripes(), vec![0]);
    let read = r.array.read(offset, 5).await.unwrap_err();
    assert_eq!(read, AccessError::Unreadable { offset, len: 5 });
    // Column 3 could not be failed: the layout has no tolerance left.
    assert_eq!(r.array.states().get(3), Some(ComponentState::Optimal));
    // Another stripe is still served; a full-stripe write makes stripe 0 whole again.
    r.faulty[3].clear();
    let sb = r.layout.stripe_data_bytes();
    assert!(r.array.read(sb, 10).await.is_ok());
    r.array
        .write(0, Bytes::from(vec![7u8; sb as usize]))
        .await
        .unwrap();
    assert!(r.array.lost_stripes().is_empty());
    let (d, _) = r.array.read(0, sb).await.unwrap();
    assert!(d.into_bytes().iter().all(|&b| b == 7));
    r.assert_consistent();
}

#[tokio::test]
async fn bad_ranges_are_refused_before_any_io() {
    let r = rig(RaidLevel::Raid5, 5, &[]);
    let cap = r.layout.capacity();
    assert!(matches!(
        r.array.read(cap - 1, 2).await,
        Err(AccessError::Layout(
            crate::layout::LayoutError::OutOfRange { .. }
        ))
    ));
    assert!(matches!(
        r.array.write(0, Bytes::new()).await,
        Err(AccessError::Layout(
            crate::layout::LayoutError::EmptyAccess { offset: 0 }
        ))
    ));
    assert!(r.log.records().is_empty());
}

// ------------------------------------------------------------------ durable states

#[derive(Debug, Default)]
struct CountingRecorder {
    recorded: Mutex<Vec<u64>>,
    last: Mutex<Option<ComponentStates>>,
    fail: std::sync::atomic::AtomicBool,
    calls: AtomicUsize,
}

impl StateRecorder for CountingRecorder {
    fn record<'a>(&'a self, states: &'a ComponentStates) -> BoxFuture<'a, Result<(), String>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let r = if self.fail.load(Ordering::Relaxed) {
            Err("store unavailable".to_owned())
        } else {
            self.recorded.lock().unwrap().push(states.generation());
            *self.last.lock().unwrap() = Some(states.clone());
            Ok(())
        };
        Box::pin(std::future::ready(r))
    }
}

impl CountingRecorder {
    fn last_lost(&self) -> Vec<std::ops::Range<u64>> {
        self.last
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.lost().ranges().collect())
            .unwrap_or_default()
    }
}

/// Issue 16, item 2: the lost blocks of a torn stripe are durable before the torn write is
/// answered; a read of a lost block names the lost range; a partial write into the stripe never
/// reads its (torn) parity, clears only the blocks it covers whole, and durably.
#[tokio::test]
async fn lost_blocks_are_durable_named_and_cleared_only_by_whole_block_writes() {
    let recorder = Arc::new(CountingRecorder::default());
    let r = rig_with(RaidLevel::Raid5, 4, 4, &[], recorder.clone());
    let unit = r.layout.unit_bytes();
    let bs = u64::from(BS);
    let per_stripe = r.layout.stripe_data_bytes() / bs;
    // The parity write after the commit is refused (not a component fault): the data unit
    // landed, the parity did not, and no column can be failed for it: the stripe is torn.
    r.faulty[3].inject(
        Trigger::node(Mnemonic::Wnp),
        Fault::Fail(IoErrorKind::InvalidRequest),
    );
    let err = r
        .array
        .write(unit, Bytes::from_static(b"hello"))
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::StorageRefused { .. }), "{err}");
    assert_eq!(r.array.array_state(), ArrayState::Optimal);
    // Durable before the answer: the recorder has the whole stripe's data blocks.
    assert_eq!(recorder.last_lost(), vec![0..per_stripe]);
    r.faulty[3].clear();
    // A read that touches the lost stripe names the lost bytes within it.
    let sb = r.layout.stripe_data_bytes();
    let err = r.array.read(sb - 8, 16).await.unwrap_err();
    assert_eq!(
        err,
        AccessError::Unreadable {
            offset: sb - 8,
            len: 8
        }
    );
    // Rewrite block 1 whole and half of block 2: only block 1 is cleared.
    r.log.clear();
    let data = vec![0xabu8; (bs + bs / 2) as usize];
    r.array.write(bs, Bytes::from(data)).await.unwrap();
    let parity_reads = r
        .log
        .records()
        .iter()
        .filter(|x| x.component == "c3" && x.op == IoOp::Read)
        .count();
    assert_eq!(parity_reads, 0, "the torn parity was read by the write");
    assert_eq!(recorder.last_lost(), vec![0..1, 2..per_stripe]);
    let (d, _) = r.array.read(bs, bs).await.unwrap();
    assert!(d.into_bytes().iter().all(|&b| b == 0xab));
    assert_eq!(
        r.array.read(2 * bs, 1).await.unwrap_err(),
        AccessError::Unreadable {
            offset: 2 * bs,
            len: 1
        }
    );
    assert_eq!(
        r.array.read(0, 1).await.unwrap_err(),
        AccessError::Unreadable { offset: 0, len: 1 }
    );
    r.assert_consistent();
}

#[tokio::test]
async fn a_failure_is_recorded_before_the_write_is_acknowledged_or_the_write_fails() {
    let recorder = Arc::new(CountingRecorder::default());
    let r = rig_with(RaidLevel::Raid5, 4, 6, &[], recorder.clone());
    let col = r.layout.locate(0).unwrap().column;
    r.faulty[col].inject(
        Trigger::node(Mnemonic::Wnd),
        Fault::Fail(IoErrorKind::Timeout),
    );
    // The node is gone: the fence before a redo fails too, so the column is failed.
    r.faulty[col].inject(
        Trigger::always().op(IoOp::Fence).times(1),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    recorder.fail.store(true, Ordering::Relaxed);
    let err = r
        .array
        .write(0, Bytes::from_static(b"abc"))
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::StateNotRecorded { .. }), "{err}");
    // The column stays failed in memory (never serves again); the next access records it.
    assert_eq!(r.array.states().get(col), Some(ComponentState::Failed));
    recorder.fail.store(false, Ordering::Relaxed);
    r.array.write(0, Bytes::from_static(b"abc")).await.unwrap();
    assert_eq!(*recorder.recorded.lock().unwrap(), vec![1]);
    // Accesses with nothing new to record do not call the recorder.
    let calls = recorder.calls.load(Ordering::Relaxed);
    r.array.read(0, 3).await.unwrap();
    assert_eq!(recorder.calls.load(Ordering::Relaxed), calls);
    let (d, _) = r.array.read(0, 3).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), b"abc");
}

/// Issue 16, item 3 and 6: a DAG in which one column times out and another refuses the
/// request. The access fails, with its own kind (not Internal), but the timed-out column is
/// marked failed and that mark is durable before the answer.
#[tokio::test]
async fn an_access_that_fails_still_records_the_failures_it_saw() {
    let recorder = Arc::new(CountingRecorder::default());
    let r = rig_with(RaidLevel::Raid5, 4, 6, &[], recorder.clone());
    // A small write into stripe 0: Rod on the data column, Rop on the parity column.
    let data_col = r.layout.locate(0).unwrap().column;
    let parity_col = r.layout.columns() - 1;
    assert_ne!(data_col, parity_col);
    r.faulty[data_col].inject(
        Trigger::node(Mnemonic::Rod).times(1),
        Fault::Fail(IoErrorKind::Timeout),
    );
    r.faulty[parity_col].inject(
        Trigger::node(Mnemonic::Rop).times(1),
        Fault::Fail(IoErrorKind::InvalidRequest),
    );
    let err = r
        .array
        .write(0, Bytes::from_static(b"abc"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            AccessError::StorageRefused { column, kind: "invalid_request", .. } if *column == parity_col
        ),
        "{err}"
    );
    assert_eq!(r.array.states().get(data_col), Some(ComponentState::Failed));
    assert_eq!(
        *recorder.recorded.lock().unwrap(),
        vec![1],
        "the failure was recorded before the answer"
    );
    // Nothing was written (the DAG rolled backward): the volume still reads as before.
    let (d, _) = r.array.read(0, 3).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), &r.volume[..3]);
    r.assert_consistent();
}

/// Issue 16, item 6: a node of another cluster is a configuration error, not a component fault
/// and not fencing.
#[tokio::test]
async fn a_node_of_another_cluster_fails_the_access_and_nothing_else() {
    let recorder = Arc::new(CountingRecorder::default());
    let r = rig_with(RaidLevel::Raid5, 4, 6, &[], recorder.clone());
    let col = r.layout.locate(0).unwrap().column;
    r.faulty[col].inject(
        Trigger::always().op(IoOp::Read).times(1),
        Fault::Fail(IoErrorKind::WrongCluster),
    );
    let err = r.array.read(0, 3).await.unwrap_err();
    assert!(
        matches!(&err, AccessError::WrongCluster { column, .. } if *column == col),
        "{err}"
    );
    assert_eq!(r.array.array_state(), ArrayState::Optimal);
    assert!(recorder.recorded.lock().unwrap().is_empty());
}

#[tokio::test]
async fn admin_fail_refuses_beyond_tolerance_and_records() {
    let recorder = Arc::new(CountingRecorder::default());
    let r = rig_with(RaidLevel::Raid5, 4, 6, &[], recorder.clone());
    r.array.fail_component(2).await.unwrap();
    assert_eq!(r.array.array_state(), ArrayState::Degraded);
    assert!(matches!(
        r.array.fail_component(1).await,
        Err(AccessError::Array(
            crate::array::ArrayError::WouldExceedTolerance { column: 1, .. }
        ))
    ));
    assert_eq!(*recorder.recorded.lock().unwrap(), vec![1]);
    // The failed column is never read or written again.
    r.log.clear();
    let (d, _) = r.array.read(0, r.layout.capacity()).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), r.volume.as_slice());
    r.array.write(5, Bytes::from_static(b"xyz")).await.unwrap();
    assert!(r.log.records().iter().all(|rec| rec.component != "c2"));
}

// ------------------------------------------------------------------ cancellation and retries

#[tokio::test]
async fn dropping_the_caller_after_the_locks_does_not_tear_the_write() {
    let r = rig(RaidLevel::Raid5, 8, &[]);
    let gate = Gate::new();
    let sb = r.layout.stripe_data_bytes() as usize;
    // Hold the parity write of a full-stripe write of stripe 0 (parity on the last column).
    let p = r.layout.columns() - 1;
    r.faulty[p].inject(
        Trigger::node(Mnemonic::Wnp).times(1),
        Fault::HoldUntil(gate.clone()),
    );
    let array = r.array.clone();
    let write = tokio::spawn(async move { array.write(0, Bytes::from(vec![9u8; sb])).await });
    r.log
        .wait_until(|recs| recs.iter().any(|x| x.fault == Some("hold")))
        .await;
    write.abort();
    let _ = write.await;
    gate.open();
    // A read waits for the write's locks, then sees all of it.
    let (d, _) = r.array.read(0, sb as u64).await.unwrap();
    assert!(d.into_bytes().iter().all(|&b| b == 9));
    r.assert_consistent();
}

#[tokio::test(start_paused = true)]
async fn data_loss_on_both_copies_is_unrecoverable_not_a_failure() {
    let r = rig(RaidLevel::Raid1, 2, &[]);
    // Both copies keep answering data loss: every DAG rolls back, each copy becomes unreadable,
    // and the access ends with an error naming its bytes.
    for f in &r.faulty {
        f.inject(
            Trigger::always().op(IoOp::Read),
            Fault::Fail(IoErrorKind::DataLoss { bad_blocks: vec![] }),
        );
    }
    let err = r.array.read(0, 10).await.unwrap_err();
    assert!(
        matches!(
            err,
            AccessError::Unrecoverable {
                offset: 0,
                len: 10,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(r.array.array_state(), ArrayState::Optimal);
    assert_eq!(r.array.stats().rolled_backward.load(Ordering::Relaxed), 2);
}

// ------------------------------------------------------------------ resync

#[tokio::test]
async fn resync_makes_redundancy_agree_with_the_data_on_every_level() {
    for level in RaidLevel::ALL {
        let r = rig(level, 12, &[]);
        // Scribble over every redundancy unit (P, Q, mirror copies).
        let unit = r.layout.unit_bytes() as usize;
        for s in 0..r.layout.stripes() {
            let sl = r.layout.stripe(s).unwrap();
            for (column, role) in sl.units() {
                if !matches!(role, crate::layout::UnitRole::Data { .. }) {
                    r.mems[column].poke(s as usize * unit + 3, &[0xde, 0xad]);
                }
            }
        }
        if level != RaidLevel::Raid0 {
            assert!(verify_columns(&r.layout, &r.contents(), &ColumnSet::new()).is_err());
        }
        let done = Arc::new(AtomicU64::new(0));
        let seen = done.clone();
        let report = r
            .array
            .resync(move |n| {
                seen.fetch_max(n, Ordering::Relaxed);
            })
            .await
            .unwrap();
        assert_eq!(report.stripes, STRIPES, "{level}");
        assert_eq!(done.load(Ordering::Relaxed), STRIPES, "{level}");
        r.assert_consistent();
        let (d, _) = r.array.read(0, r.layout.capacity()).await.unwrap();
        assert_eq!(
            d.into_bytes().as_ref(),
            r.volume.as_slice(),
            "{level}: data changed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_runs_under_stripe_locks_beside_user_writes() {
    for level in [RaidLevel::Raid1, RaidLevel::Raid5, RaidLevel::Raid6] {
        let r = rig(level, 13, &[]);
        let array = r.array.clone();
        let resync = tokio::spawn(async move { array.resync(|_| {}).await });
        let mut rng = StdRng::seed_from_u64(13);
        let mut reference = r.volume.clone();
        for _ in 0..100 {
            let offset = rng.random_range(0..r.layout.capacity() - 1);
            let len = rng.random_range(1..=(r.layout.capacity() - offset).min(200));
            let data = random_bytes(&mut rng, len as usize);
            r.array.write(offset, data.clone()).await.unwrap();
            reference[offset as usize..(offset + len) as usize].copy_from_slice(&data);
        }
        resync.await.unwrap().unwrap();
        r.assert_consistent();
        let (d, _) = r.array.read(0, r.layout.capacity()).await.unwrap();
        assert!(d.into_bytes().as_ref() == reference.as_slice(), "{level}");
    }
}

#[tokio::test]
async fn resync_of_a_degraded_array_refuses_stripes_whose_data_is_lost() {
    let r = rig(RaidLevel::Raid5, 14, &[1]);
    let err = r.array.resync(|_| {}).await.unwrap_err();
    assert!(matches!(err, AccessError::Unrecoverable { .. }), "{err}");
    // Nothing was written to the failed column, and the data still reads back.
    assert!(r.log.writes().iter().all(|w| w.component != "c1"));
    let (d, _) = r.array.read(0, r.layout.capacity()).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), r.volume.as_slice());
}

// ------------------------------------------------------------------ resync over bad checksums
// Issue 16, item 5: a resync that meets a bad checksum repairs what redundancy allows and
// records the rest lost, and goes on.

/// Makes block `block` of data unit `index` of `stripe` bad (a checksum mismatch over garbage)
/// on its column (`mirror`: on the RAID 1 secondary instead); returns the column and the
/// volume block.
fn corrupt(r: &Rig, stripe: u64, index: usize, block: u64, mirror: bool) -> (usize, u64) {
    let sl = r.layout.stripe(stripe).unwrap();
    let column = if mirror {
        sl.mirror_column(index).unwrap()
    } else {
        sl.data_column(index).unwrap()
    };
    let component_block = stripe * UNIT_BLOCKS + block;
    r.mems[column].poke(
        (component_block * u64::from(BS)) as usize,
        &[0x5a; BS as usize],
    );
    r.mems[column].mark_bad(component_block);
    let volume_block =
        stripe * sl.data_units() as u64 * UNIT_BLOCKS + index as u64 * UNIT_BLOCKS + block;
    (column, volume_block)
}

/// Every stripe's redundancy agrees with its data, lost stripes included.
fn assert_fully_consistent(r: &Rig) {
    let skip = r.array.states().failed_columns();
    if let Err(errors) = verify_columns(&r.layout, &r.contents(), &skip) {
        panic!("inconsistent: {errors:?}");
    }
}

fn block_of(r: &Rig, column: usize, block: u64) -> Vec<u8> {
    r.mems[column].peek(block, 1)
}

#[tokio::test]
async fn resync_repairs_an_unreadable_raid1_primary_from_its_secondary() {
    let r = rig(RaidLevel::Raid1, 21, &[]);
    let bs = u64::from(BS);
    let (column, _) = corrupt(&r, 2, 1, 3, false);
    // Both copies bad: nothing to repair from.
    let (both_primary, both_block) = corrupt(&r, 4, 0, 1, false);
    let (both_secondary, _) = corrupt(&r, 4, 0, 1, true);
    let report = r.array.resync(|_| {}).await.unwrap();
    assert_eq!(
        (report.stripes, report.repaired, report.lost),
        (STRIPES, 1, 1)
    );
    // The bad primary was rewritten from the secondary.
    let cb = 2 * UNIT_BLOCKS + 3;
    assert!(
        r.mems[column].bad_blocks().is_empty(),
        "{:?}",
        r.mems[column].bad_blocks()
    );
    let good = &r.images[column][(cb * bs) as usize..((cb + 1) * bs) as usize];
    assert_eq!(block_of(&r, column, cb), good);
    // The pair with both copies bad is recorded lost (that block only) and made consistent.
    assert!(r.mems[both_primary].bad_blocks().is_empty());
    assert!(r.mems[both_secondary].bad_blocks().is_empty());
    let lost: Vec<_> = r.array.lost().ranges().collect();
    assert_eq!(lost, vec![both_block..both_block + 1]);
    assert_fully_consistent(&r);
    // Everything else reads back as it was.
    let (d, _) = r.array.read(0, both_block * bs).await.unwrap();
    assert_eq!(
        d.into_bytes().as_ref(),
        &r.volume[..(both_block * bs) as usize]
    );
    let (d, _) = r
        .array
        .read(
            (both_block + 1) * bs,
            r.layout.capacity() - (both_block + 1) * bs,
        )
        .await
        .unwrap();
    assert_eq!(
        d.into_bytes().as_ref(),
        &r.volume[((both_block + 1) * bs) as usize..]
    );
}

#[tokio::test]
async fn resync_repairs_a_raid6_data_block_when_p_and_q_agree() {
    let r = rig(RaidLevel::Raid6, 22, &[]);
    let (column, _) = corrupt(&r, 3, 1, 2, false);
    // Another stripe with stale parity, as an unclean shutdown leaves it.
    let p = r.layout.stripe(5).unwrap().p_column().unwrap();
    r.mems[p].poke(5 * r.layout.unit_bytes() as usize, &[0xee]);
    let report = r.array.resync(|_| {}).await.unwrap();
    assert_eq!(
        (report.stripes, report.repaired, report.lost),
        (STRIPES, 1, 0)
    );
    assert!(r.mems[column].bad_blocks().is_empty());
    assert!(r.array.lost().is_empty());
    assert_eq!(r.contents(), r.images);
    assert_fully_consistent(&r);
    let (d, _) = r.array.read(0, r.layout.capacity()).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), r.volume.as_slice());
}

#[tokio::test]
async fn resync_records_a_raid6_block_lost_when_p_and_q_disagree() {
    let r = rig(RaidLevel::Raid6, 23, &[]);
    let bs = u64::from(BS);
    let (column, volume_block) = corrupt(&r, 3, 0, 1, false);
    // A write torn by the crash: P of that row does not match the data any more.
    let p = r.layout.stripe(3).unwrap().p_column().unwrap();
    r.mems[p].poke(((3 * UNIT_BLOCKS + 1) * bs) as usize, &[0x77; 3]);
    let report = r.array.resync(|_| {}).await.unwrap();
    assert_eq!(
        (report.stripes, report.repaired, report.lost),
        (STRIPES, 0, 1)
    );
    assert!(r.mems[column].bad_blocks().is_empty());
    assert_eq!(
        r.array.lost().ranges().collect::<Vec<_>>(),
        vec![volume_block..volume_block + 1]
    );
    assert_fully_consistent(&r);
    assert_eq!(
        r.array.read(volume_block * bs, bs).await.unwrap_err(),
        AccessError::Unreadable {
            offset: volume_block * bs,
            len: bs
        }
    );
    // The block's neighbours read back as they were.
    let (d, _) = r.array.read((volume_block + 1) * bs, bs).await.unwrap();
    assert_eq!(
        d.into_bytes().as_ref(),
        &r.volume[((volume_block + 1) * bs) as usize..((volume_block + 2) * bs) as usize]
    );
}

/// Records, at every call, the lost set and whether the watched block was still bad.
#[derive(Debug)]
struct ProbeRecorder {
    watched: Mutex<Option<(Arc<MemComponent>, u64)>>,
    seen: Mutex<Vec<(Vec<std::ops::Range<u64>>, bool)>>,
}

impl StateRecorder for ProbeRecorder {
    fn record<'a>(&'a self, states: &'a ComponentStates) -> BoxFuture<'a, Result<(), String>> {
        let still_bad = self
            .watched
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(m, b)| m.bad_blocks().contains(b));
        self.seen
            .lock()
            .unwrap()
            .push((states.lost().ranges().collect(), still_bad));
        Box::pin(std::future::ready(Ok(())))
    }
}

#[tokio::test]
async fn resync_records_an_unreadable_raid5_block_lost_durably_then_makes_the_stripe_consistent() {
    let recorder = Arc::new(ProbeRecorder {
        watched: Mutex::new(None),
        seen: Mutex::new(Vec::new()),
    });
    let r = rig_with(RaidLevel::Raid5, 4, 24, &[], recorder.clone());
    let bs = u64::from(BS);
    let (column, volume_block) = corrupt(&r, 1, 2, 3, false);
    let cb = UNIT_BLOCKS + 3;
    *recorder.watched.lock().unwrap() = Some((r.mems[column].clone(), cb));
    let report = r.array.resync(|_| {}).await.unwrap();
    assert_eq!(
        (report.stripes, report.repaired, report.lost),
        (STRIPES, 0, 1)
    );
    let lost: Vec<std::ops::Range<u64>> = std::iter::once(volume_block..volume_block + 1).collect();
    assert_eq!(r.array.lost().ranges().collect::<Vec<_>>(), lost);
    // Durable while the bad block was still there: recorded before the stripe was rewritten.
    let seen = recorder.seen.lock().unwrap().clone();
    let first = seen.iter().find(|(l, _)| *l == lost).expect("recorded");
    assert!(
        first.1,
        "the lost set was recorded after the block was overwritten"
    );
    assert!(r.mems[column].bad_blocks().is_empty());
    assert_fully_consistent(&r);
    // Reads answer data loss for that block, serve the others.
    assert_eq!(
        r.array.read(volume_block * bs - 4, 8).await.unwrap_err(),
        AccessError::Unreadable {
            offset: volume_block * bs,
            len: 4
        }
    );
    let (d, _) = r.array.read(0, volume_block * bs).await.unwrap();
    assert_eq!(
        d.into_bytes().as_ref(),
        &r.volume[..(volume_block * bs) as usize]
    );
    // A whole write of the block clears it.
    let data = Bytes::from(vec![0x42u8; bs as usize]);
    r.array
        .write(volume_block * bs, data.clone())
        .await
        .unwrap();
    assert!(r.array.lost().is_empty());
    let (d, _) = r.array.read(volume_block * bs, bs).await.unwrap();
    assert_eq!(d.into_bytes(), data);
    assert_fully_consistent(&r);
}

// ------------------------------------------------------------------ stripes awaiting a resync

/// Issue 17, item 4: while a stripe awaits its resync, a RAID 1 read takes the primary (the
/// resync's source), so two reads with no write between return the same bytes even when the
/// copies differ (before, an idle array read the secondary of every other unit).
#[tokio::test]
async fn a_raid1_stripe_awaiting_its_resync_reads_the_resync_source() {
    let r = rig(RaidLevel::Raid1, 9, &[]);
    let unit = r.layout.unit_bytes();
    // Data unit 1 of stripe 0: ties go to its secondary on an idle array.
    let u = r
        .layout
        .map(unit, unit)
        .unwrap()
        .stripes
        .remove(0)
        .units
        .remove(0);
    let secondary = u.mirror_column.unwrap();
    let blocks = u.blocks.first;
    r.mems[secondary]
        .write_now(blocks, &vec![0xee; unit as usize])
        .unwrap();
    let primary_bytes = &r.volume[unit as usize..(2 * unit) as usize];
    let (d, _) = r.array.read(unit, unit).await.unwrap();
    assert!(
        d.into_bytes().iter().all(|&b| b == 0xee),
        "the premise: in sync, the secondary is read"
    );
    awaiting_resync(&r.array);
    for _ in 0..3 {
        let (d, _) = r.array.read(unit, unit).await.unwrap();
        assert_eq!(d.into_bytes().as_ref(), primary_bytes);
    }
    // Once the stripe is resynced, either copy may serve it again.
    resynced(&r.array);
    let (d, _) = r.array.read(unit, unit).await.unwrap();
    assert!(d.into_bytes().iter().all(|&b| b == 0xee));
}

/// Issue 17, item 3: a degraded read of a stripe awaiting its resync serves the rebuilt bytes
/// but writes nothing back (the parity it rebuilt from may be stale); once in sync, it repairs.
#[tokio::test]
async fn a_degraded_read_repairs_only_a_stripe_in_sync() {
    let r = rig(RaidLevel::Raid5, 3, &[]);
    let (offset, len) = (100, 50);
    let loc = r.layout.locate(offset).unwrap();
    let col = loc.column;
    let bad = loc.component_offset / u64::from(BS);
    let repaired = |r: &Rig| {
        r.log.writes().iter().any(|w| {
            w.component == format!("c{col}") && w.issuer.is_some_and(|i| i.mnemonic == Mnemonic::W)
        })
    };
    awaiting_resync(&r.array);
    r.faulty[col].inject(
        Trigger::always().op(IoOp::Read).times(1),
        Fault::Fail(IoErrorKind::DataLoss {
            bad_blocks: vec![bad],
        }),
    );
    let (d, _) = r.array.read(offset, len).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), &r.volume[100..150]);
    assert!(
        !repaired(&r),
        "nothing written into a stripe awaiting its resync"
    );
    resynced(&r.array);
    r.faulty[col].inject(
        Trigger::always().op(IoOp::Read).times(1),
        Fault::Fail(IoErrorKind::DataLoss {
            bad_blocks: vec![bad],
        }),
    );
    let (d, _) = r.array.read(offset, len).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), &r.volume[100..150]);
    assert!(repaired(&r));
    r.assert_consistent();
}

/// Issue 17, item 4: a RAID 1 read whose copy answers data loss is served from the other copy,
/// and the bad block is rewritten from it (before, only the resync did that).
#[tokio::test]
async fn a_raid1_read_rewrites_a_bad_copy_from_the_other() {
    let r = rig(RaidLevel::Raid1, 10, &[]);
    let loc = r.layout.locate(0).unwrap();
    let primary = loc.column;
    let bad = loc.component_offset / u64::from(BS);
    r.mems[primary].write_now(bad, &[0u8; BS as usize]).unwrap();
    r.mems[primary].mark_bad(bad);
    awaiting_resync(&r.array);
    // Awaiting its resync, the read takes the primary, falls back to the secondary, and
    // writes nothing back.
    let (d, _) = r.array.read(0, 8).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), &r.volume[..8]);
    assert!(r.log.writes().is_empty());
    resynced(&r.array);
    let (d, _) = r.array.read(0, 8).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), &r.volume[..8]);
    let repairs: Vec<(String, u64, u64)> = r
        .log
        .writes()
        .iter()
        .map(|w| (w.component.clone(), w.start_block, w.block_count))
        .collect();
    assert_eq!(repairs, vec![(format!("c{primary}"), bad, 1)]);
    assert_eq!(
        &r.mems[primary].contents()[(bad * u64::from(BS)) as usize..][..8],
        &r.volume[..8]
    );
    r.assert_consistent();
}

// ------------------------------------------------------------------ writes with an unknown outcome

/// Issue 17, item 2: a write that timed out on a live component has an unknown outcome. It is
/// redone after a fence of its component (same bytes, under the stripe lock), the column is not
/// failed and the stripe is not lost; the late copy of the first write is refused by the fence,
/// so it cannot land over a later write of the same blocks.
#[tokio::test]
async fn a_write_with_an_unknown_outcome_is_fenced_and_redone_not_failed_or_lost() {
    for (level, mnemonic) in [
        (RaidLevel::Raid5, Mnemonic::Wnp),
        (RaidLevel::Raid5, Mnemonic::Wnd),
        (RaidLevel::Raid6, Mnemonic::Wnq),
        (RaidLevel::Raid1, Mnemonic::Wpd),
        (RaidLevel::Raid1, Mnemonic::Wsd),
        (RaidLevel::Raid0, Mnemonic::W),
    ] {
        let what = format!("{level} {mnemonic}");
        let r = rig(level, 7, &[]);
        let len = 5usize;
        let offset = r.layout.unit_bytes() + 3;
        let stripe = r.layout.map(offset, len as u64).unwrap().stripes[0].clone();
        // The column the faulted node writes: parity / Q for those mnemonics, else the data's.
        let data_column = r.layout.locate(offset).unwrap().column;
        let column = match mnemonic {
            Mnemonic::Wnp => stripe.parity[0].column,
            Mnemonic::Wnq => stripe.parity[1].column,
            Mnemonic::Wsd => (0..r.layout.columns())
                .find_map(|i| {
                    let sl = r.layout.stripe(stripe.stripe).unwrap();
                    (sl.data_column(i) == Some(data_column))
                        .then(|| sl.mirror_column(i))
                        .flatten()
                })
                .unwrap(),
            _ => data_column,
        };
        let gate = Gate::new();
        r.faulty[column].inject(
            Trigger::node(mnemonic).times(1),
            Fault::LateApply(gate.clone()),
        );
        let first = Bytes::from(vec![0xa1u8; len]);
        r.array.write(offset, first.clone()).await.unwrap();
        assert!(
            r.array.states().failed_columns().is_empty(),
            "{what}: a live column was failed for a timeout"
        );
        assert!(r.array.lost_stripes().is_empty(), "{what}: stripe lost");
        assert_eq!(
            r.array.stats().redone_writes.load(Ordering::Relaxed),
            1,
            "{what}"
        );
        // The component was fenced before the redo was written.
        let on_column: Vec<_> = r
            .log
            .records()
            .into_iter()
            .filter(|x| x.component == format!("c{column}"))
            .collect();
        let fence = on_column
            .iter()
            .position(|x| x.op == IoOp::Fence)
            .unwrap_or_else(|| panic!("{what}: no fence in {on_column:?}"));
        assert!(
            on_column[fence + 1..]
                .iter()
                .any(|x| x.op == IoOp::Write && x.result == Some(Ok(()))),
            "{what}: no redo after the fence"
        );
        // A second write of the same bytes, then the late copy of the first arrives: refused.
        let second = Bytes::from(vec![0xb2u8; len]);
        r.array.write(offset, second.clone()).await.unwrap();
        gate.open();
        r.log
            .wait_until(|records| records.iter().any(|x| x.late_apply && x.result.is_some()))
            .await;
        let late = r.log.records().into_iter().find(|x| x.late_apply).unwrap();
        assert_eq!(
            late.result,
            Some(Err(IoErrorKind::Fenced)),
            "{what}: the late write was not refused"
        );
        let (d, _) = r.array.read(offset, len as u64).await.unwrap();
        assert_eq!(d.into_bytes(), second, "{what}");
        r.assert_consistent();
    }
}

/// A write that timed out on a component whose fence does not answer in time is tried again
/// (the node may only be slow); once the fence answers, the write is redone.
#[tokio::test(start_paused = true)]
async fn a_fence_that_times_out_is_tried_again_while_the_column_is_current() {
    let r = rig(RaidLevel::Raid5, 8, &[]);
    let col = r.layout.locate(0).unwrap().column;
    r.faulty[col].inject(
        Trigger::node(Mnemonic::Wnd).times(1),
        Fault::Fail(IoErrorKind::Timeout),
    );
    r.faulty[col].inject(Trigger::always().op(IoOp::Fence).times(2), Fault::Hang);
    r.array.write(0, Bytes::from_static(b"xyz")).await.unwrap();
    assert!(r.array.states().failed_columns().is_empty());
    let fences = r
        .log
        .records()
        .iter()
        .filter(|x| x.op == IoOp::Fence)
        .count();
    assert_eq!(fences, 3, "two fences timed out, the third answered");
    let (d, _) = r.array.read(0, 3).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), b"xyz");
    r.assert_consistent();
}

/// A timed-out write whose component cannot be fenced (its node is down) fails the column like
/// any component fault: the write completes degraded.
#[tokio::test]
async fn a_write_whose_component_cannot_be_fenced_fails_the_column() {
    let r = rig(RaidLevel::Raid5, 9, &[]);
    let col = r.layout.locate(0).unwrap().column;
    r.faulty[col].inject(
        Trigger::node(Mnemonic::Wnd),
        Fault::Fail(IoErrorKind::Timeout),
    );
    r.faulty[col].inject(
        Trigger::always().op(IoOp::Fence),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    r.array.write(0, Bytes::from_static(b"xyz")).await.unwrap();
    assert_eq!(r.array.states().get(col), Some(ComponentState::Failed));
    assert_eq!(r.array.stats().redone_writes.load(Ordering::Relaxed), 0);
    let (d, _) = r.array.read(0, 3).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), b"xyz");
    r.assert_consistent();
}

/// Parity verification (`access/scrub.rs`) over the same rigs.
mod scrub;
/// Every stripe of `array` awaits its resync (as after a crash with no parity map).
fn awaiting_resync(array: &Array) {
    array
        .parity_map()
        .needs_sync(&crate::lost::LostSet::from_ranges(std::iter::once(
            0..u64::MAX,
        )));
}

/// Every region awaiting its resync was resynced.
fn resynced(array: &Array) {
    for r in array.parity_map().pending_sync() {
        array.parity_map().synced(r);
    }
}

// ------------------------------------------------------------------ parity map

#[derive(Debug, Default)]
struct MapRecorder {
    maps: Mutex<Vec<crate::parity_map::MapSnapshot>>,
    fail: std::sync::atomic::AtomicBool,
}

impl StateRecorder for MapRecorder {
    fn record<'a>(&'a self, _: &'a ComponentStates) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn record_map<'a>(
        &'a self,
        map: &'a crate::parity_map::MapSnapshot,
    ) -> BoxFuture<'a, Result<(), String>> {
        let r = if self.fail.load(Ordering::Relaxed) {
            Err("store unavailable".to_owned())
        } else {
            self.maps.lock().unwrap().push(map.clone());
            Ok(())
        };
        Box::pin(std::future::ready(r))
    }
}

/// Issue 20, item 1: a write's region is marked dirty, durably, before any of the write is
/// issued; a mark that cannot be recorded fails the write with nothing written; a region is
/// marked once, and cleared (and recorded clear) only after its writes ended.
#[tokio::test]
async fn a_write_is_issued_only_after_its_region_is_marked_durably() {
    let recorder = Arc::new(MapRecorder::default());
    let r = rig_with(RaidLevel::Raid5, 4, 7, &[], recorder.clone());
    recorder.fail.store(true, Ordering::Relaxed);
    let err = r
        .array
        .write(0, Bytes::from_static(b"abc"))
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::StateNotRecorded { .. }), "{err}");
    assert!(
        r.log.writes().is_empty(),
        "nothing issued: {:?}",
        r.log.writes()
    );
    let (d, _) = r.array.read(0, 3).await.unwrap();
    assert_eq!(d.into_bytes().as_ref(), &r.volume[..3]);

    recorder.fail.store(false, Ordering::Relaxed);
    r.array.write(0, Bytes::from_static(b"abc")).await.unwrap();
    let maps = recorder.maps.lock().unwrap().clone();
    assert_eq!(maps.len(), 1, "{maps:#?}");
    assert!(maps[0].stripes(r.layout.stripes()).intersects(0..1));
    // The same region again: nothing more to record.
    r.array.write(5, Bytes::from_static(b"de")).await.unwrap();
    let maps = recorder.maps.lock().unwrap().clone();
    assert_eq!(maps.len(), 1, "{maps:#?}");
    assert_eq!(r.array.parity_map().counts().dirty, 1);
    // Quiet: cleared, and the clear recorded.
    assert!(r.array.cool_parity_map(Duration::ZERO).await.unwrap());
    let last = recorder.maps.lock().unwrap().last().cloned().unwrap();
    assert!(last.dirty.is_empty(), "{last:?}");
    assert_eq!(r.array.parity_map().counts().dirty, 0);
    // A write after the clear marks the region again.
    r.array.write(0, Bytes::from_static(b"f")).await.unwrap();
    assert_eq!(recorder.maps.lock().unwrap().len(), 3);
    r.assert_consistent();
}

/// The write hole while degraded (`crate::ppl`): a write to a stripe whose data unit is on a
/// failed column, cut by a crash after its data landed and before its parity did, leaves a
/// parity from which the failed column's unit is rebuilt wrong. The log written before the
/// write holds that unit; replaying it makes the parity match again. Without the replay the
/// failed column's data reads back wrong (the hole); with it, exactly as it was.
#[tokio::test]
async fn a_crash_in_a_degraded_write_is_undone_by_the_partial_parity_log() {
    for level in [RaidLevel::Raid4, RaidLevel::Raid5, RaidLevel::Raid6] {
        let cut = cut_degraded_write(level, 91).await;
        let (r, failed, period) = (&cut.rig, cut.failed, cut.period);
        let sl = r.layout.stripe(0).unwrap();
        assert_eq!(
            r.array.stats().log_entries.load(Ordering::Relaxed),
            u64::from(sl.q_column().is_some()) + 1,
            "{level}: one entry per surviving parity column"
        );
        let unit = r.layout.unit_bytes();
        let expected = &r.volume[..unit as usize];
        let (before, _) = cut.reopen(&cut.table).read(0, unit).await.unwrap();
        assert_ne!(
            &before.into_bytes()[..],
            expected,
            "{level}: without the log the failed column's unit comes back wrong"
        );
        let present: Vec<usize> = (0..r.layout.columns()).filter(|&c| c != failed).collect();
        let (entries, count, errors) =
            crate::ppl::newest_entries(&r.layout, &cut.table, &present, period).await;
        assert!(errors.is_empty(), "{level}: {errors:?}");
        assert_eq!(
            count as usize,
            present.len() - sl.data_units() + 1,
            "{level}"
        );
        let report = crate::ppl::replay(&r.layout, &cut.table, &cut.states, entries).await;
        assert_eq!((report.replayed, report.unapplied.len()), (1, 0), "{level}");
        let (after, _) = cut.reopen(&cut.table).read(0, unit).await.unwrap();
        assert_eq!(
            &after.into_bytes()[..],
            expected,
            "{level}: the log closed the hole"
        );
        // Entries of another period (an earlier degraded spell) never count.
        let (old, _, _) =
            crate::ppl::newest_entries(&r.layout, &cut.table, &present, period ^ 1).await;
        assert!(old.is_empty(), "{level}");
    }
}

/// A degraded write of stripe 0's data unit 1 cut short (the "crash") after its data write
/// landed and before any parity write did, on a rig whose data unit 0's column is failed; and
/// what reopening the array after the crash needs.
struct CutWrite {
    rig: Rig,
    failed: usize,
    period: u64,
    /// The components as they are after the crash, with nothing injected.
    table: ComponentTable,
    /// The assembled state: `failed` failed, the log period kept.
    states: ComponentStates,
}

impl CutWrite {
    /// A new array over `table` in the assembled state (a coordinator started again).
    fn reopen(&self, table: &ComponentTable) -> Arc<Array> {
        Array::new(
            self.rig.layout,
            table.clone(),
            self.states.clone(),
            ArrayConfig::default(),
            Arc::new(InMemoryStates),
        )
        .unwrap()
    }
}

async fn cut_degraded_write(level: RaidLevel, seed: u64) -> CutWrite {
    let r = rig(level, seed, &[]);
    let sl = r.layout.stripe(0).unwrap();
    let failed = sl.data_column(0).unwrap();
    r.array.fail_component(failed).await.unwrap();
    let period = r.array.states().log_period();
    assert_ne!(period, 0, "{level}: a degraded array has a log period");
    for p in [sl.p_column(), sl.q_column()].into_iter().flatten() {
        r.faulty[p].inject(Trigger::always().op(IoOp::Write), Fault::Hang);
    }
    let unit = r.layout.unit_bytes();
    let (offset, len) = (unit + u64::from(BS), 2 * u64::from(BS));
    let new = Bytes::from(vec![0x5a; len as usize]);
    let cut = tokio::time::timeout(Duration::from_millis(300), r.array.write(offset, new)).await;
    assert!(cut.is_err(), "{level}: the write was cut short");
    let table: ComponentTable = r
        .mems
        .iter()
        .map(|m| m.clone() as Arc<dyn ComponentIo>)
        .collect::<Vec<_>>()
        .into();
    let mut states = vec![ComponentState::Optimal; r.layout.columns()];
    states[failed] = ComponentState::Failed;
    let states = ComponentStates::from_states(&r.layout, states)
        .unwrap()
        .with_log_period(period);
    CutWrite {
        rig: r,
        failed,
        period,
        table,
        states,
    }
}

/// A log area that cannot be read at the replay (RAID 5: stripe 0's entry is on its one parity
/// column) fails the replay before anything is applied or marked, so the assembly is refused
/// and can be tried again; by force, the other entries are applied and the column is named.
#[tokio::test]
async fn an_unreadable_log_fails_the_replay_unless_forced() {
    let cut = cut_degraded_write(RaidLevel::Raid5, 92).await;
    let r = &cut.rig;
    let parity = r.layout.stripe(0).unwrap().p_column().unwrap();
    let log = IoLog::new();
    let faulty: Vec<Arc<FaultyComponent>> = r
        .mems
        .iter()
        .map(|m| FaultyComponent::new(m.clone() as Arc<dyn ComponentIo>, log.clone()))
        .collect();
    faulty[parity].inject(
        Trigger::always().op(IoOp::ReadLog),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    let table: ComponentTable = faulty
        .iter()
        .map(|f| f.clone() as Arc<dyn ComponentIo>)
        .collect::<Vec<_>>()
        .into();
    let unit = r.layout.unit_bytes();
    let expected = &r.volume[..unit as usize];

    let array = cut.reopen(&table);
    let err = array.replay_log(false).await.unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].0, parity, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("cannot be read on column {parity}")),
        "{message}"
    );
    assert!(array.states().lost().is_empty(), "nothing marked");
    // Nothing applied: the stripe is as the crash left it (the hole is still there).
    let (still, _) = array.read(0, unit).await.unwrap();
    assert_ne!(&still.into_bytes()[..], expected);

    // Forced: the column is named, its entries are not applied.
    let report = cut.reopen(&table).replay_log(true).await.unwrap();
    assert_eq!(report.unread.len(), 1, "{report:?}");
    assert_eq!(report.unread[0].0, parity);
    assert_eq!(report.replayed, 0, "{report:?}");

    // Readable again: the next assembly replays it and closes the hole.
    faulty[parity].clear();
    let array = cut.reopen(&table);
    let report = array.replay_log(false).await.unwrap();
    assert_eq!((report.replayed, report.unread.len()), (1, 0), "{report:?}");
    let (after, _) = array.read(0, unit).await.unwrap();
    assert_eq!(&after.into_bytes()[..], expected);
}

/// The write hole's last window (docs/STATE.md, "Partial-parity log", rule 6): a write issued
/// while every column was current logs nothing. If a column of its stripe that it does not
/// touch fails meanwhile, the failure is not recorded (so a crash cannot leave the column
/// failed in the record with this stripe torn and unlogged) until the write has ended.
#[tokio::test]
async fn a_failure_is_not_recorded_while_a_write_that_logged_nothing_for_it_is_in_flight() {
    let recorder = Arc::new(CountingRecorder::default());
    let r = rig_with(RaidLevel::Raid5, 4, 5, &[], recorder.clone());
    let sl = r.layout.stripe(0).unwrap();
    let p = sl.p_column().unwrap();
    let out = sl.data_column(0).unwrap();
    let gate = Gate::new();
    r.faulty[p].inject(
        Trigger::always().op(IoOp::Write).times(1),
        Fault::HoldUntil(gate.clone()),
    );
    // A write of data unit 1 of stripe 0: its parity write is held.
    let unit = r.layout.unit_bytes();
    let array = r.array.clone();
    let write =
        tokio::spawn(async move { array.write(unit, Bytes::from(vec![7u8; BS as usize])).await });
    let comp = r.faulty[p].id().to_owned();
    for _ in 0..1000 {
        if r.log
            .writes()
            .iter()
            .any(|w| w.component == comp && w.result.is_none())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let array = r.array.clone();
    let fail = tokio::spawn(async move { array.fail_component(out).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let recorded_out = || {
        recorder
            .last
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.states()[out] == ComponentState::Failed)
    };
    assert!(
        !recorded_out() && !fail.is_finished(),
        "the failure was recorded while a write that logged nothing for it was in flight"
    );
    gate.open();
    write.await.unwrap().unwrap();
    fail.await.unwrap().unwrap();
    assert!(recorded_out(), "recorded once the write ended");
}

/// A component whose log area holds only `log_bytes` (two slots here): slots run out.
#[derive(Debug)]
struct SmallLog(Arc<dyn ComponentIo>, u64);

impl ComponentIo for SmallLog {
    fn id(&self) -> &str {
        self.0.id()
    }
    fn block_size(&self) -> u32 {
        self.0.block_size()
    }
    fn block_count(&self) -> u64 {
        self.0.block_count()
    }
    fn read(&self, start: u64, count: u32) -> BoxFuture<'_, Result<Bytes, crate::io::IoError>> {
        self.0.read(start, count)
    }
    fn write(&self, start: u64, data: Bytes) -> BoxFuture<'_, Result<(), crate::io::IoError>> {
        Box::pin(async move {
            // Slow enough that many writes wait for slots at once.
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.0.write(start, data).await
        })
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), crate::io::IoError>> {
        self.0.flush()
    }
    fn log_bytes(&self) -> u64 {
        self.1
    }
    fn write_log(&self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), crate::io::IoError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.0.write_log(offset, data).await
        })
    }
    fn read_log(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, crate::io::IoError>> {
        self.0.read_log(offset, len)
    }
}

/// Degraded RAID 6 writes log on two components each; with log areas of two slots the slots
/// run out and writers wait for them (in round-robin order, taken in the order of the
/// components' ids, so no circle of waits). 64 concurrent degraded writes all complete.
#[tokio::test]
async fn degraded_raid6_writes_complete_when_log_slots_run_out() {
    let r = rig(RaidLevel::Raid6, 93, &[]);
    let slot = crate::ppl::slot_bytes(&r.layout);
    let table: ComponentTable = r
        .mems
        .iter()
        .map(|m| Arc::new(SmallLog(m.clone(), 2 * slot)) as Arc<dyn ComponentIo>)
        .collect::<Vec<_>>()
        .into();
    let array = Array::new(
        r.layout,
        table,
        ComponentStates::from_states(&r.layout, {
            let mut s = vec![ComponentState::Optimal; r.layout.columns()];
            s[0] = ComponentState::Failed;
            s
        })
        .unwrap(),
        ArrayConfig::default(),
        Arc::new(InMemoryStates),
    )
    .unwrap();
    let unit = r.layout.unit_bytes();
    let stripe = r.layout.stripe_data_bytes();
    let writes = (0..64u64).map(|i| {
        let array = array.clone();
        // A block of data unit 1 of stripe i % STRIPES: every parity rotation, many at once.
        let offset = (i % STRIPES) * stripe + unit + (i / STRIPES % UNIT_BLOCKS) * u64::from(BS);
        async move {
            array
                .write(offset, Bytes::from(vec![i as u8; BS as usize]))
                .await
        }
    });
    let all = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(writes))
        .await
        .expect("degraded writes deadlocked on log slots");
    assert!(all.iter().all(|r| r.is_ok()), "{all:?}");
    assert!(array.stats().log_entries.load(Ordering::Relaxed) > 0);
}

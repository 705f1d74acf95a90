//! CPU cost of the access path per DAG family: `cargo bench -p dagraid-core --bench access`.
//!
//! Over in-memory components (so storage costs only the copies in and out of memory), for one
//! access of each family it measures, in one run:
//! - map: cutting the byte range into stripe accesses;
//! - select + build: choosing the family and building and validating the DAG;
//! - run: the engine running the built DAG in its own task;
//! - pipeline: the whole `Array::read` / `Array::write` (map, lock, build, run, process);
//!
//! and, for the parity kernel the DAGs use, XOR GB/s next to memcpy. `ACCESS_BENCH_MS` sets the
//! time per row (default 400). Rounds of the rows alternate so a load change on the shared
//! machine hits every row alike; each row keeps its best round.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_core::access::{Array, ArrayConfig, InMemoryStates};
use dagraid_core::array::{ComponentState, ComponentStates};
use dagraid_core::dag::ComponentTable;
use dagraid_core::dag::builders::{ColumnFaults, DagFamily, StripeRequest, build};
use dagraid_core::dag::select::{AccessKind, select};
use dagraid_core::engine::{Direction, Engine};
use dagraid_core::io::ComponentIo;
use dagraid_core::layout::{Geometry, Layout, RaidLevel};
use dagraid_core::parity::xor_many;
use dagraid_core::testing::MemComponent;

const BLOCK: u64 = 4096;
const UNIT_BLOCKS: u64 = 16;
const STRIPES: u64 = 64;
const ROUNDS: usize = 3;

struct Case {
    name: &'static str,
    level: RaidLevel,
    columns: usize,
    failed: Vec<usize>,
    kind: AccessKind,
    offset: u64,
    len: u64,
    expect: DagFamily,
}

struct Setup {
    layout: Layout,
    table: ComponentTable,
    array: Arc<Array>,
    faults: ColumnFaults,
    data: Bytes,
}

fn setup(c: &Case) -> Setup {
    let layout = Layout::new(
        c.level,
        Geometry::new(c.columns, UNIT_BLOCKS, BLOCK, STRIPES * UNIT_BLOCKS).unwrap(),
    )
    .unwrap();
    let table: ComponentTable = (0..c.columns)
        .map(|i| {
            MemComponent::new(format!("c{i}"), BLOCK as u32, STRIPES * UNIT_BLOCKS)
                as Arc<dyn ComponentIo>
        })
        .collect::<Vec<_>>()
        .into();
    let mut states = vec![ComponentState::Optimal; c.columns];
    for &f in &c.failed {
        states[f] = ComponentState::Failed;
    }
    let states = ComponentStates::from_states(&layout, states).unwrap();
    let faults = ColumnFaults::failed(states.failed_columns());
    let array = Array::new(
        layout,
        table.clone(),
        states,
        ArrayConfig::default(),
        Arc::new(InMemoryStates),
    )
    .unwrap();
    Setup {
        layout,
        table,
        array,
        faults,
        data: Bytes::from(vec![0x5a; c.len as usize]),
    }
}

/// Times `f` over about `budget`; returns microseconds per call.
fn time_us(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget || n < 10 {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn measure(rt: &tokio::runtime::Runtime, c: &Case, s: &Setup, budget: Duration) -> [f64; 4] {
    let map_us = time_us(budget / 4, || {
        black_box(s.layout.map(c.offset, c.len).unwrap());
    });
    let map = s.layout.map(c.offset, c.len).unwrap();
    let access = &map.stripes[0];
    let data = (c.kind == AccessKind::Write).then_some(&s.data);
    let req = StripeRequest {
        layout: &s.layout,
        access,
        components: &s.table,
        faults: &s.faults,
        data,
        load: &[],
        in_sync: true,
        repair: false,
    };
    let family = select(&s.layout, access, c.kind, &s.faults).unwrap();
    assert_eq!(family, c.expect, "{}", c.name);
    let build_us = time_us(budget / 4, || {
        let f = select(&s.layout, access, c.kind, &s.faults).unwrap();
        black_box(build(f, &req).unwrap());
    });
    let engine = Engine::default();
    // Build outside the timed part, in batches.
    let mut run_total = Duration::ZERO;
    let mut runs = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget / 4 || runs < 10 {
        let batch: Vec<_> = (0..64).map(|_| build(family, &req).unwrap().dag).collect();
        let t = Instant::now();
        rt.block_on(async {
            for dag in batch {
                let r = engine.run(dag).await.unwrap();
                assert_eq!(r.direction(), Direction::Forward);
                black_box(r);
            }
        });
        run_total += t.elapsed();
        runs += 64;
    }
    let run_us = run_total.as_secs_f64() * 1e6 / runs as f64;
    let pipeline_us = {
        let start = Instant::now();
        let mut n = 0u64;
        rt.block_on(async {
            while start.elapsed() < budget / 4 || n < 10 {
                match c.kind {
                    AccessKind::Read => {
                        black_box(s.array.read(c.offset, c.len).await.unwrap());
                    }
                    AccessKind::Write => {
                        black_box(s.array.write(c.offset, s.data.clone()).await.unwrap());
                    }
                }
                n += 1;
            }
        });
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    [map_us, build_us, run_us, pipeline_us]
}

fn xor_vs_memcpy(budget: Duration) -> (f64, f64) {
    let len = 1 << 20;
    let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let src2: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let mut dst = vec![0u8; len];
    let memcpy = time_us(budget, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    });
    // dst = src ^ src2, the DAG's Xor of two inputs; counted, as in the parity bench, by the
    // bytes of all its sources (2 MiB), the memcpy by the bytes it copies.
    let xor = time_us(budget, || {
        xor_many(&mut dst, &[black_box(&src), black_box(&src2)]).unwrap();
        black_box(&dst);
    });
    let gbps = |bytes: usize, us: f64| bytes as f64 / us / 1e3;
    (gbps(len, memcpy), gbps(2 * len, xor))
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("ACCESS_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let unit = UNIT_BLOCKS * BLOCK;
    let k5 = 4;
    use AccessKind::{Read, Write};
    let cases = vec![
        Case {
            name: "RAID 5 4 KiB read",
            level: RaidLevel::Raid5,
            columns: 5,
            failed: vec![],
            kind: Read,
            offset: 0,
            len: 4096,
            expect: DagFamily::FaultFreeRead,
        },
        Case {
            name: "RAID 5 4 KiB read, its column failed",
            level: RaidLevel::Raid5,
            columns: 5,
            failed: vec![0],
            kind: Read,
            offset: 0,
            len: 4096,
            expect: DagFamily::DegradedRead,
        },
        Case {
            name: "RAID 5 4 KiB write",
            level: RaidLevel::Raid5,
            columns: 5,
            failed: vec![],
            kind: Write,
            offset: 0,
            len: 4096,
            expect: DagFamily::SmallWrite,
        },
        Case {
            name: "RAID 5 full-stripe write (256 KiB)",
            level: RaidLevel::Raid5,
            columns: 5,
            failed: vec![],
            kind: Write,
            offset: 0,
            len: k5 * unit,
            expect: DagFamily::LargeWrite,
        },
        Case {
            name: "RAID 5 4 KiB write, parity failed",
            level: RaidLevel::Raid5,
            columns: 5,
            failed: vec![4],
            kind: Write,
            offset: 0,
            len: 4096,
            expect: DagFamily::NonRedundantWrite,
        },
        Case {
            name: "RAID 5 4 KiB write, its column failed",
            level: RaidLevel::Raid5,
            columns: 5,
            failed: vec![0],
            kind: Write,
            offset: 0,
            len: 4096,
            expect: DagFamily::DegradedWrite,
        },
        Case {
            name: "RAID 5 full-stripe read (256 KiB)",
            level: RaidLevel::Raid5,
            columns: 5,
            failed: vec![],
            kind: Read,
            offset: 0,
            len: k5 * unit,
            expect: DagFamily::FaultFreeRead,
        },
        Case {
            name: "RAID 5 full-stripe read, one column failed",
            level: RaidLevel::Raid5,
            columns: 5,
            failed: vec![1],
            kind: Read,
            offset: 0,
            len: k5 * unit,
            expect: DagFamily::DegradedRead,
        },
        Case {
            name: "RAID 1 4 KiB read",
            level: RaidLevel::Raid1,
            columns: 4,
            failed: vec![],
            kind: Read,
            offset: 0,
            len: 4096,
            expect: DagFamily::MirrorRead,
        },
        Case {
            name: "RAID 1 4 KiB write",
            level: RaidLevel::Raid1,
            columns: 4,
            failed: vec![],
            kind: Write,
            offset: 0,
            len: 4096,
            expect: DagFamily::MirrorWrite,
        },
        Case {
            name: "RAID 0 4 KiB write",
            level: RaidLevel::Raid0,
            columns: 4,
            failed: vec![],
            kind: Write,
            offset: 0,
            len: 4096,
            expect: DagFamily::NonRedundantWrite,
        },
        Case {
            name: "RAID 6 4 KiB write",
            level: RaidLevel::Raid6,
            columns: 6,
            failed: vec![],
            kind: Write,
            offset: 0,
            len: 4096,
            expect: DagFamily::SmallWrite,
        },
        Case {
            name: "RAID 6 full-stripe write (256 KiB)",
            level: RaidLevel::Raid6,
            columns: 6,
            failed: vec![],
            kind: Write,
            offset: 0,
            len: 4 * unit,
            expect: DagFamily::LargeWrite,
        },
        Case {
            name: "RAID 6 full-stripe read, two data failed",
            level: RaidLevel::Raid6,
            columns: 6,
            failed: vec![1, 2],
            kind: Read,
            offset: 0,
            len: 4 * unit,
            expect: DagFamily::DegradedRead,
        },
    ];
    let setups: Vec<Setup> = cases.iter().map(setup).collect();
    let mut best = vec![[f64::INFINITY; 4]; cases.len()];
    let mut xor = (0.0f64, 0.0f64);
    for _ in 0..ROUNDS {
        for (i, (c, s)) in cases.iter().zip(&setups).enumerate() {
            let m = measure(&rt, c, s, budget);
            for (b, v) in best[i].iter_mut().zip(m) {
                *b = b.min(v);
            }
        }
        let (m, x) = xor_vs_memcpy(budget / 2);
        if x / m > xor.1 / xor.0.max(f64::MIN_POSITIVE) || xor.0 == 0.0 {
            xor = (m, x);
        }
    }
    println!(
        "Access path CPU cost, in-memory components, 4 KiB blocks, 64 KiB stripe units, one thread"
    );
    println!("| access | DAG family | map | select + build | run | pipeline |");
    println!("|---|---|---|---|---|---|");
    for (c, b) in cases.iter().zip(&best) {
        println!(
            "| {} | {} | {:.2} us | {:.2} us | {:.2} us | {:.2} us |",
            c.name,
            c.expect.name(),
            b[0],
            b[1],
            b[2],
            b[3]
        );
    }
    println!();
    println!("| kernel | GB/s | x memcpy |");
    println!("|---|---|---|");
    println!("| memcpy 1 MiB | {:.2} | 1.00 |", xor.0);
    println!(
        "| xor of two 1 MiB sources (2 MiB counted) | {:.2} | {:.2} |",
        xor.1,
        xor.1 / xor.0
    );
}

//! Every DAG shape of RAIDFRAME.md's table, hand-built, run fault-free and with a fault at every
//! disk node, for every kind of fault.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::{BS, Rig, block, engine, xor};
use crate::dag::{Dag, DagBuilder, DiskTarget, EdgeKind, Mnemonic, NodeId, Slot};
use crate::engine::{Direction, NodeOutcome};
use crate::io::IoErrorKind;
use crate::parity::gf256::mul;
use crate::testing::{Fault, Gate, IoOp, Trigger};

use EdgeKind::{Control, TrueData};

/// A hand-built DAG and what a fault-free run must produce.
pub(super) struct Built {
    pub(super) dag: Dag,
    /// Slots the caller reads, with the bytes they must hold.
    pub(super) reads: Vec<(Slot, Vec<u8>)>,
    /// Write nodes with their component, block and the bytes they store.
    pub(super) writes: Vec<(NodeId, usize, u64, Vec<u8>)>,
}

/// Initial content of block `b` of component `c` (see [`Rig::new`]).
pub(super) fn old(c: usize, b: u64) -> Vec<u8> {
    block((c as u64 * 64 + b) as u8)
}

pub(super) fn t(c: usize, b: u64) -> DiskTarget {
    DiskTarget::new(c, b, 1)
}

/// Nil -> R x 2 -> Cmt -> Trm.
pub(super) fn ff_read(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("ff_read", rig.table());
    let h = b.nil(&[]);
    let (r0, s0) = b.read(Mnemonic::R, t(0, 3), &[(h, Control)]);
    let (r1, s1) = b.read(Mnemonic::R, t(1, 3), &[(h, Control)]);
    let c = b.commit(&[(r0, Control), (r1, Control)]);
    b.terminate(&[(c, Control)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![(s0, old(0, 3)), (s1, old(1, 3))],
        writes: vec![],
    }
}

/// Nil -> Cmt -> W x 2 -> Trm.
pub(super) fn nonredundant_write(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("nonredundant_write", rig.table());
    let d0 = b.buffer(Bytes::from(block(0xa1)));
    let d1 = b.buffer(Bytes::from(block(0xa2)));
    let h = b.nil(&[]);
    let c = b.commit(&[(h, Control)]);
    let w0 = b.write(Mnemonic::W, t(0, 5), d0, &[(c, Control)]);
    let w1 = b.write(Mnemonic::W, t(1, 5), d1, &[(c, Control)]);
    b.terminate(&[(w0, Control), (w1, Control)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![],
        writes: vec![(w0, 0, 5, block(0xa1)), (w1, 1, 5, block(0xa2))],
    }
}

/// Nil -> Rmir -> Cmt -> Trm.
pub(super) fn mirror_read(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("mirror_read", rig.table());
    let h = b.nil(&[]);
    let (r, s) = b.read(Mnemonic::Rmir, t(1, 7), &[(h, Control)]);
    let c = b.commit(&[(r, Control)]);
    b.terminate(&[(c, Control)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![(s, old(1, 7))],
        writes: vec![],
    }
}

/// Nil -> Cmt -> {Wpd, Wsd} -> Nil -> Trm.
pub(super) fn mirror_write(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("mirror_write", rig.table());
    let d = b.buffer(Bytes::from(block(0xb1)));
    let h = b.nil(&[]);
    let c = b.commit(&[(h, Control)]);
    let wp = b.write(Mnemonic::Wpd, t(0, 9), d, &[(c, Control)]);
    let ws = b.write(Mnemonic::Wsd, t(1, 9), d, &[(c, Control)]);
    let j = b.nil(&[(wp, Control), (ws, Control)]);
    b.terminate(&[(j, Control)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![],
        writes: vec![(wp, 0, 9, block(0xb1)), (ws, 1, 9, block(0xb1))],
    }
}

/// Nil -> Rod (untouched unit) -> Xor -> Cmt -> {Wnd x 2, Wnp} -> Trm.
pub(super) fn large_write(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("large_write", rig.table());
    let d0 = b.buffer(Bytes::from(block(0xc0)));
    let d1 = b.buffer(Bytes::from(block(0xc1)));
    let h = b.nil(&[]);
    let (rod, old2) = b.read(Mnemonic::Rod, t(2, 10), &[(h, Control)]);
    let (x, p) = b.xor(
        Mnemonic::Xor,
        vec![d0.all(), d1.all(), old2.all()],
        &[(rod, TrueData)],
    );
    let c = b.commit(&[(x, Control)]);
    let w0 = b.write(Mnemonic::Wnd, t(0, 10), d0, &[(c, Control)]);
    let w1 = b.write(Mnemonic::Wnd, t(1, 10), d1, &[(c, Control)]);
    let wp = b.write(Mnemonic::Wnp, t(3, 10), p, &[(c, Control), (x, TrueData)]);
    b.terminate(&[(w0, Control), (w1, Control), (wp, Control)]);
    let parity = xor(&[&block(0xc0), &block(0xc1), &old(2, 10)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![],
        writes: vec![
            (w0, 0, 10, block(0xc0)),
            (w1, 1, 10, block(0xc1)),
            (wp, 3, 10, parity),
        ],
    }
}

/// Nil -> {Rod, Rop} -> Xor -> Cmt -> {Wnd, Wnp} -> Trm.
pub(super) fn small_write(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("small_write", rig.table());
    let new = b.buffer(Bytes::from(block(0xd1)));
    let h = b.nil(&[]);
    let (rod, od) = b.read(Mnemonic::Rod, t(1, 12), &[(h, Control)]);
    let (rop, op) = b.read(Mnemonic::Rop, t(3, 12), &[(h, Control)]);
    let (x, np) = b.xor(
        Mnemonic::Xor,
        vec![od.all(), new.all(), op.all()],
        &[(rod, TrueData), (rop, TrueData)],
    );
    let c = b.commit(&[(x, Control)]);
    let wd = b.write(Mnemonic::Wnd, t(1, 12), new, &[(c, Control)]);
    let wp = b.write(Mnemonic::Wnp, t(3, 12), np, &[(c, Control)]);
    b.terminate(&[(wd, Control), (wp, Control)]);
    let parity = xor(&[&old(1, 12), &block(0xd1), &old(3, 12)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![],
        writes: vec![(wd, 1, 12, block(0xd1)), (wp, 3, 12, parity)],
    }
}

/// A sub-block small write: Nil -> {Rod, Rop} -> Ovl -> Xor -> Cmt -> {Wnd, Wnp} -> Trm.
pub(super) fn small_write_partial(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("small_write", rig.table());
    let user = b.buffer(Bytes::from_static(&[9, 9, 0xee, 0xef, 0xf0, 0xf1, 9]));
    let h = b.nil(&[]);
    let (rod, od) = b.read(Mnemonic::Rod, t(2, 20), &[(h, Control)]);
    let (rop, op) = b.read(Mnemonic::Rop, t(3, 20), &[(h, Control)]);
    let (ovl, nd) = b.overlay(od, user.range(2..6), 5, &[(rod, TrueData)]);
    let (x, np) = b.xor(
        Mnemonic::Xor,
        vec![od.all(), nd.all(), op.all()],
        &[(ovl, TrueData), (rop, TrueData)],
    );
    let c = b.commit(&[(x, Control)]);
    let wd = b.write(
        Mnemonic::Wnd,
        t(2, 20),
        nd,
        &[(c, Control), (ovl, TrueData)],
    );
    let wp = b.write(Mnemonic::Wnp, t(3, 20), np, &[(c, Control)]);
    b.terminate(&[(wd, Control), (wp, Control)]);
    let mut new = old(2, 20);
    new[5..9].copy_from_slice(&[0xee, 0xef, 0xf0, 0xf1]);
    let parity = xor(&[&old(2, 20), &new, &old(3, 20)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![],
        writes: vec![(wd, 2, 20, new), (wp, 3, 20, parity)],
    }
}

/// RAID 6 small write: Nil -> {Rod, Rop, Roq} -> {Xor, Q} -> Cmt -> {Wnd, Wnp, Wnq} -> Trm.
pub(super) fn small_write_pq(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("small_write_pq", rig.table());
    let new = b.buffer(Bytes::from(block(0x5a)));
    let h = b.nil(&[]);
    let (rod, od) = b.read(Mnemonic::Rod, t(1, 22), &[(h, Control)]);
    let (rop, op) = b.read(Mnemonic::Rop, t(3, 22), &[(h, Control)]);
    let (roq, oq) = b.read(Mnemonic::Roq, t(4, 22), &[(h, Control)]);
    let (x, np) = b.xor(
        Mnemonic::Xor,
        vec![od.all(), new.all(), op.all()],
        &[(rod, TrueData), (rop, TrueData)],
    );
    // Data index 1: coefficient g^1 = 2.
    let (q, nq) = b.q(
        Mnemonic::Q,
        vec![(1, oq.all()), (2, od.all()), (2, new.all())],
        &[(rod, TrueData), (roq, TrueData)],
    );
    let c = b.commit(&[(x, Control), (q, Control)]);
    let wd = b.write(Mnemonic::Wnd, t(1, 22), new, &[(c, Control)]);
    let wp = b.write(Mnemonic::Wnp, t(3, 22), np, &[(c, Control)]);
    let wq = b.write(Mnemonic::Wnq, t(4, 22), nq, &[(c, Control)]);
    b.terminate(&[(wd, Control), (wp, Control), (wq, Control)]);
    let parity = xor(&[&old(1, 22), &block(0x5a), &old(3, 22)]);
    let qv: Vec<u8> = (0..BS as usize)
        .map(|i| old(4, 22)[i] ^ mul(2, old(1, 22)[i]) ^ mul(2, 0x5a))
        .collect();
    Built {
        dag: b.build().unwrap(),
        reads: vec![],
        writes: vec![
            (wd, 1, 22, block(0x5a)),
            (wp, 3, 22, parity),
            (wq, 4, 22, qv),
        ],
    }
}

/// Nil -> {Rud, Rrd, Rp} -> Xrc -> Cmt -> Trm (component 1 lost).
pub(super) fn degraded_read(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("degraded_read", rig.table());
    let h = b.nil(&[]);
    let (rud, ud) = b.read(Mnemonic::Rud, t(0, 14), &[(h, Control)]);
    let (rrd, rd) = b.read(Mnemonic::Rrd, t(2, 14), &[(h, Control)]);
    let (rp, p) = b.read(Mnemonic::Rp, t(3, 14), &[(h, Control)]);
    let (x, lost) = b.xor(
        Mnemonic::Xrc,
        vec![ud.all(), rd.all(), p.all()],
        &[(rud, TrueData), (rrd, TrueData), (rp, TrueData)],
    );
    let c = b.commit(&[(x, Control)]);
    b.terminate(&[(c, Control)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![
            (ud, old(0, 14)),
            (lost, xor(&[&old(0, 14), &old(2, 14), &old(3, 14)])),
        ],
        writes: vec![],
    }
}

/// Nil -> Rrd -> Xrc -> Cmt -> {Wnd (live column), Wnp} -> Nil -> Trm (component 1 lost).
pub(super) fn degraded_write(rig: &Rig) -> Built {
    let mut b = DagBuilder::new("degraded_write", rig.table());
    let d0 = b.buffer(Bytes::from(block(0xe0)));
    let d1 = b.buffer(Bytes::from(block(0xe1)));
    let h = b.nil(&[]);
    let (rrd, rd) = b.read(Mnemonic::Rrd, t(2, 16), &[(h, Control)]);
    let (x, p) = b.xor(
        Mnemonic::Xrc,
        vec![d0.all(), d1.all(), rd.all()],
        &[(rrd, TrueData)],
    );
    let c = b.commit(&[(x, Control)]);
    let wd = b.write(Mnemonic::Wnd, t(0, 16), d0, &[(c, Control)]);
    let wp = b.write(Mnemonic::Wnp, t(3, 16), p, &[(c, Control)]);
    let j = b.nil(&[(wd, Control), (wp, Control)]);
    b.terminate(&[(j, Control)]);
    let parity = xor(&[&block(0xe0), &block(0xe1), &old(2, 16)]);
    Built {
        dag: b.build().unwrap(),
        reads: vec![],
        writes: vec![(wd, 0, 16, block(0xe0)), (wp, 3, 16, parity)],
    }
}

pub(super) type Shape = fn(&Rig) -> Built;

pub(super) const SHAPES: &[(&str, Shape)] = &[
    ("ff_read", ff_read),
    ("nonredundant_write", nonredundant_write),
    ("mirror_read", mirror_read),
    ("mirror_write", mirror_write),
    ("large_write", large_write),
    ("small_write", small_write),
    ("small_write_partial", small_write_partial),
    ("small_write_pq", small_write_pq),
    ("degraded_read", degraded_read),
    ("degraded_write", degraded_write),
];

pub(super) const COMPONENTS: usize = 5;

#[tokio::test(start_paused = true)]
async fn every_shape_fault_free_reads_and_writes_the_right_bytes() {
    for &(name, shape) in SHAPES {
        let rig = Rig::new(COMPONENTS);
        let built = shape(&rig);
        let res = engine().run(built.dag).await.unwrap();
        assert_eq!(res.direction(), Direction::Forward, "{name}");
        assert!(res.committed(), "{name}");
        assert_eq!(res.failures().count(), 0, "{name}");
        assert!(
            res.nodes().iter().all(|n| n.outcome == NodeOutcome::Good),
            "{name}: {:?}",
            res.nodes()
        );
        for (slot, want) in &built.reads {
            assert_eq!(
                res.buffer(*slot).unwrap().as_ref(),
                want.as_slice(),
                "{name}"
            );
        }
        for (_, c, b, want) in &built.writes {
            assert_eq!(
                &rig.mems[*c].peek(*b, 1),
                want,
                "{name}: component {c} block {b}"
            );
        }
        assert_eq!(rig.log.writes().len(), built.writes.len(), "{name}");
    }
}

/// The faults injected at each node, with the error kind the node must report.
fn faults(is_write: bool, block: u64) -> Vec<(Fault, IoErrorKind)> {
    let mut v = vec![
        (
            Fault::Fail(IoErrorKind::Unavailable),
            IoErrorKind::Unavailable,
        ),
        (
            Fault::Fail(IoErrorKind::DataLoss {
                bad_blocks: vec![block],
            }),
            IoErrorKind::DataLoss {
                bad_blocks: vec![block],
            },
        ),
        (Fault::Fail(IoErrorKind::Fenced), IoErrorKind::Fenced),
        (
            Fault::Fail(IoErrorKind::ComponentFailed),
            IoErrorKind::ComponentFailed,
        ),
        (Fault::Fail(IoErrorKind::Timeout), IoErrorKind::Timeout),
        // Only the engine's deadline ends a hung call.
        (Fault::Hang, IoErrorKind::Timeout),
    ];
    if is_write {
        v.push((Fault::LateApply(Gate::new()), IoErrorKind::Timeout));
    }
    v
}

#[tokio::test(start_paused = true)]
async fn every_shape_with_each_fault_at_every_disk_node() {
    let mut cases = 0;
    for &(name, shape) in SHAPES {
        let probe = shape(&Rig::new(COMPONENTS));
        let disk_nodes: Vec<(NodeId, Mnemonic, DiskTarget, bool)> = probe
            .dag
            .nodes()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.op()
                    .target()
                    .map(|t| (NodeId::from_index(i), n.mnemonic(), *t, n.op().is_write()))
            })
            .collect();
        for &(node, mnemonic, target, is_write) in &disk_nodes {
            for (fault, kind) in faults(is_write, target.start_block) {
                cases += 1;
                let what = format!("{name}: {mnemonic} {node} with {fault:?}");
                let rig = Rig::new(COMPONENTS);
                let before = rig.snapshot();
                let built = shape(&rig);
                let op = if is_write { IoOp::Write } else { IoOp::Read };
                rig.faulty[target.component].inject(Trigger::node(mnemonic).op(op), fault.clone());
                let commit = built.dag.commit().unwrap();
                let header = built.dag.header();
                let res = engine().run(built.dag).await.unwrap();

                // The error names the node, its component and the kind.
                let failures: Vec<_> = res.failures().collect();
                assert_eq!(failures.len(), 1, "{what}: {failures:?}");
                let (failed, report, err) = failures[0];
                assert_eq!(failed, node, "{what}");
                assert_eq!(report.mnemonic, mnemonic, "{what}");
                let io = err.io().expect("a storage error");
                assert_eq!(io.kind, kind, "{what}");
                assert_eq!(io.component, format!("c{}", target.component), "{what}");
                assert_eq!(io.start_block, target.start_block, "{what}");

                if !is_write {
                    // Before the commit: backward, nothing written, everything undone.
                    assert_eq!(res.direction(), Direction::RolledBackward, "{what}");
                    assert!(!res.committed(), "{what}");
                    assert!(
                        rig.log.writes().is_empty(),
                        "{what}: {:?}",
                        rig.log.writes()
                    );
                    assert_eq!(rig.snapshot(), before, "{what}");
                    assert_eq!(*res.outcome(header), NodeOutcome::Undone, "{what}");
                    assert_eq!(*res.outcome(commit), NodeOutcome::NotFired, "{what}");
                    for (i, n) in res.nodes().iter().enumerate() {
                        assert!(
                            matches!(
                                n.outcome,
                                NodeOutcome::NotFired
                                    | NodeOutcome::Undone
                                    | NodeOutcome::Failed(_)
                            ),
                            "{what}: node {i} {:?}",
                            n.outcome
                        );
                    }
                    for (slot, _) in &built.reads {
                        assert!(res.buffer(*slot).is_none(), "{what}: read buffer kept");
                    }
                } else {
                    // After the commit: forward, every other write issued and landed.
                    assert_eq!(res.direction(), Direction::RolledForward, "{what}");
                    assert!(res.committed(), "{what}");
                    assert_eq!(res.skipped().count(), 0, "{what}");
                    let issued: BTreeSet<(String, u64)> = rig
                        .log
                        .writes()
                        .iter()
                        .map(|r| (r.component.clone(), r.start_block))
                        .collect();
                    let all: BTreeSet<(String, u64)> = built
                        .writes
                        .iter()
                        .map(|(_, c, b, _)| (format!("c{c}"), *b))
                        .collect();
                    assert_eq!(issued, all, "{what}");
                    for (w, c, b, want) in &built.writes {
                        let have = rig.mems[*c].peek(*b, 1);
                        if *w == node {
                            let prior =
                                before[*c][(*b * u64::from(BS)) as usize..][..BS as usize].to_vec();
                            assert_eq!(have, prior, "{what}: failed write landed");
                        } else {
                            assert_eq!(&have, want, "{what}: write {w}");
                        }
                    }
                    for (slot, want) in &built.reads {
                        assert_eq!(
                            res.buffer(*slot).unwrap().as_ref(),
                            want.as_slice(),
                            "{what}"
                        );
                    }
                    if let Fault::LateApply(gate) = &fault {
                        // The write the engine gave up on lands later, as on a real node.
                        gate.open();
                        rig.log
                            .wait_until(|recs| {
                                recs.iter().any(|r| r.late_apply && r.result.is_some())
                            })
                            .await;
                        let want = &built.writes.iter().find(|w| w.0 == node).unwrap().3;
                        assert_eq!(
                            &rig.mems[target.component].peek(target.start_block, 1),
                            want
                        );
                    }
                }
            }
        }
    }
    assert!(cases > 100, "only {cases} cases");
}

/// After the commit, a failed node's true-data dependents are skipped, transitively, while every
/// write not depending on it is still issued.
#[tokio::test(start_paused = true)]
async fn post_commit_failure_skips_true_data_dependents_transitively() {
    let rig = Rig::new(COMPONENTS);
    let mut b = DagBuilder::new("verify_write", rig.table());
    let d = b.buffer(Bytes::from(block(0x77)));
    let h = b.nil(&[]);
    let c = b.commit(&[(h, Control)]);
    // A read after the commit feeding an XOR feeding a write: a chain of true data.
    let (r, rd) = b.read(Mnemonic::R, t(2, 30), &[(c, Control)]);
    let (x, xd) = b.xor(Mnemonic::Xor, vec![rd.all(), d.all()], &[(r, TrueData)]);
    let w_dep = b.write(Mnemonic::Wnp, t(3, 30), xd, &[(x, TrueData)]);
    // Independent writes, one behind a control edge from the failing read.
    let w_free = b.write(Mnemonic::Wnd, t(0, 30), d, &[(c, Control)]);
    let w_ctrl = b.write(Mnemonic::W, t(1, 30), d, &[(r, Control)]);
    b.terminate(&[(w_dep, Control), (w_free, Control), (w_ctrl, Control)]);
    let dag = b.build().unwrap();
    rig.faulty[2].inject(
        Trigger::node(Mnemonic::R),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    let res = engine().run(dag).await.unwrap();
    assert_eq!(res.direction(), Direction::RolledForward);
    assert_eq!(res.failures().map(|f| f.0).collect::<Vec<_>>(), vec![r]);
    assert_eq!(res.skipped().collect::<Vec<_>>(), vec![x, w_dep]);
    assert_eq!(*res.outcome(w_free), NodeOutcome::Good);
    assert_eq!(*res.outcome(w_ctrl), NodeOutcome::Good);
    let written: BTreeSet<String> = rig.log.writes().into_iter().map(|r| r.component).collect();
    assert_eq!(written, BTreeSet::from(["c0".to_owned(), "c1".to_owned()]));
    assert_eq!(rig.mems[0].peek(30, 1), block(0x77));
    assert_eq!(rig.mems[3].peek(30, 1), old(3, 30));
}

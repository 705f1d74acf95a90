//! Tests of the DAG model: every build-time rule refuses what breaks it, precisely.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::testing::MemComponent;

use EdgeKind::{Control, TrueData};

fn comps() -> Vec<Arc<dyn ComponentIo>> {
    (0..2)
        .map(|c| MemComponent::new(format!("c{c}"), 16, 8) as Arc<dyn ComponentIo>)
        .collect()
}

fn id(i: usize) -> NodeId {
    NodeId::from_index(i)
}

/// Header, commit, a write of `data` to component 0 block 0, terminator.
fn write_dag(data: Bytes) -> DagBuilder {
    let mut b = DagBuilder::new("t", comps());
    let d = b.buffer(data);
    let h = b.nil(&[]);
    let c = b.commit(&[(h, Control)]);
    let w = b.write(Mnemonic::W, DiskTarget::new(0, 0, 1), d, &[(c, Control)]);
    b.terminate(&[(w, Control)]);
    b
}

#[test]
fn a_valid_dag_builds_with_its_successors() {
    let mut b = DagBuilder::new("small_write", comps());
    let new = b.buffer(Bytes::from(vec![1u8; 16]));
    let h = b.nil(&[]);
    let (rod, od) = b.read(Mnemonic::Rod, DiskTarget::new(0, 1, 1), &[(h, Control)]);
    let (rop, op) = b.read(Mnemonic::Rop, DiskTarget::new(1, 1, 1), &[(h, Control)]);
    let (x, np) = b.xor(
        Mnemonic::Xor,
        vec![od.all(), new.all(), op.all()],
        &[(rod, TrueData), (rop, TrueData)],
    );
    let c = b.commit(&[(x, Control)]);
    let wd = b.write(
        Mnemonic::Wnd,
        DiskTarget::new(0, 1, 1),
        new,
        &[(c, Control)],
    );
    let wp = b.write(Mnemonic::Wnp, DiskTarget::new(1, 1, 1), np, &[(c, Control)]);
    let t = b.terminate(&[(wd, Control), (wp, Control)]);
    let dag = b.build().unwrap();
    assert_eq!(dag.len(), 8);
    assert_eq!(dag.header(), h);
    assert_eq!(dag.terminator(), t);
    assert_eq!(dag.commit(), Some(c));
    assert_eq!(dag.node(h).successors(), &[rod, rop]);
    assert_eq!(dag.node(c).successors(), &[wd, wp]);
    assert_eq!(
        dag.node(x).antecedents(),
        &[(rod, TrueData), (rop, TrueData)]
    );
    assert_eq!(dag.slot_count(), 4);
    assert_eq!(dag.kind(), "small_write");
}

#[test]
fn shape_rules() {
    let b = DagBuilder::new("t", comps());
    assert_eq!(b.build().unwrap_err(), DagError::TooSmall { nodes: 0 });

    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    b.terminate(&[(h, Control)]);
    b.edge(h, id(9), Control);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::UnknownNode { from: h, to: id(9) }
    );

    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let n = b.nil(&[(h, Control)]);
    let t = b.terminate(&[(n, Control)]);
    b.edge(t, n, Control);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::BackwardEdge { from: t, to: n }
    );

    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let n = b.nil(&[(id(1), Control)]);
    b.terminate(&[(n, Control), (h, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::BackwardEdge { from: n, to: n }
    );

    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let t = b.terminate(&[(h, Control), (h, TrueData)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::DuplicateEdge { from: h, to: t }
    );

    let mut b = DagBuilder::new("t", comps());
    let c = b.commit(&[]);
    b.terminate(&[(c, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::HeaderNotNil {
            mnemonic: Mnemonic::Cmt
        }
    );

    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let n = b.nil(&[]);
    b.terminate(&[(h, Control), (n, Control)]);
    assert_eq!(b.build().unwrap_err(), DagError::SecondHeader { node: n });

    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let n = b.nil(&[(h, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::LastNotTerminator { node: n }
    );

    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let dangling = b.nil(&[(h, Control)]);
    b.terminate(&[(h, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::SecondTerminator { node: dangling }
    );

    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let t1 = b.terminate(&[(h, Control)]);
    b.terminate(&[(t1, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::SecondTerminator { node: t1 }
    );
}

#[test]
fn commit_rules() {
    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let c1 = b.commit(&[(h, Control)]);
    let c2 = b.commit(&[(c1, Control)]);
    b.terminate(&[(c2, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::MultipleCommits {
            first: c1,
            second: c2
        }
    );

    let mut b = DagBuilder::new("t", comps());
    let d = b.buffer(Bytes::from(vec![0u8; 16]));
    let h = b.nil(&[]);
    let w = b.write(Mnemonic::W, DiskTarget::new(0, 0, 1), d, &[(h, Control)]);
    b.terminate(&[(w, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::WriteWithoutCommit { node: w }
    );

    // A write beside the commit, not behind it.
    let mut b = DagBuilder::new("t", comps());
    let d = b.buffer(Bytes::from(vec![0u8; 16]));
    let h = b.nil(&[]);
    let c = b.commit(&[(h, Control)]);
    let w = b.write(Mnemonic::W, DiskTarget::new(0, 0, 1), d, &[(h, Control)]);
    b.terminate(&[(w, Control), (c, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::WriteBeforeCommit { node: w, commit: c }
    );

    // A read DAG may have no commit (it rolls forward on failure, like RAIDframe's).
    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let (r, _) = b.read(Mnemonic::R, DiskTarget::new(0, 0, 1), &[(h, Control)]);
    b.terminate(&[(r, Control)]);
    assert_eq!(b.build().unwrap().commit(), None);
}

#[test]
fn mnemonics_must_name_their_operation() {
    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let (r, _) = b.read(Mnemonic::Wnd, DiskTarget::new(0, 0, 1), &[(h, Control)]);
    b.terminate(&[(r, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::MnemonicMismatch {
            node: r,
            mnemonic: Mnemonic::Wnd,
            op: "read"
        }
    );
    for m in Mnemonic::ALL {
        assert_eq!(NodeOp::Nil.fits(m), m == Mnemonic::Nil);
        assert!(!(m.is_read() && m.is_write()));
    }
}

#[test]
fn targets_must_lie_within_their_component() {
    for (component, start, count) in [(5usize, 0u64, 1u32), (0, 7, 2), (0, 0, 0), (0, u64::MAX, 1)]
    {
        let mut b = DagBuilder::new("t", comps());
        let h = b.nil(&[]);
        let (r, _) = b.read(
            Mnemonic::R,
            DiskTarget::new(component, start, count),
            &[(h, Control)],
        );
        b.terminate(&[(r, Control)]);
        let err = b.build().unwrap_err();
        if component == 5 {
            assert_eq!(err, DagError::UnknownComponent { node: r, component });
        } else {
            assert_eq!(
                err,
                DagError::TargetOutOfRange {
                    node: r,
                    component,
                    start_block: start,
                    block_count: count,
                    component_blocks: 8
                }
            );
        }
    }
}

#[test]
fn buffer_data_flow_rules() {
    // A write of the wrong length.
    let err = write_dag(Bytes::from(vec![0u8; 15])).build().unwrap_err();
    assert_eq!(
        err,
        DagError::LengthMismatch {
            node: id(2),
            what: "written data",
            expected: 16,
            actual: 15
        }
    );
    assert!(write_dag(Bytes::from(vec![0u8; 16])).build().is_ok());

    // Consuming a sibling's slot: not an ancestor.
    let mut b = DagBuilder::new("t", comps());
    let h = b.nil(&[]);
    let (r, s) = b.read(Mnemonic::R, DiskTarget::new(0, 0, 1), &[(h, Control)]);
    let (x, _) = b.xor(Mnemonic::Xor, vec![s.all()], &[(h, Control)]);
    b.terminate(&[(r, Control), (x, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::SlotNotAvailable { node: x, slot: s }
    );

    // Two nodes filling one slot; a node filling an initial slot.
    let mut b = DagBuilder::new("t", comps());
    let init = b.buffer(Bytes::from(vec![0u8; 16]));
    let h = b.nil(&[]);
    let r1 = b.node(
        Mnemonic::R,
        NodeOp::Read {
            target: DiskTarget::new(0, 0, 1),
            into: init,
        },
        &[(h, Control)],
    );
    b.terminate(&[(r1, Control)]);
    assert_eq!(
        b.build().unwrap_err(),
        DagError::SlotReassigned {
            node: r1,
            slot: init
        }
    );

    // Unknown slot, out-of-range sub-range, unequal XOR inputs, no inputs, overlay overflow.
    let mut b = DagBuilder::new("t", comps());
    let a = b.buffer(Bytes::from(vec![0u8; 16]));
    let short = b.buffer(Bytes::from(vec![0u8; 8]));
    let h = b.nil(&[]);
    let cases: Vec<(NodeOp, DagError)> = vec![
        (
            NodeOp::Xor {
                inputs: vec![Slot(99).all()],
                into: Slot(98),
            },
            DagError::UnknownSlot {
                node: id(1),
                slot: Slot(99),
            },
        ),
        (
            NodeOp::Xor {
                inputs: vec![a.range(8..17)],
                into: Slot(2),
            },
            DagError::RangeOutOfSlot {
                node: id(1),
                slot: a,
                start: 8,
                end: 17,
                len: 16,
            },
        ),
        (
            NodeOp::Xor {
                inputs: vec![a.all(), short.all()],
                into: Slot(2),
            },
            DagError::LengthMismatch {
                node: id(1),
                what: "input",
                expected: 16,
                actual: 8,
            },
        ),
        (
            NodeOp::Q {
                terms: vec![],
                into: Slot(2),
            },
            DagError::NoInputs { node: id(1) },
        ),
        (
            NodeOp::Overlay {
                base: short.all(),
                patch: short.range(0..4),
                at: 5,
                into: Slot(2),
            },
            DagError::LengthMismatch {
                node: id(1),
                what: "overlay end (at + patch length)",
                expected: 8,
                actual: 9,
            },
        ),
    ];
    drop((b, h));
    for (op, want) in cases {
        let mut b = DagBuilder::new("t", comps());
        b.buffer(Bytes::from(vec![0u8; 16]));
        b.buffer(Bytes::from(vec![0u8; 8]));
        b.slot();
        let h = b.nil(&[]);
        let mnemonic = match op {
            NodeOp::Xor { .. } => Mnemonic::Xor,
            NodeOp::Q { .. } => Mnemonic::Q,
            _ => Mnemonic::Ovl,
        };
        let n = b.node(mnemonic, op, &[(h, Control)]);
        b.terminate(&[(n, Control)]);
        assert_eq!(b.build().unwrap_err(), want);
    }
}

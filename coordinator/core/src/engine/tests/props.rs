//! Property test: random DAGs under random fault schedules keep the engine's invariants.
//!
//! The DAG, its faults and its run are derived from plain random numbers, so proptest shrinks
//! them. The invariants are checked from outside the engine: from the spans a capturing subscriber
//! saw (their open and close order), the component log, and the result.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::capture::{Capture, SpanRec};
use super::{Rig, block, engine};
use crate::dag::{DagBuilder, DiskTarget, EdgeKind, Mnemonic, NodeId, NodeOp, Slot};
use crate::engine::{Direction, NodeOutcome};
use crate::io::IoErrorKind;
use crate::testing::{Fault, IoOp, Trigger};

const COMPONENTS: usize = 3;

#[derive(Debug, Clone)]
struct NodeSpec {
    kind: u8,
    picks: Vec<u16>,
    edges: Vec<u8>,
    fault: u8,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (0u8..4, vec(any::<u16>(), 1..4), vec(0u8..4, 3), 0u8..9).prop_map(
        |(kind, picks, edges, fault)| NodeSpec {
            kind,
            picks,
            edges,
            fault,
        },
    )
}

fn edge_kind(k: u8) -> EdgeKind {
    match k % 4 {
        0 => EdgeKind::TrueData,
        1 => EdgeKind::AntiData,
        2 => EdgeKind::OutputData,
        _ => EdgeKind::Control,
    }
}

/// What the checks need to know of the generated DAG.
struct Shape {
    antecedents: Vec<Vec<(usize, EdgeKind)>>,
    successors: Vec<Vec<usize>>,
    writes: Vec<bool>,
    commit: Option<usize>,
}

/// Builds the DAG described by `specs` over `rig` and injects its faults.
fn generate(
    rig: &Rig,
    specs: &[NodeSpec],
    commit_pick: u16,
    with_commit: bool,
) -> (crate::dag::Dag, Shape) {
    let m = specs.len();
    let commit = with_commit.then(|| 1 + commit_pick as usize % m);
    let mut b = DagBuilder::new("random", rig.table());
    let user = b.buffer(Bytes::from(block(0x42)));
    let mut produces: Vec<Option<Slot>> = vec![None];
    let mut antecedents: Vec<Vec<(usize, EdgeKind)>> = vec![vec![]];
    let mut writes = vec![false];
    b.nil(&[]);
    for (j, spec) in specs.iter().enumerate() {
        let i = j + 1;
        let mut ants: Vec<(usize, EdgeKind)> = Vec::new();
        for (k, p) in spec.picks.iter().enumerate() {
            let a = *p as usize % i;
            if !ants.iter().any(|&(x, _)| x == a) {
                ants.push((a, edge_kind(spec.edges[k % spec.edges.len()])));
            }
        }
        let after_commit = commit.is_some_and(|c| i > c);
        let kind = if Some(i) == commit {
            9
        } else if spec.kind == 3 && !after_commit {
            1
        } else {
            spec.kind
        };
        let data_in: Vec<Slot> = ants
            .iter()
            .filter(|(_, e)| *e == EdgeKind::TrueData)
            .filter_map(|(a, _)| produces[*a])
            .collect();
        let target = DiskTarget::new(i % COMPONENTS, i as u64, 1);
        let (op, out) = match kind {
            9 => (NodeOp::Commit, None),
            0 => (NodeOp::Nil, None),
            1 => {
                let into = b.slot();
                (NodeOp::Read { target, into }, Some(into))
            }
            2 => {
                let into = b.slot();
                let mut inputs: Vec<_> = data_in.iter().map(|s| s.all()).collect();
                if inputs.is_empty() {
                    inputs.push(user.all());
                }
                (NodeOp::Xor { inputs, into }, Some(into))
            }
            _ => {
                let c = commit.expect("writes only after a commit");
                if !ants.iter().any(|&(a, _)| a == c) {
                    ants.push((c, EdgeKind::Control));
                }
                let from = data_in.first().copied().unwrap_or(user).all();
                (NodeOp::Write { target, from }, None)
            }
        };
        let mnemonic = match &op {
            NodeOp::Commit => Mnemonic::Cmt,
            NodeOp::Nil => Mnemonic::Nil,
            NodeOp::Read { .. } => Mnemonic::R,
            NodeOp::Xor { .. } => Mnemonic::Xor,
            _ => Mnemonic::W,
        };
        if op.is_disk() {
            let fault = match spec.fault {
                4 => Some(Fault::Delay(Duration::from_millis(u64::from(
                    spec.picks[0] % 50,
                )))),
                5 => Some(Fault::Fail(IoErrorKind::Unavailable)),
                6 => Some(Fault::Fail(IoErrorKind::DataLoss {
                    bad_blocks: vec![i as u64],
                })),
                7 => Some(Fault::Hang),
                _ => None,
            };
            if let Some(fault) = fault {
                let io_op = if op.is_write() {
                    IoOp::Write
                } else {
                    IoOp::Read
                };
                rig.faulty[target.component]
                    .inject(Trigger::always().op(io_op).at_block(i as u64), fault);
            }
        }
        writes.push(op.is_write());
        let edge_list: Vec<(NodeId, EdgeKind)> = ants
            .iter()
            .map(|&(a, e)| (NodeId::from_index(a), e))
            .collect();
        b.node(mnemonic, op, &edge_list);
        produces.push(out);
        antecedents.push(ants);
    }
    let n = m + 2;
    let mut successors: Vec<Vec<usize>> = vec![vec![]; n];
    for (i, ants) in antecedents.iter().enumerate() {
        for &(a, _) in ants {
            successors[a].push(i);
        }
    }
    let sinks: Vec<usize> = (0..=m).filter(|&i| successors[i].is_empty()).collect();
    let trm_ants: Vec<(NodeId, EdgeKind)> = sinks
        .iter()
        .map(|&s| (NodeId::from_index(s), EdgeKind::Control))
        .collect();
    b.terminate(&trm_ants);
    for &s in &sinks {
        successors[s].push(m + 1);
    }
    antecedents.push(sinks.iter().map(|&s| (s, EdgeKind::Control)).collect());
    writes.push(false);
    let dag = b.build().expect("generated DAGs are valid");
    (
        dag,
        Shape {
            antecedents,
            successors,
            writes,
            commit,
        },
    )
}

/// Spans of one node.
#[derive(Default, Debug)]
struct NodeSpans {
    do_span: Option<SpanRec>,
    undo_span: Option<SpanRec>,
}

fn run_case(
    specs: Vec<NodeSpec>,
    commit_pick: u16,
    with_commit: bool,
) -> Result<(), TestCaseError> {
    let rig = Rig::new(COMPONENTS);
    let (dag, shape) = generate(&rig, &specs, commit_pick, with_commit);
    let n = dag.len();
    let terminator = n - 1;
    let cap = Capture::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let res = {
        let _guard = cap.install();
        rt.block_on(async { engine().run(dag).await.unwrap() })
    };

    // Collect the spans per node; each firing at most once.
    let spans = cap.spans();
    let dag_spans: Vec<usize> = (0..spans.len())
        .filter(|&i| spans[i].name == "dag")
        .collect();
    prop_assert_eq!(dag_spans.len(), 1, "exactly one DAG span");
    let mut per: Vec<NodeSpans> = (0..n).map(|_| NodeSpans::default()).collect();
    for s in spans.iter().filter(|s| s.parent == Some(dag_spans[0])) {
        let slot = if s.field("direction") == Some("do") {
            &mut per[s.node()].do_span
        } else {
            &mut per[s.node()].undo_span
        };
        prop_assert!(
            slot.is_none(),
            "node {} fired twice in one direction",
            s.node()
        );
        *slot = Some(s.clone());
    }
    let skip_seq: BTreeMap<usize, u64> = cap
        .events()
        .iter()
        .filter(|e| e.fields.get("message").map(String::as_str) == Some("node skipped"))
        .map(|e| (e.fields["node"].parse().unwrap(), e.seq))
        .collect();
    let failed = |i: usize| {
        per[i]
            .do_span
            .as_ref()
            .is_some_and(|s| s.field("outcome") == Some("failed"))
    };

    for i in 0..n {
        // No node fires before its antecedents are done.
        if let Some(d) = &per[i].do_span {
            for &(a, _) in &shape.antecedents[i] {
                let done_at = per[a]
                    .do_span
                    .as_ref()
                    .and_then(|s| s.closed)
                    .or(skip_seq.get(&a).copied());
                prop_assert!(
                    done_at.is_some_and(|t| t < d.opened),
                    "node {i} fired before antecedent {a} was done"
                );
            }
        }
        // Undo: only completed nodes, after every fired successor settled.
        if let Some(u) = &per[i].undo_span {
            let d = per[i].do_span.as_ref();
            prop_assert!(
                d.is_some_and(|d| d.field("outcome") == Some("good")),
                "undo of node {i} that did not complete"
            );
            for &s in &shape.successors[i] {
                if let Some(sd) = &per[s].do_span {
                    let settled_at = match &per[s].undo_span {
                        Some(su) => su.closed,
                        None if sd.field("outcome") == Some("failed") => sd.closed,
                        None => None,
                    };
                    prop_assert!(
                        settled_at.is_some_and(|t| t < u.opened),
                        "node {i} undone before its successor {s} settled"
                    );
                }
            }
        }
        // No write before the commit.
        if shape.writes[i]
            && let Some(d) = &per[i].do_span
        {
            let c = shape.commit.expect("a DAG that writes has a commit");
            let c_closed = per[c].do_span.as_ref().and_then(|s| s.closed);
            prop_assert!(
                c_closed.is_some_and(|t| t < d.opened),
                "write {i} before the commit"
            );
        }
    }
    let issued_writes = rig.log.writes().len();
    let write_spans = (0..n)
        .filter(|&i| shape.writes[i] && per[i].do_span.is_some())
        .count();
    prop_assert_eq!(issued_writes, write_spans);

    // The direction follows the commit barrier at the first failure.
    let first_failure = (0..n)
        .filter(|&i| failed(i))
        .filter_map(|i| per[i].do_span.as_ref().and_then(|s| s.closed))
        .min();
    let expected = match first_failure {
        None => Direction::Forward,
        Some(t) => {
            let committed_before = shape.commit.map(|c| {
                per[c]
                    .do_span
                    .as_ref()
                    .and_then(|s| s.closed)
                    .is_some_and(|ct| ct < t)
            });
            match committed_before {
                None | Some(true) => Direction::RolledForward,
                Some(false) => Direction::RolledBackward,
            }
        }
    };
    prop_assert_eq!(res.direction(), expected);

    // Exactly one completion, at the terminator or at the header.
    match expected {
        Direction::RolledBackward => {
            prop_assert!(per[0].undo_span.is_some(), "backward ends at the header");
            prop_assert!(per[terminator].do_span.is_none());
            for (i, r) in res.nodes().iter().enumerate() {
                prop_assert!(
                    matches!(
                        r.outcome,
                        NodeOutcome::NotFired | NodeOutcome::Undone | NodeOutcome::Failed(_)
                    ),
                    "node {} left {:?} after rolling backward",
                    i,
                    r.outcome
                );
            }
            prop_assert_eq!(issued_writes, 0);
        }
        _ => {
            prop_assert!(
                per[terminator].do_span.is_some(),
                "forward ends at the terminator"
            );
            prop_assert!(per.iter().all(|p| p.undo_span.is_none()));
            // Transitive skipping, and every other node (every write included) fired.
            for i in 0..n {
                let no_data = shape.antecedents[i].iter().any(|&(a, e)| {
                    e == EdgeKind::TrueData
                        && matches!(
                            res.nodes()[a].outcome,
                            NodeOutcome::Failed(_) | NodeOutcome::Skipped
                        )
                });
                let skipped = res.nodes()[i].outcome == NodeOutcome::Skipped;
                prop_assert_eq!(
                    skipped,
                    no_data && i != terminator,
                    "skip rule at node {}",
                    i
                );
                prop_assert!(res.nodes()[i].outcome != NodeOutcome::NotFired);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_time: 30_000, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_under_random_faults_keep_the_engine_invariants(
        specs in vec(node_spec(), 1..12),
        commit_pick in any::<u16>(),
        with_commit in prop::bool::weighted(0.85),
    ) {
        run_case(specs, commit_pick, with_commit)?;
    }
}

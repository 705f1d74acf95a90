//! Cancellation, concurrency, undo failures, deadlines, the issuing node, and the spans of every
//! firing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use super::capture::Capture;
use super::shapes::{self, COMPONENTS, SHAPES, old, t};
use super::{BS, Rig, block, engine, xor};
use crate::dag::{DagBuilder, EdgeKind, Mnemonic, NodeId};
use crate::engine::{DagResult, Direction, Engine, EngineConfig, NodeOutcome};
use crate::io::IoErrorKind;
use crate::testing::{Fault, Gate, IoOp, IoRecord, Trigger};

/// Generous bound for tests on real time; they wait for events, never for durations.
const PATIENCE: Duration = Duration::from_secs(30);

fn issued(recs: &[IoRecord], m: Mnemonic) -> bool {
    recs.iter()
        .any(|r| r.issuer.is_some_and(|i| i.mnemonic == m))
}

fn completed_writes(recs: &[IoRecord]) -> usize {
    recs.iter()
        .filter(|r| r.op == IoOp::Write && r.result == Some(Ok(())))
        .count()
}

fn check_small_write_landed(rig: &Rig) {
    assert_eq!(rig.mems[1].peek(12, 1), block(0xd1));
    assert_eq!(
        rig.mems[3].peek(12, 1),
        xor(&[&old(1, 12), &block(0xd1), &old(3, 12)])
    );
}

#[tokio::test]
async fn dropping_the_handle_mid_run_still_completes_the_dag() {
    let rig = Rig::new(COMPONENTS);
    let gate = Gate::new();
    rig.faulty[1].inject(Trigger::node(Mnemonic::Rod), Fault::HoldUntil(gate.clone()));
    let handle = engine().run(shapes::small_write(&rig).dag);
    tokio::time::timeout(PATIENCE, async {
        rig.log.wait_until(|r| issued(r, Mnemonic::Rod)).await;
        drop(handle);
        gate.open();
        rig.log.wait_until(|r| completed_writes(r) == 2).await;
    })
    .await
    .expect("the detached DAG completes");
    check_small_write_landed(&rig);
}

#[tokio::test]
async fn aborting_the_callers_task_still_completes_the_dag() {
    let rig = Rig::new(COMPONENTS);
    let gate = Gate::new();
    rig.faulty[1].inject(Trigger::node(Mnemonic::Rod), Fault::HoldUntil(gate.clone()));
    let dag = shapes::small_write(&rig).dag;
    // Like a gRPC handler whose client disconnected.
    let caller = tokio::spawn(async move { engine().run(dag).await });
    tokio::time::timeout(PATIENCE, async {
        rig.log.wait_until(|r| issued(r, Mnemonic::Rod)).await;
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        gate.open();
        rig.log.wait_until(|r| completed_writes(r) == 2).await;
    })
    .await
    .expect("the DAG outlives its caller");
    check_small_write_landed(&rig);
}

#[tokio::test]
async fn all_ready_nodes_are_in_flight_at_once() {
    let rig = Rig::new(COMPONENTS);
    let gate = Gate::new();
    let mut b = DagBuilder::new("wide_read", rig.table());
    let h = b.nil(&[]);
    let reads: Vec<_> = (0..COMPONENTS)
        .map(|c| {
            rig.faulty[c].inject(Trigger::always(), Fault::HoldUntil(gate.clone()));
            b.read(Mnemonic::R, t(c, 40), &[(h, EdgeKind::Control)]).0
        })
        .collect();
    let ants: Vec<_> = reads.iter().map(|&r| (r, EdgeKind::Control)).collect();
    let c = b.commit(&ants);
    b.terminate(&[(c, EdgeKind::Control)]);
    let handle = engine().run(b.build().unwrap());
    // Every read is issued while none has answered.
    tokio::time::timeout(PATIENCE, rig.log.wait_until(|r| r.len() == COMPONENTS))
        .await
        .expect("all reads in flight together");
    assert!(rig.log.records().iter().all(|r| r.result.is_none()));
    gate.open();
    let res = tokio::time::timeout(PATIENCE, handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.direction(), Direction::Forward);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_dags_run_concurrently_without_interfering() {
    let rig = Rig::new(COMPONENTS);
    let engine = engine();
    let mut handles = Vec::new();
    for blk in 0..48u64 {
        let mut b = DagBuilder::new("small_write", rig.table());
        let new = b.buffer(Bytes::from(block(blk as u8 ^ 0x55)));
        let h = b.nil(&[]);
        let (rod, od) = b.read(Mnemonic::Rod, t(0, blk), &[(h, EdgeKind::Control)]);
        let (rop, op) = b.read(Mnemonic::Rop, t(3, blk), &[(h, EdgeKind::Control)]);
        let (x, np) = b.xor(
            Mnemonic::Xor,
            vec![od.all(), new.all(), op.all()],
            &[(rod, EdgeKind::TrueData), (rop, EdgeKind::TrueData)],
        );
        let c = b.commit(&[(x, EdgeKind::Control)]);
        let wd = b.write(Mnemonic::Wnd, t(0, blk), new, &[(c, EdgeKind::Control)]);
        let wp = b.write(Mnemonic::Wnp, t(3, blk), np, &[(c, EdgeKind::Control)]);
        b.terminate(&[(wd, EdgeKind::Control), (wp, EdgeKind::Control)]);
        handles.push(engine.run(b.build().unwrap()));
    }
    let mut ids = BTreeSet::new();
    for h in handles {
        let res = tokio::time::timeout(PATIENCE, h).await.unwrap().unwrap();
        assert_eq!(res.direction(), Direction::Forward);
        assert!(ids.insert(res.dag_id()), "DAG ids are unique");
    }
    for blk in 0..48u64 {
        let new = block(blk as u8 ^ 0x55);
        assert_eq!(rig.mems[0].peek(blk, 1), new);
        assert_eq!(
            rig.mems[3].peek(blk, 1),
            xor(&[&old(0, blk), &new, &old(3, blk)])
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_undo_is_reported_and_the_walk_goes_on() {
    let rig = Rig::new(COMPONENTS);
    let built = shapes::small_write(&rig);
    let (rod, rop) = (NodeId::from_index(1), NodeId::from_index(2));
    assert_eq!(built.dag.node(rod).mnemonic(), Mnemonic::Rod);
    // Rop fails; Rod completes (before or after) and must be undone: its undo is made to fail.
    rig.faulty[3].inject(
        Trigger::node(Mnemonic::Rop),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    let engine = Engine::failing_undo_of(EngineConfig::default(), rod);
    let res = engine.run(built.dag).await.unwrap();
    assert_eq!(res.direction(), Direction::RolledBackward);
    assert!(matches!(res.outcome(rod), NodeOutcome::UndoFailed(_)));
    assert_eq!(
        res.undo_failures().map(|f| f.0).collect::<Vec<_>>(),
        vec![rod]
    );
    assert!(matches!(res.outcome(rop), NodeOutcome::Failed(_)));
    assert_eq!(*res.outcome(NodeId::from_index(0)), NodeOutcome::Undone);
    assert!(rig.log.writes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_node_finishing_after_the_failure_is_undone_in_turn() {
    let rig = Rig::new(COMPONENTS);
    let built = shapes::small_write(&rig);
    let (rod, rop) = (NodeId::from_index(1), NodeId::from_index(2));
    // Rod fails at once; Rop is still in flight and completes good while rolling backward.
    rig.faulty[1].inject(
        Trigger::node(Mnemonic::Rod),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    rig.faulty[3].inject(
        Trigger::node(Mnemonic::Rop),
        Fault::Delay(Duration::from_millis(50)),
    );
    let res = engine().run(built.dag).await.unwrap();
    assert_eq!(res.direction(), Direction::RolledBackward);
    assert!(matches!(res.outcome(rod), NodeOutcome::Failed(_)));
    assert_eq!(*res.outcome(rop), NodeOutcome::Undone);
    assert_eq!(*res.outcome(NodeId::from_index(0)), NodeOutcome::Undone);
    let rop_call = rig
        .log
        .records()
        .into_iter()
        .find(|r| r.component == "c3")
        .unwrap();
    assert_eq!(rop_call.result, Some(Ok(())));
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_fails_with_timeout_at_the_deadline() {
    let rig = Rig::new(COMPONENTS);
    rig.faulty[1].inject(Trigger::node(Mnemonic::Rmir), Fault::Hang);
    let start = tokio::time::Instant::now();
    let res = engine().run(shapes::mirror_read(&rig).dag).await.unwrap();
    // Virtual time: exactly the configured deadline passed.
    assert_eq!(start.elapsed(), engine().config().node_deadline);
    let (_, _, err) = res.failures().next().unwrap();
    assert_eq!(err.io().unwrap().kind, IoErrorKind::Timeout);
    assert_eq!(res.direction(), Direction::RolledBackward);
}

#[tokio::test(start_paused = true)]
async fn component_calls_carry_the_issuing_node() {
    let rig = Rig::new(COMPONENTS);
    let res = engine().run(shapes::small_write(&rig).dag).await.unwrap();
    let by: BTreeMap<String, (u64, usize)> = rig
        .log
        .records()
        .iter()
        .map(|r| {
            let i = r.issuer.expect("engine calls carry their node");
            assert_eq!(i.dag_id, res.dag_id());
            assert_eq!(i.dag_kind, "small_write");
            (
                i.mnemonic.as_str().to_owned(),
                (r.start_block, i.node.index()),
            )
        })
        .collect();
    let want: BTreeMap<String, (u64, usize)> = [("Rod", 1), ("Rop", 2), ("Wnd", 5), ("Wnp", 6)]
        .into_iter()
        .map(|(m, n)| (m.to_owned(), (12, n)))
        .collect();
    assert_eq!(by, want);
}

/// Checks the spans of one run: one `dag` span with the result, and exactly one span per firing
/// (do and undo), named by the node's mnemonic, with its fields.
fn check_spans(cap: &Capture, res: &DagResult, mnemonics: &[Mnemonic]) {
    let spans = cap.spans();
    let dags: Vec<usize> = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == "dag" && s.field("dag_id") == Some(&res.dag_id().to_string()))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(dags.len(), 1, "one DAG span");
    let dag = &spans[dags[0]];
    assert_eq!(dag.field("dag_kind"), Some(res.kind()));
    assert_eq!(dag.field("direction"), Some(res.direction().as_str()));
    assert_eq!(
        dag.field("committed"),
        Some(res.committed().to_string().as_str())
    );
    assert_eq!(
        dag.field("failed"),
        Some(res.failures().count().to_string().as_str())
    );
    assert!(dag.closed.is_some());

    let mut seen = BTreeSet::new();
    for s in spans.iter().filter(|s| s.parent == Some(dags[0])) {
        let node = s.node();
        let dir = s.field("direction").unwrap().to_owned();
        assert!(
            seen.insert((node, dir.clone())),
            "second {dir} span for node {node}"
        );
        assert_eq!(s.name, mnemonics[node].as_str(), "span name of node {node}");
        // The DAG's kind and id are on its span only.
        assert_eq!(s.field("dag_kind"), None, "node {node}");
        assert_eq!(s.field("dag_id"), None, "node {node}");
        assert!(s.closed.is_some(), "span of node {node} closed");
        let report = &res.nodes()[node];
        let outcome = s.field("outcome").unwrap();
        if dir == "do" {
            let want = match &report.outcome {
                NodeOutcome::Failed(_) => "failed",
                _ => "good",
            };
            assert_eq!(outcome, want, "node {node}");
        } else {
            assert_eq!(outcome, report.outcome.as_str(), "node {node}");
        }
        if let Some(t) = report.target {
            assert_eq!(
                s.field("component"),
                Some(format!("c{}", t.component).as_str())
            );
            assert_eq!(
                s.field("offset"),
                Some((t.start_block * u64::from(BS)).to_string().as_str())
            );
            assert_eq!(
                s.field("length"),
                Some(
                    (u64::from(t.block_count) * u64::from(BS))
                        .to_string()
                        .as_str()
                )
            );
        }
    }
    let mut want = BTreeSet::new();
    for (i, n) in res.nodes().iter().enumerate() {
        if n.outcome.fired() {
            want.insert((i, "do".to_owned()));
        }
        if matches!(n.outcome, NodeOutcome::Undone | NodeOutcome::UndoFailed(_)) {
            want.insert((i, "undo".to_owned()));
        }
    }
    assert_eq!(seen, want, "exactly one span per firing");

    let events: Vec<_> = cap
        .events()
        .into_iter()
        .filter(|e| e.parent == Some(dags[0]))
        .collect();
    let skips: BTreeSet<usize> = events
        .iter()
        .filter(|e| e.fields.get("message").map(String::as_str) == Some("node skipped"))
        .map(|e| e.fields["node"].parse().unwrap())
        .collect();
    assert_eq!(skips, res.skipped().map(NodeId::index).collect());
    let decisions = events
        .iter()
        .filter(|e| e.fields.get("message").map(String::as_str) == Some("recovery decision"))
        .count();
    assert_eq!(decisions, usize::from(res.failures().count() > 0));
}

#[tokio::test(start_paused = true)]
async fn one_span_per_firing_named_by_mnemonic() {
    let cap = Capture::default();
    let _guard = cap.install();
    for &(name, shape) in SHAPES {
        let rig = Rig::new(COMPONENTS);
        let built = shape(&rig);
        let mnemonics: Vec<Mnemonic> = built.dag.nodes().iter().map(|n| n.mnemonic()).collect();
        let res = engine().run(built.dag).await.unwrap();
        check_spans(&cap, &res, &mnemonics);
        assert_eq!(res.direction(), Direction::Forward, "{name}");
    }
    // A backward run: do and undo spans.
    let rig = Rig::new(COMPONENTS);
    rig.faulty[3].inject(
        Trigger::node(Mnemonic::Rop),
        Fault::Fail(IoErrorKind::Fenced),
    );
    let built = shapes::small_write(&rig);
    let mnemonics: Vec<Mnemonic> = built.dag.nodes().iter().map(|n| n.mnemonic()).collect();
    let res = engine().run(built.dag).await.unwrap();
    assert_eq!(res.direction(), Direction::RolledBackward);
    check_spans(&cap, &res, &mnemonics);
    // A forward run with skipped nodes.
    let rig = Rig::new(COMPONENTS);
    rig.faulty[2].inject(
        Trigger::node(Mnemonic::R),
        Fault::Fail(IoErrorKind::Unavailable),
    );
    let mut b = DagBuilder::new("verify_write", rig.table());
    let h = b.nil(&[]);
    let c = b.commit(&[(h, EdgeKind::Control)]);
    let (r, rd) = b.read(Mnemonic::R, t(2, 30), &[(c, EdgeKind::Control)]);
    let w = b.write(Mnemonic::W, t(3, 30), rd, &[(r, EdgeKind::TrueData)]);
    b.terminate(&[(w, EdgeKind::Control)]);
    let dag = b.build().unwrap();
    let mnemonics: Vec<Mnemonic> = dag.nodes().iter().map(|n| n.mnemonic()).collect();
    let res = engine().run(dag).await.unwrap();
    assert_eq!(res.skipped().count(), 1);
    check_spans(&cap, &res, &mnemonics);
}

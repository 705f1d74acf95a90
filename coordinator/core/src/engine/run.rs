//! One DAG run: an async state machine over plain counters.
//!
//! Disk nodes are futures in a [`FuturesUnordered`]; everything else (Nil, Cmt, Trm, XOR, Q,
//! overlay, and every undo) finishes in place through a local work list, so a completion cascades
//! without a trip through a queue and without recursion. Nothing is shared with other runs: no
//! lock is taken anywhere.
//!
//! Counters per node, as in RAIDframe: antecedents done (forward readiness), successors fired, and
//! successors settled (backward readiness; RAIDframe's "successors done" counted do and undo
//! completions alike, so its undo walk could never finish once a successor had been undone).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tracing::{Instrument, Span};

use super::recovery::{self, AntecedentEnd, Mode};
use super::result::{DagResult, Direction, NodeOutcome, NodeReport};
use super::trace::{self, NodeFields, Phase};
use super::{ISSUER, IssuingNode};
use crate::dag::ops::{self, disk};
use crate::dag::{ComponentTable, DagParts, EdgeKind, Node, NodeError, NodeId, NodeOp};

/// A node's state (RAIDframe's `rf_wait` ... `rf_panic`).
#[derive(Debug)]
enum State {
    Wait,
    Fired,
    Good,
    Bad(NodeError),
    Skipped,
    Recovering,
    Undone,
    UndoFailed(NodeError),
}

/// A finished do or undo, waiting to be processed.
struct Finish {
    node: usize,
    phase: Phase,
    result: Result<Option<Bytes>, NodeError>,
    span: Span,
}

enum Work {
    Finish(Finish),
    /// Forward: count the node as done in each successor.
    Propagate(usize),
}

pub(crate) struct Run {
    dag_id: u64,
    kind: &'static str,
    nodes: Vec<Node>,
    components: ComponentTable,
    buffers: Vec<Option<Bytes>>,
    has_commit: bool,
    deadline: Duration,
    dag_span: Span,
    stats: std::sync::Arc<super::EngineStats>,

    state: Vec<State>,
    ant_done: Vec<u32>,
    succ_fired: Vec<u32>,
    succ_settled: Vec<u32>,
    mode: Mode,
    commits_fired: u32,
    terminator_reached: bool,

    work: Vec<Work>,
    inflight: FuturesUnordered<BoxFuture<'static, Finish>>,

    #[cfg(test)]
    fail_undo_of: Option<NodeId>,
}

impl Run {
    pub(crate) fn new(
        dag_id: u64,
        parts: DagParts,
        engine: &super::Engine,
        dag_span: Span,
    ) -> Self {
        let n = parts.nodes.len();
        Run {
            dag_id,
            kind: parts.kind,
            has_commit: parts.commit.is_some(),
            nodes: parts.nodes,
            components: parts.components,
            buffers: parts.buffers,
            deadline: engine.config.node_deadline,
            dag_span,
            stats: engine.stats.clone(),
            state: (0..n).map(|_| State::Wait).collect(),
            ant_done: vec![0; n],
            succ_fired: vec![0; n],
            succ_settled: vec![0; n],
            mode: Mode::Enable,
            commits_fired: 0,
            terminator_reached: false,
            work: Vec::with_capacity(n),
            inflight: FuturesUnordered::new(),
            #[cfg(test)]
            fail_undo_of: engine.fail_undo_of,
        }
    }

    /// Runs the DAG to its completion and reports.
    pub(crate) async fn execute(mut self) -> DagResult {
        let stats = self.stats.clone();
        stats
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The header is ready by construction: it has no antecedents.
        self.fire(0);
        self.drain();
        while let Some(finish) = self.inflight.next().await {
            self.work.push(Work::Finish(finish));
            self.drain();
        }
        let result = self.into_result();
        stats
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    fn drain(&mut self) {
        while let Some(w) = self.work.pop() {
            match w {
                Work::Finish(f) => self.finish(f),
                Work::Propagate(n) => self.propagate(n),
            }
        }
    }

    fn terminator(&self) -> usize {
        self.nodes.len() - 1
    }

    fn span(&self, node: usize, phase: Phase) -> Span {
        let n = &self.nodes[node];
        let target = n.op().target();
        let (component, block_size) = match target {
            Some(t) => {
                let c = &self.components[t.component];
                (Some(c.id()), u64::from(c.block_size()))
            }
            None => (None, 0),
        };
        let fields = NodeFields {
            node,
            component,
            column: target.map(|t| t.component),
            offset: target.map(|t| t.start_block * block_size),
            length: target.map(|t| u64::from(t.block_count) * block_size),
            phase,
        };
        trace::node_span(n.mnemonic(), &self.dag_span, &fields)
    }

    /// Starts a ready node's do: disk nodes go in flight, the rest finish in place.
    fn fire(&mut self, node: usize) {
        self.state[node] = State::Fired;
        for k in 0..self.nodes[node].antecedents().len() {
            let a = self.nodes[node].antecedents()[k].0.index();
            self.succ_fired[a] += 1;
        }
        let span = self.span(node, Phase::Do);
        let op = self.nodes[node].op();
        match op {
            NodeOp::Read { target, .. } => {
                let io = self.components[target.component].clone();
                let fut = disk::read(io, *target, self.deadline);
                self.push_io(node, fut, span);
            }
            NodeOp::Write { target, from } => match ops::resolve(&self.buffers, from) {
                Ok(data) => {
                    let io = self.components[target.component].clone();
                    let fut = disk::write(io, *target, data, self.deadline);
                    self.push_io(node, fut, span);
                }
                Err(e) => self.work.push(Work::Finish(Finish {
                    node,
                    phase: Phase::Do,
                    result: Err(e),
                    span,
                })),
            },
            _ => {
                if matches!(op, NodeOp::Commit) {
                    self.commits_fired += 1;
                }
                let result = {
                    let _entered = span.enter();
                    op.run_inline(&self.buffers)
                };
                self.work.push(Work::Finish(Finish {
                    node,
                    phase: Phase::Do,
                    result,
                    span,
                }));
            }
        }
    }

    fn push_io<F>(&mut self, node: usize, fut: F, span: Span)
    where
        F: Future<Output = Result<Option<Bytes>, NodeError>> + Send + 'static,
    {
        let issuer = IssuingNode {
            dag_id: self.dag_id,
            dag_kind: self.kind,
            node: NodeId::from_index(node),
            mnemonic: self.nodes[node].mnemonic(),
        };
        let io_span = span.clone();
        self.inflight.push(Box::pin(async move {
            let result = ISSUER.scope(issuer, fut).instrument(io_span).await;
            Finish {
                node,
                phase: Phase::Do,
                result,
                span,
            }
        }));
    }

    fn finish(&mut self, f: Finish) {
        let Finish {
            node,
            phase,
            result,
            span,
        } = f;
        // The span closes before anything the completion causes begins, so a trace shows
        // causes strictly before effects.
        let outcome = match (&phase, &result) {
            (Phase::Do, Ok(_)) => "good",
            (Phase::Do, Err(_)) => "failed",
            (Phase::Undo, Ok(_)) => "undone",
            (Phase::Undo, Err(_)) => "undo_failed",
        };
        span.record("outcome", outcome);
        self.stats.fired(
            self.nodes[node].mnemonic(),
            phase == Phase::Undo,
            result.is_err(),
        );
        if let Err(e) = &result {
            span.record("error", tracing::field::display(e));
        }
        drop(span);
        match (phase, result) {
            (Phase::Do, Ok(out)) => {
                if let (Some(bytes), Some(slot)) = (out, self.nodes[node].op().output())
                    && let Some(s) = self.buffers.get_mut(slot.index())
                {
                    *s = Some(bytes);
                }
                self.state[node] = State::Good;
                if node == self.terminator() {
                    self.terminator_reached = true;
                }
                if self.mode.is_forward() {
                    self.work.push(Work::Propagate(node));
                } else {
                    // Finished while the DAG was already rolling backward: undo it in turn.
                    self.maybe_undo(node);
                }
            }
            (Phase::Do, Err(e)) => {
                self.state[node] = State::Bad(e);
                self.settle(node);
                if self.mode == Mode::Enable {
                    self.decide(node);
                }
                if self.mode.is_forward() {
                    self.work.push(Work::Propagate(node));
                }
            }
            (Phase::Undo, Ok(_)) => {
                self.state[node] = State::Undone;
                self.settle(node);
            }
            (Phase::Undo, Err(e)) => {
                self.state[node] = State::UndoFailed(e);
                self.settle(node);
            }
        }
    }

    /// The first failure decides the direction (RAIDframe's `ProcessNode`).
    fn decide(&mut self, failed: usize) {
        self.mode = recovery::mode_after_failure(self.commits_fired, self.has_commit);
        let direction = match self.mode {
            Mode::RollBackward => "roll_backward",
            _ => "roll_forward",
        };
        tracing::warn!(
            parent: &self.dag_span,
            node = failed as u64,
            mnemonic = self.nodes[failed].mnemonic().as_str(),
            commits_fired = self.commits_fired,
            direction,
            "recovery decision"
        );
        if self.mode == Mode::RollBackward {
            // Completed nodes with no fired successor left unsettled start the undo walk.
            for n in 0..self.nodes.len() {
                self.maybe_undo(n);
            }
        }
    }

    /// Forward: the node is done; successors whose antecedents are all done become ready.
    fn propagate(&mut self, node: usize) {
        if !self.mode.is_forward() {
            return;
        }
        for k in 0..self.nodes[node].successors().len() {
            let s = self.nodes[node].successors()[k].index();
            self.ant_done[s] += 1;
            if self.ant_done[s] as usize == self.nodes[s].antecedents().len()
                && matches!(self.state[s], State::Wait)
            {
                self.ready(s);
            }
        }
    }

    fn ready(&mut self, node: usize) {
        let state = &self.state;
        let skip = node != self.terminator()
            && recovery::must_skip(self.nodes[node].antecedents().iter().map(|&(a, kind)| {
                let end = match state[a.index()] {
                    State::Bad(_) | State::Skipped => AntecedentEnd::NoData,
                    _ => AntecedentEnd::Good,
                };
                (kind, end)
            }));
        if skip {
            self.skip(node);
        } else {
            self.fire(node);
        }
    }

    fn skip(&mut self, node: usize) {
        self.state[node] = State::Skipped;
        self.stats.skip(self.nodes[node].mnemonic());
        for k in 0..self.nodes[node].antecedents().len() {
            let a = self.nodes[node].antecedents()[k].0.index();
            self.succ_fired[a] += 1;
        }
        self.settle(node);
        tracing::info!(
            parent: &self.dag_span,
            node = node as u64,
            mnemonic = self.nodes[node].mnemonic().as_str(),
            "node skipped"
        );
        self.work.push(Work::Propagate(node));
    }

    /// The node will not change again (failed, skipped, undone, or undo failed): its antecedents
    /// may now be undone.
    fn settle(&mut self, node: usize) {
        for k in 0..self.nodes[node].antecedents().len() {
            let (a, _): (NodeId, EdgeKind) = self.nodes[node].antecedents()[k];
            self.succ_settled[a.index()] += 1;
            self.maybe_undo(a.index());
        }
    }

    fn maybe_undo(&mut self, node: usize) {
        if self.mode == Mode::RollBackward
            && matches!(self.state[node], State::Good)
            && recovery::undo_ready(self.succ_fired[node], self.succ_settled[node])
        {
            self.undo(node);
        }
    }

    /// Undo runs in place: no operation's undo needs storage (see `dag::ops`).
    fn undo(&mut self, node: usize) {
        self.state[node] = State::Recovering;
        let span = self.span(node, Phase::Undo);
        let result = {
            let _entered = span.enter();
            self.undo_op(node)
        };
        self.work.push(Work::Finish(Finish {
            node,
            phase: Phase::Undo,
            result: result.map(|()| None),
            span,
        }));
    }

    fn undo_op(&mut self, node: usize) -> Result<(), NodeError> {
        #[cfg(test)]
        if self.fail_undo_of == Some(NodeId::from_index(node)) {
            return Err(NodeError::Undo {
                detail: "injected by the test".to_owned(),
            });
        }
        self.nodes[node].op().undo(&mut self.buffers)
    }

    fn into_result(self) -> DagResult {
        let direction = match self.mode {
            Mode::Enable => Direction::Forward,
            Mode::RollForward => Direction::RolledForward,
            Mode::RollBackward => Direction::RolledBackward,
        };
        // Completion is at the terminator (forward) or the header (backward).
        debug_assert!(
            if direction == Direction::RolledBackward {
                matches!(self.state[0], State::Undone | State::UndoFailed(_))
            } else {
                self.terminator_reached
            },
            "DAG {} ended without reaching its completion node: {:?}",
            self.dag_id,
            self.state
        );
        let mut failed = 0u64;
        let mut skipped = 0u64;
        let nodes: Vec<NodeReport> = self
            .nodes
            .iter()
            .zip(self.state)
            .map(|(node, state)| {
                let outcome = match state {
                    State::Wait => NodeOutcome::NotFired,
                    // Only reachable through an engine bug (a run ends with nothing in flight).
                    State::Fired | State::Recovering => NodeOutcome::NotFired,
                    State::Good => NodeOutcome::Good,
                    State::Bad(e) => {
                        failed += 1;
                        NodeOutcome::Failed(e)
                    }
                    State::Skipped => {
                        skipped += 1;
                        NodeOutcome::Skipped
                    }
                    State::Undone => NodeOutcome::Undone,
                    State::UndoFailed(e) => NodeOutcome::UndoFailed(e),
                };
                // A failed write keeps its bytes: the access may redo it after a fence.
                let unwritten = match (node.op(), &outcome) {
                    (NodeOp::Write { from, .. }, NodeOutcome::Failed(_)) => {
                        ops::resolve(&self.buffers, from).ok()
                    }
                    _ => None,
                };
                NodeReport {
                    mnemonic: node.mnemonic(),
                    target: node.op().target().copied(),
                    is_write: node.op().is_write(),
                    outcome,
                    unwritten,
                }
            })
            .collect();
        let committed = self.commits_fired > 0;
        self.dag_span.record("direction", direction.as_str());
        self.dag_span.record("committed", committed);
        self.dag_span.record("failed", failed);
        self.dag_span.record("skipped", skipped);
        DagResult {
            dag_id: self.dag_id,
            kind: self.kind,
            direction,
            committed,
            nodes,
            buffers: self.buffers,
        }
    }
}

//! What a DAG run tells its caller.

use bytes::Bytes;

use crate::dag::{DiskTarget, Mnemonic, NodeError, NodeId, Slot};

/// How the DAG ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No node failed; the terminator was reached.
    Forward,
    /// A node failed after the commit (or in a DAG without one); every node that did not depend
    /// on a failed one completed, and the terminator was reached.
    RolledForward,
    /// A node failed before the commit; every completed node was undone back to the header and no
    /// write was issued. The access may retry with a DAG for the new state.
    RolledBackward,
}

impl Direction {
    /// Every direction.
    pub const ALL: [Direction; 3] = [
        Direction::Forward,
        Direction::RolledForward,
        Direction::RolledBackward,
    ];

    /// Short stable name, as recorded on the DAG span.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::RolledForward => "rolled_forward",
            Direction::RolledBackward => "rolled_backward",
        }
    }
}

/// The end state of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    /// Never fired (the DAG rolled backward before it was ready).
    NotFired,
    /// Its do completed.
    Good,
    /// Its do failed.
    Failed(NodeError),
    /// Not fired because a true-data antecedent failed or was skipped.
    Skipped,
    /// Completed, then undone during a roll-backward.
    Undone,
    /// Completed, and its undo failed: its effects may remain.
    UndoFailed(NodeError),
}

impl NodeOutcome {
    /// Short stable name, as recorded on spans.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeOutcome::NotFired => "not_fired",
            NodeOutcome::Good => "good",
            NodeOutcome::Failed(_) => "failed",
            NodeOutcome::Skipped => "skipped",
            NodeOutcome::Undone => "undone",
            NodeOutcome::UndoFailed(_) => "undo_failed",
        }
    }

    /// Whether the node's do ran (whatever happened after).
    pub fn fired(&self) -> bool {
        !matches!(self, NodeOutcome::NotFired | NodeOutcome::Skipped)
    }
}

/// One node of a finished DAG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The node's name.
    pub mnemonic: Mnemonic,
    /// Its disk range, for reads and writes ([`DiskTarget::component`] indexes the DAG's table).
    pub target: Option<DiskTarget>,
    /// Whether it is a disk write.
    pub is_write: bool,
    /// How it ended.
    pub outcome: NodeOutcome,
    /// For a disk write whose do failed: the bytes it was to write. Its outcome may be unknown
    /// (a timeout), and the access redoes it with these bytes once the component is fenced.
    pub unwritten: Option<Bytes>,
}

/// The result of one DAG run.
#[derive(Debug, Clone)]
pub struct DagResult {
    pub(crate) dag_id: u64,
    pub(crate) kind: &'static str,
    pub(crate) direction: Direction,
    pub(crate) committed: bool,
    pub(crate) nodes: Vec<NodeReport>,
    pub(crate) buffers: Vec<Option<Bytes>>,
}

impl DagResult {
    /// The run's id (as on its span).
    pub fn dag_id(&self) -> u64 {
        self.dag_id
    }

    /// The DAG family.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// How the DAG ended.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the commit node fired. A committed DAG never rolls backward.
    pub fn committed(&self) -> bool {
        self.committed
    }

    /// Whether every node succeeded.
    pub fn is_success(&self) -> bool {
        self.direction == Direction::Forward
    }

    /// Every node, by [`NodeId::index`].
    pub fn nodes(&self) -> &[NodeReport] {
        &self.nodes
    }

    /// How one node ended.
    pub fn outcome(&self, node: NodeId) -> &NodeOutcome {
        &self.nodes[node.index()].outcome
    }

    /// The nodes whose do failed, with their errors (callers branch on the error kinds).
    pub fn failures(&self) -> impl Iterator<Item = (NodeId, &NodeReport, &NodeError)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.outcome {
                NodeOutcome::Failed(e) => Some((NodeId::from_index(i), r, e)),
                _ => None,
            })
    }

    /// The nodes whose undo failed.
    pub fn undo_failures(&self) -> impl Iterator<Item = (NodeId, &NodeReport, &NodeError)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.outcome {
                NodeOutcome::UndoFailed(e) => Some((NodeId::from_index(i), r, e)),
                _ => None,
            })
    }

    /// The skipped nodes.
    pub fn skipped(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.outcome == NodeOutcome::Skipped)
            .map(|(i, _)| NodeId::from_index(i))
    }

    /// A slot's content at the end: read results and computed buffers of a forward DAG (a
    /// rolled-backward DAG released what it read).
    pub fn buffer(&self, slot: Slot) -> Option<&Bytes> {
        self.buffers.get(slot.index()).and_then(Option::as_ref)
    }

    /// Takes a slot's content out of the result.
    pub fn take_buffer(&mut self, slot: Slot) -> Option<Bytes> {
        self.buffers.get_mut(slot.index()).and_then(Option::take)
    }
}

//! DAG model: nodes, operations, edges, and the per-DAG buffer table.
//!
//! A builder describes one stripe access as a graph of primitive operations ([`NodeOp`]) and hands
//! it to the [engine](crate::engine), which runs any graph without knowing what it does. The model
//! is RAIDframe's (`rf_dag.h`), made checkable:
//!
//! - nodes are created in dependency order (an antecedent always exists before its successor), so
//!   index order is a topological order and cycles cannot be expressed;
//! - node 0 is the header (a `Nil` node, the only one without antecedents); the last node is the
//!   terminator (`Terminate`, the only one without successors);
//! - at most one `Commit` node; if the DAG writes, it has exactly one and every write descends from
//!   it: nothing irreversible happens before the commit, which is what makes roll-backward safe;
//! - data moves through a buffer table of [`Slot`]s holding [`Bytes`]: the caller's data enters as
//!   initial slots, a read or a computation fills exactly one empty slot, and a node may only consume
//!   a slot that is initial or filled by one of its ancestors. Sharing is by reference count, and
//!   ranges ([`BufRef`]) select sub-blocks without copying.
//!
//! [`DagBuilder::build`] checks all of this, including every buffer length, so a DAG that builds
//! cannot fail for a reason of its own making: only storage can fail it.

pub mod builders;
mod mnemonic;
pub mod ops;
pub mod select;
mod validate;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::io::{ComponentIo, IoError};

pub use mnemonic::Mnemonic;
pub use ops::NodeOp;

/// Index of a node in its DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// Position of the node in [`Dag::nodes`].
    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub(crate) fn from_index(index: usize) -> Self {
        NodeId(u32::try_from(index).expect("a DAG has fewer than 2^32 nodes"))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a node waits for an antecedent (RAIDframe's `antType`).
///
/// Only [`EdgeKind::TrueData`] carries failure: a node whose true-data antecedent failed or was
/// skipped is skipped itself, because it would consume data that does not exist. The other kinds
/// only order the nodes, so a failure behind them does not stop the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// The node consumes data the antecedent produces (read-after-write).
    TrueData,
    /// The node overwrites data the antecedent reads (write-after-read).
    AntiData,
    /// The node overwrites data the antecedent writes (write-after-write).
    OutputData,
    /// Pure ordering (e.g. "after the commit", "before the terminator").
    Control,
}

/// A slot of the DAG's buffer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u32);

impl Slot {
    /// Position in the buffer table.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The whole slot.
    pub fn all(self) -> BufRef {
        BufRef {
            slot: self,
            range: None,
        }
    }

    /// Bytes `range` of the slot.
    pub fn range(self, range: Range<usize>) -> BufRef {
        BufRef {
            slot: self,
            range: Some(range),
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// A slot, or a byte range of it, consumed by a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BufRef {
    /// The slot read.
    pub slot: Slot,
    /// Byte range within the slot; `None` for the whole slot.
    pub range: Option<Range<usize>>,
}

impl From<Slot> for BufRef {
    fn from(slot: Slot) -> Self {
        slot.all()
    }
}

/// A block range of one component of the DAG's component table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DiskTarget {
    /// Index into [`Dag::components`].
    pub component: usize,
    /// First block.
    pub start_block: u64,
    /// Number of blocks (at least one).
    pub block_count: u32,
}

impl DiskTarget {
    /// Blocks `start_block .. start_block + block_count` of table entry `component`.
    pub fn new(component: usize, start_block: u64, block_count: u32) -> Self {
        DiskTarget {
            component,
            start_block,
            block_count,
        }
    }
}

/// One node: an operation, its name, and the edges to the nodes it waits for.
#[derive(Debug, Clone)]
pub struct Node {
    mnemonic: Mnemonic,
    op: NodeOp,
    antecedents: Vec<(NodeId, EdgeKind)>,
    successors: Vec<NodeId>,
}

impl Node {
    /// The node's name (and span name).
    pub fn mnemonic(&self) -> Mnemonic {
        self.mnemonic
    }

    /// What the node does.
    pub fn op(&self) -> &NodeOp {
        &self.op
    }

    /// The nodes this one waits for, with the reason.
    pub fn antecedents(&self) -> &[(NodeId, EdgeKind)] {
        &self.antecedents
    }

    /// The nodes waiting for this one.
    pub fn successors(&self) -> &[NodeId] {
        &self.successors
    }
}

/// The components a DAG's disk targets index, shared between the DAGs of one array state.
pub type ComponentTable = Arc<[Arc<dyn ComponentIo>]>;

/// A validated DAG, ready for [`crate::engine::Engine::run`].
#[derive(Debug)]
pub struct Dag {
    kind: &'static str,
    nodes: Vec<Node>,
    components: ComponentTable,
    buffers: Vec<Option<Bytes>>,
    commit: Option<NodeId>,
}

impl Dag {
    /// The DAG family (e.g. `"small_write"`), recorded on the DAG span.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// All nodes, in a topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a valid DAG has at least a header and a terminator.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The header: node 0.
    pub fn header(&self) -> NodeId {
        NodeId(0)
    }

    /// The terminator: the last node.
    pub fn terminator(&self) -> NodeId {
        NodeId::from_index(self.nodes.len() - 1)
    }

    /// The commit node, if the DAG has one.
    pub fn commit(&self) -> Option<NodeId> {
        self.commit
    }

    /// The component table that [`DiskTarget::component`] indexes.
    pub fn components(&self) -> &[Arc<dyn ComponentIo>] {
        &self.components
    }

    /// Number of slots in the buffer table.
    pub fn slot_count(&self) -> usize {
        self.buffers.len()
    }

    pub(crate) fn into_parts(self) -> DagParts {
        DagParts {
            kind: self.kind,
            nodes: self.nodes,
            components: self.components,
            buffers: self.buffers,
            commit: self.commit,
        }
    }
}

/// The fields of a [`Dag`], moved into the engine's run state.
pub(crate) struct DagParts {
    pub(crate) kind: &'static str,
    pub(crate) nodes: Vec<Node>,
    pub(crate) components: ComponentTable,
    pub(crate) buffers: Vec<Option<Bytes>>,
    pub(crate) commit: Option<NodeId>,
}

/// Assembles a [`Dag`]; nodes are added antecedents first.
///
/// ```
/// # use std::sync::Arc;
/// # use dagraid_core::dag::*;
/// # use dagraid_core::io::ComponentIo;
/// # fn small_read(disk: Arc<dyn ComponentIo>) -> Result<Dag, DagError> {
/// let mut b = DagBuilder::new("ff_read", vec![disk]);
/// let h = b.nil(&[]);
/// let (r, data) = b.read(Mnemonic::R, DiskTarget::new(0, 0, 1), &[(h, EdgeKind::Control)]);
/// let c = b.commit(&[(r, EdgeKind::Control)]);
/// b.terminate(&[(c, EdgeKind::Control)]);
/// let dag = b.build()?;
/// # let _ = data; Ok(dag) }
/// ```
#[derive(Debug)]
pub struct DagBuilder {
    kind: &'static str,
    nodes: Vec<Node>,
    extra_edges: Vec<(NodeId, NodeId, EdgeKind)>,
    components: ComponentTable,
    buffers: Vec<Option<Bytes>>,
}

impl DagBuilder {
    /// Starts a DAG of family `kind` over the component table `components` (a `Vec`, or a shared
    /// [`ComponentTable`] the array keeps so that building a DAG does not copy it).
    pub fn new(kind: &'static str, components: impl Into<ComponentTable>) -> Self {
        DagBuilder {
            kind,
            nodes: Vec::new(),
            extra_edges: Vec::new(),
            components: components.into(),
            buffers: Vec::new(),
        }
    }

    /// Adds an initial slot holding `data` (e.g. the caller's write data); it is never overwritten.
    pub fn buffer(&mut self, data: Bytes) -> Slot {
        self.push_slot(Some(data))
    }

    /// Adds an empty slot, to be filled by exactly one node.
    pub fn slot(&mut self) -> Slot {
        self.push_slot(None)
    }

    fn push_slot(&mut self, content: Option<Bytes>) -> Slot {
        let slot = Slot(u32::try_from(self.buffers.len()).expect("fewer than 2^32 slots"));
        self.buffers.push(content);
        slot
    }

    /// Adds a node waiting for `antecedents` (which must already exist).
    pub fn node(
        &mut self,
        mnemonic: Mnemonic,
        op: NodeOp,
        antecedents: &[(NodeId, EdgeKind)],
    ) -> NodeId {
        let id = NodeId::from_index(self.nodes.len());
        self.nodes.push(Node {
            mnemonic,
            op,
            antecedents: antecedents.to_vec(),
            successors: Vec::new(),
        });
        id
    }

    /// Adds an edge after both nodes exist; `from` must have been added before `to`.
    pub fn edge(&mut self, from: NodeId, to: NodeId, kind: EdgeKind) {
        self.extra_edges.push((from, to, kind));
    }

    /// Adds a `Nil` node.
    pub fn nil(&mut self, antecedents: &[(NodeId, EdgeKind)]) -> NodeId {
        self.node(Mnemonic::Nil, NodeOp::Nil, antecedents)
    }

    /// Adds the commit node.
    pub fn commit(&mut self, antecedents: &[(NodeId, EdgeKind)]) -> NodeId {
        self.node(Mnemonic::Cmt, NodeOp::Commit, antecedents)
    }

    /// Adds the terminator (it must be the last node).
    pub fn terminate(&mut self, antecedents: &[(NodeId, EdgeKind)]) -> NodeId {
        self.node(Mnemonic::Trm, NodeOp::Terminate, antecedents)
    }

    /// Adds a disk read into a new slot.
    pub fn read(
        &mut self,
        mnemonic: Mnemonic,
        target: DiskTarget,
        antecedents: &[(NodeId, EdgeKind)],
    ) -> (NodeId, Slot) {
        let into = self.slot();
        (
            self.node(mnemonic, NodeOp::Read { target, into }, antecedents),
            into,
        )
    }

    /// Adds a disk write of `from`.
    pub fn write(
        &mut self,
        mnemonic: Mnemonic,
        target: DiskTarget,
        from: impl Into<BufRef>,
        antecedents: &[(NodeId, EdgeKind)],
    ) -> NodeId {
        let from = from.into();
        self.node(mnemonic, NodeOp::Write { target, from }, antecedents)
    }

    /// Adds an XOR of `inputs` into a new slot.
    pub fn xor(
        &mut self,
        mnemonic: Mnemonic,
        inputs: Vec<BufRef>,
        antecedents: &[(NodeId, EdgeKind)],
    ) -> (NodeId, Slot) {
        let into = self.slot();
        (
            self.node(mnemonic, NodeOp::Xor { inputs, into }, antecedents),
            into,
        )
    }

    /// Adds a GF(2^8) linear combination `sum(coef * input)` into a new slot.
    pub fn q(
        &mut self,
        mnemonic: Mnemonic,
        terms: Vec<(u8, BufRef)>,
        antecedents: &[(NodeId, EdgeKind)],
    ) -> (NodeId, Slot) {
        let into = self.slot();
        (
            self.node(mnemonic, NodeOp::Q { terms, into }, antecedents),
            into,
        )
    }

    /// Adds an overlay of `patch` onto `base` at byte `at`, into a new slot.
    pub fn overlay(
        &mut self,
        base: impl Into<BufRef>,
        patch: impl Into<BufRef>,
        at: usize,
        antecedents: &[(NodeId, EdgeKind)],
    ) -> (NodeId, Slot) {
        let into = self.slot();
        let op = NodeOp::Overlay {
            base: base.into(),
            patch: patch.into(),
            at,
            into,
        };
        (self.node(Mnemonic::Ovl, op, antecedents), into)
    }

    /// The nodes added so far that no node waits for yet: what a join after them (the commit,
    /// the terminator) must wait for so that every node leads to the terminator.
    pub fn dangling(&self) -> Vec<NodeId> {
        let mut has_successor = vec![false; self.nodes.len()];
        for node in &self.nodes {
            for (a, _) in &node.antecedents {
                if let Some(flag) = has_successor.get_mut(a.index()) {
                    *flag = true;
                }
            }
        }
        for (from, _, _) in &self.extra_edges {
            if let Some(flag) = has_successor.get_mut(from.index()) {
                *flag = true;
            }
        }
        has_successor
            .iter()
            .enumerate()
            .filter(|(_, has)| !**has)
            .map(|(i, _)| NodeId::from_index(i))
            .collect()
    }

    /// Number of nodes added so far.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added yet.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Checks every rule of the model (see the [module docs](self)) and returns the DAG.
    pub fn build(self) -> Result<Dag, DagError> {
        validate::build(self)
    }
}

/// Why a DAG was refused at build time. Every variant is a builder bug; none is a storage fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// A DAG needs at least a header and a terminator.
    #[error("a DAG needs at least a header and a terminator, got {nodes} node(s)")]
    TooSmall {
        /// Nodes given.
        nodes: usize,
    },
    /// An edge names a node that does not exist.
    #[error("edge {from} -> {to} names a node that does not exist")]
    UnknownNode {
        /// Antecedent side.
        from: NodeId,
        /// Successor side.
        to: NodeId,
    },
    /// An edge goes from a node to itself or to an earlier node.
    #[error("edge {from} -> {to} does not go from an earlier to a later node")]
    BackwardEdge {
        /// Antecedent side.
        from: NodeId,
        /// Successor side.
        to: NodeId,
    },
    /// The same pair of nodes is joined twice.
    #[error("edge {from} -> {to} is given twice")]
    DuplicateEdge {
        /// Antecedent side.
        from: NodeId,
        /// Successor side.
        to: NodeId,
    },
    /// The header must be a `Nil` node.
    #[error("the header (node #0) must be a Nil node, found {mnemonic}")]
    HeaderNotNil {
        /// What node 0 is.
        mnemonic: Mnemonic,
    },
    /// A node other than the header has no antecedent.
    #[error("node {node} has no antecedent; only the header may have none")]
    SecondHeader {
        /// The node.
        node: NodeId,
    },
    /// The last node must be the terminator.
    #[error("the last node {node} must be the terminator (Trm)")]
    LastNotTerminator {
        /// The last node.
        node: NodeId,
    },
    /// A node other than the last has no successor, or a `Terminate` node is not last.
    #[error("node {node} is a second sink or terminator; only the last node may be")]
    SecondTerminator {
        /// The node.
        node: NodeId,
    },
    /// More than one commit node.
    #[error("nodes {first} and {second} are both commit nodes; a DAG has at most one")]
    MultipleCommits {
        /// The first commit node.
        first: NodeId,
        /// Another.
        second: NodeId,
    },
    /// A DAG that writes has no commit node.
    #[error("write node {node} in a DAG without a commit node")]
    WriteWithoutCommit {
        /// A write node.
        node: NodeId,
    },
    /// A write does not descend from the commit node.
    #[error("write node {node} does not descend from the commit node {commit}")]
    WriteBeforeCommit {
        /// The write node.
        node: NodeId,
        /// The commit node.
        commit: NodeId,
    },
    /// A mnemonic names another kind of operation.
    #[error("node {node}: mnemonic {mnemonic} does not name a {op} operation")]
    MnemonicMismatch {
        /// The node.
        node: NodeId,
        /// Its mnemonic.
        mnemonic: Mnemonic,
        /// Its operation's kind.
        op: &'static str,
    },
    /// A disk target names no entry of the component table.
    #[error("node {node}: component {component} is not in the component table")]
    UnknownComponent {
        /// The node.
        node: NodeId,
        /// The index given.
        component: usize,
    },
    /// A disk target is empty or lies beyond its component.
    #[error(
        "node {node}: blocks {start_block}..+{block_count} are not within component {component} of {component_blocks} blocks"
    )]
    TargetOutOfRange {
        /// The node.
        node: NodeId,
        /// The component index.
        component: usize,
        /// First block.
        start_block: u64,
        /// Block count.
        block_count: u32,
        /// Size of the component.
        component_blocks: u64,
    },
    /// A slot index is not in the buffer table.
    #[error("node {node}: slot {slot} does not exist")]
    UnknownSlot {
        /// The node.
        node: NodeId,
        /// The slot.
        slot: Slot,
    },
    /// A node fills a slot that is initial or already filled by another node.
    #[error("node {node}: slot {slot} is already initial or filled by another node")]
    SlotReassigned {
        /// The node.
        node: NodeId,
        /// The slot.
        slot: Slot,
    },
    /// A node consumes a slot that is neither initial nor filled by one of its ancestors.
    #[error("node {node}: slot {slot} is neither initial nor filled by an ancestor")]
    SlotNotAvailable {
        /// The node.
        node: NodeId,
        /// The slot.
        slot: Slot,
    },
    /// A byte range lies outside its slot.
    #[error("node {node}: range {start}..{end} is outside slot {slot} of {len} bytes")]
    RangeOutOfSlot {
        /// The node.
        node: NodeId,
        /// The slot.
        slot: Slot,
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Slot length.
        len: usize,
    },
    /// Buffer lengths that must agree do not.
    #[error("node {node}: {what} is {actual} bytes, expected {expected}")]
    LengthMismatch {
        /// The node.
        node: NodeId,
        /// Which buffer.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// An XOR or Q node without inputs.
    #[error("node {node} has no inputs")]
    NoInputs {
        /// The node.
        node: NodeId,
    },
}

/// Why a node failed at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The component call failed (including the engine's deadline: [`crate::io::IoErrorKind::Timeout`]).
    #[error(transparent)]
    Io(#[from] IoError),
    /// A buffer was not as validation proved it would be. Means an engine bug; reported, never a
    /// panic.
    #[error("buffer slot {slot}: {detail}")]
    Buffer {
        /// The slot.
        slot: Slot,
        /// What was wrong.
        detail: String,
    },
    /// An undo function failed; the node's effects may remain.
    #[error("undo failed: {detail}")]
    Undo {
        /// What was wrong.
        detail: String,
    },
}

impl NodeError {
    /// The storage error, when the failure came from storage.
    pub fn io(&self) -> Option<&IoError> {
        match self {
            NodeError::Io(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;

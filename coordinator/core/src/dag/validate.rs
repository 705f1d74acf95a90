//! Build-time checks of a DAG: shape, commit barrier, buffer data flow and lengths.

use super::{BufRef, Dag, DagBuilder, DagError, DiskTarget, EdgeKind, NodeId, NodeOp, Slot};

/// Ancestor sets as bit rows, one per node.
struct Ancestry {
    words: usize,
    bits: Vec<u64>,
}

impl Ancestry {
    fn new(nodes: usize) -> Self {
        let words = nodes.div_ceil(64);
        Ancestry {
            words,
            bits: vec![0; words * nodes],
        }
    }

    fn row(&self, node: usize) -> &[u64] {
        &self.bits[node * self.words..(node + 1) * self.words]
    }

    /// Sets `node`'s row to the union of its antecedents' rows plus the antecedents themselves.
    fn derive(&mut self, node: usize, antecedents: &[(NodeId, EdgeKind)]) {
        for &(a, _) in antecedents {
            let a = a.index();
            for w in 0..self.words {
                let v = self.bits[a * self.words + w];
                self.bits[node * self.words + w] |= v;
            }
            self.bits[node * self.words + a / 64] |= 1 << (a % 64);
        }
    }

    fn is_ancestor(&self, ancestor: usize, node: usize) -> bool {
        self.row(node)[ancestor / 64] & (1 << (ancestor % 64)) != 0
    }
}

/// What validation knows of a slot.
#[derive(Clone, Copy)]
enum SlotInfo {
    Initial(usize),
    Empty,
    Filled { by: usize, len: usize },
}

pub(super) fn build(mut b: DagBuilder) -> Result<Dag, DagError> {
    let n = b.nodes.len();
    if n < 2 {
        return Err(DagError::TooSmall { nodes: n });
    }
    for (from, to, kind) in std::mem::take(&mut b.extra_edges) {
        if to.index() >= n {
            return Err(DagError::UnknownNode { from, to });
        }
        b.nodes[to.index()].antecedents.push((from, kind));
    }

    // Edges: existing, forward, unique. Then successors.
    for i in 0..n {
        let to = NodeId::from_index(i);
        let ants = &b.nodes[i].antecedents;
        for (k, &(from, _)) in ants.iter().enumerate() {
            if from.index() >= n {
                return Err(DagError::UnknownNode { from, to });
            }
            if from.index() >= i {
                return Err(DagError::BackwardEdge { from, to });
            }
            if ants[..k].iter().any(|&(f, _)| f == from) {
                return Err(DagError::DuplicateEdge { from, to });
            }
        }
    }
    for i in 0..n {
        for k in 0..b.nodes[i].antecedents.len() {
            let from = b.nodes[i].antecedents[k].0;
            b.nodes[from.index()].successors.push(NodeId::from_index(i));
        }
    }

    // Header and terminator.
    if !matches!(b.nodes[0].op, NodeOp::Nil) {
        return Err(DagError::HeaderNotNil {
            mnemonic: b.nodes[0].mnemonic,
        });
    }
    let last = n - 1;
    if !matches!(b.nodes[last].op, NodeOp::Terminate) {
        return Err(DagError::LastNotTerminator {
            node: NodeId::from_index(last),
        });
    }
    for (i, node) in b.nodes.iter().enumerate() {
        let id = NodeId::from_index(i);
        if i > 0 && node.antecedents.is_empty() {
            return Err(DagError::SecondHeader { node: id });
        }
        if i < last && (node.successors.is_empty() || matches!(node.op, NodeOp::Terminate)) {
            return Err(DagError::SecondTerminator { node: id });
        }
        if !node.op.fits(node.mnemonic) {
            return Err(DagError::MnemonicMismatch {
                node: id,
                mnemonic: node.mnemonic,
                op: node.op.kind_name(),
            });
        }
    }

    // Commit barrier.
    let mut commit: Option<NodeId> = None;
    for (i, node) in b.nodes.iter().enumerate() {
        if matches!(node.op, NodeOp::Commit) {
            let id = NodeId::from_index(i);
            if let Some(first) = commit {
                return Err(DagError::MultipleCommits { first, second: id });
            }
            commit = Some(id);
        }
    }
    let mut ancestry = Ancestry::new(n);
    for i in 0..n {
        let ants = std::mem::take(&mut b.nodes[i].antecedents);
        ancestry.derive(i, &ants);
        b.nodes[i].antecedents = ants;
    }
    for (i, node) in b.nodes.iter().enumerate() {
        if matches!(node.op, NodeOp::Write { .. }) {
            let id = NodeId::from_index(i);
            match commit {
                None => return Err(DagError::WriteWithoutCommit { node: id }),
                Some(c) if !ancestry.is_ancestor(c.index(), i) => {
                    return Err(DagError::WriteBeforeCommit {
                        node: id,
                        commit: c,
                    });
                }
                Some(_) => {}
            }
        }
    }

    // Targets, data flow and lengths, in topological (index) order.
    let mut slots: Vec<SlotInfo> = b
        .buffers
        .iter()
        .map(|c| match c {
            Some(bytes) => SlotInfo::Initial(bytes.len()),
            None => SlotInfo::Empty,
        })
        .collect();
    let mut checker = FlowChecker {
        builder: &b,
        slots: &mut slots,
        ancestry: &ancestry,
    };
    for i in 0..n {
        checker.check_node(i)?;
    }

    Ok(Dag {
        kind: b.kind,
        nodes: b.nodes,
        components: b.components,
        buffers: b.buffers,
        commit,
    })
}

struct FlowChecker<'a> {
    builder: &'a DagBuilder,
    slots: &'a mut Vec<SlotInfo>,
    ancestry: &'a Ancestry,
}

impl FlowChecker<'_> {
    fn check_node(&mut self, i: usize) -> Result<(), DagError> {
        let id = NodeId::from_index(i);
        match &self.builder.nodes[i].op {
            NodeOp::Nil | NodeOp::Commit | NodeOp::Terminate => Ok(()),
            NodeOp::Read { target, into } => {
                let len = self.target_len(id, target)?;
                self.fill(id, *into, len)
            }
            NodeOp::Write { target, from } => {
                let len = self.target_len(id, target)?;
                let have = self.consume(id, from)?;
                expect_len(id, "written data", len, have)
            }
            NodeOp::Xor { inputs, into } => {
                let len = self.same_lengths(id, inputs.iter())?;
                self.fill(id, *into, len)
            }
            NodeOp::Q { terms, into } => {
                let len = self.same_lengths(id, terms.iter().map(|(_, r)| r))?;
                self.fill(id, *into, len)
            }
            NodeOp::Overlay {
                base,
                patch,
                at,
                into,
            } => {
                let base_len = self.consume(id, base)?;
                let patch_len = self.consume(id, patch)?;
                let end = at.checked_add(patch_len).unwrap_or(usize::MAX);
                if end > base_len {
                    return Err(DagError::LengthMismatch {
                        node: id,
                        what: "overlay end (at + patch length)",
                        expected: base_len,
                        actual: end,
                    });
                }
                self.fill(id, *into, base_len)
            }
        }
    }

    fn target_len(&self, node: NodeId, t: &DiskTarget) -> Result<usize, DagError> {
        let Some(c) = self.builder.components.get(t.component) else {
            return Err(DagError::UnknownComponent {
                node,
                component: t.component,
            });
        };
        let size = c.block_count();
        let fits = t.block_count > 0
            && t.start_block
                .checked_add(u64::from(t.block_count))
                .is_some_and(|end| end <= size);
        if !fits {
            return Err(DagError::TargetOutOfRange {
                node,
                component: t.component,
                start_block: t.start_block,
                block_count: t.block_count,
                component_blocks: size,
            });
        }
        Ok(t.block_count as usize * c.block_size() as usize)
    }

    fn same_lengths<'r>(
        &self,
        node: NodeId,
        inputs: impl Iterator<Item = &'r BufRef>,
    ) -> Result<usize, DagError> {
        let mut len = None;
        for r in inputs {
            let l = self.consume(node, r)?;
            match len {
                None => len = Some(l),
                Some(expected) => expect_len(node, "input", expected, l)?,
            }
        }
        len.ok_or(DagError::NoInputs { node })
    }

    /// Checks that `node` may read `r` and returns the length it reads.
    fn consume(&self, node: NodeId, r: &BufRef) -> Result<usize, DagError> {
        let slot = r.slot;
        let len = match self.slots.get(slot.index()) {
            None => return Err(DagError::UnknownSlot { node, slot }),
            Some(SlotInfo::Initial(len)) => *len,
            Some(SlotInfo::Filled { by, len }) if self.ancestry.is_ancestor(*by, node.index()) => {
                *len
            }
            Some(_) => return Err(DagError::SlotNotAvailable { node, slot }),
        };
        match &r.range {
            None => Ok(len),
            Some(range) if range.start <= range.end && range.end <= len => Ok(range.len()),
            Some(range) => Err(DagError::RangeOutOfSlot {
                node,
                slot,
                start: range.start,
                end: range.end,
                len,
            }),
        }
    }

    fn fill(&mut self, node: NodeId, slot: Slot, len: usize) -> Result<(), DagError> {
        match self.slots.get_mut(slot.index()) {
            None => Err(DagError::UnknownSlot { node, slot }),
            Some(s @ SlotInfo::Empty) => {
                *s = SlotInfo::Filled {
                    by: node.index(),
                    len,
                };
                Ok(())
            }
            Some(_) => Err(DagError::SlotReassigned { node, slot }),
        }
    }
}

fn expect_len(
    node: NodeId,
    what: &'static str,
    expected: usize,
    actual: usize,
) -> Result<(), DagError> {
    if expected == actual {
        Ok(())
    } else {
        Err(DagError::LengthMismatch {
            node,
            what,
            expected,
            actual,
        })
    }
}

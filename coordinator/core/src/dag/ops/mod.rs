//! Node operations: what a node does (`do`) and how it is taken back (`undo`).
//!
//! The set is closed ([`NodeOp`]) so the engine can run any DAG without dynamic dispatch, and so
//! every operation has a reviewed undo. Disk operations ([`disk`]) reach storage only through
//! [`crate::io::ComponentIo`] and run concurrently; the computations ([`xor`], [`pq`],
//! [`overlay`]) and the no-ops ([`nop`]) finish in place inside the engine's state machine.
//!
//! Undo, per operation (only completed nodes are undone, and only before the commit):
//! - reads and computations release the slot they filled: nothing else changed;
//! - no-ops have nothing to undo;
//! - writes are never undone: validation puts every write after the commit node, and a DAG whose
//!   commit has fired only rolls forward. Their undo is a no-op for completeness.

pub mod disk;
pub mod nop;
pub mod overlay;
pub mod pq;
pub mod xor;

use bytes::Bytes;

use super::{BufRef, DiskTarget, Mnemonic, NodeError, Slot};

/// What a node does. Buffers are named by [`Slot`]; each operation that produces data fills
/// exactly one empty slot (`into`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOp {
    /// Does nothing: the header, or a join/fork point.
    Nil,
    /// The commit node: once it fires, a failure rolls the DAG forward.
    Commit,
    /// The terminator: reaching it completes a forward DAG.
    Terminate,
    /// Reads `target` into slot `into`.
    Read {
        /// Blocks read.
        target: DiskTarget,
        /// Slot filled with the data.
        into: Slot,
    },
    /// Writes `from` (exactly the target's length) to `target`.
    Write {
        /// Blocks written.
        target: DiskTarget,
        /// Data written.
        from: BufRef,
    },
    /// XOR of equally long `inputs` into `into` (parity, or recovery of a lost unit).
    Xor {
        /// The inputs (at least one).
        inputs: Vec<BufRef>,
        /// Slot filled with the result.
        into: Slot,
    },
    /// Linear combination `sum(coef * input)` over GF(2^8) (polynomial 0x11d) into `into`: the
    /// RAID 6 Q syndrome (`coef = g^i`), its small-write update, and Q-based recoveries.
    Q {
        /// `(coefficient, input)` pairs (at least one), inputs equally long.
        terms: Vec<(u8, BufRef)>,
        /// Slot filled with the result.
        into: Slot,
    },
    /// `base` with `patch` copied over it at byte offset `at`, into `into`: the merge step of a
    /// partial-block read-modify-write (old blocks, new user bytes).
    Overlay {
        /// Old contents (the output has its length).
        base: BufRef,
        /// New bytes.
        patch: BufRef,
        /// Where `patch` goes in `base`.
        at: usize,
        /// Slot filled with the merged bytes.
        into: Slot,
    },
}

impl NodeOp {
    /// Short name of the operation kind.
    pub fn kind_name(&self) -> &'static str {
        match self {
            NodeOp::Nil => "nil",
            NodeOp::Commit => "commit",
            NodeOp::Terminate => "terminate",
            NodeOp::Read { .. } => "read",
            NodeOp::Write { .. } => "write",
            NodeOp::Xor { .. } => "xor",
            NodeOp::Q { .. } => "q",
            NodeOp::Overlay { .. } => "overlay",
        }
    }

    /// The disk range, for reads and writes.
    pub fn target(&self) -> Option<&DiskTarget> {
        match self {
            NodeOp::Read { target, .. } | NodeOp::Write { target, .. } => Some(target),
            _ => None,
        }
    }

    /// The slot the operation fills, if any.
    pub fn output(&self) -> Option<Slot> {
        match self {
            NodeOp::Read { into, .. }
            | NodeOp::Xor { into, .. }
            | NodeOp::Q { into, .. }
            | NodeOp::Overlay { into, .. } => Some(*into),
            _ => None,
        }
    }

    /// Whether the operation goes to storage (and so runs under the engine's deadline).
    pub fn is_disk(&self) -> bool {
        matches!(self, NodeOp::Read { .. } | NodeOp::Write { .. })
    }

    /// Whether the operation writes to storage.
    pub fn is_write(&self) -> bool {
        matches!(self, NodeOp::Write { .. })
    }

    /// Whether `mnemonic` may name this operation.
    pub fn fits(&self, mnemonic: Mnemonic) -> bool {
        match self {
            NodeOp::Nil => mnemonic == Mnemonic::Nil,
            NodeOp::Commit => mnemonic == Mnemonic::Cmt,
            NodeOp::Terminate => mnemonic == Mnemonic::Trm,
            NodeOp::Read { .. } => mnemonic.is_read(),
            NodeOp::Write { .. } => mnemonic.is_write(),
            NodeOp::Xor { .. } => matches!(mnemonic, Mnemonic::Xor | Mnemonic::Xrc),
            NodeOp::Q { .. } => matches!(mnemonic, Mnemonic::Q | Mnemonic::Xrc),
            NodeOp::Overlay { .. } => mnemonic == Mnemonic::Ovl,
        }
    }

    /// Runs an in-place operation (everything but disk reads and writes).
    pub(crate) fn run_inline(&self, buffers: &[Option<Bytes>]) -> Result<Option<Bytes>, NodeError> {
        match self {
            NodeOp::Nil | NodeOp::Commit | NodeOp::Terminate => nop::run(),
            NodeOp::Xor { inputs, .. } => xor::run(buffers, inputs).map(Some),
            NodeOp::Q { terms, .. } => pq::run(buffers, terms).map(Some),
            NodeOp::Overlay {
                base, patch, at, ..
            } => overlay::run(buffers, base, patch, *at).map(Some),
            NodeOp::Read { .. } | NodeOp::Write { .. } => {
                unreachable!("disk operations are started through ops::disk")
            }
        }
    }

    /// Undoes a completed operation (see the module docs for what each undo means).
    pub(crate) fn undo(&self, buffers: &mut [Option<Bytes>]) -> Result<(), NodeError> {
        if let Some(slot) = self.output()
            && let Some(b) = buffers.get_mut(slot.index())
        {
            *b = None;
        }
        Ok(())
    }
}

/// The bytes `r` names; validation guarantees they exist, so an error here is an engine bug.
pub(crate) fn resolve(buffers: &[Option<Bytes>], r: &BufRef) -> Result<Bytes, NodeError> {
    let Some(Some(bytes)) = buffers.get(r.slot.index()) else {
        return Err(NodeError::Buffer {
            slot: r.slot,
            detail: "empty when consumed".to_owned(),
        });
    };
    match &r.range {
        None => Ok(bytes.clone()),
        Some(range) if range.start <= range.end && range.end <= bytes.len() => {
            Ok(bytes.slice(range.clone()))
        }
        Some(range) => Err(NodeError::Buffer {
            slot: r.slot,
            detail: format!("range {range:?} outside {} bytes", bytes.len()),
        }),
    }
}

/// Resolves inputs that must all have the same length.
pub(crate) fn resolve_equal<'a>(
    buffers: &[Option<Bytes>],
    refs: impl Iterator<Item = &'a BufRef>,
) -> Result<Vec<Bytes>, NodeError> {
    let mut out: Vec<Bytes> = Vec::new();
    for r in refs {
        let b = resolve(buffers, r)?;
        if let Some(first) = out.first()
            && first.len() != b.len()
        {
            return Err(NodeError::Buffer {
                slot: r.slot,
                detail: format!("{} bytes, other inputs have {}", b.len(), first.len()),
            });
        }
        out.push(b);
    }
    Ok(out)
}

//! DAG builders: one file per family of RAIDframe's table (`RAIDFRAME.md` section 1).
//!
//! A builder turns one stripe of an access ([`StripeAccess`]) and the state of its columns
//! ([`ColumnFaults`]) into a [`Dag`] the engine can run, plus the recipe that assembles the
//! caller's bytes from the DAG's buffers ([`ReadPiece`]s). Builders are the only code that knows
//! both access maps and node operations (an invariant of `ARCHITECTURE.md`).
//!
//! | family | file | shape |
//! |---|---|---|
//! | [`DagFamily::FaultFreeRead`] | [`ff_read`] | Nil -> R x n -> Cmt -> Trm |
//! | [`DagFamily::MirrorRead`] | [`mirror`] | Nil -> Rmir x n -> Cmt -> Trm |
//! | [`DagFamily::DegradedRead`] | [`degraded_read`] | Nil -> {Rud, Rrd, Rp, Rq} -> Xrc -> Cmt -> [W] -> Trm |
//! | [`DagFamily::NonRedundantWrite`] | [`nonredundant_write`] | Nil -> [Rod -> Ovl] -> Cmt -> W x n -> Trm |
//! | [`DagFamily::MirrorWrite`] | [`mirror`] | Nil -> [Rod -> Ovl] -> Cmt -> {Wpd, Wsd} -> Nil -> Trm |
//! | [`DagFamily::SmallWrite`] | [`small_write`] | Nil -> {Rod, Rop, Roq} -> [Ovl] -> Xor, Q -> Cmt -> {Wnd, Wnp, Wnq} -> Trm |
//! | [`DagFamily::LargeWrite`] | [`large_write`] | Nil -> Rod x k -> [Ovl] -> Xor, Q -> Cmt -> {Wnd, Wnp, Wnq} -> Trm |
//! | [`DagFamily::DegradedWrite`] | [`degraded_write`] | Nil -> {Rrd, Rp, Rq} -> Xrc -> [Ovl] -> Xor, Q -> Cmt -> {Wnd, Wnp, Wnq, W} -> Nil -> Trm |
//! | [`DagFamily::ParityRewrite`] | [`parity_rewrite`] | Nil -> Rrd x k -> Xor, Q -> Cmt -> {Wnp, Wnq} -> Trm (RAID 1: Rmir -> Cmt -> Wsd) |
//!
//! Conventions every builder keeps:
//! - accesses are byte-granular: a partial block is read (`Rod`), merged with the user's bytes
//!   (`Ovl`) and written whole; all of that happens before or after the commit as the table says,
//!   never a write before it;
//! - parity arithmetic runs over the stripe's *hull* ([`StripeAccess::unit_blocks`], the same
//!   in-unit block range on every column, which is also the stripe lock's range), so every
//!   buffer an XOR or Q node combines has the same length;
//! - the user's write buffer enters the DAG as slices of one [`Bytes`] (no copy); a read's
//!   result is handed back as slot ranges (no copy inside the DAG);
//! - a column in [`ColumnFaults::failed`] is never read or written; a column in
//!   [`ColumnFaults::unreadable`] (a read of it answered data loss for this stripe) is not read
//!   but is still written, and the degraded families rewrite the blocks they reconstruct for it.
//!
//! RAID 6's Q is `sum g^i D_i` with `i` the logical data index ([`crate::layout::raid6`]); every
//! recovery, from P, from Q or from both, is a GF(2^8) linear combination of surviving units
//! ([`recover`]).

pub mod degraded_read;
pub mod degraded_write;
pub mod ff_read;
pub mod large_write;
pub mod mirror;
pub mod nonredundant_write;
pub mod parity_rewrite;
mod recover;
pub mod small_write;

use std::ops::Range;

use bytes::Bytes;

use super::{BufRef, Dag, DagBuilder, DagError, DiskTarget, EdgeKind, NodeId, Slot};
use super::{ComponentTable, Mnemonic};
use crate::layout::{BlockRange, ColumnSet, Layout, StripeAccess, UnitAccess};
use crate::parity::gf256;

pub use recover::{Combination, solve};

/// The DAG families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DagFamily {
    /// Read the touched blocks of every touched unit (RAID 0/4/5/6, no touched unit lost).
    FaultFreeRead,
    /// RAID 1: read each touched unit from one copy, the less loaded of the readable ones.
    MirrorRead,
    /// Reconstruct lost touched units from the survivors (P, Q or both).
    DegradedRead,
    /// Write data without parity: RAID 0, or every parity unit of the stripe failed.
    NonRedundantWrite,
    /// RAID 1: write every live copy.
    MirrorWrite,
    /// Read-modify-write: new parity from old data, old parity and new data.
    SmallWrite,
    /// Reconstruct-write: new parity from the whole stripe's new data (untouched units read).
    LargeWrite,
    /// A write whose stripe has lost data units: their old content is reconstructed where the
    /// new parity needs it, live columns are written, lost ones are skipped.
    DegradedWrite,
    /// Resync: recompute a whole stripe's redundancy from its data (no user data).
    ParityRewrite,
}

impl DagFamily {
    /// Every family.
    pub const ALL: [DagFamily; 9] = [
        DagFamily::FaultFreeRead,
        DagFamily::MirrorRead,
        DagFamily::DegradedRead,
        DagFamily::NonRedundantWrite,
        DagFamily::MirrorWrite,
        DagFamily::SmallWrite,
        DagFamily::LargeWrite,
        DagFamily::DegradedWrite,
        DagFamily::ParityRewrite,
    ];

    /// The DAG kind recorded on the DAG span (`ff_read`, `small_write`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DagFamily::FaultFreeRead => "ff_read",
            DagFamily::MirrorRead => "mirror_read",
            DagFamily::DegradedRead => "degraded_read",
            DagFamily::NonRedundantWrite => "nonredundant_write",
            DagFamily::MirrorWrite => "mirror_write",
            DagFamily::SmallWrite => "small_write",
            DagFamily::LargeWrite => "large_write",
            DagFamily::DegradedWrite => "degraded_write",
            DagFamily::ParityRewrite => "parity_rewrite",
        }
    }

    /// Whether the family serves a write.
    pub const fn is_write(self) -> bool {
        !matches!(
            self,
            DagFamily::FaultFreeRead | DagFamily::MirrorRead | DagFamily::DegradedRead
        )
    }
}

impl std::fmt::Display for DagFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a builder must avoid, per column, for one stripe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnFaults {
    /// Columns marked failed in the array: never read, never written.
    pub failed: ColumnSet,
    /// Columns whose blocks in this stripe's hull answered data loss: not read; still written
    /// (and rewritten with reconstructed content where a DAG has it).
    pub unreadable: ColumnSet,
}

impl ColumnFaults {
    /// Faults of an array with `failed` columns and nothing unreadable.
    pub fn failed(failed: ColumnSet) -> ColumnFaults {
        ColumnFaults {
            failed,
            unreadable: ColumnSet::new(),
        }
    }

    /// Whether `column` may be read.
    pub fn readable(&self, column: usize) -> bool {
        !self.failed.contains(column) && !self.unreadable.contains(column)
    }

    /// Whether `column` may be written.
    pub fn writable(&self, column: usize) -> bool {
        !self.failed.contains(column)
    }
}

/// Everything a builder needs for one stripe.
#[derive(Debug, Clone, Copy)]
pub struct StripeRequest<'a> {
    /// The array's layout.
    pub layout: &'a Layout,
    /// The stripe's part of the access.
    pub access: &'a StripeAccess,
    /// The components, indexed by column.
    pub components: &'a ComponentTable,
    /// Columns not to read or write.
    pub faults: &'a ColumnFaults,
    /// For a write, the whole access's data ([`UnitAccess::buffer_offset`] indexes it); `None`
    /// for a read.
    pub data: Option<&'a Bytes>,
    /// Reads in flight per column (RAID 1 reads the less loaded copy); may be empty.
    pub load: &'a [u64],
    /// Whether the stripe's redundancy is known to agree with its data: not awaiting a resync,
    /// no lost blocks. Only then may a degraded read write rebuilt blocks back, and a RAID 1
    /// read pick either copy; otherwise it reads the resync's source (the primary) while that
    /// one is readable, so two reads with no write between return the same bytes.
    pub in_sync: bool,
    /// A repair (under the stripe's write lock): a read that writes the blocks it rebuilt for
    /// an unreadable live column back to that column. Plain reads never write.
    pub repair: bool,
}

/// One run of the caller's bytes: `range` of the buffer in `slot`. A read's pieces, in order,
/// are exactly the bytes of [`StripeAccess::buffer_range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPiece {
    /// The slot holding the bytes once the DAG ran forward.
    pub slot: Slot,
    /// The bytes within the slot.
    pub range: Range<usize>,
}

/// A built DAG and how to use its result.
#[derive(Debug)]
pub struct BuiltDag {
    /// Its family.
    pub family: DagFamily,
    /// The DAG.
    pub dag: Dag,
    /// For a read, where the caller's bytes are; empty for a write.
    pub pieces: Vec<ReadPiece>,
    /// Columns the DAG reads (for load accounting), with repetitions.
    pub columns_read: Vec<usize>,
}

/// Why no DAG could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// More of the stripe is lost than its redundancy can make up for.
    #[error("stripe {stripe}: {detail} (lost columns {lost:?})")]
    Unrecoverable {
        /// The stripe.
        stripe: u64,
        /// The failed or unreadable columns.
        lost: Vec<usize>,
        /// What could not be done.
        detail: String,
    },
    /// A write was built without data, or with a buffer too short for the access (a caller bug).
    #[error("write data of {actual} bytes does not cover the access's bytes up to {needed}")]
    WriteData {
        /// Bytes needed.
        needed: u64,
        /// Bytes given.
        actual: u64,
    },
    /// A DAG family that does not apply to the layout (a caller bug).
    #[error("{family} does not apply to {level}")]
    WrongFamily {
        /// The family asked for.
        family: DagFamily,
        /// The array's level.
        level: crate::layout::RaidLevel,
    },
    /// A disk transfer larger than one request can carry (a stripe unit of 2^32 blocks or more).
    #[error("a transfer of {blocks} blocks is too large for one request")]
    TransferTooLarge {
        /// Blocks.
        blocks: u64,
    },
    /// The stripe access does not come from this layout's map (a caller bug).
    #[error("stripe {stripe}: the access's block range is not within a stripe unit")]
    InvalidAccess {
        /// The stripe.
        stripe: u64,
    },
    /// The builder produced a DAG that failed validation: a builder bug.
    #[error("builder produced an invalid DAG: {0}")]
    Dag(#[from] DagError),
}

/// Builds the DAG of `family` for `req`.
pub fn build(family: DagFamily, req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    if let Some(data) = req.data {
        let needed = req.access.buffer_range.end;
        if (data.len() as u64) < needed {
            return Err(BuildError::WriteData {
                needed,
                actual: data.len() as u64,
            });
        }
    } else if family.is_write() && family != DagFamily::ParityRewrite {
        return Err(BuildError::WriteData {
            needed: req.access.buffer_range.end,
            actual: 0,
        });
    }
    match family {
        DagFamily::FaultFreeRead => ff_read::build(req),
        DagFamily::MirrorRead => mirror::build_read(req),
        DagFamily::DegradedRead => degraded_read::build(req),
        DagFamily::NonRedundantWrite => nonredundant_write::build(req),
        DagFamily::MirrorWrite => mirror::build_write(req),
        DagFamily::SmallWrite => small_write::build(req),
        DagFamily::LargeWrite => large_write::build(req),
        DagFamily::DegradedWrite => degraded_write::build(req),
        DagFamily::ParityRewrite => parity_rewrite::build(req),
    }
}

/// The parts of a stripe builders share: the hull, targets, the user's bytes.
pub(crate) struct Ctx<'a> {
    pub(crate) req: &'a StripeRequest<'a>,
    pub(crate) bs: u64,
    /// The hull in component blocks.
    pub(crate) hull: BlockRange,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(req: &'a StripeRequest<'a>) -> Result<Ctx<'a>, BuildError> {
        let bs = req.layout.geometry().block_size();
        let hull = req
            .access
            .layout
            .component_blocks_of(req.access.unit_blocks.clone())
            .ok_or(BuildError::InvalidAccess {
                stripe: req.access.stripe,
            })?;
        Ok(Ctx { req, bs, hull })
    }

    pub(crate) fn builder(&self, family: DagFamily) -> DagBuilder {
        DagBuilder::new(family.name(), self.req.components.clone())
    }

    pub(crate) fn access(&self) -> &'a StripeAccess {
        self.req.access
    }

    pub(crate) fn faults(&self) -> &'a ColumnFaults {
        self.req.faults
    }

    /// `blocks` of `column`.
    pub(crate) fn target(
        &self,
        column: usize,
        blocks: BlockRange,
    ) -> Result<DiskTarget, BuildError> {
        let count = u32::try_from(blocks.count).map_err(|_| BuildError::TransferTooLarge {
            blocks: blocks.count,
        })?;
        Ok(DiskTarget::new(column, blocks.first, count))
    }

    /// The hull of `column`.
    pub(crate) fn hull_target(&self, column: usize) -> Result<DiskTarget, BuildError> {
        self.target(column, self.hull)
    }

    /// Bytes of the hull.
    pub(crate) fn hull_len(&self) -> usize {
        (self.hull.count * self.bs) as usize
    }

    /// The user's bytes for unit `u` (writes only; [`build`] checked the buffer).
    pub(crate) fn user(&self, u: &UnitAccess) -> Bytes {
        let r = u.buffer_bytes();
        self.req
            .data
            .map(|d| d.slice(r.start as usize..r.end as usize))
            .unwrap_or_default()
    }

    /// Where `u`'s user bytes lie within a buffer of the hull.
    pub(crate) fn user_in_hull(&self, u: &UnitAccess) -> Range<usize> {
        let start = (u.component_bytes.start - self.hull.first * self.bs) as usize;
        start..start + u.len as usize
    }

    /// Where `u`'s blocks lie within a buffer of the hull.
    pub(crate) fn blocks_in_hull(&self, u: &UnitAccess) -> Range<usize> {
        let start = ((u.blocks.first - self.hull.first) * self.bs) as usize;
        start..start + (u.blocks.count * self.bs) as usize
    }

    /// Whether `u`'s user bytes are the whole hull.
    pub(crate) fn covers_hull(&self, u: &UnitAccess) -> bool {
        self.user_in_hull(u) == (0..self.hull_len())
    }

    /// The failed and unreadable columns of the stripe, for error reports.
    pub(crate) fn lost_columns(&self) -> Vec<usize> {
        (0..self.req.layout.columns())
            .filter(|&c| !self.faults().readable(c))
            .collect()
    }

    pub(crate) fn unrecoverable(&self, detail: impl Into<String>) -> BuildError {
        BuildError::Unrecoverable {
            stripe: self.access().stripe,
            lost: self.lost_columns(),
            detail: detail.into(),
        }
    }
}

/// `(node, slot)` of a buffer-producing node, or of an initial buffer (`node` is `None`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Produced {
    pub(crate) node: Option<NodeId>,
    pub(crate) slot: Slot,
}

impl Produced {
    /// The true-data edge a consumer needs (none for an initial buffer).
    pub(crate) fn edge(&self) -> Option<(NodeId, EdgeKind)> {
        self.node.map(|n| (n, EdgeKind::TrueData))
    }
}

/// True-data edges to every producer, or a control edge from `fallback` when none is a node (so
/// the consumer still has an antecedent).
pub(crate) fn data_edges<'p>(
    producers: impl IntoIterator<Item = &'p Produced>,
    fallback: NodeId,
) -> Vec<(NodeId, EdgeKind)> {
    let mut edges: Vec<(NodeId, EdgeKind)> = Vec::new();
    for p in producers {
        if let Some(e) = p.edge()
            && !edges.iter().any(|(n, _)| *n == e.0)
        {
            edges.push(e);
        }
    }
    if edges.is_empty() {
        edges.push((fallback, EdgeKind::Control));
    }
    edges
}

/// Control edges from each node, without repeats.
pub(crate) fn control(nodes: impl IntoIterator<Item = NodeId>) -> Vec<(NodeId, EdgeKind)> {
    let mut edges: Vec<(NodeId, EdgeKind)> = Vec::new();
    for n in nodes {
        if !edges.iter().any(|(m, _)| *m == n) {
            edges.push((n, EdgeKind::Control));
        }
    }
    edges
}

/// Unit `u`'s new content over `range` of its blocks: the user's bytes when they are the whole
/// range, else `old` (the old content of that range, read by the caller) with the user's bytes
/// laid over it at `at`.
pub(crate) fn merge_new(
    b: &mut DagBuilder,
    user: Bytes,
    old: Option<Produced>,
    at: usize,
) -> Produced {
    match old {
        None => Produced {
            node: None,
            slot: b.buffer(user),
        },
        Some(old) => {
            let patch = b.buffer(user);
            let deps: Vec<(NodeId, EdgeKind)> = old.edge().into_iter().collect();
            let (n, s) = b.overlay(old.slot, patch, at, &deps);
            Produced {
                node: Some(n),
                slot: s,
            }
        }
    }
}

/// The XOR of `inputs` (P, or a recovery from P alone).
pub(crate) fn xor_of(
    b: &mut DagBuilder,
    mnemonic: Mnemonic,
    inputs: &[BufProduced],
    fallback: NodeId,
) -> Produced {
    let edges = data_edges(inputs.iter().map(|i| &i.produced), fallback);
    let refs = inputs.iter().map(BufProduced::buf_ref).collect();
    let (n, s) = b.xor(mnemonic, refs, &edges);
    Produced {
        node: Some(n),
        slot: s,
    }
}

/// The linear combination `sum coef * input` (Q, or a recovery that needs Q).
pub(crate) fn combine(
    b: &mut DagBuilder,
    mnemonic: Mnemonic,
    terms: &[(u8, BufProduced)],
    fallback: NodeId,
) -> Produced {
    let edges = data_edges(terms.iter().map(|(_, i)| &i.produced), fallback);
    let refs = terms.iter().map(|(c, i)| (*c, i.buf_ref())).collect();
    let (n, s) = b.q(mnemonic, refs, &edges);
    Produced {
        node: Some(n),
        slot: s,
    }
}

/// A produced buffer, or a range of it.
#[derive(Debug, Clone)]
pub(crate) struct BufProduced {
    pub(crate) produced: Produced,
    pub(crate) range: Option<Range<usize>>,
}

impl BufProduced {
    pub(crate) fn buf_ref(&self) -> BufRef {
        match &self.range {
            None => self.produced.slot.all(),
            Some(r) => self.produced.slot.range(r.clone()),
        }
    }
}

impl From<Produced> for BufProduced {
    fn from(produced: Produced) -> Self {
        BufProduced {
            produced,
            range: None,
        }
    }
}

/// Q's coefficient for data unit `index`: `g^index`.
pub(crate) fn q_coef(index: usize) -> u8 {
    gf256::gen_pow(index)
}

/// Builds and validates.
pub(crate) fn finish(
    b: DagBuilder,
    family: DagFamily,
    pieces: Vec<ReadPiece>,
    columns_read: Vec<usize>,
) -> Result<BuiltDag, BuildError> {
    Ok(BuiltDag {
        family,
        dag: b.build()?,
        pieces,
        columns_read,
    })
}

#[cfg(test)]
mod tests;

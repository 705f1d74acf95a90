//! RAID 1: mirror read `Nil -> Rmir x n -> Cmt -> Trm` and mirror write
//! `Nil -> [Rod -> Ovl] -> Cmt -> {Wpd, Wsd} -> Nil -> Trm`.
//!
//! A read takes each unit from the less loaded of its readable copies (ties go to the primary on
//! even stripes and to the secondary on odd ones, so an idle array still spreads its reads),
//! except in a stripe not in sync (awaiting its resync), where it reads the primary, the copy
//! the resync copies from, while that one is readable; a
//! copy that is failed or unreadable is simply not chosen, which is RAID 1's degraded read. A
//! write goes to every live copy; a partial block is read from one readable copy and merged
//! before the commit.

use crate::dag::{EdgeKind, Mnemonic};
use crate::layout::UnitAccess;

use super::{
    BuildError, BuiltDag, Ctx, DagFamily, Produced, ReadPiece, StripeRequest, control, finish,
    merge_new,
};

/// The copies of `u`: primary first.
fn copies(u: &UnitAccess) -> impl Iterator<Item = usize> {
    std::iter::once(u.column).chain(u.mirror_column)
}

/// The readable copy of `u` to read from, if any.
fn pick_copy(ctx: &Ctx<'_>, u: &UnitAccess) -> Option<usize> {
    let load = |c: usize| ctx.req.load.get(c).copied().unwrap_or(0);
    if !ctx.req.in_sync && ctx.faults().readable(u.column) {
        return Some(u.column);
    }
    let odd = (ctx.access().stripe + u.data_index as u64) % 2 == 1;
    copies(u)
        .filter(|&c| ctx.faults().readable(c))
        .min_by_key(|&c| (load(c), (c == u.column) == odd))
}

/// Builds the mirror read of `req`'s stripe.
pub fn build_read(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    let ctx = Ctx::new(req)?;
    let mut b = ctx.builder(DagFamily::MirrorRead);
    let h = b.nil(&[]);
    let mut reads = Vec::new();
    let mut pieces = Vec::new();
    let mut columns = Vec::new();
    let mut repairs = Vec::new();
    for u in &ctx.access().units {
        let column = pick_copy(&ctx, u).ok_or_else(|| {
            ctx.unrecoverable(format!(
                "both copies of data unit {} are lost",
                u.data_index
            ))
        })?;
        let (r, slot) = b.read(Mnemonic::Rmir, ctx.target(column, u.blocks)?, &control([h]));
        reads.push(r);
        columns.push(column);
        let start = u.offset_in_blocks as usize;
        pieces.push(ReadPiece {
            slot,
            range: start..start + u.len as usize,
        });
        // A repair copies the good copy over the one that answered data loss.
        if ctx.req.repair && ctx.req.in_sync {
            for bad in copies(u)
                .filter(|&c| c != column && !ctx.faults().readable(c) && ctx.faults().writable(c))
            {
                repairs.push((bad, r, slot, u.blocks));
            }
        }
    }
    let c = b.commit(&control(reads));
    for (bad, r, slot, blocks) in repairs {
        b.write(
            Mnemonic::W,
            ctx.target(bad, blocks)?,
            slot,
            &[(c, EdgeKind::Control), (r, EdgeKind::TrueData)],
        );
    }
    b.terminate(&control(b.dangling()));
    finish(b, DagFamily::MirrorRead, pieces, columns)
}

/// Builds the mirror write of `req`'s stripe.
pub fn build_write(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    let ctx = Ctx::new(req)?;
    let bs = ctx.bs;
    let mut b = ctx.builder(DagFamily::MirrorWrite);
    let h = b.nil(&[]);
    let mut new = Vec::new();
    let mut columns = Vec::new();
    for u in &ctx.access().units {
        if !copies(u).any(|c| ctx.faults().writable(c)) {
            return Err(ctx.unrecoverable(format!(
                "both copies of data unit {} are failed",
                u.data_index
            )));
        }
        let old = if u.is_whole_blocks(bs) {
            None
        } else {
            let column = pick_copy(&ctx, u).ok_or_else(|| {
                ctx.unrecoverable(format!(
                    "the partial blocks of data unit {} are lost on both copies",
                    u.data_index
                ))
            })?;
            let (r, slot) = b.read(Mnemonic::Rod, ctx.target(column, u.blocks)?, &control([h]));
            columns.push(column);
            Some(Produced {
                node: Some(r),
                slot,
            })
        };
        let merged = merge_new(&mut b, ctx.user(u), old, u.offset_in_blocks as usize);
        new.push((u, merged));
    }
    let before: Vec<_> = new.iter().filter_map(|(_, p)| p.node).collect();
    let c = b.commit(&control(if before.is_empty() { vec![h] } else { before }));
    let mut writes = Vec::new();
    for (u, p) in &new {
        for column in copies(u).filter(|&c| ctx.faults().writable(c)) {
            let mnemonic = if column == u.column {
                Mnemonic::Wpd
            } else {
                Mnemonic::Wsd
            };
            let mut deps = vec![(c, EdgeKind::Control)];
            deps.extend(p.edge());
            writes.push(b.write(mnemonic, ctx.target(column, u.blocks)?, p.slot, &deps));
        }
    }
    let join = b.nil(&control(writes));
    b.terminate(&control([join]));
    finish(b, DagFamily::MirrorWrite, Vec::new(), columns)
}

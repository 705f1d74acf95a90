//! Fault-free read: `Nil -> R x n -> Cmt -> Trm`.
//!
//! Each touched unit is read over exactly its own blocks; the caller's bytes are ranges of those
//! buffers. Used by RAID 0/4/5/6 when no touched data unit is failed or unreadable (a failure on
//! another column does not matter to a read).

use crate::dag::Mnemonic;

use super::{BuildError, BuiltDag, Ctx, DagFamily, ReadPiece, StripeRequest, control, finish};

/// Builds the fault-free read of `req`'s stripe.
pub fn build(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    let ctx = Ctx::new(req)?;
    let mut b = ctx.builder(DagFamily::FaultFreeRead);
    let h = b.nil(&[]);
    let mut reads = Vec::new();
    let mut pieces = Vec::new();
    let mut columns = Vec::new();
    for u in &ctx.access().units {
        if !ctx.faults().readable(u.column) {
            return Err(ctx.unrecoverable(format!(
                "data unit {} on column {} cannot be read and the layout has no redundancy for it",
                u.data_index, u.column
            )));
        }
        let (r, slot) = b.read(Mnemonic::R, ctx.target(u.column, u.blocks)?, &control([h]));
        reads.push(r);
        columns.push(u.column);
        let start = u.offset_in_blocks as usize;
        pieces.push(ReadPiece {
            slot,
            range: start..start + u.len as usize,
        });
    }
    let c = b.commit(&control(reads));
    b.terminate(&control([c]));
    finish(b, DagFamily::FaultFreeRead, pieces, columns)
}

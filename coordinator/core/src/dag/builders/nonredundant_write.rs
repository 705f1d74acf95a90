//! Non-redundant write: `Nil -> [Rod -> Ovl] -> Cmt -> W x n -> Trm`.
//!
//! RAID 0, and RAID 4/5/6 stripes whose every parity unit failed: the data is written and no
//! parity is kept. A unit whose user bytes do not fill whole blocks has its blocks read first
//! (`Rod`) and merged (`Ovl`) before the commit, so the write after it is whole blocks.

use crate::dag::{EdgeKind, Mnemonic};

use super::{
    BuildError, BuiltDag, Ctx, DagFamily, Produced, StripeRequest, control, finish, merge_new,
};

/// Builds the non-redundant write of `req`'s stripe.
pub fn build(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    let ctx = Ctx::new(req)?;
    let bs = ctx.bs;
    let mut b = ctx.builder(DagFamily::NonRedundantWrite);
    let h = b.nil(&[]);
    let mut new = Vec::new();
    let mut columns = Vec::new();
    for u in &ctx.access().units {
        if !ctx.faults().writable(u.column) {
            return Err(ctx.unrecoverable(format!(
                "data unit {} on failed column {} has no redundancy to take the write",
                u.data_index, u.column
            )));
        }
        let old = if u.is_whole_blocks(bs) {
            None
        } else {
            if !ctx.faults().readable(u.column) {
                return Err(ctx.unrecoverable(format!(
                    "the partial blocks of data unit {} on column {} are unreadable and have no redundancy",
                    u.data_index, u.column
                )));
            }
            let (r, slot) = b.read(
                Mnemonic::Rod,
                ctx.target(u.column, u.blocks)?,
                &control([h]),
            );
            columns.push(u.column);
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
        let mut deps = vec![(c, EdgeKind::Control)];
        deps.extend(p.edge());
        writes.push(b.write(Mnemonic::W, ctx.target(u.column, u.blocks)?, p.slot, &deps));
    }
    b.terminate(&control(writes));
    finish(b, DagFamily::NonRedundantWrite, Vec::new(), columns)
}

//! Small write (read-modify-write):
//! `Nil -> {Rod x n, Rop, [Roq]} -> [Ovl] -> Xor [Q] -> Cmt -> {Wnd x n, Wnp, [Wnq]} -> Trm`.
//!
//! New parity from old parity, old data and new data, over the stripe's hull:
//! `P' = P ^ sum (D_i ^ D_i')` and `Q' = Q ^ sum g^i (D_i ^ D_i')`. Only the live parity units
//! are read and written (RAID 6 with Q failed updates P alone, and the other way round). Used
//! when at most half the data units are touched and none of them, nor a live parity unit, is
//! lost; a lost *untouched* data unit does not matter here.

use crate::dag::{EdgeKind, Mnemonic};
use crate::layout::ParityKind;

use super::{
    BufProduced, BuildError, BuiltDag, Ctx, DagFamily, Produced, StripeRequest, combine, control,
    finish, merge_new, q_coef, xor_of,
};

/// Builds the small write of `req`'s stripe.
pub fn build(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    let ctx = Ctx::new(req)?;
    let access = ctx.access();
    let faults = ctx.faults();
    let mut b = ctx.builder(DagFamily::SmallWrite);
    let h = b.nil(&[]);
    let mut columns = Vec::new();

    let parity: Vec<_> = access
        .parity
        .iter()
        .filter(|p| faults.writable(p.column))
        .collect();
    if parity.is_empty() {
        return Err(ctx.unrecoverable("a small write needs a live parity unit"));
    }
    let mut old_data = Vec::new();
    for u in &access.units {
        if !faults.readable(u.column) {
            return Err(ctx.unrecoverable(format!(
                "a small write needs the old data of unit {} on column {}",
                u.data_index, u.column
            )));
        }
        let (r, slot) = b.read(Mnemonic::Rod, ctx.hull_target(u.column)?, &control([h]));
        columns.push(u.column);
        old_data.push(Produced {
            node: Some(r),
            slot,
        });
    }
    let mut old_parity = Vec::new();
    for p in &parity {
        if !faults.readable(p.column) {
            return Err(ctx.unrecoverable(format!(
                "a small write needs the old parity on column {}",
                p.column
            )));
        }
        let m = match p.kind {
            ParityKind::P => Mnemonic::Rop,
            ParityKind::Q => Mnemonic::Roq,
        };
        let (r, slot) = b.read(m, ctx.hull_target(p.column)?, &control([h]));
        columns.push(p.column);
        old_parity.push(Produced {
            node: Some(r),
            slot,
        });
    }
    let new_data: Vec<Produced> = access
        .units
        .iter()
        .zip(&old_data)
        .map(|(u, old)| {
            let base = (!ctx.covers_hull(u)).then_some(*old);
            merge_new(&mut b, ctx.user(u), base, ctx.user_in_hull(u).start)
        })
        .collect();

    let mut new_parity = Vec::new();
    for (p, old) in parity.iter().zip(&old_parity) {
        let produced = match p.kind {
            ParityKind::P => {
                let mut inputs: Vec<BufProduced> = vec![(*old).into()];
                inputs.extend(old_data.iter().map(|&d| BufProduced::from(d)));
                inputs.extend(new_data.iter().map(|&d| BufProduced::from(d)));
                xor_of(&mut b, Mnemonic::Xor, &inputs, h)
            }
            ParityKind::Q => {
                let mut terms: Vec<(u8, BufProduced)> = vec![(1, (*old).into())];
                for (u, (o, n)) in access.units.iter().zip(old_data.iter().zip(&new_data)) {
                    let g = q_coef(u.data_index);
                    terms.push((g, (*o).into()));
                    terms.push((g, (*n).into()));
                }
                combine(&mut b, Mnemonic::Q, &terms, h)
            }
        };
        new_parity.push(produced);
    }
    let c = b.commit(&control(new_parity.iter().filter_map(|p| p.node)));
    let mut writes = Vec::new();
    for (u, n) in access.units.iter().zip(&new_data) {
        let mut deps = vec![(c, EdgeKind::Control)];
        deps.extend(n.edge());
        let from = n.slot.range(ctx.blocks_in_hull(u));
        writes.push(b.write(Mnemonic::Wnd, ctx.target(u.column, u.blocks)?, from, &deps));
    }
    for (p, n) in parity.iter().zip(&new_parity) {
        let m = match p.kind {
            ParityKind::P => Mnemonic::Wnp,
            ParityKind::Q => Mnemonic::Wnq,
        };
        let mut deps = vec![(c, EdgeKind::Control)];
        deps.extend(n.edge());
        writes.push(b.write(m, ctx.hull_target(p.column)?, n.slot, &deps));
    }
    b.terminate(&control(writes));
    finish(b, DagFamily::SmallWrite, Vec::new(), columns)
}

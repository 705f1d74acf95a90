//! Degraded write (and the reconstruct-write core that the large write shares):
//! `Nil -> {Rrd x k, Rp, [Rq]} -> Xrc -> [Ovl] -> Xor [Q] -> Cmt -> {Wnd, Wnp, [Wnq], [W]} -> Nil -> Trm`.
//!
//! The new parity is computed from the whole stripe's new content over the hull: the user's
//! bytes for touched units, the old content for the rest. Old content is read where the column
//! is readable; where it is lost and needed (an untouched unit, or the untouched bytes of a
//! partially written one) it is reconstructed first from the survivors and the old parity
//! ([`super::recover`]). Then every live column is written: touched data (`Wnd`), the live
//! parity units (`Wnp`, `Wnq`), and, as a repair, the reconstructed content of an untouched unit
//! whose column only answered data loss (`W`). A failed column is never written.

use crate::dag::{DagBuilder, EdgeKind, Mnemonic, NodeId};
use crate::layout::ParityKind;

use super::{
    BufProduced, BuildError, BuiltDag, Ctx, DagFamily, Produced, StripeRequest, combine, control,
    finish, merge_new, q_coef, solve, xor_of,
};

/// Builds the degraded write of `req`'s stripe.
pub fn build(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    reconstruct_write(req, DagFamily::DegradedWrite)
}

/// The reconstruct-write for the large write (no lost data unit) and the degraded write.
pub(crate) fn reconstruct_write(
    req: &StripeRequest<'_>,
    family: DagFamily,
) -> Result<BuiltDag, BuildError> {
    let ctx = Ctx::new(req)?;
    let access = ctx.access();
    let faults = ctx.faults();
    let sl = &access.layout;
    let k = sl.data_units();
    let column_of = |i: usize| sl.data_column(i).unwrap_or(usize::MAX);
    let lost: Vec<usize> = (0..k).filter(|&i| !faults.readable(column_of(i))).collect();
    if family == DagFamily::LargeWrite && !lost.is_empty() {
        return Err(ctx.unrecoverable(format!(
            "a large write needs every data unit, units {lost:?} are lost"
        )));
    }
    let live_parity: Vec<_> = access
        .parity
        .iter()
        .filter(|p| faults.writable(p.column))
        .collect();
    if live_parity.is_empty() {
        return Err(ctx.unrecoverable("a redundant write needs a live parity unit"));
    }
    let needs_old = |i: usize| access.unit(i).is_none_or(|u| !ctx.covers_hull(u));
    let lost_and_needed: Vec<usize> = lost.iter().copied().filter(|&i| needs_old(i)).collect();
    let read_mnemonic = if family == DagFamily::LargeWrite {
        Mnemonic::Rod
    } else {
        Mnemonic::Rrd
    };

    let mut b = ctx.builder(family);
    let h = b.nil(&[]);
    let mut columns = Vec::new();
    let mut old: Vec<Option<Produced>> = vec![None; k];
    let read_data = |b: &mut DagBuilder, i: usize, columns: &mut Vec<usize>| {
        let (r, slot) = b.read(read_mnemonic, ctx.hull_target(column_of(i))?, &control([h]));
        columns.push(column_of(i));
        Ok::<_, BuildError>(Produced {
            node: Some(r),
            slot,
        })
    };
    if lost_and_needed.is_empty() {
        for i in (0..k).filter(|&i| needs_old(i)) {
            old[i] = Some(read_data(&mut b, i, &mut columns)?);
        }
    } else {
        // Every data unit takes part in the parity equations, so solve for all lost ones.
        let equations: Vec<_> = access
            .parity
            .iter()
            .filter(|p| faults.readable(p.column))
            .take(lost.len())
            .collect();
        let kinds: Vec<ParityKind> = equations.iter().map(|p| p.kind).collect();
        let combos = solve(k, &lost, &kinds).ok_or_else(|| {
            ctx.unrecoverable(format!(
                "old content of data units {lost_and_needed:?} is needed and {} readable parity unit(s) cannot rebuild {} lost unit(s)",
                kinds.len(),
                lost.len()
            ))
        })?;
        for i in (0..k).filter(|i| !lost.contains(i)) {
            old[i] = Some(read_data(&mut b, i, &mut columns)?);
        }
        let mut parity_bufs = Vec::new();
        for p in &equations {
            let m = match p.kind {
                ParityKind::P => Mnemonic::Rp,
                ParityKind::Q => Mnemonic::Rq,
            };
            let (r, slot) = b.read(m, ctx.hull_target(p.column)?, &control([h]));
            columns.push(p.column);
            parity_bufs.push((
                p.kind,
                Produced {
                    node: Some(r),
                    slot,
                },
            ));
        }
        for (i, produced) in recover_units(
            &mut b,
            &combos,
            &old,
            &parity_bufs,
            |i| lost_and_needed.contains(&i),
            h,
        ) {
            old[i] = Some(produced);
        }
    }

    // New content of every data unit over the hull.
    let mut new: Vec<Produced> = Vec::with_capacity(k);
    for (i, old_i) in old.iter().enumerate() {
        let produced = match access.unit(i) {
            Some(u) => {
                let base = if ctx.covers_hull(u) { None } else { *old_i };
                merge_new(&mut b, ctx.user(u), base, ctx.user_in_hull(u).start)
            }
            // Untouched units were read or rebuilt above.
            None => {
                old_i.ok_or_else(|| ctx.unrecoverable(format!("data unit {i} has no content")))?
            }
        };
        new.push(produced);
    }
    let mut new_parity = Vec::new();
    for p in &live_parity {
        let produced = match p.kind {
            ParityKind::P => {
                let inputs: Vec<BufProduced> = new.iter().map(|&n| n.into()).collect();
                xor_of(&mut b, Mnemonic::Xor, &inputs, h)
            }
            ParityKind::Q => {
                let terms: Vec<(u8, BufProduced)> = new
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| (q_coef(i), n.into()))
                    .collect();
                combine(&mut b, Mnemonic::Q, &terms, h)
            }
        };
        new_parity.push(produced);
    }

    let c = b.commit(&control(b.dangling()));
    let after = |n: &Produced| {
        let mut deps = vec![(c, EdgeKind::Control)];
        deps.extend(n.edge());
        deps
    };
    for u in access.units.iter().filter(|u| faults.writable(u.column)) {
        let n = &new[u.data_index];
        let from = n.slot.range(ctx.blocks_in_hull(u));
        b.write(
            Mnemonic::Wnd,
            ctx.target(u.column, u.blocks)?,
            from,
            &after(n),
        );
    }
    for (p, n) in live_parity.iter().zip(&new_parity) {
        let m = match p.kind {
            ParityKind::P => Mnemonic::Wnp,
            ParityKind::Q => Mnemonic::Wnq,
        };
        b.write(m, ctx.hull_target(p.column)?, n.slot, &after(n));
    }
    // Repair: an untouched unit that only answered data loss gets its rebuilt content back.
    for &i in &lost {
        let column = column_of(i);
        if access.unit(i).is_none()
            && faults.writable(column)
            && let Some(n) = &old[i]
        {
            b.write(Mnemonic::W, ctx.hull_target(column)?, n.slot, &after(n));
        }
    }
    let tail = if family == DagFamily::DegradedWrite {
        let join = b.nil(&control(b.dangling()));
        vec![join]
    } else {
        b.dangling()
    };
    b.terminate(&control(tail));
    finish(b, family, Vec::new(), columns)
}

/// The lost data units `wanted` selects, from the known data units (`known[i]`) and the parity
/// units read, given the solver's combinations for every lost unit.
///
/// Two units lost with P and Q: rather than two combinations of every survivor (each a general
/// GF(2^8) multiply per term), compute the partial syndromes `S_P = P + sum D_i` (XOR) and
/// `S_Q = Q + sum g^i D_i` (multiplications by `g` only) once, then
/// `D_x = (g^y S_P + S_Q) / (g^x + g^y)` (two general multiplies) and `D_y = S_P + D_x` (XOR).
pub(crate) fn recover_units(
    b: &mut DagBuilder,
    combos: &[super::Combination],
    known: &[Option<Produced>],
    parity: &[(ParityKind, Produced)],
    wanted: impl Fn(usize) -> bool,
    fallback: NodeId,
) -> Vec<(usize, Produced)> {
    let want: Vec<usize> = combos
        .iter()
        .map(|c| c.unknown)
        .filter(|&i| wanted(i))
        .collect();
    let find = |kind: ParityKind| parity.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p);
    if let ([cx, cy], Some(p), Some(q)) = (combos, find(ParityKind::P), find(ParityKind::Q))
        && !want.is_empty()
    {
        let (x, y) = (cx.unknown, cy.unknown);
        let survivors: Vec<(usize, Produced)> = known
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.map(|k| (i, k)))
            .collect();
        let mut sp_in: Vec<BufProduced> = vec![p.into()];
        sp_in.extend(survivors.iter().map(|(_, d)| BufProduced::from(*d)));
        let sp = xor_of(b, Mnemonic::Xrc, &sp_in, fallback);
        let mut sq_terms: Vec<(u8, BufProduced)> = vec![(1, q.into())];
        sq_terms.extend(
            survivors
                .iter()
                .map(|(i, d)| (q_coef(*i), BufProduced::from(*d))),
        );
        let sq = combine(b, Mnemonic::Xrc, &sq_terms, fallback);
        let (gx, gy) = (q_coef(x), q_coef(y));
        let det = crate::parity::gf256::inv(gx ^ gy).unwrap_or(0);
        let mul = crate::parity::gf256::mul;
        let dx = combine(
            b,
            Mnemonic::Xrc,
            &[(mul(gy, det), sp.into()), (det, sq.into())],
            fallback,
        );
        let mut out = Vec::new();
        if wanted(x) {
            out.push((x, dx));
        }
        if wanted(y) {
            out.push((
                y,
                xor_of(b, Mnemonic::Xrc, &[sp.into(), dx.into()], fallback),
            ));
        }
        return out;
    }
    combos
        .iter()
        .filter(|c| wanted(c.unknown))
        .map(|c| (c.unknown, recover_unit(b, c, known, parity, fallback)))
        .collect()
}

/// One lost data unit from the known data units (`known[i]`) and the parity units read.
pub(crate) fn recover_unit(
    b: &mut DagBuilder,
    combo: &super::Combination,
    known: &[Option<Produced>],
    parity: &[(ParityKind, Produced)],
    fallback: NodeId,
) -> Produced {
    let mut terms: Vec<(u8, BufProduced)> = Vec::new();
    for (kind, c) in &combo.parity {
        if let Some((_, p)) = parity.iter().find(|(k, _)| k == kind) {
            terms.push((*c, (*p).into()));
        }
    }
    for (i, c) in &combo.data {
        if let Some(Some(d)) = known.get(*i) {
            terms.push((*c, (*d).into()));
        }
    }
    if combo.is_xor() {
        let inputs: Vec<BufProduced> = terms.into_iter().map(|(_, t)| t).collect();
        xor_of(b, Mnemonic::Xrc, &inputs, fallback)
    } else {
        combine(b, Mnemonic::Xrc, &terms, fallback)
    }
}

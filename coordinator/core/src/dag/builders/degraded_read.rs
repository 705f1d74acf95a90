//! Degraded read: `Nil -> {Rud, Rrd, Rp, [Rq]} -> Xrc -> Cmt -> [W] -> Trm`.
//!
//! A touched data unit is lost (its column failed, or answered data loss for these blocks): it is
//! rebuilt over the stripe's hull from the surviving data units (`Rud` for touched ones, `Rrd`
//! for the rest) and as many readable parity units as there are lost data units (P preferred:
//! one loss with P is a plain XOR). The caller's bytes come from the surviving reads and the
//! rebuilt buffers. In a repair (`StripeRequest::repair`: the access pipeline's second pass
//! over exactly the blocks that answered data loss, under the stripe's write lock), a lost unit
//! whose column is still live gets its rebuilt blocks written back after the commit (`W`).

use crate::dag::{EdgeKind, Mnemonic};
use crate::layout::ParityKind;

use super::degraded_write::recover_units;
use super::{BuildError, BuiltDag, Ctx, DagFamily, Produced, ReadPiece, StripeRequest, control};
use super::{finish, solve};

/// Builds the degraded read of `req`'s stripe.
pub fn build(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    let ctx = Ctx::new(req)?;
    let access = ctx.access();
    let faults = ctx.faults();
    let sl = &access.layout;
    let k = sl.data_units();
    let column_of = |i: usize| sl.data_column(i).unwrap_or(usize::MAX);
    let lost: Vec<usize> = (0..k).filter(|&i| !faults.readable(column_of(i))).collect();
    let equations: Vec<_> = access
        .parity
        .iter()
        .filter(|p| faults.readable(p.column))
        .take(lost.len())
        .collect();
    let kinds: Vec<ParityKind> = equations.iter().map(|p| p.kind).collect();
    let combos = if lost.is_empty() {
        Vec::new()
    } else {
        solve(k, &lost, &kinds).ok_or_else(|| {
            ctx.unrecoverable(format!(
                "{} lost data unit(s) and {} readable parity unit(s)",
                lost.len(),
                kinds.len()
            ))
        })?
    };

    let mut b = ctx.builder(DagFamily::DegradedRead);
    let h = b.nil(&[]);
    let mut columns = Vec::new();
    let mut content: Vec<Option<Produced>> = vec![None; k];
    for i in (0..k).filter(|i| !lost.contains(i)) {
        let m = if access.unit(i).is_some() {
            Mnemonic::Rud
        } else {
            Mnemonic::Rrd
        };
        let (r, slot) = b.read(m, ctx.hull_target(column_of(i))?, &control([h]));
        columns.push(column_of(i));
        content[i] = Some(Produced {
            node: Some(r),
            slot,
        });
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
    // Rebuild the lost units the caller reads, and (a repair) those whose live column can be
    // written back.
    let wanted =
        |i: usize| access.unit(i).is_some() || (req.repair && faults.writable(column_of(i)));
    let mut rebuilt = Vec::new();
    for (i, produced) in recover_units(&mut b, &combos, &content, &parity_bufs, wanted, h) {
        rebuilt.push(i);
        content[i] = Some(produced);
    }
    let c = b.commit(&control(b.dangling()));
    // Only a repair writes back (under the stripe's write lock, for exactly the blocks that
    // answered data loss), and only in a stripe whose redundancy is known good: before its
    // resync (or with lost blocks) the rebuilt bytes may be wrong, and writing them back would
    // make them look right.
    for &i in rebuilt.iter().filter(|_| req.repair && req.in_sync) {
        let column = column_of(i);
        if let (true, Some(n)) = (faults.writable(column), &content[i]) {
            let mut deps = vec![(c, EdgeKind::Control)];
            deps.extend(n.edge());
            b.write(Mnemonic::W, ctx.hull_target(column)?, n.slot, &deps);
        }
    }
    b.terminate(&control(b.dangling()));

    let mut pieces = Vec::new();
    for u in &access.units {
        let slot = content[u.data_index]
            .ok_or_else(|| ctx.unrecoverable(format!("data unit {} has no content", u.data_index)))?
            .slot;
        pieces.push(ReadPiece {
            slot,
            range: ctx.user_in_hull(u),
        });
    }
    finish(b, DagFamily::DegradedRead, pieces, columns)
}

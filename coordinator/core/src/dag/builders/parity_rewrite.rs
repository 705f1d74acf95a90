//! Parity rewrite (resync): `Nil -> Rrd x k -> Xor [Q] -> Cmt -> Wnp [Wnq] -> Trm`, and for
//! RAID 1 `Nil -> Rmir x k -> Cmt -> Wsd x k -> Trm`.
//!
//! After an unclean shutdown a stripe's redundancy may disagree with its data (a write was in
//! flight). The rewrite makes it agree again: parity and Q are recomputed from the data units
//! over the whole stripe unit and written to every live parity column; RAID 1 copies each
//! primary to its live secondary (Linux md's rule: the first copy wins). A stripe whose data is
//! not all readable cannot be rewritten (its lost units need the old parity), which is why a
//! volume that is both dirty and degraded is not assembled automatically. A data unit that
//! answered data loss (RAID 1: a primary copy) refuses the stripe too: the resync then repairs
//! it block by block where the redundancy allows, or records it lost (`crate::resync`). RAID 0 has nothing to
//! rewrite. The caller holds the whole stripe's write lock; the access given must cover the whole
//! stripe (its user data is not used).

use crate::dag::{EdgeKind, Mnemonic};
use crate::layout::{ParityKind, RaidLevel};

use super::{
    BufProduced, BuildError, BuiltDag, Ctx, DagFamily, Produced, StripeRequest, combine, control,
    finish, q_coef, xor_of,
};

/// Builds the parity rewrite of `req`'s stripe.
pub fn build(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    let ctx = Ctx::new(req)?;
    let access = ctx.access();
    let faults = ctx.faults();
    let sl = &access.layout;
    let k = sl.data_units();
    if access.unit_blocks.start != 0
        || access.unit_blocks.end != req.layout.geometry().stripe_unit_blocks()
    {
        return Err(BuildError::InvalidAccess {
            stripe: access.stripe,
        });
    }
    let mut b = ctx.builder(DagFamily::ParityRewrite);
    let h = b.nil(&[]);
    let mut columns = Vec::new();
    match req.layout.level() {
        RaidLevel::Raid0 => {
            let c = b.commit(&control([h]));
            b.terminate(&control([c]));
        }
        RaidLevel::Raid1 => {
            let mut copies = Vec::new();
            for (i, primary) in sl.data_columns() {
                let Some(secondary) = sl.mirror_column(i) else {
                    continue;
                };
                if faults.writable(primary) && !faults.readable(primary) {
                    // Blocks of the primary answered data loss: copying it would skip them
                    // and leave the pair's only good copy unprotected. The resync repairs
                    // the pair from the secondary instead (`crate::resync`).
                    return Err(ctx.unrecoverable(format!(
                        "data unit {i}: its primary copy on column {primary} is unreadable"
                    )));
                }
                if !faults.readable(primary) || !faults.writable(secondary) {
                    continue;
                }
                let (r, slot) = b.read(Mnemonic::Rmir, ctx.hull_target(primary)?, &control([h]));
                columns.push(primary);
                copies.push((secondary, r, slot));
            }
            let c = b.commit(&control(b.dangling()));
            for (secondary, r, slot) in copies {
                b.write(
                    Mnemonic::Wsd,
                    ctx.hull_target(secondary)?,
                    slot,
                    &[(c, EdgeKind::Control), (r, EdgeKind::TrueData)],
                );
            }
            b.terminate(&control(b.dangling()));
        }
        RaidLevel::Raid4 | RaidLevel::Raid5 | RaidLevel::Raid6 => {
            let mut data = Vec::with_capacity(k);
            for (i, column) in sl.data_columns() {
                if !faults.readable(column) {
                    return Err(ctx.unrecoverable(format!(
                        "data unit {i} on column {column} is lost: its stripe's parity cannot be recomputed"
                    )));
                }
                let (r, slot) = b.read(Mnemonic::Rrd, ctx.hull_target(column)?, &control([h]));
                columns.push(column);
                data.push(Produced {
                    node: Some(r),
                    slot,
                });
            }
            let mut parity = Vec::new();
            for p in access.parity.iter().filter(|p| faults.writable(p.column)) {
                let produced = match p.kind {
                    ParityKind::P => {
                        let inputs: Vec<BufProduced> = data.iter().map(|&d| d.into()).collect();
                        xor_of(&mut b, Mnemonic::Xor, &inputs, h)
                    }
                    ParityKind::Q => {
                        let terms: Vec<(u8, BufProduced)> = data
                            .iter()
                            .enumerate()
                            .map(|(i, &d)| (q_coef(i), d.into()))
                            .collect();
                        combine(&mut b, Mnemonic::Q, &terms, h)
                    }
                };
                parity.push((p, produced));
            }
            let c = b.commit(&control(b.dangling()));
            for (p, n) in parity {
                let m = match p.kind {
                    ParityKind::P => Mnemonic::Wnp,
                    ParityKind::Q => Mnemonic::Wnq,
                };
                let mut deps = vec![(c, EdgeKind::Control)];
                deps.extend(n.edge());
                b.write(m, ctx.hull_target(p.column)?, n.slot, &deps);
            }
            b.terminate(&control(b.dangling()));
        }
    }
    finish(b, DagFamily::ParityRewrite, Vec::new(), columns)
}

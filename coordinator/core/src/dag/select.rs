//! DAG selection (RAIDframe's `rf_aselect.c` and each layout's selection function): which
//! builder serves one stripe of an access, given which columns are lost.
//!
//! RAID 4/5/6, with "lost" meaning failed or unreadable for this stripe:
//! - a read takes the fault-free read unless a touched data unit is lost, then the degraded read;
//! - a write with every parity unit failed is a non-redundant write;
//! - a write that touches no lost data unit and needs no lost parity takes the small write
//!   (read-modify-write) when at most half the data units are touched or some untouched data
//!   unit is lost, else the large write;
//! - a live parity unit that answered data loss cannot be read for a small write: the large
//!   write recomputes it from the data, or the degraded write when data is lost too;
//! - a touched data unit lost: the degraded write.
//!
//! RAID 1 always takes the mirror read or write (they pick or skip copies themselves), RAID 0
//! the fault-free read or non-redundant write. Selection first checks the layout's tolerance
//! ([`Layout::failures`]); a builder may still refuse a stripe whose losses its redundancy cannot
//! cover (data loss on top of failures), with [`BuildError::Unrecoverable`].

use crate::layout::{Layout, RaidLevel, StripeAccess};

use super::builders::{BuildError, ColumnFaults, DagFamily};

/// What the access does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// Read the range.
    Read,
    /// Overwrite the range.
    Write,
}

/// Picks the DAG family for one stripe of an access.
pub fn select(
    layout: &Layout,
    access: &StripeAccess,
    kind: AccessKind,
    faults: &ColumnFaults,
) -> Result<DagFamily, BuildError> {
    let failures = layout.failures(access, &faults.failed);
    // A read that touches no unit on a missing column needs no redundancy: it is served even
    // when the stripe has lost more columns than the layout tolerates (a failed volume still
    // serves what its surviving columns hold).
    if !failures.tolerated
        && kind == AccessKind::Read
        && layout.level() != RaidLevel::Raid1
        && failures.failed.iter().all(|f| !f.touched)
        && access.units.iter().all(|u| faults.readable(u.column))
    {
        return Ok(DagFamily::FaultFreeRead);
    }
    if !failures.tolerated {
        return Err(BuildError::Unrecoverable {
            stripe: access.stripe,
            lost: failures.failed.iter().map(|f| f.column).collect(),
            detail: format!(
                "more failed columns than {} tolerates ({})",
                layout.level(),
                layout.fault_tolerance()
            ),
        });
    }
    Ok(match (layout.level(), kind) {
        (RaidLevel::Raid0, AccessKind::Read) => DagFamily::FaultFreeRead,
        (RaidLevel::Raid0, AccessKind::Write) => DagFamily::NonRedundantWrite,
        (RaidLevel::Raid1, AccessKind::Read) => DagFamily::MirrorRead,
        (RaidLevel::Raid1, AccessKind::Write) => DagFamily::MirrorWrite,
        (RaidLevel::Raid4 | RaidLevel::Raid5 | RaidLevel::Raid6, _) => {
            select_parity(access, kind, faults)
        }
    })
}

fn select_parity(access: &StripeAccess, kind: AccessKind, faults: &ColumnFaults) -> DagFamily {
    let sl = &access.layout;
    let lost_data: Vec<usize> = sl
        .data_columns()
        .filter(|&(_, c)| !faults.readable(c))
        .map(|(i, _)| i)
        .collect();
    let touched_lost = lost_data.iter().any(|&i| access.unit(i).is_some());
    match kind {
        AccessKind::Read if touched_lost => DagFamily::DegradedRead,
        AccessKind::Read => DagFamily::FaultFreeRead,
        AccessKind::Write => {
            let live: Vec<usize> = access
                .parity
                .iter()
                .map(|p| p.column)
                .filter(|&c| faults.writable(c))
                .collect();
            let parity_unreadable = live.iter().any(|&c| !faults.readable(c));
            if live.is_empty() {
                DagFamily::NonRedundantWrite
            } else if !touched_lost && !parity_unreadable {
                let at_most_half = 2 * access.data_units_touched() <= sl.data_units();
                if at_most_half || !lost_data.is_empty() {
                    DagFamily::SmallWrite
                } else {
                    DagFamily::LargeWrite
                }
            } else if lost_data.is_empty() {
                DagFamily::LargeWrite
            } else {
                DagFamily::DegradedWrite
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ColumnSet, Geometry};

    fn layout(level: RaidLevel, columns: usize) -> Layout {
        Layout::new(level, Geometry::new(columns, 4, 512, 64).unwrap()).unwrap()
    }

    fn faults(failed: &[usize], unreadable: &[usize]) -> ColumnFaults {
        ColumnFaults {
            failed: failed.iter().copied().collect(),
            unreadable: unreadable.iter().copied().collect::<ColumnSet>(),
        }
    }

    #[test]
    fn a_read_of_live_units_is_served_beyond_the_tolerance_and_a_write_is_not() {
        let l = layout(RaidLevel::Raid5, 5);
        // Stripe 0: data on columns 0..4, P on column 4; columns 2 and 3 missing.
        let unit0 = l.map(0, 512).unwrap().stripes.remove(0);
        let unit2 = l.map(2 * l.unit_bytes(), 512).unwrap().stripes.remove(0);
        let missing = faults(&[2, 3], &[]);
        assert_eq!(
            select(&l, &unit0, AccessKind::Read, &missing),
            Ok(DagFamily::FaultFreeRead)
        );
        assert!(matches!(
            select(&l, &unit2, AccessKind::Read, &missing),
            Err(BuildError::Unrecoverable { .. })
        ));
        assert!(matches!(
            select(&l, &unit0, AccessKind::Write, &missing),
            Err(BuildError::Unrecoverable { .. })
        ));
    }

    #[test]
    fn raid5_follows_raidframes_table() {
        // 5 columns, 4 data units of 2 KiB; stripe 0: data on columns 0..4, P on column 4.
        let l = layout(RaidLevel::Raid5, 5);
        let unit = l.unit_bytes();
        let one = l.map(0, 512).unwrap().stripes.remove(0);
        let two = l.map(0, 2 * unit).unwrap().stripes.remove(0);
        let three = l.map(0, 3 * unit).unwrap().stripes.remove(0);
        let none = faults(&[], &[]);
        use AccessKind::{Read, Write};
        use DagFamily::*;
        let cases = [
            (&one, Read, faults(&[], &[]), FaultFreeRead),
            (&one, Read, faults(&[1], &[]), FaultFreeRead),
            (&one, Read, faults(&[0], &[]), DegradedRead),
            (&one, Read, faults(&[], &[0]), DegradedRead),
            (&one, Write, none.clone(), SmallWrite),
            (&two, Write, none.clone(), SmallWrite),
            (&three, Write, none.clone(), LargeWrite),
            (&three, Write, faults(&[3], &[]), SmallWrite),
            (&three, Write, faults(&[4], &[]), NonRedundantWrite),
            (&three, Write, faults(&[1], &[]), DegradedWrite),
            (&one, Write, faults(&[], &[4]), LargeWrite),
            (&one, Write, faults(&[2], &[4]), DegradedWrite),
            (&one, Write, faults(&[], &[0]), DegradedWrite),
        ];
        for (access, kind, f, expect) in cases {
            assert_eq!(
                select(&l, access, kind, &f).unwrap(),
                expect,
                "{kind:?} {f:?}"
            );
        }
        assert!(matches!(
            select(&l, &one, Read, &faults(&[0, 1], &[])),
            Err(BuildError::Unrecoverable { stripe: 0, .. })
        ));
    }

    #[test]
    fn raid6_with_two_failures() {
        // Stripe 0 of 6 columns: Q on 0, data on 1..5, P on 5.
        let l = layout(RaidLevel::Raid6, 6);
        let one = l.map(0, 512).unwrap().stripes.remove(0);
        use AccessKind::Write;
        use DagFamily::*;
        assert_eq!(one.units[0].column, 1);
        assert_eq!(
            select(&l, &one, Write, &faults(&[5, 0], &[])).unwrap(),
            NonRedundantWrite
        );
        assert_eq!(
            select(&l, &one, Write, &faults(&[5], &[])).unwrap(),
            SmallWrite
        );
        assert_eq!(
            select(&l, &one, Write, &faults(&[1, 2], &[])).unwrap(),
            DegradedWrite
        );
        assert_eq!(
            select(&l, &one, Write, &faults(&[2, 3], &[])).unwrap(),
            SmallWrite
        );
        assert!(select(&l, &one, Write, &faults(&[1, 2, 3], &[])).is_err());
    }

    #[test]
    fn raid0_and_raid1() {
        let l0 = layout(RaidLevel::Raid0, 3);
        let a = l0.map(0, 100).unwrap().stripes.remove(0);
        assert_eq!(
            select(&l0, &a, AccessKind::Write, &faults(&[], &[])).unwrap(),
            DagFamily::NonRedundantWrite
        );
        // A failed column the access does not touch does not stop a RAID 0 access.
        assert_eq!(
            select(&l0, &a, AccessKind::Read, &faults(&[2], &[])).unwrap(),
            DagFamily::FaultFreeRead
        );
        assert!(select(&l0, &a, AccessKind::Read, &faults(&[0], &[])).is_err());
        let l1 = layout(RaidLevel::Raid1, 4);
        let a = l1.map(0, 100).unwrap().stripes.remove(0);
        assert_eq!(
            select(&l1, &a, AccessKind::Read, &faults(&[0], &[])).unwrap(),
            DagFamily::MirrorRead
        );
        assert!(select(&l1, &a, AccessKind::Read, &faults(&[0, 1], &[])).is_err());
    }
}

//! Layout tests shared by every level: pinned tables and property tests of the mapping.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

/// A layout of `columns` columns with 2-block units of 512 bytes and 16 stripes.
pub(crate) fn layout(level: RaidLevel, columns: usize) -> Layout {
    Layout::new(level, Geometry::new(columns, 2, 512, 32).unwrap()).unwrap()
}

fn parse_role(cell: &str) -> UnitRole {
    match cell {
        "P" => UnitRole::P,
        "Q" => UnitRole::Q,
        _ => {
            let index = cell[1..].parse().unwrap();
            match &cell[..1] {
                "D" => UnitRole::Data { index },
                "M" => UnitRole::Mirror { index },
                _ => panic!("bad cell {cell}"),
            }
        }
    }
}

/// Checks the first stripes of `layout` against a hand-written table, one row per stripe, one
/// cell per column: `Dk` data unit k, `Mk` mirror of data unit k, `P`, `Q`. Checks the forward
/// mapping (data index to column), the inverse (column to role) and the volume offsets.
pub(crate) fn assert_stripe_table(layout: &Layout, rows: &[&str]) {
    let unit = layout.unit_bytes();
    for (stripe, row) in rows.iter().enumerate() {
        let stripe = stripe as u64;
        let s = layout.stripe(stripe).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), layout.columns(), "stripe {stripe}: row width");
        for (column, cell) in cells.iter().enumerate() {
            let role = parse_role(cell);
            assert_eq!(
                s.role_of(column),
                Some(role),
                "stripe {stripe} column {column}"
            );
            let at = stripe * unit + 7;
            let volume = |i: usize| stripe * layout.stripe_data_bytes() + i as u64 * unit + 7;
            match role {
                UnitRole::Data { index } => {
                    assert_eq!(s.data_column(index), Some(column));
                    assert_eq!(
                        layout.resolve(column, at).unwrap(),
                        ComponentContent::Data {
                            volume_offset: volume(index)
                        }
                    );
                    let loc = layout.locate(volume(index)).unwrap();
                    assert_eq!((loc.column, loc.component_offset), (column, at));
                }
                UnitRole::Mirror { index } => {
                    assert_eq!(s.mirror_column(index), Some(column));
                    assert_eq!(
                        layout.resolve(column, at).unwrap(),
                        ComponentContent::Mirror {
                            volume_offset: volume(index)
                        }
                    );
                }
                UnitRole::P => {
                    assert_eq!(s.p_column(), Some(column));
                    assert_eq!(
                        layout.resolve(column, at).unwrap(),
                        ComponentContent::P { stripe }
                    );
                }
                UnitRole::Q => {
                    assert_eq!(s.q_column(), Some(column));
                    assert_eq!(
                        layout.resolve(column, at).unwrap(),
                        ComponentContent::Q { stripe }
                    );
                }
            }
        }
    }
}

#[test]
fn map_unaligned_access_raid5_pinned() {
    // 4 columns, units of 2 blocks of 512 bytes: 3072 data bytes per stripe.
    let l = layout(RaidLevel::Raid5, 4);
    let m = l.map(1000, 3000).unwrap();
    assert_eq!((m.offset, m.len, m.stripes.len()), (1000, 3000, 2));

    let s0 = &m.stripes[0];
    assert_eq!(s0.stripe, 0);
    assert_eq!(s0.volume_range, 1000..3072);
    assert_eq!(s0.buffer_range, 0..2072);
    let got: Vec<_> = s0
        .units
        .iter()
        .map(|u| {
            (
                u.data_index,
                u.column,
                u.component_bytes.clone(),
                u.blocks,
                u.offset_in_blocks,
                u.buffer_offset,
                u.len,
            )
        })
        .collect();
    let b = |first, count| BlockRange { first, count };
    assert_eq!(
        got,
        vec![
            (0, 0, 1000..1024, b(1, 1), 488, 0, 24),
            (1, 1, 0..1024, b(0, 2), 0, 24, 1024),
            (2, 2, 0..1024, b(0, 2), 0, 1048, 1024),
        ]
    );
    assert_eq!(s0.unit_range, 0..1024);
    assert_eq!(s0.unit_blocks, 0..2);
    assert_eq!(
        s0.parity,
        vec![ParityUnit {
            kind: ParityKind::P,
            column: 3,
            component_bytes: 0..1024,
            blocks: b(0, 2)
        }]
    );
    assert!(!s0.units[0].is_whole_blocks(512));
    assert!(s0.units[1].is_whole_blocks(512));
    assert!(!s0.is_full_stripe(l.unit_bytes()));

    let s1 = &m.stripes[1];
    assert_eq!(s1.stripe, 1);
    assert_eq!(s1.units.len(), 1);
    let u = &s1.units[0];
    assert_eq!(
        (
            u.data_index,
            u.column,
            u.component_bytes.clone(),
            u.blocks,
            u.offset_in_blocks,
            u.buffer_offset,
            u.len
        ),
        (0, 3, 1024..1952, b(2, 2), 0, 2072, 928)
    );
    assert_eq!(s1.unit_range, 0..928);
    assert_eq!(s1.unit_blocks, 0..2);
    assert_eq!(s1.p().unwrap().column, 2);
    assert_eq!(s1.p().unwrap().component_bytes, 1024..1952);
    assert_eq!(s1.untouched_data().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(s1.unit(0), Some(u));
    assert_eq!(s1.unit(1), None);
}

#[test]
fn map_raid6_exposes_q_and_logical_exponents() {
    let l = layout(RaidLevel::Raid6, 5);
    // Stripe 2 entirely: D0 on column 4, D1 on 0, D2 on 1, P on 2, Q on 3.
    let m = l
        .map(2 * l.stripe_data_bytes(), l.stripe_data_bytes())
        .unwrap();
    let s = &m.stripes[0];
    let cols: Vec<_> = s.units.iter().map(|u| (u.column, u.q_exponent)).collect();
    assert_eq!(cols, vec![(4, Some(0)), (0, Some(1)), (1, Some(2))]);
    assert_eq!(
        s.parity
            .iter()
            .map(|p| (p.kind, p.column))
            .collect::<Vec<_>>(),
        vec![(ParityKind::P, 2), (ParityKind::Q, 3)]
    );
    assert!(s.is_full_stripe(l.unit_bytes()));
}

#[test]
fn map_raid1_gives_both_copies() {
    let l = layout(RaidLevel::Raid1, 4);
    let m = l.map(1024 + 10, 1024).unwrap();
    let s = &m.stripes[0];
    let got: Vec<_> = s
        .units
        .iter()
        .map(|u| (u.data_index, u.column, u.mirror_column, u.len))
        .collect();
    assert_eq!(got, vec![(1, 2, Some(3), 1014)]);
    let s1 = &m.stripes[1];
    assert_eq!(
        (
            s1.units[0].column,
            s1.units[0].mirror_column,
            s1.units[0].len
        ),
        (0, Some(1), 10)
    );
    assert!(s.parity.is_empty());
}

#[test]
fn map_rejects_empty_and_out_of_range() {
    let l = layout(RaidLevel::Raid0, 3);
    let cap = l.capacity();
    assert_eq!(l.map(5, 0), Err(LayoutError::EmptyAccess { offset: 5 }));
    assert_eq!(
        l.map(cap - 1, 2),
        Err(LayoutError::OutOfRange {
            offset: cap - 1,
            len: 2,
            capacity: cap
        })
    );
    assert_eq!(
        l.map(u64::MAX, 2),
        Err(LayoutError::OutOfRange {
            offset: u64::MAX,
            len: 2,
            capacity: cap
        })
    );
    assert!(l.map(cap - 1, 1).is_ok());
    assert!(l.map(0, cap).is_ok());
}

#[test]
fn failures_drive_selection() {
    let set = |cols: &[usize]| cols.iter().copied().collect::<ColumnSet>();
    // RAID 5, 4 columns, stripe 1: D1 D2 P D0.
    let l = layout(RaidLevel::Raid5, 4);
    let unit = l.unit_bytes();
    let m = l.map(l.stripe_data_bytes(), unit).unwrap(); // D0 of stripe 1, column 3
    let s = &m.stripes[0];
    let f = l.failures(s, &set(&[]));
    assert!(f.is_fault_free() && f.tolerated);
    let f = l.failures(s, &set(&[3]));
    assert_eq!(f.touched_failed_data().collect::<Vec<_>>(), vec![0]);
    assert!(f.tolerated && !f.p_failed());
    let f = l.failures(s, &set(&[0]));
    assert_eq!(f.failed_data().collect::<Vec<_>>(), vec![1]);
    assert_eq!(f.touched_failed_data().count(), 0);
    let f = l.failures(s, &set(&[2]));
    assert!(f.p_failed() && f.tolerated && f.failed_data().next().is_none());
    let f = l.failures(s, &set(&[0, 2]));
    assert!(!f.tolerated);

    // RAID 6, 5 columns, stripe 0: Q D0 D1 D2 P.
    let l6 = layout(RaidLevel::Raid6, 5);
    let m = l6.map(0, 10).unwrap();
    let s = &m.stripes[0];
    let f = l6.failures(s, &set(&[0, 4]));
    assert!(f.p_failed() && f.q_failed() && f.tolerated);
    let f = l6.failures(s, &set(&[1, 2]));
    assert_eq!(f.touched_failed_data().collect::<Vec<_>>(), vec![0]);
    assert_eq!(f.failed_data().collect::<Vec<_>>(), vec![0, 1]);
    assert!(f.tolerated);
    assert!(!l6.failures(s, &set(&[1, 2, 3])).tolerated);

    // RAID 0: an untouched failed column does not stop this access.
    let l0 = layout(RaidLevel::Raid0, 3);
    let m = l0.map(0, 10).unwrap();
    assert!(l0.failures(&m.stripes[0], &set(&[2])).tolerated);
    assert!(!l0.failures(&m.stripes[0], &set(&[0])).tolerated);
    assert!(!l0.stripe_failures(0, &set(&[2])).unwrap().tolerated);

    // RAID 1: one copy of a touched unit is fine; both are not.
    let l1 = layout(RaidLevel::Raid1, 4);
    let m = l1.map(0, 10).unwrap();
    let s = &m.stripes[0];
    let f = l1.failures(s, &set(&[0, 3]));
    assert!(f.tolerated);
    assert!(f.role_failed(UnitRole::Data { index: 0 }));
    assert!(f.role_failed(UnitRole::Mirror { index: 1 }));
    assert_eq!(
        f.failed.iter().map(|u| u.touched).collect::<Vec<_>>(),
        vec![true, false]
    );
    assert!(!l1.failures(s, &set(&[0, 1])).tolerated);
    assert!(l1.failures(s, &set(&[2, 3])).tolerated);
    assert!(!l1.stripe_failures(0, &set(&[2, 3])).unwrap().tolerated);
    assert_eq!(l1.stripe_failures(16, &set(&[])), None);
}

/// A random geometry for `level`, small enough to enumerate every byte.
fn small_layout() -> impl Strategy<Value = Layout> {
    (
        prop::sample::select(RaidLevel::ALL.to_vec()),
        0usize..6,
        1u64..4,
        1u64..7,
        0u64..30,
    )
        .prop_map(|(level, extra, su, bs, tail)| {
            let mut columns = level.min_columns() + extra;
            if level == RaidLevel::Raid1 && columns % 2 == 1 {
                columns += 1;
            }
            Layout::new(level, Geometry::new(columns, su, bs, su + tail).unwrap()).unwrap()
        })
}

fn layout_and_range() -> impl Strategy<Value = (Layout, u64, u64)> {
    small_layout().prop_flat_map(|l| {
        let cap = l.capacity();
        (Just(l), 0..cap).prop_flat_map(move |(l, off)| (Just(l), Just(off), 1..=cap - off))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every volume byte maps to exactly one (column, component byte), which maps back to it;
    /// every component byte holds one volume byte, a mirror copy, parity, or nothing.
    #[test]
    fn mapping_is_a_bijection(l in small_layout()) {
        let mut seen = HashSet::new();
        for v in 0..l.capacity() {
            let loc = l.locate(v).unwrap();
            prop_assert!(seen.insert((loc.column, loc.component_offset)), "byte {} collides", v);
            prop_assert_eq!(
                l.resolve(loc.column, loc.component_offset).unwrap(),
                ComponentContent::Data { volume_offset: v }
            );
            if let Some(m) = l.stripe(loc.stripe).unwrap().mirror_column(loc.data_index) {
                prop_assert_eq!(
                    l.resolve(m, loc.component_offset).unwrap(),
                    ComponentContent::Mirror { volume_offset: v }
                );
            }
        }
        let size = l.geometry().blocks_per_column() * l.geometry().block_size();
        let mut data_bytes = 0u64;
        for column in 0..l.columns() {
            for b in 0..size {
                match l.resolve(column, b).unwrap() {
                    ComponentContent::Data { volume_offset } => {
                        data_bytes += 1;
                        let loc = l.locate(volume_offset).unwrap();
                        prop_assert_eq!((loc.column, loc.component_offset), (column, b));
                    }
                    ComponentContent::Unused => {
                        prop_assert!(b >= l.geometry().used_bytes_per_column());
                    }
                    _ => prop_assert!(b < l.geometry().used_bytes_per_column()),
                }
            }
        }
        prop_assert_eq!(data_bytes, l.capacity());
    }

    /// In every stripe the units are on distinct columns, every column holds exactly one unit,
    /// and parity is never on a column holding the same stripe's data.
    #[test]
    fn units_of_a_stripe_are_on_distinct_columns(l in small_layout(), stripe in 0u64..1 << 40) {
        let s = l.stripe_unchecked(stripe);
        let n = l.columns();
        let mut owner = vec![None; n];
        for (i, c) in s.data_columns() {
            prop_assert!(c < n);
            let data = UnitRole::Data { index: i };
            prop_assert!(owner[c].replace(data).is_none(), "two units on column {}", c);
            if let Some(m) = s.mirror_column(i) {
                let mirror = UnitRole::Mirror { index: i };
                prop_assert!(owner[m].replace(mirror).is_none(), "two units on column {}", m);
            }
        }
        for (role, column) in [(UnitRole::P, s.p_column()), (UnitRole::Q, s.q_column())] {
            if let Some(c) = column {
                prop_assert!(owner[c].replace(role).is_none(), "{} on a data column", role);
            }
        }
        prop_assert_eq!(s.data_columns().count(), l.data_units());
        prop_assert_eq!(s.p_column().is_some() as usize + s.q_column().is_some() as usize, l.parity_units());
        for (c, role) in owner.iter().enumerate() {
            prop_assert_eq!(*role, s.role_of(c));
            prop_assert!(role.is_some());
        }
        if let Some(e) = s.q_exponent(0) {
            prop_assert_eq!(e, 0);
            prop_assert_eq!(s.q_exponent(l.data_units() - 1), Some((l.data_units() - 1) as u8));
        }
        prop_assert_eq!(s.q_exponent(l.data_units()), None);
    }

    /// Over any n consecutive stripes P (and Q) visit every column once.
    #[test]
    fn parity_rotation_covers_all_columns(
        level in prop::sample::select(vec![RaidLevel::Raid5, RaidLevel::Raid6]),
        columns in 4usize..20,
        start in 0u64..1 << 50,
    ) {
        let l = Layout::new(level, Geometry::new(columns, 1, 512, 1).unwrap()).unwrap();
        let mut p_seen = vec![0; columns];
        let mut q_seen = vec![0; columns];
        for s in start..start + columns as u64 {
            let sl = l.stripe_unchecked(s);
            p_seen[sl.p_column().unwrap()] += 1;
            if let Some(q) = sl.q_column() {
                q_seen[q] += 1;
            }
        }
        prop_assert!(p_seen.iter().all(|&k| k == 1));
        if level == RaidLevel::Raid6 {
            prop_assert!(q_seen.iter().all(|&k| k == 1));
        }
    }

    /// map() cuts a range into unit pieces that cover exactly that range, in order, each at the
    /// address locate() gives, with blocks rounded out minimally and parity on its own column.
    #[test]
    fn map_covers_the_range_in_order((l, offset, len) in layout_and_range()) {
        let m = l.map(offset, len).unwrap();
        let bs = l.geometry().block_size();
        let unit = l.unit_bytes();
        prop_assert_eq!((m.offset, m.len), (offset, len));
        let mut pos = offset;
        let mut prev_stripe = None;
        for s in &m.stripes {
            if let Some(p) = prev_stripe {
                prop_assert_eq!(s.stripe, p + 1);
            }
            prev_stripe = Some(s.stripe);
            prop_assert_eq!(s.layout, l.stripe(s.stripe).unwrap());
            prop_assert_eq!(s.volume_range.start, pos);
            prop_assert_eq!(s.buffer_range.start, pos - offset);
            prop_assert!(!s.units.is_empty());
            for w in s.units.windows(2) {
                prop_assert_eq!(w[1].data_index, w[0].data_index + 1);
            }
            for u in &s.units {
                prop_assert_eq!(u.volume_offset, pos);
                prop_assert_eq!(u.buffer_offset, pos - offset);
                prop_assert!(u.len > 0 && u.unit_offset + u.len <= unit);
                let first = l.locate(u.volume_offset).unwrap();
                let last = l.locate(u.volume_offset + u.len - 1).unwrap();
                prop_assert_eq!((first.stripe, first.data_index), (s.stripe, u.data_index));
                prop_assert_eq!((last.stripe, last.data_index), (s.stripe, u.data_index));
                prop_assert_eq!(first.column, u.column);
                prop_assert_eq!(&u.component_bytes, &(first.component_offset..last.component_offset + 1));
                prop_assert_eq!(u.blocks.first, u.component_bytes.start / bs);
                prop_assert_eq!(u.blocks.end(), u.component_bytes.end.div_ceil(bs));
                prop_assert_eq!(u.offset_in_blocks, u.component_bytes.start - u.blocks.first * bs);
                prop_assert!(u.offset_in_blocks < bs);
                prop_assert!(s.unit_range.start <= u.unit_offset && u.unit_offset + u.len <= s.unit_range.end);
                prop_assert_eq!(u.mirror_column, s.layout.mirror_column(u.data_index));
                for p in &s.parity {
                    prop_assert!(p.column != u.column);
                }
                pos += u.len;
            }
            prop_assert_eq!(s.volume_range.end, pos);
            prop_assert_eq!(s.buffer_range.end, pos - offset);
            prop_assert_eq!(s.unit_blocks.start, s.unit_range.start / bs);
            prop_assert_eq!(s.unit_blocks.end, s.unit_range.end.div_ceil(bs));
            prop_assert_eq!(s.parity.len(), l.parity_units());
            for p in &s.parity {
                let base = s.stripe * unit;
                prop_assert_eq!(&p.component_bytes, &(base + s.unit_range.start..base + s.unit_range.end));
                prop_assert_eq!(p.blocks, BlockRange::covering(&p.component_bytes, bs));
            }
            // Touched and untouched data units partition the stripe.
            prop_assert_eq!(s.untouched_data().count() + s.units.len(), l.data_units());
        }
        prop_assert_eq!(pos, offset + len);
    }

    /// Whatever columns failed, a stripe's failed units are exactly its units on those columns,
    /// and RAID 4/5/6 tolerate a stripe exactly when at most `parity_units` of them failed.
    #[test]
    fn failures_match_the_roles(
        (l, offset, len) in layout_and_range(),
        failed in prop::collection::vec(0usize..12, 0..4),
    ) {
        let failed: ColumnSet = failed.into_iter().collect();
        let m = l.map(offset, len).unwrap();
        for s in &m.stripes {
            let f = l.failures(s, &failed);
            let expect: Vec<usize> = failed.iter().filter(|&c| c < l.columns()).collect();
            prop_assert_eq!(f.failed.iter().map(|u| u.column).collect::<Vec<_>>(), expect);
            for u in &f.failed {
                prop_assert_eq!(Some(u.role), s.layout.role_of(u.column));
            }
            match l.level() {
                RaidLevel::Raid4 | RaidLevel::Raid5 | RaidLevel::Raid6 => {
                    prop_assert_eq!(f.tolerated, f.failed.len() <= l.parity_units());
                    prop_assert_eq!(f.tolerated, l.tolerates(&failed));
                }
                _ => {
                    // The stripe-wide rule is never looser than the access's.
                    let whole = l.stripe_failures(s.stripe, &failed).unwrap();
                    prop_assert!(!whole.tolerated || f.tolerated);
                    prop_assert_eq!(whole.tolerated, l.tolerates(&failed));
                }
            }
        }
    }

    /// With P the XOR of a stripe's data units placed by the layout, any single lost column
    /// (data or P) is the XOR of the others.
    #[test]
    fn xor_reconstruction_returns_the_original(
        level in prop::sample::select(vec![RaidLevel::Raid4, RaidLevel::Raid5, RaidLevel::Raid6]),
        columns in 4usize..10,
        stripe in 0u64..64,
        seed in any::<u64>(),
    ) {
        let l = Layout::new(level, Geometry::new(columns, 1, 8, 64).unwrap()).unwrap();
        let s = l.stripe(stripe).unwrap();
        let mut rng = seed;
        let mut next = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (rng >> 56) as u8 };
        let mut disk = vec![[0u8; 8]; columns];
        for (_, c) in s.data_columns() {
            for b in disk[c].iter_mut() { *b = next(); }
        }
        let p = s.p_column().unwrap();
        for (_, c) in s.data_columns() {
            let unit = disk[c];
            for (x, y) in disk[p].iter_mut().zip(unit) { *x ^= y; }
        }
        let xor_members: Vec<usize> = s.data_columns().map(|(_, c)| c).chain([p]).collect();
        for &lost in &xor_members {
            let mut rebuilt = [0u8; 8];
            for &c in xor_members.iter().filter(|&&c| c != lost) {
                for (x, y) in rebuilt.iter_mut().zip(disk[c]) { *x ^= y; }
            }
            prop_assert_eq!(rebuilt, disk[lost]);
        }
    }
}

//! A plain model of an array, to check DAGs and the access pipeline against: the component
//! images a volume's bytes must produce, and a checker of parity, Q and mirrors read straight
//! from the columns.

use crate::layout::{ColumnSet, Layout, UnitRole};
use crate::parity::gf256::{gen_pow, mul};

/// The content every column must hold for a volume of bytes `volume` (its capacity long): data
/// units, mirror copies, P and Q; the unused tail of each component is zero.
pub fn column_images(layout: &Layout, volume: &[u8]) -> Vec<Vec<u8>> {
    let g = layout.geometry();
    let size = (g.blocks_per_column() * g.block_size()) as usize;
    let unit = layout.unit_bytes() as usize;
    let stripe_bytes = layout.stripe_data_bytes() as usize;
    let mut cols = vec![vec![0u8; size]; layout.columns()];
    for s in 0..layout.stripes() {
        let sl = layout.stripe(s).expect("stripe in range");
        let base = s as usize * unit;
        let data = |i: usize| {
            let start = s as usize * stripe_bytes + i * unit;
            &volume[start..start + unit]
        };
        for (column, role) in sl.units() {
            let dst = &mut cols[column][base..base + unit];
            match role {
                UnitRole::Data { index } | UnitRole::Mirror { index } => {
                    dst.copy_from_slice(data(index))
                }
                UnitRole::P => {
                    for i in 0..sl.data_units() {
                        for (d, x) in dst.iter_mut().zip(data(i)) {
                            *d ^= x;
                        }
                    }
                }
                UnitRole::Q => {
                    for i in 0..sl.data_units() {
                        let c = gen_pow(i);
                        for (d, x) in dst.iter_mut().zip(data(i)) {
                            *d ^= mul(c, *x);
                        }
                    }
                }
            }
        }
    }
    cols
}

/// The volume's bytes as the data units of `columns` hold them (primary copies).
pub fn volume_from_columns(layout: &Layout, columns: &[Vec<u8>]) -> Vec<u8> {
    let unit = layout.unit_bytes() as usize;
    let mut volume = Vec::with_capacity(layout.capacity() as usize);
    for s in 0..layout.stripes() {
        let sl = layout.stripe(s).expect("stripe in range");
        let base = s as usize * unit;
        for (_, column) in sl.data_columns() {
            volume.extend_from_slice(&columns[column][base..base + unit]);
        }
    }
    volume
}

/// Checks that the redundancy of every stripe agrees with its data, reading only the columns
/// not in `skip`: P is the XOR of the data, Q the sum of `g^i D_i`, a mirror equals its primary.
/// A check that needs a skipped data column is left out. Returns every mismatch found (stripe
/// and column), or `Ok` if there is none.
pub fn verify_columns(
    layout: &Layout,
    columns: &[Vec<u8>],
    skip: &ColumnSet,
) -> Result<(), Vec<String>> {
    let unit = layout.unit_bytes() as usize;
    let mut errors = Vec::new();
    for s in 0..layout.stripes() {
        let sl = layout.stripe(s).expect("stripe in range");
        let base = s as usize * unit;
        let at = |c: usize| &columns[c][base..base + unit];
        let data: Vec<(usize, usize)> = sl.data_columns().collect();
        let all_data = data.iter().all(|(_, c)| !skip.contains(*c));
        for (column, role) in sl.units() {
            if skip.contains(column) {
                continue;
            }
            let expect: Option<Vec<u8>> = match role {
                UnitRole::Data { .. } => None,
                UnitRole::Mirror { index } => {
                    let primary = sl.data_column(index).expect("data unit");
                    (!skip.contains(primary)).then(|| at(primary).to_vec())
                }
                UnitRole::P if all_data => {
                    let mut p = vec![0u8; unit];
                    for (_, c) in &data {
                        for (d, x) in p.iter_mut().zip(at(*c)) {
                            *d ^= x;
                        }
                    }
                    Some(p)
                }
                UnitRole::Q if all_data => {
                    let mut q = vec![0u8; unit];
                    for (i, c) in &data {
                        let g = gen_pow(*i);
                        for (d, x) in q.iter_mut().zip(at(*c)) {
                            *d ^= mul(g, *x);
                        }
                    }
                    Some(q)
                }
                _ => None,
            };
            if let Some(expect) = expect
                && expect != at(column)
            {
                errors.push(format!(
                    "stripe {s}: {role} on column {column} does not match the data"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Geometry, RaidLevel};

    #[test]
    fn images_verify_and_give_the_volume_back_and_a_flip_is_found() {
        for level in RaidLevel::ALL {
            let columns = if level == RaidLevel::Raid1 { 4 } else { 5 };
            let l = Layout::new(level, Geometry::new(columns, 2, 8, 21).unwrap()).unwrap();
            let volume: Vec<u8> = (0..l.capacity()).map(|i| (i * 31 % 251) as u8).collect();
            let mut cols = column_images(&l, &volume);
            assert_eq!(volume_from_columns(&l, &cols), volume, "{level}");
            assert_eq!(
                verify_columns(&l, &cols, &ColumnSet::new()),
                Ok(()),
                "{level}"
            );
            if level != RaidLevel::Raid0 {
                cols[2][17] ^= 1;
                assert!(
                    verify_columns(&l, &cols, &ColumnSet::new()).is_err(),
                    "{level}"
                );
                let skip: ColumnSet = [2].into_iter().collect();
                assert_eq!(verify_columns(&l, &cols, &skip), Ok(()), "{level}");
            }
        }
    }
}

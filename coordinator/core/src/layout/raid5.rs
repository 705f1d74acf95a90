//! RAID 5: rotating parity, left-symmetric (Linux md's default, `ALGORITHM_LEFT_SYMMETRIC`).
//!
//! With `n` columns, stripe `s` has parity P on column `p = (n - 1) - (s mod n)`: the last column
//! first, then moving left one column per stripe. Its data units follow P, wrapping around: data
//! unit `i` is on column `(p + 1 + i) mod n`. So consecutive volume units visit the columns in
//! order (D0 of stripe 1 is on the column after D2 of stripe 0), which spreads sequential reads
//! over all columns. With four columns:
//!
//! ```text
//! stripe | col 0 | col 1 | col 2 | col 3
//!      0 |  D0   |  D1   |  D2   |  P
//!      1 |  D1   |  D2   |  P    |  D0
//!      2 |  D2   |  P    |  D0   |  D1
//!      3 |  P    |  D0   |  D1   |  D2
//!      4 |  D0   |  D1   |  D2   |  P        (the pattern repeats every n stripes)
//! ```
//!
//! Inverse: in stripe `s`, column `c != p` holds data unit `(c - p - 1) mod n`.

use super::UnitRole;

/// Two data columns and parity.
pub(crate) const MIN_COLUMNS: usize = 3;

/// Column of parity P in stripe `stripe`.
pub(crate) fn p_column(columns: usize, stripe: u64) -> usize {
    columns - 1 - (stripe % columns as u64) as usize
}

/// Column of data unit `index` in the stripe whose parity is on column `p`.
pub(crate) fn data_column(columns: usize, p: usize, index: usize) -> usize {
    (p + 1 + index) % columns
}

/// What `column` holds in the stripe whose parity is on column `p`.
pub(crate) fn role_of(columns: usize, p: usize, column: usize) -> UnitRole {
    if column == p {
        UnitRole::P
    } else {
        UnitRole::Data {
            index: (column + columns - p - 1) % columns,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::RaidLevel;
    use crate::layout::tests::{assert_stripe_table, layout};

    #[test]
    fn raid5_first_stripes_four_columns() {
        let l = layout(RaidLevel::Raid5, 4);
        assert_stripe_table(
            &l,
            &[
                "D0 D1 D2 P",
                "D1 D2 P D0",
                "D2 P D0 D1",
                "P D0 D1 D2",
                "D0 D1 D2 P",
            ],
        );
    }

    #[test]
    fn raid5_first_stripes_three_columns() {
        let l = layout(RaidLevel::Raid5, 3);
        assert_stripe_table(&l, &["D0 D1 P", "D1 P D0", "P D0 D1", "D0 D1 P"]);
    }
}

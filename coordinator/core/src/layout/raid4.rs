//! RAID 4: striping with a dedicated parity column, the last one.
//!
//! Data unit `i` of every stripe is on column `i`; parity P (the XOR of the stripe's data units)
//! is on column `n - 1`. With four columns:
//!
//! ```text
//! stripe | col 0 | col 1 | col 2 | col 3
//!      0 |  D0   |  D1   |  D2   |  P        volume units 0, 1, 2
//!      1 |  D0   |  D1   |  D2   |  P        volume units 3, 4, 5
//! ```
//!
//! (`Dk` is the stripe's logical data unit `k`.) Every write touches the parity column, which is
//! why RAID 5 rotates it.

use super::UnitRole;

/// Two data columns and a parity column.
pub(crate) const MIN_COLUMNS: usize = 3;

/// Column of data unit `index`.
pub(crate) fn data_column(index: usize) -> usize {
    index
}

/// Column of parity P.
pub(crate) fn p_column(columns: usize) -> usize {
    columns - 1
}

/// What `column` holds (the same in every stripe).
pub(crate) fn role_of(columns: usize, column: usize) -> UnitRole {
    if column == p_column(columns) {
        UnitRole::P
    } else {
        UnitRole::Data { index: column }
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::RaidLevel;
    use crate::layout::tests::{assert_stripe_table, layout};

    #[test]
    fn raid4_first_stripes_four_columns() {
        let l = layout(RaidLevel::Raid4, 4);
        assert_stripe_table(&l, &["D0 D1 D2 P", "D0 D1 D2 P", "D0 D1 D2 P"]);
    }
}

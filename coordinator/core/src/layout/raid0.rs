//! RAID 0: striping without redundancy.
//!
//! Data unit `i` of every stripe is on column `i`; there is no parity. With three columns:
//!
//! ```text
//! stripe | col 0 | col 1 | col 2
//!      0 |  D0   |  D1   |  D2        volume units 0, 1, 2
//!      1 |  D3   |  D4   |  D5
//! ```
//!
//! Volume byte `v` with unit size `U` and `n` columns: stripe `v / (nU)`, data index
//! `(v mod nU) / U`, component byte `stripe * U + v mod U`. Any failure loses data.

use super::UnitRole;

/// A single column is a pass-through volume; allowed, and handy in tests.
pub(crate) const MIN_COLUMNS: usize = 1;

/// Column of data unit `index`.
pub(crate) fn data_column(index: usize) -> usize {
    index
}

/// What `column` holds (the same in every stripe).
pub(crate) fn role_of(column: usize) -> UnitRole {
    UnitRole::Data { index: column }
}

#[cfg(test)]
mod tests {
    use crate::layout::RaidLevel;
    use crate::layout::tests::{assert_stripe_table, layout};

    #[test]
    fn raid0_first_stripes_three_columns() {
        let l = layout(RaidLevel::Raid0, 3);
        assert_stripe_table(&l, &["D0 D1 D2", "D0 D1 D2", "D0 D1 D2"]);
    }
}

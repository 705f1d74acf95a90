//! RAID 1: mirrored pairs, striped across the pairs.
//!
//! Columns `2k` and `2k + 1` form pair `k` and hold the same bytes: data unit `k` of every stripe
//! has its primary copy on column `2k` and its secondary copy on column `2k + 1`. With two columns
//! this is a plain mirror; with more, the volume is striped over the pairs like RAID 0 (often
//! called RAID 10). With four columns:
//!
//! ```text
//! stripe | col 0 | col 1 | col 2 | col 3
//!      0 |  D0   |  D0'  |  D1   |  D1'      volume units 0, 1
//!      1 |  D2   |  D2'  |  D3   |  D3'
//! ```
//!
//! Each pair survives the loss of one of its two columns; the array survives one failure per
//! pair. No parity units: selection reads either copy and writes both.

use super::UnitRole;

/// One pair.
pub(crate) const MIN_COLUMNS: usize = 2;

/// Column of the primary copy of data unit `index`.
pub(crate) fn primary_column(index: usize) -> usize {
    2 * index
}

/// Column of the secondary copy of data unit `index`.
pub(crate) fn secondary_column(index: usize) -> usize {
    2 * index + 1
}

/// What `column` holds (the same in every stripe).
pub(crate) fn role_of(column: usize) -> UnitRole {
    if column.is_multiple_of(2) {
        UnitRole::Data { index: column / 2 }
    } else {
        UnitRole::Mirror { index: column / 2 }
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::RaidLevel;
    use crate::layout::tests::{assert_stripe_table, layout};

    #[test]
    fn raid1_first_stripes_two_columns() {
        let l = layout(RaidLevel::Raid1, 2);
        assert_stripe_table(&l, &["D0 M0", "D0 M0"]);
    }

    #[test]
    fn raid1_first_stripes_six_columns() {
        let l = layout(RaidLevel::Raid1, 6);
        assert_stripe_table(&l, &["D0 M0 D1 M1 D2 M2", "D0 M0 D1 M1 D2 M2"]);
        let s = l.stripe(1).unwrap();
        assert_eq!(s.data_column(2), Some(4));
        assert_eq!(s.mirror_column(2), Some(5));
        assert_eq!(s.mirror_column(3), None);
        assert_eq!(s.p_column(), None);
    }
}

//! RAID 6: rotating P and Q, after Linux md's left-symmetric RAID 6.
//!
//! # Placement
//! With `n` columns, stripe `s` has
//! - P on column `p = (n - 1) - (s mod n)` (as RAID 5: the last column first, moving left),
//! - Q on the next column, `q = (p + 1) mod n`,
//! - data unit `i` (`0 <= i < n - 2`) on column `(q + 1 + i) mod n`: the data continues after Q,
//!   wrapping around.
//!
//! With five columns:
//!
//! ```text
//! stripe | col 0 | col 1 | col 2 | col 3 | col 4
//!      0 |  Q    |  D0   |  D1   |  D2   |  P
//!      1 |  D0   |  D1   |  D2   |  P    |  Q
//!      2 |  D1   |  D2   |  P    |  Q    |  D0
//!      3 |  D2   |  P    |  Q    |  D0   |  D1
//!      4 |  P    |  Q    |  D0   |  D1   |  D2
//!      5 |  Q    |  D0   |  D1   |  D2   |  P      (the pattern repeats every n stripes)
//! ```
//!
//! Over any `n` consecutive stripes P and Q each visit every column once.
//!
//! # Parity conventions
//! - P is the XOR of the stripe's data units, byte by byte: `P = D_0 ^ D_1 ^ ... ^ D_{k-1}`.
//! - Q is `sum over i of g^i * D_i` in GF(2^8) with the polynomial `x^8 + x^4 + x^3 + x^2 + 1`
//!   (0x11d) and generator `g = 2`, byte by byte; addition is XOR.
//! - `i` is the **logical** data index within the stripe (the order of the unit in the volume),
//!   never the physical column: a unit keeps its coefficient whichever column the rotation puts
//!   it on. [`StripeLayout::q_exponent`](super::StripeLayout::q_exponent) and
//!   [`UnitAccess::q_exponent`](super::UnitAccess::q_exponent) give it. This matches md, which
//!   orders its syndrome sources starting from the column after Q.
//!
//! Worked example (pinned by the test `raid6_golden_vector`): three data units of two bytes,
//! `D0 = [0x01, 0xff]`, `D1 = [0x02, 0x10]`, `D2 = [0x80, 0x53]`. Multiplying by `g = 2` is a
//! left shift, XORed with 0x11d when bit 8 comes out:
//! - `P = [0x01 ^ 0x02 ^ 0x80, 0xff ^ 0x10 ^ 0x53] = [0x83, 0xbc]`;
//! - first byte: `g^0 * 0x01 = 0x01`, `g^1 * 0x02 = 0x04`, `g^2 * 0x80`: `2 * 0x80 = 0x100 ^
//!   0x11d = 0x1d`, `2 * 0x1d = 0x3a`; `Q[0] = 0x01 ^ 0x04 ^ 0x3a = 0x3f`;
//! - second byte: `0xff`, `2 * 0x10 = 0x20`, `2 * 0x53 = 0xa6`, `2 * 0xa6 = 0x14c ^ 0x11d =
//!   0x51`; `Q[1] = 0xff ^ 0x20 ^ 0x51 = 0x8e`.
//!
//! In stripe 2 of a five-column array those units sit on columns 4, 0 and 1: Q is still
//! `[0x3f, 0x8e]`, because the coefficients follow the logical index.
//!
//! At most 255 data units (257 columns): beyond that `g^i` repeats and Q could not tell two
//! units apart.

use super::UnitRole;

/// Two data columns, P and Q.
pub(crate) const MIN_COLUMNS: usize = 4;

/// 255 data units plus P and Q.
pub(crate) const MAX_COLUMNS: usize = 257;

/// Column of parity P in stripe `stripe`.
pub(crate) fn p_column(columns: usize, stripe: u64) -> usize {
    columns - 1 - (stripe % columns as u64) as usize
}

/// Column of syndrome Q in the stripe whose P is on column `p`.
pub(crate) fn q_column(columns: usize, p: usize) -> usize {
    (p + 1) % columns
}

/// Column of data unit `index` in the stripe whose P is on column `p`.
pub(crate) fn data_column(columns: usize, p: usize, index: usize) -> usize {
    (q_column(columns, p) + 1 + index) % columns
}

/// What `column` holds in the stripe whose P is on column `p`.
pub(crate) fn role_of(columns: usize, p: usize, column: usize) -> UnitRole {
    let q = q_column(columns, p);
    if column == p {
        UnitRole::P
    } else if column == q {
        UnitRole::Q
    } else {
        UnitRole::Data {
            index: (column + columns - q - 1) % columns,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::tests::{assert_stripe_table, layout};
    use crate::layout::{RaidLevel, UnitRole};

    #[test]
    fn raid6_first_stripes_five_columns() {
        let l = layout(RaidLevel::Raid6, 5);
        assert_stripe_table(
            &l,
            &[
                "Q D0 D1 D2 P",
                "D0 D1 D2 P Q",
                "D1 D2 P Q D0",
                "D2 P Q D0 D1",
                "P Q D0 D1 D2",
                "Q D0 D1 D2 P",
            ],
        );
    }

    #[test]
    fn raid6_first_stripes_four_columns() {
        let l = layout(RaidLevel::Raid6, 4);
        assert_stripe_table(
            &l,
            &[
                "Q D0 D1 P",
                "D0 D1 P Q",
                "D1 P Q D0",
                "P Q D0 D1",
                "Q D0 D1 P",
            ],
        );
    }

    /// GF(2^8) product, polynomial 0x11d, by shift and add: written here only to check the
    /// hand-worked vector of the module docs; the real code is in `crate::parity`.
    fn gf_mul(mut a: u8, mut b: u8) -> u8 {
        let mut product = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                product ^= a;
            }
            let carry = a & 0x80 != 0;
            a <<= 1;
            if carry {
                a ^= 0x1d;
            }
            b >>= 1;
        }
        product
    }

    fn gf_pow2(exponent: u8) -> u8 {
        (0..exponent).fold(1u8, |acc, _| gf_mul(acc, 2))
    }

    #[test]
    fn raid6_golden_vector() {
        // The worked example of the module docs, laid out in stripe 2 of five columns, where
        // the logical data units are not in column order (D0 on column 4).
        let l = layout(RaidLevel::Raid6, 5);
        let s = l.stripe(2).unwrap();
        let data: [[u8; 2]; 3] = [[0x01, 0xff], [0x02, 0x10], [0x80, 0x53]];
        let mut columns = [[0u8; 2]; 5];
        for (i, bytes) in data.iter().enumerate() {
            columns[s.data_column(i).unwrap()] = *bytes;
        }
        assert_eq!(
            (0..3)
                .map(|i| s.data_column(i).unwrap())
                .collect::<Vec<_>>(),
            vec![4, 0, 1]
        );
        // Encode from the columns, taking each unit's coefficient from the layout.
        let (mut p, mut q) = ([0u8; 2], [0u8; 2]);
        for (column, bytes) in columns.iter().enumerate() {
            if let Some(UnitRole::Data { index }) = s.role_of(column) {
                let coefficient = gf_pow2(s.q_exponent(index).unwrap());
                for b in 0..2 {
                    p[b] ^= bytes[b];
                    q[b] ^= gf_mul(coefficient, bytes[b]);
                }
            }
        }
        assert_eq!(p, [0x83, 0xbc]);
        assert_eq!(q, [0x3f, 0x8e]);
        assert_eq!((s.p_column(), s.q_column()), (Some(2), Some(3)));
        // Had the coefficients followed the column order (D1, D2, D0), Q would differ.
        let by_column = gf_mul(1, 0x02) ^ gf_mul(2, 0x80) ^ gf_mul(4, 0x01);
        assert_eq!(by_column, 0x1b);
    }

    /// The layout's logical order, fed to `crate::parity`'s encoder (which takes data units in
    /// logical order), reproduces the hand-worked vector: the two halves of the RAID 6
    /// convention agree.
    #[test]
    fn raid6_golden_vector_matches_the_parity_encoder() {
        let l = layout(RaidLevel::Raid6, 5);
        let s = l.stripe(2).unwrap();
        let mut columns = [[0u8; 2]; 5];
        for (i, bytes) in [[0x01, 0xff], [0x02, 0x10], [0x80, 0x53]]
            .iter()
            .enumerate()
        {
            columns[s.data_column(i).unwrap()] = *bytes;
        }
        // Gather the data units back from the columns by their Q exponent.
        let mut logical: Vec<(u8, &[u8])> = s
            .data_columns()
            .map(|(i, c)| (s.q_exponent(i).unwrap(), &columns[c][..]))
            .collect();
        logical.sort_by_key(|(e, _)| *e);
        let data: Vec<&[u8]> = logical.into_iter().map(|(_, d)| d).collect();
        let (mut p, mut q) = ([0u8; 2], [0u8; 2]);
        crate::parity::pq_encode(&data, &mut p, &mut q).unwrap();
        assert_eq!(p, [0x83, 0xbc]);
        assert_eq!(q, [0x3f, 0x8e]);
    }
}

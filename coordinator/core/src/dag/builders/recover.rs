//! Recovery of lost data units as GF(2^8) linear combinations of the surviving units.
//!
//! A stripe's parity units are equations over its `k` data units: `P = sum D_i` and
//! `Q = sum g^i D_i`. With the unknown (lost) units `U` and as many parity units as unknowns,
//! move the known units to the parity side, `S_e = E_e + sum_{i not in U} c(e, i) D_i`, and solve
//! the small system `C D_U = S` (`C` is 1x1 or 2x2 and invertible: `g^x != g^y` for distinct
//! indices below 255). Each unknown is then `D_u = sum_e inv(u, e) * S_e`, a linear combination
//! of the parity units and the known data units, which a single `Xor` (all coefficients one) or
//! `Q` node computes. `docs/PARITY.md` derives the same formulas case by case.

use crate::layout::ParityKind;
use crate::parity::gf256::{inv, mul};

use super::q_coef;

/// How to compute one unknown data unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combination {
    /// The unknown's logical data index.
    pub unknown: usize,
    /// Coefficient of each parity unit used.
    pub parity: Vec<(ParityKind, u8)>,
    /// Coefficient of each known data unit, by logical index (zero coefficients left out).
    pub data: Vec<(usize, u8)>,
}

impl Combination {
    /// Whether every coefficient is one (a plain XOR).
    pub fn is_xor(&self) -> bool {
        self.parity.iter().all(|(_, c)| *c == 1) && self.data.iter().all(|(_, c)| *c == 1)
    }
}

fn coef(e: ParityKind, i: usize) -> u8 {
    match e {
        ParityKind::P => 1,
        ParityKind::Q => q_coef(i),
    }
}

/// Solves for `unknowns` (distinct logical indices below `k`) with the parity units `equations`
/// (as many as unknowns, each at most once). `None` when the counts differ, there are more than
/// two, or the system is singular.
pub fn solve(k: usize, unknowns: &[usize], equations: &[ParityKind]) -> Option<Vec<Combination>> {
    if unknowns.len() != equations.len() || unknowns.is_empty() || unknowns.len() > 2 {
        return None;
    }
    if unknowns.iter().any(|&u| u >= k) {
        return None;
    }
    // inverse[j][e]: coefficient of S_e in unknown j.
    let inverse: Vec<Vec<u8>> = match (unknowns, equations) {
        ([u], [e]) => vec![vec![inv(coef(*e, *u))?]],
        ([x, y], [e0, e1]) => {
            if x == y || e0 == e1 {
                return None;
            }
            let (a, b) = (coef(*e0, *x), coef(*e0, *y));
            let (c, d) = (coef(*e1, *x), coef(*e1, *y));
            let det = inv(mul(a, d) ^ mul(b, c))?;
            vec![
                vec![mul(det, d), mul(det, b)],
                vec![mul(det, c), mul(det, a)],
            ]
        }
        _ => return None,
    };
    Some(
        unknowns
            .iter()
            .zip(&inverse)
            .map(|(&unknown, row)| Combination {
                unknown,
                parity: equations.iter().copied().zip(row.iter().copied()).collect(),
                data: (0..k)
                    .filter(|i| !unknowns.contains(i))
                    .map(|i| {
                        let c = equations
                            .iter()
                            .zip(row)
                            .fold(0u8, |acc, (&e, &r)| acc ^ mul(r, coef(e, i)));
                        (i, c)
                    })
                    .filter(|(_, c)| *c != 0)
                    .collect(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Evaluates a combination over concrete stripe bytes (one byte per unit).
    fn eval(c: &Combination, data: &[u8], p: u8, q: u8) -> u8 {
        let mut acc = 0;
        for (e, k) in &c.parity {
            acc ^= mul(*k, if *e == ParityKind::P { p } else { q });
        }
        for (i, k) in &c.data {
            acc ^= mul(*k, data[*i]);
        }
        acc
    }

    fn pq(data: &[u8]) -> (u8, u8) {
        data.iter()
            .enumerate()
            .fold((0, 0), |(p, q), (i, d)| (p ^ d, q ^ mul(q_coef(i), *d)))
    }

    #[test]
    fn one_unknown_from_p_is_a_plain_xor() {
        let c = &solve(4, &[2], &[ParityKind::P]).unwrap()[0];
        assert!(c.is_xor());
        assert_eq!(
            c.data.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1, 3]
        );
        let from_q = &solve(4, &[2], &[ParityKind::Q]).unwrap()[0];
        assert!(!from_q.is_xor());
    }

    #[test]
    fn bad_systems_are_refused() {
        assert!(solve(4, &[1], &[]).is_none());
        assert!(solve(4, &[1, 1], &[ParityKind::P, ParityKind::Q]).is_none());
        assert!(solve(4, &[0, 1], &[ParityKind::P, ParityKind::P]).is_none());
        assert!(solve(4, &[4], &[ParityKind::P]).is_none());
        assert!(
            solve(
                4,
                &[0, 1, 2],
                &[ParityKind::P, ParityKind::Q, ParityKind::P]
            )
            .is_none()
        );
    }

    proptest! {
        /// Every loss of one or two data units is recovered exactly, from every parity choice.
        #[test]
        fn every_recovery_returns_the_original(
            data in proptest::collection::vec(any::<u8>(), 2..20),
            x in 0usize..20, y in 0usize..20, which in 0u8..3,
        ) {
            let k = data.len();
            let (x, y) = (x % k, y % k);
            let (p, q) = pq(&data);
            let (unknowns, eqs): (Vec<usize>, Vec<ParityKind>) = if x == y || which < 2 {
                (vec![x], vec![if which == 0 { ParityKind::P } else { ParityKind::Q }])
            } else {
                (vec![x, y], vec![ParityKind::P, ParityKind::Q])
            };
            for c in solve(k, &unknowns, &eqs).unwrap() {
                prop_assert!(c.data.iter().all(|(i, _)| !unknowns.contains(i)));
                prop_assert_eq!(eval(&c, &data, p, q), data[c.unknown]);
            }
        }
    }
}

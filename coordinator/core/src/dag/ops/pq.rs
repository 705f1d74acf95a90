//! GF(2^8) linear combinations: the RAID 6 Q syndrome and its updates and recoveries.
//!
//! Field: polynomial 0x11d, generator 2 (the Linux md convention pinned in the RAID 6 issue). The
//! kernel is [`crate::parity::mul_slice_xor`]; this module only resolves the node's buffers.

use bytes::{Bytes, BytesMut};

use super::{BufRef, resolve_equal};
use crate::dag::{NodeError, Slot};

/// A multiplication by an arbitrary constant costs about as much as this many multiplications by
/// `g` (table lookups against shifts and XORs; see `docs/BENCHMARKS.md`, parity section).
const GENERAL_MUL_IN_STEPS: usize = 6;

/// `sum(coef * input)` over the terms.
///
/// When the coefficients are small powers of `g` (the Q syndrome `sum g^i D_i`, its updates, and
/// the partial syndromes of a recovery), Horner's rule over the exponents needs only
/// multiplications by `g`; otherwise each term is one general multiply-accumulate.
pub(crate) fn run(buffers: &[Option<Bytes>], terms: &[(u8, BufRef)]) -> Result<Bytes, NodeError> {
    let parts = resolve_equal(buffers, terms.iter().map(|(_, r)| r))?;
    let Some(len) = parts.first().map(Bytes::len) else {
        return Err(NodeError::Buffer {
            slot: Slot(0),
            detail: "Q without terms".to_owned(),
        });
    };
    let mut out = BytesMut::zeroed(len);
    // (exponent, input) of every non-zero term.
    let powers: Vec<(u8, &Bytes)> = terms
        .iter()
        .zip(&parts)
        .filter_map(|((c, _), p)| crate::parity::gf256::log(*c).map(|e| (e, p)))
        .collect();
    let max = powers.iter().map(|(e, _)| *e as usize).max().unwrap_or(0);
    if max <= GENERAL_MUL_IN_STEPS * powers.len() {
        for e in (0..=max).rev() {
            if e < max {
                crate::parity::gf256::horner_skip(&mut out);
            }
            for (_, p) in powers.iter().filter(|(pe, _)| *pe as usize == e) {
                crate::parity::xor_into(&mut out, p).map_err(|err| NodeError::Buffer {
                    slot: terms[0].1.slot,
                    detail: err.to_string(),
                })?;
            }
        }
        return Ok(out.freeze());
    }
    for ((coef, r), p) in terms.iter().zip(&parts) {
        crate::parity::mul_slice_xor(*coef, p, &mut out).map_err(|e| NodeError::Buffer {
            slot: r.slot,
            detail: e.to_string(),
        })?;
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::gf256::mul;

    #[test]
    fn horner_and_general_paths_agree_with_bytewise_math() {
        let inputs: Vec<Bytes> = (0..5u8)
            .map(|i| {
                (0..64u8)
                    .map(|b| b.wrapping_mul(37).wrapping_add(i * 11))
                    .collect()
            })
            .collect();
        let bufs: Vec<Option<Bytes>> = inputs.iter().cloned().map(Some).collect();
        // Small powers of g (Horner), large or arbitrary ones (general), a zero and a repeat.
        for coefs in [
            [1u8, 2, 4, 8, 16],
            [1, 0, 2, 2, 3],
            [0x8e, 0x53, 7, 1, 0xff],
        ] {
            let terms: Vec<(u8, BufRef)> = coefs
                .iter()
                .zip(0u32..)
                .map(|(c, i)| (*c, Slot(i).all()))
                .collect();
            let got = run(&bufs, &terms).unwrap();
            let expect: Vec<u8> = (0..64)
                .map(|b| {
                    coefs
                        .iter()
                        .zip(&inputs)
                        .fold(0, |acc, (c, x)| acc ^ mul(*c, x[b]))
                })
                .collect();
            assert_eq!(got.as_ref(), expect.as_slice(), "{coefs:?}");
        }
    }

    #[test]
    fn q_of_two_units_and_recovery_of_one() {
        let d0 = Bytes::from_static(&[1, 2, 3, 0x80]);
        let d1 = Bytes::from_static(&[7, 0, 9, 0x80]);
        let bufs = vec![Some(d0.clone()), Some(d1.clone())];
        // Q = g^0 d0 + g^1 d1.
        let q = run(&bufs, &[(1, Slot(0).all()), (2, Slot(1).all())]).unwrap();
        let expect: Vec<u8> = d0.iter().zip(&d1).map(|(a, b)| a ^ mul(2, *b)).collect();
        assert_eq!(q.as_ref(), expect.as_slice());
        // d1 = g^-1 (Q + d0); g^-1 = 0x8e for 0x11d.
        assert_eq!(mul(2, 0x8e), 1);
        let bufs = vec![Some(q), Some(d0)];
        let back = run(&bufs, &[(0x8e, Slot(0).all()), (0x8e, Slot(1).all())]).unwrap();
        assert_eq!(back, d1);
    }
}

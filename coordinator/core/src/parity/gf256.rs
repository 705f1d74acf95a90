//! GF(2^8) arithmetic for the RAID 6 Q syndrome: polynomial 0x11d, generator g = 2.
//!
//! This is the field of Linux md and of H. Peter Anvin's "The mathematics of RAID-6", so a Q
//! written by dagraid is the Q those tools would compute. Scalar operations go through
//! compile-time log/exp tables; the slice primitives ([`mul_slice`], [`mul_slice_xor`]) use a
//! bit-mask kernel instead, because a per-byte table lookup cannot be vectorised in safe Rust
//! (no gathers, no byte shuffles on the x86-64 baseline) while the mask form can
//! (see `docs/PARITY.md`, "Multiplying a slice by a constant").

use super::{Operand, ParityError, check_len};

/// The reduction polynomial x^8 + x^4 + x^3 + x^2 + 1.
pub const POLYNOMIAL: u16 = 0x11d;

/// The generator g whose powers weight the data units in Q.
pub const GENERATOR: u8 = 2;

/// The multiplicative order of [`GENERATOR`]: g^i repeats with period 255, so a stripe may hold
/// at most 255 data units before two of them would share a Q coefficient.
pub const ORDER: usize = 255;

/// The low byte of [`POLYNOMIAL`]: what a byte whose top bit falls off on doubling is XORed with.
const REDUCE: u8 = (POLYNOMIAL & 0xff) as u8;

/// `EXP[i] = g^i` for `i` in `0..510`, doubled so that `EXP[log a + log b]` needs no reduction.
const EXP: [u8; 2 * ORDER] = {
    let mut t = [0u8; 2 * ORDER];
    let mut v: u8 = 1;
    let mut i = 0;
    while i < 2 * ORDER {
        t[i] = v;
        v = mul2(v);
        i += 1;
    }
    t
};

/// `LOG[a] = i` with `g^i = a` for nonzero `a`; `LOG[0]` is unused.
const LOG: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < ORDER {
        t[EXP[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Multiplies one byte by g = 2: shift left, and reduce by 0x1d if the top bit fell off.
#[inline(always)]
const fn mul2(a: u8) -> u8 {
    // Arithmetic shift of the top bit gives an all-ones mask without a branch, so loops over
    // slices using this vectorise (pcmpgtb/pand on x86-64).
    let mask = ((a as i8) >> 7) as u8;
    (a << 1) ^ (mask & REDUCE)
}

/// The product `a * b` in GF(2^8).
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }
}

/// The multiplicative inverse of `a`, or `None` for 0, which has none.
pub fn inv(a: u8) -> Option<u8> {
    (a != 0).then(|| EXP[(ORDER - LOG[a as usize] as usize) % ORDER])
}

/// `g^i`, the Q coefficient of logical data index `i` (reduced modulo [`ORDER`]).
pub fn gen_pow(i: usize) -> u8 {
    EXP[i % ORDER]
}

/// The discrete logarithm base g of `a`: the `i < 255` with `g^i = a`, or `None` for 0.
pub fn log(a: u8) -> Option<u8> {
    (a != 0).then(|| LOG[a as usize])
}

/// The constant's multiples by each bit weight: `c * 2^k` for `k` in `0..8`.
///
/// `c * x` is the XOR of those entries for the bits `k` set in `x`, which is what the slice
/// kernels compute with masks instead of lookups.
#[derive(Clone, Copy)]
pub(crate) struct BitMultiples([u8; 8]);

impl BitMultiples {
    pub(crate) fn new(c: u8) -> Self {
        let mut t = [0u8; 8];
        let mut v = c;
        for slot in &mut t {
            *slot = v;
            v = mul2(v);
        }
        BitMultiples(t)
    }

    /// `c * x`, branch-free so that it vectorises inside a slice loop.
    #[inline(always)]
    pub(crate) fn mul(&self, x: u8) -> u8 {
        let [c0, c1, c2, c3, c4, c5, c6, c7] = self.0;
        // Shifting bit k of x into the sign position and shifting it back arithmetically
        // yields 0x00 or 0xff: the mask selecting c * 2^k.
        let m = |k: u32| (((x << (7 - k)) as i8) >> 7) as u8;
        (m(0) & c0)
            ^ (m(1) & c1)
            ^ (m(2) & c2)
            ^ (m(3) & c3)
            ^ (m(4) & c4)
            ^ (m(5) & c5)
            ^ (m(6) & c6)
            ^ (m(7) & c7)
    }
}

/// `dst = c * src`, byte by byte.
///
/// # Errors
/// [`ParityError::LengthMismatch`] if the slices differ in length; `dst` is then unchanged.
pub fn mul_slice(c: u8, src: &[u8], dst: &mut [u8]) -> Result<(), ParityError> {
    check_len(Operand::Dst, src.len(), dst.len())?;
    match c {
        0 => dst.fill(0),
        1 => dst.copy_from_slice(src),
        _ => {
            let t = BitMultiples::new(c);
            for (d, s) in dst.iter_mut().zip(src) {
                *d = t.mul(*s);
            }
        }
    }
    Ok(())
}

/// `dst ^= c * src`, byte by byte: the building block of Q updates and of decoding.
///
/// # Errors
/// [`ParityError::LengthMismatch`] if the slices differ in length; `dst` is then unchanged.
pub fn mul_slice_xor(c: u8, src: &[u8], dst: &mut [u8]) -> Result<(), ParityError> {
    check_len(Operand::Dst, src.len(), dst.len())?;
    match c {
        0 => {}
        1 => super::xor::xor_kernel(dst, src),
        _ => {
            let t = BitMultiples::new(c);
            for (d, s) in dst.iter_mut().zip(src) {
                *d ^= t.mul(*s);
            }
        }
    }
    Ok(())
}

/// `q = q * g ^ d` for each byte: one step of Horner's rule for Q.
#[inline]
pub(crate) fn horner_step(q: &mut [u8], d: &[u8]) {
    for (q, d) in q.iter_mut().zip(d) {
        *q = mul2(*q) ^ *d;
    }
}

/// `q = q * g`: a Horner step for a data unit that is absent (counts as zero).
#[inline]
pub(crate) fn horner_skip(q: &mut [u8]) {
    for q in q.iter_mut() {
        *q = mul2(*q);
    }
}

/// `p ^= d; q = q * g ^ d` in one pass: a Horner step that also accumulates P.
#[inline]
pub(crate) fn pq_step(p: &mut [u8], q: &mut [u8], d: &[u8]) {
    for ((p, q), d) in p.iter_mut().zip(q.iter_mut()).zip(d) {
        *q = mul2(*q) ^ *d;
        *p ^= *d;
    }
}

/// Two Horner steps at once, for units `hi` then `lo`: `p ^= hi ^ lo; q = (q g ^ hi) g ^ lo`.
///
/// Halves the loads and stores of `p` and `q` per data unit compared to two [`pq_step`]s.
#[inline]
pub(crate) fn pq_step2(p: &mut [u8], q: &mut [u8], hi: &[u8], lo: &[u8]) {
    for (((p, q), h), l) in p.iter_mut().zip(q.iter_mut()).zip(hi).zip(lo) {
        *q = mul2(mul2(*q) ^ *h) ^ *l;
        *p ^= *h ^ *l;
    }
}

/// Two Horner steps at once for Q alone; see [`pq_step2`].
#[inline]
pub(crate) fn horner_step2(q: &mut [u8], hi: &[u8], lo: &[u8]) {
    for ((q, h), l) in q.iter_mut().zip(hi).zip(lo) {
        *q = mul2(mul2(*q) ^ *h) ^ *l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Carry-less multiplication reduced bit by bit, independent of the tables.
    fn mul_bitwise(a: u8, b: u8) -> u8 {
        let mut acc: u16 = 0;
        for k in 0..8 {
            if b >> k & 1 == 1 {
                acc ^= (a as u16) << k;
            }
        }
        for k in (8..16).rev() {
            if acc >> k & 1 == 1 {
                acc ^= POLYNOMIAL << (k - 8);
            }
        }
        acc as u8
    }

    #[test]
    fn table_mul_matches_bitwise_for_all_pairs() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul_bitwise(a, b), "{a:#x} * {b:#x}");
                assert_eq!(
                    BitMultiples::new(a).mul(b),
                    mul_bitwise(a, b),
                    "{a:#x} * {b:#x}"
                );
            }
        }
    }

    #[test]
    fn known_field_facts() {
        assert_eq!(gen_pow(7), 0x80);
        assert_eq!(gen_pow(8), 0x1d);
        assert_eq!(gen_pow(9), 0x3a);
        assert_eq!(gen_pow(255), 1);
        assert_eq!(gen_pow(254), 0x8e);
        assert_eq!(inv(2), Some(0x8e));
        assert_eq!(inv(1), Some(1));
        assert_eq!(inv(0), None);
        assert_eq!(log(0x1d), Some(8));
        assert_eq!(log(0), None);
        assert_eq!(mul(0x80, 2), 0x1d);
        // g generates the whole multiplicative group: its order is exactly 255.
        let first_one = (1..=255).find(|&i| gen_pow(i) == 1);
        assert_eq!(first_one, Some(255));
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a).unwrap()), 1, "{a:#x}");
        }
    }

    #[test]
    fn mul_slice_matches_scalar_for_every_constant() {
        let src: Vec<u8> = (0..=255u8).chain(0..=44).collect();
        for c in 0..=255u8 {
            let mut dst = vec![0xa5; src.len()];
            mul_slice(c, &src, &mut dst).unwrap();
            let want: Vec<u8> = src.iter().map(|&s| mul_bitwise(c, s)).collect();
            assert_eq!(dst, want, "c = {c:#x}");
            let mut acc: Vec<u8> = (0..src.len()).map(|i| i as u8 ^ 0x5a).collect();
            let before = acc.clone();
            mul_slice_xor(c, &src, &mut acc).unwrap();
            let want: Vec<u8> = before.iter().zip(&want).map(|(b, w)| b ^ w).collect();
            assert_eq!(acc, want, "c = {c:#x}");
        }
    }

    #[test]
    fn mul_slice_rejects_length_mismatch_and_leaves_dst_alone() {
        let mut dst = [7u8; 4];
        let err = mul_slice(3, &[1, 2, 3], &mut dst).unwrap_err();
        assert_eq!(
            err,
            ParityError::LengthMismatch {
                operand: Operand::Dst,
                expected: 3,
                actual: 4
            }
        );
        assert_eq!(mul_slice_xor(3, &[1, 2, 3], &mut dst), Err(err));
        assert_eq!(dst, [7; 4]);
    }
}

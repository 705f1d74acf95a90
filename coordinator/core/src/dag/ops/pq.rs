//! GF(2^8) linear combinations: the RAID 6 Q syndrome and its updates and recoveries.
//!
//! Field: polynomial 0x11d, generator 2 (the Linux md convention pinned in the RAID 6 issue).
//! Note: this is a private table kernel (one 256-byte product row per coefficient) until the
//! `parity` module publishes a fast multiply-slice primitive; swap [`mul_acc`] for it then.

use bytes::{Bytes, BytesMut};

use super::{BufRef, resolve_equal};
use crate::dag::{NodeError, Slot};

const fn tables() -> ([u8; 256], [u8; 512]) {
    let mut log = [0u8; 256];
    let mut exp = [0u8; 512];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        exp[i + 255] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11d;
        }
        i += 1;
    }
    (log, exp)
}

const TABLES: ([u8; 256], [u8; 512]) = tables();

/// Product of `a` and `b` in GF(2^8).
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    let (log, exp) = &TABLES;
    exp[log[a as usize] as usize + log[b as usize] as usize]
}

/// `dst ^= coef * src`.
pub(crate) fn mul_acc(coef: u8, dst: &mut [u8], src: &[u8]) {
    match coef {
        0 => {}
        1 => super::xor::xor_into(dst, src),
        _ => {
            let mut row = [0u8; 256];
            for (x, r) in row.iter_mut().enumerate() {
                *r = mul(coef, x as u8);
            }
            for (d, s) in dst.iter_mut().zip(src) {
                *d ^= row[*s as usize];
            }
        }
    }
}

/// `sum(coef * input)` over the terms.
pub(crate) fn run(buffers: &[Option<Bytes>], terms: &[(u8, BufRef)]) -> Result<Bytes, NodeError> {
    let parts = resolve_equal(buffers, terms.iter().map(|(_, r)| r))?;
    let Some(len) = parts.first().map(Bytes::len) else {
        return Err(NodeError::Buffer {
            slot: Slot(0),
            detail: "Q without terms".to_owned(),
        });
    };
    let mut out = BytesMut::zeroed(len);
    for ((coef, _), p) in terms.iter().zip(&parts) {
        mul_acc(*coef, &mut out, p);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_facts() {
        // g = 2 generates the multiplicative group: 255 distinct powers.
        let mut seen = std::collections::HashSet::new();
        let mut x = 1u8;
        for _ in 0..255 {
            assert!(seen.insert(x));
            x = mul(x, 2);
        }
        assert_eq!(x, 1);
        // 0x80 * 2 wraps through the polynomial 0x11d.
        assert_eq!(mul(0x80, 2), 0x1d);
        for a in 1..=255u8 {
            // Every non-zero element has an inverse.
            assert!((1..=255u8).any(|b| mul(a, b) == 1));
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

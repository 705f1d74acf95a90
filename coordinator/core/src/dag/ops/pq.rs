//! GF(2^8) linear combinations: the RAID 6 Q syndrome and its updates and recoveries.
//!
//! Field: polynomial 0x11d, generator 2 (the Linux md convention pinned in the RAID 6 issue). The
//! kernel is [`crate::parity::mul_slice_xor`]; this module only resolves the node's buffers.

use bytes::{Bytes, BytesMut};

use super::{BufRef, resolve_equal};
use crate::dag::{NodeError, Slot};

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

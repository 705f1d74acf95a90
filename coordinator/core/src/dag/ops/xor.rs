//! XOR of equally long buffers: RAID parity and single-failure recovery.
//!
//! The kernel is [`crate::parity::xor_many`]; this module only resolves the node's buffers.

use bytes::{Bytes, BytesMut};

use super::{BufRef, resolve_equal};
use crate::dag::{NodeError, Slot};

/// XORs the buffers `inputs` names into a new buffer.
pub(crate) fn run(buffers: &[Option<Bytes>], inputs: &[BufRef]) -> Result<Bytes, NodeError> {
    let parts = resolve_equal(buffers, inputs.iter())?;
    let Some(len) = parts.first().map(Bytes::len) else {
        return Err(NodeError::Buffer {
            slot: Slot(0),
            detail: "XOR without inputs".to_owned(),
        });
    };
    let sources: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
    let mut out = BytesMut::zeroed(len);
    crate::parity::xor_many(&mut out, &sources).map_err(|e| NodeError::Buffer {
        slot: inputs[0].slot,
        detail: e.to_string(),
    })?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_of_three_and_of_ranges() {
        let bufs = vec![
            Some(Bytes::from_static(&[1, 2, 3, 4])),
            Some(Bytes::from_static(&[4, 4, 4, 4])),
            Some(Bytes::from_static(&[0, 0, 0xff, 0xff])),
        ];
        let all: Vec<BufRef> = (0..3).map(|i| Slot(i).all()).collect();
        assert_eq!(run(&bufs, &all).unwrap().as_ref(), &[5, 6, 0xf8, 0xff]);
        let ranged = [Slot(0).range(2..4), Slot(2).range(0..2)];
        assert_eq!(run(&bufs, &ranged).unwrap().as_ref(), &[3, 4]);
    }

    #[test]
    fn unequal_inputs_are_an_error_not_a_panic() {
        let bufs = vec![
            Some(Bytes::from_static(&[1, 2])),
            Some(Bytes::from_static(&[1])),
        ];
        let r = run(&bufs, &[Slot(0).all(), Slot(1).all()]);
        assert!(matches!(r, Err(NodeError::Buffer { .. })));
        let r = run(&bufs, &[Slot(0).all(), Slot(7).all()]);
        assert!(matches!(r, Err(NodeError::Buffer { .. })));
    }
}

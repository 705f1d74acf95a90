//! Overlay: new user bytes over old block contents, the merge of a partial-block write.

use bytes::{Bytes, BytesMut};

use super::{BufRef, resolve};
use crate::dag::NodeError;

/// `base` with `patch` copied in at `at`.
pub(crate) fn run(
    buffers: &[Option<Bytes>],
    base: &BufRef,
    patch: &BufRef,
    at: usize,
) -> Result<Bytes, NodeError> {
    let base_bytes = resolve(buffers, base)?;
    let patch_bytes = resolve(buffers, patch)?;
    let end = at.checked_add(patch_bytes.len());
    let Some(end) = end.filter(|&e| e <= base_bytes.len()) else {
        return Err(NodeError::Buffer {
            slot: patch.slot,
            detail: format!(
                "{} bytes at {at} overflow a base of {}",
                patch_bytes.len(),
                base_bytes.len()
            ),
        });
    };
    let mut out = BytesMut::from(base_bytes.as_ref());
    out[at..end].copy_from_slice(&patch_bytes);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::Slot;

    #[test]
    fn patch_lands_at_offset_and_overflow_is_refused() {
        let bufs = vec![
            Some(Bytes::from_static(&[0; 8])),
            Some(Bytes::from_static(&[9, 8, 7])),
        ];
        let out = run(&bufs, &Slot(0).all(), &Slot(1).range(1..3), 5).unwrap();
        assert_eq!(out.as_ref(), &[0, 0, 0, 0, 0, 8, 7, 0]);
        assert!(run(&bufs, &Slot(0).all(), &Slot(1).all(), 6).is_err());
        assert!(run(&bufs, &Slot(0).all(), &Slot(1).all(), usize::MAX).is_err());
    }
}

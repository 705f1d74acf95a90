//! XOR parity: the whole of RAID 4/5 parity and the P of RAID 6.
//!
//! Plain byte loops over zipped slices: LLVM vectorises them to full-width SIMD on the baseline
//! target, and in `benches/parity.rs` they matched or beat hand-chunked `u64`/`u128` variants
//! (see `docs/PARITY.md`).

use super::{Operand, ParityError, check_len};

/// Bytes of destination processed per pass of [`xor_many`]: small enough that the destination
/// block stays in L1 while every source is folded into it.
const BLOCK: usize = 16 * 1024;

/// `dst ^= src`.
///
/// # Errors
/// [`ParityError::LengthMismatch`] if the slices differ in length; `dst` is then unchanged.
pub fn xor_into(dst: &mut [u8], src: &[u8]) -> Result<(), ParityError> {
    check_len(Operand::Src, dst.len(), src.len())?;
    xor_kernel(dst, src);
    Ok(())
}

/// `dst = sources[0] ^ sources[1] ^ ...`, without a separate zeroing pass; the XOR of no
/// sources is all zeros.
///
/// The first pass writes `dst` from up to four sources at once, later passes fold in up to three
/// more each, block by block, so each source byte is read once and `dst` stays cache-resident.
///
/// # Errors
/// [`ParityError::LengthMismatch`] naming the first source whose length differs from `dst`;
/// `dst` is then unchanged.
pub fn xor_many(dst: &mut [u8], sources: &[&[u8]]) -> Result<(), ParityError> {
    for (i, s) in sources.iter().enumerate() {
        check_len(Operand::Source(i), dst.len(), s.len())?;
    }
    if sources.is_empty() {
        dst.fill(0);
        return Ok(());
    }
    let len = dst.len();
    let mut start = 0;
    while start < len {
        let end = len.min(start + BLOCK);
        xor_many_block(&mut dst[start..end], sources, start..end);
        start = end;
    }
    Ok(())
}

/// One block of [`xor_many`]: `range` selects the same bytes of every source.
fn xor_many_block(dst: &mut [u8], sources: &[&[u8]], range: std::ops::Range<usize>) {
    let s = |i: usize| &sources[i][range.clone()];
    let rest = match sources.len() {
        0 => return,
        1 => {
            dst.copy_from_slice(s(0));
            1
        }
        2 => {
            xor2_kernel(dst, s(0), s(1));
            2
        }
        3 => {
            xor3_kernel(dst, s(0), s(1), s(2));
            3
        }
        _ => {
            xor4_kernel(dst, s(0), s(1), s(2), s(3));
            4
        }
    };
    let mut i = rest;
    while i < sources.len() {
        match sources.len() - i {
            1 => xor_kernel(dst, s(i)),
            2 => xor_acc2_kernel(dst, s(i), s(i + 1)),
            _ => xor_acc3_kernel(dst, s(i), s(i + 1), s(i + 2)),
        }
        i += 3;
    }
}

/// `dst ^= src` over the common length; callers have checked the lengths.
#[inline]
pub(crate) fn xor_kernel(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= *s;
    }
}

/// `dst = a ^ b`.
#[inline]
fn xor2_kernel(dst: &mut [u8], a: &[u8], b: &[u8]) {
    for ((d, a), b) in dst.iter_mut().zip(a).zip(b) {
        *d = a ^ b;
    }
}

fn xor3_kernel(dst: &mut [u8], a: &[u8], b: &[u8], c: &[u8]) {
    for (((d, a), b), c) in dst.iter_mut().zip(a).zip(b).zip(c) {
        *d = a ^ b ^ c;
    }
}

fn xor4_kernel(dst: &mut [u8], a: &[u8], b: &[u8], c: &[u8], e: &[u8]) {
    for ((((d, a), b), c), e) in dst.iter_mut().zip(a).zip(b).zip(c).zip(e) {
        *d = a ^ b ^ c ^ e;
    }
}

fn xor_acc2_kernel(dst: &mut [u8], a: &[u8], b: &[u8]) {
    for ((d, a), b) in dst.iter_mut().zip(a).zip(b) {
        *d ^= a ^ b;
    }
}

fn xor_acc3_kernel(dst: &mut [u8], a: &[u8], b: &[u8], c: &[u8]) {
    for (((d, a), b), c) in dst.iter_mut().zip(a).zip(b).zip(c) {
        *d ^= a ^ b ^ c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).rotate_left(3))
            .collect()
    }

    #[test]
    fn xor_into_xors_bytewise() {
        let mut dst = vec![0b1100u8, 0xff, 0x00];
        xor_into(&mut dst, &[0b1010, 0x0f, 0x42]).unwrap();
        assert_eq!(dst, [0b0110, 0xf0, 0x42]);
    }

    #[test]
    fn xor_many_matches_folded_xor_for_every_source_count() {
        // Longer than BLOCK and not a multiple of it, so the block loop's tail is covered.
        let len = BLOCK * 2 + 1001;
        let srcs: Vec<Vec<u8>> = (0..11).map(|i| pattern(len, i * 17 + 1)).collect();
        for n in 0..=srcs.len() {
            let refs: Vec<&[u8]> = srcs[..n].iter().map(Vec::as_slice).collect();
            let mut want = vec![0u8; len];
            for s in &refs {
                for (w, b) in want.iter_mut().zip(s.iter()) {
                    *w ^= b;
                }
            }
            // Garbage in dst must not leak into the result: no zeroing pass is needed.
            let mut dst = pattern(len, 0xee);
            xor_many(&mut dst, &refs).unwrap();
            assert!(dst == want, "{n} sources");
        }
    }

    #[test]
    fn xor_rejects_length_mismatch_and_leaves_dst_alone() {
        let mut dst = vec![9u8; 5];
        assert_eq!(
            xor_into(&mut dst, &[1, 2]),
            Err(ParityError::LengthMismatch {
                operand: Operand::Src,
                expected: 5,
                actual: 2
            })
        );
        assert_eq!(
            xor_many(&mut dst, &[&[1, 2, 3, 4, 5], &[1]]),
            Err(ParityError::LengthMismatch {
                operand: Operand::Source(1),
                expected: 5,
                actual: 1
            })
        );
        assert_eq!(dst, [9; 5]);
    }
}

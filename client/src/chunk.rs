//! How a large byte range is cut into calls.
//!
//! The coordinator accepts at most `max_io_bytes` per Read or Write. A range that fits is one
//! call. A longer range is cut at absolute offsets that are multiples of one chunk size, so that
//! among such ranges the same byte always falls in the same chunk whatever the range around it. When the volume's full-stripe size is known and fits in
//! `max_io_bytes`, the chunk size is the largest multiple of it that does: every chunk except
//! the first and last of a range is then made of whole stripes, which the coordinator writes as
//! full-stripe writes (no read-modify-write) and keeps atomic per stripe.

/// One call's share of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Volume offset of the piece.
    pub(crate) offset: u64,
    /// Offset of the piece inside the caller's range.
    pub(crate) start: usize,
    /// Bytes in the piece.
    pub(crate) len: usize,
}

/// The chunk size for a coordinator limit of `max_io_bytes` and a full stripe of `stripe_bytes`
/// (0 when unknown). Never 0 when `max_io_bytes` is not.
pub(crate) fn chunk_size(max_io_bytes: u64, stripe_bytes: u64) -> u64 {
    if stripe_bytes == 0 || stripe_bytes > max_io_bytes {
        max_io_bytes
    } else {
        max_io_bytes - max_io_bytes % stripe_bytes
    }
}

/// The calls of an access of `len` bytes at `offset` under a limit of `max_io_bytes` per call
/// (full stripe `stripe_bytes`, 0 when unknown): one call when it fits (never cut: a cut would
/// turn a full-stripe write into two partial ones), else the pieces on the grid of
/// [`chunk_size`].
pub(crate) fn plan(offset: u64, len: usize, max_io_bytes: u64, stripe_bytes: u64) -> Pieces {
    if len as u64 <= max_io_bytes {
        pieces(offset, len, u64::MAX)
    } else {
        pieces(offset, len, chunk_size(max_io_bytes, stripe_bytes))
    }
}

/// The pieces of `[offset, offset + len)` on a grid of `chunk` bytes (`chunk` > 0). An empty
/// range is one empty piece, so that the coordinator, not the SDK, judges it.
pub(crate) fn pieces(offset: u64, len: usize, chunk: u64) -> Pieces {
    assert!(chunk > 0, "chunk size must be positive");
    Pieces {
        base: offset,
        next: offset,
        end: offset.saturating_add(len as u64),
        chunk,
        empty_pending: len == 0,
    }
}

/// Iterator over the pieces of a range, in order.
#[derive(Debug, Clone)]
pub(crate) struct Pieces {
    base: u64,
    next: u64,
    end: u64,
    chunk: u64,
    empty_pending: bool,
}

impl Iterator for Pieces {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.empty_pending {
            self.empty_pending = false;
            return Some(Piece {
                offset: self.base,
                start: 0,
                len: 0,
            });
        }
        if self.next >= self.end {
            return None;
        }
        let boundary = (self.next / self.chunk)
            .saturating_add(1)
            .saturating_mul(self.chunk);
        let stop = boundary.min(self.end);
        let piece = Piece {
            offset: self.next,
            start: (self.next - self.base) as usize,
            len: (stop - self.next) as usize,
        };
        self.next = stop;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(offset: u64, len: usize, chunk: u64) -> Vec<(u64, usize, usize)> {
        pieces(offset, len, chunk)
            .map(|p| (p.offset, p.start, p.len))
            .collect()
    }

    #[test]
    fn chunk_size_prefers_whole_stripes() {
        // RAID 5 over 5 columns, 64 KiB units: 256 KiB stripes, 4 MiB limit.
        assert_eq!(chunk_size(4 << 20, 256 << 10), 4 << 20);
        // RAID 5 over 6 columns: 320 KiB stripes; 12 of them fit in 4 MiB.
        assert_eq!(chunk_size(4 << 20, 320 << 10), 12 * (320 << 10));
        // Unknown stripe, or a stripe larger than the limit: the limit.
        assert_eq!(chunk_size(4 << 20, 0), 4 << 20);
        assert_eq!(chunk_size(1 << 20, 3 << 20), 1 << 20);
        assert_eq!(chunk_size(1, 1), 1);
    }

    #[test]
    fn within_one_chunk_is_one_piece() {
        assert_eq!(collect(0, 4096, 1 << 20), vec![(0, 0, 4096)]);
        assert_eq!(collect(100, 1 << 20, 4 << 20), vec![(100, 0, 1 << 20)]);
    }

    #[test]
    fn cut_on_absolute_multiples() {
        assert_eq!(
            collect(10, 25, 10),
            vec![(10, 0, 10), (20, 10, 10), (30, 20, 5)]
        );
        assert_eq!(
            collect(7, 25, 10),
            vec![(7, 0, 3), (10, 3, 10), (20, 13, 10), (30, 23, 2)]
        );
        assert_eq!(collect(0, 20, 10), vec![(0, 0, 10), (10, 10, 10)]);
    }

    #[test]
    fn empty_range_is_one_empty_piece() {
        assert_eq!(collect(42, 0, 10), vec![(42, 0, 0)]);
    }

    #[test]
    fn pieces_tile_the_range_and_respect_the_limit() {
        for offset in [0u64, 1, 4095, 4096, 1 << 20, (1 << 30) - 3] {
            for len in [1usize, 2, 4095, 4096, 65537, 3 << 20, (5 << 20) + 17] {
                for chunk in [1u64 << 12, 1 << 16, 1 << 20, 3 * (1 << 18)] {
                    if (len as u64) / chunk > 5000 {
                        continue;
                    }
                    let ps: Vec<Piece> = pieces(offset, len, chunk).collect();
                    let mut at = 0usize;
                    for (i, p) in ps.iter().enumerate() {
                        assert_eq!(p.start, at);
                        assert_eq!(p.offset, offset + at as u64);
                        assert!(p.len > 0 && p.len as u64 <= chunk);
                        // Every piece but the first starts on the grid.
                        if i > 0 {
                            assert_eq!(p.offset % chunk, 0);
                        }
                        at += p.len;
                    }
                    assert_eq!(at, len);
                }
            }
        }
    }

    #[test]
    fn near_the_end_of_the_address_space() {
        let ps = collect(u64::MAX - 5, 3, 4);
        assert_eq!(ps.iter().map(|p| p.2).sum::<usize>(), 3);
    }

    #[test]
    fn a_range_that_fits_in_one_call_is_never_cut() {
        const MIB: u64 = 1 << 20;
        // A full stripe of 192 KiB across the 16 MiB mark: one call (it was two partial-stripe
        // writes on the 16 MiB grid).
        let ps: Vec<Piece> = plan(16 * MIB - 96 * 1024, 192 * 1024, 16 * MIB, 0).collect();
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert_eq!(
            (ps[0].offset, ps[0].len),
            (16 * MIB - 96 * 1024, 192 * 1024)
        );
        // Longer than one call: cut on whole stripes.
        let ps: Vec<Piece> = plan(0, (40 * MIB) as usize, 16 * MIB, 192 * 1024).collect();
        assert!(ps.iter().all(|p| p.len as u64 <= 16 * MIB));
        assert_eq!(ps[0].len as u64 % (192 * 1024), 0);
    }
}

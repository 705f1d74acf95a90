//! The lost set of a volume: the blocks whose content cannot be trusted, because a write to
//! their stripe was cut short on more columns than the layout tolerates (a torn stripe), or
//! because a resync could neither verify nor repair them.
//!
//! A lost block answers DATA_LOSS until a write covers it whole (the write computes its stripe's
//! redundancy from the data columns, never from the parity of a lost stripe); its mark is durable
//! before the access that set or cleared it is answered (`docs/STATE.md`).
//!
//! Addresses are volume blocks (the volume's block size), kept as sorted, disjoint, non-adjacent
//! half-open ranges, so a torn stripe costs one range however large it is.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

/// A set of volume block ranges.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LostSet {
    /// start -> end, disjoint and never adjacent.
    ranges: BTreeMap<u64, u64>,
}

impl fmt::Debug for LostSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ranges()).finish()
    }
}

impl LostSet {
    /// The empty set.
    pub fn new() -> LostSet {
        LostSet::default()
    }

    /// The set of `ranges` (in any order, overlapping or not; empty ranges are ignored).
    pub fn from_ranges(ranges: impl IntoIterator<Item = Range<u64>>) -> LostSet {
        let mut s = LostSet::new();
        for r in ranges {
            s.insert(r);
        }
        s
    }

    /// Whether no block is lost.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Number of lost blocks.
    pub fn blocks(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// The ranges, in increasing order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&s, &e)| s..e)
    }

    /// Marks `range` lost.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // Every range touching [start, end] (adjacent ones too) is merged into it.
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Clears `range`: its blocks were rewritten whole.
    pub fn remove(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .ranges
            .range(..range.end)
            .rev()
            .take_while(|(_, e)| **e > range.start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.ranges.remove(&s);
            if s < range.start {
                self.ranges.insert(s, range.start);
            }
            if e > range.end {
                self.ranges.insert(range.end, e);
            }
        }
    }

    /// The lost parts of `range`, in increasing order.
    pub fn overlapping(&self, range: Range<u64>) -> Vec<Range<u64>> {
        if range.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Range<u64>> = self
            .ranges
            .range(..range.end)
            .rev()
            .take_while(|(_, e)| **e > range.start)
            .map(|(&s, &e)| s.max(range.start)..e.min(range.end))
            .collect();
        out.reverse();
        out
    }

    /// Whether any block of `range` is lost.
    pub fn intersects(&self, range: Range<u64>) -> bool {
        !self.overlapping(range).is_empty()
    }

    /// Adds every range of `other`.
    pub fn union_with(&mut self, other: &LostSet) {
        for r in other.ranges() {
            self.insert(r);
        }
    }

    /// A superset of this set in at most `max_ranges` ranges (at least 1): the smallest gaps
    /// are filled first. Used where a copy has a fixed budget (a component's metadata record);
    /// it marks good blocks lost, never the reverse.
    pub fn coarsened(&self, max_ranges: usize) -> LostSet {
        let max_ranges = max_ranges.max(1);
        if self.ranges.len() <= max_ranges {
            return self.clone();
        }
        let ranges: Vec<(u64, u64)> = self.ranges.iter().map(|(&s, &e)| (s, e)).collect();
        // Fill the smallest gaps: keep the (max_ranges - 1) largest as boundaries.
        let mut gaps: Vec<(u64, usize)> = ranges
            .windows(2)
            .enumerate()
            .map(|(i, w)| (w[1].0 - w[0].1, i))
            .collect();
        gaps.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut kept: Vec<usize> = gaps.iter().take(max_ranges - 1).map(|g| g.1).collect();
        kept.sort_unstable();
        let mut out = LostSet::new();
        let mut start = ranges[0].0;
        for &i in &kept {
            out.ranges.insert(start, ranges[i].1);
            start = ranges[i + 1].0;
        }
        out.ranges.insert(start, ranges[ranges.len() - 1].1);
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ranges_merge_split_and_count() {
        let mut s = LostSet::new();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(20..25); // adjacent: merged
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![10..25, 30..40]);
        assert_eq!(s.blocks(), 25);
        s.insert(5..35);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![5..40]);
        s.remove(10..12);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![5..10, 12..40]);
        assert_eq!(s.overlapping(0..13), vec![5..10, 12..13]);
        assert!(!s.intersects(10..12));
        s.remove(0..100);
        assert!(s.is_empty());
        s.insert(3..3);
        assert!(s.is_empty());
    }

    #[test]
    fn coarsening_fills_the_smallest_gaps_and_keeps_every_block() {
        let s = LostSet::from_ranges([0..1, 2..3, 10..11, 100..101]);
        let c = s.coarsened(2);
        assert_eq!(c.ranges().collect::<Vec<_>>(), vec![0..11, 100..101]);
        assert_eq!(s.coarsened(1).ranges().collect::<Vec<_>>(), vec![0..101]);
        assert_eq!(s.coarsened(10), s);
    }

    proptest! {
        #[test]
        fn the_set_behaves_like_a_set_of_blocks(
            ops in proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..30), 0..40),
            cap in 1usize..6,
        ) {
            let mut s = LostSet::new();
            let mut model = std::collections::BTreeSet::new();
            for (add, start, len) in ops {
                let r = start..start + len;
                if add {
                    s.insert(r.clone());
                    model.extend(r);
                } else {
                    s.remove(r.clone());
                    for b in r { model.remove(&b); }
                }
            }
            let blocks: std::collections::BTreeSet<u64> = s.ranges().flatten().collect();
            prop_assert_eq!(&blocks, &model);
            prop_assert_eq!(s.blocks(), model.len() as u64);
            // Disjoint, sorted, never adjacent.
            let rs: Vec<_> = s.ranges().collect();
            for w in rs.windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            let c = s.coarsened(cap);
            prop_assert!(c.range_count() <= cap.max(1));
            for b in &model {
                prop_assert!(c.intersects(*b..*b + 1));
            }
        }
    }
}

//! The parity map: which regions of a volume may hold a stripe whose redundancy does not match
//! its data, because a write into it may have been cut short (RAIDframe's parity map, Linux md's
//! write-intent bitmap).
//!
//! A **region** is a run of [`ParityMap::region_stripes`] consecutive stripes. Before the first
//! write into a clean region is issued, the region is marked dirty and the mark made durable
//! (through the array's [`crate::access::StateRecorder`]); the write waits for that. A region
//! stays dirty while writes into it are in flight and for a quiet period after the last one
//! (the *cooldown*); then [`ParityMap::cool`] clears it in memory and the next persisted copy
//! of the map no longer names it. After a crash, only the dirty regions can hold a torn stripe,
//! so only they are resynced.
//!
//! The rules this type keeps (and `docs/STATE.md` states):
//!
//! - **A write is issued only once a copy of the map that names its region is durable**
//!   ([`ParityMap::begin`] answers the version that must be durable first). Every persisted
//!   copy is a snapshot taken after every mark it must carry, so the newest copy always names
//!   every region with a write in flight.
//! - **A region is cleared only when no write into it is in flight** and none was for the
//!   cooldown; a write that starts after the clear marks it again (and waits for that mark).
//! - **A region that needs its resync** (dirty at assembly after a crash) is *pinned*: it is
//!   never cleared, and its stripes are served conservatively ([`ParityMap::in_sync`]) until the
//!   resync tells [`ParityMap::synced`]. The map is the resync's checkpoint: a second crash
//!   resyncs only the regions still dirty.
//!
//! - **While the array is degraded the map is held**: no region is cleared while some column is
//!   not current (failed, or recovering), so the map is also the *written-while-failed bitmap*
//!   of Linux md: every region written while a column was away, and every region with a write
//!   in flight when it failed, stays dirty until the column is current again. A column that
//!   comes back is re-added by resyncing only those regions ([`ParityMap::is_dirty`]).
//!
//! Any snapshot of the in-memory map is safe to persist at any time: it names every region
//! marked so far (marks not yet durable included) and omits only regions cleared by the rules
//! above.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock: the simulation's where there is one (turmoil), the system's otherwise.
use tokio::time::Instant;

use crate::lost::LostSet;

/// Default bytes of volume data per region (rounded to whole stripes).
pub const DEFAULT_REGION_BYTES: u64 = 64 * 1024 * 1024;

/// Default quiet time after a region's last write before its mark is cleared.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10);

/// One dirty region.
#[derive(Debug, Clone, Copy)]
struct Region {
    /// Writes into it in flight.
    inflight: u32,
    /// When its last write ended (or it was marked, or resynced).
    last: Instant,
    /// The map version that first named it (this mark): durable once `durable >= marked`.
    marked: u64,
    /// Dirty at assembly after a crash: awaits its resync, never cleared before.
    needs_sync: bool,
}

#[derive(Debug)]
struct Inner {
    /// Bumped by every change of the set of dirty regions.
    version: u64,
    /// The newest version known durable.
    durable: u64,
    /// The dirty regions.
    regions: BTreeMap<u64, Region>,
}

/// A copy of the map to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSnapshot {
    /// The in-memory version it was taken at.
    pub version: u64,
    /// Stripes per region.
    pub region_stripes: u64,
    /// The dirty regions (region indexes).
    pub dirty: LostSet,
}

impl MapSnapshot {
    /// The stripes its dirty regions cover, within `stripes`.
    pub fn stripes(&self, stripes: u64) -> LostSet {
        stripes_of(&self.dirty, self.region_stripes, stripes)
    }
}

/// The dirty regions as persisted (the store's copy and the metadata records' section).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtyRegions {
    /// Stripes per region.
    pub region_stripes: u64,
    /// The dirty regions (region indexes).
    pub regions: LostSet,
}

impl DirtyRegions {
    /// The stripes its regions cover, within `stripes`.
    pub fn stripes(&self, stripes: u64) -> LostSet {
        stripes_of(&self.regions, self.region_stripes, stripes)
    }
}

impl From<&MapSnapshot> for DirtyRegions {
    fn from(s: &MapSnapshot) -> Self {
        DirtyRegions {
            region_stripes: s.region_stripes,
            regions: s.dirty.clone(),
        }
    }
}

/// The stripes `regions` (of `region_stripes` stripes each) cover, within `stripes`.
pub fn stripes_of(regions: &LostSet, region_stripes: u64, stripes: u64) -> LostSet {
    let rs = region_stripes.max(1);
    LostSet::from_ranges(
        regions.ranges().map(|r| {
            r.start.saturating_mul(rs).min(stripes)..r.end.saturating_mul(rs).min(stripes)
        }),
    )
}

/// The regions written by one access: hand them back to [`ParityMap::end`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a write's regions must be ended, or they are never cleared"]
pub struct Begun {
    /// The regions.
    pub regions: Range<u64>,
    /// The map version that must be durable before the write is issued (`None`: it is).
    pub wait_for: Option<u64>,
}

/// How the regions of a volume are tracked.
#[derive(Debug)]
pub struct ParityMap {
    stripes: u64,
    region_stripes: u64,
    inner: Mutex<Inner>,
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapCounts {
    /// Regions of the volume.
    pub regions: u64,
    /// Regions marked dirty now.
    pub dirty: u64,
    /// Of those, regions awaiting their resync.
    pub needs_sync: u64,
}

/// Stripes per region for regions of about `region_bytes` of volume data (rounded down to whole
/// stripes of `stripe_data_bytes`, at least one).
pub fn region_stripes(stripe_data_bytes: u64, region_bytes: u64) -> u64 {
    (region_bytes / stripe_data_bytes.max(1)).max(1)
}

impl ParityMap {
    /// The map of a volume of `stripes` stripes of `stripe_data_bytes` each, with regions of
    /// about `region_bytes` (at least one stripe), nothing dirty.
    pub fn new(stripes: u64, stripe_data_bytes: u64, region_bytes: u64) -> ParityMap {
        let region_stripes = region_stripes(stripe_data_bytes, region_bytes);
        ParityMap {
            stripes,
            region_stripes,
            inner: Mutex::new(Inner {
                version: 0,
                durable: 0,
                regions: BTreeMap::new(),
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stripes per region.
    pub fn region_stripes(&self) -> u64 {
        self.region_stripes
    }

    /// Regions of the volume.
    pub fn regions(&self) -> u64 {
        self.stripes.div_ceil(self.region_stripes)
    }

    /// The region of `stripe`.
    pub fn region_of(&self, stripe: u64) -> u64 {
        stripe / self.region_stripes
    }

    /// The stripes of `region`.
    pub fn stripes_of(&self, region: u64) -> Range<u64> {
        let start = region.saturating_mul(self.region_stripes).min(self.stripes);
        start..start.saturating_add(self.region_stripes).min(self.stripes)
    }

    /// A write into `stripes` starts: its regions are marked dirty (those not yet) and counted
    /// in flight. Answers the version to make durable before the write is issued.
    pub fn begin(&self, stripes: Range<u64>) -> Begun {
        let regions = if stripes.is_empty() {
            0..0
        } else {
            self.region_of(stripes.start)..self.region_of(stripes.end - 1) + 1
        };
        let now = Instant::now();
        let mut g = self.inner();
        let next = g.version + 1;
        let mut added = false;
        let mut need = 0;
        for r in regions.clone() {
            let region = g.regions.entry(r).or_insert_with(|| {
                added = true;
                Region {
                    inflight: 0,
                    last: now,
                    marked: next,
                    needs_sync: false,
                }
            });
            region.inflight += 1;
            need = need.max(region.marked);
        }
        if added {
            g.version = next;
        }
        Begun {
            regions,
            wait_for: (need > g.durable).then_some(need),
        }
    }

    /// The write of `begun` ended (whatever its outcome): its regions cool down from now.
    pub fn end(&self, begun: Begun) {
        let now = Instant::now();
        let mut g = self.inner();
        for r in begun.regions {
            if let Some(region) = g.regions.get_mut(&r) {
                region.inflight = region.inflight.saturating_sub(1);
                region.last = now;
            }
        }
    }

    /// Clears, in memory, every region with no write in flight, not awaiting its resync, and
    /// quiet for `cooldown`; nothing while `held` (a column of the array is not current: the
    /// map is its written-while-failed bitmap). Answers whether anything was cleared (then a
    /// snapshot should be persisted).
    pub fn cool(&self, cooldown: Duration, held: bool) -> bool {
        if held {
            return false;
        }
        let now = Instant::now();
        let mut g = self.inner();
        let before = g.regions.len();
        g.regions
            .retain(|_, r| r.inflight > 0 || r.needs_sync || now.duration_since(r.last) < cooldown);
        let cleared = g.regions.len() != before;
        if cleared {
            g.version += 1;
        }
        cleared
    }

    /// Clears every region not in flight and not awaiting its resync at once (a clean
    /// shutdown, once every access drained); nothing while `held`.
    pub fn clear_idle(&self, held: bool) -> bool {
        self.cool(Duration::ZERO, held)
    }

    /// Assembly after a clean shutdown while a column was not current: the regions covering
    /// `stripes` (the map as recorded, the written-while-failed bitmap, whatever its region
    /// size was) are dirty again, not awaiting a resync (the shutdown was clean: no stripe is
    /// torn). The caller persists the map before serving.
    pub fn load(&self, stripes: &LostSet) {
        self.mark_stripes(stripes, false);
    }

    /// Whether `region` is dirty (marked, in memory).
    pub fn is_dirty(&self, region: u64) -> bool {
        self.inner().regions.contains_key(&region)
    }

    /// A copy to persist, taken now.
    pub fn snapshot(&self) -> MapSnapshot {
        let g = self.inner();
        MapSnapshot {
            version: g.version,
            region_stripes: self.region_stripes,
            dirty: LostSet::from_ranges(g.regions.keys().map(|&r| r..r + 1)),
        }
    }

    /// `version` (of a snapshot) is durable.
    pub fn persisted(&self, version: u64) {
        let mut g = self.inner();
        g.durable = g.durable.max(version);
    }

    /// Whether `version` is durable.
    pub fn is_durable(&self, version: u64) -> bool {
        self.inner().durable >= version
    }

    /// Assembly after a crash: the regions covering `stripes` await their resync (dirty,
    /// pinned). The caller persists the map before serving.
    pub fn needs_sync(&self, stripes: &LostSet) {
        self.mark_stripes(stripes, true);
    }

    /// Marks the regions covering `stripes` dirty (and, with `pin`, awaiting their resync).
    fn mark_stripes(&self, stripes: &LostSet, pin: bool) {
        let now = Instant::now();
        let mut g = self.inner();
        let next = g.version + 1;
        for s in stripes.ranges() {
            if s.is_empty() || s.start >= self.stripes {
                continue;
            }
            let end = s.end.min(self.stripes);
            for r in self.region_of(s.start)..=self.region_of(end - 1) {
                let region = g.regions.entry(r).or_insert(Region {
                    inflight: 0,
                    last: now,
                    marked: next,
                    needs_sync: pin,
                });
                region.needs_sync |= pin;
            }
        }
        g.version = next;
    }

    /// The regions awaiting their resync, in order.
    pub fn pending_sync(&self) -> Vec<u64> {
        self.inner()
            .regions
            .iter()
            .filter(|(_, r)| r.needs_sync)
            .map(|(&i, _)| i)
            .collect()
    }

    /// `region` was resynced: it cools down like any other from now.
    pub fn synced(&self, region: u64) {
        let now = Instant::now();
        if let Some(r) = self.inner().regions.get_mut(&region) {
            r.needs_sync = false;
            r.last = now;
        }
    }

    /// Whether `stripe`'s redundancy can be trusted: it is not in a region awaiting its resync.
    pub fn in_sync(&self, stripe: u64) -> bool {
        !self
            .inner()
            .regions
            .get(&self.region_of(stripe))
            .is_some_and(|r| r.needs_sync)
    }

    /// Counts for status and metrics.
    pub fn counts(&self) -> MapCounts {
        let g = self.inner();
        MapCounts {
            regions: self.regions(),
            dirty: g.regions.len() as u64,
            needs_sync: g.regions.values().filter(|r| r.needs_sync).count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ParityMap {
        // 100 stripes of 64 KiB, regions of 4 stripes: 25 regions.
        ParityMap::new(100, 64 * 1024, 256 * 1024)
    }

    #[test]
    fn a_first_write_waits_for_its_mark_and_later_ones_do_not() {
        let m = map();
        assert_eq!((m.region_stripes(), m.regions()), (4, 25));
        let a = m.begin(3..6);
        assert_eq!(a.regions, 0..2);
        assert_eq!(a.wait_for, Some(1));
        // A second write into the same regions before the mark is durable waits for it too.
        let b = m.begin(4..5);
        assert_eq!(b.wait_for, Some(1));
        let s = m.snapshot();
        assert_eq!(s.dirty, LostSet::from_ranges(std::iter::once(0..2)));
        assert_eq!(s.stripes(100), LostSet::from_ranges(std::iter::once(0..8)));
        m.persisted(s.version);
        let c = m.begin(0..1);
        assert_eq!(c.wait_for, None);
        // A new region: a new version.
        let d = m.begin(99..100);
        assert_eq!((d.regions.clone(), d.wait_for), (24..25, Some(2)));
        for x in [a, b, c, d] {
            m.end(x);
        }
    }

    #[test]
    fn a_region_is_cleared_only_when_idle_for_the_cooldown() {
        let m = map();
        let a = m.begin(0..1);
        m.persisted(m.snapshot().version);
        // In flight: never cleared.
        assert!(!m.cool(Duration::ZERO, false));
        m.end(a);
        assert!(!m.cool(Duration::from_secs(3600), false));
        // Held (a column is not current): never cleared.
        assert!(!m.cool(Duration::ZERO, true));
        assert!(m.is_dirty(0));
        assert!(m.cool(Duration::ZERO, false));
        assert!(!m.is_dirty(0));
        assert!(m.snapshot().dirty.is_empty());
        // A write after the clear marks it again, and waits for a newer copy.
        let b = m.begin(0..1);
        let v = b.wait_for.expect("marked again");
        assert!(v > 1);
        assert!(!m.is_durable(v));
        m.persisted(m.snapshot().version);
        assert!(m.is_durable(v));
        m.end(b);
    }

    #[test]
    fn regions_awaiting_their_resync_are_pinned_until_synced() {
        let m = map();
        m.needs_sync(&LostSet::from_ranges([5..9, 40..41]));
        assert_eq!(m.pending_sync(), vec![1, 2, 10]);
        assert!(!m.in_sync(4) && !m.in_sync(11) && !m.in_sync(40));
        assert!(m.in_sync(0) && m.in_sync(12));
        assert!(!m.clear_idle(false));
        m.synced(1);
        assert!(m.in_sync(4));
        assert!(m.clear_idle(false));
        assert_eq!(m.pending_sync(), vec![2, 10]);
        assert_eq!(
            m.counts(),
            MapCounts {
                regions: 25,
                dirty: 2,
                needs_sync: 2
            }
        );
        // A write into a pinned region does not wait: its mark is durable already once the
        // assembly persisted the map.
        m.persisted(m.snapshot().version);
        let w = m.begin(8..9);
        assert_eq!(w.wait_for, None);
        m.end(w);
    }

    #[test]
    fn a_loaded_map_is_dirty_but_awaits_no_resync_and_is_held_while_degraded() {
        let m = map();
        // Stripes 8..16 and 120..160 (past the end: ignored).
        m.load(&LostSet::from_ranges([8..16, 120..160]));
        assert!(m.is_dirty(2) && m.is_dirty(3) && !m.is_dirty(4));
        assert_eq!(m.pending_sync(), Vec::<u64>::new());
        assert!(m.in_sync(8));
        assert_eq!(m.counts().dirty, 2);
        assert!(!m.clear_idle(true));
        let s = m.snapshot();
        assert_eq!(s.dirty, LostSet::from_ranges(std::iter::once(2..4)));
        assert!(m.clear_idle(false));
        assert_eq!(m.counts().dirty, 0);
    }

    #[test]
    fn the_last_region_may_be_short() {
        let m = ParityMap::new(10, 4096, 4096 * 4);
        assert_eq!(m.regions(), 3);
        assert_eq!(m.stripes_of(2), 8..10);
        assert_eq!(
            stripes_of(&LostSet::from_ranges(std::iter::once(2..5)), 4, 10),
            LostSet::from_ranges(std::iter::once(8..10))
        );
    }
}

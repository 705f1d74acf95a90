//! The volatile write cache of fault-injection mode, and the power cut it makes possible.
//!
//! `kill -9` keeps the page cache, so it never tests durability: every write the process made
//! is still in the file after it dies, synced or not. With `--fault-injection`, every component
//! file sits behind a [`VolatileCache`] instead, which models a disk with a volatile write cache
//! that honours fdatasync:
//!
//! - A write is kept in memory (reads see it) and does not touch the file.
//! - A sync writes every write that completed before it into the file, in order, then
//!   fdatasyncs. Only when that fdatasync returns are those writes durable, and only then does
//!   the group commit acknowledge them (as without the cache). Syncs run one at a time.
//! - A power cut ([`VolatileCache::power_cut`]) discards every write no sync has taken, and
//!   *tears* the writes of the sync in flight (written into the file, not yet fdatasynced):
//!   each 4 KiB chunk of them is, drawn at random, all old, all new, or torn per 512-byte sector
//!   (some sectors old, some new). Block data, block checksums and slot records are torn alike,
//!   so a torn block meets its old or new checksum and reads back as DATA_LOSS, a torn slot
//!   record fails its CRC and the other slot is read. After the cut the cache is powerless:
//!   every later write or sync blocks for ever, reads fail; the process is meant to exit and be
//!   restarted from its files (the `dagraid-node` binary exits with
//!   [`crate::POWER_CUT_EXIT_CODE`]).
//!
//! It does not model a lying disk (one that acknowledges a flush it did not do), a cut inside
//! one 512-byte sector, reordering inside the device beyond the sync in flight, or the small
//! files beside the component files (node state, failure markers: written and fsynced in
//! place, untouched by the cut).
//!
//! Without `--fault-injection` no cache exists and components sit on their files directly.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backend::StorageBackend;

/// Bytes the device writes atomically: a torn write is old or new per sector, never within one.
pub const SECTOR_BYTES: u64 = 512;
/// Bytes of the chunks whose tearing mode (old, new, per sector) is drawn together.
pub const TEAR_CHUNK_BYTES: u64 = 4096;

/// What a power cut did to one component's cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Writes no sync had taken, discarded.
    pub discarded_writes: u64,
    /// Writes of the sync in flight, torn.
    pub torn_writes: u64,
    /// Sectors of those writes that went back to their old contents.
    pub old_sectors: u64,
    /// Sectors of those writes that kept their new contents.
    pub new_sectors: u64,
}

/// A write not yet durable.
struct CachedWrite {
    offset: u64,
    data: Arc<[u8]>,
}

#[derive(Default)]
struct CacheState {
    /// Sequence number of the last write taken.
    last_seq: u64,
    /// Writes not yet durable, by sequence: those above `applied_through` only in memory, the
    /// others written into the file by the sync in flight.
    writes: BTreeMap<u64, CachedWrite>,
    /// The last write the sync in flight (or a failed one) wrote into the file.
    applied_through: u64,
    /// What the file held where the sync in flight wrote: (offset, old bytes), one per write.
    preimages: Vec<(u64, Vec<u8>)>,
    /// Set by the power cut; nothing changes the file after it.
    powerless: bool,
}

/// A component's storage behind a volatile write cache (see the module documentation).
pub struct VolatileCache {
    /// The component, in logs.
    component: String,
    disk: Arc<dyn StorageBackend>,
    state: RwLock<CacheState>,
    /// Held while a sync reads preimages and writes its batch into the file, and by the cut:
    /// the cut never sees half a batch.
    apply: Mutex<()>,
    /// One sync at a time, so only one batch is ever written but not durable.
    one_sync: Mutex<()>,
    /// While true, a sync stops after writing its batch, before its fdatasync.
    held: Mutex<bool>,
    held_changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks the calling thread for ever: the power is off, nothing it would do may happen (a
/// failed write or sync would fail the component durably, which a power cut never does).
fn powerless() -> ! {
    loop {
        std::thread::park();
    }
}

fn power_is_off() -> io::Error {
    io::Error::other("the power is off")
}

impl VolatileCache {
    /// An empty cache in front of `disk`, the file of `component`.
    pub fn new(disk: Arc<dyn StorageBackend>, component: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            disk,
            state: RwLock::new(CacheState::default()),
            apply: Mutex::new(()),
            one_sync: Mutex::new(()),
            held: Mutex::new(false),
            held_changed: Condvar::new(),
        }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, CacheState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, CacheState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes not yet durable, as (only in memory, in the file by the sync in flight).
    pub fn pending_writes(&self) -> (usize, usize) {
        let state = self.read_state();
        let in_file = state.writes.range(..=state.applied_through).count();
        (state.writes.len() - in_file, in_file)
    }

    /// Stops every later sync after it wrote its batch into the file and before its fdatasync,
    /// until [`VolatileCache::release_syncs`] or a power cut: the writes it carries reach the
    /// file but are never acknowledged, and a power cut tears them.
    pub fn hold_syncs(&self) {
        *lock(&self.held) = true;
    }

    /// Lets held syncs go on.
    pub fn release_syncs(&self) {
        *lock(&self.held) = false;
        self.held_changed.notify_all();
    }

    /// Copies the cached writes overlapping `buf` (at `offset`) over it, oldest first.
    fn overlay(state: &CacheState, buf: &mut [u8], offset: u64) {
        let end = offset + buf.len() as u64;
        for write in state.writes.values() {
            let w_end = write.offset + write.data.len() as u64;
            if write.offset >= end || w_end <= offset {
                continue;
            }
            let from = write.offset.max(offset);
            let to = w_end.min(end);
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                &write.data[(from - write.offset) as usize..(to - write.offset) as usize],
            );
        }
    }

    /// Cuts the power: discards every write no sync took, tears the batch of the sync in
    /// flight in the file (drawn from `seed`), fdatasyncs the file, and leaves the cache
    /// powerless. A second cut does nothing. Blocking.
    pub fn power_cut(&self, seed: u64) -> io::Result<CutReport> {
        let _no_batch_half_written = lock(&self.apply);
        let mut state = self.write_state();
        let mut report = CutReport::default();
        if state.powerless {
            return Ok(report);
        }
        state.powerless = true;
        let applied_through = state.applied_through;
        report.discarded_writes = state
            .writes
            .keys()
            .filter(|&&seq| seq > applied_through)
            .count() as u64;
        state.writes.clear();
        let preimages = std::mem::take(&mut state.preimages);
        report.torn_writes = preimages.len() as u64;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tear = Tear::default();
        for (offset, old) in &preimages {
            let end = offset + old.len() as u64;
            let mut sector = offset / SECTOR_BYTES * SECTOR_BYTES;
            while sector < end {
                let from = sector.max(*offset);
                let to = (sector + SECTOR_BYTES).min(end);
                if tear.keeps_new(&mut rng, sector) {
                    report.new_sectors += 1;
                } else {
                    report.old_sectors += 1;
                    self.disk
                        .write_at(&old[(from - offset) as usize..(to - offset) as usize], from)?;
                }
                sector += SECTOR_BYTES;
            }
        }
        drop(state);
        // Held syncs wake up to find the power off (taking their lock first: none is between
        // its check and its wait).
        drop(lock(&self.held));
        self.held_changed.notify_all();
        self.disk.sync()?;
        Ok(report)
    }
}

/// How the sectors of a torn batch are drawn: per 4 KiB chunk all old, all new or per sector;
/// remembered, so writes of one batch that overlap agree on every sector.
#[derive(Default)]
struct Tear {
    chunks: HashMap<u64, ChunkFate>,
    sectors: HashMap<u64, bool>,
}

#[derive(Clone, Copy)]
enum ChunkFate {
    Old,
    New,
    PerSector,
}

impl Tear {
    /// Whether the sector at byte `sector` keeps its new contents.
    fn keeps_new(&mut self, rng: &mut StdRng, sector: u64) -> bool {
        let fate = *self
            .chunks
            .entry(sector / TEAR_CHUNK_BYTES)
            .or_insert_with(|| match rng.random_range(0..3) {
                0 => ChunkFate::Old,
                1 => ChunkFate::New,
                _ => ChunkFate::PerSector,
            });
        match fate {
            ChunkFate::Old => false,
            ChunkFate::New => true,
            ChunkFate::PerSector => *self
                .sectors
                .entry(sector)
                .or_insert_with(|| rng.random_bool(0.5)),
        }
    }
}

impl StorageBackend for VolatileCache {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        // Under the read lock: a sync drops its writes from the cache only once they are in
        // the file, and never while a read is between the two.
        let state = self.read_state();
        if state.powerless {
            return Err(power_is_off());
        }
        self.disk.read_at(buf, offset)?;
        Self::overlay(&state, buf, offset);
        Ok(())
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let state = self.read_state();
        if state.powerless {
            return Err(power_is_off());
        }
        if !self.disk.read_cached(buf, offset)? {
            return Ok(false);
        }
        Self::overlay(&state, buf, offset);
        Ok(true)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::other("write past the end of the disk"))?;
        if end > self.disk.size()? {
            return Err(io::Error::other("write past the end of the disk"));
        }
        let mut state = self.write_state();
        if state.powerless {
            drop(state);
            powerless();
        }
        state.last_seq += 1;
        let seq = state.last_seq;
        state.writes.insert(
            seq,
            CachedWrite {
                offset,
                data: Arc::from(data),
            },
        );
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let _one_at_a_time = lock(&self.one_sync);
        // Write the batch (every write taken so far) into the file, keeping what it replaces.
        let (batch_end, batch_len) = {
            let _apply = lock(&self.apply);
            let (batch, batch_end): (Vec<CachedWrite>, u64) = {
                let state = self.read_state();
                if state.powerless {
                    drop(state);
                    powerless();
                }
                let batch = state
                    .writes
                    .range(state.applied_through + 1..)
                    .map(|(_, w)| CachedWrite {
                        offset: w.offset,
                        data: w.data.clone(),
                    })
                    .collect();
                (batch, state.last_seq)
            };
            let mut preimages = Vec::with_capacity(batch.len());
            for write in &batch {
                let mut old = vec![0u8; write.data.len()];
                self.disk.read_at(&mut old, write.offset)?;
                preimages.push((write.offset, old));
            }
            let mut state = self.write_state();
            // Recorded before the first byte changes: a failure midway leaves them to the cut.
            state.preimages.extend(preimages);
            state.applied_through = batch_end;
            drop(state);
            for write in &batch {
                self.disk.write_at(&write.data, write.offset)?;
            }
            (batch_end, batch.len())
        };
        {
            let mut held = lock(&self.held);
            if *held {
                tracing::info!(
                    component = %self.component,
                    writes = batch_len,
                    "sync held before its fdatasync (fault injection)"
                );
            }
            while *held && !self.read_state().powerless {
                held = self
                    .held_changed
                    .wait(held)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        if self.read_state().powerless {
            powerless();
        }
        let synced = self.disk.sync();
        let mut state = self.write_state();
        if state.powerless {
            // The cut came during the fdatasync and tore the batch: not durable after all.
            drop(state);
            powerless();
        }
        synced?;
        // Durable: the batch leaves the cache (the file holds it now).
        state.writes = state.writes.split_off(&(batch_end + 1));
        state.preimages.clear();
        Ok(())
    }

    fn blocks(&self) -> bool {
        self.disk.blocks()
    }

    fn size(&self) -> io::Result<u64> {
        self.disk.size()
    }

    fn grow(&self, len: u64) -> io::Result<()> {
        self.disk.grow(len)
    }
}

#[cfg(test)]
mod tests;

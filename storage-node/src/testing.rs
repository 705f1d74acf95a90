//! Test helpers: in-memory storage backends (one that can lose power, one with gated syncs), a
//! directory that can lose power, and the format 1 component writer the migration tests build
//! old files with.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::backend::{Directory, StorageBackend};
use crate::checksum::block_checksum;
use crate::layout::{ComponentHeader, Layout};
use crate::slot::{self, Area, SlotRecord};

/// Block size of [`v1_file`].
pub(crate) const BLOCK_SIZE: u32 = 512;
/// Blocks of [`v1_file`].
pub(crate) const BLOCKS: u64 = 10;

/// What a format 1 file holds, and the bytes of that file as a format 1 node wrote them.
pub(crate) struct V1File {
    pub(crate) header: ComponentHeader,
    pub(crate) blocks: Vec<Vec<u8>>,
    pub(crate) label: SlotRecord,
    pub(crate) metadata: SlotRecord,
    pub(crate) image: Vec<u8>,
}

/// The format 1 writer, kept here: header, blocks with their checksums, two versions of the
/// label (the newest in slot 1) and one of the metadata (in slot 0).
pub(crate) fn v1_file(seed: u64) -> V1File {
    let mut rng = StdRng::seed_from_u64(seed);
    let header = ComponentHeader {
        id: "legacy-1".into(),
        serial: 0x0123_4567_89ab_cdef,
        block_size: BLOCK_SIZE,
        block_count: BLOCKS,
        // Not stored by format 1.
        log_bytes: 0,
    };
    let layout = Layout::v1(BLOCK_SIZE, BLOCKS).unwrap();
    let mut image = vec![0u8; layout.file_len as usize];
    let put = |image: &mut Vec<u8>, at: u64, bytes: &[u8]| {
        image[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut image, 0, &header.encode_v1());
    let mut blocks = Vec::new();
    for index in 0..BLOCKS {
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        rng.fill(&mut block[..]);
        put(&mut image, layout.block_offset(index), &block);
        let crc = block_checksum(header.serial, index, &block);
        put(
            &mut image,
            layout.checksum_entry_offset(index),
            &crc.to_le_bytes(),
        );
        blocks.push(block);
    }
    let label = SlotRecord {
        sequence: 7,
        payload: b"label version 7".to_vec(),
    };
    put(
        &mut image,
        layout.label_offset,
        &slot::encode(Area::Label, 6, b"label version 6"),
    );
    put(
        &mut image,
        layout.label_offset + Area::Label.slot_bytes() as u64,
        &slot::encode(Area::Label, label.sequence, &label.payload),
    );
    let metadata = SlotRecord {
        sequence: 1,
        payload: (0..3000u32).map(|i| (i * 11) as u8).collect(),
    };
    put(
        &mut image,
        layout.metadata_offset,
        &slot::encode(Area::Metadata, metadata.sequence, &metadata.payload),
    );
    V1File {
        header,
        blocks,
        label,
        metadata,
        image,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn copy_in(image: &mut [u8], data: &[u8], offset: u64) -> io::Result<()> {
    let start = offset as usize;
    let end = start
        .checked_add(data.len())
        .filter(|&e| e <= image.len())
        .ok_or_else(|| io::Error::other("write past the end of the disk"))?;
    image[start..end].copy_from_slice(data);
    Ok(())
}

fn copy_out(image: &[u8], buf: &mut [u8], offset: u64) -> io::Result<()> {
    let start = offset as usize;
    let end = start
        .checked_add(buf.len())
        .filter(|&e| e <= image.len())
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
    buf.copy_from_slice(&image[start..end]);
    Ok(())
}

/// What survives a power cut of a [`PowerCutDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CutMode {
    /// Every unsynced write is lost.
    DropAllUnsynced,
    /// A random subset of the unsynced 512-byte sectors reaches the disk (torn writes).
    KeepRandomSectors,
}

/// A disk that keeps a durable image plus the writes not yet synced, and loses power after a set
/// number of writes and syncs: from then on every call fails, and [`PowerCutDisk::after_cut`] is
/// the image a restart would see.
pub(crate) struct PowerCutDisk {
    state: Mutex<PowerCutState>,
}

struct PowerCutState {
    /// What reads see.
    visible: Vec<u8>,
    /// What survives a cut.
    durable: Vec<u8>,
    /// Unsynced writes, oldest first.
    pending: Vec<(u64, Vec<u8>)>,
    /// An unsynced growth of the disk: the new length.
    pending_len: Option<usize>,
    ops_until_cut: Option<u64>,
    /// Syncs fail (a write-back error): the pending writes stay unsynced.
    fail_syncs: bool,
    mode: CutMode,
    rng: StdRng,
    after_cut: Option<Vec<u8>>,
}

impl PowerCutDisk {
    /// A zeroed disk of `len` bytes that never loses power until [`PowerCutDisk::arm`].
    pub(crate) fn new(len: usize, seed: u64) -> Self {
        Self::from_image(vec![0; len], seed)
    }

    /// A disk whose durable content is `image`.
    pub(crate) fn from_image(image: Vec<u8>, seed: u64) -> Self {
        Self {
            state: Mutex::new(PowerCutState {
                visible: image.clone(),
                durable: image,
                pending: Vec::new(),
                pending_len: None,
                ops_until_cut: None,
                fail_syncs: false,
                mode: CutMode::DropAllUnsynced,
                rng: StdRng::seed_from_u64(seed),
                after_cut: None,
            }),
        }
    }

    /// Cuts the power when the `ops`-th write or sync from now is attempted (that call fails).
    pub(crate) fn arm(&self, ops: u64, mode: CutMode) {
        let mut s = lock(&self.state);
        s.ops_until_cut = Some(ops);
        s.mode = mode;
    }

    /// The image after the cut, if it happened.
    pub(crate) fn after_cut(&self) -> Option<Vec<u8>> {
        lock(&self.state).after_cut.clone()
    }

    /// Makes every later sync fail with EIO, like a write-back error: what it would have made
    /// durable stays unsynced (lost at a cut).
    pub(crate) fn fail_syncs(&self) {
        lock(&self.state).fail_syncs = true;
    }

    /// Cuts the power now; returns the image a restart would see.
    pub(crate) fn cut_now(&self, mode: CutMode) -> Vec<u8> {
        let mut s = lock(&self.state);
        if let Some(image) = &s.after_cut {
            return image.clone();
        }
        s.mode = mode;
        Self::cut(&mut s);
        s.after_cut.clone().unwrap_or_default()
    }

    /// Loses the power: keeps the durable image (and, in [`CutMode::KeepRandomSectors`], some of
    /// the unsynced sectors) as what a restart sees.
    fn cut(s: &mut PowerCutState) {
        let mut image = s.durable.clone();
        if s.mode == CutMode::KeepRandomSectors {
            // An unsynced growth may or may not have reached the disk.
            if let Some(len) = s.pending_len.take()
                && s.rng.random_bool(0.5)
            {
                image.resize(len, 0);
            }
            let pending = std::mem::take(&mut s.pending);
            for (offset, data) in &pending {
                let (start, end) = (*offset, *offset + data.len() as u64);
                let mut sector = start / 512 * 512;
                while sector < end {
                    if s.rng.random_bool(0.5) && sector < image.len() as u64 {
                        let from = sector.max(start);
                        let to = (sector + 512).min(end).min(image.len() as u64);
                        let part = &data[(from - start) as usize..(to - start) as usize];
                        image[from as usize..to as usize].copy_from_slice(part);
                    }
                    sector += 512;
                }
            }
        }
        s.after_cut = Some(image);
    }

    /// Counts one write or sync; cuts the power when due. `Err` once the power is off.
    fn tick(s: &mut PowerCutState) -> io::Result<()> {
        if s.after_cut.is_some() {
            return Err(io::Error::other("power is off"));
        }
        if let Some(n) = &mut s.ops_until_cut {
            if *n == 0 {
                Self::cut(s);
                return Err(io::Error::other("power cut"));
            }
            *n -= 1;
        }
        Ok(())
    }
}

impl StorageBackend for PowerCutDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = lock(&self.state);
        if s.after_cut.is_some() {
            return Err(io::Error::other("power is off"));
        }
        copy_out(&s.visible, buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        Self::tick(&mut s)?;
        copy_in(&mut s.visible, data, offset)?;
        s.pending.push((offset, data.to_vec()));
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        Self::tick(&mut s)?;
        if s.fail_syncs {
            return Err(io::Error::other("injected EIO"));
        }
        if let Some(len) = s.pending_len.take() {
            s.durable.resize(len, 0);
        }
        let pending = std::mem::take(&mut s.pending);
        for (offset, data) in pending {
            copy_in(&mut s.durable, &data, offset)?;
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.state).visible.len() as u64)
    }

    fn grow(&self, len: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        Self::tick(&mut s)?;
        let len = len as usize;
        if len > s.visible.len() {
            s.visible.resize(len, 0);
            s.pending_len = Some(len);
        }
        Ok(())
    }
}

/// An in-memory disk whose syncs can be held at a gate, counted, and made to fail.
pub(crate) struct GatedBackend {
    image: Mutex<Vec<u8>>,
    gate: Mutex<Gate>,
    gate_changed: Condvar,
    syncs_started: watch::Sender<u64>,
}

#[derive(Default)]
struct Gate {
    closed: bool,
    /// Syncs entered so far; each sync's index is its place in this order.
    entered: u64,
    /// Syncs with an index below this pass a closed gate (released in start order).
    released: u64,
    /// Syncs let through a closed gate out of order, by index.
    released_out_of_order: BTreeSet<u64>,
    fail: bool,
    /// Syncs that fail, by index.
    failing: BTreeSet<u64>,
}

impl GatedBackend {
    /// A zeroed disk of `len` bytes with an open gate.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            image: Mutex::new(vec![0; len]),
            gate: Mutex::new(Gate::default()),
            gate_changed: Condvar::new(),
            syncs_started: watch::channel(0).0,
        }
    }

    /// Holds every later sync until released.
    pub(crate) fn close_gate(&self) {
        let mut gate = lock(&self.gate);
        gate.closed = true;
        gate.released = gate.entered;
    }

    /// Lets every sync through.
    pub(crate) fn open_gate(&self) {
        lock(&self.gate).closed = false;
        self.gate_changed.notify_all();
    }

    /// Lets the oldest held sync through (the next one to enter, if none is held).
    pub(crate) fn release_one(&self) {
        lock(&self.gate).released += 1;
        self.gate_changed.notify_all();
    }

    /// Lets the held sync with start index `index` (0 for the first sync) through, whatever
    /// the syncs started before it do.
    pub(crate) fn release(&self, index: u64) {
        lock(&self.gate).released_out_of_order.insert(index);
        self.gate_changed.notify_all();
    }

    /// Makes the sync with start index `index` fail (an fsync that reports a write-back error).
    pub(crate) fn fail_sync(&self, index: u64) {
        lock(&self.gate).failing.insert(index);
    }

    /// Makes syncs fail.
    pub(crate) fn fail_syncs(&self) {
        lock(&self.gate).fail = true;
    }

    /// Makes syncs succeed again.
    pub(crate) fn heal_syncs(&self) {
        lock(&self.gate).fail = false;
    }

    /// Syncs started so far.
    pub(crate) fn syncs_started(&self) -> u64 {
        *self.syncs_started.borrow()
    }

    /// Waits until `n` syncs have started.
    pub(crate) async fn wait_sync_started(&self, n: u64) {
        let mut rx = self.syncs_started.subscribe();
        rx.wait_for(|&started| started >= n)
            .await
            .expect("sender lives as long as self");
    }

    /// A copy of the image: what a restart would find (the image is the disk itself).
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        lock(&self.image).clone()
    }

    /// A disk whose image is `image`, with an open gate.
    pub(crate) fn from_image(image: Vec<u8>) -> Self {
        let disk = Self::new(0);
        *lock(&disk.image) = image;
        disk
    }

    /// Flips one bit of the image (corruption behind the store's back).
    pub(crate) fn flip(&self, offset: u64) {
        lock(&self.image)[offset as usize] ^= 0x01;
    }
}

impl StorageBackend for GatedBackend {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        copy_out(&lock(&self.image), buf, offset)
    }

    /// Everything is in memory: reads take the block store's inline path (the power-cut disk
    /// keeps the default and so covers the blocking path).
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        copy_out(&lock(&self.image), buf, offset).map(|()| true)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        copy_in(&mut lock(&self.image), data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        let mut gate = lock(&self.gate);
        let index = gate.entered;
        gate.entered += 1;
        // Counted under the gate's lock, so the order of `syncs_started` is the order of `index`.
        self.syncs_started.send_modify(|n| *n += 1);
        while gate.closed && index >= gate.released && !gate.released_out_of_order.contains(&index)
        {
            gate = self
                .gate_changed
                .wait(gate)
                .unwrap_or_else(|p| p.into_inner());
        }
        if gate.fail || gate.failing.contains(&index) {
            return Err(io::Error::other("injected EIO"));
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(lock(&self.image).len() as u64)
    }
}

/// A directory in memory that can lose power: a file's bytes survive a cut only once the file
/// was synced, and a new file only once the directory was synced too (like ext4 without
/// `auto_da_alloc` help; a file synced but not its entry may vanish).
#[derive(Default)]
pub(crate) struct PowerCutDirectory {
    state: Mutex<DirectoryState>,
    /// While true, every operation waits at the gate.
    held: Mutex<bool>,
    held_changed: Condvar,
    /// Operations that reached the gate so far.
    entered: watch::Sender<u64>,
}

#[derive(Default, Clone)]
struct DirectoryState {
    /// What reads see.
    visible: BTreeMap<String, Vec<u8>>,
    /// The synced bytes of each file (whether or not its entry is durable).
    synced: BTreeMap<String, Vec<u8>>,
    /// Entries that survive a cut.
    durable_entries: BTreeSet<String>,
}

impl PowerCutDirectory {
    /// An empty directory.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Holds every later operation until [`PowerCutDirectory::release`].
    pub(crate) fn hold(&self) {
        *lock(&self.held) = true;
    }

    /// Lets every operation through.
    pub(crate) fn release(&self) {
        *lock(&self.held) = false;
        self.held_changed.notify_all();
    }

    /// Waits until `n` operations have reached the gate.
    pub(crate) async fn wait_entered(&self, n: u64) {
        let mut rx = self.entered.subscribe();
        rx.wait_for(|&entered| entered >= n)
            .await
            .expect("sender lives as long as self");
    }

    fn gate(&self) {
        self.entered.send_modify(|n| *n += 1);
        let mut held = lock(&self.held);
        while *held {
            held = self
                .held_changed
                .wait(held)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Cuts the power: the directory a restart would see.
    pub(crate) fn after_cut(&self) -> Self {
        let s = lock(&self.state);
        let mut files = BTreeMap::new();
        for name in &s.durable_entries {
            files.insert(
                name.clone(),
                s.synced.get(name).cloned().unwrap_or_default(),
            );
        }
        Self {
            state: Mutex::new(DirectoryState {
                visible: files.clone(),
                synced: files,
                durable_entries: s.durable_entries.clone(),
            }),
            ..Self::default()
        }
    }
}

impl Directory for PowerCutDirectory {
    fn write_file(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.gate();
        lock(&self.state)
            .visible
            .insert(name.to_owned(), data.to_vec());
        Ok(())
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        self.gate();
        let mut s = lock(&self.state);
        let data = s
            .visible
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.synced.insert(name.to_owned(), data);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.gate();
        let mut s = lock(&self.state);
        s.durable_entries = s.visible.keys().cloned().collect();
        Ok(())
    }

    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(lock(&self.state).visible.get(name).cloned())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.gate();
        let mut s = lock(&self.state);
        let data = s
            .visible
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.visible.insert(to.to_owned(), data);
        Ok(())
    }

    fn remove_file(&self, name: &str) -> io::Result<()> {
        self.gate();
        lock(&self.state).visible.remove(name);
        Ok(())
    }
}
